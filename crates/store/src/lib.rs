//! The ban store: sipwall's bans persisted in a SQLite file, so that a restart or a
//! crash does not set banned sources free.
//!
//! What it does:
//! - keeps one record per source (the latest ban of it), with wall-clock times in unix
//!   milliseconds, because the policy's monotonic clock starts again at every start;
//! - writes a batch of bans in one transaction, in WAL mode with `synchronous=FULL`, so
//!   a ban whose [`BanStore::record`] has returned survives a crash or a power loss and
//!   can be acknowledged;
//! - records an unban ([`BanStore::lift`]) and forgets records past their end plus a
//!   remembering time ([`BanStore::expire`]);
//! - gives back the unexpired bans at start-up ([`BanStore::active`]);
//! - converts between the policy's [`Ban`] (monotonic times) and [`StoredBan`] given
//!   both clocks read at one moment ([`Clocks`]).
//!
//! What it does not do: it decides nothing (the policy bans, this only remembers), it
//! does not talk to the kernel (putting restored bans in the nftables sets is the
//! runtime's job), and it runs no thread of its own: every call blocks on the file.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};
use sipwall_policy::{Ban, BanKind, Millis, Rule, SourceKey};

/// The schema this code writes and reads. A file with a higher version was written by
/// a newer sipwall and is refused rather than misread.
pub const SCHEMA_VERSION: i64 = 1;

/// How long a record is kept after its ban ended by default (7 days, the policy's
/// default `remember_seconds`): a repeat offender's next ban grows with it.
pub const DEFAULT_REMEMBER_MS: u64 = 7 * 86_400 * 1000;

/// How long a call waits for another connection holding the file's write lock.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file is not a SQLite database, or SQLite found it damaged.
    #[error("{}: not a readable ban store (not a SQLite database, or damaged): {source}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The file is a SQLite database of something else.
    #[error("{}: a SQLite database without sipwall's ban tables (another program's file?)", path.display())]
    Foreign {
        /// The file.
        path: PathBuf,
    },
    /// The file was written by a newer sipwall.
    #[error("{}: ban store schema version {found}, newer than the version {supported} this sipwall reads", path.display())]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: i64,
        /// The version this code reads.
        supported: i64,
    },
    /// A record in the file breaks the rules this code writes by (edited by hand?).
    #[error("{}: invalid ban record for {source_text:?}: {what}", path.display())]
    BadRecord {
        /// The file.
        path: PathBuf,
        /// The record's source, as stored.
        source_text: String,
        /// What is wrong with it.
        what: &'static str,
    },
    /// `PRAGMA integrity_check` found damage.
    #[error("{}: integrity check failed: {detail}", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// The first lines SQLite reported.
        detail: String,
    },
    /// SQLite could not put the file in WAL mode (a file system without shared
    /// memory or locking?): without it a crash mid-write is not known to be safe.
    #[error("{}: cannot use write-ahead logging (journal mode stays {mode:?})", path.display())]
    NoWal {
        /// The file.
        path: PathBuf,
        /// The mode SQLite kept.
        mode: String,
    },
    /// Any other SQLite failure (I/O error, full disk, a constraint a record breaks).
    #[error("{}: {source}", path.display())]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
}

/// A result of the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A ban as stored: wall-clock times in unix milliseconds, source and rule as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBan {
    /// The source, as [`SourceKey`] displays it (`192.0.2.7`, `2001:db8::/64`).
    pub source: String,
    /// The rule's name ([`Rule::name`]).
    pub rule: String,
    /// Why, in words.
    pub reason: String,
    /// When the ban started, unix milliseconds.
    pub since: u64,
    /// When it ends, unix milliseconds.
    pub until: u64,
    /// Bans of this source so far, this one included.
    pub offences: u32,
    /// Drop or honeypot.
    pub kind: BanKind,
}

/// Both clocks read at one moment: what converts a monotonic time to a wall-clock time
/// and back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clocks {
    /// Unix milliseconds.
    pub wall: u64,
    /// The policy's monotonic milliseconds.
    pub mono: Millis,
}

