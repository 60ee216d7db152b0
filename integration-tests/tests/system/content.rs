//! Postfix's built-in content inspection side by side with Debian's
//! Postfix: header_checks, mime_header_checks and nested_header_checks
//! (by default header_checks' table), body_checks; the same messages, the
//! same replies, the same action log lines, and what reaches the next hop
//! byte for byte (IGNORE, REPLACE, PREPEND), or does not (DISCARD, HOLD).

use std::time::Duration;

use testkit::wait_for;

use crate::sidebyside::{converse_from, side_by_side, SideBySide};

const MAIN_CF: &str = "mynetworks = 127.0.0.1/32\nsmtpd_peername_lookup = no\n\
     myhostname = mail.ywnds.com\nmydomain = ywnds.com\nrelayhost = [127.0.0.1]:SINK\n\
     header_checks = regexp:TABLES/header\nbody_checks = regexp:TABLES/body\n";

const TABLES: &[(&str, &str)] = &[
    (
        "header",
        "/^Subject: .*viagra/ REJECT Spam subject\n\
         /^X-Drop:/ IGNORE\n\
         /^Subject: replace me/ REPLACE Subject: replaced\n\
         /^X-Tag: (.*)/ PREPEND X-Tagged: $1\n\
         /^Subject: hold/ HOLD\n\
         /^Subject: discard/ DISCARD\n\
         /^Subject: warn/ WARN warned\n\
         /^Subject: later/ REJECT 4.7.0 Try later\n\
         /^Content-Type: application\\/x-evil/ REJECT Evil attachment\n\
         /^Subject: redirect/ REDIRECT other@remote.example\n\
         /^Subject: copy/ BCC copy@remote.example\n\
         /^Subject: filtered/ FILTER discard:filtered away\n\
         /^Subject: bad filter/ FILTER nocolon\n",
    ),
    (
        "body",
        "/^secret body/ REJECT\n/^drop line/ IGNORE\n/^old line/ REPLACE new line\n\
         /^tag line/ PREPEND added line\n",
    ),
];

/// One message per entry: (name, content).
const MESSAGES: &[(&str, &str)] = &[
    ("plain", "Subject: plain\r\n\r\nbody\r\n"),
    ("viagra", "Subject: cheap viagra\r\n\r\nbody\r\n"),
    (
        "edits",
        "Subject: replace me\r\nX-Drop: gone\r\nX-Tag: seven\r\n\r\nkeep\r\ndrop line\r\nold line\r\ntag line\r\n",
    ),
    ("body-reject", "Subject: body\r\n\r\nfine\r\nsecret body here\r\n"),
    ("later", "Subject: later please\r\n\r\nbody\r\n"),
    ("warn", "Subject: warn me\r\n\r\nbody\r\n"),
    (
        "mime",
        "Subject: parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\nX-Drop: in a part\r\n\r\npart body\r\n\
         --b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\nX-Drop: nested\r\n\r\ninner body\r\n--b--\r\n",
    ),
    (
        "evil",
        "Subject: attach\r\nContent-Type: multipart/mixed; boundary=\"z\"\r\n\r\n\
         --z\r\nContent-Type: application/x-evil\r\n\r\nxx\r\n--z--\r\n",
    ),
    (
        "nested-viagra",
        "Subject: fwd\r\nContent-Type: multipart/mixed; boundary=\"n\"\r\n\r\n\
         --n\r\nContent-Type: message/rfc822\r\n\r\nSubject: viagra inside\r\n\r\nx\r\n--n--\r\n",
    ),
    ("discard", "Subject: discard this\r\n\r\nbody\r\n"),
    ("redirect", "Subject: redirect me\r\n\r\nbody\r\n"),
    ("copy", "Subject: copy me\r\n\r\nbody\r\n"),
    ("filtered", "Subject: filtered\r\n\r\nbody\r\n"),
    ("bad-filter", "Subject: bad filter\r\n\r\nbody\r\n"),
    ("hold", "Subject: hold this\r\n\r\nbody\r\n"),
];

fn session(content: &str) -> Vec<String> {
    vec![
        "EHLO client.example".into(),
        "MAIL FROM:<sender@client.example>".into(),
        "RCPT TO:<u@remote.example>".into(),
        "DATA".into(),
        content.into(),
        "QUIT".into(),
    ]
}

/// The content inspection lines of a log, without queue IDs and ports.
fn actions(log: &str) -> Vec<String> {
    let mut v: Vec<String> = log
        .lines()
        .filter(|l| l.contains("/cleanup["))
        .filter_map(|l| l.split_once("]: ").map(|(_, rest)| rest))
        .filter_map(|l| l.split_once(": ").map(|(_, rest)| rest.to_owned()))
        .filter(|l| !l.starts_with("message-id="))
        .map(|l| l.replace(|c: char| c.is_ascii_digit(), "#"))
        .collect();
    v.sort();
    v
}

