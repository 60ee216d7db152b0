//! The two serving loops daemons use: connections (smtpd, cleanup, agents) and
//! triggers (qmgr, pickup: one byte per request, as Postfix's trigger_server).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::warn;

use pfx_ipc::proto::conversation::DELIVER;

use crate::{Context, Endpoint};

/// One accepted connection.
#[derive(Debug)]
pub enum Stream {
    Tcp(tokio::net::TcpStream, std::net::SocketAddr),
    Unix(tokio::net::UnixStream),
}

/// Accepts connections on a stream endpoint and runs `handler` for each, at
/// most `ctx.max_sessions` at once (further clients wait in the listen
/// backlog, as with Postfix's maxproc). Returns after shutdown, once the
/// sessions in progress have finished.
pub async fn serve_stream<H, Fut>(
    ctx: &Context,
    endpoint: Endpoint,
    handler: H,
) -> Result<(), String>
where
    H: Fn(Stream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let limit = match ctx.max_sessions {
        0 => Semaphore::MAX_PERMITS,
        n => n,
    };
    let slots = Arc::new(Semaphore::new(limit));
    let handler = Arc::new(handler);
    let mut sessions = JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.map_err(|e| e.to_string())?,
            _ = ctx.shutdown() => break,
        };
        let accepted = tokio::select! {
            a = accept(&endpoint) => a,
            _ = ctx.shutdown() => break,
        };
        let stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        ctx.mark_used().await;
        let handler = handler.clone();
        sessions.spawn(async move {
            handler(stream).await;
            drop(permit);
        });
        // Reap finished sessions so the set does not grow without bound.
        while sessions.try_join_next().is_some() {}
    }
    while sessions.join_next().await.is_some() {}
    Ok(())
}

async fn accept(endpoint: &Endpoint) -> std::io::Result<Stream> {
    match endpoint {
        Endpoint::Tcp(l) => l.accept().await.map(|(s, a)| Stream::Tcp(s, a)),
        Endpoint::Unix(l) => l.accept().await.map(|(s, _)| Stream::Unix(s)),
        _ => Err(std::io::Error::other("not a stream endpoint")),
    }
}

/// Accepts connections on a Unix endpoint, exchanges the `conversation`
/// handshake (a peer that fails it is logged and dropped) and runs
/// `handler` with the current configuration and the connected channel.
pub async fn serve_channels<H, Fut>(
    ctx: &Context,
    endpoint: Endpoint,
    conversation: &'static str,
    handler: H,
) -> Result<(), String>
where
    H: Fn(Arc<pfx_config::Config>, pfx_ipc::Channel<pfx_ipc::Socket>) -> Fut
        + Send
        + Sync
        + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let config = ctx.config.clone();
    let handler = Arc::new(handler);
    serve_stream(ctx, endpoint, move |stream| {
        let cfg = config.borrow().clone();
        let handler = handler.clone();
        async move {
            let Stream::Unix(s) = stream else { return };
            let s = match pfx_ipc::Socket::from_tokio(s) {
                Ok(s) => s,
                Err(e) => return warn!("{conversation}: {e}"),
            };
            let mut ch = pfx_ipc::Channel::new(s);
            match ch.handshake(conversation).await {
                Ok(()) => handler(cfg, ch).await,
                Err(e) => warn!("{conversation} handshake: {e}"),
            }
        }
    })
    .await
}

/// At most this many trigger clients at once. maxproc counts trigger
/// servers (qmgr has one), not their clients; one of these is cleanup's
/// connection, which stays open.
const TRIGGER_CLIENTS: usize = 64;
/// A trigger client must send its first request within this, or is dropped.
const TRIGGER_FIRST_REQUEST: Duration = Duration::from_secs(10);
/// Bytes a request that is still incomplete may have.
const TRIGGER_MAX_PENDING: usize = 1024;

