//! Where a recipient's mail goes and as whom, as Postfix's virtual
//! mailbox.c decides it: `virtual_mailbox_maps`, `virtual_uid_maps` and
//! `virtual_gid_maps`, each searched with the full address folded to lower
//! case, then without its extension, then `@domain` (Postfix's
//! mail_addr_find, [`pfx_resolve::find`]).
//!
//! No mailbox: the recipient is unknown (bounced). A table that cannot
//! answer, an owner that is not found, a uid below `virtual_minimum_uid`
//! or a gid that is not positive: trouble, with Postfix's warning (the
//! recipient is deferred, never bounced).

use pfx_address::DomainList;
use pfx_maps::MapList;
use pfx_resolve::Strategy;

/// The tables and limits of one configuration.
pub(crate) struct Tables {
    pub(crate) mailbox: MapList,
    pub(crate) uid: MapList,
    pub(crate) gid: MapList,
    /// `virtual_mailbox_base`, an absolute path.
    pub(crate) base: String,
    pub(crate) minimum_uid: i64,
    /// `recipient_delimiter`.
    pub(crate) delimiters: String,
    /// `$myorigin` and `$mydestination`: domains whose bare local parts the
    /// tables are also asked for.
    pub(crate) myorigin: String,
    pub(crate) mydestination: DomainList,
}

/// A recipient's mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mailbox {
    /// `$virtual_mailbox_base/` and the table's answer.
    pub(crate) path: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

impl Mailbox {
    /// A path ending in `/` is a Maildir, anything else an mbox file.
    pub(crate) fn is_maildir(&self) -> bool {
        self.path.ends_with('/')
    }
}

/// What the tables say about one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lookup {
    Found(Mailbox),
    /// Not in `virtual_mailbox_maps`.
    Unknown,
    /// Postfix's warning; the mail waits.
    Trouble(String),
}

/// C's atol, as Postfix reads uid and gid answers: leading white space, a
/// sign, digits up to the first non-digit; 0 when there are none.
fn atol(s: &str) -> i64 {
    let s = s.trim_start();
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let n = digits
        .bytes()
        .take_while(u8::is_ascii_digit)
        .fold(0i64, |n, d| {
            n.saturating_mul(10).saturating_add(i64::from(d - b'0'))
        });
    if negative {
        -n
    } else {
        n
    }
}

impl Tables {
    /// `table` searched for `user` in Postfix's order.
    fn find(&self, table: &MapList, user: &str) -> Result<Option<String>, pfx_maps::Error> {
        let is_local =
            |d: &str| d.eq_ignore_ascii_case(&self.myorigin) || self.mydestination.contains(d);
        let found = pfx_resolve::find(table, user, &self.delimiters, Strategy::DEFAULT, &is_local)?;
        Ok(found.map(|f| f.value))
    }

