//! Debian's own Postfix, started from a throw-away configuration on a
//! loopback port, for tests that check postfix-rs against it or hand a
//! queue from one to the other. Needs root (Postfix's master does), and
//! Debian's postfix package (scripts/setup installs it).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::{free_port, wait_for};

/// One Debian Postfix instance.
pub struct Postfix {
    pub root: tempfile::TempDir,
    pub etc: PathBuf,
    pub log: PathBuf,
    pub queue: PathBuf,
    /// Its smtpd's port on 127.0.0.1.
    pub port: u16,
}

/// Debian's master.cf with smtpd on `port`; the chroot column as Debian
/// has it only when `chroot` (a chroot needs root), else off.
pub fn master_cf(port: u16, chroot: bool) -> String {
    let stock = std::fs::read_to_string("/usr/share/postfix/master.cf.dist")
        .expect("Debian's postfix is installed by scripts/setup");
    let mut out = String::new();
    for line in stock.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let entry = !line.starts_with([' ', '\t', '#']) && cols.len() >= 8;
        if entry && cols[0] == "smtp" && cols[1] == "inet" {
            let chroot = if chroot { cols[4] } else { "n" };
            out.push_str(&format!("127.0.0.1:{port} inet n - {chroot} - - smtpd\n"));
        } else if entry {
            let mut cols = cols;
            if !chroot {
                cols[4] = "n";
            }
            out.push_str(&cols.join(" "));
            out.push('\n');
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

impl Postfix {
    /// A configuration whose queue is `queue` (another instance's, to hand
    /// mail over, or its own when `None`), with `extra` main.cf lines.
    pub fn new(queue: Option<&Path>, extra: &str) -> Self {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "Debian's Postfix runs as root"
        );
        let root = tempfile::Builder::new()
            .prefix("pfx-debian-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let etc = root.path().join("etc");
        let data = root.path().join("data");
        let log = root.path().join("maillog");
        std::fs::create_dir(&etc).unwrap();
        std::fs::create_dir(&data).unwrap();
        let postfix = nix::unistd::User::from_name("postfix")
            .unwrap()
            .expect("user postfix");
        nix::unistd::chown(&data, Some(postfix.uid), None).unwrap();
        // postsuper, run as postfix by `postfix start`, writes the log too.
        std::fs::write(&log, "").unwrap();
        nix::unistd::chown(&log, Some(postfix.uid), None).unwrap();
        let queue = queue.map_or_else(|| root.path().join("spool"), Path::to_owned);
        // Made as Debian's package makes it; Postfix fills in the rest.
        std::fs::create_dir_all(&queue).unwrap();
        std::fs::set_permissions(&queue, std::fs::Permissions::from_mode(0o755)).unwrap();
        let port = free_port();
        // Debian's Postfix is run outside the jail it would need prepared.
        std::fs::write(etc.join("master.cf"), master_cf(port, false)).unwrap();
        let (queue_s, data_s, log_s) = (
            queue.display().to_string(),
            data.display().to_string(),
            log.display().to_string(),
        );
        let prefixes = root.path().display().to_string();
        let base = [
            ("compatibility_level", "3.6"),
            ("queue_directory", &queue_s),
            ("data_directory", &data_s),
            ("maillog_file", &log_s),
            ("maillog_file_prefixes", &prefixes),
            ("myhostname", "mail.ywnds.com"),
            ("mydomain", "ywnds.com"),
            ("mydestination", "$myhostname, localhost"),
            ("inet_interfaces", "127.0.0.1"),
            ("inet_protocols", "ipv4"),
            ("mynetworks", "127.0.0.0/8"),
            ("alias_maps", ""),
            ("alias_database", ""),
            ("local_recipient_maps", ""),
            ("smtp_host_lookup", "native"),
            ("minimal_backoff_time", "1s"),
            ("maximal_backoff_time", "2s"),
            ("queue_run_delay", "1s"),
        ];
        // A parameter given twice makes every Postfix daemon warn at start
        // ("overriding earlier entry"); a burst of those can fill the
        // postlog socket before postlogd reads it, and postlogd, warning
        // too, then waits on itself forever. So `extra` replaces.
        let given: Vec<&str> = extra
            .lines()
            .filter(|l| !l.starts_with([' ', '\t', '#']))
            .filter_map(|l| l.split_once('=').map(|(n, _)| n.trim()))
            .collect();
        let mut main_cf = String::new();
        for (name, value) in base.iter().filter(|(n, _)| !given.contains(n)) {
            main_cf.push_str(&format!("{name} = {value}\n"));
        }
        main_cf.push_str(extra);
        std::fs::write(etc.join("main.cf"), main_cf).unwrap();
        Self {
            root,
            etc,
            log,
            queue,
            port,
        }
    }

    /// Runs one of Debian's Postfix commands with `-c` this configuration.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        Command::new(Path::new("/usr/sbin").join(program))
            .arg("-c")
            .arg(&self.etc)
            .args(args)
            .output()
            .unwrap()
    }

    /// `postfix start`, and waits until its smtpd's port answers.
    pub fn start(&self) {
        let out = self.run("postfix", &["start"]);
        assert!(
            out.status.success(),
            "Debian's postfix start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        assert!(wait_for(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        }));
    }

    /// `postfix stop`, and waits until master is gone.
    pub fn stop(&self) {
        let _ = self.run("postfix", &["stop"]);
        assert!(wait_for(Duration::from_secs(20), || {
            !self.run("postfix", &["status"]).status.success()
        }));
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_log(&self, needle: &str, limit: Duration) -> bool {
        wait_for(limit, || self.log_text().contains(needle))
    }

    /// Queue IDs `postqueue -p` lists.
    pub fn mailq(&self) -> String {
        String::from_utf8_lossy(&self.run("postqueue", &["-p"]).stdout).into_owned()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        if self.run("postfix", &["status"]).status.success() {
            let _ = self.run("postfix", &["abort"]);
            let _ = self.run("postfix", &["stop"]);
        }
    }
}
