//! Switching between Debian's Postfix and postfix-rs on one queue: what
//! either left deferred or held, the other lists and delivers, each
//! message exactly once.

use std::time::Duration;

use testkit::fake_mx::{FakeMx, Script};
use testkit::{wait_for, Instance, Smtp};

fn deferring() -> Script {
    Script {
        rcpt_default: "451 4.3.0 try again later".into(),
        ..Script::default()
    }
}

/// Message IDs (`Subject: N`) the fake MX accepted, sorted.
fn accepted(mx: &FakeMx) -> Vec<String> {
    let mut v: Vec<String> = mx
        .accepted()
        .iter()
        .filter_map(|a| {
            String::from_utf8_lossy(&a.data)
                .lines()
                .find_map(|l| l.strip_prefix("Subject: ").map(str::to_owned))
        })
        .collect();
    v.sort();
    v
}

fn send(port: u16, subjects: &[&str]) {
    let (mut c, _) = Smtp::connect(port);
    c.cmd("EHLO client.example");
    for s in subjects {
        let msg = format!("Subject: {s}\r\n\r\nbody of {s}");
        let r = c.mail("sender@ywnds.com", &["user@remote.example"], msg.as_bytes());
        assert!(r.starts_with("250"), "{r}");
    }
    c.cmd("QUIT");
}

