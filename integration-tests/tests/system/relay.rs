//! The smtp delivery agent: relaying to other domains through relayhost,
//! transport_maps and MX records, against a scripted fake MX and a second
//! postfix-rs instance; each case ends delivered, deferred or bounced,
//! never lost and never duplicated.

use std::time::Duration;

use testkit::fake_mx::{FakeMx, Script};
use testkit::{wait_for, Instance, MailInstance, Smtp};

/// A mail instance that relays everything to `[127.0.0.1]:port`.
fn relaying_to(port: u16, extra: &str) -> MailInstance {
    let m = Instance::mail(&format!("relayhost = [127.0.0.1]:{port}\n{extra}"));
    m.add_smtp();
    m.start();
    m.wait_children(&["smtp"]);
    m
}

fn send(m: &MailInstance, to: &[&str], data: &str) -> String {
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    // Dot-stuffed as an SMTP client must.
    let wire = data.replace("\n.", "\n..").replace('\n', "\r\n");
    let r = c.mail("hadoop@ywnds.com", to, wire.as_bytes());
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
    c.cmd("QUIT");
    r.rsplit(' ').next().unwrap().to_owned()
}

#[test]
fn relayhost_gets_the_message_byte_exact_over_one_reused_connection() {
    let mx = FakeMx::start("127.0.0.1", Script::default());
    let m = relaying_to(mx.port, "");
    let id = send(
        &m,
        &["someone@163.com"],
        "Subject: relay\n\n.leading dot\nline\n",
    );
    let line = m.log_line(&format!("{id}: to=<someone@163.com>"));
    assert!(
        line.contains(&format!(", relay=127.0.0.1[127.0.0.1]:{}, delay=", mx.port))
            && line.ends_with("dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as FAKE)"),
        "{line}"
    );
    let got = mx.accepted();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].sender, "hadoop@ywnds.com");
    assert_eq!(got[0].recipients, ["someone@163.com"]);
    let data = String::from_utf8_lossy(&got[0].data);
    assert!(
        data.contains("\r\nSubject: relay\r\n")
            && data.ends_with("\r\n\r\n..leading dot\r\nline\r\n\r\n"),
        "{data:?}"
    );
    assert!(mx
        .commands()
        .iter()
        .any(|c| c.starts_with("MAIL FROM:<hadoop@ywnds.com> SIZE=") && !c.contains("BODY")));
    // BODY=8BITMIME from the client goes on to the next hop.
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    assert!(c
        .cmd("MAIL FROM:<hadoop@ywnds.com> BODY=8BITMIME")
        .starts_with("250"));
    assert!(c.cmd("RCPT TO:<eight@163.com>").starts_with("250"));
    c.cmd("DATA");
    c.send("Subject: caf\u{e9}\r\n\r\n\u{e9}t\u{e9}\r\n.\r\n".as_bytes());
    assert!(c.reply().starts_with("250"));
    c.cmd("QUIT");
    assert!(
        wait_for(Duration::from_secs(10), || mx
            .commands()
            .iter()
            .any(|c| c.starts_with("MAIL FROM:<hadoop@ywnds.com> SIZE=")
                && c.ends_with(" BODY=8BITMIME"))),
        "{:?}",
        mx.commands()
    );
    assert!(wait_for(Duration::from_secs(5), || mx.accepted().len() == 2));
    assert!(String::from_utf8_lossy(&mx.accepted()[1].data).contains("\r\n\r\n\u{e9}t\u{e9}\r\n"));
    // That one went over the first message's connection; once it expired
    // (smtp_connection_cache_time_limit), a new one is opened and reused.
    let line = m.log_line("to=<eight@163.com>");
    assert!(line.contains(", conn_use=2, delay="), "{line}");
    std::thread::sleep(Duration::from_secs(3));
    let id2 = send(&m, &["other@163.com"], "Subject: second\n\nx\n");
    let line = m.log_line(&format!("{id2}: to=<other@163.com>"));
    assert!(!line.contains("conn_use="), "{line}");
    let id3 = send(&m, &["third@163.com"], "Subject: third\n\nx\n");
    let line = m.log_line(&format!("{id3}: to=<third@163.com>"));
    assert!(line.contains(", conn_use=2, delay="), "{line}");
    assert_eq!(mx.connections(), 2);
    assert!(m.wait_log(&format!("{id3}: removed"), Duration::from_secs(5)));
}

