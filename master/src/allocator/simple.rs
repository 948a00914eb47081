//! Flat dominant resource fairness (Ghodsi et al., NSDI 2011), without roles, weights, quotas or
//! reservations: every agent's free unreserved resources go, whole, to the eligible framework
//! with the lowest dominant share. This is the original policy, O(agents × frameworks) per
//! round; it stays as the baseline the allocator benchmark measures [`Drf`](super::Drf) against.

use super::{ordering, Allocation, Allocator, Snapshot};
use proto::Resources;
use std::time::Instant;

/// The flat DRF policy. Stateless: everything it needs is in the snapshot.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimpleDrf;

impl SimpleDrf {
    /// A new flat DRF allocator.
    pub fn new() -> Self {
        SimpleDrf
    }
}

impl Allocator for SimpleDrf {
    fn name(&self) -> &'static str {
        "simple-drf"
    }

    /// For each agent in registration order with at least `min_allocatable` free, picks the
    /// eligible, unfiltered framework with the lowest dominant share (ties: earliest subscribed),
    /// gives it the agent's whole availability and counts that towards its share.
    fn allocate(&mut self, snapshot: &Snapshot<'_>, now: Instant) -> Vec<Allocation> {
        let mut allocated: Vec<Resources> =
            snapshot.frameworks.iter().map(|f| f.allocated).collect();
        let mut agents: Vec<_> = snapshot.agents.iter().enumerate().collect();
        agents.sort_by_key(|(_, a)| a.seq);
        let mut out = Vec::new();
        for (ai, agent) in agents {
            if !snapshot.is_allocatable(&agent.available) {
                continue;
            }
            let best = snapshot
                .frameworks
                .iter()
                .enumerate()
                .filter(|(_, f)| f.eligible && !agent.refuses(f.seq, now))
                .min_by(|(i, f), (j, g)| {
                    ordering::by_dominant_share(
                        (f, &allocated[*i]),
                        (g, &allocated[*j]),
                        &snapshot.total,
                    )
                });
            if let Some((i, _)) = best {
                allocated[i] += agent.available;
                out.push(Allocation {
                    framework: i,
                    agent: ai,
                    resources: agent.available,
                    reserved_for: None,
                });
            }
        }
        out
    }
}
