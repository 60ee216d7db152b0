//! Address classes and virtual aliasing side by side with Debian's
//! Postfix: the same main.cf and tables (virtual alias and mailbox
//! domains, catch-all and domain-rewriting aliases, extensions,
//! `relocated_maps`, `relay_recipient_maps`), the same SMTP sessions, every
//! reply compared; then the envelopes each system hands on to its own fake
//! next hop (recipients and original recipients), and the log lines that
//! say where each recipient went.

use std::time::Duration;

use testkit::fake_mx::FakeMx;
use testkit::{wait_for, Smtp};

use crate::sidebyside::{same_replies, side_by_side, SideBySide};

const TABLES: &[(&str, &str)] = &[
    (
        "virtual",
        "info@alias.example sales@alias.example, bob@remote.example\n\
         sales@alias.example alice@mbox.example\n\
         tag@alias.example t@remote.example\n\
         self@alias.example self@alias.example, copy@remote.example\n\
         loop1@alias.example loop2@alias.example\n\
         loop2@alias.example loop1@alias.example\n\
         @rewrite.example @remote.example\n\
         fwd@mbox.example carol@mbox.example\n\
         desk@alias.example \"Help, Desk\" <desk@remote.example> w1@remote.example w2@remote.example\n",
    ),
    ("vmailbox", "alice@mbox.example x\ncarol@mbox.example x\n"),
    ("relocated", "gone@mbox.example new@remote.example\n"),
    ("relay_recipients", "ok@relay.example x\n"),
];

/// The same for both, with `SINK` the port of each one's fake next hop.
const MAIN_CF: &str =
    "mynetworks = 127.0.0.1/32\nlocal_recipient_maps =\nsmtpd_peername_lookup = no\n\
    recipient_delimiter = +\n\
    virtual_alias_domains = alias.example, rewrite.example\n\
    virtual_alias_maps = texthash:TABLES/virtual\n\
    virtual_mailbox_domains = mbox.example\n\
    virtual_mailbox_maps = texthash:TABLES/vmailbox\n\
    virtual_transport = smtp:[127.0.0.1]:SINK\n\
    relocated_maps = texthash:TABLES/relocated\n\
    relay_domains = relay.example\n\
    relay_recipient_maps = texthash:TABLES/relay_recipients\n\
    relay_transport = smtp:[127.0.0.1]:SINK\n\
    relayhost = [127.0.0.1]:SINK\n";

/// One session: commands, `DATA` followed by its message.
const SESSIONS: &[&[&str]] = &[
    &[
        "EHLO client.example",
        "MAIL FROM:<sender@client.example>",
        "RCPT TO:<info@alias.example>",
        "RCPT TO:<unknown@alias.example>",
        "RCPT TO:<alice@mbox.example>",
        "RCPT TO:<dave@mbox.example>",
        "RCPT TO:<gone@mbox.example>",
        "RCPT TO:<ok@relay.example>",
        "RCPT TO:<no@relay.example>",
        "RCPT TO:<tag+foo@alias.example>",
        "RCPT TO:<anyone@rewrite.example>",
        "RCPT TO:<self@alias.example>",
        "RCPT TO:<fwd@mbox.example>",
        "RCPT TO:<desk@alias.example>",
        "RCPT TO:<someone@elsewhere.example>",
        "DATA",
        "Subject: aliases\r\n\r\nbody\r\n",
        "QUIT",
    ],
    &[
        "EHLO client.example",
        "MAIL FROM:<sender@client.example>",
        "RCPT TO:<loop1@alias.example>",
        "DATA",
        "Subject: loop\r\n\r\nbody\r\n",
        "QUIT",
    ],
    &[
        "EHLO client.example",
        "MAIL FROM:<gone@mbox.example>",
        "RCPT TO:<alice@mbox.example>",
        "RSET",
        "MAIL FROM:<sender@client.example>",
        "RCPT TO:<postmaster@alias.example>",
        "QUIT",
    ],
];

/// `(to, orig_to, relay or status text)` of every delivery log line, sorted.
fn deliveries(log: &str) -> Vec<String> {
    let mut out: Vec<String> = log
        .lines()
        // Not the bounce notice for self@alias.example, which may come later.
        .filter(|l| l.contains(" to=<") && l.contains("status=") && !l.contains(" to=<sender@"))
        .filter_map(|l| {
            let to = l.split(" to=<").nth(1)?.split('>').next()?;
            let orig = l
                .split("orig_to=<")
                .nth(1)
                .and_then(|s| s.split('>').next())
                .unwrap_or("");
            let status = l.split("status=").nth(1)?;
            let status = status.split(' ').next()?;
            Some(format!("to={to} orig_to={orig} status={status}"))
        })
        .collect();
    out.sort();
    out
}

