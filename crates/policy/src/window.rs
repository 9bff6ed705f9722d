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
//! The window slides: two grids, the current one and the one before it, and a key's
//! rate is its count now plus the previous count weighted by how much of the previous
//! window still overlaps the last `window` milliseconds.

use crate::Millis;

/// Rows of the grid: independent hash functions.
const DEPTH: usize = 4;

/// Counters of one window.
#[derive(Debug, Clone)]
struct Grid {
    counters: Vec<u16>,
}

impl Grid {
    fn new(size: usize) -> Grid {
        Grid {
            counters: vec![0; size],
        }
    }

    fn estimate(&self, slots: &[usize; DEPTH]) -> u32 {
        slots
            .iter()
            .map(|&slot| u32::from(self.counters[slot]))
            .min()
            .unwrap_or(0)
    }
}

/// A sliding-window rate sketch.
#[derive(Debug, Clone)]
pub struct RateSketch {
    /// Counters per row (a power of two).
    width: usize,
    /// Window length.
    window: Millis,
    /// Start of the current window.
    start: Millis,
    current: Grid,
    previous: Grid,
}

impl RateSketch {
    /// A sketch of `width` counters per row (rounded up to a power of two) counting over
    /// `window` milliseconds. Memory: 2 × 4 × width × 2 bytes.
    pub fn new(width: usize, window: Millis) -> RateSketch {
        let width = width.max(64).next_power_of_two();
        RateSketch {
            width,
            window: window.max(1),
            start: 0,
            current: Grid::new(width * DEPTH),
            previous: Grid::new(width * DEPTH),
        }
    }

    /// Bytes held by the counters.
    pub fn memory(&self) -> usize {
        2 * self.width * DEPTH * std::mem::size_of::<u16>()
    }

    /// Counts one event for the key whose hash is `hash` at `now`, and returns the
    /// key's rate: events in the last window, this one included.
    pub fn add(&mut self, hash: u64, now: Millis) -> u32 {
        self.advance(now);
        let slots = self.slots(hash);
        let min = self.current.estimate(&slots);
        let raised = min.saturating_add(1).min(u32::from(u16::MAX));
        for &slot in &slots {
            let counter = &mut self.current.counters[slot];
            // Conservative update: counters already above the new minimum hold other
            // keys' counts too and are left alone.
            if u32::from(*counter) < raised {
                *counter = raised as u16;
            }
        }
        raised + self.carried(&slots, now)
    }

    /// The key's rate at `now` without counting an event.
    pub fn rate(&mut self, hash: u64, now: Millis) -> u32 {
        self.advance(now);
        let slots = self.slots(hash);
        self.current.estimate(&slots) + self.carried(&slots, now)
    }

    /// The part of the previous window that still overlaps the last `window` ms.
    fn carried(&self, slots: &[usize; DEPTH], now: Millis) -> u32 {
        let elapsed = now.saturating_sub(self.start).min(self.window);
        let previous = u64::from(self.previous.estimate(slots));
        // Rounded up, so that a steady rate never looks lower than it is.
        (previous * (self.window - elapsed)).div_ceil(self.window) as u32
    }

    fn advance(&mut self, now: Millis) {
        if now < self.start + self.window {
            return;
        }
        if now < self.start + 2 * self.window {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.start += self.window;
        } else {
            // Idle for more than a window: nothing before carries over.
            self.previous.counters.fill(0);
            self.start = now - (now - self.start) % self.window;
        }
        self.current.counters.fill(0);
    }

    fn slots(&self, hash: u64) -> [usize; DEPTH] {
        // Double hashing (Kirsch–Mitzenmacher): row i uses h1 + i·h2.
        let h1 = hash as u32 as usize;
        let h2 = ((hash >> 32) as usize) | 1;
        let mask = self.width - 1;
        std::array::from_fn(|row| row * self.width + (h1.wrapping_add(row.wrapping_mul(h2)) & mask))
    }
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
