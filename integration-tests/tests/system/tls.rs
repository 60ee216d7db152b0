//! STARTTLS, SMTPS and SMTP AUTH in smtpd, driven by Debian's clients
//! (swaks, openssl s_client, Python's smtplib) with a real Dovecot as the
//! authentication server.

use std::process::{Command, Stdio};
use std::time::Duration;

use testkit::tls::{self, Certs, Dovecot};
use testkit::{free_port, wait_for, MailInstance, Smtp};

/// A mail instance whose smtpd has a certificate made for the test, with
/// `extra` main.cf lines.
fn instance(extra: &str) -> (MailInstance, Certs) {
    instance_signed(extra, false)
}

/// [`instance`], with a certificate from a test CA for mail.ywnds.com and
/// 127.0.0.1 when `by_ca` (the CA's file is `ca.pem` in the instance root).
pub(crate) fn instance_signed(extra: &str, by_ca: bool) -> (MailInstance, Certs) {
    let m = testkit::Instance::mail("");
    let certs = if by_ca {
        tls::ca_signed(m.root.path(), &["mail.ywnds.com", "127.0.0.1"]).1
    } else {
        tls::self_signed(m.root.path(), "mail.ywnds.com", true)
    };
    m.add_main_cf(&format!(
        "smtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}\n{extra}",
        certs.cert.display(),
        certs.key.display()
    ));
    (m, certs)
}

/// Adds a master.cf service on a new loopback port; returns the port.
fn add_service(m: &MailInstance, options: &str) -> u16 {
    let port = free_port();
    let mut master = std::fs::read_to_string(m.etc.join("master.cf")).unwrap();
    master.push_str(&format!("127.0.0.1:{port} inet n - n - - smtpd\n{options}"));
    m.write_master_cf(&master);
    port
}

/// swaks: one message to openstack over STARTTLS, no login.
const PLAIN_TLS: [&str; 5] = [
    "--tls",
    "--from",
    "a@example.org",
    "--to",
    "openstack@ywnds.com",
];

fn message(subject: &str) -> String {
    format!("From: a@example.org\r\nTo: openstack@ywnds.com\r\nSubject: {subject}\r\n\r\nbody\r\n")
}

