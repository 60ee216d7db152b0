//! The mail log, in Postfix's format: `Mmm dd hh:mm:ss HOST postfix/SERVICE[PID]: text`.
//!
//! Programs log with `tracing` (`info!`, `warn!`, `error!`); [`init`] installs
//! a subscriber that turns each event into one such line. `warn!` lines get
//! Postfix's `warning: ` prefix and `error!` lines `error: `; [`fatal`] logs
//! `fatal: ` and exits 1, as Postfix's `msg_fatal` does. Lines go to
//! `maillog_file` when it is set (opened with `O_APPEND` and written with one
//! `write(2)` per line, so many processes can share the file), else to syslog
//! with facility `mail`. Commands also copy their messages to stderr as
//! `program: text`, as Postfix's commands do.

pub mod delivery;

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Arc, Mutex, Once, RwLock};

use tracing::field::{Field, Visit};
pub use tracing::Level;
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// Where lines go.
enum Sink {
    File(File),
    Syslog,
}

struct Logger {
    tag: String,
    /// The syslog facility when the sink is syslog.
    facility: libc::c_int,
    host: String,
    sink: Sink,
    stderr: Option<String>,
    stderr_info: bool,
    verbose: bool,
    stamp: Stamp,
}

/// The time part of the lines, made once per second: finding the local
/// time makes chrono stat `/etc/localtime` (to notice a new zone), a
/// system call per line that a busy daemon would pay several times per
/// message. A change of zone shows from the next second on.
#[derive(Default)]
struct Stamp(Mutex<Option<(i64, String)>>);

impl Stamp {
    /// The stamp of `now` (unix seconds), `make` asked only for a second
    /// not seen last time.
    fn get(&self, now: i64, make: impl FnOnce() -> String) -> String {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match &*last {
            Some((at, text)) if *at == now => text.clone(),
            _ => {
                let text = make();
                *last = Some((now, text.clone()));
                text
            }
        }
    }
}

static LOGGER: RwLock<Option<Arc<Logger>>> = RwLock::new(None);
static ROUTER: RwLock<Option<Arc<dyn Router>>> = RwLock::new(None);

/// A program's own routing of some of its lines (named's `logging`
/// statement): it sees each line before the usual sink.
pub trait Router: Send + Sync {
    /// Offers a line: `target` is the event's target (named's BIND
    /// category), `text` the message without `warning: `/`error: `.
    /// True when the router took it, so the usual sink skips it.
    fn route(&self, target: &str, level: Level, text: &str) -> bool;
}

/// Installs (or with `None` removes) the router.
pub fn set_router(router: Option<Arc<dyn Router>>) {
    *ROUTER.write().unwrap_or_else(|e| e.into_inner()) = router;
}
static SUBSCRIBER: Once = Once::new();

/// How a program wants its log set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// The part after `syslog_name/`: `master`, `smtpd`, `postfix-script`...
    pub service: String,
    /// Copy messages to stderr prefixed with this name (commands do).
    pub stderr_name: Option<String>,
    /// With `stderr_name`: copy informational lines too, not only warnings and errors.
    pub stderr_info: bool,
    /// Also log `debug!` events (`-v`).
    pub verbose: bool,
}

/// Why the log could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Config(#[from] pfx_config::Error),
    #[error("open {file}: {source}")]
    Open {
        file: String,
        source: std::io::Error,
    },
}

/// Installs the global logger from the configuration. Call once, early.
pub fn init(cfg: &pfx_config::Config, opts: Options) -> Result<(), InitError> {
    let syslog_name = cfg.get("syslog_name")?;
    let maillog_file = cfg.get("maillog_file")?;
    let (sink, host) = if maillog_file.is_empty() {
        (Sink::Syslog, short_hostname())
    } else {
        let f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC)
            .open(&maillog_file)
            .map_err(|source| InitError::Open {
                file: maillog_file.clone(),
                source,
            })?;
        // Postfix's postlogd names the host by myhostname's first label.
        let myhostname = cfg.get("myhostname")?;
        let host = myhostname.split('.').next().unwrap_or_default().to_owned();
        (Sink::File(f), host)
    };
    install(Logger {
        tag: format!("{syslog_name}/{}", opts.service),
        facility: libc::LOG_MAIL,
        host,
        sink,
        stderr: opts.stderr_name,
        stderr_info: opts.stderr_info,
        verbose: opts.verbose,
        stamp: Stamp::default(),
    });
    Ok(())
}

/// A logger for when there is no configuration yet (or it is broken): stderr
/// only, as `name: text`. A later [`init`] replaces it (so does a reload).
pub fn init_stderr(name: &str) {
    install(Logger {
        tag: String::new(),
        facility: libc::LOG_MAIL,
        host: String::new(),
        sink: Sink::Syslog,
        stderr: Some(name.to_owned()),
        stderr_info: true,
        verbose: false,
        stamp: Stamp::default(),
    });
}

/// A logger for a program that is not part of the mail system's log (named
/// run on its own, as BIND's is): syslog with facility `daemon` as `tag[pid]`.
pub fn init_daemon_syslog(tag: &str) {
    install(Logger {
        tag: tag.to_owned(),
        facility: libc::LOG_DAEMON,
        host: String::new(),
        sink: Sink::Syslog,
        stderr: None,
        stderr_info: false,
        verbose: false,
        stamp: Stamp::default(),
    });
}

