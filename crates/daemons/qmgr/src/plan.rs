//! The scheduling decisions that need no files: which batch of recipients
//! goes out next under the concurrency limits, how long a deferred message
//! waits, and when it has been queued too long.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::route::Route;

/// Requests in flight per transport at most (Postfix: the transport's maxproc).
pub(crate) const TRANSPORT_LIMIT: usize = 100;

/// Recipients of one message that go out together: (queue ID, route,
/// recipient indexes).
pub(crate) type Batch = (String, Arc<Route>, Vec<usize>);

/// What concurrency is counted against: (transport, destination).
pub(crate) type Key = (String, String);

/// Batches waiting, one FIFO per destination, and the requests in flight
/// per destination and per transport. Handing out work after an event
/// looks only at destinations with work: a destination at its limit costs
/// one look, so the cost per message does not grow with the queue.
#[derive(Default)]
pub(crate) struct Destinations {
    waiting: HashMap<Key, VecDeque<Batch>>,
    busy_dest: HashMap<Key, usize>,
    busy_transport: HashMap<String, usize>,
}

impl Destinations {
    /// Queues a message's recipients for one route, `per_request` to a batch.
    pub(crate) fn push(
        &mut self,
        id: &str,
        route: &Arc<Route>,
        recipients: &[usize],
        per_request: usize,
    ) {
        let queue = self
            .waiting
            .entry((route.transport.clone(), route.destination.clone()))
            .or_default();
        for batch in recipients.chunks(per_request.max(1)) {
            queue.push_back((id.to_owned(), route.clone(), batch.to_vec()));
        }
    }

    /// The destinations with batches waiting.
    pub(crate) fn keys(&self) -> Vec<Key> {
        self.waiting.keys().cloned().collect()
    }

    /// The next batch for `key` if the destination has room under
    /// `per_dest` and its transport under [`TRANSPORT_LIMIT`]; the caller
    /// [`start`](Self::start)s it or drops it.
    pub(crate) fn next(&mut self, key: &Key, per_dest: usize) -> Option<Batch> {
        let dest_busy = self.busy_dest.get(key).copied().unwrap_or(0);
        let transport_busy = self.busy_transport.get(&key.0).copied().unwrap_or(0);
        if dest_busy >= per_dest || transport_busy >= TRANSPORT_LIMIT {
            return None;
        }
        let batch = self.waiting.get_mut(key).and_then(VecDeque::pop_front);
        if batch.is_none() {
            self.waiting.remove(key);
        }
        batch
    }

    /// A request for `key` is in flight.
    pub(crate) fn start(&mut self, key: &Key) {
        *self.busy_dest.entry(key.clone()).or_default() += 1;
        *self.busy_transport.entry(key.0.clone()).or_default() += 1;
    }

    /// A request for `key` has been answered.
    pub(crate) fn finish(&mut self, key: &Key) {
        if let Some(n) = self.busy_dest.get_mut(key) {
            *n = n.saturating_sub(1);
        }
        if let Some(n) = self.busy_transport.get_mut(&key.0) {
            *n = n.saturating_sub(1);
        }
    }
}

/// How long a message deferred at `age` waits: its age, between the
/// minimal and the maximal backoff time, so the waits double from one
/// attempt to the next until they reach the maximum (Postfix's rule).
pub(crate) fn backoff(age: Duration, min: Duration, max: Duration) -> Duration {
    age.clamp(min, max.max(min))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(dest: &str) -> Arc<Route> {
        Arc::new(Route {
            transport: "smtp".into(),
            nexthop: dest.into(),
            destination: dest.into(),
        })
    }

    #[test]
    fn batches_per_request_and_room_per_destination() {
        let mut d = Destinations::default();
        d.push("A", &route("x.example"), &[0, 1, 2, 3, 4, 5, 6], 3);
        d.push("B", &route("y.example"), &[0], 3);
        let x = ("smtp".to_owned(), "x.example".to_owned());
        let sizes: Vec<usize> = std::iter::from_fn(|| {
            let b = d.next(&x, 2)?;
            d.start(&x);
            Some(b.2.len())
        })
        .collect();
        // Two in flight at most: the third batch waits for room.
        assert_eq!(sizes, [3, 3]);
        d.finish(&x);
        assert_eq!(d.next(&x, 2).map(|b| b.2), Some(vec![6]));
        assert_eq!(d.keys().len(), 2);
    }

    #[test]
    fn backoff_follows_the_age_between_its_bounds() {
        let (min, max) = (Duration::from_secs(300), Duration::from_secs(4000));
        let s = Duration::from_secs;
        assert_eq!(backoff(s(0), min, max), s(300));
        assert_eq!(backoff(s(1200), min, max), s(1200));
        assert_eq!(backoff(s(90_000), min, max), s(4000));
        // A maximum below the minimum does not shorten the wait.
        assert_eq!(backoff(s(10), min, s(60)), s(300));
    }
}
