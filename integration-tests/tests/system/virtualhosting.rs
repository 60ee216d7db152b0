//! Virtual hosting as Postfix's VIRTUAL_README and Dovecot's LMTP and SQL
//! guides set it up (written from scratch here): two hosted domains whose
//! users, aliases and catch-all live in a real PostgreSQL, and then in a
//! real MariaDB (Postfix Admin's tables), queried by postfix-rs's `pgsql:`
//! and `mysql:` tables and by Dovecot's SQL passdb/userdb; mail goes by LMTP into a real Dovecot, and each message
//! is fetched back over IMAP with Python's imaplib. With the database
//! stopped, clients are told to try later and queued mail waits; once it is
//! back, everything is delivered, nothing lost.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testkit::sql::{Maria, Pg};
use testkit::{free_port, tls, wait_for, Instance, MailInstance, Smtp};

/// Postfix Admin's tables (the columns the lookups use), in SQL both
/// servers take.
const SCHEMA: &str = "CREATE TABLE domain (domain varchar(255) PRIMARY KEY,
    active boolean NOT NULL DEFAULT true);
CREATE TABLE mailbox (username varchar(255) PRIMARY KEY, password varchar(255) NOT NULL,
    maildir varchar(255) NOT NULL, domain varchar(255) NOT NULL,
    active boolean NOT NULL DEFAULT true);
CREATE TABLE alias (address varchar(255) PRIMARY KEY, goto text NOT NULL,
    domain varchar(255) NOT NULL, active boolean NOT NULL DEFAULT true);
INSERT INTO domain (domain) VALUES ('example.com'), ('example.net');
INSERT INTO domain (domain, active) VALUES ('disabled.example', false);
INSERT INTO mailbox (username, password, maildir, domain) VALUES
    ('alice@example.com', '{PLAIN}alice-pw', 'example.com/alice/', 'example.com'),
    ('bob@example.com', '{PLAIN}bob-pw', 'example.com/bob/', 'example.com'),
    ('carol@example.net', '{PLAIN}carol-pw', 'example.net/carol/', 'example.net');
INSERT INTO alias (address, goto, domain) VALUES
    ('alice@example.com', 'alice@example.com', 'example.com'),
    ('bob@example.com', 'bob@example.com', 'example.com'),
    ('carol@example.net', 'carol@example.net', 'example.net'),
    ('info@example.com', 'alice@example.com,bob@example.com', 'example.com'),
    ('@example.net', 'carol@example.net', 'example.net');";

/// A database server holding the tables.
trait Db {
    /// `pgsql` or `mysql`: Postfix's table type and Dovecot's driver.
    const KIND: &'static str;
    fn port(&self) -> u16;
    fn stop(&mut self);
    fn start_again(&mut self);
}

impl Db for Pg {
    const KIND: &'static str = "pgsql";
    fn port(&self) -> u16 {
        self.port
    }
    fn stop(&mut self) {
        Self::stop(self);
    }
    fn start_again(&mut self) {
        Self::start_again(self);
    }
}

impl Db for Maria {
    const KIND: &'static str = "mysql";
    fn port(&self) -> u16 {
        self.port
    }
    fn stop(&mut self) {
        Self::stop(self);
    }
    fn start_again(&mut self) {
        Self::start_again(self);
    }
}

fn postgresql() -> Pg {
    let pg = Pg::start();
    pg.psql("postgres", "CREATE DATABASE mail");
    pg.psql("mail", SCHEMA);
    pg.psql(
        "mail",
        "CREATE ROLE postfix LOGIN PASSWORD 'pf-secret'; \
         GRANT SELECT ON domain, mailbox, alias TO postfix;",
    );
    pg
}

fn mariadb() -> Maria {
    let m = Maria::start();
    m.sql(&format!("CREATE DATABASE mail; USE mail; {SCHEMA}"));
    m.sql(
        "CREATE USER 'postfix'@'127.0.0.1' IDENTIFIED BY 'pf-secret'; \
         GRANT SELECT ON mail.* TO 'postfix'@'127.0.0.1';",
    );
    m
}

/// The three tables Postfix Admin's documentation gives Postfix, of type
/// `kind` (`pgsql`, `mysql`).
fn table_files(etc: &Path, kind: &str, port: u16) -> String {
    // A server that failed is skipped for retry_interval (60s by default,
    // as in Postfix): short here, so the test need not wait a minute.
    let common = format!(
        "hosts = 127.0.0.1:{port}\nuser = postfix\npassword = pf-secret\ndbname = mail\nretry_interval = 1\n"
    );
    for (name, query) in [
        (
            "sql-domains.cf",
            "SELECT domain FROM domain WHERE domain = '%s' AND active",
        ),
        (
            "sql-mailboxes.cf",
            "SELECT maildir FROM mailbox WHERE username = '%s' AND active",
        ),
        (
            "sql-aliases.cf",
            "SELECT goto FROM alias WHERE address = '%s' AND active",
        ),
    ] {
        std::fs::write(etc.join(name), format!("{common}query = {query}\n")).unwrap();
    }
    format!(
        "virtual_mailbox_domains = {kind}:$config_directory/sql-domains.cf\n\
         virtual_mailbox_maps = {kind}:$config_directory/sql-mailboxes.cf\n\
         virtual_alias_maps = {kind}:$config_directory/sql-aliases.cf\n\
         virtual_transport = lmtp:unix:private/dovecot-lmtp\n"
    )
}

