//! Editing master.cf as `postconf -M`, `-F` and `-P` with `-e`, `-X` or
//! `-#` do: an entry is matched by `service/type`; a whole entry is
//! replaced (or added at the end), removed, or commented out; a field or a
//! `-o` parameter is changed in it. An entry that changes is written anew
//! in `postconf -Mf`'s layout (one `-o` per line), as Postfix writes it;
//! every other line, comments included, stays as it was.

use std::path::Path;

use crate::mastercf::{format_entry, parse_entry, Service};
use crate::Error;

/// The field names of `postconf -F`, in column order.
pub const FIELDS: [&str; 8] = [
    "service",
    "type",
    "private",
    "unprivileged",
    "chroot",
    "wakeup",
    "process_limit",
    "command",
];

/// What is edited in the matched entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// The whole entry (`-M`): with `-e`, the new entry's text.
    Entry,
    /// One column (`-F`), by its index in [`FIELDS`].
    Field(usize),
    /// One `-o name=value` (`-P`), by name.
    Param(String),
}

/// How the matched entries change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `-e`: set to the request's value.
    Set,
    /// `-X`: remove.
    Remove,
    /// `-#`: comment out (whole entries only).
    CommentOut,
}

/// One edit request: `service/type[/field or parameter][=value]`.
#[derive(Debug, Clone)]
pub struct Request {
    pub raw: String,
    pub service: String,
    pub kind: String,
    pub part: Part,
    pub value: Option<String>,
}

/// Parses a command-line argument of `postconf -M`/`-F`/`-P` (`part` says
/// which): `service/type` for whole entries, `service/type/name` for a
/// field or parameter, with `=value` when `mode` is [`Mode::Set`].
pub fn request(arg: &str, entry: bool, field: bool, mode: Mode) -> Result<Request, String> {
    let opts = "-Me, -Fe, -Pe, -X, or -#";
    if arg.contains('\n') {
        return Err(format!("{opts} accept no multi-line input"));
    }
    let text = arg.trim_start();
    if text.starts_with('#') {
        return Err(format!("{opts} accept no comment input"));
    }
    let (pattern, value) = match mode {
        Mode::Set => {
            let (n, v) = crate::maincf::split_nameval(text).map_err(|e| e.to_string())?;
            (n, Some(v))
        }
        Mode::Remove | Mode::CommentOut => {
            if text.contains('=') {
                return Err("-X or -# requires names without value".into());
            }
            (text.trim().to_owned(), None)
        }
    };
    let parts: Vec<&str> = pattern.split('/').collect();
    let (part, want) = if entry {
        (Part::Entry, 2)
    } else if field {
        let f = parts.get(2).copied().unwrap_or_default();
        if f == "*" {
            return Err("-Fe does not accept wild-card field name".into());
        }
        let i = FIELDS
            .iter()
            .position(|n| *n == f)
            .ok_or_else(|| format!("invalid service attribute name: \"{f}\""))?;
        if mode == Mode::Set
            && i < 7
            && value
                .as_deref()
                .is_some_and(|v| v.contains(char::is_whitespace))
        {
            return Err("-Fe does not accept whitespace in non-command field".into());
        }
        (Part::Field(i), 3)
    } else {
        if parts.get(2) == Some(&"*") {
            return Err("-Pe does not accept wild-card parameter name".into());
        }
        if mode == Mode::Set
            && value
                .as_deref()
                .is_some_and(|v| v.contains(char::is_whitespace))
        {
            return Err("-Pe does not accept whitespace in parameter value".into());
        }
        (
            Part::Param(parts.get(2).copied().unwrap_or_default().to_owned()),
            3,
        )
    };
    if parts.len() != want || parts.iter().any(|p| p.is_empty()) {
        return Err(match part {
            Part::Entry => "-Me, -MX or -M# requires service_name/type".into(),
            Part::Field(_) => "-Fe or -FX requires service_name/type/field_name".into(),
            Part::Param(_) => "-Pe or -PX requires service_name/type/parameter".into(),
        });
    }
    Ok(Request {
        raw: arg.to_owned(),
        service: parts[0].to_owned(),
        kind: parts[1].to_owned(),
        part,
        value,
    })
}

