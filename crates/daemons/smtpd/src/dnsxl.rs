//! DNS block and allow lists (`reject_rbl_client`, `reject_rhsbl_*`,
//! `permit_dnswl_client`, `permit_rhswl_client`): the query name, the A
//! lookup with its optional `=127.0.0.N` filter, and the TXT reason.

use std::net::IpAddr;

use pfx_config::restriction::filter_matches;
use tracing::warn;

/// What a list said.
pub(crate) enum Found {
    /// Listed (with an A record the filter accepts); the TXT reason, if any.
    Listed(String),
    NotListed,
    /// The list did not answer: logged; a block list lets the client
    /// pass, an allow list defers a rejection.
    Unavailable,
}

/// The longest TXT reason kept, as Postfix.
const TXT_LIMIT: usize = 500;

/// `d.c.b.a.list` for IPv4, the 32 reversed nibbles for IPv6.
pub(crate) fn address_query(ip: IpAddr, list: &str) -> String {
    let reversed = pfx_dns::reverse_name(ip);
    let head = reversed
        .trim_end_matches("in-addr.arpa.")
        .trim_end_matches("ip6.arpa.");
    format!("{head}{list}")
}

/// `domain.list` for a name or the domain of an address; `None` when
/// there is nothing to ask (an address literal, an all-numeric last
/// label, an invalid name).
pub(crate) fn domain_query(what: &str, list: &str) -> Option<String> {
    let domain = what.rsplit_once('@').map_or(what, |(_, d)| d);
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.is_empty() || domain.starts_with('[') {
        return None;
    }
    let last = domain.rsplit('.').next().unwrap_or(domain);
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let valid = domain.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    valid.then(|| format!("{domain}.{list}"))
}

/// Asks the list; `filter` limits which A records count.
pub(crate) async fn lookup(dns: &pfx_dns::Resolver, query: &str, filter: Option<&str>) -> Found {
    let addrs = match dns.a(query).await {
        Ok(a) => a,
        Err(pfx_dns::Error::NotFound) => return Found::NotListed,
        Err(pfx_dns::Error::Temporary(e)) => {
            warn!("{query}: RBL lookup error: Host or domain name not found. Name service error for name={query} type=A: Host not found, try again");
            tracing::debug!("{query}: {e}");
            return Found::Unavailable;
        }
    };
    if let Some(f) = filter {
        if !addrs.iter().any(|a| filter_matches(f, *a).unwrap_or(false)) {
            return Found::NotListed;
        }
    }
    let txt = match dns.txt(query).await {
        Ok(records) => {
            let mut t = records.join(" / ");
            if t.len() > TXT_LIMIT {
                let mut end = TXT_LIMIT;
                while !t.is_char_boundary(end) {
                    end -= 1;
                }
                t.truncate(end);
            }
            t
        }
        Err(_) => String::new(),
    };
    Found::Listed(txt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_names() {
        assert_eq!(
            address_query("127.0.0.2".parse().unwrap(), "bl.test"),
            "2.0.0.127.bl.test"
        );
        assert!(address_query("::1".parse().unwrap(), "bl.test").starts_with("1.0.0.0."));
        assert!(address_query("::1".parse().unwrap(), "bl.test").ends_with(".0.bl.test"));
        assert_eq!(
            domain_query("user@spam.example", "dbl.test").as_deref(),
            Some("spam.example.dbl.test")
        );
        assert_eq!(domain_query("user@[127.0.0.1]", "dbl.test"), None);
        assert_eq!(domain_query("10.0.0.1", "dbl.test"), None);
        assert_eq!(domain_query("", "dbl.test"), None);
    }
}
