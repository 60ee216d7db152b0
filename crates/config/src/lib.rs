//! Configuration for postfix-rs: `main.cf` and `master.cf`, read as Postfix reads them.
//!
//! [`Config`] holds one configuration directory's `main.cf` plus any per-service
//! `-o` overrides, answers raw and `$`-expanded values and typed values, and
//! knows which settings are not in the parameter table ([`params::PARAMS`]).
//! Nothing here does I/O except [`Config::load`] and [`read_master_cf`].

pub mod expand;
pub mod maincf;
pub mod mastercf;
pub mod params;
pub mod value;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use mastercf::{Service, ServiceType, Wakeup};
pub use params::Kind;

/// The configuration directory used when neither `-c` nor `MAIL_CONFIG` says otherwise.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/postfix";

/// Everything that can go wrong reading or using the configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("open {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A malformed line; Display is `FILE, line N: message`, as Postfix prints it.
    #[error("{path}, line {line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// A value that does not fit its parameter's type, or a broken `$` reference.
    #[error("{context}{message}: {name} = {value}")]
    Value {
        context: String,
        name: String,
        value: String,
        message: String,
    },
}

impl Error {
    pub(crate) fn syntax(path: &Path, line: usize, message: &str) -> Self {
        Self::Syntax {
            path: path.to_owned(),
            line,
            message: message.to_owned(),
        }
    }
}

thread_local! {
    /// Set while mydomain's default is being derived from myhostname.
    static DERIVING_MYDOMAIN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Where a setting came from, for messages that name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    MainCf {
        line: usize,
    },
    /// A `-o` override (master.cf or command line).
    Override,
}

/// The configuration directory a command should use: `-c DIR`, else
/// `$MAIL_CONFIG`, else `/etc/postfix`.
pub fn config_dir(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_owned)
        .or_else(|| std::env::var_os("MAIL_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_DIR))
}

/// Groups a table file's lines into logical lines, as master.cf and
/// aliases(5) are read: empty lines and lines whose first non-blank
/// character is `#` are skipped, and a line that starts with white space
/// continues the previous one (joined with one space). Returns each logical
/// line with the number of its first line, or the number of a continuation
/// line that has nothing to continue.
pub fn logical_lines(text: &str) -> Result<Vec<(usize, String)>, usize> {
    let mut out: Vec<(usize, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            let (_, l) = out.last_mut().ok_or(i + 1)?;
            l.push(' ');
            l.push_str(t);
        } else {
            out.push((i + 1, line.to_owned()));
        }
    }
    Ok(out)
}

/// Reads and parses `DIR/master.cf`.
pub fn read_master_cf(dir: &Path) -> Result<Vec<Service>, Error> {
    let path = dir.join("master.cf");
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    mastercf::parse(&path, &text)
}

/// One configuration directory's effective parameters.
#[derive(Debug, Clone)]
pub struct Config {
    dir: PathBuf,
    main_cf: PathBuf,
    entries: Vec<maincf::Entry>,
    set: HashMap<String, (String, Origin)>,
    hostname: String,
}

