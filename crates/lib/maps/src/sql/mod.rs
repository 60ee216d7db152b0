//! SQL tables: `sqlite:`, `pgsql:` and `mysql:` (sqlite_table(5),
//! pgsql_table(5), mysql_table(5)). Each lookup runs a query built from the
//! key; the rows' values, through a result template, are the answer.
//!
//! What the three types share lives here, as in Postfix's db_common.c and
//! cfg_parser.c:
//! - the `.cf` file ([`Cf`]): main.cf syntax (`name = value`, `#`
//!   comments, indented continuation lines), and Postfix's checks of a
//!   string's length, a number and a boolean;
//! - the templates ([`Templates`]): `query` with `%s` (the key, quoted as
//!   the database quotes), `%u` (its local part), `%d` (its domain),
//!   `%[1-9]` (the domain's labels from the right), `%S`/`%U`/`%D`, `%%`;
//!   a key without the parts the query needs is not looked up. Without
//!   `query`, the older `table`, `select_field`, `where_field` and
//!   `additional_conditions` build one. `result_format` (default `%s`)
//!   turns each value into a result (`%s` the value, `%u`/`%d` its parts,
//!   `%S`/`%U`/`%D`/`%[1-9]` the key's); results are joined with commas,
//!   and more than `expansion_limit` of them is a temporary error;
//! - the `domain` list: only keys `user@domain` whose domain is listed are
//!   looked up (names, `!name`, or `type:table` lookups, first match
//!   decides);
//! - the key folded to lower case (the tables are fixed tables, as in
//!   Postfix 3.7, even when the query uses parts of the key);
//! - for the database servers ([`hosts`]): the `hosts` list, tried in
//!   random order (UNIX-domain sockets first), a failed host left alone
//!   for `retry_interval`, and one kept connection per table, closed after
//!   `idle_interval` without use. The connection lives on a thread of its
//!   own ([`hosts::Worker`]), so that a lookup made inside a tokio runtime
//!   never runs a client library's own runtime inside it.
//!
//! A server that cannot be reached and a query the server refuses are
//! temporary errors ([`crate::Error::Temporary`]), never "not found".

mod hosts;
pub(crate) mod mysql;
pub(crate) mod pgsql;
pub(crate) mod sqlite;

use std::collections::HashMap;
use std::sync::Arc;

use crate::{text, Error};

/// A `.cf` file's settings, read once when the table is opened.
#[derive(Debug)]
pub(crate) struct Cf {
    /// The file name, as Postfix names the table in its messages.
    pub(crate) name: String,
    settings: HashMap<String, String>,
}

impl Cf {
    /// Reads `name`; the error is Postfix's text (`open NAME: No such file
    /// or directory`, or the line that is not `name = value`).
    pub(crate) fn read(name: &str) -> Result<Self, String> {
        let text = std::fs::read(name)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map_err(|e| format!("open {name}: {}", crate::strerror(&e)))?;
        let mut settings = HashMap::new();
        for (line, l) in text::logical_lines(name, &text) {
            match text::split_name_value(&l) {
                Ok((k, v)) => {
                    settings.insert(k.to_owned(), v.to_owned());
                }
                Err(why) => return Err(format!("{name}, line {line}: {why}: \"{l}\"")),
            }
        }
        Ok(Self {
            name: name.to_owned(),
            settings,
        })
    }

