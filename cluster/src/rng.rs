//! The one seeded generator of every simulation and fault injector, so a run replays exactly from
//! its seed: `tessera sim`'s workload, the virtual-time cluster's latencies and fault schedules,
//! and the lossy-link proxy's choices.
//!
//! A thin wrapper over `rand`'s [`StdRng`] seeded with [`SeedableRng::seed_from_u64`], keeping
//! the handful of draws the callers use under short names.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// A seeded random generator: the same seed gives the same draws, on every platform.
#[derive(Debug)]
pub struct Rng(StdRng);

impl Rng {
    /// A generator from `seed` (any value, zero included).
    pub fn new(seed: u64) -> Self {
        Self(StdRng::seed_from_u64(seed))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.random()
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        self.0.random()
    }

    /// Uniform in `[lo, hi)`; `lo` when the range is empty.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        self.0.random_range(lo..hi)
    }

    /// True with probability `p` (never when `p` is 0 or less).
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// Exponentially distributed with this mean.
    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).max(1e-12).ln()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_and_roughly_uniform() {
        let draw = |seed| {
            let mut r = Rng::new(seed);
            (0..5).map(|_| r.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let mut r = Rng::new(0);
        let hits = (0..10_000).filter(|_| r.chance(0.1)).count();
        assert!((800..1200).contains(&hits), "{hits}");
        assert!(!Rng::new(1).chance(0.0));
        assert_eq!(r.range(5, 5), 5);
        assert!((0..1000).all(|_| (3..9).contains(&r.range(3, 9))));
    }
}
