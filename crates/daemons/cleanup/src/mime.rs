//! The message structure as Postfix's mime_state sees it, so that content
//! inspection looks at the same things: the primary headers, the headers of
//! each multipart body part, the headers of attached messages
//! (message/rfc822), and body lines, as logical headers and as records of
//! at most `line_length_limit` bytes.
//!
//! Kept as simple (and as forgiving) as Postfix's: a blank line ends a
//! header block; a line that is no header ends it too (in the primary
//! headers a blank line is supplied); `--boundary` of any enclosing
//! multipart starts a part, `--boundary--` ends that multipart.

/// Which header block a header is in (Postfix's MIME_HDR_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Block {
    Primary,
    Multipart,
    Nested,
}

/// What the parser hands on, in message order.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Out<'a> {
    /// A complete logical header, its lines joined with `\n`.
    Header(Block, Vec<u8>),
    /// The primary header block ended.
    PrimaryEnd,
    /// A body record: a line, or a piece of a long one (`more`: the line
    /// goes on in the next record); `offset` counts from the start of the
    /// current body part.
    Body {
        text: &'a [u8],
        more: bool,
        offset: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head(Block),
    Body,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    /// message/rfc822 (and message/global): a message follows.
    Message,
    /// Another message/ subtype: its content is body.
    MessageOther,
    Multipart,
    Other,
}

struct Boundary {
    text: Vec<u8>,
    /// What a part of this multipart is without a Content-Type
    /// (message/rfc822 in multipart/digest).
    default: Kind,
}

pub(crate) struct Limits {
    /// `header_size_limit`: header text past it is dropped.
    pub(crate) header: usize,
    /// `mime_nesting_limit`, `mime_boundary_length_limit`.
    pub(crate) nesting: usize,
    pub(crate) boundary: usize,
}

pub(crate) struct Parser {
    limits: Limits,
    state: State,
    kind: Kind,
    stack: Vec<Boundary>,
    /// The header being put together.
    header: Vec<u8>,
    /// The previous record did not end its line.
    prev_more: bool,
    body_offset: u64,
    /// The first Content-Type header whose boundary would have nested
    /// deeper than `mime_nesting_limit` (Postfix's MIME_ERR_NESTING): what
    /// follows it is taken as body.
    pub(crate) too_deep: Option<Vec<u8>>,
}

/// RFC 2045's tspecials, which end a token.
const TSPECIALS: &[u8] = b"()<>@,;:\\\"/[]?=";

