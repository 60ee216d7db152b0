//! The queue file, in Postfix's own format, so that Postfix and postfix-rs
//! each deliver what the other left in the queue.
//!
//! A file is a sequence of records ([`crate::record`]): `C` (sizes and
//! offsets, fixed width), `T` (arrival), attributes, `S` (sender), `O`/`R`
//! (original and current recipient), `M`, the content as `N` records (one
//! line each, without its line end; longer than 2048 bytes: `L` pieces
//! first), `X`, and `E`. A file counts only when it ends with `E` **and**
//! its mode has the owner-execute bit (0700), Postfix's readiness bit, set
//! right before the one fsync that commits the file. Delivering a recipient
//! flips its `R` record's type byte to `D` in place, so progress survives a
//! crash, whichever system does the delivering.
//!
//! What postfix-rs adds is invisible to Postfix: a seventh number in the
//! `C` record, a CRC-32 of the rest of the file, and `A log_ident=` naming
//! the file itself (Postfix writes the same attribute), so that a file a
//! system crash caught in its fsync (readiness bit on disk, some data not)
//! is found out by qmgr ([`QueueFile::verify`]) instead of delivered. The
//! reader takes Postfix's files as Postfix's qmgr does (pointer records,
//! the extracted segment after `X`, every record type Postfix writes), and
//! maildrop files without a `C` record as Postfix's pickup does; files in
//! postfix-rs's earlier format are still read (`legacy`). See
//! docs/QUEUE-FORMAT.md.
//!
//! The parts: `records` (the `C` record, the full-name attribute, marking
//! recipients done), `writer` ([`Writer`]), `reader` ([`QueueFile::open`]
//! and reading the content) and `legacy` (the earlier format). Naming new
//! files and what a file's mode says are the crate's `naming` and `mode`,
//! which cleanup's reserve shares.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

mod legacy;
mod reader;
mod records;
mod writer;

pub use crate::mode::Readiness;
/// Record types, for code that marks or inspects records.
pub use crate::record::kind as rec;
pub use reader::Trim;
pub use records::{mark_done, FULL_NAME};
pub use writer::{Envelope, Writer};

/// A recipient as stored in the queue file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub address: String,
    /// The address as first given, before any rewriting (`O` record).
    pub original: Option<String>,
    /// Where its `R`/`D` record starts, for marking it done.
    pub offset: u64,
    pub done: bool,
    /// RFC 3461 NOTIFY as Postfix stores it (`notify_flags`: 1 NEVER,
    /// 2 SUCCESS, 4 FAILURE, 8 DELAY); 0 when the client gave none.
    pub dsn_notify: u32,
    /// RFC 3461 ORCPT (`dsn_orig_rcpt`, `rfc822;addr`).
    pub dsn_orcpt: Option<String>,
}

/// A recipient as it goes into a new queue file, with what the client
/// asked for it under RFC 3461.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NewRecipient {
    pub address: String,
    /// The address as first given (`O` record), when it differs.
    pub original: Option<String>,
    /// NOTIFY bits ([`notify`]); 0 when none were given.
    pub notify: u32,
    /// ORCPT (`rfc822;addr`), as given.
    pub orcpt: Option<String>,
}

impl NewRecipient {
    /// A recipient without DSN requests.
    pub fn new(address: impl Into<String>, original: Option<String>) -> Self {
        Self {
            address: address.into(),
            original,
            ..Self::default()
        }
    }
}

/// NOTIFY bits (Postfix's dsn_mask.h).
pub mod notify {
    pub const NEVER: u32 = 1;
    pub const SUCCESS: u32 = 2;
    pub const FAILURE: u32 = 4;
    pub const DELAY: u32 = 8;

    /// Whether a recipient with these flags wants a notice of `kind`: no
    /// NOTIFY at all means failures and delays, as Postfix treats it.
    pub fn wants(flags: u32, kind: u32) -> bool {
        if flags == 0 {
            kind != SUCCESS
        } else {
            flags & kind != 0
        }
    }

    /// The flags an alias's addresses inherit, as Postfix's: SUCCESS is
    /// the alias's to report (`expanded`), never its addresses' (NEVER
    /// when SUCCESS was all).
    pub fn inherited(flags: u32) -> u32 {
        if flags == SUCCESS {
            NEVER
        } else {
            flags & !SUCCESS
        }
    }
}

