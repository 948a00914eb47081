//! Determinism and robustness: seeded random traffic (with the odd protocol violation) keeps
//! the invariants, always produces the same actions, and reaches the interesting states.

use super::*;

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
fn random_traffic_reaches_interesting_states() {
    let mut kinds: BTreeMap<&'static str, usize> = BTreeMap::new();
    for seed in 1..=20u64 {
        for a in random_run(seed, 400) {
            let k = match &a {
                Action::Send { msg, .. } => msg.kind(),
                Action::Close { .. } => "Close",
                Action::Persist(_) => "Persist",
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
