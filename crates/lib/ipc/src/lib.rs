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

pub mod anvil;
pub mod cleanup;
pub mod client;
pub mod codec;
pub mod proto;
pub mod socket;

pub use socket::Socket;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bump whenever any message type that crosses a socket changes.
pub const PROTOCOL_VERSION: u32 = 4;

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
///
/// Reads are buffered, so frames that arrive together cost one read; frames
/// [`queue`](Channel::queue)d go out with the next [`send`](Channel::send)
/// in one write, so the peer wakes once for them.
#[derive(Debug)]
pub struct Channel<S> {
    stream: S,
    max_frame: usize,
    /// Bytes read but not yet taken as frames: `rbuf[rpos..]`.
    rbuf: Vec<u8>,
    rpos: usize,
    /// Frames queued for the next send.
    wbuf: Vec<u8>,
}

/// How much one read asks for: a whole body chunk and then some.
const READ_SIZE: usize = 64 * 1024;

impl<S> Channel<S> {
    /// The same channel over a stream made of this one (a socket moved to
    /// another runtime), with what was read and not yet taken.
    pub fn map_stream<T>(
        self,
        f: impl FnOnce(S) -> std::io::Result<T>,
    ) -> std::io::Result<Channel<T>> {
        Ok(Channel {
            stream: f(self.stream)?,
            max_frame: self.max_frame,
            rbuf: self.rbuf,
            rpos: self.rpos,
            wbuf: self.wbuf,
        })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Channel<S> {
    /// Wraps a connected stream with the default frame limit.
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            max_frame: DEFAULT_MAX_FRAME,
            rbuf: Vec::new(),
            rpos: 0,
            wbuf: Vec::new(),
        }
    }

    /// Changes the largest frame this side accepts.
    pub fn with_max_frame(mut self, max: usize) -> Self {
        self.max_frame = max;
        self
    }

    /// Adds one message, as one frame, to what the next [`Channel::send`]
    /// writes (nothing is added when it fails).
    pub fn queue<T: Serialize>(&mut self, msg: &T) -> Result<(), Error> {
        let body = codec::encode(msg)?;
        let len = u32::try_from(body.len())
            .ok()
            .filter(|&l| l as usize <= self.max_frame)
            .ok_or(Error::TooLarge {
                len: body.len(),
                max: self.max_frame,
            })?;
        self.wbuf.extend_from_slice(&len.to_be_bytes());
        self.wbuf.extend_from_slice(&body);
        Ok(())
    }

    /// Sends one message as one frame, after any queued ones, in one write.
    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), Error> {
        self.queue(msg)?;
        self.flush().await
    }

    /// Writes the queued messages.
    pub async fn flush(&mut self) -> Result<(), Error> {
        let result = self.stream.write_all(&self.wbuf).await;
        self.wbuf.clear();
        result?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Reads until at least `n` unread bytes are buffered; false at end of
    /// stream before that.
    async fn fill(&mut self, n: usize) -> Result<bool, Error> {
        if self.rpos > 0 && self.rbuf.len() - self.rpos < n {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        while self.rbuf.len() - self.rpos < n {
            self.rbuf
                .reserve((n - (self.rbuf.len() - self.rpos)).max(READ_SIZE));
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Receives one message; `Ok(None)` when the peer closed cleanly between frames.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, Error> {
        if !self.fill(4).await? {
            return if self.rbuf.len() == self.rpos {
                Ok(None)
            } else {
                Err(Error::Closed)
            };
        }
        let mut len = [0u8; 4];
        len.copy_from_slice(&self.rbuf[self.rpos..self.rpos + 4]);
        let len = u32::from_be_bytes(len) as usize;
        if len > self.max_frame {
            return Err(Error::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        if !self.fill(4 + len).await? {
            return Err(Error::Closed);
        }
        let at = self.rpos + 4;
        self.rpos = at + len;
        let msg = codec::decode(&self.rbuf[at..at + len]);
        if self.rpos == self.rbuf.len() {
            self.rbuf.clear();
            self.rpos = 0;
        }
        msg.map(Some)
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
    async fn queued_frames_go_out_with_the_next_send_in_one_write() {
        let (a, mut raw) = duplex(1 << 16);
        let mut a = Channel::new(a);
        a.queue(&Msg::Ping(1)).unwrap();
        a.queue(&Msg::Text("two".into())).unwrap();
        let mut nothing = [0u8; 1];
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(50), raw.read(&mut nothing))
                .await;
        assert!(early.is_err(), "queued frames must wait for send");
        a.send(&Msg::Ping(3)).await.unwrap();
        drop(a);
        let mut b = Channel::new(raw);
        assert_eq!(b.expect::<Msg>().await.unwrap(), Msg::Ping(1));
        assert_eq!(b.expect::<Msg>().await.unwrap(), Msg::Text("two".into()));
        assert_eq!(b.expect::<Msg>().await.unwrap(), Msg::Ping(3));
        assert!(b.recv::<Msg>().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn frames_split_anywhere_or_packed_together_read_back_in_order() {
        let msgs: Vec<Msg> = (0..50u32)
            .map(|i| match i % 3 {
                0 => Msg::Ping(i),
                1 => Msg::Text("x".repeat(i as usize * 7)),
                _ => Msg::Chunk(vec![i as u8; (i as usize) * 30]),
            })
            .chain([Msg::Chunk(vec![7; 3 * READ_SIZE])])
            .collect();
        let mut wire = Vec::new();
        for m in &msgs {
            let body = codec::encode(m).unwrap();
            wire.extend_from_slice(&(body.len() as u32).to_be_bytes());
            wire.extend_from_slice(&body);
        }
        for piece in [1usize, 3, 4, 5, 4096, 1 << 20] {
            let (mut raw, b) = duplex(1 << 16);
            let mut b = Channel::new(b);
            let writer = {
                let wire = wire.clone();
                tokio::spawn(async move {
                    for part in wire.chunks(piece) {
                        raw.write_all(part).await.unwrap();
                    }
                })
            };
            for m in &msgs {
                assert_eq!(&b.expect::<Msg>().await.unwrap(), m, "pieces of {piece}");
            }
            writer.await.unwrap();
            assert!(b.recv::<Msg>().await.unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn a_length_cut_short_by_the_peer_is_an_error() {
        let (mut raw, b) = duplex(1024);
        let mut b = Channel::new(b);
        raw.write_all(&[0, 0]).await.unwrap();
        drop(raw);
        assert!(matches!(b.recv::<Msg>().await, Err(Error::Closed)));
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
