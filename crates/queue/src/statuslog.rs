//! Per-message delivery status logs: `bounce/ID` (permanent failures, for
//! the non-delivery notice) and `defer/ID` (the latest reason each deferred
//! recipient waits, for `postqueue -p` and delay notices).
//!
//! One line per recipient: fields separated by tabs, with `\\`, `\t` and
//! `\n` escaped. A later line for the same recipient replaces an earlier one.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// What happened to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub recipient: String,
    pub original: Option<String>,
    /// Enhanced status code, e.g. `5.1.1`.
    pub dsn: String,
    /// Where the answer came from (`local`, `mx.example[1.2.3.4]`, `none`).
    pub relay: String,
    pub reason: String,
}

/// Which log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Log {
    Bounce,
    Defer,
}

impl Log {
    fn dir(self) -> &'static str {
        match self {
            Self::Bounce => "bounce",
            Self::Defer => "defer",
        }
    }
}

/// Path of a message's log.
pub fn path(queue_dir: &Path, log: Log, id: &str) -> PathBuf {
    queue_dir.join(log.dir()).join(id)
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some('t') => out.push('\t'),
                Some('n') => out.push('\n'),
                Some(o) => out.push(o),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Appends records; with `durable`, fsyncs before returning (bounce records
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
        text.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\n",
            escape(&s.recipient),
            escape(s.original.as_deref().unwrap_or("")),
            escape(&s.dsn),
            escape(&s.relay),
            escape(&s.reason)
        ));
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path(queue_dir, log, id))?;
    f.write_all(text.as_bytes())?;
    if durable {
        f.sync_data()?;
    }
    Ok(())
}

/// Reads a log; the last record for each recipient wins. Missing log: empty.
pub fn read(queue_dir: &Path, log: Log, id: &str) -> std::io::Result<Vec<Status>> {
    let text = match std::fs::read_to_string(path(queue_dir, log, id)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    let mut out: Vec<Status> = Vec::new();
    for line in text.lines() {
        let f: Vec<String> = line.split('\t').map(unescape).collect();
        let [recipient, original, dsn, relay, reason] =
            <[String; 5]>::try_from(f).unwrap_or_default();
        if recipient.is_empty() {
            continue;
        }
        out.retain(|s| s.recipient != recipient);
        out.push(Status {
            recipient,
            original: (!original.is_empty()).then_some(original),
            dsn,
            relay,
            reason,
        });
    }
    Ok(out)
}

/// Removes a message's log (missing is fine).
pub fn remove(queue_dir: &Path, log: Log, id: &str) {
    let _ = std::fs::remove_file(path(queue_dir, log, id));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_with_odd_characters_and_last_wins() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("defer")).unwrap();
        let s = |r: &str, reason: &str| Status {
            recipient: r.into(),
            original: None,
            dsn: "4.4.1".into(),
            relay: "none".into(),
            reason: reason.into(),
        };
        append(
            tmp.path(),
            Log::Defer,
            "ABC123",
            &[s("a@x", "first\ttab\\slash"), s("b@x", "line\nbreak")],
            false,
        )
        .unwrap();
        append(
            tmp.path(),
            Log::Defer,
            "ABC123",
            &[s("a@x", "second")],
            true,
        )
        .unwrap();
        let got = read(tmp.path(), Log::Defer, "ABC123").unwrap();
        assert_eq!(got, [s("b@x", "line\nbreak"), s("a@x", "second")]);
        remove(tmp.path(), Log::Defer, "ABC123");
        assert!(read(tmp.path(), Log::Defer, "ABC123").unwrap().is_empty());
    }
}
