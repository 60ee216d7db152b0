//! Running a delivery command as Postfix's pipe_command does, for pipe(8)
//! and local(8) (alias and `.forward` commands, `mailbox_command`): as a
//! given user in a session of its own, with a clean environment, the
//! message on its standard input, standard output and error captured
//! together (the first 4 KiB, made printable), and a time limit after which
//! the whole session is killed. The exit status is then read as Postfix
//! reads it ([`failure`]): a DSN status at the start of the output wins,
//! then the sysexits(3) codes, then `Command died with status N`.

use std::path::Path;
use std::time::Duration;

use nix::unistd::{Gid, Uid};
use pfx_maillog::delivery::{Class, Outcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::warn;

/// How much of the command's output is kept (Postfix's log buffer).
const OUTPUT_LIMIT: usize = 4096;

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signal(i32),
    TimedOut,
}

/// What to run, and how.
pub struct Spec<'a> {
    pub argv: &'a [String],
    pub env: &'a [(String, String)],
    pub cwd: &'a Path,
    pub uid: Uid,
    pub gid: Gid,
    pub time_limit: Duration,
}

/// The command's output as Postfix shows it: TAB and newline become
/// spaces, other unprintable bytes `_`.
pub fn printable(out: &[u8]) -> String {
    out.iter()
        .map(|&b| match b {
            b'\t' | b'\n' => ' ',
            0x20..=0x7e => char::from(b),
            _ => '_',
        })
        .collect()
}

/// sysexits(3) codes: the status and text Postfix gives each.
pub fn sysexit(code: i32) -> Option<(&'static str, &'static str)> {
    Some(match code {
        64 => ("5.3.0", "command line usage error"),
        65 => ("5.6.0", "data format error"),
        66 => ("5.3.0", "cannot open input"),
        67 => ("5.1.1", "user unknown"),
        68 => ("5.1.2", "host name unknown"),
        69 => ("5.3.0", "service unavailable"),
        70 => ("5.3.0", "internal software error"),
        71 => ("4.3.0", "system resource problem"),
        72 => ("5.3.0", "critical OS file missing"),
        73 => ("5.2.0", "can't create user output file"),
        74 => ("5.3.0", "input/output error"),
        75 => ("4.3.0", "temporary failure"),
        76 => ("5.5.0", "remote error in protocol"),
        77 => ("5.7.0", "permission denied"),
        78 => ("5.3.5", "local configuration error"),
        _ => return None,
    })
}

fn verdict(dsn: &str, reason: impl Into<String>) -> Outcome {
    Outcome::new(Class::of_dsn(dsn), dsn, "none", reason)
}

/// The outcome of a command that did not exit 0 (`None` when it did):
/// `command` names it in the texts, as Postfix quotes it.
pub fn failure(ended: Ended, command: &str, output: &str) -> Option<Outcome> {
    let with_output = |text: String| {
        if output.is_empty() {
            text
        } else {
            format!("{text}. Command output: {output}")
        }
    };
    Some(match ended {
        Ended::TimedOut => verdict(
            "5.3.0",
            with_output(format!("Command time limit exceeded: \"{command}\"")),
        ),
        Ended::Signal(n) => verdict(
            "4.3.0",
            with_output(format!("Command died with signal {n}: \"{command}\"")),
        ),
        Ended::Exited(0) => return None,
        Ended::Exited(code) => {
            let (dsn, text) = pfx_smtp_proto::dsn_split("", output);
            if !dsn.is_empty() {
                // A 2.x.x code from a failed command bounces as 5.0.0.
                let dsn = if dsn.starts_with(['4', '5']) {
                    dsn
                } else {
                    "5.0.0".into()
                };
                return Some(verdict(&dsn, text));
            }
            match sysexit(code) {
                Some((dsn, text)) => verdict(dsn, with_output(text.to_owned())),
                None => verdict(
                    "5.3.0",
                    with_output(format!("Command died with status {code}: \"{command}\"")),
                ),
            }
        }
    })
}

