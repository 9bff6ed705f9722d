//! The security pipeline of sipwall, without I/O: for each request from the public side,
//! pass it, drop it, answer it, tarpit it, ban its source or send it to the honeypot;
//! for each answer of the upstream, learn from it (failed and successful
//! authentications, unanswered challenges) and hide what it would reveal.
//!
//! The [`Engine`] takes the parsed message, the transport source and `now` (in
//! milliseconds of a monotonic clock the caller owns) and returns a [`Verdict`]; it
//! never reads a clock, a socket or a file, so every rule is tested with a simulated
//! clock. Rules run cheapest and most certain first, as the seeds' REQINIT route does:
//!
//! 1. bans ([`Engine::admit`], before the message is even parsed);
//! 2. trust tiers: admin networks and trusted peers pass everything that follows;
//! 3. ACLs: source networks, per method, per extension, Request-URI domains;
//! 4. scanners: user-agent patterns, tool fingerprints, SQL injection, Record-Route
//!    spoofing;
//! 5. floods: request density per source (Kamailio's pike) and REGISTER/INVITE windows
//!    (the seeds' 6 × agents per minute), in sketches of fixed size;
//! 6. brute force, from the upstream's answers ([`Engine::observe_response`]): failed
//!    authentications per source and per user name, challenges never answered.
//!
//! "Agents" are the distinct user names that authenticated successfully from a source:
//! an office behind one NAT address with forty phones gets forty times the allowance of
//! a single unknown address, so its phones re-registering after an outage are not taken
//! for a flood.
//!
//! Every match is counted per rule and reported as an [`Event`]; a rule in shadow mode
//! is counted and reported but not enforced.

pub mod config;

mod bans;
mod nets;
mod scan;
mod source;
mod window;

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use siphasher::sip::SipHasher13;
use sipwall_sip::{Checked, HeaderName, Message, Method, NameAddr};

pub use bans::{Ban, BanKind, BanRefused, BanTable};
pub use config::{ActionKind, PolicyConfig};
pub use nets::NetSet;
pub use scan::{Patterns, is_sipvicious_tag, is_sql_in_text, is_sql_in_username};
pub use source::SourceKey;
pub use window::RateSketch;

use config::RuleOverride;

/// Ends the pipeline with the verdict of a rule that was enforced; a rule in shadow
/// mode lets it go on.
macro_rules! enforce {
    ($fired:expr) => {
        if let Some(verdict) = $fired {
            return Some(verdict);
        }
    };
}

/// Milliseconds of the caller's monotonic clock.
pub type Millis = u64;

/// Most events held until the runtime drains them; more are counted and dropped (bans
/// themselves are in the ban table, never lost with an event).
const EVENT_CAPACITY: usize = 4096;
/// Most sources (or user names) tracked by each exact table of the brute-force rules.
const TABLE_CAPACITY: usize = 65_536;
/// Most challenges awaiting an answer per source.
const PENDING_PER_SOURCE: usize = 64;
/// Most user names remembered per trusted source.
const AGENTS_PER_SOURCE: usize = 1024;
/// Delay of a tarpitted answer.
const TARPIT_DELAY: Millis = 10_000;

/// The rules, each with its own settings and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Rule {
    /// Source networks allowed and denied.
    Acl,
    /// Networks allowed and denied per method.
    MethodAcl,
    /// Networks allowed and denied per extension.
    ExtensionAcl,
    /// Request-URI host not one of ours, or an IP literal.
    Domain,
    /// A scanner's user agent.
    ScannerAgent,
    /// A known tool's fingerprint in the headers.
    ToolFingerprint,
    /// SQL injection in a user name, URI user or display name.
    SqlInjection,
    /// A Record-Route that does not name the sender.
    RouteSpoof,
    /// Too many requests per window (pike).
    Flood,
    /// Too many new REGISTERs per minute.
    RegisterRate,
    /// Too many new INVITEs per minute.
    InviteRate,
    /// Too many failed authentications from one source.
    AuthFailures,
    /// Too many failed authentications of one user name.
    UserFailures,
    /// Too many challenges never answered (enumeration).
    UnansweredChallenges,
    /// A message that does not parse or fails sanity.
    Malformed,
    /// A forged, stale or foreign flow token.
    BadToken,
    /// A ban made by an administrator.
    Manual,
}

impl Rule {
    /// Every rule, in pipeline order.
    pub const ALL: [Rule; 17] = [
        Rule::Acl,
        Rule::MethodAcl,
        Rule::ExtensionAcl,
        Rule::Domain,
        Rule::ScannerAgent,
        Rule::ToolFingerprint,
        Rule::SqlInjection,
        Rule::RouteSpoof,
        Rule::Flood,
        Rule::RegisterRate,
        Rule::InviteRate,
        Rule::AuthFailures,
        Rule::UserFailures,
        Rule::UnansweredChallenges,
        Rule::Malformed,
        Rule::BadToken,
        Rule::Manual,
    ];

