//! named.conf's `logging` statement carried out: each line goes to the
//! channels of its category (the event's tracing target: `queries`,
//! `security`, `notify`, `update-security`; anything else is `general`),
//! or of the `default` category, in BIND's format (`05-Dec-2026
//! 14:13:08.056 queries: info: client ...` with print-time,
//! print-category and print-severity). A category with no channels of its
//! own, and no `default` category, leaves the line to the usual log (the
//! mail log under master, syslog or stderr on its own), which is where
//! BIND's default_syslog would put it.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use pfx_maillog::{Level, Router};
use pfx_named_conf::logging::{Channel, Destination, Logging, Severity};

/// The categories named's own lines carry (as tracing targets).
const OWN_CATEGORIES: &[&str] = &[
    "queries",
    "security",
    "notify",
    "update-security",
    "xfer-out",
    "xfer-in",
];

/// Routes named's lines by the `logging` statement; `None` removes the routing.
pub fn install(logging: Option<&Logging>) {
    pfx_maillog::set_router(logging.map(|l| Arc::new(Channels::new(l)) as Arc<dyn Router>));
}

struct Open {
    channel: Channel,
    file: Mutex<Option<FileState>>,
}

struct FileState {
    file: File,
    written: u64,
}

struct Channels {
    channels: Vec<Open>,
    /// Channel indexes by category.
    categories: HashMap<String, Vec<usize>>,
}

impl Channels {
    fn new(l: &Logging) -> Self {
        let channels: Vec<Open> = l
            .channels
            .iter()
            .map(|c| Open {
                channel: c.clone(),
                file: Mutex::new(None),
            })
            .collect();
        let mut categories: HashMap<String, Vec<usize>> = HashMap::new();
        for (cat, names) in &l.categories {
            let list = categories.entry(cat.clone()).or_default();
            for n in names {
                if let Some(i) = channels.iter().position(|c| c.channel.name == *n) {
                    list.push(i);
                }
            }
        }
        Self {
            channels,
            categories,
        }
    }
}

fn severity(level: Level) -> (Severity, &'static str) {
    match level {
        Level::ERROR => (Severity::Error, "error"),
        Level::WARN => (Severity::Warning, "warning"),
        Level::INFO => (Severity::Info, "info"),
        _ => (Severity::Debug, "debug 1"),
    }
}

/// BIND's line: the parts the channel asks for, then the message.
fn format(c: &Channel, category: &str, level: Level, text: &str) -> String {
    let mut line = String::new();
    if c.print_time {
        line.push_str(
            &chrono::Local::now()
                .format("%d-%b-%Y %H:%M:%S%.3f ")
                .to_string(),
        );
    }
    if c.print_category {
        line.push_str(category);
        line.push_str(": ");
    }
    if c.print_severity {
        line.push_str(severity(level).1);
        line.push_str(": ");
    }
    line.push_str(text);
    line
}

fn facility(name: &str) -> libc::c_int {
    match name {
        "kern" => libc::LOG_KERN,
        "user" => libc::LOG_USER,
        "mail" => libc::LOG_MAIL,
        "auth" => libc::LOG_AUTH,
        "syslog" => libc::LOG_SYSLOG,
        "lpr" => libc::LOG_LPR,
        "news" => libc::LOG_NEWS,
        "uucp" => libc::LOG_UUCP,
        "cron" => libc::LOG_CRON,
        "authpriv" => libc::LOG_AUTHPRIV,
        "ftp" => libc::LOG_FTP,
        "local0" => libc::LOG_LOCAL0,
        "local1" => libc::LOG_LOCAL1,
        "local2" => libc::LOG_LOCAL2,
        "local3" => libc::LOG_LOCAL3,
        "local4" => libc::LOG_LOCAL4,
        "local5" => libc::LOG_LOCAL5,
        "local6" => libc::LOG_LOCAL6,
        "local7" => libc::LOG_LOCAL7,
        _ => libc::LOG_DAEMON,
    }
}

impl Open {
    fn write(&self, category: &str, level: Level, text: &str) {
        let c = &self.channel;
        // default_debug writes only at a debug level above 0 (never here);
        // another `severity dynamic` channel takes what level 0 allows.
        if c.dynamic && c.name == "default_debug" {
            return;
        }
        if severity(level).0 > c.severity {
            return;
        }
        match &c.destination {
            Destination::Null => {}
            Destination::Stderr => {
                let _ = writeln!(std::io::stderr(), "{}", format(c, category, level, text));
            }
            Destination::Syslog(f) => {
                let prio = match level {
                    Level::ERROR => libc::LOG_ERR,
                    Level::WARN => libc::LOG_WARNING,
                    Level::INFO => libc::LOG_INFO,
                    _ => libc::LOG_DEBUG,
                };
                let msg =
                    std::ffi::CString::new(format(c, category, level, text).replace('\0', " "))
                        .unwrap_or_default();
                // SAFETY: a constant format and a valid C string argument.
                unsafe { libc::syslog(facility(f) | prio, c"%s".as_ptr(), msg.as_ptr()) };
            }
            Destination::File {
                path,
                versions,
                size,
            } => {
                let mut line = format(c, category, level, text);
                line.push('\n');
                let mut state = self.file.lock().unwrap_or_else(|e| e.into_inner());
                self.to_file(&mut state, path, *versions, *size, line.as_bytes());
            }
        }
    }

