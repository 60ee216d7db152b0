//! BIND's master file directives that hickory's parser lacks or reads
//! otherwise, rewritten into text it reads as BIND would: `$GENERATE`
//! expanded into records, `$INCLUDE file origin` inlined with its origin
//! (and the parent's restored after it), a relative `$ORIGIN` made
//! absolute, and, in a file without `$TTL`, the SOA's minimum as the
//! default TTL (BIND's `no TTL specified; using SOA MINTTL instead`).
//! Records of types hickory cannot read from text (DNAME, SPF, LOC, RP,
//! and any type in RFC 3597's generic form, `TYPEnnn \# len hex`) are
//! taken out and encoded here, to be added to the zone as they are on the
//! wire. Every line of the result remembers the file and line it came
//! from, so errors still name them.

use std::path::{Path, PathBuf};

/// Nested `$INCLUDE`s at most (a file that includes itself stops here).
const MAX_DEPTH: usize = 20;

/// Records one `$GENERATE` may make, and the widest field it may pad to:
/// a typo in a range must not fill the memory.
const MAX_GENERATED: u64 = 1 << 20;
const MAX_WIDTH: usize = 255;

/// The zone text for hickory's parser, and where each of its lines came from.
#[derive(Debug, Default)]
pub(crate) struct Flat {
    pub(crate) text: String,
    /// For each line of `text` (0-based), its file and line (1-based).
    pub(crate) lines: Vec<(PathBuf, usize)>,
    pub(crate) warnings: Vec<String>,
    /// The records taken out of the text, encoded.
    pub(crate) extra: Vec<Extra>,
}

/// A record hickory's parser cannot read, as it goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Extra {
    /// Absolute, with its trailing dot.
    pub(crate) name: String,
    pub(crate) ttl: u32,
    pub(crate) rtype: u16,
    pub(crate) rdata: Vec<u8>,
}

/// A directive that cannot be carried out: the file, line and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub(crate) file: PathBuf,
    pub(crate) line: usize,
    pub(crate) reason: String,
}

impl Flat {
    fn push(&mut self, text: &str, file: &Path, first_line: usize) {
        for (n, l) in (first_line..).zip(text.split_inclusive('\n')) {
            self.text.push_str(l);
            self.lines.push((file.to_owned(), n));
        }
        if !self.text.ends_with('\n') {
            self.text.push('\n');
        }
    }

    /// Where line `line` (1-based) of [`Flat::text`] came from.
    pub(crate) fn source(&self, line: usize) -> Option<&(PathBuf, usize)> {
        self.lines.get(line.saturating_sub(1))
    }
}

/// Rewrites the zone text of `path` (whose origin is `origin`, absolute
/// with its trailing dot); relative `$INCLUDE` names are under `base`
/// (named's `directory`).
pub(crate) fn flatten(path: &Path, text: &str, origin: &str, base: &Path) -> Result<Flat, Problem> {
    let mut flat = Flat::default();
    let mut st = Walk {
        base,
        ttl_known: false,
        soa_minimum: soa_minimum(text),
        depth: 0,
        owner: None,
        owner_taken: false,
        default_ttl: None,
        last_ttl: None,
    };
    st.file(&mut flat, path, text, origin)?;
    Ok(flat)
}

struct Walk<'a> {
    base: &'a Path,
    /// A `$TTL` (given or inserted) holds for the records that follow.
    ttl_known: bool,
    soa_minimum: Option<String>,
    depth: usize,
    /// The owner of the last record (for records that leave it out), and
    /// whether that record was taken out of the text.
    owner: Option<String>,
    owner_taken: bool,
    /// `$TTL`, and the last TTL a record gave.
    default_ttl: Option<u32>,
    last_ttl: Option<u32>,
}

