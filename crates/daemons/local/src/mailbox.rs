//! Writing a message into a mailbox: Maildir or mbox.
//!
//! Maildir (as local(8)'s maildir.c): write the message in `tmp/`, fsync,
//! link it to `new/SEC.VdevIinoMusec.HOST`; the message appears whole or not
//! at all. The file in `tmp/` is unnamed (`O_TMPFILE`) where the file system
//! allows, else `tmp/SEC.PpidQn.HOST`, unlinked after the link. mbox: dotlock `FILE.lock` plus an fcntl lock
//! (Postfix's `mailbox_delivery_lock = fcntl, dotlock` on Linux),
//! a `From ` line, `>From ` quoting, a blank line at the end, fsync; on any
//! error the file is truncated back. Neither follows a symbolic link at the
//! final path component.

use pfx_maillog::delivery::Outcome;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why a write failed: a full mailbox is permanent (5.2.2); anything else
/// may clear up.
fn io_failure(what: String, e: &std::io::Error) -> Outcome {
    let too_large = e.raw_os_error() == Some(libc::EFBIG);
    let dsn = if too_large { "5.2.2" } else { "4.2.0" };
    Outcome::failed(!too_large, dsn, "local", format!("{what}: {e}"))
}

/// What goes into the mailbox.
pub(crate) struct Message<'a> {
    /// Return-Path, X-Original-To, Delivered-To lines.
    pub(crate) prepend: &'a [u8],
    pub(crate) content: &'a mut dyn Read,
    pub(crate) sender: &'a str,
    /// `mailbox_size_limit` (0: none).
    pub(crate) size_limit: u64,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The host part of Maildir file names, looked up once per process.
fn hostname() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .map(|h| h.split('.').next().unwrap_or_default().to_owned())
            .unwrap_or_else(|| "localhost".into())
    })
}

thread_local! {
    /// The copy buffers, kept by each delivery thread: allocated per
    /// message, the allocator handed their pages back to the kernel after
    /// every delivery and faulted them in again for the next.
    static BUFFERS: std::cell::RefCell<(Vec<u8>, Vec<u8>)> =
        std::cell::RefCell::new((vec![0u8; 64 * 1024], Vec::with_capacity(65 * 1024)));
}

fn copy_limited(
    out: &mut impl Write,
    msg: &mut Message<'_>,
    mut transform: impl FnMut(&[u8], &mut Vec<u8>),
) -> std::io::Result<u64> {
    let mut total = msg.prepend.len() as u64;
    out.write_all(msg.prepend)?;
    BUFFERS.with_borrow_mut(|(buf, piece)| loop {
        let n = msg.content.read(buf)?;
        if n == 0 {
            return Ok(total);
        }
        piece.clear();
        transform(&buf[..n], piece);
        total += piece.len() as u64;
        if msg.size_limit > 0 && total > msg.size_limit {
            return Err(std::io::Error::from_raw_os_error(libc::EFBIG));
        }
        out.write_all(piece)?;
    })
}

/// Delivers into the Maildir at `dir` (created if missing).
pub(crate) fn maildir(dir: &Path, msg: &mut Message<'_>) -> Result<(), Outcome> {
    // An unnamed file is linked through its /proc/self/fd entry.
    static PROC_FD: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let unnamed = *PROC_FD.get_or_init(|| Path::new("/proc/self/fd").is_dir());
    deliver_maildir(dir, msg, unnamed)
}

fn deliver_maildir(dir: &Path, msg: &mut Message<'_>, unnamed: bool) -> Result<(), Outcome> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let host = hostname();
    // The directories are made when they are missing, as Postfix does, not
    // tried for every message.
    let mut file = match TmpFile::create(dir, now, host, unnamed) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            make_maildir(dir)?;
            TmpFile::create(dir, now, host, unnamed)
        }
        r => r,
    }
    .map_err(|e| {
        io_failure(
            format!("create maildir file {}", dir.join("tmp").display()),
            &e,
        )
    })?;
    let written = copy_limited(&mut file.file, msg, |b, out| out.extend_from_slice(b))
        .and_then(|_| file.file.sync_all());
    if let Err(e) = written {
        return Err(io_failure(
            format!("maildir delivery failed: {}", file.describe(dir)),
            &e,
        ));
    }
    let md = file
        .file
        .metadata()
        .map_err(|e| io_failure(format!("stat {}", file.describe(dir)), &e))?;
    let new = dir.join("new").join(format!(
        "{}.V{:x}I{:x}M{}.{host}",
        now.as_secs(),
        md.dev(),
        md.ino(),
        now.subsec_micros()
    ));
    let link_fail = |e: &std::io::Error| io_failure(format!("link to {}", new.display()), e);
    match file.link(&new) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            make_maildir(dir)?;
            file.link(&new).map_err(|e| link_fail(&e))
        }
        r => r.map_err(|e| link_fail(&e)),
    }
}

