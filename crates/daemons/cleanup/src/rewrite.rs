//! Address rewriting that cleanup does before the queue file is written,
//! in Postfix's order:
//!
//! - the envelope sender: `sender_canonical_maps`, then `canonical_maps`,
//!   then masquerading (each as its `*_classes` say); `MAILER-DAEMON` at
//!   `$myorigin` becomes the null sender;
//! - each envelope recipient: `recipient_canonical_maps`, `canonical_maps`,
//!   masquerading, then virtual alias expansion (`virtual_alias_maps`);
//! - automatic copies: `sender_bcc_maps` (for the sender),
//!   `recipient_bcc_maps` (for each recipient) and `always_bcc`, rewritten
//!   as recipients;
//! - addresses in the headers of local mail (sender or recipient headers,
//!   `pfx_address::header::Role`): `@$myorigin` for bare names, canonical
//!   maps and masquerading of the header classes.
//!
//! Canonical maps are one-to-one (Postfix's cleanup_map11): a result is
//! looked up again until it maps to itself or nothing, at most 10 times.
//! Virtual aliases are one-to-many (cleanup_map1n): a result is a list of
//! addresses, each expanded again; an address that expands into itself is
//! kept once. Both look addresses up in Postfix's order
//! (`pfx_resolve::find`), carry an extension the matching key did not have
//! over to the result when `propagate_unmatched_extensions` names their
//! class, and take a result `@domain` as the same user at another domain.
//!
//! A table that cannot answer refuses the message ("queue file write
//! error"), and so does an alias expansion past
//! `virtual_alias_expansion_limit`, `virtual_alias_recursion_limit` or
//! `virtual_alias_address_length_limit` ("4.6.0 Alias expansion error"):
//! the client tries again later.

use pfx_address::header::Role;
use pfx_config::{BuildError, Config};
use pfx_maps::{matchlist::MatchList, passwd::Passwd, MapList};
use pfx_resolve::addrmap::{AddrMap, Domains};

/// Why the message is not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Too many addresses, too deep, too long: the text after `warning: ID: `.
    Unreasonable(String),
    /// A table could not be asked.
    Lookup(String),
}

/// Where a rewriting step applies (the `*_classes` parameters).
#[derive(Debug, Clone, Copy, Default)]
struct Classes {
    envelope_sender: bool,
    envelope_recipient: bool,
    header_sender: bool,
    header_recipient: bool,
}

impl Classes {
    fn parse(cfg: &Config, name: &str) -> Result<Self, BuildError> {
        let mut c = Self::default();
        for item in cfg.list(name)? {
            match item.to_ascii_lowercase().as_str() {
                "envelope_sender" => c.envelope_sender = true,
                "envelope_recipient" => c.envelope_recipient = true,
                "header_sender" => c.header_sender = true,
                "header_recipient" => c.header_recipient = true,
                other => return Err(format!("{name}: unknown address class \"{other}\"").into()),
            }
        }
        Ok(c)
    }

    fn header(self, role: Role) -> bool {
        match role {
            Role::Sender => self.header_sender,
            Role::Recipient => self.header_recipient,
        }
    }
}

fn problem(map: &AddrMap, addr: &str, e: &pfx_maps::Error) -> Refusal {
    tracing::warn!("{} lookup of {addr}: {e}", map.title);
    Refusal::Lookup(format!("{} map lookup problem for {addr}", map.title))
}

/// Postfix's cleanup_map11 and masquerading give up after this many steps.
const MAX_RECURSION: usize = 10;

pub(crate) struct Rewriter {
    domains: Domains,
    sender_canonical: (AddrMap, Classes),
    recipient_canonical: (AddrMap, Classes),
    canonical: (AddrMap, Classes),
    masquerade: Vec<String>,
    masquerade_classes: Classes,
    masquerade_exceptions: MatchList,
    virtual_alias: AddrMap,
    expansion_limit: usize,
    recursion_limit: usize,
    length_limit: usize,
    sender_bcc: MapList,
    recipient_bcc: MapList,
    always_bcc: String,
}

