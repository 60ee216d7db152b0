//! testkit: throw-away postfix-rs instances for black-box tests.
//!
//! An [`Instance`] is a temporary directory holding `etc/` (main.cf,
//! master.cf), `queue/`, a `maillog` file and a `libexec/` daemon directory
//! that links to the built binaries (plus any test scripts). Tests drive it
//! only through the built commands (`postfix`, `postconf`), sockets, the log
//! and /proc, as an administrator would. Binaries come from the cargo target
//! directory: run `cargo build --workspace --bins` first (scripts/test does).

pub mod debian;
pub mod fleet;
pub mod sql;
pub mod tls;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Where cargo put this test's binaries (target/debug or target/release).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/debug/deps/system-xxxx -> target/debug
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_owned()
}

/// Path of a built binary; panics with a hint when it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test does)",
        p.display()
    );
    p
}

/// A free port (free when asked; tests bind it soon after), for TCP and
/// UDP alike since DNS servers take both. Asked of every address at once,
/// so that it is free on 127.0.0.2 and the other loopback addresses some
/// tests listen on, not only on 127.0.0.1.
/// Never the same port twice in one test: two servers given one port
/// would share it (SO_REUSEPORT) and answer for each other.
///
/// nextest runs each test in a process of its own, and name servers bind
/// with SO_REUSEPORT (so a second one on the same port is not refused but
/// shares the packets): a port is also claimed for the whole run by an
/// flock on a file named after it, which other test processes respect
/// and which goes away with the process.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<(u16, nix::fcntl::Flock<std::fs::File>)>> =
        std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join("pfx-test-ports");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777));
    loop {
        let tcp = TcpListener::bind("0.0.0.0:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if given.iter().any(|(p, _)| *p == port)
            || std::net::UdpSocket::bind(("0.0.0.0", port)).is_err()
        {
            continue;
        }
        let path = dir.join(port.to_string());
        // Another user's file can still be locked, read only.
        let opened = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .or_else(|_| std::fs::File::open(&path));
        let Ok(file) = opened else {
            continue;
        };
        if let Ok(lock) = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        {
            given.push((port, lock));
            return port;
        }
    }
}

/// Polls `cond` every 50 ms until it holds or `limit` passes.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A process as /proc shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    pub uid: u32,
    pub args: Vec<String>,
}

impl Proc {
    /// The master.cf service name a child was started for (`-n NAME`).
    pub fn service(&self) -> Option<&str> {
        self.args
            .windows(2)
            .find(|w| w[0] == "-n")
            .map(|w| w[1].as_str())
    }
}

/// Every process on the machine, read from /proc.
pub fn processes() -> Vec<Proc> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.split_whitespace().next().unwrap_or("").to_owned())
        };
        let (Some(ppid), Some(uid)) = (field("PPid:"), field("Uid:")) else {
            continue;
        };
        let args = std::fs::read(e.path().join("cmdline"))
            .map(|b| {
                b.split(|&c| c == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        out.push(Proc {
            pid,
            ppid: ppid.parse().unwrap_or(0),
            uid: uid.parse().unwrap_or(0),
            args,
        });
    }
    out
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| {
            !s.lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
        })
        .unwrap_or(false)
}

/// A throw-away instance. Stopped (with `postfix abort` if need be) when dropped.
pub struct Instance {
    pub root: tempfile::TempDir,
    pub etc: PathBuf,
    pub queue: PathBuf,
    pub libexec: PathBuf,
    pub log: PathBuf,
    /// The network namespace its commands (and so its daemons) run in: a
    /// host of a [`fleet::Fleet`].
    pub netns: Option<String>,
}

