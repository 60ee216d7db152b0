//! anvil's counters, as Postfix's anvil keeps them.
//!
//! Per ident (`service:address`): the connections open now, and the rates
//! of connections, messages, recipients, new TLS sessions and AUTH commands
//! in a fixed window: when the window's start is more than
//! `anvil_rate_time_unit` ago, every rate starts again from zero at the next
//! event ("easier than a moving average, and a quicker response to
//! trespassers"). Events count whether or not smtpd then refuses them. The
//! state of an ident goes one time unit after its last connection closed.
//!
//! Per smtpd connection ("stream"): the connections it registered, so that
//! when it closes without a disconnect for each (the smtpd exited), they are
//! taken back. Postfix's smtpd serves one client per process and its anvil
//! keeps one per stream; an smtpd here serves many, so it keeps a count per
//! ident.
//!
//! The peaks since the last report are logged as Postfix's `statistics:`
//! lines by [`Table::statistics`].

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use pfx_ipc::proto::{AnvilEvent, AnvilReply, AnvilRequest, AnvilStatus};
use tokio::time::Instant;

/// One smtpd's connection to anvil.
pub(crate) type StreamId = u64;

/// The state of one ident.
#[derive(Debug)]
struct Remote {
    count: u32,
    rates: Rates,
    /// Start of the current window; `None` once a query found the window
    /// over (the next event starts a new one).
    start: Option<Instant>,
    /// When the state goes: set when the count drops to zero.
    expires: Option<Instant>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Rates {
    conn: u32,
    mail: u32,
    rcpt: u32,
    ntls: u32,
    auth: u32,
}

/// Which rate an event counts in.
#[derive(Debug, Clone, Copy)]
enum Rate {
    Conn,
    Mail,
    Rcpt,
    Ntls,
    Auth,
}

impl Rates {
    fn get_mut(&mut self, r: Rate) -> &mut u32 {
        match r {
            Rate::Conn => &mut self.conn,
            Rate::Mail => &mut self.mail,
            Rate::Rcpt => &mut self.rcpt,
            Rate::Ntls => &mut self.ntls,
            Rate::Auth => &mut self.auth,
        }
    }
}

impl Remote {
    /// A first connection.
    fn first(now: Instant) -> Self {
        Self {
            count: 1,
            rates: Rates {
                conn: 1,
                ..Rates::default()
            },
            start: Some(now),
            expires: None,
        }
    }

    /// Counts one event, in a new window when the current one is over.
    fn incr(&mut self, what: Rate, now: Instant, unit: Duration) -> u32 {
        if self.start.is_none_or(|s| s + unit < now) {
            self.rates = Rates::default();
            self.start = Some(now);
        }
        let n = self.rates.get_mut(what);
        *n = n.saturating_add(1);
        *n
    }

    /// What a query sees: nothing of a window that is over.
    fn fresh(&mut self, now: Instant, unit: Duration) {
        if self.start.is_some_and(|s| s + unit < now) {
            self.rates = Rates::default();
            self.start = None;
        }
    }
}

/// A peak value, for whom and when.
#[derive(Debug, Clone)]
struct Peak {
    value: u32,
    ident: String,
    when: SystemTime,
}

impl Default for Peak {
    fn default() -> Self {
        Self {
            value: 0,
            ident: String::new(),
            when: SystemTime::UNIX_EPOCH,
        }
    }
}

impl Peak {
    fn update(&mut self, value: u32, ident: &str) {
        if value > self.value {
            self.value = value;
            ident.clone_into(&mut self.ident);
            self.when = SystemTime::now();
        }
    }
}

#[derive(Debug, Default)]
struct Peaks {
    conn_rate: Peak,
    conn_count: Peak,
    mail: Peak,
    rcpt: Peak,
    ntls: Peak,
    auth: Peak,
    cache_size: Peak,
}

/// Everything anvil counts.
#[derive(Debug)]
pub(crate) struct Table {
    unit: Duration,
    remotes: HashMap<String, Remote>,
    /// Per stream, the connections it registered, per ident.
    streams: HashMap<StreamId, HashMap<String, u32>>,
    /// Idents whose count dropped to zero, by when their state goes; in
    /// order, since the time unit is fixed.
    expiring: VecDeque<(Instant, String)>,
    peaks: Peaks,
}

impl Table {
    pub(crate) fn new(unit: Duration) -> Self {
        Self {
            unit,
            remotes: HashMap::new(),
            streams: HashMap::new(),
            expiring: VecDeque::new(),
            peaks: Peaks::default(),
        }
    }

