//! Postfix's record framing, shared by queue files, maildrop files and the
//! bounce logs' neighbours: a type byte, the payload length in base-128
//! groups of 7 bits (low group first, 0x80 = "another byte follows", at
//! most 5 bytes), then the payload. The type letters are Postfix's
//! (`rec_type.h`); postfix-rs writes and reads the same files.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::Error;

/// Record types.
pub mod kind {
    /// First record of a queue file: sizes, offsets, counts (fixed width).
    pub const SIZE: u8 = b'C';
    /// Arrival time, `sec usec`.
    pub const TIME: u8 = b'T';
    /// Create time (legacy form of `A create_time=`).
    pub const CTIME: u8 = b'c';
    /// Sender full name.
    pub const FULL: u8 = b'F';
    /// Content inspector (legacy).
    pub const INSP: u8 = b'I';
    /// Content filter; in the content segment the same letter means a
    /// piece of a long line ([`CONT`]).
    pub const FILT: u8 = b'L';
    pub const FROM: u8 = b'S';
    /// A recipient whose delivery is finished (an `R` rewritten in place).
    pub const DONE: u8 = b'D';
    pub const RCPT: u8 = b'R';
    /// The original recipient of the next `R`.
    pub const ORCP: u8 = b'O';
    /// A recipient a milter cancelled.
    pub const DRCP: u8 = b'/';
    /// When to send a delay warning.
    pub const WARN: u8 = b'W';
    /// A named attribute, `name=value`.
    pub const ATTR: u8 = b'A';
    /// A killed record.
    pub const KILL: u8 = b'K';
    /// Redirect address.
    pub const RDR: u8 = b'>';
    /// Start of the content.
    pub const MESG: u8 = b'M';
    /// A piece of a line longer than the record limit.
    pub const CONT: u8 = b'L';
    /// One whole line, without its line end.
    pub const NORM: u8 = b'N';
    /// Padding a milter may overwrite.
    pub const DTXT: u8 = b'w';
    /// End of the content, start of the extracted segment.
    pub const XTRA: u8 = b'X';
    pub const RRTO: u8 = b'r';
    pub const ERTO: u8 = b'e';
    pub const PRIO: u8 = b'P';
    /// Pointer to another offset in the file (`0`: none).
    pub const PTR: u8 = b'p';
    pub const VERP: u8 = b'V';
    pub const DSN_RET: u8 = b'<';
    pub const DSN_ENVID: u8 = b'i';
    pub const DSN_ORCPT: u8 = b'o';
    pub const DSN_NOTIFY: u8 = b'n';
    /// End of the file.
    pub const END: u8 = b'E';
}

/// Pointer records a reader follows backwards before it calls the file a
/// loop (Postfix's postcat gives up after as many).
pub const MAX_BACKWARD_JUMPS: u32 = 10_000;

/// The longest piece of a line one content record holds (Postfix's
/// `line_length_limit` default, which its pickup enforces).
pub const LINE_LIMIT: usize = 2048;

/// A record's type byte and length bytes.
pub fn head(kind: u8, data_len: usize) -> Vec<u8> {
    let (buf, n) = head_bytes(kind, data_len);
    buf[..n].to_vec()
}

/// [`head`] without an allocation: the bytes and how many there are.
pub(crate) fn head_bytes(kind: u8, data_len: usize) -> ([u8; 6], usize) {
    let mut out = [0u8; 6];
    out[0] = kind;
    let mut n = 1;
    let mut len = data_len;
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 || n == 5 {
            out[n] = byte;
            return (out, n + 1);
        }
        out[n] = byte | 0x80;
        n += 1;
    }
}

/// The size of a whole record with `data_len` bytes of payload.
pub fn size(data_len: usize) -> u64 {
    let mut n = 1;
    let mut l = data_len >> 7;
    while l > 0 {
        n += 1;
        l >>= 7;
    }
    (1 + n + data_len) as u64
}

/// Files this small are read whole when opened, so that every later read
/// (the envelope, the checksum, the content) is a copy, not a system call.
/// A queue file read record by record as it is written, pointer records
/// included and not followed (postcat walks them itself).
pub struct Records {
    r: Reader,
    /// The file's length: no record is longer (a garbage length is an
    /// error, not an allocation).
    limit: usize,
}

impl Records {
    pub fn open(file: File) -> std::io::Result<Self> {
        let len = file.metadata()?.len();
        let source = Source::open(Arc::new(file), len)?;
        Ok(Self {
            r: Reader::new(source, 0),
            limit: usize::try_from(len).unwrap_or(usize::MAX),
        })
    }

    /// The next record as (offset, type, payload); `None` at the end.
    pub fn read_next(&mut self) -> Result<Option<(u64, u8, Vec<u8>)>, Error> {
        self.r.next(self.limit)
    }

    pub fn seek(&mut self, pos: u64) {
        self.r.seek(pos);
    }
}

pub(crate) const IMAGE_MAX: u64 = 64 * 1024;

/// What a queue file's records are read from: the open file (of a known
/// length), or the bytes of a small one, read whole when it was opened.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    File(Arc<File>, u64),
    Image(Arc<[u8]>),
}

