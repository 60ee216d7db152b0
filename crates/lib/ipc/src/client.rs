//! Connecting to a service and sending a trigger.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::{Channel, Error, Socket};

/// How long a connection attempt to a local service may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects to the service socket at `path`; errors name it.
async fn dial(path: &Path) -> Result<Socket, Error> {
    let named = |kind, what: String| {
        Error::Io(std::io::Error::new(
            kind,
            format!("connect to {}: {what}", path.display()),
        ))
    };
    tokio::time::timeout(CONNECT_TIMEOUT, Socket::connect(path))
        .await
        .map_err(|_| named(std::io::ErrorKind::TimedOut, "timed out".into()))?
        .map_err(|e| named(e.kind(), e.to_string()))
}

/// Connects to the service socket at `path` and does the handshake.
pub async fn connect(path: &Path, conversation: &str) -> Result<Channel<Socket>, Error> {
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
    conn: tokio::sync::Mutex<Option<Socket>>,
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
async fn write_within(s: &mut Socket, request: &[u8]) -> Result<(), Error> {
    tokio::time::timeout(CONNECT_TIMEOUT, s.write_all(request))
        .await
        .map_err(|_| Error::Io(std::io::ErrorKind::TimedOut.into()))??;
    Ok(())
}

/// Splits a reader into [`crate::proto::CHUNK`]-sized pieces for
/// [`crate::cleanup::Cleanup::submit`].
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