    /// Answers one request from `stream`.
    pub(crate) fn handle(&mut self, stream: StreamId, req: &AnvilRequest) -> AnvilReply {
        let now = Instant::now();
        self.expire(now);
        let ident = req.ident.as_str();
        match req.event {
            AnvilEvent::Connect => {
                let r = self.connect(stream, ident, now);
                let (count, rate) = (r.count, r.rates.conn);
                self.peaks.conn_rate.update(rate, ident);
                self.peaks.conn_count.update(count, ident);
                AnvilReply::Connected { count, rate }
            }
            AnvilEvent::Disconnect => {
                self.disconnect(stream, ident, now);
                AnvilReply::Done
            }
            AnvilEvent::Message => AnvilReply::Rate(self.count(stream, ident, Rate::Mail, now)),
            AnvilEvent::Recipient => AnvilReply::Rate(self.count(stream, ident, Rate::Rcpt, now)),
            AnvilEvent::NewTls => AnvilReply::Rate(self.count(stream, ident, Rate::Ntls, now)),
            AnvilEvent::Auth => AnvilReply::Rate(self.count(stream, ident, Rate::Auth, now)),
            AnvilEvent::NewTlsStatus => {
                let unit = self.unit;
                AnvilReply::Rate(self.remotes.get_mut(ident).map_or(0, |r| {
                    r.fresh(now, unit);
                    r.rates.ntls
                }))
            }
            AnvilEvent::Lookup => {
                let unit = self.unit;
                AnvilReply::Status(self.remotes.get_mut(ident).map_or_else(
                    AnvilStatus::default,
                    |r| {
                        r.fresh(now, unit);
                        AnvilStatus {
                            count: r.count,
                            rate: r.rates.conn,
                            mail: r.rates.mail,
                            rcpt: r.rates.rcpt,
                            newtls: r.rates.ntls,
                            auth: r.rates.auth,
                        }
                    },
                ))
            }
        }
    }

    /// Registers a connection of `ident` for `stream`.
    fn connect(&mut self, stream: StreamId, ident: &str, now: Instant) -> &Remote {
        *self
            .streams
            .entry(stream)
            .or_default()
            .entry(ident.to_owned())
            .or_default() += 1;
        let unit = self.unit;
        if let Some(r) = self.remotes.get_mut(ident) {
            r.incr(Rate::Conn, now, unit);
            if r.count == 0 {
                // Its state was to go: it stays.
                r.expires = None;
            }
            r.count = r.count.saturating_add(1);
        } else {
            self.remotes.insert(ident.to_owned(), Remote::first(now));
            let size = u32::try_from(self.remotes.len()).unwrap_or(u32::MAX);
            self.peaks.cache_size.update(size, "");
        }
        &self.remotes[ident]
    }

    /// Counts an event other than a connection. Of an ident anvil does not
    /// know (anvil restarted since the connect), the event registers a
    /// connection first, as Postfix's anvil does.
    fn count(&mut self, stream: StreamId, ident: &str, what: Rate, now: Instant) -> u32 {
        if !self.remotes.contains_key(ident) {
            self.connect(stream, ident, now);
        }
        let unit = self.unit;
        let Some(r) = self.remotes.get_mut(ident) else {
            return 0;
        };
        let n = r.incr(what, now, unit);
        let peak = match what {
            Rate::Conn => &mut self.peaks.conn_rate,
            Rate::Mail => &mut self.peaks.mail,
            Rate::Rcpt => &mut self.peaks.rcpt,
            Rate::Ntls => &mut self.peaks.ntls,
            Rate::Auth => &mut self.peaks.auth,
        };
        peak.update(n, ident);
        n
    }

    /// Ends a connection `stream` registered; anything else is ignored.
    fn disconnect(&mut self, stream: StreamId, ident: &str, now: Instant) {
        let Some(mine) = self.streams.get_mut(&stream) else {
            return;
        };
        let Some(n) = mine.get_mut(ident) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            mine.remove(ident);
        }
        self.drop_one(ident, now);
    }

    /// Takes back every connection a closed stream registered.
    pub(crate) fn close_stream(&mut self, stream: StreamId) {
        let now = Instant::now();
        for (ident, n) in self.streams.remove(&stream).unwrap_or_default() {
            for _ in 0..n {
                self.drop_one(&ident, now);
            }
        }
    }

    fn drop_one(&mut self, ident: &str, now: Instant) {
        let Some(r) = self.remotes.get_mut(ident) else {
            return;
        };
        if r.count == 0 {
            return;
        }
        r.count -= 1;
        if r.count == 0 {
            let at = now + self.unit;
            r.expires = Some(at);
            self.expiring.push_back((at, ident.to_owned()));
        }
    }

