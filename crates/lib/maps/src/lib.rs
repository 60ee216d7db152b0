//! Lookup tables, named as Postfix names them (`type:name`).
//!
//! - `hash:`, `btree:`, `lmdb:`, `cdb:` (`hash:/etc/aliases`): the indexed
//!   file that `postalias`/`newaliases`/`postmap` build, in Postfix's own
//!   formats ([`indexed`]); kept open and reopened when it is rebuilt,
//!   never the text file per delivery.
//! - `texthash:/path`: the text file itself, read once.
//! - `unix:passwd.byname` (also behind `proxy:`): the password database, or
//!   the passwd-format file named by `local_passwd_file` ([`passwd`]).
//! - `nis:name` (in Postfix's default `alias_maps`): finds nothing on a
//!   machine without a NIS domain, as Postfix; refused on one with a NIS
//!   domain, where Postfix would look names up there.
//!
//! - `proxy:type:name`: in a daemon confined to the queue directory
//!   (master.cf's chroot column), asked of the proxymap service, which runs
//!   outside ([`Map::Proxy`]); elsewhere the table itself.
//!
//! [`aliases`] parses the aliases(5) text format.

pub mod aliases;
pub mod indexed;
pub mod passwd;
pub mod table;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

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

/// The text format behind a table: aliases(5) (`name: value`) or
/// postmap's (`key value`).
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
    /// A text table read once.
    TextHash(HashMap<String, String>),
    /// The password database (or `local_passwd_file`).
    Passwd(passwd::Passwd),
    /// A NIS map on a machine with no NIS domain: never matches.
    NoNis,
    /// A `proxy:` table in a confined process: asked of proxymap.
    Proxy {
        table: String,
        conn: Mutex<Option<std::os::unix::net::UnixStream>>,
    },
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
}

impl Map {
    /// Parses `type:name`; `passwd` is what `unix:passwd.byname` means here.
    pub fn parse(spec: &str, passwd: &passwd::Passwd) -> Result<Self, Error> {
        Self::parse_as(spec, passwd, Format::Aliases)
    }

    /// [`Map::parse`] for a table whose text files have `format`.
    pub fn parse_as(spec: &str, passwd: &passwd::Passwd, format: Format) -> Result<Self, Error> {
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
            "texthash" => {
                let entries = match format {
                    Format::Aliases => aliases::parse_file(Path::new(name)),
                    Format::Postmap => table::parse_file(Path::new(name)),
                };
                Ok(Self::TextHash(entries?.into_iter().rev().collect()))
            }
            "unix" if name == "passwd.byname" => Ok(Self::Passwd(passwd.clone())),
            "nis" => match nis_domain() {
                None => Ok(Self::NoNis),
                Some(domain) => Err(Error::Nis {
                    spec: spec.to_owned(),
                    domain,
                }),
            },
            _ => Err(Error::Unsupported {
                kind: kind.to_owned(),
                spec: spec.to_owned(),
            }),
        }
    }

    /// Looks `key` up (keys are lowercase, as Postfix folds them).
    pub fn lookup(&self, key: &str) -> Result<Option<String>, Error> {
        let key = key.to_ascii_lowercase();
        match self {
            Self::Indexed {
                kind,
                source,
                reader,
            } => {
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
            Self::TextHash(d) => Ok(d.get(&key).cloned()),
            Self::Passwd(p) => Ok(p.lookup(&key)?.map(|u| u.name)),
            Self::NoNis => Ok(None),
            Self::Proxy { table, conn } => proxy_lookup(table, &key, conn),
        }
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

/// A list of tables, searched in order (`alias_maps`, `local_recipient_maps`).
#[derive(Debug, Default)]
pub struct MapList(Vec<Map>);

impl MapList {
    /// From the expanded, split parameter value.
    pub fn parse(specs: &[String], passwd: &passwd::Passwd) -> Result<Self, Error> {
        Self::parse_as(specs, passwd, Format::Aliases)
    }

    /// [`MapList::parse`] for tables whose text files have `format`
    /// (`transport_maps` are postmap tables).
    pub fn parse_as(
        specs: &[String],
        passwd: &passwd::Passwd,
        format: Format,
    ) -> Result<Self, Error> {
        specs
            .iter()
            .map(|s| Map::parse_as(s, passwd, format))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first table that knows `key` answers.
    pub fn lookup(&self, key: &str) -> Result<Option<String>, Error> {
        for m in &self.0 {
            if let Some(v) = m.lookup(key)? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }
}
