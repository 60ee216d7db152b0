//! pipe(8)'s master.cf attributes: `flags=`, `user=name[:group]`,
//! `directory=`, `eol=`, `null_sender=`, `size=`, and `argv=` (last: the
//! command and its arguments). Errors are Postfix's words; they stop the
//! service, as in Postfix, and master throttles it: mail waits.

use nix::unistd::{Gid, Uid};

/// The `flags=` letters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Flags {
    /// `B`: a blank line after the message.
    pub(crate) blank_line: bool,
    /// `D`: `Delivered-To:`, with loop detection.
    pub(crate) delivered_to: bool,
    /// `F`: a `From sender  date` line.
    pub(crate) from_line: bool,
    /// `O`: `X-Original-To:`.
    pub(crate) original_to: bool,
    /// `R`: `Return-Path:`.
    pub(crate) return_path: bool,
    /// `h`: domains and next hop in lower case.
    pub(crate) fold_host: bool,
    /// `q`: local parts quoted as RFC 822 needs.
    pub(crate) quote: bool,
    /// `u`: local parts in lower case.
    pub(crate) fold_user: bool,
    /// `.`: a line-leading dot doubled.
    pub(crate) dot: bool,
    /// `>`: `>` before lines that start with `From `.
    pub(crate) from_quote: bool,
}

impl Flags {
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let mut f = Self::default();
        for c in s.chars() {
            match c {
                'B' => f.blank_line = true,
                'D' => f.delivered_to = true,
                'F' => f.from_line = true,
                'O' => f.original_to = true,
                'R' => f.return_path = true,
                'X' => {} // final delivery: a DSN action, nothing to do here
                'h' => f.fold_host = true,
                'q' => f.quote = true,
                'u' => f.fold_user = true,
                '.' => f.dot = true,
                '>' => f.from_quote = true,
                other => return Err(format!("unknown flag: {other} (ignored)")),
            }
        }
        Ok(f)
    }
}

/// A service's attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Attrs {
    pub(crate) flags: Flags,
    pub(crate) uid: Uid,
    pub(crate) gid: Gid,
    pub(crate) user: String,
    pub(crate) directory: Option<String>,
    pub(crate) eol: Vec<u8>,
    pub(crate) null_sender: String,
    pub(crate) size: Option<u64>,
    pub(crate) argv: Vec<String>,
}

/// `\\n`, `\\t`, `\\ddd` and the rest of C's escapes, as `eol=` takes them.
fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' || i + 1 == b.len() {
            out.push(b[i]);
            i += 1;
            continue;
        }
        i += 1;
        let c = b[i];
        i += 1;
        out.push(match c {
            b'a' => 7,
            b'b' => 8,
            b'f' => 12,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'v' => 11,
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                let mut n = 1;
                while n < 3 && i < b.len() && (b'0'..=b'7').contains(&b[i]) {
                    v = v * 8 + u32::from(b[i] - b'0');
                    i += 1;
                    n += 1;
                }
                v as u8
            }
            other => other,
        });
    }
    out
}

