//! Reconnect delays: exponential, each with a random jitter of up to itself, written once for
//! agents and schedulers.
//!
//! Without jitter every agent of a cluster redials a restarted master in lock-step; with it the
//! attempts spread over each interval. The delays come from `backon`'s exponential builder.

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use std::time::Duration;

/// First delay after a failed dial.
const FIRST: Duration = Duration::from_millis(100);

/// The delays between dial attempts of one peer; [`Reconnect::reset`] after a success.
#[derive(Debug)]
pub struct Reconnect {
    max: Duration,
    delays: ExponentialBackoff,
}

impl Reconnect {
    /// Delays from 100 ms doubling up to `max`, each jittered.
    pub fn new(max: Duration) -> Self {
        Self {
            max,
            delays: Self::build(max),
        }
    }

    fn build(max: Duration) -> ExponentialBackoff {
        ExponentialBuilder::default()
            .with_min_delay(FIRST.min(max))
            .with_max_delay(max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// The pause before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(self.max)
    }

    /// Starts over from the first delay (after a successful connection).
    pub fn reset(&mut self) {
        self.delays = Self::build(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_are_jittered_and_reset() {
        let max = Duration::from_secs(5);
        let mut r = Reconnect::new(max);
        let delays: Vec<_> = (0..12).map(|_| r.next_delay()).collect();
        // backon's jitter adds up to one more delay on top of the base.
        assert!(delays.iter().all(|d| *d >= FIRST && *d <= max * 2));
        assert!(delays[11] >= Duration::from_secs(5));
        r.reset();
        assert!(r.next_delay() <= FIRST * 2);
        let mut other = Reconnect::new(max);
        let spread: Vec<_> = (0..12).map(|_| other.next_delay()).collect();
        assert_ne!(delays, spread, "two peers must not redial in lock-step");
    }
}
