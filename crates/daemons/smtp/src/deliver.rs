//! One delivery request: find the servers, hold one conversation (reusing a
//! cached connection to the same next hop when there is one), and turn each
//! recipient's answer into a status and Postfix's log line. SMTP and LMTP
//! differ only where the mode says: the servers a next hop names, the
//! greeting, and the replies at the end of DATA.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use pfx_config::{BuildError, Config};
use pfx_ipc::proto::DeliveryRequest;
use pfx_maillog::delivery::{Action, Class, Outcome};
use pfx_queue::file::QueueFile;
use pfx_queue::Queue;
use pfx_resolve::addrmap::{AddrMap, Domains};
use pfx_smtp_proto::dsn;
use pfx_smtp_proto::encode::DataEncoder;
use pfx_smtp_proto::xforward;
use tracing::{info, warn};

use crate::client::{Broken, Conn, Reply, StartError, Timeouts, TlsPlan};
use crate::mode::{Mode, Params};
use crate::route::{self, Endpoint, LmtpHop, Me, Target};
use crate::security::{Policy, Security};
use pfx_tls::client::Level;

type Idle = HashMap<String, Vec<(Instant, Target, Conn)>>;

/// What the agent needs, built once per configuration.
pub(crate) struct Agent {
    mode: Mode,
    queue: Queue,
    /// `lmtp_tcp_port`: the port of an LMTP next hop that names none.
    lmtp_port: u16,
    resolver: pfx_dns::Resolver,
    helo: String,
    myhostname: String,
    own: Vec<IpAddr>,
    t: Timeouts,
    cache_on: bool,
    cache_time: Duration,
    /// Idle connections per next hop (`smtp_connection_cache_on_demand`).
    idle: Arc<Mutex<Idle>>,
    security: Security,
    /// `minimal_backoff_time`: after it, `may` gives up on a failing handshake.
    minimal_backoff: Duration,
    /// `smtp_starttls_timeout`.
    starttls_timeout: Duration,
    /// `smtp_line_length_limit`: longer lines are broken (0: never).
    line_limit: usize,
    /// `smtp_generic_maps`: addresses rewritten on the way out.
    generic: Option<(Domains, AddrMap)>,
    /// `smtp_send_xforward_command`, and `smtp_xforward_timeout`.
    xforward: Option<Duration>,
    /// `smtp_fallback_relay`: where mail goes when its destination cannot
    /// be found or reached (SMTP only).
    fallback: Vec<String>,
}

impl Agent {
    /// The agent for `mode`, reading the mode's parameters (`lmtp_*` for LMTP).
    pub(crate) fn new(cfg: Arc<Config>, mode: Mode) -> Result<Self, BuildError> {
        let p = Params { cfg: &cfg, mode };
        let time = |n: &'static str| p.time(n);
        let lmtp_port = match mode {
            Mode::Smtp => 24,
            Mode::Lmtp => {
                let v = p.get("smtp_tcp_port")?;
                route::tcp_port(&v).ok_or_else(|| format!("lmtp_tcp_port: bad port \"{v}\""))?
            }
        };
        Ok(Self {
            mode,
            queue: Queue::new(cfg.get("queue_directory")?),
            lmtp_port,
            resolver: pfx_dns::Resolver::from_config(&cfg)?,
            helo: p.get("smtp_helo_name")?,
            myhostname: cfg.get("myhostname")?,
            own: own_addresses(&cfg.get("inet_interfaces")?),
            t: Timeouts {
                connect: time("smtp_connect_timeout")?,
                helo: time("smtp_helo_timeout")?,
                mail: time("smtp_mail_timeout")?,
                rcpt: time("smtp_rcpt_timeout")?,
                data_init: time("smtp_data_init_timeout")?,
                data_xfer: time("smtp_data_xfer_timeout")?,
                data_done: time("smtp_data_done_timeout")?,
                rset: time("smtp_rset_timeout")?,
                quit: time("smtp_quit_timeout")?,
            },
            cache_on: p.bool("smtp_connection_cache_on_demand")?,
            cache_time: time("smtp_connection_cache_time_limit")?,
            idle: Arc::default(),
            security: Security::new(&p)?,
            minimal_backoff: cfg.time("minimal_backoff_time")?,
            starttls_timeout: time("smtp_starttls_timeout")?,
            line_limit: usize::try_from(p.int("smtp_line_length_limit")?).unwrap_or(0),
            fallback: match mode {
                Mode::Smtp => cfg
                    .get("smtp_fallback_relay")?
                    .split([' ', ',', '\t', '\n'])
                    .filter(|r| !r.is_empty())
                    .map(str::to_owned)
                    .collect(),
                Mode::Lmtp => Vec::new(),
            },
            xforward: if p.bool("smtp_send_xforward_command")? {
                Some(time("smtp_xforward_timeout")?)
            } else {
                None
            },
            generic: {
                let title = match mode {
                    Mode::Smtp => "smtp_generic_maps",
                    Mode::Lmtp => "lmtp_generic_maps",
                };
                let map = AddrMap::new(&cfg, title, "generic")?;
                if map.is_empty() {
                    None
                } else {
                    Some((Domains::new(&cfg)?, map))
                }
            },
        })
    }
}

