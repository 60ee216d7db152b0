//! smtpd's client limits, counted by anvil(8): the replies and warnings of
//! Postfix (checked side by side with Debian's Postfix where it is
//! installed), one count for a service whatever smtpd process serves it (an
//! smtpd that goes away gives back its connections, and its successor keeps
//! the rates), a count per service as Postfix keeps it, and anvil's
//! statistics in the log at reload and at stop.

use std::path::Path;
use std::time::Duration;

use testkit::{free_port, wait_for, Instance, Smtp};

/// The tests' client (127.0.0.1) is in mynetworks, which by default is
/// exempt from every limit.
const NOBODY_EXEMPT: &str = "smtpd_client_event_limit_exceptions =\n";

/// Debian's Postfix, for a side-by-side run: needs root.
fn debian_postfix() -> bool {
    nix::unistd::Uid::effective().is_root() && Path::new("/usr/sbin/postfix").exists()
}

/// The log's warnings about limits, with the port of the service made `PORT`.
fn limit_warnings(log: &str, port: u16) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("limit exceeded") || l.contains("Refusing"))
        .filter_map(|l| l.split_once("warning: "))
        .map(|(_, w)| w.replace(&port.to_string(), "PORT"))
        .collect()
}

/// The `statistics:` lines, without their times, with `PORT`.
fn statistics(log: &str, port: u16) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.split_once("]: statistics: "))
        .map(|(_, s)| {
            let s = s.rsplit_once(" at ").map_or(s, |(head, _)| head);
            s.replace(&port.to_string(), "PORT")
        })
        .collect()
}

/// Replies to `commands` in one session (after the greeting, which comes
/// first), `<closed>` once the server hung up.
fn session(port: u16, commands: &[&str]) -> Vec<String> {
    let (mut c, greeting) = Smtp::connect(port);
    let mut out = vec![greeting];
    for cmd in commands {
        out.push(c.cmd(cmd));
    }
    out
}

#[test]
fn a_client_over_the_connection_rate_limit_is_refused_and_others_are_served() {
    let main_cf = format!(
        "{NOBODY_EXEMPT}smtpd_client_connection_rate_limit = 2\nsmtpd_peername_lookup = no\n"
    );
    let m = Instance::mail(&main_cf);
    m.start();
    let service = format!("127.0.0.1:{}", m.port);
    for _ in 0..2 {
        let r = session(m.port, &["QUIT"]);
        assert!(r[0].starts_with("220 "), "{r:?}");
    }
    let (mut c, g) = Smtp::connect(m.port);
    assert_eq!(
        g,
        "421 4.7.0 mail.ywnds.com Error: too many connections from 127.0.0.1"
    );
    assert_eq!(c.reply(), "<closed>", "no session after the 421");
    // Another address of the same host is another client.
    let (mut d, g) = Smtp::connect_from("127.0.0.2", m.port);
    assert!(g.starts_with("220 "), "{g}");
    d.cmd("QUIT");
    m.log_line(&format!(
        "warning: Connection rate limit exceeded: 3 from unknown[127.0.0.1] for service {service}"
    ));
    // A session without a command, as Postfix logs it.
    m.log_line("disconnect from unknown[127.0.0.1] commands=0/0");
    // The refused connection counted too: the next one is the 4th.
    let (_e, g) = Smtp::connect(m.port);
    assert!(g.starts_with("421 "), "{g}");
    m.log_line("Connection rate limit exceeded: 4 from unknown[127.0.0.1]");

    if !debian_postfix() {
        eprintln!("not compared with Debian's Postfix: it needs root and /usr/sbin/postfix");
        return;
    }
    let pf = testkit::debian::Postfix::new(None, &main_cf);
    // start() waits for the port to answer: that was the first connection.
    pf.start();
    let mut theirs = Vec::new();
    for _ in 0..3 {
        let (mut c, g) = Smtp::connect(pf.port);
        if g.starts_with("220") {
            c.cmd("QUIT");
        }
        theirs.push(g);
    }
    assert!(theirs[0].starts_with("220 "), "{theirs:?}");
    assert_eq!(
        theirs[1], "421 4.7.0 mail.ywnds.com Error: too many connections from 127.0.0.1",
        "Postfix's reply"
    );
    assert!(
        wait_for(Duration::from_secs(10), || limit_warnings(
            &pf.log_text(),
            pf.port
        )
        .len()
            == 2),
        "{}",
        pf.log_text()
    );
    let ours = limit_warnings(&m.log_text(), m.port);
    assert_eq!(limit_warnings(&pf.log_text(), pf.port), ours);
    assert!(pf
        .log_text()
        .contains("disconnect from unknown[127.0.0.1] commands=0/0"));
    // Both anvils report at reload, in the same words: the peak rate, and
    // the peak count (1 or 2, as the last session's disconnect raced the
    // next connect), and the cache size (one client for Postfix, two here).
    m.postfix("reload");
    let out = pf.run("postfix", &["reload"]);
    assert!(out.status.success());
    for (log, port) in [(&pf.log, pf.port), (&m.log, m.port)] {
        let text = || std::fs::read_to_string(log).unwrap_or_default();
        assert!(
            wait_for(Duration::from_secs(10), || statistics(&text(), port).len()
                >= 3),
            "{}",
            text()
        );
    }
    let theirs = statistics(&pf.log_text(), pf.port);
    let ours = statistics(&m.log_text(), m.port);
    let shape = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .map(|l| l.replace(|c: char| c.is_ascii_digit(), "N"))
            .collect()
    };
    assert_eq!(theirs[0], ours[0]);
    assert_eq!(
        ours[0],
        "max connection rate 4/60s for (127.0.0.1:PORT:127.0.0.1)"
    );
    assert_eq!(shape(&theirs), shape(&ours), "Postfix: {theirs:?}");
}

