//! The client's address behind trusted reverse proxies: the TCP peer, unless the peer is a
//! configured proxy, in which case the right-most `X-Forwarded-For` entry that is not itself a
//! trusted proxy. A client can write anything into the header; only the hops appended by
//! proxies we trust are believed.

use std::net::IpAddr;

use http::HeaderMap;

/// One trusted address or network (`10.0.0.0/8`, `::1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Parses `IP` or `IP/PREFIX`.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(prefix) => prefix
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?} has a bad prefix length (0 to {max})"))?,
        };
        Ok(Self { addr, prefix })
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        };
        let (net, ip, bits) = match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                (u128::from(net.to_bits()), u128::from(ip.to_bits()), 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => (net.to_bits(), ip.to_bits(), 128),
            _ => return false,
        };
        let shift = bits - u32::from(self.prefix);
        shift >= bits || (net >> shift) == (ip >> shift)
    }
}

/// The client address for limits and logs.
pub(crate) fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Network]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if is_trusted(ip) => client = ip,
            Ok(ip) => return ip,
            // An entry we cannot read: stop at the last address we could vouch for.
            Err(_) => return client,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in xff {
            map.append("x-forwarded-for", value.parse().unwrap());
        }
        map
    }

    fn nets(list: &[&str]) -> Vec<Network> {
        list.iter().map(|n| Network::parse(n).unwrap()).collect()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn networks_parse_and_match() {
        let ten = Network::parse("10.0.0.0/8").unwrap();
        assert!(ten.contains(ip("10.1.2.3")));
        assert!(!ten.contains(ip("11.0.0.1")));
        assert!(ten.contains(ip("::ffff:10.0.0.9")), "v4-mapped v6");
        assert!(Network::parse("0.0.0.0/0").unwrap().contains(ip("1.2.3.4")));
        assert!(Network::parse("::1").unwrap().contains(ip("::1")));
        assert!(!Network::parse("::1").unwrap().contains(ip("127.0.0.1")));
        assert!(Network::parse("fd00::/8").unwrap().contains(ip("fd12::1")));
        for bad in ["", "10.0.0.0/33", "::/129", "nope", "10.0.0.0/x"] {
            assert!(Network::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_header_counts_only_behind_a_trusted_peer() {
        let trusted = nets(&["127.0.0.1", "10.0.0.0/8"]);
        let forged = headers(&["6.6.6.6"]);
        assert_eq!(
            client_ip(ip("203.0.113.9"), &forged, &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(client_ip(ip("127.0.0.1"), &forged, &trusted), ip("6.6.6.6"));
        // A client-written entry left of the proxies' hops is not believed.
        let chain = headers(&["6.6.6.6, 198.51.100.7", "10.0.0.5"]);
        assert_eq!(
            client_ip(ip("127.0.0.1"), &chain, &trusted),
            ip("198.51.100.7")
        );
        // No header, or only proxies: the last trusted address.
        assert_eq!(
            client_ip(ip("127.0.0.1"), &headers(&[]), &trusted),
            ip("127.0.0.1")
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), &headers(&["10.0.0.5"]), &trusted),
            ip("10.0.0.5")
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), &headers(&["garbage"]), &trusted),
            ip("127.0.0.1")
        );
        // Nothing trusted: the peer, whatever the header says.
        assert_eq!(client_ip(ip("127.0.0.1"), &forged, &[]), ip("127.0.0.1"));
    }
}
