//! The database servers of a `pgsql:` or `mysql:` table and the one
//! connection kept to them, as Postfix's dict_pgsql and dict_mysql keep it.
//!
//! `hosts` is a list separated by spaces or commas (default `localhost`;
//! a single host is listed twice, so that a failure is retried at once, as
//! Postfix does not to "blacklist the load balancer"). Each lookup uses the
//! connection it has; without one, it tries the hosts in random order,
//! UNIX-domain sockets before TCP before connection URIs, skipping a host
//! that failed less than `retry_interval` ago. A query that fails marks its
//! host failed and the next host is tried. A connection unused for
//! `idle_interval` is closed.
//!
//! The connection lives on a thread of its own (started at the first
//! lookup, ended when the table is dropped): lookups send it the key and
//! wait for the rows. A client library that runs its own async runtime
//! (rust-postgres' blocking client) therefore never blocks inside the
//! caller's tokio runtime.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Rows, Templates};

/// How a host is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// A UNIX-domain socket (pgsql: the directory holding it); `None` is
    /// the client's default.
    Unix(Option<String>),
    /// TCP to a host name or address, on a port or the default one.
    Inet { host: String, port: Option<u16> },
    /// pgsql's `postgresql://...` connection URI.
    Uri(String),
}

impl Endpoint {
    /// Postfix's preference: sockets, then TCP, then URIs.
    fn class(&self) -> u8 {
        match self {
            Self::Unix(_) => 0,
            Self::Inet { .. } => 1,
            Self::Uri(_) => 2,
        }
    }
}

/// One entry of `hosts`.
#[derive(Debug, Clone)]
pub(crate) struct Host {
    /// As written in `hosts`, for messages.
    pub(crate) label: String,
    pub(crate) endpoint: Endpoint,
}

/// The entries of `hosts` (split at spaces and commas; `localhost` when
/// empty; one entry listed twice), each parsed by `parse`.
pub(crate) fn parse_list(
    hosts: &str,
    parse: impl Fn(&str) -> Result<Endpoint, String>,
) -> Result<Vec<Host>, String> {
    let mut names: Vec<&str> = hosts
        .split([',', ' ', '\t', '\r', '\n'])
        .filter(|s| !s.is_empty())
        .collect();
    if names.is_empty() {
        names.push("localhost");
    }
    if names.len() == 1 {
        names.push(names[0]);
    }
    names
        .into_iter()
        .map(|n| {
            Ok(Host {
                label: n.to_owned(),
                endpoint: parse(n)?,
            })
        })
        .collect()
}

/// A port given as a number or a service name from /etc/services.
pub(crate) fn port(s: &str) -> Result<u16, String> {
    if let Ok(p) = s.parse::<u16>() {
        return Ok(p);
    }
    let services = std::fs::read_to_string("/etc/services").unwrap_or_default();
    for line in services.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let (Some(name), Some(port)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some(number) = port.strip_suffix("/tcp") else {
            continue;
        };
        if name == s || fields.any(|alias| alias == s) {
            if let Ok(p) = number.parse() {
                return Ok(p);
            }
        }
    }
    Err(format!("unknown service: {s}/tcp"))
}

/// A database client: how to connect, quote and query.
pub(crate) trait Client: Send + 'static {
    type Conn: Send;
    /// The table type (`pgsql`), for the thread's name.
    const KIND: &'static str;
    /// Postfix's name for the lookup function, in its messages.
    const LOOKUP: &'static str;
    /// Connects to `host`; the error is the client's words.
    fn connect(&self, host: &Host) -> Result<Self::Conn, String>;
    /// Appends `s`, quoted for a string literal on this connection.
    fn quote(conn: &Self::Conn, s: &str, out: &mut String);
    /// Runs `sql`; the error is the warning to log (the host is then
    /// marked failed).
    fn query(&self, conn: &mut Self::Conn, host: &Host, sql: &str) -> Result<Rows, String>;
}

/// A host's state, as Postfix's STATUNTRIED / STATACTIVE / STATFAIL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Untried,
    Active,
    /// Failed; left alone until then.
    Failed(Instant),
}

/// What the thread holds: the hosts and the connection.
struct Pool<C: Client> {
    client: C,
    hosts: Vec<(Host, State)>,
    conn: Option<(usize, C::Conn)>,
    retry: Duration,
    rng: u64,
}