/// The new master.cf text, and the requests that matched no entry (Postfix
/// warns about those of `-F` and `-P`; a new whole entry is added at the
/// end). An error is a message as postconf prints it: a request's names
/// the request, the file's names file and line.
pub fn edit(
    path: &Path,
    text: &str,
    mode: Mode,
    reqs: &[Request],
) -> Result<(String, Vec<String>), String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let is_comment = |l: &str| {
        let t = l.trim_start();
        t.is_empty() || t.starts_with('#')
    };
    let is_continuation = |l: &str| l.starts_with([' ', '\t']) && !is_comment(l);
    let mut matched = vec![0usize; reqs.len()];
    // The new entries of `-Me` requests, parsed once.
    let new_entries: Vec<Option<Service>> = reqs
        .iter()
        .map(|r| match (&r.part, mode, &r.value) {
            (Part::Entry, Mode::Set, Some(v)) => parse_entry(path, 0, v)
                .map(Some)
                .map_err(|e| format!("{}: \"{}\"", bare(&e), r.raw)),
            _ => Ok(None),
        })
        .collect::<Result<_, _>>()?;
    let mut out = String::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if is_comment(line) || is_continuation(line) {
            // Comments, blank lines, and continuations of no entry.
            out.push_str(line);
            i += 1;
            continue;
        }
        // The entry runs to the next line that starts another (comment
        // lines among and after its continuation lines included, as
        // Postfix reads ahead past them).
        let mut end = i + 1;
        while end < lines.len() && (is_comment(lines[end]) || is_continuation(lines[end])) {
            end += 1;
        }
        let lineno = i + 1;
        let mut words = line.split_whitespace();
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            return Err(format!(
                "file {}: line {lineno}: specify service name and type on the same line",
                path.display()
            ));
        };
        let mut hit = false;
        let mut replacement: Option<Service> = None;
        let mut current: Option<Vec<String>> = None;
        for (k, r) in reqs.iter().enumerate() {
            let by_pattern = r.service == name && r.kind == kind;
            let by_new = new_entries[k]
                .as_ref()
                .is_some_and(|s| s.name == name && s.kind.as_str() == kind);
            if !by_pattern && !by_new {
                continue;
            }
            hit = true;
            matched[k] += 1;
            match (&r.part, mode) {
                (Part::Entry, Mode::Set) => {
                    if matched[k] == 1 {
                        replacement = new_entries[k].clone();
                    }
                }
                (Part::Entry, _) | (_, Mode::CommentOut) => {}
                (Part::Field(f), _) => {
                    let w = current.get_or_insert_with(|| {
                        words_of(lines[i..end].iter().filter(|l| !is_comment(l)))
                    });
                    set_field(w, *f, r.value.as_deref().unwrap_or_default());
                }
                (Part::Param(p), _) => {
                    let w = current.get_or_insert_with(|| {
                        words_of(lines[i..end].iter().filter(|l| !is_comment(l)))
                    });
                    set_param(w, p, r.value.as_deref());
                }
            }
        }
        let span = &lines[i..end];
        let comments = span[1..].iter().filter(|l| is_comment(l));
        if !hit {
            span.iter().for_each(|l| out.push_str(l));
        } else if let Some(words) = current {
            // Rewritten whole: the comments it read past come first.
            let s = parse_entry(path, lineno, &join(&words)).map_err(|e| e.to_string())?;
            comments.for_each(|l| out.push_str(l));
            out.push_str(&format_entry(&s, true));
            out.push('\n');
        } else {
            // Replaced, removed or commented out line by line; comments stay.
            match (replacement, mode) {
                (Some(s), _) => {
                    out.push_str(&format_entry(&s, true));
                    out.push('\n');
                }
                (None, Mode::CommentOut) => {
                    out.push('#');
                    out.push_str(line);
                }
                (None, _) => {}
            }
            for l in &span[1..] {
                if is_comment(l) {
                    out.push_str(l);
                } else if mode == Mode::CommentOut {
                    out.push('#');
                    out.push_str(l);
                }
            }
        }
        i = end;
    }
    let mut unmatched = Vec::new();
    for (k, r) in reqs.iter().enumerate() {
        if matched[k] > 0 {
            continue;
        }
        match (&new_entries[k], &r.part) {
            (Some(s), _) => {
                if !out.is_empty() && !out.ends_with('\n') {
                    out.push('\n');
                }
                out.push_str(&format_entry(s, true));
                out.push('\n');
            }
            (None, Part::Entry) => {}
            (None, _) => unmatched.push(r.raw.clone()),
        }
    }
    Ok((out, unmatched))
}