impl Walk<'_> {
    fn file(
        &mut self,
        flat: &mut Flat,
        path: &Path,
        text: &str,
        origin: &str,
    ) -> Result<(), Problem> {
        let mut origin = origin.to_owned();
        for e in entries(text) {
            let problem = |reason: String| Problem {
                file: path.to_owned(),
                line: e.line,
                reason,
            };
            let tokens = tokens(e.text);
            let first = tokens.first().map(String::as_str).unwrap_or("");
            let owner_given = !e.text.starts_with([' ', '\t']);
            match first.to_ascii_uppercase().as_str() {
                "$ORIGIN" if owner_given => {
                    let name = tokens
                        .get(1)
                        .ok_or_else(|| problem("$ORIGIN without a name".into()))?;
                    origin = absolute(name, &origin);
                    flat.push(&format!("$ORIGIN {origin}\n"), path, e.line);
                }
                "$TTL" if owner_given => {
                    self.ttl_known = true;
                    self.default_ttl = tokens.get(1).and_then(|t| ttl_seconds(t));
                    flat.push(e.text, path, e.line);
                }
                "$INCLUDE" if owner_given => {
                    let name = tokens
                        .get(1)
                        .ok_or_else(|| problem("$INCLUDE without a file name".into()))?;
                    if self.depth >= MAX_DEPTH {
                        return Err(problem(format!("$INCLUDE nested too deeply: {name}")));
                    }
                    let file = self.base.join(name);
                    let inner = std::fs::read_to_string(&file)
                        .map_err(|err| problem(format!("$INCLUDE {}: {err}", file.display())))?;
                    let inner_origin = tokens
                        .get(2)
                        .map_or(origin.clone(), |o| absolute(o, &origin));
                    flat.push(&format!("$ORIGIN {inner_origin}\n"), path, e.line);
                    self.depth += 1;
                    self.file(flat, &file, &inner, &inner_origin)?;
                    self.depth -= 1;
                    // The including file's origin holds again (RFC 1035 §5.1).
                    flat.push(&format!("$ORIGIN {origin}\n"), path, e.line);
                }
                "$GENERATE" if owner_given => {
                    let lines = generate(&tokens[1..]).map_err(problem)?;
                    if !lines.is_empty() {
                        self.default_ttl(flat, path, e.line, &tokens[1..], 2);
                    }
                    for l in lines {
                        flat.push(&l, path, e.line);
                    }
                }
                d if d.starts_with('$') && owner_given => {
                    return Err(problem(format!("unknown $ directive '{first}'")));
                }
                _ => {
                    let skip = usize::from(owner_given);
                    self.default_ttl(flat, path, e.line, &tokens, skip);
                    let record = self
                        .record(&tokens, owner_given, &origin)
                        .map_err(problem)?;
                    if let Some(extra) = record {
                        flat.extra.push(extra);
                        self.owner_taken = owner_given || self.owner_taken;
                    } else if !owner_given && self.owner_taken {
                        // The owner was on a record taken out: named here.
                        let owner = self.owner.clone().unwrap_or_default();
                        flat.push(&format!("{owner}{}", e.text), path, e.line);
                    } else {
                        self.owner_taken = false;
                        flat.push(e.text, path, e.line);
                    }
                }
            }
        }
        Ok(())
    }

    /// Follows a record's owner and TTL; a record of a type hickory cannot
    /// read comes back encoded, to be taken out of the text.
    fn record(
        &mut self,
        tokens: &[String],
        owner_given: bool,
        origin: &str,
    ) -> Result<Option<Extra>, String> {
        let mut rest = tokens;
        if owner_given {
            let (first, more) = tokens.split_first().ok_or("empty record")?;
            self.owner = Some(absolute(first, origin));
            rest = more;
        }
        let mut ttl = None;
        let mut i = 0;
        while i < rest.len().min(2) && (is_ttl(&rest[i]) || is_class(&rest[i])) {
            if is_ttl(&rest[i]) {
                ttl = ttl_seconds(&rest[i]);
            }
            i += 1;
        }
        if ttl.is_some() {
            self.last_ttl = ttl;
        }
        let Some(rtype) = rest.get(i) else {
            return Ok(None);
        };
        let rdata = &rest[i + 1..];
        let Some(code) = taken_type(rtype, rdata) else {
            return Ok(None);
        };
        let name = self.owner.clone().ok_or("no owner name for the record")?;
        let ttl = ttl
            .or(self.default_ttl)
            .or(self.last_ttl)
            .ok_or("no TTL specified")?;
        let rdata = encode(code, rdata, origin)?;
        Ok(Some(Extra {
            name,
            ttl,
            rtype: code,
            rdata,
        }))
    }

    /// Before the first record without a TTL in a file without `$TTL`,
    /// the SOA's minimum becomes the default, as BIND has it.
    fn default_ttl(
        &mut self,
        flat: &mut Flat,
        path: &Path,
        line: usize,
        tokens: &[String],
        skip: usize,
    ) {
        if self.ttl_known {
            return;
        }
        let has_ttl = tokens.iter().skip(skip).take(2).any(|t| is_ttl(t));
        if has_ttl {
            return;
        }
        if let Some(min) = &self.soa_minimum {
            flat.warnings.push(format!(
                "{}:{line}: no TTL specified; using SOA MINTTL instead",
                path.display()
            ));
            flat.push(&format!("$TTL {min}\n"), path, line);
            self.ttl_known = true;
            self.default_ttl = ttl_seconds(min);
        }
    }
}

