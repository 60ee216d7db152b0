//! Authoritative answers from a zone's records, as BIND 9.18 gives them:
//! RFC 1034 §4.3.2's algorithm (a delegation below the apex is a referral
//! with its glue and without AA; CNAMEs are followed inside the zone),
//! wildcards per RFC 4592 (only for names that do not exist, from the
//! closest encloser), negative answers with the SOA at RFC 2308's TTL
//! (the smaller of the SOA's own TTL and its minimum; 0 for an NXDOMAIN
//! to an SOA question, as BIND has it), `ANY` with every set of the name and
//! nothing added, and BIND's default `minimal-responses
//! no-auth-recursive`: the zone's NS records in the authority section only
//! when recursion was not asked for and the answer has them not already,
//! addresses of the names in the answer (NS, MX, SRV targets) in the
//! additional section; an answer whose CNAME leads out of the zone gets
//! neither. The differential test with BIND 9.18 (integration-tests,
//! named_vs_bind.rs) holds these rules to BIND's answers.

mod dnssec;

use std::collections::{BTreeMap, HashSet};

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::rdata::{NS, SOA, TXT};
use hickory_server::proto::rr::{
    DNSClass, LowerName, Name, RData, Record, RecordSet, RecordType, RrKey,
};

/// How many CNAMEs an answer follows at most (BIND: 16).
const MAX_CHAIN: usize = 16;

/// One zone's data, indexed for answering.
pub(crate) struct Zone {
    origin: LowerName,
    sets: BTreeMap<RrKey, RecordSet>,
    /// Every name that exists: owners, and the empty non-terminals
    /// between them and the apex (RFC 4592 §2.2.2).
    names: HashSet<LowerName>,
    /// The SOA as negative answers carry it (RFC 2308 §3 TTL).
    negative_soa: Option<Record>,
    /// Whether the zone was signed (dnssec.rs answers DO queries then).
    signed: bool,
    /// The NSEC records in canonical order of their owners, so the one
    /// covering a name is found by binary search (dnssec.rs).
    nsec: Vec<(dnssec::Canonical, Record)>,
}

/// What to send: the response code, AA, and the three sections.
#[derive(Debug, Default)]
pub(crate) struct Answer {
    pub(crate) rcode: ResponseCode,
    pub(crate) authoritative: bool,
    pub(crate) answers: Vec<Record>,
    pub(crate) authority: Vec<Record>,
    pub(crate) additional: Vec<Record>,
}

impl Answer {
    /// An empty answer with this code, without AA.
    pub(crate) fn refused(rcode: ResponseCode) -> Self {
        Self {
            rcode,
            ..Self::default()
        }
    }
}

/// BIND's built-in zones of class CH: `version.bind`, `hostname.bind`,
/// `id.server` (TXT, TTL 0, from the `version`, `hostname` and
/// `server-id` options; `none` leaves the name without data) and
/// `authors.bind` (no data: this is not BIND). Other CH names are refused.
pub(crate) struct Chaos {
    pub(crate) version: Option<String>,
    pub(crate) hostname: Option<String>,
    pub(crate) server_id: Option<String>,
}

impl Chaos {
    pub(crate) fn answer(&self, qname: &LowerName, qtype: RecordType, rd: bool) -> Answer {
        let zones = [
            ("version.bind.", &self.version),
            ("hostname.bind.", &self.hostname),
            ("id.server.", &self.server_id),
            ("authors.bind.", &None),
        ];
        let Some((zone, value)) = zones.iter().find_map(|(z, v)| {
            let zone = LowerName::new(&Name::from_ascii(z).ok()?);
            zone.zone_of(qname).then_some((zone, *v))
        }) else {
            return Answer::refused(ResponseCode::Refused);
        };
        let apex = Name::from(&zone);
        let chaos = |ttl: u32, data: RData| {
            let mut r = Record::from_rdata(apex.clone(), ttl, data);
            r.dns_class = DNSClass::CH;
            r
        };
        let mut out = Answer {
            authoritative: true,
            ..Answer::default()
        };
        if *qname != zone {
            out.rcode = ResponseCode::NXDomain;
        } else if let (Some(v), RecordType::TXT | RecordType::ANY) = (value, qtype) {
            out.answers
                .push(chaos(0, RData::TXT(TXT::new(vec![v.clone()]))));
            if !rd {
                out.authority.push(chaos(0, RData::NS(NS(apex.clone()))));
            }
            return out;
        }
        let hostmaster = Name::parse("hostmaster", Some(&apex)).unwrap_or_else(|_| apex.clone());
        out.authority.push(chaos(
            86400,
            RData::SOA(SOA::new(
                apex.clone(),
                hostmaster,
                0,
                28800,
                7200,
                604800,
                86400,
            )),
        ));
        out
    }
}