impl Source {
    /// The file at its current length, read whole if it is small.
    pub(crate) fn open(file: Arc<File>, len: u64) -> std::io::Result<Self> {
        if len > IMAGE_MAX {
            return Ok(Self::File(file, len));
        }
        let mut image = vec![0u8; len as usize];
        let mut got = 0;
        while got < image.len() {
            match file.read_at(&mut image[got..], got as u64)? {
                0 => break,
                n => got += n,
            }
        }
        image.truncate(got);
        Ok(Self::Image(image.into()))
    }

    pub(crate) fn len(&self) -> u64 {
        match self {
            Self::File(_, len) => *len,
            Self::Image(image) => image.len() as u64,
        }
    }

    /// Reads what is there at `pos` into `buf`, up to the length the file
    /// had when opened (0 at or past it).
    pub(crate) fn read_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
        let want = usize::try_from(self.len().saturating_sub(pos))
            .unwrap_or(usize::MAX)
            .min(buf.len());
        match self {
            Self::File(file, _) => {
                let mut got = 0;
                while got < want {
                    match file.read_at(&mut buf[got..want], pos + got as u64)? {
                        0 => break,
                        n => got += n,
                    }
                }
                Ok(got)
            }
            Self::Image(image) => {
                let from = pos as usize;
                buf[..want].copy_from_slice(&image[from..from + want]);
                Ok(want)
            }
        }
    }
}

/// Positional, buffered record reads from a shared source: readers of
/// the same file do not share a file offset, and following a pointer
/// record is a jump.
pub(crate) struct Reader {
    source: Source,
    pos: u64,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_at: u64,
}

impl Reader {
    pub(crate) fn new(source: Source, pos: u64) -> Self {
        Self {
            source,
            pos,
            buf: Vec::new(),
            buf_at: 0,
        }
    }

    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    pub(crate) fn seek(&mut self, pos: u64) {
        self.pos = pos;
    }

    /// The bytes from the current position on, at least `n` of them
    /// (fewer only at the end of the file).
    fn window(&mut self, n: usize) -> std::io::Result<&[u8]> {
        if let Source::Image(image) = &self.source {
            let from = usize::try_from(self.pos)
                .unwrap_or(usize::MAX)
                .min(image.len());
            return Ok(&image[from..]);
        }
        let end = self.buf_at + self.buf.len() as u64;
        if self.pos < self.buf_at || self.pos + n as u64 > end {
            self.buf.resize(n.max(64 * 1024), 0);
            let got = self.source.read_at(&mut self.buf, self.pos)?;
            self.buf.truncate(got);
            self.buf_at = self.pos;
        }
        Ok(&self.buf[(self.pos - self.buf_at) as usize..])
    }

    /// The next record as (offset, type, payload); `None` at a clean end
    /// of file. A payload over `limit` bytes, or a record cut short, is
    /// [`Error::Corrupt`].
    pub(crate) fn next(&mut self, limit: usize) -> Result<Option<(u64, u8, Vec<u8>)>, Error> {
        let mut data = Vec::new();
        Ok(self
            .next_into(limit, &mut data)?
            .map(|(at, kind)| (at, kind, data)))
    }

    /// [`Reader::next`] into a buffer the caller reuses (replaced, not
    /// appended to).
    pub(crate) fn next_into(
        &mut self,
        limit: usize,
        data: &mut Vec<u8>,
    ) -> Result<Option<(u64, u8)>, Error> {
        let at = self.pos;
        // A type byte and up to five length bytes.
        let head = self.window(6)?;
        if head.is_empty() {
            return Ok(None);
        }
        let kind = head[0];
        let mut len = 0usize;
        let mut used = 1;
        loop {
            let Some(&b) = head.get(used) else {
                return Err(Error::Corrupt(format!(
                    "unexpected EOF reading length at offset {at}"
                )));
            };
            used += 1;
            len |= usize::from(b & 0x7f) << (7 * (used - 2));
            if b & 0x80 == 0 {
                break;
            }
            if used == 6 {
                return Err(Error::Corrupt(format!(
                    "too many length bits at offset {at}"
                )));
            }
        }
        if len > limit {
            return Err(Error::Corrupt(format!(
                "record of {len} bytes at offset {at} exceeds {limit}"
            )));
        }
        self.pos += used as u64;
        let body = self.window(len)?;
        let Some(body) = body.get(..len) else {
            return Err(Error::Corrupt(format!(
                "unexpected EOF in record at offset {at}"
            )));
        };
        data.clear();
        data.extend_from_slice(body);
        self.pos += len as u64;
        Ok(Some((at, kind)))
    }
}

/// The offset a pointer record names (`0`: none).
pub(crate) fn pointer(data: &[u8]) -> Option<u64> {
    std::str::from_utf8(data).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_encode_as_postfix_writes_them() {
        assert_eq!(head(b'N', 0), [b'N', 0]);
        assert_eq!(head(b'N', 95), [b'N', 0x5f]);
        assert_eq!(head(b'N', 2048), [b'N', 0x80, 0x10]);
        assert_eq!(head(b'N', 452), [b'N', 0xc4, 0x03]);
        assert_eq!(size(452), 3 + 452);
    }
}
