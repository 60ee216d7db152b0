//! Finding the end of the header section in streamed content, and what
//! cleanup needs to know about it (Message-Id, Date, From present? how many
//! Received: hops?).
//!
//! Only the header section is buffered, up to `header_size_limit`; past
//! that, as in Postfix, the rest counts as body.

/// The header section, once complete.
#[derive(Debug, Default)]
pub(crate) struct Headers {
    /// The header lines, without the separating empty line.
    pub(crate) text: Vec<u8>,
    /// The empty line that ends the header section: the message's own, or
    /// one cleanup supplies where the body starts without one (as Postfix
    /// does); nothing for a message that ends within its headers.
    pub(crate) separator: Vec<u8>,
    pub(crate) message_id: Option<String>,
    pub(crate) has_date: bool,
    pub(crate) has_from: bool,
    /// `Received:` headers: the hops the message has made.
    pub(crate) received: usize,
    /// `Content-Transfer-Encoding: 8bit` (or `binary`): 8-bit content.
    pub(crate) eight_bit: bool,
    /// A multipart or message Content-Type: parts have headers of their own.
    pub(crate) has_parts: bool,
}

/// What one chunk produced.
pub(crate) struct Fed {
    /// Set once, when the header section ends in this chunk.
    pub(crate) finished_headers: Option<Headers>,
    /// Body bytes to write after the headers.
    pub(crate) body: Vec<u8>,
}

pub(crate) struct HeaderScanner {
    limit: usize,
    buf: Vec<u8>,
    done: bool,
}

impl HeaderScanner {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            buf: Vec::new(),
            done: false,
        }
    }

    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Fed {
        if self.done {
            return Fed {
                finished_headers: None,
                body: chunk.to_vec(),
            };
        }
        self.buf.extend_from_slice(chunk);
        match header_end(&self.buf, self.limit) {
            Some((end, sep_len)) => {
                self.done = true;
                let rest = self.buf.split_off(end + sep_len);
                let mut sep = self.buf.split_off(end);
                if sep.is_empty() && !rest.is_empty() {
                    // The body starts without an empty line: without one,
                    // every reader would take its first line for a header.
                    sep.push(b'\n');
                }
                let h = analyse(std::mem::take(&mut self.buf), sep);
                Fed {
                    finished_headers: Some(h),
                    body: rest,
                }
            }
            None => Fed {
                finished_headers: None,
                body: Vec::new(),
            },
        }
    }

    /// At the end of the content: the headers if they never ended (a message
    /// with no body, or whose only body line has no line end), and what
    /// follows them.
    pub(crate) fn finish(&mut self) -> Option<Fed> {
        if self.done {
            return None;
        }
        let unterminated = !self.buf.is_empty() && !self.buf.ends_with(b"\n");
        if unterminated {
            // Look at the last line as a whole line; a body line loses the
            // line end again (its bytes are kept as given).
            self.buf.push(b'\n');
        }
        let mut fed = match self.feed(&[]) {
            Fed {
                finished_headers: Some(h),
                body,
            } => Fed {
                finished_headers: Some(h),
                body,
            },
            _ => {
                // All headers: the last one keeps the line end it was
                // given, as a Postfix record is a whole line, so that
                // headers cleanup adds after it start on their own line.
                self.done = true;
                let h = analyse(std::mem::take(&mut self.buf), Vec::new());
                return Some(Fed {
                    finished_headers: Some(h),
                    body: Vec::new(),
                });
            }
        };
        if unterminated {
            fed.body.pop();
        }
        Some(fed)
    }
}

/// Where the header section ends: at an empty line, at a line that is not a
/// header, or at the size limit. Returns (end of headers, separator length).
fn header_end(buf: &[u8], limit: usize) -> Option<(usize, usize)> {
    let mut pos = 0;
    while pos < buf.len() {
        let line_end = buf[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| pos + i)?;
        let line = &buf[pos..line_end];
        if line.is_empty() {
            return Some((pos, 1));
        }
        let continuation = line[0] == b' ' || line[0] == b'\t';
        let is_header = continuation
            || line
                .iter()
                .position(|&b| b == b':')
                .is_some_and(|c| c > 0 && line[..c].iter().all(|&b| b > 32 && b < 127));
        if !is_header || pos > limit {
            // Body without a separator: the headers end here.
            return Some((pos, 0));
        }
        pos = line_end + 1;
    }
    (buf.len() > limit).then_some((buf.len(), 0))
}

pub(crate) fn analyse(text: Vec<u8>, separator: Vec<u8>) -> Headers {
    let mut h = Headers {
        separator,
        ..Default::default()
    };
    let s = String::from_utf8_lossy(&text);
    let mut lines = s.split('\n').peekable();
    while let Some(first) = lines.next() {
        let Some((name, value)) = first.split_once(':') else {
            continue;
        };
        // The whole header, folded lines included.
        let mut value = value.to_owned();
        while let Some(more) = lines.next_if(|l| l.starts_with([' ', '\t'])) {
            value.push('\n');
            value.push_str(more);
        }
        match name.trim().to_ascii_lowercase().as_str() {
            "message-id" => h.message_id = Some(value.trim().to_owned()),
            "date" => h.has_date = true,
            "from" => h.has_from = true,
            "received" => h.received += 1,
            "content-transfer-encoding" => h.eight_bit |= crate::mime::says_8bit(&value),
            "content-type" => {
                let kind = value.trim_start().to_ascii_lowercase();
                h.has_parts |= kind.starts_with("multipart") || kind.starts_with("message");
            }
            _ => {}
        }
    }
    h.text = text;
    h
}

