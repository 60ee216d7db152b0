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
