//! Lookup tables, named as Postfix names them (`type:name`).
//!
//! Fixed tables (keys are folded to lower case, and callers try the whole
//! key, then its parent domains and other partial keys):
//! - `hash:`, `btree:`, `lmdb:`, `cdb:` (`hash:/etc/aliases`): the indexed
//!   file that `postalias`/`newaliases`/`postmap` build, in Postfix's own
//!   formats ([`indexed`]); kept open and reopened when it is rebuilt,
//!   never the text file per delivery.
//! - `texthash:/path`: the text file itself, read once, in postmap's
//!   `key value` format whatever the table is for (as Postfix reads it).
//! - `inline:{ key=value, { key = value with spaces } }` and
//!   `static:value` / `static:{ value with spaces }` ([`inline`]): tables
//!   written in the name; static answers every key.
//! - `unix:passwd.byname` (also behind `proxy:`): the password database, or
//!   the passwd-format file named by `local_passwd_file` ([`passwd`]).
//! - `nis:name` (in Postfix's default `alias_maps`): finds nothing on a
//!   machine without a NIS domain, as Postfix; refused on one with a NIS
//!   domain, where Postfix would look names up there.
//! - `sqlite:/etc/postfix/sqlite.cf`, `pgsql:/etc/postfix/pgsql.cf`,
//!   `mysql:/etc/postfix/mysql.cf` ([`sql`]): an SQL query per lookup, on
//!   an SQLite file or a PostgreSQL or MySQL/MariaDB server (a fixed table
//!   even when the query uses parts of the key, as in Postfix 3.7); a
//!   server that does not answer is a temporary error.
//!
//! Pattern tables ([`Map::is_pattern`]: keys are matched as given, and
//! callers make one lookup with the full key):
//! - `regexp:/path` and `pcre:/path` ([`pattern`]): regexp_table(5) and
//!   pcre_table(5) rules, first match wins, `$1` substitution.
//! - `cidr:/path` ([`cidr`]): network blocks, first match wins.
//! - `tcp:host:port` and `socketmap:inet:host:port:name` /
//!   `socketmap:unix:/path:name` ([`socket`]): a server answers.
//!
//! Tables of tables, which are pattern tables when their first table is:
//! - `unionmap:{ t1, t2 }`: every table is asked, the results joined with
//!   commas.
//! - `pipemap:{ t1, t2 }`: each result is the next table's key.
//!
//! - `proxy:type:name`: in a daemon confined to the queue directory
//!   (master.cf's chroot column), asked of the proxymap service, which runs
//!   outside ([`Map::Proxy`]); elsewhere the table itself.
//!
//! A table that cannot be opened or read (a missing regexp file, an inline
//! table with a syntax error, an sqlite.cf without `dbpath`) does not stop
//! the program: as Postfix 3.7's surrogate tables, the reason is logged as
//! an error when it is configured and every lookup then fails with a
//! temporary error ([`Error::Unavailable`]), never "not found".
//! [`Map::parse_strict`] (postmap) fails instead. Rules with a syntax
//! error in regexp, pcre and cidr files are logged with file and line and
//! left out, as Postfix does.
//!
//! [`aliases`] parses the aliases(5) text format.

pub mod aliases;
pub mod cidr;
pub mod indexed;
pub mod inline;
pub mod matchlist;
mod owner;
pub mod passwd;
pub mod pattern;
mod pcre;
pub mod socket;
pub mod sql;
pub mod table;
mod text;

pub use owner::Owner;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use pfx_sys::strerror;

static JAILED: AtomicBool = AtomicBool::new(false);
static RESTART: AtomicBool = AtomicBool::new(false);

/// This process is (about to be) confined to the queue directory: `proxy:`
/// tables go through proxymap, and a table rebuilt meanwhile, which it can
/// no longer reopen, asks for a restart ([`restart_requested`]).
pub fn jail() {
    JAILED.store(true, Ordering::Relaxed);
}

/// Whether a table this confined process uses was rebuilt: the process
/// should stop, so that master starts one that opens it afresh.
pub fn restart_requested() -> bool {
    RESTART.load(Ordering::Relaxed)
}

