//! lmtp(8) end to end against a real Dovecot LMTP server: mail routed by
//! transport_maps to `lmtp:unix:private/dovecot-lmtp` (a socket in the
//! queue directory) and to `lmtp:inet:127.0.0.1:PORT` lands in Dovecot's
//! Maildirs byte for byte, each recipient of a transaction gets its own
//! outcome (Dovecot's `550 5.1.1` bounces one, the other is delivered),
//! mail waits while Dovecot is down and goes once it is back, and the log
//! lines read as Postfix's lmtp writes them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testkit::{free_port, tls, wait_for, Instance, MailInstance, Smtp};

/// The socket the unix: next hop names, under the queue directory.
const SOCKET: &str = "private/dovecot-lmtp";

/// A Dovecot serving LMTP only, for one test: users from a passwd-file
/// (addresses as user names, one static uid), Maildirs under its own
/// directory, an inet listener on a free loopback port and a unix listener
/// in the instance's queue directory. Stopped when dropped.
struct Lmtpd {
    child: Option<Child>,
    dir: PathBuf,
    conf: PathBuf,
    socket: PathBuf,
    port: u16,
}

impl Lmtpd {
    /// Whether Dovecot's LMTP server can run here (as root, installed).
    fn possible() -> bool {
        nix::unistd::Uid::effective().is_root()
            && tls::have("dovecot")
            && Path::new("/usr/lib/dovecot/lmtp").exists()
    }

    /// Starts it for `users`, listening on `port` and in `m`'s queue directory.
    fn start(m: &Instance, users: &[&str], port: u16) -> Self {
        let dir = m.root.path().join("dovecot");
        let mail = dir.join("mail");
        std::fs::create_dir_all(dir.join("run")).unwrap();
        std::fs::create_dir_all(&mail).unwrap();
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        nix::unistd::chown(&mail, Some(nobody.uid), Some(nobody.gid)).unwrap();
        let users_file = dir.join("users");
        let text: String = users
            .iter()
            .map(|u| format!("{u}:{{PLAIN}}secret::::::\n"))
            .collect();
        std::fs::write(&users_file, text).unwrap();
        let socket = m.queue.join(SOCKET);
        let conf = dir.join("dovecot.conf");
        std::fs::write(
            &conf,
            format!(
                "base_dir = {run}\nstate_dir = {run}\nlog_path = {log}\n\
                 instance_name = pfx-lmtp-{port}\n\
                 protocols = lmtp\nlisten = 127.0.0.1\nssl = no\n\
                 mail_location = maildir:{mail}/%d/%n/Maildir\n\
                 passdb {{\n  driver = passwd-file\n  args = {users}\n}}\n\
                 userdb {{\n  driver = passwd-file\n  args = {users}\n  \
                 default_fields = uid={uid} gid={gid} home={mail}/%d/%n\n}}\n\
                 service lmtp {{\n  inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n  \
                 unix_listener {socket} {{\n    mode = 0600\n    user = postfix\n  }}\n}}\n\
                 service anvil {{\n  chroot =\n}}\n",
                run = dir.join("run").display(),
                log = dir.join("dovecot.log").display(),
                mail = mail.display(),
                users = users_file.display(),
                uid = nobody.uid,
                gid = nobody.gid,
                socket = socket.display(),
            ),
        )
        .unwrap();
        let mut d = Self {
            child: None,
            dir,
            conf,
            socket,
            port,
        };
        d.run();
        d
    }

    /// Starts Dovecot and waits until it answers on TCP (its master binds
    /// every listener before any is served; the socket is not tried, so
    /// that the only connections on it are the agent's).
    fn run(&mut self) {
        let child = Command::new("dovecot")
            .arg("-F")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dovecot");
        self.child = Some(child);
        let up = wait_for(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() && self.socket.exists()
        });
        assert!(up, "dovecot did not start:\n{}", self.log_text());
    }

    /// Stops Dovecot (SIGTERM) and waits for it.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = child.wait();
        }
        assert!(
            wait_for(Duration::from_secs(10), || std::net::TcpStream::connect((
                "127.0.0.1",
                self.port
            ))
            .is_err()),
            "dovecot still listens"
        );
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default()
    }

    /// The messages in a user's Maildir/new, once there are `n` (and no
    /// more a moment later).
    fn maildir(&self, user: &str, n: usize) -> Vec<Vec<u8>> {
        let (local, domain) = user.split_once('@').unwrap();
        let new = self
            .dir
            .join("mail")
            .join(domain)
            .join(local)
            .join("Maildir/new");
        let list = || -> Vec<PathBuf> {
            let mut v: Vec<PathBuf> = std::fs::read_dir(&new)
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            v.sort();
            v
        };
        assert!(
            wait_for(Duration::from_secs(20), || list().len() >= n),
            "{user} has {} of {n} messages; dovecot:\n{}",
            list().len(),
            self.log_text()
        );
        std::thread::sleep(Duration::from_millis(300));
        let files = list();
        assert_eq!(files.len(), n, "{user} got more than {n}");
        files.iter().map(|p| std::fs::read(p).unwrap()).collect()
    }
}

