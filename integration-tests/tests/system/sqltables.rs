//! `pgsql:` and `mysql:` tables against real servers, side by side with
//! Debian's Postfix: a throw-away PostgreSQL 15 and MariaDB (each in a
//! temporary directory, on a free loopback port and a socket inside the
//! directory, run as the `postgres` / `mysql` user when the tests run as
//! root) hold a virtual-hosting schema as Postfix Admin has it (domain,
//! mailbox, alias), and `postmap -q` of postfix-rs and of Debian
//! (postfix-pgsql, postfix-mysql) must answer alike: found, not found,
//! `%u`/`%d`/`%[1-9]` queries, `result_format`, the `domain` list, a key
//! with a quote and a backslash, several rows, `expansion_limit` exceeded,
//! and the server stopped (a query error for both, never "not found").
//! Each server is stopped by a guard, also when a check fails.

use std::path::Path;
use std::process::{Command, Output};

use testkit::bin;
use testkit::sql::{Maria, Pg};

/// The Postfix Admin tables (the columns lookups use) and their rows;
/// `{bs}` is how the server's SQL writes one backslash in a string.
const SCHEMA: &[&str] = &[
    "CREATE TABLE domain (domain VARCHAR(255) PRIMARY KEY, transport VARCHAR(255), active BOOLEAN NOT NULL DEFAULT TRUE)",
    "CREATE TABLE mailbox (username VARCHAR(255) PRIMARY KEY, maildir VARCHAR(255), domain VARCHAR(255), active BOOLEAN NOT NULL DEFAULT TRUE)",
    "CREATE TABLE alias (address VARCHAR(255), goto TEXT, domain VARCHAR(255), active BOOLEAN NOT NULL DEFAULT TRUE)",
    "INSERT INTO domain (domain, transport, active) VALUES ('example.com', 'virtual', TRUE), ('example.org', 'lmtp:unix:private/dovecot-lmtp', TRUE), ('inactive.example', 'virtual', FALSE)",
    "INSERT INTO mailbox (username, maildir, domain) VALUES ('joe@example.com', 'example.com/joe/', 'example.com'), ('ann@example.org', 'example.org/ann/', 'example.org')",
    "INSERT INTO mailbox (username, maildir, domain) VALUES ('o''ne{bs}il@example.com', 'example.com/oneil/', 'example.com'), ('o''ne{bs}{bs}il@example.com', 'example.com/doubled/', 'example.com')",
    "INSERT INTO alias (address, goto, domain) VALUES ('postmaster@example.com', 'joe@example.com', 'example.com'), ('list@example.com', 'ann@example.org', 'example.com'), ('list@example.com', 'bob@example.net', 'example.com'), ('list@example.com', 'joe@example.com', 'example.com'), ('empty@example.com', NULL, 'example.com')",
];

/// The `.cf` files, each `(name, settings)`; `{conn}` is replaced by the
/// connection settings.
fn cf_files() -> Vec<(&'static str, String)> {
    vec![
        (
            "mailbox",
            "query = SELECT maildir FROM mailbox WHERE username='%s' AND active = TRUE\n".into(),
        ),
        (
            "domains",
            "query = SELECT domain FROM domain WHERE domain='%d' AND active = TRUE\n".into(),
        ),
        (
            "parts",
            "query = SELECT maildir FROM mailbox WHERE username='%u@%2.%1'\n".into(),
        ),
        (
            "aliases",
            "query = SELECT goto FROM alias WHERE address='%s' AND active = TRUE ORDER BY goto\n"
                .into(),
        ),
        (
            "format",
            "query = SELECT goto FROM alias WHERE address='%s' ORDER BY goto\nresult_format = %u+via-%D@%d\n"
                .into(),
        ),
        (
            "transport",
            "query = SELECT transport FROM domain WHERE domain='%s'\nresult_format = %s:[%S]\n"
                .into(),
        ),
        (
            "filtered",
            "query = SELECT maildir FROM mailbox WHERE username='%s'\ndomain = example.org, !example.com\n"
                .into(),
        ),
        (
            "limited",
            "query = SELECT goto FROM alias WHERE address='%s' ORDER BY goto\nexpansion_limit = 2\n"
                .into(),
        ),
        (
            "legacy",
            "table = mailbox\nselect_field = maildir\nwhere_field = username\nadditional_conditions = AND active = TRUE\n"
                .into(),
        ),
    ]
}

