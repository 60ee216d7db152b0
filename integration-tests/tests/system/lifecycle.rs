//! master supervision, driven through the `postfix` command.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use testkit::{alive, free_port, wait_for, Instance};

const TWO_SERVICES: &str =
    "alpha unix - - n - - fixture-service\nbeta unix - - n - - fixture-service\n";

fn kill9(pid: i32) {
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
}

#[test]
fn start_status_and_stop_leave_nothing_running() {
    let port = free_port();
    let inst = Instance::new(
        &format!("{TWO_SERVICES}127.0.0.1:{port} inet n - n - - fixture-service\n"),
        "",
    );
    let err = inst.postfix("start");
    assert!(
        err.contains("postfix/postfix-script: starting the Postfix mail system"),
        "{err}"
    );
    let master = inst.master_pid().expect("master runs after start");
    let out = inst.run("postfix", &["status"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("postfix/postfix-script: the Postfix mail system is running: PID: {master}\n")
    );
    let pids = inst.wait_children(&["alpha", "beta", &format!("127.0.0.1:{port}")]);
    assert!(inst.log_text().contains(&format!(
        "postfix/master[{master}]: daemon started -- version"
    )));

    // The inet service answers on its loopback port, the unix ones on their sockets.
    let mut banner = String::new();
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 128];
    let n = tcp.read(&mut buf).unwrap();
    banner.push_str(&String::from_utf8_lossy(&buf[..n]));
    assert!(
        banner.starts_with(&format!("service=127.0.0.1:{port} pid=")),
        "{banner}"
    );
    assert!(UnixStream::connect(inst.queue.join("private/alpha")).is_ok());
    drop(tcp);

    let err = inst.postfix("stop");
    assert!(err.contains("stopping the Postfix mail system"), "{err}");
    assert!(
        wait_for(Duration::from_secs(5), || !alive(master)
            && pids.iter().all(|&p| !alive(p))),
        "processes left after stop"
    );
    let out = inst.run("postfix", &["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the Postfix mail system is not running"));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port still open after stop"
    );
}

#[test]
fn killed_child_is_restarted_alone() {
    let inst = Instance::new(TWO_SERVICES, "");
    inst.postfix("start");
    let [a, b] = inst.wait_children(&["alpha", "beta"])[..] else {
        unreachable!()
    };
    kill9(a);
    let mut new_a = None;
    assert!(wait_for(Duration::from_secs(5), || {
        new_a = inst.child_pid("alpha").filter(|&p| p != a);
        new_a.is_some()
    }));
    assert_eq!(
        inst.child_pid("beta"),
        Some(b),
        "the other service keeps its pid"
    );
    assert!(
        inst.wait_log(
            &format!("fixture-service pid {a} killed by signal 9"),
            Duration::from_secs(2)
        ),
        "{}",
        inst.log_text()
    );
    // The new child serves the same socket.
    let mut s = UnixStream::connect(inst.queue.join("private/alpha")).unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains(&format!("pid={}", new_a.unwrap())));
}

#[test]
fn service_that_fails_at_startup_is_throttled_not_respawned_in_a_loop() {
    let inst = Instance::new(
        "alpha unix - - n - - fixture-service\nbroken unix - - n - - broken\n",
        "",
    );
    inst.add_script("broken", "#!/bin/sh\nexit 1\n");
    inst.postfix("start");
    inst.wait_children(&["alpha"]);
    // service_throttle_time is 2s in test instances: within 3s at most two more tries.
    std::thread::sleep(Duration::from_secs(3));
    let log = inst.log_text();
    let tries = log
        .matches("broken: bad command startup -- throttling")
        .count();
    assert!(
        (1..=3).contains(&tries),
        "{tries} startup attempts in 3s:\n{log}"
    );
    assert!(
        log.contains("/broken pid ") && log.contains(" exit status 1"),
        "{log}"
    );
    assert!(inst.child_pid("alpha").is_some());
}

