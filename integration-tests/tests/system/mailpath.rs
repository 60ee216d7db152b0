//! The mail path end to end: SMTP in, Maildir/mbox out, with the replies,
//! headers and log lines Postfix produces.

use std::time::Duration;

use testkit::{wait_for, Instance, Smtp};

fn body_of(msg: &[u8]) -> &[u8] {
    let i = msg
        .windows(2)
        .position(|w| w == b"\n\n")
        .expect("header/body separator");
    &msg[i + 2..]
}

fn headers_of(msg: &[u8]) -> String {
    let i = msg
        .windows(2)
        .position(|w| w == b"\n\n")
        .expect("header/body separator");
    String::from_utf8_lossy(&msg[..i + 1]).into_owned()
}

#[test]
fn smtplib_message_lands_in_maildir_with_postfix_headers_and_log() {
    let m = Instance::mail("");
    m.start();
    let script = format!(
        "import smtplib\ns = smtplib.SMTP('127.0.0.1', {})\ns.ehlo('client.example')\nprint(s.sendmail('sender@example.org', ['openstack@ywnds.com'], 'Subject: hello\\r\\n\\r\\nHi there\\r\\n'))\ns.quit()\n",
        m.port
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let msgs = m.wait_maildir("openstack", 1);
    let h = headers_of(&msgs[0]);
    let lines: Vec<&str> = h.lines().collect();
    assert_eq!(lines[0], "Return-Path: <sender@example.org>");
    assert_eq!(lines[1], "X-Original-To: openstack@ywnds.com");
    assert_eq!(lines[2], "Delivered-To: openstack@ywnds.com");
    assert_eq!(
        lines[3],
        "Received: from client.example (unknown [127.0.0.1])"
    );
    assert!(
        lines[4].starts_with("\tby mail.ywnds.com (Postfix) with ESMTP id "),
        "{h}"
    );
    assert!(lines[5].starts_with("\tfor <openstack@ywnds.com>; "), "{h}");
    assert!(
        h.contains("\nSubject: hello\n")
            && h.contains("\nMessage-Id: <")
            && h.contains("\nDate: ")
            && h.contains("\nFrom: sender@example.org\n"),
        "{h}"
    );
    assert_eq!(body_of(&msgs[0]), b"Hi there\n");
    // The Maildir file name follows Postfix's SEC.VdevIinoMusec.HOST.
    let name = m.maildir("openstack")[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        name.split('.')
            .nth(1)
            .is_some_and(|p| p.starts_with('V') && p.contains('I') && p.contains('M')),
        "{name}"
    );
    assert!(m.wait_log(": removed", Duration::from_secs(5)));
    let log = m.log_text();
    let id = log
        .lines()
        .find_map(|l| l.strip_suffix(": client=unknown[127.0.0.1]"))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap();
    assert!(
        id.len() >= 10 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "{id}"
    );
    assert!(log.contains(&format!("{id}: removed")), "{log}");
    for needle in [
        "connect from unknown[127.0.0.1]",
        "client=unknown[127.0.0.1]",
        "message-id=<",
        "from=<sender@example.org>, size=",
        "nrcpt=1 (queue active)",
        "to=<openstack@ywnds.com>, relay=local, delay=",
        "dsn=2.0.0, status=sent (delivered to maildir)",
        "disconnect from unknown[127.0.0.1] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5",
    ] {
        assert!(log.contains(needle), "missing {needle:?} in\n{log}");
    }
    assert!(m.queue_files("incoming").is_empty() && m.queue_files("active").is_empty());
}

#[test]
fn aliases_expand_and_newaliases_changes_them_without_restart() {
    let m = Instance::mail("");
    m.start();
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    c.queued(
        "a@example.org",
        &["admin@ywnds.com"],
        b"Subject: team\r\n\r\nfor both",
    );
    let o = m.wait_maildir("openstack", 1);
    let h = m.wait_maildir("hadoop", 1);
    assert!(headers_of(&o[0])
        .contains("X-Original-To: admin@ywnds.com\nDelivered-To: openstack@ywnds.com\n"));
    assert!(headers_of(&h[0]).contains("Delivered-To: hadoop@ywnds.com\n"));
    assert!(m.wait_log(
        "to=<hadoop@ywnds.com>, orig_to=<admin@ywnds.com>, relay=local",
        Duration::from_secs(5)
    ));
    // Postmaster -> root -> openstack: nested aliases.
    c.queued(
        "a@example.org",
        &["postmaster@ywnds.com"],
        b"Subject: pm\r\n\r\nx",
    );
    m.wait_maildir("openstack", 2);
    // A new alias works after newaliases alone.
    std::fs::write(
        m.etc.join("aliases"),
        "postmaster: root\nroot: openstack\nadmin: openstack, hadoop\nsales: hadoop\n",
    )
    .unwrap();
    assert!(
        c.mail("a@example.org", &["sales@ywnds.com"], b"x")
            .starts_with("550 5.1.1"),
        "not known before newaliases"
    );
    c.cmd("RSET");
    let out = std::process::Command::new(testkit::bin("newaliases"))
        .arg("-C")
        .arg(&m.etc)
        .output()
        .unwrap();
    assert!(out.status.success());
    c.queued(
        "a@example.org",
        &["sales@ywnds.com"],
        b"Subject: s\r\n\r\nsales",
    );
    m.wait_maildir("hadoop", 2);
    c.cmd("QUIT");
}

#[test]
fn mbox_delivery_when_home_mailbox_is_empty() {
    let m = Instance::mail("home_mailbox =\n");
    m.start();
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("HELO client.example");
    c.queued(
        "sender@example.org",
        &["hadoop@ywnds.com"],
        b"Subject: one\r\n\r\nFrom the start\r\nline",
    );
    c.queued(
        "sender@example.org",
        &["hadoop@ywnds.com"],
        b"Subject: two\r\n\r\nsecond",
    );
    let spool = m.root.path().join("spool/hadoop");
    assert!(
        wait_for(Duration::from_secs(10), || std::fs::read_to_string(&spool)
            .map(|t| t.contains("second"))
            .unwrap_or(false)),
        "{}",
        m.log_text()
    );
    let text = std::fs::read_to_string(&spool).unwrap();
    assert!(text.starts_with("From sender@example.org  "), "{text}");
    assert_eq!(
        text.matches("\nFrom sender@example.org  ").count(),
        1,
        "two messages, each with a From line: {text}"
    );
    assert!(text.contains("\n>From the start\n"), "{text}");
    assert!(m.log_text().contains("status=sent (delivered to mailbox)"));
}

#[test]
fn unknown_local_user_is_rejected_at_rcpt() {
    let m = Instance::mail("");
    m.start();
    let (mut c, _) = Smtp::connect_from("127.0.0.2", m.port);
    c.cmd("EHLO client.example");
    c.cmd("MAIL FROM:<a@example.org>");
    assert_eq!(c.cmd("RCPT TO:<nosuchuser@ywnds.com>"), "550 5.1.1 <nosuchuser@ywnds.com>: Recipient address rejected: User unknown in local recipient table");
    assert!(m.wait_log(
        "NOQUEUE: reject: RCPT from unknown[127.0.0.2]: 550 5.1.1 <nosuchuser@ywnds.com>: Recipient address rejected: User unknown in local recipient table; from=<a@example.org> to=<nosuchuser@ywnds.com> proto=ESMTP helo=<client.example>",
        Duration::from_secs(5)
    ));
    assert_eq!(
        c.cmd("RCPT TO:<openstack+lists@ywnds.com>")
            .split(' ')
            .next(),
        Some("550"),
        "no recipient_delimiter: the extension is part of the name"
    );
    assert_eq!(c.cmd("RCPT TO:<OpenStack@YWNDS.COM>"), "250 2.1.5 Ok");

    // While a new setup is tested, Postfix's documentation advises 450, so
    // that a mistake in it makes clients try again rather than bounce.
    let m = Instance::mail("unknown_local_recipient_reject_code = 450\n");
    m.start();
    let (mut c, _) = Smtp::connect_from("127.0.0.2", m.port);
    c.cmd("EHLO client.example");
    c.cmd("MAIL FROM:<a@example.org>");
    assert_eq!(c.cmd("RCPT TO:<nosuchuser@ywnds.com>"), "450 4.1.1 <nosuchuser@ywnds.com>: Recipient address rejected: User unknown in local recipient table");
}

#[test]
fn relay_from_outside_mynetworks_is_refused_including_every_trick() {
    let m =
        Instance::mail("smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n");
    m.start();
    let (mut c, _) = Smtp::connect_from("127.0.0.2", m.port);
    c.cmd("EHLO outside.example");
    c.cmd("MAIL FROM:<spammer@example.org>");
    for (rcpt, shown) in [
        ("x@163.com", "x@163.com"),
        ("user%163.com@ywnds.com", "user%163.com@ywnds.com"),
        ("\"user@163.com\"@ywnds.com", "user@163.com@ywnds.com"),
        ("@ywnds.com:user@163.com", "user@163.com"),
        ("user@163.com@ywnds.com", "user@163.com@ywnds.com"),
        ("163.com!user@ywnds.com", "163.com!user@ywnds.com"),
    ] {
        assert_eq!(
            c.cmd(&format!("RCPT TO:<{rcpt}>")),
            format!("554 5.7.1 <{shown}>: Relay access denied"),
            "{rcpt}"
        );
    }
    assert_eq!(c.cmd("DATA"), "554 5.5.1 Error: no valid recipients");
    c.cmd("QUIT");
    assert!(m.wait_log("NOQUEUE: reject: RCPT from unknown[127.0.0.2]: 554 5.7.1 <x@163.com>: Relay access denied; from=<spammer@example.org> to=<x@163.com> proto=ESMTP helo=<outside.example>", Duration::from_secs(5)));
    assert!(
        m.queue_files("incoming").is_empty()
            && m.queue_files("active").is_empty()
            && m.queue_files("deferred").is_empty()
    );
}

#[test]
fn default_relay_restrictions_defer_outsiders_and_insiders_queue_for_smtp() {
    let m = Instance::mail("");
    m.start();
    let (mut c, _) = Smtp::connect_from("127.0.0.2", m.port);
    c.cmd("EHLO outside.example");
    c.cmd("MAIL FROM:<a@example.org>");
    assert_eq!(
        c.cmd("RCPT TO:<x@163.com>"),
        "454 4.7.1 <x@163.com>: Relay access denied"
    );
    drop(c);
    // From inside mynetworks: accepted, and waits in deferred/ for the smtp transport.
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO inside.example");
    c.queued(
        "hadoop@ywnds.com",
        &["friend@163.com"],
        b"Subject: out\r\n\r\nx",
    );
    assert!(m.wait_log(
        "to=<friend@163.com>, relay=none, delay=",
        Duration::from_secs(5)
    ));
    assert!(m
        .log_text()
        .contains("dsn=4.3.0, status=deferred (mail transport unavailable)"));
    assert!(
        wait_for(Duration::from_secs(5), || m.queue_files("deferred").len()
            == 1),
        "{:?}",
        m.queue_files("active")
    );
}

#[test]
fn size_limits_at_mail_and_after_data() {
    let m = Instance::mail("message_size_limit = 2000\n");
    m.start();
    let (mut c, _) = Smtp::connect(m.port);
    let ehlo = c.cmd("EHLO client.example");
    assert!(ehlo.lines().any(|l| l == "250-SIZE 2000"), "{ehlo}");
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.org> SIZE=2001"),
        "552 5.3.4 Message size exceeds fixed limit"
    );
    let big = vec![b'x'; 5000];
    assert_eq!(
        c.mail("a@example.org", &["openstack@ywnds.com"], &big),
        "552 5.3.4 Error: message file too big"
    );
    // The session goes on and a small message still works.
    c.queued(
        "a@example.org",
        &["openstack@ywnds.com"],
        b"Subject: small\r\n\r\nok",
    );
    // Only the accepted message arrives.
    let msgs = m.exactly("openstack", 1);
    assert!(body_of(&msgs[0]).starts_with(b"ok"));
}