/// The text format of a table's source file: aliases(5) (`name: value`,
/// what postalias reads) or postmap's (`key value`, what postmap and
/// `texthash:` read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Aliases,
    Postmap,
}

/// One configured table.
#[derive(Debug)]
pub enum Map {
    /// An indexed file, opened when the table is configured (before any
    /// chroot) and reopened when it was rebuilt.
    Indexed {
        kind: indexed::Kind,
        source: PathBuf,
        reader: Mutex<Option<indexed::Reader>>,
    },
    /// A text table read once, and its file's owner.
    TextHash(HashMap<String, String>, Owner),
    /// The password database (or `local_passwd_file`).
    Passwd(passwd::Passwd),
    /// A NIS map on a machine with no NIS domain: never matches.
    NoNis,
    /// A `proxy:` table in a confined process: asked of proxymap.
    Proxy {
        table: String,
        conn: Mutex<Option<std::os::unix::net::UnixStream>>,
    },
    /// `regexp:` or `pcre:`, and its file's owner.
    Pattern(pattern::Table, Owner),
    /// `cidr:`, and its file's owner.
    Cidr(cidr::Table, Owner),
    /// `inline:{...}`.
    Inline(inline::Inline),
    /// `static:value`: answers every key.
    Static(String),
    /// `unionmap:{...}`: every table's results, joined with commas.
    Union(Vec<Self>),
    /// `pipemap:{...}`: each result is the next table's key.
    Pipe(Vec<Self>),
    /// `tcp:host:port`.
    Tcp(socket::Tcp),
    /// `socketmap:...`.
    Socketmap(socket::Socketmap),
    /// `sqlite:/path.cf`, `pgsql:/path.cf`, `mysql:/path.cf`, and the
    /// configuration file's owner.
    Sql(sql::Table, Owner),
    /// A table that could not be opened (Postfix's surrogate): every lookup
    /// fails with [`Error::Unavailable`].
    Unavailable { table: String, reason: String },
}

