//! `regexp:` and `pcre:` tables (regexp_table(5), pcre_table(5)): an
//! ordered list of rules, the first whose pattern matches the whole lookup
//! key (as given, not folded) answers.
//!
//! ```text
//! /^(.*)@example\.com$/     local:$1        # $1..$9, ${n}; $$ is a $
//! !/^postmaster@/           REJECT          # matches when the pattern does not
//! /^a/!/^ab/                result          # regexp only: a, but not ab
//! if /@example\.net$/                       # rules up to endif only when it matches
//! /^info@/                  OK
//! endif
//! ```
//!
//! Flags after the closing delimiter toggle options. Both types match
//! without regard to case by default (`i` turns that off). regexp: `m`
//! (POSIX REG_NEWLINE: `^`/`$` at line ends, `.` not matching a newline),
//! `x` (turns POSIX extended syntax off: basic regular expressions).
//! pcre: `m` multi-line, `s` (on by default: `.` matches a newline), `x`
//! extended, `A` anchored, `E` dollar-end-only, `U` ungreedy, `X` ignored
//! with a warning (PCRE2 has no such option), as Postfix 3.7 built with
//! PCRE2.
//!
//! A table may be a file, or inline as `{ {rule}, {rule} }`. A rule with
//! a problem is reported with Postfix's warning (`regexp map FILE, line N:
//! ...: skipping this rule`) and left out; the rest of the table works,
//! as in Postfix. A table that cannot be read is handled by the caller
//! ([`crate::Map`]'s surrogate).
//!
//! # regexp: POSIX here is the `regex` crate
//!
//! Postfix hands regexp patterns to the C library's regcomp(3); postfix-rs
//! translates POSIX syntax (extended, or basic with `x`) to the `regex`
//! crate's and compiles that. The differences an administrator may meet:
//! - Matching is leftmost-first (Perl-like), not POSIX leftmost-longest:
//!   `/(a|ab)(c|bcd)/` sets `$1` to `a` where glibc gives `ab`. Whether a
//!   rule matches at all is the same; only what `$n` captures may differ.
//! - Back-references (`\1` in a pattern) are not supported: such a rule is
//!   reported and skipped.
//! - Case folding and `\w` are Unicode-aware; glibc in the C locale folds
//!   ASCII only.
//! - With `m`, a negated bracket expression (`[^a]`) still matches a
//!   newline.
//! - Compile errors are worded as glibc words the common ones (`Unmatched (
//!   or \(`); others carry the `regex` crate's text.
//!
//! Inside a bracket expression a backslash is a literal character, as
//! POSIX says (`[\.]` is a backslash or a dot).

use crate::pcre;
use crate::text::{self, Piece, TemplateError};

/// Which of the two types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Regexp,
    Pcre,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Regexp => "regexp",
            Self::Pcre => "pcre",
        }
    }
}

/// A compiled pattern.
#[derive(Debug)]
enum Engine {
    Posix(regex::bytes::Regex),
    Pcre(pcre::Code),
}

/// The spans of the match and of each group.
type Groups = Vec<Option<(usize, usize)>>;

impl Engine {
    /// How many groups the pattern has.
    fn groups(&self) -> usize {
        match self {
            Self::Posix(r) => r.captures_len() - 1,
            Self::Pcre(c) => c.captures(),
        }
    }

    fn exec(&self, key: &[u8], want_groups: bool) -> Result<Option<Groups>, String> {
        match self {
            Self::Posix(r) if !want_groups => Ok(r.is_match(key).then(Vec::new)),
            Self::Posix(r) => Ok(r
                .captures(key)
                .map(|c| c.iter().map(|m| m.map(|m| (m.start(), m.end()))).collect())),
            Self::Pcre(c) => c.exec(key),
        }
    }
}

/// A pattern and whether the rule wants it to match (`!` negates).
#[derive(Debug)]
struct Expr {
    engine: Engine,
    matches: bool,
}

