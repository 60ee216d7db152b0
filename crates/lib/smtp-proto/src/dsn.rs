//! RFC 3461 (DSN) parameters: `RET=`, `ENVID=`, `NOTIFY=`, `ORCPT=`, read
//! as Postfix's smtpd reads them and written as its smtp client writes
//! them. NOTIFY and RET values are Postfix's queue-file codes.

/// `RET=FULL` and `RET=HDRS` (Postfix's `ret_flags`).
pub const RET_FULL: u32 = 1;
pub const RET_HDRS: u32 = 2;

/// NOTIFY bits (Postfix's `notify_flags`).
pub const NOTIFY_NEVER: u32 = 1;
pub const NOTIFY_SUCCESS: u32 = 2;
pub const NOTIFY_FAILURE: u32 = 4;
pub const NOTIFY_DELAY: u32 = 8;

const NOTIFY_NAMES: [(&str, u32); 4] = [
    ("NEVER", NOTIFY_NEVER),
    ("SUCCESS", NOTIFY_SUCCESS),
    ("FAILURE", NOTIFY_FAILURE),
    ("DELAY", NOTIFY_DELAY),
];

/// `RET=` value, any case; `None` when it is neither FULL nor HDRS.
pub fn ret_code(value: &str) -> Option<u32> {
    if value.eq_ignore_ascii_case("FULL") {
        Some(RET_FULL)
    } else if value.eq_ignore_ascii_case("HDRS") {
        Some(RET_HDRS)
    } else {
        None
    }
}

/// `NOTIFY=` value (comma-separated names, any case); `None` when a name is
/// unknown or NEVER comes with another.
pub fn notify_mask(value: &str) -> Option<u32> {
    let mut mask = 0;
    for name in value.split(',') {
        let (_, bit) = NOTIFY_NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))?;
        mask |= bit;
    }
    (mask != 0 && (mask == NOTIFY_NEVER || mask & NOTIFY_NEVER == 0)).then_some(mask)
}

/// The `NOTIFY=` text of a mask (`SUCCESS,FAILURE`).
pub fn notify_text(mask: u32) -> String {
    NOTIFY_NAMES
        .iter()
        .filter(|(_, b)| mask & b != 0)
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(",")
}

/// Decodes RFC 3461 xtext (`+XX` hex escapes); `None` when malformed.
pub fn xtext_decode(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            c if (33..=126).contains(&c) && c != b'=' => {
                out.push(c);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// Encodes xtext: `+`, `=`, and bytes outside `!`..`~` as `+XX`.
pub fn xtext_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &c in text.as_bytes() {
        if (33..=126).contains(&c) && c != b'+' && c != b'=' {
            out.push(c as char);
        } else {
            out.push_str(&format!("+{c:02X}"));
        }
    }
    out
}

/// Decodes RFC 6533 unitext as Postfix reads it (`\x{HEX}` code points;
/// anything else as it is); `None` when malformed.
pub fn uxtext_decode(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("\\x{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 3..];
        let end = after.find('}')?;
        let hex = &after[..end];
        if hex.is_empty() || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        out.push(char::from_u32(u32::from_str_radix(hex, 16).ok()?)?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// Encodes unitext as Postfix's smtp client does: `\`, `+`, `=`, and
/// characters outside `!`..`~` as `\x{HEX}`.
pub fn uxtext_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if ('!'..='~').contains(&c) && !matches!(c, '\\' | '+' | '=') {
            out.push(c);
        } else {
            out.push_str(&format!("\\x{{{:02X}}}", u32::from(c)));
        }
    }
    out
}

/// `ORCPT=type;xtext` → `type;decoded`: unitext for the `utf-8` type,
/// xtext for any other; `None` when malformed (as Postfix: an empty type
/// or bad encoding).
pub fn orcpt_decode(value: &str) -> Option<String> {
    let (kind, coded) = value.split_once(';')?;
    if kind.is_empty() {
        return None;
    }
    let addr = if kind.eq_ignore_ascii_case("utf-8") {
        uxtext_decode(coded)?
    } else {
        xtext_decode(coded)?
    };
    Some(format!("{kind};{addr}"))
}

/// `type;address` → the `ORCPT=` parameter value, encoded as its type
/// wants (unitext for `utf-8`, else xtext).
pub fn orcpt_encode(stored: &str) -> String {
    match stored.split_once(';') {
        Some((kind, addr)) if kind.eq_ignore_ascii_case("utf-8") => {
            format!("{kind};{}", uxtext_encode(addr))
        }
        Some((kind, addr)) => format!("{kind};{}", xtext_encode(addr)),
        None => format!("rfc822;{}", xtext_encode(stored)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_and_ret_as_postfix_reads_them() {
        assert_eq!(notify_mask("success,FAILURE"), Some(6));
        assert_eq!(notify_mask("NEVER"), Some(1));
        assert_eq!(notify_mask("NEVER,DELAY"), None);
        assert_eq!(notify_mask("SOMETIMES"), None);
        assert_eq!(notify_mask(""), None);
        assert_eq!(notify_text(14), "SUCCESS,FAILURE,DELAY");
        assert_eq!(ret_code("hdrs"), Some(RET_HDRS));
        assert_eq!(ret_code("BODY"), None);
    }

    #[test]
    fn xtext_round_trips() {
        assert_eq!(xtext_decode("a+2Bb+3Dc").as_deref(), Some("a+b=c"));
        assert_eq!(xtext_decode("bad+2"), None);
        assert_eq!(xtext_decode("sp ace"), None);
        assert_eq!(xtext_encode("a+b=c d"), "a+2Bb+3Dc+20d");
        assert_eq!(
            orcpt_decode("rfc822;u+2Bx@example.com").as_deref(),
            Some("rfc822;u+x@example.com")
        );
        assert_eq!(orcpt_decode(";u@x"), None);
        assert_eq!(
            orcpt_decode("utf-8;j\\x{F6}rg+1@example.com").as_deref(),
            Some("utf-8;jörg+1@example.com")
        );
        assert_eq!(orcpt_decode("UTF-8;a\\x{}b"), None);
        assert_eq!(orcpt_decode("utf-8;a\\x{D800}b"), None);
        assert_eq!(orcpt_decode("utf-8;a\\x{41"), None);
        assert_eq!(
            orcpt_encode("utf-8;jörg+1=\\@example.com"),
            "utf-8;j\\x{F6}rg\\x{2B}1\\x{3D}\\x{5C}@example.com"
        );
        assert_eq!(
            orcpt_encode("rfc822;u+x@example.com"),
            "rfc822;u+2Bx@example.com"
        );
    }
}
