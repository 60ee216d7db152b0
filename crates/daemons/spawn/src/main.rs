//! spawn(8): runs a command for each connection to a master.cf socket,
//! with the connection as its standard input, output and error. Debian's
//! documented way to run policy servers that speak on stdin and stdout:
//!
//! ```text
//! policyd-spf  unix  -  n  n  -  0  spawn
//!   user=policyd-spf argv=/usr/bin/policyd-spf
//! ```
//!
//! `user=name[:group]` (never root nor the mail system's own user or
//! group) and `argv=command args...` are required, as with Postfix. The
//! command gets no shell, `export_environment` only, and at most
//! `$SERVICE_time_limit` (else `command_time_limit`) before it is killed.

use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::time::Duration;

use nix::unistd::{Gid, Uid};
use pfx_config::{BuildError, Config};
use pfx_server::Stream;
use tracing::warn;

/// The service's command, as master.cf's arguments give it.
#[derive(Debug)]
struct Command {
    uid: Uid,
    gid: Gid,
    argv: Vec<String>,
    time_limit: Duration,
    env: Vec<(String, String)>,
}

impl Command {
    fn new(cfg: &Config, service: &str, args: &[String]) -> Result<Self, BuildError> {
        let mut user = None;
        let mut argv = None;
        for (i, a) in args.iter().enumerate() {
            match a.split_once('=') {
                Some(("user", v)) => user = Some(v.to_owned()),
                Some(("argv", v)) if !v.is_empty() => {
                    let mut all = vec![v.to_owned()];
                    all.extend(args[i + 1..].iter().cloned());
                    argv = Some(all);
                    break;
                }
                _ => return Err(format!("unknown attribute name: {a}").into()),
            }
        }
        let user = user.ok_or("missing user= attribute")?;
        let argv = argv.ok_or("missing argv= attribute")?;
        let (name, group) = match user.split_once(':') {
            Some((n, g)) => (n, Some(g)),
            None => (user.as_str(), None),
        };
        let ids = pfx_sys::users::user(name).map_err(|_| format!("unknown user name: {name}"))?;
        let gid = match group {
            Some(g) => pfx_sys::users::group(g).map_err(|_| format!("unknown group name: {g}"))?,
            None => ids.gid,
        };
        if ids.uid.is_root() {
            return Err("request to deliver as root".into());
        }
        let owner = pfx_sys::users::user(&cfg.get("mail_owner")?).ok();
        if owner.as_ref().is_some_and(|o| o.uid == ids.uid) {
            return Err("request to deliver as mail system owner".into());
        }
        if gid.as_raw() == 0 {
            return Err(format!("request to use privileged group id {gid}").into());
        }
        if owner.is_some_and(|o| o.gid == gid) {
            return Err(format!("request to use mail system owner group id {gid}").into());
        }
        let time_limit = cfg
            .time(&format!("{service}_time_limit"))
            .or_else(|_| cfg.time("command_time_limit"))?;
        let env = cfg
            .list("export_environment")?
            .into_iter()
            .filter_map(|n| match n.split_once('=') {
                Some((k, v)) => Some((k.to_owned(), v.to_owned())),
                None => std::env::var(&n).ok().map(|v| (n, v)),
            })
            .collect();
        Ok(Self {
            uid: ids.uid,
            gid,
            argv,
            time_limit,
            env,
        })
    }

    /// Runs the command on one connection until it exits or its time is up.
    async fn serve(&self, conn: std::os::unix::net::UnixStream) {
        let io = |c: &std::os::unix::net::UnixStream| -> std::io::Result<std::process::Stdio> {
            Ok(std::process::Stdio::from(std::os::fd::OwnedFd::from(
                c.try_clone()?,
            )))
        };
        let (stdin, stdout, stderr) = match (io(&conn), io(&conn), io(&conn)) {
            (Ok(a), Ok(b), Ok(c)) => (a, b, c),
            _ => return warn!("spawn: cannot duplicate the connection"),
        };
        drop(conn);
        let mut cmd = std::process::Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..])
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr);
        pfx_sys::users::run_as(&mut cmd, self.uid, self.gid);
        let mut child = match tokio::process::Command::from(cmd).spawn() {
            Ok(c) => c,
            Err(e) => return warn!("spawn_command: execvp {}: {e}", self.argv[0]),
        };
        let pid = child.id();
        let status = match tokio::time::timeout(self.time_limit, child.wait()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return warn!("spawn_command: wait: {e}"),
            Err(_) => {
                warn!("spawn_command: child wait time limit exceeded");
                if let Some(p) = pid {
                    // The command's whole session.
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(p as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = child.wait().await;
                return;
            }
        };
        if let Some(code) = status.code().filter(|c| *c != 0) {
            warn!("command {} exit status {code}", self.argv[0]);
        }
        if let Some(sig) = status.signal() {
            warn!("command {} killed by signal {sig}", self.argv[0]);
        }
    }
}

fn main() {
    pfx_server::run("spawn", |ctx, endpoint| async move {
        let cfg = ctx.config();
        // Bad attributes stop the process, as with Postfix: master throttles
        // the service and its clients see the server as unavailable.
        let command = match Command::new(&cfg, &ctx.service, &ctx.args) {
            Ok(c) => Arc::new(c),
            Err(e) => pfx_maillog::fatal(e),
        };
        pfx_server::serve_stream(&ctx, endpoint, move |stream| {
            let command = command.clone();
            async move {
                let conn = match stream {
                    Stream::Unix(s) => s.into_std().map(Some),
                    Stream::Tcp(s, _) => s.into_std().map(|_| None),
                };
                match conn {
                    Ok(Some(c)) => {
                        let _ = c.set_nonblocking(false);
                        command.serve(c).await;
                    }
                    Ok(None) => warn!("spawn: only unix services are supported"),
                    Err(e) => warn!("spawn: {e}"),
                }
            }
        })
        .await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::from_text(
            std::path::Path::new("/etc/postfix"),
            "command_time_limit = 7s\n",
        )
        .unwrap()
    }

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn attributes_as_postfix_reads_them() {
        let c = Command::new(&cfg(), "policy", &args("user=nobody argv=/bin/cat -u")).unwrap();
        assert_eq!(c.argv, ["/bin/cat", "-u"]);
        assert_eq!(c.time_limit, Duration::from_secs(7));
        let err = |a: &str| {
            Command::new(&cfg(), "policy", &args(a))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(err("argv=/bin/cat"), "missing user= attribute");
        assert_eq!(err("user=nobody"), "missing argv= attribute");
        assert_eq!(err("user=root argv=/bin/cat"), "request to deliver as root");
        assert_eq!(
            err("user=no-such-user-here argv=/bin/cat"),
            "unknown user name: no-such-user-here"
        );
        assert_eq!(
            err("flags=R argv=/bin/cat"),
            "unknown attribute name: flags=R"
        );
    }
}
