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

use crate::Millis;

/// Rows: independent choices within a block.
const DEPTH: usize = 4;
/// Slots per row within a block.
const SLOTS: usize = 4;
/// Counters of one window in a block.
const HALF: usize = DEPTH * SLOTS;

/// One cache line: the current and the previous window of a few keys.
#[derive(Debug, Clone, Copy, Default)]
#[repr(align(64))]
struct Block([u16; 2 * HALF]);

/// A sliding-window rate sketch.
#[derive(Debug, Clone)]
pub struct RateSketch {
    blocks: Vec<Block>,
    /// Window length.
    window: Millis,
    /// Start of the current window.
    start: Millis,
    /// Which half of every block is the current window (0 or 1).
    current: usize,
}

impl RateSketch {
    /// A sketch of `width` counters per row (rounded up to a power of two) counting over
    /// `window` milliseconds. Memory: 2 × 4 × width × 2 bytes.
    pub fn new(width: usize, window: Millis) -> RateSketch {
        let blocks = (width.max(64).next_power_of_two()) / SLOTS;
        RateSketch {
            blocks: vec![Block::default(); blocks],
            window: window.max(1),
            start: 0,
            current: 0,
        }
    }

    /// Bytes held by the counters.
    pub fn memory(&self) -> usize {
        self.blocks.len() * std::mem::size_of::<Block>()
    }

    /// Counts one event for the key whose hash is `hash` at `now`, and returns the
    /// key's rate: events in the last window, this one included.
    pub fn add(&mut self, hash: u64, now: Millis) -> u32 {
        self.advance(now);
        let (index, slots) = self.locate(hash);
        let (current, previous) = self.halves();
        let elapsed = now.saturating_sub(self.start).min(self.window);
        let block = &mut self.blocks[index].0;
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
        let block = &self.blocks[index].0;
        let min = |base: usize| slots.iter().map(|&s| block[base + s]).min().unwrap_or(0);
        u32::from(min(current)) + carried(min(previous), elapsed, self.window)
    }

    fn halves(&self) -> (usize, usize) {
        (self.current * HALF, (1 - self.current) * HALF)
    }

    fn advance(&mut self, now: Millis) {
        if now < self.start + self.window {
            return;
        }
        if now < self.start + 2 * self.window {
            // The current window becomes the previous one; the other half is reused.
            self.current = 1 - self.current;
            self.start += self.window;
            let (current, _) = self.halves();
            for block in &mut self.blocks {
                block.0[current..current + HALF].fill(0);
            }
        } else {
            // Idle for more than a window: nothing before carries over.
            self.blocks.fill(Block::default());
            self.start = now - (now - self.start) % self.window;
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
        assert_eq!(s.memory(), 4 << 20);
    }
}
