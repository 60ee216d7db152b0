//! Zone files in BIND's master file format, read with hickory's parser and
//! checked the way `named-checkzone` checks them. The directives hickory
//! lacks or reads otherwise (`$GENERATE`, `$INCLUDE file origin`, a
//! relative `$ORIGIN`, no `$TTL`) are rewritten first, as BIND reads them
//! (`crate::directives`).
//!
//! hickory's parser reports what is wrong but not where; [`load`] finds the
//! line by parsing ever longer prefixes of the file, cut only between
//! complete entries, so an error always names the file and line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hickory_proto::rr::rdata::NULL;
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordSet, RecordType, RrKey};
use hickory_proto::serialize::txt::Parser;

/// A zone read from its file and checked.
#[derive(Debug)]
pub struct Zone {
    pub origin: Name,
    pub serial: u32,
    pub records: BTreeMap<RrKey, RecordSet>,
    /// Things BIND would warn about (data outside the zone, dropped).
    pub warnings: Vec<String>,
}

impl Zone {
    /// `zone ywnds.com/IN`, as BIND names a zone in messages.
    pub fn label(name: &str) -> String {
        format!("zone {}/IN", if name.is_empty() { "." } else { name })
    }
}

/// Why a zone did not load, in BIND's words: each message starts with
/// `zone NAME/IN: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{label}: loading from master file {} failed: {reason}", .file.display())]
    Open {
        label: String,
        file: PathBuf,
        reason: String,
    },
    #[error("{label}: bad zone name: {reason}")]
    BadName { label: String, reason: String },
    #[error("{label}: loading from master file {} failed: {}:{line}: {reason}", .file.display(), .file.display())]
    Syntax {
        label: String,
        file: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{label}: has 0 SOA records")]
    NoSoa { label: String },
    #[error("{label}: has no NS records")]
    NoNs { label: String },
    #[error("{label}: {name}: CNAME and other data")]
    CnameAndOtherData { label: String, name: String },
}

/// Reads and checks the zone `name` (no trailing dot) from `path`;
/// relative `$INCLUDE` names are under `base` (named's `directory`).
pub fn load(name: &str, path: &Path, base: &Path) -> Result<Zone, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Open {
        label: Zone::label(name),
        file: path.to_owned(),
        reason: match e.kind() {
            std::io::ErrorKind::NotFound => "file not found".to_owned(),
            _ => e.to_string(),
        },
    })?;
    parse(name, path, &text, base)
}

/// The name servers of a root hints file (`zone "." { type hint; };`):
/// the addresses of its A and AAAA records.
pub fn hints(path: &Path) -> Result<Vec<std::net::IpAddr>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (_, records) = Parser::new(&text, Some(path.to_path_buf()), Some(Name::root()))
        .parse()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let addrs: Vec<_> = records
        .values()
        .flat_map(RecordSet::records_without_rrsigs)
        .filter_map(|r| r.data.ip_addr())
        .collect();
    if addrs.is_empty() {
        return Err(format!("{}: no root server addresses", path.display()));
    }
    Ok(addrs)
}

/// BIND's built-in root hints: the addresses of a.root-servers.net
/// through m.root-servers.net, used when named.conf has no hint zone.
pub const ROOT_SERVERS: &[&str] = &[
    "198.41.0.4",
    "2001:503:ba3e::2:30",
    "170.247.170.2",
    "2801:1b8:10::b",
    "192.33.4.12",
    "2001:500:2::c",
    "199.7.91.13",
    "2001:500:2d::d",
    "192.203.230.10",
    "2001:500:a8::e",
    "192.5.5.241",
    "2001:500:2f::f",
    "192.112.36.4",
    "2001:500:12::d0d",
    "198.97.190.53",
    "2001:500:1::53",
    "192.36.148.17",
    "2001:7fe::53",
    "192.58.128.30",
    "2001:503:c27::2:30",
    "193.0.14.129",
    "2001:7fd::1",
    "199.7.83.42",
    "2001:500:9f::42",
    "202.12.27.33",
    "2001:dc3::35",
];