/// `name` made absolute under `origin` (`@` is the origin itself).
fn absolute(name: &str, origin: &str) -> String {
    if name == "@" {
        origin.to_owned()
    } else if name.ends_with('.') && !name.ends_with("\\.") {
        name.to_owned()
    } else if origin == "." {
        format!("{name}.")
    } else {
        format!("{name}.{origin}")
    }
}

/// A TTL as BIND writes them: `3600`, `1h`, `1h30m`, `2W`.
fn is_ttl(t: &str) -> bool {
    if t.is_empty() || !t.starts_with(|c: char| c.is_ascii_digit()) {
        return false;
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    let mut digits = false;
    for c in t.chars() {
        if c.is_ascii_digit() {
            digits = true;
        } else if "wdhmsWDHMS".contains(c) && digits {
            digits = false;
        } else {
            return false;
        }
    }
    !digits
}

/// A TTL in seconds (`3600`, `1h30m`).
fn ttl_seconds(t: &str) -> Option<u32> {
    if !is_ttl(t) {
        return None;
    }
    let (mut total, mut n) = (0u64, 0u64);
    for c in t.chars() {
        match c.to_ascii_lowercase() {
            d @ '0'..='9' => n = n.checked_mul(10)? + u64::from(d as u8 - b'0'),
            u => {
                let unit = match u {
                    'w' => 604_800,
                    'd' => 86_400,
                    'h' => 3_600,
                    'm' => 60,
                    _ => 1,
                };
                total += n.checked_mul(unit)?;
                n = 0;
            }
        }
    }
    u32::try_from(total + n).ok()
}

/// The type code of a record hickory's parser cannot read: DNAME, SPF,
/// LOC, RP, the DNSSEC types of a signed zone (dnssec.rs), and any type in
/// RFC 3597's generic form.
fn taken_type(rtype: &str, rdata: &[String]) -> Option<u16> {
    let upper = rtype.to_ascii_uppercase();
    if let Some(code) = crate::dnssec::code(&upper) {
        return Some(code);
    }
    let code = match upper.as_str() {
        "DNAME" => 39,
        "SPF" => 99,
        "LOC" => 29,
        "RP" => 17,
        t => match t.strip_prefix("TYPE").and_then(|n| n.parse::<u16>().ok()) {
            Some(n) => n,
            None => return known_code(t).filter(|_| rdata.first().is_some_and(|r| r == "\\#")),
        },
    };
    Some(code)
}

/// Codes of the common types, for their generic form (`A \# 4 7F000001`).
fn known_code(t: &str) -> Option<u16> {
    Some(match t {
        "A" => 1,
        "NS" => 2,
        "CNAME" => 5,
        "PTR" => 12,
        "HINFO" => 13,
        "MX" => 15,
        "TXT" => 16,
        "AAAA" => 28,
        "SRV" => 33,
        "CAA" => 257,
        _ => return None,
    })
}

/// RDATA in wire form: RFC 3597's `\# len hex` for any type, else as the
/// type's text form says.
fn encode(code: u16, rdata: &[String], origin: &str) -> Result<Vec<u8>, String> {
    if rdata.first().is_some_and(|r| r == "\\#") {
        let len: usize = rdata
            .get(1)
            .and_then(|l| l.parse().ok())
            .ok_or("bad \\# length")?;
        let hex: String = rdata[2..].concat();
        if hex.len() != len * 2 {
            return Err(format!("\\# length {len} does not match the data"));
        }
        return (0..len)
            .map(|i| {
                u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                    .map_err(|_| "bad hex in \\# data".to_owned())
            })
            .collect();
    }
    match code {
        39 => match rdata {
            [target] => wire_name(&absolute(target, origin)),
            _ => Err("DNAME takes one name".into()),
        },
        17 => match rdata {
            [mbox, txt] => {
                let mut out = wire_name(&absolute(mbox, origin))?;
                out.extend(wire_name(&absolute(txt, origin))?);
                Ok(out)
            }
            _ => Err("RP takes two names".into()),
        },
        99 => {
            let mut out = Vec::new();
            for s in rdata {
                let text = s
                    .strip_prefix('"')
                    .and_then(|t| t.strip_suffix('"'))
                    .unwrap_or(s);
                let bytes = unescape(text);
                if bytes.len() > 255 {
                    return Err("character string longer than 255 bytes".into());
                }
                out.push(bytes.len() as u8);
                out.extend(bytes);
            }
            Ok(out)
        }
        29 => loc(rdata),
        c if crate::dnssec::is_dnssec(c) => {
            crate::dnssec::encode(c, rdata, &|n| wire_name(&absolute(n, origin)))
        }
        _ => Err(format!("TYPE{code} data must be in the \\# form")),
    }
}

/// A zone file string with its `\X` and `\DDD` escapes undone.
fn unescape(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            let digits = b
                .get(i + 1..i + 4)
                .filter(|d| d.iter().all(u8::is_ascii_digit));
            match digits.and_then(|d| std::str::from_utf8(d).ok()?.parse::<u8>().ok()) {
                Some(v) => {
                    out.push(v);
                    i += 4;
                }
                None => {
                    out.push(b[i + 1]);
                    i += 2;
                }
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// An absolute name as wire labels, uncompressed and as written.
fn wire_name(name: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    if name != "." {
        let mut label = Vec::new();
        let raw = unescape_keep_dots(name);
        for (byte, sep) in raw {
            if sep {
                if label.is_empty() || label.len() > 63 {
                    return Err(format!("bad name {name}"));
                }
                out.push(label.len() as u8);
                out.append(&mut label);
            } else {
                label.push(byte);
            }
        }
        if !label.is_empty() {
            return Err(format!("bad name {name}"));
        }
    }
    out.push(0);
    if out.len() > 255 {
        return Err(format!("name too long: {name}"));
    }
    Ok(out)
}

/// The bytes of a name, each with whether it is a label separator (an
/// unescaped dot).
fn unescape_keep_dots(name: &str) -> Vec<(u8, bool)> {
    let b = name.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if i + 1 < b.len() => {
                let end = (i + 4).min(b.len());
                let digits = &b[i + 1..end];
                if digits.len() == 3 && digits.iter().all(u8::is_ascii_digit) {
                    let v = std::str::from_utf8(digits)
                        .ok()
                        .and_then(|d| d.parse::<u8>().ok());
                    out.push((v.unwrap_or(b'?'), false));
                    i += 4;
                } else {
                    out.push((b[i + 1], false));
                    i += 2;
                }
            }
            b'.' => {
                out.push((b'.', true));
                i += 1;
            }
            c => {
                out.push((c, false));
                i += 1;
            }
        }
    }
    out
}

/// RFC 1876's LOC text form in wire form:
/// `d1 [m1 [s1]] N|S d2 [m2 [s2]] E|W alt[m] [size[m] [hp[m] [vp[m]]]]`.
fn loc(rdata: &[String]) -> Result<Vec<u8>, String> {
    let bad = || "bad LOC data".to_owned();
    let mut it = rdata.iter().map(String::as_str).peekable();
    let mut angle = |pos: &str, neg: &str| -> Result<u32, String> {
        let mut parts = Vec::new();
        loop {
            let t = it.next().ok_or_else(bad)?;
            if t.eq_ignore_ascii_case(pos) || t.eq_ignore_ascii_case(neg) {
                let [d, m, s]: [f64; 3] = [0, 1, 2].map(|i| parts.get(i).copied().unwrap_or(0.0));
                let thousandths = ((d * 3600.0 + m * 60.0 + s) * 1000.0).round() as i64;
                let v = if t.eq_ignore_ascii_case(pos) {
                    (1i64 << 31) + thousandths
                } else {
                    (1i64 << 31) - thousandths
                };
                return u32::try_from(v).map_err(|_| bad());
            }
            parts.push(t.parse::<f64>().map_err(|_| bad())?);
            if parts.len() > 3 {
                return Err(bad());
            }
        }
    };
    let lat = angle("N", "S")?;
    let lon = angle("E", "W")?;
    let mut meters = rdata
        .iter()
        .skip_while(|t| !t.eq_ignore_ascii_case("E") && !t.eq_ignore_ascii_case("W"))
        .skip(1)
        .map(|t| {
            t.trim_end_matches(['m', 'M'])
                .parse::<f64>()
                .map_err(|_| bad())
        });
    let alt = meters.next().ok_or_else(bad)??;
    let size = meters.next().transpose()?.unwrap_or(1.0);
    let hp = meters.next().transpose()?.unwrap_or(10_000.0);
    let vp = meters.next().transpose()?.unwrap_or(10.0);
    let precision = |m: f64| -> u8 {
        let mut cm = (m * 100.0).round() as u64;
        let mut exp = 0u8;
        while cm >= 10 && exp < 9 {
            cm /= 10;
            exp += 1;
        }
        ((cm.min(9) as u8) << 4) | exp
    };
    let altitude = u32::try_from((alt * 100.0).round() as i64 + 10_000_000).map_err(|_| bad())?;
    let mut out = vec![0, precision(size), precision(hp), precision(vp)];
    out.extend(lat.to_be_bytes());
    out.extend(lon.to_be_bytes());
    out.extend(altitude.to_be_bytes());
    Ok(out)
}

/// The minimum field of the file's first SOA record, if it has one.
fn soa_minimum(text: &str) -> Option<String> {
    entries(text).into_iter().find_map(|e| {
        let t = tokens(e.text);
        let at = t.iter().position(|w| w.eq_ignore_ascii_case("SOA"))?;
        t.get(at + 7).cloned()
    })
}

/// One entry of a master file: its first line and its text (one line, or
/// several joined by parentheses), line ends included.
pub(crate) struct Entry<'a> {
    pub(crate) line: usize,
    text: &'a str,
    /// The offset just after it.
    pub(crate) end: usize,
}

