//! CHUNKING (RFC 3030) side by side with Debian's Postfix: the same BDAT
//! sessions (chunks of 1 byte to 1 MB, `BDAT 0 LAST`, a chunk over the
//! size limit, BDAT out of order), every reply compared, and each message
//! as the next hop receives it compared byte for byte with Postfix's and
//! with what the client sent.

use std::path::Path;
use std::time::Duration;

use testkit::fake_mx::{FakeMx, Script};
use testkit::{wait_for, Instance, Smtp};

const MAIN_CF: &str =
    "mynetworks = 127.0.0.1/32\nlocal_recipient_maps =\nsmtpd_peername_lookup = no\n\
    message_size_limit = 2000000\nrelayhost = [127.0.0.1]:SINK\n";

/// A message of about 1.5 MB whose lines end in CRLF or a bare LF, some
/// starting with a dot (BDAT has no dot-stuffing), one with a lone CR, one
/// longer than Postfix's 2048-byte records, and the last without a line end.
fn message() -> Vec<u8> {
    let mut m = b"Subject: chunks\r\nX-Test: bdat\r\n\r\n".to_vec();
    m.extend_from_slice(b".a line with a dot\r\n..two dots\nbare LF above\r\ncarriage\rreturn\r\n");
    m.extend_from_slice(&[b'x'; 5000]);
    m.extend_from_slice(b"\r\n");
    for i in 0..40_000 {
        m.extend_from_slice(format!("line {i:06} of the body, 8-bit \u{e9}t\u{e9}\r\n").as_bytes());
    }
    m.extend_from_slice(b"no line end");
    m
}