#[test]
fn starttls_with_swaks_and_openssl_delivers_and_says_so_in_received_and_the_log() {
    let (m, _) = instance(
        "smtpd_tls_security_level = may\nsmtpd_tls_received_header = yes\nsmtpd_tls_loglevel = 1\n",
    );
    m.start();
    let (ok, out) = tls::swaks(m.port, &PLAIN_TLS);
    assert!(ok, "{out}");
    assert!(out.contains("220 2.0.0 Ready to start TLS"), "{out}");
    let got = m.wait_maildir("openstack", 1);
    let text = String::from_utf8_lossy(&got[0]);
    assert!(
        text.contains("(using TLSv1.3 with cipher TLS_"),
        "Received: without the TLS line:\n{text}"
    );
    assert!(text.contains("(No client certificate requested)"), "{text}");
    assert!(text.contains("with ESMTPS id "), "{text}");
    assert!(
        m.wait_log(
            "Anonymous TLS connection established from localhost[127.0.0.1]: TLSv1.3 with cipher",
            Duration::from_secs(5)
        ) || m.wait_log(
            "Anonymous TLS connection established from unknown[127.0.0.1]: TLSv1.3 with cipher",
            Duration::from_secs(5)
        ),
        "{}",
        m.log_text()
    );
    assert!(m.log_text().contains("starttls=1"), "{}", m.log_text());

    // openssl s_client: TLS 1.2 as well, and the EHLO after TLS no longer
    // offers STARTTLS.
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-starttls",
            "smtp",
            "-tls1_2",
            "-quiet",
            "-crlf",
        ])
        .args(["-connect", &format!("127.0.0.1:{}", m.port)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let stdin = child.stdin.as_mut().unwrap();
        stdin.write_all(b"EHLO again.example\nQUIT\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("250-PIPELINING"), "{text}");
    assert!(!text.contains("STARTTLS"), "{text}");
    assert!(text.contains("221 2.0.0 Bye"), "{text}");
    assert!(
        m.wait_log("TLS connection established from", Duration::from_secs(5))
            && m.log_text().contains("TLSv1.2 with cipher ECDHE-RSA-AES"),
        "{}",
        m.log_text()
    );
}

#[test]
fn level_encrypt_refuses_mail_before_starttls_and_pipelined_plaintext_is_discarded() {
    let (m, _) = instance("smtpd_tls_security_level = encrypt\n");
    m.start();
    let (mut s, _) = Smtp::connect(m.port);
    let ehlo = s.cmd("EHLO client.example");
    assert!(ehlo.contains("250-STARTTLS"), "{ehlo}");
    assert_eq!(
        s.cmd("MAIL FROM:<a@example.org>"),
        "530 5.7.0 Must issue a STARTTLS command first"
    );
    assert_eq!(
        s.cmd("RSET"),
        "530 5.7.0 Must issue a STARTTLS command first"
    );
    assert_eq!(s.cmd("NOOP"), "250 2.0.0 Ok");
    assert_eq!(s.cmd("FOO"), "500 5.5.2 Error: command not recognized");
    drop(s);

    // CVE-2011-0411: MAIL sent in the same packet as STARTTLS must not be
    // taken as said inside TLS; the next RCPT then finds no MAIL.
    let out = tls::python(&format!(
        r#"
import socket, ssl
s = socket.create_connection(("127.0.0.1", {port}))
f = s.makefile("rb")
def reply(f):
    lines = []
    while True:
        l = f.readline().decode()
        lines.append(l.strip())
        if len(l) < 4 or l[3] == " ":
            return "\n".join(lines)
reply(f)
s.sendall(b"EHLO x\r\n"); reply(f)
s.sendall(b"STARTTLS\r\nMAIL FROM:<evil@example.org>\r\n")
print(reply(f))
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
t = ctx.wrap_socket(s)
g = t.makefile("rb")
t.sendall(b"EHLO x\r\n"); print(reply(g).splitlines()[-1])
t.sendall(b"RCPT TO:<openstack@ywnds.com>\r\n"); print(reply(g))
t.sendall(b"QUIT\r\n"); print(reply(g))
"#,
        port = m.port
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "220 2.0.0 Ready to start TLS", "{out}");
    assert_eq!(lines.last(), Some(&"221 2.0.0 Bye"), "{out}");
    assert!(out.contains("503 5.5.1 Error: need MAIL command"), "{out}");
}

#[test]
fn a_client_that_sends_garbage_instead_of_a_hello_is_logged_and_the_server_keeps_serving() {
    let (m, _) = instance("smtpd_tls_security_level = may\n");
    m.start();
    let (mut s, _) = Smtp::connect(m.port);
    s.cmd("EHLO client.example");
    assert_eq!(s.cmd("STARTTLS"), "220 2.0.0 Ready to start TLS");
    s.send(b"GET / HTTP/1.0\r\n\r\nthis is not a TLS ClientHello at all\r\n");
    assert!(s.reply().contains("<closed>") || s.reply().contains("<closed>"));
    assert!(
        m.wait_log("SSL_accept error from", Duration::from_secs(10)),
        "{}",
        m.log_text()
    );
    assert!(
        m.wait_log(
            "lost connection after STARTTLS from",
            Duration::from_secs(5)
        ),
        "{}",
        m.log_text()
    );
    // The same smtpd takes the next client, with TLS.
    let (ok, out) = tls::swaks(m.port, &PLAIN_TLS);
    assert!(ok, "{out}");
    m.wait_maildir("openstack", 1);
}

#[test]
fn smtps_on_a_wrapper_mode_port_as_debian_master_cf_writes_it() {
    let (m, certs) = instance("");
    // An ECDSA certificate as well: clients that prefer it get it.
    let ec = tls::self_signed(m.root.path(), "mail.ywnds.com", false);
    m.add_main_cf(&format!(
        "smtpd_tls_eccert_file = {}\nsmtpd_tls_eckey_file = {}\n",
        ec.cert.display(),
        ec.key.display()
    ));
    let _ = certs;
    let smtps = add_service(
        &m,
        "  -o syslog_name=postfix/smtps\n  -o smtpd_tls_wrappermode=yes\n",
    );
    m.start();
    m.wait_children(&[&format!("127.0.0.1:{smtps}")]);
    let (ok, out) = tls::swaks(
        smtps,
        &[
            "--tls-on-connect",
            "--from",
            "a@example.org",
            "--to",
            "openstack@ywnds.com",
        ],
    );
    assert!(ok, "{out}");
    let got = m.wait_maildir("openstack", 1);
    assert!(
        String::from_utf8_lossy(&got[0]).contains("with ESMTPS id"),
        "{}",
        String::from_utf8_lossy(&got[0])
    );
    // Python's SMTP_SSL, as mail programs use port 465.
    let out = tls::python(&format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
with smtplib.SMTP_SSL("127.0.0.1", {smtps}, context=ctx) as s:
    code, _ = s.ehlo()
    print(code, "STARTTLS" in s.esmtp_features, s.sock.version())
    s.sendmail("a@example.org", ["openstack@ywnds.com"], {msg:?})
"#,
        msg = message("smtps")
    ));
    assert_eq!(out.trim(), "250 False TLSv1.3");
    m.wait_maildir("openstack", 2);
    // A plain client on the SMTPS port gets no banner, and the port stays up.
    let (mut s, greeting) = Smtp::connect(smtps);
    let _ = (&mut s, greeting);
}

/// The `-o` lines of one of the entries Debian's master.cf ships commented
/// out (`submission`, `submissions`), uncommented, without the comments
/// between them: exactly what an administrator enables.
pub(crate) fn debian_entry(service: &str) -> String {
    let stock = std::fs::read_to_string("/usr/share/postfix/master.cf.dist")
        .expect("Debian's postfix is installed by scripts/setup");
    let mut out = String::new();
    let mut inside = false;
    for line in stock.lines() {
        if line.starts_with(&format!("#{service} ")) {
            inside = true;
        } else if inside && line.starts_with("#  -o ") {
            out.push_str(&line[1..]);
            out.push('\n');
        } else if inside && !line.starts_with("#     ") {
            break;
        }
    }
    assert!(!out.is_empty(), "no {service} entry in master.cf.dist");
    out
}

/// An instance with Debian's submission service and Dovecot holding the
/// users `alice` (`wonderland`) and `bob@ywnds.com` (`builder`).
fn submission(extra: &str) -> Option<(MailInstance, Dovecot, u16)> {
    submission_signed(extra, false)
}

/// [`submission`], with a CA-signed certificate when `by_ca`.
pub(crate) fn submission_signed(extra: &str, by_ca: bool) -> Option<(MailInstance, Dovecot, u16)> {
    let (m, _) = instance_signed(
        &format!("smtpd_sasl_type = dovecot\nsmtpd_sasl_path = private/auth\n{extra}"),
        by_ca,
    );
    if !nix::unistd::Uid::effective().is_root() || !tls::have("dovecot") {
        return None;
    }
    let port = add_service(&m, &debian_entry("submission"));
    m.start();
    m.wait_children(&[&format!("127.0.0.1:{port}")]);
    // Started after the instance, which makes its queue's private/ itself.
    let dovecot = Dovecot::start(
        m.root.path(),
        &m.queue.join("private/auth"),
        &[("alice", "wonderland"), ("bob@ywnds.com", "builder")],
    )?;
    Some((m, dovecot, port))
}

/// swaks through STARTTLS, logged in as alice with `mech` and `password`,
/// a message from alice@ywnds.com to `to`.
fn swaks_login(port: u16, mech: &str, password: &str, to: &str) -> (bool, String) {
    tls::swaks(
        port,
        &[
            "--tls",
            "--auth",
            mech,
            "--auth-user",
            "alice",
            "--auth-password",
            password,
            "--from",
            "alice@ywnds.com",
            "--to",
            to,
        ],
    )
}

#[test]
fn submission_with_dovecot_plain_and_login_and_the_log_pflogsumm_reads() {
    let Some((m, _dovecot, port)) = submission("smtpd_sasl_authenticated_header = yes\n") else {
        eprintln!("skipped: needs root and dovecot");
        return;
    };
    for (mech, n) in [("PLAIN", 1), ("LOGIN", 2)] {
        let (ok, out) = swaks_login(port, mech, "wonderland", "someone@remote.example");
        // Relayed: the recipient is elsewhere, and the client logged in.
        assert!(ok, "{mech}: {out}");
        assert!(out.contains("235 2.7.0 Authentication successful"), "{out}");
        // Both wait in deferred/ (this instance has no smtp transport);
        // counted there alone, since a file moving from incoming/ through
        // active/ can be missed by a listing of one directory after another.
        assert!(
            wait_for(Duration::from_secs(20), || m.queue_files("deferred").len()
                >= n),
            "{mech}: {}",
            m.log_text()
        );
    }
    let log = m.log_text();
    assert!(
        log.contains("sasl_method=PLAIN, sasl_username=alice"),
        "{log}"
    );
    assert!(
        log.contains("sasl_method=LOGIN, sasl_username=alice"),
        "{log}"
    );
    assert!(log.contains("postfix/submission/smtpd"), "{log}");
    // pflogsumm reads the client= lines with their SASL part: two received.
    let totals = testkit::pflogsumm(&m.log);
    assert_eq!(totals.get("received"), Some(&2), "{totals:?}");
    // No password, in clear or in base64, is ever written down.
    for secret in ["wonderland", "d29uZGVybGFuZA==", "AGFsaWNlAHdvbmRlcmxhbmQ="] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

/// Dovecot not running: the client is refused, and the log says why in
/// Postfix's words (strerror's, without Rust's "(os error 2)").
#[test]
fn submission_without_dovecot_logs_why_as_postfix() {
    let (m, _) = instance_signed(
        "smtpd_sasl_type = dovecot\nsmtpd_sasl_path = private/auth\n",
        false,
    );
    let port = add_service(&m, &debian_entry("submission"));
    m.start();
    m.wait_children(&[&format!("127.0.0.1:{port}")]);
    let (ok, out) = swaks_login(port, "PLAIN", "wonderland", "someone@remote.example");
    assert!(!ok, "{out}");
    let line = m.log_line("warning: SASL: Connect to ");
    assert!(
        line.ends_with("/private/auth failed: No such file or directory"),
        "{line}"
    );
}

#[test]
fn submission_refuses_wrong_passwords_auth_before_tls_and_relay_without_login() {
    let Some((m, _dovecot, port)) = submission("") else {
        eprintln!("skipped: needs root and dovecot");
        return;
    };
    let (ok, out) = swaks_login(port, "PLAIN", "wrong", "someone@remote.example");
    assert!(!ok, "{out}");
    assert!(
        out.contains("535 5.7.8 Error: authentication failed:"),
        "{out}"
    );
    assert!(
        m.wait_log("SASL PLAIN authentication failed: ", Duration::from_secs(5)),
        "{}",
        m.log_text()
    );
    assert!(!m.log_text().contains("wrong"), "{}", m.log_text());

    // Before TLS: no AUTH in EHLO, and AUTH is refused.
    let (mut s, _) = Smtp::connect(port);
    let ehlo = s.cmd("EHLO client.example");
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    assert!(ehlo.contains("STARTTLS"), "{ehlo}");
    assert_eq!(
        s.cmd("AUTH PLAIN AGFsaWNlAHdvbmRlcmxhbmQ="),
        "530 5.7.0 Must issue a STARTTLS command first"
    );
    drop(s);

    // TLS without login: smtpd_recipient_restrictions =
    // permit_sasl_authenticated,reject refuses.
    let out = tls::python(&format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP("127.0.0.1", {port})
s.starttls(context=ctx)
s.ehlo()
print(s.has_extn("auth"), s.esmtp_features.get("auth", "").strip())
s.mail("alice@ywnds.com")
print(s.rcpt("someone@remote.example"))
s.rset()
s.login("bob@ywnds.com", "builder")
s.mail("bob@ywnds.com")
print(s.rcpt("someone@remote.example"))
s.rset()
print(s.docmd("AUTH", "PLAIN AGJvYkB5d25kcy5jb20AYnVpbGRlcg=="))
s.quit()
"#
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "True PLAIN LOGIN", "{out}");
    assert!(
        lines[1].contains("554")
            && lines[1]
                .contains("<someone@remote.example>: Recipient address rejected: Access denied"),
        "{out}"
    );
    assert!(lines[2].starts_with("(250"), "{out}");
    assert!(
        out.contains("503") && out.contains("already authenticated"),
        "{out}"
    );
}

/// The Received: header and the TLS log line of one swaks session, as a
/// server wrote them, with what differs between any two runs (queue IDs,
/// dates, the client's name lookup, process IDs) made neutral.
fn neutral(text: &str, id: &str) -> String {
    let mut out = text.replace(id, "QUEUEID");
    for name in ["localhost[127.0.0.1]", "unknown[127.0.0.1]"] {
        out = out.replace(name, "CLIENT[127.0.0.1]");
    }
    for name in ["(localhost [127.0.0.1])", "(unknown [127.0.0.1])"] {
        out = out.replace(name, "(CLIENT [127.0.0.1])");
    }
    // The date after "; " on the last line of a header.
    if let Some(i) = out.rfind("; ").filter(|_| out.starts_with("Received:")) {
        out.truncate(i + 2);
        out.push_str("DATE");
    }
    out
}

#[test]
fn received_and_tls_log_lines_read_as_debian_postfix_writes_them() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: Debian's Postfix needs root");
        return;
    }
    let tls_cf =
        "smtpd_tls_security_level = may\nsmtpd_tls_received_header = yes\nsmtpd_tls_loglevel = 1\n";
    let (m, certs) = instance(tls_cf);
    m.start();
    let pf = testkit::debian::Postfix::new(
        None,
        &format!(
            "{tls_cf}smtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}\nrelayhost = [127.0.0.1]:9\n",
            certs.cert.display(),
            certs.key.display()
        ),
    );
    pf.start();
    let mut seen = Vec::new();
    for port in [pf.port, m.port] {
        let (ok, out) = tls::swaks(
            port,
            &[
                "--tls",
                "--from",
                "a@example.org",
                "--to",
                "openstack@ywnds.com",
                "--h-Subject",
                "same session",
            ],
        );
        assert!(ok, "{out}");
        let id = out
            .lines()
            .find_map(|l| l.split("queued as ").nth(1))
            .unwrap()
            .trim()
            .to_owned();
        seen.push(id);
    }
    // Postfix's copy waits in its queue; postfix-rs's is delivered.
    let out = pf.run("postcat", &["-hq", &seen[0]]);
    let postfix_headers = String::from_utf8_lossy(&out.stdout).into_owned();
    let postfix_received = received(&postfix_headers);
    let rs_text = String::from_utf8_lossy(&m.wait_maildir("openstack", 1)[0]).into_owned();
    let rs_received = received(&rs_text);
    let (a, b) = (
        neutral(&postfix_received, &seen[0]),
        neutral(&rs_received, &seen[1]),
    );
    eprintln!("Postfix:\n{a}\npostfix-rs:\n{b}");
    assert_eq!(a, b);
    // The log lines of the session, from after "smtpd[PID]: ".
    assert!(pf.wait_log("starttls=1", Duration::from_secs(5)));
    for what in ["TLS connection established from", "starttls=1"] {
        let line = |log: &str, id: &str| {
            log.lines()
                .find(|l| l.contains(what))
                .map(|l| neutral(&l[l.find("]: ").unwrap() + 3..], id))
                .unwrap_or_default()
        };
        let (a, b) = (
            line(&pf.log_text(), &seen[0]),
            line(&m.log_text(), &seen[1]),
        );
        assert_eq!(a, b, "Postfix: {a}\npostfix-rs: {b}");
    }
    pf.stop();
}

/// The first Received: header of a message, with its continuation lines.
fn received(message: &str) -> String {
    let mut out = Vec::new();
    for line in message.lines() {
        if out.is_empty() {
            if line.starts_with("Received: ") {
                out.push(line);
            }
        } else if line.starts_with(['\t', ' ']) {
            out.push(line);
        } else {
            break;
        }
    }
    out.join("\n")
}

#[test]
fn a_client_certificate_asked_for_is_named_in_received_and_the_log() {
    let (m, _) = instance(
        "smtpd_tls_security_level = may\nsmtpd_tls_ask_ccert = yes\nsmtpd_tls_received_header = yes\nsmtpd_tls_loglevel = 2\n",
    );
    let client = tls::self_signed(&m.root.path().join("home"), "laptop.example", false);
    m.start();
    let (ok, out) = tls::swaks(
        m.port,
        &[
            "--tls",
            "--tls-cert",
            &client.cert.display().to_string(),
            "--tls-key",
            &client.key.display().to_string(),
            "--from",
            "a@example.org",
            "--to",
            "openstack@ywnds.com",
        ],
    );
    assert!(ok, "{out}");
    let got = m.wait_maildir("openstack", 1);
    let text = String::from_utf8_lossy(&got[0]);
    assert!(
        text.contains("\t(Client CN \"laptop.example\", Issuer \"laptop.example\" (not verified))"),
        "{text}"
    );
    assert!(
        m.wait_log(
            "Untrusted TLS connection established from",
            Duration::from_secs(5)
        ),
        "{}",
        m.log_text()
    );
    let fp = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&client.cert)
        .output()
        .unwrap();
    let fp = String::from_utf8_lossy(&fp.stdout);
    let fp = fp.trim().rsplit('=').next().unwrap();
    assert!(
        m.log_text().contains(&format!(
            "subject_CN=laptop.example, issuer=laptop.example, fingerprint={fp}"
        )),
        "{fp} in {}",
        m.log_text()
    );
    // Without a certificate: asked, none given.
    let (ok, out) = tls::swaks(m.port, &PLAIN_TLS);
    assert!(ok, "{out}");
    let got = m.wait_maildir("openstack", 2);
    assert!(
        got.iter().any(
            |m| String::from_utf8_lossy(m).contains("\t(Client did not present a certificate)")
        ),
        "no such Received: line"
    );
}

