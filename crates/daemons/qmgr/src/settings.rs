//! qmgr's view of main.cf, built once per configuration: every value with
//! its default from the parameter table, none at the call sites.

use std::sync::Arc;
use std::time::Duration;

use pfx_config::{BuildError, Config};

use crate::route::Router;

pub(crate) struct Settings {
    pub(crate) router: Router,
    /// Scans of `incoming/` and `deferred/` without a trigger (`queue_run_delay`).
    pub(crate) run_delay: Duration,
    /// An incomplete file in `incoming/` this old was left by a crash (`ipc_timeout`).
    pub(crate) stale_after: Duration,
    /// Messages in memory at most (`qmgr_message_active_limit`).
    pub(crate) active_limit: usize,
    /// `maximal_queue_lifetime`, and `bounce_queue_lifetime` for mail with
    /// the null sender.
    pub(crate) lifetime: Duration,
    pub(crate) bounce_lifetime: Duration,
    /// `delay_warning_time`: warnings only while it is not 0.
    pub(crate) delay_warnings: bool,
    /// `minimal_backoff_time` and `maximal_backoff_time`.
    pub(crate) min_backoff: Duration,
    pub(crate) max_backoff: Duration,
    /// For the per-transport limits ([`Router::limits`]).
    pub(crate) cfg: Arc<Config>,
}

impl Settings {
    pub(crate) fn new(cfg: Arc<Config>) -> Result<Self, BuildError> {
        let time = |n: &str| cfg.time(n);
        let min_backoff = time("minimal_backoff_time")?;
        Ok(Self {
            router: Router::new(&cfg)?,
            run_delay: time("queue_run_delay")?.max(Duration::from_secs(1)),
            stale_after: time("ipc_timeout")?,
            active_limit: cfg.count("qmgr_message_active_limit")?,
            lifetime: time("maximal_queue_lifetime")?,
            bounce_lifetime: time("bounce_queue_lifetime")?,
            delay_warnings: !time("delay_warning_time")?.is_zero(),
            min_backoff,
            max_backoff: time("maximal_backoff_time")?.max(min_backoff),
            cfg,
        })
    }

    /// Recipients per delivery request and concurrent requests per
    /// destination, for a transport.
    pub(crate) fn limits(&self, transport: &str) -> (usize, usize) {
        self.router.limits(transport, &self.cfg)
    }
}