/// Why a table could not be opened or asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad table \"{0}\": expected type:name")]
    BadSpec(String),
    #[error("table \"{0}\": Berkeley DB support was not built into postfix-rs (install libdb5.3-dev and rebuild)")]
    NoBerkeleyDb(String),
    #[error(
        "table \"{spec}\": NIS lookups (NIS domain {domain}) are not implemented by postfix-rs"
    )]
    Nis { spec: String, domain: String },
    #[error("unsupported table type \"{kind}\" in \"{spec}\"")]
    Unsupported { kind: String, spec: String },
    /// A text table's syntax.
    #[error(transparent)]
    Syntax(#[from] aliases::Error),
    /// An indexed table changed under a confined process, which must restart.
    #[error("table {kind}:{} has changed", .source_file.display())]
    Changed {
        kind: &'static str,
        source_file: PathBuf,
    },
    #[error("{}: {source}", .file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Passwd(#[from] passwd::Error),
    #[error("proxy:{table}: {reason}")]
    ProxyFailed { table: String, reason: String },
    #[error("proxymap: {0}")]
    Proxymap(#[from] pfx_ipc::Error),
    /// A table that could not be opened ([`Map::parse_strict`]); the text is
    /// Postfix's (`open /etc/postfix/x: No such file or directory`).
    #[error("{0}")]
    Open(String),
    /// A lookup in a table that could not be opened: a temporary error.
    #[error("{table} is unavailable. {reason}")]
    Unavailable { table: String, reason: String },
    /// A lookup that failed for now (server down, broken reply, `TEMP`).
    #[error("table {table}: lookup error: {reason}")]
    Temporary { table: String, reason: String },
    /// A lookup the table cannot answer as configured (socketmap `PERM`,
    /// SQL that does not compile).
    #[error("table {table}: configuration error: {reason}")]
    Config { table: String, reason: String },
}

/// Whether a table type is a pattern table for Postfix (not
/// DICT_FLAG_FIXED): the key is matched as given, in one lookup.
fn type_is_pattern(kind: &str) -> bool {
    matches!(kind, "regexp" | "pcre" | "cidr" | "tcp" | "socketmap")
}

/// What the tables of `unionmap:` and `pipemap:` are: `{ t1, t2 }`.
fn components(kind: &str, name: &str) -> Result<Vec<String>, String> {
    let bad = || format!("bad syntax: \"{kind}:{name}\"; need \"{kind}:{{type:name...}}\"");
    let inner = match text::balanced(name) {
        Some(len) if len == name.len() && len > 2 => &name[1..len - 1],
        _ => return Err(bad()),
    };
    let parts = text::split_braced(inner);
    if parts.is_empty() || parts.iter().any(|p| !p.contains(':')) {
        return Err(bad());
    }
    Ok(parts.into_iter().map(str::to_owned).collect())
}

impl Map {
    /// Parses `type:name`; `passwd` is what `unix:passwd.byname` means here.
    ///
    /// A table that cannot be opened (a missing regexp file, bad inline
    /// syntax) is logged as an error and returned as [`Map::Unavailable`],
    /// whose lookups fail, as a Postfix daemon does.
    pub fn parse(spec: &str, passwd: &passwd::Passwd) -> Result<Self, Error> {
        Self::open(spec, passwd, false)
    }

    /// [`Map::parse`] for a command (postmap): a table that cannot be
    /// opened is an error ([`Error::Open`], with Postfix's text) instead of
    /// an unavailable table.
    pub fn parse_strict(spec: &str, passwd: &passwd::Passwd) -> Result<Self, Error> {
        Self::open(spec, passwd, true)
    }

    fn open(spec: &str, passwd: &passwd::Passwd, strict: bool) -> Result<Self, Error> {
        // (Keep in step with `types`.)
        let proxied = spec.strip_prefix("proxy:");
        if let Some(table) = proxied.filter(|_| JAILED.load(Ordering::Relaxed)) {
            return Ok(Self::Proxy {
                table: table.to_owned(),
                conn: Mutex::new(None),
            });
        }
        let spec = proxied.unwrap_or(spec);
        let (kind, name) = spec
            .split_once(':')
            .ok_or_else(|| Error::BadSpec(spec.to_owned()))?;
        // A table that cannot be opened: Postfix's surrogate.
        let unavailable = |reason: String| -> Result<Self, Error> {
            if strict {
                return Err(Error::Open(reason));
            }
            tracing::error!("{reason}");
            Ok(Self::Unavailable {
                table: spec.to_owned(),
                reason,
            })
        };
        let new_type = matches!(
            kind,
            "regexp"
                | "pcre"
                | "cidr"
                | "inline"
                | "static"
                | "unionmap"
                | "pipemap"
                | "tcp"
                | "socketmap"
                | "sqlite"
                | "pgsql"
                | "mysql"
        );
        if new_type && name.is_empty() {
            return Err(Error::BadSpec(spec.to_owned()));
        }
        match kind {
            "hash" | "btree" if !indexed::bdb::AVAILABLE => {
                Err(Error::NoBerkeleyDb(spec.to_owned()))
            }
            "hash" | "btree" | "lmdb" | "cdb" => {
                let kind = indexed::Kind::parse(kind).unwrap_or(indexed::Kind::Hash);
                let source = PathBuf::from(name);
                // Opened now: a confined process cannot later. A table that
                // does not exist yet is opened at its first lookup.
                let reader = indexed::Reader::open(kind, &source).ok();
                Ok(Self::Indexed {
                    kind,
                    source,
                    reader: Mutex::new(reader),
                })
            }
            // Always postmap's `key value` format, as Postfix reads it, even
            // for aliases.
            "texthash" => match owner::read(Path::new(name)) {
                Ok((bytes, o)) => Ok(Self::TextHash(
                    texthash(name, &String::from_utf8_lossy(&bytes)),
                    o,
                )),
                Err(e) => unavailable(format!("open {name}: {}", strerror(&e))),
            },
            "unix" if name == "passwd.byname" => Ok(Self::Passwd(passwd.clone())),
            "nis" => match nis_domain() {
                None => Ok(Self::NoNis),
                Some(domain) => Err(Error::Nis {
                    spec: spec.to_owned(),
                    domain,
                }),
            },
            "regexp" | "pcre" | "cidr" => match text::table_text(kind, name) {
                Err(reason) => unavailable(reason),
                Ok((t, o)) => Ok(match kind {
                    "regexp" => {
                        Self::Pattern(pattern::Table::parse(pattern::Kind::Regexp, name, &t), o)
                    }
                    "pcre" => {
                        Self::Pattern(pattern::Table::parse(pattern::Kind::Pcre, name, &t), o)
                    }
                    _ => Self::Cidr(cidr::Table::parse(name, &t), o),
                }),
            },
            "inline" => {
                inline::Inline::parse(name).map_or_else(unavailable, |t| Ok(Self::Inline(t)))
            }
            "static" => {
                inline::parse_static(name).map_or_else(unavailable, |v| Ok(Self::Static(v)))
            }
            "unionmap" | "pipemap" => {
                let parts = match components(kind, name) {
                    Ok(p) => p,
                    Err(reason) => return unavailable(reason),
                };
                let maps = parts
                    .iter()
                    .map(|p| Self::open(p, passwd, strict))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(if kind == "unionmap" {
                    Self::Union(maps)
                } else {
                    Self::Pipe(maps)
                })
            }
            "tcp" => Ok(Self::Tcp(socket::Tcp::new(name))),
            "socketmap" => {
                socket::Socketmap::parse(name).map_or_else(unavailable, |m| Ok(Self::Socketmap(m)))
            }
            "sqlite" | "pgsql" | "mysql" => {
                let o = owner::of_path(Path::new(name));
                sql::Table::open(kind, name).map_or_else(unavailable, |t| Ok(Self::Sql(t, o)))
            }
            _ => Err(Error::Unsupported {
                kind: kind.to_owned(),
                spec: spec.to_owned(),
            }),
        }
    }

    /// Whether this is a pattern table for Postfix (one without
    /// DICT_FLAG_FIXED): regexp, pcre, cidr, tcp, socketmap, a table that
    /// could not be opened, and unionmap/pipemap when their first table is
    /// one. Callers look such a table up once, with the full key as given
    /// (not folded), instead of trying domain and parent-domain keys.
    pub fn is_pattern(&self) -> bool {
        match self {
            Self::Pattern(..)
            | Self::Cidr(..)
            | Self::Tcp(_)
            | Self::Socketmap(_)
            | Self::Unavailable { .. } => true,
            Self::Union(maps) | Self::Pipe(maps) => maps.first().is_some_and(Self::is_pattern),
            Self::Proxy { table, .. } => spec_is_pattern(table),
            Self::Indexed { .. }
            | Self::TextHash(..)
            | Self::Passwd(_)
            | Self::NoNis
            | Self::Inline(_)
            | Self::Static(_)
            | Self::Sql(..) => false,
        }
    }

    /// Who vouches for this table's answers (Postfix's dictionary owner),
    /// from the file as it was opened: the indexed file now in use, the
    /// text file read, the SQL configuration file.
    pub fn owner(&self) -> Owner {
        match self {
            Self::Indexed { reader, .. } => {
                let reader = reader.lock().unwrap_or_else(|e| e.into_inner());
                reader.as_ref().map_or(Owner::Unknown, |r| r.owner())
            }
            Self::TextHash(_, o) | Self::Pattern(_, o) | Self::Cidr(_, o) | Self::Sql(_, o) => *o,
            Self::Passwd(_) | Self::NoNis | Self::Inline(_) | Self::Static(_) => Owner::Trusted,
            Self::Union(maps) | Self::Pipe(maps) => maps
                .iter()
                .fold(Owner::Trusted, |acc, m| acc.and(m.owner())),
            Self::Proxy { .. } | Self::Tcp(_) | Self::Socketmap(_) | Self::Unavailable { .. } => {
                Owner::Unknown
            }
        }
    }

    /// Every record, for `postmap -s`; `None` for a table that cannot list
    /// its records (Postfix: "sequence operation is not supported").
    pub fn records(&self) -> Option<Result<Vec<(String, String)>, Error>> {
        match self {
            Self::Inline(t) => Some(Ok(t.entries().to_vec())),
            Self::TextHash(d, _) => {
                let mut v: Vec<(String, String)> =
                    d.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                v.sort();
                Some(Ok(v))
            }
            Self::Indexed { kind, source, .. } => Some(
                indexed::Reader::open(*kind, source)
                    .and_then(|mut r| r.records())
                    .map_err(|e| Error::Read {
                        file: kind.file(source),
                        source: e,
                    }),
            ),
            Self::Unavailable { table, reason } => {
                tracing::warn!("{table} is unavailable. {reason}");
                Some(Err(Error::Unavailable {
                    table: table.clone(),
                    reason: reason.clone(),
                }))
            }
            _ => None,
        }
    }

    /// Looks `key` up. Fixed tables fold it to lower case first, as Postfix
    /// does; pattern tables ([`Map::is_pattern`]) get it as given.
    pub fn lookup(&self, key: &str) -> Result<Option<String>, Error> {
        match self {
            Self::Indexed {
                kind,
                source,
                reader,
            } => {
                let key = key.to_ascii_lowercase();
                let mut reader = reader.lock().unwrap_or_else(|e| e.into_inner());
                let changed = reader.as_ref().is_some_and(|r| r.changed());
                if changed && JAILED.load(Ordering::Relaxed) {
                    if !RESTART.swap(true, Ordering::Relaxed) {
                        tracing::info!(
                            "table {}:{} has changed -- restarting",
                            kind.name(),
                            source.display()
                        );
                    }
                    return Err(Error::Changed {
                        kind: kind.name(),
                        source_file: source.clone(),
                    });
                }
                if reader.is_none() || changed {
                    *reader = None;
                    *reader =
                        Some(
                            indexed::Reader::open(*kind, source).map_err(|e| Error::Read {
                                file: kind.file(source),
                                source: e,
                            })?,
                        );
                }
                let r = reader.as_mut().expect("opened above");
                r.get(&key).map_err(|e| Error::Read {
                    file: kind.file(source),
                    source: e,
                })
            }
            Self::TextHash(d, _) => Ok(d.get(&key.to_ascii_lowercase()).cloned()),
            Self::Passwd(p) => Ok(p.lookup(&key.to_ascii_lowercase())?.map(|u| u.name)),
            Self::NoNis => Ok(None),
            Self::Proxy { table, conn } => {
                // Fixed tables keep folding here, as before; proxymap's own
                // table folds again (harmlessly) or not, as its type says.
                if spec_is_pattern(table) {
                    proxy_lookup(table, key, conn)
                } else {
                    proxy_lookup(table, &key.to_ascii_lowercase(), conn)
                }
            }
            Self::Pattern(t, _) => Ok(t.lookup(key)),
            Self::Cidr(t, _) => Ok(t.lookup(key)),
            Self::Inline(t) => Ok(t.get(&key.to_ascii_lowercase()).map(str::to_owned)),
            Self::Static(v) => Ok(Some(v.clone())),
            Self::Union(maps) => {
                let mut out = String::new();
                for m in maps {
                    if let Some(v) = m.lookup(key)? {
                        if !out.is_empty() {
                            out.push(',');
                        }
                        out.push_str(&v);
                    }
                }
                Ok((!out.is_empty()).then_some(out))
            }
            Self::Pipe(maps) => {
                let mut query = key.to_owned();
                for m in maps {
                    match m.lookup(&query)? {
                        Some(v) => query = v,
                        None => return Ok(None),
                    }
                }
                Ok(Some(query))
            }
            Self::Tcp(t) => t.lookup(key),
            Self::Socketmap(m) => m.lookup(key),
            Self::Sql(t, _) => t.lookup(key),
            Self::Unavailable { table, reason } => {
                tracing::warn!("{table} is unavailable. {reason}");
                Err(Error::Unavailable {
                    table: table.clone(),
                    reason: reason.clone(),
                })
            }
        }
    }
}

/// [`Map::is_pattern`] for a table not opened here (behind `proxy:`),
/// from its type: unionmap and pipemap by their first table.
fn spec_is_pattern(spec: &str) -> bool {
    let Some((kind, name)) = spec.split_once(':') else {
        return false;
    };
    match kind {
        "unionmap" | "pipemap" => components(kind, name)
            .ok()
            .and_then(|c| c.first().map(|f| spec_is_pattern(f)))
            .unwrap_or(true),
        "proxy" => spec_is_pattern(name),
        k => type_is_pattern(k),
    }
}

/// Asks proxymap (`private/proxymap`, seen from inside the queue directory)
/// for `key` in `table`, over a kept connection (made again once if it
/// broke).
fn proxy_lookup(
    table: &str,
    key: &str,
    conn: &Mutex<Option<std::os::unix::net::UnixStream>>,
) -> Result<Option<String>, Error> {
    use pfx_ipc::codec::{read_frame, write_frame};
    use pfx_ipc::proto::{conversation, endpoint, ProxyReply, ProxyRequest};
    let mut conn = conn.lock().unwrap_or_else(|e| e.into_inner());
    let request = ProxyRequest {
        table: table.to_owned(),
        key: key.to_owned(),
    };
    let ask = |s: &mut std::os::unix::net::UnixStream| -> Result<ProxyReply, pfx_ipc::Error> {
        write_frame(s, &request)?;
        read_frame(s, pfx_ipc::DEFAULT_MAX_FRAME)
    };
    let connect = || -> Result<std::os::unix::net::UnixStream, pfx_ipc::Error> {
        let path = Path::new("/").join(endpoint::PROXYMAP);
        let mut s = std::os::unix::net::UnixStream::connect(path)?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(100)))?;
        let hello = pfx_ipc::Hello {
            version: pfx_ipc::PROTOCOL_VERSION,
            conversation: conversation::PROXYMAP.to_owned(),
        };
        write_frame(&mut s, &hello)?;
        let theirs: pfx_ipc::Hello = read_frame(&mut s, pfx_ipc::DEFAULT_MAX_FRAME)?;
        if theirs != hello {
            return Err(pfx_ipc::Error::Mismatch {
                ours: format!("{hello:?}"),
                theirs: format!("{theirs:?}"),
            });
        }
        Ok(s)
    };
    let mut last = None;
    for _ in 0..2 {
        let mut s = match conn.take() {
            Some(s) => s,
            None => connect()?,
        };
        match ask(&mut s) {
            Ok(reply) => {
                *conn = Some(s);
                return match reply {
                    ProxyReply::Found(v) => Ok(Some(v)),
                    ProxyReply::NotFound => Ok(None),
                    ProxyReply::Failed(reason) => Err(Error::ProxyFailed {
                        table: table.to_owned(),
                        reason,
                    }),
                };
            }
            Err(e) => last = Some(e),
        }
    }
    Err(Error::Proxymap(last.unwrap_or(pfx_ipc::Error::Closed)))
}