#[derive(Debug)]
enum Op {
    Match {
        first: Expr,
        second: Option<Expr>,
        result: Vec<Piece>,
        max_sub: usize,
    },
    If {
        expr: Expr,
        /// The index of the matching endif rule, if there is one.
        endif: Option<usize>,
    },
    Endif,
}

#[derive(Debug)]
struct Rule {
    line: usize,
    op: Op,
}

/// A loaded regexp or pcre table.
#[derive(Debug)]
pub struct Table {
    kind: Kind,
    name: String,
    rules: Vec<Rule>,
}

/// A pattern as written, before compiling.
struct Pat<'a> {
    text: &'a str,
    matches: bool,
    /// regexp: (case-insensitive, REG_NEWLINE, extended); pcre: option bits.
    icase: bool,
    newline: bool,
    extended: bool,
    pcre_options: u32,
}

impl Table {
    /// Parses table text; `name` is the file name (or the inline `{...}`)
    /// that warnings name.
    pub fn parse(kind: Kind, name: &str, text: &str) -> Self {
        let mut t = Self {
            kind,
            name: name.to_owned(),
            rules: Vec::new(),
        };
        let mut stack: Vec<usize> = Vec::new();
        for (line, l) in text::logical_lines(name, text) {
            let l = text::trim_end(&l);
            if l.is_empty() {
                continue;
            }
            let Some(op) = t.parse_rule(line, l, stack.len()) else {
                continue;
            };
            let index = t.rules.len();
            match op {
                Op::If { .. } => stack.push(index),
                Op::Endif => {
                    if let Some(i) = stack.pop() {
                        if let Op::If { endif, .. } = &mut t.rules[i].op {
                            *endif = Some(index);
                        }
                    }
                }
                Op::Match { .. } => {}
            }
            t.rules.push(Rule { line, op });
        }
        for i in stack.into_iter().rev() {
            t.warn(t.rules[i].line, "IF has no matching ENDIF");
        }
        t
    }

    fn warn(&self, line: usize, what: &str) {
        tracing::warn!(
            "{} map {}, line {line}: {what}",
            self.kind.name(),
            self.name
        );
    }

    /// One rule, or `None` when it is skipped (with its warnings).
    fn parse_rule(&self, line: usize, p: &str, nesting: usize) -> Option<Op> {
        let kind = self.kind;
        let first_alnum = p.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        let word = |w: &str| {
            p.len() >= w.len()
                && p.is_char_boundary(w.len())
                && p[..w.len()].eq_ignore_ascii_case(w)
                && !p[w.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric())
        };
        if !first_alnum {
            let (first, mut rest) = self.get_pat(line, p)?;
            let second = match rest.strip_prefix('!').filter(|_| kind == Kind::Regexp) {
                Some(_) => {
                    let (pat, r) = self.get_pat(line, rest)?;
                    rest = r;
                    Some(pat)
                }
                None => None,
            };
            let rest = text::trim_start(rest);
            if rest.is_empty() {
                self.warn(line, "no replacement text: using empty string");
            }
            let result = match text::parse_template(rest) {
                Ok(r) => r,
                Err(errors) => {
                    for e in errors {
                        match e {
                            TemplateError::Syntax(m) => tracing::warn!("{m}"),
                            TemplateError::NonNumeric(n) => {
                                self.warn(line, &format!("non-numeric replacement index \"{n}\""))
                            }
                            TemplateError::Zero(n) => self.warn(
                                line,
                                &match kind {
                                    Kind::Regexp => {
                                        format!("out-of-range replacement index \"{n}\"")
                                    }
                                    Kind::Pcre => {
                                        format!("out of range replacement index \"{n}\"")
                                    }
                                },
                            ),
                        }
                    }
                    self.warn(line, "bad replacement syntax: skipping this rule");
                    return None;
                }
            };
            let max_sub = result
                .iter()
                .filter_map(|p| match p {
                    Piece::Group(n) => Some(*n),
                    Piece::Text(_) => None,
                })
                .max()
                .unwrap_or(0);
            if max_sub > 0 && !first.matches {
                self.warn(
                    line,
                    "$number found in negative match replacement text: skipping this rule",
                );
                return None;
            }
            let first = self.compile(line, &first)?;
            if max_sub > first.engine.groups() {
                self.warn(
                    line,
                    &format!(
                        "out of range replacement index \"{}\": skipping this rule",
                        i32::try_from(max_sub).unwrap_or(i32::MAX)
                    ),
                );
                return None;
            }
            let second = match second {
                Some(s) => Some(self.compile(line, &s)?),
                None => None,
            };
            Some(Op::Match {
                first,
                second,
                result,
                max_sub,
            })
        } else if word("if") {
            let rest = text::trim_start(&p[2..]);
            let (pat, rest) = self.get_pat(line, rest)?;
            let rest = text::trim_start(rest);
            if !rest.is_empty() {
                self.warn(
                    line,
                    &format!("ignoring extra text after IF statement: \"{rest}\""),
                );
                self.warn(
                    line,
                    "do not prepend whitespace to statements between IF and ENDIF",
                );
            }
            let expr = self.compile(line, &pat)?;
            Some(Op::If { expr, endif: None })
        } else if word("endif") {
            if nesting == 0 {
                self.warn(line, "ignoring ENDIF without matching IF");
                return None;
            }
            if !text::trim_start(&p[5..]).is_empty() {
                self.warn(line, "ignoring extra text after ENDIF");
            }
            Some(Op::Endif)
        } else {
            self.warn(line, "ignoring unrecognized request");
            None
        }
    }

