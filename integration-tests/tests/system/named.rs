//! named: started by master from master.cf, queried with dig from outside,
//! compared where it matters with what BIND answers for the same zone.

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use testkit::{bin, dig, free_port, wait_for, ywnds_zone, Instance, Smtp};

const RECORDS: &str = "\
www IN CNAME mail
WebMail IN CNAME www
txt IN TXT \"v=spf1 mx -all\"
_smtp._tcp IN SRV 0 5 25 mail
@ IN CAA 0 issue \"letsencrypt.org\"
v6 IN AAAA ::1
";

/// An instance running only named, serving the ywnds.com zones plus `extra`.
fn named(options: &str, extra: &str) -> (Instance, u16) {
    let inst = Instance::new("", "");
    let port = inst.add_named(options, extra);
    inst.postfix("start");
    assert!(
        inst.wait_log("named", Duration::from_secs(10))
            && inst.wait_log("running", Duration::from_secs(10)),
        "named did not start:\n{}",
        inst.log_text()
    );
    (inst, port)
}

/// The lines of one dig section (`ANSWER`, `AUTHORITY`, `ADDITIONAL`), whitespace squeezed.
fn section(out: &str, name: &str) -> Vec<String> {
    let head = format!(";; {name} SECTION:");
    out.lines()
        .skip_while(|l| *l != head)
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn status(out: &str) -> &str {
    testkit::dns_status(out)
}

fn flags(out: &str) -> Vec<&str> {
    out.lines()
        .find(|l| l.starts_with(";; flags:"))
        .map(|l| {
            l.trim_start_matches(";; flags:")
                .split(';')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn answers_every_record_type_authoritatively() {
    let (inst, port) = named("", RECORDS);
    let q = |args: &[&str]| dig(port, &[&["+norec"], args].concat());
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "ywnds.com",
            "SOA",
            &["ywnds.com. 86400 IN SOA ns.ywnds.com. root.ywnds.com. 1 10800 900 604800 86400"],
        ),
        ("ywnds.com", "NS", &["ywnds.com. 86400 IN NS ns.ywnds.com."]),
        (
            "ywnds.com",
            "MX",
            &["ywnds.com. 86400 IN MX 10 mail.ywnds.com."],
        ),
        (
            "mail.ywnds.com",
            "A",
            &["mail.ywnds.com. 86400 IN A 127.0.0.1"],
        ),
        ("v6.ywnds.com", "AAAA", &["v6.ywnds.com. 86400 IN AAAA ::1"]),
        (
            "txt.ywnds.com",
            "TXT",
            &["txt.ywnds.com. 86400 IN TXT \"v=spf1 mx -all\""],
        ),
        (
            "_smtp._tcp.ywnds.com",
            "SRV",
            &["_smtp._tcp.ywnds.com. 86400 IN SRV 0 5 25 mail.ywnds.com."],
        ),
        (
            "ywnds.com",
            "CAA",
            &["ywnds.com. 86400 IN CAA 0 issue \"letsencrypt.org\""],
        ),
        (
            "1.0.0.127.in-addr.arpa",
            "PTR",
            &["1.0.0.127.in-addr.arpa. 86400 IN PTR mail.ywnds.com."],
        ),
        // CNAME chains are followed inside the zone.
        (
            "webmail.ywnds.com",
            "A",
            &[
                "webmail.ywnds.com. 86400 IN CNAME www.ywnds.com.",
                "www.ywnds.com. 86400 IN CNAME mail.ywnds.com.",
                "mail.ywnds.com. 86400 IN A 127.0.0.1",
            ],
        ),
        // Names are case-insensitive; the answer keeps the zone's spelling, as BIND's does.
        (
            "MAIL.YwNdS.CoM",
            "A",
            &["mail.ywnds.com. 86400 IN A 127.0.0.1"],
        ),
    ];
    for (name, rtype, want) in cases.iter().chain(cases) {
        // Each question twice: the first answer is made, the second cached.
        let out = q(&[name, rtype]);
        assert!(!out.contains("mismatch"), "{out}");
        assert_eq!(status(&out), "NOERROR", "{name} {rtype}:\n{out}");
        assert!(
            flags(&out).contains(&"aa"),
            "{name} {rtype}: AA flag:\n{out}"
        );
        assert_eq!(section(&out, "ANSWER"), *want, "{name} {rtype}:\n{out}");
    }
    // Glue for MX and NS targets in the additional section.
    let out = q(&["ywnds.com", "MX"]);
    assert!(
        section(&out, "ADDITIONAL").contains(&"mail.ywnds.com. 86400 IN A 127.0.0.1".to_string()),
        "{out}"
    );
    let out = q(&["ywnds.com", "NS"]);
    assert!(
        section(&out, "ADDITIONAL").contains(&"ns.ywnds.com. 86400 IN A 127.0.0.1".to_string()),
        "{out}"
    );
    // The same over TCP.
    let out = q(&["+tcp", "ywnds.com", "MX"]);
    assert_eq!(
        section(&out, "ANSWER"),
        ["ywnds.com. 86400 IN MX 10 mail.ywnds.com."],
        "{out}"
    );
    // Started as root, named runs as mail_owner once its sockets are bound.
    if nix::unistd::Uid::effective().is_root() {
        let pid = inst.child_pid("named").expect("named process");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        let postfix = nix::unistd::User::from_name("postfix")
            .unwrap()
            .unwrap()
            .uid;
        assert!(
            uid.split_whitespace()
                .skip(1)
                .all(|u| u == postfix.to_string()),
            "{uid}"
        );
    }
}

#[test]
fn negative_answers_carry_the_soa_and_strangers_are_refused() {
    let extra = "private IN A 127.0.0.7\n";
    let (inst, port) = named("", extra);
    let soa = "ywnds.com. 86400 IN SOA ns.ywnds.com. root.ywnds.com. 1 10800 900 604800 86400";
    let out = dig(port, &["+norec", "nope.ywnds.com", "A"]);
    assert_eq!(status(&out), "NXDOMAIN", "{out}");
    assert!(flags(&out).contains(&"aa"), "{out}");
    assert_eq!(section(&out, "AUTHORITY"), [soa], "{out}");
    let out = dig(port, &["+norec", "mail.ywnds.com", "AAAA"]);
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert!(section(&out, "ANSWER").is_empty(), "{out}");
    assert_eq!(section(&out, "AUTHORITY"), [soa], "{out}");
    // recursion no: other names are refused.
    let out = dig(port, &["example.org", "A"]);
    assert_eq!(status(&out), "REFUSED", "{out}");

    // A zone's allow-query that leaves 127.0.0.1 out refuses it, and logs it.
    let conf = std::fs::read_to_string(inst.etc.join("named.conf")).unwrap();
    let conf = conf.replace(
        "file \"ywnds.com.zone\";",
        "file \"ywnds.com.zone\"; allow-query { !127.0.0.1; any; };",
    );
    std::fs::write(inst.etc.join("named.conf"), conf).unwrap();
    inst.postfix("reload");
    assert!(wait_for(Duration::from_secs(10), || status(&dig(
        port,
        &["mail.ywnds.com", "A"]
    )) == "REFUSED"));
    assert!(inst.wait_log(" 127.0.0.1#", Duration::from_secs(5)));
    // BIND's line: client @0x... 127.0.0.1#PORT (name): query '...' denied
    assert!(
        inst.log_text().contains("named[")
            && inst.log_text().contains(": client @0x")
            && inst
                .log_text()
                .contains("(mail.ywnds.com): query 'mail.ywnds.com/A/IN' denied"),
        "{}",
        inst.log_text()
    );
    // The reverse zone still answers.
    assert_eq!(status(&dig(port, &["-x", "127.0.0.1"])), "NOERROR");
}

#[test]
fn large_answers_are_truncated_over_udp_and_complete_over_tcp() {
    let mut extra = String::new();
    for i in 0..40 {
        extra.push_str(&format!(
            "big IN TXT \"record number {i} with some padding to make it long\"\n"
        ));
    }
    let (_inst, port) = named("", &extra);
    let out = dig(port, &["+noedns", "+ignore", "big.ywnds.com", "TXT"]);
    assert!(flags(&out).contains(&"tc"), "{out}");
    let out = dig(port, &["+tcp", "big.ywnds.com", "TXT"]);
    assert!(!flags(&out).contains(&"tc"), "{out}");
    assert_eq!(section(&out, "ANSWER").len(), 40, "{out}");
    // EDNS0: a large buffer gets everything over UDP too.
    let out = dig(port, &["+bufsize=8192", "big.ywnds.com", "TXT"]);
    assert!(out.contains("; EDNS: version: 0"), "{out}");
    assert_eq!(section(&out, "ANSWER").len(), 40, "{out}");
}

#[test]
fn reload_picks_up_a_new_serial_and_a_broken_zone_keeps_the_old_one() {
    let (inst, port) = named("", "");
    // Asked twice, the second answer comes from named's answer cache.
    for _ in 0..2 {
        assert_eq!(status(&dig(port, &["new.ywnds.com", "A"])), "NXDOMAIN");
    }
    let zone = inst.etc.join("zones/ywnds.com.zone");
    std::fs::write(&zone, ywnds_zone(2, "new IN A 127.0.0.9\n")).unwrap();
    inst.postfix("reload");
    assert!(
        wait_for(Duration::from_secs(10), || dig(
            port,
            &["+short", "new.ywnds.com", "A"]
        )
        .trim()
            == "127.0.0.9"),
        "{}",
        inst.log_text()
    );
    assert!(dig(port, &["+short", "ywnds.com", "SOA"]).contains(" 2 "));
    assert!(inst
        .log_text()
        .contains("zone ywnds.com/IN: loaded serial 2"));

    // A broken file: the error names file and line; serial 2 keeps serving.
    std::fs::write(&zone, ywnds_zone(3, "bad IN A 127.0.0.300\n")).unwrap();
    inst.postfix("reload");
    let want = format!("{}:9: ", zone.display());
    assert!(
        inst.wait_log(&want, Duration::from_secs(10)),
        "{}",
        inst.log_text()
    );
    assert!(inst.wait_log(
        "zone ywnds.com/IN: not loaded due to errors; serving serial 2 as before",
        Duration::from_secs(5)
    ));
    assert_eq!(
        dig(port, &["+short", "new.ywnds.com", "A"]).trim(),
        "127.0.0.9"
    );

    // A broken named.conf changes nothing either.
    std::fs::write(inst.etc.join("named.conf"), "options { bogus yes; };\n").unwrap();
    inst.postfix("reload");
    assert!(
        inst.wait_log(
            "named.conf:1: unknown option 'bogus'",
            Duration::from_secs(10)
        ),
        "{}",
        inst.log_text()
    );
    assert_eq!(
        dig(port, &["+short", "new.ywnds.com", "A"]).trim(),
        "127.0.0.9"
    );
}

#[test]
fn garbage_and_half_messages_do_not_stop_it() {
    let (inst, port) = named("", "");
    let pid = inst.child_pid("named").unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for n in [0usize, 1, 5, 12, 300, 4000] {
        let junk: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
        udp.send_to(&junk, ("127.0.0.1", port)).unwrap();
    }
    // A TCP client that announces 200 bytes, sends 3, and waits.
    let mut half = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    half.write_all(&[0, 200, 1, 2, 3]).unwrap();
    let mut junk_tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    junk_tcp.write_all(&[0, 4, 0xff, 0xff, 0xff, 0xff]).unwrap();
    for _ in 0..3 {
        assert_eq!(
            dig(port, &["+short", "mail.ywnds.com", "A"]).trim(),
            "127.0.0.1"
        );
        assert_eq!(
            dig(port, &["+tcp", "+short", "mail.ywnds.com", "A"]).trim(),
            "127.0.0.1"
        );
    }
    assert_eq!(
        inst.child_pid("named"),
        Some(pid),
        "named restarted:\n{}",
        inst.log_text()
    );
    drop(half);
}

#[test]
fn forwards_other_names_when_recursion_is_on() {
    // A second named, run on its own as BIND would be, serves example.test.
    let dir = tempfile::tempdir().unwrap();
    let port2 = free_port();
    std::fs::write(
        dir.path().join("example.test.zone"),
        "$TTL 300\n@ IN SOA ns root 7 1H 1H 1W 1H\n IN NS ns\nns IN A 127.0.0.2\nhost IN A 127.0.0.42\n",
    )
    .unwrap();
    let conf2 = dir.path().join("named.conf");
    std::fs::write(
        &conf2,
        format!(
            "options {{ listen-on port {port2} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }}; directory \"{}\"; recursion no; }};\n\
             controls {{ }};\n\
             zone \"example.test\" {{ type primary; file \"example.test.zone\"; }};\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let mut other = Command::new(bin("named"))
        .args(["-c", conf2.to_str().unwrap(), "-g"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_for(Duration::from_secs(10), || dig(
        port2,
        &["+short", "host.example.test"]
    )
    .trim()
        == "127.0.0.42"));

    let (inst, port) = named(
        &format!("  forwarders {{ 127.0.0.1 port {port2}; }};\n  dnssec-validation no;\n"),
        "",
    );
    let conf = std::fs::read_to_string(inst.etc.join("named.conf")).unwrap();
    std::fs::write(
        inst.etc.join("named.conf"),
        conf.replace("recursion no;", "recursion yes;"),
    )
    .unwrap();
    inst.postfix("reload");
    assert!(
        wait_for(Duration::from_secs(10), || dig(
            port,
            &["+short", "host.example.test", "A"]
        )
        .trim()
            == "127.0.0.42"),
        "{}",
        inst.log_text()
    );
    // Our own zones are still answered by us, authoritatively.
    let out = dig(port, &["mail.ywnds.com", "A"]);
    assert!(flags(&out).contains(&"aa"), "{out}");
    let _ = other.kill();
    let _ = other.wait();
}

#[test]
fn smtpd_names_clients_from_their_ptr_records() {
    let m = testkit::Instance::mail("");
    let port = m.inst.add_named("", "");
    let mut main = std::fs::read_to_string(m.inst.etc.join("main.cf")).unwrap();
    main.push_str(&format!(
        "smtpd_peername_lookup = yes\ndns_servers = 127.0.0.1:{port}\n"
    ));
    std::fs::write(m.inst.etc.join("main.cf"), main).unwrap();
    m.start();
    assert!(m.inst.wait_log("running", Duration::from_secs(10)));
    let (mut c, greeting) = Smtp::connect(m.port);
    assert!(greeting.starts_with("220 "));
    c.cmd("EHLO client.example");
    let r = c.mail(
        "someone@example.org",
        &["openstack@ywnds.com"],
        b"Subject: ptr\r\n\r\nhi\r\n",
    );
    assert!(r.starts_with("250 "), "{r}");
    c.cmd("QUIT");
    assert!(
        m.inst.wait_log(
            "connect from mail.ywnds.com[127.0.0.1]",
            Duration::from_secs(10)
        ),
        "{}",
        m.inst.log_text()
    );
    let msgs = m.wait_maildir("openstack", 1);
    let text = String::from_utf8_lossy(&msgs[0]);
    assert!(
        text.contains("Received: from client.example (mail.ywnds.com [127.0.0.1])"),
        "{text}"
    );
    // 127.0.0.2 has no PTR record.
    let (mut c, _) = Smtp::connect_from("127.0.0.2", m.port);
    c.cmd("QUIT");
    assert!(
        m.inst
            .wait_log("connect from unknown[127.0.0.2]", Duration::from_secs(10)),
        "{}",
        m.inst.log_text()
    );
}

#[test]
fn check_commands_report_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let zone = dir.path().join("ywnds.com.zone");
    std::fs::write(&zone, ywnds_zone(5, "")).unwrap();
    let out = Command::new(bin("named-checkzone"))
        .args(["ywnds.com", zone.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "zone ywnds.com/IN: loaded serial 5\nOK\n"
    );
    std::fs::write(&zone, ywnds_zone(5, "x IN MX ten mail\n")).unwrap();
    let out = Command::new(bin("named-checkzone"))
        .args(["ywnds.com", zone.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("{}:9: ", zone.display())), "{text}");
    assert!(
        text.ends_with("zone ywnds.com/IN: not loaded due to errors.\n"),
        "{text}"
    );

    let conf = dir.path().join("named.conf");
    std::fs::write(&conf, "options {\n  directory \".\";\n  recursion no\n};\n").unwrap();
    let out = Command::new(bin("named-checkconf"))
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}:4: missing ';' before '}}'\n", conf.display())
    );
    // named itself refuses to start on it, saying why.
    let out = Command::new(bin("named"))
        .args(["-g", "-c", conf.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("named.conf:4: missing ';' before '}'"));

    // postfix check runs the same checks on the instance's named.conf.
    let (inst, _port) = named("", "");
    std::fs::write(
        inst.etc.join("zones/ywnds.com.zone"),
        ywnds_zone(5, "bad IN A 1.2.3\n"),
    )
    .unwrap();
    let out = inst.run("postfix", &["check"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ywnds.com.zone:9: "), "{err}");
}

/// A zone with the directives BIND's master files use ($GENERATE, a
/// relative $ORIGIN, $INCLUDE with its own origin, no $TTL) and the types
/// hickory cannot read (DNAME, SPF without its TXT twin, LOC, RP, RFC
/// 3597's generic form): every record
/// BIND's named-checkzone reads from it (its `-D` dump) is what named
/// answers, TTL included, and both checkers warn alike.
#[test]
fn zone_directives_are_read_as_bind_reads_them() {
    if !std::path::Path::new("/usr/bin/named-checkzone").exists() {
        eprintln!(
            "skipped: BIND's named-checkzone is not installed (scripts/setup installs bind9)"
        );
        return;
    }
    let inst = Instance::new("", "");
    let port = inst.add_named("", "");
    let zones = inst.etc.join("zones");
    std::fs::write(
        zones.join("ywnds.com.zone"),
        "@ IN SOA ns.ywnds.com. root.ywnds.com. ( 7 3600 600\n    86400 300 )\n  IN NS ns\n\
         ns IN A 127.0.0.1\n\
         $GENERATE 1-3 host$ A 192.0.2.$\n\
         $GENERATE 10-14/2 ${0,3,d}.rev PTR host$.ywnds.com.\n\
         $ORIGIN sub\n\
         www 60 IN A 192.0.2.9\n\
         $INCLUDE inc.zone other.ywnds.com.\n\
         after IN A 192.0.2.10\n\
         old IN DNAME ywnds.com.\n\
         spf IN SPF \"v=spf1 -all\"\n\
         where IN LOC 52 22 23.000 N 4 53 32.000 E -2.00m 0.00m 10000m 10m\n\
         who IN RP root.ywnds.com. @\n\
         raw IN TYPE65280 \\# 4 0A000001\n",
    )
    .unwrap();
    std::fs::write(
        zones.join("inc.zone"),
        "inside IN TXT \"in include\"\n@ IN MX 10 ns.ywnds.com.\n",
    )
    .unwrap();
    let check = |program: &std::path::Path, extra: &[&str]| {
        let out = Command::new(program)
            .args(extra)
            .args(["ywnds.com", "ywnds.com.zone"])
            .current_dir(&zones)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{program:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let bind = std::path::Path::new("/usr/bin/named-checkzone");
    let (theirs, ours) = (check(bind, &[]), check(&bin("named-checkzone"), &[]));
    assert_eq!(theirs, ours);
    assert!(
        ours.contains("ywnds.com.zone:1: no TTL specified; using SOA MINTTL instead"),
        "{ours}"
    );
    // BIND's records (`-D`): NAME TTL CLASS TYPE RDATA, whitespace squeezed.
    let theirs = check(bind, &["-D", "-o", "-"]);
    let records: Vec<Vec<String>> = theirs
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
        .filter(|w| w.len() > 4 && w[2] == "IN")
        .collect();
    assert_eq!(records.len(), 18, "{theirs}");
    inst.postfix("start");
    assert!(
        inst.wait_log("running", Duration::from_secs(10)),
        "{}",
        inst.log_text()
    );
    let mut asked = std::collections::BTreeSet::new();
    for r in &records {
        let (name, rtype) = (r[0].clone(), r[3].clone());
        if !asked.insert((name.clone(), rtype.clone())) {
            continue;
        }
        let mut want: Vec<String> = records
            .iter()
            .filter(|x| x[0] == name && x[3] == rtype)
            .map(|x| x.join(" "))
            .collect();
        want.sort();
        let out = dig(port, &[&name, &rtype, "+norec"]);
        let mut got = section(&out, "ANSWER");
        got.sort();
        assert_eq!(got, want, "{name} {rtype}\n{out}");
    }
}

/// Debian 12's and RHEL 9's stock named.conf, written from their
/// documented defaults (paths moved into a scratch directory, ports 53
/// and 953 moved to free ones), with the `key`/`controls` pair rndc-confgen
/// prints: BIND's named-checkconf -z and postfix-rs's both take them, and
/// named serves their localhost zone and answers Debian's rndc.
#[test]
fn stock_named_conf_files_load_as_in_bind() {
    if !std::path::Path::new("/usr/bin/named-checkconf").exists() {
        eprintln!(
            "skipped: BIND's named-checkconf is not installed (scripts/setup installs bind9-utils)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let localhost =
        "$TTL 604800\n@ IN SOA localhost. root.localhost. ( 2 604800 86400 2419200 604800 )\n\
                     @ IN NS localhost.\n@ IN A 127.0.0.1\n@ IN AAAA ::1\n";
    let reverse =
        "$TTL 604800\n@ IN SOA localhost. root.localhost. ( 1 604800 86400 2419200 604800 )\n\
                   @ IN NS localhost.\n1.0.0 IN PTR localhost.\n";
    let empty =
        "$TTL 604800\n@ IN SOA localhost. root.localhost. ( 1 604800 86400 2419200 604800 )\n\
                 @ IN NS localhost.\n";
    for (name, text) in [
        ("db.local", localhost),
        ("db.127", reverse),
        ("db.0", empty),
        ("db.255", empty),
        ("named.localhost", localhost),
        ("named.loopback", reverse),
        ("named.empty", empty),
        (
            "root.hints",
            ". 3600000 NS A.ROOT-SERVERS.NET.\nA.ROOT-SERVERS.NET. 3600000 A 198.41.0.4\n",
        ),
    ] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let port = free_port();
    let control = free_port();
    let rndc = format!(
        "key \"rndc-key\" {{\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=\";\n}};\n\
         controls {{\n\tinet 127.0.0.1 port {control}\n\t\tallow {{ 127.0.0.1; }} keys {{ \"rndc-key\"; }};\n}};\n"
    );
    // Debian 12: /etc/bind/named.conf and the three files it includes.
    std::fs::write(
        dir.path().join("named.conf.options"),
        format!(
            "options {{\n\tdirectory \"{d}\";\n\n\t// forwarders {{\n\t// \t0.0.0.0;\n\t// }};\n\n\
             \tdnssec-validation auto;\n\n\tlisten-on port {port} {{ 127.0.0.1; }};\n\tlisten-on-v6 {{ none; }};\n}};\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("named.conf.local"),
        "//\n// Do any local configuration here\n//\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("named.conf.default-zones"),
        format!(
            "// prime the server with knowledge of the root servers\nzone \".\" {{\n\ttype hint;\n\tfile \"{d}/root.hints\";\n}};\n\n\
             zone \"localhost\" {{\n\ttype master;\n\tfile \"{d}/db.local\";\n}};\n\n\
             zone \"127.in-addr.arpa\" {{\n\ttype master;\n\tfile \"{d}/db.127\";\n}};\n\n\
             zone \"0.in-addr.arpa\" {{\n\ttype master;\n\tfile \"{d}/db.0\";\n}};\n\n\
             zone \"255.in-addr.arpa\" {{\n\ttype master;\n\tfile \"{d}/db.255\";\n}};\n"
        ),
    )
    .unwrap();
    let debian = dir.path().join("named.conf");
    std::fs::write(
        &debian,
        format!(
            "// This is the primary configuration file for the BIND DNS server named.\n\
             include \"{d}/named.conf.options\";\ninclude \"{d}/named.conf.local\";\n\
             include \"{d}/named.conf.default-zones\";\n{rndc}"
        ),
    )
    .unwrap();
    // RHEL 9: /etc/named.conf, with the crypto policy and the RFC 1912 zones.
    std::fs::write(
        dir.path().join("bind.config"),
        "disable-algorithms \".\" { RSAMD5; };\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("named.rfc1912.zones"),
        "zone \"localhost.localdomain\" IN {\n\ttype master;\n\tfile \"named.localhost\";\n\tallow-update { none; };\n};\n\n\
         zone \"localhost\" IN {\n\ttype master;\n\tfile \"named.localhost\";\n\tallow-update { none; };\n};\n\n\
         zone \"1.0.0.127.in-addr.arpa\" IN {\n\ttype master;\n\tfile \"named.loopback\";\n\tallow-update { none; };\n};\n\n\
         zone \"0.in-addr.arpa\" IN {\n\ttype master;\n\tfile \"named.empty\";\n\tallow-update { none; };\n};\n",
    )
    .unwrap();
    let rhel = dir.path().join("rhel-named.conf");
    std::fs::write(
        &rhel,
        format!(
            "options {{\n\tlisten-on port {port} {{ 127.0.0.1; }};\n\tlisten-on-v6 {{ none; }};\n\tdirectory \t\"{d}\";\n\
             \tdump-file \t\"{d}/cache_dump.db\";\n\tstatistics-file \"{d}/named_stats.txt\";\n\
             \tmemstatistics-file \"{d}/named_mem_stats.txt\";\n\tsecroots-file\t\"{d}/named.secroots\";\n\
             \trecursing-file\t\"{d}/named.recursing\";\n\tallow-query     {{ localhost; }};\n\n\
             \trecursion yes;\n\n\tdnssec-validation yes;\n\n\tmanaged-keys-directory \"{d}/dynamic\";\n\
             \tgeoip-directory \"/usr/share/GeoIP\";\n\n\tpid-file \"{d}/named.pid\";\n\
             \tsession-keyfile \"{d}/session.key\";\n\n\t/* https://fedoraproject.org/wiki/Changes/CryptoPolicy */\n\
             \tinclude \"{d}/bind.config\";\n}};\n\n\
             logging {{\n        channel default_debug {{\n                file \"data/named.run\";\n\
                             severity dynamic;\n        }};\n}};\n\n\
             zone \".\" IN {{\n\ttype hint;\n\tfile \"root.hints\";\n}};\n\n\
             include \"{d}/named.rfc1912.zones\";\n{rndc}"
        ),
    )
    .unwrap();
    for conf in [&debian, &rhel] {
        for program in [
            std::path::PathBuf::from("/usr/bin/named-checkconf"),
            bin("named-checkconf"),
        ] {
            let out = Command::new(&program).arg("-z").arg(conf).output().unwrap();
            assert!(
                out.status.success(),
                "{program:?} -z {conf:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // named serves it.
        let mut named = Command::new(bin("named"))
            .args(["-g", "-c"])
            .arg(conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let answered = wait_for(Duration::from_secs(10), || {
            section(&dig(port, &["localhost", "A", "+norec"]), "ANSWER")
                == ["localhost. 604800 IN A 127.0.0.1"]
        });
        let rndc_status = std::path::Path::new("/usr/sbin/rndc").exists().then(|| {
            let key = dir.path().join("rndc.key");
            std::fs::write(&key, rndc.split("controls").next().unwrap()).unwrap();
            Command::new("/usr/sbin/rndc")
                .arg("-k")
                .arg(&key)
                .args(["-s", "127.0.0.1", "-p", &control.to_string(), "status"])
                .output()
                .unwrap()
        });
        let _ = named.kill();
        let _ = named.wait();
        assert!(
            answered,
            "{conf:?}: {}",
            dig(port, &["localhost", "A", "+norec"])
        );
        if let Some(out) = rndc_status {
            assert!(
                out.status.success()
                    && String::from_utf8_lossy(&out.stdout).contains("server is up and running"),
                "{conf:?}: rndc status: {out:?}"
            );
        }
    }
}

/// BIND's default `listen-on-v6 { any; }` on a machine whose interfaces
/// have IPv6 link-local addresses: named binds each on its interface and
/// starts (it exited on `Invalid argument` before), answering on ::1.
#[test]
fn link_local_addresses_are_bound_on_their_interface() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ywnds.com.zone"), ywnds_zone(3, "")).unwrap();
    let conf = dir.path().join("named.conf");
    std::fs::write(
        &conf,
        format!(
            "options {{\n  directory \"{}\";\n  recursion no;\n  pid-file none;\n}};\n\
             zone \"ywnds.com\" {{ type master; file \"ywnds.com.zone\"; }};\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let port = free_port();
    let mut named = Command::new(bin("named"))
        .args(["-g", "-p", &port.to_string(), "-c"])
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let answered = wait_for(Duration::from_secs(10), || {
        let out = Command::new("dig")
            .args([
                "@::1",
                "-p",
                &port.to_string(),
                "+time=1",
                "+tries=1",
                "ywnds.com",
                "SOA",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("status: NOERROR")
    });
    let _ = named.kill();
    let out = named.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(answered && !log.contains("fatal"), "{log}");
}

/// `listen-on { any; }` and an address added to an interface later: after
/// `rndc scan` (or `interface-interval`) named answers on it too. Run in a
/// network namespace of its own, where port 53 and addresses are the
/// test's.
#[test]
fn addresses_added_later_are_served_after_a_scan() {
    if !nix::unistd::Uid::effective().is_root() || !std::path::Path::new("/usr/sbin/rndc").exists()
    {
        eprintln!("skipped: a network namespace (root) and Debian's rndc are needed");
        return;
    }
    let mut holder = testkit::namespace_holder(&["--net"], "true");
    let netns = format!("--net=/proc/{}/ns/net", holder.id());
    let inside = |program: &str, args: &[&str]| {
        Command::new("nsenter")
            .arg(&netns)
            .arg(program)
            .args(args)
            .output()
            .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("ywnds.com.zone"), ywnds_zone(4, "")).unwrap();
    let key = d.join("rndc.key");
    assert!(Command::new("/usr/sbin/rndc-confgen")
        .args(["-a", "-k", "rndc-key", "-c"])
        .arg(&key)
        .output()
        .unwrap()
        .status
        .success());
    std::fs::write(
        d.join("named.conf"),
        format!(
            "options {{ directory \"{}\"; listen-on {{ any; }}; listen-on-v6 {{ none; }}; recursion no; pid-file none; }};\n\
             include \"{}\";\n\
             controls {{ inet 127.0.0.1 allow {{ 127.0.0.1; }} keys {{ \"rndc-key\"; }}; }};\n\
             zone \"ywnds.com\" {{ type master; file \"ywnds.com.zone\"; }};\n",
            d.display(),
            key.display()
        ),
    )
    .unwrap();
    let log = d.join("named.log");
    let mut named = Command::new("nsenter")
        .arg(&netns)
        .arg(bin("named"))
        .args(["-g", "-c"])
        .arg(d.join("named.conf"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let soa = |server: &str| {
        let out = inside(
            "dig",
            &[
                &format!("@{server}"),
                "+time=1",
                "+tries=1",
                "ywnds.com",
                "SOA",
            ],
        );
        String::from_utf8_lossy(&out.stdout).contains("status: NOERROR")
    };
    let started = wait_for(Duration::from_secs(10), || soa("127.0.0.1"));
    let added = inside("ip", &["addr", "add", "10.53.0.1/24", "dev", "lo"]);
    let before = soa("10.53.0.1");
    let scan = inside(
        "/usr/sbin/rndc",
        &["-k", key.to_str().unwrap(), "-s", "127.0.0.1", "scan"],
    );
    let after = wait_for(Duration::from_secs(5), || soa("10.53.0.1"));
    let _ = named.kill();
    let _ = named.wait();
    let _ = holder.kill();
    let _ = holder.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(started, "named did not start: {text}");
    assert!(added.status.success(), "{added:?}");
    assert!(!before, "answered on 10.53.0.1 before the scan: {text}");
    assert!(scan.status.success(), "rndc scan: {scan:?}\n{text}");
    assert!(after, "not answering on 10.53.0.1 after the scan: {text}");
    assert!(text.contains("listening on 10.53.0.1:53"), "{text}");
}

/// Queries pipelined on one TCP connection (sent at once, before any
/// answer) are all answered, in order.
#[test]
fn pipelined_tcp_queries_are_answered_in_order() {
    let (_inst, port) = named("", "");
    let query = |name: &str, id: u16| {
        let mut m = id.to_be_bytes().to_vec();
        m.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.') {
            m.push(label.len() as u8);
            m.extend_from_slice(label.as_bytes());
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        let mut framed = (m.len() as u16).to_be_bytes().to_vec();
        framed.extend(m);
        framed
    };
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut all = Vec::new();
    for (i, name) in [
        "mail.ywnds.com",
        "nothere.ywnds.com",
        "ns.ywnds.com",
        "mail.ywnds.com",
    ]
    .iter()
    .enumerate()
    {
        all.extend(query(name, i as u16 + 1));
    }
    s.write_all(&all).unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        let mut len = [0u8; 2];
        std::io::Read::read_exact(&mut s, &mut len).unwrap();
        let mut m = vec![0u8; usize::from(u16::from_be_bytes(len))];
        std::io::Read::read_exact(&mut s, &mut m).unwrap();
        got.push((u16::from_be_bytes([m[0], m[1]]), m[3] & 0x0f));
    }
    assert_eq!(got, [(1, 0), (2, 3), (3, 0), (4, 0)]);
}

/// A response (QR set) sent to named is never answered, even one that
/// carries a TSIG with an unknown key: two servers would otherwise answer
/// each other's error replies forever.
#[test]
fn responses_are_not_answered() {
    let (_inst, port) = named("", "");
    let mut m = vec![0x12, 0x34, 0x84, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["mail", "ywnds", "com"] {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    // TSIG under a key named.conf lacks (BADKEY were it a query).
    m[11] = 1;
    m.extend_from_slice(b"\x05nokey\x00\x00\xfa\x00\xff\x00\x00\x00\x00");
    let mut rdata = b"\x0bhmac-sha256\x00".to_vec();
    rdata.extend_from_slice(&[
        0, 0, 0x6b, 0x14, 0x24, 0x8f, 0x01, 0x2c, 0, 0, 0x12, 0x34, 0, 0, 0, 0,
    ]);
    m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    m.extend(rdata);
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s.send_to(&m, ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 512];
    assert!(s.recv_from(&mut buf).is_err(), "a response was answered");
    // The same bytes as a query are answered (NOTAUTH, BADKEY).
    m[2] = 0x01;
    s.send_to(&m, ("127.0.0.1", port)).unwrap();
    let (n, _) = s.recv_from(&mut buf).expect("the query was not answered");
    assert_eq!(buf[3] & 0x0f, 9, "{:?}", &buf[..n]);
}
