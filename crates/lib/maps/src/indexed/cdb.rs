//! `cdb:` tables: D. J. Bernstein's constant database, as Postfix (through
//! tinycdb) writes them: keys and values without a NUL byte, built as
//! `NAME.cdb.tmp` under an exclusive `flock` and renamed into place, so a
//! reader keeps the old file until it reopens. No locks for readers.

use std::path::Path;

/// An open cdb table.
pub struct Table(cdb2::CDB);

impl Table {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        cdb2::CDB::open(path).map(Self)
    }

    pub fn get(&mut self, key: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        self.0.get(key).transpose()
    }

    pub fn records(&mut self) -> std::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.0.iter().collect()
    }
}

/// Writes `path` anew from `records`, through `path.tmp`.
pub fn build(path: &Path, records: &[(Vec<u8>, Vec<u8>)]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&tmp)?;
    let lock = super::Flock::new(file.try_clone()?, true)?;
    file.set_len(0)?;
    let mut make = cdb2::CDBMake::new(file)?;
    for (k, v) in records {
        make.add(k, v)?;
    }
    make.finish()?;
    std::fs::rename(&tmp, path)?;
    drop(lock);
    Ok(())
}
