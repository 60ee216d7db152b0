//! The arrival time, sender and pending recipients of a queue file, read
//! as Postfix's qshape reads them, so both count the same messages: a file
//! named like a queue ID, complete (mode 0700 of 0733), whose records run
//! from a size record (`C`, then `T`) or a maildrop file's sender (`S`, or
//! `F` then `S`, dated by the file's mtime) to the end record (`E`) with a
//! sender and at least one recipient (`R`; delivered ones are `D`) on the
//! way. Anything else is not counted.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use pfx_queue::record::{self, kind, Records, MAX_BACKWARD_JUMPS};

/// What qshape counts of one message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Envelope {
    /// Arrival, in seconds since the epoch.
    pub(crate) time: f64,
    pub(crate) sender: Vec<u8>,
    pub(crate) recipients: Vec<Vec<u8>>,
}

/// qshape reads record lengths of at most three base-128 bytes.
const MAX_RECORD: usize = (1 << 21) - 1;

pub(crate) fn read(path: &Path) -> Option<Envelope> {
    let name = path.file_name()?.to_str()?;
    if name.len() < 6 || !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() || meta.mode() & 0o733 != 0o700 {
        return None;
    }
    let file = std::fs::File::open(path).ok()?;
    Reader {
        records: Records::open(file).ok()?,
        jumps: 0,
        at: 0,
    }
    .envelope(meta.mtime() as f64)
}

struct Reader {
    records: Records,
    /// Backward jumps made so far.
    jumps: u32,
    /// Where the next record starts.
    at: u64,
}

impl Reader {
    /// The next record, or `None` where qshape stops reading: the end, a
    /// damaged record, or a type byte `0` (false to Perl).
    fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        let (offset, t, data) = self.records.read_next().ok()??;
        if t == b'0' || data.len() > MAX_RECORD {
            return None;
        }
        self.at = offset + record::size(data.len());
        Some((t, data))
    }

    fn seek(&mut self, to: u64) -> Option<()> {
        if to <= self.at {
            self.jumps += 1;
            if self.jumps > MAX_BACKWARD_JUMPS {
                return None;
            }
        }
        self.at = to;
        self.records.seek(to);
        Some(())
    }

    /// Follows a pointer record (`p`) that points somewhere (not `0`).
    fn follow(&mut self, data: &[u8]) -> Option<()> {
        match number(data) {
            n if n > 0.0 => self.seek(n as u64),
            _ => Some(()),
        }
    }

    fn envelope(mut self, mtime: f64) -> Option<Envelope> {
        let (first, data) = self.next()?;
        let mut content_len = None;
        let (time, mut sender) = match first {
            kind::SIZE => {
                content_len = content_length(&data);
                let (t, data) = self.next()?;
                if t != kind::TIME {
                    return None;
                }
                (first_field(&data).map(number), None)
            }
            kind::FROM => (Some(mtime), Some(data)),
            kind::FULL => match self.next()? {
                (kind::FROM, s) => (Some(mtime), Some(s)),
                _ => return None,
            },
            _ => return None,
        };
        let mut recipients = Vec::new();
        while let Some((t, data)) = self.next() {
            match t {
                kind::PTR => self.follow(&data)?,
                kind::RCPT => recipients.push(data),
                kind::FROM => sender = Some(data),
                kind::MESG => {
                    sender.as_ref()?;
                    let after = match content_len {
                        Some(len) => {
                            self.seek(self.at + len)?;
                            self.next()
                        }
                        None => self.skip_content(),
                    };
                    if after.map(|(t, _)| t) != Some(kind::XTRA) {
                        return None;
                    }
                }
                kind::END => {
                    return match (time, sender) {
                        (Some(time), Some(sender)) if !recipients.is_empty() => Some(Envelope {
                            time,
                            sender,
                            recipients,
                        }),
                        _ => None,
                    };
                }
                _ => {}
            }
        }
        None
    }

    /// Reads past content records (following pointers); the first record
    /// that is none.
    fn skip_content(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            let (t, data) = self.next()?;
            match t {
                kind::NORM | kind::CONT => {}
                kind::PTR => self.follow(&data)?,
                _ => return Some((t, data)),
            }
        }
    }
}

/// The content length: the size record's first number, when it starts
/// as qshape expects (`^\s*(\d+)\s+\d+\s+\d+`).
fn content_length(data: &[u8]) -> Option<u64> {
    let mut fields = data
        .split(u8::is_ascii_whitespace)
        .filter(|f| !f.is_empty());
    let digits = |f: &[u8]| f.iter().all(u8::is_ascii_digit);
    let (len, second, third) = (fields.next()?, fields.next()?, fields.next()?);
    let well_formed =
        digits(len) && digits(second) && third.first().is_some_and(u8::is_ascii_digit);
    well_formed
        .then(|| std::str::from_utf8(len).ok()?.parse().ok())
        .flatten()
}

/// The first field of Perl's `split(/\s+/, ...)`: empty when the data
/// starts with white space, none when it holds nothing else.
fn first_field(data: &[u8]) -> Option<&[u8]> {
    if data.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    data.split(u8::is_ascii_whitespace).next()
}

