//! Database servers of the tests' own: a throw-away PostgreSQL 15 and
//! MariaDB, each in a temporary directory, on a free loopback port and a
//! socket inside the directory, run as the `postgres` / `mysql` user when
//! the tests run as root. Each is stopped when dropped, also when a check
//! fails; `stop` and `start_again` take one away and bring it back on the
//! same port and data (a database outage in the middle of a test).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::{free_port, wait_for};

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// By its path: /usr/sbin is not on an ordinary user's PATH.
pub const MARIADBD: &str = "/usr/sbin/mariadbd";

pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// `cmd` as `user` when running as root (servers refuse root), else as is.
pub fn command_as(user: &str, program: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", user, "--", program]);
        c
    } else {
        Command::new(program)
    }
}

/// Gives `path` to `user` when running as root.
pub fn give(path: &Path, user: &str) {
    if is_root() {
        let u = nix::unistd::User::from_name(user)
            .unwrap()
            .unwrap_or_else(|| panic!("user {user}"));
        nix::unistd::chown(path, Some(u.uid), Some(u.gid)).unwrap();
    }
}

pub fn check(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A temporary directory that the server's user can enter.
fn server_dir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Stops a server by the pid in its pid file (the child may be runuser),
/// then waits for the child.
fn stop_server(child: &mut Option<Child>, pid_file: &Path, signal: nix::sys::signal::Signal) {
    let Some(mut c) = child.take() else { return };
    let pid = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()));
    if let Some(pid) = pid {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
    }
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), signal);
    let exited = wait_for(Duration::from_secs(30), || {
        matches!(c.try_wait(), Ok(Some(_)))
    });
    if !exited {
        if let Some(pid) = pid {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A PostgreSQL 15 server of its own (superuser `postgres`, trusted over
/// its socket, passwords over TCP).
pub struct Pg {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

impl Pg {
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The directory of its UNIX-domain socket.
    pub fn sockets(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub fn start() -> Self {
        let dir = server_dir("pfx-pgsql-");
        let data = dir.path().join("data");
        let run = dir.path().join("run");
        for d in [&data, &run] {
            std::fs::create_dir(d).unwrap();
            give(d, "postgres");
        }
        check(
            command_as("postgres", &format!("{PG_BIN}/initdb"))
                .args(["-D", &data.display().to_string()])
                .args([
                    "-U",
                    "postgres",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--no-sync",
                ])
                .env("LC_ALL", "C")
                .output()
                .unwrap(),
            "initdb",
        );
        let mut pg = Self {
            dir,
            port: free_port(),
            child: None,
        };
        pg.start_again();
        pg
    }

    /// Starts the server (again) on its port and data directory.
    pub fn start_again(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("postgres.log"))
            .unwrap();
        let child = command_as("postgres", &format!("{PG_BIN}/postgres"))
            .args(["-D", &self.data().display().to_string()])
            .args(["-p", &self.port.to_string()])
            .args(["-k", &self.sockets().display().to_string()])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let up = wait_for(Duration::from_secs(60), || {
            self.psql_opt("postgres", "SELECT 1").is_ok()
        });
        if !up {
            let log = std::fs::read_to_string(self.dir.path().join("postgres.log"));
            self.stop();
            panic!("PostgreSQL did not start: {log:?}");
        }
    }

    pub fn psql_opt(&self, db: &str, sql: &str) -> Result<String, String> {
        let o = command_as("postgres", &format!("{PG_BIN}/psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-At"])
            .args(["-h", &self.sockets().display().to_string()])
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .args(["-c", sql])
            .output()
            .unwrap();
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).into_owned())
        }
    }

    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.psql_opt(db, sql)
            .unwrap_or_else(|e| panic!("psql {sql}: {e}"))
    }

    pub fn stop(&mut self) {
        let pid = self.data().join("postmaster.pid");
        stop_server(&mut self.child, &pid, nix::sys::signal::Signal::SIGINT);
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A MariaDB server of its own.
pub struct Maria {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

impl Maria {
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("run/mysqld.sock")
    }

    pub fn start() -> Self {
        let dir = server_dir("pfx-mysql-");
        let data = dir.path().join("data");
        let run = dir.path().join("run");
        for d in [&data, &run] {
            std::fs::create_dir(d).unwrap();
            give(d, "mysql");
        }
        let mut install = command_as("mysql", "mariadb-install-db");
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
        check(install.output().unwrap(), "mariadb-install-db");
        let mut m = Self {
            dir,
            port: free_port(),
            child: None,
        };
        m.start_again();
        m
    }

    /// Starts the server (again) on its port and data directory.
    pub fn start_again(&mut self) {
        let dir = self.dir.path();
        let log_path = dir.join("mariadb.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        give(&log_path, "mysql");
        let run = dir.join("run");
        let child = command_as("mysql", MARIADBD)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--socket={}", run.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", run.join("mysqld.pid").display()))
            .arg(format!("--port={}", self.port))
            .args(["--bind-address=127.0.0.1", "--skip-log-bin"])
            .arg(format!("--log-error={}", log_path.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let up = wait_for(Duration::from_secs(60), || self.sql_opt("SELECT 1").is_ok());
        if !up {
            let log = std::fs::read_to_string(&log_path);
            self.stop();
            panic!("MariaDB did not start: {log:?}");
        }
    }

    /// Runs SQL as root over the socket.
    pub fn sql_opt(&self, sql: &str) -> Result<String, String> {
        let o = Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-u", "root", "-N", "-B", "-e", sql])
            .output()
            .unwrap();
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).into_owned())
        }
    }

    pub fn sql(&self, sql: &str) -> String {
        self.sql_opt(sql)
            .unwrap_or_else(|e| panic!("mariadb {sql}: {e}"))
    }

    pub fn stop(&mut self) {
        let pid = self.dir.path().join("run/mysqld.pid");
        stop_server(&mut self.child, &pid, nix::sys::signal::Signal::SIGTERM);
    }
}

impl Drop for Maria {
    fn drop(&mut self) {
        self.stop();
    }
}
