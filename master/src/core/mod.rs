//! The master's sans-IO core: registry of agents and frameworks, offers, the task table and the
//! status-update relay, as one deterministic state machine.
//!
//! ```text
//!  driver ── Event (Connected / Message / Disconnected / BlobStored) ──▶ Master::handle
//!  driver ── handle_timeout(now) at poll_timeout() ───────────────────▶ Master::handle_timeout
//!  driver ◀── Action (Persist(ops) / Send { conn, msg } / Close { conn, reason }) ── Master::poll_action
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
//! Modelled on `quinn_proto::Connection`. The methods fall into four kinds: read-only views
//! (`agents`, `offers`, `check_invariants`, ...), inputs ([`Master::handle`],
//! [`Master::handle_timeout`]), outputs ([`Master::poll_action`], [`Master::poll_timeout`]),
//! and nothing else: there are no mutators outside the inputs.
//! - `now` never goes backwards across calls (a smaller `now` is treated as the latest one seen).
//! - After every [`Master::handle`] or [`Master::handle_timeout`], drain [`Master::poll_action`]
//!   until it returns `None`, and execute the actions in order (a `Close` follows the `Send`s
//!   queued before it on the same connection, which must be flushed first).
//! - Then ask [`Master::poll_timeout`] and call [`Master::handle_timeout`] once that instant has
//!   passed. Extra or early `handle_timeout` calls are harmless: only what is due runs.
//! - Every timed mechanism (agent removal, framework failover, offer expiry, heartbeat, the
//!   allocation round) is one entry of a single timer table; `poll_timeout` is its first entry,
//!   not a scan. What is due at once runs in that order, the allocation round last. Refuse
//!   filters are not timers: they lapse on their own and are pruned at the next round.
//! - Allocation is never run inside `handle`: anything that frees or adds resources sets the
//!   next allocation to "now", so `poll_timeout` returns an instant that has already passed and
//!   the driver should call `handle_timeout` straight away.
//! - Persist, then send: an [`Action::Persist`] carries registry changes
//!   ([`RegistryOp`](crate::registry::RegistryOp)) that must be durable before the driver
//!   executes **any** action queued after it (it may write them earlier, e.g. every change of
//!   a drained batch in one transaction ahead of the batch's sends; a crash can always fall
//!   between a write and the sends after it, and recovery copes with that). The core emits one
//!   ahead of each send that depends on it: a framework's record before `Subscribed`, its
//!   removal at teardown; an agent's record before `Registered` (with the tasks it reported
//!   that are adopted), its removal; a kill request before its `KillTask`; a task's removal
//!   from the books before the ack that lets its agent forget it and before a TASK_GONE it
//!   declares; a task's record before the offers that follow its launch, and its end before
//!   its resources are offered again. Two sends go ahead of the change they come with, so
//!   that the commit overlaps their way: a `RunTask` (a restart that loses the record adopts
//!   the task when its agent re-registers, and holds reconciliations of unknown tasks until
//!   every agent known at recovery is heard from), and a status update an agent reports,
//!   forwarded to its framework (agents resend unacknowledged updates, so a restart that loses
//!   the change hears the update again). A driver may execute the actions queued ahead of the
//!   first `Persist` while it writes, and these two sends queued after one too
//!   ([`Master::goes_ahead`]), keeping them behind a handshake or close held on their
//!   connection and an update behind a held update of its task. A driver that handles input
//!   while a write is in flight holds every other action until the changes queued before it
//!   are durable.
//!   A restarted core is built with [`Master::recover`] from what
//!   was persisted (see `recover`), and [`Master::check_registry`] compares a registry with
//!   the core.
//! - A `Close` action also detaches the connection inside the core at once; the `Disconnected`
//!   event the driver reports later for it (and any message still queued from it) is ignored.
//! - Blob streams and the `Hello` handshake belong to the driver: it reports a connection with
//!   `Connected` only after the handshake, and a validated upload with `BlobStored`.
//! - Identity comes with `Connected`: the principal read from the peer's verified certificate.
//!   The core binds frameworks to it, agent ids to agent names and blobs to their uploaders, and
//!   never trusts what a message says about its sender. Fetch permissions are a query
//!   ([`Master::may_fetch`]) the driver asks before serving a blob.
//!
//! Every bad input is answered, never dropped silently and never a panic: a role violation
//! closes the connection with a reason, an invalid call gets `Message::Error`, an invalid task
//! gets a terminal status update with a `Reason`.
//!
//! # Layout
//! - this module: the calling contract, configuration, events and actions, connections, the task
//!   table, and the plumbing the handlers share.
//! - `agent`: what agents send (registration with task reconciliation, status updates) and
//!   the agent life cycle (disconnect, removal).
//! - `scheduler`: what schedulers send (subscribe, accept, decline, kill, ...) and the
//!   framework life cycle (disconnect, teardown).
//! - `validate`: what a task in an accept must be (ids, paths, resources, its principal's
//!   blobs) before it is charged and launched.
//! - `ledger`: the books: offers, charges, resources held by tasks, and the `RefuseIndex` of
//!   refuse filters.
//! - `allocation`: the allocation round: snapshot, policy, re-validation, offers.
//! - `timer`: the one timer table behind `poll_timeout`.
//! - `recover`: [`Master::recover`], a core rebuilt from the registry after a restart, and
//!   [`Master::check_registry`].
//! - `drain`: an agent leaving on purpose (`AgentLeaving`).
//! - `audit`: [`Master::check_invariants`], the books recomputed from scratch.
//! - `views`: read-only accessors.
//! - `report`: [`StateReport`], the serializable picture of the books behind `/state`.
//! - `state`: the records those views return ([`AgentEntry`], [`FrameworkEntry`],
//!   [`TaskEntry`]).