/// Tries made to connect before giving up on a lookup (Postfix's
/// RETRY_CONN_MAX).
const RETRY_CONN_MAX: usize = 100;

impl<C: Client> Pool<C> {
    /// A pseudo-random number (xorshift, seeded per process).
    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// A host to connect to now, chosen at random among the untried ones
    /// and the ones whose failure is old enough, sockets first.
    fn candidate(&mut self) -> Option<usize> {
        let now = Instant::now();
        for class in 0..3 {
            let ready: Vec<usize> = self
                .hosts
                .iter()
                .enumerate()
                .filter(|(_, (h, s))| {
                    h.endpoint.class() == class
                        && match s {
                            State::Untried => true,
                            State::Failed(until) => *until <= now,
                            State::Active => false,
                        }
                })
                .map(|(i, _)| i)
                .collect();
            if !ready.is_empty() {
                let pick = (self.random() % ready.len() as u64) as usize;
                return Some(ready[pick]);
            }
        }
        None
    }

    fn down(&mut self, i: usize) {
        self.hosts[i].1 = State::Failed(Instant::now() + self.retry);
    }

    /// The connection, made if there is none; the error is why none could
    /// be made.
    fn active(&mut self) -> Result<(usize, C::Conn), String> {
        if let Some(c) = self.conn.take() {
            return Ok(c);
        }
        let mut last = None;
        for _ in 1..RETRY_CONN_MAX {
            let Some(i) = self.candidate() else { break };
            match self.client.connect(&self.hosts[i].0) {
                Ok(conn) => {
                    self.hosts[i].1 = State::Active;
                    return Ok((i, conn));
                }
                Err(e) => {
                    let what = format!(
                        "connect to {} server {}: {e}",
                        C::KIND,
                        self.hosts[i].0.label
                    );
                    tracing::warn!("{what}");
                    self.down(i);
                    last = Some(what);
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            format!(
                "no {} server is available (each failed less than {} s ago)",
                C::KIND,
                self.retry.as_secs()
            )
        }))
    }

    /// Runs the query for `key` on a host that answers.
    fn query(&mut self, t: &Templates, key: &str) -> Result<Rows, String> {
        loop {
            let (i, mut conn) = self.active()?;
            let sql = t.query_for(key, &|s: &str, out: &mut String| C::quote(&conn, s, out));
            match self.client.query(&mut conn, &self.hosts[i].0, &sql) {
                Ok(rows) => {
                    self.conn = Some((i, conn));
                    return Ok(rows);
                }
                Err(what) => {
                    tracing::warn!("{what}");
                    drop(conn);
                    self.down(i);
                    // As Postfix: the next host, if any is ready.
                    if self.candidate().is_none() {
                        return Err(what);
                    }
                }
            }
        }
    }

    /// Closes an idle connection.
    fn close(&mut self) {
        if let Some((i, _)) = self.conn.take() {
            self.hosts[i].1 = State::Untried;
        }
    }
}

/// A lookup sent to the thread.
struct Request {
    key: String,
    reply: SyncSender<Result<Rows, String>>,
}

/// Starts a table's thread.
type Start = dyn Fn() -> std::io::Result<Sender<Request>> + Send + Sync;

/// The handle on a table's connection thread.
pub(crate) struct Worker {
    lookup_function: &'static str,
    sender: Mutex<Option<Sender<Request>>>,
    start: Box<Start>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("lookup_function", &self.lookup_function)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker for `client` on `hosts`; its thread starts at the first
    /// lookup.
    pub(crate) fn new<C: Client + Clone + Sync>(
        client: C,
        hosts: Vec<Host>,
        t: Arc<Templates>,
        retry: Duration,
        idle: Duration,
    ) -> Self {
        let start = move || -> std::io::Result<Sender<Request>> {
            let (tx, rx) = mpsc::channel();
            let seed = {
                use std::hash::{BuildHasher, Hasher};
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_u64(u64::from(std::process::id()));
                h.finish() | 1
            };
            let pool = Pool {
                client: client.clone(),
                hosts: hosts.iter().map(|h| (h.clone(), State::Untried)).collect(),
                conn: None,
                retry,
                rng: seed,
            };
            let t = Arc::clone(&t);
            std::thread::Builder::new()
                .name(format!("{}-table", C::KIND))
                .spawn(move || serve(pool, &t, idle, &rx))?;
            Ok(tx)
        };
        Self {
            lookup_function: C::LOOKUP,
            sender: Mutex::new(None),
            start: Box::new(start),
        }
    }

