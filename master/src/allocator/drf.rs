//! Hierarchical dominant resource fairness (Ghodsi et al., NSDI 2011), the default policy: roles
//! ordered by weighted dominant share, frameworks within a role by dominant share, with quota
//! guarantees and limits and static reservations. The engine is in [`sorter`](super::sorter).

use super::{sorter, Allocation, Allocator, Snapshot};
use std::time::Instant;

/// The hierarchical DRF policy. Stateless: everything it needs (including roles' weights and
/// quotas, from `MasterConfig::roles`) is in the snapshot.
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

    /// Walks agents in registration order; each reserved pool goes to the lowest-share
    /// framework of its role, the unreserved pool to the first framework, in (unmet guarantee
    /// first, lowest weighted role share, lowest framework share, earliest subscribed) order,
    /// that does not refuse the agent, within its role's limit and leaving other roles' unmet
    /// guarantees their headroom.
    fn allocate(&mut self, snapshot: &Snapshot<'_>, now: Instant) -> Vec<Allocation> {
        sorter::allocate(snapshot, now, false)
    }
}