    /// Where `user` (the recipient folded to lower case) gets mail.
    pub(crate) fn lookup(&self, user: &str) -> Lookup {
        let path = match self.find(&self.mailbox, user) {
            Ok(Some(p)) => format!("{}/{p}", self.base),
            Ok(None) => return Lookup::Unknown,
            Err(e) => {
                return Lookup::Trouble(format!("table virtual_mailbox_maps: lookup {user}: {e}"))
            }
        };
        let id = |table: &MapList, name: &str| match self.find(table, user) {
            Ok(Some(v)) => Ok((atol(&v), v)),
            // Postfix says the same whether the table failed or did not know.
            Ok(None) | Err(_) => Err(Lookup::Trouble(format!(
                "recipient {user}: not found in {name}"
            ))),
        };
        let (uid, text) = match id(&self.uid, "virtual_uid_maps") {
            Ok(v) => v,
            Err(t) => return t,
        };
        let Some(uid) = u32::try_from(uid)
            .ok()
            .filter(|&u| i64::from(u) >= self.minimum_uid)
        else {
            return Lookup::Trouble(format!(
                "recipient {user}: bad uid {text} in virtual_uid_maps"
            ));
        };
        let (gid, text) = match id(&self.gid, "virtual_gid_maps") {
            Ok(v) => v,
            Err(t) => return t,
        };
        let Some(gid) = u32::try_from(gid).ok().filter(|&g| g > 0) else {
            return Lookup::Trouble(format!(
                "recipient {user}: bad gid {text} in virtual_gid_maps"
            ));
        };
        Lookup::Found(Mailbox { path, uid, gid })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pfx_maps::passwd::Passwd;

    fn maps(specs: &[&str]) -> MapList {
        let specs: Vec<String> = specs.iter().map(|s| (*s).to_owned()).collect();
        MapList::parse(&specs, &Passwd::default()).unwrap()
    }

    fn tables(mailbox: &[&str], uid: &[&str], gid: &[&str]) -> Tables {
        Tables {
            mailbox: maps(mailbox),
            uid: maps(uid),
            gid: maps(gid),
            base: "/var/vmail".into(),
            minimum_uid: 100,
            delimiters: "+".into(),
            myorigin: "ywnds.com".into(),
            mydestination: DomainList::new(&["mail.ywnds.com".into()]),
        }
    }

    const MAILBOXES: &str = "inline:{a@example.net=example.net/a/, b@example.net=example.net/b, \
                             b+x@example.net=example.net/bx, @example.org=example.org/catchall/, \
                             u=local/u/}";

    fn found(path: &str) -> Lookup {
        Lookup::Found(Mailbox {
            path: path.into(),
            uid: 5000,
            gid: 5000,
        })
    }

    #[test]
    fn mailboxes_are_found_in_postfix_order() {
        let t = tables(&[MAILBOXES], &["static:5000"], &["static:5000"]);
        // The full address, then without the extension, then @domain.
        assert_eq!(
            t.lookup("a@example.net"),
            found("/var/vmail/example.net/a/")
        );
        assert_eq!(
            t.lookup("a+news@example.net"),
            found("/var/vmail/example.net/a/")
        );
        assert_eq!(
            t.lookup("b+x@example.net"),
            found("/var/vmail/example.net/bx")
        );
        assert_eq!(
            t.lookup("b+y@example.net"),
            found("/var/vmail/example.net/b")
        );
        assert_eq!(
            t.lookup("anyone@example.org"),
            found("/var/vmail/example.org/catchall/")
        );
        assert_eq!(t.lookup("c@example.net"), Lookup::Unknown);
        // A bare local part only for $myorigin and $mydestination.
        assert_eq!(t.lookup("u+z@ywnds.com"), found("/var/vmail/local/u/"));
        assert_eq!(t.lookup("u@mail.ywnds.com"), found("/var/vmail/local/u/"));
        assert_eq!(t.lookup("u@example.com"), Lookup::Unknown);
    }

    #[test]
    fn maildir_or_mbox_by_the_trailing_slash() {
        let t = tables(&[MAILBOXES], &["static:5000"], &["static:5000"]);
        let Lookup::Found(a) = t.lookup("a@example.net") else {
            panic!()
        };
        let Lookup::Found(b) = t.lookup("b@example.net") else {
            panic!()
        };
        assert!(a.is_maildir());
        assert!(!b.is_maildir());
    }

    #[test]
    fn owners_come_from_their_tables_in_the_same_order() {
        let t = tables(
            &[MAILBOXES],
            &["inline:{a@example.net=1001, @example.org=1002}"],
            &["inline:{a@example.net=2001, @example.org=2002}"],
        );
        assert_eq!(
            t.lookup("a+x@example.net"),
            Lookup::Found(Mailbox {
                path: "/var/vmail/example.net/a/".into(),
                uid: 1001,
                gid: 2001
            })
        );
        assert_eq!(
            t.lookup("z@example.org"),
            Lookup::Found(Mailbox {
                path: "/var/vmail/example.org/catchall/".into(),
                uid: 1002,
                gid: 2002
            })
        );
        assert_eq!(
            t.lookup("b@example.net"),
            Lookup::Trouble("recipient b@example.net: not found in virtual_uid_maps".into())
        );
    }

    #[test]
    fn a_uid_below_the_minimum_or_a_bad_gid_is_trouble() {
        let t = tables(&[MAILBOXES], &["static:99"], &["static:5000"]);
        assert_eq!(
            t.lookup("a@example.net"),
            Lookup::Trouble("recipient a@example.net: bad uid 99 in virtual_uid_maps".into())
        );
        let t = tables(&[MAILBOXES], &["static:root"], &["static:5000"]);
        assert_eq!(
            t.lookup("a@example.net"),
            Lookup::Trouble("recipient a@example.net: bad uid root in virtual_uid_maps".into())
        );
        let t = tables(&[MAILBOXES], &["static:100"], &["static:0"]);
        assert_eq!(
            t.lookup("a@example.net"),
            Lookup::Trouble("recipient a@example.net: bad gid 0 in virtual_gid_maps".into())
        );
        let t = tables(&[MAILBOXES], &["static:100"], &[]);
        assert_eq!(
            t.lookup("a@example.net"),
            Lookup::Trouble("recipient a@example.net: not found in virtual_gid_maps".into())
        );
        let t = tables(&[MAILBOXES], &["static:5000x"], &["static: 7"]);
        assert_eq!(
            t.lookup("a@example.net"),
            Lookup::Found(Mailbox {
                path: "/var/vmail/example.net/a/".into(),
                uid: 5000,
                gid: 7
            })
        );
    }

    #[test]
    fn a_table_that_cannot_answer_is_trouble_not_unknown() {
        let t = tables(
            &["inline:{a@example.net=a/}", "regexp:/nonexistent/re"],
            &["static:5000"],
            &["static:5000"],
        );
        // Found before the broken table is asked.
        assert_eq!(t.lookup("a@example.net"), found("/var/vmail/a/"));
        match t.lookup("z@example.net") {
            Lookup::Trouble(w) => assert!(
                w.starts_with("table virtual_mailbox_maps: lookup z@example.net: "),
                "{w}"
            ),
            other => panic!("{other:?}"),
        }
        let t = tables(&[MAILBOXES], &["regexp:/nonexistent/re"], &["static:5000"]);
        assert_eq!(
            t.lookup("a@example.net"),
            Lookup::Trouble("recipient a@example.net: not found in virtual_uid_maps".into())
        );
    }

    #[test]
    fn atol_reads_numbers_as_c_does() {
        assert_eq!(atol("5000"), 5000);
        assert_eq!(atol("  42abc"), 42);
        assert_eq!(atol("-3"), -3);
        assert_eq!(atol("x1"), 0);
        assert_eq!(atol(""), 0);
    }
}
