//! smtpd's client limits, as Postfix's: connections a client has open and
//! its rates of connections, messages, recipients, new TLS sessions and
//! AUTH commands per `anvil_rate_time_unit`, counted by anvil(8) for every
//! smtpd process of the instance. A session reports its client's events
//! (none for `smtpd_client_event_limit_exceptions`, none when every limit
//! is 0) and refuses what is over a limit, with Postfix's replies and
//! warnings. A limit is exceeded when the count is greater than it; an
//! event counts whether or not it is then refused. When anvil cannot be
//! asked, no limit applies, as with Postfix (one warning per outage).

use std::net::IpAddr;

use pfx_address::NetworkList;
use pfx_config::{BuildError, Config};
use pfx_ipc::anvil::{Anvil, Unavailable};
use pfx_ipc::proto::AnvilEvent;
use pfx_smtp_proto::Reply;
use tracing::warn;

use crate::settings::Settings;

/// The limits of main.cf (0: none).
#[derive(Debug)]
pub(crate) struct Limits {
    connection_count: u32,
    connection_rate: u32,
    message_rate: u32,
    recipient_rate: u32,
    newtls_rate: u32,
    auth_rate: u32,
    exceptions: HostList,
    /// The master.cf service name (`smtp`, `127.0.0.1:2525`): anvil counts
    /// per service and client, and the warnings name it.
    service: String,
}

impl Limits {
    pub(crate) fn new(cfg: &Config) -> Result<Self, BuildError> {
        let limit = |name: &str| cfg.count::<u32>(name);
        Ok(Self {
            connection_count: limit("smtpd_client_connection_count_limit")?,
            connection_rate: limit("smtpd_client_connection_rate_limit")?,
            message_rate: limit("smtpd_client_message_rate_limit")?,
            recipient_rate: limit("smtpd_client_recipient_rate_limit")?,
            newtls_rate: limit("smtpd_client_new_tls_session_rate_limit")?,
            auth_rate: limit("smtpd_client_auth_rate_limit")?,
            exceptions: HostList::parse(&cfg.list("smtpd_client_event_limit_exceptions")?)?,
            service: cfg.get("service_name")?,
        })
    }

    /// Whether smtpd talks to anvil at all (Postfix: any limit set).
    fn any(&self) -> bool {
        [
            self.connection_count,
            self.connection_rate,
            self.message_rate,
            self.recipient_rate,
            self.newtls_rate,
            self.auth_rate,
        ]
        .iter()
        .any(|&l| l > 0)
    }
}

/// A list of clients (`smtpd_client_event_limit_exceptions`,
/// `smtpd_authorized_xforward_hosts`): addresses and networks, and host
/// names (`.domain` for any name under domain; a name alone matches
/// itself only, as these lists are not in
/// `parent_domain_matches_subdomains`), each possibly `!negated`; the
/// first item that matches decides, as in Postfix's namadr lists. A table
/// (`type:name`) is refused at start: not implemented here.
#[derive(Debug, Default)]
pub(crate) struct HostList {
    items: Vec<(bool, Host)>,
}

#[derive(Debug)]
enum Host {
    Network(NetworkList),
    Name(String),
}

impl HostList {
    pub(crate) fn parse(items: &[String]) -> Result<Self, BuildError> {
        let mut out = Vec::new();
        for item in items {
            let negated = item.starts_with('!');
            let pattern = item.trim_start_matches('!');
            if let Ok(net) = NetworkList::parse(&[pattern.to_owned()]) {
                out.push((negated, Host::Network(net)));
            } else if pattern.contains(':') {
                return Err(format!(
                    "table \"{pattern}\" in a client list: not implemented by postfix-rs"
                )
                .into());
            } else {
                let name = pattern.trim_end_matches('.').to_ascii_lowercase();
                out.push((negated, Host::Name(name)));
            }
        }
        Ok(Self { items: out })
    }

    pub(crate) fn matches(&self, name: &str, ip: IpAddr) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        for (negated, host) in &self.items {
            let hit = match host {
                Host::Network(n) => n.contains(ip),
                Host::Name(p) => {
                    *p == name || (p.starts_with('.') && name.len() > p.len() && name.ends_with(p))
                }
            };
            if hit {
                return !negated;
            }
        }
        false
    }
}

/// What a session asks anvil about, besides its connection.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Limit {
    /// MAIL FROM.
    Mail,
    /// RCPT TO and VRFY.
    Rcpt,
    Auth,
    /// STARTTLS, before its `220`: the new-TLS-session rate, counting nothing.
    StartTls,
    /// A handshake that was not a resumption is done (or failed).
    NewTls,
}

/// One session's reports to anvil.
#[derive(Debug)]
pub(crate) struct Events {
    /// `service:address`.
    ident: String,
    /// `name[address]`.
    client: String,
    ip: IpAddr,
    /// Its connection was counted: the disconnect is due at the end.
    registered: bool,
}

impl Events {
    /// The events of a client, or `None` when it reports none: no limit is
    /// set, or it is one of `smtpd_client_event_limit_exceptions` (matched
    /// by its verified name or its address).
    pub(crate) fn new(st: &Settings, name: &str, client: &str, ip: IpAddr) -> Option<Self> {
        let l = &st.limits;
        (l.any() && !l.exceptions.matches(name, ip)).then(|| Self {
            ident: pfx_ipc::anvil::ident(&l.service, &ip.to_string()),
            client: client.to_owned(),
            ip,
            registered: false,
        })
    }

