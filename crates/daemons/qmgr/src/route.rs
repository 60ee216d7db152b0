//! Which transport and next hop a recipient goes to: Postfix's
//! trivial-rewrite resolve (`pfx_resolve`: address classes,
//! `transport_maps`, relay hosts, `relocated_maps`), plus what qmgr decides
//! itself. `error:text`, `retry:text` and `discard:text` are answered by
//! qmgr without an agent, and so is mail to `$double_bounce_sender` in a
//! local domain (discarded, as Postfix's qmgr does). A table the resolver
//! could not ask defers the recipient (`address resolver failure`), never
//! another route.

use pfx_config::{BuildError, Config};
use pfx_maillog::delivery::Outcome;
use pfx_resolve::Resolver;

/// Where one recipient goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Route {
    pub(crate) transport: String,
    /// Next hop: a domain or `[host]:port` for smtp, `$myhostname` for
    /// local, the reason for error and retry.
    pub(crate) nexthop: String,
    /// What concurrency is counted against: the recipient for local, the next hop otherwise.
    pub(crate) destination: String,
}

/// One copy of each route in use: a deep queue to one destination holds
/// one route, not one per recipient and per waiting batch (a route is three
/// strings; 100,000 deferred messages held 600,000 of them).
#[derive(Default)]
pub(crate) struct Shared {
    set: std::collections::HashSet<std::sync::Arc<Route>>,
    /// How many were left after the last pass that let go of unused ones.
    kept: usize,
}

impl Shared {
    /// The shared copy of `route`. Routes no message uses any more go when
    /// the set has doubled since the last pass (local routes name their
    /// recipient, so they are many).
    pub(crate) fn get(&mut self, route: Route) -> std::sync::Arc<Route> {
        if let Some(r) = self.set.get(&route) {
            return r.clone();
        }
        if self.set.len() >= 2 * self.kept.max(512) {
            self.set.retain(|r| std::sync::Arc::strong_count(r) > 1);
            self.kept = self.set.len();
        }
        let r = std::sync::Arc::new(route);
        self.set.insert(r.clone());
        r
    }
}

pub(crate) struct Router {
    resolver: Resolver,
    double_bounce: String,
    allow_min_user: bool,
    myorigin: String,
    myhostname: String,
    /// `default_filter_nexthop`: for a content filter without a next hop.
    filter_nexthop: String,
}

/// Transports qmgr answers itself instead of handing to an agent.
pub(crate) fn is_builtin(transport: &str) -> bool {
    matches!(transport, "error" | "retry" | "discard")
}

impl Router {
    pub(crate) fn new(cfg: &Config) -> Result<Self, BuildError> {
        Ok(Self {
            resolver: Resolver::new(cfg)?,
            double_bounce: cfg.get("double_bounce_sender")?,
            allow_min_user: cfg.bool("allow_min_user")?,
            myorigin: cfg.get("myorigin")?,
            myhostname: cfg.get("myhostname")?,
            filter_nexthop: cfg.get("default_filter_nexthop")?,
        })
    }

    /// A redirect address in canonical form (`user` gets `@$myorigin`),
    /// as Postfix's qmgr rewrites it before resolving it.
    pub(crate) fn canonical(&self, addr: &str) -> String {
        pfx_address::qualify(addr, &self.myorigin)
    }

    /// Where a message with a content filter (`transport:nexthop`) sends
    /// `recipient`: to the filter, whatever the recipient's own route. A
    /// filter without a next hop uses `default_filter_nexthop`, else the
    /// recipient's domain, else `$myhostname`, as Postfix's qmgr.
    pub(crate) fn filter_route(&self, filter: &str, recipient: &str) -> Route {
        let (transport, hop) = filter.split_once(':').unwrap_or((filter, ""));
        let nexthop = if !hop.is_empty() {
            hop.to_owned()
        } else if !self.filter_nexthop.is_empty() {
            self.filter_nexthop.clone()
        } else {
            match recipient.rsplit_once('@') {
                Some((_, d)) if !d.is_empty() => d.to_owned(),
                _ => self.myhostname.clone(),
            }
        };
        Route {
            transport: transport.to_owned(),
            destination: nexthop.to_ascii_lowercase(),
            nexthop,
        }
    }