    /// The rule's name in the config, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Rule::Acl => "acl",
            Rule::MethodAcl => "method_acl",
            Rule::ExtensionAcl => "extension_acl",
            Rule::Domain => "domain",
            Rule::ScannerAgent => "scanner_agent",
            Rule::ToolFingerprint => "tool_fingerprint",
            Rule::SqlInjection => "sql_injection",
            Rule::RouteSpoof => "route_spoof",
            Rule::Flood => "flood",
            Rule::RegisterRate => "register_rate",
            Rule::InviteRate => "invite_rate",
            Rule::AuthFailures => "auth_failures",
            Rule::UserFailures => "user_failures",
            Rule::UnansweredChallenges => "unanswered_challenges",
            Rule::Malformed => "malformed",
            Rule::BadToken => "bad_token",
            Rule::Manual => "manual",
        }
    }

    /// The rule of `name`.
    pub fn from_name(name: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|rule| rule.name() == name)
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The default settings: the safe policy for an office PBX (see the README).
    fn defaults(self) -> Settings {
        use ActionKind::*;
        let (action, code) = match self {
            Rule::Acl | Rule::Domain | Rule::ExtensionAcl | Rule::RouteSpoof => (Drop, 403),
            Rule::MethodAcl => (Reply, 405),
            Rule::RegisterRate | Rule::InviteRate => (Drop, 503),
            Rule::Malformed => (Reply, 400),
            Rule::BadToken => (Reply, 403),
            Rule::ScannerAgent
            | Rule::ToolFingerprint
            | Rule::SqlInjection
            | Rule::Flood
            | Rule::AuthFailures
            | Rule::UserFailures
            | Rule::UnansweredChallenges
            | Rule::Manual => (Ban, 403),
        };
        Settings {
            enabled: true,
            shadow: false,
            action,
            code,
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A rule's effective settings.
#[derive(Debug, Clone, Copy)]
struct Settings {
    enabled: bool,
    shadow: bool,
    action: ActionKind,
    code: u16,
}

impl Settings {
    fn with(mut self, o: &RuleOverride) -> Settings {
        self.enabled = o.enabled.unwrap_or(self.enabled);
        self.shadow = o.shadow.unwrap_or(self.shadow);
        self.action = o.action.unwrap_or(self.action);
        self.code = o.code.unwrap_or(self.code);
        self
    }
}

/// How much a source is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// An administrator's network: never banned, no limits.
    Admin,
    /// A gateway or carrier: never banned, no limits.
    Trusted,
    /// Authenticated successfully as this many distinct users: larger allowance.
    Authenticated(u32),
    /// Anyone else.
    Unknown,
}

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it.
    Pass,
    /// Send nothing.
    Drop,
    /// Answer with this status code.
    Reply(u16),
    /// Answer with this status code after `delay` milliseconds.
    Tarpit {
        /// The status code.
        code: u16,
        /// The delay.
        delay: Millis,
    },
    /// Answer as the honeypot does (a plausible success).
    Honeypot,
}

/// What was done about a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// The message was dropped.
    Dropped,
    /// The message was answered with this code.
    Replied(u16),
    /// The message was answered with this code, late.
    Tarpitted(u16),
    /// The source was banned until this time.
    Banned {
        /// End of the ban.
        until: Millis,
        /// Bans of the source so far.
        offences: u32,
    },
    /// The source goes to the honeypot until this time.
    Honeypotted {
        /// End of the ban.
        until: Millis,
    },
    /// The match was only counted (shadow mode).
    Shadowed,
    /// A ban was refused: the source is protected.
    Protected,
    /// A ban was lifted by an administrator.
    Unbanned,
    /// A ban reached its end.
    Expired,
}

/// A structured record of one decision, for logs, metrics, the kernel and the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// When.
    pub at: Millis,
    /// The rule.
    pub rule: Rule,
    /// The source.
    pub source: SourceKey,
    /// Why, in words.
    pub reason: String,
    /// What was done.
    pub taken: Taken,
}

/// Counters of one rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleCounters {
    /// Matches.
    pub matched: u64,
    /// Matches acted upon.
    pub enforced: u64,
    /// Matches only counted (shadow mode).
    pub shadowed: u64,
}

/// Counters of the engine as a whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Per rule, indexed like [`Rule::ALL`].
    pub rules: [RuleCounters; Rule::ALL.len()],
    /// Requests that passed every rule.
    pub passed: u64,
    /// Packets dropped because their source is banned.
    pub banned_packets: u64,
    /// Replies of the upstream turned into a challenge so they reveal nothing.
    pub disguised: u64,
    /// Successful authentications seen.
    pub auth_successes: u64,
    /// Events dropped because nobody drained them.
    pub lost_events: u64,
}

/// What the upstream answered to a request from the public side, as the edge knows it
/// statelessly (the request's facts travel in the edge's Via).
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// The public source the request came from.
    pub source: IpAddr,
    /// The request's method (from CSeq).
    pub method: Method<'a>,
    /// The status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: &'a [u8],
    /// The Call-ID.
    pub call_id: &'a [u8],
    /// The digest user name, if the request carried credentials.
    pub credentials: Option<&'a [u8]>,
    /// True if the request was outside a dialog (no To tag).
    pub initial: bool,
    /// The challenge of a 401/407 (WWW- or Proxy-Authenticate value).
    pub challenge: Option<&'a [u8]>,
}

/// What to do with an answer of the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerVerdict {
    /// Forward it as it is.
    Forward,
    /// It would reveal whether an extension exists: turn it into this challenge status
    /// (401 for REGISTER, 407 otherwise) with [`Engine::write_challenge`].
    Disguise(u16),
}

/// Trust earned by successful authentications.
#[derive(Debug, Clone)]
struct Trust {
    /// Hashes of the user names that authenticated.
    users: Vec<u64>,
    /// Last success.
    last: Millis,
}

/// The security pipeline's state. One per process, shared by the workers.
#[derive(Debug)]
pub struct Engine {
    v6_prefix: u8,
    admin: NetSet,
    trusted: NetSet,
    acl_allow: NetSet,
    acl_deny: NetSet,
    /// Per method name: allowed and denied networks.
    method_acls: Vec<(String, NetSet, NetSet)>,
    /// Per user name: permitted and denied networks.
    extension_acls: HashMap<Vec<u8>, (NetSet, NetSet)>,
    /// Lowercased domains served.
    domains: Vec<Vec<u8>>,
    reject_ip_literal: bool,
    /// Addresses of the edge itself (a Request-URI naming them is fine).
    own_addresses: Vec<IpAddr>,
    agents: Patterns,
    settings: [Settings; Rule::ALL.len()],
    density: RateSketch,
    density_limit: u32,
    methods: RateSketch,
    register_limit: u32,
    invite_limit: u32,
    bans: BanTable,
    trust: HashMap<SourceKey, Trust>,
    trust_for: Millis,
    failures: HashMap<SourceKey, VecDeque<Millis>>,
    user_failures: HashMap<u64, VecDeque<Millis>>,
    max_failures: u32,
    max_user_failures: u32,
    failure_window: Millis,
    /// Challenges awaiting an answer: Call-ID hash and deadline.
    pending: HashMap<SourceKey, Vec<(u64, Millis)>>,
    /// When challenges went unanswered.
    unanswered: HashMap<SourceKey, VecDeque<Millis>>,
    max_unanswered: u32,
    answer_within: Millis,
    disguise: bool,
    /// The upstream's last challenge, replayed with a fresh nonce.
    challenge_template: Option<Vec<u8>>,
    /// How many leading characters of the upstream's nonces stay the same from one
    /// challenge to the next (a timestamp, a server id): a fresh nonce keeps them, so it
    /// looks like the upstream's.
    nonce_stable_prefix: usize,
    default_realm: Option<String>,
    hash_keys: (u64, u64),
    nonce_counter: u64,
    events: Vec<Event>,
    /// Events recorded so far ([`Engine::events_recorded`]).
    events_recorded: u64,
    /// The latest time the engine was told of by an event or a tick.
    last_now: Millis,
    counters: Counters,
    ended: Vec<SourceKey>,
}