impl Rewriter {
    pub(crate) fn new(cfg: &Config) -> Result<Self, BuildError> {
        let count = |name: &str| -> Result<usize, BuildError> {
            Ok(usize::try_from(cfg.int(name)?).unwrap_or(0))
        };
        let canonical = |name: &'static str, classes: &str| -> Result<_, BuildError> {
            Ok((
                AddrMap::new(cfg, name, "canonical")?,
                Classes::parse(cfg, classes)?,
            ))
        };
        let passwd = Passwd::new(None);
        let maps = |name: &str| -> Result<MapList, BuildError> {
            Ok(MapList::parse(&cfg.list(name)?, &passwd)?)
        };
        Ok(Self {
            domains: Domains::new(cfg)?,
            sender_canonical: canonical("sender_canonical_maps", "sender_canonical_classes")?,
            recipient_canonical: canonical(
                "recipient_canonical_maps",
                "recipient_canonical_classes",
            )?,
            canonical: canonical("canonical_maps", "canonical_classes")?,
            masquerade: cfg.list("masquerade_domains")?,
            masquerade_classes: Classes::parse(cfg, "masquerade_classes")?,
            masquerade_exceptions: MatchList::parse(&cfg.list("masquerade_exceptions")?, &passwd)?,
            virtual_alias: AddrMap::new(cfg, "virtual_alias_maps", "virtual")?,
            expansion_limit: count("virtual_alias_expansion_limit")?,
            recursion_limit: count("virtual_alias_recursion_limit")?,
            length_limit: count("virtual_alias_address_length_limit")?,
            sender_bcc: maps("sender_bcc_maps")?,
            recipient_bcc: maps("recipient_bcc_maps")?,
            always_bcc: cfg.get("always_bcc")?,
        })
    }

    /// `user` becomes `user@$myorigin` (Postfix's append_at_myorigin).
    pub(crate) fn qualify(&self, addr: &str) -> String {
        pfx_address::qualify(addr, self.domains.myorigin())
    }

    /// The envelope sender as it goes into the queue file; `map`: with
    /// the canonical maps and masquerading, else only qualified.
    pub(crate) fn sender(&self, addr: &str, map: bool) -> Result<String, Refusal> {
        let mut a = self.qualify(addr);
        if a.eq_ignore_ascii_case(&format!("MAILER-DAEMON@{}", self.domains.myorigin())) {
            a.clear();
        }
        if a.is_empty() || !map {
            return Ok(a);
        }
        for (map, classes) in [&self.sender_canonical, &self.canonical] {
            if classes.envelope_sender {
                a = self.map11(map, a)?;
            }
        }
        if self.masquerade_classes.envelope_sender {
            a = self.masquerade(a)?;
        }
        Ok(a)
    }

    /// An envelope recipient before alias expansion (`map` as for
    /// [`Self::sender`]).
    pub(crate) fn recipient(&self, addr: &str, map: bool) -> Result<String, Refusal> {
        let mut a = self.qualify(addr);
        if !map {
            return Ok(a);
        }
        for (map, classes) in [&self.recipient_canonical, &self.canonical] {
            if classes.envelope_recipient {
                a = self.map11(map, a)?;
            }
        }
        if self.masquerade_classes.envelope_recipient {
            a = self.masquerade(a)?;
        }
        Ok(a)
    }

    /// An address in a header of local mail.
    pub(crate) fn header_address(
        &self,
        addr: &str,
        role: Role,
        map: bool,
    ) -> Result<String, Refusal> {
        let mut a = self.qualify(addr);
        if !map {
            return Ok(a);
        }
        let (own, classes) = match role {
            Role::Sender => &self.sender_canonical,
            Role::Recipient => &self.recipient_canonical,
        };
        if classes.header(role) {
            a = self.map11(own, a)?;
        }
        if self.canonical.1.header(role) {
            a = self.map11(&self.canonical.0, a)?;
        }
        if self.masquerade_classes.header(role) {
            a = self.masquerade(a)?;
        }
        Ok(a)
    }

    /// One-to-one mapping, repeated until the address maps to itself.
    fn map11(&self, map: &AddrMap, mut addr: String) -> Result<String, Refusal> {
        for _ in 0..MAX_RECURSION {
            match map.map(&self.domains, &addr) {
                Ok(Some(list)) => {
                    if list.len() > 1 {
                        tracing::warn!("multi-valued {} entry for {addr}", map.title);
                    }
                    let new = list.into_iter().next().unwrap_or_default();
                    let same = new.eq_ignore_ascii_case(&addr);
                    addr = new;
                    if same {
                        return Ok(addr);
                    }
                }
                Ok(None) => return Ok(addr),
                Err(e) => return Err(problem(map, &addr, &e)),
            }
        }
        tracing::warn!(
            "unreasonable {} map nesting for {addr} -- message not accepted, try again later",
            map.title
        );
        Ok(addr)
    }

    /// `masquerade_domains`: the first listed parent domain of the
    /// address's domain replaces it (`!domain` keeps it as it is); users in
    /// `masquerade_exceptions` keep theirs.
    fn masquerade(&self, addr: String) -> Result<String, Refusal> {
        if self.masquerade.is_empty() {
            return Ok(addr);
        }
        let Some((user, domain)) = addr.rsplit_once('@') else {
            return Ok(addr);
        };
        if !self.masquerade_exceptions.is_empty() {
            match self.masquerade_exceptions.matches(user) {
                Ok(true) => return Ok(addr),
                Ok(false) => {}
                Err(_) => {
                    return Err(Refusal::Lookup(
                        "masquerade_exceptions map lookup problem".into(),
                    ))
                }
            }
        }
        let domain = domain.to_ascii_lowercase();
        for item in &self.masquerade {
            let negations = item.len() - item.trim_start_matches('!').len();
            let masq = item[negations..].to_ascii_lowercase();
            if masq.is_empty() {
                continue;
            }
            if masq == domain {
                break;
            }
            if domain.len() > masq.len() && domain.ends_with(&format!(".{masq}")) {
                if negations % 2 == 0 {
                    return Ok(format!("{user}@{masq}"));
                }
                break;
            }
        }
        Ok(addr)
    }

    /// The addresses `addr` expands into by `virtual_alias_maps` (itself
    /// when the table does not know it).
    pub(crate) fn expand(&self, addr: &str) -> Result<Vec<String>, Refusal> {
        let mut out = vec![addr.to_owned()];
        let map = &self.virtual_alias;
        if map.is_empty() {
            return Ok(out);
        }
        let title = map.title;
        // Addresses that expanded into themselves: kept, not expanded again.
        let mut fixed: Vec<String> = Vec::new();
        let mut i = 0;
        while i < out.len() {
            if out.len() > self.expansion_limit {
                return Err(Refusal::Unreasonable(format!(
                    "unreasonable {title} map expansion size for {addr}"
                )));
            }
            let mut depth = 0;
            loop {
                if fixed.iter().any(|f| f.eq_ignore_ascii_case(&out[i])) {
                    break;
                }
                if depth >= self.recursion_limit {
                    return Err(Refusal::Unreasonable(format!(
                        "unreasonable {title} map nesting for {addr}"
                    )));
                }
                let results = match map.map(&self.domains, &out[i]) {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!("{title} lookup of {}: {e}", out[i]);
                        return Err(Refusal::Lookup(format!(
                            "{title} map lookup problem for {addr}"
                        )));
                    }
                };
                let lhs = std::mem::take(&mut out[i]);
                for (n, r) in results.into_iter().enumerate() {
                    if r.len() > self.length_limit {
                        let shown: String = r.chars().take(300).collect();
                        return Err(Refusal::Unreasonable(format!(
                            "unreasonable {title} result {shown}..."
                        )));
                    }
                    if r.eq_ignore_ascii_case(&lhs) {
                        fixed.push(lhs.clone());
                    }
                    if n == 0 {
                        out[i] = r;
                    } else {
                        out.push(r);
                    }
                }
                depth += 1;
            }
            i += 1;
        }
        Ok(out)
    }

    /// The copy `sender_bcc_maps` asks for mail from `sender`.
    pub(crate) fn sender_bcc(&self, sender: &str) -> Result<Option<String>, Refusal> {
        self.bcc(&self.sender_bcc, "sender_bcc_maps", sender)
    }

    /// The copy `recipient_bcc_maps` asks for mail to `recipient`.
    pub(crate) fn recipient_bcc(&self, recipient: &str) -> Result<Option<String>, Refusal> {
        self.bcc(&self.recipient_bcc, "recipient_bcc_maps", recipient)
    }

    /// `always_bcc`, when set.
    pub(crate) fn always_bcc(&self) -> Option<&str> {
        Some(self.always_bcc.as_str()).filter(|a| !a.is_empty())
    }

    fn bcc(&self, maps: &MapList, title: &str, addr: &str) -> Result<Option<String>, Refusal> {
        if maps.is_empty() || addr.is_empty() {
            return Ok(None);
        }
        match self.domains.find(maps, addr) {
            Ok(found) => Ok(found.map(|f| f.value)),
            Err(e) => {
                tracing::warn!("{title} lookup of {addr}: {e}");
                Err(Refusal::Lookup(format!("{title} map lookup problem")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn rewriter(extra: &str) -> Rewriter {
        let text = format!(
            "myhostname = mail.ywnds.com\nmydomain = ywnds.com\nmyorigin = ywnds.com\n\
             mydestination = $myhostname, $mydomain\n{extra}"
        );
        Rewriter::new(&Config::from_text(Path::new("/etc/postfix"), &text).unwrap()).unwrap()
    }

    fn alias(table: &str, extra: &str) -> Rewriter {
        rewriter(&format!("virtual_alias_maps = inline:{{{table}}}\n{extra}"))
    }

    fn expand(v: &Rewriter, a: &str) -> Vec<String> {
        v.expand(a).unwrap()
    }

    #[test]
    fn expansion_is_recursive_and_stops_at_unknown_addresses() {
        let v = alias(
            "{info@example.com = sales@example.com, bob@example.net}, sales@example.com=alice@example.net",
            "",
        );
        assert_eq!(
            expand(&v, "info@example.com"),
            ["alice@example.net", "bob@example.net"]
        );
        assert_eq!(expand(&v, "other@example.com"), ["other@example.com"]);
    }

    #[test]
    fn catch_all_domain_rewrite_and_extensions() {
        let v = alias(
            "a@example.com=x@example.net, @example.com=catch@example.net, @old.example=@new.example",
            "recipient_delimiter = +\n",
        );
        assert_eq!(expand(&v, "a+tag@example.com"), ["x+tag@example.net"]);
        assert_eq!(expand(&v, "zz@example.com"), ["catch@example.net"]);
        assert_eq!(expand(&v, "u+t@old.example"), ["u+t@new.example"]);
        let v = alias(
            "a@example.com=x@example.net",
            "recipient_delimiter = +\npropagate_unmatched_extensions = canonical\n",
        );
        assert_eq!(expand(&v, "a+tag@example.com"), ["x@example.net"]);
    }

    #[test]
    fn self_reference_keeps_the_address_once() {
        let v = alias("{u@example.com = u@example.com, copy@example.net}", "");
        assert_eq!(
            expand(&v, "u@example.com"),
            ["u@example.com", "copy@example.net"]
        );
        // Bare names get $myorigin.
        let v = alias("{u@example.com = local}", "");
        assert_eq!(expand(&v, "u@example.com"), ["local@ywnds.com"]);
    }

    #[test]
    fn loops_and_size_are_refused() {
        let v = alias("a@x.example=b@x.example, b@x.example=a@x.example", "");
        assert!(matches!(
            v.expand("a@x.example"),
            Err(Refusal::Unreasonable(t)) if t == "unreasonable virtual_alias_maps map nesting for a@x.example"
        ));
        let v = alias(
            "{all@x.example = a@y.example b@y.example c@y.example}",
            "virtual_alias_expansion_limit = 2\n",
        );
        assert!(matches!(
            v.expand("all@x.example"),
            Err(Refusal::Unreasonable(t)) if t.contains("map expansion size")
        ));
    }

    #[test]
    fn a_table_that_cannot_answer_refuses_the_message() {
        let v = rewriter("virtual_alias_maps = regexp:/nonexistent/re\n");
        assert_eq!(
            v.expand("a@example.com"),
            Err(Refusal::Lookup(
                "virtual_alias_maps map lookup problem for a@example.com".into()
            ))
        );
        let v = rewriter("canonical_maps = regexp:/nonexistent/re\n");
        assert!(matches!(
            v.sender("a@example.com", true),
            Err(Refusal::Lookup(_))
        ));
    }

    #[test]
    fn canonical_maps_by_class_and_in_order() {
        let r = rewriter(
            "sender_canonical_maps = inline:{joe@ywnds.com=joe.public@ywnds.com}\n\
             recipient_canonical_maps = inline:{joe@ywnds.com=joe.rcpt@ywnds.com}\n\
             canonical_maps = inline:{joe.public@ywnds.com=joseph@ywnds.com, @old.example=@ywnds.com}\n",
        );
        assert_eq!(r.sender("joe", true).unwrap(), "joseph@ywnds.com");
        assert_eq!(r.recipient("joe", true).unwrap(), "joe.rcpt@ywnds.com");
        assert_eq!(r.recipient("x@old.example", true).unwrap(), "x@ywnds.com");
        assert_eq!(
            r.header_address("joe", Role::Sender, true).unwrap(),
            "joseph@ywnds.com"
        );
        assert_eq!(
            r.header_address("joe@ywnds.com", Role::Recipient, true)
                .unwrap(),
            "joe.rcpt@ywnds.com"
        );
        let r = rewriter(
            "canonical_maps = inline:{a@ywnds.com=b@ywnds.com}\ncanonical_classes = envelope_recipient\n",
        );
        assert_eq!(r.sender("a@ywnds.com", true).unwrap(), "a@ywnds.com");
        assert_eq!(r.recipient("a@ywnds.com", true).unwrap(), "b@ywnds.com");
        assert_eq!(r.sender("MAILER-DAEMON", true).unwrap(), "");
    }

    #[test]
    fn masquerading_takes_the_first_listed_parent() {
        let r = rewriter(
            "masquerade_domains = !secret.ywnds.com, ywnds.com\nmasquerade_exceptions = root\n",
        );
        assert_eq!(r.sender("u@host.ywnds.com", true).unwrap(), "u@ywnds.com");
        assert_eq!(
            r.sender("u@a.secret.ywnds.com", true).unwrap(),
            "u@a.secret.ywnds.com"
        );
        assert_eq!(
            r.sender("root@host.ywnds.com", true).unwrap(),
            "root@host.ywnds.com"
        );
        assert_eq!(r.sender("u@ywnds.com", true).unwrap(), "u@ywnds.com");
        // Not envelope recipients, by default.
        assert_eq!(
            r.recipient("u@host.ywnds.com", true).unwrap(),
            "u@host.ywnds.com"
        );
        assert_eq!(
            r.header_address("u@host.ywnds.com", Role::Recipient, true)
                .unwrap(),
            "u@ywnds.com"
        );
    }

    #[test]
    fn bcc_tables_and_always_bcc() {
        let r = rewriter(
            "sender_bcc_maps = inline:{@ywnds.com=archive@ywnds.com}\n\
             recipient_bcc_maps = inline:{boss@ywnds.com=secretary@ywnds.com}\nalways_bcc = all@ywnds.com\n",
        );
        assert_eq!(
            r.sender_bcc("u@ywnds.com").unwrap().as_deref(),
            Some("archive@ywnds.com")
        );
        assert_eq!(r.sender_bcc("").unwrap(), None);
        assert_eq!(
            r.recipient_bcc("boss@ywnds.com").unwrap().as_deref(),
            Some("secretary@ywnds.com")
        );
        assert_eq!(r.always_bcc(), Some("all@ywnds.com"));
    }
}