    /// The connection, before the greeting: the reply that replaces the
    /// banner when the client is over the count or the rate limit.
    pub(crate) async fn connect(&mut self, st: &Settings, anvil: &Anvil) -> Option<Reply> {
        let (count, rate) = answer(anvil, anvil.connect(&self.ident).await)?;
        self.registered = true;
        let l = &st.limits;
        if l.connection_count > 0 && count > l.connection_count {
            warn!(
                "Connection concurrency limit exceeded: {count} from {} for service {}",
                self.client, l.service
            );
        } else if l.connection_rate > 0 && rate > l.connection_rate {
            warn!(
                "Connection rate limit exceeded: {rate} from {} for service {}",
                self.client, l.service
            );
        } else {
            return None;
        }
        Some(Reply::new(
            421,
            "4.7.0",
            format!(
                "{} Error: too many connections from {}",
                st.myhostname, self.ip
            ),
        ))
    }

    /// The end of the session.
    pub(crate) async fn disconnect(&mut self, anvil: &Anvil) {
        if std::mem::take(&mut self.registered) {
            answer(anvil, anvil.disconnect(&self.ident).await);
        }
    }

    /// An event within the session: the reply that refuses it when the
    /// client is over that event's limit.
    pub(crate) async fn check(&self, what: Limit, st: &Settings, anvil: &Anvil) -> Option<Reply> {
        let l = &st.limits;
        let (limit, event) = match what {
            Limit::Mail => (l.message_rate, AnvilEvent::Message),
            Limit::Rcpt => (l.recipient_rate, AnvilEvent::Recipient),
            Limit::Auth => (l.auth_rate, AnvilEvent::Auth),
            Limit::StartTls => (l.newtls_rate, AnvilEvent::NewTlsStatus),
            Limit::NewTls => (l.newtls_rate, AnvilEvent::NewTls),
        };
        if limit == 0 {
            return None;
        }
        let rate = answer(anvil, anvil.rate(event, &self.ident).await)?;
        if rate <= limit {
            return None;
        }
        let (client, ip, service) = (&self.client, self.ip, &l.service);
        Some(match what {
            Limit::Mail => {
                warn!("Message delivery request rate limit exceeded: {rate} from {client} for service {service}");
                Reply::new(450, "4.7.1", format!("Error: too much mail from {ip}"))
            }
            Limit::Rcpt => {
                warn!("Recipient address rate limit exceeded: {rate} from {client} for service {service}");
                Reply::new(
                    450,
                    "4.7.1",
                    format!("Error: too many recipients from {ip}"),
                )
            }
            Limit::Auth => {
                warn!(
                    "AUTH command rate limit exceeded: {rate} from {client} for service {service}"
                );
                Reply::new(
                    450,
                    "4.7.1",
                    format!("Error: too many AUTH commands from {ip}"),
                )
            }
            Limit::StartTls => {
                warn!("Refusing STARTTLS request from {client} for service {service}");
                Reply::new(
                    454,
                    "4.7.0",
                    format!("Error: too many new TLS sessions from {client}"),
                )
            }
            Limit::NewTls => {
                warn!("New TLS session rate limit exceeded: {rate} from {client} for service {service}");
                Reply::new(
                    421,
                    "4.7.0",
                    format!(
                        "{} Error: too many new TLS sessions from {client}",
                        st.myhostname
                    ),
                )
            }
        })
    }

    /// Before a wrapper-mode (SMTPS) handshake: whether the client is over
    /// the new-TLS-session limit; then it is dropped without a word.
    pub(crate) async fn refuse_wrapper(&self, st: &Settings, anvil: &Anvil) -> bool {
        let l = &st.limits;
        if l.newtls_rate == 0 {
            return false;
        }
        let over = answer(
            anvil,
            anvil.rate(AnvilEvent::NewTlsStatus, &self.ident).await,
        )
        .is_some_and(|rate| rate > l.newtls_rate);
        if over {
            warn!(
                "Refusing TLS service request from {} for service {}",
                self.client, l.service
            );
        }
        over
    }
}

/// anvil's answer, or `None` (no limit) when it cannot be asked.
fn answer<T>(anvil: &Anvil, r: Result<T, Unavailable>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            if e.first {
                warn!("problem talking to server {}: {}", anvil.name(), e.error);
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exceptions(items: &[&str]) -> HostList {
        HostList::parse(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn exceptions_match_networks_names_and_subdomains() {
        let e = exceptions(&[
            "127.0.0.0/8",
            "[::1]/128",
            "relay.example.com",
            ".trusted.org",
        ]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(e.matches("unknown", ip("127.0.0.2")));
        // The first match decides; a negated one refuses.
        let n = exceptions(&[
            "!10.0.0.5",
            "10.0.0.0/8",
            "!bad.trusted.org",
            ".trusted.org",
        ]);
        assert!(!n.matches("unknown", ip("10.0.0.5")));
        assert!(n.matches("unknown", ip("10.0.0.6")));
        assert!(!n.matches("bad.trusted.org", ip("192.0.2.1")));
        assert!(n.matches("good.trusted.org", ip("192.0.2.1")));
        assert!(HostList::parse(&["hash:/etc/postfix/x".to_owned()]).is_err());
        assert!(e.matches("unknown", ip("::1")));
        assert!(e.matches("unknown", ip("::ffff:127.0.0.9")));
        assert!(!e.matches("unknown", ip("192.0.2.1")));
        assert!(e.matches("Relay.Example.COM.", ip("192.0.2.1")));
        assert!(!e.matches("a.relay.example.com", ip("192.0.2.1")));
        assert!(e.matches("mx.trusted.org", ip("192.0.2.1")));
        assert!(!e.matches("trusted.org", ip("192.0.2.1")));
        assert!(!e.matches("untrusted.org", ip("192.0.2.1")));
    }
}
