//! The compiler from a [`FirewallConfig`] to one nftables table, `inet sipwall`.
//!
//! The output is text for `nft -f`, deterministic for a given policy (golden tests and
//! `sipwall firewall plan` rely on it). Every rule carries a `counter` and a `comment`
//! naming it, so `sipwall firewall status` can report per-rule counters by name. The
//! table hooks `input` only: what the host sends (output) and what it routes (forward)
//! are left alone.
//!
//! The order of the input chain, first match wins:
//!
//! 1. loopback accepted; IPv6 neighbour discovery (hop limit 255, so on-link only)
//!    accepted before anything that could refuse it;
//! 2. the static blocklist dropped; bogon sources on public interfaces dropped;
//! 3. `ct state invalid` dropped;
//! 4. admin networks accepted (no rate applies to them);
//! 5. the per-source SIP packet rate, before the established rule: once a phone has
//!    had an answer its UDP flow is "established", and a flood must not pass for that;
//! 6. established and related traffic accepted; new TCP without SYN dropped;
//! 7. ICMP echo limited; SSH and web (admin-only, or open with a per-source
//!    new-connection rate); SIP and RTP accepted;
//! 8. the rest logged (rate-limited) and rejected or dropped.

use std::fmt::Write as _;

use ipnet::IpNet;

use crate::config::{FinalAction, FirewallConfig, PortRange};
use crate::sets;

/// The host firewall's table (family `inet`).
pub const TABLE: &str = "sipwall";

/// The prefix of the log line for refused packets.
pub const LOG_PREFIX: &str = "sipwall reject: ";

/// How long a source's entry stays in a rate meter after its last new packet.
const METER_TIMEOUT: &str = "2m";

/// The script `apply` loads as one transaction: the policy's table replaced whole, and
/// the ban table ensured (idempotently, its elements kept).
///
/// `table … {}` followed by `delete table …` makes the deletion succeed whether or not
/// the table exists; nft applies the whole file atomically, so a failure anywhere leaves
/// the previous ruleset in place.
pub fn load_script(config: &FirewallConfig) -> String {
    let mut script = String::new();
    script.push_str(
        "# sipwall host firewall, loaded with `nft -f` as one atomic transaction.\n\
         # It replaces table inet sipwall and no other: other tables are left alone.\n\
         # Banned sources are dropped before this table sees them, by table\n\
         # inet sipwall_bans (hook prerouting, priority raw, before connection tracking),\n\
         # which is created below if missing; its ban sets keep their elements.\n",
    );
    let _ = writeln!(script, "table inet {TABLE} {{}}\ndelete table inet {TABLE}");
    script.push_str(&table(config));
    script.push_str("\n# The ban table (idempotent).\n");
    script.push_str(&sets::table_script());
    script
}

/// The script that leaves no `inet sipwall` table (its state before a first apply).
pub fn remove_script() -> String {
    format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\n")
}

