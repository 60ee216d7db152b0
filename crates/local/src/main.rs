//! local(8): delivers to local recipients.
//!
//! For each recipient: `alias_maps` first (targets may be local names,
//! remote addresses, `:include:` files, `/file` and `|command` where
//! `allow_mail_to_files`/`allow_mail_to_commands` permit), then the user's
//! mailbox: `$home_mailbox` under the home directory (`Maildir/` style when it
//! ends in `/`, else an mbox file), or `$mail_spool_directory/USER` when
//! `home_mailbox` is empty. Remote alias targets are forwarded as a new
//! message through cleanup. Started as root, mailbox writes happen with the
//! recipient's file-system ids. Logs Postfix's `status=sent (delivered to
//! maildir)` lines.

mod deliver;
mod mailbox;
mod privs;

use pfx_ipc::proto::{conversation, DeliveryReply, DeliveryRequest};
use tracing::warn;

fn main() {
    pfx_server::run("local", |ctx, endpoint| async move {
        pfx_server::serve_channels(&ctx, endpoint, conversation::DELIVER, |cfg, mut ch| {
            async move {
                // qmgr reuses its connections: serve requests until it closes this one.
                loop {
                    let req: DeliveryRequest = match ch.recv().await {
                        Ok(Some(r)) => r,
                        Ok(None) => return,
                        Err(e) => return warn!("read delivery request: {e}"),
                    };
                    let statuses = deliver::request(&cfg, &req).await;
                    if let Err(e) = ch.send(&DeliveryReply { statuses }).await {
                        return warn!("{}: reply to qmgr: {e}", req.queue_id);
                    }
                }
            }
        })
        .await
    })
}
