//! Addresses inside message headers (RFC 5322 address lists): finding them
//! for `sendmail -t`, and completing bare names with `@$myorigin` in mail
//! from local users, as Postfix's cleanup does.
//!
//! The scanner knows quoted strings, nested comments, angle brackets and
//! groups (`team: a, b;`); everything it does not change is kept byte for
//! byte, so a header with complete addresses comes out unchanged.

/// Headers whose value is an address list (compared case-insensitively).
const ADDRESS_HEADERS: [&str; 12] = [
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "bcc",
    "resent-from",
    "resent-sender",
    "resent-reply-to",
    "resent-to",
    "resent-cc",
    "resent-bcc",
];

/// Whether `name` is a header whose value holds addresses.
pub fn is_address_header(name: &str) -> bool {
    ADDRESS_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Byte ranges of the addr-specs in an address list.
fn specs(v: &str) -> Vec<(usize, usize)> {
    let b = v.as_bytes();
    let mut out = Vec::new();
    // In the current item: where its first and last plain tokens are, and
    // the inside of its angle brackets.
    let mut first: Option<usize> = None;
    let mut last_end = 0;
    let mut angle: Option<(usize, usize)> = None;
    let mut angle_open: Option<usize> = None;
    let mut finish =
        |first: &mut Option<usize>, last_end: usize, angle: &mut Option<(usize, usize)>| {
            let range = angle.take().or(first.take().map(|f| (f, last_end)));
            *first = None;
            if let Some((s, e)) = range {
                let t = &v[s..e];
                let (s, e) = (
                    s + (t.len() - t.trim_start().len()),
                    e - (t.len() - t.trim_end().len()),
                );
                if s < e {
                    out.push((s, e));
                }
            }
        };
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                first.get_or_insert(i);
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                last_end = (i + 1).min(b.len());
            }
            b'(' => {
                let mut depth = 0;
                while i < b.len() {
                    match b[i] {
                        b'\\' => i += 1,
                        b'(' => depth += 1,
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
            }
            b'<' => angle_open = Some(i + 1),
            b'>' => {
                if let Some(s) = angle_open.take() {
                    angle = Some((s, i));
                }
            }
            _ if angle_open.is_some() => {}
            b',' | b';' => finish(&mut first, last_end, &mut angle),
            // A group's display name ends: what came before was no address.
            b':' => {
                first = None;
                angle = None;
            }
            c if c.is_ascii_whitespace() => {}
            _ => {
                first.get_or_insert(i);
                last_end = i + 1;
            }
        }
        i += 1;
    }
    finish(&mut first, last_end, &mut angle);
    out
}

/// The addresses in a header value: `a@x, "B, Bee" <b@x>` gives `a@x`, `b@x`.
pub fn addresses(value: &str) -> Vec<String> {
    specs(value)
        .into_iter()
        .map(|(s, e)| value[s..e].to_owned())
        .filter(|a| !a.starts_with('@') || a.contains(':'))
        .collect()
}

/// Appends `@origin` to each address without a domain; the rest of the
/// value is kept as it was.
pub fn qualify_list(value: &str, origin: &str) -> String {
    let mut out = value.to_owned();
    for (s, e) in specs(value).into_iter().rev() {
        let spec = &value[s..e];
        if crate::split(spec).1.is_empty() && !spec.ends_with('@') {
            out.insert_str(e, &format!("@{origin}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_addresses_in_every_form() {
        assert_eq!(
            addresses(" a@example.test, \"B, Bee\" <b@example.test>,\n\tc@example.test (Sea, See)"),
            ["a@example.test", "b@example.test", "c@example.test"]
        );
        assert_eq!(
            addresses(" team: x@a.test, y@b.test; z@c.test"),
            ["x@a.test", "y@b.test", "z@c.test"]
        );
        assert_eq!(addresses(" undisclosed-recipients:;"), Vec::<String>::new());
        assert_eq!(addresses(" <\"odd, one\"@a.test>"), ["\"odd, one\"@a.test"]);
        assert_eq!(addresses(" openstack"), ["openstack"]);
    }

    #[test]
    fn completes_bare_names_and_keeps_the_rest() {
        let q = |v: &str| qualify_list(v, "ywnds.com");
        assert_eq!(q(" hadoop"), " hadoop@ywnds.com");
        assert_eq!(
            q(" Hadoop User <hadoop>"),
            " Hadoop User <hadoop@ywnds.com>"
        );
        assert_eq!(
            q(" hadoop (Hadoop User)"),
            " hadoop@ywnds.com (Hadoop User)"
        );
        assert_eq!(
            q(" a@x.test, \"B, Bee\" <b>, c"),
            " a@x.test, \"B, Bee\" <b@ywnds.com>, c@ywnds.com"
        );
        assert_eq!(q(" team: a, b@x.test;"), " team: a@ywnds.com, b@x.test;");
        let untouched = " \"Smith, J\" <j@x.test> (work), <@hop:k@y.test>";
        assert_eq!(q(untouched), untouched);
        assert!(is_address_header("Resent-To") && !is_address_header("Subject"));
    }
}