#[test]
fn reload_restarts_only_changed_services_and_others_reread_main_cf() {
    let inst = Instance::new(
        "alpha unix - - n - - fixture-service\nbeta unix - - n - - fixture-service\ngamma unix - - n - - fixture-service\n",
        "",
    );
    inst.postfix("start");
    let [a, b, g] = inst.wait_children(&["alpha", "beta", "gamma"])[..] else {
        unreachable!()
    };
    // beta changes, gamma goes away, delta is new; main.cf changes too.
    inst.write_master_cf("alpha unix - - n - - fixture-service\nbeta unix - - n - 7 fixture-service\ndelta unix - - n - - fixture-service\n");
    let out = inst.run("postconf", &["-e", "myhostname=reloaded.ywnds.com"]);
    assert!(out.status.success());
    let err = inst.postfix("reload");
    assert!(err.contains("refreshing the Postfix mail system"), "{err}");
    assert!(inst.wait_log("reload -- version", Duration::from_secs(5)));
    // The old beta may still be exiting when the reload is logged.
    assert!(
        wait_for(Duration::from_secs(5), || inst
            .child_pid("beta")
            .is_some_and(|p| p != b)),
        "changed service restarted"
    );
    let [a2, _b2, _d] = inst.wait_children(&["alpha", "beta", "delta"])[..] else {
        unreachable!()
    };
    assert_eq!(a2, a, "unchanged service keeps running");
    assert!(
        wait_for(Duration::from_secs(5), || !alive(g)
            && inst.child_pid("gamma").is_none()),
        "removed service stopped"
    );
    assert!(
        !inst.queue.join("private/gamma").exists(),
        "removed service's socket is gone"
    );
    assert!(
        inst.wait_log(
            &format!("fixture-service[{a}]: fixture: alpha myhostname=reloaded.ywnds.com"),
            Duration::from_secs(5)
        ),
        "unchanged service re-read main.cf:\n{}",
        inst.log_text()
    );
}

