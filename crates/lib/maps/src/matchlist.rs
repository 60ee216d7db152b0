//! Postfix's match lists of names (`virtual_alias_domains`,
//! `virtual_mailbox_domains`: string_list(3)): items are names, `!name`
//! (a match excludes), and `type:table` (the name is looked up; any value
//! matches). The first item that matches decides; a table that cannot be
//! asked makes the whole match fail, so the caller defers rather than take
//! the name for someone else's.
//!
//! `/file/name` items are expanded by the configuration layer before the
//! list reaches here (`pfx_config::FILE_LISTS`).

use crate::{passwd::Passwd, Error, Map};

#[derive(Debug)]
enum Pattern {
    Name(String),
    Table(Box<Map>),
}

/// A parsed string list.
#[derive(Debug, Default)]
pub struct MatchList(Vec<(bool, Pattern)>);

/// Whether an item names a table (`type:name`, the type a word).
fn is_table(item: &str) -> bool {
    item.split_once(':').is_some_and(|(t, _)| {
        t.starts_with(|c: char| c.is_ascii_alphabetic())
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    })
}

impl MatchList {
    /// From the expanded, split parameter value; tables are opened now.
    pub fn parse(items: &[String], passwd: &Passwd) -> Result<Self, Error> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let (negated, item) = match item.strip_prefix('!') {
                Some(rest) => (true, rest.trim_start()),
                None => (false, item.as_str()),
            };
            let pattern = if is_table(item) {
                Pattern::Table(Box::new(Map::parse(item, passwd)?))
            } else {
                Pattern::Name(item.trim_end_matches('.').to_ascii_lowercase())
            };
            out.push((negated, pattern));
        }
        Ok(Self(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `name` is in the list (case-insensitive); `Err` when a table
    /// that had to be asked could not answer.
    pub fn matches(&self, name: &str) -> Result<bool, Error> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        for (negated, pattern) in &self.0 {
            let hit = match pattern {
                Pattern::Name(n) => *n == name,
                Pattern::Table(map) => map.lookup(&name)?.is_some(),
            };
            if hit {
                return Ok(!negated);
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> MatchList {
        let items: Vec<String> = items.iter().map(|s| (*s).to_owned()).collect();
        MatchList::parse(&items, &Passwd::default()).unwrap()
    }

    #[test]
    fn names_match_whole_and_without_case() {
        let l = list(&["example.com", "Example.NET."]);
        assert!(l.matches("EXAMPLE.com").unwrap());
        assert!(l.matches("example.net").unwrap());
        assert!(!l.matches("sub.example.com").unwrap());
        assert!(!l.matches("example.org").unwrap());
        assert!(!list(&[]).matches("example.com").unwrap());
    }

    #[test]
    fn first_match_decides_and_negation_excludes() {
        let l = list(&[
            "!inline:{no.example=x}",
            "inline:{no.example=x, yes.example=y}",
        ]);
        assert!(!l.matches("no.example").unwrap());
        assert!(l.matches("yes.example").unwrap());
        let l = list(&["!a.example", "a.example"]);
        assert!(!l.matches("a.example").unwrap());
    }

    #[test]
    fn a_table_that_cannot_answer_fails_the_match() {
        let l = list(&["regexp:/nonexistent/table"]);
        assert!(l.matches("example.com").is_err());
        // An earlier match decides before the broken table is asked.
        let l = list(&["example.com", "regexp:/nonexistent/table"]);
        assert!(l.matches("example.com").unwrap());
    }
}