#[test]
fn per_recipient_answers_defer_bounce_and_deliver_exactly_once() {
    let mx = FakeMx::start(
        "127.0.0.1",
        Script {
            rcpt: vec![
                (
                    "later@163.com".into(),
                    "451 4.3.0 <later@163.com>: try again later".into(),
                ),
                (
                    "nobody@163.com".into(),
                    "550 5.1.1 <nobody@163.com>: Recipient address rejected: User unknown".into(),
                ),
            ],
            ..Script::default()
        },
    );
    let m = relaying_to(
        mx.port,
        "minimal_backoff_time = 3600s\nmaximal_backoff_time = 3600s\n",
    );
    let id = send(
        &m,
        &["ok@163.com", "later@163.com", "nobody@163.com"],
        "Subject: three\n\nx\n",
    );
    let later = m.log_line(&format!("{id}: to=<later@163.com>"));
    assert!(later.contains("dsn=4.3.0, status=deferred (host 127.0.0.1[127.0.0.1] said: 451 4.3.0 <later@163.com>: try again later (in reply to RCPT TO command))"), "{later}");
    let nobody = m.log_line(&format!("{id}: to=<nobody@163.com>"));
    assert!(nobody.contains("dsn=5.1.1, status=bounced (host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <nobody@163.com>: Recipient address rejected: User unknown (in reply to RCPT TO command))"), "{nobody}");
    assert!(m
        .log_line(&format!("{id}: to=<ok@163.com>"))
        .contains("status=sent"));
    // The sender learns of the bounce, with the server's answer (wrapped
    // at 79 columns, as Postfix's bounce wraps it).
    let notice = String::from_utf8_lossy(&m.wait_maildir("hadoop", 1)[0]).into_owned();
    assert!(notice.contains("\nFinal-Recipient: rfc822; nobody@163.com\nOriginal-Recipient: rfc822;nobody@163.com\nAction: failed\nStatus: 5.1.1\nRemote-MTA: dns; 127.0.0.1\nDiagnostic-Code: smtp; 550 5.1.1 <nobody@163.com>: Recipient address rejected:\n    User unknown\n"), "{notice}");
    // The deferral shows in the queue; once the server accepts, a flush delivers it.
    assert!(wait_for(Duration::from_secs(10), || m
        .queue_files("deferred")
        .len()
        == 1));
    let listing = String::from_utf8_lossy(&m.run("postqueue", &["-p"]).stdout).into_owned();
    assert!(listing.contains("(host 127.0.0.1[127.0.0.1] said: 451 4.3.0 <later@163.com>: try again later (in reply to RCPT TO command))"), "{listing}");
    mx.set(Script::default());
    assert!(m.run("postqueue", &["-f"]).status.success());
    assert!(
        wait_for(Duration::from_secs(20), || mx.accepted().len() == 2),
        "{}",
        m.log_text()
    );
    assert!(m.wait_log(&format!("{id}: removed"), Duration::from_secs(10)));
    let all: Vec<String> = mx
        .accepted()
        .iter()
        .flat_map(|a| a.recipients.clone())
        .collect();
    assert_eq!(
        all,
        ["ok@163.com", "later@163.com"],
        "each recipient exactly once"
    );
}

