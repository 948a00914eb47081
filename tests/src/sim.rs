//! A whole cluster of sans-IO cores in virtual time: the real master core and allocator, real
//! agent cores, simulated frameworks and a simulated network, driven deterministically from a
//! seed (the shape of quinn-proto's `Pair` and raft-rs's `Network`).
//!
//! Each connection is a reliable, ordered pipe with latency (what one QUIC stream gives); the
//! faults are the ones QUIC can't hide: a link cut (everything in flight is lost, the agent
//! notices at once, the master only after the idle timeout, so for a while it holds a half-open
//! connection), an agent restart (its memory is gone), and jumps of the clock. Guests are
//! simulated: a task runs for the number of milliseconds in its first argument.
//!
//! Fault verbs: [`Sim::cut`], [`Sim::restart_agent`], [`Sim::jump`]; drive with [`Sim::step`],
//! [`Sim::run_until`] and [`Sim::drive_until_done`] (bounded, so a livelock fails the test).

use agent::core::{Action as AAction, Agent, AgentConfig, Event as AEvent, Outcome, TaskKey};
use master::allocator::drf::Drf;
use master::core::{Action as MAction, ConnId, Event as MEvent, Master, MasterConfig};
use proto::{
    AgentInfo, BlobKind, Digest, Filters, FrameworkId, FrameworkInfo, Message, Reason, Resources,
    Role, TaskId, TaskInfo, TaskState, TaskStatus,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

pub use cli::sim::Rng;

/// Who is at one end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Peer {
    Agent(usize),
    Framework(usize),
}

#[derive(Debug)]
struct Packet {
    at: Instant,
    conn: ConnId,
    to_master: bool,
    msg: Message,
}

struct SimAgent {
    core: Agent,
    conn: Option<ConnId>,
    reconnect_at: Option<Instant>,
    /// Simulated guests: when each running one will exit.
    running: BTreeMap<TaskKey, Instant>,
    preparing: BTreeMap<TaskKey, (Instant, u64)>,
    restarts: u64,
    info: AgentInfo,
}

/// A simulated framework: a greedy scheduler with a queue of tasks to run.
pub struct SimFramework {
    conn: ConnId,
    /// Its id once subscribed.
    pub id: Option<FrameworkId>,
    /// Task ids still to launch, with their run time in ms and resources.
    pub pending: VecDeque<(String, u64, Resources)>,
    /// Every update delivered (after dropping duplicates by uuid).
    pub updates: Vec<TaskStatus>,
    seen: BTreeSet<(TaskId, String)>,
    /// Terminal state of each task, as the framework learnt it.
    pub terminal: BTreeMap<TaskId, TaskState>,
    /// Errors the master sent.
    pub errors: Vec<String>,
    launched: BTreeSet<String>,
}

/// The simulated cluster.
pub struct Sim {
    /// Virtual now.
    pub now: Instant,
    /// The master core.
    pub master: Master,
    agents: Vec<SimAgent>,
    /// The frameworks.
    pub frameworks: Vec<SimFramework>,
    conns: BTreeMap<ConnId, Peer>,
    /// Connections the master still believes in but whose peer has gone (a cut link before the
    /// idle timeout), with when the master will notice.
    half_open: BTreeMap<ConnId, Instant>,
    wire: VecDeque<Packet>,
    last_delivery: BTreeMap<(ConnId, bool), Instant>,
    next_conn: ConnId,
    /// Randomness for latency and fault schedules.
    pub rng: Rng,
    /// One-way latency range in ms.
    pub latency_ms: (u64, u64),
    /// How long the master takes to notice a silent connection.
    pub idle_timeout: Duration,
    /// How long an agent waits before redialling.
    pub redial: Duration,
    module: Digest,
    /// Actions processed so far (a cheap fingerprint of the run, for determinism checks).
    pub trace: Vec<String>,
}

