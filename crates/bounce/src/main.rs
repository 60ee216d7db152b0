//! bounce(8): turns a message's `bounce/ID` log into a non-delivery notice.
//!
//! The notice is RFC 3464 `multipart/report; report-type=delivery-status`:
//! a human-readable part, a `message/delivery-status` part with the
//! per-message and per-recipient fields, and the original message
//! (`message/rfc822`, or only its headers when it is larger than
//! `bounce_size_limit`). It goes from `MAILER-DAEMON` with the null sender,
//! through cleanup, as a new message. A message with the null sender (a
//! bounce that bounced) is reported to `$2bounce_notice_recipient` instead,
//! from `double-bounce`; if that report fails in turn it is dropped: never a
//! bounce loop. Log: `ID: sender non-delivery notification: NEWID`.

mod notice;

use std::path::Path;

use pfx_config::Config;
use pfx_ipc::cleanup::{Cleanup, Envelope};
use pfx_ipc::proto::{conversation, BounceReply, BounceRequest, Origin};
use pfx_queue::file::QueueFile;
use pfx_queue::statuslog::{self, Log};
use pfx_queue::Queue;
use tracing::{info, warn};

fn main() {
    pfx_server::run("bounce", |ctx, endpoint| async move {
        pfx_server::serve_channels(
            &ctx,
            endpoint,
            conversation::BOUNCE,
            |cfg, mut ch| async move {
                let Ok(req) = ch.expect::<BounceRequest>().await else {
                    return;
                };
                let reply = match notify(&cfg, &req).await {
                    Ok(notice_id) => BounceReply::Sent { notice_id },
                    Err(reason) => {
                        warn!("{}: {reason}", req.queue_id);
                        BounceReply::Failed { reason }
                    }
                };
                let _ = ch.send(&reply).await;
            },
        )
        .await
    })
}

async fn notify(cfg: &Config, req: &BounceRequest) -> Result<Option<String>, String> {
    let e = |x: pfx_config::Error| x.to_string();
    let queue_dir = cfg.get("queue_directory").map_err(e)?;
    let queue = Queue::new(&queue_dir);
    let qf = QueueFile::open(&queue.path(req.queue, &req.queue_id)).map_err(|x| x.to_string())?;
    let failed = statuslog::read(Path::new(&queue_dir), Log::Bounce, &req.queue_id)
        .map_err(|x| x.to_string())?;
    if failed.is_empty() {
        return Ok(None);
    }
    let myorigin = cfg.get("myorigin").map_err(e)?;
    let double_bounce_name = cfg.get("double_bounce_sender").map_err(e)?;
    let double_bounce = format!("{double_bounce_name}@{myorigin}");
    let (to, from, kind) = if qf.sender.is_empty() {
        (
            cfg.get("2bounce_notice_recipient").map_err(e)?,
            double_bounce.clone(),
            "postmaster",
        )
    } else if qf.sender.eq_ignore_ascii_case(&double_bounce) || qf.sender == double_bounce_name {
        info!(
            "{}: postmaster non-delivery notification discarded",
            req.queue_id
        );
        statuslog::remove(Path::new(&queue_dir), Log::Bounce, &req.queue_id);
        return Ok(None);
    } else {
        (qf.sender.clone(), String::new(), "sender")
    };
    let n = notice::Notice {
        queue_id: &req.queue_id,
        myhostname: &cfg.get("myhostname").map_err(e)?,
        to: &to,
        failed: &failed,
        original: &qf,
        size_limit: u64::try_from(cfg.int("bounce_size_limit").map_err(e)?).unwrap_or(50_000),
    };
    let chunks = n.render().map_err(|x| x.to_string())?;
    let attrs = vec![
        ("origin".into(), "bounce".into()),
        ("bounced_id".into(), req.queue_id.clone()),
    ];
    let envelope = Envelope {
        sender: from,
        recipients: vec![(to, None)],
        attrs,
        origin: Origin::Internal,
    };
    let id = Cleanup::under(Path::new(&queue_dir))
        .submit(envelope, chunks.into_iter().map(Ok), |_| {})
        .await
        .map_err(|e| e.to_string())?;
    info!("{}: {kind} non-delivery notification: {id}", req.queue_id);
    statuslog::remove(Path::new(&queue_dir), Log::Bounce, &req.queue_id);
    Ok(Some(id))
}
