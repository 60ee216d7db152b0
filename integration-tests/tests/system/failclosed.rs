//! Fail closed: every parameter of Debian's Postfix 3.7 is known, and a
//! setting postfix-rs cannot honour stops `postfix check`, `start`,
//! `reload` and the daemons, naming file, line and parameter, rather than
//! letting in what Postfix would refuse.

use std::process::Command;
use std::time::Duration;

use testkit::{Instance, Smtp};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Postfix's parameters whose `postconf -d` value differs on purpose.
const DIFFERENT_DEFAULTS: &[&str] = &[
    // The program's own version.
    "mail_version",
    // Per process.
    "process_id",
    // postfix-rs takes Postfix 3.9's safer default against SMTP smuggling.
    "smtpd_forbid_bare_newline",
];

/// postfix-rs's own parameters, beside Postfix's.
const OWN: &[&str] = &["dns_servers", "local_passwd_file", "named_config_file"];

fn defaults(postconf: &std::path::Path, dir: &std::path::Path) -> Vec<(String, String)> {
    let out = Command::new(postconf)
        .arg("-c")
        .arg(dir)
        .arg("-d")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (Debian's postfix is installed by scripts/setup)",
                postconf.display()
            )
        });
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (n, v) = l.split_once(" =").unwrap();
            (n.to_owned(), v.trim_start().to_owned())
        })
        .collect()
}

#[test]
fn every_parameter_of_debians_postfix_is_known_with_its_default() {
    // Debian's own master.cf, for the per-transport parameters of its services.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        "/usr/share/postfix/master.cf.dist",
        dir.path().join("master.cf"),
    )
    .expect("Debian's postfix is installed by scripts/setup");
    std::fs::write(dir.path().join("main.cf"), "").unwrap();
    let theirs = defaults(std::path::Path::new("/usr/sbin/postconf"), dir.path());
    let ours = defaults(&testkit::bin("postconf"), dir.path());
    assert!(theirs.len() > 1000, "{}", theirs.len());
    let ours_map: std::collections::HashMap<_, _> = ours.iter().cloned().collect();
    let mut missing = vec![];
    let mut differ = vec![];
    for (name, value) in &theirs {
        match ours_map.get(name) {
            None => missing.push(name.clone()),
            Some(v) if v != value && !DIFFERENT_DEFAULTS.contains(&name.as_str()) => {
                differ.push(format!("{name}: Postfix {value:?}, postfix-rs {v:?}"))
            }
            Some(_) => {}
        }
    }
    assert!(missing.is_empty(), "unknown to postfix-rs: {missing:?}");
    assert!(differ.is_empty(), "{differ:#?}");
    let extra: Vec<&str> = ours
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| !theirs.iter().any(|(t, _)| t == n))
        .collect();
    assert_eq!(extra, OWN);
}

const SERVICES: &str = "alpha unix - - n - - fixture-service\n";

