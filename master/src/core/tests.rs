//! Deterministic unit tests of the master core in virtual time. Every step goes through the
//! [`H`] harness, which drives timeouts like a driver would and asserts `check_invariants`.

use super::*;
use crate::allocator::Allocator;
use crate::allocator::Drf;
use proto::resources::{GIB, MIB};
use proto::{
    AgentInfo, Filters, FrameworkInfo, Offer, RunningTask, TaskFile, TaskInfo, TaskStatus, UpdateId,
};

const SCHED: Role = Role::Scheduler;
const AGENT: Role = Role::Agent;

fn res(cpus: f64, mem: u64) -> Resources {
    Resources::new((cpus * 1000.0) as u64, mem, 0)
}

/// A master plus virtual time and the actions it produced.
struct H {
    m: Master,
    now: Instant,
    out: Vec<Action>,
}

impl H {
    fn new() -> Self {
        Self::with(MasterConfig {
            run_id: "r".into(),
            ..MasterConfig::default()
        })
    }

    fn with(cfg: MasterConfig) -> Self {
        let now = Instant::now();
        H {
            m: Master::new(cfg, Box::new(Drf::new()), now),
            now,
            out: Vec::new(),
        }
    }

    fn drain(&mut self) {
        while let Some(a) = self.m.poll_action() {
            self.out.push(a);
        }
        if let Err(e) = self.m.check_invariants() {
            panic!("invariant violated: {e}");
        }
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

    fn connect(&mut self, conn: ConnId, role: Role) {
        self.ev(Event::Connected {
            conn,
            role,
            peer: format!("peer{conn}"),
        });
    }

    fn msg(&mut self, conn: ConnId, msg: Message) {
        self.ev(Event::Message { conn, msg });
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
            Action::Close { .. } => None,
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

    fn status(&mut self, agent_conn: ConnId, st: TaskStatus) {
        self.msg(agent_conn, Message::StatusUpdate { status: st });
    }
}

fn register_msg(id: Option<AgentId>, r: Resources, running: Vec<RunningTask>) -> Message {
    Message::Register {
        agent_id: id,
        info: AgentInfo {
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

// ----- the seed's worked example -----

#[test]
fn seed_worked_example() {
    let mut h = H::new();
    let a1 = h.register(1, res(4.0, 4 * GIB));
    assert_eq!(a1, AgentId("r-A1".into()));
    let f1 = h.subscribe(10, "f1");
    assert_eq!(f1, FrameworkId("r-F1".into()));
    let offers = h.offers(10);
    assert_eq!(offers.len(), 1);
    let o = &offers[0];
    assert_eq!(o.resources, res(4.0, 4 * GIB));
    assert_eq!(o.agent_id, a1);
    assert_eq!(o.framework_id, f1);
    assert_eq!(o.hostname, "host");

    let f2 = h.subscribe(20, "f2");
    assert!(h.offers(20).is_empty(), "everything is offered to f1");
    let module = h.upload_module(b"\0asm hello");
    h.accept(
        10,
        &[o],
        vec![
            task("t1", &a1, res(2.0, GIB), module),
            task("t2", &a1, res(1.0, 2 * GIB), module),
        ],
    );
    let to_agent = h.sent(1);
    assert_eq!(
        run_tasks(&to_agent),
        vec![TaskId("t1".into()), TaskId("t2".into())]
    );
    assert!(h.updates(10).is_empty(), "no errors for valid tasks");
    // The remainder goes to f2 at the next allocation (f1 is filtered for 5 s, and f2 has the
    // lower share anyway).
    let o2 = h.offers(20);
    assert_eq!(o2.len(), 1);
    assert_eq!(o2[0].resources, res(1.0, GIB));
    assert_eq!(o2[0].framework_id, f2);
    assert_eq!(h.m.agent(&a1).unwrap().used, res(3.0, 3 * GIB));
    assert_eq!(
        h.m.task(&f1, &TaskId("t1".into())).unwrap().status.state,
        TaskState::Staging
    );

    // t1 finishes: its resources are offered again.
    h.status(1, update(&f1, "t1", &a1, TaskState::Running, "u1"));
    h.status(1, update(&f1, "t1", &a1, TaskState::Finished, "u2"));
    let ups = h.updates(10);
    assert_eq!(
        ups.iter().map(|s| s.state).collect::<Vec<_>>(),
        [TaskState::Running, TaskState::Finished]
    );
    assert_eq!(ups[1].uuid, Some(UpdateId("u2".into())));
    let freed: Vec<Offer> = [h.offers(10), h.offers(20)].concat();
    assert_eq!(freed.len(), 1);
    assert_eq!(freed[0].resources, res(2.0, GIB));
    assert_eq!(h.m.offers().count(), 2);
}

// ----- DRF -----

#[test]
fn drf_alternates_between_frameworks() {
    let mut h = H::new();
    let f1 = h.subscribe(10, "f1");
    let f2 = h.subscribe(20, "f2");
    // Four agents register at the same instant; one allocation round serves them all.
    for c in 1..=4 {
        h.connect(c, AGENT);
        h.m.handle(
            h.now,
            Event::Message {
                conn: c,
                msg: register_msg(None, res(4.0, 4 * GIB), vec![]),
            },
        );
    }
    h.settle();
    let o1: Vec<String> = h.offers(10).iter().map(|o| o.agent_id.0.clone()).collect();
    let o2: Vec<String> = h.offers(20).iter().map(|o| o.agent_id.0.clone()).collect();
    assert_eq!(o1, ["r-A1", "r-A3"]);
    assert_eq!(o2, ["r-A2", "r-A4"]);
    assert!(h
        .m
        .offers()
        .all(|o| (o.framework_id == f1) ^ (o.framework_id == f2)));
}

#[test]
fn drf_prefers_lower_dominant_share() {
    let mut h = H::new();
    let a1 = h.register(1, res(4.0, 4 * GIB));
    let f1 = h.subscribe(10, "f1");
    let o = h.offers(10).remove(0);
    let m = h.upload_module(b"m");
    // f1 takes the whole agent and keeps it busy.
    h.accept(10, &[&o], vec![task("big", &a1, res(4.0, 4 * GIB), m)]);
    let _f2 = h.subscribe(20, "f2");
    h.take();
    // A new agent goes to f2 (share 0), not to f1 (share 1), though f1 subscribed first.
    h.register(2, res(4.0, 4 * GIB));
    assert!(h.offers(10).is_empty());
    assert_eq!(h.offers(20).len(), 1);
    assert!(h.m.framework(&f1).is_some());
}

// ----- accept validation -----

#[test]
fn accept_with_unknown_foreign_and_stale_offers() {
    let (mut h, a, f1, o, m) = one_agent_one_offer();
    // f2 on another agent, so it holds an offer too.
    let _f2 = h.subscribe(20, "f2");
    h.register(2, res(2.0, 2 * GIB));
    let o2 = h.offers(20).remove(0);
    h.take();

    // Unknown id.
    h.msg(
        10,
        Message::Accept {
            offer_ids: vec![OfferId("r-O999".into())],
            tasks: vec![task("t1", &a, res(1.0, GIB), m)],
            filters: Filters::default(),
        },
    );
    let msgs = h.sent(10);
    assert_eq!(
        errors(&msgs),
        ["accept failed: offer r-O999 is unknown or no longer valid"]
    );
    let st: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            Message::Update { status } => Some(status.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].state, TaskState::Dropped);
    assert_eq!(st[0].reason, Some(Reason::InvalidOffers));
    assert_eq!(st[0].uuid, None);
    assert!(h.m.offer(&o.id).is_some(), "f1's offer untouched");

    // Foreign offer (f2's) together with f1's own: everything dropped, f1's offer returns to
    // the pool, f2's offer is untouched.
    h.accept(10, &[&o, &o2], vec![task("t1", &a, res(1.0, GIB), m)]);
    // The returned resources were offered again (to f1: no filter on invalid accepts).
    let again = h.offers(10).remove(0);
    assert_eq!(again.resources, res(4.0, 4 * GIB));
    let msgs = h.sent(10);
    let errs = errors(&msgs);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].contains(&format!(
        "offer {} is not an offer to framework {f1}",
        o2.id
    )));
    assert!(h.m.offer(&o2.id).is_some());
    assert!(h.m.offer(&o.id).is_none());
    assert!(h.m.tasks().next().is_none());

    // Use it, then try the stale one again.
    h.accept(10, &[&again], vec![task("t1", &a, res(1.0, GIB), m)]);
    assert_eq!(run_tasks(&h.sent(1)).len(), 1);
    h.take();
    h.accept(10, &[&again], vec![task("t2", &a, res(1.0, GIB), m)]);
    let ups = h.updates(10);
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].state, TaskState::Dropped);
    assert!(ups[0].message.contains("unknown or no longer valid"));
    assert!(run_tasks(&h.sent(1)).is_empty());
}