/// Ten thousand recipients in one message (smtpd_recipient_limit raised,
/// as a list server's relay does): all of them reach the queue file. The
/// list is longer than any one frame smtpd may send cleanup, so it goes in
/// several; one frame was refused (`451 4.3.0 Error: queue file write
/// error`). Held by a header check, so that no delivery runs.
#[test]
fn ten_thousand_recipients_of_one_message_are_all_queued() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("header"), "/^Subject: many/ HOLD\n").unwrap();
    let m = Instance::mail(&format!(
        "smtpd_recipient_limit = 20000\nrecipient_delimiter = +\nheader_checks = regexp:{}/header\n",
        dir.path().display()
    ));
    m.start();
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    let to: Vec<String> = (0..10_000)
        .map(|i| format!("openstack+{i}@ywnds.com"))
        .collect();
    let to: Vec<&str> = to.iter().map(String::as_str).collect();
    c.queued("a@example.org", &to, b"Subject: many\r\n\r\nhi");
    assert_eq!(m.queue_files("hold").len(), 1);
    let out = m.run("postqueue", &["-p"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    for i in [0, 4_999, 9_999] {
        assert!(
            listing.contains(&format!("openstack+{i}@ywnds.com\n")),
            "recipient {i} missing"
        );
    }
    assert_eq!(listing.matches("openstack+").count(), 10_000);
}

#[test]
fn a_message_with_hopcount_limit_received_headers_is_refused_as_a_loop() {
    let m = Instance::mail("hopcount_limit = 5\n");
    m.start();
    let hops = |n: usize| {
        let mut msg: Vec<u8> = (0..n)
            .flat_map(|i| {
                format!("Received: from h{i}.example by h{}.example\r\n", i + 1).into_bytes()
            })
            .collect();
        msg.extend_from_slice(b"Subject: loop\r\n\r\nbody\r\n");
        msg
    };
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    // With the Received header smtpd adds, four make five: the limit.
    assert_eq!(
        c.mail("a@example.org", &["openstack@ywnds.com"], &hops(4)),
        "554 5.4.0 Error: too many hops"
    );
    assert!(m.wait_log(
        ": message rejected: hopcount exceeded",
        Duration::from_secs(5)
    ));
    c.queued("a@example.org", &["openstack@ywnds.com"], &hops(3));
    // Only the accepted message arrives.
    let msgs = m.exactly("openstack", 1);
    assert!(body_of(&msgs[0]).starts_with(b"body"));
}

#[test]
fn dot_stuffing_and_eight_bit_bodies_arrive_byte_exact() {
    let m = Instance::mail("");
    m.start();
    let mut body: Vec<u8> = b"..leading dot\r\n.\t tab after dot\r\n...\r\n".to_vec();
    let high: Vec<u8> = (0x80u8..=0xff).collect();
    body.extend_from_slice(&high);
    body.extend_from_slice(b"\r\nend\r\n");
    let mut data = b"Subject: bytes\r\n\r\n".to_vec();
    data.extend_from_slice(&body);
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    assert!(c
        .cmd("MAIL FROM:<a@example.org> BODY=8BITMIME")
        .starts_with("250"));
    assert!(c.cmd("RCPT TO:<openstack@ywnds.com>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(&data);
    c.send(b".\r\n");
    assert!(c.reply().starts_with("250 2.0.0 Ok: queued as "));
    let msgs = m.wait_maildir("openstack", 1);
    let mut want = b".leading dot\n\t tab after dot\n..\n".to_vec();
    want.extend_from_slice(&high);
    want.extend_from_slice(b"\nend\n");
    assert_eq!(body_of(&msgs[0]), &want[..]);
}

#[test]
fn smuggled_second_message_is_never_delivered() {
    let m = Instance::mail("");
    m.start();
    for fake_end in [&b"\n.\r\n"[..], b"\r\n.\n", b"\r.\r\n", b"\n.\n"] {
        let (mut c, _) = Smtp::connect(m.port);
        c.cmd("EHLO client.example");
        c.cmd("MAIL FROM:<a@example.org>");
        c.cmd("RCPT TO:<openstack@ywnds.com>");
        assert!(c.cmd("DATA").starts_with("354"));
        let mut payload = b"Subject: carrier\r\n\r\nreal body".to_vec();
        payload.extend_from_slice(fake_end);
        payload.extend_from_slice(b"MAIL FROM:<admin@ywnds.com>\r\nRCPT TO:<hadoop@ywnds.com>\r\nDATA\r\nSubject: smuggled\r\n\r\nforged\r\n.\r\n");
        c.send(&payload);
        assert!(
            c.reply().starts_with("250 2.0.0 Ok: queued as "),
            "{fake_end:?}"
        );
        c.cmd("QUIT");
    }
    let msgs = m.wait_maildir("openstack", 4);
    for msg in &msgs {
        assert!(
            String::from_utf8_lossy(body_of(msg)).contains("RCPT TO:<hadoop@ywnds.com>"),
            "smuggled commands stay in the first message"
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        m.maildir("hadoop").is_empty(),
        "a smuggled message was delivered"
    );
}

#[test]
fn bare_newline_reject_mode_refuses_the_message() {
    // The client is in mynetworks, which Postfix's default exclusions spare.
    let m = Instance::mail(
        "smtpd_forbid_bare_newline = reject\nsmtpd_forbid_bare_newline_exclusions =\n",
    );
    m.start();
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    assert_eq!(
        c.mail(
            "a@example.org",
            &["openstack@ywnds.com"],
            b"Subject: x\r\n\r\nbare\nlf"
        ),
        "550 5.5.2 Error: bare <LF> received"
    );
    c.queued(
        "a@example.org",
        &["openstack@ywnds.com"],
        b"Subject: y\r\n\r\nclean",
    );
    m.exactly("openstack", 1);
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    let m = Instance::mail("");
    m.start();
    let (mut c, _) = Smtp::connect(m.port);
    assert!(c.cmd("EHLO client.example").contains("250-PIPELINING"));
    c.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<openstack@ywnds.com>\r\nRCPT TO:<nobody@ywnds.com>\r\nRCPT TO:<hadoop@ywnds.com>\r\nDATA\r\n");
    assert_eq!(c.reply(), "250 2.1.0 Ok");
    assert_eq!(c.reply(), "250 2.1.5 Ok");
    assert!(c.reply().starts_with("550 5.1.1 <nobody@ywnds.com>"));
    assert_eq!(c.reply(), "250 2.1.5 Ok");
    assert_eq!(c.reply(), "354 End data with <CR><LF>.<CR><LF>");
    c.send(b"Subject: pipelined\r\n\r\nbody\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n");
    assert!(c.reply().starts_with("250 2.0.0 Ok: queued as "));
    assert_eq!(c.reply(), "250 2.0.0 Ok");
    assert_eq!(c.reply(), "250 2.0.0 Ok");
    assert_eq!(c.reply(), "221 2.0.0 Bye");
    m.wait_maildir("openstack", 1);
    m.wait_maildir("hadoop", 1);
    assert!(m.wait_log("disconnect from unknown[127.0.0.1] ehlo=1 mail=1 rcpt=2/3 data=1 rset=1 noop=1 quit=1 commands=8/9", Duration::from_secs(5)), "{}", m.log_text());
}

#[test]
fn command_order_and_syntax_errors_get_postfix_codes() {
    let m = Instance::mail("smtpd_helo_required = yes\nsmtpd_recipient_limit = 2\n");
    m.start();
    let (mut c, greeting) = Smtp::connect(m.port);
    assert_eq!(greeting, "220 mail.ywnds.com ESMTP Postfix");
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.org>"),
        "503 5.5.1 Error: send HELO/EHLO first"
    );
    assert_eq!(c.cmd("HELO"), "501 Syntax: HELO hostname");
    assert_eq!(c.cmd("FOO bar"), "500 5.5.2 Error: command not recognized");
    let ehlo = c.cmd("EHLO client.example");
    assert_eq!(ehlo, "250-mail.ywnds.com\n250-PIPELINING\n250-SIZE 10240000\n250-VRFY\n250-ETRN\n250-ENHANCEDSTATUSCODES\n250-8BITMIME\n250-DSN\n250-SMTPUTF8\n250 CHUNKING");
    assert_eq!(
        c.cmd("RCPT TO:<openstack@ywnds.com>"),
        "503 5.5.1 Error: need MAIL command"
    );
    assert_eq!(c.cmd("DATA"), "503 5.5.1 Error: need RCPT command");
    assert_eq!(
        c.cmd("MAIL FROM:<a b@example.org>"),
        "501 5.1.7 Bad sender address syntax"
    );
    assert_eq!(
        c.cmd("MAIL TO:<a@example.org>"),
        "501 5.5.4 Syntax: MAIL FROM:<address>"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.org> FOO=1"),
        "555 5.5.4 Unsupported option: FOO=1"
    );
    assert_eq!(c.cmd("MAIL FROM:<a@example.org>"), "250 2.1.0 Ok");
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.org>"),
        "503 5.5.1 Error: nested MAIL command"
    );
    assert_eq!(
        c.cmd("RCPT TO:<openstack@ywnds.com> NOTIFY=SOMETIMES"),
        "501 5.5.4 Error: Bad NOTIFY parameter syntax"
    );
    assert_eq!(
        c.cmd("RCPT TO:<openstack@ywnds.com> FOO=BAR"),
        "555 5.5.4 Unsupported option: FOO=BAR"
    );
    assert_eq!(
        c.cmd("RCPT TO:<>"),
        "501 5.1.3 Bad recipient address syntax"
    );
    assert_eq!(c.cmd("RCPT TO:<openstack@ywnds.com>"), "250 2.1.5 Ok");
    assert_eq!(c.cmd("RCPT TO:<hadoop@ywnds.com>"), "250 2.1.5 Ok");
    assert_eq!(
        c.cmd("RCPT TO:<admin@ywnds.com>"),
        "452 4.5.3 Error: too many recipients"
    );
    assert_eq!(c.cmd("VRFY openstack"), "252 2.0.0 openstack");
    assert!(c
        .cmd("VRFY nosuch")
        .starts_with("550 5.1.1 <nosuch>: Recipient address rejected"));
    assert_eq!(c.cmd("RSET"), "250 2.0.0 Ok");
    assert_eq!(c.cmd("NOOP"), "250 2.0.0 Ok");
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye");
}

#[test]
fn idle_clients_time_out_and_error_storms_are_cut_off() {
    let m = Instance::mail(
        "smtpd_timeout = 1s\nsmtpd_hard_error_limit = 3\nsmtpd_soft_error_limit = 10\n",
    );
    m.start();
    let silent_until_cut_off = |c: &mut Smtp, after: &str| {
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(
            c.reply(),
            "421 4.4.2 mail.ywnds.com Error: timeout exceeded"
        );
        assert!(m.wait_log(
            &format!("timeout after {after} from unknown[127.0.0.1]"),
            Duration::from_secs(5)
        ));
    };
    let (mut c, _) = Smtp::connect(m.port);
    silent_until_cut_off(&mut c, "CONNECT");
    // The limit is per wait: a client that keeps talking, each time within
    // the limit, stays connected past it, until it falls silent.
    let (mut c, _) = Smtp::connect(m.port);
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(c.cmd("NOOP"), "250 2.0.0 Ok");
    }
    silent_until_cut_off(&mut c, "NOOP");
    // As Postfix: the error that reaches the limit is answered, then 421.
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("BAD1");
    c.cmd("BAD2");
    assert_eq!(c.cmd("BAD3"), "500 5.5.2 Error: command not recognized");
    assert_eq!(c.reply(), "421 4.7.0 mail.ywnds.com Error: too many errors");
    assert_eq!(c.reply(), "<closed>");
    assert!(m.wait_log(
        "disconnect from unknown[127.0.0.1] unknown=0/3 commands=0/3",
        Duration::from_secs(5)
    ));
}

#[test]
fn web_requests_and_headers_sent_as_commands_end_the_session_as_postfix() {
    let m = Instance::mail("");
    m.start();
    for line in ["GET / HTTP/1.0", "Subject: hello"] {
        let (mut c, _) = Smtp::connect(m.port);
        c.cmd("EHLO client.example");
        assert_eq!(
            c.cmd(line),
            "221 2.7.0 Error: I can break rules, too. Goodbye."
        );
        assert_eq!(c.reply(), "<closed>");
        assert!(m.wait_log(
            &format!("warning: non-SMTP command from unknown[127.0.0.1]: {line}"),
            Duration::from_secs(5)
        ));
    }
    // Extensions that are not offered, bad domains and bad UTF-8 get
    // Postfix's replies, and the session goes on.
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    assert_eq!(
        c.cmd("STARTTLS"),
        "502 5.5.1 Error: command not implemented"
    );
    assert_eq!(
        c.cmd("AUTH PLAIN AGFhAGI="),
        "503 5.5.1 Error: authentication not enabled"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<a@example..org>"),
        "501 5.1.7 Bad sender address syntax"
    );
    assert_eq!(c.cmd("MAIL FROM:<a@example.org>"), "250 2.1.0 Ok");
    assert_eq!(
        c.cmd("RCPT TO:<openstack@>"),
        "501 5.1.3 Bad recipient address syntax"
    );
    c.send(b"RCPT TO:<openstack@ywnds\xe9.com>\r\n");
    assert_eq!(c.reply(), "500 5.5.2 Error: bad UTF-8 syntax");
    assert_eq!(c.cmd("QUIT now"), "221 2.0.0 Bye");
}

#[test]
fn junk_commands_past_the_limit_count_as_errors_until_mail_is_delivered() {
    let m = Instance::mail(
        "smtpd_junk_command_limit = 3\nsmtpd_hard_error_limit = 2\nsmtpd_soft_error_limit = 10\n",
    );
    m.start();
    let (mut c, _) = Smtp::connect(m.port);
    // EHLO, NOOP, RSET: junk commands, within the limit.
    assert!(c.cmd("EHLO client.example").starts_with("250-"));
    assert_eq!(c.cmd("NOOP"), "250 2.0.0 Ok");
    assert_eq!(c.cmd("RSET"), "250 2.0.0 Ok");
    // Delivering a message starts the count again.
    assert_eq!(c.cmd("MAIL FROM:<someone@example.org>"), "250 2.1.0 Ok");
    assert_eq!(c.cmd("RCPT TO:<openstack@ywnds.com>"), "250 2.1.5 Ok");
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(b"Subject: junk\r\n\r\nbody\r\n.\r\n");
    assert!(c.reply().starts_with("250 2.0.0 Ok: queued as "));
    for _ in 0..4 {
        assert_eq!(c.cmd("NOOP"), "250 2.0.0 Ok");
    }
    // The fifth and sixth are past the limit: two errors, the hard limit.
    assert_eq!(c.cmd("NOOP"), "250 2.0.0 Ok");
    assert_eq!(c.cmd("NOOP"), "250 2.0.0 Ok");
    assert_eq!(c.reply(), "421 4.7.0 mail.ywnds.com Error: too many errors");
    assert_eq!(c.reply(), "<closed>");
    assert!(m.wait_log(
        "too many errors after NOOP from unknown[127.0.0.1]",
        Duration::from_secs(5)
    ));
}

#[test]
fn undeliverable_mail_bounces_to_the_sender_as_rfc3464() {
    // Notices carry only the original's headers, so they fit the mailbox the original did not.
    let m = Instance::mail("mailbox_size_limit = 5000\nbounce_size_limit = 1000\n");
    m.set_aliases("postmaster: root\nroot: openstack\nbroken: nosuchuser\n");
    m.start();
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    // Too big for hadoop's mailbox (5.2.2), and an alias to a user that does not exist (5.1.1).
    let big = format!("Subject: too big\r\n\r\n{}", "y".repeat(8000));
    c.queued("openstack@ywnds.com", &["hadoop@ywnds.com"], big.as_bytes());
    c.queued(
        "openstack@ywnds.com",
        &["broken@ywnds.com"],
        b"Subject: to broken\r\n\r\nx",
    );
    let notices = m.wait_maildir("openstack", 2);
    assert!(
        m.log_text().contains("sender non-delivery notification: "),
        "{}",
        m.log_text()
    );
    let dir = m.root.path().join("dsn");
    std::fs::create_dir(&dir).unwrap();
    for (i, n) in notices.iter().enumerate() {
        std::fs::write(dir.join(format!("{i}.eml")), n).unwrap();
    }
    // Check the structure with Python's email parser, a real RFC 3464 reader.
    let script = r#"
import email, sys, glob
found = {}
for path in sorted(glob.glob(sys.argv[1] + '/*.eml')):
    m = email.message_from_binary_file(open(path, 'rb'))
    assert m.get_content_type() == 'multipart/report', m.get_content_type()
    assert m.get_param('report-type') == 'delivery-status'
    assert m['Return-Path'] == '<>', m['Return-Path']
    assert 'MAILER-DAEMON' in m['From'] and m['Subject'] == 'Undelivered Mail Returned to Sender'
    assert m['Auto-Submitted'] == 'auto-replied'
    parts = m.get_payload()
    assert [p.get_content_type() for p in parts][:2] == ['text/plain', 'message/delivery-status'], [p.get_content_type() for p in parts]
    assert parts[2].get_content_type() in ('message/rfc822', 'text/rfc822-headers')
    blocks = parts[1].get_payload()
    assert 'Reporting-MTA' in blocks[0] and 'Arrival-Date' in blocks[0]
    rcpt = blocks[1]
    found[rcpt['Final-Recipient']] = (rcpt['Action'], rcpt['Status'])
print(found)
assert found['rfc822; hadoop@ywnds.com'] == ('failed', '5.2.2'), found
assert found['rfc822; nosuchuser@ywnds.com'] == ('failed', '5.1.1'), found
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        m.log_text()
            .contains("to=<nosuchuser@ywnds.com>, orig_to=<broken@ywnds.com>, relay=local"),
        "{}",
        m.log_text()
    );
    assert!(m
        .log_text()
        .contains("status=bounced (unknown user: \"nosuchuser\")"));
}