impl Parser {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits,
            state: State::Head(Block::Primary),
            kind: Kind::Text,
            stack: Vec::new(),
            header: Vec::new(),
            prev_more: false,
            body_offset: 0,
            too_deep: None,
        }
    }

    /// One record: `text` without its line end; `more` when the line goes
    /// on in the next record.
    pub(crate) fn record<'a>(&mut self, text: &'a [u8], more: bool, out: &mut impl FnMut(Out<'a>)) {
        if let State::Head(block) = self.state {
            if !self.header.is_empty() {
                if self.prev_more || text.first().is_some_and(|c| *c == b' ' || *c == b'\t') {
                    if self.header.len() < self.limits.header {
                        if !self.prev_more {
                            self.header.push(b'\n');
                        }
                        self.header.extend_from_slice(text);
                    }
                    self.prev_more = more;
                    return;
                }
                self.flush(block, out);
            }
            if let Some(name) = header_name_len(text) {
                // "Name : value" is taken as "Name: value", as Postfix does.
                self.header.extend_from_slice(&text[..name]);
                let rest = &text[name..];
                let colon = rest.iter().position(|c| *c == b':').unwrap_or(0);
                self.header.extend_from_slice(&rest[colon..]);
                self.prev_more = more;
                return;
            }
            if block == Block::Primary {
                out(Out::PrimaryEnd);
            }
            if text.is_empty() && !self.prev_more {
                self.state = match (self.kind, block) {
                    (Kind::Message, _) => {
                        self.kind = Kind::Text;
                        State::Head(Block::Nested)
                    }
                    (Kind::Multipart, _) => {
                        self.kind = Kind::Other;
                        self.body_offset = 0;
                        State::Body
                    }
                    _ => {
                        self.body_offset = 0;
                        State::Body
                    }
                };
                // The blank line itself is body, as in Postfix.
                self.body(text, more, out);
                return;
            }
            if block == Block::Primary {
                // Garbage in the primary headers: a blank line first.
                self.state = State::Body;
                self.body_offset = 0;
                self.emit_body(b"", false, out);
            } else {
                self.state = State::Body;
                self.body_offset = 0;
            }
        }
        self.body(text, more, out);
    }

    /// The end of the content: a header still being put together goes out.
    pub(crate) fn finish<'a>(&mut self, out: &mut impl FnMut(Out<'a>)) {
        if let State::Head(block) = self.state {
            if !self.header.is_empty() {
                self.flush(block, out);
            }
            if block == Block::Primary {
                out(Out::PrimaryEnd);
            }
            self.state = State::Body;
        }
    }

    fn body<'a>(&mut self, text: &'a [u8], more: bool, out: &mut impl FnMut(Out<'a>)) {
        if !self.stack.is_empty() && !self.prev_more && text.len() > 2 && text.starts_with(b"--") {
            let after = &text[2..];
            if let Some(i) = self.stack.iter().rposition(|b| after.starts_with(&b.text)) {
                self.stack.truncate(i + 1);
                let len = self.stack[i].text.len();
                if after[len..].starts_with(b"--") {
                    self.stack.pop();
                    self.kind = Kind::Other;
                    self.state = State::Body;
                    self.body_offset = 0;
                } else {
                    self.kind = self.stack[i].default;
                    self.state = State::Head(Block::Multipart);
                }
            }
        }
        self.emit_body(text, more, out);
    }

    fn emit_body<'a>(&mut self, text: &'a [u8], more: bool, out: &mut impl FnMut(Out<'a>)) {
        out(Out::Body {
            text,
            more,
            offset: self.body_offset,
        });
        self.body_offset += text.len() as u64 + 1;
        self.prev_more = more;
    }

    /// A finished header goes out; a Content-Type sets what follows.
    fn flush<'a>(&mut self, block: Block, out: &mut impl FnMut(Out<'a>)) {
        let header = std::mem::take(&mut self.header);
        let is_ctype = header
            .get(..13)
            .is_some_and(|n| n.eq_ignore_ascii_case(b"content-type:"));
        if is_ctype && !self.content_type(&header[13..]) && self.too_deep.is_none() {
            self.too_deep = Some(header.clone());
        }
        self.prev_more = false;
        out(Out::Header(block, header));
    }

    /// Takes in a Content-Type value; false when a boundary was left out
    /// for nesting too deep.
    fn content_type(&mut self, value: &[u8]) -> bool {
        let mut params = split_params(value).into_iter();
        let Some(first) = params.next() else {
            return true;
        };
        let head = tokens(&first);
        let word = |i: usize, w: &str| {
            head.get(i).is_some_and(
                |t| matches!(t, Token::Atom(a) if a.eq_ignore_ascii_case(w.as_bytes())),
            )
        };
        let slash = matches!(head.get(1), Some(Token::Special(b'/')));
        if head.is_empty() {
            return true;
        }
        let mut nested = true;
        self.kind = if word(0, "text") {
            Kind::Text
        } else if word(0, "message") {
            if slash && (word(2, "rfc822") || word(2, "global")) {
                Kind::Message
            } else {
                Kind::MessageOther
            }
        } else if word(0, "multipart") {
            let default = if slash && word(2, "digest") {
                Kind::Message
            } else {
                Kind::Text
            };
            for p in params {
                let t = tokens(&p);
                let is_boundary = matches!(t.first(), Some(Token::Atom(a)) if a.eq_ignore_ascii_case(b"boundary"))
                    && matches!(t.get(1), Some(Token::Special(b'=')));
                let value = match t.get(2) {
                    Some(Token::Atom(v) | Token::Quoted(v)) => v.clone(),
                    Some(&Token::Special(c)) => vec![c],
                    None => continue,
                };
                if !is_boundary {
                    continue;
                }
                // Postfix's test, whose level starts at -1 and is checked
                // before the push: up to limit + 2 boundaries nest.
                if self.stack.len() > self.limits.nesting + 1 {
                    nested = false;
                } else {
                    let mut text = value;
                    text.truncate(self.limits.boundary);
                    self.stack.push(Boundary { text, default });
                }
            }
            Kind::Multipart
        } else {
            Kind::Other
        };
        nested
    }
}

/// Whether a Content-Transfer-Encoding value says 8-bit content (`8bit`
/// or `binary`), compared as Postfix's cleanup does: the whole value after
/// leading white space, without case.
pub(crate) fn says_8bit(value: &str) -> bool {
    let v = value.trim_start_matches([' ', '\t', '\n', '\r']);
    v.eq_ignore_ascii_case("8bit") || v.eq_ignore_ascii_case("binary")
}

/// The length of the header name when `text` starts a header (`Name:` or
/// the obsolete `Name :`), as Postfix's is_header.
fn header_name_len(text: &[u8]) -> Option<usize> {
    let mut len = 0;
    let mut spaced = false;
    for &c in text {
        match c {
            b':' => return (len > 0).then_some(len),
            b' ' | b'\t' if len > 0 => spaced = true,
            c if c.is_ascii() && !c.is_ascii_control() && c != b' ' && !spaced => len += 1,
            _ => return None,
        }
    }
    None
}

#[derive(Debug, PartialEq, Eq)]
enum Token {
    Atom(Vec<u8>),
    Quoted(Vec<u8>),
    Special(u8),
}

