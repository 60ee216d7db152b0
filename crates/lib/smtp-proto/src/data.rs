//! The DATA decoder: wire bytes after `354` into message content.
//!
//! Content comes out with LF line ends and SMTP dot-stuffing removed. Only
//! `<CR><LF>.<CR><LF>` ends the message: a dot line ended by a bare LF, or one
//! after a line ended by a bare LF, is content (an empty line, its dot
//! unstuffed). This is what makes SMTP smuggling (CVE-2023-51764 and kin)
//! impossible here: no bare LF or bare CR can end or split a message. A bare
//! LF ends a line (Postfix 3.9's `smtpd_forbid_bare_newline = normalize`) and
//! is counted, so `reject` can refuse the message. A CR that is not part of a
//! CRLF becomes a space, as Postfix's `cleanup_replace_stray_cr_lf` does, so
//! it cannot smuggle anything to a downstream server either. All other bytes,
//! 8-bit ones included, pass unchanged.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line.
    LineStart,
    /// A line that started with '.', the dot not yet emitted (it never is).
    Dot,
    /// ".\r" at the start of a line.
    DotCr,
    InLine,
    /// A CR inside a line: either CRLF or a stray CR.
    InLineCr,
}

/// Result of feeding bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// All input consumed, the message goes on.
    More,
    /// The end-of-data line was found after `consumed` bytes of the input;
    /// what follows belongs to the next command.
    Done { consumed: usize },
}

/// Streaming decoder for one message.
#[derive(Debug, Clone)]
pub struct DataDecoder {
    state: State,
    /// The previous line ended with CRLF (the DATA command line counts).
    prev_crlf: bool,
    bare_lf: usize,
}

impl Default for DataDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl DataDecoder {
    pub fn new() -> Self {
        Self {
            state: State::LineStart,
            prev_crlf: true,
            bare_lf: 0,
        }
    }

    /// How many bare LFs the message had.
    pub fn bare_lf_count(&self) -> usize {
        self.bare_lf
    }

    fn line_end(&mut self, out: &mut Vec<u8>, crlf: bool) {
        out.push(b'\n');
        self.prev_crlf = crlf;
        if !crlf {
            self.bare_lf += 1;
        }
        self.state = State::LineStart;
    }

    /// Decodes `input`, appending content to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Progress {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            i += 1;
            match (self.state, b) {
                (State::LineStart, b'.') => self.state = State::Dot,
                (State::LineStart | State::InLine, b'\r') => self.state = State::InLineCr,
                (State::LineStart | State::InLine, b'\n') => self.line_end(out, false),
                (State::LineStart | State::InLine, _) => {
                    out.push(b);
                    self.state = State::InLine;
                }
                (State::Dot, b'\r') => self.state = State::DotCr,
                (State::Dot, b'\n') => self.line_end(out, false),
                (State::Dot, _) => {
                    // Transparency: the leading dot goes, the rest of the line stays.
                    out.push(b);
                    self.state = State::InLine;
                }
                (State::DotCr, b'\n') => {
                    if self.prev_crlf {
                        return Progress::Done { consumed: i };
                    }
                    self.line_end(out, true);
                }
                (State::DotCr | State::InLineCr, b'\r') => {
                    out.push(b' ');
                    self.state = State::InLineCr;
                }
                (State::DotCr | State::InLineCr, _) if b != b'\n' => {
                    out.push(b' ');
                    out.push(b);
                    self.state = State::InLine;
                }
                (State::InLineCr, _) => self.line_end(out, true),
                (State::DotCr, _) => unreachable!("LF handled above"),
            }
        }
        Progress::More
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes the whole input in pieces of `step` bytes.
    fn decode(input: &[u8], step: usize) -> (Vec<u8>, Option<usize>, usize) {
        let mut d = DataDecoder::new();
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < input.len() {
            let end = (pos + step).min(input.len());
            if let Progress::Done { consumed } = d.feed(&input[pos..end], &mut out) {
                return (out, Some(pos + consumed), d.bare_lf_count());
            }
            pos = end;
        }
        (out, None, d.bare_lf_count())
    }

    fn all_steps(input: &[u8]) -> (Vec<u8>, Option<usize>, usize) {
        let first = decode(input, input.len().max(1));
        for step in 1..8 {
            assert_eq!(decode(input, step), first, "split every {step} bytes");
        }
        first
    }

    #[test]
    fn plain_message_ends_at_crlf_dot_crlf() {
        let input = b"Subject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n";
        let (out, end, bare) = all_steps(input);
        assert_eq!(out, b"Subject: hi\n\nbody\n");
        assert_eq!(end, Some(input.len() - 6));
        assert_eq!(bare, 0);
    }

    #[test]
    fn empty_message_ends_at_once() {
        assert_eq!(all_steps(b".\r\n"), (vec![], Some(3), 0));
    }

    #[test]
    fn dot_stuffing_is_removed() {
        let (out, end, _) = all_steps(b"..dotline\r\n...\r\n.x\r\n.\r\n");
        assert_eq!(out, b".dotline\n..\nx\n");
        assert!(end.is_some());
    }

    #[test]
    fn eight_bit_bytes_pass_unchanged() {
        let body: Vec<u8> = (0u8..=255).filter(|&b| b != b'\r' && b != b'\n').collect();
        let mut input = body.clone();
        input.extend_from_slice(b"\r\n.\r\n");
        let (out, end, _) = all_steps(&input);
        let mut want = body;
        want.push(b'\n');
        assert_eq!(out, want);
        assert!(end.is_some());
    }

    #[test]
    fn smuggling_sequences_never_end_the_message() {
        // Every known variant of a fake end-of-data, each followed by a second message.
        let smuggled = b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@ywnds.com>\r\nDATA\r\nforged\r\n";
        for fake in [
            &b"\n.\n"[..],
            b"\n.\r\n",
            b"\r\n.\n",
            b"\r.\r\n",
            b"\r\n.\r",
            b"\n.\r\r\n",
            b"\r\n.\r\r\n",
        ] {
            let mut input = b"real body".to_vec();
            input.extend_from_slice(fake);
            input.extend_from_slice(smuggled);
            input.extend_from_slice(b"\r\n.\r\n");
            let (out, end, _) = all_steps(&input);
            assert_eq!(
                end,
                Some(input.len()),
                "fake end {fake:?} ended the message early"
            );
            let text = String::from_utf8_lossy(&out);
            assert!(
                text.contains("MAIL FROM:<evil@x>"),
                "{fake:?}: smuggled text stays content: {text:?}"
            );
            assert!(!out.contains(&b'\r'), "no CR survives: {text:?}");
        }
    }

    #[test]
    fn bare_lf_ends_a_line_and_is_counted() {
        let (out, end, bare) = all_steps(b"bare\nlf\r\n.\r\n");
        assert_eq!(out, b"bare\nlf\n");
        assert!(end.is_some());
        assert_eq!(bare, 1);
    }

    #[test]
    fn stray_cr_becomes_a_space() {
        let (out, _, _) = all_steps(b"a\rb\r\r\nc\r\n.\r\n");
        assert_eq!(out, b"a b \nc\n");
    }

    #[test]
    fn unterminated_message_wants_more() {
        let (out, end, _) = all_steps(b"no end\r\n.");
        assert_eq!(end, None);
        assert_eq!(out, b"no end\n");
    }
}
