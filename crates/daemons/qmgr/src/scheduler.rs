//! The queue manager's state machine.
//!
//! Each active message keeps its recipients' states. Pending recipients wait
//! as delivery batches per destination ([`Destinations`]). When an agent
//! answers: delivered recipients are done, bounced ones get a durable
//! `bounce/ID` record and are marked done in the queue file, deferred ones
//! get a `defer/ID` record. When nothing is in flight any more the message
//! is finished (see `finish.rs`).
//!
//! Files are reached through a [`Store`] and other daemons through
//! [`Agents`], so the decisions are tested without an instance.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use pfx_config::{BuildError, Config};
use pfx_ipc::proto::{trigger, DeliveryRecipient, DeliveryRequest, Notice};
use pfx_maillog::delivery::{Class, Outcome, Times};
use pfx_queue::file::notify;
use pfx_queue::statuslog::{Log, Status};
use pfx_queue::QueueName;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::agents::Agents;
use crate::plan::{Batch, Destinations, Key};
use crate::route::{self, Route};
use crate::scan::Scan;
use crate::settings::Settings;
use crate::store::{Envelope, Store};
use crate::trigger::Request;

pub(crate) enum Event {
    Trigger(Request),
    Delivered {
        id: String,
        batch: Vec<usize>,
        route: Arc<Route>,
        statuses: Vec<Outcome>,
        by_agent: bool,
    },
    BounceDone {
        id: String,
        kind: Notice,
        result: Result<Option<String>, String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rcpt {
    Pending,
    InFlight,
    Done,
    Deferred,
}

pub(crate) struct Msg {
    pub(crate) env: Envelope,
    pub(crate) activated: SystemTime,
    pub(crate) state: Vec<Rcpt>,
    /// Each recipient's route, shared with every other recipient and
    /// message that has the same ([`route::Shared`]).
    routes: Vec<Arc<Route>>,
    pub(crate) in_flight: usize,
    pub(crate) has_bounces: bool,
    /// Deliveries recorded for a success notice (`trace/ID`).
    pub(crate) has_trace: bool,
    /// Whether a defer log may exist, to be removed with the message.
    pub(crate) defer_log: bool,
    pub(crate) bouncing: bool,
}

/// Where a message was taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Named by cleanup's trigger, just committed: no bounce or defer log
    /// can be its own yet (qmgr alone writes those, for active mail), so
    /// none is looked for. A trace log cleanup may have written.
    New,
    /// Found by a scan of `incoming/` (new, or requeued by postsuper with
    /// its logs) or left in `active/` by a crash.
    Found,
    /// Due (or flushed) from `deferred/`.
    Deferred,
}

pub(crate) struct Scheduler<Q, A> {
    cfg_rx: watch::Receiver<Arc<Config>>,
    pub(crate) st: Settings,
    pub(crate) store: Q,
    pub(crate) agents: Arc<A>,
    /// Boxed: a table sized for `qmgr_message_active_limit` then holds
    /// pointers, not a message's worth of slack in each free slot.
    pub(crate) msgs: HashMap<String, Box<Msg>>,
    destinations: Destinations,
    /// The scans of incoming/ and deferred/, read on as room frees up
    /// under `qmgr_message_active_limit`, as Postfix's qmgr reads a queue
    /// scan a file at a time: without it a `postqueue -f` of a deep queue
    /// stopped after the first 20,000.
    backlog: Backlog,
    /// The last [`Scheduler::take_backlog`] stopped at its batch, not for
    /// want of room or files.
    feeding: bool,
    /// One copy of each route in use.
    routes: route::Shared,
    pub(crate) tx: mpsc::UnboundedSender<Event>,
    rx: mpsc::UnboundedReceiver<Event>,
}

/// The scans going on (see [`Scheduler::backlog`]).
struct Backlog {
    incoming: Scan,
    deferred: Scan,
}

/// Files read from the scans at a time before the scheduler looks at its
/// events again, so that a deep queue's first deliveries start while the
/// rest is still being read (Postfix's qmgr takes one per event).
const FEED_BATCH: usize = 100;

fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl<Q: Store, A: Agents> Scheduler<Q, A> {
    pub(crate) fn new(
        cfg_rx: watch::Receiver<Arc<Config>>,
        store: Q,
        agents: A,
    ) -> Result<Self, BuildError> {
        let st = Settings::new(cfg_rx.borrow().clone())?;
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(Self {
            cfg_rx,
            st,
            store,
            agents: Arc::new(agents),
            msgs: HashMap::new(),
            destinations: Destinations::default(),
            backlog: Backlog {
                incoming: Scan::new(QueueName::Incoming),
                deferred: Scan::new(QueueName::Deferred),
            },
            feeding: false,
            routes: route::Shared::default(),
            tx,
            rx,
        })
    }

    /// Where requests from the trigger socket go.
    pub(crate) fn events(&self) -> mpsc::UnboundedSender<Event> {
        self.tx.clone()
    }

    pub(crate) async fn run(mut self) {
        // A crash may have left messages in active/: take them back first.
        let left: Vec<String> = match self.store.scan(QueueName::Active) {
            Ok(ids) => ids.filter_map(Result::ok).collect(),
            Err(e) => {
                warn!("scan active: {e}");
                vec![]
            }
        };
        for id in left {
            self.load(&id, Origin::Found);
        }
        self.scan_incoming();
        self.scan_deferred(false);
        self.dispatch();
        let mut tick = tokio::time::interval(self.st.run_delay);
        tick.tick().await;
        loop {
            tokio::select! {
                biased;
                ev = self.rx.recv() => {
                    let Some(ev) = ev else { return };
                    self.handle(ev);
                    // Drain whatever else is waiting before scheduling again.
                    while let Ok(ev) = self.rx.try_recv() {
                        self.handle(ev);
                    }
                    // Finished messages made room.
                    self.take_backlog();
                }
                _ = tick.tick() => {
                    self.scan_incoming();
                    self.scan_deferred(false);
                }
                Ok(()) = self.cfg_rx.changed() => {
                    let cfg = self.cfg_rx.borrow_and_update().clone();
                    match Settings::new(cfg) {
                        Ok(st) => self.st = st,
                        Err(e) => warn!("reload: {e}"),
                    }
                }
                // The deliveries just started get going before more is read.
                () = tokio::task::yield_now(), if self.feeding => self.take_backlog(),
            }
            self.dispatch();
        }
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Trigger(Request::Byte(trigger::INCOMING)) => self.scan_incoming(),
            Event::Trigger(Request::New(id)) => {
                if self.store.claim_incoming(&id, self.st.stale_after) {
                    self.load(&id, Origin::New);
                }
            }
            Event::Trigger(Request::Byte(trigger::FLUSH)) => {
                self.scan_deferred(true);
                self.scan_incoming();
            }
            Event::Trigger(Request::Byte(trigger::DEFERRED)) => self.scan_deferred(false),
            Event::Trigger(Request::Byte(_)) => {
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
            Event::BounceDone { id, kind, result } => self.bounce_done(&id, kind, result),
        }
    }

    fn scan_incoming(&mut self) {
        self.backlog.incoming.request(&self.store, false);
        self.take_backlog();
    }

    /// A new scan of `deferred/`; `flush`: every message, due or not.
    fn scan_deferred(&mut self, flush: bool) {
        self.backlog.deferred.request(&self.store, flush);
        self.take_backlog();
    }

    /// Reads the scans on while the active queue has room: incoming mail
    /// first, then deferred mail that is due (or all of it, in a flush).
    /// At most [`FEED_BATCH`] files at a time: when more may follow,
    /// `feeding` has the run loop come back for them after it has looked
    /// at its events and started deliveries.
    fn take_backlog(&mut self) {
        let mut budget = FEED_BATCH;
        while budget > 0 && self.msgs.len() < self.st.active_limit {
            budget -= 1;
            let Some(id) = self.backlog.incoming.next(&self.store) else {
                break;
            };
            if self.store.claim_incoming(&id, self.st.stale_after) {
                self.load(&id, Origin::Found);
            }
        }
        let now = self.store.now();
        while budget > 0 && self.msgs.len() < self.st.active_limit {
            budget -= 1;
            let Some(id) = self.backlog.deferred.next(&self.store) else {
                break;
            };
            let due = self.store.retry_time(&id).is_some_and(|t| t <= now);
            if !(due || self.backlog.deferred.flushing()) {
                continue;
            }
            if self
                .store
                .move_to(&id, QueueName::Deferred, QueueName::Active)
                .is_ok()
            {
                self.load(&id, Origin::Deferred);
            }
        }
        // A spent budget: more may follow (a spare pass finds nothing).
        self.feeding = budget == 0;
    }

    /// Reads a message now in active/ and queues its pending recipients.
    /// A message new to the queue (from incoming/, or left in active/ by a
    /// crash) is first checked whole against its checksum; deferred mail
    /// was checked when it arrived.
    fn load(&mut self, id: &str, from: Origin) {
        if self.msgs.contains_key(id) {
            return;
        }
        let env = match self.store.open(id, from != Origin::Deferred) {
            Ok(env) => env,
            Err(pfx_queue::Error::Corrupt(why)) => {
                warn!("saving corrupt file \"{id}\" from queue \"active\" to queue \"corrupt\": {why}");
                let _ = self
                    .store
                    .move_to(id, QueueName::Active, QueueName::Corrupt);
                return;
            }
            Err(e) => return warn!("{id}: open queue file: {e}"),
        };
        info!(
            "{id}: from=<{}>, size={}, nrcpt={} (queue active)",
            env.sender,
            env.size,
            env.recipients.len()
        );
        let mut env = env;
        let mut state: Vec<Rcpt> = env
            .recipients
            .iter()
            .map(|r| if r.done { Rcpt::Done } else { Rcpt::Pending })
            .collect();
        if let Some(to) = &env.redirect {
            // As Postfix's qmgr: the first recipient still to deliver goes
            // to the redirect address instead, the others are dropped.
            let to = self.st.router.canonical(to);
            let pending: Vec<usize> = (0..state.len())
                .filter(|&i| state[i] == Rcpt::Pending)
                .collect();
            if let Some((&first, rest)) = pending.split_first() {
                let r = &mut env.recipients[first];
                r.original = r.original.take().or_else(|| Some(r.address.clone()));
                r.address = to;
                for &i in rest {
                    state[i] = Rcpt::Done;
                }
            }
        }
        // Marked by postsuper -e: returned to the sender, never delivered.
        // With a defer log, its reasons go back as they are; without one,
        // each recipient is deferred first with Postfix's reason, so that
        // the sender learns which recipients and why.
        if env.force_expire
            && self
                .store
                .read_log(Log::Defer, id)
                .is_ok_and(|log| !log.is_empty())
        {
            for s in state.iter_mut().filter(|s| **s == Rcpt::Pending) {
                *s = Rcpt::Deferred;
            }
        }
        let routes = env
            .recipients
            .iter()
            .map(|r| match (&env.redirect, &env.filter) {
                _ if env.force_expire => route::Route {
                    transport: "retry".into(),
                    nexthop: "4.7.0 message is administratively expired".into(),
                    destination: pfx_address::split(&r.address).1.to_ascii_lowercase(),
                },
                // The content filter overrides the address resolver.
                (None, Some(filter)) => self.st.router.filter_route(filter, &r.address),
                _ => self.st.router.route(&env.sender, &r.address),
            })
            .map(|r| self.routes.get(r))
            .collect();
        let msg = Msg {
            env,
            activated: self.store.now(),
            state,
            routes,
            in_flight: 0,
            has_bounces: from != Origin::New && self.store.has_log(Log::Bounce, id),
            has_trace: self.store.has_log(Log::Trace, id),
            defer_log: from != Origin::New,
            bouncing: false,
        };
        self.msgs.insert(id.to_owned(), Box::new(msg));
        self.enqueue(id);
        self.maybe_finish(id);
    }

    /// Puts a message's pending recipients in their destinations' queues.
    fn enqueue(&mut self, id: &str) {
        let Some(msg) = self.msgs.get(id) else { return };
        let mut groups: Vec<(&Arc<Route>, Vec<usize>)> = Vec::new();
        for i in (0..msg.state.len()).filter(|&i| msg.state[i] == Rcpt::Pending) {
            let r = &msg.routes[i];
            match groups.iter_mut().find(|(g, _)| *g == r) {
                Some((_, v)) => v.push(i),
                None => groups.push((r, vec![i])),
            }
        }
        for (route, idxs) in groups {
            let (per_request, _) = self.st.limits(&route.transport);
            self.destinations.push(id, route, &idxs, per_request);
        }
    }

    /// Hands out as much work as the concurrency limits allow, destination
    /// by destination.
    fn dispatch(&mut self) {
        for key in self.destinations.keys() {
            let (_, per_dest) = self.st.limits(&key.0);
            while let Some((id, route, batch)) = self.destinations.next(&key, per_dest) {
                // The message may have gone (deleted, deferred) since it was queued.
                let still_pending = self
                    .msgs
                    .get(&id)
                    .is_some_and(|m| batch.iter().all(|&i| m.state[i] == Rcpt::Pending));
                // postsuper may have deleted it or put it on hold: drop it, never deliver it.
                if !still_pending || !self.still_active(&id) {
                    continue;
                }
                self.destinations.start(&key);
                self.start_delivery((id, route, batch));
            }
        }
    }

    fn start_delivery(&mut self, (id, route, batch): Batch) {
        let Some(msg) = self.msgs.get_mut(&id) else {
            return;
        };
        for &i in &batch {
            msg.state[i] = Rcpt::InFlight;
        }
        msg.in_flight += 1;
        let req = DeliveryRequest {
            queue: QueueName::Active,
            queue_id: id.clone(),
            sender: msg.env.sender.clone(),
            nexthop: route.nexthop.clone(),
            recipients: batch
                .iter()
                .map(|&i| {
                    let r = &msg.env.recipients[i];
                    DeliveryRecipient {
                        address: r.address.clone(),
                        original: r.original.clone(),
                        notify: r.dsn_notify,
                        orcpt: r.dsn_orcpt.clone(),
                    }
                })
                .collect(),
            arrival_us: micros(msg.env.arrival),
            activated_us: micros(msg.activated),
        };
        // error:TEXT bounces, retry:TEXT defers, discard:TEXT drops the
        // mail (logged here, as sent): no agent involved.
        if route::is_builtin(&route.transport) {
            let discard = route.transport == "discard";
            let status = route::builtin_status(&route.transport, &route.nexthop);
            let statuses = req
                .recipients
                .iter()
                .map(|r| {
                    let mut o = status.clone();
                    if discard {
                        if o.reason.is_empty() {
                            // No text: the recipient's domain, as Postfix says.
                            o.reason = pfx_address::split(&r.address).1.to_owned();
                        }
                        let to = (r.address.as_str(), r.original.as_deref());
                        log_outcome(&id, (msg.env.arrival, msg.activated), to, &o);
                    }
                    o
                })
                .collect();
            let _ = self.tx.send(Event::Delivered {
                id,
                statuses,
                batch,
                route,
                by_agent: discard,
            });
            return;
        }
        let asked = self.agents.deliver(&route.transport, req);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let (statuses, by_agent) = asked.await;
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
        statuses: Vec<Outcome>,
        by_agent: bool,
    ) {
        let key: Key = (route.transport.clone(), route.destination.clone());
        self.destinations.finish(&key);
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
        let mut traces = Vec::new();
        for (&i, status) in batch.iter().zip(statuses) {
            let rcpt = &msg.env.recipients[i];
            let record = |o: &Outcome| Status {
                recipient: rcpt.address.clone(),
                original: rcpt.original.clone(),
                dsn: o.dsn.clone(),
                relay: o.relay.clone(),
                reason: o.reason.clone(),
                notify: rcpt.dsn_notify,
                dsn_orcpt: rcpt.dsn_orcpt.clone(),
                action: None,
            };
            match status.class {
                Class::Sent => {
                    msg.state[i] = Rcpt::Done;
                    done_offsets.push(rcpt.offset);
                    // NOTIFY=SUCCESS: recorded for the success notice,
                    // unless the next hop took that over (it does DSN).
                    if rcpt.dsn_notify & notify::SUCCESS != 0 {
                        if let Some(action) = status.action.as_str() {
                            // As Postfix's trace_append words it.
                            let mut rec = record(&status);
                            if status.relay != "none" {
                                rec.reason =
                                    format!("delivery via {}: {}", status.relay, rec.reason);
                            }
                            rec.action = Some(action.to_owned());
                            traces.push(rec);
                        }
                    }
                    continue;
                }
                Class::Bounced => {
                    msg.state[i] = Rcpt::Done;
                    done_offsets.push(rcpt.offset);
                    bounced.push((i, rcpt.offset));
                    let mut rec = record(&status);
                    let final_recipient = status.final_recipient.as_ref();
                    if let Some(f) = final_recipient.filter(|f| **f != rcpt.address) {
                        rec.original = Some(
                            rcpt.original
                                .clone()
                                .unwrap_or_else(|| rcpt.address.clone()),
                        );
                        rec.recipient = f.clone();
                    }
                    bounces.push(rec);
                }
                Class::Deferred => {
                    msg.state[i] = Rcpt::Deferred;
                    defers.push(record(&status));
                }
            }
            if !by_agent {
                let to = (rcpt.address.as_str(), rcpt.original.as_deref());
                log_outcome(id, (msg.env.arrival, msg.activated), to, &status);
            }
        }
        // The bounce record must be on disk before the recipient is marked done.
        if !bounces.is_empty() {
            match self.store.append_log(Log::Bounce, id, &bounces, true) {
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
            msg.defer_log = true;
            if let Err(e) = self.store.append_log(Log::Defer, id, &defers, false) {
                warn!("{id}: write defer log: {e}");
            }
        }
        if !traces.is_empty() {
            match self.store.append_log(Log::Trace, id, &traces, true) {
                Ok(()) => msg.has_trace = true,
                Err(e) => warn!("{id}: write trace log: {e}"),
            }
        }
        let finished_clean = msg.in_flight == 0
            && !msg.has_bounces
            && !msg.has_trace
            && msg.state.iter().all(|s| *s == Rcpt::Done);
        // When every recipient is delivered the file is about to go: marking is wasted work.
        if !done_offsets.is_empty() && !finished_clean {
            if let Err(e) = self.store.mark_done(id, &done_offsets) {
                warn!("{id}: mark recipients done: {e}");
            }
        }
        self.maybe_finish(id);
    }

    /// Whether a message's file is still in `active/`. When postsuper has
    /// deleted it, held it or requeued it, qmgr forgets the message: what is
    /// in flight finishes, nothing more is handed out or recorded for it.
    fn still_active(&mut self, id: &str) -> bool {
        if !self.msgs.contains_key(id) {
            return false;
        }
        if self.store.is_active(id) {
            return true;
        }
        self.msgs.remove(id);
        false
    }
}

/// The delivery log line of an outcome no delivery agent logged: qmgr's
/// own transports, agents that did not answer. `times`: arrival,
/// activation; `to`: the recipient and its original address.
pub(crate) fn log_outcome(
    id: &str,
    times: (SystemTime, SystemTime),
    to: (&str, Option<&str>),
    o: &Outcome,
) {
    let now = SystemTime::now();
    let t = Times {
        arrival: times.0,
        activated: times.1,
        agent_start: now,
        connected: now,
        done: now,
    };
    info!("{id}: {}", o.line(to.0, to.1, t));
}
