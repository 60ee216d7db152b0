//! One delivery request: each recipient to its virtual mailbox, with
//! Postfix's statuses, texts and log lines (virtual's mailbox.c,
//! maildir.c, unknown.c).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use pfx_config::{BuildError, Config};
use pfx_ipc::proto::{DeliveryRecipient, DeliveryRequest};
use pfx_mailbox::{Limit, Locks, MboxOptions, Message};
use pfx_maillog::delivery::Outcome;
use pfx_maps::passwd::Passwd;
use pfx_maps::MapList;
use pfx_queue::file::QueueFile;
use pfx_queue::Queue;
use tracing::{info, warn};

use crate::lookup::{Lookup, Mailbox, Tables};

/// virtual's view of one configuration version.
pub(crate) struct Settings {
    queue_dir: PathBuf,
    tables: Tables,
    /// `virtual_mailbox_limit`; 0: none.
    limit: u64,
    locks: Locks,
    /// `strict_mailbox_ownership`.
    strict_owner: bool,
    /// The master.cf service name: Postfix's `relay=` for this agent.
    relay: String,
}

impl Settings {
    /// Refuses what Postfix's virtual refuses to run with: a relative
    /// `virtual_mailbox_base`, `virtual_minimum_uid` below 1, an unknown
    /// lock name, and a mailbox limit below `message_size_limit` (a message
    /// could then never be delivered, so it would be tried again forever).
    pub(crate) fn new(cfg: Arc<Config>) -> Result<Self, BuildError> {
        let base = cfg.get("virtual_mailbox_base")?;
        if !base.starts_with('/') {
            return Err(
                format!("do not specify relative pathname: virtual_mailbox_base = {base}").into(),
            );
        }
        let minimum_uid = cfg.int("virtual_minimum_uid")?;
        if minimum_uid < 1 {
            return Err(
                format!("invalid virtual_minimum_uid parameter value {minimum_uid} < 1").into(),
            );
        }
        let limit: u64 = cfg.count("virtual_mailbox_limit")?;
        let message_limit: u64 = cfg.count("message_size_limit")?;
        if limit > 0 && message_limit == 0 {
            return Err("configuration error: virtual_mailbox_limit is limited but message_size_limit is unlimited".into());
        }
        if limit > 0 && limit < message_limit {
            return Err(
                "configuration error: virtual_mailbox_limit is smaller than message_size_limit"
                    .into(),
            );
        }
        let passwd = Passwd::new(None);
        let maps = |name: &str| -> Result<MapList, BuildError> {
            Ok(MapList::parse(&cfg.list(name)?, &passwd)?)
        };
        let service = cfg.get("service_name").unwrap_or_default();
        Ok(Self {
            queue_dir: cfg.get("queue_directory")?.into(),
            tables: Tables {
                mailbox: maps("virtual_mailbox_maps")?,
                uid: maps("virtual_uid_maps")?,
                gid: maps("virtual_gid_maps")?,
                base,
                minimum_uid,
                delimiters: cfg.get("recipient_delimiter")?,
                myorigin: cfg.get("myorigin")?,
                mydestination: pfx_address::DomainList::new(&cfg.list("mydestination")?),
            },
            limit,
            locks: Locks::parse(&cfg.get("virtual_mailbox_lock")?)?,
            strict_owner: cfg.bool("strict_mailbox_ownership")?,
            relay: if service.is_empty() {
                "virtual".into()
            } else {
                service
            },
        })
    }

    fn sent(&self, text: &str) -> Outcome {
        Outcome::sent(&self.relay, text)
    }

    /// A failure: deferred for a 4.x.x status, bounced otherwise.
    fn failed(&self, dsn: &str, reason: impl Into<String>) -> Outcome {
        Outcome::failed(dsn.starts_with('4'), dsn, &self.relay, reason)
    }
}