/// How a file stores its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// `N`/`L` records from the content offset up to `X` (Postfix's format).
    Records,
    /// Raw bytes of the given length (postfix-rs's earlier format).
    Raw,
}

/// A queue file as read back: the envelope, and where the content is.
#[derive(Debug, Clone)]
pub struct QueueFile {
    pub path: PathBuf,
    pub arrival: SystemTime,
    pub sender: String,
    /// `name=value` attributes (`sender_fullname` for an `F` record).
    pub attrs: Vec<(String, String)>,
    pub recipients: Vec<Recipient>,
    /// Where the content starts.
    pub content_offset: u64,
    /// The message size as Postfix counts it (its `C` record's content
    /// length: the bytes of the content records).
    pub content_len: u64,
    pub(crate) layout: Layout,
    /// Where the message's bytes end (after `E`): a reused file may go on.
    pub(crate) end: u64,
    /// The file's length when it was read.
    pub(crate) len: u64,
    /// The file as opened (a small one as read whole), so the content
    /// stays readable while a delivery is in progress even if postsuper
    /// removes or moves the file (see [`QueueFile::close`]).
    pub(crate) file: Option<crate::record::Source>,
    /// Where the checksummed bytes start (after the `C` record), and the
    /// checksum; none in files postfix-rs did not write.
    pub(crate) checksum: Option<(u64, u32)>,
    /// The content filter (`L` record: `transport:nexthop`) every
    /// recipient goes to instead of its own route (content_filter, or a
    /// FILTER action); the last record wins, as in Postfix.
    pub filter: Option<String>,
    /// The address the message goes to instead of its recipients (`>`
    /// record: a REDIRECT action); the last record wins.
    pub redirect: Option<String>,
    /// The `W` record: when to warn the sender of a delay (0: no more),
    /// and where its data lies (offset, length), for [`clear_warning`].
    pub warn: Option<Warn>,
    /// Marked for forced expiration (`postsuper -e`: [`force_expire`]).
    pub expired: bool,
}

/// Marks a complete queue file for forced expiration, as Postfix's
/// `postsuper -e` does: the group execute bit of its mode. False when the
/// file is no complete message (it is not touched) or already marked.
pub fn force_expire(path: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    // Opened, not followed: the mode changes on this file only.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    let mode = meta.permissions().mode();
    if !meta.is_file()
        || mode & 0o700 != crate::mode::MODE_COMPLETE
        || mode & crate::mode::MODE_EXPIRE != 0
    {
        return Ok(false);
    }
    // Still this message's file: a finished file is given back and may be
    // reused under another name (crate::recycle), and that message must
    // not be marked.
    use std::os::unix::fs::MetadataExt;
    let named = std::fs::symlink_metadata(path)?;
    if (named.dev(), named.ino()) != (meta.dev(), meta.ino()) || meta.nlink() != 1 {
        return Ok(false);
    }
    file.set_permissions(std::fs::Permissions::from_mode(
        (mode | crate::mode::MODE_EXPIRE) & 0o7777,
    ))?;
    Ok(true)
}

/// A queue file's delay warning time and where its `W` record's data is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Warn {
    pub at: u64,
    pub offset: u64,
    pub len: usize,
}

/// Records that the delay warning was sent: the `W` record's time becomes
/// 0, in place (same width), made durable.
pub fn clear_warning(path: &Path, w: &Warn) -> std::io::Result<()> {
    if w.len == 0 {
        return Ok(());
    }
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    let data = format!("{:>width$}", 0, width = w.len);
    nix::sys::uio::pwrite(&f, data.as_bytes(), w.offset as i64)?;
    f.sync_data()
}

/// A message as cleanup writes one, for the tests of the file's parts and
/// of naming.
#[cfg(test)]
pub(crate) mod test_support {
    use std::time::SystemTime;

    use super::{Envelope, NewRecipient, Writer};
    use crate::Queue;

    pub(crate) fn write(q: &Queue, content: &[u8]) -> String {
        let mut w = Writer::create(q, SystemTime::now(), None).unwrap();
        w.envelope(&Envelope {
            filter: None,
            sender: "hadoop@ywnds.com".into(),
            recipients: vec![
                NewRecipient::new("openstack@ywnds.com", None),
                NewRecipient::new("root@ywnds.com", Some("postmaster@ywnds.com".into())),
            ],
            attrs: vec![("client_address".into(), "127.0.0.1".into())],
        })
        .unwrap();
        w.content(content).unwrap();
        w.finish().unwrap()
    }
}
