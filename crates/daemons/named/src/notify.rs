//! NOTIFY out (RFC 1996), as BIND 9.18 sends it: when a primary zone is
//! loaded (at start, and after a reload that changed its serial), to the
//! addresses its NS hosts have in the zone itself (but the host its SOA
//! names as primary, and this host's own addresses) under `notify yes`,
//! and to the `also-notify` servers under `yes` and `explicit`, each
//! signed with its `key` if it has one. Over UDP, tried three times five
//! seconds apart until the server answers; BIND's log lines (category
//! `notify`).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_server::proto::op::{Message, MessageType, OpCode, Query};
use hickory_server::proto::rr::{Name, Record, RecordType};
use pfx_named_conf::acl::Local;
use pfx_named_conf::controls::Key;
use pfx_named_conf::remote::{server_key, Notify, Remote, Server};
use tracing::{error, info, warn};

use crate::authority;
use crate::tsig;

const TRIES: usize = 3;
const WAIT: Duration = Duration::from_secs(5);

/// Whom one zone's NOTIFY goes to, with the key to sign it with.
pub(crate) fn targets(
    zone: &authority::Zone,
    notify: Notify,
    also: &[Remote],
    keys: &[Key],
    servers: &[Server],
    local: &Local,
) -> Vec<(SocketAddr, Option<Key>)> {
    let mut out: Vec<(SocketAddr, Option<Key>)> = Vec::new();
    if notify == Notify::No {
        return out;
    }
    if notify != Notify::Explicit {
        let own = local.addresses();
        for ip in zone.secondary_addresses() {
            if !own.contains(&ip) {
                out.push((SocketAddr::new(ip, 53), None));
            }
        }
    }
    let listed = also.iter().map(|r| (r.address, r.key.as_deref()));
    let found: Vec<(SocketAddr, Option<&str>)> = out
        .drain(..)
        .map(|(a, _)| (a, None))
        .chain(listed)
        .collect();
    for (address, key) in found {
        // A server's own key (`server { keys }`) when the list gives none.
        let key = match key.or_else(|| server_key(servers, address.ip())) {
            None => None,
            Some(name) => match keys.iter().find(|k| k.name.eq_ignore_ascii_case(name)) {
                Some(k) => Some(k.clone()),
                None => {
                    error!(
                        "notify to {}: key '{name}' is not defined; not notified",
                        crate::control::sock_text(address)
                    );
                    continue;
                }
            },
        };
        out.push((address, key));
    }
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

/// Sends the zone's NOTIFY to each target, in the background.
pub(crate) fn send(zone_name: &str, soa: Record, targets: Vec<(SocketAddr, Option<Key>)>) {
    if targets.is_empty() {
        return;
    }
    let serial = crate::journal::serial(&soa).unwrap_or_default();
    let label = format!("zone {zone_name}/IN");
    info!(target: "notify", "{label}: sending notifies (serial {serial})");
    for (to, key) in targets {
        let soa = soa.clone();
        let label = label.clone();
        tokio::spawn(async move {
            if let Err(e) = notify_one(&soa, to, key.as_ref()).await {
                warn!(
                    target: "notify",
                    "{label}: notify to {} failed: {e}",
                    crate::control::sock_text(to)
                );
            }
        });
    }
}

/// One NOTIFY, until answered or out of tries.
async fn notify_one(soa: &Record, to: SocketAddr, key: Option<&Key>) -> Result<(), String> {
    let mut id = [0u8; 2];
    getrandom::fill(&mut id).map_err(|e| e.to_string())?;
    let id = u16::from_be_bytes(id);
    let mut m = Message::new(id, MessageType::Query, OpCode::Notify);
    m.metadata.authoritative = true;
    let zone: Name = soa.name.clone();
    m.add_query(Query::query(zone, RecordType::SOA));
    m.add_answer(soa.clone());
    let mut bytes = m.to_vec().map_err(|e| e.to_string())?;
    if let Some(k) = key {
        bytes = tsig::sign_request(bytes, k);
    }
    let socket = crate::udp_to(to).await?;
    let mut buf = vec![0u8; 4096];
    for _ in 0..TRIES {
        socket.send(&bytes).await.map_err(|e| e.to_string())?;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
                Err(_) => break,
                // Refused by the port (nothing there yet): tried again later.
                Ok(Err(_)) => {
                    tokio::time::sleep_until(deadline).await;
                    break;
                }
                Ok(Ok(n)) => {
                    let answer = &buf[..n];
                    if n >= 12 && answer[..2] == id.to_be_bytes() && answer[2] & 0x80 != 0 {
                        return Ok(());
                    }
                }
            }
        }
    }
    Err("timed out".into())
}
