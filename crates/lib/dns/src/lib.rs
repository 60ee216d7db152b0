//! DNS lookups for the mail system's daemons, on hickory-resolver.
//!
//! Name servers come from `/etc/resolv.conf` (and names from `/etc/hosts`),
//! as for Postfix's libc resolver, unless main.cf's `dns_servers` (a
//! postfix-rs parameter) lists `address[:port]` entries: then only those are
//! asked and the hosts file is not used, so an instance can rely on its own
//! named on a loopback port.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use std::sync::Arc;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::xfer::DnsHandle;
use hickory_resolver::proto::op::{DnsRequestOptions, Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use hickory_resolver::{Hosts, NameServerPool, PoolContext, TlsConfig, TokioResolver};

/// Why a lookup gave no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The name does not exist or has no records of the type (NXDOMAIN, NODATA).
    NotFound,
    /// No answer now (timeout, SERVFAIL, no server): try again later.
    Temporary(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotFound => f.write_str("Host not found"),
            Self::Temporary(e) => write!(f, "Host not found, try again ({e})"),
        }
    }
}

/// A client's names (see [`Resolver::client_names`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientNames {
    pub name: Option<String>,
    pub name_temporary: bool,
    pub reverse: Option<String>,
    pub reverse_temporary: bool,
    /// Postfix's warning when a name does not lead back to the address.
    pub warning: Option<String>,
}

/// A resolver built from main.cf.
#[derive(Clone)]
pub struct Resolver {
    backend: Backend,
    /// The system's hosts file, consulted first for addresses (System only).
    hosts: Option<Arc<Hosts>>,
    /// Its lines' first names by address, in file order, for reverse
    /// lookups (System only).
    host_names: Arc<Vec<(IpAddr, String)>>,
}

/// Each line's address and first (canonical) name, in file order.
fn host_names(text: &str) -> Vec<(IpAddr, String)> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split('#').next()?.split_whitespace();
            let ip = words.next()?.parse().ok()?;
            Some((ip, words.next()?.to_owned()))
        })
        .collect()
}

/// The name libc's `files` source gives getnameinfo for `ip`: the first name
/// of the first line with that address (hickory's hosts table has no order,
/// so the name it picks among several can change from run to run).
fn host_name(names: &[(IpAddr, String)], ip: IpAddr) -> Option<String> {
    names.iter().find(|(a, _)| *a == ip).map(|(_, n)| n.clone())
}

/// Addresses of `name` from a hosts file, as libc's `files` source gives
/// them: when the name is there for either family, that is the whole answer
/// and DNS is not asked (hickory would still ask DNS for the other family,
/// which stalls every lookup when no name server answers).
fn hosts_addresses(hosts: &Hosts, name: &str) -> Option<Vec<IpAddr>> {
    let name = Name::from_ascii(absolute(name)).ok()?;
    let mut found = None;
    for rtype in [RecordType::A, RecordType::AAAA] {
        if let Some(l) = hosts.lookup_static_host(&Query::query(name.clone(), rtype)) {
            found
                .get_or_insert_with(Vec::new)
                .extend(l.answers().iter().filter_map(|r| r.data.ip_addr()));
        }
    }
    found
}

#[derive(Clone)]
enum Backend {
    /// The system's: resolv.conf and the hosts file, with hickory's cache.
    System(TokioResolver),
    /// `dns_servers`: every question goes to them as asked. hickory's
    /// resolver answers 127/8 PTR and `localhost` itself (RFC 6761); an
    /// instance serving its own loopback zones needs the real answers.
    Direct(NameServerPool<TokioRuntimeProvider>),
}

/// How long one query may take before the next attempt.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Why a resolver could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("dns_servers: '{0}' is not an address or address:port")]
    BadServer(String),
    #[error(transparent)]
    Config(#[from] pfx_config::Error),
    #[error("/etc/resolv.conf: {0}")]
    System(String),
    #[error("resolver: {0}")]
    Resolver(String),
}

/// Parses `dns_servers`: `127.0.0.1`, `127.0.0.1:5353`, `[::1]:5353`, comma or space separated.
pub fn parse_servers(value: &str) -> Result<Vec<SocketAddr>, SetupError> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<SocketAddr>()
                .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| SetupError::BadServer(s.to_owned()))
        })
        .collect()
}

/// hickory's configuration for the name server at `addr`: UDP, then TCP,
/// both on `addr`'s port (hickory's own constructor would use port 53,
/// and an instance's named listens elsewhere). `dns_servers` and named's
/// `forwarders` are both asked this way.
pub fn name_server(addr: SocketAddr) -> NameServerConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
    ns.connections = vec![udp, tcp];
    ns
}

impl Resolver {
    /// The resolver main.cf asks for (`dns_servers`).
    pub fn from_config(cfg: &pfx_config::Config) -> Result<Self, SetupError> {
        let servers = parse_servers(&cfg.get("dns_servers")?)?;
        Self::new(&servers)
    }

