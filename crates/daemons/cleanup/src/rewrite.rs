//! Address rewriting that cleanup does to the envelope before the queue
//! file is written: virtual alias expansion (Postfix's cleanup_map1n with
//! `virtual_alias_maps`).
//!
//! Each recipient is looked up in Postfix's order (`pfx_resolve::find`);
//! a result is a list of addresses, each looked up again, until none is
//! found. An address that expands into itself (among others) is kept once
//! and not expanded again. An extension the matching key did not have is
//! carried over to every result when `propagate_unmatched_extensions`
//! lists `virtual`; a result `@domain` keeps the user and changes the
//! domain. More than `virtual_alias_expansion_limit` addresses, or deeper
//! than `virtual_alias_recursion_limit`, or a result longer than
//! `virtual_alias_address_length_limit`, and the message is not taken
//! ("4.6.0 Alias expansion error"); a table that cannot answer, likewise
//! ("queue file write error"): the client tries again later.

use pfx_address::DomainList;
use pfx_config::{BuildError, Config};
use pfx_maps::{passwd::Passwd, Format, MapList};
use pfx_resolve::Strategy;

/// Why an expansion was refused; the message is not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Too many addresses, too deep, too long: the text after `warning: ID: `.
    Unreasonable(String),
    /// A table could not be asked.
    Lookup(String),
}

pub(crate) struct VirtualAlias {
    maps: MapList,
    expansion_limit: usize,
    recursion_limit: usize,
    length_limit: usize,
    propagate: bool,
    delimiters: String,
    mydestination: DomainList,
    myorigin: String,
}

impl VirtualAlias {
    pub(crate) fn new(cfg: &Config) -> Result<Self, BuildError> {
        let count = |name: &str| -> Result<usize, BuildError> {
            Ok(usize::try_from(cfg.int(name)?).unwrap_or(0))
        };
        Ok(Self {
            maps: MapList::parse_as(
                &cfg.list("virtual_alias_maps")?,
                &Passwd::new(None),
                Format::Postmap,
            )?,
            expansion_limit: count("virtual_alias_expansion_limit")?,
            recursion_limit: count("virtual_alias_recursion_limit")?,
            length_limit: count("virtual_alias_address_length_limit")?,
            propagate: cfg
                .list("propagate_unmatched_extensions")?
                .iter()
                .any(|c| c.eq_ignore_ascii_case("virtual")),
            delimiters: cfg.get("recipient_delimiter")?,
            mydestination: DomainList::new(&cfg.list("mydestination")?),
            myorigin: cfg.get("myorigin")?,
        })
    }

    /// The addresses `addr` expands into (itself when no table knows it).
    pub(crate) fn expand(&self, addr: &str) -> Result<Vec<String>, Refusal> {
        let mut out = vec![addr.to_owned()];
        if self.maps.is_empty() {
            return Ok(out);
        }
        let title = "virtual_alias_maps";
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
                let results = match self.lookup(&out[i]) {
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

    /// One lookup: the addresses the table gives, with the unmatched
    /// extension and `@domain` results applied (Postfix's mail_addr_map).
    fn lookup(&self, addr: &str) -> Result<Option<Vec<String>>, pfx_maps::Error> {
        let is_local =
            |d: &str| d.eq_ignore_ascii_case(&self.myorigin) || self.mydestination.contains(d);
        let Some(found) = pfx_resolve::find(
            &self.maps,
            &addr.to_ascii_lowercase(),
            &self.delimiters,
            Strategy::DEFAULT,
            &is_local,
        )?
        else {
            return Ok(None);
        };
        let ext = found.extension.as_deref().filter(|_| self.propagate);
        let value = match found.value.strip_prefix('@') {
            // `@newdomain`: the user (without an unmatched extension) at the
            // new domain.
            Some(domain) => {
                let (local, _) = pfx_address::split(addr);
                let local = match &found.extension {
                    Some(e) => local.strip_suffix(e.as_str()).unwrap_or(local),
                    None => local,
                };
                format!("{local}@{domain}")
            }
            None => found.value,
        };
        let list: Vec<String> = addresses(&value)
            .into_iter()
            .map(|a| {
                let a = pfx_address::qualify(&a, &self.myorigin);
                match ext {
                    Some(e) => with_extension(&a, e),
                    None => a,
                }
            })
            .collect();
        if list.is_empty() {
            tracing::warn!(
                "virtual_alias_maps lookup of {addr} returns non-address result \"{value}\""
            );
            return Err(pfx_maps::Error::Temporary {
                table: "virtual_alias_maps".into(),
                reason: format!("non-address result \"{value}\""),
            });
        }
        Ok(Some(list))
    }
}

/// `user+ext@domain` from `user@domain` and `+ext`.
fn with_extension(addr: &str, ext: &str) -> String {
    let (local, domain) = pfx_address::split(addr);
    if domain.is_empty() {
        format!("{local}{ext}")
    } else {
        format!("{local}{ext}@{domain}")
    }
}

/// The addresses in a table value: separated by commas or white space
/// outside quotes, `<...>` taken off.
fn addresses(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut push = |cur: &mut String| {
        let a = cur.trim().trim_start_matches('<').trim_end_matches('>');
        if !a.is_empty() {
            out.push(a.to_owned());
        }
        cur.clear();
    };
    for c in value.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' | ' ' | '\t' if !quoted => push(&mut cur),
            c => cur.push(c),
        }
    }
    push(&mut cur);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn alias(table: &str, extra: &str) -> VirtualAlias {
        let text = format!(
            "myhostname = mail.ywnds.com\nmydomain = ywnds.com\nmyorigin = ywnds.com\n\
             mydestination = $myhostname, $mydomain\nvirtual_alias_maps = inline:{{{table}}}\n{extra}"
        );
        VirtualAlias::new(&Config::from_text(Path::new("/etc/postfix"), &text).unwrap()).unwrap()
    }

    fn expand(v: &VirtualAlias, a: &str) -> Vec<String> {
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
        let text = "virtual_alias_maps = regexp:/nonexistent/re\n";
        let v = VirtualAlias::new(&Config::from_text(Path::new("/etc/postfix"), text).unwrap())
            .unwrap();
        assert_eq!(
            v.expand("a@example.com"),
            Err(Refusal::Lookup(
                "virtual_alias_maps map lookup problem for a@example.com".into()
            ))
        );
    }
}
