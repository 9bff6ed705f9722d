//! The keeper of bans: what makes a ban decided in memory last and reach the kernel.
//!
//! The policy engine decides bans on the datapath, in memory, and records an event for
//! each decision. The keeper is one thread that drains those events every `batch_ms`
//! and, for each batch:
//!
//! 1. pushes the bans and unbans to the kernel's nftables sets in one transaction (a
//!    failed transaction is repaired by rewriting the sets from the active bans);
//! 2. writes them to the SQLite store in one transaction, synced to disk;
//! 3. only then writes the log lines and tells waiting callers (the admin endpoint
//!    acknowledges a ban once the keeper has handled it: it is on disk);
//! 4. at most once a second, removes the conntrack entries of the sources banned since.
//!
//! The kernel comes before the disk because its delay is the attacker's window; a crash
//! between the two leaves a kernel element the next start's resynchronisation removes,
//! never an acknowledged ban that is missing.
//!
//! At start, before the first packet, [`Keeper::start`] puts the unexpired bans of the
//! store back into the engine and rewrites the kernel sets from them.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use sipwall_edge::SharedPolicy;
use sipwall_fw::conntrack::Conntrack;
use sipwall_fw::sets::{BanSets, Change};
use sipwall_policy::{BanKind, Engine, Event, Millis, SourceKey, Taken};
use sipwall_store::{BanStore, Clocks, StoredBan};
use tokio::sync::watch;

use crate::config::KernelMode;

/// How the keeper is set up.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The SQLite file, or none to keep bans in memory only.
    pub store: Option<PathBuf>,
    /// Kernel enforcement.
    pub kernel: KernelMode,
    /// The batch interval.
    pub batch: Duration,
    /// The IPv6 prefix length of sources (to read stored sources).
    pub ipv6_prefix: u8,
    /// The `nft` program.
    pub nft: PathBuf,
}

/// What the keeper has done so far.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Progress {
    /// Engine events handled: every ban among them is in the kernel (when enforced
    /// there) and on disk (when a store is configured).
    pub handled: u64,
    /// Bans restored from the store at start.
    pub restored: u64,
    /// Whether bans reach the kernel.
    pub kernel: bool,
    /// Whether bans reach a store on disk.
    pub persisted: bool,
    /// The last failure to write the store, while it lasts.
    pub store_error: Option<String>,
    /// The last failure to change the kernel sets, while it lasts.
    pub kernel_error: Option<String>,
    /// Bans and unbans pushed to the kernel.
    pub kernel_changes: u64,
    /// nft transactions run (batches and resynchronisations).
    pub kernel_transactions: u64,
    /// Resynchronisations of the kernel sets.
    pub kernel_resyncs: u64,
    /// Conntrack entries of banned sources removed.
    pub conntrack_removed: u64,
    /// Time from a ban decision to the end of the nft transaction carrying it, over the
    /// last bans (up to 4,096): median, 99th percentile and maximum, milliseconds.
    pub kernel_latency_ms: Option<[u64; 3]>,
}

/// The running keeper. Dropping it stops the thread after a last batch.
pub struct Keeper {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// What it has done; the admin endpoint waits on `handled`.
    pub progress: watch::Receiver<Progress>,
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn wall_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn lock(policy: &SharedPolicy) -> std::sync::MutexGuard<'_, Engine> {
    policy.lock().unwrap_or_else(|p| p.into_inner())
}

/// The kernel's view of the engine's active dropping bans: source and time left.
fn active_drops(engine: &Engine, now: Millis) -> Vec<(ipnet::IpNet, Duration)> {
    engine
        .bans(now)
        .filter(|ban| ban.kind == BanKind::Drop)
        .map(|ban| {
            (
                ban.source.network(),
                Duration::from_millis(ban.until.saturating_sub(now)),
            )
        })
        .collect()
}

