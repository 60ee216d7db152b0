//! The queue as the scheduler sees it. Every file operation qmgr makes
//! goes through [`Store`], so the scheduling decisions can be tested on a
//! queue kept in memory, with paused time; [`Files`] is the real one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use pfx_queue::file::{self, QueueFile, Readiness, Recipient};
use pfx_queue::recycle::Sealer;
use pfx_queue::statuslog::{self, Log, Status};
use pfx_queue::{Queue, QueueName};
use tracing::warn;

/// What the scheduler keeps of a message in `active/`.
#[derive(Debug, Clone)]
pub(crate) struct Envelope {
    pub(crate) sender: String,
    pub(crate) arrival: SystemTime,
    /// As Postfix counts it, for the `size=` of the log line.
    pub(crate) size: u64,
    pub(crate) recipients: Vec<Recipient>,
    /// The content filter every recipient goes to (`transport:nexthop`).
    pub(crate) filter: Option<String>,
    /// The address the message goes to instead of its recipients.
    pub(crate) redirect: Option<String>,
    /// The delay warning the file asks for (`W` record).
    pub(crate) warn: Option<file::Warn>,
    /// Marked for forced expiration (`postsuper -e`).
    pub(crate) force_expire: bool,
}

/// A scan's IDs, read as they are needed.
pub(crate) type Ids = Box<dyn Iterator<Item = std::io::Result<String>> + Send>;

pub(crate) trait Store: Send + 'static {
    /// The time retry times and message ages are measured against.
    fn now(&self) -> SystemTime;
    /// The IDs of the files in a queue, as the directory is read.
    fn scan(&self, q: QueueName) -> std::io::Result<Ids>;
    /// Moves a complete message from `incoming/` to `active/`, and says
    /// whether it did; removes a file a crash left incomplete once it is
    /// `stale_after` old (it was never acknowledged).
    fn claim_incoming(&self, id: &str, stale_after: Duration) -> bool;
    /// When a message in `deferred/` is due again.
    fn retry_time(&self, id: &str) -> Option<SystemTime>;
    fn move_to(&self, id: &str, from: QueueName, to: QueueName) -> std::io::Result<()>;
    /// Reads a message in `active/`; `verify`: check it whole first.
    fn open(&self, id: &str, verify: bool) -> Result<Envelope, pfx_queue::Error>;
    /// Whether the message is still in `active/` (postsuper may have taken it).
    fn is_active(&self, id: &str) -> bool;
    fn has_log(&self, log: Log, id: &str) -> bool;
    /// Appends to a message's bounce or defer log; `sync`: durably.
    fn append_log(&self, log: Log, id: &str, records: &[Status], sync: bool)
        -> std::io::Result<()>;
    fn read_log(&self, log: Log, id: &str) -> std::io::Result<Vec<Status>>;
    /// Marks recipients (by their record offsets) done in the queue file.
    fn mark_done(&self, id: &str, offsets: &[u64]) -> std::io::Result<()>;
    /// Records in the queue file that its delay warning was sent.
    fn clear_warning(&self, id: &str, w: &file::Warn) -> std::io::Result<()>;
    /// Moves a message from `active/` to `deferred/`, due at `when`.
    fn defer_until(&self, id: &str, when: SystemTime) -> std::io::Result<()>;
    /// The message is finished: its file goes, and its defer log when
    /// it may have one.
    fn remove(&self, id: &str, defer_log: bool) -> std::io::Result<()>;
}

/// The queue directory.
pub(crate) struct Files {
    queue: Queue,
    /// The cut each message opened by [`Store::open`] needs at removal
    /// (none for most): all that is kept of its file.
    open: Mutex<HashMap<String, Option<file::Trim>>>,
    /// Where finished files go, sealed on a thread of its own.
    sealer: Arc<Sealer>,
}

impl Files {
    /// The queue at `root`; seals what an earlier run left unsealed in
    /// `recycle/` and starts the thread that seals from now on.
    pub(crate) fn new(root: PathBuf) -> Self {
        if let Err(e) = pfx_queue::recycle::seal_leftovers(&root) {
            warn!("recycle: {e}");
        }
        let sealer = Arc::new(Sealer::new(&root));
        sealer.spawn();
        Self {
            queue: Queue::new(root),
            open: Mutex::default(),
            sealer,
        }
    }

