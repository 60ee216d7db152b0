//! Reading the queue the way `postqueue -p`/`-j` show it: showq(8) serves
//! this to ordinary users, and postqueue reads it directly when it runs with
//! privileges and the mail system is down. It lives here, not in showq, so
//! that neither program depends on the other.
//!
//! Queues are listed in Postfix's order (showq.c): maildrop, active, incoming,
//! deferred, hold; only complete files count. Each recipient not yet done is
//! shown with its last deferral reason (`defer/ID`): recipients without a
//! reason first, then those with one, in the log's order.

use std::path::Path;
use std::time::UNIX_EPOCH;

use tracing::warn;

use crate::file::QueueFile;
use crate::statuslog::{self, Log};
use crate::{Queue, QueueName};

const LISTED: [QueueName; 5] = [
    QueueName::Maildrop,
    QueueName::Active,
    QueueName::Incoming,
    QueueName::Deferred,
    QueueName::Hold,
];

/// A message as the listing shows it (showq sends it to postqueue as a
/// `pfx_ipc::proto::QueueEntry`, field for field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub queue_name: QueueName,
    pub queue_id: String,
    /// Seconds since the epoch.
    pub arrival_time: u64,
    /// Bytes of message content (headers and body).
    pub message_size: u64,
    /// The envelope sender; the null sender as `$empty_address_recipient`.
    pub sender: String,
    /// Recipients not yet done, each with the reason it waits, if any.
    pub recipients: Vec<Pending>,
    /// Marked for forced expiration (`postsuper -e`).
    pub forced_expire: bool,
}

/// A recipient of a [`Message`] not yet done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub address: String,
    pub delay_reason: Option<String>,
}

/// Hands `found` every message, queue by queue, each queue in directory
/// order as Postfix's showq reads it, one message at a time: a queue of a
/// million messages is never held whole. `empty_sender` stands for the
/// null sender (`$empty_address_recipient`). Files that vanish while we
/// look (mail being delivered) are skipped; damaged ones are logged and
/// skipped. `found` returns false to stop.
pub fn each(queue: &Queue, empty_sender: &str, mut found: impl FnMut(Message) -> bool) {
    for q in LISTED {
        for id in queue.ids(q).into_iter().flatten().flatten() {
            let path = queue.path(q, &id);
            match QueueFile::open_if_complete(&path) {
                Ok(None) => {}
                Ok(Some(qf)) => {
                    if !found(entry(queue.root(), q, &id, &qf, empty_sender)) {
                        return;
                    }
                }
                Err(crate::Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => warn!("{}/{id}: {e}", q.as_str()),
            }
        }
    }
}

fn entry(root: &Path, q: QueueName, id: &str, qf: &QueueFile, empty_sender: &str) -> Message {
    let reasons = statuslog::read(root, Log::Defer, id).unwrap_or_default();
    let pending: Vec<&str> = qf.pending().map(|r| r.address.as_str()).collect();
    let mut recipients: Vec<Pending> = pending
        .iter()
        .filter(|a| !reasons.iter().any(|s| s.recipient == **a))
        .map(|a| Pending {
            address: (*a).to_owned(),
            delay_reason: None,
        })
        .collect();
    recipients.extend(
        reasons
            .iter()
            .filter(|s| pending.contains(&s.recipient.as_str()))
            .map(|s| Pending {
                address: s.recipient.clone(),
                delay_reason: Some(s.reason.clone()),
            }),
    );
    Message {
        queue_name: q,
        queue_id: id.to_owned(),
        arrival_time: qf
            .arrival
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        message_size: qf.content_len,
        sender: if qf.sender.is_empty() {
            empty_sender.to_owned()
        } else {
            qf.sender.clone()
        },
        recipients,
        forced_expire: qf.expired,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::file::{Envelope, Writer};
    use crate::statuslog::Status;
    use crate::test_queue as queue;

    fn write(q: &Queue, sender: &str, arrival: u64, rcpts: &[&str]) -> String {
        let at = UNIX_EPOCH + Duration::from_secs(arrival);
        let mut w = Writer::create(q, at, None).unwrap();
        w.envelope(&Envelope {
            filter: None,
            sender: sender.into(),
            recipients: rcpts
                .iter()
                .map(|r| crate::file::NewRecipient::new(*r, None))
                .collect(),
            attrs: vec![],
        })
        .unwrap();
        w.content(b"Subject: x\n\nbody\n").unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn queue_by_queue_in_postfix_order_with_deferral_reasons_last() {
        let (_t, q) = queue();
        let late = write(&q, "", 1_700_000_200, &["a@x"]);
        let early = write(&q, "s@x", 1_700_000_100, &["b@x", "c@x", "d@x"]);
        let held = write(&q, "s@x", 1_700_000_000, &["e@x"]);
        let busy = write(&q, "s@x", 1_700_000_300, &["f@x"]);
        q.move_to(&busy, QueueName::Incoming, QueueName::Active)
            .unwrap();
        q.move_to(&held, QueueName::Incoming, QueueName::Hold)
            .unwrap();
        q.defer_until(&early, QueueName::Incoming, SystemTime::now())
            .unwrap();
        let status = |r: &str, why: &str| Status {
            recipient: r.into(),
            original: None,
            dsn: "4.0.0".into(),
            relay: "none".into(),
            reason: why.into(),
            ..Default::default()
        };
        let log = [status("d@x", "later"), status("b@x", "busy")];
        std::fs::create_dir(q.root().join("defer")).unwrap();
        statuslog::append(q.root(), Log::Defer, &early, &log, false).unwrap();
        // A file without the readiness bit is not a message yet.
        std::fs::write(q.path(QueueName::Incoming, "ABCDEF0123"), b"").unwrap();

        let mut got = Vec::new();
        each(&q, "MAILER-DAEMON", |m| {
            got.push(m);
            true
        });
        let order: Vec<(QueueName, &str)> = got
            .iter()
            .map(|m| (m.queue_name, m.queue_id.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                (QueueName::Active, busy.as_str()),
                (QueueName::Incoming, late.as_str()),
                (QueueName::Deferred, early.as_str()),
                (QueueName::Hold, held.as_str()),
            ]
        );
        assert_eq!(got[1].sender, "MAILER-DAEMON");
        assert_eq!(got[1].arrival_time, 1_700_000_200);
        // The content records' bytes, as Postfix counts the size.
        assert_eq!(got[1].message_size, 20);
        let rcpts: Vec<(&str, Option<&str>)> = got[2]
            .recipients
            .iter()
            .map(|r| (r.address.as_str(), r.delay_reason.as_deref()))
            .collect();
        assert_eq!(
            rcpts,
            [("c@x", None), ("d@x", Some("later")), ("b@x", Some("busy"))]
        );
    }
}
