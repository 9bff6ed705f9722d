//! The host firewall policy: the `[firewall]` section of the configuration, its defaults
//! and its checks.
//!
//! This module only describes and checks a policy; [`crate::compile`] turns it into
//! nftables rules. Values that TOML alone can refuse (a bad network, port 0, a reversed
//! range, an unknown key) are refused while the file is read, so the error points at the
//! value; the checks across keys live in [`FirewallConfig::validate`], which names the
//! key to blame.

use std::fmt;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;
use serde::de::{self, Deserializer};

/// `[firewall]`: what the host accepts on its own ports (the input hook).
///
/// The defaults are safe on their own: SSH and web reachable from the admin networks
/// only, SIP and RTP open to all with a per-source rate, everything else refused.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FirewallConfig {
    /// Networks with full access to every port, exempt from every rate.
    #[serde(deserialize_with = "networks")]
    pub admin_networks: Vec<IpNet>,
    /// SSH ports.
    pub ssh_ports: Vec<PortRange>,
    /// Open SSH to every source (with the per-source new-connection rate) rather than
    /// to the admin networks only.
    pub ssh_open_to_all: bool,
    /// Web ports (a PBX's management interface).
    pub web_ports: Vec<PortRange>,
    /// Open the web ports to every source, with the per-source new-connection rate.
    pub web_open_to_all: bool,
    /// Users expected behind one source address: the new-connection rate is
    /// `new_connections_per_agent_per_minute × agents` (the seed's "10 × agents").
    pub agents: u32,
    /// New SSH or web connections per minute and agent, per source.
    pub new_connections_per_agent_per_minute: u32,
    /// SIP over UDP.
    pub sip_udp_ports: Vec<PortRange>,
    /// SIP over TCP.
    pub sip_tcp_ports: Vec<PortRange>,
    /// SIP over TLS.
    pub sip_tls_ports: Vec<PortRange>,
    /// Packets per second one source may send to the SIP ports; the excess is dropped.
    pub sip_packets_per_second: u32,
    /// Packets a source may send at once above that rate.
    pub sip_burst: u32,
    /// The RTP media ports, open to all.
    pub rtp_ports: Vec<PortRange>,
    /// Echo requests accepted per second (ICMP and ICMPv6 each); the excess is dropped.
    pub icmp_per_second: u32,
    /// Interfaces facing the internet, where bogon sources are spoofed and dropped.
    /// Empty: no anti-spoofing rule.
    pub public_interfaces: Vec<String>,
    /// Sources that cannot arrive on a public interface.
    #[serde(deserialize_with = "networks")]
    pub bogon_networks: Vec<IpNet>,
    /// Networks dropped before anything else (the seeds' `blockSites`).
    #[serde(deserialize_with = "networks")]
    pub blocklist: Vec<IpNet>,
    /// What happens to the rest: `reject` (TCP reset, ICMP port unreachable) or `drop`.
    pub final_action: FinalAction,
    /// Log lines per minute for refused packets (prefix `sipwall reject: `); 0: no log.
    pub log_per_minute: u32,
    /// Where `apply` keeps the previous ruleset until `confirm`.
    pub state_dir: PathBuf,
}

impl Default for FirewallConfig {
    fn default() -> Self {
        FirewallConfig {
            admin_networks: Vec::new(),
            ssh_ports: vec![PortRange::single(22)],
            ssh_open_to_all: false,
            web_ports: vec![PortRange::single(80), PortRange::single(443)],
            web_open_to_all: false,
            agents: 10,
            new_connections_per_agent_per_minute: 10,
            sip_udp_ports: vec![PortRange::single(5060)],
            sip_tcp_ports: vec![PortRange::single(5060)],
            sip_tls_ports: vec![PortRange::single(5061)],
            sip_packets_per_second: 100,
            sip_burst: 200,
            rtp_ports: vec![PortRange {
                first: 10000,
                last: 20000,
            }],
            icmp_per_second: 5,
            public_interfaces: Vec::new(),
            bogon_networks: default_bogons(),
            blocklist: Vec::new(),
            final_action: FinalAction::Reject,
            log_per_minute: 6,
            state_dir: PathBuf::from("/run/sipwall"),
        }
    }
}

