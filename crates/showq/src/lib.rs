//! Reading the queue the way `postqueue -p`/`-j` show it: showq(8) serves
//! this to ordinary users, and postqueue uses it directly when it runs with
//! privileges and the mail system is down.
//!
//! Queues are listed in Postfix's order: maildrop, incoming, active,
//! deferred, hold; only complete files count. Each recipient not yet done is
//! shown with its last deferral reason (`defer/ID`): recipients without a
//! reason first, then those with one, in the log's order.

use std::path::Path;
use std::time::UNIX_EPOCH;

use pfx_ipc::proto::{QueueEntry, QueueRecipient};
use pfx_queue::file::QueueFile;
use pfx_queue::statuslog::{self, Log};
use pfx_queue::{Queue, QueueName};
use tracing::warn;

const LISTED: [QueueName; 5] = [
    QueueName::Maildrop,
    QueueName::Incoming,
    QueueName::Active,
    QueueName::Deferred,
    QueueName::Hold,
];

/// Every message in the queue, queue by queue, oldest first within each.
/// `empty_sender` stands for the null sender (`$empty_address_recipient`).
pub fn list(queue: &Queue, empty_sender: &str) -> Vec<QueueEntry> {
    let mut out = Vec::new();
    for q in LISTED {
        let mut found = entries(queue, q, empty_sender);
        found.sort_by(|a, b| (a.arrival_time, &a.queue_id).cmp(&(b.arrival_time, &b.queue_id)));
        out.extend(found);
    }
    out
}

/// The complete messages in one queue. Files that vanish while we look (mail
/// being delivered) are skipped; damaged ones are logged and skipped.
fn entries(queue: &Queue, q: QueueName, empty_sender: &str) -> Vec<QueueEntry> {
    let mut out = Vec::new();
    for id in queue.list(q).unwrap_or_default() {
        let path = queue.path(q, &id);
        if !QueueFile::is_complete(&path).unwrap_or(false) {
            continue;
        }
        match QueueFile::open(&path) {
            Ok(qf) => out.push(entry(queue.root(), q, &id, &qf, empty_sender)),
            Err(pfx_queue::Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!("{}/{id}: {e}", q.as_str()),
        }
    }
    out
}

fn entry(root: &Path, q: QueueName, id: &str, qf: &QueueFile, empty_sender: &str) -> QueueEntry {
    let reasons = statuslog::read(root, Log::Defer, id).unwrap_or_default();
    let pending: Vec<&str> = qf.pending().map(|r| r.address.as_str()).collect();
    let mut recipients: Vec<QueueRecipient> = pending
        .iter()
        .filter(|a| !reasons.iter().any(|s| s.recipient == **a))
        .map(|a| QueueRecipient {
            address: (*a).to_owned(),
            delay_reason: None,
        })
        .collect();
    recipients.extend(
        reasons
            .iter()
            .filter(|s| pending.contains(&s.recipient.as_str()))
            .map(|s| QueueRecipient {
                address: s.recipient.clone(),
                delay_reason: Some(s.reason.clone()),
            }),
    );
    QueueEntry {
        queue_name: q.as_str().to_owned(),
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
    }
}