#[test]
fn broken_stalled_and_refusing_servers() {
    // Closed in the middle of DATA: deferred, then delivered once on retry.
    let mx = FakeMx::start(
        "127.0.0.1",
        Script {
            close_mid_data: Some(10),
            ..Script::default()
        },
    );
    let m = relaying_to(mx.port, "smtp_helo_timeout = 2s\n");
    let id = send(
        &m,
        &["a@163.com"],
        "Subject: cut\n\nsome longer body text here\n",
    );
    let line = m.log_line(&format!("{id}: to=<a@163.com>"));
    assert!(
        line.contains("status=deferred (lost connection with 127.0.0.1[127.0.0.1] while sending"),
        "{line}"
    );
    mx.set(Script::default());
    assert!(
        wait_for(Duration::from_secs(20), || mx.accepted().len() == 1),
        "{}",
        m.log_text()
    );
    assert!(m.wait_log(&format!("{id}: removed"), Duration::from_secs(10)));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(mx.accepted().len(), 1);

    // Too big for the server's SIZE: bounced without sending.
    std::thread::sleep(Duration::from_secs(3)); // the cached connection expires
    mx.set(Script {
        extensions: vec!["SIZE 100".into()],
        ..Script::default()
    });
    let before = mx.commands().len();
    let id = send(
        &m,
        &["b@163.com"],
        &format!("Subject: big\n\n{}\n", "x".repeat(500)),
    );
    let line = m.log_line(&format!("{id}: to=<b@163.com>"));
    assert!(
        line.contains("dsn=5.3.4, status=bounced (message size")
            && line.contains("exceeds size limit 100 of server 127.0.0.1[127.0.0.1])"),
        "{line}"
    );
    assert!(!mx.commands()[before..]
        .iter()
        .any(|c| c.starts_with("MAIL")));

    // An old server without EHLO: HELO, and no pipelining.
    std::thread::sleep(Duration::from_secs(3)); // the cached connection expires
    mx.set(Script {
        helo_only: true,
        ..Script::default()
    });
    let before = mx.commands().len();
    let id = send(&m, &["old@163.com"], "Subject: old\n\nx\n");
    assert!(m
        .log_line(&format!("{id}: to=<old@163.com>"))
        .contains("status=sent"));
    let said: Vec<String> = mx.commands()[before..].to_vec();
    assert!(
        said[0].starts_with("EHLO ")
            && said[1].starts_with("HELO ")
            && said[2].starts_with("MAIL FROM:<hadoop@ywnds.com>"),
        "{said:?}"
    );
    assert!(!said[2].contains("SIZE="), "no SIZE without EHLO: {said:?}");

    // A server that never answers EHLO: deferred after smtp_helo_timeout.
    std::thread::sleep(Duration::from_secs(3));
    mx.set(Script {
        stall: true,
        ..Script::default()
    });
    std::thread::sleep(Duration::from_secs(3)); // the cached connection expires
    let id = send(&m, &["c@163.com"], "Subject: stall\n\nx\n");
    let line = m.log_line(&format!("{id}: to=<c@163.com>"));
    assert!(
        line.contains("status=deferred (conversation with 127.0.0.1[127.0.0.1] timed out while"),
        "{line}"
    );

    // Nothing listening: deferred with the connect error, relay=none.
    let dead = testkit::free_port();
    let n = relaying_to(dead, "");
    let id = send(&n, &["d@163.com"], "Subject: dead\n\nx\n");
    let line = n.log_line(&format!("{id}: to=<d@163.com>"));
    assert!(line.contains("relay=none, delay=") && line.contains(&format!("dsn=4.4.1, status=deferred (connect to 127.0.0.1[127.0.0.1]:{dead}: Connection refused)")), "{line}");
}

