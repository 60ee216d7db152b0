//! Many UDP datagrams per system call (Linux's recvmmsg and sendmmsg):
//! under load a socket's thread takes every query waiting at once and
//! sends the cached answers back together, instead of two system calls
//! per query.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

/// How many datagrams one call takes or sends at most.
pub(crate) const BATCH: usize = 32;
/// Room for one query; a longer one is cut and dropped (a DNS query over
/// UDP never comes near it).
const ROOM: usize = 4096;

/// Buffers for [`Receiver::recv`], reused from call to call.
pub(crate) struct Receiver {
    bufs: Vec<[u8; ROOM]>,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

impl Receiver {
    pub(crate) fn new() -> Self {
        Self {
            bufs: vec![[0u8; ROOM]; BATCH],
            // SAFETY: sockaddr_storage is plain data; all zeroes is a valid value.
            addrs: vec![unsafe { std::mem::zeroed() }; BATCH],
            iovs: Vec::with_capacity(BATCH),
            msgs: Vec::with_capacity(BATCH),
        }
    }

    /// Waits for at least one datagram and takes all that are waiting (up
    /// to [`BATCH`]); calls `each` with every query and its sender.
    pub(crate) fn recv(
        &mut self,
        socket: &impl AsRawFd,
        mut each: impl FnMut(&[u8], SocketAddr),
    ) -> io::Result<()> {
        let fd: RawFd = socket.as_raw_fd();
        self.iovs.clear();
        self.msgs.clear();
        for buf in &mut self.bufs {
            self.iovs.push(libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: ROOM,
            });
        }
        for (i, addr) in self.addrs.iter_mut().enumerate() {
            // SAFETY: msghdr is plain data; all zeroes is a valid value.
            let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
            hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_iov = &mut self.iovs[i];
            hdr.msg_iovlen = 1;
            self.msgs.push(libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            });
        }
        // SAFETY: msgs holds BATCH headers whose name and iovec pointers
        // point into self.addrs, self.iovs and self.bufs, which stay
        // alive and unmoved for the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        for i in 0..n as usize {
            let m = &self.msgs[i];
            if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                continue;
            }
            let Some(src) = socket_addr(&self.addrs[i]) else {
                continue;
            };
            let len = (m.msg_len as usize).min(ROOM);
            each(&self.bufs[i][..len], src);
        }
        Ok(())
    }
}

/// The sender's address the kernel wrote.
fn socket_addr(a: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(a.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in,
            // which fits in it and needs no more alignment.
            let v4 = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(v4.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let v6 = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(v6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(v6.sin6_port),
                v6.sin6_flowinfo,
                v6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Sends each answer to its client, as few calls as the kernel allows.
pub(crate) fn send(socket: &impl AsRawFd, answers: &[(Vec<u8>, SocketAddr)]) {
    let fd: RawFd = socket.as_raw_fd();
    for chunk in answers.chunks(BATCH) {
        let addrs: Vec<socket2::SockAddr> = chunk.iter().map(|(_, a)| (*a).into()).collect();
        let mut iovs: Vec<libc::iovec> = chunk
            .iter()
            .map(|(a, _)| libc::iovec {
                iov_base: a.as_ptr() as *mut libc::c_void,
                iov_len: a.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = (0..chunk.len())
            .map(|i| {
                // SAFETY: msghdr is plain data; all zeroes is a valid value.
                let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
                hdr.msg_name = addrs[i].as_ptr() as *mut libc::c_void;
                hdr.msg_namelen = addrs[i].len();
                hdr.msg_iov = &mut iovs[i];
                hdr.msg_iovlen = 1;
                libc::mmsghdr {
                    msg_hdr: hdr,
                    msg_len: 0,
                }
            })
            .collect();
        let mut sent = 0;
        while sent < msgs.len() {
            // SAFETY: the headers point into addrs, iovs and the answers of
            // `chunk`, all alive and unmoved for the call.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    msgs[sent..].as_mut_ptr(),
                    (msgs.len() - sent) as libc::c_uint,
                    0,
                )
            };
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if n <= 0 {
                // A client that cannot be sent to (gone, refused) is
                // skipped, as a lost UDP answer is.
                sent += 1;
                continue;
            }
            sent += n as usize;
        }
    }
}
