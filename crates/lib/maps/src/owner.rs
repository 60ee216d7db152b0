//! Who vouches for a table's answers (Postfix's dictionary owner): local(8)
//! runs the commands and files of an alias, and opens its `:include:`
//! files, with the rights of whoever owns the alias table, so that the
//! owner of a table cannot act as root through it.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A table's provenance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Root's file, or a table that is no file (`inline:`, `static:`,
    /// `unix:passwd.byname`).
    Trusted,
    /// A file owned by this (non-root) uid.
    Untrusted(u32),
    /// No owner to go by: a server answers (`tcp:`, `socketmap:`,
    /// `proxy:`), the file is gone, or tables of different users are
    /// combined.
    Unknown,
}

impl Owner {
    /// Postfix's aggregation over `unionmap:`/`pipemap:` components: the
    /// least trusted one, and unknown for two different users.
    pub(crate) fn and(self, other: Self) -> Self {
        match (self, other) {
            (Self::Trusted, o) | (_, o @ Self::Unknown) => o,
            (Self::Untrusted(a), Self::Untrusted(b)) if a != b => Self::Unknown,
            (s, _) => s,
        }
    }
}

impl Owner {
    /// The owner of an open file (`fstat`), so that it is the file that
    /// was read, not whatever the name leads to later.
    pub(crate) fn of(meta: &std::fs::Metadata) -> Self {
        match meta.uid() {
            0 => Self::Trusted,
            uid => Self::Untrusted(uid),
        }
    }
}

/// Reads a table file and tells who owns the file that was read.
pub(crate) fn read(path: &Path) -> std::io::Result<(Vec<u8>, Owner)> {
    let mut file = std::fs::File::open(path)?;
    let owner = Owner::of(&file.metadata()?);
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok((bytes, owner))
}

/// The owner of the file at `path` as it is now (an SQL table's
/// configuration file, read when the table opens); unknown when it
/// cannot be opened.
pub(crate) fn of_path(path: &Path) -> Owner {
    std::fs::File::open(path)
        .and_then(|f| f.metadata())
        .map_or(Owner::Unknown, |m| Owner::of(&m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_follow_postfixs_rules() {
        let owner = |spec: &str| {
            crate::Map::parse(spec, &crate::passwd::Passwd::default())
                .unwrap()
                .owner()
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("aliases");
        std::fs::write(&file, "a b\n").unwrap();
        let me = nix::unistd::getuid().as_raw();
        let mine = if me == 0 {
            Owner::Trusted
        } else {
            Owner::Untrusted(me)
        };
        let f = file.display();
        assert_eq!(owner(&format!("texthash:{f}")), mine);
        assert_eq!(owner(&format!("regexp:{f}")), mine);
        assert_eq!(owner("inline:{a=b}"), Owner::Trusted);
        assert_eq!(owner("tcp:127.0.0.1:9"), Owner::Unknown);
        assert_eq!(owner(&format!("texthash:{f}.missing")), Owner::Unknown);
        assert_eq!(
            owner(&format!("unionmap:{{inline:{{a=b}}, texthash:{f}}}")),
            mine
        );
        assert_eq!(Owner::Untrusted(5).and(Owner::Untrusted(6)), Owner::Unknown);
        assert_eq!(Owner::Untrusted(5).and(Owner::Trusted), Owner::Untrusted(5));
        assert_eq!(Owner::Trusted.and(Owner::Untrusted(5)), Owner::Untrusted(5));
    }

    /// The owner is the read file's: a name that later leads to another
    /// user's file does not change whose answers the table gives.
    #[test]
    fn the_owner_is_the_read_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("aliases");
        std::fs::write(&file, "a b\n").unwrap();
        let me = nix::unistd::getuid().as_raw();
        let map = crate::Map::parse(
            &format!("texthash:{}", file.display()),
            &crate::passwd::Passwd::default(),
        )
        .unwrap();
        let before = map.owner();
        let other = dir.path().join("other");
        std::fs::write(&other, "a c\n").unwrap();
        // Only root can give a file away; anyone can see it is not re-read.
        if me == 0 {
            nix::unistd::chown(&other, Some(4321.into()), None).unwrap();
        }
        std::fs::rename(&other, &file).unwrap();
        assert_eq!(map.owner(), before);
        assert_eq!(map.lookup("a").unwrap().as_deref(), Some("b"));
    }
}
