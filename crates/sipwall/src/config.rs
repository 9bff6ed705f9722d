//! The configuration file: its TOML schema, and errors that name the file, line and key.
//!
//! Every table refuses unknown keys, so a misspelt option is an error rather than a
//! silently ignored line. Values are checked while they are read (addresses, keys), so
//! the error points at the offending value.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use serde::de::{self, Deserializer};
use sipwall_edge::{EdgeConfig, KEY_LEN, TopologyConfig, Transport};
use sipwall_fw::FirewallConfig;
use sipwall_net::NetConfig;
use sipwall_policy::PolicyConfig;
use sipwall_sip::Limits;

/// The key shipped in the example configuration: fine on loopback, never in production.
pub const EXAMPLE_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Public listeners.
    pub listen: Listen,
    /// The edge's side toward the upstream.
    pub inner: Inner,
    /// The PBX or proxy behind the edge.
    pub upstream: Upstream,
    /// Flow token keys.
    pub keys: Keys,
    /// Worker and connection settings.
    #[serde(default)]
    pub runtime: Runtime,
    /// Parser limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The security pipeline.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// The local admin endpoint.
    #[serde(default)]
    pub admin: AdminConfig,
    /// The host firewall (`sipwall firewall plan|apply`).
    #[serde(default)]
    pub firewall: FirewallConfig,
    /// Where bans are kept: on disk and in the kernel.
    #[serde(default)]
    pub bans: BansConfig,
    /// What the public side does not see of the inside.
    #[serde(default)]
    pub topology: TopologyToml,
}

/// `[topology]`: topology hiding and header hygiene toward the public side.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopologyToml {
    /// Mask the inside's Via stack, Record-Route entries, Contacts, Call-IDs and
    /// addresses in From and To.
    pub hide: bool,
    /// Networks of the inside besides the upstream's and the inner address.
    pub inside_networks: Vec<IpNet>,
    /// Host names of the inside.
    pub inside_names: Vec<String>,
    /// What replaces Server and User-Agent; empty removes them.
    pub server: String,
    /// Header fields removed toward the public side (Warning always is).
    pub remove_headers: Vec<String>,
}

impl Default for TopologyToml {
    fn default() -> Self {
        TopologyToml {
            hide: true,
            inside_networks: Vec::new(),
            inside_names: Vec::new(),
            server: String::new(),
            remove_headers: Vec::new(),
        }
    }
}

/// `[bans]`: persistence and kernel enforcement of the bans.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BansConfig {
    /// The SQLite file of the bans (relative paths are relative to the configuration
    /// file's directory); an empty string keeps bans in memory only.
    pub store: PathBuf,
    /// Kernel enforcement through nftables sets.
    pub kernel: KernelMode,
    /// Most milliseconds between a ban decision and its batch reaching the kernel and
    /// the disk.
    pub batch_ms: u64,
}

impl Default for BansConfig {
    fn default() -> Self {
        BansConfig {
            store: PathBuf::from("/var/lib/sipwall/bans.db"),
            kernel: KernelMode::Auto,
            batch_ms: 20,
        }
    }
}

/// Whether bans reach the kernel's nftables sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelMode {
    /// Required: sipwall refuses to start without it.
    On,
    /// Used when possible (root, nft installed); otherwise a warning and bans are
    /// enforced by sipwall alone.
    Auto,
    /// Not used.
    Off,
}

/// `[admin]`: the endpoint of `sipwall bans` (off without a token).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Where it listens: loopback unless `allow_remote`.
    pub listen: SocketAddr,
    /// The bearer token (at least 16 characters); no token, no endpoint.
    pub token: Option<String>,
    /// Allow a listen address other than loopback.
    pub allow_remote: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 5063)),
            token: None,
            allow_remote: false,
        }
    }
}

/// `[listen]`: where phones send.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// UDP listen addresses.
    #[serde(default)]
    pub udp: Vec<SocketAddr>,
    /// TCP listen addresses.
    #[serde(default)]
    pub tcp: Vec<SocketAddr>,
}

/// `[inner]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inner {
    /// The edge's UDP address toward the upstream; registrations point here.
    pub address: SocketAddr,
}

/// `[upstream]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// The upstream's UDP address.
    pub address: SocketAddr,
}

/// `[keys]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keys {
    /// The current key: 64 hexadecimal digits.
    #[serde(deserialize_with = "hex_key")]
    pub current: [u8; KEY_LEN],
    /// The previous key, accepted during a rotation.
    #[serde(default, deserialize_with = "optional_hex_key")]
    pub previous: Option<[u8; KEY_LEN]>,
}

