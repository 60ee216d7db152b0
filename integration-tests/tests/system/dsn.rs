//! RFC 3461 delivery status notifications end to end: the client's RET,
//! ENVID, NOTIFY and ORCPT go on to a next hop that announces DSN (which
//! then owns the success notice); a next hop without DSN gets none of them
//! and the sender is told the mail was relayed; a local delivery is
//! reported as delivered; NOTIFY=NEVER keeps a failure quiet. The success
//! notice is Postfix's `Successful Mail Delivery Report`, with the
//! headers only.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use testkit::fake_mx::{FakeMx, Script};
use testkit::{Instance, Smtp};

use crate::sidebyside::{same_replies, side_by_side_with};

#[test]
fn dsn_requests_travel_on_and_successes_are_reported() {
    let with_dsn = FakeMx::start(
        "127.0.0.1",
        Script {
            extensions: vec!["PIPELINING".into(), "DSN".into()],
            ..Script::default()
        },
    );
    let without = FakeMx::start("127.0.0.1", Script::default());
    let m = Instance::mail(&format!(
        "local_recipient_maps =\n\
         transport_maps = inline:{{withdsn.example=smtp:[127.0.0.1]:{}, nodsn.example=smtp:[127.0.0.1]:{}}}\n",
        with_dsn.port, without.port
    ));
    m.add_smtp();
    m.start();
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    assert_eq!(
        c.cmd("MAIL FROM:<hadoop@ywnds.com> RET=HDRS ENVID=env+2B1"),
        "250 2.1.0 Ok"
    );
    for rcpt in [
        "<a@withdsn.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;orig+2Ba@withdsn.example",
        "<b@nodsn.example> NOTIFY=SUCCESS",
        "<openstack@ywnds.com> NOTIFY=SUCCESS",
        "<c@nodsn.example>",
        "<ghost@ywnds.com> NOTIFY=NEVER",
    ] {
        assert_eq!(c.cmd(&format!("RCPT TO:{rcpt}")), "250 2.1.5 Ok", "{rcpt}");
    }
    assert_eq!(c.cmd("DATA").split(' ').next(), Some("354"));
    c.send(b"Subject: dsn\r\nMessage-ID: <dsn-test@client.example>\r\n\r\nbody\r\n.\r\n");
    let queued = c.reply();
    assert!(queued.starts_with("250 2.0.0 Ok: queued as "), "{queued}");
    let id = queued.rsplit(' ').next().unwrap().to_owned();

    // The next hop that does DSN hears everything; the other nothing.
    let notice = m.wait_maildir("hadoop", 1);
    let said = with_dsn.commands();
    assert!(
        said.iter()
            .any(|l| l.starts_with("MAIL FROM:<hadoop@ywnds.com>")
                && l.ends_with(" ENVID=env+2B1 RET=HDRS")),
        "{said:?}"
    );
    assert!(
        said.contains(
            &"RCPT TO:<a@withdsn.example> ORCPT=rfc822;orig+2Ba@withdsn.example NOTIFY=SUCCESS,FAILURE"
                .to_owned()
        ),
        "{said:?}"
    );
    let said = without.commands();
    assert!(
        said.contains(&"RCPT TO:<b@nodsn.example>".to_owned())
            && !said
                .iter()
                .any(|l| l.contains("ENVID") || l.contains("NOTIFY")),
        "{said:?}"
    );

    // One success notice: relayed (b), delivered (openstack); a is the
    // next hop's business, c asked for nothing, ghost's failure is quiet.
    let text = String::from_utf8_lossy(&notice[0]).into_owned();
    let relayed = format!(
        "\n<b@nodsn.example>: delivery via 127.0.0.1[127.0.0.1]:{}: 250 2.0.0 Ok:\n    queued as FAKE\n",
        without.port
    );
    for want in [
        "Subject: Successful Mail Delivery Report\n",
        "Your message was successfully delivered to the destination(s)\n",
        "Original-Envelope-Id: env+1\n",
        "\n<openstack@ywnds.com>: delivery via local: delivered to maildir\n",
        relayed.as_str(),
        "Remote-MTA: dns; 127.0.0.1\nDiagnostic-Code: smtp; 250 2.0.0 Ok: queued as FAKE\n",
        "Diagnostic-Code: X-Postfix; delivery via local: delivered to maildir\n",
        "\nFinal-Recipient: rfc822; b@nodsn.example\nOriginal-Recipient: rfc822;b@nodsn.example\nAction: relayed\nStatus: 2.0.0\n",
        "\nFinal-Recipient: rfc822; openstack@ywnds.com\nOriginal-Recipient: rfc822;openstack@ywnds.com\nAction: delivered\nStatus: 2.0.0\n",
        "Content-Description: Message Headers\nContent-Type: text/rfc822-headers\n",
        "Message-ID: <dsn-test@client.example>\n",
    ] {
        assert!(text.contains(want), "{want}\n---\n{text}");
    }
    for unwanted in ["a@withdsn.example", "c@nodsn.example", "ghost", "\nbody\n"] {
        assert!(!text.contains(unwanted), "{unwanted}\n---\n{text}");
    }
    assert!(m.wait_log(
        &format!("{id}: sender delivery status notification: "),
        Duration::from_secs(10)
    ));
    let ghost = m.log_line(&format!("{id}: to=<ghost@ywnds.com>"));
    assert!(ghost.contains("status=bounced"), "{ghost}");
    // No non-delivery notice follows for ghost.
    assert_eq!(m.exactly("hadoop", 1).len(), 1);
    assert!(!m.log_text().contains("non-delivery notification"));
}

