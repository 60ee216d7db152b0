//! One SMTP session: read commands, answer them in order, stream DATA.
//!
//! Replies are buffered and written when no further command is waiting in
//! the input (RFC 2920 pipelining), and always before blocking to read.
//! The session runs over any byte stream: a TCP connection, a TLS stream,
//! or an in-memory pipe in the unit tests.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use pfx_ipc::cleanup::{Envelope, NewRecipient, NotStarted};
use pfx_ipc::proto::{CleanupReply, FlushReply, FlushRequest, Origin, CHUNK};
use pfx_smtp_proto::data::{DataDecoder, Progress};
use pfx_smtp_proto::dsn;
use pfx_smtp_proto::xforward::{self, Forwarded};
use pfx_smtp_proto::{
    command::{CommandError, Param},
    data_syntax, etrn_domain, multiline, parse_command, proxy_reply, vrfy_address, Command, Reply,
};
use pfx_tls::{Io, Negotiated};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{info, warn};

use crate::check::{self, Effects, Facts, Peer};
use crate::limits::{Events, Limit};
use crate::sasl::Step;
use crate::settings::{BareNewline, Settings};
use crate::stages::Stage;
use crate::stats::Stats;
use crate::tls::Level;
use crate::Shared;

/// A command line longer than this is refused (Postfix's line_length_limit).
const MAX_LINE: usize = 2048;
/// The commands `smtpd_junk_command_limit` counts (Postfix's HELO, EHLO,
/// NOOP, RSET, VRFY and ETRN).
const JUNK_VERBS: [&str; 6] = ["helo", "ehlo", "rset", "noop", "vrfy", "etrn"];
/// The commands a client may give before STARTTLS where TLS is required
/// (Postfix's pre-TLS commands); the rest get `530 5.7.0`. An unknown
/// command keeps its `500`.
const PRE_TLS_VERBS: [&str; 7] = [
    "helo", "ehlo", "xclient", "starttls", "noop", "quit", "unknown",
];
/// The commands that must end a pipelined group (RFC 2920): input after
/// them, before their reply, is improper pipelining.
const LAST_IN_GROUP: [&str; 5] = ["helo", "ehlo", "data", "noop", "vrfy"];
/// Why a session ends early.
enum End {
    /// The client went away (or the connection broke).
    Lost,
    Timeout,
    /// QUIT, or too many errors: already answered.
    Done,
}

struct Session<S> {
    st: Arc<Settings>,
    io: Io<S>,
    /// What the TLS handshake agreed on, once the session is encrypted.
    tls: Option<Negotiated>,
    /// The SASL mechanism and login name, once AUTH succeeded.
    login: Option<(String, String)>,
    /// The mechanisms the last EHLO reply offered.
    mechs: Vec<String>,
    /// MAIL FROM's `AUTH=` (RFC 4954), when SASL is on.
    sasl_sender: Option<String>,
    local_ip: Option<IpAddr>,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    peer: SocketAddr,
    /// The address and port the client connected to.
    server: Option<SocketAddr>,
    /// `name[address]` as in every log line.
    client: String,
    /// The verified client name, or `unknown`.
    client_name: String,
    name_status: Peer,
    /// The PTR name, verified or not, or `unknown`.
    reverse_name: String,
    reverse_status: Peer,
    /// The client sent a command before it could know the reply to the
    /// last (Postfix's SMTPD_FLAG_ILL_PIPELINING).
    ill_pipelining: bool,
    /// What the restrictions asked for this transaction's message.
    effects: Effects,
    /// MAIL FROM's SIZE=.
    declared_size: u64,
    /// The policy instance of the current transaction.
    instance: String,
    origin: Origin,
    helo: Option<String>,
    esmtp: bool,
    sender: Option<String>,
    /// MAIL FROM said BODY=8BITMIME (recorded for the smtp client).
    body_8bit: bool,
    recipients: Vec<Rcpt>,
    /// MAIL FROM's RET= (Postfix's `ret_flags`; 0: none) and ENVID=
    /// (decoded).
    dsn_ret: u32,
    dsn_envid: Option<String>,
    stats: Stats,
    errors: u32,
    /// Junk commands since the client last delivered mail.
    junk: u32,
    /// The last command's verb as the statistics name it; upper case in
    /// `timeout after RCPT` and the like.
    last_verb: &'static str,
    /// A command line read inside a BDAT transaction that ended it, for
    /// the command loop to serve next.
    pushed: Option<Vec<u8>>,
    shared: Arc<Shared>,
    /// What this client reports to anvil; `None` when nothing (see `limits`).
    events: Option<Events>,
    /// `smtpd_milters`' session; whether they were told of this
    /// transaction's MAIL (an ABORT is then owed).
    milters: Option<pfx_milter::Session>,
    milter_mail: bool,
    /// The client may send XFORWARD (`smtpd_authorized_xforward_hosts`);
    /// what it forwarded for the current transaction.
    xforward_ok: bool,
    xforward: Forwarded,
    /// Fires no later than `smtpd_timeout` after the current read began.
    idle: Pin<Box<tokio::time::Sleep>>,
}

/// The client's names as Postfix finds them: a PTR name that resolves
/// back to the address, else `unknown` (with Postfix's warning when the
/// names disagree), and the PTR name itself.
async fn client_names(st: &Settings, ip: std::net::IpAddr) -> pfx_dns::ClientNames {
    let Some(resolver) = &st.resolver else {
        return pfx_dns::ClientNames::default();
    };
    let names = resolver.client_names(ip).await;
    if let Some(w) = &names.warning {
        warn!("{w}");
    }
    names
}

fn status(found: bool, temporary: bool) -> Peer {
    match (found, temporary) {
        (true, _) => Peer::Ok,
        (false, true) => Peer::Temporary,
        (false, false) => Peer::Permanent,
    }
}