/// `(table, key, expected stdout or None for not found)`.
const CASES: &[(&str, &str, Option<&str>)] = &[
    ("mailbox", "joe@example.com", Some("example.com/joe/")),
    ("mailbox", "JOE@Example.COM", Some("example.com/joe/")),
    ("mailbox", "nobody@example.com", None),
    // A quote and a backslash in the key are data, not SQL.
    ("mailbox", "o'ne\\il@example.com", Some("example.com/oneil/")),
    ("mailbox", "o'ne\\\\il@example.com", Some("example.com/doubled/")),
    ("mailbox", "x' OR '1'='1", None),
    ("domains", "anyone@example.com", Some("example.com")),
    ("domains", "anyone@inactive.example", None),
    ("domains", "example.com", None),
    ("parts", "joe@mail.example.com", Some("example.com/joe/")),
    ("parts", "joe@com", None),
    ("parts", "@example.com", None),
    ("aliases", "list@example.com", Some("ann@example.org,bob@example.net,joe@example.com")),
    ("aliases", "postmaster@example.com", Some("joe@example.com")),
    ("aliases", "empty@example.com", None),
    ("format", "list@example.com", Some("ann+via-example.com@example.org,bob+via-example.com@example.net,joe+via-example.com@example.com")),
    ("transport", "example.org", Some("lmtp:unix:private/dovecot-lmtp:[example.org]")),
    ("filtered", "ann@example.org", Some("example.org/ann/")),
    ("filtered", "joe@example.com", None),
    ("filtered", "example.org", None),
    ("legacy", "joe@example.com", Some("example.com/joe/")),
    ("limited", "postmaster@example.com", Some("joe@example.com")),
];

/// A throw-away configuration directory for both postmaps.
fn conf_dir(extra: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("main.cf"),
        format!("compatibility_level = 3.6\nmyhostname = mail.example.com\n{extra}"),
    )
    .unwrap();
    d
}

/// Runs `postmap -c conf -q key spec`.
fn postmap(program: &Path, conf: &Path, key: &str, spec: &str, env: &[(&str, String)]) -> Output {
    Command::new(program)
        .arg("-c")
        .arg(conf)
        .args(["-q", key, spec])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()))
}

fn text(o: &Output) -> (Option<i32>, String, String) {
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).trim_end().to_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Ours and Debian's give `expect` for `key` in `spec`.
fn same_answer(conf: &Path, spec: &str, key: &str, expect: Option<&str>, env: &[(&str, String)]) {
    let ours = text(&postmap(&bin("postmap"), conf, key, spec, env));
    let debian = text(&postmap(
        Path::new("/usr/sbin/postmap"),
        conf,
        key,
        spec,
        env,
    ));
    let want = match expect {
        Some(v) => (Some(0), v.to_owned()),
        None => (Some(1), String::new()),
    };
    assert_eq!(
        (debian.0, debian.1.clone()),
        want,
        "Debian's postmap -q '{key}' {spec}: {}",
        debian.2
    );
    assert_eq!(
        (ours.0, ours.1.clone()),
        want,
        "our postmap -q '{key}' {spec}: {}",
        ours.2
    );
    for (who, o) in [("Debian's", &debian), ("our", &ours)] {
        assert!(
            !o.2.contains("fatal"),
            "{who} postmap -q '{key}' {spec}: {}",
            o.2
        );
    }
}

/// Both fail with a query error (a temporary error for a daemon), with
/// `warning` logged first.
fn same_failure(conf: &Path, spec: &str, key: &str, warning: &str, env: &[(&str, String)]) {
    let ours = text(&postmap(&bin("postmap"), conf, key, spec, env));
    let debian = text(&postmap(
        Path::new("/usr/sbin/postmap"),
        conf,
        key,
        spec,
        env,
    ));
    assert_eq!(
        ours.0, debian.0,
        "exit codes: ours {ours:?}, Debian's {debian:?}"
    );
    assert_eq!(ours.1, "", "{ours:?}");
    assert_eq!(debian.1, "", "{debian:?}");
    eprintln!(
        "{spec} -q {key}:\n  Debian's: {}\n  ours: {}",
        debian.2.trim_end(),
        ours.2.trim_end()
    );
    let fatal = format!("postmap: fatal: table {spec}: query error");
    for (who, o) in [("Debian's", &debian), ("our", &ours)] {
        assert!(o.2.contains(&fatal), "{who} stderr: {}", o.2);
        assert!(
            o.2.contains(&format!("postmap: warning: {warning}")),
            "{who} stderr lacks \"{warning}\": {}",
            o.2
        );
    }
}

