//! EDNS beyond the buffer size and the DO bit, as BIND 9.18 answers it:
//! BADVERS for any version but 0 (RFC 6891 §6.1.3), FORMERR for a
//! malformed COOKIE option, and DNS COOKIES (RFC 7873): each query with a
//! client cookie gets it back with a server cookie of RFC 9018's form
//! (version 1, a timestamp and SipHash-2-4 of the client cookie, the
//! timestamp and the client address under a secret), BIND's default
//! `cookie-algorithm siphash24`. With `require-server-cookie yes` a UDP
//! query without a valid server cookie gets BADCOOKIE and a fresh one.

use std::hash::Hasher;
use std::net::IpAddr;

use hickory_server::proto::op::{Edns, Message, MessageType, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_server::server::Request;
use pfx_named_conf::conf::Options;
use siphasher::sip::SipHasher24;

/// The COOKIE option's code.
const COOKIE: u16 = 10;
/// BIND's answer buffer size (as serve.rs gives it).
const MAX_UDP: u16 = 1232;
/// How old a server cookie may be and still count (RFC 9018 §4.3: one hour),
/// and how far ahead (five minutes).
const COOKIE_AGE: u32 = 3600;
const COOKIE_AHEAD: u32 = 300;

/// The cookie settings and secret (kept across reloads unless
/// `cookie-secret` changes, so clients' cookies stay good).
#[derive(Clone)]
pub(crate) struct Cookies {
    secret: [u8; 16],
    answer: bool,
    require: bool,
}

impl Cookies {
    /// From the options; a random secret unless `cookie-secret` sets one,
    /// the previous random secret when there was one.
    pub(crate) fn new(o: &Options, previous: Option<&Self>) -> Self {
        let secret = match o.cookie_secret {
            Some(s) => s,
            None => previous.map_or_else(
                || {
                    let mut s = [0u8; 16];
                    // Without randomness the secret is still unknown to clients.
                    let _ = getrandom::fill(&mut s);
                    s
                },
                |p| p.secret,
            ),
        };
        Self {
            secret,
            answer: o.answer_cookie,
            require: o.require_server_cookie,
        }
    }

    /// The server cookie for `client_cookie` from `client` at `now`.
    fn server_cookie(&self, client_cookie: &[u8], client: IpAddr, now: u32) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[0] = 1;
        out[4..8].copy_from_slice(&now.to_be_bytes());
        let mut h = SipHasher24::new_with_key(&self.secret);
        h.write(client_cookie);
        h.write(&out[..8]);
        match client {
            IpAddr::V4(a) => h.write(&a.octets()),
            IpAddr::V6(a) => h.write(&a.octets()),
        }
        out[8..].copy_from_slice(&h.finish().to_le_bytes());
        out
    }

    /// Whether `server` is one this server gave `client` lately.
    fn valid(&self, client_cookie: &[u8], server: &[u8], client: IpAddr, now: u32) -> bool {
        if server.len() != 16 || server[0] != 1 {
            return false;
        }
        let when = u32::from_be_bytes([server[4], server[5], server[6], server[7]]);
        let fresh =
            when <= now.saturating_add(COOKIE_AHEAD) && now.saturating_sub(when) <= COOKIE_AGE;
        fresh && self.server_cookie(client_cookie, client, when)[8..] == server[8..]
    }
}

/// What to do with a query's EDNS.
pub(crate) enum Check {
    /// Answer it; with this COOKIE option data in the answer.
    Answer(Option<Vec<u8>>),
    /// Send this instead (BADVERS, FORMERR), before any TSIG check.
    Reply(Vec<u8>),
    /// Send this instead (BADCOOKIE), signed if the query was.
    BadCookie(Vec<u8>),
}

/// Checks the query's EDNS version and cookie, as BIND does.
pub(crate) fn check(request: &Request, cookies: &Cookies, udp: bool) -> Check {
    let Some(edns) = &request.edns else {
        return Check::Answer(None);
    };
    let client = request.src().ip();
    let option = match edns.options().get(EdnsCode::Cookie) {
        Some(EdnsOption::Unknown(_, data)) => Some(data),
        _ => None,
    };
    // The message parser's check, before anything else.
    if option.is_some_and(|d| d.len() != 8 && !(16..=40).contains(&d.len())) {
        return Check::Reply(reply(request, ResponseCode::FormErr, None));
    }
    // The version comes before the options: no cookie with BADVERS.
    if edns.version() != 0 {
        return Check::Reply(reply(request, ResponseCode::BADVERS, None));
    }
    let Some(data) = option.filter(|_| cookies.answer) else {
        return Check::Answer(None);
    };
    let now = crate::unix_now32();
    let (client_cookie, server) = data.split_at(8);
    let good = cookies.valid(client_cookie, server, client, now);
    let mut cookie = client_cookie.to_vec();
    cookie.extend_from_slice(&cookies.server_cookie(client_cookie, client, now));
    if cookies.require && udp && !good {
        return Check::BadCookie(reply(request, ResponseCode::BADCOOKIE, Some(cookie)));
    }
    Check::Answer(Some(cookie))
}

