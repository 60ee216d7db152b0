//! rndc: Debian's own rndc (bind9-utils) drives postfix-rs named over its
//! control channel with a key made by `rndc-confgen -a`, and gets what
//! BIND 9.18 gives for the same commands on the same configuration: the
//! same texts, error messages and exit codes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use testkit::{bin, dig, free_port, wait_for, ywnds_zone};

const RNDC: &str = "/usr/sbin/rndc";
const BIND: &str = "/usr/sbin/named";

/// A named (ours or BIND's) in the foreground on its own directory.
struct Server {
    child: Child,
    dir: PathBuf,
    port: u16,
    control: u16,
    read_only: u16,
    denied: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn conf(s: &Server, keys: &Path, extra: &str) -> String {
    let d = s.dir.display();
    format!(
        "options {{\n  listen-on port {} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n  directory \"{d}\";\n\
         recursion no;\n  pid-file none;\n  session-keyfile \"{d}/session.key\";\n  dnssec-validation no;\n}};\n\
         include \"{}\";\n\
         controls {{\n  inet 127.0.0.1 port {} allow {{ 127.0.0.1; }} keys {{ \"rndc-key\"; }};\n\
         inet 127.0.0.1 port {} allow {{ 127.0.0.1; }} keys {{ \"rndc-key\"; }} read-only yes;\n\
         inet 127.0.0.1 port {} allow {{ !127.0.0.1; any; }} keys {{ \"rndc-key\"; }};\n}};\n\
         zone \"ywnds.com\" IN {{ type master; file \"ywnds.com.zone\"; }};\n{extra}",
        s.port,
        keys.display(),
        s.control,
        s.read_only,
        s.denied
    )
}

/// Writes the zone with a fixed modification time, so that both servers
/// report the same "last loaded".
fn write_zone(dir: &Path, serial: u32, extra: &str, mtime: u64) {
    let path = dir.join("ywnds.com.zone");
    std::fs::write(&path, ywnds_zone(serial, extra)).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime))
        .unwrap();
}