fn skip(what: &[&str]) -> bool {
    for p in what {
        if !Path::new(p).exists() {
            eprintln!("skipped: {p} is missing (scripts/setup installs it)");
            return true;
        }
    }
    false
}

#[test]
fn pgsql_tables_answer_as_debians_postfix() {
    if skip(&[
        "/usr/lib/postgresql/15/bin/postgres",
        "/usr/lib/postfix/postfix-pgsql.so",
        "/usr/sbin/postmap",
    ]) {
        return;
    }
    let mut pg = Pg::start();
    pg.psql("postgres", "CREATE ROLE postfix LOGIN PASSWORD 'pf pw''s'");
    pg.psql("postgres", "CREATE DATABASE mail OWNER postfix");
    for s in SCHEMA {
        pg.psql("mail", &s.replace("{bs}", "\\"));
    }
    pg.psql(
        "mail",
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO postfix",
    );
    // A function for the older select_function setting.
    pg.psql(
        "mail",
        "CREATE FUNCTION lookup_maildir(text) RETURNS SETOF text AS 'SELECT maildir FROM mailbox WHERE username = $1' LANGUAGE sql",
    );
    // Debian's postmap keeps only the environment main.cf imports: PGPORT
    // says which socket in the socket directory is the server's.
    let conf = conf_dir(&format!(
        "import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C PGPORT={}\n",
        pg.port
    ));
    let env = [("PGPORT", pg.port.to_string())];
    let tcp = format!(
        "hosts = inet:127.0.0.1:{}\nuser = postfix\npassword = pf pw's\ndbname = mail\n",
        pg.port
    );
    let socket = format!(
        "hosts = unix:{}\nuser = postfix\ndbname = mail\n",
        pg.sockets().display()
    );
    let mut files = cf_files();
    files.push(("function", "select_function = lookup_maildir\n".to_owned()));
    let mut specs = std::collections::HashMap::new();
    for (name, body) in &files {
        for (how, conn) in [("tcp", &tcp), ("socket", &socket)] {
            let p = conf.path().join(format!("pgsql-{name}-{how}.cf"));
            std::fs::write(&p, format!("{conn}{body}")).unwrap();
            specs.insert((*name, how), format!("pgsql:{}", p.display()));
        }
    }
    for (table, key, expect) in CASES {
        same_answer(conf.path(), &specs[&(*table, "tcp")], key, *expect, &env);
    }
    same_answer(
        conf.path(),
        &specs[&("mailbox", "socket")],
        "joe@example.com",
        Some("example.com/joe/"),
        &env,
    );
    same_answer(
        conf.path(),
        &specs[&("function", "tcp")],
        "ann@example.org",
        Some("example.org/ann/"),
        &env,
    );
    same_failure(
        conf.path(),
        &specs[&("limited", "tcp")],
        "list@example.com",
        "dict_pgsql_lookup: ",
        &env,
    );
    // SQL the server refuses: a query error, not "not found".
    let bad = conf.path().join("pgsql-bad.cf");
    std::fs::write(
        &bad,
        format!("{tcp}query = SELECT nothing FROM nowhere WHERE x='%s'\n"),
    )
    .unwrap();
    same_failure(
        conf.path(),
        &format!("pgsql:{}", bad.display()),
        "joe@example.com",
        "pgsql query failed: fatal error from host inet:127.0.0.1:",
        &env,
    );
    // A wrong password: the connection fails.
    let wrong = conf.path().join("pgsql-wrong.cf");
    std::fs::write(
        &wrong,
        tcp.replace("pf pw's", "wrong") + "query = SELECT 1 WHERE '%s' = ''\n",
    )
    .unwrap();
    same_failure(
        conf.path(),
        &format!("pgsql:{}", wrong.display()),
        "joe@example.com",
        "connect to pgsql server inet:127.0.0.1:",
        &env,
    );
    pg.stop();
    for how in ["tcp", "socket"] {
        same_failure(
            conf.path(),
            &specs[&("mailbox", how)],
            "joe@example.com",
            "connect to pgsql server ",
            &env,
        );
    }
}