#[test]
fn two_instances_relay_by_mx_and_the_second_refuses_to_relay_further() {
    // Instance A: ywnds.com on 127.0.0.1, with named serving the zones.
    let a = Instance::mail("");
    a.add_smtp();
    let extra = "";
    let dns = a.add_named("", extra);
    let zones = a.etc.join("zones");
    let zone = |name: &str, body: &str| {
        std::fs::write(
            zones.join(format!("{name}.zone")),
            format!("$TTL 1D\n@ IN SOA ns.ywnds.com. root.ywnds.com. 1 3H 15M 1W 1D\n\tIN NS ns.ywnds.com.\n{body}"),
        )
        .unwrap();
        let mut conf = std::fs::read_to_string(a.etc.join("named.conf")).unwrap();
        conf.push_str(&format!(
            "zone \"{name}\" IN {{ type master; file \"{name}.zone\"; }};\n"
        ));
        std::fs::write(a.etc.join("named.conf"), conf).unwrap();
    };
    zone(
        "example.test",
        // The better MX does not answer: A goes on to the next one.
        "\tIN MX 20 mx.example.test.\n\tIN MX 10 down.example.test.\nmx IN A 127.0.0.2\ndown IN A 127.0.0.3\n",
    );
    zone("loop.test", "\tIN MX 10 mail.ywnds.com.\n");
    zone("nullmx.test", "\tIN MX 0 .\n");

    // Instance B: example.test on 127.0.0.2, relaying for nobody.
    let b = Instance::mail(
        "myhostname = mx.example.test\nmydomain = example.test\nmydestination = example.test\ninet_interfaces = 127.0.0.2\n\
         mynetworks = 127.0.0.2/32\nsmtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n",
    );
    let master = std::fs::read_to_string(b.etc.join("master.cf")).unwrap();
    b.write_master_cf(&master.replace(
        &format!("127.0.0.1:{}", b.port),
        &format!("127.0.0.2:{}", b.port),
    ));
    b.postfix("start");
    b.wait_children(&[&format!("127.0.0.2:{}", b.port), "cleanup", "qmgr", "local"]);

    // A finds B through example.test's MX record, on B's port.
    std::fs::write(
        a.etc.join("transport"),
        format!("example.test smtp:example.test:{}\n", b.port),
    )
    .unwrap();
    a.add_main_cf(&format!(
        "dns_servers = 127.0.0.1:{dns}\ntransport_maps = hash:$config_directory/transport\n"
    ));
    // An indexed table, built and queried with postmap as with Postfix.
    let table = format!("hash:{}", a.etc.join("transport").display());
    let out = std::process::Command::new(testkit::bin("postmap"))
        .arg(&table)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(testkit::bin("postmap"))
        .args(["-q", "EXAMPLE.test", &table])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("smtp:example.test:{}\n", b.port)
    );
    a.start();
    a.wait_children(&["smtp", "named"]);
    let id = send(
        &a,
        &["openstack@example.test"],
        "Subject: across\n\nhello B\n",
    );
    let line = a.log_line(&format!("{id}: to=<openstack@example.test>"));
    assert!(
        a.log_text().contains(&format!(
            "connect to down.example.test[127.0.0.3]:{}: Connection refused",
            b.port
        )),
        "{}",
        a.log_text()
    );
    assert!(
        line.contains(&format!("relay=mx.example.test[127.0.0.2]:{}, ", b.port))
            && line.contains("status=sent (250 2.0.0 Ok: queued as "),
        "{line}"
    );
    let got = b.wait_maildir("openstack", 1);
    let mail = String::from_utf8_lossy(&got[0]).into_owned();
    assert!(
        mail.starts_with("Return-Path: <hadoop@ywnds.com>\n") && mail.contains("\n\nhello B\n"),
        "{mail}"
    );
    assert!(
        mail.contains("by mx.example.test (Postfix) with ESMTP id"),
        "{mail}"
    );

    // B relays for nobody outside its network.
    let (mut c, _) = Smtp::connect_between("127.0.0.1", "127.0.0.2", b.port);
    c.cmd("EHLO mail.ywnds.com");
    assert!(c.cmd("MAIL FROM:<hadoop@ywnds.com>").starts_with("250"));
    assert_eq!(
        c.cmd("RCPT TO:<someone@163.com>"),
        "554 5.7.1 <someone@163.com>: Relay access denied"
    );

    // An MX pointing back at A, and a null MX: bounced at once.
    let id = send(
        &a,
        &["x@loop.test", "y@nullmx.test"],
        "Subject: nowhere\n\nx\n",
    );
    let l = a.log_line(&format!("{id}: to=<x@loop.test>"));
    assert!(
        l.contains("dsn=5.4.6, status=bounced (mail for loop.test loops back to myself)"),
        "{l}"
    );
    let l = a.log_line(&format!("{id}: to=<y@nullmx.test>"));
    assert!(
        l.contains("dsn=5.1.10, status=bounced (Domain nullmx.test does not accept mail (nullMX))"),
        "{l}"
    );
    // A domain that does not exist is bounced; a DNS server that will not
    // answer (named refuses names outside its zones) only defers.
    let id = send(
        &a,
        &["z@nothere.ywnds.com", "w@elsewhere.test"],
        "Subject: none\n\nx\n",
    );
    let l = a.log_line(&format!("{id}: to=<z@nothere.ywnds.com>"));
    assert!(l.contains("dsn=5.4.4, status=bounced (Host or domain name not found. Name service error for name=nothere.ywnds.com type=A: Host not found)"), "{l}");
    let l = a.log_line(&format!("{id}: to=<w@elsewhere.test>"));
    assert!(l.contains("dsn=4.4.3, status=deferred (Host or domain name not found. Name service error for name=elsewhere.test type=MX: Host not found, try again)"), "{l}");
}

