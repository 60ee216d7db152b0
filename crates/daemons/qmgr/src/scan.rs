//! Scans of `incoming/` and `deferred/`, read a file at a time as the
//! active queue has room, as Postfix's qmgr reads them: a queue of a
//! million messages is never listed whole in memory.

use pfx_queue::QueueName;
use tracing::warn;

use crate::store::{Ids, Store};

/// One queue's scan. A scan asked for while one goes on starts once that
/// one is done (Postfix's `qmgr_scan_request`), so that frequent requests
/// do not keep rereading the start of the directory and starve its end.
pub(crate) struct Scan {
    queue: QueueName,
    ids: Option<Ids>,
    /// This scan is a flush: retry times do not count until it is done.
    flush: bool,
    /// Another scan was asked for meanwhile; `true`: a flush.
    again: Option<bool>,
}

impl Scan {
    pub(crate) fn new(queue: QueueName) -> Self {
        Self {
            queue,
            ids: None,
            flush: false,
            again: None,
        }
    }

    /// Starts a scan now, or once the one going on is done.
    pub(crate) fn request(&mut self, store: &impl Store, flush: bool) {
        if self.ids.is_some() {
            self.again = Some(self.again.unwrap_or(false) || flush);
        } else {
            self.start(store, flush);
        }
    }

    fn start(&mut self, store: &impl Store, flush: bool) {
        match store.scan(self.queue) {
            Ok(ids) => {
                self.ids = Some(ids);
                self.flush = flush;
            }
            Err(e) => warn!("scan {}: {e}", self.queue.as_str()),
        }
    }

    /// Whether the scan going on is a flush.
    pub(crate) fn flushing(&self) -> bool {
        self.ids.is_some() && self.flush
    }

    /// The next file's ID; `None` once the scan (and any asked for
    /// meanwhile) is done.
    pub(crate) fn next(&mut self, store: &impl Store) -> Option<String> {
        loop {
            match self.ids.as_mut()?.next() {
                Some(Ok(id)) => return Some(id),
                Some(Err(e)) => warn!("scan {}: {e}", self.queue.as_str()),
                None => {}
            }
            self.ids = None;
            self.flush = false;
            if let Some(flush) = self.again.take() {
                self.start(store, flush);
            }
        }
    }
}
