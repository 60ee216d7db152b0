//! Copying the delivery headers and the message into an open mailbox
//! file, within the size limit, telling read errors (the queue file) from
//! write errors (the mailbox).

use std::io::Write;

use crate::{Error, Message};

thread_local! {
    /// The copy buffers, kept by each delivery thread: allocated per
    /// message, the allocator handed their pages back to the kernel after
    /// every delivery and faulted them in again for the next.
    static BUFFERS: std::cell::RefCell<(Vec<u8>, Vec<u8>)> =
        std::cell::RefCell::new((vec![0u8; 64 * 1024], Vec::with_capacity(65 * 1024)));
}

fn too_large() -> Error {
    Error::Write(std::io::Error::from_raw_os_error(libc::EFBIG))
}

/// Writes `extra` (the mbox `From ` line, or nothing), the prepended headers
/// and the content, each piece of content through `transform`, into `out`,
/// a file that held `start` bytes. Returns the number of bytes written.
pub(crate) fn copy(
    out: &mut impl Write,
    start: u64,
    extra: &[u8],
    msg: &mut Message<'_>,
    mut transform: impl FnMut(&[u8], &mut Vec<u8>),
) -> Result<u64, Error> {
    BUFFERS.with_borrow_mut(|(buf, piece)| {
        // The heads go out with the first piece of content: one write
        // for a small message.
        piece.clear();
        for head in [extra, msg.prepend] {
            piece.extend_from_slice(head);
        }
        let mut total = piece.len() as u64;
        if !msg.limit.allows(start, total) {
            return Err(too_large());
        }
        loop {
            let n = msg.content.read(buf).map_err(Error::Read)?;
            if n == 0 {
                if !piece.is_empty() {
                    out.write_all(piece).map_err(Error::Write)?;
                }
                return Ok(total);
            }
            let before = piece.len();
            transform(&buf[..n], piece);
            total += (piece.len() - before) as u64;
            if !msg.limit.allows(start, total) {
                return Err(too_large());
            }
            out.write_all(piece).map_err(Error::Write)?;
            piece.clear();
        }
    })
}

/// `>From ` quoting for mbox files: a line that starts with `From ` gets a
/// `>`. Content arrives in pieces, so a line start that is still a prefix of
/// `From ` waits in `pending` for the next piece ([`FromQuoting::finish`]
/// writes what is left at the end).
pub(crate) struct FromQuoting {
    at_line_start: bool,
    pending: Vec<u8>,
}

impl FromQuoting {
    pub(crate) fn new() -> Self {
        Self {
            at_line_start: true,
            pending: Vec::new(),
        }
    }

    pub(crate) fn quote(&mut self, b: &[u8], o: &mut Vec<u8>) {
        for &c in b {
            if self.at_line_start || !self.pending.is_empty() {
                self.pending.push(c);
                if b"From ".starts_with(&self.pending) {
                    if self.pending.len() == 5 {
                        o.push(b'>');
                        o.append(&mut self.pending);
                    }
                    self.at_line_start = false;
                    continue;
                }
                o.append(&mut self.pending);
                self.at_line_start = c == b'\n';
                continue;
            }
            o.push(c);
            self.at_line_start = c == b'\n';
        }
    }

    /// What is still held back: a last line that began like `From`.
    pub(crate) fn finish(self) -> Vec<u8> {
        self.pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_works_across_pieces() {
        let mut q = FromQuoting::new();
        let mut out = Vec::new();
        for piece in [&b"Fr"[..], b"om x\nFro", b"st\nnot From\nFrom", b" y\nFro"] {
            q.quote(piece, &mut out);
        }
        out.extend(q.finish());
        assert_eq!(out, b">From x\nFrost\nnot From\n>From y\nFro");
    }

    #[test]
    fn limits_count_what_the_file_held_only_for_file_limits() {
        let mut content: &[u8] = b"0123456789";
        let mut msg = Message {
            prepend: b"H: x\n",
            content: &mut content,
            sender: "",
            limit: crate::Limit::File(20),
            origin: None,
        };
        let mut out = Vec::new();
        assert!(copy(&mut out, 10, b"", &mut msg, |b, o| o.extend_from_slice(b)).is_err());
        let mut content: &[u8] = b"0123456789";
        msg.content = &mut content;
        msg.limit = crate::Limit::Message(20);
        out.clear();
        assert_eq!(
            copy(&mut out, 10, b"", &mut msg, |b, o| o.extend_from_slice(b)).unwrap(),
            15
        );
        assert_eq!(out, b"H: x\n0123456789");
    }

    /// Counts the writes it is given.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl Write for Writes {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.push(b.to_vec());
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_small_message_is_written_with_its_heads_in_one_write() {
        let mut content: &[u8] = b"Subject: x\n\nbody\n";
        let mut msg = Message {
            prepend: b"Delivered-To: u@example.com\n",
            content: &mut content,
            sender: "",
            limit: crate::Limit::None,
            origin: None,
        };
        let mut out = Writes::default();
        let n = copy(&mut out, 0, b"From x\n", &mut msg, |b, o| {
            o.extend_from_slice(b)
        })
        .unwrap();
        assert_eq!(
            out.0,
            [b"From x\nDelivered-To: u@example.com\nSubject: x\n\nbody\n".to_vec()]
        );
        assert_eq!(n, out.0[0].len() as u64);
    }
}