#[test]
fn bounces_of_bounces_go_to_postmaster_never_back() {
    let m = Instance::mail("");
    m.set_aliases("postmaster: hadoop\n");
    m.start();
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    // A bounce (null sender) to a user that does not exist: a double bounce.
    c.cmd("MAIL FROM:<>");
    let mut r = c.cmd("RCPT TO:<ghost@ywnds.com>");
    assert!(r.starts_with("550"), "{r}");
    // Accepted for an alias whose target is missing, so it bounces at delivery.
    m.set_aliases("postmaster: hadoop\nghost: nosuchuser\n");
    r = c.cmd("RCPT TO:<ghost@ywnds.com>");
    assert_eq!(r, "250 2.1.5 Ok");
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(b"Subject: a bounce\r\n\r\nx\r\n.\r\n");
    assert!(c.reply().starts_with("250 "));
    let n = m.wait_maildir("hadoop", 1);
    assert!(
        headers_of(&n[0]).contains("Return-Path: <double-bounce@ywnds.com>"),
        "{}",
        headers_of(&n[0])
    );
    assert!(m.wait_log(
        "postmaster non-delivery notification: ",
        Duration::from_secs(5)
    ));
}

#[test]
fn corrupt_queue_files_are_set_aside_and_incomplete_ones_ignored() {
    let m = Instance::mail("");
    m.start();
    use std::os::unix::fs::PermissionsExt;
    // Queue files belong to the queue's owner (mail_owner when running as root);
    // each is made complete elsewhere and renamed in, as cleanup does.
    let owner =
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(m.queue.join("incoming")).unwrap());
    for (name, content, mode) in [
        ("ABCDEF12345", &b"this is not a queue file"[..], 0o700),
        ("ABCDEF99999", b"being written", 0o600),
    ] {
        let staged = m.queue.join(name);
        std::fs::write(&staged, content).unwrap();
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode)).unwrap();
        nix::unistd::chown(&staged, Some(owner.into()), None).unwrap();
        std::fs::rename(&staged, m.queue.join("incoming").join(name)).unwrap();
    }
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    c.queued("a@example.org", &["openstack@ywnds.com"], b"x");
    m.wait_maildir("openstack", 1);
    assert!(
        wait_for(Duration::from_secs(5), || m.queue_files("corrupt")
            == ["ABCDEF12345"]),
        "{:?}",
        m.queue_files("corrupt")
    );
    assert!(m.log_text().contains(
        "saving corrupt file \"ABCDEF12345\" from queue \"active\" to queue \"corrupt\""
    ));
    assert_eq!(
        m.queue_files("incoming"),
        ["ABCDEF99999"],
        "an incomplete file is never scheduled"
    );
}