#[test]
fn accept_offers_of_two_agents_is_refused() {
    let mut h = H::new();
    let a1 = h.register(1, res(1.0, GIB));
    h.register(2, res(1.0, GIB));
    h.subscribe(10, "f1");
    let offers = h.offers(10);
    assert_eq!(offers.len(), 2);
    let m = h.upload_module(b"m");
    h.accept(
        10,
        &[&offers[0], &offers[1]],
        vec![task("t", &a1, res(1.0, GIB), m)],
    );
    let msgs = h.sent(10);
    assert!(errors(&msgs)[0].contains("one accept uses offers of one agent"));
    assert!(h.m.tasks().next().is_none());
}

#[test]
fn accept_validates_each_task() {
    let (mut h, a, f, o, m) = one_agent_one_offer();
    let missing = Digest::of(b"never uploaded");
    let file = Digest::of(b"data");
    h.ev(Event::BlobStored {
        digest: file,
        kind: BlobKind::File,
    });
    let mut with_bad_path = task("badpath", &a, res(0.1, MIB), m);
    with_bad_path.files = vec![TaskFile {
        path: "../etc/passwd".into(),
        digest: file,
    }];
    let mut with_missing_file = task("nofile", &a, res(0.1, MIB), m);
    with_missing_file.files = vec![TaskFile {
        path: "in/data.txt".into(),
        digest: missing,
    }];
    let mut with_file = task("withfile", &a, res(0.1, MIB), m);
    with_file.files = vec![TaskFile {
        path: "in/data.txt".into(),
        digest: file,
    }];
    let mut elsewhere = task("elsewhere", &a, res(0.1, MIB), m);
    elsewhere.agent_id = AgentId("r-A77".into());
    h.accept(
        10,
        &[&o],
        vec![
            task("ok", &a, res(3.0, GIB), m),
            task("ok", &a, res(0.1, MIB), m), // duplicate in this call
            task("", &a, res(0.1, MIB), m),   // empty id
            task("big", &a, res(2.0, GIB), m), // only 1 cpu left
            task("nomod", &a, res(0.1, MIB), missing), // module not uploaded
            task("filemod", &a, res(0.1, MIB), file), // uploaded as a file
            task("zero", &a, res(0.0, MIB), m), // no cpus
            with_bad_path,
            with_missing_file,
            elsewhere,
            with_file,
        ],
    );
    let launched = run_tasks(&h.sent(1));
    assert_eq!(launched, [TaskId("ok".into()), TaskId("withfile".into())]);
    let ups = h.updates(10);
    let got: Vec<(&str, TaskState, Option<Reason>)> = ups
        .iter()
        .map(|s| (s.task_id.as_str(), s.state, s.reason.clone()))
        .collect();
    let invalid = Some(Reason::TaskInvalid);
    let module = Some(Reason::ModuleInvalid);
    assert_eq!(
        got,
        [
            ("ok", TaskState::Error, invalid.clone()),
            ("", TaskState::Error, invalid.clone()),
            ("big", TaskState::Error, invalid.clone()),
            ("nomod", TaskState::Error, module.clone()),
            ("filemod", TaskState::Error, module),
            ("zero", TaskState::Error, invalid.clone()),
            ("badpath", TaskState::Error, invalid.clone()),
            ("nofile", TaskState::Error, invalid.clone()),
            ("elsewhere", TaskState::Error, invalid),
        ]
    );
    assert!(ups[0].message.contains("used twice"));
    assert_eq!(
        ups[2].message,
        "task big needs <2 cpus, 1 GB> but only <1 cpu, 3 GB> remain in the offers"
    );
    assert_eq!(
        ups[3].message,
        format!("module sha256:{} has not been uploaded", missing.to_hex())
    );
    // A live task id cannot be reused in a later accept.
    h.take();
    h.msg(10, Message::Revive);
    let o = h.offers(10).remove(0);
    h.accept(10, &[&o], vec![task("ok", &a, res(0.1, MIB), m)]);
    let ups = h.updates(10);
    assert!(ups[0].message.contains("already in use"), "{ups:?}");
    assert!(h.m.task(&f, &TaskId("ok".into())).is_some());
}

