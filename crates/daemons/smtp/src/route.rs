//! From a next hop to the servers to try, as Postfix's smtp and lmtp do.
//! SMTP: `[host]:port` without MX lookup, `host:port` or `domain` with it.
//! MX hosts go in preference order (random among equal preferences), with
//! the domain's own A/AAAA when it has no MX; a null MX (RFC 7505) and a
//! route back to this host are permanent failures. LMTP: `unix:path` (a
//! relative path is under the queue directory), or `inet:host:port`,
//! `host:port`, `[host]`, the port defaulting to `lmtp_tcp_port`; never MX.

use pfx_maillog::delivery::{Class, Outcome};
use std::net::IpAddr;

use pfx_dns::{Error as DnsError, Resolver};

/// Where one server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Inet(IpAddr, u16),
    /// A UNIX-domain socket, as the next hop wrote it (relative to the
    /// queue directory unless absolute).
    Unix(String),
}

/// One server to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The host name (for a UNIX-domain socket, `$myhostname`, as Postfix).
    pub(crate) host: String,
    pub(crate) endpoint: Endpoint,
}

impl Target {
    fn inet(host: &str, ip: IpAddr, port: u16) -> Self {
        Self {
            host: host.to_owned(),
            endpoint: Endpoint::Inet(ip, port),
        }
    }

    /// `host[ip]` (`host[path]` for a socket), how Postfix names a server
    /// in its messages.
    pub(crate) fn name(&self) -> String {
        match &self.endpoint {
            Endpoint::Inet(ip, _) => format!("{}[{ip}]", self.host),
            Endpoint::Unix(path) => format!("{}[{path}]", self.host),
        }
    }

    /// `host[ip]:port`, or `host[path]` for a socket: the log's `relay=`.
    pub(crate) fn relay(&self) -> String {
        match &self.endpoint {
            Endpoint::Inet(_, port) => format!("{}:{port}", self.name()),
            Endpoint::Unix(_) => self.name(),
        }
    }
}

/// What the next hop says: (host, port, look up MX).
pub(crate) fn parse_nexthop(nexthop: &str) -> (String, u16, bool) {
    let (host, port, mx) = match nexthop.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((h, tail)) => (h, tail.strip_prefix(':'), false),
            None => (rest, None, false),
        },
        None => match nexthop.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty() => {
                (h, Some(p), true)
            }
            _ => (nexthop, None, true),
        },
    };
    let port = port.and_then(|p| p.parse().ok()).unwrap_or(25);
    (host.trim_end_matches('.').to_ascii_lowercase(), port, mx)
}

/// A port number or one of Postfix's `known_tcp_ports` names.
pub(crate) fn tcp_port(service: &str) -> Option<u16> {
    match service {
        "lmtp" => Some(24),
        "smtp" => Some(25),
        "smtps" | "submissions" => Some(465),
        "submission" => Some(587),
        n => n.parse().ok().filter(|&p| p != 0),
    }
}

/// An LMTP next hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LmtpHop {
    /// `unix:path`.
    Unix(String),
    /// `inet:host:port`, `host:port`, `[host]`...: the host without
    /// brackets, lower case, and the port.
    Inet(String, u16),
}

/// Reads an LMTP next hop; `default_port` is `lmtp_tcp_port`'s. `Err`:
/// a port that is no port.
pub(crate) fn parse_lmtp_nexthop(nexthop: &str, default_port: u16) -> Result<LmtpHop, String> {
    if let Some(path) = nexthop.strip_prefix("unix:") {
        return Ok(LmtpHop::Unix(path.to_owned()));
    }
    let rest = nexthop.strip_prefix("inet:").unwrap_or(nexthop);
    // Postfix's host_port(): `[host]` and `[host]:port`, else `host:port`
    // split at the last colon (a bare IPv6 address needs the brackets).
    let (host, port) = match rest.strip_prefix('[') {
        Some(inner) => match inner.split_once(']') {
            Some((h, tail)) => (h, tail.strip_prefix(':')),
            None => (inner, None),
        },
        None => match rest.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            _ => (rest, None),
        },
    };
    let port = match port {
        None => default_port,
        Some(p) => {
            tcp_port(p).ok_or_else(|| format!("bad network port: {p} for destination: {rest}"))?
        }
    };
    Ok(LmtpHop::Inet(
        host.trim_end_matches('.').to_ascii_lowercase(),
        port,
    ))
}