    /// A setting as written, if it is there.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.settings.get(key).map(String::as_str)
    }

    /// A string setting of at least `min` bytes (cfg_get_str).
    pub(crate) fn string(&self, key: &str, default: &str, min: usize) -> Result<String, String> {
        let v = self.get(key).unwrap_or(default);
        if v.len() < min {
            return Err(format!(
                "{}: bad string length {} < {min}: {key} = {v}",
                self.name,
                v.len()
            ));
        }
        Ok(v.to_owned())
    }

    /// A number setting, at least `min` when `min` is not 0 (cfg_get_int:
    /// strtol's syntax, an `int`'s range).
    pub(crate) fn int(&self, key: &str, default: i32, min: i32) -> Result<i32, String> {
        let n = match self.get(key) {
            None => default,
            Some(v) => {
                let t = text::trim_start(v);
                let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
                let ok = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
                match t.parse::<i64>().ok().filter(|_| ok) {
                    Some(n) if i32::try_from(n).is_ok() => n as i32,
                    _ => {
                        return Err(format!(
                            "{}: bad numerical configuration: {key} = {v}",
                            self.name
                        ))
                    }
                }
            }
        };
        if min != 0 && n < min {
            return Err(format!(
                "{}: invalid {key} parameter value {n} < {min}",
                self.name
            ));
        }
        Ok(n)
    }

    /// A boolean setting (`yes` or `no`, any case), or `None` when absent.
    pub(crate) fn bool(&self, key: &str) -> Result<Option<bool>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("yes") => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("no") => Ok(Some(false)),
            Some(v) => Err(format!(
                "{}: bad boolean configuration: {key} = {v}",
                self.name
            )),
        }
    }

    /// The query of Postfix's older settings: `SELECT select_field FROM
    /// table WHERE where_field='%s' additional_conditions`.
    pub(crate) fn legacy_query(&self) -> Result<String, String> {
        let need = |k: &str| {
            self.get(k)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("db_common_sql_build_query: '{k}' parameter not defined"))
        };
        Ok(format!(
            "SELECT {} FROM {} WHERE {}='%s' {}",
            need("select_field")?,
            need("table")?,
            need("where_field")?,
            self.get("additional_conditions").unwrap_or("")
        ))
    }
}

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

/// How a value goes into a query: the database's quoting of a string
/// literal's contents.
pub(crate) type Quote<'a> = &'a dyn Fn(&str, &mut String);

/// A table's templates, `domain` list and limit (Postfix's db_common).
#[derive(Debug)]
pub(crate) struct Templates {
    /// `type:name`, for messages.
    pub(crate) table: String,
    /// The `.cf` file.
    pub(crate) name: String,
    pub(crate) query: String,
    result_format: String,
    expansion_limit: i32,
    domain: Vec<DomainPattern>,
    flags: u32,
    nparts: usize,
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

/// The part after the last `@`, if any.
fn domain_of(s: &str) -> Option<usize> {
    s.rfind('@').map(|i| i + 1)
}

impl Templates {
    /// From the `.cf` settings: `query` (given, or built by the caller
    /// from the older settings), `result_format`, `expansion_limit`,
    /// `domain`.
    pub(crate) fn parse(kind: &str, cf: &Cf, query: String) -> Result<Self, String> {
        let name = &cf.name;
        let result_format = cf.string("result_format", "%s", 1)?;
        let expansion_limit = cf.int("expansion_limit", 0, 0)?;
        let mut flags = 0;
        let mut nparts = 0;
        parse_template(name, &query, true, &mut flags, &mut nparts)?;
        parse_template(name, &result_format, false, &mut flags, &mut nparts)?;
        let mut domain = Vec::new();
        for item in text::split_braced(cf.get("domain").unwrap_or("")) {
            let (negated, item) = match item.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, item),
            };
            if item.contains(':') {
                let map = crate::Map::parse(item, &crate::passwd::Passwd::default())
                    .map_err(|e| format!("db_common_parse_domain: {name}: domain match list creation using '{item}' failed: {e}"))?;
                domain.push(DomainPattern::Table(negated, Box::new(map)));
            } else {
                domain.push(DomainPattern::Name(negated, item.to_ascii_lowercase()));
            }
        }
        Ok(Self {
            table: format!("{kind}:{name}"),
            name: name.clone(),
            query,
            result_format,
            expansion_limit,
            domain,
            flags,
            nparts,
        })
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

