//! Indexed table files in the formats Postfix's own type names mean, so that
//! Postfix and postfix-rs each read what the other's postmap, postalias and
//! newaliases wrote:
//!
//! | type | file | library |
//! |---|---|---|
//! | `hash:`, `btree:` | `NAME.db` | the system's Berkeley DB 5.3 ([`bdb`]) |
//! | `lmdb:` | `NAME.lmdb` | LMDB, one file without a lock file ([`lmdb`]) |
//! | `cdb:` | `NAME.cdb` | D. J. Bernstein's cdb ([`cdb`]) |
//!
//! As Postfix on Linux writes them: keys and values of hash, btree and lmdb
//! tables end with a NUL byte, cdb's do not; a reader tries the key with a
//! NUL first, then without, and drops a value's trailing NUL. A rebuild
//! keeps readers consistent the way Postfix's does (file locks for Berkeley
//! DB and LMDB, a renamed temporary file for cdb), and a reader notices a
//! rebuilt table by its file's identity and reopens it.

pub mod bdb;
pub mod cdb;
pub mod lmdb;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A table type with an indexed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Hash,
    Btree,
    Lmdb,
    Cdb,
}

impl Kind {
    /// `hash`, `btree`, `lmdb` or `cdb`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "hash" => Some(Self::Hash),
            "btree" => Some(Self::Btree),
            "lmdb" => Some(Self::Lmdb),
            "cdb" => Some(Self::Cdb),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Hash => "hash",
            Self::Btree => "btree",
            Self::Lmdb => "lmdb",
            Self::Cdb => "cdb",
        }
    }

    /// The indexed file of a table's source file (`/etc/aliases.db`).
    pub fn file(self, source: &Path) -> PathBuf {
        let mut s = source.as_os_str().to_owned();
        s.push(match self {
            Self::Hash | Self::Btree => ".db",
            Self::Lmdb => ".lmdb",
            Self::Cdb => ".cdb",
        });
        PathBuf::from(s)
    }

    /// Whether postmap and postalias end keys and values with a NUL byte.
    pub fn nul(self) -> bool {
        self != Self::Cdb
    }

    /// The table's name in Postfix's "duplicate entry" warning.
    pub fn warning_name(self, source: &Path) -> String {
        match self {
            Self::Lmdb => format!("lmdb:{}", source.display()),
            Self::Cdb => source.display().to_string(),
            _ => self.file(source).display().to_string(),
        }
    }
}

/// What to do with a key met twice while building (postmap's default,
/// `-r` and `-w`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duplicates {
    /// Keep the first, warn.
    Warn,
    /// The last wins.
    Replace,
    /// Keep the first, silently.
    Ignore,
}

/// A record as stored: key and value bytes, NUL convention applied.
pub type Record = (Vec<u8>, Vec<u8>);

/// `text` as the table stores it: with a trailing NUL when `nul`.
pub fn stored(text: &str, nul: bool) -> Vec<u8> {
    let mut b = text.as_bytes().to_vec();
    if nul {
        b.push(0);
    }
    b
}

/// Resolves duplicate keys as `dup` says; returns the records to store and
/// the keys met more than once (for the warning).
pub fn dedup(records: Vec<Record>, dup: Duplicates) -> (Vec<Record>, Vec<Vec<u8>>) {
    let mut index: std::collections::HashMap<Vec<u8>, usize> = Default::default();
    let mut out: Vec<Record> = Vec::with_capacity(records.len());
    let mut dups = Vec::new();
    for (k, v) in records {
        match index.get(&k) {
            Some(&i) => {
                if dup == Duplicates::Replace {
                    out[i].1 = v;
                } else if dup == Duplicates::Warn {
                    dups.push(k);
                }
            }
            None => {
                index.insert(k.clone(), out.len());
                out.push((k, v));
            }
        }
    }
    (out, dups)
}

/// Writes the table file of `source` in the format of `kind`, replacing
/// what was there in Postfix's way. `records` are stored as given.
pub fn build(kind: Kind, source: &Path, records: &[Record]) -> std::io::Result<()> {
    match kind {
        Kind::Hash | Kind::Btree => bdb::build(kind == Kind::Hash, &kind.file(source), records),
        Kind::Lmdb => lmdb::build(&kind.file(source), records),
        Kind::Cdb => cdb::build(&kind.file(source), records),
    }
}

/// Where a table file was when it was opened: a rebuild (new inode or new
/// contents) changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    mtime: (i64, i64),
    size: u64,
}

impl Stamp {
    fn of(file: &std::fs::File) -> std::io::Result<Self> {
        let m = file.metadata()?;
        Ok(Self {
            dev: m.dev(),
            ino: m.ino(),
            mtime: (m.mtime(), m.mtime_nsec()),
            size: m.size(),
        })
    }
}

enum Handle {
    Bdb(bdb::Table),
    Lmdb(lmdb::Table),
    Cdb(cdb::Table),
}

/// An open table file, for lookups.
pub struct Reader {
    path: PathBuf,
    /// The file as opened, to notice a rebuild with `fstat` (which works
    /// inside a chroot, where the path does not).
    file: std::fs::File,
    stamp: Stamp,
    handle: Handle,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").field("path", &self.path).finish()
    }
}