#[test]
fn debians_submission_and_submissions_entries_uncommented_as_they_are() {
    let (m, _) = instance("smtpd_sasl_type = dovecot\nsmtpd_sasl_path = private/auth\nsmtpd_tls_security_level = may\n");
    if !nix::unistd::Uid::effective().is_root() || !tls::have("dovecot") {
        eprintln!("skipped: needs root and dovecot");
        return;
    }
    // The entries as Debian writes them, chroot column `y` included, on
    // loopback ports of the test's own.
    let (sub, subs) = (free_port(), free_port());
    let mut master = std::fs::read_to_string(m.etc.join("master.cf")).unwrap();
    master.push_str(&format!(
        "127.0.0.1:{sub} inet n       -       y       -       -       smtpd\n{}127.0.0.1:{subs} inet  n       -       y       -       -       smtpd\n{}",
        debian_entry("submission"),
        debian_entry("submissions")
    ));
    m.write_master_cf(&master);
    let check = m.run("postfix", &["check"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    m.start();
    m.wait_children(&[&format!("127.0.0.1:{sub}"), &format!("127.0.0.1:{subs}")]);
    let _dovecot = Dovecot::start(
        m.root.path(),
        &m.queue.join("private/auth"),
        &[("alice", "wonderland")],
    )
    .expect("dovecot");
    let relay = [
        "--from",
        "alice@ywnds.com",
        "--to",
        "someone@remote.example",
    ];
    let login = ["--auth-user", "alice", "--auth-password", "wonderland"];
    let (ok, out) = tls::swaks(
        sub,
        &[&["--tls", "--auth", "PLAIN"][..], &login, &relay].concat(),
    );
    assert!(ok, "{out}");
    let (ok, out) = tls::swaks(
        subs,
        &[&["--tls-on-connect", "--auth", "LOGIN"][..], &login, &relay].concat(),
    );
    assert!(ok, "{out}");
    // Without a login the recipient restrictions refuse the relay.
    let (ok, out) = tls::swaks(subs, &[&["--tls-on-connect"][..], &relay].concat());
    assert!(!ok, "{out}");
    assert!(
        out.contains(
            "554 5.7.1 <someone@remote.example>: Recipient address rejected: Access denied"
        ),
        "{out}"
    );
    let log = m.log_text();
    assert!(
        log.contains("postfix/submission/smtpd") && log.contains("postfix/submissions/smtpd"),
        "{log}"
    );
    assert!(
        log.contains("sasl_method=LOGIN, sasl_username=alice"),
        "{log}"
    );
}

#[test]
fn a_reload_turns_tls_on_and_keeps_it_with_a_key_only_root_can_read() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    // Started without TLS; the key is root's alone, as Debian's snakeoil key.
    let (m, certs) = instance("smtpd_tls_security_level = none\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&certs.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    m.start();
    let (ok, _) = tls::swaks(m.port, &PLAIN_TLS);
    assert!(!ok, "no STARTTLS yet");
    // The daemons run as mail_owner: each reload must still read the key.
    for (n, line) in [
        (1, "smtpd_tls_security_level = may\n"),
        (2, "smtpd_banner = $myhostname ESMTP reloaded\n"),
    ] {
        m.add_main_cf(line);
        let out = m.run("postfix", &["reload"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ready = testkit::wait_for(Duration::from_secs(10), || {
            let (mut s, greeting) = Smtp::connect(m.port);
            let ehlo = s.cmd("EHLO probe.example");
            (n == 1 || greeting.contains("ESMTP reloaded")) && ehlo.contains("STARTTLS")
        });
        assert!(ready, "reload {n}: {}", m.log_text());
        let (ok, out) = tls::swaks(m.port, &PLAIN_TLS);
        assert!(ok, "reload {n}: {out}");
        m.wait_maildir("openstack", n);
    }
    assert!(!m.log_text().contains("cannot load"), "{}", m.log_text());
}

#[test]
fn replies_before_starttls_at_level_encrypt_are_debian_postfixs() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: Debian's Postfix needs root");
        return;
    }
    let tls_cf = "smtpd_tls_security_level = encrypt\n";
    let (m, certs) = instance(tls_cf);
    m.start();
    let pf = testkit::debian::Postfix::new(
        None,
        &format!(
            "{tls_cf}smtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}\n",
            certs.cert.display(),
            certs.key.display()
        ),
    );
    pf.start();
    let session = [
        "EHLO client.example",
        "MAIL FROM:<a@example.org>",
        "RCPT TO:<openstack@ywnds.com>",
        "RSET",
        "VRFY openstack",
        "AUTH PLAIN AGFsaWNlAHNlY3JldA==",
        "NOOP",
        "FOO",
        "STARTTLS now",
        "QUIT",
    ];
    let replies = |port: u16| {
        let (mut s, _) = Smtp::connect(port);
        session
            .iter()
            .map(|c| {
                let r = s.cmd(c);
                // The code and each line's text, without the continuation
                // mark; DSN and CHUNKING are not offered by postfix-rs yet
                // (issue 22).
                let code = r.get(..3).unwrap_or("").to_owned();
                let text: Vec<&str> = r
                    .lines()
                    .map(|l| l.get(4..).unwrap_or(""))
                    .filter(|l| *l != "DSN" && *l != "CHUNKING")
                    .collect();
                format!("{code} {}", text.join(" | "))
            })
            .collect::<Vec<_>>()
    };
    let (a, b) = (replies(pf.port), replies(m.port));
    for ((cmd, a), b) in session.iter().zip(&a).zip(&b) {
        assert_eq!(a, b, "{cmd}: Postfix\n{a}\npostfix-rs\n{b}");
    }
    pf.stop();
}
