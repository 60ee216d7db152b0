//! After-queue content filtering as Postfix's FILTER_README sets it up:
//! `content_filter = scan:[127.0.0.1]:PORT` sends every message through an
//! smtp transport with `smtp_send_xforward_command = yes` to a second
//! smtpd that takes it back in with `-o content_filter=` and
//! `-o receive_override_options=...`, trusting the first hop's XFORWARD
//! (`smtpd_authorized_xforward_hosts`). Side by side with Debian's Postfix
//! on the same main.cf and master.cf lines: the re-injected message names
//! the original client and queue ID in the log, header_checks run once,
//! and the next hop gets the same message.

use std::time::Duration;

use testkit::fake_mx::{FakeMx, Script};
use testkit::{wait_for, Smtp};

/// main.cf for both systems; `SINK` and `REINJECT` are filled in.
const MAIN_CF: &str = "mynetworks = 127.0.0.0/8\nsmtpd_peername_lookup = no\n\
     myhostname = mail.ywnds.com\nmydomain = ywnds.com\nrelayhost = [127.0.0.1]:SINK\n\
     content_filter = scan:[127.0.0.1]:REINJECT\n\
     header_checks = regexp:TABLES/header\n";

/// The filter's transport and the re-injection smtpd, as FILTER_README's.
const MASTER_CF: &str = "scan unix - - n - 10 smtp -o smtp_send_xforward_command=yes\n\
     127.0.0.1:REINJECT inet n - n - 10 smtpd -o content_filter= \
     -o receive_override_options=no_unknown_recipient_checks,no_header_body_checks,no_milters \
     -o smtpd_authorized_xforward_hosts=127.0.0.0/8\n";

/// The log lines of the message's way, queue IDs named by order of
/// appearance (`QA`, `QB`), digits as `#`, delays left out.
fn journey(log: &str) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for line in log.lines() {
        let Some((_, rest)) = line.split_once("]: ") else {
            continue;
        };
        let keep = rest.contains(": client=")
            || (rest.contains(": to=<") && rest.contains("status="))
            || rest.contains(": prepend: header");
        if !keep {
            continue;
        }
        let mut text = rest.to_owned();
        // Queue IDs: the first word, and the one in `queued as ...`.
        let words: Vec<String> = rest
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| w.len() >= 8 && w.chars().all(|c| c.is_ascii_alphanumeric()))
            .filter(|w| w.chars().any(|c| c.is_ascii_digit()) && w.to_uppercase() == **w)
            .map(str::to_owned)
            .collect();
        for w in words {
            if !ids.contains(&w) {
                ids.push(w.clone());
            }
            let n = ids.iter().position(|i| *i == w).unwrap_or(0);
            text = text.replace(&w, &format!("Q{}", char::from(b'A' + n as u8)));
        }
        // Times and ports of the conversation.
        let text: Vec<&str> = text
            .split(", ")
            .filter(|p| !p.starts_with("delay") && !p.starts_with("dsn=x"))
            .collect();
        let mut shown = String::new();
        for c in text.join(", ").chars() {
            let c = if c.is_ascii_digit() { '#' } else { c };
            if !(c == '#' && shown.ends_with('#')) {
                shown.push(c);
            }
        }
        out.push(shown);
    }
    out
}

