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
use pfx_maps::{matchlist::MatchList, passwd::Passwd, Format, MapList};

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

/// The resolver, built once per configuration.
#[derive(Debug)]
pub struct Resolver {
    mydestination: DomainList,
    myorigin: String,
    relay_domains: DomainList,
    alias_domains: MatchList,
    mailbox_domains: MatchList,
    local: (String, String),
    virtual_: (String, String),
    relay: (String, String),
    default: (String, String),
    relayhost: String,
    /// `sender_dependent_relayhost_maps`: the sender, then `@domain`.
    sender_relayhost: MapList,
    transport_maps: MapList,
    relocated: MapList,
    delimiters: String,
    show_table: bool,
}

impl Resolver {
    pub fn new(cfg: &Config) -> Result<Self, BuildError> {
        let passwd = Passwd::new(None);
        let maps = |name: &str| -> Result<MapList, BuildError> {
            Ok(MapList::parse_as(
                &cfg.list(name)?,
                &passwd,
                Format::Postmap,
            )?)
        };
        Ok(Self {
            mydestination: DomainList::new(&cfg.list("mydestination")?),
            myorigin: cfg.get("myorigin")?.to_ascii_lowercase(),
            relay_domains: DomainList::new(&cfg.list("relay_domains")?),
            alias_domains: MatchList::parse(&cfg.list("virtual_alias_domains")?, &passwd)?,
            mailbox_domains: MatchList::parse(&cfg.list("virtual_mailbox_domains")?, &passwd)?,
            local: split_spec(&cfg.get("local_transport")?),
            virtual_: split_spec(&cfg.get("virtual_transport")?),
            relay: split_spec(&cfg.get("relay_transport")?),
            default: split_spec(&cfg.get("default_transport")?),
            relayhost: cfg.get("relayhost")?,
            sender_relayhost: maps("sender_dependent_relayhost_maps")?,
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
        if self.relay_domains.contains(&r.domain) {
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

    /// The transport table's entry for an address, most specific key first.
    fn table_entry(&self, address: &str, domain: &str) -> Result<Option<String>, Failure> {
        if self.transport_maps.is_empty() {
            return Ok(None);
        }
        let mut keys = vec![address.to_owned(), domain.to_owned()];
        let mut rest = domain;
        while let Some((_, parent)) = rest.split_once('.') {
            keys.push(format!(".{parent}"));
            rest = parent;
        }
        keys.push("*".into());
        for k in &keys {
            match self.transport_maps.lookup(k) {
                Ok(Some(v)) => return Ok(Some(v)),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!("transport_maps lookup of {k}: {e}");
                    return Err(Failure("transport_maps"));
                }
            }
        }
        Ok(None)
    }

    /// The relay host for mail from `sender`: its table entry (`DUNNO`
    /// defers to the next), else `$relayhost`.
    fn relayhost_for(&self, sender: &str) -> Result<String, Failure> {
        if !self.sender_relayhost.is_empty() && !sender.is_empty() {
            let sender = sender.to_ascii_lowercase();
            let domain = sender.rsplit_once('@').map(|(_, d)| format!("@{d}"));
            for key in std::iter::once(sender.clone()).chain(domain) {
                match self.sender_relayhost.lookup(&key) {
                    Ok(Some(v)) if v.eq_ignore_ascii_case("DUNNO") => break,
                    Ok(Some(v)) => return Ok(v),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!("sender_dependent_relayhost_maps lookup of {key}: {e}");
                        return Err(Failure("sender_dependent_relayhost_maps"));
                    }
                }
            }
        }
        Ok(self.relayhost.clone())
    }

    /// Where mail from `sender` to `recipient` goes.
    pub fn resolve(&self, sender: &str, recipient: &str) -> Result<Resolution, Failure> {
        let r = self.resolve_address(recipient);
        let class = self.class(&r)?;
        let domain = r.domain.clone();
        let or_domain = |(t, n): (String, String)| {
            let n = if n.is_empty() { domain.clone() } else { n };
            (t, n)
        };
        let (mut transport, mut nexthop) = match class {
            Class::Local => or_domain(self.local.clone()),
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
            Class::Virtual => or_domain(self.virtual_.clone()),
            Class::Relay => or_domain(self.relay.clone()),
            Class::Default => {
                let (t, n) = self.default.clone();
                let relayhost = self.relayhost_for(sender)?;
                let n = match (n.is_empty(), relayhost.is_empty()) {
                    (false, _) => n,
                    (true, false) => relayhost,
                    (true, true) => domain.clone(),
                };
                (t, n)
            }
        };
        let address = r.address().to_ascii_lowercase();
        if class != Class::Alias {
            if let Some(entry) = self.table_entry(&address, &domain)? {
                let (t, n) = split_spec(&entry);
                if !t.is_empty() {
                    if t != transport && n.is_empty() {
                        // Another transport without a next hop: the
                        // recipient's domain (local's own for local).
                        nexthop = if t == self.local.0 && !self.local.1.is_empty() {
                            self.local.1.clone()
                        } else {
                            domain.clone()
                        };
                    }
                    transport = t;
                }
                if !n.is_empty() {
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