impl Agent {
    /// An address as `smtp_generic_maps` gives it (one lookup, the first
    /// address of the value, as Postfix's smtp_map11); `Err` when the table
    /// could not answer: the delivery waits.
    fn generic(&self, addr: &str) -> Result<String, Outcome> {
        let Some((domains, map)) = &self.generic else {
            return Ok(addr.to_owned());
        };
        if addr.is_empty() {
            return Ok(String::new());
        }
        match map.map(domains, addr) {
            Ok(Some(list)) => {
                if list.len() > 1 {
                    warn!("multi-valued {} result for {addr}", map.title);
                }
                Ok(list.into_iter().next().unwrap_or_default())
            }
            Ok(None) => Ok(addr.to_owned()),
            Err(e) => {
                warn!("{} map lookup problem for {addr}: {e}", map.title);
                Err(failed(
                    true,
                    "4.3.0",
                    format!("{} map lookup problem for {addr}", map.title),
                ))
            }
        }
    }

    /// The message's primary header section with its addresses through
    /// `smtp_generic_maps`.
    fn generic_headers(&self, head: &[u8]) -> Result<Vec<u8>, Outcome> {
        pfx_address::header::rewrite_fields(head, &|_| false, &mut |_, spec| {
            let new = self.generic(spec)?;
            Ok((new != spec).then_some(new))
        })
    }
}

/// The addresses this host receives mail on (`inet_interfaces`), for loop detection.
fn own_addresses(inet_interfaces: &str) -> Vec<IpAddr> {
    let items: Vec<&str> = inet_interfaces
        .split([',', ' '])
        .filter(|s| !s.is_empty())
        .collect();
    if items.contains(&"all") {
        return nix::ifaddrs::getifaddrs()
            .map(|addrs| {
                addrs
                    .filter_map(|a| a.address)
                    .filter_map(|a| {
                        a.as_sockaddr_in()
                            .map(|s| IpAddr::V4(s.ip()))
                            .or_else(|| a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())))
                    })
                    .collect()
            })
            .unwrap_or_default();
    }
    items
        .iter()
        .flat_map(|i| match *i {
            "loopback-only" | "localhost" => vec!["127.0.0.1".parse().ok(), "::1".parse().ok()],
            other => vec![other.trim_matches(['[', ']']).parse().ok()],
        })
        .flatten()
        .collect()
}

/// A failure; the relay is filled in when the request is answered.
fn failed(temporary: bool, dsn: &str, reason: String) -> Outcome {
    Outcome::failed(temporary, dsn, "none", reason)
}

/// A reply that is not 2xx, as the reason Postfix gives.
fn said(target: &Target, r: &Reply, command: &str) -> Outcome {
    failed(
        r.code < 500,
        &r.dsn(),
        format!(
            "host {} said: {} (in reply to {command} command)",
            target.name(),
            r.text()
        ),
    )
}

fn broken(target: &Target, b: &Broken, stage: &str) -> Outcome {
    let reason = match b {
        Broken::TimedOut => format!(
            "conversation with {} timed out while {stage}",
            target.name()
        ),
        Broken::Lost => format!("lost connection with {} while {stage}", target.name()),
        Broken::Io(e) => format!("error talking to {} while {stage}: {e}", target.name()),
    };
    failed(true, "4.4.2", reason)
}

/// Delivers a request and logs each recipient's outcome.
pub(crate) async fn request(agent: &Agent, req: &DeliveryRequest) -> Vec<Outcome> {
    let start = SystemTime::now();
    let path = agent.queue.path(req.queue, &req.queue_id);
    let n = req.recipients.len();
    let (verdicts, relay, connected, uses) =
        match tokio::task::block_in_place(|| QueueFile::open_for_delivery(&path)) {
            Err(e) => {
                warn!("{}: read queue file: {e}", req.queue_id);
                (
                    vec![failed(true, "4.3.0", format!("read queue file: {e}")); n],
                    "none".to_owned(),
                    start,
                    1,
                )
            }
            Ok(qf) => deliver(agent, req, &qf).await,
        };
    let mut statuses = Vec::with_capacity(n);
    for (r, v) in req.recipients.iter().zip(verdicts) {
        let times = req.times(start, connected);
        let mut o = v;
        o.relay.clone_from(&relay);
        info!(
            "{}: {}",
            req.queue_id,
            o.line_reused(&r.address, r.original.as_deref(), times, uses)
        );
        statuses.push(o);
    }
    statuses
}

/// What a request's next hop means: the servers to try, and the key and
/// domain of its TLS policy.
struct Hop {
    /// `smtp_tls_policy_maps` key: the next hop as written (for LMTP,
    /// without `inet:`; for a socket, its path).
    policy_key: String,
    /// The domain whose parents the policy lookup walks (none for a socket).
    policy_domain: String,
    /// The name a `secure` certificate must carry for `nexthop`: the
    /// domain, or `$myhostname` for a socket, as Postfix.
    names_domain: String,
    /// LMTP: the parsed next hop.
    lmtp: Option<LmtpHop>,
}

