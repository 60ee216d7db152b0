//! Why a mailbox write failed, in Postfix's words, and the status Postfix
//! gives it (mbox_open.c's mbox_dsn, mail_copy.c).

use std::io;
use std::path::PathBuf;

use pfx_sys::strerror;

/// A failed delivery to a mailbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A Maildir directory, or the message file in `tmp/`, could not be made.
    #[error("create maildir file {}: {}", .path.display(), strerror(.source))]
    Create { path: PathBuf, source: io::Error },
    /// The Maildir message could not be linked into `new/`.
    #[error("create maildir file {}: {}", .path.display(), strerror(.source))]
    Link { path: PathBuf, source: io::Error },
    /// The queue file could not be read.
    #[error("error reading message: {}", strerror(.0))]
    Read(io::Error),
    /// Writing or syncing the message failed; `EFBIG` when it went over the limit.
    #[error("error writing message: {}", strerror(.0))]
    Write(io::Error),
    /// mbox: `PATH.lock` could not be created (`EEXIST`: still taken
    /// after every attempt).
    #[error("unable to create lock file {}: {}", .path.display(), strerror(.source))]
    DotLock { path: PathBuf, source: io::Error },
    /// mbox: the file could not be opened or created.
    #[error("cannot open file: {}", strerror(.0))]
    Open(io::Error),
    /// mbox: the kernel lock (fcntl or flock) could not be taken.
    #[error("unable to lock for exclusive access: {}", strerror(.0))]
    Lock(io::Error),
    /// mbox: the file has other hard links, or was replaced while it was
    /// being locked.
    #[error("target file status changed unexpectedly")]
    Changed,
    /// mbox: not a regular file, where the caller asked for one.
    #[error("destination {} is not a regular file", .path.display())]
    NotRegular { path: PathBuf },
    /// mbox: owned by someone other than the recipient
    /// (`strict_mailbox_ownership`).
    #[error("destination {} is not owned by recipient", .path.display())]
    NotOwner { path: PathBuf },
}

/// Postfix's mbox_dsn: the status of a failure with errno `e`, `default`
/// when nothing more specific applies.
fn mbox_dsn(e: &io::Error, default: &'static str) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EAGAIN | libc::ESTALE) => "4.2.0",
        Some(libc::ENOSPC) => "4.3.0",
        Some(libc::EDQUOT | libc::EFBIG) => "5.2.2",
        _ => default,
    }
}

impl Error {
    /// The enhanced status code Postfix gives this failure: 4.x.x defers,
    /// 5.x.x bounces. A full mailbox (`EFBIG`, `EDQUOT`) is 5.2.2, a full
    /// disk 4.3.0; a write that failed otherwise is 5.3.0, anything before
    /// the write 4.2.0, and a queue file that could not be read 4.3.0.
    pub fn dsn(&self) -> &'static str {
        match self {
            // Postfix bounces (5.3.0) what it cannot read, but marks a
            // corrupt queue file and defers; a queue file that cannot be
            // read is never the recipient's fault, so it waits here.
            Self::Read(_) => "4.3.0",
            Self::Write(e) => mbox_dsn(e, "5.3.0"),
            Self::Create { source, .. }
            | Self::Link { source, .. }
            | Self::DotLock { source, .. }
            | Self::Open(source)
            | Self::Lock(source) => mbox_dsn(source, "4.2.0"),
            Self::Changed | Self::NotOwner { .. } => "4.2.0",
            Self::NotRegular { .. } => "5.3.5",
        }
    }

    /// The system error underneath, if there is one.
    pub fn io(&self) -> Option<&io::Error> {
        match self {
            Self::Read(e) | Self::Write(e) | Self::Open(e) | Self::Lock(e) => Some(e),
            Self::Create { source, .. }
            | Self::Link { source, .. }
            | Self::DotLock { source, .. } => Some(source),
            Self::Changed | Self::NotRegular { .. } | Self::NotOwner { .. } => None,
        }
    }

    /// Whether the message did not fit: over the size limit (`EFBIG`).
    pub fn is_too_large(&self) -> bool {
        self.io()
            .is_some_and(|e| e.raw_os_error() == Some(libc::EFBIG))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_and_statuses_are_postfixs() {
        let e = Error::Write(io::Error::from_raw_os_error(libc::EFBIG));
        assert_eq!(e.to_string(), "error writing message: File too large");
        assert_eq!(e.dsn(), "5.2.2");
        assert!(e.is_too_large());
        let e = Error::Write(io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(e.dsn(), "5.3.0");
        assert!(!e.is_too_large());
        let e = Error::DotLock {
            path: "/nonexistent/base/mbox.lock".into(),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert_eq!(
            e.to_string(),
            "unable to create lock file /nonexistent/base/mbox.lock: No such file or directory"
        );
        assert_eq!(e.dsn(), "4.2.0");
        let e = Error::Create {
            path: "/b/u/tmp".into(),
            source: io::Error::from_raw_os_error(libc::ENOSPC),
        };
        assert_eq!(e.dsn(), "4.3.0");
        assert_eq!(
            e.to_string(),
            "create maildir file /b/u/tmp: No space left on device"
        );
        assert_eq!(
            Error::NotRegular {
                path: "/dev/null".into()
            }
            .dsn(),
            "5.3.5"
        );
    }
}
