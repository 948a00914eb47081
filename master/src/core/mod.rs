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

use crate::allocator::{AgentView, Allocator, FrameworkView, Roles, Snapshot};
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
    /// Offers smaller than this (in cpus or in memory: both must be reached) are not made.
    pub min_allocatable: Resources,
    /// Upper bound on a decline's `refuse_seconds` (a NaN or negative `refuse_seconds` means the
    /// Mesos default of 5 s; zero means no filter).
    pub max_refuse: Duration,
    /// How many terminal, acknowledged tasks are kept for reconciliation.
    pub completed_tasks_limit: usize,
    /// Roles' weights and quotas; roles not listed have weight 1.0 and no quota.
    pub roles: Roles,
    /// Rescind an offer not answered within this time (`None`: offers are held until used,
    /// declined or invalidated, as in Mesos without `--offer_timeout`). A rescinded offer comes
    /// with a refuse filter of the default 5 s for that framework on that agent, so the
    /// resources go to someone else first.
    pub offer_timeout: Option<Duration>,
}

impl Default for MasterConfig {
    /// Mesos-like defaults: allocate every second (and as soon as resources free up), 10 s to
    /// re-register, heartbeat every 5 s, minimum offer <0.01 cpus, 32 MiB>, refuse at most one
    /// hour, keep 1000 completed tasks, no roles configured (weight 1.0, no quota), no offer
    /// timeout.
    fn default() -> Self {
        MasterConfig {
            run_id: "master".to_owned(),
            allocation_interval: Duration::from_secs(1),
            agent_reregister_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(5),
            min_allocatable: Resources::new(10, 32 * proto::resources::MIB, 0),
            max_refuse: Duration::from_secs(3600),
            completed_tasks_limit: 1000,
            roles: Roles::new(),
            offer_timeout: None,
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
    /// When each outstanding offer times out (only with `offer_timeout`), and the same by time.
    offer_deadline: BTreeMap<OfferId, Instant>,
    offer_expiry: BTreeSet<(Instant, OfferId)>,
    filters: FilterMap,
    /// The filters by expiry, to prune them without scanning.
    filter_expiry: BTreeSet<(Instant, FrameworkId, AgentId)>,
    /// Per framework (including torn-down ones whose tasks still run): live tasks plus
    /// outstanding offers.
    fw_alloc: BTreeMap<FrameworkId, Resources>,
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

/// Subtracts `r` from `role`'s entry of a pool map, dropping the entry once empty.
fn sub_pool(pools: &mut BTreeMap<String, Resources>, role: &str, r: Resources) {
    if let Some(p) = pools.get_mut(role) {
        *p -= r;
        if p.is_empty() {
            pools.remove(role);
        }
    }
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
            offer_deadline: BTreeMap::new(),
            offer_expiry: BTreeSet::new(),
            filters: BTreeMap::new(),
            filter_expiry: BTreeSet::new(),
            fw_alloc: BTreeMap::new(),
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
        while let Some((t, id)) = self.offer_expiry.first().cloned() {
            if t > now {
                break;
            }
            if let Some(o) = self.remove_offer(&id) {
                tracing::info!(offer = %id, framework = %o.framework_id, "offer timed out; rescinded");
                let refuse = self.refuse_duration(f64::NAN);
                if let Some(until) = refuse.and_then(|d| now.checked_add(d)) {
                    self.set_filter(&o.framework_id, &o.agent_id, until);
                }
                self.send_to_framework(&o.framework_id, Message::Rescind { offer_id: o.id });
                self.schedule_allocation();
            }
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
        let offers = self.offer_expiry.first().map(|(t, _)| *t);
        [
            self.allocate_at,
            self.next_allocation,
            self.next_heartbeat,
            offers,
        ]
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

    /// A framework's allocation: its live tasks plus its outstanding offers (also for a
    /// torn-down framework whose tasks are still being killed).
    pub fn framework_allocated(&self, id: &FrameworkId) -> Resources {
        self.fw_alloc.get(id).copied().unwrap_or_default()
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
        // Per agent and role: reserved used, reserved offered.
        let mut pools: BTreeMap<(&AgentId, &str), (Resources, Resources)> = BTreeMap::new();
        let mut fw_alloc: BTreeMap<&FrameworkId, Resources> = BTreeMap::new();
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
                *fw_alloc.entry(fid).or_default() += t.info.resources;
                let mut parts = Resources::ZERO;
                for (role, r) in &t.reserved {
                    pools.entry((&t.info.agent_id, role)).or_default().0 += *r;
                    parts += *r;
                }
                if !t.info.resources.contains(&parts) {
                    return Err(format!("task {tid} of {fid}: reserved parts exceed it"));
                }
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
            *fw_alloc.entry(&o.framework_id).or_default() += o.resources;
            if let Some(role) = &o.reserved_for {
                pools.entry((&o.agent_id, role)).or_default().1 += o.resources;
                if self.frameworks.get(&o.framework_id).map(|f| &f.info.role) != Some(role) {
                    return Err(format!(
                        "offer {id} reserved for {role} is held by a framework of another role"
                    ));
                }
            }
            if self.cfg.offer_timeout.is_some() != self.offer_deadline.contains_key(id) {
                return Err(format!("offer {id} has a wrong deadline"));
            }
        }
        if self.offer_deadline.len() != self.offer_expiry.len()
            || self.offer_deadline.len() > self.offers.len()
        {
            return Err("offer deadlines out of step with offers".into());
        }
        let fw_alloc: BTreeMap<&FrameworkId, Resources> = fw_alloc
            .into_iter()
            .filter(|(_, r)| !r.is_empty())
            .collect();
        let cached: BTreeMap<&FrameworkId, Resources> = self
            .fw_alloc
            .iter()
            .filter(|(_, r)| !r.is_empty())
            .map(|(f, r)| (f, *r))
            .collect();
        if fw_alloc != cached {
            return Err(format!(
                "cached framework allocations {cached:?} != tasks' and offers' {fw_alloc:?}"
            ));
        }
        if self.filter_expiry.len() != self.filters.len() {
            return Err("filter expiry index out of step with filters".into());
        }
        let mut filters_per_agent: BTreeMap<&AgentId, usize> = BTreeMap::new();
        for ((f, a), until) in &self.filters {
            *filters_per_agent.entry(a).or_default() += 1;
            if !self.filter_expiry.contains(&(*until, f.clone(), a.clone())) {
                return Err(format!("filter ({f}, {a}) missing from the expiry index"));
            }
            let seq = self.frameworks.get(f).map(|f| f.seq);
            let indexed = self.agents.get(a).is_some_and(|a| {
                seq.is_some_and(|s| a.refused.binary_search(&(s, *until)).is_ok())
            });
            if !indexed {
                return Err(format!("filter ({f}, {a}) missing from the agent's index"));
            }
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
            if !a.total.contains(&a.reserved_total()) {
                return Err(format!("agent {id}: reservations exceed its total"));
            }
            let mut res_used = Resources::ZERO;
            let mut res_offered = Resources::ZERO;
            for (role, reservation) in &a.reservations {
                let (pu, po) = pools.get(&(id, role.as_str())).copied().unwrap_or_default();
                let cu = a.reserved_used.get(role).copied().unwrap_or_default();
                let co = a.reserved_offered.get(role).copied().unwrap_or_default();
                if (pu, po) != (cu, co) {
                    return Err(format!(
                        "agent {id}, role {role}: cached reserved used/offered {cu}/{co} != {pu}/{po}"
                    ));
                }
                if !reservation.contains(&(pu + po)) {
                    return Err(format!(
                        "agent {id}: reserved pool of {role} over-committed: used {pu} + offered \
                         {po} > {reservation}"
                    ));
                }
                res_used += pu;
                res_offered += po;
            }
            let in_pools: Resources = pools
                .iter()
                .filter(|((a, _), _)| *a == id)
                .fold(Resources::ZERO, |t, (_, (u, o))| t + *u + *o);
            if in_pools != res_used + res_offered {
                return Err(format!(
                    "agent {id}: tasks or offers in a pool it does not have"
                ));
            }
            let unreserved = a.total - a.reserved_total();
            let (uu, uo) = (u - res_used, o - res_offered);
            if !uo.is_empty() && !unreserved.contains(&(uu + uo)) {
                return Err(format!(
                    "agent {id}: unreserved pool over-committed: used {uu} + offered {uo} > \
                     {unreserved}"
                ));
            }
            if a.refused.windows(2).any(|w| w[0].0 >= w[1].0) {
                return Err(format!("agent {id}: refuse index not sorted"));
            }
            if a.refused.len() != filters_per_agent.get(id).copied().unwrap_or(0) {
                return Err(format!("agent {id}: refuse index has stale entries"));
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

    /// Ends a task on the master's own authority (no agent will report it): records the
    /// terminal status, tells the framework, and moves the task to the completed list.
    fn end_task(
        &mut self,
        key: &(FrameworkId, TaskId),
        agent_id: &AgentId,
        state: TaskState,
        reason: Reason,
        message: String,
    ) {
        let status = Self::master_status(
            &key.0,
            &key.1,
            Some(agent_id.clone()),
            state,
            Some(reason),
            message,
        );
        if self.set_status(key, status.clone()) {
            self.send_to_framework(&key.0, Message::Update { status });
        }
        self.complete_task(key);
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
            let t = t.clone();
            self.release_task(&t);
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
            self.release_task(&t);
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
            if let Some(role) = &o.reserved_for {
                sub_pool(&mut a.reserved_offered, role, o.resources);
            }
        }
        if let Some(t) = self.offer_deadline.remove(id) {
            self.offer_expiry.remove(&(t, id.clone()));
        }
        self.discharge(&o.framework_id, o.resources);
        Some(o)
    }

    /// Counts `r` towards a framework's allocation.
    fn charge(&mut self, fid: &FrameworkId, r: Resources) {
        *self.fw_alloc.entry(fid.clone()).or_default() += r;
    }

    /// Takes `r` off a framework's allocation.
    fn discharge(&mut self, fid: &FrameworkId, r: Resources) {
        if let Some(a) = self.fw_alloc.get_mut(fid) {
            *a -= r;
            if a.is_empty() {
                self.fw_alloc.remove(fid);
            }
        }
    }

    /// Books a new non-terminal task's resources on its agent (pools included) and framework.
    fn hold_task(&mut self, t: &TaskEntry) {
        if let Some(a) = self.agents.get_mut(&t.info.agent_id) {
            a.used += t.info.resources;
            for (role, r) in &t.reserved {
                *a.reserved_used.entry(role.clone()).or_default() += *r;
            }
        }
        self.charge(&t.framework_id, t.info.resources);
    }

    /// Undoes [`Master::hold_task`] for a task that became terminal or left the table.
    fn release_task(&mut self, t: &TaskEntry) {
        if let Some(a) = self.agents.get_mut(&t.info.agent_id) {
            a.used -= t.info.resources;
            for (role, r) in &t.reserved {
                sub_pool(&mut a.reserved_used, role, *r);
            }
        }
        self.discharge(&t.framework_id, t.info.resources);
    }

    /// Sets (or lengthens) the refuse filter of `fid` on `aid` to `until`.
    pub(super) fn set_filter(&mut self, fid: &FrameworkId, aid: &AgentId, until: Instant) {
        let Some(seq) = self.frameworks.get(fid).map(|f| f.seq) else {
            return;
        };
        if !self.agents.contains_key(aid) {
            return;
        }
        let key = (fid.clone(), aid.clone());
        if let Some(old) = self.filters.get(&key).copied() {
            if old >= until {
                return;
            }
            self.filter_expiry.remove(&(old, fid.clone(), aid.clone()));
        }
        self.filters.insert(key, until);
        self.filter_expiry.insert((until, fid.clone(), aid.clone()));
        if let Some(a) = self.agents.get_mut(aid) {
            match a.refused.binary_search_by_key(&seq, |(s, _)| *s) {
                Ok(i) => a.refused[i].1 = until,
                Err(i) => a.refused.insert(i, (seq, until)),
            }
        }
    }

    /// Removes the refuse filter of `fid` on `aid`, if any.
    fn clear_filter(&mut self, fid: &FrameworkId, aid: &AgentId) {
        let Some(until) = self.filters.remove(&(fid.clone(), aid.clone())) else {
            return;
        };
        self.filter_expiry
            .remove(&(until, fid.clone(), aid.clone()));
        let seq = self.frameworks.get(fid).map(|f| f.seq);
        if let (Some(seq), Some(a)) = (seq, self.agents.get_mut(aid)) {
            if let Ok(i) = a.refused.binary_search_by_key(&seq, |(s, _)| *s) {
                a.refused.remove(i);
            }
        }
    }

    /// Removes every refuse filter of a framework (revive, teardown).
    pub(super) fn clear_framework_filters(&mut self, fid: &FrameworkId) {
        let agents: Vec<AgentId> = self
            .filters
            .range((fid.clone(), AgentId(String::new()))..)
            .take_while(|((f, _), _)| f == fid)
            .map(|((_, a), _)| a.clone())
            .collect();
        for a in agents {
            self.clear_filter(fid, &a);
        }
    }

    /// Drops the filters that have expired by `now`.
    fn prune_filters(&mut self, now: Instant) {
        while let Some((until, f, a)) = self.filter_expiry.first().cloned() {
            if until > now {
                break;
            }
            self.clear_filter(&f, &a);
        }
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
            self.end_task(
                &key,
                aid,
                TaskState::Lost,
                Reason::AgentLost,
                format!("agent {aid} did not re-register within {secs} s"),
            );
        }
        self.filters.retain(|(_, a), _| a != aid);
        self.filter_expiry.retain(|(_, _, a)| a != aid);
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
        self.clear_framework_filters(fid);
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
    ///
    /// The snapshot borrows the books (no ids, filters or tasks are copied) and lists only
    /// connected agents with something allocatable, so a round costs O(agents + frameworks)
    /// to build plus what the policy does; framework allocations and the per-agent refuse
    /// index are kept up to date as events happen, not recomputed here.
    fn allocate(&mut self) {
        let now = self.now;
        self.prune_filters(now);
        let min = self.cfg.min_allocatable;
        let proposals = {
            let mut total = Resources::ZERO;
            let mut agents: Vec<AgentView<'_>> = Vec::new();
            for a in self.agents.values().filter(|a| a.is_connected()) {
                total += a.total;
                let available = a.unreserved_free();
                let reserved: Vec<(&str, Resources)> = a
                    .reservations
                    .iter()
                    .map(|(r, _)| (r.as_str(), a.reserved_free(r)))
                    .filter(|(_, r)| crate::allocator::is_allocatable(r, &min))
                    .collect();
                if reserved.is_empty() && !crate::allocator::is_allocatable(&available, &min) {
                    continue;
                }
                agents.push(AgentView {
                    id: &a.id,
                    seq: a.seq,
                    hostname: &a.hostname,
                    total: a.total,
                    available,
                    reserved,
                    refused: &a.refused,
                    attributes: &a.attributes,
                });
            }
            agents.sort_by_key(|a| a.seq);
            let mut frameworks: Vec<FrameworkView<'_>> = self
                .frameworks
                .values()
                .map(|f| FrameworkView {
                    id: &f.id,
                    seq: f.seq,
                    role: &f.info.role,
                    priority: f.info.priority,
                    allocated: self.fw_alloc.get(&f.id).copied().unwrap_or_default(),
                    eligible: f.is_connected() && !f.suppressed,
                })
                .collect();
            frameworks.sort_by_key(|f| f.seq);
            if agents.is_empty() || !frameworks.iter().any(|f| f.eligible) {
                return;
            }
            let snapshot = Snapshot {
                total,
                agents,
                frameworks,
                roles: &self.cfg.roles,
                min_allocatable: min,
            };
            self.allocator.allocate(&snapshot, now)
        };
        // Offers by framework seq, sent in subscription order.
        let mut batches: BTreeMap<u64, (FrameworkId, Vec<Offer>)> = BTreeMap::new();
        for p in proposals {
            let framework = self
                .frameworks
                .get(&p.framework_id)
                .filter(|f| f.is_connected() && !f.suppressed);
            let eligible = framework.is_some();
            let seq = framework.map(|f| f.seq).unwrap_or_default();
            let role_ok = match &p.reserved_for {
                None => true,
                Some(r) => framework.is_some_and(|f| f.info.role == *r),
            };
            let agent = self.agents.get(&p.agent_id);
            // The per-agent index mirrors `filters` (checked by `check_invariants`).
            let filtered = agent.is_some_and(|a| {
                a.refused
                    .binary_search_by_key(&seq, |(s, _)| *s)
                    .is_ok_and(|i| a.refused[i].1 > now)
            });
            let fits = agent.is_some_and(|a| {
                let pool = match &p.reserved_for {
                    None => a.unreserved_free(),
                    Some(r) => a.reserved_free(r),
                };
                a.is_connected()
                    && pool.contains(&p.resources)
                    && crate::allocator::is_allocatable(&p.resources, &min)
            });
            let within_limit = framework.is_none_or(|f| {
                self.cfg
                    .roles
                    .get(&f.info.role)
                    .and_then(|spec| spec.limit)
                    .is_none_or(|limit| {
                        limit.contains(&(self.role_allocated(&f.info.role) + p.resources))
                    })
            });
            if !eligible || !role_ok || filtered || !fits || !within_limit {
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
            if let Some(r) = &p.reserved_for {
                *a.reserved_offered.entry(r.clone()).or_default() += p.resources;
            }
            let offer = Offer {
                id: id.clone(),
                framework_id: p.framework_id.clone(),
                agent_id: a.id.clone(),
                hostname: a.hostname.clone(),
                resources: p.resources,
                reserved_for: p.reserved_for.clone(),
                attributes: a.attributes.clone(),
            };
            self.charge(&p.framework_id, p.resources);
            if let Some(deadline) = self.cfg.offer_timeout.and_then(|d| now.checked_add(d)) {
                self.offer_deadline.insert(id.clone(), deadline);
                self.offer_expiry.insert((deadline, id.clone()));
            }
            self.offers.insert(id, offer.clone());
            batches
                .entry(seq)
                .or_insert_with(|| (p.framework_id, Vec::new()))
                .1
                .push(offer);
        }
        for (_, (fid, offers)) in batches {
            self.send_to_framework(&fid, Message::Offers { offers });
        }
    }

    /// A role's allocation: the sum of its subscribed frameworks' allocations.
    pub fn role_allocated(&self, role: &str) -> Resources {
        self.frameworks
            .values()
            .filter(|f| f.info.role == role)
            .fold(Resources::ZERO, |t, f| {
                t + self.fw_alloc.get(&f.id).copied().unwrap_or_default()
            })
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
