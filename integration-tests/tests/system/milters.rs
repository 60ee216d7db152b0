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

/// The milter lines of a log, queue IDs and ports left out.
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
    v
}

#[test]
fn a_milter_changes_refuses_and_holds_as_with_debian_postfix() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_milter, port, macros)) = test_milter(dir.path()) else {
        return;
    };
    let Some(both) = side_by_side(
        &format!(
            "mynetworks = 127.0.0.1/32\nsmtpd_peername_lookup = no\n\
             relayhost = [127.0.0.1]:SINK\nmyhostname = mail.ywnds.com\n\
             smtpd_milters = inet:127.0.0.1:{port}\n"
        ),
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
    // The macros Postfix gives by default reach the milter.
    let given = std::fs::read_to_string(&macros).unwrap();
    assert!(given.contains("j=mail.ywnds.com"), "{given}");
    assert!(given.contains("{daemon_name}=mail.ywnds.com"), "{given}");
    assert!(
        given
            .lines()
            .any(|l| l.starts_with("i=") && l.len() > 4 && l != "i=None"),
        "{given}"
    );
}