    /// The key as the table looks it up (folded), or `None` when the
    /// `domain` list or the query's needs (a local part, a domain, enough
    /// labels) leave it out.
    pub(crate) fn key(&self, key: &str) -> Result<Option<String>, Error> {
        let key = key.to_ascii_lowercase();
        if !self.domain_allows(&key)? {
            return Ok(None);
        }
        let mut probe = String::new();
        if !self.expand(&self.query, &key, None, &mut probe, None) {
            return Ok(None);
        }
        Ok(Some(key))
    }

    /// The query for `key` (one [`Templates::key`] let through), its values
    /// quoted by `quote`.
    pub(crate) fn query_for(&self, key: &str, quote: Quote<'_>) -> String {
        let mut out = String::new();
        self.expand(&self.query, key, None, &mut out, Some(quote));
        out
    }

    /// Postfix's db_common_expand: `format` with `value` (the key for a
    /// query, a result value when `key` is given) appended to `out`; false
    /// when the value lacks a part the template needs.
    fn expand(
        &self,
        format: &str,
        value: &str,
        key: Option<&str>,
        out: &mut String,
        quote: Option<Quote<'_>>,
    ) -> bool {
        if value.is_empty() {
            match key {
                Some(k) => tracing::warn!(
                    "table \"{}\": empty lookup result for: \"{k}\" -- ignored",
                    self.table
                ),
                None => tracing::warn!("table \"{}\": empty query string -- ignored", self.table),
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
        let add = |out: &mut String, s: &str| match quote {
            Some(q) => q(s, out),
            None => out.push_str(s),
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

    /// Starts collecting the results for `key`.
    pub(crate) fn results<'a>(&'a self, key: &'a str) -> Results<'a> {
        Results {
            t: self,
            key,
            out: String::new(),
            count: 0,
        }
    }
}

/// The answer being built from the values a query returned.
pub(crate) struct Results<'a> {
    t: &'a Templates,
    key: &'a str,
    out: String,
    count: i32,
}

impl Results<'_> {
    /// Adds one value (`None`: SQL NULL, skipped silently); false when it
    /// goes over `expansion_limit`.
    pub(crate) fn add(&mut self, value: Option<&str>) -> bool {
        let Some(value) = value else { return true };
        let t = self.t;
        if t.expand(&t.result_format, value, Some(self.key), &mut self.out, None)
            && t.expansion_limit > 0
        {
            self.count += 1;
            if self.count > t.expansion_limit {
                return false;
            }
        }
        true
    }

    /// The joined results; `None` when there were none.
    pub(crate) fn finish(self) -> Option<String> {
        (!self.out.is_empty()).then_some(self.out)
    }
}

/// What a query on a server returned: each row's values (`None` for NULL).
pub(crate) type Rows = Vec<Vec<Option<String>>>;

/// An SQL table as [`crate::Map`] holds it.
#[derive(Debug)]
pub struct Table {
    t: Arc<Templates>,
    db: Db,
}

/// Where the queries go.
#[derive(Debug)]
enum Db {
    Sqlite(sqlite::Db),
    /// A server, through the thread that holds its connection.
    Server(hosts::Worker),
}

impl Table {
    /// Opens the table `kind:name` (`name` is the `.cf` file); the error is
    /// the reason Postfix gives, for the caller's surrogate.
    pub fn open(kind: &str, name: &str) -> Result<Self, String> {
        let cf = Cf::read(name)?;
        let (t, db) = match kind {
            "sqlite" => {
                let (t, db) = sqlite::open(&cf)?;
                (t, Db::Sqlite(db))
            }
            "pgsql" => {
                let (t, w) = pgsql::open(&cf)?;
                (t, Db::Server(w))
            }
            "mysql" => {
                let (t, w) = mysql::open(&cf)?;
                (t, Db::Server(w))
            }
            _ => return Err(format!("unsupported dictionary type: {kind}")),
        };
        Ok(Self { t, db })
    }

    /// Looks `key` up (folded to lower case first).
    pub fn lookup(&self, key: &str) -> Result<Option<String>, Error> {
        let Some(key) = self.t.key(key)? else {
            return Ok(None);
        };
        match &self.db {
            Db::Sqlite(db) => db.lookup(&self.t, &key),
            Db::Server(w) => {
                let rows = w.query(&key).map_err(|reason| Error::Temporary {
                    table: self.t.table.clone(),
                    reason,
                })?;
                let mut results = self.t.results(&key);
                for value in rows.iter().flatten() {
                    if !results.add(value.as_deref()) {
                        let what =
                            format!("{}: Expansion limit exceeded for key: '{key}'", self.t.name);
                        tracing::warn!("{}: {what}", w.lookup_function());
                        return Err(Error::Temporary {
                            table: self.t.table.clone(),
                            reason: what,
                        });
                    }
                }
                Ok(results.finish())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cf(text: &str) -> (tempfile::TempDir, Cf) {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("t.cf");
        std::fs::write(&p, text).unwrap();
        let cf = Cf::read(&p.display().to_string()).unwrap();
        (tmp, cf)
    }

    #[test]
    fn cf_settings_check_lengths_numbers_and_booleans_as_postfix() {
        let (_tmp, c) = cf("# c\nuser = postfix\nquery = SELECT a\n  FROM b\nn = -3\nbad = 3x\nbig = 99999999999\nyes = YES\nmaybe = sure\nempty =\n");
        // Continuation lines are joined as Postfix joins them.
        assert_eq!(c.get("query"), Some("SELECT a  FROM b"));
        assert_eq!(c.string("user", "", 0).unwrap(), "postfix");
        let e = c.string("empty", "", 1).unwrap_err();
        assert!(e.ends_with(": bad string length 0 < 1: empty = "), "{e}");
        assert_eq!(c.int("n", 0, 0).unwrap(), -3);
        assert_eq!(c.int("absent", 60, 1).unwrap(), 60);
        assert!(c
            .int("n", 60, 1)
            .unwrap_err()
            .ends_with("invalid n parameter value -3 < 1"));
        assert!(c
            .int("bad", 0, 0)
            .unwrap_err()
            .ends_with("bad numerical configuration: bad = 3x"));
        assert!(c.int("big", 0, 0).is_err());
        assert_eq!(c.bool("yes").unwrap(), Some(true));
        assert_eq!(c.bool("absent").unwrap(), None);
        assert!(c
            .bool("maybe")
            .unwrap_err()
            .ends_with("bad boolean configuration: maybe = sure"));
        let e = c.legacy_query().unwrap_err();
        assert_eq!(
            e,
            "db_common_sql_build_query: 'select_field' parameter not defined"
        );
    }

    #[test]
    fn templates_expand_parts_and_quote_only_values() {
        let (_tmp, c) = cf("domain = example.com, !no.example.com\n");
        let t = Templates::parse(
            "pgsql",
            &c,
            "SELECT x FROM t WHERE u='%u' AND d='%d' AND s='%s' AND l='%2' -- 100%%".into(),
        )
        .unwrap();
        let q = |s: &str, out: &mut String| out.push_str(&s.replace('\'', "''"));
        assert_eq!(
            t.key("O'Neil@Example.COM").unwrap().as_deref(),
            Some("o'neil@example.com")
        );
        assert_eq!(
            t.query_for("o'neil@example.com", &q),
            "SELECT x FROM t WHERE u='o''neil' AND d='example.com' AND s='o''neil@example.com' AND l='example' -- 100%"
        );
        // The domain list, and keys without the parts the query needs.
        assert_eq!(t.key("a@other.org").unwrap(), None);
        assert_eq!(t.key("@example.com").unwrap(), None);
        assert_eq!(t.key("example.com").unwrap(), None);
        let mut r = t.results("a@example.com");
        assert!(r.add(Some("x")) && r.add(None) && r.add(Some("y")));
        assert_eq!(r.finish().as_deref(), Some("x,y"));
    }
}
