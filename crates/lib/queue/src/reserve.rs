//! Queue files named ahead of time.
//!
//! smtpd may say `250` only when the new message's file and its name are
//! on disk. Making a name durable costs a directory fsync, a device flush
//! as dear as the file's own fsync, so paying it per message doubled the
//! cost of a commit. cleanup therefore names files ahead of time, a batch
//! at a time with one directory fsync per batch: each file is taken from
//! `recycle/` (or created), renamed to its queue ID and set to mode 0400,
//! *reserved*. A commit then needs only the file's own fsync. Each named
//! file is synced once here too, so that the commit's fsync has no
//! directory to write (see `fill`).
//!
//! qmgr, showq and postsuper pass over reserved files. The reserving
//! process holds an exclusive `flock` on each, so when cleanup restarts
//! after a crash the new one adopts the old one's reserved files, and a
//! second cleanup process never takes another's.

use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use nix::fcntl::{Flock, FlockArg};

use crate::mode::{MODE_RESERVED, MODE_WRITING};
use crate::naming::name_new_file;
use crate::recycle::Pool;
use crate::{Queue, QueueName};

/// Files named per directory fsync.
pub const BATCH: usize = 32;

/// A named file, ready to be written.
#[derive(Debug)]
pub(crate) struct Reserved {
    pub(crate) id: String,
    pub(crate) path: PathBuf,
    file: Flock<File>,
}

impl Reserved {
    /// Marks the file as being written (mode 0600) and hands it over with
    /// its queue ID and path.
    pub(crate) fn start_writing(self) -> std::io::Result<(String, PathBuf, File)> {
        self.file
            .set_permissions(std::fs::Permissions::from_mode(MODE_WRITING))?;
        let file = self
            .file
            .unlock()
            .map_err(|(_, e)| std::io::Error::from(e))?;
        Ok((self.id, self.path, file))
    }
}

/// cleanup's reserve of named files in `incoming/`.
#[derive(Debug)]
pub struct Reserve {
    queue: Queue,
    pool: Pool,
    ready: Mutex<Vec<Reserved>>,
    refilling: AtomicBool,
    /// Whether files an earlier cleanup left reserved were looked for.
    adopted: AtomicBool,
}

impl Reserve {
    pub fn new(queue: Queue) -> Self {
        let pool = Pool::new(queue.root());
        Self {
            queue,
            pool,
            ready: Mutex::new(Vec::new()),
            refilling: AtomicBool::new(false),
            adopted: AtomicBool::new(false),
        }
    }

    /// Where files come from when the reserve is empty.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A reserved file, if one is ready (and was not deleted meanwhile).
    pub(crate) fn take(&self) -> Option<Reserved> {
        let mut ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(r) = ready.pop() {
            if r.file.metadata().is_ok_and(|m| m.nlink() > 0) {
                return Some(r);
            }
        }
        None
    }

    /// True when a refill should start (few files left, none running), and
    /// from then on one is running: the caller must run [`Reserve::refill`]
    /// (blocking) where it suits it.
    pub fn begin_refill(&self) -> bool {
        let low = self.ready.lock().unwrap_or_else(|e| e.into_inner()).len() < BATCH / 2;
        low && !self.refilling.swap(true, Ordering::AcqRel)
    }

    /// Names up to [`BATCH`] files, makes their names durable and adds
    /// them to the reserve. Call after [`Reserve::begin_refill`] said yes.
    pub fn refill(&self) -> std::io::Result<()> {
        let result = self.fill();
        self.refilling.store(false, Ordering::Release);
        result
    }

