//! `key` and `controls` statements, and the `rndc.key` file: who may drive
//! named over its control channel (rndc), and with which shared secret.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use base64::Engine;

use crate::acl::Acl;
use crate::conf::{io_reason, read_statements, Builder, Error, Item, Stmt};

/// The control channel's port when `controls` names none (BIND's 953).
pub const CONTROL_PORT: u16 = 953;

/// Where BIND (and named without a `controls` statement, or with an `inet`
/// clause that names no keys) reads the control channel's key.
pub const RNDC_KEY_FILE: &str = "/etc/bind/rndc.key";

/// The HMAC algorithms of BIND's `key` statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl Algorithm {
    /// BIND's names, with or without a truncation suffix (`hmac-sha256-128`).
    pub fn from_name(name: &str) -> Option<Self> {
        let lower = name.to_ascii_lowercase();
        let base = match lower.rsplit_once('-') {
            Some((b, bits)) if bits.chars().all(|c| c.is_ascii_digit()) && b.contains("sha") => b,
            Some((b, bits)) if bits.chars().all(|c| c.is_ascii_digit()) && b == "hmac-md5" => b,
            _ => &lower,
        };
        Some(match base {
            "hmac-md5" | "hmac-md5.sig-alg.reg.int" | "hmac-md5.sig-alg.reg.int." => Self::Md5,
            "hmac-sha1" => Self::Sha1,
            "hmac-sha224" => Self::Sha224,
            "hmac-sha256" => Self::Sha256,
            "hmac-sha384" => Self::Sha384,
            "hmac-sha512" => Self::Sha512,
            _ => return None,
        })
    }

    /// The size of its MAC in bits.
    pub fn bits(self) -> u16 {
        match self {
            Self::Md5 => 128,
            Self::Sha1 => 160,
            Self::Sha224 => 224,
            Self::Sha256 => 256,
            Self::Sha384 => 384,
            Self::Sha512 => 512,
        }
    }

    /// The number the control protocol carries (BIND's DST algorithm number).
    pub fn number(self) -> u8 {
        match self {
            Self::Md5 => 157,
            Self::Sha1 => 161,
            Self::Sha224 => 162,
            Self::Sha256 => 163,
            Self::Sha384 => 164,
            Self::Sha512 => 165,
        }
    }
}

/// One `key "name" { algorithm ...; secret "..."; };`.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    pub name: String,
    pub algorithm: Algorithm,
    /// How many bits of the MAC a TSIG signed with it carries: the
    /// algorithm's size, or less when named as `hmac-sha256-128`.
    pub digest_bits: u16,
    pub secret: Vec<u8>,
    /// `FILE:LINE` of the statement.
    pub place: String,
}

// The secret never goes into a log or a debug print.
impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("place", &self.place)
            .finish_non_exhaustive()
    }
}

/// One `inet ADDRESS [port N] allow { list } [keys { names }] [read-only yes];`
/// of a `controls` statement.
#[derive(Debug, Clone, PartialEq)]
pub struct Control {
    pub address: SocketAddr,
    pub allow: Acl,
    /// `None`: no `keys` clause, the key of [`RNDC_KEY_FILE`] is used.
    pub keys: Option<Vec<String>>,
    /// Only `status`, `zonestatus`, `showzone` and `null` are obeyed.
    pub read_only: bool,
    pub place: String,
}

impl Control {
    /// The channels BIND opens when named.conf has no `controls` statement:
    /// 127.0.0.1 and ::1, port 953, anyone who can reach them, rndc.key's key.
    pub fn defaults() -> Vec<Self> {
        [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ]
        .into_iter()
        .map(|ip| Self {
            address: SocketAddr::new(ip, CONTROL_PORT),
            allow: Acl::any(),
            keys: None,
            read_only: false,
            place: String::new(),
        })
        .collect()
    }
}

/// Reads a key file as `rndc-confgen -a` writes it (`rndc.key`): `key` statements only.
pub fn load_key_file(path: &Path) -> Result<Vec<Key>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Open {
        file: path.to_owned(),
        reason: io_reason(&e),
    })?;
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut statements = Vec::new();
    read_statements(path, &text, &base, &mut statements, 0)?;
    let mut keys: Vec<Key> = Vec::new();
    for s in &statements {
        match s.keyword().unwrap_or_default() {
            "key" => add_key(&mut keys, s)?,
            other => return Err(s.error(&format!("unknown option '{other}'"))),
        }
    }
    Ok(keys)
}

/// Adds the key of a `key` statement; a name used twice is an error as in BIND.
pub(crate) fn add_key(keys: &mut Vec<Key>, s: &Stmt) -> Result<(), Error> {
    let k = key(s)?;
    if let Some(prev) = keys.iter().find(|p| p.name == k.name) {
        return Err(s.error(&format!(
            "key '{}': already exists previous definition: {}",
            k.name, prev.place
        )));
    }
    keys.push(k);
    Ok(())
}