impl Hop {
    fn new(agent: &Agent, nexthop: &str) -> Result<Self, Outcome> {
        match agent.mode {
            Mode::Smtp => {
                let (domain, _, _) = route::parse_nexthop(nexthop);
                Ok(Self {
                    policy_key: nexthop.to_owned(),
                    policy_domain: domain.clone(),
                    names_domain: domain,
                    lmtp: None,
                })
            }
            Mode::Lmtp => {
                let hop = route::parse_lmtp_nexthop(nexthop, agent.lmtp_port).map_err(|e| {
                    warn!("{e}");
                    failed(true, "4.3.5", "Server configuration error".into())
                })?;
                let (policy_key, policy_domain, names_domain) = match &hop {
                    LmtpHop::Unix(path) => (path.clone(), String::new(), agent.myhostname.clone()),
                    LmtpHop::Inet(host, _) => (
                        nexthop.strip_prefix("inet:").unwrap_or(nexthop).to_owned(),
                        host.clone(),
                        host.clone(),
                    ),
                };
                Ok(Self {
                    policy_key,
                    policy_domain,
                    names_domain,
                    lmtp: Some(hop),
                })
            }
        }
    }

    /// The servers to try, in order, and whether this host is one of the
    /// next hop's MX hosts.
    async fn servers(&self, agent: &Agent, nexthop: &str) -> Result<(Vec<Target>, bool), Outcome> {
        match &self.lmtp {
            Some(hop) => route::lmtp_servers(&agent.resolver, hop, &agent.myhostname)
                .await
                .map(|t| (t, false)),
            None => {
                let me = Me {
                    hostname: &agent.myhostname,
                    addresses: &agent.own,
                };
                route::servers(&agent.resolver, nexthop, &me).await
            }
        }
    }
}

/// Finds a server and runs the transaction: (verdicts, relay, when connected, connection uses).
async fn deliver(
    agent: &Agent,
    req: &DeliveryRequest,
    qf: &QueueFile,
) -> (Vec<Outcome>, String, SystemTime, u32) {
    let n = req.recipients.len();
    let hop = match Hop::new(agent, &req.nexthop) {
        Ok(h) => h,
        Err(f) => return (vec![f; n], "none".into(), SystemTime::now(), 1),
    };
    let policy = match agent.security.policy(&hop.policy_key, &hop.policy_domain) {
        Ok(p) => p,
        Err(f) => return (vec![f; n], "none".into(), SystemTime::now(), 1),
    };
    let key = cache_key(agent, req, &req.nexthop, &policy);
    if let Some((target, conn)) = cached(agent, &key).await {
        return converse(agent, req, qf, target, conn, &key).await;
    }
    let mut last = failed(
        true,
        "4.4.1",
        format!("connect to {}: no address", req.nexthop),
    );
    // The destination's servers, then the fallback relays' (each under
    // its own TLS policy), unless this host is one of its MX hosts.
    let mut groups = Vec::new();
    let mut fallback = agent.mode == Mode::Smtp;
    match hop.servers(agent, &req.nexthop).await {
        Ok((targets, we_are_mx)) => {
            fallback &= !we_are_mx;
            groups.push((policy, hop.names_domain, targets, key.clone()));
        }
        Err(f) => {
            fallback &= route::fallback_may_follow(&f);
            last = f;
        }
    }
    if fallback {
        for relay in agent.fallback.iter().filter(|r| **r != req.nexthop) {
            let Ok(relay_hop) = Hop::new(agent, relay) else {
                continue;
            };
            let Ok(relay_policy) = agent
                .security
                .policy(&relay_hop.policy_key, &relay_hop.policy_domain)
            else {
                continue;
            };
            if let Ok((targets, _)) = relay_hop.servers(agent, relay).await {
                // Its connections are cached as the relay's: a later
                // message for the destination tries the destination first.
                let relay_key = cache_key(agent, req, relay, &relay_policy);
                groups.push((relay_policy, relay_hop.names_domain, targets, relay_key));
            }
        }
    }
    for (policy, names_domain, targets, key) in groups {
        for target in targets {
            let mut conn = match open(agent, req, &target, &policy, &names_domain).await {
                Ok(c) => c,
                Err(o) => {
                    last = o;
                    continue;
                }
            };
            if let Err(o) = authenticate(agent, req, &target, &mut conn).await {
                info!("{}: {}", req.queue_id, o.reason);
                last = o;
                conn.quit(&agent.t).await;
                continue;
            }
            return converse(agent, req, qf, target, conn, &key).await;
        }
    }
    (vec![last; n], "none".into(), SystemTime::now(), 1)
}

/// A connection to one server, not yet spoken to.
async fn dial(agent: &Agent, target: &Target) -> Result<crate::client::Stream, Outcome> {
    let connected = match &target.endpoint {
        Endpoint::Inet(ip, port) => Conn::connect(SocketAddr::new(*ip, *port), &agent.t).await,
        Endpoint::Unix(path) => {
            // Relative to the queue directory, where Postfix's daemons run
            // (and where a confined one has its root).
            let full = agent.queue.root().join(path);
            if full.as_os_str().len() >= 108 {
                warn!("unix-domain name too long: {}", full.display());
                return Err(failed(true, "4.3.5", "Server configuration error".into()));
            }
            Conn::connect_unix(&full, &agent.t).await
        }
    };
    connected.map_err(|e| {
        let why = e.to_string();
        let why = why.split(" (os error").next().unwrap_or(&why).to_owned();
        let reason = format!("connect to {}: {why}", target.relay());
        // As Postfix: a TCP server that fails is noted before the next is
        // tried; a socket is the only server, and its status line says it.
        if matches!(target.endpoint, Endpoint::Inet(..)) {
            info!("{reason}");
        }
        failed(true, "4.4.1", reason)
    })
}

