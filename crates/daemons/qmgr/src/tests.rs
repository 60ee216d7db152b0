//! The scheduler on a queue kept in memory, with delivery agents that
//! answer as each test says, in paused time: hours of retries take
//! milliseconds, and every wait is exact.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use pfx_config::Config;
use pfx_ipc::proto::DeliveryRequest;
use pfx_maillog::delivery::Outcome;
use pfx_queue::file::Recipient;
use pfx_queue::statuslog::{Log, Status};
use pfx_queue::QueueName;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::agents::Agents;
use crate::scheduler::Scheduler;
use crate::store::{Envelope, Ids, Store};

/// A delivery request as the agents got it: transport, next hop, and each
/// recipient with its original.
type Routed = (String, String, Vec<(String, Option<String>)>);

/// What happened to the queue, with times since the test started.
#[derive(Default)]
struct Record {
    files: HashMap<String, (QueueName, Envelope, SystemTime)>,
    logs: HashMap<(String, &'static str), Vec<Status>>,
    /// (message, when, retry time): each move to `deferred/`.
    deferrals: Vec<(String, Duration, Duration)>,
    removed: Vec<(String, Duration)>,
    /// Recipients per delivery request, and the most in flight at once.
    requests: Vec<usize>,
    /// Each request: transport, next hop, (recipient, original) pairs.
    routed: Vec<Routed>,
    in_flight: usize,
    most_in_flight: usize,
    bounces: Vec<(String, Duration)>,
    /// How many messages were in `active/` when the first delivery began.
    active_at_first_delivery: Option<usize>,
    /// How many notices bounce fails to send before it sends one.
    bounce_failures: usize,
    /// Each status log looked for: (message, log).
    log_lookups: Vec<(String, &'static str)>,
    /// The messages removed with their defer log.
    defer_logs_removed: Vec<String>,
}

impl Record {
    /// Seconds from each move to `deferred/` to its retry time.
    fn waits(&self) -> Vec<u64> {
        self.deferrals
            .iter()
            .map(|(_, at, until)| (*until - *at).as_secs())
            .collect()
    }
}

#[derive(Clone)]
struct Memory {
    epoch: SystemTime,
    start: Instant,
    rec: Arc<Mutex<Record>>,
}

impl Memory {
    fn new() -> Self {
        Self {
            epoch: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            start: Instant::now(),
            rec: Arc::default(),
        }
    }

    fn rec(&self) -> std::sync::MutexGuard<'_, Record> {
        self.rec.lock().unwrap()
    }

    /// A message in `incoming/` from `sender`, arrived now.
    fn add(&self, id: &str, sender: &str, recipients: &[&str]) {
        let env = Envelope {
            sender: sender.into(),
            arrival: self.now(),
            size: 100,
            recipients: recipients
                .iter()
                .enumerate()
                .map(|(i, a)| Recipient {
                    address: (*a).into(),
                    original: None,
                    offset: 100 * i as u64,
                    done: false,
                    dsn_notify: 0,
                    dsn_orcpt: None,
                })
                .collect(),
            filter: None,
            redirect: None,
            warn: None,
            force_expire: false,
        };
        let now = self.now();
        self.rec()
            .files
            .insert(id.into(), (QueueName::Incoming, env, now));
    }

    /// Adds a message to `deferred/`, due at `due`.
    fn add_deferred(&self, id: &str, recipients: &[&str], due: SystemTime) {
        self.add(id, "s@example.com", recipients);
        let mut rec = self.rec();
        let f = rec.files.get_mut(id).unwrap();
        f.0 = QueueName::Deferred;
        f.2 = due;
    }

    fn since_start(&self) -> Duration {
        self.start.elapsed()
    }
}

fn log_name(log: Log) -> &'static str {
    match log {
        Log::Bounce => "bounce",
        Log::Defer => "defer",
        Log::Trace => "trace",
    }
}

impl Store for Memory {
    fn now(&self) -> SystemTime {
        self.epoch + self.start.elapsed()
    }