/// The entries of `text`, blank and comment-only lines left out.
pub(crate) fn entries(text: &str) -> Vec<Entry<'_>> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut comment, mut escaped) = (0i32, false, false, false);
    let (mut start, mut start_line, mut line) = (0usize, 1usize, 1usize);
    let mut blank = true;
    for (i, c) in text.char_indices() {
        if c == '\n' {
            comment = false;
            line += 1;
            if depth <= 0 && !quoted {
                if !blank {
                    out.push(Entry {
                        line: start_line,
                        text: &text[start..=i],
                        end: i + 1,
                    });
                }
                start = i + 1;
                start_line = line;
                blank = true;
                depth = 0;
            }
            continue;
        }
        if comment {
            continue;
        }
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => comment = true,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth -= 1,
            _ => {}
        }
        if !comment && !c.is_whitespace() {
            blank = false;
        }
    }
    if !blank {
        out.push(Entry {
            line: start_line,
            text: &text[start..],
            end: text.len(),
        });
    }
    out
}

/// The words of an entry: comments and parentheses left out, quoted
/// strings kept whole (with their quotes), escapes kept as written.
fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut comment, mut escaped) = (false, false, false);
    for c in text.chars() {
        if comment {
            if c == '\n' {
                comment = false;
            }
            continue;
        }
        if escaped {
            cur.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' => {
                cur.push(c);
                escaped = true;
            }
            '"' => {
                cur.push(c);
                quoted = !quoted;
            }
            ';' if !quoted => comment = true,
            '(' | ')' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `$GENERATE range lhs [ttl] [class] type rhs`: one record per value of
/// the range (`start-stop[/step]`), `$` in lhs and rhs replaced by it
/// (`${offset,width,base}` with base `d`, `o`, `x`, `X`, `n` or `N`; `$$`
/// and `\$` are a `$`).
fn generate(args: &[String]) -> Result<Vec<String>, String> {
    let usage = || "$GENERATE: usage: $GENERATE range lhs [ttl] [class] type rhs".to_owned();
    let range = args.first().ok_or_else(usage)?;
    let (span, step) = range.split_once('/').unwrap_or((range, "1"));
    let (start, stop) = span.split_once('-').ok_or_else(usage)?;
    let num = |s: &str| {
        s.parse::<u64>()
            .map_err(|_| format!("$GENERATE: bad range {range}"))
    };
    let (start, stop, step) = (num(start)?, num(stop)?, num(step)?);
    if stop < start || step == 0 {
        return Err(format!("$GENERATE: bad range {range}"));
    }
    if (stop - start) / step >= MAX_GENERATED {
        return Err(format!("$GENERATE: range {range} makes too many records"));
    }
    let lhs = args.get(1).ok_or_else(usage)?;
    let rest = &args[2..];
    // [ttl] [class] type, then the rest is the right-hand side.
    let mut i = 0;
    while i < rest.len() && i < 2 && (is_ttl(&rest[i]) || is_class(&rest[i])) {
        i += 1;
    }
    if rest.len() < i + 2 {
        return Err(usage());
    }
    let middle = rest[..=i].join(" ");
    let rhs = &rest[i + 1..];
    let mut out = Vec::new();
    let mut v = start;
    while v <= stop {
        let rhs: Vec<String> = rhs
            .iter()
            .map(|r| substitute(r, v))
            .collect::<Result<_, _>>()?;
        out.push(format!(
            "{} {middle} {}\n",
            substitute(lhs, v)?,
            rhs.join(" ")
        ));
        v = match v.checked_add(step) {
            Some(n) => n,
            None => break,
        };
    }
    Ok(out)
}

fn is_class(t: &str) -> bool {
    ["IN", "CH", "HS", "CHAOS", "HESIOD"]
        .iter()
        .any(|c| t.eq_ignore_ascii_case(c))
}

/// One `$GENERATE` template with the iterator's value `v` put in.
fn substitute(template: &str, v: u64) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'$') => {
                chars.next();
                out.push('$');
            }
            '$' if chars.peek() == Some(&'$') => {
                chars.next();
                out.push('$');
            }
            '$' if chars.peek() == Some(&'{') => {
                chars.next();
                let spec: String = chars.by_ref().take_while(|&c| c != '}').collect();
                let mut parts = spec.split(',');
                let bad = || format!("$GENERATE: bad modifier ${{{spec}}}");
                let offset: i64 = parts
                    .next()
                    .unwrap_or("0")
                    .trim()
                    .parse()
                    .map_err(|_| bad())?;
                let width: usize = match parts.next() {
                    Some(w) => w.trim().parse().map_err(|_| bad())?,
                    None => 0,
                };
                if width > MAX_WIDTH {
                    return Err(bad());
                }
                let base = parts.next().unwrap_or("d").trim();
                let n = i64::try_from(v).map_err(|_| bad())? + offset;
                let n = u64::try_from(n).map_err(|_| bad())?;
                out.push_str(&match base {
                    "d" => format!("{n:0width$}"),
                    "o" => format!("{n:0width$o}"),
                    "x" => format!("{n:0width$x}"),
                    "X" => format!("{n:0width$X}"),
                    "n" | "N" => nibbles(n, width, base == "N"),
                    _ => return Err(bad()),
                });
            }
            '$' => out.push_str(&v.to_string()),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// `n` as reversed hexadecimal nibbles, dot-separated (ip6.arpa labels),
