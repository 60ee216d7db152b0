//! postfix-rs named: an authoritative DNS server for the mail system's own
//! zones, reading BIND's named.conf and zone files (with `pfx-named-conf`)
//! and answering with hickory-server. The `named` program runs under master
//! (see main.rs) or on its own with BIND's flags; `named-checkconf` and
//! `named-checkzone` check the same files without serving them.
//!
//! [`serve`] holds what answers (a reload swaps it whole), [`listen`] the
//! sockets and the servers on them; `udp` answers UDP on threads of its own
//! and `tcp` TCP on the runtime, both
//! in front of an answer cache (`cache`) that belongs to the served state;
//! `authority` gives the answers of the served zones, as BIND gives them.

mod authority;
mod cache;
pub mod commands;
pub mod control;
mod edns;
mod journal;
pub mod listen;
pub mod logging;
mod mmsg;
mod notify;
mod recursion;
mod secondary;
pub mod serve;
mod tcp;
mod transfer;
mod tsig;
mod udp;

/// Seconds since the epoch, as the wire formats carry them (cookies,
/// TSIG, the control channel).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A UDP socket on an ephemeral port of the right family, connected to
/// `to`: how named asks other servers (NOTIFY, SOA queries).
pub(crate) async fn udp_to(to: std::net::SocketAddr) -> Result<tokio::net::UdpSocket, String> {
    let any: std::net::SocketAddr = if to.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(any)
        .await
        .map_err(|e| e.to_string())?;
    socket.connect(to).await.map_err(|e| e.to_string())?;
    Ok(socket)
}

/// The same in the 32-bit field cookies and the control channel carry.
pub(crate) fn unix_now32() -> u32 {
    u32::try_from(unix_now()).unwrap_or(u32::MAX)
}
