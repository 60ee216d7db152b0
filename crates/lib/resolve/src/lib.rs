//! Postfix's trivial-rewrite as a library, shared by smtpd (relay control
//! and recipient validation), cleanup and qmgr (routing): which address
//! class a recipient's domain is in, and the transport and next hop that
//! class and `transport_maps` give it.
//!
//! Classes, first match wins, as Postfix's resolve.c:
//! - **local**: no domain, or `mydestination` → `$local_transport`;
//! - **virtual alias**: `virtual_alias_domains` → `error:5.1.1 User unknown
//!   in virtual alias table` (cleanup rewrote every address the alias table
//!   knows, so what is still here is unknown); `transport_maps` do not
//!   change it;
//! - **virtual mailbox**: `virtual_mailbox_domains` → `$virtual_transport`;
//! - **relay**: `relay_domains` → `$relay_transport`;
//! - **default**: the rest → `$default_transport`, through the sender's
//!   `sender_dependent_relayhost_maps` entry or `$relayhost`.
//!
//! A transport spec's own next hop (`local:$myhostname`,
//! `lmtp:unix:private/dovecot-lmtp`) overrides the recipient's domain, and
//! `transport_maps` override both (the address, its domain, `.parent`
//! domains, `*`); a table entry with a transport and no next hop resets it to
//! the recipient's domain. Last, `relocated_maps` turn a moved user into
//! `error:5.1.6 User has moved to ...`, whatever the class. A table that
//! cannot be asked makes the whole resolution fail ([`Failure`]): smtpd
//! answers 4xx and qmgr defers, never another route.

pub mod addrmap;
pub mod find;

use pfx_address::{DomainList, Resolved};
use pfx_config::{BuildError, Config};
use pfx_maps::{matchlist::MatchList, passwd::Passwd, MapList};

pub use find::{find, split_extension, Found, Strategy};

/// A recipient domain's address class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Local,
    Alias,
    Virtual,
    Relay,
    Default,
}

impl Class {
    /// Classes whose mail this host takes for final delivery.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Local | Self::Alias | Self::Virtual)
    }
}

/// Where one recipient goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub class: Class,
    pub transport: String,
    /// A domain or `[host]:port` for smtp, a socket for lmtp, the reason
    /// for error and retry.
    pub nexthop: String,
    /// The address after the relay tricks were undone.
    pub address: Resolved,
}

/// A table the resolution needed could not be asked: `"relocated_maps"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(pub &'static str);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} lookup failure", self.0)
    }
}

impl std::error::Error for Failure {}

/// `transport:nexthop` as in master.cf-style transport specs.
pub fn split_spec(spec: &str) -> (String, String) {
    match spec.split_once(':') {
        Some((t, n)) => (t.to_owned(), n.to_owned()),
        None => (spec.to_owned(), String::new()),
    }
}

/// `relay_domains` as Postfix matches it (the list is in
/// `parent_domain_matches_subdomains`): `example.com` is the domain and
/// every domain below it; in that style `.example.com` matches nothing.
#[derive(Debug)]
struct ParentDomains(Vec<String>);

impl ParentDomains {
    fn new(items: &[String]) -> Self {
        Self(
            items
                .iter()
                .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
                .filter(|d| !d.is_empty())
                .collect(),
        )
    }

    fn matches(&self, domain: &str) -> bool {
        let d = domain.trim_end_matches('.').to_ascii_lowercase();
        self.0.iter().any(|item| {
            d.strip_suffix(item.as_str())
                .is_some_and(|below| below.is_empty() || below.ends_with('.'))
        })
    }
}

/// The resolver, built once per configuration.
#[derive(Debug)]
pub struct Resolver {
    mydestination: DomainList,
    myorigin: String,
    relay_domains: ParentDomains,
    alias_domains: MatchList,
    mailbox_domains: MatchList,
    local: (String, String),
    virtual_: (String, String),
    relay: (String, String),
    default: (String, String),
    relayhost: String,
    /// `sender_dependent_relayhost_maps`, asked as other address tables
    /// are; the null sender by `empty_address_relayhost_maps_lookup_key`.
    sender_relayhost: MapList,
    null_sender_key: String,
    transport_maps: MapList,
    relocated: MapList,
    delimiters: String,
    show_table: bool,
}