    /// A resolver asking `servers`, or the system's when there are none.
    pub fn new(servers: &[SocketAddr]) -> Result<Self, SetupError> {
        let provider = TokioRuntimeProvider::default();
        let backend = if servers.is_empty() {
            let mut b =
                TokioResolver::builder(provider).map_err(|e| SetupError::System(e.to_string()))?;
            b.options_mut().use_hosts_file = ResolveHosts::Always;
            // Mail names are absolute: never try search domains.
            b.options_mut().ndots = 0;
            Backend::System(b.build().map_err(|e| SetupError::Resolver(e.to_string()))?)
        } else {
            let configs = servers.iter().map(|s| name_server(*s));
            let mut opts = ResolverOpts::default();
            opts.timeout = TIMEOUT;
            let tls = TlsConfig::new().map_err(|e| SetupError::Resolver(e.to_string()))?;
            Backend::Direct(NameServerPool::from_config(
                configs,
                Arc::new(PoolContext::new(opts, tls)),
                provider,
            ))
        };
        let system = matches!(backend, Backend::System(_));
        let hosts = system
            .then(|| Hosts::from_system().ok().map(Arc::new))
            .flatten();
        let host_names = if system {
            host_names(&std::fs::read_to_string("/etc/hosts").unwrap_or_default())
        } else {
            Vec::new()
        };
        Ok(Self {
            backend,
            hosts,
            host_names: Arc::new(host_names),
        })
    }

    /// The answer records of one question.
    async fn query(&self, name: &str, rtype: RecordType) -> Result<Vec<Record>, Error> {
        let name = Name::from_ascii(absolute(name)).map_err(|_| Error::NotFound)?;
        match &self.backend {
            Backend::System(r) => Ok(r
                .lookup(name, rtype)
                .await
                .map_err(classify)?
                .answers()
                .to_vec()),
            Backend::Direct(pool) => {
                let mut responses =
                    pool.lookup(Query::query(name, rtype), DnsRequestOptions::default());
                let response = std::future::poll_fn(|cx| responses.as_mut().poll_next(cx))
                    .await
                    .ok_or_else(|| Error::Temporary("no response".into()))?
                    .map_err(classify)?;
                match response.response_code {
                    ResponseCode::NoError => Ok(response.answers.clone()),
                    ResponseCode::NXDomain => Err(Error::NotFound),
                    code => Err(Error::Temporary(code.to_string())),
                }
            }
        }
    }

    /// The names a PTR lookup of `ip` gives, without the trailing dot.
    pub async fn ptr(&self, ip: IpAddr) -> Result<Vec<String>, Error> {
        if let Some(name) = host_name(&self.host_names, ip) {
            return Ok(vec![name]);
        }
        let names = self
            .query(&reverse_name(ip), RecordType::PTR)
            .await?
            .iter()
            .filter_map(|r| match &r.data {
                RData::PTR(p) => Some(strip_dot(&p.0.to_ascii())),
                _ => None,
            })
            .collect::<Vec<_>>();
        non_empty(names)
    }

    /// The A and AAAA addresses of `name`.
    pub async fn addresses(&self, name: &str) -> Result<Vec<IpAddr>, Error> {
        if let Some(found) = self.hosts.as_deref().and_then(|h| hosts_addresses(h, name)) {
            return non_empty(found);
        }
        let mut out = Vec::new();
        let mut failure = None;
        for rtype in [RecordType::A, RecordType::AAAA] {
            match self.query(name, rtype).await {
                Ok(records) => out.extend(records.iter().filter_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                })),
                Err(Error::NotFound) => {}
                Err(e) => failure = Some(e),
            }
        }
        match failure {
            Some(e) if out.is_empty() => Err(e),
            _ => non_empty(out),
        }
    }

    /// The MX records of `domain` as (preference, host), lowest preference first.
    pub async fn mx(&self, domain: &str) -> Result<Vec<(u16, String)>, Error> {
        let mut out = self
            .query(domain, RecordType::MX)
            .await?
            .iter()
            .filter_map(|r| match &r.data {
                RData::MX(mx) => Some((mx.preference, strip_dot(&mx.exchange.to_ascii()))),
                _ => None,
            })
            .collect::<Vec<_>>();
        out.sort_by_key(|(pref, _)| *pref);
        non_empty(out)
    }

    /// The names of `domain`'s name servers.
    pub async fn ns(&self, domain: &str) -> Result<Vec<String>, Error> {
        let out = self
            .query(domain, RecordType::NS)
            .await?
            .iter()
            .filter_map(|r| match &r.data {
                RData::NS(ns) => Some(strip_dot(&ns.0.to_ascii())),
                _ => None,
            })
            .collect();
        non_empty(out)
    }

    /// The IPv4 addresses DNS (never the hosts file) gives `name`: what a
    /// DNS blocklist answers.
    pub async fn a(&self, name: &str) -> Result<Vec<std::net::Ipv4Addr>, Error> {
        let out = self
            .query(name, RecordType::A)
            .await?
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect();
        non_empty(out)
    }

    /// The TXT records of `name`, each one's strings joined.
    pub async fn txt(&self, name: &str) -> Result<Vec<String>, Error> {
        let out = self
            .query(name, RecordType::TXT)
            .await?
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(t) => Some(
                    t.txt_data
                        .iter()
                        .map(|d| String::from_utf8_lossy(d).into_owned())
                        .collect::<String>(),
                ),
                _ => None,
            })
            .collect();
        non_empty(out)
    }

    /// What Postfix's smtpd learns of a client's names: the PTR name
    /// (`reverse`), and the verified name (`name`, one whose addresses
    /// include `ip`), each with whether a lookup failed only for now.
    pub async fn client_names(&self, ip: IpAddr) -> ClientNames {
        let mut out = ClientNames::default();
        let names = match self.ptr(ip).await {
            Ok(n) => n,
            Err(e) => {
                out.reverse_temporary = matches!(e, Error::Temporary(_));
                out.name_temporary = out.reverse_temporary;
                return out;
            }
        };
        out.reverse = names.first().cloned();
        for name in names {
            match self.addresses(&name).await {
                Ok(addrs) if addrs.contains(&ip) => {
                    out.name = Some(name);
                    out.warning = None;
                    return out;
                }
                Ok(_) => {
                    out.warning = Some(format!("hostname {name} does not resolve to address {ip}"))
                }
                Err(Error::NotFound) => {
                    out.warning = Some(format!(
                    "hostname {name} does not resolve to address {ip}: Name or service not known"
                ))
                }
                Err(Error::Temporary(_)) => out.name_temporary = true,
            }
        }
        out
    }
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.backend {
            Backend::System(_) => "Resolver(system)",
            Backend::Direct(_) => "Resolver(dns_servers)",
        })
    }
}