    pub(crate) fn root(&self) -> &std::path::Path {
        self.queue.root()
    }

    fn active(&self, id: &str) -> PathBuf {
        self.queue.path(QueueName::Active, id)
    }

    /// Lets go of what is kept of a message's file: its cut, if it needs one.
    fn forget(&self, id: &str) -> Option<file::Trim> {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
            .flatten()
    }
}

impl Store for Files {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn scan(&self, q: QueueName) -> std::io::Result<Ids> {
        Ok(Box::new(self.queue.ids(q)?))
    }

    fn claim_incoming(&self, id: &str, stale_after: Duration) -> bool {
        let path = self.queue.path(QueueName::Incoming, id);
        let Ok(meta) = std::fs::metadata(&path) else {
            return false;
        };
        match QueueFile::readiness(&meta) {
            Readiness::Complete => {}
            Readiness::Reserved => return false,
            Readiness::Incomplete => {
                // cleanup is still writing it, or died doing so.
                let age = meta.modified().ok().and_then(|t| t.elapsed().ok());
                if age.is_some_and(|a| a > stale_after) {
                    warn!(
                        "{id}: removing incomplete queue file older than {}s",
                        stale_after.as_secs()
                    );
                    let _ = std::fs::remove_file(&path);
                }
                return false;
            }
        }
        match self
            .queue
            .move_to(id, QueueName::Incoming, QueueName::Active)
        {
            Ok(_) => true,
            Err(e) => {
                warn!("{id}: move to active: {e}");
                false
            }
        }
    }

    fn retry_time(&self, id: &str) -> Option<SystemTime> {
        std::fs::metadata(self.queue.path(QueueName::Deferred, id))
            .and_then(|m| m.modified())
            .ok()
    }

    fn move_to(&self, id: &str, from: QueueName, to: QueueName) -> std::io::Result<()> {
        if from == QueueName::Active {
            self.forget(id);
        }
        self.queue.move_to(id, from, to).map(drop)
    }

    fn open(&self, id: &str, verify: bool) -> Result<Envelope, pfx_queue::Error> {
        let mut qf = QueueFile::open(&self.active(id))?;
        if verify {
            qf.verify()?;
        }
        let mut recipients = std::mem::take(&mut qf.recipients);
        // Kept as long as the message is active: no room to grow.
        recipients.shrink_to_fit();
        let envelope = Envelope {
            sender: std::mem::take(&mut qf.sender),
            arrival: qf.arrival,
            size: qf.content_len,
            recipients,
            filter: qf.filter.take(),
            redirect: qf.redirect.take(),
            warn: qf.warn,
            force_expire: qf.expired,
        };
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned(), qf.trim_plan());
        Ok(envelope)
    }

    fn is_active(&self, id: &str) -> bool {
        let active = self.active(id).exists();
        if !active {
            self.forget(id);
        }
        active
    }

    fn has_log(&self, log: Log, id: &str) -> bool {
        statuslog::path(self.root(), log, id).exists()
    }

    fn append_log(
        &self,
        log: Log,
        id: &str,
        records: &[Status],
        sync: bool,
    ) -> std::io::Result<()> {
        statuslog::append(self.root(), log, id, records, sync)
    }

    fn read_log(&self, log: Log, id: &str) -> std::io::Result<Vec<Status>> {
        statuslog::read(self.root(), log, id)
    }

    fn mark_done(&self, id: &str, offsets: &[u64]) -> std::io::Result<()> {
        file::mark_done(&self.active(id), offsets)
    }

    fn clear_warning(&self, id: &str, w: &file::Warn) -> std::io::Result<()> {
        file::clear_warning(&self.active(id), w)
    }

    fn defer_until(&self, id: &str, when: SystemTime) -> std::io::Result<()> {
        self.forget(id);
        self.queue.defer_until(id, QueueName::Active, when)
    }

    fn remove(&self, id: &str, defer_log: bool) -> std::io::Result<()> {
        // Before the file is in the pool, where cleanup may take it.
        if let Some(trim) = self.forget(id) {
            if let Err(e) = trim.apply(&self.active(id)) {
                warn!("{id}: cut queue file to size: {e}");
            }
        }
        self.sealer.give_back(&self.active(id))?;
        if defer_log {
            statuslog::remove(self.root(), Log::Defer, id);
        }
        Ok(())
    }
}