/// The table definition alone.
pub fn table(config: &FirewallConfig) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "table inet {TABLE} {{");
    let (block4, block6) = split(&config.blocklist);
    let (admin4, admin6) = split(&config.admin_networks);
    let (bogon4, bogon6) = split(&config.bogon_networks);
    network_set(&mut out, "blocklist4", "ipv4_addr", &block4);
    network_set(&mut out, "blocklist6", "ipv6_addr", &block6);
    network_set(&mut out, "admin4", "ipv4_addr", &admin4);
    network_set(&mut out, "admin6", "ipv6_addr", &admin6);
    let antispoof = !config.public_interfaces.is_empty();
    if !antispoof {
        out.push_str("    # No public_interfaces: no anti-spoofing rule.\n\n");
    }
    if antispoof {
        network_set(&mut out, "bogon4", "ipv4_addr", &bogon4);
        network_set(&mut out, "bogon6", "ipv6_addr", &bogon6);
    }
    // Rate meters: one element per source, forgotten after METER_TIMEOUT of silence.
    let ssh_open = config.ssh_open_to_all && !config.ssh_ports.is_empty();
    let web_open = config.web_open_to_all && !config.web_ports.is_empty();
    let sip_ports = sip_ports(config);
    let mut meters = Vec::new();
    if ssh_open {
        meters.push("ssh");
    }
    if web_open {
        meters.push("web");
    }
    if !sip_ports.is_empty() {
        meters.push("sip");
    }
    for meter in meters {
        for (suffix, kind) in [("4", "ipv4_addr"), ("6", "ipv6_addr")] {
            let _ = writeln!(
                out,
                "    set {meter}_meter{suffix} {{\n        type {kind}\n        \
                 flags dynamic,timeout\n        timeout {METER_TIMEOUT}\n        size 65535\n    }}\n"
            );
        }
    }

    let _ = writeln!(
        out,
        "    chain input {{\n        type filter hook input priority filter; policy drop;"
    );
    let mut rules = Rules::default();
    rules.push("loopback", "iif \"lo\"", "accept");
    rules.push(
        "ipv6 neighbour discovery",
        "icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, \
         nd-neighbor-advert, nd-redirect } ip6 hoplimit 255",
        "accept",
    );
    if !block4.is_empty() {
        rules.push("blocklist", "ip saddr @blocklist4", "drop");
    }
    if !block6.is_empty() {
        rules.push("blocklist ipv6", "ip6 saddr @blocklist6", "drop");
    }
    if antispoof {
        let interfaces = config
            .public_interfaces
            .iter()
            .map(|name| format!("\"{name}\""))
            .collect::<Vec<_>>()
            .join(", ");
        if !bogon4.is_empty() {
            rules.push(
                "anti-spoofing",
                &format!("iifname {{ {interfaces} }} ip saddr @bogon4"),
                "drop",
            );
        }
        if !bogon6.is_empty() {
            rules.push(
                "anti-spoofing ipv6",
                &format!("iifname {{ {interfaces} }} ip6 saddr @bogon6"),
                "drop",
            );
        }
    }
    rules.push("invalid", "ct state invalid", "drop");
    if !admin4.is_empty() {
        rules.push("admin networks", "ip saddr @admin4", "accept");
    }
    if !admin6.is_empty() {
        rules.push("admin networks ipv6", "ip6 saddr @admin6", "accept");
    }
    let rate = format!(
        "limit rate over {}/second burst {} packets",
        config.sip_packets_per_second, config.sip_burst
    );
    for (proto, ports) in [
        ("udp", merge(&config.sip_udp_ports)),
        ("tcp", merge(&sip_ports_tcp(config))),
    ] {
        if ports.is_empty() {
            continue;
        }
        let ports = port_set(&ports);
        rules.push(
            &format!("sip rate {proto}"),
            &format!("{proto} dport {ports} update @sip_meter4 {{ ip saddr {rate} }}"),
            "drop",
        );
        rules.push(
            &format!("sip rate {proto} ipv6"),
            &format!("{proto} dport {ports} update @sip_meter6 {{ ip6 saddr {rate} }}"),
            "drop",
        );
    }
    rules.push("established", "ct state established,related", "accept");
    rules.push(
        "new tcp without syn",
        "tcp flags & (fin|syn|rst|ack) != syn ct state new",
        "drop",
    );
    let icmp = format!(
        "limit rate {}/second burst {} packets",
        config.icmp_per_second, config.icmp_per_second
    );
    rules.push("ping", &format!("icmp type echo-request {icmp}"), "accept");
    rules.push("ping over limit", "icmp type echo-request", "drop");
    rules.push(
        "ping ipv6",
        &format!("icmpv6 type echo-request {icmp}"),
        "accept",
    );
    rules.push("ping ipv6 over limit", "icmpv6 type echo-request", "drop");
    let per_minute = config.new_connection_rate().unwrap_or(u32::MAX);
    for (name, open, ports) in [
        ("ssh", ssh_open, &config.ssh_ports),
        ("web", web_open, &config.web_ports),
    ] {
        // Admin-only: the admin networks were accepted above, nothing to add.
        if !open {
            continue;
        }
        let ports = port_set(&merge(ports));
        let limit = format!("limit rate over {per_minute}/minute burst {per_minute} packets");
        rules.push(
            &format!("{name} rate"),
            &format!("tcp dport {ports} ct state new update @{name}_meter4 {{ ip saddr {limit} }}"),
            "drop",
        );
        rules.push(
            &format!("{name} rate ipv6"),
            &format!(
                "tcp dport {ports} ct state new update @{name}_meter6 {{ ip6 saddr {limit} }}"
            ),
            "drop",
        );
        rules.push(name, &format!("tcp dport {ports}"), "accept");
    }
    let udp = merge(&config.sip_udp_ports);
    if !udp.is_empty() {
        rules.push(
            "sip udp",
            &format!("udp dport {}", port_set(&udp)),
            "accept",
        );
    }
    let tcp = merge(&sip_ports_tcp(config));
    if !tcp.is_empty() {
        rules.push(
            "sip tcp and tls",
            &format!("tcp dport {}", port_set(&tcp)),
            "accept",
        );
    }
    let rtp = merge(&config.rtp_ports);
    if !rtp.is_empty() {
        rules.push("rtp", &format!("udp dport {}", port_set(&rtp)), "accept");
    }
    if config.log_per_minute > 0 {
        rules.push(
            "log",
            &format!(
                "limit rate {}/minute burst 5 packets",
                config.log_per_minute
            ),
            &format!("log prefix \"{LOG_PREFIX}\" level info"),
        );
    }
    match config.final_action {
        FinalAction::Reject => {
            rules.push("reject tcp", "meta l4proto tcp", "reject with tcp reset");
            rules.push("reject", "", "reject with icmpx type port-unreachable");
        }
        FinalAction::Drop => rules.push("drop", "", "drop"),
    }
    for line in &rules.0 {
        let _ = writeln!(out, "        {line}");
    }
    out.push_str("    }\n}\n");
    out
}