/// Relay control from outside `mynetworks`: `relay_domains` takes its
/// subdomains (`parent_domain_matches_subdomains`, where `.domain` matches
/// nothing), and a recipient whose local part still routes elsewhere
/// (`user%victim@relay.example`, `"u@victim"@relay.example`,
/// `victim!u@relay.example`) is never a relay domain's, not even when an
/// access table says OK. Then `local_recipient_maps` asked as every
/// address table is: whole address, without extension, local part alone.
#[test]
fn relay_control_and_local_recipients_as_in_debian_postfix() {
    let Some(both) = side_by_side(
        "mynetworks = 127.0.0.1/32\nsmtpd_peername_lookup = no\n\
         mydestination = ywnds.com\nrecipient_delimiter = +\n\
         local_recipient_maps = texthash:TABLES/locals\n\
         relay_domains = relay.example, .dot.example\n\
         relay_transport = smtp:[127.0.0.1]:SINK\n\
         smtpd_relay_restrictions = check_recipient_access texthash:TABLES/access, \
         reject_unauth_destination\n",
        &[
            ("access", "relay.example OK\nopen.example OK\n"),
            ("locals", "full@ywnds.com x\nbare x\ntagged+x x\n"),
        ],
    ) else {
        return;
    };
    same_replies(
        &both,
        "127.0.0.9",
        &[
            "EHLO client.example",
            "MAIL FROM:<sender@client.example>",
            "RCPT TO:<u@relay.example>",
            "RCPT TO:<u@mx.relay.example>",
            "RCPT TO:<u@a.dot.example>",
            "RCPT TO:<u@dot.example>",
            "RCPT TO:<u@open.example>",
            "RCPT TO:<u%victim.example@relay.example>",
            "RCPT TO:<\"u@victim.example\"@relay.example>",
            "RCPT TO:<victim.example!u@relay.example>",
            "RCPT TO:<u%victim.example@mx.relay.example>",
            "RCPT TO:<@relay.example:u@victim.example>",
            "RCPT TO:<u@victim.example>",
            "QUIT",
        ],
    );
    same_replies(
        &both,
        "127.0.0.9",
        &[
            "EHLO client.example",
            "MAIL FROM:<sender@client.example>",
            "RCPT TO:<full@ywnds.com>",
            "RCPT TO:<full+y@ywnds.com>",
            "RCPT TO:<bare@ywnds.com>",
            "RCPT TO:<Bare+z@ywnds.com>",
            "RCPT TO:<tagged+x@ywnds.com>",
            "RCPT TO:<tagged+w@ywnds.com>",
            "RCPT TO:<nobody@ywnds.com>",
            "RCPT TO:<postmaster@ywnds.com>",
            "QUIT",
        ],
    );
}

#[test]
fn virtual_alias_and_mailbox_domains_resolve_as_debian_postfix_does() {
    let Some(both) = side_by_side(MAIN_CF, TABLES) else {
        return;
    };
    for session in SESSIONS {
        same_replies(&both, "127.0.0.1", session);
    }
    let SideBySide {
        m,
        pf,
        ours_mx,
        theirs_mx,
        tables: _tables,
    } = both;
    // The message went to the same addresses, with the same originals.
    // Thirteen recipients of the first message: all delivered or bounced.
    let settled = |log: &str| deliveries(log).len() >= 13;
    wait_for(Duration::from_secs(30), || {
        settled(&pf.log_text()) && settled(&m.log_text())
    });
    let (theirs, ours) = (deliveries(&pf.log_text()), deliveries(&m.log_text()));
    assert_eq!(
        theirs,
        ours,
        "Postfix:\n{theirs:#?}\npostfix-rs:\n{ours:#?}\npostfix-rs log:\n{}",
        m.log_text()
    );
    // The message's own envelopes, not the bounce notice for
    // self@alias.example, which may come later on one side.
    let recipients = |mx: &FakeMx| {
        let mut r: Vec<String> = mx
            .accepted()
            .iter()
            .filter(|a| a.recipients != ["sender@client.example"])
            .flat_map(|a| a.recipients.clone())
            .collect();
        r.sort();
        r
    };
    assert_eq!(recipients(&theirs_mx), recipients(&ours_mx));
    for want in [
        "alice@mbox.example",
        "bob@remote.example",
        "t+foo@remote.example",
        "anyone@remote.example",
        "copy@remote.example",
        "carol@mbox.example",
        "ok@relay.example",
        "someone@elsewhere.example",
    ] {
        assert!(
            recipients(&ours_mx).iter().any(|r| r == want),
            "{want} not in {:?}",
            recipients(&ours_mx)
        );
    }
    // The loop was refused with Postfix's warning.
    assert!(
        m.log_text()
            .contains("unreasonable virtual_alias_maps map nesting for loop1@alias.example -- message not accepted, try again later"),
        "{}",
        m.log_text()
    );
    pf.stop();
}

