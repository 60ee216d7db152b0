//! The administrator's queue commands on a running instance: postqueue
//! (-p, -j, -f, -i, -s), postsuper (-d, -h, -H, -r), postcat, and local
//! submission with sendmail (-t, -f, -F, -bs) through postdrop and pickup.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use testkit::{bin, wait_for, Instance, MailInstance, Smtp};

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Runs a command of the instance with stdin, as `sudo -u` would with `setpriv` args first.
fn run_as(prefix: &[&str], program: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut cmd = if prefix.is_empty() {
        Command::new(bin(program))
    } else {
        let mut c = Command::new(prefix[0]);
        c.args(&prefix[1..]).arg(bin(program));
        c
    };
    let mut child = cmd
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn etc(m: &MailInstance) -> String {
    m.etc.display().to_string()
}

/// Queue IDs in `postqueue -j` output, with their queue names.
fn listed(m: &MailInstance) -> Vec<(String, String)> {
    let out = m.run("postqueue", &["-j"]);
    text(&out)
        .0
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["queue_id"].as_str().unwrap().to_owned(),
                v["queue_name"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Sends one message over SMTP from inside mynetworks; returns its queue ID.
fn send(m: &MailInstance, to: &str, subject: &str) -> String {
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    let r = c.mail(
        "hadoop@ywnds.com",
        &[to],
        format!("Subject: {subject}\r\n\r\nbody\r\n").as_bytes(),
    );
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
    c.cmd("QUIT");
    r.rsplit(' ').next().unwrap().to_owned()
}

/// Two messages to example.test, which waits (this instance has no smtp
/// transport), once both are in deferred/: their queue IDs.
fn two_deferred(m: &MailInstance) -> (String, String) {
    let a = send(m, "a@example.test", "one");
    let b = send(m, "b@example.test", "two");
    assert!(
        wait_for(Duration::from_secs(20), || m.queue_files("deferred").len()
            == 2),
        "{}",
        m.log_text()
    );
    (a, b)
}

#[test]
fn postqueue_lists_and_postsuper_holds_releases_and_deletes() {
    // Mail for other domains waits: there is no smtp transport in this instance.
    let m = Instance::mail("minimal_backoff_time = 3600s\nmaximal_backoff_time = 3600s\n");
    m.start();
    assert_eq!(
        text(&m.run("postqueue", &["-p"])).0,
        "Mail queue is empty\n"
    );
    let (a, b) = two_deferred(&m);

    let (report, _) = text(&m.run("postqueue", &["-p"]));
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(
        lines[0],
        "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------"
    );
    for (id, rcpt) in [(&a, "a@example.test"), (&b, "b@example.test")] {
        let i = lines
            .iter()
            .position(|l| l.starts_with(id.as_str()))
            .expect(&report);
        let l = lines[i];
        // %-11s %7ld %20.20s %s: the sender starts after the time column.
        assert_eq!(&l[41..], "hadoop@ywnds.com", "{report}");
        assert!(l[12..19].trim().parse::<u64>().is_ok(), "{report}");
        let reason = "(mail transport unavailable)";
        assert_eq!(
            lines[i + 1],
            format!("{}{reason}", " ".repeat(78 - reason.len()))
        );
        assert_eq!(lines[i + 2], format!("{}{rcpt}", " ".repeat(41)));
    }
    assert_eq!(*lines.last().unwrap(), "-- 0 Kbytes in 2 Requests.");
    assert_eq!(lines[lines.len() - 2], "");

    let json = text(&m.run("postqueue", &["-j"])).0;
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(first["queue_name"], "deferred");
    assert_eq!(first["sender"], "hadoop@ywnds.com");
    assert_eq!(first["forced_expire"], false);
    assert!(first["arrival_time"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(
        first["recipients"][0]["delay_reason"],
        "mail transport unavailable"
    );

    // Hold: shown with '!', never scheduled, not even by a flush.
    let (_, err) = text(&m.run("postsuper", &["-h", &a]));
    assert!(
        err.contains(&format!("postsuper: {a}: placed on hold")),
        "{err}"
    );
    assert!(
        err.contains("postsuper: Placed on hold: 1 message\n"),
        "{err}"
    );
    assert!(text(&m.run("postqueue", &["-p"]))
        .0
        .contains(&format!("{a}!")));
    assert!(listed(&m).contains(&(a.clone(), "hold".into())));
    assert!(m.run("postqueue", &["-f"]).status.success());
    std::thread::sleep(Duration::from_secs(1));
    assert!(m.queue.join("hold").join(&a).exists());

    // postcat: the file as text, in Postfix's sections.
    let (all, _) = text(&m.run("postcat", &["-q", &a]));
    assert!(
        all.starts_with(&format!(
            "*** ENVELOPE RECORDS hold/{a} ***\nmessage_size: "
        )),
        "{all}"
    );
    assert!(
        all.contains("\nsender: hadoop@ywnds.com\n")
            && all.contains("\nrecipient: a@example.test\n"),
        "{all}"
    );
    assert!(
        all.contains(&format!(
            "\n*** MESSAGE CONTENTS hold/{a} ***\nReceived: from "
        )),
        "{all}"
    );
    assert!(
        all.ends_with(&format!(
            "\nbody\n\n*** HEADER EXTRACTED hold/{a} ***\n*** MESSAGE FILE END hold/{a} ***\n"
        )),
        "{all}"
    );
    let (header, _) = text(&m.run("postcat", &["-h", "-q", &a]));
    assert!(
        header.starts_with("Received: ")
            && header.contains("\nSubject: one\n")
            && !header.contains("body"),
        "{header}"
    );
    assert_eq!(text(&m.run("postcat", &["-b", "-q", &a])).0, "\nbody\n\n");
    // A copy out of the queue, by name or on standard input, as Postfix's.
    let copy = m.root.path().join("copy");
    std::fs::copy(m.queue.join("hold").join(&a), &copy).unwrap();
    let out = m.run("postcat", &[copy.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(text(&out).0.contains("\nsender: hadoop@ywnds.com\n"));
    let out = run_as(&[], "postcat", &["-e"], &std::fs::read(&copy).unwrap());
    let (env, err) = text(&out);
    assert!(
        env.starts_with("*** ENVELOPE RECORDS stdin ***\n")
            && env.contains("\nrecipient: a@example.test\n"),
        "{env}{err}"
    );
    let out = m.run("postcat", &["-q", "B0B0B0B0B0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out)
        .1
        .contains("postcat: fatal: open queue file B0B0B0B0B0: No such file or directory"));
    let (_, err) = text(&m.run("postsuper", &["-H", &a]));
    assert!(
        err.contains("postsuper: Released from hold: 1 message"),
        "{err}"
    );
    assert!(wait_for(Duration::from_secs(10), || listed(&m)
        .contains(&(a.clone(), "deferred".into()))));

    // -s puts a file found in the wrong hashed directory back and drops
    // status logs without a message; -p removes a crash's temporary files.
    let right = m.queue.join("deferred").join(&b[..1]).join(&b);
    let wrong_dir = m
        .queue
        .join("deferred")
        .join(if b.starts_with('Z') { "Y" } else { "Z" });
    std::fs::create_dir_all(&wrong_dir).unwrap();
    let owner =
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(m.queue.join("deferred")).unwrap());
    nix::unistd::chown(&wrong_dir, Some(owner.into()), None).unwrap();
    std::fs::rename(&right, wrong_dir.join(&b)).unwrap();
    std::fs::write(m.queue.join("defer/ABCDEF12345"), "x\n").unwrap();
    let tmp = m.queue.join("incoming/1795595371123456.42.42");
    let old = std::fs::File::create(&tmp).unwrap();
    old.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    let (_, err) = text(&m.run("postsuper", &["-s", "-p"]));
    assert!(right.exists(), "{err}");
    assert!(!m.queue.join("defer/ABCDEF12345").exists(), "{err}");
    assert!(
        !tmp.exists() && err.contains("postsuper: Deleted: 1 temporary file"),
        "{err}"
    );

    // Requeue: as Postfix's, through maildrop/, pickup and cleanup again,
    // under new queue IDs (pickup names the old one); the old defer logs
    // stay until postsuper -s.
    let (_, err) = text(&m.run("postsuper", &["-r", "ALL"]));
    assert!(err.contains("postsuper: Requeued: 2 messages"), "{err}");
    let mut now = Vec::new();
    assert!(
        wait_for(Duration::from_secs(10), || {
            now = m.queue_files("deferred");
            now.len() == 2 && !now.contains(&a) && !now.contains(&b)
        }),
        "{now:?}\n{}",
        m.log_text()
    );
    for old in [&a, &b] {
        assert!(
            m.log_text()
                .contains(&format!("from=<hadoop@ywnds.com> orig_id={old}")),
            "{}",
            m.log_text()
        );
    }
    // Delete, IDs from standard input too.
    let out = run_as(
        &[],
        "postsuper",
        &["-c", &etc(&m), "-d", "-"],
        format!("{}\n{}\n", now[0], now[1]).as_bytes(),
    );
    let (_, err) = text(&out);
    assert!(
        err.contains(&format!("postsuper: {}: removed", now[0]))
            && err.contains("Deleted: 2 messages"),
        "{err}"
    );
    assert_eq!(
        text(&m.run("postqueue", &["-p"])).0,
        "Mail queue is empty\n"
    );
    let mut logs = m.queue_files("defer");
    logs.sort();
    let mut old = vec![a.clone(), b.clone()];
    old.sort();
    assert_eq!(logs, old, "the deleted messages' logs went with them");
    // No operation named: -s and -p, as Postfix's postsuper.
    let out = m.run("postsuper", &[]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(m.queue_files("defer").is_empty());
    assert!(m.log_text().contains("postfix/postsuper["));
    assert!(m.log_text().contains(&format!(": {}: removed", now[1])));

    // Postfix's answers to mistakes.
    let (_, err) = text(&m.run("postsuper", &["-d", "ALL", "nosuchqueue"]));
    assert!(
        err.contains("postsuper: fatal: invalid directory name: nosuchqueue"),
        "{err}"
    );
    let out = m.run("postqueue", &["-x"]);
    assert_eq!(out.status.code(), Some(69));
    assert!(text(&out).1.contains("postqueue: fatal: usage: postqueue -f | postqueue -i queueid | postqueue -j | postqueue -p | postqueue -s site"));
    let out = m.run("postqueue", &["-s", "example.test"]);
    assert_eq!(out.status.code(), Some(69));
    assert!(text(&out)
        .1
        .contains("Flush service is not configured for destination \"example.test\""));

    // With the mail system down the superuser still gets a listing.
    m.postfix("stop");
    let (listing, err) = text(&m.run("postqueue", &["-p"]));
    assert_eq!(listing, "Mail queue is empty\n");
    assert!(
        err.contains("postqueue: warning: Mail system is down -- accessing queue directly"),
        "{err}"
    );
    let out = m.run("postqueue", &["-f"]);
    assert_eq!(out.status.code(), Some(69));
    assert!(text(&out)
        .1
        .contains("postqueue: fatal: Cannot flush mail queue - mail system is down"));
}

#[test]
fn flush_delivers_deferred_mail_but_never_held_or_deleted_mail() {
    // Retries only when asked: backoff and queue runs an hour apart.
    let m = Instance::mail(
        "minimal_backoff_time = 3600s\nmaximal_backoff_time = 3600s\nqueue_run_delay = 3600s\nfast_flush_domains = ywnds.com\n",
    );
    m.start();
    // openstack's mailbox cannot be created yet: delivery is deferred.
    let home = m.home.join("openstack");
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o500)).unwrap();
    let ids: Vec<String> = (0..4)
        .map(|i| send(&m, "openstack@ywnds.com", &format!("m{i}")))
        .collect();
    assert!(
        wait_for(Duration::from_secs(20), || m.queue_files("deferred").len()
            == 4),
        "{}",
        m.log_text()
    );
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let held = &ids[3];
    let deleted = &ids[2];
    assert!(m.run("postsuper", &["-h", held]).status.success());
    assert!(m.run("postsuper", &["-d", deleted]).status.success());

    // -i: just that message.
    assert!(m.run("postqueue", &["-i", &ids[0]]).status.success());
    m.wait_maildir("openstack", 1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(m.maildir("openstack").len(), 1);
    // -s: the site's mail; -f: everything deferred. Neither touches hold.
    assert!(m.run("postqueue", &["-s", "ywnds.com"]).status.success());
    m.wait_maildir("openstack", 2);
    assert!(m.run("postqueue", &["-f"]).status.success());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        m.maildir("openstack").len(),
        2,
        "held and deleted mail stays undelivered"
    );
    assert_eq!(listed(&m), vec![(held.clone(), "hold".to_owned())]);
    assert!(m.run("postsuper", &["-H", held]).status.success());
    assert!(m.run("postqueue", &["-f"]).status.success());
    m.wait_maildir("openstack", 3);
    assert!(wait_for(Duration::from_secs(5), || m
        .log_text()
        .matches("status=sent")
        .count()
        == 3));
    let log = m.log_text();
    assert!(
        !log.lines()
            .any(|l| l.contains(&format!("{deleted}: to=")) && l.contains("status=sent")),
        "{log}"
    );
    // pflogsumm reads the run as it would Postfix's.
    let t = testkit::pflogsumm(&m.log);
    assert_eq!(t.get("received"), Some(&4), "{t:?}");
    assert_eq!(t.get("delivered"), Some(&3), "{t:?}");
    assert_eq!(t.get("deferred"), Some(&4), "{t:?}");
}

#[test]
fn sendmail_mail_past_hopcount_limit_is_delivered_not_left_in_maildrop() {
    // cleanup refuses such mail from SMTP clients; pickup would have no one
    // to refuse it to, and would retry the maildrop file forever.
    let m = Instance::mail("hopcount_limit = 3\n");
    m.start();
    let msg = b"Received: from a by b\nReceived: from b by c\nReceived: from c by d\nSubject: hops\n\nbody\n";
    let out = run_as(&[], "sendmail", &["-C", &etc(&m), "openstack"], msg);
    assert!(out.status.success(), "{:?}", text(&out));
    m.wait_maildir("openstack", 1);
    assert!(m.queue_files("maildrop").is_empty());
}

#[test]
fn sendmail_submits_through_postdrop_and_pickup() {
    let m = Instance::mail("");
    m.start();
    let e = etc(&m);
    // -t: recipients from To/Cc/Bcc; Bcc goes; bare names get @$myorigin.
    let msg = b"From: hadoop\nTo: openstack\nBcc: hadoop@ywnds.com\nSubject: cron report\n\nall good\n.\nnot part of it\n";
    let out = run_as(
        &[],
        "sendmail",
        &["-C", &e, "-t", "-f", "hadoop", "-F", "Hadoop User"],
        msg,
    );
    assert!(out.status.success(), "{:?}", text(&out));
    let got = m.wait_maildir("openstack", 1);
    let mail = String::from_utf8_lossy(&got[0]).into_owned();
    assert!(
        mail.starts_with("Return-Path: <hadoop@ywnds.com>\n"),
        "{mail}"
    );
    assert!(
        mail.contains(&format!(
            "\nReceived: by mail.ywnds.com (Postfix, from userid {})\n\tid ",
            nix::unistd::Uid::current()
        )),
        "{mail}"
    );
    assert!(
        mail.contains("\nFrom: hadoop@ywnds.com\n") && mail.contains("\nTo: openstack@ywnds.com\n"),
        "{mail}"
    );
    assert!(!mail.contains("Bcc:"), "{mail}");
    assert!(mail.ends_with("\n\nall good\n"), "{mail}");
    m.wait_maildir("hadoop", 1);
    assert!(m.wait_log("postfix/pickup[", Duration::from_secs(5)));
    assert!(
        m.log_text().contains(&format!(
            ": uid={} from=<hadoop>",
            nix::unistd::Uid::current()
        )),
        "{}",
        m.log_text()
    );
    assert!(
        m.log_text().contains("from=<hadoop@ywnds.com>, size="),
        "{}",
        m.log_text()
    );

    // Recipients on the command line, -i, and the From header cleanup adds with the full name.
    let out = run_as(
        &[],
        "sendmail",
        &[
            "-C",
            &e,
            "-i",
            "-F",
            "Hadoop User",
            "-f",
            "hadoop",
            "openstack",
        ],
        b"Subject: dots\n\n.\nend\n",
    );
    assert!(out.status.success());
    let got = m.wait_maildir("openstack", 2);
    let mail = got
        .iter()
        .map(|g| String::from_utf8_lossy(g).into_owned())
        .find(|t| t.contains("Subject: dots"))
        .unwrap();
    assert!(
        mail.contains("\nFrom: Hadoop User <hadoop@ywnds.com>\n"),
        "{mail}"
    );
    assert!(mail.ends_with("\n\n.\nend\n"), "{mail}");

    // -bs: SMTP on standard input and output.
    let session = b"EHLO me\r\nMAIL FROM:<hadoop@ywnds.com>\r\nRCPT TO:<openstack@ywnds.com>\r\nDATA\r\nSubject: bs\r\n\r\n..dot\r\n.\r\nQUIT\r\n";
    let out = run_as(&[], "sendmail", &["-C", &e, "-bs"], session);
    let (said, _) = text(&out);
    assert!(
        said.starts_with("220 mail.ywnds.com ESMTP Postfix\r\n"),
        "{said}"
    );
    assert!(
        said.contains("\r\n250 2.0.0 Ok: queued as ") && said.ends_with("221 2.0.0 Bye\r\n"),
        "{said}"
    );
    let got = m.wait_maildir("openstack", 3);
    assert!(got.iter().any(|g| g.ends_with(b"Subject: bs\n\n.dot\n")
        || String::from_utf8_lossy(g).contains("\n\n.dot\n")));

    // mailq and newaliases are names of the same program.
    assert!(wait_for(Duration::from_secs(10), || text(&run_as(
        &[],
        "mailq",
        &["-C", &e],
        b""
    ))
    .0
        == "Mail queue is empty\n"));
    let out = run_as(&[], "newaliases", &["-C", &e], b"");
    assert!(out.status.success(), "{:?}", text(&out));
    let db = format!("hash:{e}/aliases");
    let out = run_as(&[], "postalias", &["-q", "admin", &db], b"");
    assert_eq!(text(&out).0, "openstack, hadoop\n");
    let out = run_as(&[], "postalias", &["-q", "nobody-here", &db], b"");
    assert_eq!((out.status.code(), out.stdout.is_empty()), (Some(1), true));

    // Mistakes: Postfix's messages and exit status 75.
    let out = run_as(&[], "sendmail", &["-C", &e], b"Subject: x\n\n");
    assert_eq!(out.status.code(), Some(75));
    let me = nix::unistd::Uid::current();
    let name = nix::unistd::User::from_uid(me).unwrap().unwrap().name;
    assert!(text(&out).1.contains(&format!("sendmail: fatal: {name}({me}): Recipient addresses must be specified on the command line or via the -t option")), "{:?}", text(&out));
    let out = run_as(&[], "sendmail", &["-C", &e, "-t"], b"Subject: x\n\n");
    assert!(text(&out)
        .1
        .contains("No recipient addresses found in message header"));
    let out = run_as(&[], "sendmail", &["-C", &e, "-z"], b"");
    assert_eq!(out.status.code(), Some(75));
    assert!(text(&out)
        .1
        .contains("sendmail: invalid option -- 'z'\nsendmail: fatal: usage: sendmail [options]"));
    // An option postfix-rs does not offer is refused with EX_USAGE, as
    // Postfix's sendmail refuses those it does not offer.
    let out = run_as(&[], "sendmail", &["-C", &e, "-bv", "openstack"], b"");
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out).1.contains("sendmail: fatal: unsupported: -bv"),
        "{:?}",
        text(&out)
    );
    assert!(m.queue_files("maildrop").is_empty());
    // Three submissions picked up, four deliveries (the -t message had two recipients).
    assert!(wait_for(Duration::from_secs(5), || m
        .log_text()
        .matches("status=sent")
        .count()
        == 4));
    let t = testkit::pflogsumm(&m.log);
    assert_eq!(t.get("received"), Some(&3), "{t:?}");
    assert_eq!(t.get("delivered"), Some(&4), "{t:?}");
}

#[test]
fn headerless_mail_from_sendmail_and_smtp_gets_a_body_separator() {
    let m = Instance::mail("");
    m.start();
    let e = etc(&m);
    // `echo test | sendmail hadoop`: no header line at all.
    let out = run_as(&[], "sendmail", &["-C", &e, "hadoop"], b"test\n");
    assert!(out.status.success(), "{:?}", text(&out));
    let got = m.wait_maildir("hadoop", 1);
    let mail = String::from_utf8_lossy(&got[0]).into_owned();
    assert!(mail.ends_with("\n\ntest\n"), "{mail}");
    // X-Original-To: and orig_to= keep the address as given, as Postfix.
    assert!(mail.contains("\nX-Original-To: hadoop\n"), "{mail}");
    assert!(
        m.wait_log(
            "to=<hadoop@ywnds.com>, orig_to=<hadoop>,",
            Duration::from_secs(5)
        ),
        "{}",
        m.log_text()
    );
    // Over SMTP, a body that starts without an empty line.
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    c.queued(
        "a@example.org",
        &["openstack@ywnds.com"],
        b"Subject: x\r\nnot a header",
    );
    let got = m.wait_maildir("openstack", 1);
    let mail = String::from_utf8_lossy(&got[0]).into_owned();
    let (head, body) = mail.split_once("\n\n").unwrap();
    assert!(head.contains("\nSubject: x\n"), "{mail}");
    assert_eq!(body, "not a header\n");
}

/// setpriv as the unprivileged `nobody`, with or without the `postdrop`
/// group (Postfix's postdrop and postqueue get that group from their
/// set-group-ID bit; the test gives it to the user directly).
fn nobody(with_postdrop: bool) -> Vec<&'static str> {
    let groups = if with_postdrop {
        "--groups=postdrop"
    } else {
        "--clear-groups"
    };
    vec!["setpriv", "--reuid=nobody", "--regid=nogroup", groups, "--"]
}

#[test]
fn ordinary_users_submit_and_list_but_cannot_touch_the_queue() {
    if !nix::unistd::Uid::effective().is_root() {
        return; // needs root to act as another user
    }
    let m = Instance::mail("");
    m.start();
    let e = etc(&m);
    let out = run_as(
        &nobody(true),
        "sendmail",
        &["-C", &e, "openstack"],
        b"Subject: from nobody\n\nhi\n",
    );
    assert!(out.status.success(), "{:?}", text(&out));
    let got = m.wait_maildir("openstack", 1);
    assert!(got[0].starts_with(b"Return-Path: <nobody@ywnds.com>\n"));
    assert!(
        m.wait_log(": uid=65534 from=<nobody>", Duration::from_secs(5)),
        "{}",
        m.log_text()
    );
    let out = run_as(&nobody(true), "postqueue", &["-c", &e, "-p"], b"");
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(wait_for(Duration::from_secs(5), || text(&run_as(
        &nobody(true),
        "postqueue",
        &["-c", &e, "-p"],
        b""
    ))
    .0
        == "Mail queue is empty\n"));

    // Without the group: no way into the queue.
    let out = run_as(&nobody(false), "postqueue", &["-c", &e, "-p"], b"");
    assert_eq!(out.status.code(), Some(69));
    assert!(
        text(&out)
            .1
            .contains("postqueue: fatal: Queue report unavailable - mail system is down"),
        "{:?}",
        text(&out)
    );
    let out = run_as(
        &nobody(false),
        "sendmail",
        &["-C", &e, "openstack"],
        b"Subject: x\n\n",
    );
    assert_eq!(out.status.code(), Some(75), "{:?}", text(&out));
    // Neither with it: postsuper is the superuser's, queue files are the mail system's.
    let out = run_as(&nobody(true), "postsuper", &["-c", &e, "-d", "ALL"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out)
        .1
        .contains("postsuper: fatal: use of this command is reserved for the superuser"));
    for q in ["maildrop", "incoming", "active", "deferred", "hold"] {
        let dir = m.queue.join(q);
        let out = Command::new("setpriv")
            .args(&nobody(true)[1..])
            .arg("ls")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(!out.status.success(), "nobody could list {q}/");
    }
}

#[test]
fn active_and_incoming_mail_is_listed_and_a_deleted_active_message_goes_no_further() {
    let m = Instance::mail("");
    m.set_aliases("postmaster: root\nroot: openstack\nslow: |/bin/sleep 3, openstack\n");
    m.start();
    // In delivery (local runs the command): active, shown with '*'.
    let id = send(&m, "slow@ywnds.com", "slow");
    assert!(wait_for(Duration::from_secs(5), || text(
        &m.run("postqueue", &["-p"])
    )
    .0
    .contains(&format!("\n{id}*"))));
    assert!(listed(&m).contains(&(id.clone(), "active".into())));
    // local has the file open once its command runs.
    assert!(wait_for(Duration::from_secs(10), || Command::new("pgrep")
        .args(["-f", "^/bin/sleep 3$"])
        .output()
        .is_ok_and(|o| o.status.success())));
    let qmgr = m.child_pid("qmgr").unwrap();
    let (_, err) = text(&m.run("postsuper", &["-d", &id]));
    assert!(err.contains("Deleted: 1 message"), "{err}");
    // What was in flight finishes; nothing more happens to the message.
    assert!(
        m.wait_log(
            &format!("{id}: to=<slow@ywnds.com>"),
            Duration::from_secs(10)
        ),
        "{}",
        m.log_text()
    );
    std::thread::sleep(Duration::from_millis(500));
    let log = m.log_text();
    assert!(
        log.contains(&format!(
            "{id}: to=<openstack@ywnds.com>, orig_to=<slow@ywnds.com>, relay=local"
        )),
        "{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.contains("qmgr[") && l.contains(&format!("{id}: removed"))),
        "{log}"
    );
    assert_eq!(m.child_pid("qmgr"), Some(qmgr));
    send(&m, "openstack@ywnds.com", "after");
    assert!(wait_for(Duration::from_secs(10), || m
        .log_text()
        .matches("status=sent")
        .count()
        >= 3));

    // Without a queue manager, accepted mail waits in incoming/.
    let n = Instance::mail("");
    let master = std::fs::read_to_string(n.etc.join("master.cf")).unwrap();
    n.write_master_cf(&master.replace("qmgr unix n - n 300 1 qmgr\n", ""));
    n.postfix("start");
    n.wait_children(&[&format!("127.0.0.1:{}", n.port), "cleanup", "showq"]);
    let id = send(&n, "openstack@ywnds.com", "waiting");
    assert_eq!(listed(&n), vec![(id.clone(), "incoming".to_owned())]);
    let report = text(&n.run("postqueue", &["-p"])).0;
    assert!(report.contains(&format!("\n{id} ")), "{report}");
    assert!(
        report.ends_with("\n-- 0 Kbytes in 1 Request.\n"),
        "{report}"
    );
}

/// A running instance that retries only when asked (backoff and queue
/// runs an hour apart), with one message for openstack deferred (its
/// mailbox could not be made) and deliverable now.
fn one_deferred_for_openstack(extra_main_cf: &str) -> MailInstance {
    let m = Instance::mail(&format!(
        "minimal_backoff_time = 3600s\nmaximal_backoff_time = 3600s\nqueue_run_delay = 3600s\n{extra_main_cf}"
    ));
    m.start();
    let home = m.home.join("openstack");
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o500)).unwrap();
    send(&m, "openstack@ywnds.com", "later");
    assert!(
        wait_for(Duration::from_secs(20), || m.queue_files("deferred").len()
            == 1),
        "{}",
        m.log_text()
    );
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    m
}

#[test]
fn etrn_flushes_deferred_mail_for_a_fast_flush_domain() {
    let m = one_deferred_for_openstack("fast_flush_domains = ywnds.com\n");
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    assert_eq!(c.cmd("ETRN"), "500 Syntax: ETRN domain");
    assert_eq!(
        c.cmd("ETRN ywnds..com"),
        "501 Error: invalid parameter syntax"
    );
    assert_eq!(
        c.cmd("ETRN example.org"),
        "459 <example.org>: service unavailable"
    );
    assert_eq!(c.cmd("ETRN @ywnds.com"), "250 Queuing started");
    m.wait_maildir("openstack", 1);
    assert_eq!(c.cmd("MAIL FROM:<a@example.org>"), "250 2.1.0 Ok");
    assert_eq!(
        c.cmd("ETRN ywnds.com"),
        "503 Error: MAIL transaction in progress"
    );
    c.cmd("QUIT");
    assert!(m
        .log_text()
        .contains("warning: reject: ETRN example.org... from unknown[127.0.0.1]"));
    assert!(
        m.wait_log("mail=1 etrn=1/5 quit=1", Duration::from_secs(5)),
        "{}",
        m.log_text()
    );
}

#[test]
fn etrn_restrictions_refuse_clients_as_postfix() {
    let m = Instance::mail("smtpd_etrn_restrictions = reject\nfast_flush_domains = ywnds.com\n");
    m.start();
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("HELO client.example");
    assert_eq!(
        c.cmd("ETRN ywnds.com"),
        "554 5.7.1 <ywnds.com>: Etrn command rejected: Access denied"
    );
    c.cmd("QUIT");
    assert!(m.wait_log(
        "NOQUEUE: reject: ETRN from unknown[127.0.0.1]: 554 5.7.1 <ywnds.com>: Etrn command rejected: Access denied; proto=SMTP helo=<client.example>",
        Duration::from_secs(5)
    ), "{}", m.log_text());
}

#[test]
fn myorigin_naming_a_file_takes_its_first_line_as_debian_does() {
    // Debian's main.cf: myorigin = /etc/mailname.
    let m = Instance::mail("");
    let mailname = m.etc.join("mailname");
    std::fs::write(&mailname, "ywnds.com\n").unwrap();
    m.add_main_cf(&format!("myorigin = {}\n", mailname.display()));
    m.start();
    let out = run_as(&[], "sendmail", &["-C", &etc(&m), "hadoop"], b"cron\n");
    assert!(out.status.success(), "{:?}", text(&out));
    let got = m.wait_maildir("hadoop", 1);
    let mail = String::from_utf8_lossy(&got[0]).into_owned();
    let me = nix::unistd::User::from_uid(nix::unistd::Uid::current())
        .unwrap()
        .unwrap()
        .name;
    assert!(
        mail.starts_with(&format!("Return-Path: <{me}@ywnds.com>\n")),
        "{mail}"
    );
    assert!(
        m.wait_log(
            "to=<hadoop@ywnds.com>, orig_to=<hadoop>, relay=local",
            Duration::from_secs(5)
        ),
        "{}",
        m.log_text()
    );
}

/// `postsuper -d ALL` as Postfix's: every message goes with its logs, the
/// count is printed and no message is named (Postfix's mass operations
/// report only their summary); the files cleanup named ahead of time stay,
/// and mail flows on.
#[test]
fn postsuper_delete_all_empties_the_queue_and_its_logs_naming_no_message() {
    let m = Instance::mail("minimal_backoff_time = 3600s\nmaximal_backoff_time = 3600s\n");
    m.start();
    let ids: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|u| send(&m, &format!("{u}@example.test"), u))
        .collect();
    assert!(
        wait_for(Duration::from_secs(20), || m.queue_files("deferred").len()
            == 3
            && m.queue_files("defer").len() == 3),
        "{}",
        m.log_text()
    );
    m.run("postsuper", &["-h", &ids[2]]);
    let (_, err) = text(&m.run("postsuper", &["-d", "ALL"]));
    assert_eq!(err, "postsuper: Deleted: 3 messages\n");
    for q in ["deferred", "hold", "defer"] {
        assert!(m.queue_files(q).is_empty(), "{q}: {:?}", m.queue_files(q));
    }
    assert!(
        !m.log_text()
            .lines()
            .any(|l| l.contains("postsuper[") && l.contains(": removed")),
        "{}",
        m.log_text()
    );
    assert_eq!(
        text(&m.run("postqueue", &["-p"])).0,
        "Mail queue is empty\n"
    );
    send(&m, "openstack@ywnds.com", "after");
    assert!(wait_for(Duration::from_secs(10), || m
        .log_text()
        .contains("status=sent")));
}

/// `postsuper -r` as Postfix's: the message goes through pickup and
/// cleanup again, so an address mapping added since applies to it; the
/// recipient already delivered is not sent again, and its first arrival
/// still counts in the delays logged.
#[test]
fn postsuper_requeue_runs_the_message_through_cleanup_again() {
    let m = Instance::mail("minimal_backoff_time = 3600s\nmaximal_backoff_time = 3600s\n");
    m.start();
    // example.test waits: this instance has no smtp transport.
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    let reply = c.queued(
        "sender@example.org",
        &["openstack@ywnds.com", "lost@example.test"],
        b"Subject: requeue\r\n\r\nbody\r\n",
    );
    let id = reply.rsplit(' ').next().unwrap().trim().to_owned();
    c.cmd("QUIT");
    m.wait_maildir("openstack", 1);
    assert!(
        wait_for(Duration::from_secs(20), || m.queue_files("deferred")
            == [id.clone()]),
        "{}",
        m.log_text()
    );
    std::thread::sleep(Duration::from_secs(2));
    m.add_main_cf("virtual_alias_maps = inline:{ lost@example.test=hadoop }\n");
    m.postfix("reload");
    // `postfix reload` returns once master has its signal: cleanup must
    // have the new alias map before the requeued message reaches it.
    let reloaded =
        |l: &str| l.contains("postfix/cleanup[") && l.contains("]: reload: configuration");
    assert!(
        wait_for(Duration::from_secs(30), || m
            .log_text()
            .lines()
            .any(reloaded)),
        "{}",
        m.log_text()
    );
    let (_, err) = text(&m.run("postsuper", &["-r", &id]));
    assert_eq!(
        err,
        format!("postsuper: {id}: requeued\npostsuper: Requeued: 1 message\n")
    );
    m.wait_maildir("hadoop", 1);
    m.exactly("openstack", 1);
    let log = m.log_text();
    let picked = log
        .lines()
        .find(|l| l.ends_with(&format!("from=<sender@example.org> orig_id={id}")))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(picked.contains("postfix/pickup["), "{picked}");
    let sent = log
        .lines()
        .find(|l| {
            l.contains("to=<hadoop@ywnds.com>, orig_to=<lost@example.test>")
                && l.contains("status=sent")
        })
        .unwrap_or_else(|| panic!("{log}"));
    let delay: f64 = sent
        .split("delay=")
        .nth(1)
        .and_then(|d| d.split(',').next())
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("{sent}"));
    assert!(delay >= 2.0, "the first arrival counts: {sent}");
    assert!(m.queue_files("deferred").is_empty() && m.queue_files("maildrop").is_empty());
}

