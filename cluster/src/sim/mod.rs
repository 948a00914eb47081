//! A whole cluster of sans-IO cores in virtual time: the real master core and allocator, real
//! agent cores, simulated frameworks and guests and a simulated network, driven
//! deterministically from a seed (the shape of quinn-proto's test `Pair` and raft-rs's
//! `Network`). No sockets, no wasm, no clock: [`Sim::now`] moves only when the simulation steps.
//!
//! Each connection is a reliable, ordered pipe with latency (what one QUIC stream gives); the
//! faults are the ones QUIC shows to its users, set per agent link:
//!
//! - [`Sim::drop`]: datagram loss, which on a QUIC stream costs retransmission delays (and holds
//!   up what follows), never messages;
//! - [`Sim::delay`]: added latency;
//! - [`Sim::isolate`]: nothing gets through, and neither end is told: each notices only after the
//!   idle timeout, and the agent's redials fail until [`Sim::recover`];
//! - [`Sim::cut`]: the link drops, in-flight messages are lost, the agent notices at once, the
//!   master only after the idle timeout (so for a while it holds a half-open connection);
//! - [`Sim::recover`]: clears the link's faults (an isolated link that neither end gave up on
//!   carries on, its held messages delivered);
//! - [`Sim::restart_agent`]: the agent's memory and guests are gone and it registers afresh;
//! - [`Sim::crash_agent_keep_guests`]: the agent process is killed (`kill -9`) while its guests
//!   keep running in their runtime process; after [`SimOptions::agent_downtime`] it comes back
//!   from its last checkpoint, replays what the runtime saw meanwhile and reattaches;
//! - [`Sim::crash_agent_and_runtime`]: the same, but the runtime dies too: the guests are gone
//!   and the recovered agent reports each launched task failed (`RuntimeLost`) once;
//! - [`Sim::restart_master`]: the master process is killed and restarted from its durable
//!   registry (every `Action::Persist` is applied to a [`MemRegistry`] when the core emits
//!   it); every connection dies without a word, so each peer notices after its idle timeout,
//!   and what was in flight is lost;
//! - [`Sim::cut_framework`]: a framework's link drops as an agent's does under [`Sim::cut`]; its
//!   scheduler core re-subscribes under the same id after the redial delay, and sends the calls
//!   made meanwhile then;
//! - [`Sim::jump`]: the clock moves forward at once;
//! - [`Sim::drop_framework`], [`Sim::delay_framework`], [`Sim::recover_framework`]: loss and
//!   latency on a framework's link, as on an agent's.
//!
//! Drive it with [`Sim::step`] (everything due at the next moment anything happens),
//! [`Sim::run_until`], and the bounded [`Sim::drive_until`] (false on a livelock) and
//! [`Sim::drive_until_done`] (panics on one). After every step the master's invariants are
//! checked, and the registry is compared with the core ([`Master::check_registry`]), unless
//! [`SimOptions::check_invariants`] is off.
//!
//! # Layout
//! - [`framework`]: the simulated framework: the SDK's real `SchedulerCore` (subscription,
//!   queued calls, acknowledgements, duplicate filtering) under a greedy policy (queue, offer
//!   packing). The exactly-once checks of the fault scenarios are thus checks of that core too.
//! - [`locality`]: the frameworks' delay-scheduling policy (the SDK's `sdk::delay` helper) for
//!   the data-locality workload.
//! - `faults`: the fault verbs.
//! - [`scenario`]: seeded schedules of those verbs (the [`scenario::Fault`] enum lists them).
//! - `agent`: a real agent core with simulated guests and its link state.
//! - `wire`: messages in flight and per-link faults.

mod agent;
mod faults;
pub mod framework;
pub mod locality;
pub mod scenario;
#[cfg(test)]
mod tests;
mod wire;

use self::agent::SimAgent;
use crate::Rng;
use ::agent::core::Event as AEvent;
pub use framework::{Launched, QueuedTask, SimFramework};
use master::allocator::drf::Drf;
use master::allocator::Allocator;
use master::core::{Action as MAction, ConnId, Event as MEvent, Master, MasterConfig};
use master::registry::{MemRegistry, Registry};
use proto::{AgentInfo, BlobKind, Digest, Message, Resources, Role, TaskId};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
pub use wire::LinkFaults;
use wire::Wire;

