//! Zone transfers out (AXFR, IXFR) against BIND 9.18: the same named.conf
//! and zones on both, `dig axfr`/`dig ixfr` with and without a TSIG key,
//! refused by `allow-transfer`, a zone large enough for many messages;
//! and BIND as a secondary of postfix-rs named.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use testkit::{
    bin, bind_and_named, bind_available, dig, dig_from, free_port, wait_for, ywnds_zone, NameServer,
};

const SECRET: &str = "qV0JuJwJsxz9ihbuyLjL3z/6iG0jxE7+5FaCnA59R0k=";

/// A zone of `n` hosts: many messages' worth.
fn big_zone(n: usize) -> String {
    let mut z = String::from(
        "$TTL 3600\n@ IN SOA ns.big.test. root.big.test. 7 3600 900 604800 300\n@ IN NS ns\nns IN A 127.0.0.1\n",
    );
    for i in 0..n {
        z.push_str(&format!(
            "host{i} IN A 10.{}.{}.{}\n",
            i / 65536,
            i / 256 % 256,
            i % 256
        ));
    }
    z
}

/// What a transfer gave, as compared: its records as a set (TSIG records
/// aside: their times and MACs differ), whether it failed and why, and
/// whether dig could verify the signatures.
fn transfer(port: u16, args: &[&str]) -> String {
    let out = dig(port, args);
    let records: BTreeSet<String> = out
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.contains(" TSIG "))
        .collect();
    let failed = out
        .lines()
        .find(|l| l.contains("Transfer failed") || l.contains("status:"))
        .map(|l| l.trim().to_owned())
        .unwrap_or_default();
    let status = failed
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .map_or(failed.clone(), str::to_owned);
    let verified =
        if out.contains("Couldn't verify signature") || out.contains("tsig verify failure") {
            "not verified"
        } else {
            ""
        };
    format!("{status} {verified} {} records: {records:?}", records.len())
}

/// The transfer lines of a log, without what differs between runs (time,
/// client tag, sizes and speeds).
fn transfer_lines(log: &str) -> BTreeSet<String> {
    log.lines()
        .filter_map(|l| l.split_once("): ").map(|(_, rest)| rest))
        .filter(|l| l.contains("transfer"))
        .map(|l| match l.split_once(" ended: ") {
            Some((head, _)) => format!("{head} ended"),
            None => l.to_owned(),
        })
        .collect()
}

