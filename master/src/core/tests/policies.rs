//! Allocation policies end to end through the core, with simulated frameworks.

use super::*;
use crate::allocator::{Priority, RoleSpec};

/// A master with `alloc` and `cfg`, in virtual time.
fn h_with(cfg: MasterConfig, alloc: Box<dyn Allocator>) -> H {
    H::with_allocator(cfg, alloc)
}

fn cfg(roles: Vec<(&str, RoleSpec)>) -> MasterConfig {
    MasterConfig {
        run_id: "r".into(),
        roles: roles.into_iter().map(|(r, s)| (r.to_owned(), s)).collect(),
        heartbeat_interval: Duration::ZERO,
        ..MasterConfig::default()
    }
}

fn subscribe_as(h: &mut H, conn: ConnId, name: &str, role: &str, priority: i32) -> FrameworkId {
    h.connect(conn, SCHED);
    h.msg(
        conn,
        Message::Subscribe {
            framework: FrameworkInfo {
                priority,
                name: name.into(),
                role: role.into(),
                principal: "test".into(),
                id: None,
                failover_timeout_ms: 60_000,
            },
        },
    );
    match h.take_first(conn) {
        Some(Message::Subscribed { framework_id, .. }) => framework_id,
        other => panic!("expected Subscribed, got {other:?}"),
    }
}

fn register_reserved(
    h: &mut H,
    conn: ConnId,
    total: Resources,
    reservations: Vec<(&str, Resources)>,
) -> AgentId {
    h.connect(conn, AGENT);
    h.msg(
        conn,
        Message::Register {
            executors: Vec::new(),
            agent_id: None,
            info: AgentInfo {
                datasets: Vec::new(),
                hostname: format!("h{conn}"),
                resources: total,
                reservations: reservations
                    .into_iter()
                    .map(|(r, x)| (r.to_owned(), x))
                    .collect(),
                attributes: vec![],
            },
            running: vec![],
        },
    );
    match h.take_first(conn) {
        Some(Message::Registered { agent_id }) => agent_id,
        other => panic!("expected Registered, got {other:?}"),
    }
}

/// A framework that launches one task of `shape` per offer while it fits (returning the rest
/// unfiltered) and declines offers it cannot use for a second.
struct Greedy {
    conn: ConnId,
    shape: Resources,
    launched: usize,
}

/// Plays greedy frameworks for `rounds` steps of 100 ms of virtual time. Returns the offers
/// each framework saw (by index), for assertions about who was offered what.
fn play(h: &mut H, fws: &mut [Greedy], module: Digest, rounds: usize) -> Vec<Vec<Offer>> {
    let mut seen = vec![Vec::new(); fws.len()];
    let mut n = 0;
    for _ in 0..rounds {
        for (i, f) in fws.iter_mut().enumerate() {
            for o in h.offers(f.conn) {
                seen[i].push(o.clone());
                if o.resources.contains(&f.shape) {
                    n += 1;
                    let t = task(&format!("g{n}"), &o.agent_id, f.shape, module);
                    h.msg(
                        f.conn,
                        Message::Accept {
                            offer_ids: vec![o.id.clone()],
                            tasks: vec![t],
                            filters: Filters {
                                refuse_seconds: 0.0,
                            },
                        },
                    );
                    f.launched += 1;
                } else {
                    h.msg(
                        f.conn,
                        Message::Decline {
                            offer_ids: vec![o.id.clone()],
                            filters: Filters {
                                refuse_seconds: 1.0,
                            },
                        },
                    );
                }
            }
        }
        h.advance(Duration::from_millis(100));
    }
    h.take();
    seen
}

fn greedy(conn: ConnId, shape: Resources) -> Greedy {
    Greedy {
        conn,
        shape,
        launched: 0,
    }
}

// ----- DRF -----

#[test]
fn drf_paper_example() {
    // 9 cpus, 18 GB; A's tasks <1 cpu, 4 GB>, B's <3 cpus, 1 GB>; both greedy.
    let mut h = h_with(cfg(vec![]), Box::new(Drf::new()));
    let m = h.upload_module(b"m");
    h.register(1, res(9.0, 18 * GIB));
    let a = h.subscribe(10, "A");
    let b = h.subscribe(20, "B");
    let mut fws = [greedy(10, res(1.0, 4 * GIB)), greedy(20, res(3.0, GIB))];
    play(&mut h, &mut fws, m, 50);
    assert_eq!((fws[0].launched, fws[1].launched), (3, 2));
    let total = h.m.cluster_total();
    let used = |f: &FrameworkId| {
        h.m.tasks()
            .filter(|t| t.framework_id == *f)
            .fold(Resources::ZERO, |s, t| s + t.info.resources)
    };
    let (sa, sb) = (
        used(&a).dominant_share(&total),
        used(&b).dominant_share(&total),
    );
    assert!((sa - 2.0 / 3.0).abs() < 1e-9, "{sa}");
    assert!((sb - 2.0 / 3.0).abs() < 1e-9, "{sb}");
    // A holds <3 cpus, 12 GB>, B <6 cpus, 2 GB>: <0 cpus, 4 GB> is left, below the minimum.
    assert_eq!(used(&a), res(3.0, 12 * GIB));
    assert_eq!(used(&b), res(6.0, 2 * GIB));
    assert_eq!(h.m.offers().count(), 0);
}

