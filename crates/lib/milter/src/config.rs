//! What main.cf says about milters: the list (`smtpd_milters`), each
//! entry `inet:host:port`, `unix:/path` (or `local:`), or Postfix 3's
//! `{ endpoint, name=value, ... }` with its own `connect_timeout`,
//! `command_timeout`, `content_timeout`, `default_action` and `protocol`;
//! and the macro lists sent at each stage.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a milter that cannot be talked to means for the mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultAction {
    Accept,
    Tempfail,
    Reject,
    Quarantine,
}

impl DefaultAction {
    fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "accept" => Self::Accept,
            "tempfail" => Self::Tempfail,
            "reject" => Self::Reject,
            "quarantine" => Self::Quarantine,
            _ => return None,
        })
    }
}

/// Where a milter listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Inet { host: String, port: u16 },
    Unix(PathBuf),
}

/// One configured milter.
#[derive(Debug, Clone)]
pub struct Milter {
    /// As written (`inet:127.0.0.1:8891`): the name in log lines.
    pub name: String,
    pub endpoint: Endpoint,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub content_timeout: Duration,
    pub default_action: DefaultAction,
    /// 2, 3, 4 or 6.
    pub version: u32,
    /// `no_header_reply` in the protocol setting.
    pub no_header_reply: bool,
}

/// The macro names sent at each stage, as written.
#[derive(Debug, Clone, Default)]
pub struct MacroLists {
    pub connect: Vec<String>,
    pub helo: Vec<String>,
    pub mail: Vec<String>,
    pub rcpt: Vec<String>,
    pub data: Vec<String>,
    pub end_of_header: Vec<String>,
    pub end_of_data: Vec<String>,
    pub unknown: Vec<String>,
}

/// Everything a session needs.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub milters: Vec<Milter>,
    pub macros: MacroLists,
}

/// The main.cf values the milters are built from.
pub struct Params<'a> {
    /// The list's entries (`cfg.list("smtpd_milters")`).
    pub entries: &'a [String],
    pub protocol: &'a str,
    pub default_action: &'a str,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub content_timeout: Duration,
    /// Relative `unix:` paths are in the queue directory.
    pub queue_dir: &'a Path,
    pub macros: MacroLists,
}

/// A setting that cannot be used: the text names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `2`, `3`, `4` or `6`, and `no_header_reply`, as Postfix's milter8
/// reads `milter_protocol`.
fn protocol(name: &str, text: &str) -> Result<(u32, bool), Error> {
    let mut version = None;
    let mut no_header_reply = false;
    for token in text.split([',', ' ', '\t']).filter(|t| !t.is_empty()) {
        match token {
            "2" | "3" | "4" | "6" => version = token.parse().ok(),
            "no_header_reply" => no_header_reply = true,
            other => {
                return Err(Error(format!(
                    "milter {name}: bad protocol information: {other}"
                )))
            }
        }
    }
    let version =
        version.ok_or_else(|| Error(format!("milter {name}: no protocol version information")))?;
    Ok((version, no_header_reply))
}

fn endpoint(spec: &str, queue_dir: &Path) -> Result<Endpoint, Error> {
    let bad = || Error(format!("milter {spec}: bad address specification"));
    match spec.split_once(':') {
        Some(("inet", rest)) => {
            let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = port.parse().map_err(|_| bad())?;
            if host.is_empty() {
                return Err(bad());
            }
            Ok(Endpoint::Inet {
                host: host.to_owned(),
                port,
            })
        }
        Some(("unix" | "local", path)) if !path.is_empty() => {
            Ok(Endpoint::Unix(if Path::new(path).is_absolute() {
                PathBuf::from(path)
            } else {
                queue_dir.join(path)
            }))
        }
        _ => Err(Error(format!("milter {spec}: unknown transport"))),
    }
}

/// A time value as main.cf writes it (`30s`, `5m`; seconds without a unit).
fn duration(name: &str, value: &str) -> Result<Duration, Error> {
    pfx_config::value::parse_time(value, 's')
        .map_err(|e| Error(format!("milter setting {name}={value}: {e}")))
}

/// A milter list of main.cf (`smtpd_milters`, `non_smtpd_milters`) with
/// the `milter_*` parameters it goes with, and what the macros say about
/// this server (`milter_macro_daemon_name`, `milter_macro_v`).
#[derive(Debug, Clone)]
pub struct Milters {
    pub config: Config,
    pub daemon_name: String,
    pub v: String,
}

impl Milters {
    /// The milters of main.cf's `list`; `None` when it is empty.
    pub fn from_main_cf(
        cfg: &pfx_config::Config,
        list: &str,
        queue_dir: &Path,
    ) -> Result<Option<Self>, pfx_config::BuildError> {
        let entries = cfg.list(list)?;
        if entries.is_empty() {
            return Ok(None);
        }
        let words = |n: &str| -> Result<Vec<String>, pfx_config::BuildError> {
            Ok(cfg.get(n)?.split_whitespace().map(str::to_owned).collect())
        };
        let params = Params {
            entries: &entries,
            protocol: &cfg.get("milter_protocol")?,
            default_action: &cfg.get("milter_default_action")?,
            connect_timeout: cfg.time("milter_connect_timeout")?,
            command_timeout: cfg.time("milter_command_timeout")?,
            content_timeout: cfg.time("milter_content_timeout")?,
            queue_dir,
            macros: MacroLists {
                connect: words("milter_connect_macros")?,
                helo: words("milter_helo_macros")?,
                mail: words("milter_mail_macros")?,
                rcpt: words("milter_rcpt_macros")?,
                data: words("milter_data_macros")?,
                end_of_header: words("milter_end_of_header_macros")?,
                end_of_data: words("milter_end_of_data_macros")?,
                unknown: words("milter_unknown_command_macros")?,
            },
        };
        Ok(Some(Self {
            config: Config::new(&params).map_err(|e| e.to_string())?,
            daemon_name: cfg.get("milter_macro_daemon_name")?,
            v: cfg.get("milter_macro_v")?,
        }))
    }
}