    /// `[!...]/pattern/flags` at the start of `p`, and the text after it.
    fn get_pat<'a>(&self, line: usize, p: &'a str) -> Option<(Pat<'a>, &'a str)> {
        let mut matches = true;
        let mut p = p;
        loop {
            match p.chars().next() {
                Some('!') => matches = !matches,
                Some(c) if text::is_space(c) => {}
                _ => break,
            }
            p = &p[1..];
        }
        let Some(delim) = p.chars().next() else {
            self.warn(line, "no regexp: skipping this rule");
            return None;
        };
        let body = &p[delim.len_utf8()..];
        let mut end = None;
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '\\' {
                if chars.next().is_none() {
                    break;
                }
            } else if c == delim {
                end = Some(i);
                break;
            }
        }
        let Some(end) = end else {
            let verb = match self.kind {
                Kind::Regexp => "skipping",
                Kind::Pcre => "ignoring",
            };
            self.warn(
                line,
                &format!("no closing regexp delimiter \"{delim}\": {verb} this rule"),
            );
            return None;
        };
        let mut pat = Pat {
            text: &body[..end],
            matches,
            icase: true,
            newline: false,
            extended: true,
            pcre_options: pcre::CASELESS | pcre::DOTALL,
        };
        let mut rest = &body[end + delim.len_utf8()..];
        while let Some(c) = rest.chars().next() {
            if text::is_space(c) || (c == '!' && self.kind == Kind::Regexp) {
                break;
            }
            match (self.kind, c) {
                (Kind::Regexp, 'i') => pat.icase = !pat.icase,
                (Kind::Regexp, 'm') => pat.newline = !pat.newline,
                (Kind::Regexp, 'x') => pat.extended = !pat.extended,
                (Kind::Pcre, 'i') => pat.pcre_options ^= pcre::CASELESS,
                (Kind::Pcre, 'm') => pat.pcre_options ^= pcre::MULTILINE,
                (Kind::Pcre, 's') => pat.pcre_options ^= pcre::DOTALL,
                (Kind::Pcre, 'x') => pat.pcre_options ^= pcre::EXTENDED,
                (Kind::Pcre, 'A') => pat.pcre_options ^= pcre::ANCHORED,
                (Kind::Pcre, 'E') => pat.pcre_options ^= pcre::DOLLAR_ENDONLY,
                (Kind::Pcre, 'U') => pat.pcre_options ^= pcre::UNGREEDY,
                (Kind::Pcre, 'X') => {
                    self.warn(line, &format!("ignoring obsolete regexp option \"{c}\""))
                }
                _ => {
                    self.warn(
                        line,
                        &format!("unknown regexp option \"{c}\": skipping this rule"),
                    );
                    return None;
                }
            }
            rest = &rest[c.len_utf8()..];
        }
        Some((pat, rest))
    }

    fn compile(&self, line: usize, pat: &Pat<'_>) -> Option<Expr> {
        let engine = match self.kind {
            Kind::Regexp => match compile_posix(pat.text, pat.icase, pat.newline, pat.extended) {
                Ok(r) => Engine::Posix(r),
                Err(e) => {
                    self.warn(line, &e);
                    return None;
                }
            },
            Kind::Pcre => match pcre::Code::compile(pat.text, pat.pcre_options) {
                Ok(c) => Engine::Pcre(c),
                Err((offset, e)) => {
                    self.warn(line, &format!("error in regex at offset {offset}: {e}"));
                    return None;
                }
            },
        };
        Some(Expr {
            engine,
            matches: pat.matches,
        })
    }

    /// Whether `expr` decides for its rule: a match when the rule wants one,
    /// no match when it is negated. A matching error is reported and counts
    /// as not deciding, as in Postfix.
    fn test(&self, line: usize, expr: &Expr, key: &str, want: bool) -> (bool, Option<Groups>) {
        match expr.engine.exec(key.as_bytes(), want) {
            Ok(Some(g)) => (expr.matches, Some(g)),
            Ok(None) => (!expr.matches, None),
            Err(e) => {
                self.warn(line, &e);
                (false, None)
            }
        }
    }

    /// The result of the first rule that matches `key`.
    pub fn lookup(&self, key: &str) -> Option<String> {
        let mut i = 0;
        while i < self.rules.len() {
            let rule = &self.rules[i];
            i += 1;
            match &rule.op {
                Op::Match {
                    first,
                    second,
                    result,
                    max_sub,
                } => {
                    let (ok, groups) = self.test(rule.line, first, key, *max_sub > 0);
                    if !ok {
                        continue;
                    }
                    if let Some(s) = second {
                        if !self.test(rule.line, s, key, false).0 {
                            continue;
                        }
                    }
                    let groups = groups.unwrap_or_default();
                    let mut out = String::new();
                    for piece in result {
                        match piece {
                            Piece::Text(t) => out.push_str(t),
                            Piece::Group(n) => {
                                if let Some(Some((s, e))) = groups.get(*n) {
                                    out.push_str(&String::from_utf8_lossy(&key.as_bytes()[*s..*e]));
                                }
                            }
                        }
                    }
                    return Some(out);
                }
                Op::If { expr, endif } => {
                    if self.test(rule.line, expr, key, false).0 {
                        continue;
                    }
                    match endif {
                        Some(e) => i = e + 1,
                        None => return None,
                    }
                }
                Op::Endif => {}
            }
        }
        None
    }
}