/// Source networks that are never routed on the internet (RFC 6890 and its kin). Not
/// `fe80::/10`: IPv6 link-local sources are how neighbours talk.
pub fn default_bogons() -> Vec<IpNet> {
    [
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/3",
        "::/128",
        "::1/128",
        "::ffff:0:0/96",
        "100::/64",
        "2001:db8::/32",
        "fc00::/7",
        "fec0::/10",
        "ff00::/8",
    ]
    .iter()
    .filter_map(|net| net.parse().ok())
    .collect()
}

/// A list of networks; a bare address is a network of one (`/32` or `/128`).
fn networks<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<IpNet>, D::Error> {
    Vec::<String>::deserialize(deserializer)?
        .iter()
        .map(|text| {
            text.parse::<IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    de::Error::custom(format!("\"{text}\" is not an address or a network"))
                })
        })
        .collect()
}

/// What the last rule does with a packet nothing accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinalAction {
    /// A TCP reset or an ICMP port unreachable: the port looks closed.
    Reject,
    /// Silence: the sender waits for its timeout.
    Drop,
}

/// A port or an inclusive range of ports, written `5060` or `"10000-20000"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortRange {
    /// The first port.
    pub first: u16,
    /// The last port (equal to `first` for a single port).
    pub last: u16,
}

impl PortRange {
    /// One port.
    pub const fn single(port: u16) -> Self {
        PortRange {
            first: port,
            last: port,
        }
    }

    /// Reads `5060` or `10000-20000`; port 0 and reversed ranges are refused.
    pub fn parse(text: &str) -> Result<Self, String> {
        let port = |s: &str| -> Result<u16, String> {
            match s.trim().parse::<u16>() {
                Ok(0) => Err("port 0 is not a port".to_owned()),
                Ok(port) => Ok(port),
                Err(_) => Err(format!("\"{s}\" is not a port (1 to 65535)")),
            }
        };
        let range = match text.split_once('-') {
            Some((first, last)) => PortRange {
                first: port(first)?,
                last: port(last)?,
            },
            None => PortRange::single(port(text)?),
        };
        if range.first > range.last {
            return Err(format!("the range {text} is reversed"));
        }
        Ok(range)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // TOML gives integers as i64; a string carries a range.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(i64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => match u16::try_from(n) {
                Ok(0) | Err(_) => Err(de::Error::custom(format!("{n} is not a port (1 to 65535)"))),
                Ok(port) => Ok(PortRange::single(port)),
            },
            Raw::Text(text) => PortRange::parse(&text).map_err(de::Error::custom),
        }
    }
}

/// A policy refused by [`FirewallConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct InvalidPolicy {
    /// The key to blame, within `[firewall]`.
    pub key: &'static str,
    /// Why.
    pub message: String,
}