    fn fill(&self) -> std::io::Result<()> {
        let dir = self.queue.dir_for(QueueName::Incoming, "x");
        let mut batch = Vec::with_capacity(BATCH);
        if !self.adopted.swap(true, Ordering::AcqRel) {
            crate::naming::remove_stale_claims(&dir);
            batch.extend(self.orphans(&dir));
        }
        let mut from_pool = false;
        let mut failure = None;
        while batch.len() < BATCH {
            let named = name_new_file(&dir, Some(&self.pool), MODE_RESERVED).and_then(|n| {
                let file = Flock::lock(n.file, FlockArg::LockExclusiveNonblock)
                    .map_err(|(_, e)| std::io::Error::from(e))?;
                file.set_permissions(std::fs::Permissions::from_mode(MODE_RESERVED))?;
                Ok((n.id, n.path, file, n.recycled))
            });
            match named {
                Ok((id, path, file, recycled)) => {
                    from_pool |= recycled;
                    batch.push(Reserved { id, path, file });
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if batch.is_empty() {
            return failure.map_or(Ok(()), Err);
        }
        pfx_sys::fs::fsync_dir(&dir)?;
        if from_pool {
            pfx_sys::fs::fsync_dir(self.pool.dir())?;
        }
        // ext4 without a journal makes the first fsync of a file after it
        // got a new name sync the file's directory too, which qmgr's moves
        // out of incoming/ keep dirty: one more device write on the commit's
        // critical path. Syncing each file once here takes that first fsync
        // off the commit. (A data sync: what the file holds, a recycled
        // file's old message, is on disk already, so all it costs is the
        // directory, clean by now, and a cache flush.)
        for r in &batch {
            r.file.sync_data()?;
        }
        self.ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(batch);
        failure.map_or(Ok(()), Err)
    }

    /// Reserved files whose cleanup is gone (no one holds their lock).
    fn orphans(&self, dir: &std::path::Path) -> Vec<Reserved> {
        let Ok(ids) = self.queue.list(QueueName::Incoming) else {
            return Vec::new();
        };
        ids.into_iter()
            .filter_map(|id| {
                let path = dir.join(&id);
                let meta = std::fs::symlink_metadata(&path).ok()?;
                if !meta.is_file() || meta.mode() & 0o777 != MODE_RESERVED {
                    return None;
                }
                let file = adopt(&path)?;
                Some(Reserved { id, path, file })
            })
            .collect()
    }

    /// Returns the reserve to `recycle/` (at shutdown), so no reserved files
    /// linger in `incoming/`, and seals it there.
    pub fn release(&self) {
        let ready = std::mem::take(&mut *self.ready.lock().unwrap_or_else(|e| e.into_inner()));
        let sealer = crate::recycle::Sealer::new(self.queue.root());
        for r in ready {
            let _ = sealer.give_back(&r.path);
        }
        let _ = sealer.seal();
    }
}

/// A reserved file opened for writing and locked, unless another process
/// holds it.
fn adopt(path: &std::path::Path) -> Option<Flock<File>> {
    // Checked again once locked: the cleanup that held it may have started
    // writing a message into it (mode 0600) and let go in between.
    let lock = |f: File| {
        let f = Flock::lock(f, FlockArg::LockExclusiveNonblock).ok()?;
        let meta = f.metadata().ok()?;
        (meta.mode() & 0o777 == MODE_RESERVED && meta.nlink() > 0).then_some(f)
    };
    match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(f) => lock(f),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            // Not root (an ordinary user's instance): mode 0400 keeps even
            // the owner from opening it for writing. Held through a
            // read-only descriptor, it is made writable for a moment.
            let held = lock(File::open(path).ok()?)?;
            held.set_permissions(std::fs::Permissions::from_mode(MODE_WRITING))
                .ok()?;
            let writable = std::fs::OpenOptions::new().write(true).open(path);
            held.set_permissions(std::fs::Permissions::from_mode(MODE_RESERVED))
                .ok()?;
            drop(held);
            // Another cleanup may have taken it in between: then it is theirs.
            lock(writable.ok()?)
        }
        Err(_) => None,
    }
}

/// At shutdown, once every cleanup and qmgr is gone: removes the reserved
/// files no one holds from `incoming/` and empties `recycle/`, so a stopped
/// system leaves only messages behind, and no old message's bytes in files
/// Postfix, started on the same queue, knows nothing of.
pub fn remove_spares(queue: &Queue) {
    let incoming = queue.root().join(QueueName::Incoming.as_str());
    let reserve = Reserve::new(queue.clone());
    for r in reserve.orphans(&incoming) {
        let _ = std::fs::remove_file(&r.path);
    }
    let _ = pfx_sys::fs::fsync_dir(&incoming);
    let pool = reserve.pool.dir();
    if let Ok(entries) = std::fs::read_dir(pool) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        let _ = pfx_sys::fs::fsync_dir(pool);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_queue as queue;

    fn mode(path: &std::path::Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn refill_names_a_batch_of_reserved_files() {
        let (_t, q) = queue();
        let r = Reserve::new(q.clone());
        assert!(r.begin_refill());
        assert!(!r.begin_refill(), "one refill at a time");
        r.refill().unwrap();
        let ids = q.list(QueueName::Incoming).unwrap();
        assert_eq!(ids.len(), BATCH);
        for id in &ids {
            assert_eq!(mode(&q.path(QueueName::Incoming, id)), MODE_RESERVED);
        }
        let got = r.take().unwrap();
        assert!(ids.contains(&got.id));
        let (_, path, _) = got.start_writing().unwrap();
        assert_eq!(mode(&path), MODE_WRITING);
    }

    #[test]
    fn names_left_by_a_dead_process_are_removed_at_the_first_refill() {
        let (_t, q) = queue();
        let dir = q.dir_for(QueueName::Incoming, "x");
        // No process has pid 2^22 + 1 (above Linux's largest pid_max).
        let dead = dir.join("1796165904758804.4194305.4194305");
        let ours = dir.join(format!("1796165904758805.{}.1", std::process::id()));
        std::fs::write(&dead, b"").unwrap();
        std::fs::write(&ours, b"").unwrap();
        let r = Reserve::new(q.clone());
        r.refill().unwrap();
        assert!(!dead.exists(), "a dead process's claim is removed");
        assert!(ours.exists(), "a live process may still be using its claim");
    }

    #[test]
    fn a_deleted_reserved_file_is_not_handed_out() {
        let (_t, q) = queue();
        let r = Reserve::new(q.clone());
        r.refill().unwrap();
        for id in q.list(QueueName::Incoming).unwrap() {
            std::fs::remove_file(q.path(QueueName::Incoming, &id)).unwrap();
        }
        assert!(r.take().is_none());
    }

    #[test]
    fn reserved_and_pooled_files_go_at_shutdown_but_messages_and_held_files_stay() {
        let (_tmp, q) = queue();
        let held = Reserve::new(q.clone());
        held.refill().unwrap();
        let gone = Reserve::new(q.clone());
        gone.refill().unwrap();
        drop(gone);
        let pool = q.root().join("recycle");
        std::fs::create_dir_all(&pool).unwrap();
        std::fs::write(pool.join("x"), b"").unwrap();
        let message = q.path(QueueName::Incoming, "ABCDEF1234");
        std::fs::write(&message, b"m").unwrap();
        std::fs::set_permissions(&message, std::fs::Permissions::from_mode(0o700)).unwrap();
        remove_spares(&q);
        let left = q.list(QueueName::Incoming).unwrap();
        let still_reserved = held.ready.lock().unwrap().len();
        assert_eq!(left.len(), still_reserved + 1, "{left:?}");
        assert!(message.exists());
        assert_eq!(std::fs::read_dir(&pool).unwrap().count(), 0);
    }

    #[test]
    fn a_file_another_cleanup_started_writing_is_never_adopted() {
        // The race adoption closes: the mode was 0400 when listed, then the
        // holder started writing into it and let go before the lock was taken.
        let (_t, q) = queue();
        let first = Reserve::new(q.clone());
        first.refill().unwrap();
        let (_id, path, _file) = first.take().unwrap().start_writing().unwrap();
        assert!(adopt(&path).is_none());
    }

    #[test]
    fn a_new_cleanup_adopts_orphans_but_not_files_another_holds() {
        let (_t, q) = queue();
        let first = Reserve::new(q.clone());
        first.refill().unwrap();
        // While the first one lives, a second reserve adopts nothing.
        let second = Reserve::new(q.clone());
        second.refill().unwrap();
        assert_eq!(second.ready.lock().unwrap().len(), BATCH);
        assert_eq!(q.list(QueueName::Incoming).unwrap().len(), 2 * BATCH);
        // The first one dies: its files are adopted, not new ones named.
        drop(first);
        drop(second);
        let third = Reserve::new(q.clone());
        third.refill().unwrap();
        assert_eq!(third.ready.lock().unwrap().len(), 2 * BATCH);
        assert_eq!(q.list(QueueName::Incoming).unwrap().len(), 2 * BATCH);
        third.release();
        assert!(q.list(QueueName::Incoming).unwrap().is_empty());
    }
}
