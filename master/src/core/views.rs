//! Read-only views of the master's state, for the CLI, the driver's status pages and tests.
//! Nothing here changes the state; everything is borrowed, in a deterministic order.

use super::timer::Timer;
use super::{
    AgentEntry, Binding, ConnId, ExecutorEntry, ExecutorKey, FilterMap, FrameworkEntry, Master,
    MasterConfig, TaskEntry,
};
use proto::identity::PeerKind;
use proto::{AgentId, BlobKind, Digest, FrameworkId, Offer, OfferId, Resources, TaskId, TaskState};
use std::time::Instant;

impl Master {
    /// The configuration the master runs with.
    pub fn config(&self) -> &MasterConfig {
        &self.cfg
    }

    /// The allocation policy's name.
    pub fn allocator_name(&self) -> &'static str {
        self.allocator.name()
    }

    /// Gives the allocator back when the core is dropped (a master stepping down keeps its
    /// policy for its next term).
    pub fn into_allocator(self) -> Box<dyn crate::allocator::Allocator> {
        self.allocator
    }

    /// Registered agents (connected or waiting to re-register), in id order.
    pub fn agents(&self) -> impl Iterator<Item = &AgentEntry> {
        self.agents.values()
    }

    /// One agent.
    pub fn agent(&self, id: &AgentId) -> Option<&AgentEntry> {
        self.agents.get(id)
    }

    /// Executors placed on agents, by (agent, framework, executor id).
    pub fn executors(&self) -> impl Iterator<Item = (&ExecutorKey, &ExecutorEntry)> {
        self.executors.iter()
    }

    /// Subscribed frameworks (connected or within their failover timeout), in id order.
    pub fn frameworks(&self) -> impl Iterator<Item = &FrameworkEntry> {
        self.frameworks.values()
    }

    /// One framework.
    pub fn framework(&self, id: &FrameworkId) -> Option<&FrameworkEntry> {
        self.frameworks.get(id)
    }

    /// Live tasks: non-terminal, or terminal but not yet acknowledged.
    pub fn tasks(&self) -> impl Iterator<Item = &TaskEntry> {
        self.tasks.values()
    }

    /// One live task.
    pub fn task(&self, framework: &FrameworkId, task: &TaskId) -> Option<&TaskEntry> {
        self.tasks.get(&(framework.clone(), task.clone()))
    }

    /// The most recent terminal tasks that left the live table, oldest first.
    pub fn completed_tasks(&self) -> impl Iterator<Item = &TaskEntry> {
        self.completed.iter()
    }

    /// Outstanding offers, in the order they were made, each rebuilt as it was sent (the
    /// books keep only who holds what).
    pub fn offers(&self) -> impl Iterator<Item = Offer> + '_ {
        self.ledger
            .offers
            .iter()
            .map(|(n, o)| self.offer_view(*n, o))
    }

    /// One outstanding offer, rebuilt as it was sent.
    pub fn offer(&self, id: &OfferId) -> Option<Offer> {
        let n = super::ledger::offer_counter(&self.cfg.run_id, id)?;
        self.ledger.offers.get(&n).map(|o| self.offer_view(n, o))
    }

    /// Active refuse filters (expired ones are pruned at each allocation round).
    pub fn filters(&self) -> &FilterMap {
        self.ledger.refuse.filters()
    }

    /// A framework's allocation: its live tasks plus its outstanding offers (also for a
    /// torn-down framework whose tasks are still being killed).
    pub fn framework_allocated(&self, id: &FrameworkId) -> Resources {
        self.ledger.allocated(id)
    }

    /// True when the blob was stored (and, for modules, validated).
    pub fn has_blob(&self, digest: &Digest) -> Option<BlobKind> {
        self.blobs.get(digest).map(|b| b.kind)
    }

    /// Whether the peer on `conn` may fetch `digest`: a framework's principal only the blobs it
    /// uploaded, an agent only the module and files of a live task the master placed on it.
    /// The driver asks before it serves a fetch.
    pub fn may_fetch(&self, conn: ConnId, digest: &Digest) -> bool {
        match self.binding(conn) {
            // Only while the task is being prepared: a task an agent merely reported at
            // registration (adopted, not placed) never entitles it to a blob.
            Some(Binding::Agent(aid)) => self.tasks.values().any(|t| {
                t.info.agent_id == aid
                    && matches!(t.status.state, TaskState::Staging | TaskState::Starting)
                    && (t.info.module == *digest
                        || t.info.files.iter().any(|f| f.digest == *digest))
            }),
            Some(Binding::Framework(_)) | None => {
                match (self.principal(conn), self.blobs.get(digest)) {
                    (Some(p), Some(b)) => {
                        matches!(p.kind, PeerKind::Framework | PeerKind::Operator)
                            && b.owners.contains(&p.name)
                    }
                    _ => false,
                }
            }
        }
    }

    /// The sum of connected agents' totals.
    pub fn cluster_total(&self) -> Resources {
        self.agents
            .values()
            .filter(|a| a.is_connected())
            .fold(Resources::ZERO, |t, a| t + a.total)
    }

    /// When the next allocation round will run.
    pub fn next_allocation(&self) -> Option<Instant> {
        self.timers.get(&Timer::Allocation)
    }

    /// A role's allocation: the sum of its subscribed frameworks' allocations.
    pub fn role_allocated(&self, role: &str) -> Resources {
        self.frameworks
            .values()
            .filter(|f| f.info.role == role)
            .fold(Resources::ZERO, |t, f| t + self.ledger.allocated(&f.id))
    }
}
