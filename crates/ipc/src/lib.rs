//! IPC between postfix-rs daemons over Unix stream sockets.
//!
//! Each frame is a 4-byte big-endian length followed by that many bytes of a
//! bincode-2 encoded, serde-derived message ([`codec`] is the only place that
//! knows the encoding, so it can be swapped). Frames longer than the
//! connection's limit are refused before anything is allocated; a frame that
//! does not decode exactly (trailing bytes included) is an error. Either error
//! ends that connection only: the caller logs it and goes on serving others.
//!
//! Every conversation opens with a [`Hello`] from each side naming the protocol
//! version and the conversation, so a mismatched peer is refused at once.

pub mod client;
pub mod codec;
pub mod proto;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bump whenever any message type that crosses a socket changes.
pub const PROTOCOL_VERSION: u32 = 2;

/// The default largest frame: message bodies travel in chunks far below this.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// What went wrong on a connection. None of these is fatal to a daemon.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("malformed message: {0}")]
    Decode(String),
    #[error("peer closed the connection")]
    Closed,
    #[error("protocol mismatch: we speak {ours}, peer speaks {theirs}")]
    Mismatch { ours: String, theirs: String },
}

/// The first message each side sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    pub conversation: String,
}

/// A framed, typed connection.
#[derive(Debug)]
pub struct Channel<S> {
    stream: S,
    max_frame: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Channel<S> {
    /// Wraps a connected stream with the default frame limit.
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            max_frame: DEFAULT_MAX_FRAME,
        }
    }

    /// Changes the largest frame this side accepts.
    pub fn with_max_frame(mut self, max: usize) -> Self {
        self.max_frame = max;
        self
    }

    /// Gives the stream back.
    pub fn into_inner(self) -> S {
        self.stream
    }

    /// Sends one message as one frame.
    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), Error> {
        let body = codec::encode(msg)?;
        if body.len() > self.max_frame {
            return Err(Error::TooLarge {
                len: body.len(),
                max: self.max_frame,
            });
        }
        let len = u32::try_from(body.len()).map_err(|_| Error::TooLarge {
            len: body.len(),
            max: self.max_frame,
        })?;
        let mut frame = Vec::with_capacity(4 + body.len());
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&body);
        self.stream.write_all(&frame).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Receives one message; `Ok(None)` when the peer closed cleanly between frames.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, Error> {
        let mut len = [0u8; 4];
        match self.stream.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > self.max_frame {
            return Err(Error::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::Closed
            } else {
                e.into()
            }
        })?;
        codec::decode(&body).map(Some)
    }

    /// Receives one message; a closed connection is an error here.
    pub async fn expect<T: DeserializeOwned>(&mut self) -> Result<T, Error> {
        self.recv().await?.ok_or(Error::Closed)
    }

    /// Exchanges [`Hello`]s: both sides send theirs, then check the peer's.
    pub async fn handshake(&mut self, conversation: &str) -> Result<(), Error> {
        let ours = Hello {
            version: PROTOCOL_VERSION,
            conversation: conversation.to_owned(),
        };
        self.send(&ours).await?;
        let theirs: Hello = self.expect().await?;
        if theirs != ours {
            return Err(Error::Mismatch {
                ours: format!("{} v{}", ours.conversation, ours.version),
                theirs: format!("{} v{}", theirs.conversation, theirs.version),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Msg {
        Ping(u32),
        Text(String),
        Chunk(Vec<u8>),
    }

    #[tokio::test]
    async fn messages_round_trip_after_handshake() {
        let (a, b) = duplex(1 << 16);
        let (mut a, mut b) = (Channel::new(a), Channel::new(b));
        let (ra, rb) = tokio::join!(a.handshake("test"), b.handshake("test"));
        ra.unwrap();
        rb.unwrap();
        for m in [
            Msg::Ping(7),
            Msg::Text("héllo".into()),
            Msg::Chunk(vec![0, 255, 13, 10]),
        ] {
            a.send(&m).await.unwrap();
            assert_eq!(b.expect::<Msg>().await.unwrap(), m);
        }
        drop(a);
        assert!(b.recv::<Msg>().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn handshake_refuses_other_conversations() {
        let (a, b) = duplex(1024);
        let (mut a, mut b) = (Channel::new(a), Channel::new(b));
        let (ra, rb) = tokio::join!(a.handshake("cleanup"), b.handshake("qmgr"));
        assert!(matches!(ra, Err(Error::Mismatch { .. })));
        assert!(matches!(rb, Err(Error::Mismatch { .. })));
    }

    #[tokio::test]
    async fn oversized_length_is_refused_without_reading_the_body() {
        let (mut raw, b) = duplex(1024);
        let mut b = Channel::new(b).with_max_frame(100);
        raw.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        assert!(matches!(
            b.recv::<Msg>().await,
            Err(Error::TooLarge { len, max: 100 }) if len == u32::MAX as usize
        ));
    }

    #[tokio::test]
    async fn garbage_and_truncated_frames_are_errors_not_panics() {
        // Deterministic pseudo-random garbage of many lengths.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for n in 0..300usize {
            let (mut raw, b) = duplex(4096);
            let mut b = Channel::new(b);
            let mut junk = Vec::with_capacity(n);
            for _ in 0..n {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                junk.push(seed as u8);
            }
            let mut frame = (junk.len() as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(&junk);
            raw.write_all(&frame).await.unwrap();
            drop(raw);
            // Any outcome but a panic is fine; most are decode errors.
            let _ = b.recv::<Msg>().await;
            let _ = b.recv::<Hello>().await;
        }
        // A length that promises more than arrives.
        let (mut raw, b) = duplex(1024);
        let mut b = Channel::new(b);
        raw.write_all(&[0, 0, 0, 50, 1, 2, 3]).await.unwrap();
        drop(raw);
        assert!(matches!(b.recv::<Msg>().await, Err(Error::Closed)));
    }

    #[tokio::test]
    async fn trailing_bytes_after_a_message_are_rejected() {
        let (mut raw, b) = duplex(1024);
        let mut b = Channel::new(b);
        let mut body = codec::encode(&Msg::Ping(1)).unwrap();
        body.push(0);
        raw.write_all(&(body.len() as u32).to_be_bytes())
            .await
            .unwrap();
        raw.write_all(&body).await.unwrap();
        assert!(matches!(b.recv::<Msg>().await, Err(Error::Decode(m)) if m.contains("trailing")));
    }
}
