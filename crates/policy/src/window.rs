//! Rate counting in fixed memory: a count-min sketch over a sliding window.
//!
//! Flood detection must count every source, and an attacker can spoof a million of
//! them: an exact table per source would grow with the attack. A sketch holds a fixed
//! grid of counters whatever the number of keys; a key's count is the smallest of the
//! counters it hashes to, which can only over-estimate, and only when many keys collide
//! in every row at once. With conservative update (raise only the smallest counters)
//! and a grid much wider than the number of active keys, the error stays far below any
//! threshold worth setting.
//!
//! The window slides: each block holds two halves, the current window and the one
//! before it, and a key's rate is its count now plus the previous count weighted by how
//! much of the previous window still overlaps the last `window` milliseconds.
//!
//! The grid is blocked: a key's counters, in every row and both windows, lie in one
//! 64-byte block (one cache line), picked by the hash; within it, each row has four
//! slots and the hash picks one per row. A key costs one cache miss instead of eight,
//! which matters when a flood spreads over more sources than the cache holds.
//!
//! Windows are numbered (epochs); the half of epoch `e` is `e % 2`. A new window does
//! not clear the grid: each block carries the low byte of the epoch it was last brought
//! up to date in (a stamp, kept beside the blocks), and a block is brought up to date
//! when it is next touched: one window behind, its older half is cleared; two or more,
//! both. So the cost of a new window does not grow with the grid. So that a stamp never
//! wraps around (256 windows), each new window also brings a slice of the grid up to
//! date, the whole grid every [`SWEEP_WINDOWS`] windows; after a longer idle time the
//! grid is cleared at once.

use crate::Millis;

/// Rows: independent choices within a block.
const DEPTH: usize = 4;
/// Slots per row within a block.
const SLOTS: usize = 4;
/// Counters of one window in a block.
const HALF: usize = DEPTH * SLOTS;
/// Every block is brought up to date at least once in this many windows (well below
/// the 256 a one-byte stamp tells apart).
const SWEEP_WINDOWS: u64 = 64;

/// One cache line: the current and the previous window of a few keys.
#[derive(Debug, Clone, Copy, Default)]
#[repr(align(64))]
struct Block([u16; 2 * HALF]);

/// A sliding-window rate sketch.
#[derive(Debug, Clone)]
pub struct RateSketch {
    blocks: Vec<Block>,
    /// Per block, the low byte of the epoch its halves are up to date for.
    stamps: Vec<u8>,
    /// Window length.
    window: Millis,
    /// Start of the current window.
    start: Millis,
    /// Number of the current window.
    epoch: u64,
    /// Next block of the sweep.
    cursor: usize,
}

impl RateSketch {
    /// A sketch of `width` counters per row (rounded up to a power of two) counting over
    /// `window` milliseconds. Memory: 2 × 4 × width × 2 bytes for the counters, and one
    /// byte per 4 × width for the stamps.
    pub fn new(width: usize, window: Millis) -> RateSketch {
        let blocks = (width.max(64).next_power_of_two()) / SLOTS;
        RateSketch {
            blocks: vec![Block::default(); blocks],
            stamps: vec![0; blocks],
            window: window.max(1),
            start: 0,
            epoch: 0,
            cursor: 0,
        }
    }

    /// Bytes held by the counters and their stamps.
    pub fn memory(&self) -> usize {
        self.blocks.len() * std::mem::size_of::<Block>() + self.stamps.len()
    }

    /// Counts one event for the key whose hash is `hash` at `now`, and returns the
    /// key's rate: events in the last window, this one included.
    pub fn add(&mut self, hash: u64, now: Millis) -> u32 {
        self.advance(now);
        let (index, slots) = self.locate(hash);
        let (current, previous) = self.halves();
        let elapsed = now.saturating_sub(self.start).min(self.window);
        let block = self.refresh(index);
        let min = slots
            .iter()
            .map(|&slot| block[current + slot])
            .min()
            .unwrap_or(0);
        let raised = min.saturating_add(1);
        for &slot in &slots {
            // Conservative update: counters already above the new minimum hold other
            // keys' counts too and are left alone.
            let counter = &mut block[current + slot];
            if *counter < raised {
                *counter = raised;
            }
        }
        let before = slots
            .iter()
            .map(|&slot| block[previous + slot])
            .min()
            .unwrap_or(0);
        u32::from(raised) + carried(before, elapsed, self.window)
    }

    /// The key's rate at `now` without counting an event.
    pub fn rate(&mut self, hash: u64, now: Millis) -> u32 {
        self.advance(now);
        let (index, slots) = self.locate(hash);
        let (current, previous) = self.halves();
        let elapsed = now.saturating_sub(self.start).min(self.window);
        let window = self.window;
        let block = self.refresh(index);
        let min = |base: usize| slots.iter().map(|&s| block[base + s]).min().unwrap_or(0);
        u32::from(min(current)) + carried(min(previous), elapsed, window)
    }

    fn halves(&self) -> (usize, usize) {
        let current = (self.epoch & 1) as usize;
        (current * HALF, (1 - current) * HALF)
    }

