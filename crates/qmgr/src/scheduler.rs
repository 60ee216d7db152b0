//! The queue manager's state machine.
//!
//! Each active message keeps its recipients' states. Pending recipients wait
//! as delivery batches in one FIFO per destination (transport + destination),
//! so handing out work after an event only looks at the destination that
//! has room: the cost per message does not grow with the queue. When an agent answers: delivered recipients are done, bounced ones
//! get a durable `bounce/ID` record and are marked done in the queue file,
//! deferred ones get a `defer/ID` record. When nothing is in flight any more
//! the message is removed, returned to its sender by bounce, or moved to
//! `deferred/` with its retry time as mtime (expiring to a bounce after
//! `maximal_queue_lifetime`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pfx_config::Config;
use pfx_ipc::proto::{
    self, conversation, trigger, BounceReply, BounceRequest, DeliveryRecipient, DeliveryReply,
    DeliveryRequest, DeliveryStatus,
};
use pfx_maillog::delivery::{self, Outcome, Times};
use pfx_queue::file::{self, QueueFile, Readiness};
use pfx_queue::statuslog::{self, Log, Status};
use pfx_queue::{Queue, QueueName};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::route::{Route, Router};

/// How long an agent may take over one request before qmgr gives up on it.
const AGENT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Requests in flight per transport at most (Postfix: the transport's maxproc).
const TRANSPORT_LIMIT: usize = 100;

/// Recipients of one message waiting to go out together: (queue ID, route, recipient indexes).
type Batch = (String, Route, Vec<usize>);

pub(crate) enum Event {
    Trigger(u8),
    /// cleanup committed this message to incoming/.
    New(String),
    Delivered {
        id: String,
        batch: Vec<usize>,
        route: Route,
        statuses: Vec<DeliveryStatus>,
        by_agent: bool,
    },
    BounceDone {
        id: String,
        result: Result<Option<String>, String>,
    },
}

impl Event {
    /// The requests at the start of `bytes`, and how many bytes they took:
    /// single bytes, and `N` with a queue ID and newline. An `N` still
    /// waiting for its newline is left for the next read unless the client
    /// has `closed`; one that does not parse scans incoming/.
    pub(crate) fn from_trigger(bytes: &[u8], closed: bool) -> (Vec<Self>, usize) {
        let mut out = Vec::new();
        let mut used = 0;
        while let Some(&b) = bytes.get(used) {
            if b != trigger::NEW {
                out.push(Self::Trigger(b));
                used += 1;
                continue;
            }
            let rest = &bytes[used + 1..];
            let Some(end) = rest.iter().position(|&c| c == b'\n') else {
                if closed || rest.len() > MAX_TRIGGER_ID {
                    out.push(Self::Trigger(trigger::INCOMING));
                    used = bytes.len();
                }
                break;
            };
            match std::str::from_utf8(&rest[..end]) {
                Ok(id) if pfx_queue::is_queue_id(id) => out.push(Self::New(id.to_owned())),
                _ => out.push(Self::Trigger(trigger::INCOMING)),
            }
            used += end + 2;
        }
        (out, used)
    }
}

/// Longer than any queue ID: an `N` request this long without its newline
/// is not one.
const MAX_TRIGGER_ID: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rcpt {
    Pending,
    InFlight,
    Done,
    Deferred,
}

struct Msg {
    qf: QueueFile,
    activated: SystemTime,
    state: Vec<Rcpt>,
    routes: Vec<Route>,
    in_flight: usize,
    has_bounces: bool,
    bouncing: bool,
}

pub(crate) struct Scheduler {
    cfg_rx: watch::Receiver<Arc<Config>>,
    cfg: Arc<Config>,
    router: Router,
    queue: Queue,
    msgs: HashMap<String, Msg>,
    /// Batches of recipient indexes waiting, per (transport, destination).
    waiting: HashMap<(String, String), VecDeque<Batch>>,
    busy_dest: HashMap<(String, String), usize>,
    busy_transport: HashMap<String, usize>,
    /// Idle connections to delivery agents, per transport socket, for reuse.
    idle: Arc<IdleAgents>,
    tx: mpsc::UnboundedSender<Event>,
    rx: mpsc::UnboundedReceiver<Event>,
}

fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Scheduler {
    pub(crate) fn new(
        cfg_rx: watch::Receiver<Arc<Config>>,
        tx: mpsc::UnboundedSender<Event>,
        rx: mpsc::UnboundedReceiver<Event>,
    ) -> Self {
        let cfg = cfg_rx.borrow().clone();
        let router = Router::new(&cfg).unwrap_or_else(|e| pfx_maillog::fatal(e));
        let queue = Queue::new(
            cfg.get("queue_directory")
                .unwrap_or_else(|e| pfx_maillog::fatal(e)),
        );
        Self {
            cfg_rx,
            cfg,
            router,
            queue,
            msgs: HashMap::new(),
            waiting: HashMap::new(),
            busy_dest: HashMap::new(),
            busy_transport: HashMap::new(),
            idle: Arc::default(),
            tx,
            rx,
        }
    }

    fn time(&self, name: &str, default: u64) -> Duration {
        self.cfg.time(name).unwrap_or(Duration::from_secs(default))
    }

    pub(crate) async fn run(mut self) {
        // A crash may have left messages in active/: take them back first.
        for id in self.queue.list(QueueName::Active).unwrap_or_default() {
            self.load(&id, true);
        }
        self.scan_incoming();
        self.scan_deferred(false);
        self.dispatch();
        let mut tick = tokio::time::interval(
            self.time("queue_run_delay", 300)
                .max(Duration::from_secs(1)),
        );
        tick.tick().await;
        loop {
            tokio::select! {
                ev = self.rx.recv() => {
                    let Some(ev) = ev else { return };
                    self.handle(ev);
                    // Drain whatever else is waiting before scheduling again.
                    while let Ok(ev) = self.rx.try_recv() {
                        self.handle(ev);
                    }
                }
                _ = tick.tick() => {
                    self.scan_incoming();
                    self.scan_deferred(false);
                }
                Ok(()) = self.cfg_rx.changed() => {
                    let cfg = self.cfg_rx.borrow_and_update().clone();
                    match Router::new(&cfg) {
                        Ok(r) => { self.router = r; self.cfg = cfg; }
                        Err(e) => warn!("reload: {e}"),
                    }
                }
            }
            self.dispatch();
        }
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Trigger(trigger::INCOMING) => self.scan_incoming(),
            Event::New(id) => {
                let stale_after = self.time("ipc_timeout", 3600);
                self.take_incoming(&id, stale_after);
            }
            Event::Trigger(trigger::FLUSH) => {
                self.scan_deferred(true);
                self.scan_incoming();
            }
            Event::Trigger(trigger::DEFERRED) => self.scan_deferred(false),
            Event::Trigger(_) => {
                self.scan_incoming();
                self.scan_deferred(false);
            }
            Event::Delivered {
                id,
                batch,
                route,
                statuses,
                by_agent,
            } => self.delivered(&id, &batch, &route, statuses, by_agent),
            Event::BounceDone { id, result } => self.bounce_done(&id, result),
        }
    }

    fn active_limit(&self) -> usize {
        usize::try_from(self.cfg.int("qmgr_message_active_limit").unwrap_or(20000)).unwrap_or(20000)
    }

    fn scan_incoming(&mut self) {
        let ids = match self.queue.list(QueueName::Incoming) {
            Ok(ids) => ids,
            Err(e) => return warn!("scan incoming: {e}"),
        };
        let stale_after = self.time("ipc_timeout", 3600);
        for id in ids {
            if self.msgs.len() >= self.active_limit() {
                break;
            }
            self.take_incoming(&id, stale_after);
        }
    }

    /// Moves one complete message from incoming/ to active/ and loads it;
    /// removes a file left incomplete by a crash once it is `stale_after` old.
    fn take_incoming(&mut self, id: &str, stale_after: Duration) {
        let path = self.queue.path(QueueName::Incoming, id);
        let Ok(meta) = std::fs::metadata(&path) else {
            return;
        };
        match QueueFile::readiness(&meta) {
            Readiness::Complete => {}
            Readiness::Reserved => return,
            Readiness::Incomplete => {
                // cleanup is still writing it, or died doing so (it was never acknowledged).
                let age = meta.modified().ok().and_then(|t| t.elapsed().ok());
                if age.is_some_and(|a| a > stale_after) {
                    warn!(
                        "{id}: removing incomplete queue file older than {}s",
                        stale_after.as_secs()
                    );
                    let _ = std::fs::remove_file(&path);
                }
                return;
            }
        }
        if let Err(e) = self
            .queue
            .move_to(id, QueueName::Incoming, QueueName::Active)
        {
            return warn!("{id}: move to active: {e}");
        }
        self.load(id, true);
    }

    fn scan_deferred(&mut self, ignore_time: bool) {
        let ids = match self.queue.list(QueueName::Deferred) {
            Ok(ids) => ids,
            Err(e) => return warn!("scan deferred: {e}"),
        };
        let now = SystemTime::now();
        for id in ids {
            if self.msgs.len() >= self.active_limit() {
                break;
            }
            let path = self.queue.path(QueueName::Deferred, &id);
            let due = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .map(|t| t <= now)
                .unwrap_or(false);
            if !(due || ignore_time) {
                continue;
            }
            if self
                .queue
                .move_to(&id, QueueName::Deferred, QueueName::Active)
                .is_ok()
            {
                self.load(&id, false);
            }
        }
    }

    /// Reads a message now in active/ and queues its pending recipients.
    /// A message new to the queue (from incoming/, or left in active/ by a
    /// crash) is first checked whole against its checksum; deferred mail
    /// was checked when it arrived.
    fn load(&mut self, id: &str, check: bool) {
        if self.msgs.contains_key(id) {
            return;
        }
        let path = self.queue.path(QueueName::Active, id);
        let opened = QueueFile::open(&path).and_then(|qf| {
            if check {
                qf.verify()?;
            }
            Ok(qf)
        });
        let mut qf = match opened {
            Ok(qf) => qf,
            Err(pfx_queue::Error::Corrupt(why)) => {
                warn!("saving corrupt file \"{id}\" from queue \"active\" to queue \"corrupt\": {why}");
                let _ = self
                    .queue
                    .move_to(id, QueueName::Active, QueueName::Corrupt);
                return;
            }
            Err(e) => return warn!("{id}: open queue file: {e}"),
        };
        qf.close();
        if let Some(what) = &qf.postfix_only {
            // Left by Postfix: delivering it without the filter or redirect
            // would skip what Postfix was told to do. Held, it waits for the
            // administrator (or Postfix, which carries it out).
            warn!("{id}: {what}: not implemented by postfix-rs; message placed on hold");
            let _ = self.queue.move_to(id, QueueName::Active, QueueName::Hold);
            return;
        }
        info!(
            "{id}: from=<{}>, size={}, nrcpt={} (queue active)",
            qf.sender,
            qf.content_len,
            qf.recipients.len()
        );
        let state = qf
            .recipients
            .iter()
            .map(|r| if r.done { Rcpt::Done } else { Rcpt::Pending })
            .collect();
        let routes = qf
            .recipients
            .iter()
            .map(|r| self.router.route(&r.address))
            .collect();
        let has_bounces = statuslog::path(self.queue.root(), Log::Bounce, id).exists();
        let msg = Msg {
            qf,
            activated: SystemTime::now(),
            state,
            routes,
            in_flight: 0,
            has_bounces,
            bouncing: false,
        };
        self.msgs.insert(id.to_owned(), msg);
        self.enqueue(id);
        self.maybe_finish(id);
    }

    /// Puts a message's pending recipients in their destinations' queues.
    fn enqueue(&mut self, id: &str) {
        let Some(msg) = self.msgs.get(id) else { return };
        let mut groups: Vec<(Route, Vec<usize>)> = Vec::new();
        for i in (0..msg.state.len()).filter(|&i| msg.state[i] == Rcpt::Pending) {
            let r = &msg.routes[i];
            match groups.iter_mut().find(|(g, _)| g == r) {
                Some((_, v)) => v.push(i),
                None => groups.push((r.clone(), vec![i])),
            }
        }
        for (route, idxs) in groups {
            let (per_request, _) = self.router.limits(&route.transport, &self.cfg);
            let queue = self
                .waiting
                .entry((route.transport.clone(), route.destination.clone()))
                .or_default();
            for batch in idxs.chunks(per_request) {
                queue.push_back((id.to_owned(), route.clone(), batch.to_vec()));
            }
        }
    }

    /// Hands out as much work as the concurrency limits allow, destination
    /// by destination; a destination at its limit costs one look.
    fn dispatch(&mut self) {
        let keys: Vec<(String, String)> = self.waiting.keys().cloned().collect();
        for key in keys {
            let (_, per_dest) = self.router.limits(&key.0, &self.cfg);
            loop {
                let dest_busy = self.busy_dest.get(&key).copied().unwrap_or(0);
                let transport_busy = self.busy_transport.get(&key.0).copied().unwrap_or(0);
                if dest_busy >= per_dest || transport_busy >= TRANSPORT_LIMIT {
                    break;
                }
                let Some((id, route, batch)) =
                    self.waiting.get_mut(&key).and_then(VecDeque::pop_front)
                else {
                    self.waiting.remove(&key);
                    break;
                };
                // The message may have gone (deleted, deferred) since it was queued.
                let still_pending = self
                    .msgs
                    .get(&id)
                    .is_some_and(|m| batch.iter().all(|&i| m.state[i] == Rcpt::Pending));
                if !still_pending {
                    continue;
                }
                // postsuper may have deleted it or put it on hold: drop it, never deliver it.
                if !self.still_active(&id) {
                    continue;
                }
                *self.busy_dest.entry(key.clone()).or_default() += 1;
                *self.busy_transport.entry(key.0.clone()).or_default() += 1;
                self.start_delivery(&id, route, batch);
            }
        }
    }

    fn start_delivery(&mut self, id: &str, route: Route, batch: Vec<usize>) {
        let Some(msg) = self.msgs.get_mut(id) else {
            return;
        };
        for &i in &batch {
            msg.state[i] = Rcpt::InFlight;
        }
        msg.in_flight += 1;
        let req = DeliveryRequest {
            queue: QueueName::Active.as_str().into(),
            queue_id: id.to_owned(),
            sender: msg.qf.sender.clone(),
            nexthop: route.nexthop.clone(),
            recipients: batch
                .iter()
                .map(|&i| DeliveryRecipient {
                    address: msg.qf.recipients[i].address.clone(),
                    original: msg.qf.recipients[i].original.clone(),
                })
                .collect(),
            arrival_us: micros(msg.qf.arrival),
            activated_us: micros(msg.activated),
        };
        // error:text bounces, retry:text defers, discard:text drops the
        // mail (logged here, as sent): no agent involved. The text may start
        // with a status code, as with Postfix's error(8) and discard(8).
        if crate::route::is_builtin(&route.transport) {
            let n = req.recipients.len();
            let discard = route.transport == "discard";
            let status = builtin_status(&route.transport, &route.nexthop);
            if discard {
                for r in &req.recipients {
                    // No text: the recipient's domain, as Postfix says.
                    let domain = || pfx_address::split(&r.address).1.to_owned();
                    let (dsn, text) = pfx_smtp_proto::dsn_split("2.0.0", &route.nexthop);
                    let text = if text.is_empty() {
                        domain()
                    } else {
                        text.to_owned()
                    };
                    let o = Outcome {
                        status: "sent",
                        dsn: &dsn,
                        relay: "none",
                        text: &text,
                    };
                    let to = (r.address.as_str(), r.original.as_deref());
                    log_outcome(id, (msg.qf.arrival, msg.activated), to, &o);
                }
            }
            let _ = self.tx.send(Event::Delivered {
                id: id.to_owned(),
                batch,
                route,
                statuses: vec![status; n],
                by_agent: discard,
            });
            return;
        }
        let socket = proto::transport_socket(self.queue.root(), &route.transport);
        let tx = self.tx.clone();
        let id = id.to_owned();
        let idle = self.idle.clone();
        tokio::spawn(async move {
            let n = req.recipients.len();
            let (statuses, by_agent) = match ask_agent(&idle, &socket, &req).await {
                Ok(r) if r.statuses.len() == n => (r.statuses, true),
                Ok(_) => (vec![unavailable("delivery agent protocol error"); n], false),
                Err(pfx_ipc::Error::Io(e))
                    if e.kind() == std::io::ErrorKind::NotFound
                        || e.kind() == std::io::ErrorKind::ConnectionRefused =>
                {
                    warn!("{id}: {e}");
                    (vec![unavailable("mail transport unavailable"); n], false)
                }
                Err(e) => (
                    vec![unavailable(&format!("delivery agent failed: {e}")); n],
                    false,
                ),
            };
            let _ = tx.send(Event::Delivered {
                id,
                batch,
                route,
                statuses,
                by_agent,
            });
        });
    }

    fn delivered(
        &mut self,
        id: &str,
        batch: &[usize],
        route: &Route,
        statuses: Vec<DeliveryStatus>,
        by_agent: bool,
    ) {
        let key = (route.transport.clone(), route.destination.clone());
        if let Some(n) = self.busy_dest.get_mut(&key) {
            *n = n.saturating_sub(1);
        }
        if let Some(n) = self.busy_transport.get_mut(&route.transport) {
            *n = n.saturating_sub(1);
        }
        let queue_dir = self.queue.root().to_owned();
        if !self.still_active(id) {
            return;
        }
        let Some(msg) = self.msgs.get_mut(id) else {
            return;
        };
        msg.in_flight -= 1;
        let mut done_offsets = Vec::new();
        let mut bounces = Vec::new();
        let mut bounced = Vec::new();
        let mut defers = Vec::new();
        for (&i, status) in batch.iter().zip(statuses) {
            let rcpt = &msg.qf.recipients[i];
            let record = |dsn: &str, relay: &str, reason: &str| Status {
                recipient: rcpt.address.clone(),
                original: rcpt.original.clone(),
                dsn: dsn.to_owned(),
                relay: relay.to_owned(),
                reason: reason.to_owned(),
            };
            let (log_status, dsn, relay, reason) = match &status {
                DeliveryStatus::Sent => {
                    msg.state[i] = Rcpt::Done;
                    done_offsets.push(rcpt.offset);
                    continue;
                }
                DeliveryStatus::Bounced {
                    dsn,
                    relay,
                    reason,
                    final_recipient,
                } => {
                    msg.state[i] = Rcpt::Done;
                    done_offsets.push(rcpt.offset);
                    bounced.push((i, rcpt.offset));
                    let mut rec = record(dsn, relay, reason);
                    if let Some(f) = final_recipient.as_ref().filter(|f| **f != rcpt.address) {
                        rec.original = Some(
                            rcpt.original
                                .clone()
                                .unwrap_or_else(|| rcpt.address.clone()),
                        );
                        rec.recipient = f.clone();
                    }
                    bounces.push(rec);
                    ("bounced", dsn, relay, reason)
                }
                DeliveryStatus::Deferred { dsn, relay, reason } => {
                    msg.state[i] = Rcpt::Deferred;
                    defers.push(record(dsn, relay, reason));
                    ("deferred", dsn, relay, reason)
                }
            };
            if !by_agent {
                let o = Outcome {
                    status: log_status,
                    dsn,
                    relay,
                    text: reason,
                };
                let to = (rcpt.address.as_str(), rcpt.original.as_deref());
                log_outcome(id, (msg.qf.arrival, msg.activated), to, &o);
            }
        }
        // The bounce record must be on disk before the recipient is marked done.
        if !bounces.is_empty() {
            match statuslog::append(&queue_dir, Log::Bounce, id, &bounces, true) {
                Ok(()) => msg.has_bounces = true,
                Err(e) => {
                    // Without the record no notice can be sent: the
                    // recipients stay pending and are tried again.
                    warn!("{id}: write bounce log: {e}");
                    for (i, offset) in bounced {
                        msg.state[i] = Rcpt::Deferred;
                        done_offsets.retain(|o| *o != offset);
                    }
                }
            }
        }
        if !defers.is_empty() {
            if let Err(e) = statuslog::append(&queue_dir, Log::Defer, id, &defers, false) {
                warn!("{id}: write defer log: {e}");
            }
        }
        let finished_clean =
            msg.in_flight == 0 && !msg.has_bounces && msg.state.iter().all(|s| *s == Rcpt::Done);
        // When every recipient is delivered the file is about to go: marking is wasted work.
        if !done_offsets.is_empty() && !finished_clean {
            let path = msg.qf.path.clone();
            if let Err(e) = file::mark_done(&path, &done_offsets) {
                warn!("{id}: mark recipients done: {e}");
            }
        }
        self.maybe_finish(id);
    }

    /// Whether a message's file is still in `active/`. When postsuper has
    /// deleted it, held it or requeued it, qmgr forgets the message: what is
    /// in flight finishes, nothing more is handed out or recorded for it.
    fn still_active(&mut self, id: &str) -> bool {
        let Some(msg) = self.msgs.get(id) else {
            return false;
        };
        if msg.qf.path.exists() {
            return true;
        }
        self.msgs.remove(id);
        false
    }

    /// Once nothing is in flight: expire, bounce, defer or remove the
    /// message. Failed recipients are reported to the sender at once, even
    /// when others still wait in the deferred queue (as Postfix does).
    fn maybe_finish(&mut self, id: &str) {
        let Some(msg) = self.msgs.get_mut(id) else {
            return;
        };
        if msg.in_flight > 0
            || msg.bouncing
            || msg
                .state
                .iter()
                .any(|s| matches!(s, Rcpt::Pending | Rcpt::InFlight))
        {
            return;
        }
        let queue_dir = self.queue.root().to_owned();
        let deferred: Vec<usize> = (0..msg.state.len())
            .filter(|&i| msg.state[i] == Rcpt::Deferred)
            .collect();
        let age = msg.qf.arrival.elapsed().unwrap_or_default();
        let lifetime = if msg.qf.sender.is_empty() {
            "bounce_queue_lifetime"
        } else {
            "maximal_queue_lifetime"
        };
        let lifetime = self
            .cfg
            .time(lifetime)
            .unwrap_or(Duration::from_secs(5 * 86400));
        if !deferred.is_empty() && age >= lifetime {
            // Expired: the deferred recipients are returned with their last reason.
            let reasons = statuslog::read(&queue_dir, Log::Defer, id).unwrap_or_default();
            let records: Vec<Status> = deferred
                .iter()
                .map(|&i| {
                    let r = &msg.qf.recipients[i];
                    let last = reasons.iter().find(|s| s.recipient == r.address);
                    Status {
                        recipient: r.address.clone(),
                        original: r.original.clone(),
                        dsn: last.map_or("4.4.7".into(), |s| s.dsn.clone()),
                        relay: last.map_or("none".into(), |s| s.relay.clone()),
                        reason: last.map_or("message expired".into(), |s| s.reason.clone()),
                    }
                })
                .collect();
            if let Err(e) = statuslog::append(&queue_dir, Log::Bounce, id, &records, true) {
                return warn!("{id}: write bounce log: {e}");
            }
            let offsets: Vec<u64> = deferred
                .iter()
                .map(|&i| msg.qf.recipients[i].offset)
                .collect();
            let path = msg.qf.path.clone();
            if let Err(e) = file::mark_done(&path, &offsets) {
                warn!("{id}: mark recipients done: {e}");
            }
            for &i in &deferred {
                msg.state[i] = Rcpt::Done;
            }
            msg.has_bounces = true;
            info!(
                "{id}: from=<{}>, status=expired, returned to sender",
                msg.qf.sender
            );
        }
        if msg.has_bounces {
            msg.bouncing = true;
            let tx = self.tx.clone();
            let id = id.to_owned();
            let socket = queue_dir.join(proto::endpoint::BOUNCE);
            tokio::spawn(async move {
                let result = async {
                    let mut ch = pfx_ipc::client::connect(&socket, conversation::BOUNCE)
                        .await
                        .map_err(|e| e.to_string())?;
                    ch.send(&BounceRequest {
                        queue: QueueName::Active.as_str().into(),
                        queue_id: id.clone(),
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                    match ch
                        .expect::<BounceReply>()
                        .await
                        .map_err(|e| e.to_string())?
                    {
                        BounceReply::Sent { notice_id } => Ok(notice_id),
                        BounceReply::Failed { reason } => Err(reason),
                    }
                }
                .await;
                let _ = tx.send(Event::BounceDone { id, result });
            });
            return;
        }
        if msg.state.contains(&Rcpt::Deferred) {
            let min = self
                .cfg
                .time("minimal_backoff_time")
                .unwrap_or(Duration::from_secs(300));
            let max = self
                .cfg
                .time("maximal_backoff_time")
                .unwrap_or(Duration::from_secs(4000))
                .max(min);
            let delay = age.clamp(min, max);
            match self
                .queue
                .defer_until(id, QueueName::Active, SystemTime::now() + delay)
            {
                Ok(()) => {}
                // postsuper took it meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => warn!("{id}: move to deferred: {e}"),
            }
            self.msgs.remove(id);
            return;
        }
        let Some(msg) = self.msgs.remove(id) else {
            return;
        };
        // Before the file is in the pool, where cleanup may take it.
        if let Err(e) = msg.qf.trim() {
            warn!("{id}: cut queue file to size: {e}");
        }
        match pfx_queue::recycle::give_back(&queue_dir, &msg.qf.path) {
            Ok(()) => {
                statuslog::remove(&queue_dir, Log::Defer, id);
                info!("{id}: removed");
            }
            Err(e) => warn!("{id}: remove queue file: {e}"),
        }
    }

    fn bounce_done(&mut self, id: &str, result: Result<Option<String>, String>) {
        let Some(msg) = self.msgs.get_mut(id) else {
            return;
        };
        msg.bouncing = false;
        match result {
            Ok(_) => {
                msg.has_bounces = false;
                self.maybe_finish(id);
            }
            Err(e) => {
                // Keep the bounce log and try again after the usual backoff.
                warn!("{id}: non-delivery notification failed: {e}");
                let min = self
                    .cfg
                    .time("minimal_backoff_time")
                    .unwrap_or(Duration::from_secs(300));
                if let Err(e) =
                    self.queue
                        .defer_until(id, QueueName::Active, SystemTime::now() + min)
                {
                    warn!("{id}: move to deferred: {e}");
                }
                self.msgs.remove(id);
            }
        }
    }
}

type AgentConn = pfx_ipc::Channel<tokio::net::UnixStream>;
type IdleAgents = std::sync::Mutex<HashMap<std::path::PathBuf, Vec<AgentConn>>>;

/// Sends a request to a delivery agent and waits for its answer, on an idle
/// connection when there is one. A reused connection found closed (the agent
/// restarted between requests) is replaced by a fresh one, once.
async fn ask_agent(
    idle: &IdleAgents,
    socket: &std::path::Path,
    req: &DeliveryRequest,
) -> Result<DeliveryReply, pfx_ipc::Error> {
    async fn attempt(
        mut ch: AgentConn,
        req: &DeliveryRequest,
    ) -> Result<(Option<DeliveryReply>, AgentConn), pfx_ipc::Error> {
        ch.send(req).await?;
        let reply = tokio::time::timeout(AGENT_TIMEOUT, ch.recv::<DeliveryReply>())
            .await
            .map_err(|_| pfx_ipc::Error::Io(std::io::ErrorKind::TimedOut.into()))??;
        Ok((reply, ch))
    }
    let fresh = || pfx_ipc::client::connect(socket, conversation::DELIVER);
    let pooled = idle
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_mut(socket)
        .and_then(Vec::pop);
    let result = match pooled {
        Some(ch) => match attempt(ch, req).await {
            Ok((Some(r), ch)) => Ok((Some(r), ch)),
            Ok((None, _)) | Err(_) => attempt(fresh().await?, req).await,
        },
        None => attempt(fresh().await?, req).await,
    };
    match result? {
        (Some(reply), ch) => {
            idle.lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(socket.to_owned())
                .or_default()
                .push(ch);
            Ok(reply)
        }
        (None, _) => Err(pfx_ipc::Error::Closed),
    }
}

/// The delivery log line of an outcome no delivery agent logged: qmgr's
/// own transports, agents that did not answer. `times`: arrival,
/// activation; `to`: the recipient and its original address.
fn log_outcome(
    id: &str,
    times: (SystemTime, SystemTime),
    to: (&str, Option<&str>),
    o: &Outcome<'_>,
) {
    let now = SystemTime::now();
    let t = Times {
        arrival: times.0,
        activated: times.1,
        agent_start: now,
        connected: now,
        done: now,
    };
    info!("{id}: {}", delivery::line(to.0, to.1, t, o));
}

/// What `error:TEXT` and `retry:TEXT` answer: TEXT's status code when it
/// has one of the right class (5 and 4), else 5.0.0 and 4.0.0; no text:
/// `Address is undeliverable`.
fn builtin_status(transport: &str, nexthop: &str) -> DeliveryStatus {
    if transport == "discard" {
        return DeliveryStatus::Sent;
    }
    let bounce = transport == "error";
    let (default, class, who) = if bounce {
        ("5.0.0", '5', "bounce_append")
    } else {
        ("4.0.0", '4', "defer_append")
    };
    let (mut dsn, text) = pfx_smtp_proto::dsn_split(default, nexthop);
    if !dsn.starts_with(class) {
        tracing::warn!("{who}: ignoring dsn code \"{dsn}\"");
        dsn = default.to_owned();
    }
    let reason = if text.is_empty() {
        "Address is undeliverable".to_owned()
    } else {
        text.to_owned()
    };
    let relay = "none".to_owned();
    if bounce {
        DeliveryStatus::Bounced {
            dsn,
            relay,
            reason,
            final_recipient: None,
        }
    } else {
        DeliveryStatus::Deferred { dsn, relay, reason }
    }
}

fn unavailable(reason: &str) -> DeliveryStatus {
    DeliveryStatus::Deferred {
        dsn: "4.3.0".into(),
        relay: "none".into(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Event::New(id) => format!("N{id}"),
                Event::Trigger(b) => char::from(*b).to_string(),
                _ => "?".into(),
            })
            .collect()
    }

    #[test]
    fn trigger_requests_in_a_stream() {
        // cleanup's connection: several requests in one read.
        let (ev, used) = Event::from_trigger(b"N3F1A2B4C5D\nIN3F1A2B4C5E\n", false);
        assert_eq!(ids(&ev), ["N3F1A2B4C5D", "I", "N3F1A2B4C5E"]);
        assert_eq!(used, 25);
        // A request the read cut short waits for the rest...
        let (ev, used) = Event::from_trigger(b"WN3F1A2", false);
        assert_eq!((ids(&ev), used), (vec!["W".to_owned()], 1));
        let (ev, used) = Event::from_trigger(b"N3F1A2B4C5D\n", false);
        assert_eq!((ids(&ev), used), (vec!["N3F1A2B4C5D".to_owned()], 12));
        // ...unless the client has gone, or it is no queue ID.
        let (ev, used) = Event::from_trigger(b"N3F1A2", true);
        assert_eq!((ids(&ev), used), (vec!["I".to_owned()], 6));
        let long = [b"N".as_slice(), &[b'A'; 80]].concat();
        let (ev, used) = Event::from_trigger(&long, false);
        assert_eq!((ids(&ev), used), (vec!["I".to_owned()], 81));
        let (ev, used) = Event::from_trigger(b"N../../etc\nF", false);
        assert_eq!((ids(&ev), used), (vec!["I".to_owned(), "F".to_owned()], 12));
    }
}