mod agent;
mod allocation;
mod audit;
mod blob_gc;
mod drain;
mod executors;
mod ledger;
mod operator;
pub mod queries;
mod recover;
mod report;
mod scheduler;
mod state;
#[cfg(test)]
mod tests;
mod timer;
mod validate;
mod views;

pub use executors::ExecutorKey;
pub use operator::OperatorError;
pub use queries::{QueryError, QueryId, QueryResult};
pub use report::{
    AgentReport, FrameworkReport, OfferReport, ResourcesReport, RoleReport, StateReport, TaskReport,
};
pub use state::{AgentEntry, ExecutorEntry, FilterMap, FrameworkEntry, TaskEntry, TaskTimes};

use crate::allocator::{Allocator, Roles};
use crate::registry::RegistryOp;
use ledger::Ledger;
use proto::identity::PeerId;
use proto::{
    AgentId, BlobKind, Digest, FrameworkId, Message, Reason, Resources, Role, TaskId, TaskState,
    TaskStatus,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};
use timer::{Timer, TimerTable};

/// Why a task of an accept was rejected.
type TaskRejection = (Reason, String);

/// Names one peer connection; chosen by the driver, opaque to the core.
pub type ConnId = u64;

/// How many removed agent and framework ids the master remembers to refuse them (the registry
/// keeps as many tombstones, so the memory survives a restart).
const REMEMBERED_REMOVED: usize = crate::registry::REMOVED_IDS_KEPT;

/// Tunables of the master core.
#[derive(Clone, Debug, PartialEq)]
pub struct MasterConfig {
    /// Prefix of every id the master mints: `{run_id}-A{n}`, `{run_id}-F{n}`, `{run_id}-O{n}`.
    /// Should differ between master runs so ids never collide across restarts.
    pub run_id: String,
    /// Period of the regular allocation round (zero: only event-driven rounds).
    pub allocation_interval: Duration,
    /// How long a disconnected agent may take to re-register: meanwhile its tasks are
    /// TASK_UNREACHABLE (still charged, probably still running); past it they are TASK_GONE and
    /// the agent is removed. Mesos's default, 10 minutes, rides out the link losses of edge
    /// sites.
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
    /// Secret key of the keyed hash that makes framework ids unguessable (`{run_id}-F{n}-` and
    /// 128 bits derived from it). The driver draws it at random; the core draws no randomness.
    pub id_key: [u8; 32],
    /// Most frameworks one principal may have registered at once.
    pub max_frameworks_per_principal: usize,
    /// Longest failover timeout honoured (a framework asking more gets this much).
    pub max_failover: Duration,
    /// Who may register frameworks in which roles and reserve resources for which roles.
    pub acls: crate::acl::Acls,
    /// Delete a stored blob no live task or executor names and nobody used for this long
    /// (`None`, the default here: keep every blob). The master's driver options turn it on.
    pub blob_gc_grace: Option<Duration>,
}

