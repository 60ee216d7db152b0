//! Local users: the system password database, or a passwd(5)-format file.
//!
//! `local_passwd_file` (a postfix-rs parameter) names such a file for
//! instances that should not depend on the machine's accounts: tests and
//! the default instance define their users there.

use std::path::PathBuf;

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
        }
    }

    /// Looks a user up by name (exact, as getpwnam does).
    pub fn lookup(&self, name: &str) -> Result<Option<User>, Error> {
        match &self.file {
            None => system(nix::unistd::User::from_name(name), name),
            Some(path) => find_in_file(path, |u| u.name == name),
        }
    }

    /// Looks a user up by id (the first entry, as getpwuid does).
    pub fn lookup_uid(&self, uid: u32) -> Result<Option<User>, Error> {
        match &self.file {
            None => system(
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)),
                &uid.to_string(),
            ),
            Some(path) => find_in_file(path, |u| u.uid == uid),
        }
    }
}

/// The first entry of a passwd(5)-format file that is `wanted`.
fn find_in_file(
    path: &std::path::Path,
    wanted: impl Fn(&User) -> bool,
) -> Result<Option<User>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::File {
        file: path.to_owned(),
        source,
    })?;
    Ok(text
        .lines()
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
        .find(wanted))
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
    fn system_database_knows_root() {
        assert_eq!(Passwd::new(None).lookup("root").unwrap().unwrap().uid, 0);
        assert_eq!(
            Passwd::new(None).lookup_uid(0).unwrap().unwrap().name,
            "root"
        );
    }
}
