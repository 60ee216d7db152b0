//! TSIG (RFC 8945) on queries, as BIND answers them: a query signed with a
//! `key` of named.conf is checked and its answer signed with the same key;
//! an unknown key or algorithm gets NOTAUTH with TSIG error BADKEY, a wrong
//! MAC NOTAUTH with BADSIG (both unsigned), a time outside the fudge a
//! signed NOTAUTH with BADTIME and the server's time.

use pfx_named_conf::controls::{Algorithm, Key};

use crate::control::wire;

const TSIG: u16 = 250;
const ANY: u16 = 255;
const NOTAUTH: u8 = 9;
const BADSIG: u16 = 16;
const BADKEY: u16 = 17;
const BADTIME: u16 = 18;
const FUDGE: u16 = 300;

/// A verified request: what its answer's TSIG needs.
pub(crate) struct Signed {
    key: Key,
    request_mac: Vec<u8>,
    original_id: u16,
    /// BADTIME: the answer is an error, signed, with the server's time.
    error: u16,
}

pub(crate) enum Check {
    /// Not signed.
    None,
    /// Answer it, then sign the answer ([`sign`]).
    Sign(Signed),
    /// Send this instead: an error answer.
    Reply(Vec<u8>),
}

/// The TSIG record of a query, where it starts, and its fields.
struct Record<'a> {
    start: usize,
    key: String,
    algorithm: String,
    /// Algorithm name as on the wire (for the MAC).
    time: u64,
    fudge: u16,
    mac: &'a [u8],
    original_id: u16,
    error: u16,
    other: &'a [u8],
    /// Whether the query had an OPT record (its error answers get one too).
    edns: bool,
}

/// Reads a domain name at `i` (following compression); returns it in
/// lower case with its trailing dot, and where the name ends in place.
fn name(m: &[u8], mut i: usize) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut end = None;
    for _ in 0..128 {
        let len = *m.get(i)? as usize;
        if len & 0xc0 == 0xc0 {
            let ptr = ((len & 0x3f) << 8) | *m.get(i + 1)? as usize;
            end.get_or_insert(i + 2);
            i = ptr;
            continue;
        }
        if len == 0 {
            if out.is_empty() {
                out.push('.');
            }
            return Some((out, end.unwrap_or(i + 1)));
        }
        let label = m.get(i + 1..i + 1 + len)?;
        out.push_str(&String::from_utf8_lossy(label).to_ascii_lowercase());
        out.push('.');
        i += 1 + len;
    }
    None
}

fn u16_at(m: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*m.get(i)?, *m.get(i + 1)?]))
}

/// The query's TSIG record, when its last record is one.
fn find(m: &[u8]) -> Option<Record<'_>> {
    let counts: Vec<u16> = (0..4)
        .map(|k| u16_at(m, 4 + 2 * k))
        .collect::<Option<_>>()?;
    if counts[3] == 0 {
        return None;
    }
    let mut i = 12;
    for _ in 0..counts[0] {
        i = name(m, i)?.1 + 4;
    }
    let records = usize::from(counts[1]) + usize::from(counts[2]) + usize::from(counts[3]);
    let mut start = 0;
    let mut last = None;
    let mut edns = false;
    for _ in 0..records {
        start = i;
        let (owner, after) = name(m, i)?;
        let rtype = u16_at(m, after)?;
        edns |= rtype == 41;
        let rdlen = usize::from(u16_at(m, after + 8)?);
        let rdata = after + 10;
        i = rdata + rdlen;
        last = Some((owner, rtype, rdata, i));
    }
    let (key, rtype, rdata, end) = last?;
    if rtype != TSIG || end != m.len() {
        return None;
    }
    let (algorithm, j) = name(m, rdata)?;
    let time = m
        .get(j..j + 6)?
        .iter()
        .fold(0u64, |t, b| t << 8 | u64::from(*b));
    let fudge = u16_at(m, j + 6)?;
    let mac_len = usize::from(u16_at(m, j + 8)?);
    let mac = m.get(j + 10..j + 10 + mac_len)?;
    let k = j + 10 + mac_len;
    let original_id = u16_at(m, k)?;
    let error = u16_at(m, k + 2)?;
    let other_len = usize::from(u16_at(m, k + 4)?);
    let other = m.get(k + 6..k + 6 + other_len)?;
    Some(Record {
        start,
        key,
        algorithm,
        time,
        fudge,
        mac,
        original_id,
        error,
        other,
        edns,
    })
}

/// A name in canonical wire form (lower case, uncompressed).
fn wire_name(n: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in n.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend(label.to_ascii_lowercase().bytes());
    }
    out.push(0);
    out
}

fn algorithm_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::Md5 => "hmac-md5.sig-alg.reg.int.",
        Algorithm::Sha1 => "hmac-sha1.",
        Algorithm::Sha224 => "hmac-sha224.",
        Algorithm::Sha256 => "hmac-sha256.",
        Algorithm::Sha384 => "hmac-sha384.",
        Algorithm::Sha512 => "hmac-sha512.",
    }
}

