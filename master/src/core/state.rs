//! The records the master core keeps, exposed read-only (by shared reference) for the CLI,
//! the driver's status pages and tests.

use super::ConnId;
use proto::identity::PeerId;
use proto::{
    AgentId, ExecutorInfo, FrameworkId, FrameworkInfo, Resources, TaskInfo, TaskState, TaskStatus,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// A registered agent.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentEntry {
    /// Its id.
    pub id: AgentId,
    /// The same id behind a reference count, which the books of its outstanding offers share
    /// instead of each holding a copy.
    pub(crate) shared_id: Arc<AgentId>,
    /// Registration order, for deterministic allocation.
    pub seq: u64,
    /// Its hostname, copied into offers.
    pub hostname: String,
    /// The agent name of the certificate that registered it: only that name may re-register
    /// this id.
    pub owner: String,
    /// Everything it has.
    pub total: Resources,
    /// Its attributes, copied into offers.
    pub attributes: Vec<(String, String)>,
    /// Its data sets' names, copied into offers and checked at accept.
    pub datasets: Vec<String>,
    /// The control connection it is registered on, `None` while disconnected.
    pub conn: Option<ConnId>,
    /// While disconnected: when it will be removed and its tasks declared lost (the core's
    /// timer table holds the same deadline; this copy is for readers).
    pub remove_at: Option<Instant>,
    /// Resources of its non-terminal tasks.
    pub used: Resources,
    /// Resources in outstanding offers.
    pub offered: Resources,
    /// Static reservations by role (sanitised at registration: non-empty, no `*`, one entry per
    /// role, together within `total`).
    pub reservations: Vec<(String, Resources)>,
    /// The part of `used` drawn from each role's reservation.
    pub reserved_used: BTreeMap<String, Resources>,
    /// The part of `offered` drawn from each role's reservation.
    pub reserved_offered: BTreeMap<String, Resources>,
    /// It said it is leaving (`AgentLeaving { keep_tasks: true }`): not offered any more, and
    /// its tasks keep their states when it disconnects, until it re-registers or its
    /// re-registration timeout passes.
    pub leaving: bool,
    /// When the master last heard from it (`None`: recovered after a restart and not since).
    pub last_seen: Option<Instant>,
}

impl AgentEntry {
    /// What is neither used nor offered, in all pools together: total − used − offered.
    pub fn available(&self) -> Resources {
        self.total - self.used - self.offered
    }

    /// The sum of its reservations.
    pub fn reserved_total(&self) -> Resources {
        self.reservations
            .iter()
            .fold(Resources::ZERO, |t, (_, r)| t + *r)
    }

    /// Its reservation for `role` (zero when it has none).
    pub fn reservation(&self, role: &str) -> Resources {
        self.reservations
            .iter()
            .find(|(r, _)| r == role)
            .map(|(_, r)| *r)
            .unwrap_or_default()
    }

    /// What can still be offered from `role`'s reservation: reservation − used − offered in that
    /// pool, and never more than [`AgentEntry::available`].
    pub fn reserved_free(&self, role: &str) -> Resources {
        let pool = self.reservation(role)
            - self.reserved_used.get(role).copied().unwrap_or_default()
            - self.reserved_offered.get(role).copied().unwrap_or_default();
        pool.min_each(&self.available())
    }

    /// What can still be offered from the unreserved pool: everything free except what the
    /// reservations still hold.
    pub fn unreserved_free(&self) -> Resources {
        let held = self
            .reservations
            .iter()
            .fold(Resources::ZERO, |t, (r, res)| {
                t + (*res
                    - self.reserved_used.get(r).copied().unwrap_or_default()
                    - self.reserved_offered.get(r).copied().unwrap_or_default())
            });
        self.available() - held
    }

    /// True while its control connection is up.
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// True while its resources may be offered: connected and not leaving.
    pub fn is_offerable(&self) -> bool {
        self.conn.is_some() && !self.leaving
    }
}

/// A subscribed framework.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameworkEntry {
    /// Its id.
    pub id: FrameworkId,
    /// The same id behind a reference count, which the books of its outstanding offers share
    /// instead of each holding a copy.
    pub(crate) shared_id: Arc<FrameworkId>,
    /// Subscription order, the DRF tie-breaker.
    pub seq: u64,
    /// What it said about itself when it (last) subscribed.
    pub info: FrameworkInfo,
    /// The principal whose certificate subscribed it: only that principal may re-subscribe.
    pub principal: PeerId,
    /// Its scheduler's connection, `None` while disconnected.
    pub conn: Option<ConnId>,
    /// True after `Suppress` until `Revive` (or a new subscription).
    pub suppressed: bool,
    /// While disconnected: when it will be torn down (`None`: never, or connected). The core's
    /// timer table holds the same deadline; this copy is for readers.
    pub failover_at: Option<Instant>,
}

