//! A Unix stream socket that wakes its owner for what it reads, not for
//! what its peer reads.
//!
//! tokio registers a socket for both directions. On a Unix stream socket
//! the kernel signals "writable" each time the peer takes data off it, so
//! every request or reply sent woke the sender once more, for nothing:
//! about seven needless wake-ups per message between smtpd, cleanup, qmgr
//! and local. A [`Socket`] is registered for reading only; a write goes
//! straight to the socket, and only when its buffer is full does a second
//! descriptor of the same socket get registered for writing, until the
//! write has gone through.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// A connected Unix stream socket for [`crate::Channel`].
#[derive(Debug)]
pub struct Socket {
    stream: AsyncFd<UnixStream>,
    /// Registered for writing while a write waits for room.
    waiting: Option<AsyncFd<OwnedFd>>,
}

impl Socket {
    /// Takes over a connected socket.
    pub fn new(stream: UnixStream) -> std::io::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(Self {
            stream: register(stream, Interest::READABLE)?,
            waiting: None,
        })
    }

    /// Takes over a socket tokio accepted or connected.
    pub fn from_tokio(stream: tokio::net::UnixStream) -> std::io::Result<Self> {
        Self::new(stream.into_std()?)
    }

    /// Connects to the socket at `path`.
    pub async fn connect(path: &Path) -> std::io::Result<Self> {
        Self::from_tokio(tokio::net::UnixStream::connect(path).await?)
    }

    /// The socket, no longer registered: to be taken over by another
    /// runtime ([`Socket::new`] there).
    pub fn into_std(mut self) -> std::io::Result<UnixStream> {
        self.waiting = None;
        Ok(self.stream.into_inner())
    }

    fn write_now(&self, buf: &[u8]) -> std::io::Result<usize> {
        let fd = std::os::fd::AsRawFd::as_raw_fd(self.stream.get_ref());
        loop {
            match nix::sys::socket::send(fd, buf, nix::sys::socket::MsgFlags::MSG_NOSIGNAL) {
                Err(nix::errno::Errno::EINTR) => {}
                r => return r.map_err(std::io::Error::from),
            }
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            let mut ready = ready!(self.stream.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let room = unfilled.len();
            match Read::read(&mut self.stream.get_ref(), unfilled) {
                Ok(n) => {
                    // Less than asked for: nothing more is there, so the
                    // next read waits for the kernel to say so instead of
                    // asking (as tokio's own sockets do).
                    if n > 0 && n < room {
                        ready.clear_ready();
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => ready.clear_ready(),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if let Some(waiting) = &this.waiting {
                let mut ready = ready!(waiting.poll_write_ready(cx))?;
                match this.write_now(buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        ready.clear_ready();
                        continue;
                    }
                    done => {
                        drop(ready);
                        this.waiting = None;
                        return Poll::Ready(done);
                    }
                }
            }
            match this.write_now(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let twin = this.stream.get_ref().as_fd().try_clone_to_owned()?;
                    this.waiting = Some(register(twin, Interest::WRITABLE)?);
                }
                done => return Poll::Ready(done),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.stream.get_ref().shutdown(std::net::Shutdown::Write))
    }
}

/// Registers a descriptor this process owns with the runtime.
fn register<T: std::os::fd::AsRawFd>(fd: T, interest: Interest) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: `fd` is owned (a UnixStream or an OwnedFd) and moves into the
    // AsyncFd, which deregisters it before it is closed.
    unsafe { AsyncFd::register_with_interest(fd, interest) }.map_err(|e| e.into_parts().1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_write_larger_than_the_socket_buffer_waits_for_the_reader() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut a, mut b) = (Socket::new(a).unwrap(), Socket::new(b).unwrap());
        let data: Vec<u8> = (0..8 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            a.write_all(&sent).await.unwrap();
            a.shutdown().await.unwrap();
            a
        });
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, data);
        let a = writer.await.unwrap();
        assert!(a.waiting.is_none(), "back to reading only");
    }

    /// The events every epoll instance of this process watches for on `fd`
    /// (that descriptor and that socket: tests run side by side).
    fn watched(fd: std::os::fd::RawFd) -> Vec<u32> {
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .unwrap()
            .ino();
        let ino = format!("ino:{ino:x}");
        let mut masks = Vec::new();
        for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            let link = std::fs::read_link(e.path()).unwrap_or_default();
            if link.to_string_lossy() != "anon_inode:[eventpoll]" {
                continue;
            }
            let info = std::fs::read_to_string(format!(
                "/proc/self/fdinfo/{}",
                e.file_name().to_string_lossy()
            ))
            .unwrap_or_default();
            for line in info.lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() > 3
                    && f[0] == "tfd:"
                    && f[1] == fd.to_string()
                    && f.contains(&ino.as_str())
                {
                    masks.push(u32::from_str_radix(f[3], 16).unwrap());
                }
            }
        }
        masks
    }

    #[tokio::test]
    async fn the_writer_is_not_woken_when_its_peer_reads() {
        use std::os::fd::AsRawFd;
        let (a, b) = UnixStream::pair().unwrap();
        let (a_fd, b_fd) = (a.as_raw_fd(), b.as_raw_fd());
        let mut a = Socket::new(a).unwrap();
        b.set_nonblocking(true).unwrap();
        let mut b = tokio::net::UnixStream::from_std(b).unwrap();
        // tokio's own socket is watched for room to write too: the kernel
        // reports it whenever the peer reads. Ours only for reading.
        let out = libc::EPOLLOUT as u32;
        assert!(watched(b_fd).iter().any(|m| m & out != 0));
        assert!(!watched(a_fd).is_empty());
        assert!(watched(a_fd)
            .iter()
            .all(|m| m & out == 0 && m & libc::EPOLLIN as u32 != 0));

        a.write_all(b"request").await.unwrap();
        let mut buf = [0u8; 7];
        b.read_exact(&mut buf).await.unwrap();
        b.write_all(b"answer").await.unwrap();
        let mut buf = [0u8; 6];
        a.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"answer");
        // A write to a peer that has gone is an error, not a signal.
        drop(b);
        assert!(a.write_all(b"more").await.is_err());
    }
}
