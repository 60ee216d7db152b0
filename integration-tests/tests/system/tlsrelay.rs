//! The smtp client with TLS and SMTP AUTH: relaying through a provider's
//! submission port, the security levels from `may` to `verify`, and Debian's
//! Postfix as the peer in both directions.

use std::time::Duration;

use testkit::debian::Postfix;
use testkit::fake_mx::{FakeMx, Script};
use testkit::tls::{self, Dovecot};
use testkit::{Instance, MailInstance, Smtp};

use crate::tls::{debian_entry, submission_signed};

/// A postfix-rs instance for another domain that relays everything to
/// `[127.0.0.1]:port` with `extra` main.cf lines.
fn client(port: u16, extra: &str) -> MailInstance {
    let m = Instance::mail(&format!(
        "myhostname = relay.example.org\nmydestination = localhost\nrelayhost = [127.0.0.1]:{port}\n{extra}"
    ));
    m.add_smtp();
    m
}

/// Writes a texthash password table into the instance's etc.
fn passwords(m: &MailInstance, text: &str) -> String {
    let path = m.etc.join("sasl_passwd");
    std::fs::write(&path, text).unwrap();
    format!("texthash:{}", path.display())
}

fn send(m: &MailInstance, subject: &str) -> String {
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    let data = format!("From: hadoop@relay.example.org\r\nTo: openstack@ywnds.com\r\nSubject: {subject}\r\n\r\nvia the provider\r\n");
    c.queued(
        "hadoop@relay.example.org",
        &["openstack@ywnds.com"],
        data.as_bytes(),
    )
}

#[test]
fn relaying_through_a_provider_on_submission_with_starttls_and_auth() {
    let Some((provider, _dovecot, port)) = submission_signed("", true) else {
        eprintln!("skipped: needs root and dovecot");
        return;
    };
    let ca = provider.root.path().join("ca.pem");
    let c = client(port, "smtp_tls_security_level = verify\nsmtp_sasl_auth_enable = yes\nsmtp_sasl_security_options = noanonymous\nsmtp_tls_loglevel = 1\n");
    let table = passwords(&c, &format!("[127.0.0.1]:{port} alice:wonderland\n"));
    c.add_main_cf(&format!(
        "smtp_sasl_password_maps = {table}\nsmtp_tls_CAfile = {}\n",
        ca.display()
    ));
    c.start();
    send(&c, "first");
    let got = provider.wait_maildir("openstack", 1);
    let text = String::from_utf8_lossy(&got[0]);
    assert!(text.contains("with ESMTPSA id"), "{text}");
    let line = c.log_line("status=sent");
    assert!(
        line.contains(&format!("relay=127.0.0.1[127.0.0.1]:{port}")),
        "{line}"
    );
    c.log_line(&format!(
        "Verified TLS connection established to 127.0.0.1[127.0.0.1]:{port}: TLSv1.3 with cipher"
    ));
    provider.log_line("sasl_method=PLAIN, sasl_username=alice");
    assert!(!c.log_text().contains("wonderland"), "{}", c.log_text());
}

#[test]
fn tls_levels_and_sasl_options_defer_rather_than_weaken() {
    let Some((provider, _dovecot, port)) = submission_signed("", false) else {
        eprintln!("skipped: needs root and dovecot");
        return;
    };
    // Postfix's default smtp_sasl_security_options (noplaintext): PLAIN and
    // LOGIN may not be used, so the mail waits.
    let c = client(
        port,
        "smtp_tls_security_level = encrypt\nsmtp_sasl_auth_enable = yes\n",
    );
    let table = passwords(&c, &format!("[127.0.0.1]:{port} alice:wonderland\n"));
    c.add_main_cf(&format!("smtp_sasl_password_maps = {table}\n"));
    c.start();
    send(&c, "no mechanism");
    let line = c.log_line("status=deferred");
    assert!(
        line.contains("SASL authentication failed; cannot authenticate to server 127.0.0.1[127.0.0.1]: no mechanism available"),
        "{line}"
    );
    drop(c);

    // verify against a self-signed certificate no CA vouches for: deferred.
    let c = client(port, "smtp_tls_security_level = verify\n");
    c.start();
    send(&c, "not verified");
    let line = c.log_line("status=deferred");
    assert!(line.contains("Server certificate not verified"), "{line}");
    drop(c);

    // encrypt towards a port that offers no STARTTLS (the provider's port 25
    // here has TLS off): deferred, never sent in the clear.
    let c = client(provider.port, "smtp_tls_security_level = encrypt\n");
    c.start();
    send(&c, "not offered");
    let line = c.log_line("status=deferred");
    assert!(
        line.contains("TLS is required, but was not offered by host 127.0.0.1[127.0.0.1]"),
        "{line}"
    );
    // may: the same port takes it in plain text.
    let c = client(provider.port, "smtp_tls_security_level = may\n");
    c.start();
    send(&c, "opportunistic");
    c.log_line("status=sent");
    assert_eq!(provider.wait_maildir("openstack", 1).len(), 1);
    // A policy table entry overrides the default level for its next hop.
    let c = client(provider.port, "smtp_tls_security_level = may\n");
    let policy = c.etc.join("tls_policy");
    std::fs::write(&policy, format!("[127.0.0.1]:{} encrypt\n", provider.port)).unwrap();
    c.add_main_cf(&format!(
        "smtp_tls_policy_maps = texthash:{}\n",
        policy.display()
    ));
    c.start();
    send(&c, "policy");
    let line = c.log_line("status=deferred");
    assert!(
        line.contains("TLS is required, but was not offered"),
        "{line}"
    );
}

