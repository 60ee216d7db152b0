//! Addresses inside message headers (RFC 5322 address lists): finding them
//! for `sendmail -t`, and completing bare names with `@$myorigin` in mail
//! from local users, as Postfix's cleanup does.
//!
//! The scanner knows quoted strings, nested comments, angle brackets and
//! groups (`team: a, b;`); everything it does not change is kept byte for
//! byte, so a header with complete addresses comes out unchanged.

/// Which addresses a header holds, for the rewriting that tells sender and
/// recipient addresses apart (canonical maps, masquerading).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Sender,
    Recipient,
}

/// Headers whose value is an address list (compared case-insensitively),
/// with the role Postfix's cleanup gives them.
const ADDRESS_HEADERS: [(&str, Role); 18] = [
    ("from", Role::Sender),
    ("sender", Role::Sender),
    ("resent-from", Role::Sender),
    ("resent-sender", Role::Sender),
    ("errors-to", Role::Sender),
    ("return-receipt-to", Role::Sender),
    ("return-path", Role::Sender),
    // Where replies go: the sender's addresses, as in Postfix's table.
    ("reply-to", Role::Sender),
    ("mail-followup-to", Role::Sender),
    ("disposition-notification-to", Role::Sender),
    ("to", Role::Recipient),
    ("cc", Role::Recipient),
    ("bcc", Role::Recipient),
    ("apparently-to", Role::Recipient),
    ("resent-reply-to", Role::Recipient),
    ("resent-to", Role::Recipient),
    ("resent-cc", Role::Recipient),
    ("resent-bcc", Role::Recipient),
];

/// The role of a header whose value holds addresses; `None` for others.
pub fn role(name: &str) -> Option<Role> {
    ADDRESS_HEADERS
        .iter()
        .find(|(h, _)| h.eq_ignore_ascii_case(name))
        .map(|(_, r)| *r)
}

