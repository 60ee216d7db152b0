//! The two serving loops daemons use: connections (smtpd, cleanup, agents) and
//! triggers (qmgr, pickup: one byte per request, as Postfix's trigger_server).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::warn;

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
    H: Fn(Arc<pfx_config::Config>, pfx_ipc::Channel<tokio::net::UnixStream>) -> Fut
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
            let mut ch = pfx_ipc::Channel::new(s);
            match ch.handshake(conversation).await {
                Ok(()) => handler(cfg, ch).await,
                Err(e) => warn!("{conversation} handshake: {e}"),
            }
        }
    })
    .await
}

/// Reads trigger requests and calls `handler` with the bytes of each: one
/// byte per request (`W` for master's wakeup, others defined by the
/// service), which a service may follow with its own argument. On a Unix
/// socket each connection carries one request; on a FIFO they arrive in a
/// stream, each write in one piece.
pub async fn serve_triggers<H>(ctx: &Context, endpoint: Endpoint, handler: H) -> Result<(), String>
where
    H: Fn(&[u8]) + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    match endpoint {
        Endpoint::Fifo(fd) => {
            let mut rx = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
                .map_err(|e| format!("trigger fifo: {e}"))?;
            let mut buf = [0u8; 1024];
            loop {
                let n = tokio::select! {
                    r = rx.read(&mut buf) => r.map_err(|e| format!("trigger fifo: {e}"))?,
                    _ = ctx.shutdown() => return Ok(()),
                };
                if n > 0 {
                    ctx.mark_used().await;
                }
                handler(&buf[..n]);
            }
        }
        Endpoint::Unix(_) => {
            serve_stream(ctx, endpoint, move |stream| {
                let handler = handler.clone();
                async move {
                    let Stream::Unix(mut s) = stream else { return };
                    let mut buf = Vec::new();
                    // A trigger client writes a few bytes and closes; do not wait on a stuck one.
                    let mut limited = (&mut s).take(1024);
                    let read = limited.read_to_end(&mut buf);
                    if tokio::time::timeout(Duration::from_secs(10), read)
                        .await
                        .is_ok()
                    {
                        handler(&buf);
                    }
                }
            })
            .await
        }
        _ => Err("trigger service needs a unix or fifo endpoint".into()),
    }
}

/// Serves qmgr's delivery requests: the whole of a delivery agent's (local,
/// smtp) service loop. `state` is built once per configuration (tables,
/// settings); `deliver` answers one request with a status per recipient.
/// qmgr reuses its connections, so each serves requests until qmgr closes it.
pub async fn serve_deliveries<S, B, D, Fut>(
    ctx: &Context,
    endpoint: Endpoint,
    state: B,
    deliver: D,
) -> Result<(), String>
where
    S: Send + Sync + 'static,
    B: Fn(Arc<pfx_config::Config>) -> Result<S, String> + Copy + Send + Sync + 'static,
    D: Fn(Arc<S>, pfx_ipc::proto::DeliveryRequest) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Vec<pfx_ipc::proto::DeliveryStatus>> + Send,
{
    use pfx_ipc::proto::{conversation, DeliveryReply, DeliveryRequest};
    let states: Arc<crate::PerConfig<S>> = Arc::default();
    serve_channels(ctx, endpoint, conversation::DELIVER, move |cfg, mut ch| {
        let states = states.clone();
        async move {
            let state = match states.get(cfg, state) {
                Ok(s) => s,
                Err(e) => return warn!("configuration: {e}"),
            };
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
    })
    .await
}
