//! The seed's worked example and dominant resource fairness between frameworks, through the
//! core.

use super::*;

#[test]
fn seed_worked_example() {
    let mut h = H::new();
    let a1 = h.register(1, res(4.0, 4 * GIB));
    assert_eq!(a1, AgentId("r-A1".into()));
    let f1 = h.subscribe(10, "f1");
    assert!(f1.as_str().starts_with("r-F1-"), "{f1}");
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