/// Frameworks (conn, role, priority) subscribe, then 30 agents of <1 cpu, 1 GB> register at
/// once; every framework takes <1, 1> tasks.
fn roles_cluster(
    roles: Vec<(&str, RoleSpec)>,
    alloc: Box<dyn Allocator>,
    fws: &[(ConnId, &str, i32)],
) -> (H, Digest, Vec<Greedy>) {
    let mut h = h_with(cfg(roles), alloc);
    let m = h.upload_module(b"m");
    for (conn, role, prio) in fws {
        subscribe_as(&mut h, *conn, &format!("f{conn}"), role, *prio);
    }
    register_batch(&mut h, 1..=30, res(1.0, GIB));
    let g = fws
        .iter()
        .map(|(c, _, _)| greedy(*c, res(1.0, GIB)))
        .collect();
    (h, m, g)
}

/// Agents on `conns` register at one instant, served by one allocation round.
fn register_batch(h: &mut H, conns: std::ops::RangeInclusive<ConnId>, r: Resources) {
    for c in conns.clone() {
        h.m.handle(
            h.now,
            Event::Connected {
                conn: c,
                role: AGENT,
                peer: format!("a{c}"),
                principal: principal_for(AGENT, "default"),
            },
        );
    }
    for c in conns {
        h.m.handle(
            h.now,
            Event::Message {
                conn: c,
                msg: register_msg(None, r, vec![]),
            },
        );
    }
    h.settle();
    h.out.retain(|a| {
        !matches!(
            a,
            Action::Send {
                msg: Message::Registered { .. },
                ..
            }
        )
    });
}

#[test]
fn weights_two_to_one_give_shares_two_to_one() {
    let heavy = RoleSpec {
        weight: 2.0,
        ..RoleSpec::default()
    };
    let (mut h, m, mut fws) = roles_cluster(
        vec![("a", heavy)],
        Box::new(Drf::new()),
        &[(100, "a", 0), (200, "b", 0)],
    );
    play(&mut h, &mut fws, m, 30);
    assert_eq!((fws[0].launched, fws[1].launched), (20, 10));
}

#[test]
fn equal_weights_share_equally_and_roles_come_before_frameworks() {
    // Role a has two frameworks, role b one: roles share 15:15, a's frameworks split theirs.
    let (mut h, m, mut fws) = roles_cluster(
        vec![],
        Box::new(Drf::new()),
        &[(100, "a", 0), (101, "a", 0), (200, "b", 0)],
    );
    play(&mut h, &mut fws, m, 30);
    let l: Vec<usize> = fws.iter().map(|f| f.launched).collect();
    assert_eq!(l[0] + l[1], 15);
    assert!(l[0].abs_diff(l[1]) <= 1, "{l:?}");
    assert_eq!(l[2], 15);
}

#[test]
fn guarantee_is_met_before_fair_share_and_set_aside_until_used() {
    let q = RoleSpec {
        guarantee: res(20.0, 20 * GIB),
        ..RoleSpec::default()
    };
    // p comes first and is greedy, but q's guarantee is set aside even before q subscribes.
    let (mut h, m, mut p) = roles_cluster(vec![("q", q)], Box::new(Drf::new()), &[(100, "p", 0)]);
    play(&mut h, &mut p, m, 20);
    assert_eq!(p[0].launched, 10);
    // q arrives and gets its guarantee (20), more than its fair share (15).
    subscribe_as(&mut h, 200, "q", "q", 0);
    let mut fws = [greedy(100, res(1.0, GIB)), greedy(200, res(1.0, GIB))];
    fws[0].launched = 10;
    play(&mut h, &mut fws, m, 30);
    assert_eq!((fws[0].launched, fws[1].launched), (10, 20));
}

