//! Simple dominant resource fairness (Ghodsi et al., NSDI 2011), without roles, weights or
//! quotas: every agent's free resources go, whole, to the eligible framework with the lowest
//! dominant share.

use super::{ordering, Allocation, Allocator, Snapshot};
use proto::Resources;
use std::time::Instant;

/// The DRF policy. Stateless: everything it needs is in the snapshot.
#[derive(Clone, Copy, Debug, Default)]
pub struct Drf;

impl Drf {
    /// A new DRF allocator.
    pub fn new() -> Self {
        Drf
    }
}

impl Allocator for Drf {
    fn name(&self) -> &'static str {
        "drf"
    }

    /// For each agent in registration order with at least `min_allocatable` free, picks the
    /// eligible, unfiltered framework with the lowest dominant share (ties: earliest subscribed),
    /// gives it the agent's whole availability and counts that towards its share.
    fn allocate(&mut self, snapshot: &Snapshot, now: Instant) -> Vec<Allocation> {
        let mut allocated: Vec<Resources> =
            snapshot.frameworks.iter().map(|f| f.allocated).collect();
        let mut agents: Vec<_> = snapshot.agents.iter().collect();
        agents.sort_by_key(|a| a.seq);
        let mut out = Vec::new();
        for agent in agents {
            if !snapshot.is_allocatable(&agent.available) {
                continue;
            }
            let best = snapshot
                .frameworks
                .iter()
                .enumerate()
                .filter(|(_, f)| f.eligible && !snapshot.is_filtered(&f.id, &agent.id, now))
                .min_by(|(i, f), (j, g)| {
                    ordering::by_dominant_share(
                        (f, &allocated[*i]),
                        (g, &allocated[*j]),
                        &snapshot.total,
                    )
                });
            if let Some((i, f)) = best {
                allocated[i] += agent.available;
                out.push(Allocation {
                    framework_id: f.id.clone(),
                    agent_id: agent.id.clone(),
                    resources: agent.available,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocator::{AgentView, FrameworkView};
    use proto::resources::GIB;
    use proto::{AgentId, FrameworkId};
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn agent(n: u64, r: Resources) -> AgentView {
        AgentView {
            id: AgentId(format!("a{n}")),
            seq: n,
            hostname: format!("h{n}"),
            total: r,
            available: r,
            attributes: vec![],
        }
    }

    fn fw(n: u64, allocated: Resources) -> FrameworkView {
        FrameworkView {
            id: FrameworkId(format!("f{n}")),
            seq: n,
            role: "*".into(),
            allocated,
            eligible: true,
        }
    }

    fn snapshot(agents: Vec<AgentView>, frameworks: Vec<FrameworkView>) -> Snapshot {
        let total = agents.iter().fold(Resources::ZERO, |t, a| t + a.total);
        Snapshot {
            agents,
            frameworks,
            filters: BTreeMap::new(),
            total,
            min_allocatable: Resources::new(10, 32 << 20, 0),
        }
    }

    fn pairs(out: &[Allocation]) -> Vec<(String, String)> {
        out.iter()
            .map(|a| (a.agent_id.0.clone(), a.framework_id.0.clone()))
            .collect()
    }

    #[test]
    fn alternates_between_equal_frameworks() {
        let r = Resources::new(4000, 4 * GIB, 0);
        let s = snapshot(
            (1..=4).map(|n| agent(n, r)).collect(),
            vec![fw(1, Resources::ZERO), fw(2, Resources::ZERO)],
        );
        let out = Drf.allocate(&s, Instant::now());
        assert_eq!(
            pairs(&out),
            [("a1", "f1"), ("a2", "f2"), ("a3", "f1"), ("a4", "f2")]
                .map(|(a, f)| (a.to_string(), f.to_string()))
        );
    }

    #[test]
    fn dominant_share_decides_not_sequence() {
        // The DRF paper's example shape: f1 is memory-heavy, f2 cpu-light; f2 has the lower
        // dominant share and is served first even though it subscribed later.
        let r = Resources::new(9000, 18 * GIB, 0);
        let mut s = snapshot(
            vec![agent(1, r)],
            vec![
                fw(1, Resources::new(1000, 8 * GIB, 0)),
                fw(2, Resources::new(3000, GIB, 0)),
            ],
        );
        s.total = Resources::new(18000, 36 * GIB, 0);
        let out = Drf.allocate(&s, Instant::now());
        assert_eq!(pairs(&out), [("a1".to_string(), "f2".to_string())]);
    }

    #[test]
    fn respects_filters_eligibility_and_minimum() {
        let now = Instant::now();
        let r = Resources::new(4000, 4 * GIB, 0);
        let mut small = agent(3, Resources::new(5, 4 * GIB, 0));
        small.available = Resources::new(5, 4 * GIB, 0);
        let mut f2 = fw(2, Resources::ZERO);
        f2.eligible = false;
        let mut s = snapshot(
            vec![agent(1, r), agent(2, r), small],
            vec![fw(1, Resources::ZERO), f2],
        );
        s.filters.insert(
            (FrameworkId("f1".into()), AgentId("a1".into())),
            now + Duration::from_secs(5),
        );
        let out = Drf.allocate(&s, now);
        assert_eq!(pairs(&out), [("a2".to_string(), "f1".to_string())]);
        // Once the filter expires, a1 is offered too.
        let out = Drf.allocate(&s, now + Duration::from_secs(5));
        assert_eq!(out.len(), 2);
    }
}
