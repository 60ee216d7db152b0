//! The postmap(1) text format of lookup tables (transport(5) and others):
//! `key value`, separated by white space; a line that starts with white
//! space continues the previous entry; `#` starts a comment line. Keys are
//! folded to lower case.

use std::path::Path;

use crate::aliases::{Entry, Error};

/// Reads and parses a table file strictly (the first bad line is an error).
pub fn parse_file(path: &Path) -> Result<Vec<Entry>, Error> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error {
        path: name.clone(),
        line: 0,
        message: e.to_string(),
    })?;
    let (entries, mut errors) = parse_lenient(&name, &text);
    match errors.is_empty() {
        true => Ok(entries),
        false => Err(errors.remove(0)),
    }
}

/// Parses table text as postmap does: bad lines are reported and skipped.
pub fn parse_lenient(path: &str, text: &str) -> (Vec<Entry>, Vec<Error>) {
    let logical = match pfx_config::logical_lines(text) {
        Ok(l) => l,
        Err(line) => {
            let e = Error {
                path: path.into(),
                line,
                message: "continuation line without a preceding entry".into(),
            };
            return (Vec::new(), vec![e]);
        }
    };
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for (line, text) in logical {
        let mut parts = text.splitn(2, char::is_whitespace);
        let key = parts.next().unwrap_or("").to_ascii_lowercase();
        let value = parts.next().unwrap_or("").trim().to_owned();
        if value.is_empty() {
            errors.push(Error {
                path: path.into(),
                line,
                message: format!("expected format: key whitespace value, got \"{text}\""),
            });
            continue;
        }
        entries.push((key, value));
    }
    (entries, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_values_continuations_and_bad_lines() {
        let (e, errs) = parse_lenient(
            "transport",
            "# comment\nExample.TEST  smtp:[127.0.0.2]:2526\n.example.test\n  relay:[mx]\nlonely\nlocal.test local:\n",
        );
        assert_eq!(
            e,
            vec![
                ("example.test".into(), "smtp:[127.0.0.2]:2526".into()),
                (".example.test".into(), "relay:[mx]".into()),
                ("local.test".into(), "local:".into()),
            ]
        );
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, 5);
    }
}
