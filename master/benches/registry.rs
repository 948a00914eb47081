//! The cost of persisting: tasks per second through the master core (accept, RUNNING, ack,
//! FINISHED, ack) with its `Persist` actions discarded, applied to the in-memory registry, and
//! written to the redb registry on a real file, both one transaction per input (the worst
//! case) and one per group of inputs (as the driver does when inputs are queued).
//!
//! `cargo bench -p tessera-master --bench registry` (add `-- quick` for fewer tasks). Prints
//! tasks/s for each store and its ratio to the in-memory store measured in the same run.
//!
//! Then a restart with N known tasks (N ∈ {1k, 10k}): the time to open and load the redb
//! registry, rebuild the core ([`Master::recover`]), and serve the first offer once the
//! framework has re-subscribed and the agent re-registered reporting its N running tasks.

use proto::identity::{PeerId, PeerKind};
use proto::task_builder::TaskBuilder;
use proto::{AgentId, FrameworkId, RunningTask, TaskInfo};
use proto::{
    AgentInfo, BlobKind, Digest, Filters, FrameworkInfo, Message, Resources, Role, TaskState,
    TaskStatus, UpdateId,
};
use std::time::{Duration, Instant};
use tessera_master::allocator::Drf;
use tessera_master::core::{Action, Event, Master, MasterConfig};
use tessera_master::registry::{MemRegistry, RedbRegistry, Registry, RegistryOp};

/// Tasks launched per accept.
const PER_ACCEPT: usize = 50;

enum Store {
    None,
    Mem(MemRegistry),
    /// The store, and the directory that holds it (deleted on drop).
    Redb(RedbRegistry, #[allow(dead_code)] tempfile::TempDir),
}

struct Run {
    store: Store,
    /// Inputs handled before the actions are drained and the changes written.
    group: usize,
    pending: Vec<RegistryOp>,
    handled: usize,
    commits: u64,
}

impl Run {
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        self.commits += 1;
        match &mut self.store {
            Store::None => {}
            Store::Mem(r) => r.apply(&self.pending).unwrap(),
            Store::Redb(r, _) => r.apply(&self.pending).unwrap(),
        }
        self.pending.clear();
    }

    /// Drains the core's actions after an input; returns the sends. Changes are written every
    /// `group` inputs (before those inputs' sends would go out).
    fn drain(&mut self, m: &mut Master) -> Vec<Message> {
        let mut sends = Vec::new();
        while let Some(a) = m.poll_action() {
            match a {
                Action::Persist(ops) => self.pending.extend(ops),
                Action::Send { msg, .. } => sends.push(msg),
                Action::Close { .. } => {}
            }
        }
        self.handled += 1;
        if self.handled.is_multiple_of(self.group) {
            self.flush();
        }
        sends
    }
}

fn status(fid: &proto::FrameworkId, t: &proto::TaskInfo, state: TaskState, n: u64) -> TaskStatus {
    TaskStatus {
        task_id: t.task_id.clone(),
        framework_id: fid.clone(),
        agent_id: Some(t.agent_id.clone()),
        state,
        reason: None,
        message: String::new(),
        stdout_tail: String::new(),
        stderr_tail: String::new(),
        uuid: Some(UpdateId(format!("u{n}"))),
    }
}

