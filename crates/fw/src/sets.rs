//! The nftables ban sets: table `inet sipwall_bans`, filled by the daemon in batches.

/// The table holding the ban sets.
pub const TABLE: &str = "sipwall_bans";
/// The set of banned IPv4 addresses.
pub const SET_V4: &str = "ban4";
/// The set of banned IPv6 prefixes (a /64 by default, or single addresses).
pub const SET_V6: &str = "ban6";

/// The chain that drops banned sources.
pub const CHAIN: &str = "drop_banned";

/// The nft script that creates the ban table if it is missing, and otherwise leaves the
/// table and its elements alone: sets and chain are `add`ed (a no-op when they exist) and
/// only the chain's two rules are replaced. IPv4 bans are single addresses (a hash set);
/// IPv6 bans are prefixes, a /64 by default (an interval set).
pub fn table_script() -> String {
    format!(
        "add table inet {TABLE}\n\
         add set inet {TABLE} {SET_V4} {{ type ipv4_addr; flags timeout; }}\n\
         add set inet {TABLE} {SET_V6} {{ type ipv6_addr; flags interval, timeout; }}\n\
         add chain inet {TABLE} {CHAIN} {{ type filter hook prerouting priority raw; policy accept; }}\n\
         flush chain inet {TABLE} {CHAIN}\n\
         add rule inet {TABLE} {CHAIN} ip saddr @{SET_V4} counter drop comment \"banned by sipwall\"\n\
         add rule inet {TABLE} {CHAIN} ip6 saddr @{SET_V6} counter drop comment \"banned by sipwall\"\n"
    )
}
