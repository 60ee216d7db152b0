//! showq(8): lists the queue for `postqueue -p`/`-j` and `mailq`.
//!
//! It runs as `$mail_owner`, so an ordinary user sees the queue through it
//! (postqueue reaches `public/showq` with the setgid group) without being
//! able to read queue files. What it lists is in the queue library
//! (`pfx_queue::listing`), which postqueue also reads directly.

use pfx_ipc::proto::{conversation, QueueEntry, QueueRecipient, ShowqReply};
use pfx_queue::listing::{self, Message};
use pfx_queue::Queue;

fn main() {
    pfx_server::run("showq", |ctx, endpoint| async move {
        pfx_server::serve_channels(
            &ctx,
            endpoint,
            conversation::SHOWQ,
            |cfg, mut ch| async move {
                let queue = Queue::new(cfg.get("queue_directory").unwrap_or_default());
                let empty = cfg
                    .get("empty_address_recipient")
                    .unwrap_or_else(|_| "MAILER-DAEMON".into());
                let entries = tokio::task::block_in_place(|| listing::list(&queue, &empty));
                for e in entries {
                    if ch.send(&ShowqReply::Message(wire(e))).await.is_err() {
                        return;
                    }
                }
                let _ = ch.send(&ShowqReply::End).await;
            },
        )
        .await
    })
}

/// A listed message as it crosses to postqueue.
fn wire(m: Message) -> QueueEntry {
    QueueEntry {
        queue_name: m.queue_name.as_str().to_owned(),
        queue_id: m.queue_id,
        arrival_time: m.arrival_time,
        message_size: m.message_size,
        sender: m.sender,
        recipients: m
            .recipients
            .into_iter()
            .map(|r| QueueRecipient {
                address: r.address,
                delay_reason: r.delay_reason,
            })
            .collect(),
    }
}
