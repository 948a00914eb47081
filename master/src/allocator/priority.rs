//! Strict priority: frameworks with a higher `FrameworkInfo::priority` are offered resources
//! first and may take everything; frameworks of equal priority share by hierarchical DRF (role
//! weights, quotas and reservations apply within a priority, as in [`Drf`](super::Drf)).

use super::{sorter, Allocation, Allocator, Snapshot};
use std::time::Instant;

/// The strict-priority policy. Stateless.
#[derive(Clone, Copy, Debug, Default)]
pub struct Priority;

impl Priority {
    /// A new strict-priority allocator.
    pub fn new() -> Self {
        Priority
    }
}

impl Allocator for Priority {
    fn name(&self) -> &'static str {
        "priority"
    }

    /// As [`Drf`](super::Drf), but every agent pool goes to the highest priority tier that has
    /// an eligible framework not refusing it; DRF only breaks ties within a tier.
    fn allocate(&mut self, snapshot: &Snapshot<'_>, now: Instant) -> Vec<Allocation> {
        sorter::allocate(snapshot, now, true)
    }
}