impl Clocks {
    /// The wall-clock time of monotonic `t` (saturating at both ends).
    pub fn to_wall(self, t: Millis) -> u64 {
        if t >= self.mono {
            self.wall.saturating_add(t - self.mono)
        } else {
            self.wall.saturating_sub(self.mono - t)
        }
    }

    /// The monotonic time of wall-clock `t`; a time before the monotonic clock's zero
    /// (a ban that started before this process) becomes zero.
    pub fn to_mono(self, t: u64) -> Millis {
        if t >= self.wall {
            self.mono.saturating_add(t - self.wall)
        } else {
            self.mono.saturating_sub(self.wall - t)
        }
    }
}

/// Why a stored ban does not convert back to a policy [`Ban`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// The source text is not an IPv4 address or an IPv6 prefix.
    #[error("not a source: {0:?}")]
    Source(String),
    /// The rule name is not one this sipwall knows (a newer version's rule?).
    #[error("unknown rule: {0:?}")]
    Rule(String),
}

impl StoredBan {
    /// The stored form of `ban`, its times converted with `clocks`. The packet count is
    /// not kept: it would cost a write per banned packet.
    pub fn from_ban(ban: &Ban, clocks: Clocks) -> StoredBan {
        StoredBan {
            source: ban.source.to_string(),
            rule: ban.rule.name().to_owned(),
            reason: ban.reason.clone(),
            since: clocks.to_wall(ban.since),
            until: clocks.to_wall(ban.until),
            offences: ban.offences,
            kind: ban.kind,
        }
    }

    /// The policy's form, its times converted with `clocks`; `v6_prefix` is used only
    /// for an IPv6 source stored without a prefix length (never written by this crate).
    pub fn to_ban(&self, clocks: Clocks, v6_prefix: u8) -> Result<Ban, ConvertError> {
        let source = SourceKey::parse(&self.source, v6_prefix)
            .ok_or_else(|| ConvertError::Source(self.source.clone()))?;
        let rule =
            Rule::from_name(&self.rule).ok_or_else(|| ConvertError::Rule(self.rule.clone()))?;
        Ok(Ban {
            source,
            rule,
            reason: self.reason.clone(),
            since: clocks.to_mono(self.since),
            until: clocks.to_mono(self.until),
            hits: 0,
            offences: self.offences,
            kind: self.kind,
        })
    }
}

fn kind_name(kind: BanKind) -> &'static str {
    match kind {
        BanKind::Drop => "drop",
        BanKind::Honeypot => "honeypot",
    }
}

fn kind_from_name(name: &str) -> Option<BanKind> {
    match name {
        "drop" => Some(BanKind::Drop),
        "honeypot" => Some(BanKind::Honeypot),
        _ => None,
    }
}