#[test]
fn pflogsumm_reads_the_log_and_counts_match() {
    let m = Instance::mail("minimal_backoff_time = 60s\nmaximal_backoff_time = 60s\n");
    m.set_aliases("postmaster: root\nroot: openstack\nbroken: nosuchuser\n");
    m.start();
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    for i in 0..3 {
        c.queued(
            "a@example.org",
            &["openstack@ywnds.com"],
            format!("Subject: {i}\r\n\r\nx").as_bytes(),
        );
    }
    c.queued(
        "hadoop@ywnds.com",
        &["broken@ywnds.com"],
        b"Subject: b\r\n\r\nx",
    );
    c.queued(
        "a@example.org",
        &["someone@163.com"],
        b"Subject: d\r\n\r\nx",
    );
    c.cmd("MAIL FROM:<a@example.org>");
    assert!(c.cmd("RCPT TO:<ghost@ywnds.com>").starts_with("550"));
    c.cmd("QUIT");
    // 5 received over SMTP (a bounce notice is not "received", as with Postfix);
    // 3 delivered + the notice to hadoop; one bounce; one deferral (no smtp transport yet).
    m.wait_maildir("openstack", 3);
    m.wait_maildir("hadoop", 1);
    assert!(m.wait_log("status=deferred", Duration::from_secs(5)));
    let t = testkit::pflogsumm(&m.log);
    assert_eq!(t.get("received"), Some(&5), "{t:?}");
    assert_eq!(t.get("delivered"), Some(&4), "{t:?}");
    assert_eq!(t.get("bounced"), Some(&1), "{t:?}");
    assert_eq!(t.get("deferred"), Some(&1), "{t:?}");
    assert_eq!(t.get("rejected"), Some(&1), "{t:?}");
}