const REWRITE_TABLES: &[(&str, &str)] = &[
    (
        "canonical",
        "joe@ywnds.com joe.public@ywnds.com\n@legacy.example @remote2.example\n",
    ),
    ("sender_canonical", "hadoop@ywnds.com h.adoop@ywnds.com\n"),
    (
        "recipient_canonical",
        "oldname@remote.example newname@remote.example\n",
    ),
    ("sender_bcc", "@ywnds.com archive@remote.example\n"),
    (
        "recipient_bcc",
        "boss@remote.example secretary@remote.example\n",
    ),
];

const REWRITE_CF: &str =
    "mynetworks = 127.0.0.1/32\nlocal_recipient_maps =\nsmtpd_peername_lookup = no\n\
    myorigin = ywnds.com\nrecipient_delimiter = +\n\
    canonical_maps = texthash:TABLES/canonical\n\
    sender_canonical_maps = texthash:TABLES/sender_canonical\n\
    recipient_canonical_maps = texthash:TABLES/recipient_canonical\n\
    masquerade_domains = !keep.ywnds.com, ywnds.com\n\
    masquerade_exceptions = root\n\
    sender_bcc_maps = texthash:TABLES/sender_bcc\n\
    recipient_bcc_maps = texthash:TABLES/recipient_bcc\n\
    always_bcc = audit@remote.example\n\
    relayhost = [127.0.0.1]:SINK\n";

/// `(MAIL FROM, RCPT TOs, message)`: local mail (the client is on one of
/// the instance's addresses), so headers are rewritten too.
const REWRITE_MESSAGES: &[(&str, &[&str], &str)] = &[
    (
        "hadoop@ywnds.com",
        &["oldname@remote.example", "boss@remote.example", "x+tag@legacy.example"],
        "From: hadoop\r\nSender: joe@host.ywnds.com\r\n\
         To: oldname@remote.example, Team <x@legacy.example>\r\n\
         Cc: root@host.ywnds.com, boss@remote.example,\r\n\tu@a.keep.ywnds.com\r\n\
         Reply-To: joe\r\nMail-Followup-To: hadoop, oldname@remote.example\r\n\
         Bcc: hidden@remote.example\r\nSubject: canonical\r\n\r\nbody\r\n",
    ),
    (
        "someone@host.ywnds.com",
        &["root@remote.example"],
        "From: Someone <someone@host.ywnds.com>\r\nTo: root@remote.example\r\nSubject: masq\r\n\r\nbody\r\n",
    ),
];

/// The address headers of a message as the next hop got it, in order.
fn address_headers(data: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(data).replace("\r\n", "\n");
    let head = text.split("\n\n").next().unwrap_or("").to_owned();
    let mut out: Vec<String> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.push('\n');
                last.push_str(line);
            }
        } else {
            out.push(line.to_owned());
        }
    }
    out.retain(|h| {
        let name = h.split(':').next().unwrap_or("").to_ascii_lowercase();
        [
            "from",
            "sender",
            "to",
            "cc",
            "bcc",
            "reply-to",
            "mail-followup-to",
        ]
        .contains(&name.as_str())
    });
    out
}