#[test]
fn a_refused_setting_stops_check_and_start_with_file_line_and_parameter() {
    let inst = Instance::new(
        SERVICES,
        "smtpd_milter_maps = cidr:/etc/postfix/milter_map\n",
    );
    for cmd in ["check", "start"] {
        let out = inst.run("postfix", &[cmd]);
        assert_eq!(out.status.code(), Some(1), "postfix {cmd}");
        let want = format!(
            "{}, line 11: smtpd_milter_maps = cidr:/etc/postfix/milter_map: not implemented by postfix-rs",
            inst.etc.join("main.cf").display()
        );
        assert!(stderr(&out).contains(&want), "{}", stderr(&out));
    }
    assert!(inst.master_pid().is_none());
    // master itself refuses too, when run without postfix(1).
    let out = Command::new(testkit::bin("master"))
        .arg("-c")
        .arg(&inst.etc)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "smtpd_milter_maps = cidr:/etc/postfix/milter_map: not implemented by postfix-rs"
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_master_cf_override_is_checked_with_its_line() {
    let inst = Instance::new(
        "alpha unix - - n - - fixture-service\nsubmission inet n - n - - smtpd\n  -o syslog_name=postfix/submission\n  -o smtpd_tls_req_ccert=yes\n",
        "",
    );
    let out = inst.run("postfix", &["check"]);
    assert_eq!(out.status.code(), Some(1));
    let want = format!(
        "{}, line 2: smtpd_tls_req_ccert = yes: not implemented by postfix-rs",
        inst.etc.join("master.cf").display()
    );
    assert!(stderr(&out).contains(&want), "{}", stderr(&out));
}

#[test]
fn tls_and_inert_settings_pass_the_check_without_a_word() {
    let inst = Instance::new(
        SERVICES,
        "smtpd_tls_security_level = may\nsmtp_tls_security_level = may\nbiff = no\nreadme_directory = no\nsmtpd_tls_loglevel = 1\n",
    );
    let out = inst.run("postfix", &["check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("not implemented"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("unused parameter"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_unknown_restriction_is_refused_at_check_not_at_run_time() {
    let inst = Instance::new(
        SERVICES,
        "smtpd_recipient_restrictions = permit_mynetworks, reject_unverified_recipient, reject_unauth_destination\n\
         smtpd_client_restrictions = check_client_access ldap:/etc/postfix/clients.cf\n",
    );
    let out = inst.run("postfix", &["check"]);
    assert_eq!(out.status.code(), Some(1));
    for refused in [
        "restriction \"reject_unverified_recipient\" in smtpd_recipient_restrictions: not implemented by postfix-rs",
        "restriction \"check_client_access ldap:/etc/postfix/clients.cf\" in smtpd_client_restrictions: table type \"ldap\" not implemented by postfix-rs",
    ] {
        assert!(stderr(&out).contains(refused), "{}", stderr(&out));
    }
}

#[test]
fn a_refused_reload_keeps_the_running_configuration() {
    let m = Instance::mail("");
    m.start();
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<openstack@ywnds.com>").starts_with("250"));
    c.cmd("QUIT");

    m.add_main_cf("smtpd_milter_maps = cidr:/etc/postfix/milter_map\n");
    let out = m.run("postfix", &["reload"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "smtpd_milter_maps = cidr:/etc/postfix/milter_map: not implemented by postfix-rs"
        ),
        "{}",
        stderr(&out)
    );
    // A SIGHUP straight to master is refused the same way.
    let master = m.master_pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(master),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    assert!(m.wait_log(
        "reload failed, keeping the running configuration",
        Duration::from_secs(5)
    ));
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<openstack@ywnds.com>").starts_with("250"));
    c.cmd("QUIT");

    // A daemon started now (its predecessor died) will not run with it.
    let smtpd = m.child_pid(&format!("127.0.0.1:{}", m.port)).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(smtpd),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        m.wait_log("fatal: /", Duration::from_secs(10)),
        "{}",
        m.log_text()
    );
    assert!(
        m.log_text().lines().any(|l| l.contains("fatal: ")
            && l.contains(
                "smtpd_milter_maps = cidr:/etc/postfix/milter_map: not implemented by postfix-rs"
            )),
        "{}",
        m.log_text()
    );
}

#[test]
fn smtputf8_enable_no_is_honoured_as_postfix_does() {
    let m = Instance::mail("smtputf8_enable = no\n");
    m.start();
    let (mut c, _) = Smtp::connect(m.port);
    let ehlo = c.cmd("EHLO client.example");
    assert!(!ehlo.contains("SMTPUTF8"), "{ehlo}");
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.org> SMTPUTF8"),
        "555 5.5.4 Unsupported option: SMTPUTF8"
    );
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    // Postfix sends no 8-bit byte in a reply without SMTPUTF8.
    assert_eq!(
        c.cmd("RCPT TO:<\u{fc}@ywnds.com>"),
        "550 5.1.1 <  @ywnds.com>: Recipient address rejected: User unknown in local recipient table"
    );

    let m = Instance::mail("");
    m.start();
    let (mut c, _) = Smtp::connect(m.port);
    assert!(c.cmd("EHLO client.example").contains("SMTPUTF8"));
    assert!(c
        .cmd("MAIL FROM:<a@example.org> SMTPUTF8")
        .starts_with("250"));
}

#[test]
fn show_user_unknown_table_name_no_hides_the_table() {
    let m = Instance::mail("show_user_unknown_table_name = no\n");
    m.start();
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    c.cmd("MAIL FROM:<a@example.org>");
    assert_eq!(
        c.cmd("RCPT TO:<nobody@ywnds.com>"),
        "550 5.1.1 <nobody@ywnds.com>: Recipient address rejected: User unknown"
    );
}

#[test]
fn programs_postfix_rs_lacks_are_refused() {
    let inst = Instance::new(
        "alpha unix - - n - - fixture-service\nsmtp inet n - n - 1 postscreen\n",
        "",
    );
    let out = inst.run("postfix", &["check"]);
    assert_eq!(out.status.code(), Some(1));
    let master_cf = inst.etc.join("master.cf");
    let want = format!(
        "{}, line 2: service smtp/inet = postscreen: program not implemented by postfix-rs",
        master_cf.display()
    );
    assert!(stderr(&out).contains(&want), "{want}\n{}", stderr(&out));
}
