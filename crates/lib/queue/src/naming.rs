//! Naming new queue files with queue IDs, for the writer and for cleanup's
//! reserve alike: a file is created (or taken from `recycle/`) under a
//! temporary name it claims, then renamed to the ID Postfix derives from
//! its inode, without ever replacing another file.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds and the file's inode make Postfix's short queue ID.
fn short_id(usec: u32, inode: u64) -> String {
    format!("{usec:05X}{inode:X}")
}

/// A file just named with its queue ID.
pub(crate) struct Named {
    pub(crate) file: File,
    pub(crate) id: String,
    pub(crate) path: PathBuf,
    /// Taken from `recycle/` (whose entry changed too) rather than created.
    pub(crate) recycled: bool,
}

/// The temporary name [`name_new_file`] claims first: `MICROS.PID.TID`.
fn claim_name(micros: u128) -> String {
    format!("{micros}.{}.{}", pfx_sys::pid(), nix_tid())
}

/// The process that claimed `name`, when it is a [`claim_name`].
fn claim_pid(name: &str) -> Option<i32> {
    let parts: Vec<&str> = name.split('.').collect();
    let numeric = |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    (parts.len() == 3 && parts.iter().all(numeric))
        .then(|| parts[1].parse().ok())
        .flatten()
}

/// Removes the claimed names whose process is gone: what a crash between
/// claiming a name and giving the file its queue ID leaves in `dir`.
pub(crate) fn remove_stale_claims(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(claim_pid) else {
            continue;
        };
        if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            == Err(nix::errno::Errno::ESRCH)
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Names a file in `dir` with a fresh queue ID: a recycled file when the
/// pool has one (see crate::recycle), else a new one with mode `mode`, first
/// under a temporary name (exclusive create), then renamed to the ID derived
/// from its inode, without ever replacing another file.
pub(crate) fn name_new_file(
    dir: &Path,
    pool: Option<&crate::recycle::Pool>,
    mode: u32,
) -> std::io::Result<Named> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let tmp = dir.join(claim_name(now.as_micros()));
    let (file, recycled) = match pool.and_then(|p| p.take(&tmp)) {
        Some(f) => (f, true),
        None => (
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&tmp)?,
            false,
        ),
    };
    let inode = file.metadata()?.ino();
    let mut usec = now.subsec_micros();
    loop {
        let id = short_id(usec, inode);
        let path = dir.join(&id);
        match nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            &tmp,
            nix::fcntl::AT_FDCWD,
            &path,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => {
                return Ok(Named {
                    file,
                    id,
                    path,
                    recycled,
                })
            }
            // A stale file with the same name: another microsecond value.
            Err(nix::errno::Errno::EEXIST) => usec = (usec + 1) % 1_000_000,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.into());
            }
        }
    }
}

/// This thread's ID, asked of the kernel once per thread (a claim is
/// named for every queue file).
fn nix_tid() -> i32 {
    thread_local!(static TID: i32 = nix::unistd::gettid().as_raw());
    TID.with(|t| *t)
}

#[cfg(test)]
mod tests {
    use crate::file::test_support::write;
    use crate::test_queue as queue;

    #[test]
    fn ids_are_unique() {
        let (_t, q) = queue();
        let ids: std::collections::HashSet<String> = (0..200).map(|_| write(&q, b"x\n")).collect();
        assert_eq!(ids.len(), 200);
    }
}
