//! The nftables ban sets: table `inet sipwall_bans`, filled by the daemon in batches.
//!
//! One `nft -f -` process per batch, whatever its size: a process per ban costs
//! milliseconds each, a transaction of 50,000 elements a few hundred. Every batch is one
//! nft transaction, so it applies whole or not at all.
//!
//! Adds and deletes must never fail on the state of the set, which the kernel changes on
//! its own when an element times out:
//! - a ban is written as add (a no-op if present), delete, add with its timeout, so that
//!   an extended ban gets its new timeout (nft's `add` keeps an existing element's);
//! - an unban is written as add then delete, so that deleting an element the kernel has
//!   already expired is not an error.
//!
//! What can still fail (an IPv6 prefix overlapping another in the interval set, a table
//! removed by hand) is repaired by [`BanSets::resync`], which rewrites both sets from the
//! daemon's list of active bans in one transaction.

use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use crate::nft::{Nft, NftError};

/// The table holding the ban sets.
pub const TABLE: &str = "sipwall_bans";
/// The set of banned IPv4 addresses.
pub const SET_V4: &str = "ban4";
/// The set of banned IPv6 prefixes (a /64 by default, or single addresses).
pub const SET_V6: &str = "ban6";
/// The chain that drops banned sources.
pub const CHAIN: &str = "drop_banned";

/// Most elements in one `add element` statement (a transaction may hold several).
const ELEMENTS_PER_STATEMENT: usize = 8192;

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

/// One change to the ban sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Drop this source's packets for this long.
    Ban {
        /// An IPv4 address or an IPv6 prefix.
        source: IpNet,
        /// How long the kernel keeps the element (it expires it by itself).
        ttl: Duration,
    },
    /// Stop dropping this source.
    Unban {
        /// An IPv4 address or an IPv6 prefix.
        source: IpNet,
    },
}

/// Why a change to the kernel failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetsError {
    /// `nft` could not run, or refused the transaction (then nothing of it applied).
    #[error(transparent)]
    Nft(#[from] NftError),
    /// An IPv4 source that is a prefix (the IPv4 set holds addresses).
    #[error("{0}: an IPv4 ban must be a single address")]
    Ipv4Prefix(IpNet),
}

/// The kernel's ban sets, changed through the `nft` program.
#[derive(Debug, Clone, Default)]
pub struct BanSets {
    nft: Nft,
}

impl BanSets {
    /// Ban sets changed by running `nft` (a name looked up in `PATH`, or a path).
    pub fn new(nft: impl Into<PathBuf>) -> BanSets {
        BanSets { nft: Nft::new(nft) }
    }

    /// Creates the table, sets and chain where missing; existing elements stay.
    pub fn ensure(&self) -> Result<(), SetsError> {
        Ok(self.nft.load(&table_script())?)
    }

    /// Applies `changes` in one transaction.
    pub fn apply(&self, changes: &[Change]) -> Result<(), SetsError> {
        if changes.is_empty() {
            return Ok(());
        }
        Ok(self.nft.load(&changes_script(changes)?)?)
    }

    /// Replaces the content of both sets with `active` (source and remaining time) in
    /// one transaction: the table is created if missing, both sets flushed and refilled,
    /// so the kernel never sees a moment without the bans. IPv6 prefixes inside another
    /// banned prefix are left out (the interval set refuses overlaps; the larger prefix
    /// drops them anyway).
    pub fn resync(&self, active: &[(IpNet, Duration)]) -> Result<(), SetsError> {
        Ok(self.nft.load(&resync_script(active)?)?)
    }
}

/// The set an element goes to, and the element as nft writes it.
fn element(source: IpNet) -> Result<(&'static str, String), SetsError> {
    match source {
        IpNet::V4(net) if net.prefix_len() == 32 => Ok((SET_V4, net.addr().to_string())),
        IpNet::V4(_) => Err(SetsError::Ipv4Prefix(source)),
        IpNet::V6(net) if net.prefix_len() == 128 => Ok((SET_V6, net.addr().to_string())),
        IpNet::V6(net) => Ok((SET_V6, net.trunc().to_string())),
    }
}