    /// Where mail from `sender` to `recipient` goes.
    pub(crate) fn route(&self, sender: &str, recipient: &str) -> Route {
        // A command (pipe's argv, a local alias command) could take a
        // leading '-' for an option: such recipients bounce unless
        // allow_min_user says otherwise, as Postfix's resolver has it.
        if !self.allow_min_user && recipient.starts_with('-') {
            return Route {
                transport: "error".into(),
                nexthop: "5.1.3 bad address syntax".into(),
                destination: recipient.to_ascii_lowercase(),
            };
        }
        let res = match self.resolver.resolve(sender, recipient) {
            Ok(res) => res,
            Err(failure) => {
                tracing::warn!("{failure}");
                let r = self.resolver.resolve_address(recipient);
                return Route {
                    transport: "retry".into(),
                    nexthop: "4.3.0 address resolver failure".into(),
                    destination: r.domain,
                };
            }
        };
        let r = &res.address;
        if r.is_local && r.local.eq_ignore_ascii_case(&self.double_bounce) {
            return Route {
                transport: "discard".into(),
                nexthop: "undeliverable postmaster notification discarded".into(),
                destination: r.address().to_ascii_lowercase(),
            };
        }
        let destination = if res.transport == self.resolver.local_transport() {
            r.address().to_ascii_lowercase()
        } else {
            res.nexthop.to_ascii_lowercase()
        };
        Route {
            transport: res.transport,
            nexthop: res.nexthop,
            destination,
        }
    }

    /// Recipients per delivery request and concurrent requests per destination.
    pub(crate) fn limits(&self, transport: &str, cfg: &Config) -> (usize, usize) {
        let n = |name: &str, d: i64| {
            usize::try_from(cfg.int(name).unwrap_or(d))
                .unwrap_or(1)
                .max(1)
        };
        if transport == self.resolver.local_transport() {
            return (1, n("local_destination_concurrency_limit", 2));
        }
        // `smtp_destination_concurrency_limit` and the like, where they exist.
        let per = |what: &str, d: i64| {
            let own = format!("{transport}_destination_{what}_limit");
            match cfg.int(&own) {
                Ok(v) => usize::try_from(v).unwrap_or(1).max(1),
                Err(_) => n(&format!("default_destination_{what}_limit"), d),
            }
        };
        (per("recipient", 50), per("concurrency", 20))
    }
}

/// What `error:TEXT`, `retry:TEXT` and `discard:TEXT` answer, with no
/// agent involved: TEXT's status code when it has one of the right class
/// (5 and 4), else 5.0.0 and 4.0.0; no text: `Address is undeliverable`.
pub(crate) fn builtin_status(transport: &str, nexthop: &str) -> Outcome {
    if transport == "discard" {
        return discarded(nexthop);
    }
    let bounce = transport == "error";
    let (default, class, who) = if bounce {
        ("5.0.0", '5', "bounce_append")
    } else {
        ("4.0.0", '4', "defer_append")
    };
    let (mut dsn, text) = pfx_smtp_proto::dsn_split(default, nexthop);
    if !dsn.starts_with(class) {
        tracing::warn!("{who}: ignoring dsn code \"{dsn}\"");
        dsn = default.to_owned();
    }
    let reason = if text.is_empty() {
        "Address is undeliverable".to_owned()
    } else {
        text.to_owned()
    };
    Outcome::failed(!bounce, &dsn, "none", reason)
}

