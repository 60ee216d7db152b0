//! TSIG (RFC 8945) on queries, as BIND answers them: a query signed with a
//! `key` of named.conf is checked and its answer signed with the same key;
//! an unknown key or algorithm gets NOTAUTH with TSIG error BADKEY, a wrong
//! MAC NOTAUTH with BADSIG (both unsigned), a time outside the fudge a
//! signed NOTAUTH with BADTIME and the server's time, a MAC cut shorter
//! than the key's digest bits a signed NOTAUTH with BADTRUNC, and a MAC
//! longer than the algorithm's or shorter than half of it (or 10 bytes)
//! FORMERR with an unsigned BADSIG. Answers carry as much of the MAC as the key's digest
//! bits say (`hmac-sha256-128`), or as the query's, if longer.

use pfx_named_conf::controls::{Algorithm, Key};

use crate::control::wire;

const TSIG: u16 = 250;
const ANY: u16 = 255;
const FORMERR: u8 = 1;
const NOTAUTH: u8 = 9;
const BADSIG: u16 = 16;
const BADKEY: u16 = 17;
const BADTIME: u16 = 18;
const BADTRUNC: u16 = 22;
const FUDGE: u16 = 300;

/// A verified request: what its answer's TSIG needs.
pub(crate) struct Signed {
    key: Key,
    request_mac: Vec<u8>,
    original_id: u16,
    /// BADTIME or BADTRUNC: the answer is an error (NOTAUTH), signed.
    error: u16,
    /// Whether the query had an OPT record (an error answer gets one too).
    edns: bool,
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

impl Record<'_> {
    /// Its TSIG variables, as the MAC covers them.
    fn variables(&self) -> Vec<u8> {
        variables(
            &self.key,
            &self.algorithm,
            self.time,
            self.fudge,
            self.error,
            self.other,
        )
    }
}

/// A signed message as its MAC covers it: without its TSIG record,
/// ARCOUNT one less, the original ID.
fn unsigned_form(m: &[u8], t: &Record<'_>) -> Vec<u8> {
    let mut data = m[..t.start].to_vec();
    data[..2].copy_from_slice(&t.original_id.to_be_bytes());
    let ar = u16::from_be_bytes([data[10], data[11]]).saturating_sub(1);
    data[10..12].copy_from_slice(&ar.to_be_bytes());
    data
}

/// Whether a MAC cut to `len` bytes is long enough (RFC 8945 §5.2.2.1:
/// 10 bytes and half the algorithm's `full` size).
fn long_enough(len: usize, full: usize) -> bool {
    len >= 10 && len >= full.div_ceil(2)
}

/// Whether `mac` is the start of `want`, compared without stopping at
/// the first difference.
fn mac_matches(mac: &[u8], want: &[u8]) -> bool {
    mac.len() <= want.len() && mac.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
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
    let mut data = unsigned_form(query, &t);
    data.extend(t.variables());
    let full = usize::from(key.algorithm.bits() / 8);
    let mut signed = Signed {
        key: key.clone(),
        request_mac: t.mac.to_vec(),
        original_id: t.original_id,
        error: 0,
        edns: t.edns,
    };
    let len = t.mac.len();
    if len > full || (len > 0 && !long_enough(len, full)) {
        let mut answer = error_answer(query, &t, BADSIG);
        answer[3] = (answer[3] & 0xf0) | FORMERR;
        return Check::Reply(answer);
    }
    if len == 0 || !mac_matches(t.mac, &wire::mac(key, &data)) {
        return Check::Reply(error_answer(query, &t, BADSIG));
    }
    let skew = crate::unix_now().abs_diff(t.time);
    if skew > u64::from(t.fudge) {
        signed.error = BADTIME;
    } else if len < usize::from(key.digest_bits).div_ceil(8) {
        signed.error = BADTRUNC;
    }
    Check::Sign(signed)
}

