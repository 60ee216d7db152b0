//! Acting with a recipient's privileges for file access.
//!
//! A delivery agent runs many deliveries at once in one process, so it
//! cannot switch its process-wide ids. Linux's file-system ids
//! (setfsuid/setfsgid) are per thread: a delivery runs on a blocking thread
//! that switches them for the duration, so every file it opens or creates
//! is checked against, and owned by, the recipient. Without root nothing is
//! switched: the instance user owns everything.

/// Back to root's file-system ids when dropped, also when the work panicked.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        // SAFETY: setfsuid/setfsgid only change this thread's file-system
        // ids; back to root for the next delivery on this thread.
        unsafe {
            libc::setfsuid(0);
            libc::setfsgid(0);
        }
    }
}

/// Runs `f` with the file-system ids of `uid`/`gid` (when we are root).
pub fn as_user<T>(uid: u32, gid: u32, f: impl FnOnce() -> T) -> T {
    if !pfx_sys::users::is_root() {
        return f();
    }
    let _restore = Restore;
    // SAFETY: setfsuid/setfsgid only change this thread's file-system ids.
    unsafe {
        libc::setfsgid(gid);
        libc::setfsuid(uid);
    }
    f()
}