/// Serves one client on `io`, from the greeting to the disconnect line.
/// `local_ip`: the address the client connected to.
pub(crate) async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    st: Arc<Settings>,
    io: S,
    peer: SocketAddr,
    server: Option<SocketAddr>,
    shared: Arc<Shared>,
) {
    let local_ip = server.map(|s| s.ip());
    let ip = peer.ip();
    let names = client_names(&st, ip).await;
    let name_status = status(names.name.is_some(), names.name_temporary);
    let reverse_status = status(names.reverse.is_some(), names.reverse_temporary);
    let name = names.name.unwrap_or_else(|| "unknown".into());
    let reverse_name = names.reverse.unwrap_or_else(|| "unknown".into());
    let client = format!("{name}[{ip}]");
    info!("connect from {client}");
    // Postfix's permit_inet_interfaces: a client on one of our own addresses is local.
    let origin = if Some(ip) == local_ip {
        Origin::Local
    } else {
        Origin::Smtp
    };
    let timeout = st.timeout;
    let events = Events::new(&st, &name, &client, ip);
    let xforward_ok = st.xforward_hosts.matches(&name, ip);
    let mut s = Session {
        st,
        io: Io::Plain(io),
        tls: None,
        login: None,
        mechs: Vec::new(),
        sasl_sender: None,
        local_ip,
        inbuf: Vec::with_capacity(16 * 1024),
        outbuf: Vec::with_capacity(1024),
        peer,
        server,
        client,
        client_name: name,
        name_status,
        reverse_name,
        reverse_status,
        ill_pipelining: false,
        effects: Effects::default(),
        declared_size: 0,
        instance: String::new(),
        origin,
        helo: None,
        esmtp: false,
        sender: None,
        body_8bit: false,
        recipients: Vec::new(),
        dsn_ret: 0,
        dsn_envid: None,
        stats: Stats::default(),
        errors: 0,
        junk: 0,
        last_verb: "connect",
        pushed: None,
        shared,
        events,
        milters: None,
        milter_mail: false,
        xforward_ok,
        xforward: Forwarded::default(),
        idle: Box::pin(tokio::time::sleep(timeout)),
    };
    // SMTPS: no banner until the handshake is done; a failed one is
    // logged, and a client over the new TLS session limit is dropped.
    let mut greet = !s.st.tls.wrapper || (!s.refuse_wrapper().await && s.start_tls().await);
    if greet {
        // A client that talks before the greeting is remembered
        // (reject_unauth_pipelining).
        s.check_pipelining("CONNECT").await;
        // Postfix's connection count and rate limits.
        if let Some(r) = s.connect_event().await {
            s.reply_now(&r).await;
            greet = false;
        }
    }
    let mut banner = Reply::plain(220, s.st.banner.clone());
    if greet {
        match s.milter_connect().await {
            Some((r, true)) => {
                s.reply_now(&r).await;
                greet = false;
            }
            Some((r, false)) => banner = r,
            None => {}
        }
    }
    if greet {
        s.reply(&banner);
        match s.serve().await {
            End::Timeout => {
                let r = Reply::new(
                    421,
                    "4.4.2",
                    format!("{} Error: timeout exceeded", s.st.myhostname),
                );
                s.reply_now(&r).await;
                info!(
                    "timeout after {} from {}",
                    s.last_verb.to_ascii_uppercase(),
                    s.client
                );
            }
            End::Lost => info!(
                "lost connection after {} from {}",
                s.last_verb.to_ascii_uppercase(),
                s.client
            ),
            End::Done => {}
        }
    }
    if let Some(mut m) = s.milters.take() {
        if s.milter_mail {
            m.abort().await;
        }
        m.quit().await;
    }
    if let Some(ev) = s.events.as_mut() {
        ev.disconnect(&s.shared.anvil).await;
    }
    info!("disconnect from {}{}", s.client, s.stats.text());
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    fn reply(&mut self, r: &Reply) {
        let footed;
        let r = match self.footer(r) {
            Some(f) => {
                footed = f;
                &footed
            }
            None => r,
        };
        let wire = r.to_wire();
        if self.st.smtputf8 || wire.is_ascii() {
            self.outbuf.extend_from_slice(wire.as_bytes());
        } else {
            // Without SMTPUTF8, Postfix sends no 8-bit byte in a reply: each
            // becomes a space.
            self.outbuf
                .extend(wire.bytes().map(|b| if b.is_ascii() { b } else { b' ' }));
        }
    }

    /// `smtpd_reject_footer` under a 4xx or 5xx reply: on lines of its
    /// own (`\\n` starts another), or on the same line after `\\c`.
    fn footer(&self, r: &Reply) -> Option<Reply> {
        let template = &self.st.reject_footer;
        if r.code < 400 || template.is_empty() {
            return None;
        }
        let lookup = |n: &str| -> Option<String> {
            let v = match n {
                "server_name" => self.st.myhostname.clone(),
                "localtime" => pfx_sys::time::log_stamp(std::time::SystemTime::now()),
                _ => check::macro_value(&self.facts("RCPT"), n)?,
            };
            Some(v.replace('$', "$$"))
        };
        let text = pfx_config::expand::expand(template, &lookup).ok()?;
        let text = text.replace("\\n", "\n");
        let mut out = r.clone();
        match text.strip_prefix("\\c") {
            Some(same_line) => out.text.push_str(same_line),
            None => {
                out.text.push('\n');
                out.text.push_str(&text);
            }
        }
        Some(out)
    }

    async fn flush(&mut self) -> bool {
        if self.outbuf.is_empty() {
            return true;
        }
        let ok = self.io.write_all(&self.outbuf).await.is_ok() && self.io.flush().await.is_ok();
        self.outbuf.clear();
        ok
    }

    async fn reply_now(&mut self, r: &Reply) {
        self.reply(r);
        self.flush().await;
    }

    fn count(&mut self, verb: &str, ok: bool) {
        self.stats.count(verb, ok);
    }

    /// Reads more input; false at end of stream.
    async fn fill(&mut self) -> Result<bool, End> {
        if !self.flush().await {
            return Err(End::Lost);
        }
        // Read straight into the input buffer's spare room: a buffer of
        // our own would be zeroed for every command.
        self.inbuf.reserve(16 * 1024);
        // One timer per session, moved only when it fires: a new timer for
        // every read would make the runtime wake itself up for each command.
        let deadline = tokio::time::Instant::now() + self.st.timeout;
        loop {
            tokio::select! {
                biased;
                r = self.io.read_buf(&mut self.inbuf) => return Ok(matches!(r, Ok(n) if n > 0)),
                () = &mut self.idle => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(End::Timeout);
                    }
                    self.idle.as_mut().reset(deadline);
                }
            }
        }
    }

    /// The next command line, without its line end.
    async fn line(&mut self) -> Result<Vec<u8>, End> {
        // As Postfix: only the first line_length_limit bytes count.
        let mut line = self.line_within(MAX_LINE).await?;
        line.truncate(MAX_LINE);
        Ok(line)
    }

    /// The next line, without its line end. Of a longer one only the first
    /// `limit + 1` bytes are kept, so the caller can tell it was too long.
    async fn line_within(&mut self, limit: usize) -> Result<Vec<u8>, End> {
        loop {
            if let Some(i) = self.inbuf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.inbuf.drain(..=i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                line.truncate(limit + 1);
                return Ok(line);
            }
            if self.inbuf.len() > limit + 1 {
                // Keep reading until the line ends; only its start matters.
                self.inbuf.truncate(limit + 1);
            }
            if !self.fill().await? {
                return Err(End::Lost);
            }
        }
    }

    async fn serve(&mut self) -> End {
        loop {
            if self.too_many_errors().await {
                return End::Done;
            }
            let line = match self.pushed.take() {
                Some(l) => l,
                None => match self.line().await {
                    Ok(l) => l,
                    Err(e) => return e,
                },
            };
            let parsed = parse_command(&line);
            let verb = parsed.as_ref().map_or_else(|e| e.verb, Command::verb);
            if !self.ill_pipelining && (!self.esmtp || LAST_IN_GROUP.contains(&verb)) {
                self.check_pipelining(verb).await;
            }
            if let Some(r) = self.must_start_tls(&parsed) {
                // As Postfix: an error, but not a junk command.
                self.last_verb = parsed.as_ref().map_or("unknown", Command::verb);
                self.count(self.last_verb, false);
                self.pace().await;
                self.errors += 1;
                self.reply(&r);
                continue;
            }
            let (verb, reply) = match parsed {
                Err(e) => (e.verb, e.reply),
                Ok(Command::StartTls { arguments }) => {
                    self.last_verb = "starttls";
                    match self.starttls(arguments).await {
                        Ok(Some(r)) => ("starttls", r),
                        // Encrypted now; answered and counted.
                        Ok(None) => continue,
                        Err(e) => return e,
                    }
                }
                Ok(Command::Auth(arg)) => {
                    self.last_verb = "auth";
                    match self.auth(&arg).await {
                        Ok(r) => ("auth", r),
                        Err(e) => return e,
                    }
                }
                Ok(Command::Ehlo(name)) => {
                    self.last_verb = "ehlo";
                    self.mechs = self.offered_mechanisms(true).await;
                    self.milter_abort().await;
                    let before = self.esmtp;
                    let r = self.command(Command::Ehlo(name.clone()));
                    if let Some(bye) = self.milter_helo(&name, "EHLO", before).await {
                        self.reply_now(&bye).await;
                        return End::Done;
                    }
                    ("ehlo", r)
                }
                Ok(Command::Helo(name)) => {
                    self.last_verb = "helo";
                    self.milter_abort().await;
                    let before = self.esmtp;
                    let r = self.command(Command::Helo(name.clone()));
                    if let Some(bye) = self.milter_helo(&name, "HELO", before).await {
                        self.reply_now(&bye).await;
                        return End::Done;
                    }
                    ("helo", r)
                }
                Ok(Command::Rset) => {
                    self.last_verb = "rset";
                    self.milter_abort().await;
                    ("rset", self.command(Command::Rset))
                }
                Ok(Command::Unknown(verb)) => {
                    self.last_verb = "unknown";
                    let r = match self.milter_unknown(&verb).await {
                        Some(r) => r,
                        None => self.command(Command::Unknown(verb)),
                    };
                    ("unknown", r)
                }
                Ok(Command::Data { arguments }) => {
                    self.last_verb = "data";
                    match self.data(arguments).await {
                        Ok(r) => ("data", r),
                        Err(e) => {
                            self.count("data", false);
                            return e;
                        }
                    }
                }
                Ok(Command::Bdat(chunk)) => {
                    self.last_verb = "bdat";
                    match self.bdat(chunk, &line).await {
                        Ok(Some(r)) => ("bdat", r),
                        // A command ended the transaction: it is next.
                        Ok(None) => continue,
                        Err(e) => {
                            if !matches!(e, End::Done) {
                                self.count("bdat", false);
                            }
                            return e;
                        }
                    }
                }
                Ok(Command::NonSmtp(line)) => {
                    self.count("unknown", false);
                    warn!("non-SMTP command from {}: {line}", self.client);
                    self.pace().await;
                    self.reply_now(&pfx_smtp_proto::non_smtp_goodbye()).await;
                    return End::Done;
                }
                Ok(Command::Quit) => {
                    self.count("quit", true);
                    self.pace().await;
                    self.reply_now(&Reply::new(221, "2.0.0", "Bye")).await;
                    return End::Done;
                }
                Ok(Command::Etrn(arg)) => {
                    self.last_verb = "etrn";
                    ("etrn", self.etrn(&arg).await)
                }
                Ok(Command::Mail { addr, params }) => {
                    self.last_verb = "mail";
                    ("mail", self.mail(addr, &params).await)
                }
                Ok(Command::Rcpt { addr, params }) => {
                    self.last_verb = "rcpt";
                    ("rcpt", self.rcpt(addr, &params).await)
                }
                Ok(Command::Vrfy(text)) => {
                    self.last_verb = "vrfy";
                    ("vrfy", self.vrfy(text).await)
                }
                Ok(cmd) => {
                    self.last_verb = cmd.verb();
                    (self.last_verb, self.command(cmd))
                }
            };
            self.conclude(verb, reply).await;
        }
    }

    /// `smtpd_hard_error_limit` reached: `421` and the session ends. As
    /// Postfix: checked before the next command is read (also inside a BDAT
    /// transaction), so the reply to the error that reached the limit has
    /// gone out first.
    async fn too_many_errors(&mut self) -> bool {
        if self.errors < self.st.hard_error_limit {
            return false;
        }
        self.pace().await;
        self.reply(&Reply::new(
            421,
            "4.7.0",
            format!("{} Error: too many errors", self.st.myhostname),
        ));
        self.flush().await;
        info!(
            "too many errors after {} from {}",
            self.last_verb.to_ascii_uppercase(),
            self.client
        );
        true
    }

    /// What follows every command's reply: counted, paced (past the soft
    /// error limit), errors and junk commands counted, the reply queued.
    async fn conclude(&mut self, verb: &'static str, reply: Reply) {
        let delivered = (verb == "data" || verb == "bdat") && reply.code == 250;
        self.conclude_as(verb, reply, delivered).await;
    }

    /// [`Self::conclude`], saying whether the reply ends a delivered
    /// message: only that starts the junk command count again (not the
    /// `250 Ok: N bytes` of a BDAT chunk in the middle).
    async fn conclude_as(&mut self, verb: &'static str, reply: Reply, delivered: bool) {
        self.count(verb, reply.is_positive());
        self.pace().await;
        if !reply.is_positive() {
            self.errors += 1;
        }
        if JUNK_VERBS.contains(&verb) {
            // Past smtpd_junk_command_limit each one counts as an error.
            if self.junk > self.st.junk_command_limit {
                self.errors += 1;
            }
            self.junk += 1;
        } else if delivered {
            // The count starts again once the client has delivered mail.
            self.junk = 0;
        }
        self.reply(&reply);
    }

    /// Whether the client sent more than the command just read before it
    /// could have seen the reply; logged once, as Postfix.
    async fn check_pipelining(&mut self, verb: &str) {
        if self.inbuf.is_empty() {
            // What is already on the socket counts too: one read that does not wait.
            let mut buf = [0u8; 1024];
            tokio::select! {
                biased;
                r = self.io.read(&mut buf) => if let Ok(n) = r {
                    self.inbuf.extend_from_slice(&buf[..n]);
                },
                () = std::future::ready(()) => {}
            }
        }
        if self.inbuf.is_empty() {
            return;
        }
        let shown: String = self.inbuf[..self.inbuf.len().min(100)]
            .iter()
            .flat_map(|&b| std::ascii::escape_default(b))
            .map(char::from)
            .collect();
        info!(
            "improper command pipelining after {} from {}: {shown}",
            verb.to_ascii_uppercase(),
            self.client
        );
        self.ill_pipelining = true;
    }

    /// Postfix's tarpit: once a client has made `smtpd_soft_error_limit`
    /// errors, every reply waits `smtpd_error_sleep_time`.
    async fn pace(&mut self) {
        if self.errors >= self.st.soft_error_limit {
            self.flush().await;
            tokio::time::sleep(self.st.error_sleep).await;
        }
    }

    /// What the restrictions are judged on at `command`.
    fn facts(&self, command: &'static str) -> Facts<'_> {
        Facts {
            client_ip: self.peer.ip(),
            client_port: self.peer.port(),
            client: &self.client,
            name: &self.client_name,
            name_status: self.name_status,
            reverse_name: &self.reverse_name,
            reverse_status: self.reverse_status,
            server: self.server,
            helo: self.helo.as_deref(),
            esmtp: self.esmtp,
            sender: self.sender.as_deref(),
            recipient: None,
            rcpt_count: self.recipients.len(),
            login: self
                .login
                .as_ref()
                .map(|(method, user)| (method.as_str(), user.as_str())),
            sasl_sender: self.sasl_sender.as_deref(),
            tls: self.tls.as_ref(),
            ill_pipelining: self.ill_pipelining,
            queue_id: None,
            size: self.declared_size,
            etrn: None,
            instance: &self.instance,
            command,
        }
    }

    /// Whether the session is encrypted.
    fn encrypted(&self) -> bool {
        self.tls.is_some()
    }

    /// `smtpd_tls_security_level = encrypt`: `530 5.7.0` for a command
    /// other than the few allowed before STARTTLS.
    fn must_start_tls(&self, parsed: &Result<Command, CommandError>) -> Option<Reply> {
        if self.st.tls.level != Level::Encrypt || self.encrypted() {
            return None;
        }
        let verb = parsed.as_ref().map_or_else(|e| e.verb, Command::verb);
        if PRE_TLS_VERBS.contains(&verb) || matches!(parsed, Ok(Command::NonSmtp(_))) {
            return None;
        }
        Some(Reply::new(
            530,
            "5.7.0",
            "Must issue a STARTTLS command first",
        ))
    }

    /// The client limits (see `limits`): the connection, before the greeting.
    async fn connect_event(&mut self) -> Option<Reply> {
        let ev = self.events.as_mut()?;
        ev.connect(&self.st, &self.shared.anvil).await
    }

    /// The macro values milters may ask for now; `queue_id` is `i`.
    fn milter_values(&self, queue_id: Option<&str>) -> crate::milter::Values {
        let mut v = crate::milter::Values::default();
        let st = &self.st;
        if let Some(m) = &st.milters {
            v.set("daemon_name", m.daemon_name.clone());
            v.set("v", m.v.clone());
        }
        v.set("j", st.myhostname.clone());
        let ip = self.peer.ip();
        let forged = if self.client_name != "unknown"
            && !self.client_name.eq_ignore_ascii_case(&self.reverse_name)
        {
            " (may be forged)"
        } else {
            ""
        };
        v.set("_", format!("{} [{ip}]{forged}", self.reverse_name));
        v.set(
            "client_addr",
            match ip {
                std::net::IpAddr::V6(a) => format!("IPv6:{a}"),
                std::net::IpAddr::V4(a) => a.to_string(),
            },
        );
        v.set("client_name", self.client_name.clone());
        v.set("client_ptr", self.reverse_name.clone());
        v.set("client_port", self.peer.port().to_string());
        if let Some(server) = self.server {
            v.set("daemon_addr", server.ip().to_string());
            v.set("daemon_port", server.port().to_string());
        }
        if let Some(t) = &self.tls {
            v.set("tls_version", t.protocol);
            v.set("cipher", t.cipher.clone());
            v.set("cipher_bits", t.bits.to_string());
        }
        if let Some((method, user)) = &self.login {
            v.set("auth_type", method.clone());
            v.set("auth_authen", user.clone());
            if let Some(s) = &self.sasl_sender {
                v.set("auth_author", s.clone());
            }
        }
        if let Some(sender) = &self.sender {
            v.set("mail_addr", sender.clone());
            // Where mail to the sender would go (Postfix resolves it).
            if let Ok(r) = self.st.addresses.resolve("", sender) {
                v.set("mail_mailer", r.transport);
                v.set("mail_host", r.nexthop);
            }
        }
        if let Some(id) = queue_id {
            v.set("i", id);
        }
        v
    }

    fn whatsup<'a>(
        &'a self,
        stage: &'a str,
        queue_id: Option<&'a str>,
        sender: Option<&'a str>,
        recipient: Option<&'a str>,
    ) -> crate::milter::Whatsup<'a> {
        crate::milter::Whatsup {
            queue_id,
            stage,
            client: &self.client,
            sender,
            recipient,
            esmtp: self.esmtp,
            helo: self.helo.as_deref(),
            sasl_username: self.login.as_ref().map(|(_, u)| u.as_str()),
        }
    }

    /// The connect event: `None` for the usual greeting; else the
    /// greeting, and whether the session ends with it (421).
    async fn milter_connect(&mut self) -> Option<(Reply, bool)> {
        let cfg = &self.st.milters.as_ref()?.config;
        let ip = self.peer.ip();
        let addr = ip.to_string();
        let client = pfx_milter::Client {
            name: &self.client_name,
            addr: &addr,
            port: self.peer.port(),
            family: if ip.is_ipv6() {
                pfx_milter::Family::Inet6
            } else {
                pfx_milter::Family::Inet
            },
        };
        let values = self.milter_values(None);
        let lookup = |n: &str| values.get(n);
        let (session, verdict) = pfx_milter::Session::connect(cfg, &client, &lookup).await;
        self.milters = Some(session);
        let host = &self.st.myhostname;
        match verdict {
            pfx_milter::Verdict::Reply(text) => {
                self.whatsup("CONNECT", None, None, None)
                    .log("milter-reject", &text);
                if text.starts_with("421") {
                    let r =
                        Reply::plain(421, format!("{host} Service unavailable - try again later"));
                    Some((r, true))
                } else if text.starts_with('5') {
                    Some((
                        Reply::plain(554, format!("{host} ESMTP not accepting connections")),
                        false,
                    ))
                } else {
                    None
                }
            }
            pfx_milter::Verdict::Shutdown => {
                self.whatsup("CONNECT", None, None, None)
                    .log("milter-reject", "421 4.7.0 Server closing connection");
                let r = Reply::plain(421, format!("{host} Service unavailable - try again later"));
                Some((r, true))
            }
            _ => None,
        }
    }

    /// HELO or EHLO to the milters: a 421 ends the session (the reply
    /// returned); any other answer leaves the usual 250. Logged with the
    /// protocol as it was before this command (`esmtp`), as Postfix does.
    async fn milter_helo(&mut self, name: &str, stage: &str, esmtp: bool) -> Option<Reply> {
        // No milters: nothing to work out for them (every command asks).
        self.milters.as_ref()?;
        let values = self.milter_values(None);
        let lookup = |n: &str| values.get(n);
        let m = self.milters.as_mut()?;
        let v = m.helo(name, &lookup).await;
        let now = std::mem::replace(&mut self.esmtp, esmtp);
        let r = self.helo_verdict(v, stage);
        self.esmtp = now;
        r
    }

    fn helo_verdict(&self, v: pfx_milter::Verdict, stage: &str) -> Option<Reply> {
        match v {
            pfx_milter::Verdict::Reply(text) => {
                self.whatsup(stage, None, None, None)
                    .log("milter-reject", &text);
                text.starts_with("421")
                    .then(|| crate::milter::reply_of(&text))
            }
            pfx_milter::Verdict::Shutdown => {
                self.whatsup(stage, None, None, None)
                    .log("milter-reject", "421 4.7.0 Server closing connection");
                Some(Reply::new(421, "4.7.0", "Server closing connection"))
            }
            _ => None,
        }
    }

    /// What a milter's verdict on a command means: its reply, or `None`
    /// to go on (a DISCARD or HOLD marks the transaction).
    fn milter_verdict(
        &mut self,
        v: pfx_milter::Verdict,
        stage: &str,
        queue_id: Option<&str>,
        recipient: Option<&str>,
    ) -> Option<Reply> {
        let sender = self.sender.clone();
        let w = self.whatsup(stage, queue_id, sender.as_deref(), recipient);
        match v {
            pfx_milter::Verdict::Continue => None,
            pfx_milter::Verdict::Reply(text) => {
                w.log("milter-reject", &text);
                Some(crate::milter::reply_of(&text))
            }
            pfx_milter::Verdict::Shutdown => {
                w.log("milter-reject", "421 4.7.0 Server closing connection");
                Some(Reply::new(421, "4.7.0", "Server closing connection"))
            }
            pfx_milter::Verdict::Discard => {
                w.log("milter-discard", "milter triggers DISCARD action");
                self.effects.discard = true;
                None
            }
            pfx_milter::Verdict::Hold => {
                w.log("milter-hold", "milter triggers HOLD action");
                self.effects.hold = true;
                None
            }
        }
    }

    /// MAIL or RCPT to the milters.
    async fn milter_envelope(
        &mut self,
        stage: &str,
        args: Vec<String>,
        recipient: Option<&str>,
    ) -> Option<Reply> {
        if self.effects.discard || self.milters.is_none() {
            return None;
        }
        let mut values = self.milter_values(None);
        if let Some(r) = recipient {
            values.set("rcpt_addr", self.st.resolve(r).address());
            let sender = self.sender.as_deref().unwrap_or("");
            if let Ok(res) = self.st.addresses.resolve(sender, r) {
                values.set("rcpt_mailer", res.transport);
                values.set("rcpt_host", res.nexthop);
            }
        }
        let lookup = |n: &str| values.get(n);
        let m = self.milters.as_mut()?;
        let v = if stage == "MAIL" {
            self.milter_mail = true;
            m.mail(args, &lookup).await
        } else {
            m.rcpt(args, &lookup).await
        };
        self.milter_verdict(v, stage, None, recipient)
    }

    /// DATA to the milters.
    async fn milter_data(&mut self, queue_id: Option<&str>) -> Option<Reply> {
        if self.effects.discard || self.milters.is_none() {
            return None;
        }
        let values = self.milter_values(queue_id);
        let lookup = |n: &str| values.get(n);
        let v = self.milters.as_mut()?.data(&lookup).await;
        self.milter_verdict(v, "DATA", queue_id, None)
    }

    /// A command smtpd does not know: the milters' reply instead of 500.
    async fn milter_unknown(&mut self, verb: &str) -> Option<Reply> {
        self.milters.as_ref()?;
        let values = self.milter_values(None);
        let lookup = |n: &str| values.get(n);
        let v = self.milters.as_mut()?.unknown(verb, &lookup).await;
        match v {
            pfx_milter::Verdict::Reply(_) | pfx_milter::Verdict::Shutdown => {
                self.milter_verdict(v, "UNKNOWN", None, None)
            }
            _ => None,
        }
    }

    /// The transaction is over: the milters are told (ABORT).
    async fn milter_abort(&mut self) {
        if std::mem::take(&mut self.milter_mail) {
            if let Some(m) = self.milters.as_mut() {
                m.abort().await;
            }
        }
    }

    /// The client limits: the reply that refuses this event, if any.
    async fn over_limit(&self, what: Limit) -> Option<Reply> {
        let ev = self.events.as_ref()?;
        ev.check(what, &self.st, &self.shared.anvil).await
    }

    /// Whether an SMTPS client is over the new TLS session limit.
    async fn refuse_wrapper(&self) -> bool {
        match &self.events {
            Some(ev) => ev.refuse_wrapper(&self.st, &self.shared.anvil).await,
            None => false,
        }
    }

    /// The handshake, on the plain stream: after `220 Ready to start TLS`,
    /// or before the banner on a wrapper-mode port. False when it failed
    /// (logged), or when it made one new TLS session too many (answered):
    /// the session is over.
    async fn start_tls(&mut self) -> bool {
        let Ok(server) = self.st.tls.server.clone() else {
            return false;
        };
        let Some(plain) = self.io.take_plain() else {
            return false;
        };
        let handshake = tokio::time::timeout(self.st.starttls_timeout, server.accept(plain));
        match handshake.await {
            Ok(Ok((stream, negotiated))) => {
                self.io = Io::Tls(Box::new(stream.into()));
                if self.st.tls.loglevel >= 1 {
                    let kind = if negotiated.peer.is_some() {
                        "Untrusted"
                    } else {
                        "Anonymous"
                    };
                    info!(
                        "{kind} TLS connection established from {}: {}",
                        self.client,
                        negotiated.summary()
                    );
                    if let Some(p) = negotiated
                        .peer
                        .as_ref()
                        .filter(|_| self.st.tls.loglevel >= 2)
                    {
                        info!(
                            "{}: subject_CN={}, issuer={}, fingerprint={}, pkey_fingerprint={}",
                            self.client,
                            p.subject_cn,
                            p.issuer_cn,
                            p.fingerprint,
                            p.pkey_fingerprint
                        );
                    }
                }
                let resumed = negotiated.resumed;
                self.tls = Some(negotiated);
                // A new session costs the server; a resumed one hardly.
                if resumed {
                    return true;
                }
                match self.over_limit(Limit::NewTls).await {
                    Some(r) => {
                        self.reply_now(&r).await;
                        false
                    }
                    None => true,
                }
            }
            Ok(Err(e)) => {
                warn!("TLS handshake failed for {}: {e}", self.client);
                info!("SSL_accept error from {}: -1", self.client);
                // A failed handshake counts as a new session, as with Postfix.
                self.over_limit(Limit::NewTls).await;
                info!(
                    "lost connection after {} from {}",
                    self.last_verb.to_ascii_uppercase(),
                    self.client
                );
                false
            }
            Err(_) => {
                info!("SSL_accept error from {}: timed out", self.client);
                self.over_limit(Limit::NewTls).await;
                info!(
                    "timeout after {} from {}",
                    self.last_verb.to_ascii_uppercase(),
                    self.client
                );
                false
            }
        }
    }

    /// The mechanisms this session may use now: none without SASL or,
    /// with `smtpd_tls_auth_only`, before TLS. The EHLO reply (`ehlo`)
    /// hides them from `smtpd_sasl_exceptions_networks`, which may still
    /// use AUTH, as with Postfix.
    async fn offered_mechanisms(&self, ehlo: bool) -> Vec<String> {
        let Some(sasl) = &self.st.sasl else {
            return Vec::new();
        };
        if (self.st.tls.auth_only() && !self.encrypted())
            || (ehlo && sasl.exceptions.contains(self.peer.ip()))
        {
            return Vec::new();
        }
        match sasl.dovecot.mechanisms().await {
            Ok(m) => sasl.usable(&m, self.encrypted()),
            Err(e) => {
                warn!("SASL: {e}");
                Vec::new()
            }
        }
    }

    /// AUTH (RFC 4954), answered by Dovecot; the client's lines go there
    /// as they came and none is logged.
    async fn auth(&mut self, arg: &str) -> Result<Reply, End> {
        if let Some(r) = self.over_limit(Limit::Auth).await {
            return Ok(r);
        }
        let st = self.st.clone();
        if st.helo_required && self.helo.is_none() {
            return Ok(Reply::new(503, "5.5.1", "Error: send HELO/EHLO first"));
        }
        let not_enabled = || Reply::new(503, "5.5.1", "Error: authentication not enabled");
        let Some(sasl) = st.sasl.as_ref().filter(|_| st.ehlo_keyword("AUTH")) else {
            return Ok(not_enabled());
        };
        if st.tls.auth_only() && !self.encrypted() {
            return Ok(not_enabled());
        }
        if self.sender.is_some() {
            return Ok(Reply::new(
                503,
                "5.5.1",
                "Error: MAIL transaction in progress",
            ));
        }
        if self.login.is_some() {
            return Ok(Reply::new(503, "5.5.1", "Error: already authenticated"));
        }
        let mut words = arg.split_ascii_whitespace();
        let (Some(asked), initial, None) = (words.next(), words.next(), words.next()) else {
            return Ok(Reply::new(501, "5.5.4", "Syntax: AUTH mechanism"));
        };
        if self.mechs.is_empty() {
            // AUTH after HELO, or from an exception network: the
            // mechanisms were never listed.
            self.mechs = self.offered_mechanisms(false).await;
        }
        let failed = |client: &str, mech: &str, reason: &str, user: Option<&str>| {
            warn!(
                "{client}: SASL {mech} authentication failed: {reason}, sasl_username={}",
                user.unwrap_or("(unavailable)")
            );
            Reply::new(
                535,
                "5.7.8",
                format!("Error: authentication failed: {reason}"),
            )
        };
        let Some(mech) = self
            .mechs
            .iter()
            .find(|m| m.eq_ignore_ascii_case(asked))
            .cloned()
        else {
            // As Dovecot answers Postfix for a mechanism it does not offer.
            return Ok(failed(
                &self.client,
                asked,
                "Invalid authentication mechanism",
                None,
            ));
        };
        // RFC 4954's "=" (an empty initial response) goes to Dovecot as it
        // came, as Postfix sends it; anything else must be base64.
        if initial.is_some_and(|r| r != "=" && !is_base64(r)) {
            let why = "Invalid base64 data in initial response";
            return Ok(failed(&self.client, &mech, why, None));
        }
        let client = crate::sasl::Client {
            service: sasl.service.clone(),
            local_ip: self.local_ip,
            remote_ip: self.peer.ip(),
            secured: self.encrypted(),
        };
        let temporary = |why: &str| {
            Reply::new(
                454,
                "4.7.0",
                format!("Temporary authentication failure: {why}"),
            )
        };
        let (mut exchange, mut step) = match sasl.dovecot.start(&mech, initial, &client).await {
            Ok(x) => x,
            Err(e) => {
                warn!("SASL: {e}");
                return Ok(temporary("Connection lost to authentication server"));
            }
        };
        loop {
            match step {
                Step::Continue(challenge) => {
                    self.reply(&Reply::plain(334, challenge));
                    let line = self.line_within(sasl.response_limit).await?;
                    if line.len() > sasl.response_limit {
                        return Ok(Reply::new(500, "5.5.6", "SASL response limit exceeded"));
                    }
                    if line == b"*" {
                        warn!("{}: SASL {mech} authentication aborted", self.client);
                        return Ok(Reply::new(501, "5.7.0", "Authentication aborted"));
                    }
                    let response = String::from_utf8(line).unwrap_or_default();
                    let response = response.trim();
                    if !is_base64(response) {
                        let why = "Invalid base64 data in continued response";
                        return Ok(failed(&self.client, &mech, why, None));
                    }
                    step = match exchange.respond(response).await {
                        Ok(s) => s,
                        Err(e) => {
                            warn!("SASL: {e}");
                            return Ok(temporary("Connection lost to authentication server"));
                        }
                    };
                }
                Step::Success { user } => {
                    self.login = Some((mech, user));
                    return Ok(Reply::new(235, "2.7.0", "Authentication successful"));
                }
                Step::Failure { reason, user } => {
                    let reason = reason.unwrap_or_else(|| "(reason unavailable)".into());
                    return Ok(failed(&self.client, &mech, &reason, user.as_deref()));
                }
            }
        }
    }

    /// STARTTLS (RFC 3207).
    async fn starttls(&mut self, arguments: bool) -> Result<Option<Reply>, End> {
        if arguments {
            return Ok(Some(Reply::new(501, "5.5.4", "Syntax: STARTTLS")));
        }
        if self.encrypted() {
            return Ok(Some(Reply::new(554, "5.5.1", "Error: TLS already active")));
        }
        if !self.st.tls.offered() || !self.st.ehlo_keyword("STARTTLS") {
            return Ok(Some(Reply::new(
                502,
                "5.5.1",
                "Error: command not implemented",
            )));
        }
        if self.st.tls.server.is_err() {
            return Ok(Some(Reply::new(
                454,
                "4.7.0",
                "TLS not available due to local problem",
            )));
        }
        if let Some(r) = self.over_limit(Limit::StartTls).await {
            return Ok(Some(r));
        }
        self.reply(&Reply::new(220, "2.0.0", "Ready to start TLS"));
        if !self.flush().await {
            return Err(End::Lost);
        }
        // CVE-2011-0411: what the client sent after STARTTLS in plain text
        // must not be taken as said inside TLS.
        self.inbuf.clear();
        let ok = self.start_tls().await;
        self.count("starttls", ok);
        if !ok {
            return Err(End::Done);
        }
        // RFC 3207 4.2: everything learned before the handshake is forgotten.
        self.reset();
        self.helo = None;
        self.esmtp = false;
        self.login = None;
        self.mechs.clear();
        Ok(None)
    }

    fn reset(&mut self) {
        self.sender = None;
        self.sasl_sender = None;
        self.body_8bit = false;
        self.recipients.clear();
        self.dsn_ret = 0;
        self.dsn_envid = None;
        self.effects = Effects::default();
        self.declared_size = 0;
        // XFORWARD holds for one transaction, as in Postfix.
        self.xforward = Forwarded::default();
    }

    fn command(&mut self, cmd: Command) -> Reply {
        let st = self.st.clone();
        match cmd {
            Command::Helo(name) => {
                self.reset();
                self.helo = Some(name);
                self.esmtp = false;
                Reply::plain(250, st.myhostname.clone())
            }
            Command::Ehlo(name) => {
                self.reset();
                self.helo = Some(name);
                self.esmtp = true;
                let mut lines = vec![
                    st.myhostname.clone(),
                    "PIPELINING".into(),
                    format!("SIZE {}", st.message_size_limit),
                ];
                if !st.disable_vrfy {
                    lines.push("VRFY".into());
                }
                lines.push("ETRN".into());
                if st.tls.offered() && !self.encrypted() {
                    lines.push("STARTTLS".into());
                }
                if !self.mechs.is_empty() {
                    let names = self.mechs.join(" ");
                    lines.push(format!("AUTH {names}"));
                    if st.sasl.as_ref().is_some_and(|s| s.broken_clients) {
                        lines.push(format!("AUTH={names}"));
                    }
                }
                if self.xforward_ok {
                    lines.push(xforward::EHLO_LINE.into());
                }
                lines.extend(["ENHANCEDSTATUSCODES", "8BITMIME", "DSN"].map(String::from));
                if st.smtputf8 {
                    lines.push("SMTPUTF8".into());
                }
                lines.push("CHUNKING".into());
                // smtpd_discard_ehlo_keywords: the greeting line stays.
                let mut kept = vec![lines.remove(0)];
                kept.extend(lines.into_iter().filter(|l| {
                    let keyword = l.split([' ', '=']).next().unwrap_or(l);
                    st.ehlo_keyword(keyword)
                }));
                if let Some(names) = st.discard_ehlo_log() {
                    info!("discarding EHLO keywords: {names}");
                }
                multiline(250, &kept)
            }
            Command::Rset => {
                self.reset();
                Reply::new(250, "2.0.0", "Ok")
            }
            Command::Noop => Reply::new(250, "2.0.0", "Ok"),
            Command::Proxy { verb, arguments } => {
                proxy_reply(verb, arguments, self.sender.is_some())
            }
            Command::Xforward(args) => {
                if self.sender.is_some() || args.is_empty() || !self.xforward_ok {
                    return proxy_reply("xforward", !args.is_empty(), self.sender.is_some());
                }
                match self.xforward.apply(&args) {
                    Ok(()) => Reply::new(250, "2.0.0", "Ok"),
                    Err(r) => r,
                }
            }
            Command::Unknown(_) => Reply::new(500, "5.5.2", "Error: command not recognized"),
            Command::Data { .. }
            | Command::Mail { .. }
            | Command::Rcpt { .. }
            | Command::Vrfy(_)
            | Command::Etrn(_)
            | Command::Quit
            | Command::NonSmtp(_)
            | Command::Bdat(_)
            | Command::StartTls { .. }
            | Command::Auth(_) => {
                unreachable!("handled by serve")
            }
        }
    }

    async fn mail(&mut self, addr: String, params: &[Param]) -> Reply {
        if self.st.helo_required && self.helo.is_none() {
            return Reply::new(503, "5.5.1", "Error: send HELO/EHLO first");
        }
        if self.sender.is_some() {
            return Reply::new(503, "5.5.1", "Error: nested MAIL command");
        }
        if let Some(r) = self.over_limit(Limit::Mail).await {
            return r;
        }
        let mut body_8bit = false;
        let mut sasl_sender = None;
        let mut size = 0;
        let mut ret = 0;
        let mut envid = None;
        for p in params {
            let key = p.key.to_ascii_uppercase();
            if (key == "RET" || key == "ENVID") && !self.st.ehlo_keyword("DSN") {
                return Reply::new(501, "5.7.1", "DSN support is disabled");
            }
            match (key.as_str(), p.value.as_deref()) {
                ("SIZE", Some(v)) => match v.parse::<u64>() {
                    Ok(n) if self.st.message_size_limit > 0 && n > self.st.message_size_limit => {
                        return Reply::new(552, "5.3.4", "Message size exceeds fixed limit");
                    }
                    Ok(n) => size = n,
                    Err(_) => return Reply::new(501, "5.5.4", "Bad message size syntax"),
                },
                ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => body_8bit = true,
                ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => {}
                ("SMTPUTF8", None) if self.st.smtputf8 && self.st.ehlo_keyword("SMTPUTF8") => {}
                // RFC 4954's AUTH=: Postfix ignores it when SASL is off.
                ("AUTH", Some(v)) if self.st.sasl.is_some() => {
                    if sasl_sender.is_some() {
                        return Reply::new(503, "5.5.4", "Error: multiple AUTH= options");
                    }
                    sasl_sender = Some(v.to_owned());
                }
                ("AUTH", Some(_)) => {}
                // RFC 3461, as Postfix's smtpd takes it.
                ("RET", v) => match v.and_then(dsn::ret_code) {
                    Some(code) if ret == 0 => ret = code,
                    _ => return Reply::new(501, "5.5.4", "Bad RET parameter syntax"),
                },
                ("ENVID", v) => match v.and_then(dsn::xtext_decode) {
                    Some(id) if envid.is_none() && id.bytes().all(|c| (32..127).contains(&c)) => {
                        envid = Some(id);
                    }
                    _ => return Reply::new(501, "5.5.4", "Bad ENVID parameter syntax"),
                },
                _ => {
                    return Reply::new(
                        555,
                        "5.5.4",
                        format!("Unsupported option: {}", param_text(p)),
                    )
                }
            }
        }
        self.dsn_ret = ret;
        self.dsn_envid = envid;
        self.sender = Some(check::display(&addr));
        self.declared_size = size;
        self.instance = next_instance();
        self.body_8bit = body_8bit;
        self.sasl_sender = sasl_sender.filter(|s| s != "<>");
        let mut args = vec![format!("<{addr}>")];
        args.extend(params.iter().map(param_text));
        if let Some(r) = self.milter_envelope("MAIL", args, None).await {
            self.reset();
            return r;
        }
        Reply::new(250, "2.1.0", "Ok")
    }

    async fn rcpt(&mut self, addr: String, params: &[Param]) -> Reply {
        if self.sender.is_none() {
            return Reply::new(503, "5.5.1", "Error: need MAIL command");
        }
        if let Some(r) = self.over_limit(Limit::Rcpt).await {
            return r;
        }
        let mut notify = 0;
        let mut orcpt = None;
        for p in params {
            let key = p.key.to_ascii_uppercase();
            if (key == "NOTIFY" || key == "ORCPT") && !self.st.ehlo_keyword("DSN") {
                return Reply::new(501, "5.7.1", "DSN support is disabled");
            }
            match key.as_str() {
                "NOTIFY" => match p.value.as_deref().and_then(dsn::notify_mask) {
                    Some(mask) if notify == 0 => notify = mask,
                    _ => return Reply::new(501, "5.5.4", "Error: Bad NOTIFY parameter syntax"),
                },
                "ORCPT" => match p.value.as_deref().and_then(dsn::orcpt_decode) {
                    Some(o) if orcpt.is_none() && !o.chars().any(char::is_control) => {
                        orcpt = Some(o)
                    }
                    _ => return Reply::new(501, "5.5.4", "Error: Bad ORCPT parameter syntax"),
                },
                _ => {
                    return Reply::new(
                        555,
                        "5.5.4",
                        format!("Unsupported option: {}", param_text(p)),
                    )
                }
            }
        }
        if self.recipients.len() >= self.st.recipient_limit {
            return Reply::new(452, "4.5.3", "Error: too many recipients");
        }
        let st = self.st.clone();
        let mut fx = std::mem::take(&mut self.effects);
        let verdict = {
            let facts = Facts {
                recipient: Some(&addr),
                ..self.facts("RCPT")
            };
            check::recipient(&st, facts, &mut fx).await
        };
        self.effects = fx;
        let verdict = match verdict {
            Ok(()) => {
                let mut args = vec![format!("<{addr}>")];
                args.extend(params.iter().map(param_text));
                match self.milter_envelope("RCPT", args, Some(&addr)).await {
                    Some(r) => Err(r),
                    None => Ok(()),
                }
            }
            Err(r) => Err(r),
        };
        match verdict {
            Ok(()) => {
                // As Postfix's smtpd: without ORCPT=, the address as given.
                let orcpt = orcpt.unwrap_or_else(|| format!("rfc822;{addr}"));
                self.recipients.push(Rcpt {
                    address: st.resolve(&addr).address(),
                    given: addr,
                    notify,
                    orcpt,
                });
                Reply::new(250, "2.1.5", "Ok")
            }
            Err(r) => r,
        }
    }

    /// VRFY: the recipient restrictions, as for RCPT.
    async fn vrfy(&mut self, text: String) -> Reply {
        let st = self.st.clone();
        if st.disable_vrfy {
            return Reply::new(502, "5.5.1", "VRFY command is disabled");
        }
        if let Some(r) = self.over_limit(Limit::Rcpt).await {
            return r;
        }
        let addr = match vrfy_address(&text) {
            Ok(a) => a,
            Err(r) => return r,
        };
        let mut fx = Effects::default();
        let facts = Facts {
            recipient: Some(&addr),
            ..self.facts("VRFY")
        };
        match check::recipient(&st, facts, &mut fx).await {
            Ok(()) => Reply::new(252, "2.0.0", text),
            Err(r) => r,
        }
    }

    /// ETRN (RFC 1985): deferred mail for the domain is queued for delivery
    /// now, by the flush service, when the domain is in `fast_flush_domains`
    /// and `smtpd_etrn_restrictions` allow the client.
    async fn etrn(&mut self, arg: &str) -> Reply {
        if self.st.helo_required && self.helo.is_none() {
            return Reply::plain(503, "Error: send HELO/EHLO first");
        }
        if self.sender.is_some() {
            return Reply::plain(503, "Error: MAIL transaction in progress");
        }
        let domain = match etrn_domain(arg) {
            Ok(d) => d.to_owned(),
            Err(r) => return r,
        };
        let facts = Facts {
            etrn: Some(&domain),
            ..self.facts("ETRN")
        };
        if let Err(r) = check::etrn(&self.st.clone(), facts, &domain).await {
            return r;
        }
        let req = FlushRequest::SendSite {
            site: domain.clone(),
        };
        let asked = pfx_ipc::client::flush(&self.st.queue_dir, &req);
        match tokio::time::timeout(self.st.timeout, asked)
            .await
            .unwrap_or(Err(pfx_ipc::Error::Closed))
        {
            Ok(FlushReply::Ok) => Reply::plain(250, "Queuing started"),
            Ok(FlushReply::NotConfigured) => {
                warn!("reject: ETRN {domain}... from {}", self.client);
                Reply::plain(459, format!("<{domain}>: service unavailable"))
            }
            Ok(FlushReply::Failed { reason }) => {
                warn!("bad ETRN {domain}... from {}: {reason}", self.client);
                Reply::plain(458, "Unable to queue messages")
            }
            Err(e) => {
                warn!("unable to talk to fast flush service: {e}");
                Reply::plain(458, "Unable to queue messages")
            }
        }
    }

    /// DATA: stream the message to cleanup; the reply is the final one.
    async fn data(&mut self, arguments: bool) -> Result<Reply, End> {
        if self.sender.is_none() {
            return Ok(Reply::new(503, "5.5.1", "Error: need RCPT command"));
        }
        if self.recipients.is_empty() {
            return Ok(Reply::new(554, "5.5.1", "Error: no valid recipients"));
        }
        if arguments {
            return Ok(data_syntax());
        }
        let st = self.st.clone();
        let shared = self.shared.clone();
        let (early, fx, sent) = match self.data_restrictions(&shared).await {
            Ok(v) => v,
            Err(r) => return Ok(r),
        };
        // A client past the soft error limit waits for 354, as for any reply.
        self.pace().await;
        self.reply(&Reply::plain(354, "End data with <CR><LF>.<CR><LF>"));
        if !self.flush().await {
            if let Some(m) = early {
                m.abort().await;
            }
            return Err(End::Lost);
        }
        let mut open = match self.open_message(&shared, early, fx, sent).await {
            Ok(open) => open,
            Err(r) => {
                self.discard_data().await?;
                return Ok(r);
            }
        };
        let mut out = std::mem::take(&mut open.head);
        let mut decoder = DataDecoder::new();
        let mut size = Sizer::default();
        loop {
            let before = out.len();
            let progress = decoder.feed(&self.inbuf, &mut out);
            let consumed = match progress {
                Progress::Done { consumed } => consumed,
                Progress::More => self.inbuf.len(),
            };
            self.inbuf.drain(..consumed);
            size.count(&out[before..]);
            if st.message_size_limit > 0 && size.size > st.message_size_limit {
                open.too_big = true;
            }
            let done = matches!(progress, Progress::Done { .. });
            if out.len() >= CHUNK || done {
                open.send(&out, done).await;
                out.clear();
            }
            if done {
                break;
            }
            match self.fill().await {
                Ok(true) => {}
                Ok(false) => {
                    open.msg.abort().await;
                    return Err(End::Lost);
                }
                Err(e) => {
                    open.msg.abort().await;
                    return Err(e);
                }
            }
        }
        open.size = size.size;
        Ok(self
            .finish_message(open, decoder.bare_lf_count(), None)
            .await)
    }

    /// The DATA restrictions, for DATA and the first BDAT. Postfix has a
    /// queue file (and ID) before them, which they log: when there are
    /// any, cleanup starts the message first. Without them, cleanup starts
    /// it while the client sends the message.
    async fn data_restrictions<'a>(
        &mut self,
        shared: &'a Shared,
    ) -> Result<(Option<pfx_ipc::cleanup::Message<'a>>, Effects, Option<Sent>), Reply> {
        let st = self.st.clone();
        let mut fx = std::mem::take(&mut self.effects);
        let mut early = None;
        let mut sent = None;
        if !st.restrictions.list(Stage::Data).is_empty() {
            let sender = self.sender.clone().unwrap_or_default();
            let envelope = self.envelope(&sender, &self.recipients, &fx);
            sent = Some(Sent::of(&fx));
            match shared.cleanup.begin(envelope).await {
                Ok(m) => early = Some(m),
                Err(e) => {
                    self.effects = fx;
                    return Err(self.cleanup_failed(e));
                }
            }
        }
        let verdict = {
            let facts = Facts {
                recipient: single_recipient(&self.recipients),
                queue_id: early.as_ref().map(pfx_ipc::cleanup::Message::queue_id),
                ..self.facts("DATA")
            };
            check::content(&st, Stage::Data, facts, &mut fx).await
        };
        let verdict = match verdict {
            Ok(()) => {
                self.effects = fx;
                let queue_id = early.as_ref().map(|m| m.queue_id().to_owned());
                let r = self.milter_data(queue_id.as_deref()).await;
                fx = std::mem::take(&mut self.effects);
                r.map_or(Ok(()), Err)
            }
            Err(r) => Err(r),
        };
        if let Err(r) = verdict {
            self.effects = fx;
            if let Some(m) = early {
                m.abort().await;
            }
            return Err(r);
        }
        Ok((early, fx, sent))
    }

    /// Takes the mail transaction's envelope into a message cleanup has
    /// started (`early`, or one started now), logs its `client=` line and
    /// makes the headers smtpd puts first (PREPEND, Received:).
    async fn open_message<'a>(
        &mut self,
        shared: &'a Shared,
        early: Option<pfx_ipc::cleanup::Message<'a>>,
        fx: Effects,
        sent: Option<Sent>,
    ) -> Result<Open<'a>, Reply> {
        // What the envelope cleanup has carries: the restrictions' actions
        // until now; later ones go after the content.
        let sent = sent.unwrap_or_else(|| Sent::of(&fx));
        let sender = self.sender.take().unwrap_or_default();
        let recipients = std::mem::take(&mut self.recipients);
        let msg = match early {
            Some(m) => m,
            None => {
                let envelope = self.envelope(&sender, &recipients, &fx);
                match shared.cleanup.begin(envelope).await {
                    Ok(m) => m,
                    Err(e) => return Err(self.cleanup_failed(e)),
                }
            }
        };
        let id = msg.queue_id().to_owned();
        match &self.login {
            Some((method, user)) => {
                let sender_part = match &self.sasl_sender {
                    Some(s) => format!(", sasl_sender={s}"),
                    None => String::new(),
                };
                info!(
                    "{id}: client={}, sasl_method={method}, sasl_username={user}{sender_part}{}",
                    self.client,
                    self.forwarded_log()
                );
            }
            None => info!("{id}: client={}{}", self.client, self.forwarded_log()),
        }
        let mut head: Vec<u8> = fx
            .prepend
            .iter()
            .flat_map(|h| format!("{h}\n").into_bytes())
            .collect();
        head.extend(self.received_header(&id, &recipients));
        // Milters see the content as cleanup would queue it, at its end;
        // their changes are made before the reply.
        let mut msg = msg;
        let inspect = !fx.discard && self.milters.as_ref().is_some_and(|m| !m.is_empty());
        if inspect && msg.inspect().is_err() {
            msg.abort().await;
            return Err(Reply::new(451, "4.3.0", "Error: queue file write error"));
        }
        Ok(Open {
            msg,
            id,
            sender,
            recipients,
            fx,
            sent,
            head,
            size: 0,
            too_big: false,
            broken: false,
            inspect,
        })
    }

    /// The end of a message's content (DATA's final dot, BDAT LAST): the
    /// end-of-data restrictions, then cleanup's verdict. `bdat`: the reply
    /// names the size, as Postfix's does for BDAT.
    async fn finish_message(&mut self, open: Open<'_>, bare_lf: usize, bdat: Option<()>) -> Reply {
        let st = self.st.clone();
        let Open {
            mut msg,
            id,
            sender,
            recipients,
            mut fx,
            sent,
            size,
            too_big,
            broken,
            inspect,
            ..
        } = open;
        let excluded = st.bare_newline_exclusions.contains(self.peer.ip());
        let bare_lf_rejected = st.bare_newline == BareNewline::Reject && !excluded && bare_lf > 0;
        let refused = if too_big || bare_lf_rejected || broken {
            None
        } else {
            let facts = Facts {
                sender: Some(&sender),
                recipient: single_recipient(&recipients),
                rcpt_count: recipients.len(),
                queue_id: Some(&id),
                size,
                ..self.facts("END-OF-MESSAGE")
            };
            let verdict = check::content(&st, Stage::EndOfData, facts, &mut fx).await;
            // What the DATA and end-of-data restrictions asked after the
            // envelope went to cleanup goes after the content, as
            // Postfix's smtpd writes it.
            let late = pfx_ipc::proto::Actions {
                filter: fx
                    .filter
                    .clone()
                    .filter(|f| Some(f) != sent.filter.as_ref()),
                redirect: fx
                    .redirect
                    .clone()
                    .filter(|r| Some(r) != sent.redirect.as_ref()),
                bcc: fx.bcc.get(sent.bcc..).unwrap_or_default().to_vec(),
            };
            if verdict.is_ok()
                && late != pfx_ipc::proto::Actions::default()
                && msg.actions(late).is_err()
            {
                Some(Reply::new(451, "4.3.0", "Error: queue file write error"))
            } else {
                verdict.err()
            }
        };
        if let Some(r) = refused {
            msg.abort().await;
            return r;
        }
        if too_big || bare_lf_rejected || broken {
            msg.abort().await;
            return if too_big {
                Reply::new(552, "5.3.4", "Error: message file too big")
            } else if bare_lf_rejected {
                info!("{id}: reject: bare <LF> received from {}", self.client);
                Reply::new(
                    st.bare_newline_reject_code,
                    "5.5.2",
                    "Error: bare <LF> received",
                )
            } else {
                Reply::new(451, "4.3.0", "Error: queue file write error")
            };
        }
        let queued = |queue_id: &str| match bdat {
            Some(()) => Reply::new(
                250,
                "2.0.0",
                format!("Ok: {size} bytes queued as {queue_id}"),
            ),
            None => Reply::new(250, "2.0.0", format!("Ok: queued as {queue_id}")),
        };
        if fx.discard {
            // Accepted, and dropped: what DISCARD means.
            msg.abort().await;
            self.milter_abort().await;
            return queued(&id);
        }
        let ended = if inspect {
            let last = recipients.last().map(|r| r.given.as_str());
            let r = self.milter_message(&id, &sender, last, msg, fx.hold).await;
            match r {
                Ok(r) => r,
                Err(None) => {
                    self.milter_abort().await;
                    return queued(&id);
                }
                Err(Some(r)) => {
                    self.milter_abort().await;
                    return r;
                }
            }
        } else {
            let mut msg = msg;
            if fx.hold && msg.hold().is_err() {
                msg.abort().await;
                return Reply::new(451, "4.3.0", "Error: queue file write error");
            }
            msg.end().await
        };
        self.milter_abort().await;
        match ended {
            Ok(CleanupReply::Committed { queue_id }) => queued(&queue_id),
            Ok(CleanupReply::TooBig) => Reply::new(552, "5.3.4", "Error: message file too big"),
            Ok(CleanupReply::TooManyHops) => Reply::new(554, "5.4.0", "Error: too many hops"),
            // header/body_checks REJECT: the status and text it gave.
            // A milter's own reply, as it gave it.
            Ok(CleanupReply::Rejected {
                reply: Some(reply), ..
            }) => crate::milter::reply_of(&reply),
            Ok(CleanupReply::Rejected { reason, .. }) => {
                let temporary = reason.starts_with('4');
                let (dsn, text) =
                    pfx_smtp_proto::dsn_split(if temporary { "4.7.1" } else { "5.7.1" }, &reason);
                Reply::new(if temporary { 451 } else { 550 }, &dsn, text)
            }
            Ok(CleanupReply::Failed {
                temporary: false,
                reason,
            }) => Reply::new(554, "5.7.1", format!("Error: {reason}")),
            // A deferral with its own status ("4.6.0 Alias expansion error").
            Ok(CleanupReply::Failed {
                temporary: true,
                reason,
            }) if reason.starts_with("4.") => {
                let (dsn, text) = pfx_smtp_proto::dsn_split("4.0.0", &reason);
                Reply::new(451, &dsn, text)
            }
            _ => Reply::new(451, "4.3.0", "Error: queue file write error"),
        }
    }

    /// The end of the message: cleanup gives the content as it would
    /// queue it, the milters look at it, cleanup makes their changes and
    /// answers. `Err(None)`: discarded; `Err(Some(reply))`: refused.
    async fn milter_message(
        &mut self,
        id: &str,
        sender: &str,
        last_rcpt: Option<&str>,
        msg: pfx_ipc::cleanup::Message<'_>,
        hold: bool,
    ) -> Result<Result<CleanupReply, pfx_ipc::Error>, Option<Reply>> {
        let (content, msg) = match msg.processed().await {
            Ok(pfx_ipc::cleanup::Processed::Content(c, m)) => (c, m),
            Ok(pfx_ipc::cleanup::Processed::Done(reply)) => return Ok(Ok(reply)),
            Err(e) => return Ok(Err(e)),
        };
        // smtpd's Received: is the first (access table PREPENDs may come
        // before it): milters are not shown it.
        let own = pfx_milter::Message::parse(&content, None)
            .headers
            .iter()
            .position(|h| h.name().eq_ignore_ascii_case(b"received"));
        let mut message = pfx_milter::Message::parse(&content, own);
        drop(content);
        let values = self.milter_values(Some(id));
        let lookup = |n: &str| values.get(n);
        let Some(m) = self.milters.as_mut() else {
            return Ok(msg.edited(Vec::new(), Vec::new(), hold).await);
        };
        let (verdict, changes, envelope) = m.message(&mut message, &lookup).await;
        let w = self.whatsup("END-OF-MESSAGE", Some(id), Some(sender), last_rcpt);
        let mut hold = hold;
        match verdict {
            pfx_milter::Verdict::Continue => {}
            pfx_milter::Verdict::Reply(text) => {
                w.log("milter-reject", text.get(4..).unwrap_or(&text));
                msg.abort().await;
                return Err(Some(crate::milter::reply_of(&text)));
            }
            pfx_milter::Verdict::Discard => {
                w.log("milter-discard", "milter triggers DISCARD action");
                msg.abort().await;
                return Err(None);
            }
            // As Postfix's cleanup: logged as a rejection, and dropped.
            pfx_milter::Verdict::Shutdown => {
                w.log("milter-reject", "message content rejected");
                msg.abort().await;
                return Err(None);
            }
            pfx_milter::Verdict::Hold => {
                w.log("milter-hold", "milter triggers HOLD action");
                hold = true;
            }
        }
        Ok(msg.edited(changes, envelope, hold).await)
    }

    /// BDAT (RFC 3030, as Postfix's smtpd): the first chunk opens the
    /// message (DATA restrictions, cleanup); the whole transaction is served
    /// here, up to BDAT LAST, whose reply is returned for the caller to
    /// send. Each chunk's bytes are taken as they are (no dot-stuffing), CRLF
    /// and bare LF ending lines. After a failed chunk further chunks are
    /// read and discarded until BDAT LAST or RSET. A command that ends the
    /// transaction (RSET, QUIT, EHLO...) is left for the caller: `None`.
    async fn bdat(
        &mut self,
        chunk: Option<(u64, bool)>,
        line: &[u8],
    ) -> Result<Option<Reply>, End> {
        if !self.st.ehlo_keyword("CHUNKING") {
            self.hang_up(&Reply::new(521, "5.5.1", "Error: command not implemented"))
                .await;
            return Err(End::Done);
        }
        let Some((mut size, mut last)) = chunk else {
            let shown: String = String::from_utf8_lossy(line)
                .chars()
                .take(100)
                .map(|c| if c.is_control() { '?' } else { c })
                .collect();
            warn!(
                "NOQUEUE: malformed BDAT command syntax from {}: {shown}",
                self.client
            );
            self.hang_up(&Reply::new(521, "5.5.4", "Syntax: BDAT count [LAST]"))
                .await;
            return Err(End::Done);
        };
        let st = self.st.clone();
        let shared = self.shared.clone();
        let mut open: Option<Open<'_>> = None;
        let mut failed = false;
        let mut lines = BdatLines::default();
        let mut sizer = Sizer::default();
        loop {
            let queue_id = open
                .as_ref()
                .map_or("NOQUEUE", |o| o.id.as_str())
                .to_owned();
            let reply = if failed {
                self.skip_bytes(size).await?;
                Some(Reply::new(
                    551,
                    "5.0.0",
                    format!("Discarded {size} bytes after earlier error"),
                ))
            } else if size == 0 && !last {
                warn!("{queue_id}: null BDAT request from {}", self.client);
                Some(Reply::new(551, "5.7.1", "Null BDAT request"))
            } else if open.is_none() && self.recipients.is_empty() {
                self.skip_bytes(size).await?;
                Some(if self.sender.is_none() {
                    Reply::new(503, "5.5.1", "Error: need RCPT command")
                } else {
                    Reply::new(554, "5.5.1", "Error: no valid recipients")
                })
            } else if st.message_size_limit > 0
                && (size > st.message_size_limit || sizer.size > st.message_size_limit - size)
            {
                warn!(
                    "{queue_id}: BDAT request from {} exceeds message size limit",
                    self.client
                );
                self.skip_bytes(size).await?;
                Some(Reply::new(552, "5.3.4", "Chunk exceeds message size limit"))
            } else {
                None
            };
            let reply = match reply {
                Some(r) => {
                    if let Some(o) = open.take() {
                        o.msg.abort().await;
                    }
                    failed = true;
                    r
                }
                None => {
                    if open.is_none() {
                        let opened = match self.data_restrictions(&shared).await {
                            Ok((early, fx, sent)) => {
                                self.open_message(&shared, early, fx, sent).await
                            }
                            Err(r) => Err(r),
                        };
                        match opened {
                            Ok(o) => {
                                lines = BdatLines::default();
                                sizer = Sizer::default();
                                open = Some(o);
                            }
                            Err(r) => {
                                self.skip_bytes(size).await?;
                                failed = true;
                                self.reset();
                                if last {
                                    return Ok(Some(r));
                                }
                                self.conclude_as("bdat", r, false).await;
                                match self.next_in_bdat().await? {
                                    Some((s, l)) => (size, last) = (s, l),
                                    None => return Ok(None),
                                }
                                continue;
                            }
                        }
                    }
                    let o = open.as_mut().expect("opened above");
                    let mut out = std::mem::take(&mut o.head);
                    let mut remaining = size;
                    while remaining > 0 {
                        if self.inbuf.is_empty() && !self.fill().await? {
                            if let Some(o) = open.take() {
                                o.msg.abort().await;
                            }
                            return Err(End::Lost);
                        }
                        let n = usize::try_from(remaining)
                            .unwrap_or(usize::MAX)
                            .min(self.inbuf.len());
                        let before = out.len();
                        lines.feed(&self.inbuf[..n], &mut out);
                        sizer.count(&out[before..]);
                        self.inbuf.drain(..n);
                        remaining -= n as u64;
                        if out.len() >= CHUNK {
                            o.send(&out, false).await;
                            out.clear();
                        }
                    }
                    if last {
                        let before = out.len();
                        lines.finish(&mut out);
                        sizer.count(&out[before..]);
                    }
                    o.send(&out, last).await;
                    o.size = sizer.size;
                    if st.message_size_limit > 0 && sizer.size > st.message_size_limit {
                        o.too_big = true;
                    }
                    if last {
                        let o = open.take().expect("open");
                        let r = self.finish_message(o, lines.bare_lf, Some(())).await;
                        self.reset();
                        return Ok(Some(r));
                    }
                    if o.too_big || o.broken {
                        let o = open.take().expect("open");
                        failed = true;
                        self.finish_message(o, 0, Some(())).await
                    } else {
                        Reply::new(250, "2.0.0", format!("Ok: {size} bytes"))
                    }
                }
            };
            if last {
                self.reset();
                return Ok(Some(reply));
            }
            self.conclude_as("bdat", reply, false).await;
            match self.next_in_bdat().await {
                Ok(Some((s, l))) => (size, last) = (s, l),
                Ok(None) => {
                    if let Some(o) = open.take() {
                        o.msg.abort().await;
                    }
                    self.reset();
                    return Ok(None);
                }
                Err(e) => {
                    if let Some(o) = open.take() {
                        o.msg.abort().await;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// The next command inside a BDAT transaction: another chunk's size, or
    /// `None` when the command ends the transaction (it is left for the
    /// command loop). MAIL, RCPT and DATA are refused here, NOOP and
    /// unknown commands answered, as Postfix does.
    async fn next_in_bdat(&mut self) -> Result<Option<(u64, bool)>, End> {
        loop {
            if self.too_many_errors().await {
                return Err(End::Done);
            }
            let line = self.line().await?;
            let parsed = parse_command(&line);
            let verb = parsed.as_ref().map_or_else(|e| e.verb, Command::verb);
            let reply = match parsed {
                Ok(Command::Bdat(Some(chunk))) => {
                    self.last_verb = "bdat";
                    return Ok(Some(chunk));
                }
                Ok(Command::Mail { .. }) => Reply::new(503, "5.5.1", "Error: MAIL after BDAT"),
                Ok(Command::Rcpt { .. }) => Reply::new(503, "5.5.1", "Error: RCPT after BDAT"),
                Ok(Command::Data { .. }) => Reply::new(503, "5.5.1", "Error: DATA after BDAT"),
                Ok(Command::Noop) => Reply::new(250, "2.0.0", "Ok"),
                Ok(Command::Unknown(_)) | Err(_) if verb == "unknown" => {
                    Reply::new(500, "5.5.2", "Error: command not recognized")
                }
                _ => {
                    self.pushed = Some(line);
                    return Ok(None);
                }
            };
            self.last_verb = verb;
            self.conclude(verb, reply).await;
        }
    }

    /// Reads and drops `n` bytes of chunk data.
    async fn skip_bytes(&mut self, mut n: u64) -> Result<(), End> {
        while n > 0 {
            if self.inbuf.is_empty() && !self.fill().await? {
                return Err(End::Lost);
            }
            let take = usize::try_from(n)
                .unwrap_or(usize::MAX)
                .min(self.inbuf.len());
            self.inbuf.drain(..take);
            n -= take as u64;
        }
        Ok(())
    }

    /// Sends a reply that ends the session (`521`), counted as a failed
    /// command.
    async fn hang_up(&mut self, r: &Reply) {
        self.count("bdat", false);
        self.pace().await;
        self.reply_now(r).await;
    }

    /// Logs why cleanup did not start a message; the reply for the client.
    fn cleanup_failed(&self, e: NotStarted) -> Reply {
        match e {
            NotStarted::Refused(reason) => warn!("{}: cleanup: {reason}", self.client),
            NotStarted::Broken(e) => warn!("{}: cleanup: {e}", self.client),
        }
        Reply::new(451, "4.3.0", "Error: queue file write error")
    }

    /// Reads and drops the message the client sends after 354.
    async fn discard_data(&mut self) -> Result<(), End> {
        let mut decoder = DataDecoder::new();
        let mut sink = Vec::new();
        loop {
            let progress = decoder.feed(&self.inbuf, &mut sink);
            sink.clear();
            match progress {
                Progress::Done { consumed } => {
                    self.inbuf.drain(..consumed);
                    return Ok(());
                }
                Progress::More => self.inbuf.clear(),
            }
            if !self.fill().await? {
                return Err(End::Lost);
            }
        }
    }

    /// What Postfix adds to the `client=` line for mail that came through
    /// XFORWARD: the previous hop's queue ID and the original client.
    fn forwarded_log(&self) -> String {
        let mut out = String::new();
        if let Some(ident) = &self.xforward.ident {
            out.push_str(&format!(", orig_queue_id={ident}"));
        }
        if let Some(c) = self.xforward.client() {
            out.push_str(&format!(", orig_client={}", c.namaddr()));
        }
        out
    }

    /// The client as logged with the message (Postfix's `log_*` queue
    /// file attributes, which the smtp client forwards): the forwarded
    /// one when XFORWARD gave it, else this connection's.
    fn log_client(&self) -> xforward::Client {
        self.xforward.client().unwrap_or_else(|| xforward::Client {
            name: self.client_name.clone(),
            addr: self.peer.ip().to_string(),
            port: self.peer.port().to_string(),
            proto: if self.esmtp { "ESMTP" } else { "SMTP" }.into(),
            helo: self.helo.clone(),
        })
    }

    /// What starts a message with cleanup: the restrictions' REDIRECT,
    /// BCC and FILTER ([`with_effects`]) made.
    fn envelope(&self, sender: &str, recipients: &[Rcpt], fx: &Effects) -> Envelope {
        let recipients = with_effects(recipients, fx);
        let mut attrs = vec![
            ("client_name".into(), self.client_name.clone()),
            ("client_address".into(), self.peer.ip().to_string()),
            ("helo_name".into(), self.helo.clone().unwrap_or_default()),
            (
                "protocol".into(),
                if self.esmtp {
                    "ESMTP".into()
                } else {
                    "SMTP".into()
                },
            ),
            ("origin".into(), "smtpd".into()),
        ];
        let log = self.log_client();
        attrs.push(("log_client_name".into(), log.name.clone()));
        attrs.push(("log_client_address".into(), log.addr.clone()));
        attrs.push(("log_client_port".into(), log.port.clone()));
        attrs.push(("log_message_origin".into(), log.namaddr()));
        if let Some(h) = &log.helo {
            attrs.push(("log_helo_name".into(), h.clone()));
        }
        attrs.push(("log_protocol_name".into(), log.proto));
        if let Some(ident) = &self.xforward.ident {
            attrs.push(("log_ident".into(), ident.clone()));
        }
        let context = match (self.xforward.source, self.origin) {
            (Some(s), _) => s,
            (None, Origin::Local) => "local",
            (None, _) => "remote",
        };
        attrs.push(("rewrite_context".into(), context.into()));
        if self.body_8bit {
            // As Postfix's queue file records it; smtp passes BODY=8BITMIME on.
            attrs.push(("encoding".into(), "8bit".into()));
        }
        if let Some((method, user)) = &self.login {
            attrs.push(("sasl_method".into(), method.clone()));
            attrs.push(("sasl_username".into(), user.clone()));
            if let Some(s) = &self.sasl_sender {
                attrs.push(("sasl_sender".into(), s.clone()));
            }
        }
        if let Some(id) = &self.dsn_envid {
            attrs.push(("envelope_id".into(), id.clone()));
        }
        if self.dsn_ret != 0 {
            attrs.push(("ret_flags".into(), self.dsn_ret.to_string()));
        }
        let recipients = recipients
            .iter()
            .map(|r| NewRecipient {
                address: r.address.clone(),
                original: Some(r.given.clone()).filter(|g| *g != r.address),
                notify: r.notify,
                orcpt: Some(r.orcpt.clone()),
            })
            .collect();
        let mut receive = self.st.receive.clone();
        if let Some(f) = &fx.filter {
            receive.filter = Some(f.clone());
        }
        Envelope {
            sender: sender.to_owned(),
            recipients,
            attrs,
            origin: self.origin,
            receive,
            arrival: None,
        }
    }

    /// Postfix's Received: header.
    fn received_header(&self, id: &str, recipients: &[Rcpt]) -> Vec<u8> {
        let helo = self.helo.as_deref().unwrap_or("unknown");
        let for_part = match recipients {
            [r] => format!("\n\tfor <{}>", r.address),
            _ => String::new(),
        };
        let mut h = format!(
            "Received: from {helo} ({} [{}])\n",
            self.client_name,
            self.peer.ip()
        );
        if let (Some(tls), true) = (&self.tls, self.st.tls.received_header) {
            let asked = self.st.tls.server.as_ref().is_ok_and(|s| s.ask_ccert);
            h.push_str(&tls.received_lines(asked));
            h.push('\n');
        }
        if let (Some((_, user)), Some(true)) = (
            &self.login,
            self.st.sasl.as_ref().map(|s| s.authenticated_header),
        ) {
            h.push_str(&format!("\t(Authenticated sender: {user})\n"));
        }
        h.push_str(&format!(
            "\tby {} ({}) with {} id {id}{for_part}; {}\n",
            self.st.myhostname,
            self.st.mail_name,
            self.protocol_name(),
            pfx_sys::time::rfc2822(std::time::SystemTime::now())
        ));
        h.into_bytes()
    }

    /// RFC 3848's names: ESMTP, then S when encrypted and A when
    /// authenticated (ESMTPSA); SMTP after HELO.
    fn protocol_name(&self) -> String {
        if !self.esmtp {
            return "SMTP".into();
        }
        let mut p = String::from("ESMTP");
        if self.tls.is_some() {
            p.push('S');
        }
        if self.login.is_some() {
            p.push('A');
        }
        p
    }
}

/// Whether a SASL response is base64 (empty counts: an empty response).
/// A message's size as Postfix counts it: each record of a line (a line
/// is cut into records of `line_length_limit` bytes) and a CRLF, so that
/// `message_size_limit` and BDAT's "N bytes queued" agree with Postfix's.
#[derive(Debug, Default)]
struct Sizer {
    line_len: u64,
    size: u64,
}

impl Sizer {
    /// Counts content with LF line ends (a last line may continue later).
    fn count(&mut self, out: &[u8]) {
        for &b in out {
            if b == b'\n' {
                let l = std::mem::take(&mut self.line_len);
                self.size += l + 2 * (l / MAX_LINE as u64 + 1);
            } else {
                self.line_len += 1;
            }
        }
    }
}

/// A message cleanup has started, while its content comes in.
/// REDIRECT, BCC and FILTER as the envelope took them to cleanup.
struct Sent {
    redirect: Option<String>,
    bcc: usize,
    filter: Option<String>,
}

impl Sent {
    fn of(fx: &Effects) -> Self {
        Self {
            redirect: fx.redirect.clone(),
            bcc: fx.bcc.len(),
            filter: fx.filter.clone(),
        }
    }
}

struct Open<'a> {
    msg: pfx_ipc::cleanup::Message<'a>,
    id: String,
    sender: String,
    recipients: Vec<Rcpt>,
    fx: Effects,
    /// The actions the envelope took to cleanup.
    sent: Sent,
    /// The headers smtpd puts first, until they go out with the content.
    head: Vec<u8>,
    /// Content size as Postfix counts it (for BDAT: each line and CRLF).
    size: u64,
    too_big: bool,
    /// Writing to cleanup failed: the rest is read and dropped.
    broken: bool,
    /// Milters look at the content at its end.
    inspect: bool,
}

impl Open<'_> {
    /// Content for cleanup (LF line ends); `last`: the final pieces, which
    /// go out with End in one write. Nothing more is sent once the message
    /// is too big or a write failed.
    async fn send(&mut self, out: &[u8], last: bool) {
        if self.too_big || self.broken || out.is_empty() {
            return;
        }
        let sent = if last {
            self.msg.write_later(out)
        } else {
            self.msg.write(out).await
        };
        self.broken = sent.is_err();
    }
}

/// BDAT chunk bytes into LF-ended lines: CRLF and a bare LF end a line (a
/// CR alone is content), a line may span chunks, and the last line of the
/// last chunk ends even without a line end.
#[derive(Debug, Default)]
struct BdatLines {
    pending_cr: bool,
    line_len: u64,
    bare_lf: usize,
}

impl BdatLines {
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            if std::mem::take(&mut self.pending_cr) {
                if b == b'\n' {
                    self.end_line(out);
                    continue;
                }
                out.push(b'\r');
                self.line_len += 1;
            }
            match b {
                b'\r' => self.pending_cr = true,
                b'\n' => {
                    self.bare_lf += 1;
                    self.end_line(out);
                }
                _ => {
                    out.push(b);
                    self.line_len += 1;
                }
            }
        }
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        out.push(b'\n');
        self.line_len = 0;
    }

    /// The end of the last chunk.
    fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.pending_cr) {
            out.push(b'\r');
            self.line_len += 1;
        }
        if self.line_len > 0 {
            self.end_line(out);
        }
    }
}