/// Who is at one end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Peer {
    Agent(usize),
    Framework(usize),
}

impl Peer {
    /// The identity its certificate would state: one per agent and per framework, the same
    /// across its reconnections.
    fn principal(self) -> proto::identity::PeerId {
        use proto::identity::{PeerId, PeerKind};
        match self {
            Peer::Agent(i) => PeerId::new(PeerKind::Agent, &format!("agent{i}")),
            Peer::Framework(i) => PeerId::new(PeerKind::Framework, &format!("framework{i}")),
        }
        .expect("valid names")
    }
}

/// The knobs of a simulation.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Seed of every random draw.
    pub seed: u64,
    /// The master core's tunables.
    pub master: MasterConfig,
    /// One-way latency range in ms, `[lo, hi)` (`lo` when empty).
    pub latency_ms: (u64, u64),
    /// How long either end takes to notice a silent connection.
    pub idle_timeout: Duration,
    /// How long an agent or a framework waits before redialling.
    pub redial: Duration,
    /// What a lost datagram costs a message (QUIC's retransmission timeout).
    pub retransmit: Duration,
    /// How long an agent takes to prepare a task (fetch and compile its module).
    pub prepare: Duration,
    /// Agents' status update retry interval.
    pub status_retry: Duration,
    /// Record every action in [`Sim::trace`] (a fingerprint for determinism checks).
    pub trace: bool,
    /// Check the master's invariants after every step (a test oracle; it costs time in long
    /// runs of large clusters), and that its registry matches the core.
    pub check_invariants: bool,
    /// How long a crashed agent process stays down before it is back (what its supervisor
    /// takes to restart it).
    pub agent_downtime: Duration,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            seed: 0,
            master: MasterConfig {
                run_id: "sim".into(),
                allocation_interval: Duration::from_millis(200),
                agent_reregister_timeout: Duration::from_secs(5),
                ..MasterConfig::default()
            },
            latency_ms: (1, 20),
            idle_timeout: Duration::from_secs(2),
            redial: Duration::from_millis(300),
            retransmit: Duration::from_millis(200),
            prepare: Duration::from_millis(10),
            status_retry: Duration::from_millis(500),
            trace: true,
            check_invariants: true,
            agent_downtime: Duration::from_millis(500),
        }
    }
}

/// The simulated cluster.
pub struct Sim {
    /// Virtual now.
    pub now: Instant,
    /// Virtual time zero.
    pub start: Instant,
    /// The master core.
    pub master: Master,
    /// The master's durable registry: every `Persist` the core emits is applied here at once
    /// (persist, then send), and [`Sim::restart_master`] recovers from it.
    pub registry: MemRegistry,
    /// The master's configuration, to restart it with.
    master_cfg: MasterConfig,
    /// How many times the master was restarted.
    pub master_restarts: u64,
    /// The registry's contents as of its `n`th batch, `(n, snapshot)`: the registry changes
    /// far less often than the core is checked against it.
    registry_view: Option<(u64, master::registry::Snapshot)>,
    agents: Vec<SimAgent>,
    /// Faults on each agent's link.
    faults: Vec<LinkFaults>,
    /// Loss and latency on each framework's link (its isolation is not modelled: see
    /// [`Sim::cut_framework`]).
    framework_faults: Vec<LinkFaults>,
    /// The frameworks.
    pub frameworks: Vec<SimFramework>,
    conns: BTreeMap<ConnId, Peer>,
    /// Connections the master still believes in but whose peer has gone (a cut link before the
    /// idle timeout), with when the master will notice.
    half_open: BTreeMap<ConnId, Instant>,
    /// Connections of isolated links, alive at both ends until the master's idle timeout (their
    /// messages held, not lost), with when the master will give up.
    silent: BTreeMap<ConnId, Instant>,
    wire: Wire,
    next_conn: ConnId,
    /// Randomness for latency, losses and fault schedules.
    pub rng: Rng,
    /// One-way latency range in ms.
    pub latency_ms: (u64, u64),
    /// How long the master takes to notice a silent connection.
    pub idle_timeout: Duration,
    /// How long an agent or a framework waits before redialling.
    pub redial: Duration,
    retransmit: Duration,
    prepare: Duration,
    status_retry: Duration,
    /// How long a crashed agent process stays down.
    pub agent_downtime: Duration,
    record: bool,
    check: bool,
    module: Digest,
    /// Actions processed so far (a cheap fingerprint of the run, for determinism checks).
    pub trace: Vec<String>,
}

