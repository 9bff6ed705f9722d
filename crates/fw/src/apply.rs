//! Applying the host firewall safely: the previous table saved, the new one loaded in one
//! transaction, and a rollback armed unless the operator confirms in time.
//!
//! A ruleset that locks its operator out must undo itself. `apply` saves what table
//! `inet sipwall` was (or that there was none) under the state directory, starts a
//! watcher process, then loads the new table. The watcher restores the saved table when
//! the deadline passes, unless `confirm` has removed the pending marker first. Both sides
//! claim the marker with one atomic file operation (unlink or rename), so a confirmation
//! racing the deadline either wins or is told that it came too late.
//!
//! Files in the state directory:
//!
//! - `previous.nft`: the script that restores the table as it was before the first
//!   unconfirmed apply (a second apply before confirming keeps it: the baseline is the
//!   last confirmed state, not an unconfirmed one);
//! - `pending`: `TOKEN DEADLINE` while a rollback is armed (the deadline in Unix seconds);
//! - `rollback.log`: one line per rollback the watcher performed or failed, since it
//!   has no terminal to say so.
//!
//! Only table `inet sipwall` is saved and restored: the ban table's elements belong to
//! the daemon and are never rolled back.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::compile::{self, TABLE};
use crate::config::FirewallConfig;
use crate::nft::{Nft, NftError};

const PREVIOUS: &str = "previous.nft";
const PENDING: &str = "pending";
const CLAIMED: &str = "pending.rollback";
const LOG: &str = "rollback.log";

/// How often the watcher looks for a confirmation.
const POLL: Duration = Duration::from_millis(100);

/// A failed apply, confirm or rollback.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// A file of the state directory.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// nft refused or could not run; a refused transaction changed nothing.
    #[error(transparent)]
    Nft(#[from] NftError),
    /// The watcher could not be started; nothing was loaded.
    #[error("starting the rollback watcher: {0}")]
    Watcher(io::Error),
    /// `--no-rollback` while an earlier apply awaits confirmation.
    #[error(
        "an earlier apply awaits confirmation (until {deadline}): confirm it first, or apply \
         with a confirmation time"
    )]
    AwaitingConfirmation {
        /// Its deadline, Unix seconds.
        deadline: u64,
    },
    /// `confirm` with no rollback armed.
    #[error("nothing awaits confirmation{}", last_rollback.as_ref().map(|l| format!(" (last rollback: {l})")).unwrap_or_default())]
    NothingPending {
        /// The last line of `rollback.log`, if a rollback happened.
        last_rollback: Option<String>,
    },
}

/// What the watcher process is asked to do: passed on its command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchOrder {
    /// The state directory.
    pub state_dir: PathBuf,
    /// The token of the pending marker it guards.
    pub token: String,
    /// Seconds until it rolls back.
    pub seconds: u64,
}

/// The outcome of an apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// When the rollback happens unless confirmed (Unix seconds); `None` without one.
    pub deadline: Option<u64>,
    /// An earlier unconfirmed apply was replaced; the rollback still goes back to the
    /// state before it.
    pub superseded: bool,
    /// There was no `inet sipwall` table before (a rollback removes the table).
    pub first: bool,
}

/// An armed rollback, as `status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Identifies the apply that armed it.
    pub token: String,
    /// Unix seconds.
    pub deadline: u64,
}