impl Keeper {
    /// Opens the store, restores its unexpired bans into the engine, rewrites the kernel
    /// sets from them and starts the thread. `clock` is the origin of the engine's clock.
    pub fn start(
        settings: Settings,
        policy: SharedPolicy,
        clock: Instant,
    ) -> anyhow::Result<Keeper> {
        let now = || clock.elapsed().as_millis() as Millis;
        let mut progress = Progress::default();
        let store = match &settings.store {
            None => None,
            Some(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).with_context(|| {
                        format!("bans.store: creating the directory {}", parent.display())
                    })?;
                }
                let store = BanStore::open(path).context("bans.store")?;
                Some(store)
            }
        };
        progress.persisted = store.is_some();
        if let Some(store) = &store {
            let clocks = Clocks {
                wall: wall_now(),
                mono: now(),
            };
            let active = store
                .active(clocks.wall)
                .context("bans.store: reading the bans")?;
            let mut engine = lock(&policy);
            for stored in &active {
                match stored.to_ban(clocks, settings.ipv6_prefix) {
                    Ok(ban) => match engine.restore(ban) {
                        Ok(()) => progress.restored += 1,
                        Err(error) => tracing::info!(
                            source = %stored.source, "stored ban not restored: {error}"
                        ),
                    },
                    Err(error) => tracing::warn!(
                        source = %stored.source, "stored ban not restored: {error}"
                    ),
                }
            }
            tracing::info!(
                restored = progress.restored,
                store = %store.path().display(),
                "bans restored from the store"
            );
        }
        let sets = match settings.kernel {
            KernelMode::Off => None,
            mode => {
                let sets = BanSets::new(&settings.nft);
                let active = active_drops(&lock(&policy), now());
                match sets.resync(&active) {
                    Ok(()) => {
                        progress.kernel_transactions += 1;
                        progress.kernel_resyncs += 1;
                        tracing::info!(bans = active.len(), "kernel ban sets synchronised");
                        Some(sets)
                    }
                    Err(error) if mode == KernelMode::On => {
                        return Err(anyhow::anyhow!(error).context(
                            "bans.kernel = \"on\": the nftables ban sets cannot be set up",
                        ));
                    }
                    Err(error) => {
                        tracing::warn!(
                            "bans reach no kernel set, sipwall alone enforces them \
                             (bans.kernel = \"auto\"; run as root with nftables installed, \
                             or set it to \"off\"): {error}"
                        );
                        None
                    }
                }
            }
        };
        progress.kernel = sets.is_some();
        let conntrack = match &sets {
            Some(_) => match Conntrack::open() {
                Ok(conntrack) => Some(conntrack),
                Err(error) => {
                    tracing::warn!("conntrack entries of banned sources stay: {error}");
                    None
                }
            },
            None => None,
        };
        let (progress_tx, progress_rx) = watch::channel(progress.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let mut worker = Worker {
            policy,
            clock,
            batch: settings.batch,
            store,
            sets,
            conntrack,
            progress,
            progress_tx,
            events: Vec::new(),
            lost_seen: 0,
            resync_needed: false,
            sweep: Vec::new(),
            last_sweep: Instant::now(),
            last_expire: Instant::now(),
            latencies: std::collections::VecDeque::new(),
            pending: Vec::new(),
            pending_lifts: Vec::new(),
        };
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("sipwall-keeper".into())
            .spawn(move || worker.run(&thread_stop))
            .context("starting the ban keeper")?;
        Ok(Keeper {
            stop,
            thread: Some(thread),
            progress: progress_rx,
        })
    }
}

/// Most decision-to-kernel times kept for the percentiles.
const LATENCIES: usize = 4096;
/// How often conntrack entries of new bans are swept (a dump walks the whole table).
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How often forgotten records leave the store.
const EXPIRE_EVERY: Duration = Duration::from_secs(3600);

