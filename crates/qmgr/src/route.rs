//! Which transport and next hop a recipient goes to (Postfix's
//! trivial-rewrite resolve, for the parts in use): local domains go to
//! `$local_transport`, others to `$default_transport`.

use pfx_address::DomainList;
use pfx_config::Config;

/// Where one recipient goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Route {
    pub(crate) transport: String,
    /// Next hop: a domain for smtp, `$myhostname` for local.
    pub(crate) nexthop: String,
    /// What concurrency is counted against: the recipient for local, the next hop otherwise.
    pub(crate) destination: String,
}

pub(crate) struct Router {
    mydestination: DomainList,
    local: (String, String),
    default: (String, String),
}

/// `transport:nexthop` as in master.cf-style transport specs.
fn split_spec(spec: &str) -> (String, String) {
    match spec.split_once(':') {
        Some((t, n)) => (t.to_owned(), n.to_owned()),
        None => (spec.to_owned(), String::new()),
    }
}

impl Router {
    pub(crate) fn new(cfg: &Config) -> Result<Self, String> {
        let e = |x: pfx_config::Error| x.to_string();
        Ok(Self {
            mydestination: DomainList::new(&cfg.list("mydestination").map_err(e)?),
            local: split_spec(&cfg.get("local_transport").map_err(e)?),
            default: split_spec(&cfg.get("default_transport").map_err(e)?),
        })
    }

    pub(crate) fn route(&self, recipient: &str) -> Route {
        let r = pfx_address::resolve(recipient, &|d| self.mydestination.contains(d));
        if r.is_local {
            Route {
                transport: self.local.0.clone(),
                nexthop: self.local.1.clone(),
                destination: r.address().to_ascii_lowercase(),
            }
        } else {
            let nexthop = if self.default.1.is_empty() {
                r.domain.clone()
            } else {
                self.default.1.clone()
            };
            Route {
                transport: self.default.0.clone(),
                destination: nexthop.clone(),
                nexthop,
            }
        }
    }

    /// Recipients per delivery request and concurrent requests per destination.
    pub(crate) fn limits(&self, transport: &str, cfg: &Config) -> (usize, usize) {
        let n = |name: &str, d: i64| {
            usize::try_from(cfg.int(name).unwrap_or(d))
                .unwrap_or(1)
                .max(1)
        };
        if transport == self.local.0 {
            (1, n("local_destination_concurrency_limit", 2))
        } else {
            (
                n("default_destination_recipient_limit", 50),
                n("default_destination_concurrency_limit", 20),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn local_domains_go_local_and_others_to_smtp() {
        let cfg = Config::from_text(Path::new("/etc/postfix"), "myhostname = mail.ywnds.com\nmydomain = ywnds.com\nmydestination = $myhostname, $mydomain\n").unwrap();
        let r = Router::new(&cfg).unwrap();
        let l = r.route("openstack@YWNDS.com");
        assert_eq!(
            (l.transport.as_str(), l.nexthop.as_str()),
            ("local", "mail.ywnds.com")
        );
        let s = r.route("x@163.com");
        assert_eq!(
            (
                s.transport.as_str(),
                s.nexthop.as_str(),
                s.destination.as_str()
            ),
            ("smtp", "163.com", "163.com")
        );
        assert_eq!(r.route("user%163.com@ywnds.com").nexthop, "163.com");
    }
}
