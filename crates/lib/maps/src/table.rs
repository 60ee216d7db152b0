//! The postmap(1) text format of lookup tables (transport(5) and others):
//! `key value`, separated by white space; a line that starts with white
//! space continues the previous entry; `#` starts a comment line. Keys are
//! folded to lower case.

use crate::aliases::{Entry, Error};
use crate::text;

/// Parses table text as postmap does: bad lines are reported and skipped;
/// text that starts a logical line with white space is warned about and
/// skipped on its own (Postfix's readllines), the rest still read.
pub fn parse_lenient(path: &str, text: &str) -> (Vec<Entry>, Vec<Error>) {
    let (records, errors) = records(path, text);
    let entries = records.into_iter().map(|(_, k, v)| (k, v)).collect();
    (entries, errors)
}

/// [`parse_lenient`]'s entries, each with its line number.
pub(crate) fn records(path: &str, text: &str) -> (Vec<(usize, String, String)>, Vec<Error>) {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for (line, record) in text::logical_lines(path, text) {
        let (key, value) = match record.find(text::is_space) {
            Some(i) => (&record[..i], text::trim_end(text::trim_start(&record[i..]))),
            None => (record.as_str(), ""),
        };
        if value.is_empty() {
            errors.push(Error {
                path: path.into(),
                line,
                message: format!("expected format: key whitespace value, got \"{record}\""),
            });
            continue;
        }
        entries.push((line, key.to_ascii_lowercase(), value.to_owned()));
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

    /// An indented first line is left out on its own, as Postfix's
    /// readllines does, not the whole table.
    #[test]
    fn an_indented_first_line_costs_only_itself() {
        let (e, errs) = parse_lenient("t", "  stray value\n\tmore\na b\nc d\n   e\n");
        assert_eq!(
            e,
            vec![("a".into(), "b".into()), ("c".into(), "d   e".into())]
        );
        assert!(errs.is_empty());
    }
}