/// `1.0.0.127.in-addr.arpa.` / the nibble form for IPv6.
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::new();
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s + "ip6.arpa."
        }
    }
}

fn absolute(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

fn strip_dot(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_owned()
}

fn non_empty<T>(v: Vec<T>) -> Result<Vec<T>, Error> {
    if v.is_empty() {
        Err(Error::NotFound)
    } else {
        Ok(v)
    }
}

fn classify(e: hickory_resolver::net::NetError) -> Error {
    if e.is_nx_domain() || e.is_no_records_found() {
        Error::NotFound
    } else {
        Error::Temporary(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use hickory_resolver::config::ProtocolConfig;

    #[test]
    fn a_name_server_is_asked_on_its_own_port_by_udp_then_tcp() {
        let ns = name_server("127.0.0.1:5353".parse().unwrap());
        assert_eq!(ns.ip, "127.0.0.1".parse::<IpAddr>().unwrap());
        let ways: Vec<(ProtocolConfig, u16)> = ns
            .connections
            .iter()
            .map(|c| (c.protocol.clone(), c.port))
            .collect();
        assert_eq!(
            ways,
            [(ProtocolConfig::Udp, 5353), (ProtocolConfig::Tcp, 5353)]
        );
    }

    #[test]
    fn a_name_in_the_hosts_file_is_answered_from_it_alone() {
        let mut hosts = Hosts::default();
        hosts
            .read_hosts_conf("127.0.0.1 localhost\n127.0.0.1 vm\n::1 six\n".as_bytes())
            .unwrap();
        assert_eq!(
            hosts_addresses(&hosts, "vm"),
            Some(vec!["127.0.0.1".parse().unwrap()])
        );
        assert_eq!(
            hosts_addresses(&hosts, "six."),
            Some(vec!["::1".parse().unwrap()])
        );
        assert_eq!(hosts_addresses(&hosts, "elsewhere.test"), None);
    }

    #[test]
    fn an_address_in_the_hosts_file_has_the_first_name_of_its_first_line() {
        let names = host_names(
            "# comment\n127.0.0.1\tlocalhost\n127.0.0.1 runsc # sandbox\n127.0.0.1 vm\n\
             ::1 ip6-localhost ip6-loopback\nbad line\n",
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            host_name(&names, ip("127.0.0.1")).as_deref(),
            Some("localhost")
        );
        assert_eq!(
            host_name(&names, ip("::1")).as_deref(),
            Some("ip6-localhost")
        );
        assert_eq!(host_name(&names, ip("192.0.2.1")), None);
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_name("127.0.0.1".parse().unwrap()),
            "1.0.0.127.in-addr.arpa."
        );
        assert!(reverse_name("::1".parse().unwrap()).starts_with("1.0.0.0.0.0.0.0."));
        assert!(reverse_name("::1".parse().unwrap()).ends_with(".0.ip6.arpa."));
    }

    #[test]
    fn server_lists() {
        assert_eq!(
            parse_servers("127.0.0.1:5353, 127.0.0.2 [::1]:53").unwrap(),
            vec![
                "127.0.0.1:5353".parse().unwrap(),
                "127.0.0.2:53".parse().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
        assert!(parse_servers("").unwrap().is_empty());
        assert!(parse_servers("ns.example").is_err());
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_temporary_failure() {
        // A loopback port where nothing listens: refused at once, never the internet.
        let r = Resolver::new(&["127.0.0.1:9".parse().unwrap()]).unwrap();
        match r.ptr("127.0.0.1".parse().unwrap()).await {
            Err(Error::Temporary(_)) => {}
            other => panic!("{other:?}"),
        }
    }
}
