//! The control channel's messages, as BIND's rndc and named exchange them
//! (ISC's "command channel" encoding): a 4-byte length, the version (1),
//! then a table of named values: binary strings, nested tables and lists,
//! each with a type byte and a 4-byte length. The first entry of a signed
//! message is `_auth`, the base64 HMAC of everything after it.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use pfx_named_conf::controls::{Algorithm, Key};

const BINARY: u8 = 0x01;
const TABLE: u8 = 0x02;
const LIST: u8 = 0x03;

/// The largest message named reads (BIND's limit too).
pub const MAX_MESSAGE: usize = 32768;

/// Tables nested deeper than this are garbage, not a command.
const MAX_DEPTH: usize = 16;

/// Space for the base64 HMAC of the SHA family (BIND's fixed field).
const HSHA_LEN: usize = 88;
/// The base64 HMAC-MD5 without its `==`.
const HMD5_LEN: usize = 22;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Binary(Vec<u8>),
    Table(Table),
    List(Vec<Self>),
}

/// Named values in the order they came.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table(pub Vec<(String, Value)>);

impl Table {
    /// The value of `key`; of a key given twice the last, as BIND's
    /// tables keep it (read messages are not de-duplicated: that would
    /// cost quadratic time before the MAC is checked).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn table(&self, key: &str) -> Option<&Self> {
        match self.get(key) {
            Some(Value::Table(t)) => Some(t),
            _ => None,
        }
    }

    pub fn text(&self, key: &str) -> Option<String> {
        match self.get(key) {
            Some(Value::Binary(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    /// A number written as decimal text, as the protocol carries them.
    pub fn number(&self, key: &str) -> Option<u32> {
        self.text(key).and_then(|t| t.trim().parse().ok())
    }

    /// Sets `key` (replacing an earlier value) to a text.
    pub fn set(&mut self, key: &str, value: impl Into<Vec<u8>>) {
        self.put(key, Value::Binary(value.into()));
    }

    pub fn put(&mut self, key: &str, value: Value) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key.to_owned(), value)),
        }
    }
}

/// Why a message was not taken, in BIND's words (named logs
/// "invalid command from ADDR: REASON").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    UnexpectedEnd,
    UnknownVersion,
    Syntax,
    BadAuth,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::UnexpectedEnd => "unexpected end of input",
            Self::UnknownVersion => "unknown version",
            Self::Syntax => "syntax error",
            Self::BadAuth => "bad auth",
        })
    }
}

/// A whole message for the wire, length first, signed with `key`.
pub fn encode(msg: &Table, key: &Key) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in msg.0.iter().filter(|(k, _)| k != "_auth") {
        put_entry(&mut body, k, v);
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(mac(key, &body));
    let hmac = match key.algorithm {
        Algorithm::Md5 => b64.as_bytes()[..HMD5_LEN].to_vec(),
        alg => {
            let mut field = vec![alg.number()];
            field.extend_from_slice(b64.as_bytes());
            field.resize(1 + HSHA_LEN, 0);
            field
        }
    };
    let name = if key.algorithm == Algorithm::Md5 {
        "hmd5"
    } else {
        "hsha"
    };
    let auth = Table(vec![(name.to_owned(), Value::Binary(hmac))]);
    let mut out = vec![0; 4];
    out.extend_from_slice(&1u32.to_be_bytes());
    put_entry(&mut out, "_auth", &Value::Table(auth));
    out.extend_from_slice(&body);
    let len = u32::try_from(out.len() - 4).unwrap_or(u32::MAX);
    out[..4].copy_from_slice(&len.to_be_bytes());
    out
}

