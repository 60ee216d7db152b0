//! The client side of DATA: message content (LF line ends) to wire bytes,
//! with CRLF line ends and dot-stuffing (RFC 5321 4.5.2), and the final
//! `.` line. Streaming: the state carries over between chunks.

/// Encodes one message for DATA.
#[derive(Debug, Clone)]
pub struct DataEncoder {
    at_line_start: bool,
    /// `smtp_line_length_limit` (0: none): longer lines are broken with
    /// CRLF and a space, as Postfix's smtp client does.
    line_limit: usize,
    /// Bytes on the current wire line.
    column: usize,
    /// Whether a line was broken (Postfix logs it once per message).
    broke: bool,
}

impl Default for DataEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl DataEncoder {
    pub fn new() -> Self {
        Self::with_line_limit(0)
    }

    /// An encoder that breaks lines longer than `limit` bytes (0: none)
    /// with `<CR><LF><SPACE>`: the rest of the line continues on the next,
    /// after the space, as Postfix's `smtp_line_length_limit`.
    pub fn with_line_limit(limit: usize) -> Self {
        Self {
            at_line_start: true,
            line_limit: limit,
            column: 0,
            broke: false,
        }
    }

    /// Whether a line was broken so far.
    pub fn broke_lines(&self) -> bool {
        self.broke
    }

    /// Appends the wire form of `content` to `out`.
    pub fn feed(&mut self, content: &[u8], out: &mut Vec<u8>) {
        out.reserve(content.len() + content.len() / 32 + 8);
        for &b in content {
            if b == b'\n' {
                out.extend_from_slice(b"\r\n");
                self.at_line_start = true;
                self.column = 0;
                continue;
            }
            // The stuffed dot is not part of the line's length (Postfix
            // does not count it either).
            if self.at_line_start && b == b'.' {
                out.push(b'.');
            }
            if self.line_limit > 0 && self.column >= self.line_limit {
                out.extend_from_slice(b"\r\n ");
                self.column = 1;
                self.broke = true;
            }
            out.push(b);
            self.column += 1;
            self.at_line_start = false;
        }
    }

    /// Ends the message: a last line end if the content lacked one, then `.`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        self.at_line_start = true;
        self.column = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{DataDecoder, Progress};

    #[test]
    fn dots_and_line_ends_across_chunks() {
        let mut e = DataEncoder::new();
        let mut out = Vec::new();
        for chunk in [
            &b"Subject: x\n\n.leading\n"[..],
            b"mid.dot\n",
            b".",
            b"\nno newline",
        ] {
            e.feed(chunk, &mut out);
        }
        e.finish(&mut out);
        assert_eq!(
            out,
            b"Subject: x\r\n\r\n..leading\r\nmid.dot\r\n..\r\nno newline\r\n.\r\n"
        );
    }

    #[test]
    fn long_lines_are_broken_with_crlf_space_as_postfix_does() {
        let mut e = DataEncoder::with_line_limit(4);
        let mut out = Vec::new();
        e.feed(b"abcd\nabcde\n.bcdefghij", &mut out);
        e.finish(&mut out);
        assert_eq!(out, b"abcd\r\nabcd\r\n e\r\n..bcd\r\n efg\r\n hij\r\n.\r\n");
        assert!(e.broke_lines());
        let mut e = DataEncoder::with_line_limit(4);
        let mut out = Vec::new();
        e.feed(b"abcd\n", &mut out);
        assert!(!e.broke_lines());
    }

    #[test]
    fn the_server_decodes_what_the_client_encodes() {
        let content = b"a\n.\n..\n.x\n\x80\xff 8-bit\n\nend\n";
        let mut wire = Vec::new();
        let mut e = DataEncoder::new();
        e.feed(content, &mut wire);
        e.finish(&mut wire);
        let mut back = Vec::new();
        let mut d = DataDecoder::new();
        assert_eq!(
            d.feed(&wire, &mut back),
            Progress::Done {
                consumed: wire.len()
            }
        );
        assert_eq!(back, content);
    }
}
