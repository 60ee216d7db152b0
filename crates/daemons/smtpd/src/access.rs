//! Access tables (`check_*_access`): the keys Postfix looks up, in its
//! order, and what a table's answer means.
//!
//! A pattern table (regexp, pcre, cidr) is asked once, with the whole
//! name or address; the shorter keys (parent domains, address prefixes,
//! `user@`) go to tables with fixed keys only, as in Postfix.

/// The keys for a domain name: the name, then its parent domains (`b.c`,
/// `c`, or `.b.c`, `.c` when `smtpd_access_maps` is not in
/// `parent_domain_matches_subdomains`). A numeric name has only itself.
/// The flag says whether a key is a partial one.
pub(crate) fn domain_keys(name: &str, parent_style: bool) -> Vec<(String, bool)> {
    let mut keys = vec![(name.to_owned(), false)];
    if name.parse::<std::net::IpAddr>().is_ok() {
        return keys;
    }
    let mut rest = name;
    while let Some(i) = rest[1.min(rest.len())..].find('.').map(|i| i + 1) {
        let next = &rest[i..];
        if next.len() <= 1 {
            break;
        }
        keys.push(if parent_style {
            (next[1..].to_owned(), true)
        } else {
            (next.to_owned(), true)
        });
        rest = next;
    }
    keys
}

/// The keys for a client address: the address, then with its last octet
/// (or IPv6 `:` part) cut off, again and again.
pub(crate) fn address_keys(addr: &str) -> Vec<(String, bool)> {
    let delim = if addr.contains(':') { ':' } else { '.' };
    let mut keys = vec![(addr.to_owned(), false)];
    let mut cur = addr;
    while let Some(i) = cur.rfind(delim) {
        cur = &cur[..i];
        if cur.is_empty() {
            break;
        }
        keys.push((cur.to_owned(), true));
    }
    keys
}

/// The keys for a mail address (access(5)): `user+ext@domain`,
/// `user@domain`, the domain and its parents, `user+ext@`, `user@`.
pub(crate) fn mail_keys(addr: &str, delimiters: &str, parent_style: bool) -> Vec<(String, bool)> {
    let Some((local, domain)) = addr.rsplit_once('@') else {
        return vec![(addr.to_owned(), false)];
    };
    let bare = delimiters
        .chars()
        .find_map(|d| local.find(d))
        .map(|i| &local[..i])
        .filter(|b| !b.is_empty());
    let mut keys = vec![(addr.to_owned(), false)];
    if let Some(b) = bare {
        keys.push((format!("{b}@{domain}"), true));
    }
    keys.extend(
        domain_keys(domain, parent_style)
            .into_iter()
            .map(|(k, _)| (k, true)),
    );
    keys.push((format!("{local}@"), true));
    if let Some(b) = bare {
        keys.push((format!("{b}@"), true));
    }
    keys
}

/// Splits a table value into its first word (upper-cased) and the text.
pub(crate) fn split_action(value: &str) -> (String, &str) {
    let value = value.trim_start();
    let end = value.find([' ', '\t']).unwrap_or(value.len());
    (value[..end].to_ascii_uppercase(), value[end..].trim_start())
}

/// Postfix's fix-up of an address status code for what is rejected: an
/// `X.1.Y` code meant for a recipient becomes the sender's, and the other
/// way round; for anything else it becomes `X.0.0`.
pub(crate) fn dsn_fix(dsn: &str, class: &str) -> String {
    if dsn.get(1..4) != Some(".1.") {
        return dsn.to_owned();
    }
    let micro = &dsn[4..];
    let (sender, rcpt) = match micro {
        "1" | "4" | "6" => ("4.1.7", format!("4.1.{micro}")),
        "2" => ("4.1.8", "4.1.2".to_owned()),
        "3" => ("4.1.7", "4.1.3".to_owned()),
        "5" => ("4.1.0", "4.1.5".to_owned()),
        "7" => ("4.1.7", "4.1.3".to_owned()),
        "8" => ("4.1.8", "4.1.2".to_owned()),
        _ => ("4.1.0", "4.1.0".to_owned()),
    };
    let fixed = match class {
        "Sender address" => sender.to_owned(),
        "Recipient address" => rcpt,
        _ => "4.0.0".to_owned(),
    };
    format!("{}{}", &dsn[..1], &fixed[1..])
}

/// Whether `text` starts like a header (`Name: value`).
pub(crate) fn is_header(text: &str) -> bool {
    match text.split_once(':') {
        Some((name, _)) => {
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(v: Vec<(String, bool)>) -> Vec<String> {
        v.into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn domain_and_parent_keys() {
        assert_eq!(keys(domain_keys("a.b.c", true)), ["a.b.c", "b.c", "c"]);
        assert_eq!(keys(domain_keys("a.b.c", false)), ["a.b.c", ".b.c", ".c"]);
        assert_eq!(keys(domain_keys("localhost", true)), ["localhost"]);
        assert_eq!(keys(domain_keys("127.0.0.1", true)), ["127.0.0.1"]);
    }

    #[test]
    fn address_prefix_keys() {
        assert_eq!(
            keys(address_keys("192.0.2.1")),
            ["192.0.2.1", "192.0.2", "192.0", "192"]
        );
        assert_eq!(
            keys(address_keys("2001:db8:1::5")),
            [
                "2001:db8:1::5",
                "2001:db8:1:",
                "2001:db8:1",
                "2001:db8",
                "2001"
            ]
        );
    }

    #[test]
    fn mail_address_keys_in_access_order() {
        assert_eq!(
            keys(mail_keys("user+foo@mail.example.com", "+", true)),
            [
                "user+foo@mail.example.com",
                "user@mail.example.com",
                "mail.example.com",
                "example.com",
                "com",
                "user+foo@",
                "user@"
            ]
        );
        assert_eq!(
            keys(mail_keys("user@example.com", "+", true)),
            ["user@example.com", "example.com", "com", "user@"]
        );
    }

    #[test]
    fn status_codes() {
        assert_eq!(dsn_fix("5.1.1", "Sender address"), "5.1.7");
        assert_eq!(dsn_fix("4.1.8", "Recipient address"), "4.1.2");
        assert_eq!(dsn_fix("5.1.1", "Client host"), "5.0.0");
        assert_eq!(dsn_fix("5.7.1", "Client host"), "5.7.1");
        assert_eq!(
            split_action("reject  go away"),
            ("REJECT".to_owned(), "go away")
        );
        assert!(is_header("X-Tag: yes"));
        assert!(!is_header("no header"));
    }
}
