//! User and group look-ups and dropping privileges.

use nix::unistd::{Gid, Group, Uid, User};

/// Why a look-up or a change of identity failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown user: {0}")]
    UnknownUser(String),
    #[error("unknown group: {0}")]
    UnknownGroup(String),
    #[error("look up {what} {name}: {source}")]
    Lookup {
        what: &'static str,
        name: String,
        source: nix::Error,
    },
    /// A system call failed: `setgroups`, `chroot(/dir)`...
    #[error("{call}: {source}")]
    Call { call: String, source: nix::Error },
    #[error("privileges could be regained after the drop")]
    Regainable,
}

fn call(name: impl Into<String>) -> impl FnOnce(nix::Error) -> Error {
    let call = name.into();
    move |source| Error::Call { call, source }
}

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
pub fn user(name: &str) -> Result<Ids, Error> {
    match User::from_name(name) {
        Ok(Some(u)) => Ok(Ids {
            uid: u.uid,
            gid: u.gid,
        }),
        Ok(None) => Err(Error::UnknownUser(name.to_owned())),
        Err(source) => Err(Error::Lookup {
            what: "user",
            name: name.to_owned(),
            source,
        }),
    }
}

/// Looks up a group by name.
pub fn group(name: &str) -> Result<Gid, Error> {
    match Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid),
        Ok(None) => Err(Error::UnknownGroup(name.to_owned())),
        Err(source) => Err(Error::Lookup {
            what: "group",
            name: name.to_owned(),
            source,
        }),
    }
}

/// Permanently switches to `ids`: supplementary groups, then gid, then uid,
/// in that order (after setuid we could no longer change groups), and checks
/// that root cannot be regained.
pub fn drop_privileges(ids: Ids) -> Result<(), Error> {
    nix::unistd::setgroups(&[ids.gid]).map_err(call("setgroups"))?;
    nix::unistd::setresgid(ids.gid, ids.gid, ids.gid).map_err(call("setresgid"))?;
    nix::unistd::setresuid(ids.uid, ids.uid, ids.uid).map_err(call("setresuid"))?;
    if !ids.uid.is_root() && nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(Error::Regainable);
    }
    Ok(())
}

/// Makes `cmd` run in a session of its own, as `uid` with `gid` as its only
/// group (Postfix's set_ugid(): a command user that is also in adm or
/// postdrop gets none of their access). An instance run by an ordinary
/// user runs the command as that user.
pub fn run_as(cmd: &mut std::process::Command, uid: Uid, gid: Gid) {
    use std::os::unix::process::CommandExt;
    let root = is_root();
    let groups = [gid];
    // SAFETY: setsid, setgroups, setgid and setuid are async-signal-safe;
    // the group array was built before the fork.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if root {
                nix::unistd::setgroups(&groups).map_err(std::io::Error::from)?;
                nix::unistd::setgid(gid).map_err(std::io::Error::from)?;
                nix::unistd::setuid(uid).map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
}

/// Confines the process to `dir` (master.cf's chroot column): chroot, then
/// a working directory inside it. Needs root; done before privileges are
/// dropped, and after everything outside `dir` the process needs is open.
pub fn chroot(dir: &std::path::Path) -> Result<(), Error> {
    nix::unistd::chroot(dir).map_err(call(format!("chroot({})", dir.display())))?;
    nix::unistd::chdir("/").map_err(call("chdir(/)"))
}