/// Whether `name` is a header whose value holds addresses.
pub fn is_address_header(name: &str) -> bool {
    role(name).is_some()
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

/// One token of an address list, as Postfix's tok822 scanner sees it.
#[derive(Debug, PartialEq)]
enum Token {
    /// An atom, a quoted string (quotes kept) or a domain literal.
    Word(String),
    /// One of `@ . , ; : < >`.
    Special(char),
}

fn tokens(value: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = value.chars().peekable();
    let mut atom = String::new();
    let flush = |atom: &mut String, out: &mut Vec<Token>| {
        if !atom.is_empty() {
            out.push(Token::Word(std::mem::take(atom)));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '(' => {
                flush(&mut atom, &mut out);
                let mut depth = 1;
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
            }
            '"' | '[' => {
                flush(&mut atom, &mut out);
                let end = if c == '"' { '"' } else { ']' };
                let mut w = String::from(c);
                while let Some(c) = chars.next() {
                    w.push(c);
                    if c == '\\' {
                        if let Some(n) = chars.next() {
                            w.push(n);
                        }
                    } else if c == end {
                        break;
                    }
                }
                out.push(Token::Word(w));
            }
            '@' | '.' | ',' | ';' | ':' | '<' | '>' => {
                flush(&mut atom, &mut out);
                out.push(Token::Special(c));
            }
            c if c.is_whitespace() => flush(&mut atom, &mut out),
            c => atom.push(c),
        }
    }
    flush(&mut atom, &mut out);
    out
}

/// The addresses of an address list as Postfix's tok822 parser finds them
/// (table values: `virtual_alias_maps`, canonical and generic maps): a
/// phrase before `<route>` and a group's name are not addresses, comments
/// are dropped, and a missing comma between two words is added (`a b` is
/// `a` and `b`; `a @ b` is `a@b`). Like Postfix's parser this reads from
/// right to left.
pub fn address_list(value: &str) -> Vec<String> {
    let toks = tokens(value);
    let mut out: Vec<String> = Vec::new();
    // The address being read, its tokens from right to left.
    let mut cur: Vec<&str> = Vec::new();
    let flush = |cur: &mut Vec<&str>, out: &mut Vec<String>| {
        if !cur.is_empty() {
            out.push(cur.iter().rev().copied().collect());
            cur.clear();
        }
    };
    fn text(t: &Token) -> &str {
        match t {
            Token::Word(w) => w,
            Token::Special('@') => "@",
            Token::Special('.') => ".",
            Token::Special(_) => "",
        }
    }
    // Whether a word here needs no comma before it: nothing of this
    // address has been read yet, or what follows it is `@` or `.`.
    let mut want_word = true;
    let mut in_group = false;
    let mut i = toks.len();
    while i > 0 {
        i -= 1;
        match &toks[i] {
            Token::Special(';') => {
                flush(&mut cur, &mut out);
                want_word = true;
                in_group = true;
            }
            Token::Special(':') if in_group => {
                flush(&mut cur, &mut out);
                // The group's display name.
                while i > 0 && toks[i - 1] != Token::Special(',') {
                    i -= 1;
                }
                in_group = false;
                want_word = true;
            }
            Token::Special('>') => {
                flush(&mut cur, &mut out);
                while i > 0 && toks[i - 1] != Token::Special('<') {
                    i -= 1;
                    cur.push(text(&toks[i]));
                }
                // A source route (`<@a,@b:u@d>`) keeps only `u@d`.
                if let Some(colon) = cur.iter().position(|t| t.is_empty()) {
                    cur.truncate(colon);
                }
                flush(&mut cur, &mut out);
                // The `<` and the phrase before it.
                while i > 0 && !matches!(toks[i - 1], Token::Special('>' | ';' | ',' | ':')) {
                    i -= 1;
                }
                want_word = true;
            }
            Token::Word(w) => {
                if !want_word {
                    flush(&mut cur, &mut out);
                }
                cur.push(w);
                want_word = false;
            }
            Token::Special(',') => {
                flush(&mut cur, &mut out);
                want_word = true;
            }
            t => {
                cur.push(text(t));
                want_word = true;
            }
        }
    }
    flush(&mut cur, &mut out);
    out.retain(|a| !a.is_empty());
    out.reverse();
    out
}

/// Appends `@origin` to each address without a domain; the rest of the
/// value is kept as it was.
pub fn qualify_list(value: &str, origin: &str) -> String {
    rewrite_list(value, &mut |spec| {
        let bare = crate::split(spec).1.is_empty() && !spec.ends_with('@');
        Ok::<_, ()>(bare.then(|| format!("{spec}@{origin}")))
    })
    .unwrap_or_else(|()| value.to_owned())
}

/// Replaces each addr-spec `f` gives a new form for (`Ok(None)` keeps it);
/// the rest of the value is kept byte for byte. The first error stops.
pub fn rewrite_list<E>(
    value: &str,
    f: &mut dyn FnMut(&str) -> Result<Option<String>, E>,
) -> Result<String, E> {
    let mut out = value.to_owned();
    for (s, e) in specs(value).into_iter().rev() {
        if let Some(new) = f(&value[s..e])? {
            out.replace_range(s..e, &new);
        }
    }
    Ok(out)
}

/// Splits a header section into fields, each with its continuation lines
/// and final newline.
fn fields(text: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut pos = 0;
    while pos < text.len() {
        let end = text[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(text.len(), |i| pos + i + 1);
        let continues = pos > start && matches!(text[pos], b' ' | b'\t');
        if pos > start && !continues {
            out.push(&text[start..pos]);
            start = pos;
        }
        pos = end;
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// What gives an address in a header of some role its new form.
pub type Rewrite<'a, E> = dyn FnMut(Role, &str) -> Result<Option<String>, E> + 'a;

/// Rewrites the addresses of a header section (LF line ends): each
/// address in a sender or recipient header goes through `f` with its
/// header's role (`Ok(None)` keeps it); fields `drop` names are left out;
/// everything else is kept byte for byte. The first error stops.
pub fn rewrite_fields<E>(
    text: &[u8],
    drop: &dyn Fn(&str) -> bool,
    f: &mut Rewrite<'_, E>,
) -> Result<Vec<u8>, E> {
    let mut out = Vec::with_capacity(text.len() + 64);
    for field in fields(text) {
        let Some(colon) = field.iter().position(|&b| b == b':') else {
            out.extend_from_slice(field);
            continue;
        };
        let name = String::from_utf8_lossy(&field[..colon]);
        let name = name.trim();
        if drop(name) {
            continue;
        }
        match (std::str::from_utf8(&field[colon + 1..]), role(name)) {
            (Ok(value), Some(r)) => {
                let value = rewrite_list(value, &mut |spec| f(r, spec))?;
                out.extend_from_slice(&field[..=colon]);
                out.extend_from_slice(value.as_bytes());
            }
            _ => out.extend_from_slice(field),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_lists_are_read_as_postfixs_parser_reads_them() {
        assert_eq!(
            address_list("\"Doe, Joe\" <joe@x.example>, a b@y.example,c"),
            ["joe@x.example", "a", "b@y.example", "c"]
        );
        assert_eq!(
            address_list("team: u@x.example, v;  w @ z.example (comment)"),
            ["u@x.example", "v", "w@z.example"]
        );
        assert_eq!(
            address_list("\"Help, Desk\" <d@r.example> w1@r.example w2@r.example"),
            ["d@r.example", "w1@r.example", "w2@r.example"]
        );
        assert_eq!(address_list("\"a b\"@x.example"), ["\"a b\"@x.example"]);
        assert_eq!(address_list("<@hop.example:u@d.example>"), ["u@d.example"]);
        assert_eq!(address_list("u@[10.0.0.1] v"), ["u@[10.0.0.1]", "v"]);
    }

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
        assert_eq!(role("ERRORS-TO"), Some(Role::Sender));
        assert_eq!(role("Reply-To"), Some(Role::Sender));
        assert_eq!(role("mail-followup-to"), Some(Role::Sender));
        assert_eq!(role("Resent-Reply-To"), Some(Role::Recipient));
    }

    #[test]
    fn fields_are_rewritten_by_role_and_dropped_by_name() {
        let text = b"From: a\nTo: b,\n\tc\nBcc: d\nSubject: a b\n";
        let out = rewrite_fields::<()>(text, &|n| n.eq_ignore_ascii_case("bcc"), &mut |r, a| {
            Ok(Some(format!(
                "{a}-{}",
                if r == Role::Sender { "s" } else { "r" }
            )))
        })
        .unwrap();
        assert_eq!(out, b"From: a-s\nTo: b-r,\n\tc-r\nSubject: a b\n");
    }
}