    /// Appends a line, rotating (`versions`) or stopping at `size` as BIND does.
    fn to_file(
        &self,
        state: &mut Option<FileState>,
        path: &Path,
        versions: Option<u32>,
        size: Option<u64>,
        line: &[u8],
    ) {
        if state.is_none() {
            *state = open(path);
        }
        let Some(s) = state.as_mut() else { return };
        if let Some(limit) = size {
            if s.written + line.len() as u64 > limit {
                match versions {
                    None => return,
                    Some(v) => {
                        rotate(path, v);
                        *state = open(path);
                    }
                }
            }
        }
        let Some(s) = state.as_mut() else { return };
        if s.file.write_all(line).is_ok() {
            s.written += line.len() as u64;
        }
    }
}

fn open(path: &Path) -> Option<FileState> {
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    let written = file.metadata().map_or(0, |m| m.len());
    Some(FileState { file, written })
}

/// `path` becomes `path.0`, `path.0` becomes `path.1`, ... up to `versions`.
fn rotate(path: &Path, versions: u32) {
    let name = |i: u32| PathBuf::from(format!("{}.{i}", path.display()));
    if versions == 0 {
        let _ = std::fs::remove_file(path);
        return;
    }
    let keep = versions.min(100);
    let _ = std::fs::remove_file(name(keep - 1));
    for i in (0..keep - 1).rev() {
        let _ = std::fs::rename(name(i), name(i + 1));
    }
    let _ = std::fs::rename(path, name(0));
}

impl Router for Channels {
    fn route(&self, target: &str, level: Level, text: &str) -> bool {
        let category = OWN_CATEGORIES
            .iter()
            .find(|c| **c == target)
            .copied()
            .unwrap_or("general");
        let Some(list) = self
            .categories
            .get(category)
            .or_else(|| self.categories.get("default"))
        else {
            return false;
        };
        for &i in list {
            self.channels[i].write(category, level, text);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channels(text: &str, dir: &Path) -> Channels {
        let conf = pfx_named_conf::conf::parse(
            &dir.join("named.conf"),
            &format!("options {{ directory \"{}\"; }};\n{text}", dir.display()),
        )
        .unwrap();
        Channels::new(conf.logging.as_ref().unwrap())
    }

    #[test]
    fn lines_go_to_their_categorys_channels_in_binds_format() {
        let dir = tempfile::tempdir().unwrap();
        let c = channels(
            "logging {\n channel q { file \"q.log\"; print-category yes; print-severity yes; };\n\
             channel w { file \"w.log\"; severity warning; };\n\
             category queries { q; };\n category default { w; };\n};",
            dir.path(),
        );
        assert!(c.route("queries", Level::INFO, "client @0x1 ...: query: a IN A +"));
        assert!(c.route("named::serve", Level::INFO, "not severe enough"));
        assert!(c.route("named::serve", Level::WARN, "a warning"));
        let q = std::fs::read_to_string(dir.path().join("q.log")).unwrap();
        assert_eq!(q, "queries: info: client @0x1 ...: query: a IN A +\n");
        let w = std::fs::read_to_string(dir.path().join("w.log")).unwrap();
        assert_eq!(w, "a warning\n");
        // Without a category of its own or a default one, the usual log has it.
        let c = channels(
            "logging { channel q { file \"q.log\"; }; category queries { q; }; };",
            dir.path(),
        );
        assert!(!c.route("named::serve", Level::INFO, "loaded"));
    }

    #[test]
    fn files_rotate_at_their_size() {
        let dir = tempfile::tempdir().unwrap();
        let c = channels(
            "logging { channel q { file \"q.log\" versions 2 size 20; }; category queries { q; }; };",
            dir.path(),
        );
        for i in 0..5 {
            c.route("queries", Level::INFO, &format!("line number {i}"));
        }
        let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap_or_default();
        assert_eq!(read("q.log"), "line number 4\n");
        assert_eq!(read("q.log.0"), "line number 3\n");
        assert_eq!(read("q.log.1"), "line number 2\n");
        assert_eq!(read("q.log.2"), "");
        // Without versions, writing stops at the size.
        let c = channels(
            "logging { channel s { file \"s.log\" size 20; }; category queries { s; }; };",
            dir.path(),
        );
        for i in 0..5 {
            c.route("queries", Level::INFO, &format!("line number {i}"));
        }
        assert_eq!(read("s.log"), "line number 0\n");
    }
}