// ----- decline, filters, revive, suppress -----

#[test]
fn decline_filters_until_expiry_and_revive_clears() {
    let mut h = H::new();
    let a = h.register(1, res(4.0, 4 * GIB));
    let f1 = h.subscribe(10, "f1");
    let o = h.offers(10).remove(0);
    h.msg(
        10,
        Message::Decline {
            offer_ids: vec![o.id.clone()],
            filters: Filters {
                refuse_seconds: 10.0,
            },
        },
    );
    assert!(errors(&h.sent(10)).is_empty());
    assert!(h.m.filters().contains_key(&(f1.clone(), a.clone())));
    // f1 gets nothing inside the window; f2 subscribing gets the agent.
    h.advance(Duration::from_secs(3));
    assert!(h.offers(10).is_empty());
    h.subscribe(20, "f2");
    let o2 = h.offers(20).remove(0);
    h.msg(
        20,
        Message::Decline {
            offer_ids: vec![o2.id.clone()],
            filters: Filters {
                refuse_seconds: 0.0,
            },
        },
    );
    // refuse 0: f2 is offered again right away; f1 still filtered.
    assert_eq!(h.offers(20).len(), 1);
    assert!(h.offers(10).is_empty());
    h.take();
    // f2 suppresses and declines; after expiry f1 is offered again.
    h.msg(20, Message::Suppress);
    let o3 = h.m.offers().next().unwrap().id.clone();
    h.msg(
        20,
        Message::Decline {
            offer_ids: vec![o3],
            filters: Filters {
                refuse_seconds: 0.0,
            },
        },
    );
    h.advance(Duration::from_secs(6));
    assert!(h.offers(10).is_empty(), "9 s: still filtered");
    h.advance(Duration::from_secs(1));
    let back = h.offers(10);
    assert_eq!(back.len(), 1, "filter expired at 10 s");
    assert!(h.offers(20).is_empty(), "suppressed");
    // Decline again, then Revive clears the filter at once.
    h.msg(
        10,
        Message::Decline {
            offer_ids: vec![back[0].id.clone()],
            filters: Filters {
                refuse_seconds: 100.0,
            },
        },
    );
    assert!(h.offers(10).is_empty());
    h.msg(10, Message::Revive);
    assert_eq!(h.offers(10).len(), 1);
    assert!(h.m.filters().is_empty());
}

#[test]
fn decline_unknown_offer_is_an_error_and_refuse_is_clamped() {
    let mut h = H::with(MasterConfig {
        run_id: "r".into(),
        max_refuse: Duration::from_secs(60),
        ..MasterConfig::default()
    });
    let a = h.register(1, res(4.0, 4 * GIB));
    let f = h.subscribe(10, "f1");
    let o = h.offers(10).remove(0);
    h.msg(
        10,
        Message::Decline {
            offer_ids: vec![o.id.clone(), OfferId("nope".into())],
            filters: Filters {
                refuse_seconds: f64::INFINITY,
            },
        },
    );
    assert_eq!(
        errors(&h.sent(10)),
        ["decline: offer nope is unknown or no longer valid"]
    );
    assert_eq!(
        h.m.filters().get(&(f.clone(), a.clone())),
        Some(&(h.now + Duration::from_secs(60)))
    );
    // NaN → the 5 s default.
    h.msg(10, Message::Revive);
    let o = h.offers(10).remove(0);
    h.msg(
        10,
        Message::Decline {
            offer_ids: vec![o.id],
            filters: Filters {
                refuse_seconds: f64::NAN,
            },
        },
    );
    assert_eq!(
        h.m.filters().get(&(f, a)),
        Some(&(h.now + Duration::from_secs(5)))
    );
}