/// Parses zone text; `path` is used in messages, `base` for relative
/// `$INCLUDE`s.
pub fn parse(name: &str, path: &Path, text: &str, base: &Path) -> Result<Zone, Error> {
    let label = Zone::label(name);
    // The root zone is "" here, "." to hickory.
    let origin = Name::from_ascii(format!("{}.", name.to_ascii_lowercase())).map_err(|e| {
        Error::BadName {
            label: label.clone(),
            reason: e.to_string(),
        }
    })?;
    let flat = crate::directives::flatten(path, text, &origin.to_ascii(), base).map_err(|p| {
        Error::Syntax {
            label: label.clone(),
            file: p.file,
            line: p.line,
            reason: p.reason,
        }
    })?;
    let parsed = Parser::new(&flat.text, Some(path.to_path_buf()), Some(origin.clone())).parse();
    let mut records = match parsed {
        Ok((_, records)) => records,
        Err(e) => {
            let line = failing_line(&flat.text, path, &origin);
            let (file, line) = flat
                .source(line)
                .cloned()
                .unwrap_or_else(|| (path.to_owned(), line));
            return Err(Error::Syntax {
                label,
                file,
                line,
                reason: e.to_string(),
            });
        }
    };
    for e in &flat.extra {
        let name = Name::from_ascii(&e.name).map_err(|err| Error::BadName {
            label: label.clone(),
            reason: err.to_string(),
        })?;
        let data = RData::Unknown {
            code: RecordType::from(e.rtype),
            rdata: NULL::with(e.rdata.clone()),
        };
        let record = Record::from_rdata(name, e.ttl, data);
        records
            .entry(RrKey::new(
                LowerName::new(&record.name),
                record.record_type(),
            ))
            .or_insert_with(|| RecordSet::new(record.name.clone(), record.record_type(), 0))
            .insert(record, 0);
    }
    let mut zone = check(&label, origin, records)?;
    zone.warnings.splice(0..0, flat.warnings);
    Ok(zone)
}