/// The servers for an LMTP next hop: the socket, or every address of the
/// host (no MX lookup, no loop detection: the next hop is the final
/// delivery server by configuration).
pub(crate) async fn lmtp_servers(
    resolver: &Resolver,
    hop: &LmtpHop,
    myhostname: &str,
) -> Result<Vec<Target>, Outcome> {
    match hop {
        LmtpHop::Unix(path) => Ok(vec![Target {
            host: myhostname.to_owned(),
            endpoint: Endpoint::Unix(path.clone()),
        }]),
        LmtpHop::Inet(host, port) => {
            if let Ok(ip) = host.parse::<IpAddr>() {
                return Ok(vec![Target::inet(host, ip, *port)]);
            }
            let ips = resolver
                .addresses(host)
                .await
                .map_err(|e| not_found(host, "A", &e))?;
            Ok(ips
                .into_iter()
                .map(|ip| Target::inet(host, ip, *port))
                .collect())
        }
    }
}

/// Who "we" are, for loop detection.
pub(crate) struct Me<'a> {
    pub(crate) hostname: &'a str,
    pub(crate) addresses: &'a [IpAddr],
}

impl Me<'_> {
    fn is(&self, host: &str, ips: &[IpAddr]) -> bool {
        host.eq_ignore_ascii_case(self.hostname) || ips.iter().any(|ip| self.addresses.contains(ip))
    }
}

fn not_found(name: &str, rtype: &str, e: &DnsError) -> Outcome {
    match e {
        DnsError::NotFound => Outcome::failed(false, "5.4.4", "none", format!("Host or domain name not found. Name service error for name={name} type={rtype}: Host not found")),
        DnsError::Temporary(_) => Outcome::failed(true, "4.4.3", "none", format!(
                "Host or domain name not found. Name service error for name={name} type={rtype}: Host not found, try again"
            )),
    }
}

fn loops(domain: &str) -> Outcome {
    Outcome::failed(
        false,
        "5.4.6",
        "none",
        format!("mail for {domain} loops back to myself"),
    )
}

/// The servers for `nexthop`, in the order to try them, and whether this
/// host is one of its MX hosts (then no fallback relay is used for it).
pub(crate) async fn servers(
    resolver: &Resolver,
    nexthop: &str,
    me: &Me<'_>,
) -> Result<(Vec<Target>, bool), Outcome> {
    let (host, port, use_mx) = parse_nexthop(nexthop);
    let target = |h: &str, ip: IpAddr| Target::inet(h, ip, port);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok((vec![target(&host, ip)], false));
    }
    let mx = if use_mx {
        match resolver.mx(&host).await {
            Ok(list) => Some(list),
            Err(DnsError::NotFound) => None,
            Err(e) => return Err(not_found(&host, "MX", &e)),
        }
    } else {
        None
    };
    let Some(mut mx) = mx else {
        // No MX: the host itself.
        let ips = resolver
            .addresses(&host)
            .await
            .map_err(|e| not_found(&host, "A", &e))?;
        if use_mx && me.is(&host, &ips) {
            return Err(loops(&host));
        }
        return Ok((ips.into_iter().map(|ip| target(&host, ip)).collect(), false));
    };
    if mx.len() == 1 && mx[0].1.is_empty() {
        return Err(Outcome::failed(
            false,
            "5.1.10",
            "none",
            format!("Domain {host} does not accept mail (nullMX)"),
        ));
    }
    shuffle_equal_preferences(&mut mx);
    let mut out = Vec::new();
    let mut last_error = None;
    let mut we_are_mx = false;
    for (pref, name) in &mx {
        match resolver.addresses(name).await {
            Ok(ips) if me.is(name, &ips) => {
                // We are this MX: only better ones are worth trying.
                out.retain(|(p, _): &(u16, Target)| p < pref);
                if out.is_empty() {
                    return Err(loops(&host));
                }
                we_are_mx = true;
                break;
            }
            Ok(ips) => out.extend(ips.into_iter().map(|ip| (*pref, target(name, ip)))),
            Err(e) => last_error = Some(not_found(name, "A", &e)),
        }
    }
    if out.is_empty() {
        // Every MX host failed to resolve: try again later.
        let mut f = last_error.unwrap_or_else(|| not_found(&host, "MX", &DnsError::NotFound));
        f.class = Class::Deferred;
        f.dsn = "4.4.3".into();
        return Err(f);
    }
    Ok((out.into_iter().map(|(_, t)| t).collect(), we_are_mx))
}

/// Whether a failure to find a destination's servers lets the fallback
/// relays have the mail (Postfix: a destination not found, or one whose
/// lookup fails for now); a null MX or a loop back to this host does not.
pub(crate) fn fallback_may_follow(f: &Outcome) -> bool {
    matches!(f.dsn.as_str(), "4.4.3" | "5.4.4")
}