    fn scan(&self, q: QueueName) -> std::io::Result<Ids> {
        let mut ids: Vec<String> = (self.rec().files.iter())
            .filter(|(_, f)| f.0 == q)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        Ok(Box::new(ids.into_iter().map(Ok)))
    }

    fn claim_incoming(&self, id: &str, _stale_after: Duration) -> bool {
        self.move_to(id, QueueName::Incoming, QueueName::Active)
            .is_ok()
    }

    fn retry_time(&self, id: &str) -> Option<SystemTime> {
        self.rec().files.get(id).map(|f| f.2)
    }

    fn move_to(&self, id: &str, from: QueueName, to: QueueName) -> std::io::Result<()> {
        match self.rec().files.get_mut(id) {
            Some(f) if f.0 == from => {
                f.0 = to;
                Ok(())
            }
            _ => Err(std::io::ErrorKind::NotFound.into()),
        }
    }

    fn open(&self, id: &str, _verify: bool) -> Result<Envelope, pfx_queue::Error> {
        match self.rec().files.get(id) {
            Some((QueueName::Active, env, _)) => Ok(env.clone()),
            _ => Err(pfx_queue::Error::Io(std::io::ErrorKind::NotFound.into())),
        }
    }

    fn is_active(&self, id: &str) -> bool {
        self.rec()
            .files
            .get(id)
            .is_some_and(|f| f.0 == QueueName::Active)
    }

    fn has_log(&self, log: Log, id: &str) -> bool {
        let mut rec = self.rec();
        rec.log_lookups.push((id.into(), log_name(log)));
        rec.logs.contains_key(&(id.into(), log_name(log)))
    }

    fn append_log(
        &self,
        log: Log,
        id: &str,
        records: &[Status],
        _sync: bool,
    ) -> std::io::Result<()> {
        // As statuslog reads a log back: each recipient's last record.
        let mut rec = self.rec();
        let entry = rec.logs.entry((id.into(), log_name(log))).or_default();
        for r in records {
            entry.retain(|old| old.recipient != r.recipient);
            entry.push(r.clone());
        }
        Ok(())
    }

    fn read_log(&self, log: Log, id: &str) -> std::io::Result<Vec<Status>> {
        Ok(self
            .rec()
            .logs
            .get(&(id.into(), log_name(log)))
            .cloned()
            .unwrap_or_default())
    }

    fn clear_warning(&self, id: &str, _w: &pfx_queue::file::Warn) -> std::io::Result<()> {
        if let Some(f) = self.rec().files.get_mut(id) {
            f.1.warn = None;
        }
        Ok(())
    }

    fn mark_done(&self, id: &str, offsets: &[u64]) -> std::io::Result<()> {
        if let Some(f) = self.rec().files.get_mut(id) {
            for r in &mut f.1.recipients {
                r.done |= offsets.contains(&r.offset);
            }
        }
        Ok(())
    }

    fn defer_until(&self, id: &str, when: SystemTime) -> std::io::Result<()> {
        let at = self.since_start();
        let mut rec = self.rec();
        let f = rec.files.get_mut(id).ok_or(std::io::ErrorKind::NotFound)?;
        f.0 = QueueName::Deferred;
        f.2 = when;
        let until = when.duration_since(self.epoch).unwrap();
        rec.deferrals.push((id.into(), at, until));
        Ok(())
    }

    fn remove(&self, id: &str, defer_log: bool) -> std::io::Result<()> {
        let at = self.since_start();
        let mut rec = self.rec();
        rec.files.remove(id);
        if defer_log {
            rec.logs.remove(&(id.into(), "defer"));
            rec.defer_logs_removed.push(id.into());
        }
        rec.removed.push((id.into(), at));
        Ok(())
    }
}

type Answer = dyn Fn(&DeliveryRequest) -> Outcome + Send + Sync;

/// Delivery agents that take `work` per request and answer every
/// recipient with `answer`; bounce always succeeds.
struct Fake {
    memory: Memory,
    work: Duration,
    answer: Arc<Answer>,
}