impl Resolver {
    pub fn new(cfg: &Config) -> Result<Self, BuildError> {
        let passwd = Passwd::new(None);
        let maps = |name: &str| -> Result<MapList, BuildError> {
            Ok(MapList::parse(&cfg.list(name)?, &passwd)?)
        };
        Ok(Self {
            mydestination: DomainList::new(&cfg.list("mydestination")?),
            myorigin: cfg.get("myorigin")?.to_ascii_lowercase(),
            relay_domains: ParentDomains::new(&cfg.list("relay_domains")?),
            alias_domains: MatchList::parse(&cfg.list("virtual_alias_domains")?, &passwd)?,
            mailbox_domains: MatchList::parse(&cfg.list("virtual_mailbox_domains")?, &passwd)?,
            local: split_spec(&cfg.get("local_transport")?),
            virtual_: split_spec(&cfg.get("virtual_transport")?),
            relay: split_spec(&cfg.get("relay_transport")?),
            default: split_spec(&cfg.get("default_transport")?),
            relayhost: cfg.get("relayhost")?,
            sender_relayhost: maps("sender_dependent_relayhost_maps")?,
            null_sender_key: cfg.get("empty_address_relayhost_maps_lookup_key")?,
            transport_maps: maps("transport_maps")?,
            relocated: maps("relocated_maps")?,
            delimiters: cfg.get("recipient_delimiter")?,
            show_table: cfg.bool("show_user_unknown_table_name")?,
        })
    }