/// Random order among MX hosts of equal preference (RFC 5321 5.1).
fn shuffle_equal_preferences(mx: &mut [(u16, String)]) {
    use std::hash::{BuildHasher, Hasher};
    let mut seed = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let mut start = 0;
    while start < mx.len() {
        let end = start
            + mx[start..]
                .iter()
                .take_while(|(p, _)| *p == mx[start].0)
                .count();
        for i in (start + 1..end).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let j = start + (seed % (i - start + 1) as u64) as usize;
            mx.swap(i, j);
        }
        start = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nexthop_forms() {
        assert_eq!(
            parse_nexthop("[127.0.0.2]:2525"),
            ("127.0.0.2".into(), 2525, false)
        );
        assert_eq!(
            parse_nexthop("[mx.example.test]"),
            ("mx.example.test".into(), 25, false)
        );
        assert_eq!(
            parse_nexthop("example.test:2526"),
            ("example.test".into(), 2526, true)
        );
        assert_eq!(
            parse_nexthop("Example.TEST"),
            ("example.test".into(), 25, true)
        );
    }

    #[test]
    fn lmtp_nexthop_forms() {
        let hop = |s: &str| parse_lmtp_nexthop(s, 24);
        assert_eq!(
            hop("unix:private/dovecot-lmtp"),
            Ok(LmtpHop::Unix("private/dovecot-lmtp".into()))
        );
        assert_eq!(
            hop("unix:/run/dovecot/lmtp"),
            Ok(LmtpHop::Unix("/run/dovecot/lmtp".into()))
        );
        assert_eq!(
            hop("inet:127.0.0.1:2424"),
            Ok(LmtpHop::Inet("127.0.0.1".into(), 2424))
        );
        assert_eq!(
            hop("inet:[::1]:2424"),
            Ok(LmtpHop::Inet("::1".into(), 2424))
        );
        assert_eq!(
            hop("inet:Mail.Example.COM"),
            Ok(LmtpHop::Inet("mail.example.com".into(), 24))
        );
        assert_eq!(
            hop("mail.example.com:lmtp"),
            Ok(LmtpHop::Inet("mail.example.com".into(), 24))
        );
        assert_eq!(
            hop("[mail.example.com]"),
            Ok(LmtpHop::Inet("mail.example.com".into(), 24))
        );
        assert_eq!(
            parse_lmtp_nexthop("host.example", 2003),
            Ok(LmtpHop::Inet("host.example".into(), 2003))
        );
        assert!(hop("inet:host.example:nonsense").is_err());
        assert!(hop("inet:host.example:0").is_err());
    }

    #[test]
    fn a_socket_is_named_after_this_host_without_a_port() {
        let t = Target {
            host: "mail.example.com".into(),
            endpoint: Endpoint::Unix("private/dovecot-lmtp".into()),
        };
        assert_eq!(t.relay(), "mail.example.com[private/dovecot-lmtp]");
        let t = Target::inet("lmtp.example", "192.0.2.1".parse().unwrap(), 24);
        assert_eq!(t.relay(), "lmtp.example[192.0.2.1]:24");
        assert_eq!(t.name(), "lmtp.example[192.0.2.1]");
    }

    #[tokio::test]
    async fn lmtp_servers_need_no_lookup_for_sockets_and_addresses() {
        let resolver = Resolver::new(&[]).unwrap();
        let unix = lmtp_servers(&resolver, &LmtpHop::Unix("private/x".into()), "me.example")
            .await
            .unwrap();
        assert_eq!(unix[0].relay(), "me.example[private/x]");
        let inet = lmtp_servers(
            &resolver,
            &LmtpHop::Inet("127.0.0.1".into(), 24),
            "me.example",
        )
        .await
        .unwrap();
        assert_eq!(inet[0].relay(), "127.0.0.1[127.0.0.1]:24");
    }

    #[test]
    fn equal_preferences_are_shuffled_but_stay_in_their_group() {
        let mut seen_first = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut mx: Vec<(u16, String)> = vec![
                (5, "a".into()),
                (10, "b".into()),
                (10, "c".into()),
                (10, "d".into()),
                (20, "e".into()),
            ];
            shuffle_equal_preferences(&mut mx);
            assert_eq!(mx[0].1, "a");
            assert_eq!(mx[4].1, "e");
            seen_first.insert(mx[1].1.clone());
        }
        assert_eq!(
            seen_first.len(),
            3,
            "every equal-preference host comes first sometimes"
        );
    }
}
