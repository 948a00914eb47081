//! The master's sans-IO core: registry of agents and frameworks, offers, the task table and the
//! status-update relay, as one deterministic state machine.
//!
//! ```text
//!  driver ── Event (Connected / Message / Disconnected / BlobStored) ──▶ Master::handle
//!  driver ── handle_timeout(now) at poll_timeout() ───────────────────▶ Master::handle_timeout
//!  driver ◀── Action (Send { conn, msg } / Close { conn, reason }) ──── Master::poll_action
//!                                  │
//!                                  └──▶ Allocator::allocate(&Snapshot) ─▶ re-validated offers
//! ```
//!
//! The core opens no sockets, reads no clock and draws no randomness: time comes in as the `now`
//! argument, and the same sequence of inputs always yields the same sequence of actions (every
//! map is ordered, ids come from counters). That is what lets `tests/` run whole clusters in
//! virtual time.
//!
//! # Calling contract
//! Modelled on `quinn_proto::Connection`:
//! - `now` never goes backwards across calls (a smaller `now` is treated as the latest one seen).
//! - After every [`Master::handle`] or [`Master::handle_timeout`], drain [`Master::poll_action`]
//!   until it returns `None`, and execute the actions in order (a `Close` follows the `Send`s
//!   queued before it on the same connection, which must be flushed first).
//! - Then ask [`Master::poll_timeout`] and call [`Master::handle_timeout`] once that instant has
//!   passed. Extra or early `handle_timeout` calls are harmless: only what is due runs.
//! - Allocation is never run inside `handle`: anything that frees or adds resources sets the
//!   next allocation to "now", so `poll_timeout` returns an instant that has already passed and
//!   the driver should call `handle_timeout` straight away.
//! - A `Close` action also detaches the connection inside the core at once; the `Disconnected`
//!   event the driver reports later for it (and any message still queued from it) is ignored.
//! - Blob streams and the `Hello` handshake belong to the driver: it reports a connection with
//!   `Connected` only after the handshake, and a validated upload with `BlobStored`.
//!
//! Every bad input is answered, never dropped silently and never a panic: a role violation
//! closes the connection with a reason, an invalid call gets `Message::Error`, an invalid task
//! gets a terminal status update with a `Reason`.

mod agent;
mod scheduler;
mod state;
#[cfg(test)]
mod tests;

pub use state::{AgentEntry, FilterMap, FrameworkEntry, TaskEntry};

use crate::allocator::{AgentView, Allocator, FrameworkView, Snapshot};
use proto::{
    AgentId, BlobKind, Digest, FrameworkId, Message, Offer, OfferId, Reason, Resources, Role,
    TaskId, TaskState, TaskStatus,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// Names one peer connection; chosen by the driver, opaque to the core.
pub type ConnId = u64;

/// How many removed agent and framework ids the master remembers to refuse them.
const REMEMBERED_REMOVED: usize = 10_000;

/// Tunables of the master core.
#[derive(Clone, Debug, PartialEq)]
pub struct MasterConfig {
    /// Prefix of every id the master mints: `{run_id}-A{n}`, `{run_id}-F{n}`, `{run_id}-O{n}`.
    /// Should differ between master runs so ids never collide across restarts.
    pub run_id: String,
    /// Period of the regular allocation round (zero: only event-driven rounds).
    pub allocation_interval: Duration,
    /// How long a disconnected agent may take to re-register before its tasks are lost.
    pub agent_reregister_timeout: Duration,
    /// Period of heartbeats to connected frameworks (zero: none).
    pub heartbeat_interval: Duration,
    /// Offers smaller than this (cpus and memory) are not made.
    pub min_allocatable: Resources,
    /// Upper bound on a decline's `refuse_seconds`.
    pub max_refuse: Duration,
    /// How many terminal, acknowledged tasks are kept for reconciliation.
    pub completed_tasks_limit: usize,
}

impl Default for MasterConfig {
    /// Mesos-like defaults: allocate every second, 10 s to re-register, heartbeat every 5 s,
    /// minimum offer <0.01 cpus, 32 MiB>, refuse at most one hour, keep 1000 completed tasks.
    fn default() -> Self {
        MasterConfig {
            run_id: "master".to_owned(),
            allocation_interval: Duration::from_secs(1),
            agent_reregister_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(5),
            min_allocatable: Resources::new(10, 32 * proto::resources::MIB, 0),
            max_refuse: Duration::from_secs(3600),
            completed_tasks_limit: 1000,
        }
    }
}

/// An input to the core, reported by the driver.
// `Message` dominates the size; events are moved once each, so boxing would only add an
// allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A peer finished its handshake on a new connection.
    Connected {
        /// The connection.
        conn: ConnId,
        /// What the peer said it is in its `Hello`.
        role: Role,
        /// Its address or certificate subject, for logs.
        peer: String,
    },
    /// A control message arrived on a connection.
    Message {
        /// The connection.
        conn: ConnId,
        /// The message.
        msg: Message,
    },
    /// A connection closed (by the peer, a timeout or the driver).
    Disconnected {
        /// The connection.
        conn: ConnId,
    },
    /// An uploaded blob was validated and stored; tasks may now name it.
    BlobStored {
        /// The blob.
        digest: Digest,
        /// What it was uploaded as.
        kind: BlobKind,
    },
}

