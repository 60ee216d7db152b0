//! Configuration for postfix-rs: `main.cf` and `master.cf`, read as Postfix reads them.
//!
//! [`Config`] holds one configuration directory's `main.cf` plus any per-service
//! `-o` overrides, answers raw and `$`-expanded values and typed values, and
//! knows which settings are not in the parameter table ([`params::PARAMS`]).
//! Nothing here does I/O except [`Config::load`] and [`read_master_cf`].

pub mod expand;
pub mod maincf;
pub mod mastercf;
pub mod masteredit;
pub mod params;
pub mod restriction;
pub mod value;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use restriction::Restriction;

pub use mastercf::{Service, ServiceType, Wakeup};
pub use params::{Class, Kind, Param};

/// Why a daemon could not build its settings from a configuration: any
/// library's error, shown to the administrator as it says itself.
pub type BuildError = Box<dyn std::error::Error + Send + Sync>;

/// The lists whose items may be `/file/name` (Postfix's match lists of
/// domains and networks).
pub const FILE_LISTS: &[&str] = &[
    "mydestination",
    "relay_domains",
    "mynetworks",
    "fast_flush_domains",
    "smtpd_forbid_bare_newline_exclusions",
    "smtpd_client_event_limit_exceptions",
    "smtpd_authorized_xforward_hosts",
    "virtual_alias_domains",
    "virtual_mailbox_domains",
];

/// The [`FILE_LISTS`] whose items may also be `!negated` or `type:table`
/// (Postfix's string lists, matched by `pfx_maps::matchlist`).
pub const TABLE_LISTS: &[&str] = &["virtual_alias_domains", "virtual_mailbox_domains"];

/// The compatibility level whose defaults postfix-rs implements for the
/// parameters it does not implement otherwise (Postfix 3.7's newest).
pub const IMPLEMENTED_LEVEL: &str = "3.6";

/// The configuration directory used when neither `-c` nor `MAIL_CONFIG` says otherwise.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/postfix";

/// Everything that can go wrong reading or using the configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Display is `open FILE: No such file or directory`, as Postfix's.
    #[error("open {}: {}", .path.display(), pfx_sys::strerror(.source))]
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
    /// A setting Postfix refuses, in Postfix's words.
    #[error("{0}")]
    Invalid(String),
    /// Settings postfix-rs cannot honour ([`Config::fail_closed`]); Display
    /// names the first, `postfix check` lists them all.
    #[error("{}{}", .0[0], if .0.len() > 1 { format!(" (and {} more: see postfix check)", .0.len() - 1) } else { String::new() })]
    Refused(Vec<Refusal>),
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
    /// master.cf services that run a delivery agent, as (service, command):
    /// each has per-transport parameters ([`params::PER_TRANSPORT`]).
    transports: Vec<(String, String)>,
    /// Files values name, as [`Config::preload_files`] read them.
    files: HashMap<PathBuf, String>,
}