#[test]
fn mysql_tables_answer_as_debians_postfix() {
    if skip(&[
        testkit::sql::MARIADBD,
        "/usr/bin/mariadb-install-db",
        "/usr/lib/postfix/postfix-mysql.so",
        "/usr/sbin/postmap",
    ]) {
        return;
    }
    let mut m = Maria::start();
    m.sql("CREATE DATABASE mail");
    for host in ["localhost", "127.0.0.1"] {
        m.sql(&format!(
            "CREATE USER 'postfix'@'{host}' IDENTIFIED BY 'pf pw''s'; GRANT SELECT, EXECUTE ON mail.* TO 'postfix'@'{host}'"
        ));
    }
    for s in SCHEMA {
        m.sql(&format!("USE mail; {}", s.replace("{bs}", "\\\\")));
    }
    m.sql("USE mail; CREATE PROCEDURE lookup_maildir(IN u VARCHAR(255)) READS SQL DATA SQL SECURITY INVOKER SELECT maildir FROM mailbox WHERE username = u");
    m.sql("USE mail; CREATE PROCEDURE no_result(IN u VARCHAR(255)) READS SQL DATA SQL SECURITY INVOKER SET @x = u");
    let conf = conf_dir("");
    // No option files: the test does not depend on the machine's my.cnf.
    let tcp = format!(
        "hosts = inet:127.0.0.1:{}\nuser = postfix\npassword = pf pw's\ndbname = mail\noption_group =\n",
        m.port
    );
    let socket = format!(
        "hosts = unix:{}\nuser = postfix\npassword = pf pw's\ndbname = mail\noption_group =\n",
        m.socket().display()
    );
    let mut files = cf_files();
    files.push((
        "procedure",
        "query = CALL lookup_maildir('%s')\n".to_owned(),
    ));
    files.push(("noresult", "query = CALL no_result('%s')\n".to_owned()));
    files.push((
        "noresult-ok",
        "query = CALL no_result('%s')\nrequire_result_set = no\n".to_owned(),
    ));
    let mut specs = std::collections::HashMap::new();
    for (name, body) in &files {
        for (how, conn) in [("tcp", &tcp), ("socket", &socket)] {
            let p = conf.path().join(format!("mysql-{name}-{how}.cf"));
            std::fs::write(&p, format!("{conn}{body}")).unwrap();
            specs.insert((*name, how), format!("mysql:{}", p.display()));
        }
    }
    for (table, key, expect) in CASES {
        same_answer(conf.path(), &specs[&(*table, "tcp")], key, *expect, &[]);
    }
    same_answer(
        conf.path(),
        &specs[&("mailbox", "socket")],
        "o'ne\\il@example.com",
        Some("example.com/oneil/"),
        &[],
    );
    same_answer(
        conf.path(),
        &specs[&("procedure", "tcp")],
        "ann@example.org",
        Some("example.org/ann/"),
        &[],
    );
    same_answer(
        conf.path(),
        &specs[&("noresult-ok", "tcp")],
        "ann@example.org",
        None,
        &[],
    );
    let name = specs[&("noresult", "tcp")].clone();
    same_failure(
        conf.path(),
        &name,
        "ann@example.org",
        &format!("{name}: query failed: query returned no result set"),
        &[],
    );
    same_failure(
        conf.path(),
        &specs[&("limited", "tcp")],
        "list@example.com",
        "dict_mysql_lookup: ",
        &[],
    );
    let bad = conf.path().join("mysql-bad.cf");
    std::fs::write(
        &bad,
        format!("{tcp}query = SELECT nothing FROM nowhere WHERE x='%s'\n"),
    )
    .unwrap();
    let name = format!("mysql:{}", bad.display());
    same_failure(
        conf.path(),
        &name,
        "joe@example.com",
        &format!("{name}: query failed: Table 'mail.nowhere' doesn't exist"),
        &[],
    );
    let wrong = conf.path().join("mysql-wrong.cf");
    std::fs::write(
        &wrong,
        tcp.replace("pf pw's", "wrong") + "query = SELECT 1 FROM DUAL WHERE '%s' = ''\n",
    )
    .unwrap();
    same_failure(
        conf.path(),
        &format!("mysql:{}", wrong.display()),
        "joe@example.com",
        "connect to mysql server inet:127.0.0.1:",
        &[],
    );
    m.stop();
    for how in ["tcp", "socket"] {
        same_failure(
            conf.path(),
            &specs[&("mailbox", how)],
            "joe@example.com",
            "connect to mysql server ",
            &[],
        );
    }
}