/// SQLite integers are signed: a time past `i64::MAX` milliseconds (a ban "for ever"
/// made by saturating arithmetic) is stored as `i64::MAX`, which is as good.
fn to_sql_time(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// The schema. `WITHOUT ROWID` because every lookup is by source; the index on `until`
/// serves `active` and `expire`. The CHECKs keep a bad record out of the file, so a
/// batch holding one fails as a whole.
const SCHEMA: &str = "
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE bans (
    source   TEXT    NOT NULL PRIMARY KEY CHECK (source <> ''),
    rule     TEXT    NOT NULL CHECK (rule <> ''),
    reason   TEXT    NOT NULL,
    since    INTEGER NOT NULL CHECK (since >= 0),
    until    INTEGER NOT NULL CHECK (until >= since),
    offences INTEGER NOT NULL CHECK (offences >= 0),
    kind     TEXT    NOT NULL CHECK (kind IN ('drop', 'honeypot'))
) WITHOUT ROWID;
CREATE INDEX bans_until ON bans (until);
";

/// The bans on disk.
#[derive(Debug)]
pub struct BanStore {
    conn: Connection,
    path: PathBuf,
    remember: u64,
}

impl BanStore {
    /// Opens the store at `path`, creating it if the file does not exist.
    pub fn open(path: impl AsRef<Path>) -> Result<BanStore> {
        let path = path.as_ref().to_path_buf();
        let conn = Connection::open(&path).map_err(|e| classify(&path, e))?;
        let store = BanStore {
            conn,
            path,
            remember: DEFAULT_REMEMBER_MS,
        };
        store.configure()?;
        store.prepare_schema()?;
        Ok(store)
    }

    /// Keeps records `remember` milliseconds after their ban ended (see [`Self::expire`]).
    pub fn with_remember(mut self, remember: u64) -> BanStore {
        self.remember = remember;
        self
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        classify(&self.path, e)
    }

    fn configure(&self) -> Result<()> {
        self.conn
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| self.err(e))?;
        // WAL: a commit appends to the log instead of rewriting pages in place, so a
        // crash mid-write leaves the last committed state readable. `journal_mode`
        // answers with the mode in force, which is checked: a file system without
        // shared memory support would silently keep the old mode.
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))
            .map_err(|e| self.err(e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NoWal {
                path: self.path.clone(),
                mode,
            });
        }
        // FULL: the log is synced at every commit, so a returned `record` survives a
        // power loss, not only a crash of the process (NORMAL would risk the last ones).
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Creates the schema in an empty file; refuses a file of another program or a
    /// newer schema. IMMEDIATE so two processes opening a new file do not both create.
    fn prepare_schema(&self) -> Result<()> {
        let tx = rusqlite::Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let tables: i64 = tx
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table'",
                [],
                |row| row.get(0),
            )
            .map_err(|e| self.err(e))?;
        if tables == 0 {
            tx.execute_batch(SCHEMA).map_err(|e| self.err(e))?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                [SCHEMA_VERSION],
            )
            .map_err(|e| self.err(e))?;
            return tx.commit().map_err(|e| self.err(e));
        }
        let has_version: bool = tx
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'schema_version'",
                [],
                |row| row.get::<_, i64>(0),
            )
            .map_err(|e| self.err(e))?
            > 0;
        if !has_version {
            return Err(StoreError::Foreign {
                path: self.path.clone(),
            });
        }
        let found: Option<i64> = tx
            .query_row("SELECT max(version) FROM schema_version", [], |row| {
                row.get(0)
            })
            .map_err(|e| self.err(e))?;
        match found {
            Some(SCHEMA_VERSION) => {}
            Some(found) if found > SCHEMA_VERSION => {
                return Err(StoreError::NewerSchema {
                    path: self.path.clone(),
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            // No version row, or an older one: there is no older schema, so the file
            // is not one this code wrote.
            _ => {
                return Err(StoreError::Foreign {
                    path: self.path.clone(),
                });
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Writes `bans` in one transaction, each replacing the record of its source. When
    /// this returns `Ok` the bans are on disk and can be acknowledged; on an error
    /// none of them was written.
    pub fn record(&mut self, bans: &[StoredBan]) -> Result<()> {
        let path = &self.path;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| classify(path, e))?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO bans (source, rule, reason, since, until, offences, kind)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (source) DO UPDATE SET
                         rule = excluded.rule, reason = excluded.reason,
                         since = excluded.since, until = excluded.until,
                         offences = excluded.offences, kind = excluded.kind",
                )
                .map_err(|e| classify(path, e))?;
            for ban in bans {
                insert
                    .execute(params![
                        ban.source,
                        ban.rule,
                        ban.reason,
                        to_sql_time(ban.since),
                        to_sql_time(ban.until),
                        ban.offences,
                        kind_name(ban.kind),
                    ])
                    .map_err(|e| classify(path, e))?;
            }
        }
        // Dropping `tx` on an error above rolls the whole batch back.
        tx.commit().map_err(|e| classify(path, e))
    }

    /// Records the unban of `sources` at `at` (unix milliseconds): their ban ends then.
    /// A ban already over is left as it is. Returns how many records changed.
    pub fn lift<S: AsRef<str>>(&mut self, sources: &[S], at: u64) -> Result<usize> {
        let path = &self.path;
        let at = to_sql_time(at);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| classify(path, e))?;
        let mut changed = 0;
        {
            // max(since, at): an unban cannot end a ban before it started (the CHECK
            // would refuse it, and a clock stepped back would make one).
            let mut update = tx
                .prepare_cached(
                    "UPDATE bans SET until = max(since, ?2) WHERE source = ?1 AND until > ?2",
                )
                .map_err(|e| classify(path, e))?;
            for source in sources {
                changed += update
                    .execute(params![source.as_ref(), at])
                    .map_err(|e| classify(path, e))?;
            }
        }
        tx.commit().map_err(|e| classify(path, e))?;
        Ok(changed)
    }

    /// Forgets the records whose ban ended more than the remembering time before `now`
    /// (unix milliseconds). Returns how many were deleted.
    pub fn expire(&mut self, now: u64) -> Result<usize> {
        // The cut-off is computed here rather than as `until + remember` in SQL, where
        // a ban "for ever" (until = i64::MAX) would overflow.
        let Some(cutoff) = now.checked_sub(self.remember) else {
            return Ok(0);
        };
        self.conn
            .execute("DELETE FROM bans WHERE until <= ?1", [to_sql_time(cutoff)])
            .map_err(|e| self.err(e))
    }

    /// The bans still holding at `now` (unix milliseconds), by source: what start-up
    /// puts back in memory and in the kernel.
    pub fn active(&self, now: u64) -> Result<Vec<StoredBan>> {
        let mut select = self
            .conn
            .prepare_cached(
                "SELECT source, rule, reason, since, until, offences, kind
                 FROM bans WHERE until > ?1 ORDER BY source",
            )
            .map_err(|e| self.err(e))?;
        let rows = select
            .query_map([to_sql_time(now)], raw_row)
            .map_err(|e| self.err(e))?;
        let mut bans = Vec::new();
        for row in rows {
            bans.push(self.decode(row.map_err(|e| self.err(e))?)?);
        }
        Ok(bans)
    }

    /// The record of `source`, active or remembered.
    pub fn get(&self, source: &str) -> Result<Option<StoredBan>> {
        let row = self
            .conn
            .query_row(
                "SELECT source, rule, reason, since, until, offences, kind
                 FROM bans WHERE source = ?1",
                [source],
                raw_row,
            )
            .optional()
            .map_err(|e| self.err(e))?;
        row.map(|row| self.decode(row)).transpose()
    }

    /// Checks the values of a row read from the file. The CHECKs keep bad values out,
    /// but the file is outside this process's control (edited, or another writer).
    fn decode(&self, row: RawRow) -> Result<StoredBan> {
        let (source, rule, reason, since, until, offences, kind) = row;
        let bad = |what| StoreError::BadRecord {
            path: self.path.clone(),
            source_text: source.clone(),
            what,
        };
        let since = u64::try_from(since).map_err(|_| bad("negative start"))?;
        let until = u64::try_from(until).map_err(|_| bad("negative end"))?;
        let offences = u32::try_from(offences).map_err(|_| bad("offence count out of range"))?;
        let kind = kind_from_name(&kind).ok_or_else(|| bad("unknown kind"))?;
        Ok(StoredBan {
            source,
            rule,
            reason,
            since,
            until,
            offences,
            kind,
        })
    }

    /// How many records the file holds, active or remembered.
    pub fn count(&self) -> Result<u64> {
        let count: i64 = self
            .conn
            .query_row("SELECT count(*) FROM bans", [], |row| row.get(0))
            .map_err(|e| self.err(e))?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Runs SQLite's `PRAGMA integrity_check` over the whole file.
    pub fn check_integrity(&self) -> Result<()> {
        let mut check = self
            .conn
            .prepare("PRAGMA integrity_check(10)")
            .map_err(|e| self.err(e))?;
        let lines: Vec<String> = check
            .query_map([], |row| row.get(0))
            .map_err(|e| self.err(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))?;
        if lines.len() == 1 && lines[0] == "ok" {
            Ok(())
        } else {
            Err(StoreError::Damaged {
                path: self.path.clone(),
                detail: lines.join("; "),
            })
        }
    }
}

/// A row as SQLite gives it, before its values are checked.
type RawRow = (String, String, String, i64, i64, i64, String);

fn raw_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
    ))
}

