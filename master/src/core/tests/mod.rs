//! Deterministic unit tests of the master core in virtual time. Every step goes through the
//! [`H`] harness, which drives timeouts like a driver would and asserts `check_invariants`.
//!
//! This file holds the harness and the helpers the subjects share; each subject is a module.

use super::*;
use crate::allocator::Allocator;
use crate::allocator::Drf;
use proto::resources::{GIB, MIB};
use proto::{
    AgentInfo, Filters, FrameworkInfo, Offer, OfferId, RunningTask, TaskFile, TaskInfo, TaskStatus,
    UpdateId,
};

const SCHED: Role = Role::Scheduler;
const AGENT: Role = Role::Agent;

/// The identity a certificate of `role`'s usual kind named `name` states.
fn principal_for(role: Role, name: &str) -> PeerId {
    let kind = match role {
        Role::Agent => proto::identity::PeerKind::Agent,
        Role::Scheduler => proto::identity::PeerKind::Framework,
        Role::Standby => proto::identity::PeerKind::Master,
    };
    PeerId::new(kind, name).unwrap()
}

fn res(cpus: f64, mem: u64) -> Resources {
    Resources::new((cpus * 1000.0) as u64, mem, 0)
}

/// A master plus virtual time and the actions it produced.
struct H {
    m: Master,
    now: Instant,
    /// What it sent and closed (its `Persist` actions go to `reg`).
    out: Vec<Action>,
    /// Every action in the order produced, `Persist` included, for ordering checks.
    log: Vec<Action>,
    /// The registry its `Persist` actions are applied to (checked against the core after every
    /// step).
    reg: crate::registry::MemRegistry,
    cfg: MasterConfig,
}

impl H {
    fn new() -> Self {
        Self::with(MasterConfig {
            run_id: "r".into(),
            ..MasterConfig::default()
        })
    }

    fn with(cfg: MasterConfig) -> Self {
        Self::with_allocator(cfg, Box::new(Drf::new()))
    }

    fn with_allocator(cfg: MasterConfig, alloc: Box<dyn Allocator>) -> Self {
        let now = Instant::now();
        H {
            m: Master::new(cfg.clone(), alloc, now),
            now,
            out: Vec::new(),
            log: Vec::new(),
            reg: crate::registry::MemRegistry::new(),
            cfg,
        }
    }

    fn drain(&mut self) {
        use crate::registry::Registry as _;
        while let Some(a) = self.m.poll_action() {
            self.log.push(a.clone());
            match a {
                Action::Persist(ops) => self.reg.apply(&ops).expect("memory registry"),
                a => self.out.push(a),
            }
        }
        if let Err(e) = self.m.check_invariants() {
            panic!("invariant violated: {e}");
        }
        if let Err(e) = self.m.check_registry(&self.reg.snapshot()) {
            panic!("registry out of step: {e}");
        }
    }

    /// The master process dies and a new one starts from the registry at the same instant:
    /// every connection is gone, nothing not persisted survives.
    fn restart(&mut self) {
        let snapshot = self.reg.snapshot();
        self.m = Master::recover(self.cfg.clone(), Box::new(Drf::new()), &snapshot, self.now);
        self.out.clear();
        self.log.clear();
        self.settle();
    }

    /// Runs what is due at `now`, as a driver would, until nothing is.
    fn settle(&mut self) {
        self.drain();
        for _ in 0..100 {
            match self.m.poll_timeout() {
                Some(t) if t <= self.now => {
                    self.m.handle_timeout(self.now);
                    self.drain();
                }
                _ => return,
            }
        }
        panic!("poll_timeout keeps returning the past");
    }

    fn ev(&mut self, ev: Event) {
        self.m.handle(self.now, ev);
        self.settle();
    }

    /// Connects a peer whose certificate is the default one of its role (so reconnections on
    /// new connections are the same principal).
    fn connect(&mut self, conn: ConnId, role: Role) {
        self.connect_as(conn, role, principal_for(role, "default"));
    }

    /// Connects a peer holding `principal`'s certificate.
    fn connect_as(&mut self, conn: ConnId, role: Role, principal: PeerId) {
        self.ev(Event::Connected {
            conn,
            role,
            peer: format!("peer{conn}"),
            principal,
        });
    }

