//! The ban table: who is banned, why, until when, and how often before.
//!
//! Exact, unlike the flood sketches: a ban is a decision that must be kept and shown.
//! An expired ban stays as a record of past offences for a while, so a repeat offender's
//! next ban lasts longer (TTL × growth per previous offence, up to a maximum).
//! Protected networks (admins, trusted peers, the upstream) are checked here, in the
//! one place every ban passes through, so no path can ban them.

use std::collections::HashMap;

use crate::config::BanConfig;
use crate::nets::NetSet;
use crate::{Millis, Rule, SourceKey};

/// What a banned source gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BanKind {
    /// Its packets are dropped.
    Drop,
    /// Its requests are answered by the honeypot.
    Honeypot,
}

/// One ban.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    /// The source.
    pub source: SourceKey,
    /// The rule that banned it.
    pub rule: Rule,
    /// Why, in words (the pattern matched, the count reached).
    pub reason: String,
    /// When the ban started.
    pub since: Millis,
    /// When it ends.
    pub until: Millis,
    /// Packets received from the source while banned.
    pub hits: u64,
    /// Bans of this source so far, this one included.
    pub offences: u32,
    /// Drop or honeypot.
    pub kind: BanKind,
}

impl Ban {
    /// True while the ban holds.
    pub fn is_active(&self, now: Millis) -> bool {
        now < self.until
    }
}

/// A ban and what the table remembers about it.
#[derive(Debug)]
struct Entry {
    ban: Ban,
    /// True once the end of the ban has been reported by `expire`.
    end_reported: bool,
}

/// Why a ban was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BanRefused {
    /// The source is in an admin network, a trusted peer or the upstream.
    #[error("the source is protected (admin network, trusted peer or upstream)")]
    Protected,
}

/// The bans.
#[derive(Debug)]
pub struct BanTable {
    bans: HashMap<SourceKey, Entry>,
    protected: NetSet,
    ttl: Millis,
    growth: u64,
    max_ttl: Millis,
    remember: Millis,
    capacity: usize,
    /// Active bans dropped because the table was full.
    evicted: u64,
}

impl BanTable {
    /// An empty table.
    pub fn new(config: &BanConfig, protected: NetSet) -> BanTable {
        BanTable {
            bans: HashMap::new(),
            protected,
            ttl: Millis::from(config.ttl_seconds) * 1000,
            growth: u64::from(config.growth.max(1)),
            max_ttl: Millis::from(config.max_ttl_seconds.max(config.ttl_seconds)) * 1000,
            remember: Millis::from(config.remember_seconds) * 1000,
            capacity: config.capacity.max(1),
            evicted: 0,
        }
    }

    /// Takes over the records of `old` (a reload): bans of sources that are protected
    /// now are lifted, and those that were active are appended to `lifted` (so the kernel
    /// and the store can follow).
    pub fn adopt(&mut self, old: &mut BanTable, now: Millis, lifted: &mut Vec<SourceKey>) {
        self.bans = std::mem::take(&mut old.bans);
        self.evicted = old.evicted;
        let protected = &self.protected;
        self.bans.retain(|source, entry| {
            if !protected.contains(source.addr()) {
                return true;
            }
            if entry.ban.is_active(now) {
                lifted.push(*source);
            }
            false
        });
    }

    /// Puts back a ban read from the store at start-up, as it was (no growth, no
    /// event). A ban already held for the source is kept if it ends later.
    pub fn restore(&mut self, ban: Ban) -> Result<(), BanRefused> {
        if self.is_protected(ban.source) {
            return Err(BanRefused::Protected);
        }
        if let Some(entry) = self.bans.get(&ban.source) {
            if entry.ban.until >= ban.until {
                return Ok(());
            }
        } else if self.bans.len() >= self.capacity {
            self.make_room(ban.since);
        }
        self.bans.insert(
            ban.source,
            Entry {
                ban,
                end_reported: false,
            },
        );
        Ok(())
    }

    /// True if `source` can never be banned.
    pub fn is_protected(&self, source: SourceKey) -> bool {
        self.protected.contains(source.addr())
    }

