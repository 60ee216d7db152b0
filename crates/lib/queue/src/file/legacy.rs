//! Reading queue files in postfix-rs's earlier format, so that mail queued
//! before an upgrade is still delivered. Nothing writes this format now.
//!
//! It differs from Postfix's: `C` holds three numbers (content offset,
//! content length, CRC-32), a `V` record (`1` or `2`) follows, version 2
//! has an `I` record naming the file, and the content sits raw between `M`
//! and the `X E` trailer.

use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use crate::file::{Layout, QueueFile, Recipient};
use crate::record::{self, kind, Source};
use crate::Error;

/// The version 2 record that named the file itself.
const ID: u8 = b'I';

/// Reads the rest of a file whose `C` record held `nums` (content offset,
/// content length and, in version 2, the checksum) and whose next record
/// is the version.
pub(crate) fn open(
    path: &std::path::Path,
    file: Arc<File>,
    total: u64,
    nums: &[u64],
    checked_from: u64,
) -> Result<QueueFile, Error> {
    let corrupt = |m: &str| Error::Corrupt(format!("{}: {m}", path.display()));
    let (content_offset, content_len, crc) = (nums[0], nums[1], nums.get(2).copied());
    if content_offset
        .checked_add(content_len)
        .and_then(|e| e.checked_add(4))
        .is_none_or(|e| e > total)
    {
        return Err(corrupt("size record points outside the file"));
    }
    let source = Source::File(file.clone(), total);
    let mut r = record::Reader::new(source.clone(), checked_from);
    let mut qf = QueueFile {
        path: path.to_owned(),
        arrival: UNIX_EPOCH,
        sender: String::new(),
        attrs: Vec::new(),
        recipients: Vec::new(),
        content_offset,
        content_len,
        layout: Layout::Raw,
        end: content_offset + content_len + 4,
        len: total,
        file: None,
        checksum: None,
        filter: None,
        redirect: None,
        warn: None,
        expired: false,
    };
    let (mut version, mut id, mut orig) = (None, None, None);
    loop {
        let (at, k, data) = r
            .next(64 * 1024)?
            .ok_or_else(|| corrupt("no content record"))?;
        let text = String::from_utf8_lossy(&data).into_owned();
        match k {
            kind::VERP if version.is_none() => version = Some(text),
            ID if id.is_none() => id = Some(text),
            kind::TIME => {
                let mut p = text.split(' ').map(|n| n.parse::<u64>().unwrap_or(0));
                let (secs, usecs) = (p.next().unwrap_or(0), p.next().unwrap_or(0));
                qf.arrival = Duration::from_secs(secs)
                    .checked_add(Duration::from_micros(usecs))
                    .and_then(|since| UNIX_EPOCH.checked_add(since))
                    .ok_or_else(|| corrupt("bad time record"))?;
            }
            kind::FROM => qf.sender = text,
            kind::ATTR => {
                if let Some((k, v)) = text.split_once('=') {
                    qf.attrs.push((k.to_owned(), v.to_owned()));
                }
            }
            kind::ORCP => orig = Some(text),
            kind::RCPT | kind::DONE => qf.recipients.push(Recipient {
                address: text,
                original: orig.take(),
                offset: at,
                done: k == kind::DONE,
                dsn_notify: 0,
                dsn_orcpt: None,
            }),
            kind::MESG => break,
            other => {
                return Err(corrupt(&format!(
                    "unexpected record type {:?}",
                    char::from(other)
                )))
            }
        }
    }
    match (version.as_deref(), id) {
        (Some("1"), None) if crc.is_none() => {}
        (Some("2"), Some(id)) => {
            if path.file_name() != Some(std::ffi::OsStr::new(&id)) {
                return Err(corrupt(&format!("queue ID record {id} names another file")));
            }
            let crc = crc
                .and_then(|c| u32::try_from(c).ok())
                .ok_or_else(|| corrupt("bad checksum"))?;
            qf.checksum = Some((checked_from, crc));
        }
        _ => return Err(corrupt("size or ID record does not match the version")),
    }
    if r.pos() != content_offset || qf.end > total {
        return Err(corrupt("content offsets do not match the file"));
    }
    let mut tail = [0u8; 4];
    use std::os::unix::fs::FileExt;
    file.read_exact_at(&mut tail, content_offset + content_len)
        .map_err(|_| corrupt("truncated"))?;
    if tail != [kind::XTRA, 0, kind::END, 0] {
        return Err(corrupt("missing end marker"));
    }
    qf.file = Some(source);
    Ok(qf)
}

/// Positional reads of the raw content range.
pub(crate) struct Raw {
    file: Source,
    pos: u64,
    end: u64,
}

impl Raw {
    pub(crate) fn new(file: Source, start: u64, len: u64) -> Self {
        Self {
            file,
            pos: start,
            end: start.saturating_add(len),
        }
    }
}

impl std::io::Read for Raw {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = usize::try_from(self.end - self.pos)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    use crate::file::records::SIZE_FIELD;
    use crate::test_queue as queue;
    use crate::QueueName;

    #[test]
    fn version_1_files_of_the_earlier_format_still_read() {
        let (_t, q) = queue();
        let path = q.path(QueueName::Incoming, "ABCDE123");
        let mut f = Vec::new();
        let content = b"Subject: old\n\nbody\n";
        let mut envelope = Vec::new();
        for (k, data) in [
            (kind::VERP, &b"1"[..]),
            (kind::TIME, b"1700000000 0"),
            (kind::FROM, b"s@x"),
            (kind::RCPT, b"r@x"),
            (kind::MESG, b""),
        ] {
            envelope.extend(record::head(k, data.len()));
            envelope.extend_from_slice(data);
        }
        let start = 2 + 2 * SIZE_FIELD + 1 + envelope.len();
        let size = format!("{start:>w$} {:>w$}", content.len(), w = SIZE_FIELD);
        f.extend(record::head(kind::SIZE, size.len()));
        f.extend_from_slice(size.as_bytes());
        f.extend(envelope);
        f.extend_from_slice(content);
        f.extend_from_slice(&[kind::XTRA, 0, kind::END, 0]);
        std::fs::write(&path, &f).unwrap();
        let qf = QueueFile::open(&path).unwrap();
        qf.verify().unwrap();
        assert_eq!(qf.recipients[0].address, "r@x");
        let mut got = Vec::new();
        qf.content().unwrap().read_to_end(&mut got).unwrap();
        assert_eq!(got, content);
    }
}