impl Agents for Fake {
    fn deliver(
        &self,
        transport: &str,
        req: DeliveryRequest,
    ) -> impl Future<Output = (Vec<Outcome>, bool)> + Send + 'static {
        let (memory, work, answer) = (self.memory.clone(), self.work, self.answer.clone());
        let transport = transport.to_owned();
        async move {
            {
                let mut rec = memory.rec();
                if rec.requests.is_empty() {
                    let active = (rec.files.values())
                        .filter(|f| f.0 == QueueName::Active)
                        .count();
                    rec.active_at_first_delivery = Some(active);
                }
                rec.requests.push(req.recipients.len());
                let to = (req.recipients.iter())
                    .map(|r| (r.address.clone(), r.original.clone()))
                    .collect();
                rec.routed.push((transport, req.nexthop.clone(), to));
                rec.in_flight += 1;
                rec.most_in_flight = rec.most_in_flight.max(rec.in_flight);
            }
            tokio::time::sleep(work).await;
            memory.rec().in_flight -= 1;
            let status = answer(&req);
            (vec![status; req.recipients.len()], true)
        }
    }

    fn bounce(
        &self,
        id: &str,
        _kind: pfx_ipc::proto::Notice,
    ) -> impl Future<Output = Result<Option<String>, String>> + Send + 'static {
        let at = self.memory.since_start();
        let mut rec = self.memory.rec();
        if rec.bounce_failures > 0 {
            rec.bounce_failures -= 1;
            return std::future::ready(Err("bounce service unavailable".into()));
        }
        rec.bounces.push((id.into(), at));
        std::future::ready(Ok(Some("NOTICE".into())))
    }
}

/// Starts a scheduler on `memory` with these main.cf lines; the returned
/// sender keeps its configuration alive.
fn start(
    memory: &Memory,
    main_cf: &str,
    work: Duration,
    answer: impl Fn(&DeliveryRequest) -> Outcome + Send + Sync + 'static,
) -> watch::Sender<Arc<Config>> {
    start_with_events(memory, main_cf, work, answer).0
}

/// [`start`], and where trigger requests go.
fn start_with_events(
    memory: &Memory,
    main_cf: &str,
    work: Duration,
    answer: impl Fn(&DeliveryRequest) -> Outcome + Send + Sync + 'static,
) -> (
    watch::Sender<Arc<Config>>,
    tokio::sync::mpsc::UnboundedSender<crate::scheduler::Event>,
) {
    let text = format!("mydestination = example.com\nqueue_run_delay = 10s\n{main_cf}");
    let cfg = Config::from_text(std::path::Path::new("/nonexistent"), &text).unwrap();
    let (cfg_tx, cfg_rx) = watch::channel(Arc::new(cfg));
    let agents = Fake {
        memory: memory.clone(),
        work,
        answer: Arc::new(answer),
    };
    let scheduler = Scheduler::new(cfg_rx, memory.clone(), agents).unwrap();
    let events = scheduler.events();
    tokio::spawn(scheduler.run());
    (cfg_tx, events)
}

