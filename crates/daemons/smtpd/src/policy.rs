//! `check_policy_service`: Postfix's policy delegation protocol
//! (SMTPD_POLICY_README). A request is `name=value` lines ended by an
//! empty line, sent over `inet:host:port` or `unix:path` (relative to the
//! queue directory); the answer's `action=` is judged like an access table
//! value. Connections are kept for `max_idle` and at most `max_ttl`; a
//! failed request is tried `try_limit` times, `retry_delay` apart, then
//! `default_action` applies.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, Instant};

use pfx_config::restriction::PolicyService;
use pfx_config::{BuildError, Config};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tracing::warn;

use crate::check::Facts;
use crate::settings::Settings;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Conn {
    io: BufReader<Pin<Box<dyn Io>>>,
    opened: Instant,
    used: Instant,
}

/// One policy server as a list names it, with its idle connections.
pub(crate) struct Client {
    endpoint: String,
    timeout: Duration,
    max_idle: Duration,
    max_ttl: Duration,
    try_limit: u32,
    retry_delay: Duration,
    default_action: String,
    context: String,
    queue_dir: PathBuf,
    idle: std::sync::Mutex<Vec<Conn>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "policy::Client({})", self.endpoint)
    }
}

/// The policy servers of one configuration, by the spec that names them.
#[derive(Debug, Default)]
pub(crate) struct Clients(HashMap<PolicyService, Client>);

impl Clients {
    pub(crate) fn new<'a>(
        cfg: &Config,
        specs: impl Iterator<Item = &'a PolicyService>,
    ) -> Result<Self, BuildError> {
        let queue_dir = PathBuf::from(cfg.get("queue_directory")?);
        let mut out = HashMap::new();
        for spec in specs {
            if out.contains_key(spec) {
                continue;
            }
            let client = Client {
                endpoint: spec.endpoint.clone(),
                timeout: spec
                    .timeout
                    .map_or_else(|| cfg.time("smtpd_policy_service_timeout"), Ok)?,
                max_idle: spec
                    .max_idle
                    .map_or_else(|| cfg.time("smtpd_policy_service_max_idle"), Ok)?,
                max_ttl: spec
                    .max_ttl
                    .map_or_else(|| cfg.time("smtpd_policy_service_max_ttl"), Ok)?,
                try_limit: spec
                    .try_limit
                    .map_or_else(|| cfg.count("smtpd_policy_service_try_limit"), Ok)?
                    .max(1),
                retry_delay: spec
                    .retry_delay
                    .map_or_else(|| cfg.time("smtpd_policy_service_retry_delay"), Ok)?,
                default_action: spec
                    .default_action
                    .clone()
                    .map_or_else(|| cfg.get("smtpd_policy_service_default_action"), Ok)?,
                context: spec
                    .policy_context
                    .clone()
                    .map_or_else(|| cfg.get("smtpd_policy_service_policy_context"), Ok)?,
                queue_dir: queue_dir.clone(),
                idle: std::sync::Mutex::default(),
            };
            out.insert(spec.clone(), client);
        }
        Ok(Self(out))
    }
}

/// The server's action, or (`Err`) the default action after a failure.
pub(crate) async fn ask(
    st: &Settings,
    spec: &PolicyService,
    f: &Facts<'_>,
) -> Result<String, String> {
    let Some(client) = st.policies.0.get(spec) else {
        return Err("451 4.3.5 Server configuration problem".into());
    };
    let request = request(client, f);
    let shown = client
        .endpoint
        .split_once(':')
        .map_or(client.endpoint.as_str(), |(_, rest)| rest);
    for attempt in 1..=client.try_limit {
        let result = tokio::time::timeout(client.timeout, client.exchange(&request)).await;
        let error = match result {
            Ok(Ok(Some(action))) => return Ok(action),
            Ok(Ok(None)) => {
                warn!("missing attribute action in input from {shown}");
                std::io::Error::other("missing attribute action")
            }
            Ok(Err(e)) => e,
            Err(_) => std::io::Error::new(std::io::ErrorKind::TimedOut, "Connection timed out"),
        };
        // As Postfix: a server that went away (or restarts) is quietly
        // tried again; anything else is said at every attempt.
        let quiet = matches!(
            error.raw_os_error().map(nix::errno::Errno::from_raw),
            Some(
                nix::errno::Errno::EPIPE
                    | nix::errno::Errno::ENOENT
                    | nix::errno::Errno::ECONNRESET
            )
        );
        if attempt == client.try_limit || !quiet {
            warn!("problem talking to server {shown}: {}", describe(&error));
        }
        if attempt < client.try_limit {
            tokio::time::sleep(client.retry_delay).await;
        }
    }
    Err(client.default_action.clone())
}

/// An I/O error as strerror says it.
fn describe(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_owned(),
        None => e.to_string(),
    }
}

