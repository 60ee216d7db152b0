//! Postfix's built-in content inspection: `header_checks` (primary
//! headers), `mime_header_checks` (MIME headers, wherever they are),
//! `nested_header_checks` (headers of attached messages) and `body_checks`
//! (body records, up to `body_checks_size_limit` bytes into each body
//! part), with the actions and log lines of Postfix's cleanup_act.

use pfx_maps::MapList;
use tracing::{info, warn};

use crate::mime::{Block, Limits, Out, Parser};

/// The four tables; an empty list checks nothing.
#[derive(Default)]
pub(crate) struct Tables {
    pub(crate) header: MapList,
    pub(crate) mime: MapList,
    pub(crate) nested: MapList,
    pub(crate) body: MapList,
    /// `body_checks_size_limit` (0: the whole part).
    pub(crate) body_limit: u64,
}

impl Tables {
    pub(crate) fn any(&self) -> bool {
        !(self.header.is_empty()
            && self.mime.is_empty()
            && self.nested.is_empty()
            && self.body.is_empty())
    }
}

/// What the message gets from its checks.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// REJECT: the status and text (`5.7.1 message content rejected`);
    /// a 4.x.x status is a temporary refusal.
    pub(crate) reject: Option<String>,
    pub(crate) discard: bool,
    pub(crate) hold: bool,
    /// A table could not be asked: the message waits.
    pub(crate) lookup_failed: bool,
    /// FILTER: the content filter (`transport:nexthop`) qmgr sends the
    /// message to, overriding `content_filter`; the last one counts.
    pub(crate) filter: Option<String>,
    /// REDIRECT: the address the message goes to instead.
    pub(crate) redirect: Option<String>,
    /// BCC: addresses that get a copy.
    pub(crate) bcc: Vec<String>,
    /// PASS or REDIRECT: no milter looks at the message either (Postfix
    /// clears its FILTER and MILTER flags).
    pub(crate) no_milters: bool,
}

/// Who and what the log lines name.
pub(crate) struct Who {
    pub(crate) queue_id: String,
    /// `unknown[127.0.0.1]`, `local`.
    pub(crate) origin: String,
    pub(crate) sender: String,
    pub(crate) recipient: Option<String>,
    pub(crate) proto: Option<String>,
    pub(crate) helo: Option<String>,
}

/// Runs the content through the MIME parser and the tables, and gives
/// back the content as it is to be queued.
pub(crate) struct Inspector<'t> {
    tables: &'t Tables,
    who: Who,
    parser: Parser,
    pub(crate) verdict: Verdict,
    /// Checks stop after REJECT, DISCARD, PASS and REDIRECT.
    done: bool,
    /// A line not yet complete.
    carry: Vec<u8>,
    /// `line_length_limit`: longer lines are looked at in pieces.
    record_limit: usize,
    /// Where, in the output of the current call, the primary headers ended.
    primary_end: Option<usize>,
    nesting_reported: bool,
    /// A Content-Transfer-Encoding header, anywhere, says 8-bit content
    /// (`detect_8bit_encoding_header`).
    pub(crate) eight_bit: bool,
}

enum Context {
    Header,
    Body,
}

impl Context {
    fn word(&self) -> &'static str {
        match self {
            Self::Header => "header",
            Self::Body => "body",
        }
    }
}

/// What happens to the header or line that matched.
enum Edit {
    Keep,
    Drop,
    Replace(String),
}

impl<'t> Inspector<'t> {
    pub(crate) fn new(tables: &'t Tables, who: Who, limits: Limits, record_limit: usize) -> Self {
        Self {
            tables,
            who,
            parser: Parser::new(limits),
            verdict: Verdict::default(),
            done: false,
            carry: Vec::new(),
            record_limit: record_limit.max(1),
            primary_end: None,
            nesting_reported: false,
            eight_bit: false,
        }
    }

    /// The primary headers and what follows them (the separating blank
    /// line, when there is one): the headers as they are to be queued, and
    /// the start of the body.
    pub(crate) fn headers(&mut self, text: &[u8], separator: &[u8]) -> (Vec<u8>, Vec<u8>) {
        self.primary_end = None;
        let mut joined = text.to_vec();
        joined.extend_from_slice(separator);
        let mut all = self.feed(&joined);
        if self.primary_end.is_none() {
            // The message ended within its headers.
            let base = all.len();
            let tail = self.finish();
            self.primary_end = self.primary_end.map(|p| base + p);
            all.extend(tail);
        }
        let at = self.primary_end.take().unwrap_or(all.len());
        let body = all.split_off(at);
        (all, body)
    }

