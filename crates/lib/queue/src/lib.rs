//! The mail queue on disk.
//!
//! - [`layout`]: the queue directories with Postfix's owners and modes.
//! - [`file`]: the queue file, in Postfix's format (documented in
//!   docs/QUEUE-FORMAT.md): writing with fsync and the readiness bit,
//!   reading Postfix's files and postfix-rs's, marking recipients done.
//! - [`record`]: Postfix's record framing and record types.
//! - [`Queue`]: naming, listing and moving queue files between queues.
//! - [`statuslog`]: the per-message `bounce/ID` and `defer/ID` logs.
//! - [`listing`]: the queue as `postqueue -p` and showq list it.
//! - [`recycle`]: reusing finished queue files instead of creating new ones.
//! - [`reserve`]: queue files cleanup names ahead of time, a batch per directory fsync.
//! - `naming` and `mode` (private): giving a new file its queue ID, and what
//!   a file's mode says (complete, reserved, being written), shared by the
//!   file's writer and reader and by the reserve, which needs nothing else
//!   from [`file`](mod@file).

pub mod file;
pub mod layout;
pub mod listing;
mod mode;
mod naming;
pub mod record;
pub mod recycle;
pub mod reserve;
pub mod statuslog;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Errors reading or writing the queue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The file exists but is not a valid queue file: it belongs in `corrupt/`.
    #[error("corrupt queue file: {0}")]
    Corrupt(String),
}

/// The queues a message moves between.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum QueueName {
    Maildrop,
    Incoming,
    Active,
    Deferred,
    Hold,
    Corrupt,
}

impl QueueName {
    pub const ALL: [Self; 6] = [
        Self::Maildrop,
        Self::Incoming,
        Self::Active,
        Self::Deferred,
        Self::Hold,
        Self::Corrupt,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Maildrop => "maildrop",
            Self::Incoming => "incoming",
            Self::Active => "active",
            Self::Deferred => "deferred",
            Self::Hold => "hold",
            Self::Corrupt => "corrupt",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|q| q.as_str() == s)
    }

    /// Postfix's `hash_queue_names`: these spread files over one-character subdirectories.
    fn hashed(self) -> bool {
        self == Self::Deferred
    }
}

/// Whether `name` looks like a queue ID (so stray files are never taken for mail).
pub fn is_queue_id(name: &str) -> bool {
    (6..=32).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// One instance's queue directory.
#[derive(Debug, Clone)]
pub struct Queue {
    root: PathBuf,
}

impl Queue {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory a message with this ID lives in, within queue `q`.
    pub fn dir_for(&self, q: QueueName, id: &str) -> PathBuf {
        let base = self.root.join(q.as_str());
        if q.hashed() {
            base.join(&id[..1])
        } else {
            base
        }
    }

    /// Full path of a message in queue `q`.
    pub fn path(&self, q: QueueName, id: &str) -> PathBuf {
        self.dir_for(q, id).join(id)
    }

    /// The IDs of the files in queue `q` (unsorted).
    pub fn list(&self, q: QueueName) -> std::io::Result<Vec<String>> {
        self.ids(q)?.collect()
    }

    /// The IDs of the files in queue `q` as the directories are read
    /// (unsorted), so that a deep queue is never held whole. Files may be
    /// moved or removed while it runs, as Postfix's scan allows.
    pub fn ids(&self, q: QueueName) -> std::io::Result<Ids> {
        let base = std::fs::read_dir(self.root.join(q.as_str()))?;
        Ok(if q.hashed() {
            Ids {
                subdirs: Some(base),
                files: None,
            }
        } else {
            Ids {
                subdirs: None,
                files: Some(base),
            }
        })
    }

    /// Finds which queue holds a message.
    pub fn locate(&self, id: &str) -> Option<QueueName> {
        QueueName::ALL
            .into_iter()
            .find(|&q| self.path(q, id).exists())
    }

    /// Moves a message between queues (a rename within one file system).
    pub fn move_to(&self, id: &str, from: QueueName, to: QueueName) -> std::io::Result<PathBuf> {
        let dst_dir = self.dir_for(to, id);
        let dst = dst_dir.join(id);
        match std::fs::rename(self.path(from, id), &dst) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !dst_dir.exists() => {
                std::fs::create_dir_all(&dst_dir)?;
                std::fs::rename(self.path(from, id), &dst)?;
            }
            r => r?,
        }
        Ok(dst)
    }

    /// Moves a message to `deferred/` with its next retry time as the file's
    /// mtime (Postfix's convention: a deferred scan skips files whose mtime is
    /// in the future).
    pub fn defer_until(
        &self,
        id: &str,
        from: QueueName,
        retry_at: SystemTime,
    ) -> std::io::Result<()> {
        let src = self.path(from, id);
        let f = std::fs::OpenOptions::new().write(true).open(&src)?;
        f.set_times(
            std::fs::FileTimes::new()
                .set_modified(retry_at)
                .set_accessed(SystemTime::now()),
        )?;
        drop(f);
        self.move_to(id, from, QueueName::Deferred)?;
        Ok(())
    }
}

