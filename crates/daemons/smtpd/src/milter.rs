//! smtpd's side of `smtpd_milters`, as Postfix's smtpd_milter: the macro
//! values milters are given, their replies as SMTP replies, and the log
//! lines (`NOQUEUE: milter-reject: RCPT from ...`).

use std::collections::HashMap;

use pfx_smtp_proto::Reply;
use tracing::info;

/// A milter's reply text (`550 5.7.1 text`, lines separated by CRLF) as
/// the reply smtpd sends.
pub(crate) fn reply_of(text: &str) -> Reply {
    let code = text.get(..3).and_then(|c| c.parse().ok()).unwrap_or(451);
    let lines: Vec<&str> = text
        .split("\r\n")
        .map(|l| l.get(4..).unwrap_or(""))
        .collect();
    Reply::plain(code, lines.join("\n"))
}

/// Who and what a milter log line names.
pub(crate) struct Whatsup<'a> {
    pub(crate) queue_id: Option<&'a str>,
    pub(crate) stage: &'a str,
    pub(crate) client: &'a str,
    pub(crate) sender: Option<&'a str>,
    pub(crate) recipient: Option<&'a str>,
    pub(crate) esmtp: bool,
    pub(crate) helo: Option<&'a str>,
    pub(crate) sasl_username: Option<&'a str>,
}

impl Whatsup<'_> {
    /// `QID: ACTION: STAGE from CLIENT: TEXT; from=<...> ...`.
    pub(crate) fn log(&self, action: &str, text: &str) {
        let mut line = format!(
            "{}: {action}: {} from {}: {text};",
            self.queue_id.unwrap_or("NOQUEUE"),
            self.stage,
            self.client
        );
        if let Some(s) = self.sender {
            line.push_str(&format!(" from=<{s}>"));
        }
        if let Some(r) = self.recipient {
            line.push_str(&format!(" to=<{r}>"));
        }
        line.push_str(if self.esmtp {
            " proto=ESMTP"
        } else {
            " proto=SMTP"
        });
        if let Some(h) = self.helo {
            line.push_str(&format!(" helo=<{h}>"));
        }
        if let Some(u) = self.sasl_username {
            line.push_str(&format!(" sasl_username=<{u}>"));
        }
        info!("{line}");
    }
}

/// The macro values of a moment of the session.
#[derive(Default)]
pub(crate) struct Values(pub(crate) HashMap<&'static str, String>);

impl Values {
    pub(crate) fn set(&mut self, name: &'static str, value: impl Into<String>) {
        self.0.insert(name, value.into());
    }

    pub(crate) fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milter_replies_become_smtp_replies() {
        assert_eq!(
            reply_of("550 5.7.1 Command rejected").to_wire(),
            "550 5.7.1 Command rejected\r\n"
        );
        assert_eq!(
            reply_of("554-5.7.1 first\r\n554 5.7.1 second").to_wire(),
            "554-5.7.1 first\r\n554 5.7.1 second\r\n"
        );
    }
}