impl Sim {
    /// A master with `agents` agents of `res` each and `frameworks` frameworks, all connected.
    pub fn new(seed: u64, agents: usize, res: Resources, frameworks: usize) -> Self {
        let now = Instant::now();
        let cfg = MasterConfig {
            run_id: "sim".into(),
            allocation_interval: Duration::from_millis(200),
            agent_reregister_timeout: Duration::from_secs(5),
            ..MasterConfig::default()
        };
        let mut sim = Sim {
            now,
            master: Master::new(cfg, Box::new(Drf::new()), now),
            agents: Vec::new(),
            frameworks: Vec::new(),
            conns: BTreeMap::new(),
            half_open: BTreeMap::new(),
            wire: VecDeque::new(),
            last_delivery: BTreeMap::new(),
            next_conn: 1,
            rng: Rng::new(seed),
            latency_ms: (1, 20),
            idle_timeout: Duration::from_secs(2),
            redial: Duration::from_millis(300),
            module: Digest::of(b"simulated module"),
            trace: Vec::new(),
        };
        sim.master.handle(
            now,
            MEvent::BlobStored {
                digest: sim.module,
                kind: BlobKind::Module,
            },
        );
        for i in 0..agents {
            let info = AgentInfo {
                reservations: vec![],
                hostname: format!("agent{}", i + 1),
                resources: res,
                attributes: vec![],
            };
            sim.agents.push(SimAgent {
                core: Agent::new(agent_cfg(&info, 0)),
                conn: None,
                reconnect_at: Some(now),
                running: BTreeMap::new(),
                preparing: BTreeMap::new(),
                restarts: 0,
                info,
            });
        }
        for f in 0..frameworks {
            let conn = sim.open(Peer::Framework(f), Role::Scheduler);
            sim.frameworks.push(SimFramework {
                conn,
                id: None,
                pending: VecDeque::new(),
                updates: Vec::new(),
                seen: BTreeSet::new(),
                terminal: BTreeMap::new(),
                errors: Vec::new(),
                launched: BTreeSet::new(),
            });
            sim.send(
                conn,
                true,
                Message::Subscribe {
                    framework: FrameworkInfo {
                        priority: 0,
                        name: format!("fw{f}"),
                        role: "*".into(),
                        principal: format!("fw{f}"),
                        id: None,
                        failover_timeout_ms: 600_000,
                    },
                },
            );
        }
        sim
    }

