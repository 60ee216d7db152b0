//! User and group look-ups and dropping privileges.

use nix::unistd::{Gid, Group, Uid, User};

/// A resolved account: the ids a process switches to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub uid: Uid,
    pub gid: Gid,
}

/// Whether this process runs with root privileges.
pub fn is_root() -> bool {
    Uid::effective().is_root()
}

/// The ids of the running process.
pub fn current() -> Ids {
    Ids {
        uid: Uid::effective(),
        gid: Gid::effective(),
    }
}

/// Looks up a user by name: its uid and primary gid.
pub fn user(name: &str) -> Result<Ids, String> {
    match User::from_name(name) {
        Ok(Some(u)) => Ok(Ids {
            uid: u.uid,
            gid: u.gid,
        }),
        Ok(None) => Err(format!("unknown user: {name}")),
        Err(e) => Err(format!("look up user {name}: {e}")),
    }
}

/// Looks up a group by name.
pub fn group(name: &str) -> Result<Gid, String> {
    match Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid),
        Ok(None) => Err(format!("unknown group: {name}")),
        Err(e) => Err(format!("look up group {name}: {e}")),
    }
}

/// Permanently switches to `ids`: supplementary groups, then gid, then uid,
/// in that order (after setuid we could no longer change groups), and checks
/// that root cannot be regained.
pub fn drop_privileges(ids: Ids) -> Result<(), String> {
    nix::unistd::setgroups(&[ids.gid]).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setresgid(ids.gid, ids.gid, ids.gid).map_err(|e| format!("setresgid: {e}"))?;
    nix::unistd::setresuid(ids.uid, ids.uid, ids.uid).map_err(|e| format!("setresuid: {e}"))?;
    if !ids.uid.is_root() && nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err("privileges could be regained after the drop".into());
    }
    Ok(())
}

/// Confines the process to `dir` (master.cf's chroot column): chroot, then
/// a working directory inside it. Needs root; done before privileges are
/// dropped, and after everything outside `dir` the process needs is open.
pub fn chroot(dir: &std::path::Path) -> Result<(), String> {
    nix::unistd::chroot(dir).map_err(|e| format!("chroot({}): {e}", dir.display()))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir(/): {e}"))
}
