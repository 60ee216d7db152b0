//! Debian's stock master.cf runs under postfix-rs: the helper services whose
//! job postfix-rs does inside its daemons start nothing, error/retry/discard
//! transports answer as Postfix's do, and mail routed to an agent
//! postfix-rs does not have yet waits in the queue.

use std::time::Duration;

use testkit::{Instance, MailInstance, Smtp};

fn stock_instance(extra_main_cf: &str) -> MailInstance {
    let m = Instance::mail(extra_main_cf);
    m.write_master_cf(&testkit::debian::master_cf(m.port));
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
    assert!(c
        .mail(
            "a@example.org",
            &["openstack@ywnds.com"],
            b"Subject: x\r\n\r\nhi"
        )
        .starts_with("250"));
    m.wait_maildir("openstack", 1);
    let services: Vec<String> = m
        .children()
        .iter()
        .filter_map(|p| p.service().map(str::to_owned))
        .collect();
    for helper in [
        "tlsmgr", "rewrite", "anvil", "scache", "verify", "proxymap", "postlog", "lmtp",
    ] {
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
    let m = stock_instance("transport_maps = texthash:$config_directory/transport\n");
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
    assert!(c
        .mail("a@example.org", &to, b"Subject: x\r\n\r\nhi")
        .starts_with("250"));
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
        "status=deferred (mail transport unavailable)",
    ] {
        assert!(
            m.wait_log(want, Duration::from_secs(10)),
            "{want}:\n{}",
            m.log_text()
        );
    }
    // The message stays queued for the deferred recipients (once qmgr has
    // moved it, just after logging).
    assert!(testkit::wait_for(Duration::from_secs(10), || m
        .queue_files("deferred")
        .len()
        == 1));
}
