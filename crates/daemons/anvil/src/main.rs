//! anvil(8): what smtpd's client limits count, for every smtpd process of
//! the instance at once: the connections each client has open to each
//! service, and its rates of connections, messages, recipients, new TLS
//! sessions and AUTH commands per `anvil_rate_time_unit` (see [`table`]).
//! smtpd decides; anvil only counts.
//!
//! Each smtpd process keeps one connection here for all its sessions, one
//! request at a time; when it closes, the connections registered over it
//! are taken back. Every `anvil_status_update_time`, and when it stops,
//! anvil logs the peaks as Postfix's `statistics:` lines. As Postfix's
//! anvil, it stops at `postfix reload` (so those lines are logged then) and
//! its successor starts with empty tables; smtpd restarts at a reload too.

mod table;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pfx_ipc::proto::{conversation, AnvilRequest};
use pfx_ipc::Channel;
use table::{StreamId, Table};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tracing::{info, warn};

fn main() {
    pfx_server::restart_on_reload();
    pfx_server::run_with(
        "anvil",
        pfx_server::Threads::One,
        |ctx, endpoint| async move {
            let cfg = ctx.config();
            let unit = positive(&cfg, "anvil_rate_time_unit")?;
            let every = positive(&cfg, "anvil_status_update_time")?;
            let table = Arc::new(Mutex::new(Table::new(unit)));
            // master.cf's process limit (1) counts anvil processes, not the
            // smtpd processes one serves.
            let mut clients = ctx.clone();
            clients.max_sessions = 0;
            let next_stream = AtomicU64::new(1);
            let serving = {
                let table = table.clone();
                let stop = ctx.clone();
                pfx_server::serve_channels(&clients, endpoint, conversation::ANVIL, move |_, ch| {
                    let table = table.clone();
                    let stop = stop.clone();
                    let id = next_stream.fetch_add(1, Ordering::Relaxed);
                    async move { serve_client(&table, id, ch, stop.shutdown()).await }
                })
            };
            let chores = async {
                let mut report = tokio::time::interval_at(Instant::now() + every, every);
                let mut sweep = tokio::time::interval_at(Instant::now() + unit, unit);
                loop {
                    tokio::select! {
                        _ = report.tick() => log_statistics(&table),
                        _ = sweep.tick() => lock(&table).expire(Instant::now()),
                    }
                }
            };
            let result = tokio::select! {
                r = serving => r,
                () = chores => Ok(()),
            };
            log_statistics(&table);
            result
        },
    )
}

/// A time parameter that must be at least a second, as Postfix requires.
fn positive(cfg: &pfx_config::Config, name: &str) -> Result<Duration, String> {
    match cfg.time(name) {
        Ok(d) if d >= Duration::from_secs(1) => Ok(d),
        Ok(_) => Err(format!("{name}: must be at least 1s")),
        Err(e) => Err(e.to_string()),
    }
}

fn lock(table: &Mutex<Table>) -> MutexGuard<'_, Table> {
    table.lock().unwrap_or_else(|e| e.into_inner())
}

fn log_statistics(table: &Mutex<Table>) {
    for line in lock(table).statistics() {
        info!("{line}");
    }
}

/// Answers one smtpd's requests until it closes its connection or anvil
/// stops; then takes back the connections it left registered.
async fn serve_client<S: AsyncRead + AsyncWrite + Unpin>(
    table: &Mutex<Table>,
    id: StreamId,
    mut ch: Channel<S>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        let req = tokio::select! {
            r = ch.recv::<AnvilRequest>() => r,
            () = &mut stop => break,
        };
        let req = match req {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => {
                warn!("read request: {e}");
                break;
            }
        };
        let reply = lock(table).handle(id, &req);
        if ch.send(&reply).await.is_err() {
            break;
        }
    }
    lock(table).close_stream(id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use pfx_ipc::proto::{AnvilEvent, AnvilReply};

    fn connect(ident: &str) -> AnvilRequest {
        AnvilRequest {
            event: AnvilEvent::Connect,
            ident: ident.into(),
        }
    }

    #[tokio::test]
    async fn an_smtpd_that_goes_away_gives_its_connections_back() {
        let table = Arc::new(Mutex::new(Table::new(Duration::from_secs(60))));
        let mut smtpds = Vec::new();
        let mut served = Vec::new();
        for id in 1..=2 {
            let (a, b) = tokio::io::duplex(4096);
            let t = table.clone();
            served.push(tokio::spawn(async move {
                serve_client(&t, id, Channel::new(b), std::future::pending()).await
            }));
            smtpds.push(Channel::new(a));
        }
        let mut counts = Vec::new();
        for ch in [0, 0, 1] {
            smtpds[ch].send(&connect("smtp:192.0.2.1")).await.unwrap();
            match smtpds[ch].expect::<AnvilReply>().await.unwrap() {
                AnvilReply::Connected { count, .. } => counts.push(count),
                r => panic!("{r:?}"),
            }
        }
        assert_eq!(counts, [1, 2, 3], "one count across smtpd processes");
        // The first smtpd exits without a disconnect for its two.
        drop(smtpds.remove(0));
        served.remove(0).await.unwrap();
        smtpds[0]
            .send(&AnvilRequest {
                event: AnvilEvent::Lookup,
                ident: "smtp:192.0.2.1".into(),
            })
            .await
            .unwrap();
        match smtpds[0].expect::<AnvilReply>().await.unwrap() {
            AnvilReply::Status(s) => assert_eq!((s.count, s.rate), (1, 3)),
            r => panic!("{r:?}"),
        }
    }

    #[tokio::test]
    async fn a_malformed_request_ends_that_connection_only() {
        use tokio::io::AsyncWriteExt;
        let table = Mutex::new(Table::new(Duration::from_secs(60)));
        let (mut raw, b) = tokio::io::duplex(4096);
        raw.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff])
            .await
            .unwrap();
        serve_client(&table, 1, Channel::new(b), std::future::pending()).await;
        assert_eq!(lock(&table).len(), 0);
    }
}