/// An error's message without its file and line (a request's own text).
fn bare(e: &Error) -> String {
    match e {
        Error::Syntax { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// The words of an entry's lines: columns, command, arguments.
fn words_of<'a>(lines: impl Iterator<Item = &'a &'a str>) -> Vec<String> {
    let text: Vec<&str> = lines.map(|l| l.trim()).collect();
    crate::mastercf::split_args(&text.join(" ")).unwrap_or_default()
}

/// Words joined back into an entry's text, as master.cf writes each.
fn join(words: &[String]) -> String {
    words
        .iter()
        .map(|w| crate::mastercf::shown(w))
        .collect::<Vec<_>>()
        .join(" ")
}

fn set_field(words: &mut Vec<String>, field: usize, value: &str) {
    if field == 7 {
        // The command and its arguments, as one field.
        words.truncate(7);
        words.extend(crate::mastercf::split_args(value).unwrap_or_default());
    } else if let Some(w) = words.get_mut(field) {
        *w = value.to_owned();
    }
}

/// The `-o name=value` settings among an entry's daemon options (those
/// before its first other argument), as `postconf -P` shows them.
pub fn daemon_params(s: &Service) -> Vec<(String, String)> {
    let mut words = s.args.clone();
    crate::mastercf::normalize_options(&mut words);
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() && words[i].starts_with('-') && words[i] != "--" {
        if words[i] == "-o" && i + 1 < words.len() {
            if let Some((n, v)) = words[i + 1].split_once('=') {
                out.push((n.to_owned(), v.to_owned()));
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    out
}

/// Sets (`Some`) or removes (`None`) a `-o name=value` among the daemon
/// options that precede the first other argument; a new one goes after them.
fn set_param(words: &mut Vec<String>, name: &str, value: Option<&str>) {
    let mut args = words.split_off(8);
    crate::mastercf::normalize_options(&mut args);
    words.extend(args);
    let mut i = 8;
    let mut found = false;
    while i < words.len() {
        let a = &words[i];
        if !a.starts_with('-') || a == "--" {
            break;
        }
        if a == "-o" && i + 1 < words.len() {
            let is_it = words[i + 1].split_once('=').is_some_and(|(n, _)| n == name);
            if is_it {
                found = true;
                match value {
                    Some(v) => words[i + 1] = format!("{name}={v}"),
                    None => {
                        words.drain(i..i + 2);
                        continue;
                    }
                }
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    if let (false, Some(v)) = (found, value) {
        words.splice(i..i, ["-o".to_owned(), format!("{name}={v}")]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        text: &str,
        mode: Mode,
        entry: bool,
        field: bool,
        args: &[&str],
    ) -> (String, Vec<String>) {
        let reqs: Vec<Request> = args
            .iter()
            .map(|a| request(a, entry, field, mode).unwrap())
            .collect();
        edit(Path::new("/etc/postfix/master.cf"), text, mode, &reqs).unwrap()
    }

    #[test]
    fn a_new_parameter_goes_after_the_options_before_other_arguments() {
        let text = "maildrop unix - n n - - pipe\n  flags=DRXhu user=vmail argv=/usr/bin/maildrop -d ${recipient}\n";
        let (out, unmatched) = run(text, Mode::Set, false, false, &["maildrop/unix/a=b"]);
        assert!(unmatched.is_empty());
        assert_eq!(
            out,
            "maildrop   unix  -       n       n       -       -       pipe\n    -o a=b\n    flags=DRXhu user=vmail argv=/usr/bin/maildrop -d ${recipient}\n"
        );
    }

    #[test]
    fn a_commented_out_entry_keeps_its_comment_lines_as_they_are() {
        let text =
            "relay unix - - y - - smtp\n  -o a=b\n# note\n  -o c=d\nnext unix - - y - - smtp\n";
        let (out, _) = run(text, Mode::CommentOut, true, false, &["relay/unix"]);
        assert_eq!(
            out,
            "#relay unix - - y - - smtp\n#  -o a=b\n# note\n#  -o c=d\nnext unix - - y - - smtp\n"
        );
        let (out, _) = run(text, Mode::Remove, true, false, &["relay/unix"]);
        assert_eq!(out, "# note\nnext unix - - y - - smtp\n");
    }

    #[test]
    fn requests_are_checked_as_postfix_checks_them() {
        let err = |a: &str, entry, field, mode| request(a, entry, field, mode).unwrap_err();
        assert_eq!(
            err("smtp=x", true, false, Mode::Set),
            "-Me, -MX or -M# requires service_name/type"
        );
        assert_eq!(
            err("smtp/inet/wakeup=1 2", false, true, Mode::Set),
            "-Fe does not accept whitespace in non-command field"
        );
        assert_eq!(
            err("smtp/inet/x=1", false, false, Mode::Remove),
            "-X or -# requires names without value"
        );
        assert_eq!(
            err("smtp/inet/bogus=n", false, true, Mode::Set),
            "invalid service attribute name: \"bogus\""
        );
    }
}