impl Client {
    /// One request on a kept connection or a new one; `Ok(None)` when the
    /// answer had no action.
    async fn exchange(&self, request: &str) -> std::io::Result<Option<String>> {
        let kept = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            idle.retain(|c| {
                now.duration_since(c.used) < self.max_idle
                    && now.duration_since(c.opened) < self.max_ttl
            });
            idle.pop()
        };
        let mut conn = match kept {
            Some(c) => c,
            None => self.connect().await?,
        };
        let answer = Self::talk(&mut conn, request).await;
        if answer.is_ok() {
            conn.used = Instant::now();
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn);
        }
        answer
    }

    async fn connect(&self) -> std::io::Result<Conn> {
        let io: Pin<Box<dyn Io>> = match self.endpoint.split_once(':') {
            Some(("inet", addr)) => {
                let (host, port) = addr
                    .rsplit_once(':')
                    .ok_or_else(|| std::io::Error::other("bad address"))?;
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let s = tokio::net::TcpStream::connect((host, port_number(port)?)).await?;
                s.set_nodelay(true)?;
                Box::pin(s)
            }
            Some(("unix", path)) => {
                let p = if Path::new(path).is_absolute() {
                    PathBuf::from(path)
                } else {
                    self.queue_dir.join(path)
                };
                Box::pin(tokio::net::UnixStream::connect(p).await?)
            }
            _ => return Err(std::io::Error::other("invalid transport")),
        };
        let now = Instant::now();
        Ok(Conn {
            io: BufReader::new(io),
            opened: now,
            used: now,
        })
    }

    async fn talk(conn: &mut Conn, request: &str) -> std::io::Result<Option<String>> {
        conn.io.get_mut().write_all(request.as_bytes()).await?;
        conn.io.get_mut().flush().await?;
        let mut action = None;
        loop {
            let mut line = String::new();
            let mut limited = (&mut conn.io).take(64 * 1024);
            if limited.read_line(&mut line).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                return Ok(action);
            }
            if let Some(v) = line.strip_prefix("action=") {
                action = Some(v.to_owned());
            }
        }
    }
}

fn port_number(p: &str) -> std::io::Result<u16> {
    p.parse().or_else(|_| match p {
        "smtp" => Ok(25),
        _ => Err(std::io::Error::other(format!("unknown service {p}"))),
    })
}

/// The request, in the order Postfix 3.7 sends it.
fn request(client: &Client, f: &Facts<'_>) -> String {
    let tls = f.tls;
    let login = f.login;
    let (server_address, server_port) = f
        .server
        .map(|s| (s.ip().to_string(), s.port().to_string()))
        .unwrap_or_default();
    let rcpt_count = if matches!(f.command, "DATA" | "END-OF-MESSAGE") {
        f.rcpt_count
    } else {
        0
    };
    let attrs: [(&str, String); 28] = [
        ("request", "smtpd_access_policy".into()),
        ("protocol_state", f.command.into()),
        (
            "protocol_name",
            if f.esmtp { "ESMTP" } else { "SMTP" }.into(),
        ),
        ("client_address", f.client_ip.to_string()),
        ("client_name", f.name.into()),
        ("client_port", f.client_port.to_string()),
        ("reverse_client_name", f.reverse_name.into()),
        ("server_address", server_address),
        ("server_port", server_port),
        ("helo_name", f.helo.unwrap_or_default().into()),
        ("sender", f.sender.unwrap_or_default().into()),
        ("recipient", f.recipient.unwrap_or_default().into()),
        ("recipient_count", rcpt_count.to_string()),
        ("queue_id", f.queue_id.unwrap_or_default().into()),
        ("instance", f.instance.into()),
        ("size", f.size.to_string()),
        ("etrn_domain", f.etrn.unwrap_or_default().into()),
        ("stress", String::new()),
        ("sasl_method", login.map(|l| l.0).unwrap_or_default().into()),
        (
            "sasl_username",
            login.map(|l| l.1).unwrap_or_default().into(),
        ),
        ("sasl_sender", f.sasl_sender.unwrap_or_default().into()),
        // Client certificates are never verified: no trusted subject.
        ("ccert_subject", String::new()),
        ("ccert_issuer", String::new()),
        (
            "ccert_fingerprint",
            tls.and_then(|t| t.peer.as_ref())
                .map(|p| p.fingerprint.clone())
                .unwrap_or_default(),
        ),
        (
            "ccert_pubkey_fingerprint",
            tls.and_then(|t| t.peer.as_ref())
                .map(|p| p.pkey_fingerprint.clone())
                .unwrap_or_default(),
        ),
        (
            "encryption_protocol",
            tls.map(|t| t.protocol).unwrap_or_default().into(),
        ),
        (
            "encryption_cipher",
            tls.map(|t| t.cipher.clone()).unwrap_or_default(),
        ),
        ("encryption_keysize", tls.map_or(0, |t| t.bits).to_string()),
    ];
    let mut out = String::with_capacity(512);
    for (name, value) in attrs {
        // A value never carries a line end into the request.
        let value: String = value.chars().filter(|c| *c != '\n' && *c != '\r').collect();
        out.push_str(&format!("{name}={value}\n"));
    }
    out.push_str(&format!("policy_context={}\n\n", client.context));
    out
}
