//! SMTP AUTH through Dovecot's authentication service
//! (`smtpd_sasl_type = dovecot`, `smtpd_sasl_path = private/auth`), in the
//! protocol Postfix speaks to it: a handshake that lists the mechanisms,
//! then one `AUTH` request per attempt, answered `CONT`, `OK` or `FAIL`.
//!
//! smtpd never sees a password: the client's base64 lines go to Dovecot as
//! they came, and nothing of them is logged. Connections are kept and reused
//! by the next attempt of any session, as Postfix keeps one per process.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// A line longer than this from Dovecot ends the connection.
const MAX_LINE: usize = 64 * 1024;
/// Connecting and each answer, as Postfix's AUTH_TIMEOUT: a stalled Dovecot
/// must not hold EHLO for long.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Idle connections kept for the next attempt.
const MAX_IDLE: usize = 4;

/// One mechanism Dovecot offers, with its properties (`plaintext`,
/// `anonymous`, `dictionary`, `active`, `forward-secrecy`, `mutual-auth`, `private`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mech {
    pub(crate) name: String,
    pub(crate) flags: Vec<String>,
}

/// `smtpd_sasl_security_options` (and its TLS variant).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Security {
    noanonymous: bool,
    noplaintext: bool,
    nodictionary: bool,
    noactive: bool,
    mutual_auth: bool,
    forward_secrecy: bool,
}

impl Security {
    pub(crate) fn parse(parameter: &str, items: &[String]) -> Result<Self, String> {
        let mut s = Self::default();
        for item in items {
            match item.to_ascii_lowercase().as_str() {
                "noanonymous" => s.noanonymous = true,
                "noplaintext" => s.noplaintext = true,
                "nodictionary" => s.nodictionary = true,
                "noactive" => s.noactive = true,
                "mutual_auth" => s.mutual_auth = true,
                "forward_secrecy" => s.forward_secrecy = true,
                other => return Err(format!("{parameter}: unknown security option \"{other}\"")),
            }
        }
        Ok(s)
    }

    /// Whether a mechanism with these properties may be offered.
    pub(crate) fn allows(&self, m: &Mech) -> bool {
        let has = |f: &str| m.flags.iter().any(|x| x.eq_ignore_ascii_case(f));
        !(has("private")
            || self.noanonymous && has("anonymous")
            || self.noplaintext && has("plaintext")
            || self.nodictionary && has("dictionary")
            || self.noactive && has("active")
            || self.mutual_auth && !has("mutual-auth")
            || self.forward_secrecy && !has("forward-secrecy"))
    }
}

/// What one step of an authentication came to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Dovecot asks the client for more: the base64 challenge for `334`.
    Continue(String),
    Success {
        user: String,
    },
    /// Always `535`: Postfix ignores Dovecot's `temp`.
    Failure {
        /// Dovecot's `reason=`, shown to the client and logged.
        reason: Option<String>,
        /// Dovecot's `user=`, for the log line.
        user: Option<String>,
    },
}

/// Why Dovecot could not be asked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("Connect to {path} failed: {}", pfx_sys::strerror(.source))]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("Protocol error: {0}")]
    Protocol(String),
    #[error("timeout talking to the authentication server")]
    Timeout,
    /// The request could not be written: Dovecot closed a kept connection.
    #[error("write to the authentication server: {0}")]
    Write(std::io::Error),
}

/// What Dovecot is told about the client in every request.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    pub(crate) service: String,
    pub(crate) local_ip: Option<std::net::IpAddr>,
    pub(crate) remote_ip: std::net::IpAddr,
    /// The session is encrypted (`secured`).
    pub(crate) secured: bool,
}

#[derive(Debug)]
struct Conn {
    stream: BufReader<UnixStream>,
    mechs: Vec<Mech>,
}

impl Conn {
    async fn line(&mut self) -> Result<String, Error> {
        let mut buf = Vec::new();
        let n = (&mut self.stream)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut buf)
            .await?;
        if n == 0 || buf.last() != Some(&b'\n') {
            return Err(Error::Protocol("connection closed or line too long".into()));
        }
        buf.pop();
        String::from_utf8(buf).map_err(|_| Error::Protocol("reply is not UTF-8".into()))
    }

    async fn send(&mut self, line: &str) -> Result<(), Error> {
        let s = self.stream.get_mut();
        s.write_all(line.as_bytes()).await.map_err(Error::Write)
    }
}

/// Dovecot's authentication service at one socket.
#[derive(Debug)]
pub(crate) struct Dovecot {
    path: PathBuf,
    idle: Mutex<Vec<Conn>>,
    next_id: AtomicU32,
}

