//! The master's durable registry: what must survive a master restart, behind a small trait so
//! the store can change (an embedded file today, a replicated store for a highly available
//! master later).
//!
//! The core never touches a store: it emits [`RegistryOp`]s in
//! [`Action::Persist`](crate::core::Action::Persist) actions ahead of the sends that depend on
//! them, and the driver applies each batch with [`Registry::apply`] (one atomic, durable write)
//! before it executes anything queued after it: persist, then send. At start the driver calls
//! [`Registry::load`] and builds the core from the [`Snapshot`] with
//! [`Master::recover`](crate::core::Master::recover) (an empty snapshot is a fresh master).
//!
//! What is kept: frameworks (id, info with its failover timeout, principal), agents (id, info,
//! the certificate name that owns the id), tasks placed on agents (framework, and the
//! `TaskInfo` as launched: resources, executor, blob references), and which of them a framework
//! asked to kill. Status updates are not kept: agents resend unacknowledged ones, and a task's
//! state after a restart is TASK_UNREACHABLE until its agent re-registers.
//!
//! Removed ids are kept too (tombstones): [`RegistryOp::RemoveAgent`] and
//! [`RegistryOp::RemoveFramework`] also record the id as removed, so a restarted master still
//! tells an agent removed before the restart to shut down, and refuses a torn-down framework's
//! re-subscription. Like the core's memory of them, the tombstones are bounded
//! ([`REMOVED_IDS_KEPT`] of each kind, the oldest evicted first).
//!
//! Stores:
//! - [`redb::RedbRegistry`]: `{work_dir}/registry.redb`, an embedded ACID store.
//! - [`memory::MemRegistry`]: in memory, shareable, for unit tests and the simulator.

pub mod memory;
pub mod redb;
#[cfg(test)]
mod tests;
pub mod thread;

pub use self::memory::MemRegistry;
pub use self::redb::RedbRegistry;
pub use self::thread::RegistryThread;

use proto::identity::PeerId;
use proto::{
    AgentId, AgentInfo, BlobKind, Digest, FrameworkId, FrameworkInfo, TaskId, TaskInfo, TaskStatus,
};
use serde::{Deserialize, Serialize};

/// Version of the records' encoding. Records are postcard, which is not self-describing: any
/// change to a stored type (including proto's `TaskInfo`, `AgentInfo`, `FrameworkInfo`) must
/// bump it, and a store written with a newer version is refused rather than misread.
///
/// History: 1, the first; 2 added the tombstone tables (a version-1 store is read as one with
/// no tombstones, and stamped 2).
pub const SCHEMA_VERSION: u32 = 3;

/// How many removed agent ids, and how many removed framework ids, the registry keeps (the
/// oldest are evicted first): the same bound as the core's memory of them.
pub const REMOVED_IDS_KEPT: usize = 10_000;

/// A framework the master has subscribed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameworkRecord {
    /// Its id.
    pub id: FrameworkId,
    /// What it said when it (last) subscribed; `failover_timeout_ms` is its failover timeout.
    pub info: FrameworkInfo,
    /// The principal whose certificate subscribed it: only it may re-subscribe the id.
    pub principal: PeerId,
}

/// An agent the master has registered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// Its id.
    pub id: AgentId,
    /// What it said when it (last) registered.
    pub info: AgentInfo,
    /// The agent name of the certificate that registered it: only that name may re-register.
    pub owner: String,
}

/// A task the master placed on an agent (or adopted from one), until it leaves the books.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Its framework.
    pub framework_id: FrameworkId,
    /// The task as launched (its `agent_id` is where it runs).
    pub info: TaskInfo,
    /// Its framework asked to kill it (set by [`RegistryOp::KillRequested`]; ignored by
    /// [`RegistryOp::PutTask`], which keeps what the store has).
    pub kill_requested: bool,
    /// The terminal status its agent reported, while its framework has not acknowledged it
    /// (set by [`RegistryOp::EndTask`], kept apart from the record like `kill_requested`). A
    /// task recovered with one is ended and charges nothing: its resources may already have
    /// gone to another task when the master stopped.
    #[serde(skip)]
    pub ended: Option<TaskStatus>,
}

/// A blob (module or task file) the leader stores, and who uploaded it: kept in a shared
/// registry so standbys can mirror the blob and a new leader knows whose it is. The embedded
/// store does not keep these (a single master keeps the owners beside each blob file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRecord {
    /// Its content digest.
    pub digest: Digest,
    /// Module or file.
    pub kind: BlobKind,
    /// Its size in bytes.
    pub size: u64,
    /// The names of the principals that uploaded it (and so may launch with it), sorted.
    pub owners: Vec<String>,
}

