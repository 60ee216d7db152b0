//! The message as milters see and change it: its header fields, in queue
//! file order (Postfix's own `Received:` first, which milters are not
//! shown), and its body; the changes a milter asks for at the end of the
//! message, applied as Postfix's cleanup applies them; and the envelope
//! changes, which the caller carries out.

/// One header field, as it is stored: `Name: value`, folded lines joined
/// with `\n`, without the last line end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header(pub Vec<u8>);

impl Header {
    fn colon(&self) -> usize {
        self.0
            .iter()
            .position(|c| *c == b':')
            .unwrap_or(self.0.len())
    }

    /// The name, white space before the colon left out.
    pub fn name(&self) -> &[u8] {
        let n = &self.0[..self.colon()];
        let end = n
            .iter()
            .rposition(|c| !c.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        &n[..end]
    }

    /// The value as a milter gets it: after the colon, one leading space
    /// removed unless the milter wants it (SMFIP_HDR_LEADSPC).
    pub fn value(&self, lead_space: bool) -> &[u8] {
        let v = self.0.get(self.colon() + 1..).unwrap_or_default();
        if !lead_space && v.first() == Some(&b' ') {
            &v[1..]
        } else {
            v
        }
    }

    /// A header a milter gives: `name: value` (or `name:value` when the
    /// milter sends the leading space itself), each line after the first
    /// indented with a tab unless it already is.
    pub fn from_milter(name: &str, value: &str, lead_space: bool) -> Self {
        let mut out = name.as_bytes().to_vec();
        out.push(b':');
        if !lead_space {
            out.push(b' ');
        }
        for (i, line) in value.split('\n').enumerate() {
            if i > 0 {
                out.push(b'\n');
                if !line.starts_with([' ', '\t']) {
                    out.push(b'\t');
                }
            }
            out.extend_from_slice(line.as_bytes());
        }
        Self(out)
    }
}

/// A message's content split for milters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub headers: Vec<Header>,
    /// Whether an empty line separates the headers from the body (a
    /// message that ends in its headers has none).
    pub separator: bool,
    /// The body, LF line ends.
    pub body: Vec<u8>,
    /// The MTA added its own header: header changes never count the
    /// first header of the file (Postfix's rule).
    pub own_first: bool,
    /// That header, wherever inserted headers have put it.
    own: Option<Header>,
}

impl Message {
    /// Splits content (LF line ends): headers up to the first empty line
    /// or the first line that is no header; `own` is where the MTA's own
    /// `Received:` is among them (after any headers an access table
    /// PREPENDed).
    pub fn parse(content: &[u8], own: Option<usize>) -> Self {
        let mut headers: Vec<Header> = Vec::new();
        let mut pos = 0;
        let mut separator = false;
        while pos < content.len() {
            let end = content[pos..]
                .iter()
                .position(|c| *c == b'\n')
                .map_or(content.len(), |i| pos + i);
            let line = &content[pos..end];
            let next = (end + 1).min(content.len());
            if line.is_empty() {
                separator = end < content.len();
                pos = next;
                break;
            }
            let continues = line[0] == b' ' || line[0] == b'\t';
            if continues && !headers.is_empty() {
                let h = headers.last_mut().expect("not empty");
                h.0.push(b'\n');
                h.0.extend_from_slice(line);
            } else if !continues && is_header(line) {
                headers.push(Header(line.to_vec()));
            } else {
                break;
            }
            pos = next;
        }
        Self {
            own: own.and_then(|i| headers.get(i).cloned()),
            headers,
            separator,
            body: content[pos..].to_vec(),
            own_first: own.is_some(),
        }
    }

    /// The content again, LF line ends.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 1024);
        for h in &self.headers {
            out.extend_from_slice(&h.0);
            out.push(b'\n');
        }
        if self.separator || !self.body.is_empty() {
            out.push(b'\n');
        }
        out.extend_from_slice(&self.body);
        out
    }

    /// The headers a milter is shown: all but the MTA's own.
    pub fn shown(&self) -> Vec<&Header> {
        let own = self
            .own
            .as_ref()
            .and_then(|o| self.headers.iter().position(|h| h == o));
        self.headers
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != own)
            .map(|(_, h)| h)
            .collect()
    }

    /// The body as a milter gets it: each line ended by CRLF.
    pub fn body_crlf(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + self.body.len() / 32);
        let mut rest = &self.body[..];
        while !rest.is_empty() {
            let end = rest.iter().position(|c| *c == b'\n');
            let line = &rest[..end.unwrap_or(rest.len())];
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
            rest = &rest[end.map_or(rest.len(), |i| i + 1)..];
        }
        out
    }

    /// A header edit or a new body, as Postfix's cleanup makes it.
    pub fn apply(&mut self, edit: &ContentEdit) {
        match edit {
            ContentEdit::Add(h) => self.headers.push(Header(h.clone())),
            ContentEdit::Insert { index, header } => {
                // Counted over every header, the MTA's own included: 0
                // goes above it.
                let at = (*index as usize).min(self.headers.len());
                self.headers.insert(at, Header(header.clone()));
            }
            ContentEdit::Change {
                index,
                name,
                header,
            } => {
                // 0 means 1; the first header of the file is never one.
                let wanted = (*index).max(1) as usize;
                let skip = usize::from(self.own_first);
                let found = self
                    .headers
                    .iter()
                    .enumerate()
                    .skip(skip)
                    .filter(|(_, h)| h.name().eq_ignore_ascii_case(name.as_bytes()))
                    .nth(wanted - 1)
                    .map(|(i, _)| i);
                match (found, header) {
                    (Some(i), None) => {
                        self.headers.remove(i);
                    }
                    (Some(i), Some(h)) => self.headers[i] = Header(h.clone()),
                    (None, Some(h)) => self.headers.push(Header(h.clone())),
                    (None, None) => {}
                }
            }
            ContentEdit::Body(b) => {
                // Lines end in LF here; a CR before it is the milter's CRLF.
                let mut body = Vec::with_capacity(b.len());
                let mut rest = &b[..];
                while let Some(i) = rest.iter().position(|c| *c == b'\n') {
                    let line = &rest[..i];
                    body.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
                    body.push(b'\n');
                    rest = &rest[i + 1..];
                }
                body.extend_from_slice(rest);
                self.body = body;
                self.separator = true;
            }
        }
    }
}