/// Peak resident memory of a process, in KiB (VmHWM).
fn peak_rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_50_mb_message_does_not_cost_50_mb_of_memory_in_any_daemon() {
    let m = Instance::mail("message_size_limit = 60000000\nmailbox_size_limit = 0\n");
    m.start();
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    c.cmd("MAIL FROM:<a@example.org> SIZE=52000000");
    c.cmd("RCPT TO:<openstack@ywnds.com>");
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(b"Subject: big\r\n\r\n");
    let line = [b'z'; 998];
    let mut sent = 0;
    while sent < 50_000_000 {
        c.send(&line);
        c.send(b"\r\n");
        sent += 1000;
    }
    c.send(b".\r\n");
    let r = c.reply();
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
    let msgs = m.wait_maildir("openstack", 1);
    assert!(msgs[0].len() > 49_000_000);
    drop(msgs);
    for service in ["smtpd", "cleanup", "qmgr", "local"] {
        let pid = m
            .children()
            .into_iter()
            .find(|p| p.args.first().is_some_and(|a| a.ends_with(service)))
            .expect(service)
            .pid;
        let kib = peak_rss_kib(pid);
        eprintln!("{service}: peak RSS {kib} KiB");
        assert!(kib > 0 && kib < 30 * 1024, "{service} peaked at {kib} KiB");
    }
}

#[test]
fn mbox_delivery_waits_for_a_mail_readers_fcntl_lock() {
    let m = Instance::mail("home_mailbox =\n");
    m.start();
    let spool = m.root.path().join("spool/hadoop");
    std::fs::write(&spool, b"").unwrap();
    let owner =
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(m.home.join("hadoop")).unwrap());
    nix::unistd::chown(&spool, Some(owner.into()), None).unwrap();
    // A mail reader holds a POSIX lock for two seconds.
    let mut reader = std::process::Command::new("python3")
        .arg("-c")
        .arg("import fcntl, sys, time\nf = open(sys.argv[1], 'r+')\nfcntl.lockf(f, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(2)\n")
        .arg(&spool)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(reader.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    c.queued(
        "a@example.org",
        &["hadoop@ywnds.com"],
        b"Subject: locked\r\n\r\nwaits",
    );
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        std::fs::read(&spool).unwrap(),
        b"",
        "written while the reader held its lock"
    );
    reader.wait().unwrap();
    assert!(wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&spool)
            .unwrap_or_default()
            .contains("waits")
    }));
}