/// The machine's NIS domain, if it has one (Linux reports `(none)` when not).
fn nis_domain() -> Option<String> {
    let d = std::fs::read_to_string("/proc/sys/kernel/domainname").ok()?;
    let d = d.trim();
    (!d.is_empty() && d != "(none)").then(|| d.to_owned())
}

/// A `texthash:` table's records, as Postfix's dict_thash reads them:
/// lines without a value are warned about and left out, a `key:` (an
/// aliases(5) file read as a table) is kept as it is, with a warning; the
/// first of two records for a key wins.
fn texthash(name: &str, text: &str) -> HashMap<String, String> {
    let (entries, errors) = table::records(name, text);
    for e in errors {
        tracing::warn!(
            "{name}, line {}: expected format: key whitespace value -- ignoring this line",
            e.line
        );
    }
    let mut out = HashMap::new();
    for (line, key, value) in entries {
        if key.len() > 1 && key.ends_with(':') {
            tracing::warn!(
                "{name}, line {line}: record is in \"key: value\" format; is this an alias file?"
            );
        }
        out.entry(key).or_insert(value);
    }
    out
}

/// A list of tables, searched in order (`alias_maps`, `local_recipient_maps`).
#[derive(Debug, Default)]
pub struct MapList {
    maps: Vec<Map>,
    /// Each table's `type:name`, for [`MapList::lookup_owned`].
    specs: Vec<String>,
}