/// What the next hop got: each message's header names and body, the
/// Received: headers left out (they name queue IDs and dates).
fn delivered(both: &SideBySide, theirs: bool) -> Vec<String> {
    let mx = if theirs {
        &both.theirs_mx
    } else {
        &both.ours_mx
    };
    let mut v: Vec<String> = mx
        .accepted()
        .iter()
        .map(|a| {
            let text = String::from_utf8_lossy(&a.data).replace("\r\n", "\n");
            let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
            let head: Vec<&str> = head
                .split('\n')
                .filter(|l| {
                    !["Received:", "\t", " ", "Message-Id:", "Date:", "From:"]
                        .iter()
                        .any(|p| l.starts_with(p))
                })
                .collect();
            let mut rcpts = a.recipients.clone();
            rcpts.sort();
            format!("{rcpts:?}\n{}\n\n{body}", head.join("\n"))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn header_and_body_checks_act_as_debian_postfix() {
    let Some(both) = side_by_side(MAIN_CF, TABLES) else {
        return;
    };
    for (name, content) in MESSAGES {
        let steps = session(content);
        let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
        let theirs = converse_from("127.0.0.1", both.pf.port, &steps);
        let ours = converse_from("127.0.0.1", both.m.port, &steps);
        assert_eq!(
            theirs[4],
            ours[4],
            "{name}\nPostfix:    {theirs:?}\npostfix-rs: {ours:?}\npostfix-rs log:\n{}",
            both.m.log_text()
        );
    }
    // plain, edits, warn, mime, redirect, copy, bad-filter: delivered;
    // the others refused, held, discarded or filtered away.
    assert!(wait_for(Duration::from_secs(30), || {
        both.theirs_mx.accepted().len() >= 7 && both.ours_mx.accepted().len() >= 7
    }));
    std::thread::sleep(Duration::from_millis(500));
    let (theirs, ours) = (delivered(&both, true), delivered(&both, false));
    assert_eq!(
        theirs, ours,
        "Postfix:\n{theirs:#?}\npostfix-rs:\n{ours:#?}"
    );
    let (theirs, ours) = (actions(&both.pf.log_text()), actions(&both.m.log_text()));
    assert_eq!(
        theirs,
        ours,
        "Postfix:\n{theirs:#?}\npostfix-rs:\n{ours:#?}\npostfix-rs log:\n{}",
        both.m.log_text()
    );
    // Not two systems doing nothing alike: the tables were applied.
    assert!(
        ours.iter().any(
            |l| l.starts_with("reject: header Subject: cheap viagra from ")
                && l.ends_with(": #.#.# Spam subject")
        ),
        "{ours:#?}"
    );
    let ours = delivered(&both, false);
    assert!(ours.iter().any(|m| m.ends_with("Subject: replaced\nX-Tagged: seven\nX-Tag: seven\n\nkeep\nnew line\nadded line\ntag line\n")));
    // REDIRECT: to the one address instead; BCC: a copy beside.
    assert!(
        ours.iter()
            .any(|m| m.starts_with("[\"other@remote.example\"]\nSubject: redirect me")),
        "{ours:#?}"
    );
    assert!(
        ours.iter()
            .any(|m| m
                .starts_with("[\"copy@remote.example\", \"u@remote.example\"]\nSubject: copy me")),
        "{ours:#?}"
    );
    // FILTER: qmgr hands the message to that transport (discard here).
    let log = both.m.log_text();
    assert!(
        log.contains("relay=none") && log.contains("status=sent (filtered away)"),
        "{log}"
    );
    assert!(log.contains("bad FILTER command nocolon in"), "{log}");
    assert_eq!(both.m.queue_files("hold").len(), 1);
}

/// A local submission the checks refuse goes back to its sender, as
/// Postfix's cleanup does for pickup: the recipient is logged as bounced
/// with the table's text, the sender gets the non-delivery notice, and
/// nothing is left in maildrop/ to be tried again.
#[test]
fn a_refused_local_submission_is_returned_to_its_sender() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("header"), TABLES[0].1).unwrap();
    let m = testkit::Instance::mail(&format!(
        "header_checks = regexp:{}/header\n",
        dir.path().display()
    ));
    m.start();
    let mut child = std::process::Command::new(testkit::bin("sendmail"))
        .args([
            "-C",
            &m.etc.display().to_string(),
            "-f",
            "hadoop@ywnds.com",
            "openstack",
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        b"Subject: cheap viagra\n\nbody\n",
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    let line = m.log_line("to=<openstack@ywnds.com>, ");
    assert!(
        line.contains("relay=none, ") && line.contains("dsn=5.7.1, status=bounced (Spam subject)"),
        "{line}"
    );
    assert!(
        m.log_text().contains("reject: header Subject: cheap viagra from local; from=<hadoop@ywnds.com> to=<openstack@ywnds.com>: 5.7.1 Spam subject"),
        "{}",
        m.log_text()
    );
    let notice = String::from_utf8_lossy(&m.wait_maildir("hadoop", 1)[0]).into_owned();
    assert!(
        notice.contains("Subject: Undelivered Mail Returned to Sender")
            && notice.contains("Status: 5.7.1")
            && notice.contains("Subject: cheap viagra"),
        "{notice}"
    );
    assert!(m.maildir("openstack").is_empty());
    assert!(wait_for(Duration::from_secs(5), || m
        .queue_files("maildrop")
        .is_empty()
        && m.queue_files("hold").is_empty()));
    // A 4.x.x refusal is not returned: the submission waits in maildrop/
    // for pickup to try again, as Postfix's cleanup defers it.
    let mut child = std::process::Command::new(testkit::bin("sendmail"))
        .args(["-C", &m.etc.display().to_string(), "openstack"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        b"Subject: later\n\nbody\n",
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(m.wait_log(": 4.7.0 Try later", Duration::from_secs(10)));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(m.queue_files("maildrop").len(), 1, "{}", m.log_text());
    assert!(!m.log_text().contains("(Try later)"), "{}", m.log_text());
    assert_eq!(m.maildir("hadoop").len(), 1);
}

/// `detect_8bit_encoding_header`: a client that does not say BODY=8BITMIME
/// sends a message whose primary headers, or the headers of a part deep
/// inside it, say `Content-Transfer-Encoding: 8bit`; both systems relay it
/// on with `BODY=8BITMIME`, and a 7-bit one without.
#[test]
fn an_8bit_part_makes_the_relayed_message_8bitmime_as_in_postfix() {
    let Some(both) = crate::sidebyside::side_by_side(
        "mynetworks = 127.0.0.1/32\nsmtpd_peername_lookup = no\n\
         relayhost = [127.0.0.1]:SINK\nmyhostname = mail.ywnds.com\n",
        &[],
    ) else {
        return;
    };
    let nested = "Subject: nested\r\nMIME-Version: 1.0\r\n\
        Content-Type: multipart/mixed; boundary=\"o\"\r\n\r\n--o\r\n\
        Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\
        Content-Type: multipart/alternative; boundary=\"i\"\r\n\r\n--i\r\n\
        Content-Type: text/plain; charset=utf-8\r\n\
        Content-Transfer-Encoding: 8bit\r\n\r\ncaf\u{e9}\r\n--i--\r\n--o--\r\n";
    let messages = [
        (
            "top",
            "Subject: top\r\nContent-Transfer-Encoding: BINARY\r\n\r\nx\r\n",
        ),
        ("nested", nested),
        (
            "seven",
            "Subject: seven\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
             Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=E9\r\n--b--\r\n",
        ),
    ];
    for (name, text) in messages {
        let rcpt = format!("RCPT TO:<{name}@remote.example>");
        crate::sidebyside::same_replies(
            &both,
            "127.0.0.1",
            &[
                "EHLO client.example",
                "MAIL FROM:<s@client.example>",
                &rcpt,
                "DATA",
                text,
                "QUIT",
            ],
        );
    }
    // Each MAIL FROM with the RCPT TO after it, as the next hop saw them.
    let params = |mx: &testkit::fake_mx::FakeMx| {
        assert!(wait_for(Duration::from_secs(20), || mx.accepted().len() == 3));
        let commands = mx.commands();
        let mut v: Vec<String> = commands
            .windows(2)
            .filter(|w| w[0].starts_with("MAIL FROM:"))
            .map(|w| {
                let body = w[0].contains("BODY=8BITMIME");
                let rcpt = w[1].split(['<', '>']).nth(1).unwrap_or("").to_owned();
                format!("{rcpt} 8bitmime={body}")
            })
            .collect();
        v.sort();
        v
    };
    let (theirs, ours) = (params(&both.theirs_mx), params(&both.ours_mx));
    assert_eq!(theirs, ours, "postfix-rs log:\n{}", both.m.log_text());
    assert_eq!(
        ours,
        [
            "nested@remote.example 8bitmime=true",
            "seven@remote.example 8bitmime=false",
            "top@remote.example 8bitmime=true"
        ]
    );
}
