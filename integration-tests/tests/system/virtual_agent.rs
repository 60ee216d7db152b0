//! virtual(8) end to end: mail for hosted domains, routed to the virtual
//! transport, lands in the Maildir or mbox file `virtual_mailbox_maps`
//! names under `virtual_mailbox_base`, owned by the ids the uid and gid
//! tables give, with Postfix's headers, statuses and log lines.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use testkit::{wait_for, Instance, MailInstance, Smtp};

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// A hosting instance: example.net and example.org routed to `virtual`
/// through transport_maps (relay domains, so smtpd takes any user),
/// example.com a virtual mailbox domain, broken.example routed to a second
/// virtual service whose mailbox table is a tcp: server that always
/// answers 400.
struct Hosting {
    m: MailInstance,
    base: PathBuf,
    uid: u32,
    gid: u32,
}

impl Hosting {
    fn new(extra_main_cf: &str) -> Self {
        // As root, mailboxes belong to ids that have no account, as
        // Postfix's docs set up a `vmail` owner; else to the instance user.
        let (uid, gid) = if is_root() {
            (5000, 5001)
        } else {
            (
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            )
        };
        let broken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let broken_port = broken.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for conn in broken.incoming().flatten() {
                std::thread::spawn(move || {
                    use std::io::{BufRead, Write};
                    let mut w = conn.try_clone().unwrap();
                    for line in std::io::BufReader::new(conn).lines() {
                        if line.is_err() || w.write_all(b"400 table is down\n").is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let m = Instance::mail(&format!(
            "recipient_delimiter = +\n\
             relay_domains = example.net, example.org, broken.example\n\
             transport_maps = texthash:$config_directory/transport\n\
             virtual_mailbox_domains = example.com\n\
             virtual_mailbox_maps = texthash:$config_directory/vmailbox\n\
             virtual_uid_maps = texthash:$config_directory/vuid, static:{uid}\n\
             virtual_gid_maps = static:{gid}\n\
             {extra_main_cf}"
        ));
        let base = m.root.path().join("vmail");
        std::fs::create_dir(&base).unwrap();
        // The mbox files' directory; Maildirs (and their parents) are made
        // by the agent.
        std::fs::create_dir(base.join("example.net")).unwrap();
        for d in [&base, &base.join("example.net")] {
            nix::unistd::chown(d, Some(uid.into()), Some(gid.into())).unwrap();
        }
        m.add_main_cf(&format!("virtual_mailbox_base = {}\n", base.display()));
        std::fs::write(
            m.etc.join("transport"),
            "example.net virtual:\nexample.org virtual:\nbroken.example vbroken:\n",
        )
        .unwrap();
        std::fs::write(
            m.etc.join("vmailbox"),
            "a@example.net example.net/a/\nb@example.net example.net/b\n\
             low@example.net example.net/low/\n@example.org example.org/catchall/\n\
             c@example.com example.com/c/\n",
        )
        .unwrap();
        // Below virtual_minimum_uid (100); everyone else gets the static uid.
        std::fs::write(m.etc.join("vuid"), "low@example.net 50\n").unwrap();
        let mut master = std::fs::read_to_string(m.etc.join("master.cf")).unwrap();
        master.push_str(&format!(
            "virtual unix - n n - - virtual\n\
             vbroken unix - n n - - virtual -o virtual_mailbox_maps=tcp:127.0.0.1:{broken_port}\n"
        ));
        m.write_master_cf(&master);
        m.start();
        m.wait_children(&["virtual", "vbroken"]);
        Self { m, base, uid, gid }
    }

    fn send(&self, to: &[&str], data: &[u8]) -> String {
        let (mut c, _) = Smtp::connect(self.m.port);
        c.cmd("EHLO client.example");
        c.queued("openstack@ywnds.com", to, data)
    }

    /// The messages in a Maildir's new/ under the base, waited for.
    fn maildir(&self, dir: &str, n: usize) -> Vec<(PathBuf, Vec<u8>)> {
        let new = self.base.join(dir).join("new");
        let list = || -> Vec<PathBuf> {
            let mut v: Vec<PathBuf> = std::fs::read_dir(&new)
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            v.sort();
            v
        };
        assert!(
            wait_for(Duration::from_secs(20), || list().len() >= n),
            "{} has {} of {n} messages; log:\n{}",
            new.display(),
            list().len(),
            self.m.log_text()
        );
        std::thread::sleep(Duration::from_millis(300));
        let files = list();
        assert_eq!(files.len(), n, "{} got more than {n}", new.display());
        files
            .into_iter()
            .map(|p| {
                let b = std::fs::read(&p).unwrap();
                (p, b)
            })
            .collect()
    }

    /// Asserts `path` belongs to the mailbox owner (as root) with `mode`.
    fn owned(&self, path: &Path, mode: u32) {
        let md = std::fs::metadata(path).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, mode, "{}", path.display());
        if is_root() {
            assert_eq!(
                (md.uid(), md.gid()),
                (self.uid, self.gid),
                "{} belongs to the mailbox owner",
                path.display()
            );
        }
    }
}

/// The log line for a recipient's delivery, waited for.
fn delivery_line(m: &Instance, to: &str) -> String {
    m.log_line(&format!("to=<{to}>, relay="))
}

/// What follows the three delivery headers.
fn after_delivery_headers(msg: &[u8]) -> &[u8] {
    let mut rest = msg;
    for _ in 0..3 {
        let i = rest.iter().position(|&c| c == b'\n').unwrap();
        rest = &rest[i + 1..];
    }
    rest
}

#[test]
fn maildir_and_mbox_mailboxes_get_postfixs_headers_bytes_and_owners() {
    let h = Hosting::new("");
    let m = &h.m;
    // The same message to a virtual Maildir and to a local user: local's
    // copy shows what the queue file holds.
    let body = b"Subject: hosted\r\n\r\nline one\r\nFrom the top";
    h.send(&["a@example.net", "openstack@ywnds.com"], body);
    let a = h.maildir("example.net/a", 1);
    let local = m.wait_maildir("openstack", 1);
    assert!(a[0].1.starts_with(
        b"Return-Path: <openstack@ywnds.com>\nX-Original-To: a@example.net\nDelivered-To: a@example.net\nReceived: "
    ), "{}", String::from_utf8_lossy(&a[0].1));
    assert_eq!(
        after_delivery_headers(&a[0].1),
        after_delivery_headers(&local[0]),
        "the queued message, byte for byte"
    );
    assert!(
        a[0].1.ends_with(b"\n\nline one\nFrom the top\n"),
        "{}",
        String::from_utf8_lossy(&a[0].1)
    );
    let line = delivery_line(m, "a@example.net");
    assert!(
        line.contains(" postfix/virtual[")
            && line.contains(": to=<a@example.net>, relay=virtual, delay=")
            && line.ends_with(", dsn=2.0.0, status=sent (delivered to maildir)"),
        "{line}"
    );
    // Made by the agent, as the owner, private: the Maildir and its file.
    for d in [
        "example.net/a",
        "example.net/a/tmp",
        "example.net/a/new",
        "example.net/a/cur",
    ] {
        h.owned(&h.base.join(d), 0o700);
    }
    h.owned(&a[0].0, 0o600);
    let name = a[0].0.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.split('.')
            .nth(1)
            .is_some_and(|p| p.starts_with('V') && p.contains('I') && p.contains('M')),
        "{name}"
    );

    // An extension: found as a@example.net, delivered as addressed.
    h.send(&["A+News@example.net"], b"Subject: ext\r\n\r\nextension");
    let a = h.maildir("example.net/a", 2);
    let ext = a
        .iter()
        .find(|(_, b)| b.ends_with(b"\nextension\n"))
        .unwrap();
    assert!(
        ext.1.starts_with(b"Return-Path: <openstack@ywnds.com>\nX-Original-To: A+News@example.net\nDelivered-To: A+News@example.net\n"),
        "{}",
        String::from_utf8_lossy(&ext.1)
    );
    assert!(delivery_line(m, "A+News@example.net").contains("status=sent (delivered to maildir)"));

    // mbox: From line, quoting, blank line at the end; created mode 0600.
    h.send(&["b@example.net"], body);
    let mbox = h.base.join("example.net/b");
    assert!(
        wait_for(Duration::from_secs(20), || std::fs::metadata(&mbox)
            .is_ok_and(|md| md.len() > 0)),
        "{}",
        m.log_text()
    );
    let line = delivery_line(m, "b@example.net");
    assert!(
        line.contains(": to=<b@example.net>, relay=virtual, delay=")
            && line.ends_with(", dsn=2.0.0, status=sent (delivered to mailbox)"),
        "{line}"
    );
    let text = std::fs::read(&mbox).unwrap();
    let first = text.split(|&c| c == b'\n').next().unwrap();
    assert!(
        first.starts_with(b"From openstack@ywnds.com  "),
        "{}",
        String::from_utf8_lossy(first)
    );
    let rest = &text[first.len() + 1..];
    assert!(rest.starts_with(
        b"Return-Path: <openstack@ywnds.com>\nX-Original-To: b@example.net\nDelivered-To: b@example.net\nReceived: "
    ), "{}", String::from_utf8_lossy(rest));
    assert!(
        rest.ends_with(b"\n\nline one\n>From the top\n\n"),
        "{}",
        String::from_utf8_lossy(rest)
    );
    h.owned(&mbox, 0o600);
    assert!(!h.base.join("example.net/b.lock").exists());

    // The catch-all, with its domain directory made on the way.
    h.send(&["whoever@example.org"], b"Subject: any\r\n\r\ncaught");
    let c = h.maildir("example.org/catchall", 1);
    assert!(c[0].1.starts_with(b"Return-Path: <openstack@ywnds.com>\nX-Original-To: whoever@example.org\nDelivered-To: whoever@example.org\n"));
    h.owned(&h.base.join("example.org"), 0o700);
    assert!(delivery_line(m, "whoever@example.org").contains("relay=virtual"));

    // A virtual mailbox domain reaches $virtual_transport without a table entry.
    h.send(&["c@example.com"], b"Subject: vdomain\r\n\r\nby class");
    let c = h.maildir("example.com/c", 1);
    assert!(c[0].1.ends_with(b"\nby class\n"));
    assert!(delivery_line(m, "c@example.com").contains("status=sent (delivered to maildir)"));
    assert!(!m.log_text().contains("warning"), "{}", m.log_text());
}

#[test]
fn unknown_users_bounce_and_trouble_waits_as_postfix_says() {
    let h = Hosting::new("message_size_limit = 20000\nvirtual_mailbox_limit = 20000\n");
    let m = &h.m;
    // b's mailbox is nearly full: the file may not grow past the limit.
    let mbox = h.base.join("example.net/b");
    std::fs::write(&mbox, vec![b'x'; 19_500]).unwrap();
    nix::unistd::chown(&mbox, Some(h.uid.into()), Some(h.gid.into())).unwrap();

    let unknown = h.send(&["nosuch@example.net"], b"Subject: who\r\n\r\nx");
    assert!(
        delivery_line(m, "nosuch@example.net")
            .contains(": to=<nosuch@example.net>, relay=virtual, delay="),
        "{}",
        m.log_text()
    );
    assert!(m
        .log_text()
        .contains(", dsn=5.1.1, status=bounced (unknown user: \"nosuch@example.net\")"));
    // The sender hears of it.
    let notice = m.wait_maildir("openstack", 1);
    let notice = String::from_utf8_lossy(&notice[0]);
    assert!(
        notice.contains("unknown user: \"nosuch@example.net\"") && notice.contains("Status: 5.1.1"),
        "{notice}"
    );

    let big = format!("Subject: big\r\n\r\n{}", "y".repeat(1000));
    h.send(&["b@example.net"], big.as_bytes());
    let line = delivery_line(m, "b@example.net");
    assert!(
        line.ends_with(&format!(
            ", dsn=5.2.2, status=bounced (delivery failed to mailbox {}: error writing message: File too large)",
            mbox.display()
        )),
        "{line}"
    );
    assert_eq!(std::fs::metadata(&mbox).unwrap().len(), 19_500, "cut back");

    // A uid below virtual_minimum_uid: a warning, and the mail waits.
    let low = h.send(&["low@example.net"], b"Subject: low\r\n\r\nx");
    let line = delivery_line(m, "low@example.net");
    assert!(
        line.ends_with(", dsn=4.3.5, status=deferred (mail system configuration error)"),
        "{line}"
    );
    assert!(m
        .log_line("warning: recipient low@example.net: bad uid 50 in virtual_uid_maps")
        .contains(" postfix/virtual["));
    assert!(!h.base.join("example.net/low").exists());

    // A table that cannot answer: deferred, never bounced.
    let broken = h.send(&["x@broken.example"], b"Subject: later\r\n\r\nx");
    let line = delivery_line(m, "x@broken.example");
    assert!(
        line.contains(": to=<x@broken.example>, relay=vbroken, delay=")
            && line.ends_with(", dsn=4.3.5, status=deferred (mail system configuration error)"),
        "{line}"
    );
    assert!(m
        .log_text()
        .contains("warning: table virtual_mailbox_maps: lookup x@broken.example: "));
    let waiting = || {
        let q = m.queue_files("deferred");
        q.contains(&low) && q.contains(&broken)
    };
    assert!(
        wait_for(Duration::from_secs(10), waiting),
        "{:?}\n{}",
        m.queue_files("deferred"),
        m.log_text()
    );
    // Only the unknown user and the full mailbox bounced.
    let log = m.log_text();
    assert_eq!(log.matches("status=bounced").count(), 2, "{log}");
    assert!(!m.queue_files("deferred").contains(&unknown));
}
