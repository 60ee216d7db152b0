//! The control channel rndc talks to: the `controls` statement's `inet`
//! sockets (or BIND's default, 127.0.0.1 and ::1 port 953 with the key of
//! /etc/bind/rndc.key), each with its `allow` list and keys.
//!
//! A connection goes as with BIND: rndc sends a signed `null` message and
//! gets a nonce back, then sends its command carrying that nonce; named
//! checks the signature, the clock (±5 minutes), the expiry and replays,
//! hands the command line to the main loop ([`Event::Command`]) and sends
//! its answer back signed with the same key. What fails those checks is
//! logged as BIND logs it and the connection closed.

pub mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use pfx_named_conf::acl::{Acl, Local};
use pfx_named_conf::conf::NamedConf;
use pfx_named_conf::controls::{self, Control, Key};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use wire::{Table, Value};

/// How far a command's clock may be from ours (BIND's CLOCKSKEW).
const CLOCK_SKEW: u32 = 300;
/// How long a command is remembered to refuse its replay.
const DUP_LIFETIME: u32 = 900;
/// How long an idle connection is kept.
const IDLE: Duration = Duration::from_secs(60);

/// What the control channel asks of the main loop.
pub enum Event {
    /// A command line (`reload example.com`) to carry out and answer.
    Command {
        line: String,
        read_only: bool,
        reply: oneshot::Sender<Reply>,
    },
    /// `rndc stop`/`halt` was answered: named exits now.
    Stop,
    /// A secondary zone was transferred (secondary.rs): its new text, to
    /// be served.
    Transferred {
        key: crate::serve::ZoneKey,
        text: String,
    },
    /// A secondary zone's data expired: it is answered with SERVFAIL
    /// until a primary gives it again.
    Expired { key: crate::serve::ZoneKey },
}

/// The answer to a command: BIND's result code and the text rndc prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: Code,
    pub text: String,
}

impl Reply {
    pub fn ok(text: impl Into<String>) -> Self {
        Self {
            code: Code::Success,
            text: text.into(),
        }
    }

    pub fn err(code: Code, text: impl Into<String>) -> Self {
        Self {
            code,
            text: text.into(),
        }
    }
}

/// BIND's result codes, with the numbers and texts `rndc -r` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Success,
    /// `stop`: answered as success, then named exits.
    ShuttingDown,
    NotFound,
    UnexpectedEnd,
    Failure,
    NotImplemented,
    Syntax,
    UnknownCommand,
    NotDynamic,
    /// A zone named without its view is in several.
    Multiple,
}

impl Code {
    pub fn number(self) -> u32 {
        match self {
            Self::Success | Self::ShuttingDown => 0,
            Self::NotFound => 23,
            Self::UnexpectedEnd => 24,
            Self::Failure => 25,
            Self::NotImplemented => 27,
            Self::Syntax => 89,
            Self::UnknownCommand => 172,
            Self::NotDynamic => 181,
            Self::Multiple => 62,
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            Self::Success | Self::ShuttingDown => "success",
            Self::NotFound => "not found",
            Self::UnexpectedEnd => "unexpected end of input",
            Self::Failure => "failure",
            Self::NotImplemented => "not implemented",
            Self::Syntax => "syntax error",
            Self::UnknownCommand => "unknown command",
            Self::NotDynamic => "not dynamic",
            Self::Multiple => "multiple",
        }
    }
}

/// Who may use one channel, and with which keys.
struct Access {
    allow: Acl,
    keys: Vec<Key>,
    read_only: bool,
    local: Local,
}

struct Listener {
    address: SocketAddr,
    access: Arc<ArcSwap<Access>>,
    /// Bound but not yet served (before the runtime runs).
    socket: Option<std::net::TcpListener>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The control channels of one named.
pub struct Controls {
    listeners: Vec<Listener>,
    events: Option<mpsc::Sender<Event>>,
    seen: Arc<Mutex<Seen>>,
}

/// BIND's way of writing a socket address in its logs: `127.0.0.1#953`.
pub fn sock_text(sa: SocketAddr) -> String {
    format!("{}#{}", sa.ip(), sa.port())
}

impl Controls {
    /// Binds the channels `conf` asks for (before privileges are dropped,
    /// as port 953 needs). A channel that cannot be bound is logged and
    /// left out, as BIND does.
    pub fn bind(conf: &NamedConf) -> Self {
        let mut c = Self {
            listeners: Vec::new(),
            events: None,
            seen: Arc::default(),
        };
        c.configure(conf);
        c
    }