impl Sim {
    /// A master with `agents` agents of `res` each (`agent1`, `agent2`, …) and `frameworks`
    /// frameworks in role `*`, all connecting, with the default options and DRF.
    pub fn new(seed: u64, agents: usize, res: Resources, frameworks: usize) -> Self {
        let opts = SimOptions {
            seed,
            ..SimOptions::default()
        };
        let mut sim = Sim::with_options(opts, Box::new(Drf::new()));
        for i in 0..agents {
            sim.add_agent(AgentInfo {
                datasets: Vec::new(),
                reservations: vec![],
                hostname: format!("agent{}", i + 1),
                resources: res,
                attributes: vec![],
            });
        }
        for f in 0..frameworks {
            sim.add_framework(&format!("fw{f}"), "*");
        }
        sim
    }

    /// An empty cluster: a master running `allocator`, no agents, no frameworks.
    pub fn with_options(opts: SimOptions, allocator: Box<dyn Allocator>) -> Self {
        let now = Instant::now();
        let module = Digest::of(b"simulated module");
        let master_cfg = opts.master.clone();
        let mut master = Master::new(opts.master, allocator, now);
        master.handle(
            now,
            MEvent::BlobStored {
                digest: module,
                kind: BlobKind::Module,
                owner: None,
            },
        );
        Sim {
            now,
            start: now,
            master,
            registry: MemRegistry::new(),
            master_cfg,
            master_restarts: 0,
            registry_view: None,
            agents: Vec::new(),
            faults: Vec::new(),
            framework_faults: Vec::new(),
            frameworks: Vec::new(),
            conns: BTreeMap::new(),
            half_open: BTreeMap::new(),
            silent: BTreeMap::new(),
            wire: Wire::default(),
            next_conn: 1,
            rng: Rng::new(opts.seed),
            latency_ms: opts.latency_ms,
            idle_timeout: opts.idle_timeout,
            redial: opts.redial,
            retransmit: opts.retransmit,
            prepare: opts.prepare,
            status_retry: opts.status_retry,
            agent_downtime: opts.agent_downtime,
            record: opts.trace,
            check: opts.check_invariants,
            module,
            trace: Vec::new(),
        }
    }

    /// Adds an agent registering as `info`; it dials the master at once. Returns its index.
    pub fn add_agent(&mut self, info: AgentInfo) -> usize {
        self.agents
            .push(SimAgent::new(info, self.status_retry, self.now));
        self.faults.push(LinkFaults::default());
        self.agents.len() - 1
    }

    /// Adds a framework named `name` in `role`; it connects and subscribes now. Returns its
    /// index.
    pub fn add_framework(&mut self, name: &str, role: &str) -> usize {
        let f = self.frameworks.len();
        // Each framework's principal uploads the simulated module.
        self.master.handle(
            self.now,
            MEvent::BlobStored {
                digest: self.module,
                kind: BlobKind::Module,
                owner: Some(Peer::Framework(f).principal().name),
            },
        );
        self.frameworks
            .push(SimFramework::new(name, role, self.module));
        self.framework_faults.push(LinkFaults::default());
        self.connect_framework(f);
        f
    }

    /// Queues `n` tasks for framework `f`, each running a time drawn from `ms` (milliseconds,
    /// `[lo, hi)`) in `res`.
    pub fn submit(&mut self, f: usize, n: usize, ms: (u64, u64), res: Resources) {
        for _ in 0..n {
            let run = Duration::from_millis(self.rng.range(ms.0, ms.1));
            self.submit_task(f, run, res);
        }
    }

    /// Queues one task for framework `f`, running `run` in `res`; returns its id.
    pub fn submit_task(&mut self, f: usize, run: Duration, res: Resources) -> TaskId {
        let fw = &mut self.frameworks[f];
        let id = TaskId(format!("f{f}-t{}", fw.pending.len() + fw.launched.len()));
        fw.pending.push_back(QueuedTask {
            id: id.clone(),
            run,
            resources: res,
            queued_at: self.now,
        });
        id
    }