/// Dovecot with LMTP (a socket in the instance's queue directory) and IMAP
/// (a loopback port), users from the same database.
struct Dovecot {
    child: Option<Child>,
    dir: PathBuf,
    imap: u16,
}

impl Dovecot {
    fn start(m: &Instance, kind: &str, db_port: u16) -> Self {
        let dir = m.root.path().join("dovecot");
        let mail = dir.join("mail");
        std::fs::create_dir_all(dir.join("run")).unwrap();
        std::fs::create_dir_all(&mail).unwrap();
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        nix::unistd::chown(&mail, Some(nobody.uid), Some(nobody.gid)).unwrap();
        let sql = dir.join("dovecot-sql.conf.ext");
        std::fs::write(
            &sql,
            format!(
                "driver = {kind}\nconnect = host=127.0.0.1 port={port} dbname=mail user=postfix password=pf-secret\n\
                 default_pass_scheme = PLAIN\n\
                 password_query = SELECT username AS user, password FROM mailbox WHERE username = '%u' AND active\n\
                 user_query = SELECT CONCAT('{mail}/', maildir) AS home, {uid} AS uid, {gid} AS gid FROM mailbox WHERE username = '%u' AND active\n\
                 iterate_query = SELECT username AS user FROM mailbox\n",
                port = db_port,
                mail = mail.display(),
                uid = nobody.uid,
                gid = nobody.gid,
            ),
        )
        .unwrap();
        let imap = free_port();
        let conf = dir.join("dovecot.conf");
        std::fs::write(
            &conf,
            format!(
                "base_dir = {run}\nstate_dir = {run}\nlog_path = {log}\n\
                 instance_name = pfx-vhost-{imap}\n\
                 protocols = lmtp imap\nlisten = 127.0.0.1\nssl = no\n\
                 disable_plaintext_auth = no\nauth_mechanisms = plain login\n\
                 mail_location = maildir:~/Maildir\n\
                 passdb {{\n  driver = sql\n  args = {sql}\n}}\n\
                 userdb {{\n  driver = sql\n  args = {sql}\n}}\n\
                 service imap-login {{\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {imap}\n  }}\n  \
                 inet_listener imaps {{\n    port = 0\n  }}\n}}\n\
                 service lmtp {{\n  unix_listener {socket} {{\n    mode = 0600\n    user = postfix\n  }}\n}}\n\
                 service anvil {{\n  chroot =\n}}\nservice imap-login {{\n  chroot =\n}}\n",
                run = dir.join("run").display(),
                log = dir.join("dovecot.log").display(),
                sql = sql.display(),
                socket = m.queue.join("private/dovecot-lmtp").display(),
            ),
        )
        .unwrap();
        let child = Command::new("dovecot")
            .arg("-F")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dovecot");
        let d = Self {
            child: Some(child),
            dir,
            imap,
        };
        let up = wait_for(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", imap)).is_ok()
                && m.queue.join("private/dovecot-lmtp").exists()
        });
        assert!(up, "dovecot did not start:\n{}", d.log_text());
        d
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default()
    }

    /// The subjects of the messages in a user's INBOX, fetched over IMAP;
    /// `Err` when Dovecot could not log the user in (its database away).
    fn subjects(&self, user: &str, password: &str) -> Result<Vec<String>, String> {
        let script = format!(
            "import imaplib\n\
             m = imaplib.IMAP4('127.0.0.1', {port})\n\
             m.login('{user}', '{password}')\n\
             m.select('INBOX', readonly=True)\n\
             typ, data = m.search(None, 'ALL')\n\
             for n in data[0].split():\n\
             \x20   typ, d = m.fetch(n, '(BODY.PEEK[HEADER.FIELDS (SUBJECT)])')\n\
             \x20   print(d[0][1].decode().strip())\n\
             m.logout()\n",
            port = self.imap
        );
        let out = Command::new("python3")
            .arg("-c")
            .arg(&script)
            .output()
            .expect("python3");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        v.sort();
        Ok(v)
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = child.wait();
        }
    }
}

fn send(m: &MailInstance, to: &[&str], subject: &str) -> String {
    send_from(m, "sender@client.example", to, subject)
}

fn send_from(m: &MailInstance, from: &str, to: &[&str], subject: &str) -> String {
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    c.queued(
        from,
        to,
        format!("Subject: {subject}\r\n\r\nbody\r\n").as_bytes(),
    )
}

