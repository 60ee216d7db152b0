//! `smtpd_milters`: the tests' own milter (integration-tests/milters/
//! testmilter.py, on Debian's pymilter, Sendmail's libmilter underneath)
//! answers each message by its Subject: every header change, a new body,
//! added and deleted recipients, a new sender, REJECT with its own reply,
//! TEMPFAIL, DISCARD, quarantine, and a refused RCPT. Debian's Postfix
//! and postfix-rs talk to the same milter; the replies, the log lines and
//! what reaches the next hop must be the same.

use std::path::{Path, PathBuf};
use std::time::Duration;

use testkit::wait_for;

use crate::sidebyside::{same_replies, side_by_side};

/// The milter, killed when dropped.
struct Running(std::process::Child);

/// A server that forks workers (rspamd), in a process group of its own:
/// the whole group is stopped when dropped, so no worker outlives it.
struct Group(std::process::Child);

impl Drop for Group {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGTERM);
        let stopped = wait_for(Duration::from_secs(10), || {
            matches!(self.0.try_wait(), Ok(Some(_)))
                && nix::sys::signal::killpg(pgid, None).is_err()
        });
        if !stopped {
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = self.0.wait();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The test milter on a free loopback port, writing the macros it was
/// given to a file; `None` when pymilter is not installed.
fn test_milter(dir: &Path) -> Option<(Running, u16, PathBuf)> {
    let python = Path::new("/usr/bin/python3");
    let has = std::process::Command::new(python)
        .args(["-c", "import Milter"])
        .status()
        .is_ok_and(|s| s.success());
    if !has {
        eprintln!("skipped: pymilter is not installed (scripts/setup installs python3-milter)");
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("milters/testmilter.py");
    let port = testkit::free_port();
    let macros = dir.join("macros");
    let child = std::process::Command::new(python)
        .arg(script)
        .arg(port.to_string())
        .arg(&macros)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("test milter");
    assert!(
        wait_for(Duration::from_secs(20), || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "the test milter did not start"
    );
    Some((Running(child), port, macros))
}

/// What the next hop got: envelope and content, smtpd's `Received:`
/// (queue IDs, dates) shown as `Received: X` where it stands.
fn relayed(mx: &testkit::fake_mx::FakeMx) -> Vec<String> {
    let mut out: Vec<String> = mx
        .accepted()
        .iter()
        .map(|a| {
            let text = String::from_utf8_lossy(&a.data).replace("\r\n", "\n");
            let mut lines = Vec::new();
            let mut in_received = false;
            let mut in_headers = true;
            for l in text.lines() {
                if in_headers && l.is_empty() {
                    in_headers = false;
                }
                if in_headers && l.starts_with("Received:") {
                    in_received = true;
                    lines.push("Received: X".to_owned());
                    continue;
                }
                if in_received && l.starts_with([' ', '\t']) {
                    continue;
                }
                in_received = false;
                // Added by cleanup, with its queue ID and time.
                if in_headers && (l.starts_with("Message-Id:") || l.starts_with("Date:")) {
                    lines.push(format!("{}: X", l.split(':').next().unwrap_or("")));
                    continue;
                }
                lines.push(l.to_owned());
            }
            let mut rcpts = a.recipients.clone();
            rcpts.sort();
            format!("{} -> {rcpts:?}\n{}", a.sender, lines.join("\n"))
        })
        .collect();
    out.sort();
    out
}

/// The milter lines of a log, queue IDs and ports left out, each once
/// (the harness's own readiness probes connect too).
fn milter_lines(log: &str) -> Vec<String> {
    let mut v: Vec<String> = log
        .lines()
        .filter(|l| l.contains(": milter-"))
        .map(|l| {
            let from = l.find(": milter-").unwrap_or(0);
            l[from..].to_owned()
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

#[test]
fn a_milter_changes_refuses_and_holds_as_with_debian_postfix() {
    // One milter each, so that the macros each system gives can be told apart.
    let (theirs_dir, ours_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let Some((_theirs_milter, port, theirs_macros)) = test_milter(theirs_dir.path()) else {
        return;
    };
    let Some((_milter, our_port, macros)) = test_milter(ours_dir.path()) else {
        return;
    };
    let Some(both) = crate::sidebyside::side_by_side_with(
        &format!(
            "mynetworks = 127.0.0.1/32\nsmtpd_peername_lookup = no\n\
             relayhost = [127.0.0.1]:SINK\nmyhostname = mail.ywnds.com\n\
             smtpd_milters = inet:127.0.0.1:{port}\n"
        ),
        &format!("smtpd_milters = inet:127.0.0.1:{our_port}\n"),
        &[],
    ) else {
        return;
    };
    let session = |subject: &'static str, rcpts: &[&'static str], content: &'static str| {
        let mut s = vec![
            "EHLO client.example".to_owned(),
            "MAIL FROM:<s@client.example>".to_owned(),
        ];
        s.extend(rcpts.iter().map(|r| format!("RCPT TO:<{r}>")));
        s.push("DATA".into());
        s.push(format!("Subject: {subject}\r\n{content}"));
        s.push("QUIT".into());
        s
    };
    let sessions = [
        session(
            "edit",
            &["kept@remote.example", "gone@remote.example"],
            "X-Remove: bye\r\nX-Twice: first\r\nX-Twice: second\r\n\r\nold body\r\n",
        ),
        session(
            "plain",
            &["refused@remote.example", "plain@remote.example"],
            "\r\nuntouched\r\n",
        ),
        session("reject", &["r@remote.example"], "\r\nbody\r\n"),
        session("tempfail", &["t@remote.example"], "\r\nbody\r\n"),
        session("discard", &["d@remote.example"], "\r\nbody\r\n"),
        session("quarantine", &["q@remote.example"], "\r\nbody\r\n"),
    ];
    for s in &sessions {
        let steps: Vec<&str> = s.iter().map(String::as_str).collect();
        same_replies(&both, "127.0.0.1", &steps);
    }
    let settled = |mx: &testkit::fake_mx::FakeMx| {
        wait_for(Duration::from_secs(20), || mx.accepted().len() >= 2)
    };
    assert!(settled(&both.theirs_mx) && settled(&both.ours_mx));
    std::thread::sleep(Duration::from_millis(500));
    let (theirs, ours) = (relayed(&both.theirs_mx), relayed(&both.ours_mx));
    assert_eq!(theirs, ours, "postfix-rs log:\n{}", both.m.log_text());
    assert!(
        ours.iter().any(|m| m.starts_with(
            "changed@example.org -> [\"added@remote.example\", \"kept@remote.example\"]"
        )),
        "{ours:#?}"
    );
    let (theirs, ours) = (
        milter_lines(&both.pf.log_text()),
        milter_lines(&both.m.log_text()),
    );
    assert_eq!(theirs, ours, "postfix-rs log:\n{}", both.m.log_text());
    assert_eq!(ours.len(), 5, "{ours:#?}");
    // The quarantined message waits in hold/.
    assert_eq!(both.m.queue_files("hold").len(), 1);
    // The macros Postfix gives by default reach the milter, with the
    // values Postfix gives (queue IDs aside).
    let given = std::fs::read_to_string(&macros).unwrap();
    let values = |text: &str| {
        // Queue IDs, version, and each system's own next-hop port apart.
        let mut v: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with("i=") && !l.starts_with("v="))
            .map(|l| match l.rsplit_once("]:") {
                Some((host, _)) => format!("{host}]:PORT"),
                None => l.to_owned(),
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        values(&std::fs::read_to_string(&theirs_macros).unwrap()),
        values(&given)
    );
    assert!(given.contains("{rcpt_mailer}=smtp"), "{given}");
    assert!(given.contains("j=mail.ywnds.com"), "{given}");
    assert!(given.contains("{daemon_name}=mail.ywnds.com"), "{given}");
    assert!(
        given
            .lines()
            .any(|l| l.starts_with("i=") && l.len() > 4 && l != "i=None"),
        "{given}"
    );
}

/// OpenDKIM from Debian signs what postfix-rs relays for its own clients;
/// the signature is verified by an independent verifier (Python's dkimpy)
/// against the key published in a TXT record that postfix-rs's named
/// serves.
#[test]
fn opendkim_signs_outgoing_mail_and_dkimpy_verifies_it() {
    let opendkim = Path::new("/usr/sbin/opendkim");
    let verifier_ok = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import dkim, dns.resolver"])
        .status()
        .is_ok_and(|s| s.success());
    if !opendkim.exists() || !verifier_ok {
        eprintln!(
            "skipped: opendkim or python3-dkim is not installed (scripts/setup installs them)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path();
    let made = std::process::Command::new("opendkim-genkey")
        .args(["-b", "1024", "-d", "ywnds.com", "-s", "test", "-D"])
        .arg(keys)
        .status()
        .unwrap();
    assert!(made.success());
    // The TXT record as one line: its quoted strings, in order.
    let txt = std::fs::read_to_string(keys.join("test.txt")).unwrap();
    let strings: Vec<&str> = txt.split('"').skip(1).step_by(2).collect();
    let record = format!("test._domainkey IN TXT \"{}\"\n", strings.concat());
    let port = testkit::free_port();
    // RequireSafeKeys: the test's directory is under /tmp, which OpenDKIM
    // would not trust.
    std::fs::write(
        keys.join("opendkim.conf"),
        format!(
            "Syslog no\nMode s\nDomain ywnds.com\nSelector test\nKeyFile {}\n\
             Socket inet:{port}@127.0.0.1\nInternalHosts 127.0.0.1\n\
             Canonicalization relaxed/simple\nRequireSafeKeys no\nPidFile {}\n",
            keys.join("test.private").display(),
            keys.join("opendkim.pid").display()
        ),
    )
    .unwrap();
    let _dkim = Running(
        std::process::Command::new(opendkim)
            .arg("-f")
            .arg("-x")
            .arg(keys.join("opendkim.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("opendkim"),
    );
    assert!(
        wait_for(Duration::from_secs(20), || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "opendkim did not start"
    );
    let mx = testkit::fake_mx::FakeMx::start("127.0.0.1", testkit::fake_mx::Script::default());
    let m = testkit::Instance::mail(&format!(
        "mynetworks = 127.0.0.1/32\nsmtpd_peername_lookup = no\n\
         relayhost = [127.0.0.1]:{}\nsmtpd_milters = inet:127.0.0.1:{port}\n",
        mx.port
    ));
    m.add_smtp();
    let dns_port = m.inst.add_named("", &record);
    m.start();
    let (mut c, _) = testkit::Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    c.queued(
        "hadoop@ywnds.com",
        &["someone@remote.example"],
        b"From: Hadoop <hadoop@ywnds.com>\r\nTo: someone@remote.example\r\n\
          Subject: signed\r\nDate: Sat, 05 Dec 2026 07:00:00 +0000\r\n\
          Message-ID: <signed@ywnds.com>\r\n\r\nThis message is signed.\r\n",
    );
    assert!(
        wait_for(Duration::from_secs(20), || !mx.accepted().is_empty()),
        "{}",
        m.log_text()
    );
    let data = mx.accepted()[0].data.clone();
    let text = String::from_utf8_lossy(&data);
    assert!(text.contains("DKIM-Signature: "), "{text}");
    let verify = format!(
        "import dkim, dns.resolver, sys\n\
         r = dns.resolver.Resolver(configure=False)\n\
         r.nameservers = ['127.0.0.1']\n\
         r.port = {dns_port}\n\
         def txt(name, timeout=5):\n    \
             a = r.resolve(name.decode().rstrip('.'), 'TXT')\n    \
             return b''.join(a[0].strings)\n\
         sys.exit(0 if dkim.verify(sys.stdin.buffer.read(), dnsfunc=txt) else 1)\n"
    );
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args(["-c", &verify])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &data).unwrap();
    assert!(child.wait().unwrap().success(), "not verified:\n{text}");
    // The same message with its body changed no longer verifies.
    let tampered = text.replace("This message is signed.", "This message is forged.");
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args(["-c", &verify])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), tampered.as_bytes()).unwrap();
    assert!(!child.wait().unwrap().success());
}

/// A milter that is not there, or that never answers: each
/// `milter_default_action` as Debian's Postfix applies it, greeting,
/// replies and log lines compared.
#[test]
fn a_missing_or_silent_milter_gets_the_default_action_as_in_postfix() {
    // A milter that takes connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in silent.incoming() {
            held.push(c);
        }
    });
    let down_port = testkit::free_port();
    let cases = [
        (down_port, "milter_default_action = tempfail\n", false),
        (down_port, "milter_default_action = reject\n", false),
        (
            silent_port,
            "milter_default_action = accept\nmilter_command_timeout = 2s\n",
            true,
        ),
    ];
    for (port, action, delivered) in cases {
        let Some(both) = side_by_side(
            &format!(
                "mynetworks = 127.0.0.1/32\nsmtpd_peername_lookup = no\n\
                 relayhost = [127.0.0.1]:SINK\nmyhostname = mail.ywnds.com\n\
                 smtpd_milters = inet:127.0.0.1:{port}\n{action}"
            ),
            &[],
        ) else {
            return;
        };
        let session = [
            "EHLO client.example",
            "MAIL FROM:<s@client.example>",
            "RCPT TO:<x@remote.example>",
            "DATA",
            "Subject: x\r\n\r\nbody\r\n",
            "QUIT",
        ];
        let theirs = crate::sidebyside::converse_from("127.0.0.1", both.pf.port, &session);
        let ours = crate::sidebyside::converse_from("127.0.0.1", both.m.port, &session);
        // EHLO's keyword lists differ in what each implements.
        let skip_ehlo = |v: &[String]| -> Vec<String> {
            v.iter()
                .enumerate()
                .filter(|(i, _)| *i != 1)
                .map(|(_, r)| r.clone())
                .collect()
        };
        assert_eq!(
            skip_ehlo(&theirs),
            skip_ehlo(&ours),
            "{action}postfix-rs log:\n{}",
            both.m.log_text()
        );
        let mx = |m: &testkit::fake_mx::FakeMx| {
            wait_for(Duration::from_secs(5), || !m.accepted().is_empty())
        };
        assert_eq!(mx(&both.theirs_mx), delivered, "{action}");
        assert_eq!(mx(&both.ours_mx), delivered, "{action}");
        assert_eq!(
            milter_lines(&both.pf.log_text()),
            milter_lines(&both.m.log_text()),
            "{action}postfix-rs log:\n{}",
            both.m.log_text()
        );
        let warning = if delivered {
            "can't read SMFIC_OPTNEG reply packet header: Connection timed out"
        } else {
            "Connection refused"
        };
        assert!(both.m.log_text().contains(warning), "{}", both.m.log_text());
    }
}

/// Submits a message with a system's sendmail (`ours`: postfix-rs's,
/// else Debian's), from `s@client.example`.
fn sendmail(etc: &Path, ours: bool, rcpts: &[&str], content: &str) {
    let mut cmd = if ours {
        let mut c = std::process::Command::new(testkit::bin("sendmail"));
        c.arg("-C").arg(etc);
        c
    } else {
        let mut c = std::process::Command::new("/usr/sbin/sendmail");
        c.env("MAIL_CONFIG", etc);
        c
    };
    let mut child = cmd
        .args(["-f", "s@client.example"])
        .args(rcpts)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), content.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
}

/// `non_smtpd_milters` on local submissions, side by side with Debian's
/// Postfix: cleanup plays connect, EHLO, MAIL, RCPT and DATA to the milter
/// as Postfix's does, its changes are made, its refusal returns the
/// message to the sender, a refused recipient or a tempfail leaves the
/// message in maildrop/ for later, quarantine holds it. And mail from an
/// SMTP client whose smtpd has no milters of its own meets them too, as in
/// Postfix.
#[test]
fn non_smtpd_milters_act_on_local_submissions_as_in_debian_postfix() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_milter, port, _macros)) = test_milter(dir.path()) else {
        return;
    };
    let Some(both) = side_by_side(
        &format!(
            "mynetworks = 127.0.0.1/32\nsmtpd_peername_lookup = no\n\
             relayhost = [127.0.0.1]:SINK\nmyhostname = mail.ywnds.com\n\
             non_smtpd_milters = inet:127.0.0.1:{port}\n"
        ),
        &[],
    ) else {
        return;
    };
    let messages: &[(&[&str], &str)] = &[
        (
            &["kept@remote.example", "gone@remote.example"],
            "Subject: edit\nX-Remove: bye\nX-Twice: first\nX-Twice: second\n\nold body\n",
        ),
        (&["plain@remote.example"], "Subject: plain\n\nuntouched\n"),
        (&["r@remote.example"], "Subject: reject\n\nbody\n"),
        (&["t@remote.example"], "Subject: tempfail\n\nbody\n"),
        (&["d@remote.example"], "Subject: discard\n\nbody\n"),
        (&["q@remote.example"], "Subject: quarantine\n\nbody\n"),
        (&["refused@remote.example"], "Subject: refused\n\nbody\n"),
    ];
    for (ours, etc) in [(false, &both.pf.etc), (true, &both.m.etc)] {
        for (rcpts, content) in messages {
            sendmail(etc, ours, rcpts, content);
        }
    }
    // Over SMTP, to an smtpd without milters of its own.
    let smtp = [
        "EHLO client.example",
        "MAIL FROM:<s@client.example>",
        "RCPT TO:<smtp@remote.example>",
        "DATA",
        "Subject: reject\r\n\r\nbody\r\n",
        "QUIT",
    ];
    same_replies(&both, "127.0.0.1", &smtp);
    // edit, plain, and the notice that returns `reject`.
    let settled = |mx: &testkit::fake_mx::FakeMx| {
        wait_for(Duration::from_secs(30), || mx.accepted().len() >= 3)
    };
    assert!(
        settled(&both.theirs_mx) && settled(&both.ours_mx),
        "{}",
        both.m.log_text()
    );
    std::thread::sleep(Duration::from_secs(1));
    // The notices (null sender) are counted, not compared: their SIZE=
    // differs (Postfix counts the queue file's records).
    let notice = |m: &String| m.starts_with(' ');
    let mail = |mx: &testkit::fake_mx::FakeMx| -> Vec<String> {
        relayed(mx).into_iter().filter(|m| !notice(m)).collect()
    };
    let (theirs, ours) = (mail(&both.theirs_mx), mail(&both.ours_mx));
    assert_eq!(theirs, ours, "postfix-rs log:\n{}", both.m.log_text());
    assert!(
        ours.iter().any(|m| m.starts_with(
            "changed@example.org -> [\"added@remote.example\", \"kept@remote.example\"]"
        )),
        "{ours:#?}"
    );
    let bounces = |mx: &testkit::fake_mx::FakeMx| relayed(mx).iter().filter(|m| notice(m)).count();
    assert_eq!(bounces(&both.theirs_mx), bounces(&both.ours_mx));
    let (theirs, ours) = (
        milter_lines(&both.pf.log_text()),
        milter_lines(&both.m.log_text()),
    );
    assert_eq!(theirs, ours, "postfix-rs log:\n{}", both.m.log_text());
    assert!(
        ours.iter().any(|l| l.starts_with(
            ": milter-reject: END-OF-MESSAGE from localhost[127.0.0.1]: 5.7.1 content refused by the milter;"
        )),
        "{ours:#?}"
    );
    let conf = "milter configuration error: can't reject recipient in non-smtpd(8) submission";
    assert!(both.pf.log_text().contains(conf) && both.m.log_text().contains(conf));
    assert_eq!(both.m.queue_files("hold").len(), 1);
    // tempfail and the refused recipient wait in maildrop/.
    assert_eq!(both.m.queue_files("maildrop").len(), 2);
}

/// rspamd from Debian in milter mode (its proxy worker scanning by
/// itself), with a configuration of the test's own in `dir`: no Redis, no
/// network checks, DNS sent to a loopback port nobody answers on, and the
/// extended headers (X-Spamd-Result) on every message. `None` when rspamd
/// is not installed.
fn rspamd(dir: &Path) -> Option<(Group, u16)> {
    if !Path::new("/usr/bin/rspamd").exists() {
        eprintln!("skipped: rspamd is not installed (scripts/setup installs it)");
        return None;
    }
    let port = testkit::free_port();
    let local = dir.join("local.d");
    for d in ["local.d", "run", "db", "log"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(
        dir.join("rspamd.conf"),
        format!(
            ".include \"$CONFDIR/common.conf\"\n\
             options {{\n  pidfile = \"$RUNDIR/rspamd.pid\";\n  .include \"$CONFDIR/options.inc\"\n  \
             .include(try=true; priority=1,duplicate=merge) \"$LOCAL_CONFDIR/local.d/options.inc\"\n}}\n\
             logging {{\n  type = \"file\";\n  filename = \"$LOGDIR/rspamd.log\";\n  level = \"info\";\n}}\n\
             worker \"rspamd_proxy\" {{\n  bind_socket = \"127.0.0.1:{port}\";\n  milter = yes;\n  \
             timeout = 120s;\n  upstream \"local\" {{\n    default = yes;\n    self_scan = yes;\n  }}\n  \
             count = 1;\n  spam_header = \"X-Spam\";\n  reject_message = \"Spam message rejected\";\n}}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        local.join("options.inc"),
        "dns {\n  nameserver = [\"127.0.0.1:1\"];\n  timeout = 1s;\n  retransmits = 1;\n}\n",
    )
    .unwrap();
    std::fs::write(
        local.join("milter_headers.conf"),
        "extended_spam_headers = true;\nskip_local = false;\nskip_authenticated = false;\n",
    )
    .unwrap();
    // Nothing that would look beyond this machine.
    for module in [
        "fuzzy_check",
        "rbl",
        "surbl",
        "phishing",
        "dkim_signing",
        "arc",
        "emails",
    ] {
        std::fs::write(local.join(format!("{module}.conf")), "enabled = false;\n").unwrap();
    }
    let var = |name: &str, sub: &str| format!("--var={name}={}", dir.join(sub).display());
    let mut cmd = std::process::Command::new("/usr/bin/rspamd");
    cmd.arg("-f")
        .arg("-c")
        .arg(dir.join("rspamd.conf"))
        .arg(var("LOCAL_CONFDIR", ""))
        .arg(var("RUNDIR", "run"))
        .arg(var("DBDIR", "db"))
        .arg(var("LOGDIR", "log"));
    if nix::unistd::Uid::effective().is_root() {
        cmd.args(["-i", "-u", "root", "-g", "root"]);
    }
    let child = std::os::unix::process::CommandExt::process_group(&mut cmd, 0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("rspamd");
    let running = Group(child);
    assert!(
        wait_for(Duration::from_secs(60), || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "rspamd did not start: {}",
        std::fs::read_to_string(dir.join("log/rspamd.log")).unwrap_or_default()
    );
    Some((running, port))
}

/// rspamd as a milter, side by side with Debian's Postfix: the GTUBE test
/// pattern is rejected with rspamd's reply, clean mail goes on with the
/// headers rspamd adds.
#[test]
fn rspamd_rejects_gtube_and_marks_clean_mail_as_with_debian_postfix() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_rspamd, port)) = rspamd(dir.path()) else {
        return;
    };
    let Some(both) = side_by_side(
        &format!(
            "mynetworks = 127.0.0.1/32\nsmtpd_peername_lookup = no\n\
             relayhost = [127.0.0.1]:SINK\nmyhostname = mail.ywnds.com\n\
             smtpd_milters = inet:127.0.0.1:{port}\nmilter_default_action = tempfail\n"
        ),
        &[],
    ) else {
        return;
    };
    let session = |subject: &str, body: &str| {
        vec![
            "EHLO client.example".to_owned(),
            "MAIL FROM:<s@client.example>".to_owned(),
            "RCPT TO:<u@remote.example>".to_owned(),
            "DATA".to_owned(),
            format!("From: s@client.example\r\nTo: u@remote.example\r\nSubject: {subject}\r\n\r\n{body}\r\n"),
            "QUIT".to_owned(),
        ]
    };
    let gtube = session(
        "test",
        "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X",
    );
    let clean = session("hello", "An ordinary message.");
    let ours_gtube = crate::sidebyside::converse_from(
        "127.0.0.1",
        both.m.port,
        &gtube.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(
        ours_gtube[5] == "554 5.7.1 Gtube pattern",
        "{ours_gtube:?}\n{}",
        both.m.log_text()
    );
    for s in [&gtube, &clean] {
        let steps: Vec<&str> = s.iter().map(String::as_str).collect();
        same_replies(&both, "127.0.0.1", &steps);
    }
    for mx in [&both.theirs_mx, &both.ours_mx] {
        assert!(wait_for(Duration::from_secs(30), || mx.accepted().len() == 1));
        let got = String::from_utf8_lossy(&mx.accepted()[0].data).into_owned();
        assert!(
            got.contains("\r\nX-Spamd-Result: default: False ["),
            "{got}"
        );
        assert!(got.contains("Subject: hello\r\n"), "{got}");
    }
    assert!(
        both.m.log_text().contains(
            ": milter-reject: END-OF-MESSAGE from unknown[127.0.0.1]: 5.7.1 Gtube pattern;"
        ),
        "{}",
        both.m.log_text()
    );
}