impl Config {
    /// Reads `DIR/main.cf`, and `DIR/master.cf` for the names of its
    /// delivery services (their per-transport parameters). A missing main.cf
    /// is an error, as in Postfix; master.cf's own errors are reported by
    /// whoever reads it for its services ([`read_master_cf`]).
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let main_cf = dir.join("main.cf");
        let text = std::fs::read_to_string(&main_cf).map_err(|source| Error::Io {
            path: main_cf.clone(),
            source,
        })?;
        let mut cfg = Self::from_text(dir, &text)?;
        if let Ok(services) = read_master_cf(dir) {
            cfg.set_services(&services);
        }
        cfg.preload_files();
        Ok(cfg)
    }

    /// Learns the delivery services of master.cf, for their per-transport
    /// parameters (`relay_destination_concurrency_limit`, ...).
    pub fn set_services(&mut self, services: &[Service]) {
        self.transports = services
            .iter()
            .filter(|s| {
                params::DELIVERY_AGENTS.contains(&s.command.as_str()) || s.command == "spawn"
            })
            .map(|s| (s.name.clone(), s.command.clone()))
            .collect();
    }

    /// The table entry of a parameter: Postfix's (or postfix-rs's own), or
    /// a per-transport one of a master.cf delivery service.
    pub fn param(&self, name: &str) -> Option<&'static Param> {
        params::find(name).or_else(|| {
            self.transports.iter().find_map(|(svc, command)| {
                let suffix = name.strip_prefix(svc.as_str())?.strip_prefix('_')?;
                params::per_transport(command, suffix)
            })
        })
    }

    /// Every parameter this configuration knows, sorted: the table, and the
    /// per-transport ones of its master.cf delivery services.
    pub fn param_names(&self) -> Vec<String> {
        let mut names: Vec<String> = params::PARAMS.iter().map(|p| p.name.to_owned()).collect();
        for (svc, command) in &self.transports {
            for p in params::PER_TRANSPORT {
                let name = format!("{svc}_{}", p.name);
                if params::find(&name).is_none() && params::per_transport(command, p.name).is_some()
                {
                    names.push(name);
                }
            }
        }
        names.sort();
        names.dedup();
        names
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
            transports: Vec::new(),
            files: HashMap::new(),
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
        let p = self.param(name)?;
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
            "mynetworks" => {
                let style = self.expanded("mynetworks_style").unwrap_or_default();
                let interfaces = self.expanded("inet_interfaces").unwrap_or_default();
                let protocols = self.expanded("inet_protocols").unwrap_or_default();
                networks::mynetworks(&style, &interfaces, &protocols)
            }
            "config_directory" => self.dir.display().to_string(),
            "process_id" => std::process::id().to_string(),
            "process_name" => std::env::args_os()
                .next()
                .and_then(|a| {
                    Path::new(&a)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                })
                .unwrap_or_default(),
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

    /// An error naming the parameter, its value and where it was set.
    pub fn value_error(&self, name: &str, message: String) -> Error {
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

    /// The effective value with every `$` reference expanded. A `myorigin`
    /// that names a file (Debian's `myorigin = /etc/mailname`) is the
    /// file's first line, as Debian's Postfix reads it.
    pub fn get(&self, name: &str) -> Result<String, Error> {
        let v = self.expanded(name).map_err(|m| self.value_error(name, m))?;
        if name == "myorigin" && v.starts_with('/') {
            let text = self.read_file(Path::new(&v))?;
            return Ok(text.lines().next().unwrap_or_default().trim().to_owned());
        }
        Ok(v)
    }

    /// A file a value names, from what [`Config::preload_files`] read, else
    /// from disk.
    fn read_file(&self, path: &Path) -> Result<String, Error> {
        if let Some(text) = self.files.get(path) {
            return Ok(text.clone());
        }
        std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Reads now the files that values name (`myorigin = /etc/mailname`,
    /// `/file/name` items in [`FILE_LISTS`]), so that a daemon confined to
    /// the queue directory (master.cf's chroot column) still has them. A
    /// file that cannot be read is left to fail when it is used.
    pub fn preload_files(&mut self) {
        let mut paths: Vec<String> = Vec::new();
        if let Ok(v) = self.expanded("myorigin") {
            paths.push(v);
        }
        for name in FILE_LISTS {
            if let Ok(v) = self.expanded(name) {
                paths.extend(value::split_list(&v));
            }
        }
        for p in paths.into_iter().filter(|p| p.starts_with('/')) {
            if let Ok(text) = std::fs::read_to_string(&p) {
                self.files.insert(PathBuf::from(p), text);
            }
        }
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

    /// A count, size or limit: a whole number that must not be negative
    /// and must fit `T`.
    pub fn count<T: TryFrom<i64>>(&self, name: &str) -> Result<T, Error> {
        let n = self.int(name)?;
        T::try_from(n).map_err(|_| {
            let why = if n < 0 {
                "must not be negative"
            } else {
                "too large"
            };
            self.value_error(name, why.to_owned())
        })
    }

    /// A `yes`/`no` parameter.
    pub fn bool(&self, name: &str) -> Result<bool, Error> {
        self.typed(name, value::parse_bool)
    }

    /// A duration parameter, in its table's default unit when the value has none.
    pub fn time(&self, name: &str) -> Result<Duration, Error> {
        let unit = match self.param(name).map(|p| p.kind) {
            Some(Kind::Time(u)) => u,
            _ => 's',
        };
        self.typed(name, |v| value::parse_time(v, unit))
    }

    /// A list parameter, expanded, split on commas and white space. In the
    /// lists Postfix matches against ([`FILE_LISTS`]), an item `/file/name`
    /// stands for the items in that file (`#` comment lines skipped).
    pub fn list(&self, name: &str) -> Result<Vec<String>, Error> {
        let items = value::split_list(&self.get(name)?);
        if !FILE_LISTS.contains(&name) {
            return Ok(items);
        }
        let mut out = Vec::new();
        for item in items {
            if !item.starts_with('/') {
                out.push(item);
                continue;
            }
            let text = self.read_file(Path::new(&item))?;
            for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
                out.extend(value::split_list(line));
            }
        }
        Ok(out)
    }

    /// Checks that every implemented parameter that is set has a value of
    /// its type, and that `maillog_file` starts with one of
    /// `maillog_file_prefixes`, as Postfix requires.
    pub fn validate(&self) -> Result<(), Error> {
        let log = self.get("maillog_file")?;
        if !log.is_empty()
            && !self
                .list("maillog_file_prefixes")?
                .iter()
                .any(|p| log.starts_with(p.as_str()))
        {
            return Err(Error::Invalid(format!(
                "maillog_file value '{log}' does not match any prefix in maillog_file_prefixes"
            )));
        }
        for name in self.set.keys() {
            let Some(p) = self.param(name).filter(|p| p.class == Class::Implemented) else {
                continue;
            };
            match p.kind {
                // Every whole-number parameter is a count, size or limit.
                Kind::Int => self.count::<u64>(name).map(drop)?,
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
            .filter(|e| self.param(&e.name).is_none() && !mentions(&e.name))
            .collect()
    }

    /// The fail-closed check: every setting postfix-rs cannot honour (a
    /// [`Class::Refused`] parameter at a value other than its default or one
    /// it accepts, in main.cf, by default, or in a master.cf `-o`
    /// override), and every restriction list naming a keyword it does not
    /// implement.
    pub fn refusals(&self, services: &[Service], master_cf: &Path) -> Vec<Refusal> {
        let mut out = Vec::new();
        for p in params::PARAMS {
            if let Some(r) = self.refusal(p.name, p, None) {
                out.push(r);
            }
        }
        for name in restriction::LISTS {
            if let Some(r) = self.restriction_refusal(name, None) {
                out.push(r);
            }
        }
        for class in self.restriction_classes() {
            out.extend(self.restriction_refusal(&class, None));
        }
        out.extend(self.relay_control_refusal());
        out.extend(self.sasl_type_refusal(None));
        for name in FILE_LISTS.iter().filter(|n| !TABLE_LISTS.contains(n)) {
            if let Some(r) = self.table_in_list_refusal(name) {
                out.push(r);
            }
        }
        for svc in services {
            out.extend(service_refusal(svc, master_cf));
        }
        for svc in services {
            let overrides = svc.overrides();
            if overrides.is_empty() {
                continue;
            }
            let mut cfg = self.clone();
            for (n, v) in &overrides {
                cfg.set_override(n, v);
            }
            let place = format!("{}, line {}", master_cf.display(), svc.line);
            for (name, _) in &overrides {
                let found = cfg.param(name).map(|p| cfg.refusal(name, p, Some(&place)));
                if let Some(Some(r)) = found {
                    out.push(r);
                }
                if restriction::LISTS.contains(&name.as_str()) {
                    out.extend(cfg.restriction_refusal(name, Some(&place)));
                }
            }
            if overrides
                .iter()
                .any(|(n, _)| n == "smtpd_sasl_auth_enable" || n == "smtpd_sasl_type")
                && self.sasl_type_refusal(None).is_none()
            {
                out.extend(cfg.sasl_type_refusal(Some(&place)));
            }
        }
        out
    }

    /// [`Config::refusals`] for a program about to use this configuration:
    /// [`Error::Refused`] when there is any.
    pub fn fail_closed(&self, services: &[Service]) -> Result<(), Error> {
        let refused = self.refusals(services, &self.dir.join("master.cf"));
        match refused.is_empty() {
            true => Ok(()),
            false => Err(Error::Refused(refused)),
        }
    }

    /// Where a setting was made, for a refusal: `FILE, line N`, or just
    /// main.cf's name for a default.
    fn place(&self, name: &str) -> String {
        match self.set.get(name) {
            Some((_, Origin::MainCf { line })) => {
                format!("{}, line {line}", self.main_cf.display())
            }
            Some((_, Origin::Override)) => {
                format!("{}: -o override", self.dir.join("master.cf").display())
            }
            None => self.main_cf.display().to_string(),
        }
    }

    fn refusal(&self, name: &str, p: &Param, place: Option<&str>) -> Option<Refusal> {
        let Class::Refused { also } = p.class else {
            return None;
        };
        let value = self
            .get(name)
            .unwrap_or_else(|_| self.raw(name).unwrap_or_default());
        let norm = |v: &str| normalize(p.kind, v);
        // The default postfix-rs implements is Postfix's at the newest
        // compatibility level, whatever level main.cf asks for.
        // A name Postfix 3.7 no longer lists (`virtual_maps`, the old name
        // of virtual_alias_maps) counts as unset here: set in main.cf, it
        // changes the value away from the default, and is refused with it.
        let default = expand::expand(&self.default_raw(name)?, &|n| match n {
            "compatibility_level" => Some(IMPLEMENTED_LEVEL.to_owned()),
            _ if params::find(n).is_none() => None,
            _ => self.raw(n),
        })
        .ok()?;
        let mine = norm(&value);
        if mine == norm(&default) || also.iter().any(|a| norm(a) == mine) {
            return None;
        }
        let by_default = place.is_none() && !self.is_set(name);
        let shown = if by_default {
            format!(
                "{value} (its default at compatibility_level {})",
                self.get("compatibility_level").unwrap_or_default()
            )
        } else {
            value.clone()
        };
        Some(Refusal {
            place: place.map_or_else(|| self.place(name), str::to_owned),
            name: name.to_owned(),
            value: shown,
            reason: "not implemented by postfix-rs".to_owned(),
        })
    }

    /// `mydestination = hash:/etc/postfix/domains`: lookup tables in a match
    /// list are not implemented (the domains would silently not match).
    fn table_in_list_refusal(&self, name: &str) -> Option<Refusal> {
        // A default refers to lists that are reported themselves.
        if !self.is_set(name) {
            return None;
        }
        let items = self.list(name).ok()?;
        if let Some(negated) = items.iter().find(|i| i.starts_with('!')) {
            // Postfix's first match wins, so `!x` excludes x; taken as a
            // plain item it would match nothing and let x match later on.
            return Some(Refusal {
                place: self.place(name),
                name: name.to_owned(),
                value: items.join(", "),
                reason: format!(
                    "negated item {negated} in a match list: not implemented by postfix-rs"
                ),
            });
        }
        let table = items.iter().find(|i| {
            i.split_once(':').is_some_and(|(t, _)| {
                t.starts_with(|c: char| c.is_ascii_alphabetic())
                    && t.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            })
        })?;
        Some(Refusal {
            place: self.place(name),
            name: name.to_owned(),
            value: items.join(", "),
            reason: format!("lookup table {table} in a match list: not implemented by postfix-rs"),
        })
    }

    /// Postfix's smtpd refuses to run with a relay that nothing closes.
    fn relay_control_refusal(&self) -> Option<Refusal> {
        let lists = ["smtpd_relay_restrictions", "smtpd_recipient_restrictions"];
        let mut all = Vec::new();
        for name in lists {
            let items = restriction::tokens(&self.get(name).ok()?).ok()?;
            all.extend(restriction::parse(name, &items, &self.restriction_classes()).ok()?);
        }
        if restriction::closes_relay(&all) {
            return None;
        }
        Some(Refusal {
            place: self.main_cf.display().to_string(),
            name: lists.join(" or "),
            value: all.iter().map(Restriction::keyword).collect::<Vec<_>>().join(", "),
            reason: "specify at least one working instance of: reject_unauth_destination, defer_unauth_destination, reject, defer".to_owned(),
        })
    }

    /// SMTP AUTH is offered through Dovecot only: `smtpd_sasl_type = cyrus`
    /// (Postfix's default) with `smtpd_sasl_auth_enable = yes` is refused.
    fn sasl_type_refusal(&self, place: Option<&str>) -> Option<Refusal> {
        if !self.bool("smtpd_sasl_auth_enable").ok()? {
            return None;
        }
        let value = self.get("smtpd_sasl_type").ok()?;
        if value == "dovecot" {
            return None;
        }
        Some(Refusal {
            place: place.map_or_else(|| self.place("smtpd_sasl_type"), str::to_owned),
            name: "smtpd_sasl_type".to_owned(),
            value,
            reason: "not implemented by postfix-rs with smtpd_sasl_auth_enable = yes (dovecot is)"
                .to_owned(),
        })
    }

    /// The names `smtpd_restriction_classes` declares.
    fn restriction_classes(&self) -> Vec<String> {
        self.get("smtpd_restriction_classes")
            .ok()
            .and_then(|v| restriction::tokens(&v).ok())
            .unwrap_or_default()
    }

    fn restriction_refusal(&self, name: &str, place: Option<&str>) -> Option<Refusal> {
        let value = self.get(name).ok()?;
        let items = match restriction::tokens(&value) {
            Ok(i) => i,
            Err(reason) => {
                return Some(Refusal {
                    place: place.map_or_else(|| self.place(name), str::to_owned),
                    name: name.to_owned(),
                    value,
                    reason,
                })
            }
        };
        let reason = restriction::parse(name, &items, &self.restriction_classes()).err()?;
        Some(Refusal {
            place: place.map_or_else(|| self.place(name), str::to_owned),
            name: name.to_owned(),
            value: items.join(", "),
            reason,
        })
    }
}

/// A setting postfix-rs cannot honour. Display: `FILE, line N: name =
/// value: reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub place: String,
    pub name: String,
    pub value: String,
    pub reason: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} = {}: {}",
            self.place, self.name, self.value, self.reason
        )
    }
}

/// A master.cf service postfix-rs cannot run: a Postfix program it does
/// not implement.
fn service_refusal(svc: &Service, master_cf: &Path) -> Option<Refusal> {
    (mastercf::program(&svc.command) == mastercf::Program::NotImplemented).then(|| Refusal {
        place: format!("{}, line {}", master_cf.display(), svc.line),
        name: format!("service {}", svc.id()),
        value: svc.command.clone(),
        reason: "program not implemented by postfix-rs".to_owned(),
    })
}

/// A value in a form where equal settings compare equal: `300s` = `5m`,
/// `a, b` = `a b`, `YES` = `yes`.
fn normalize(kind: Kind, v: &str) -> String {
    let parsed = match kind {
        Kind::Int => value::parse_int(v).map(|n| n.to_string()).ok(),
        Kind::Bool => value::parse_bool(v).map(|b| b.to_string()).ok(),
        Kind::Time(u) => value::parse_time(v, u)
            .map(|d| d.as_secs().to_string())
            .ok(),
        Kind::Str => None,
    };
    parsed.unwrap_or_else(|| value::split_list(v).join(" "))
}

mod networks;

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
    fn counts_are_never_negative() {
        let c = cfg("smtpd_hard_error_limit = -1\nsmtpd_soft_error_limit = 5\n");
        assert_eq!(c.count::<u32>("smtpd_soft_error_limit").unwrap(), 5);
        assert_eq!(
            c.count::<u32>("smtpd_hard_error_limit")
                .unwrap_err()
                .to_string(),
            format!(
                "{}, line 1: must not be negative: smtpd_hard_error_limit = -1",
                c.main_cf().display()
            )
        );
        // So a configuration with one is refused whole (postfix check,
        // start, reload), never half-applied by the daemons that read it.
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("must not be negative"));
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

    fn refusals(text: &str, master: &str) -> Vec<String> {
        let c = cfg(text);
        let services = mastercf::parse(Path::new("/etc/postfix/master.cf"), master).unwrap();
        c.refusals(&services, Path::new("/etc/postfix/master.cf"))
            .iter()
            .map(|r| r.to_string())
            .collect()
    }

    const LEVEL: &str = "compatibility_level = 3.6\n";

    #[test]
    fn debian_stock_main_cf_is_accepted_as_it_is() {
        let debian = "smtpd_banner = $myhostname ESMTP $mail_name (Debian/GNU)\nbiff = no\nappend_dot_mydomain = no\nreadme_directory = no\ncompatibility_level = 3.6\nsmtpd_tls_cert_file=/etc/ssl/certs/ssl-cert-snakeoil.pem\nsmtpd_tls_key_file=/etc/ssl/private/ssl-cert-snakeoil.key\nsmtpd_tls_security_level=may\nsmtp_tls_CApath=/etc/ssl/certs\nsmtp_tls_security_level=may\nsmtp_tls_session_cache_database = btree:${data_directory}/smtp_scache\nsmtpd_relay_restrictions = permit_mynetworks permit_sasl_authenticated defer_unauth_destination\nmyhostname = mail.ywnds.com\nalias_maps = hash:/etc/aliases\nalias_database = hash:/etc/aliases\nmyorigin = /etc/mailname\nmydestination = $myhostname, mail.ywnds.com, localhost.localdomain, , localhost\nrelayhost = \nmynetworks = 127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128\nmailbox_size_limit = 0\nrecipient_delimiter = +\ninet_interfaces = all\ninet_protocols = all\n";
        let r = refusals(debian, "");
        assert!(r.is_empty(), "{r:?}");
    }

    #[test]
    fn settings_that_would_make_postfix_stricter_are_refused_with_file_and_line() {
        let r = refusals(
            &format!("{LEVEL}smtpd_client_restrictions = reject_unverified_sender\nsmtpd_tls_req_ccert = yes\nsmtp_header_checks = regexp:/etc/postfix/hc\nsmtpd_milter_maps = cidr:/etc/postfix/milter_map\n"),
            "",
        );
        for want in [
            "/etc/postfix/main.cf, line 2: smtpd_client_restrictions = reject_unverified_sender: restriction \"reject_unverified_sender\" in smtpd_client_restrictions: not implemented by postfix-rs",
            "/etc/postfix/main.cf, line 3: smtpd_tls_req_ccert = yes: not implemented by postfix-rs",
            "/etc/postfix/main.cf, line 4: smtp_header_checks = regexp:/etc/postfix/hc: not implemented by postfix-rs",
            "/etc/postfix/main.cf, line 5: smtpd_milter_maps = cidr:/etc/postfix/milter_map: not implemented by postfix-rs",
        ] {
            assert!(r.contains(&want.to_owned()), "{want} in {r:?}");
        }
        assert_eq!(r.len(), 4, "{r:?}");
    }

    #[test]
    fn tls_settings_stricter_than_rustls_allows_are_refused() {
        // Every suite rustls has is of the "high" grade: any grade is met.
        let r = refusals(
            &format!("{LEVEL}smtpd_tls_mandatory_ciphers = high\nsmtp_tls_ciphers = low\n"),
            "",
        );
        assert!(r.is_empty(), "{r:?}");
        let r = refusals(
            &format!("{LEVEL}smtpd_tls_exclude_ciphers = AES256\nsmtp_tls_trust_anchor_file = /etc/ta.pem\nsmtpd_tls_ciphers = null\n"),
            "",
        );
        assert_eq!(
            r,
            [
                "/etc/postfix/main.cf, line 3: smtp_tls_trust_anchor_file = /etc/ta.pem: not implemented by postfix-rs",
                "/etc/postfix/main.cf, line 4: smtpd_tls_ciphers = null: not implemented by postfix-rs",
                "/etc/postfix/main.cf, line 2: smtpd_tls_exclude_ciphers = AES256: not implemented by postfix-rs",
            ]
        );
    }

    #[test]
    fn negated_items_in_match_lists_are_refused() {
        let r = refusals(
            &format!("{LEVEL}relay_domains = !example.com, example.com\n"),
            "",
        );
        assert_eq!(r, ["/etc/postfix/main.cf, line 2: relay_domains = !example.com, example.com: negated item !example.com in a match list: not implemented by postfix-rs"]);
    }

    #[test]
    fn names_honoured_through_a_default_follow_their_parameter() {
        let r = refusals(
            &format!(
                "{LEVEL}virtual_maps = hash:/etc/postfix/virtual\nfallback_relay = [192.0.2.1]\ndefault_delivery_status_filter = pcre:/etc/postfix/dsn\n"
            ),
            "",
        );
        // virtual_maps is honoured: it is virtual_alias_maps's default;
        // fallback_relay too, as smtp_fallback_relay's.
        assert!(!r.iter().any(|l| l.contains("virtual")), "{r:?}");
        assert_eq!(
            cfg("virtual_maps = hash:/etc/postfix/virtual\n")
                .list("virtual_alias_maps")
                .unwrap(),
            ["hash:/etc/postfix/virtual"]
        );
        assert!(!r.iter().any(|l| l.contains("fallback_relay")), "{r:?}");
        // One that only feeds refused parameters is refused, naming its line.
        assert!(
            r.iter()
                .any(|l| l
                    .contains("line 4: default_delivery_status_filter = pcre:/etc/postfix/dsn")),
            "{r:?}"
        );
    }

    #[test]
    fn inert_settings_and_defaults_written_out_are_accepted() {
        let r = refusals(
            &format!("{LEVEL}biff = no\nsmtpd_tls_loglevel = 1\nsoft_bounce = no\nmessage_drop_headers = bcc content-length resent-bcc return-path\nqueue_minfree = 0\ndelay_warning_time = 0\nsmtpd_timeout = 5m\n"),
            "",
        );
        assert!(r.is_empty(), "{r:?}");
    }

    #[test]
    fn master_cf_overrides_are_checked_with_master_cf_line() {
        // Debian's submission entry, uncommented: taken with Dovecot SASL.
        let master = "smtp inet n - n - - smtpd\nsubmission inet n - n - - smtpd\n  -o syslog_name=postfix/submission\n  -o smtpd_tls_security_level=encrypt\n  -o smtpd_sasl_auth_enable=yes\n  -o smtpd_tls_auth_only=yes\n  -o smtpd_reject_unlisted_recipient=no\n  -o smtpd_client_restrictions=$mua_client_restrictions\n  -o smtpd_helo_restrictions=$mua_helo_restrictions\n  -o smtpd_sender_restrictions=$mua_sender_restrictions\n  -o smtpd_recipient_restrictions=\n  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject\n  -o milter_macro_daemon_name=ORIGINATING\n";
        let main = format!("{LEVEL}mua_client_restrictions = permit_sasl_authenticated, reject\nmua_helo_restrictions =\nmua_sender_restrictions =\n");
        let r = refusals(&format!("{main}smtpd_sasl_type = dovecot\n"), master);
        assert!(r.is_empty(), "{r:?}");
        // Without smtpd_sasl_type = dovecot it would be Cyrus: refused, at
        // the line of the service that turns AUTH on.
        let r = refusals(&main, master);
        assert_eq!(
            r,
            ["/etc/postfix/master.cf, line 2: smtpd_sasl_type = cyrus: not implemented by postfix-rs with smtpd_sasl_auth_enable = yes (dovecot is)"]
        );
        let r = refusals(
            &main,
            "smtp inet n - n - - smtpd\n  -o smtpd_tls_req_ccert=yes\n",
        );
        assert_eq!(
            r,
            ["/etc/postfix/master.cf, line 1: smtpd_tls_req_ccert = yes: not implemented by postfix-rs"]
        );
    }

    #[test]
    fn unknown_restrictions_and_an_open_relay_are_refused() {
        let r = refusals(
            &format!("{LEVEL}smtpd_recipient_restrictions = permit_mynetworks, reject_unverified_recipient\n"),
            "",
        );
        assert_eq!(r, ["/etc/postfix/main.cf, line 2: smtpd_recipient_restrictions = permit_mynetworks, reject_unverified_recipient: restriction \"reject_unverified_recipient\" in smtpd_recipient_restrictions: not implemented by postfix-rs"]);
        let r = refusals(
            &format!("{LEVEL}smtpd_relay_restrictions = permit_mynetworks\n"),
            "",
        );
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(
            r[0].contains("specify at least one working instance of"),
            "{r:?}"
        );
    }

    #[test]
    fn compatibility_level_0_defaults_postfix_rs_lacks_are_refused() {
        let r = refusals("relayhost = x\n", "");
        assert!(r.iter().any(|l| l == "/etc/postfix/main.cf: append_dot_mydomain = yes (its default at compatibility_level 0): not implemented by postfix-rs"), "{r:?}");
        // Level 0's empty relay restrictions would leave the relay open.
        assert!(
            r.iter()
                .any(|l| l.contains("specify at least one working instance of")),
            "{r:?}"
        );
        let r = refusals("append_dot_mydomain = no\nsmtpd_relay_restrictions = permit_mynetworks reject_unauth_destination\n", "");
        assert!(r.is_empty(), "{r:?}");
    }

    #[test]
    fn file_valued_parameters_are_read_as_postfix_reads_them() {
        let tmp = tempfile::tempdir().unwrap();
        let mailname = tmp.path().join("mailname");
        std::fs::write(&mailname, "ywnds.com\nignored\n").unwrap();
        let domains = tmp.path().join("domains");
        std::fs::write(&domains, "# ours\nywnds.com, example.org\n  other.test\n").unwrap();
        let c = cfg(&format!(
            "myorigin = {}\nmydestination = localhost {}\n",
            mailname.display(),
            domains.display()
        ));
        assert_eq!(c.get("myorigin").unwrap(), "ywnds.com");
        assert_eq!(
            c.list("mydestination").unwrap(),
            ["localhost", "ywnds.com", "example.org", "other.test"]
        );
        let c = cfg("myorigin = /nonexistent/mailname\n");
        assert!(c
            .get("myorigin")
            .unwrap_err()
            .to_string()
            .contains("/nonexistent/mailname"));
        let r = refusals(
            &format!("{LEVEL}relay_domains = hash:/etc/postfix/relay\n"),
            "",
        );
        assert_eq!(r, ["/etc/postfix/main.cf, line 2: relay_domains = hash:/etc/postfix/relay: lookup table hash:/etc/postfix/relay in a match list: not implemented by postfix-rs"]);
    }

    #[test]
    fn per_transport_parameters_of_master_cf_services_are_known() {
        let mut c = cfg("relay_destination_concurrency_limit = 5\nuucp_time_limit = 60s\n");
        assert!(c.param("relay_destination_concurrency_limit").is_none());
        let master = "relay unix - - n - - smtp\nuucp unix - n n - - pipe\n  flags=F user=uucp argv=uux -r\n";
        c.set_services(&mastercf::parse(Path::new("master.cf"), master).unwrap());
        assert_eq!(c.int("relay_destination_concurrency_limit").unwrap(), 5);
        assert_eq!(c.get("relay_destination_recipient_limit").unwrap(), "50");
        assert_eq!(c.time("uucp_time_limit").unwrap(), Duration::from_secs(60));
        assert!(c.param("relay_time_limit").is_none());
        assert!(params::per_transport("spawn", "time_limit").is_some());
        assert!(params::per_transport("spawn", "destination_concurrency_limit").is_none());
        assert!(c.unused(&[]).is_empty());
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