/// A timeout as nft reads it: whole seconds, at least one (0 would mean "never").
fn timeout(ttl: Duration) -> String {
    let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    format!("{}s", seconds.max(1))
}

/// The script of one batch of changes: for each set, the elements of every change added
/// (a no-op where present), deleted, and the banned ones added again with their timeout.
/// Three statements per set whatever the batch size: nft parses one statement of many
/// elements far faster than many statements. When a batch changes a source twice, the
/// last change wins, as if applied in order.
pub fn changes_script(changes: &[Change]) -> Result<String, SetsError> {
    let mut last: std::collections::HashMap<IpNet, usize> = std::collections::HashMap::new();
    for (index, change) in changes.iter().enumerate() {
        let source = match *change {
            Change::Ban { source, .. } | Change::Unban { source } => source,
        };
        last.insert(source, index);
    }
    // (set, every element touched, elements banned with their timeout)
    let mut touched: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    let mut banned: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    for (index, change) in changes.iter().enumerate() {
        let (source, ttl) = match *change {
            Change::Ban { source, ttl } => (source, Some(ttl)),
            Change::Unban { source } => (source, None),
        };
        if last.get(&source) != Some(&index) {
            continue;
        }
        let (set, element) = element(source)?;
        let slot = usize::from(set == SET_V6);
        if let Some(ttl) = ttl {
            banned[slot].push(format!("{element} timeout {}", timeout(ttl)));
        }
        touched[slot].push(element);
    }
    let mut script = String::with_capacity(changes.len() * 64);
    for (slot, set) in [SET_V4, SET_V6].into_iter().enumerate() {
        for (verb, elements) in [
            ("add", &touched[slot]),
            ("delete", &touched[slot]),
            ("add", &banned[slot]),
        ] {
            for chunk in elements.chunks(ELEMENTS_PER_STATEMENT) {
                script.push_str(&format!(
                    "{verb} element inet {TABLE} {set} {{ {} }}\n",
                    chunk.join(", ")
                ));
            }
        }
    }
    Ok(script)
}

