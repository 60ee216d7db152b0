//! UDP: one thread per socket reading queries, and a cache of encoded
//! authoritative answers in front of hickory's catalog.
//!
//! Between two reloads a zone's answers never change, so the first answer
//! to a question (name in any case, type, class, RD, EDNS buffer) is kept as
//! bytes and later askers get a copy with their message ID, RD and CD bits
//! and spelling of the name patched in. Only plain authoritative answers that
//! fit in 512 bytes are kept: referrals to forwarders, truncated and refused
//! answers, and queries with EDNS options (cookies, NSID) always go the full
//! way. The cache (cache.rs) belongs to the state a reload replaces, so it
//! never serves old data.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};

use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::proto::rr::Record;
use hickory_server::proto::serialize::binary::BinEncoder;
use hickory_server::server::{Request, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use tracing::warn;

use crate::edns::{self, Check};
use crate::mmsg;
use crate::serve::{Extras, Handler};
use crate::transfer;
use crate::tsig;

/// Largest answer kept: fits every client's buffer.
const CACHE_MAX_ANSWER: usize = 512;
const HEADER: usize = 12;

/// A query's cache key and where its question name ends, when the query is
/// a plain one: QUERY opcode, one question, no records but an optional OPT
/// without options.
fn question_key(q: &[u8]) -> Option<(Vec<u8>, usize)> {
    if q.len() < HEADER + 5 {
        return None;
    }
    let count = |i: usize| u16::from_be_bytes([q[i], q[i + 1]]);
    // QR=0, opcode 0, TC=0.
    if q[2] & 0xfa != 0 || count(4) != 1 || count(6) != 0 || count(8) != 0 || count(10) > 1 {
        return None;
    }
    // RD decides the authority section (BIND's no-auth-recursive).
    let mut key = Vec::with_capacity(64);
    key.push(q[2] & 0x01);
    let mut i = HEADER;
    loop {
        let len = usize::from(*q.get(i)?);
        if len > 63 {
            return None;
        }
        key.push(len as u8);
        i += 1;
        if len == 0 {
            break;
        }
        key.extend(q.get(i..i + len)?.iter().map(u8::to_ascii_lowercase));
        i += len;
    }
    let name_end = i;
    key.extend_from_slice(q.get(i..i + 4)?);
    i += 4;
    if count(10) == 1 {
        // OPT: root name, type 41, class = buffer size, TTL = ext-rcode/version/flags, no options.
        let opt = q.get(i..i + 11)?;
        if opt[0] != 0 || opt[1..3] != [0, 41] || opt[9..11] != [0, 0] {
            return None;
        }
        key.push(1);
        key.extend_from_slice(&opt[3..9]);
        i += 11;
    } else {
        key.push(0);
    }
    (i == q.len()).then_some((key, name_end))
}

/// What the fast path decides about a packet.
pub(crate) enum Fast {
    /// `blackhole`: no answer at all.
    Drop,
    /// The cached answer, adjusted to the query.
    Answer(Vec<u8>),
    /// Not in the cache: the full way.
    Miss,
}

/// Answers `q` from the cache when it can; one look at the state, no
/// reference counts touched (this is every cached query's whole path).
pub(crate) fn from_cache(handler: &Handler, q: &[u8], src: SocketAddr, local: IpAddr) -> Fast {
    let state = handler.state_now();
    if state.dropped(src.ip()) {
        return Fast::Drop;
    }
    if handler.logging_queries() || q.len() < HEADER {
        return Fast::Miss;
    }
    let Some(cache) = state.cache_for(src.ip(), local, q[2] & 0x01 != 0) else {
        return Fast::Miss;
    };
    let Some((key, name_end)) = question_key(q) else {
        return Fast::Miss;
    };
    let Some(mut a) = cache.copy(&key) else {
        return Fast::Miss;
    };
    a[0] = q[0];
    a[1] = q[1];
    a[2] = (a[2] & !0x01) | (q[2] & 0x01);
    a[3] = (a[3] & !0x10) | (q[3] & 0x10);
    a[HEADER..name_end].copy_from_slice(&q[HEADER..name_end]);
    Fast::Answer(a)
}

/// Whether an encoded answer may be kept: authoritative, complete, NOERROR or NXDOMAIN.
fn cacheable(a: &[u8]) -> bool {
    a.len() >= HEADER
        && a.len() <= CACHE_MAX_ANSWER
        && a[2] & 0x04 != 0
        && a[2] & 0x02 == 0
        && matches!(a[3] & 0x0f, 0 | 3)
}

/// Answers one query (UDP, or TCP for tcp.rs) the full way, and keeps
/// the answer when it may. One message, but for a zone transfer over TCP
/// (transfer.rs); none for a query that gets no answer.
pub(crate) async fn answer(
    handler: Handler,
    q: Vec<u8>,
    src: SocketAddr,
    local: IpAddr,
    protocol: Protocol,
) -> Vec<Vec<u8>> {
    // A response is never answered (BIND drops it): two servers could
    // otherwise answer each other's error replies forever.
    if q.get(2).is_some_and(|b| b & 0x80 != 0) {
        return Vec::new();
    }
    let key = question_key(&q);
    let request = match Request::from_bytes(q, src, protocol) {
        Ok(r) => r,
        Err(_) => return Vec::new(),
    };
    if handler.logging_queries() {
        handler.log_query(&request, local);
    }
    let state = handler.state();
    // As in BIND: the EDNS version and a malformed cookie are answered
    // before the TSIG is looked at (unsigned), BADCOOKIE after (signed).
    let cookie = match edns::check(&request, &state.cookies, protocol == Protocol::Udp) {
        Check::Reply(bytes) => return vec![bytes],
        Check::BadCookie(bytes) => Err(bytes),
        Check::Answer(c) => Ok(c),
    };
    let signed = match tsig::check(request.as_slice(), &state.keys) {
        tsig::Check::Reply(bytes) => return vec![bytes],
        // BADTIME, BADTRUNC: the header and question only, signed.
        tsig::Check::Sign(s) => match s.error_answer(request.as_slice()) {
            Some(bytes) => return vec![bytes],
            None => Some(s),
        },
        tsig::Check::None => None,
    };
    let cookie = match cookie {
        Err(bad_cookie) => {
            return vec![match &signed {
                Some(s) => tsig::sign(bad_cookie, s),
                None => bad_cookie,
            }]
        }
        Ok(c) => c,
    };
    if transfer::is_transfer(&request) {
        return transfer::answer(&state, &request, signed.as_ref(), local);
    }
    let extras = Extras {
        cookie: cookie.as_deref(),
        tsig_len: signed.as_ref().map_or(0, tsig::Signed::record_len),
        signer: signed.as_ref().map(tsig::Signed::key_name),
    };
    let capture = Capture {
        answer: Arc::default(),
        tcp: protocol == Protocol::Tcp,
        room: extras.tsig_len,
    };
    handler
        .respond_with::<Capture, TokioTime>(&state, &request, local, extras, capture.clone())
        .await;
    let Some(mut bytes) = capture
        .answer
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    else {
        return Vec::new();
    };
    if let Some(c) = &cookie {
        bytes = edns::add_cookie(bytes, c);
    }
    if let Some(s) = &signed {
        bytes = tsig::sign(bytes, s);
    }
    if let Some((key, _)) = key {
        let rd = request.metadata.recursion_desired;
        if let Some(cache) = state
            .cache_for(src.ip(), local, rd)
            .filter(|_| cacheable(&bytes))
        {
            cache.put(key, &bytes);
        }
    }
    vec![bytes]
}

/// FORMERR for a query hickory could not read, when its header can be: as BIND does.
pub(crate) fn format_error(q: &[u8]) -> Option<Vec<u8>> {
    if q.len() < HEADER || q[2] & 0x80 != 0 {
        return None;
    }
    let mut a = vec![0u8; HEADER];
    a[0] = q[0];
    a[1] = q[1];
    a[2] = 0x80 | (q[2] & 0x79);
    a[3] = 1;
    Some(a)
}

/// A response handler that keeps the encoded answer instead of sending it;
/// over TCP, whatever its size.
#[derive(Clone, Default)]
struct Capture {
    answer: Arc<Mutex<Option<Vec<u8>>>>,
    tcp: bool,
    /// Bytes the answer must leave free for its TSIG record.
    room: usize,
}

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let max = if self.tcp {
            u16::MAX
        } else {
            let buffer = response.edns().map_or(512, |e| e.max_payload().max(512));
            buffer.saturating_sub(u16::try_from(self.room).unwrap_or(u16::MAX))
        };
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(max);
        let info = response.destructive_emit(&mut encoder)?;
        *self.answer.lock().unwrap_or_else(|e| e.into_inner()) = Some(bytes);
        Ok(info)
    }
}

