//! Connecting to a service and sending a trigger.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

use crate::{Channel, Error};

/// How long a connection attempt to a local service may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects to the service socket at `path`; errors name it.
async fn dial(path: &Path) -> Result<UnixStream, Error> {
    let named = |kind, what: String| {
        Error::Io(std::io::Error::new(
            kind,
            format!("connect to {}: {what}", path.display()),
        ))
    };
    tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(path))
        .await
        .map_err(|_| named(std::io::ErrorKind::TimedOut, "timed out".into()))?
        .map_err(|e| named(e.kind(), e.to_string()))
}

/// Connects to the service socket at `path` and does the handshake.
pub async fn connect(path: &Path, conversation: &str) -> Result<Channel<UnixStream>, Error> {
    let mut ch = Channel::new(dial(path).await?);
    ch.handshake(conversation).await?;
    Ok(ch)
}

/// Asks the flush service under `queue_dir` to deliver deferred mail now
/// (postqueue -i/-s, smtpd's ETRN).
pub async fn flush(
    queue_dir: &Path,
    req: &crate::proto::FlushRequest,
) -> Result<crate::proto::FlushReply, Error> {
    use crate::proto::{conversation, endpoint};
    let mut ch = connect(&queue_dir.join(endpoint::FLUSH), conversation::FLUSH).await?;
    ch.send(req).await?;
    ch.expect().await
}

/// Sends one trigger byte to a trigger service (qmgr's `I`, `F`...) on a
/// connection of its own. A lost trigger only delays work: services also
/// scan on their own timers.
pub async fn trigger(path: &Path, byte: u8) -> Result<(), Error> {
    let mut s = dial(path).await?;
    s.write_all(&[byte]).await?;
    s.shutdown().await?;
    Ok(())
}

/// A connection to a trigger service kept for many requests: cleanup sends
/// qmgr one per message, and a connection per message cost both of them
/// more than the request. When the service went away (restarted), the next
/// request connects again.
#[derive(Debug)]
pub struct Triggers {
    path: PathBuf,
    conn: tokio::sync::Mutex<Option<UnixStream>>,
}

impl Triggers {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// Sends one request. A lost trigger only delays work: services also
    /// scan on their own timers.
    pub async fn send(&self, request: &[u8]) -> Result<(), Error> {
        let mut conn = self.conn.lock().await;
        if let Some(s) = conn.as_mut() {
            if write_within(s, request).await.is_ok() {
                return Ok(());
            }
        }
        *conn = None;
        let mut s = dial(&self.path).await?;
        write_within(&mut s, request).await?;
        *conn = Some(s);
        Ok(())
    }
}

/// Writes a request; a service that reads nothing for this long is stuck.
async fn write_within(s: &mut UnixStream, request: &[u8]) -> Result<(), Error> {
    tokio::time::timeout(CONNECT_TIMEOUT, s.write_all(request))
        .await
        .map_err(|_| Error::Io(std::io::ErrorKind::TimedOut.into()))??;
    Ok(())
}

/// Submits a whole message to cleanup and returns its queue ID once it is
/// durable. `content` yields the message in chunks (LF line ends).
pub async fn submit(
    cleanup: &Path,
    sender: &str,
    recipients: Vec<(String, Option<String>)>,
    attrs: Vec<(String, String)>,
    origin: crate::proto::Origin,
    content: impl IntoIterator<Item = std::io::Result<Vec<u8>>>,
) -> Result<String, String> {
    let msg = Submission {
        sender,
        recipients,
        attrs,
        origin,
    };
    submit_noting(cleanup, msg, content, |_| {}).await
}

/// The envelope of a message for [`submit_noting`].
pub struct Submission<'a> {
    pub sender: &'a str,
    pub recipients: Vec<(String, Option<String>)>,
    pub attrs: Vec<(String, String)>,
    pub origin: crate::proto::Origin,
}

/// [`submit`], calling `started` with the queue ID as soon as cleanup has
/// opened the queue file (pickup logs it then, before cleanup's own lines).
pub async fn submit_noting(
    cleanup: &Path,
    msg: Submission<'_>,
    content: impl IntoIterator<Item = std::io::Result<Vec<u8>>>,
    started: impl FnOnce(&str),
) -> Result<String, String> {
    let Submission {
        sender,
        recipients,
        attrs,
        origin,
    } = msg;
    use crate::proto::{conversation, CleanupReply, CleanupRequest};
    let mut ch = connect(cleanup, conversation::CLEANUP)
        .await
        .map_err(|e| e.to_string())?;
    ch.send(&CleanupRequest::Begin {
        sender: sender.to_owned(),
        recipients,
        attrs,
        origin,
    })
    .await
    .map_err(|e| e.to_string())?;
    match ch
        .expect::<CleanupReply>()
        .await
        .map_err(|e| e.to_string())?
    {
        CleanupReply::Started { queue_id } => started(&queue_id),
        other => return Err(format!("cleanup: {other:?}")),
    }
    for chunk in content {
        match chunk {
            Ok(c) => ch
                .send(&CleanupRequest::Content(c))
                .await
                .map_err(|e| e.to_string())?,
            Err(e) => {
                let _ = ch.send(&CleanupRequest::Abort).await;
                return Err(format!("read message: {e}"));
            }
        }
    }
    ch.send(&CleanupRequest::End)
        .await
        .map_err(|e| e.to_string())?;
    match ch
        .expect::<CleanupReply>()
        .await
        .map_err(|e| e.to_string())?
    {
        CleanupReply::Committed { queue_id } => Ok(queue_id),
        CleanupReply::Failed { reason, .. } => Err(reason),
        CleanupReply::TooBig => Err("message file too big".into()),
        CleanupReply::TooManyHops => Err("too many hops".into()),
        other => Err(format!("cleanup: {other:?}")),
    }
}

/// Splits a reader into [`crate::proto::CHUNK`]-sized pieces for [`submit`].
pub fn chunks(mut r: impl std::io::Read) -> impl Iterator<Item = std::io::Result<Vec<u8>>> {
    std::iter::from_fn(move || {
        let mut buf = vec![0u8; crate::proto::CHUNK];
        let mut n = 0;
        while n < buf.len() {
            match r.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Some(Err(e)),
            }
        }
        (n > 0).then(|| {
            buf.truncate(n);
            Ok(buf)
        })
    })
}
