//! `mysql:/etc/postfix/mysql.cf` (mysql_table(5)): the query runs on a
//! MySQL or MariaDB server, through the `mysql` crate (no TLS).
//!
//! Settings, besides those shared with the other SQL types ([`super`]):
//! - `hosts`: `unix:/path/to/socket`, `inet:host:port`, `host:port`,
//!   `host` (the port a number or a service name; default 3306);
//!   `localhost`, even with `inet:`, is the default socket, as with
//!   libmysqlclient. Default `localhost`.
//! - `user`, `password`, `dbname` (required).
//! - `option_file`, `option_group` (default `client`): unless both are
//!   empty, the option files are read as the client library reads them
//!   (the given file, or /etc/my.cnf, /etc/mysql/my.cnf and ~/.my.cnf,
//!   with `!include` and `!includedir`), groups `[client]`,
//!   `[client-server]`, `[client-mariadb]` and `option_group`. Their
//!   `socket`, `port`, `user` and `password` fill in what the `.cf` file
//!   leaves out; `default-character-set` may name a UTF-8 or Latin-1
//!   character set (the connection is utf8mb4, whose quoting is the same).
//!   An option file that sets TLS (`ssl-*`, `tls-*`), `protocol`, a `host`
//!   other than localhost or another character set makes the table
//!   unavailable, with that reason; other client options are ignored.
//! - `tls_cert_file`, `tls_key_file`, `tls_CAfile`, `tls_CApath`,
//!   `tls_ciphers`, `tls_verify_cert = yes`: TLS is not implemented, and
//!   any of them makes the table unavailable.
//! - `require_result_set` (default yes): a query (a stored procedure
//!   `CALL`) that returns no result set is an error, or with `no` not
//!   found. A second result set with rows is an error.
//! - `retry_interval` and `idle_interval` (seconds, default 60): Postfix
//!   3.9's names for what Postfix 3.7 fixes at 60.
//!
//! Every column of every row is a value; SQL NULL is skipped. The key is
//! quoted as mysql_real_escape_string does: with backslashes, or, when the
//! server's `sql_mode` has NO_BACKSLASH_ESCAPES, by doubling `'`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::hosts::{self, Client, Endpoint, Host, Worker};
use super::{Cf, Rows, Templates};

/// How long a connection may take to be made.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The server's socket when neither `hosts` nor an option file names one
/// (MariaDB's on Debian).
const DEFAULT_SOCKET: &str = "/run/mysqld/mysqld.sock";

/// What the option files contribute.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Options {
    socket: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    password: Option<String>,
}

/// What connecting needs.
#[derive(Debug, Clone)]
struct My {
    name: String,
    user: String,
    password: String,
    dbname: String,
    require_result_set: bool,
    options: Options,
}