fn start(program: &Path, root: &Path, name: &str, keys: &Path) -> Server {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut s = Server {
        child: Command::new("true").spawn().unwrap(),
        dir,
        port: free_port(),
        control: free_port(),
        read_only: free_port(),
        denied: free_port(),
    };
    write_zone(&s.dir, 1, "", 1_767_225_600);
    std::fs::write(s.dir.join("named.conf"), conf(&s, keys, "")).unwrap();
    let log = std::fs::File::create(s.dir.join("log")).unwrap();
    let _ = s.child.wait();
    s.child = Command::new(program)
        .args(["-g", "-c"])
        .arg(s.dir.join("named.conf"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let (port, control) = (s.port, s.control);
    assert!(
        wait_for(Duration::from_secs(20), || {
            dig(port, &["ywnds.com", "SOA", "+norec"]).contains("status: NOERROR")
                && std::net::TcpStream::connect(("127.0.0.1", control)).is_ok()
        }),
        "{name} did not start:\n{}",
        log_text(&s)
    );
    s
}

fn log_text(s: &Server) -> String {
    std::fs::read_to_string(s.dir.join("log")).unwrap_or_default()
}

/// `rndc -k KEY -s 127.0.0.1 -p PORT ARGS`: exit code, stdout, stderr.
fn rndc(key: &Path, port: u16, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(RNDC)
        .arg("-k")
        .arg(key)
        .args(["-s", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What `rndc status` says, by line name: the values differ (version,
/// times), the lines should not. BIND's recursion and TCP client counters
/// are not kept by this named (README: rndc).
fn status_lines(out: &str) -> Vec<String> {
    out.lines()
        .map(|l| l.split(':').next().unwrap_or(l).to_owned())
        .filter(|l| {
            !matches!(
                l.as_str(),
                "recursive clients" | "tcp clients" | "TCP high-water"
            )
        })
        .collect()
}

/// Runs rndc and writes its answer into the transcript `t`.
fn step(t: &mut Vec<String>, key: &Path, port: u16, args: &[&str]) -> (i32, String) {
    let (code, out, err) = rndc(key, port, args);
    t.push(format!("{args:?} -> {code}\n{out}{err}"));
    (code, out)
}

/// Drives one server through the commands an administrator uses; returns
/// the transcript to compare with the other server's.
fn session(s: &mut Server, key: &Path, other_key: &Path) -> Vec<String> {
    let mut t = Vec::new();
    let (code, out) = step(&mut t, key, s.control, &["status"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with("server is up and running\n"), "{out}");
    step(&mut t, key, s.control, &["reload"]);
    step(&mut t, key, s.control, &["reload", "ywnds.com"]);
    // A changed zone file is read again by `reload ZONE`.
    write_zone(&s.dir, 2, "new IN A 127.0.0.9\n", 1_767_312_000);
    step(&mut t, key, s.control, &["reload", "ywnds.com"]);
    let port = s.port;
    assert!(
        wait_for(Duration::from_secs(5), || dig(
            port,
            &["new.ywnds.com", "A", "+short"]
        )
        .contains("127.0.0.9")),
        "the reloaded zone is not served"
    );
    for args in [
        &["reload", "nosuch.com"][..],
        &["reload", "ywnds.com", "CH"],
        &["reload", "ywnds.com", "IN", "internal"],
        &["zonestatus"],
        &["zonestatus", "ywnds.com"],
        &["querylog", "bogus"],
        &["frob"],
        &["freeze", "ywnds.com"],
        &["thaw"],
        &["sync"],
        &["flush"],
        &["flush", "nosuchview"],
        &["null"],
        &["retransfer", "ywnds.com"],
        &["refresh", "ywnds.com"],
        &["notify", "ywnds.com"],
        &["notify"],
        &["querylog", "on"],
    ] {
        step(&mut t, key, s.control, args);
    }
    // With query logging on, a query is logged as BIND logs it.
    dig(port, &["www.ywnds.com", "A"]);
    let logged = wait_for(Duration::from_secs(5), || {
        log_text(s).contains("(www.ywnds.com): query: www.ywnds.com IN A +E(0) (127.0.0.1)")
    });
    t.push(format!("query logged: {logged}"));
    step(&mut t, key, s.control, &["querylog", "off"]);
    // reconfig reads named.conf again and loads new zones only; an
    // existing zone's changed file waits for `reload`.
    std::fs::write(
        s.dir.join("new.test.zone"),
        "$TTL 300\n@ IN SOA ns.new.test. root.new.test. 1 3600 600 86400 300\n@ IN NS ns.ywnds.com.\n@ IN A 127.0.0.7\n",
    )
    .unwrap();
    let keys = key.to_path_buf();
    std::fs::write(
        s.dir.join("named.conf"),
        conf(
            s,
            &keys,
            "zone \"new.test\" { type master; file \"new.test.zone\"; };\n",
        ),
    )
    .unwrap();
    write_zone(&s.dir, 3, "newer IN A 127.0.0.10\n", 1_767_398_400);
    step(&mut t, key, s.control, &["reconfig"]);
    t.push(format!(
        "new zone after reconfig: {:?}, changed zone: {:?}",
        dig(port, &["new.test", "A", "+short"]).trim(),
        dig(port, &["newer.ywnds.com", "A", "+short"]).trim()
    ));
    step(&mut t, key, s.control, &["reload"]);
    t.push(format!(
        "changed zone after reload: {:?}",
        dig(port, &["newer.ywnds.com", "A", "+short"]).trim()
    ));
    // A read-only channel answers status but refuses the rest.
    let (code, out) = step(&mut t, key, s.read_only, &["status"]);
    t.push(format!("read-only status: {code} {:?}", status_lines(&out)));
    step(&mut t, key, s.read_only, &["reload"]);
    // Refused clients and wrong keys get the connection closed, and a log line.
    let denied = rndc(key, s.denied, &["status"]);
    t.push(format!("denied: {}", denied.0));
    let wrong = rndc(other_key, s.control, &["status"]);
    t.push(format!("wrong key: {} {}", wrong.0, wrong.2));
    let log = log_text(s);
    t.push(format!(
        "logged rejection: {}, bad auth: {}",
        log.contains("rejected command channel message from 127.0.0.1#"),
        log.contains("invalid command from 127.0.0.1#") && log.contains(": bad auth")
    ));
    let (code, _) = step(&mut t, key, s.control, &["dumpdb", "-all"]);
    // BIND writes the dump in the background.
    let mut dump = String::new();
    let complete = wait_for(Duration::from_secs(5), || {
        dump = std::fs::read_to_string(s.dir.join("named_dump.db")).unwrap_or_default();
        dump.trim_end().ends_with("; Dump complete")
    });
    t.push(format!(
        "dumpdb: {code} {} {complete}",
        dump.starts_with(";\n; Start view _default\n;\n")
    ));
    // status lines, compared by name.
    let (_, out, _) = rndc(key, s.control, &["status"]);
    t.push(format!("status lines: {:?}", status_lines(&out)));
    step(&mut t, key, s.control, &["stop"]);
    let mut exited = None;
    wait_for(Duration::from_secs(10), || {
        exited = s.child.try_wait().unwrap();
        exited.is_some()
    });
    t.push(format!("exited: {:?}", exited.map(|e| e.code())));
    t
}

#[test]
fn debian_rndc_drives_named_as_it_drives_bind() {
    if !Path::new(RNDC).exists() {
        eprintln!("skipped: Debian's rndc is not installed (scripts/setup installs bind9-utils)");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let key = root.path().join("rndc.key");
    let other = root.path().join("other.key");
    for k in [&key, &other] {
        let out = Command::new("/usr/sbin/rndc-confgen")
            .args(["-a", "-k", "rndc-key", "-c"])
            .arg(k)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let mut ours = start(&bin("named"), root.path(), "ours", &key);
    let ours_said = session(&mut ours, &key, &other);
    let text = log_text(&ours);
    let joined = ours_said.join("\n");
    for want in [
        "[\"reload\"] -> 0\nserver reload successful\n",
        "[\"reload\", \"ywnds.com\"] -> 0\nzone reload up-to-date\n",
        "[\"reload\", \"ywnds.com\"] -> 0\nzone reload queued\n",
        "[\"reload\", \"nosuch.com\"] -> 1\nrndc: 'reload' failed: not found\nno matching zone 'nosuch.com' in any view\n",
        "[\"frob\"] -> 1\nrndc: 'frob' failed: unknown command\n",
        "query logged: true",
        "new zone after reconfig: \"127.0.0.7\", changed zone: \"\"",
        "changed zone after reload: \"127.0.0.10\"",
        "[\"reload\"] -> 1\nrndc: 'reload' failed: failure\n",
        "denied: 1",
        "wrong key: 1 rndc: connection to remote host closed.",
        "logged rejection: true, bad auth: true",
        "dumpdb: 0 true true",
        "[\"stop\"] -> 0\n",
        "exited: Some(Some(0))",
    ] {
        assert!(joined.contains(want), "missing {want:?} in:\n{joined}\nlog:\n{text}");
    }
    // The same session against BIND 9.18 gives the same transcript.
    if !Path::new(BIND).exists() {
        eprintln!("BIND's named is not installed: not compared (scripts/setup installs bind9)");
        return;
    }
    let mut bind = start(Path::new(BIND), root.path(), "bind", &key);
    let bind_said = session(&mut bind, &key, &other);
    let pairs: Vec<_> = ours_said.iter().zip(&bind_said).collect();
    for (o, b) in &pairs {
        // The first status's values differ; its lines are compared at the end.
        if o.starts_with("[\"status\"]") {
            continue;
        }
        assert_eq!(o, b, "postfix-rs named (left) and BIND (right) differ");
    }
    assert_eq!(ours_said.len(), bind_said.len());
}

/// A reconfig that removes a control channel closes the connections
/// open on it too: whoever held one cannot go on using rules that no
/// longer exist.
#[test]
fn a_removed_channel_closes_its_open_connections() {
    if !Path::new(RNDC).exists() {
        eprintln!("skipped: Debian's rndc is not installed (scripts/setup installs bind9-utils)");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let key = root.path().join("rndc.key");
    let out = Command::new("/usr/sbin/rndc-confgen")
        .args(["-a", "-k", "rndc-key", "-c"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let s = start(&bin("named"), root.path(), "ours", &key);
    let mut open = std::net::TcpStream::connect(("127.0.0.1", s.read_only)).unwrap();
    let text = conf(&s, &key, "");
    let read_only_line = text
        .lines()
        .find(|l| l.contains("read-only yes"))
        .unwrap()
        .to_owned();
    let without = text.replace(&format!("{read_only_line}\n"), "");
    std::fs::write(s.dir.join("named.conf"), without).unwrap();
    let (code, out, err) = rndc(&key, s.control, &["reconfig"]);
    assert_eq!(code, 0, "{out}{err}");
    open.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 16];
    let read = std::io::Read::read(&mut open, &mut buf);
    assert!(
        matches!(read, Ok(0))
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the connection stayed open: {read:?}\n{}",
        log_text(&s)
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", s.read_only)).is_err());
}
