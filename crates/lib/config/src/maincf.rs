//! Reading and editing `main.cf` with Postfix's syntax.
//!
//! A logical line starts with non-white-space text; a line that starts with
//! white space continues it. Empty lines and lines whose first non-blank
//! character is `#` are comments (so `#` mid-line is part of a value). Each
//! logical line is `name = value`; there is no quoting. Editing (`postconf -e`,
//! `-X`, `-#`) rewrites only the logical lines it touches and keeps everything
//! else byte for byte.

use crate::Error;
use std::path::Path;

/// One `name = value` definition and the line where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub value: String,
    pub line: usize,
}

/// A logical line: physical lines `first..=last` (0-based) joined.
struct Logical {
    first: usize,
    last: usize,
    text: String,
}

fn is_comment_or_blank(line: &str) -> bool {
    let t = line.trim_start();
    t.is_empty() || t.starts_with('#')
}

/// Groups physical lines into logical ones. A continuation line with nothing to
/// continue is an error.
fn logical_lines(path: &Path, text: &str) -> Result<Vec<Logical>, Error> {
    let mut out: Vec<Logical> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if is_comment_or_blank(line) {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            match out.last_mut() {
                // Postfix joins the raw continuation, leading white space included.
                Some(l) => {
                    l.text.push_str(line);
                    l.last = i;
                }
                None => {
                    return Err(Error::syntax(
                        path,
                        i + 1,
                        "logical line must not start with white space",
                    ))
                }
            }
        } else {
            out.push(Logical {
                first: i,
                last: i,
                text: line.to_owned(),
            });
        }
    }
    Ok(out)
}

/// Splits `name = value`, as Postfix's split_nameval does.
pub fn split_nameval(text: &str) -> Result<(String, String), String> {
    let t = text.trim_start();
    let name_len = t
        .find(|c: char| c == '=' || c.is_whitespace())
        .unwrap_or(t.len());
    let (name, rest) = t.split_at(name_len);
    let rest = rest.trim_start();
    if name.is_empty() {
        return Err(format!("missing attribute name: \"{}\"", text.trim()));
    }
    match rest.strip_prefix('=') {
        Some(value) => Ok((name.to_owned(), value.trim().to_owned())),
        None => Err(format!(
            "missing '=' after attribute name: \"{}\"",
            text.trim()
        )),
    }
}

/// Parses main.cf text; `path` is only used in error messages.
pub fn parse(path: &Path, text: &str) -> Result<Vec<Entry>, Error> {
    logical_lines(path, text)?
        .into_iter()
        .map(|l| {
            let (name, value) =
                split_nameval(&l.text).map_err(|m| Error::syntax(path, l.first + 1, &m))?;
            Ok(Entry {
                name,
                value,
                line: l.first + 1,
            })
        })
        .collect()
}

/// What to do to one parameter when editing main.cf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// `postconf -e name=value`: replace the definition, or append one.
    Set(String, String),
    /// `postconf -X name`: remove the definition.
    Remove(String),
    /// `postconf -# name`: comment the definition out.
    CommentOut(String),
}

impl Edit {
    fn name(&self) -> &str {
        match self {
            Self::Set(n, _) | Self::Remove(n) | Self::CommentOut(n) => n,
        }
    }
}

