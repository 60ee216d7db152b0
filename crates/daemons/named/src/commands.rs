//! What named does for each rndc command, with BIND 9.18's answers:
//! the same result codes, the same texts (`server reload successful`,
//! `no matching zone 'x' in any view`, the lines of `status` and
//! `zonestatus`) and the same log lines.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use tracing::{debug, info, warn};

use pfx_named_conf::conf::ZoneConf;

use crate::control::{Code, Controls, Event, Reply};
use crate::listen::Listening;
use crate::serve::{key, Named, ZoneKey};

/// Carries out what the control channel asked; true when named is to stop.
/// A reload or reconfig also takes the new `controls` statement.
pub fn handle(
    named: &mut Named,
    controls: &mut Controls,
    listening: &mut Listening,
    event: Event,
    mode: Mode,
) -> bool {
    match event {
        Event::Command {
            line,
            read_only,
            reply,
        } => {
            let before = named.configured;
            let r = named.command(&line, read_only, mode);
            if named.configured != before {
                controls.configure(named.conf());
            }
            // `scan`, and a reload or reconfig (BIND scans then too).
            if std::mem::take(&mut named.scan) || named.configured != before {
                listening.rescan(named.conf());
            }
            let _ = reply.send(r);
            false
        }
        Event::Stop => true,
        Event::Transferred { key, text } => {
            named.install_transfer(&key, &text);
            false
        }
        Event::Expired { key } => {
            named.expire(&key);
            false
        }
    }
}

/// Commands a `read-only yes` channel still obeys.
const READ_ONLY: &[&str] = &["null", "status", "showzone", "testgen", "zonestatus", "nta"];

/// Commands of BIND's rndc that this named does not carry out; they get
/// `not implemented` rather than BIND's `unknown command`.
const NOT_IMPLEMENTED: &[&str] = &[
    "addzone",
    "delzone",
    "modzone",
    "dnssec",
    "dnstap",
    "dnstap-reopen",
    "dumpstats",
    "flushname",
    "flushtree",
    "loadkeys",
    "managed-keys",
    "nta",
    "recursing",
    "scan",
    "secroots",
    "serve-stale",
    "showzone",
    "sign",
    "signing",
    "tcp-timeouts",
    "testgen",
    "tsig-delete",
    "tsig-list",
    "validation",
    "timerpoke",
];

/// How named runs, which decides what `stop` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// On its own: `stop` and `halt` end it, as with BIND.
    Standalone,
    /// Under master: master owns its life, so `stop` is refused.
    Master,
}

/// Splits a command line as BIND's lexer does: words, `"quoted words"`.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut w = String::new();
        if c == '"' {
            chars.next();
            for c in chars.by_ref() {
                if c == '"' {
                    break;
                }
                w.push(c);
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                w.push(c);
                chars.next();
            }
        }
        out.push(w);
    }
    out
}

