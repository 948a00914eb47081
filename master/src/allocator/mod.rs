//! Allocation policies: which framework gets offered which agent's free resources.
//!
//! An [`Allocator`] is a pure function of a [`Snapshot`] of the cluster and the current time; it
//! holds no references into the master and performs no I/O. The master core builds the snapshot
//! (borrowing its books, so a round costs no copies of ids, filters or task tables), calls
//! [`Allocator::allocate`], and then *re-validates* every [`Allocation`] it gets back (agent
//! still connected, framework still eligible and unfiltered, resources still free in that pool,
//! at least `min_allocatable`) before turning it into an offer, in the spirit of Nomad's plan
//! applier. A buggy policy can therefore waste an allocation round but never over-commit an
//! agent.
//!
//! # Pools
//! Each agent's resources form pools: one *unreserved* pool, offered to any role, and one pool per
//! role it has a static reservation for, offered only to that role's frameworks. An
//! [`Allocation`] draws from exactly one pool ([`Allocation::reserved_for`]).
//!
//! # Layout
//! - this module: the trait, the snapshot types, role configuration and [`by_name`].
//! - [`sorter`]: the engine shared by the policies: roles ordered by weighted dominant share,
//!   frameworks within a role by dominant share, quotas, reservations, optional priority tiers.
//! - [`drf`]: hierarchical DRF with weights, quotas and reservations ([`Drf`], the default).
//! - [`priority`]: strict priority, DRF within a priority ([`Priority`]).
//! - [`simple`]: the original flat DRF ([`SimpleDrf`]), kept as the benchmark's baseline.
//! - `datadriven` (tests only): golden cases as data, `testdata/*.txt` (a cluster in, the
//!   proposed offers out as text); adding a policy means adding a file of cases.

pub mod drf;
pub mod priority;
pub mod simple;
pub mod sorter;

#[cfg(test)]
mod datadriven;

pub use drf::Drf;
pub use priority::Priority;
pub use simple::SimpleDrf;

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
    /// Scratch buffers kept between rounds are fine; state that changes the answer is not.
    fn allocate(&mut self, snapshot: &Snapshot<'_>, now: Instant) -> Vec<Allocation>;
}

/// The allocator for a `--allocator` name: `drf` (hierarchical DRF, the default), `priority`
/// (strict priority) or `simple-drf` (flat DRF without roles, the benchmark baseline).
pub fn by_name(name: &str) -> Option<Box<dyn Allocator>> {
    match name {
        "drf" | "hdrf" => Some(Box::new(Drf::new())),
        "priority" => Some(Box::new(Priority::new())),
        "simple-drf" => Some(Box::new(SimpleDrf::new())),
        _ => None,
    }
}

/// A role's share of the cluster: its weight and quota.
#[derive(Clone, Debug, PartialEq)]
pub struct RoleSpec {
    /// Relative weight: a role with weight 2 is entitled to twice the dominant share of a role
    /// with weight 1 (default 1.0; non-positive or non-finite weights count as 1.0).
    pub weight: f64,
    /// Quota guarantee: resources set aside for the role (not offered to roles whose guarantee
    /// is met) until the role's allocation contains them (default none).
    pub guarantee: Resources,
    /// Quota limit: the role's allocation (tasks plus outstanding offers, reserved resources
    /// included) never exceeds this (default: no limit).
    pub limit: Option<Resources>,
}

impl Default for RoleSpec {
    fn default() -> Self {
        RoleSpec {
            weight: 1.0,
            guarantee: Resources::ZERO,
            limit: None,
        }
    }
}

impl RoleSpec {
    /// The weight actually used: `weight` if positive and finite, else 1.0.
    pub fn effective_weight(&self) -> f64 {
        if self.weight.is_finite() && self.weight > 0.0 {
            self.weight
        } else {
            1.0
        }
    }
}

/// Role configuration by role name; roles not listed get [`RoleSpec::default`].
pub type Roles = BTreeMap<String, RoleSpec>;