/// What the next hop must get for `message()`: every line ending in CRLF,
/// a lone CR made a space (`cleanup_replace_stray_cr_lf`), the last line
/// ended.
fn expected(m: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.len() + 64);
    let mut i = 0;
    while i < m.len() {
        match m[i] {
            b'\r' if m.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
                continue;
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            b'\r' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One BDAT session; the replies, queue IDs cut off.
fn session(port: u16, steps: &[(&str, &[u8])]) -> Vec<String> {
    let (mut c, _) = Smtp::connect(port);
    let mut out = vec![];
    for (cmd, data) in steps {
        c.send(format!("{cmd}\r\n").as_bytes());
        c.send(data);
        let r = c.reply();
        out.push(match r.find(" queued as ") {
            Some(i) => r[..i + 11].to_owned(),
            None => r,
        });
    }
    out
}

/// The message as the next hop got it, from the first header after the
/// Received: header the receiving system added.
fn delivered(data: &[u8]) -> Vec<u8> {
    let text = data;
    // Skip "Received: ..." and its continuation lines.
    let mut i = 0;
    loop {
        let end = text[i..].windows(2).position(|w| w == b"\r\n").unwrap() + i + 2;
        let next_is_cont = matches!(text.get(end), Some(b' ' | b'\t'));
        i = end;
        if !next_is_cont {
            break;
        }
    }
    // Without the Message-Id: and Date: headers each system made itself.
    let mut out = Vec::with_capacity(text.len());
    let mut in_headers = true;
    for line in text[i..].split_inclusive(|&b| b == b'\n') {
        if in_headers && line == b"\r\n" {
            in_headers = false;
        }
        if in_headers && (line.starts_with(b"Message-Id:") || line.starts_with(b"Date:")) {
            continue;
        }
        out.extend_from_slice(line);
    }
    out
}

#[test]
fn bdat_sessions_answer_and_deliver_as_debian_postfix() {
    if !(nix::unistd::Uid::effective().is_root() && Path::new("/usr/sbin/postfix").exists()) {
        eprintln!("skipped: the side-by-side run with Debian's Postfix needs root");
        return;
    }
    let ours_mx = FakeMx::start("127.0.0.1", Script::default());
    let theirs_mx = FakeMx::start("127.0.0.1", Script::default());
    let cf = |port: u16| MAIN_CF.replace("SINK", &port.to_string());
    let m = Instance::mail(&cf(ours_mx.port));
    m.add_smtp();
    m.start();
    let pf = testkit::debian::Postfix::new(None, &cf(theirs_mx.port));
    pf.start();

    let msg = message();
    // Chunks: 1 byte at a time for the headers, then 1 MB, then the rest.
    let mut steps: Vec<(String, Vec<u8>)> = vec![
        ("EHLO client.example".into(), vec![]),
        ("MAIL FROM:<sender@client.example>".into(), vec![]),
        ("RCPT TO:<big@remote.example>".into(), vec![]),
    ];
    let mut at = 0;
    while at < 40 {
        steps.push(("BDAT 1".into(), msg[at..=at].to_vec()));
        at += 1;
    }
    let mb = 1 << 20;
    steps.push((format!("BDAT {mb}"), msg[at..at + mb].to_vec()));
    at += mb;
    steps.push((format!("BDAT {} LAST", msg.len() - at), msg[at..].to_vec()));
    let big: Vec<(&str, &[u8])> = steps
        .iter()
        .map(|(c, d)| (c.as_str(), d.as_slice()))
        .collect();
    let sessions: Vec<Vec<(&str, &[u8])>> = vec![
        big,
        vec![
            ("EHLO client.example", b""),
            ("MAIL FROM:<sender@client.example>", b""),
            ("RCPT TO:<empty@remote.example>", b""),
            ("BDAT 0 LAST", b""),
        ],
        vec![
            ("EHLO client.example", b""),
            ("BDAT 3", b"abc"),
            ("BDAT 2 LAST", b"xy"),
            ("MAIL FROM:<sender@client.example>", b""),
            ("RCPT TO:<toobig@remote.example>", b""),
            ("BDAT 2000001", &[b'z'; 2_000_001]),
            ("BDAT 5 LAST", b"after"),
            ("MAIL FROM:<sender@client.example>", b""),
            ("RCPT TO:<order@remote.example>", b""),
            ("BDAT 7", b"Subj: x"),
            ("DATA", b""),
            ("RCPT TO:<late@remote.example>", b""),
            ("NOOP", b""),
            ("BDAT 2 LAST", b"\r\n"),
            ("BDAT 1 FIRST", b""),
        ],
    ];
    for steps in &sessions {
        let theirs = session(pf.port, steps);
        let ours = session(m.port, steps);
        for (((cmd, _), a), b) in steps.iter().zip(&theirs).zip(&ours) {
            if cmd.starts_with("EHLO") {
                continue;
            }
            assert_eq!(
                a,
                b,
                "{cmd}\nPostfix:    {a}\npostfix-rs: {b}\npostfix-rs log:\n{}",
                m.log_text()
            );
        }
    }
    // big@, empty@, order@: delivered by each to its next hop.
    assert!(wait_for(Duration::from_secs(60), || {
        theirs_mx.accepted().len() >= 3 && ours_mx.accepted().len() >= 3
    }));
    let by_rcpt = |mx: &FakeMx, rcpt: &str| {
        let a = mx
            .accepted()
            .into_iter()
            .find(|a| a.recipients == [rcpt])
            .unwrap_or_else(|| panic!("{rcpt} not delivered"));
        delivered(&a.data)
    };
    for rcpt in [
        "big@remote.example",
        "empty@remote.example",
        "order@remote.example",
    ] {
        let (theirs, ours) = (by_rcpt(&theirs_mx, rcpt), by_rcpt(&ours_mx, rcpt));
        let at = theirs
            .iter()
            .zip(&ours)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        let show = |v: &[u8]| {
            String::from_utf8_lossy(&v[at.saturating_sub(80)..(at + 120).min(v.len())]).into_owned()
        };
        assert!(
            theirs == ours,
            "{rcpt}: Postfix delivered {} bytes, postfix-rs {}; first difference at {:?}\nPostfix: {:?}\npostfix-rs: {:?}",
            theirs.len(),
            ours.len(),
            theirs.iter().zip(&ours).position(|(a, b)| a != b),
            show(&theirs),
            show(&ours)
        );
    }
    // And it is what the client sent, line ends made CRLF. The SMTP client
    // dot-stuffs lines that start with a dot, and breaks lines longer than
    // smtp_line_length_limit with CRLF SPACE (no line of the message starts
    // with a space, so taking those out gives the lines back).
    let got = by_rcpt(&ours_mx, "big@remote.example");
    let want = expected(&msg);
    let body_at = |m: &[u8]| m.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let got_body = String::from_utf8_lossy(&got[body_at(&got)..])
        .replace("\r\n ", "")
        .replace("\r\n.", "\r\n");
    let want_body = String::from_utf8_lossy(&want[body_at(&want)..]).into_owned();
    // The body starts at a line start: its first dot was stuffed too.
    let got_body = got_body.strip_prefix('.').unwrap_or(&got_body);
    let at = got_body
        .bytes()
        .zip(want_body.bytes())
        .position(|(a, b)| a != b);
    assert!(
        got_body == want_body,
        "body differs at {at:?} ({} vs {} bytes): {:?}",
        got_body.len(),
        want_body.len(),
        at.map(|i| &got_body[i.saturating_sub(40)..(i + 40).min(got_body.len())])
    );
    pf.stop();
}