impl Attrs {
    /// Parses the service's arguments. `mail_owner` and `setgid_group`
    /// may not be the command's user or group, nor may root.
    pub(crate) fn parse(
        args: &[String],
        mail_owner: &str,
        setgid_group: &str,
    ) -> Result<Self, String> {
        let (mut flags, mut user, mut directory, mut eol, mut null_sender, mut size) = (
            Flags::default(),
            None,
            None,
            b"\n".to_vec(),
            "MAILER-DAEMON".to_owned(),
            None,
        );
        let mut argv = None;
        for (i, a) in args.iter().enumerate() {
            let (name, value) = a.split_once('=').unwrap_or((a, ""));
            match name.to_ascii_lowercase().as_str() {
                "flags" => flags = Flags::parse(value)?,
                "user" => user = Some(value.to_owned()),
                "directory" => directory = Some(value.to_owned()),
                "eol" => eol = unescape(value),
                "null_sender" => null_sender = value.to_owned(),
                "size" => {
                    size = Some(
                        value
                            .parse()
                            .map_err(|_| format!("get_service_attr: bad size= value: {value}"))?,
                    )
                }
                "argv" => {
                    let mut v = vec![value.to_owned()];
                    v.extend(args[i + 1..].iter().cloned());
                    argv = Some(v);
                    break;
                }
                _ => return Err(format!("unknown attribute name: {a}")),
            }
        }
        let user = user.ok_or("missing user= command-line attribute")?;
        let argv = argv
            .filter(|v| !v[0].is_empty())
            .ok_or("missing argv= command-line attribute")?;
        let (name, group) = match user.split_once(':') {
            Some((n, g)) if !g.is_empty() => (n, Some(g)),
            Some((n, _)) => (n, None),
            None => (user.as_str(), None),
        };
        let ids = pfx_sys::users::user(name)
            .map_err(|_| format!("get_service_attr: unknown username: {name}"))?;
        let gid = match group {
            Some(g) => pfx_sys::users::group(g)
                .map_err(|_| format!("get_service_attr: unknown group: {g}"))?,
            None => ids.gid,
        };
        if ids.uid.is_root() {
            return Err("user= command-line attribute specifies root privileges".into());
        }
        if let Ok(owner) = pfx_sys::users::user(mail_owner) {
            if owner.uid == ids.uid {
                return Err(format!(
                    "user= command-line attribute specifies mail system owner {mail_owner}"
                ));
            }
            if owner.gid == gid {
                return Err(format!("user= command-line attribute specifies mail system owner {mail_owner} group id {gid}"));
            }
        }
        if gid.as_raw() == 0 {
            return Err("user= command-line attribute specifies privileged group id 0".into());
        }
        if pfx_sys::users::group(setgid_group).is_ok_and(|g| g == gid) {
            return Err(format!(
                "user= command-line attribute specifies mail system {setgid_group} group id {gid}"
            ));
        }
        Ok(Self {
            flags,
            uid: ids.uid,
            gid,
            user: name.to_owned(),
            directory,
            eol,
            null_sender,
            size,
            argv,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn debians_maildrop_entry_parses() {
        let a = Attrs::parse(
            &args("flags=DRXhu user=nobody argv=/usr/bin/maildrop -d ${recipient}"),
            "postfix",
            "postdrop",
        )
        .unwrap();
        assert!(
            a.flags.delivered_to && a.flags.return_path && a.flags.fold_host && a.flags.fold_user
        );
        assert_eq!(a.argv, ["/usr/bin/maildrop", "-d", "${recipient}"]);
        assert_eq!(a.eol, b"\n");
        assert_eq!(a.null_sender, "MAILER-DAEMON");
    }

    #[test]
    fn postfixs_refusals() {
        let e = |s: &str| Attrs::parse(&args(s), "postfix", "postdrop").unwrap_err();
        assert_eq!(
            e("flags=F argv=/bin/cat"),
            "missing user= command-line attribute"
        );
        assert_eq!(e("user=nobody"), "missing argv= command-line attribute");
        assert_eq!(
            e("user=root argv=/bin/cat"),
            "user= command-line attribute specifies root privileges"
        );
        assert_eq!(
            e("flags=Z user=nobody argv=/bin/cat"),
            "unknown flag: Z (ignored)"
        );
        assert_eq!(
            e("umask=077 user=nobody argv=/bin/cat"),
            "unknown attribute name: umask=077"
        );
        assert_eq!(
            e("user=nobody size=lots argv=/bin/cat"),
            "get_service_attr: bad size= value: lots"
        );
        assert!(e("user=no-such-user-here argv=/bin/cat").contains("unknown username"));
    }

    #[test]
    fn eol_escapes() {
        assert_eq!(unescape("\\r\\n"), b"\r\n");
        assert_eq!(unescape("\\015\\012x\\\\"), b"\r\nx\\");
    }
}