#[test]
fn message_recipient_and_auth_rate_limits_answer_as_debian_postfix() {
    let main_cf = format!(
        "{NOBODY_EXEMPT}smtpd_client_message_rate_limit = 2\nsmtpd_client_recipient_rate_limit = 2\n\
         smtpd_client_auth_rate_limit = 1\nsmtpd_peername_lookup = no\n"
    );
    let commands = [
        "MAIL FROM:<a@example.org>",
        "RCPT TO:<openstack@mail.ywnds.com>",
        "RCPT TO:<hadoop@mail.ywnds.com>",
        // The third recipient, and VRFY counts as one.
        "RCPT TO:<openstack@mail.ywnds.com>",
        "VRFY openstack@mail.ywnds.com",
        "RSET",
        "MAIL FROM:<a@example.org>",
        "RSET",
        "MAIL FROM:<a@example.org>",
        // AUTH is counted before anything else is looked at, SMTP AUTH
        // being off here.
        "RSET",
        "AUTH PLAIN AGEAYg==",
        "AUTH PLAIN AGEAYg==",
        "QUIT",
    ];
    let want = [
        "250 2.1.0 Ok",
        "250 2.1.5 Ok",
        "250 2.1.5 Ok",
        "450 4.7.1 Error: too many recipients from 127.0.0.1",
        "450 4.7.1 Error: too many recipients from 127.0.0.1",
        "250 2.0.0 Ok",
        "250 2.1.0 Ok",
        "250 2.0.0 Ok",
        "450 4.7.1 Error: too much mail from 127.0.0.1",
        "250 2.0.0 Ok",
        "503 5.5.1 Error: authentication not enabled",
        "450 4.7.1 Error: too many AUTH commands from 127.0.0.1",
        "221 2.0.0 Bye",
    ];
    let run = |port| {
        let mut all = vec!["EHLO client.example"];
        all.extend(commands);
        let mut r = session(port, &all);
        // The greeting and the EHLO reply are another test's business.
        r.drain(..2);
        r
    };
    let m = Instance::mail(&main_cf);
    m.start();
    assert_eq!(run(m.port), want, "{}", m.log_text());
    let ours = limit_warnings(&m.log_text(), m.port);
    assert_eq!(
        ours,
        [
            "Recipient address rate limit exceeded: 3 from unknown[127.0.0.1] for service 127.0.0.1:PORT",
            "Recipient address rate limit exceeded: 4 from unknown[127.0.0.1] for service 127.0.0.1:PORT",
            "Message delivery request rate limit exceeded: 3 from unknown[127.0.0.1] for service 127.0.0.1:PORT",
            "AUTH command rate limit exceeded: 2 from unknown[127.0.0.1] for service 127.0.0.1:PORT",
        ]
    );

    if !debian_postfix() {
        eprintln!("not compared with Debian's Postfix: it needs root and /usr/sbin/postfix");
        return;
    }
    let pf = testkit::debian::Postfix::new(None, &main_cf);
    pf.start();
    assert_eq!(run(pf.port), want, "Postfix's replies");
    assert!(wait_for(Duration::from_secs(10), || limit_warnings(
        &pf.log_text(),
        pf.port
    )
    .len()
        == ours.len()));
    assert_eq!(limit_warnings(&pf.log_text(), pf.port), ours);
}

