//! mynetworks' default: the networks of this machine's interfaces, as
//! `mynetworks_style` says (`host`: each address alone; `subnet`: each
//! address's subnet; `class`: its old class A/B/C network, subnet for
//! IPv6), for the addresses `inet_interfaces` and `inet_protocols` name.
//! Postfix prints IPv4 networks first, then IPv6, each in interface order.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The default value of mynetworks, as `postconf -d` prints it.
pub(crate) fn mynetworks(style: &str, inet_interfaces: &str, inet_protocols: &str) -> String {
    let protocols = crate::value::split_list(inet_protocols);
    let all = protocols.is_empty() || protocols.iter().any(|p| p == "all");
    let v4 = all || protocols.iter().any(|p| p == "ipv4");
    let v6 = all || protocols.iter().any(|p| p == "ipv6");
    let wanted = crate::value::split_list(inet_interfaces);
    let mut addrs: Vec<(IpAddr, u8)> = Vec::new();
    for (addr, prefix) in interface_addresses() {
        let keep = wanted.iter().any(|w| match w.as_str() {
            "all" => true,
            "loopback-only" => addr.is_loopback(),
            other => other.trim_matches(['[', ']']).parse::<IpAddr>() == Ok(addr),
        });
        if keep && !addrs.iter().any(|(a, _)| *a == addr) {
            addrs.push((addr, prefix));
        }
    }
    let mut out: Vec<String> = Vec::new();
    for (addr, prefix) in addrs.iter().filter(|(a, _)| a.is_ipv4() && v4) {
        out.push(network(*addr, *prefix, style));
    }
    for (addr, prefix) in addrs.iter().filter(|(a, _)| a.is_ipv6() && v6) {
        out.push(format!(
            "[{}",
            network(*addr, *prefix, style).replacen('/', "]/", 1)
        ));
    }
    out.dedup();
    out.join(" ")
}

fn network(addr: IpAddr, prefix: u8, style: &str) -> String {
    let prefix = match (style, addr) {
        ("host", IpAddr::V4(_)) => 32,
        ("host", IpAddr::V6(_)) => 128,
        ("class", IpAddr::V4(a)) => match a.octets()[0] {
            0..=127 => 8,
            128..=191 => 16,
            192..=223 => 24,
            _ => prefix,
        },
        _ => prefix,
    };
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            format!("{}/{prefix}", Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            format!("{}/{prefix}", Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

/// Every address of every interface that is up, with its prefix length.
fn interface_addresses() -> Vec<(IpAddr, u8)> {
    let Ok(ifaddrs) = nix::ifaddrs::getifaddrs() else {
        return vec![(IpAddr::V4(Ipv4Addr::LOCALHOST), 8)];
    };
    let mut out = Vec::new();
    for ifa in ifaddrs {
        let (Some(addr), Some(mask)) = (ifa.address, ifa.netmask) else {
            continue;
        };
        if let (Some(a), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
            let prefix = u32::from(m.ip()).count_ones() as u8;
            out.push((IpAddr::V4(a.ip()), prefix));
        } else if let (Some(a), Some(m)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
            let prefix = u128::from(m.ip()).count_ones() as u8;
            out.push((IpAddr::V6(a.ip()), prefix));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn styles_give_host_subnet_and_class_networks() {
        let a: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(network(a, 24, "host"), "192.0.2.2/32");
        assert_eq!(network(a, 24, "subnet"), "192.0.2.0/24");
        assert_eq!(
            network("10.1.2.3".parse().unwrap(), 24, "class"),
            "10.0.0.0/8"
        );
        let b: IpAddr = "fe80::fc:ff:fe00:1".parse().unwrap();
        assert_eq!(network(b, 64, "subnet"), "fe80::/64");
        assert_eq!(network(b, 64, "host"), "fe80::fc:ff:fe00:1/128");
    }

    #[test]
    fn loopback_only_keeps_the_loopback_networks() {
        let v = mynetworks("subnet", "loopback-only", "ipv4");
        assert_eq!(v, "127.0.0.0/8");
        let v = mynetworks("host", "127.0.0.1", "all");
        assert_eq!(v, "127.0.0.1/32");
    }
}