    /// The counters of block `index`, brought up to date for the current epoch.
    fn refresh(&mut self, index: usize) -> &mut [u16; 2 * HALF] {
        let epoch = self.epoch as u8;
        let (current, _) = self.halves();
        let block = &mut self.blocks[index].0;
        let stamp = &mut self.stamps[index];
        match epoch.wrapping_sub(*stamp) {
            0 => {}
            // The current half still holds the window before the previous one.
            1 => block[current..current + HALF].fill(0),
            _ => block.fill(0),
        }
        *stamp = epoch;
        block
    }

    fn advance(&mut self, now: Millis) {
        if now < self.start + self.window {
            return;
        }
        let windows = (now - self.start) / self.window;
        self.start += windows * self.window;
        self.epoch += windows;
        if windows >= SWEEP_WINDOWS {
            // Idle for long: nothing before carries over.
            self.blocks.fill(Block::default());
            self.stamps.fill(self.epoch as u8);
            return;
        }
        // One slice of the grid per window, so the whole grid every SWEEP_WINDOWS.
        let slice = self.blocks.len().div_ceil(SWEEP_WINDOWS as usize);
        for _ in 0..windows * slice as u64 {
            self.refresh(self.cursor);
            self.cursor = (self.cursor + 1) & (self.blocks.len() - 1);
        }
    }

    /// The block of a key and its slot in each row.
    fn locate(&self, hash: u64) -> (usize, [usize; DEPTH]) {
        let index = (hash as usize) & (self.blocks.len() - 1);
        let bits = hash >> 40;
        let slots = std::array::from_fn(|row| row * SLOTS + ((bits >> (2 * row)) as usize & 3));
        (index, slots)
    }
}

/// The part of the previous window's count that still overlaps the last `window` ms,
/// rounded up so that a steady rate never looks lower than it is.
fn carried(previous: u16, elapsed: Millis, window: Millis) -> u32 {
    (u64::from(previous) * (window - elapsed)).div_ceil(window) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(n: u64) -> u64 {
        use std::hash::Hasher;
        let mut h = siphasher::sip::SipHasher13::new_with_keys(1, 2);
        h.write_u64(n);
        h.finish()
    }

    #[test]
    fn counts_within_the_window_and_forgets_after_two() {
        let mut s = RateSketch::new(1024, 2000);
        for i in 1..=30 {
            assert_eq!(s.add(hash(1), 100 + i), i as u32);
        }
        assert_eq!(s.rate(hash(2), 200), 0);
        // Half way through the next window, half of the previous count carries over.
        assert_eq!(s.rate(hash(1), 3000), 15);
        assert_eq!(s.rate(hash(1), 5000), 0);
    }

    #[test]
    fn a_steady_rate_is_seen_as_steady() {
        let mut s = RateSketch::new(1024, 1000);
        let mut last = 0;
        // 10 events per second for 10 seconds.
        for i in 0..100u64 {
            last = s.add(hash(7), i * 100);
        }
        assert!((9..=11).contains(&last), "{last}");
    }

    #[test]
    fn a_million_keys_do_not_inflate_a_quiet_one() {
        let mut s = RateSketch::new(1 << 18, 2000);
        for key in 0..1_000_000u64 {
            s.add(hash(key), 500);
        }
        // Each key was seen once; collisions in all four rows are rare.
        let worst = (0..1000u64).map(|k| s.rate(hash(k), 500)).max().unwrap();
        assert!(worst < 10, "{worst}");
        // 4 MiB of counters and one stamp byte per 64-byte block.
        assert_eq!(s.memory(), (4 << 20) + (1 << 16));
    }

    #[test]
    fn a_new_window_clears_only_what_is_two_windows_old() {
        let mut s = RateSketch::new(1024, 1000);
        // 8 events in window 0, then 4 in window 1.
        for i in 0..8 {
            s.add(hash(3), 100 + i);
        }
        // At the very start of window 1 all of window 0 carries over.
        assert_eq!(s.rate(hash(3), 1000), 8);
        for i in 0..4 {
            s.add(hash(3), 1100 + i);
        }
        // Half way through window 2: the half that held window 0 is cleared, half of
        // window 1 carries over.
        assert_eq!(s.rate(hash(3), 2500), 2);
        assert_eq!(s.add(hash(3), 2600), 1 + 2);
        // Window 4: nothing of window 2 reaches it.
        assert_eq!(s.rate(hash(3), 4000), 0);
    }

    #[test]
    fn a_block_left_alone_for_hundreds_of_windows_is_not_revived() {
        // The stamps hold one byte: without the sweep, a block untouched for exactly
        // 256 windows would look up to date and show its old counts.
        let mut s = RateSketch::new(1 << 12, 10);
        for i in 0..5 {
            s.add(hash(1), i);
        }
        let (quiet, _) = s.locate(hash(1));
        let other = (0..).map(hash).find(|&h| s.locate(h).0 != quiet).unwrap();
        // Another key keeps the clock going one window at a time.
        for window in 1..=256 {
            s.add(other, window * 10);
        }
        assert_eq!(s.rate(hash(1), 2560), 0);
        // And after one long idle time, everything is forgotten at once.
        for i in 0..5 {
            s.add(hash(1), 3000 + i);
        }
        assert_eq!(s.rate(hash(1), 3009), 5);
        assert_eq!(s.rate(hash(1), 1_000_000), 0);
        assert_eq!(s.rate(other, 1_000_000), 0);
    }
}