/// Serves each socket on its own thread; misses go to the runtime.
pub(crate) fn spawn(
    sockets: Vec<UdpSocket>,
    handler: Handler,
    runtime: tokio::runtime::Handle,
) -> Result<(), String> {
    for (n, socket) in sockets.into_iter().enumerate() {
        socket.set_nonblocking(false).map_err(|e| e.to_string())?;
        let socket = Arc::new(socket);
        let handler = handler.clone();
        let runtime = runtime.clone();
        std::thread::Builder::new()
            .name(format!("udp-{n}"))
            .spawn(move || serve(&socket, &handler, &runtime))
            .map_err(|e| format!("start UDP thread: {e}"))?;
    }
    Ok(())
}

fn serve(socket: &Arc<UdpSocket>, handler: &Handler, runtime: &tokio::runtime::Handle) {
    let local = socket
        .local_addr()
        .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    let mut rx = mmsg::Receiver::new();
    let mut cached: Vec<(Vec<u8>, SocketAddr)> = Vec::with_capacity(mmsg::BATCH);
    loop {
        let received = rx.recv(&**socket, |q, src| {
            match from_cache(handler, q, src, local) {
                Fast::Drop => {}
                Fast::Answer(a) => cached.push((a, src)),
                Fast::Miss => {
                    let (q, socket, handler) = (q.to_vec(), socket.clone(), handler.clone());
                    runtime.spawn(async move {
                        let reply = answer(handler, q.clone(), src, local, Protocol::Udp)
                            .await
                            .into_iter()
                            .next()
                            .or_else(|| format_error(&q));
                        if let Some(a) = reply {
                            let _ = socket.send_to(&a, src);
                        }
                    });
                }
            }
        });
        match received {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                warn!("UDP receive: {e}");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        if !cached.is_empty() {
            mmsg::send(&**socket, &cached);
            cached.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name`/A as dig sends it, with or without an OPT record.
    fn query(name: &str, opt: bool) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(opt)];
        for label in name.split('.').filter(|l| !l.is_empty()) {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        if opt {
            q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
        }
        q
    }

    #[test]
    fn keys_ignore_case_and_tell_edns_apart() {
        let (a, end) = question_key(&query("Mail.YWNDS.com", false)).unwrap();
        let (b, _) = question_key(&query("mail.ywnds.com", false)).unwrap();
        let (c, _) = question_key(&query("mail.ywnds.com", true)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(end, HEADER + 16);
        // Responses, options, extra bytes and compression are not for the cache.
        let mut r = query("mail.ywnds.com", false);
        r[2] |= 0x80;
        assert!(question_key(&r).is_none());
        let mut junk = query("mail.ywnds.com", false);
        junk.push(0);
        assert!(question_key(&junk).is_none());
        let mut cookie = query("mail.ywnds.com", true);
        let len = cookie.len();
        cookie[len - 1] = 12;
        cookie.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(question_key(&cookie).is_none());
        assert!(question_key(&[0xc0, 12]).is_none());
    }

    #[test]
    fn only_complete_authoritative_answers_are_kept() {
        let mut a = vec![0u8; 40];
        a[2] = 0x84;
        assert!(cacheable(&a));
        a[3] = 3;
        assert!(cacheable(&a), "NXDOMAIN");
        a[3] = 5;
        assert!(!cacheable(&a), "REFUSED");
        a[3] = 0;
        a[2] = 0x86;
        assert!(!cacheable(&a), "truncated");
        a[2] = 0x80;
        assert!(!cacheable(&a), "not authoritative");
    }

    #[test]
    fn unreadable_queries_get_formerr() {
        let a = format_error(&[0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xff]).unwrap();
        assert_eq!(a, [0xab, 0xcd, 0x81, 0x01, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(format_error(&[1, 2, 3]).is_none());
    }
}