impl Drop for Lmtpd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An instance that relays lmtp.test to Dovecot over the socket and
/// tcp.test over TCP (relay domains, so smtpd takes any user and Dovecot
/// is the one to know them), with Dovecot serving the users; `None` when
/// Dovecot cannot run here.
fn setup(users: &[&str]) -> Option<(MailInstance, Lmtpd)> {
    if !Lmtpd::possible() {
        return None;
    }
    let m = Instance::mail(
        "relay_domains = lmtp.test, tcp.test\ntransport_maps = texthash:$config_directory/transport\n",
    );
    let port = free_port();
    std::fs::write(
        m.etc.join("transport"),
        format!("lmtp.test lmtp:unix:{SOCKET}\ntcp.test lmtp:inet:127.0.0.1:{port}\n"),
    )
    .unwrap();
    let mut master = std::fs::read_to_string(m.etc.join("master.cf")).unwrap();
    master.push_str("lmtp unix - - n - - lmtp\n");
    m.write_master_cf(&master);
    // master makes the queue's private/ directory, where Dovecot puts its socket.
    m.start();
    m.wait_children(&["lmtp"]);
    let dovecot = Lmtpd::start(&m, users, port);
    Some((m, dovecot))
}

fn send(m: &MailInstance, to: &[&str], data: &[u8]) -> String {
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    let id = c.queued("hadoop@ywnds.com", to, data);
    c.cmd("QUIT");
    id
}

/// What follows the headers Dovecot adds (Return-Path, Delivered-To and
/// its Received, with its continuation lines).
fn after_dovecot_headers(msg: &[u8]) -> &[u8] {
    let mut rest = msg;
    for name in ["Return-Path: ", "Delivered-To: ", "Received: "] {
        assert!(
            rest.starts_with(name.as_bytes()),
            "{name}: {}",
            String::from_utf8_lossy(msg)
        );
        loop {
            let i = rest.iter().position(|&c| c == b'\n').unwrap();
            rest = &rest[i + 1..];
            if !rest.starts_with(b"\t") && !rest.starts_with(b" ") {
                break;
            }
        }
    }
    rest
}

/// What follows local(8)'s three delivery headers.
fn after_local_headers(msg: &[u8]) -> &[u8] {
    let mut rest = msg;
    for _ in 0..3 {
        let i = rest.iter().position(|&c| c == b'\n').unwrap();
        rest = &rest[i + 1..];
    }
    rest
}

#[test]
fn unix_and_inet_deliveries_land_in_dovecot_byte_for_byte_with_postfixs_log_lines() {
    let Some((m, dovecot)) = setup(&["alice@lmtp.test", "carol@tcp.test"]) else {
        eprintln!("skipped: needs root and dovecot-lmtpd");
        return;
    };
    // The same message to both Dovecot hops and to a local user: local's
    // copy shows what the queue file holds.
    let body = b"From: hadoop@ywnds.com\r\nSubject: lmtp\r\nMessage-ID: <lmtp-1@ywnds.com>\r\n\r\n\
                 line one\r\n..leading dot\r\n\r\nFrom the top\r\nlast line";
    let id = send(
        &m,
        &["alice@lmtp.test", "carol@tcp.test", "openstack@ywnds.com"],
        body,
    );
    let local = m.wait_maildir("openstack", 1);
    let queued = after_local_headers(&local[0]);
    assert!(queued.ends_with(b"\n\nline one\n.leading dot\n\nFrom the top\nlast line\n"));
    for user in ["alice@lmtp.test", "carol@tcp.test"] {
        let got = dovecot.maildir(user, 1);
        let text = String::from_utf8_lossy(&got[0]).into_owned();
        assert!(
            text.starts_with(&format!(
                "Return-Path: <hadoop@ywnds.com>\nDelivered-To: {user}\nReceived: from mail.ywnds.com"
            )),
            "{text}"
        );
        assert_eq!(
            after_dovecot_headers(&got[0]),
            queued,
            "{user}: the queued message, byte for byte\n{text}"
        );
    }
    // Postfix's lmtp log lines: the socket is named after this host, with
    // no port; a TCP server as smtp names it.
    let line = m.log_line(&format!("{id}: to=<alice@lmtp.test>"));
    assert!(
        line.contains(" postfix/lmtp[")
            && line.contains(&format!(
                "]: {id}: to=<alice@lmtp.test>, relay=mail.ywnds.com[private/dovecot-lmtp], delay="
            ))
            && line.contains(", delays=")
            && line.contains(", dsn=2.0.0, status=sent (250 2.0.0 <alice@lmtp.test> ")
            && line.ends_with(" Saved)"),
        "{line}"
    );
    let line = m.log_line(&format!("{id}: to=<carol@tcp.test>"));
    assert!(
        line.contains(" postfix/lmtp[")
            && line.contains(&format!(
                ", relay=127.0.0.1[127.0.0.1]:{}, delay=",
                dovecot.port
            ))
            && line.contains(", dsn=2.0.0, status=sent (250 2.0.0 <carol@tcp.test> ")
            && line.ends_with(" Saved)"),
        "{line}"
    );
    // The next message to the socket reuses the connection (RSET, then
    // the transaction): Dovecot sees one connection for both.
    let id2 = send(&m, &["alice@lmtp.test"], b"Subject: second\r\n\r\nagain");
    dovecot.maildir("alice@lmtp.test", 2);
    let line = m.log_line(&format!("{id2}: to=<alice@lmtp.test>"));
    assert!(
        line.contains("relay=mail.ywnds.com[private/dovecot-lmtp], conn_use=2, delay=")
            && line.contains("status=sent (250 2.0.0 <alice@lmtp.test> "),
        "{line}\n{}",
        m.log_text()
    );
    assert_eq!(
        dovecot.log_text().matches("Connect from local").count(),
        1,
        "{}",
        dovecot.log_text()
    );
    assert!(!m.log_text().contains("warning"), "{}", m.log_text());
}