/// An answer without records: the question, RD as asked, EDNS version 0.
fn reply(request: &Request, rcode: ResponseCode, cookie: Option<Vec<u8>>) -> Vec<u8> {
    let mut meta = Metadata::response_from_request(&request.metadata);
    meta.response_code = rcode;
    let mut m = Message::new(meta.id, MessageType::Response, meta.op_code);
    m.metadata = meta;
    for q in request.queries.queries() {
        m.add_query(q.original().clone());
    }
    m.set_edns(edns_with(cookie));
    m.to_vec().unwrap_or_default()
}

/// BIND's EDNS for answers: version 0, its buffer size, the cookie if any.
fn edns_with(cookie: Option<Vec<u8>>) -> Edns {
    let mut e = Edns::new();
    e.set_max_payload(MAX_UDP);
    if let Some(c) = cookie {
        e.options_mut().insert(EdnsOption::Unknown(COOKIE, c));
    }
    e
}

/// Adds the COOKIE option to an encoded answer that lacks it (answers
/// built by hickory's catalog: forwarded and resolved names).
pub(crate) fn add_cookie(answer: Vec<u8>, cookie: &[u8]) -> Vec<u8> {
    let Ok(mut m) = Message::from_vec(&answer) else {
        return answer;
    };
    let Some(e) = m.edns.as_mut() else {
        return answer;
    };
    if e.options().get(EdnsCode::Cookie).is_some() {
        return answer;
    }
    e.options_mut()
        .insert(EdnsOption::Unknown(COOKIE, cookie.to_vec()));
    m.to_vec().unwrap_or(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookies() -> Cookies {
        Cookies {
            secret: *b"0123456789abcdef",
            answer: true,
            require: false,
        }
    }

    fn query(version: u8, cookie: Option<Vec<u8>>) -> Request {
        use hickory_server::net::xfer::Protocol;
        use hickory_server::proto::op::{OpCode, Query};
        use hickory_server::proto::rr::{Name, RecordType};
        let mut m = Message::new(7, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(
            Name::from_ascii("mail.ywnds.com.").unwrap(),
            RecordType::A,
        ));
        let mut e = Edns::new();
        e.set_version(version);
        if let Some(c) = cookie {
            e.options_mut().insert(EdnsOption::Unknown(COOKIE, c));
        }
        m.set_edns(e);
        Request::from_bytes(
            m.to_vec().unwrap(),
            "192.0.2.1:5300".parse().unwrap(),
            Protocol::Udp,
        )
        .unwrap()
    }

    /// The reply's rcode as a number (16 reads back as BADSIG, its other name).
    fn rcode(c: Check) -> Option<u16> {
        match c {
            Check::Reply(bytes) | Check::BadCookie(bytes) => Some(
                Message::from_vec(&bytes)
                    .unwrap()
                    .metadata
                    .response_code
                    .into(),
            ),
            Check::Answer(_) => None,
        }
    }

    #[test]
    fn versions_and_cookies_are_answered_as_bind_answers_them() {
        let c = cookies();
        assert_eq!(
            rcode(check(&query(1, None), &c, true)),
            Some(ResponseCode::BADVERS.into())
        );
        assert_eq!(
            rcode(check(&query(0, Some(vec![1; 4])), &c, true)),
            Some(ResponseCode::FormErr.into())
        );
        let Check::Answer(Some(cookie)) = check(&query(0, Some(vec![1; 8])), &c, true) else {
            panic!("no cookie")
        };
        assert_eq!(cookie.len(), 24);
        assert_eq!(&cookie[..8], &[1; 8]);
        assert!(matches!(
            check(&query(0, None), &c, true),
            Check::Answer(None)
        ));
        let off = Cookies {
            answer: false,
            ..c.clone()
        };
        assert!(matches!(
            check(&query(0, Some(vec![1; 8])), &off, true),
            Check::Answer(None)
        ));
        // require-server-cookie: BADCOOKIE until the client shows ours.
        let strict = Cookies { require: true, ..c };
        assert_eq!(
            rcode(check(&query(0, Some(vec![1; 8])), &strict, true)),
            Some(ResponseCode::BADCOOKIE.into())
        );
        assert!(matches!(
            check(&query(0, Some(vec![1; 8])), &strict, false),
            Check::Answer(Some(_))
        ));
        assert!(matches!(
            check(&query(0, Some(cookie)), &strict, true),
            Check::Answer(Some(_))
        ));
    }

    #[test]
    fn server_cookies_are_checked_by_client_address_and_age() {
        let c = cookies();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let cc = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let sc = c.server_cookie(&cc, ip, 1_000_000);
        assert_eq!(sc[0], 1);
        assert_eq!(&sc[1..4], &[0, 0, 0]);
        assert_eq!(&sc[4..8], &1_000_000u32.to_be_bytes());
        assert!(c.valid(&cc, &sc, ip, 1_000_000 + 60));
        assert!(!c.valid(&cc, &sc, "192.0.2.2".parse().unwrap(), 1_000_000));
        assert!(!c.valid(&[9; 8], &sc, ip, 1_000_000));
        assert!(!c.valid(&cc, &sc, ip, 1_000_000 + COOKIE_AGE + 1));
        assert!(!c.valid(&cc, &sc, ip, 1_000_000 - COOKIE_AHEAD - 1));
        assert!(!c.valid(&cc, &sc[..8], ip, 1_000_000));
        let other = Cookies {
            secret: *b"fedcba9876543210",
            ..c.clone()
        };
        assert!(!other.valid(&cc, &sc, ip, 1_000_000));
    }
}
