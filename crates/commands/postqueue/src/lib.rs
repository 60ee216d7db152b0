//! The two queue listings of postqueue(1), byte for byte as Postfix prints
//! them: `-p` (the `mailq` report) and `-j` (one JSON object per message).

use std::time::{Duration, UNIX_EPOCH};

use pfx_ipc::proto::QueueEntry;

/// Where a recipient's address starts: past the ID, size and time columns.
const RECIPIENT_INDENT: usize = 41;
/// A deferral reason is right-aligned to end at this column (plus its parentheses).
const REASON_COLUMN: usize = 76;

/// `postqueue -p` a message at a time, so that a queue of a million
/// messages is printed without being held whole.
#[derive(Debug, Default)]
pub struct Report {
    messages: usize,
    bytes: u64,
}

impl Report {
    /// The lines of one message (the column header before the first).
    pub fn entry(&mut self, e: &QueueEntry) -> String {
        let mut out = if self.messages == 0 {
            format!(
                "{:<11} {:>7} {:<20} {}\n",
                "-Queue ID-", "--Size--", "----Arrival Time----", "-Sender/Recipient-------"
            )
        } else {
            "\n".to_owned()
        };
        self.messages += 1;
        self.bytes += e.message_size;
        let mut mark = match e.queue_name.as_str() {
            "active" => "*",
            "hold" => "!",
            _ => "",
        }
        .to_owned();
        // Marked by postsuper -e, as Postfix's showq shows it.
        if e.forced_expire {
            mark.push('#');
        }
        let arrival = pfx_sys::time::asctime(UNIX_EPOCH + Duration::from_secs(e.arrival_time));
        let arrival: String = format!("{arrival:<20}").chars().take(20).collect();
        out.push_str(&format!(
            "{:<11} {:>7} {arrival} {}\n",
            format!("{}{mark}", e.queue_id),
            e.message_size,
            e.sender
        ));
        let mut last_reason: Option<&str> = None;
        for r in &e.recipients {
            if let Some(why) = r.delay_reason.as_deref() {
                if last_reason != Some(why) {
                    let pad = REASON_COLUMN.saturating_sub(why.chars().count());
                    out.push_str(&format!("{:pad$}({why})\n", ""));
                }
            }
            last_reason = r.delay_reason.as_deref();
            out.push_str(&format!("{:RECIPIENT_INDENT$}{}\n", "", r.address));
        }
        out
    }

    /// The last line: the totals, or that the queue is empty.
    pub fn end(&self) -> String {
        let n = self.messages;
        if n == 0 {
            return "Mail queue is empty\n".into();
        }
        format!(
            "\n-- {} Kbytes in {n} Request{}.\n",
            self.bytes / 1024,
            if n == 1 { "" } else { "s" }
        )
    }
}

/// One message's line of `postqueue -j`.
pub fn json_line(e: &QueueEntry) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let rcpts: Vec<String> = e
        .recipients
        .iter()
        .map(|r| match &r.delay_reason {
            Some(why) => format!(
                "{{\"address\": {}, \"delay_reason\": {}}}",
                q(&r.address),
                q(why)
            ),
            None => format!("{{\"address\": {}}}", q(&r.address)),
        })
        .collect();
    format!(
        "{{\"queue_name\": {}, \"queue_id\": {}, \"arrival_time\": {}, \"message_size\": {}, \"forced_expire\": {}, \"sender\": {}, \"recipients\": [{}]}}\n",
        q(&e.queue_name),
        q(&e.queue_id),
        e.arrival_time,
        e.message_size,
        e.forced_expire,
        q(&e.sender),
        rcpts.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use pfx_ipc::proto::QueueRecipient;

    /// `postqueue -p` of these entries, as main prints it.
    fn report(entries: &[QueueEntry]) -> String {
        let mut r = Report::default();
        let mut out: String = entries.iter().map(|e| r.entry(e)).collect();
        out.push_str(&r.end());
        out
    }

    /// `postqueue -j` of these entries.
    fn json(entries: &[QueueEntry]) -> String {
        entries.iter().map(json_line).collect()
    }

    fn entry(queue: &str, id: &str, rcpts: &[(&str, Option<&str>)]) -> QueueEntry {
        QueueEntry {
            queue_name: queue.into(),
            queue_id: id.into(),
            arrival_time: 1_795_595_371,
            message_size: 269,
            sender: "hadoop@ywnds.com".into(),
            recipients: rcpts
                .iter()
                .map(|(a, r)| QueueRecipient {
                    address: (*a).into(),
                    delay_reason: r.map(Into::into),
                })
                .collect(),
            forced_expire: false,
        }
    }

    #[test]
    fn a_message_marked_for_expiration_has_postfixs_mark() {
        let mut held = entry("hold", "A98AD98E088", &[("x@example.test", None)]);
        held.forced_expire = true;
        let mut deferred = entry("deferred", "A2F6898E080", &[("y@example.test", None)]);
        deferred.forced_expire = true;
        let text = report(&[held.clone(), deferred]);
        assert!(text.contains("\nA98AD98E088!#     269 "), "{text}");
        assert!(text.contains("\nA2F6898E080#     269 "), "{text}");
        assert!(json(&[held]).contains("\"message_size\": 269, \"forced_expire\": true, "));
    }

    #[test]
    fn report_has_postfix_columns() {
        let why = "connect to 127.0.0.1[127.0.0.1]:2799: Connection refused";
        let text = report(&[
            entry(
                "deferred",
                "A2F6898E080",
                &[
                    ("other@example.test", Some(why)),
                    ("someone@example.test", Some(why)),
                ],
            ),
            entry("hold", "A98AD98E088", &[("x@example.test", None)]),
            entry("active", "B98AD98E08", &[("y@example.test", None)]),
        ]);
        let time = pfx_sys::time::asctime(UNIX_EPOCH + Duration::from_secs(1_795_595_371));
        let time = &time[..19];
        let expected = format!(
            "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n\
             A2F6898E080     269 {time}  hadoop@ywnds.com\n\
             \x20                   (connect to 127.0.0.1[127.0.0.1]:2799: Connection refused)\n\
             \x20                                        other@example.test\n\
             \x20                                        someone@example.test\n\
             \n\
             A98AD98E088!     269 {time}  hadoop@ywnds.com\n\
             \x20                                        x@example.test\n\
             \n\
             B98AD98E08*     269 {time}  hadoop@ywnds.com\n\
             \x20                                        y@example.test\n\
             \n\
             -- 0 Kbytes in 3 Requests.\n"
        );
        assert_eq!(text, expected);
        assert_eq!(report(&[]), "Mail queue is empty\n");
        assert!(report(&[entry("incoming", "C1", &[])]).ends_with("\n-- 0 Kbytes in 1 Request.\n"));
    }

    #[test]
    fn json_has_postfix_fields() {
        let text = json(&[entry(
            "deferred",
            "A2F6898E080",
            &[
                ("a\"b@example.test", Some("451 try later")),
                ("c@example.test", None),
            ],
        )]);
        assert_eq!(
            text,
            "{\"queue_name\": \"deferred\", \"queue_id\": \"A2F6898E080\", \"arrival_time\": 1795595371, \"message_size\": 269, \"forced_expire\": false, \"sender\": \"hadoop@ywnds.com\", \"recipients\": [{\"address\": \"a\\\"b@example.test\", \"delay_reason\": \"451 try later\"}, {\"address\": \"c@example.test\"}]}\n"
        );
    }
}
