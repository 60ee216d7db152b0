//! Directories with a given owner and mode, and durable writes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nix::unistd::{Gid, Uid};

/// Creates `path` if missing, then gives it exactly `mode` and, when `owner`
/// is given, that owner. Existing directories are corrected, as Postfix's
/// `postfix set-permissions` would.
pub fn ensure_dir(path: &Path, mode: u32, owner: Option<(Uid, Gid)>) -> std::io::Result<()> {
    match std::fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => {}
        Err(e) => return Err(e),
    }
    if let Some((uid, gid)) = owner {
        nix::unistd::chown(path, Some(uid), Some(gid))?;
    }
    // The set-user-ID, set-group-ID and sticky bits an administrator (or
    // Debian's postinst: maildrop 1730, public 2710) gave it stay.
    let special = std::fs::metadata(path)?.mode() & 0o7000;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(special | mode))
}

/// Describes how `path` differs from the wanted permission bits (the
/// set-ID and sticky bits are not compared) and owner (the group only when
/// given), if it does.
pub fn check_dir(path: &Path, mode: u32, owner: Option<(Uid, Option<Gid>)>) -> Option<String> {
    let md = match std::fs::metadata(path) {
        Ok(md) if md.is_dir() => md,
        Ok(_) => return Some(format!("{}: not a directory", path.display())),
        Err(e) => return Some(format!("{}: {e}", path.display())),
    };
    let have = md.mode() & 0o777;
    if have != mode & 0o777 {
        return Some(format!(
            "{}: mode is {have:04o}, expected {mode:04o}",
            path.display()
        ));
    }
    if let Some((uid, gid)) = owner {
        if md.uid() != uid.as_raw() {
            return Some(format!(
                "{}: owner is {}, expected {uid}",
                path.display(),
                md.uid()
            ));
        }
        if let Some(gid) = gid.filter(|g| md.gid() != g.as_raw()) {
            return Some(format!(
                "{}: group is {}, expected {gid}",
                path.display(),
                md.gid()
            ));
        }
    }
    None
}

/// Flushes a directory's entries (a new name, a rename) to disk.
pub fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes a file's dirty pages to the device and waits for them, without
/// a sync of its metadata (`sync_file_range`): on ext4 this allocates the
/// file's blocks and sets its size in the running journal transaction, so a
/// later commit that holds a new name for the file holds its content too.
pub fn write_out(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: a plain system call on a descriptor `file` keeps open.
    match unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, flags) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Whether `file` lives on ext4 (or ext3) with a jbd2 journal: there every
/// fsync is a commit of the one running transaction, metadata reaches the
/// disk in the order it was changed, and a file's fsync makes a link just
/// made to it durable (the link count is the file's own metadata).
/// Anything else (no journal, an external one, another file system, an
/// overlay, /proc or /sys unreadable) answers false: the caller then syncs
/// each step itself.
pub fn jbd2_journaled(file: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ext4 = nix::sys::statfs::fstatfs(file)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::EXT4_SUPER_MAGIC);
    ext4 && file
        .metadata()
        .is_ok_and(|md| journal_of(Path::new("/"), md.dev()))
}

/// Whether the block device `dev` has a jbd2 journal of its own, as
/// `root/sys/dev/block/MAJ:MIN` names it and `root/proc/fs/jbd2/NAME-INO`
/// (the journal inside the file system, inode INO) shows it.
fn journal_of(root: &Path, dev: u64) -> bool {
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let Ok(link) = std::fs::read_link(root.join(format!("sys/dev/block/{major}:{minor}"))) else {
        return false;
    };
    let Some(name) = link.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let prefix = format!("{name}-");
    std::fs::read_dir(root.join("proc/fs/jbd2")).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix(&prefix))
                .is_some_and(|ino| !ino.is_empty() && ino.bytes().all(|b| b.is_ascii_digit()))
        })
    })
}

/// Replaces `path` with `contents` atomically: a temporary file in the same
/// directory, fsynced, renamed over the old one, then the directory fsynced.
/// The old file's mode is kept.
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mode = std::fs::metadata(path)
        .map(|m| m.mode() & 0o7777)
        .unwrap_or(0o644);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A /sys and /proc of a machine with `vda` (journal in inode 8),
    /// `loop1` (no journal) and `vd` (a device whose name is a prefix of
    /// another's).
    fn machine() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let block = root.path().join("sys/dev/block");
        let jbd2 = root.path().join("proc/fs/jbd2");
        std::fs::create_dir_all(&block).unwrap();
        std::fs::create_dir_all(jbd2.join("vda-8")).unwrap();
        for (dev, name) in [
            ("254:0", "virtio1/block/vda"),
            ("7:1", "virtual/block/loop1"),
            ("254:16", "virtio2/block/vd"),
        ] {
            std::os::unix::fs::symlink(format!("../../devices/{name}"), block.join(dev)).unwrap();
        }
        root
    }

    #[test]
    fn a_device_has_a_journal_when_jbd2_lists_it() {
        let root = machine();
        let dev = |major, minor| nix::sys::stat::makedev(major, minor);
        assert!(journal_of(root.path(), dev(254, 0)));
        assert!(!journal_of(root.path(), dev(7, 1)), "not listed by jbd2");
        assert!(
            !journal_of(root.path(), dev(254, 16)),
            "vda's journal is not vd's"
        );
        assert!(!journal_of(root.path(), dev(8, 1)), "no such device");
    }

    #[test]
    fn a_file_in_memory_has_no_journal() {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let mut f = File::create(dir.path().join("f")).unwrap();
        f.write_all(b"x").unwrap();
        write_out(&f).unwrap();
        assert!(!jbd2_journaled(&f));
    }

    #[test]
    fn ensure_dir_sets_exact_mode_even_under_umask() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("maildrop");
        ensure_dir(&d, 0o730, None).unwrap();
        assert_eq!(check_dir(&d, 0o730, None), None);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(check_dir(&d, 0o730, None).unwrap().contains("mode is 0777"));
        ensure_dir(&d, 0o730, None).unwrap();
        assert_eq!(check_dir(&d, 0o730, None), None);
    }

    #[test]
    fn write_atomic_replaces_content_and_keeps_mode() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("main.cf");
        std::fs::write(&f, "old\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&f, b"new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "new\n");
        assert_eq!(std::fs::metadata(&f).unwrap().mode() & 0o777, 0o640);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