#[test]
fn limit_is_never_exceeded() {
    let l = RoleSpec {
        limit: Some(res(3.0, 3 * GIB)),
        ..RoleSpec::default()
    };
    let (mut h, m, mut fws) = roles_cluster(vec![("l", l)], Box::new(Drf::new()), &[(100, "l", 0)]);
    let f = h.m.frameworks().next().unwrap().id.clone();
    for _ in 0..20 {
        play(&mut h, &mut fws, m, 1);
        assert!(res(3.0, 3 * GIB).contains(&h.m.framework_allocated(&f)));
    }
    assert_eq!(fws[0].launched, 3);
    // Another role still gets the rest.
    subscribe_as(&mut h, 200, "fo", "o", 0);
    let mut fws = [greedy(100, res(1.0, GIB)), greedy(200, res(1.0, GIB))];
    play(&mut h, &mut fws, m, 30);
    assert_eq!((fws[0].launched, fws[1].launched), (0, 27));
}

#[test]
fn reserved_resources_go_only_to_their_role() {
    let mut h = h_with(cfg(vec![]), Box::new(Drf::new()));
    let m = h.upload_module(b"m");
    let a = register_reserved(
        &mut h,
        1,
        res(4.0, 4 * GIB),
        vec![("analytics", res(2.0, 2 * GIB))],
    );
    subscribe_as(&mut h, 10, "web", "web", 0);
    let web = h.offers(10);
    assert_eq!(web.len(), 1);
    assert_eq!(web[0].resources, res(2.0, 2 * GIB));
    assert_eq!(web[0].reserved_for, None);
    // web declines for an hour: the reserved half still is not offered to it.
    h.decline(10, &web[0], 3600.0);
    h.advance(Duration::from_secs(5));
    assert!(h.offers(10).is_empty());
    let an = subscribe_as(&mut h, 20, "an", "analytics", 0);
    let mut offers = h.offers(20);
    offers.sort_by_key(|o| o.reserved_for.is_none());
    assert_eq!(offers.len(), 2, "{offers:?}");
    assert_eq!(offers[0].reserved_for.as_deref(), Some("analytics"));
    assert_eq!(offers[0].resources, res(2.0, 2 * GIB));
    assert_eq!(offers[1].reserved_for, None);
    // One task across both offers: the reserved pool is drawn first.
    h.accept(
        20,
        &[&offers[0], &offers[1]],
        vec![task("t", &a, res(3.0, 3 * GIB), m)],
    );
    let ag = h.m.agent(&a).unwrap();
    assert_eq!(ag.reserved_used.get("analytics"), Some(&res(2.0, 2 * GIB)));
    assert_eq!(ag.used, res(3.0, 3 * GIB));
    assert_eq!(
        h.m.task(&an, &TaskId("t".into())).unwrap().reserved,
        vec![("analytics".to_owned(), res(2.0, 2 * GIB))]
    );
}

#[test]
fn reservations_are_sanitised() {
    let mut h = h_with(cfg(vec![]), Box::new(Drf::new()));
    let a = register_reserved(
        &mut h,
        1,
        res(2.0, 2 * GIB),
        vec![
            ("x", res(1.0, GIB)),
            ("*", res(1.0, GIB)),
            ("x", res(0.5, 0)),
            ("y", res(4.0, 4 * GIB)),
        ],
    );
    let ag = h.m.agent(&a).unwrap();
    assert_eq!(
        ag.reservations,
        vec![
            ("x".to_owned(), res(1.5, GIB)),
            ("y".to_owned(), res(0.5, GIB))
        ]
    );
    assert_eq!(ag.unreserved_free(), Resources::ZERO);
}

// ----- strict priority -----

#[test]
fn strict_priority_serves_the_high_priority_framework_first() {
    let (mut h, m, mut fws) = roles_cluster(
        vec![],
        Box::new(Priority::new()),
        &[(100, "*", 0), (200, "*", 10)],
    );
    play(&mut h, &mut fws, m, 30);
    assert_eq!((fws[0].launched, fws[1].launched), (0, 30));
}

#[test]
fn strict_priority_equal_priorities_share_by_drf() {
    let (mut h, m, mut fws) = roles_cluster(
        vec![],
        Box::new(Priority::new()),
        &[(100, "*", 5), (200, "*", 5), (300, "*", 1)],
    );
    play(&mut h, &mut fws, m, 30);
    let l: Vec<usize> = fws.iter().map(|f| f.launched).collect();
    assert_eq!(l, [15, 15, 0]);
}

#[test]
fn priority_leftovers_go_to_lower_priorities() {
    // hi only wants <2 cpus, 2 GB> tasks on <1, 1> agents: it declines, and lo gets them.
    let (mut h, m, mut fws) = roles_cluster(
        vec![],
        Box::new(Priority::new()),
        &[(100, "*", 0), (200, "*", 10)],
    );
    fws[1].shape = res(2.0, 2 * GIB);
    play(&mut h, &mut fws, m, 30);
    assert_eq!((fws[0].launched, fws[1].launched), (30, 0));
}

// ----- the offer life cycle -----