/// NOTAUTH with an unsigned TSIG naming the error (BADKEY, BADSIG): the
/// question, and the query's OPT record if it had one.
fn error_answer(query: &[u8], t: &Record<'_>, error: u16) -> Vec<u8> {
    let mut out = question_with_opt(query, t.edns);
    out[3] = (out[3] & 0xf0) | NOTAUTH;
    let additional = u16::from_be_bytes([out[10], out[11]]) + 1;
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
    /// The signed error answer (BADTIME, BADTRUNC) the query gets
    /// instead of its records, if it gets one.
    pub(crate) fn error_answer(&self, query: &[u8]) -> Option<Vec<u8>> {
        (self.error != 0).then(|| sign(question_with_opt(query, self.edns), self))
    }

    /// The name of the key that signed the query.
    pub(crate) fn key_name(&self) -> &str {
        &self.key.name
    }

    /// How many bytes of the MAC the answer carries.
    fn mac_len(&self) -> usize {
        let full = usize::from(self.key.algorithm.bits() / 8);
        usize::from(self.key.digest_bits)
            .div_ceil(8)
            .max(self.request_mac.len())
            .min(full)
    }

    /// How long the TSIG record that signs the answer is: room the
    /// answer must leave in the client's buffer.
    pub(crate) fn record_len(&self) -> usize {
        let other = if self.error == BADTIME { 6 } else { 0 };
        wire_name(&self.key.name).len()
            + 10
            + wire_name(algorithm_name(self.key.algorithm)).len()
            + 16
            + self.mac_len()
            + other
    }
}

