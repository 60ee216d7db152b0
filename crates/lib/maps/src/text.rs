//! The small text tools Postfix's table types share: the logical lines of a
//! table file (comment lines skipped, indented lines continue the previous
//! one), a table given inline as `{ {rule}, {rule} }` instead of a file,
//! `{}` grouping in table names, `name = value` pairs, and the `$1`,
//! `${1}`, `$$` notation of regexp and pcre results.
//!
//! Each behaves as its Postfix counterpart does (readllines, dict_stream,
//! balpar/extpar, mystrtokq, split_qnameval, mac_parse), so that a table
//! Postfix accepts reads the same here, with the same warnings.

/// C's `isspace` in the C locale.
pub(crate) fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// `s` without trailing white space.
pub(crate) fn trim_end(s: &str) -> &str {
    s.trim_end_matches(is_space)
}

/// `s` without leading white space.
pub(crate) fn trim_start(s: &str) -> &str {
    s.trim_start_matches(is_space)
}

/// The logical lines of table text, each with the number of its first
/// physical line: empty lines and lines whose first non-blank character
/// is `#` are skipped, and a line that starts with white space is appended
/// (as it is, white space included) to the line before it. Text that
/// starts a logical line with white space is reported as Postfix does
/// (`NAME: logical line must not start with whitespace: "..."`) and
/// skipped.
pub(crate) fn logical_lines(name: &str, text: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    // The logical line being built: its first line number and text.
    let mut cur: Option<(usize, String)> = None;
    let flush = |cur: &mut Option<(usize, String)>, out: &mut Vec<(usize, String)>| {
        if let Some((n, t)) = cur.take() {
            if t.starts_with(is_space) {
                let shown: String = t.chars().take(30).collect();
                let more = if t.chars().count() > 30 { "..." } else { "" };
                tracing::warn!(
                    "{name}: logical line must not start with whitespace: \"{shown}{more}\""
                );
            } else {
                out.push((n, t));
            }
        }
    };
    let mut lines: Vec<&str> = text.split('\n').collect();
    if lines.last() == Some(&"") {
        lines.pop();
    }
    for (i, line) in lines.into_iter().enumerate() {
        let t = trim_start(line);
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        match &mut cur {
            Some((_, text)) if line.starts_with(is_space) => text.push_str(line),
            _ => {
                flush(&mut cur, &mut out);
                cur = Some((i + 1, line.to_owned()));
            }
        }
    }
    flush(&mut cur, &mut out);
    out
}

/// The length of the `{...}` group that `s` starts with (braces
/// included), or `None` when `s` does not start with `{` or the braces do
/// not balance (Postfix's balpar).
pub(crate) fn balanced(s: &str) -> Option<usize> {
    if !s.starts_with('{') {
        return None;
    }
    let mut level = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '{' => level += 1,
            '}' => {
                level -= 1;
                if level == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// The text inside the `{...}` that `s` consists of, trimmed of white space
/// when `strip` (Postfix's extpar), or the reason it is not such text.
/// As extpar, the error messages quote `s` as given.
pub(crate) fn unbrace(s: &str, strip: bool) -> Result<&str, String> {
    let inner = if !s.starts_with('{') {
        return Err(format!("no '{{' at start of text in \"{s}\""));
    } else {
        match balanced(s) {
            None => return Err(format!("missing '}}' in \"{s}\"")),
            Some(len) if len != s.len() => {
                return Err(format!("syntax error after '}}' in \"{s}\""));
            }
            Some(len) => &s[1..len - 1],
        }
    };
    Ok(if strip {
        trim_start(trim_end(inner))
    } else {
        inner
    })
}

/// Splits `s` at commas and white space outside `{}` (Postfix's mystrtokq
/// with CHARS_COMMA_SP and CHARS_BRACE); empty tokens are dropped.
pub(crate) fn split_braced(s: &str) -> Vec<&str> {
    let sep = |c: char| c == ',' || matches!(c, ' ' | '\t' | '\r' | '\n');
    let mut out = Vec::new();
    let mut level = 0usize;
    let mut start: Option<usize> = None;
    for (i, c) in s.char_indices() {
        if start.is_none() {
            if sep(c) {
                continue;
            }
            start = Some(i);
        }
        match c {
            '{' => level += 1,
            '}' if level > 0 => level -= 1,
            c if level == 0 && sep(c) => {
                out.extend(start.take().map(|b| &s[b..i]));
            }
            _ => {}
        }
    }
    out.extend(start.map(|b| &s[b..]));
    out
}

/// Splits `name = value` (Postfix's split_qnameval): the name may hold
/// `"quoted"` white space and `\` escapes (both kept as written), the
/// value is trimmed.
pub(crate) fn split_name_value(s: &str) -> Result<(&str, &str), &'static str> {
    let s = trim_start(s);
    if s.is_empty() {
        return Err("no key found; expected format: key = value");
    }
    let mut quoted = false;
    let mut end = s.len();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                // The escaped character is part of the name, whatever it is.
                chars.next();
            }
            c if (is_space(c) || c == '=') && !quoted => {
                end = i;
                break;
            }
            '"' => quoted = !quoted,
            _ => {}
        }
    }
    if quoted {
        return Err("unbalanced '\"'");
    }
    let rest = trim_start(&s[end..]);
    let Some(value) = rest.strip_prefix('=') else {
        return Err("missing '=' after attribute name");
    };
    Ok((&s[..end], trim_end(trim_start(value))))
}