impl FrameworkEntry {
    /// True while its scheduler is connected.
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }
}

/// A framework's executor on an agent, charged its own resources once.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecutorEntry {
    /// The executor as its first task named it.
    pub info: ExecutorInfo,
    /// The parts of its resources drawn from reservations, by role (empty: all unreserved).
    pub reserved: Vec<(String, Resources)>,
}

/// A task the master knows about.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskEntry {
    /// Its framework.
    pub framework_id: FrameworkId,
    /// The task as launched (its `agent_id` is where it runs).
    pub info: TaskInfo,
    /// The latest status (terminal states are never overwritten).
    pub status: TaskStatus,
    /// The parts of its resources drawn from reservations, by role (empty: all unreserved).
    pub reserved: Vec<(String, Resources)>,
    /// The framework asked to kill it: the kill is sent again if the agent re-registers still
    /// running it (the first `KillTask` may have been lost with a dropped link).
    pub kill_requested: bool,
    /// While its agent is unreachable (status TASK_UNREACHABLE): the state the task had before,
    /// which decides what happens to it if the agent re-registers without reporting it.
    pub before_unreachable: Option<TaskState>,
    /// The state the master told the framework the task returned to when its agent came back
    /// (the restore notice), until the agent's next update for it: an agent update in that
    /// same state is then no news for the framework (the master acknowledges it itself), so
    /// the framework never sees a state twice in a row.
    pub restore_notice: Option<TaskState>,
    /// Recovered after a master restart and not heard of since: `before_unreachable` is a
    /// guess (TASK_STAGING, "launched"), not a state its framework was told.
    pub recovered: bool,
    /// While `recovered`: a reconcile answer told its framework TASK_UNREACHABLE, so it needs
    /// the restore notice when the agent returns (otherwise its view is still the one from
    /// before the restart, which the agent's own updates continue).
    pub unreachable_told: bool,
    /// Adopted already ended (a restarted master did not know it) and its agent's terminal
    /// update not in yet: reconciliation says nothing of it, since that update, which the
    /// agent resends until acknowledged, is the one to tell (it carries the output's tail).
    pub adopted_ended: bool,
    /// When it was launched, started running and ended, as this master saw it.
    pub times: TaskTimes,
}

/// When a task was launched, first reported running and ended, by the master's clock. Kept
/// for operators (`/state`, the UI); `None` where this master did not see it happen (tasks
/// adopted from an agent or recovered after a restart).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskTimes {
    /// Accepted into an offer and sent to its agent.
    pub launched: Option<Instant>,
    /// First reported TASK_RUNNING.
    pub started: Option<Instant>,
    /// Reached a terminal state.
    pub ended: Option<Instant>,
}

impl TaskEntry {
    /// True once the task reached a terminal state.
    pub fn is_terminal(&self) -> bool {
        self.status.state.is_terminal()
    }

    /// Whether an agent's `update` of this task is older than the state the master holds: a
    /// non-terminal state after a terminal one, or before the task's current point in
    /// STAGING → STARTING → RUNNING. An agent sends a task's updates without waiting for
    /// the previous one's acknowledgement and resends them all on a retry, so a resent
    /// STARTING can arrive after the RUNNING or the end that followed it; its framework has
    /// heard the later state and is not told the older one again.
    pub fn is_stale(&self, update: TaskState) -> bool {
        fn step(s: TaskState) -> Option<u8> {
            match s {
                TaskState::Staging => Some(0),
                TaskState::Starting => Some(1),
                TaskState::Running => Some(2),
                _ => None,
            }
        }
        if update.is_terminal() {
            return false;
        }
        if self.is_terminal() {
            return true;
        }
        matches!((step(update), step(self.status.state)), (Some(u), Some(held)) if u < held)
    }

    /// Its state as last known from its agent: the state before TASK_UNREACHABLE while its
    /// agent is unreachable, else its status's.
    pub fn reachable_state(&self) -> TaskState {
        self.before_unreachable.unwrap_or(self.status.state)
    }
}

/// Refuse filters by (framework, agent): no offers of that agent to that framework before the
/// instant. One of the views the core's refuse index keeps in step (with an expiry order and a
/// per-agent index for the allocator).
pub type FilterMap = BTreeMap<(FrameworkId, AgentId), Instant>;
