//! Per-message delivery status logs, in Postfix's format so that either
//! system reads the other's: `bounce/ID` (permanent failures, for the
//! non-delivery notice) and `defer/X/ID` (the latest reason each deferred
//! recipient waits, for `postqueue -p`; hashed by the ID's first character
//! as Postfix's `hash_queue_names` has it), and `trace/ID` (deliveries whose
//! recipient asked for a success notice, NOTIFY=SUCCESS).
//!
//! Each entry is a block of `name=value` lines between empty lines,
//! preceded (Postfix's `backwards_bounce_logfile_compatibility`) by the old
//! `<recipient>: reason` line: `recipient=`, `original_recipient=` (when it
//! differs), `status=`, `action=` (`delayed` or `failed`), `mta_type=dns`
//! and `mta_mname=` (the remote host, when there is one), `reason=`. A
//! reader takes the last entry for each recipient, ignores names it does
//! not know, and accepts the old one-line form.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What happened to one recipient.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub recipient: String,
    pub original: Option<String>,
    /// The recipient's DSN NOTIFY flags and ORCPT, from the queue file
    /// (`notify_flags`, `dsn_orig_rcpt`, as Postfix's logs keep them).
    pub notify: u32,
    pub dsn_orcpt: Option<String>,
    /// Enhanced status code, e.g. `5.1.1`.
    pub dsn: String,
    /// Where the answer came from (`local`, `mx.example[1.2.3.4]`, `none`).
    pub relay: String,
    pub reason: String,
    /// The `action=` of the entry when it is not the log's own (a trace
    /// entry's `delivered` or `relayed`).
    pub action: Option<String>,
}

/// Which log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Log {
    Bounce,
    Defer,
    Trace,
}

impl Log {
    fn dir(self) -> &'static str {
        match self {
            Self::Bounce => "bounce",
            Self::Defer => "defer",
            Self::Trace => "trace",
        }
    }

    fn action(self) -> &'static str {
        match self {
            Self::Bounce => "failed",
            Self::Defer => "delayed",
            Self::Trace => "delivered",
        }
    }
}

/// Path of a message's log.
pub fn path(queue_dir: &Path, log: Log, id: &str) -> PathBuf {
    let dir = queue_dir.join(log.dir());
    match (log, id.chars().next()) {
        (Log::Defer, Some(c)) => dir.join(c.to_string()).join(id),
        _ => dir.join(id),
    }
}

/// The IDs that have a log of this kind.
pub fn list(queue_dir: &Path, log: Log) -> Vec<String> {
    let dir = queue_dir.join(log.dir());
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().is_ok_and(|t| t.is_dir()) && name.len() == 1 {
            for f in std::fs::read_dir(e.path()).into_iter().flatten().flatten() {
                out.push(f.file_name().to_string_lossy().into_owned());
            }
        } else {
            out.push(name);
        }
    }
    out
}

/// One line's value: Postfix's readers take a line per field.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// Appends entries; with `durable`, fsyncs before returning (bounce records
/// must exist before the recipient is marked done).
pub fn append(
    queue_dir: &Path,
    log: Log,
    id: &str,
    records: &[Status],
    durable: bool,
) -> std::io::Result<()> {
    let mut text = String::new();
    for s in records {
        let reason = one_line(&s.reason);
        let rcpt = one_line(&s.recipient);
        text.push_str(&format!("\n<{rcpt}>: {reason}\nrecipient={rcpt}\n"));
        if let Some(o) = s
            .original
            .as_deref()
            .filter(|o| !o.eq_ignore_ascii_case(&s.recipient))
        {
            text.push_str(&format!("original_recipient={}\n", one_line(o)));
        }
        if let Some(o) = &s.dsn_orcpt {
            text.push_str(&format!("dsn_orig_rcpt={}\n", one_line(o)));
        }
        if s.notify != 0 {
            text.push_str(&format!("notify_flags={}\n", s.notify));
        }
        let action = s.action.as_deref().unwrap_or(log.action());
        text.push_str(&format!("status={}\naction={action}\n", s.dsn));
        if !matches!(s.relay.as_str(), "" | "none" | "local") {
            text.push_str(&format!("mta_type=dns\nmta_mname={}\n", one_line(&s.relay)));
        }
        text.push_str(&format!("reason={reason}\n\n"));
    }
    let p = path(queue_dir, log, id);
    if let Some(dir) = p.parent() {
        // A hash subdirectory is made on first use, as Postfix does.
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .or_else(|e| if dir.is_dir() { Ok(()) } else { Err(e) })?;
        }
    }
    let created = !p.exists();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&p)?;
    f.write_all(text.as_bytes())?;
    if durable {
        f.sync_data()?;
        // A new log's name must survive a crash too: the recipients it
        // records are marked done next.
        if created {
            if let Some(dir) = p.parent() {
                pfx_sys::fs::fsync_dir(dir)?;
            }
        }
    }
    Ok(())
}

