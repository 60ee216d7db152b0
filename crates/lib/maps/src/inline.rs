//! Tables written in the table name itself: `inline:{ key=value, ... }` and
//! `static:value`.
//!
//! `inline:{ a=b, { c = value with spaces } }`: pairs separated by commas
//! or white space; a pair in `{}` may hold white space and commas in its
//! value. Keys are folded to lower case, as in Postfix's fixed tables; a
//! key given twice keeps the last value.
//!
//! `static:value` answers `value` for every key; `static:{ value with
//! spaces }` strips the braces and the white space inside them.
//!
//! Syntax errors carry Postfix's text (`bad syntax: "inline:{}"; need
//! "inline:{name=value...}"`); the caller turns them into a surrogate
//! table or a fatal error as Postfix does.

use crate::text;

/// An `inline:` table: its pairs in the order given (for `postmap -s`),
/// later duplicates replacing earlier ones.
#[derive(Debug, Clone, Default)]
pub struct Inline {
    entries: Vec<(String, String)>,
}

impl Inline {
    /// Parses the name after `inline:` (`{a=b, c=d}`).
    pub fn parse(name: &str) -> Result<Self, String> {
        let need =
            |what: &str| format!("{what}: \"inline:{name}\"; need \"inline:{{name=value...}}\"");
        let inner = match text::balanced(name) {
            Some(len) if len == name.len() && len > 2 => &name[1..len - 1],
            _ => return Err(need("bad syntax")),
        };
        let mut t = Self::default();
        for token in text::split_braced(inner) {
            let pair = if token.starts_with('{') {
                text::unbrace(token, true).map_err(|e| need(&e))?
            } else {
                token
            };
            let (k, v) = text::split_name_value(pair).map_err(need)?;
            t.insert(k.to_ascii_lowercase(), v.to_owned());
        }
        if t.entries.is_empty() {
            return Err(need("empty table"));
        }
        Ok(t)
    }

    fn insert(&mut self, key: String, value: String) {
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(e) => e.1 = value,
            None => self.entries.push((key, value)),
        }
    }

    /// The value of `key` (already folded by the caller).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every pair, in the order given.
    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }
}

/// The value of `static:name`: `name`, or what is inside `{ }`.
pub fn parse_static(name: &str) -> Result<String, String> {
    if name.starts_with('{') {
        text::unbrace(name, true)
            .map(str::to_owned)
            .map_err(|e| format!("bad static:name syntax: {e}"))
    } else {
        Ok(name.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_pairs_fold_keys_and_keep_the_last_duplicate() {
        let t = Inline::parse("{ A=B, c=d ,{x=y z}, {q = { r } }, c=e }").unwrap();
        assert_eq!(t.get("a"), Some("B"));
        assert_eq!(t.get("c"), Some("e"));
        assert_eq!(t.get("x"), Some("y z"));
        assert_eq!(t.get("q"), Some("{ r }"));
        assert_eq!(t.get("A"), None);
        assert_eq!(
            t.entries()
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>(),
            ["a", "c", "x", "q"]
        );
        assert_eq!(Inline::parse("{x=}").unwrap().get("x"), Some(""));
    }

    #[test]
    fn inline_errors_read_as_postfix_writes_them() {
        let cases = [
            ("{}", "bad syntax: \"inline:{}\"; need \"inline:{name=value...}\""),
            ("{a=b", "bad syntax: \"inline:{a=b\"; need \"inline:{name=value...}\""),
            ("a=b", "bad syntax: \"inline:a=b\"; need \"inline:{name=value...}\""),
            ("{a=b}x", "bad syntax: \"inline:{a=b}x\"; need \"inline:{name=value...}\""),
            ("{ }", "empty table: \"inline:{ }\"; need \"inline:{name=value...}\""),
            (
                "{a}",
                "missing '=' after attribute name: \"inline:{a}\"; need \"inline:{name=value...}\"",
            ),
            (
                "{{x=y z}x,b=c}",
                "syntax error after '}' in \"{x=y z}x\": \"inline:{{x=y z}x,b=c}\"; need \"inline:{name=value...}\"",
            ),
            (
                "{\"x y\"=z}",
                "unbalanced '\"': \"inline:{\"x y\"=z}\"; need \"inline:{name=value...}\"",
            ),
        ];
        for (name, why) in cases {
            assert_eq!(Inline::parse(name).unwrap_err(), why, "{name}");
        }
    }

    #[test]
    fn static_values_with_and_without_braces() {
        assert_eq!(parse_static("OK").unwrap(), "OK");
        assert_eq!(parse_static("{ a b }").unwrap(), "a b");
        assert_eq!(parse_static("{}").unwrap(), "");
        assert_eq!(
            parse_static("{a b").unwrap_err(),
            "bad static:name syntax: missing '}' in \"{a b\""
        );
        assert_eq!(
            parse_static("{a}b").unwrap_err(),
            "bad static:name syntax: syntax error after '}' in \"{a}b\""
        );
    }
}
