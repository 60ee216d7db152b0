//! The differences between a zone's versions, for IXFR out (RFC 1995):
//! kept whenever a zone is loaded again with a newer serial (a reload of
//! a primary's file, a secondary's transfer), as BIND keeps them with
//! `ixfr-from-differences yes`. They are kept in memory, the oldest
//! dropped past `max-journal-size` (BIND's `default`: twice the zone's
//! size); a client whose serial is older than the oldest kept (or any
//! after a restart) gets the zone whole.

use std::collections::HashSet;
use std::sync::Arc;

use hickory_server::proto::rr::{RData, Record};
use hickory_server::proto::serialize::binary::BinEncodable;

use pfx_named_conf::remote::JournalSize;

use crate::authority;

/// One version's changes: from one SOA to the next.
#[derive(Debug, Clone)]
pub(crate) struct Delta {
    pub(crate) from: Record,
    pub(crate) to: Record,
    pub(crate) deleted: Vec<Record>,
    pub(crate) added: Vec<Record>,
}

/// A zone's deltas, oldest first, each starting where the one before ends.
pub(crate) type Journal = Arc<Vec<Delta>>;

/// The serial of a SOA record.
pub(crate) fn serial(soa: &Record) -> Option<u32> {
    match &soa.data {
        RData::SOA(s) => Some(s.serial),
        _ => None,
    }
}

/// Whether serial `a` is later than `b`, as RFC 1982 compares them.
pub(crate) fn newer(a: u32, b: u32) -> bool {
    a != b && (a.wrapping_sub(b) as i32) > 0
}

/// What makes two records the same record: owner (without case), type,
/// TTL and data.
fn identity(r: &Record) -> (String, u16, u32, Vec<u8>) {
    (
        r.name.to_ascii().to_ascii_lowercase(),
        u16::from(r.record_type()),
        r.ttl,
        r.data.to_bytes().unwrap_or_default(),
    )
}

/// A record's size on the wire (uncompressed), what the journal counts.
fn size(r: &Record) -> usize {
    r.to_bytes().map_or(0, |b| b.len())
}

/// What a delta counts for against `max-journal-size`.
fn delta_bytes(d: &Delta) -> usize {
    size(&d.from) + size(&d.to) + d.deleted.iter().chain(&d.added).map(size).sum::<usize>()
}

/// The journal after `new` replaced `old` (with `journal` of its own):
/// one more delta when the serial went forward, none kept when it did
/// not (the history no longer leads to the zone served); the oldest
/// deltas dropped while it is larger than `limit`.
pub(crate) fn extend(
    journal: &Journal,
    old: &authority::Zone,
    new: &authority::Zone,
    limit: JournalSize,
) -> Journal {
    let (Some(from), Some(to)) = (old.soa(), new.soa()) else {
        return Journal::default();
    };
    let (Some(a), Some(b)) = (serial(from), serial(to)) else {
        return Journal::default();
    };
    if a == b {
        return journal.clone();
    }
    if !newer(b, a) {
        return Journal::default();
    }
    let before: HashSet<_> = old.records_but_soa().map(identity).collect();
    let after: HashSet<_> = new.records_but_soa().map(identity).collect();
    let delta = Delta {
        from: from.clone(),
        to: to.clone(),
        deleted: old
            .records_but_soa()
            .filter(|r| !after.contains(&identity(r)))
            .cloned()
            .collect(),
        added: new
            .records_but_soa()
            .filter(|r| !before.contains(&identity(r)))
            .cloned()
            .collect(),
    };
    let mut deltas: Vec<Delta> = journal.iter().cloned().collect();
    deltas.push(delta);
    let limit = match limit {
        JournalSize::Unlimited => usize::MAX,
        JournalSize::Bytes(n) => usize::try_from(n).unwrap_or(usize::MAX),
        JournalSize::Default => {
            2 * (new.soa().map_or(0, size) + new.records_but_soa().map(size).sum::<usize>())
        }
    };
    while !deltas.is_empty() && deltas.iter().map(delta_bytes).sum::<usize>() > limit {
        deltas.remove(0);
    }
    Arc::new(deltas)
}