#[test]
fn reload_with_broken_master_cf_is_refused_and_nothing_changes() {
    let inst = Instance::new(TWO_SERVICES, "");
    inst.postfix("start");
    let pids = inst.wait_children(&["alpha", "beta"]);
    inst.write_master_cf(
        "alpha unix - - n - - fixture-service\nbeta bogus - - n - - fixture-service\n",
    );
    let out = inst.run("postfix", &["reload"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("master.cf, line 2: invalid type field \"bogus\""),
        "{err}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(inst.wait_children(&["alpha", "beta"]), pids);
}

#[test]
fn second_start_fails_clearly() {
    let inst = Instance::new(TWO_SERVICES, "");
    inst.postfix("start");
    let master = inst.master_pid().unwrap();
    let out = inst.run("postfix", &["start"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("fatal: the Postfix mail system is already running"),
        "{err}"
    );
    assert_eq!(inst.master_pid(), Some(master));
}

#[test]
fn stop_and_reload_when_not_running_fail_clearly() {
    let inst = Instance::new(TWO_SERVICES, "");
    for cmd in ["stop", "reload", "abort"] {
        let out = inst.run("postfix", &[cmd]);
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .contains("fatal: the Postfix mail system is not running"),
            "{cmd}"
        );
    }
}

#[test]
fn wakeup_sends_periodic_triggers() {
    let inst = Instance::new(
        "ticker unix - - n 1 - fixture-service\nlazy unix - - n 1? - fixture-service\n",
        "",
    );
    inst.postfix("start");
    inst.wait_children(&["ticker", "lazy"]);
    assert!(
        inst.wait_log("fixture: ticker trigger W", Duration::from_secs(5)),
        "{}",
        inst.log_text()
    );
    // "1?" waits until the service has been used once.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!inst.log_text().contains("fixture: lazy trigger W"));
    drop(UnixStream::connect(inst.queue.join("private/lazy")).unwrap());
    assert!(
        inst.wait_log("fixture: lazy trigger W", Duration::from_secs(5)),
        "{}",
        inst.log_text()
    );
}

#[test]
fn maxproc_limits_concurrent_sessions() {
    let inst = Instance::new("one unix - - n - 1 fixture-service\n", "");
    inst.postfix("start");
    inst.wait_children(&["one"]);
    let path = inst.queue.join("private/one");
    let mut first = UnixStream::connect(&path).unwrap();
    let mut buf = [0u8; 64];
    assert!(first.read(&mut buf).unwrap() > 0);
    // The second client waits in the backlog while the first holds the only slot.
    let mut second = UnixStream::connect(&path).unwrap();
    second
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    assert!(
        second.read(&mut buf).is_err(),
        "second session served beyond maxproc 1"
    );
    drop(first);
    second
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert!(
        second.read(&mut buf).unwrap() > 0,
        "second session served once the slot was free"
    );
}

#[test]
fn clients_wait_in_the_backlog_while_a_child_restarts() {
    let port = free_port();
    let inst = Instance::new(
        &format!("127.0.0.1:{port} inet n - n - - fixture-service\n"),
        "",
    );
    inst.postfix("start");
    let service = format!("127.0.0.1:{port}");
    let [pid] = inst.wait_children(&[service.as_str()])[..] else {
        unreachable!()
    };
    kill9(pid);
    // Connect at once: master still holds the listening socket.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))
        .expect("connection refused during restart");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("service="));
}

#[test]
fn children_exit_when_master_is_killed_and_the_instance_starts_again() {
    let inst = Instance::new(TWO_SERVICES, "");
    inst.postfix("start");
    let master = inst.master_pid().unwrap();
    let pids = inst.wait_children(&["alpha", "beta"]);
    kill9(master);
    assert!(
        wait_for(Duration::from_secs(5), || pids.iter().all(|&p| !alive(p))),
        "children outlived master"
    );
    inst.postfix("start");
    inst.wait_children(&["alpha", "beta"]);
}

#[test]
fn abort_stops_everything_at_once() {
    let inst = Instance::new(TWO_SERVICES, "");
    inst.postfix("start");
    let master = inst.master_pid().unwrap();
    let pids = inst.wait_children(&["alpha", "beta"]);
    let err = inst.postfix("abort");
    assert!(err.contains("aborting mail system"), "{err}");
    assert!(wait_for(Duration::from_secs(5), || !alive(master)
        && pids.iter().all(|&p| !alive(p))));
}

#[test]
fn start_with_broken_main_cf_names_file_and_line() {
    let inst = Instance::new(TWO_SERVICES, "this is not a parameter\n");
    let out = inst.run("postfix", &["start"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "postfix: fatal: {}, line 11: missing '=' after attribute name: \"this is not a parameter\"",
        inst.etc.join("main.cf").display()
    );
    assert!(err.contains(&want), "{err}");
    assert!(inst.master_pid().is_none());
}

#[test]
fn check_reports_missing_programs_and_bad_values() {
    let inst = Instance::new("alpha unix - - n - - no-such-daemon\n", "");
    let out = inst.run("postfix", &["check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("master.cf, line 1: service alpha/unix: program")
            && err.contains("no-such-daemon is missing"),
        "{err}"
    );

    let inst = Instance::new(TWO_SERVICES, "message_size_limit = 10MB\n");
    let out = inst.run("postfix", &["check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("main.cf, line 11: bad numerical configuration: message_size_limit = 10MB"),
        "{err}"
    );

    let inst = Instance::new(TWO_SERVICES, "");
    let out = inst.run("postfix", &["check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn fifo_services_get_triggers_from_writers_and_wakeups() {
    let inst = Instance::new("pickup fifo n - n 1 1 fixture-service\n", "");
    inst.postfix("start");
    inst.wait_children(&["pickup"]);
    let fifo = inst.queue.join("public/pickup");
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(
        &std::fs::metadata(&fifo).unwrap().file_type()
    ));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .unwrap()
        .write_all(b"I")
        .unwrap();
    assert!(
        inst.wait_log("fixture: pickup trigger I", Duration::from_secs(5)),
        "{}",
        inst.log_text()
    );
    assert!(
        inst.wait_log("fixture: pickup trigger W", Duration::from_secs(5)),
        "{}",
        inst.log_text()
    );
}

/// Files in a queue directory that are not messages: anything but mode 0700
/// (reserved 0400 files, claimed or recycled ones).
fn spare_files(dir: &std::path::Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.metadata().unwrap().permissions().mode() & 0o777 != 0o700)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn stop_and_abort_leave_only_messages_in_the_queues_postfix_reads() {
    let m = Instance::mail("");
    for how in ["stop", "abort"] {
        m.start();
        let (mut c, _) = testkit::Smtp::connect(m.port);
        c.cmd("EHLO client.example");
        c.queued(
            "a@example.org",
            &["openstack@ywnds.com"],
            b"Subject: x\r\n\r\nhi",
        );
        c.cmd("QUIT");
        assert!(wait_for(Duration::from_secs(5), || !m
            .maildir("openstack")
            .is_empty()));
        // cleanup has named its next files ahead of time.
        assert!(!spare_files(&m.queue.join("incoming")).is_empty());
        m.postfix(how);
        assert!(wait_for(Duration::from_secs(10), || m
            .master_pid()
            .is_none()));
        assert_eq!(
            spare_files(&m.queue.join("incoming")),
            Vec::<String>::new(),
            "after {how}"
        );
        // postfix-rs's pool of reusable files is emptied too.
        assert_eq!(
            std::fs::read_dir(m.queue.join("recycle")).map_or(0, |d| d.count()),
            0,
            "after {how}"
        );
        std::fs::remove_dir_all(m.home.join("openstack/Maildir")).unwrap();
    }
}

#[test]
fn maillog_file_lines_are_postfix_3_7_postlogd_lines() {
    let inst = Instance::new("alpha unix - - n - - fixture-service\n", "");
    inst.postfix("start");
    assert!(inst.wait_log("daemon started", Duration::from_secs(5)));
    let log = inst.log_text();
    let line = log.lines().find(|l| l.contains("daemon started")).unwrap();
    // `Dec 04 05:49:05 mail postfix/master[N]: ...`: two-digit day, and
    // myhostname's first label (mail.ywnds.com), whatever the machine's name.
    let (stamp, rest) = line.split_at(15);
    let b = stamp.as_bytes();
    assert!(
        b[3] == b' ' && b[4].is_ascii_digit() && b[5].is_ascii_digit(),
        "{line}"
    );
    assert!(rest.starts_with(" mail postfix/master["), "{line}");
}

#[test]
fn maillog_file_outside_its_prefixes_is_refused() {
    let inst = Instance::new(
        "alpha unix - - n - - fixture-service\n",
        "maillog_file_prefixes = /var, /dev/stdout\n",
    );
    let out = inst.run("postfix", &["check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "maillog_file value '{}' does not match any prefix in maillog_file_prefixes",
        inst.log.display()
    );
    assert!(err.contains(&want), "{err}");
}

#[test]
fn children_get_only_the_environment_import_environment_names() {
    let inst = Instance::new(
        "alpha unix - - n - - fixture-service\n",
        "import_environment = MAIL_CONFIG TZ { GREETING = hello world } LANG=C\n",
    );
    // What the administrator's shell had: TZ named, the other not.
    let out = std::process::Command::new(testkit::bin("postfix"))
        .arg("-c")
        .arg(&inst.etc)
        .arg("start")
        .env("TZ", "Europe/Berlin")
        .env("PFX_CALLERS_OWN", "leaked")
        .env("LANG", "de_DE.UTF-8")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let [alpha] = inst.wait_children(&["alpha"])[..] else {
        unreachable!()
    };
    let environ = std::fs::read(format!("/proc/{alpha}/environ")).unwrap();
    let vars: Vec<String> = environ
        .split(|&b| b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    let has = |v: &str| vars.iter().any(|x| x == v);
    assert!(has("TZ=Europe/Berlin"), "{vars:?}");
    assert!(has("GREETING=hello world"), "{vars:?}");
    assert!(has("LANG=C"), "{vars:?}");
    assert!(
        !vars.iter().any(|v| v.starts_with("PFX_CALLERS_OWN=")),
        "{vars:?}"
    );
}

/// Voluntary context switches of every thread of master's children, by
/// process and thread name.
fn wake_ups(inst: &Instance) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for child in inst.children() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", child.pid)) else {
            continue;
        };
        for task in tasks.flatten() {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
                    .unwrap_or_default()
            };
            let key = format!(
                "{} {} {}",
                child.pid,
                field("Name:"),
                task.file_name().to_string_lossy()
            );
            out.insert(key, field("voluntary_ctxt_switches:").parse().unwrap_or(0));
        }
    }
    out
}

#[test]
fn an_idle_mail_system_does_not_wake_up() {
    // Postfix's default: the deferred queue is scanned every 300 s.
    let m = Instance::mail("queue_run_delay = 300s\n");
    m.start();
    // One message through, so that qmgr has given a file back and every
    // daemon has done its work once.
    let (mut c, _) = testkit::Smtp::connect(m.port);
    c.cmd("EHLO client.example");
    c.queued(
        "sender@example.org",
        &["openstack@ywnds.com"],
        b"Subject: 1\r\n\r\nbody\r\n",
    );
    c.cmd("QUIT");
    m.wait_maildir("openstack", 1);
    std::thread::sleep(Duration::from_secs(1));
    let before = wake_ups(&m);
    std::thread::sleep(Duration::from_secs(3));
    let woke: Vec<(String, u64)> = wake_ups(&m)
        .into_iter()
        .map(|(k, n)| {
            let d = n - before.get(&k).copied().unwrap_or(0);
            (k, d)
        })
        .filter(|(_, d)| *d > 0)
        .collect();
    let total: u64 = woke.iter().map(|(_, d)| d).sum();
    // A timer every 100 ms would be 30; allow master's pickup wake-up
    // (every 60 s) and a straggler.
    assert!(total <= 4, "{total} wake-ups in 3 s of idleness: {woke:?}");
}
