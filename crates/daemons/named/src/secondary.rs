//! Secondary zones (`type secondary`, `slave`), kept as BIND keeps them:
//! at start (when the zone file gave no data) and whenever the SOA's
//! refresh time has passed or an allowed NOTIFY came, the primaries are
//! asked for the SOA over UDP, and if their serial is newer (RFC 1982)
//! the zone is transferred over TCP: IXFR from the serial held (applied
//! as differences, or taken whole when the primary answers in AXFR form),
//! AXFR when none is held. Every message is TSIG-checked when the
//! primary has a key. The new zone is written to the zone's file (text,
//! written whole then renamed) and handed to the main loop, which serves
//! it. A failed attempt is tried again after the SOA's retry time.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_server::proto::op::{Message, MessageType, OpCode, Query};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::proto::serialize::binary::BinEncodable;
use pfx_named_conf::controls::Key;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tracing::{info, warn};

use crate::control::{sock_text, Event};
use crate::journal::newer;
use crate::serve::ZoneKey;
use crate::tsig;

/// How long one exchange with a primary may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Before any data is held, how soon a failed transfer is tried again.
const FIRST_RETRY: Duration = Duration::from_secs(30);
/// BIND's `min-refresh-time` and `min-retry-time` defaults.
const MIN_REFRESH: u32 = 300;
const MIN_RETRY: u32 = 500;

/// One secondary zone's keeper.
pub(crate) struct Keeper {
    pub(crate) key: ZoneKey,
    pub(crate) primaries: Vec<(SocketAddr, Option<Key>)>,
    /// The zone file ("" for a zone kept in memory only).
    pub(crate) file: PathBuf,
    /// The zone as held now: the SOA first.
    pub(crate) records: Vec<Record>,
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) wake: Arc<Notify>,
    /// Set by `rndc retransfer`: AXFR next, whatever the serials.
    pub(crate) whole: Arc<AtomicBool>,
}

fn soa_fields(r: &Record) -> Option<(u32, u32, u32)> {
    match &r.data {
        RData::SOA(s) => Some((s.serial, s.refresh as u32, s.retry as u32)),
        _ => None,
    }
}

impl Keeper {
    fn zone(&self) -> &str {
        &self.key.1
    }

    fn held_serial(&self) -> Option<u32> {
        self.records.first().and_then(soa_fields).map(|f| f.0)
    }

    /// Keeps the zone until the task is aborted.
    pub(crate) async fn run(mut self) {
        // Data held at start (the zone file) counts as fresh then.
        let mut fresh = Instant::now();
        let mut expired = false;
        loop {
            let result = self.refresh().await;
            if result.is_ok() {
                fresh = Instant::now();
                expired = false;
            }
            let wait = match result {
                Ok(()) => {
                    let refresh = self
                        .records
                        .first()
                        .and_then(soa_fields)
                        .map_or(3600, |f| f.1);
                    Duration::from_secs(u64::from(refresh.max(MIN_REFRESH)))
                }
                Err(()) => match self.records.first().and_then(soa_fields) {
                    Some(f) => Duration::from_secs(u64::from(f.2.max(MIN_RETRY))),
                    None => FIRST_RETRY,
                },
            };
            // A zone no primary refreshed within the SOA's expire time is
            // no longer answered for (SERVFAIL, as BIND).
            let expire = self.records.first().and_then(|r| match &r.data {
                RData::SOA(s) => Some(Duration::from_secs(u64::from(s.expire as u32))),
                _ => None,
            });
            let until_expiry =
                expire.map(|e| (fresh + e).saturating_duration_since(Instant::now()));
            let nap = match until_expiry {
                Some(u) if !expired => wait.min(u),
                _ => wait,
            };
            tokio::select! {
                () = tokio::time::sleep(nap) => {}
                () = self.wake.notified() => {}
            }
            if !expired
                && until_expiry.is_some_and(|u| u <= nap)
                && fresh.elapsed() >= expire.unwrap_or(Duration::MAX)
            {
                expired = true;
                // Whatever the primaries say next is taken whole.
                self.records.clear();
                warn!("zone {}/IN: expired", self.zone());
                let _ = self
                    .events
                    .send(Event::Expired {
                        key: self.key.clone(),
                    })
                    .await;
            }
        }
    }