/// `[runtime]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Runtime {
    /// UDP sockets per address; 0 means one per core.
    pub workers: usize,
    /// Seconds of silence after which a TCP connection is closed.
    pub tcp_idle_timeout: u64,
    /// Most TCP connections from one IP address.
    pub max_connections_per_source: usize,
    /// Most TCP connections in all.
    pub max_connections: usize,
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime {
            workers: 0,
            tcp_idle_timeout: 300,
            max_connections_per_source: 32,
            max_connections: 10_000,
        }
    }
}

/// `[limits]`: the parser's hard limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest message, in bytes (at most 65,535).
    pub max_message_size: usize,
    /// Most header fields in a message.
    pub max_headers: usize,
    /// Longest header field, folded lines included.
    pub max_line_length: usize,
    /// Longest URI.
    pub max_uri_length: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let limits = Limits::default();
        LimitsConfig {
            max_message_size: limits.max_message_size,
            max_headers: limits.max_headers,
            max_line_length: limits.max_line_length,
            max_uri_length: limits.max_uri_length,
        }
    }
}

fn parse_hex_key(text: &str) -> Result<[u8; KEY_LEN], String> {
    let text = text.trim();
    if text.len() != KEY_LEN * 2 {
        return Err(format!(
            "a key is {} hexadecimal digits (generate one with `openssl rand -hex {KEY_LEN}`)",
            KEY_LEN * 2
        ));
    }
    let mut key = [0u8; KEY_LEN];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
            .map_err(|_| "a key holds only hexadecimal digits".to_owned())?;
    }
    Ok(key)
}

fn hex_key<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; KEY_LEN], D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_hex_key(&text).map_err(de::Error::custom)
}

fn optional_hex_key<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<[u8; KEY_LEN]>, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_hex_key(&text).map(Some).map_err(de::Error::custom)
}

/// A configuration error, located.
#[derive(Debug)]
pub struct ConfigError {
    /// `file:line:column: key: message`, or `file: message` when no position applies.
    pub text: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError {
            text: format!("{}: {error}", path.display()),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses configuration text; `name` is the file name used in errors.
    pub fn parse(text: &str, name: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|error| {
            let message = error.message().trim_end_matches('\n').to_owned();
            match error.span() {
                Some(span) => locate(text, name, span.start, &message),
                None => ConfigError {
                    text: format!("{name}: {message}"),
                },
            }
        })?;
        config.check().map_err(|(key, message)| {
            let at = find_key(text, key).unwrap_or(0);
            locate(text, name, at, &message)
        })?;
        config.firewall.validate().map_err(|invalid| {
            let key = format!("firewall.{}", invalid.key);
            // A key left at its default is not in the file: point at the section.
            let at = find_key(text, &key)
                .or_else(|| find_key(text, "firewall"))
                .unwrap_or(0);
            let (line, column) = line_column(text, at);
            ConfigError {
                text: format!("{name}:{line}:{column}: {key}: {}", invalid.message),
            }
        })?;
        Ok(config)
    }

