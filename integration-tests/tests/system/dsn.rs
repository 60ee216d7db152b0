//! RFC 3461 delivery status notifications end to end: the client's RET,
//! ENVID, NOTIFY and ORCPT go on to a next hop that announces DSN (which
//! then owns the success notice); a next hop without DSN gets none of them
//! and the sender is told the mail was relayed; a local delivery is
//! reported as delivered; NOTIFY=NEVER keeps a failure quiet. The success
//! notice is Postfix's `Successful Mail Delivery Report`, with the
//! headers only.

use std::time::Duration;

use testkit::fake_mx::{FakeMx, Script};
use testkit::{Instance, Smtp};

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
        "\n<b@nodsn.example>: delivery via 127.0.0.1[127.0.0.1]:{}: 250 2.0.0 Ok: queued as FAKE\n",
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
    assert_eq!(
        m.queue_files("deferred").len() + m.queue_files("active").len(),
        1
    );
}