impl Dovecot {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            idle: Mutex::default(),
            next_id: AtomicU32::new(1),
        }
    }

    async fn connect(&self) -> Result<Conn, Error> {
        let stream = UnixStream::connect(&self.path)
            .await
            .map_err(|source| Error::Connect {
                path: self.path.display().to_string(),
                source,
            })?;
        let mut c = Conn {
            stream: BufReader::new(stream),
            mechs: Vec::new(),
        };
        c.send(&format!("VERSION\t1\t0\nCPID\t{}\n", std::process::id()))
            .await?;
        loop {
            let line = c.line().await?;
            let mut f = line.split('\t');
            match f.next() {
                Some("VERSION") if f.next() != Some("1") => {
                    return Err(Error::Protocol(format!("unsupported version: {line}")));
                }
                Some("MECH") => {
                    if let Some(name) = f.next() {
                        c.mechs.push(Mech {
                            name: name.to_owned(),
                            flags: f.map(str::to_owned).collect(),
                        });
                    }
                }
                Some("DONE") => return Ok(c),
                // SPID, CUID, COOKIE: for a login process, not for smtpd.
                _ => {}
            }
        }
    }

    /// A kept connection (`true`) or a new one.
    async fn take(&self) -> Result<(Conn, bool), Error> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idle {
            Some(c) => Ok((c, true)),
            None => Ok((self.timed(self.connect()).await?, false)),
        }
    }

    fn put_back(&self, c: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(c);
        }
    }

    /// After a failure the kept connections are suspect too (Dovecot restarted).
    fn forget(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    async fn timed<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        tokio::time::timeout(TIMEOUT, f)
            .await
            .unwrap_or(Err(Error::Timeout))
    }

    /// The mechanisms Dovecot offers now.
    pub(crate) async fn mechanisms(&self) -> Result<Vec<Mech>, Error> {
        let (c, _) = self.take().await?;
        let mechs = c.mechs.clone();
        self.put_back(c);
        Ok(mechs)
    }

    /// Starts an authentication with `mech` and the client's initial
    /// response (base64, `=` already made empty).
    pub(crate) async fn start(
        &self,
        mech: &str,
        initial: Option<&str>,
        client: &Client,
    ) -> Result<(Exchange<'_>, Step), Error> {
        // A kept connection Dovecot closed since fails on the write: then
        // once more on a new connection. Credentials that were written are
        // never sent again.
        let mut fresh = false;
        loop {
            let (conn, kept) = if fresh {
                (self.timed(self.connect()).await?, false)
            } else {
                self.take().await?
            };
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let mut req = format!("AUTH\t{id}\t{mech}\tservice={}\tnologin", client.service);
            if let Some(ip) = client.local_ip {
                req.push_str(&format!("\tlip={ip}"));
            }
            req.push_str(&format!("\trip={}", client.remote_ip));
            if client.secured {
                req.push_str("\tsecured");
            }
            if let Some(r) = initial {
                req.push_str(&format!("\tresp={r}"));
            }
            req.push('\n');
            let mut ex = Exchange {
                dovecot: self,
                conn: Some(conn),
                id,
            };
            match ex.exchange(&req).await {
                Ok(step) => return Ok((ex, step)),
                Err(Error::Write(_)) if kept => {
                    self.forget();
                    fresh = true;
                }
                Err(e) => {
                    self.forget();
                    return Err(e);
                }
            }
        }
    }
}

/// One authentication in progress. Its connection goes back to the pool
/// only once Dovecot has given its final answer.
#[derive(Debug)]
pub(crate) struct Exchange<'a> {
    dovecot: &'a Dovecot,
    conn: Option<Conn>,
    id: u32,
}

impl Exchange<'_> {
    /// Sends the client's next response (base64, as the client sent it).
    pub(crate) async fn respond(&mut self, response: &str) -> Result<Step, Error> {
        if response.contains(['\t', '\n', '\r']) {
            return Err(Error::Protocol("invalid characters in a response".into()));
        }
        let line = format!("CONT\t{}\t{response}\n", self.id);
        self.exchange(&line).await
    }

    async fn exchange(&mut self, line: &str) -> Result<Step, Error> {
        let Some(mut conn) = self.conn.take() else {
            return Err(Error::Protocol("authentication already finished".into()));
        };
        let id = self.id.to_string();
        let step = self
            .dovecot
            .timed(async {
                conn.send(line).await?;
                loop {
                    let reply = conn.line().await?;
                    let mut f = reply.split('\t');
                    let (kind, rid) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
                    if rid != id {
                        // An answer to an attempt given up earlier.
                        continue;
                    }
                    let params: Vec<&str> = f.collect();
                    // Shown to the client and logged: printable, as Postfix.
                    let param = |k: &str| {
                        params
                            .iter()
                            .find_map(|p| p.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
                            .map(|v| {
                                v.chars()
                                    .map(|c| if c.is_control() { '?' } else { c })
                                    .collect::<String>()
                            })
                    };
                    return match kind {
                        "CONT" => Ok(Step::Continue(
                            params.first().copied().unwrap_or("").to_owned(),
                        )),
                        "OK" => Ok(match param("user") {
                            Some(user) => Step::Success { user },
                            None => Step::Failure {
                                reason: Some("Authentication backend error".into()),
                                user: None,
                            },
                        }),
                        "FAIL" => Ok(Step::Failure {
                            reason: param("reason").filter(|r| !r.is_empty()),
                            user: param("user"),
                        }),
                        other => Err(Error::Protocol(format!("unexpected reply \"{other}\""))),
                    };
                }
            })
            .await?;
        match step {
            Step::Continue(_) => self.conn = Some(conn),
            _ => self.dovecot.put_back(conn),
        }
        Ok(step)
    }
}