impl Zone {
    pub(crate) fn new(origin: &Name, sets: BTreeMap<RrKey, RecordSet>) -> Self {
        let origin = LowerName::new(origin);
        let mut names = HashSet::new();
        for key in sets.keys() {
            let mut n = key.name.clone();
            while origin.zone_of(&n) && names.insert(n.clone()) && n != origin {
                n = n.base_name();
            }
        }
        let negative_soa = sets
            .get(&RrKey::new(origin.clone(), RecordType::SOA))
            .and_then(|s| s.records_without_rrsigs().next())
            .map(|r| {
                let mut soa = r.clone();
                if let RData::SOA(data) = &r.data {
                    soa.ttl = soa.ttl.min(data.minimum);
                }
                soa
            });
        let signed = sets.keys().any(|k| k.record_type == RecordType::RRSIG);
        let nsec = dnssec::nsec_index(&sets);
        Self {
            origin,
            sets,
            names,
            negative_soa,
            signed,
            nsec,
        }
    }

    pub(crate) fn origin(&self) -> &LowerName {
        &self.origin
    }

    /// The SOA record as the zone has it (a transfer starts and ends with it).
    pub(crate) fn soa(&self) -> Option<&Record> {
        self.sets
            .get(&RrKey::new(self.origin.clone(), RecordType::SOA))
            .and_then(|s| s.records_without_rrsigs().next())
    }

    /// The addresses the zone gives for its NS hosts, but the host its
    /// SOA names as the primary (NOTIFY goes to the others).
    pub(crate) fn secondary_addresses(&self) -> Vec<std::net::IpAddr> {
        let primary = self.soa().and_then(|r| match &r.data {
            RData::SOA(s) => Some(LowerName::new(&s.mname)),
            _ => None,
        });
        let mut out = Vec::new();
        for ns in self.set(&self.origin, RecordType::NS).unwrap_or_default() {
            let RData::NS(NS(host)) = &ns.data else {
                continue;
            };
            let host = LowerName::new(host);
            if Some(&host) == primary.as_ref() {
                continue;
            }
            for t in [RecordType::A, RecordType::AAAA] {
                for r in self.set(&host, t).unwrap_or_default() {
                    match &r.data {
                        RData::A(a) => out.push(std::net::IpAddr::V4(a.0)),
                        RData::AAAA(a) => out.push(std::net::IpAddr::V6(a.0)),
                        _ => {}
                    }
                }
            }
        }
        out
    }

    /// Every record of the zone but its SOA, DNSSEC records included, in
    /// name and type order (a transfer's body).
    pub(crate) fn records_but_soa(&self) -> impl Iterator<Item = &Record> {
        self.sets
            .iter()
            .filter(|(k, _)| !(k.record_type == RecordType::SOA && k.name == self.origin))
            .flat_map(|(_, set)| set.records_without_rrsigs())
    }

    /// How many names own records (`rndc zonestatus`'s "nodes").
    pub(crate) fn node_count(&self) -> usize {
        let mut owners: Vec<&LowerName> = self.sets.keys().map(|k| &k.name).collect();
        owners.dedup();
        owners.len()
    }