fn key(s: &Stmt) -> Result<Key, Error> {
    let name = match s.items.as_slice() {
        [_, Item::Word(n), Item::Block(_)] => n.trim_end_matches('.').to_owned(),
        _ => return Err(s.error("expected: key \"NAME\" { algorithm ALG; secret \"...\"; };")),
    };
    let mut algorithm = None;
    let mut secret = None;
    for opt in s.block()? {
        match opt.keyword().unwrap_or_default() {
            "algorithm" => {
                let a = opt.single()?;
                algorithm = Some(key_algorithm(a, &name).map_err(|e| opt.error(&e))?);
            }
            "secret" => {
                let text: String = opt.single()?.split_whitespace().collect();
                secret = Some(
                    base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .map_err(|_| opt.error("bad base64 encoding"))?,
                );
            }
            other => return Err(opt.error(&format!("key '{name}': unknown option '{other}'"))),
        }
    }
    match (algorithm, secret) {
        (Some((algorithm, digest_bits)), Some(secret)) => Ok(Key {
            name,
            algorithm,
            digest_bits,
            secret,
            place: s.place(),
        }),
        _ => Err(s.error(&format!(
            "key '{name}' must have both 'secret' and 'algorithm' defined"
        ))),
    }
}

/// A key's algorithm and its digest bits, checked as BIND checks them:
/// `hmac-sha256-128` keeps 128 bits of the MAC, a multiple of 8 no
/// larger than the algorithm's.
fn key_algorithm(text: &str, name: &str) -> Result<(Algorithm, u16), String> {
    let algorithm =
        Algorithm::from_name(text).ok_or(format!("key '{name}': unknown algorithm '{text}'"))?;
    let full = algorithm.bits();
    let suffix = text
        .rsplit_once('-')
        .map(|(_, b)| b)
        .filter(|b| !b.is_empty() && b.chars().all(|c| c.is_ascii_digit()));
    let Some(suffix) = suffix else {
        return Ok((algorithm, full));
    };
    match suffix.parse::<u16>() {
        Ok(bits) if bits <= full && bits % 8 == 0 => Ok((algorithm, bits)),
        Ok(bits) if bits <= full => Err(format!("key '{name}' digest-bits not multiple of 8")),
        _ => Err(format!(
            "key '{name}' digest-bits too large [{}..{full}]",
            full / 2
        )),
    }
}

/// The clauses of one `controls { ... };` statement.
pub(crate) fn controls(b: &Builder, s: &Stmt) -> Result<Vec<Control>, Error> {
    let mut out = Vec::new();
    for clause in s.block()? {
        match clause.keyword().unwrap_or_default() {
            "inet" => out.push(inet(b, clause)?),
            // BIND 9.18 refuses them the same way.
            "unix" => return Err(clause.error("UNIX domain sockets not yet supported")),
            other => return Err(clause.error(&format!("unknown option '{other}'"))),
        }
    }
    Ok(out)
}

