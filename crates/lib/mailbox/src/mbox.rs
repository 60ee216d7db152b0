//! Appending to a UNIX mailbox, as Postfix's mbox_open and mail_copy:
//! the dotlock `FILE.lock` first (for a regular file, or one that does not
//! exist yet), then the file, opened for appending or created mode 0600
//! (never through a symbolic link), then the kernel locks (fcntl, flock)
//! that [`Locks`] names. A regular file must have exactly one link once
//! locked. Then a `From ` line, `>From ` quoting, a blank line at the end,
//! fsync; on any error the file is cut back to its old length. A message
//! that names its [`Origin`](crate::Origin) is recorded in the file's
//! extended attribute `user.postfix-rs.delivered` (the last deliveries,
//! 2 KiB of them, and where each ends), and not written again when it is
//! found there.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::copy::{copy, FromQuoting};
use crate::{Error, Message};

/// How many times a lock is tried (`deliver_lock_attempts`), how long to
/// wait in between (`deliver_lock_delay`), and when a dotlock is stale
/// (`stale_lock_time`): Postfix's defaults.
const LOCK_ATTEMPTS: u32 = 20;
const LOCK_DELAY: Duration = Duration::from_secs(1);
const STALE_LOCK: Duration = Duration::from_secs(500);

/// The locks taken on an mbox file (`mailbox_delivery_lock`,
/// `virtual_mailbox_lock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locks {
    pub fcntl: bool,
    pub flock: bool,
    pub dotlock: bool,
}

impl Default for Locks {
    /// Postfix's default on Linux: `fcntl, dotlock`.
    fn default() -> Self {
        Self {
            fcntl: true,
            flock: false,
            dotlock: true,
        }
    }
}

impl Locks {
    /// Parses a lock list (`fcntl, dotlock`); an unknown name is refused
    /// with Postfix's text (its name_mask reports `mailbox_delivery_lock`
    /// for either parameter).
    pub fn parse(value: &str) -> Result<Self, String> {
        let mut locks = Self {
            fcntl: false,
            flock: false,
            dotlock: false,
        };
        for name in value
            .split(|c: char| c == ',' || c.is_ascii_whitespace())
            .filter(|n| !n.is_empty())
        {
            match name.to_ascii_lowercase().as_str() {
                "fcntl" => locks.fcntl = true,
                "flock" => locks.flock = true,
                "dotlock" => locks.dotlock = true,
                _ => {
                    return Err(format!(
                        "unknown mailbox_delivery_lock value \"{name}\" in \"{value}\""
                    ))
                }
            }
        }
        Ok(locks)
    }
}

/// What [`mbox()`] checks besides the locks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MboxOptions {
    pub locks: Locks,
    /// Refuse anything but a regular file ([`Error::NotRegular`]), as
    /// virtual(8) does; local writes to `/dev/null` as well.
    pub regular_only: bool,
    /// The file must belong to this uid (`strict_mailbox_ownership`,
    /// [`Error::NotOwner`]).
    pub owner: Option<u32>,
}

/// An exclusive `PATH.lock` file, removed when dropped. Stale locks (older
/// than `stale_lock_time`, 500 s) are broken, as Postfix's dot_lockfile does.
struct DotLock(PathBuf);

impl DotLock {
    fn take(mbox: &Path) -> Result<Self, Error> {
        let mut lock = mbox.as_os_str().to_owned();
        lock.push(".lock");
        let lock = PathBuf::from(lock);
        let mut attempt = 1;
        loop {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&lock)
            {
                Ok(_) => return Ok(Self(lock)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if attempt >= LOCK_ATTEMPTS {
                        return Err(Error::DotLock {
                            path: lock,
                            source: e,
                        });
                    }
                    let stale = std::fs::metadata(&lock)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > STALE_LOCK);
                    if stale {
                        let _ = std::fs::remove_file(&lock);
                    } else {
                        std::thread::sleep(LOCK_DELAY);
                    }
                    attempt += 1;
                }
                Err(source) => return Err(Error::DotLock { path: lock, source }),
            }
        }
    }
}

