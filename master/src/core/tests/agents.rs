//! Agents going away and coming back: disconnection, re-registration within the timeout
//! (tasks kept, lost launches and kills sent again), removal after it, registration checks.

use super::*;

#[test]
fn agent_disconnect_rescinds_then_tasks_gone_after_timeout() {
    let (mut h, a, f, o, m) = one_agent_one_offer();
    h.accept(10, &[&o], vec![task("t1", &a, res(1.0, GIB), m)]);
    h.take();
    h.msg(10, Message::Revive);
    let rest = h.offers(10).remove(0);
    h.disconnect(1);
    let ups = h.updates(10);
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].state, TaskState::Unreachable);
    assert_eq!(
        h.sent(10),
        [Message::Rescind {
            offer_id: rest.id.clone()
        }]
    );
    assert_eq!(h.m.offers().count(), 0);
    h.advance(Duration::from_millis(599_999));
    assert!(h.updates(10).is_empty());
    assert!(h.m.agent(&a).is_some());
    h.advance(Duration::from_millis(1));
    let ups = h.updates(10);
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].state, TaskState::Gone);
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
    assert_eq!(h.updates(10).len(), 3, "each task TASK_UNREACHABLE");
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
    // "keep" back to RUNNING as reported, "intransit" back to STAGING (launched again), "gone"
    // lost.
    let ups = h.updates(10);
    let states: Vec<(&str, TaskState)> =
        ups.iter().map(|s| (s.task_id.as_str(), s.state)).collect();
    assert_eq!(
        states,
        [
            ("intransit", TaskState::Staging),
            ("keep", TaskState::Running),
            ("gone", TaskState::Lost),
        ]
    );
    let ups = &ups[2..];
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
    assert!(
        closes[0].1.contains("running tasks and executors use"),
        "{closes:?}"
    );
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
