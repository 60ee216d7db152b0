//! One SMTP conversation as a client: greeting, EHLO (HELO when EHLO is
//! refused), and mail transactions with PIPELINING when the server offers
//! it. Every read has its own timeout, as Postfix's `smtp_*_timeout`s.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

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

/// A connected server, after EHLO.
pub(crate) struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    pub(crate) pipelining: bool,
    pub(crate) eight_bit: bool,
    /// The server's SIZE limit, if it announced one (0: none).
    pub(crate) size_limit: Option<u64>,
    /// Transactions done on this connection so far.
    pub(crate) uses: u32,
}

impl Conn {
    pub(crate) async fn connect(
        addr: SocketAddr,
        t: &Timeouts,
    ) -> Result<TcpStream, std::io::Error> {
        match tokio::time::timeout(t.connect, TcpStream::connect(addr)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "Connection timed out",
            )),
        }
    }

    /// Reads the greeting and says EHLO (or HELO). `Ok(Err((reply, None)))`
    /// is a server that greets with an error, `Some("HELO")` one that refuses
    /// HELO after EHLO.
    pub(crate) async fn start(
        stream: TcpStream,
        helo: &str,
        t: &Timeouts,
    ) -> Result<Result<Self, (Reply, Option<&'static str>)>, Broken> {
        let _ = stream.set_nodelay(true);
        let (r, w) = stream.into_split();
        let mut c = Self {
            reader: BufReader::new(r),
            writer: w,
            pipelining: false,
            eight_bit: false,
            size_limit: None,
            uses: 0,
        };
        let greeting = c.read(t.helo).await?;
        if greeting.code / 100 != 2 {
            return Ok(Err((greeting, None)));
        }
        let ehlo = c.command(&format!("EHLO {helo}"), t.helo).await?;
        if ehlo.code / 100 == 2 {
            for ext in ehlo.lines.iter().skip(1) {
                let mut words = ext.split_whitespace();
                match words.next().map(str::to_ascii_uppercase).as_deref() {
                    Some("PIPELINING") => c.pipelining = true,
                    Some("8BITMIME") => c.eight_bit = true,
                    Some("SIZE") => {
                        c.size_limit = words.next().and_then(|n| n.parse().ok()).filter(|n| *n > 0)
                    }
                    _ => {}
                }
            }
            return Ok(Ok(c));
        }
        let helo_reply = c.command(&format!("HELO {helo}"), t.helo).await?;
        if helo_reply.code / 100 != 2 {
            return Ok(Err((helo_reply, Some("HELO"))));
        }
        Ok(Ok(c))
    }

    /// Reads one reply.
    pub(crate) async fn read(&mut self, limit: Duration) -> Result<Reply, Broken> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = match tokio::time::timeout(limit, self.reader.read_line(&mut line)).await {
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
        self.writer.write_all(bytes).await.map_err(Broken::from)
    }

    /// Sends one command line and reads its reply.
    pub(crate) async fn command(&mut self, line: &str, limit: Duration) -> Result<Reply, Broken> {
        self.send(format!("{line}\r\n").as_bytes()).await?;
        self.read(limit).await
    }

    /// Says goodbye; errors do not matter any more.
    pub(crate) async fn quit(mut self, t: &Timeouts) {
        let _ = self.command("QUIT", t.quit).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

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
        let second = Duration::from_secs(5);
        let t = Timeouts {
            connect: second,
            helo: second,
            mail: second,
            rcpt: second,
            data_init: second,
            data_xfer: second,
            data_done: second,
            rset: second,
            quit: second,
        };
        let stream = Conn::connect(addr, &t).await.unwrap();
        let result = Conn::start(stream, "client.example", &t).await;
        server.join().unwrap();
        assert!(matches!(result, Err(Broken::Lost)), "{:?}", result.err());
    }
}
