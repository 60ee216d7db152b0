//! System-level helpers shared by the daemons and commands. No tokio here.
//!
//! - [`users`]: who is who (passwd/group look-ups, the privilege drop).
//! - [`lock`]: the one-master-per-instance lock file.
//! - [`fs`]: directories with owner and mode, durable (fsynced) writes.
//! - [`fds`]: the descriptor numbers master hands its children.
//! - [`time`]: dates in the forms mail headers and logs use.
//! - [`pid()`]: the process ID, asked for once.
//! - [`strerror()`]: an I/O error in C's words, as Postfix's messages have it.

pub mod fds;
pub mod fs;
pub mod lock;
mod pid;
pub mod time;
pub mod users;

pub use pid::pid;

/// An I/O error as C's strerror words it (`No such file or directory`),
/// without Rust's ` (os error 2)`.
pub fn strerror(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_owned(),
        None => e.to_string(),
    }
}
