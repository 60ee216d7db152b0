//! The aliases(5) text format.
//!
//! `name: value`, where a line that starts with white space continues the
//! previous entry, `#` starts a comment line, and a name may be quoted
//! (`"a b": ...`). Names are folded to lower case. Errors name file and line.

use std::path::Path;

/// One entry: name and its (unsplit) value.
pub type Entry = (String, String);

/// A parse error with its location.
#[derive(Debug)]
pub struct Error {
    pub path: String,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path, self.message)
        } else {
            write!(f, "{}, line {}: {}", self.path, self.line, self.message)
        }
    }
}

impl std::error::Error for Error {}

/// Reads and parses an aliases file.
pub fn parse_file(path: &Path) -> Result<Vec<Entry>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error {
        path: path.display().to_string(),
        line: 0,
        message: e.to_string(),
    })?;
    parse(&path.display().to_string(), &text)
}

/// Parses aliases text strictly: the first bad line is an error.
pub fn parse(path: &str, text: &str) -> Result<Vec<Entry>, Error> {
    let (entries, mut errors) = parse_lenient(path, text);
    match errors.is_empty() {
        true => Ok(entries),
        false => Err(errors.remove(0)),
    }
}

/// Parses aliases text as postalias does: bad lines are reported and skipped.
pub fn parse_lenient(path: &str, text: &str) -> (Vec<Entry>, Vec<Error>) {
    let mut errors = Vec::new();
    // A stray continuation line is reported and the rest still read.
    let mut text = text.to_owned();
    let logical = loop {
        match pfx_config::logical_lines(&text) {
            Ok(l) => break l,
            Err(line) => {
                errors.push(Error {
                    path: path.into(),
                    line,
                    message: "continuation line without a preceding entry".into(),
                });
                let mut lines: Vec<&str> = text.lines().collect();
                lines[line - 1] = "";
                text = lines.join("\n");
            }
        }
    };
    let entries = logical
        .into_iter()
        .map(|(line, text)| {
            let err = |m: &str| Error {
                path: path.into(),
                line,
                message: m.into(),
            };
            let (name, value) = if let Some(rest) = text.strip_prefix('"') {
                let end = rest
                    .find('"')
                    .ok_or_else(|| err("unterminated quoted name"))?;
                let after = rest[end + 1..].trim_start();
                let value = after
                    .strip_prefix(':')
                    .ok_or_else(|| err("missing ':' after the name"))?;
                (rest[..end].to_owned(), value)
            } else {
                let (n, v) = text
                    .split_once(':')
                    .ok_or_else(|| err(&format!("missing ':' in \"{}\"", text.trim())))?;
                (n.trim().to_owned(), v)
            };
            if name.is_empty() {
                return Err(err("empty alias name"));
            }
            Ok((name.to_ascii_lowercase(), value.trim().to_owned()))
        })
        .filter_map(|r| r.map_err(|e| errors.push(e)).ok())
        .collect();
    (entries, errors)
}

/// Splits an alias value into its targets: commas separate them, except
/// inside quotes (`"|command with, comma"`).
pub fn targets(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in value.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => {
                out.push(std::mem::take(&mut cur));
            }
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|t| {
            let t = t.trim();
            // "|cmd" and "/file" may be quoted as a whole.
            t.strip_prefix('"')
                .and_then(|x| x.strip_suffix('"'))
                .unwrap_or(t)
                .to_owned()
        })
        .filter(|t| !t.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_style_aliases_parse() {
        let text = "# comment\npostmaster: root\nroot:   openstack\nteam: openstack,\n  hadoop , \"|/usr/bin/logger -t mail\"\n\"Odd Name\": hadoop\nBIG: /var/log/mail.copy\n";
        let e = parse("aliases", text).unwrap();
        assert_eq!(
            e,
            [
                ("postmaster".into(), "root".into()),
                ("root".into(), "openstack".into()),
                (
                    "team".into(),
                    "openstack, hadoop , \"|/usr/bin/logger -t mail\"".into()
                ),
                ("odd name".into(), "hadoop".into()),
                ("big".into(), "/var/log/mail.copy".into()),
            ]
        );
        assert_eq!(
            targets(&e[2].1),
            ["openstack", "hadoop", "|/usr/bin/logger -t mail"]
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        let err = parse("/etc/aliases", "ok: a\n\nbroken line\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "/etc/aliases, line 3: missing ':' in \"broken line\""
        );
        let err = parse("/etc/aliases", "  indented: x\n").unwrap_err();
        assert!(err.to_string().contains("line 1: continuation line"));
        assert!(parse("a", "\"open: x\n").is_err());
        assert!(parse("a", ": x\n").is_err());
    }
}
