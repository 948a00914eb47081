//! Connections, roles and subscription: role violations, subscription checks and re-attaching,
//! the failover timeout.

use super::*;

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
            executors: Vec::new(),
            agent_id: None,
            info: AgentInfo {
                datasets: Vec::new(),
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