    /// Queues task `id` of `job` for framework `f`'s delay scheduler (set
    /// [`SimFramework::locality`] first): it runs `run` in `res` on an agent holding all of
    /// `datasets` (which it prefers), longer elsewhere.
    pub fn submit_located(
        &mut self,
        f: usize,
        job: &str,
        id: &str,
        run: Duration,
        datasets: Vec<String>,
        res: Resources,
    ) {
        let now = self.now;
        let task = locality::LocalityTask {
            run,
            datasets,
            queued_at: now,
        };
        self.frameworks[f].submit_located(job, id, task, res);
        self.flush_framework(f);
    }

    /// Framework `f` asks the master to kill one of its tasks.
    pub fn kill(&mut self, f: usize, task: &str) {
        self.note(|| format!("kill {task}"));
        self.frameworks[f].kill(TaskId(task.to_owned()));
        self.flush_framework(f);
    }

    /// Tasks framework `f` has launched and not yet seen end, in id order.
    pub fn live_tasks(&self, f: usize) -> Vec<String> {
        self.frameworks[f]
            .live_tasks()
            .map(|t| t.0.clone())
            .collect()
    }

    /// Number of agents.
    pub fn agent_count(&self) -> usize {
        self.agents.len()
    }

    /// How many connections agent `i` has opened to the master (1 while its first one lives).
    pub fn agent_connects(&self, i: usize) -> u64 {
        self.agents[i].connects
    }

    /// Agent `i`'s core, to read what it still runs (say, across a partition).
    pub fn agent_core(&self, i: usize) -> &::agent::core::Agent {
        &self.agents[i].core
    }

    /// How many times the guest of task `task` was started, on every agent and across their
    /// restarts (a task must never run twice).
    pub fn guest_starts(&self, task: &TaskId) -> u32 {
        self.agents
            .iter()
            .flat_map(|a| a.starts.iter())
            .filter(|((_, t), _)| t == task)
            .map(|(_, n)| *n)
            .sum()
    }

    /// The faults set on agent `i`'s link.
    pub fn link_faults(&self, i: usize) -> LinkFaults {
        self.faults[i]
    }

    /// Hostname of agent `i`.
    pub fn agent_hostname(&self, i: usize) -> &str {
        self.agents[i].hostname()
    }