#[test]
fn alias_targets_files_commands_includes_extensions_and_forwarding() {
    let m = Instance::mail("recipient_delimiter = +\n");
    let out_dir = shared_dir(&m, "out");
    let include = m.root.path().join("team.list");
    std::fs::write(&include, "# the team\nhadoop\n").unwrap();
    let aliases = format!(
        "postmaster: root\nroot: openstack\nlog: {out}/archive\npipe: \"|/bin/cat > {out}/piped\"\nteam: :include:{inc}\nfar: friend@163.com, openstack\n",
        out = out_dir.display(),
        inc = include.display()
    );
    m.set_aliases(&aliases);
    m.start();
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    for rcpt in ["log", "pipe", "team", "openstack+lists", "far"] {
        let r = c.mail(
            "a@example.org",
            &[&format!("{rcpt}@ywnds.com")],
            format!("Subject: to {rcpt}\r\n\r\nbody for {rcpt}").as_bytes(),
        );
        assert!(r.starts_with("250 "), "{rcpt}: {r}");
    }
    assert!(
        wait_for(Duration::from_secs(10), || std::fs::read_to_string(
            out_dir.join("archive")
        )
        .is_ok_and(|t| t.contains("body for log"))),
        "{}",
        m.log_text()
    );
    let archive = std::fs::read_to_string(out_dir.join("archive")).unwrap();
    assert!(
        archive.starts_with("From a@example.org  "),
        "file targets are mbox-style: {archive}"
    );
    assert!(
        wait_for(Duration::from_secs(10), || std::fs::read_to_string(
            out_dir.join("piped")
        )
        .is_ok_and(|t| t.contains("body for pipe"))),
        "{}",
        m.log_text()
    );
    // As Postfix's local gives a command: a `From ` line, then the
    // delivery headers.
    let piped = std::fs::read_to_string(out_dir.join("piped")).unwrap();
    assert!(
        piped.starts_with("From a@example.org  ")
            && piped.contains("\nReturn-Path: <a@example.org>\nX-Original-To: "),
        "{piped}"
    );
    let hadoop = m.wait_maildir("hadoop", 1);
    assert!(String::from_utf8_lossy(&hadoop[0]).contains("body for team"));
    // user+ext is delivered to the user; far@ reaches openstack locally and 163.com by forwarding.
    let o = m.wait_maildir("openstack", 2);
    assert!(o
        .iter()
        .any(|x| String::from_utf8_lossy(x).contains("X-Original-To: openstack+lists@ywnds.com")));
    let log = m.log_text();
    assert!(
        log.contains("status=sent (delivered to command: /bin/cat > "),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "status=sent (delivered to file: {}/archive)",
            out_dir.display()
        )),
        "{log}"
    );
    // The forward is the last message sent: its delivery may still be under way.
    assert!(
        m.wait_log("status=sent (forwarded as ", Duration::from_secs(5)),
        "{}",
        m.log_text()
    );
    assert!(
        // It keeps the alias as its original recipient, as Postfix's does.
        m.wait_log(
            "to=<friend@163.com>, orig_to=<far@ywnds.com>, relay=none",
            Duration::from_secs(5)
        ),
        "the forwarded copy waits for the smtp transport"
    );
}

#[test]
fn mail_to_commands_and_files_obeys_the_allow_parameters() {
    let m = Instance::mail("allow_mail_to_commands = forward\nallow_mail_to_files = forward\n");
    m.set_aliases("pipe: \"|/bin/true\"\nlog: /tmp/never-written\n");
    m.start();
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    c.queued("openstack@ywnds.com", &["pipe@ywnds.com"], b"x");
    c.queued("openstack@ywnds.com", &["log@ywnds.com"], b"x");
    assert!(
        m.wait_log(
            "status=bounced (mail to command is restricted: \"/bin/true\")",
            Duration::from_secs(10)
        ),
        "{}",
        m.log_text()
    );
    assert!(m.wait_log(
        "status=bounced (mail to file is restricted: \"/tmp/never-written\")",
        Duration::from_secs(10)
    ));
    m.wait_maildir("openstack", 2);
}

#[test]
fn deferred_mail_expires_and_returns_to_the_sender() {
    let m = Instance::mail("maximal_queue_lifetime = 2s\n");
    m.start();
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    c.queued(
        "hadoop@ywnds.com",
        &["friend@163.com"],
        b"Subject: far away\r\n\r\nx",
    );
    assert!(m.wait_log(
        "status=deferred (mail transport unavailable)",
        Duration::from_secs(5)
    ));
    let notice = m.wait_maildir("hadoop", 1);
    let text = String::from_utf8_lossy(&notice[0]);
    assert!(
        text.contains("Final-Recipient: rfc822; friend@163.com") && text.contains("Status: 4.3.0"),
        "{text}"
    );
    assert!(m
        .log_text()
        .contains("from=<hadoop@ywnds.com>, status=expired, returned to sender"));
    assert!(wait_for(Duration::from_secs(5), || m
        .queue_files("deferred")
        .is_empty()
        && m.queue_files("active").is_empty()));
}

#[test]
fn as_root_mail_is_written_with_the_recipients_ids() {
    let m = Instance::mail("");
    m.start();
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    c.queued("a@example.org", &["openstack@ywnds.com"], b"x");
    m.wait_maildir("openstack", 1);
    use std::os::unix::fs::MetadataExt;
    let home_uid = std::fs::metadata(m.home.join("openstack")).unwrap().uid();
    for p in [
        m.home.join("openstack/Maildir"),
        m.home.join("openstack/Maildir/new"),
        m.maildir("openstack")[0].clone(),
    ] {
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!(
            md.uid(),
            home_uid,
            "{} is owned by the recipient",
            p.display()
        );
    }
    if nix::unistd::Uid::effective().is_root() {
        assert_ne!(home_uid, 0, "test users are unprivileged");
    }
}

#[test]
fn garbage_on_every_daemon_socket_leaves_them_serving() {
    let m = Instance::mail("");
    m.start();
    let pids: Vec<i32> = ["cleanup", "qmgr", "local", "bounce"]
        .iter()
        .map(|s| m.child_pid(s).unwrap())
        .collect();
    let junk: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for socket in [
        "public/cleanup",
        "public/qmgr",
        "private/local",
        "private/bounce",
    ] {
        for payload in [
            &junk[..],
            &[0xff, 0xff, 0xff, 0xff][..],
            b"\x00\x00\x00\x05hello",
            b"",
        ] {
            let mut s = std::os::unix::net::UnixStream::connect(m.queue.join(socket)).unwrap();
            let _ = std::io::Write::write_all(&mut s, payload);
        }
    }
    // Every daemon is still the same process and the mail path still works.
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    c.queued(
        "a@example.org",
        &["openstack@ywnds.com"],
        b"Subject: after the junk\r\n\r\nstill here",
    );
    m.wait_maildir("openstack", 1);
    let now: Vec<i32> = ["cleanup", "qmgr", "local", "bounce"]
        .iter()
        .map(|s| m.child_pid(s).unwrap())
        .collect();
    assert_eq!(now, pids, "a daemon restarted after garbage input");
    assert!(
        m.log_text().contains("handshake"),
        "bad peers are logged:\n{}",
        m.log_text()
    );
}

#[test]
fn a_queue_file_whose_commit_a_crash_cut_short_is_never_delivered() {
    // What a system crash inside cleanup's fsync can leave: the readiness
    // bit on disk, a page of the content not. qmgr checks the checksum.
    let m = Instance::mail("");
    m.start();
    let qmgr = m.child_pid("qmgr").expect("qmgr runs");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(qmgr), nix::sys::signal::SIGSTOP).unwrap();
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    let body = format!("Subject: torn\r\n\r\n{}\r\n", "z".repeat(10_000));
    let reply = c.mail("a@example.org", &["openstack@ywnds.com"], body.as_bytes());
    assert!(reply.starts_with("250 "), "{reply}");
    let id = reply.trim().rsplit(' ').next().unwrap().to_owned();
    let path = m.queue.join("incoming").join(&id);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 100;
    assert_eq!(bytes[at], b'z');
    bytes[at] = b'Z';
    // Rewritten in place, as the disk would have it: same inode, same mode.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes))
        .unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(qmgr), nix::sys::signal::SIGCONT).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || m.queue_files("corrupt")
            == [id.clone()]),
        "{:?}",
        m.queue_files("corrupt")
    );
    assert!(m.log_text().contains("checksum mismatch"));
    // The next message is delivered; the damaged one never was.
    let reply = c.mail(
        "a@example.org",
        &["openstack@ywnds.com"],
        b"Subject: next\r\n\r\nok\r\n",
    );
    assert!(reply.starts_with("250 "), "{reply}");
    let got = m.exactly("openstack", 1);
    assert!(String::from_utf8_lossy(&got[0]).contains("Subject: next"));
}

