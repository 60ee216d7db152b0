//! Acting with a recipient's privileges for file access.
//!
//! local runs many deliveries at once in one process, so it cannot switch
//! its process-wide ids. Linux's file-system ids (setfsuid/setfsgid) are per
//! thread: a delivery runs on a blocking thread that switches them for the
//! duration, so every file it opens or creates is checked against, and owned
//! by, the recipient. Without root nothing is switched: the instance user
//! owns everything.

/// Runs `f` with the file-system ids of `uid`/`gid` (when we are root).
pub(crate) fn as_user<T>(uid: u32, gid: u32, f: impl FnOnce() -> T) -> T {
    if !pfx_sys::users::is_root() {
        return f();
    }
    // SAFETY: setfsuid/setfsgid only change this thread's file-system ids.
    unsafe {
        libc::setfsgid(gid);
        libc::setfsuid(uid);
    }
    let out = f();
    // SAFETY: as above; back to root for the next delivery on this thread.
    unsafe {
        libc::setfsuid(0);
        libc::setfsgid(0);
    }
    out
}