/// Connects to one server and gets it ready for MAIL: greeting, EHLO (LHLO), and
/// TLS as the policy asks.
async fn open(
    agent: &Agent,
    req: &DeliveryRequest,
    target: &Target,
    policy: &Policy,
    domain: &str,
) -> Result<Conn, Outcome> {
    let mut level = policy.level;
    if level == Level::May && matches!(target.endpoint, Endpoint::Unix(_)) {
        // As Postfix: encryption without authentication on a private
        // channel only costs; `encrypt` and up are still honoured.
        warn!("smtp_connect_local: opportunistic TLS encryption is not appropriate for unix-domain destinations.");
        level = Level::None;
    }
    loop {
        let stream = dial(agent, target).await?;
        let plan = TlsPlan {
            client: agent.security.client.as_deref().map_err(String::as_str),
            level,
            names: policy.names(&target.host, domain),
            wrapper: agent.security.wrapper,
            loglevel: agent.security.loglevel,
            peer: target.relay(),
            host: &target.host,
            timeout: agent.starttls_timeout,
        };
        match Conn::start(stream, agent.mode, &agent.helo, &agent.t, &plan).await {
            Ok(c) => return Ok(c),
            Err(StartError::Helo(reply)) if agent.mode == Mode::Lmtp => {
                return Err(failed(
                    reply.code < 500,
                    &reply.dsn(),
                    format!(
                        "host {} refused to talk to me: {}",
                        target.name(),
                        reply.text()
                    ),
                ))
            }
            Err(StartError::Helo(reply)) => return Err(said(target, &reply, "HELO")),
            Err(StartError::Greeting(reply)) => {
                // A server that greets with an error is skipped (Postfix's
                // smtp_skip_5xx_greeting); if it was the last, try later.
                let reason = format!(
                    "host {} refused to talk to me: {}",
                    target.name(),
                    reply.text()
                );
                info!("{reason}");
                return Err(failed(true, &format!("4{}", &reply.dsn()[1..]), reason));
            }
            Err(StartError::Broken(b, stage)) => return Err(broken(target, &b, stage)),
            Err(StartError::Handshake(o))
                if level == Level::May
                    && !agent.security.wrapper
                    && plaintext_ok(agent, req, target) =>
            {
                // As Postfix: opportunistic TLS that keeps failing with a
                // server gives way to plain text once the message has
                // waited, unless a password would go out with it.
                info!("{}: {}", req.queue_id, o.reason);
                level = Level::None;
            }
            Err(StartError::Tls(o) | StartError::Handshake(o)) => {
                info!("{}: {}", req.queue_id, o.reason);
                return Err(o);
            }
        }
    }
}

/// Whether a `may` handshake that failed may be followed by plain text:
/// the message has waited `minimal_backoff_time` (a first attempt defers),
/// and no SASL password is configured for the server.
fn plaintext_ok(agent: &Agent, req: &DeliveryRequest, target: &Target) -> bool {
    let waited = SystemTime::now()
        .duration_since(req.arrival())
        .is_ok_and(|w| w >= agent.minimal_backoff);
    let password = agent.security.sasl.as_ref().is_some_and(|s| {
        !matches!(
            s.credentials(&req.sender, &target.host, &req.nexthop),
            Ok(None)
        )
    });
    waited && !password
}

/// Idle connections are kept per next hop, TLS level and (with
/// sender-dependent authentication) sender: a plain connection never
/// carries mail that policy wants encrypted, nor one logged in as one
/// sender mail of another.
fn cache_key(agent: &Agent, req: &DeliveryRequest, nexthop: &str, policy: &Policy) -> String {
    let who = match &agent.security.sasl {
        Some(s) if s.sender_dependent => req.sender.to_ascii_lowercase(),
        _ => String::new(),
    };
    format!("{nexthop}\t{}\t{who}", policy.level.name())
}

/// SMTP AUTH with the password `smtp_sasl_password_maps` holds for this
/// server, when it offers AUTH.
async fn authenticate(
    agent: &Agent,
    req: &DeliveryRequest,
    target: &Target,
    conn: &mut Conn,
) -> Result<(), Outcome> {
    let Some(sasl) = &agent.security.sasl else {
        return Ok(());
    };
    let creds = sasl
        .credentials(&req.sender, &target.host, &req.nexthop)
        .map_err(|e| {
            warn!("smtp_sasl_password_maps: {e}");
            failed(true, "4.3.0", "SASL password lookup failed".into())
        })?;
    let Some((user, password)) = creds else {
        return Ok(());
    };
    if conn.auth.is_empty() {
        return Ok(());
    }
    let Some(mech) = sasl.mechanism(&conn.auth, conn.tls) else {
        return Err(failed(
            true,
            "4.7.0",
            format!(
                "SASL authentication failed; cannot authenticate to server {}: no mechanism available",
                target.name()
            ),
        ));
    };
    match conn.authenticate(mech, &user, &password, &agent.t).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(reply)) => {
            let temporary = reply.code < 500 || sasl.soft_bounce;
            let mut dsn = reply.dsn();
            if temporary {
                dsn.replace_range(..1, "4");
            }
            Err(failed(
                temporary,
                &dsn,
                format!(
                    "SASL authentication failed; server {} said: {}",
                    target.name(),
                    reply.text()
                ),
            ))
        }
        Err(b) => Err(broken(target, &b, "authenticating")),
    }
}

