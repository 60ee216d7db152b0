//! smtp(8): delivers mail to other hosts over SMTP.
//!
//! qmgr hands it recipients with a next hop: `domain` or `host:port` (MX
//! lookup through `crates/lib/dns`, falling back to the A/AAAA records), or
//! `[host]:port` (no MX lookup; `relayhost` and transport_maps entries look
//! like this). It tries the servers in order until one answers, speaks
//! ESMTP (HELO when EHLO is refused; PIPELINING and SIZE when offered), and
//! reports each recipient: 2xx sent, 4xx deferred, 5xx bounced, with the
//! server's reply as the reason. Connections are kept for the next message
//! to the same next hop (`smtp_connection_cache_on_demand`). Logs Postfix's
//! lines: `to=<r>, relay=host[ip]:port, delay=..., dsn=2.0.0, status=sent
//! (250 2.0.0 Ok: queued as X)`.

mod client;
mod deliver;
mod route;
mod security;

fn main() {
    // The agent (its resolver, its tables) is built before a chroot cuts
    // /etc/resolv.conf and the tables off.
    pfx_server::run_prepared(
        "smtp",
        pfx_server::Threads::Many,
        |cfg| {
            // A TLS client key may be readable by root only, and a reload
            // may be what sets one: a new process prepares again as root.
            pfx_server::restart_on_reload();
            deliver::Agent::new(std::sync::Arc::new(cfg.clone()))
        },
        |ctx, endpoint, first| async move {
            pfx_server::serve_deliveries(
                &ctx,
                endpoint,
                pfx_server::PerConfig::seeded(first, ctx.initial_config.clone()),
                deliver::Agent::new,
                |state, req| async move { deliver::request(&state, &req).await },
            )
            .await
        },
    )
}