/// The header and question of a query, made an answer without records,
/// with a minimal OPT like BIND's answers carry (buffer 1232) when the
/// query had one.
fn question_with_opt(query: &[u8], edns: bool) -> Vec<u8> {
    let mut out = header_and_question(query);
    if edns {
        out.extend([0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
        out[10..12].copy_from_slice(&1u16.to_be_bytes());
    }
    out
}

/// Signs an encoded answer with the key of its query (RFC 8945 §5.3).
pub(crate) fn sign(answer: Vec<u8>, s: &Signed) -> Vec<u8> {
    sign_with(answer, s, &s.request_mac, true).0
}

/// Signs a request named sends (NOTIFY, SOA, transfers) with `key`
/// (RFC 8945 §4.2): the MAC covers the message and the TSIG variables.
pub(crate) fn sign_request(msg: Vec<u8>, key: &Key) -> Vec<u8> {
    sign_request_mac(msg, key).0
}

/// [`sign_request`], with the MAC the answer's will be made over.
pub(crate) fn sign_request_mac(mut msg: Vec<u8>, key: &Key) -> (Vec<u8>, Vec<u8>) {
    if msg.len() < 12 {
        return (msg, Vec::new());
    }
    let time = crate::unix_now();
    let key_name = format!("{}.", key.name.trim_end_matches('.'));
    let alg = algorithm_name(key.algorithm);
    let mut data = msg.clone();
    data.extend(variables(&key_name, alg, time, FUDGE, 0, &[]));
    let mut mac = wire::mac(key, &data);
    mac.truncate(usize::from(key.digest_bits).div_ceil(8).max(10));
    let id = u16::from_be_bytes([msg[0], msg[1]]);
    let ar = u16::from_be_bytes([msg[10], msg[11]]).saturating_add(1);
    msg[10..12].copy_from_slice(&ar.to_be_bytes());
    msg.extend(record(&key_name, alg, time, FUDGE, &mac, id, 0, &[]));
    (msg, mac)
}

/// Checks the answers to a request named signed (RFC 8945 §5.3.1): the
/// first over the request's MAC and all of the TSIG variables, each next
/// signed one over the MAC before it, the unsigned messages between
/// them and the timers. Messages are given in order; the last must be
/// signed ([`Verifier::done`]).
pub(crate) struct Verifier {
    key: Key,
    prior: Vec<u8>,
    unsigned: Vec<u8>,
    first: bool,
}

impl Verifier {
    pub(crate) fn new(key: Key, request_mac: Vec<u8>) -> Self {
        Self {
            key,
            prior: request_mac,
            unsigned: Vec::new(),
            first: true,
        }
    }

    /// Takes the next answer; an error says why it cannot be trusted.
    pub(crate) fn next(&mut self, m: &[u8]) -> Result<(), String> {
        let Some(t) = find(m) else {
            if self.first {
                return Err("expected a TSIG".into());
            }
            self.unsigned.extend_from_slice(m);
            return Ok(());
        };
        if wire_name(&t.key) != wire_name(&self.key.name)
            || t.algorithm != algorithm_name(self.key.algorithm)
        {
            return Err(format!("signed with key '{}'", t.key.trim_end_matches('.')));
        }
        if t.error != 0 {
            return Err(format!("TSIG error {}", t.error));
        }
        let body = unsigned_form(m, &t);
        let mut data = (self.prior.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&self.prior);
        data.append(&mut self.unsigned);
        data.extend(body);
        if self.first {
            data.extend(t.variables());
        } else {
            data.extend_from_slice(&t.time.to_be_bytes()[2..]);
            data.extend_from_slice(&t.fudge.to_be_bytes());
        }
        let full = usize::from(self.key.algorithm.bits() / 8);
        let len = t.mac.len();
        if len > full
            || !long_enough(len, full)
            || !mac_matches(t.mac, &wire::mac(&self.key, &data))
        {
            return Err("tsig verify failure".into());
        }
        if crate::unix_now().abs_diff(t.time) > u64::from(t.fudge) {
            return Err("tsig time out of range".into());
        }
        self.prior = t.mac.to_vec();
        self.first = false;
        Ok(())
    }

    /// Whether the last message was signed (nothing unsigned is left).
    pub(crate) fn done(&self) -> Result<(), String> {
        if self.first || !self.unsigned.is_empty() {
            return Err("last message not signed".into());
        }
        Ok(())
    }
}

/// Signs the messages of a zone transfer (RFC 8945 §5.3.1): the first as
/// any answer, each next one over the MAC before it, the message and the
/// timers only.
pub(crate) fn sign_all(messages: Vec<Vec<u8>>, s: &Signed) -> Vec<Vec<u8>> {
    let mut prior = s.request_mac.clone();
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.into_iter().enumerate() {
        let (signed, mac) = sign_with(m, s, &prior, i == 0);
        prior = mac;
        out.push(signed);
    }
    out
}

/// Adds the TSIG record; returns the message and its MAC. `prior` is the
/// request's MAC, or the previous message's; `full` covers all of the
/// TSIG variables, else only the time and fudge.
fn sign_with(mut answer: Vec<u8>, s: &Signed, prior: &[u8], full: bool) -> (Vec<u8>, Vec<u8>) {
    if answer.len() < 12 {
        return (answer, Vec::new());
    }
    let time = crate::unix_now();
    let key_name = format!("{}.", s.key.name.trim_end_matches('.'));
    let alg = algorithm_name(s.key.algorithm);
    if s.error != 0 {
        answer[3] = (answer[3] & 0xf0) | NOTAUTH;
    }
    let other: Vec<u8> = if s.error == BADTIME {
        time.to_be_bytes()[2..].to_vec()
    } else {
        Vec::new()
    };
    let mut data = (prior.len() as u16).to_be_bytes().to_vec();
    data.extend_from_slice(prior);
    data.extend_from_slice(&answer);
    if full {
        data.extend(variables(&key_name, alg, time, FUDGE, s.error, &other));
    } else {
        data.extend_from_slice(&time.to_be_bytes()[2..]);
        data.extend_from_slice(&FUDGE.to_be_bytes());
    }
    let mut mac = wire::mac(&s.key, &data);
    mac.truncate(s.mac_len());
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
    (answer, mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key {
            name: "tsig-key".into(),
            algorithm: Algorithm::Sha256,
            digest_bits: 256,
            secret: b"0123456789abcdef".to_vec(),
            place: String::new(),
        }
    }

    /// A query for `www.example.com A` signed as a client signs it.
    fn signed_query(k: &Key, time: u64) -> Vec<u8> {
        signed_query_cut(k, time, usize::MAX)
    }

    /// The same with the MAC cut to `len` bytes.
    fn signed_query_cut(k: &Key, time: u64, len: usize) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend(wire_name("www.example.com."));
        q.extend_from_slice(&[0, 1, 0, 1]);
        let name = format!("{}.", k.name);
        let alg = algorithm_name(k.algorithm);
        let mut data = q.clone();
        data.extend(variables(&name, alg, time, FUDGE, 0, &[]));
        let mut mac = wire::mac(k, &data);
        mac.truncate(len);
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
        data.extend(t.variables());
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

    #[test]
    fn cut_macs_are_answered_by_the_keys_digest_bits() {
        let now = crate::unix_now();
        let rcode_and_tsig = |c: Check| match c {
            Check::Reply(a) => (a[3] & 0x0f, find(&a).map(|t| (t.error, t.mac.len()))),
            _ => panic!("answered"),
        };
        // Shorter than half the algorithm's MAC, or longer: FORMERR, unsigned BADSIG.
        for len in [8, 15] {
            let q = signed_query_cut(&key(), now, len);
            assert_eq!(
                rcode_and_tsig(check(&q, &[key()])),
                (FORMERR, Some((BADSIG, 0)))
            );
        }
        // Half the MAC from a key of full digest bits: BADTRUNC, signed.
        let q = signed_query_cut(&key(), now, 16);
        let Check::Sign(s) = check(&q, &[key()]) else {
            panic!("not verified")
        };
        let a = s.error_answer(&q).expect("an error answer");
        assert_eq!(a[3] & 0x0f, NOTAUTH);
        assert_eq!(
            find(&a).map(|t| (t.error, t.mac.len())),
            Some((BADTRUNC, 32))
        );
        // A key of 128 digest bits takes 16 bytes and answers with 16.
        let short = Key {
            digest_bits: 128,
            ..key()
        };
        let Check::Sign(s) = check(&q, std::slice::from_ref(&short)) else {
            panic!("not verified")
        };
        assert!(s.error_answer(&q).is_none());
        let a = sign(header_and_question(&q), &s);
        assert_eq!(find(&a).map(|t| t.mac.len()), Some(16));
        assert_eq!(s.record_len(), a.len() - header_and_question(&q).len());
        // A wrong cut MAC is a bad signature.
        let mut bad = q.clone();
        let mac_at = bad.len() - 6 - 16;
        bad[mac_at] ^= 1;
        assert_eq!(
            rcode_and_tsig(check(&bad, &[short])),
            (NOTAUTH, Some((BADSIG, 0)))
        );
    }

    #[test]
    fn requests_named_signs_verify_as_queries() {
        let mut q = vec![0x43, 0x21, 0x24, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend(wire_name("example.com."));
        q.extend_from_slice(&[0, 6, 0, 1]);
        let signed = sign_request(q, &key());
        let Check::Sign(s) = check(&signed, &[key()]) else {
            panic!("a request named signed does not verify")
        };
        assert!(s.error_answer(&signed).is_none());
        assert_eq!(
            find(&signed).map(|t| (t.mac.len(), t.original_id)),
            Some((32, 0x4321))
        );
    }

    #[test]
    fn answers_to_signed_requests_are_verified_in_a_chain() {
        let mut q = vec![0x43, 0x21, 0x00, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend(wire_name("example.com."));
        q.extend_from_slice(&[0, 252, 0, 1]);
        let (signed_q, mac) = sign_request_mac(q, &key());
        let Check::Sign(s) = check(&signed_q, &[key()]) else {
            panic!("not verified")
        };
        let body = header_and_question(&signed_q);
        let answers = sign_all(vec![body.clone(), body.clone(), body.clone()], &s);
        let mut v = Verifier::new(key(), mac.clone());
        for a in &answers {
            v.next(a).unwrap();
        }
        v.done().unwrap();
        // A message changed on the way, or one left out, fails.
        let mut v = Verifier::new(key(), mac.clone());
        v.next(&answers[0]).unwrap();
        assert!(v.next(&answers[2]).is_err());
        let mut bad = answers[0].clone();
        bad[3] ^= 1;
        assert!(Verifier::new(key(), mac.clone()).next(&bad).is_err());
        // Unsigned: refused; the last unsigned: not done.
        assert!(Verifier::new(key(), mac.clone()).next(&body).is_err());
        let mut v = Verifier::new(key(), mac);
        v.next(&answers[0]).unwrap();
        v.next(&body).unwrap();
        assert!(v.done().is_err());
    }
}
