//! Writing one message into a mailbox, for the agents that do final
//! delivery to files: local(8) and virtual(8).
//!
//! - [`maildir`]: a Maildir message appears in `new/` whole or not at all
//!   (written in `tmp/`, fsynced, linked into `new/`), as Postfix's
//!   maildir.c; missing directories are made on the way.
//! - [`mbox()`]: appended to a UNIX mailbox under the locks
//!   `mailbox_delivery_lock` / `virtual_mailbox_lock` name ([`Locks`]), with
//!   a `From ` line, `>From ` quoting and a blank line at the end; on any
//!   error the file is cut back to its old length. As Postfix's mbox_open.
//! - Both find the copy an earlier attempt at the same delivery left (the
//!   agent killed before qmgr recorded it) and do not write another, when
//!   the message names its [`Origin`].
//! - [`as_user`]: runs the file work with the recipient's file-system ids,
//!   so that every file is checked against, and owned by, the recipient.
//!
//! Neither writer follows a symbolic link at the last path component.
//! Failures are an [`Error`] whose text is Postfix's (`error writing
//! message: File too large`) and whose [`Error::dsn`] is the status Postfix
//! gives that failure; each agent puts its own words in front.

mod copy;
mod error;
mod maildir;
mod mbox;
mod privs;

pub use error::Error;
pub use maildir::maildir;
pub use mbox::{from_line, mbox, Locks, MboxOptions};
pub use privs::as_user;

use std::io::Read;

/// How big a delivery may make a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    None,
    /// At most this many bytes written by this delivery (`From ` line and
    /// quoting included).
    Message(u64),
    /// The file may not grow past this size, what it held before included:
    /// Postfix's file size limit (`virtual_mailbox_limit`).
    File(u64),
}

impl Limit {
    /// [`Limit::Message`], or none for 0 (`mailbox_size_limit = 0`).
    pub fn message(bytes: u64) -> Self {
        if bytes == 0 {
            Self::None
        } else {
            Self::Message(bytes)
        }
    }

    /// [`Limit::File`], or none for 0.
    pub fn file(bytes: u64) -> Self {
        if bytes == 0 {
            Self::None
        } else {
            Self::File(bytes)
        }
    }

    /// Whether a file that was `start` bytes long may hold `written` more.
    fn allows(self, start: u64, written: u64) -> bool {
        match self {
            Self::None => true,
            Self::Message(n) => written <= n,
            Self::File(n) => start.saturating_add(written) <= n,
        }
    }
}

/// Which delivery a write is: the queue file's ID and arrival time and the
/// queue recipient qmgr asked for. With the delivery headers (which name
/// the final recipient: one queue recipient may expand to several
/// mailboxes) it identifies one delivery of one message, so that a
/// delivery repeated after a crash (the agent killed after writing,
/// before qmgr recorded it) finds the earlier copy instead of writing
/// another: Maildir names come from it ([`maildir`]), and an mbox file
/// keeps the last ones it was given in an extended attribute ([`mbox()`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    pub queue_id: &'a str,
    /// Microseconds since the epoch.
    pub arrival_us: u64,
    /// The queue file's recipient this delivery is for.
    pub recipient: &'a str,
}

impl Origin<'_> {
    /// A digest of the queue recipient and the delivery headers.
    fn digest(&self, prepend: &[u8]) -> u64 {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(self.recipient.as_bytes());
        ctx.update(b"\n");
        ctx.update(prepend);
        let d = ctx.finish();
        let mut first = [0u8; 8];
        first.copy_from_slice(&d.as_ref()[..8]);
        u64::from_be_bytes(first)
    }

    /// The delivery's key: queue ID, arrival, recipient's digest.
    fn key(&self, prepend: &[u8]) -> String {
        format!(
            "{}.{}.{:016x}",
            self.queue_id,
            self.arrival_us,
            self.digest(prepend)
        )
    }
}

/// What goes into the mailbox.
pub struct Message<'a> {
    /// The delivery headers: `Return-Path:`, `X-Original-To:`, `Delivered-To:`.
    pub prepend: &'a [u8],
    /// The message as the queue file holds it.
    pub content: &'a mut dyn Read,
    /// The envelope sender, for the mbox `From ` line (empty: MAILER-DAEMON).
    pub sender: &'a str,
    pub limit: Limit,
    /// The queue file it comes from; `None` writes it as Postfix does,
    /// without looking for an earlier copy.
    pub origin: Option<Origin<'a>>,
}