// ----- agents going away and coming back -----

#[test]
fn agent_disconnect_rescinds_then_tasks_lost_after_timeout() {
    let (mut h, a, f, o, m) = one_agent_one_offer();
    h.accept(10, &[&o], vec![task("t1", &a, res(1.0, GIB), m)]);
    h.take();
    h.msg(10, Message::Revive);
    let rest = h.offers(10).remove(0);
    h.disconnect(1);
    assert_eq!(
        h.sent(10),
        [Message::Rescind {
            offer_id: rest.id.clone()
        }]
    );
    assert_eq!(h.m.offers().count(), 0);
    h.advance(Duration::from_millis(9_999));
    assert!(h.updates(10).is_empty());
    assert!(h.m.agent(&a).is_some());
    h.advance(Duration::from_millis(1));
    let ups = h.updates(10);
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].state, TaskState::Lost);
    assert_eq!(ups[0].reason, Some(Reason::AgentLost));
    assert_eq!(ups[0].uuid, None);
    assert!(h.m.agent(&a).is_none());
    assert!(h.m.task(&f, &TaskId("t1".into())).is_none());
    // Re-registering with the removed id: Shutdown, then Close.
    h.take();
    h.connect(2, AGENT);
    h.msg(2, register_msg(Some(a.clone()), res(4.0, 4 * GIB), vec![]));
    let acts = h.take();
    assert!(matches!(
        &acts[0],
        Action::Send {
            conn: 2,
            msg: Message::Shutdown { .. }
        }
    ));
    assert!(matches!(&acts[1], Action::Close { conn: 2, .. }));
    // Reconcile still knows t1's fate.
    h.msg(
        10,
        Message::Reconcile {
            task_ids: vec![TaskId("t1".into())],
        },
    );
    assert_eq!(h.updates(10)[0].reason, Some(Reason::AgentLost));
}

#[test]
fn agent_reregisters_within_timeout_and_keeps_tasks() {
    let (mut h, a, f, o, m) = one_agent_one_offer();
    h.accept(
        10,
        &[&o],
        vec![
            task("keep", &a, res(1.0, GIB), m),
            task("gone", &a, res(1.0, GIB), m),
            task("intransit", &a, res(1.0, GIB), m),
        ],
    );
    h.take();
    // "gone" was running when the link dropped; "intransit" never reached the agent.
    let mut running = TaskStatus {
        task_id: TaskId("gone".into()),
        framework_id: f.clone(),
        agent_id: Some(a.clone()),
        state: TaskState::Running,
        reason: None,
        message: String::new(),
        stdout_tail: String::new(),
        stderr_tail: String::new(),
        uuid: None,
    };
    h.status(1, running.clone());
    running.task_id = TaskId("keep".into());
    h.status(1, running);
    h.take();
    h.disconnect(1);
    h.advance(Duration::from_secs(5));
    let keep = h.m.task(&f, &TaskId("keep".into())).unwrap().info.clone();
    let adopted = TaskInfo {
        task_id: TaskId("adopted".into()),
        ..keep.clone()
    };
    h.connect(2, AGENT);
    h.msg(
        2,
        register_msg(
            Some(a.clone()),
            res(4.0, 4 * GIB),
            vec![
                RunningTask {
                    framework_id: f.clone(),
                    task: keep,
                    state: TaskState::Running,
                },
                RunningTask {
                    framework_id: f.clone(),
                    task: adopted,
                    state: TaskState::Running,
                },
            ],
        ),
    );
    let sent2 = h.sent(2);
    assert_eq!(
        sent2[0],
        Message::Registered {
            agent_id: a.clone()
        }
    );
    let ups = h.updates(10);
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].task_id, TaskId("gone".into()));
    assert_eq!(ups[0].state, TaskState::Lost);
    assert_eq!(ups[0].reason, Some(Reason::AgentRestarted));
    assert!(h.m.task(&f, &TaskId("keep".into())).is_some());
    assert!(h.m.task(&f, &TaskId("adopted".into())).is_some());
    // The launch lost in transit is sent again rather than reported lost.
    assert!(sent2.iter().any(|m| matches!(m,
        Message::RunTask { task, .. } if task.task_id.as_str() == "intransit")));
    assert_eq!(h.m.agent(&a).unwrap().used, res(3.0, 3 * GIB));
    // The timeout no longer applies.
    h.advance(Duration::from_secs(30));
    assert!(h.m.agent(&a).is_some());
    assert!(h.updates(10).iter().all(|s| s.state != TaskState::Lost));
}