/// Reads trigger requests and calls `handler` with them: one byte per
/// request (`W` for master's wakeup, others defined by the service), which a
/// service may follow with its own argument. A client may send one request
/// and close, as Postfix's triggers do, or keep its connection for many
/// (cleanup does, one request per message); on a FIFO they all arrive in
/// one stream. `handler` gets the bytes read and not yet used, and whether
/// the client has closed, and returns how many bytes it used: a request
/// the read cut short stays for the next call.
pub async fn serve_triggers<H>(ctx: &Context, endpoint: Endpoint, handler: H) -> Result<(), String>
where
    H: Fn(&[u8], bool) -> usize + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    match endpoint {
        Endpoint::Fifo(fd) => {
            let mut rx = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
                .map_err(|e| format!("trigger fifo: {e}"))?;
            let mut pending = Pending::default();
            let mut buf = [0u8; 1024];
            loop {
                let n = tokio::select! {
                    r = rx.read(&mut buf) => r.map_err(|e| format!("trigger fifo: {e}"))?,
                    _ = ctx.shutdown() => return Ok(()),
                };
                if n > 0 {
                    ctx.mark_used().await;
                }
                // Master holds the FIFO open for writing: no end of file.
                pending.feed(&buf[..n], false, &*handler);
            }
        }
        Endpoint::Unix(_) => {
            let mut clients = ctx.clone();
            clients.max_sessions = TRIGGER_CLIENTS;
            let used = ctx.clone();
            serve_stream(&clients, endpoint, move |stream| {
                let handler = handler.clone();
                let used = used.clone();
                async move {
                    let Stream::Unix(mut s) = stream else { return };
                    let mut pending = Pending::default();
                    let mut buf = [0u8; 1024];
                    let mut served = false;
                    loop {
                        let read = s.read(&mut buf);
                        // Do not wait forever on a client that never says anything.
                        let n = if served {
                            read.await.ok()
                        } else {
                            tokio::time::timeout(TRIGGER_FIRST_REQUEST, read)
                                .await
                                .ok()
                                .and_then(Result::ok)
                        };
                        let Some(n) = n else { return };
                        if n > 0 {
                            used.mark_used().await;
                        }
                        served |= pending.feed(&buf[..n], n == 0, &*handler);
                        if n == 0 || pending.0.len() > TRIGGER_MAX_PENDING {
                            return;
                        }
                    }
                }
            })
            .await
        }
        _ => Err("trigger service needs a unix or fifo endpoint".into()),
    }
}

/// Trigger bytes read but not yet used.
#[derive(Default)]
struct Pending(Vec<u8>);

impl Pending {
    /// Adds what was read and hands the handler what it can use; says
    /// whether it used anything.
    fn feed(&mut self, read: &[u8], closed: bool, handler: &dyn Fn(&[u8], bool) -> usize) -> bool {
        self.0.extend_from_slice(read);
        if self.0.is_empty() {
            return false;
        }
        let used = handler(&self.0, closed).min(self.0.len());
        self.0.drain(..used);
        used > 0
    }
}

/// Builds a delivery agent's state (tables, settings) from a configuration.
pub trait BuildState<S>:
    Fn(Arc<pfx_config::Config>) -> Result<S, pfx_config::BuildError> + Copy + Send + Sync + 'static
{
}

impl<S, T> BuildState<S> for T where
    T: Fn(Arc<pfx_config::Config>) -> Result<S, pfx_config::BuildError>
        + Copy
        + Send
        + Sync
        + 'static
{
}

/// Serves qmgr's delivery requests: the whole of a delivery agent's (local,
/// smtp) service loop. `state` is built once per configuration (tables,
/// settings) into `states` (which may hold one built before a chroot);
/// `deliver` answers one request with a status per recipient.
/// qmgr reuses its connections, so each serves requests until qmgr closes it.
pub async fn serve_deliveries<S, B, D, Fut>(
    ctx: &Context,
    endpoint: Endpoint,
    states: crate::PerConfig<S>,
    state: B,
    deliver: D,
) -> Result<(), String>
where
    S: Send + Sync + 'static,
    B: BuildState<S>,
    D: Fn(Arc<S>, pfx_ipc::proto::DeliveryRequest) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Vec<pfx_maillog::delivery::Outcome>> + Send,
{
    let states = Arc::new(states);
    serve_channels(ctx, endpoint, DELIVER, move |cfg, mut ch| {
        let states = states.clone();
        async move {
            match states.get(cfg, state) {
                Ok(state) => answer(&mut ch, state, deliver).await,
                Err(e) => warn!("configuration: {e}"),
            }
        }
    })
    .await
}

