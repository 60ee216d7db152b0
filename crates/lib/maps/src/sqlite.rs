//! `sqlite:/etc/postfix/sqlite.cf` tables (sqlite_table(5)): each lookup
//! runs an SQL query on an SQLite database.
//!
//! The `.cf` file has main.cf syntax (`name = value`, `#` comments,
//! indented continuation lines):
//! - `dbpath`: the database file (required), opened read-only.
//! - `query`: the SQL, with `%s` (the key, SQL-quoted), `%u` (its local
//!   part), `%d` (its domain), `%[1-9]` (the domain's labels from the
//!   right), `%S`/`%U`/`%D` (the same, for the result template), `%%`.
//!   A key without the parts the query needs is not looked up. Without
//!   `query`, Postfix's older `table`, `select_field`, `where_field` and
//!   `additional_conditions` build one.
//! - `result_format` (default `%s`): each row's first column through this
//!   template (`%s` the column, `%u`/`%d` its parts, `%S`/`%U`/`%D` the
//!   key's); rows are joined with commas.
//! - `domain`: only keys `user@domain` whose domain is listed are looked
//!   up (names, `!name`, or `type:table` lookups, first match decides).
//! - `expansion_limit`: more result rows than this is an error.
//!
//! As in Postfix the key is folded to lower case and the table is a fixed
//! table (partial keys are tried). Where Postfix stops the program (an SQL
//! statement that does not compile, a bad template, a database that does
//! not open), postfix-rs logs the problem and fails the lookup or, at open,
//! makes the table unavailable; Postfix would also create a missing
//! database file, which a read-only open does not.

use std::path::Path;
use std::sync::Mutex;

use crate::{text, Error};

const KEY_DOMAIN: u32 = 1;
const KEY_USER: u32 = 2;
const VALUE_DOMAIN: u32 = 4;
const VALUE_USER: u32 = 8;

/// One entry of the `domain` list.
#[derive(Debug)]
enum DomainPattern {
    Name(bool, String),
    Table(bool, Box<crate::Map>),
}

/// A loaded sqlite table.
#[derive(Debug)]
pub struct Table {
    name: String,
    db: Mutex<rusqlite::Connection>,
    query: String,
    result_format: String,
    expansion_limit: usize,
    domain: Vec<DomainPattern>,
    flags: u32,
    nparts: usize,
}

/// Reads a main.cf-style file into its settings.
fn read_cf(name: &str) -> Result<std::collections::HashMap<String, String>, String> {
    let text = std::fs::read(name)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .map_err(|e| format!("open {name}: {}", crate::strerror(&e)))?;
    let mut out = std::collections::HashMap::new();
    for (line, l) in text::logical_lines(name, &text) {
        match text::split_name_value(&l) {
            Ok((k, v)) => {
                out.insert(k.to_owned(), v.to_owned());
            }
            Err(why) => return Err(format!("{name}, line {line}: {why}: \"{l}\"")),
        }
    }
    Ok(out)
}

/// The flags a template sets (Postfix's db_common_parse), or the error.
fn parse_template(
    name: &str,
    format: &str,
    query: bool,
    flags: &mut u32,
    nparts: &mut usize,
) -> Result<(), String> {
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            continue;
        }
        match chars.next() {
            Some('%' | 's' | 'S') => {}
            Some('u') => *flags |= if query { KEY_USER } else { VALUE_USER },
            Some('d') => *flags |= if query { KEY_DOMAIN } else { VALUE_DOMAIN },
            Some('U') => *flags |= KEY_USER,
            Some(d @ '1'..='9') => {
                *nparts = (*nparts).max(d as usize - '0' as usize);
                *flags |= KEY_DOMAIN;
            }
            Some('D') => *flags |= KEY_DOMAIN,
            _ => {
                return Err(format!(
                    "db_common_parse: {name}: Invalid {} template: {format}",
                    if query { "query" } else { "result" }
                ))
            }
        }
    }
    Ok(())
}

/// SQLite's `%q` quoting: single quotes doubled.
fn quote(s: &str) -> String {
    s.replace('\'', "''")
}

/// The part after the last `@`, if any.
fn domain_of(s: &str) -> Option<usize> {
    s.rfind('@').map(|i| i + 1)
}

