//! Other servers named.conf points at: `also-notify` lists and the
//! `primaries` (or `masters`) statements that name lists of them, each
//! server `ADDRESS [port N] [key NAME]`, a list's `port` the default; and
//! `notify`, which says whom a primary zone's changes are announced to.

use std::net::{IpAddr, SocketAddr};

use crate::conf::{Error, Item, Stmt};

/// One server: where it listens, and the TSIG key for talking to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub address: SocketAddr,
    pub key: Option<String>,
}

/// `notify`: yes (the zone's NS hosts and `also-notify`), explicit
/// (`also-notify` only), no; `primary-only` (`master-only`): yes for
/// primary zones, no for secondary ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notify {
    Yes,
    Explicit,
    PrimaryOnly,
    No,
}

/// `max-journal-size`: how much of a zone's history is kept for IXFR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalSize {
    /// BIND's `default`: twice the zone's size.
    Default,
    Unlimited,
    Bytes(u64),
}

pub(crate) fn journal_size(opt: &Stmt) -> Result<JournalSize, Error> {
    let v = opt.single()?;
    Ok(match v.to_ascii_lowercase().as_str() {
        "default" => JournalSize::Default,
        "unlimited" => JournalSize::Unlimited,
        _ => JournalSize::Bytes(crate::logging::size_of(opt, v)?),
    })
}

pub(crate) fn notify(opt: &Stmt) -> Result<Notify, Error> {
    Ok(match opt.single()?.to_ascii_lowercase().as_str() {
        "yes" | "true" | "1" => Notify::Yes,
        "primary-only" | "master-only" => Notify::PrimaryOnly,
        "explicit" => Notify::Explicit,
        "no" | "false" | "0" => Notify::No,
        other => return Err(opt.error(&format!("'{other}' is not a valid notify value"))),
    })
}

/// A `primaries NAME [port N] { ... };` statement (also `masters`).
pub(crate) fn list_statement(
    s: &Stmt,
    lists: &[(String, Vec<Remote>)],
) -> Result<(String, Vec<Remote>), Error> {
    let name = s.word(1).to_owned();
    if name.is_empty() || matches!(s.items.get(1), Some(Item::Block(_))) {
        return Err(s.error(&format!(
            "expected: {} NAME [port N] {{ address [port N] [key NAME]; ... }};",
            s.word(0)
        )));
    }
    if lists.iter().any(|(n, _)| *n == name) {
        return Err(s.error(&format!("{} '{name}' is duplicated", s.word(0))));
    }
    Ok((name, servers(s, 2, lists, 53)?))
}

/// The servers of a statement whose items from `from` on are `[port N]
/// [dscp N] { ... }`, with `default_port` where none is said.
pub(crate) fn servers(
    s: &Stmt,
    from: usize,
    lists: &[(String, Vec<Remote>)],
    default_port: u16,
) -> Result<Vec<Remote>, Error> {
    let mut port = default_port;
    let mut i = from;
    while let Some(Item::Word(w)) = s.items.get(i) {
        match w.as_str() {
            "port" => port = port_number(s, s.word(i + 1))?,
            // The DSCP of outgoing packets changes no answer.
            "dscp" => {}
            other => return Err(s.error(&format!("unexpected '{other}'"))),
        }
        i += 2;
    }
    let block = s.block()?;
    let mut out = Vec::new();
    for e in block {
        let words: Vec<&str> = e
            .items
            .iter()
            .map(|item| match item {
                Item::Word(w) => Ok(w.as_str()),
                Item::Block(_) => Err(e.error("unexpected '{'")),
            })
            .collect::<Result<_, _>>()?;
        let Some((first, rest)) = words.split_first() else {
            continue;
        };
        let mut key = None;
        let mut own_port = None;
        let mut j = 0;
        while j < rest.len() {
            let value = rest.get(j + 1).copied().unwrap_or_default();
            match rest[j] {
                "port" => own_port = Some(port_number(e, value)?),
                "key" => key = Some(value.trim_end_matches('.').to_owned()),
                "tls" => {
                    return Err(
                        e.error("'tls' (zone transfers and NOTIFY over TLS) is not supported")
                    )
                }
                other => return Err(e.error(&format!("unexpected '{other}'"))),
            }
            j += 2;
        }
        match first.parse::<IpAddr>() {
            Ok(ip) => out.push(Remote {
                address: SocketAddr::new(ip, own_port.unwrap_or(port)),
                key,
            }),
            Err(_) => match lists.iter().find(|(n, _)| n == first) {
                Some((_, list)) => out.extend(list.iter().map(|r| Remote {
                    key: key.clone().or_else(|| r.key.clone()),
                    ..r.clone()
                })),
                None => return Err(e.error(&format!("primaries list '{first}' is not defined"))),
            },
        }
    }
    Ok(out)
}

/// A `server ADDRESS[/LEN] { keys { NAME; }; ... };` statement: the key
/// named signs what named sends that server (NOTIFY, SOA queries,
/// transfers) when the list that names the server gives none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub net: ipnet::IpNet,
    pub key: Option<String>,
}

