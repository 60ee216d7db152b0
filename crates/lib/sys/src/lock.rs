//! The instance lock: `$queue_directory/pid/master.pid`, held with `flock`
//! for as long as master runs. The file also holds master's pid, so commands
//! can signal it; a pid in a file that nobody has locked means nothing.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

/// A held lock; dropping it (or the process dying) releases it.
#[derive(Debug)]
pub struct PidLock {
    _lock: Flock<File>,
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

/// Why [`PidLock::acquire`] failed.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds the lock; its pid as read from the file.
    Held(Option<i32>),
    Io(std::io::Error),
}

impl PidLock {
    /// Takes the lock without waiting and writes our pid into the file.
    pub fn acquire(path: &Path) -> Result<Self, LockError> {
        let file = open(path).map_err(LockError::Io)?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Err(LockError::Held(holder(path))),
            Err((_, e)) => return Err(LockError::Io(e.into())),
        };
        let pid = std::process::id();
        let write = |f: &mut File| -> std::io::Result<()> {
            f.set_len(0)?;
            f.seek(SeekFrom::Start(0))?;
            // Postfix's layout: the pid right-aligned in ten columns.
            writeln!(f, "{pid:>10}")?;
            f.sync_all()
        };
        write(&mut lock).map_err(LockError::Io)?;
        Ok(Self { _lock: lock })
    }
}

/// The pid of the process holding the lock at `path`, if anyone holds it.
pub fn holder(path: &Path) -> Option<i32> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        // We could lock it: nobody holds it.
        Ok(_) => None,
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut s = String::new();
            file.read_to_string(&mut s).ok()?;
            s.trim().parse().ok()
        }
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive_and_names_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.pid");
        assert_eq!(holder(&path), None);
        let lock = PidLock::acquire(&path).unwrap();
        let me = std::process::id() as i32;
        assert_eq!(holder(&path), Some(me));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{me:>10}\n")
        );
        assert!(matches!(PidLock::acquire(&path), Err(LockError::Held(Some(p))) if p == me));
        drop(lock);
        assert_eq!(holder(&path), None);
    }
}
