//! Property tests (proptest) of the allocator through the core, on random clusters (agents with
//! and without reservations, frameworks in roles with weights, limits, guarantees and
//! priorities) and random event sequences: after every step, no agent or reserved pool is
//! over-committed and no resource is in two offers (`check_invariants`), no offer goes to a
//! suppressed framework or to one whose refuse filter covers the agent, reserved offers go only
//! to their role, quota limits hold; and at the end, when everyone revives and keeps declining
//! briefly, every framework is offered something (DRF), or at least the top priority tier
//! (strict priority), unless a guarantee sets resources aside.

use super::*;
use crate::allocator::{Priority, RoleSpec};
use proptest::prelude::*;

const ROLES: [&str; 3] = ["r0", "r1", "r2"];

#[derive(Clone, Debug)]
struct Cluster {
    priority_policy: bool,
    /// (cpus, GiB, reserved half for role index?)
    agents: Vec<(u64, u64, Option<usize>)>,
    /// (role index, priority)
    frameworks: Vec<(usize, i32)>,
    weight_r0: f64,
    limit_r1: Option<(u64, u64)>,
    guarantee_r2: bool,
}

#[derive(Clone, Debug)]
enum Op {
    Accept { fw: usize, pick: usize, tenths: u64 },
    Decline { fw: usize, pick: usize, secs: u64 },
    Suppress(usize),
    Revive(usize),
    Finish(usize),
    Advance(u64),
    Bounce(usize),
}

fn cluster() -> impl Strategy<Value = Cluster> {
    (
        any::<bool>(),
        prop::collection::vec((1u64..=8, 1u64..=8, prop::option::of(0usize..2)), 1..=6),
        prop::collection::vec((0usize..3, 0i32..3), 1..=4),
        1u64..=3,
        prop::option::of((1u64..=6, 1u64..=6)),
        any::<bool>(),
    )
        .prop_map(|(p, agents, frameworks, w, limit_r1, g)| Cluster {
            priority_policy: p,
            agents,
            frameworks,
            weight_r0: w as f64,
            limit_r1,
            guarantee_r2: g,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..4, 0usize..8, 1u64..=10).prop_map(|(fw, pick, tenths)| Op::Accept { fw, pick, tenths }),
        3 => (0usize..4, 0usize..8, 0u64..=10).prop_map(|(fw, pick, secs)| Op::Decline { fw, pick, secs }),
        1 => (0usize..4).prop_map(Op::Suppress),
        1 => (0usize..4).prop_map(Op::Revive),
        2 => (0usize..16).prop_map(Op::Finish),
        2 => (0u64..3000).prop_map(Op::Advance),
        1 => (0usize..6).prop_map(Op::Bounce),
    ]
}

/// An agent: its connection, id, total and reservations.
type AgentModel = (ConnId, AgentId, Resources, Vec<(String, Resources)>);