#[test]
fn a_queue_goes_from_postfix_to_postfix_rs_and_back_without_loss() {
    if !nix::unistd::Uid::effective().is_root() {
        return; // Debian's Postfix runs as root.
    }
    let mx = FakeMx::start("127.0.0.1", deferring());
    let relay = format!("relayhost = [127.0.0.1]:{}\n", mx.port);
    let m = Instance::mail(&relay);
    m.add_smtp();
    let debian = testkit::debian::Postfix::new(Some(&m.queue), &relay);

    // Debian's Postfix defers three, one of them is held.
    debian.start();
    send(debian.port, &["p1", "p2", "p3"]);
    assert!(
        wait_for(Duration::from_secs(20), || debian
            .mailq()
            .matches("try again later")
            .count()
            == 3),
        "{}",
        debian.mailq()
    );
    let held = debian
        .mailq()
        .lines()
        .find(|l| l.contains("sender@ywnds.com"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .trim_end_matches(['*', '!'])
        .to_owned();
    assert!(debian.run("postsuper", &["-h", &held]).status.success());
    debian.stop();

    // postfix-rs takes the queue over: it lists them, reasons included.
    m.start();
    let q = m.run("postqueue", &["-p"]);
    let listing = String::from_utf8_lossy(&q.stdout).into_owned();
    assert_eq!(
        listing.matches("user@remote.example").count(),
        3,
        "{listing}"
    );
    assert!(listing.contains(&format!("{held}!")), "{listing}");
    assert!(listing.contains("try again later"), "{listing}");
    // The remote end comes back: the two not held go out, the held one
    // after its release.
    mx.set(Script::default());
    assert!(m.run("postqueue", &["-f"]).status.success());
    assert!(
        wait_for(Duration::from_secs(20), || accepted(&mx).len() == 2),
        "{}",
        m.log_text()
    );
    assert!(m.run("postsuper", &["-H", &held]).status.success());
    assert!(m.run("postqueue", &["-f"]).status.success());
    assert!(
        wait_for(Duration::from_secs(20), || accepted(&mx).len() == 3),
        "{}",
        m.log_text()
    );
    assert_eq!(accepted(&mx), ["p1", "p2", "p3"]);
    assert_eq!(m.queue_files("corrupt"), Vec::<String>::new());

    // postfix-rs defers two of its own; Debian's Postfix takes them back.
    mx.set(deferring());
    send(m.port, &["r1", "r2"]);
    assert!(
        wait_for(Duration::from_secs(20), || m.queue_files("deferred").len()
            == 2),
        "{}",
        m.log_text()
    );
    m.postfix("stop");
    assert!(wait_for(Duration::from_secs(10), || m
        .master_pid()
        .is_none()));
    // Listed before Debian's qmgr takes them up (it drops a message's
    // reasons while it works on it): its postqueue reads the queue itself
    // while the system is down.
    let listing = debian.mailq();
    assert_eq!(
        listing.matches("user@remote.example").count(),
        2,
        "{listing}"
    );
    assert!(listing.contains("try again later"), "{listing}");
    debian.start();
    mx.set(Script::default());
    assert!(debian.run("postqueue", &["-f"]).status.success());
    assert!(
        wait_for(Duration::from_secs(20), || accepted(&mx).len() == 5),
        "{}",
        debian.log_text()
    );
    assert_eq!(accepted(&mx), ["p1", "p2", "p3", "r1", "r2"]);
    assert!(
        wait_for(Duration::from_secs(10), || debian
            .mailq()
            .contains("Mail queue is empty")),
        "{}",
        debian.mailq()
    );
    debian.stop();
    assert_eq!(
        std::fs::read_dir(m.queue.join("corrupt")).unwrap().count(),
        0
    );
}

#[test]
fn dsn_requests_in_a_postfix_queue_are_honoured_by_postfix_rs() {
    if !nix::unistd::Uid::effective().is_root() {
        return; // Debian's Postfix runs as root.
    }
    let mx = FakeMx::start("127.0.0.1", deferring());
    let relay = format!("relayhost = [127.0.0.1]:{}\n", mx.port);
    let m = Instance::mail(&relay);
    m.add_smtp();
    let debian = testkit::debian::Postfix::new(Some(&m.queue), &relay);
    debian.start();
    // RET=HDRS and ENVID for the message, NOTIFY and ORCPT per recipient.
    let (mut c, _) = Smtp::connect(debian.port);
    c.cmd("EHLO client.example");
    assert!(c
        .cmd("MAIL FROM:<sender@client.example> RET=HDRS ENVID=env42")
        .starts_with("250"));
    for rcpt in [
        "RCPT TO:<never@remote.example> NOTIFY=NEVER",
        "RCPT TO:<fail@remote.example> NOTIFY=FAILURE ORCPT=rfc822;orig@remote.example",
        "RCPT TO:<plain@remote.example>",
    ] {
        assert!(c.cmd(rcpt).starts_with("250"), "{rcpt}");
    }
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(b"Subject: dsn\r\n\r\nbody that RET=HDRS keeps out\r\n.\r\n");
    assert!(c.reply().starts_with("250"));
    c.cmd("QUIT");
    assert!(
        wait_for(Duration::from_secs(20), || debian
            .mailq()
            .contains("try again later")),
        "{}",
        debian.mailq()
    );
    debian.stop();

    // postfix-rs takes over; the next hop now refuses the three for good.
    mx.set(Script {
        rcpt: vec![("sender@client.example".into(), "250 2.1.5 Ok".into())],
        rcpt_default: "550 5.1.1 no such user".into(),
        ..Script::default()
    });
    m.start();
    assert!(m.run("postqueue", &["-f"]).status.success());
    assert!(
        wait_for(Duration::from_secs(20), || mx
            .accepted()
            .iter()
            .any(|a| a.recipients == ["sender@client.example"])),
        "{}",
        m.log_text()
    );
    let notice = mx
        .accepted()
        .into_iter()
        .find(|a| a.recipients == ["sender@client.example"])
        .unwrap();
    let text = String::from_utf8_lossy(&notice.data).replace("\r\n", "\n");
    assert!(text.contains("Original-Envelope-Id: env42\n"), "{text}");
    assert!(text.contains("Final-Recipient: rfc822; fail@remote.example\nOriginal-Recipient: rfc822;orig@remote.example\n"), "{text}");
    assert!(
        text.contains("Final-Recipient: rfc822; plain@remote.example\n"),
        "{text}"
    );
    // NOTIFY=NEVER: not in the notice.
    assert!(!text.contains("never@remote.example"), "{text}");
    // RET=HDRS: the headers come back, not the body.
    assert!(text.contains("Content-Type: text/rfc822-headers"), "{text}");
    assert!(text.contains("Subject: dsn"), "{text}");
    assert!(!text.contains("body that RET=HDRS keeps out"), "{text}");
    assert!(
        m.log_text().contains("to=<never@remote.example>"),
        "{}",
        m.log_text()
    );
}

/// A queue of every kind of file `postsuper -d ALL` meets, owned by
/// `owner`: ready messages (mode 0700) in each message queue, one still
/// being written (0600), their logs, a trace log, a flush log, and a file
/// in a directory Postfix does not know.
fn every_kind_of_file(queue: &std::path::Path, owner: &nix::unistd::User) {
    use std::os::unix::fs::PermissionsExt;
    let files = [
        ("maildrop/5B2C41A0F1", 0o700),
        ("incoming/5B2C41A0F2", 0o700),
        ("incoming/5B2C41A0F3", 0o600),
        ("active/5B2C41A0F4", 0o700),
        ("deferred/5/5B2C41A0F5", 0o700),
        ("deferred/6/6B2C41A0F6", 0o700),
        ("defer/5/5B2C41A0F5", 0o600),
        ("defer/6/6B2C41A0F6", 0o600),
        ("hold/5B2C41A0F7", 0o700),
        ("bounce/5B2C41A0F7", 0o600),
        ("trace/5B2C41A0F4", 0o600),
        ("flush/example.com", 0o600),
        ("corrupt/5B2C41A0F8", 0o700),
    ];
    for (name, mode) in files {
        let path = queue.join(name);
        let mut dir = path.parent().unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(&path, format!("{name}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        nix::unistd::chown(&path, Some(owner.uid), Some(owner.gid)).unwrap();
        while dir != queue {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
            nix::unistd::chown(dir, Some(owner.uid), Some(owner.gid)).unwrap();
            dir = dir.parent().unwrap();
        }
    }
}

/// The files left under `queue`, by their path in it, with their modes.
fn files_in(queue: &std::path::Path) -> Vec<String> {
    fn walk(dir: &std::path::Path, top: &std::path::Path, out: &mut Vec<String>) {
        use std::os::unix::fs::PermissionsExt;
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), top, out);
            } else {
                let rel = e.path().strip_prefix(top).unwrap().to_owned();
                let mode = e.metadata().unwrap().permissions().mode() & 0o7777;
                out.push(format!("{} {mode:o}", rel.display()));
            }
        }
    }
    let mut out = Vec::new();
    walk(queue, queue, &mut out);
    out.sort();
    out
}