/// The state directory of one policy.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// The directory `path` (created when needed).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StateDir { path: path.into() }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    fn io(&self, name: &str) -> impl FnOnce(io::Error) -> ApplyError {
        let path = self.file(name);
        move |source| ApplyError::Io { path, source }
    }

    /// The armed rollback, if any.
    pub fn pending(&self) -> Result<Option<Pending>, ApplyError> {
        match std::fs::read_to_string(self.file(PENDING)) {
            Ok(text) => Ok(parse_pending(&text)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(self.io(PENDING)(error)),
        }
    }

    /// The last line of `rollback.log`.
    pub fn last_rollback(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.file(LOG)).ok()?;
        text.lines().last().map(str::to_owned)
    }

    /// Writes `name` whole or not at all (a temporary file renamed over it).
    fn write(&self, name: &str, text: &str) -> Result<(), ApplyError> {
        let temporary = self.file(&format!(".{name}.{}", std::process::id()));
        std::fs::write(&temporary, text).map_err(self.io(name))?;
        std::fs::rename(&temporary, self.file(name)).map_err(self.io(name))
    }

    fn remove(&self, name: &str) -> Result<bool, ApplyError> {
        match std::fs::remove_file(self.file(name)) {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(self.io(name)(error)),
        }
    }

    fn log(&self, line: &str) {
        // The watcher has no terminal: this file is where its outcome is told. Failing
        // to write it must not stop a rollback.
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.file(LOG))
        {
            let _ = writeln!(file, "{} {line}", now());
        }
    }
}

fn parse_pending(text: &str) -> Option<Pending> {
    let (token, deadline) = text.trim().split_once(' ')?;
    Some(Pending {
        token: token.to_owned(),
        deadline: deadline.parse().ok()?,
    })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Loads `config`'s firewall.
///
/// With `rollback`, the previous table is saved and `spawn_watcher` must start a
/// process that calls [`watch`] with the order it is given; it is started before the
/// new table is loaded, so a ruleset is never loaded unguarded. Without, the table is
/// loaded and nothing is kept (refused while an earlier apply awaits confirmation).
pub fn apply(
    config: &FirewallConfig,
    nft: &Nft,
    rollback: Option<Duration>,
    spawn_watcher: impl FnOnce(&WatchOrder) -> io::Result<()>,
) -> Result<Applied, ApplyError> {
    let state = StateDir::new(&config.state_dir);
    let script = compile::load_script(config);
    let Some(rollback) = rollback else {
        if let Some(pending) = state.pending()? {
            return Err(ApplyError::AwaitingConfirmation {
                deadline: pending.deadline,
            });
        }
        nft.load(&script)?;
        return Ok(Applied {
            deadline: None,
            superseded: false,
            first: false,
        });
    };
    create_private_dir(&config.state_dir).map_err(state.io(""))?;
    // Claim an earlier pending marker: its watcher then finds nothing to roll back and
    // exits, and this apply's watcher takes over with the same baseline.
    let superseded = state.remove(PENDING)?;
    let first = if superseded && state.file(PREVIOUS).exists() {
        std::fs::read_to_string(state.file(PREVIOUS)).map_err(state.io(PREVIOUS))?
            == compile::remove_script()
    } else {
        let saved = nft.save_table(TABLE)?;
        let mut restore = compile::remove_script();
        if let Some(saved) = &saved {
            restore.push_str(saved);
        }
        state.write(PREVIOUS, &restore)?;
        saved.is_none()
    };
    let seconds = rollback.as_secs().max(1);
    let deadline = now() + seconds;
    let token = format!(
        "{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |t| t.subsec_nanos())
    );
    state.write(PENDING, &format!("{token} {deadline}\n"))?;
    let order = WatchOrder {
        state_dir: config.state_dir.clone(),
        token,
        seconds,
    };
    if let Err(error) = spawn_watcher(&order) {
        state.remove(PENDING)?;
        return Err(ApplyError::Watcher(error));
    }
    if let Err(error) = nft.load(&script) {
        // The running table is unchanged. If it is a confirmed one, nothing needs
        // guarding: disarm. If it is an earlier unconfirmed apply, leave the new watcher
        // armed so that it is still rolled back.
        if !superseded {
            state.remove(PENDING)?;
            state.remove(PREVIOUS)?;
        }
        return Err(error.into());
    }
    Ok(Applied {
        deadline: Some(deadline),
        superseded,
        first,
    })
}

fn create_private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    // The saved ruleset tells how the host is defended: root's business only.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// Cancels the armed rollback: the loaded table stays.
pub fn confirm(state_dir: &Path) -> Result<Pending, ApplyError> {
    let state = StateDir::new(state_dir);
    let pending = state.pending()?;
    // Removing the marker is the claim: once it is gone, the watcher cannot roll back.
    if !state.remove(PENDING)? {
        return Err(ApplyError::NothingPending {
            last_rollback: state.last_rollback(),
        });
    }
    state.remove(PREVIOUS)?;
    Ok(pending.unwrap_or(Pending {
        token: String::new(),
        deadline: 0,
    }))
}

/// What the watcher did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchOutcome {
    /// Confirmed, or superseded by a newer apply: nothing done.
    Cancelled,
    /// The previous table was restored.
    RolledBack,
}

