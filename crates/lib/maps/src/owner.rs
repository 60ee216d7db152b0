//! Who vouches for a table's answers (Postfix's dictionary owner): local(8)
//! runs the commands and files of an alias, and opens its `:include:`
//! files, with the rights of whoever owns the alias table, so that the
//! owner of a table cannot act as root through it.

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
    fn and(self, other: Self) -> Self {
        match (self, other) {
            (Self::Trusted, o) | (_, o @ Self::Unknown) => o,
            (Self::Untrusted(a), Self::Untrusted(b)) if a != b => Self::Unknown,
            (s, _) => s,
        }
    }
}

/// The owner of the table `spec` (`type:name`), from the file it reads:
/// the indexed file of `hash:`/`btree:`/`lmdb:`/`cdb:`, the text file of
/// `texthash:`/`regexp:`/`pcre:`/`cidr:`, the configuration file of an SQL
/// table.
pub fn owner(spec: &str) -> Owner {
    let Some((kind, name)) = spec.split_once(':') else {
        return Owner::Unknown;
    };
    let of_file = |path: &Path| match std::fs::metadata(path) {
        Ok(m) if m.uid() == 0 => Owner::Trusted,
        Ok(m) => Owner::Untrusted(m.uid()),
        Err(_) => Owner::Unknown,
    };
    match kind {
        "hash" | "btree" | "lmdb" | "cdb" => {
            let kind = crate::indexed::Kind::parse(kind).unwrap_or(crate::indexed::Kind::Hash);
            of_file(&kind.file(Path::new(name)))
        }
        "texthash" | "regexp" | "pcre" | "cidr" | "sqlite" | "pgsql" | "mysql" => {
            of_file(Path::new(name))
        }
        "inline" | "static" | "unix" | "nis" => Owner::Trusted,
        "unionmap" | "pipemap" => match crate::components(kind, name) {
            Ok(parts) => parts
                .iter()
                .fold(Owner::Trusted, |acc, p| acc.and(owner(p))),
            Err(_) => Owner::Unknown,
        },
        _ => Owner::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_follow_postfixs_rules() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("aliases");
        std::fs::write(&file, "a: b\n").unwrap();
        std::fs::write(dir.path().join("aliases.db"), "").unwrap();
        let me = nix::unistd::getuid().as_raw();
        let mine = if me == 0 {
            Owner::Trusted
        } else {
            Owner::Untrusted(me)
        };
        let f = file.display();
        assert_eq!(owner(&format!("texthash:{f}")), mine);
        assert_eq!(owner(&format!("hash:{f}")), mine);
        assert_eq!(owner(&format!("lmdb:{f}")), Owner::Unknown);
        assert_eq!(owner("inline:{a=b}"), Owner::Trusted);
        assert_eq!(owner("proxy:hash:/etc/aliases"), Owner::Unknown);
        assert_eq!(owner("tcp:127.0.0.1:9"), Owner::Unknown);
        assert_eq!(
            owner(&format!("unionmap:{{inline:{{a=b}}, texthash:{f}}}")),
            mine
        );
        assert_eq!(Owner::Untrusted(5).and(Owner::Untrusted(6)), Owner::Unknown);
        assert_eq!(Owner::Untrusted(5).and(Owner::Trusted), Owner::Untrusted(5));
        assert_eq!(Owner::Trusted.and(Owner::Untrusted(5)), Owner::Untrusted(5));
    }
}
