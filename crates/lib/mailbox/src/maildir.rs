//! Maildir delivery, as Postfix's maildir.c (local and virtual alike):
//! write the message in `tmp/`, fsync, link it to
//! `new/SEC.VdevIinoMusec.HOST`, fsync `new/`; the message appears whole
//! or not at all, and is on disk when the delivery is reported. On ext4
//! with a journal the same guarantees cost one journal commit instead of
//! two: the file is written out (blocks and size in the running
//! transaction), linked, then fsynced, which commits the link with it
//! (docs/RELIABILITY.md, step 4).
//! A message that names its [`Origin`](crate::Origin) gets a name of the
//! same shape made from the delivery instead,
//! `new/ARRIVALSEC.VdigestIqueueidMarrivalusec.HOST` (the digest is of the
//! delivery headers, which name the recipient), so that a delivery repeated
//! after a crash finds its earlier copy: the link fails and the file there
//! has the same size.
//! The file in `tmp/` is unnamed (`O_TMPFILE`) where the file system allows,
//! else `tmp/SEC.PpidQn.HOST`, unlinked after the link. Directories that are
//! missing (the Maildir itself and its parents included) are made, mode
//! 0700, when a create or link finds them missing, as Postfix's make_dirs.

use std::fs::OpenOptions;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::copy::copy;
use crate::{Error, Message};

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

/// Delivers into the Maildir at `dir` (made if missing).
pub fn maildir(dir: &Path, msg: &mut Message<'_>) -> Result<(), Error> {
    // An unnamed file is linked through its /proc/self/fd entry.
    static PROC_FD: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let unnamed = *PROC_FD.get_or_init(|| Path::new("/proc/self/fd").is_dir());
    deliver(dir, msg, unnamed, journaled)
}

/// Whether `file`'s file system is ext4 with a journal, asked once per
/// device.
fn journaled(file: &std::fs::File) -> bool {
    static SEEN: std::sync::Mutex<Vec<(u64, bool)>> = std::sync::Mutex::new(Vec::new());
    let Ok(dev) = file.metadata().map(|md| md.dev()) else {
        return false;
    };
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&(_, j)) = seen.iter().find(|(d, _)| *d == dev) {
        return j;
    }
    let j = pfx_sys::fs::jbd2_journaled(file);
    seen.push((dev, j));
    j
}

fn deliver(
    dir: &Path,
    msg: &mut Message<'_>,
    unnamed: bool,
    journaled: fn(&std::fs::File) -> bool,
) -> Result<(), Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let host = hostname();
    let tmp = dir.join("tmp");
    let create_failed = |source| Error::Create {
        path: tmp.clone(),
        source,
    };
    // The directories are made when they are missing, as Postfix does, not
    // tried for every message.
    let mut file = match TmpFile::create(&tmp, now, host, unnamed) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            make_maildir(dir)?;
            TmpFile::create(&tmp, now, host, unnamed)
        }
        r => r,
    }
    .map_err(create_failed)?;
    copy(&mut file.file, 0, b"", msg, |b, out| {
        out.extend_from_slice(b)
    })?;
    // With a journal the content only has to be on the device before the
    // commit that holds its link; elsewhere it must be durable before the
    // link exists.
    let journaled = journaled(&file.file);
    if journaled {
        pfx_sys::fs::write_out(&file.file)
    } else {
        file.file.sync_all()
    }
    .map_err(Error::Write)?;
    let md = file.file.metadata().map_err(create_failed)?;
    let unique = format!(
        "{}.V{:x}I{:x}M{}.{host}",
        now.as_secs(),
        md.dev(),
        md.ino(),
        now.subsec_micros()
    );
    let name = match msg.origin {
        // The same shape, from what the delivery is rather than when and
        // where it was written: a repeated delivery gets the same name.
        Some(o) => format!(
            "{}.V{:x}I{}M{}.{host}",
            o.arrival_us / 1_000_000,
            o.digest(msg.prepend),
            o.queue_id,
            o.arrival_us % 1_000_000
        ),
        None => unique.clone(),
    };
    let linked = match link_new(dir, &file, &name) {
        // An earlier attempt at this delivery linked it (same name, same
        // size): done once its link is durable too. A different file of
        // that name cannot be this delivery's, so this one gets a name of
        // its own.
        Err(Error::Link { source, .. })
            if source.kind() == std::io::ErrorKind::AlreadyExists && msg.origin.is_some() =>
        {
            let earlier = std::fs::symlink_metadata(dir.join("new").join(&name));
            if earlier.is_ok_and(|e| e.is_file() && e.len() == md.len()) {
                false
            } else {
                link_new(dir, &file, &unique)?;
                true
            }
        }
        r => r.map(|()| true)?,
    };
    // The link durable before the delivery is reported: qmgr's record of
    // it may reach the disk on its own (an in-place write), and the
    // Maildir may be on another file system. Postfix leaves this to the
    // file system's next commit. With a journal the file's fsync commits
    // the link, which changed the file's own link count.
    if linked && journaled {
        file.file.sync_all()
    } else {
        pfx_sys::fs::fsync_dir(&dir.join("new"))
    }
    .map_err(Error::Write)
}