/// BIND's HTTP-style timestamps: `Sat, 05 Dec 2026 14:13:01 GMT`.
fn http_time(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

impl Named {
    /// Carries out one command line from the control channel.
    pub fn command(&mut self, line: &str, read_only: bool, mode: Mode) -> Reply {
        let args = words(line);
        let Some(command) = args.first().map(|c| c.to_ascii_lowercase()) else {
            return Reply::err(Code::UnexpectedEnd, "");
        };
        if read_only && !READ_ONLY.contains(&command.as_str()) {
            info!("rejecting restricted control channel command '{line}'");
            return Reply::err(Code::Failure, "");
        }
        if command == "status" || (command == "null" && line.len() == 4) {
            debug!("received control channel command '{line}'");
        } else {
            info!("received control channel command '{line}'");
        }
        let rest = &args[1..];
        match command.as_str() {
            "null" => Reply::ok(""),
            "status" => Reply::ok(self.status()),
            "stop" | "halt" => match mode {
                Mode::Standalone => {
                    if command == "stop" {
                        info!("shutting down: flushing changes");
                    } else {
                        info!("shutting down");
                    }
                    Reply::err(Code::ShuttingDown, "")
                }
                Mode::Master => Reply::err(
                    Code::Failure,
                    "named runs under postfix-rs master: use 'postfix stop'",
                ),
            },
            "reload" => self.reload_command(rest),
            "reconfig" => match self.reconfig() {
                Ok(()) => Reply::ok(""),
                Err(_) => Reply::err(Code::Failure, ""),
            },
            "flush" => self.flush(rest),
            "querylog" => self.querylog(rest),
            "dumpdb" => self.dumpdb(rest),
            "zonestatus" => self.zonestatus(rest),
            "freeze" | "thaw" | "unfreeze" | "sync" => self.freeze(&command, rest),
            "notify" => match self.zone_arg(rest) {
                Err(r) => r,
                Ok(None) => Reply::err(Code::UnexpectedEnd, ""),
                Ok(Some(zone)) => {
                    self.queue_notify(zone);
                    Reply::ok("zone notify queued")
                }
            },
            "retransfer" | "refresh" => match self.zone_arg(rest) {
                Err(r) => r,
                Ok(None) => Reply::err(Code::UnexpectedEnd, ""),
                Ok(Some(zone)) => {
                    let whole = command == "retransfer";
                    match (self.wake_secondary(&zone, whole), whole) {
                        (true, true) => Reply::ok(""),
                        (true, false) => Reply::ok("zone refresh queued"),
                        (false, true) => Reply::err(
                            Code::Failure,
                            "retransfer: inappropriate zone type: primary",
                        ),
                        (false, false) => {
                            Reply::err(Code::Failure, "not a secondary, mirror, or stub zone")
                        }
                    }
                }
            },
            "trace" | "notrace" => Reply::ok(""),
            "scan" => {
                self.scan = true;
                Reply::ok("")
            }
            c if NOT_IMPLEMENTED.contains(&c) => Reply::err(Code::NotImplemented, ""),
            c => {
                warn!("unknown control channel command '{c}'");
                Reply::err(Code::UnknownCommand, "")
            }
        }
    }

    /// The zone an argument list names (`ZONE [CLASS [VIEW]]`), as BIND's
    /// zone_from_args: `Ok(None)` when none is named.
    fn zone_arg(&self, rest: &[String]) -> Result<Option<ZoneKey>, Reply> {
        let Some(zone) = rest.first() else {
            return Ok(None);
        };
        let name = zone.trim_end_matches('.').to_ascii_lowercase();
        let class_ok = rest.get(1).is_none_or(|c| c.eq_ignore_ascii_case("IN"));
        let found: Vec<&ZoneConf> = self
            .conf
            .zones
            .iter()
            .filter(|z| class_ok && z.name == name)
            .collect();
        if let Some(view) = rest.get(2) {
            if !self.conf.views.iter().any(|v| v.name == *view) {
                return Err(Reply::err(
                    Code::NotFound,
                    format!("no matching view '{view}'"),
                ));
            }
            return match found.iter().find(|z| z.view == *view) {
                Some(z) => Ok(Some(key(z))),
                None => Err(Reply::err(
                    Code::NotFound,
                    format!("no matching zone '{zone}' in view '{view}'"),
                )),
            };
        }
        match found.as_slice() {
            [z] => Ok(Some(key(z))),
            [] => Err(Reply::err(
                Code::NotFound,
                format!("no matching zone '{zone}' in any view"),
            )),
            _ => Err(Reply::err(
                Code::Multiple,
                format!("zone '{zone}' was found in multiple views"),
            )),
        }
    }

    fn reload_command(&mut self, rest: &[String]) -> Reply {
        match self.zone_arg(rest) {
            Err(r) => r,
            Ok(None) => match self.reload() {
                Ok(()) => Reply::ok("server reload successful"),
                Err(_) => Reply::err(Code::Failure, ""),
            },
            Ok(Some(zone)) => match self.reload_zone(&zone) {
                // BIND 9.18 loads a changed zone file in the background and says
                // so; here it is already loaded, and the words are kept.
                Ok(true) => Reply::ok("zone reload queued"),
                Ok(false) => Reply::ok("zone reload up-to-date"),
                Err(_) => Reply::err(Code::Failure, ""),
            },
        }
    }

    fn flush(&mut self, rest: &[String]) -> Reply {
        match rest.first() {
            Some(view) if !self.conf.views.iter().any(|v| v.name == *view) => {
                tracing::error!("flushing cache in view '{view}' failed: view not found");
                Reply::err(Code::NotFound, "")
            }
            Some(view) => {
                self.rebuild();
                info!("flushing cache in view '{view}' succeeded");
                Reply::ok("")
            }
            None => {
                self.rebuild();
                info!("flushing caches in all views succeeded");
                Reply::ok("")
            }
        }
    }

    fn querylog(&mut self, rest: &[String]) -> Reply {
        let flag = &self.handler.querylog;
        let prev = flag.load(Ordering::Relaxed);
        let value = match rest.first().map(|v| v.to_ascii_lowercase()).as_deref() {
            None => !prev,
            Some("on" | "yes" | "enable" | "true") => true,
            Some("off" | "no" | "disable" | "false") => false,
            Some(_) => return Reply::err(Code::Syntax, ""),
        };
        if value != prev {
            flag.store(value, Ordering::Relaxed);
            info!("query logging is now {}", if value { "on" } else { "off" });
        }
        Reply::ok("")
    }

    /// `freeze`/`thaw`/`sync`: without a zone there is nothing to do (no
    /// zone here is dynamic); a named zone is not dynamic.
    fn freeze(&mut self, command: &str, rest: &[String]) -> Reply {
        match self.zone_arg(rest) {
            Err(r) => r,
            Ok(None) => Reply::ok(""),
            Ok(Some(_)) if command == "sync" => Reply::ok(""),
            Ok(Some(_)) => Reply::err(Code::NotDynamic, ""),
        }
    }

    /// `status`, line for line as BIND 9.18 prints it (the counters of
    /// recursion and TCP clients, which this named does not keep, left out).
    fn status(&self) -> String {
        let uname = nix::sys::utsname::uname().ok();
        let host = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "localhost".into());
        let os = uname.map_or_else(String::new, |u| {
            format!(
                "{} {} {} {}",
                u.sysname().to_string_lossy(),
                u.machine().to_string_lossy(),
                u.release().to_string_lossy(),
                u.version().to_string_lossy()
            )
        });
        let own = format!("postfix-rs named {}", env!("CARGO_PKG_VERSION"));
        // As BIND: what `version` sets, in parentheses, when it is set.
        let version = match &self.conf.options.version {
            Some(v) if *v == own => String::new(),
            Some(v) => format!(" ({v})"),
            None => " (version.bind/txt/ch disabled)".into(),
        };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut s = String::new();
        let mut line = |l: String| {
            s.push_str(&l);
            s.push('\n');
        };
        line(format!("version: {own} <id:>{version}"));
        line(format!("running on {host}: {os}"));
        line(format!("boot time: {}", http_time(self.booted)));
        line(format!("last configured: {}", http_time(self.configured)));
        line(format!("configuration file: {}", self.path.display()));
        line(format!("CPUs found: {cpus}"));
        line(format!("worker threads: {}", self.threads));
        line(format!("UDP listeners per interface: {}", self.threads));
        line(format!(
            "number of zones: {} (0 automatic)",
            self.loaded.len()
        ));
        line("debug level: 0".into());
        line("xfers running: 0".into());
        line("xfers deferred: 0".into());
        line("soa queries in progress: 0".into());
        line(format!(
            "query logging is {}",
            if self.handler.querylog.load(Ordering::Relaxed) {
                "ON"
            } else {
                "OFF"
            }
        ));
        if self.reload_failed {
            line("reload/reconfig failed".into());
        }
        s.push_str("server is up and running");
        s
    }

    fn zonestatus(&self, rest: &[String]) -> Reply {
        let name = match self.zone_arg(rest) {
            Err(r) => return r,
            Ok(None) => return Reply::err(Code::UnexpectedEnd, ""),
            Ok(Some(n)) => n,
        };
        let Some(z) = self
            .conf
            .zones
            .iter()
            .find(|z| z.view == name.0 && z.name == name.1)
        else {
            return Reply::err(Code::NotFound, "");
        };
        let loaded = self.loaded.get(&name);
        let kind = if z.secondary.is_some() {
            "secondary"
        } else {
            "primary"
        };
        let mut s = format!("name: {}\ntype: {kind}\nfiles: {}", rest[0], z.file_name);
        s.push_str(&format!(
            "\nserial: {}\nnodes: {}",
            loaded.map_or(0, |l| l.serial),
            loaded.map_or(0, |l| l.zone.node_count())
        ));
        if let Some(t) = loaded.and_then(|l| l.mtime) {
            s.push_str(&format!("\nlast loaded: {}", http_time(t)));
        }
        s.push_str("\nsecure: no\ndynamic: no\nreconfigurable via modzone: no");
        Reply::ok(s)
    }

    /// `dumpdb [-all|-cache|-zones|...]`: writes `dump-file` as BIND lays
    /// it out. This named keeps no cache of outside records of its own
    /// (the forwarder's is internal to it), so the cache part is headers
    /// only; `-zones` and `-all` dump the served zones.
    fn dumpdb(&self, rest: &[String]) -> Reply {
        let mut cache = true;
        let mut zones = false;
        for a in rest {
            match a.as_str() {
                "-all" => (cache, zones) = (true, true),
                "-cache" => (cache, zones) = (true, false),
                "-zones" => (cache, zones) = (false, true),
                "-adb" | "-bad" | "-expired" | "-fail" => (cache, zones) = (true, false),
                _ => {}
            }
        }
        info!("dumpdb started");
        let path = &self.conf.options.dump_file;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(path)?;
            let mut out = String::new();
            for view in &self.conf.views {
                out.push_str(&format!(";\n; Start view {}\n;\n", view.name));
                if cache {
                    out.push_str(&format!(
                        ";\n; Cache dump of view '{0}' (cache {0})\n;\n",
                        view.name
                    ));
                    out.push_str(&format!(
                        "$DATE {}\n",
                        chrono::Utc::now().format("%Y%m%d%H%M%S")
                    ));
                }
                if zones {
                    for z in view.zones(&self.conf) {
                        let label = if z.name.is_empty() { "." } else { &z.name };
                        out.push_str(&format!(";\n; Zone dump of '{label}/IN'\n;\n"));
                        if let Some(l) = self.loaded.get(&key(z)) {
                            for r in l.zone.records() {
                                out.push_str(&format!("{r}\n"));
                            }
                        }
                    }
                }
            }
            out.push_str("; Dump complete\n");
            f.write_all(out.as_bytes())?;
            f.sync_all()
        };
        match write() {
            Ok(()) => {
                info!("dumpdb complete");
                Reply::ok("")
            }
            Err(e) => {
                tracing::error!("could not open dump file '{}': {e}", path.display());
                Reply::err(Code::Failure, "")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_split_as_binds_lexer_splits_them() {
        assert_eq!(
            words("  reload  example.com IN "),
            ["reload", "example.com", "IN"]
        );
        assert_eq!(words("zonestatus \"a b\""), ["zonestatus", "a b"]);
        assert!(words("").is_empty());
    }

    #[test]
    fn timestamps_are_binds() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_796_480_581);
        assert_eq!(http_time(t), "Sat, 05 Dec 2026 14:23:01 GMT");
    }
}