/// Reads a message (what follows its length) and checks that `key` signed it.
pub fn decode(msg: &[u8], key: &Key) -> Result<Table, WireError> {
    let (version, rest) = split(msg, 4)?;
    if u32::from_be_bytes(version.try_into().unwrap_or_default()) != 1 {
        return Err(WireError::UnknownVersion);
    }
    let mut signed = None;
    let mut table = Table::default();
    let mut src = rest;
    while !src.is_empty() {
        let (k, v, after) = entry(src, 0)?;
        if table.0.is_empty() && k == "_auth" {
            signed = Some(after);
        }
        table.0.push((k, v));
        src = after;
    }
    // The signature is the first entry and covers all that follows it.
    let (Some(signed), Some((_, Value::Table(auth)))) = (signed, table.0.first()) else {
        return Err(WireError::BadAuth);
    };
    let b64 = base64::engine::general_purpose::STANDARD.encode(mac(key, signed));
    let good = match (key.algorithm, auth.get("hmd5"), auth.get("hsha")) {
        (Algorithm::Md5, Some(Value::Binary(v)), _) => {
            v.len() == HMD5_LEN && same(v, &b64.as_bytes()[..HMD5_LEN])
        }
        (alg, _, Some(Value::Binary(v))) if alg != Algorithm::Md5 => {
            let mut want = b64.into_bytes();
            want.resize(HSHA_LEN, 0);
            v.len() == 1 + HSHA_LEN && v[0] == alg.number() && same(&v[1..], &want)
        }
        _ => false,
    };
    if good {
        Ok(table)
    } else {
        Err(WireError::BadAuth)
    }
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The HMAC of `data` under `key` (also TSIG's, tsig.rs).
pub(crate) fn mac(key: &Key, data: &[u8]) -> Vec<u8> {
    fn run<M: Mac + KeyInit>(secret: &[u8], data: &[u8]) -> Vec<u8> {
        // HMAC takes keys of any length.
        let mut m = <M as KeyInit>::new_from_slice(secret).expect("HMAC accepts any key length");
        m.update(data);
        m.finalize().into_bytes().to_vec()
    }
    let s = &key.secret;
    match key.algorithm {
        Algorithm::Md5 => run::<Hmac<md5::Md5>>(s, data),
        Algorithm::Sha1 => run::<Hmac<sha1::Sha1>>(s, data),
        Algorithm::Sha224 => run::<Hmac<sha2::Sha224>>(s, data),
        Algorithm::Sha256 => run::<Hmac<sha2::Sha256>>(s, data),
        Algorithm::Sha384 => run::<Hmac<sha2::Sha384>>(s, data),
        Algorithm::Sha512 => run::<Hmac<sha2::Sha512>>(s, data),
    }
}

fn put_entry(out: &mut Vec<u8>, key: &str, value: &Value) {
    let k = &key.as_bytes()[..key.len().min(255)];
    out.push(k.len() as u8);
    out.extend_from_slice(k);
    put_value(out, value);
}

fn put_value(out: &mut Vec<u8>, value: &Value) {
    let start = out.len();
    out.extend_from_slice(&[0; 5]);
    out[start] = match value {
        Value::Binary(b) => {
            out.extend_from_slice(b);
            BINARY
        }
        Value::Table(t) => {
            for (k, v) in &t.0 {
                put_entry(out, k, v);
            }
            TABLE
        }
        Value::List(l) => {
            for v in l {
                put_value(out, v);
            }
            LIST
        }
    };
    let len = u32::try_from(out.len() - start - 5).unwrap_or(u32::MAX);
    out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

fn split(src: &[u8], n: usize) -> Result<(&[u8], &[u8]), WireError> {
    if src.len() < n {
        return Err(WireError::UnexpectedEnd);
    }
    Ok(src.split_at(n))
}

/// One `name value` entry of a table; returns it and what follows.
fn entry(src: &[u8], depth: usize) -> Result<(String, Value, &[u8]), WireError> {
    let (len, rest) = split(src, 1)?;
    let (name, rest) = split(rest, len[0] as usize)?;
    let (value, rest) = value(rest, depth)?;
    Ok((String::from_utf8_lossy(name).into_owned(), value, rest))
}

fn value(src: &[u8], depth: usize) -> Result<(Value, &[u8]), WireError> {
    if depth > MAX_DEPTH {
        return Err(WireError::Syntax);
    }
    let (head, rest) = split(src, 5)?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let (mut data, rest) = split(rest, len)?;
    let v = match head[0] {
        BINARY => Value::Binary(data.to_vec()),
        TABLE => {
            let mut t = Table::default();
            while !data.is_empty() {
                let (k, v, after) = entry(data, depth + 1)?;
                t.0.push((k, v));
                data = after;
            }
            Value::Table(t)
        }
        LIST => {
            let mut l = Vec::new();
            while !data.is_empty() {
                let (v, after) = value(data, depth + 1)?;
                l.push(v);
                data = after;
            }
            Value::List(l)
        }
        _ => return Err(WireError::Syntax),
    };
    Ok((v, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(algorithm: Algorithm) -> Key {
        Key {
            name: "rndc-key".into(),
            algorithm,
            digest_bits: algorithm.bits(),
            secret: b"0123456789abcdef0123456789abcdef".to_vec(),
            place: String::new(),
        }
    }

    fn message() -> Table {
        let mut ctrl = Table::default();
        ctrl.set("_ser", "7");
        ctrl.set("_tim", "1800000000");
        let mut data = Table::default();
        data.set("type", "reload example.com");
        Table(vec![
            ("_ctrl".into(), Value::Table(ctrl)),
            ("_data".into(), Value::Table(data)),
            (
                "list".into(),
                Value::List(vec![Value::Binary(b"x".to_vec())]),
            ),
        ])
    }

    #[test]
    fn signed_messages_round_trip_under_every_algorithm() {
        for alg in [
            Algorithm::Md5,
            Algorithm::Sha1,
            Algorithm::Sha224,
            Algorithm::Sha256,
            Algorithm::Sha384,
            Algorithm::Sha512,
        ] {
            let wire = encode(&message(), &key(alg));
            let len = u32::from_be_bytes(wire[..4].try_into().unwrap()) as usize;
            assert_eq!(len, wire.len() - 4);
            let back = decode(&wire[4..], &key(alg)).unwrap();
            assert_eq!(
                back.table("_data").unwrap().text("type").as_deref(),
                Some("reload example.com")
            );
            assert_eq!(back.table("_ctrl").unwrap().number("_ser"), Some(7));
        }
    }

    #[test]
    fn the_sha256_auth_field_is_binds() {
        // _auth { hsha: <alg 163><88 bytes: base64 of the HMAC, NUL padded> }
        let wire = encode(&message(), &key(Algorithm::Sha256));
        assert_eq!(&wire[4..8], &[0, 0, 0, 1]);
        assert_eq!(&wire[8..14], b"\x05_auth");
        assert_eq!(&wire[14..19], &[TABLE, 0, 0, 0, 99]);
        assert_eq!(&wire[19..24], b"\x04hsha");
        assert_eq!(&wire[24..29], &[BINARY, 0, 0, 0, 89]);
        assert_eq!(wire[29], 163);
        assert_eq!(wire[29 + 1 + 44], b'\0');
        assert_eq!(wire[29 + 44], b'=');
    }

    #[test]
    fn tampering_a_wrong_key_and_garbage_are_refused() {
        let mut wire = encode(&message(), &key(Algorithm::Sha256));
        let mut other = key(Algorithm::Sha256);
        other.secret[0] ^= 1;
        assert_eq!(decode(&wire[4..], &other), Err(WireError::BadAuth));
        assert_eq!(
            decode(&wire[4..], &key(Algorithm::Sha512)),
            Err(WireError::BadAuth)
        );
        let last = wire.len() - 1;
        wire[last] ^= 1;
        assert_eq!(
            decode(&wire[4..], &key(Algorithm::Sha256)),
            Err(WireError::BadAuth)
        );
        let k = key(Algorithm::Sha256);
        assert_eq!(decode(b"", &k), Err(WireError::UnexpectedEnd));
        assert_eq!(decode(&[0, 0, 0, 2], &k), Err(WireError::UnknownVersion));
        assert_eq!(
            decode(
                &[0, 0, 0, 1, 5, b'_', b'a', b'u', b't', b'h', 9, 0, 0, 0, 0],
                &k
            ),
            Err(WireError::Syntax)
        );
        assert_eq!(
            decode(&[0, 0, 0, 1, 3, b'a', b'b', b'c', 1, 0, 0, 1, 0], &k),
            Err(WireError::UnexpectedEnd)
        );
        // An unsigned message is not taken.
        let mut unsigned = vec![0, 0, 0, 1];
        put_entry(&mut unsigned, "_data", &Value::Table(Table::default()));
        assert_eq!(decode(&unsigned, &k), Err(WireError::BadAuth));
        // Deep nesting is refused, not followed.
        let mut deep = Value::Binary(vec![]);
        for _ in 0..100 {
            deep = Value::List(vec![deep]);
        }
        let mut nested = vec![0, 0, 0, 1];
        put_entry(&mut nested, "x", &deep);
        assert_eq!(decode(&nested, &k), Err(WireError::Syntax));
    }

    #[test]
    fn a_key_given_twice_reads_as_its_last_value() {
        let k = key(Algorithm::Sha256);
        let mut msg = message();
        msg.0
            .push(("_data".into(), Value::Binary(b"again".to_vec())));
        let wire = encode(&msg, &k);
        let back = decode(&wire[4..], &k).unwrap();
        assert_eq!(back.text("_data").as_deref(), Some("again"));
    }
}