    /// Every record, in name and type order (`rndc dumpdb -zones`).
    pub(crate) fn records(&self) -> impl Iterator<Item = &Record> {
        self.sets.values().flat_map(|s| s.records_without_rrsigs())
    }

    fn set(&self, name: &LowerName, t: RecordType) -> Option<Vec<Record>> {
        self.sets
            .get(&RrKey::new(name.clone(), t))
            .map(|s| s.records_without_rrsigs().cloned().collect())
            .filter(|v: &Vec<Record>| !v.is_empty())
    }

    /// Every set owned by `name` (for ANY), in type order.
    fn all_sets(&self, name: &LowerName) -> Vec<Record> {
        self.sets
            .iter()
            .filter(|(k, _)| k.name == *name && k.record_type != RecordType::RRSIG)
            .flat_map(|(_, s)| s.records_without_rrsigs().cloned())
            .collect()
    }

    /// The answer to `qname`/`qtype` (`qname` inside this zone); `rd`:
    /// the query asked for recursion.
    pub(crate) fn answer(&self, qname: &LowerName, qtype: RecordType, rd: bool) -> Answer {
        if let Some(cut) = self.delegation(qname, qtype) {
            return self.referral(&cut);
        }
        let mut out = Answer {
            authoritative: true,
            ..Answer::default()
        };
        let mut name = qname.clone();
        // The chain left the zone: nothing is added to its answer.
        let mut left = false;
        for _ in 0..MAX_CHAIN {
            match self.lookup(&name, qtype) {
                Found::Records(mut records) => {
                    out.answers.append(&mut records);
                    break;
                }
                Found::Cname(cname, target) => {
                    out.answers.push(*cname);
                    // Followed only while it stays in the zone and out of
                    // its delegations.
                    let target = LowerName::new(&target);
                    if !self.origin.zone_of(&target) || self.delegation(&target, qtype).is_some() {
                        left = true;
                        break;
                    }
                    name = target;
                }
                Found::Dname(dname, cname) => {
                    let Some(cname) = cname else {
                        // The new name would be too long (RFC 6672 §2.2).
                        out.answers.push(*dname);
                        out.rcode = ResponseCode::YXDomain;
                        break;
                    };
                    let target = match &cname.data {
                        RData::CNAME(t) => LowerName::new(&t.0),
                        _ => break,
                    };
                    out.answers.push(*dname);
                    out.answers.push(*cname);
                    if !self.origin.zone_of(&target) || self.delegation(&target, qtype).is_some() {
                        left = true;
                        break;
                    }
                    name = target;
                }
                Found::NoData => {
                    out.authority.extend(self.negative_soa.clone());
                    break;
                }
                Found::NxDomain => {
                    out.rcode = ResponseCode::NXDomain;
                    out.authority.extend(self.nxdomain_soa(qtype));
                    break;
                }
            }
        }
        if out.authority.is_empty() && !left {
            let apex_ns = self.set(&self.origin, RecordType::NS).unwrap_or_default();
            let answered = apex_ns.iter().all(|r| out.answers.contains(r));
            // BIND leaves the NS records out of DNSKEY and DS answers.
            let keys = matches!(qtype, RecordType::DNSKEY | RecordType::DS);
            if !rd && !answered && !keys {
                out.authority.extend(apex_ns);
            }
            if qtype == RecordType::ANY {
                return out;
            }
            let mut targets: Vec<Name> = Vec::new();
            for r in out.answers.iter().chain(&out.authority) {
                match &r.data {
                    RData::NS(ns) => targets.push(ns.0.clone()),
                    RData::MX(mx) => targets.push(mx.exchange.clone()),
                    RData::SRV(srv) => targets.push(srv.target.clone()),
                    _ => {}
                }
            }
            out.additional = self.addresses(&targets, &out.answers);
        }
        out
    }