/// Runs the command with `input` on its standard input; `Err` when it could
/// not be started.
pub async fn run(spec: &Spec<'_>, input: Vec<u8>) -> Result<(Ended, String), String> {
    let (r, w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    let w2 = w.try_clone().map_err(|e| format!("pipe: {e}"))?;
    let argv0 = spec.argv.first().ok_or("empty command")?;
    let mut cmd = std::process::Command::new(argv0);
    cmd.args(&spec.argv[1..])
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(spec.cwd)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::from(w))
        .stderr(std::process::Stdio::from(w2));
    pfx_sys::users::run_as(&mut cmd, spec.uid, spec.gid);
    let mut cmd = tokio::process::Command::from(cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("pipe_command: execvp {argv0}: {e}"))?;
    drop(cmd);
    let pid = child.id().map(|p| p as i32);
    let mut stdin = child.stdin.take();
    let mut reader = tokio::fs::File::from_std(std::fs::File::from(r));
    let work = async {
        let write = async {
            if let Some(s) = stdin.as_mut() {
                // A command that does not read all of it is fine (EPIPE).
                let _ = s.write_all(&input).await;
            }
            drop(stdin.take());
        };
        let read = async {
            let mut out = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let room = OUTPUT_LIMIT.saturating_sub(out.len());
                        out.extend_from_slice(&buf[..n.min(room)]);
                    }
                }
            }
            out
        };
        let ((), out) = tokio::join!(write, read);
        let status = child.wait().await;
        (status, out)
    };
    match tokio::time::timeout(spec.time_limit, work).await {
        Ok((Ok(status), out)) => {
            use std::os::unix::process::ExitStatusExt;
            let ended = match (status.code(), status.signal()) {
                (Some(c), _) => Ended::Exited(c),
                (None, Some(s)) => Ended::Signal(s),
                (None, None) => Ended::Exited(1),
            };
            Ok((ended, printable(&out)))
        }
        Ok((Err(e), _)) => Err(format!("wait: {e}")),
        Err(_) => {
            warn!("pipe_command_wait_or_kill: child wait time limit exceeded");
            if let Some(p) = pid {
                // The command's whole session.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            Ok((Ended::TimedOut, String::new()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(e: Ended, out: &str) -> Option<(String, String, String)> {
        failure(e, "/bin/x", out).map(|v| (v.class.as_str().to_owned(), v.dsn, v.reason))
    }

    fn t(class: &str, dsn: &str, reason: &str) -> Option<(String, String, String)> {
        Some((class.into(), dsn.into(), reason.into()))
    }

    #[test]
    fn exit_statuses_read_as_postfix_reads_them() {
        assert_eq!(v(Ended::Exited(0), "anything"), None);
        assert_eq!(
            v(Ended::Exited(75), ""),
            t("deferred", "4.3.0", "temporary failure")
        );
        assert_eq!(
            v(Ended::Exited(67), "x "),
            t("bounced", "5.1.1", "user unknown. Command output: x ")
        );
        assert_eq!(
            v(Ended::Exited(1), "4.2.2 mailbox full, try later "),
            t("deferred", "4.2.2", "mailbox full, try later ")
        );
        assert_eq!(
            v(Ended::Exited(1), "some output "),
            t(
                "bounced",
                "5.3.0",
                "Command died with status 1: \"/bin/x\". Command output: some output "
            )
        );
        assert_eq!(
            v(Ended::Signal(15), ""),
            t(
                "deferred",
                "4.3.0",
                "Command died with signal 15: \"/bin/x\""
            )
        );
        assert_eq!(
            v(Ended::TimedOut, ""),
            t(
                "bounced",
                "5.3.0",
                "Command time limit exceeded: \"/bin/x\""
            )
        );
        assert_eq!(printable(b"line1\nline2\t\x01"), "line1 line2 _");
    }

    #[tokio::test]
    async fn output_is_captured_and_the_time_limit_kills() {
        let me = pfx_sys::users::current();
        let sh = |script: &str| vec!["/bin/sh".to_owned(), "-c".to_owned(), script.to_owned()];
        let argv = sh("cat; echo err >&2; exit 3");
        let spec = Spec {
            argv: &argv,
            env: &[],
            cwd: Path::new("/"),
            uid: me.uid,
            gid: me.gid,
            time_limit: Duration::from_secs(10),
        };
        let (ended, out) = run(&spec, b"in\n".to_vec()).await.unwrap();
        assert_eq!((ended, out.as_str()), (Ended::Exited(3), "in err "));
        let argv = sh("sleep 30");
        let spec = Spec {
            argv: &argv,
            time_limit: Duration::from_millis(200),
            ..spec
        };
        assert_eq!(run(&spec, Vec::new()).await.unwrap().0, Ended::TimedOut);
    }
}
