//! The text of a delivery status notice (Postfix's bounce_notify_util
//! layout): a non-delivery notice, or a success notice for recipients that
//! asked for one (NOTIFY=SUCCESS).

use std::io::Read;
use std::time::{SystemTime, UNIX_EPOCH};

use pfx_queue::file::QueueFile;
use pfx_queue::statuslog::Status;

/// Which notice: Postfix's built-in templates.
pub(crate) use pfx_ipc::proto::Notice as Kind;

const FAILURE_INTRO: &str = "I'm sorry to have to inform you that your message could not\nbe delivered to one or more recipients. It's attached below.\n\n";
const HELP_TEXT: &str = "For further assistance, please send mail to postmaster.\n\nIf you do so, please include this problem report. You can\ndelete your own text from the attached returned message.\n";
const DELAY_BANNER: &str = "####################################################################\n# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n####################################################################\n\n";
const SUCCESS_TEXT: &str = "Your message was successfully delivered to the destination(s)\nlisted below. If the message was delivered to mailbox you will\nreceive no further notifications. Otherwise you may still receive\nnotifications of mail delivery errors from other systems.\n";

pub(crate) struct Notice<'a> {
    pub(crate) kind: Kind,
    /// For the delay warning: `delay_warning_time` and
    /// `maximal_queue_lifetime` (its text counts them in whole hours and
    /// days, as Postfix's template does).
    pub(crate) warn_time: std::time::Duration,
    pub(crate) lifetime: std::time::Duration,
    pub(crate) queue_id: &'a str,
    pub(crate) myhostname: &'a str,
    pub(crate) to: &'a str,
    pub(crate) recipients: &'a [Status],
    pub(crate) original: &'a QueueFile,
    pub(crate) size_limit: u64,
    /// `header_from_format = standard` (`Name <address>`), else obsolete.
    pub(crate) from_standard: bool,
    /// `enable_threaded_bounces`: References and In-Reply-To.
    pub(crate) threaded: bool,
    /// The notice's MIME encoding, as Postfix's bounce chooses it: 8bit
    /// with `smtputf8_enable`, else the original's (`None`: unknown).
    pub(crate) encoding: Option<&'a str>,
}

/// Postfix's line_wrap as bounce uses it: a line is cut before the word
/// that would take it past `len` characters; the lines after the first
/// are indented by `indent` (and `indent` shorter).
fn wrap(text: &str, len: usize, indent: usize) -> String {
    let b = text.as_bytes();
    let blank = |c: u8| c == b' ' || c == b'\t';
    let mut out = String::new();
    let emit = |out: &mut String, from: usize, to: usize, pad: usize| {
        let line = text[from..to].trim_end_matches([' ', '\t']);
        out.push_str(&" ".repeat(pad));
        out.push_str(line);
        out.push('\n');
    };
    let (mut pad, mut width) = (0, len);
    let mut start = 0;
    let mut word = 0;
    loop {
        let space = b[word..]
            .iter()
            .position(|&c| blank(c))
            .map_or(b.len(), |i| word + i);
        if word > start && space - start > width {
            emit(&mut out, start, word, pad);
            while word < b.len() && blank(b[word]) {
                word += 1;
            }
            if start == 0 {
                pad += indent;
                width -= indent;
            }
            start = word;
        }
        if space >= b.len() {
            break;
        }
        word = space + 1;
    }
    emit(&mut out, start, b.len(), pad);
    out
}

/// bounce_print_wrap's width and indent.
fn wrapped(text: &str) -> String {
    wrap(text, 79, 4)
}

