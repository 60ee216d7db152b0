//! The queue directory tree, as Postfix's `postfix-files` manifest lays it out.
//!
//! Started as root, master creates these with the listed owner and mode;
//! started as an ordinary user, everything belongs to that user (same modes).

use std::path::Path;

use nix::unistd::{Gid, Uid};

/// Who owns a queue directory when the system runs as root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// root:root (`pid/`, the queue directory itself).
    Root,
    /// `$mail_owner`, group root as Postfix's `postfix-files` leaves it
    /// (any group is accepted).
    MailOwner,
    /// `$mail_owner` : `$setgid_group`, so `postdrop` and `postqueue` can reach it.
    MailOwnerSetgid,
}

/// One directory: path relative to `queue_directory` ("" is the queue directory).
#[derive(Debug, Clone, Copy)]
pub struct Dir {
    pub name: &'static str,
    pub owner: Owner,
    pub mode: u32,
}

const fn d(name: &'static str, owner: Owner, mode: u32) -> Dir {
    Dir { name, owner, mode }
}

/// Every queue directory, parents first.
pub static DIRS: &[Dir] = &[
    d("", Owner::Root, 0o755),
    d("pid", Owner::Root, 0o755),
    d("maildrop", Owner::MailOwnerSetgid, 0o730),
    d("public", Owner::MailOwnerSetgid, 0o710),
    d("private", Owner::MailOwner, 0o700),
    d("incoming", Owner::MailOwner, 0o700),
    d("active", Owner::MailOwner, 0o700),
    d("deferred", Owner::MailOwner, 0o700),
    d("hold", Owner::MailOwner, 0o700),
    d("corrupt", Owner::MailOwner, 0o700),
    d("bounce", Owner::MailOwner, 0o700),
    d("defer", Owner::MailOwner, 0o700),
    d("trace", Owner::MailOwner, 0o700),
    d("flush", Owner::MailOwner, 0o700),
    d("saved", Owner::MailOwner, 0o700),
    // postfix-rs: finished queue files waiting to be reused (see crate::recycle).
    d("recycle", Owner::MailOwner, 0o700),
];

/// The ids each [`Owner`] stands for in one instance.
#[derive(Debug, Clone, Copy)]
pub struct Owners {
    pub root: (Uid, Gid),
    pub mail_owner: (Uid, Gid),
    pub setgid_group: Gid,
}

impl Owners {
    /// Everything owned by one account (an instance run by an ordinary user).
    pub fn single(uid: Uid, gid: Gid) -> Self {
        Self {
            root: (uid, gid),
            mail_owner: (uid, gid),
            setgid_group: gid,
        }
    }

    fn of(&self, owner: Owner) -> (Uid, Gid) {
        match owner {
            Owner::Root => self.root,
            Owner::MailOwner => (self.mail_owner.0, self.root.1),
            Owner::MailOwnerSetgid => (self.mail_owner.0, self.setgid_group),
        }
    }

    /// What `postfix check` requires: the group only where it matters.
    fn checked(&self, owner: Owner) -> (Uid, Option<Gid>) {
        let (uid, gid) = self.of(owner);
        (uid, (owner != Owner::MailOwner).then_some(gid))
    }
}

/// Creates (or corrects) every queue directory under `queue_dir`.
pub fn create(queue_dir: &Path, owners: &Owners) -> std::io::Result<()> {
    for dir in DIRS {
        let path = queue_dir.join(dir.name);
        pfx_sys::fs::ensure_dir(&path, dir.mode, Some(owners.of(dir.owner)))
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    }
    Ok(())
}

/// Lists what is wrong with the tree under `queue_dir`, one message each.
/// A missing `recycle/` is not (a queue Postfix made has none until
/// postfix-rs's master starts).
pub fn check(queue_dir: &Path, owners: &Owners) -> Vec<String> {
    DIRS.iter()
        .filter(|dir| dir.name != "recycle" || queue_dir.join(dir.name).exists())
        .filter_map(|dir| {
            pfx_sys::fs::check_dir(
                &queue_dir.join(dir.name),
                dir.mode,
                Some(owners.checked(dir.owner)),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_the_tree_that_check_accepts() {
        let tmp = tempfile::tempdir().unwrap();
        let q = tmp.path().join("spool");
        let owners = Owners::single(Uid::effective(), Gid::effective());
        assert!(!check(&q, &owners).is_empty());
        create(&q, &owners).unwrap();
        assert_eq!(check(&q, &owners), Vec::<String>::new());
        for name in [
            "maildrop", "incoming", "active", "deferred", "hold", "corrupt", "private", "public",
            "pid",
        ] {
            assert!(q.join(name).is_dir(), "{name}");
        }
    }
}