/// Delivers every recipient of the request and logs each outcome.
pub(crate) async fn request(st: &Arc<Settings>, req: &DeliveryRequest) -> Vec<Outcome> {
    let start = SystemTime::now();
    let path = Queue::new(&st.queue_dir).path(req.queue, &req.queue_id);
    // The file work blocks this connection's own thread (and switches its
    // file-system ids, which are per thread): see serve_deliveries_on_threads.
    let work = QueueFile::open_for_delivery(&path)
        .map_err(|e| e.to_string())
        .map(|qf| {
            req.recipients
                .iter()
                .map(|r| recipient(st, &qf, req, r))
                .collect::<Vec<_>>()
        });
    let statuses = match work {
        Ok(s) => s,
        Err(e) => {
            warn!("{}: {e}", req.queue_id);
            let v = st.failed("4.3.0", e);
            req.recipients.iter().map(|_| v.clone()).collect()
        }
    };
    for (r, v) in req.recipients.iter().zip(&statuses) {
        let t = req.times(start, start);
        info!(
            "{}: {}",
            req.queue_id,
            v.line(&r.address, r.original.as_deref(), t)
        );
    }
    statuses
}

/// One recipient: its mailbox, an unknown user, or trouble.
fn recipient(
    st: &Settings,
    qf: &QueueFile,
    req: &DeliveryRequest,
    r: &DeliveryRecipient,
) -> Outcome {
    // Every decision is made with the address folded to lower case.
    let user = r.address.to_lowercase();
    match st.tables.lookup(&user) {
        Lookup::Found(mailbox) => deliver(st, qf, req, r, &mailbox),
        Lookup::Unknown => st.failed("5.1.1", format!("unknown user: \"{user}\"")),
        Lookup::Trouble(warning) => {
            warn!("{warning}");
            st.failed("4.3.5", "mail system configuration error")
        }
    }
}

/// The delivery headers Postfix's virtual prepends.
fn prepend(sender: &str, r: &DeliveryRecipient) -> String {
    let original = r.original.as_deref().unwrap_or(&r.address);
    format!(
        "Return-Path: <{sender}>\nX-Original-To: {original}\nDelivered-To: {}\n",
        r.address
    )
}

fn deliver(
    st: &Settings,
    qf: &QueueFile,
    req: &DeliveryRequest,
    r: &DeliveryRecipient,
    mb: &Mailbox,
) -> Outcome {
    let sender = req.sender.as_str();
    let head = prepend(sender, r);
    let mut content = match qf.content() {
        Ok(c) => c,
        Err(e) => return st.failed("4.3.0", format!("read queue file: {e}")),
    };
    let mut msg = Message {
        prepend: head.as_bytes(),
        content: &mut content,
        sender,
        limit: Limit::file(st.limit),
        origin: Some(pfx_mailbox::Origin {
            queue_id: &req.queue_id,
            arrival_us: req.arrival_us,
            recipient: &r.address,
        }),
    };
    let path = Path::new(&mb.path);
    if mb.is_maildir() {
        match pfx_mailbox::as_user(mb.uid, mb.gid, || pfx_mailbox::maildir(path, &mut msg)) {
            Ok(()) => st.sent("delivered to maildir"),
            Err(e) => {
                if e.io().and_then(std::io::Error::raw_os_error) == Some(libc::EACCES) {
                    warn!(
                        "maildir access problem for UID/GID={}/{}: {e}",
                        mb.uid, mb.gid
                    );
                    warn!("perhaps you need to create the maildirs in advance");
                }
                st.failed(e.dsn(), format!("maildir delivery failed: {e}"))
            }
        }
    } else {
        let opts = MboxOptions {
            locks: st.locks,
            regular_only: true,
            // Without root the instance user owns every mailbox.
            owner: (st.strict_owner && pfx_sys::users::is_root()).then_some(mb.uid),
        };
        match pfx_mailbox::as_user(mb.uid, mb.gid, || pfx_mailbox::mbox(path, &mut msg, &opts)) {
            Ok(()) => st.sent("delivered to mailbox"),
            Err(e) => {
                let why = match &e {
                    pfx_mailbox::Error::NotRegular { .. } => {
                        warn!(
                            "recipient {}: destination {} is not a regular file",
                            r.address, mb.path
                        );
                        "mail system configuration error".to_owned()
                    }
                    pfx_mailbox::Error::NotOwner { .. } => {
                        warn!("specify \"strict_mailbox_ownership = no\" to ignore mailbox ownership mismatch");
                        e.to_string()
                    }
                    _ => e.to_string(),
                };
                st.failed(
                    e.dsn(),
                    format!("delivery failed to mailbox {}: {why}", mb.path),
                )
            }
        }
    }
}
