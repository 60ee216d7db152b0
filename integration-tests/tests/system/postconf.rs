//! postconf(1) output and editing, compared with Postfix's formats.

use testkit::Instance;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const MASTER: &str = "smtp      inet  n       -       n       -       -       smtpd\npickup    unix  n       -       n       60      1       pickup\nrelay     unix  -       -       n       -       -       smtp\n  -o syslog_name=postfix/$service_name\n";

#[test]
fn defaults_are_postfix_defaults_sorted_by_name() {
    let inst = Instance::new(MASTER, "");
    let out = inst.run("postconf", &["-d"]);
    assert!(out.status.success());
    let text = stdout(&out);
    for line in [
        "myorigin = $myhostname",
        "mydestination = $myhostname, localhost.$mydomain, localhost",
        "message_size_limit = 10240000",
        "mailbox_size_limit = 51200000",
        "bounce_queue_lifetime = 5d",
        "maximal_queue_lifetime = 5d",
        "home_mailbox =",
        "smtpd_relay_restrictions = ${{$compatibility_level} <level {1} ? {} : {permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination}}",
        "compatibility_level = 0",
        "smtpd_forbid_bare_newline = normalize",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?}");
    }
    let names: Vec<&str> = text
        .lines()
        .map(|l| l.split(" =").next().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
}

#[test]
fn non_default_shows_only_main_cf_settings_and_values_can_be_expanded() {
    let inst = Instance::new(
        MASTER,
        "mydestination = $myhostname, localhost.$mydomain, localhost, $mydomain\n",
    );
    let out = inst.run("postconf", &["-n"]);
    let text = stdout(&out);
    let names: Vec<&str> = text
        .lines()
        .map(|l| l.split(" =").next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "compatibility_level",
            "config_directory",
            "daemon_directory",
            "maillog_file",
            "maillog_file_prefixes",
            "mydestination",
            "mydomain",
            "myhostname",
            "myorigin",
            "queue_directory",
            "service_throttle_time"
        ]
    );
    assert!(text.contains("myorigin = $mydomain\n"));
    let out = inst.run("postconf", &["-x", "myorigin", "mydestination"]);
    assert_eq!(stdout(&out), "myorigin = ywnds.com\nmydestination = mail.ywnds.com, localhost.ywnds.com, localhost, ywnds.com\n");
    let out = inst.run("postconf", &["-h", "myorigin"]);
    assert_eq!(stdout(&out), "$mydomain\n");
    let out = inst.run("postconf", &["-hx", "myorigin"]);
    assert_eq!(stdout(&out), "ywnds.com\n");
}

#[test]
fn mail_config_environment_selects_the_instance() {
    let inst = Instance::new(MASTER, "");
    let out = std::process::Command::new(testkit::bin("postconf"))
        .env("MAIL_CONFIG", &inst.etc)
        .args(["-h", "myhostname"])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "mail.ywnds.com\n");
}

#[test]
fn unknown_and_unused_parameters_are_warnings() {
    let inst = Instance::new(
        MASTER,
        "frobnicate = yes\nmy_nets = 10.0.0.0/8\nmynetworks = $my_nets\n",
    );
    let out = inst.run("postconf", &["no_such_thing", "mynetworks"]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), "mynetworks = $my_nets\n");
    let err = stderr(&out);
    assert!(
        err.contains("postconf: warning: no_such_thing: unknown parameter"),
        "{err}"
    );
    let main_cf = inst.etc.join("main.cf");
    assert!(
        err.contains(&format!(
            "postconf: warning: {}, line 11: unused parameter: frobnicate=yes",
            main_cf.display()
        )),
        "{err}"
    );
    assert!(
        !err.contains("my_nets="),
        "a referenced parameter is not unused: {err}"
    );
}