#[test]
fn a_reload_before_the_smtp_agent_is_first_used_takes_effect() {
    // The agent's settings were built at its start; a reload that comes
    // before its first delivery must not leave them in force.
    let mx = FakeMx::start("127.0.0.1", Script::default());
    let m = relaying_to(mx.port, "");
    let pid = m.child_pid("smtp");
    m.add_main_cf("smtp_helo_name = reloaded.ywnds.com\n");
    m.postfix("reload");
    assert!(m.wait_log("reload -- version", Duration::from_secs(5)));
    // smtp restarts on reload (a new process reads a TLS key as root).
    assert!(
        wait_for(Duration::from_secs(10), || m
            .child_pid("smtp")
            .is_some_and(|p| Some(p) != pid)),
        "smtp was not restarted: {}",
        m.log_text()
    );
    let id = send(&m, &["a@163.com"], "Subject: x\n\nx\n");
    assert!(m
        .log_line(&format!("{id}: to=<a@163.com>"))
        .contains("status=sent"));
    assert!(
        mx.commands().iter().any(|c| c == "EHLO reloaded.ywnds.com"),
        "{:?}",
        mx.commands()
    );
}

/// `smtp_fallback_relay`: a destination that cannot be reached has its
/// mail sent to the fallback relay, in the same delivery attempt, as
/// Postfix's smtp does.
#[test]
fn an_unreachable_destination_goes_to_the_fallback_relay() {
    let fallback = FakeMx::start("127.0.0.1", Script::default());
    let dead = testkit::free_port();
    let m = relaying_to(
        dead,
        &format!("smtp_fallback_relay = [127.0.0.1]:{}\n", fallback.port),
    );
    let id = send(&m, &["someone@163.com"], "Subject: fallback\n\nx\n");
    let line = m.log_line(&format!("{id}: to=<someone@163.com>"));
    assert!(
        line.contains(&format!(", relay=127.0.0.1[127.0.0.1]:{}, ", fallback.port))
            && line.contains("status=sent"),
        "{line}"
    );
    assert_eq!(fallback.accepted().len(), 1);
    // The destination back: the next message goes to it, not over the
    // connection to the fallback relay still cached.
    let destination = FakeMx::start_at("127.0.0.1", dead, Script::default());
    let id = send(&m, &["other@163.com"], "Subject: back\n\nx\n");
    let line = m.log_line(&format!("{id}: to=<other@163.com>"));
    assert!(
        line.contains(&format!(", relay=127.0.0.1[127.0.0.1]:{dead}, "))
            && line.contains("status=sent"),
        "{line}"
    );
    assert_eq!(destination.accepted().len(), 1);
    assert_eq!(fallback.accepted().len(), 1);
}

