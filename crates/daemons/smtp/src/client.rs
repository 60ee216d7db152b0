//! One SMTP or LMTP conversation as a client, over TCP or a UNIX-domain
//! socket (or, in the tests, an in-memory pipe): greeting, EHLO (HELO when
//! EHLO is refused) or LMTP's LHLO (no fallback), STARTTLS and the
//! greeting again when the TLS policy asks for it, and mail transactions
//! with PIPELINING when the server offers it. Every read has its own
//! timeout, as Postfix's `smtp_*_timeout`s.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use pfx_maillog::delivery::Outcome;
use pfx_tls::client::{Level, Trust};
use pfx_tls::Io;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};
use tracing::info;

use crate::mode::Mode;

/// A byte stream a conversation runs over: TCP, a UNIX-domain socket, or
/// an in-memory pipe in the unit tests.
pub(crate) trait Wire: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Wire for T {}

/// A connected stream, before any protocol.
pub(crate) type Stream = Box<dyn Wire>;

/// The longest reply line read.
const MAX_REPLY_LINE: u64 = 64 * 1024;

/// A server reply: the code and its lines (text only).
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) code: u16,
    pub(crate) lines: Vec<String>,
}

impl Reply {
    /// `250 2.0.0 Ok: queued as X`: the lines joined with spaces, as Postfix logs them.
    pub(crate) fn text(&self) -> String {
        format!("{} {}", self.code, self.lines.join(" "))
    }

    /// The enhanced status code, from the reply or from its class.
    pub(crate) fn dsn(&self) -> String {
        let class = self.code / 100;
        let first = self.lines.first().map(String::as_str).unwrap_or("");
        let code = first.split(' ').next().unwrap_or("");
        let parts: Vec<&str> = code.split('.').collect();
        let valid = parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
            && parts[0] == class.to_string();
        if valid {
            code.to_owned()
        } else {
            format!("{class}.0.0")
        }
    }
}

/// Why a conversation failed before a reply could be judged.
#[derive(Debug)]
pub(crate) enum Broken {
    /// The connection closed.
    Lost,
    TimedOut,
    Io(std::io::Error),
}

impl From<std::io::Error> for Broken {
    /// A reset or a broken pipe is a lost connection, when reading as when
    /// writing: Postfix logs both as "lost connection".
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => Self::Lost,
            _ => Self::Io(e),
        }
    }
}

/// Timeouts of the conversation's stages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) connect: Duration,
    pub(crate) helo: Duration,
    pub(crate) mail: Duration,
    pub(crate) rcpt: Duration,
    pub(crate) data_init: Duration,
    pub(crate) data_xfer: Duration,
    pub(crate) data_done: Duration,
    pub(crate) rset: Duration,
    pub(crate) quit: Duration,
}

/// How TLS is to be used with one server.
pub(crate) struct TlsPlan<'a> {
    /// The TLS client; `Err`: why it could not be set up.
    pub(crate) client: Result<&'a pfx_tls::client::Client, &'a str>,
    pub(crate) level: Level,
    /// The names a `verify` or `secure` certificate must match.
    pub(crate) names: Vec<String>,
    /// `smtp_tls_wrappermode`: TLS from the first byte.
    pub(crate) wrapper: bool,
    /// `smtp_tls_loglevel`.
    pub(crate) loglevel: i64,
    /// `host[addr]:port`, for the log line.
    pub(crate) peer: String,
    /// The server's host name (SNI is not sent, as Postfix's default).
    pub(crate) host: &'a str,
    /// `smtp_starttls_timeout`: for the handshake.
    pub(crate) timeout: Duration,
}