/// One agent as the allocator sees it. Only connected agents with something allocatable in some
/// pool, and not refused by every eligible framework, are in the snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentView<'a> {
    /// The agent.
    pub id: &'a AgentId,
    /// Registration order (lower registered earlier); policies iterate agents in this order.
    pub seq: u64,
    /// Its hostname, for policies that spread by host.
    pub hostname: &'a str,
    /// Everything it has, reserved and unreserved.
    pub total: Resources,
    /// Free in the unreserved pool: neither used by live tasks nor offered, nor held by a
    /// reservation.
    pub available: Resources,
    /// Free in each reserved pool, by role (only non-empty pools).
    pub reserved: Vec<(&'a str, Resources)>,
    /// Active refuse filters on this agent: (framework `seq`, until), sorted by `seq`.
    pub refused: &'a [(u64, Instant)],
    /// Its attributes, for constraint-aware policies.
    pub attributes: &'a [(String, String)],
}

impl AgentView<'_> {
    /// True when a refuse filter keeps the framework with `seq` away from this agent at `now`.
    pub fn refuses(&self, framework_seq: u64, now: Instant) -> bool {
        self.refused
            .binary_search_by_key(&framework_seq, |(s, _)| *s)
            .is_ok_and(|i| self.refused[i].1 > now)
    }
}

/// One framework as the allocator sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameworkView<'a> {
    /// The framework.
    pub id: &'a FrameworkId,
    /// Subscription order (lower subscribed earlier); the tie-breaker between equal shares.
    pub seq: u64,
    /// The role it draws its share from.
    pub role: &'a str,
    /// Its priority (only the strict-priority policy looks at it; higher first).
    pub priority: i32,
    /// Resources of its live tasks plus its outstanding offers.
    pub allocated: Resources,
    /// Connected and not suppressed: may receive offers this round.
    pub eligible: bool,
}

/// What the master knows about the cluster at the start of an allocation round.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot<'a> {
    /// Connected agents with something allocatable that some eligible framework does not
    /// refuse, in registration order.
    pub agents: Vec<AgentView<'a>>,
    /// Known frameworks, in subscription order.
    pub frameworks: Vec<FrameworkView<'a>>,
    /// Roles' weights and quotas.
    pub roles: &'a Roles,
    /// The sum of all connected agents' totals (the denominator of shares).
    pub total: Resources,
    /// Offers smaller than this (in cpus or memory) are not worth making.
    pub min_allocatable: Resources,
    /// The free unreserved resources of connected agents left out of `agents` because every
    /// eligible framework refuses them: nobody can be offered them this round, but they still
    /// count in the headroom kept for unmet quota guarantees, exactly as if they were listed.
    pub refused_free: Resources,
}

impl Snapshot<'_> {
    /// True when `available` is worth offering: non-empty and at least `min_allocatable`.
    pub fn is_allocatable(&self, available: &Resources) -> bool {
        is_allocatable(available, &self.min_allocatable)
    }

    /// The spec of `role` (the default when it is not configured).
    pub fn role(&self, role: &str) -> RoleSpec {
        self.roles.get(role).cloned().unwrap_or_default()
    }
}

/// True when `r` is worth offering: non-empty and at least `min` in every dimension.
pub fn is_allocatable(r: &Resources, min: &Resources) -> bool {
    !r.is_empty() && r.contains(min)
}

/// A proposed offer: these resources of this agent's pool, to this framework. Agent and
/// framework are named by their index in the snapshot, not by id, so a round copies no ids
/// until the master turns the proposal into an offer (and the master finds its books for them
/// without a look-up by name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// Who gets the offer: an index into [`Snapshot::frameworks`].
    pub framework: usize,
    /// Whose resources: an index into [`Snapshot::agents`].
    pub agent: usize,
    /// How much.
    pub resources: Resources,
    /// The pool: `Some(role)` for the agent's reservation for `role`, `None` for unreserved.
    pub reserved_for: Option<String>,
}

/// Sorting helpers shared by policies, kept apart so every policy breaks ties the same way.
pub mod ordering {
    use super::FrameworkView;
    use proto::Resources;
    use std::cmp::Ordering;

    /// Orders frameworks by dominant share of `total` (lowest first), then by subscription order.
    pub fn by_dominant_share(
        a: (&FrameworkView<'_>, &Resources),
        b: (&FrameworkView<'_>, &Resources),
        total: &Resources,
    ) -> Ordering {
        a.1.dominant_share(total)
            .total_cmp(&b.1.dominant_share(total))
            .then(a.0.seq.cmp(&b.0.seq))
    }
}