/// `postsuper -e` and `-f` as Postfix's: the mark shows in postqueue (`#`),
/// a held message stays held until `-f` releases it, and at its next
/// delivery attempt each message goes back to its sender with the reason
/// it waited for, and is gone.
#[test]
fn postsuper_forced_expiration_returns_deferred_and_held_mail() {
    let m = Instance::mail("minimal_backoff_time = 3600s\nmaximal_backoff_time = 3600s\n");
    m.start();
    let (a, b) = two_deferred(&m);
    let out = m.run("postsuper", &["-h", &b, "-e", &b, "-e", &a]);
    assert_eq!(
        text(&out).1,
        format!(
            "postsuper: {b}: placed on hold\npostsuper: {b}: expired\npostsuper: {a}: expired\n\
             postsuper: Force-expired: 2 messages\npostsuper: Placed on hold: 1 message\n"
        )
    );
    let report = text(&m.run("postqueue", &["-p"])).0;
    assert!(report.contains(&format!("\n{a}#  ")), "{report}");
    assert!(report.contains(&format!("\n{b}!# ")), "{report}");
    let json = text(&m.run("postqueue", &["-j"])).0;
    assert_eq!(json.matches("\"forced_expire\": true").count(), 2, "{json}");

    // Its next attempt, now: back to the sender with the reason.
    assert!(m.run("postqueue", &["-i", &a]).status.success());
    let line = m.log_line(&format!(
        "{a}: from=<hadoop@ywnds.com>, status=force-expired, returned to sender"
    ));
    assert!(!line.is_empty());
    let notices = m.wait_maildir("hadoop", 1);
    let notice = String::from_utf8_lossy(&notices[0]);
    assert!(notice.contains("a@example.test"), "{notice}");
    assert!(notice.contains("mail transport unavailable"), "{notice}");
    assert!(m.wait_log(&format!("{a}: removed"), Duration::from_secs(20)));
    // Held, it waits: -f releases it, and it goes back too.
    assert_eq!(m.queue_files("hold").len(), 1);
    let out = m.run("postsuper", &["-f", &b]);
    assert_eq!(
        text(&out).1,
        format!(
            "postsuper: {b}: released from hold\npostsuper: Force-expired: 0 messages\n\
             postsuper: Released from hold: 1 message\n"
        )
    );
    m.log_line(&format!(
        "{b}: from=<hadoop@ywnds.com>, status=force-expired, returned to sender"
    ));
    m.wait_maildir("hadoop", 2);
    assert!(
        wait_for(Duration::from_secs(20), || m
            .queue_files("deferred")
            .is_empty()
            && m.queue_files("hold").is_empty()),
        "{}",
        m.log_text()
    );
}

