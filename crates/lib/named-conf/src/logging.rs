//! The `logging` statement: channels (where lines go and how they look)
//! and categories (which lines go to which channels), as BIND 9.18 has them.

use std::path::PathBuf;

use crate::conf::{Error, Item, Stmt};

/// Where a channel writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `file "path" [versions N|unlimited] [size S]`: rotated to
    /// `path.0`, `path.1`... when `size` is reached and `versions` is
    /// given; without `versions`, writing stops at `size`, as BIND does.
    File {
        path: PathBuf,
        versions: Option<u32>,
        size: Option<u64>,
    },
    /// `syslog [facility]` (default daemon).
    Syslog(String),
    Stderr,
    Null,
}

/// How severe a line must be to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Critical,
    Error,
    Warning,
    Notice,
    Info,
    /// `debug [N]`, and `dynamic` (the debug level; 0 here).
    Debug,
}

/// One `channel NAME { ... };`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    pub name: String,
    pub destination: Destination,
    pub severity: Severity,
    /// `severity dynamic`: the server's debug level decides.
    pub dynamic: bool,
    pub print_time: bool,
    pub print_category: bool,
    pub print_severity: bool,
}

impl Channel {
    fn new(name: &str, destination: Destination) -> Self {
        Self {
            name: name.to_owned(),
            destination,
            severity: Severity::Info,
            dynamic: false,
            print_time: false,
            print_category: false,
            print_severity: false,
        }
    }

    /// BIND's predefined channels.
    fn predefined() -> Vec<Self> {
        let debug = Self {
            dynamic: true,
            ..Self::new(
                "default_debug",
                Destination::File {
                    path: PathBuf::from("named.run"),
                    versions: None,
                    size: None,
                },
            )
        };
        vec![
            Self::new("default_syslog", Destination::Syslog("daemon".into())),
            debug,
            Self::new("default_stderr", Destination::Stderr),
            Self::new("null", Destination::Null),
        ]
    }
}

/// The whole `logging` statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logging {
    /// BIND's predefined channels, replaced by same-named definitions.
    pub channels: Vec<Channel>,
    /// `category NAME { channel; ... };`, in order.
    pub categories: Vec<(String, Vec<String>)>,
}

/// BIND 9.18's categories.
const CATEGORIES: &[&str] = &[
    "client",
    "cname",
    "config",
    "database",
    "default",
    "delegation-only",
    "dispatch",
    "dnssec",
    "dnstap",
    "edns-disabled",
    "general",
    "lame-servers",
    "network",
    "notify",
    "nsid",
    "queries",
    "query-errors",
    "rate-limit",
    "resolver",
    "rpz",
    "rpz-passthru",
    "security",
    "serve-stale",
    "spill",
    "sslkeylog",
    "trust-anchor-telemetry",
    "unmatched",
    "update",
    "update-security",
    "xfer-in",
    "xfer-out",
    "zoneload",
];

const FACILITIES: &[&str] = &[
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
];

/// Reads a `logging { ... };` statement; relative file names are made
/// absolute later, under `directory`.
pub(crate) fn logging(s: &Stmt) -> Result<Logging, Error> {
    let mut out = Logging {
        channels: Channel::predefined(),
        categories: Vec::new(),
    };
    for clause in s.block()? {
        match clause.keyword().unwrap_or_default() {
            "channel" => {
                let c = channel(clause)?;
                out.channels.retain(|p| p.name != c.name);
                out.channels.push(c);
            }
            "category" => {
                let name = clause.word(1).to_owned();
                if !CATEGORIES.contains(&name.as_str()) {
                    return Err(clause.error(&format!("undefined category: '{name}'")));
                }
                let list: Vec<String> = clause
                    .block()?
                    .iter()
                    .map(|c| c.word(0).to_owned())
                    .collect();
                out.categories.push((name, list));
            }
            other => return Err(clause.error(&format!("unknown option '{other}'"))),
        }
    }
    for (_, list) in &out.categories {
        for c in list {
            if !out.channels.iter().any(|ch| ch.name == *c) {
                return Err(s.error(&format!("undefined channel: '{c}'")));
            }
        }
    }
    Ok(out)
}

fn channel(s: &Stmt) -> Result<Channel, Error> {
    let name = s.word(1);
    if name.is_empty() {
        return Err(s.error("expected: channel NAME { ... };"));
    }
    let mut destination = None;
    let mut c = Channel::new(name, Destination::Null);
    for opt in s.block()? {
        let words: Vec<&str> = opt
            .items
            .iter()
            .map(|i| match i {
                Item::Word(w) => w.as_str(),
                Item::Block(_) => "{",
            })
            .collect();
        let yes = |v: Option<&&str>| -> Result<bool, Error> {
            match v.copied() {
                Some("yes" | "true" | "1") => Ok(true),
                Some("no" | "false" | "0") => Ok(false),
                // print-time's other forms (iso8601, local...) print a time too.
                Some("iso8601" | "iso8601-utc" | "local") => Ok(true),
                v => Err(opt.error(&format!(
                    "'{}': expected yes or no, not '{}'",
                    words[0],
                    v.unwrap_or("")
                ))),
            }
        };
        match words[0] {
            "file" => destination = Some(file(opt, &words)?),
            "syslog" => {
                let facility = words.get(1).copied().unwrap_or("daemon");
                if !FACILITIES.contains(&facility) {
                    return Err(opt.error(&format!("unknown syslog facility '{facility}'")));
                }
                destination = Some(Destination::Syslog(facility.to_owned()));
            }
            "stderr" => destination = Some(Destination::Stderr),
            "null" => destination = Some(Destination::Null),
            "severity" => {
                (c.severity, c.dynamic) = match words.get(1).copied() {
                    Some("critical") => (Severity::Critical, false),
                    Some("error") => (Severity::Error, false),
                    Some("warning") => (Severity::Warning, false),
                    Some("notice") => (Severity::Notice, false),
                    Some("info") => (Severity::Info, false),
                    Some("debug") => (Severity::Debug, false),
                    Some("dynamic") => (Severity::Info, true),
                    v => return Err(opt.error(&format!("unknown severity '{}'", v.unwrap_or("")))),
                }
            }
            "print-time" => c.print_time = yes(words.get(1))?,
            "print-category" => c.print_category = yes(words.get(1))?,
            "print-severity" => c.print_severity = yes(words.get(1))?,
            // Whether BIND flushes after each line: lines are written whole here.
            "buffered" => {
                yes(words.get(1))?;
            }
            other => return Err(opt.error(&format!("channel '{name}': unknown option '{other}'"))),
        }
    }
    c.destination = destination.ok_or_else(|| {
        s.error(&format!(
            "channel '{name}': exactly one of file, syslog, stderr or null is required"
        ))
    })?;
    Ok(c)
}