/// One change to the registry. A batch of them is applied atomically, in order.
// `PutTask` (a whole `TaskInfo`) dominates; each op is built once and moved into its batch, so
// boxing would only add an allocation per launch.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RegistryOp {
    /// A framework subscribed, or re-subscribed with new info.
    PutFramework(FrameworkRecord),
    /// A framework was torn down (asked for, or its failover timeout passed); its id is
    /// remembered as removed (a tombstone, see [`REMOVED_IDS_KEPT`]).
    RemoveFramework(FrameworkId),
    /// An agent registered, or re-registered with new info.
    PutAgent(AgentRecord),
    /// An agent was removed (timeout, drain, or it restarted afresh); its id is remembered as
    /// removed (a tombstone, see [`REMOVED_IDS_KEPT`]).
    RemoveAgent(AgentId),
    /// A task was accepted for launch (or adopted from an agent's report).
    PutTask(TaskRecord),
    /// A task left the books (terminal and acknowledged, or ended by the master).
    RemoveTask {
        /// Its framework.
        framework_id: FrameworkId,
        /// The task.
        task_id: TaskId,
    },
    /// A task reached a terminal state; it stays until its framework acknowledges it (then
    /// [`RegistryOp::RemoveTask`]), but no longer holds resources.
    EndTask {
        /// Its framework.
        framework_id: FrameworkId,
        /// The task.
        task_id: TaskId,
        /// Its terminal status.
        status: TaskStatus,
    },
    /// A framework asked to kill a task (the kill is resent when its agent comes back).
    KillRequested {
        /// Its framework.
        framework_id: FrameworkId,
        /// The task.
        task_id: TaskId,
    },
    /// A blob was stored, or uploaded again by `owner` (added to its owners). Ignored by the
    /// embedded store (see [`BlobRecord`]).
    PutBlob {
        /// Its digest.
        digest: Digest,
        /// Module or file.
        kind: BlobKind,
        /// Its size in bytes.
        size: u64,
        /// The name of the principal that uploaded it (`None`: the master found it in its
        /// store).
        owner: Option<String>,
    },
    /// A blob was collected. Ignored by the embedded store.
    RemoveBlob(Digest),
}

/// Everything a registry holds, as loaded at start: each list sorted by id.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Known frameworks.
    pub frameworks: Vec<FrameworkRecord>,
    /// Known agents.
    pub agents: Vec<AgentRecord>,
    /// Tasks in the books, sorted by (framework, task).
    pub tasks: Vec<TaskRecord>,
    /// Removed agent ids, oldest first (at most [`REMOVED_IDS_KEPT`]).
    pub removed_agents: Vec<AgentId>,
    /// Torn-down framework ids, oldest first (at most [`REMOVED_IDS_KEPT`]).
    pub removed_frameworks: Vec<FrameworkId>,
    /// Blobs, sorted by digest (empty from the embedded store, see [`BlobRecord`]).
    pub blobs: Vec<BlobRecord>,
}

impl Snapshot {
    /// True for a registry nothing was ever written to (a fresh master).
    pub fn is_empty(&self) -> bool {
        self.frameworks.is_empty()
            && self.agents.is_empty()
            && self.tasks.is_empty()
            && self.removed_agents.is_empty()
            && self.removed_frameworks.is_empty()
            && self.blobs.is_empty()
    }
}

/// Why the registry could not be read or written. A master that cannot persist must not send
/// what depends on it: the driver stops on any of these.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The store failed (I/O, corruption, lock held by another process).
    #[error("registry store {what}: {source}")]
    Store {
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The store was written by a newer master whose record format this one cannot read.
    #[error(
        "registry schema version {found} is newer than this master's {supported}: run the newer \
         master, or move the registry aside to start with an empty one"
    )]
    NewerSchema {
        /// The version in the store.
        found: u32,
        /// The newest version this master reads.
        supported: u32,
    },
    /// A record could not be decoded.
    #[error("registry record in {table} is corrupt: {source}")]
    Corrupt {
        /// The table it was in.
        table: &'static str,
        /// The decoding error.
        source: postcard::Error,
    },
    /// The write was refused because this master no longer leads (its term ended: lease
    /// expired, or another master was elected). Nothing of the batch was written; the master
    /// must step down.
    #[error("registry write fenced: this master's term of leadership has ended")]
    Fenced,
}

/// A durable store of the master's registry. Small on purpose: a replicated store must be able
/// to provide it.
pub trait Registry: Send {
    /// Everything stored (an empty snapshot for a fresh store).
    fn load(&self) -> Result<Snapshot, RegistryError>;
    /// Applies `batch`, in order, as one atomic write that is durable when this returns.
    fn apply(&mut self, batch: &[RegistryOp]) -> Result<(), RegistryError>;
}

/// The key a task is stored under.
pub(crate) fn task_key(framework_id: &FrameworkId, task_id: &TaskId) -> Vec<u8> {
    postcard::to_allocvec(&(framework_id, task_id)).expect("ids always encode")
}
