//! local(8) beyond aliases: users' `.forward` files (`forward_path`),
//! `mailbox_command` (run as the user, with Postfix's environment and a
//! `From ` line first), `mailbox_transport` and its table (the mailbox
//! handed to another agent, which delivers and logs, for users the passwd
//! file knows or not), and for unknown users `fallback_transport`, its
//! table, and `luser_relay`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use testkit::{wait_for, Instance, MailInstance, Smtp};

fn send(m: &MailInstance, to: &[&str], subject: &str) -> String {
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    c.queued(
        "sender@example.org",
        to,
        format!("Subject: {subject}\r\n\r\nbody of {subject}\r\n").as_bytes(),
    )
}

/// Writes a file in a user's home, owned by the user, with `mode`.
fn home_file(m: &MailInstance, user: &str, name: &str, text: &str, mode: u32) {
    let home = m.home.join(user);
    let p = home.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    let meta = std::fs::metadata(&home).unwrap();
    use std::os::unix::fs::MetadataExt;
    nix::unistd::chown(&p, Some(meta.uid().into()), Some(meta.gid().into())).unwrap();
}

fn read_when(p: &Path, what: &str, m: &MailInstance) -> String {
    assert!(
        wait_for(Duration::from_secs(10), || std::fs::read_to_string(p)
            .is_ok_and(|t| t.contains(what))),
        "{} has no {what}:\n{}",
        p.display(),
        m.log_text()
    );
    std::fs::read_to_string(p).unwrap()
}

#[test]
fn dot_forward_files_forward_run_commands_as_the_user_and_keep_a_copy() {
    let m = Instance::mail("recipient_delimiter = +\n");
    m.start();
    let out = m.home.join("hadoop").join("from-forward");
    // A copy to openstack, one to hadoop's own mailbox (naming herself),
    // and a command run as hadoop.
    home_file(
        &m,
        "hadoop",
        ".forward",
        &format!(
            "# comment\nopenstack, hadoop\n\"|cat > {} ; id -u >> {}\"\n",
            out.display(),
            out.display()
        ),
        0o644,
    );
    let id = send(&m, &["hadoop@ywnds.com"], "forwarded");
    assert!(
        String::from_utf8_lossy(&m.wait_maildir("openstack", 1)[0]).contains("body of forwarded")
    );
    assert!(String::from_utf8_lossy(&m.wait_maildir("hadoop", 1)[0]).contains("body of forwarded"));
    let got = read_when(&out, "body of forwarded", &m);
    let uid = std::fs::metadata(m.home.join("hadoop"))
        .map(|md| std::os::unix::fs::MetadataExt::uid(&md))
        .unwrap();
    assert!(got.starts_with("From sender@example.org  "), "{got}");
    assert!(got.trim_end().ends_with(&uid.to_string()), "{got}");
    assert!(
        m.wait_log(
            &format!("{id}: to=<hadoop@ywnds.com>, relay=local,"),
            Duration::from_secs(10)
        ),
        "{}",
        m.log_text()
    );
    // A world-writable .forward is ignored, with Postfix's warning: the
    // mailbox gets the mail.
    home_file(&m, "hadoop", ".forward", "openstack\n", 0o666);
    send(&m, &["hadoop@ywnds.com"], "not forwarded");
    assert_eq!(m.wait_maildir("hadoop", 2).len(), 2);
    assert!(m.log_text().contains("/.forward is world writable"));
    assert_eq!(m.exactly("openstack", 1).len(), 1);
    // `.forward+ext` for mail to hadoop+ext, before `.forward`.
    home_file(&m, "hadoop", ".forward", "hadoop\n", 0o644);
    home_file(&m, "hadoop", ".forward+lists", "openstack+lists\n", 0o644);
    send(&m, &["hadoop+lists@ywnds.com"], "extension");
    let o = m.wait_maildir("openstack", 2);
    assert!(
        o.iter().any(|x| String::from_utf8_lossy(x)
            .contains("Delivered-To: openstack+lists@ywnds.com")),
        "{}",
        m.log_text()
    );
    assert_eq!(m.exactly("hadoop", 2).len(), 2);
}

