//! bounce(8): turns a message's `bounce/ID` log into a non-delivery notice,
//! and its `trace/ID` log (recipients that asked for NOTIFY=SUCCESS) into a
//! success notice (`Successful Mail Delivery Report`, the headers only
//! returned; log: `ID: sender delivery status notification: NEWID`).
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

use std::path::PathBuf;
use std::sync::Arc;

use notice::Kind;
use pfx_config::{BuildError, Config};
use pfx_ipc::cleanup::{Cleanup, Envelope};
use pfx_ipc::proto::{conversation, BounceReply, BounceRequest, Origin};
use pfx_queue::file::notify;
use pfx_queue::file::QueueFile;
use pfx_queue::statuslog::{self, Log};
use pfx_queue::Queue;
use tracing::{info, warn};

/// bounce's view of main.cf, built once per configuration.
struct Settings {
    queue: Queue,
    cleanup: Cleanup,
    myhostname: String,
    mail_name: String,
    /// `double_bounce_sender`, and it at `$myorigin`.
    double_bounce_name: String,
    double_bounce: String,
    /// Who gets notices about mail from the null sender.
    postmaster: String,
    /// `bounce_size_limit`: how much of the original a notice returns.
    size_limit: u64,
    /// `delay_warning_time` and `maximal_queue_lifetime`, for the delay
    /// warning's text.
    warn_time: std::time::Duration,
    lifetime: std::time::Duration,
    /// `header_from_format = standard`.
    from_standard: bool,
    /// `enable_threaded_bounces`.
    threaded: bool,
    /// `smtputf8_enable`: notices are 8bit MIME.
    smtputf8: bool,
}

impl Settings {
    fn new(cfg: Arc<Config>) -> Result<Self, BuildError> {
        let queue_dir = PathBuf::from(cfg.get("queue_directory")?);
        let double_bounce_name = cfg.get("double_bounce_sender")?;
        Ok(Self {
            cleanup: Cleanup::under(&queue_dir),
            queue: Queue::new(queue_dir),
            myhostname: cfg.get("myhostname")?,
            mail_name: cfg.get("mail_name")?,
            double_bounce: format!("{double_bounce_name}@{}", cfg.get("myorigin")?),
            double_bounce_name,
            postmaster: cfg.get("2bounce_notice_recipient")?,
            size_limit: cfg.count("bounce_size_limit")?,
            warn_time: cfg.time("delay_warning_time")?,
            lifetime: cfg.time("maximal_queue_lifetime")?,
            from_standard: match cfg.get("header_from_format")?.as_str() {
                "standard" => true,
                "obsolete" => false,
                other => {
                    return Err(format!("invalid setting: \"header_from_format = {other}\"").into())
                }
            },
            threaded: cfg.bool("enable_threaded_bounces")?,
            smtputf8: cfg.bool("smtputf8_enable")?,
        })
    }
}

fn main() {
    pfx_server::run("bounce", |ctx, endpoint| async move {
        let settings = Arc::new(pfx_server::PerConfig::default());
        pfx_server::serve_channels(&ctx, endpoint, conversation::BOUNCE, move |cfg, mut ch| {
            let settings = settings.clone();
            async move {
                let Ok(req) = ch.expect::<BounceRequest>().await else {
                    return;
                };
                let st = match settings.get(cfg, Settings::new) {
                    Ok(st) => st,
                    Err(e) => {
                        let reason = format!("configuration: {e}");
                        warn!("{reason}");
                        let _ = ch.send(&BounceReply::Failed { reason }).await;
                        return;
                    }
                };
                let reply = match notify(&st, &req).await {
                    Ok(notice_id) => BounceReply::Sent { notice_id },
                    Err(reason) => {
                        warn!("{}: {reason}", req.queue_id);
                        BounceReply::Failed { reason }
                    }
                };
                let _ = ch.send(&reply).await;
            }
        })
        .await
    })
}

