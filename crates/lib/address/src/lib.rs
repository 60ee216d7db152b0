//! Mail addresses as Postfix's trivial-rewrite resolves them.
//!
//! [`resolve`] turns what a client wrote into the address that decides
//! routing: a source route (`@hop:user@dom`) is dropped; a quoted local part
//! is unquoted (`"user@remote"@ourdomain` is `user@remote`, Postfix's
//! `resolve_dequoted_address`); in a local domain, `user%remote` becomes
//! `user@remote` (`allow_percent_hack`) and `remote!user` becomes
//! `user@remote` (`swap_bangpath`); `user@remote@ourdomain` routes to
//! `remote`. So every classic relay trick resolves to the remote domain it
//! aims at, and relay control sees it.

pub mod header;

use std::net::IpAddr;

/// A resolved address: where the mail would go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Local part as it will be delivered (unquoted).
    pub local: String,
    /// Domain, lowercased; empty for a bare local name.
    pub domain: String,
    /// The domain is one of ours (mydestination, or no domain at all).
    pub is_local: bool,
    /// The local part still holds a routing operator (`@`, `!`, `%`), as
    /// `user%victim@relay.example` does: where the mail ends up is for the
    /// next hop to decide, so such a destination never counts as ours
    /// (Postfix's RESOLVE_FLAG_ROUTED, whatever this host's own
    /// `swap_bangpath`/`allow_percent_hack` are).
    pub routed: bool,
}

impl Resolved {
    /// `local@domain`, or `local` for a bare name.
    pub fn address(&self) -> String {
        if self.domain.is_empty() {
            self.local.clone()
        } else {
            format!("{}@{}", self.local, self.domain)
        }
    }
}

/// Whether `local` is `postmaster` or `mailer-daemon` (any case): local
/// parts mail software writes to, always accepted for a local domain whatever
/// `local_recipient_maps` say (RFC 5321 requires postmaster); without an
/// alias, local discards their mail, as Postfix does.
pub fn is_required_local_name(local: &str) -> bool {
    ["postmaster", "mailer-daemon"]
        .iter()
        .any(|n| local.eq_ignore_ascii_case(n))
}

/// Splits at the last `@` outside quotes: (local part, domain).
pub fn split(addr: &str) -> (&str, &str) {
    let mut quoted = false;
    let mut at = None;
    let mut escaped = false;
    for (i, c) in addr.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            '@' if !quoted => at = Some(i),
            _ => {}
        }
    }
    match at {
        Some(i) => (&addr[..i], &addr[i + 1..]),
        None => (addr, ""),
    }
}

/// `user` becomes `user@origin` (Postfix's `append_at_myorigin`); addresses
/// with a domain, and the null address, stay as they are.
pub fn qualify(addr: &str, origin: &str) -> String {
    if addr.is_empty() || !split(addr).1.is_empty() {
        addr.to_owned()
    } else {
        format!("{addr}@{origin}")
    }
}

/// Removes RFC 5321 quoting from a local part.
pub fn unquote(local: &str) -> String {
    let mut out = String::with_capacity(local.len());
    let mut escaped = false;
    for c in local.chars() {
        match c {
            _ if escaped => {
                out.push(c);
                escaped = false;
            }
            '\\' => escaped = true,
            '"' => {}
            c => out.push(c),
        }
    }
    out
}

/// Resolves `addr`; `is_local_domain` says whether a domain is ours.
pub fn resolve(addr: &str, is_local_domain: &dyn Fn(&str) -> bool) -> Resolved {
    // Source route: "@a,@b:user@dom" -> "user@dom".
    let mut addr = addr.trim();
    if addr.starts_with('@') {
        if let Some(i) = addr.find(':') {
            addr = &addr[i + 1..];
        }
    }
    let (local, domain) = split(addr);
    let mut local = unquote(local);
    let mut domain = domain.trim_end_matches('.').to_ascii_lowercase();
    // Rewriting continues while the address stays in one of our domains.
    for _ in 0..10 {
        if !(domain.is_empty() || is_local_domain(&domain)) {
            break;
        }
        if let Some(i) = local.rfind('@') {
            domain = local[i + 1..].to_ascii_lowercase();
            local.truncate(i);
        } else if let Some(i) = local.rfind('%') {
            domain = local[i + 1..].to_ascii_lowercase();
            local.truncate(i);
        } else if let Some(i) = local.find('!') {
            domain = local[..i].to_ascii_lowercase();
            local = local[i + 1..].to_owned();
        } else {
            break;
        }
    }
    let is_local = domain.is_empty() || is_local_domain(&domain);
    let routed = local.contains(['@', '!', '%']);
    Resolved {
        local,
        domain,
        is_local,
        routed,
    }
}

