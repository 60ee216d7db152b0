//! smtpd(8): the SMTP server, one process serving many sessions.
//!
//! Speaks RFC 5321 with PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES and
//! SMTPUTF8; checks relay and recipients at RCPT time; streams DATA to cleanup
//! and answers `250 2.0.0 Ok: queued as ID` only after cleanup reports the
//! queue file durable. Replies and log lines are Postfix's.

mod access;
mod check;
mod dnsxl;
mod limits;
mod milter;
mod policy;
mod sasl;
mod session;
mod settings;
mod stages;
mod stats;
#[cfg(test)]
mod tests;
mod tls;

use std::path::Path;
use std::sync::Arc;

use pfx_ipc::anvil::Anvil;
use pfx_ipc::cleanup::Cleanup;
use pfx_server::Stream;
use settings::Settings;
use tracing::warn;

/// What the sessions of one smtpd process share.
pub(crate) struct Shared {
    /// The connection to anvil, which counts clients' connections and
    /// events for every smtpd process (see `limits`).
    pub(crate) anvil: Anvil,
    /// Connections to cleanup, reused by the next message of any session.
    pub(crate) cleanup: Cleanup,
}

impl Shared {
    pub(crate) fn new(queue_dir: &Path) -> Self {
        Self {
            anvil: Anvil::under(queue_dir),
            cleanup: Cleanup::under(queue_dir),
        }
    }
}

fn main() {
    // One thread: a session is a chain of small steps, and hopping between
    // worker threads costs more than the steps themselves.
    // Settings (tables, the resolver) are built before a chroot cuts the
    // files they need off.
    pfx_server::run_prepared(
        "smtpd",
        pfx_server::Threads::One,
        |cfg| {
            // A TLS key may be readable by root only, and a reload may be
            // what turns TLS on: a new process prepares again as root.
            pfx_server::restart_on_reload();
            Settings::new(Arc::new(cfg.clone()))
        },
        |ctx, endpoint, first| async move {
            let config = ctx.config.clone();
            let settings = Arc::new(pfx_server::PerConfig::seeded(
                first,
                ctx.initial_config.clone(),
            ));
            let queue_dir = config.borrow().get("queue_directory").unwrap_or_default();
            let shared = Arc::new(Shared::new(Path::new(&queue_dir)));
            pfx_server::serve_stream(&ctx, endpoint, move |stream| {
                let cfg = config.borrow().clone();
                let settings = settings.get(cfg, Settings::new);
                let shared = shared.clone();
                async move {
                    let Stream::Tcp(tcp, peer) = stream else {
                        return;
                    };
                    let _ = tcp.set_nodelay(true);
                    let server = tcp.local_addr().ok();
                    match settings {
                        Ok(st) => session::run(st, tcp, peer, server, shared).await,
                        Err(e) => warn!("configuration: {e}"),
                    }
                }
            })
            .await
        },
    )
}
