//! One SMTP session: read commands, answer them in order, stream DATA.
//!
//! Replies are buffered and written when no further command is waiting in
//! the input (RFC 2920 pipelining), and always before blocking to read.
//! The session runs over any byte stream: a TCP connection, a TLS stream,
//! or an in-memory pipe in the unit tests.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use pfx_ipc::cleanup::{Envelope, NotStarted};
use pfx_ipc::proto::{CleanupReply, FlushReply, FlushRequest, Origin, CHUNK};
use pfx_smtp_proto::data::{DataDecoder, Progress};
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
    recipients: Vec<(String, String)>,
    stats: Stats,
    errors: u32,
    /// Junk commands since the client last delivered mail.
    junk: u32,
    /// The last command's verb as the statistics name it; upper case in
    /// `timeout after RCPT` and the like.
    last_verb: &'static str,
    shared: Arc<Shared>,
    /// What this client reports to anvil; `None` when nothing (see `limits`).
    events: Option<Events>,
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
    let mut s = Session {
        st,
        io: Io::Plain(io),
        tls: None,
        login: None,
        mechs: Vec::new(),
        sasl_sender: None,
        local_ip,
        inbuf: Vec::with_capacity(8192),
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
        stats: Stats::default(),
        errors: 0,
        junk: 0,
        last_verb: "connect",
        shared,
        events,
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
    if greet {
        let banner = Reply::plain(220, s.st.banner.clone());
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
        let mut buf = [0u8; 16 * 1024];
        // One timer per session, moved only when it fires: a new timer for
        // every read would make the runtime wake itself up for each command.
        let deadline = tokio::time::Instant::now() + self.st.timeout;
        loop {
            tokio::select! {
                biased;
                r = self.io.read(&mut buf) => return match r {
                    Err(_) | Ok(0) => Ok(false),
                    Ok(n) => {
                        self.inbuf.extend_from_slice(&buf[..n]);
                        Ok(true)
                    }
                },
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
            // As Postfix: checked before the next command is read, so the
            // reply to the error that reached the limit has gone out first.
            if self.errors >= self.st.hard_error_limit {
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
                return End::Done;
            }
            let line = match self.line().await {
                Ok(l) => l,
                Err(e) => return e,
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
                    ("ehlo", self.command(Command::Ehlo(name)))
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
            } else if verb == "data" && reply.code == 250 {
                // The count starts again once the client has delivered mail.
                self.junk = 0;
            }
            self.reply(&reply);
        }
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
        let Some(sasl) = &st.sasl else {
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
        if !self.st.tls.offered() {
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
        self.effects = Effects::default();
        self.declared_size = 0;
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
                lines.extend(["ENHANCEDSTATUSCODES", "8BITMIME"].map(String::from));
                if st.smtputf8 {
                    lines.push("SMTPUTF8".into());
                }
                multiline(250, &lines)
            }
            Command::Rset => {
                self.reset();
                Reply::new(250, "2.0.0", "Ok")
            }
            Command::Noop => Reply::new(250, "2.0.0", "Ok"),
            Command::Proxy { verb, arguments } => {
                proxy_reply(verb, arguments, self.sender.is_some())
            }
            Command::Unknown(_) => Reply::new(500, "5.5.2", "Error: command not recognized"),
            Command::Data { .. }
            | Command::Mail { .. }
            | Command::Rcpt { .. }
            | Command::Vrfy(_)
            | Command::Etrn(_)
            | Command::Quit
            | Command::NonSmtp(_)
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
        for p in params {
            match (p.key.to_ascii_uppercase().as_str(), p.value.as_deref()) {
                ("SIZE", Some(v)) => match v.parse::<u64>() {
                    Ok(n) if self.st.message_size_limit > 0 && n > self.st.message_size_limit => {
                        return Reply::new(552, "5.3.4", "Message size exceeds fixed limit");
                    }
                    Ok(n) => size = n,
                    Err(_) => return Reply::new(501, "5.5.4", "Bad message size syntax"),
                },
                ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => body_8bit = true,
                ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => {}
                ("SMTPUTF8", None) if self.st.smtputf8 => {}
                // RFC 4954's AUTH=: Postfix ignores it when SASL is off.
                ("AUTH", Some(v)) if self.st.sasl.is_some() => {
                    if sasl_sender.is_some() {
                        return Reply::new(503, "5.5.4", "Error: multiple AUTH= options");
                    }
                    sasl_sender = Some(v.to_owned());
                }
                ("AUTH", Some(_)) => {}
                _ => {
                    return Reply::new(
                        555,
                        "5.5.4",
                        format!("Unsupported option: {}", param_text(p)),
                    )
                }
            }
        }
        self.sender = Some(check::display(&addr));
        self.declared_size = size;
        self.instance = next_instance();
        self.body_8bit = body_8bit;
        self.sasl_sender = sasl_sender.filter(|s| s != "<>");
        Reply::new(250, "2.1.0", "Ok")
    }

    async fn rcpt(&mut self, addr: String, params: &[Param]) -> Reply {
        if self.sender.is_none() {
            return Reply::new(503, "5.5.1", "Error: need MAIL command");
        }
        if let Some(r) = self.over_limit(Limit::Rcpt).await {
            return r;
        }
        if let Some(p) = params.first() {
            return Reply::new(
                555,
                "5.5.4",
                format!("Unsupported option: {}", param_text(p)),
            );
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
        match verdict {
            Ok(()) => {
                self.recipients.push((st.resolve(&addr).address(), addr));
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
        let mut fx = std::mem::take(&mut self.effects);
        // Postfix has a queue file (and ID) before DATA: the DATA
        // restrictions log it. Without them, cleanup starts the queue file
        // while the client sends the message, and its answer is read only
        // then.
        let shared = self.shared.clone();
        let mut early = None;
        if !st.restrictions.list(Stage::Data).is_empty() {
            let sender = self.sender.clone().unwrap_or_default();
            let envelope = self.envelope(&sender, &with_effects(&self.recipients, &fx));
            match shared.cleanup.begin(envelope).await {
                Ok(m) => early = Some(m),
                Err(e) => {
                    self.effects = fx;
                    return Ok(self.cleanup_failed(e));
                }
            }
        }
        let verdict = {
            let facts = Facts {
                recipient: single_recipient(&self.recipients),
                queue_id: early.as_ref().map(|m| m.queue_id()),
                ..self.facts("DATA")
            };
            check::content(&st, Stage::Data, facts, &mut fx).await
        };
        if let Err(r) = verdict {
            self.effects = fx;
            if let Some(m) = early {
                m.abort().await;
            }
            return Ok(r);
        }
        let sender = self.sender.take().unwrap_or_default();
        let recipients = std::mem::take(&mut self.recipients);
        // A client past the soft error limit waits for 354, as for any reply.
        self.pace().await;
        self.reply(&Reply::plain(354, "End data with <CR><LF>.<CR><LF>"));
        if !self.flush().await {
            if let Some(m) = early {
                m.abort().await;
            }
            return Err(End::Lost);
        }
        let mut msg = match early {
            Some(m) => m,
            None => {
                let envelope = self.envelope(&sender, &with_effects(&recipients, &fx));
                match shared.cleanup.begin(envelope).await {
                    Ok(m) => m,
                    Err(e) => {
                        let r = self.cleanup_failed(e);
                        self.discard_data().await?;
                        return Ok(r);
                    }
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
                    "{id}: client={}, sasl_method={method}, sasl_username={user}{sender_part}",
                    self.client
                );
            }
            None => info!("{id}: client={}", self.client),
        }
        let mut out: Vec<u8> = fx
            .prepend
            .iter()
            .flat_map(|h| format!("{h}\n").into_bytes())
            .collect();
        out.extend(self.received_header(&id, &recipients));
        let mut decoder = DataDecoder::new();
        let mut size: u64 = 0;
        let mut too_big = false;
        let mut broken = false;
        loop {
            let before = out.len();
            let progress = decoder.feed(&self.inbuf, &mut out);
            let consumed = match progress {
                Progress::Done { consumed } => consumed,
                Progress::More => self.inbuf.len(),
            };
            self.inbuf.drain(..consumed);
            size += (out.len() - before) as u64;
            if st.message_size_limit > 0 && size > st.message_size_limit {
                too_big = true;
            }
            let done = matches!(progress, Progress::Done { .. });
            if (out.len() >= CHUNK || done) && !too_big && !broken {
                // The last pieces go out with End, in one write.
                let sent = if done {
                    msg.write_later(&out)
                } else {
                    msg.write(&out).await
                };
                broken = sent.is_err();
                out.clear();
            } else if too_big || broken {
                out.clear();
            }
            if done {
                break;
            }
            match self.fill().await {
                Ok(true) => {}
                Ok(false) => {
                    msg.abort().await;
                    return Err(End::Lost);
                }
                Err(e) => {
                    msg.abort().await;
                    return Err(e);
                }
            }
        }
        let excluded = st.bare_newline_exclusions.contains(self.peer.ip());
        let bare_lf_rejected =
            st.bare_newline == BareNewline::Reject && !excluded && decoder.bare_lf_count() > 0;
        let refused = if too_big || bare_lf_rejected || broken {
            None
        } else {
            let before = (fx.redirect.clone(), fx.bcc.len());
            let facts = Facts {
                sender: Some(&sender),
                recipient: single_recipient(&recipients),
                rcpt_count: recipients.len(),
                queue_id: Some(&id),
                size,
                ..self.facts("END-OF-MESSAGE")
            };
            let verdict = check::content(&st, Stage::EndOfData, facts, &mut fx).await;
            if verdict.is_ok() && (fx.redirect, fx.bcc.len()) != before {
                // The envelope went to cleanup at DATA: a new recipient now
                // would be lost, and the message must not go without it.
                warn!("{id}: REDIRECT or BCC in smtpd_end_of_data_restrictions: not implemented by postfix-rs");
                Some(Reply::new(451, "4.3.5", "Server configuration error"))
            } else {
                verdict.err()
            }
        };
        if let Some(r) = refused {
            msg.abort().await;
            return Ok(r);
        }
        if too_big || bare_lf_rejected || broken {
            msg.abort().await;
            return Ok(if too_big {
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
            });
        }
        if fx.discard {
            // Accepted, and dropped: what DISCARD means.
            msg.abort().await;
            return Ok(Reply::new(250, "2.0.0", format!("Ok: queued as {id}")));
        }
        if fx.hold && msg.hold().is_err() {
            msg.abort().await;
            return Ok(Reply::new(451, "4.3.0", "Error: queue file write error"));
        }
        Ok(match msg.end().await {
            Ok(CleanupReply::Committed { queue_id }) => {
                Reply::new(250, "2.0.0", format!("Ok: queued as {queue_id}"))
            }
            Ok(CleanupReply::TooBig) => Reply::new(552, "5.3.4", "Error: message file too big"),
            Ok(CleanupReply::TooManyHops) => Reply::new(554, "5.4.0", "Error: too many hops"),
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
        })
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

    /// What starts a message with cleanup.
    fn envelope(&self, sender: &str, recipients: &[(String, String)]) -> Envelope {
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
        let recipients: Vec<(String, Option<String>)> = recipients
            .iter()
            .map(|(a, o)| (a.clone(), Some(o.clone()).filter(|o| o != a)))
            .collect();
        Envelope {
            sender: sender.to_owned(),
            recipients,
            attrs,
            origin: self.origin,
        }
    }

    /// Postfix's Received: header.
    fn received_header(&self, id: &str, recipients: &[(String, String)]) -> Vec<u8> {
        let helo = self.helo.as_deref().unwrap_or("unknown");
        let for_part = match recipients {
            [(addr, _)] => format!("\n\tfor <{addr}>"),
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

/// The recipient the DATA and end-of-data restrictions see: the only
/// one, as given, or none when there are several (as Postfix).
fn single_recipient(recipients: &[(String, String)]) -> Option<&str> {
    match recipients {
        [(_, given)] => Some(given),
        _ => None,
    }
}

/// The envelope recipients after the restrictions' REDIRECT (all mail
/// goes to that address) and BCC (a copy to each).
fn with_effects(recipients: &[(String, String)], fx: &Effects) -> Vec<(String, String)> {
    let mut out = match &fx.redirect {
        Some(to) => vec![(
            to.clone(),
            recipients
                .first()
                .map(|(_, g)| g.clone())
                .unwrap_or_default(),
        )],
        None => recipients.to_vec(),
    };
    out.extend(fx.bcc.iter().map(|b| (b.clone(), b.clone())));
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
        std::process::id(),
        now.as_secs(),
        now.subsec_micros(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