    /// The active ban of `source`, counting the hit.
    pub fn hit(&mut self, source: SourceKey, now: Millis) -> Option<&Ban> {
        let ban = &mut self.bans.get_mut(&source)?.ban;
        if !ban.is_active(now) {
            return None;
        }
        ban.hits += 1;
        Some(ban)
    }

    /// The ban of `source`, active or remembered.
    pub fn get(&self, source: SourceKey) -> Option<&Ban> {
        self.bans.get(&source).map(|entry| &entry.ban)
    }

    /// Bans `source`; its TTL grows with its previous offences unless `ttl` is given.
    /// An active ban is extended, never shortened.
    pub fn ban(
        &mut self,
        source: SourceKey,
        rule: Rule,
        reason: String,
        kind: BanKind,
        ttl: Option<Millis>,
        now: Millis,
    ) -> Result<&Ban, BanRefused> {
        if self.is_protected(source) {
            return Err(BanRefused::Protected);
        }
        if !self.bans.contains_key(&source) && self.bans.len() >= self.capacity {
            self.make_room(now);
        }
        let previous = self.bans.get(&source).map_or(0, |entry| entry.ban.offences);
        let ttl = ttl.unwrap_or_else(|| {
            let factor = self.growth.saturating_pow(previous.min(16));
            self.ttl.saturating_mul(factor).min(self.max_ttl)
        });
        let entry = self.bans.entry(source).or_insert_with(|| Entry {
            ban: Ban {
                source,
                rule,
                reason: String::new(),
                since: now,
                until: now,
                hits: 0,
                offences: 0,
                kind,
            },
            end_reported: false,
        });
        entry.end_reported = false;
        let ban = &mut entry.ban;
        if !ban.is_active(now) {
            ban.since = now;
            ban.hits = 0;
        }
        ban.rule = rule;
        ban.reason = reason;
        ban.kind = kind;
        ban.offences = previous + 1;
        ban.until = ban.until.max(now.saturating_add(ttl));
        Ok(ban)
    }

    /// Lifts the ban of `source` (its record of offences stays). True if it was active.
    pub fn unban(&mut self, source: SourceKey, now: Millis) -> bool {
        match self.bans.get_mut(&source) {
            Some(entry) if entry.ban.is_active(now) => {
                entry.ban.until = now;
                true
            }
            _ => false,
        }
    }

    /// Removes records older than the memory of offences, and appends to `ended` the
    /// sources whose ban ended since the last call (so the kernel and the store can
    /// follow).
    pub fn expire(&mut self, now: Millis, ended: &mut Vec<SourceKey>) {
        let remember = self.remember;
        self.bans.retain(|source, entry| {
            if !entry.ban.is_active(now) && !entry.end_reported {
                entry.end_reported = true;
                ended.push(*source);
            }
            entry.ban.until.saturating_add(remember) > now
        });
    }

    /// Active bans.
    pub fn active(&self, now: Millis) -> impl Iterator<Item = &Ban> {
        self.bans
            .values()
            .map(|entry| &entry.ban)
            .filter(move |ban| ban.is_active(now))
    }

    /// Active bans dropped so far because the table was full.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Number of records held (active bans and remembered offences).
    pub fn len(&self) -> usize {
        self.bans.len()
    }

    /// True if no record is held.
    pub fn is_empty(&self) -> bool {
        self.bans.is_empty()
    }

    /// Frees room when the table is full: remembered (expired) records go first; if
    /// the table still holds mostly active bans, the half that ends soonest goes
    /// (counted in `evicted`). One pass per half table keeps the cost per ban constant.
    fn make_room(&mut self, now: Millis) {
        let before = self.bans.len();
        self.bans.retain(|_, entry| entry.ban.is_active(now));
        if self.bans.len() > before * 3 / 4 {
            let active = self.bans.len();
            crate::shed_half(&mut self.bans, |entry| entry.ban.until);
            self.evicted += (active - self.bans.len()) as u64;
        }
    }
}
