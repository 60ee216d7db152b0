//! `sendmail [-t] [-f sender] [-F name] [-i] recipient...`: one message from
//! standard input, through postdrop.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use pfx_address::header;
use pfx_config::Config;
use pfx_ipc::proto::DropEnvelope;
use pfx_maillog::fatal_status;

use crate::{Options, EX_TEMPFAIL};

pub(crate) fn run(cfg: &Config, config_dir: &Path, opts: &Options) -> ! {
    let user = login();
    let uid = nix::unistd::getuid();
    let sender = opts
        .sender
        .as_deref()
        .map_or_else(|| user.name.clone(), envelope_address);
    let who = format!(
        "{}({uid})",
        if sender.is_empty() {
            &user.name
        } else {
            &sender
        }
    );
    let fail = |why: &str| -> ! { fatal_status(EX_TEMPFAIL, format!("{who}: {why}")) };
    let limit = usize::try_from(cfg.int("message_size_limit").unwrap_or(0)).unwrap_or(0);
    let content =
        read_message(std::io::stdin().lock(), opts.dot_ends, limit).unwrap_or_else(|e| fail(&e));
    let mut recipients: Vec<String> = opts
        .recipients
        .iter()
        .flat_map(|a| header::addresses(a))
        .collect();
    if opts.extract {
        let found = header_recipients(&content);
        if found.is_empty() && recipients.is_empty() {
            fail("No recipient addresses found in message header");
        }
        recipients.extend(found);
    }
    if recipients.is_empty() {
        fail("Recipient addresses must be specified on the command line or via the -t option");
    }
    let full_name = opts
        .full_name
        .clone()
        .or_else(|| std::env::var("NAME").ok())
        .or(user.full_name);
    let env = DropEnvelope {
        sender,
        full_name,
        recipients,
        dsn_notify: opts.dsn_notify,
        dsn_ret: opts.dsn_ret,
        dsn_envid: opts.dsn_envid.clone(),
    };
    postdrop(cfg, config_dir, &env, &content).unwrap_or_else(|e| fail(&e));
    std::process::exit(0)
}

/// The submitting user: login name and full name from the password database.
struct Login {
    name: String,
    full_name: Option<String>,
}

fn login() -> Login {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => {
            // GECOS: the first comma-separated field; `&` is the capitalised login.
            let gecos = u.gecos.to_string_lossy();
            let first = gecos.split(',').next().unwrap_or("").trim();
            let mut cap = u.name.clone();
            if let Some(c) = cap.get_mut(0..1) {
                c.make_ascii_uppercase();
            }
            let full = first.replace('&', &cap);
            Login {
                name: u.name,
                full_name: (!full.is_empty()).then_some(full),
            }
        }
        _ => fatal_status(
            EX_TEMPFAIL,
            format!("no login name found for user ID {uid}"),
        ),
    }
}

/// `-f <>` is the null sender; angle brackets around an address go.
pub(crate) fn envelope_address(a: &str) -> String {
    let a = a.trim();
    a.strip_prefix('<')
        .and_then(|x| x.strip_suffix('>'))
        .unwrap_or(a)
        .to_owned()
}

/// Reads the message as sendmail does: the first line is dropped when it is
/// an mbox `From ` line, CRLF becomes LF, a line with a single dot ends it
/// when `dot_ends`, and a missing final newline is added.
pub(crate) fn read_message(
    mut input: impl BufRead,
    dot_ends: bool,
    limit: usize,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut line = Vec::new();
    let mut first = true;
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("read message: {e}"))?;
        if n == 0 {
            break;
        }
        if line.ends_with(b"\n") {
            line.pop();
        }
        if line.ends_with(b"\r") {
            line.pop();
        }
        if std::mem::take(&mut first) && line.starts_with(b"From ") {
            continue;
        }
        if dot_ends && line == b"." {
            break;
        }
        out.extend_from_slice(&line);
        out.push(b'\n');
        if limit > 0 && out.len() > limit {
            return Err("message file too big".into());
        }
    }
    Ok(out)
}

/// The recipients `-t` takes from the headers: Resent-To/Cc/Bcc when the
/// message has any Resent- header, else To/Cc/Bcc.
fn header_recipients(content: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(content);
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.split('\n') {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                last.1.push(' ');
                last.1.push_str(line);
            }
            continue;
        }
        match line.split_once(':') {
            Some((name, value)) if !name.is_empty() && !name.contains(' ') => {
                fields.push((name.to_ascii_lowercase(), value.to_owned()))
            }
            _ => break,
        }
    }
    let resent = fields.iter().any(|(n, _)| n.starts_with("resent-"));
    let wanted: &[&str] = if resent {
        &["resent-to", "resent-cc", "resent-bcc"]
    } else {
        &["to", "cc", "bcc"]
    };
    fields
        .iter()
        .filter(|(n, _)| wanted.contains(&n.as_str()))
        .flat_map(|(_, v)| header::addresses(v))
        .collect()
}

/// Hands the message to postdrop; returns the queue ID it reports.
pub(crate) fn postdrop(
    cfg: &Config,
    config_dir: &Path,
    env: &DropEnvelope,
    content: &[u8],
) -> Result<String, String> {
    let path = crate::command(cfg, "postdrop");
    let mut child = Command::new(&path)
        .arg("-r")
        .arg("-c")
        .arg(config_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("execute {}: {e}", path.display()))?;
    let written = child.stdin.take().map(|mut stdin| {
        pfx_ipc::codec::write_frame(&mut stdin, env)
            .map_err(|e| e.to_string())
            .and_then(|()| stdin.write_all(content).map_err(|e| e.to_string()))
    });
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err("unable to queue the message (postdrop failed)".into());
    }
    written.unwrap_or(Ok(()))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_reading_rules() {
        let read =
            |t: &str, dot| String::from_utf8(read_message(t.as_bytes(), dot, 0).unwrap()).unwrap();
        assert_eq!(
            read("From x Mon\r\nSubject: a\r\n\r\nbody\r\n.\r\nafter\n", true),
            "Subject: a\n\nbody\n"
        );
        assert_eq!(
            read("Subject: a\n\n.\nmore", false),
            "Subject: a\n\n.\nmore\n"
        );
        assert!(read_message("xxxxxxxxxx\n".as_bytes(), true, 5).is_err());
    }

    #[test]
    fn recipients_from_headers() {
        let m = b"To: a@x.test, \"B, Bee\" <b@x.test>\nCc: c@x.test\nBcc:\n d@x.test\nSubject: To: no@x.test\n\nTo: body@x.test\n";
        assert_eq!(
            header_recipients(m),
            ["a@x.test", "b@x.test", "c@x.test", "d@x.test"]
        );
        let m = b"To: a@x.test\nResent-To: r@x.test\n\n";
        assert_eq!(header_recipients(m), ["r@x.test"]);
        assert_eq!(envelope_address("<>"), "");
        assert_eq!(envelope_address("<a@b>"), "a@b");
    }
}