impl MapList {
    /// From the expanded, split parameter value.
    pub fn parse(specs: &[String], passwd: &passwd::Passwd) -> Result<Self, Error> {
        let maps = specs
            .iter()
            .map(|s| Map::parse(s, passwd))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            maps,
            specs: specs.to_vec(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.maps.is_empty()
    }

    /// The tables, in order (for callers that treat pattern tables apart:
    /// [`Map::is_pattern`]).
    pub fn maps(&self) -> &[Map] {
        &self.maps
    }

    /// The first table that knows `key` answers.
    pub fn lookup(&self, key: &str) -> Result<Option<String>, Error> {
        Ok(self.find(key)?.map(|(v, _)| v))
    }

    /// [`MapList::lookup`], with the [`Owner`] and `type:name` of the
    /// table that answered.
    pub fn lookup_owned(&self, key: &str) -> Result<Option<(String, Owner, &str)>, Error> {
        Ok(self
            .find(key)?
            .map(|(v, i)| (v, self.maps[i].owner(), self.specs[i].as_str())))
    }

    /// The answer and the index of the table that gave it.
    fn find(&self, key: &str) -> Result<Option<(String, usize)>, Error> {
        for (i, m) in self.maps.iter().enumerate() {
            if let Some(v) = m.lookup(key)? {
                return Ok(Some((v, i)));
            }
        }
        Ok(None)
    }
}

/// The lookup table types this build opens, sorted (`postconf -m`):
/// `hash` and `btree` only with Berkeley DB; `nis` answers as Postfix's
/// does on a host without NIS.
pub fn types() -> Vec<&'static str> {
    let mut t = vec![
        "cdb",
        "cidr",
        "inline",
        "lmdb",
        "mysql",
        "nis",
        "pcre",
        "pgsql",
        "pipemap",
        "proxy",
        "regexp",
        "socketmap",
        "sqlite",
        "static",
        "tcp",
        "texthash",
        "unionmap",
        "unix",
    ];
    if indexed::bdb::AVAILABLE {
        t.extend(["btree", "hash"]);
    }
    t.sort_unstable();
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(spec: &str) -> Map {
        Map::parse(spec, &passwd::Passwd::default()).unwrap()
    }

