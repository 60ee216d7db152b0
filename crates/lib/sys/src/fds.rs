//! The master → child descriptor contract, in one place.
//!
//! Like Postfix's `master_proto.h`, the numbers are fixed: a child of master
//! finds its status socket at [`STATUS_FD`] and its service endpoint (listening
//! socket or FIFO) at [`LISTEN_FD`]. Over the status socket the child writes
//! one byte, [`STATUS_READY`], when it is ready to serve (a child that dies
//! before that has a startup problem and is throttled), and [`STATUS_USED`]
//! the first time it serves a request (this arms `wakeup` timers marked `?`).
//! When master goes away the child reads end-of-file there and exits.

use std::os::fd::RawFd;

/// The child's end of its status socket.
pub const STATUS_FD: RawFd = 5;
/// The service's endpoint.
pub const LISTEN_FD: RawFd = 6;
/// Written by a child once it is ready to serve.
pub const STATUS_READY: u8 = b'R';
/// Written by a child the first time it serves a request.
pub const STATUS_USED: u8 = b'U';

/// In a freshly forked child (before exec), moves `status` and `listen` to
/// their fixed numbers, without close-on-exec. Only async-signal-safe calls.
///
/// # Safety
/// Call only between fork and exec.
pub unsafe fn install_child_fds(status: RawFd, listen: Option<RawFd>) -> std::io::Result<()> {
    // First move both out of the way so neither is clobbered by the other's dup2.
    let high = |fd: RawFd| -> std::io::Result<RawFd> {
        // SAFETY: fcntl on a descriptor we own; async-signal-safe.
        let r = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100) };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(r)
        }
    };
    let status = high(status)?;
    let listen = listen.map(high).transpose()?;
    for (from, to) in [(Some(status), STATUS_FD), (listen, LISTEN_FD)] {
        if let Some(from) = from {
            // SAFETY: dup2 onto a fixed number; the new fd has no CLOEXEC.
            if unsafe { libc::dup2(from, to) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Whether this process was started by master (a program that also runs on
/// its own, as named does, reads its arguments differently then).
pub fn started_by_master() -> bool {
    // SAFETY: F_GETFD only queries the descriptor table.
    let status_open = unsafe { libc::fcntl(STATUS_FD, libc::F_GETFD) } >= 0;
    status_open && std::env::var_os("GENERATION").is_some() && std::env::var_os("MAXPROC").is_some()
}