/// The transaction on a connected server, then the connection is kept or
/// closed: (verdicts, relay, when connected, connection uses).
async fn converse(
    agent: &Agent,
    req: &DeliveryRequest,
    qf: &QueueFile,
    target: Target,
    mut conn: Conn,
    key: &str,
) -> (Vec<Outcome>, String, SystemTime, u32) {
    let connected = SystemTime::now();
    let verdicts = transaction(agent, &mut conn, &target, req, qf).await;
    let relay = target.relay();
    let uses = conn.uses;
    release(agent, key, target, conn, &verdicts).await;
    let n = req.recipients.len();
    (
        verdicts.unwrap_or_else(|v| vec![v; n]),
        relay,
        connected,
        uses,
    )
}

/// An idle connection for this cache key that still answers RSET.
async fn cached(agent: &Agent, key: &str) -> Option<(Target, Conn)> {
    loop {
        let entry = {
            let mut idle = agent.idle.lock().unwrap_or_else(|e| e.into_inner());
            let list = idle.get_mut(key)?;
            list.retain(|(since, _, _)| since.elapsed() < agent.cache_time);
            list.pop()
        };
        let (_, target, mut conn) = entry?;
        if let Ok(r) = conn.command("RSET", agent.t.rset).await {
            if r.code / 100 == 2 {
                return Some((target, conn));
            }
        }
    }
}

/// After a transaction: keep the connection for the next message to the
/// same next hop, or say QUIT. One that broke (an LMTP server gone between
/// its replies) is only closed.
async fn release(
    agent: &Agent,
    key: &str,
    target: Target,
    conn: Conn,
    outcome: &Result<Vec<Outcome>, Outcome>,
) {
    if conn.lost {
        return;
    }
    if agent.cache_on && outcome.is_ok() {
        agent
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_owned())
            .or_default()
            .push((Instant::now(), target, conn));
        // Connections nobody reused within the time limit are closed.
        let (idle, limit) = (agent.idle.clone(), agent.cache_time);
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            let mut idle = idle.lock().unwrap_or_else(|e| e.into_inner());
            for list in idle.values_mut() {
                list.retain(|(since, _, _)| since.elapsed() < limit);
            }
            idle.retain(|_, list| !list.is_empty());
        });
    } else if outcome.is_ok() {
        conn.quit(&agent.t).await;
    }
}

/// XFORWARD before MAIL FROM (a content filter's next hop learns whose
/// mail it is): the original client as the queue file records it. A
/// refusal is only logged, as Postfix does.
async fn xforward(
    conn: &mut Conn,
    target: &Target,
    qf: &QueueFile,
    timeout: Duration,
) -> Result<(), Outcome> {
    let attr = |n: &str| qf.attr(n).unwrap_or("").to_owned();
    let have = xforward::Client {
        name: attr("log_client_name"),
        addr: attr("log_client_address"),
        port: attr("log_client_port"),
        proto: attr("log_protocol_name"),
        helo: qf.attr("log_helo_name").map(str::to_owned),
    };
    let commands = xforward::commands(
        &conn.xforward,
        &have,
        qf.attr("log_ident"),
        qf.attr("rewrite_context"),
    );
    for cmd in &commands {
        let reply = conn
            .command(cmd, timeout)
            .await
            .map_err(|b| broken(target, &b, "sending XFORWARD"))?;
        if reply.code / 100 != 2 {
            let what = if cmd.contains(" NAME=") || cmd.contains(" ADDR=") || cmd.contains(" PORT=")
            {
                "XFORWARD name/address command"
            } else {
                "XFORWARD helo/protocol command"
            };
            warn!(
                "host {} said: {} (in reply to {what})",
                target.relay(),
                reply.text()
            );
        }
    }
    Ok(())
}

