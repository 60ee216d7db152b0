//! What the writer and the reader agree on beyond the record framing
//! (crate::record): the `C` record's fixed-width layout, the attribute that
//! stands for Postfix's `F` record, and marking recipients done in place.

use std::fs::OpenOptions;
use std::path::Path;

use crate::record::{self, kind};

/// Width of each number in the `C` record (Postfix's `%15ld`).
pub(super) const SIZE_FIELD: usize = 15;
/// The attribute that holds the sender's full name where Postfix has an
/// `F` record.
pub const FULL_NAME: &str = "sender_fullname";

/// What the `C` record says, as Postfix reads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Sizes {
    /// Bytes of content records, from `data_offset` to the `X` record.
    pub(super) data_size: u64,
    pub(super) data_offset: u64,
    pub(super) recipients: u64,
    /// The message size Postfix logs and announces (`SIZE=`).
    pub(super) content_len: u64,
}

/// The whole `C` record, fixed width, so that finish can write it over the
/// placeholder in one piece: Postfix's six numbers (data size, data offset,
/// recipients, qmgr flags, content length, SMTPUTF8 flags), then the
/// checksum, which Postfix's readers do not look at.
pub(super) fn size_record(s: &Sizes, crc: u32) -> Vec<u8> {
    let field = format!(
        "{:>w$} {:>w$} {:>w$} {:>w$} {:>w$} {:>w$} {crc:>w$}",
        s.data_size,
        s.data_offset,
        s.recipients,
        0,
        s.content_len,
        0,
        w = SIZE_FIELD
    );
    let mut out = record::head(kind::SIZE, field.len());
    out.extend_from_slice(field.as_bytes());
    out
}

/// Marks recipients done by flipping their record type in place, then
/// syncs once: after a crash they are not delivered again. A data sync is
/// enough for an in-place write; what the mark stands for was made durable
/// by the delivery agent before it answered (a Maildir's `new/` fsynced, an
/// mbox fsynced), so the mark cannot reach the disk ahead of the mail
/// (docs/RELIABILITY.md, "Crash consistency").
pub fn mark_done(path: &Path, offsets: &[u64]) -> std::io::Result<()> {
    let f = OpenOptions::new().write(true).open(path)?;
    for &off in offsets {
        nix::sys::uio::pwrite(&f, &[kind::DONE], off as i64)?;
    }
    f.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::file::test_support::write;
    use crate::file::QueueFile;
    use crate::test_queue as queue;
    use crate::QueueName;

    #[test]
    fn marking_done_survives_reopening() {
        let (_t, q) = queue();
        let id = write(&q, b"hello\n");
        let path = q.path(QueueName::Incoming, &id);
        let qf = QueueFile::open(&path).unwrap();
        mark_done(&path, &[qf.recipients[1].offset]).unwrap();
        let qf = QueueFile::open(&path).unwrap();
        assert_eq!(
            qf.pending().map(|r| r.address.as_str()).collect::<Vec<_>>(),
            ["openstack@ywnds.com"]
        );
    }
}