fn is_base64(text: &str) -> bool {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .is_ok()
}

fn param_text(p: &Param) -> String {
    match &p.value {
        Some(v) => format!("{}={v}", p.key),
        None => p.key.clone(),
    }
}

/// One accepted recipient: as resolved, as given, and its RFC 3461
/// requests (NOTIFY bits, ORCPT as `type;address`).
#[derive(Debug, Clone)]
struct Rcpt {
    address: String,
    given: String,
    notify: u32,
    orcpt: String,
}

/// The recipient the DATA and end-of-data restrictions see: the only
/// one, as given, or none when there are several (as Postfix).
fn single_recipient(recipients: &[Rcpt]) -> Option<&str> {
    match recipients {
        [r] => Some(&r.given),
        _ => None,
    }
}

/// The envelope recipients after the restrictions' REDIRECT (all mail
/// goes to that address) and BCC (a copy to each, whose failure nobody is
/// told of, as in Postfix).
fn with_effects(recipients: &[Rcpt], fx: &Effects) -> Vec<Rcpt> {
    let mut out = match (&fx.redirect, recipients.first()) {
        (Some(to), Some(first)) => vec![Rcpt {
            address: to.clone(),
            ..first.clone()
        }],
        _ => recipients.to_vec(),
    };
    out.extend(fx.bcc.iter().map(|b| Rcpt {
        address: b.clone(),
        given: b.clone(),
        notify: dsn::NOTIFY_NEVER,
        orcpt: format!("rfc822;{b}"),
    }));
    out
}

/// A policy instance name for a new transaction, unique in this process
/// and among processes (Postfix's pid.time.counter form).
fn next_instance() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{:x}.{:x}.{:x}.{:x}",
        pfx_sys::pid(),
        now.as_secs(),
        now.subsec_micros(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