/// Compiles a POSIX regular expression (extended, or basic when
/// `!extended`) with the `regex` crate; errors are worded as glibc's
/// regerror where the two agree on the problem.
fn compile_posix(
    pattern: &str,
    icase: bool,
    newline: bool,
    extended: bool,
) -> Result<regex::bytes::Regex, String> {
    let translated = translate(pattern, extended)?;
    if let Err(e) = regex_syntax::ast::parse::Parser::new().parse(&translated) {
        use regex_syntax::ast::ErrorKind as K;
        return Err(match e.kind() {
            K::GroupUnclosed => "Unmatched ( or \\(".to_owned(),
            K::GroupUnopened => "Unmatched ) or \\)".to_owned(),
            K::ClassUnclosed => "Unmatched [, [^, [:, [., or [=".to_owned(),
            K::RepetitionMissing => "Invalid preceding regular expression".to_owned(),
            K::RepetitionCountUnclosed => "Unmatched \\{".to_owned(),
            K::RepetitionCountInvalid | K::RepetitionCountDecimalEmpty => {
                "Invalid content of \\{\\}".to_owned()
            }
            K::ClassRangeInvalid => "Invalid range end".to_owned(),
            K::ClassRangeLiteral => "Invalid range end".to_owned(),
            K::EscapeUnexpectedEof => "Trailing backslash".to_owned(),
            other => other.to_string(),
        });
    }
    regex::bytes::RegexBuilder::new(&translated)
        .case_insensitive(icase)
        .multi_line(newline)
        .dot_matches_new_line(!newline)
        .build()
        .map_err(|e| match e {
            regex::Error::Syntax(s) => s
                .lines()
                .last()
                .unwrap_or_default()
                .trim_start_matches("error: ")
                .to_owned(),
            other => other.to_string(),
        })
}