    /// Content, in any pieces; the result is what goes into the queue file.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        let mut rest = bytes;
        while let Some(i) = rest.iter().position(|c| *c == b'\n') {
            let mut line = std::mem::take(&mut self.carry);
            line.extend_from_slice(&rest[..i]);
            self.line(&line, &mut out);
            rest = &rest[i + 1..];
        }
        self.carry.extend_from_slice(rest);
        // A line longer than a record goes on in pieces, as Postfix's.
        while self.carry.len() > self.record_limit {
            let piece: Vec<u8> = self.carry.drain(..self.record_limit).collect();
            self.record(&piece, true, &mut out);
        }
        out
    }

    /// The end of the content: a last line without its line end.
    pub(crate) fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.carry.is_empty() {
            let last = std::mem::take(&mut self.carry);
            self.record(&last, false, &mut out);
            // It had no line end.
            if out.last() == Some(&b'\n') {
                out.pop();
            }
        }
        let mut events = Vec::new();
        self.parser.finish(&mut |o| events.push(owned(o)));
        for e in events {
            self.handle(e, &mut out);
        }
        self.nesting();
        out
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        let mut rest = line;
        while rest.len() > self.record_limit {
            let (piece, tail) = rest.split_at(self.record_limit);
            self.record(piece, true, out);
            rest = tail;
        }
        self.record(rest, false, out);
    }

    fn record(&mut self, text: &[u8], more: bool, out: &mut Vec<u8>) {
        let mut events = Vec::new();
        self.parser
            .record(text, more, &mut |o| events.push(owned(o)));
        for e in events {
            self.handle(e, out);
        }
        self.nesting();
    }

    /// Multipart nesting deeper than `mime_nesting_limit`: parts below it
    /// would escape the header checks, so with header tables in use the
    /// message is refused, as Postfix's cleanup refuses it (its reason
    /// comes after a REJECT's, which stands).
    fn nesting(&mut self) {
        if self.nesting_reported || self.parser.too_deep.is_none() {
            return;
        }
        let t = self.tables;
        if t.header.is_empty() && t.mime.is_empty() && t.nested.is_empty() {
            return;
        }
        self.nesting_reported = true;
        let header = self.parser.too_deep.as_deref().unwrap_or_default();
        let shown: String = String::from_utf8_lossy(&header[..header.len().min(100)]).into();
        let w = &self.who;
        info!(
            "{}: reject: mime-error MIME nesting exceeds safety limit: {shown} from {}; from=<{}> to=<{}>",
            w.queue_id,
            w.origin,
            w.sender,
            w.recipient.as_deref().unwrap_or("unknown")
        );
        if self.verdict.reject.is_none() {
            self.verdict.reject = Some("5.6.0 MIME nesting exceeds safety limit".into());
        }
    }

    fn handle(&mut self, e: Event, out: &mut Vec<u8>) {
        match e {
            Event::Header(block, text) => {
                let name_end = text.iter().position(|c| *c == b':').unwrap_or(0);
                if text[..name_end].eq_ignore_ascii_case(b"content-transfer-encoding") {
                    self.eight_bit |=
                        crate::mime::says_8bit(&String::from_utf8_lossy(&text[name_end + 1..]));
                }
                let mime = is_mime_header(&text[..name_end]);
                let table = match (block, mime) {
                    (_, true) => &self.tables.mime,
                    (Block::Primary, false) => &self.tables.header,
                    (Block::Multipart, false) => &self.tables.mime,
                    (Block::Nested, false) => &self.tables.nested,
                };
                let class = match (block, mime) {
                    (_, true) | (Block::Multipart, _) => "mime_header_checks",
                    (Block::Primary, _) => "header_checks",
                    (Block::Nested, _) => "nested_header_checks",
                };
                let shown = String::from_utf8_lossy(&text).into_owned();
                let mut prepend = Vec::new();
                let edit = self.check(table, class, Context::Header, &shown, &mut prepend);
                put(out, prepend, edit, &text, b"\n");
            }
            Event::PrimaryEnd => self.primary_end = Some(out.len()),
            Event::Body { text, more, offset } => {
                let limit = self.tables.body_limit;
                let text_s = String::from_utf8_lossy(&text).into_owned();
                let mut prepend = Vec::new();
                let edit = if limit == 0 || offset < limit {
                    self.check(
                        &self.tables.body,
                        "body_checks",
                        Context::Body,
                        &text_s,
                        &mut prepend,
                    )
                } else {
                    Edit::Keep
                };
                put(out, prepend, edit, &text, if more { b"" } else { b"\n" });
            }
        }
    }

    /// Looks `text` up and carries out the action, as cleanup_act.
    fn check(
        &mut self,
        table: &MapList,
        class: &str,
        ctx: Context,
        text: &str,
        prepend: &mut Vec<String>,
    ) -> Edit {
        if self.done || table.is_empty() {
            return Edit::Keep;
        }
        let value = match table.lookup(text) {
            Ok(Some(v)) => v,
            Ok(None) => return Edit::Keep,
            Err(e) => {
                warn!(
                    "{}: {class} map lookup problem -- message not accepted, try again later: {e}",
                    self.who.queue_id
                );
                self.verdict.lookup_failed = true;
                return Edit::Keep;
            }
        };
        let (command, optional) = match value.find([' ', '\t']) {
            Some(i) => (&value[..i], value[i..].trim_start()),
            None => (value.as_str(), ""),
        };
        let is = |w: &str| command.eq_ignore_ascii_case(w);
        if is("REJECT") {
            let mut reason = if optional.is_empty() {
                "5.7.1 message content rejected".to_owned()
            } else {
                dsn_prepend("5.7.1", optional)
            };
            if !reason.starts_with(['4', '5']) {
                warn!("bad DSN action in {optional} -- need 4.x.x or 5.x.x");
                reason.replace_range(..1, "4");
            }
            self.log("reject", &ctx, text, &reason);
            self.verdict.reject = Some(reason);
            self.done = true;
        } else if is("WARN") {
            self.log("warning", &ctx, text, optional);
        } else if is("INFO") {
            self.log("info", &ctx, text, optional);
        } else if is("PASS") {
            self.log("pass", &ctx, text, optional);
            self.done = true;
            self.verdict.no_milters = true;
        } else if is("DISCARD") {
            self.log("discard", &ctx, text, optional);
            self.verdict.discard = true;
            self.done = true;
        } else if is("HOLD") {
            if !self.verdict.hold && !self.verdict.discard {
                self.log("hold", &ctx, text, optional);
                self.verdict.hold = true;
            }
        } else if is("PREPEND") {
            if optional.is_empty() {
                warn!("PREPEND action without text in {class} map");
            } else if matches!(ctx, Context::Header) && !is_header(optional) {
                warn!(
                    "bad PREPEND header text \"{optional}\" in {class} map -- need \"headername: headervalue\""
                );
            } else {
                self.log("prepend", &ctx, text, optional);
                prepend.push(optional.to_owned());
            }
        } else if is("REPLACE") {
            if optional.is_empty() {
                warn!("REPLACE action without text in {class} map");
            } else if matches!(ctx, Context::Header) && !is_header(optional) {
                warn!(
                    "bad REPLACE header text \"{optional}\" in {class} map -- need \"headername: headervalue\""
                );
            } else {
                self.log("replace", &ctx, text, optional);
                return Edit::Replace(optional.to_owned());
            }
        } else if is("STRIP") {
            self.log("strip", &ctx, text, optional);
            return Edit::Drop;
        } else if is("IGNORE") {
            return Edit::Drop;
        } else if is("DUNNO") || is("OK") {
        } else if is("FILTER") {
            if optional.is_empty() {
                warn!("missing FILTER command argument in {class} map");
            } else if !optional.contains(':') {
                warn!("bad FILTER command {optional} in {class} -- need transport:destination");
            } else {
                self.log("filter", &ctx, text, optional);
                self.verdict.filter = Some(optional.to_owned());
            }
        } else if is("REDIRECT") {
            if !optional.contains('@') {
                warn!("bad REDIRECT target \"{optional}\" in {class} map -- need user@domain");
            } else {
                self.log("redirect", &ctx, text, optional);
                self.verdict.redirect = Some(optional.to_owned());
                self.done = true;
                self.verdict.no_milters = true;
            }
        } else if is("BCC") {
            if !optional.contains('@') {
                warn!("bad BCC address \"{optional}\" in {class} map -- need user@domain");
            } else {
                self.log("bcc", &ctx, text, optional);
                self.verdict.bcc.push(optional.to_owned());
            }
        } else {
            warn!("unknown command in {class} map: {value}");
        }
        Edit::Keep
    }

    /// Postfix's cleanup_act_log line.
    fn log(&self, action: &str, ctx: &Context, content: &str, text: &str) {
        let w = &self.who;
        let shown: String = content.chars().take(200).collect();
        let mut line = format!(
            "{}: {action}: {} {shown} from {};",
            w.queue_id,
            ctx.word(),
            w.origin
        );
        line.push_str(&format!(" from=<{}>", w.sender));
        if let Some(r) = &w.recipient {
            line.push_str(&format!(" to=<{r}>"));
        }
        if let Some(p) = &w.proto {
            line.push_str(&format!(" proto={p}"));
        }
        if let Some(h) = &w.helo {
            line.push_str(&format!(" helo=<{h}>"));
        }
        if !text.is_empty() {
            line.push_str(&format!(": {text}"));
        }
        info!("{line}");
    }
}