/// mysql_real_escape_string: backslash escapes, or `'` doubled when the
/// server does not take backslashes as escapes.
fn escape(s: &str, no_backslash_escapes: bool, out: &mut String) {
    for c in s.chars() {
        if no_backslash_escapes {
            if c == '\'' {
                out.push_str("''");
            } else {
                out.push(c);
            }
            continue;
        }
        match c {
            '\0' => out.push_str("\\0"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '\x1a' => out.push_str("\\Z"),
            c => out.push(c),
        }
    }
}

/// One `hosts` entry, as Postfix's mysql host_init reads it.
fn parse_host(name: &str) -> Result<Endpoint, String> {
    let (unix, d) = match name.strip_prefix("unix:") {
        Some(rest) => (true, rest),
        None => (false, name.strip_prefix("inet:").unwrap_or(name)),
    };
    let (d, port) = match d.rsplit_once(':') {
        Some((d, p)) => (d, Some(hosts::port(p)?)),
        None => (d, None),
    };
    Ok(if d.eq_ignore_ascii_case("localhost") {
        Endpoint::Unix(None)
    } else if unix {
        Endpoint::Unix(Some(d.to_owned()))
    } else {
        Endpoint::Inet {
            host: d.to_owned(),
            port,
        }
    })
}

/// Reads option files into `out`: `groups` apply; the error is why the
/// table cannot honour them.
fn read_option_file(
    path: &Path,
    groups: &[&str],
    out: &mut Options,
    depth: usize,
) -> Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("option file {}: {}", path.display(), crate::strerror(&e)))?;
    let mut in_group = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(rest) = line.strip_prefix('!') {
            let (directive, arg) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            let arg = Path::new(arg.trim());
            if depth > 10 {
                return Err(format!(
                    "option file {}: includes nest too deep",
                    path.display()
                ));
            }
            match directive {
                "include" => read_option_file(arg, groups, out, depth + 1)?,
                "includedir" => {
                    let mut files: Vec<PathBuf> = std::fs::read_dir(arg)
                        .map(|d| {
                            d.filter_map(Result::ok)
                                .map(|e| e.path())
                                .filter(|p| p.extension().is_some_and(|x| x == "cnf" || x == "ini"))
                                .collect()
                        })
                        .unwrap_or_default();
                    files.sort();
                    for f in files {
                        read_option_file(&f, groups, out, depth + 1)?;
                    }
                }
                _ => {}
            }
            continue;
        }
        if let Some(g) = line.strip_prefix('[') {
            let g = g.trim_end_matches(']').trim();
            in_group = groups.iter().any(|x| x.eq_ignore_ascii_case(g));
            continue;
        }
        if !in_group {
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => (line, ""),
        };
        let key = key.replace('_', "-").to_ascii_lowercase();
        let key = key.strip_prefix("loose-").unwrap_or(&key);
        let value = match value.chars().next() {
            Some(q @ ('"' | '\'')) => value[1..].split(q).next().unwrap_or(""),
            _ => value.split(" #").next().unwrap_or("").trim(),
        };
        let refuse = |why: &str| {
            Err(format!(
                "option file {}: {key}: {why} is not implemented by postfix-rs",
                path.display()
            ))
        };
        match key {
            "socket" => out.socket = Some(value.to_owned()),
            "port" => {
                out.port =
                    Some(value.parse().map_err(|_| {
                        format!("option file {}: bad port: {value}", path.display())
                    })?)
            }
            "user" => out.user = Some(value.to_owned()),
            "password" => out.password = Some(value.to_owned()),
            "host" if value.eq_ignore_ascii_case("localhost") => {}
            "host" => return refuse("a default host"),
            "protocol" => return refuse("a protocol choice"),
            "default-character-set" => {
                let cs = value.to_ascii_lowercase();
                if !matches!(
                    cs.as_str(),
                    "utf8" | "utf8mb3" | "utf8mb4" | "latin1" | "ascii"
                ) {
                    return refuse("a character set other than UTF-8 or Latin-1");
                }
            }
            k if k.starts_with("ssl") || k.starts_with("tls") => {
                return refuse("TLS to MySQL servers")
            }
            _ => {}
        }
    }
    Ok(())
}

/// The option files' settings, as libmysqlclient reads them when
/// `option_file` or `option_group` is set.
fn read_options(option_file: Option<&str>, group: &str) -> Result<Options, String> {
    let mut out = Options::default();
    let mut groups = vec!["client", "client-server", "client-mariadb"];
    if !group.is_empty() {
        groups.push(group);
    }
    match option_file {
        Some(f) => read_option_file(Path::new(f), &groups, &mut out, 0)?,
        None => {
            let mut files = vec![
                PathBuf::from("/etc/my.cnf"),
                PathBuf::from("/etc/mysql/my.cnf"),
            ];
            for var in ["MARIADB_HOME", "MYSQL_HOME"] {
                if let Ok(h) = std::env::var(var) {
                    files.push(Path::new(&h).join("my.cnf"));
                }
            }
            if let Ok(h) = std::env::var("HOME") {
                files.push(Path::new(&h).join(".my.cnf"));
            }
            for f in files.iter().filter(|f| f.exists()) {
                read_option_file(f, &groups, &mut out, 0)?;
            }
        }
    }
    Ok(out)
}

/// A client error in words: the server's message as mysql_error shows it.
fn words(e: &mysql::Error) -> String {
    match e {
        mysql::Error::MySqlError(m) => m.message.clone(),
        mysql::Error::DriverError(d) => d.to_string(),
        mysql::Error::IoError(e) => e.to_string(),
        e => e.to_string(),
    }
}

impl Client for My {
    type Conn = mysql::Conn;
    const KIND: &'static str = "mysql";
    const LOOKUP: &'static str = "dict_mysql_lookup";

