//! `sqlite:/etc/postfix/sqlite.cf` (sqlite_table(5)): the query runs on an
//! SQLite database file, `dbpath` (required), opened read-only.
//!
//! The settings shared with the other SQL types are described in
//! [`super`]. Each row's first column is a value; `%s` is quoted as
//! SQLite's `%q` does (single quotes doubled). Where Postfix stops the
//! program (an SQL statement that does not compile, a database that does
//! not open), postfix-rs logs the problem and fails the lookup (a
//! configuration error) or, at open, makes the table unavailable; Postfix
//! would also create a missing database file, which a read-only open does
//! not.

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::{Cf, Templates};
use crate::Error;

/// The open database.
#[derive(Debug)]
pub(crate) struct Db(Mutex<rusqlite::Connection>);

/// SQLite's `%q` quoting: single quotes doubled.
fn quote(s: &str, out: &mut String) {
    out.push_str(&s.replace('\'', "''"));
}

/// Reads the settings and opens `dbpath`.
pub(crate) fn open(cf: &Cf) -> Result<(Arc<Templates>, Db), String> {
    let dbpath = cf.string("dbpath", "", 1)?;
    let query = match cf.get("query") {
        Some(q) => q.to_owned(),
        None => cf.legacy_query()?,
    };
    let t = Templates::parse("sqlite", cf, query)?;
    let db = rusqlite::Connection::open_with_flags(
        Path::new(&dbpath),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("sqlite:{}: Can't open database: {e}", cf.name))?;
    Ok((Arc::new(t), Db(Mutex::new(db))))
}

impl Db {
    /// Runs the query for `key` (already folded and let through).
    pub(crate) fn lookup(&self, t: &Templates, key: &str) -> Result<Option<String>, Error> {
        let query = t.query_for(key, &quote);
        let db = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let fail = |what: String, config: bool| {
            tracing::warn!("dict_sqlite_lookup: {}: {what}", t.name);
            let table = t.table.clone();
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
        let mut results = t.results(key);
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
            if !results.add(value.as_deref()) {
                return Err(fail(
                    format!("Expansion limit exceeded for key '{key}'"),
                    false,
                ));
            }
        }
        Ok(results.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Table;
    use crate::Error;

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

    fn open(name: &str) -> Result<Table, String> {
        Table::open("sqlite", name)
    }

    #[test]
    fn query_expands_quotes_and_joins_rows() {
        let (_tmp, cf) = setup("query = SELECT goto FROM alias\n WHERE address='%s'\n");
        let t = open(&cf).unwrap();
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
        let t = open(&cf).unwrap();
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
        let t = open(&cf).unwrap();
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
        let e = open(&cf).unwrap_err();
        assert!(e.contains("Invalid query template: SELECT %x"), "{e}");
        let (_tmp, cf) = setup("query = SELECT nothing FROM nowhere WHERE a='%s'\n");
        let t = open(&cf).unwrap();
        assert!(matches!(t.lookup("k"), Err(Error::Config { .. })));
        let tmp = tempfile::tempdir().unwrap();
        let cf = tmp.path().join("x.cf");
        std::fs::write(&cf, "query = SELECT 1\n").unwrap();
        let e = open(&cf.display().to_string()).unwrap_err();
        assert!(e.ends_with("bad string length 0 < 1: dbpath = "), "{e}");
        let e = open("/nonexistent/sqlite.cf").unwrap_err();
        assert_eq!(e, "open /nonexistent/sqlite.cf: No such file or directory");
        std::fs::write(&cf, "dbpath = /nonexistent/db\nquery = SELECT 1\n").unwrap();
        let e = open(&cf.display().to_string()).unwrap_err();
        assert!(e.contains("Can't open database"), "{e}");
    }
}