impl Engine {
    /// The engine for `config`. `protected` are addresses that may never be banned
    /// besides admin networks and trusted peers (the upstream); `seed` keys the hashes
    /// of the sketches and nonces, so an attacker cannot aim collisions.
    pub fn new(config: &PolicyConfig, protected: &[IpAddr], seed: [u8; 16]) -> Engine {
        let mut protected_set = NetSet::new(&config.admin_networks);
        for net in &config.trusted_peers {
            protected_set.insert(*net);
        }
        for ip in protected {
            protected_set.insert(ipnet::IpNet::from(*ip));
        }
        let overrides = &config.rules;
        let settings = Rule::ALL.map(|rule| {
            let o = match rule {
                Rule::Acl => &overrides.acl,
                Rule::MethodAcl => &overrides.method_acl,
                Rule::ExtensionAcl => &overrides.extension_acl,
                Rule::Domain => &overrides.domain,
                Rule::ScannerAgent => &overrides.scanner_agent,
                Rule::ToolFingerprint => &overrides.tool_fingerprint,
                Rule::SqlInjection => &overrides.sql_injection,
                Rule::RouteSpoof => &overrides.route_spoof,
                Rule::Flood => &overrides.flood,
                Rule::RegisterRate => &overrides.register_rate,
                Rule::InviteRate => &overrides.invite_rate,
                Rule::AuthFailures => &overrides.auth_failures,
                Rule::UserFailures => &overrides.user_failures,
                Rule::UnansweredChallenges => &overrides.unanswered_challenges,
                Rule::Malformed => &overrides.malformed,
                Rule::BadToken => &overrides.bad_token,
                Rule::Manual => &RuleOverride::default(),
            };
            rule.defaults().with(o)
        });
        let mut patterns: Vec<String> = config.scanner.user_agents.clone();
        patterns.extend(config.scanner.extra_user_agents.iter().cloned());
        let flood = &config.flood;
        let auth = &config.auth;
        let (k0, k1) = seed.split_at(8);
        let key = |bytes: &[u8]| {
            let mut word = [0u8; 8];
            word.copy_from_slice(bytes);
            u64::from_le_bytes(word)
        };
        Engine {
            v6_prefix: config.ipv6_prefix,
            admin: NetSet::new(&config.admin_networks),
            trusted: NetSet::new(&config.trusted_peers),
            acl_allow: NetSet::new(&config.acl.allow),
            acl_deny: NetSet::new(&config.acl.deny),
            method_acls: config
                .acl
                .method
                .iter()
                .map(|m| {
                    (
                        m.method.clone(),
                        NetSet::new(&m.allow),
                        NetSet::new(&m.deny),
                    )
                })
                .collect(),
            extension_acls: config
                .acl
                .extension
                .iter()
                .map(|e| {
                    (
                        e.user.as_bytes().to_vec(),
                        (NetSet::new(&e.permit), NetSet::new(&e.deny)),
                    )
                })
                .collect(),
            domains: config
                .acl
                .domains
                .iter()
                .map(|d| d.as_bytes().to_ascii_lowercase())
                .collect(),
            reject_ip_literal: config.acl.reject_ip_literal,
            own_addresses: Vec::new(),
            agents: Patterns::new(&patterns),
            settings,
            density: RateSketch::new(
                flood.sketch_width,
                Millis::from(flood.window_seconds) * 1000,
            ),
            density_limit: flood.requests,
            methods: RateSketch::new(flood.sketch_width, 60_000),
            register_limit: flood.register_per_minute,
            invite_limit: flood.invite_per_minute,
            bans: BanTable::new(&config.ban, protected_set),
            trust: HashMap::new(),
            trust_for: Millis::from(auth.trust_seconds) * 1000,
            failures: HashMap::new(),
            user_failures: HashMap::new(),
            max_failures: auth.max_failures.max(1),
            max_user_failures: auth.max_user_failures.max(1),
            failure_window: Millis::from(auth.window_seconds) * 1000,
            pending: HashMap::new(),
            unanswered: HashMap::new(),
            max_unanswered: auth.max_unanswered.max(1),
            answer_within: Millis::from(auth.answer_within_seconds) * 1000,
            disguise: config.enumeration.enabled,
            challenge_template: None,
            nonce_stable_prefix: 0,
            default_realm: config.enumeration.realm.clone(),
            hash_keys: (key(k0), key(k1)),
            nonce_counter: 0,
            events: Vec::new(),
            events_recorded: 0,
            last_now: 0,
            counters: Counters::default(),
            ended: Vec::new(),
        }
    }

    /// Applies a new configuration, keeping what was learnt: bans, trust, failure
    /// counts, pending challenges and counters (a reload must not unban anyone).
    pub fn reconfigure(&mut self, config: &PolicyConfig, protected: &[IpAddr], own: &[IpAddr]) {
        let mut seed = [0u8; 16];
        seed[..8].copy_from_slice(&self.hash_keys.0.to_le_bytes());
        seed[8..].copy_from_slice(&self.hash_keys.1.to_le_bytes());
        let mut next = Engine::new(config, protected, seed);
        next.own_addresses = own.to_vec();
        let mut lifted = Vec::new();
        let now = self.last_now;
        next.bans.adopt(&mut self.bans, now, &mut lifted);
        next.trust = std::mem::take(&mut self.trust);
        next.failures = std::mem::take(&mut self.failures);
        next.user_failures = std::mem::take(&mut self.user_failures);
        next.pending = std::mem::take(&mut self.pending);
        next.unanswered = std::mem::take(&mut self.unanswered);
        next.challenge_template = self.challenge_template.take();
        next.nonce_stable_prefix = self.nonce_stable_prefix;
        next.nonce_counter = self.nonce_counter;
        next.events = std::mem::take(&mut self.events);
        next.counters = std::mem::take(&mut self.counters);
        next.events_recorded = self.events_recorded;
        next.last_now = self.last_now;
        *self = next;
        for source in lifted {
            self.push_event(Event {
                at: now,
                rule: Rule::Manual,
                source,
                reason: "protected by the new configuration".into(),
                taken: Taken::Unbanned,
            });
        }
    }