    /// The SOA of an NXDOMAIN answer; its TTL 0 when the question was for
    /// an SOA, as BIND answers.
    fn nxdomain_soa(&self, qtype: RecordType) -> Option<Record> {
        let mut soa = self.negative_soa.clone()?;
        if qtype == RecordType::SOA {
            soa.ttl = 0;
        }
        Some(soa)
    }

    /// The delegation `qname` is at or below: the highest name between the
    /// apex and `qname` with NS records. A DS or NSEC query at the cut
    /// itself is the parent's to answer (RFC 4035 §3.1.4.1).
    fn delegation(&self, qname: &LowerName, qtype: RecordType) -> Option<LowerName> {
        let mut chain = Vec::new();
        let mut n = qname.clone();
        while n != self.origin && self.origin.zone_of(&n) {
            chain.push(n.clone());
            n = n.base_name();
        }
        chain.into_iter().rev().find(|n| {
            self.sets
                .contains_key(&RrKey::new(n.clone(), RecordType::NS))
                && !(n == qname && matches!(qtype, RecordType::DS | RecordType::NSEC))
        })
    }

    /// A referral to the zone cut at `cut`: its NS records, and their
    /// addresses from this zone (glue), without AA.
    fn referral(&self, cut: &LowerName) -> Answer {
        let ns = self.set(cut, RecordType::NS).unwrap_or_default();
        let targets: Vec<Name> = ns
            .iter()
            .filter_map(|r| match &r.data {
                RData::NS(n) => Some(n.0.clone()),
                _ => None,
            })
            .collect();
        Answer {
            rcode: ResponseCode::NoError,
            authoritative: false,
            answers: Vec::new(),
            additional: self.addresses(&targets, &[]),
            authority: ns,
        }
    }

    /// What `name` holds for `qtype`: exactly, or through the wildcard of
    /// its closest encloser when it does not exist.
    fn lookup(&self, name: &LowerName, qtype: RecordType) -> Found {
        if let Some(found) = self.dname_above(name) {
            return found;
        }
        if self.names.contains(name) {
            return self.at(name, name, qtype);
        }
        // RFC 4592: the closest encloser is the longest existing ancestor;
        // its wildcard, if any, answers with the asked name as owner.
        let mut ce = name.base_name();
        while !self.names.contains(&ce) {
            if ce == self.origin || !self.origin.zone_of(&ce) {
                return Found::NxDomain;
            }
            ce = ce.base_name();
        }
        let star = match Name::parse("*", Some(&Name::from(&ce))) {
            Ok(n) => LowerName::new(&n),
            Err(_) => return Found::NxDomain,
        };
        if self.names.contains(&star) {
            self.at(&star, name, qtype)
        } else {
            Found::NxDomain
        }
    }

    /// RFC 6672: a DNAME at an ancestor of `name` (the highest, at or
    /// below the apex) answers for it with a CNAME it synthesises (the
    /// DNAME's TTL, the owner's labels replaced by its target); `None` in
    /// place of the CNAME when the new name would be too long.
    fn dname_above(&self, name: &LowerName) -> Option<Found> {
        let mut found = None;
        let mut n = name.clone();
        while n != self.origin && self.origin.zone_of(&n) {
            n = n.base_name();
            if let Some(d) = self.set(&n, RecordType::DNAME) {
                found = Some((n.clone(), d.into_iter().next()?));
            }
        }
        let (owner, dname) = found?;
        let target = match &dname.data {
            RData::Unknown { rdata, .. } => wire_name(&rdata.anything)?,
            _ => return None,
        };
        let asked = Name::from(name).to_ascii();
        let owner_text = Name::from(&owner).to_ascii();
        let prefix = asked
            .len()
            .checked_sub(owner_text.len())
            .map(|n| &asked[..n])?;
        let new = if target == "." {
            prefix.to_owned()
        } else {
            format!("{prefix}{target}")
        };
        let cname = Name::from_ascii(&new)
            .ok()
            .filter(|n| n.len() <= 255)
            .map(|t| {
                Box::new(Record::from_rdata(
                    Name::from(name),
                    dname.ttl,
                    RData::CNAME(hickory_server::proto::rr::rdata::CNAME(t)),
                ))
            });
        Some(Found::Dname(Box::new(dname), cname))
    }