impl Config {
    /// Reads `DIR/main.cf`. A missing main.cf is an error, as in Postfix.
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let main_cf = dir.join("main.cf");
        let text = std::fs::read_to_string(&main_cf).map_err(|source| Error::Io {
            path: main_cf.clone(),
            source,
        })?;
        Self::from_text(dir, &text)
    }

    /// Builds a configuration from main.cf text, as if read from `DIR/main.cf`.
    pub fn from_text(dir: &Path, text: &str) -> Result<Self, Error> {
        let main_cf = dir.join("main.cf");
        let entries = maincf::parse(&main_cf, text)?;
        let set = entries
            .iter()
            .map(|e| {
                (
                    e.name.clone(),
                    (e.value.clone(), Origin::MainCf { line: e.line }),
                )
            })
            .collect();
        Ok(Self {
            dir: dir.to_owned(),
            main_cf,
            entries,
            set,
            hostname: system_hostname(),
        })
    }

    /// The configuration directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of main.cf, for messages.
    pub fn main_cf(&self) -> &Path {
        &self.main_cf
    }

    /// The definitions in main.cf, in file order (duplicates included).
    pub fn entries(&self) -> &[maincf::Entry] {
        &self.entries
    }

    /// Sets a value that takes precedence over main.cf (`-o name=value`).
    pub fn set_override(&mut self, name: &str, value: &str) {
        self.set
            .insert(name.to_owned(), (value.to_owned(), Origin::Override));
    }

    /// Whether `name` is set explicitly (main.cf or override), not by default.
    pub fn is_set(&self, name: &str) -> bool {
        self.set.contains_key(name)
    }

    /// The default value of a supported parameter, before `$` expansion;
    /// machine-dependent defaults are computed here.
    pub fn default_raw(&self, name: &str) -> Option<String> {
        let p = params::find(name)?;
        Some(match name {
            "myhostname" => {
                if self.hostname.contains('.') {
                    self.hostname.clone()
                } else {
                    format!("{}.localdomain", self.hostname)
                }
            }
            "mydomain" => {
                // Derived from myhostname. When myhostname itself refers to
                // $mydomain (found by fuzzing: endless recursion), the inner
                // reference is empty, as with Postfix.
                let host = DERIVING_MYDOMAIN.with(|busy| {
                    if busy.replace(true) {
                        return None;
                    }
                    let host = self.expanded("myhostname").unwrap_or_default();
                    busy.set(false);
                    Some(host)
                })?;
                match host.split_once('.') {
                    Some((_, d)) => d.to_owned(),
                    None => "localdomain".to_owned(),
                }
            }
            "config_directory" => self.dir.display().to_string(),
            _ => p.default.to_owned(),
        })
    }

    /// The effective value before `$` expansion: set value, else default.
    pub fn raw(&self, name: &str) -> Option<String> {
        match self.set.get(name) {
            Some((v, _)) => Some(v.clone()),
            None => self.default_raw(name),
        }
    }

    fn expanded(&self, name: &str) -> Result<String, String> {
        let raw = self.raw(name).unwrap_or_default();
        expand::expand(&raw, &|n| self.raw(n))
    }

    /// Expands `$` references in arbitrary text against this configuration.
    pub fn expand_text(&self, text: &str) -> Result<String, Error> {
        expand::expand(text, &|n| self.raw(n)).map_err(|message| Error::Value {
            context: String::new(),
            name: "text".into(),
            value: text.into(),
            message,
        })
    }

    fn value_error(&self, name: &str, message: String) -> Error {
        let context = match self.set.get(name) {
            Some((_, Origin::MainCf { line })) => {
                format!("{}, line {line}: ", self.main_cf.display())
            }
            _ => String::new(),
        };
        Error::Value {
            context,
            name: name.to_owned(),
            value: self.raw(name).unwrap_or_default(),
            message,
        }
    }

    /// The effective value with every `$` reference expanded.
    pub fn get(&self, name: &str) -> Result<String, Error> {
        self.expanded(name).map_err(|m| self.value_error(name, m))
    }

    fn typed<T>(&self, name: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<T, Error> {
        let v = self.get(name)?;
        parse(&v).map_err(|m| {
            let m = m.split(':').next().unwrap_or_default().to_owned();
            self.value_error(name, m)
        })
    }

    /// A whole-number parameter.
    pub fn int(&self, name: &str) -> Result<i64, Error> {
        self.typed(name, value::parse_int)
    }

    /// A `yes`/`no` parameter.
    pub fn bool(&self, name: &str) -> Result<bool, Error> {
        self.typed(name, value::parse_bool)
    }

    /// A duration parameter, in its table's default unit when the value has none.
    pub fn time(&self, name: &str) -> Result<Duration, Error> {
        let unit = match params::find(name).map(|p| p.kind) {
            Some(Kind::Time(u)) => u,
            _ => 's',
        };
        self.typed(name, |v| value::parse_time(v, unit))
    }

    /// A list parameter, expanded, split on commas and white space.
    pub fn list(&self, name: &str) -> Result<Vec<String>, Error> {
        Ok(value::split_list(&self.get(name)?))
    }

    /// Checks that every supported parameter that is set has a value of its type.
    pub fn validate(&self) -> Result<(), Error> {
        for name in self.set.keys() {
            let Some(p) = params::find(name) else {
                continue;
            };
            match p.kind {
                Kind::Int => self.int(name).map(drop)?,
                Kind::Bool => self.bool(name).map(drop)?,
                Kind::Time(_) => self.time(name).map(drop)?,
                Kind::Str => self.get(name).map(drop)?,
            }
        }
        Ok(())
    }

    /// main.cf definitions that postfix-rs does not know and that no other
    /// value refers to with `$name` (Postfix's "unused parameter" warning).
    pub fn unused(&self, extra_values: &[String]) -> Vec<&maincf::Entry> {
        let mentions = |name: &str| {
            let refs = [
                format!("${name}"),
                format!("${{{name}"),
                format!("$({name}"),
            ];
            let in_text = |t: &str| {
                refs.iter().any(|r| {
                    t.match_indices(r.as_str()).any(|(i, _)| {
                        let next = t[i + r.len()..].chars().next();
                        r.len() > name.len() + 1
                            || !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                    })
                })
            };
            self.entries.iter().any(|e| in_text(&e.value))
                || extra_values.iter().any(|v| in_text(v))
                || params::PARAMS.iter().any(|p| in_text(p.default))
        };
        self.entries
            .iter()
            .filter(|e| params::find(&e.name).is_none() && !mentions(&e.name))
            .collect()
    }
}