/// `delay_warning_time`: once a message has waited that long, its sender
/// gets Postfix's `Delayed Mail (still being retried)` notice, once, for
/// the recipients that did not opt out (NOTIFY without DELAY), with the
/// headers only and `Will-Retry-Until`; the message stays queued.
#[test]
fn a_delayed_message_warns_its_sender_once() {
    let mx = FakeMx::start(
        "127.0.0.1",
        Script {
            rcpt_default: "451 4.3.0 try again later".into(),
            ..Script::default()
        },
    );
    let m = Instance::mail(&format!(
        "delay_warning_time = 1s\nminimal_backoff_time = 1s\nmaximal_backoff_time = 1s\n\
         queue_run_delay = 1s\n\
         transport_maps = inline:{{slow.example=smtp:[127.0.0.1]:{}}}\n",
        mx.port
    ));
    m.add_smtp();
    m.start();
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    assert_eq!(c.cmd("MAIL FROM:<hadoop@ywnds.com>"), "250 2.1.0 Ok");
    for rcpt in ["<a@slow.example>", "<b@slow.example> NOTIFY=FAILURE"] {
        assert_eq!(c.cmd(&format!("RCPT TO:{rcpt}")), "250 2.1.5 Ok", "{rcpt}");
    }
    assert_eq!(c.cmd("DATA").split(' ').next(), Some("354"));
    c.send(b"Subject: slow\r\n\r\nbody\r\n.\r\n");
    let queued = c.reply();
    let id = queued.rsplit(' ').next().unwrap().to_owned();

    let warning = m.wait_maildir("hadoop", 1);
    let text = String::from_utf8_lossy(&warning[0]).into_owned();
    for want in [
        "Subject: Delayed Mail (still being retried)\n",
        "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n",
        "Your message could not be delivered for more than 0 hour(s).\nIt will be retried until it is 5 day(s) old.\n",
        "\nFinal-Recipient: rfc822; a@slow.example\nOriginal-Recipient: rfc822;a@slow.example\nAction: delayed\nStatus: 4.3.0\n",
        "Will-Retry-Until: ",
        "Content-Description: Undelivered Message Headers\nContent-Type: text/rfc822-headers\n",
    ] {
        assert!(text.contains(want), "{want}\n---\n{text}");
    }
    assert!(
        !text.contains("b@slow.example") && !text.contains("\nbody\n"),
        "{text}"
    );
    assert!(m.wait_log(
        &format!("{id}: sender delay notification: "),
        Duration::from_secs(10)
    ));
    // Still queued, retried, and never warned about again.
    let tries = || {
        m.log_text()
            .matches(&format!("{id}: to=<a@slow.example>"))
            .count()
    };
    assert!(
        testkit::wait_for(Duration::from_secs(15), || tries() >= 3),
        "{}",
        m.log_text()
    );
    assert_eq!(m.exactly("hadoop", 1).len(), 1);
    assert_eq!(m.queued_in(&["deferred", "active"]), 1);
}

