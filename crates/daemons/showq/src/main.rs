//! showq(8): lists the queue for `postqueue -p`/`-j` and `mailq`.
//!
//! It runs as `$mail_owner`, so an ordinary user sees the queue through it
//! (postqueue reaches `public/showq` with the setgid group) without being
//! able to read queue files. What it lists is in the queue library
//! (`pfx_queue::listing`), which postqueue also reads directly.

use pfx_ipc::proto::{conversation, ShowqReply};
use pfx_queue::listing;
use pfx_queue::Queue;

/// Messages sent in one write at most.
const BATCH: usize = 64;

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
                // Read on the blocking pool, sent as read: a deep queue is
                // never held whole.
                let (tx, mut rx) = tokio::sync::mpsc::channel(64);
                let reader = tokio::task::spawn_blocking(move || {
                    listing::each(&queue, &empty, |m| tx.blocking_send(m).is_ok());
                });
                while let Some(m) = rx.recv().await {
                    // What the reader has ready goes in one write, as
                    // Postfix's showq writes through a buffer.
                    let mut queued = ch.queue(&ShowqReply::Message(m.into()));
                    for _ in 1..BATCH {
                        let Ok(m) = rx.try_recv() else { break };
                        queued = queued.and_then(|()| ch.queue(&ShowqReply::Message(m.into())));
                    }
                    let sent = match queued {
                        Ok(()) => ch.flush().await,
                        Err(e) => Err(e),
                    };
                    if sent.is_err() {
                        // The reader stops at its next message.
                        drop(rx);
                        let _ = reader.await;
                        return;
                    }
                }
                let _ = reader.await;
                let _ = ch.send(&ShowqReply::End).await;
            },
        )
        .await
    })
}