#[test]
fn an_smtpd_that_goes_away_gives_back_its_connections_and_its_successor_keeps_the_rate() {
    let m = Instance::mail(&format!(
        "{NOBODY_EXEMPT}smtpd_client_connection_count_limit = 1\nsmtpd_client_connection_rate_limit = 3\n"
    ));
    m.start();
    let service = format!("127.0.0.1:{}", m.port);
    let (_a, g) = Smtp::connect(m.port);
    assert!(g.starts_with("220 "), "{g}");
    let (_b, g) = Smtp::connect(m.port);
    assert_eq!(
        g,
        "421 4.7.0 mail.ywnds.com Error: too many connections from 127.0.0.1"
    );
    m.log_line(&format!(
        "warning: Connection concurrency limit exceeded: 2 from unknown[127.0.0.1] for service {service}"
    ));
    // B's session is over (its line is logged after anvil has its
    // disconnect); then the smtpd holding A dies, and master starts another.
    assert!(wait_for(Duration::from_secs(10), || m
        .log_text()
        .contains("disconnect from unknown[127.0.0.1]")));
    let first = m.child_pid(&service).expect("smtpd runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(wait_for(Duration::from_secs(10), || m
        .child_pid(&service)
        .is_some_and(|p| p != first)));
    // anvil took back the dead process's connection...
    let (mut c, g) = Smtp::connect(m.port);
    assert!(g.starts_with("220 "), "{g}\n{}", m.log_text());
    c.cmd("QUIT");
    // (Its disconnect is logged once anvil has it: B's and C's lines.)
    assert!(
        wait_for(Duration::from_secs(10), || m
            .log_text()
            .matches("disconnect from unknown[127.0.0.1]")
            .count()
            == 2),
        "{}",
        m.log_text()
    );
    // ...and kept the rate its connections made: this is the 4th.
    let (_d, g) = Smtp::connect(m.port);
    assert_eq!(
        g,
        "421 4.7.0 mail.ywnds.com Error: too many connections from 127.0.0.1"
    );
    m.log_line(&format!(
        "warning: Connection rate limit exceeded: 4 from unknown[127.0.0.1] for service {service}"
    ));
}

#[test]
fn each_service_counts_its_clients_and_anvil_logs_statistics_at_reload_and_stop() {
    let m = Instance::mail(&format!(
        "{NOBODY_EXEMPT}smtpd_client_connection_count_limit = 1\n"
    ));
    let other = free_port();
    let mut master = std::fs::read_to_string(m.etc.join("master.cf")).unwrap();
    master.push_str(&format!("127.0.0.1:{other} inet n - n - - smtpd\n"));
    m.write_master_cf(&master);
    m.start();
    // One anvil serves both smtpd processes at once; as Postfix's, it
    // counts per service and client.
    let (mut a, g1) = Smtp::connect(m.port);
    let (mut b, g2) = Smtp::connect(other);
    assert!(
        g1.starts_with("220 ") && g2.starts_with("220 "),
        "{g1} {g2}"
    );
    let (_, g3) = Smtp::connect(m.port);
    let (_, g4) = Smtp::connect(other);
    for g in [g3, g4] {
        assert_eq!(
            g,
            "421 4.7.0 mail.ywnds.com Error: too many connections from 127.0.0.1"
        );
    }
    for port in [m.port, other] {
        m.log_line(&format!(
            "Connection concurrency limit exceeded: 2 from unknown[127.0.0.1] for service 127.0.0.1:{port}"
        ));
    }
    a.cmd("QUIT");
    b.cmd("QUIT");
    assert!(
        statistics(&m.log_text(), m.port).is_empty(),
        "nothing logged before"
    );
    // anvil stops at a reload, as Postfix's, and says what it saw.
    m.postfix("reload");
    let want = [
        "max connection rate 2/60s for (127.0.0.1:PORT:127.0.0.1)",
        "max connection count 2 for (127.0.0.1:PORT:127.0.0.1)",
        "max cache size 2",
    ];
    assert!(
        wait_for(Duration::from_secs(10), || statistics(
            &m.log_text(),
            m.port
        )
        .len()
            == want.len()),
        "{}",
        m.log_text()
    );
    assert_eq!(statistics(&m.log_text(), m.port), want);
    let line = m.log_line("statistics: max cache size 2 at ");
    let stamp = line.rsplit_once(" at ").unwrap().1;
    assert_eq!(stamp.len(), "Dec  4 16:43:20".len(), "{line}");
    // Its successor starts from nothing, and reports at stop.
    let (mut c, g) = Smtp::connect(m.port);
    assert!(g.starts_with("220 "), "{g}");
    c.cmd("QUIT");
    m.postfix("stop");
    assert!(
        wait_for(Duration::from_secs(10), || statistics(
            &m.log_text(),
            m.port
        )
        .len()
            == want.len() + 3),
        "{}",
        m.log_text()
    );
    assert_eq!(
        statistics(&m.log_text(), m.port)[want.len()..],
        [
            "max connection rate 1/60s for (127.0.0.1:PORT:127.0.0.1)",
            "max connection count 1 for (127.0.0.1:PORT:127.0.0.1)",
            "max cache size 1",
        ]
    );
}