    /// Checks across keys; returns the key to blame and why.
    fn check(&self) -> Result<(), (&'static str, String)> {
        if self.listen.udp.is_empty() && self.listen.tcp.is_empty() {
            return Err(("listen", "at least one udp or tcp address is needed".into()));
        }
        if self.limits.max_message_size > Limits::MAX_MESSAGE_SIZE {
            return Err((
                "limits.max_message_size",
                format!("at most {}", Limits::MAX_MESSAGE_SIZE),
            ));
        }
        if self.runtime.tcp_idle_timeout == 0 {
            return Err((
                "runtime.tcp_idle_timeout",
                "must be at least 1 second".into(),
            ));
        }
        if self.upstream.address == self.inner.address {
            return Err(("upstream.address", "must differ from inner.address".into()));
        }
        if !self.admin.listen.ip().is_loopback() && !self.admin.allow_remote {
            return Err((
                "admin.listen",
                "not a loopback address: set admin.allow_remote = true if you mean it".into(),
            ));
        }
        if self.admin.token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(("admin.token", "at least 16 characters".into()));
        }
        if !(1..=10_000).contains(&self.bans.batch_ms) {
            return Err((
                "bans.batch_ms",
                "must be between 1 and 10000 milliseconds".into(),
            ));
        }
        if !(1..=128).contains(&self.policy.ipv6_prefix) {
            return Err(("policy.ipv6_prefix", "must be between 1 and 128".into()));
        }
        if self.policy.flood.requests == 0 || self.policy.flood.window_seconds == 0 {
            return Err((
                "policy.flood",
                "requests and window_seconds must be at least 1".into(),
            ));
        }
        let token = |text: &str| {
            !text.is_empty()
                && text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
        };
        if let Some(name) = self
            .topology
            .remove_headers
            .iter()
            .find(|name| !token(name))
        {
            return Err((
                "topology.remove_headers",
                format!("\"{name}\" is not a header name"),
            ));
        }
        if self.topology.server.bytes().any(|b| b.is_ascii_control()) {
            return Err(("topology.server", "must be one line of text".into()));
        }
        if let Some(name) = self
            .topology
            .inside_names
            .iter()
            .find(|name| name.is_empty())
        {
            return Err((
                "topology.inside_names",
                format!("\"{name}\" is not a host name"),
            ));
        }
        for rule in &self.policy.acl.method {
            if rule.method.is_empty() || !rule.method.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(("method", format!("\"{}\" is not a SIP method", rule.method)));
            }
        }
        Ok(())
    }

    /// The routing configuration.
    pub fn edge(&self) -> EdgeConfig {
        let public = self
            .listen
            .udp
            .iter()
            .map(|a| (Transport::Udp, *a))
            .chain(self.listen.tcp.iter().map(|a| (Transport::Tcp, *a)))
            .collect();
        EdgeConfig {
            public,
            inner: self.inner.address,
            upstream: self.upstream.address,
            key: self.keys.current,
            previous_key: self.keys.previous,
            limits: Limits {
                max_message_size: self.limits.max_message_size,
                max_headers: self.limits.max_headers,
                max_line_length: self.limits.max_line_length,
                max_uri_length: self.limits.max_uri_length,
            },
            topology: TopologyConfig {
                hide: self.topology.hide,
                inside_networks: self.topology.inside_networks.clone(),
                inside_names: self.topology.inside_names.clone(),
                server: (!self.topology.server.is_empty()).then(|| self.topology.server.clone()),
                remove_headers: self.topology.remove_headers.clone(),
            },
        }
    }

    /// The runtime configuration.
    pub fn net(&self) -> NetConfig {
        let workers = match self.runtime.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        NetConfig {
            edge: self.edge(),
            workers,
            tcp_idle_timeout: Duration::from_secs(self.runtime.tcp_idle_timeout),
            max_connections_per_source: self.runtime.max_connections_per_source,
            max_connections: self.runtime.max_connections,
        }
    }

    /// Addresses that no path may ban: the upstream.
    pub fn protected(&self) -> Vec<std::net::IpAddr> {
        vec![self.upstream.address.ip()]
    }

    /// The edge's own addresses (a Request-URI naming one is addressed to us).
    pub fn own_addresses(&self) -> Vec<std::net::IpAddr> {
        let mut own: Vec<std::net::IpAddr> = self
            .listen
            .udp
            .iter()
            .chain(&self.listen.tcp)
            .map(|a| a.ip())
            .collect();
        own.push(self.inner.address.ip());
        own
    }

    /// The ban store's file, relative paths taken from `base` (the configuration file's
    /// directory); `None` when bans are kept in memory only.
    pub fn store_path(&self, base: &Path) -> Option<PathBuf> {
        if self.bans.store.as_os_str().is_empty() {
            None
        } else {
            Some(base.join(&self.bans.store))
        }
    }

    /// Valid but probably unintended firewall settings (an admin-only SSH without admin
    /// networks, …), for `check`, `plan` and `apply` to show.
    pub fn firewall_warnings(&self) -> Vec<String> {
        self.firewall.validate().unwrap_or_default()
    }

    /// True if the key is the example's.
    pub fn uses_example_key(&self) -> bool {
        parse_hex_key(EXAMPLE_KEY).is_ok_and(|key| key == self.keys.current)
    }
}

/// `name:line:column: key: message` for byte offset `at` of `text`.
fn locate(text: &str, name: &str, at: usize, message: &str) -> ConfigError {
    let at = at.min(text.len());
    let (line, column) = line_column(text, at);
    let key = key_at(text, at);
    let text = match key {
        Some(key) => format!("{name}:{line}:{column}: {key}: {message}"),
        None => format!("{name}:{line}:{column}: {message}"),
    };
    ConfigError { text }
}

/// The line and column (both from 1) of byte offset `at` of `text`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(at, |newline| at - newline - 1) + 1;
    (line, column)
}

/// The dotted key defined on the line holding byte `at`: the nearest `[table]` header
/// above it, and the key before `=` on the line.
fn key_at(text: &str, at: usize) -> Option<String> {
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    let key = line.split_once('=').map(|(k, _)| k.trim().to_owned());
    match (table, key) {
        (Some(table), Some(key)) if !key.is_empty() => Some(format!("{table}.{key}")),
        (None, Some(key)) if !key.is_empty() => Some(key),
        (Some(table), _) if line.trim().starts_with('[') => Some(table),
        _ => None,
    }
}