    /// The data of the existing name `node` for `qtype`, owned by `owner`.
    fn at(&self, node: &LowerName, owner: &LowerName, qtype: RecordType) -> Found {
        let rename = |mut records: Vec<Record>| {
            if node != owner {
                for r in &mut records {
                    r.name = Name::from(owner);
                }
            }
            records
        };
        let records = if qtype == RecordType::ANY {
            Some(self.all_sets(node)).filter(|v| !v.is_empty())
        } else {
            self.set(node, qtype)
        };
        if let Some(r) = records {
            return Found::Records(rename(r));
        }
        if let Some(c) = self.set(node, RecordType::CNAME) {
            let mut cname = rename(c).remove(0);
            if let RData::CNAME(target) = &cname.data {
                let target = target.0.clone();
                cname.name = Name::from(owner);
                return Found::Cname(Box::new(cname), target);
            }
        }
        Found::NoData
    }

    /// The A and AAAA records of `names` this zone has, but those already
    /// in `answers`.
    fn addresses(&self, names: &[Name], answers: &[Record]) -> Vec<Record> {
        let mut out: Vec<Record> = Vec::new();
        for n in names {
            let n = LowerName::new(n);
            if !self.origin.zone_of(&n) {
                continue;
            }
            for t in [RecordType::A, RecordType::AAAA] {
                for r in self.set(&n, t).unwrap_or_default() {
                    if !answers.contains(&r) && !out.contains(&r) {
                        out.push(r);
                    }
                }
            }
        }
        out
    }
}

enum Found {
    Records(Vec<Record>),
    /// A CNAME (owned by the asked name) and its target.
    Cname(Box<Record>, Name),
    /// A DNAME above the asked name and the CNAME it makes (none when the
    /// name would be too long).
    Dname(Box<Record>, Option<Box<Record>>),
    NoData,
    NxDomain,
}

