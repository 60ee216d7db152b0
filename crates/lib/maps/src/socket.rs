//! Tables answered by a server: `tcp:host:port` (tcp_table(5)) and
//! `socketmap:inet:host:port:name` / `socketmap:unix:/path:name`
//! (Sendmail's socketmap protocol).
//!
//! tcp: one request line `get KEY\n`, one reply line `200 VALUE`, `500
//! text` (not found) or `400 text` (try again); `%`, white space and
//! non-printable characters travel as `%XX`. A connection is kept between
//! lookups; connecting is tried 10 times a second apart before the lookup
//! fails, each operation has a 100 s time limit and replies a 4096-byte
//! limit, as in Postfix.
//!
//! socketmap: the request `NAME KEY` and the reply (`OK value`,
//! `NOTFOUND `, `TEMP reason`, `TIMEOUT reason`, `PERM reason`) are
//! netstrings (`LEN:TEXT,`), replies up to 100000 bytes. A connection is
//! kept for at most 100 s, and closed after 10 s unused; a connection the
//! server closed is made again once.
//!
//! Failures (no connection, a broken or malformed reply, `400`, `TEMP`,
//! `TIMEOUT`) are temporary lookup errors ([`Error::Temporary`]), `PERM` a
//! configuration error ([`Error::Config`]); each is logged with Postfix's
//! warning. Keys are sent as given: both are pattern tables for Postfix
//! (no folding, no partial-domain keys).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::Error;
use pfx_sys::strerror;

/// A stream to either kind of server.
#[derive(Debug)]
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Tcp(s) => s.read(buf),
            Self::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Tcp(s) => s.write(buf),
            Self::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Tcp(s) => s.flush(),
            Self::Unix(s) => s.flush(),
        }
    }
}

/// Connects to `host:port` (`[v6]:port` too) within `timeout`.
fn connect_inet(endpoint: &str, timeout: Duration) -> std::io::Result<Stream> {
    let (host, port) = endpoint
        .rsplit_once(':')
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "missing port"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 = port
        .parse()
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "bad port number"))?;
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "host not found");
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
                return Ok(Stream::Tcp(s));
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn connect_unix(path: &str, timeout: Duration) -> std::io::Result<Stream> {
    let s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    Ok(Stream::Unix(s))
}

