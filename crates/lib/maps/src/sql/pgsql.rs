//! `pgsql:/etc/postfix/pgsql.cf` (pgsql_table(5)): the query runs on a
//! PostgreSQL server, through rust-postgres (no TLS).
//!
//! Settings, besides those shared with the other SQL types ([`super`]):
//! - `hosts`: `unix:/directory` or `/directory` (the directory holding the
//!   server's socket; `unix:` alone is the default, /var/run/postgresql),
//!   `inet:host:port`, `host:port`, `host`, or a `postgresql://` URI;
//!   default `localhost`. A missing port is `PGPORT` or 5432, as libpq
//!   has it.
//! - `user` (default: `PGUSER`, or the name of the user running the
//!   program, as libpq), `password` (default: `PGPASSWORD`), `dbname`
//!   (required).
//! - `query`, or the older `select_function` (`SELECT f('%s')`), or
//!   `table`/`select_field`/`where_field`/`additional_conditions`.
//! - `retry_interval` and `idle_interval` (seconds, default 60): Postfix
//!   3.9's names for what Postfix 3.7 fixes at 60.
//!
//! Every column of every row of the last statement's result is a value;
//! SQL NULL is an empty value (skipped with Postfix's warning). The key is
//! quoted as libpq's PQescapeStringConn does for the connection's
//! `standard_conforming_strings` (`'` doubled, and `\` doubled when it is
//! off). The connection's encoding is UTF-8, where Postfix 3.7 asks for
//! LATIN1 (Postfix 3.9's default `encoding` is UTF8); keys that are not
//! ASCII are sent as UTF-8. `~/.pgpass` is not read.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use super::hosts::{self, Client, Endpoint, Host, Worker};
use super::{Cf, Rows, Templates};

/// How long a connection may take to be made.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The directory of the server's socket when `hosts` names none (Debian's
/// libpq default).
const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

/// What connecting needs.
#[derive(Debug, Clone)]
struct Pg {
    user: String,
    password: String,
    dbname: String,
}

/// A connection, with the quoting it needs.
struct Conn {
    client: postgres::Client,
    standard_strings: bool,
}