/// Options of `server` that change nothing named sends or answers here.
const INERT_SERVER_OPTIONS: &[&str] = &[
    "edns",
    "edns-udp-size",
    "edns-version",
    "max-udp-size",
    "notify-source",
    "notify-source-v6",
    "padding",
    "provide-ixfr",
    "query-source",
    "query-source-v6",
    "request-expire",
    "request-ixfr",
    "request-nsid",
    "send-cookie",
    "tcp-keepalive",
    "tcp-only",
    "transfer-format",
    "transfer-source",
    "transfer-source-v6",
    "transfers",
];

/// Reads a `server` statement; `warn` is told of inert options.
pub(crate) fn server(s: &Stmt, warn: &mut dyn FnMut(&Stmt, String)) -> Result<Server, Error> {
    let text = s.word(1);
    let net = text
        .parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| s.error(&format!("'{text}' is not an IP address or prefix")))?;
    let mut key = None;
    for opt in s.block()? {
        match opt.keyword().unwrap_or_default() {
            "keys" => {
                let names = opt.block()?;
                key = names
                    .first()
                    .map(|n| n.word(0).trim_end_matches('.').to_owned());
            }
            // A server named says is bogus must get no queries: not done here.
            "bogus" if opt.single()? != "no" => {
                return Err(opt.error(&format!("server '{text}': 'bogus' is not supported")))
            }
            "bogus" => {}
            o if INERT_SERVER_OPTIONS.contains(&o) => warn(
                opt,
                format!("server '{text}': option '{o}' is not supported; ignored"),
            ),
            o => return Err(opt.error(&format!("server '{text}': unknown option '{o}'"))),
        }
    }
    Ok(Server { net, key })
}

/// The key `servers` give `ip` (the most specific statement's).
pub fn server_key(servers: &[Server], ip: IpAddr) -> Option<&str> {
    servers
        .iter()
        .filter(|s| s.net.contains(&ip))
        .max_by_key(|s| s.net.prefix_len())
        .and_then(|s| s.key.as_deref())
}

fn port_number(s: &Stmt, text: &str) -> Result<u16, Error> {
    text.parse()
        .map_err(|_| s.error(&format!("'{text}' is not a valid port")))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::conf::parse;

    #[test]
    fn lists_servers_ports_and_keys() {
        let c = parse(
            Path::new("/etc/bind/named.conf"),
            "primaries upstream port 5300 { 192.0.2.1; 2001:db8::1 port 53 key \"k\"; };\n\
             options { also-notify port 5400 { 127.0.0.2; upstream key other; 127.0.0.3 port 1 key \"x.\"; }; notify explicit; };\n",
        )
        .unwrap();
        let r = |a: &str, k: Option<&str>| Remote {
            address: a.parse().unwrap(),
            key: k.map(str::to_owned),
        };
        assert_eq!(
            c.options.also_notify,
            vec![
                r("127.0.0.2:5400", None),
                r("192.0.2.1:5300", Some("other")),
                r("[2001:db8::1]:53", Some("other")),
                r("127.0.0.3:1", Some("x")),
            ]
        );
        assert_eq!(c.options.notify, Notify::Explicit);
        for (text, want) in [
            ("options { also-notify { nolist; }; };", "/etc/bind/named.conf:1: primaries list 'nolist' is not defined"),
            ("options { notify maybe; };", "/etc/bind/named.conf:1: 'maybe' is not a valid notify value"),
            ("masters m { 127.0.0.1 port x; };", "/etc/bind/named.conf:1: 'x' is not a valid port"),
            ("options { also-notify { 127.0.0.1 tls t; }; };", "/etc/bind/named.conf:1: 'tls' (zone transfers and NOTIFY over TLS) is not supported"),
        ] {
            let e = parse(Path::new("/etc/bind/named.conf"), text).unwrap_err();
            assert_eq!(e.to_string(), want, "{text}");
        }
    }

    #[test]
    fn server_statements_give_their_keys() {
        let c = parse(
            Path::new("/etc/bind/named.conf"),
            "server 10.0.0.0/8 { keys { a; }; transfers 2; };\nserver 10.1.2.3 { keys { \"b\"; }; bogus no; };\n",
        )
        .unwrap();
        let key = |ip: &str| server_key(&c.servers, ip.parse().unwrap()).map(str::to_owned);
        assert_eq!(key("10.1.2.3").as_deref(), Some("b"));
        assert_eq!(key("10.9.9.9").as_deref(), Some("a"));
        assert_eq!(key("192.0.2.1"), None);
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("option 'transfers' is not supported")),
            "{:?}",
            c.warnings
        );
        let e = parse(
            Path::new("/etc/bind/named.conf"),
            "server 10.0.0.1 {\n bogus yes;\n};",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/bind/named.conf:2: server '10.0.0.1': 'bogus' is not supported"
        );
    }
}
