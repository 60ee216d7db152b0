//! The DNSSEC records of a signed zone (what `dnssec-signzone` writes:
//! RRSIG, NSEC, NSEC3, NSEC3PARAM, DNSKEY, DS, CDNSKEY, CDS) from their
//! text form to wire RDATA, for zones named serves as they are signed.
//! hickory's zone parser refuses RRSIGs (it signs zones itself), so these
//! are read here, as the other types it cannot read are (directives.rs).

use base64::Engine;
use hickory_proto::rr::RecordType;
use std::str::FromStr;

/// The type code of a DNSSEC record this module reads.
pub(crate) fn code(rtype: &str) -> Option<u16> {
    Some(match rtype {
        "DS" => 43,
        "RRSIG" => 46,
        "NSEC" => 47,
        "DNSKEY" => 48,
        "NSEC3" => 50,
        "NSEC3PARAM" => 51,
        "CDS" => 59,
        "CDNSKEY" => 60,
        _ => return None,
    })
}

/// Whether `code` is one of the types [`code`] names.
pub(crate) fn is_dnssec(code: u16) -> bool {
    matches!(code, 43 | 46 | 47 | 48 | 50 | 51 | 59 | 60)
}

/// `rdata` (the record's words) of type `code` in wire form; names are
/// made absolute with `absolute` and encoded with `wire_name`.
pub(crate) fn encode(
    code: u16,
    rdata: &[String],
    name: &dyn Fn(&str) -> Result<Vec<u8>, String>,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let field = |i: usize| rdata.get(i).map(String::as_str).ok_or("too few fields");
    match code {
        // flags protocol algorithm key
        48 | 60 => {
            out.extend(num::<u16>(field(0)?)?.to_be_bytes());
            out.push(num::<u8>(field(1)?)?);
            out.push(algorithm(field(2)?)?);
            out.extend(base64(&rdata[3..])?);
        }
        // key-tag algorithm digest-type digest
        43 | 59 => {
            out.extend(num::<u16>(field(0)?)?.to_be_bytes());
            out.push(algorithm(field(1)?)?);
            out.push(num::<u8>(field(2)?)?);
            out.extend(hex(&rdata[3..].concat())?);
        }
        // covered algorithm labels original-ttl expiration inception key-tag signer signature
        46 => {
            out.extend(type_code(field(0)?)?.to_be_bytes());
            out.push(algorithm(field(1)?)?);
            out.push(num::<u8>(field(2)?)?);
            out.extend(num::<u32>(field(3)?)?.to_be_bytes());
            out.extend(time(field(4)?)?.to_be_bytes());
            out.extend(time(field(5)?)?.to_be_bytes());
            out.extend(num::<u16>(field(6)?)?.to_be_bytes());
            out.extend(name(field(7)?)?);
            out.extend(base64(&rdata[8..])?);
        }
        // next-name types...
        47 => {
            out.extend(name(field(0)?)?);
            out.extend(bitmap(&rdata[1..])?);
        }
        // algorithm flags iterations salt next-hashed types...
        50 => {
            out.push(num::<u8>(field(0)?)?);
            out.push(num::<u8>(field(1)?)?);
            out.extend(num::<u16>(field(2)?)?.to_be_bytes());
            out.extend(salt(field(3)?)?);
            let next = base32hex(field(4)?)?;
            out.push(u8::try_from(next.len()).map_err(|_| "hashed name too long")?);
            out.extend(next);
            out.extend(bitmap(&rdata[5..])?);
        }
        // algorithm flags iterations salt
        51 => {
            out.push(num::<u8>(field(0)?)?);
            out.push(num::<u8>(field(1)?)?);
            out.extend(num::<u16>(field(2)?)?.to_be_bytes());
            out.extend(salt(field(3)?)?);
        }
        _ => return Err(format!("TYPE{code} is not a DNSSEC type")),
    }
    Ok(out)
}

fn num<T: FromStr>(s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("bad number '{s}'"))
}

/// An algorithm by number or by its mnemonic (RFC 8624's list).
fn algorithm(s: &str) -> Result<u8, String> {
    if let Ok(n) = s.parse() {
        return Ok(n);
    }
    Ok(match s.to_ascii_uppercase().as_str() {
        "RSAMD5" => 1,
        "DH" => 2,
        "DSA" => 3,
        "RSASHA1" => 5,
        "DSA-NSEC3-SHA1" => 6,
        "NSEC3RSASHA1" => 7,
        "RSASHA256" => 8,
        "RSASHA512" => 10,
        "ECC-GOST" => 12,
        "ECDSAP256SHA256" => 13,
        "ECDSAP384SHA384" => 14,
        "ED25519" => 15,
        "ED448" => 16,
        "INDIRECT" => 252,
        "PRIVATEDNS" => 253,
        "PRIVATEOID" => 254,
        _ => return Err(format!("unknown algorithm '{s}'")),
    })
}

fn type_code(s: &str) -> Result<u16, String> {
    let upper = s.to_ascii_uppercase();
    if let Some(n) = upper.strip_prefix("TYPE") {
        if let Ok(n) = n.parse() {
            return Ok(n);
        }
    }
    if let Some(c) = code(&upper) {
        return Ok(c);
    }
    match RecordType::from_str(&upper) {
        Ok(t) if !matches!(t, RecordType::Unknown(_)) => Ok(u16::from(t)),
        _ => match upper.as_str() {
            "SPF" => Ok(99),
            "DNAME" => Ok(39),
            "LOC" => Ok(29),
            "RP" => Ok(17),
            _ => Err(format!("unknown type '{s}'")),
        },
    }
}

