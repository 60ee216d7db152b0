//! BIND address match lists (`allow-query { 127.0.0.0/8; !10/8; any; };`).
//!
//! Elements are tried in order and the first that matches decides: a plain
//! element allows, a negated one (`!`) denies; nothing matching denies.
//! `key NAME` matches a request signed (TSIG, verified) with that key.

use std::net::IpAddr;

use ipnet::IpNet;

/// One element of a list.
#[derive(Debug, Clone, PartialEq)]
pub enum Element {
    Any,
    None,
    /// This host's addresses.
    Localhost,
    /// The networks this host's interfaces are on.
    Localnets,
    Net(IpNet),
    Nested(Acl),
    /// An `acl` name not yet resolved (only while named.conf is read).
    Named(String),
    /// `key NAME`: requests signed with this key (names compared without
    /// case or trailing dot).
    Key(String),
}

/// An address match list.
#[derive(Debug, Clone, PartialEq)]
pub struct Acl {
    elements: Vec<(bool, Element)>,
}

/// This host's interface addresses, for `localhost` and `localnets`.
#[derive(Debug, Clone, Default)]
pub struct Local {
    pub nets: Vec<IpNet>,
    /// The interface (scope) of each IPv6 link-local address: a socket on
    /// one needs it.
    pub scopes: Vec<(std::net::Ipv6Addr, u32)>,
}

impl Local {
    /// The interfaces as the kernel reports them now.
    pub fn discover() -> Self {
        let mut nets: Vec<IpNet> = vec![
            "127.0.0.0/8".parse().expect("net"),
            "::1/128".parse().expect("net"),
        ];
        let mut scopes = Vec::new();
        if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
            for a in addrs {
                if let Some(v6) = a.address.as_ref().and_then(|s| s.as_sockaddr_in6()) {
                    if v6.ip().is_unicast_link_local() {
                        scopes.push((v6.ip(), v6.scope_id()));
                    }
                }
                let (Some(addr), Some(mask)) = (a.address, a.netmask) else {
                    continue;
                };
                let net = match (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
                    (Some(a), Some(m)) => {
                        IpNet::with_netmask(IpAddr::V4(a.ip()), IpAddr::V4(m.ip())).ok()
                    }
                    _ => match (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
                        (Some(a), Some(m)) => {
                            IpNet::with_netmask(IpAddr::V6(a.ip()), IpAddr::V6(m.ip())).ok()
                        }
                        _ => None,
                    },
                };
                nets.extend(net);
            }
        }
        Self { nets, scopes }
    }

    /// The scope of `ip` when it is a link-local address of this host (0
    /// for any other address).
    pub fn scope_id(&self, ip: std::net::Ipv6Addr) -> u32 {
        self.scopes
            .iter()
            .find(|(a, _)| *a == ip)
            .map_or(0, |(_, s)| *s)
    }

    /// Every address configured on an interface (`listen-on { any; }` binds these).
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.nets.iter().map(|n| n.addr()).collect()
    }
}

/// An `acl` name used but not defined (or nested too deep).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undefined ACL '{0}'")]
pub struct Undefined(pub String);

impl Acl {
    pub fn new(elements: Vec<(bool, Element)>) -> Self {
        Self { elements }
    }

    /// `{ any; }`
    pub fn any() -> Self {
        Self::new(vec![(false, Element::Any)])
    }

    /// Replaces `acl` names with their lists.
    pub fn resolve(self, acls: &[(String, Self)]) -> Result<Self, Undefined> {
        self.resolve_depth(acls, 0)
    }

    fn resolve_depth(self, acls: &[(String, Self)], depth: usize) -> Result<Self, Undefined> {
        let mut out = Vec::new();
        for (neg, e) in self.elements {
            let e = match e {
                Element::Named(n) => match acls.iter().find(|(name, _)| *name == n) {
                    Some((_, acl)) if depth < 16 => {
                        Element::Nested(acl.clone().resolve_depth(acls, depth + 1)?)
                    }
                    _ => return Err(Undefined(n)),
                },
                Element::Nested(a) => Element::Nested(a.resolve_depth(acls, depth + 1)?),
                e => e,
            };
            out.push((neg, e));
        }
        Ok(Self::new(out))
    }

    /// Whether `addr` is allowed, for a request that is not signed.
    pub fn allows(&self, addr: IpAddr, local: &Local) -> bool {
        self.allows_signed(addr, None, local)
    }