/// Writes what a header or record became: the lines PREPEND added, then
/// the original bytes (never a lossy copy: 8-bit text stays as it came),
/// its replacement, or nothing; `end` is its line end.
fn put(out: &mut Vec<u8>, prepend: Vec<String>, edit: Edit, raw: &[u8], end: &[u8]) {
    for p in prepend {
        out.extend_from_slice(p.as_bytes());
        out.push(b'\n');
    }
    match edit {
        Edit::Keep => out.extend_from_slice(raw),
        Edit::Replace(r) => out.extend_from_slice(r.as_bytes()),
        Edit::Drop => return,
    }
    out.extend_from_slice(end);
}

/// Postfix's dsn_prepend: the text's own `4.x.x`/`5.x.x` status, else `dsn`.
fn dsn_prepend(dsn: &str, text: &str) -> String {
    let (code, rest) = text.split_once(' ').unwrap_or((text, ""));
    let is_dsn = code.len() >= 5
        && code.starts_with(['2', '4', '5'])
        && code.as_bytes()[1] == b'.'
        && code.split('.').count() == 3
        && code
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()));
    if is_dsn {
        format!("{code} {}", rest.trim_start())
    } else {
        format!("{dsn} {text}")
    }
}

/// `Content-*` and `MIME-Version` (Postfix's HDR_OPT_MIME headers).
fn is_mime_header(name: &[u8]) -> bool {
    const MIME: [&str; 6] = [
        "content-description",
        "content-disposition",
        "content-id",
        "content-transfer-encoding",
        "content-type",
        "mime-version",
    ];
    let name = String::from_utf8_lossy(name).trim().to_ascii_lowercase();
    MIME.contains(&name.as_str())
}