#[test]
fn kills_lost_with_a_dropped_link_are_sent_again_on_reregistration() {
    let (mut h, a, f, o, m) = one_agent_one_offer();
    h.accept(
        10,
        &[&o],
        vec![
            task("running", &a, res(1.0, GIB), m),
            task("staging", &a, res(1.0, GIB), m),
        ],
    );
    h.take();
    let st = TaskStatus {
        task_id: TaskId("running".into()),
        framework_id: f.clone(),
        agent_id: Some(a.clone()),
        state: TaskState::Running,
        reason: None,
        message: String::new(),
        stdout_tail: String::new(),
        stderr_tail: String::new(),
        uuid: None,
    };
    h.status(1, st.clone());
    h.take();
    // The link drops; the framework's kills go nowhere.
    h.disconnect(1);
    for t in ["running", "staging"] {
        h.msg(
            10,
            Message::Kill {
                task_id: TaskId(t.into()),
            },
        );
    }
    h.take();
    // The agent comes back still running one task and never having seen the other.
    h.connect(2, AGENT);
    h.msg(
        2,
        register_msg(
            Some(a.clone()),
            res(4.0, 4 * GIB),
            vec![RunningTask {
                framework_id: f.clone(),
                task: h
                    .m
                    .task(&f, &TaskId("running".into()))
                    .unwrap()
                    .info
                    .clone(),
                state: TaskState::Running,
            }],
        ),
    );
    let sent = h.sent(2);
    assert!(sent.iter().any(|m| matches!(m,
        Message::KillTask { task_id, .. } if task_id.as_str() == "running")));
    assert!(!sent.iter().any(|m| matches!(m, Message::RunTask { .. })));
    let ups = h.updates(10);
    let staging = ups
        .iter()
        .find(|s| s.task_id.as_str() == "staging")
        .unwrap();
    assert_eq!(staging.state, TaskState::Killed);
    assert_eq!(staging.reason, Some(Reason::Killed));
}

#[test]
fn agent_register_validation() {
    let mut h = H::new();
    // Running tasks larger than the agent.
    h.connect(1, AGENT);
    let t = task("t", &AgentId("x".into()), res(8.0, GIB), Digest::of(b"m"));
    h.msg(
        1,
        register_msg(
            None,
            res(4.0, 4 * GIB),
            vec![RunningTask {
                framework_id: FrameworkId("f".into()),
                task: t.clone(),
                state: TaskState::Running,
            }],
        ),
    );
    let closes = h.closes();
    assert_eq!(closes.len(), 1);
    assert!(closes[0].1.contains("running tasks use"), "{closes:?}");
    assert_eq!(h.m.agents().count(), 0);
    // Overflowing resources.
    h.connect(2, AGENT);
    let huge = |id: &str| RunningTask {
        framework_id: FrameworkId("f".into()),
        task: TaskInfo {
            task_id: TaskId(id.into()),
            resources: Resources::new(u64::MAX, u64::MAX, 0),
            ..t.clone()
        },
        state: TaskState::Running,
    };
    h.msg(
        2,
        register_msg(
            None,
            Resources::new(u64::MAX, u64::MAX, u64::MAX),
            vec![huge("a"), huge("b")],
        ),
    );
    assert!(h.closes()[0].1.contains("overflow"));
    // A second Register for another id on a registered connection.
    let a = h.register(3, res(1.0, GIB));
    h.take();
    h.msg(
        3,
        register_msg(Some(AgentId("other".into())), res(1.0, GIB), vec![]),
    );
    assert!(h.closes()[0].1.contains("already agent"));
    assert!(!h.m.agent(&a).unwrap().is_connected());
}

// ----- status updates and acknowledgements -----

#[test]
fn status_updates_forwarded_and_acknowledged() {
    let (mut h, a, f, o, m) = one_agent_one_offer();
    h.accept(10, &[&o], vec![task("t1", &a, res(1.0, GIB), m)]);
    h.take();
    h.status(1, update(&f, "t1", &a, TaskState::Running, "u1"));
    assert_eq!(h.updates(10)[0].state, TaskState::Running);
    h.msg(
        10,
        Message::Acknowledge {
            agent_id: a.clone(),
            task_id: TaskId("t1".into()),
            uuid: UpdateId("u1".into()),
        },
    );
    assert_eq!(
        h.sent(1),
        [Message::StatusUpdateAck {
            framework_id: f.clone(),
            task_id: TaskId("t1".into()),
            uuid: UpdateId("u1".into()),
        }]
    );
    h.status(1, update(&f, "t1", &a, TaskState::Failed, "u2"));
    // A late non-terminal update does not resurrect the task, but is still forwarded.
    h.status(1, update(&f, "t1", &a, TaskState::Running, "u0"));
    let ups = h.updates(10);
    assert_eq!(ups.len(), 2);
    let t = h.m.task(&f, &TaskId("t1".into())).unwrap();
    assert_eq!(t.status.state, TaskState::Failed);
    assert_eq!(h.m.agent(&a).unwrap().used, Resources::ZERO);
    // Acknowledging the terminal update moves the task out of the live table.
    h.msg(
        10,
        Message::Acknowledge {
            agent_id: a.clone(),
            task_id: TaskId("t1".into()),
            uuid: UpdateId("u2".into()),
        },
    );
    assert!(h.m.task(&f, &TaskId("t1".into())).is_none());
    assert_eq!(h.m.completed_tasks().count(), 1);
    // A resend of that update now finds no task: the master acks it itself.
    h.take();
    h.status(1, update(&f, "t1", &a, TaskState::Failed, "u2"));
    assert!(h.updates(10).is_empty());
    assert!(matches!(&h.sent(1)[..], [Message::StatusUpdateAck { .. }]));
    // Acknowledge naming an unknown agent is an error.
    h.msg(
        10,
        Message::Acknowledge {
            agent_id: AgentId("nope".into()),
            task_id: TaskId("t1".into()),
            uuid: UpdateId("u2".into()),
        },
    );
    assert_eq!(errors(&h.sent(10)), ["acknowledge: unknown agent nope"]);
}