/// One mail transaction. `Err` is a verdict for every recipient (the
/// connection broke, or the whole message was refused).
async fn transaction(
    agent: &Agent,
    conn: &mut Conn,
    target: &Target,
    req: &DeliveryRequest,
    qf: &QueueFile,
) -> Result<Vec<Outcome>, Outcome> {
    let t = agent.t;
    let size = qf.content_len;
    if let Some(limit) = conn.size_limit.filter(|l| size > *l) {
        return Err(failed(
            false,
            "5.3.4",
            format!(
                "message size {size} exceeds size limit {limit} of server {}",
                target.name()
            ),
        ));
    }
    conn.uses += 1;
    if let Some(timeout) = agent.xforward.filter(|_| !conn.xforward.is_empty()) {
        xforward(conn, target, qf, timeout).await?;
    }
    let mut mail = format!("MAIL FROM:<{}>", agent.generic(&req.sender)?);
    if conn.size_limit.is_some() {
        mail.push_str(&format!(" SIZE={size}"));
    }
    // 8-bit mail as it came (BODY=8BITMIME from the client), when the server takes it.
    if conn.eight_bit && qf.attr("encoding") == Some("8bit") {
        mail.push_str(" BODY=8BITMIME");
    }
    // The client's RFC 3461 requests go on to a server that takes them,
    // as Postfix's smtp passes them.
    if conn.dsn {
        if let Some(envid) = qf.attr("envelope_id").filter(|e| !e.is_empty()) {
            mail.push_str(&format!(" ENVID={}", dsn::xtext_encode(envid)));
        }
        match qf.attr("ret_flags").and_then(|r| r.parse().ok()) {
            Some(dsn::RET_FULL) => mail.push_str(" RET=FULL"),
            Some(dsn::RET_HDRS) => mail.push_str(" RET=HDRS"),
            _ => {}
        }
    }
    let rcpts: Vec<String> = req
        .recipients
        .iter()
        .map(|r| {
            let mut cmd = format!("RCPT TO:<{}>", agent.generic(&r.address)?);
            if conn.dsn {
                let orcpt = r
                    .orcpt
                    .clone()
                    .or_else(|| r.original.as_ref().map(|o| format!("rfc822;{o}")));
                if let Some(o) = orcpt {
                    cmd.push_str(&format!(" ORCPT={}", dsn::orcpt_encode(&o)));
                }
                if r.notify != 0 {
                    cmd.push_str(&format!(" NOTIFY={}", dsn::notify_text(r.notify)));
                }
            }
            Ok(cmd)
        })
        .collect::<Result<_, Outcome>>()?;
    let mut verdicts: Vec<Option<Outcome>> = vec![None; rcpts.len()];
    let mail_reply;
    let data_reply;
    if conn.pipelining {
        let mut batch = format!("{mail}\r\n");
        for r in &rcpts {
            batch.push_str(r);
            batch.push_str("\r\n");
        }
        batch.push_str("DATA\r\n");
        conn.send(batch.as_bytes())
            .await
            .map_err(|b| broken(target, &b, "sending MAIL FROM"))?;
        mail_reply = conn
            .read(t.mail)
            .await
            .map_err(|b| broken(target, &b, "receiving the MAIL FROM response"))?;
        for v in verdicts.iter_mut() {
            let r = conn
                .read(t.rcpt)
                .await
                .map_err(|b| broken(target, &b, "receiving the RCPT TO response"))?;
            if r.code / 100 != 2 {
                *v = Some(said(target, &r, "RCPT TO"));
            }
        }
        data_reply = conn
            .read(t.data_init)
            .await
            .map_err(|b| broken(target, &b, "receiving the DATA response"))?;
    } else {
        mail_reply = conn
            .command(&mail, t.mail)
            .await
            .map_err(|b| broken(target, &b, "sending MAIL FROM"))?;
        if mail_reply.code / 100 != 2 {
            let _ = conn.command("RSET", t.rset).await;
            return Err(said(target, &mail_reply, "MAIL FROM"));
        }
        for (v, r) in verdicts.iter_mut().zip(&rcpts) {
            let reply = conn
                .command(r, t.rcpt)
                .await
                .map_err(|b| broken(target, &b, "sending RCPT TO"))?;
            if reply.code / 100 != 2 {
                *v = Some(said(target, &reply, "RCPT TO"));
            }
        }
        if verdicts.iter().all(Option::is_some) {
            let _ = conn.command("RSET", t.rset).await;
            return Ok(verdicts.into_iter().flatten().collect());
        }
        data_reply = conn
            .command("DATA", t.data_init)
            .await
            .map_err(|b| broken(target, &b, "sending DATA"))?;
    }
    if mail_reply.code / 100 != 2 {
        if data_reply.code == 354 {
            let _ = conn.command(".", t.data_done).await;
        }
        let _ = conn.command("RSET", t.rset).await;
        return Err(said(target, &mail_reply, "MAIL FROM"));
    }
    let none_accepted = verdicts.iter().all(Option::is_some);
    if data_reply.code != 354 {
        let v = said(target, &data_reply, "DATA");
        return Ok(verdicts
            .into_iter()
            .map(|x| x.unwrap_or_else(|| v.clone()))
            .collect());
    }
    if none_accepted {
        // A server that says 354 without recipients gets an empty message it must refuse.
        let _ = conn.command(".", t.data_done).await;
        return Ok(verdicts.into_iter().flatten().collect());
    }
    // The content, CRLF and dot-stuffed, read from the open queue file.
    let mut content = qf
        .content()
        .map_err(|e| failed(true, "4.3.0", format!("read queue file: {e}")))?;
    let mut enc = DataEncoder::with_line_limit(agent.line_limit);
    let mut buf = vec![0u8; 64 * 1024];
    let mut wire = Vec::with_capacity(70 * 1024);
    if agent.generic.is_some() {
        // The header section first, its addresses rewritten.
        let (head, rest) = tokio::task::block_in_place(|| header_section(&mut content))
            .map_err(|e| failed(true, "4.3.0", format!("read queue file: {e}")))?;
        let mut head = agent.generic_headers(&head)?;
        head.extend_from_slice(&rest);
        enc.feed(&head, &mut wire);
        tokio::time::timeout(t.data_xfer, conn.send(&wire))
            .await
            .map_err(|_| broken(target, &Broken::TimedOut, "sending message body"))?
            .map_err(|b| broken(target, &b, "sending message body"))?;
    }
    loop {
        let n = tokio::task::block_in_place(|| std::io::Read::read(&mut content, &mut buf))
            .map_err(|e| failed(true, "4.3.0", format!("read queue file: {e}")))?;
        wire.clear();
        if n == 0 {
            enc.finish(&mut wire);
        } else {
            enc.feed(&buf[..n], &mut wire);
        }
        tokio::time::timeout(t.data_xfer, conn.send(&wire))
            .await
            .map_err(|_| broken(target, &Broken::TimedOut, "sending message body"))?
            .map_err(|b| broken(target, &b, "sending message body"))?;
        if n == 0 {
            break;
        }
    }
    if enc.broke_lines() {
        info!(
            "{}: breaking line > {} bytes with <CR><LF>SPACE",
            req.queue_id, agent.line_limit
        );
    }
    Ok(end_of_data(agent, conn, target, verdicts).await)
}

