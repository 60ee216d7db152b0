//! pickup(8): feeds mail that local users submitted (sendmail -> postdrop
//! -> `maildrop/`) to cleanup, then removes it from `maildrop/`.
//!
//! It scans `maildrop/` when started, when postdrop wakes it through
//! `public/pickup`, and on master's wakeup timer (master.cf's `60`), so a
//! lost wake-up only delays mail. Maildrop files are written by ordinary
//! users: only complete regular files are taken, their owner is the
//! submitting uid, and a file that does not parse goes to `corrupt/`.
//! A file is removed only after cleanup has committed the message, so a
//! crash at any point delivers it at least once.
//!
//! A queue file `postsuper -r` moved here (owned by the mail system, not
//! readable by others, as Postfix tells them apart) goes through cleanup
//! again as Postfix's pickup passes it: its recipients not yet delivered,
//! with their original addresses and DSN requests, its first arrival time,
//! without the milters that saw it the first time; a content filter it
//! had is not kept (the current `content_filter` applies), and with no
//! recipient left it is removed.
//!
//! Log: `QUEUEID: uid=N from=<sender>`, with cleanup's queue ID, and
//! `orig_id=OLDID` after it for requeued mail.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use pfx_config::Config;
use pfx_ipc::cleanup::{Cleanup, Envelope};
use pfx_ipc::proto::{Origin, Receive};
use pfx_queue::file::QueueFile;
use pfx_queue::{Queue, QueueName};
use tokio::sync::mpsc;
use tracing::{info, warn};

fn main() {
    pfx_server::run("pickup", |ctx, endpoint| async move {
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        let config = ctx.config.clone();
        let scanner = tokio::spawn(async move {
            loop {
                let cfg = config.borrow().clone();
                scan(&cfg).await;
                if rx.recv().await.is_none() {
                    return;
                }
                // Many wake-ups while scanning need only one more scan.
                while rx.try_recv().is_ok() {}
            }
        });
        // Whatever the request, pickup scans maildrop/.
        let served = pfx_server::serve_triggers(&ctx, endpoint, move |bytes, _| {
            let _ = tx.send(());
            bytes.len()
        })
        .await;
        scanner.abort();
        served
    })
}

async fn scan(cfg: &Config) {
    let Ok(dir) = cfg.get("queue_directory") else {
        return;
    };
    // content_filter and receive_override_options, as pickup's own
    // (master.cf -o) settings have them; a bad one stops the scan.
    let receive = match Receive::from_config(cfg) {
        Ok(r) => r,
        Err(e) => return warn!("{e}"),
    };
    let queue = Queue::new(&dir);
    let cleanup = Cleanup::under(queue.root());
    let mut ids = queue.list(QueueName::Maildrop).unwrap_or_default();
    ids.sort();
    for id in ids {
        let path = queue.path(QueueName::Maildrop, &id);
        if let Err(e) = take(&queue, &cleanup, &receive, &id, &path).await {
            warn!("maildrop/{id}: {e}");
        }
    }
}

/// Submits one maildrop file to cleanup and removes it.
async fn take(
    queue: &Queue,
    cleanup: &Cleanup,
    receive: &Receive,
    id: &str,
    path: &Path,
) -> Result<(), String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(_) => return Ok(()), // taken meanwhile
    };
    if !meta.file_type().is_file() {
        let _ = std::fs::remove_file(path);
        return Err("not a regular file: removed".into());
    }
    if meta.mode() & 0o100 == 0 {
        return Ok(()); // postdrop is still writing it
    }
    let uid = meta.uid();
    let requeued = uid == nix::unistd::geteuid().as_raw() && meta.mode() & 0o004 == 0;
    let qf = match QueueFile::open(path).and_then(|qf| qf.verify().map(|()| qf)) {
        Ok(qf) => qf,
        Err(pfx_queue::Error::Corrupt(why)) => {
            let _ = queue.move_to(id, QueueName::Maildrop, QueueName::Corrupt);
            return Err(format!("uid={uid}: {why}: moved to corrupt"));
        }
        Err(e) => return Err(e.to_string()),
    };
    let mut attrs = vec![("uid".to_owned(), uid.to_string())];
    // The full name and sendmail's -V (ENVID) and -R (RET) go on.
    for name in ["sender_fullname", "envelope_id", "ret_flags"] {
        if let Some(v) = qf.attr(name) {
            attrs.push((name.into(), v.to_owned()));
        }
    }
    let recipients: Vec<_> = qf
        .pending()
        .map(|r| pfx_ipc::cleanup::NewRecipient {
            address: r.address.clone(),
            original: r.original.clone(),
            notify: r.dsn_notify,
            orcpt: r.dsn_orcpt.clone(),
        })
        .collect();
    if recipients.is_empty() {
        // Requeued after its last delivery: nothing is left to send.
        std::fs::remove_file(path).map_err(|e| format!("remove: {e}"))?;
        return Err(format!("uid={uid}: no recipients left: removed"));
    }
    let mut receive = receive.clone();
    // As Postfix: milters saw requeued mail when it first arrived, with
    // the SMTP events and macros the queue file cannot reproduce.
    receive.no_milters |= requeued;
    let envelope = Envelope {
        receive,
        sender: qf.sender.clone(),
        recipients,
        attrs,
        origin: Origin::Pickup,
        arrival: requeued.then_some(qf.arrival),
    };
    let content = qf.content().map_err(|e| e.to_string())?;
    let sender = &qf.sender;
    cleanup
        .submit(envelope, pfx_ipc::client::chunks(content), |new_id| {
            if requeued {
                info!("{new_id}: uid={uid} from=<{sender}> orig_id={id}");
            } else {
                info!("{new_id}: uid={uid} from=<{sender}>");
            }
        })
        .await
        .map_err(|e| e.to_string())?;
    std::fs::remove_file(path).map_err(|e| format!("remove: {e}"))
}
