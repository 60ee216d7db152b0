//! From a next hop to the servers to try, as Postfix's smtp does:
//! `[host]:port` without MX lookup, `host:port` or `domain` with it. MX
//! hosts go in preference order (random among equal preferences), with the
//! domain's own A/AAAA when it has no MX; a null MX (RFC 7505) and a route
//! back to this host are permanent failures.

use pfx_maillog::delivery::{Class, Outcome};
use std::net::IpAddr;

use pfx_dns::{Error as DnsError, Resolver};

/// One server to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) host: String,
    pub(crate) ip: IpAddr,
    pub(crate) port: u16,
}

impl Target {
    /// `host[ip]`, how Postfix names a server in its messages.
    pub(crate) fn name(&self) -> String {
        format!("{}[{}]", self.host, self.ip)
    }
}

/// What the next hop says: (host, port, look up MX).
pub(crate) fn parse_nexthop(nexthop: &str) -> (String, u16, bool) {
    let (host, port, mx) = match nexthop.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((h, tail)) => (h, tail.strip_prefix(':'), false),
            None => (rest, None, false),
        },
        None => match nexthop.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty() => {
                (h, Some(p), true)
            }
            _ => (nexthop, None, true),
        },
    };
    let port = port.and_then(|p| p.parse().ok()).unwrap_or(25);
    (host.trim_end_matches('.').to_ascii_lowercase(), port, mx)
}

/// Who "we" are, for loop detection.
pub(crate) struct Me<'a> {
    pub(crate) hostname: &'a str,
    pub(crate) addresses: &'a [IpAddr],
}

impl Me<'_> {
    fn is(&self, host: &str, ips: &[IpAddr]) -> bool {
        host.eq_ignore_ascii_case(self.hostname) || ips.iter().any(|ip| self.addresses.contains(ip))
    }
}

fn not_found(name: &str, rtype: &str, e: &DnsError) -> Outcome {
    match e {
        DnsError::NotFound => Outcome::failed(false, "5.4.4", "none", format!("Host or domain name not found. Name service error for name={name} type={rtype}: Host not found")),
        DnsError::Temporary(_) => Outcome::failed(true, "4.4.3", "none", format!(
                "Host or domain name not found. Name service error for name={name} type={rtype}: Host not found, try again"
            )),
    }
}

fn loops(domain: &str) -> Outcome {
    Outcome::failed(
        false,
        "5.4.6",
        "none",
        format!("mail for {domain} loops back to myself"),
    )
}

/// The servers for `nexthop`, in the order to try them.
pub(crate) async fn servers(
    resolver: &Resolver,
    nexthop: &str,
    me: &Me<'_>,
) -> Result<Vec<Target>, Outcome> {
    let (host, port, use_mx) = parse_nexthop(nexthop);
    let target = |h: &str, ip: IpAddr| Target {
        host: h.to_owned(),
        ip,
        port,
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![target(&host, ip)]);
    }
    let mx = if use_mx {
        match resolver.mx(&host).await {
            Ok(list) => Some(list),
            Err(DnsError::NotFound) => None,
            Err(e) => return Err(not_found(&host, "MX", &e)),
        }
    } else {
        None
    };
    let Some(mut mx) = mx else {
        // No MX: the host itself.
        let ips = resolver
            .addresses(&host)
            .await
            .map_err(|e| not_found(&host, "A", &e))?;
        if use_mx && me.is(&host, &ips) {
            return Err(loops(&host));
        }
        return Ok(ips.into_iter().map(|ip| target(&host, ip)).collect());
    };
    if mx.len() == 1 && mx[0].1.is_empty() {
        return Err(Outcome::failed(
            false,
            "5.1.10",
            "none",
            format!("Domain {host} does not accept mail (nullMX)"),
        ));
    }
    shuffle_equal_preferences(&mut mx);
    let mut out = Vec::new();
    let mut last_error = None;
    for (pref, name) in &mx {
        match resolver.addresses(name).await {
            Ok(ips) if me.is(name, &ips) => {
                // We are this MX: only better ones are worth trying.
                out.retain(|(p, _): &(u16, Target)| p < pref);
                if out.is_empty() {
                    return Err(loops(&host));
                }
                break;
            }
            Ok(ips) => out.extend(ips.into_iter().map(|ip| (*pref, target(name, ip)))),
            Err(e) => last_error = Some(not_found(name, "A", &e)),
        }
    }
    if out.is_empty() {
        // Every MX host failed to resolve: try again later.
        let mut f = last_error.unwrap_or_else(|| not_found(&host, "MX", &DnsError::NotFound));
        f.class = Class::Deferred;
        f.dsn = "4.4.3".into();
        return Err(f);
    }
    Ok(out.into_iter().map(|(_, t)| t).collect())
}

/// Random order among MX hosts of equal preference (RFC 5321 5.1).
fn shuffle_equal_preferences(mx: &mut [(u16, String)]) {
    use std::hash::{BuildHasher, Hasher};
    let mut seed = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let mut start = 0;
    while start < mx.len() {
        let end = start
            + mx[start..]
                .iter()
                .take_while(|(p, _)| *p == mx[start].0)
                .count();
        for i in (start + 1..end).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let j = start + (seed % (i - start + 1) as u64) as usize;
            mx.swap(i, j);
        }
        start = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nexthop_forms() {
        assert_eq!(
            parse_nexthop("[127.0.0.2]:2525"),
            ("127.0.0.2".into(), 2525, false)
        );
        assert_eq!(
            parse_nexthop("[mx.example.test]"),
            ("mx.example.test".into(), 25, false)
        );
        assert_eq!(
            parse_nexthop("example.test:2526"),
            ("example.test".into(), 2526, true)
        );
        assert_eq!(
            parse_nexthop("Example.TEST"),
            ("example.test".into(), 25, true)
        );
    }

    #[test]
    fn equal_preferences_are_shuffled_but_stay_in_their_group() {
        let mut seen_first = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut mx: Vec<(u16, String)> = vec![
                (5, "a".into()),
                (10, "b".into()),
                (10, "c".into()),
                (10, "d".into()),
                (20, "e".into()),
            ];
            shuffle_equal_preferences(&mut mx);
            assert_eq!(mx[0].1, "a");
            assert_eq!(mx[4].1, "e");
            seen_first.insert(mx[1].1.clone());
        }
        assert_eq!(
            seen_first.len(),
            3,
            "every equal-preference host comes first sometimes"
        );
    }
}