#[test]
fn updates_for_removed_framework_are_acked_by_master() {
    let (mut h, a, f, o, m) = one_agent_one_offer();
    h.accept(10, &[&o], vec![task("t1", &a, res(1.0, GIB), m)]);
    h.take();
    h.msg(10, Message::Teardown);
    assert_eq!(kill_tasks(&h.sent(1)), [TaskId("t1".into())]);
    assert!(h.m.framework(&f).is_none());
    // The task's resources stay used until the agent reports it killed.
    assert_eq!(h.m.agent(&a).unwrap().used, res(1.0, GIB));
    h.status(1, update(&f, "t1", &a, TaskState::Killed, "u9"));
    assert_eq!(
        h.sent(1),
        [Message::StatusUpdateAck {
            framework_id: f.clone(),
            task_id: TaskId("t1".into()),
            uuid: UpdateId("u9".into()),
        }]
    );
    assert!(h.updates(10).is_empty());
    assert_eq!(h.m.agent(&a).unwrap().used, Resources::ZERO);
    assert!(h.m.tasks().next().is_none());
    // Unknown framework altogether.
    h.status(
        1,
        update(&FrameworkId("zz".into()), "q", &a, TaskState::Running, "u"),
    );
    assert!(matches!(&h.sent(1)[..], [Message::StatusUpdateAck { .. }]));
    // The torn-down framework cannot come back under its id.
    h.msg(10, subscribe_msg("f1", Some(f.clone())));
    assert!(errors(&h.sent(10))[0].contains("torn down"));
}

#[test]
fn update_for_disconnected_framework_waits_for_the_agent_to_resend() {
    let (mut h, a, f, o, m) = one_agent_one_offer();
    h.accept(10, &[&o], vec![task("t1", &a, res(1.0, GIB), m)]);
    h.disconnect(10);
    h.take();
    h.status(1, update(&f, "t1", &a, TaskState::Running, "u1"));
    assert!(h.take().is_empty(), "neither forwarded nor acked");
    assert_eq!(
        h.m.task(&f, &TaskId("t1".into())).unwrap().status.state,
        TaskState::Running
    );
}

// ----- connections, roles, subscription -----

#[test]
fn role_violations_close_and_calls_need_subscribe() {
    let mut h = H::new();
    h.register(1, res(1.0, GIB));
    h.take();
    h.msg(
        1,
        Message::Accept {
            offer_ids: vec![],
            tasks: vec![],
            filters: Filters::default(),
        },
    );
    let c = h.closes();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].0, 1);
    assert!(c[0].1.contains("Accept is not allowed from agent"), "{c:?}");
    assert!(!h.m.agents().next().unwrap().is_connected());

    h.connect(10, SCHED);
    h.msg(10, Message::Revive);
    assert_eq!(
        errors(&h.sent(10)),
        ["not subscribed: send Subscribe before Revive"]
    );
    h.msg(10, Message::Heartbeat);
    assert!(h.closes()[0]
        .1
        .contains("Heartbeat is not allowed from scheduler"));
    // Messages after the close are ignored.
    h.msg(10, Message::Revive);
    assert!(h.take().is_empty());

    h.connect(11, SCHED);
    h.msg(
        11,
        Message::Register {
            agent_id: None,
            info: AgentInfo {
                reservations: vec![],
                hostname: "h".into(),
                resources: res(1.0, GIB),
                attributes: vec![],
            },
            running: vec![],
        },
    );
    assert_eq!(h.closes().len(), 1);
    h.connect(12, AGENT);
    h.status(
        12,
        update(
            &FrameworkId("f".into()),
            "t",
            &AgentId("a".into()),
            TaskState::Running,
            "u",
        ),
    );
    assert!(h.closes()[0].1.contains("before Register"));
}

#[test]
fn subscribe_validation_and_reattach() {
    let mut h = H::new();
    h.connect(10, SCHED);
    h.msg(10, subscribe_msg("", None));
    assert!(errors(&h.sent(10))[0].contains("name must not be empty"));
    let mut no_role = subscribe_msg("x", None);
    if let Message::Subscribe { framework } = &mut no_role {
        framework.role.clear();
    }
    h.msg(10, no_role);
    assert!(errors(&h.sent(10))[0].contains("role must not be empty"));

    let f = h.subscribe(11, "f1");
    h.register(1, res(1.0, GIB));
    assert_eq!(h.offers(11).len(), 1);
    // Same framework on a new connection: the old one is closed, offers move over.
    h.connect(12, SCHED);
    h.msg(12, subscribe_msg("f1", Some(f.clone())));
    let c = h.closes();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].0, 11);
    assert_eq!(h.offers(12).len(), 1);
    assert!(
        matches!(&h.sent(12)[0], Message::Subscribed { framework_id, .. } if *framework_id == f)
    );
    assert_eq!(h.m.framework(&f).unwrap().conn, Some(12));
    // The old connection's Disconnected does not disturb the framework.
    h.disconnect(11);
    assert!(h.m.framework(&f).unwrap().is_connected());
    // Unknown id (a previous master run): registered under that id.
    h.connect(13, SCHED);
    h.msg(
        13,
        subscribe_msg("old", Some(FrameworkId("prev-F7".into()))),
    );
    assert!(
        matches!(&h.sent(13)[0], Message::Subscribed { framework_id, .. } if framework_id.0 == "prev-F7")
    );
    // A second, different subscription on a subscribed connection is refused.
    h.msg(13, subscribe_msg("again", None));
    assert!(errors(&h.sent(13))[0].contains("already subscribed"));
}

