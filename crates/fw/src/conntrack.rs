//! Removing the connection-tracking entries of banned sources.
//!
//! sipwall's ban chain drops packets before connection tracking sees them, so a tracked
//! flow cannot carry a banned source past it. The entries are removed all the same: a
//! host policy elsewhere (another program's table) may accept `ct state established`
//! packets before looking at anything else, and the entries would otherwise hold
//! conntrack table slots for minutes, or days for TCP.
//!
//! The `conntrack` tool walks the whole table for every `-D` it is given (milliseconds
//! each), so this talks ctnetlink itself: one dump of the table per sweep, matched
//! against every source of the sweep, then one delete by exact tuple (a hash lookup in
//! the kernel) per matching entry.

use std::collections::HashSet;
use std::io;
use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_netfilter::conntrack::{ConntrackAttribute, ConntrackMessage, IPTuple, Tuple};
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

/// Why a sweep failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConntrackError {
    /// The netlink socket failed (not root, or no conntrack in this kernel).
    #[error("conntrack netlink: {0}")]
    Io(#[from] io::Error),
    /// The kernel refused the dump.
    #[error("conntrack dump refused by the kernel: error {0}")]
    Refused(i32),
}

/// The sources of one sweep, for matching entries by their original source address.
#[derive(Debug, Default)]
struct Sources {
    v4: HashSet<IpAddr>,
    /// IPv6 prefixes by length, each a set of masked addresses.
    v6: Vec<(u8, HashSet<u128>)>,
}

impl Sources {
    fn new(sources: &[IpNet]) -> Sources {
        let mut set = Sources::default();
        for source in sources {
            match source {
                IpNet::V4(net) => {
                    set.v4.insert(IpAddr::V4(net.addr()));
                }
                IpNet::V6(net) => {
                    let len = net.prefix_len();
                    let bits = u128::from(net.trunc().addr());
                    match set.v6.iter_mut().find(|(l, _)| *l == len) {
                        Some((_, bucket)) => {
                            bucket.insert(bits);
                        }
                        None => set.v6.push((len, HashSet::from([bits]))),
                    }
                }
            }
        }
        set
    }

    fn contains(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(_) => self.v4.contains(&addr),
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                self.v6.iter().any(|(len, bucket)| {
                    let mask = u128::MAX.checked_shl(128 - u32::from(*len)).unwrap_or(0);
                    bucket.contains(&(bits & mask))
                })
            }
        }
    }
}

/// The original source address of a conntrack entry.
fn original_source(attributes: &[ConntrackAttribute]) -> Option<(IpAddr, &Vec<Tuple>)> {
    attributes.iter().find_map(|attribute| match attribute {
        ConntrackAttribute::CtaTupleOrig(tuple) => tuple.iter().find_map(|part| match part {
            Tuple::Ip(ips) => ips.iter().find_map(|ip| match ip {
                IPTuple::SourceAddress(addr) => Some((*addr, tuple)),
                _ => None,
            }),
            _ => None,
        }),
        _ => None,
    })
}

/// A ctnetlink socket.
pub struct Conntrack {
    socket: Socket,
    buffer: Vec<u8>,
    sequence: u32,
}

impl std::fmt::Debug for Conntrack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conntrack").finish_non_exhaustive()
    }
}

impl Conntrack {
    /// Opens a netlink socket to the kernel's connection tracking.
    pub fn open() -> Result<Conntrack, ConntrackError> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Conntrack {
            socket,
            buffer: vec![0; 1 << 16],
            sequence: 0,
        })
    }

    fn send(
        &mut self,
        family: NetfilterProtoFamily,
        message: ConntrackMessage,
        flags: u16,
    ) -> Result<(), ConntrackError> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.sequence;
        let mut packet = NetlinkMessage::new(
            header,
            NetlinkPayload::from(NetfilterMessage::new(
                NetfilterHeader::new(family, 0, 0),
                message,
            )),
        );
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        self.socket.send(&bytes, 0)?;
        Ok(())
    }

    /// Reads replies to the last request until `Done` or an error message; `each`
    /// sees every conntrack entry. Returns the kernel's error code, 0 for success.
    fn receive(
        &mut self,
        mut each: impl FnMut(NetfilterProtoFamily, &[ConntrackAttribute]),
    ) -> Result<i32, ConntrackError> {
        loop {
            let size = self.socket.recv(&mut &mut self.buffer[..], 0)?;
            let mut offset = 0;
            while offset + 16 <= size {
                let bytes = &self.buffer[offset..size];
                let length = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
                if length < 16 || length > bytes.len() {
                    break;
                }
                // Netlink messages are 4-byte aligned within a datagram.
                offset += (length + 3) & !3;
                let Ok(message) = NetlinkMessage::<NetfilterMessage>::deserialize(&bytes[..length])
                else {
                    // An entry with an attribute this parser does not know: skip it.
                    continue;
                };
                if message.header.sequence_number != self.sequence {
                    continue;
                }
                match message.payload {
                    NetlinkPayload::Done(_) => return Ok(0),
                    NetlinkPayload::Error(error) => {
                        return Ok(error.code.map_or(0, |code| code.get()));
                    }
                    NetlinkPayload::InnerMessage(inner) => {
                        if let netlink_packet_netfilter::NetfilterMessageInner::Conntrack(
                            ConntrackMessage::New(attributes),
                        ) = &inner.inner
                        {
                            each(inner.header.family, attributes);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Deletes every entry whose original source is one of `sources` (an IPv4 address or
    /// an IPv6 prefix); returns how many were deleted. One walk of the table, whatever
    /// the number of sources.
    pub fn remove_sources(&mut self, sources: &[IpNet]) -> Result<usize, ConntrackError> {
        if sources.is_empty() {
            return Ok(0);
        }
        let wanted = Sources::new(sources);
        let mut doomed: Vec<(NetfilterProtoFamily, Vec<Tuple>)> = Vec::new();
        self.send(
            NetfilterProtoFamily::Unspec,
            ConntrackMessage::Get(Vec::new()),
            NLM_F_REQUEST | NLM_F_DUMP,
        )?;
        let code = self.receive(|family, attributes| {
            if let Some((source, tuple)) = original_source(attributes)
                && wanted.contains(source)
            {
                doomed.push((family, tuple.clone()));
            }
        })?;
        if code != 0 {
            return Err(ConntrackError::Refused(code));
        }
        let mut removed = 0;
        for (family, tuple) in doomed {
            self.send(
                family,
                ConntrackMessage::Delete(vec![ConntrackAttribute::CtaTupleOrig(tuple)]),
                NLM_F_REQUEST | NLM_F_ACK,
            )?;
            // ENOENT: the entry ended between the dump and the delete.
            if self.receive(|_, _| {})? == 0 {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_match_ipv4_addresses_and_ipv6_prefixes() {
        let sources = Sources::new(&[
            "192.0.2.7/32".parse().unwrap(),
            "2001:db8:1:2::/64".parse().unwrap(),
            "2001:db9::1/128".parse().unwrap(),
        ]);
        assert!(sources.contains("192.0.2.7".parse().unwrap()));
        assert!(!sources.contains("192.0.2.8".parse().unwrap()));
        assert!(sources.contains("2001:db8:1:2::99".parse().unwrap()));
        assert!(!sources.contains("2001:db8:1:3::99".parse().unwrap()));
        assert!(sources.contains("2001:db9::1".parse().unwrap()));
        assert!(!sources.contains("2001:db9::2".parse().unwrap()));
    }
}