/// Two users forwarding to each other: the second time round, the
/// `Delivered-To:` header names the recipient and the mail bounces
/// (`5.4.6 mail forwarding loop`), as Postfix's local does at every level,
/// long before `hopcount_limit`.
#[test]
fn mutual_forward_files_bounce_as_a_forwarding_loop() {
    let m = Instance::mail("");
    m.start();
    home_file(&m, "hadoop", ".forward", "openstack\n", 0o644);
    home_file(&m, "openstack", ".forward", "hadoop\n", 0o644);
    send(&m, &["hadoop@ywnds.com"], "looping");
    assert!(
        m.wait_log(
            "to=<hadoop@ywnds.com>, relay=local, delay=",
            Duration::from_secs(10)
        ) && m.wait_log(
            "status=bounced (mail forwarding loop for hadoop@ywnds.com)",
            Duration::from_secs(10)
        ),
        "{}",
        m.log_text()
    );
    std::thread::sleep(Duration::from_millis(500));
    let log = m.log_text();
    assert_eq!(log.matches("forwarded as ").count(), 1, "{log}");
    assert!(!log.contains("too many hops"), "{log}");
    assert_eq!(m.exactly("hadoop", 0).len(), 0);
    assert_eq!(m.exactly("openstack", 0).len(), 0);
}

#[test]
fn mailbox_command_gets_the_message_and_postfixs_environment() {
    let m = Instance::mail(
        "recipient_delimiter = +\n\
         mailbox_command = /bin/sh -c 'cat > $HOME/delivered; env | sort > $HOME/env; exit ${EXTENSION}0'\n",
    );
    m.start();
    send(&m, &["hadoop+7@ywnds.com"], "to a command");
    let home = m.home.join("hadoop");
    let got = read_when(&home.join("delivered"), "body of to a command", &m);
    assert!(got.starts_with("From sender@example.org  "), "{got}");
    assert!(
        got.contains("\nReturn-Path: <sender@example.org>\nX-Original-To: hadoop+7@ywnds.com\nDelivered-To: hadoop+7@ywnds.com\n"),
        "{got}"
    );
    let env = read_when(&home.join("env"), "SENDER=", &m);
    for want in [
        "SENDER=sender@example.org",
        "RECIPIENT=hadoop+7@ywnds.com",
        "USER=hadoop",
        "LOGNAME=hadoop",
        "EXTENSION=7",
        "LOCAL=hadoop+7",
        "DOMAIN=ywnds.com",
        &format!("HOME={}", home.display()),
        "SHELL=/bin/sh",
        "CLIENT_ADDRESS=127.0.0.1",
    ] {
        assert!(env.lines().any(|l| l == want), "{want}:\n{env}");
    }
    // The command exits 70 (EX_SOFTWARE): bounced with sysexits' text.
    assert!(
        m.wait_log(
            "to=<hadoop+7@ywnds.com>, relay=local, delay=",
            Duration::from_secs(10)
        ),
        "{}",
        m.log_text()
    );
    assert!(
        m.log_text()
            .contains("dsn=5.3.0, status=bounced (internal software error)"),
        "{}",
        m.log_text()
    );
}

/// An instance with a pipe service `mbx` that writes each message to
/// `DIR/USER-NEXTHOP`; the directory.
fn with_mbx(extra: &str) -> (MailInstance, std::path::PathBuf) {
    let m = Instance::mail(extra);
    let spool = m.root.path().join("mbx");
    std::fs::create_dir(&spool).unwrap();
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o1777)).unwrap();
    m.add_script(
        "mbx-deliver",
        &format!("#!/bin/sh\ncat > {}/$1-$2\n", spool.display()),
    );
    let mut master = std::fs::read_to_string(m.etc.join("master.cf")).unwrap();
    master.push_str(&format!(
        "mbx unix - n n - - pipe user=nobody argv={} ${{user}} ${{nexthop}}\n",
        m.libexec.join("mbx-deliver").display()
    ));
    m.write_master_cf(&master);
    m.start();
    (m, spool)
}

#[test]
fn mailbox_transport_takes_every_recipient_and_its_table_comes_first() {
    // Unknown users must get past smtpd (Postfix's docs: an empty
    // local_recipient_maps when the mailbox server knows the users).
    let (m, spool) = with_mbx(
        "mailbox_transport = mbx\nmailbox_transport_maps = inline:{hadoop=mbx:special}\n\
         local_recipient_maps =\n",
    );
    let id = send(
        &m,
        &[
            "openstack@ywnds.com",
            "hadoop@ywnds.com",
            "stranger@ywnds.com",
        ],
        "passed on",
    );
    read_when(
        &spool.join("openstack-mail.ywnds.com"),
        "body of passed on",
        &m,
    );
    read_when(&spool.join("hadoop-special"), "body of passed on", &m);
    read_when(
        &spool.join("stranger-mail.ywnds.com"),
        "body of passed on",
        &m,
    );
    // The pipe agent logged them; local did not log them again.
    assert!(
        m.wait_log(
            &format!("{id}: to=<openstack@ywnds.com>, relay=mbx,"),
            Duration::from_secs(10)
        ),
        "{}",
        m.log_text()
    );
    assert!(!m.log_text().contains("relay=local"), "{}", m.log_text());
    assert!(m.maildir("openstack").is_empty());
}

