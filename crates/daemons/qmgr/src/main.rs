//! qmgr(8): moves mail from `incoming/` and `deferred/` into `active/`,
//! hands recipients to delivery agents, records their outcome, and then
//! removes the message, defers it with backoff, or has bounce return it.
//!
//! One scheduler task owns all state; scans happen on triggers (`I`, `F`
//! flush, `D`, master's `W`) and every `queue_run_delay`, so a lost trigger
//! only delays mail. cleanup names the message it committed (`N` + queue
//! ID, newline), on one connection it keeps for all its messages: qmgr
//! takes that one file without scanning `incoming/`. On start, whatever a
//! crash left in `active/` is taken back first. `hold/` is never looked at.
//! Runs on one thread: its work is short file operations and messages.

mod agents;
mod finish;
mod plan;
mod route;
mod scan;
mod scheduler;
mod settings;
mod store;
#[cfg(test)]
mod tests;
mod trigger;

use std::path::PathBuf;

use scheduler::{Event, Scheduler};

fn main() {
    pfx_server::run_with(
        "qmgr",
        pfx_server::Threads::One,
        |ctx, endpoint| async move {
            let queue_dir = PathBuf::from(
                ctx.initial_config
                    .get("queue_directory")
                    .unwrap_or_else(|e| pfx_maillog::fatal(e)),
            );
            let store = store::Files::new(queue_dir.clone());
            let agents = agents::Daemons::new(queue_dir);
            let scheduler = Scheduler::new(ctx.config.clone(), store, agents)
                .unwrap_or_else(|e| pfx_maillog::fatal(e));
            let triggers = scheduler.events();
            let sched = tokio::spawn(scheduler.run());
            let served = pfx_server::serve_triggers(&ctx, endpoint, move |bytes, closed| {
                let (requests, used) = trigger::parse(bytes, closed);
                for r in requests {
                    let _ = triggers.send(Event::Trigger(r));
                }
                used
            })
            .await;
            sched.abort();
            served
        },
    )
}
