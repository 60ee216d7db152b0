//! The process ID, asked of the kernel once: every log line carries it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

static PID: AtomicU32 = AtomicU32::new(0);

extern "C" fn forget() {
    PID.store(0, Ordering::Relaxed);
}

/// This process's ID (what getpid(2) says), kept after the first call and
/// forgotten in the child of a fork.
pub fn pid() -> u32 {
    let known = PID.load(Ordering::Relaxed);
    if known != 0 {
        return known;
    }
    static AT_FORK: Once = Once::new();
    AT_FORK.call_once(|| {
        // SAFETY: registers a handler that only stores to an atomic, which
        // is async-signal-safe, as a child-after-fork handler must be.
        unsafe { libc::pthread_atfork(None, None, Some(forget)) };
    });
    let pid = std::process::id();
    PID.store(pid, Ordering::Relaxed);
    pid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forked_child_has_its_own() {
        let parent = pid();
        assert_eq!(parent, std::process::id());
        let (r, w) = nix::unistd::pipe().unwrap();
        // SAFETY: the child only calls pid(), writes and exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let ok = pid() == std::process::id() && pid() != parent;
                let _ = nix::unistd::write(&w, &[u8::from(ok)]);
                unsafe { libc::_exit(0) };
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(w);
                let mut b = [0u8; 1];
                nix::unistd::read(&r, &mut b).unwrap();
                nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(b, [1]);
            }
        }
    }
}