/// Runs `tasks` tasks through a core; returns tasks/s and commits.
fn run(tasks: usize, store: Store, group: usize) -> (f64, u64) {
    let mut now = Instant::now();
    let cfg = MasterConfig {
        run_id: "b".into(),
        allocation_interval: Duration::ZERO,
        heartbeat_interval: Duration::ZERO,
        ..MasterConfig::default()
    };
    let mut m = Master::new(cfg, Box::new(Drf::new()), now);
    let mut r = Run {
        store,
        group,
        pending: Vec::new(),
        handled: 0,
        commits: 0,
    };
    let module = Digest::of(b"bench");
    m.handle(
        now,
        Event::BlobStored {
            digest: module,
            kind: BlobKind::Module,
            owner: Some("bench".into()),
        },
    );
    let (aconn, fconn) = (1, 2);
    m.handle(
        now,
        Event::Connected {
            conn: aconn,
            role: Role::Agent,
            peer: "a".into(),
            principal: PeerId::new(PeerKind::Agent, "a").unwrap(),
        },
    );
    m.handle(
        now,
        Event::Message {
            conn: aconn,
            msg: Message::Register {
                executors: Vec::new(),
                agent_id: None,
                info: AgentInfo {
                    datasets: Vec::new(),
                    hostname: "a".into(),
                    resources: Resources::new(1_000_000, 1 << 40, 0),
                    reservations: vec![],
                    attributes: vec![],
                },
                running: vec![],
            },
        },
    );
    m.handle(
        now,
        Event::Connected {
            conn: fconn,
            role: Role::Scheduler,
            peer: "f".into(),
            principal: PeerId::new(PeerKind::Framework, "bench").unwrap(),
        },
    );
    m.handle(
        now,
        Event::Message {
            conn: fconn,
            msg: Message::Subscribe {
                framework: FrameworkInfo {
                    name: "f".into(),
                    role: "*".into(),
                    principal: "bench".into(),
                    id: None,
                    failover_timeout_ms: 3_600_000,
                    priority: 0,
                },
            },
        },
    );
    let mut fid = None;
    for msg in r.drain(&mut m) {
        if let Message::Subscribed { framework_id, .. } = msg {
            fid = Some(framework_id);
        }
    }
    r.flush();
    let fid = fid.expect("subscribed");
    let t0 = Instant::now();
    let mut done = 0;
    let mut n = 0u64;
    while done < tasks {
        now += Duration::from_millis(1);
        m.handle_timeout(now);
        let offers: Vec<_> = r
            .drain(&mut m)
            .into_iter()
            .flat_map(|msg| match msg {
                Message::Offers { offers } => offers,
                _ => Vec::new(),
            })
            .collect();
        let offer = offers.into_iter().next().expect("an offer");
        let batch: Vec<_> = (0..PER_ACCEPT)
            .map(|i| {
                TaskBuilder::new(&format!("t{}", done + i), module)
                    .resources(Resources::new(10, 1 << 20, 0))
                    .build(&offer)
            })
            .collect();
        m.handle(
            now,
            Event::Message {
                conn: fconn,
                msg: Message::Accept {
                    offer_ids: vec![offer.id.clone()],
                    tasks: batch.clone(),
                    filters: Filters {
                        refuse_seconds: 0.0,
                    },
                },
            },
        );
        r.drain(&mut m);
        for t in &batch {
            for state in [TaskState::Running, TaskState::Finished] {
                n += 1;
                let st = status(&fid, t, state, n);
                m.handle(
                    now,
                    Event::Message {
                        conn: aconn,
                        msg: Message::StatusUpdate { status: st.clone() },
                    },
                );
                r.drain(&mut m);
                m.handle(
                    now,
                    Event::Message {
                        conn: fconn,
                        msg: Message::Acknowledge {
                            agent_id: t.agent_id.clone(),
                            task_id: t.task_id.clone(),
                            uuid: st.uuid.clone().unwrap(),
                        },
                    },
                );
                r.drain(&mut m);
            }
        }
        done += PER_ACCEPT;
    }
    r.flush();
    let rate = done as f64 / t0.elapsed().as_secs_f64();
    if let Store::Mem(reg) = &r.store {
        assert!(reg.snapshot().tasks.is_empty());
    }
    if let Store::Redb(reg, _) = &r.store {
        assert!(reg.load().unwrap().tasks.is_empty());
    }
    (rate, r.commits)
}

fn framework_info(id: Option<FrameworkId>) -> FrameworkInfo {
    FrameworkInfo {
        name: "f".into(),
        role: "*".into(),
        principal: "bench".into(),
        id,
        failover_timeout_ms: 3_600_000,
        priority: 0,
    }
}

fn agent_info() -> AgentInfo {
    AgentInfo {
        datasets: Vec::new(),
        hostname: "a".into(),
        resources: Resources::new(1_000_000, 1 << 40, 0),
        reservations: vec![],
        attributes: vec![],
    }
}

fn connect(m: &mut Master, now: Instant, conn: u64, role: Role, kind: PeerKind, name: &str) {
    m.handle(
        now,
        Event::Connected {
            conn,
            role,
            peer: name.into(),
            principal: PeerId::new(kind, name).unwrap(),
        },
    );
}

/// Writes a registry holding `n` running tasks on one agent through a core; returns the ids
/// and the tasks (for the agent's report).
fn populate(reg: &mut RedbRegistry, n: usize) -> (AgentId, FrameworkId, Vec<TaskInfo>) {
    let mut now = Instant::now();
    let cfg = MasterConfig {
        run_id: "p".into(),
        allocation_interval: Duration::ZERO,
        heartbeat_interval: Duration::ZERO,
        ..MasterConfig::default()
    };
    let mut m = Master::new(cfg, Box::new(Drf::new()), now);
    let flush = |m: &mut Master, reg: &mut RedbRegistry| -> Vec<Message> {
        let mut ops = Vec::new();
        let mut sends = Vec::new();
        while let Some(a) = m.poll_action() {
            match a {
                Action::Persist(o) => ops.extend(o),
                Action::Send { msg, .. } => sends.push(msg),
                Action::Close { .. } => {}
            }
        }
        reg.apply(&ops).unwrap();
        sends
    };
    let module = Digest::of(b"bench");
    m.handle(
        now,
        Event::BlobStored {
            digest: module,
            kind: BlobKind::Module,
            owner: Some("bench".into()),
        },
    );
    connect(&mut m, now, 1, Role::Agent, PeerKind::Agent, "a");
    m.handle(
        now,
        Event::Message {
            conn: 1,
            msg: Message::Register {
                executors: Vec::new(),
                agent_id: None,
                info: agent_info(),
                running: vec![],
            },
        },
    );
    connect(
        &mut m,
        now,
        2,
        Role::Scheduler,
        PeerKind::Framework,
        "bench",
    );
    m.handle(
        now,
        Event::Message {
            conn: 2,
            msg: Message::Subscribe {
                framework: framework_info(None),
            },
        },
    );
    let mut aid = None;
    let mut fid = None;
    for msg in flush(&mut m, reg) {
        match msg {
            Message::Registered { agent_id } => aid = Some(agent_id),
            Message::Subscribed { framework_id, .. } => fid = Some(framework_id),
            _ => {}
        }
    }
    let mut all = Vec::new();
    while all.len() < n {
        now += Duration::from_millis(1);
        m.handle_timeout(now);
        let offer = flush(&mut m, reg)
            .into_iter()
            .find_map(|msg| match msg {
                Message::Offers { offers } => offers.into_iter().next(),
                _ => None,
            })
            .expect("an offer");
        let batch: Vec<_> = (0..(n - all.len()).min(1000))
            .map(|i| {
                TaskBuilder::new(&format!("t{}", all.len() + i), module)
                    .resources(Resources::new(10, 1 << 20, 0))
                    .build(&offer)
            })
            .collect();
        m.handle(
            now,
            Event::Message {
                conn: 2,
                msg: Message::Accept {
                    offer_ids: vec![offer.id.clone()],
                    tasks: batch.clone(),
                    filters: Filters {
                        refuse_seconds: 0.0,
                    },
                },
            },
        );
        flush(&mut m, reg);
        all.extend(batch);
    }
    (aid.unwrap(), fid.unwrap(), all)
}