    /// One refresh: the first primary that answers decides.
    async fn refresh(&mut self) -> Result<(), ()> {
        if self.whole.swap(false, Ordering::Relaxed) {
            self.records.clear();
        }
        let primaries = self.primaries.clone();
        for (addr, key) in &primaries {
            let from = format!("transfer of '{}/IN' from {}", self.zone(), sock_text(*addr));
            if let Some(held) = self.held_serial() {
                match self.primary_serial(*addr, key.as_ref()).await {
                    Ok(theirs) if !newer(theirs, held) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => {
                        warn!(
                            target: "xfer-in",
                            "zone {}/IN: refresh: failure trying primary {}: {e}",
                            self.zone(),
                            sock_text(*addr)
                        );
                        continue;
                    }
                }
            }
            match self.transfer(*addr, key.as_ref()).await {
                Ok(stats) => {
                    info!(target: "xfer-in", "{from}: Transfer status: success");
                    info!(target: "xfer-in", "{from}: {stats}");
                    return Ok(());
                }
                Err(e) => {
                    warn!(target: "xfer-in", "{from}: failed while receiving responses: {e}");
                }
            }
        }
        Err(())
    }

    /// The primary's serial, from its SOA (over UDP).
    async fn primary_serial(&self, addr: SocketAddr, key: Option<&Key>) -> Result<u32, String> {
        let (request, mut verifier) = self.request(RecordType::SOA, key)?;
        let socket = crate::udp_to(addr).await?;
        socket.send(&request).await.map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 65535];
        let n = tokio::time::timeout(Duration::from_secs(10), socket.recv(&mut buf))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let answer = &buf[..n];
        if answer.len() < 2 || answer[..2] != request[..2] {
            return Err("unexpected answer".into());
        }
        if let Some(v) = verifier.as_mut() {
            v.next(answer)?;
            v.done()?;
        }
        let m = Message::from_vec(answer).map_err(|e| e.to_string())?;
        m.answers
            .iter()
            .find_map(soa_fields)
            .map(|f| f.0)
            .ok_or_else(|| format!("no SOA ({})", m.metadata.response_code))
    }

    /// A query for the zone, signed with `key` if there is one.
    fn request(
        &self,
        rtype: RecordType,
        key: Option<&Key>,
    ) -> Result<(Vec<u8>, Option<tsig::Verifier>), String> {
        let mut id = [0u8; 2];
        getrandom::fill(&mut id).map_err(|e| e.to_string())?;
        let name = Name::from_ascii(format!("{}.", self.zone())).map_err(|e| e.to_string())?;
        let mut m = Message::new(u16::from_be_bytes(id), MessageType::Query, OpCode::Query);
        m.add_query(Query::query(name, rtype));
        if rtype == RecordType::IXFR {
            if let Some(soa) = self.records.first() {
                m.add_authority(soa.clone());
            }
        }
        let bytes = m.to_vec().map_err(|e| e.to_string())?;
        Ok(match key {
            Some(k) => {
                let (signed, mac) = tsig::sign_request_mac(bytes, k);
                (signed, Some(tsig::Verifier::new(k.clone(), mac)))
            }
            None => (bytes, None),
        })
    }

    /// IXFR (or AXFR when nothing is held) over TCP; the new zone goes to
    /// the file and the main loop. Returns BIND's "Transfer completed" text.
    async fn transfer(&mut self, addr: SocketAddr, key: Option<&Key>) -> Result<String, String> {
        let started = Instant::now();
        let held = self.held_serial();
        let rtype = if held.is_some() {
            RecordType::IXFR
        } else {
            RecordType::AXFR
        };
        let (request, mut verifier) = self.request(rtype, key)?;
        let mut stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let mut framed = (request.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&request);
        stream.write_all(&framed).await.map_err(|e| e.to_string())?;
        let mut records: Vec<Record> = Vec::new();
        let (mut messages, mut bytes) = (0usize, 0usize);
        let mut end_serial = None;
        loop {
            let mut len = [0u8; 2];
            tokio::time::timeout(TIMEOUT, stream.read_exact(&mut len))
                .await
                .map_err(|_| "timed out".to_owned())?
                .map_err(|e| e.to_string())?;
            let mut m = vec![0u8; usize::from(u16::from_be_bytes(len))];
            tokio::time::timeout(TIMEOUT, stream.read_exact(&mut m))
                .await
                .map_err(|_| "timed out".to_owned())?
                .map_err(|e| e.to_string())?;
            if m.len() < 12 || m[..2] != request[..2] {
                return Err("unexpected message".into());
            }
            if let Some(v) = verifier.as_mut() {
                v.next(&m)?;
            }
            let msg = Message::from_vec(&m).map_err(|e| e.to_string())?;
            if msg.metadata.response_code != hickory_server::proto::op::ResponseCode::NoError {
                return Err(msg.metadata.response_code.to_string());
            }
            messages += 1;
            bytes += m.len() + 2;
            for r in msg.answers {
                if records.is_empty() {
                    end_serial = soa_fields(&r).map(|f| f.0);
                    if end_serial.is_none() {
                        return Err("first record is not a SOA".into());
                    }
                }
                records.push(r);
            }
            if transfer_ended(&records, rtype, held) {
                break;
            }
        }
        if let Some(v) = &verifier {
            v.done()?;
        }
        let serial = end_serial.unwrap_or_default();
        if records.len() == 1 {
            return Ok(format!("Transfer completed: up to date (serial {serial})"));
        }
        let new_zone = match held {
            Some(h) if records.get(1).and_then(soa_fields).map(|f| f.0) == Some(h) => {
                apply_ixfr(&self.records, &records)?
            }
            _ => {
                let mut z = records;
                z.pop();
                z
            }
        };
        let count = new_zone.len();
        let text = zone_text(&new_zone);
        self.save(&text).await?;
        self.records = new_zone;
        let _ = self
            .events
            .send(Event::Transferred {
                key: self.key.clone(),
                text,
            })
            .await;
        let millis = started.elapsed().as_millis().max(1);
        Ok(format!(
            "Transfer completed: {messages} messages, {count} records, {bytes} bytes, {}.{:03} secs ({} bytes/sec) (serial {serial})",
            millis / 1000,
            millis % 1000,
            bytes as u128 * 1000 / millis
        ))
    }

    /// Writes the zone file whole, then puts it in place.
    async fn save(&self, text: &str) -> Result<(), String> {
        if self.file.as_os_str().is_empty() {
            return Ok(());
        }
        let tmp = self.file.with_extension("jnw-tmp");
        let (file, tmp_clone, text) = (self.file.clone(), tmp.clone(), text.to_owned());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp_clone)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp_clone, &file)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{}: {e}", tmp.display()))
    }
}