impl Default for MasterConfig {
    /// Mesos-like defaults: allocate every second (and as soon as resources free up), 10 min to
    /// re-register, heartbeat every 5 s, minimum offer <0.01 cpus, 32 MiB>, refuse at most one
    /// hour, keep 1000 completed tasks, no roles configured (weight 1.0, no quota), no offer
    /// timeout.
    fn default() -> Self {
        MasterConfig {
            run_id: "master".to_owned(),
            allocation_interval: Duration::from_secs(1),
            agent_reregister_timeout: Duration::from_secs(600),
            heartbeat_interval: Duration::from_secs(5),
            min_allocatable: Resources::new(10, 32 * proto::resources::MIB, 0),
            max_refuse: Duration::from_secs(3600),
            completed_tasks_limit: 1000,
            roles: Roles::new(),
            offer_timeout: None,
            id_key: [0; 32],
            max_frameworks_per_principal: 100,
            max_failover: Duration::from_secs(7 * 24 * 3600),
            acls: crate::acl::Acls::default(),
            blob_gc_grace: None,
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
        /// What the peer said it is in its `Hello` (the driver has checked that its certificate
        /// allows it).
        role: Role,
        /// Its address, for logs.
        peer: String,
        /// Who it is, from its verified certificate: frameworks are bound to it, agent ids to
        /// its name.
        principal: PeerId,
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
    /// An uploaded blob was validated and stored; tasks of its uploader may now name it.
    BlobStored {
        /// The blob.
        digest: Digest,
        /// What it was uploaded as.
        kind: BlobKind,
        /// The principal that uploaded it (`None` for a blob found in the store at start,
        /// which nobody may use until someone uploads it again): blobs belong to the principals
        /// that uploaded them, so one tenant can neither run nor fetch another's.
        owner: Option<String>,
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
    /// Make these registry changes durable, as one atomic batch, before executing any action
    /// queued after this one (persist, then send). Consecutive changes come in one `Persist`.
    Persist(Vec<RegistryOp>),
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
/// A stored blob as the core knows it.
#[derive(Clone, Debug)]
struct BlobEntry {
    kind: BlobKind,
    /// Principals that uploaded it: only their frameworks may name it in tasks or fetch it.
    owners: BTreeSet<String>,
    /// Its last upload or launch of a task naming it (see `blob_gc`).
    last_used: Instant,
}

#[derive(Clone, Debug)]
struct Conn {
    role: Role,
    peer: String,
    principal: PeerId,
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
    /// Its configuration.
    cfg: MasterConfig,
    /// The allocation policy.
    allocator: Box<dyn Allocator>,
    /// The latest `now` seen.
    now: Instant,
    /// Live connections.
    conns: BTreeMap<ConnId, Conn>,
    /// Registered agents (connected or waiting to re-register).
    agents: BTreeMap<AgentId, AgentEntry>,
    /// Subscribed frameworks (connected or within their failover timeout).
    frameworks: BTreeMap<FrameworkId, FrameworkEntry>,
    /// Live tasks: non-terminal, or terminal but not yet acknowledged.
    tasks: BTreeMap<(FrameworkId, TaskId), TaskEntry>,
    /// Executors placed on agents, each charged its own resources once.
    executors: BTreeMap<ExecutorKey, ExecutorEntry>,
    /// The most recent tasks that left the live table, for reconciliation.
    completed: VecDeque<TaskEntry>,
    /// Offers, charges and refuse filters.
    ledger: Ledger,
    /// Every deadline the core has.
    timers: TimerTable,
    /// Stored blobs: what each may serve as, and who uploaded it.
    blobs: BTreeMap<Digest, BlobEntry>,
    /// Agent ids removed recently, refused if they come back.
    removed_agents: BoundedSet<AgentId>,
    /// Disconnected agents by the certificate name that registered them: those an agent
    /// registering afresh under that name replaces, found without a scan of every agent.
    disconnected: BTreeMap<String, BTreeSet<AgentId>>,
    /// Framework ids torn down recently, refused if they come back.
    removed_frameworks: BoundedSet<FrameworkId>,
    /// Counters behind minted ids and registration order.
    next_agent: u64,
    next_framework: u64,
    next_offer: u64,
    next_seq: u64,
    /// Actions not yet polled.
    actions: VecDeque<Action>,
    /// Blobs forgotten by the blob GC, for the driver to delete.
    blob_gc_due: VecDeque<Digest>,
    /// Reads asked of agents and not yet answered (see `queries`).
    queries: queries::Queries,
    /// Agents recovered from the registry that have neither registered with this master nor
    /// been removed since. A launch is sent ahead of its record, so a task this master does not
    /// know may still run on one of them: until none is left, reconciliation does not call an
    /// unknown task lost.
    unheard: BTreeSet<AgentId>,
    /// Reconciliations of tasks the master does not know, answered once `unheard` is empty:
    /// the connection that asked, its framework, the task.
    deferred_reconciles: Vec<(ConnId, FrameworkId, TaskId)>,
    /// How many of `deferred_reconciles` each framework asked, so one cannot take them all.
    deferred_per_framework: BTreeMap<FrameworkId, usize>,
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
        let mut timers = TimerTable::default();
        timers.set_or_stop(Timer::Allocation, after(now, cfg.allocation_interval));
        timers.set_or_stop(Timer::Heartbeat, after(now, cfg.heartbeat_interval));
        Master {
            cfg,
            allocator,
            now,
            conns: BTreeMap::new(),
            agents: BTreeMap::new(),
            frameworks: BTreeMap::new(),
            tasks: BTreeMap::new(),
            completed: VecDeque::new(),
            executors: BTreeMap::new(),
            ledger: Ledger::default(),
            timers,
            blobs: BTreeMap::new(),
            removed_agents: BoundedSet::new(),
            disconnected: BTreeMap::new(),
            removed_frameworks: BoundedSet::new(),
            next_agent: 0,
            next_framework: 0,
            next_offer: 0,
            next_seq: 0,
            actions: VecDeque::new(),
            blob_gc_due: VecDeque::new(),
            queries: queries::Queries::default(),
            unheard: BTreeSet::new(),
            deferred_reconciles: Vec::new(),
            deferred_per_framework: BTreeMap::new(),
        }
    }

    // ----- the calling contract -----

    /// Feeds one event; drain [`Master::poll_action`] afterwards.
    pub fn handle(&mut self, now: Instant, ev: Event) {
        self.advance(now);
        match ev {
            Event::Connected {
                conn,
                role,
                peer,
                principal,
            } => {
                if self.conns.contains_key(&conn) {
                    tracing::warn!(conn, "connection id reused before Disconnected");
                    self.detach(conn);
                }
                tracing::debug!(conn, ?role, %peer, %principal, "connected");
                self.conns.insert(
                    conn,
                    Conn {
                        role,
                        peer,
                        principal,
                        bound: None,
                    },
                );
            }
            Event::Message { conn, msg } => {
                if let Some(Binding::Agent(aid)) =
                    self.conns.get(&conn).and_then(|c| c.bound.as_ref())
                {
                    if let Some(a) = self.agents.get_mut(aid) {
                        a.last_seen = Some(now);
                    }
                }
                self.on_message(conn, msg)
            }
            Event::Disconnected { conn } => self.detach(conn),
            Event::BlobStored {
                digest,
                kind,
                owner,
            } => {
                let entry = self.blobs.entry(digest).or_insert(BlobEntry {
                    kind,
                    owners: BTreeSet::new(),
                    last_used: self.now,
                });
                entry.last_used = self.now;
                // A module validated once stays a module even if re-uploaded as a plain file.
                if kind == BlobKind::Module {
                    entry.kind = BlobKind::Module;
                }
                match owner {
                    Some(owner) => {
                        entry.owners.insert(owner);
                    }
                    None => {
                        // Found in the store at start: after a restart, the principals whose
                        // recovered tasks name it uploaded it (their accepts were checked).
                        let owners = self.recovered_blob_owners(&digest);
                        if let Some(entry) = self.blobs.get_mut(&digest) {
                            entry.owners.extend(owners);
                        }
                    }
                }
                self.arm_blob_gc();
            }
        }
    }

    /// Runs whatever is due at `now`: agent removals, framework failovers, offer expiries,
    /// heartbeats and the allocation round, in that order. Harmless when nothing is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        let now = self.now;
        let mut allocate = false;
        for (_, timer) in self.timers.take_due(now) {
            match timer {
                Timer::AgentRemoval(id) => self.remove_agent(&id),
                Timer::FrameworkFailover(id) => {
                    tracing::info!(framework = %id, "failover timeout passed; tearing down");
                    self.teardown(&id);
                }
                Timer::OfferExpiry(n) => self.expire_offer(n),
                Timer::Heartbeat => {
                    let conns: Vec<ConnId> =
                        self.frameworks.values().filter_map(|f| f.conn).collect();
                    for conn in conns {
                        self.send(conn, Message::Heartbeat);
                    }
                    let next = after(now, self.cfg.heartbeat_interval);
                    self.timers.set_or_stop(Timer::Heartbeat, next);
                }
                Timer::Allocation => allocate = true,
                Timer::BlobGc => self.collect_blobs(),
                Timer::Query(id) => self.query_timed_out(id),
            }
        }
        // What ran above may have brought the round forward to now.
        if allocate
            || self
                .timers
                .get(&Timer::Allocation)
                .is_some_and(|t| t <= now)
        {
            let next = after(now, self.cfg.allocation_interval);
            self.timers.set_or_stop(Timer::Allocation, next);
            self.allocate();
        }
    }

    /// The earliest instant at which [`Master::handle_timeout`] has work, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// The next action to execute, in order; `None` once drained.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Whether actions wait to be polled (a driver's executing some may have queued more).
    pub fn has_actions(&self) -> bool {
        !self.actions.is_empty()
    }

    /// Whether a send depends on no registry change, so that a driver may make it ahead of
    /// `Persist`s queued before it (keeping it behind a handshake or close held on its
    /// connection, and an update behind a held update of its task): a `RunTask`, whose record
    /// follows it by design (see `launch`: a restart that loses the record adopts the task
    /// its agent reports), and an agent's update forwarded to its framework (it carries the
    /// agent's uuid: the agent resends it until the framework acknowledges it, and that
    /// acknowledgement reaches the agent only once every change before it is durable).
    pub fn goes_ahead(msg: &Message) -> bool {
        match msg {
            Message::RunTask { .. } => true,
            Message::Update { status } => status.uuid.is_some(),
            _ => false,
        }
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

    /// Queues a registry change; it joins the `Persist` at the back of the queue if there is
    /// one, so the driver writes consecutive changes in one transaction.
    fn persist(&mut self, op: RegistryOp) {
        if let Some(Action::Persist(ops)) = self.actions.back_mut() {
            ops.push(op);
        } else {
            self.actions.push_back(Action::Persist(vec![op]));
        }
    }

    /// Persists that a task left the books.
    fn persist_task_removed(&mut self, key: &(FrameworkId, TaskId)) {
        self.persist(RegistryOp::RemoveTask {
            framework_id: key.0.clone(),
            task_id: key.1.clone(),
        });
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
        self.fail_queries_on(conn);
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

    /// Brings the allocation round forward to now (it runs at the next `handle_timeout`).
    fn schedule_allocation(&mut self) {
        self.timers.set_earliest(Timer::Allocation, self.now);
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
            let id = FrameworkId(format!(
                "{}-F{}-{}",
                self.cfg.run_id,
                self.next_framework,
                self.id_secret(b'F', self.next_framework)
            ));
            if !self.frameworks.contains_key(&id) && !self.removed_frameworks.contains(&id) {
                return id;
            }
        }
    }

    /// 128 bits of a keyed SHA-256 of `(kind, n)`, in hex: unguessable without `id_key`.
    fn id_secret(&self, kind: u8, n: u64) -> String {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(self.cfg.id_key);
        h.update([kind]);
        h.update(n.to_be_bytes());
        hex::encode(&h.finalize()[..16])
    }

    /// Who is on `conn`, per its certificate.
    fn principal(&self, conn: ConnId) -> Option<&PeerId> {
        self.conns.get(&conn).map(|c| &c.principal)
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
        // Durable before the framework hears of the end, so a restart cannot bring it back.
        if self.tasks.contains_key(key) {
            self.persist_task_removed(key);
        }
        if self.set_status(key, status.clone()) {
            self.send_to_framework(&key.0, Message::Update { status });
        }
        self.drop_task(key);
    }

    /// Records a new status for a live task; a task already terminal keeps its terminal status.
    /// Frees the task's resources when it becomes terminal. Returns true if the status changed.
    fn set_status(&mut self, key: &(FrameworkId, TaskId), status: TaskStatus) -> bool {
        let Some(t) = self.tasks.get_mut(key) else {
            return false;
        };
        if t.is_terminal() {
            if t.adopted_ended && status.state.is_terminal() {
                // Adopted ended: the agent's update of that end is the one its framework hears
                // and acknowledges. It replaces the registry's end too (the status the master
                // made at the adoption), so that a restart before the acknowledgement answers
                // a reconciliation with the agent's end and its output's tail.
                let end = RegistryOp::EndTask {
                    framework_id: key.0.clone(),
                    task_id: key.1.clone(),
                    status: status.clone(),
                };
                t.status = status;
                t.adopted_ended = false;
                self.persist(end);
            }
            return false;
        }
        let terminal = status.state.is_terminal();
        if status.state == TaskState::Running && t.times.started.is_none() {
            t.times.started = Some(self.now);
        }
        if terminal {
            t.times.ended = Some(self.now);
        }
        if status.state != TaskState::Unreachable {
            t.before_unreachable = None;
            t.recovered = false;
            t.unreachable_told = false;
        } else {
            // Unreachable again: any earlier notice is stale.
            t.restore_notice = None;
        }
        t.status = status;
        if terminal {
            let t = t.clone();
            // Durable before the freed resources can be offered: a master recovered after
            // this point must not charge the task along with the one its resources go to.
            self.persist(RegistryOp::EndTask {
                framework_id: key.0.clone(),
                task_id: key.1.clone(),
                status: t.status.clone(),
            });
            self.release_task(&t);
            self.schedule_allocation();
        }
        true
    }

    /// Moves a terminal task out of the live table into the bounded completed list, and out of
    /// the registry (persisted before whatever is sent next, such as the ack it allows).
    fn complete_task(&mut self, key: &(FrameworkId, TaskId)) {
        if self.tasks.contains_key(key) {
            self.persist_task_removed(key);
        }
        self.drop_task(key);
    }

    /// [`Master::complete_task`] without the registry change (persisted already).
    fn drop_task(&mut self, key: &(FrameworkId, TaskId)) {
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
                    | Message::TeardownFramework { .. }
                    | Message::FrameworkMessage { .. }
                    | Message::ShutdownExecutor { .. }
            ),
            Role::Agent => matches!(
                msg,
                Message::Register { .. }
                    | Message::AgentLeaving { .. }
                    | Message::StatusUpdate { .. }
                    | Message::ExecutorMessage { .. }
                    | Message::ExecutorExited { .. }
                    | Message::AgentAnswer { .. }
            ),
            // A standby only fetches blobs; the driver never hands it to the core.
            Role::Standby => false,
        };
        if !allowed {
            let role = match role {
                Role::Scheduler => "scheduler",
                Role::Agent => "agent",
                Role::Standby => "standby master",
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
                executors,
            } => self.on_register(conn, agent_id, info, running, executors),
            Message::ExecutorMessage {
                framework_id,
                executor_id,
                data,
            } => self.on_executor_message(conn, framework_id, executor_id, data),
            Message::ExecutorExited {
                framework_id,
                executor_id,
                failed,
                message,
                ..
            } => self.on_executor_exited(conn, framework_id, executor_id, failed, message),
            Message::StatusUpdate { status } => self.on_status_update(conn, status),
            Message::AgentLeaving { keep_tasks } => self.on_agent_leaving(conn, keep_tasks),
            Message::AgentAnswer { request_id, answer } => {
                self.on_agent_answer(conn, request_id, answer)
            }
            Message::TeardownFramework { framework_id } => {
                self.on_operator_teardown(conn, framework_id)
            }
            Message::Reconcile { task_ids }
                if self.binding(conn).is_none()
                    && self
                        .principal(conn)
                        .is_some_and(|p| p.kind == proto::identity::PeerKind::Operator) =>
            {
                self.on_operator_reconcile(conn, task_ids)
            }
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