    /// Starts serving (inside the runtime); commands go to `events`.
    pub fn start(&mut self, events: mpsc::Sender<Event>) -> Result<(), String> {
        self.events = Some(events);
        for l in &mut self.listeners {
            if let Some(socket) = l.socket.take() {
                l.task = Some(spawn(socket, l, self.events.clone(), self.seen.clone())?);
            }
        }
        Ok(())
    }

    /// Follows a reloaded named.conf: channels that stay keep their socket
    /// with the new access rules, new ones are opened, gone ones closed.
    pub fn configure(&mut self, conf: &NamedConf) {
        let wanted = match &conf.controls {
            Some(list) => list.clone(),
            None => Control::defaults(),
        };
        let mut keep = Vec::new();
        for control in &wanted {
            let access = Arc::new(access(conf, control));
            if let Some(pos) = self
                .listeners
                .iter()
                .position(|l| l.address == control.address)
            {
                let l = self.listeners.swap_remove(pos);
                l.access.store(access);
                keep.push(l);
                continue;
            }
            let text = sock_text(control.address);
            match crate::listen::tcp_socket(control.address, 16) {
                Ok(socket) => {
                    info!("command channel listening on {text}");
                    let mut l = Listener {
                        address: control.address,
                        access: Arc::new(ArcSwap::new(access)),
                        socket: Some(socket),
                        task: None,
                    };
                    if self.events.is_some() {
                        if let Some(socket) = l.socket.take() {
                            match spawn(socket, &l, self.events.clone(), self.seen.clone()) {
                                Ok(t) => l.task = Some(t),
                                Err(e) => {
                                    warn!("couldn't add command channel {text}: {e}");
                                    continue;
                                }
                            }
                        }
                    }
                    keep.push(l);
                }
                Err(e) => {
                    let reason = match e.kind() {
                        std::io::ErrorKind::AddrInUse => "address in use".to_owned(),
                        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
                        _ => e.to_string(),
                    };
                    if control.place.is_empty() {
                        info!("couldn't add command channel {text}: {reason}");
                    } else {
                        warn!(
                            "{}: couldn't add command channel {text}: {reason}",
                            control.place
                        );
                    }
                }
            }
        }
        for gone in self.listeners.drain(..) {
            info!("stopping command channel on {}", sock_text(gone.address));
            if let Some(t) = gone.task {
                t.abort();
            }
        }
        self.listeners = keep;
    }
}

/// The keys a channel takes: those its `keys` clause names, or rndc.key's.
fn access(conf: &NamedConf, control: &Control) -> Access {
    let text = sock_text(control.address);
    let keys = match &control.keys {
        Some(names) => names
            .iter()
            .filter_map(|n| {
                let found = conf.keys.iter().find(|k| k.name.eq_ignore_ascii_case(n));
                if found.is_none() {
                    warn!(
                        "{}: couldn't find key '{n}' for use with command channel {text}",
                        control.place
                    );
                }
                found.cloned()
            })
            .collect(),
        None => {
            info!(
                "configuring command channel from '{}'",
                controls::RNDC_KEY_FILE
            );
            match controls::load_key_file(std::path::Path::new(controls::RNDC_KEY_FILE)) {
                Ok(keys) => keys,
                Err(e) => {
                    if !control.place.is_empty() {
                        warn!(
                            "{}: couldn't install keys for command channel {text}: {e}",
                            control.place
                        );
                    }
                    Vec::new()
                }
            }
        }
    };
    Access {
        allow: control.allow.clone(),
        keys,
        read_only: control.read_only,
        local: Local::discover(),
    }
}

fn spawn(
    socket: std::net::TcpListener,
    l: &Listener,
    events: Option<mpsc::Sender<Event>>,
    seen: Arc<Mutex<Seen>>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let listener = tokio::net::TcpListener::from_std(socket).map_err(|e| e.to_string())?;
    let access = l.access.clone();
    let events = events.ok_or("no command handler")?;
    Ok(tokio::spawn(async move {
        // The channel's connections live in this task: when the channel
        // is removed (reconfig) and the task aborted, they close with it.
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                Some(_) = connections.join_next() => continue,
            };
            let Ok((stream, peer)) = accepted else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let now = access.load();
            if !now.allow.allows(peer.ip(), &now.local) {
                warn!("rejected command channel message from {}", sock_text(peer));
                continue;
            }
            let connection = Connection::new(access.clone(), events.clone(), seen.clone(), peer);
            connections.spawn(connection.serve(stream));
        }
    }))
}