/// `postfix flush` is `postqueue -f`, as Postfix's postfix-script makes it.
#[test]
fn postfix_flush_delivers_the_deferred_mail_now() {
    let m = one_deferred_for_openstack("");
    let out = m.run("postfix", &["flush"]);
    assert!(out.status.success(), "{}", text(&out).1);
    m.wait_maildir("openstack", 1);
}

/// postcat on every queue file Debian's Postfix wrote for the queue
/// crate's tests (and on a file of ours), with each way of showing it:
/// byte for byte what Debian's postcat prints, by name and on standard
/// input.
#[test]
fn postcat_shows_queue_files_as_debians_postcat() {
    let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/lib/queue/tests/postfix-3.7");
    let conf = tempfile::tempdir().unwrap();
    std::fs::write(conf.path().join("main.cf"), "").unwrap();
    let run = |program: &std::path::Path, args: &[&str], stdin: Option<&std::path::Path>| {
        let mut cmd = Command::new(program);
        cmd.arg("-c").arg(conf.path()).args(args);
        if let Some(f) = stdin {
            cmd.stdin(std::fs::File::open(f).unwrap());
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    // A file of ours too: a message cleanup queued.
    let m = Instance::mail("minimal_backoff_time = 3600s\nmaximal_backoff_time = 3600s\n");
    m.start();
    let id = send(&m, "a@example.test", "ours");
    assert!(wait_for(Duration::from_secs(20), || m
        .queue_files("deferred")
        .len()
        == 1));
    let ours = m.root.path().join(&id);
    std::fs::copy(m.queue.join("deferred").join(&id[..1]).join(&id), &ours).unwrap();
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&samples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            !n.contains("log") && n != "README.md"
        })
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{files:?}");
    files.push(ours);
    // Damaged input: a pointer record that points at itself (Postfix's
    // loop guard stops it), an empty file, a file that is no queue file.
    for (name, bytes) in [
        ("loop", &b"S\x01xp\x013"[..]),
        ("empty", b""),
        ("junk", b"Zjunk"),
    ] {
        let p = m.root.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        files.push(p);
    }
    let debian = std::path::Path::new("/usr/sbin/postcat");
    for f in &files {
        let name = f.to_str().unwrap();
        for opts in [
            &[][..],
            &["-e"],
            &["-h"],
            &["-b"],
            &["-eh"],
            &["-o"],
            &["-d"],
        ] {
            let args: Vec<&str> = opts.iter().copied().chain([name]).collect();
            assert_eq!(
                run(&bin("postcat"), &args, None),
                run(debian, &args, None),
                "postcat {args:?}"
            );
        }
        assert_eq!(
            run(&bin("postcat"), &[], Some(f)),
            run(debian, &[], Some(f)),
            "postcat < {name}"
        );
    }
}