    /// Postfix's name for the lookup function (`dict_pgsql_lookup`).
    pub(crate) fn lookup_function(&self) -> &'static str {
        self.lookup_function
    }

    /// The rows for `key` (folded, let through by the templates), or why
    /// there are none (a temporary error).
    pub(crate) fn query(&self, key: &str) -> Result<Rows, String> {
        let (reply, answer) = mpsc::sync_channel(1);
        let mut request = Request {
            key: key.to_owned(),
            reply,
        };
        // A thread that ended (it panicked) is started again, once.
        for _ in 0..2 {
            let tx = {
                let mut sender = self.sender.lock().unwrap_or_else(|e| e.into_inner());
                match &*sender {
                    Some(tx) => tx.clone(),
                    None => {
                        let tx = (self.start)()
                            .map_err(|e| format!("cannot start the table's thread: {e}"))?;
                        *sender = Some(tx.clone());
                        tx
                    }
                }
            };
            match tx.send(request) {
                Ok(()) => {
                    return answer
                        .recv()
                        .unwrap_or_else(|_| Err("the table's connection thread ended".into()))
                }
                Err(mpsc::SendError(r)) => {
                    request = r;
                    *self.sender.lock().unwrap_or_else(|e| e.into_inner()) = None;
                }
            }
        }
        Err("the table's connection thread ended".into())
    }
}