struct Worker {
    policy: SharedPolicy,
    clock: Instant,
    batch: Duration,
    store: Option<BanStore>,
    sets: Option<BanSets>,
    conntrack: Option<Conntrack>,
    progress: Progress,
    progress_tx: watch::Sender<Progress>,
    events: Vec<Event>,
    /// The engine's lost-event count at the last batch.
    lost_seen: u64,
    /// The kernel sets must be rewritten from the engine (a failed batch, lost events).
    resync_needed: bool,
    /// Sources banned since the last conntrack sweep.
    sweep: Vec<ipnet::IpNet>,
    last_sweep: Instant,
    last_expire: Instant,
    latencies: std::collections::VecDeque<u64>,
    /// Store records not yet written (a failed write is retried with the next batch).
    pending: Vec<StoredBan>,
    /// Unbans not yet written, likewise.
    pending_lifts: Vec<String>,
}

/// What one batch changes.
#[derive(Default)]
struct Batch {
    changes: Vec<Change>,
    /// Decision times of the bans among `changes`.
    decided: Vec<Millis>,
    records: Vec<StoredBan>,
    lifted: Vec<String>,
    handled: u64,
}

impl Worker {
    fn now(&self) -> Millis {
        self.clock.elapsed().as_millis() as Millis
    }

