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
    write_named_conf(d, host, zone_statement);
    run_named(fleet, d, host)
}

fn write_named_conf(d: &Path, host: &str, zone_statement: &str) {
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
}

/// named in `host`'s namespace on its named.conf, logging to `d/HOST/log`.
fn run_named(fleet: &Fleet, d: &Path, host: &str) -> NameServer {
    let dir = d.join(host);
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(dir.join("log"))
        .unwrap();
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
/// address there, resolving with the fleet's name servers. A message a
/// killed cleanup left half written (never acknowledged) is swept after
/// `ipc_timeout`, here 15 s, so that queues drain within a test.
fn mail_host(fleet: &Fleet, host: &str, extra: &str) -> MailInstance {
    let h = fleet.host(host);
    let mut m = Instance::mail(&format!(
        "myhostname = {host}.fleet.test\nmydomain = {host}.fleet.test\ninet_interfaces = all\n\
         dns_servers = 10.77.0.1, 10.77.0.2\nsmtp_connect_timeout = 2s\n\
         ipc_timeout = 15s\n{extra}"
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

/// The fleet's five hosts running: ns1 and ns2 serving fleet.test (ns2
/// loaded from ns1), mx1 its mail host, mx2 its backup MX, the sender.
struct Site {
    fleet: Fleet,
    dir: tempfile::TempDir,
    ns1: NameServer,
    ns2: NameServer,
    mx1: MailInstance,
    mx2: MailInstance,
    sender: MailInstance,
}

impl Site {
    fn start() -> Self {
        let fleet = Fleet::new(&["ns1", "ns2", "mx1", "mx2", "sender"]);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("ns1")).unwrap();
        std::fs::write(d.join("ns1/fleet.test.zone"), zone(1, "")).unwrap();
        let ns1 = name_server(
            &fleet,
            d,
            "ns1",
            "zone \"fleet.test\" { type primary; file \"fleet.test.zone\"; };\n",
        );
        let ns2 = name_server(
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
        Self {
            fleet,
            dir,
            ns1,
            ns2,
            mx1,
            mx2,
            sender,
        }
    }
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
    let mut site = Site::start();
    let Site {
        fleet,
        dir,
        ns1,
        mx1,
        mx2,
        sender,
        ..
    } = &mut site;
    let d = dir.path();
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
        sender
            .log_text()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let queued = mx2.queued_in(&["deferred", "active"]);
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
            fleet,
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

/// Joins `netns` for the calling thread only (a network namespace is a
/// thread's), so its sockets are the host's.
fn enter(netns: &str) {
    let f = std::fs::File::open(format!("/var/run/netns/{netns}")).unwrap();
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
}

/// One message to the sender's smtpd, as a client that may meet a killed
/// daemon: true once its 250 came.
fn send_once(id: usize) -> std::io::Result<bool> {
    use std::io::{BufRead, BufReader, Write};
    let s = std::net::TcpStream::connect("127.0.0.1:25")?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    let mut reply = || -> std::io::Result<String> {
        loop {
            let mut line = String::new();
            if r.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(line);
            }
        }
    };
    if !reply()?.starts_with("220") {
        return Ok(false);
    }
    for (cmd, want) in [
        ("EHLO client.sender.fleet.test".to_owned(), "250"),
        ("MAIL FROM:<hadoop@sender.fleet.test>".to_owned(), "250"),
        ("RCPT TO:<openstack@fleet.test>".to_owned(), "250"),
        ("DATA".to_owned(), "354"),
    ] {
        w.write_all(format!("{cmd}\r\n").as_bytes())?;
        if !reply()?.starts_with(want) {
            return Ok(false);
        }
    }
    w.write_all(
        format!("Message-ID: <fleet-{id}@sender.fleet.test>\r\nSubject: chaos {id}\r\n\r\nmessage {id}\r\n.\r\n")
            .as_bytes(),
    )?;
    let done = reply()?.starts_with("250");
    let _ = w.write_all(b"QUIT\r\n");
    Ok(done)
}

/// The fleet's message ids in mx1's mailbox: (distinct, all, each id's
/// delivery time).
fn delivered(
    mx1: &MailInstance,
) -> (
    usize,
    usize,
    std::collections::HashMap<usize, std::time::SystemTime>,
) {
    let mut when = std::collections::HashMap::new();
    let mut all = 0;
    for path in mx1.maildir("openstack") {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let Some(id) = text
            .split("Message-ID: <fleet-")
            .nth(1)
            .and_then(|t| t.split('@').next())
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        all += 1;
        let t = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .unwrap_or(std::time::SystemTime::now());
        when.entry(id).or_insert(t);
    }
    (when.len(), all, when)
}

/// A small random number generator (xorshift), seeded from the clock.
struct Dice(u64);

impl Dice {
    fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        Self(seed)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The fleet under chaos: while messages go in at the sender, daemons on
/// any mail host and the name servers are killed with SIGKILL (named
/// started again after a moment) and links flap, some with loss and
/// delay (`tc netem`). Every message whose 250 the client got reaches
/// mx1's mailbox; none is lost; duplicates (a 250 lost on the way makes
/// the client send again) are counted; every queue drains. Sizes come
/// from PFX_FLEET_MESSAGES (default 500) and PFX_FLEET_SECONDS (how long
/// the sending lasts, default 20); scripts/fleet runs it larger and
/// docs/RELIABILITY.md keeps its figures.
#[test]
fn chaos_in_the_fleet_loses_nothing() {
    if !Fleet::available() {
        return;
    }
    let messages: usize = std::env::var("PFX_FLEET_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    // Spread over this long, so that the chaos meets every stage.
    let seconds: f64 = std::env::var("PFX_FLEET_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20.0);
    let pace = Duration::from_secs_f64(seconds / messages.max(1) as f64);
    let mut site = Site::start();
    let Site {
        fleet,
        dir,
        ns1,
        ns2,
        mx1,
        mx2,
        sender,
    } = &mut site;
    let hosts: [(&str, &MailInstance); 3] = [("mx1", mx1), ("mx2", mx2), ("sender", sender)];

    let started = Instant::now();
    let injector = {
        let netns = fleet.host("sender").netns.clone();
        std::thread::spawn(move || {
            enter(&netns);
            let mut acked = Vec::new();
            let mut attempts = 0;
            for id in 0..messages {
                std::thread::sleep(pace);
                for _ in 0..50 {
                    attempts += 1;
                    if let Ok(true) = send_once(id) {
                        acked.push((id, std::time::SystemTime::now()));
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            (acked, attempts)
        })
    };
    let (mut kills, mut named_kills, mut flaps, mut netems) = (0, 0, 0, 0);
    let mut dice = Dice::new();
    while !injector.is_finished() {
        std::thread::sleep(Duration::from_millis(200 + dice.below(400)));
        match dice.below(12) {
            0..=6 => {
                let (_, host) = hosts[dice.below(3) as usize];
                let victims: Vec<i32> = host
                    .children()
                    .into_iter()
                    .filter(|p| {
                        matches!(
                            p.service(),
                            Some("25" | "cleanup" | "qmgr" | "smtp" | "relay" | "local")
                        )
                    })
                    .map(|p| p.pid)
                    .collect();
                if let Some(pid) = victims.get(dice.below(victims.len().max(1) as u64) as usize) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(*pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    kills += 1;
                }
            }
            7 | 8 => {
                let name = ["mx1", "mx2"][dice.below(2) as usize];
                fleet.link(name, false);
                std::thread::sleep(Duration::from_millis(300 + dice.below(1500)));
                fleet.link(name, true);
                flaps += 1;
            }
            10 | 11 => {
                // A name server killed, and started again a moment later
                // (ns2 from the zone file it keeps).
                let (name, server) = if dice.below(2) == 0 {
                    ("ns1", &mut *ns1)
                } else {
                    ("ns2", &mut *ns2)
                };
                let _ = server.0.kill();
                let _ = server.0.wait();
                named_kills += 1;
                std::thread::sleep(Duration::from_millis(300 + dice.below(1200)));
                *server = run_named(fleet, dir.path(), name);
            }
            _ => {
                let name = ["mx1", "mx2", "sender"][dice.below(3) as usize];
                if fleet.netem(name, "loss 5% delay 20ms 10ms") {
                    std::thread::sleep(Duration::from_millis(500 + dice.below(1500)));
                    fleet.netem(name, "");
                    netems += 1;
                }
            }
        }
    }
    let (acked, attempts) = injector.join().unwrap();
    for name in ["mx1", "mx2", "sender"] {
        fleet.link(name, true);
        fleet.netem(name, "");
    }
    // Every acknowledged message arrives; every queue drains.
    let missing = || {
        let ids = delivered(mx1).2;
        acked.iter().filter(|(id, _)| !ids.contains_key(id)).count()
    };
    assert!(
        wait_for(Duration::from_secs(600), || missing() == 0),
        "lost: {} of {} acknowledged messages never arrived",
        missing(),
        acked.len()
    );
    for (name, host) in hosts {
        assert!(
            wait_for(Duration::from_secs(120), || [
                "incoming", "active", "deferred", "maildrop"
            ]
            .iter()
            .all(|q| host.queue_files(q).is_empty())),
            "{name}'s queue did not drain: {:?}\n{}",
            ["incoming", "active", "deferred", "maildrop"].map(|q| (q, host.queue_files(q))),
            host.log_text()
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let (distinct, all, when) = delivered(mx1);
    let mut delays: Vec<f64> = acked
        .iter()
        .filter_map(|(id, t)| {
            when.get(id)
                .map(|w| w.duration_since(*t).map_or(0.0, |d| d.as_secs_f64()))
        })
        .collect();
    delays.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        delays
            .get(((delays.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    eprintln!(
        "fleet chaos: {} messages acknowledged ({attempts} attempts), {kills} mail daemons and {named_kills} name servers killed, {flaps} link flaps, {netems} netem spells, \
         delivery delay p50 {:.0} ms p99 {:.0} ms, lost 0, duplicated {}, {:.0} s",
        acked.len(),
        pct(0.5) * 1000.0,
        pct(0.99) * 1000.0,
        all - distinct,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        acked.len(),
        messages,
        "some messages were never acknowledged"
    );
}
