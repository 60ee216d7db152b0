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