/// The thread: one lookup at a time; the connection closed when idle, the
/// thread ended when the table is dropped.
fn serve<C: Client>(mut pool: Pool<C>, t: &Templates, idle: Duration, rx: &Receiver<Request>) {
    loop {
        let request = if pool.conn.is_some() {
            match rx.recv_timeout(idle) {
                Ok(r) => r,
                Err(RecvTimeoutError::Timeout) => {
                    pool.close();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match rx.recv() {
                Ok(r) => r,
                Err(_) => return,
            }
        };
        let answer = pool.query(t, &request.key);
        let _ = request.reply.send(answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inet(s: &str) -> Result<Endpoint, String> {
        Ok(Endpoint::Inet {
            host: s.to_owned(),
            port: None,
        })
    }

    #[test]
    fn host_lists_split_at_spaces_and_commas_and_repeat_a_single_host() {
        let l = parse_list(" a, b\tc ,,d", inet).unwrap();
        let labels: Vec<&str> = l.iter().map(|h| h.label.as_str()).collect();
        assert_eq!(labels, ["a", "b", "c", "d"]);
        let l = parse_list("", inet).unwrap();
        let labels: Vec<&str> = l.iter().map(|h| h.label.as_str()).collect();
        assert_eq!(labels, ["localhost", "localhost"]);
        let l = parse_list("db", inet).unwrap();
        assert_eq!(l.len(), 2);
        assert!(parse_list("a b", |_| Err("bad".into())).is_err());
    }

    #[test]
    fn ports_are_numbers_or_services() {
        assert_eq!(port("5432").unwrap(), 5432);
        if std::fs::read_to_string("/etc/services").is_ok_and(|s| s.contains("postgresql")) {
            assert_eq!(port("postgresql").unwrap(), 5432);
        }
        assert!(port("no-such-service").is_err());
    }

    /// A client whose hosts named `down*` refuse connections and whose
    /// queries fail on hosts named `bad*`.
    #[derive(Clone)]
    struct Fake(Arc<Mutex<Vec<String>>>);

    impl Client for Fake {
        type Conn = String;
        const KIND: &'static str = "fake";
        const LOOKUP: &'static str = "dict_fake_lookup";
        fn connect(&self, host: &Host) -> Result<String, String> {
            self.0
                .lock()
                .unwrap()
                .push(format!("connect {}", host.label));
            if host.label.starts_with("down") {
                Err("Connection refused".into())
            } else {
                Ok(host.label.clone())
            }
        }
        fn quote(_: &String, s: &str, out: &mut String) {
            out.push_str(s);
        }
        fn query(&self, conn: &mut String, _: &Host, sql: &str) -> Result<Rows, String> {
            self.0.lock().unwrap().push(format!("query {conn}"));
            if conn.starts_with("bad") {
                Err(format!("{conn}: query failed"))
            } else {
                Ok(vec![vec![Some(sql.to_owned())]])
            }
        }
    }

    fn pool(hosts: &str, log: &Arc<Mutex<Vec<String>>>) -> Pool<Fake> {
        Pool {
            client: Fake(Arc::clone(log)),
            hosts: parse_list(hosts, inet)
                .unwrap()
                .into_iter()
                .map(|h| (h, State::Untried))
                .collect(),
            conn: None,
            retry: Duration::from_secs(60),
            rng: 88_172_645_463_325_252,
        }
    }

    fn templates() -> Templates {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("t.cf");
        std::fs::write(&p, "").unwrap();
        let cf = super::super::Cf::read(&p.display().to_string()).unwrap();
        Templates::parse("fake", &cf, "q %s".into()).unwrap()
    }

    #[test]
    fn a_connection_is_kept_and_failed_hosts_are_left_alone() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let t = templates();
        let mut p = pool("down1 up", &log);
        for _ in 0..3 {
            assert_eq!(p.query(&t, "k").unwrap(), vec![vec![Some("q k".into())]]);
        }
        let l = log.lock().unwrap().clone();
        // One connection to "up", made once; "down1" tried at most once.
        assert_eq!(l.iter().filter(|s| *s == "connect up").count(), 1);
        assert!(l.iter().filter(|s| *s == "connect down1").count() <= 1);
        assert_eq!(l.iter().filter(|s| *s == "query up").count(), 3);
        // Closed when idle: the next lookup connects again.
        p.close();
        p.query(&t, "k").unwrap();
        assert_eq!(
            log.lock()
                .unwrap()
                .iter()
                .filter(|s| *s == "connect up")
                .count(),
            2
        );
    }

    #[test]
    fn every_host_down_is_an_error_and_not_retried_within_the_interval() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let t = templates();
        let mut p = pool("down", &log);
        let e = p.query(&t, "k").unwrap_err();
        assert_eq!(e, "connect to fake server down: Connection refused");
        // The single host is listed twice: tried twice, then left alone.
        assert_eq!(log.lock().unwrap().len(), 2);
        let e = p.query(&t, "k").unwrap_err();
        assert!(e.starts_with("no fake server is available"), "{e}");
        assert_eq!(log.lock().unwrap().len(), 2);
        // Once the interval is over, it is tried again.
        for h in &mut p.hosts {
            h.1 = State::Failed(Instant::now() - Duration::from_secs(1));
        }
        assert!(p.query(&t, "k").is_err());
        assert_eq!(log.lock().unwrap().len(), 4);
    }

    #[test]
    fn a_failed_query_moves_to_the_next_host() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let t = templates();
        let mut p = pool("bad", &log);
        let e = p.query(&t, "k").unwrap_err();
        assert_eq!(e, "bad: query failed");
        assert_eq!(
            *log.lock().unwrap(),
            ["connect bad", "query bad", "connect bad", "query bad"]
        );
    }

    #[test]
    fn unix_sockets_are_tried_before_tcp() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut p = pool("a b c", &log);
        p.hosts[2].0.endpoint = Endpoint::Unix(None);
        for _ in 0..10 {
            assert_eq!(p.candidate(), Some(2));
        }
        p.hosts[2].1 = State::Active;
        let mut seen = [false; 2];
        for _ in 0..64 {
            seen[p.candidate().unwrap()] = true;
        }
        assert_eq!(seen, [true, true], "random among the TCP hosts");
    }

    #[test]
    fn the_worker_thread_answers_and_ends_with_the_table() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let w = Worker::new(
            Fake(Arc::clone(&log)),
            parse_list("up", inet).unwrap(),
            Arc::new(templates()),
            Duration::from_secs(60),
            Duration::from_millis(50),
        );
        assert_eq!(w.query("k").unwrap(), vec![vec![Some("q k".into())]]);
        // Idle: closed, then made again.
        std::thread::sleep(Duration::from_millis(200));
        w.query("k").unwrap();
        assert_eq!(
            log.lock()
                .unwrap()
                .iter()
                .filter(|s| *s == "connect up")
                .count(),
            2
        );
        drop(w);
    }
}