#[test]
fn edit_changes_main_cf_in_place_and_keeps_comments() {
    let inst = Instance::new(MASTER, "# keep me\nrelayhost = [old.example]:25\n  # indented comment\nmessage_size_limit = 1000\n");
    let before = std::fs::read_to_string(inst.etc.join("main.cf")).unwrap();
    let out = inst.run(
        "postconf",
        &[
            "-e",
            "relayhost = [mx.ywnds.com]:2525",
            "mailbox_size_limit=0",
            "message_size_limit=20480000",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let after = std::fs::read_to_string(inst.etc.join("main.cf")).unwrap();
    let expected = before
        .replace(
            "relayhost = [old.example]:25",
            "relayhost = [mx.ywnds.com]:2525",
        )
        .replace("message_size_limit = 1000", "message_size_limit = 20480000")
        + "mailbox_size_limit = 0\n";
    assert_eq!(after, expected);
    let out = inst.run("postconf", &["-h", "relayhost", "mailbox_size_limit"]);
    assert_eq!(stdout(&out), "[mx.ywnds.com]:2525\n0\n");
    let out = inst.run("postconf", &["-X", "relayhost"]);
    assert!(out.status.success());
    assert!(!std::fs::read_to_string(inst.etc.join("main.cf"))
        .unwrap()
        .contains("relayhost"));
    let leftovers: Vec<_> = std::fs::read_dir(&inst.etc)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        2,
        "temporary files left behind: {leftovers:?}"
    );
}

#[test]
fn malformed_main_cf_is_fatal_with_file_and_line() {
    let inst = Instance::new(MASTER, "ok = 1\n  continued\nbroken line here\n");
    let out = inst.run("postconf", &["-n"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!("postconf: fatal: {}, line 13: missing '=' after attribute name: \"broken line here\"\n", inst.etc.join("main.cf").display())
    );
}

/// A configuration directory without main.cf, as Debian's postconf says it.
#[test]
fn a_missing_main_cf_is_named_as_debians_postconf_names_it() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("nonexistent");
    let run = |program: &std::path::Path| {
        let out = std::process::Command::new(program)
            .arg0("postconf")
            .arg("-c")
            .arg(&gone)
            .arg("-n")
            .output()
            .unwrap();
        (out.status.code(), stderr(&out))
    };
    let ours = run(&testkit::bin("postconf"));
    assert_eq!(ours, run(std::path::Path::new("/usr/sbin/postconf")));
    assert_eq!(
        ours.1,
        format!(
            "postconf: fatal: open {}/main.cf: No such file or directory\n",
            gone.display()
        )
    );
}

#[test]
fn master_cf_entries_print_in_postfix_layout() {
    let inst = Instance::new(MASTER, "");
    let out = inst.run("postconf", &["-M"]);
    assert_eq!(
        stdout(&out),
        "smtp       inet  n       -       n       -       -       smtpd\npickup     unix  n       -       n       60      1       pickup\nrelay      unix  -       -       n       -       -       smtp -o syslog_name=postfix/$service_name\n"
    );
    let out = inst.run("postconf", &["-Mf", "relay/unix"]);
    assert_eq!(stdout(&out), "relay      unix  -       -       n       -       -       smtp\n    -o syslog_name=postfix/$service_name\n");
    let out = inst.run("postconf", &["-M", "pickup"]);
    assert!(stdout(&out).starts_with("pickup "));
}

#[test]
fn malformed_master_cf_is_fatal_with_file_and_line() {
    let inst = Instance::new("smtp inet n - n - - smtpd\n\nbad unix - - n - -\n", "");
    let out = inst.run("postconf", &["-M"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "postconf: fatal: {}, line 3: bad field count\n",
            inst.etc.join("master.cf").display()
        )
    );
}

#[test]
fn bad_option_prints_postfix_usage() {
    let out = std::process::Command::new(testkit::bin("postconf"))
        .arg("-Z")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.lines()
            .last()
            .unwrap()
            .starts_with("postconf: fatal: usage: postconf "),
        "{err}"
    );
    let out = std::process::Command::new(testkit::bin("postfix"))
        .arg("-Z")
        .arg("start")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("postfix: fatal: usage: postfix [-c config_dir] [-Dv] command"));
}

/// Debian's stock master.cf with a submission entry as a how-to adds it
/// (a value in braces among its -o lines), and an smtps entry with two
/// options in one word (`-vo name=value`). (A `-oname=value` word is left
/// out: Debian's postconf splits it at its last `o`, where getopt, and the
/// daemon that reads it, split at the first; postfix-rs splits as getopt.)
fn debian_master_cf() -> String {
    let stock = std::fs::read_to_string("/usr/share/postfix/master.cf.dist")
        .expect("Debian's postfix package (scripts/setup installs it)");
    format!(
        "{stock}submission inet n       -       y       -       -       smtpd\n  -o syslog_name=postfix/submission\n\
         \x20 -o smtpd_tls_security_level=encrypt\n  -o {{ smtpd_banner = hello world }}\n\
         smtps inet n - y - - smtpd -o smtpd_tls_wrappermode=yes -vo smtpd_sasl_auth_enable=yes\n"
    )
}

