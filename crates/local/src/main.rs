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
use pfx_ipc::Channel;
use pfx_server::Stream;
use tracing::warn;

fn main() {
    pfx_server::run("local", |ctx, endpoint| async move {
        let config = ctx.config.clone();
        pfx_server::serve_stream(&ctx, endpoint, move |stream| {
            let cfg = config.borrow().clone();
            async move {
                let Stream::Unix(s) = stream else { return };
                let mut ch = Channel::new(s);
                if let Err(e) = ch.handshake(conversation::DELIVER).await {
                    return warn!("qmgr handshake: {e}");
                }
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