impl FirewallConfig {
    /// Checks across keys. Returns warnings about a policy that is valid but probably
    /// not meant (shown by `check`, `plan` and `apply`), or the first error.
    pub fn validate(&self) -> Result<Vec<String>, InvalidPolicy> {
        let invalid = |key, message: &str| InvalidPolicy {
            key,
            message: message.to_owned(),
        };
        let rates = [
            ("agents", self.agents),
            (
                "new_connections_per_agent_per_minute",
                self.new_connections_per_agent_per_minute,
            ),
            ("sip_packets_per_second", self.sip_packets_per_second),
            ("sip_burst", self.sip_burst),
            ("icmp_per_second", self.icmp_per_second),
        ];
        for (key, value) in rates {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if self.new_connection_rate().is_none() {
            return Err(invalid(
                "new_connections_per_agent_per_minute",
                "times agents exceeds 4294967295",
            ));
        }
        for name in &self.public_interfaces {
            // The name goes into the nft script between quotes: only what Linux allows
            // in an interface name, which also keeps the script well-formed.
            let valid = !name.is_empty()
                && name.len() < 16
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.@:".contains(&b));
            if !valid {
                return Err(InvalidPolicy {
                    key: "public_interfaces",
                    message: format!("\"{name}\" is not an interface name"),
                });
            }
        }
        if self.state_dir.as_os_str().is_empty() || !self.state_dir.is_absolute() {
            return Err(invalid("state_dir", "must be an absolute path"));
        }
        let mut warnings = Vec::new();
        if self.admin_networks.is_empty() {
            for (open, ports, name) in [
                (self.ssh_open_to_all, &self.ssh_ports, "SSH"),
                (self.web_open_to_all, &self.web_ports, "web"),
            ] {
                if !open && !ports.is_empty() {
                    warnings.push(format!(
                        "firewall.admin_networks is empty and {name} is open to admin \
                         networks only: no new {name} connection will be accepted"
                    ));
                }
            }
        }
        if !self.public_interfaces.is_empty() {
            let overlaps =
                |a: &IpNet, b: &IpNet| a.contains(&b.network()) || b.contains(&a.network());
            for admin in &self.admin_networks {
                if let Some(bogon) = self.bogon_networks.iter().find(|b| overlaps(admin, b)) {
                    warnings.push(format!(
                        "firewall.admin_networks: {admin} overlaps the bogon network {bogon}: \
                         it is dropped on the public interfaces before it is accepted"
                    ));
                }
            }
        }
        Ok(warnings)
    }

    /// New SSH or web connections per minute per source, if it fits in a `u32`.
    pub fn new_connection_rate(&self) -> Option<u32> {
        self.new_connections_per_agent_per_minute
            .checked_mul(self.agents)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Result<FirewallConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn ports_and_ranges_are_checked_while_read() {
        let ok = policy("rtp_ports = [\"10000-20000\", 7078]\nssh_ports = [2222]").unwrap();
        assert_eq!(
            ok.rtp_ports,
            [
                PortRange {
                    first: 10000,
                    last: 20000
                },
                PortRange::single(7078)
            ]
        );
        for (text, message) in [
            ("ssh_ports = [0]", "0 is not a port"),
            ("ssh_ports = [70000]", "70000 is not a port"),
            ("rtp_ports = [\"20000-10000\"]", "reversed"),
            ("rtp_ports = [\"0-10\"]", "port 0"),
            ("rtp_ports = [\"a-b\"]", "is not a port"),
            (
                "blocklist = [\"10.0.0.0/33\"]",
                "not an address or a network",
            ),
            (
                "admin_networks = [\"fe80::/129\"]",
                "not an address or a network",
            ),
            ("final_action = \"explode\"", "unknown variant"),
            ("sip_port = [5060]", "unknown field `sip_port`"),
        ] {
            let error = policy(text).unwrap_err();
            assert!(error.contains(message), "{text}: {error}");
        }
        let bare = policy("blocklist = [\"192.0.2.1\", \"2001:db8::1\"]").unwrap();
        assert_eq!(bare.blocklist[0].to_string(), "192.0.2.1/32");
        assert_eq!(bare.blocklist[1].to_string(), "2001:db8::1/128");
    }

    #[test]
    fn validation_names_the_key_and_warns_about_lockouts() {
        let error = |text| policy(text).unwrap().validate().unwrap_err();
        assert_eq!(
            error("sip_packets_per_second = 0").key,
            "sip_packets_per_second"
        );
        assert_eq!(error("agents = 0").key, "agents");
        assert_eq!(error("icmp_per_second = 0").key, "icmp_per_second");
        assert_eq!(
            error("public_interfaces = [\"eth0\\\" accept\"]").key,
            "public_interfaces"
        );
        assert_eq!(error("state_dir = \"relative\"").key, "state_dir");
        assert_eq!(
            error("agents = 100000\nnew_connections_per_agent_per_minute = 100000").key,
            "new_connections_per_agent_per_minute"
        );

        let warnings = FirewallConfig::default().validate().unwrap();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("admin_networks is empty") && warnings[0].contains("SSH"));
        let open = policy("ssh_open_to_all = true\nweb_ports = []").unwrap();
        assert!(open.validate().unwrap().is_empty());
        let overlap =
            policy("admin_networks = [\"10.1.0.0/16\"]\npublic_interfaces = [\"eth0\"]").unwrap();
        let warnings = overlap.validate().unwrap();
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("overlaps the bogon network 10.0.0.0/8")),
            "{warnings:?}"
        );
    }
}
