//! A signed zone's answers to queries with the DO bit (RFC 4035 §3.1): the
//! RRSIGs of each RRset given, and for a negative or wildcard answer the
//! NSEC records that prove it (the name's own NSEC for NODATA, the NSEC
//! covering the name and the one covering the wildcard for NXDOMAIN and
//! wildcard answers), for a referral the DS set or the NSEC that proves
//! there is none. The zone is served as it was signed (dnssec-signzone);
//! nothing is signed here. Zones signed with NSEC3 get their RRSIGs but no
//! NSEC3 proofs.

use std::collections::BTreeMap;

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordSet, RecordType, RrKey};

use super::{wire_name, Answer, Zone};

/// A name as RFC 4034 §6.1 orders them: its labels from the right, each
/// lower-cased; comparing these compares the names canonically.
pub(crate) type Canonical = Vec<Vec<u8>>;

fn canonical(n: &Name) -> Canonical {
    n.iter().rev().map(|l| l.to_ascii_lowercase()).collect()
}

/// A zone's NSEC records sorted by owner, for [`Zone::covering`].
pub(super) fn nsec_index(sets: &BTreeMap<RrKey, RecordSet>) -> Vec<(Canonical, Record)> {
    let mut index: Vec<(Canonical, Record)> = sets
        .iter()
        .filter(|(k, _)| k.record_type == RecordType::NSEC)
        .flat_map(|(_, set)| set.records_without_rrsigs())
        .map(|r| (canonical(&r.name), r.clone()))
        .collect();
    index.sort_by(|a, b| a.0.cmp(&b.0));
    index
}

fn rdata_bytes(r: &Record) -> Option<&[u8]> {
    match &r.data {
        RData::Unknown { rdata, .. } => Some(&rdata.anything),
        _ => None,
    }
}

impl Zone {
    /// Whether the zone was signed (has RRSIGs).
    pub(crate) fn signed(&self) -> bool {
        self.signed
    }

    /// The answer to a query with DO: `plain` (Zone::answer's) with the
    /// signatures and denial records RFC 4035 asks for.
    pub(crate) fn with_dnssec(&self, qname: &LowerName, plain: Answer) -> Answer {
        let mut out = plain;
        let negative = out.rcode == ResponseCode::NXDomain
            || (out.rcode == ResponseCode::NoError
                && out.authoritative
                && out
                    .authority
                    .iter()
                    .any(|r| r.record_type() == RecordType::SOA));
        // Where the answer ended: the last CNAME's target, else the name asked.
        let last = out
            .answers
            .iter()
            .rev()
            .find_map(|r| match &r.data {
                RData::CNAME(c) => Some(LowerName::new(&c.0)),
                _ => None,
            })
            .unwrap_or_else(|| qname.clone());
        let mut proofs: Vec<Record> = Vec::new();
        if !out.authoritative && out.answers.is_empty() {
            // A referral: the DS set, or the NSEC proving there is none.
            if let Some(cut) = out.authority.first().map(|r| LowerName::new(&r.name)) {
                match self.set(&cut, RecordType::DS) {
                    Some(ds) => proofs.extend(ds),
                    None => proofs.extend(self.set(&cut, RecordType::NSEC).unwrap_or_default()),
                }
            }
        } else if out.rcode == ResponseCode::NXDomain {
            proofs.extend(self.covering(&last));
            proofs.extend(self.wildcard_denial(&last));
        } else if negative {
            if self.names.contains(&last) {
                // An empty non-terminal has no NSEC: the one covering it proves it empty.
                match self.set(&last, RecordType::NSEC) {
                    Some(nsec) => proofs.extend(nsec),
                    None => proofs.extend(self.covering(&last)),
                }
            } else {
                // NODATA at a wildcard: the name does not exist, the wildcard has not the type.
                proofs.extend(self.covering(&last));
                if let Some(star) = self.wildcard_of(&last) {
                    proofs.extend(self.set(&star, RecordType::NSEC).unwrap_or_default());
                }
            }
        }
        // Each RRset synthesised from a wildcard (an answer, or a CNAME on
        // the way to one): proof that its own name does not exist.
        for r in &out.answers {
            let owner = LowerName::new(&r.name);
            if !self.names.contains(&owner) {
                proofs.extend(self.covering(&owner));
            }
        }
        for p in proofs {
            if !out.authority.contains(&p) {
                out.authority.push(p);
            }
        }
        out.answers = self.signed_sections(out.answers);
        out.authority = self.signed_sections(out.authority);
        out.additional = self.signed_sections(out.additional);
        out
    }