/// An output of the core, for the driver to execute in order.
#[allow(clippy::large_enum_variant)] // as for `Event`
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Write a message to a connection's control stream.
    Send {
        /// The connection.
        conn: ConnId,
        /// The message.
        msg: Message,
    },
    /// Close a connection (after flushing what was sent before), telling the peer why.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why, for the peer and the logs.
        reason: String,
    },
}

/// What a connection has become after its first accepted message.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Binding {
    Framework(FrameworkId),
    Agent(AgentId),
}

/// One live connection.
#[derive(Clone, Debug)]
struct Conn {
    role: Role,
    peer: String,
    bound: Option<Binding>,
}

/// A FIFO-bounded set, for remembering removed ids.
#[derive(Clone, Debug)]
struct BoundedSet<T: Ord + Clone> {
    set: BTreeSet<T>,
    order: VecDeque<T>,
}

impl<T: Ord + Clone> BoundedSet<T> {
    fn new() -> Self {
        BoundedSet {
            set: BTreeSet::new(),
            order: VecDeque::new(),
        }
    }

    fn insert(&mut self, v: T) {
        if self.set.insert(v.clone()) {
            self.order.push_back(v);
            if self.order.len() > REMEMBERED_REMOVED {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    fn contains(&self, v: &T) -> bool {
        self.set.contains(v)
    }
}

/// The master's state machine. See the [module docs](self) for the calling contract.
pub struct Master {
    cfg: MasterConfig,
    allocator: Box<dyn Allocator>,
    now: Instant,
    conns: BTreeMap<ConnId, Conn>,
    agents: BTreeMap<AgentId, AgentEntry>,
    frameworks: BTreeMap<FrameworkId, FrameworkEntry>,
    tasks: BTreeMap<(FrameworkId, TaskId), TaskEntry>,
    completed: VecDeque<TaskEntry>,
    offers: BTreeMap<OfferId, Offer>,
    filters: FilterMap,
    blobs: BTreeMap<Digest, BlobKind>,
    removed_agents: BoundedSet<AgentId>,
    removed_frameworks: BoundedSet<FrameworkId>,
    next_agent: u64,
    next_framework: u64,
    next_offer: u64,
    next_seq: u64,
    allocate_at: Option<Instant>,
    next_allocation: Option<Instant>,
    next_heartbeat: Option<Instant>,
    actions: VecDeque<Action>,
}

/// `now + d`, or `None` when `d` is zero or the sum overflows (meaning "never").
fn after(now: Instant, d: Duration) -> Option<Instant> {
    if d.is_zero() {
        None
    } else {
        now.checked_add(d)
    }
}

impl Master {
    /// A master with no agents, frameworks or blobs, whose clock starts at `now`.
    pub fn new(cfg: MasterConfig, allocator: Box<dyn Allocator>, now: Instant) -> Self {
        let next_allocation = after(now, cfg.allocation_interval);
        let next_heartbeat = after(now, cfg.heartbeat_interval);
        Master {
            cfg,
            allocator,
            now,
            conns: BTreeMap::new(),
            agents: BTreeMap::new(),
            frameworks: BTreeMap::new(),
            tasks: BTreeMap::new(),
            completed: VecDeque::new(),
            offers: BTreeMap::new(),
            filters: BTreeMap::new(),
            blobs: BTreeMap::new(),
            removed_agents: BoundedSet::new(),
            removed_frameworks: BoundedSet::new(),
            next_agent: 0,
            next_framework: 0,
            next_offer: 0,
            next_seq: 0,
            allocate_at: None,
            next_allocation,
            next_heartbeat,
            actions: VecDeque::new(),
        }
    }

    // ----- the calling contract -----

    /// Feeds one event; drain [`Master::poll_action`] afterwards.
    pub fn handle(&mut self, now: Instant, ev: Event) {
        self.advance(now);
        match ev {
            Event::Connected { conn, role, peer } => {
                if self.conns.contains_key(&conn) {
                    tracing::warn!(conn, "connection id reused before Disconnected");
                    self.detach(conn);
                }
                tracing::debug!(conn, ?role, %peer, "connected");
                self.conns.insert(
                    conn,
                    Conn {
                        role,
                        peer,
                        bound: None,
                    },
                );
            }
            Event::Message { conn, msg } => self.on_message(conn, msg),
            Event::Disconnected { conn } => self.detach(conn),
            Event::BlobStored { digest, kind } => {
                // A module validated once stays a module even if re-uploaded as a plain file.
                let entry = self.blobs.entry(digest).or_insert(kind);
                if kind == BlobKind::Module {
                    *entry = BlobKind::Module;
                }
            }
        }
    }

    /// Runs whatever is due at `now`: agent removals, framework failovers, heartbeats and the
    /// allocation round. Harmless when nothing is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        let now = self.now;
        let due: Vec<AgentId> = self
            .agents
            .values()
            .filter(|a| a.conn.is_none() && a.remove_at.is_some_and(|t| t <= now))
            .map(|a| a.id.clone())
            .collect();
        for id in due {
            self.remove_agent(&id);
        }
        let due: Vec<FrameworkId> = self
            .frameworks
            .values()
            .filter(|f| f.conn.is_none() && f.failover_at.is_some_and(|t| t <= now))
            .map(|f| f.id.clone())
            .collect();
        for id in due {
            tracing::info!(framework = %id, "failover timeout passed; tearing down");
            self.teardown(&id);
        }
        if self.next_heartbeat.is_some_and(|t| t <= now) {
            let conns: Vec<ConnId> = self.frameworks.values().filter_map(|f| f.conn).collect();
            for conn in conns {
                self.send(conn, Message::Heartbeat);
            }
            self.next_heartbeat = after(now, self.cfg.heartbeat_interval);
        }
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        if due(self.allocate_at) || due(self.next_allocation) {
            self.allocate_at = None;
            self.next_allocation = after(now, self.cfg.allocation_interval);
            self.allocate();
        }
    }

    /// The earliest instant at which [`Master::handle_timeout`] has work, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let agents = self
            .agents
            .values()
            .filter(|a| a.conn.is_none())
            .filter_map(|a| a.remove_at);
        let frameworks = self
            .frameworks
            .values()
            .filter(|f| f.conn.is_none())
            .filter_map(|f| f.failover_at);
        [self.allocate_at, self.next_allocation, self.next_heartbeat]
            .into_iter()
            .flatten()
            .chain(agents)
            .chain(frameworks)
            .min()
    }

    /// The next action to execute, in order; `None` once drained.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    // ----- read-only views -----

    /// The configuration the master runs with.
    pub fn config(&self) -> &MasterConfig {
        &self.cfg
    }

    /// The allocation policy's name.
    pub fn allocator_name(&self) -> &'static str {
        self.allocator.name()
    }

