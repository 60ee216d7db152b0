//! showq(8): lists the queue for `postqueue -p`/`-j` and `mailq`.
//!
//! It runs as `$mail_owner`, so an ordinary user sees the queue through it
//! (postqueue reaches `public/showq` with the setgid group) without being
//! able to read queue files. What it lists is in the queue library
//! (`pfx_queue::listing`), which postqueue also reads directly.

use pfx_ipc::proto::{conversation, ShowqReply};
use pfx_queue::listing;
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
                    if ch.send(&ShowqReply::Message(e.into())).await.is_err() {
                        return;
                    }
                }
                let _ = ch.send(&ShowqReply::End).await;
            },
        )
        .await
    })
}
