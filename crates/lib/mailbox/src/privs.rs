//! Acting with a recipient's privileges for file access.
//!
//! A delivery agent runs many deliveries at once in one process, so it
//! cannot switch its process-wide ids. Linux's file-system ids
//! (setfsuid/setfsgid) and supplementary groups are per thread (glibc's
//! setgroups(3) broadcasts to every thread, the raw system call does not):
//! a delivery runs on a blocking thread that switches them for the
//! duration, so every file it opens or creates is checked against, and
//! owned by, the recipient alone, never by the daemon's own groups. Without
//! root nothing is switched: the instance user owns everything.

/// Back to the daemon's file-system ids and groups when dropped, also when
/// the work panicked.
struct Restore(&'static [libc::gid_t]);

/// This thread's supplementary groups (the raw system call: this thread
/// only).
fn set_thread_groups(groups: &[libc::gid_t]) -> bool {
    // SAFETY: the pointer and length describe `groups`, which outlives the
    // call; SYS_setgroups changes only the calling thread's credentials.
    unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) == 0 }
}

impl Drop for Restore {
    fn drop(&mut self) {
        // SAFETY: setfsuid/setfsgid only change this thread's file-system
        // ids; back to root for the next delivery on this thread.
        unsafe {
            libc::setfsuid(0);
            libc::setfsgid(0);
        }
        if !set_thread_groups(self.0) {
            // A thread that cannot get its groups back must not serve
            // another delivery with the wrong ones.
            std::process::abort();
        }
    }
}

/// Whether the daemon runs as root, and its own groups, read once: every
/// delivery thread holds them between deliveries ([`Restore`] puts them
/// back), and a delivery agent never changes its process's ids.
fn daemon() -> Option<&'static [libc::gid_t]> {
    static DAEMON: std::sync::OnceLock<Option<Vec<libc::gid_t>>> = std::sync::OnceLock::new();
    DAEMON
        .get_or_init(|| {
            pfx_sys::users::is_root().then(|| {
                nix::unistd::getgroups()
                    .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
                    .unwrap_or_default()
            })
        })
        .as_deref()
}

/// Runs `f` with the file-system ids of `uid`/`gid` and `gid` as the only
/// group (when we are root).
pub fn as_user<T>(uid: u32, gid: u32, f: impl FnOnce() -> T) -> T {
    let Some(groups) = daemon() else {
        return f();
    };
    let _restore = Restore(groups);
    if !set_thread_groups(&[gid]) {
        // Not knowing which groups this thread holds, give up the process
        // rather than write a file with the daemon's groups.
        std::process::abort();
    }
    // SAFETY: setfsuid/setfsgid only change this thread's file-system ids.
    unsafe {
        libc::setfsgid(gid);
        libc::setfsuid(uid);
    }
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A root-group file is out of reach of a user acting here, although
    /// the test (as root) is in group 0.
    #[test]
    fn the_daemons_own_groups_do_not_follow_into_a_delivery() {
        if !pfx_sys::users::is_root() {
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("pfx-privs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, "x").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
        nix::unistd::chown(&secret, Some(0.into()), Some(0.into())).unwrap();
        let (got, after) = std::thread::spawn(move || {
            // This thread alone joins group 0, as a daemon started from a
            // root login shell is.
            assert!(set_thread_groups(&[0]));
            let got = as_user(65534, 65534, || std::fs::read(&secret).is_ok());
            (got, nix::unistd::getgroups().unwrap())
        })
        .join()
        .unwrap();
        assert!(!got, "read a group-0 file as nobody");
        assert_eq!(
            after,
            [nix::unistd::Gid::from_raw(0)],
            "the groups came back"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