    /// The table types the configuration check lets through are the ones
    /// this crate opens.
    #[test]
    fn every_type_the_restriction_check_accepts_is_implemented() {
        for t in pfx_config::restriction::TABLE_TYPES {
            let name = match *t {
                "inline" => "{a=b}",
                "static" => "x",
                "unionmap" | "pipemap" => "{static:x}",
                "tcp" => "127.0.0.1:9",
                "socketmap" => "inet:127.0.0.1:9:name",
                "unix" => "passwd.byname",
                _ => "/nonexistent/table",
            };
            let spec = format!("{t}:{name}");
            let parsed = Map::parse(&spec, &passwd::Passwd::default());
            assert!(
                !matches!(parsed, Err(Error::Unsupported { .. })),
                "{spec}: {parsed:?}"
            );
        }
        assert!(matches!(
            Map::parse("ldap:/x", &passwd::Passwd::default()),
            Err(Error::Unsupported { .. })
        ));
    }

    #[test]
    fn a_table_that_cannot_be_opened_fails_every_lookup() {
        for spec in [
            "regexp:/nonexistent/re",
            "pcre:/nonexistent/re",
            "cidr:/nonexistent/cidr",
            "sqlite:/nonexistent/sqlite.cf",
            "pgsql:/nonexistent/pgsql.cf",
            "mysql:/nonexistent/mysql.cf",
            "inline:{}",
            "static:{a",
            "unionmap:{x}",
            "pipemap:nobraces",
            "socketmap:nocolon",
        ] {
            let m = map(spec);
            assert!(m.is_pattern(), "{spec}");
            match m.lookup("key") {
                Err(Error::Unavailable { table, .. }) => assert_eq!(table, spec),
                other => panic!("{spec}: {other:?}"),
            }
        }
        match map("regexp:/nonexistent/re").lookup("k") {
            Err(e) => assert_eq!(
                e.to_string(),
                "regexp:/nonexistent/re is unavailable. open /nonexistent/re: No such file or directory"
            ),
            Ok(v) => panic!("{v:?}"),
        }
    }

