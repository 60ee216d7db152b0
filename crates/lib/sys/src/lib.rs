//! System-level helpers shared by the daemons and commands. No tokio here.
//!
//! - [`users`]: who is who (passwd/group look-ups, the privilege drop).
//! - [`lock`]: the one-master-per-instance lock file.
//! - [`fs`]: directories with owner and mode, durable (fsynced) writes.
//! - [`fds`]: the descriptor numbers master hands its children.
//! - [`time`]: dates in the forms mail headers and logs use.
//! - [`pid()`]: the process ID, asked for once.

pub mod fds;
pub mod fs;
pub mod lock;
mod pid;
pub mod time;
pub mod users;

pub use pid::pid;