    /// Puts back a ban read from the store at start-up, as it was: no event (it is on disk
    /// already) and no growth of its TTL. Refused for a source protected by the current
    /// configuration.
    pub fn restore(&mut self, ban: Ban) -> Result<(), BanRefused> {
        self.bans.restore(ban)
    }

    /// Events recorded since the engine was created, those lost to a full queue included:
    /// a caller that has just made a ban waits until whoever drains the events has handled
    /// this many (the admin endpoint acknowledges a ban once it is on disk).
    pub fn events_recorded(&self) -> u64 {
        self.events_recorded
    }

    /// Declares the edge's own addresses: a Request-URI naming one of them is addressed
    /// to us, not an IP literal of someone else's.
    pub fn set_own_addresses(&mut self, addresses: &[IpAddr]) {
        self.own_addresses = addresses.to_vec();
    }

    /// Parses a source as an administrator writes it: an IPv4 address, an IPv6 address
    /// (taken per the configured prefix) or an IPv6 prefix.
    pub fn parse_source(&self, text: &str) -> Option<SourceKey> {
        SourceKey::parse(text.trim(), self.v6_prefix)
    }

    /// The source key of `ip`.
    pub fn key(&self, ip: IpAddr) -> SourceKey {
        SourceKey::new(ip, self.v6_prefix)
    }

    /// The trust tier of `ip` at `now`.
    pub fn tier(&self, ip: IpAddr, now: Millis) -> Tier {
        if self.admin.contains(ip) {
            return Tier::Admin;
        }
        if self.trusted.contains(ip) {
            return Tier::Trusted;
        }
        match self.trust.get(&self.key(ip)) {
            Some(trust) if now.saturating_sub(trust.last) < self.trust_for => {
                Tier::Authenticated(trust.users.len() as u32)
            }
            _ => Tier::Unknown,
        }
    }

    /// The first check of every packet from the public side, before it is parsed: is its
    /// source banned? Returns [`Verdict::Pass`], [`Verdict::Drop`] or
    /// [`Verdict::Honeypot`].
    pub fn admit(&mut self, ip: IpAddr, now: Millis) -> Verdict {
        if self.bans.is_empty() {
            return Verdict::Pass;
        }
        let key = self.key(ip);
        match self.bans.hit(key, now).map(|ban| ban.kind) {
            None => Verdict::Pass,
            Some(BanKind::Drop) => {
                self.counters.banned_packets += 1;
                Verdict::Drop
            }
            Some(BanKind::Honeypot) => Verdict::Honeypot,
        }
    }

    /// Runs the pipeline on a request from the public side that parsed and passed the
    /// sanity checks (`checked` is what they parsed).
    pub fn check_request(
        &mut self,
        msg: &Message<'_>,
        checked: &Checked<'_>,
        ip: IpAddr,
        now: Millis,
    ) -> Verdict {
        let tier = self.tier(ip, now);
        if matches!(tier, Tier::Admin | Tier::Trusted) {
            self.counters.passed += 1;
            return Verdict::Pass;
        }
        let key = self.key(ip);
        match self.evaluate(msg, checked, ip, key, tier, now) {
            Some(verdict) => verdict,
            None => {
                self.counters.passed += 1;
                Verdict::Pass
            }
        }
    }