/// Mail from local users (local SMTP clients, sendmail): `Bcc:` and
/// `Resent-Bcc:` are removed, and each address in an address header is
/// rewritten as its role says (`@$myorigin` for bare names, canonical maps,
/// masquerading), as Postfix's cleanup does. Other header fields, and
/// everything around the addresses, are kept byte for byte.
pub(crate) fn rewrite_local(
    text: &[u8],
    rewriter: &crate::rewrite::Rewriter,
    map: bool,
) -> Result<Vec<u8>, crate::rewrite::Refusal> {
    let bcc =
        |name: &str| name.eq_ignore_ascii_case("bcc") || name.eq_ignore_ascii_case("resent-bcc");
    pfx_address::header::rewrite_fields(text, &bcc, &mut |role, spec| {
        let new = rewriter.header_address(spec, role, map)?;
        Ok((new != spec).then_some(new))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> (Headers, Vec<u8>) {
        let mut s = HeaderScanner::new(1000);
        let mut body = Vec::new();
        let mut h = None;
        for c in chunks {
            let f = s.feed(c);
            if f.finished_headers.is_some() {
                h = f.finished_headers;
            }
            body.extend(f.body);
        }
        if let Some(f) = s.finish() {
            h = f.finished_headers;
            body.extend(f.body);
        }
        (h.unwrap(), body)
    }

    #[test]
    fn headers_split_across_chunks() {
        let (h, body) = scan(&[
            b"Subject: hi\nMessage-",
            b"ID: <a@b>\nFrom: x\n",
            b"\nbody\n",
        ]);
        assert_eq!(h.text, b"Subject: hi\nMessage-ID: <a@b>\nFrom: x\n");
        assert_eq!(h.separator, b"\n");
        assert_eq!(h.message_id.as_deref(), Some("<a@b>"));
        assert!(h.has_from && !h.has_date);
        assert_eq!(body, b"body\n");
    }

    #[test]
    fn body_without_separator_and_headerless_messages() {
        let (h, body) = scan(&[b"Subject: x\nnot a header line\n"]);
        assert_eq!(h.text, b"Subject: x\n");
        assert_eq!(h.separator, b"\n", "supplied, as Postfix does");
        assert_eq!(body, b"not a header line\n");
        // `echo test | sendmail hadoop`: no header at all.
        let (h, body) = scan(&[b"test\n"]);
        assert!(h.text.is_empty());
        assert_eq!(h.separator, b"\n");
        assert_eq!(body, b"test\n");
        let (h, body) = scan(&[b"Subject: only headers\n"]);
        assert_eq!(h.text, b"Subject: only headers\n");
        assert!(h.separator.is_empty());
        assert!(body.is_empty());
        // `printf test | sendmail hadoop`: the one line has no line end.
        let (h, body) = scan(&[b"tes", b"t"]);
        assert!(h.text.is_empty());
        assert_eq!(h.separator, b"\n");
        assert_eq!(body, b"test");
        let (h, body) = scan(&[b"Subject: no end"]);
        assert_eq!(h.text, b"Subject: no end\n", "a whole line, as a record");
        assert!(h.separator.is_empty() && body.is_empty());
    }

    #[test]
    fn oversized_header_section_is_cut_at_the_limit() {
        let big = format!("X-Big: {}\n", "a".repeat(2000));
        let (h, body) = scan(&[big.as_bytes(), b"\nbody\n"]);
        assert!(h.text.len() <= big.len());
        assert!(body.ends_with(b"body\n"));
    }

    #[test]
    fn local_mail_loses_bcc_and_gains_domains() {
        let text = b"From: hadoop\nTo: a@x.test,\n\topenstack\nBcc: hidden@x.test\nSubject: hadoop\nX-Other: y\n";
        let cfg = pfx_config::Config::from_text(
            std::path::Path::new("/etc/postfix"),
            "myorigin = ywnds.com\nmydestination = ywnds.com\n\
             sender_canonical_maps = inline:{hadoop@ywnds.com=h.adoop@ywnds.com}\n\
             masquerade_domains = x.test\n",
        )
        .unwrap();
        let rewriter = crate::rewrite::Rewriter::new(&cfg).unwrap();
        assert_eq!(
            String::from_utf8(rewrite_local(text, &rewriter, true).unwrap()).unwrap(),
            "From: h.adoop@ywnds.com\nTo: a@x.test,\n\topenstack@ywnds.com\nSubject: hadoop\nX-Other: y\n"
        );
        let text = b"To: Team <hadoop>, b@sub.x.test\nReply-To: hadoop\n";
        assert_eq!(
            String::from_utf8(rewrite_local(text, &rewriter, true).unwrap()).unwrap(),
            "To: Team <hadoop@ywnds.com>, b@x.test\nReply-To: h.adoop@ywnds.com\n"
        );
    }
}