/// Runs a postconf with `-c dir` and `args`: exit code, stdout, stderr
/// (the directory named DIR), and the master.cf and main.cf it left.
fn postconf_in(
    program: &std::path::Path,
    dir: &std::path::Path,
    args: &[&str],
) -> (Option<i32>, String, String, String, String) {
    use std::os::unix::process::CommandExt;
    // Named as a user types it: Postfix's messages start with its argv[0].
    let out = std::process::Command::new(program)
        .arg0("postconf")
        .arg("-c")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    let d = dir.display().to_string();
    (
        out.status.code(),
        stdout(&out).replace(&d, "DIR"),
        stderr(&out).replace(&d, "DIR"),
        std::fs::read_to_string(dir.join("master.cf")).unwrap(),
        std::fs::read_to_string(dir.join("main.cf")).unwrap(),
    )
}

/// `postconf -M/-F/-P` shown and edited (`-e`, `-X`, `-#`), and `name=value`
/// without `-e`, on Debian's stock master.cf: the same output, exit status
/// and files as Debian's postconf, case by case.
#[test]
fn master_cf_fields_and_parameters_show_and_edit_as_debians_postconf() {
    let debian = std::path::Path::new("/usr/sbin/postconf");
    let cases: &[&[&str]] = &[
        &["-P"],
        &["-F", "submission/inet"],
        &["-Fh", "relay/unix/command"],
        &["-P", "submission/inet/smtpd_banner"],
        &["-PH", "submission/inet/syslog_name"],
        &["-Pe", "submission/inet/smtpd_tls_security_level=may"],
        &[
            "-Pe",
            "submission/inet/milter_macro_daemon_name=ORIGINATING",
            "relay/unix/a=b",
        ],
        &["-PX", "relay/unix/syslog_name"],
        &["-PX", "smtps/inet/smtpd_tls_wrappermode"],
        &[
            "-Pe",
            "smtps/inet/smtpd_sasl_auth_enable=no",
            "maildrop/unix/a=b",
        ],
        &["-Pe", "smtps/inet/*=x"],
        &["-F"],
        &["-Mf"],
        &["-n", "myhostname=x"],
        &["-FP", "smtps/inet"],
        &["-Pe", "nosuch/unix/a=b"],
        &["-Pe", "submission/inet/a=b c"],
        &[
            "-Me",
            "smtps/inet=smtps inet n - y - - smtpd -o smtpd_tls_wrappermode=yes",
        ],
        &["-Me", "relay/unix=relay unix - - n - - smtp"],
        &["-Me", "submission/inet=bad"],
        &["-MX", "submission/inet"],
        &["-M#", "pickup/unix", "relay/unix"],
        &["-Fe", "pickup/unix/wakeup=30"],
        &["-Fe", "relay/unix/command=smtp -o syslog_name=x"],
        &["-Fe", "smtp/inet/bogus=n"],
        &["myhostname=mail.example.com", "mydomain=example.com"],
        &["-X", "myhostname"],
    ];
    for args in cases {
        let (theirs, ours) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for d in [theirs.path(), ours.path()] {
            std::fs::write(d.join("master.cf"), debian_master_cf()).unwrap();
            std::fs::write(d.join("main.cf"), "myhostname = old.example.com\n").unwrap();
        }
        assert_eq!(
            postconf_in(&testkit::bin("postconf"), ours.path(), args),
            postconf_in(debian, theirs.path(), args),
            "postconf {args:?}: postfix-rs's (status, stdout, stderr, master.cf, main.cf), then Debian's"
        );
    }
}

#[test]
fn table_types_and_sasl_server_types_are_listed() {
    let inst = Instance::new(MASTER, "");
    let types = stdout(&inst.run("postconf", &["-m"]));
    for t in [
        "cidr", "lmdb", "pcre", "pgsql", "regexp", "texthash", "unix",
    ] {
        assert!(types.lines().any(|l| l == t), "{t} in {types}");
    }
    let mut sorted: Vec<&str> = types.lines().collect();
    sorted.sort_unstable();
    assert_eq!(sorted, types.lines().collect::<Vec<_>>());
    assert_eq!(stdout(&inst.run("postconf", &["-a"])), "dovecot\n");
}