/// Reads a message's header section (up to and without its empty line,
/// at most 1 MiB): (the section, what was read after it).
fn header_section(content: &mut impl std::io::Read) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(i) = got.windows(2).position(|w| w == b"\n\n") {
            let rest = got.split_off(i + 1);
            return Ok((got, rest));
        }
        if got.starts_with(b"\n") {
            return Ok((Vec::new(), got));
        }
        if got.len() > 1 << 20 {
            return Ok((Vec::new(), got));
        }
        let n = content.read(&mut buf)?;
        if n == 0 {
            return Ok((got, Vec::new()));
        }
        got.extend_from_slice(&buf[..n]);
    }
}

/// The replies to the end of DATA: SMTP's one for every accepted
/// recipient, or LMTP's one per accepted recipient, in RCPT order (RFC
/// 2033), each its recipient's own outcome. Recipients refused at RCPT
/// keep that verdict. When the connection breaks, the recipients not yet
/// answered are deferred (those answered keep their outcome).
async fn end_of_data(
    agent: &Agent,
    conn: &mut Conn,
    target: &Target,
    verdicts: Vec<Option<Outcome>>,
) -> Vec<Outcome> {
    let mut failure: Option<Outcome> = None;
    let mut shared: Option<Outcome> = None;
    let mut out = Vec::with_capacity(verdicts.len());
    for v in verdicts {
        if let Some(refused) = v {
            out.push(refused);
            continue;
        }
        if let Some(f) = &failure {
            out.push(f.clone());
            continue;
        }
        if let Some(s) = &shared {
            out.push(s.clone());
            continue;
        }
        let verdict = match conn.read(agent.t.data_done).await {
            Ok(r) if r.code / 100 == 2 => {
                let mut sent = Outcome::new(Class::Sent, &r.dsn(), "none", r.text());
                sent.action = if conn.dsn {
                    Action::Passed
                } else {
                    Action::Relayed
                };
                sent
            }
            Ok(r) => said(target, &r, "end of DATA"),
            Err(b) => {
                let f = broken(
                    target,
                    &b,
                    "sending end of data -- message may be sent more than once",
                );
                failure = Some(f.clone());
                f
            }
        };
        if agent.mode == Mode::Smtp {
            shared = Some(verdict.clone());
        }
        out.push(verdict);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::tests::{plain_plan, timeouts};
    use pfx_ipc::proto::DeliveryRecipient;
    use pfx_queue::file::{Envelope, Writer};
    use pfx_queue::QueueName;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

    /// How the fake server answers: RCPT replies by address (others 250),
    /// the replies after the end of DATA, and whether it hangs up after them.
    struct Script {
        rcpt: Vec<(&'static str, &'static str)>,
        end: Vec<&'static str>,
        hang_up: bool,
    }

    /// A server with PIPELINING on an in-memory pipe; returns the commands it saw.
    async fn server(stream: tokio::io::DuplexStream, script: Script) -> Vec<String> {
        let (r, mut w) = tokio::io::split(stream);
        let mut r = tokio::io::BufReader::new(r);
        let mut seen = Vec::new();
        w.write_all(b"220 server ready\r\n").await.unwrap();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                return seen;
            }
            let line = line.trim_end().to_owned();
            seen.push(line.clone());
            let reply = match line.split(' ').next().unwrap_or("") {
                "LHLO" | "EHLO" => "250-server\r\n250 PIPELINING\r\n".to_owned(),
                "MAIL" => "250 2.1.0 Ok\r\n".to_owned(),
                "RCPT" => {
                    let to = line.trim_start_matches("RCPT TO:<").trim_end_matches('>');
                    let r = script.rcpt.iter().find(|(a, _)| *a == to);
                    format!("{}\r\n", r.map_or("250 2.1.5 Ok", |(_, r)| *r))
                }
                "DATA" => {
                    w.write_all(b"354 go ahead\r\n").await.unwrap();
                    loop {
                        let mut l = String::new();
                        if r.read_line(&mut l).await.unwrap_or(0) == 0 || l == ".\r\n" {
                            break;
                        }
                    }
                    let mut out = String::new();
                    for e in &script.end {
                        out.push_str(e);
                        out.push_str("\r\n");
                    }
                    w.write_all(out.as_bytes()).await.unwrap();
                    if script.hang_up {
                        return seen;
                    }
                    continue;
                }
                "QUIT" => "221 2.0.0 Bye\r\n".to_owned(),
                _ => "250 2.0.0 Ok\r\n".to_owned(),
            };
            w.write_all(reply.as_bytes()).await.unwrap();
        }
    }

    /// One transaction in `mode` for `rcpts` against `script`: the
    /// verdicts, whether the connection is still usable, and what the
    /// server saw.
    async fn run(mode: Mode, rcpts: &[&str], script: Script) -> (Vec<Outcome>, bool, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::new(dir.path());
        std::fs::create_dir(dir.path().join("incoming")).unwrap();
        let mut w =
            Writer::create_in(&queue, QueueName::Incoming, SystemTime::now(), None).unwrap();
        w.envelope(&Envelope {
            sender: "s@example.org".into(),
            recipients: rcpts
                .iter()
                .map(|r| pfx_queue::file::NewRecipient::new(*r, None))
                .collect(),
            attrs: Vec::new(),
            filter: None,
        })
        .unwrap();
        w.content(b"Subject: test\n\n.dot\nbody\n").unwrap();
        let id = w.finish().unwrap();
        let qf = QueueFile::open(&queue.path(QueueName::Incoming, &id)).unwrap();
        let cfg = Config::from_text(
            dir.path(),
            &format!("queue_directory = {}\n", dir.path().display()),
        )
        .unwrap();
        let agent = Agent::new(Arc::new(cfg), mode).unwrap();
        let req = DeliveryRequest {
            queue: QueueName::Incoming,
            queue_id: id,
            sender: "s@example.org".into(),
            nexthop: "unix:private/dovecot-lmtp".into(),
            recipients: rcpts
                .iter()
                .map(|r| DeliveryRecipient {
                    address: r.to_string(),
                    original: None,
                    notify: 0,
                    orcpt: None,
                })
                .collect(),
            arrival_us: 0,
            activated_us: 0,
        };
        let target = Target {
            host: "mail.example".into(),
            endpoint: Endpoint::Unix("private/dovecot-lmtp".into()),
        };
        let (client, far) = tokio::io::duplex(64 * 1024);
        let seen = tokio::spawn(server(far, script));
        let t = timeouts(Duration::from_secs(5));
        let plan = plain_plan(&target.relay());
        let mut conn = Conn::start(Box::new(client), mode, "mail.example", &t, &plan)
            .await
            .unwrap();
        let verdicts = transaction(&agent, &mut conn, &target, &req, &qf)
            .await
            .unwrap();
        let usable = !conn.lost;
        drop(conn);
        (verdicts, usable, seen.await.unwrap())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn lmtp_gives_each_recipient_its_own_end_of_data_reply() {
        let (v, usable, seen) = run(
            Mode::Lmtp,
            &["a@example.org", "unknown@example.org", "full@example.org"],
            Script {
                rcpt: vec![(
                    "unknown@example.org",
                    "550 5.1.1 <unknown@example.org> User doesn't exist: unknown@example.org",
                )],
                end: vec![
                    "250 2.0.0 <a@example.org> Qb1 Saved",
                    "452 4.2.2 <full@example.org> Mailbox is full",
                ],
                hang_up: false,
            },
        )
        .await;
        assert!(usable);
        assert_eq!(seen[0], "LHLO mail.example");
        assert_eq!(
            (v[0].class, v[0].dsn.as_str(), v[0].reason.as_str()),
            (Class::Sent, "2.0.0", "250 2.0.0 <a@example.org> Qb1 Saved")
        );
        assert_eq!((v[1].class, v[1].dsn.as_str()), (Class::Bounced, "5.1.1"));
        assert_eq!(
            v[1].reason,
            "host mail.example[private/dovecot-lmtp] said: 550 5.1.1 <unknown@example.org> \
             User doesn't exist: unknown@example.org (in reply to RCPT TO command)"
        );
        assert_eq!((v[2].class, v[2].dsn.as_str()), (Class::Deferred, "4.2.2"));
        assert_eq!(
            v[2].reason,
            "host mail.example[private/dovecot-lmtp] said: 452 4.2.2 <full@example.org> \
             Mailbox is full (in reply to end of DATA command)"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_lmtp_server_gone_between_replies_defers_only_the_unanswered() {
        let (v, usable, _) = run(
            Mode::Lmtp,
            &["a@example.org", "b@example.org", "c@example.org"],
            Script {
                rcpt: vec![],
                end: vec!["250 2.0.0 <a@example.org> Saved"],
                hang_up: true,
            },
        )
        .await;
        assert!(!usable, "a broken connection is not kept");
        assert_eq!(v[0].class, Class::Sent);
        for o in &v[1..] {
            assert_eq!((o.class, o.dsn.as_str()), (Class::Deferred, "4.4.2"));
            assert_eq!(
                o.reason,
                "lost connection with mail.example[private/dovecot-lmtp] while \
                 sending end of data -- message may be sent more than once"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn smtp_gives_every_accepted_recipient_the_one_end_of_data_reply() {
        let (v, usable, seen) = run(
            Mode::Smtp,
            &["a@example.org", "no@example.org", "b@example.org"],
            Script {
                rcpt: vec![("no@example.org", "550 5.1.1 no such user")],
                end: vec!["250 2.0.0 Ok: queued as X"],
                hang_up: false,
            },
        )
        .await;
        assert!(usable);
        assert_eq!(seen[0], "EHLO mail.example");
        assert_eq!(v[0].class, Class::Sent);
        assert_eq!(v[0].reason, "250 2.0.0 Ok: queued as X");
        assert_eq!(v[1].class, Class::Bounced);
        assert_eq!(v[2].class, Class::Sent);
    }
}