/// The watcher's body: waits for `order.seconds`, then restores the previous table
/// unless the pending marker with `order.token` has gone.
pub fn watch(order: &WatchOrder, nft: &Nft) -> Result<WatchOutcome, ApplyError> {
    let state = StateDir::new(&order.state_dir);
    let started = Instant::now();
    let deadline = Duration::from_secs(order.seconds);
    let ours = |state: &StateDir, name: &str| {
        std::fs::read_to_string(state.file(name))
            .ok()
            .and_then(|text| parse_pending(&text))
            .is_some_and(|pending| pending.token == order.token)
    };
    while started.elapsed() < deadline {
        if !ours(&state, PENDING) {
            return Ok(WatchOutcome::Cancelled);
        }
        std::thread::sleep(POLL.min(deadline.saturating_sub(started.elapsed())));
    }
    // Claim the marker; if confirm removed it first, it won.
    if std::fs::rename(state.file(PENDING), state.file(CLAIMED)).is_err() {
        return Ok(WatchOutcome::Cancelled);
    }
    if !ours(&state, CLAIMED) {
        // A newer apply's marker, written between the check and the claim: give it back.
        let _ = std::fs::rename(state.file(CLAIMED), state.file(PENDING));
        return Ok(WatchOutcome::Cancelled);
    }
    let result = std::fs::read_to_string(state.file(PREVIOUS))
        .map_err(state.io(PREVIOUS))
        .and_then(|script| nft.load(&script).map_err(ApplyError::from));
    match &result {
        Ok(()) => state.log("not confirmed in time: previous inet sipwall table restored"),
        Err(error) => state.log(&format!("rollback FAILED: {error}")),
    }
    state.remove(CLAIMED)?;
    result?;
    state.remove(PREVIOUS)?;
    Ok(WatchOutcome::RolledBack)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(dir: &Path, token: &str, seconds: u64) -> WatchOrder {
        WatchOrder {
            state_dir: dir.to_owned(),
            token: token.to_owned(),
            seconds,
        }
    }

    #[test]
    fn confirm_without_a_pending_apply_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let error = confirm(dir.path()).unwrap_err();
        assert!(
            matches!(error, ApplyError::NothingPending { .. }),
            "{error}"
        );
    }

    #[test]
    fn a_watcher_whose_marker_is_gone_does_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        state.write(PENDING, "abc 1\n").unwrap();
        // A bad nft path: any attempt to roll back would fail the test.
        let nft = Nft::new("/nonexistent/nft");
        assert_eq!(
            watch(&order(dir.path(), "other", 5), &nft).unwrap(),
            WatchOutcome::Cancelled
        );
        let pending = state.pending().unwrap().unwrap();
        assert_eq!((pending.token.as_str(), pending.deadline), ("abc", 1));
        confirm(dir.path()).unwrap();
        assert!(state.pending().unwrap().is_none());
    }

    #[test]
    fn a_failed_rollback_is_logged() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        state.write(PENDING, "abc 1\n").unwrap();
        state.write(PREVIOUS, "flush ruleset\n").unwrap();
        let nft = Nft::new("/nonexistent/nft");
        let error = watch(&order(dir.path(), "abc", 0), &nft).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/nft"), "{error}");
        assert!(state.last_rollback().unwrap().contains("rollback FAILED"));
        // The marker is gone (nothing left to confirm), the saved table is kept.
        assert!(state.pending().unwrap().is_none());
        assert!(dir.path().join(PREVIOUS).exists());
    }
}
