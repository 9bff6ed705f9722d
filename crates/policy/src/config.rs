//! The policy's configuration: the `[policy]` table of sipwall's config file.
//!
//! Every table refuses unknown keys. Each rule has built-in defaults (the safe policy
//! for a typical office PBX, see the README); a `[policy.rules.<name>]` table overrides
//! only the fields it names.

use ipnet::IpNet;
use serde::Deserialize;

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    /// Send nothing.
    Drop,
    /// Answer with the rule's status code.
    Reply,
    /// Answer with the rule's status code after a delay, so a scanner waits.
    Tarpit,
    /// Drop, and ban the source for a TTL that grows for repeat offenders.
    Ban,
    /// Send the source's requests to the honeypot from now on (for the ban's TTL).
    Honeypot,
}

/// Overrides of one rule's defaults.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleOverride {
    /// Evaluate the rule at all.
    pub enabled: Option<bool>,
    /// Count and log matches, but do not act on them.
    pub shadow: Option<bool>,
    /// The action.
    pub action: Option<ActionKind>,
    /// Status code of `reply` and `tarpit`.
    pub code: Option<u16>,
}

/// `[policy.rules]`: overrides per rule, by the rule's name.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // each field is the rule of the same name (see `Rule`)
pub struct RuleOverrides {
    #[serde(default)]
    pub acl: RuleOverride,
    #[serde(default)]
    pub method_acl: RuleOverride,
    #[serde(default)]
    pub extension_acl: RuleOverride,
    #[serde(default)]
    pub domain: RuleOverride,
    #[serde(default)]
    pub scanner_agent: RuleOverride,
    #[serde(default)]
    pub tool_fingerprint: RuleOverride,
    #[serde(default)]
    pub sql_injection: RuleOverride,
    #[serde(default)]
    pub route_spoof: RuleOverride,
    #[serde(default)]
    pub flood: RuleOverride,
    #[serde(default)]
    pub register_rate: RuleOverride,
    #[serde(default)]
    pub invite_rate: RuleOverride,
    #[serde(default)]
    pub auth_failures: RuleOverride,
    #[serde(default)]
    pub user_failures: RuleOverride,
    #[serde(default)]
    pub unanswered_challenges: RuleOverride,
    #[serde(default)]
    pub malformed: RuleOverride,
    #[serde(default)]
    pub bad_token: RuleOverride,
}

/// `[policy]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// IPv6 sources are counted and banned per prefix of this length.
    #[serde(default = "default_v6_prefix")]
    pub ipv6_prefix: u8,
    /// Administrators' networks: never banned by any path, no limits.
    #[serde(default)]
    pub admin_networks: Vec<IpNet>,
    /// Gateways and carriers: never banned, no limits.
    #[serde(default)]
    pub trusted_peers: Vec<IpNet>,
    /// `[policy.acl]`.
    #[serde(default)]
    pub acl: AclConfig,
    /// `[policy.scanner]`.
    #[serde(default)]
    pub scanner: ScannerConfig,
    /// `[policy.flood]`.
    #[serde(default)]
    pub flood: FloodConfig,
    /// `[policy.auth]`.
    #[serde(default)]
    pub auth: AuthConfig,
    /// `[policy.ban]`.
    #[serde(default)]
    pub ban: BanConfig,
    /// `[policy.enumeration]`.
    #[serde(default)]
    pub enumeration: EnumerationConfig,
    /// `[policy.rules]`.
    #[serde(default)]
    pub rules: RuleOverrides,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            ipv6_prefix: default_v6_prefix(),
            admin_networks: Vec::new(),
            trusted_peers: Vec::new(),
            acl: AclConfig::default(),
            scanner: ScannerConfig::default(),
            flood: FloodConfig::default(),
            auth: AuthConfig::default(),
            ban: BanConfig::default(),
            enumeration: EnumerationConfig::default(),
            rules: RuleOverrides::default(),
        }
    }
}