    /// The rules in order; the first that is enforced decides.
    fn evaluate(
        &mut self,
        msg: &Message<'_>,
        checked: &Checked<'_>,
        ip: IpAddr,
        key: SourceKey,
        tier: Tier,
        now: Millis,
    ) -> Option<Verdict> {
        let method = msg.method()?;
        let initial = checked.to.as_ref().is_none_or(|to| to.tag().is_none());
        let credentials = checked.digest_username(msg);

        // ACLs.
        if self.on(Rule::Acl)
            && ((!self.acl_allow.is_empty() && !self.acl_allow.contains(ip))
                || self.acl_deny.contains(ip))
        {
            enforce!(self.fire(Rule::Acl, key, now, || "source network not allowed".into()));
        }
        if self.on(Rule::MethodAcl) && !self.method_acls.is_empty() {
            let name = method.as_bytes();
            let refused = self.method_acls.iter().any(|(m, allow, deny)| {
                m.as_bytes().eq_ignore_ascii_case(name)
                    && ((!allow.is_empty() && !allow.contains(ip)) || deny.contains(ip))
            });
            if refused {
                let reason = format!("{} not allowed from this network", lossy(name));
                enforce!(self.fire(Rule::MethodAcl, key, now, || reason));
            }
        }
        if self.on(Rule::ExtensionAcl) && !self.extension_acls.is_empty() {
            let users = [
                credentials,
                checked.from.as_ref().and_then(|f| f.uri.user),
                (method == Method::Register)
                    .then_some(checked.to.as_ref().and_then(|t| t.uri.user))
                    .flatten(),
            ];
            for user in users.into_iter().flatten() {
                if let Some((permit, deny)) = self.extension_acls.get(user) {
                    let permitted = permit.contains(ip);
                    if !permitted && (!permit.is_empty() || deny.contains(ip)) {
                        let reason = format!("extension {} not allowed here", lossy(user));
                        enforce!(self.fire(Rule::ExtensionAcl, key, now, || reason));
                        break;
                    }
                }
            }
        }
        if self.on(Rule::Domain)
            && (self.reject_ip_literal || !self.domains.is_empty())
            && let Some(uri) = &checked.request_uri
            && let Some(reason) = self.domain_problem(uri)
        {
            enforce!(self.fire(Rule::Domain, key, now, || reason));
        }

        // Scanners.
        if self.on(Rule::ScannerAgent)
            && let Some(found) = self.scanner_agent(msg, checked)
        {
            let reason = format!("scanner user agent \"{}\"", lossy(found));
            enforce!(self.fire(Rule::ScannerAgent, key, now, || reason));
        }
        if self.on(Rule::ToolFingerprint)
            && checked
                .from
                .and_then(|f| f.tag())
                .is_some_and(is_sipvicious_tag)
        {
            enforce!(self.fire(Rule::ToolFingerprint, key, now, || {
                "sipvicious From tag".into()
            }));
        }
        if self.on(Rule::SqlInjection)
            && let Some(place) = sql_injection(msg, checked, credentials)
        {
            enforce!(self.fire(Rule::SqlInjection, key, now, || {
                format!("SQL injection in {place}")
            }));
        }
        if self.on(Rule::RouteSpoof)
            && initial
            && let Some(reason) = route_spoof(msg, ip)
        {
            enforce!(self.fire(Rule::RouteSpoof, key, now, || reason));
        }

        // Floods.
        let agents = match tier {
            Tier::Authenticated(n) => n.max(1),
            _ => 1,
        };
        let source_hash = self.source_hash(key);
        if self.on(Rule::Flood) {
            let rate = self.density.add(source_hash, now);
            let limit = self.density_limit.saturating_mul(agents);
            if rate > limit {
                enforce!(self.fire(Rule::Flood, key, now, || {
                    format!("{rate} requests in the flood window (limit {limit})")
                }));
            }
        }
        if initial {
            let window = match method {
                Method::Register => Some((Rule::RegisterRate, self.register_limit)),
                Method::Invite => Some((Rule::InviteRate, self.invite_limit)),
                _ => None,
            };
            if let Some((rule, per_agent)) = window.filter(|(rule, _)| self.on(*rule)) {
                let rate = self.methods.add(source_hash ^ rule as u64, now);
                let limit = per_agent.saturating_mul(agents);
                if rate > limit {
                    enforce!(self.fire(rule, key, now, || {
                        format!(
                            "{rate} new {} per minute (limit {limit})",
                            lossy(method.as_bytes())
                        )
                    }));
                }
            }
        }

        // A request with credentials answers the challenge of its Call-ID.
        if credentials.is_some()
            && let (Some(pending), Some(call_id)) = (self.pending.get_mut(&key), msg.call_id())
        {
            let hash = {
                let mut h = SipHasher13::new_with_keys(self.hash_keys.0, self.hash_keys.1);
                call_id.hash(&mut h);
                h.finish()
            };
            pending.retain(|(call, _)| *call != hash);
        }
        None
    }

    /// Learns from an answer of the upstream to a request from the public side, and
    /// says whether it must be disguised.
    pub fn observe_response(&mut self, answer: &Answer<'_>, now: Millis) -> AnswerVerdict {
        if matches!(answer.status, 401 | 407)
            && let Some(challenge) = answer.challenge
            && self.challenge_template.as_deref() != Some(challenge)
        {
            self.learn_challenge(challenge);
        }
        let tier = self.tier(answer.source, now);
        if matches!(tier, Tier::Admin | Tier::Trusted) {
            return AnswerVerdict::Forward;
        }
        let key = self.key(answer.source);
        let reveals = self.disguise
            && answer.initial
            && tier == Tier::Unknown
            && !matches!(answer.method, Method::Cancel | Method::Ack)
            && reveals_existence(answer.status, answer.reason);
        let status = if reveals {
            challenge_status(answer.method)
        } else {
            answer.status
        };
        match (answer.credentials, status) {
            (Some(user), 200..=299) => self.success(key, user, now),
            (Some(user), 401 | 403 | 407) => self.failure(key, user, now),
            (None, 401 | 407) => self.challenged(key, answer.call_id, now),
            _ => {}
        }
        if reveals {
            self.counters.disguised += 1;
            AnswerVerdict::Disguise(status)
        } else {
            AnswerVerdict::Forward
        }
    }

    /// Keeps the upstream's challenge as the model of disguised ones, and measures how
    /// much of its nonces stays the same between two challenges.
    fn learn_challenge(&mut self, challenge: &[u8]) {
        let nonce = |c: &[u8]| nonce_range(c).map(|(start, end)| c[start..end].to_vec());
        if let (Some(old), Some(new)) = (
            self.challenge_template.as_deref().and_then(nonce),
            nonce(challenge),
        ) && old.len() == new.len()
        {
            let common = old.iter().zip(&new).take_while(|(a, b)| a == b).count();
            // Never keep the whole nonce: at least half of it is always fresh.
            self.nonce_stable_prefix = common.min(new.len() / 2);
        }
        self.challenge_template = Some(challenge.to_vec());
    }

    /// Writes the value of a WWW-/Proxy-Authenticate header for a disguised answer: the
    /// upstream's last challenge with a fresh nonce of the same form, or, before the
    /// upstream has challenged anyone, a Digest challenge for `realm`.
    pub fn write_challenge(&mut self, realm: &[u8], out: &mut Vec<u8>) {
        self.nonce_counter += 1;
        let mut hasher = SipHasher13::new_with_keys(self.hash_keys.1, self.hash_keys.0);
        hasher.write_u64(self.nonce_counter);
        let seed = hasher.finish();
        if let Some(template) = &self.challenge_template
            && let Some((start, end)) = nonce_range(template)
        {
            let keep = (start + self.nonce_stable_prefix).min(end);
            out.extend_from_slice(&template[..keep]);
            fresh_nonce(&template[keep..end], seed, out);
            out.extend_from_slice(&template[end..]);
            return;
        }
        out.extend_from_slice(b"Digest realm=\"");
        match &self.default_realm {
            Some(r) => out.extend_from_slice(r.as_bytes()),
            None => out.extend_from_slice(realm),
        }
        out.extend_from_slice(b"\", nonce=\"");
        fresh_nonce(b"0123456789abcdef0123456789abcdef", seed, out);
        out.extend_from_slice(b"\", qop=\"auth\"");
    }