impl Instance {
    /// An instance with the given master.cf and extra main.cf lines. The
    /// daemon directory links to every built binary.
    pub fn new(master_cf: &str, extra_main_cf: &str) -> Self {
        let root = tempfile::Builder::new()
            .prefix("pfx-test-")
            .tempdir()
            .unwrap();
        // Daemons that dropped privileges must still read the configuration.
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let etc = root.path().join("etc");
        let queue = root.path().join("queue");
        let libexec = root.path().join("libexec");
        let log = root.path().join("maillog");
        std::fs::create_dir(&etc).unwrap();
        std::fs::create_dir(&libexec).unwrap();
        for name in [
            "master",
            "fixture-service",
            "smtpd",
            "cleanup",
            "qmgr",
            "local",
            "bounce",
            "named",
            "pickup",
            "showq",
            "flush",
            "smtp",
            "lmtp",
            "proxymap",
            "pipe",
            "spawn",
            "anvil",
            "virtual",
        ] {
            std::os::unix::fs::symlink(bin(name), libexec.join(name)).unwrap();
        }
        let main_cf = format!(
            "# test instance\ncompatibility_level = 3.6\nmyhostname = mail.ywnds.com\nmydomain = ywnds.com\nmyorigin = $mydomain\n\
             queue_directory = {}\ndaemon_directory = {}\nmaillog_file = {}\nservice_throttle_time = 2s\nmaillog_file_prefixes = {}\n{extra_main_cf}",
            queue.display(),
            libexec.display(),
            log.display(),
            root.path().display()
        );
        std::fs::write(etc.join("main.cf"), main_cf).unwrap();
        std::fs::write(etc.join("master.cf"), master_cf).unwrap();
        Self {
            root,
            etc,
            queue,
            libexec,
            log,
            netns: None,
        }
    }

    /// A complete mail instance for ywnds.com: smtpd on a free loopback port,
    /// cleanup, qmgr, local and bounce; users `openstack` and `hadoop` (from a
    /// passwd file, homes under the instance), aliases built with newaliases.
    /// Started as root, the users are `nobody` underneath, so deliveries run
    /// without privileges as they would for real users.
    pub fn mail(extra_main_cf: &str) -> MailInstance {
        let port = free_port();
        let master_cf = format!(
            "127.0.0.1:{port} inet n - n - - smtpd\ncleanup unix n - n - 0 cleanup\nqmgr unix n - n 300 1 qmgr\n\
             local unix - n n - - local\nbounce unix - - n - 0 bounce\npickup unix n - n 60 1 pickup\n\
             showq unix n - n - - showq\nflush unix n - n - 0 flush\nanvil unix - - n - 1 anvil\n"
        );
        let tmp_main = "mydestination = $myhostname, localhost.$mydomain, localhost, $mydomain\nalias_maps = hash:$config_directory/aliases\nalias_database = hash:$config_directory/aliases\n\
             local_passwd_file = $config_directory/passwd\nhome_mailbox = Maildir/\nmynetworks = 127.0.0.1/32\n\
             inet_interfaces = 127.0.0.1\nminimal_backoff_time = 1s\nmaximal_backoff_time = 2s\nqueue_run_delay = 1s\n\
             smtpd_peername_lookup = no\n";
        // sendmail runs postdrop, postqueue and postalias from here.
        let commands = format!("command_directory = {}\n", bin_dir().display());
        let inst = Self::new(&master_cf, &format!("{tmp_main}{commands}{extra_main_cf}"));
        let (uid, gid) = if nix::unistd::Uid::effective().is_root() {
            let u = nix::unistd::User::from_name("nobody")
                .unwrap()
                .expect("user nobody");
            (u.uid.as_raw(), u.gid.as_raw())
        } else {
            (
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            )
        };
        let home = inst.root.path().join("home");
        let spool = inst.root.path().join("spool");
        std::fs::create_dir(&home).unwrap();
        std::fs::create_dir(&spool).unwrap();
        std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let mut passwd = String::new();
        for user in ["openstack", "hadoop"] {
            let h = home.join(user);
            std::fs::create_dir(&h).unwrap();
            nix::unistd::chown(&h, Some(uid.into()), Some(gid.into())).unwrap();
            passwd.push_str(&format!(
                "{user}:x:{uid}:{gid}:{user}:{}:/bin/sh\n",
                h.display()
            ));
        }
        std::fs::write(inst.etc.join("passwd"), passwd).unwrap();
        let mut main_cf = std::fs::read_to_string(inst.etc.join("main.cf")).unwrap();
        main_cf.push_str(&format!("mail_spool_directory = {}\n", spool.display()));
        std::fs::write(inst.etc.join("main.cf"), main_cf).unwrap();
        let m = MailInstance { inst, port, home };
        m.set_aliases("postmaster: root\nroot: openstack\nadmin: openstack, hadoop\n");
        m
    }

