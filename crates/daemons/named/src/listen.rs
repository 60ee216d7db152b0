//! The sockets named answers on, and the servers on them: UDP on threads
//! of its own (udp.rs), TCP on the runtime (tcp.rs). Both answer through
//! the [`Handler`] of serve.rs.

use std::net::{IpAddr, SocketAddr, SocketAddrV6};

use pfx_named_conf::acl::Local;
use pfx_named_conf::conf::{self, NamedConf};
use tracing::{info, warn};

use crate::serve::Handler;
use crate::{tcp, udp};

/// The sockets named answers on, bound before privileges are dropped.
pub struct Sockets {
    pub udp: Vec<std::net::UdpSocket>,
    pub tcp: Vec<std::net::TcpListener>,
    port: Option<u16>,
    family: Family,
    workers: usize,
    bound: Vec<SocketAddr>,
}

/// Which address families `-4` / `-6` leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Both,
    V4,
    V6,
}

/// The addresses `listen-on` and `listen-on-v6` ask for now: interface
/// addresses the lists allow, and single addresses they name. `port`
/// (named -p) replaces the default port 53.
fn wanted(conf: &NamedConf, port: Option<u16>, family: Family) -> Vec<SocketAddr> {
    let local = Local::discover();
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let mut add = |listen: &[conf::Listen], v6: bool| {
        for l in listen {
            let p = l
                .port
                .or(port)
                .or(conf.options.port)
                .unwrap_or(conf::DNS_PORT);
            let mut ips: Vec<IpAddr> = local
                .addresses()
                .into_iter()
                .filter(|ip| l.addresses.allows(*ip, &local))
                .collect();
            ips.extend(l.addresses.hosts());
            for ip in ips {
                // A link-local address is bound on its interface.
                let sa = match ip {
                    IpAddr::V6(v6) if v6.is_unicast_link_local() => {
                        SocketAddr::V6(SocketAddrV6::new(v6, p, 0, local.scope_id(v6)))
                    }
                    _ => SocketAddr::new(ip, p),
                };
                if ip.is_ipv6() == v6 && !addrs.contains(&sa) {
                    addrs.push(sa);
                }
            }
        }
    };
    if family != Family::V6 {
        add(&conf.options.listen_on, false);
    }
    if family != Family::V4 {
        add(&conf.options.listen_on_v6, true);
    }
    addrs
}

/// Binds every address `listen-on` asks for (before privileges are
/// dropped); one UDP socket per worker thread (SO_REUSEPORT) spreads
/// queries over cores.
pub fn bind(
    conf: &NamedConf,
    port: Option<u16>,
    family: Family,
    workers: usize,
) -> Result<Sockets, String> {
    let mut out = Sockets {
        udp: Vec::new(),
        tcp: Vec::new(),
        port,
        family,
        workers,
        bound: Vec::new(),
    };
    for sa in wanted(conf, port, family) {
        let (udp, tcp) = bind_one(sa, workers)?;
        out.udp.extend(udp);
        out.tcp.push(tcp);
        out.bound.push(sa);
        info!("listening on {sa}");
    }
    if out.tcp.is_empty() {
        warn!("not listening on any interfaces");
    }
    Ok(out)
}

fn bind_one(
    sa: SocketAddr,
    workers: usize,
) -> Result<(Vec<std::net::UdpSocket>, std::net::TcpListener), String> {
    let what =
        |proto: &str, e: std::io::Error| format!("could not listen on {proto} socket {sa}: {e}");
    let mut udp = Vec::new();
    for _ in 0..workers.max(1) {
        udp.push(udp_socket(sa).map_err(|e| what("UDP", e))?);
    }
    let tcp = tcp_socket(sa, 1024).map_err(|e| what("TCP", e))?;
    Ok((udp, tcp))
}

/// The serving sockets, and what a rescan of the interfaces needs.
pub struct Listening {
    port: Option<u16>,
    family: Family,
    workers: usize,
    bound: Vec<SocketAddr>,
    handler: Handler,
}

impl Listening {
    /// `interface-interval` and `rndc scan`: binds the addresses that
    /// appeared since the last scan (an interface brought up, an address
    /// added). Sockets of addresses that went away stay open and idle, so
    /// that the address coming back is served again.
    pub fn rescan(&mut self, conf: &NamedConf) {
        for sa in wanted(conf, self.port, self.family) {
            if self.bound.contains(&sa) {
                continue;
            }
            match bind_one(sa, self.workers) {
                Ok((udp, tcp)) => {
                    let started =
                        udp::spawn(udp, self.handler.clone(), tokio::runtime::Handle::current())
                            .and_then(|()| tcp::spawn(vec![tcp], self.handler.clone()));
                    match started {
                        Ok(()) => {
                            info!("listening on {sa}");
                            self.bound.push(sa);
                        }
                        Err(e) => warn!("{e}"),
                    }
                }
                Err(e) => warn!("{e}"),
            }
        }
    }
}

fn udp_socket(sa: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(sa), Type::DGRAM, Some(Protocol::UDP))?;
    if sa.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&sa.into())?;
    Ok(s.into())
}

/// A listening TCP socket (DNS, and the control channel's).
pub(crate) fn tcp_socket(sa: SocketAddr, backlog: i32) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(sa), Type::STREAM, Some(Protocol::TCP))?;
    if sa.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&sa.into())?;
    s.listen(backlog)?;
    Ok(s.into())
}

/// Starts serving (inside the runtime): UDP on threads of its own (see
/// udp.rs), TCP on the runtime (tcp.rs). Returns what later rescans need.
pub fn start(sockets: Sockets, handler: Handler) -> Result<Listening, String> {
    udp::spawn(
        sockets.udp,
        handler.clone(),
        tokio::runtime::Handle::current(),
    )?;
    tcp::spawn(sockets.tcp, handler.clone())?;
    Ok(Listening {
        port: sockets.port,
        family: sockets.family,
        workers: sockets.workers,
        bound: sockets.bound,
        handler,
    })
}