/// Whether a line starts a header field (`Name:`).
fn is_header(line: &[u8]) -> bool {
    let colon = line.iter().position(|c| *c == b':');
    colon.is_some_and(|c| {
        let name = &line[..c];
        let name = &name[..name
            .iter()
            .rposition(|b| !(*b == b' ' || *b == b'\t'))
            .map_or(0, |i| i + 1)];
        !name.is_empty() && name.iter().all(|b| *b > 32 && *b < 127)
    })
}

pub use pfx_ipc::proto::{ContentEdit, EnvelopeEdit};

/// An address as a milter writes it (`<a@b>`, `a@b`), without brackets.
pub fn bare_address(a: &str) -> String {
    let a = a.trim();
    a.strip_prefix('<')
        .and_then(|x| x.strip_suffix('>'))
        .unwrap_or(a)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> Message {
        Message::parse(
            b"Received: by us\n\tid 1\nSubject: one\nX-A: 1\nx-a: 2\n\nbody\nline\n",
            Some(0),
        )
    }

    #[test]
    fn content_round_trips_and_milters_see_what_postfix_shows() {
        for c in [
            &b"Received: by us\nSubject: hi\n\nbody\n"[..],
            b"Received: by us\nSubject: only headers\n",
            b"Received: by us\nnot a header\nbody\n",
            b"Received: by us\n\n",
            b"Received: x\nSubject: no end",
        ] {
            let m = Message::parse(c, Some(0));
            let mut want = c.to_vec();
            if !want.ends_with(b"\n") && m.body.is_empty() {
                want.push(b'\n');
            }
            if c == b"Received: by us\nnot a header\nbody\n" {
                // The body starts without an empty line: one is supplied.
                want = b"Received: by us\n\nnot a header\nbody\n".to_vec();
            }
            assert_eq!(m.to_bytes(), want, "{}", String::from_utf8_lossy(c));
        }
        let m = msg();
        assert_eq!(m.shown().len(), 3);
        assert_eq!(m.shown()[0].name(), b"Subject");
        assert_eq!(m.headers[0].value(false), b"by us\n\tid 1");
        assert_eq!(m.body_crlf(), b"body\r\nline\r\n");
    }

    #[test]
    fn header_edits_count_as_postfixs_cleanup() {
        let h = |n: &str, v: &str| Header::from_milter(n, v, false).0;
        let mut m = msg();
        // Change: 0 means 1, counted past the MTA's own first header.
        m.apply(&ContentEdit::Change {
            index: 0,
            name: "X-A".into(),
            header: Some(h("X-A", "one")),
        });
        m.apply(&ContentEdit::Change {
            index: 2,
            name: "x-A".into(),
            header: None,
        });
        // Not there: appended.
        m.apply(&ContentEdit::Change {
            index: 1,
            name: "X-New".into(),
            header: Some(h("X-New", "v")),
        });
        m.apply(&ContentEdit::Change {
            index: 1,
            name: "Received".into(),
            header: None,
        });
        m.apply(&ContentEdit::Insert {
            index: 0,
            header: h("X-Top", "t"),
        });
        m.apply(&ContentEdit::Insert {
            index: 2,
            header: h("X-Two", "a\nb"),
        });
        m.apply(&ContentEdit::Add(h("X-End", "e")));
        assert_eq!(
            String::from_utf8(m.to_bytes()).unwrap(),
            "X-Top: t\nReceived: by us\n\tid 1\nX-Two: a\n\tb\nSubject: one\nX-A: one\nX-New: v\nX-End: e\n\nbody\nline\n"
        );
        m.apply(&ContentEdit::Body(b"new\r\nbody\r\nend".to_vec()));
        assert_eq!(m.body, b"new\nbody\nend");
        assert_eq!(bare_address(" <a@b> "), "a@b");
    }
}