#[test]
fn framework_failover_timeout_tears_down() {
    let (mut h, a, f, o, m) = one_agent_one_offer();
    h.accept(10, &[&o], vec![task("t1", &a, res(1.0, GIB), m)]);
    h.take();
    h.disconnect(10);
    assert_eq!(h.m.offers().count(), 0);
    h.advance(Duration::from_secs(59));
    assert!(h.m.framework(&f).is_some());
    // Re-subscribing inside the window keeps it.
    h.connect(11, SCHED);
    h.msg(11, subscribe_msg("f1", Some(f.clone())));
    h.advance(Duration::from_secs(120));
    assert!(h.m.framework(&f).is_some());
    assert!(kill_tasks(&h.sent(1)).is_empty());
    // Disconnect for good: torn down after 60 s, its task killed.
    h.disconnect(11);
    h.advance(Duration::from_secs(60));
    assert!(h.m.framework(&f).is_none());
    assert_eq!(kill_tasks(&h.sent(1)), [TaskId("t1".into())]);
}

#[test]
fn heartbeats_to_connected_frameworks() {
    let mut h = H::new();
    h.subscribe(10, "f1");
    h.subscribe(20, "f2");
    h.disconnect(20);
    h.take();
    h.advance(Duration::from_secs(5));
    assert_eq!(h.sent(10), [Message::Heartbeat]);
    assert!(h.take().is_empty());
    h.advance(Duration::from_secs(10));
    assert_eq!(h.sent(10), [Message::Heartbeat, Message::Heartbeat]);
}

// ----- kill, reconcile -----

#[test]
fn kill_and_reconcile() {
    let (mut h, a, f, o, m) = one_agent_one_offer();
    h.accept(10, &[&o], vec![task("t1", &a, res(1.0, GIB), m)]);
    h.take();
    h.msg(
        10,
        Message::Kill {
            task_id: TaskId("t1".into()),
        },
    );
    assert_eq!(kill_tasks(&h.sent(1)), [TaskId("t1".into())]);
    h.msg(
        10,
        Message::Kill {
            task_id: TaskId("nope".into()),
        },
    );
    assert_eq!(errors(&h.sent(10)), ["unknown task nope"]);
    h.status(1, update(&f, "t1", &a, TaskState::Killed, "u1"));
    h.take();
    h.msg(
        10,
        Message::Kill {
            task_id: TaskId("t1".into()),
        },
    );
    assert!(errors(&h.sent(10))[0].contains("already terminal (TASK_KILLED)"));

    h.msg(10, Message::Reconcile { task_ids: vec![] });
    let ups = h.updates(10);
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].state, TaskState::Killed);
    assert_eq!(ups[0].uuid, None);
    h.msg(
        10,
        Message::Reconcile {
            task_ids: vec![TaskId("t1".into()), TaskId("ghost".into())],
        },
    );
    let ups = h.updates(10);
    assert_eq!(ups[0].state, TaskState::Killed);
    assert_eq!(ups[1].state, TaskState::Lost);
    assert_eq!(ups[1].message, "unknown task");
}

// ----- determinism and robustness -----