/// libpq's PQescapeStringConn: `'` doubled, `\` doubled unless
/// `standard_conforming_strings` is on; the text ends at a NUL, as a C
/// string does.
fn escape(s: &str, standard_strings: bool, out: &mut String) {
    for c in s.chars() {
        match c {
            '\0' => break,
            '\'' => out.push_str("''"),
            '\\' if !standard_strings => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
}

/// One `hosts` entry, as Postfix's pgsql host_init reads it.
fn parse_host(name: &str) -> Result<Endpoint, String> {
    if name.starts_with("postgresql:") {
        return Ok(Endpoint::Uri(name.to_owned()));
    }
    let d = name
        .strip_prefix("unix:")
        .or_else(|| name.strip_prefix("inet:"))
        .unwrap_or(name);
    if d.is_empty() || d.starts_with('/') {
        return Ok(Endpoint::Unix((!d.is_empty()).then(|| d.to_owned())));
    }
    match d.rsplit_once(':') {
        Some((host, port)) => Ok(Endpoint::Inet {
            host: host.to_owned(),
            port: Some(
                port.parse()
                    .map_err(|_| format!("pgsql host {name}: invalid port number: \"{port}\""))?,
            ),
        }),
        None => Ok(Endpoint::Inet {
            host: d.to_owned(),
            port: None,
        }),
    }
}

/// A client error in words: the server's message as libpq shows it, or
/// the error and its cause.
fn words(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}:  {}", db.severity(), db.message());
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// libpq's defaults: the port from `PGPORT`, the user from `PGUSER` or the
/// user running the program.
fn default_port() -> u16 {
    std::env::var("PGPORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(5432)
}

fn default_user() -> String {
    std::env::var("PGUSER").ok().unwrap_or_else(|| {
        nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map_or_else(String::new, |u| u.name)
    })
}

impl Client for Pg {
    type Conn = Conn;
    const KIND: &'static str = "pgsql";
    const LOOKUP: &'static str = "dict_pgsql_lookup";

    fn connect(&self, host: &Host) -> Result<Conn, String> {
        let mut config = match &host.endpoint {
            Endpoint::Uri(uri) => postgres::Config::from_str(uri).map_err(|e| words(&e))?,
            Endpoint::Unix(dir) => {
                let mut c = postgres::Config::new();
                c.host_path(dir.as_deref().unwrap_or(DEFAULT_SOCKET_DIR))
                    .port(default_port());
                c
            }
            Endpoint::Inet { host, port } => {
                let mut c = postgres::Config::new();
                c.host(host).port(port.unwrap_or_else(default_port));
                c
            }
        };
        if !matches!(host.endpoint, Endpoint::Uri(_)) {
            config.dbname(&self.dbname);
            if !self.user.is_empty() {
                config.user(&self.user);
            }
            if !self.password.is_empty() {
                config.password(&self.password);
            } else if let Ok(p) = std::env::var("PGPASSWORD") {
                config.password(p);
            }
        }
        if config.get_user().is_none() {
            config.user(&default_user());
        }
        config.connect_timeout(CONNECT_TIMEOUT);
        let mut client = config.connect(postgres::NoTls).map_err(|e| words(&e))?;
        let standard_strings = client
            .simple_query("SHOW standard_conforming_strings")
            .map_err(|e| words(&e))?
            .iter()
            .find_map(|m| match m {
                postgres::SimpleQueryMessage::Row(r) => r.get(0).map(|v| v == "on"),
                _ => None,
            })
            .unwrap_or(true);
        Ok(Conn {
            client,
            standard_strings,
        })
    }

    fn quote(conn: &Conn, s: &str, out: &mut String) {
        escape(s, conn.standard_strings, out);
    }

    fn query(&self, conn: &mut Conn, host: &Host, sql: &str) -> Result<Rows, String> {
        let messages = conn.client.simple_query(sql).map_err(|e| {
            format!(
                "pgsql query failed: fatal error from host {}: {}",
                host.label,
                words(&e)
            )
        })?;
        // As PQexec: the last statement's result.
        let mut last = Rows::new();
        let mut current = Rows::new();
        for m in messages {
            match m {
                postgres::SimpleQueryMessage::Row(r) => current.push(
                    (0..r.len())
                        .map(|i| Some(r.get(i).unwrap_or("").to_owned()))
                        .collect(),
                ),
                postgres::SimpleQueryMessage::CommandComplete(_) => {
                    last = std::mem::take(&mut current);
                }
                _ => {}
            }
        }
        Ok(last)
    }
}

/// Reads the settings; the connection is made at the first lookup.
pub(crate) fn open(cf: &Cf) -> Result<(Arc<Templates>, Worker), String> {
    let user = cf.string("user", "", 0)?;
    let password = cf.string("password", "", 0)?;
    let dbname = cf.string("dbname", "", 1)?;
    let retry = cf.int("retry_interval", 60, 1)?;
    let idle = cf.int("idle_interval", 60, 1)?;
    let query = match (cf.get("query"), cf.get("select_function")) {
        (Some(q), _) => q.to_owned(),
        (None, Some(f)) => format!("SELECT {f}('%s')"),
        (None, None) => cf.legacy_query()?,
    };
    let t = Arc::new(Templates::parse("pgsql", cf, query)?);
    let hosts = hosts::parse_list(&cf.string("hosts", "", 0)?, parse_host)?;
    let worker = Worker::new(
        Pg {
            user,
            password,
            dbname,
        },
        hosts,
        Arc::clone(&t),
        Duration::from_secs(retry.unsigned_abs().into()),
        Duration::from_secs(idle.unsigned_abs().into()),
    );
    Ok((t, worker))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_follows_standard_conforming_strings() {
        let mut out = String::new();
        escape(r"o'brien\x", true, &mut out);
        assert_eq!(out, r"o''brien\x");
        out.clear();
        escape(r"o'brien\x", false, &mut out);
        assert_eq!(out, r"o''brien\\x");
        out.clear();
        escape("a\0'b", true, &mut out);
        assert_eq!(out, "a");
    }

    #[test]
    fn hosts_are_read_as_postfix_reads_them() {
        let inet = |h: &str, p: Option<u16>| Endpoint::Inet {
            host: h.into(),
            port: p,
        };
        assert_eq!(parse_host("db.example").unwrap(), inet("db.example", None));
        assert_eq!(
            parse_host("inet:127.0.0.1:5433").unwrap(),
            inet("127.0.0.1", Some(5433))
        );
        assert_eq!(
            parse_host("10.0.0.1:5434").unwrap(),
            inet("10.0.0.1", Some(5434))
        );
        assert_eq!(
            parse_host("unix:/run/pg").unwrap(),
            Endpoint::Unix(Some("/run/pg".into()))
        );
        assert_eq!(
            parse_host("/run/pg").unwrap(),
            Endpoint::Unix(Some("/run/pg".into()))
        );
        assert_eq!(parse_host("unix:").unwrap(), Endpoint::Unix(None));
        assert_eq!(
            parse_host("postgresql://u@h/db").unwrap(),
            Endpoint::Uri("postgresql://u@h/db".into())
        );
        assert!(parse_host("h:port").is_err());
    }

    fn cf(text: &str) -> (tempfile::TempDir, Cf) {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("pgsql.cf");
        std::fs::write(&p, text).unwrap();
        let cf = Cf::read(&p.display().to_string()).unwrap();
        (tmp, cf)
    }

    #[test]
    fn settings_are_checked_when_the_table_is_opened() {
        let (_t, c) = cf("hosts = 127.0.0.1\nquery = SELECT 1 WHERE '%s' = 'x'\n");
        let e = open(&c).err().unwrap();
        assert!(e.ends_with("bad string length 0 < 1: dbname = "), "{e}");
        let (_t, c) = cf("dbname = mail\nselect_function = lookup\n");
        let (t, _) = open(&c).unwrap();
        assert_eq!(t.query, "SELECT lookup('%s')");
        let (_t, c) = cf("dbname = mail\ntable = t\nselect_field = a\nwhere_field = b\nadditional_conditions = AND c = 1\n");
        let (t, _) = open(&c).unwrap();
        assert_eq!(t.query, "SELECT a FROM t WHERE b='%s' AND c = 1");
        let (_t, c) = cf("dbname = mail\nquery = SELECT 1\nretry_interval = 0\n");
        assert!(open(&c)
            .err()
            .unwrap()
            .ends_with("invalid retry_interval parameter value 0 < 1"));
        let (_t, c) = cf("dbname = mail\nquery = SELECT %z\n");
        assert!(open(&c).err().unwrap().contains("Invalid query template"));
    }

    /// A lookup in a server that does not answer is a temporary error,
    /// also when made inside a current-thread tokio runtime (the client's
    /// own runtime runs on the table's thread, never nested in the
    /// caller's).
    #[test]
    fn a_lookup_inside_a_tokio_runtime_fails_temporarily_without_panicking() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (_t, c) = cf(&format!(
            "hosts = inet:127.0.0.1:{port}\ndbname = mail\nuser = postfix\nquery = SELECT goto FROM alias WHERE address='%s'\n"
        ));
        let name = c.name.clone();
        let table = super::super::Table::open("pgsql", &name).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let got = rt.block_on(async { table.lookup("joe@example.com") });
        match got {
            Err(crate::Error::Temporary { table, reason }) => {
                assert_eq!(table, format!("pgsql:{name}"));
                assert!(
                    reason.starts_with(&format!("connect to pgsql server inet:127.0.0.1:{port}: ")),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