#[test]
fn debian_postfix_relays_to_postfix_rs_with_encrypt_and_sasl() {
    let Some((provider, _dovecot, port)) = submission_signed("", false) else {
        eprintln!("skipped: needs root and dovecot");
        return;
    };
    let pf = Postfix::new(
        None,
        &format!(
            "relayhost = [127.0.0.1]:{port}\nsmtp_tls_security_level = encrypt\nsmtp_sasl_auth_enable = yes\n\
             smtp_sasl_security_options = noanonymous\nsmtp_tls_loglevel = 1\n"
        ),
    );
    let table = pf.etc.join("sasl_passwd");
    std::fs::write(
        &table,
        format!("[127.0.0.1]:{port} bob@ywnds.com:builder\n"),
    )
    .unwrap();
    std::fs::write(
        pf.etc.join("main.cf"),
        format!(
            "{}smtp_sasl_password_maps = texthash:{}\n",
            std::fs::read_to_string(pf.etc.join("main.cf")).unwrap(),
            table.display()
        ),
    )
    .unwrap();
    pf.start();
    let (mut s, _) = Smtp::connect(pf.port);
    s.cmd("EHLO client.example");
    s.queued(
        "bob@ywnds.com",
        &["openstack@ywnds.com"],
        b"Subject: from Debian's Postfix\r\n\r\nhello\r\n",
    );
    let got = provider.wait_maildir("openstack", 1);
    let text = String::from_utf8_lossy(&got[0]);
    assert!(text.contains("with ESMTPSA id"), "{text}");
    provider.log_line("sasl_method=PLAIN, sasl_username=bob@ywnds.com");
    assert!(
        pf.wait_log(
            "Untrusted TLS connection established to 127.0.0.1[127.0.0.1]",
            Duration::from_secs(10)
        ),
        "{}",
        pf.log_text()
    );
    assert!(
        pf.wait_log("status=sent", Duration::from_secs(10)),
        "{}",
        pf.log_text()
    );
    pf.stop();
}

