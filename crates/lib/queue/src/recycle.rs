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
//! mail, and a file there is only ever a finished message, so a crash at any
//! point loses nothing.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use std::sync::Mutex;

/// Files kept for reuse at most; beyond that, finished files are deleted.
pub const MAX_POOL: usize = 2000;

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

    /// Claims a reusable file by renaming it to `claim` (under the pool's
    /// lock, so no file is handed out twice) and marks it incomplete.
    /// Returns it open for writing from the start.
    pub fn take(&self, claim: &Path) -> Option<File> {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if names.is_empty() {
                let listed: Vec<_> = std::fs::read_dir(&self.dir)
                    .ok()?
                    .flatten()
                    .map(|e| e.file_name())
                    .collect();
                if listed.is_empty() {
                    return None;
                }
                *names = listed;
                // Trim a pool that grew past its bound.
                while names.len() > MAX_POOL {
                    if let Some(n) = names.pop() {
                        let _ = std::fs::remove_file(self.dir.join(n));
                    }
                }
            }
            let name = names.pop()?;
            if std::fs::rename(self.dir.join(name), claim).is_err() {
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
                Ok(file) => return Some(file),
                // Whatever it is, it must not be left under the claimed
                // name, which the caller creates next when this gives none.
                Err(_) => {
                    let _ = std::fs::remove_file(claim).or_else(|_| std::fs::remove_dir(claim));
                }
            }
        }
    }
}

/// qmgr's side: a finished message's file goes to the pool instead of away.
pub fn give_back(queue_dir: &Path, path: &Path) -> std::io::Result<()> {
    let Some(name) = path.file_name() else {
        return std::fs::remove_file(path);
    };
    let dst = queue_dir.join("recycle").join(name);
    match nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        path,
        nix::fcntl::AT_FDCWD,
        &dst,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    ) {
        Ok(()) => Ok(()),
        // No pool directory (an older tree) or a name clash: just delete.
        Err(_) => std::fs::remove_file(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn files_come_back_incomplete_and_handed_out_once() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("recycle")).unwrap();
        let done = tmp.path().join("ABC123DEF");
        let mut f = File::create(&done).unwrap();
        f.write_all(b"old message").unwrap();
        f.set_permissions(std::fs::Permissions::from_mode(0o700))
            .unwrap();
        give_back(tmp.path(), &done).unwrap();
        assert!(!done.exists());
        let pool = Pool::new(tmp.path());
        let claim = tmp.path().join("claimed");
        let file = pool.take(&claim).unwrap();
        assert_eq!(file.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        assert!(claim.exists());
        assert!(
            pool.take(&tmp.path().join("again")).is_none(),
            "a file is handed out once"
        );
    }

    #[test]
    fn a_reserved_file_is_reused_and_nothing_unusable_is_left_claimed() {
        let tmp = tempfile::tempdir().unwrap();
        let pool_dir = tmp.path().join("recycle");
        std::fs::create_dir(&pool_dir).unwrap();
        // What cleanup gives back at shutdown: files still reserved (0400).
        let reserved = pool_dir.join("RESERVED1");
        std::fs::write(&reserved, b"").unwrap();
        std::fs::set_permissions(&reserved, std::fs::Permissions::from_mode(0o400)).unwrap();
        let pool = Pool::new(tmp.path());
        let claim = tmp.path().join("claim1");
        let file = pool.take(&claim).expect("a reserved file is reusable");
        assert_eq!(file.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        // Something that cannot be written is not left under the claim.
        std::fs::create_dir(pool_dir.join("NOTAFILE")).unwrap();
        let pool = Pool::new(tmp.path());
        let claim = tmp.path().join("claim2");
        assert!(pool.take(&claim).is_none());
        assert!(!claim.exists(), "the claimed name must stay free");
    }
}