/// Two frameworks, one agent <4 cpus, 4 GB>; f1 holds the first offer.
fn life_cycle(c: MasterConfig) -> (H, FrameworkId, FrameworkId, Offer) {
    let mut h = h_with(c, Box::new(Drf::new()));
    h.register(1, res(4.0, 4 * GIB));
    let f1 = h.subscribe(10, "f1");
    let f2 = h.subscribe(20, "f2");
    let o = h.offers(10).remove(0);
    assert!(h.offers(20).is_empty());
    h.take();
    (h, f1, f2, o)
}

#[test]
fn decline_filter_sends_the_offer_elsewhere_until_it_expires() {
    let (mut h, _, _, o) = life_cycle(cfg(vec![]));
    h.decline(10, &o, 5.0);
    // f1 has the same share and subscribed first, but refuses the agent for 5 s.
    let o2 = h.offers(20).remove(0);
    assert!(h.offers(10).is_empty());
    h.decline(20, &o2, 0.5);
    h.advance(Duration::from_millis(400));
    assert!(h.take().is_empty(), "both refuse the agent");
    h.advance(Duration::from_millis(700));
    assert_eq!(h.offers(20).len(), 1, "f2's filter expired first");
    assert!(h.offers(10).is_empty());
}

#[test]
fn suppress_stops_offers_and_revive_restores_them_clearing_filters() {
    let (mut h, f1, _, o) = life_cycle(cfg(vec![]));
    h.decline(10, &o, 3600.0);
    let o2 = h.offers(20).remove(0);
    h.msg(20, Message::Suppress);
    h.decline(20, &o2, 0.0);
    h.advance(Duration::from_secs(10));
    assert!(h.take().is_empty(), "f1 filtered, f2 suppressed");
    assert!(h.m.framework(&f1).is_some());
    // f1 revives: its hour-long filter is gone and it is offered the agent at once.
    h.msg(10, Message::Revive);
    assert_eq!(h.offers(10).len(), 1);
    assert!(h.m.filters().is_empty());
    // f2 revives: no offer (f1 holds everything) until f1 declines briefly.
    h.msg(20, Message::Revive);
    assert!(h.offers(20).is_empty());
    let held = h.m.offers().next().unwrap().clone();
    h.decline(10, &held, 1.0);
    assert_eq!(h.offers(20).len(), 1);
}

#[test]
fn offer_timeout_rescinds_and_offers_to_someone_else() {
    let c = MasterConfig {
        offer_timeout: Some(Duration::from_secs(10)),
        ..cfg(vec![])
    };
    let (mut h, _, _, o) = life_cycle(c);
    h.advance(Duration::from_secs(9));
    assert!(h.take().iter().all(|a| !matches!(
        a,
        Action::Send {
            msg: Message::Rescind { .. },
            ..
        }
    )));
    h.advance(Duration::from_secs(1));
    assert_eq!(h.sent(10), [Message::Rescind { offer_id: o.id }]);
    let o2 = h.offers(20);
    assert_eq!(o2.len(), 1, "the slow framework's resources go to f2");
    // f2 is slow too: rescinded after 10 s; f1's 5 s filter has expired, so f1 gets it back.
    h.advance(Duration::from_secs(10));
    assert_eq!(
        h.sent(20),
        [Message::Rescind {
            offer_id: o2[0].id.clone()
        }]
    );
    assert_eq!(h.offers(10).len(), 1);
}

#[test]
fn without_offer_timeout_offers_are_held() {
    let (mut h, _, _, o) = life_cycle(cfg(vec![]));
    h.advance(Duration::from_secs(600));
    assert!(h.m.offer(&o.id).is_some());
    assert!(h.offers(20).is_empty());
}

#[test]
fn allocation_is_batched_one_run_pending() {
    let mut h = h_with(cfg(vec![]), Box::new(Drf::new()));
    h.subscribe(10, "f1");
    // Three agents register at one instant without the driver running timeouts in between:
    // one round serves them all, in one Offers message.
    for c in 1..=3 {
        h.m.handle(
            h.now,
            Event::Connected {
                conn: c,
                role: AGENT,
                peer: "a".into(),
                principal: principal_for(AGENT, "default"),
            },
        );
        h.m.handle(
            h.now,
            Event::Message {
                conn: c,
                msg: register_msg(None, res(1.0, GIB), vec![]),
            },
        );
    }
    assert_eq!(h.m.next_allocation(), Some(h.now));
    h.settle();
    let batches: Vec<usize> = h
        .sent(10)
        .iter()
        .filter_map(|m| match m {
            Message::Offers { offers } => Some(offers.len()),
            _ => None,
        })
        .collect();
    assert_eq!(batches, [3]);
    // Nothing freed: the next round is the periodic one.
    assert_eq!(h.m.next_allocation(), Some(h.now + Duration::from_secs(1)));
}