/// A Maildir message while it is written. Where the file system has
/// `O_TMPFILE` it has no name at all until it is linked into `new/` whole
/// (one name less to create, sync and remove per message, and nothing a
/// reader of `tmp/` could see); elsewhere it is `tmp/SEC.PpidQn.HOST`, as in
/// Postfix, removed when this is dropped.
struct TmpFile {
    file: std::fs::File,
    name: Option<PathBuf>,
}

impl TmpFile {
    fn create(dir: &Path, now: Duration, host: &str, unnamed: bool) -> std::io::Result<Self> {
        let tmp = dir.join("tmp");
        if unnamed {
            match OpenOptions::new()
                .write(true)
                .mode(0o600)
                .custom_flags(libc::O_TMPFILE)
                .open(&tmp)
            {
                Ok(file) => return Ok(Self { file, name: None }),
                // Not supported here (EOPNOTSUPP, or EISDIR from kernels that
                // predate the flag): a named file as Postfix writes it.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR)) => {}
                Err(e) => return Err(e),
            }
        }
        let name = tmp.join(format!(
            "{}.P{}Q{}.{host}",
            now.as_secs(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&name)?;
        Ok(Self {
            file,
            name: Some(name),
        })
    }

    fn describe(&self, dir: &Path) -> String {
        match &self.name {
            Some(n) => n.display().to_string(),
            None => format!("{} (unnamed)", dir.join("tmp").display()),
        }
    }

    /// Gives the file its name in `new/`; fails if that name exists.
    fn link(&self, new: &Path) -> std::io::Result<()> {
        match &self.name {
            Some(n) => std::fs::hard_link(n, new),
            None => {
                use std::os::fd::AsRawFd;
                // linkat(fd, "", AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH;
                // the descriptor's /proc link does not.
                let proc = format!("/proc/self/fd/{}", self.file.as_raw_fd());
                nix::unistd::linkat(
                    nix::fcntl::AT_FDCWD,
                    proc.as_str(),
                    nix::fcntl::AT_FDCWD,
                    new,
                    nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
                )
                .map_err(std::io::Error::from)
            }
        }
    }
}

impl Drop for TmpFile {
    fn drop(&mut self) {
        if let Some(n) = &self.name {
            let _ = std::fs::remove_file(n);
        }
    }
}

/// Creates a Maildir's directories that are missing.
fn make_maildir(dir: &Path) -> Result<(), Outcome> {
    for sub in ["", "tmp", "new", "cur"] {
        let d = dir.join(sub);
        match std::fs::DirBuilder::new().mode(0o700).create(&d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(io_failure(
                    format!("create maildir file {}", d.display()),
                    &e,
                ))
            }
        }
    }
    Ok(())
}

/// An exclusive `PATH.lock` file, removed when dropped. Stale locks (older
/// than `stale_lock_time`, 500 s) are broken, as Postfix's dot_lockfile does.
struct DotLock(PathBuf);

impl DotLock {
    fn take(mbox: &Path) -> std::io::Result<Self> {
        let mut lock = mbox.as_os_str().to_owned();
        lock.push(".lock");
        let lock = PathBuf::from(lock);
        for _ in 0..20 {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&lock)
            {
                Ok(_) => return Ok(Self(lock)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let stale = std::fs::metadata(&lock)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > Duration::from_secs(500));
                    if stale {
                        let _ = std::fs::remove_file(&lock);
                        continue;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            format!("unable to lock {}", lock.display()),
        ))
    }
}

impl Drop for DotLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Appends to the mbox file at `path`.
pub(crate) fn mbox(path: &Path, msg: &mut Message<'_>) -> Result<(), Outcome> {
    let what = || format!("cannot update mailbox {}", path.display());
    let f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| io_failure(what(), &e))?;
    let _dot = DotLock::take(path).map_err(|e| io_failure(what(), &e))?;
    // An fcntl (POSIX) lock as well, as Postfix on Linux and mail readers use;
    // it is released when the file is closed.
    let lock = libc::flock {
        l_type: libc::F_WRLCK as i16,
        l_whence: libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_SETLKW(&lock))
        .map_err(|e| io_failure(what(), &e.into()))?;
    let mut f = f;
    let start = f.metadata().map_err(|e| io_failure(what(), &e))?.len();
    let sender = if msg.sender.is_empty() {
        "MAILER-DAEMON"
    } else {
        msg.sender
    };
    let from_line = format!(
        "From {sender}  {}\n",
        pfx_sys::time::asctime(SystemTime::now())
    );
    let result = (|| -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(&mut f);
        out.write_all(from_line.as_bytes())?;
        // ">From " quoting: a line starting with "From " gets a '>'.
        let mut at_line_start = true;
        let mut pending: Vec<u8> = Vec::new();
        copy_limited(&mut out, msg, |b, o| {
            for &c in b {
                if at_line_start || !pending.is_empty() {
                    pending.push(c);
                    if b"From ".starts_with(&pending) {
                        if pending.len() == 5 {
                            o.push(b'>');
                            o.append(&mut pending);
                        }
                        at_line_start = false;
                        continue;
                    }
                    o.append(&mut pending);
                    at_line_start = c == b'\n';
                    continue;
                }
                o.push(c);
                at_line_start = c == b'\n';
            }
        })?;
        out.write_all(&pending)?;
        out.write_all(b"\n")?;
        out.flush()?;
        drop(out);
        f.sync_all()
    })();
    if let Err(e) = result {
        let _ = f.set_len(start);
        return Err(io_failure(format!("{}. error writing message", what()), &e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg<'a>(content: &'a mut &'a [u8], limit: u64) -> Message<'a> {
        Message {
            prepend: b"Return-Path: <a@b>\n",
            content,
            sender: "a@b",
            size_limit: limit,
        }
    }

    #[test]
    fn maildir_delivery_is_whole_and_named_like_postfix() {
        maildir_delivery(true);
    }

    #[test]
    fn maildir_delivery_through_a_named_tmp_file() {
        maildir_delivery(false);
    }

    fn maildir_delivery(unnamed: bool) {
        let maildir = |md: &Path, m: &mut Message<'_>| deliver_maildir(md, m, unnamed);
        let tmp = tempfile::tempdir().unwrap();
        let md = tmp.path().join("Maildir");
        let mut c: &[u8] = b"Subject: x\n\nbody \xe9\n";
        maildir(&md, &mut msg(&mut c, 0)).unwrap();
        let files: Vec<_> = std::fs::read_dir(md.join("new"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1);
        assert_eq!(
            std::fs::read(&files[0]).unwrap(),
            b"Return-Path: <a@b>\nSubject: x\n\nbody \xe9\n"
        );
        let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.contains(".V") && name.contains('I') && name.contains('M'),
            "{name}"
        );
        assert_eq!(std::fs::read_dir(md.join("tmp")).unwrap().count(), 0);
        assert!(md.join("cur").is_dir());
        // A user who removed new/ (or the whole Maildir) still gets mail.
        std::fs::remove_file(&files[0]).unwrap();
        std::fs::remove_dir(md.join("new")).unwrap();
        let mut c: &[u8] = b"again\n";
        maildir(&md, &mut msg(&mut c, 0)).unwrap();
        assert_eq!(std::fs::read_dir(md.join("new")).unwrap().count(), 1);
        std::fs::remove_dir_all(&md).unwrap();
        let mut c: &[u8] = b"and again\n";
        maildir(&md, &mut msg(&mut c, 0)).unwrap();
        assert_eq!(std::fs::read_dir(md.join("new")).unwrap().count(), 1);
    }

    #[test]
    fn size_limit_refuses_without_leaving_files() {
        let tmp = tempfile::tempdir().unwrap();
        let md = tmp.path().join("Maildir");
        for unnamed in [true, false] {
            let mut c: &[u8] = &[b'x'; 5000];
            let err = deliver_maildir(&md, &mut msg(&mut c, 1000), unnamed).unwrap_err();
            assert!(!err.is_temporary() && err.dsn == "5.2.2", "{err:?}");
            assert_eq!(std::fs::read_dir(md.join("tmp")).unwrap().count(), 0);
            assert_eq!(std::fs::read_dir(md.join("new")).unwrap().count(), 0);
        }
        let mb = tmp.path().join("mbox");
        std::fs::write(&mb, b"From old  x\n\nold\n\n").unwrap();
        let mut c: &[u8] = &[b'x'; 5000];
        assert!(mbox(&mb, &mut msg(&mut c, 1000)).is_err());
        assert_eq!(
            std::fs::read(&mb).unwrap(),
            b"From old  x\n\nold\n\n",
            "truncated back"
        );
    }

    #[test]
    fn mbox_quotes_from_lines_and_appends() {
        let tmp = tempfile::tempdir().unwrap();
        let mb = tmp.path().join("openstack");
        let mut c: &[u8] = b"Subject: x\n\nFrom here\nnot From here\nFrom\nFrost\n";
        mbox(&mb, &mut msg(&mut c, 0)).unwrap();
        let mut c2: &[u8] = b"Subject: y\n\nsecond\n";
        mbox(&mb, &mut msg(&mut c2, 0)).unwrap();
        let text = String::from_utf8(std::fs::read(&mb).unwrap()).unwrap();
        let first = text.lines().next().unwrap();
        assert!(first.starts_with("From a@b  "), "{first}");
        assert!(
            text.contains("\n>From here\nnot From here\nFrom\nFrost\n\nFrom a@b  "),
            "{text}"
        );
        assert!(text.ends_with("second\n\n"));
        assert!(!tmp.path().join("openstack.lock").exists());
    }

    #[test]
    fn mbox_refuses_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("elsewhere");
        std::fs::write(&target, b"").unwrap();
        let mb = tmp.path().join("victim");
        std::os::unix::fs::symlink(&target, &mb).unwrap();
        let mut c: &[u8] = b"x\n";
        assert!(mbox(&mb, &mut msg(&mut c, 0)).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"");
    }
}