/// A small seeded generator (xorshift64*), so the fuzz test needs no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random but plausible traffic from three agents (conns 1..=3) and three schedulers
/// (conns 4..=6), with the odd protocol violation; returns every action.
fn random_run(seed: u64, steps: usize) -> Vec<Action> {
    let mut h = H::new();
    let mut rng = Rng(seed | 1);
    let module = h.upload_module(b"m");
    let mut all = Vec::new();
    let mut known_offers: Vec<Offer> = Vec::new();
    let mut agent_ids: Vec<AgentId> = Vec::new();
    let mut fw_ids: Vec<FrameworkId> = Vec::new();
    let mut next_task = 0u64;
    for _ in 0..steps {
        let op = rng.below(20);
        let is_agent = matches!(op, 3 | 9 | 10 | 15);
        let conn = rng.below(3) + if is_agent { 1 } else { 4 };
        let role = if is_agent { AGENT } else { SCHED };
        if !h.m.conns.contains_key(&conn) {
            h.connect(conn, role);
        }
        let bound_fw = match h.m.binding(conn) {
            Some(Binding::Framework(f)) => Some(f),
            _ => None,
        };
        match op {
            0 => {
                h.disconnect(conn);
                h.connect(conn, role);
            }
            1 if rng.below(3) == 0 => h.disconnect(conn),
            2 => h.advance(Duration::from_millis(rng.below(15_000))),
            3 | 15 => {
                let id = match rng.below(4) {
                    0 => None,
                    _ => agent_ids.last().cloned(),
                };
                h.msg(conn, register_msg(id, res(4.0, 4 * GIB), vec![]));
            }
            4 => {
                let id = if rng.below(2) == 0 {
                    None
                } else {
                    fw_ids
                        .get(rng.below(fw_ids.len() as u64 + 1) as usize)
                        .cloned()
                };
                h.msg(conn, subscribe_msg("f", id));
            }
            5..=7 if !known_offers.is_empty() => {
                let mine: Vec<Offer> =
                    h.m.offers()
                        .filter(|o| Some(&o.framework_id) == bound_fw.as_ref())
                        .cloned()
                        .collect();
                let o = if !mine.is_empty() && rng.below(5) != 0 {
                    mine[rng.below(mine.len() as u64) as usize].clone()
                } else {
                    known_offers[rng.below(known_offers.len() as u64) as usize].clone()
                };
                let n = rng.below(3);
                let tasks = (0..n)
                    .map(|_| {
                        next_task += 1;
                        let r = res((rng.below(3000) as f64) / 1000.0, rng.below(3) * GIB);
                        task(&format!("t{}", next_task % 20), &o.agent_id, r, module)
                    })
                    .collect();
                h.msg(
                    conn,
                    Message::Accept {
                        offer_ids: vec![o.id],
                        tasks,
                        filters: Filters {
                            refuse_seconds: rng.below(3) as f64,
                        },
                    },
                );
            }
            8 if !known_offers.is_empty() => {
                let o = known_offers[rng.below(known_offers.len() as u64) as usize].clone();
                h.msg(
                    conn,
                    Message::Decline {
                        offer_ids: vec![o.id],
                        filters: Filters::default(),
                    },
                );
            }
            11 => h.msg(
                conn,
                if rng.below(2) == 0 {
                    Message::Revive
                } else {
                    Message::Suppress
                },
            ),
            9 | 10 => {
                let live: Vec<TaskEntry> = h.m.tasks().cloned().collect();
                if let Some(t) = live.get(rng.below(live.len() as u64 + 1) as usize) {
                    let states = [TaskState::Running, TaskState::Finished, TaskState::Failed];
                    let st = states[rng.below(3) as usize];
                    let u = format!("u{}", rng.below(1000));
                    let (f, tid, a) = (&t.framework_id, t.info.task_id.as_str(), &t.info.agent_id);
                    let s = update(f, tid, a, st, &u);
                    h.msg(conn, Message::StatusUpdate { status: s.clone() });
                    let fconn = h.m.framework(f).and_then(|f| f.conn);
                    if let (Some(fconn), Some(uuid)) = (fconn, s.uuid) {
                        if rng.below(3) != 0 {
                            h.msg(
                                fconn,
                                Message::Acknowledge {
                                    agent_id: a.clone(),
                                    task_id: t.info.task_id.clone(),
                                    uuid,
                                },
                            );
                        }
                    }
                }
            }
            12 => {
                let tid = TaskId(format!("t{}", rng.below(20)));
                h.msg(
                    conn,
                    if rng.below(2) == 0 {
                        Message::Kill { task_id: tid }
                    } else {
                        Message::Reconcile {
                            task_ids: vec![tid],
                        }
                    },
                );
            }
            13 if rng.below(10) == 0 => h.msg(conn, Message::Teardown),
            14 if rng.below(5) == 0 => {
                // A protocol violation on any connection.
                let c = rng.below(6) + 1;
                h.msg(c, Message::Heartbeat);
            }
            _ => h.advance(Duration::from_millis(rng.below(1500))),
        }
        for a in h.take() {
            if let Action::Send { msg, .. } = &a {
                match msg {
                    Message::Offers { offers } => known_offers.extend(offers.iter().cloned()),
                    Message::Registered { agent_id } => agent_ids.push(agent_id.clone()),
                    Message::Subscribed { framework_id, .. } => fw_ids.push(framework_id.clone()),
                    _ => {}
                }
            }
            all.push(a);
        }
        if known_offers.len() > 50 {
            known_offers.drain(..25);
        }
    }
    all
}

#[test]
fn random_traffic_keeps_invariants_and_is_deterministic() {
    for seed in 1..=20u64 {
        let a = random_run(seed, 400);
        let b = random_run(seed, 400);
        assert_eq!(a, b, "seed {seed} is not deterministic");
    }
}

#[test]
fn poll_timeout_is_sane() {
    let mut h = H::new();
    let t0 = h.now;
    assert_eq!(h.m.poll_timeout(), Some(t0 + Duration::from_secs(1)));
    // Extra handle_timeout calls are harmless.
    h.m.handle_timeout(t0);
    h.m.handle_timeout(t0);
    assert!(h.m.poll_action().is_none());
    h.register(1, res(1.0, GIB));
    h.disconnect(1);
    assert_eq!(h.m.poll_timeout(), Some(t0 + Duration::from_secs(1)));
    h.advance(Duration::from_secs(3));
    // Next: the periodic round at t0+4, heartbeat at t0+5, removal at t0+10.
    assert_eq!(h.m.poll_timeout(), Some(t0 + Duration::from_secs(4)));
}

#[test]
fn random_traffic_reaches_interesting_states() {
    let mut kinds: BTreeMap<&'static str, usize> = BTreeMap::new();
    for seed in 1..=20u64 {
        for a in random_run(seed, 400) {
            let k = match &a {
                Action::Send { msg, .. } => msg.kind(),
                Action::Close { .. } => "Close",
            };
            *kinds.entry(k).or_default() += 1;
        }
    }
    for k in [
        "Offers",
        "RunTask",
        "Update",
        "StatusUpdateAck",
        "Rescind",
        "Error",
        "Close",
    ] {
        assert!(
            kinds.get(k).copied().unwrap_or(0) > 0,
            "never saw {k}: {kinds:?}"
        );
    }
}

/// Allocation policies through the core: DRF, weights, quotas, reservations, priority, and the
/// offer life cycle; and property tests.
mod policies;

/// Property tests of allocation invariants on random clusters and event sequences.
mod props;