#[test]
fn a_queue_file_cleanup_cannot_create_is_a_451_not_a_hung_session() {
    let m = Instance::mail("");
    m.start();
    // incoming/ becomes a file: once the files cleanup named ahead of time
    // (a batch of them) are used up, it cannot create another.
    let incoming = m.queue.join("incoming");
    let aside = m.queue.join("incoming.aside");
    std::fs::rename(&incoming, &aside).unwrap();
    std::fs::write(&incoming, b"not a directory").unwrap();
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    let mut reply = String::new();
    for _ in 0..100 {
        reply = c.mail(
            "a@example.org",
            &["openstack@ywnds.com"],
            b"Subject: first\r\n\r\nnot queued\r\n",
        );
        if !reply.starts_with("250 ") {
            break;
        }
    }
    assert!(reply.starts_with("451 4.3.0 "), "{reply}");
    assert!(m.wait_log("create queue file", Duration::from_secs(5)));
    // The session goes on, and once the queue is whole again mail flows.
    std::fs::remove_file(&incoming).unwrap();
    std::fs::rename(&aside, &incoming).unwrap();
    let reply = c.mail(
        "a@example.org",
        &["openstack@ywnds.com"],
        b"Subject: second\r\n\r\nqueued\r\n",
    );
    assert!(reply.starts_with("250 "), "{reply}");
    assert!(wait_for(Duration::from_secs(10), || m
        .maildir("openstack")
        .iter()
        .any(
            |p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("Subject: second"))
        )));
}

#[test]
fn commands_postfix_knows_but_does_not_offer_get_its_replies_and_statistics() {
    let m = Instance::mail("");
    m.start();
    let (mut c, _) = Smtp::connect(m.port);
    let ehlo = c.cmd("EHLO client.example");
    assert!(ehlo.contains("250-ETRN"), "{ehlo}");
    // A blank line is bad syntax, not a command (and not counted as one).
    assert_eq!(c.cmd(""), "500 5.5.2 Error: bad syntax");
    assert_eq!(c.cmd("   "), "500 5.5.2 Error: bad syntax");
    // XCLIENT and XFORWARD: no client is authorized.
    assert_eq!(
        c.cmd("XCLIENT"),
        "501 5.5.4 Syntax: XCLIENT attribute=value..."
    );
    assert_eq!(
        c.cmd("XFORWARD NAME=spoofed.example"),
        "550 5.7.0 Error: insufficient authorization"
    );
    assert_eq!(
        c.cmd("STARTTLS"),
        "502 5.5.1 Error: command not implemented"
    );
    assert_eq!(
        c.cmd("AUTH LOGIN"),
        "503 5.5.1 Error: authentication not enabled"
    );
    // DATA's order is checked before its syntax.
    assert_eq!(c.cmd("DATA now"), "503 5.5.1 Error: need RCPT command");
    // AUTH= is ignored without SASL, as by Postfix.
    assert_eq!(
        c.cmd("MAIL FROM:<someone@example.org> AUTH=<>"),
        "250 2.1.0 Ok"
    );
    assert_eq!(c.cmd("DATA now"), "554 5.5.1 Error: no valid recipients");
    assert_eq!(
        c.cmd("XCLIENT NAME=x"),
        "503 5.5.1 Error: MAIL transaction in progress"
    );
    assert_eq!(c.cmd("RCPT TO:<openstack@ywnds.com>"), "250 2.1.5 Ok");
    assert_eq!(c.cmd("DATA now"), "501 5.5.4 Syntax: DATA");
    assert_eq!(c.cmd("RSET"), "250 2.0.0 Ok");
    assert_eq!(
        c.cmd("VRFY nosuchuser"),
        "550 5.1.1 <nosuchuser>: Recipient address rejected: User unknown in local recipient table"
    );
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye");
    // Counted per command, in the order of Postfix's command table.
    assert!(
        m.wait_log(
            "disconnect from unknown[127.0.0.1] ehlo=1 xclient=0/2 xforward=0/1 starttls=0/1 \
             auth=0/1 mail=1 rcpt=1 data=0/3 rset=1 vrfy=0/1 quit=1 commands=5/14",
            Duration::from_secs(5)
        ),
        "{}",
        m.log_text()
    );
    // No sender: no `from=` in the reject line, as Postfix logs it.
    assert!(m.log_text().contains(
        "NOQUEUE: reject: VRFY from unknown[127.0.0.1]: 550 5.1.1 <nosuchuser>: Recipient address \
         rejected: User unknown in local recipient table; to=<nosuchuser> proto=ESMTP helo=<client.example>"
    ));
}

#[test]
fn postmaster_mailer_daemon_and_double_bounce_are_taken_without_an_alias() {
    let m = Instance::mail("");
    m.set_aliases("admin: openstack\n");
    m.start();
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    assert_eq!(c.cmd("MAIL FROM:<someone@example.org>"), "250 2.1.0 Ok");
    for rcpt in [
        "postmaster@ywnds.com",
        "Postmaster",
        "MAILER-DAEMON@ywnds.com",
        "double-bounce@ywnds.com",
    ] {
        assert_eq!(
            c.cmd(&format!("RCPT TO:<{rcpt}>")),
            "250 2.1.5 Ok",
            "{rcpt}"
        );
    }
    // Only the exact names.
    assert!(c
        .cmd("RCPT TO:<postmaster+x@ywnds.com>")
        .starts_with("550 5.1.1 "));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(b"Subject: for the postmaster\r\n\r\nbody\r\n.\r\n");
    assert!(c.reply().starts_with("250 2.0.0 Ok: queued as "));
    c.cmd("QUIT");
    // local drops mail for the two without an alias with a warning; qmgr
    // drops mail for double-bounce itself. Nothing bounces.
    for line in [
        "warning: required alias not found: postmaster",
        "to=<postmaster@ywnds.com>, relay=local,",
        "warning: required alias not found: mailer-daemon",
        "to=<double-bounce@ywnds.com>, relay=none,",
        "status=sent (undeliverable postmaster notification discarded)",
    ] {
        assert!(
            m.wait_log(line, Duration::from_secs(10)),
            "{line}\n{}",
            m.log_text()
        );
    }
    assert!(wait_for(Duration::from_secs(10), || m
        .log_text()
        .contains(": removed")));
    let log = m.log_text();
    // postmaster@ and Postmaster (another original recipient) are two
    // recipients, as in Postfix's cleanup; MAILER-DAEMON the third.
    assert_eq!(log.matches("status=sent (discarded)").count(), 3, "{log}");
    assert!(!log.contains("status=bounced"), "{log}");
    assert!(!log.contains("non-delivery notification"), "{log}");
}