/// A delivery status notification as Python's `email` module reads it,
/// in a form two systems' notices can be compared in: the notice's own
/// headers, each part's type, the text part with its recipient
/// paragraphs sorted, the per-message DSN fields and the sorted
/// per-recipient field groups, the returned headers. Values that differ
/// by nature are replaced: queue IDs, dates, the next hop's `port`.
fn report(data: &[u8], port: u16) -> String {
    const SCRIPT: &str = r#"
import email, email.policy, re, sys
raw = re.sub(rb'(?m)^\.\.', b'.', sys.stdin.buffer.read())
msg = email.message_from_bytes(raw, policy=email.policy.compat32)
out = [f'{h}: {msg.get(h)}' for h in
       ('From', 'To', 'Subject', 'References', 'In-Reply-To',
        'Auto-Submitted', 'MIME-Version', 'Content-Transfer-Encoding')]
out.append(f'type: {msg.get_content_type()} '
           f'report-type={msg.get_param("report-type")}')
for part in msg.get_payload():
    out.append(f'== {part.get("Content-Type")} '
               f'({part.get("Content-Description")}) '
               f'cte={part.get("Content-Transfer-Encoding")}')
    if part.get_content_type() == 'message/delivery-status':
        first, *rcpts = part.get_payload()
        out += [f'{k}: {v}' for k, v in first.items()
                if k not in ('Arrival-Date', 'X-Postfix-Queue-ID')]
        out += sorted('\n'.join(f'{k}: {v}' for k, v in r.items())
                      for r in rcpts)
    elif part.get_content_type() == 'text/plain':
        paras = [p.strip('\n') for p in
                 part.get_payload().replace('\r\n', '\n').split('\n\n')]
        out += [p for p in paras if not p.startswith('<')]
        out += sorted(p for p in paras if p.startswith('<'))
    else:
        text = part.get_payload()
        if isinstance(text, list):
            text = text[0].as_string()
        heads = email.message_from_string(text.replace('\r\n', '\n'))
        out += [f'{k}: {v}' for k, v in heads.items()
                if k not in ('Received', 'Date')]
print('\n'.join(out))
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python3 could not read the notice");
    String::from_utf8(out.stdout)
        .unwrap()
        .replace(&format!(":{port}"), ":PORT")
}

/// The notices each system sent to `sender@client.example`, by subject.
fn notices(mx: &FakeMx, port: u16, n: usize) -> Vec<String> {
    let sent = || -> Vec<String> {
        mx.accepted()
            .iter()
            .filter(|a| a.recipients == ["sender@client.example"])
            .map(|a| report(&a.data, port))
            .collect()
    };
    assert!(
        testkit::wait_for(Duration::from_secs(30), || sent().len() >= n),
        "{:?}",
        sent()
    );
    let mut v = sent();
    v.sort();
    v
}