#[test]
fn unknown_users_go_to_fallback_transport_or_luser_relay() {
    let (m, spool) = with_mbx(
        "fallback_transport = mbx:elsewhere\nfallback_transport_maps = inline:{vip=mbx:vipdesk}\n\
         local_recipient_maps =\n",
    );
    let id = send(
        &m,
        &["stranger@ywnds.com", "vip@ywnds.com", "openstack@ywnds.com"],
        "fallback",
    );
    read_when(&spool.join("stranger-elsewhere"), "body of fallback", &m);
    read_when(&spool.join("vip-vipdesk"), "body of fallback", &m);
    assert_eq!(m.wait_maildir("openstack", 1).len(), 1);
    assert!(m
        .log_text()
        .contains(&format!("{id}: to=<stranger@ywnds.com>, relay=mbx,")));

    // luser_relay: unknown users' mail goes to another address.
    let m = Instance::mail(
        "luser_relay = openstack+$user\nrecipient_delimiter = +\nlocal_recipient_maps =\n",
    );
    m.start();
    send(&m, &["nobody-here@ywnds.com"], "lost user");
    let got = m.wait_maildir("openstack", 1);
    assert!(
        String::from_utf8_lossy(&got[0]).contains("Delivered-To: openstack+nobody-here@ywnds.com"),
        "{}",
        String::from_utf8_lossy(&got[0])
    );
}

/// `:include:` files as Postfix's local takes them: listed in the alias
/// database, a user's file runs its commands with her rights; named in a
/// `.forward`, it is looked at and opened with that user's rights (a file
/// she may not read bounces and leaks nothing); world-writable, special or
/// relative ones bounce with `5.3.5 mail system configuration error`.
/// `luser_relay` is one address, never a command.
#[test]
fn include_files_are_opened_and_run_with_the_right_users_rights() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: users' own rights need root");
        return;
    }
    let m = Instance::mail(
        "allow_mail_to_commands = alias, forward, include\nlocal_recipient_maps =\n",
    );
    let hadoop_home = m.home.join("hadoop");
    let who = hadoop_home.join("who");
    home_file(
        &m,
        "hadoop",
        "list",
        &format!("\"|id -u > {}\"\n", who.display()),
        0o644,
    );
    // Only root may read it.
    let secret = m.root.path().join("secret.list");
    std::fs::write(&secret, "openstack\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    home_file(
        &m,
        "hadoop",
        ".forward",
        &format!(":include:{}\n", secret.display()),
        0o644,
    );
    let open = m.root.path().join("open.list");
    std::fs::write(&open, "openstack\n").unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).unwrap();
    m.set_aliases(&format!(
        "team: :include:{}\nopen: :include:{}\nspecial: :include:/dev/null\nrelative: :include:x.list\n",
        hadoop_home.join("list").display(),
        open.display()
    ));
    m.start();
    let id = send(
        &m,
        &[
            "team@ywnds.com",
            "hadoop@ywnds.com",
            "open@ywnds.com",
            "special@ywnds.com",
            "relative@ywnds.com",
        ],
        "include",
    );
    let uid = std::fs::metadata(&hadoop_home)
        .map(|md| std::os::unix::fs::MetadataExt::uid(&md))
        .unwrap();
    assert_eq!(read_when(&who, "\n", &m).trim(), uid.to_string());
    for (rcpt, warning) in [
        (
            "hadoop",
            format!(
                "cannot open include file {}: Permission denied",
                secret.display()
            ),
        ),
        (
            "open",
            format!(":include: file {} is world writable", open.display()),
        ),
        (
            "special",
            ":include: file /dev/null is not a regular file".to_owned(),
        ),
        (
            "relative",
            ":include:x.list uses a relative path".to_owned(),
        ),
    ] {
        let line = m.log_line(&format!("{id}: to=<{rcpt}@ywnds.com>"));
        assert!(
            line.contains("dsn=5.3.5, status=bounced (mail system configuration error)"),
            "{line}"
        );
        assert!(
            m.log_text().contains(&warning),
            "{warning}\n{}",
            m.log_text()
        );
    }
    assert!(m.maildir("openstack").is_empty());

    // luser_relay names an address, not a command to run.
    let marker = m.root.path().join("ran");
    let m = Instance::mail(&format!(
        "luser_relay = |/bin/touch {}\nlocal_recipient_maps =\n",
        marker.display()
    ));
    m.start();
    let id = send(&m, &["stranger@ywnds.com"], "no command");
    let line = m.log_line("orig_to=<stranger@ywnds.com>");
    assert!(
        line.contains(&format!("{id}: ")) && line.contains("status=bounced (unknown user"),
        "{line}"
    );
    assert!(!marker.exists());
}