    fn connect(&self, host: &Host) -> Result<mysql::Conn, String> {
        let o = &self.options;
        let user = if self.user.is_empty() {
            o.user.clone().unwrap_or_default()
        } else {
            self.user.clone()
        };
        let password = if self.password.is_empty() {
            o.password.clone().unwrap_or_default()
        } else {
            self.password.clone()
        };
        let mut opts = mysql::OptsBuilder::new()
            .prefer_socket(false)
            .user(Some(user))
            .pass((!password.is_empty()).then_some(password))
            .db_name(Some(self.dbname.clone()))
            .tcp_connect_timeout(Some(CONNECT_TIMEOUT));
        opts = match &host.endpoint {
            Endpoint::Unix(path) => opts.socket(Some(
                path.clone()
                    .or_else(|| o.socket.clone())
                    .unwrap_or_else(|| DEFAULT_SOCKET.to_owned()),
            )),
            Endpoint::Inet { host, port } => opts
                .ip_or_hostname(Some(host.clone()))
                .tcp_port(port.or(o.port).unwrap_or(3306)),
            Endpoint::Uri(u) => return Err(format!("unsupported host: {u}")),
        };
        mysql::Conn::new(opts).map_err(|e| words(&e))
    }

    fn quote(conn: &mysql::Conn, s: &str, out: &mut String) {
        escape(s, conn.no_backslash_escape(), out);
    }

    fn query(&self, conn: &mut mysql::Conn, _: &Host, sql: &str) -> Result<Rows, String> {
        use mysql::prelude::Queryable;
        let failed = |what: String| format!("mysql:{}: query failed{what}", self.name);
        let mut result = conn
            .query_iter(sql)
            .map_err(|e| failed(format!(": {}", words(&e))))?;
        let mut first: Option<Rows> = None;
        let mut error = None;
        while let Some(set) = result.iter() {
            let has_columns = !set.columns().as_ref().is_empty();
            let mut rows = Rows::new();
            for row in set {
                match row {
                    Ok(row) => rows.push(
                        row.unwrap()
                            .into_iter()
                            .map(|v| match v {
                                mysql::Value::NULL => None,
                                mysql::Value::Bytes(b) => {
                                    Some(String::from_utf8_lossy(&b).into_owned())
                                }
                                v => Some(v.as_sql(true)),
                            })
                            .collect(),
                    ),
                    Err(e) => {
                        error.get_or_insert_with(|| {
                            failed(format!(" (mysql_next_result): {}", words(&e)))
                        });
                        break;
                    }
                }
            }
            if error.is_some() {
                break;
            }
            if has_columns {
                if first.is_none() {
                    first = Some(rows);
                } else {
                    error.get_or_insert_with(|| {
                        failed(": multiple result sets returning data are not supported".into())
                    });
                }
            }
        }
        drop(result);
        if let Some(e) = error {
            return Err(e);
        }
        match first {
            Some(rows) => Ok(rows),
            None if self.require_result_set => Err(failed(
                ": query returned no result set(require_result_set = yes)".into(),
            )),
            None => Ok(Rows::new()),
        }
    }
}