struct World {
    h: H,
    module: Digest,
    agents: Vec<AgentModel>,
    fws: Vec<(ConnId, FrameworkId, &'static str)>,
    suppressed: Vec<bool>,
    /// Our own model of refuse filters: (framework index, agent) → until.
    filters: BTreeMap<(usize, AgentId), Instant>,
    limits: BTreeMap<&'static str, Resources>,
    next_task: u64,
    next_uuid: u64,
}

impl World {
    fn new(c: &Cluster) -> Self {
        let mut roles = Roles::new();
        roles.insert(
            "r0".into(),
            RoleSpec {
                weight: c.weight_r0,
                ..RoleSpec::default()
            },
        );
        let mut limits = BTreeMap::new();
        if let Some((cpus, gib)) = c.limit_r1 {
            let l = Resources::new(cpus * 1000, cpus.max(gib) * GIB, 0);
            limits.insert("r1", l);
            roles.insert(
                "r1".into(),
                RoleSpec {
                    limit: Some(l),
                    ..RoleSpec::default()
                },
            );
        }
        if c.guarantee_r2 {
            roles.insert(
                "r2".into(),
                RoleSpec {
                    guarantee: res(1.0, GIB),
                    ..RoleSpec::default()
                },
            );
        }
        let cfg = MasterConfig {
            run_id: "p".into(),
            roles,
            heartbeat_interval: Duration::ZERO,
            ..MasterConfig::default()
        };
        let alloc: Box<dyn Allocator> = if c.priority_policy {
            Box::new(Priority::new())
        } else {
            Box::new(Drf::new())
        };
        let mut h = H::with_allocator(cfg, alloc);
        let module = h.upload_module(b"m");
        let mut fws = Vec::new();
        for (i, (role, prio)) in c.frameworks.iter().enumerate() {
            let conn = 100 + i as ConnId;
            h.connect(conn, SCHED);
            h.msg(
                conn,
                Message::Subscribe {
                    framework: FrameworkInfo {
                        priority: *prio,
                        name: format!("f{i}"),
                        role: ROLES[*role].into(),
                        principal: "p".into(),
                        id: None,
                        failover_timeout_ms: 3_600_000,
                    },
                },
            );
            let fid = match h.take_first(conn) {
                Some(Message::Subscribed { framework_id, .. }) => framework_id,
                other => panic!("{other:?}"),
            };
            fws.push((conn, fid, ROLES[*role]));
        }
        let mut w = World {
            h,
            module,
            agents: Vec::new(),
            suppressed: vec![false; fws.len()],
            fws,
            filters: BTreeMap::new(),
            limits,
            next_task: 0,
            next_uuid: 0,
        };
        for (i, (cpus, gib, reserved)) in c.agents.iter().enumerate() {
            let total = Resources::new(cpus * 1000, gib * GIB, 0);
            let reservations = match reserved {
                Some(r) => vec![(
                    ROLES[*r].to_owned(),
                    Resources::new(cpus * 500, gib * GIB / 2, 0),
                )],
                None => vec![],
            };
            let conn = 1 + i as ConnId;
            w.h.connect(conn, AGENT);
            let id = w.register(conn, None, total, reservations.clone());
            w.agents.push((conn, id, total, reservations));
        }
        w.check_step();
        w
    }

    fn register(
        &mut self,
        conn: ConnId,
        id: Option<AgentId>,
        total: Resources,
        reservations: Vec<(String, Resources)>,
    ) -> AgentId {
        self.h.msg(
            conn,
            Message::Register {
                executors: Vec::new(),
                agent_id: id,
                info: AgentInfo {
                    datasets: Vec::new(),
                    hostname: format!("h{conn}"),
                    resources: total,
                    reservations,
                    attributes: vec![],
                },
                running: vec![],
            },
        );
        match self.h.take_first(conn) {
            Some(Message::Registered { agent_id }) => agent_id,
            other => panic!("{other:?}"),
        }
    }

    /// Checks the offers sent since the last step against our model; forgets other actions.
    fn check_step(&mut self) {
        let now = self.h.now;
        for a in self.h.take() {
            let Action::Send {
                conn,
                msg: Message::Offers { offers },
            } = a
            else {
                continue;
            };
            let fi = self
                .fws
                .iter()
                .position(|f| f.0 == conn)
                .expect("known framework");
            assert!(!self.suppressed[fi], "offer to suppressed framework {fi}");
            for o in offers {
                if let Some(until) = self.filters.get(&(fi, o.agent_id.clone())) {
                    assert!(*until <= now, "offer to {fi} on filtered {}", o.agent_id);
                }
                if let Some(r) = &o.reserved_for {
                    assert_eq!(r, self.fws[fi].2, "reserved offer to another role");
                }
            }
        }
        for (role, limit) in &self.limits {
            let used = self.h.m.role_allocated(role);
            assert!(
                limit.contains(&used),
                "role {role} at {used} over its limit {limit}"
            );
        }
    }

    fn my_offers(&self, fi: usize) -> Vec<Offer> {
        let fid = &self.fws[fi].1;
        self.h
            .m
            .offers()
            .filter(|o| o.framework_id == *fid)
            .collect()
    }

