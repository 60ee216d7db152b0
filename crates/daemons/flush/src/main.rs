//! flush(8): makes deferred mail eligible for delivery now, for
//! `postqueue -i ID` (one message) and `postqueue -s SITE` (every message
//! with a recipient at SITE, which must be in `$fast_flush_domains`, as with
//! Postfix). A message is moved from `deferred/` back to `incoming/` and qmgr
//! is woken; qmgr keeps the recipients already done. It runs as
//! `$mail_owner`, so ordinary users reach it through `public/flush`.
//!
//! Postfix keeps a log per site to find the messages; postfix-rs reads the
//! deferred queue instead (its envelope records are short).

use pfx_address::DomainList;
use pfx_config::Config;
use pfx_ipc::proto::{conversation, endpoint, trigger, FlushReply, FlushRequest};
use pfx_queue::file::QueueFile;
use pfx_queue::{Queue, QueueName};
use tracing::warn;

fn main() {
    pfx_server::run("flush", |ctx, endpoint| async move {
        pfx_server::serve_channels(
            &ctx,
            endpoint,
            conversation::FLUSH,
            |cfg, mut ch| async move {
                let Ok(req) = ch.expect::<FlushRequest>().await else {
                    return;
                };
                let queue = Queue::new(cfg.get("queue_directory").unwrap_or_default());
                let reply = tokio::task::block_in_place(|| handle(&cfg, &queue, &req));
                if matches!(reply, FlushReply::Ok) {
                    let qmgr = queue.root().join(endpoint::QMGR);
                    let _ = pfx_ipc::client::trigger(&qmgr, trigger::INCOMING).await;
                }
                let _ = ch.send(&reply).await;
            },
        )
        .await
    })
}

fn handle(cfg: &Config, queue: &Queue, req: &FlushRequest) -> FlushReply {
    match req {
        FlushRequest::SendFile { queue_id } => {
            if pfx_queue::is_queue_id(queue_id) {
                requeue(queue, queue_id);
            }
            FlushReply::Ok
        }
        FlushRequest::SendSite { site } => {
            let domains = match cfg.list("fast_flush_domains") {
                Ok(d) => DomainList::new(&d),
                Err(e) => {
                    return FlushReply::Failed {
                        reason: e.to_string(),
                    }
                }
            };
            if !domains.contains(site) {
                return FlushReply::NotConfigured;
            }
            for id in queue.list(QueueName::Deferred).unwrap_or_default() {
                let Ok(qf) = QueueFile::open(&queue.path(QueueName::Deferred, &id)) else {
                    continue;
                };
                if qf
                    .pending()
                    .any(|r| pfx_address::split(&r.address).1.eq_ignore_ascii_case(site))
                {
                    requeue(queue, &id);
                }
            }
            FlushReply::Ok
        }
    }
}

/// Moves a deferred message to incoming, where qmgr takes it at once.
fn requeue(queue: &Queue, id: &str) {
    match queue.move_to(id, QueueName::Deferred, QueueName::Incoming) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!("{id}: move to incoming: {e}"),
    }
}