/// The rules of the input chain, in order.
#[derive(Default)]
struct Rules(Vec<String>);

impl Rules {
    /// `matches counter verdict comment "name"`: every rule counts, and is named.
    fn push(&mut self, name: &str, matches: &str, verdict: &str) {
        let space = if matches.is_empty() { "" } else { " " };
        self.0.push(format!(
            "{matches}{space}counter {verdict} comment \"{name}\""
        ));
    }
}

/// SIP's TCP ports: plain TCP and TLS.
fn sip_ports_tcp(config: &FirewallConfig) -> Vec<PortRange> {
    config
        .sip_tcp_ports
        .iter()
        .chain(&config.sip_tls_ports)
        .copied()
        .collect()
}

/// Every SIP port, whatever the transport.
fn sip_ports(config: &FirewallConfig) -> Vec<PortRange> {
    let mut all = sip_ports_tcp(config);
    all.extend(&config.sip_udp_ports);
    all
}

/// Sorted, with overlapping and adjacent ranges merged: nft refuses overlapping
/// elements in an anonymous interval set.
fn merge(ports: &[PortRange]) -> Vec<PortRange> {
    let mut sorted = ports.to_vec();
    sorted.sort();
    let mut merged: Vec<PortRange> = Vec::new();
    for range in sorted {
        match merged.last_mut() {
            Some(last) if u32::from(range.first) <= u32::from(last.last) + 1 => {
                last.last = last.last.max(range.last);
            }
            _ => merged.push(range),
        }
    }
    merged
}