/// `postsuper -d ALL`, with no queue named, with message queues named and
/// with a log directory named, several operations at once, forced
/// expiration, and the other operations on ALL, each on two copies of one
/// queue: Debian's postsuper and postfix-rs's leave the same files with the
/// same modes, print the same and exit alike.
#[test]
fn postsuper_delete_all_leaves_what_debians_postsuper_leaves() {
    if !nix::unistd::Uid::effective().is_root() {
        return eprintln!("skipped: Debian's postsuper runs as root");
    }
    let postfix = nix::unistd::User::from_name("postfix")
        .unwrap()
        .expect("user postfix (scripts/setup)");
    let cases: [&[&str]; 11] = [
        &["-d", "ALL"],
        &["-d", "ALL", "deferred", "hold"],
        &["-d", "ALL", "defer"],
        &["-d", "ALL", "nosuchqueue"],
        // One by one in the order given, a bad ID passed over with a
        // warning, the summaries in Postfix's order.
        &[
            "-h",
            "5B2C41A0F5",
            "-d",
            "5B2C41A0F5",
            "-d",
            "bad!id",
            "-r",
            "5B2C41A0F4",
        ],
        // Forced expiration: a deferred message, a held one (which stays
        // held), one still being written (passed over), then -f releasing
        // the held one that is marked already.
        &[
            "-e",
            "5B2C41A0F5",
            "-e",
            "5B2C41A0F7",
            "-e",
            "5B2C41A0F3",
            "-f",
            "5B2C41A0F7",
        ],
        &["-e", "ALL"],
        &["-f", "ALL", "deferred", "hold"],
        // The other operations on ALL walk the directories as Postfix's
        // does, with its warning for a name that is no queue ID.
        &["-h", "ALL"],
        &["-H", "ALL"],
        &["-r", "ALL", "deferred"],
    ];
    for args in cases {
        let debian = testkit::debian::Postfix::new(None, "");
        let ours = Instance::new("", "");
        every_kind_of_file(&debian.queue, &postfix);
        every_kind_of_file(&ours.queue, &postfix);
        let theirs = debian.run("postsuper", args);
        let mine = ours.run("postsuper", args);
        let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(
            (mine.status.code(), text(&mine)),
            (theirs.status.code(), text(&theirs)),
            "postsuper {args:?}: postfix-rs's status and stderr, then Debian's"
        );
        assert_eq!(
            files_in(&ours.queue),
            files_in(&debian.queue),
            "postsuper {args:?}: files left by postfix-rs, then by Debian's postsuper"
        );
    }
}