/// A backup MX as Postfix sites run one: backup.test's MX 10 is down, so
/// the sender's mail goes to MX 20, which relays for the domain
/// (`relay_domains`) and knows its users (`relay_recipient_maps`); it
/// queues the mail, trying only the better MX (never itself, never a
/// fallback), and delivers it once the primary is back and asks for it
/// (`postqueue -s`, as ETRN would).
#[test]
fn a_backup_mx_queues_for_its_primary_until_it_returns() {
    // The sender, with named serving backup.test.
    let a = Instance::mail("");
    a.add_smtp();
    let dns = a.add_named("", "");
    let zones = a.etc.join("zones");
    std::fs::write(
        zones.join("backup.test.zone"),
        "$TTL 1D\n@ IN SOA ns.ywnds.com. root.ywnds.com. 1 3H 15M 1W 1D\n\tIN NS ns.ywnds.com.\n\
         \tIN MX 10 primary.backup.test.\n\tIN MX 20 backup.backup.test.\n\
         primary IN A 127.0.0.2\nbackup IN A 127.0.0.3\n",
    )
    .unwrap();
    let mut conf = std::fs::read_to_string(a.etc.join("named.conf")).unwrap();
    conf.push_str("zone \"backup.test\" IN { type master; file \"backup.test.zone\"; };\n");
    std::fs::write(a.etc.join("named.conf"), conf).unwrap();
    // The primary: the domain's final destination, on 127.0.0.2.
    let p = Instance::mail(
        "myhostname = primary.backup.test\nmydomain = backup.test\nmydestination = backup.test\n\
         inet_interfaces = 127.0.0.2\nmynetworks = 127.0.0.2/32\n",
    );
    let port = p.port;
    let master = std::fs::read_to_string(p.etc.join("master.cf")).unwrap();
    p.write_master_cf(&master.replace(&format!("127.0.0.1:{port}"), &format!("127.0.0.2:{port}")));
    // The backup, on 127.0.0.3 and the same port, with its own smtp.
    let b = Instance::mail(&format!(
        "myhostname = backup.backup.test\nmydomain = backup.test\nmydestination =\n\
         inet_interfaces = 127.0.0.3\nmynetworks = 127.0.0.3/32\n\
         relay_domains = backup.test\nrelay_recipient_maps = hash:$config_directory/relay_recipients\n\
         smtp_fallback_relay = [127.0.0.1]:{}\n",
        a.port
    ));
    let master = std::fs::read_to_string(b.etc.join("master.cf")).unwrap();
    b.write_master_cf(&master.replace(
        &format!("127.0.0.1:{}", b.port),
        &format!("127.0.0.3:{port}"),
    ));
    b.add_smtp();
    std::fs::write(b.etc.join("relay_recipients"), "openstack@backup.test OK\n").unwrap();
    for i in [&a, &b] {
        std::fs::write(
            i.etc.join("transport"),
            format!("backup.test smtp:backup.test:{port}\n"),
        )
        .unwrap();
        i.add_main_cf(&format!(
            "dns_servers = 127.0.0.1:{dns}\ntransport_maps = texthash:$config_directory/transport\n"
        ));
    }
    let out = std::process::Command::new(testkit::bin("postmap"))
        .arg(format!("hash:{}", b.etc.join("relay_recipients").display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    a.start();
    a.wait_children(&["smtp", "named"]);
    b.postfix("start");
    b.wait_children(&[&format!("127.0.0.3:{port}"), "cleanup", "qmgr"]);

    // The primary is down: the backup takes the mail for known users.
    let id = send(
        &a,
        &["openstack@backup.test"],
        "Subject: while away\n\nkept\n",
    );
    let line = a.log_line(&format!("{id}: to=<openstack@backup.test>"));
    assert!(
        line.contains(&format!("relay=backup.backup.test[127.0.0.3]:{port}, "))
            && line.contains("status=sent"),
        "{line}\n{}",
        a.log_text()
    );
    // An unknown user is refused by the backup itself.
    let (mut c, _) = Smtp::connect_between("127.0.0.1", "127.0.0.3", port);
    c.cmd("EHLO mail.ywnds.com");
    assert!(c.cmd("MAIL FROM:<hadoop@ywnds.com>").starts_with("250"));
    let r = c.cmd("RCPT TO:<nobody@backup.test>");
    assert!(
        r.starts_with("550 5.1.1 <nobody@backup.test>: Recipient address rejected: User unknown in relay recipient table"),
        "{r}"
    );
    c.cmd("QUIT");
    // The backup tries the primary only (not itself, not its fallback
    // relay: it is an MX host for backup.test) and keeps the mail.
    assert!(
        b.wait_log(
            &format!("connect to primary.backup.test[127.0.0.2]:{port}: Connection refused"),
            Duration::from_secs(10)
        ),
        "{}",
        b.log_text()
    );
    assert!(
        b.wait_log("status=deferred", Duration::from_secs(10)),
        "{}",
        b.log_text()
    );
    assert_eq!(b.queue_files("deferred").len(), 1, "{}", b.log_text());

    // The primary returns and asks for its mail.
    p.postfix("start");
    p.wait_children(&[&format!("127.0.0.2:{port}"), "cleanup", "qmgr", "local"]);
    let out = b.run("postqueue", &["-s", "backup.test"]);
    assert!(out.status.success(), "{out:?}");
    let got = p.wait_maildir("openstack", 1);
    assert!(String::from_utf8_lossy(&got[0]).contains("\n\nkept\n"));
    let line = b.log_line("to=<openstack@backup.test>, relay=primary.backup.test");
    assert!(line.contains("status=sent"), "{line}");
    assert!(wait_for(Duration::from_secs(10), || b
        .queue_files("deferred")
        .is_empty()));
}

/// smtp_fallback_relay side by side with Debian's Postfix: the same
/// unreachable relayhost and the same fallback, the same log of the
/// failed connection and the same delivery line.
#[test]
fn the_fallback_relay_is_used_as_debian_postfix_uses_it() {
    if !(nix::unistd::Uid::effective().is_root()
        && std::path::Path::new("/usr/sbin/postfix").exists())
    {
        eprintln!("skipped: the side-by-side run with Debian's Postfix needs root");
        return;
    }
    let cf = |dead: u16, fallback: u16| {
        format!(
            "mynetworks = 127.0.0.1/32\nsmtpd_peername_lookup = no\nrelayhost = [127.0.0.1]:{dead}\n\
             smtp_fallback_relay = [127.0.0.1]:{fallback}\n"
        )
    };
    // What a system logged for the message: the refused connection and
    // the delivery, ports named by role.
    let said = |log: &str, dead: u16, fallback: u16| -> Vec<String> {
        let roles = |l: &str| {
            l.replace(&format!(":{dead}"), ":DEAD")
                .replace(&format!(":{fallback}"), ":FALLBACK")
        };
        let refused = log
            .lines()
            .find_map(|l| l.find("connect to ").map(|at| roles(&l[at..])));
        let delivery = log
            .lines()
            .find(|l| l.contains("to=<someone@163.com>") && l.contains("status="))
            .map(|l| {
                let relay = l
                    .split(", ")
                    .find(|f| f.starts_with("relay="))
                    .unwrap_or("");
                let status = l.split_once(", dsn=").map_or("", |(_, s)| s);
                roles(&format!("{relay}, dsn={status}"))
            });
        vec![refused.unwrap_or_default(), delivery.unwrap_or_default()]
    };
    let ours_fallback = FakeMx::start("127.0.0.1", Script::default());
    let ours_dead = testkit::free_port();
    let m = relaying_to(ours_dead, &cf(ours_dead, ours_fallback.port));
    send(&m, &["someone@163.com"], "Subject: fallback\n\nx\n");
    let theirs_fallback = FakeMx::start("127.0.0.1", Script::default());
    let theirs_dead = testkit::free_port();
    let pf = testkit::debian::Postfix::new(None, &cf(theirs_dead, theirs_fallback.port));
    pf.start();
    let (mut c, _) = Smtp::connect(pf.port);
    c.cmd("EHLO client.example");
    let r = c.mail(
        "hadoop@ywnds.com",
        &["someone@163.com"],
        b"Subject: fallback\r\n\r\nx\r\n",
    );
    assert!(r.starts_with("250"), "{r}");
    c.cmd("QUIT");
    assert!(
        pf.wait_log("status=sent", Duration::from_secs(20)),
        "{}",
        pf.log_text()
    );
    assert!(
        m.wait_log("status=sent", Duration::from_secs(20)),
        "{}",
        m.log_text()
    );
    let theirs = said(&pf.log_text(), theirs_dead, theirs_fallback.port);
    let ours = said(&m.log_text(), ours_dead, ours_fallback.port);
    assert!(
        theirs[0].contains("DEAD: Connection refused")
            && theirs[1].contains("relay=127.0.0.1[127.0.0.1]:FALLBACK, dsn=2.0.0, status=sent"),
        "{theirs:?}\n{}",
        pf.log_text()
    );
    assert_eq!(ours, theirs, "postfix-rs (left) and Debian's Postfix");
    assert_eq!(theirs_fallback.accepted().len(), 1);
    assert_eq!(ours_fallback.accepted().len(), 1);
    pf.stop();
}