fn inet(b: &Builder, s: &Stmt) -> Result<Control, Error> {
    let usage = || {
        s.error("expected: inet ADDRESS [port N] allow { ... } [keys { ... }] [read-only BOOL];")
    };
    let mut items = s.items.iter().skip(1);
    let ip: IpAddr = match items.next() {
        Some(Item::Word(w)) if w == "*" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Some(Item::Word(w)) => w
            .parse()
            .map_err(|_| s.error(&format!("'{w}' is not an IP address")))?,
        _ => return Err(usage()),
    };
    let mut port = CONTROL_PORT;
    let mut allow = None;
    let mut keys = None;
    let mut read_only = false;
    while let Some(item) = items.next() {
        match (item, items.next()) {
            (Item::Word(w), Some(Item::Word(n))) if w == "port" => {
                port = match n.as_str() {
                    "*" => CONTROL_PORT,
                    n => n
                        .parse()
                        .map_err(|_| s.error(&format!("invalid port '{n}'")))?,
                };
            }
            (Item::Word(w), Some(Item::Block(list))) if w == "allow" => {
                allow = Some(b.address_list(list, false)?);
            }
            (Item::Word(w), Some(Item::Block(list))) if w == "keys" => {
                keys = Some(
                    list.iter()
                        .map(|k| k.word(0).trim_end_matches('.').to_owned())
                        .collect(),
                );
            }
            (Item::Word(w), Some(Item::Word(v))) if w == "read-only" => {
                read_only = match v.as_str() {
                    "yes" | "true" | "1" => true,
                    "no" | "false" | "0" => false,
                    v => {
                        return Err(s.error(&format!("'read-only': expected yes or no, not '{v}'")))
                    }
                };
            }
            _ => return Err(usage()),
        }
    }
    let Some(allow) = allow else {
        return Err(s.error("inet: missing 'allow' clause"));
    };
    Ok(Control {
        address: SocketAddr::new(ip, port),
        allow,
        keys,
        read_only,
        place: s.place(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::parse;

    fn conf(text: &str) -> Result<crate::conf::NamedConf, Error> {
        parse(Path::new("/etc/bind/named.conf"), text)
    }

    #[test]
    fn controls_and_keys_as_rndc_confgen_prints_them() {
        let c = conf(
            "key \"rndc-key\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0\";\n};\n\
             controls {\n inet 127.0.0.1 port 9953\n  allow { 127.0.0.1; } keys { \"rndc-key\"; };\n\
             inet ::1 allow { any; } read-only yes;\n inet * port * allow { none; };\n};\n",
        )
        .unwrap();
        assert_eq!(c.keys.len(), 1);
        assert_eq!(c.keys[0].name, "rndc-key");
        assert_eq!(c.keys[0].algorithm, Algorithm::Sha256);
        assert_eq!(c.keys[0].secret, b"secret");
        assert_eq!(c.keys[0].digest_bits, 256);
        let short = conf("key \"k\" { algorithm hmac-sha512-264; secret \"c2VjcmV0\"; };").unwrap();
        assert_eq!(
            (short.keys[0].algorithm, short.keys[0].digest_bits),
            (Algorithm::Sha512, 264)
        );
        assert!(!format!("{:?}", c.keys[0]).contains("secret: "));
        let ctl = c.controls.unwrap();
        assert_eq!(ctl.len(), 3);
        assert_eq!(ctl[0].address, "127.0.0.1:9953".parse().unwrap());
        assert_eq!(ctl[0].keys, Some(vec!["rndc-key".to_owned()]));
        assert!(!ctl[0].read_only);
        assert_eq!(ctl[1].address, "[::1]:953".parse().unwrap());
        assert_eq!(ctl[1].keys, None);
        assert!(ctl[1].read_only);
        assert_eq!(ctl[2].address, "0.0.0.0:953".parse().unwrap());
        assert!(conf("").unwrap().controls.is_none());
        assert_eq!(conf("controls { };").unwrap().controls, Some(vec![]));
    }

    #[test]
    fn bad_keys_and_controls_name_file_and_line() {
        let cases = [
            ("key \"k\" {\n algorithm hmac-sha256;\n secret \"%%%\";\n};", "/etc/bind/named.conf:3: bad base64 encoding"),
            ("key \"k\" { secret \"c2VjcmV0\"; };", "/etc/bind/named.conf:1: key 'k' must have both 'secret' and 'algorithm' defined"),
            ("key \"k\" { algorithm rot13; secret \"c2VjcmV0\"; };", "/etc/bind/named.conf:1: key 'k': unknown algorithm 'rot13'"),
            ("key k { algorithm hmac-md5; secret \"c2VjcmV0\"; };\nkey k { algorithm hmac-md5; secret \"c2VjcmV0\"; };",
             "/etc/bind/named.conf:2: key 'k': already exists previous definition: /etc/bind/named.conf:1"),
            ("key \"k\" { algorithm hmac-sha256-512; secret \"c2VjcmV0\"; };", "/etc/bind/named.conf:1: key 'k' digest-bits too large [128..256]"),
            ("key \"k\" { algorithm hmac-sha1-84; secret \"c2VjcmV0\"; };", "/etc/bind/named.conf:1: key 'k' digest-bits not multiple of 8"),
            ("controls {\n unix \"/run/x\" perm 0600 owner 0 group 0;\n};", "/etc/bind/named.conf:2: UNIX domain sockets not yet supported"),
            ("controls { inet 127.0.0.1 keys { k; }; };", "/etc/bind/named.conf:1: inet: missing 'allow' clause"),
            ("controls { inet bogus allow { any; }; };", "/etc/bind/named.conf:1: 'bogus' is not an IP address"),
        ];
        for (text, want) in cases {
            assert_eq!(conf(text).unwrap_err().to_string(), want, "{text}");
        }
    }

    #[test]
    fn algorithm_names() {
        assert_eq!(Algorithm::from_name("HMAC-SHA512"), Some(Algorithm::Sha512));
        assert_eq!(
            Algorithm::from_name("hmac-sha256-128"),
            Some(Algorithm::Sha256)
        );
        assert_eq!(
            Algorithm::from_name("hmac-md5.sig-alg.reg.int"),
            Some(Algorithm::Md5)
        );
        assert_eq!(Algorithm::from_name("hmac-sha3"), None);
        assert_eq!(Algorithm::Sha256.number(), 163);
    }

    #[test]
    fn key_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("rndc.key");
        std::fs::write(
            &f,
            "key \"rndc-key\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0\";\n};\n",
        )
        .unwrap();
        let keys = load_key_file(&f).unwrap();
        assert_eq!(keys[0].name, "rndc-key");
        std::fs::write(&f, "options { };").unwrap();
        assert_eq!(
            load_key_file(&f).unwrap_err().to_string(),
            format!("{}:1: unknown option 'options'", f.display())
        );
        assert!(load_key_file(&dir.path().join("none"))
            .unwrap_err()
            .to_string()
            .ends_with("none: file not found"));
    }
}
