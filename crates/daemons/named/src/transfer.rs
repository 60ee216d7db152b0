//! Zone transfers out, as BIND 9.18 sends them: AXFR (RFC 5936) and IXFR
//! (RFC 1995) of a zone the client's view serves, when the zone's
//! `allow-transfer` (else the view's, else the global one; default any)
//! lets the client in, `key NAME` elements matching requests signed with
//! that key. Over TCP the SOA, every record, the SOA again, in as many
//! messages as needed, each TSIG-signed when the request was (RFC 8945
//! §5.3.1). IXFR is answered with the SOA alone when the client is up to
//! date or asks over UDP, with the differences since its serial when the
//! journal has them (journal.rs), else with the whole zone in AXFR form. Refusals and transfers are logged with
//! BIND's lines (categories `security` and `xfer-out`).

use std::net::IpAddr;
use std::time::Instant;

use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_server::proto::rr::{DNSClass, Record, RecordType};
use hickory_server::proto::serialize::binary::BinEncodable;
use hickory_server::server::Request;
use tracing::{error, info};

use crate::journal;
use crate::serve::{client_tag, State};
use crate::tsig::{self, Signed};

/// How many bytes of records (uncompressed) one message carries at most;
/// compressed they stay well below TCP's 65535.
const MESSAGE_BYTES: usize = 16 * 1024;

/// BIND's EDNS buffer size in answers.
const MAX_UDP: u16 = 1232;

/// Whether `request` asks for a zone transfer.
pub(crate) fn is_transfer(request: &Request) -> bool {
    request.metadata.op_code == OpCode::Query
        && request
            .queries
            .queries()
            .first()
            .is_some_and(|q| matches!(q.query_type(), RecordType::AXFR | RecordType::IXFR))
}

/// The answer to a transfer request: its messages, signed when the
/// request was (`signed` is its verified TSIG).
pub(crate) fn answer(
    state: &State,
    request: &Request,
    signed: Option<&Signed>,
    local: IpAddr,
) -> Vec<Vec<u8>> {
    let Some(q) = request.queries.queries().first() else {
        return Vec::new();
    };
    // Logged as the client wrote it, as BIND does.
    let name = q.original().name().to_string();
    let name = name.strip_suffix('.').unwrap_or(&name).to_owned();
    let qtype = q.query_type();
    let type_text = if qtype == RecordType::AXFR {
        "AXFR"
    } else {
        "IXFR"
    };
    let src = request.src();
    let tcp = request.protocol() == Protocol::Tcp;
    let signer = signed.map(Signed::key_name);
    let reply = |rcode: ResponseCode| vec![error_reply(request, rcode, signed)];
    let tag = format!("{} ({name})", client_tag(src));
    let Some(view) = state.view_for(src.ip(), signer, local, request.metadata.recursion_desired)
    else {
        return reply(ResponseCode::Refused);
    };
    let view_text = view.log_prefix();
    let served = view
        .served(q.name())
        .filter(|_| q.query_class() == DNSClass::IN);
    let Some(served) = served else {
        info!(
            target: "xfer-out",
            "{tag}: {view_text}bad zone transfer request: '{name}/{}': non-authoritative zone (NOTAUTH)",
            q.query_class()
        );
        return reply(ResponseCode::NotAuth);
    };
    if !served
        .allow_transfer
        .allows_signed(src.ip(), signer, state.local())
    {
        error!(
            target: "security",
            "{tag}: {view_text}zone transfer '{name}/{type_text}/IN' denied"
        );
        return reply(ResponseCode::Refused);
    }
    if qtype == RecordType::AXFR && !tcp {
        info!(
            target: "xfer-out",
            "{tag}: {view_text}bad zone transfer request: attempted AXFR over UDP (FORMERR)"
        );
        return reply(ResponseCode::FormErr);
    }
    let zone = &served.zone;
    let Some(soa) = zone.soa() else {
        return reply(ResponseCode::ServFail);
    };
    let serial = journal::serial(soa).unwrap_or_default();
    let transfer = format!("{tag}: {view_text}transfer of '{name}/IN'");
    let mut mnemonic = "AXFR";
    if qtype == RecordType::IXFR {
        let theirs = request
            .authorities
            .iter()
            .find(|r| r.record_type() == RecordType::SOA && r.name == soa.name)
            .and_then(journal::serial);
        let Some(theirs) = theirs else {
            info!(
                target: "xfer-out",
                "{tag}: {view_text}bad zone transfer request: IXFR request missing SOA (FORMERR)"
            );
            return reply(ResponseCode::FormErr);
        };
        if theirs == serial || journal::newer(theirs, serial) || !tcp {
            // Up to date, or over UDP: the current SOA alone.
            let m = messages(request, std::iter::once(soa));
            return sign(m, signed);
        }
        if let Some(deltas) = journal::since(&served.journal, theirs, serial) {
            return incremental(request, signed, soa, deltas, &transfer, theirs, serial);
        }
        info!(target: "xfer-out", "{transfer}: IXFR version not in journal, falling back to AXFR");
        mnemonic = "AXFR-style IXFR";
    }
    let key = signer.map(|k| format!(": TSIG {k}")).unwrap_or_default();
    info!(target: "xfer-out", "{transfer}: {mnemonic} started{key} (serial {serial})");
    let started = Instant::now();
    let records = std::iter::once(soa)
        .chain(zone.records_but_soa())
        .chain(std::iter::once(soa));
    let count = 2 + zone.records_but_soa().count();
    let out = sign(messages(request, records), signed);
    ended(&transfer, mnemonic, &out, count, started, serial);
    out
}