/// Commands already taken, by `_frm;_to;_ser;_tim`, to refuse replays.
#[derive(Default)]
struct Seen(HashMap<String, u32>);

impl Seen {
    /// Remembers `key`; false if it was seen within the last 15 minutes.
    fn first(&mut self, key: String, now: u32) -> bool {
        self.0.retain(|_, t| now.saturating_sub(*t) < DUP_LIFETIME);
        if self.0.contains_key(&key) {
            return false;
        }
        self.0.insert(key, now);
        true
    }
}

struct Connection {
    /// The channel's rules as they are now: a reconfig changes the keys
    /// and the allow list for connections already open too.
    access: Arc<ArcSwap<Access>>,
    events: mpsc::Sender<Event>,
    seen: Arc<Mutex<Seen>>,
    peer: SocketAddr,
    nonce: u32,
}

impl Connection {
    fn new(
        access: Arc<ArcSwap<Access>>,
        events: mpsc::Sender<Event>,
        seen: Arc<Mutex<Seen>>,
        peer: SocketAddr,
    ) -> Self {
        Self {
            access,
            events,
            seen,
            peer,
            nonce: 0,
        }
    }

    fn invalid(&self, why: impl std::fmt::Display) {
        warn!("invalid command from {}: {why}", sock_text(self.peer));
    }

    async fn serve(mut self, mut stream: tokio::net::TcpStream) {
        loop {
            let mut len = [0u8; 4];
            match tokio::time::timeout(IDLE, stream.read_exact(&mut len)).await {
                Ok(Ok(_)) => {}
                _ => return,
            }
            let len = u32::from_be_bytes(len) as usize;
            if len > wire::MAX_MESSAGE {
                self.invalid("out of range");
                return;
            }
            let mut body = vec![0; len];
            match tokio::time::timeout(IDLE, stream.read_exact(&mut body)).await {
                Ok(Ok(_)) => {}
                _ => {
                    self.invalid("unexpected end of input");
                    return;
                }
            }
            let access = self.access.load_full();
            if !access.allow.allows(self.peer.ip(), &access.local) {
                warn!(
                    "rejected command channel message from {}",
                    sock_text(self.peer)
                );
                return;
            }
            let Some((request, key)) = access
                .keys
                .iter()
                .find_map(|k| wire::decode(&body, k).ok().map(|t| (t, k.clone())))
            else {
                self.invalid("bad auth");
                return;
            };
            let Some(answer) = self.answer(&request).await else {
                return;
            };
            let (reply, stop) = answer;
            let response = response(&request, self.nonce, &reply);
            if stream
                .write_all(&wire::encode(&response, &key))
                .await
                .is_err()
            {
                return;
            }
            if stop {
                let _ = stream.shutdown().await;
                let _ = self.events.send(Event::Stop).await;
                return;
            }
        }
    }