fn is_header(text: &str) -> bool {
    let Some((name, _)) = text.split_once(':') else {
        return false;
    };
    !name.trim_end().is_empty()
        && name
            .trim_end()
            .bytes()
            .all(|c| c.is_ascii_graphic() && c != b':')
}

/// A parser output that does not borrow the input.
enum Event {
    Header(Block, Vec<u8>),
    PrimaryEnd,
    Body {
        text: Vec<u8>,
        more: bool,
        offset: u64,
    },
}

fn owned(o: Out<'_>) -> Event {
    match o {
        Out::Header(b, h) => Event::Header(b, h),
        Out::PrimaryEnd => Event::PrimaryEnd,
        Out::Body { text, more, offset } => Event::Body {
            text: text.to_vec(),
            more,
            offset,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(header: &str, body: &str) -> Tables {
        let list = |spec: &str| {
            let specs: Vec<String> = if spec.is_empty() {
                Vec::new()
            } else {
                vec![spec.to_owned()]
            };
            MapList::parse(&specs, &pfx_maps::passwd::Passwd::default()).unwrap()
        };
        Tables {
            header: list(header),
            mime: list(header),
            nested: list(header),
            body: list(body),
            body_limit: 51_200,
        }
    }

    fn inspector(t: &Tables) -> Inspector<'_> {
        let who = Who {
            queue_id: "ID".into(),
            origin: "local".into(),
            sender: "s@example.com".into(),
            recipient: None,
            proto: None,
            helo: None,
        };
        let limits = Limits {
            header: 102_400,
            nesting: 100,
            boundary: 2048,
        };
        Inspector::new(t, who, limits, 64)
    }

    /// Multiparts nested deeper than `mime_nesting_limit` (2 here; as in
    /// Postfix, limit + 2 boundaries still nest) are refused when header
    /// tables are in use, and only then.
    #[test]
    fn nesting_past_the_limit_is_refused_with_header_checks() {
        // The primary headers open b0; each part opens the next.
        let nested = |depth: usize| {
            let mut m = Vec::new();
            for i in 0..depth {
                m.extend(format!("--b{i}\n").bytes());
                if i + 1 < depth {
                    let next = i + 1;
                    m.extend(
                        format!("Content-Type: multipart/mixed; boundary=b{next}\n\n").bytes(),
                    );
                }
            }
            m.extend_from_slice(b"Content-Type: text/plain\n\nhidden\n");
            m
        };
        let run = |t: &Tables, depth: usize| {
            let limits = Limits {
                header: 102_400,
                nesting: 2,
                boundary: 2048,
            };
            let mut ins = Inspector::new(t, inspector(t).who, limits, 64);
            let (_, _) = ins.headers(b"Content-Type: multipart/mixed; boundary=b0\n", b"\n");
            ins.feed(&nested(depth));
            ins.finish();
            ins.verdict.reject
        };
        let t = tables("inline:{ nothing=REJECT }", "");
        assert_eq!(run(&t, 4), None);
        assert_eq!(
            run(&t, 5).as_deref(),
            Some("5.6.0 MIME nesting exceeds safety limit")
        );
        let body_only = tables("", "inline:{ nothing=REJECT }");
        assert_eq!(run(&body_only, 5), None);
    }

    /// Whatever the structure and however the content is cut into pieces,
    /// tables that match nothing leave every byte as it was.
    #[test]
    fn content_nothing_matches_passes_unchanged() {
        let t = tables("inline:{ nothing=DISCARD }", "inline:{ nothing=REJECT }");
        let fragments: [&[u8]; 12] = [
            b"Content-Type: multipart/mixed; boundary=\"b\"\n",
            b"--b\n",
            b"--b--\n",
            b"\n",
            b"X-Part: \xe9t\xe9\n two\n",
            b"Content-Type: message/rfc822\n",
            b"Subject: nested\n",
            b"plain body line\n",
            b"--other\n",
            &[b'x'; 150],
            b"\n",
            b"\xff\xfe binary \r\n",
        ];
        let mut seed: u64 = 7;
        let mut next = |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) % n
        };
        for _ in 0..300 {
            let mut body = Vec::new();
            for _ in 0..next(20) {
                body.extend_from_slice(fragments[next(12) as usize]);
            }
            let mut ins = inspector(&t);
            let (head, mut out) = ins.headers(
                b"Subject: caf\xe9\nContent-Type: multipart/mixed; boundary=b\n",
                b"\n",
            );
            assert_eq!(
                head,
                b"Subject: caf\xe9\nContent-Type: multipart/mixed; boundary=b\n"
            );
            let mut rest = &body[..];
            while !rest.is_empty() {
                let n = (next(40) as usize + 1).min(rest.len());
                out.extend(ins.feed(&rest[..n]));
                rest = &rest[n..];
            }
            out.extend(ins.finish());
            let mut want = b"\n".to_vec();
            want.extend_from_slice(&body);
            assert_eq!(out, want, "{}", String::from_utf8_lossy(&out));
            assert_eq!(ins.verdict, Verdict::default());
        }
    }

    #[test]
    fn actions_edit_headers_and_lines() {
        let t = tables(
            "regexp:{ {/^X-Drop: a/ IGNORE}, {/^Subject: old/ REPLACE Subject: new}, {/^X-T: 1/ PREPEND X-Added: yes} }",
            "regexp:{ {/^tag/ PREPEND before}, {/^secret/ REJECT 4.7.0 Not now} }",
        );
        let mut ins = inspector(&t);
        let (head, mut out) = ins.headers(b"Subject: old\nX-Drop: a\nX-T: 1\n", b"\n");
        assert_eq!(head, b"Subject: new\nX-Added: yes\nX-T: 1\n");
        out.extend(ins.feed(b"tag\nsecret\nafter\n"));
        out.extend(ins.finish());
        assert_eq!(out, b"\nbefore\ntag\nsecret\nafter\n");
        assert_eq!(ins.verdict.reject.as_deref(), Some("4.7.0 Not now"));
    }
}
