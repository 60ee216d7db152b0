//! testkit: throw-away postfix-rs instances for black-box tests.
//!
//! An [`Instance`] is a temporary directory holding `etc/` (main.cf,
//! master.cf), `queue/`, a `maillog` file and a `libexec/` daemon directory
//! that links to the built binaries (plus any test scripts). Tests drive it
//! only through the built commands (`postfix`, `postconf`), sockets, the log
//! and /proc, as an administrator would. Binaries come from the cargo target
//! directory: run `cargo build --workspace --bins` first (scripts/test does).

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

/// A free TCP port on 127.0.0.1 (free when asked; tests bind it soon after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
        for name in ["master", "fixture-service"] {
            std::os::unix::fs::symlink(bin(name), libexec.join(name)).unwrap();
        }
        let main_cf = format!(
            "# test instance\nmyhostname = mail.ywnds.com\nmydomain = ywnds.com\nmyorigin = $mydomain\n\
             queue_directory = {}\ndaemon_directory = {}\nmaillog_file = {}\nservice_throttle_time = 2s\n{extra_main_cf}",
            queue.display(),
            libexec.display(),
            log.display()
        );
        std::fs::write(etc.join("main.cf"), main_cf).unwrap();
        std::fs::write(etc.join("master.cf"), master_cf).unwrap();
        Self {
            root,
            etc,
            queue,
            libexec,
            log,
        }
    }

    /// Adds an executable script to the daemon directory.
    pub fn add_script(&self, name: &str, body: &str) {
        let p = self.libexec.join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Runs a built command with `-c ETC` first.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        Command::new(bin(program))
            .arg("-c")
            .arg(&self.etc)
            .args(args)
            .output()
            .unwrap()
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
