//! BIND's master file directives that hickory's parser lacks or reads
//! otherwise, rewritten into text it reads as BIND would: `$GENERATE`
//! expanded into records, `$INCLUDE file origin` inlined with its origin
//! (and the parent's restored after it), a relative `$ORIGIN` made
//! absolute, and, in a file without `$TTL`, the SOA's minimum as the
//! default TTL (BIND's `no TTL specified; using SOA MINTTL instead`).
//! Every line of the result remembers the file and line it came from, so
//! errors still name them.

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
                    flat.push(e.text, path, e.line);
                }
            }
        }
        Ok(())
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
struct Entry<'a> {
    line: usize,
    text: &'a str,
}

/// The entries of `text`, blank and comment-only lines left out.
fn entries(text: &str) -> Vec<Entry<'_>> {
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