    /// Reports an offence found outside the pipeline (a malformed message, a bad flow
    /// token). `None`: handle it the usual way (answer or drop); otherwise the verdict
    /// of the rule's action.
    pub fn offence(
        &mut self,
        rule: Rule,
        ip: IpAddr,
        reason: &str,
        now: Millis,
    ) -> Option<Verdict> {
        if matches!(self.tier(ip, now), Tier::Admin | Tier::Trusted) || !self.on(rule) {
            return None;
        }
        let key = self.key(ip);
        let settings = self.settings[rule.index()];
        if matches!(settings.action, ActionKind::Reply) && !settings.shadow {
            // The usual answer; counted all the same.
            let counters = &mut self.counters.rules[rule.index()];
            counters.matched += 1;
            counters.enforced += 1;
            return None;
        }
        self.fire(rule, key, now, || reason.to_string())
    }

    /// Bans `ip` by an administrator's decision for `ttl` (or the configured TTL).
    pub fn ban(
        &mut self,
        key: SourceKey,
        reason: &str,
        ttl: Option<Millis>,
        now: Millis,
    ) -> Result<Ban, BanRefused> {
        let ban = self
            .bans
            .ban(
                key,
                Rule::Manual,
                reason.to_string(),
                BanKind::Drop,
                ttl,
                now,
            )?
            .clone();
        self.counters.rules[Rule::Manual.index()].matched += 1;
        self.counters.rules[Rule::Manual.index()].enforced += 1;
        self.push_event(Event {
            at: now,
            rule: Rule::Manual,
            source: key,
            reason: reason.to_string(),
            taken: Taken::Banned {
                until: ban.until,
                offences: ban.offences,
            },
        });
        Ok(ban)
    }

    /// Lifts the ban of `key`; true if it was active.
    pub fn unban(&mut self, key: SourceKey, now: Millis) -> bool {
        let lifted = self.bans.unban(key, now);
        if lifted {
            self.push_event(Event {
                at: now,
                rule: Rule::Manual,
                source: key,
                reason: "lifted by an administrator".into(),
                taken: Taken::Unbanned,
            });
        }
        lifted
    }

    /// Active bans at `now`.
    pub fn bans(&self, now: Millis) -> impl Iterator<Item = &Ban> {
        self.bans.active(now)
    }

    /// The ban record of `key` (active or remembered).
    pub fn ban_of(&self, key: SourceKey) -> Option<&Ban> {
        self.bans.get(key)
    }

    /// Periodic work (call a few times per second): challenges left unanswered, ends of
    /// bans, forgetting old records.
    pub fn tick(&mut self, now: Millis) {
        self.last_now = self.last_now.max(now);
        let mut late: Vec<SourceKey> = Vec::new();
        self.pending.retain(|key, entries| {
            let before = entries.len();
            entries.retain(|(_, deadline)| *deadline > now);
            for _ in entries.len()..before {
                late.push(*key);
            }
            !entries.is_empty()
        });
        for key in late {
            self.unanswered_challenge(key, now);
        }
        let window = self.failure_window;
        let fresh = |times: &mut VecDeque<Millis>| {
            while times
                .front()
                .is_some_and(|t| now.saturating_sub(*t) >= window)
            {
                times.pop_front();
            }
            !times.is_empty()
        };
        self.failures.retain(|_, times| fresh(times));
        self.user_failures.retain(|_, times| fresh(times));
        self.unanswered.retain(|_, times| fresh(times));
        let trust_for = self.trust_for;
        self.trust
            .retain(|_, trust| now.saturating_sub(trust.last) < trust_for);
        let mut ended = std::mem::take(&mut self.ended);
        ended.clear();
        self.bans.expire(now, &mut ended);
        for source in ended.drain(..) {
            let rule = self.bans.get(source).map_or(Rule::Manual, |ban| ban.rule);
            self.push_event(Event {
                at: now,
                rule,
                source,
                reason: "ban ended".into(),
                taken: Taken::Expired,
            });
        }
        self.ended = ended;
    }