/// `%XX` for `%`, white space and non-printable bytes (Postfix's hex_quote).
fn hex_quote(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b != b'%' && b.is_ascii_graphic() {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Undoes [`hex_quote`]; `None` for a bad `%XX`.
fn hex_unquote(hex: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(hex.len());
    let mut i = 0;
    while i < hex.len() {
        if hex[i] == b'%' {
            let digit = |c: Option<&u8>| c.and_then(|c| char::from(*c).to_digit(16));
            let hi = digit(hex.get(i + 1))?;
            let lo = digit(hex.get(i + 2))?;
            out.push(u8::try_from(hi << 4 | lo).ok()?);
            i += 3;
        } else {
            out.push(hex[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Non-printable characters as `replacement` (Postfix's printable()).
fn printable(s: &[u8], replacement: char) -> String {
    s.iter()
        .map(|&b| {
            if b == b' ' || b.is_ascii_graphic() {
                char::from(b)
            } else {
                replacement
            }
        })
        .collect()
}

/// A `tcp:host:port` table.
#[derive(Debug)]
pub struct Tcp {
    endpoint: String,
    conn: Mutex<Option<BufReader<Stream>>>,
    timeout: Duration,
    tries: u32,
    pause: Duration,
}

/// Postfix's limits for tcp tables.
const TCP_TRIES: u32 = 10;
const TCP_TIMEOUT: Duration = Duration::from_secs(100);
const TCP_MAX_REPLY: usize = 4096;

impl Tcp {
    /// A table for the server at `endpoint` (`host:port`); nothing is
    /// connected before the first lookup.
    pub fn new(endpoint: &str) -> Self {
        Self {
            endpoint: endpoint.to_owned(),
            conn: Mutex::new(None),
            timeout: TCP_TIMEOUT,
            tries: TCP_TRIES,
            pause: Duration::from_secs(1),
        }
    }

    /// Fewer, quicker tries (tests).
    #[cfg(test)]
    pub(crate) fn patient(mut self, tries: u32, pause: Duration, timeout: Duration) -> Self {
        self.tries = tries;
        self.pause = pause;
        self.timeout = timeout;
        self
    }

    fn fail(&self, reason: String) -> Error {
        Error::Temporary {
            table: format!("tcp:{}", self.endpoint),
            reason,
        }
    }

    /// Asks the server for `key`.
    pub fn lookup(&self, key: &str) -> Result<Option<String>, Error> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let name = &self.endpoint;
        let request = format!("get {}\n", hex_quote(key));
        let mut tries = 0;
        let mut reason = String::new();
        let reply = loop {
            if conn.is_none() {
                match connect_inet(name, self.timeout) {
                    Ok(s) => *conn = Some(BufReader::new(s)),
                    Err(e) => {
                        reason = strerror(&e);
                        tracing::warn!("connect to TCP map {name}: {reason}");
                    }
                }
            }
            if let Some(c) = conn.as_mut() {
                let mut line = Vec::new();
                let sent = c.get_mut().write_all(request.as_bytes());
                let got = sent.and_then(|()| {
                    (&mut *c)
                        .take(TCP_MAX_REPLY as u64)
                        .read_until(b'\n', &mut line)
                });
                match got {
                    Ok(_) if line.last() == Some(&b'\n') => {
                        line.pop();
                        break line;
                    }
                    Ok(n) if n >= TCP_MAX_REPLY => {
                        reason = format!("text longer than {TCP_MAX_REPLY}");
                        tracing::warn!("read TCP map reply from {name}: {reason}");
                    }
                    Ok(_) => {
                        reason = "unexpected EOF".to_owned();
                        tracing::warn!("read TCP map reply from {name}: unexpected EOF (Success)");
                    }
                    Err(e) => {
                        reason = strerror(&e);
                        tracing::warn!("read TCP map reply from {name}: unexpected EOF ({reason})");
                    }
                }
                *conn = None;
            }
            tries += 1;
            if tries >= self.tries {
                return Err(self.fail(reason));
            }
            std::thread::sleep(self.pause);
        };
        let malformed = |conn: &mut Option<_>, what: &str| {
            tracing::warn!(
                "read TCP map reply from {name}: {what}: {:.100}",
                printable(&reply, '_')
            );
            *conn = None;
            self.fail(format!("{what} from server"))
        };
        let well_formed = reply.len() >= 4
            && reply[..3].iter().all(u8::is_ascii_digit)
            && crate::text::is_space(char::from(reply[3]));
        let value = match well_formed.then(|| hex_unquote(&reply[4..])).flatten() {
            Some(v) => v,
            None => return Err(malformed(&mut conn, "malformed reply")),
        };
        match reply[0] {
            b'2' => Ok(Some(String::from_utf8_lossy(&value).into_owned())),
            b'5' => Ok(None),
            b'4' => {
                *conn = None;
                Err(self.fail(format!("server reply: {}", printable(&reply, '_'))))
            }
            _ => Err(malformed(&mut conn, "bad status code")),
        }
    }
}

/// A `socketmap:` table.
#[derive(Debug)]
pub struct Socketmap {
    /// The table name as configured (after `socketmap:`).
    name: String,
    /// `inet:host:port` or `unix:/path`.
    endpoint: String,
    /// The name sent with each key.
    map: String,
    conn: Mutex<Option<Conn>>,
    timeout: Duration,
}

#[derive(Debug)]
struct Conn {
    stream: BufReader<Stream>,
    opened: Instant,
    used: Instant,
}

const SOCKMAP_TIMEOUT: Duration = Duration::from_secs(100);
const SOCKMAP_MAX_REPLY: usize = 100_000;
const SOCKMAP_MAX_IDLE: Duration = Duration::from_secs(10);
const SOCKMAP_MAX_TTL: Duration = Duration::from_secs(100);

/// Why a netstring exchange failed, in Postfix's words.
enum NetstringError {
    Eof,
    Time,
    Format,
    Size,
}

impl NetstringError {
    fn text(&self) -> &'static str {
        match self {
            Self::Eof => "unexpected disconnect",
            Self::Time => "time limit exceeded",
            Self::Format => "input format error",
            Self::Size => "input exceeds size limit",
        }
    }
}

fn io_netstring(e: std::io::Error) -> NetstringError {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => NetstringError::Time,
        _ => NetstringError::Eof,
    }
}

/// Sends `request` as a netstring and reads the reply netstring.
fn netstring_exchange(s: &mut BufReader<Stream>, request: &str) -> Result<Vec<u8>, NetstringError> {
    let out = format!("{}:{request},", request.len());
    s.get_mut()
        .write_all(out.as_bytes())
        .map_err(io_netstring)?;
    let mut len: usize = 0;
    let mut digits = 0;
    loop {
        let mut b = [0u8];
        match s.read(&mut b).map_err(io_netstring)? {
            0 => return Err(NetstringError::Eof),
            _ if b[0] == b':' && digits > 0 => break,
            _ if b[0].is_ascii_digit() => {
                digits += 1;
                len = len
                    .checked_mul(10)
                    .and_then(|l| l.checked_add(usize::from(b[0] - b'0')))
                    .ok_or(NetstringError::Size)?;
                if len > SOCKMAP_MAX_REPLY {
                    return Err(NetstringError::Size);
                }
            }
            _ => return Err(NetstringError::Format),
        }
    }
    let mut data = vec![0u8; len + 1];
    s.read_exact(&mut data).map_err(io_netstring)?;
    if data.pop() != Some(b',') {
        return Err(NetstringError::Format);
    }
    Ok(data)
}

impl Socketmap {
    /// Parses the name after `socketmap:` (`inet:host:port:name`,
    /// `unix:/path:name`).
    pub fn parse(name: &str) -> Result<Self, String> {
        let Some((endpoint, map)) = name.rsplit_once(':') else {
            return Err("socketmap requires server:socketmap argument".to_owned());
        };
        Ok(Self {
            name: name.to_owned(),
            endpoint: endpoint.to_owned(),
            map: map.to_owned(),
            conn: Mutex::new(None),
            timeout: SOCKMAP_TIMEOUT,
        })
    }

    #[cfg(test)]
    pub(crate) fn patient(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn connect(&self) -> std::io::Result<Stream> {
        let ep = self.endpoint.as_str();
        if let Some(hp) = ep.strip_prefix("inet:") {
            connect_inet(hp, self.timeout)
        } else {
            let path = ep
                .strip_prefix("unix:")
                .or_else(|| ep.strip_prefix("local:"))
                .unwrap_or(ep);
            connect_unix(path, self.timeout)
        }
    }

    fn table(&self) -> String {
        format!("socketmap:{}", self.name)
    }

    /// Asks the server for `key`.
    pub fn lookup(&self, key: &str) -> Result<Option<String>, Error> {
        let table = self.table();
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let request = format!("{} {key}", self.map);
        let mut retried = false;
        let reply = loop {
            let now = Instant::now();
            if conn.as_ref().is_some_and(|c| {
                now.duration_since(c.used) > SOCKMAP_MAX_IDLE
                    || now.duration_since(c.opened) > SOCKMAP_MAX_TTL
            }) {
                *conn = None;
            }
            if conn.is_none() {
                match self.connect() {
                    Ok(s) => {
                        *conn = Some(Conn {
                            stream: BufReader::new(s),
                            opened: now,
                            used: now,
                        })
                    }
                    Err(e) => {
                        let why = strerror(&e);
                        let endpoint = self.endpoint.split_once(':').map_or(
                            self.endpoint.as_str(),
                            |(t, rest)| match t {
                                "inet" | "unix" | "local" => rest,
                                _ => &self.endpoint,
                            },
                        );
                        tracing::warn!("connect to {endpoint}: {why}");
                        tracing::warn!("table {table} lookup error: {why}");
                        return Err(Error::Temporary { table, reason: why });
                    }
                }
            }
            let Some(c) = conn.as_mut() else {
                continue;
            };
            match netstring_exchange(&mut c.stream, &request) {
                Ok(r) => {
                    c.used = Instant::now();
                    break r;
                }
                Err(e) => {
                    *conn = None;
                    if let NetstringError::Eof = e {
                        if !retried {
                            retried = true;
                            continue;
                        }
                    }
                    let why = e.text();
                    tracing::warn!("table {table} lookup error: {why}");
                    return Err(Error::Temporary {
                        table,
                        reason: why.to_owned(),
                    });
                }
            }
        };
        let (status, payload) = match reply.iter().position(|&b| b == b' ') {
            Some(i) => (&reply[..i], Some(&reply[i + 1..])),
            None => (&reply[..], None),
        };
        let (class, config) = match status {
            b"OK" => {
                return Ok(payload.map(|p| String::from_utf8_lossy(p).into_owned()));
            }
            b"NOTFOUND" => return Ok(None),
            b"TEMP" => ("temporary", false),
            b"TIMEOUT" => ("timeout", false),
            b"PERM" => ("permanent", true),
            _ => ("unknown", false),
        };
        let payload = payload.unwrap_or_default();
        let start = payload
            .iter()
            .position(|b| !crate::text::is_space(char::from(*b)))
            .unwrap_or(payload.len());
        let text = printable(&payload[start..], '?');
        let text: String = text.chars().take(200).collect();
        let sep = if text.is_empty() { "" } else { ": " };
        tracing::warn!("{table} socketmap server {class} error{sep}{text}");
        let reason = format!("socketmap server {class} error{sep}{text}");
        Err(if config {
            Error::Config { table, reason }
        } else {
            Error::Temporary { table, reason }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn hex_quoting_round_trips() {
        assert_eq!(hex_quote("a b%c\td"), "a%20b%25c%09d");
        assert_eq!(hex_unquote(b"a%20b%25c%09d%7e").unwrap(), b"a b%c\td~");
        assert!(hex_unquote(b"%2").is_none());
        assert!(hex_unquote(b"%zz").is_none());
    }

    /// A server that answers each request line with the next canned reply.
    fn tcp_server(replies: Vec<&'static str>) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let h = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            let mut seen = Vec::new();
            for reply in replies {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                seen.push(line);
                w.write_all(reply.as_bytes()).unwrap();
            }
            seen
        });
        (addr, h)
    }

    #[test]
    fn tcp_asks_get_and_reads_200_500_400() {
        let (addr, h) = tcp_server(vec![
            "200 local%3Ajoe%20x\n",
            "500 no\n",
            "200 \n",
            "400 busy\n",
        ]);
        let t = Tcp::new(&addr).patient(1, Duration::ZERO, Duration::from_secs(5));
        assert_eq!(t.lookup("Joe Doe").unwrap().as_deref(), Some("local:joe x"));
        assert_eq!(t.lookup("x").unwrap(), None);
        assert_eq!(t.lookup("e").unwrap().as_deref(), Some(""));
        let e = t.lookup("busy").unwrap_err();
        assert!(matches!(e, Error::Temporary { .. }), "{e}");
        assert_eq!(
            h.join().unwrap(),
            ["get Joe%20Doe\n", "get x\n", "get e\n", "get busy\n"]
        );
    }

    #[test]
    fn tcp_malformed_replies_and_refused_connections_are_temporary() {
        let (addr, _h) = tcp_server(vec!["2x0 ok\n"]);
        let t = Tcp::new(&addr).patient(1, Duration::ZERO, Duration::from_secs(5));
        assert!(matches!(t.lookup("k"), Err(Error::Temporary { .. })));
        // Nothing listens on a port just released.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let t = Tcp::new(&format!("127.0.0.1:{port}")).patient(
            2,
            Duration::ZERO,
            Duration::from_secs(5),
        );
        match t.lookup("k") {
            Err(Error::Temporary { table, reason }) => {
                assert_eq!(table, format!("tcp:127.0.0.1:{port}"));
                assert_eq!(reason, "Connection refused");
            }
            other => panic!("{other:?}"),
        }
    }

    /// A socketmap server over a Unix socket with canned replies (raw
    /// netstrings).
    fn sockmap_server(
        dir: &std::path::Path,
        replies: Vec<&'static str>,
    ) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let path = dir.join("sock");
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let h = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            for reply in replies {
                let mut head = Vec::new();
                if r.read_until(b':', &mut head).unwrap() == 0 {
                    break;
                }
                let n: usize = std::str::from_utf8(&head[..head.len() - 1])
                    .unwrap()
                    .parse()
                    .unwrap();
                let mut body = vec![0; n + 1];
                r.read_exact(&mut body).unwrap();
                seen.push(String::from_utf8(body[..n].to_vec()).unwrap());
                w.write_all(reply.as_bytes()).unwrap();
            }
            seen
        });
        (format!("unix:{}:virtual", path.display()), h)
    }

    #[test]
    fn socketmap_speaks_netstrings_and_classifies_replies() {
        let tmp = tempfile::tempdir().unwrap();
        let (name, h) = sockmap_server(
            tmp.path(),
            vec![
                "8:OK a b,c,",
                "9:NOTFOUND ,",
                "11:TEMP  busy\x01,",
                "8:PERM bad,",
                "2:OK,",
                "1:x,",
            ],
        );
        let m = Socketmap::parse(&name)
            .unwrap()
            .patient(Duration::from_secs(5));
        assert_eq!(m.lookup("Key").unwrap().as_deref(), Some("a b,c"));
        assert_eq!(m.lookup("k2").unwrap(), None);
        match m.lookup("k3") {
            Err(Error::Temporary { reason, .. }) => {
                assert_eq!(reason, "socketmap server temporary error: busy?")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(m.lookup("k4"), Err(Error::Config { .. })));
        // "OK" without a space carries no value: not found, as Postfix.
        assert_eq!(m.lookup("k5").unwrap(), None);
        assert!(matches!(m.lookup("k6"), Err(Error::Temporary { .. })));
        assert_eq!(
            h.join().unwrap(),
            [
                "virtual Key",
                "virtual k2",
                "virtual k3",
                "virtual k4",
                "virtual k5",
                "virtual k6"
            ]
        );
    }

    #[test]
    fn socketmap_without_a_server_fails_temporarily() {
        let m = Socketmap::parse("unix:/nonexistent/socket:map").unwrap();
        match m.lookup("k") {
            Err(Error::Temporary { table, reason }) => {
                assert_eq!(table, "socketmap:unix:/nonexistent/socket:map");
                assert_eq!(reason, "No such file or directory");
            }
            other => panic!("{other:?}"),
        }
        assert!(Socketmap::parse("nocolon").is_err());
    }
}