/// Why a conversation could not get as far as MAIL.
#[derive(Debug)]
pub(crate) enum StartError {
    /// The connection broke or timed out while `stage`.
    Broken(Broken, &'static str),
    /// The server greeted with an error.
    Greeting(Reply),
    /// The server refused HELO after EHLO.
    Helo(Reply),
    /// The TLS policy could not be met with this server.
    Tls(Outcome),
    /// The TLS handshake itself failed (`Cannot start TLS: handshake failure`).
    Handshake(Outcome),
}

fn handshake_failure() -> StartError {
    StartError::Handshake(Outcome::failed(
        true,
        "4.7.5",
        "none",
        "Cannot start TLS: handshake failure",
    ))
}

fn tls_failure(dsn: &str, reason: String) -> StartError {
    StartError::Tls(Outcome::failed(true, dsn, "none", reason))
}

/// A connected server, after EHLO (LHLO).
pub(crate) struct Conn {
    stream: BufReader<Io<Stream>>,
    /// A read or write broke or timed out: the conversation is out of
    /// step, and the connection must not be used again.
    pub(crate) lost: bool,
    /// The server offered STARTTLS.
    starttls: bool,
    /// The mechanisms of the server's AUTH keyword.
    pub(crate) auth: Vec<String>,
    /// The session is encrypted; how far its certificate was trusted.
    pub(crate) tls: Option<Trust>,
    pub(crate) pipelining: bool,
    pub(crate) eight_bit: bool,
    /// The server offers DSN (RFC 3461): NOTIFY, ORCPT, RET and ENVID go on.
    pub(crate) dsn: bool,
    /// The server's SIZE limit, if it announced one (0: none).
    pub(crate) size_limit: Option<u64>,
    /// The attributes of the server's XFORWARD keyword.
    pub(crate) xforward: Vec<String>,
    /// Transactions done on this connection so far.
    pub(crate) uses: u32,
}

impl TlsPlan<'_> {
    /// `host[addr]`, without the port, as Postfix's TLS reasons name the server.
    fn peer_name(&self) -> &str {
        self.peer.rsplit_once(':').map_or(&self.peer, |(h, _)| h)
    }
}

/// Connects within `limit` (zero: no limit of our own, as Postfix's
/// `lmtp_connect_timeout = 0`).
async fn timed<T>(
    limit: Duration,
    connect: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    if limit.is_zero() {
        return connect.await;
    }
    match tokio::time::timeout(limit, connect).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "Connection timed out",
        )),
    }
}

impl Conn {
    /// A TCP connection to a server.
    pub(crate) async fn connect(addr: SocketAddr, t: &Timeouts) -> std::io::Result<Stream> {
        let stream = timed(t.connect, TcpStream::connect(addr)).await?;
        let _ = stream.set_nodelay(true);
        Ok(Box::new(stream))
    }

    /// A connection to a UNIX-domain socket (LMTP's `unix:` next hops).
    pub(crate) async fn connect_unix(path: &Path, t: &Timeouts) -> std::io::Result<Stream> {
        Ok(Box::new(timed(t.connect, UnixStream::connect(path)).await?))
    }

    /// Reads the greeting, says EHLO (or HELO; LHLO in LMTP mode), and
    /// starts TLS as `tls` asks (then the greeting command again).
    pub(crate) async fn start(
        stream: Stream,
        mode: Mode,
        helo: &str,
        t: &Timeouts,
        tls: &TlsPlan<'_>,
    ) -> Result<Self, StartError> {
        let mut c = Self {
            stream: BufReader::new(Io::Plain(stream)),
            lost: false,
            starttls: false,
            auth: Vec::new(),
            tls: None,
            pipelining: false,
            eight_bit: false,
            dsn: false,
            size_limit: None,
            xforward: Vec::new(),
            uses: 0,
        };
        if tls.wrapper {
            c.handshake(tls).await?;
        }
        let greeting = c
            .read(t.helo)
            .await
            .map_err(|b| StartError::Broken(b, "receiving the initial server greeting"))?;
        if greeting.code / 100 != 2 {
            return Err(StartError::Greeting(greeting));
        }
        let esmtp = c.ehlo(mode, helo, t).await?;
        if c.tls.is_some() || tls.level == Level::None {
            return Ok(c);
        }
        // After HELO there is no STARTTLS to use: as not offered.
        if !esmtp || !c.starttls {
            let reason = format!(
                "TLS is required, but was not offered by host {}",
                tls.peer_name()
            );
            return c.plain(tls, "4.7.4", reason);
        }
        if tls.client.is_err() {
            let reason = "TLS is required, but our TLS engine is unavailable".to_owned();
            return c.plain(tls, "4.7.5", reason);
        }
        let r = c
            .command("STARTTLS", t.helo)
            .await
            .map_err(|b| StartError::Broken(b, "receiving the STARTTLS response"))?;
        if r.code != 220 {
            let reason = format!(
                "TLS is required, but host {} refused to start TLS: {}",
                tls.peer_name(),
                r.text()
            );
            return c.plain(tls, &r.dsn(), reason);
        }
        c.handshake(tls).await?;
        // RFC 3207: what the server said before TLS counts no more.
        c.ehlo(mode, helo, t).await?;
        Ok(c)
    }