/// Whether `records` (a transfer's answer so far) is complete: the SOA
/// alone for an IXFR already up to date; the new SOA again at the end of
/// an AXFR (or an IXFR answered in its form); for an incremental IXFR
/// (the new SOA, then the held one opening the first sequence of
/// differences), the new SOA closing after the last sequence, each
/// sequence having two SOAs of its own.
fn transfer_ended(records: &[Record], rtype: RecordType, held: Option<u32>) -> bool {
    let serial_at = |i: usize| records.get(i).and_then(soa_fields).map(|f| f.0);
    let Some(new) = serial_at(0) else {
        return false;
    };
    if records.len() == 1 {
        return rtype == RecordType::IXFR && held.is_some_and(|h| !newer(new, h));
    }
    if serial_at(records.len() - 1) != Some(new) {
        return false;
    }
    let incremental = rtype == RecordType::IXFR && held.is_some() && serial_at(1) == held;
    if !incremental {
        return true;
    }
    let soas = records[1..]
        .iter()
        .filter(|r| soa_fields(r).is_some())
        .count();
    soas % 2 == 1
}

/// The zone after an incremental IXFR answer (RFC 1995 §4): each
/// sequence's deletions taken out, its additions put in.
fn apply_ixfr(held: &[Record], answer: &[Record]) -> Result<Vec<Record>, String> {
    let same = |a: &Record, b: &Record| {
        a.name.eq(&b.name)
            && a.record_type() == b.record_type()
            && a.data.to_bytes().ok() == b.data.to_bytes().ok()
    };
    let mut zone: Vec<Record> = held.iter().skip(1).cloned().collect();
    let mut soa = held.first().cloned().ok_or("no SOA held")?;
    // Skip the leading new SOA and the closing one.
    let body = &answer[1..answer.len() - 1];
    let mut deleting = false;
    for r in body {
        if r.record_type() == RecordType::SOA {
            deleting = !deleting;
            if !deleting {
                soa = r.clone();
            }
            continue;
        }
        if deleting {
            zone.retain(|z| !same(z, r));
        } else if !zone.iter().any(|z| same(z, r)) {
            zone.push(r.clone());
        }
    }
    let mut out = vec![soa];
    out.extend(zone);
    Ok(out)
}

