//! Postfix's TLS protocol lists (`smtpd_tls_protocols`, `smtp_tls_mandatory_protocols`):
//! `>=TLSv1.2`, `<=TLSv1.3`, `TLSv1.2 TLSv1.3`, `!SSLv2, !SSLv3`, or empty for all.

use crate::Error;

/// The names Postfix knows, oldest first.
const NAMES: [&str; 6] = ["SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"];
const TLS12: usize = 4;
const TLS13: usize = 5;

/// The versions a list allows, of those rustls implements.
pub fn parse(
    parameter: &str,
    value: &str,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, Error> {
    let index = |name: &str| {
        NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                Error::Config(format!(
                    "{parameter}: unknown TLS protocol \"{name}\" in \"{value}\""
                ))
            })
    };
    let mut included: Option<[bool; 6]> = None;
    let mut allowed = [true; 6];
    for item in value
        .split(|c: char| c.is_whitespace() || c == ',' || c == ':')
        .filter(|s| !s.is_empty())
    {
        if let Some(n) = item.strip_prefix(">=") {
            let i = index(n)?;
            allowed.iter_mut().take(i).for_each(|a| *a = false);
        } else if let Some(n) = item.strip_prefix("<=") {
            let i = index(n)?;
            allowed.iter_mut().skip(i + 1).for_each(|a| *a = false);
        } else if let Some(n) = item.strip_prefix('!') {
            allowed[index(n)?] = false;
        } else {
            included.get_or_insert([false; 6])[index(item)?] = true;
        }
    }
    if let Some(inc) = included {
        for (a, i) in allowed.iter_mut().zip(inc) {
            *a &= i;
        }
    }
    let mut out = Vec::new();
    if allowed[TLS13] {
        out.push(&rustls::version::TLS13);
    }
    if allowed[TLS12] {
        out.push(&rustls::version::TLS12);
    }
    if out.is_empty() {
        return Err(Error::Config(format!(
            "{parameter} = {value}: allows no protocol postfix-rs implements (TLSv1.2, TLSv1.3)"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &str) -> Vec<&'static str> {
        parse("p", v)
            .unwrap()
            .iter()
            .map(|v| match v.version {
                rustls::ProtocolVersion::TLSv1_3 => "1.3",
                _ => "1.2",
            })
            .collect()
    }

    #[test]
    fn postfix_forms() {
        assert_eq!(names(">=TLSv1"), ["1.3", "1.2"]);
        assert_eq!(names(""), ["1.3", "1.2"]);
        assert_eq!(names("!SSLv2, !SSLv3"), ["1.3", "1.2"]);
        assert_eq!(names(">=TLSv1.3"), ["1.3"]);
        assert_eq!(names("<=TLSv1.2"), ["1.2"]);
        assert_eq!(names("TLSv1.2"), ["1.2"]);
        assert_eq!(names("!TLSv1.2"), ["1.3"]);
        assert_eq!(names("TLSv1 TLSv1.1 TLSv1.2 tlsv1.3"), ["1.3", "1.2"]);
    }

    #[test]
    fn nothing_usable_or_unknown_is_an_error() {
        let e = parse("smtpd_tls_protocols", "TLSv1.1").unwrap_err();
        assert!(e.to_string().contains("allows no protocol"), "{e}");
        let e = parse("smtpd_tls_protocols", ">=TLSv9").unwrap_err();
        assert!(
            e.to_string().contains("unknown TLS protocol \"TLSv9\""),
            "{e}"
        );
    }
}
