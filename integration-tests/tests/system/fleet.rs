//! A fleet of postfix-rs hosts, each in a network namespace of its own on
//! one switch (testkit::fleet): two name servers (ns1 primary of
//! fleet.test, ns2 its secondary, kept in step by NOTIFY and zone
//! transfers), two MX hosts (mx1 at preference 10, the domain's mail
//! host; mx2 at 20, a backup MX) and a sending host. Faults are played as
//! a network plays them: a link cut and restored, a name server killed.

use std::path::Path;
use std::time::{Duration, Instant};

use testkit::fleet::Fleet;
use testkit::{bin, wait_for, Instance, MailInstance, NameServer};

const ZONE: &str = "$TTL 60\n@ IN SOA ns1.fleet.test. root.fleet.test. SERIAL 60 10 3600 30\n\
    @ IN NS ns1.fleet.test.\n@ IN NS ns2.fleet.test.\n\
    @ IN MX 10 mx1.fleet.test.\n@ IN MX 20 mx2.fleet.test.\n\
    ns1 IN A 10.77.0.1\nns2 IN A 10.77.0.2\nmx1 IN A 10.77.0.3\nmx2 IN A 10.77.0.4\nsender IN A 10.77.0.5\n";

fn zone(serial: u32, extra: &str) -> String {
    format!("{}{extra}", ZONE.replace("SERIAL", &serial.to_string()))
}

