//! A token bucket pacing how many control frames one connection may feed the core.
//!
//! A peer flooding the master with valid messages is slowed to the rate, not disconnected: its
//! reader waits for tokens, QUIC flow control pushes back on the peer, and every other
//! connection keeps its share of the core. Pure (time comes in as an argument), so it is tested
//! without a clock.

use std::time::{Duration, Instant};

/// Frames per second each connection may send, sustained.
pub const FRAMES_PER_SECOND: f64 = 50_000.0;

/// Frames a connection may send in one burst.
pub const FRAME_BURST: f64 = 50_000.0;

/// One connection's budget of frames.
#[derive(Clone, Debug)]
pub struct FrameBudget {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl FrameBudget {
    /// A full bucket refilled at `rate` tokens per second, holding at most `burst`.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Spends a token for one frame: `None` when there was one, else how long to wait before
    /// the frame may be processed (the token is spent either way).
    pub fn take(&mut self, now: Instant) -> Option<Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst) - 1.0;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / self.rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_frames_are_paced_at_the_rate() {
        let t0 = Instant::now();
        let mut b = FrameBudget::new(100.0, 10.0, t0);
        for _ in 0..10 {
            assert_eq!(b.take(t0), None);
        }
        let wait = b.take(t0).unwrap();
        assert!((wait.as_secs_f64() - 0.01).abs() < 1e-9, "{wait:?}");
        // A second later the bucket is full again (never more than the burst).
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..10 {
            assert_eq!(b.take(t1), None);
        }
        assert!(b.take(t1).is_some());
    }

    #[test]
    fn a_clock_going_backwards_grants_nothing() {
        let t0 = Instant::now() + Duration::from_secs(5);
        let mut b = FrameBudget::new(1.0, 1.0, t0);
        assert_eq!(b.take(t0), None);
        assert!(b.take(t0 - Duration::from_secs(3)).is_some());
    }
}
