//! Creating each service's endpoint, which master owns and children inherit.
//!
//! Because master holds the listening socket across child restarts, clients
//! that connect while a child restarts wait in the backlog instead of being
//! refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid};
use pfx_config::{Config, Service, ServiceType};
use socket2::{Domain, SockAddr, Socket, Type};

const BACKLOG: i32 = 1024;

/// A created endpoint and, for Unix sockets and FIFOs, its path.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) fd: OwnedFd,
    pub(crate) path: Option<PathBuf>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Where a unix/fifo service lives: `$queue_directory/{private,public}/NAME`.
pub(crate) fn socket_path(queue_dir: &Path, svc: &Service) -> PathBuf {
    let class = if svc.private { "private" } else { "public" };
    queue_dir.join(class).join(&svc.name)
}

/// The addresses an inet service listens on.
pub(crate) fn inet_addr(svc: &Service, cfg: &Config) -> Result<SocketAddr, String> {
    let (host, port) = pfx_config::mastercf::inet_port(&svc.name)?;
    let host = if host.is_empty() {
        let ifaces = cfg.list("inet_interfaces").map_err(|e| e.to_string())?;
        match ifaces.as_slice() {
            [one] if one == "all" => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            [one] if one == "loopback-only" || one == "localhost" => {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            }
            [one] => parse_host(one)?,
            _ => return Err(
                "inet_interfaces: list several addresses in master.cf entries (host:port) instead"
                    .into(),
            ),
        }
    } else if host == "localhost" {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        parse_host(&host)?
    };
    Ok(SocketAddr::new(host, port))
}

fn parse_host(h: &str) -> Result<IpAddr, String> {
    h.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("bad listen address \"{h}\": use a numeric IP address"))
}

/// Creates the endpoint for `svc`. `owner` (when running as root) gets the
/// Unix socket or FIFO, as Postfix's sockets belong to `$mail_owner`.
pub(crate) fn create(
    svc: &Service,
    cfg: &Config,
    queue_dir: &Path,
    owner: Option<(Uid, Gid)>,
) -> Result<Endpoint, String> {
    let ctx = |e: std::io::Error| format!("{}: {e}", svc.id());
    match svc.kind {
        ServiceType::Inet => {
            let addr = inet_addr(svc, cfg)?;
            let bind = |addr: SocketAddr| -> std::io::Result<Socket> {
                let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
                s.set_reuse_address(true)?;
                if addr.is_ipv6() && addr.ip().is_unspecified() {
                    s.set_only_v6(false)?;
                }
                s.bind(&addr.into())?;
                s.listen(BACKLOG)?;
                Ok(s)
            };
            let sock = match bind(addr) {
                // No IPv6 here: "all" falls back to every IPv4 address.
                Err(_) if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) => bind(SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    addr.port(),
                )),
                r => r,
            }
            .map_err(|e| format!("bind {addr} for service {}: {e}", svc.id()))?;
            Ok(Endpoint {
                fd: sock.into(),
                path: None,
            })
        }
        ServiceType::Unix | ServiceType::Pass | ServiceType::UnixDgram => {
            let path = socket_path(queue_dir, svc);
            let _ = std::fs::remove_file(&path);
            let ty = if svc.kind == ServiceType::UnixDgram {
                Type::DGRAM
            } else {
                Type::STREAM
            };
            let sock = Socket::new(Domain::UNIX, ty, None).map_err(ctx)?;
            sock.bind(&SockAddr::unix(&path).map_err(ctx)?)
                .map_err(ctx)?;
            if ty == Type::STREAM {
                sock.listen(BACKLOG).map_err(ctx)?;
            }
            finish_path(&path, 0o666, owner).map_err(ctx)?;
            Ok(Endpoint {
                fd: sock.into(),
                path: Some(path),
            })
        }
        ServiceType::Fifo => {
            let path = socket_path(queue_dir, svc);
            let _ = std::fs::remove_file(&path);
            nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o622))
                .map_err(|e| ctx(e.into()))?;
            finish_path(&path, 0o622, owner).map_err(ctx)?;
            // Read-write, so the reader never sees end-of-file between writers.
            let fd = nix::fcntl::open(
                &path,
                nix::fcntl::OFlag::O_RDWR
                    | nix::fcntl::OFlag::O_NONBLOCK
                    | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| ctx(e.into()))?;
            Ok(Endpoint {
                fd,
                path: Some(path),
            })
        }
    }
}

fn finish_path(path: &Path, mode: u32, owner: Option<(Uid, Gid)>) -> std::io::Result<()> {
    if let Some((uid, gid)) = owner {
        nix::unistd::chown(path, Some(uid), Some(gid))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}