/// named in `host`'s namespace on port 53, with `zone_statement`.
fn name_server(fleet: &Fleet, d: &Path, host: &str, zone_statement: &str) -> NameServer {
    let dir = d.join(host);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("named.conf"),
        format!(
            "options {{\n  listen-on {{ any; }};\n  listen-on-v6 {{ none; }};\n  directory \"{}\";\n\
             recursion no;\n  pid-file none;\n  dnssec-validation no;\n}};\ncontrols {{ }};\n{zone_statement}",
            dir.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("log")).unwrap();
    NameServer(
        std::process::Command::new("ip")
            .args(["netns", "exec", &fleet.host(host).netns])
            .arg(bin("named"))
            .args(["-g", "-c"])
            .arg(dir.join("named.conf"))
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// A mail instance in `host`'s namespace, smtpd on port 25 of every
/// address there, resolving with the fleet's name servers.
fn mail_host(fleet: &Fleet, host: &str, extra: &str) -> MailInstance {
    let h = fleet.host(host);
    let mut m = Instance::mail(&format!(
        "myhostname = {host}.fleet.test\nmydomain = {host}.fleet.test\ninet_interfaces = all\n\
         dns_servers = 10.77.0.1, 10.77.0.2\nsmtp_connect_timeout = 2s\n{extra}"
    ));
    let master = std::fs::read_to_string(m.etc.join("master.cf")).unwrap();
    // As in Postfix's stock master.cf: relay_domains mail goes by `relay`.
    m.write_master_cf(&format!(
        "{}relay unix - - n - - smtp\n",
        master.replace(&format!("127.0.0.1:{}", m.port), "25")
    ));
    m.add_smtp();
    m.inst.netns = Some(h.netns.clone());
    m.postfix("start");
    m.wait_children(&["25", "cleanup", "qmgr", "local"]);
    m
}

fn dig_in(fleet: &Fleet, host: &str, args: &[&str]) -> String {
    let out = fleet.exec(host, "dig", &[&["+time=1", "+tries=1"][..], args].concat());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The primary MX's link goes down under a load of messages: they go to
/// the backup MX, wait in its queue, and reach the primary's mailbox
/// once the link is back, each exactly once. Meanwhile a zone change on
/// ns1 reaches ns2 through NOTIFY, and with ns1 killed ns2 answers alone.
#[test]
fn the_backup_mx_holds_the_mail_while_the_primary_is_cut_off() {
    if !Fleet::available() {
        return;
    }
    const MESSAGES: usize = 2000;
    let fleet = Fleet::new(&["ns1", "ns2", "mx1", "mx2", "sender"]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("ns1")).unwrap();
    std::fs::write(d.join("ns1/fleet.test.zone"), zone(1, "")).unwrap();
    let mut ns1 = name_server(
        &fleet,
        d,
        "ns1",
        "zone \"fleet.test\" { type primary; file \"fleet.test.zone\"; };\n",
    );
    let _ns2 = name_server(
        &fleet,
        d,
        "ns2",
        "zone \"fleet.test\" { type secondary; file \"fleet.test.db\"; primaries { 10.77.0.1; }; };\n",
    );
    assert!(
        wait_for(Duration::from_secs(20), || dig_in(
            &fleet,
            "sender",
            &["@10.77.0.2", "mx2.fleet.test", "+short"]
        )
        .contains("10.77.0.4")),
        "ns2 did not load fleet.test from ns1:\n{}",
        std::fs::read_to_string(d.join("ns2/log")).unwrap_or_default()
    );
    let mx1 = mail_host(&fleet, "mx1", "mydestination = fleet.test\n");
    let mx2 = mail_host(
        &fleet,
        "mx2",
        "mydestination =\nrelay_domains = fleet.test\nrelay_recipient_maps = texthash:$config_directory/relay_recipients\n",
    );
    std::fs::write(
        mx2.etc.join("relay_recipients"),
        "openstack@fleet.test OK\n",
    )
    .unwrap();
    mx2.postfix("reload");
    let sender = mail_host(&fleet, "sender", "");

    // mx1 cut off; the load goes in at the sender.
    fleet.link("mx1", false);
    let started = Instant::now();
    let out = fleet.exec(
        "sender",
        "smtp-source",
        &[
            "-m",
            &MESSAGES.to_string(),
            "-s",
            "10",
            "-l",
            "2048",
            "-f",
            "hadoop@sender.fleet.test",
            "-t",
            "openstack@fleet.test",
            "127.0.0.1:25",
        ],
    );
    assert!(out.status.success(), "smtp-source: {out:?}");
    let relayed = || {
        sender
            .log_text()
            .lines()
            .filter(|l| {
                l.contains("relay=mx2.fleet.test[10.77.0.4]:25") && l.contains("status=sent")
            })
            .count()
    };
    assert!(
        wait_for(Duration::from_secs(300), || relayed() == MESSAGES),
        "{} of {MESSAGES} went to the backup MX:\n{}",
        relayed(),
        sender.log_text().lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
    let queued = mx2.queue_files("deferred").len() + mx2.queue_files("active").len();
    assert!(
        queued > 0,
        "the backup MX holds nothing:\n{}",
        mx2.log_text()
    );
    assert!(mx1.maildir("openstack").is_empty());

    // A change of the zone on ns1 reaches ns2 through NOTIFY; then ns1
    // dies and ns2 answers alone.
    std::fs::write(
        d.join("ns1/fleet.test.zone"),
        zone(2, "new IN A 10.77.0.9\n"),
    )
    .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(ns1.0.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || dig_in(
            &fleet,
            "sender",
            &["@10.77.0.2", "new.fleet.test", "+short"]
        )
        .contains("10.77.0.9")),
        "ns2 did not follow ns1:\n{}",
        std::fs::read_to_string(d.join("ns2/log")).unwrap_or_default()
    );
    let _ = ns1.0.kill();
    let _ = ns1.0.wait();

    // The link comes back: the backup MX delivers everything, once.
    fleet.link("mx1", true);
    assert!(
        wait_for(Duration::from_secs(300), || mx1.maildir("openstack").len()
            >= MESSAGES),
        "{} of {MESSAGES} reached mx1:\n{}",
        mx1.maildir("openstack").len(),
        mx2.log_text()
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(wait_for(Duration::from_secs(30), || mx2
        .queue_files("deferred")
        .is_empty()
        && mx2.queue_files("active").is_empty()));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(mx1.maildir("openstack").len(), MESSAGES, "duplicates");
    eprintln!(
        "fleet: {MESSAGES} messages through the backup MX in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
