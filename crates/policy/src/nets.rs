//! Sets of networks (CIDR) with a fast membership test, for ACLs and trust tiers.
//!
//! Networks are grouped by prefix length; a lookup masks the address once per length
//! present and binary-searches a sorted list. Lists of a few networks cost a few
//! comparisons, lists of thousands stay logarithmic, and nothing allocates per lookup.

use std::net::IpAddr;

use ipnet::IpNet;

/// A set of IPv4 and IPv6 networks.
#[derive(Debug, Clone, Default)]
pub struct NetSet {
    /// Per IPv4 prefix length present: the sorted network addresses.
    v4: Vec<(u8, Vec<u32>)>,
    /// Per IPv6 prefix length present: the sorted network addresses.
    v6: Vec<(u8, Vec<u128>)>,
    /// The networks as given, for display.
    nets: Vec<IpNet>,
}

impl NetSet {
    /// The set of `nets`.
    pub fn new(nets: &[IpNet]) -> NetSet {
        let mut set = NetSet::default();
        for net in nets {
            set.insert(*net);
        }
        set
    }

    /// Adds a network.
    pub fn insert(&mut self, net: IpNet) {
        let net = net.trunc();
        self.nets.push(net);
        match net {
            IpNet::V4(v4) => {
                let bits = u32::from(v4.network());
                insert_sorted(&mut self.v4, v4.prefix_len(), bits);
            }
            IpNet::V6(v6) => {
                let bits = u128::from(v6.network());
                insert_sorted(&mut self.v6, v6.prefix_len(), bits);
            }
        }
    }

    /// True if `ip` is in one of the networks (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                self.v4.iter().any(|(len, list)| {
                    let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
                    list.binary_search(&(bits & mask)).is_ok()
                })
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                self.v6.iter().any(|(len, list)| {
                    let mask = u128::MAX.checked_shl(128 - u32::from(*len)).unwrap_or(0);
                    list.binary_search(&(bits & mask)).is_ok()
                })
            }
        }
    }

    /// True if the set holds no network.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// The networks, as given.
    pub fn networks(&self) -> &[IpNet] {
        &self.nets
    }
}

fn insert_sorted<T: Ord + Copy>(groups: &mut Vec<(u8, Vec<T>)>, len: u8, bits: T) {
    let index = match groups.iter().position(|(l, _)| *l == len) {
        Some(index) => index,
        None => {
            groups.push((len, Vec::new()));
            groups.len() - 1
        }
    };
    let list = &mut groups[index].1;
    if let Err(at) = list.binary_search(&bits) {
        list.insert(at, bits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(nets: &[&str]) -> NetSet {
        let nets: Vec<IpNet> = nets.iter().map(|n| n.parse().unwrap()).collect();
        NetSet::new(&nets)
    }

    #[test]
    fn membership_by_prefix() {
        let s = set(&["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "0.0.0.0/0"]);
        assert!(s.contains("10.200.1.1".parse().unwrap()));
        assert!(s.contains("192.0.2.7".parse().unwrap()));
        assert!(s.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!s.contains("2001:db9::1".parse().unwrap()));
        // 0.0.0.0/0 holds every IPv4 address, mapped ones included.
        assert!(s.contains("::ffff:203.0.113.1".parse().unwrap()));
        let s = set(&["10.0.0.0/8", "172.16.0.0/12"]);
        assert!(!s.contains("172.32.0.1".parse().unwrap()));
        assert!(s.contains("172.31.255.255".parse().unwrap()));
        assert!(!set(&[]).contains("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn host_bits_of_a_network_are_ignored() {
        let s = set(&["10.1.2.3/8"]);
        assert!(s.contains("10.9.9.9".parse().unwrap()));
    }
}