/// `{ 5060, 10000-20000 }`.
fn port_set(ports: &[PortRange]) -> String {
    let list = ports
        .iter()
        .map(PortRange::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    format!("{{ {list} }}")
}

/// IPv4 and IPv6 networks apart, host bits cleared, overlaps aggregated (an interval
/// set refuses overlapping elements).
fn split(networks: &[IpNet]) -> (Vec<IpNet>, Vec<IpNet>) {
    let trimmed: Vec<IpNet> = networks.iter().map(IpNet::trunc).collect();
    IpNet::aggregate(&trimmed)
        .into_iter()
        .partition(|net| matches!(net, IpNet::V4(_)))
}

/// A named interval set of networks (declared even when empty, so the set names exist
/// for the rules and for an operator's `nft add element`).
fn network_set(out: &mut String, name: &str, kind: &str, networks: &[IpNet]) {
    let _ = write!(
        out,
        "    set {name} {{\n        type {kind}\n        flags interval\n"
    );
    if !networks.is_empty() {
        let list = networks
            .iter()
            .map(IpNet::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(out, "        elements = {{ {list} }}");
    }
    out.push_str("    }\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(toml_text: &str) -> FirewallConfig {
        toml::from_str(toml_text).unwrap()
    }

    /// The input chain's rule carrying `comment "name"`.
    fn rule<'a>(script: &'a str, name: &str) -> Option<&'a str> {
        let comment = format!("comment \"{name}\"");
        script
            .lines()
            .map(str::trim)
            .find(|line| line.ends_with(&comment))
    }

    fn position(script: &str, name: &str) -> usize {
        let comment = format!("comment \"{name}\"");
        script
            .lines()
            .position(|line| line.trim().ends_with(&comment))
            .unwrap_or_else(|| panic!("no rule {name}"))
    }

    #[test]
    fn every_rule_counts_and_is_named_once() {
        let script = table(&policy(
            "ssh_open_to_all = true\nweb_open_to_all = true\npublic_interfaces = [\"eth0\"]\n\
             blocklist = [\"198.51.100.0/24\", \"2001:db8:bad::/48\"]\n\
             admin_networks = [\"192.0.2.0/24\", \"2001:db8::/48\"]\n",
        ));
        let rules: Vec<&str> = script
            .lines()
            .map(str::trim)
            .filter(|l| l.contains(" comment \""))
            .collect();
        assert!(rules.len() > 20, "{script}");
        let mut names = std::collections::HashSet::new();
        for line in &rules {
            assert!(line.contains("counter "), "{line}");
            let name = line.rsplit_once("comment ").unwrap().1;
            assert!(names.insert(name), "two rules named {name}");
        }
    }

    #[test]
    fn the_load_script_replaces_only_its_own_table_and_ensures_the_ban_table() {
        let script = load_script(&FirewallConfig::default());
        assert!(
            script.contains(
                "table inet sipwall {}\ndelete table inet sipwall\ntable inet sipwall {\n"
            )
        );
        assert!(!script.contains("flush ruleset"));
        assert!(
            script.contains("priority raw"),
            "the ban table comment and script"
        );
        assert!(script.ends_with(&sets::table_script()));
        assert!(script.contains("type filter hook input priority filter; policy drop;"));
        assert!(!script.contains("hook forward") && !script.contains("hook output"));
    }

    #[test]
    fn defaults_open_sip_and_rtp_to_all_and_ssh_and_web_to_no_one_else() {
        let script = table(&FirewallConfig::default());
        assert_eq!(
            rule(&script, "sip udp"),
            Some("udp dport { 5060 } counter accept comment \"sip udp\"")
        );
        assert_eq!(
            rule(&script, "sip tcp and tls"),
            Some("tcp dport { 5060-5061 } counter accept comment \"sip tcp and tls\"")
        );
        assert_eq!(
            rule(&script, "rtp"),
            Some("udp dport { 10000-20000 } counter accept comment \"rtp\"")
        );
        assert!(rule(&script, "ssh").is_none() && rule(&script, "web").is_none());
        assert!(!script.contains("dport { 22 }") && !script.contains("443"));
        // Nothing configured, nothing matched: no blocklist, admin or spoofing rule.
        for absent in ["blocklist", "admin networks", "anti-spoofing"] {
            assert!(rule(&script, absent).is_none(), "{absent}");
        }
        assert!(
            rule(&script, "log")
                .unwrap()
                .contains("log prefix \"sipwall reject: \"")
        );
        assert!(
            rule(&script, "reject tcp")
                .unwrap()
                .contains("reject with tcp reset")
        );
    }

    #[test]
    fn the_order_puts_refusals_first_and_sip_rates_before_established() {
        let script = table(&policy(
            "public_interfaces = [\"eth0\"]\nblocklist = [\"198.51.100.7\"]\n\
             admin_networks = [\"192.0.2.0/24\"]\n",
        ));
        let order = [
            "loopback",
            "ipv6 neighbour discovery",
            "blocklist",
            "anti-spoofing",
            "invalid",
            "admin networks",
            "sip rate udp",
            "established",
            "new tcp without syn",
            "ping",
            "sip udp",
            "rtp",
            "log",
            "reject",
        ];
        let positions: Vec<usize> = order.iter().map(|n| position(&script, n)).collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "{order:?} {positions:?}"
        );
    }

    #[test]
    fn neighbour_discovery_is_accepted_on_link_only_and_before_any_drop() {
        let script = table(&FirewallConfig::default());
        let nd = rule(&script, "ipv6 neighbour discovery").unwrap();
        for kind in [
            "nd-neighbor-solicit",
            "nd-neighbor-advert",
            "nd-router-advert",
        ] {
            assert!(nd.contains(kind), "{nd}");
        }
        assert!(
            nd.contains("ip6 hoplimit 255") && nd.ends_with("comment \"ipv6 neighbour discovery\"")
        );
        assert!(position(&script, "ipv6 neighbour discovery") < position(&script, "invalid"));
    }

    #[test]
    fn networks_are_split_by_family_trimmed_and_aggregated() {
        let script = table(&policy(
            "blocklist = [\"10.1.2.3/16\", \"10.1.0.0/24\", \"2001:db8::1/32\"]\n\
             admin_networks = [\"fd00::/8\"]\n",
        ));
        assert!(script.contains("set blocklist4 {\n        type ipv4_addr\n        flags interval\n        elements = { 10.1.0.0/16 }"), "{script}");
        assert!(script.contains("elements = { 2001:db8::/32 }"), "{script}");
        assert!(script.contains("elements = { fd00::/8 }"));
        assert_eq!(
            rule(&script, "blocklist ipv6"),
            Some("ip6 saddr @blocklist6 counter drop comment \"blocklist ipv6\"")
        );
        assert!(
            rule(&script, "admin networks").is_none(),
            "no IPv4 admin network"
        );
        assert!(rule(&script, "admin networks ipv6").is_some());
    }

    #[test]
    fn ssh_and_web_open_to_all_get_a_per_source_new_connection_meter() {
        let script = table(&policy(
            "ssh_open_to_all = true\nweb_open_to_all = true\nagents = 3\n\
             new_connections_per_agent_per_minute = 10\nweb_ports = [443, 8080, 8081]\n",
        ));
        assert_eq!(
            rule(&script, "ssh rate"),
            Some(
                "tcp dport { 22 } ct state new update @ssh_meter4 { ip saddr limit rate over \
                 30/minute burst 30 packets } counter drop comment \"ssh rate\""
            )
        );
        assert!(rule(&script, "web rate ipv6").unwrap().contains(
            "tcp dport { 443, 8080-8081 } ct state new update @web_meter6 { ip6 saddr limit rate over 30/minute"
        ));
        assert!(position(&script, "ssh rate") < position(&script, "ssh"));
        assert!(
            script.contains(
                "set ssh_meter6 {\n        type ipv6_addr\n        flags dynamic,timeout"
            )
        );
    }

    #[test]
    fn sip_rate_is_per_source_and_configurable() {
        let script = table(&policy(
            "sip_packets_per_second = 7\nsip_burst = 9\nsip_udp_ports = [5080]\n\
             sip_tcp_ports = []\nsip_tls_ports = [5081]\n",
        ));
        assert_eq!(
            rule(&script, "sip rate udp"),
            Some(
                "udp dport { 5080 } update @sip_meter4 { ip saddr limit rate over 7/second \
                 burst 9 packets } counter drop comment \"sip rate udp\""
            )
        );
        assert!(
            rule(&script, "sip rate tcp ipv6")
                .unwrap()
                .contains("tcp dport { 5081 } update @sip_meter6 { ip6 saddr")
        );
        let none = table(&policy(
            "sip_udp_ports = []\nsip_tcp_ports = []\nsip_tls_ports = []\n",
        ));
        assert!(!none.contains("sip_meter") && rule(&none, "sip udp").is_none());
    }

    #[test]
    fn anti_spoofing_applies_to_the_public_interfaces_only() {
        let script = table(&policy(
            "public_interfaces = [\"eth0\", \"ens3\"]\nbogon_networks = [\"10.0.0.0/8\"]\n",
        ));
        assert_eq!(
            rule(&script, "anti-spoofing"),
            Some(
                "iifname { \"eth0\", \"ens3\" } ip saddr @bogon4 counter drop comment \"anti-spoofing\""
            )
        );
        assert!(
            rule(&script, "anti-spoofing ipv6").is_none(),
            "no IPv6 bogon listed"
        );
        let defaults = table(&policy("public_interfaces = [\"eth0\"]\n"));
        assert!(
            !defaults.contains("fe80::/10"),
            "link-local sources are how ND talks"
        );
        assert!(defaults.contains("fc00::/7") && defaults.contains("192.168.0.0/16"));
    }

    #[test]
    fn the_final_action_and_the_log_rate_are_configurable() {
        let script = table(&policy("final_action = \"drop\"\nlog_per_minute = 0\n"));
        assert_eq!(rule(&script, "drop"), Some("counter drop comment \"drop\""));
        assert!(rule(&script, "reject").is_none() && rule(&script, "log").is_none());
        let logged = table(&policy("log_per_minute = 30\n"));
        assert!(
            rule(&logged, "log")
                .unwrap()
                .starts_with("limit rate 30/minute")
        );
    }

    #[test]
    fn empty_port_lists_make_no_rule() {
        let script = table(&policy(
            "ssh_open_to_all = true\nssh_ports = []\nrtp_ports = []\n",
        ));
        assert!(rule(&script, "ssh").is_none() && !script.contains("ssh_meter"));
        assert!(rule(&script, "rtp").is_none());
    }
}