/// The line of the first entry whose inclusion makes the parse fail.
fn failing_line(text: &str, path: &Path, origin: &Name) -> usize {
    let cuts: Vec<(usize, usize)> = crate::directives::entries(text)
        .iter()
        .map(|e| (e.end, e.line))
        .collect();
    let fails = |end: usize| {
        Parser::new(
            &text[..end],
            Some(PathBuf::from(path)),
            Some(origin.clone()),
        )
        .parse()
        .is_err()
    };
    // Parsing stops at the first error, so failure is monotonic in the prefix.
    let (mut lo, mut hi) = (0, cuts.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails(cuts[mid].0) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    cuts.get(lo)
        .map_or_else(|| text.lines().count().max(1), |c| c.1)
}

fn check(
    label: &str,
    origin: Name,
    mut records: BTreeMap<RrKey, RecordSet>,
) -> Result<Zone, Error> {
    let mut warnings = Vec::new();
    let apex = hickory_proto::rr::LowerName::new(&origin);
    records.retain(|key, _| {
        let inside = apex.zone_of(&key.name);
        if !inside {
            warnings.push(format!("{label}: ignoring out-of-zone data ({})", key.name));
        }
        inside
    });
    let soa = records
        .get(&RrKey::new(apex.clone(), RecordType::SOA))
        .and_then(|set| set.records_without_rrsigs().next())
        .and_then(|r| match &r.data {
            RData::SOA(soa) => Some(soa.serial),
            _ => None,
        });
    let Some(serial) = soa else {
        return Err(Error::NoSoa {
            label: label.to_owned(),
        });
    };
    if !records.contains_key(&RrKey::new(apex.clone(), RecordType::NS)) {
        return Err(Error::NoNs {
            label: label.to_owned(),
        });
    }
    for key in records.keys() {
        if key.record_type == RecordType::CNAME
            && records.keys().any(|k| {
                k.name == key.name
                    && !matches!(
                        k.record_type,
                        RecordType::CNAME | RecordType::RRSIG | RecordType::NSEC
                    )
            })
        {
            return Err(Error::CnameAndOtherData {
                label: label.to_owned(),
                name: key.name.to_string(),
            });
        }
    }
    // named-checkzone's SPF check: an SPF record wants its TXT twin.
    let spf = RecordType::from(99);
    for key in records.keys().filter(|k| k.record_type == spf) {
        let has_txt = records
            .get(&RrKey::new(key.name.clone(), RecordType::TXT))
            .is_some_and(|set| {
                set.records_without_rrsigs().any(|r| match &r.data {
                    RData::TXT(t) => t.txt_data.first().is_some_and(|d| d.starts_with(b"v=spf1")),
                    _ => false,
                })
            });
        if !has_txt {
            let name = key.name.to_string();
            warnings.push(format!(
                "{label}: '{}' found type SPF record but no SPF TXT record found, add matching type TXT record",
                name.trim_end_matches('.')
            ));
        }
    }
    Ok(Zone {
        origin,
        serial,
        records,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZONE: &str = "\
$TTL 1D
@       IN SOA  ns.ywnds.com. root.ywnds.com. (
                2024010101 ; serial
                3H         ; refresh
                15M        ; retry
                1W         ; expire
                1D )       ; minimum
        IN NS   ns
        IN MX   10 mail
ns      IN A    127.0.0.1
mail    IN A    127.0.0.1
www     IN CNAME mail
txt     IN TXT  \"v=spf1 mx -all\"
_smtp._tcp IN SRV 0 5 25 mail
@       IN CAA  0 issue \"letsencrypt.org\"
v6      IN AAAA ::1
";

    fn zone(text: &str) -> Result<Zone, Error> {
        parse(
            "ywnds.com",
            Path::new("/z/ywnds.com.zone"),
            text,
            Path::new("/z"),
        )
    }

    #[test]
    fn the_root_zone_and_root_hints() {
        let z = parse(
            "",
            Path::new("root.zone"),
            "$TTL 3600\n. IN SOA a.root-servers.net. h.root-servers.net. 1 3600 600 86400 300\n\
             . IN NS a.root-servers.net.\na.root-servers.net. IN A 127.0.0.201\ntest. IN NS ns.test.\n",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(z.serial, 1);
        let dir = tempfile::tempdir().unwrap();
        let h = dir.path().join("root.hints");
        std::fs::write(&h, ". 3600000 NS a.root-servers.net.\na.root-servers.net. 3600000 A 127.0.0.201\na.root-servers.net. 3600000 AAAA ::1\n").unwrap();
        assert_eq!(
            hints(&h).unwrap(),
            [
                "127.0.0.201".parse::<std::net::IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        std::fs::write(&h, ". 3600000 NS a.root-servers.net.\n").unwrap();
        assert!(hints(&h).unwrap_err().ends_with("no root server addresses"));
        assert!(ROOT_SERVERS
            .iter()
            .all(|a| a.parse::<std::net::IpAddr>().is_ok()));
    }

    #[test]
    fn reads_the_seed_zone() {
        let z = zone(ZONE).unwrap();
        assert_eq!(z.serial, 2024010101);
        assert_eq!(z.origin.to_ascii(), "ywnds.com.");
        let has = |name: &str, t: RecordType| {
            z.records
                .contains_key(&RrKey::new(Name::from_ascii(name).unwrap().into(), t))
        };
        for (n, t) in [
            ("ywnds.com.", RecordType::SOA),
            ("ywnds.com.", RecordType::NS),
            ("ywnds.com.", RecordType::MX),
            ("ywnds.com.", RecordType::CAA),
            ("mail.ywnds.com.", RecordType::A),
            ("www.ywnds.com.", RecordType::CNAME),
            ("txt.ywnds.com.", RecordType::TXT),
            ("_smtp._tcp.ywnds.com.", RecordType::SRV),
            ("v6.ywnds.com.", RecordType::AAAA),
        ] {
            assert!(has(n, t), "{n} {t}");
        }
        let soa = z
            .records
            .get(&RrKey::new(
                Name::from_ascii("ywnds.com.").unwrap().into(),
                RecordType::SOA,
            ))
            .unwrap();
        assert_eq!(soa.ttl(), 86400);
    }

    #[test]
    fn errors_name_the_line() {
        let bad = ZONE.replace("mail    IN A    127.0.0.1", "mail    IN A    127.0.0.300");
        let e = zone(&bad).unwrap_err().to_string();
        assert!(
            e.starts_with("zone ywnds.com/IN: loading from master file /z/ywnds.com.zone failed: /z/ywnds.com.zone:11: "),
            "{e}"
        );
        let bad = ZONE.replace("3H         ; refresh", "3Q         ; refresh");
        let e = zone(&bad).unwrap_err().to_string();
        assert!(e.contains("/z/ywnds.com.zone:2: "), "{e}");
        let e = zone("$TTL 1D\n@ IN NS ns\nns IN A 127.0.0.1\n")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "zone ywnds.com/IN: has 0 SOA records");
        let e = zone(&ZONE.replace("        IN NS   ns\n", ""))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "zone ywnds.com/IN: has no NS records");
        let e = zone(&format!("{ZONE}www IN A 127.0.0.2\n"))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "zone ywnds.com/IN: www.ywnds.com.: CNAME and other data");
    }

    #[test]
    fn out_of_zone_data_is_dropped_with_a_warning() {
        let z = zone(&format!("{ZONE}other.example. IN A 127.0.0.9\n")).unwrap();
        assert_eq!(
            z.warnings,
            vec!["zone ywnds.com/IN: ignoring out-of-zone data (other.example.)"]
        );
    }

    #[test]
    fn entry_boundaries() {
        let t = "a\n\nb (\n c\n)\n; x\nd \"(\" ; (\n";
        let ends: Vec<(usize, usize)> = crate::directives::entries(t)
            .iter()
            .map(|e| (e.end, e.line))
            .collect();
        assert_eq!(ends, vec![(2, 1), (12, 3), (26, 7)]);
    }
}
