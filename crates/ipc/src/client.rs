//! Connecting to a service and sending a trigger.

use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

use crate::{Channel, Error};

/// How long a connection attempt to a local service may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects to the service socket at `path` and does the handshake.
pub async fn connect(path: &Path, conversation: &str) -> Result<Channel<UnixStream>, Error> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(path))
        .await
        .map_err(|_| Error::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("connect to {}: timed out", path.display()))))?
        .map_err(|e| Error::Io(std::io::Error::new(e.kind(), format!("connect to {}: {e}", path.display()))))?;
    let mut ch = Channel::new(stream);
    ch.handshake(conversation).await?;
    Ok(ch)
}

/// Sends one trigger byte to a trigger service (qmgr's `I`, `F`...). A lost
/// trigger only delays work: services also scan on their own timers.
pub async fn trigger(path: &Path, byte: u8) -> Result<(), Error> {
    let mut s = tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(path))
        .await
        .map_err(|_| Error::Io(std::io::ErrorKind::TimedOut.into()))??;
    s.write_all(&[byte]).await?;
    s.shutdown().await?;
    Ok(())
}