#[test]
fn canonical_masquerading_and_bcc_rewrite_as_debian_postfix_does() {
    let Some(SideBySide {
        m,
        pf,
        ours_mx,
        theirs_mx,
        tables: _tables,
    }) = side_by_side(REWRITE_CF, REWRITE_TABLES)
    else {
        return;
    };
    for (from, to, data) in REWRITE_MESSAGES {
        for port in [pf.port, m.port] {
            let (mut c, _) = Smtp::connect(port);
            c.cmd("EHLO client.example");
            let r = c.mail(from, to, data.as_bytes());
            assert!(r.starts_with("250 "), "{r}");
            c.cmd("QUIT");
        }
    }
    let n = REWRITE_MESSAGES.len();
    assert!(wait_for(Duration::from_secs(30), || {
        theirs_mx.accepted().len() >= n && ours_mx.accepted().len() >= n
    }));
    let summary = |mx: &FakeMx| {
        let mut v: Vec<(String, Vec<String>, Vec<String>)> = mx
            .accepted()
            .into_iter()
            .map(|a| {
                let mut r = a.recipients.clone();
                r.sort();
                (a.sender, r, address_headers(&a.data))
            })
            .collect();
        v.sort();
        v
    };
    let (theirs, ours) = (summary(&theirs_mx), summary(&ours_mx));
    assert_eq!(
        theirs, ours,
        "Postfix:\n{theirs:#?}\npostfix-rs:\n{ours:#?}"
    );
    // The rewriting happened (the comparison alone would pass if neither did).
    let first = ours.iter().find(|(s, _, _)| s == "h.adoop@ywnds.com");
    let (_, rcpts, headers) = first.expect("sender_canonical_maps rewrote the sender");
    for want in [
        "newname@remote.example",
        "boss@remote.example",
        "x+tag@remote2.example",
        "archive@remote.example",
        "secretary@remote.example",
        "audit@remote.example",
    ] {
        assert!(rcpts.iter().any(|r| r == want), "{want}: {rcpts:?}");
    }
    assert!(
        headers.iter().any(|h| h == "From: h.adoop@ywnds.com"),
        "{headers:?}"
    );
    assert!(
        ours.iter().any(|(s, _, _)| s == "someone@ywnds.com"),
        "{ours:?}"
    );
    pf.stop();
}

#[test]
fn smtp_generic_maps_rewrite_outgoing_mail_as_debian_postfix_does() {
    let Some(SideBySide {
        m,
        pf,
        ours_mx,
        theirs_mx,
        tables: _tables,
    }) = side_by_side(
        "mynetworks = 127.0.0.1/32\nlocal_recipient_maps =\nsmtpd_peername_lookup = no\n\
         myorigin = ywnds.com\nrelayhost = [127.0.0.1]:SINK\n\
         smtp_generic_maps = texthash:TABLES/generic\n",
        &[(
            "generic",
            "hadoop@ywnds.com hadoop.public@isp.example\n@ywnds.com @isp.example\n\
             friend@remote.example friend@new-remote.example\n",
        )],
    )
    else {
        return;
    };
    let data = "From: Hadoop <hadoop@ywnds.com>\r\nTo: friend@remote.example, other@ywnds.com\r\n\
                Cc: nobody@elsewhere.example\r\nSubject: generic\r\n\r\n\
                body with hadoop@ywnds.com untouched\r\n";
    for port in [pf.port, m.port] {
        let (mut c, _) = Smtp::connect(port);
        c.cmd("EHLO client.example");
        let r = c.mail(
            "hadoop@ywnds.com",
            &["friend@remote.example", "x@elsewhere.example"],
            data.as_bytes(),
        );
        assert!(r.starts_with("250 "), "{r}");
        c.cmd("QUIT");
    }
    assert!(wait_for(Duration::from_secs(30), || {
        !theirs_mx.accepted().is_empty() && !ours_mx.accepted().is_empty()
    }));
    let summary = |mx: &FakeMx| {
        let a = mx.accepted().remove(0);
        let mut r = a.recipients.clone();
        r.sort();
        let text = String::from_utf8_lossy(&a.data).into_owned();
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
        (a.sender, r, address_headers(&a.data), body)
    };
    let (theirs, ours) = (summary(&theirs_mx), summary(&ours_mx));
    assert_eq!(
        theirs, ours,
        "Postfix:\n{theirs:#?}\npostfix-rs:\n{ours:#?}"
    );
    assert_eq!(ours.0, "hadoop.public@isp.example");
    assert!(
        ours.1.contains(&"friend@new-remote.example".to_owned()),
        "{ours:?}"
    );
    assert!(ours.3.contains("hadoop@ywnds.com untouched"), "{ours:?}");
    pf.stop();
}