/// Reads a log; the last entry for each recipient wins. Missing log: empty.
pub fn read(queue_dir: &Path, log: Log, id: &str) -> std::io::Result<Vec<Status>> {
    let text = match std::fs::read_to_string(path(queue_dir, log, id)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    let mut statuses = parse(&text);
    // The log's own action is no news.
    for s in &mut statuses {
        if s.action.as_deref() == Some(log.action()) {
            s.action = None;
        }
    }
    Ok(statuses)
}

fn parse(text: &str) -> Vec<Status> {
    let mut out: Vec<Status> = Vec::new();
    let mut push = |s: Status| {
        if !s.recipient.is_empty() {
            out.retain(|o| o.recipient != s.recipient);
            out.push(s);
        }
    };
    let empty = || Status {
        recipient: String::new(),
        original: None,
        dsn: String::new(),
        relay: "none".into(),
        reason: String::new(),
        ..Default::default()
    };
    let mut cur = empty();
    // An entry with name=value lines; the old one-line form alone counts
    // only when no such lines follow it.
    let mut old: Option<Status> = None;
    let mut named = false;
    for line in text.lines().chain([""]) {
        if line.is_empty() {
            if named {
                push(std::mem::replace(&mut cur, empty()));
            } else if let Some(o) = old.take() {
                push(o);
            }
            old = None;
            named = false;
            continue;
        }
        if let Some(rest) = line.strip_prefix('<') {
            if let Some((rcpt, reason)) = rest.split_once(">: ") {
                old = Some(Status {
                    recipient: rcpt.to_owned(),
                    reason: reason.to_owned(),
                    ..empty()
                });
            }
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        named = true;
        let value = value.trim().to_owned();
        match name.trim() {
            "recipient" => cur.recipient = value,
            "original_recipient" => cur.original = Some(value),
            "dsn_orig_rcpt" => cur.dsn_orcpt = Some(value),
            "notify_flags" => cur.notify = value.parse().unwrap_or(0),
            "status" => cur.dsn = value,
            "mta_mname" => cur.relay = value,
            "reason" => cur.reason = value,
            "action" => cur.action = Some(value),
            _ => {}
        }
    }
    out
}

/// Removes a message's log (missing is fine), and a defer log left
/// outside its hash directory.
pub fn remove(queue_dir: &Path, log: Log, id: &str) {
    let removed = std::fs::remove_file(path(queue_dir, log, id));
    if log == Log::Defer && removed.is_err() {
        let _ = std::fs::remove_file(queue_dir.join(log.dir()).join(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(r: &str, reason: &str) -> Status {
        Status {
            recipient: r.into(),
            original: None,
            dsn: "4.4.1".into(),
            relay: "none".into(),
            reason: reason.into(),
            ..Default::default()
        }
    }

    #[test]
    fn entries_round_trip_and_the_last_for_a_recipient_wins() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("defer")).unwrap();
        append(
            tmp.path(),
            Log::Defer,
            "ABC123",
            &[s("a@x", "first"), s("b@x", "line\nbreak")],
            false,
        )
        .unwrap();
        let mut remote = s("a@x", "second");
        remote.relay = "mx.example[192.0.2.1]".into();
        remote.original = Some("alias@x".into());
        append(tmp.path(), Log::Defer, "ABC123", &[remote.clone()], true).unwrap();
        assert!(
            tmp.path().join("defer/A/ABC123").exists(),
            "hashed as Postfix"
        );
        let got = read(tmp.path(), Log::Defer, "ABC123").unwrap();
        assert_eq!(got, [s("b@x", "line break"), remote]);
        assert_eq!(list(tmp.path(), Log::Defer), ["ABC123"]);
        remove(tmp.path(), Log::Defer, "ABC123");
        assert!(read(tmp.path(), Log::Defer, "ABC123").unwrap().is_empty());
    }

    #[test]
    fn postfix_3_7_logs_read() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/postfix-3.7");
        let text = std::fs::read_to_string(dir.join("defer-log.00C239942B3")).unwrap();
        let got = parse(&text);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].recipient, "z@remote.test");
        assert_eq!(got[0].dsn, "4.4.1");
        assert!(got[0]
            .reason
            .starts_with("delivery temporarily suspended: connect to 127.0.0.1"));
        let text = std::fs::read_to_string(dir.join("defer-log.EE8A9994406")).unwrap();
        assert_eq!(parse(&text).len(), 25);
        let text = std::fs::read_to_string(dir.join("bounce-log.00C239942B3")).unwrap();
        let got = parse(&text);
        assert_eq!(
            (
                got[0].recipient.as_str(),
                got[0].dsn.as_str(),
                got[0].reason.as_str()
            ),
            ("nobody@bounce.test", "5.1.1", "test bounce")
        );
        // The old one-line form alone.
        assert_eq!(
            parse("\n<a@x>: gone\n\n"),
            [Status {
                reason: "gone".into(),
                ..s("a@x", "")
            }]
            .map(|mut x| {
                x.dsn = String::new();
                x
            })
        );
    }

    #[test]
    fn what_postfix_rs_writes_is_what_postfix_writes() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("bounce")).unwrap();
        append(
            tmp.path(),
            Log::Bounce,
            "ABC123",
            &[Status {
                dsn: "5.1.1".into(),
                ..s("nobody@bounce.test", "test bounce")
            }],
            true,
        )
        .unwrap();
        let ours = std::fs::read_to_string(tmp.path().join("bounce/ABC123")).unwrap();
        // Postfix's own entry, but for the offset and DSN ORCPT fields.
        assert_eq!(ours, "\n<nobody@bounce.test>: test bounce\nrecipient=nobody@bounce.test\nstatus=5.1.1\naction=failed\nreason=test bounce\n\n");
    }
}
