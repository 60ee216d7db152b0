//! qmgr's conversations with other daemons: delivery agents (one request,
//! one answer, on connections kept per transport) and bounce.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pfx_ipc::proto::{
    self, conversation, BounceReply, BounceRequest, DeliveryReply, DeliveryRequest, Notice,
};
use pfx_maillog::delivery::Outcome;
use pfx_queue::QueueName;
use tracing::warn;

/// How long an agent may take over one request before qmgr gives up on it.
const AGENT_TIMEOUT: Duration = Duration::from_secs(3600);

/// What qmgr asks of other daemons.
pub(crate) trait Agents: Send + Sync + 'static {
    /// Hands `req` to the transport's delivery agent. The answer: one
    /// status per recipient, and whether the agent logged them itself.
    fn deliver(
        &self,
        transport: &str,
        req: DeliveryRequest,
    ) -> impl Future<Output = (Vec<Outcome>, bool)> + Send + 'static;
    /// Has bounce send the message's sender a notice of `kind` (failed
    /// recipients, deliveries they asked to hear of, or a delay); the
    /// notice's queue ID, if one was sent.
    fn bounce(
        &self,
        id: &str,
        kind: Notice,
    ) -> impl Future<Output = Result<Option<String>, String>> + Send + 'static;
}

type AgentConn = pfx_ipc::Channel<pfx_ipc::Socket>;
type Idle = Mutex<HashMap<PathBuf, Vec<AgentConn>>>;

/// The daemons of the queue at `queue_dir`, on their Unix sockets.
pub(crate) struct Daemons {
    queue_dir: PathBuf,
    /// Idle connections to delivery agents, per socket, for reuse.
    idle: Arc<Idle>,
}

impl Daemons {
    pub(crate) fn new(queue_dir: PathBuf) -> Self {
        Self {
            queue_dir,
            idle: Arc::default(),
        }
    }
}

impl Agents for Daemons {
    fn deliver(
        &self,
        transport: &str,
        req: DeliveryRequest,
    ) -> impl Future<Output = (Vec<Outcome>, bool)> + Send + 'static {
        let socket = proto::transport_socket(&self.queue_dir, transport);
        let idle = self.idle.clone();
        async move {
            let n = req.recipients.len();
            match ask_agent(&idle, &socket, &req).await {
                Ok(r) if r.statuses.len() == n => (r.statuses, true),
                Ok(_) => (vec![unavailable("delivery agent protocol error"); n], false),
                Err(pfx_ipc::Error::Io(e))
                    if e.kind() == std::io::ErrorKind::NotFound
                        || e.kind() == std::io::ErrorKind::ConnectionRefused =>
                {
                    warn!("{}: {e}", req.queue_id);
                    (vec![unavailable("mail transport unavailable"); n], false)
                }
                Err(e) => (
                    vec![unavailable(&format!("delivery agent failed: {e}")); n],
                    false,
                ),
            }
        }
    }

    fn bounce(
        &self,
        id: &str,
        kind: Notice,
    ) -> impl Future<Output = Result<Option<String>, String>> + Send + 'static {
        let socket = self.queue_dir.join(proto::endpoint::BOUNCE);
        let req = BounceRequest {
            queue: QueueName::Active,
            queue_id: id.to_owned(),
            kind,
        };
        async move {
            let mut ch = pfx_ipc::client::connect(&socket, conversation::BOUNCE)
                .await
                .map_err(|e| e.to_string())?;
            ch.send(&req).await.map_err(|e| e.to_string())?;
            match ch
                .expect::<BounceReply>()
                .await
                .map_err(|e| e.to_string())?
            {
                BounceReply::Sent { notice_id } => Ok(notice_id),
                BounceReply::Failed { reason } => Err(reason),
            }
        }
    }
}

/// Sends a request to a delivery agent and waits for its answer, on an idle
/// connection when there is one. A reused connection found closed (the agent
/// restarted between requests) is replaced by a fresh one, once.
async fn ask_agent(
    idle: &Idle,
    socket: &Path,
    req: &DeliveryRequest,
) -> Result<DeliveryReply, pfx_ipc::Error> {
    async fn attempt(
        mut ch: AgentConn,
        req: &DeliveryRequest,
    ) -> Result<(Option<DeliveryReply>, AgentConn), pfx_ipc::Error> {
        ch.send(req).await?;
        let reply = tokio::time::timeout(AGENT_TIMEOUT, ch.recv::<DeliveryReply>())
            .await
            .map_err(|_| pfx_ipc::Error::Io(std::io::ErrorKind::TimedOut.into()))??;
        Ok((reply, ch))
    }
    let fresh = || pfx_ipc::client::connect(socket, conversation::DELIVER);
    let pooled = idle
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_mut(socket)
        .and_then(Vec::pop);
    let result = match pooled {
        Some(ch) => match attempt(ch, req).await {
            Ok((Some(r), ch)) => Ok((Some(r), ch)),
            Ok((None, _)) | Err(_) => attempt(fresh().await?, req).await,
        },
        None => attempt(fresh().await?, req).await,
    };
    match result? {
        (Some(reply), ch) => {
            idle.lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(socket.to_owned())
                .or_default()
                .push(ch);
            Ok(reply)
        }
        (None, _) => Err(pfx_ipc::Error::Closed),
    }
}

/// A deferral for a request no agent answered.
fn unavailable(reason: &str) -> Outcome {
    Outcome::failed(true, "4.3.0", "none", reason)
}