    /// Forgets the idents whose time came.
    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.expiring.front() {
            if *at > now {
                break;
            }
            let Some((at, ident)) = self.expiring.pop_front() else {
                break;
            };
            if self
                .remotes
                .get(&ident)
                .is_some_and(|r| r.count == 0 && r.expires == Some(at))
            {
                self.remotes.remove(&ident);
            }
        }
    }

    /// How many idents anvil holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.remotes.len()
    }

    /// Postfix's `statistics:` lines for the peaks since the last report,
    /// each only when there was one; the peaks start again from zero.
    pub(crate) fn statistics(&mut self) -> Vec<String> {
        let unit = self.unit.as_secs();
        let stamp = |p: &Peak| pfx_sys::time::log_stamp(p.when);
        let p = &mut self.peaks;
        let mut out = Vec::new();
        let rates = [
            ("connection", &mut p.conn_rate),
            ("connection", &mut p.conn_count),
            ("message", &mut p.mail),
            ("recipient", &mut p.rcpt),
            ("newtls", &mut p.ntls),
            ("auth", &mut p.auth),
        ];
        for (i, (name, peak)) in rates.into_iter().enumerate() {
            if peak.value == 0 {
                continue;
            }
            out.push(if i == 1 {
                format!(
                    "statistics: max {name} count {} for ({}) at {}",
                    peak.value,
                    peak.ident,
                    stamp(peak)
                )
            } else {
                format!(
                    "statistics: max {name} rate {}/{unit}s for ({}) at {}",
                    peak.value,
                    peak.ident,
                    stamp(peak)
                )
            });
            peak.value = 0;
        }
        if p.cache_size.value > 0 {
            out.push(format!(
                "statistics: max cache size {} at {}",
                p.cache_size.value,
                stamp(&p.cache_size)
            ));
            p.cache_size.value = 0;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNIT: Duration = Duration::from_secs(60);
    const A: &str = "smtp:192.0.2.1";
    const B: &str = "smtp:192.0.2.2";

    fn ask(t: &mut Table, stream: StreamId, event: AnvilEvent, ident: &str) -> AnvilReply {
        t.handle(
            stream,
            &AnvilRequest {
                event,
                ident: ident.into(),
            },
        )
    }

    fn connect(t: &mut Table, stream: StreamId, ident: &str) -> (u32, u32) {
        match ask(t, stream, AnvilEvent::Connect, ident) {
            AnvilReply::Connected { count, rate } => (count, rate),
            r => panic!("{r:?}"),
        }
    }

    fn rate(t: &mut Table, stream: StreamId, event: AnvilEvent, ident: &str) -> u32 {
        match ask(t, stream, event, ident) {
            AnvilReply::Rate(n) => n,
            r => panic!("{r:?}"),
        }
    }

    fn lookup(t: &mut Table, ident: &str) -> AnvilStatus {
        match ask(t, 0, AnvilEvent::Lookup, ident) {
            AnvilReply::Status(s) => s,
            r => panic!("{r:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn connections_count_and_rate_per_ident_across_streams() {
        let mut t = Table::new(UNIT);
        assert_eq!(connect(&mut t, 1, A), (1, 1));
        assert_eq!(connect(&mut t, 2, A), (2, 2));
        assert_eq!(connect(&mut t, 1, B), (1, 1));
        ask(&mut t, 1, AnvilEvent::Disconnect, A);
        assert_eq!(connect(&mut t, 2, A), (2, 3), "the rate keeps counting");
        assert_eq!(lookup(&mut t, A).count, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn every_rate_starts_again_together_once_the_window_is_over() {
        let mut t = Table::new(UNIT);
        connect(&mut t, 1, A);
        assert_eq!(rate(&mut t, 1, AnvilEvent::Message, A), 1);
        assert_eq!(rate(&mut t, 1, AnvilEvent::Message, A), 2);
        assert_eq!(rate(&mut t, 1, AnvilEvent::Recipient, A), 1);
        assert_eq!(rate(&mut t, 1, AnvilEvent::Auth, A), 1);
        // A window is the time unit, and the event exactly at its end still
        // falls in it.
        tokio::time::advance(UNIT).await;
        assert_eq!(rate(&mut t, 1, AnvilEvent::Message, A), 3);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(rate(&mut t, 1, AnvilEvent::Recipient, A), 1);
        let s = lookup(&mut t, A);
        assert_eq!(
            (s.count, s.rate, s.mail, s.rcpt, s.auth),
            (1, 0, 0, 1, 0),
            "{s:?}"
        );
        // A new window began with that recipient, not with the connection.
        assert_eq!(connect(&mut t, 1, A), (2, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn queries_count_nothing_and_show_no_stale_rates() {
        let mut t = Table::new(UNIT);
        assert_eq!(rate(&mut t, 1, AnvilEvent::NewTlsStatus, A), 0);
        assert_eq!(t.len(), 0, "a status query creates nothing");
        connect(&mut t, 1, A);
        assert_eq!(rate(&mut t, 1, AnvilEvent::NewTls, A), 1);
        assert_eq!(rate(&mut t, 1, AnvilEvent::NewTlsStatus, A), 1);
        assert_eq!(rate(&mut t, 1, AnvilEvent::NewTlsStatus, A), 1);
        tokio::time::advance(UNIT + Duration::from_secs(1)).await;
        assert_eq!(rate(&mut t, 1, AnvilEvent::NewTlsStatus, A), 0);
        assert_eq!(
            lookup(&mut t, A),
            AnvilStatus {
                count: 1,
                ..AnvilStatus::default()
            }
        );
        assert_eq!(rate(&mut t, 1, AnvilEvent::NewTls, A), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn state_goes_one_time_unit_after_the_last_connection() {
        let mut t = Table::new(UNIT);
        connect(&mut t, 1, A);
        rate(&mut t, 1, AnvilEvent::Message, A);
        ask(&mut t, 1, AnvilEvent::Disconnect, A);
        tokio::time::advance(UNIT - Duration::from_secs(1)).await;
        t.expire(Instant::now());
        assert_eq!(t.len(), 1);
        // A connection before then keeps it, rates and all.
        assert_eq!(connect(&mut t, 2, A), (1, 2));
        ask(&mut t, 2, AnvilEvent::Disconnect, A);
        tokio::time::advance(UNIT - Duration::from_secs(1)).await;
        t.expire(Instant::now());
        assert_eq!(t.len(), 1, "the first expiry was cancelled");
        tokio::time::advance(Duration::from_secs(1)).await;
        t.expire(Instant::now());
        assert_eq!(t.len(), 0);
        assert_eq!(lookup(&mut t, A), AnvilStatus::default());
        assert_eq!(connect(&mut t, 1, A), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_stream_gives_back_its_connections_and_only_its_own() {
        let mut t = Table::new(UNIT);
        connect(&mut t, 1, A);
        connect(&mut t, 1, A);
        connect(&mut t, 1, B);
        connect(&mut t, 2, A);
        // A disconnect for a connection another stream registered is ignored.
        ask(&mut t, 3, AnvilEvent::Disconnect, A);
        assert_eq!(lookup(&mut t, A).count, 3);
        t.close_stream(1);
        assert_eq!(lookup(&mut t, A).count, 1);
        assert_eq!(lookup(&mut t, B).count, 0);
        // Stream 2's own disconnect still works, once.
        ask(&mut t, 2, AnvilEvent::Disconnect, A);
        ask(&mut t, 2, AnvilEvent::Disconnect, A);
        assert_eq!(lookup(&mut t, A).count, 0);
        t.close_stream(2);
        assert_eq!(lookup(&mut t, A).count, 0);
        tokio::time::advance(UNIT).await;
        t.expire(Instant::now());
        assert_eq!(t.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_for_an_unknown_client_registers_a_connection() {
        // anvil restarted between smtpd's connect and the client's MAIL.
        let mut t = Table::new(UNIT);
        assert_eq!(rate(&mut t, 4, AnvilEvent::Message, A), 1);
        let s = lookup(&mut t, A);
        assert_eq!((s.count, s.rate, s.mail), (1, 1, 1));
        ask(&mut t, 4, AnvilEvent::Disconnect, A);
        assert_eq!(lookup(&mut t, A).count, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn statistics_report_each_peak_once() {
        let mut t = Table::new(UNIT);
        assert!(t.statistics().is_empty());
        connect(&mut t, 1, A);
        connect(&mut t, 1, A);
        connect(&mut t, 1, B);
        rate(&mut t, 1, AnvilEvent::Recipient, B);
        let lines = t.statistics();
        let heads: Vec<&str> = lines
            .iter()
            .map(|l| &l[..l.rfind(" at ").unwrap()])
            .collect();
        assert_eq!(
            heads,
            [
                "statistics: max connection rate 2/60s for (smtp:192.0.2.1)",
                "statistics: max connection count 2 for (smtp:192.0.2.1)",
                "statistics: max recipient rate 1/60s for (smtp:192.0.2.2)",
                "statistics: max cache size 2",
            ]
        );
        // `Dec  4 16:43:20`.
        let stamp = &lines[0][lines[0].rfind(" at ").unwrap() + 4..];
        assert_eq!(stamp.len(), 15, "{stamp}");
        assert!(t.statistics().is_empty(), "reported once");
        connect(&mut t, 1, B);
        assert_eq!(
            t.statistics().len(),
            2,
            "new peaks count from zero again: rate and count of B"
        );
    }
}