    #[test]
    fn strict_opening_reports_postfix_text() {
        let e = Map::parse_strict(
            "unionmap:{inline:{a=b}, cidr:/nonexistent/c}",
            &passwd::Passwd::default(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "open /nonexistent/c: No such file or directory"
        );
        let e = Map::parse_strict("unionmap:{a}", &passwd::Passwd::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad syntax: \"unionmap:{a}\"; need \"unionmap:{type:name...}\""
        );
        assert!(matches!(
            Map::parse_strict("static:", &passwd::Passwd::default()),
            Err(Error::BadSpec(_))
        ));
    }

    #[test]
    fn union_joins_results_and_pipe_chains_them() {
        let u = map("unionmap:{ inline:{x=y}, static:{s t}, inline:{q=z} }");
        assert_eq!(u.lookup("X").unwrap().as_deref(), Some("y,s t"));
        let u = map("unionmap:{inline:{x=y},inline:{q=z}}");
        assert_eq!(u.lookup("nothing").unwrap(), None);
        let p = map("pipemap:{inline:{x=y},inline:{y=z}}");
        assert_eq!(p.lookup("x").unwrap().as_deref(), Some("z"));
        let p = map("pipemap:{inline:{x=y},inline:{q=z}}");
        assert_eq!(p.lookup("x").unwrap(), None);
        // A failing table fails the whole lookup.
        let u = map("unionmap:{inline:{x=y},regexp:/nonexistent/re}");
        assert!(matches!(u.lookup("x"), Err(Error::Unavailable { .. })));
    }

    #[test]
    fn fixed_tables_fold_keys_and_pattern_tables_do_not() {
        let r = map("regexp:{ {/^Big$/i exact} }");
        assert!(r.is_pattern());
        assert_eq!(r.lookup("Big").unwrap().as_deref(), Some("exact"));
        assert_eq!(r.lookup("big").unwrap(), None);
        let i = map("inline:{Big=1}");
        assert!(!i.is_pattern());
        assert_eq!(i.lookup("BIG").unwrap().as_deref(), Some("1"));
        assert!(!map("static:x").is_pattern());
        assert_eq!(
            map("static:x").lookup("anything").unwrap().as_deref(),
            Some("x")
        );
        assert!(map("cidr:{ {10.0.0.0/8 ten} }").is_pattern());
        assert!(map("tcp:127.0.0.1:1").is_pattern());
        assert!(map("socketmap:inet:127.0.0.1:1:m").is_pattern());
        // Composites take the first table's kind, as Postfix.
        assert!(map("unionmap:{regexp:{{/a/ b}},inline:{a=b}}").is_pattern());
        assert!(!map("pipemap:{inline:{a=b},regexp:{{/a/ b}}}").is_pattern());
        assert!(spec_is_pattern("pipemap:{cidr:/x,inline:{a=b}}"));
        assert!(!spec_is_pattern("hash:/etc/aliases"));
    }

    #[test]
    fn records_list_inline_and_refuse_pattern_tables() {
        let r = map("inline:{a=1, b=2, a=3}").records().unwrap().unwrap();
        assert_eq!(r, [("a".into(), "3".into()), ("b".into(), "2".into())]);
        assert!(map("regexp:{{/a/ b}}").records().is_none());
        assert!(map("static:x").records().is_none());
        assert!(map("regexp:/nonexistent").records().unwrap().is_err());
    }
}