impl Table {
    /// Opens the table `name` (the `.cf` file); the error is the reason
    /// Postfix gives, for the caller's surrogate.
    pub fn open(name: &str) -> Result<Self, String> {
        let cf = read_cf(name)?;
        let get = |k: &str| cf.get(k).map(String::as_str);
        let dbpath = get("dbpath").unwrap_or("");
        if dbpath.is_empty() {
            return Err(format!(
                "{name}: bad string length 0 < 1: dbpath = {dbpath}"
            ));
        }
        let query = match get("query") {
            Some(q) => q.to_owned(),
            None => {
                let need = |k: &str| {
                    get(k).filter(|v| !v.is_empty()).ok_or_else(|| {
                        format!("db_common_sql_build_query: '{k}' parameter not defined")
                    })
                };
                format!(
                    "SELECT {} FROM {} WHERE {}='%s' {}",
                    need("select_field")?,
                    need("table")?,
                    need("where_field")?,
                    get("additional_conditions").unwrap_or("")
                )
            }
        };
        let result_format = get("result_format").unwrap_or("%s").to_owned();
        if result_format.is_empty() {
            return Err(format!("{name}: bad string length 0 < 1: result_format = "));
        }
        let expansion_limit = match get("expansion_limit") {
            None => 0,
            Some(v) => v.parse::<u32>().map_err(|_| {
                format!("{name}: bad numerical configuration: expansion_limit = {v}")
            })? as usize,
        };
        let mut flags = 0;
        let mut nparts = 0;
        parse_template(name, &query, true, &mut flags, &mut nparts)?;
        parse_template(name, &result_format, false, &mut flags, &mut nparts)?;
        let mut domain = Vec::new();
        for item in text::split_braced(get("domain").unwrap_or("")) {
            let (negated, item) = match item.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, item),
            };
            if item.contains(':') {
                let map = crate::Map::parse_as(item, &crate::passwd::Passwd::default(), crate::Format::Postmap)
                    .map_err(|e| format!("db_common_parse_domain: {name}: domain match list creation using '{item}' failed: {e}"))?;
                domain.push(DomainPattern::Table(negated, Box::new(map)));
            } else {
                domain.push(DomainPattern::Name(negated, item.to_ascii_lowercase()));
            }
        }
        let db = rusqlite::Connection::open_with_flags(
            Path::new(dbpath),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| format!("sqlite:{name}: Can't open database: {e}"))?;
        Ok(Self {
            name: name.to_owned(),
            db: Mutex::new(db),
            query,
            result_format,
            expansion_limit,
            domain,
            flags,
            nparts,
        })
    }

    fn table(&self) -> String {
        format!("sqlite:{}", self.name)
    }

    /// Whether the `domain` list lets `key` be looked up.
    fn domain_allows(&self, key: &str) -> Result<bool, Error> {
        if self.domain.is_empty() {
            return Ok(true);
        }
        let Some(d) = domain_of(key).filter(|&d| d > 1) else {
            return Ok(false);
        };
        let domain = &key[d..];
        for p in &self.domain {
            let (negated, hit) = match p {
                DomainPattern::Name(n, name) => (*n, name.eq_ignore_ascii_case(domain)),
                DomainPattern::Table(n, map) => (*n, map.lookup(domain)?.is_some()),
            };
            if hit {
                return Ok(!negated);
            }
        }
        Ok(false)
    }

    /// Postfix's db_common_expand: `format` with `value` (the key for a
    /// query, a column for a result, when `key` is given) appended to
    /// `out`; false when the value lacks a part the template needs.
    fn expand(
        &self,
        format: &str,
        value: &str,
        key: Option<&str>,
        out: &mut String,
        sql: bool,
    ) -> bool {
        if value.is_empty() {
            match key {
                Some(k) => tracing::warn!(
                    "table \"{}\": empty lookup result for: \"{k}\" -- ignored",
                    self.table()
                ),
                None => tracing::warn!("table \"{}\": empty query string -- ignored", self.table()),
            }
            return false;
        }
        let flags = self.flags;
        let vdomain;
        let mut kdomain = None;
        if let Some(key) = key {
            vdomain = if flags & (VALUE_DOMAIN | VALUE_USER) != 0 {
                domain_of(value)
            } else {
                None
            };
            if (vdomain.is_none_or(|d| d == value.len()) && flags & VALUE_DOMAIN != 0)
                || (vdomain == Some(1) && flags & VALUE_USER != 0)
            {
                return false;
            }
            if flags & (KEY_DOMAIN | KEY_USER) != 0 {
                kdomain = domain_of(key);
            }
            if (kdomain.is_none_or(|d| d == key.len()) && flags & KEY_DOMAIN != 0)
                || (kdomain == Some(1) && flags & KEY_USER != 0)
            {
                tracing::warn!(
                    "db_common_expand: {}: lookup key '{value}' skipped after query",
                    self.name
                );
                return false;
            }
        } else {
            vdomain = if flags & (KEY_DOMAIN | KEY_USER) != 0 {
                domain_of(value)
            } else {
                None
            };
            if (vdomain.is_none_or(|d| d == value.len()) && flags & KEY_DOMAIN != 0)
                || (vdomain == Some(1) && flags & KEY_USER != 0)
            {
                return false;
            }
        }
        let parts: Vec<&str> = if self.nparts > 0 {
            let src = match key {
                Some(k) => kdomain.map_or("", |d| &k[d..]),
                None => vdomain.map_or("", |d| &value[d..]),
            };
            let parts: Vec<&str> = src.split('.').collect();
            if src.is_empty()
                || parts.len() < self.nparts
                || parts[parts.len() - self.nparts..]
                    .iter()
                    .any(|p| p.is_empty())
            {
                return false;
            }
            parts
        } else {
            Vec::new()
        };
        if !out.is_empty() {
            out.push(',');
        }
        let add = |out: &mut String, s: &str| {
            if sql {
                out.push_str(&quote(s));
            } else {
                out.push_str(s);
            }
        };
        let user = |s: &str, d: Option<usize>| -> String {
            match d {
                Some(d) => s[..d - 1].to_owned(),
                None => s.to_owned(),
            }
        };
        let mut chars = format.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('%') => out.push('%'),
                Some('s') => add(out, value),
                Some('u') => add(out, &user(value, vdomain)),
                Some('d') => add(out, vdomain.map_or("", |d| &value[d..])),
                Some('S') => add(out, key.unwrap_or(value)),
                Some('U') => match key {
                    Some(k) => add(out, &user(k, kdomain)),
                    None => add(out, &user(value, vdomain)),
                },
                Some('D') => {
                    let d = match key {
                        Some(k) => kdomain.map_or("", |d| &k[d..]),
                        None => vdomain.map_or("", |d| &value[d..]),
                    };
                    add(out, d);
                }
                Some(d @ '1'..='9') => {
                    let n = d as usize - '0' as usize;
                    add(
                        out,
                        parts
                            .get(parts.len().wrapping_sub(n))
                            .copied()
                            .unwrap_or(""),
                    );
                }
                _ => {}
            }
        }
        true
    }

    /// Runs the query for `key`.
    pub fn lookup(&self, key: &str) -> Result<Option<String>, Error> {
        let key = key.to_ascii_lowercase();
        if !self.domain_allows(&key)? {
            return Ok(None);
        }
        let mut query = String::new();
        if !self.expand(&self.query, &key, None, &mut query, true) {
            return Ok(None);
        }
        let db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        let fail = |what: String, config: bool| {
            tracing::warn!("dict_sqlite_lookup: {}: {what}", self.name);
            let table = self.table();
            if config {
                Error::Config {
                    table,
                    reason: what,
                }
            } else {
                Error::Temporary {
                    table,
                    reason: what,
                }
            }
        };
        let mut stmt = db
            .prepare(&query)
            .map_err(|e| fail(format!("SQL prepare failed: {e}"), true))?;
        let mut rows = stmt
            .query([])
            .map_err(|e| fail(format!("SQL step failed for query '{query}': {e}"), false))?;
        let mut result = String::new();
        let mut expansions = 0;
        loop {
            let row = match rows.next() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    return Err(fail(
                        format!("SQL step failed for query '{query}': {e}"),
                        false,
                    ))
                }
            };
            let value: Option<String> = match row.get_ref(0) {
                Ok(rusqlite::types::ValueRef::Null) | Err(_) => None,
                Ok(rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t)) => {
                    Some(String::from_utf8_lossy(t).into_owned())
                }
                Ok(rusqlite::types::ValueRef::Integer(i)) => Some(i.to_string()),
                Ok(rusqlite::types::ValueRef::Real(f)) => Some(format!("{f:.1}")),
            };
            let Some(value) = value else { continue };
            if self.expand(&self.result_format, &value, Some(&key), &mut result, false)
                && self.expansion_limit > 0
            {
                expansions += 1;
                if expansions > self.expansion_limit {
                    return Err(fail(
                        format!("Expansion limit exceeded for key '{key}'"),
                        false,
                    ));
                }
            }
        }
        Ok((!result.is_empty()).then_some(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database with aliases and a .cf file that queries it.
    fn setup(cf_extra: &str) -> (tempfile::TempDir, String) {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("db.sqlite");
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "CREATE TABLE alias (address TEXT, goto TEXT, domain TEXT);
             INSERT INTO alias VALUES ('joe@example.com', 'joe@local', 'example.com');
             INSERT INTO alias VALUES ('list@example.com', 'a@x', 'example.com');
             INSERT INTO alias VALUES ('list@example.com', 'b@y', 'example.com');
             INSERT INTO alias VALUES ('o''brien@example.com', 'ob', 'example.com');
             INSERT INTO alias VALUES ('null@example.com', NULL, 'example.com');",
        )
        .unwrap();
        drop(c);
        let cf = tmp.path().join("sqlite.cf");
        std::fs::write(
            &cf,
            format!("# test\ndbpath = {}\n{cf_extra}", db.display()),
        )
        .unwrap();
        let name = cf.display().to_string();
        (tmp, name)
    }

    #[test]
    fn query_expands_quotes_and_joins_rows() {
        let (_tmp, cf) = setup("query = SELECT goto FROM alias\n WHERE address='%s'\n");
        let t = Table::open(&cf).unwrap();
        assert_eq!(
            t.lookup("Joe@Example.com").unwrap().as_deref(),
            Some("joe@local")
        );
        assert_eq!(
            t.lookup("list@example.com").unwrap().as_deref(),
            Some("a@x,b@y")
        );
        assert_eq!(
            t.lookup("o'brien@example.com").unwrap().as_deref(),
            Some("ob")
        );
        assert_eq!(t.lookup("null@example.com").unwrap(), None);
        assert_eq!(t.lookup("nobody@example.com").unwrap(), None);
    }

    #[test]
    fn user_domain_parts_result_format_and_limit() {
        let (_tmp, cf) = setup(
            "query = SELECT goto FROM alias WHERE address = '%u@%d' AND domain = '%2.%1'\nresult_format = <%u|%D|%s>\nexpansion_limit = 1\n",
        );
        let t = Table::open(&cf).unwrap();
        assert_eq!(
            t.lookup("joe@example.com").unwrap().as_deref(),
            Some("<joe|example.com|joe@local>")
        );
        // No domain, or too few labels: not looked up.
        assert_eq!(t.lookup("joe").unwrap(), None);
        assert_eq!(t.lookup("joe@com").unwrap(), None);
        assert!(matches!(
            t.lookup("list@example.com"),
            Err(Error::Temporary { .. })
        ));
    }

    #[test]
    fn domain_list_and_legacy_query() {
        let (_tmp, cf) = setup(
            "table = alias\nselect_field = goto\nwhere_field = address\ndomain = other.example, example.com\n",
        );
        let t = Table::open(&cf).unwrap();
        assert_eq!(
            t.lookup("joe@example.com").unwrap().as_deref(),
            Some("joe@local")
        );
        assert_eq!(t.lookup("joe@example.org").unwrap(), None);
        assert_eq!(t.lookup("joe").unwrap(), None);
    }

    #[test]
    fn bad_configuration_is_an_open_error_and_bad_sql_a_lookup_error() {
        let (_tmp, cf) = setup("query = SELECT %x\n");
        let e = Table::open(&cf).unwrap_err();
        assert!(e.contains("Invalid query template: SELECT %x"), "{e}");
        let (_tmp, cf) = setup("query = SELECT nothing FROM nowhere WHERE a='%s'\n");
        let t = Table::open(&cf).unwrap();
        assert!(matches!(t.lookup("k"), Err(Error::Config { .. })));
        let tmp = tempfile::tempdir().unwrap();
        let cf = tmp.path().join("x.cf");
        std::fs::write(&cf, "query = SELECT 1\n").unwrap();
        let e = Table::open(&cf.display().to_string()).unwrap_err();
        assert!(e.ends_with("bad string length 0 < 1: dbpath = "), "{e}");
        let e = Table::open("/nonexistent/sqlite.cf").unwrap_err();
        assert_eq!(e, "open /nonexistent/sqlite.cf: No such file or directory");
        std::fs::write(&cf, "dbpath = /nonexistent/db\nquery = SELECT 1\n").unwrap();
        let e = Table::open(&cf.display().to_string()).unwrap_err();
        assert!(e.contains("Can't open database"), "{e}");
    }
}