    fn apply(&mut self, op: &Op) {
        let nf = self.fws.len();
        match *op {
            Op::Accept { fw, pick, tenths } => {
                let fi = fw % nf;
                let offers = self.my_offers(fi);
                if let Some(o) = offers.get(pick % offers.len().max(1)) {
                    // A task of a fraction of the offer (at least 0.01 cpu and 1 MiB).
                    let r = Resources::new(
                        (o.resources.cpus_milli * tenths / 10).max(10),
                        (o.resources.mem * tenths / 10).max(MIB),
                        0,
                    );
                    self.next_task += 1;
                    let t = task(&format!("t{}", self.next_task), &o.agent_id, r, self.module);
                    self.h.msg(
                        self.fws[fi].0,
                        Message::Accept {
                            offer_ids: vec![o.id.clone()],
                            tasks: vec![t],
                            filters: Filters {
                                refuse_seconds: 0.0,
                            },
                        },
                    );
                }
            }
            Op::Decline { fw, pick, secs } => {
                let fi = fw % nf;
                let offers = self.my_offers(fi);
                if let Some(o) = offers.get(pick % offers.len().max(1)) {
                    if secs > 0 {
                        let until = self.h.now + Duration::from_secs(secs);
                        let e = self
                            .filters
                            .entry((fi, o.agent_id.clone()))
                            .or_insert(until);
                        *e = (*e).max(until);
                    }
                    self.h.msg(
                        self.fws[fi].0,
                        Message::Decline {
                            offer_ids: vec![o.id.clone()],
                            filters: Filters {
                                refuse_seconds: secs as f64,
                            },
                        },
                    );
                }
            }
            Op::Suppress(fw) => {
                let fi = fw % nf;
                self.suppressed[fi] = true;
                self.h.msg(self.fws[fi].0, Message::Suppress);
            }
            Op::Revive(fw) => {
                let fi = fw % nf;
                self.suppressed[fi] = false;
                self.filters.retain(|(f, _), _| *f != fi);
                self.h.msg(self.fws[fi].0, Message::Revive);
            }
            Op::Finish(pick) => {
                let live: Vec<TaskEntry> = self
                    .h
                    .m
                    .tasks()
                    .filter(|t| !t.is_terminal())
                    .cloned()
                    .collect();
                if let Some(t) = live.get(pick % live.len().max(1)) {
                    let conn = self
                        .agents
                        .iter()
                        .find(|a| a.1 == t.info.agent_id)
                        .map(|a| a.0);
                    if let Some(conn) = conn {
                        self.next_uuid += 1;
                        let st = update(
                            &t.framework_id,
                            t.info.task_id.as_str(),
                            &t.info.agent_id,
                            TaskState::Finished,
                            &format!("u{}", self.next_uuid),
                        );
                        self.h.status(conn, st);
                    }
                }
            }
            Op::Advance(ms) => self.h.advance(Duration::from_millis(ms)),
            Op::Bounce(i) => {
                let (conn, id, total, reservations) = self.agents[i % self.agents.len()].clone();
                self.h.disconnect(conn);
                self.h.connect(conn, AGENT);
                let again = self.register(conn, Some(id.clone()), total, reservations);
                assert_eq!(again, id);
            }
        }
        self.check_step();
    }

    /// Everyone revives; all tasks finish; for 30 s every framework declines whatever it gets
    /// for a second. Returns which frameworks were offered something.
    fn final_phase(&mut self) -> Vec<bool> {
        for fi in 0..self.fws.len() {
            self.apply(&Op::Revive(fi));
        }
        for _ in 0..64 {
            self.apply(&Op::Finish(0));
        }
        let mut got = vec![false; self.fws.len()];
        for _ in 0..300 {
            for (fi, got) in got.iter_mut().enumerate() {
                for _ in self.my_offers(fi) {
                    *got = true;
                    self.apply(&Op::Decline {
                        fw: fi,
                        pick: 0,
                        secs: 1,
                    });
                }
            }
            self.apply(&Op::Advance(100));
        }
        got
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn allocation_invariants_hold(c in cluster(), ops in prop::collection::vec(op(), 0..40)) {
        let mut w = World::new(&c);
        for op in &ops {
            w.apply(op);
        }
        let got = w.final_phase();
        if !c.priority_policy && !c.guarantee_r2 {
            for (fi, got) in got.iter().enumerate() {
                prop_assert!(*got, "framework {} ({}) starved", fi, w.fws[fi].2);
            }
        }
        if c.priority_policy && !c.guarantee_r2 {
            // The highest priority tier is never starved (an unmet guarantee may legitimately
            // hold a small cluster back for its role).
            let top = c.frameworks.iter().map(|f| f.1).max().unwrap_or(0);
            prop_assert!(
                c.frameworks.iter().zip(&got).any(|(f, g)| f.1 == top && *g),
                "the top priority tier starved"
            );
        }
    }
}