/// The same message and DSN requests given to Debian's Postfix and to
/// postfix-rs: the success notice (a mailbox delivery, a local alias and a
/// virtual alias each reported once as `expanded`, a list with an owner
/// as `delivered`, a relay to a next hop
/// without DSN) and the failure notice (headers only, ENVID, ORCPT) read
/// the same, field by field, through Python's `email` module.
#[test]
fn notices_read_as_debian_postfixs() {
    let Some(both) = side_by_side_with(
        "mynetworks = 127.0.0.1/32\nsmtpd_peername_lookup = no\nlocal_recipient_maps =\n\
         myhostname = mail.ywnds.com\nmydomain = ywnds.com\nmydestination = ywnds.com\n\
         alias_maps = texthash:TABLES/aliases\nvirtual_alias_domains = valias.example\n\
         virtual_alias_maps = texthash:TABLES/virtual\nmail_spool_directory = TABLES/spool\n\
         relayhost = [127.0.0.1]:SINK\n",
        // The system's users, mailboxes in the spool directory, as Debian's.
        "local_passwd_file =\nhome_mailbox =\n",
        &[
            (
                "aliases",
                "team nobody, x@remote.example\nstaff nobody\nowner-staff boss@remote.example\n",
            ),
            (
                "virtual",
                "list@valias.example y@remote.example, nobody@ywnds.com\n",
            ),
        ],
    ) else {
        return;
    };
    let spool = both.tables.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o1777)).unwrap();
    same_replies(
        &both,
        "127.0.0.1",
        &[
            "EHLO client.example",
            "MAIL FROM:<sender@client.example> RET=HDRS ENVID=side+2Bby+2Bside",
            "RCPT TO:<nobody@ywnds.com> NOTIFY=SUCCESS ORCPT=rfc822;first+2Bx@ywnds.com",
            "RCPT TO:<team@ywnds.com> NOTIFY=SUCCESS,FAILURE",
            "RCPT TO:<staff@ywnds.com> NOTIFY=SUCCESS",
            "RCPT TO:<list@valias.example> NOTIFY=SUCCESS",
            "RCPT TO:<far@remote.example> NOTIFY=SUCCESS",
            "RCPT TO:<ghost@ywnds.com> NOTIFY=FAILURE",
            "DATA",
            "Subject: dsn side by side\r\nMessage-ID: <side@client.example>\r\n\r\nbody\r\n",
            "QUIT",
        ],
    );
    let theirs = notices(&both.theirs_mx, both.theirs_mx.port, 2);
    let ours = notices(&both.ours_mx, both.ours_mx.port, 2);
    for (a, b) in theirs.iter().zip(&ours) {
        assert_eq!(
            a,
            b,
            "Postfix:\n{a}\n\npostfix-rs:\n{b}\n\npostfix-rs log:\n{}\nPostfix log:\n{}",
            both.m.log_text(),
            both.pf.log_text()
        );
    }
    let success = ours
        .iter()
        .find(|n| n.contains("Subject: Successful"))
        .expect("a success notice");
    for want in [
        "Subject: Successful Mail Delivery Report",
        "Original-Envelope-Id: side+by+side",
        "Final-Recipient: rfc822; team@ywnds.com\nOriginal-Recipient: rfc822;team@ywnds.com\nAction: expanded",
        "Final-Recipient: rfc822; list@valias.example\nOriginal-Recipient: rfc822;list@valias.example\nAction: expanded",
        "Original-Recipient: rfc822;first+x@ywnds.com\nAction: delivered",
        "Final-Recipient: rfc822; staff@ywnds.com\nOriginal-Recipient: rfc822;staff@ywnds.com\nAction: delivered",
        "Action: relayed",
    ] {
        assert!(success.contains(want), "{want}\n---\n{success}");
    }
    assert!(!success.contains("y@remote.example"), "{success}");
}

/// A relay to Debian's Postfix passes the DSN requests on: its success
/// notice carries our client's ENVID and ORCPT, and postfix-rs, whose next
/// hop took the request over, sends none of its own.
#[test]
fn debian_postfix_as_next_hop_reports_what_our_client_asked() {
    if !(nix::unistd::Uid::effective().is_root()
        && std::path::Path::new("/usr/sbin/postfix").exists())
    {
        eprintln!("skipped: Debian's Postfix needs root");
        return;
    }
    let sink = FakeMx::start("127.0.0.1", Script::default());
    let spool = tempfile::Builder::new()
        .prefix("pfx-spool-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(spool.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let pf = testkit::debian::Postfix::new(
        None,
        &format!(
            "mydestination = next.example\nlocal_recipient_maps =\nmail_spool_directory = {}\n\
             relayhost = [127.0.0.1]:{}\n",
            spool.path().display(),
            sink.port
        ),
    );
    pf.start();
    let m = Instance::mail(&format!(
        "transport_maps = inline:{{next.example=smtp:[127.0.0.1]:{}}}\n",
        pf.port
    ));
    m.add_smtp();
    m.start();
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    assert_eq!(
        c.cmd("MAIL FROM:<sender@client.example> RET=HDRS ENVID=trip+2B1"),
        "250 2.1.0 Ok"
    );
    assert_eq!(
        c.cmd("RCPT TO:<nobody@next.example> NOTIFY=SUCCESS ORCPT=rfc822;boss+2Bx@ywnds.com"),
        "250 2.1.5 Ok"
    );
    assert_eq!(c.cmd("DATA").split(' ').next(), Some("354"));
    c.send(b"Subject: onward\r\n\r\nbody\r\n.\r\n");
    assert!(c.reply().starts_with("250 "));
    let notice = &notices(&sink, pf.port, 1)[0];
    for want in [
        "Subject: Successful Mail Delivery Report",
        "Original-Envelope-Id: trip+1",
        "Final-Recipient: rfc822; nobody@next.example\nOriginal-Recipient: rfc822;boss+x@ywnds.com\nAction: delivered",
        "Subject: onward",
    ] {
        assert!(notice.contains(want), "{want}\n---\n{notice}");
    }
    let line = m.log_line("to=<nobody@next.example>");
    assert!(line.contains("status=sent"), "{line}");
    assert!(!m.log_text().contains("delivery status notification"));
}