fn system_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        Config::from_text(Path::new("/etc/postfix"), text).unwrap()
    }

    #[test]
    fn seed_configuration_expands_as_postfix_does() {
        let c = cfg("myhostname = mail.ywnds.com\nmydomain = ywnds.com\nmyorigin = $mydomain\nmydestination = $myhostname, localhost.$mydomain, localhost, $mydomain\n");
        assert_eq!(c.get("myorigin").unwrap(), "ywnds.com");
        assert_eq!(
            c.list("mydestination").unwrap(),
            [
                "mail.ywnds.com",
                "localhost.ywnds.com",
                "localhost",
                "ywnds.com"
            ]
        );
        assert_eq!(c.raw("myorigin").unwrap(), "$mydomain");
    }

    #[test]
    fn defaults_apply_and_mydomain_follows_myhostname() {
        let c = cfg("myhostname = mail.ywnds.com\n");
        assert_eq!(c.get("mydomain").unwrap(), "ywnds.com");
        assert_eq!(c.get("myorigin").unwrap(), "mail.ywnds.com");
        assert_eq!(c.int("message_size_limit").unwrap(), 10_240_000);
        assert!(!c.is_set("message_size_limit"));
        assert_eq!(c.get("config_directory").unwrap(), "/etc/postfix");
    }

    #[test]
    fn myhostname_built_from_an_unset_mydomain_does_not_recurse() {
        // Found by fuzzing: mydomain's default comes from myhostname.
        // Postfix 3.7's `postconf -x` prints the same.
        let c = cfg("myhostname = mail.$mydomain\n");
        assert_eq!(c.get("myhostname").unwrap(), "mail.");
        assert_eq!(c.get("mydomain").unwrap(), "");
    }

    #[test]
    fn typed_values_and_errors_with_file_and_line() {
        let c = cfg(
            "maximal_queue_lifetime = 1d\nbounce_queue_lifetime = 2\nmessage_size_limit = lots\n",
        );
        assert_eq!(
            c.time("maximal_queue_lifetime").unwrap(),
            Duration::from_secs(86400)
        );
        // No unit: the parameter's own default unit (days).
        assert_eq!(
            c.time("bounce_queue_lifetime").unwrap(),
            Duration::from_secs(2 * 86400)
        );
        let err = c.int("message_size_limit").unwrap_err().to_string();
        assert_eq!(
            err,
            "/etc/postfix/main.cf, line 3: bad numerical configuration: message_size_limit = lots"
        );
        assert!(c.validate().is_err());
    }

    #[test]
    fn last_definition_wins_and_overrides_win_over_main_cf() {
        let mut c = cfg("relayhost = a\nrelayhost = b\n");
        assert_eq!(c.get("relayhost").unwrap(), "b");
        c.set_override("relayhost", "c");
        assert_eq!(c.get("relayhost").unwrap(), "c");
    }

    #[test]
    fn unused_parameters_are_reported_unless_referenced() {
        let c = cfg("foo = bar\nmy_net = 10.0.0.0/8\nmynetworks = $my_net\nmyorigin = x\n");
        let unused: Vec<_> = c
            .unused(&[])
            .iter()
            .map(|e| (e.name.as_str(), e.line))
            .collect();
        assert_eq!(unused, [("foo", 1)]);
        let unused = c.unused(&["$foo".to_owned()]);
        assert!(unused.is_empty());
    }
}