/// [`serve_deliveries`] for agents whose work is file work (local,
/// virtual): each of qmgr's connections gets a thread of its own, with a
/// runtime of its own, and `deliver` may block it. A delivery then costs
/// its thread one wake-up; handing the file work to the blocking pool and
/// back cost the daemon's thread and a pool thread four.
pub async fn serve_deliveries_on_threads<S, B, D, Fut>(
    ctx: &Context,
    endpoint: Endpoint,
    states: crate::PerConfig<S>,
    state: B,
    deliver: D,
) -> Result<(), String>
where
    S: Send + Sync + 'static,
    B: BuildState<S>,
    D: Fn(Arc<S>, pfx_ipc::proto::DeliveryRequest) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Vec<pfx_maillog::delivery::Outcome>>,
{
    let states = Arc::new(states);
    serve_channels(ctx, endpoint, DELIVER, move |cfg, ch| {
        let states = states.clone();
        async move {
            let state = match states.get(cfg, state) {
                Ok(s) => s,
                Err(e) => return warn!("configuration: {e}"),
            };
            // Out of this runtime, into the connection's own.
            let ch = match ch.map_stream(pfx_ipc::Socket::into_std) {
                Ok(ch) => ch,
                Err(e) => return warn!("delivery connection: {e}"),
            };
            let served = tokio::task::spawn_blocking(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(async move {
                        let mut ch = ch.map_stream(pfx_ipc::Socket::new)?;
                        answer(&mut ch, state, deliver).await;
                        Ok::<(), std::io::Error>(())
                    })
            })
            .await;
            match served {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!("delivery connection: {e}"),
                Err(e) => warn!("delivery thread: {e}"),
            }
        }
    })
    .await
}

/// Answers qmgr's requests on one connection until qmgr closes it.
async fn answer<S, D, Fut>(ch: &mut pfx_ipc::Channel<pfx_ipc::Socket>, state: Arc<S>, deliver: D)
where
    D: Fn(Arc<S>, pfx_ipc::proto::DeliveryRequest) -> Fut,
    Fut: Future<Output = Vec<pfx_maillog::delivery::Outcome>>,
{
    use pfx_ipc::proto::{DeliveryReply, DeliveryRequest};
    loop {
        let req: DeliveryRequest = match ch.recv().await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => return warn!("read delivery request: {e}"),
        };
        let queue_id = req.queue_id.clone();
        let statuses = deliver(state.clone(), req).await;
        if let Err(e) = ch.send(&DeliveryReply { statuses }).await {
            return warn!("{queue_id}: reply to qmgr: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_bytes_a_handler_leaves_wait_for_the_next_read() {
        let seen = std::sync::Mutex::new(Vec::new());
        // Uses whole lines only, the rest once the client has closed.
        let handler = |b: &[u8], closed: bool| {
            let used = if closed {
                b.len()
            } else {
                b.iter().rposition(|&c| c == b'\n').map_or(0, |i| i + 1)
            };
            seen.lock().unwrap().push(b[..used].to_vec());
            used
        };
        let mut p = Pending::default();
        assert!(!p.feed(b"ab", false, &handler));
        assert!(p.feed(b"c\nd", false, &handler));
        assert!(p.feed(b"", true, &handler));
        assert!(!p.feed(b"", true, &handler), "nothing left to hand over");
        assert_eq!(
            *seen.lock().unwrap(),
            [b"".to_vec(), b"abc\n".to_vec(), b"d".to_vec()]
        );
    }
}