    /// Each RRset of `records` followed by its RRSIGs.
    fn signed_sections(&self, records: Vec<Record>) -> Vec<Record> {
        let mut out: Vec<Record> = Vec::with_capacity(records.len() * 2);
        let mut done: Vec<(Name, RecordType)> = Vec::new();
        for r in &records {
            out.push(r.clone());
        }
        for r in &records {
            let key = (r.name.clone(), r.record_type());
            if r.record_type() == RecordType::RRSIG || done.contains(&key) {
                continue;
            }
            done.push(key);
            for sig in self.rrsigs(&r.name, r.record_type(), r.ttl) {
                if !out.contains(&sig) {
                    out.push(sig);
                }
            }
        }
        out
    }

    /// The RRSIGs over `owner`'s `covered` set; a name that does not exist
    /// was answered from a wildcard, whose signatures then carry its name.
    fn rrsigs(&self, owner: &Name, covered: RecordType, ttl: u32) -> Vec<Record> {
        let lower = LowerName::new(owner);
        let node = if self.names.contains(&lower) {
            lower
        } else {
            match self.wildcard_of(&lower) {
                Some(star) => star,
                None => return Vec::new(),
            }
        };
        let code = u16::from(covered).to_be_bytes();
        self.set(&node, RecordType::RRSIG)
            .unwrap_or_default()
            .into_iter()
            .filter(|s| rdata_bytes(s).is_some_and(|d| d.get(..2) == Some(&code[..])))
            .map(|mut s| {
                s.name = owner.clone();
                // A negative answer's SOA has a shortened TTL; its RRSIG follows.
                s.ttl = s.ttl.min(ttl);
                s
            })
            .collect()
    }

    /// The wildcard of `name`'s closest encloser, when it exists.
    fn wildcard_of(&self, name: &LowerName) -> Option<LowerName> {
        let mut ce = name.base_name();
        while !self.names.contains(&ce) {
            if ce == self.origin || !self.origin.zone_of(&ce) {
                return None;
            }
            ce = ce.base_name();
        }
        let star = LowerName::new(&Name::parse("*", Some(&Name::from(&ce))).ok()?);
        self.names.contains(&star).then_some(star)
    }

    /// The NSEC proving no wildcard could answer `name`: the one covering
    /// `*.` its closest encloser.
    fn wildcard_denial(&self, name: &LowerName) -> Vec<Record> {
        let mut ce = name.base_name();
        while !self.names.contains(&ce) && ce != self.origin && self.origin.zone_of(&ce) {
            ce = ce.base_name();
        }
        match Name::parse("*", Some(&Name::from(&ce))) {
            Ok(star) => self.covering(&LowerName::new(&star)),
            Err(_) => Vec::new(),
        }
    }

    /// The NSEC whose owner comes before `name` and whose next name after
    /// it (the last one wraps to the apex): the last owner before `name`
    /// in canonical order, when its next name bears it out.
    fn covering(&self, name: &LowerName) -> Vec<Record> {
        let target = canonical(&Name::from(name));
        let before = self.nsec.partition_point(|(owner, _)| *owner < target);
        let Some((owner, r)) = before.checked_sub(1).and_then(|i| self.nsec.get(i)) else {
            return Vec::new();
        };
        let Some(next) = rdata_bytes(r)
            .and_then(wire_name)
            .and_then(|n| Name::from_ascii(n).ok())
            .map(|n| canonical(&n))
        else {
            return Vec::new();
        };
        let wraps = next <= *owner;
        if wraps || target < next {
            vec![r.clone()]
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_order_is_rfc_4034s() {
        // RFC 4034 §6.1's example, in order (labels as bytes: \001, *, \200).
        let names: [&[&[u8]]; 9] = [
            &[b"example"],
            &[b"a", b"example"],
            &[b"yljkjljk", b"a", b"example"],
            &[b"Z", b"a", b"example"],
            &[b"zABC", b"a", b"EXAMPLE"],
            &[b"z", b"example"],
            &[b"\x01", b"z", b"example"],
            &[b"*", b"z", b"example"],
            &[b"\x80", b"z", b"example"],
        ];
        let name = |labels: &[&[u8]]| {
            let mut n = Name::from_labels(labels.iter().copied()).unwrap();
            n.set_fqdn(true);
            n
        };
        for w in names.windows(2) {
            let (a, b) = (name(w[0]), name(w[1]));
            assert!(canonical(&a) < canonical(&b), "{a} < {b}");
        }
    }
}