    /// Moves the events recorded since the last call into `out`.
    pub fn drain_events(&mut self, out: &mut Vec<Event>) {
        out.append(&mut self.events);
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Bytes held by the fixed-size flood sketches.
    pub fn sketch_memory(&self) -> usize {
        self.density.memory() + self.methods.memory()
    }

    /// Entries held by the exact tables (bans, trust, failures, challenges).
    pub fn table_entries(&self) -> usize {
        self.bans.len()
            + self.trust.len()
            + self.failures.len()
            + self.user_failures.len()
            + self.pending.len()
            + self.unanswered.len()
    }

    fn on(&self, rule: Rule) -> bool {
        self.settings[rule.index()].enabled
    }

    /// A rule matched: count it, report it, and act unless it is in shadow mode.
    /// `Some(verdict)` ends the pipeline; `None` lets it go on.
    fn fire(
        &mut self,
        rule: Rule,
        key: SourceKey,
        now: Millis,
        reason: impl FnOnce() -> String,
    ) -> Option<Verdict> {
        let settings = self.settings[rule.index()];
        let counters = &mut self.counters.rules[rule.index()];
        counters.matched += 1;
        let reason = reason();
        if settings.shadow {
            counters.shadowed += 1;
            self.push_event(Event {
                at: now,
                rule,
                source: key,
                reason,
                taken: Taken::Shadowed,
            });
            return None;
        }
        counters.enforced += 1;
        let (verdict, taken) = match settings.action {
            ActionKind::Drop => (Verdict::Drop, Taken::Dropped),
            ActionKind::Reply => (Verdict::Reply(settings.code), Taken::Replied(settings.code)),
            ActionKind::Tarpit => (
                Verdict::Tarpit {
                    code: settings.code,
                    delay: TARPIT_DELAY,
                },
                Taken::Tarpitted(settings.code),
            ),
            ActionKind::Ban | ActionKind::Honeypot => {
                let kind = if settings.action == ActionKind::Ban {
                    BanKind::Drop
                } else {
                    BanKind::Honeypot
                };
                match self.bans.ban(key, rule, reason.clone(), kind, None, now) {
                    Ok(ban) if kind == BanKind::Drop => (
                        Verdict::Drop,
                        Taken::Banned {
                            until: ban.until,
                            offences: ban.offences,
                        },
                    ),
                    Ok(ban) => (Verdict::Honeypot, Taken::Honeypotted { until: ban.until }),
                    Err(BanRefused::Protected) => (Verdict::Drop, Taken::Protected),
                }
            }
        };
        self.push_event(Event {
            at: now,
            rule,
            source: key,
            reason,
            taken,
        });
        Some(verdict)
    }

    fn push_event(&mut self, event: Event) {
        self.events_recorded += 1;
        self.last_now = self.last_now.max(event.at);
        if self.events.len() < EVENT_CAPACITY {
            self.events.push(event);
        } else {
            self.counters.lost_events += 1;
        }
    }

    /// The keyed hash of a source for the sketches: its address as 128 bits (IPv4 as
    /// IPv4-mapped IPv6), two words for SipHash instead of the enum's fields one by one.
    /// Within an engine the address tells keys apart: IPv4 keys are /32, IPv6 keys all
    /// have the configured prefix and are never IPv4-mapped (those are IPv4 keys).
    fn source_hash(&self, key: SourceKey) -> u64 {
        let bits = key.bits();
        let mut hasher = SipHasher13::new_with_keys(self.hash_keys.0, self.hash_keys.1);
        hasher.write_u64((bits >> 64) as u64);
        hasher.write_u64(bits as u64);
        hasher.finish()
    }

    fn hash<T: Hash + ?Sized>(&self, value: &T) -> u64 {
        let mut hasher = SipHasher13::new_with_keys(self.hash_keys.0, self.hash_keys.1);
        value.hash(&mut hasher);
        hasher.finish()
    }

    fn success(&mut self, key: SourceKey, user: &[u8], now: Millis) {
        self.counters.auth_successes += 1;
        let user_hash = self.hash(user);
        self.user_failures.remove(&user_hash);
        if !self.trust.contains_key(&key) {
            make_room(&mut self.trust, |t| t.last);
        }
        let trust = self.trust.entry(key).or_insert(Trust {
            users: Vec::new(),
            last: now,
        });
        trust.last = now;
        if !trust.users.contains(&user_hash) && trust.users.len() < AGENTS_PER_SOURCE {
            trust.users.push(user_hash);
        }
    }

    fn failure(&mut self, key: SourceKey, user: &[u8], now: Millis) {
        let agents = match self.tier_of_key(key, now) {
            Tier::Authenticated(n) => n.max(1),
            _ => 1,
        };
        let window = self.failure_window;
        let user_hash = self.hash(user);
        let source_count = record(&mut self.failures, key, now, window);
        let user_count = record(&mut self.user_failures, user_hash, now, window);
        let limit = self.max_failures.saturating_mul(agents);
        if self.on(Rule::AuthFailures) && source_count >= limit {
            let name = lossy(user).into_owned();
            self.fire(Rule::AuthFailures, key, now, || {
                format!("{source_count} failed authentications (last as {name})")
            });
        } else if self.on(Rule::UserFailures) && user_count >= self.max_user_failures {
            let name = lossy(user).into_owned();
            self.fire(Rule::UserFailures, key, now, || {
                format!("{user_count} failed authentications of user {name}")
            });
        }
    }

    fn challenged(&mut self, key: SourceKey, call_id: &[u8], now: Millis) {
        let hash = self.hash(call_id);
        if !self.pending.contains_key(&key) {
            make_room(&mut self.pending, |entries| {
                entries.first().map_or(0, |(_, deadline)| *deadline)
            });
        }
        let entries = self.pending.entry(key).or_default();
        if entries.iter().any(|(call, _)| *call == hash) {
            return;
        }
        if entries.len() >= PENDING_PER_SOURCE {
            // So many open challenges at once: the oldest counts as unanswered now.
            entries.remove(0);
            self.unanswered_challenge(key, now);
            let Some(entries) = self.pending.get_mut(&key) else {
                return;
            };
            entries.push((hash, now + self.answer_within));
            return;
        }
        entries.push((hash, now + self.answer_within));
    }

    fn unanswered_challenge(&mut self, key: SourceKey, now: Millis) {
        let count = record(&mut self.unanswered, key, now, self.failure_window);
        let agents = match self.tier_of_key(key, now) {
            Tier::Authenticated(n) => n,
            _ => 0,
        };
        let limit = self.max_unanswered.saturating_add(agents);
        if self.on(Rule::UnansweredChallenges) && count >= limit {
            self.fire(Rule::UnansweredChallenges, key, now, || {
                format!("{count} challenges never answered")
            });
        }
    }

    fn tier_of_key(&self, key: SourceKey, now: Millis) -> Tier {
        self.tier(key.addr(), now)
    }

    fn domain_problem(&self, uri: &sipwall_sip::Uri<'_>) -> Option<String> {
        if let Some(ip) = uri.host.ip() {
            if self.own_addresses.contains(&ip) {
                return None;
            }
            if self.reject_ip_literal {
                return Some(format!("Request-URI addressed to the IP literal {ip}"));
            }
        }
        if self.domains.is_empty() {
            return None;
        }
        let host = uri.host_raw;
        if self.domains.iter().any(|d| d.eq_ignore_ascii_case(host)) {
            return None;
        }
        Some(format!(
            "Request-URI host {} is not served here",
            lossy(host)
        ))
    }

    fn scanner_agent<'m>(&self, msg: &Message<'m>, checked: &Checked<'m>) -> Option<&[u8]> {
        if self.agents.is_empty() {
            return None;
        }
        let places = [
            msg.user_agent(),
            msg.server(),
            checked.from.as_ref().and_then(|f| f.display_name),
            checked.from.as_ref().and_then(|f| f.uri.user),
            checked.to.as_ref().and_then(|t| t.display_name),
        ];
        self.agents.find_in(&places).map(|(_, found)| found)
    }
}

/// Keeps an exact table within [`TABLE_CAPACITY`]: a full table sheds its staler half
/// in one pass (the median age of a sample decides), so the cost per insertion stays
/// constant on average however long the attack fills it.
fn make_room<K: Eq + Hash + Copy, V>(table: &mut HashMap<K, V>, age: impl Fn(&V) -> Millis) {
    if table.len() < TABLE_CAPACITY {
        return;
    }
    shed_half(table, age);
}