/// Rewrites POSIX syntax as the `regex` crate's: bracket expressions with
/// literal backslashes, GNU escapes (`\<`, `\>`, `` \` ``, `\'`), a
/// repetition operator with nothing before it as a literal, and, for basic
/// syntax, `\(`, `\)`, `\{`, `\}`, `\|`, `\+`, `\?` as operators and their
/// bare forms as literals.
fn translate(p: &str, extended: bool) -> Result<String, String> {
    let chars: Vec<char> = p.chars().collect();
    let mut out = String::with_capacity(p.len() + 8);
    // True where an operand must come next: at the start, after a group's
    // opening or an alternation (where a repetition operator is literal).
    let mut at_start = true;
    let mut i = 0;
    let lit = |out: &mut String, c: char| {
        if c.is_ascii_punctuation() {
            out.push('\\');
        }
        out.push(c);
    };
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        let was_start = at_start;
        at_start = false;
        match c {
            '\\' => {
                let Some(&n) = chars.get(i) else {
                    return Err("Trailing backslash".to_owned());
                };
                i += 1;
                match n {
                    '(' | ')' | '{' | '}' | '|' | '+' | '?' if !extended => {
                        if matches!(n, '+' | '?') && was_start {
                            lit(&mut out, n);
                        } else {
                            out.push(n);
                        }
                        at_start = matches!(n, '(' | '|');
                    }
                    '1'..='9' => {
                        return Err("back-references are not supported by postfix-rs".to_owned())
                    }
                    'w' | 'W' | 's' | 'S' | 'b' | 'B' | '<' | '>' => {
                        out.push('\\');
                        out.push(n);
                    }
                    '`' => out.push_str("\\A"),
                    '\'' => out.push_str("\\z"),
                    n => lit(&mut out, n),
                }
            }
            '[' => {
                i = bracket(&chars, i, &mut out)?;
            }
            '(' | ')' | '{' | '}' | '|' | '+' | '?' if !extended => lit(&mut out, c),
            '*' | '+' | '?' if was_start => lit(&mut out, c),
            '^' if !extended && !was_start => lit(&mut out, c),
            '^' => {
                out.push('^');
                at_start = true;
            }
            '$' if !extended => {
                let rest = &chars[i..];
                let at_end = rest.is_empty()
                    || rest.starts_with(&['\\', ')'])
                    || rest.starts_with(&['\\', '|']);
                if at_end {
                    out.push('$');
                } else {
                    lit(&mut out, c);
                }
            }
            '(' | '|' => {
                out.push(c);
                at_start = true;
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Translates the bracket expression whose `[` is just before `chars[i]`;
/// returns the index after its `]`.
fn bracket(chars: &[char], mut i: usize, out: &mut String) -> Result<usize, String> {
    let unmatched = || "Unmatched [, [^, [:, [., or [=".to_owned();
    out.push('[');
    if chars.get(i) == Some(&'^') {
        out.push('^');
        i += 1;
    }
    let mut first = true;
    loop {
        let Some(&c) = chars.get(i) else {
            return Err(unmatched());
        };
        i += 1;
        match c {
            ']' if !first => break,
            '[' if matches!(chars.get(i), Some(':' | '=' | '.')) => {
                let kind = chars[i];
                let start = i + 1;
                let end = (start..chars.len().saturating_sub(1))
                    .find(|&j| chars[j] == kind && chars[j + 1] == ']')
                    .ok_or_else(unmatched)?;
                let name: String = chars[start..end].iter().collect();
                if kind == ':' {
                    out.push_str(&format!("[:{name}:]"));
                } else {
                    for c in name.chars() {
                        escape_in_class(out, c);
                    }
                }
                i = end + 2;
            }
            '-' if !first && chars.get(i).is_some_and(|&n| n != ']') => out.push('-'),
            c => escape_in_class(out, c),
        }
        first = false;
    }
    out.push(']');
    Ok(i)
}

fn escape_in_class(out: &mut String, c: char) {
    if matches!(c, '\\' | '[' | ']' | '^' | '&' | '~' | '-') {
        out.push('\\');
    }
    out.push(c);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regexp(text: &str) -> Table {
        Table::parse(Kind::Regexp, "/etc/postfix/t", text)
    }

    fn pcre(text: &str) -> Table {
        Table::parse(Kind::Pcre, "/etc/postfix/t", text)
    }

    #[test]
    fn first_matching_rule_answers_with_substitutions() {
        let t = regexp(
            "/^(.*)@example\\.com$/ local:$1\n/cap(.)/ got$1$$-${1}x\n/^Big/ Big\n/^z(a)?(b)/ <$1|$2>\n",
        );
        assert_eq!(t.lookup("joe@example.com").as_deref(), Some("local:joe"));
        assert_eq!(t.lookup("capZ").as_deref(), Some("gotZ$-Zx"));
        // Case-insensitive by default, and the key is matched as given.
        assert_eq!(t.lookup("BIG").as_deref(), Some("Big"));
        assert_eq!(t.lookup("zb").as_deref(), Some("<|b>"));
        assert_eq!(t.lookup("nothing"), None);
    }

    #[test]
    fn flags_toggle_case_newline_and_basic_syntax() {
        let t = regexp("/^Big$/i exact\n/^a.b$/ dot\n/^x$/m line\n/^q\\(w\\)e+$/x bre:$1\n");
        assert_eq!(t.lookup("big"), None);
        assert_eq!(t.lookup("Big").as_deref(), Some("exact"));
        assert_eq!(t.lookup("a\nb").as_deref(), Some("dot"));
        assert_eq!(t.lookup("y\nx\nz").as_deref(), Some("line"));
        assert_eq!(t.lookup("qwe+").as_deref(), Some("bre:w"));
        assert_eq!(t.lookup("qwee"), None);
    }

    #[test]
    fn negation_second_pattern_and_if_blocks() {
        let t = regexp(
            "!/@/ local\n/^a/!/^ab/ a-not-ab\nif /^x/\nif !/z/\n/y/ xy-no-z\nendif\n/./ x-any\nendif\n/./ other\n",
        );
        assert_eq!(t.lookup("joe").as_deref(), Some("local"));
        assert_eq!(t.lookup("ac@").as_deref(), Some("a-not-ab"));
        assert_eq!(t.lookup("ab@").as_deref(), Some("other"));
        assert_eq!(t.lookup("xy@").as_deref(), Some("xy-no-z"));
        assert_eq!(t.lookup("xyz@").as_deref(), Some("x-any"));
        assert_eq!(t.lookup("q@").as_deref(), Some("other"));
    }

    #[test]
    fn an_if_without_endif_ends_the_table_when_it_fails() {
        let t = regexp("if /^x/\n/./ in\n");
        assert_eq!(t.lookup("xa").as_deref(), Some("in"));
        assert_eq!(t.lookup("a"), None);
    }

    #[test]
    fn bad_rules_are_skipped_and_the_rest_kept() {
        let t = regexp(
            "/a(b/ x\n/foo/q bar\n!/bar/ $1\nendif\n/^$/\n/z/ ${1}\n/q/ $x\n/r\n/(b)ad/ \\1\n/ok/ fine\n",
        );
        assert_eq!(t.rules.len(), 3);
        assert_eq!(t.lookup("ok").as_deref(), Some("fine"));
        assert_eq!(t.lookup("").as_deref(), Some(""));
        assert_eq!(t.lookup("foo"), None);
        let t = regexp("/a\\(b/ back\\1\n/(x)\\1/ y\n");
        assert_eq!(t.rules.len(), 1);
    }

    #[test]
    fn posix_brackets_escapes_and_literal_operators() {
        let t = regexp("/^[\\.]$/ slash-or-dot\n/^[]a]$/ bracket\n/^*x$/ star\n/^[[:digit:]]+$/ digits\n/^a{2}$/ aa\n/\\<w\\>/ word\n");
        assert_eq!(t.lookup("\\").as_deref(), Some("slash-or-dot"));
        assert_eq!(t.lookup(".").as_deref(), Some("slash-or-dot"));
        assert_eq!(t.lookup("]").as_deref(), Some("bracket"));
        assert_eq!(t.lookup("*x").as_deref(), Some("star"));
        assert_eq!(t.lookup("123").as_deref(), Some("digits"));
        assert_eq!(t.lookup("aa").as_deref(), Some("aa"));
        assert_eq!(t.lookup("a w b").as_deref(), Some("word"));
    }

    #[test]
    fn glibc_words_for_common_compile_errors() {
        assert_eq!(
            compile_posix("a(b", true, false, true).unwrap_err(),
            "Unmatched ( or \\("
        );
        assert_eq!(
            compile_posix("a[b", true, false, true).unwrap_err(),
            "Unmatched [, [^, [:, [., or [="
        );
        assert_eq!(
            compile_posix("a\\", true, false, true).unwrap_err(),
            "Trailing backslash"
        );
    }

    #[test]
    fn inline_rules_and_other_delimiters() {
        let (text, _) = crate::text::table_text("regexp", "{ {/^a/ A}, {|^b| B} }").unwrap();
        let t = regexp(&text);
        assert_eq!(t.lookup("ax").as_deref(), Some("A"));
        assert_eq!(t.lookup("bx").as_deref(), Some("B"));
    }

    #[test]
    fn pcre_flags_and_substitutions() {
        let t = pcre(
            "/^(x)(y)?$/ <$2>\n/^a.b$/ dotall\n/^Q$/i exact\n/b/A anchored\n/e$/E endonly\n/^(f+)/U ungreedy:$1\n/^g/X g\n",
        );
        assert_eq!(t.lookup("x").as_deref(), Some("<>"));
        assert_eq!(t.lookup("A\nB").as_deref(), Some("dotall"));
        assert_eq!(t.lookup("q"), None);
        assert_eq!(t.lookup("Q").as_deref(), Some("exact"));
        assert_eq!(t.lookup("ab"), None);
        assert_eq!(t.lookup("bc").as_deref(), Some("anchored"));
        assert_eq!(t.lookup("e\n"), None);
        assert_eq!(t.lookup("e").as_deref(), Some("endonly"));
        assert_eq!(t.lookup("fff").as_deref(), Some("ungreedy:f"));
        assert_eq!(t.lookup("g").as_deref(), Some("g"));
    }

    #[test]
    fn pcre_refuses_a_second_pattern_and_bad_rules() {
        let t = pcre("/c/!/d/ z\n/a(b/ x\n/(a)/ $2\n/(?<n>k)/ named\nif /^i/\n/./ in\nendif\n");
        assert_eq!(t.lookup("c"), None);
        assert_eq!(t.lookup("k").as_deref(), Some("named"));
        assert_eq!(t.lookup("ix").as_deref(), Some("in"));
        assert_eq!(t.lookup("a"), None);
    }
}
