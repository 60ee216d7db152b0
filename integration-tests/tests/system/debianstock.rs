//! Debian's stock master.cf runs under postfix-rs, chroot column included:
//! the helper services whose job postfix-rs does inside its daemons start
//! nothing, the confined smtpd finds local users through proxymap,
//! error/retry/discard transports answer as Postfix's do, and mail routed
//! to lmtp with no LMTP server listening waits in the queue.

use std::time::Duration;

use testkit::{Instance, MailInstance, Smtp};

fn stock_instance(extra_main_cf: &str) -> MailInstance {
    let m = Instance::mail(extra_main_cf);
    // As Debian has it, chroot column included, when root can chroot.
    let root = nix::unistd::Uid::effective().is_root();
    m.write_master_cf(&testkit::debian::master_cf(m.port, root));
    m
}

#[test]
fn debians_master_cf_starts_and_helpers_start_nothing() {
    let m = stock_instance("");
    let out = m.run("postfix", &["check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    m.start();
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    let r = c.mail(
        "a@example.org",
        &["openstack@ywnds.com"],
        b"Subject: x\r\n\r\nhi",
    );
    assert!(r.starts_with("250"), "{r}\n{}", m.log_text());
    m.wait_maildir("openstack", 1);
    if nix::unistd::Uid::effective().is_root() {
        // Confined as Debian's master.cf says: smtpd's root is the queue
        // (and it still found the local user, through proxymap).
        let smtpd = m.child_pid(&format!("127.0.0.1:{}", m.port)).unwrap();
        let root = std::fs::read_link(format!("/proc/{smtpd}/root")).unwrap();
        assert_eq!(root, m.queue);
        let qmgr = m.child_pid("qmgr").unwrap();
        assert_eq!(
            std::fs::read_link(format!("/proc/{qmgr}/root")).unwrap(),
            std::path::Path::new("/")
        );
        assert!(m.child_pid("proxymap").is_some());
        // anvil runs, confined as Debian's line says.
        let anvil = m.child_pid("anvil").expect("anvil runs");
        assert_eq!(
            std::fs::read_link(format!("/proc/{anvil}/root")).unwrap(),
            m.queue
        );
    }
    let services: Vec<String> = m
        .children()
        .iter()
        .filter_map(|p| p.service().map(str::to_owned))
        .collect();
    // lmtp is a postfix-rs agent now: Debian's line starts it.
    assert!(services.iter().any(|s| s == "lmtp"), "{services:?}");
    for helper in ["tlsmgr", "rewrite", "scache", "verify", "postlog"] {
        assert!(
            !services.iter().any(|s| s == helper),
            "{helper} runs: {services:?}"
        );
    }
    std::thread::sleep(Duration::from_secs(1));
    let log = m.log_text();
    assert!(!log.contains("throttling"), "{log}");
    assert!(!log.contains("warning"), "{log}");
}

#[test]
fn error_retry_and_discard_answer_as_postfix_and_lmtp_mail_waits() {
    // Postfix's smtpd refuses a recipient routed to error: at RCPT (the
    // addressing tests check that); here the mail must reach qmgr.
    let m = stock_instance(
        "transport_maps = texthash:$config_directory/transport\nsmtpd_reject_unlisted_recipient = no\n",
    );
    std::fs::write(
        m.etc.join("transport"),
        "err.test error:5.1.1 custom error text\nerrplain.test error:no code here\n\
         retry.test retry:4.2.0 try later please\nwrong.test retry:5.1.1 wrong class\n\
         disc.test discard:\ndisc2.test discard:2.7.1 dsn discard\n\
         lmtp.test lmtp:unix:private/dovecot-lmtp\n",
    )
    .unwrap();
    m.start();
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    let to = [
        "a@err.test",
        "b@errplain.test",
        "d@retry.test",
        "w@wrong.test",
        "h@disc.test",
        "g@disc2.test",
        "l@lmtp.test",
    ];
    c.queued("a@example.org", &to, b"Subject: x\r\n\r\nhi");
    for want in [
        "to=<a@err.test>, relay=none, ",
        "dsn=5.1.1, status=bounced (custom error text)",
        "dsn=5.0.0, status=bounced (no code here)",
        "dsn=4.2.0, status=deferred (try later please)",
        "warning: defer_append: ignoring dsn code \"5.1.1\"",
        "to=<w@wrong.test>, relay=none, ",
        "dsn=4.0.0, status=deferred (wrong class)",
        "to=<h@disc.test>, relay=none, ",
        "dsn=2.0.0, status=sent (disc.test)",
        "dsn=2.7.1, status=sent (dsn discard)",
        "to=<l@lmtp.test>, relay=none, ",
        "dsn=4.4.1, status=deferred (connect to mail.ywnds.com[private/dovecot-lmtp]: No such file or directory)",
    ] {
        assert!(
            m.wait_log(want, Duration::from_secs(10)),
            "{want}:\n{}",
            m.log_text()
        );
    }
    // The message stays queued for the deferred recipients (once qmgr has
    // moved it, just after logging).
    // (So does the non-delivery notice for the bounced ones, to a remote
    // sender: it is the other file in the queue.)
    let id = m
        .log_text()
        .lines()
        .find_map(|l| {
            l.split("postfix/qmgr[")
                .nth(1)?
                .split_once("]: ")?
                .1
                .split_once(": from=<a@example.org>")
                .map(|(id, _)| id.to_owned())
        })
        .unwrap();
    let queued = || {
        ["deferred", "active", "incoming"]
            .iter()
            .any(|q| m.queue_files(q).contains(&id))
    };
    assert!(
        testkit::wait_for(Duration::from_secs(10), queued),
        "{:?} {:?} {:?}\n{}",
        m.queue_files("deferred"),
        m.queue_files("active"),
        m.queue_files("incoming"),
        m.log_text()
    );
}

#[test]
fn a_confined_smtpd_restarts_when_its_table_is_rebuilt() {
    if !nix::unistd::Uid::effective().is_root() {
        return; // Only root can confine a daemon.
    }
    let m = stock_instance("");
    m.start();
    let send = |rcpt: &str| {
        let (mut c, _) = Smtp::connect(m.port);
        c.cmd("EHLO client.example");
        c.mail("a@example.org", &[rcpt], b"Subject: x\r\n\r\nhi")
    };
    assert!(send("admin@ywnds.com").starts_with("250"));
    // A new alias: the confined smtpd cannot reopen the rebuilt table, so
    // it stops and master starts one that opens it afresh.
    m.set_aliases("postmaster: root\nroot: openstack\nadmin: openstack, hadoop\nsales: hadoop\n");
    let first = send("sales@ywnds.com");
    assert!(
        m.wait_log("has changed -- restarting", Duration::from_secs(10)),
        "{first}\n{}",
        m.log_text()
    );
    assert!(
        testkit::wait_for(Duration::from_secs(10), || send("sales@ywnds.com")
            .starts_with("250")),
        "{}",
        m.log_text()
    );
}