async fn notify(st: &Settings, req: &BounceRequest) -> Result<Option<String>, String> {
    let queue_dir = st.queue.root();
    let qf =
        QueueFile::open(&st.queue.path(req.queue, &req.queue_id)).map_err(|x| x.to_string())?;
    let kind = req.kind;
    let log = match kind {
        Kind::Failure => Log::Bounce,
        Kind::Success => Log::Trace,
        Kind::Delay => Log::Defer,
    };
    // The defer log stays: it is postqueue's, and the message waits on.
    let done = || {
        if kind != Kind::Delay {
            statuslog::remove(queue_dir, log, &req.queue_id);
        }
    };
    let mut statuses = statuslog::read(queue_dir, log, &req.queue_id).map_err(|x| x.to_string())?;
    // Recipients whose NOTIFY leaves out FAILURE (DELAY) get no such notice.
    match kind {
        Kind::Failure => statuses.retain(|s| notify::wants(s.notify, notify::FAILURE)),
        // Only recipients still waiting: the defer log keeps earlier tries.
        Kind::Delay => statuses.retain(|s| {
            notify::wants(s.notify, notify::DELAY) && qf.pending().any(|r| r.address == s.recipient)
        }),
        Kind::Success => {}
    }
    if statuses.is_empty() {
        done();
        return Ok(None);
    }
    let (to, from, whom) = if qf.sender.is_empty() {
        if kind != Kind::Failure {
            // As Postfix: no success notice or delay warning about a bounce.
            if kind == Kind::Success {
                info!(
                    "{}: not sending trace/success notification for single-bounce message",
                    req.queue_id
                );
            }
            done();
            return Ok(None);
        }
        (
            st.postmaster.clone(),
            st.double_bounce.clone(),
            "postmaster",
        )
    } else if qf.sender.eq_ignore_ascii_case(&st.double_bounce)
        || qf.sender == st.double_bounce_name
    {
        match kind {
            Kind::Success => info!(
                "{}: not sending trace/success notification for double-bounce message",
                req.queue_id
            ),
            Kind::Failure => info!(
                "{}: postmaster non-delivery notification discarded",
                req.queue_id
            ),
            Kind::Delay => {}
        }
        done();
        return Ok(None);
    } else {
        (qf.sender.clone(), String::new(), "sender")
    };
    let n = notice::Notice {
        kind,
        warn_time: st.warn_time,
        lifetime: st.lifetime,
        queue_id: &req.queue_id,
        myhostname: &st.myhostname,
        to: &to,
        recipients: &statuses,
        original: &qf,
        size_limit: st.size_limit,
        from_standard: st.from_standard,
        threaded: st.threaded,
        // As Postfix's bounce: 8bit with SMTPUTF8 on, else the original's.
        encoding: if st.smtputf8 {
            Some("8bit")
        } else {
            qf.attr("encoding").filter(|e| *e == "8bit" || *e == "7bit")
        },
    };
    let chunks = n.render().map_err(|x| x.to_string())?;
    let attrs = vec![
        ("origin".into(), "bounce".into()),
        ("bounced_id".into(), req.queue_id.clone()),
    ];
    let envelope = Envelope {
        receive: Default::default(),
        arrival: None,
        sender: from,
        recipients: vec![pfx_ipc::cleanup::NewRecipient::new(to, None)],
        attrs,
        origin: Origin::Internal,
    };
    // As Postfix's post_mail: `Received: by` with the notice's own queue
    // ID, and `Date:`, first. The ID is known once cleanup has started the
    // file; the content is taken after that.
    let head = std::sync::Mutex::new(Vec::new());
    let date = pfx_sys::time::rfc2822(std::time::SystemTime::now());
    let started = |id: &str| {
        *head.lock().unwrap_or_else(|e| e.into_inner()) = format!(
            "Received: by {} ({})\n\tid {id}; {date}\nDate: {date}\n",
            st.myhostname, st.mail_name
        )
        .into_bytes();
    };
    let content = std::iter::once_with(|| {
        std::mem::take(&mut *head.lock().unwrap_or_else(|e| e.into_inner()))
    })
    .chain(chunks)
    .map(Ok);
    let id = st
        .cleanup
        .submit(envelope, content, started)
        .await
        .map_err(|e| e.to_string())?;
    match kind {
        Kind::Failure => info!("{}: {whom} non-delivery notification: {id}", req.queue_id),
        Kind::Success => info!(
            "{}: sender delivery status notification: {id}",
            req.queue_id
        ),
        Kind::Delay => info!("{}: sender delay notification: {id}", req.queue_id),
    }
    done();
    Ok(Some(id))
}
