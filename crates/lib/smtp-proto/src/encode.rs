//! The client side of DATA: message content (LF line ends) to wire bytes,
//! with CRLF line ends and dot-stuffing (RFC 5321 4.5.2), and the final
//! `.` line. Streaming: the state carries over between chunks.

/// Encodes one message for DATA.
#[derive(Debug, Clone)]
pub struct DataEncoder {
    at_line_start: bool,
}

impl Default for DataEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl DataEncoder {
    pub fn new() -> Self {
        Self {
            at_line_start: true,
        }
    }

    /// Appends the wire form of `content` to `out`.
    pub fn feed(&mut self, content: &[u8], out: &mut Vec<u8>) {
        out.reserve(content.len() + content.len() / 32 + 8);
        for &b in content {
            if self.at_line_start && b == b'.' {
                out.push(b'.');
            }
            if b == b'\n' {
                out.extend_from_slice(b"\r\n");
                self.at_line_start = true;
            } else {
                out.push(b);
                self.at_line_start = false;
            }
        }
    }

    /// Ends the message: a last line end if the content lacked one, then `.`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        self.at_line_start = true;
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