#[test]
fn a_content_filter_round_trip_keeps_the_original_client_as_in_debian_postfix() {
    if !(nix::unistd::Uid::effective().is_root()
        && std::path::Path::new("/usr/sbin/postfix").exists())
    {
        eprintln!("skipped: the side-by-side run with Debian's Postfix needs root");
        return;
    }
    let tables = tempfile::tempdir().unwrap();
    std::fs::write(
        tables.path().join("header"),
        "/^Subject: (.*)/ PREPEND X-Checked: $1\n",
    )
    .unwrap();
    let cf = |sink: u16, reinject: u16| {
        MAIN_CF
            .replace("SINK", &sink.to_string())
            .replace("REINJECT", &reinject.to_string())
            .replace("TABLES", &tables.path().display().to_string())
    };
    let master = |reinject: u16| MASTER_CF.replace("REINJECT", &reinject.to_string());

    let theirs_mx = FakeMx::start("127.0.0.1", Script::default());
    let theirs_port = testkit::free_port();
    let pf = testkit::debian::Postfix::new(None, &cf(theirs_mx.port, theirs_port));
    let stock = std::fs::read_to_string(pf.etc.join("master.cf")).unwrap();
    std::fs::write(pf.etc.join("master.cf"), stock + &master(theirs_port)).unwrap();
    pf.start();

    let ours_mx = FakeMx::start("127.0.0.1", Script::default());
    let ours_port = testkit::free_port();
    let m = testkit::Instance::mail(&cf(ours_mx.port, ours_port));
    m.add_smtp();
    let stock = std::fs::read_to_string(m.etc.join("master.cf")).unwrap();
    m.write_master_cf(&(stock + &master(ours_port)));
    m.start();

    // The original client: 127.0.0.2, a name nobody knows.
    for port in [pf.port, m.port] {
        let (mut c, _) = Smtp::connect_from("127.0.0.2", port);
        c.cmd("EHLO client.example");
        c.queued(
            "s@client.example",
            &["u@remote.example"],
            b"Subject: through the filter\r\n\r\nbody\r\n",
        );
        c.cmd("QUIT");
    }
    for mx in [&theirs_mx, &ours_mx] {
        assert!(
            wait_for(Duration::from_secs(30), || mx.accepted().len() == 1),
            "postfix-rs log:\n{}",
            m.log_text()
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let (theirs, ours) = (journey(&pf.log_text()), journey(&m.log_text()));
    assert_eq!(
        theirs,
        ours,
        "Postfix:\n{theirs:#?}\npostfix-rs:\n{ours:#?}\npostfix-rs log:\n{}",
        m.log_text()
    );
    // The re-injected message names the first hop's queue ID and client.
    assert!(
        ours.iter()
            .any(|l| l
                == "QB: client=unknown[#.#.#.#], orig_queue_id=QA, orig_client=unknown[#.#.#.#]"),
        "{ours:#?}"
    );
    assert!(
        m.log_text().contains("orig_client=unknown[127.0.0.2]"),
        "{}",
        m.log_text()
    );
    // header_checks ran on the way in, not again on the way back.
    let got = String::from_utf8_lossy(&ours_mx.accepted()[0].data).into_owned();
    assert_eq!(
        got.matches("X-Checked: through the filter").count(),
        1,
        "{got}"
    );
    let theirs_got = String::from_utf8_lossy(&theirs_mx.accepted()[0].data).into_owned();
    assert_eq!(
        theirs_got.matches("X-Checked: through the filter").count(),
        1,
        "{theirs_got}"
    );
}

/// XFORWARD's replies side by side with Debian's Postfix: refused outside
/// `smtpd_authorized_xforward_hosts` and inside a transaction, each kind
/// of bad attribute refused with Postfix's text, good ones taken.
#[test]
fn xforward_is_answered_as_debian_postfix_answers_it() {
    let Some(both) = crate::sidebyside::side_by_side(
        "mynetworks = 127.0.0.0/8\nsmtpd_peername_lookup = no\nrelayhost = [127.0.0.1]:SINK\n\
         smtpd_authorized_xforward_hosts = 127.0.0.1\n",
        &[],
    ) else {
        return;
    };
    let authorized: &[&str] = &[
        "EHLO filter.example",
        "XFORWARD",
        "XFORWARD NAME",
        "XFORWARD NAME=-bad-",
        "XFORWARD ADDR=300.1.1.1",
        "XFORWARD PORT=99999999",
        "XFORWARD SOURCE=SOMEWHERE",
        "XFORWARD COLOR=blue",
        "XFORWARD NAME=mail.example.com ADDR=192.0.2.1 PORT=25",
        "XFORWARD PROTO=ESMTP HELO=mail.example.com IDENT=4ABCDEF SOURCE=REMOTE",
        "XFORWARD NAME=[UNAVAILABLE] ADDR=192.0.2.9",
        "MAIL FROM:<s@client.example>",
        "XFORWARD NAME=late.example.com",
        "RSET",
        "QUIT",
    ];
    crate::sidebyside::same_replies(&both, "127.0.0.1", authorized);
    let outsider: &[&str] = &["EHLO client.example", "XFORWARD NAME=x.example", "QUIT"];
    crate::sidebyside::same_replies(&both, "127.0.0.2", outsider);
    // The EHLO keyword only for the hosts that may use it.
    let ehlo = |source: &str| {
        let (mut c, _) = Smtp::connect_from(source, both.m.port);
        c.cmd("EHLO x.example")
    };
    assert!(ehlo("127.0.0.1").contains("XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT"));
    assert!(!ehlo("127.0.0.2").contains("XFORWARD"));
}

/// REDIRECT, BCC and FILTER from `smtpd_end_of_data_restrictions`, met
/// after the envelope went to cleanup, side by side with Debian's
/// Postfix: the message goes to the redirect address, a copy goes out,
/// the filter takes it (discard: here).
#[test]
fn end_of_data_redirect_bcc_and_filter_act_as_in_debian_postfix() {
    let Some(both) = crate::sidebyside::side_by_side(
        "mynetworks = 127.0.0.0/8\nsmtpd_peername_lookup = no\nrelayhost = [127.0.0.1]:SINK\n\
         smtpd_data_restrictions = check_sender_access texthash:TABLES/data\n\
         smtpd_end_of_data_restrictions = check_sender_access texthash:TABLES/late\n",
        &[
            (
                "late",
                "redirect@client.example REDIRECT other@remote.example\n\
                 copy@client.example BCC copy@remote.example\n\
                 filter@client.example FILTER discard:filtered late\n",
            ),
            // At DATA, when cleanup already has the envelope.
            ("data", "data@client.example BCC datacopy@remote.example\n"),
        ],
    ) else {
        return;
    };
    for sender in ["redirect", "copy", "filter", "data"] {
        let mail = format!("MAIL FROM:<{sender}@client.example>");
        let body = format!("Subject: {sender}\r\n\r\nbody\r\n");
        let session = [
            "EHLO client.example",
            &mail,
            "RCPT TO:<u@remote.example>",
            "DATA",
            &body,
            "QUIT",
        ];
        crate::sidebyside::same_replies(&both, "127.0.0.1", &session);
    }
    let relayed = |mx: &FakeMx| {
        let mut v: Vec<String> = mx
            .accepted()
            .iter()
            .map(|a| {
                let mut r = a.recipients.clone();
                r.sort();
                format!("{}: {r:?}", a.sender.split(' ').next().unwrap_or(""))
            })
            .collect();
        v.sort();
        v
    };
    for mx in [&both.theirs_mx, &both.ours_mx] {
        assert!(wait_for(Duration::from_secs(20), || mx.accepted().len() == 3));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(relayed(&both.theirs_mx), relayed(&both.ours_mx));
    assert_eq!(
        relayed(&both.ours_mx),
        [
            "copy@client.example: [\"copy@remote.example\", \"u@remote.example\"]",
            "data@client.example: [\"datacopy@remote.example\", \"u@remote.example\"]",
            "redirect@client.example: [\"other@remote.example\"]"
        ]
    );
    assert!(
        both.m.log_text().contains("status=sent (filtered late)"),
        "{}",
        both.m.log_text()
    );
}