    fn msg(&mut self, conn: ConnId, msg: Message) {
        self.ev(Event::Message { conn, msg });
    }

    /// `conn` declines `offer` with a refuse filter of `secs`.
    fn decline(&mut self, conn: ConnId, offer: &Offer, secs: f64) {
        self.msg(
            conn,
            Message::Decline {
                offer_ids: vec![offer.id.clone()],
                filters: Filters {
                    refuse_seconds: secs,
                },
            },
        );
    }

    fn disconnect(&mut self, conn: ConnId) {
        self.ev(Event::Disconnected { conn });
    }

    /// Advances virtual time by `d`, firing every timeout on the way at its instant.
    fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        while let Some(t) = self.m.poll_timeout().filter(|t| *t <= target) {
            self.now = self.now.max(t);
            self.m.handle_timeout(self.now);
            self.drain();
        }
        self.now = target;
        self.settle();
    }

    fn take(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.out)
    }

    /// Takes the messages sent to `conn`, leaving the rest.
    fn sent(&mut self, conn: ConnId) -> Vec<Message> {
        let mut mine = Vec::new();
        self.out.retain(|a| match a {
            Action::Send { conn: c, msg } if *c == conn => {
                mine.push(msg.clone());
                false
            }
            _ => true,
        });
        mine
    }

    /// Takes the first message sent to `conn`, leaving the rest.
    fn take_first(&mut self, conn: ConnId) -> Option<Message> {
        let i = self
            .out
            .iter()
            .position(|a| matches!(a, Action::Send { conn: c, .. } if *c == conn))?;
        match self.out.remove(i) {
            Action::Send { msg, .. } => Some(msg),
            Action::Close { .. } | Action::Persist(_) => None,
        }
    }

    /// Takes the offers sent to `conn`.
    fn offers(&mut self, conn: ConnId) -> Vec<Offer> {
        let mut out = Vec::new();
        self.out.retain(|a| match a {
            Action::Send {
                conn: c,
                msg: Message::Offers { offers },
            } if *c == conn => {
                out.extend(offers.iter().cloned());
                false
            }
            _ => true,
        });
        out
    }

    /// Takes the status updates sent to `conn`.
    fn updates(&mut self, conn: ConnId) -> Vec<TaskStatus> {
        let mut out = Vec::new();
        self.out.retain(|a| match a {
            Action::Send {
                conn: c,
                msg: Message::Update { status },
            } if *c == conn => {
                out.push(status.clone());
                false
            }
            _ => true,
        });
        out
    }

    fn closes(&mut self) -> Vec<(ConnId, String)> {
        let mut out = Vec::new();
        self.out.retain(|a| match a {
            Action::Close { conn, reason } => {
                out.push((*conn, reason.clone()));
                false
            }
            _ => true,
        });
        out
    }

    fn register(&mut self, conn: ConnId, r: Resources) -> AgentId {
        self.connect(conn, AGENT);
        self.msg(conn, register_msg(None, r, vec![]));
        match self.take_first(conn) {
            Some(Message::Registered { agent_id }) => agent_id,
            other => panic!("expected Registered, got {other:?}"),
        }
    }

    fn subscribe(&mut self, conn: ConnId, name: &str) -> FrameworkId {
        self.connect(conn, SCHED);
        self.msg(conn, subscribe_msg(name, None));
        match self.take_first(conn) {
            Some(Message::Subscribed { framework_id, .. }) => framework_id,
            other => panic!("expected Subscribed, got {other:?}"),
        }
    }

    fn upload_module(&mut self, bytes: &[u8]) -> Digest {
        let digest = Digest::of(bytes);
        self.ev(Event::BlobStored {
            digest,
            kind: BlobKind::Module,
            owner: Some("default".into()),
        });
        digest
    }

    fn accept(&mut self, conn: ConnId, offers: &[&Offer], tasks: Vec<TaskInfo>) {
        self.msg(
            conn,
            Message::Accept {
                offer_ids: offers.iter().map(|o| o.id.clone()).collect(),
                tasks,
                filters: Filters::default(),
            },
        );
    }

    /// The framework on `conn` acknowledges update `uuid` of its task `task` on `agent`.
    fn ack(&mut self, conn: ConnId, agent: &AgentId, task: &str, uuid: &str) {
        self.msg(
            conn,
            Message::Acknowledge {
                agent_id: agent.clone(),
                task_id: TaskId(task.into()),
                uuid: UpdateId(uuid.into()),
            },
        );
    }

    /// The framework on `conn` asks for the states of the named tasks.
    fn reconcile(&mut self, conn: ConnId, tasks: &[&str]) {
        self.msg(
            conn,
            Message::Reconcile {
                task_ids: tasks.iter().map(|t| TaskId((*t).into())).collect(),
            },
        );
    }

    fn status(&mut self, agent_conn: ConnId, st: TaskStatus) {
        self.msg(agent_conn, Message::StatusUpdate { status: st });
    }
}