/// Waits (in paused time, so instantly) until `done` holds.
async fn until(memory: &Memory, done: impl Fn(&Record) -> bool) {
    for _ in 0..100_000 {
        if done(&memory.rec()) {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("never happened");
}

fn deferred(reason: &str) -> Outcome {
    Outcome::failed(
        true,
        &reason[..5],
        "mx.remote.example[192.0.2.1]:25",
        &reason[6..],
    )
}

#[tokio::test(start_paused = true)]
async fn destination_concurrency_is_reached_and_released() {
    let memory = Memory::new();
    let rcpts: Vec<String> = (0..10).map(|i| format!("u{i}@remote.example")).collect();
    let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    memory.add("A1", "s@example.com", &rcpts);
    // Another destination is not held up by the busy one.
    memory.add("B1", "s@example.com", &["x@other.example"]);
    let main_cf = "smtp_destination_concurrency_limit = 2\nsmtp_destination_recipient_limit = 1\n";
    let _cfg = start(&memory, main_cf, Duration::from_secs(10), |_| {
        Outcome::sent("mx.remote.example[192.0.2.1]:25", "250 ok")
    });
    until(&memory, |r| r.removed.len() == 2).await;
    let rec = memory.rec();
    assert_eq!(rec.requests, [1; 11]);
    // Two for remote.example at a time, one for other.example beside them.
    assert_eq!(rec.most_in_flight, 3);
    let when: HashMap<&str, u64> = rec
        .removed
        .iter()
        .map(|(id, at)| (id.as_str(), at.as_secs()))
        .collect();
    assert_eq!(when["B1"], 10);
    // Ten requests of ten seconds, two at a time.
    assert_eq!(when["A1"], 50);
}

#[tokio::test(start_paused = true)]
async fn recipients_are_batched_per_transaction_limit() {
    let memory = Memory::new();
    let rcpts: Vec<String> = (0..7).map(|i| format!("u{i}@remote.example")).collect();
    let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    // Local recipients go one per request, whatever the smtp limit.
    memory.add(
        "A1",
        "s@example.com",
        &[&rcpts[..], &["me@example.com", "you@example.com"]].concat(),
    );
    let _cfg = start(
        &memory,
        "smtp_destination_recipient_limit = 3\n",
        Duration::ZERO,
        |_| Outcome::sent("mx.remote.example[192.0.2.1]:25", "250 ok"),
    );
    until(&memory, |r| r.removed.len() == 1).await;
    let mut sizes = memory.rec().requests.clone();
    sizes.sort();
    assert_eq!(sizes, [1, 1, 1, 3, 3]);
}

#[tokio::test(start_paused = true)]
async fn a_content_filter_takes_every_recipient_whatever_its_route() {
    let memory = Memory::new();
    memory.add(
        "F1",
        "s@example.com",
        &["me@example.com", "u@remote.example", "v@remote.example"],
    );
    memory.rec().files.get_mut("F1").unwrap().1.filter = Some("scan:[127.0.0.1]:10025".into());
    // Without a next hop: default_filter_nexthop, else the recipient's domain.
    memory.add("F2", "s@example.com", &["me@example.com"]);
    memory.rec().files.get_mut("F2").unwrap().1.filter = Some("scan:".into());
    let _cfg = start(&memory, "", Duration::ZERO, |_| {
        Outcome::sent("127.0.0.1[127.0.0.1]:10025", "250 ok")
    });
    until(&memory, |r| r.removed.len() == 2).await;
    let mut routed: Vec<_> = (memory.rec().routed.iter())
        .map(|(t, hop, to)| (t.clone(), hop.clone(), to.len()))
        .collect();
    routed.sort();
    let want = |t: &str, hop: &str, n| (t.to_owned(), hop.to_owned(), n);
    assert_eq!(
        routed,
        [
            want("scan", "[127.0.0.1]:10025", 3),
            want("scan", "example.com", 1)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_redirect_sends_the_message_once_to_its_address() {
    let memory = Memory::new();
    memory.add(
        "R1",
        "s@example.com",
        &["me@example.com", "u@remote.example", "v@remote.example"],
    );
    {
        let mut rec = memory.rec();
        let env = &mut rec.files.get_mut("R1").unwrap().1;
        env.redirect = Some("quarantine@remote.example".into());
        // Redirect overrides a content filter too.
        env.filter = Some("scan:[127.0.0.1]:10025".into());
        env.recipients[0].done = true;
    }
    let _cfg = start(&memory, "", Duration::ZERO, |_| {
        Outcome::sent("mx.remote.example[192.0.2.1]:25", "250 ok")
    });
    until(&memory, |r| r.removed.len() == 1).await;
    let rec = memory.rec();
    let to = vec![(
        "quarantine@remote.example".to_owned(),
        Some("u@remote.example".to_owned()),
    )];
    assert_eq!(
        rec.routed,
        [("smtp".to_owned(), "remote.example".to_owned(), to)]
    );
}

#[tokio::test(start_paused = true)]
async fn backoff_doubles_up_to_its_maximum() {
    let memory = Memory::new();
    memory.add("A1", "s@example.com", &["u@remote.example"]);
    let _cfg = start(
        &memory,
        "minimal_backoff_time = 300s\nmaximal_backoff_time = 4000s\n",
        Duration::ZERO,
        |_| deferred("4.4.1 connect to mx.remote.example: Connection timed out"),
    );
    until(&memory, |r| r.deferrals.len() == 7).await;
    let rec = memory.rec();
    let waits = rec.waits();
    // Each wait is the message's age at the attempt, within the bounds.
    assert_eq!(waits, [300, 300, 600, 1200, 2400, 4000, 4000]);
    let attempts: Vec<u64> = rec.deferrals.iter().map(|d| d.1.as_secs()).collect();
    assert_eq!(attempts, [0, 300, 600, 1200, 2400, 4800, 8800]);
    assert!(rec.bounces.is_empty() && rec.removed.is_empty());
}

#[tokio::test(start_paused = true)]
async fn expiry_turns_deferral_into_a_bounce_with_the_last_reason() {
    let memory = Memory::new();
    memory.add("A1", "s@example.com", &["u@remote.example"]);
    let attempt = Arc::new(Mutex::new(0));
    let _cfg = start(
        &memory,
        "maximal_queue_lifetime = 1h\n",
        Duration::ZERO,
        move |_| {
            let mut n = attempt.lock().unwrap();
            *n += 1;
            deferred(&format!("4.4.{n} attempt {n} failed"))
        },
    );
    until(&memory, |r| !r.removed.is_empty()).await;
    let rec = memory.rec();
    // Tried at 0, 300, 600, 1200, 2400 and 4800 s: the last attempt is past
    // the lifetime of one hour.
    assert_eq!(rec.deferrals.len(), 5);
    assert_eq!(rec.bounces, [("A1".to_owned(), Duration::from_secs(4800))]);
    assert_eq!(rec.removed[0].1, Duration::from_secs(4800));
    // Removed with the message: only the bounce log is left, with the
    // reason of the last attempt.
    let bounce = &rec.logs[&("A1".to_owned(), "bounce")];
    assert_eq!(bounce.len(), 1);
    assert_eq!(
        (bounce[0].dsn.as_str(), bounce[0].reason.as_str()),
        ("4.4.6", "attempt 6 failed")
    );
}

/// `postsuper -e`: a new message is not delivered but deferred by qmgr
/// itself with Postfix's reason and returned at once; a deferred one goes
/// back with the reasons of its defer log, without another attempt.
#[tokio::test(start_paused = true)]
async fn a_message_marked_for_expiration_is_returned_not_delivered() {
    let memory = Memory::new();
    memory.add(
        "A1",
        "s@example.com",
        &["u@remote.example", "v@example.com"],
    );
    memory.add_deferred("A2", &["w@remote.example"], memory.now());
    for id in ["A1", "A2"] {
        memory.rec().files.get_mut(id).unwrap().1.force_expire = true;
    }
    let old = Status {
        recipient: "w@remote.example".into(),
        original: None,
        dsn: "4.4.1".into(),
        relay: "none".into(),
        reason: "connect to mx.remote.example: Connection timed out".into(),
        notify: 0,
        dsn_orcpt: None,
        action: None,
    };
    memory.append_log(Log::Defer, "A2", &[old], true).unwrap();
    let _cfg = start(&memory, "", Duration::ZERO, |_| {
        panic!("a message marked for expiration went to a delivery agent")
    });
    until(&memory, |r| r.removed.len() == 2).await;
    let rec = memory.rec();
    assert!(rec.routed.is_empty(), "{:?}", rec.routed);
    assert_eq!(rec.bounces.len(), 2);
    let reasons = |id: &str| -> Vec<(String, String, String)> {
        let mut v: Vec<_> = rec.logs[&(id.to_owned(), "bounce")]
            .iter()
            .map(|s| (s.recipient.clone(), s.dsn.clone(), s.reason.clone()))
            .collect();
        v.sort();
        v
    };
    let expired = |to: &str| {
        (
            to.to_owned(),
            "4.7.0".to_owned(),
            "message is administratively expired".to_owned(),
        )
    };
    assert_eq!(
        reasons("A1"),
        [expired("u@remote.example"), expired("v@example.com")]
    );
    assert_eq!(
        reasons("A2"),
        [(
            "w@remote.example".to_owned(),
            "4.4.1".to_owned(),
            "connect to mx.remote.example: Connection timed out".to_owned()
        )]
    );
    assert!(
        rec.deferrals.is_empty(),
        "returned at once: {:?}",
        rec.deferrals
    );
}

#[tokio::test(start_paused = true)]
async fn mail_from_the_null_sender_expires_after_the_bounce_lifetime() {
    let memory = Memory::new();
    memory.add("A1", "", &["u@remote.example"]);
    let _cfg = start(
        &memory,
        "maximal_queue_lifetime = 5d\nbounce_queue_lifetime = 10m\n",
        Duration::ZERO,
        |_| deferred("4.4.1 no answer"),
    );
    until(&memory, |r| !r.removed.is_empty()).await;
    // 0, 300, then 600 s: past ten minutes.
    assert_eq!(memory.rec().bounces[0].1, Duration::from_secs(600));
}

/// A notice that could not be sent is tried again after the message's
/// usual backoff (its age, within the bounds), as Postfix's qmgr does,
/// with its bounce log kept; then the message goes.
#[tokio::test(start_paused = true)]
async fn a_failed_notice_waits_the_usual_backoff() {
    let memory = Memory::new();
    memory.add("A1", "s@example.com", &["u@remote.example"]);
    memory.rec().bounce_failures = 3;
    let _cfg = start(
        &memory,
        "minimal_backoff_time = 300s\nmaximal_backoff_time = 4000s\n",
        Duration::ZERO,
        |_| {
            Outcome::failed(
                false,
                "5.1.1",
                "mx.remote.example[192.0.2.1]:25",
                "no such user",
            )
        },
    );
    until(&memory, |r| !r.removed.is_empty()).await;
    let rec = memory.rec();
    let waits = rec.waits();
    assert_eq!(waits, [300, 300, 600]);
    assert_eq!(rec.bounces, [("A1".to_owned(), Duration::from_secs(1200))]);
}

/// More mail than `qmgr_message_active_limit` in incoming/: all of it is
/// taken as room frees up, not at the next queue run.
#[tokio::test(start_paused = true)]
async fn incoming_past_the_active_limit_is_taken_as_room_frees_up() {
    let memory = Memory::new();
    for i in 0..7 {
        memory.add(&format!("A{i}"), "s@example.com", &["u@example.com"]);
    }
    let _cfg = start(
        &memory,
        "qmgr_message_active_limit = 2\nqueue_run_delay = 1000s\n",
        Duration::from_secs(1),
        |_| Outcome::sent("local", "delivered to maildir"),
    );
    until(&memory, |r| r.removed.len() == 7).await;
    assert!(memory
        .rec()
        .removed
        .iter()
        .all(|(_, at)| at.as_secs() < 1000));
}

/// What `postqueue -f` sends qmgr.
fn flush(events: &tokio::sync::mpsc::UnboundedSender<crate::scheduler::Event>) {
    events
        .send(crate::scheduler::Event::Trigger(
            crate::trigger::Request::Byte(pfx_ipc::proto::trigger::FLUSH),
        ))
        .unwrap();
}

/// `postqueue -f` of a queue deeper than `qmgr_message_active_limit`:
/// every message goes, not only the first ones (Postfix's qmgr reads its
/// flush scan through; postfix-rs's stopped at the limit).
#[tokio::test(start_paused = true)]
async fn a_flush_goes_through_a_queue_deeper_than_the_active_limit() {
    let memory = Memory::new();
    let later = memory.now() + Duration::from_secs(86_400);
    for i in 0..7 {
        memory.add_deferred(&format!("D{i}"), &["u@remote.example"], later);
    }
    let (_cfg, events) = start_with_events(
        &memory,
        "qmgr_message_active_limit = 2\nqueue_run_delay = 1000s\n",
        Duration::from_secs(1),
        |_| Outcome::sent("mx.remote.example[192.0.2.1]:25", "250 ok"),
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(memory.rec().removed.is_empty(), "nothing is due yet");
    flush(&events);
    until(&memory, |r| r.removed.len() == 7).await;
    assert!(memory
        .rec()
        .removed
        .iter()
        .all(|(_, at)| at.as_secs() < 1000));
}

/// `postqueue -f` run again and again while a flush goes on: every message
/// gets its turn before any is tried again (a scan asked for meanwhile
/// starts once the one going on is done, as Postfix's; a restart from the
/// top retried the first files and starved the last).
#[tokio::test(start_paused = true)]
async fn a_flush_asked_for_again_does_not_starve_the_end_of_the_queue() {
    let memory = Memory::new();
    let later = memory.now() + Duration::from_secs(86_400);
    for i in 0..4 {
        memory.add_deferred(&format!("D{i}"), &["u@remote.example"], later);
    }
    let (_cfg, events) = start_with_events(
        &memory,
        "qmgr_message_active_limit = 1\nqueue_run_delay = 1000s\n",
        Duration::from_secs(1),
        |_| deferred("4.4.1 connection refused"),
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    for _ in 0..20 {
        flush(&events);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    until(&memory, |r| r.deferrals.len() >= 4).await;
    let first: Vec<String> = memory.rec().deferrals[..4]
        .iter()
        .map(|d| d.0.clone())
        .collect();
    assert_eq!(first, ["D0", "D1", "D2", "D3"]);
}

/// A deep queue due at once: deliveries start while the scan is still
/// read, not after the whole active queue has been loaded (Postfix's qmgr
/// takes one file per event; postfix-rs's read up to the active limit
/// first, and a start after an outage waited for all of it).
#[tokio::test(start_paused = true)]
async fn deliveries_start_before_a_deep_queue_is_read_whole() {
    let memory = Memory::new();
    let due = memory.now();
    for i in 0..2000 {
        memory.add_deferred(&format!("D{i:04}"), &["u@remote.example"], due);
    }
    let _cfg = start(&memory, "", Duration::from_millis(10), |_| {
        Outcome::sent("mx.remote.example[192.0.2.1]:25", "250 ok")
    });
    until(&memory, |r| r.removed.len() == 2000).await;
    let first = memory.rec().active_at_first_delivery.unwrap();
    assert!(
        first <= 200,
        "{first} messages read before the first delivery"
    );
}

/// A message cleanup has just committed (its trigger names it) has no
/// bounce or defer log of its own yet: none is looked for or removed (a
/// trace log, which cleanup writes for expanded aliases, is). Mail found
/// by a scan or taken from deferred/ is looked at in full, and its defer
/// log goes with it.
#[tokio::test(start_paused = true)]
async fn a_new_message_is_not_searched_for_logs_it_cannot_have() {
    let memory = Memory::new();
    memory.add_deferred("D1", &["u@remote.example"], memory.now());
    let reason = Status {
        recipient: "u@remote.example".into(),
        reason: "connection refused".into(),
        ..Default::default()
    };
    memory
        .append_log(Log::Defer, "D1", &[reason], false)
        .unwrap();
    let (_cfg, events) = start_with_events(
        &memory,
        "queue_run_delay = 1000s\n",
        Duration::from_secs(1),
        |_| Outcome::sent("mx.remote.example[192.0.2.1]:25", "250 ok"),
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    memory.add("N1", "s@example.com", &["u@remote.example"]);
    events
        .send(crate::scheduler::Event::Trigger(
            crate::trigger::Request::New("N1".into()),
        ))
        .unwrap();
    until(&memory, |r| r.removed.len() == 2).await;
    let rec = memory.rec();
    let looked = |id: &str| -> Vec<&str> {
        (rec.log_lookups.iter())
            .filter(|(m, _)| m == id)
            .map(|(_, l)| *l)
            .collect()
    };
    assert_eq!(looked("N1"), ["trace"]);
    assert_eq!(looked("D1"), ["bounce", "trace"]);
    assert_eq!(rec.defer_logs_removed, ["D1"]);
    assert!(rec.logs.is_empty(), "{:?}", rec.logs.keys());
}