/// A table's text: the file `name`, or, when `name` is `{...}`, the rules
/// given inline (`{ {rule1}, {rule2} }`, one rule per line), as Postfix
/// 3.7's dict_stream_open. The error is the reason Postfix gives
/// (`open /path: No such file or directory`).
pub(crate) fn table_text(kind: &str, name: &str) -> Result<(String, crate::Owner), String> {
    if name.starts_with('{') {
        let inner = unbrace(name, false).map_err(|e| format!("{kind} map: {e}"))?;
        let mut text = String::new();
        for rule in split_braced(inner) {
            let rule = unbrace(rule, true).map_err(|e| format!("{kind} map: {e}"))?;
            text.push_str(rule);
            text.push('\n');
        }
        return Ok((text, crate::Owner::Trusted));
    }
    match crate::owner::read(std::path::Path::new(name)) {
        Ok((bytes, owner)) => Ok((String::from_utf8_lossy(&bytes).into_owned(), owner)),
        Err(e) => Err(format!("open {name}: {}", pfx_sys::strerror(&e))),
    }
}

/// One piece of a regexp or pcre result template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    Text(String),
    /// `$n`: the text the n-th group matched.
    Group(usize),
}

/// Why a result template was refused (Postfix logs some of these itself,
/// as plain warnings, before the per-rule one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TemplateError {
    /// mac_parse's own complaint (`truncated macro reference: "..."`).
    Syntax(String),
    /// The index is not a number (`non-numeric replacement index "x"`).
    NonNumeric(String),
    /// `$0`.
    Zero(String),
}