/// Byte offset of the line that sets dotted `key` (or opens its table).
fn find_key(text: &str, key: &str) -> Option<usize> {
    let (table, leaf) = key.rsplit_once('.').unwrap_or((key, ""));
    let mut offset = 0;
    let mut in_table = false;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            in_table = trimmed.trim_matches(|c| c == '[' || c == ']').trim() == table;
            if in_table && leaf.is_empty() {
                return Some(offset);
            }
        } else if in_table
            && trimmed
                .split_once('=')
                .is_some_and(|(k, _)| k.trim() == leaf)
        {
            return Some(offset);
        }
        offset += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = include_str!("../../../sipwall.toml");

    #[test]
    fn the_example_configuration_is_valid() {
        let config = Config::parse(GOOD, "sipwall.toml").unwrap();
        assert_eq!(config.listen.udp, ["127.0.0.1:5060".parse().unwrap()]);
        assert_eq!(config.upstream.address, "127.0.0.1:5080".parse().unwrap());
        assert!(config.uses_example_key());
    }

    fn error(text: &str) -> String {
        Config::parse(text, "test.toml").unwrap_err().text
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let bad_address = GOOD.replace("address = \"127.0.0.1:5080\"", "address = \"127.0.0.1\"");
        let line = GOOD
            .lines()
            .position(|l| l.contains("address = \"127.0.0.1:5080\""))
            .unwrap()
            + 1;
        let text = error(&bad_address);
        assert!(text.starts_with(&format!("test.toml:{line}:")), "{text}");
        assert!(text.contains("upstream.address"), "{text}");

        let unknown = GOOD.replace("[upstream]", "[upstream]\nadress = \"x\"");
        let text = error(&unknown);
        assert!(text.contains("unknown field `adress`"), "{text}");
        assert!(text.contains("upstream.adress"), "{text}");

        let short_key = GOOD.replace(EXAMPLE_KEY, "abcd");
        let text = error(&short_key);
        assert!(
            text.contains("keys.current") && text.contains("64 hexadecimal digits"),
            "{text}"
        );

        let same = GOOD.replace("127.0.0.1:5080", "127.0.0.1:5070");
        let text = error(&same);
        assert!(text.contains("upstream.address: must differ"), "{text}");

        let no_listener = GOOD
            .replace("udp = [\"127.0.0.1:5060\"]", "udp = []")
            .replace("tcp = [\"127.0.0.1:5060\"]", "tcp = []");
        assert!(error(&no_listener).contains("at least one udp or tcp address"));
    }

    #[test]
    fn policy_and_admin_errors_name_their_key() {
        let text =
            error(&GOOD.replace("admin_networks = []", "admin_networks = [\"10.0.0.0/33\"]"));
        assert!(text.contains("policy.admin_networks"), "{text}");
        let text = error(&format!(
            "{GOOD}\n[policy.rules.flood]\naction = \"explode\"\n"
        ));
        assert!(
            text.contains("policy.rules.flood.action") && text.contains("unknown variant"),
            "{text}"
        );
        let text = error(&format!("{GOOD}\n[policy.flod]\nrequests = 1\n"));
        assert!(text.contains("unknown field `flod`"), "{text}");
        let text = error(&GOOD.replace("ipv6_prefix = 64", "ipv6_prefix = 0"));
        assert!(text.contains("policy.ipv6_prefix"), "{text}");
        let text = error(&GOOD.replace("listen = \"127.0.0.1:5063\"", "listen = \"0.0.0.0:5063\""));
        assert!(
            text.contains("admin.listen") && text.contains("allow_remote"),
            "{text}"
        );
        let text = error(&GOOD.replace("example-admin-token-change-me", "short"));
        assert!(text.contains("admin.token"), "{text}");
    }

    #[test]
    fn bans_errors_name_their_key() {
        let text = error(&GOOD.replace("kernel = \"auto\"", "kernel = \"maybe\""));
        assert!(
            text.contains("bans.kernel") && text.contains("unknown variant"),
            "{text}"
        );
        let text = error(&GOOD.replace("batch_ms = 20", "batch_ms = 0"));
        assert!(text.contains("bans.batch_ms"), "{text}");
        let config = Config::parse(GOOD, "sipwall.toml").unwrap();
        assert_eq!(
            config.store_path(Path::new("/etc/sipwall")),
            Some(PathBuf::from("/etc/sipwall/state/bans.db"))
        );
        let memory = Config::parse(
            &GOOD.replace("store = \"state/bans.db\"", "store = \"\""),
            "x",
        )
        .unwrap();
        assert_eq!(memory.store_path(Path::new("/etc/sipwall")), None);
    }

    #[test]
    fn topology_is_hidden_by_default_and_its_errors_name_their_key() {
        let config = Config::parse(GOOD, "sipwall.toml").unwrap();
        assert!(config.topology.hide);
        assert!(config.edge().topology.hide);
        assert_eq!(config.edge().topology.server, None);
        let without = Config::parse(&GOOD.replace("[topology]", "[topology_unused]"), "x");
        assert!(without.is_err());
        let start = GOOD.find("[topology]").unwrap();
        let end = GOOD[start..].find("\n# The security pipeline").unwrap() + start;
        let no_section = format!("{}{}", &GOOD[..start], &GOOD[end..]);
        assert!(
            Config::parse(&no_section, "x")
                .unwrap()
                .edge()
                .topology
                .hide
        );

        let line = GOOD
            .lines()
            .position(|l| l.starts_with("remove_headers"))
            .unwrap()
            + 1;
        let text = error(&GOOD.replace(
            "remove_headers = [\"X-Asterisk-HangupCause\"",
            "remove_headers = [\"X Bad\"",
        ));
        assert!(text.starts_with(&format!("test.toml:{line}:")), "{text}");
        assert!(text.contains("topology.remove_headers"), "{text}");
        let text = error(&GOOD.replace(
            "inside_networks = []",
            "inside_networks = [\"10.0.0.0/40\"]",
        ));
        assert!(text.contains("topology.inside_networks"), "{text}");
        let text = error(&GOOD.replace("server = \"\"", "server = \"a\\nb\""));
        assert!(text.contains("topology.server"), "{text}");
        let text = error(&GOOD.replace("hide = true", "hide = \"yes\""));
        assert!(text.contains("topology.hide"), "{text}");
        let replaced = Config::parse(&GOOD.replace("server = \"\"", "server = \"edge\""), "x");
        assert_eq!(
            replaced.unwrap().edge().topology.server.as_deref(),
            Some("edge")
        );
    }

    #[test]
    fn the_example_firewall_section_sets_every_key_to_its_default_but_admin_networks() {
        let config = Config::parse(GOOD, "sipwall.toml").unwrap();
        let example = FirewallConfig {
            admin_networks: FirewallConfig::default().admin_networks,
            ..config.firewall.clone()
        };
        assert_eq!(example, FirewallConfig::default());
        assert_eq!(config.firewall.admin_networks.len(), 2);
        assert!(config.firewall_warnings().is_empty());
        assert!(Config::parse(&GOOD[..GOOD.find("[firewall]").unwrap()], "x").is_ok());
    }

    #[test]
    fn firewall_errors_name_file_line_and_key() {
        let line_of = |needle: &str| GOOD.lines().position(|l| l.starts_with(needle)).unwrap() + 1;
        for (from, to, key, message) in [
            (
                "ssh_ports = [22]",
                "ssh_ports = [0]",
                "firewall.ssh_ports",
                "not a port",
            ),
            (
                "rtp_ports = [\"10000-20000\"]",
                "rtp_ports = [\"20000-10000\"]",
                "firewall.rtp_ports",
                "reversed",
            ),
            (
                "blocklist = []",
                "blocklist = [\"192.0.2.0/40\"]",
                "firewall.blocklist",
                "not an address or a network",
            ),
            (
                "sip_packets_per_second = 100",
                "sip_packets_per_second = 0",
                "firewall.sip_packets_per_second",
                "at least 1",
            ),
            (
                "public_interfaces = []",
                "public_interfaces = [\"eth0 \\\"\"]",
                "firewall.public_interfaces",
                "not an interface name",
            ),
            (
                "agents = 10",
                "agent = 10",
                "firewall.agent",
                "unknown field `agent`",
            ),
        ] {
            let text = error(&GOOD.replace(from, to));
            let line = line_of(from.split(' ').next().unwrap());
            assert!(
                text.starts_with(&format!("test.toml:{line}:")),
                "{from}: {text}"
            );
            assert!(
                text.contains(key) && text.contains(message),
                "{from}: {text}"
            );
        }
        // A key not in the file is blamed on the section.
        let without = &GOOD[..GOOD.find("[firewall]").unwrap()];
        let text = error(&format!("{without}[firewall]\nsip_burst = 0\n"));
        assert!(
            text.contains("firewall.sip_burst: must be at least 1"),
            "{text}"
        );
    }
}