impl Config {
    pub fn new(p: &Params<'_>) -> Result<Self, Error> {
        let default_action = DefaultAction::parse(p.default_action).ok_or_else(|| {
            Error(format!(
                "bad milter_default_action value: {}",
                p.default_action
            ))
        })?;
        let mut milters = Vec::new();
        for entry in p.entries {
            let (spec, settings) = match entry.strip_prefix('{') {
                Some(inner) => {
                    let inner = inner
                        .strip_suffix('}')
                        .ok_or_else(|| Error(format!("milter {entry}: missing '}}'")))?;
                    let mut parts = inner.split(',').map(str::trim).filter(|s| !s.is_empty());
                    let spec = parts
                        .next()
                        .ok_or_else(|| Error(format!("milter {entry}: no address")))?;
                    (
                        spec.to_owned(),
                        parts.map(str::to_owned).collect::<Vec<_>>(),
                    )
                }
                None => (entry.clone(), Vec::new()),
            };
            let (mut version, mut no_header_reply) = protocol(&spec, p.protocol)?;
            let mut m = Milter {
                endpoint: endpoint(&spec, p.queue_dir)?,
                name: spec.clone(),
                connect_timeout: p.connect_timeout,
                command_timeout: p.command_timeout,
                content_timeout: p.content_timeout,
                default_action,
                version,
                no_header_reply,
            };
            for s in settings {
                let (k, v) = s
                    .split_once('=')
                    .map(|(k, v)| (k.trim(), v.trim()))
                    .ok_or_else(|| Error(format!("milter {spec}: bad setting \"{s}\"")))?;
                match k {
                    "connect_timeout" => m.connect_timeout = duration(k, v)?,
                    "command_timeout" => m.command_timeout = duration(k, v)?,
                    "content_timeout" => m.content_timeout = duration(k, v)?,
                    "default_action" => {
                        m.default_action = DefaultAction::parse(v).ok_or_else(|| {
                            Error(format!("milter {spec}: bad default_action value: {v}"))
                        })?;
                    }
                    "protocol" => {
                        (version, no_header_reply) = protocol(&spec, v)?;
                        m.version = version;
                        m.no_header_reply = no_header_reply;
                    }
                    other => {
                        return Err(Error(format!("milter {spec}: unknown setting \"{other}\"")))
                    }
                }
            }
            milters.push(m);
        }
        Ok(Self {
            milters,
            macros: p.macros.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(entries: &[String]) -> Params<'_> {
        Params {
            entries,
            protocol: "6",
            default_action: "tempfail",
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(30),
            content_timeout: Duration::from_secs(300),
            queue_dir: Path::new("/var/spool/postfix"),
            macros: MacroLists::default(),
        }
    }

    #[test]
    fn entries_and_their_own_settings() {
        let entries = vec![
            "inet:127.0.0.1:8891".to_owned(),
            "unix:private/rspamd".to_owned(),
            "{ inet:[::1]:11332, connect_timeout=10s, default_action=accept, protocol=4 }"
                .to_owned(),
        ];
        let c = Config::new(&params(&entries)).unwrap();
        assert_eq!(
            c.milters[0].endpoint,
            Endpoint::Inet {
                host: "127.0.0.1".into(),
                port: 8891
            }
        );
        assert_eq!(
            c.milters[1].endpoint,
            Endpoint::Unix("/var/spool/postfix/private/rspamd".into())
        );
        let m = &c.milters[2];
        assert_eq!(m.name, "inet:[::1]:11332");
        assert_eq!(m.connect_timeout, Duration::from_secs(10));
        assert_eq!(m.default_action, DefaultAction::Accept);
        assert_eq!(m.version, 4);
        assert_eq!(c.milters[0].default_action, DefaultAction::Tempfail);
    }

    #[test]
    fn settings_postfix_refuses_are_refused() {
        for bad in [
            "inet:127.0.0.1",
            "tcp:127.0.0.1:1",
            "{ inet:127.0.0.1:1, default_action=maybe }",
            "{ inet:127.0.0.1:1, protocol=5 }",
            "{ inet:127.0.0.1:1, colour=blue }",
        ] {
            let e = vec![bad.to_owned()];
            assert!(Config::new(&params(&e)).is_err(), "{bad}");
        }
        let e = vec!["inet:127.0.0.1:1".to_owned()];
        let mut p = params(&e);
        p.protocol = "no_header_reply";
        assert!(Config::new(&p).is_err());
        p.protocol = "6 no_header_reply";
        assert!(Config::new(&p).unwrap().milters[0].no_header_reply);
    }
}
