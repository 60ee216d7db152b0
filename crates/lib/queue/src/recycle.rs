//! Reusing finished queue files.
//!
//! Creating a file costs ext4 an inode allocation, and with thousands of
//! queue files created and deleted per second that allocation dominates the
//! kernel time of the whole mail system (it scans past recently deleted
//! inodes). So when qmgr is done with a message it renames the file into
//! `recycle/` instead of unlinking it, and cleanup takes a file from there
//! for the next message: mode 0600 (incomplete), rename to its new queue ID,
//! overwrite. A file much longer than its message is cut to size when qmgr
//! is done with it (`QueueFile::trim`). Nothing in `recycle/` is ever read as
//! mail, and a file there is only ever a finished message.
//!
//! A file may be reused only once the rename that brought it here is
//! durable. Were it not, a power loss after cleanup's own synced rename of
//! the same inode (`recycle/X` -> `incoming/Y`, acknowledged as message Y)
//! could bring back the old name too (`active/X`): two queue entries for
//! one inode, and the next reuse of either would overwrite message Y. So a
//! file given back keeps its old mode, *unsealed*, and cleanup passes over
//! it; [`Sealer::seal`] fsyncs the directories files were given back from,
//! and only then sets each file's mode to [`MODE_SEALED`], which cleanup
//! takes. qmgr seals in batches on a thread of its own ([`Sealer::spawn`]),
//! and at start seals whatever an earlier run left unsealed
//! ([`seal_leftovers`]). A file with more than one name (what a file system
//! check makes of such a pair) is never reused.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Files kept for reuse at most; beyond that, finished files are deleted.
pub const MAX_POOL: usize = 2000;

/// The mode of a file that may be reused: the rename that gave it back is
/// durable. No queue file has this mode.
pub const MODE_SEALED: u32 = 0o000;

/// Files given back per seal, at most, when they come quickly.
pub const SEAL_BATCH: usize = 32;

/// How long a file given back waits for its seal, at most.
pub const SEAL_DELAY: Duration = Duration::from_millis(100);

/// The pool as cleanup sees it: names in `recycle/`, read in batches.
#[derive(Debug)]
pub struct Pool {
    dir: PathBuf,
    names: Mutex<Vec<std::ffi::OsString>>,
}

impl Pool {
    pub fn new(queue_dir: &Path) -> Self {
        Self {
            dir: queue_dir.join("recycle"),
            names: Mutex::new(Vec::new()),
        }
    }

    /// The pool's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Claims a sealed file by renaming it to `claim` (under the pool's
    /// lock, so no file is handed out twice) and marks it incomplete.
    /// Returns it open for writing from the start.
    pub fn take(&self, claim: &Path) -> Option<File> {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        let mut listed = false;
        loop {
            if names.is_empty() {
                // Once per call: unsealed files are listed again later.
                if listed {
                    return None;
                }
                listed = true;
                *names = std::fs::read_dir(&self.dir)
                    .ok()?
                    .flatten()
                    .map(|e| e.file_name())
                    .collect();
                // Trim a pool that grew past its bound.
                while names.len() > MAX_POOL {
                    if let Some(n) = names.pop() {
                        let _ = std::fs::remove_file(self.dir.join(n));
                    }
                }
            }
            let name = names.pop()?;
            let from = self.dir.join(name);
            // Sealed files only; a seal is never undone, so it holds
            // through the rename.
            let sealed = std::fs::symlink_metadata(&from)
                .is_ok_and(|m| m.is_file() && m.mode() & 0o7777 == MODE_SEALED);
            if !sealed || std::fs::rename(&from, claim).is_err() {
                continue;
            }
            // Incomplete from here on; the writer overwrites it in place
            // (emptying it first would free and reallocate its blocks, which
            // costs as much as an fsync). The mode changes first: a file
            // given back reserved (0400) cannot be opened for writing by its
            // unprivileged owner otherwise.
            let opened = std::fs::set_permissions(claim, std::fs::Permissions::from_mode(0o600))
                .and_then(|()| OpenOptions::new().write(true).open(claim));
            match opened {
                // One name only: a second is a queue entry to keep.
                Ok(file) if file.metadata().is_ok_and(|m| m.nlink() == 1) => return Some(file),
                Ok(_) => {
                    let _ = std::fs::remove_file(claim);
                }
                // Whatever it is, it must not be left under the claimed
                // name, which the caller creates next when this gives none.
                Err(_) => {
                    let _ = std::fs::remove_file(claim).or_else(|_| std::fs::remove_dir(claim));
                }
            }
        }
    }
}