/// A name server (`program`: BIND's or ours) in the foreground on
/// `d/NAME.conf`, its stderr appended to `d/NAME.log`.
fn start(program: &Path, d: &Path, name: &str) -> NameServer {
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(d.join(format!("{name}.log")))
        .unwrap();
    NameServer(
        Command::new(program)
            .args(["-g", "-c"])
            .arg(d.join(format!("{name}.conf")))
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

fn log_of(d: &Path, name: &str) -> String {
    std::fs::read_to_string(d.join(format!("{name}.log"))).unwrap_or_default()
}

/// Whether the server on `port` answers `name` A with `want`.
fn answers(port: u16, name: &str, want: &str) -> bool {
    dig(port, &[name, "A", "+short"]).lines().any(|l| l == want)
}

/// Writes a new version of `d/ywnds.com.zone` and has `server` reload it.
fn new_version(d: &Path, server: &NameServer, zone: &str) {
    std::fs::write(d.join("ywnds.com.zone"), zone).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.0.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
}

#[test]
fn transfers_are_binds() {
    if !bind_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("ywnds.com.zone"),
        ywnds_zone(3, "www IN CNAME mail\n"),
    )
    .unwrap();
    std::fs::write(d.join("big.test.zone"), big_zone(3000)).unwrap();
    std::fs::write(
        d.join("other.test.zone"),
        big_zone(3).replace("big.test", "other.test"),
    )
    .unwrap();
    let conf = |name: &str, port: u16| {
        format!(
            "options {{\n  listen-on port {port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n  directory \"{0}\";\n\
             recursion no;\n  pid-file \"{0}/{name}.pid\";\n  session-keyfile \"{0}/{name}-session.key\";\n\
             dnssec-validation no;\n  allow-transfer {{ none; }};\n}};\n\
             controls {{ }};\n\
             key \"xfer-key\" {{ algorithm hmac-sha256; secret \"{SECRET}\"; }};\n\
             zone \"ywnds.com\" {{ type master; file \"ywnds.com.zone\"; allow-transfer {{ key xfer-key; }}; }};\n\
             zone \"big.test\" {{ type master; file \"big.test.zone\"; allow-transfer {{ 127.0.0.1; }}; }};\n\
             zone \"other.test\" {{ type master; file \"other.test.zone\"; }};\n",
            d.display()
        )
    };
    let (theirs, ours, _servers) = bind_and_named(d, "-g", conf);
    let key = format!("hmac-sha256:xfer-key:{SECRET}");
    let wrong = "hmac-sha256:xfer-key:c2VjcmV0c2VjcmV0";
    let queries: Vec<Vec<&str>> = vec![
        // Refused: no key, a wrong key, the global `none`.
        vec!["ywnds.com", "AXFR"],
        vec!["ywnds.com", "AXFR", "-y", wrong],
        vec!["other.test", "AXFR"],
        // With the key: every record, the answer signed.
        vec!["ywnds.com", "AXFR", "-y", &key],
        vec!["ywnds.com", "IXFR=1", "-y", &key],
        vec!["ywnds.com", "IXFR=3", "-y", &key],
        // Many messages, unsigned and signed (the chain of MACs).
        vec!["big.test", "AXFR"],
        vec!["big.test", "AXFR", "-y", &key],
        vec!["big.test", "IXFR=6"],
        vec!["big.test", "IXFR=7"],
        vec!["big.test", "IXFR=6", "+notcp"],
        // Not served; mixed case.
        vec!["nothere.test", "AXFR"],
        vec!["BIG.Test", "AXFR"],
    ];
    let mut differences = Vec::new();
    for q in &queries {
        let (a, b) = (transfer(theirs, q), transfer(ours, q));
        if a != b {
            differences.push(format!(
                "dig {}\nBIND:       {a}\npostfix-rs: {b}",
                q.join(" ")
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} transfers differ:\n{}",
        differences.len(),
        queries.len(),
        differences.join("\n\n")
    );
    // The big zone took several messages, and dig verified each signature.
    let out = dig(ours, &["big.test", "AXFR", "-y", &key]);
    let messages: usize = out
        .split("messages ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        messages > 1,
        "one message only:\n{}",
        &out[out.len() - 300..]
    );
    assert!(!out.contains("verify"), "{}", &out[out.len() - 300..]);
    // BIND's log lines: transfers started and ended, refusals.
    let log = |name: &str| log_of(d, name);
    let (bind_lines, our_lines) = (transfer_lines(&log("bind")), transfer_lines(&log("ours")));
    for want in [
        "transfer of 'ywnds.com/IN': AXFR started: TSIG xfer-key (serial 3)",
        "transfer of 'big.test/IN': AXFR ended",
        "zone transfer 'ywnds.com/AXFR/IN' denied",
        "transfer of 'big.test/IN': AXFR-style IXFR started (serial 7)",
    ] {
        assert!(our_lines.contains(want), "{want:?} not in {our_lines:#?}");
    }
    assert_eq!(
        bind_lines, our_lines,
        "BIND's transfer log lines (left) and ours"
    );
}

/// BIND 9.18 as a secondary of postfix-rs named: it transfers the zone
/// with the TSIG key at start and serves it; a new serial on the primary
/// reaches it through named's signed NOTIFY, as an IXFR of the
/// differences (a record gone, one new). Each side's key for the other
/// comes from a `server { keys }` statement.
#[test]
fn bind_is_a_secondary_of_named() {
    if !bind_available() {
        return;
    }
    secondary_of_named(Path::new("/usr/sbin/named"));
}

/// The same with postfix-rs named as the secondary: the differences
/// applied by named itself.
#[test]
fn named_is_a_secondary_of_named() {
    secondary_of_named(&bin("named"));
}

fn secondary_of_named(secondary: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (primary_port, secondary_port) = (free_port(), free_port());
    std::fs::write(
        d.join("ywnds.com.zone"),
        ywnds_zone(1, "old IN A 192.0.2.6\n"),
    )
    .unwrap();
    std::fs::write(
        d.join("primary.conf"),
        format!(
            "options {{\n  listen-on port {primary_port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n  directory \"{0}\";\n\
             recursion no;\n  pid-file \"{0}/primary.pid\";\n  dnssec-validation no;\n  notify explicit;\n}};\n\
             controls {{ }};\n\
             key \"xfer-key\" {{ algorithm hmac-sha256; secret \"{SECRET}\"; }};\n\
             primaries secondaries {{ 127.0.0.1 port {secondary_port}; }};\n\
             zone \"ywnds.com\" {{ type master; file \"ywnds.com.zone\"; allow-transfer {{ key xfer-key; }};\n\
               also-notify {{ secondaries; }}; }};\n\
             server 127.0.0.1 {{ keys {{ xfer-key; }}; }};\n",
            d.display()
        ),
    )
    .unwrap();
    let mut primary = start(&bin("named"), d, "primary");
    assert!(wait_for(Duration::from_secs(20), || dig(
        primary_port,
        &["ywnds.com", "SOA"]
    )
    .contains("status: NOERROR")));
    std::fs::write(
        d.join("secondary.conf"),
        format!(
            "options {{\n  listen-on port {secondary_port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n  directory \"{0}\";\n\
             recursion no;\n  pid-file \"{0}/secondary.pid\";\n  session-keyfile \"{0}/secondary-session.key\";\n\
             dnssec-validation no;\n  notify no;\n}};\n\
             controls {{ }};\n\
             key \"xfer-key\" {{ algorithm hmac-sha256; secret \"{SECRET}\"; }};\n\
             zone \"ywnds.com\" {{ type secondary; masterfile-format text; file \"secondary.db\";\n\
               primaries {{ 127.0.0.1 port {primary_port}; }}; }};\n\
             server 127.0.0.1 {{ keys {{ \"xfer-key\"; }}; }};\n",
            d.display()
        ),
    )
    .unwrap();
    let _secondary = start(secondary, d, "secondary");
    let log = |name: &str| log_of(d, name);
    let answers = |name: &str, want: &str| answers(secondary_port, name, want);
    assert!(
        wait_for(Duration::from_secs(20), || answers(
            "mail.ywnds.com",
            "127.0.0.1"
        )),
        "the secondary did not load the zone:\n{}\nprimary:\n{}",
        log("secondary"),
        log("primary")
    );
    assert!(log("secondary").contains(&format!(
        "transfer of 'ywnds.com/IN' from 127.0.0.1#{primary_port}: Transfer completed"
    )));
    assert!(std::fs::read_to_string(d.join("secondary.db"))
        .unwrap()
        .contains("mail"));
    // A new serial on the primary: its NOTIFY brings the secondary along.
    new_version(d, &primary, &ywnds_zone(2, "new IN A 192.0.2.7\n"));
    assert!(
        wait_for(Duration::from_secs(20), || answers(
            "new.ywnds.com",
            "192.0.2.7"
        )),
        "the secondary did not follow the new serial:\n{}\nprimary:\n{}",
        log("secondary"),
        log("primary")
    );
    let primary_said = log("primary");
    for want in [
        "zone ywnds.com/IN: sending notifies (serial 2)",
        "transfer of 'ywnds.com/IN': IXFR started: TSIG xfer-key (serial 1 -> 2)",
        "transfer of 'ywnds.com/IN': IXFR ended: 1 messages, 6 records,",
    ] {
        assert!(
            primary_said.contains(want),
            "{want:?} not in:\n{primary_said}"
        );
    }
    assert!(
        log("secondary").contains("received notify for zone 'ywnds.com': TSIG 'xfer-key'"),
        "{}",
        log("secondary")
    );
    // The deletion was applied too.
    assert!(dig(secondary_port, &["old.ywnds.com", "A"]).contains("status: NXDOMAIN"));
    let _ = primary.0.kill();
}

/// postfix-rs named as a secondary of BIND 9.18: the zone transferred
/// with the TSIG key at start, written to its file and served; BIND's
/// NOTIFY after a new serial brings it along; restarted while BIND is
/// down, it serves the zone from its file.
#[test]
fn named_is_a_secondary_of_bind() {
    if !bind_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (primary_port, secondary_port, control) = (free_port(), free_port(), free_port());
    std::fs::write(
        d.join("ywnds.com.zone"),
        ywnds_zone(1, "www IN CNAME mail\n"),
    )
    .unwrap();
    std::fs::write(
        d.join("primary.conf"),
        format!(
            "options {{\n  listen-on port {primary_port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n  directory \"{0}\";\n\
             recursion no;\n  pid-file \"{0}/primary.pid\";\n  session-keyfile \"{0}/primary-session.key\";\n\
             dnssec-validation no;\n  notify explicit;\n}};\n\
             controls {{ }};\n\
             key \"xfer-key\" {{ algorithm hmac-sha256; secret \"{SECRET}\"; }};\n\
             zone \"ywnds.com\" {{ type primary; file \"ywnds.com.zone\"; allow-transfer {{ key xfer-key; }};\n\
               also-notify {{ 127.0.0.1 port {secondary_port}; }}; }};\n",
            d.display()
        ),
    )
    .unwrap();
    let mut bind = start(Path::new("/usr/sbin/named"), d, "primary");
    assert!(wait_for(Duration::from_secs(20), || dig(
        primary_port,
        &["ywnds.com", "SOA"]
    )
    .contains("status: NOERROR")));
    std::fs::write(
        d.join("secondary.conf"),
        format!(
            "options {{\n  listen-on port {secondary_port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n  directory \"{0}\";\n\
             recursion no;\n  pid-file \"{0}/secondary.pid\";\n  dnssec-validation no;\n}};\n\
             key \"xfer-key\" {{ algorithm hmac-sha256; secret \"{SECRET}\"; }};\n\
             primaries upstream {{ 127.0.0.1 port {primary_port}; }};\n\
             zone \"ywnds.com\" {{ type slave; file \"secondary.db\"; masters {{ upstream key xfer-key; }}; }};\n\
             key \"rndc-key\" {{ algorithm hmac-sha256; secret \"{SECRET}\"; }};\n\
             controls {{ inet 127.0.0.1 port {control} allow {{ 127.0.0.1; }} keys {{ \"rndc-key\"; }}; }};\n",
            d.display()
        ),
    )
    .unwrap();
    let mut ours = start(&bin("named"), d, "secondary");
    let log = |name: &str| log_of(d, name);
    let answers = |name: &str, want: &str| answers(secondary_port, name, want);
    assert!(
        wait_for(Duration::from_secs(20), || answers(
            "www.ywnds.com",
            "127.0.0.1"
        )),
        "named did not load the zone:\n{}\nBIND:\n{}",
        log("secondary"),
        log("primary")
    );
    let said = log("secondary");
    assert!(
        said.contains(&format!(
            "transfer of 'ywnds.com/IN' from 127.0.0.1#{primary_port}: Transfer completed: "
        )),
        "{said}"
    );
    assert!(std::fs::read_to_string(d.join("secondary.db"))
        .unwrap()
        .contains("mail.ywnds.com."));
    // The secondary answers as its primary does, AA included.
    let q = ["ywnds.com", "MX", "+norec"];
    let flags = |port: u16| {
        dig(port, &q)
            .lines()
            .filter(|l| l.starts_with(";; flags") || (!l.starts_with(';') && !l.is_empty()))
            .map(|l| l.split_once(" QUERY:").map_or(l, |(f, _)| f).to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(flags(secondary_port), flags(primary_port));
    // A new serial at BIND: its NOTIFY, then IXFR (answered in AXFR form).
    new_version(
        d,
        &bind,
        &ywnds_zone(2, "www IN CNAME mail\nnew IN A 192.0.2.9\n"),
    );
    assert!(
        wait_for(Duration::from_secs(20), || answers(
            "new.ywnds.com",
            "192.0.2.9"
        )),
        "named did not follow BIND's new serial:\n{}\nBIND:\n{}",
        log("secondary"),
        log("primary")
    );
    assert!(log("secondary").contains("received notify for zone 'ywnds.com'"));
    assert!(log("secondary").contains("zone ywnds.com/IN: transferred serial 2"));
    // Debian's rndc: refresh, retransfer (the whole zone again), zonestatus.
    std::fs::write(
        d.join("rndc.conf"),
        format!("key \"rndc-key\" {{ algorithm hmac-sha256; secret \"{SECRET}\"; }};\noptions {{ default-key \"rndc-key\"; }};\n"),
    )
    .unwrap();
    let rndc = |args: &[&str]| {
        let out = Command::new("/usr/sbin/rndc")
            .arg("-c")
            .arg(d.join("rndc.conf"))
            .args(["-s", "127.0.0.1", "-p", &control.to_string()])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert_eq!(
        rndc(&["refresh", "ywnds.com"]),
        (Some(0), "zone refresh queued\n".to_owned())
    );
    let (code, status) = rndc(&["zonestatus", "ywnds.com"]);
    assert_eq!(code, Some(0));
    assert!(status.contains("type: secondary"), "{status}");
    let completed = |text: &str| text.matches("Transfer completed: 1 messages").count();
    let before = completed(&log("secondary"));
    assert_eq!(rndc(&["retransfer", "ywnds.com"]).0, Some(0));
    assert!(
        wait_for(Duration::from_secs(10), || completed(&log("secondary"))
            > before),
        "no transfer after retransfer:\n{}",
        log("secondary")
    );
    // BIND gone, named restarted: the zone comes from its file.
    let _ = bind.0.kill();
    let _ = bind.0.wait();
    let _ = ours.0.kill();
    let _ = ours.0.wait();
    let _ours = start(&bin("named"), d, "secondary");
    assert!(
        wait_for(Duration::from_secs(20), || answers(
            "new.ywnds.com",
            "192.0.2.9"
        )),
        "named did not serve the zone from its file:\n{}",
        log("secondary")
    );
}

/// A secondary zone without data is SERVFAIL, as in BIND: before its
/// first transfer (its primary down), and once the SOA's expire time has
/// passed without a primary answering.
#[test]
fn secondary_zones_without_data_are_servfail() {
    if !bind_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (primary_port, secondary_port, nobody) = (free_port(), free_port(), free_port());
    std::fs::write(
        d.join("short.test.zone"),
        "$TTL 60\n@ IN SOA ns.short.test. root.short.test. 1 3600 600 3 60\n@ IN NS ns\nns IN A 127.0.0.1\n",
    )
    .unwrap();
    std::fs::write(
        d.join("primary.conf"),
        format!(
            "options {{\n  listen-on port {primary_port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n  directory \"{0}\";\n\
             recursion no;\n  pid-file \"{0}/primary.pid\";\n  session-keyfile \"{0}/primary-session.key\";\n\
             dnssec-validation no;\n  notify no;\n}};\ncontrols {{ }};\n\
             zone \"short.test\" {{ type primary; file \"short.test.zone\"; }};\n",
            d.display()
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("secondary.conf"),
        format!(
            "options {{\n  listen-on port {secondary_port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n  directory \"{0}\";\n\
             recursion no;\n  pid-file \"{0}/secondary.pid\";\n  dnssec-validation no;\n  allow-notify {{ 127.0.0.3; }};\n}};\ncontrols {{ }};\n\
             zone \"short.test\" {{ type secondary; primaries {{ 127.0.0.1 port {primary_port}; }}; }};\n\
             zone \"dead.test\" {{ type secondary; file \"dead.db\"; primaries {{ 127.0.0.1 port {nobody}; }}; }};\n",
            d.display()
        ),
    )
    .unwrap();
    let mut bind = start(Path::new("/usr/sbin/named"), d, "primary");
    assert!(wait_for(Duration::from_secs(20), || dig(
        primary_port,
        &["short.test", "SOA"]
    )
    .contains("status: NOERROR")));
    let _ours = start(&bin("named"), d, "secondary");
    let log = || log_of(d, "secondary");
    assert!(
        wait_for(Duration::from_secs(10), || dig(
            secondary_port,
            &["short.test", "SOA"]
        )
        .contains("status: NOERROR")),
        "{}",
        log()
    );
    // NOTIFY from a primary, or a host the global allow-notify names, is
    // taken; from anyone else refused, as BIND does.
    let notify = |source: &str| {
        dig_from(
            "127.0.0.1",
            source,
            secondary_port,
            &["+opcode=notify", "+norec", "short.test", "SOA"],
        )
    };
    assert!(notify("127.0.0.1").contains("status: NOERROR"));
    assert!(notify("127.0.0.3").contains("status: NOERROR"));
    assert!(notify("127.0.0.2").contains("status: REFUSED"));
    assert!(
        log().contains("refused notify from non-primary: 127.0.0.2#"),
        "{}",
        log()
    );
    // Never transferred: SERVFAIL.
    assert!(dig(secondary_port, &["www.dead.test", "A"]).contains("status: SERVFAIL"));
    // The primary gone past the expire time (3 s): SERVFAIL too.
    let _ = bind.0.kill();
    let _ = bind.0.wait();
    assert!(
        wait_for(Duration::from_secs(15), || dig(
            secondary_port,
            &["short.test", "SOA"]
        )
        .contains("status: SERVFAIL")),
        "{}",
        log()
    );
    assert!(log().contains("zone short.test/IN: expired"), "{}", log());
}

/// The project's own named.conf reader and BIND's agree on the grammar
/// used here (key elements in address match lists).
#[test]
fn key_elements_load_in_named_checkconf() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("named.conf");
    std::fs::write(
        &conf,
        format!(
            "key \"xfer-key\" {{ algorithm hmac-sha256; secret \"{SECRET}\"; }};\n\
             options {{ directory \"{}\"; allow-transfer {{ !key xfer-key; key \"other\"; 127.0.0.1; }}; }};\n\
             key \"other\" {{ algorithm hmac-sha1; secret \"{SECRET}\"; }};\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let ours = Command::new(bin("named-checkconf"))
        .arg(&conf)
        .output()
        .unwrap();
    assert!(ours.status.success(), "{ours:?}");
    if Path::new("/usr/bin/named-checkconf").exists() {
        let theirs = Command::new("/usr/bin/named-checkconf")
            .arg(&conf)
            .output()
            .unwrap();
        assert!(theirs.status.success(), "{theirs:?}");
    }
}