/// Applies edits to main.cf text and returns the new text. Comments, blank
/// lines and untouched definitions are kept exactly; a set parameter takes the
/// place of its first definition and later duplicates are dropped.
pub fn edit(path: &Path, text: &str, edits: &[Edit]) -> Result<String, Error> {
    let physical: Vec<&str> = text.lines().collect();
    let logical = logical_lines(path, text)?;
    // What replaces each physical line: None keeps it.
    let mut replace: Vec<Option<Vec<String>>> = vec![None; physical.len()];
    let mut done = vec![false; edits.len()];
    for l in &logical {
        let Ok((name, _)) = split_nameval(&l.text) else {
            continue;
        };
        let Some(k) = edits.iter().rposition(|e| e.name() == name) else {
            continue;
        };
        let new_lines = match (&edits[k], done[k]) {
            (Edit::Set(n, v), false) => vec![format_entry(n, v)],
            (Edit::CommentOut(_), false) => physical[l.first..=l.last]
                .iter()
                .map(|p| format!("#{p}"))
                .collect(),
            _ => vec![],
        };
        done[k] = true;
        replace[l.first] = Some(new_lines);
        for slot in &mut replace[l.first + 1..=l.last] {
            *slot = Some(vec![]);
        }
    }
    let mut out = String::with_capacity(text.len() + 64);
    for (line, slot) in physical.iter().zip(&replace) {
        match slot {
            None => {
                out.push_str(line);
                out.push('\n');
            }
            Some(lines) => {
                for l in lines {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
    }
    for (k, e) in edits.iter().enumerate() {
        if let (Edit::Set(n, v), false) = (e, done[k]) {
            // A later edit of the same name wins; only append the last one.
            if edits[k + 1..].iter().all(|later| later.name() != n) {
                out.push_str(&format_entry(n, v));
                out.push('\n');
            }
        }
    }
    Ok(out)
}

fn format_entry(name: &str, value: &str) -> String {
    if value.is_empty() {
        format!("{name} =")
    } else {
        format!("{name} = {value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Vec<Entry>, Error> {
        parse(Path::new("/etc/postfix/main.cf"), text)
    }

    fn e(name: &str, value: &str, line: usize) -> Entry {
        Entry {
            name: name.into(),
            value: value.into(),
            line,
        }
    }

    #[test]
    fn name_value_pairs_with_any_spacing() {
        let got = p("myhostname = mail.ywnds.com\nmydomain=ywnds.com\n  \nmyorigin   =   $mydomain  \nempty =\n").unwrap();
        assert_eq!(
            got,
            [
                e("myhostname", "mail.ywnds.com", 1),
                e("mydomain", "ywnds.com", 2),
                e("myorigin", "$mydomain", 4),
                e("empty", "", 5),
            ]
        );
    }

    #[test]
    fn continuation_lines_join_with_their_leading_space() {
        let got =
            p("mydestination = $myhostname,\n    localhost.$mydomain,\n\tlocalhost\nnext = 1\n")
                .unwrap();
        assert_eq!(
            got[0],
            e(
                "mydestination",
                "$myhostname,    localhost.$mydomain,\tlocalhost",
                1
            )
        );
        assert_eq!(got[1], e("next", "1", 4));
    }

    #[test]
    fn comments_only_at_line_start_and_indented_comments_do_not_continue() {
        let got = p(
            "# a comment\nrelayhost = [mx]:25 # not a comment\n   # indented comment\nfoo = bar\n",
        )
        .unwrap();
        assert_eq!(got[0], e("relayhost", "[mx]:25 # not a comment", 2));
        assert_eq!(got[1], e("foo", "bar", 4));
    }

    #[test]
    fn quotes_are_kept_literally() {
        let got = p("smtpd_banner = \"$myhostname\" ESMTP\n").unwrap();
        assert_eq!(got[0].value, "\"$myhostname\" ESMTP");
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        let err = p("a = 1\n\njunk line\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "/etc/postfix/main.cf, line 3: missing '=' after attribute name: \"junk line\""
        );
        let err = p("= value\n").unwrap_err();
        assert!(err
            .to_string()
            .starts_with("/etc/postfix/main.cf, line 1: missing attribute name"));
        let err = p("  leading = space\n").unwrap_err();
        assert!(err
            .to_string()
            .contains("line 1: logical line must not start with white space"));
    }

    #[test]
    fn edit_replaces_in_place_keeping_comments_and_order() {
        let text = "# header\nmyhostname = old\n  continued\n\n# mid\nmydomain = x.com\nmyhostname = dup\n";
        let out = edit(
            Path::new("main.cf"),
            text,
            &[
                Edit::Set("myhostname".into(), "mail.ywnds.com".into()),
                Edit::Set("relayhost".into(), "".into()),
            ],
        )
        .unwrap();
        assert_eq!(
            out,
            "# header\nmyhostname = mail.ywnds.com\n\n# mid\nmydomain = x.com\nrelayhost =\n"
        );
    }

    #[test]
    fn edit_removes_and_comments_out() {
        let text = "a = 1\nb = 2\n  more\nc = 3";
        let out = edit(
            Path::new("main.cf"),
            text,
            &[Edit::Remove("a".into()), Edit::CommentOut("b".into())],
        )
        .unwrap();
        assert_eq!(out, "#b = 2\n#  more\nc = 3\n");
    }
}
