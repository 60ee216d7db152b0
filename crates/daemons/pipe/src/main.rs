//! pipe(8): delivers mail to an external command, as master.cf's arguments
//! say: `flags=` (what goes before, in and after the message), `user=`
//! (whose privileges the command runs with; never root nor the mail system's
//! own), `argv=` (the command, with `${recipient}`, `${sender}`,
//! `${nexthop}`... macros), `directory=`, `eol=`, `null_sender=`, `size=`.
//! The command gets no shell and a clean environment (`export_environment`
//! and `PATH=/usr/bin:/bin`); its exit status decides, as with Postfix:
//! 0 sent, sysexits(3) codes as their class says (75 and 71 defer, the rest
//! bounce), a status code at the start of its output overrides, a signal
//! defers, `$SERVICE_time_limit` exceeded bounces. Each recipient's outcome
//! is logged with `relay=SERVICE`.

mod attrs;
mod deliver;

use std::sync::{Arc, OnceLock};

/// The service's master.cf arguments, for the agent a reload builds.
static ARGS: OnceLock<Vec<String>> = OnceLock::new();

/// The service's attributes, read at its first request, as Postfix reads
/// them: bad ones stop the process (master throttles it, mail waits), and a
/// service nothing is routed to (Debian's master.cf names users that may
/// not exist) never complains.
fn agent(cfg: Arc<pfx_config::Config>) -> Result<deliver::Agent, pfx_config::BuildError> {
    let service = cfg.raw("service_name").unwrap_or_default();
    deliver::Agent::new(&cfg, &service, ARGS.get().map_or(&[], Vec::as_slice))
        .map_err(|e| pfx_maillog::fatal(e))
}

fn main() {
    pfx_server::run("pipe", |ctx, endpoint| async move {
        let _ = ARGS.set(ctx.args.clone());
        pfx_server::serve_deliveries(
            &ctx,
            endpoint,
            pfx_server::PerConfig::default(),
            agent,
            |agent, req| async move { deliver::request(&agent, &req).await },
        )
        .await
    })
}