    /// Registered agents (connected or waiting to re-register), in id order.
    pub fn agents(&self) -> impl Iterator<Item = &AgentEntry> {
        self.agents.values()
    }

    /// One agent.
    pub fn agent(&self, id: &AgentId) -> Option<&AgentEntry> {
        self.agents.get(id)
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

    /// Outstanding offers, in id order.
    pub fn offers(&self) -> impl Iterator<Item = &Offer> {
        self.offers.values()
    }

    /// One outstanding offer.
    pub fn offer(&self, id: &OfferId) -> Option<&Offer> {
        self.offers.get(id)
    }

    /// Active refuse filters (expired ones are pruned at each allocation round).
    pub fn filters(&self) -> &FilterMap {
        &self.filters
    }

    /// True when the blob was stored (and, for modules, validated).
    pub fn has_blob(&self, digest: &Digest) -> Option<BlobKind> {
        self.blobs.get(digest).copied()
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
        match (self.allocate_at, self.next_allocation) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Checks the books: per agent, the cached used/offered sums match the task table and the
    /// offers, and used + offered ≤ total (so no resource is in two offers or both used and
    /// offered); offers go only to connected frameworks on connected agents; connections and
    /// the entries bound to them agree. Tests assert this after every step.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut used: BTreeMap<&AgentId, Resources> = BTreeMap::new();
        for ((fid, tid), t) in &self.tasks {
            if *fid != t.framework_id || *tid != t.info.task_id {
                return Err(format!(
                    "task table key ({fid}, {tid}) mismatches its entry"
                ));
            }
            if !self.agents.contains_key(&t.info.agent_id) {
                return Err(format!(
                    "task {tid} of {fid} is on unknown agent {}",
                    t.info.agent_id
                ));
            }
            if !t.is_terminal() {
                let u = used.entry(&t.info.agent_id).or_default();
                *u = u
                    .checked_add(&t.info.resources)
                    .ok_or_else(|| format!("used resources overflow on {}", t.info.agent_id))?;
            }
        }
        let mut offered: BTreeMap<&AgentId, Resources> = BTreeMap::new();
        for (id, o) in &self.offers {
            if *id != o.id {
                return Err(format!("offer table key {id} mismatches offer {}", o.id));
            }
            if o.resources.is_empty() {
                return Err(format!("offer {id} is empty"));
            }
            match self.agents.get(&o.agent_id) {
                Some(a) if a.is_connected() => {}
                _ => return Err(format!("offer {id} is on absent agent {}", o.agent_id)),
            }
            match self.frameworks.get(&o.framework_id) {
                Some(f) if f.is_connected() => {}
                _ => {
                    return Err(format!(
                        "offer {id} is held by inactive framework {}",
                        o.framework_id
                    ))
                }
            }
            let s = offered.entry(&o.agent_id).or_default();
            *s = s
                .checked_add(&o.resources)
                .ok_or_else(|| format!("offered resources overflow on {}", o.agent_id))?;
        }
        for (id, a) in &self.agents {
            let u = used.get(id).copied().unwrap_or_default();
            let o = offered.get(id).copied().unwrap_or_default();
            if u != a.used {
                return Err(format!("agent {id}: cached used {} != tasks' {u}", a.used));
            }
            if o != a.offered {
                return Err(format!(
                    "agent {id}: cached offered {} != offers' {o}",
                    a.offered
                ));
            }
            let sum = u
                .checked_add(&o)
                .ok_or_else(|| format!("agent {id}: used + offered overflows"))?;
            if !a.total.contains(&sum) {
                return Err(format!(
                    "agent {id}: used {u} + offered {o} exceeds total {}",
                    a.total
                ));
            }
            if let Some(c) = a.conn {
                if self.conns.get(&c).and_then(|c| c.bound.clone())
                    != Some(Binding::Agent(id.clone()))
                {
                    return Err(format!("agent {id} claims connection {c} not bound to it"));
                }
            }
        }
        for (id, f) in &self.frameworks {
            if let Some(c) = f.conn {
                if self.conns.get(&c).and_then(|c| c.bound.clone())
                    != Some(Binding::Framework(id.clone()))
                {
                    return Err(format!(
                        "framework {id} claims connection {c} not bound to it"
                    ));
                }
            }
        }
        for (c, conn) in &self.conns {
            let ok = match &conn.bound {
                None => true,
                Some(Binding::Agent(a)) => self.agents.get(a).is_some_and(|a| a.conn == Some(*c)),
                Some(Binding::Framework(f)) => {
                    self.frameworks.get(f).is_some_and(|f| f.conn == Some(*c))
                }
            };
            if !ok {
                return Err(format!(
                    "connection {c} is bound to {:?} which disowns it",
                    conn.bound
                ));
            }
        }
        Ok(())
    }

    // ----- plumbing shared by the handlers -----

    fn advance(&mut self, now: Instant) {
        if now > self.now {
            self.now = now;
        }
    }

    fn send(&mut self, conn: ConnId, msg: Message) {
        self.actions.push_back(Action::Send { conn, msg });
    }

    fn error(&mut self, conn: ConnId, message: impl Into<String>) {
        let message = message.into();
        tracing::debug!(conn, %message, "error to peer");
        self.send(conn, Message::Error { message });
    }

    fn send_to_framework(&mut self, fid: &FrameworkId, msg: Message) {
        if let Some(conn) = self.frameworks.get(fid).and_then(|f| f.conn) {
            self.send(conn, msg);
        }
    }

    fn send_to_agent(&mut self, aid: &AgentId, msg: Message) {
        if let Some(conn) = self.agents.get(aid).and_then(|a| a.conn) {
            self.send(conn, msg);
        }
    }

    /// Closes a connection: queues the `Close` and detaches it now.
    fn close(&mut self, conn: ConnId, reason: impl Into<String>) {
        let reason = reason.into();
        tracing::info!(conn, %reason, "closing connection");
        self.actions.push_back(Action::Close { conn, reason });
        self.detach(conn);
    }

    /// Forgets a connection and disconnects whatever was bound to it.
    fn detach(&mut self, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        match c.bound {
            Some(Binding::Framework(fid))
                if self
                    .frameworks
                    .get(&fid)
                    .is_some_and(|f| f.conn == Some(conn)) =>
            {
                self.framework_disconnected(&fid);
            }
            Some(Binding::Agent(aid))
                if self.agents.get(&aid).is_some_and(|a| a.conn == Some(conn)) =>
            {
                self.agent_disconnected(&aid);
            }
            _ => {}
        }
    }

    /// Unbinds a superseded connection from its entry and closes it, without disconnecting the
    /// entry (which has just been bound to a new connection).
    fn supersede(&mut self, old: ConnId, reason: String) {
        if let Some(c) = self.conns.get_mut(&old) {
            c.bound = None;
        }
        self.close(old, reason);
    }

    fn bind(&mut self, conn: ConnId, b: Binding) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.bound = Some(b);
        }
    }

    fn binding(&self, conn: ConnId) -> Option<Binding> {
        self.conns.get(&conn).and_then(|c| c.bound.clone())
    }

    fn schedule_allocation(&mut self) {
        if self.allocate_at.is_none() {
            self.allocate_at = Some(self.now);
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn mint_agent_id(&mut self) -> AgentId {
        loop {
            self.next_agent += 1;
            let id = AgentId(format!("{}-A{}", self.cfg.run_id, self.next_agent));
            if !self.agents.contains_key(&id) && !self.removed_agents.contains(&id) {
                return id;
            }
        }
    }

    fn mint_framework_id(&mut self) -> FrameworkId {
        loop {
            self.next_framework += 1;
            let id = FrameworkId(format!("{}-F{}", self.cfg.run_id, self.next_framework));
            if !self.frameworks.contains_key(&id) && !self.removed_frameworks.contains(&id) {
                return id;
            }
        }
    }

    fn mint_offer_id(&mut self) -> OfferId {
        loop {
            self.next_offer += 1;
            let id = OfferId(format!("{}-O{}", self.cfg.run_id, self.next_offer));
            if !self.offers.contains_key(&id) {
                return id;
            }
        }
    }

    /// A status made by the master itself (no uuid: nothing to acknowledge).
    fn master_status(
        framework_id: &FrameworkId,
        task_id: &TaskId,
        agent_id: Option<AgentId>,
        state: TaskState,
        reason: Option<Reason>,
        message: String,
    ) -> TaskStatus {
        TaskStatus {
            task_id: task_id.clone(),
            framework_id: framework_id.clone(),
            agent_id,
            state,
            reason,
            message,
            stdout_tail: String::new(),
            stderr_tail: String::new(),
            uuid: None,
        }
    }

    /// Records a new status for a live task; a task already terminal keeps its terminal status.
    /// Frees the task's resources when it becomes terminal. Returns true if the status changed.
    fn set_status(&mut self, key: &(FrameworkId, TaskId), status: TaskStatus) -> bool {
        let Some(t) = self.tasks.get_mut(key) else {
            return false;
        };
        if t.is_terminal() {
            return false;
        }
        let terminal = status.state.is_terminal();
        t.status = status;
        if terminal {
            let (aid, res) = (t.info.agent_id.clone(), t.info.resources);
            if let Some(a) = self.agents.get_mut(&aid) {
                a.used -= res;
            }
            self.schedule_allocation();
        }
        true
    }

    /// Moves a terminal task out of the live table into the bounded completed list.
    fn complete_task(&mut self, key: &(FrameworkId, TaskId)) {
        let Some(t) = self.tasks.remove(key) else {
            return;
        };
        if !t.is_terminal() {
            // Never happens by construction; keep the books straight regardless.
            if let Some(a) = self.agents.get_mut(&t.info.agent_id) {
                a.used -= t.info.resources;
            }
        }
        if self.cfg.completed_tasks_limit == 0 {
            return;
        }
        self.completed.push_back(t);
        while self.completed.len() > self.cfg.completed_tasks_limit {
            self.completed.pop_front();
        }
    }

    /// The latest completed entry for a task, if it is still remembered.
    fn completed_task(&self, fid: &FrameworkId, tid: &TaskId) -> Option<&TaskEntry> {
        self.completed
            .iter()
            .rev()
            .find(|t| t.framework_id == *fid && t.info.task_id == *tid)
    }

    /// Removes an offer, returning its resources to the agent's pool.
    fn remove_offer(&mut self, id: &OfferId) -> Option<Offer> {
        let o = self.offers.remove(id)?;
        if let Some(a) = self.agents.get_mut(&o.agent_id) {
            a.offered -= o.resources;
        }
        Some(o)
    }

    /// Rescinds every offer of an agent, telling each holder.
    fn rescind_agent_offers(&mut self, aid: &AgentId) {
        let ids: Vec<OfferId> = self
            .offers
            .values()
            .filter(|o| o.agent_id == *aid)
            .map(|o| o.id.clone())
            .collect();
        for id in ids {
            if let Some(o) = self.remove_offer(&id) {
                self.send_to_framework(&o.framework_id, Message::Rescind { offer_id: o.id });
            }
        }
    }

    /// Returns every offer of a framework to the pool, silently.
    fn drop_framework_offers(&mut self, fid: &FrameworkId) {
        let ids: Vec<OfferId> = self
            .offers
            .values()
            .filter(|o| o.framework_id == *fid)
            .map(|o| o.id.clone())
            .collect();
        for id in ids {
            self.remove_offer(&id);
        }
    }

    fn agent_disconnected(&mut self, aid: &AgentId) {
        self.rescind_agent_offers(aid);
        let now = self.now;
        let timeout = self.cfg.agent_reregister_timeout;
        if let Some(a) = self.agents.get_mut(aid) {
            a.conn = None;
            // A zero timeout removes the agent at the next handle_timeout.
            a.remove_at = Some(now.checked_add(timeout).unwrap_or(now));
            tracing::info!(agent = %aid, "agent disconnected");
        }
    }

    fn framework_disconnected(&mut self, fid: &FrameworkId) {
        self.drop_framework_offers(fid);
        let now = self.now;
        if let Some(f) = self.frameworks.get_mut(fid) {
            f.conn = None;
            let d = Duration::from_millis(f.info.failover_timeout_ms);
            // A zero timeout tears down at the next handle_timeout; an absurd one never does.
            f.failover_at = if d.is_zero() {
                Some(now)
            } else {
                now.checked_add(d)
            };
            tracing::info!(framework = %fid, "framework disconnected");
        }
        self.schedule_allocation();
    }

    /// Removes an agent that did not re-register in time: its tasks are lost.
    fn remove_agent(&mut self, aid: &AgentId) {
        self.rescind_agent_offers(aid);
        let keys: Vec<(FrameworkId, TaskId)> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.info.agent_id == *aid)
            .map(|(k, _)| k.clone())
            .collect();
        let secs = self.cfg.agent_reregister_timeout.as_secs_f64();
        for key in keys {
            let lost = Self::master_status(
                &key.0,
                &key.1,
                Some(aid.clone()),
                TaskState::Lost,
                Some(Reason::AgentLost),
                format!("agent {aid} did not re-register within {secs} s"),
            );
            if self.set_status(&key, lost.clone()) {
                self.send_to_framework(&key.0, Message::Update { status: lost });
            }
            self.complete_task(&key);
        }
        self.filters.retain(|(_, a), _| a != aid);
        self.agents.remove(aid);
        self.removed_agents.insert(aid.clone());
        tracing::info!(agent = %aid, "agent removed");
    }

    /// Ends a framework: kills its tasks, drops its offers and filters, forgets it.
    fn teardown(&mut self, fid: &FrameworkId) {
        self.drop_framework_offers(fid);
        let keys: Vec<(FrameworkId, TaskId)> = self
            .tasks
            .range((fid.clone(), TaskId(String::new()))..)
            .take_while(|((f, _), _)| f == fid)
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            let Some(t) = self.tasks.get(&key) else {
                continue;
            };
            if t.is_terminal() {
                self.complete_task(&key);
            } else {
                let aid = t.info.agent_id.clone();
                self.send_to_agent(
                    &aid,
                    Message::KillTask {
                        framework_id: key.0.clone(),
                        task_id: key.1.clone(),
                    },
                );
            }
        }
        self.filters.retain(|(f, _), _| f != fid);
        if let Some(f) = self.frameworks.remove(fid) {
            if let Some(c) = f.conn.and_then(|c| self.conns.get_mut(&c)) {
                c.bound = None;
            }
        }
        self.removed_frameworks.insert(fid.clone());
        self.schedule_allocation();
        tracing::info!(framework = %fid, "framework torn down");
    }

    /// One allocation round: snapshot, ask the policy, re-validate, send offers.
    fn allocate(&mut self) {
        let now = self.now;
        self.filters.retain(|_, until| *until > now);
        let mut allocated: BTreeMap<&FrameworkId, Resources> = BTreeMap::new();
        for t in self.tasks.values().filter(|t| !t.is_terminal()) {
            *allocated.entry(&t.framework_id).or_default() += t.info.resources;
        }
        for o in self.offers.values() {
            *allocated.entry(&o.framework_id).or_default() += o.resources;
        }
        let mut agents: Vec<AgentView> = self
            .agents
            .values()
            .filter(|a| a.is_connected())
            .map(|a| AgentView {
                id: a.id.clone(),
                seq: a.seq,
                hostname: a.hostname.clone(),
                total: a.total,
                available: a.available(),
                attributes: a.attributes.clone(),
            })
            .collect();
        agents.sort_by_key(|a| a.seq);
        let mut frameworks: Vec<FrameworkView> = self
            .frameworks
            .values()
            .map(|f| FrameworkView {
                id: f.id.clone(),
                seq: f.seq,
                role: f.info.role.clone(),
                allocated: allocated.get(&f.id).copied().unwrap_or_default(),
                eligible: f.is_connected() && !f.suppressed,
            })
            .collect();
        frameworks.sort_by_key(|f| f.seq);
        if agents.is_empty() || !frameworks.iter().any(|f| f.eligible) {
            return;
        }
        let snapshot = Snapshot {
            total: agents.iter().fold(Resources::ZERO, |t, a| t + a.total),
            agents,
            frameworks,
            filters: self.filters.clone(),
            min_allocatable: self.cfg.min_allocatable,
        };
        let proposals = self.allocator.allocate(&snapshot, now);
        let mut batches: Vec<(FrameworkId, Vec<Offer>)> = Vec::new();
        for p in proposals {
            let eligible = self
                .frameworks
                .get(&p.framework_id)
                .is_some_and(|f| f.is_connected() && !f.suppressed);
            let filtered = snapshot.is_filtered(&p.framework_id, &p.agent_id, now);
            let fits = self.agents.get(&p.agent_id).is_some_and(|a| {
                a.is_connected()
                    && a.available().contains(&p.resources)
                    && snapshot.is_allocatable(&p.resources)
            });
            if !eligible || filtered || !fits {
                tracing::warn!(
                    allocator = self.allocator.name(),
                    framework = %p.framework_id,
                    agent = %p.agent_id,
                    resources = %p.resources,
                    "allocator proposed an invalid offer; skipped"
                );
                continue;
            }
            let id = self.mint_offer_id();
            let Some(a) = self.agents.get_mut(&p.agent_id) else {
                continue;
            };
            a.offered += p.resources;
            let offer = Offer {
                id: id.clone(),
                framework_id: p.framework_id.clone(),
                agent_id: a.id.clone(),
                hostname: a.hostname.clone(),
                resources: p.resources,
                reserved_for: None,
                attributes: a.attributes.clone(),
            };
            self.offers.insert(id, offer.clone());
            match batches.iter_mut().find(|(f, _)| *f == p.framework_id) {
                Some((_, v)) => v.push(offer),
                None => batches.push((p.framework_id, vec![offer])),
            }
        }
        batches.sort_by_key(|(f, _)| self.frameworks.get(f).map(|f| f.seq));
        for (fid, offers) in batches {
            self.send_to_framework(&fid, Message::Offers { offers });
        }
    }

    /// Routes a message by the connection's role.
    fn on_message(&mut self, conn: ConnId, msg: Message) {
        let Some(c) = self.conns.get(&conn) else {
            // Closed by us already, or never announced: nothing is bound to it.
            tracing::debug!(conn, kind = msg.kind(), "message on unknown connection");
            return;
        };
        let role = c.role;
        let allowed = match role {
            Role::Scheduler => matches!(
                msg,
                Message::Subscribe { .. }
                    | Message::Accept { .. }
                    | Message::Decline { .. }
                    | Message::Revive
                    | Message::Suppress
                    | Message::Kill { .. }
                    | Message::Acknowledge { .. }
                    | Message::Reconcile { .. }
                    | Message::Teardown
            ),
            Role::Agent => matches!(msg, Message::Register { .. } | Message::StatusUpdate { .. }),
        };
        if !allowed {
            let role = match role {
                Role::Scheduler => "scheduler",
                Role::Agent => "agent",
            };
            self.close(
                conn,
                format!(
                    "protocol violation: {} is not allowed from {role} {}",
                    msg.kind(),
                    c.peer
                ),
            );
            return;
        }
        match msg {
            Message::Subscribe { framework } => self.on_subscribe(conn, framework),
            Message::Register {
                agent_id,
                info,
                running,
            } => self.on_register(conn, agent_id, info, running),
            Message::StatusUpdate { status } => self.on_status_update(conn, status),
            call => match self.binding(conn) {
                Some(Binding::Framework(fid)) => self.on_call(conn, fid, call),
                _ => self.error(
                    conn,
                    format!("not subscribed: send Subscribe before {}", call.kind()),
                ),
            },
        }
    }
}