fn install(logger: Logger) {
    if let Sink::Syslog = logger.sink {
        if !logger.tag.is_empty() {
            // openlog keeps the pointer: the ident must live for the process.
            let ident = std::ffi::CString::new(logger.tag.clone()).unwrap_or_default();
            let ident: &'static std::ffi::CStr = Box::leak(ident.into_boxed_c_str());
            // SAFETY: ident is a valid NUL-terminated string that lives forever.
            unsafe {
                libc::openlog(
                    ident.as_ptr(),
                    libc::LOG_PID | libc::LOG_NDELAY,
                    logger.facility,
                )
            };
        }
    }
    *LOGGER.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(logger));
    SUBSCRIBER.call_once(|| {
        let subscriber = tracing_subscriber::registry().with(PostfixLayer);
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

fn current() -> Option<Arc<Logger>> {
    LOGGER.read().unwrap_or_else(|e| e.into_inner()).clone()
}

fn short_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .map(|h| h.split('.').next().unwrap_or_default().to_owned())
        .unwrap_or_else(|| "localhost".into())
}

/// The time as Postfix's `maillog_file` logger writes it (day of month
/// with two digits: `Dec 04`).
fn time_stamp(now: chrono::DateTime<chrono::Local>) -> String {
    now.format("%b %d %H:%M:%S").to_string()
}

/// One line as Postfix's `maillog_file` logger writes it, without the
/// newline.
fn line(stamp: &str, host: &str, tag: &str, pid: u32, text: &str) -> String {
    format!("{stamp} {host} {tag}[{pid}]: {text}")
}

fn prefix(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error: ",
        Level::WARN => "warning: ",
        _ => "",
    }
}

impl Logger {
    fn emit(&self, level: Level, text: &str) {
        if let Some(name) = self
            .stderr
            .as_ref()
            .filter(|_| self.stderr_info || level <= Level::WARN)
        {
            // One write(2) per line, as Postfix's msg_vstream: a million
            // `postsuper -d` lines cost a million writes, not four million.
            let _ = std::io::stderr().write_all(format!("{name}: {text}\n").as_bytes());
        }
        if self.tag.is_empty() {
            return;
        }
        match &self.sink {
            Sink::File(f) => {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                let stamp = self.stamp.get(secs, || time_stamp(chrono::Local::now()));
                let mut line = line(&stamp, &self.host, &self.tag, pfx_sys::pid(), text);
                line.push('\n');
                // One write(2) per line: O_APPEND keeps concurrent writers' lines whole.
                let _ = (&*f).write(line.as_bytes());
            }
            Sink::Syslog => {
                let prio = match level {
                    Level::ERROR => libc::LOG_ERR,
                    Level::WARN => libc::LOG_WARNING,
                    Level::INFO => libc::LOG_INFO,
                    _ => libc::LOG_DEBUG,
                };
                let msg = std::ffi::CString::new(text.replace('\0', " ")).unwrap_or_default();
                // SAFETY: a constant format and a valid C string argument.
                unsafe { libc::syslog(prio, c"%s".as_ptr(), msg.as_ptr()) };
            }
        }
    }
}

struct PostfixLayer;

#[derive(Default)]
struct MessageVisitor(String);

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for PostfixLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let Some(logger) = current() else { return };
        let level = *event.metadata().level();
        if level > Level::INFO && !logger.verbose {
            return;
        }
        let mut v = MessageVisitor(String::new());
        event.record(&mut v);
        let router = ROUTER.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(r) = router {
            if r.route(event.metadata().target(), level, &v.0) {
                return;
            }
        }
        logger.emit(level, &format!("{}{}", prefix(level), v.0));
    }
}

/// Logs `fatal: text` and exits with status 1, like Postfix's `msg_fatal`.
pub fn fatal(text: impl std::fmt::Display) -> ! {
    fatal_status(1, text)
}

/// Logs `fatal: text` and exits with `status` (Postfix's `msg_fatal_status`,
/// used by commands whose exit codes follow sysexits.h).
pub fn fatal_status(status: i32, text: impl std::fmt::Display) -> ! {
    match current() {
        Some(logger) => logger.emit(Level::ERROR, &format!("fatal: {text}")),
        None => eprintln!("fatal: {text}"),
    }
    std::process::exit(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn line_format_matches_postfix() {
        let t = chrono::Local.with_ymd_and_hms(2026, 3, 5, 9, 7, 3).unwrap();
        assert_eq!(
            line(
                &time_stamp(t),
                "mail",
                "postfix/smtpd",
                1234,
                "connect from unknown[127.0.0.2]"
            ),
            "Mar 05 09:07:03 mail postfix/smtpd[1234]: connect from unknown[127.0.0.2]"
        );
        let t = chrono::Local
            .with_ymd_and_hms(2026, 11, 25, 23, 59, 59)
            .unwrap();
        assert!(
            line(&time_stamp(t), "h", "postfix/master", 1, "x").starts_with("Nov 25 23:59:59 h ")
        );
    }

    #[test]
    fn the_stamp_is_made_once_per_second() {
        let stamp = Stamp::default();
        let made = std::cell::Cell::new(0);
        let make = |text: &str| {
            made.set(made.get() + 1);
            text.to_owned()
        };
        assert_eq!(stamp.get(100, || make("a")), "a");
        assert_eq!(stamp.get(100, || make("b")), "a", "same second: kept");
        assert_eq!(stamp.get(101, || make("c")), "c", "next second: made again");
        assert_eq!(made.get(), 2);
    }
}