#[test]
fn a_recipient_dovecot_does_not_know_bounces_with_its_reply_and_the_other_is_delivered() {
    let Some((m, dovecot)) = setup(&["alice@lmtp.test"]) else {
        eprintln!("skipped: needs root and dovecot-lmtpd");
        return;
    };
    let id = send(
        &m,
        &["alice@lmtp.test", "nobody@lmtp.test"],
        b"Subject: two\r\n\r\nfor two",
    );
    dovecot.maildir("alice@lmtp.test", 1);
    let sent = m.log_line(&format!("{id}: to=<alice@lmtp.test>"));
    assert!(
        sent.contains("status=sent (250 2.0.0 <alice@lmtp.test> "),
        "{sent}"
    );
    let bounced = m.log_line(&format!("{id}: to=<nobody@lmtp.test>"));
    assert!(
        bounced.contains("relay=mail.ywnds.com[private/dovecot-lmtp], delay=")
            && bounced.ends_with(
                ", dsn=5.1.1, status=bounced (host mail.ywnds.com[private/dovecot-lmtp] said: \
             550 5.1.1 <nobody@lmtp.test> User doesn't exist: nobody@lmtp.test \
             (in reply to RCPT TO command))"
            ),
        "{bounced}"
    );
    // One transaction for both: Dovecot saw one connection.
    assert_eq!(dovecot.log_text().matches("Connect from local").count(), 1);
    // The sender, a local user, gets the non-delivery notice with
    // Dovecot's reply.
    let notice = m.wait_maildir("hadoop", 1);
    let text = String::from_utf8_lossy(&notice[0]);
    assert!(
        text.contains("<nobody@lmtp.test>: host mail.ywnds.com[private/dovecot-lmtp] said:")
            && text.contains("550 5.1.1 <nobody@lmtp.test> User doesn't exist")
            && text.contains("Final-Recipient: rfc822; nobody@lmtp.test")
            && !text.contains("Final-Recipient: rfc822; alice@lmtp.test"),
        "{text}"
    );
}

#[test]
fn with_dovecot_stopped_mail_waits_and_goes_once_it_is_back() {
    let Some((m, mut dovecot)) = setup(&["alice@lmtp.test", "carol@tcp.test"]) else {
        eprintln!("skipped: needs root and dovecot-lmtpd");
        return;
    };
    dovecot.stop();
    let id = send(
        &m,
        &["alice@lmtp.test", "carol@tcp.test"],
        b"Subject: later\r\n\r\nwhen you are back",
    );
    let unix = m.log_line(&format!("{id}: to=<alice@lmtp.test>"));
    assert!(
        unix.contains(", relay=none, delay=")
            && unix.contains(
                ", dsn=4.4.1, status=deferred (connect to mail.ywnds.com[private/dovecot-lmtp]: "
            ),
        "{unix}"
    );
    let inet = m.log_line(&format!("{id}: to=<carol@tcp.test>"));
    assert!(
        inet.contains(", relay=none, delay=")
            && inet.ends_with(&format!(
                ", dsn=4.4.1, status=deferred (connect to 127.0.0.1[127.0.0.1]:{}: Connection refused)",
                dovecot.port
            )),
        "{inet}"
    );
    dovecot.run();
    assert!(m.run("postqueue", &["-f"]).status.success());
    dovecot.maildir("alice@lmtp.test", 1);
    dovecot.maildir("carol@tcp.test", 1);
    for (to, relay) in [
        (
            "alice@lmtp.test",
            "mail.ywnds.com[private/dovecot-lmtp]".to_owned(),
        ),
        (
            "carol@tcp.test",
            format!("127.0.0.1[127.0.0.1]:{}", dovecot.port),
        ),
    ] {
        let line = m.log_line(&format!("{id}: to=<{to}>, relay={relay}"));
        assert!(
            line.contains(&format!(", dsn=2.0.0, status=sent (250 2.0.0 <{to}> ")),
            "{line}"
        );
    }
    // Delivered, the message leaves the queue.
    assert!(
        wait_for(Duration::from_secs(10), || [
            "deferred", "active", "incoming"
        ]
        .iter()
        .all(|q| !m.queue_files(q).contains(&id))),
        "{}",
        m.log_text()
    );
}
