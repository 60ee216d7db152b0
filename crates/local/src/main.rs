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
use std::sync::Arc;

use tracing::warn;

fn main() {
    pfx_server::run("local", |ctx, endpoint| async move {
        let tables: Arc<pfx_server::PerConfig<deliver::Tables>> = Arc::default();
        pfx_server::serve_channels(&ctx, endpoint, conversation::DELIVER, move |cfg, mut ch| {
            let tables = tables.clone();
            async move {
                let tables = match tables.get(cfg, deliver::Tables::new) {
                    Ok(t) => t,
                    Err(e) => return warn!("configuration: {e}"),
                };
                // qmgr reuses its connections: serve requests until it closes this one.
                loop {
                    let req: DeliveryRequest = match ch.recv().await {
                        Ok(Some(r)) => r,
                        Ok(None) => return,
                        Err(e) => return warn!("read delivery request: {e}"),
                    };
                    let statuses = deliver::request(&tables, &req).await;
                    if let Err(e) = ch.send(&DeliveryReply { statuses }).await {
                        return warn!("{}: reply to qmgr: {e}", req.queue_id);
                    }
                }
            }
        })
        .await
    })
}
