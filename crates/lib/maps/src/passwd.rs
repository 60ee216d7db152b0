//! Local users: the system password database, or a passwd(5)-format file.
//!
//! `local_passwd_file` (a postfix-rs parameter) names such a file for
//! instances that should not depend on the machine's accounts: tests and
//! the default instance define their users there.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// A local user, as local delivery needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: String,
}

/// Where users come from.
#[derive(Debug, Clone, Default)]
pub struct Passwd {
    file: Option<PathBuf>,
    /// The file's entries as last read: smtpd and local look a user up for
    /// every recipient, and a stat tells whether the file changed since.
    cache: Arc<Mutex<Option<Cached>>>,
}

#[derive(Debug)]
struct Cached {
    stamp: Stamp,
    users: Arc<[User]>,
}

/// What tells one version of a file from another.
#[derive(Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// Why the password database could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("getpwnam {name}: {source}")]
    System { name: String, source: nix::Error },
    #[error("{}: {source}", .file.display())]
    File {
        file: PathBuf,
        source: std::io::Error,
    },
}

impl Passwd {
    /// `None` or an empty path: the system database.
    pub fn new(file: Option<PathBuf>) -> Self {
        Self {
            file: file.filter(|p| !p.as_os_str().is_empty()),
            cache: Arc::default(),
        }
    }

    /// Looks a user up by name (exact, as getpwnam does).
    pub fn lookup(&self, name: &str) -> Result<Option<User>, Error> {
        match &self.file {
            None => system(nix::unistd::User::from_name(name), name),
            Some(path) => Ok(self.users(path)?.iter().find(|u| u.name == name).cloned()),
        }
    }

    /// Looks a user up by id (the first entry, as getpwuid does).
    pub fn lookup_uid(&self, uid: u32) -> Result<Option<User>, Error> {
        match &self.file {
            None => system(
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)),
                &uid.to_string(),
            ),
            Some(path) => Ok(self.users(path)?.iter().find(|u| u.uid == uid).cloned()),
        }
    }

    /// The entries of the file, read again only when it changed.
    fn users(&self, path: &std::path::Path) -> Result<Arc<[User]>, Error> {
        let error = |source| Error::File {
            file: path.to_owned(),
            source,
        };
        let stamp = Stamp::of(&std::fs::metadata(path).map_err(error)?);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.as_ref().filter(|c| c.stamp == stamp) {
            return Ok(c.users.clone());
        }
        let file = std::fs::File::open(path).map_err(error)?;
        // The stamp of what is read, in case the file changed after the stat.
        let stamp = Stamp::of(&file.metadata().map_err(error)?);
        let text = std::io::read_to_string(file).map_err(error)?;
        let users: Arc<[User]> = parse(&text).collect();
        *cache = Some(Cached {
            stamp,
            users: users.clone(),
        });
        Ok(users)
    }
}

/// The entries of a passwd(5)-format file, in order.
fn parse(text: &str) -> impl Iterator<Item = User> + '_ {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() == 7).then(|| User {
                name: f[0].to_owned(),
                uid: f[2].parse().unwrap_or(u32::MAX),
                gid: f[3].parse().unwrap_or(u32::MAX),
                home: PathBuf::from(f[5]),
                shell: f[6].to_owned(),
            })
        })
}

/// A getpwnam/getpwuid answer as a [`User`].
fn system(found: nix::Result<Option<nix::unistd::User>>, key: &str) -> Result<Option<User>, Error> {
    match found {
        Ok(Some(u)) => Ok(Some(User {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            home: u.dir,
            shell: u.shell.display().to_string(),
        })),
        Ok(None) => Ok(None),
        Err(source) => Err(Error::System {
            name: key.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_users_are_found_by_exact_name() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("passwd");
        std::fs::write(
            &p,
            "# users\nopenstack:x:1001:1001:OpenStack:/home/openstack:/bin/bash\nbroken:line\n",
        )
        .unwrap();
        let pw = Passwd::new(Some(p));
        let u = pw.lookup("openstack").unwrap().unwrap();
        assert_eq!(
            (u.uid, u.gid, u.home.to_str().unwrap()),
            (1001, 1001, "/home/openstack")
        );
        assert!(pw.lookup("OpenStack").unwrap().is_none());
        assert!(pw.lookup("broken").unwrap().is_none());
        assert_eq!(pw.lookup_uid(1001).unwrap().unwrap().name, "openstack");
        assert!(pw.lookup_uid(1002).unwrap().is_none());
    }

    #[test]
    fn a_changed_file_is_read_again_an_unchanged_one_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("passwd");
        std::fs::write(&p, "alice:x:1001:1001::/home/alice:/bin/sh\n").unwrap();
        let pw = Passwd::new(Some(p.clone()));
        let copy = pw.clone();
        assert!(pw.lookup("alice").unwrap().is_some());
        let first = pw.users(&p).unwrap();
        assert!(
            Arc::ptr_eq(&first, &copy.users(&p).unwrap()),
            "read once, shared by clones"
        );
        // Same size, same second: a new user all the same.
        std::fs::write(&p, "bobby:x:1002:1002::/home/bobby:/bin/sh\n").unwrap();
        assert!(pw.lookup("alice").unwrap().is_none());
        assert_eq!(copy.lookup("bobby").unwrap().unwrap().uid, 1002);
        // Replaced by rename, as vipw and useradd do.
        let new = tmp.path().join("passwd.new");
        std::fs::write(&new, "carol:x:1003:1003::/home/carol:/bin/sh\n").unwrap();
        std::fs::rename(&new, &p).unwrap();
        assert!(pw.lookup("carol").unwrap().is_some());
        std::fs::remove_file(&p).unwrap();
        assert!(pw.lookup("carol").is_err());
    }

    #[test]
    fn system_database_knows_root() {
        assert_eq!(Passwd::new(None).lookup("root").unwrap().unwrap().uid, 0);
        assert_eq!(
            Passwd::new(None).lookup_uid(0).unwrap().unwrap().name,
            "root"
        );
    }
}