/// What [`Queue::ids`] reads: the hash subdirectories in turn, or the
/// one flat directory.
pub struct Ids {
    subdirs: Option<std::fs::ReadDir>,
    files: Option<std::fs::ReadDir>,
}

impl Iterator for Ids {
    type Item = std::io::Result<String>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(files) = &mut self.files {
                match files.next() {
                    Some(Ok(e)) => {
                        let name = e.file_name();
                        match name.to_str() {
                            Some(n) if is_queue_id(n) => return Some(Ok(n.to_owned())),
                            _ => continue,
                        }
                    }
                    Some(Err(e)) => return Some(Err(e)),
                    None => self.files = None,
                }
            }
            let e = match self.subdirs.as_mut()?.next()? {
                Ok(e) => e,
                Err(e) => return Some(Err(e)),
            };
            match e.file_type() {
                Ok(t) if t.is_dir() => match std::fs::read_dir(e.path()) {
                    Ok(d) => self.files = Some(d),
                    Err(err) => return Some(Err(err)),
                },
                Ok(_) => {}
                Err(err) => return Some(Err(err)),
            }
        }
    }
}

/// A queue tree in a temporary directory, for the crate's tests.
#[cfg(test)]
pub(crate) fn test_queue() -> (tempfile::TempDir, Queue) {
    let tmp = tempfile::tempdir().unwrap();
    for q in QueueName::ALL {
        std::fs::create_dir(tmp.path().join(q.as_str())).unwrap();
    }
    std::fs::create_dir(tmp.path().join("recycle")).unwrap();
    let q = Queue::new(tmp.path());
    (tmp, q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_reads_hashed_and_flat_queues_and_survives_removals() {
        let (_tmp, q) = test_queue();
        let mut ids: Vec<String> = (0..40)
            .map(|i| format!("{:X}A1B2C3D4{i:02}", i % 16))
            .collect();
        for id in &ids {
            for name in [QueueName::Deferred, QueueName::Hold] {
                std::fs::create_dir_all(q.dir_for(name, id)).unwrap();
                std::fs::write(q.path(name, id), "").unwrap();
            }
        }
        // Not messages: a temporary name, and a directory in a flat queue.
        std::fs::write(q.root().join("deferred/0/tmp.1"), "").unwrap();
        std::fs::create_dir(q.root().join("hold/F")).unwrap();
        ids.sort();
        for name in [QueueName::Deferred, QueueName::Hold] {
            // Each file removed as soon as it is read, as postsuper -d ALL does.
            let mut seen: Vec<String> = q
                .ids(name)
                .unwrap()
                .map(|id| {
                    let id = id.unwrap();
                    std::fs::remove_file(q.path(name, &id)).unwrap();
                    id
                })
                .collect();
            seen.sort();
            assert_eq!(seen, ids, "{name:?}");
        }
        assert!(q.ids(QueueName::Deferred).unwrap().next().is_none());
    }

    #[test]
    fn deferred_is_hashed_and_moves_create_subdirectories() {
        let tmp = tempfile::tempdir().unwrap();
        let q = Queue::new(tmp.path());
        for name in QueueName::ALL {
            std::fs::create_dir(tmp.path().join(name.as_str())).unwrap();
        }
        std::fs::write(q.path(QueueName::Active, "3F1A2B4C5D"), b"x").unwrap();
        std::fs::write(tmp.path().join("active/not-an-id.tmp"), b"x").unwrap();
        assert_eq!(q.list(QueueName::Active).unwrap(), ["3F1A2B4C5D"]);
        let later = SystemTime::now() + std::time::Duration::from_secs(300);
        q.defer_until("3F1A2B4C5D", QueueName::Active, later)
            .unwrap();
        assert!(tmp.path().join("deferred/3/3F1A2B4C5D").exists());
        assert_eq!(q.list(QueueName::Deferred).unwrap(), ["3F1A2B4C5D"]);
        assert_eq!(q.locate("3F1A2B4C5D"), Some(QueueName::Deferred));
        let mtime = std::fs::metadata(q.path(QueueName::Deferred, "3F1A2B4C5D"))
            .unwrap()
            .modified()
            .unwrap();
        assert!(mtime > SystemTime::now());
        q.move_to("3F1A2B4C5D", QueueName::Deferred, QueueName::Active)
            .unwrap();
        assert_eq!(q.locate("3F1A2B4C5D"), Some(QueueName::Active));
    }
}