/// The script that rewrites both sets with `active`.
pub fn resync_script(active: &[(IpNet, Duration)]) -> Result<String, SetsError> {
    let mut v4 = Vec::new();
    let mut v6: Vec<(ipnet::Ipv6Net, Duration)> = Vec::new();
    for &(source, ttl) in active {
        match source {
            IpNet::V4(net) if net.prefix_len() == 32 => v4.push((net.addr(), ttl)),
            IpNet::V4(_) => return Err(SetsError::Ipv4Prefix(source)),
            IpNet::V6(net) => v6.push((net.trunc(), ttl)),
        }
    }
    // Largest prefixes first, so that a prefix inside one already kept is skipped.
    v6.sort_by_key(|(net, _)| (net.prefix_len(), net.addr()));
    let mut kept: Vec<(ipnet::Ipv6Net, Duration)> = Vec::with_capacity(v6.len());
    for (net, ttl) in v6 {
        if let Some(index) = kept.iter().position(|(outer, _)| outer.contains(&net)) {
            // The same prefix twice keeps the longer time.
            if kept[index].0 == net && kept[index].1 < ttl {
                kept[index].1 = ttl;
            }
            continue;
        }
        kept.push((net, ttl));
    }
    let mut script = table_script();
    script.push_str(&format!(
        "flush set inet {TABLE} {SET_V4}\nflush set inet {TABLE} {SET_V6}\n"
    ));
    let v4: Vec<String> = v4
        .iter()
        .map(|(addr, ttl)| format!("{addr} timeout {}", timeout(*ttl)))
        .collect();
    let v6: Vec<String> = kept
        .iter()
        .map(|(net, ttl)| {
            let (_, element) = element(IpNet::V6(*net))?;
            Ok(format!("{element} timeout {}", timeout(*ttl)))
        })
        .collect::<Result<_, SetsError>>()?;
    for (set, elements) in [(SET_V4, v4), (SET_V6, v6)] {
        for chunk in elements.chunks(ELEMENTS_PER_STATEMENT) {
            script.push_str(&format!(
                "add element inet {TABLE} {set} {{ {} }}\n",
                chunk.join(", ")
            ));
        }
    }
    Ok(script)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    #[test]
    fn a_ban_replaces_the_timeout_and_an_unban_never_fails_on_a_missing_element() {
        let script = changes_script(&[
            Change::Ban {
                source: net("192.0.2.7/32"),
                ttl: Duration::from_millis(1_800_500),
            },
            Change::Unban {
                source: net("2001:db8:1:2::/64"),
            },
        ])
        .unwrap();
        assert_eq!(
            script,
            "add element inet sipwall_bans ban4 { 192.0.2.7 }\n\
             delete element inet sipwall_bans ban4 { 192.0.2.7 }\n\
             add element inet sipwall_bans ban4 { 192.0.2.7 timeout 1801s }\n\
             add element inet sipwall_bans ban6 { 2001:db8:1:2::/64 }\n\
             delete element inet sipwall_bans ban6 { 2001:db8:1:2::/64 }\n"
        );
    }

    #[test]
    fn within_a_batch_the_last_change_of_a_source_wins() {
        let ban = |text: &str, seconds| Change::Ban {
            source: net(text),
            ttl: Duration::from_secs(seconds),
        };
        let script = changes_script(&[
            ban("192.0.2.1/32", 10),
            ban("192.0.2.2/32", 10),
            Change::Unban {
                source: net("192.0.2.1/32"),
            },
            ban("192.0.2.2/32", 20),
        ])
        .unwrap();
        assert_eq!(
            script,
            "add element inet sipwall_bans ban4 { 192.0.2.1, 192.0.2.2 }\n\
             delete element inet sipwall_bans ban4 { 192.0.2.1, 192.0.2.2 }\n\
             add element inet sipwall_bans ban4 { 192.0.2.2 timeout 20s }\n"
        );
    }

    #[test]
    fn ipv4_prefixes_are_refused_and_zero_timeouts_become_one_second() {
        assert!(matches!(
            changes_script(&[Change::Unban {
                source: net("192.0.2.0/24")
            }]),
            Err(SetsError::Ipv4Prefix(_))
        ));
        assert_eq!(timeout(Duration::ZERO), "1s");
        assert_eq!(timeout(Duration::from_secs(60)), "60s");
    }

    #[test]
    fn a_resync_flushes_both_sets_and_skips_prefixes_inside_others() {
        let script = resync_script(&[
            (net("192.0.2.7/32"), Duration::from_secs(10)),
            (net("2001:db8:0:2::/64"), Duration::from_secs(20)),
            (net("2001:db8::/48"), Duration::from_secs(30)),
            (net("2001:db9::5/128"), Duration::from_secs(40)),
        ])
        .unwrap();
        assert!(script.starts_with(&table_script()));
        assert!(
            script.contains("flush set inet sipwall_bans ban4\nflush set inet sipwall_bans ban6\n")
        );
        assert!(script.contains("add element inet sipwall_bans ban4 { 192.0.2.7 timeout 10s }\n"));
        assert!(
            script.contains(
                "add element inet sipwall_bans ban6 { 2001:db8::/48 timeout 30s, 2001:db9::5 timeout 40s }\n"
            ),
            "{script}"
        );
        assert!(!script.contains("2001:db8:0:2::"), "{script}");
    }

    #[test]
    fn large_resyncs_are_split_into_statements() {
        let active: Vec<(IpNet, Duration)> = (0..20_000u32)
            .map(|i| {
                let addr = std::net::Ipv4Addr::from(0x0a00_0000 + i);
                (
                    IpNet::from(std::net::IpAddr::V4(addr)),
                    Duration::from_secs(60),
                )
            })
            .collect();
        let script = resync_script(&active).unwrap();
        assert_eq!(script.matches("add element").count(), 3);
        assert_eq!(script.matches("timeout 60s").count(), 20_000);
    }
}