/// A header value cut at the `;` that are not quoted or in comments.
fn split_params(value: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![Vec::new()];
    let (mut quoted, mut depth, mut escaped) = (false, 0usize, false);
    for &c in value {
        if escaped {
            escaped = false;
        } else if c == b'\\' && (quoted || depth > 0) {
            escaped = true;
        } else if quoted {
            quoted = c != b'"';
        } else if c == b'"' && depth == 0 {
            quoted = true;
        } else if c == b'(' {
            depth += 1;
        } else if c == b')' && depth > 0 {
            depth -= 1;
        } else if c == b';' && depth == 0 {
            out.push(Vec::new());
            continue;
        }
        out.last_mut().expect("one part at least").push(c);
    }
    out
}

/// RFC 2045 tokens of one parameter, comments left out.
fn tokens(text: &[u8]) -> Vec<Token> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let c = text[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'(' {
            let mut depth = 0;
            while i < text.len() {
                match text[i] {
                    b'\\' => i += 1,
                    b'(' => depth += 1,
                    b')' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            i += 1;
        } else if c == b'"' {
            let mut v = Vec::new();
            i += 1;
            while i < text.len() && text[i] != b'"' {
                if text[i] == b'\\' && i + 1 < text.len() {
                    i += 1;
                }
                v.push(text[i]);
                i += 1;
            }
            i += 1;
            out.push(Token::Quoted(v));
        } else if TSPECIALS.contains(&c) {
            out.push(Token::Special(c));
            i += 1;
        } else {
            let start = i;
            while i < text.len()
                && !text[i].is_ascii_whitespace()
                && !TSPECIALS.contains(&text[i])
                && !text[i].is_ascii_control()
            {
                i += 1;
            }
            if i == start {
                i += 1;
            } else {
                out.push(Token::Atom(text[start..i].to_vec()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each output as a line: `P:Subject: x`, `M:`, `N:`, `END`, `B0:text`.
    fn parse(message: &str) -> Vec<String> {
        let mut p = Parser::new(Limits {
            header: 102_400,
            nesting: 100,
            boundary: 2048,
        });
        let mut out = Vec::new();
        let mut push = |o: Out<'_>| {
            out.push(match o {
                Out::Header(b, h) => format!(
                    "{}:{}",
                    match b {
                        Block::Primary => "P",
                        Block::Multipart => "M",
                        Block::Nested => "N",
                    },
                    String::from_utf8_lossy(&h)
                ),
                Out::PrimaryEnd => "END".into(),
                Out::Body { text, offset, .. } => {
                    format!("B{offset}:{}", String::from_utf8_lossy(text))
                }
            })
        };
        for line in message.split('\n') {
            p.record(line.as_bytes(), false, &mut push);
        }
        p.finish(&mut push);
        out
    }

    #[test]
    fn headers_of_parts_and_attached_messages_are_told_apart() {
        let m = "Subject: hi\n\tthere\nContent-Type: multipart/mixed;\n boundary=\"b1\"\n\npreamble\n--b1\nContent-Type: text/plain\nX-Part: 1\n\ntext body\n--b1\nContent-Type: message/rfc822\n\nSubject: inner\nFrom: a@b\n\ninner body\n--b1--\nepilogue";
        assert_eq!(
            parse(m),
            [
                "P:Subject: hi\n\tthere",
                "P:Content-Type: multipart/mixed;\n boundary=\"b1\"",
                "END",
                "B0:",
                "B1:preamble",
                "B10:--b1",
                "M:Content-Type: text/plain",
                "M:X-Part: 1",
                "B0:",
                "B1:text body",
                "B11:--b1",
                "M:Content-Type: message/rfc822",
                // The blank line is body: offsets go on until a body starts.
                "B16:",
                "N:Subject: inner",
                "N:From: a@b",
                "B0:",
                "B1:inner body",
                "B0:--b1--",
                "B7:epilogue",
            ]
        );
    }

    #[test]
    fn a_body_without_a_blank_line_and_digest_defaults() {
        assert_eq!(
            parse("Subject: x\nnot a header\nmore"),
            ["P:Subject: x", "END", "B0:", "B1:not a header", "B14:more"]
        );
        let digest = "Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: in digest\n\nbody\n--d--";
        let out = parse(digest);
        assert!(out.contains(&"N:Subject: in digest".to_owned()), "{out:?}");
        // Obsolete "Name : value" is normalized.
        assert_eq!(parse("Subject : x")[0], "P:Subject: x");
    }

    #[test]
    fn content_type_tokens_skip_comments_and_quotes() {
        assert_eq!(
            tokens(b" multipart (a comment) / mixed"),
            [
                Token::Atom(b"multipart".to_vec()),
                Token::Special(b'/'),
                Token::Atom(b"mixed".to_vec())
            ]
        );
        assert_eq!(
            split_params(b"a; b=\"x;y\"; (c;) d").len(),
            3,
            "quoted and commented semicolons do not split"
        );
    }
}