#[test]
fn clients_in_mynetworks_are_exempt_by_default_and_a_missing_anvil_limits_nothing() {
    let m = Instance::mail("smtpd_client_connection_count_limit = 1\n");
    m.start();
    // 127.0.0.1 is in mynetworks: exempt.
    let (mut a, g1) = Smtp::connect(m.port);
    let (mut b, g2) = Smtp::connect(m.port);
    assert!(
        g1.starts_with("220 ") && g2.starts_with("220 "),
        "{g1} {g2}"
    );
    a.cmd("QUIT");
    b.cmd("QUIT");
    // 127.0.0.2 is not; with anvil gone from master.cf nothing is counted,
    // and smtpd says why once.
    let service = format!("127.0.0.1:{}", m.port);
    let smtpd = m.child_pid(&service).expect("smtpd runs");
    let master = std::fs::read_to_string(m.etc.join("master.cf")).unwrap();
    m.write_master_cf(&master.replace("anvil unix - - n - 1 anvil\n", ""));
    m.postfix("reload");
    // smtpd restarts at a reload: each process says it once.
    assert!(wait_for(Duration::from_secs(10), || {
        m.child_pid(&service).is_some_and(|p| p != smtpd)
            && !m.children().iter().any(|p| p.service() == Some("anvil"))
    }));
    for _ in 0..3 {
        let (mut c, g) = Smtp::connect_from("127.0.0.2", m.port);
        assert!(g.starts_with("220 "), "{g}\n{}", m.log_text());
        c.cmd("QUIT");
    }
    let warned = m.log_line("warning: problem talking to server private/anvil: ");
    assert_eq!(
        m.log_text().matches("problem talking to server").count(),
        1,
        "{warned}\n{}",
        m.log_text()
    );
}

/// Three STARTTLS sessions from Python's smtplib, each a full handshake;
/// each reply, or `TLS session` when the server said nothing after the
/// handshake.
fn three_starttls_sessions(port: u16) -> Vec<String> {
    let out = testkit::tls::python(&format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
for i in range(3):
    s = smtplib.SMTP("127.0.0.1", {port}, local_hostname="client.example")
    s.ehlo()
    code, msg = s.docmd("STARTTLS")
    print(code, msg.decode())
    if code != 220:
        s.close()
        continue
    s.sock = ctx.wrap_socket(s.sock, server_hostname="mail.ywnds.com")
    s.file = None
    s.sock.settimeout(1)
    try:
        code, msg = s.getreply()
        print(code, msg.decode())
    except smtplib.SMTPServerDisconnected as e:
        print("TLS session" if "timed out" in str(e) else e)
    s.close()
"#
    ));
    out.lines().map(str::to_owned).collect()
}

#[test]
fn new_tls_sessions_over_the_limit_are_refused_as_by_debian_postfix() {
    let m = Instance::mail("");
    let certs = testkit::tls::self_signed(m.root.path(), "mail.ywnds.com", true);
    let main_cf = format!(
        "{NOBODY_EXEMPT}smtpd_client_new_tls_session_rate_limit = 1\nsmtpd_peername_lookup = no\n\
         smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}\n",
        certs.cert.display(),
        certs.key.display()
    );
    m.add_main_cf(&main_cf);
    m.start();
    let want = [
        "220 2.0.0 Ready to start TLS",
        "TLS session",
        // The second handshake is one too many: said inside TLS.
        "220 2.0.0 Ready to start TLS",
        "421 4.7.0 mail.ywnds.com Error: too many new TLS sessions from unknown[127.0.0.1]",
        // The third is refused before it begins.
        "454 4.7.0 Error: too many new TLS sessions from unknown[127.0.0.1]",
    ];
    assert_eq!(three_starttls_sessions(m.port), want, "{}", m.log_text());
    let ours = limit_warnings(&m.log_text(), m.port);
    assert_eq!(
        ours,
        [
            "New TLS session rate limit exceeded: 2 from unknown[127.0.0.1] for service 127.0.0.1:PORT",
            "Refusing STARTTLS request from unknown[127.0.0.1] for service 127.0.0.1:PORT",
        ]
    );
    m.postfix("stop");
    m.log_line("statistics: max newtls rate 2/60s for (127.0.0.1:");

    if !debian_postfix() {
        eprintln!("not compared with Debian's Postfix: it needs root and /usr/sbin/postfix");
        return;
    }
    let pf = testkit::debian::Postfix::new(None, &main_cf);
    pf.start();
    assert_eq!(three_starttls_sessions(pf.port), want, "Postfix's replies");
    assert!(wait_for(Duration::from_secs(10), || limit_warnings(
        &pf.log_text(),
        pf.port
    )
    .len()
        == ours.len()));
    assert_eq!(limit_warnings(&pf.log_text(), pf.port), ours);
}