/// Removes about half of `table`, the entries with the smallest `age` first.
pub(crate) fn shed_half<K, V>(table: &mut HashMap<K, V>, age: impl Fn(&V) -> Millis) {
    let mut sample: Vec<Millis> = table.values().take(255).map(&age).collect();
    sample.sort_unstable();
    let median = sample.get(sample.len() / 2).copied().unwrap_or(0);
    let before = table.len();
    table.retain(|_, v| age(v) > median);
    if table.len() > before * 3 / 4 {
        // Ages too alike to split: drop every other entry.
        let mut keep = false;
        table.retain(|_, _| {
            keep = !keep;
            keep
        });
    }
}

/// Records an event at `now` for `key` in a sliding window; returns the count in it.
fn record<K: Eq + Hash + Copy>(
    table: &mut HashMap<K, VecDeque<Millis>>,
    key: K,
    now: Millis,
    window: Millis,
) -> u32 {
    if !table.contains_key(&key) {
        make_room(table, |times| times.back().copied().unwrap_or(0));
    }
    let times = table.entry(key).or_default();
    // Times arrive in order: the stale ones are at the front.
    while times
        .front()
        .is_some_and(|t| now.saturating_sub(*t) >= window)
    {
        times.pop_front();
    }
    // Enough to compare with any sensible threshold; bounded whatever the attack.
    if times.len() >= 4096 {
        times.pop_front();
    }
    times.push_back(now);
    times.len() as u32
}

fn lossy(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// Where SQL injection shows, judged per grammar: the digest user name strictly, the
/// URI users and display names by SQL fragments only.
fn sql_injection(
    msg: &Message<'_>,
    checked: &Checked<'_>,
    credentials: Option<&[u8]>,
) -> Option<&'static str> {
    if credentials.is_some_and(is_sql_in_username) {
        return Some("the digest user name");
    }
    const PLACES: [&str; 5] = [
        "the Request-URI user",
        "the From user",
        "the From display name",
        "the To user",
        "the To display name",
    ];
    let texts = [
        checked.request_uri.as_ref().and_then(|u| u.user),
        checked.from.as_ref().and_then(|f| f.uri.user),
        checked.from.as_ref().and_then(|f| f.display_name),
        checked.to.as_ref().and_then(|t| t.uri.user),
        checked.to.as_ref().and_then(|t| t.display_name),
    ];
    let _ = msg;
    // As `is_sql_in_text` judges each, in one call.
    scan::sql_fragments()
        .find_in(&texts)
        .map(|(place, _)| PLACES[place])
}

/// A Record-Route in an initial request from a phone must name the sender (a proxy
/// that record-routes puts itself there); anything else is an attempt to steer the
/// dialog elsewhere (the seeds' Homer rule).
fn route_spoof(msg: &Message<'_>, ip: IpAddr) -> Option<String> {
    let header = msg.header(HeaderName::RecordRoute)?;
    let first = sipwall_sip::split_list(header.value).next()?;
    let route = NameAddr::parse(first, usize::MAX).ok()?;
    if route.uri.host.ip().map(|h| h.to_canonical()) == Some(ip.to_canonical()) {
        return None;
    }
    Some(format!(
        "Record-Route names {} but the request came from {ip}",
        lossy(route.uri.host_raw)
    ))
}

/// True if an answer tells whether the user or extension exists.
fn reveals_existence(status: u16, reason: &[u8]) -> bool {
    if matches!(status, 404 | 410 | 484 | 485 | 604) {
        return true;
    }
    if !(400..700).contains(&status) || matches!(status, 401 | 407) {
        return false;
    }
    const HINTS: [&[u8]; 6] = [
        b"not found",
        b"no such",
        b"unknown user",
        b"does not exist",
        b"no matching",
        b"not registered",
    ];
    HINTS.iter().any(|hint| {
        reason
            .windows(hint.len())
            .any(|w| w.eq_ignore_ascii_case(hint))
    })
}

/// The status a challenge for `method` gets: 401 from a registrar, 407 from a proxy.
fn challenge_status(method: Method<'_>) -> u16 {
    if method == Method::Register { 401 } else { 407 }
}

/// The byte range of the nonce's value inside a challenge (between its quotes).
fn nonce_range(challenge: &[u8]) -> Option<(usize, usize)> {
    let lower = challenge.to_ascii_lowercase();
    let mut from = 0;
    while let Some(at) = memchr::memmem::find(&lower[from..], b"nonce") {
        let at = from + at;
        // Not the tail of "cnonce".
        let standalone = at == 0 || !lower[at - 1].is_ascii_alphanumeric();
        let rest = &lower[at + 5..];
        let skip = rest.iter().take_while(|b| **b == b' ').count();
        if standalone && rest.get(skip) == Some(&b'=') {
            let value = at + 5 + skip + 1;
            let spaces = lower[value..].iter().take_while(|b| **b == b' ').count();
            let start = value + spaces;
            if lower.get(start) == Some(&b'"') {
                let end = start + 1 + memchr::memchr(b'"', &lower[start + 1..])?;
                return Some((start + 1, end));
            }
        }
        from = at + 5;
    }
    None
}

/// Writes a nonce as long as `like`, in its alphabet (hexadecimal, or base64).
fn fresh_nonce(like: &[u8], seed: u64, out: &mut Vec<u8>) {
    const HEX: &[u8] = b"0123456789abcdef";
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let hex = like.iter().all(u8::is_ascii_hexdigit);
    let upper_hex = hex && like.iter().any(u8::is_ascii_uppercase);
    let mut state = seed;
    for (i, &original) in like.iter().enumerate() {
        // splitmix64: a fresh 64-bit word every 8 characters.
        if i % 8 == 0 {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        }
        let mut z = state ^ (i as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 30)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let byte = if original == b'=' {
            b'='
        } else if hex {
            let c = HEX[(z % 16) as usize];
            if upper_hex { c.to_ascii_uppercase() } else { c }
        } else {
            B64[(z % 64) as usize]
        };
        out.push(byte);
    }
}

#[cfg(test)]
mod tests;
