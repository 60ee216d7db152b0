//! SMTP without I/O: what smtpd (and later the smtp client) say and hear.
//!
//! - [`command`]: one command line into a [`Command`], with Postfix's replies
//!   for malformed ones.
//! - [`Reply`]: a reply and its wire form.
//! - [`data`]: the DATA decoder: dot-unstuffing, line ends, and the rule that
//!   only `<CR><LF>.<CR><LF>` ends a message (no SMTP smuggling).

pub mod command;
pub mod data;
pub mod encode;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