    /// Whether `domain` is in `mydestination` (the local class).
    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.mydestination.contains(domain)
    }

    /// Whether a table lookup may try a bare local part for `domain`:
    /// `$myorigin` or a local domain (Postfix's mail_addr_find).
    pub fn local_part_applies(&self, domain: &str) -> bool {
        domain.eq_ignore_ascii_case(&self.myorigin) || self.is_local_domain(domain)
    }

    /// `recipient_delimiter`.
    pub fn delimiters(&self) -> &str {
        &self.delimiters
    }

    /// The address with the relay tricks undone (no table is asked).
    pub fn resolve_address(&self, addr: &str) -> Resolved {
        pfx_address::resolve(addr, &|d| self.is_local_domain(d))
    }

    /// The class of a resolved address's domain.
    pub fn class(&self, r: &Resolved) -> Result<Class, Failure> {
        if r.is_local {
            return Ok(Class::Local);
        }
        if self
            .alias_domains
            .matches(&r.domain)
            .map_err(|_| Failure("virtual_alias_domains"))?
        {
            return Ok(Class::Alias);
        }
        if self
            .mailbox_domains
            .matches(&r.domain)
            .map_err(|_| Failure("virtual_mailbox_domains"))?
        {
            return Ok(Class::Virtual);
        }
        if self.relay_domains.matches(&r.domain) {
            return Ok(Class::Relay);
        }
        Ok(Class::Default)
    }

    /// Looks `address` up in `maps` in Postfix's order
    /// ([`find::find`]), with this configuration's delimiters and domains.
    pub fn find(
        &self,
        maps: &MapList,
        address: &str,
        strategy: Strategy,
    ) -> Result<Option<Found>, pfx_maps::Error> {
        find::find(maps, address, &self.delimiters, strategy, &|d| {
            self.local_part_applies(d)
        })
    }

    /// The transport table's entry for an address, as Postfix's
    /// transport_lookup asks: the whole address (every table), then from
    /// the tables with fixed keys only the address without its extension,
    /// the domain, its `.parent` domains, and last `*`.
    fn table_entry(&self, address: &str, domain: &str) -> Result<Option<String>, Failure> {
        if self.transport_maps.is_empty() {
            return Ok(None);
        }
        let failed = |k: &str, e: pfx_maps::Error| {
            tracing::warn!("transport_maps lookup of {k}: {e}");
            Failure("transport_maps")
        };
        if let Some(v) = self
            .transport_maps
            .lookup(address)
            .map_err(|e| failed(address, e))?
        {
            return Ok(Some(v));
        }
        let mut keys = Vec::new();
        if let Some((local, d)) = address.rsplit_once('@') {
            if let (bare, Some(_)) = split_extension(local, &self.delimiters) {
                keys.push(format!("{bare}@{d}"));
            }
        }
        keys.push(domain.to_owned());
        let mut rest = domain;
        while let Some((_, parent)) = rest.split_once('.') {
            keys.push(format!(".{parent}"));
            rest = parent;
        }
        keys.push("*".into());
        for k in keys.iter().filter(|k| !k.is_empty() && k.as_str() != ".") {
            if let Some(v) = find::fixed(&self.transport_maps, k).map_err(|e| failed(k, e))? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// The relay host for mail from `sender`: its
    /// `sender_dependent_relayhost_maps` entry (the null sender by
    /// `empty_address_relayhost_maps_lookup_key`; `DUNNO` or an empty
    /// value means none), else `$relayhost`; `None`: neither.
    fn relayhost_for(&self, sender: &str) -> Result<Option<String>, Failure> {
        if !self.sender_relayhost.is_empty() {
            let key = if sender.is_empty() {
                self.null_sender_key.clone()
            } else {
                sender.to_ascii_lowercase()
            };
            match self.find(&self.sender_relayhost, &key, Strategy::DEFAULT) {
                Ok(Some(f)) if f.value.is_empty() => {
                    tracing::warn!(
                        "sender_dependent_relayhost_maps: ignoring null lookup result for {key}"
                    );
                }
                Ok(Some(f)) if f.value.eq_ignore_ascii_case("DUNNO") => {}
                Ok(Some(f)) => return Ok(Some(f.value)),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!("sender_dependent_relayhost_maps lookup of {key}: {e}");
                    return Err(Failure("sender_dependent_relayhost_maps"));
                }
            }
        }
        Ok(Some(self.relayhost.clone()).filter(|r| !r.is_empty()))
    }

    /// Where mail from `sender` to `recipient` goes.
    pub fn resolve(&self, sender: &str, recipient: &str) -> Result<Resolution, Failure> {
        let r = self.resolve_address(recipient);
        let class = self.class(&r)?;
        let domain = r.domain.clone();
        let (mut transport, mut nexthop) = match class {
            Class::Local => (self.local.0.clone(), domain.clone()),
            Class::Alias => (
                "error".to_owned(),
                format!(
                    "5.1.1 User unknown{}",
                    if self.show_table {
                        " in virtual alias table"
                    } else {
                        ""
                    }
                ),
            ),
            Class::Virtual => (self.virtual_.0.clone(), domain.clone()),
            // Off-host: the sender's relay host, else `$relayhost`, else
            // the recipient's domain.
            Class::Relay | Class::Default => {
                let t = if class == Class::Relay {
                    &self.relay.0
                } else {
                    &self.default.0
                };
                let n = self
                    .relayhost_for(sender)?
                    .unwrap_or_else(|| domain.clone());
                (t.clone(), n)
            }
        };
        // A transport spec's own next hop (`local:$myhostname`) wins.
        let own = match class {
            Class::Local => &self.local.1,
            Class::Virtual => &self.virtual_.1,
            Class::Relay => &self.relay.1,
            Class::Default => &self.default.1,
            Class::Alias => "",
        };
        if !own.is_empty() {
            nexthop = own.to_owned();
        }
        let address = r.address().to_ascii_lowercase();
        if class != Class::Alias {
            if let Some(entry) = self.table_entry(&address, &domain)? {
                // Postfix's update_entry: `:nexthop` keeps the transport;
                // a transport alone resets the next hop to the domain.
                let (t, n) = split_spec(&entry);
                if !t.is_empty() {
                    nexthop = if !n.is_empty() {
                        n
                    } else if t == "error" || t == "retry" {
                        "Address is undeliverable".to_owned()
                    } else {
                        domain.clone()
                    };
                    transport = t;
                } else if !n.is_empty() {
                    nexthop = n;
                }
            }
        }
        if !self.relocated.is_empty() {
            match self.find(&self.relocated, &address, Strategy::DEFAULT) {
                Ok(Some(f)) => {
                    transport = "error".to_owned();
                    nexthop = format!("5.1.6 User has moved to {}", f.value);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!("relocated_maps lookup of {address}: {e}");
                    return Err(Failure("relocated_maps"));
                }
            }
        }
        Ok(Resolution {
            class,
            transport,
            nexthop,
            address: r,
        })
    }

    /// The local transport's name (`local`).
    pub fn local_transport(&self) -> &str {
        &self.local.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn resolver(extra: &str) -> Resolver {
        let text = format!(
            "myhostname = mail.ywnds.com\nmydomain = ywnds.com\n\
             mydestination = $myhostname, $mydomain\n{extra}"
        );
        Resolver::new(&Config::from_text(Path::new("/etc/postfix"), &text).unwrap()).unwrap()
    }

    fn route(r: &Resolver, rcpt: &str) -> (Class, String, String) {
        let x = r.resolve("", rcpt).unwrap();
        (x.class, x.transport, x.nexthop)
    }

    #[test]
    fn every_class_gets_its_transport() {
        let r = resolver(
            "virtual_alias_domains = alias.example\n\
             virtual_mailbox_domains = inline:{mbox.example=x}\n\
             virtual_transport = lmtp:unix:private/dovecot-lmtp\n\
             relay_domains = relay.example\n",
        );
        let s = |s: &str| s.to_owned();
        assert_eq!(
            route(&r, "u@YWNDS.com"),
            (Class::Local, s("local"), s("mail.ywnds.com"))
        );
        assert_eq!(
            route(&r, "u@alias.example"),
            (
                Class::Alias,
                s("error"),
                s("5.1.1 User unknown in virtual alias table")
            )
        );
        assert_eq!(
            route(&r, "u@mbox.example"),
            (Class::Virtual, s("lmtp"), s("unix:private/dovecot-lmtp"))
        );
        assert_eq!(
            route(&r, "u@relay.example"),
            (Class::Relay, s("relay"), s("relay.example"))
        );
        assert_eq!(
            route(&r, "u@else.example"),
            (Class::Default, s("smtp"), s("else.example"))
        );
    }

    #[test]
    fn relay_domains_take_their_subdomains_as_postfix_does() {
        let r = resolver("relay_domains = relay.example, .dot.example\n");
        for (rcpt, class) in [
            ("u@relay.example", Class::Relay),
            ("u@mx.relay.example", Class::Relay),
            ("u@xrelay.example", Class::Default),
            ("u@dot.example", Class::Default),
            ("u@a.dot.example", Class::Default),
        ] {
            assert_eq!(route(&r, rcpt).0, class, "{rcpt}");
        }
    }

    #[test]
    fn relayhost_carries_relay_and_default_mail_but_not_final_mail() {
        let r = resolver(
            "relay_domains = relay.example\nrelayhost = [10.0.0.1]\n\
             virtual_mailbox_domains = mbox.example\n\
             sender_dependent_relayhost_maps = inline:{<>=[10.0.0.9], @isp.example=DUNNO, @corp.example=[10.0.0.2]}\n",
        );
        let next = |from: &str, to: &str| r.resolve(from, to).unwrap().nexthop;
        assert_eq!(next("a@b.example", "u@relay.example"), "[10.0.0.1]");
        assert_eq!(next("a@b.example", "u@else.example"), "[10.0.0.1]");
        assert_eq!(next("a@corp.example", "u@relay.example"), "[10.0.0.2]");
        assert_eq!(next("a+x@corp.example", "u@else.example"), "[10.0.0.2]");
        assert_eq!(next("a@isp.example", "u@else.example"), "[10.0.0.1]");
        assert_eq!(next("", "u@else.example"), "[10.0.0.9]");
        assert_eq!(next("a@corp.example", "u@mbox.example"), "mbox.example");
        assert_eq!(next("a@corp.example", "u@ywnds.com"), "mail.ywnds.com");
    }

    #[test]
    fn a_transport_table_entry_resets_the_next_hop_as_postfix_does() {
        let r = resolver(
            "relayhost = [10.0.0.1]\nrecipient_delimiter = +\n\
             transport_maps = inline:{same.example=smtp, hop.example=:[10.0.0.5], \
             err.example=error, a@ext.example=local, .sub.example=relay}\n",
        );
        let s = |s: &str| s.to_owned();
        // The same transport without a next hop still drops the relayhost.
        assert_eq!(
            route(&r, "u@same.example"),
            (Class::Default, s("smtp"), s("same.example"))
        );
        assert_eq!(
            route(&r, "u@hop.example"),
            (Class::Default, s("smtp"), s("[10.0.0.5]"))
        );
        assert_eq!(
            route(&r, "u@err.example"),
            (Class::Default, s("error"), s("Address is undeliverable"))
        );
        assert_eq!(route(&r, "a+x@ext.example").1, "local");
        assert_eq!(route(&r, "u@a.sub.example").1, "relay");
        assert_eq!(route(&r, "u@sub.example").1, "smtp");
    }

    #[test]
    fn virtual_transport_without_next_hop_goes_to_the_domain() {
        let r = resolver("virtual_mailbox_domains = mbox.example\n");
        assert_eq!(
            route(&r, "u@mbox.example"),
            (Class::Virtual, "virtual".into(), "mbox.example".into())
        );
    }

    #[test]
    fn transport_maps_do_not_rescue_unknown_alias_domain_users() {
        let r = resolver(
            "virtual_alias_domains = alias.example\n\
             transport_maps = inline:{alias.example=smtp:[10.0.0.1]}\n",
        );
        assert_eq!(route(&r, "u@alias.example").1, "error");
    }

    #[test]
    fn relocated_users_bounce_whatever_the_class() {
        let r = resolver(
            "relocated_maps = inline:{gone@ywnds.com=new@else.example, @old.example=www.example}\n",
        );
        assert_eq!(
            route(&r, "gone@ywnds.com").2,
            "5.1.6 User has moved to new@else.example"
        );
        assert_eq!(
            route(&r, "any@old.example"),
            (
                Class::Default,
                "error".into(),
                "5.1.6 User has moved to www.example".into()
            )
        );
        assert_eq!(route(&r, "here@ywnds.com").1, "local");
    }

    #[test]
    fn a_domain_table_that_cannot_answer_fails_the_resolution() {
        let r = resolver("virtual_mailbox_domains = regexp:/nonexistent/re\n");
        assert_eq!(
            r.resolve("", "u@x.example"),
            Err(Failure("virtual_mailbox_domains"))
        );
        // Local mail does not need it.
        assert!(r.resolve("", "u@ywnds.com").is_ok());
        let r = resolver("relocated_maps = regexp:/nonexistent/re\n");
        assert_eq!(r.resolve("", "u@ywnds.com"), Err(Failure("relocated_maps")));
    }
}
