//! The indexed table format postfix-rs uses for `hash:` maps.
//!
//! File layout: the magic `PFXDB1\n`, a big-endian u32 entry count, then
//! each entry as u32 key length, key, u32 value length, value, sorted by key.
//! Readers load it whole (tables are small) and answer from memory. Writers
//! replace the file atomically, so a reader never sees half a table.

use std::collections::HashMap;
use std::path::Path;

const MAGIC: &[u8] = b"PFXDB1\n";

/// A loaded table.
#[derive(Debug, Clone, Default)]
pub struct Db(HashMap<String, String>);

impl Db {
    pub fn from_entries(entries: &[(String, String)]) -> Self {
        Self(entries.iter().cloned().collect())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reads a database file.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        decode(&std::fs::read(path)?).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not a postfix-rs table (run postalias)",
            )
        })
    }

    /// Writes `entries` as a database file, atomically. A later duplicate key
    /// replaces an earlier one, as in Postfix.
    pub fn write(path: &Path, entries: &[(String, String)]) -> std::io::Result<()> {
        let mut map: Vec<(&String, &String)> = entries
            .iter()
            .map(|(k, v)| (k, v))
            .collect::<HashMap<_, _>>()
            .into_iter()
            .collect();
        map.sort();
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&(map.len() as u32).to_be_bytes());
        for (k, v) in map {
            for part in [k.as_bytes(), v.as_bytes()] {
                out.extend_from_slice(&(part.len() as u32).to_be_bytes());
                out.extend_from_slice(part);
            }
        }
        pfx_sys::fs::write_atomic(path, &out)
    }
}

fn decode(bytes: &[u8]) -> Option<Db> {
    let mut rest = bytes.strip_prefix(MAGIC)?;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (a, b) = rest.split_at_checked(n)?;
        rest = b;
        Some(a)
    };
    let count = u32::from_be_bytes(take(4)?.try_into().ok()?);
    let mut map = HashMap::new();
    for _ in 0..count {
        let mut part = || -> Option<String> {
            let len = u32::from_be_bytes(take(4)?.try_into().ok()?) as usize;
            String::from_utf8(take(len)?.to_vec()).ok()
        };
        let k = part()?;
        let v = part()?;
        map.insert(k, v);
    }
    Some(Db(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("aliases.db");
        Db::write(
            &p,
            &[
                ("root".into(), "openstack".into()),
                ("postmaster".into(), "root".into()),
                ("root".into(), "hadoop".into()),
            ],
        )
        .unwrap();
        let db = Db::open(&p).unwrap();
        assert_eq!(db.get("root"), Some("hadoop"));
        assert_eq!(db.get("postmaster"), Some("root"));
        assert_eq!(db.len(), 2);
        let good = std::fs::read(&p).unwrap();
        for cut in 0..good.len() {
            std::fs::write(&p, &good[..cut]).unwrap();
            assert!(Db::open(&p).is_err(), "{cut}");
        }
    }
}
