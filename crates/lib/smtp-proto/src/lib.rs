//! SMTP without I/O: what smtpd (and later the smtp client) say and hear.
//!
//! - [`command`]: one command line into a [`Command`], with Postfix's replies
//!   for malformed ones.
//! - [`Reply`]: a reply and its wire form.
//! - [`data`]: the DATA decoder: dot-unstuffing, line ends, and the rule that
//!   only `<CR><LF>.<CR><LF>` ends a message (no SMTP smuggling).

pub mod command;
pub mod data;
pub mod dsn;
pub mod encode;
pub mod xforward;

pub use command::{
    data_syntax, etrn_domain, non_smtp_goodbye, parse_command, proxy_reply, vrfy_address, Command,
};

use std::fmt;

/// One SMTP reply: code, enhanced status code (when there is one) and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<String>,
    pub text: String,
}

impl Reply {
    /// A reply with an enhanced status code, as most of Postfix's are.
    pub fn new(code: u16, enhanced: &str, text: impl Into<String>) -> Self {
        Self {
            code,
            enhanced: Some(enhanced.to_owned()),
            text: text.into(),
        }
    }

    /// A reply without an enhanced code (greeting, HELO syntax, 354).
    pub fn plain(code: u16, text: impl Into<String>) -> Self {
        Self {
            code,
            enhanced: None,
            text: text.into(),
        }
    }

    /// 2xx and 3xx.
    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// The reply on the wire, CRLF-terminated.
    pub fn to_wire(&self) -> String {
        format!("{self}\r\n")
    }
}

impl fmt::Display for Reply {
    /// One line per text line: `250-first`, ..., `250 last` (CRLF between).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<&str> = self.text.split('\n').collect();
        for (i, l) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            if i > 0 {
                f.write_str("\r\n")?;
            }
            match &self.enhanced {
                Some(e) => write!(f, "{}{sep}{e} {l}", self.code)?,
                None => write!(f, "{}{sep}{l}", self.code)?,
            }
        }
        Ok(())
    }
}

/// A multi-line reply without enhanced codes (EHLO): `250-first`, ..., `250 last`.
pub fn multiline(code: u16, lines: &[String]) -> Reply {
    Reply::plain(code, lines.join("\n"))
}

/// Splits text that may start with an enhanced status code (`5.1.1 User
/// unknown`): the code, or `default` when the text does not start with a
/// valid one (class 2, 4 or 5, then white space or the end), and the rest
/// (Postfix's `dsn_split`, as error(8) and discard(8) read their next hop).
pub fn dsn_split<'a>(default: &str, text: &'a str) -> (String, &'a str) {
    let t = text.trim_start();
    let end = t.find(char::is_whitespace).unwrap_or(t.len());
    let (code, rest) = t.split_at(end);
    let mut parts = code.split('.');
    let valid = matches!(parts.next(), Some("2" | "4" | "5"))
        && parts.clone().count() == 2
        && parts.all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    if valid {
        (code.to_owned(), rest.trim_start())
    } else {
        (default.to_owned(), t)
    }
}

/// Postfix's valid_hostname: labels of letters, digits and hyphens (and
/// underscores), not starting or ending with a hyphen, 63 bytes at most,
/// 255 in all, and not all numeric.
pub fn valid_hostname(name: &str) -> bool {
    if name.is_empty() || name.len() > 255 {
        return false;
    }
    let mut all_numeric = true;
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return false;
        }
        if label.starts_with('-') || label.ends_with('-') {
            return false;
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return false;
        }
        if !label.bytes().all(|b| b.is_ascii_digit()) {
            all_numeric = false;
        }
    }
    !all_numeric
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_split_as_postfix() {
        assert_eq!(
            dsn_split("5.0.0", "5.1.1 custom error text"),
            ("5.1.1".into(), "custom error text")
        );
        assert_eq!(
            dsn_split("5.0.0", "no code here"),
            ("5.0.0".into(), "no code here")
        );
        assert_eq!(dsn_split("4.0.0", " 4.2.0"), ("4.2.0".into(), ""));
        assert_eq!(dsn_split("5.0.0", "3.1.1 x"), ("5.0.0".into(), "3.1.1 x"));
        assert_eq!(dsn_split("5.0.0", "5.1.1x y"), ("5.0.0".into(), "5.1.1x y"));
        assert_eq!(
            dsn_split("5.0.0", "5.1234.1 y"),
            ("5.0.0".into(), "5.1234.1 y")
        );
    }

    #[test]
    fn replies_format_like_postfix() {
        assert_eq!(Reply::new(250, "2.1.0", "Ok").to_wire(), "250 2.1.0 Ok\r\n");
        assert_eq!(
            Reply::plain(501, "Syntax: HELO hostname").to_string(),
            "501 Syntax: HELO hostname"
        );
        assert_eq!(
            multiline(
                250,
                &[
                    "mail.ywnds.com".into(),
                    "PIPELINING".into(),
                    "8BITMIME".into()
                ]
            )
            .to_wire(),
            "250-mail.ywnds.com\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
        );
    }

    #[test]
    fn host_names() {
        assert!(valid_hostname("mail.example.com"));
        assert!(valid_hostname("localhost"));
        assert!(!valid_hostname("1.2.3.4"));
        assert!(!valid_hostname("bad_-.example"));
        assert!(!valid_hostname("a..b"));
        assert!(!valid_hostname("x y"));
    }
}