/// A zone file named reads back as it was transferred: the common types
/// in their usual text, every other in RFC 3597's generic form.
pub(crate) fn zone_text(records: &[Record]) -> String {
    let mut out = String::from("; transferred by postfix-rs named\n");
    for r in records {
        let rtype = r.record_type();
        let data = match (&r.data, rtype) {
            (
                RData::A(_)
                | RData::AAAA(_)
                | RData::NS(_)
                | RData::CNAME(_)
                | RData::PTR(_)
                | RData::MX(_)
                | RData::SOA(_)
                | RData::SRV(_),
                _,
            ) => format!("{rtype} {}", r.data),
            _ => {
                let bytes = r.data.to_bytes().unwrap_or_default();
                let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
                format!("TYPE{} \\# {} {hex}", u16::from(rtype), bytes.len())
            }
        };
        out.push_str(&format!("{} {} IN {data}\n", r.name, r.ttl));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(text: &str) -> Record {
        let parts: Vec<&str> = text.splitn(2, ' ').collect();
        let name = Name::from_ascii(parts[0]).unwrap();
        let ip: std::net::Ipv4Addr = parts[1].parse().unwrap();
        Record::from_rdata(name, 300, RData::A(ip.into()))
    }

    fn soa(serial: u32) -> Record {
        let n = Name::from_ascii("example.test.").unwrap();
        Record::from_rdata(
            n.clone(),
            300,
            RData::SOA(hickory_server::proto::rr::rdata::SOA::new(
                n.clone(),
                n,
                serial,
                3600,
                900,
                604800,
                300,
            )),
        )
    }

    #[test]
    fn differences_are_applied_as_rfc_1995_says() {
        let held = vec![
            soa(1),
            rec("a.example.test. 192.0.2.1"),
            rec("b.example.test. 192.0.2.2"),
        ];
        let answer = vec![
            soa(3),
            soa(1),
            rec("a.example.test. 192.0.2.1"),
            soa(2),
            rec("c.example.test. 192.0.2.3"),
            soa(2),
            rec("b.example.test. 192.0.2.2"),
            soa(3),
            rec("d.example.test. 192.0.2.4"),
            soa(3),
        ];
        let z = apply_ixfr(&held, &answer).unwrap();
        let names: Vec<String> = z[1..].iter().map(|r| r.name.to_string()).collect();
        assert_eq!(names, ["c.example.test.", "d.example.test."]);
        assert_eq!(soa_fields(&z[0]).map(|f| f.0), Some(3));
    }

    #[test]
    fn transfers_end_where_rfc_1995_and_5936_say() {
        let a = || rec("a.example.test. 192.0.2.1");
        let (ax, ix) = (RecordType::AXFR, RecordType::IXFR);
        assert!(!transfer_ended(&[soa(2), a()], ax, None));
        assert!(transfer_ended(&[soa(2), a(), soa(2)], ax, None));
        assert!(transfer_ended(&[soa(2)], ix, Some(2)));
        assert!(!transfer_ended(&[soa(3)], ix, Some(2)));
        assert!(transfer_ended(&[soa(3), a(), soa(3)], ix, Some(2)));
        // Incremental: the new SOA closing a sequence is not the end.
        let seq = [soa(3), soa(2), a(), soa(3), a()];
        assert!(!transfer_ended(&seq[..4], ix, Some(2)));
        let mut done = seq.to_vec();
        done.push(soa(3));
        assert!(transfer_ended(&done, ix, Some(2)));
    }

    #[test]
    fn zone_text_reads_back() {
        let mut txt = Record::from_rdata(
            Name::from_ascii("t.example.test.").unwrap(),
            60,
            RData::TXT(hickory_server::proto::rr::rdata::TXT::new(vec![
                "a \"b\"".into()
            ])),
        );
        txt.ttl = 60;
        let ns = Record::from_rdata(
            Name::from_ascii("example.test.").unwrap(),
            300,
            RData::NS(hickory_server::proto::rr::rdata::NS(
                Name::from_ascii("a.example.test.").unwrap(),
            )),
        );
        let text = zone_text(&[soa(5), ns, rec("a.example.test. 192.0.2.1"), txt]);
        let z = pfx_named_conf::zone::parse(
            "example.test",
            std::path::Path::new("x.db"),
            &text,
            std::path::Path::new("."),
        )
        .unwrap();
        assert_eq!(z.serial, 5);
        assert_eq!(z.records.len(), 4, "{text}");
    }
}