    /// Queues `n` tasks for framework `f`, each running `ms` milliseconds in `res`.
    pub fn submit(&mut self, f: usize, n: usize, ms: (u64, u64), res: Resources) {
        for _ in 0..n {
            let id = format!(
                "f{f}-t{}",
                self.frameworks[f].pending.len() + self.frameworks[f].launched.len()
            );
            let run = self.rng.range(ms.0, ms.1);
            self.frameworks[f].pending.push_back((id, run, res));
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
            },
        );
        conn
    }

    fn send(&mut self, conn: ConnId, to_master: bool, msg: Message) {
        let lat = Duration::from_millis(self.rng.range(self.latency_ms.0, self.latency_ms.1));
        let key = (conn, to_master);
        let at = (self.now + lat).max(self.last_delivery.get(&key).copied().unwrap_or(self.now));
        self.last_delivery.insert(key, at);
        self.wire.push_back(Packet {
            at,
            conn,
            to_master,
            msg,
        });
    }

    /// Framework `f` asks the master to kill one of its tasks.
    pub fn kill(&mut self, f: usize, task: &str) {
        let conn = self.frameworks[f].conn;
        self.trace.push(format!("kill {task}"));
        self.send(
            conn,
            true,
            Message::Kill {
                task_id: TaskId(task.to_owned()),
            },
        );
    }

    /// Tasks framework `f` has launched and not yet seen end, in id order.
    pub fn live_tasks(&self, f: usize) -> Vec<String> {
        let fw = &self.frameworks[f];
        fw.launched
            .iter()
            .filter(|t| !fw.terminal.contains_key(&TaskId((*t).clone())))
            .cloned()
            .collect()
    }

    /// Cuts agent `i`'s link: in-flight messages are lost, the agent notices now, the master
    /// after the idle timeout.
    pub fn cut(&mut self, i: usize) {
        if let Some(conn) = self.agents[i].conn.take() {
            self.trace.push(format!("cut agent{i} conn{conn}"));
            self.wire.retain(|p| p.conn != conn);
            self.half_open.insert(conn, self.now + self.idle_timeout);
            self.agents[i].core.handle(self.now, AEvent::Disconnected);
            self.agents[i].reconnect_at = Some(self.now + self.redial);
        }
    }

    /// Restarts agent `i`: its link drops and its memory and guests are gone; it registers
    /// afresh.
    pub fn restart_agent(&mut self, i: usize) {
        self.cut(i);
        let a = &mut self.agents[i];
        a.restarts += 1;
        a.core = Agent::new(agent_cfg(&a.info, a.restarts));
        a.running.clear();
        a.preparing.clear();
        self.trace.push(format!("restart agent{i}"));
    }

    /// Moves the clock forward by `d` at once (a paused VM, an NTP step on a monotonic
    /// source): every deadline that passed fires.
    pub fn jump(&mut self, d: Duration) {
        self.trace.push(format!("jump {d:?}"));
        self.now += d;
    }

    fn next_event_at(&self) -> Option<Instant> {
        let mut t: Vec<Instant> = Vec::new();
        t.extend(self.wire.iter().map(|p| p.at).min());
        t.extend(self.master.poll_timeout());
        t.extend(self.half_open.values().copied().min());
        for a in &self.agents {
            t.extend(a.core.poll_timeout());
            t.extend(a.reconnect_at);
            t.extend(a.running.values().copied().min());
            t.extend(a.preparing.values().map(|(t, _)| *t).min());
        }
        t.into_iter().min()
    }

    /// Advances to the next thing that happens and processes everything due then; false when
    /// nothing is left to happen.
    pub fn step(&mut self) -> bool {
        let Some(at) = self.next_event_at() else {
            return false;
        };
        self.now = self.now.max(at);
        let now = self.now;
        // Half-open connections the master now notices.
        let noticed: Vec<ConnId> = self
            .half_open
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(c, _)| *c)
            .collect();
        for conn in noticed {
            self.half_open.remove(&conn);
            self.conns.remove(&conn);
            self.master.handle(now, MEvent::Disconnected { conn });
        }
        // Deliveries.
        while let Some(i) = self.wire.iter().position(|p| p.at <= now) {
            let p = self.wire.remove(i).expect("index valid");
            self.deliver(p);
        }
        // Guests.
        for i in 0..self.agents.len() {
            let ready: Vec<(TaskKey, u64)> = self.agents[i]
                .preparing
                .iter()
                .filter(|(_, (t, _))| *t <= now)
                .map(|(k, (_, ms))| (k.clone(), *ms))
                .collect();
            for (key, ms) in ready {
                self.agents[i].preparing.remove(&key);
                self.agents[i].core.handle(
                    now,
                    AEvent::Prepared {
                        key: key.clone(),
                        result: Ok(()),
                    },
                );
                self.agents[i]
                    .running
                    .insert(key, now + Duration::from_millis(ms));
            }
            let done: Vec<TaskKey> = self.agents[i]
                .running
                .iter()
                .filter(|(_, t)| **t <= now)
                .map(|(k, _)| k.clone())
                .collect();
            for key in done {
                self.agents[i].running.remove(&key);
                self.agents[i].core.handle(
                    now,
                    AEvent::Finished {
                        key,
                        outcome: outcome(TaskState::Finished, Reason::ExitCode(0)),
                    },
                );
            }
            if self.agents[i].reconnect_at.is_some_and(|t| t <= now) {
                self.agents[i].reconnect_at = None;
                let conn = self.open(Peer::Agent(i), Role::Agent);
                self.agents[i].conn = Some(conn);
                self.agents[i].core.handle(now, AEvent::Connected);
            }
            self.agents[i].core.handle_timeout(now);
        }
        self.master.handle_timeout(now);
        self.pump();
        if let Err(e) = self.master.check_invariants() {
            panic!("invariant broken at {:?}: {e}", now);
        }
        true
    }

    fn deliver(&mut self, p: Packet) {
        let Some(peer) = self.conns.get(&p.conn).copied() else {
            return;
        };
        if self.half_open.contains_key(&p.conn) {
            return;
        }
        if p.to_master {
            self.master.handle(
                self.now,
                MEvent::Message {
                    conn: p.conn,
                    msg: p.msg,
                },
            );
            return;
        }
        match peer {
            Peer::Agent(i) => {
                if self.agents[i].conn == Some(p.conn) {
                    self.agents[i].core.handle(self.now, AEvent::Message(p.msg));
                }
            }
            Peer::Framework(f) => self.framework_receive(f, p.msg),
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
                        self.trace.push(format!("m->{conn} {}", msg.kind()));
                        if self.conns.contains_key(&conn) && !self.half_open.contains_key(&conn) {
                            self.send(conn, false, msg);
                        }
                    }
                    MAction::Close { conn, reason } => {
                        self.trace.push(format!("close {conn}: {reason}"));
                        if let Some(Peer::Agent(i)) = self.conns.remove(&conn) {
                            if self.agents[i].conn == Some(conn) {
                                self.agents[i].conn = None;
                                self.agents[i].core.handle(self.now, AEvent::Disconnected);
                                self.agents[i].reconnect_at = Some(self.now + self.redial);
                            }
                        }
                        self.wire.retain(|p| p.conn != conn);
                    }
                }
            }
            for i in 0..self.agents.len() {
                while let Some(action) = self.agents[i].core.poll_action() {
                    busy = true;
                    match action {
                        AAction::Send(msg) => {
                            self.trace.push(format!("a{i} {}", msg.kind()));
                            if let Some(conn) = self.agents[i].conn {
                                self.send(conn, true, msg);
                            }
                        }
                        AAction::Prepare { framework_id, task } => {
                            let ms: u64 = task
                                .args
                                .first()
                                .and_then(|a| a.parse().ok())
                                .unwrap_or(100);
                            let key = (framework_id, task.task_id);
                            let at = self.now + Duration::from_millis(10);
                            self.agents[i].preparing.insert(key, (at, ms));
                        }
                        AAction::Launch { framework_id, task } => {
                            let key = (framework_id, task.task_id);
                            self.agents[i]
                                .core
                                .handle(self.now, AEvent::Running { key });
                        }
                        AAction::Kill { key } => {
                            if self.agents[i].running.remove(&key).is_some() {
                                self.agents[i].core.handle(
                                    self.now,
                                    AEvent::Finished {
                                        key,
                                        outcome: outcome(TaskState::Killed, Reason::Killed),
                                    },
                                );
                            }
                        }
                    }
                }
            }
            if !busy {
                break;
            }
        }
    }

    fn framework_receive(&mut self, f: usize, msg: Message) {
        let conn = self.frameworks[f].conn;
        match msg {
            Message::Subscribed { framework_id, .. } => self.frameworks[f].id = Some(framework_id),
            Message::Offers { offers } => {
                for offer in offers {
                    let mut left = offer.resources;
                    let mut tasks = Vec::new();
                    let fw = &mut self.frameworks[f];
                    while let Some((id, ms, res)) = fw.pending.front().cloned() {
                        if !left.contains(&res) {
                            break;
                        }
                        fw.pending.pop_front();
                        fw.launched.insert(id.clone());
                        left -= res;
                        tasks.push(TaskInfo {
                            max_cpu_ms: None,
                            task_id: TaskId(id.clone()),
                            name: id,
                            agent_id: offer.agent_id.clone(),
                            resources: res,
                            module: self.module,
                            args: vec![ms.to_string()],
                            env: vec![],
                            files: vec![],
                            timeout_ms: None,
                        });
                    }
                    let filters = Filters {
                        refuse_seconds: 0.5,
                    };
                    let msg = Message::answer_offer(offer.id, tasks, filters);
                    self.send(conn, true, msg);
                }
            }
            Message::Update { status } => {
                if let (Some(agent_id), Some(uuid)) = (&status.agent_id, &status.uuid) {
                    self.send(
                        conn,
                        true,
                        Message::Acknowledge {
                            agent_id: agent_id.clone(),
                            task_id: status.task_id.clone(),
                            uuid: uuid.clone(),
                        },
                    );
                    if !self.frameworks[f]
                        .seen
                        .insert((status.task_id.clone(), uuid.0.clone()))
                    {
                        return;
                    }
                }
                let fw = &mut self.frameworks[f];
                if status.state.is_terminal() {
                    if let Some(prev) = fw.terminal.insert(status.task_id.clone(), status.state) {
                        fw.errors.push(format!(
                            "{} terminal twice: {} then {}",
                            status.task_id,
                            prev.name(),
                            status.state.name()
                        ));
                    }
                } else if fw.terminal.contains_key(&status.task_id) {
                    fw.errors.push(format!(
                        "{} went {} after ending",
                        status.task_id,
                        status.state.name()
                    ));
                }
                fw.updates.push(status);
            }
            Message::Error { message } => self.frameworks[f].errors.push(message),
            _ => {}
        }
    }

    /// Runs until virtual time `t`.
    pub fn run_until(&mut self, t: Instant) {
        while self.next_event_at().is_some_and(|n| n <= t) {
            self.step();
        }
        self.now = self.now.max(t);
    }

    /// True when every framework has launched all its tasks and learnt how each ended.
    pub fn all_done(&self) -> bool {
        self.frameworks.iter().all(|f| {
            f.pending.is_empty()
                && f.launched
                    .iter()
                    .all(|t| f.terminal.contains_key(&TaskId(t.clone())))
        })
    }

    /// Steps until [`Sim::all_done`], at most `max_steps` (a livelock fails loudly).
    pub fn drive_until_done(&mut self, max_steps: usize) {
        for _ in 0..max_steps {
            if self.all_done() {
                return;
            }
            if !self.step() {
                break;
            }
        }
        assert!(self.all_done(), "not done after {max_steps} steps");
    }

    /// Number of agents.
    pub fn agent_count(&self) -> usize {
        self.agents.len()
    }
}

fn agent_cfg(info: &AgentInfo, restarts: u64) -> AgentConfig {
    AgentConfig {
        info: info.clone(),
        boot_id: format!("{}-boot{restarts}", info.hostname),
        status_retry: Duration::from_millis(500),
    }
}

fn outcome(state: TaskState, reason: Reason) -> Outcome {
    Outcome {
        state,
        reason,
        message: String::new(),
        stdout_tail: String::new(),
        stderr_tail: String::new(),
    }
}