/// A name in uncompressed wire form as text, with its trailing dot.
fn wire_name(bytes: &[u8]) -> Option<String> {
    let mut out = String::new();
    let mut i = 0;
    loop {
        let len = usize::from(*bytes.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        for &b in bytes.get(i..i + len)? {
            match b {
                b'.' | b'\\' => {
                    out.push('\\');
                    out.push(char::from(b));
                }
                0x21..=0x7e => out.push(char::from(b)),
                _ => out.push_str(&format!("\\{b:03}")),
            }
        }
        out.push('.');
        i += len;
    }
    Some(if out.is_empty() { ".".into() } else { out })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn zone() -> Zone {
        let text = "$TTL 86400\n\
            @ IN SOA ns.ywnds.com. root.ywnds.com. 1 3600 600 604800 10800\n\
            @ IN NS ns\n@ IN MX 10 mail\nns IN A 127.0.0.1\nmail IN A 127.0.0.2\n\
            www IN CNAME mail\nloop IN CNAME loop\nout IN CNAME mx.elsewhere.test.\n\
            *.wild IN MX 10 mail\nhost.wild IN A 192.0.2.1\n\
            a.b.deep IN A 192.0.2.2\n\
            sub IN NS ns.sub\nns.sub IN A 192.0.2.53\n\
            old IN DNAME ywnds.com.\n";
        let z =
            pfx_named_conf::zone::parse("ywnds.com", Path::new("z"), text, Path::new("/")).unwrap();
        Zone::new(&z.origin, z.records)
    }

    fn ask(z: &Zone, name: &str, t: RecordType, rd: bool) -> Answer {
        z.answer(&LowerName::new(&Name::from_ascii(name).unwrap()), t, rd)
    }

    fn shown(records: &[Record]) -> Vec<String> {
        records.iter().map(|r| r.to_string()).collect()
    }

    #[test]
    fn wildcards_answer_only_for_names_that_do_not_exist() {
        let z = zone();
        let a = ask(&z, "other.wild.ywnds.com.", RecordType::MX, true);
        assert_eq!(
            shown(&a.answers),
            ["other.wild.ywnds.com. 86400 IN MX 10 mail.ywnds.com."]
        );
        assert_eq!(
            shown(&a.additional),
            ["mail.ywnds.com. 86400 IN A 127.0.0.2"]
        );
        // An existing name gets no wildcard data: NODATA.
        let a = ask(&z, "host.wild.ywnds.com.", RecordType::MX, true);
        assert!(a.answers.is_empty() && a.rcode == ResponseCode::NoError);
        // Below an existing name, the closest encloser is that name: no wildcard.
        let a = ask(&z, "x.host.wild.ywnds.com.", RecordType::MX, true);
        assert_eq!(a.rcode, ResponseCode::NXDomain);
        // An empty non-terminal exists.
        let a = ask(&z, "b.deep.ywnds.com.", RecordType::A, true);
        assert_eq!((a.rcode, a.answers.len()), (ResponseCode::NoError, 0));
    }

    #[test]
    fn negative_answers_carry_the_soa_at_rfc_2308s_ttl() {
        let z = zone();
        let a = ask(&z, "nothere.ywnds.com.", RecordType::A, true);
        assert_eq!(a.rcode, ResponseCode::NXDomain);
        assert_eq!(a.authority[0].ttl, 10800);
        assert!(a.authoritative);
    }

    #[test]
    fn delegations_are_referrals_with_glue_and_without_aa() {
        let z = zone();
        let a = ask(&z, "www.sub.ywnds.com.", RecordType::A, true);
        assert!(!a.authoritative && a.answers.is_empty());
        assert_eq!(
            shown(&a.authority),
            ["sub.ywnds.com. 86400 IN NS ns.sub.ywnds.com."]
        );
        assert_eq!(
            shown(&a.additional),
            ["ns.sub.ywnds.com. 86400 IN A 192.0.2.53"]
        );
    }

    #[test]
    fn cnames_are_followed_in_the_zone_and_loops_stop() {
        let z = zone();
        let a = ask(&z, "www.ywnds.com.", RecordType::A, true);
        assert_eq!(
            shown(&a.answers),
            [
                "www.ywnds.com. 86400 IN CNAME mail.ywnds.com.",
                "mail.ywnds.com. 86400 IN A 127.0.0.2"
            ]
        );
        assert_eq!(
            ask(&z, "loop.ywnds.com.", RecordType::A, true)
                .answers
                .len(),
            MAX_CHAIN
        );
        assert_eq!(
            ask(&z, "out.ywnds.com.", RecordType::A, true).answers.len(),
            1
        );
    }

    #[test]
    fn a_dname_redirects_the_names_below_it() {
        let z = zone();
        let a = ask(&z, "mail.old.ywnds.com.", RecordType::A, true);
        assert_eq!(
            shown(&a.answers),
            [
                "old.ywnds.com. 86400 IN DNAME BXl3bmRzA2NvbQA=",
                "mail.old.ywnds.com. 86400 IN CNAME mail.ywnds.com.",
                "mail.ywnds.com. 86400 IN A 127.0.0.2"
            ]
        );
        // The DNAME's own name is not redirected.
        let a = ask(&z, "old.ywnds.com.", RecordType::A, true);
        assert!(a.answers.is_empty() && a.rcode == ResponseCode::NoError);
    }

    #[test]
    fn authority_ns_only_without_rd_and_any_gives_every_set() {
        let z = zone();
        let a = ask(&z, "ywnds.com.", RecordType::MX, true);
        assert!(a.authority.is_empty());
        let a = ask(&z, "ywnds.com.", RecordType::MX, false);
        assert_eq!(
            shown(&a.authority),
            ["ywnds.com. 86400 IN NS ns.ywnds.com."]
        );
        assert_eq!(
            ask(&z, "ywnds.com.", RecordType::ANY, true).answers.len(),
            3
        );
    }
}