#[test]
fn a_client_past_the_soft_error_limit_waits_for_354_too() {
    let m = Instance::mail("smtpd_soft_error_limit = 1\nsmtpd_error_sleep_time = 3s\n");
    m.start();
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    assert_eq!(c.cmd("FOO"), "500 5.5.2 Error: command not recognized");
    // From now on every reply waits smtpd_error_sleep_time, DATA's 354 too.
    assert_eq!(c.cmd("MAIL FROM:<someone@example.org>"), "250 2.1.0 Ok");
    assert_eq!(c.cmd("RCPT TO:<openstack@ywnds.com>"), "250 2.1.5 Ok");
    c.send(b"DATA\r\n");
    assert!(
        !c.arrives_within(Duration::from_secs(1)),
        "354 was not delayed"
    );
    assert!(c.reply().starts_with("354 "));
    c.send(b"Subject: paced\r\n\r\nbody\r\n.\r\n");
    assert!(c.reply().starts_with("250 2.0.0 Ok: queued as "));
}

#[test]
fn vrfy_arguments_and_overlong_lines_are_read_as_postfix_reads_them() {
    let m = Instance::mail("");
    m.start();
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    // The argument comes back as given; its address is checked as RCPT's.
    assert_eq!(c.cmd("VRFY <openstack>"), "252 2.0.0 <openstack>");
    assert_eq!(
        c.cmd("VRFY openstack@ywnds.com SMTPUTF8"),
        "252 2.0.0 openstack@ywnds.com"
    );
    for bad in [
        "VRFY <>",
        "VRFY a@",
        "VRFY a b",
        "VRFY openstack@ywnds..com",
    ] {
        assert_eq!(
            c.cmd(bad),
            "501 5.1.3 Bad recipient address syntax",
            "{bad}"
        );
    }
    // Only the first 2048 bytes of a line count: this address never closes.
    assert_eq!(c.cmd("MAIL FROM:<someone@example.org>"), "250 2.1.0 Ok");
    let long = format!("RCPT TO:<{}@ywnds.com>", "x".repeat(3000));
    assert_eq!(c.cmd(&long), "501 5.1.3 Bad recipient address syntax");
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye");
}

/// A directory any delivery (whatever user it runs as) may write in.
fn shared_dir(m: &testkit::MailInstance, name: &str) -> std::path::PathBuf {
    let dir = m.root.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    dir
}

/// A record as Postfix writes it: type, length in 7-bit groups, data.
fn postfix_record(kind: u8, data: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    let mut len = data.len();
    loop {
        let low = (len & 0x7f) as u8;
        len >>= 7;
        out.push(if len == 0 { low } else { low | 0x80 });
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(data);
    out
}

/// A queue file as Postfix's cleanup writes it (no checksum), for
/// `rcpt`, with `extra` envelope records and `content` records.
fn postfix_queue_file(rcpt: &str, extra: &[(u8, &[u8])], content: &[u8]) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sizes = |size: usize, offset: usize| {
        format!(
            "{size:>15} {offset:>15} {:>15} {:>15} {size:>15} {:>15}",
            1, 0, 0
        )
    };
    let mut head = postfix_record(b'C', sizes(0, 0).as_bytes());
    let mut envelope = vec![
        (b'T', format!("{now} 0").into_bytes()),
        (b'A', format!("create_time={now}").into_bytes()),
        (b'F', Vec::new()),
        (b'S', b"a@example.org".to_vec()),
    ];
    envelope.extend(extra.iter().map(|(k, d)| (*k, d.to_vec())));
    envelope.extend([
        (b'O', rcpt.as_bytes().to_vec()),
        (b'R', rcpt.as_bytes().to_vec()),
        (b'M', Vec::new()),
    ]);
    for (kind, data) in envelope {
        head.extend(postfix_record(kind, &data));
    }
    let offset = head.len();
    let mut file = postfix_record(b'C', sizes(content.len(), offset).as_bytes());
    file.extend_from_slice(&head[file.len()..]);
    file.extend_from_slice(content);
    file.extend(postfix_record(b'X', b""));
    file.extend(postfix_record(b'E', b""));
    file
}

/// Puts a complete queue file into incoming/ as cleanup would (owned by
/// the queue's owner, made whole elsewhere and renamed in), and wakes qmgr
/// with a message of its own.
fn put_in_incoming(m: &testkit::MailInstance, id: &str, file: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    let owner =
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(m.queue.join("incoming")).unwrap());
    let staged = m.queue.join(id);
    std::fs::write(&staged, file).unwrap();
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o700)).unwrap();
    nix::unistd::chown(&staged, Some(owner.into()), None).unwrap();
    std::fs::rename(&staged, m.queue.join("incoming").join(id)).unwrap();
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    c.queued("a@example.org", &["openstack@ywnds.com"], b"x");
}

#[test]
fn postfix_mail_bound_for_a_content_filter_or_redirect_goes_there() {
    // Files Postfix's cleanup left with a content filter (`L`) or a
    // redirect (`>`) record: qmgr obeys them as Postfix's does.
    let m = Instance::mail("");
    m.start();
    let content = postfix_record(b'N', b"Subject: scan me");
    let files = [
        (
            "4A1B2C3D4E6",
            "hadoop@ywnds.com",
            b'L',
            &b"discard:content filtered"[..],
        ),
        (
            "4A1B2C3D4E7",
            "someone@remote.example",
            b'>',
            &b"hadoop@ywnds.com"[..],
        ),
    ];
    for (id, rcpt, kind, what) in files {
        put_in_incoming(&m, id, &postfix_queue_file(rcpt, &[(kind, what)], &content));
    }
    // local logs a delivery just after the file is in new/: both lines
    // are waited for.
    assert!(
        wait_for(Duration::from_secs(10), || m.maildir("hadoop").len() == 1
            && m.log_text().contains("4A1B2C3D4E6: to=<hadoop@ywnds.com>")
            && m.log_text().contains("4A1B2C3D4E7: to=<hadoop@ywnds.com>")),
        "{}",
        m.log_text()
    );
    let log = m.log_text();
    assert!(
        log.contains("4A1B2C3D4E6: to=<hadoop@ywnds.com>, relay=none")
            && log.contains("status=sent (content filtered)"),
        "{log}"
    );
    assert!(
        log.contains(
            "4A1B2C3D4E7: to=<hadoop@ywnds.com>, orig_to=<someone@remote.example>, relay=local"
        ),
        "{log}"
    );
    assert!(!log.contains("remote.example:"), "{log}");
}

#[test]
fn a_command_never_gets_a_message_its_queue_file_cuts_short() {
    // Postfix's own queue files carry no checksum, so damage inside the
    // content shows only when an agent reads it: the delivery is deferred,
    // not reported sent after the command saw half a message.
    let m = Instance::mail("");
    let out_dir = shared_dir(&m, "out");
    m.set_aliases(&format!(
        "postmaster: root\nroot: openstack\npipe: \"|/bin/cat > {}/piped\"\n",
        out_dir.display()
    ));
    m.start();
    let mut content = postfix_record(b'N', b"Subject: cut short");
    content.extend(postfix_record(b'N', b""));
    content.extend(postfix_record(b'N', b"first line"));
    content.extend(postfix_record(b')', b"not a content record"));
    content.extend(postfix_record(b'N', b"last line"));
    let file = postfix_queue_file("pipe@ywnds.com", &[], &content);
    put_in_incoming(&m, "4A1B2C3D4E5", &file);

    assert!(
        m.wait_log("4A1B2C3D4E5: to=<pipe@ywnds.com>", Duration::from_secs(10)),
        "{}",
        m.log_text()
    );
    let log = m.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("4A1B2C3D4E5: to=<pipe@ywnds.com>"))
        .unwrap();
    assert!(
        line.contains("status=deferred") && line.contains("read queue file"),
        "{line}"
    );
    assert!(
        wait_for(Duration::from_secs(5), || m
            .queue_files("deferred")
            .contains(&"4A1B2C3D4E5".to_owned())),
        "{:?}",
        m.queue_files("deferred")
    );
}
