//! The simulated framework's delay-scheduling policy: the SDK's real
//! [`sdk::delay::DelayScheduler`] deciding which queued tasks go on which offer, so that the
//! locality workload of `tessera sim` measures the helper itself, not a second implementation.
//!
//! A task has a base run time and the data sets it reads (its input block). On an agent holding
//! them it runs its base time and asks for the data sets (preopened at `/data/NAME` on a real
//! agent); elsewhere it reads its input over the network, runs `slowdown` times longer, and
//! asks for none (a real task would fetch the block instead).

use proto::TaskId;
use sdk::delay::{DelayConfig, DelayScheduler};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What the simulation keeps with each task in the delay scheduler's queue.
#[derive(Clone, Debug)]
pub struct LocalityTask {
    /// Its run time when node-local.
    pub run: Duration,
    /// The data sets it reads (its preference).
    pub datasets: Vec<String>,
    /// When it was queued.
    pub queued_at: Instant,
}

/// Where and how a task was placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedTask {
    /// Its job.
    pub job: String,
    /// True when its agent held its input.
    pub local: bool,
    /// The agent's hostname.
    pub hostname: String,
}

/// A framework's delay-scheduling policy and what it placed.
#[derive(Debug)]
pub struct LocalityPolicy {
    /// The SDK's helper, holding the queued tasks.
    pub helper: DelayScheduler<LocalityTask>,
    /// How many times longer a task runs away from its data.
    pub slowdown: f64,
    /// Every task placed, by id.
    pub placed: BTreeMap<TaskId, PlacedTask>,
}

impl LocalityPolicy {
    /// A policy with the helper configured by `cfg`, non-local tasks `slowdown` times slower.
    pub fn new(cfg: DelayConfig, slowdown: f64) -> Self {
        Self {
            helper: DelayScheduler::new(cfg),
            slowdown,
            placed: BTreeMap::new(),
        }
    }

    /// How long a task of base time `run` takes, local or not.
    pub fn run_time(&self, run: Duration, local: bool) -> Duration {
        if local {
            run
        } else {
            run.mul_f64(self.slowdown)
        }
    }
}