/// Sorts a SQLite error: a file that is not a database, or a damaged one, gets its own
/// variant, so the operator is told to look at the file rather than at sipwall.
fn classify(path: &Path, e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path: path.to_path_buf(),
            source: e,
        },
        _ => StoreError::Sqlite {
            path: path.to_path_buf(),
            source: e,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLOCKS: Clocks = Clocks {
        wall: 1_800_000_000_000,
        mono: 50_000,
    };

    fn ban(source: &str, since: Millis, until: Millis) -> Ban {
        Ban {
            source: SourceKey::parse(source, 64).unwrap(),
            rule: Rule::Acl,
            reason: "denied network".to_owned(),
            since,
            until,
            hits: 12,
            offences: 3,
            kind: BanKind::Honeypot,
        }
    }

    #[test]
    fn a_ban_converts_to_wall_clock_and_back() {
        let original = ban("2001:db8:1:2::9", 20_000, 3_650_000);
        let stored = StoredBan::from_ban(&original, CLOCKS);
        assert_eq!(stored.source, "2001:db8:1:2::/64");
        assert_eq!(stored.rule, "acl");
        assert_eq!(stored.since, CLOCKS.wall - 30_000);
        assert_eq!(stored.until, CLOCKS.wall + 3_600_000);
        let back = stored.to_ban(CLOCKS, 64).unwrap();
        // The packet count is not stored.
        assert_eq!(
            back,
            Ban {
                hits: 0,
                ..original
            }
        );
    }

    #[test]
    fn a_restart_maps_wall_times_onto_the_new_monotonic_clock() {
        let stored = StoredBan::from_ban(&ban("192.0.2.7", 20_000, 3_650_000), CLOCKS);
        // Restarted ten minutes later: the monotonic clock is at 1 s.
        let later = Clocks {
            wall: CLOCKS.wall + 600_000,
            mono: 1_000,
        };
        let back = stored.to_ban(later, 64).unwrap();
        assert_eq!(back.until, 1_000 + 3_000_000);
        // It started before this process: clamped to the clock's zero.
        assert_eq!(back.since, 0);
    }

    #[test]
    fn conversions_saturate_instead_of_overflowing() {
        let forever = StoredBan::from_ban(&ban("192.0.2.7", 0, Millis::MAX), CLOCKS);
        assert_eq!(forever.until, u64::MAX);
        assert_eq!(to_sql_time(forever.until), i64::MAX);
        let early = Clocks {
            wall: 10,
            mono: 50_000,
        };
        assert_eq!(early.to_wall(0), 0);
    }

    #[test]
    fn unknown_rules_and_sources_are_refused() {
        let mut stored = StoredBan::from_ban(&ban("192.0.2.7", 0, 1), CLOCKS);
        stored.rule = "from_the_future".to_owned();
        assert!(matches!(
            stored.to_ban(CLOCKS, 64),
            Err(ConvertError::Rule(_))
        ));
        stored.rule = "acl".to_owned();
        stored.source = "192.0.2.0/24".to_owned();
        assert!(matches!(
            stored.to_ban(CLOCKS, 64),
            Err(ConvertError::Source(_))
        ));
    }

    #[test]
    fn every_rule_name_survives_the_store() {
        for rule in Rule::ALL {
            assert_eq!(Rule::from_name(rule.name()), Some(rule));
        }
        for kind in [BanKind::Drop, BanKind::Honeypot] {
            assert_eq!(kind_from_name(kind_name(kind)), Some(kind));
        }
    }
}