/// at least `width` characters as BIND counts them.
fn nibbles(n: u64, width: usize, upper: bool) -> String {
    let hex = if upper {
        format!("{n:X}")
    } else {
        format!("{n:x}")
    };
    let digits = width.div_ceil(2).max(hex.len());
    let hex = format!("{hex:0>digits$}");
    let mut labels: Vec<String> = hex.chars().rev().map(String::from).collect();
    let mut s = labels.join(".");
    while s.len() < width {
        labels.push("0".into());
        s = labels.join(".");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(text: &str) -> Flat {
        flatten(
            Path::new("db.test"),
            text,
            "example.test.",
            Path::new("/nonexistent"),
        )
        .unwrap()
    }

    #[test]
    fn generate_expands_as_bind() {
        let f = flat("$TTL 1h\n$GENERATE 1-3 host$ A 192.0.2.$\n$GENERATE 10-12/2 ${0,3,d}.rev PTR host$.example.test.\n");
        assert_eq!(
            f.text,
            "$TTL 1h\nhost1 A 192.0.2.1\nhost2 A 192.0.2.2\nhost3 A 192.0.2.3\n\
             010.rev PTR host10.example.test.\n012.rev PTR host12.example.test.\n"
        );
        // Every generated line points at its $GENERATE.
        assert_eq!(f.source(4), Some(&(PathBuf::from("db.test"), 2)));
        assert_eq!(substitute("${1,4,x}-$$-\\$", 9).unwrap(), "000a-$-$");
        assert_eq!(substitute("${0,0,n}", 0x12).unwrap(), "2.1");
        assert!(generate(&["5-1".into(), "a".into(), "A".into(), "x".into()]).is_err());
        assert!(substitute("${x}", 1).is_err());
        assert!(substitute("${0,99999999}", 1).is_err());
        let huge = [
            "0-4000000000".to_owned(),
            "h$".into(),
            "A".into(),
            "192.0.2.1".into(),
        ];
        assert!(generate(&huge).unwrap_err().contains("too many"));
    }

    #[test]
    fn relative_origin_and_include_origin_are_made_absolute() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("inc"), "inside IN TXT \"x\"\n").unwrap();
        let f = flatten(
            Path::new("db.test"),
            "$TTL 1h\n$ORIGIN sub\nwww A 192.0.2.1\n$INCLUDE inc other.example.test.\nafter A 192.0.2.2\n",
            "example.test.",
            dir.path(),
        )
        .unwrap();
        assert_eq!(
            f.text,
            "$TTL 1h\n$ORIGIN sub.example.test.\nwww A 192.0.2.1\n$ORIGIN other.example.test.\n\
             inside IN TXT \"x\"\n$ORIGIN sub.example.test.\nafter A 192.0.2.2\n"
        );
        assert_eq!(f.source(5), Some(&(dir.path().join("inc"), 1)));
        let missing = flatten(
            Path::new("db.test"),
            "$INCLUDE nothere\n",
            "example.test.",
            dir.path(),
        );
        assert_eq!(missing.unwrap_err().line, 1);
    }

    #[test]
    fn without_ttl_the_soa_minimum_is_the_default_with_binds_warning() {
        let f =
            flat("@ IN SOA ns root ( 1 3600 600\n 86400 300 )\n  IN NS ns\nns 60 IN A 192.0.2.1\n");
        assert!(f.text.starts_with("$TTL 300\n@ IN SOA"), "{}", f.text);
        assert_eq!(
            f.warnings,
            ["db.test:1: no TTL specified; using SOA MINTTL instead"]
        );
        // A file with $TTL, or whose records all have one, is left alone.
        assert!(flat("$TTL 1d\n@ SOA ns root 1 2 3 4 5\n")
            .warnings
            .is_empty());
        assert!(flat("@ 60 SOA ns root 1 2 3 4 5\n").warnings.is_empty());
        assert!(is_ttl("1h30m") && is_ttl("86400") && !is_ttl("IN") && !is_ttl("1x"));
    }

    #[test]
    fn records_hickory_cannot_read_are_taken_out_encoded() {
        let f = flat(
            "$TTL 1h\nd IN DNAME other.test.\n  IN TXT \"kept\"\ns 60 SPF \"v=spf1 -all\"\n\
             r RP root.example.test. txt\nt TYPE65280 \\# 4 0A000001\na A \\# 4 7F000001\n\
             l LOC 52 22 23.000 N 4 53 32.000 E -2.00m 0.00m 10000m 10m\n",
        );
        // The TXT after the DNAME keeps its owner.
        assert_eq!(f.text, "$TTL 1h\nd.example.test.  IN TXT \"kept\"\n");
        let got: Vec<(&str, u32, u16)> = f
            .extra
            .iter()
            .map(|e| (e.name.as_str(), e.ttl, e.rtype))
            .collect();
        assert_eq!(
            got,
            [
                ("d.example.test.", 3600, 39),
                ("s.example.test.", 60, 99),
                ("r.example.test.", 3600, 17),
                ("t.example.test.", 3600, 65280),
                ("a.example.test.", 3600, 1),
                ("l.example.test.", 3600, 29)
            ]
        );
        assert_eq!(f.extra[0].rdata, b"\x05other\x04test\x00");
        assert_eq!(f.extra[1].rdata, b"\x0bv=spf1 -all");
        assert_eq!(f.extra[3].rdata, [10, 0, 0, 1]);
        // 2^31 + (52*3600 + 22*60 + 23) * 1000, 2^31 + (4*3600 + 53*60 +
        // 32) * 1000, 10^7 - 200 cm; size 0, hp 1e6 cm, vp 1e3 cm.
        assert_eq!(
            f.extra[5].rdata,
            [
                0, 0x00, 0x16, 0x13, 0x8b, 0x3c, 0xf0, 0x18, 0x81, 0x0c, 0xbc, 0xe0, 0x00, 0x98,
                0x95, 0xb8
            ]
        );
        let bad = flatten(
            Path::new("db.test"),
            "$TTL 1\nx TYPE9 \\# 3 00\n",
            "example.test.",
            Path::new("/"),
        );
        assert_eq!(bad.unwrap_err().line, 2);
        assert_eq!(ttl_seconds("1h30m"), Some(5400));
    }

    #[test]
    fn unknown_directives_name_their_line() {
        let e = flatten(
            Path::new("db.test"),
            "$TTL 1\n$DATE 2020\n",
            "example.test.",
            Path::new("/"),
        )
        .unwrap_err();
        assert_eq!(
            (e.line, e.reason.as_str()),
            (2, "unknown $ directive '$DATE'")
        );
    }
}
