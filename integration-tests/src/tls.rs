//! What the TLS and SASL tests need around an instance: certificates made
//! with openssl, a real Dovecot as the authentication server, and the
//! Debian clients (swaks, openssl s_client, Python's smtplib).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// A certificate and its key, as PEM files.
pub struct Certs {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A self-signed certificate for `cn`, made in `dir` as Debian's
/// make-ssl-cert makes the snakeoil pair (`rsa`), or with an ECDSA P-256 key.
pub fn self_signed(dir: &Path, cn: &str, rsa: bool) -> Certs {
    let tag = if rsa { "rsa" } else { "ec" };
    let cert = dir.join(format!("{tag}-cert.pem"));
    let key = dir.join(format!("{tag}-key.pem"));
    let new_key = if rsa { "rsa:2048" } else { "ec" };
    let mut cmd = Command::new("openssl");
    cmd.args(["req", "-x509", "-nodes", "-days", "2", "-newkey", new_key])
        .args(["-subj", &format!("/CN={cn}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert);
    if !rsa {
        cmd.args(["-pkeyopt", "ec_paramgen_curve:prime256v1"]);
    }
    let out = cmd.output().expect("openssl (package openssl)");
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Certs { cert, key }
}

/// A test CA and a server certificate it signed for `names` (DNS names,
/// or IP addresses); returns the CA's certificate file and the pair.
pub fn ca_signed(dir: &Path, names: &[&str]) -> (PathBuf, Certs) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-nodes",
        "-days",
        "2",
        "-newkey",
        "rsa:2048",
        "-subj",
        "/CN=postfix-rs test CA",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-nodes",
        "-newkey",
        "rsa:2048",
        "-subj",
        &format!("/CN={}", names[0]),
        "-keyout",
        "leaf-key.pem",
        "-out",
        "leaf.csr",
    ]);
    let san: Vec<String> = names
        .iter()
        .map(|n| {
            if n.parse::<std::net::IpAddr>().is_ok() {
                format!("IP:{n}")
            } else {
                format!("DNS:{n}")
            }
        })
        .collect();
    std::fs::write(
        dir.join("leaf.ext"),
        format!(
            "subjectAltName={}\nbasicConstraints=CA:FALSE\n",
            san.join(",")
        ),
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-extfile",
        "leaf.ext",
        "-out",
        "leaf.pem",
    ]);
    (
        dir.join("ca.pem"),
        Certs {
            cert: dir.join("leaf.pem"),
            key: dir.join("leaf-key.pem"),
        },
    )
}

/// Whether a program is installed (scripts/setup installs them as root).
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A Dovecot started for one test: only its authentication service, with
/// a passwd-file of users, listening where Postfix's `smtpd_sasl_path`
/// points. Stopped when dropped.
pub struct Dovecot {
    child: Child,
    pub dir: PathBuf,
}

impl Dovecot {
    /// Starts Dovecot with `users` (`name`, `password`) and its client
    /// socket at `socket`. `None` when not root or Dovecot is not installed.
    pub fn start(dir: &Path, socket: &Path, users: &[(&str, &str)]) -> Option<Self> {
        if !nix::unistd::Uid::effective().is_root() || !have("dovecot") {
            return None;
        }
        let dir = dir.join("dovecot");
        std::fs::create_dir_all(dir.join("run")).unwrap();
        std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
        let users_file = dir.join("users");
        let text: String = users
            .iter()
            .map(|(u, p)| format!("{u}:{{PLAIN}}{p}\n"))
            .collect();
        std::fs::write(&users_file, text).unwrap();
        let conf = dir.join("dovecot.conf");
        std::fs::write(
            &conf,
            format!(
                "base_dir = {run}\nstate_dir = {run}\nlog_path = {log}\ninstance_name = pfx-test-{pid}\n\
                 protocols = none\nlisten = 127.0.0.1\nssl = no\nauth_mechanisms = plain login\ndisable_plaintext_auth = no\n\
                 passdb {{\n  driver = passwd-file\n  args = {users}\n}}\n\
                 userdb {{\n  driver = static\n  args = uid=nobody gid=nogroup home=/nonexistent\n}}\n\
                 service auth {{\n  unix_listener {socket} {{\n    mode = 0666\n  }}\n}}\n\
                 service anvil {{\n  chroot =\n}}\n",
                run = dir.join("run").display(),
                log = dir.join("dovecot.log").display(),
                pid = std::process::id(),
                users = users_file.display(),
                socket = socket.display(),
            ),
        )
        .unwrap();
        let child = Command::new("dovecot")
            .arg("-F")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dovecot");
        let up = crate::wait_for(Duration::from_secs(20), || socket.exists());
        assert!(
            up,
            "dovecot did not create {}: {}",
            socket.display(),
            std::fs::read_to_string(dir.join("dovecot.log")).unwrap_or_default()
        );
        Some(Self { child, dir })
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// Runs swaks against 127.0.0.1:`port` with the given options; swaks's
/// whole transcript (stdout and stderr) and whether it succeeded.
pub fn swaks(port: u16, args: &[&str]) -> (bool, String) {
    let out: Output = Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &port.to_string()])
        .args(["--timeout", "30", "--helo", "client.example"])
        .args(args)
        .output()
        .expect("swaks (package swaks)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Runs a Python 3 program (smtplib, ssl); its stdout, or a panic with
/// its stderr when it fails.
pub fn python(program: &str) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(program)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python3 failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