/// RFC 4034 §4.1.2's type bit maps.
fn bitmap(types: &[String]) -> Result<Vec<u8>, String> {
    let mut codes: Vec<u16> = types
        .iter()
        .map(|t| type_code(t))
        .collect::<Result<_, _>>()?;
    codes.sort_unstable();
    codes.dedup();
    let mut out = Vec::new();
    let mut i = 0;
    while i < codes.len() {
        let window = codes[i] >> 8;
        let mut bits = [0u8; 32];
        let mut len = 0;
        while i < codes.len() && codes[i] >> 8 == window {
            let low = usize::from(codes[i] & 0xff);
            bits[low / 8] |= 0x80 >> (low % 8);
            len = low / 8 + 1;
            i += 1;
        }
        out.push(window as u8);
        out.push(len as u8);
        out.extend_from_slice(&bits[..len]);
    }
    Ok(out)
}

/// `YYYYMMDDHHMMSS` (UTC) or seconds since the epoch.
fn time(s: &str) -> Result<u32, String> {
    if s.len() != 14 {
        return num(s);
    }
    let part = |a: usize, b: usize| {
        s[a..b]
            .parse::<i64>()
            .map_err(|_| format!("bad time '{s}'"))
    };
    let (y, m, d) = (part(0, 4)?, part(4, 6)?, part(6, 8)?);
    let (hh, mm, ss) = (part(8, 10)?, part(10, 12)?, part(12, 14)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    // RRSIG times are serial numbers modulo 2^32 (RFC 4034 §3.1.5).
    Ok(secs.rem_euclid(1 << 32) as u32)
}

fn base64(words: &[String]) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(words.concat())
        .map_err(|_| "bad base64".to_owned())
}

fn hex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err(format!("bad hex '{s}'"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| format!("bad hex '{s}'")))
        .collect()
}

/// NSEC3's salt: `-` for none, else hex; with its length byte.
fn salt(s: &str) -> Result<Vec<u8>, String> {
    let bytes = if s == "-" { Vec::new() } else { hex(s)? };
    let mut out = vec![u8::try_from(bytes.len()).map_err(|_| "salt too long")?];
    out.extend(bytes);
    Ok(out)
}

/// RFC 4648's base32 with the extended hex alphabet, unpadded.
fn base32hex(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.trim_end_matches('=').chars() {
        let v = c
            .to_digit(32)
            .ok_or_else(|| format!("bad base32hex '{s}'"))?;
        acc = (acc << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn name(n: &str) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        for l in n.trim_end_matches('.').split('.') {
            out.push(l.len() as u8);
            out.extend(l.bytes());
        }
        out.push(0);
        Ok(out)
    }

    #[test]
    fn signzone_output_is_read() {
        let ds = encode(43, &words("7795 13 2 0A0B0C0D"), &name).unwrap();
        assert_eq!(ds, [0x1e, 0x73, 13, 2, 0x0a, 0x0b, 0x0c, 0x0d]);
        let key = encode(48, &words("256 3 ECDSAP256SHA256 AQID BA=="), &name).unwrap();
        assert_eq!(key, [1, 0, 3, 13, 1, 2, 3, 4]);
        let sig = encode(
            46,
            &words("SOA 13 2 3600 20270104140548 20261205140548 7795 example.com. AAEC"),
            &name,
        )
        .unwrap();
        assert_eq!(&sig[..2], &[0, 6]);
        assert_eq!(&sig[4..8], &3600u32.to_be_bytes());
        assert_eq!(&sig[8..12], &1_799_071_548u32.to_be_bytes());
        assert_eq!(&sig[16..18], &7795u16.to_be_bytes());
        assert_eq!(&sig[18..31], b"\x07example\x03com\x00");
        assert_eq!(&sig[31..], &[0, 1, 2]);
        // NSEC: next name, then window 0 with A(1), NS(2), SOA(6), RRSIG(46), NSEC(47).
        let nsec = encode(47, &words("ns1.example.com. NS SOA A RRSIG NSEC"), &name).unwrap();
        let bits = &nsec[17..];
        assert_eq!(&bits[..2], &[0, 6]);
        assert_eq!(bits[2], 0b0110_0010);
        assert_eq!(bits[7], 0b0000_0011);
        let n3 = encode(
            50,
            &words("1 0 10 AABB 2T7B4G4VSA5SMI47K61MV5BV1A22BOJR A RRSIG"),
            &name,
        )
        .unwrap();
        assert_eq!(&n3[..7], &[1, 0, 0, 10, 2, 0xaa, 0xbb]);
        assert_eq!(n3[7], 20);
        assert_eq!(
            encode(51, &words("1 0 0 -"), &name).unwrap(),
            [1, 0, 0, 0, 0]
        );
        assert!(encode(46, &words("SOA 13"), &name).is_err());
        assert!(encode(43, &words("1 13 2 XYZ"), &name).is_err());
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(time("19700101000000").unwrap(), 0);
        assert_eq!(time("20261205142301").unwrap(), 1_796_480_581);
        assert_eq!(time("1796480581").unwrap(), 1_796_480_581);
    }
}