    fn run(&mut self, stop: &AtomicBool) {
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            let started = Instant::now();
            self.round();
            if stopping {
                return;
            }
            if let Some(rest) = self.batch.checked_sub(started.elapsed()) {
                std::thread::sleep(rest);
            }
        }
    }

    /// Drains the engine's events and carries them to the kernel, the disk and the log.
    fn round(&mut self) {
        let batch = self.collect();
        let handled = batch.handled;
        if self.sets.is_some() {
            self.push_to_kernel(&batch);
        }
        if self.store.is_some() {
            self.write_to_store(batch.records, batch.lifted);
        }
        for event in self.events.drain(..) {
            sipwall_net::log_event(&event);
        }
        // Acknowledged only once on disk: a failed write holds `handled` back.
        if self.progress.store_error.is_none() {
            self.progress.handled = handled;
        }
        if self.conntrack.is_some()
            && !self.sweep.is_empty()
            && self.last_sweep.elapsed() >= SWEEP_EVERY
        {
            self.sweep_conntrack();
        }
        if self.last_expire.elapsed() >= EXPIRE_EVERY {
            self.last_expire = Instant::now();
            if let Some(store) = &mut self.store
                && let Err(error) = store.expire(wall_now())
            {
                tracing::warn!("bans.store: forgetting old records: {error}");
            }
        }
        self.progress_tx.send_replace(self.progress.clone());
    }

    /// Takes the events out of the engine, with what the disk needs of each ban.
    fn collect(&mut self) -> Batch {
        let mut batch = Batch::default();
        let now = self.now();
        let clocks = Clocks {
            wall: wall_now(),
            mono: now,
        };
        let engine = &mut *lock(&self.policy);
        engine.drain_events(&mut self.events);
        batch.handled = engine.events_recorded();
        let lost = engine.counters().lost_events;
        if lost != self.lost_seen {
            // Some decisions never reached us: rewrite the kernel from the engine, and
            // write every active ban again.
            self.lost_seen = lost;
            self.resync_needed = true;
            for ban in engine.bans(now) {
                batch.records.push(StoredBan::from_ban(ban, clocks));
            }
        }
        for event in &self.events {
            let source: SourceKey = event.source;
            match event.taken {
                Taken::Banned { .. } | Taken::Honeypotted { .. } => {
                    let Some(ban) = engine.ban_of(source) else {
                        continue;
                    };
                    batch.records.push(StoredBan::from_ban(ban, clocks));
                    if ban.kind == BanKind::Drop && ban.is_active(now) {
                        batch.changes.push(Change::Ban {
                            source: source.network(),
                            ttl: Duration::from_millis(ban.until.saturating_sub(now)),
                        });
                        batch.decided.push(event.at);
                    }
                }
                Taken::Unbanned => {
                    batch.lifted.push(source.to_string());
                    batch.changes.push(Change::Unban {
                        source: source.network(),
                    });
                }
                // The kernel times the element out by itself, but its timeout is rounded
                // up to a whole second: the unban keeps the two ends together.
                Taken::Expired => batch.changes.push(Change::Unban {
                    source: source.network(),
                }),
                _ => {}
            }
        }
        batch
    }

    fn push_to_kernel(&mut self, batch: &Batch) {
        let Some(sets) = &self.sets else {
            return;
        };
        if !batch.changes.is_empty() && !self.resync_needed {
            match sets.apply(&batch.changes) {
                Ok(()) => {
                    self.progress.kernel_transactions += 1;
                    self.progress.kernel_changes += batch.changes.len() as u64;
                    self.progress.kernel_error = None;
                }
                Err(error) => {
                    tracing::warn!("kernel ban sets: a batch failed, rewriting them: {error}");
                    self.resync_needed = true;
                }
            }
        }
        if self.resync_needed {
            let now = self.now();
            let active = active_drops(&lock(&self.policy), now);
            match sets.resync(&active) {
                Ok(()) => {
                    self.resync_needed = false;
                    self.progress.kernel_transactions += 1;
                    self.progress.kernel_resyncs += 1;
                    self.progress.kernel_changes += batch.changes.len() as u64;
                    self.progress.kernel_error = None;
                }
                Err(error) => {
                    // Retried at the next batch; sipwall keeps enforcing the bans itself.
                    tracing::error!("kernel ban sets cannot be rewritten: {error}");
                    self.progress.kernel_error = Some(error.to_string());
                    return;
                }
            }
        }
        let done = self.now();
        for &at in &batch.decided {
            if self.latencies.len() == LATENCIES {
                self.latencies.pop_front();
            }
            self.latencies.push_back(done.saturating_sub(at));
        }
        if !batch.decided.is_empty() {
            let mut sorted: Vec<u64> = self.latencies.iter().copied().collect();
            sorted.sort_unstable();
            let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
            self.progress.kernel_latency_ms = Some([at(0.5), at(0.99), at(1.0)]);
        }
        if self.conntrack.is_some() {
            self.sweep
                .extend(batch.changes.iter().filter_map(|change| match change {
                    Change::Ban { source, .. } => Some(*source),
                    Change::Unban { .. } => None,
                }));
        }
    }

    fn write_to_store(&mut self, records: Vec<StoredBan>, lifted: Vec<String>) {
        let Some(store) = &mut self.store else {
            return;
        };
        self.pending.extend(records);
        self.pending_lifts.extend(lifted);
        let result = store.record(&self.pending).and_then(|()| {
            if self.pending_lifts.is_empty() {
                Ok(0)
            } else {
                store.lift(&self.pending_lifts, wall_now())
            }
        });
        match result {
            Ok(_) => {
                self.pending.clear();
                self.pending_lifts.clear();
                if self.progress.store_error.take().is_some() {
                    tracing::info!("bans.store: writing again");
                }
            }
            Err(error) => {
                // Kept and retried with the next batch; the bans hold in memory and in
                // the kernel meanwhile, and the admin endpoint acknowledges nothing.
                if self.progress.store_error.is_none() {
                    tracing::error!("bans.store: bans cannot be written: {error}");
                }
                self.progress.store_error = Some(error.to_string());
            }
        }
    }

    fn sweep_conntrack(&mut self) {
        let Some(conntrack) = &mut self.conntrack else {
            return;
        };
        self.last_sweep = Instant::now();
        let sources = std::mem::take(&mut self.sweep);
        match conntrack.remove_sources(&sources) {
            Ok(removed) => self.progress.conntrack_removed += removed as u64,
            Err(error) => tracing::warn!("conntrack entries of banned sources stay: {error}"),
        }
    }
}
