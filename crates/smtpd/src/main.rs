//! smtpd(8): the SMTP server, one process serving many sessions.
//!
//! Speaks RFC 5321 with PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES and
//! SMTPUTF8; checks relay and recipients at RCPT time; streams DATA to cleanup
//! and answers `250 2.0.0 Ok: queued as ID` only after cleanup reports the
//! queue file durable. Replies and log lines are Postfix's.

mod check;
mod session;
mod settings;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use pfx_server::Stream;
use settings::Settings;
use tracing::warn;

/// What the sessions of one smtpd process share.
#[derive(Default)]
pub(crate) struct Shared {
    /// Open sessions per client address (`smtpd_client_connection_count_limit`).
    pub(crate) counts: Mutex<HashMap<IpAddr, usize>>,
    /// Idle connections to cleanup, reused by the next message of any session.
    pub(crate) cleanup: Mutex<Vec<pfx_ipc::Channel<tokio::net::UnixStream>>>,
}

fn main() {
    // One thread: a session is a chain of small steps, and hopping between
    // worker threads costs more than the steps themselves.
    // Settings (tables, the resolver) are built before a chroot cuts the
    // files they need off.
    pfx_server::run_prepared(
        "smtpd",
        pfx_server::Threads::One,
        |cfg| Settings::new(Arc::new(cfg.clone())),
        |ctx, endpoint, first| async move {
            let config = ctx.config.clone();
            let settings = Arc::new(pfx_server::PerConfig::seeded(
                first,
                ctx.initial_config.clone(),
            ));
            let shared: Arc<Shared> = Arc::default();
            pfx_server::serve_stream(&ctx, endpoint, move |stream| {
                let cfg = config.borrow().clone();
                let settings = settings.get(cfg, Settings::new);
                let shared = shared.clone();
                async move {
                    let Stream::Tcp(tcp, peer) = stream else {
                        return;
                    };
                    match settings {
                        Ok(st) => session::run(st, tcp, peer, shared).await,
                        Err(e) => warn!("configuration: {e}"),
                    }
                }
            })
            .await
        },
    )
}