/// The deltas from `from` up to `current`, when the journal has them all.
pub(crate) fn since(journal: &[Delta], from: u32, current: u32) -> Option<&[Delta]> {
    let start = journal.iter().position(|d| serial(&d.from) == Some(from))?;
    let path = &journal[start..];
    let linked = path
        .windows(2)
        .all(|w| serial(&w[0].to) == serial(&w[1].from));
    (linked && path.last().and_then(|d| serial(&d.to)) == Some(current)).then_some(path)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use hickory_server::proto::rr::rdata::{NS, SOA};
    use hickory_server::proto::rr::{LowerName, Name, RecordSet, RrKey};

    use super::*;

    fn zone(serial: u32, hosts: &[(&str, [u8; 4])]) -> authority::Zone {
        let origin = Name::from_ascii("example.test.").unwrap();
        let mut records = vec![
            Record::from_rdata(
                origin.clone(),
                300,
                RData::SOA(SOA::new(origin.clone(), origin.clone(), serial, 1, 1, 1, 1)),
            ),
            Record::from_rdata(origin.clone(), 300, RData::NS(NS(origin.clone()))),
        ];
        for (h, ip) in hosts {
            let name = Name::from_ascii(format!("{h}.example.test.")).unwrap();
            records.push(Record::from_rdata(
                name,
                300,
                RData::A(std::net::Ipv4Addr::from(*ip).into()),
            ));
        }
        let mut sets: BTreeMap<RrKey, RecordSet> = BTreeMap::new();
        for r in records {
            sets.entry(RrKey::new(LowerName::new(&r.name), r.record_type()))
                .or_insert_with(|| RecordSet::new(r.name.clone(), r.record_type(), 0))
                .insert(r, 0);
        }
        authority::Zone::new(&origin, sets)
    }

    #[test]
    fn serials_compare_as_rfc_1982_says() {
        assert!(!newer(5, 5));
        assert!(newer(6, 5));
        assert!(!newer(4, 5));
        // Across the wrap: 1 comes after 4294967295.
        assert!(newer(1, u32::MAX));
        assert!(!newer(u32::MAX, 1));
    }

    #[test]
    fn newer_serials_add_their_differences() {
        let v1 = zone(1, &[("a", [192, 0, 2, 1]), ("b", [192, 0, 2, 2])]);
        let v2 = zone(2, &[("a", [192, 0, 2, 1]), ("c", [192, 0, 2, 3])]);
        let v3 = zone(3, &[("c", [192, 0, 2, 3])]);
        let j = extend(&Journal::default(), &v1, &v2, JournalSize::Unlimited);
        let j = extend(&j, &v2, &v3, JournalSize::Unlimited);
        assert_eq!(j.len(), 2);
        let host = |r: &Record| r.name.to_ascii();
        assert_eq!(
            j[0].deleted.iter().map(host).collect::<Vec<_>>(),
            ["b.example.test."]
        );
        assert_eq!(
            j[0].added.iter().map(host).collect::<Vec<_>>(),
            ["c.example.test."]
        );
        assert_eq!(
            j[1].deleted.iter().map(host).collect::<Vec<_>>(),
            ["a.example.test."]
        );
        assert!(j[1].added.is_empty());
        assert_eq!(since(&j, 1, 3).map(<[Delta]>::len), Some(2));
        assert_eq!(since(&j, 2, 3).map(<[Delta]>::len), Some(1));
        assert!(since(&j, 0, 3).is_none());
        // The same serial again keeps the journal; an older one drops it.
        assert_eq!(
            extend(&j, &v3, &zone(3, &[]), JournalSize::Default).len(),
            2
        );
        assert!(extend(&j, &v3, &zone(2, &[]), JournalSize::Default).is_empty());
        // max-journal-size: only the newest versions that fit are kept.
        let v4 = zone(4, &[("d", [192, 0, 2, 4])]);
        let all = extend(&j, &v3, &v4, JournalSize::Unlimited);
        assert_eq!(all.len(), 3);
        let newest = delta_bytes(&all[2]);
        let fits = |limit: usize| extend(&j, &v3, &v4, JournalSize::Bytes(limit as u64));
        assert_eq!(fits(newest).len(), 1);
        assert_eq!(serial(&fits(newest)[0].from), Some(3));
        assert_eq!(fits(newest + delta_bytes(&all[1])).len(), 2);
        assert!(fits(newest - 1).is_empty());
        // BIND's default, twice the zone: these tiny zones keep the last change.
        assert_eq!(extend(&j, &v3, &v4, JournalSize::Default).len(), 1);
    }
}