    /// The session without TLS: fine at `may`, a deferral (`dsn`,
    /// `reason`) at a level that requires TLS. Every path of
    /// [`Conn::start`] that stays in plain text goes through here.
    fn plain(self, tls: &TlsPlan<'_>, dsn: &str, reason: String) -> Result<Self, StartError> {
        if tls.level.mandatory() {
            Err(tls_failure(dsn, reason))
        } else {
            Ok(self)
        }
    }

    /// Says EHLO (HELO when it is refused) or LHLO, and notes the
    /// extensions. False after HELO.
    async fn ehlo(&mut self, mode: Mode, helo: &str, t: &Timeouts) -> Result<bool, StartError> {
        // Nothing an earlier EHLO (before TLS) offered holds any more.
        self.starttls = false;
        self.auth.clear();
        self.pipelining = false;
        self.eight_bit = false;
        self.dsn = false;
        self.size_limit = None;
        self.xforward.clear();
        let hello = mode.hello();
        let stage = match mode {
            Mode::Smtp => "receiving the EHLO response",
            Mode::Lmtp => "receiving the LHLO response",
        };
        let ehlo = self
            .command(&format!("{hello} {helo}"), t.helo)
            .await
            .map_err(|b| StartError::Broken(b, stage))?;
        if ehlo.code / 100 == 2 {
            for ext in ehlo.lines.iter().skip(1) {
                let mut words = ext.split_whitespace();
                let keyword = words.next().map(str::to_ascii_uppercase);
                match keyword.as_deref() {
                    Some("PIPELINING") => self.pipelining = true,
                    Some("8BITMIME") => self.eight_bit = true,
                    Some("DSN") => self.dsn = true,
                    Some("STARTTLS") => self.starttls = true,
                    Some("SIZE") => {
                        self.size_limit =
                            words.next().and_then(|n| n.parse().ok()).filter(|n| *n > 0)
                    }
                    Some("AUTH") => self.auth.extend(words.map(str::to_ascii_uppercase)),
                    Some("XFORWARD") => self.xforward.extend(words.map(str::to_ascii_uppercase)),
                    // Old servers' `AUTH=PLAIN LOGIN`.
                    Some(k) if k.starts_with("AUTH=") => {
                        self.auth.push(k["AUTH=".len()..].to_owned());
                        self.auth.extend(words.map(str::to_ascii_uppercase));
                    }
                    _ => {}
                }
            }
            self.auth.dedup();
            return Ok(true);
        }
        if mode == Mode::Lmtp {
            // RFC 2033 has no HELO to fall back to.
            return Err(StartError::Helo(ehlo));
        }
        let helo_reply = self
            .command(&format!("HELO {helo}"), t.helo)
            .await
            .map_err(|b| StartError::Broken(b, "receiving the HELO response"))?;
        if helo_reply.code / 100 != 2 {
            return Err(StartError::Helo(helo_reply));
        }
        Ok(false)
    }