/// What `discard:TEXT` logs, as sent: TEXT, which may start with a status
/// code; no text: the recipient's domain (filled in by the caller), as
/// Postfix says.
fn discarded(nexthop: &str) -> Outcome {
    let (dsn, text) = pfx_smtp_proto::dsn_split("2.0.0", nexthop);
    Outcome::new(pfx_maillog::delivery::Class::Sent, &dsn, "none", text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::Arc;

    #[test]
    fn messages_to_one_destination_share_one_route_and_unused_ones_go() {
        let route = |d: &str| Route {
            transport: "smtp".into(),
            nexthop: d.into(),
            destination: d.into(),
        };
        let mut shared = Shared::default();
        let a = shared.get(route("163.com"));
        let b = shared.get(route("163.com"));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &shared.get(route("qq.com"))));
        // Routes in use stay shared however many come and go.
        for i in 0..5000 {
            shared.get(route(&format!("d{i}.example")));
        }
        assert!(
            shared.set.len() < 2048,
            "unused routes are let go: {}",
            shared.set.len()
        );
        assert!(Arc::ptr_eq(&a, &shared.get(route("163.com"))));
    }

    #[test]
    fn local_domains_go_local_and_others_to_smtp() {
        let cfg = Config::from_text(Path::new("/etc/postfix"), "myhostname = mail.ywnds.com\nmydomain = ywnds.com\nmydestination = $myhostname, $mydomain\n").unwrap();
        let r = Router::new(&cfg).unwrap();
        let l = r.route("", "openstack@YWNDS.com");
        assert_eq!(
            (l.transport.as_str(), l.nexthop.as_str()),
            ("local", "mail.ywnds.com")
        );
        let s = r.route("", "x@163.com");
        assert_eq!(
            (
                s.transport.as_str(),
                s.nexthop.as_str(),
                s.destination.as_str()
            ),
            ("smtp", "163.com", "163.com")
        );
        assert_eq!(r.route("", "user%163.com@ywnds.com").nexthop, "163.com");
        let d = r.route("", "Double-Bounce@ywnds.com");
        assert_eq!(
            (d.transport.as_str(), d.nexthop.as_str()),
            ("discard", "undeliverable postmaster notification discarded")
        );
        assert_eq!(r.route("", "double-bounce@163.com").transport, "smtp");
    }

    #[test]
    fn sender_dependent_relayhost_overrides_relayhost_for_remote_mail() {
        let dir = tempfile::tempdir().unwrap();
        let table = dir.path().join("sender_relay");
        std::fs::write(
            &table,
            "alice@ywnds.com [smtp.provider-a.test]:587
@partner.test [smtp.provider-b.test]:587
bob@partner.test DUNNO
",
        )
        .unwrap();
        let cfg = Config::from_text(
            Path::new("/etc/postfix"),
            &format!(
                "myhostname = mail.ywnds.com\nmydomain = ywnds.com\nmydestination = $myhostname, $mydomain\n\
                 relayhost = [smarthost.test]\nsender_dependent_relayhost_maps = texthash:{}\n",
                table.display()
            ),
        )
        .unwrap();
        let r = Router::new(&cfg).unwrap();
        let hop = |from: &str, to: &str| r.route(from, to).nexthop;
        assert_eq!(
            hop("Alice@ywnds.com", "x@163.com"),
            "[smtp.provider-a.test]:587"
        );
        assert_eq!(
            hop("carol@partner.test", "x@163.com"),
            "[smtp.provider-b.test]:587"
        );
        assert_eq!(hop("bob@partner.test", "x@163.com"), "[smarthost.test]");
        assert_eq!(hop("", "x@163.com"), "[smarthost.test]");
        // Local mail stays local whoever sends it.
        assert_eq!(
            r.route("alice@ywnds.com", "openstack@ywnds.com").transport,
            "local"
        );
        // A table that cannot be read: the mail waits, it does not take
        // $relayhost instead of its sender's provider.
        let cfg = Config::from_text(
            Path::new("/etc/postfix"),
            "myhostname = mail.ywnds.com\nmydomain = ywnds.com\nrelayhost = [smarthost.test]\n\
             sender_dependent_relayhost_maps = lmdb:/nonexistent/sender_relay\n",
        )
        .unwrap();
        let r = Router::new(&cfg).unwrap();
        let route = r.route("alice@ywnds.com", "x@163.com");
        assert_eq!(route.transport, "retry", "{route:?}");
    }

    #[test]
    fn relayhost_relay_domains_and_transport_maps() {
        let dir = tempfile::tempdir().unwrap();
        let table = dir.path().join("transport");
        std::fs::write(
            &table,
            "example.test smtp:[127.0.0.2]:2526\n.sub.test relay:\nbad.test error:no such domain here\nvip@163.com smtp:[10.0.0.1]\nywnds.com local:\n",
        )
        .unwrap();
        let cfg = Config::from_text(
            Path::new("/etc/postfix"),
            &format!(
                "myhostname = mail.ywnds.com\nmydomain = ywnds.com\nmydestination = $myhostname, $mydomain\n\
                 relayhost = [smarthost.test]:587\nrelay_domains = partner.test\ntransport_maps = texthash:{}\n",
                table.display()
            ),
        )
        .unwrap();
        let r = Router::new(&cfg).unwrap();
        let t = |a: &str| {
            let x = r.route("", a);
            (x.transport, x.nexthop)
        };
        assert_eq!(
            t("a@163.com"),
            ("smtp".into(), "[smarthost.test]:587".into())
        );
        assert_eq!(t("vip@163.com"), ("smtp".into(), "[10.0.0.1]".into()));
        // As Postfix's resolve: relayhost carries relay_domains mail too.
        assert_eq!(
            t("a@partner.test"),
            ("relay".into(), "[smarthost.test]:587".into())
        );
        assert_eq!(
            t("a@example.test"),
            ("smtp".into(), "[127.0.0.2]:2526".into())
        );
        assert_eq!(
            t("a@deep.sub.test"),
            ("relay".into(), "deep.sub.test".into())
        );
        assert_eq!(
            t("a@bad.test"),
            ("error".into(), "no such domain here".into())
        );
        // A transport alone resets the next hop to the domain (Postfix's
        // transport_lookup), even local's `$myhostname`.
        assert_eq!(
            t("openstack@ywnds.com"),
            ("local".into(), "ywnds.com".into())
        );
        assert_eq!(
            r.route("", "a@example.test").destination,
            "[127.0.0.2]:2526"
        );
    }

    #[test]
    fn a_recipient_starting_with_a_hyphen_bounces_unless_allow_min_user() {
        let route = |extra: &str| {
            let text = format!("mydestination = ywnds.com\n{extra}");
            let cfg = Config::from_text(Path::new("/etc/postfix"), &text).unwrap();
            let r = Router::new(&cfg).unwrap().route("", "-oQ/tmp/x@163.com");
            (r.transport, r.nexthop)
        };
        assert_eq!(
            route(""),
            ("error".into(), "5.1.3 bad address syntax".into())
        );
        assert_eq!(route("allow_min_user = yes\n").0, "smtp");
    }
}
