//! Allocation policies: which framework gets offered which agent's free resources.
//!
//! An [`Allocator`] is a pure function of a [`Snapshot`] of the cluster and the current time; it
//! holds no references into the master and performs no I/O. The master core builds the snapshot,
//! calls [`Allocator::allocate`], and then *re-validates* every [`Allocation`] it gets back
//! (agent still connected, framework still eligible and unfiltered, resources still available,
//! at least `min_allocatable`) before turning it into an offer, in the spirit of Nomad's plan
//! applier. A buggy policy can therefore waste an allocation round but never over-commit an
//! agent.
//!
//! # Layout
//! - this module: the trait, the snapshot types and [`ordering`] helpers shared by policies.
//! - [`drf`]: simple dominant resource fairness ([`Drf`]).

pub mod drf;

pub use drf::Drf;

use proto::{AgentId, FrameworkId, Resources};
use std::collections::BTreeMap;
use std::time::Instant;

/// A policy deciding how free resources are offered; the master calls it once per allocation
/// round.
pub trait Allocator: Send {
    /// The policy's name, for logs and the CLI.
    fn name(&self) -> &'static str;

    /// Proposes offers for this round. Must be a pure function of `snapshot` and `now` (the same
    /// inputs give the same output) so that whole-cluster simulations stay deterministic.
    fn allocate(&mut self, snapshot: &Snapshot, now: Instant) -> Vec<Allocation>;
}

/// One agent as the allocator sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentView {
    /// The agent.
    pub id: AgentId,
    /// Registration order (lower registered earlier); policies iterate agents in this order.
    pub seq: u64,
    /// Its hostname, for policies that spread by host.
    pub hostname: String,
    /// Everything it has.
    pub total: Resources,
    /// What is neither used by live tasks nor already offered.
    pub available: Resources,
    /// Its attributes, for constraint-aware policies.
    pub attributes: Vec<(String, String)>,
}

/// One framework as the allocator sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameworkView {
    /// The framework.
    pub id: FrameworkId,
    /// Subscription order (lower subscribed earlier); the tie-breaker between equal shares.
    pub seq: u64,
    /// The role it draws its share from.
    pub role: String,
    /// Resources of its live tasks plus its outstanding offers.
    pub allocated: Resources,
    /// Connected and not suppressed: may receive offers this round.
    pub eligible: bool,
}

/// What the master knows about the cluster at the start of an allocation round.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Connected agents, in registration order.
    pub agents: Vec<AgentView>,
    /// Known frameworks, in subscription order.
    pub frameworks: Vec<FrameworkView>,
    /// Refuse filters: the framework must not be offered the agent before the instant.
    pub filters: BTreeMap<(FrameworkId, AgentId), Instant>,
    /// The sum of all connected agents' totals (the denominator of shares).
    pub total: Resources,
    /// Offers smaller than this (in cpus or memory) are not worth making.
    pub min_allocatable: Resources,
}

impl Snapshot {
    /// True when a refuse filter keeps `framework` away from `agent` at `now`.
    pub fn is_filtered(&self, framework: &FrameworkId, agent: &AgentId, now: Instant) -> bool {
        self.filters
            .get(&(framework.clone(), agent.clone()))
            .is_some_and(|until| *until > now)
    }

    /// True when `available` is worth offering: non-empty and at least `min_allocatable`.
    pub fn is_allocatable(&self, available: &Resources) -> bool {
        !available.is_empty() && available.contains(&self.min_allocatable)
    }
}

/// A proposed offer: these resources of this agent, to this framework.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// Who gets the offer.
    pub framework_id: FrameworkId,
    /// Whose resources.
    pub agent_id: AgentId,
    /// How much.
    pub resources: Resources,
}

/// Sorting helpers shared by policies, kept apart so every policy breaks ties the same way.
pub mod ordering {
    use super::FrameworkView;
    use proto::Resources;
    use std::cmp::Ordering;

    /// Orders frameworks by dominant share of `total` (lowest first), then by subscription order.
    pub fn by_dominant_share(
        a: (&FrameworkView, &Resources),
        b: (&FrameworkView, &Resources),
        total: &Resources,
    ) -> Ordering {
        a.1.dominant_share(total)
            .total_cmp(&b.1.dominant_share(total))
            .then(a.0.seq.cmp(&b.0.seq))
    }
}