fn default_v6_prefix() -> u8 {
    64
}

/// `[policy.acl]`: who may send what.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclConfig {
    /// If not empty, only sources in these networks are served.
    #[serde(default)]
    pub allow: Vec<IpNet>,
    /// Sources never served.
    #[serde(default)]
    pub deny: Vec<IpNet>,
    /// Per-method rules.
    #[serde(default)]
    pub method: Vec<MethodAcl>,
    /// Per-extension networks (Asterisk's `permit=`/`deny=`).
    #[serde(default)]
    pub extension: Vec<ExtensionAcl>,
    /// If not empty, the Request-URI host of requests from the public side must be one
    /// of these domains (or an address of the edge).
    #[serde(default)]
    pub domains: Vec<String>,
    /// Refuse requests whose Request-URI host is an IP address that is not the edge's
    /// (scanners address servers by IP; phones configured with a domain never do).
    #[serde(default)]
    pub reject_ip_literal: bool,
}

/// `[[policy.acl.method]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodAcl {
    /// The method, e.g. `REGISTER`.
    pub method: String,
    /// If not empty, only these networks may send the method.
    #[serde(default)]
    pub allow: Vec<IpNet>,
    /// These networks may not send it.
    #[serde(default)]
    pub deny: Vec<IpNet>,
}

/// `[[policy.acl.extension]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtensionAcl {
    /// The user name (extension).
    pub user: String,
    /// Networks the extension may be used from; if not empty, nowhere else.
    #[serde(default)]
    pub permit: Vec<IpNet>,
    /// Networks it may not be used from (a `permit` match wins).
    #[serde(default)]
    pub deny: Vec<IpNet>,
}

/// `[policy.scanner]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScannerConfig {
    /// User-agent patterns (case-insensitive), matched in User-Agent, Server and the
    /// From/To/Contact display names and users.
    #[serde(default = "default_user_agents")]
    pub user_agents: Vec<String>,
    /// Patterns added to the list above.
    #[serde(default)]
    pub extra_user_agents: Vec<String>,
}

impl Default for ScannerConfig {
    fn default() -> Self {
        ScannerConfig {
            user_agents: default_user_agents(),
            extra_user_agents: Vec::new(),
        }
    }
}

/// The seeds' scanner list. `CSipSimple` (an Android softphone) is left out: it is a
/// legitimate client. `sipsak` stays: it is an admin's test tool, and admin networks
/// bypass the rule.
pub const DEFAULT_USER_AGENTS: &[&str] = &[
    "friendly-scanner",
    "friendly-request",
    "sipvicious",
    "sipcli",
    "sip-scan",
    "sipsak",
    "sundayddr",
    "iWar",
    "SIVuS",
    "Gulp",
    "sipv",
    "smap",
    "VaxSIPUserAgent",
    "VaxIPUserAgent",
    "siparmyknife",
    "Test Agent",
];

fn default_user_agents() -> Vec<String> {
    DEFAULT_USER_AGENTS.iter().map(|s| s.to_string()).collect()
}

/// `[policy.flood]`: request rates per source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FloodConfig {
    /// Requests per window above which a source floods (Kamailio pike's density).
    #[serde(default = "default_flood_requests")]
    pub requests: u32,
    /// The window of `requests`, in seconds.
    #[serde(default = "default_flood_window")]
    pub window_seconds: u32,
    /// New REGISTERs per minute per agent (the seeds: 6 × agents per 60 s).
    #[serde(default = "default_per_agent")]
    pub register_per_minute: u32,
    /// New INVITEs per minute per agent.
    #[serde(default = "default_per_agent")]
    pub invite_per_minute: u32,
    /// Counters per row of each sketch; memory is 16.25 bytes per counter (16 of
    /// counters, a quarter of stamps) whatever the number of sources.
    #[serde(default = "default_sketch_width")]
    pub sketch_width: usize,
}

