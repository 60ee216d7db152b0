//! What happens to a message once nothing of it is in flight, in this
//! order: recipients deferred past the queue lifetime, or of a message
//! marked by `postsuper -e`, expire into bounces;
//! failed recipients are returned to the sender by bounce (at once, even
//! while others still wait, as Postfix does); a message with deferred
//! recipients goes to `deferred/` until its backoff has passed; a message
//! with every recipient done is removed.

use pfx_ipc::proto::Notice;
use pfx_queue::statuslog::{Log, Status};
use tracing::{info, warn};

use crate::agents::Agents;
use crate::plan;
use crate::scheduler::{Event, Rcpt, Scheduler};
use crate::store::Store;

impl<Q: Store, A: Agents> Scheduler<Q, A> {
    pub(crate) fn maybe_finish(&mut self, id: &str) {
        let Some(msg) = self.msgs.get(id) else {
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
        if !self.expire(id) {
            return;
        }
        let Some(msg) = self.msgs.get(id) else {
            return;
        };
        if msg.has_bounces {
            self.request_bounce(id, Notice::Failure);
        } else if msg.has_trace {
            self.request_bounce(id, Notice::Success);
        } else if msg.state.contains(&Rcpt::Deferred) && self.warning_due(id) {
            self.request_bounce(id, Notice::Delay);
        } else if msg.state.contains(&Rcpt::Deferred) {
            let age = self.age(id);
            self.defer(
                id,
                plan::backoff(age, self.st.min_backoff, self.st.max_backoff),
            );
        } else {
            self.remove(id);
        }
    }

    fn age(&self, id: &str) -> std::time::Duration {
        self.msgs.get(id).map_or_else(Default::default, |m| {
            self.store
                .now()
                .duration_since(m.env.arrival)
                .unwrap_or_default()
        })
    }

    /// Turns deferred recipients of a message queued longer than its
    /// lifetime into bounces, with their last reason. False when that
    /// could not be recorded (the message stays as it is, for next time).
    fn expire(&mut self, id: &str) -> bool {
        let age = self.age(id);
        let Some(msg) = self.msgs.get_mut(id) else {
            return false;
        };
        let lifetime = if msg.env.sender.is_empty() {
            self.st.bounce_lifetime
        } else {
            self.st.lifetime
        };
        let deferred: Vec<usize> = (0..msg.state.len())
            .filter(|&i| msg.state[i] == Rcpt::Deferred)
            .collect();
        let forced = msg.env.force_expire;
        if deferred.is_empty() || (age < lifetime && !forced) {
            return true;
        }
        let reasons = self.store.read_log(Log::Defer, id).unwrap_or_default();
        let records: Vec<Status> = deferred
            .iter()
            .map(|&i| {
                let r = &msg.env.recipients[i];
                // The log keeps each recipient's last reason.
                let last = reasons.iter().find(|s| s.recipient == r.address);
                Status {
                    recipient: r.address.clone(),
                    original: r.original.clone(),
                    dsn: last.map_or("4.4.7".into(), |s| s.dsn.clone()),
                    relay: last.map_or("none".into(), |s| s.relay.clone()),
                    reason: last.map_or("message expired".into(), |s| s.reason.clone()),
                    notify: r.dsn_notify,
                    dsn_orcpt: r.dsn_orcpt.clone(),
                    action: None,
                }
            })
            .collect();
        if let Err(e) = self.store.append_log(Log::Bounce, id, &records, true) {
            warn!("{id}: write bounce log: {e}");
            return false;
        }
        let offsets: Vec<u64> = deferred
            .iter()
            .map(|&i| msg.env.recipients[i].offset)
            .collect();
        if let Err(e) = self.store.mark_done(id, &offsets) {
            warn!("{id}: mark recipients done: {e}");
        }
        for &i in &deferred {
            msg.state[i] = Rcpt::Done;
        }
        msg.has_bounces = true;
        info!(
            "{id}: from=<{}>, status={}, returned to sender",
            msg.env.sender,
            if forced { "force-expired" } else { "expired" }
        );
        true
    }

    /// Has bounce send the notice; its answer comes back as an event.
    /// Whether the sender is to be warned of the delay now: warnings are
    /// on, the file asks for one (its `W` record) and its time has come.
    fn warning_due(&self, id: &str) -> bool {
        let Some(w) = self.msgs.get(id).and_then(|m| m.env.warn) else {
            return false;
        };
        let now = self
            .store
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.st.delay_warnings && w.at > 0 && w.at <= now
    }

    fn request_bounce(&mut self, id: &str, kind: Notice) {
        let Some(msg) = self.msgs.get_mut(id) else {
            return;
        };
        msg.bouncing = true;
        let asked = self.agents.bounce(id, kind);
        let tx = self.tx.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            let result = asked.await;
            let _ = tx.send(Event::BounceDone { id, kind, result });
        });
    }

    /// Moves the message to `deferred/`, due again after `wait`, and
    /// forgets it.
    fn defer(&mut self, id: &str, wait: std::time::Duration) {
        match self.store.defer_until(id, self.store.now() + wait) {
            Ok(()) => {}
            // postsuper took it meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!("{id}: move to deferred: {e}"),
        }
        self.msgs.remove(id);
    }

    fn remove(&mut self, id: &str) {
        let defer_log = self.msgs.remove(id).is_none_or(|m| m.defer_log);
        match self.store.remove(id, defer_log) {
            Ok(()) => info!("{id}: removed"),
            Err(e) => warn!("{id}: remove queue file: {e}"),
        }
    }

    pub(crate) fn bounce_done(
        &mut self,
        id: &str,
        kind: Notice,
        result: Result<Option<String>, String>,
    ) {
        let Some(msg) = self.msgs.get_mut(id) else {
            return;
        };
        msg.bouncing = false;
        match result {
            Ok(_) => {
                match kind {
                    Notice::Failure => msg.has_bounces = false,
                    Notice::Success => msg.has_trace = false,
                    // Once per message: the file says it was sent.
                    Notice::Delay => {
                        if let Some(w) = msg.env.warn.take() {
                            if let Err(e) = self.store.clear_warning(id, &w) {
                                warn!("{id}: update queue file: {e}");
                            }
                        }
                    }
                }
                self.maybe_finish(id);
            }
            Err(e) => {
                // Keep the log and try again after the usual backoff, as
                // Postfix's qmgr does when a notice could not be sent.
                let what = match kind {
                    Notice::Failure => "non-delivery notification",
                    Notice::Success => "delivery status notification",
                    Notice::Delay => "delay notification",
                };
                warn!("{id}: {what} failed: {e}");
                let age = self.age(id);
                self.defer(
                    id,
                    plan::backoff(age, self.st.min_backoff, self.st.max_backoff),
                );
            }
        }
    }
}