fn possible(kind: &str, server: &str) -> bool {
    let ok = nix::unistd::Uid::effective().is_root()
        && tls::have("dovecot")
        && Path::new("/usr/lib/dovecot/lmtp").exists()
        && Path::new(&format!(
            "/usr/lib/dovecot/modules/auth/libdriver_{kind}.so"
        ))
        .exists()
        && Path::new(server).exists();
    if !ok {
        eprintln!("skipped: needs root, {server} and Dovecot with LMTP, IMAP and {kind}");
    }
    ok
}

#[test]
fn postgresql_users_get_mail_by_lmtp_into_dovecot_and_read_it_over_imap() {
    if possible("pgsql", "/usr/lib/postgresql/15/bin/postgres") {
        hosting(postgresql());
    }
}

#[test]
fn mariadb_users_get_mail_by_lmtp_into_dovecot_and_read_it_over_imap() {
    if possible("mysql", testkit::sql::MARIADBD) {
        hosting(mariadb());
    }
}

fn hosting<D: Db>(mut db: D) {
    // Mail from outage@ is held on arrival, to be released during the outage.
    let m = Instance::mail(
        "smtpd_sender_restrictions = check_sender_access inline:{outage@client.example=HOLD}\n",
    );
    let extra = table_files(&m.etc, D::KIND, db.port());
    m.add_main_cf(&extra);
    let mut master = std::fs::read_to_string(m.etc.join("master.cf")).unwrap();
    master.push_str("lmtp unix - - n - - lmtp\n");
    m.write_master_cf(&master);
    m.start();
    let dovecot = Dovecot::start(&m, D::KIND, db.port());

    // Users, an alias to two of them, the catch-all; strangers refused.
    send(&m, &["alice@example.com"], "direct");
    send(&m, &["info@example.com"], "via alias");
    send(&m, &["carol@example.net"], "to carol");
    send(&m, &["whoever@example.net"], "catch-all");
    // From outside mynetworks: only our domains' known users are taken.
    let (mut c, _) = Smtp::connect_from("127.0.0.2", m.port);
    c.cmd("EHLO client.example");
    c.cmd("MAIL FROM:<sender@client.example>");
    assert_eq!(
        c.cmd("RCPT TO:<nobody@example.com>"),
        "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in virtual mailbox table"
    );
    assert_eq!(
        c.cmd("RCPT TO:<x@disabled.example>"),
        "454 4.7.1 <x@disabled.example>: Relay access denied"
    );
    c.cmd("QUIT");
    let inbox = |user: &str, pw: &str, n: usize| {
        let mut got = Ok(Vec::new());
        let arrived = wait_for(Duration::from_secs(30), || {
            got = dovecot.subjects(user, pw);
            got.as_ref().is_ok_and(|g| g.len() >= n)
        });
        assert!(
            arrived,
            "{user}: {got:?}\npostfix-rs:\n{}\ndovecot:\n{}",
            m.log_text(),
            dovecot.log_text()
        );
        got.unwrap()
    };
    assert_eq!(
        inbox("alice@example.com", "alice-pw", 2),
        ["Subject: direct", "Subject: via alias"]
    );
    assert_eq!(
        inbox("bob@example.com", "bob-pw", 1),
        ["Subject: via alias"]
    );
    assert_eq!(
        inbox("carol@example.net", "carol-pw", 2),
        ["Subject: catch-all", "Subject: to carol"]
    );
    let log = m.log_text();
    assert!(
        log.contains("to=<bob@example.com>, orig_to=<info@example.com>, relay=mail.ywnds.com[private/dovecot-lmtp]"),
        "{log}"
    );

    // The database goes away: clients are told to come back, and mail
    // already queued waits.
    let held = send_from(
        &m,
        "outage@client.example",
        &["bob@example.com"],
        "during the outage",
    );
    assert!(wait_for(Duration::from_secs(10), || m
        .queue_files("hold")
        .contains(&held)));
    db.stop();
    let (mut c, _) = Smtp::connect_from("127.0.0.2", m.port);
    c.cmd("EHLO client.example");
    c.cmd("MAIL FROM:<sender@client.example>");
    assert_eq!(
        c.cmd("RCPT TO:<bob@example.com>"),
        "451 4.3.0 <bob@example.com>: Temporary lookup failure"
    );
    c.cmd("QUIT");
    let out = m.run("postsuper", &["-H", &held]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        m.wait_log(
            &format!("{held}: to=<bob@example.com>, relay=none, delay="),
            Duration::from_secs(20)
        ),
        "{}",
        m.log_text()
    );
    assert!(m
        .log_text()
        .contains("status=deferred (address resolver failure)"));
    db.start_again();
    m.run("postqueue", &["-f"]);
    assert_eq!(
        inbox("bob@example.com", "bob-pw", 2),
        ["Subject: during the outage", "Subject: via alias"]
    );
    assert!(wait_for(Duration::from_secs(20), || m
        .log_text()
        .contains(&format!("{held}: removed"))));
}