/// A string as a Perl number: leading white space, then the longest
/// prefix that reads as a decimal number (0 if none).
pub(crate) fn number(data: impl AsRef<[u8]>) -> f64 {
    let data = data.as_ref();
    let text = String::from_utf8_lossy(data);
    let t = text.trim_start();
    let bytes = t.as_bytes();
    let mut end = 0;
    if matches!(bytes.first(), Some(b'+' | b'-')) {
        end = 1;
    }
    let digits = |from: usize| {
        bytes[from..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let int = digits(end);
    end += int;
    let mut frac = 0;
    if bytes.get(end) == Some(&b'.') {
        frac = digits(end + 1);
        if int + frac > 0 {
            end += 1 + frac;
        }
    }
    if int + frac == 0 {
        return 0.0;
    }
    if matches!(bytes.get(end), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(bytes.get(end + 1), Some(b'+' | b'-')));
        let exp = digits(end + 1 + sign);
        if exp > 0 {
            end += 1 + sign + exp;
        }
    }
    t[..end].parse().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn rec(t: u8, data: &[u8]) -> Vec<u8> {
        let mut out = record::head(t, data.len());
        out.extend_from_slice(data);
        out
    }

    fn write(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn numbers_read_as_perl_reads_them() {
        assert_eq!(number("  1733300000 123456"), 1_733_300_000.0);
        assert_eq!(number("        1234"), 1234.0);
        assert_eq!(number("2.5min"), 2.5);
        assert_eq!(number("abc"), 0.0);
        assert_eq!(number("-3"), -3.0);
        assert_eq!(number("1e3x"), 1000.0);
        assert_eq!(number("."), 0.0);
    }

    #[test]
    fn a_maildrop_file_is_dated_by_its_mtime_and_recipients_after_x_count() {
        let d = tempfile::tempdir().unwrap();
        let mut b = rec(b'F', b"Alice");
        b.extend(rec(b'S', b"alice@a.example"));
        b.extend(rec(b'R', b"one@b.example"));
        b.extend(rec(b'M', b""));
        b.extend(rec(b'N', b"Subject: x"));
        b.extend(rec(b'X', b""));
        b.extend(rec(b'R', b"two@c.example"));
        b.extend(rec(b'E', b""));
        let p = write(d.path(), "ABCDEF123", &b, 0o700);
        let env = read(&p).unwrap();
        assert_eq!(env.sender, b"alice@a.example");
        assert_eq!(env.recipients, [&b"one@b.example"[..], b"two@c.example"]);
        let mtime = std::fs::metadata(&p).unwrap().mtime() as f64;
        assert_eq!(env.time, mtime);
    }

    #[test]
    fn incomplete_misnamed_and_recipientless_files_do_not_count() {
        let d = tempfile::tempdir().unwrap();
        let mut b = rec(b'S', b"a@x");
        b.extend(rec(b'R', b"b@y"));
        b.extend(rec(b'E', b""));
        assert!(read(&write(d.path(), "ABCDEF", &b, 0o700)).is_some());
        assert!(
            read(&write(d.path(), "ABCDE1", &b, 0o600)).is_none(),
            "being written"
        );
        assert!(
            read(&write(d.path(), "ABCDE2", &b, 0o710)).is_none(),
            "marked"
        );
        assert!(
            read(&write(d.path(), "ABC", &b, 0o700)).is_none(),
            "short name"
        );
        assert!(read(&write(d.path(), "ABC.DEF", &b, 0o700)).is_none());
        let mut none = rec(b'S', b"a@x");
        none.extend(rec(b'D', b"b@y"));
        none.extend(rec(b'E', b""));
        assert!(
            read(&write(d.path(), "ABCDE3", &none, 0o700)).is_none(),
            "all delivered"
        );
        let no_end = rec(b'S', b"a@x");
        assert!(read(&write(d.path(), "ABCDE4", &no_end, 0o700)).is_none());
    }

    #[test]
    fn the_content_is_skipped_by_its_length_and_pointers_are_followed() {
        let d = tempfile::tempdir().unwrap();
        let mut b = rec(b'C', b"            12             100 1 1 0");
        b.extend(rec(b'T', b"1733300000 5"));
        b.extend(rec(b'S', b"s@x"));
        let ptr_at = b.len();
        b.extend(rec(b'p', b"              0"));
        b.extend(rec(b'M', b""));
        let body = rec(b'N', b"0123456789");
        assert_eq!(body.len(), 12);
        b.extend(body);
        b.extend(rec(b'X', b""));
        b.extend(rec(b'E', b""));
        // The pointer leads to one more recipient, then back to M.
        let extra_at = b.len();
        b.extend(rec(b'R', b"late@y"));
        b.extend(rec(b'p', format!("{:15}", ptr_at + 17).as_bytes()));
        b[ptr_at..ptr_at + 17].copy_from_slice(&rec(b'p', format!("{extra_at:15}").as_bytes()));
        let env = read(&write(d.path(), "ABCDEF", &b, 0o700)).unwrap();
        assert_eq!(env.time, 1_733_300_000.0);
        assert_eq!(env.recipients, [b"late@y"]);
    }

    #[test]
    fn a_pointer_loop_ends() {
        let d = tempfile::tempdir().unwrap();
        let mut b = rec(b'S', b"a@x");
        b.extend(rec(b'p', b"5"));
        assert_eq!(b.len(), 8);
        let p = write(d.path(), "LOOPED", &b, 0o700);
        assert!(read(&p).is_none());
    }
}
