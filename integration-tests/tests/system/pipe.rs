//! pipe(8) with a script as the command: its arguments from the macros,
//! the message on its standard input as flags= say, and its exit status
//! read as Postfix's pipe reads it.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use testkit::{Instance, MailInstance, Smtp};

/// An instance whose `ptest` (flags FRD, one recipient) and `pmulti` (no
/// flags, many recipients) services run a script that records its
/// arguments and input in `out/`, prints `out/say` and exits with
/// `out/code`.
fn pipe_instance() -> (MailInstance, std::path::PathBuf) {
    let m = Instance::mail(
        "transport_maps = texthash:$config_directory/transport\nptest_destination_recipient_limit = 1\nrecipient_delimiter = +\n",
    );
    let out = m.root.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
    let script = m.root.path().join("cmd.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > {o}/argv.$$\ncat > {o}/stdin.$$\nenv > {o}/env.$$\ncat {o}/say 2>/dev/null\nexit $(cat {o}/code 2>/dev/null || echo 0)\n",
            o = out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let user = if nix::unistd::Uid::effective().is_root() {
        "nobody".to_owned()
    } else {
        nix::unistd::User::from_uid(nix::unistd::getuid())
            .unwrap()
            .unwrap()
            .name
    };
    let mut master = std::fs::read_to_string(m.etc.join("master.cf")).unwrap();
    master.push_str(&format!(
        "ptest unix - n n - - pipe\n  flags=FRD user={user} argv={s} ${{sender}} ${{recipient}} ${{nexthop}} ${{user}} ${{extension}}\n\
         pmulti unix - n n - - pipe\n  flags=q user={user} argv={s} -f ${{sender}} -- ${{recipient}}\n",
        s = script.display()
    ));
    m.write_master_cf(&master);
    std::fs::write(
        m.etc.join("transport"),
        "pipe.test ptest:hop.Example\nmulti.test pmulti:\n",
    )
    .unwrap();
    m.start();
    (m, out)
}

fn files(dir: &std::path::Path, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn pipe_runs_the_command_with_macros_flags_and_its_exit_status() {
    let (m, out) = pipe_instance();
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    c.queued(
        "alice@example.org",
        &["bob+box@pipe.test"],
        b"Subject: piped\r\n\r\nFrom here\r\nbody",
    );
    assert!(
        m.wait_log(
            "to=<bob+box@pipe.test>, relay=ptest,",
            Duration::from_secs(10)
        ),
        "{}",
        m.log_text()
    );
    assert!(
        m.log_text()
            .contains("dsn=2.0.0, status=sent (delivered via ptest service)"),
        "{}",
        m.log_text()
    );
    let argv = files(&out, "argv.");
    assert_eq!(
        argv,
        ["alice@example.org\nbob+box@pipe.test\nhop.Example\nbob\nbox\n"]
    );
    let stdin = files(&out, "stdin.").remove(0);
    let mut lines = stdin.lines();
    let from = lines.next().unwrap();
    assert!(from.starts_with("From alice@example.org  "), "{stdin}");
    assert_eq!(lines.next(), Some("Return-Path: <alice@example.org>"));
    assert_eq!(lines.next(), Some("Delivered-To: bob+box@pipe.test"));
    assert!(stdin.contains("\nSubject: piped\n"), "{stdin}");
    assert!(stdin.ends_with("\n\nFrom here\nbody\n"), "{stdin}");
    // A clean environment: export_environment's names and PATH.
    let env = files(&out, "env.").remove(0);
    assert!(env.lines().any(|l| l == "PATH=/usr/bin:/bin"), "{env}");
    assert!(!env.lines().any(|l| l.starts_with("HOME=")), "{env}");

    // Several recipients, one argument each.
    for f in std::fs::read_dir(&out).unwrap().flatten() {
        std::fs::remove_file(f.path()).unwrap();
    }
    c.queued(
        "alice@example.org",
        &["a@multi.test", "\"q u\"@multi.test"],
        b"Subject: two\r\n\r\nx",
    );
    assert!(
        m.wait_log("to=<a@multi.test>, relay=pmulti,", Duration::from_secs(10)),
        "{}",
        m.log_text()
    );
    assert_eq!(
        files(&out, "argv."),
        ["-f\nalice@example.org\n--\na@multi.test\n\"q u\"@multi.test\n"]
    );
}

#[test]
fn exit_statuses_defer_or_bounce_as_in_postfix() {
    let (m, out) = pipe_instance();
    let (mut c, _) = Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    for (code, say, rcpt, want) in [
        (
            "75",
            "",
            "t1@pipe.test",
            "dsn=4.3.0, status=deferred (temporary failure)",
        ),
        (
            "67",
            "",
            "t2@pipe.test",
            "dsn=5.1.1, status=bounced (user unknown)",
        ),
        (
            "1",
            "4.2.2 mailbox full, try later",
            "t3@pipe.test",
            "dsn=4.2.2, status=deferred (mailbox full, try later )",
        ),
        (
            "1",
            "some output",
            "t4@pipe.test",
            "dsn=5.3.0, status=bounced (Command died with status 1: \"",
        ),
        (
            "0",
            "captured ok",
            "t5@pipe.test",
            "dsn=2.0.0, status=sent (delivered via ptest service (captured ok))",
        ),
    ] {
        std::fs::write(out.join("code"), code).unwrap();
        let say = if say.is_empty() {
            String::new()
        } else {
            format!("{say}\n")
        };
        std::fs::write(out.join("say"), say).unwrap();
        c.queued("alice@example.org", &[rcpt], b"Subject: x\r\n\r\nx");
        let line = format!("to=<{rcpt}>, relay=ptest,");
        assert!(
            m.wait_log(&line, Duration::from_secs(10)),
            "{}",
            m.log_text()
        );
        let log = m.log_text();
        let got = log.lines().find(|l| l.contains(&line)).unwrap();
        assert!(got.contains(want), "{got}");
    }
}