#[test]
fn postfix_rs_relays_to_debian_postfix_submission_that_requires_starttls_and_auth() {
    if !nix::unistd::Uid::effective().is_root() || !tls::have("dovecot") {
        eprintln!("skipped: needs root and dovecot");
        return;
    }
    // Debian's Postfix as the provider: its submission service requires TLS
    // and AUTH through its own Dovecot.
    let probe = Instance::mail("");
    let certs = tls::self_signed(probe.root.path(), "smtp.provider.example", true);
    let sub_port = testkit::free_port();
    let pf = Postfix::new(
        None,
        &format!(
            "smtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}\nsmtpd_sasl_type = dovecot\nsmtpd_sasl_path = private/auth\n\
             relayhost = [127.0.0.1]:9\n",
            certs.cert.display(),
            certs.key.display()
        ),
    );
    let mut master = std::fs::read_to_string(pf.etc.join("master.cf")).unwrap();
    master.push_str(&format!(
        "127.0.0.1:{sub_port} inet n - n - - smtpd\n{}",
        debian_entry("submission")
    ));
    std::fs::write(pf.etc.join("master.cf"), master).unwrap();
    pf.start();
    // After Postfix made its private/ directory.
    let _dovecot = Dovecot::start(
        pf.root.path(),
        &pf.queue.join("private/auth"),
        &[("carol", "provider-secret")],
    )
    .expect("dovecot");
    assert!(testkit::wait_for(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", sub_port)).is_ok()
    }));
    let c = client(
        sub_port,
        "smtp_tls_security_level = encrypt\nsmtp_sasl_auth_enable = yes\nsmtp_sasl_security_options = noanonymous\n",
    );
    let table = passwords(
        &c,
        &format!("[127.0.0.1]:{sub_port} carol:provider-secret\n"),
    );
    c.add_main_cf(&format!("smtp_sasl_password_maps = {table}\n"));
    c.start();
    send(&c, "to the provider");
    let line = c.log_line("status=sent");
    assert!(
        line.contains(&format!("relay=127.0.0.1[127.0.0.1]:{sub_port}")),
        "{line}"
    );
    assert!(
        pf.wait_log(
            "sasl_method=PLAIN, sasl_username=carol",
            Duration::from_secs(10)
        ),
        "{}",
        pf.log_text()
    );
    // A wrong password: Postfix refuses, postfix-rs defers (soft bounce).
    let c2 = client(
        sub_port,
        "smtp_tls_security_level = encrypt\nsmtp_sasl_auth_enable = yes\nsmtp_sasl_security_options = noanonymous\n",
    );
    let table = passwords(&c2, &format!("[127.0.0.1]:{sub_port} carol:wrong\n"));
    c2.add_main_cf(&format!("smtp_sasl_password_maps = {table}\n"));
    c2.start();
    send(&c2, "wrong password");
    let line = c2.log_line("status=deferred");
    assert!(
        line.contains("SASL authentication failed; server 127.0.0.1[127.0.0.1] said: 535 5.7.8 Error: authentication failed"),
        "{line}"
    );
    // Postfix's own warning for it, which postfix-rs's smtpd writes alike
    // (tls::submission_refuses_wrong_passwords_...).
    let warning = "]: SASL PLAIN authentication failed: (reason unavailable), sasl_username=carol";
    assert!(
        pf.wait_log(warning, Duration::from_secs(10)),
        "{}",
        pf.log_text()
    );
    pf.stop();
    drop(probe);
}

#[test]
fn may_gives_way_to_plain_text_when_the_handshake_keeps_failing() {
    let mut script = Script::default();
    script.extensions.push("STARTTLS".into());
    let mx = FakeMx::start("127.0.0.1", script);
    let c = client(mx.port, "smtp_tls_security_level = may\n");
    c.start();
    send(&c, "broken TLS");
    // The first attempt defers; once the message has waited
    // minimal_backoff_time, plain text.
    let deferred = c.log_line("status=deferred");
    assert!(
        deferred.contains("Cannot start TLS: handshake failure"),
        "{deferred}"
    );
    c.log_line("status=sent");
    assert_eq!(mx.accepted().len(), 1);
    // encrypt never does.
    let mx = FakeMx::start("127.0.0.1", {
        let mut s = Script::default();
        s.extensions.push("STARTTLS".into());
        s
    });
    let c = client(mx.port, "smtp_tls_security_level = encrypt\n");
    c.start();
    send(&c, "broken TLS, encrypt");
    c.log_line("status=deferred");
    std::thread::sleep(Duration::from_secs(4));
    assert!(!c.log_text().contains("status=sent"), "{}", c.log_text());
    assert!(mx.accepted().is_empty());
}

#[test]
fn a_server_that_refuses_ehlo_gets_no_mail_when_tls_is_required() {
    // Answering 502 to EHLO must not strip TLS: a HELO session has no
    // STARTTLS, so a mandatory level defers.
    let mx = FakeMx::start(
        "127.0.0.1",
        Script {
            helo_only: true,
            ..Script::default()
        },
    );
    let c = client(mx.port, "smtp_tls_security_level = encrypt\n");
    c.start();
    send(&c, "downgrade attempt");
    let line = c.log_line("status=deferred");
    assert!(
        line.contains("TLS is required, but was not offered by host 127.0.0.1[127.0.0.1]"),
        "{line}"
    );
    assert!(mx.accepted().is_empty());
    assert!(
        !mx.commands().iter().any(|c| c.starts_with("MAIL")),
        "{:?}",
        mx.commands()
    );
}