/// An IXFR answered from the journal (RFC 1995 §4): the new SOA, each
/// version's old SOA, deletions, new SOA and additions, the new SOA.
fn incremental(
    request: &Request,
    signed: Option<&Signed>,
    soa: &Record,
    deltas: &[journal::Delta],
    transfer: &str,
    from: u32,
    serial: u32,
) -> Vec<Vec<u8>> {
    let key = signed
        .map(|s| format!(": TSIG {}", s.key_name()))
        .unwrap_or_default();
    info!(target: "xfer-out", "{transfer}: IXFR started{key} (serial {from} -> {serial})");
    let started = Instant::now();
    let mut records: Vec<&Record> = vec![soa];
    for d in deltas {
        records.push(&d.from);
        records.extend(&d.deleted);
        records.push(&d.to);
        records.extend(&d.added);
    }
    records.push(soa);
    let count = records.len();
    let out = sign(messages(request, records.into_iter()), signed);
    ended(transfer, "IXFR", &out, count, started, serial);
    out
}

/// BIND's closing line of a transfer.
fn ended(
    transfer: &str,
    mnemonic: &str,
    out: &[Vec<u8>],
    count: usize,
    started: Instant,
    serial: u32,
) {
    let bytes: usize = out.iter().map(Vec::len).sum();
    let millis = started.elapsed().as_millis().max(1);
    info!(
        target: "xfer-out",
        "{transfer}: {mnemonic} ended: {} messages, {count} records, {bytes} bytes, {}.{:03} secs ({} bytes/sec) (serial {serial})",
        out.len(),
        millis / 1000,
        millis % 1000,
        bytes as u128 * 1000 / millis
    );
}

fn sign(messages: Vec<Vec<u8>>, signed: Option<&Signed>) -> Vec<Vec<u8>> {
    match signed {
        Some(s) => tsig::sign_all(messages, s),
        None => messages,
    }
}

/// A response to `request`: authoritative, its question in the first
/// message only, EDNS when the request had it.
fn response(request: &Request, first: bool) -> Message {
    let mut m = Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
    m.metadata.authoritative = true;
    m.metadata.recursion_desired = request.metadata.recursion_desired;
    if first {
        for q in request.queries.queries() {
            m.add_query(q.original().clone());
        }
    }
    if let Some(req) = &request.edns {
        let mut e = Edns::new();
        e.set_max_payload(MAX_UDP);
        e.set_dnssec_ok(req.flags().dnssec_ok);
        m.set_edns(e);
    }
    m
}

/// The records in messages of at most [`MESSAGE_BYTES`] of records each.
fn messages<'a>(request: &Request, records: impl Iterator<Item = &'a Record>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut m = response(request, true);
    let mut size = 0;
    let mut in_message = 0;
    for r in records {
        let len = r.to_bytes().map_or(MESSAGE_BYTES, |b| b.len());
        if in_message > 0 && size + len > MESSAGE_BYTES {
            out.push(m.to_vec().unwrap_or_default());
            m = response(request, false);
            size = 0;
            in_message = 0;
        }
        m.add_answer(r.clone());
        size += len;
        in_message += 1;
    }
    out.push(m.to_vec().unwrap_or_default());
    out
}

/// An answer without records with `rcode`, signed when the request was.
fn error_reply(request: &Request, rcode: ResponseCode, signed: Option<&Signed>) -> Vec<u8> {
    let mut m = response(request, true);
    m.metadata.authoritative = false;
    m.metadata.response_code = rcode;
    let bytes = m.to_vec().unwrap_or_default();
    match signed {
        Some(s) => tsig::sign(bytes, s),
        None => bytes,
    }
}