/// An alias table root does not own lends its owner's rights, not root's:
/// its `:include:` files are opened and its commands run as that owner, as
/// Postfix's local does; tables of two different owners joined have no
/// owner to go by, and their aliases wait.
#[test]
fn an_alias_table_owned_by_a_user_gives_that_users_rights() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: users' own rights need root");
        return;
    }
    let daemon = nix::unistd::User::from_name("daemon").unwrap().unwrap();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let root = tempfile::Builder::new()
        .prefix("pfx-owned-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = root.path().join("out");
    std::fs::create_dir(&out).unwrap();
    nix::unistd::chown(&out, Some(daemon.uid), Some(daemon.gid)).unwrap();
    let who = out.join("who");
    // Only root may read it.
    let secret = root.path().join("secret.list");
    std::fs::write(&secret, "openstack\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let users = root.path().join("user-aliases");
    std::fs::write(
        &users,
        format!(
            "leak :include:{}\ncmd \"|id -u > {}\"\n",
            secret.display(),
            who.display()
        ),
    )
    .unwrap();
    nix::unistd::chown(&users, Some(daemon.uid), Some(daemon.gid)).unwrap();
    let other = root.path().join("other-aliases");
    std::fs::write(&other, "someone openstack\n").unwrap();
    nix::unistd::chown(&other, Some(nobody.uid), Some(nobody.gid)).unwrap();
    let m = Instance::mail(&format!(
        "allow_mail_to_commands = alias, forward, include\nlocal_recipient_maps =\n\
         alias_maps = hash:$config_directory/aliases, texthash:{u}, \
         unionmap:{{texthash:{u}, texthash:{o}}}\n",
        u = users.display(),
        o = other.display()
    ));
    m.set_aliases("postmaster: root\nroot: openstack\n");
    // The instance's passwd file knows the tables' owners too.
    let mut passwd = std::fs::read_to_string(m.etc.join("passwd")).unwrap();
    for u in [&daemon, &nobody] {
        passwd.push_str(&format!("{}:x:{}:{}::/:/bin/sh\n", u.name, u.uid, u.gid));
    }
    std::fs::write(m.etc.join("passwd"), passwd).unwrap();
    m.start();
    let id = send(&m, &["leak@ywnds.com", "cmd@ywnds.com"], "owned");
    assert_eq!(
        read_when(&who, "\n", &m).trim(),
        daemon.uid.as_raw().to_string()
    );
    let line = m.log_line(&format!("{id}: to=<leak@ywnds.com>"));
    assert!(
        line.contains("dsn=5.3.5, status=bounced (mail system configuration error)"),
        "{line}"
    );
    let denied = format!(
        "cannot open include file {}: Permission denied",
        secret.display()
    );
    assert!(m.log_text().contains(&denied), "{}", m.log_text());
    assert!(m.maildir("openstack").is_empty());

    // The joined tables answer `someone`, but nobody vouches for them.
    let id = send(&m, &["someone@ywnds.com"], "mixed");
    let line = m.log_line(&format!("{id}: to=<someone@ywnds.com>"));
    assert!(
        line.contains("dsn=4.3.0, status=deferred (mail system configuration error)"),
        "{line}"
    );
    assert!(m
        .log_text()
        .contains("no owner UID for alias database unionmap:"));
}

/// Each delivery line of a log as `to orig_to status (text)`, queue IDs
/// and ports left out, sorted.
fn delivery_lines(log: &str) -> Vec<String> {
    let field = |l: &str, name: &str| -> String {
        l.split(&format!(" {name}=<"))
            .nth(1)
            .and_then(|s| s.split('>').next())
            .unwrap_or("")
            .to_owned()
    };
    let mut out: Vec<String> = log
        .lines()
        .filter(|l| l.contains(" to=<") && l.contains(" status="))
        .map(|l| {
            let status = l.split(" status=").nth(1).unwrap_or("");
            let status: String = status
                .split(' ')
                .map(|w| {
                    let id = w.trim_end_matches(')');
                    if id.len() >= 10 && id.chars().all(|c| c.is_ascii_hexdigit()) {
                        w.replace(id, "ID")
                    } else {
                        w.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join(" ");
            format!(
                "to={} orig_to={} {status}",
                field(l, "to"),
                field(l, "orig_to")
            )
            .replace(|c: char| c.is_ascii_digit(), "")
        })
        .collect();
    out.sort();
    out
}

/// Lists with an `owner-` alias, include files and plain aliases, side
/// by side with Debian's Postfix: a list with an owner is sent on from
/// `owner-list@`, as new mail, even to its local users; an include file's
/// local users get the message anew too; a plain alias delivers its local
/// users at once. The same delivery lines, the same envelopes at the next
/// hop, the same `Received: by` and `Delivered-To:` on what is sent on.
#[test]
fn lists_with_owners_and_include_files_send_on_as_debian_postfix() {
    let Some(both) = crate::sidebyside::side_by_side_with(
        "mynetworks = 127.0.0.1/32\nsmtpd_peername_lookup = no\nlocal_recipient_maps =\n\
         myhostname = mail.ywnds.com\nmydomain = ywnds.com\nmydestination = ywnds.com\n\
         myorigin = ywnds.com\nalias_maps = texthash:TABLES/aliases\n\
         mail_spool_directory = TABLES/spool\nrelayhost = [127.0.0.1]:SINK\n",
        "local_passwd_file =\nhome_mailbox =\n",
        &[
            (
                "aliases",
                "list nobody, far@remote.example\nowner-list boss@remote.example\n\
                 team nobody, x@remote.example\ninc :include:TABLES/inc.list\n\
                 mixed nosuchuser, z@remote.example\n",
            ),
            ("inc.list", "nobody\ny@remote.example\n"),
        ],
    ) else {
        return;
    };
    let dir = both.tables.path().to_owned();
    let aliases = std::fs::read_to_string(dir.join("aliases")).unwrap();
    std::fs::write(
        dir.join("aliases"),
        aliases.replace("TABLES", &dir.display().to_string()),
    )
    .unwrap();
    let spool = dir.join("spool");
    std::fs::create_dir(&spool).unwrap();
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o1777)).unwrap();
    // The tables are read when the daemons start: both restart on them.
    both.pf.run("postfix", &["reload"]);
    both.m.run("postfix", &["reload"]);
    std::thread::sleep(Duration::from_secs(1));
    crate::sidebyside::same_replies(
        &both,
        "127.0.0.1",
        &[
            "EHLO client.example",
            "MAIL FROM:<sender@client.example>",
            "RCPT TO:<list@ywnds.com>",
            "RCPT TO:<team@ywnds.com>",
            "RCPT TO:<inc@ywnds.com>",
            "RCPT TO:<mixed@ywnds.com>",
            "DATA",
            "Subject: lists\r\n\r\nbody\r\n",
            "QUIT",
        ],
    );
    // list: nobody, far (anew); team: nobody, x (anew); inc: nobody, y
    // (anew); mixed: an unknown user bounces, z still gets it (anew):
    // then the new messages' deliveries and the notice.
    let settled = |log: &str| delivery_lines(log).len() >= 13;
    assert!(wait_for(Duration::from_secs(30), || {
        settled(&both.pf.log_text()) && settled(&both.m.log_text())
    }));
    std::thread::sleep(Duration::from_millis(500));
    let (theirs, ours) = (
        delivery_lines(&both.pf.log_text()),
        delivery_lines(&both.m.log_text()),
    );
    assert_eq!(
        theirs,
        ours,
        "Postfix:\n{theirs:#?}\npostfix-rs:\n{ours:#?}\npostfix-rs log:\n{}",
        both.m.log_text()
    );
    let sent_on = |mx: &testkit::fake_mx::FakeMx| {
        let mut v: Vec<String> = mx
            .accepted()
            .iter()
            .map(|a| {
                let text = String::from_utf8_lossy(&a.data);
                let heads: Vec<&str> = text
                    .lines()
                    .take_while(|l| !l.is_empty())
                    .filter(|l| l.starts_with("Received: by") || l.starts_with("Delivered-To:"))
                    .collect();
                // SIZE counts queue IDs, whose lengths differ.
                let sender: String = a.sender.chars().filter(|c| !c.is_ascii_digit()).collect();
                format!("{sender} -> {:?} {heads:?}", a.recipients)
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(sent_on(&both.theirs_mx), sent_on(&both.ours_mx));
    assert!(sent_on(&both.ours_mx)
        .iter()
        .any(|e| e.starts_with("owner-list@ywnds.com -> [\"far@remote.example\"]")));
}