/// `file "path" [versions N|unlimited] [size S[k|m|g]] [suffix increment]`.
fn file(s: &Stmt, words: &[&str]) -> Result<Destination, Error> {
    let path = words
        .get(1)
        .ok_or_else(|| s.error("file: missing file name"))?;
    let mut versions = None;
    let mut size = None;
    let mut rest = words[2..].iter();
    while let Some(w) = rest.next() {
        let v = rest
            .next()
            .ok_or_else(|| s.error(&format!("'{w}' expects a value")))?;
        match *w {
            "versions" => {
                versions = Some(match *v {
                    "unlimited" => u32::MAX,
                    n => n
                        .parse()
                        .map_err(|_| s.error(&format!("versions: invalid number '{n}'")))?,
                })
            }
            "size" => size = Some(size_of(s, v)?),
            "suffix" if *v == "increment" => {}
            "suffix" => {
                return Err(s.error(&format!("suffix {v} is not supported (only increment)")))
            }
            other => return Err(s.error(&format!("file: unknown option '{other}'"))),
        }
    }
    Ok(Destination::File {
        path: PathBuf::from(path),
        versions,
        size,
    })
}

pub(crate) fn size_of(s: &Stmt, v: &str) -> Result<u64, Error> {
    let lower = v.to_ascii_lowercase();
    let (digits, unit) = match lower.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => lower.split_at(i),
        None => (lower.as_str(), ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| s.error(&format!("size: invalid size '{v}'")))?;
    let mult = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return Err(s.error(&format!("size: invalid size '{v}'"))),
    };
    Ok(n * mult)
}

impl Logging {
    /// Makes channel files absolute under `directory`.
    pub(crate) fn anchor(&mut self, directory: &std::path::Path) {
        for c in &mut self.channels {
            if let Destination::File { path, .. } = &mut c.destination {
                *path = directory.join(&*path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn conf(text: &str) -> Result<crate::conf::NamedConf, Error> {
        crate::conf::parse(Path::new("/etc/bind/named.conf"), text)
    }

    #[test]
    fn channels_and_categories_as_rhel_and_admins_write_them() {
        let c = conf(
            "options { directory \"/var/named\"; };\n\
             logging {\n channel default_debug {\n file \"data/named.run\";\n severity dynamic;\n };\n\
             channel query_log {\n file \"/var/log/named/query.log\" versions 3 size 5m;\n severity info;\n\
             print-time yes;\n print-category yes;\n print-severity yes;\n };\n\
             channel sec { syslog local3; severity warning; };\n\
             category queries { query_log; };\n category security { sec; default_syslog; };\n\
             category lame-servers { null; };\n};\n",
        )
        .unwrap();
        let l = c.logging.unwrap();
        let ch = |n: &str| l.channels.iter().find(|c| c.name == n).unwrap().clone();
        assert_eq!(
            ch("default_debug").destination,
            Destination::File {
                path: PathBuf::from("/var/named/data/named.run"),
                versions: None,
                size: None
            }
        );
        assert!(ch("default_debug").dynamic);
        let q = ch("query_log");
        assert_eq!(
            q.destination,
            Destination::File {
                path: PathBuf::from("/var/log/named/query.log"),
                versions: Some(3),
                size: Some(5 << 20)
            }
        );
        assert!(q.print_time && q.print_category && q.print_severity);
        assert_eq!(ch("sec").destination, Destination::Syslog("local3".into()));
        assert_eq!(ch("sec").severity, Severity::Warning);
        assert_eq!(
            l.categories[0],
            ("queries".into(), vec!["query_log".into()])
        );
        assert_eq!(l.categories.len(), 3);
    }

    #[test]
    fn mistakes_name_file_and_line() {
        let cases = [
            ("logging {\n category bogus { null; };\n};", "/etc/bind/named.conf:2: undefined category: 'bogus'"),
            ("logging {\n category queries { nowhere; };\n};", "/etc/bind/named.conf:1: undefined channel: 'nowhere'"),
            ("logging {\n channel c { severity info; };\n};", "/etc/bind/named.conf:2: channel 'c': exactly one of file, syslog, stderr or null is required"),
            ("logging {\n channel c {\n syslog nowhere;\n };\n};", "/etc/bind/named.conf:3: unknown syslog facility 'nowhere'"),
            ("logging { channel c { file \"f\" size 10q; }; };", "/etc/bind/named.conf:1: size: invalid size '10q'"),
            ("logging { };\nlogging { };", "/etc/bind/named.conf:2: 'logging' redefined"),
        ];
        for (text, want) in cases {
            assert_eq!(conf(text).unwrap_err().to_string(), want, "{text}");
        }
    }
}