impl Default for FloodConfig {
    fn default() -> Self {
        FloodConfig {
            requests: default_flood_requests(),
            window_seconds: default_flood_window(),
            register_per_minute: default_per_agent(),
            invite_per_minute: default_per_agent(),
            sketch_width: default_sketch_width(),
        }
    }
}

fn default_flood_requests() -> u32 {
    40
}
fn default_flood_window() -> u32 {
    2
}
fn default_per_agent() -> u32 {
    6
}
fn default_sketch_width() -> usize {
    1 << 18
}

/// `[policy.auth]`: brute force and enumeration by the upstream's answers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Failed authentications from one source (per agent) that ban it.
    #[serde(default = "default_failures")]
    pub max_failures: u32,
    /// Failed authentications of one user name that ban the source of the last one.
    #[serde(default = "default_failures")]
    pub max_user_failures: u32,
    /// The window of both, in seconds (the seeds: 15 minutes).
    #[serde(default = "default_failure_window")]
    pub window_seconds: u32,
    /// Challenges left unanswered (distinct Call-IDs) that ban a source: phones answer
    /// a challenge at once, enumeration tools never do.
    #[serde(default = "default_unanswered")]
    pub max_unanswered: u32,
    /// Seconds within which a challenge must be answered.
    #[serde(default = "default_answer_within")]
    pub answer_within_seconds: u32,
    /// Seconds a source stays trusted after its last successful authentication.
    #[serde(default = "default_trust_seconds")]
    pub trust_seconds: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            max_failures: default_failures(),
            max_user_failures: default_failures(),
            window_seconds: default_failure_window(),
            max_unanswered: default_unanswered(),
            answer_within_seconds: default_answer_within(),
            trust_seconds: default_trust_seconds(),
        }
    }
}

fn default_failures() -> u32 {
    3
}
fn default_failure_window() -> u32 {
    900
}
fn default_unanswered() -> u32 {
    5
}
fn default_answer_within() -> u32 {
    8
}
fn default_trust_seconds() -> u32 {
    86_400
}

/// `[policy.ban]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BanConfig {
    /// TTL of a first ban, in seconds.
    #[serde(default = "default_ban_ttl")]
    pub ttl_seconds: u32,
    /// Each repeat offence multiplies the TTL by this.
    #[serde(default = "default_ban_growth")]
    pub growth: u32,
    /// The longest TTL, in seconds.
    #[serde(default = "default_ban_max")]
    pub max_ttl_seconds: u32,
    /// How long an expired ban still counts as a previous offence, in seconds.
    #[serde(default = "default_ban_memory")]
    pub remember_seconds: u32,
    /// Most bans held at once (about 300 bytes each); when full, expired records and
    /// then the bans closest to their end make room.
    #[serde(default = "default_ban_capacity")]
    pub capacity: usize,
}

impl Default for BanConfig {
    fn default() -> Self {
        BanConfig {
            ttl_seconds: default_ban_ttl(),
            growth: default_ban_growth(),
            max_ttl_seconds: default_ban_max(),
            remember_seconds: default_ban_memory(),
            capacity: default_ban_capacity(),
        }
    }
}

fn default_ban_ttl() -> u32 {
    1800
}
fn default_ban_growth() -> u32 {
    4
}
fn default_ban_max() -> u32 {
    7 * 86_400
}
fn default_ban_memory() -> u32 {
    7 * 86_400
}
fn default_ban_capacity() -> usize {
    1 << 18
}

/// `[policy.enumeration]`: replies that would reveal whether an extension exists.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnumerationConfig {
    /// Turn such replies into the challenge a wrong password gets, for sources that
    /// have not authenticated.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Realm of the challenge until one from the upstream has been seen.
    #[serde(default)]
    pub realm: Option<String>,
}

impl Default for EnumerationConfig {
    fn default() -> Self {
        EnumerationConfig {
            enabled: true,
            realm: None,
        }
    }
}

fn default_true() -> bool {
    true
}