/// Parses a result template (`local:$1`, `${2}x`, `$$`): literal text and
/// `$n` group references, as Postfix's mac_parse reads them (`$name`,
/// `${name}` and `$(name)`; `$$` is a literal `$`). Every problem is
/// returned, as Postfix reports every one.
pub(crate) fn parse_template(value: &str) -> Result<Vec<Piece>, Vec<TemplateError>> {
    let mut pieces = Vec::new();
    let mut errors = Vec::new();
    let mut text = String::new();
    let b = value.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            let c = value[i..].chars().next().unwrap_or('\0');
            text.push(c);
            i += c.len_utf8();
            continue;
        }
        if b.get(i + 1) == Some(&b'$') {
            text.push('$');
            i += 2;
            continue;
        }
        i += 1;
        let name = match b.get(i) {
            Some(&open @ (b'{' | b'(')) => {
                let close = if open == b'{' { b'}' } else { b')' };
                let mut level = 1;
                let mut j = i + 1;
                while j < b.len() {
                    if b[j] == open {
                        level += 1;
                    } else if b[j] == close {
                        level -= 1;
                        if level == 0 {
                            break;
                        }
                    }
                    j += 1;
                }
                if j >= b.len() {
                    errors.push(TemplateError::Syntax(format!(
                        "truncated macro reference: \"{value}\""
                    )));
                    break;
                }
                let name = &value[i + 1..j];
                i = j + 1;
                name
            }
            _ => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                &value[start..i]
            }
        };
        if name.is_empty() {
            errors.push(TemplateError::Syntax(format!(
                "empty macro name: \"{value}\""
            )));
            break;
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        if !name.bytes().all(|c| c.is_ascii_digit()) {
            errors.push(TemplateError::NonNumeric(name.to_owned()));
            continue;
        }
        match name.parse::<usize>() {
            Ok(0) => errors.push(TemplateError::Zero(name.to_owned())),
            Ok(n) => pieces.push(Piece::Group(n)),
            // More digits than any group count: out of range later.
            Err(_) => pieces.push(Piece::Group(usize::MAX)),
        }
    }
    if !text.is_empty() && errors.is_empty() {
        pieces.push(Piece::Text(text));
    }
    if errors.is_empty() {
        Ok(pieces)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logical_lines_join_indented_lines_as_they_are() {
        let l = logical_lines("t", "# c\n/a/ b\n  c\n\n#x\n\td\n/e/ f\n   \n/g/ h");
        assert_eq!(
            l,
            vec![
                (2, "/a/ b  c\td".to_owned()),
                (7, "/e/ f".to_owned()),
                (9, "/g/ h".to_owned())
            ]
        );
    }

    #[test]
    fn a_leading_indented_line_is_skipped() {
        let l = logical_lines("t", "  stray\n more\n/a/ b\n");
        assert_eq!(l, vec![(3, "/a/ b".to_owned())]);
    }

    #[test]
    fn braces_balance_and_unbrace_reports_like_extpar() {
        assert_eq!(balanced("{a{b}c}d"), Some(7));
        assert_eq!(balanced("{a"), None);
        assert_eq!(balanced("a{}"), None);
        assert_eq!(unbrace("{ a b }", true), Ok("a b"));
        assert_eq!(unbrace("{ a b }", false), Ok(" a b "));
        assert_eq!(unbrace("{a", true), Err("missing '}' in \"{a\"".into()));
        assert_eq!(
            unbrace("{a}b", true),
            Err("syntax error after '}' in \"{a}b\"".into())
        );
        assert_eq!(
            unbrace("a", true),
            Err("no '{' at start of text in \"a\"".into())
        );
    }

    #[test]
    fn split_braced_keeps_groups_whole() {
        assert_eq!(
            split_braced(" a, {b c},d{e, f} ,,g "),
            vec!["a", "{b c}", "d{e, f}", "g"]
        );
        assert!(split_braced(" , ").is_empty());
    }

    #[test]
    fn name_value_pairs_as_split_qnameval() {
        assert_eq!(split_name_value("xx = yy"), Ok(("xx", "yy")));
        assert_eq!(split_name_value("xx="), Ok(("xx", "")));
        assert_eq!(split_name_value("\"xx \" = yy "), Ok(("\"xx \"", "yy")));
        assert_eq!(
            split_name_value("xx"),
            Err("missing '=' after attribute name")
        );
        assert_eq!(split_name_value("\"xx "), Err("unbalanced '\"'"));
        assert_eq!(
            split_name_value("  "),
            Err("no key found; expected format: key = value")
        );
    }

    #[test]
    fn inline_table_text_is_one_rule_per_line() {
        assert_eq!(
            table_text("regexp", "{ {/a/ b}, { /c/ d } }").unwrap().0,
            "/a/ b\n/c/ d\n"
        );
        assert_eq!(
            table_text("regexp", "{ /a/ b }").unwrap_err(),
            "regexp map: no '{' at start of text in \"/a/\""
        );
        assert_eq!(
            table_text("cidr", "/nonexistent/table").unwrap_err(),
            "open /nonexistent/table: No such file or directory"
        );
    }

    #[test]
    fn templates_parse_groups_and_dollars() {
        assert_eq!(
            parse_template("got$1$$-${2}x$(3)"),
            Ok(vec![
                Piece::Text("got".into()),
                Piece::Group(1),
                Piece::Text("$-".into()),
                Piece::Group(2),
                Piece::Text("x".into()),
                Piece::Group(3),
            ])
        );
        assert_eq!(parse_template("a$$b"), Ok(vec![Piece::Text("a$b".into())]));
        assert_eq!(parse_template(""), Ok(vec![]));
        assert_eq!(
            parse_template("$x"),
            Err(vec![TemplateError::NonNumeric("x".into())])
        );
        assert_eq!(
            parse_template("$0"),
            Err(vec![TemplateError::Zero("0".into())])
        );
        assert_eq!(
            parse_template("a${1"),
            Err(vec![TemplateError::Syntax(
                "truncated macro reference: \"a${1\"".into()
            )])
        );
        assert_eq!(
            parse_template("a$"),
            Err(vec![TemplateError::Syntax(
                "empty macro name: \"a$\"".into()
            )])
        );
    }
}
