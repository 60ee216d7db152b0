//! The order in which Postfix looks an address up in an address table
//! (mail_addr_find: `virtual_alias_maps`, `virtual_mailbox_maps`,
//! `relocated_maps`, `canonical_maps`, the recipient validation of smtpd):
//!
//! 1. `user+ext@domain`, in every table;
//! 2. `user@domain` (the extension removed at `recipient_delimiter`);
//! 3. when the domain is `$myorigin` or one of ours: `user+ext`, then `user`;
//! 4. `@domain`.
//!
//! Steps 2 to 4 ask only the tables with fixed keys: a regexp or pcre table
//! sees the whole address once, as in Postfix. The first table that knows a
//! key answers; a table that cannot answer stops the search with an error
//! (the caller defers), never "not found".

use pfx_maps::{Error, MapList};

/// What a search found: the value, and the extension that the matching key
/// did not carry (for `propagate_unmatched_extensions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub value: String,
    pub extension: Option<String>,
}

/// Which keys to try after the whole address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Strategy {
    /// `user+ext` and `user` when the domain is ours.
    pub local_part: bool,
    /// `@domain`.
    pub at_domain: bool,
}

impl Strategy {
    /// Postfix's default: everything.
    pub const DEFAULT: Self = Self {
        local_part: true,
        at_domain: true,
    };
}

/// `(bare, extension)` of a local part, split at the first delimiter
/// character; the extension keeps its delimiter (`+ext`), as Postfix
/// appends it back. As Postfix's split_addr: `postmaster`,
/// `mailer-daemon` and `double-bounce` are never split, nor `owner-x` and
/// `x-request` when `-` is a delimiter, nor a local part that would become
/// empty.
pub fn split_extension<'a>(local: &'a str, delimiters: &str) -> (&'a str, Option<&'a str>) {
    let whole = (local, None);
    if delimiters.is_empty()
        || ["postmaster", "mailer-daemon", "double-bounce"]
            .iter()
            .any(|n| local.eq_ignore_ascii_case(n))
    {
        return whole;
    }
    if delimiters.contains('-') {
        let lower = local.to_ascii_lowercase();
        if lower.starts_with("owner-") || (lower.len() > 8 && lower.ends_with("-request")) {
            return whole;
        }
    }
    match local.find(|c| delimiters.contains(c)) {
        Some(0) | None => whole,
        Some(i) => (&local[..i], Some(&local[i..])),
    }
}

/// The first fixed table that knows `key`.
pub(crate) fn fixed(maps: &MapList, key: &str) -> Result<Option<String>, Error> {
    for m in maps.maps().iter().filter(|m| !m.is_pattern()) {
        if let Some(v) = m.lookup(key)? {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

/// Looks `address` up in `maps` in Postfix's order. `is_local` says
/// whether a domain is `$myorigin` or one of ours.
pub fn find(
    maps: &MapList,
    address: &str,
    delimiters: &str,
    strategy: Strategy,
    is_local: &dyn Fn(&str) -> bool,
) -> Result<Option<Found>, Error> {
    let found = |value: String, ext: Option<&str>| {
        Ok(Some(Found {
            value,
            extension: ext.map(str::to_owned),
        }))
    };
    if let Some(v) = maps.lookup(address)? {
        return found(v, None);
    }
    let (local, domain) = match address.rsplit_once('@') {
        Some((l, d)) => (l, Some(d)),
        None => (address, None),
    };
    let (bare, ext) = split_extension(local, delimiters);
    let bare_key = |local: &str| match domain {
        Some(d) => format!("{local}@{d}"),
        None => local.to_owned(),
    };
    if ext.is_some() {
        if let Some(v) = fixed(maps, &bare_key(bare))? {
            return found(v, ext);
        }
    }
    let Some(domain) = domain else {
        return Ok(None);
    };
    if strategy.local_part && is_local(domain) {
        if let Some(v) = fixed(maps, local)? {
            return found(v, None);
        }
        if ext.is_some() {
            if let Some(v) = fixed(maps, bare)? {
                return found(v, ext);
            }
        }
    }
    if strategy.at_domain {
        if let Some(v) = fixed(maps, &format!("@{domain}"))? {
            return found(v, None);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pfx_maps::passwd::Passwd;

    fn maps(specs: &[&str]) -> MapList {
        let specs: Vec<String> = specs.iter().map(|s| (*s).to_owned()).collect();
        MapList::parse(&specs, &Passwd::default()).unwrap()
    }

    fn ours(d: &str) -> bool {
        d == "ywnds.com"
    }

    fn get(m: &MapList, addr: &str) -> Option<(String, Option<String>)> {
        find(m, addr, "+", Strategy::DEFAULT, &ours)
            .unwrap()
            .map(|f| (f.value, f.extension))
    }

    #[test]
    fn keys_are_tried_in_postfix_order() {
        let m = maps(&["inline:{a+x@example.com=full, a@example.com=bare, @example.com=catchall, b=local, b+y=localext}"]);
        assert_eq!(get(&m, "a+x@example.com"), Some(("full".into(), None)));
        assert_eq!(
            get(&m, "a+z@example.com"),
            Some(("bare".into(), Some("+z".into())))
        );
        assert_eq!(get(&m, "c@example.com"), Some(("catchall".into(), None)));
        // Local parts alone only for our domains.
        assert_eq!(get(&m, "b+y@ywnds.com"), Some(("localext".into(), None)));
        assert_eq!(
            get(&m, "b+q@ywnds.com"),
            Some(("local".into(), Some("+q".into())))
        );
        assert_eq!(get(&m, "b@other.example"), None);
    }

    #[test]
    fn pattern_tables_see_only_the_whole_address() {
        let dir = std::env::temp_dir().join(format!("pfx-find-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let re = dir.join("re");
        std::fs::write(&re, "/^a@example\\.com$/ bare\n/^@example\\.com$/ at\n").unwrap();
        let m = maps(&[&format!("regexp:{}", re.display())]);
        assert_eq!(get(&m, "a@example.com"), Some(("bare".into(), None)));
        assert_eq!(get(&m, "a+x@example.com"), None);
        assert_eq!(get(&m, "z@example.com"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failing_table_is_an_error_not_a_miss() {
        let m = maps(&["inline:{other=x}", "regexp:/nonexistent/re"]);
        assert!(find(&m, "a@example.com", "+", Strategy::DEFAULT, &ours).is_err());
    }

    #[test]
    fn extensions_split_at_the_first_delimiter() {
        assert_eq!(split_extension("a+b+c", "+"), ("a", Some("+b+c")));
        assert_eq!(split_extension("a-b", "+-"), ("a", Some("-b")));
        assert_eq!(split_extension("+a", "+"), ("+a", None));
        assert_eq!(split_extension("a+b", ""), ("a+b", None));
        assert_eq!(split_extension("owner-list", "-"), ("owner-list", None));
        assert_eq!(split_extension("list-request", "-"), ("list-request", None));
        assert_eq!(
            split_extension("Postmaster+x", "+"),
            ("Postmaster", Some("+x"))
        );
        assert_eq!(split_extension("postmaster", "+"), ("postmaster", None));
    }
}