/// The TSIG variables the MAC covers after the message.
fn variables(
    key: &str,
    algorithm: &str,
    time: u64,
    fudge: u16,
    error: u16,
    other: &[u8],
) -> Vec<u8> {
    let mut v = wire_name(key);
    v.extend_from_slice(&ANY.to_be_bytes());
    v.extend_from_slice(&0u32.to_be_bytes());
    v.extend(wire_name(algorithm));
    v.extend_from_slice(&time.to_be_bytes()[2..]);
    v.extend_from_slice(&fudge.to_be_bytes());
    v.extend_from_slice(&error.to_be_bytes());
    v.extend_from_slice(&(other.len() as u16).to_be_bytes());
    v.extend_from_slice(other);
    v
}

/// A TSIG record's bytes.
#[allow(clippy::too_many_arguments)]
fn record(
    key: &str,
    algorithm: &str,
    time: u64,
    fudge: u16,
    mac: &[u8],
    id: u16,
    error: u16,
    other: &[u8],
) -> Vec<u8> {
    let mut rdata = wire_name(algorithm);
    rdata.extend_from_slice(&time.to_be_bytes()[2..]);
    rdata.extend_from_slice(&fudge.to_be_bytes());
    rdata.extend_from_slice(&(mac.len() as u16).to_be_bytes());
    rdata.extend_from_slice(mac);
    rdata.extend_from_slice(&id.to_be_bytes());
    rdata.extend_from_slice(&error.to_be_bytes());
    rdata.extend_from_slice(&(other.len() as u16).to_be_bytes());
    rdata.extend_from_slice(other);
    let mut out = wire_name(key);
    out.extend_from_slice(&TSIG.to_be_bytes());
    out.extend_from_slice(&ANY.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend(rdata);
    out
}

/// Checks a query's TSIG against named.conf's keys.
pub(crate) fn check(query: &[u8], keys: &[Key]) -> Check {
    let Some(t) = find(query) else {
        return Check::None;
    };
    let key = keys.iter().find(|k| {
        wire_name(&k.name) == wire_name(&t.key) && algorithm_name(k.algorithm) == t.algorithm
    });
    let Some(key) = key else {
        return Check::Reply(error_answer(query, &t, BADKEY));
    };
    // The MAC covers the query without its TSIG, ARCOUNT one less, the original ID.
    let mut data = query[..t.start].to_vec();
    data[..2].copy_from_slice(&t.original_id.to_be_bytes());
    let ar = u16::from_be_bytes([data[10], data[11]]).saturating_sub(1);
    data[10..12].copy_from_slice(&ar.to_be_bytes());
    data.extend(variables(
        &t.key,
        &t.algorithm,
        t.time,
        t.fudge,
        t.error,
        t.other,
    ));
    let want = wire::mac(key, &data);
    let ok_len = t.mac.len() == want.len() || (t.mac.len() >= 10 && t.mac.len() >= want.len() / 2);
    let same = t.mac.len() <= want.len()
        && t.mac
            .iter()
            .zip(&want)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !ok_len || !same {
        return Check::Reply(error_answer(query, &t, BADSIG));
    }
    let skew = crate::unix_now().abs_diff(t.time);
    Check::Sign(Signed {
        key: key.clone(),
        request_mac: t.mac.to_vec(),
        original_id: t.original_id,
        error: if skew > u64::from(t.fudge) {
            BADTIME
        } else {
            0
        },
    })
}

/// NOTAUTH with an unsigned TSIG naming the error (BADKEY, BADSIG): the
/// question, and the query's OPT record if it had one.
fn error_answer(query: &[u8], t: &Record<'_>, error: u16) -> Vec<u8> {
    let mut out = header_and_question(query);
    out[3] = (out[3] & 0xf0) | NOTAUTH;
    let mut additional = 1u16;
    if t.edns {
        // A minimal OPT like BIND's answers carry (buffer 1232).
        out.extend([0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
        additional += 1;
    }
    out[10..12].copy_from_slice(&additional.to_be_bytes());
    out.extend(record(
        &t.key,
        &t.algorithm,
        t.time,
        t.fudge,
        &[],
        t.original_id,
        error,
        &[],
    ));
    out
}

/// The query's header (made an answer, counts but the question's zeroed)
/// and its question.
fn header_and_question(query: &[u8]) -> Vec<u8> {
    let mut i = 12;
    let qd = u16_at(query, 4).unwrap_or(0);
    for _ in 0..qd {
        match name(query, i) {
            Some((_, after)) => i = after + 4,
            None => break,
        }
    }
    let mut out = query[..i.min(query.len())].to_vec();
    // QR, the opcode and RD; of the rest only CD stays, as BIND answers.
    out[2] = 0x80 | (out[2] & 0x79);
    out[3] &= 0x10;
    out[6..12].fill(0);
    out
}

impl Signed {
    /// Whether the query's time was outside its fudge.
    pub(crate) fn is_badtime(&self) -> bool {
        self.error == BADTIME
    }
}

/// The header and question of a query, made an answer without records.
pub(crate) fn question_only(query: &[u8]) -> Vec<u8> {
    header_and_question(query)
}

/// Signs an encoded answer with the key of its query (RFC 8945 §5.3).
pub(crate) fn sign(mut answer: Vec<u8>, s: &Signed) -> Vec<u8> {
    if answer.len() < 12 {
        return answer;
    }
    let time = crate::unix_now();
    let key_name = format!("{}.", s.key.name.trim_end_matches('.'));
    let alg = algorithm_name(s.key.algorithm);
    let other: Vec<u8> = if s.error == BADTIME {
        answer[3] = (answer[3] & 0xf0) | NOTAUTH;
        time.to_be_bytes()[2..].to_vec()
    } else {
        Vec::new()
    };
    let mut data = (s.request_mac.len() as u16).to_be_bytes().to_vec();
    data.extend_from_slice(&s.request_mac);
    data.extend_from_slice(&answer);
    data.extend(variables(&key_name, alg, time, FUDGE, s.error, &other));
    let mac = wire::mac(&s.key, &data);
    let ar = u16::from_be_bytes([answer[10], answer[11]]).saturating_add(1);
    answer[10..12].copy_from_slice(&ar.to_be_bytes());
    answer.extend(record(
        &key_name,
        alg,
        time,
        FUDGE,
        &mac,
        s.original_id,
        s.error,
        &other,
    ));
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key {
            name: "tsig-key".into(),
            algorithm: Algorithm::Sha256,
            secret: b"0123456789abcdef".to_vec(),
            place: String::new(),
        }
    }

    /// A query for `www.example.com A` signed as a client signs it.
    fn signed_query(k: &Key, time: u64) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend(wire_name("www.example.com."));
        q.extend_from_slice(&[0, 1, 0, 1]);
        let name = format!("{}.", k.name);
        let alg = algorithm_name(k.algorithm);
        let mut data = q.clone();
        data.extend(variables(&name, alg, time, FUDGE, 0, &[]));
        let mac = wire::mac(k, &data);
        q[11] = 1;
        q.extend(record(&name, alg, time, FUDGE, &mac, 0x1234, 0, &[]));
        q
    }

    #[test]
    fn signed_queries_are_checked_and_answers_signed() {
        let q = signed_query(&key(), crate::unix_now());
        let Check::Sign(s) = check(&q, &[key()]) else {
            panic!("not verified")
        };
        assert_eq!(s.error, 0);
        let answer = sign(header_and_question(&q), &s);
        let t = find(&answer).expect("a TSIG on the answer");
        assert_eq!(t.key, "tsig-key.");
        assert_eq!(t.algorithm, "hmac-sha256.");
        assert_eq!(t.mac.len(), 32);
        assert_eq!(t.error, 0);
        // The client's check of the answer: request MAC, answer, variables.
        let mut data = (s.request_mac.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&s.request_mac);
        let mut body = answer[..t.start].to_vec();
        body[11] -= 1;
        data.extend(body);
        data.extend(variables(&t.key, &t.algorithm, t.time, t.fudge, 0, &[]));
        assert_eq!(wire::mac(&key(), &data), t.mac);
    }

    #[test]
    fn unknown_keys_bad_macs_and_old_times_are_errors() {
        let q = signed_query(&key(), crate::unix_now());
        let rcode = |c: Check| match c {
            Check::Reply(a) => (a[3] & 0x0f, find(&a).map(|t| (t.error, t.mac.len()))),
            _ => panic!("answered"),
        };
        let other = Key {
            name: "other".into(),
            ..key()
        };
        assert_eq!(rcode(check(&q, &[other])), (NOTAUTH, Some((BADKEY, 0))));
        let mut wrong = key();
        wrong.secret[0] ^= 1;
        assert_eq!(rcode(check(&q, &[wrong])), (NOTAUTH, Some((BADSIG, 0))));
        let old = signed_query(&key(), crate::unix_now() - 3600);
        let Check::Sign(s) = check(&old, &[key()]) else {
            panic!("not verified")
        };
        assert_eq!(s.error, BADTIME);
        let a = sign(header_and_question(&old), &s);
        assert_eq!(a[3] & 0x0f, NOTAUTH);
        assert_eq!(find(&a).unwrap().other.len(), 6);
        // Unsigned and garbage queries are not TSIG's business.
        assert!(matches!(check(&q[..q.len() - 3], &[key()]), Check::None));
        assert!(matches!(check(b"\x00\x01", &[key()]), Check::None));
    }
}