/// Reads the settings (and the option files); the connection is made at
/// the first lookup.
pub(crate) fn open(cf: &Cf) -> Result<(Arc<Templates>, Worker), String> {
    let user = cf.string("user", "", 0)?;
    let password = cf.string("password", "", 0)?;
    let dbname = cf.string("dbname", "", 1)?;
    let retry = cf.int("retry_interval", 60, 1)?;
    let idle = cf.int("idle_interval", 60, 1)?;
    for k in [
        "tls_key_file",
        "tls_cert_file",
        "tls_CAfile",
        "tls_CApath",
        "tls_ciphers",
    ] {
        if cf.get(k).is_some() {
            return Err(format!(
                "{}: {k}: TLS to MySQL servers is not implemented by postfix-rs",
                cf.name
            ));
        }
    }
    if cf.bool("tls_verify_cert")? == Some(true) {
        return Err(format!(
            "{}: tls_verify_cert: TLS to MySQL servers is not implemented by postfix-rs",
            cf.name
        ));
    }
    let require_result_set = cf.bool("require_result_set")?.unwrap_or(true);
    let option_file = cf.get("option_file");
    let option_group = cf.string("option_group", "client", 0)?;
    let options = if option_file.is_some() || !option_group.is_empty() {
        read_options(option_file, &option_group).map_err(|e| format!("{}: {e}", cf.name))?
    } else {
        Options::default()
    };
    let query = match cf.get("query") {
        Some(q) => q.to_owned(),
        None => cf.legacy_query()?,
    };
    let t = Arc::new(Templates::parse("mysql", cf, query)?);
    let hosts = hosts::parse_list(&cf.string("hosts", "", 0)?, parse_host)
        .map_err(|e| format!("{}: {e}", cf.name))?;
    let worker = Worker::new(
        My {
            name: cf.name.clone(),
            user,
            password,
            dbname,
            require_result_set,
            options,
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
    fn escaping_is_mysql_real_escape_strings() {
        let mut out = String::new();
        escape("o'b\\r\"\n\r\0\x1az", false, &mut out);
        assert_eq!(out, "o\\'b\\\\r\\\"\\n\\r\\0\\Zz");
        out.clear();
        escape("o'b\\r", true, &mut out);
        assert_eq!(out, "o''b\\r");
    }

    #[test]
    fn hosts_are_read_as_postfix_reads_them() {
        let inet = |h: &str, p: Option<u16>| Endpoint::Inet {
            host: h.into(),
            port: p,
        };
        assert_eq!(parse_host("db").unwrap(), inet("db", None));
        assert_eq!(
            parse_host("inet:127.0.0.1:3307").unwrap(),
            inet("127.0.0.1", Some(3307))
        );
        assert_eq!(parse_host("db:3308").unwrap(), inet("db", Some(3308)));
        assert_eq!(
            parse_host("unix:/run/mysqld/mysqld.sock").unwrap(),
            Endpoint::Unix(Some("/run/mysqld/mysqld.sock".into()))
        );
        // localhost is the default socket, even with inet:.
        assert_eq!(parse_host("localhost").unwrap(), Endpoint::Unix(None));
        assert_eq!(
            parse_host("inet:LocalHost:3306").unwrap(),
            Endpoint::Unix(None)
        );
        assert!(parse_host("db:no-such-service")
            .unwrap_err()
            .contains("unknown service"));
    }

    fn cf(dir: &Path, text: &str) -> Cf {
        let p = dir.join("mysql.cf");
        std::fs::write(&p, text).unwrap();
        Cf::read(&p.display().to_string()).unwrap()
    }

    #[test]
    fn option_files_fill_in_and_refuse_what_cannot_be_honoured() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::create_dir(d.join("conf.d")).unwrap();
        std::fs::write(
            d.join("my.cnf"),
            format!(
                "[client-server]\nsocket = /run/x.sock\n[mysqld]\nport = 1\n[postfix]\nport=3310\nloose_user = \"pf\"\n!includedir {}\n",
                d.join("conf.d").display()
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("conf.d/a.cnf"),
            "[client]\npassword = 'se cret' # comment\ndefault-character-set = utf8mb4\ncompress\n",
        )
        .unwrap();
        let o = read_options(Some(&d.join("my.cnf").display().to_string()), "postfix").unwrap();
        assert_eq!(
            o,
            Options {
                socket: Some("/run/x.sock".into()),
                port: Some(3310),
                user: Some("pf".into()),
                password: Some("se cret".into()),
            }
        );
        std::fs::write(d.join("conf.d/b.cnf"), "[client]\nssl-ca = /x\n").unwrap();
        let e = read_options(Some(&d.join("my.cnf").display().to_string()), "").unwrap_err();
        assert!(
            e.contains("ssl-ca: TLS to MySQL servers is not implemented"),
            "{e}"
        );
        let e = read_options(Some("/nonexistent/my.cnf"), "").unwrap_err();
        assert!(e.contains("No such file or directory"), "{e}");
    }

    #[test]
    fn tls_settings_make_the_table_unavailable() {
        let tmp = tempfile::tempdir().unwrap();
        let c = cf(
            tmp.path(),
            "dbname = mail\nquery = SELECT 1\noption_group =\ntls_CAfile = /etc/ssl/ca.pem\n",
        );
        let e = open(&c).err().unwrap();
        assert!(
            e.ends_with("tls_CAfile: TLS to MySQL servers is not implemented by postfix-rs"),
            "{e}"
        );
        let c = cf(
            tmp.path(),
            "dbname = mail\nquery = SELECT 1\noption_group =\ntls_verify_cert = no\nrequire_result_set = maybe\n",
        );
        assert!(open(&c)
            .err()
            .unwrap()
            .contains("bad boolean configuration: require_result_set = maybe"));
        let c = cf(
            tmp.path(),
            "dbname = mail\nquery = SELECT 1\noption_group =\nhosts = a:3306, unix:/s\n",
        );
        assert!(open(&c).is_ok());
    }

    #[test]
    fn a_server_that_does_not_answer_is_a_temporary_error() {
        let tmp = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = cf(
            tmp.path(),
            &format!("hosts = 127.0.0.1:{port}\ndbname = mail\noption_group =\nquery = SELECT goto FROM alias WHERE address='%s'\n"),
        );
        let t = super::super::Table::open("mysql", &c.name).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        match rt.block_on(async { t.lookup("joe@example.com") }) {
            Err(crate::Error::Temporary { reason, .. }) => {
                assert!(
                    reason.starts_with("connect to mysql server 127.0.0.1:"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