impl Notice<'_> {
    /// The whole notice, headers included, in pieces ready for cleanup.
    pub(crate) fn render(&self) -> std::io::Result<Vec<Vec<u8>>> {
        let now = SystemTime::now();
        let boundary = format!(
            "{}.{}/{}",
            self.queue_id,
            now.duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            self.myhostname
        );
        let mut head = String::new();
        head.push_str(&if self.from_standard {
            format!(
                "From: Mail Delivery System <MAILER-DAEMON@{}>\n",
                self.myhostname
            )
        } else {
            format!(
                "From: MAILER-DAEMON@{} (Mail Delivery System)\n",
                self.myhostname
            )
        });
        head.push_str(match self.kind {
            Kind::Failure => "Subject: Undelivered Mail Returned to Sender\n",
            Kind::Success => "Subject: Successful Mail Delivery Report\n",
            Kind::Delay => "Subject: Delayed Mail (still being retried)\n",
        });
        head.push_str(&format!("To: {}\n", self.to));
        if let Some(id) = self.threaded.then(|| self.message_id()).flatten() {
            head.push_str(&format!("References: {id}\nIn-Reply-To: {id}\n"));
        }
        head.push_str("Auto-Submitted: auto-replied\n");
        head.push_str("MIME-Version: 1.0\n");
        head.push_str(&format!("Content-Type: multipart/report; report-type=delivery-status;\n\tboundary=\"{boundary}\"\n"));
        if let Some(e) = self.encoding {
            head.push_str(&format!("Content-Transfer-Encoding: {e}\n"));
        }
        let eight_bit = self.encoding == Some("8bit");
        head.push_str("\nThis is a MIME-encapsulated message.\n\n");
        head.push_str(&format!(
            "--{boundary}\nContent-Description: Notification\nContent-Type: text/plain; charset={}\n{}\n",
            if eight_bit { "utf-8" } else { "us-ascii" },
            if eight_bit { "Content-Transfer-Encoding: 8bit\n" } else { "" }
        ));
        head.push_str(&format!(
            "This is the mail system at host {}.\n\n{}\n                   The mail system\n",
            self.myhostname,
            match self.kind {
                Kind::Failure => format!("{FAILURE_INTRO}{HELP_TEXT}"),
                Kind::Success => SUCCESS_TEXT.to_owned(),
                Kind::Delay => format!(
                    "{DELAY_BANNER}Your message could not be delivered for more than {} hour(s).\n\
                     It will be retried until it is {} day(s) old.\n\n{HELP_TEXT}",
                    self.warn_time.as_secs() / 3600,
                    self.lifetime.as_secs() / 86_400
                ),
            }
        ));
        for s in self.recipients {
            let entry = match &s.original {
                Some(o) if *o != s.recipient => {
                    format!("<{}> (expanded from <{o}>): {}", s.recipient, s.reason)
                }
                _ => format!("<{}>: {}", s.recipient, s.reason),
            };
            head.push('\n');
            head.push_str(&wrapped(&entry));
        }
        head.push_str(&format!("\n--{boundary}\nContent-Description: Delivery report\nContent-Type: message/delivery-status\n\n"));
        head.push_str(&format!("Reporting-MTA: dns; {}\n", self.myhostname));
        if let Some(envid) = self.original.attr("envelope_id").filter(|e| !e.is_empty()) {
            head.push_str(&format!("Original-Envelope-Id: {envid}\n"));
        }
        head.push_str(&format!("X-Postfix-Queue-ID: {}\n", self.queue_id));
        head.push_str(&format!(
            "X-Postfix-Sender: rfc822; {}\n",
            self.original.sender
        ));
        head.push_str(&format!(
            "Arrival-Date: {}\n",
            pfx_sys::time::rfc2822(self.original.arrival)
        ));
        for s in self.recipients {
            head.push_str(&format!("\nFinal-Recipient: rfc822; {}\n", s.recipient));
            // The client's ORCPT when it gave one, else the address as
            // first given, as Postfix reports it (its queue file always
            // records that one).
            match (&s.dsn_orcpt, &s.original) {
                (Some(orcpt), _) => head.push_str(&format!("Original-Recipient: {orcpt}\n")),
                (None, o) => head.push_str(&format!(
                    "Original-Recipient: rfc822;{}\n",
                    o.as_deref().unwrap_or(&s.recipient)
                )),
            }
            let action = match self.kind {
                Kind::Failure => "failed",
                Kind::Delay => "delayed",
                Kind::Success => s.action.as_deref().unwrap_or("delivered"),
            };
            head.push_str(&format!("Action: {action}\nStatus: {}\n", s.dsn));
            if s.relay != "local" && s.relay != "none" && !s.relay.is_empty() {
                // `mx.example[1.2.3.4]:25` and `host ... said: 550 ... (in reply to X command)`
                // become `dns; mx.example` and `smtp; 550 ...`, as Postfix writes them.
                let mta = s.relay.split('[').next().unwrap_or(&s.relay);
                let said = s
                    .reason
                    .split_once(" said: ")
                    .map_or(s.reason.as_str(), |(_, r)| r);
                let via = format!("delivery via {}: ", s.relay);
                let said = said.strip_prefix(&via).unwrap_or(said);
                let said = match said.rfind(" (in reply to ") {
                    Some(i) if said.ends_with(" command)") => &said[..i],
                    _ => said,
                };
                head.push_str(&wrapped(&format!("Remote-MTA: dns; {mta}")));
                head.push_str(&wrapped(&format!("Diagnostic-Code: smtp; {said}")));
            } else {
                head.push_str(&wrapped(&format!(
                    "Diagnostic-Code: X-Postfix; {}",
                    s.reason
                )));
            }
            if self.kind == Kind::Delay {
                let until = self.original.arrival + self.lifetime;
                head.push_str(&format!(
                    "Will-Retry-Until: {}\n",
                    pfx_sys::time::rfc2822(until)
                ));
            }
        }
        // RET=HDRS asks for the headers only, and so does a large message;
        // a success notice always returns only the headers.
        let whole = self.kind == Kind::Failure
            && self.original.content_len <= self.size_limit
            && self.original.attr("ret_flags") != Some("2");
        let (desc, ctype) = match (self.kind, whole) {
            (Kind::Failure, true) => ("Undelivered Message", "message/rfc822"),
            (Kind::Failure | Kind::Delay, _) => {
                ("Undelivered Message Headers", "text/rfc822-headers")
            }
            (Kind::Success, _) => ("Message Headers", "text/rfc822-headers"),
        };
        head.push_str(&format!(
            "\n--{boundary}\nContent-Description: {desc}\nContent-Type: {ctype}\n{}\n",
            if eight_bit {
                "Content-Transfer-Encoding: 8bit\n"
            } else {
                ""
            }
        ));
        // Cleanup took the original's away; Postfix puts one back.
        head.push_str(&format!("Return-Path: <{}>\n", self.original.sender));
        // Only the headers of a large message are read (and returned).
        let cap = if whole {
            self.original.content_len
        } else {
            256 * 1024
        };
        let mut original = Vec::new();
        self.original
            .content()?
            .take(cap)
            .read_to_end(&mut original)?;
        if !whole {
            let end = original
                .windows(2)
                .position(|w| w == b"\n\n")
                .map_or(original.len(), |i| i + 1);
            original.truncate(end);
        }
        let tail = format!("\n--{boundary}--\n");
        let mut all = head.into_bytes();
        all.extend_from_slice(&original);
        all.extend_from_slice(tail.as_bytes());
        Ok(all
            .chunks(pfx_ipc::proto::CHUNK)
            .map(<[u8]>::to_vec)
            .collect())
    }

    /// The original's `Message-ID:` value, when it is `<...>`.
    fn message_id(&self) -> Option<String> {
        let mut head = Vec::new();
        self.original
            .content()
            .ok()?
            .take(256 * 1024)
            .read_to_end(&mut head)
            .ok()?;
        let text = String::from_utf8_lossy(&head);
        for line in text.lines().take_while(|l| !l.is_empty()) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            if name.eq_ignore_ascii_case("message-id") {
                let value = value.trim();
                return (value.starts_with('<') && value.ends_with('>')).then(|| value.to_owned());
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn long_lines_wrap_as_postfixs_line_wrap() {
        assert_eq!(wrap("short line", 79, 4), "short line\n");
        let text = "<far@remote.example>: delivery via 127.0.0.1[127.0.0.1]:45695: 250 2.0.0 Ok: queued as FAKE";
        assert_eq!(
            wrap(text, 79, 4),
            "<far@remote.example>: delivery via 127.0.0.1[127.0.0.1]:45695: 250 2.0.0 Ok:\n    queued as FAKE\n"
        );
        assert_eq!(wrap("a b c d", 3, 1), "a b\n c\n d\n");
        let long = "x".repeat(100);
        assert_eq!(
            wrap(&format!("{long} y"), 10, 4),
            format!("{long}\n    y\n")
        );
    }
}