    /// The TLS handshake on the plain connection, and the server's
    /// certificate judged against the level.
    async fn handshake(&mut self, tls: &TlsPlan<'_>) -> Result<(), StartError> {
        let Ok(client) = tls.client else {
            return Err(tls_failure(
                "4.7.5",
                "TLS is required, but our TLS engine is unavailable".into(),
            ));
        };
        let Some(plain) = self.stream.get_mut().take_plain() else {
            return Err(tls_failure(
                "4.7.5",
                "Cannot start TLS: already encrypted".into(),
            ));
        };
        let handshake = client.connect(plain, tls.level, tls.host, &tls.names);
        let (stream, negotiated, trust) = match tokio::time::timeout(tls.timeout, handshake).await {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                info!("SSL_connect error to {}: {e}", tls.peer);
                return Err(handshake_failure());
            }
            Err(_) => {
                info!("SSL_connect error to {}: timed out", tls.peer);
                return Err(handshake_failure());
            }
        };
        // Anything the server sent before the handshake is dropped with the buffer.
        self.stream = BufReader::new(Io::Tls(Box::new(stream.into())));
        if tls.loglevel >= 1 {
            info!(
                "{} TLS connection established to {}: {}",
                trust.word(),
                tls.peer,
                negotiated.summary()
            );
        }
        if tls.level >= Level::Verify && trust < Trust::Verified {
            return Err(tls_failure(
                "4.7.5",
                "Server certificate not verified".into(),
            ));
        }
        self.tls = Some(trust);
        Ok(())
    }

    /// Reads one reply.
    pub(crate) async fn read(&mut self, limit: Duration) -> Result<Reply, Broken> {
        let r = self.read_reply(limit).await;
        self.lost |= r.is_err();
        r
    }

    async fn read_reply(&mut self, limit: Duration) -> Result<Reply, Broken> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            // A reply line longer than this is no SMTP server's (RFC 5321
            // allows 512): a hostile one cannot make us hold megabytes.
            let mut bounded = (&mut self.stream).take(MAX_REPLY_LINE);
            let n = match tokio::time::timeout(limit, bounded.read_line(&mut line)).await {
                Err(_) => return Err(Broken::TimedOut),
                Ok(Err(e)) => return Err(Broken::from(e)),
                Ok(Ok(n)) => n,
            };
            if n == 0 {
                return Err(Broken::Lost);
            }
            let line = line.trim_end_matches(['\r', '\n']);
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .filter(|c| (200..600).contains(c));
            let Some(code) = code else {
                return Err(Broken::Io(std::io::Error::other(format!(
                    "malformed reply: {line}"
                ))));
            };
            lines.push(line.get(4..).unwrap_or("").to_owned());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(Reply { code, lines });
            }
            if lines.len() > 1000 {
                return Err(Broken::Io(std::io::Error::other("reply too long")));
            }
        }
    }

    pub(crate) async fn send(&mut self, bytes: &[u8]) -> Result<(), Broken> {
        let w = self.stream.get_mut();
        let r = match w.write_all(bytes).await {
            // A TLS stream holds records until flushed.
            Ok(()) => w.flush().await,
            Err(e) => Err(e),
        };
        self.lost |= r.is_err();
        r.map_err(Broken::from)
    }

    /// Sends one command line and reads its reply.
    pub(crate) async fn command(&mut self, line: &str, limit: Duration) -> Result<Reply, Broken> {
        self.send(format!("{line}\r\n").as_bytes()).await?;
        self.read(limit).await
    }

    /// SMTP AUTH (RFC 4954) with a user name and password, by `PLAIN` or
    /// `LOGIN`. `Ok(Err(reply))`: the server refused.
    pub(crate) async fn authenticate(
        &mut self,
        mech: &str,
        user: &str,
        password: &str,
        t: &Timeouts,
    ) -> Result<Result<(), Reply>, Broken> {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let r = if mech == "PLAIN" {
            let token = b64(format!("\0{user}\0{password}").as_bytes());
            self.command(&format!("AUTH PLAIN {token}"), t.helo).await?
        } else {
            let mut r = self.command("AUTH LOGIN", t.helo).await?;
            for answer in [user, password] {
                if r.code != 334 {
                    break;
                }
                r = self.command(&b64(answer.as_bytes()), t.helo).await?;
            }
            r
        };
        Ok(if r.code == 235 { Ok(()) } else { Err(r) })
    }

    /// Says goodbye; errors do not matter any more.
    pub(crate) async fn quit(mut self, t: &Timeouts) {
        let _ = self.command("QUIT", t.quit).await;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::{Read, Write};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

    /// Every stage's timeout the same.
    pub(crate) fn timeouts(each: Duration) -> Timeouts {
        Timeouts {
            connect: each,
            helo: each,
            mail: each,
            rcpt: each,
            data_init: each,
            data_xfer: each,
            data_done: each,
            rset: each,
            quit: each,
        }
    }

    /// No TLS.
    pub(crate) fn plain_plan(peer: &str) -> TlsPlan<'static> {
        TlsPlan {
            client: Err("none"),
            level: Level::None,
            names: Vec::new(),
            wrapper: false,
            loglevel: 0,
            peer: peer.into(),
            host: "mx",
            timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn a_reset_connection_is_a_lost_connection() {
        // The server greets, reads EHLO and resets the connection (RST, not
        // FIN): Postfix logs that as "lost connection" too.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(b"220 mx ESMTP\r\n").unwrap();
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf).unwrap();
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
        });
        let t = timeouts(Duration::from_secs(5));
        let stream = Conn::connect(addr, &t).await.unwrap();
        let plan = plain_plan("mx[127.0.0.1]:25");
        let result = Conn::start(stream, Mode::Smtp, "client.example", &t, &plan).await;
        server.join().unwrap();
        assert!(
            matches!(result, Err(StartError::Broken(Broken::Lost, _))),
            "{:?}",
            result.err()
        );
    }

    /// A server on the other end of an in-memory pipe that answers each
    /// command line with the next of `replies` and records the commands.
    async fn scripted(
        server: tokio::io::DuplexStream,
        greeting: &str,
        replies: Vec<&'static str>,
    ) -> Vec<String> {
        let (r, mut w) = tokio::io::split(server);
        let mut r = tokio::io::BufReader::new(r);
        w.write_all(format!("{greeting}\r\n").as_bytes())
            .await
            .unwrap();
        let mut seen = Vec::new();
        for reply in replies {
            let mut line = String::new();
            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                break;
            }
            seen.push(line.trim_end().to_owned());
            w.write_all(reply.as_bytes()).await.unwrap();
        }
        seen
    }

    #[tokio::test]
    async fn lmtp_says_lhlo_and_reads_its_extensions() {
        let (client, server) = tokio::io::duplex(4096);
        let server = tokio::spawn(scripted(
            server,
            "220 lmtp.example LMTP ready",
            vec![
                "250-lmtp.example\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 PIPELINING\r\n",
            ],
        ));
        let t = timeouts(Duration::from_secs(5));
        let plan = plain_plan("mail.example[private/dovecot-lmtp]");
        let c = Conn::start(Box::new(client), Mode::Lmtp, "mail.example", &t, &plan)
            .await
            .unwrap();
        assert!(c.pipelining && c.eight_bit && !c.lost);
        assert_eq!(server.await.unwrap(), ["LHLO mail.example"]);
    }

    #[tokio::test]
    async fn a_refused_lhlo_is_final_without_helo() {
        // RFC 2033 has no HELO: unlike SMTP, nothing else is tried.
        let (client, server) = tokio::io::duplex(4096);
        let server = tokio::spawn(scripted(
            server,
            "220 lmtp.example LMTP ready",
            vec!["500 5.5.1 Unknown command\r\n", "250 lmtp.example\r\n"],
        ));
        let t = timeouts(Duration::from_secs(5));
        let plan = plain_plan("mail.example[private/dovecot-lmtp]");
        let r = Conn::start(Box::new(client), Mode::Lmtp, "mail.example", &t, &plan).await;
        let Err(StartError::Helo(reply)) = r else {
            panic!("{:?}", r.err());
        };
        assert_eq!(reply.text(), "500 5.5.1 Unknown command");
        assert_eq!(server.await.unwrap(), ["LHLO mail.example"]);

        // SMTP falls back to HELO.
        let (client, server) = tokio::io::duplex(4096);
        let server = tokio::spawn(scripted(
            server,
            "220 mx.example ESMTP",
            vec!["502 5.5.2 Error\r\n", "250 mx.example\r\n"],
        ));
        let c = Conn::start(Box::new(client), Mode::Smtp, "client.example", &t, &plan).await;
        assert!(c.is_ok());
        assert_eq!(
            server.await.unwrap(),
            ["EHLO client.example", "HELO client.example"]
        );
    }

    #[tokio::test]
    async fn a_zero_connect_timeout_means_none() {
        // lmtp_connect_timeout defaults to 0s: no limit of our own, as Postfix.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut t = timeouts(Duration::from_secs(5));
        t.connect = Duration::ZERO;
        assert!(Conn::connect(addr, &t).await.is_ok());
    }
}
