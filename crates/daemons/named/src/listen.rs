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
}

/// Which address families `-4` / `-6` leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Both,
    V4,
    V6,
}

/// Binds every `listen-on` address: interface addresses the list allows, and
/// single addresses it names. `port` (named -p) replaces the default port 53.
/// One UDP socket per worker thread (SO_REUSEPORT) spreads queries over cores.
pub fn bind(
    conf: &NamedConf,
    port: Option<u16>,
    family: Family,
    workers: usize,
) -> Result<Sockets, String> {
    let local = Local::discover();
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let mut add = |listen: &[conf::Listen], v6: bool| {
        for l in listen {
            let p = l.port.or(port).unwrap_or(conf::DNS_PORT);
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
    let mut out = Sockets {
        udp: Vec::new(),
        tcp: Vec::new(),
    };
    for sa in addrs {
        let what = |proto: &str, e: std::io::Error| {
            format!("could not listen on {proto} socket {sa}: {e}")
        };
        for _ in 0..workers.max(1) {
            out.udp.push(udp_socket(sa).map_err(|e| what("UDP", e))?);
        }
        out.tcp.push(tcp_socket(sa).map_err(|e| what("TCP", e))?);
        info!("listening on {sa}");
    }
    if out.tcp.is_empty() {
        warn!("not listening on any interfaces");
    }
    Ok(out)
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

fn tcp_socket(sa: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(sa), Type::STREAM, Some(Protocol::TCP))?;
    if sa.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&sa.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// Starts serving (inside the runtime): UDP on threads of its own (see
/// udp.rs), TCP on the runtime (tcp.rs).
pub fn start(sockets: Sockets, handler: Handler) -> Result<(), String> {
    udp::spawn(
        sockets.udp,
        handler.clone(),
        tokio::runtime::Handle::current(),
    )?;
    tcp::spawn(sockets.tcp, handler)
}