    /// Checks a verified request and carries it out; `None` closes the
    /// connection (what BIND logs as an invalid command).
    async fn answer(&mut self, request: &Table) -> Option<(Reply, bool)> {
        let Some(ctrl) = request.table("_ctrl") else {
            self.invalid("failure");
            return None;
        };
        if ctrl.get("_rpl").is_some() {
            self.invalid("failure");
            return None;
        }
        let now = crate::unix_now32();
        let Some(sent) = ctrl.number("_tim") else {
            self.invalid("failure");
            return None;
        };
        if sent.saturating_add(CLOCK_SKEW) < now || sent.saturating_sub(CLOCK_SKEW) > now {
            self.invalid("clock skew");
            return None;
        }
        if ctrl.number("_exp").is_some_and(|exp| now > exp) {
            self.invalid("expired");
            return None;
        }
        let id = ["_frm", "_to", "_ser", "_tim"]
            .map(|k| ctrl.text(k).unwrap_or_default())
            .join(";");
        if !self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .first(id, now)
        {
            self.invalid("duplicate");
            return None;
        }
        if self.nonce != 0 && ctrl.number("_nonce") != Some(self.nonce) {
            self.invalid("bad auth");
            return None;
        }
        if self.nonce == 0 {
            while self.nonce == 0 {
                let mut b = [0u8; 4];
                if getrandom::fill(&mut b).is_err() {
                    return None;
                }
                self.nonce = u32::from_ne_bytes(b);
            }
            return Some((Reply::ok(""), false));
        }
        let line = request
            .table("_data")
            .and_then(|d| d.text("type"))
            .unwrap_or_default();
        let (tx, rx) = oneshot::channel();
        let sent = self.events.send(Event::Command {
            line,
            read_only: self.access.load().read_only,
            reply: tx,
        });
        if sent.await.is_err() {
            return None;
        }
        let reply = rx.await.ok()?;
        let stop = reply.code == Code::ShuttingDown;
        Some((reply, stop))
    }
}

/// The signed answer to `request`: its serial and type, our nonce, the result.
fn response(request: &Table, nonce: u32, reply: &Reply) -> Table {
    let empty = Table::default();
    let rctrl = request.table("_ctrl").unwrap_or(&empty);
    let now = crate::unix_now32();
    let mut ctrl = Table::default();
    ctrl.set("_ser", rctrl.text("_ser").unwrap_or_default());
    ctrl.set("_tim", now.to_string());
    ctrl.set("_exp", now.saturating_add(60).to_string());
    if let Some(to) = rctrl.text("_to") {
        ctrl.set("_frm", to);
    }
    if let Some(from) = rctrl.text("_frm") {
        ctrl.set("_to", from);
    }
    ctrl.set("_rpl", "1");
    ctrl.set("_nonce", nonce.to_string());
    let mut data = Table::default();
    data.set(
        "type",
        request
            .table("_data")
            .and_then(|d| d.text("type"))
            .unwrap_or_default(),
    );
    data.set("result", reply.code.number().to_string());
    if reply.code.number() != 0 {
        data.set("err", reply.code.text());
    }
    if !reply.text.is_empty() {
        data.set("text", reply.text.as_str());
    }
    Table(vec![
        ("_ctrl".into(), Value::Table(ctrl)),
        ("_data".into(), Value::Table(data)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_are_refused_for_fifteen_minutes() {
        let mut s = Seen::default();
        assert!(s.first("a;b;1;100".into(), 100));
        assert!(!s.first("a;b;1;100".into(), 500));
        assert!(s.first("a;b;2;100".into(), 500));
        assert!(s.first("a;b;1;100".into(), 100 + DUP_LIFETIME));
    }

    #[test]
    fn a_response_carries_what_rndc_reads() {
        let mut ctrl = Table::default();
        ctrl.set("_ser", "42");
        ctrl.set("_tim", "1");
        let mut data = Table::default();
        data.set("type", "reload nosuch.com");
        let request = Table(vec![
            ("_ctrl".into(), Value::Table(ctrl)),
            ("_data".into(), Value::Table(data)),
        ]);
        let r = response(
            &request,
            77,
            &Reply::err(Code::NotFound, "no matching zone 'nosuch.com' in any view"),
        );
        let c = r.table("_ctrl").unwrap();
        assert_eq!(c.text("_ser").as_deref(), Some("42"));
        assert_eq!(c.text("_rpl").as_deref(), Some("1"));
        assert_eq!(c.number("_nonce"), Some(77));
        let d = r.table("_data").unwrap();
        assert_eq!(d.text("result").as_deref(), Some("23"));
        assert_eq!(d.text("err").as_deref(), Some("not found"));
        assert_eq!(
            d.text("text").as_deref(),
            Some("no matching zone 'nosuch.com' in any view")
        );
        let ok = response(&request, 1, &Reply::err(Code::ShuttingDown, ""));
        let d = ok.table("_data").unwrap();
        assert_eq!(d.text("result").as_deref(), Some("0"));
        assert!(d.get("err").is_none() && d.get("text").is_none());
    }
}