impl Reader {
    /// Opens the table file of `source`.
    pub fn open(kind: Kind, source: &Path) -> std::io::Result<Self> {
        let path = kind.file(source);
        let file = std::fs::File::open(&path)?;
        let stamp = Stamp::of(&file)?;
        let handle = match kind {
            Kind::Hash | Kind::Btree => Handle::Bdb(bdb::Table::open(kind == Kind::Hash, &path)?),
            Kind::Lmdb => Handle::Lmdb(lmdb::Table::open(&path)?),
            Kind::Cdb => Handle::Cdb(cdb::Table::open(&path)?),
        };
        Ok(Self {
            path,
            file,
            stamp,
            handle,
        })
    }

    /// Who owns the file in use (`fstat` of the open file).
    pub fn owner(&self) -> crate::Owner {
        self.file
            .metadata()
            .map_or(crate::Owner::Unknown, |m| crate::Owner::of(&m))
    }

    /// Whether the file was rebuilt in place (its time or size changed) or
    /// replaced or removed (no name links to it any more).
    pub fn changed(&self) -> bool {
        Stamp::of(&self.file).map_or(true, |s| s != self.stamp)
            || self.file.metadata().is_ok_and(|m| m.nlink() == 0)
    }

    /// The stored value of exactly these key bytes.
    fn get_raw(&mut self, key: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        match &mut self.handle {
            Handle::Bdb(t) => t.get(key),
            Handle::Lmdb(t) => t.get(key),
            Handle::Cdb(t) => t.get(key),
        }
    }

    /// Looks `key` up as Postfix does: with a trailing NUL first, then
    /// without; the value without its NUL.
    pub fn get(&mut self, key: &str) -> std::io::Result<Option<String>> {
        let found = match self.get_raw(&stored(key, true))? {
            Some(v) => Some(v),
            None => self.get_raw(key.as_bytes())?,
        };
        Ok(found.map(|v| text(&v)))
    }

    /// Every record in the table's order, NUL bytes dropped (`postmap -s`).
    pub fn records(&mut self) -> std::io::Result<Vec<(String, String)>> {
        let all = match &mut self.handle {
            Handle::Bdb(t) => t.records()?,
            Handle::Lmdb(t) => t.records()?,
            Handle::Cdb(t) => t.records()?,
        };
        Ok(all.iter().map(|(k, v)| (text(k), text(v))).collect())
    }
}

/// Stored bytes as text: up to the first NUL.
fn text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Holds a `flock` on a file until dropped.
pub(crate) struct Flock {
    _held: std::fs::File,
}

impl Flock {
    pub(crate) fn new(file: std::fs::File, exclusive: bool) -> std::io::Result<Self> {
        use std::os::fd::AsRawFd;
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), op) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self { _held: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_keep_the_first_unless_replaced() {
        let r = |k: &str, v: &str| (k.as_bytes().to_vec(), v.as_bytes().to_vec());
        let recs = vec![r("a", "1"), r("b", "2"), r("a", "3")];
        let (out, dups) = dedup(recs.clone(), Duplicates::Warn);
        assert_eq!(out, vec![r("a", "1"), r("b", "2")]);
        assert_eq!(dups, vec![b"a".to_vec()]);
        let (out, dups) = dedup(recs.clone(), Duplicates::Replace);
        assert_eq!(out, vec![r("a", "3"), r("b", "2")]);
        assert!(dups.is_empty());
        assert!(dedup(recs, Duplicates::Ignore).1.is_empty());
    }

    #[test]
    fn every_kind_builds_and_reads_back_with_postfix_nul_convention() {
        let tmp = tempfile::tempdir().unwrap();
        for kind in [Kind::Hash, Kind::Btree, Kind::Lmdb, Kind::Cdb] {
            if matches!(kind, Kind::Hash | Kind::Btree) && !bdb::AVAILABLE {
                continue;
            }
            let source = tmp.path().join(kind.name());
            let recs: Vec<Record> = [("root", "openstack"), ("admin", "openstack, hadoop")]
                .iter()
                .map(|(k, v)| (stored(k, kind.nul()), stored(v, kind.nul())))
                .chain([(b"YP_MASTER_NAME".to_vec(), b"mail".to_vec())])
                .collect();
            build(kind, &source, &recs).unwrap();
            let mut r = Reader::open(kind, &source).unwrap();
            assert_eq!(
                r.get("root").unwrap().as_deref(),
                Some("openstack"),
                "{kind:?}"
            );
            assert_eq!(
                r.get("admin").unwrap().as_deref(),
                Some("openstack, hadoop")
            );
            assert_eq!(r.get("YP_MASTER_NAME").unwrap().as_deref(), Some("mail"));
            assert_eq!(r.get("nobody").unwrap(), None);
            assert_eq!(r.records().unwrap().len(), 3);
            assert!(!r.changed());
            std::thread::sleep(std::time::Duration::from_millis(10));
            build(kind, &source, &recs[..1]).unwrap();
            assert!(r.changed(), "{kind:?}");
            let mut r = Reader::open(kind, &source).unwrap();
            assert_eq!(r.get("admin").unwrap(), None, "{kind:?}");
        }
    }
}