/// `mydestination`-style matching: a domain list, case-insensitive.
#[derive(Debug, Clone, Default)]
pub struct DomainList(Vec<String>);

impl DomainList {
    /// From already-expanded list items (`mail.ywnds.com`, `localhost`...).
    pub fn new(items: &[String]) -> Self {
        Self(
            items
                .iter()
                .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
                .collect(),
        )
    }

    pub fn contains(&self, domain: &str) -> bool {
        let d = domain.trim_end_matches('.');
        self.0.iter().any(|x| x.eq_ignore_ascii_case(d))
    }
}

/// A network list item that is neither an address nor a CIDR block.
#[derive(Debug, thiserror::Error)]
#[error("bad network address in mynetworks: \"{0}\"")]
pub struct BadNetwork(pub String);

/// `mynetworks`: addresses and CIDR blocks (`127.0.0.0/8`, `[::1]/128`, `10.1.2.3`).
#[derive(Debug, Clone, Default)]
pub struct NetworkList(Vec<ipnet::IpNet>);

impl NetworkList {
    /// Parses list items; a bad one is an error naming it.
    pub fn parse(items: &[String]) -> Result<Self, BadNetwork> {
        items
            .iter()
            .map(|item| {
                let s = item.replace(['[', ']'], "");
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| BadNetwork(item.clone()))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.0.iter().any(|n| n.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(d: &str) -> bool {
        ["ywnds.com", "mail.ywnds.com", "localhost"].contains(&d)
    }

    fn r(a: &str) -> (String, bool) {
        let x = resolve(a, &ours);
        (x.address(), x.is_local)
    }

    #[test]
    fn plain_addresses() {
        assert_eq!(
            r("openstack@ywnds.com"),
            ("openstack@ywnds.com".into(), true)
        );
        assert_eq!(r("Someone@163.COM"), ("Someone@163.com".into(), false));
        assert_eq!(r("postmaster"), ("postmaster".into(), true));
    }

    #[test]
    fn every_relay_trick_resolves_to_the_remote_domain() {
        for trick in [
            "user%163.com@ywnds.com",
            "\"user@163.com\"@ywnds.com",
            "@ywnds.com:user@163.com",
            "user@163.com@ywnds.com",
            "163.com!user@ywnds.com",
            "user%163.com",
            "user%163.com%ywnds.com@ywnds.com",
        ] {
            assert_eq!(r(trick), ("user@163.com".into(), false), "{trick}");
        }
    }

    #[test]
    fn routing_operators_left_in_a_remote_address_mark_it_routed() {
        for routed in [
            "user%victim.example@relay.example",
            "\"user@victim.example\"@relay.example",
            "victim.example!user@relay.example",
        ] {
            assert!(resolve(routed, &ours).routed, "{routed}");
        }
        for plain in ["user@relay.example", "user%163.com@ywnds.com", "hadoop"] {
            assert!(!resolve(plain, &ours).routed, "{plain}");
        }
    }

    #[test]
    fn tricks_that_stay_local_are_local() {
        assert_eq!(
            r("openstack%ywnds.com@ywnds.com"),
            ("openstack@ywnds.com".into(), true)
        );
        assert_eq!(
            r("ywnds.com!openstack@mail.ywnds.com"),
            ("openstack@ywnds.com".into(), true)
        );
    }

    #[test]
    fn bare_names_get_the_origin_domain() {
        assert_eq!(qualify("hadoop", "ywnds.com"), "hadoop@ywnds.com");
        assert_eq!(
            qualify("hadoop@example.org", "ywnds.com"),
            "hadoop@example.org"
        );
        assert_eq!(qualify("\"a@b\"", "ywnds.com"), "\"a@b\"@ywnds.com");
        assert_eq!(qualify("", "ywnds.com"), "");
    }

    #[test]
    fn networks_match_cidr_and_mapped_addresses() {
        let n = NetworkList::parse(&["127.0.0.0/8".into(), "[::1]/128".into(), "10.1.2.3".into()])
            .unwrap();
        assert!(n.contains("127.0.0.2".parse().unwrap()));
        assert!(n.contains("::1".parse().unwrap()));
        assert!(n.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(!n.contains("10.1.2.4".parse().unwrap()));
        let one = NetworkList::parse(&["127.0.0.1/32".into()]).unwrap();
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert_eq!(
            NetworkList::parse(&["not-a-network".into()])
                .unwrap_err()
                .to_string(),
            "bad network address in mynetworks: \"not-a-network\""
        );
    }

    #[test]
    fn domain_lists_ignore_case_and_trailing_dot() {
        let d = DomainList::new(&["Mail.YWNDS.com".into(), "localhost".into()]);
        assert!(d.contains("mail.ywnds.com."));
        assert!(!d.contains("ywnds.com"));
    }
}