/// Links the written file into `new/` as `name`.
fn link_new(dir: &Path, file: &TmpFile, name: &str) -> Result<(), Error> {
    let new = dir.join("new").join(name);
    let link_failed = |source| Error::Link {
        path: new.clone(),
        source,
    };
    match file.link(&new) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            make_maildir(dir)?;
            file.link(&new).map_err(link_failed)
        }
        r => r.map_err(link_failed),
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
    fn create(tmp: &Path, now: Duration, host: &str, unnamed: bool) -> std::io::Result<Self> {
        if unnamed {
            match OpenOptions::new()
                .write(true)
                .mode(0o600)
                .custom_flags(libc::O_TMPFILE)
                .open(tmp)
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

/// Makes the Maildir's directories that are missing, the Maildir's own
/// parents included (`virtual_mailbox_base/domain/user/`).
fn make_maildir(dir: &Path) -> Result<(), Error> {
    let mut builder = std::fs::DirBuilder::new();
    builder.mode(0o700).recursive(true);
    for sub in ["", "tmp", "new", "cur"] {
        let d = dir.join(sub);
        builder
            .create(&d)
            .map_err(|source| Error::Create { path: d, source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limit;

    fn msg<'a, 'b: 'a>(content: &'a mut &'b [u8], limit: u64) -> Message<'a> {
        Message {
            prepend: b"Return-Path: <a@b>\n",
            content,
            sender: "a@b",
            limit: Limit::message(limit),
            origin: None,
        }
    }

    /// The two ways to make a delivery durable: one commit (a journal),
    /// and a sync of the file and then of `new/`.
    const ORDERS: [fn(&std::fs::File) -> bool; 2] = [|_| true, |_| false];

    /// Queue file `ID1`'s delivery to `rcpt` into `md`, again.
    fn deliver_again(
        md: &Path,
        rcpt: &str,
        body: &[u8],
        unnamed: bool,
        journaled: fn(&std::fs::File) -> bool,
    ) {
        let prepend = format!("Delivered-To: {rcpt}\n");
        let mut c = body;
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
        deliver(md, &mut m, unnamed, journaled).unwrap();
    }

    /// Two queue recipients that end in one Maildir with the same delivery
    /// headers (a file target writes the original recipient in them) each
    /// get their copy, as in Postfix.
    #[test]
    fn two_queue_recipients_with_the_same_headers_get_two_copies() {
        let tmp = tempfile::tempdir().unwrap();
        let md = tmp.path().join("Maildir");
        for rcpt in ["alice@x", "bob@x"] {
            let mut c: &[u8] = b"body\n";
            let mut m = Message {
                prepend: b"Delivered-To: team@x\n",
                content: &mut c,
                sender: "a@b",
                limit: Limit::None,
                origin: Some(crate::Origin {
                    queue_id: "ID1",
                    arrival_us: 1,
                    recipient: rcpt,
                }),
            };
            deliver(&md, &mut m, true, journaled).unwrap();
        }
        assert_eq!(std::fs::read_dir(md.join("new")).unwrap().count(), 2);
    }

    #[test]
    fn a_delivery_repeated_after_a_crash_is_not_linked_twice() {
        for (unnamed, journaled) in [true, false]
            .into_iter()
            .flat_map(|u| ORDERS.map(|j| (u, j)))
        {
            let again = |md: &Path, rcpt: &str, body: &[u8]| {
                deliver_again(md, rcpt, body, unnamed, journaled);
            };
            let tmp = tempfile::tempdir().unwrap();
            let md = tmp.path().join("Maildir");
            again(&md, "a@x", b"body\n");
            again(&md, "a@x", b"body\n");
            let names: Vec<String> = std::fs::read_dir(md.join("new"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(names.len(), 1, "{names:?}");
            assert!(
                names[0].starts_with("1700000000.V") && names[0].contains("IID1M123456."),
                "{names:?}"
            );
            assert_eq!(std::fs::read_dir(md.join("tmp")).unwrap().count(), 0);
            // Another recipient's copy is another delivery.
            again(&md, "b@x", b"body\n");
            assert_eq!(std::fs::read_dir(md.join("new")).unwrap().count(), 2);
            // A different file under the name is never taken for this
            // delivery: the message gets a name of its own.
            again(&md, "a@x", b"a longer body\n");
            assert_eq!(std::fs::read_dir(md.join("new")).unwrap().count(), 3);
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
        for journaled in ORDERS {
            maildir_delivery_in(unnamed, journaled);
        }
    }

    fn maildir_delivery_in(unnamed: bool, journaled: fn(&std::fs::File) -> bool) {
        let maildir = |md: &Path, m: &mut Message<'_>| deliver(md, m, unnamed, journaled);
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
    fn missing_parent_directories_are_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let md = tmp.path().join("example.net/a/");
        for unnamed in [true, false] {
            let mut c: &[u8] = b"x\n";
            deliver(&md, &mut msg(&mut c, 0), unnamed, journaled).unwrap();
        }
        assert_eq!(std::fs::read_dir(md.join("new")).unwrap().count(), 2);
        for d in ["example.net", "example.net/a", "example.net/a/tmp"] {
            let mode = std::fs::metadata(tmp.path().join(d))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "{d}");
        }
    }

    #[test]
    fn size_limit_refuses_without_leaving_files() {
        let tmp = tempfile::tempdir().unwrap();
        let md = tmp.path().join("Maildir");
        for unnamed in [true, false] {
            let mut c: &[u8] = &[b'x'; 5000];
            let err = deliver(&md, &mut msg(&mut c, 1000), unnamed, journaled).unwrap_err();
            assert!(err.is_too_large() && err.dsn() == "5.2.2", "{err:?}");
            assert_eq!(std::fs::read_dir(md.join("tmp")).unwrap().count(), 0);
            assert_eq!(std::fs::read_dir(md.join("new")).unwrap().count(), 0);
        }
    }

    #[test]
    fn an_unwritable_place_is_a_create_failure() {
        let err = deliver(
            Path::new("/proc/nonexistent/Maildir"),
            &mut msg(&mut &b"x\n"[..], 0),
            true,
            journaled,
        )
        .unwrap_err();
        assert!(matches!(err, Error::Create { .. }), "{err:?}");
        assert_eq!(err.dsn(), "4.2.0");
        assert!(
            err.to_string()
                .starts_with("create maildir file /proc/nonexistent/Maildir"),
            "{err}"
        );
    }
}