/// Files given back and not sealed yet.
#[derive(Debug, Default)]
struct Pending {
    /// The directories they were renamed out of.
    dirs: BTreeSet<PathBuf>,
    /// Their names in `recycle/`.
    names: Vec<OsString>,
    /// The sealing thread waits for a first file, without a timeout: an
    /// idle qmgr does not wake ten times a second.
    idle: bool,
}

/// The giving side: a finished message's file goes to the pool instead of
/// away, and becomes reusable when sealed.
#[derive(Debug)]
pub struct Sealer {
    dir: PathBuf,
    pending: Mutex<Pending>,
    /// Wakes the sealing thread when a batch is full.
    full: Condvar,
}

impl Sealer {
    pub fn new(queue_dir: &Path) -> Self {
        Self {
            dir: queue_dir.join("recycle"),
            pending: Mutex::default(),
            full: Condvar::new(),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Renames the file at `path` into the pool, unsealed; deletes it when
    /// there is no pool directory (an older tree) or a name clash.
    pub fn give_back(&self, path: &Path) -> std::io::Result<()> {
        let (Some(name), Some(from)) = (path.file_name(), path.parent()) else {
            return std::fs::remove_file(path);
        };
        let renamed = nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            path,
            nix::fcntl::AT_FDCWD,
            &self.dir.join(name),
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        );
        if renamed.is_err() {
            return std::fs::remove_file(path);
        }
        let mut p = self.pending();
        if !p.dirs.contains(from) {
            p.dirs.insert(from.to_owned());
        }
        p.names.push(name.to_owned());
        if p.idle || p.names.len() >= SEAL_BATCH {
            self.full.notify_one();
        }
        Ok(())
    }

    /// Makes the renames of the files given back so far durable (an fsync
    /// of each directory they left), then seals those files.
    pub fn seal(&self) -> std::io::Result<()> {
        let (dirs, names) = {
            let mut p = self.pending();
            (std::mem::take(&mut p.dirs), std::mem::take(&mut p.names))
        };
        for dir in &dirs {
            // On failure they stay unsealed, for the next start to seal.
            pfx_sys::fs::fsync_dir(dir)?;
        }
        for name in names {
            seal_file(&self.dir.join(name));
        }
        Ok(())
    }

    /// Seals on a thread of its own: a batch as soon as it is full, else
    /// whatever was given back within [`SEAL_DELAY`] of the first file.
    pub fn spawn(self: &Arc<Self>) {
        let me = self.clone();
        std::thread::Builder::new()
            .name("recycle-sealer".into())
            .spawn(move || loop {
                let waiting = {
                    let mut p = me.pending();
                    p.idle = true;
                    let mut p = me
                        .full
                        .wait_while(p, |p| p.names.is_empty())
                        .unwrap_or_else(|e| e.into_inner());
                    p.idle = false;
                    let (p, _) = me
                        .full
                        .wait_timeout_while(p, SEAL_DELAY, |p| p.names.len() < SEAL_BATCH)
                        .unwrap_or_else(|e| e.into_inner());
                    !p.names.is_empty()
                };
                if waiting {
                    if let Err(e) = me.seal() {
                        tracing::warn!("recycle: fsync of a queue directory: {e}");
                    }
                }
            })
            .expect("a thread for sealing recycled files");
    }
}

/// Seals one file given back, unless it has a second name (then this one
/// goes: the other is a queue entry).
fn seal_file(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() && m.nlink() == 1 => {
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(MODE_SEALED));
        }
        Ok(m) if m.is_file() => {
            let _ = std::fs::remove_file(path);
        }
        _ => {}
    }
}

