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
                // Read on the blocking pool, sent as read, a batch at a
                // time (one wake-up and one write per batch, as Postfix's
                // showq writes through a buffer): a deep queue is never
                // held whole.
                let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<listing::Message>>(2);
                let reader = tokio::task::spawn_blocking(move || {
                    let mut batch = Vec::with_capacity(BATCH);
                    listing::each(&queue, &empty, |m| {
                        batch.push(m);
                        batch.len() < BATCH
                            || tx
                                .blocking_send(std::mem::replace(
                                    &mut batch,
                                    Vec::with_capacity(BATCH),
                                ))
                                .is_ok()
                    });
                    if !batch.is_empty() {
                        let _ = tx.blocking_send(batch);
                    }
                });
                while let Some(batch) = rx.recv().await {
                    let queued = batch
                        .into_iter()
                        .try_for_each(|m| ch.queue(&ShowqReply::Message(m.into())));
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
