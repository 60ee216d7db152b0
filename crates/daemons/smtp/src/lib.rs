//! smtp(8) and lmtp(8): deliver mail to other hosts over SMTP, or to a
//! final delivery server (Dovecot, Cyrus) over LMTP. As in Postfix they are
//! one program in two modes ([`Mode`]); the two binaries differ only in the
//! mode they pass to [`run`].
//!
//! qmgr hands the agent recipients with a next hop. SMTP: `domain` or
//! `host:port` (MX lookup through `crates/lib/dns`, falling back to the
//! A/AAAA records), or `[host]:port` (no MX lookup; `relayhost` and
//! transport_maps entries look like this). LMTP: `unix:path` (relative to
//! the queue directory: `unix:private/dovecot-lmtp`), or `inet:host:port`,
//! `host:port`, `[host]` (port `lmtp_tcp_port`, 24), never MX. The agent
//! tries the servers in order until one answers, speaks ESMTP (HELO when
//! EHLO is refused) or LMTP (LHLO), with PIPELINING and SIZE when offered,
//! and reports each recipient: 2xx sent, 4xx deferred, 5xx bounced, with
//! the server's reply as the reason; an LMTP server answers the end of
//! DATA once per accepted recipient, and each reply is that recipient's
//! outcome. Connections are kept for the next message to the same next
//! hop (`smtp_connection_cache_on_demand`, `lmtp_...`). Logs Postfix's
//! lines: `to=<r>, relay=host[ip]:port, delay=..., dsn=2.0.0, status=sent
//! (250 2.0.0 Ok: queued as X)`; for a socket `relay=myhostname[path]`.

mod client;
mod deliver;
mod mode;
mod route;
mod security;

pub use mode::Mode;

/// Runs the agent in `mode` under the daemon skeleton; never returns.
pub fn run(mode: Mode) -> ! {
    // The agent (its resolver, its tables) is built before a chroot cuts
    // /etc/resolv.conf and the tables off.
    pfx_server::run_prepared(
        mode.program(),
        pfx_server::Threads::Many,
        move |cfg| {
            // A TLS client key may be readable by root only, and a reload
            // may be what sets one: a new process prepares again as root.
            pfx_server::restart_on_reload();
            deliver::Agent::new(std::sync::Arc::new(cfg.clone()), mode)
        },
        move |ctx, endpoint, first| async move {
            pfx_server::serve_deliveries(
                &ctx,
                endpoint,
                pfx_server::PerConfig::seeded(first, ctx.initial_config.clone()),
                move |cfg| deliver::Agent::new(cfg, mode),
                |state, req| async move { deliver::request(&state, &req).await },
            )
            .await
        },
    )
}
