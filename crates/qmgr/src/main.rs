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

mod route;
mod scheduler;

use tokio::sync::mpsc;

fn main() {
    pfx_server::run_with(
        "qmgr",
        pfx_server::Threads::One,
        |ctx, endpoint| async move {
            let (tx, rx) = mpsc::unbounded_channel();
            let triggers = tx.clone();
            let scheduler = scheduler::Scheduler::new(ctx.config.clone(), tx, rx);
            let sched = tokio::spawn(scheduler.run());
            let served = pfx_server::serve_triggers(&ctx, endpoint, move |bytes, closed| {
                let (events, used) = scheduler::Event::from_trigger(bytes, closed);
                for event in events {
                    let _ = triggers.send(event);
                }
                used
            })
            .await;
            sched.abort();
            served
        },
    )
}