    /// Whether `addr` is allowed for a request signed with `key` (none:
    /// not signed; `key` elements then never match).
    pub fn allows_signed(&self, addr: IpAddr, key: Option<&str>, local: &Local) -> bool {
        let key = key.map(|k| k.trim_end_matches('.'));
        self.decide(canonical(addr), key, local).unwrap_or(false)
    }

    fn decide(&self, addr: IpAddr, key: Option<&str>, local: &Local) -> Option<bool> {
        for (negated, e) in &self.elements {
            let hit = match e {
                Element::Any => Some(true),
                Element::None | Element::Named(_) => None,
                Element::Localhost => local.nets.iter().any(|n| n.addr() == addr).then_some(true),
                Element::Localnets => local.nets.iter().any(|n| n.contains(&addr)).then_some(true),
                Element::Net(n) => n.contains(&addr).then_some(true),
                Element::Nested(acl) => acl.decide(addr, key, local),
                Element::Key(name) => key
                    .is_some_and(|k| k.eq_ignore_ascii_case(name.trim_end_matches('.')))
                    .then_some(true),
            };
            if let Some(allow) = hit {
                return Some(allow != *negated);
            }
        }
        None
    }

    /// The single addresses listed (`listen-on { 127.0.0.2; }` binds them even
    /// when no interface carries them, as on Linux's 127/8 loopback).
    pub fn hosts(&self) -> Vec<IpAddr> {
        let mut out = Vec::new();
        for (negated, e) in &self.elements {
            match e {
                Element::Net(n) if !negated && n.prefix_len() == n.max_prefix_len() => {
                    out.push(n.addr())
                }
                Element::Nested(a) if !negated => out.extend(a.hosts()),
                _ => {}
            }
        }
        out
    }
}

/// An IPv4 client seen on an IPv6 socket is matched as IPv4.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Element {
        Element::Net(s.parse().unwrap())
    }

    #[test]
    fn first_match_decides() {
        let acl = Acl::new(vec![
            (true, net("127.0.0.2/32")),
            (false, net("127.0.0.0/8")),
        ]);
        let local = Local::default();
        assert!(!acl.allows("127.0.0.2".parse().unwrap(), &local));
        assert!(acl.allows("127.0.0.3".parse().unwrap(), &local));
        assert!(!acl.allows("10.1.1.1".parse().unwrap(), &local));
        assert!(acl.allows("::ffff:127.0.0.1".parse().unwrap(), &local));
    }

    #[test]
    fn key_elements_match_requests_signed_with_the_key() {
        let local = Local::default();
        let acl = Acl::new(vec![
            (true, Element::Key("old-key".into())),
            (false, Element::Key("xfer-key".into())),
            (false, net("127.0.0.9/32")),
        ]);
        let a = "127.0.0.1".parse().unwrap();
        assert!(acl.allows_signed(a, Some("XFER-key."), &local));
        assert!(!acl.allows_signed(a, Some("other"), &local));
        assert!(!acl.allows(a, &local));
        let nine = "127.0.0.9".parse().unwrap();
        assert!(acl.allows(nine, &local));
        assert!(!acl.allows_signed(nine, Some("old-key"), &local));
    }

    #[test]
    fn builtins_and_nesting() {
        let local = Local {
            nets: vec!["127.0.0.1/8".parse().unwrap()],
            scopes: Vec::new(),
        };
        let lh = Acl::new(vec![(false, Element::Localhost)]);
        assert!(lh.allows("127.0.0.1".parse().unwrap(), &local));
        assert!(!lh.allows("127.0.0.2".parse().unwrap(), &local));
        let ln = Acl::new(vec![(false, Element::Localnets)]);
        assert!(ln.allows("127.9.9.9".parse().unwrap(), &local));
        let none = Acl::new(vec![(false, Element::None)]);
        assert!(!none.allows("127.0.0.1".parse().unwrap(), &local));
        // A nested list that denies decides, as in BIND.
        let nested = Acl::new(vec![
            (
                false,
                Element::Nested(Acl::new(vec![(true, net("127.0.0.5/32"))])),
            ),
            (false, Element::Any),
        ]);
        assert!(!nested.allows("127.0.0.5".parse().unwrap(), &local));
        assert!(nested.allows("127.0.0.6".parse().unwrap(), &local));
        assert_eq!(
            Acl::new(vec![
                (false, net("127.0.0.2/32")),
                (true, net("127.0.0.3/32")),
                (false, net("10.0.0.0/8"))
            ])
            .hosts(),
            vec!["127.0.0.2".parse::<IpAddr>().unwrap()]
        );
    }
}