    /// Adds an executable script to the daemon directory.
    pub fn add_script(&self, name: &str, body: &str) {
        let p = self.libexec.join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Runs a built command with `-c ETC` first (in the instance's
    /// network namespace, if it has one).
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin(program));
                c
            }
            None => Command::new(bin(program)),
        };
        cmd.arg("-c").arg(&self.etc).args(args).output().unwrap()
    }

    /// `postfix CMD`, asserting success; returns stderr.
    pub fn postfix(&self, cmd: &str) -> String {
        let out = self.run("postfix", &[cmd]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "postfix {cmd} failed: {err}");
        err
    }

    pub fn write_master_cf(&self, text: &str) {
        std::fs::write(self.etc.join("master.cf"), text).unwrap();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, limit: Duration) -> bool {
        wait_for(limit, || self.log_text().contains(needle))
    }

    /// The first log line holding `needle`, waited for up to 30 s; panics
    /// with the whole log when it does not come.
    pub fn log_line(&self, needle: &str) -> String {
        assert!(
            self.wait_log(needle, Duration::from_secs(30)),
            "no {needle:?} in:\n{}",
            self.log_text()
        );
        self.log_text()
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_default()
            .to_owned()
    }

    /// The running master's pid, from the lock file it holds.
    pub fn master_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.queue.join("pid/master.pid")).ok()?;
        let pid: i32 = text.trim().parse().ok()?;
        alive(pid).then_some(pid)
    }

    /// master's children, as (service name, process).
    pub fn children(&self) -> Vec<Proc> {
        let Some(m) = self.master_pid() else {
            return vec![];
        };
        processes()
            .into_iter()
            .filter(|p| p.ppid == m && alive(p.pid))
            .collect()
    }

    /// The pid of the child serving `service`, once there is exactly one.
    pub fn child_pid(&self, service: &str) -> Option<i32> {
        let found: Vec<i32> = self
            .children()
            .iter()
            .filter(|p| p.service() == Some(service))
            .map(|p| p.pid)
            .collect();
        (found.len() == 1).then(|| found[0])
    }

    /// Waits until every named service has a child; returns their pids in order.
    pub fn wait_children(&self, services: &[&str]) -> Vec<i32> {
        let mut pids = vec![];
        let ok = wait_for(Duration::from_secs(10), || {
            pids = services.iter().filter_map(|s| self.child_pid(s)).collect();
            pids.len() == services.len()
        });
        assert!(
            ok,
            "services {services:?} did not all start; log:\n{}",
            self.log_text()
        );
        pids
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(pid) = self.master_pid() {
            let kids: Vec<i32> = self.children().iter().map(|p| p.pid).collect();
            let _ = self.run("postfix", &["abort"]);
            for p in kids.into_iter().chain([pid]) {
                if alive(p) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(p),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
}

/// The ywnds.com zone of the default instance (etc/zones), with `serial`.
pub fn ywnds_zone(serial: u32, extra: &str) -> String {
    format!(
        "$TTL 1D\n@ IN SOA ns.ywnds.com. root.ywnds.com. (\n  {serial} ; serial\n  3H 15M 1W 1D )\n\
         \tIN NS ns.ywnds.com.\n\tIN MX 10 mail.ywnds.com.\nns IN A 127.0.0.1\nmail IN A 127.0.0.1\n{extra}"
    )
}

/// The reverse zone for 127.0.0.0/24 with mail.ywnds.com at 127.0.0.1.
pub const REVERSE_ZONE: &str = "$TTL 1D\n@ IN SOA ns.ywnds.com. root.ywnds.com. 1 3H 15M 1W 1D\n\tIN NS ns.ywnds.com.\n1 IN PTR mail.ywnds.com.\n";

/// A process holding new namespaces (`unshare` with `namespaces`, e.g.
/// `--net`), its loopback up and `setup` (a shell command) run inside,
/// waiting until killed; `nsenter` joins it through /proc/PID/ns.
pub fn namespace_holder(namespaces: &[&str], setup: &str) -> std::process::Child {
    use std::io::BufRead;
    let script = format!("ip link set lo up && {setup} && echo ready && exec sleep 600");
    let mut holder = Command::new("unshare")
        .args(namespaces)
        .args(["sh", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("unshare (util-linux)");
    let mut line = String::new();
    std::io::BufReader::new(holder.stdout.take().expect("piped"))
        .read_line(&mut line)
        .expect("unshare's first line");
    assert_eq!(line.trim(), "ready", "unshare failed");
    holder
}

/// Runs `dig` against `server` on `port` from the local address `source`;
/// returns its output.
pub fn dig_from(server: &str, source: &str, port: u16, args: &[&str]) -> String {
    run_dig(|| {
        let mut dig = Command::new("dig");
        dig.arg(format!("@{server}"))
            .args(["-p", &port.to_string(), "-b", source])
            .args(["+time=2", "+tries=1", "+nocookie"])
            .args(args);
        dig
    })
}

/// Runs the dig that `command` makes, again when what came back was dig's
/// own query (QR clear, dig warns "query response not set"): a CI run once
/// read its query back on BIND's port, which no server sends; a real
/// answer never has QR clear, so asking again hides no server's fault.
fn run_dig(command: impl Fn() -> Command) -> String {
    let mut text = String::new();
    for _ in 0..5 {
        let out = command()
            .output()
            .expect("dig (bind9-dnsutils) is installed by scripts/setup");
        text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !text.contains(";; Warning: query response not set") {
            break;
        }
    }
    text
}

/// The status of a dig answer (`NOERROR`, `REFUSED`), `(no answer)` without one.
pub fn dns_status(out: &str) -> &str {
    out.split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("(no answer)")
}

/// Runs `dig` against a server on a loopback port; returns its output.
pub fn dig(port: u16, args: &[&str]) -> String {
    run_dig(|| {
        let mut dig = Command::new("dig");
        dig.args([
            "@127.0.0.1",
            "-p",
            &port.to_string(),
            "+time=2",
            "+tries=1",
            "+nocookie",
        ])
        .args(args);
        dig
    })
}

impl Instance {
    /// Writes named.conf (serving ywnds.com and its reverse zone from
    /// etc/zones, on `port`, with `options` added) and a master.cf line for
    /// named; returns the port.
    pub fn add_named(&self, options: &str, zone_extra: &str) -> u16 {
        let port = free_port();
        let zones = self.etc.join("zones");
        std::fs::create_dir_all(&zones).unwrap();
        std::fs::write(zones.join("ywnds.com.zone"), ywnds_zone(1, zone_extra)).unwrap();
        std::fs::write(zones.join("127.0.0.zone"), REVERSE_ZONE).unwrap();
        std::fs::write(
            self.etc.join("named.conf"),
            format!(
                "options {{\n  listen-on port {port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n  directory \"zones\";\n  recursion no;\n{options}}};\n\
                 controls {{ }};\n\
                 zone \"ywnds.com\" IN {{ type master; file \"ywnds.com.zone\"; }};\n\
                 zone \"0.0.127.in-addr.arpa\" IN {{ type master; file \"127.0.0.zone\"; }};\n"
            ),
        )
        .unwrap();
        let mut master = std::fs::read_to_string(self.etc.join("master.cf")).unwrap();
        master.push_str("named unix - - n - 1 named\n");
        self.write_master_cf(&master);
        port
    }
}

/// A running-ready mail instance (see [`Instance::mail`]).
pub struct MailInstance {
    pub inst: Instance,
    pub port: u16,
    pub home: PathBuf,
}

impl std::ops::Deref for MailInstance {
    type Target = Instance;
    fn deref(&self) -> &Instance {
        &self.inst
    }
}

impl MailInstance {
    /// Adds the smtp delivery agent to master.cf (mail for other domains).
    pub fn add_smtp(&self) {
        let mut master = std::fs::read_to_string(self.etc.join("master.cf")).unwrap();
        master.push_str("smtp unix - - n - - smtp\n");
        self.write_master_cf(&master);
    }

    /// Appends lines to main.cf.
    pub fn add_main_cf(&self, lines: &str) {
        let mut main = std::fs::read_to_string(self.etc.join("main.cf")).unwrap();
        main.push_str(lines);
        std::fs::write(self.etc.join("main.cf"), main).unwrap();
    }

    /// Replaces the aliases file and rebuilds its database with newaliases.
    pub fn set_aliases(&self, text: &str) {
        std::fs::write(self.etc.join("aliases"), text).unwrap();
        let out = Command::new(bin("newaliases"))
            .arg("-C")
            .arg(&self.etc)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "newaliases: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts it and waits until every service runs.
    pub fn start(&self) {
        self.postfix("start");
        self.wait_children(&[
            &format!("127.0.0.1:{}", self.port),
            "cleanup",
            "qmgr",
            "local",
            "bounce",
            "pickup",
            "showq",
            "flush",
        ]);
    }

    /// The files in a user's Maildir/new.
    pub fn maildir(&self, user: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.home.join(user).join("Maildir/new"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Waits until a user's Maildir holds `n` messages; returns their contents.
    pub fn wait_maildir(&self, user: &str, n: usize) -> Vec<Vec<u8>> {
        let ok = wait_for(Duration::from_secs(20), || self.maildir(user).len() >= n);
        assert!(
            ok,
            "{user} has {} of {n} messages; log:\n{}",
            self.maildir(user).len(),
            self.log_text()
        );
        self.maildir(user)
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .collect()
    }

    /// Waits until a user's Maildir holds `n` messages, then checks that no
    /// more arrive for a moment (a duplicate delivery would): returns them.
    pub fn exactly(&self, user: &str, n: usize) -> Vec<Vec<u8>> {
        let msgs = self.wait_maildir(user, n);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(self.maildir(user).len(), n, "{user} got more than {n}");
        msgs
    }

    /// Files in a queue directory (hashed subdirectories included).
    pub fn queue_files(&self, queue: &str) -> Vec<String> {
        use std::os::unix::fs::PermissionsExt;
        let mut out = Vec::new();
        let mut stack = vec![self.queue.join(queue)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else if e
                    .metadata()
                    .is_ok_and(|m| m.permissions().mode() & 0o777 == 0o400)
                {
                    // A file cleanup reserved (docs/QUEUE-FORMAT.md): not a message.
                } else {
                    out.push(e.file_name().to_string_lossy().into_owned());
                }
            }
        }
        out
    }

    /// The distinct messages in the named queues. A message moves between
    /// them (incoming/ to active/, active/ to deferred/ and back) while one
    /// directory is listed after another, and a single pass can miss or
    /// count it twice: passes are repeated until two in a row agree.
    pub fn queued_in(&self, queues: &[&str]) -> usize {
        let pass = || -> std::collections::BTreeSet<String> {
            queues.iter().flat_map(|q| self.queue_files(q)).collect()
        };
        let mut last = pass();
        for _ in 0..100 {
            let now = pass();
            if now == last {
                break;
            }
            last = now;
        }
        last.len()
    }
}

/// A plain SMTP client for protocol-level tests: it writes exactly what it
/// is given, so pipelining and malformed input can be tested.
pub struct Smtp {
    stream: std::net::TcpStream,
    reader: std::io::BufReader<std::net::TcpStream>,
}

impl Smtp {
    /// Connects from 127.0.0.1 and reads the greeting.
    pub fn connect(port: u16) -> (Self, String) {
        Self::connect_from("127.0.0.1", port)
    }

    /// Connects from a given loopback source address (to be outside mynetworks).
    pub fn connect_from(source: &str, port: u16) -> (Self, String) {
        Self::connect_between(source, "127.0.0.1", port)
    }

    /// Connects from `source` to a server on another loopback address.
    pub fn connect_between(source: &str, dest: &str, port: u16) -> (Self, String) {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let src: std::net::SocketAddr = format!("{source}:0").parse().unwrap();
        sock.bind(&src.into()).unwrap();
        let dst: std::net::SocketAddr = format!("{dest}:{port}").parse().unwrap();
        sock.connect(&dst.into()).unwrap();
        let stream: std::net::TcpStream = sock.into();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let reader = std::io::BufReader::new(stream.try_clone().unwrap());
        let mut s = Self { stream, reader };
        let greeting = s.reply();
        (s, greeting)
    }

    /// Reads one (possibly multi-line) reply; lines joined with '\n'.
    pub fn reply(&mut self) -> String {
        use std::io::BufRead;
        let mut lines = Vec::new();
        loop {
            let mut l = String::new();
            if self.reader.read_line(&mut l).unwrap_or(0) == 0 {
                lines.push("<closed>".to_owned());
                break;
            }
            let l = l.trim_end().to_owned();
            let last = l.len() < 4 || l.as_bytes()[3] == b' ';
            lines.push(l);
            if last {
                break;
            }
        }
        lines.join("\n")
    }

    /// Whether anything (a reply, or the end of the connection) arrives
    /// within `wait`; nothing is consumed.
    pub fn arrives_within(&mut self, wait: Duration) -> bool {
        if !self.reader.buffer().is_empty() {
            return true;
        }
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut b = [0u8];
        let arrived = self.stream.peek(&mut b).is_ok();
        self.stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        arrived
    }

    /// Sends raw bytes. A closed connection shows up as the next reply, `<closed>`.
    pub fn send(&mut self, bytes: &[u8]) {
        use std::io::Write;
        let _ = self.stream.write_all(bytes);
    }

    /// Sends one command line and returns its reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// A whole transaction that must be accepted: returns the queue ID of
    /// `250 2.0.0 Ok: queued as ID`.
    pub fn queued(&mut self, from: &str, to: &[&str], data: &[u8]) -> String {
        let r = self.mail(from, to, data);
        match r.strip_prefix("250 2.0.0 Ok: queued as ") {
            Some(id) => id.to_owned(),
            None => panic!("mail from <{from}> to {to:?} not queued: {r}"),
        }
    }

    /// A whole transaction; returns the reply to the end of DATA (or the first failure).
    pub fn mail(&mut self, from: &str, to: &[&str], data: &[u8]) -> String {
        let r = self.cmd(&format!("MAIL FROM:<{from}>"));
        if !r.starts_with('2') {
            return r;
        }
        for t in to {
            let r = self.cmd(&format!("RCPT TO:<{t}>"));
            if !r.starts_with('2') {
                return r;
            }
        }
        let r = self.cmd("DATA");
        if !r.starts_with("354") {
            return r;
        }
        self.send(data);
        self.send(b"\r\n.\r\n");
        self.reply()
    }
}

/// Runs pflogsumm (Debian's package) on the mail log; returns the "Grand Totals" counts.
pub fn pflogsumm(log: &std::path::Path) -> std::collections::HashMap<String, u64> {
    // In /usr/sbin, which an ordinary user's PATH may lack.
    let out = std::process::Command::new("/usr/sbin/pflogsumm")
        .arg(log)
        .output()
        .expect("pflogsumm is installed by scripts/setup");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut totals = std::collections::HashMap::new();
    for line in text.lines().take_while(|l| !l.starts_with("Per-Hour")) {
        let mut words = line.split_whitespace();
        if let (Some(n), Some(what)) = (words.next(), words.next()) {
            if let Ok(n) = n.parse::<u64>() {
                totals.entry(what.to_owned()).or_insert(n);
            }
        }
    }
    totals
}

/// A scripted SMTP server on a loopback port, standing in for a remote MX.
/// Its answers can be changed while it runs; what it accepted is recorded.
pub mod fake_mx {
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};

    /// How the server answers. Replies are full lines without CRLF.
    #[derive(Debug, Clone)]
    pub struct Script {
        pub greeting: String,
        /// EHLO extensions after the first line (PIPELINING, SIZE N...).
        pub extensions: Vec<String>,
        pub mail: String,
        /// RCPT replies by address; others get `rcpt_default`.
        pub rcpt: Vec<(String, String)>,
        pub rcpt_default: String,
        pub data: String,
        /// Reply after the end of data.
        pub end: String,
        /// Close the connection after this many bytes of message data.
        pub close_mid_data: Option<usize>,
        /// Never answer EHLO (a stalled server).
        pub stall: bool,
        /// Refuse EHLO (an old server that knows only HELO).
        pub helo_only: bool,
    }

    impl Default for Script {
        fn default() -> Self {
            Self {
                greeting: "220 mx.example.test ESMTP fake".into(),
                extensions: vec![
                    "PIPELINING".into(),
                    "SIZE 10240000".into(),
                    "8BITMIME".into(),
                ],
                mail: "250 2.1.0 Ok".into(),
                rcpt: vec![],
                rcpt_default: "250 2.1.5 Ok".into(),
                data: "354 End data with <CR><LF>.<CR><LF>".into(),
                end: "250 2.0.0 Ok: queued as FAKE".into(),
                close_mid_data: None,
                stall: false,
                helo_only: false,
            }
        }
    }

    /// A message the server accepted (final reply 2xx).
    #[derive(Debug, Clone)]
    pub struct Accepted {
        pub sender: String,
        pub recipients: Vec<String>,
        /// The data as sent, dot-stuffing and CRLF included, without the final dot line.
        pub data: Vec<u8>,
    }

    #[derive(Default)]
    pub struct State {
        pub script: Option<Script>,
        pub accepted: Vec<Accepted>,
        pub connections: usize,
        pub commands: Vec<String>,
    }

    pub struct FakeMx {
        pub port: u16,
        pub state: Arc<Mutex<State>>,
    }

    impl FakeMx {
        /// Listens on `ip` (a loopback address), answering by `script`.
        pub fn start(ip: &str, script: Script) -> Self {
            Self::start_at(ip, 0, script)
        }

        /// The same on a given port (0: any).
        pub fn start_at(ip: &str, port: u16, script: Script) -> Self {
            let listener = TcpListener::bind((ip, port)).unwrap();
            let port = listener.local_addr().unwrap().port();
            let state = Arc::new(Mutex::new(State {
                script: Some(script),
                ..State::default()
            }));
            let st = state.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming().flatten() {
                    let st = st.clone();
                    std::thread::spawn(move || {
                        let _ = serve(conn, &st);
                    });
                }
            });
            Self { port, state }
        }

        pub fn set(&self, script: Script) {
            self.state.lock().unwrap().script = Some(script);
        }

        pub fn accepted(&self) -> Vec<Accepted> {
            self.state.lock().unwrap().accepted.clone()
        }

        pub fn connections(&self) -> usize {
            self.state.lock().unwrap().connections
        }

        pub fn commands(&self) -> Vec<String> {
            self.state.lock().unwrap().commands.clone()
        }
    }

    fn serve(conn: TcpStream, st: &Arc<Mutex<State>>) -> std::io::Result<()> {
        let script = || st.lock().unwrap().script.clone().unwrap_or_default();
        st.lock().unwrap().connections += 1;
        let mut w = conn.try_clone()?;
        let mut r = BufReader::new(conn);
        let say = |w: &mut TcpStream, line: &str| w.write_all(format!("{line}\r\n").as_bytes());
        say(&mut w, &script().greeting)?;
        let mut sender = String::new();
        let mut rcpts: Vec<String> = Vec::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let line = line.trim_end().to_owned();
            st.lock().unwrap().commands.push(line.clone());
            let s = script();
            let upper = line.to_ascii_uppercase();
            if upper.starts_with("EHLO") && s.helo_only {
                say(&mut w, "502 5.5.2 Error: command not recognized")?;
            } else if upper.starts_with("EHLO") {
                if s.stall {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                }
                let mut lines = vec!["mx.example.test".to_owned()];
                lines.extend(s.extensions.clone());
                for (i, l) in lines.iter().enumerate() {
                    let sep = if i + 1 == lines.len() { ' ' } else { '-' };
                    w.write_all(format!("250{sep}{l}\r\n").as_bytes())?;
                }
            } else if upper == "STARTTLS" {
                // A server that offers TLS and cannot do it: the handshake
                // finds the connection closed.
                say(&mut w, "220 2.0.0 Ready to start TLS")?;
                return Ok(());
            } else if upper.starts_with("HELO")
                || upper.starts_with("RSET")
                || upper.starts_with("NOOP")
            {
                rcpts.clear();
                say(&mut w, "250 2.0.0 Ok")?;
            } else if upper.starts_with("MAIL FROM:") {
                sender = line[10..]
                    .trim()
                    .trim_matches(['<', '>'])
                    .split('>')
                    .next()
                    .unwrap_or("")
                    .to_owned();
                say(&mut w, &s.mail)?;
            } else if upper.starts_with("RCPT TO:") {
                // The address between the brackets; parameters (NOTIFY=,
                // ORCPT=...) stay in `commands`.
                let arg = line[8..].trim();
                let addr = arg
                    .strip_prefix('<')
                    .and_then(|a| a.split_once('>'))
                    .map_or(arg, |(a, _)| a)
                    .to_owned();
                let reply = s
                    .rcpt
                    .iter()
                    .find(|(a, _)| *a == addr)
                    .map(|(_, r)| r.clone())
                    .unwrap_or(s.rcpt_default.clone());
                if reply.starts_with('2') {
                    rcpts.push(addr);
                }
                say(&mut w, &reply)?;
            } else if upper == "DATA" {
                say(&mut w, &s.data)?;
                if !s.data.starts_with("354") {
                    continue;
                }
                let mut data = Vec::new();
                loop {
                    let mut l = Vec::new();
                    if r.read_until(b'\n', &mut l)? == 0 {
                        return Ok(());
                    }
                    if l == b".\r\n" {
                        break;
                    }
                    data.extend_from_slice(&l);
                    if s.close_mid_data.is_some_and(|n| data.len() >= n) {
                        return Ok(()); // drop the connection mid-message
                    }
                }
                if s.end.starts_with('2') && !rcpts.is_empty() {
                    st.lock().unwrap().accepted.push(Accepted {
                        sender: sender.clone(),
                        recipients: rcpts.clone(),
                        data,
                    });
                }
                rcpts.clear();
                say(&mut w, &s.end)?;
            } else if upper == "QUIT" {
                say(&mut w, "221 2.0.0 Bye")?;
                return Ok(());
            } else {
                say(&mut w, "502 5.5.2 Error: command not recognized")?;
            }
        }
    }
}

/// A name server (BIND's or ours) in the foreground; killed when dropped.
pub struct NameServer(pub std::process::Child);

impl Drop for NameServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether BIND's named can run beside ours (installed, and root); says
/// why not.
pub fn bind_available() -> bool {
    let ok = Path::new("/usr/sbin/named").exists() && nix::unistd::Uid::effective().is_root();
    if !ok {
        eprintln!("skipped: BIND's named (scripts/setup installs bind9) and root are needed");
    }
    ok
}

/// BIND and postfix-rs named side by side in the foreground (`flag` -g:
/// logging to stderr, kept in `d/NAME.log`; -f: the logging statement),
/// each on named.conf text `conf(name, port)` written to `d/NAME.conf`
/// (NAME `bind` and `ours`), both answering for ywnds.com; returns
/// BIND's port, named's, and the two processes (killed when dropped).
pub fn bind_and_named(
    d: &Path,
    flag: &str,
    conf: impl Fn(&str, u16) -> String,
) -> (u16, u16, [NameServer; 2]) {
    let (theirs, ours) = (free_port(), free_port());
    let start = |program: &Path, name: &str, port: u16| {
        std::fs::write(d.join(format!("{name}.conf")), conf(name, port)).unwrap();
        let log = std::fs::File::create(d.join(format!("{name}.log"))).unwrap();
        NameServer(
            Command::new(program)
                .args([flag, "-c"])
                .arg(d.join(format!("{name}.conf")))
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    };
    let servers = [
        start(Path::new("/usr/sbin/named"), "bind", theirs),
        start(&bin("named"), "ours", ours),
    ];
    for port in [theirs, ours] {
        assert!(
            wait_for(Duration::from_secs(20), || dig(port, &["ywnds.com", "SOA"])
                .contains("status: NOERROR")),
            "a server on port {port} did not answer"
        );
    }
    (theirs, ours, servers)
}
