//! Attribution: the unit the policy counts, trusts and bans.
//!
//! Only the transport source address is evidence (a From, Contact or Via is whatever
//! the sender wrote). An IPv4 source is one address; an IPv6 source is its prefix (a
//! /64 by default), because one host owns a whole /64 and can change its address in it
//! at will.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// A source as the policy sees it: an IPv4 address or an IPv6 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceKey {
    /// The address with the host bits of an IPv6 prefix cleared.
    addr: IpAddr,
    /// Prefix length: 32 for IPv4, the configured length for IPv6.
    len: u8,
}

impl SourceKey {
    /// The key of `ip`, counting IPv6 per `/v6_prefix` (clamped to 1..=128). An
    /// IPv4-mapped IPv6 address is its IPv4 address.
    pub fn new(ip: IpAddr, v6_prefix: u8) -> SourceKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => SourceKey {
                addr: IpAddr::V4(v4),
                len: 32,
            },
            IpAddr::V6(v6) => {
                let len = v6_prefix.clamp(1, 128);
                let mask = u128::MAX << (128 - u32::from(len));
                SourceKey {
                    addr: IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask)),
                    len,
                }
            }
        }
    }

    /// The network this key stands for (what a kernel set holds).
    pub fn network(&self) -> IpNet {
        match self.addr {
            IpAddr::V4(v4) => IpNet::V4(Ipv4Net::new_assert(v4, 32)),
            IpAddr::V6(v6) => IpNet::V6(Ipv6Net::new_assert(v6, self.len)),
        }
    }

    /// The (first) address of the key.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The address as 128 bits, an IPv4 address in its IPv4-mapped IPv6 form.
    pub(crate) fn bits(&self) -> u128 {
        match self.addr {
            IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
            IpAddr::V6(v6) => u128::from(v6),
        }
    }

    /// Parses `1.2.3.4` or `2001:db8::/64` (an IPv6 address alone is taken per
    /// `v6_prefix`).
    pub fn parse(text: &str, v6_prefix: u8) -> Option<SourceKey> {
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Some(SourceKey::new(ip, v6_prefix));
        }
        match text.parse::<IpNet>().ok()? {
            IpNet::V4(net) if net.prefix_len() == 32 => Some(SourceKey::new(net.addr().into(), 32)),
            IpNet::V6(net) => Some(SourceKey::new(net.addr().into(), net.prefix_len())),
            IpNet::V4(_) => None,
        }
    }
}

impl fmt::Display for SourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/{}", self.len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ipv6_sources_are_counted_per_prefix() {
        let a = SourceKey::new(ip("2001:db8:1:2::1"), 64);
        let b = SourceKey::new(ip("2001:db8:1:2:ffff::9"), 64);
        let c = SourceKey::new(ip("2001:db8:1:3::1"), 64);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_ne!(
            SourceKey::new(ip("2001:db8::1"), 128),
            SourceKey::new(ip("2001:db8::2"), 128)
        );
    }

    #[test]
    fn ipv4_and_mapped_addresses_are_one_key() {
        assert_eq!(
            SourceKey::new(ip("::ffff:192.0.2.7"), 64),
            SourceKey::new(ip("192.0.2.7"), 64)
        );
        assert_eq!(SourceKey::new(ip("192.0.2.7"), 64).to_string(), "192.0.2.7");
        assert_eq!(
            SourceKey::new(ip("192.0.2.7"), 64).network().to_string(),
            "192.0.2.7/32"
        );
    }

    #[test]
    fn keys_parse_back_from_their_text() {
        for text in ["192.0.2.7", "2001:db8:1:2::/64"] {
            assert_eq!(SourceKey::parse(text, 64).unwrap().to_string(), text);
        }
        assert_eq!(
            SourceKey::parse("2001:db8::5", 64).unwrap().to_string(),
            "2001:db8::/64"
        );
        assert_eq!(SourceKey::parse("10.0.0.0/8", 64), None);
        assert_eq!(SourceKey::parse("nonsense", 64), None);
    }
}