impl Drop for DotLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Takes one kernel lock without waiting, tried [`LOCK_ATTEMPTS`] times,
/// as Postfix's deliver_flock.
fn kernel_lock(f: &File, try_lock: impl Fn(&File) -> nix::Result<()>) -> Result<(), Error> {
    let mut attempt = 1;
    loop {
        match try_lock(f) {
            Ok(()) => return Ok(()),
            Err(e) if attempt >= LOCK_ATTEMPTS => return Err(Error::Lock(e.into())),
            Err(_) => {
                std::thread::sleep(LOCK_DELAY);
                attempt += 1;
            }
        }
    }
}

fn fcntl_lock(f: &File) -> nix::Result<()> {
    let lock = libc::flock {
        l_type: libc::F_WRLCK as i16,
        l_whence: libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    nix::fcntl::fcntl(f, nix::fcntl::FcntlArg::F_SETLK(&lock)).map(|_| ())
}

fn flock_lock(f: &File) -> nix::Result<()> {
    // SAFETY: flock on a descriptor this File owns; released when it closes.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    nix::errno::Errno::result(r).map(|_| ())
}

/// Appends the message to the mbox file at `path`.
/// The `From sender  date` line that starts a message in an mbox file, and
/// what local(8) gives a command first (Postfix's MAIL_COPY_FROM); the null
/// sender is `MAILER-DAEMON`.
pub fn from_line(sender: &str) -> String {
    let sender = if sender.is_empty() {
        "MAILER-DAEMON"
    } else {
        sender
    };
    format!(
        "From {sender}  {}\n",
        pfx_sys::time::asctime(SystemTime::now())
    )
}

pub fn mbox(path: &Path, msg: &mut Message<'_>, opts: &MboxOptions) -> Result<(), Error> {
    // Dot-lock regular files only (never /dev/null's directory), and files
    // that do not exist yet.
    let regular = |m: &std::fs::Metadata| m.file_type().is_file();
    let _dot = match std::fs::metadata(path) {
        Ok(m) if !regular(&m) => None,
        _ if opts.locks.dotlock => Some(DotLock::take(path)?),
        _ => None,
    };
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(Error::Open)?;
    let md = f.metadata().map_err(Error::Open)?;
    let is_file = regular(&md);
    if is_file {
        if opts.locks.flock {
            kernel_lock(&f, flock_lock)?;
        }
        if opts.locks.fcntl {
            kernel_lock(&f, fcntl_lock)?;
        }
    }
    // Locked now: what the file holds stays as it is until we are done.
    let md = f.metadata().map_err(Error::Open)?;
    if is_file && md.nlink() != 1 {
        return Err(Error::Changed);
    }
    if opts.regular_only && !is_file {
        return Err(Error::NotRegular {
            path: path.to_owned(),
        });
    }
    if opts.owner.is_some_and(|uid| uid != md.uid()) {
        return Err(Error::NotOwner {
            path: path.to_owned(),
        });
    }
    let start = md.len();
    // A delivery this file already holds is not written again.
    let record = match msg.origin {
        Some(o) if is_file => Some(Record::read(&f, o.key(msg.prepend))),
        _ => None,
    };
    if record.as_ref().is_some_and(|r| r.holds(start)) {
        // The earlier attempt may have been stopped before its fsync.
        return f.sync_all().map_err(Error::Write);
    }
    let from_line = from_line(msg.sender);
    let result = (|| -> Result<(), Error> {
        let mut out = std::io::BufWriter::new(&mut f);
        let mut quoting = FromQuoting::new();
        let written = copy(&mut out, start, from_line.as_bytes(), msg, |b, o| {
            quoting.quote(b, o)
        })?;
        let mut tail = quoting.finish();
        tail.push(b'\n');
        if !msg.limit.allows(start, written + tail.len() as u64) {
            return Err(Error::Write(std::io::Error::from_raw_os_error(libc::EFBIG)));
        }
        out.write_all(&tail).map_err(Error::Write)?;
        out.flush().map_err(Error::Write)?;
        drop(out);
        // Recorded before the fsync, which then makes both durable: an
        // agent killed after this leaves a record of what the file holds.
        if let Some(r) = &record {
            r.add(&f, start, f.metadata().map_err(Error::Write)?.len());
        }
        if is_file {
            f.sync_all().map_err(Error::Write)?;
        }
        Ok(())
    })();
    if result.is_err() && is_file {
        let _ = f.set_len(start);
        if let Some(r) = &record {
            r.restore(&f);
        }
    }
    result
}

/// The deliveries an mbox file was last given, newest last, in its
/// extended attribute `user.postfix-rs.delivered`: one line `KEY END` each,
/// where END is the file's length after that delivery. Where the file
/// system keeps no such attribute, nothing is recorded and every delivery
/// is written, as Postfix writes it.
struct Record {
    key: String,
    /// The attribute as read (`None`: absent or unreadable).
    old: Option<Vec<u8>>,
}

impl Record {
    const ATTR: &'static str = "user.postfix-rs.delivered";
    /// The record's size at most (about 50 deliveries): more than can
    /// happen to one file between a crash and the retry that repeats the
    /// interrupted one, and well inside the 4 KiB that ext4 keeps for all
    /// of a file's extended attributes.
    const MAX_BYTES: usize = 2048;

    fn read(f: &File, key: String) -> Self {
        use xattr::FileExt;
        let old = f.get_xattr(Self::ATTR).ok().flatten();
        Self { key, old }
    }

    fn lines(&self) -> impl Iterator<Item = (&str, u64)> {
        std::str::from_utf8(self.old.as_deref().unwrap_or_default())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (k, end) = l.split_once(' ')?;
                Some((k, end.parse().ok()?))
            })
    }

    /// Whether the file, `len` bytes long, holds this delivery already: it
    /// is recorded, and the file still reaches the end of it (a file cut
    /// shorter since may have lost it; writing it again loses nothing).
    fn holds(&self, len: u64) -> bool {
        self.lines().any(|(k, end)| k == self.key && end <= len)
    }

    /// Records this delivery, appended at `start`, as ending at `end`,
    /// best effort. Deliveries recorded past `start` are not in the file
    /// (a power loss kept the record and not the data): they go, or the
    /// file growing past them would make them look delivered.
    fn add(&self, f: &File, start: u64, end: u64) {
        use xattr::FileExt;
        let mut lines: Vec<String> = self
            .lines()
            .filter(|(k, e)| *k != self.key && *e <= start)
            .map(|(k, e)| format!("{k} {e}\n"))
            .collect();
        lines.push(format!("{} {end}\n", self.key));
        let mut size: usize = lines.iter().map(String::len).sum();
        let mut first = 0;
        while size > Self::MAX_BYTES && first + 1 < lines.len() {
            size -= lines[first].len();
            first += 1;
        }
        let _ = f.set_xattr(Self::ATTR, lines[first..].concat().as_bytes());
    }

    /// Puts the attribute back as it was (the delivery failed).
    fn restore(&self, f: &File) {
        use xattr::FileExt;
        let _ = match &self.old {
            Some(v) => f.set_xattr(Self::ATTR, v),
            None => f.remove_xattr(Self::ATTR),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limit;

    fn msg<'a, 'b: 'a>(content: &'a mut &'b [u8], limit: Limit) -> Message<'a> {
        Message {
            prepend: b"Return-Path: <a@b>\n",
            content,
            sender: "a@b",
            limit,
            origin: None,
        }
    }

    fn plain() -> MboxOptions {
        MboxOptions::default()
    }

    /// The first delivery of queue file `ID1` to `rcpt`, again.
    fn deliver_again(mb: &Path, rcpt: &str) -> Result<(), Error> {
        let prepend = format!("Delivered-To: {rcpt}\n");
        let mut c: &[u8] = b"Subject: once\n\nbody\n";
        let mut m = Message {
            prepend: prepend.as_bytes(),
            content: &mut c,
            sender: "a@b",
            limit: Limit::None,
            origin: Some(crate::Origin {
                queue_id: "ID1",
                arrival_us: 1_700_000_000_123_456,
                recipient: rcpt,
            }),
        };
        mbox(mb, &mut m, &plain())
    }

    #[test]
    fn a_delivery_repeated_after_a_crash_is_not_written_twice() {
        let tmp = tempfile::tempdir().unwrap();
        if !xattrs_work(tmp.path()) {
            return;
        }
        let mb = tmp.path().join("mbox");
        deliver_again(&mb, "a@x").unwrap();
        let once = std::fs::read(&mb).unwrap();
        // Someone else's message in between, then the same delivery again.
        let mut c: &[u8] = b"Subject: other\n\nother\n";
        mbox(&mb, &mut msg(&mut c, Limit::None), &plain()).unwrap();
        let both = std::fs::read(&mb).unwrap();
        deliver_again(&mb, "a@x").unwrap();
        assert_eq!(std::fs::read(&mb).unwrap(), both, "written once");
        assert!(both.starts_with(&once));
        // Another recipient of the same message is another delivery.
        deliver_again(&mb, "b@x").unwrap();
        let text = String::from_utf8(std::fs::read(&mb).unwrap()).unwrap();
        assert_eq!(text.matches("Subject: once").count(), 2, "{text}");
        // A file cut shorter than the recorded delivery gets it again.
        std::fs::write(&mb, b"").unwrap();
        deliver_again(&mb, "a@x").unwrap();
        let text = String::from_utf8(std::fs::read(&mb).unwrap()).unwrap();
        assert_eq!(text.matches("Subject: once").count(), 1, "{text}");
    }

    /// Whether files in `dir` keep user extended attributes (not tmpfs
    /// before Linux 6.6): the record needs them.
    fn xattrs_work(dir: &Path) -> bool {
        use xattr::FileExt;
        let probe = File::create(dir.join("probe")).unwrap();
        probe.set_xattr("user.probe", b"1").is_ok()
    }

    /// A power loss kept the record of a delivery and not its data; other
    /// mail then made the file longer than the record says it ended: the
    /// delivery, tried again, is still written.
    #[test]
    fn a_record_of_data_the_file_lost_does_not_count() {
        use xattr::FileExt;
        let tmp = tempfile::tempdir().unwrap();
        if !xattrs_work(tmp.path()) {
            return;
        }
        let mb = tmp.path().join("mbox");
        deliver_again(&mb, "a@x").unwrap();
        let len = std::fs::metadata(&mb).unwrap().len();
        // The data gone, the record kept.
        let record = File::open(&mb).unwrap().get_xattr(Record::ATTR).unwrap();
        std::fs::write(&mb, b"").unwrap();
        File::open(&mb)
            .unwrap()
            .set_xattr(Record::ATTR, &record.unwrap())
            .unwrap();
        // Another message's delivery, longer than the lost one.
        let mut c: &[u8] = &vec![b'y'; 2 * len as usize];
        let mut other = msg(&mut c, Limit::None);
        other.origin = Some(crate::Origin {
            queue_id: "ID9",
            arrival_us: 1_700_000_000_999_999,
            recipient: "a@x",
        });
        mbox(&mb, &mut other, &plain()).unwrap();
        assert!(std::fs::metadata(&mb).unwrap().len() > len);
        deliver_again(&mb, "a@x").unwrap();
        let text = String::from_utf8(std::fs::read(&mb).unwrap()).unwrap();
        assert_eq!(text.matches("Subject: once").count(), 1, "{text}");
    }

    #[test]
    fn size_limit_truncates_back() {
        let tmp = tempfile::tempdir().unwrap();
        let mb = tmp.path().join("mbox");
        std::fs::write(&mb, b"From old  x\n\nold\n\n").unwrap();
        let mut c: &[u8] = &[b'x'; 5000];
        let err = mbox(&mb, &mut msg(&mut c, Limit::message(1000)), &plain()).unwrap_err();
        assert!(err.is_too_large(), "{err:?}");
        assert_eq!(
            std::fs::read(&mb).unwrap(),
            b"From old  x\n\nold\n\n",
            "truncated back"
        );
    }

    #[test]
    fn a_file_limit_counts_what_the_mailbox_already_holds() {
        let tmp = tempfile::tempdir().unwrap();
        let mb = tmp.path().join("mbox");
        std::fs::write(&mb, [b'o'; 900]).unwrap();
        let mut c: &[u8] = b"Subject: small\n\nhi\n";
        // Fits as a message, not in the file.
        mbox(&mb, &mut msg(&mut c, Limit::message(1000)), &plain()).unwrap();
        let before = std::fs::metadata(&mb).unwrap().len();
        let mut c: &[u8] = b"Subject: small\n\nhi\n";
        let err = mbox(&mb, &mut msg(&mut c, Limit::file(1000)), &plain()).unwrap_err();
        assert_eq!(err.dsn(), "5.2.2");
        assert_eq!(std::fs::metadata(&mb).unwrap().len(), before);
    }

    #[test]
    fn mbox_quotes_from_lines_and_appends() {
        let tmp = tempfile::tempdir().unwrap();
        let mb = tmp.path().join("openstack");
        let mut c: &[u8] = b"Subject: x\n\nFrom here\nnot From here\nFrom\nFrost\n";
        mbox(&mb, &mut msg(&mut c, Limit::None), &plain()).unwrap();
        let mut c2: &[u8] = b"Subject: y\n\nsecond\n";
        mbox(&mb, &mut msg(&mut c2, Limit::None), &plain()).unwrap();
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
        assert!(mbox(&mb, &mut msg(&mut c, Limit::None), &plain()).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"");
        assert!(!tmp.path().join("victim.lock").exists());
    }

    #[test]
    fn a_hard_linked_mailbox_is_not_written() {
        let tmp = tempfile::tempdir().unwrap();
        let mb = tmp.path().join("mbox");
        std::fs::write(&mb, b"").unwrap();
        std::fs::hard_link(&mb, tmp.path().join("other")).unwrap();
        let mut c: &[u8] = b"x\n";
        let err = mbox(&mb, &mut msg(&mut c, Limit::None), &plain()).unwrap_err();
        assert!(matches!(err, Error::Changed), "{err:?}");
        assert_eq!(std::fs::read(&mb).unwrap(), b"");
    }

    #[test]
    fn a_missing_directory_fails_at_the_dotlock_as_in_postfix() {
        let mb = Path::new("/nonexistent/base/mbox");
        let mut c: &[u8] = b"x\n";
        let err = mbox(mb, &mut msg(&mut c, Limit::None), &plain()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to create lock file /nonexistent/base/mbox.lock: No such file or directory"
        );
        assert_eq!(err.dsn(), "4.2.0");
        let no_dotlock = MboxOptions {
            locks: Locks::parse("fcntl").unwrap(),
            ..plain()
        };
        let err = mbox(mb, &mut msg(&mut c, Limit::None), &no_dotlock).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot open file: No such file or directory"
        );
    }

    #[test]
    fn ownership_and_file_type_are_checked_when_asked() {
        let tmp = tempfile::tempdir().unwrap();
        let mb = tmp.path().join("mbox");
        let me = pfx_sys::users::current().uid.as_raw();
        let strict = MboxOptions {
            owner: Some(me.wrapping_add(1)),
            ..plain()
        };
        let mut c: &[u8] = b"x\n";
        let err = mbox(&mb, &mut msg(&mut c, Limit::None), &strict).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("destination {} is not owned by recipient", mb.display())
        );
        assert_eq!(err.dsn(), "4.2.0");
        assert_eq!(std::fs::read(&mb).unwrap(), b"", "nothing written");
        let mine = MboxOptions {
            owner: Some(me),
            regular_only: true,
            ..plain()
        };
        let mut c: &[u8] = b"x\n";
        mbox(&mb, &mut msg(&mut c, Limit::None), &mine).unwrap();
        let mut c: &[u8] = b"x\n";
        let err = mbox(Path::new("/dev/null"), &mut msg(&mut c, Limit::None), &mine).unwrap_err();
        assert_eq!(err.dsn(), "5.3.5");
        let mut c: &[u8] = b"x\n";
        mbox(
            Path::new("/dev/null"),
            &mut msg(&mut c, Limit::None),
            &plain(),
        )
        .unwrap();
    }

    #[test]
    fn lock_lists_parse_as_postfix_names_them() {
        assert_eq!(Locks::parse("fcntl, dotlock").unwrap(), Locks::default());
        let l = Locks::parse("flock").unwrap();
        assert!(l.flock && !l.fcntl && !l.dotlock);
        assert_eq!(
            Locks::parse("fcntl, lockf").unwrap_err(),
            "unknown mailbox_delivery_lock value \"lockf\" in \"fcntl, lockf\""
        );
    }

    #[test]
    fn a_lock_held_elsewhere_is_waited_for() {
        let tmp = tempfile::tempdir().unwrap();
        let mb = tmp.path().join("mbox");
        let lock = tmp.path().join("mbox.lock");
        std::fs::write(&lock, b"").unwrap();
        let l2 = lock.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            std::fs::remove_file(l2).unwrap();
        });
        let mut c: &[u8] = b"x\n";
        mbox(&mb, &mut msg(&mut c, Limit::None), &plain()).unwrap();
        t.join().unwrap();
        assert!(std::fs::read(&mb).unwrap().ends_with(b"x\n\n"));
        assert!(!lock.exists());
    }
}