/// At qmgr's start: seals the files an earlier run gave back (from
/// `incoming/` or `active/`) and did not seal, after making their renames
/// durable. Listed first, so that every rename they came by precedes the
/// fsyncs.
pub fn seal_leftovers(queue_dir: &Path) -> std::io::Result<()> {
    let dir = queue_dir.join("recycle");
    let unsealed: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .flatten()
            .filter(|e| {
                e.metadata()
                    .is_ok_and(|m| m.is_file() && m.mode() & 0o7777 != MODE_SEALED)
            })
            .map(|e| e.path())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if unsealed.is_empty() {
        return Ok(());
    }
    for q in ["incoming", "active"] {
        pfx_sys::fs::fsync_dir(&queue_dir.join(q))?;
    }
    for path in unsealed {
        seal_file(&path);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn a_file_is_reused_only_once_sealed_and_then_once() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("recycle")).unwrap();
        std::fs::create_dir(tmp.path().join("active")).unwrap();
        let done = tmp.path().join("active/ABC123DEF");
        let mut f = File::create(&done).unwrap();
        f.write_all(b"old message").unwrap();
        f.set_permissions(std::fs::Permissions::from_mode(0o700))
            .unwrap();
        let sealer = Sealer::new(tmp.path());
        sealer.give_back(&done).unwrap();
        assert!(!done.exists());
        // qmgr stopped between the rename and the directory fsync: the
        // rename may yet be undone, so cleanup must not take the file.
        let pool = Pool::new(tmp.path());
        let claim = tmp.path().join("claimed");
        assert!(pool.take(&claim).is_none(), "an unsealed file was taken");
        assert!(!claim.exists());
        assert_eq!(mode(&tmp.path().join("recycle/ABC123DEF")), 0o700);
        sealer.seal().unwrap();
        assert_eq!(mode(&tmp.path().join("recycle/ABC123DEF")), MODE_SEALED);
        let file = pool.take(&claim).expect("sealed, it is reusable");
        assert_eq!(file.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        assert!(claim.exists());
        assert!(
            pool.take(&tmp.path().join("again")).is_none(),
            "a file is handed out once"
        );
    }

    #[test]
    fn the_sealing_thread_seals_within_its_delay() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("recycle")).unwrap();
        let done = tmp.path().join("X1");
        std::fs::write(&done, b"m").unwrap();
        let sealer = Arc::new(Sealer::new(tmp.path()));
        sealer.spawn();
        sealer.give_back(&done).unwrap();
        let sealed = tmp.path().join("recycle/X1");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while mode(&sealed) != MODE_SEALED {
            assert!(std::time::Instant::now() < deadline, "never sealed");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn leftovers_are_sealed_at_start_and_a_file_with_two_names_never_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let pool_dir = tmp.path().join("recycle");
        for d in ["recycle", "incoming", "active"] {
            std::fs::create_dir(tmp.path().join(d)).unwrap();
        }
        // What cleanup gives back at shutdown (reserved, 0400) and what
        // qmgr gave back before it was killed (0700), both unsealed.
        let reserved = pool_dir.join("RESERVED1");
        std::fs::write(&reserved, b"").unwrap();
        std::fs::set_permissions(&reserved, std::fs::Permissions::from_mode(0o400)).unwrap();
        // A file that has its queue name back as well (a power loss undid
        // a rename, a file system check counted both names).
        let twice = pool_dir.join("TWICE1");
        std::fs::write(&twice, b"message Y").unwrap();
        std::fs::hard_link(&twice, tmp.path().join("active/TWICE1")).unwrap();
        seal_leftovers(tmp.path()).unwrap();
        assert_eq!(mode(&reserved), MODE_SEALED);
        assert!(!twice.exists(), "the pool's name goes");
        assert_eq!(
            std::fs::read(tmp.path().join("active/TWICE1")).unwrap(),
            b"message Y"
        );
        let pool = Pool::new(tmp.path());
        let claim = tmp.path().join("claim1");
        let file = pool.take(&claim).expect("a reserved file is reusable");
        assert_eq!(file.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        // A sealed file that got a second name anyway is not handed out,
        // and its other name keeps what it holds.
        let linked = pool_dir.join("LINKED1");
        std::fs::write(&linked, b"keep me").unwrap();
        std::fs::set_permissions(&linked, std::fs::Permissions::from_mode(MODE_SEALED)).unwrap();
        std::fs::hard_link(&linked, tmp.path().join("incoming/LINKED1")).unwrap();
        let claim = tmp.path().join("claim2");
        assert!(Pool::new(tmp.path()).take(&claim).is_none());
        assert!(!claim.exists(), "the claimed name must stay free");
        assert_eq!(
            std::fs::read(tmp.path().join("incoming/LINKED1")).unwrap(),
            b"keep me"
        );
        // Something that cannot be written is not left under the claim.
        std::fs::create_dir(pool_dir.join("NOTAFILE")).unwrap();
        let claim = tmp.path().join("claim3");
        assert!(Pool::new(tmp.path()).take(&claim).is_none());
        assert!(!claim.exists(), "the claimed name must stay free");
    }
}