/// A master restart with `n` known tasks: (load, recover, first offer after the peers are
/// back), each measured from the previous step.
fn restart(n: usize) -> (Duration, Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let (aid, fid, tasks) = {
        let mut reg = RedbRegistry::open_in(dir.path()).unwrap();
        populate(&mut reg, n)
    };
    let t0 = Instant::now();
    let reg = RedbRegistry::open_in(dir.path()).unwrap();
    let snapshot = reg.load().unwrap();
    assert_eq!(snapshot.tasks.len(), n);
    let loaded = t0.elapsed();
    let cfg = MasterConfig {
        run_id: "q".into(),
        allocation_interval: Duration::ZERO,
        heartbeat_interval: Duration::ZERO,
        ..MasterConfig::default()
    };
    let t1 = Instant::now();
    let now = Instant::now();
    let mut m = Master::recover(cfg, Box::new(Drf::new()), &snapshot, now);
    let recovered = t1.elapsed();
    let t2 = Instant::now();
    connect(
        &mut m,
        now,
        11,
        Role::Scheduler,
        PeerKind::Framework,
        "bench",
    );
    m.handle(
        now,
        Event::Message {
            conn: 11,
            msg: Message::Subscribe {
                framework: framework_info(Some(fid.clone())),
            },
        },
    );
    connect(&mut m, now, 12, Role::Agent, PeerKind::Agent, "a");
    let running = tasks
        .into_iter()
        .map(|task| RunningTask {
            framework_id: fid.clone(),
            task,
            state: TaskState::Running,
        })
        .collect();
    m.handle(
        now,
        Event::Message {
            conn: 12,
            msg: Message::Register {
                executors: Vec::new(),
                agent_id: Some(aid),
                info: agent_info(),
                running,
            },
        },
    );
    m.handle_timeout(now);
    let mut offered = false;
    while let Some(a) = m.poll_action() {
        if let Action::Send {
            msg: Message::Offers { .. },
            ..
        } = a
        {
            offered = true;
        }
    }
    assert!(offered);
    (loaded, recovered, t2.elapsed())
}

fn redb() -> Store {
    let dir = tempfile::tempdir().unwrap();
    let reg = RedbRegistry::open_in(dir.path()).unwrap();
    Store::Redb(reg, dir)
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let tasks = if quick { 500 } else { 2_000 };
    // Warm up.
    run(PER_ACCEPT, Store::Mem(MemRegistry::new()), 1);
    let (none, _) = run(tasks, Store::None, 1);
    let (mem, _) = run(tasks, Store::Mem(MemRegistry::new()), 1);
    println!("{tasks} tasks, {PER_ACCEPT} per accept, one agent, one framework");
    println!(
        "no registry          {none:>10.0} tasks/s  ({:.2}x memory)",
        none / mem
    );
    println!("memory registry      {mem:>10.0} tasks/s  (1.00x)");
    for group in [1, 16, 256] {
        let (rate, commits) = run(tasks, redb(), group);
        println!(
            "redb, group {group:>3}      {rate:>10.0} tasks/s  ({:.3}x memory, {commits} commits)",
            rate / mem
        );
    }
    for n in [1_000, 10_000] {
        let (loaded, recovered, offered) = restart(n);
        println!(
            "restart with {n:>6} known tasks: open+load {:.1} ms, recover {:.1} ms, \
             re-subscribe + re-register + first offer {:.1} ms",
            loaded.as_secs_f64() * 1e3,
            recovered.as_secs_f64() * 1e3,
            offered.as_secs_f64() * 1e3
        );
    }
}