    /// When the next thing happens, if anything is left to happen.
    pub fn next_event_at(&self) -> Option<Instant> {
        [
            self.wire.next_at(),
            self.master.poll_timeout(),
            self.half_open.values().copied().min(),
            self.silent.values().copied().min(),
            self.agents.iter().filter_map(SimAgent::next_event_at).min(),
            self.frameworks
                .iter()
                .filter_map(|f| f.reconnect_at.into_iter().chain(f.lost_at).min())
                .min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Advances to the next thing that happens and processes everything due then; false when
    /// nothing is left to happen.
    pub fn step(&mut self) -> bool {
        let Some(at) = self.next_event_at() else {
            return false;
        };
        self.step_to(at);
        true
    }

    /// Processes everything due at `at` (the next event).
    fn step_to(&mut self, at: Instant) {
        self.now = self.now.max(at);
        let now = self.now;
        // Half-open and silent connections the master now gives up on.
        let noticed: Vec<ConnId> = self
            .half_open
            .iter()
            .chain(&self.silent)
            .filter(|(_, t)| **t <= now)
            .map(|(c, _)| *c)
            .collect();
        for conn in noticed {
            self.half_open.remove(&conn);
            self.silent.remove(&conn);
            self.wire.forget(conn);
            self.conns.remove(&conn);
            self.master.handle(now, MEvent::Disconnected { conn });
        }
        while let Some((conn, to_master, msg)) = self.wire.take_due(now) {
            self.deliver(conn, to_master, msg);
        }
        for i in 0..self.agents.len() {
            self.agents[i].guests(now);
            if self.agents[i].is_down() {
                if self.agents[i].back_at.is_some_and(|t| t <= now) {
                    self.note(|| format!("agent{i} back"));
                    self.agents[i].come_back(now);
                } else {
                    continue;
                }
            }
            if self.agents[i].lost_at.is_some_and(|t| t <= now) {
                if let Some(conn) = self.agents[i].conn {
                    self.wire.forget(conn);
                }
                self.agents[i].disconnected(now, self.redial);
            }
            if self.agents[i].reconnect_at.is_some_and(|t| t <= now) {
                if self.faults[i].isolated {
                    self.agents[i].reconnect_at = Some(now + self.redial);
                } else {
                    self.agents[i].reconnect_at = None;
                    let conn = self.open(Peer::Agent(i), Role::Agent);
                    self.agents[i].conn = Some(conn);
                    self.agents[i].connects += 1;
                    self.agents[i].core.handle(now, AEvent::Connected);
                }
            }
            self.agents[i].core.handle_timeout(now);
        }
        for f in 0..self.frameworks.len() {
            // A framework whose master died notices after its idle timeout.
            if self.frameworks[f].lost_at.is_some_and(|t| t <= now) {
                let redial_at = now + self.redial;
                self.frameworks[f].disconnected("idle timeout".into(), redial_at);
                self.flush_framework(f);
            }
            if self.frameworks[f].reconnect_at.is_some_and(|t| t <= now) {
                self.connect_framework(f);
            }
        }
        self.master.handle_timeout(now);
        self.pump();
        if self.check {
            if let Err(e) = self.master.check_invariants() {
                panic!("invariant broken at {:?}: {e}", now - self.start);
            }
            if let Err(e) = self.check_registry() {
                panic!(
                    "registry differs from the core at {:?}: {e}",
                    now - self.start
                );
            }
        }
    }

    /// Compares the registry with the master core ([`Master::check_registry`]).
    fn check_registry(&mut self) -> Result<(), String> {
        let batches = self.registry.batches();
        if self
            .registry_view
            .as_ref()
            .is_none_or(|(n, _)| *n != batches)
        {
            self.registry_view = Some((batches, self.registry.snapshot()));
        }
        let (_, snapshot) = self.registry_view.as_ref().expect("just set");
        self.master.check_registry(snapshot)
    }

    /// Runs until virtual time `t`.
    pub fn run_until(&mut self, t: Instant) {
        while let Some(at) = self.next_event_at().filter(|n| *n <= t) {
            self.step_to(at);
        }
        self.now = self.now.max(t);
    }

    /// Steps until `done` holds, at most `max_steps` times; returns whether it held (false on a
    /// livelock, or when nothing is left to happen).
    pub fn drive_until(&mut self, max_steps: usize, mut done: impl FnMut(&Sim) -> bool) -> bool {
        for _ in 0..max_steps {
            if done(self) {
                return true;
            }
            if !self.step() {
                break;
            }
        }
        done(self)
    }

    /// True when every framework has launched all its tasks and learnt how each ended.
    pub fn all_done(&self) -> bool {
        self.frameworks.iter().all(SimFramework::is_done)
    }

    /// Steps until [`Sim::all_done`], at most `max_steps` (a livelock fails loudly).
    pub fn drive_until_done(&mut self, max_steps: usize) {
        assert!(
            self.drive_until(max_steps, Sim::all_done),
            "not done after {max_steps} steps"
        );
    }

    fn note(&mut self, line: impl FnOnce() -> String) {
        if self.record {
            self.trace.push(line());
        }
    }

    fn open(&mut self, peer: Peer, role: Role) -> ConnId {
        let conn = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(conn, peer);
        self.master.handle(
            self.now,
            MEvent::Connected {
                conn,
                role,
                peer: format!("{peer:?}"),
                principal: peer.principal(),
            },
        );
        conn
    }

    /// Puts `msg` on the wire, with the latency of the link and its faults.
    fn send(&mut self, conn: ConnId, to_master: bool, msg: Message) {
        let mut latency =
            Duration::from_millis(self.rng.range(self.latency_ms.0, self.latency_ms.1));
        let faults = match self.conns.get(&conn) {
            Some(Peer::Agent(i)) => self.faults[*i],
            Some(Peer::Framework(f)) => self.framework_faults[*f],
            None => LinkFaults::default(),
        };
        latency += faults.delay;
        while self.rng.chance(faults.loss) {
            latency += self.retransmit;
        }
        self.wire.send(self.now, latency, conn, to_master, msg);
    }

    fn deliver(&mut self, conn: ConnId, to_master: bool, msg: Message) {
        let Some(peer) = self.conns.get(&conn).copied() else {
            return;
        };
        if self.half_open.contains_key(&conn) {
            return;
        }
        if to_master {
            self.master.handle(self.now, MEvent::Message { conn, msg });
            return;
        }
        match peer {
            Peer::Agent(i) => {
                if self.agents[i].conn == Some(conn) {
                    self.agents[i].core.handle(self.now, AEvent::Message(msg));
                }
            }
            Peer::Framework(f) => {
                if self.frameworks[f].conn == Some(conn) {
                    self.frameworks[f].receive(msg);
                    self.flush_framework(f);
                }
            }
        }
    }

    /// Framework `f` opens a new connection to the master; its core subscribes on it.
    fn connect_framework(&mut self, f: usize) {
        let conn = self.open(Peer::Framework(f), Role::Scheduler);
        self.frameworks[f].connected(conn);
        self.flush_framework(f);
    }

    /// Drains framework `f`'s scheduler core as its calling contract asks: every message it
    /// has to send goes on the wire, in order, then each event goes to the framework's policy,
    /// whose calls are drained the same way.
    fn flush_framework(&mut self, f: usize) {
        loop {
            while let Some(msg) = self.frameworks[f].poll_transmit() {
                match self.frameworks[f].conn {
                    Some(conn) => self.send(conn, true, msg),
                    None => self.frameworks[f].write_failed(msg),
                }
            }
            if !self.frameworks[f].handle_next_event(self.now) {
                break;
            }
        }
    }

    /// Executes every pending action of every core, until all are quiet.
    fn pump(&mut self) {
        loop {
            let mut busy = false;
            while let Some(action) = self.master.poll_action() {
                busy = true;
                match action {
                    MAction::Send { conn, msg } => {
                        self.note(|| format!("m->{conn} {}", msg.kind()));
                        if self.conns.contains_key(&conn) && !self.half_open.contains_key(&conn) {
                            self.send(conn, false, msg);
                        }
                    }
                    // Persist, then send: the write is done before anything queued after it.
                    MAction::Persist(ops) => {
                        self.note(|| format!("persist {}", ops.len()));
                        self.registry
                            .apply(&ops)
                            .expect("the in-memory registry cannot fail");
                    }
                    MAction::Close { conn, reason } => {
                        self.note(|| format!("close {conn}: {reason}"));
                        self.silent.remove(&conn);
                        match self.conns.remove(&conn) {
                            Some(Peer::Agent(i)) if self.agents[i].conn == Some(conn) => {
                                // The driver flushes what was sent before a close (such as
                                // the `Shutdown` to an agent removed while away): it arrives,
                                // now rather than after the link's latency.
                                if !self.faults[i].isolated {
                                    for msg in self.wire.flush_to_peer(conn) {
                                        self.agents[i].core.handle(self.now, AEvent::Message(msg));
                                    }
                                }
                                self.agents[i].disconnected(self.now, self.redial);
                            }
                            Some(Peer::Framework(f)) if self.frameworks[f].conn == Some(conn) => {
                                let redial_at = self.now + self.redial;
                                self.frameworks[f].disconnected(reason, redial_at);
                                self.flush_framework(f);
                            }
                            _ => {}
                        }
                        self.wire.forget(conn);
                    }
                }
            }
            for i in 0..self.agents.len() {
                // The driver writes a checkpoint whenever the core's state moved, before
                // carrying out the actions of the inputs that moved it.
                while let Some(action) = self.agents[i].checkpoint_then_poll(self.now) {
                    busy = true;
                    let Some(msg) = self.agents[i].execute(self.now, action, self.prepare) else {
                        continue;
                    };
                    self.note(|| format!("a{i} {}", msg.kind()));
                    if let Some(conn) = self.agents[i].conn {
                        self.send(conn, true, msg);
                    }
                }
            }
            if !busy {
                break;
            }
        }
    }
}