fn register_msg(id: Option<AgentId>, r: Resources, running: Vec<RunningTask>) -> Message {
    Message::Register {
        executors: Vec::new(),
        agent_id: id,
        info: AgentInfo {
            datasets: Vec::new(),
            reservations: vec![],
            hostname: "host".into(),
            resources: r,
            attributes: vec![("rack".into(), "r1".into())],
        },
        running,
    }
}

fn subscribe_msg(name: &str, id: Option<FrameworkId>) -> Message {
    Message::Subscribe {
        framework: FrameworkInfo {
            priority: 0,
            name: name.into(),
            role: "*".into(),
            principal: "test".into(),
            id,
            failover_timeout_ms: 60_000,
        },
    }
}

fn task(id: &str, agent: &AgentId, r: Resources, module: Digest) -> TaskInfo {
    TaskInfo {
        data: Vec::new(),
        datasets: Vec::new(),
        executor: None,
        max_cpu_ms: None,
        task_id: TaskId(id.into()),
        name: id.into(),
        agent_id: agent.clone(),
        resources: r,
        module,
        args: vec![],
        env: vec![],
        files: vec![],
        timeout_ms: None,
    }
}

fn update(f: &FrameworkId, t: &str, a: &AgentId, state: TaskState, uuid: &str) -> TaskStatus {
    TaskStatus {
        task_id: TaskId(t.into()),
        framework_id: f.clone(),
        agent_id: Some(a.clone()),
        state,
        reason: None,
        message: String::new(),
        stdout_tail: String::new(),
        stderr_tail: String::new(),
        uuid: Some(UpdateId(uuid.into())),
    }
}

fn run_tasks(msgs: &[Message]) -> Vec<TaskId> {
    msgs.iter()
        .filter_map(|m| match m {
            Message::RunTask { task, .. } => Some(task.task_id.clone()),
            _ => None,
        })
        .collect()
}

fn kill_tasks(msgs: &[Message]) -> Vec<TaskId> {
    msgs.iter()
        .filter_map(|m| match m {
            Message::KillTask { task_id, .. } => Some(task_id.clone()),
            _ => None,
        })
        .collect()
}

fn errors(msgs: &[Message]) -> Vec<String> {
    msgs.iter()
        .filter_map(|m| match m {
            Message::Error { message } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

/// One agent with <4 cpus, 4 GiB> on conn 1, framework 1 on conn 10 holding its offer.
fn one_agent_one_offer() -> (H, AgentId, FrameworkId, Offer, Digest) {
    let mut h = H::new();
    let a = h.register(1, res(4.0, 4 * GIB));
    let f = h.subscribe(10, "f1");
    let offers = h.offers(10);
    assert_eq!(offers.len(), 1);
    let module = h.upload_module(b"\0asm module");
    h.take();
    (h, a, f, offers[0].clone(), module)
}

mod accept;
mod agents;
mod blob_gc;
mod connections;
mod drf;
mod executors;
mod filters;
mod identity;
mod kill;
mod limits;
mod operator;
/// Partition-aware task states: TASK_UNREACHABLE, back, TASK_GONE.
mod partition;
/// Allocation policies through the core: DRF, weights, quotas, reservations, priority, and the
/// offer life cycle.
mod policies;
/// Property tests of allocation invariants on random clusters and event sequences.
mod props;
/// Reads of agents through the master (task output, metrics).
mod queries;
mod random;
mod report;
/// Master restart from the registry, and agent drain.
mod restart;
/// Agents every eligible framework refuses: skipped, and back as soon as that changes.
mod skip;
mod status;
mod timers;
