//! Status updates: relayed to frameworks, acknowledged back to agents, or acknowledged by the
//! master itself when nobody else will.

use super::*;

#[test]
fn status_updates_forwarded_and_acknowledged() {
    let (mut h, a, f, o, m) = one_agent_one_offer();
    h.accept(10, &[&o], vec![task("t1", &a, res(1.0, GIB), m)]);
    h.take();
    h.status(1, update(&f, "t1", &a, TaskState::Running, "u1"));
    assert_eq!(h.updates(10)[0].state, TaskState::Running);
    h.ack(10, &a, "t1", "u1");
    assert_eq!(
        h.sent(1),
        [Message::StatusUpdateAck {
            framework_id: f.clone(),
            task_id: TaskId("t1".into()),
            uuid: UpdateId("u1".into()),
        }]
    );
    h.status(1, update(&f, "t1", &a, TaskState::Failed, "u2"));
    // A late non-terminal update neither resurrects the task nor reaches the framework, which
    // heard the end: the master acknowledges it.
    h.status(1, update(&f, "t1", &a, TaskState::Running, "u0"));
    let ups = h.updates(10);
    assert_eq!(ups.len(), 1);
    assert_eq!(
        h.sent(1),
        [Message::StatusUpdateAck {
            framework_id: f.clone(),
            task_id: TaskId("t1".into()),
            uuid: UpdateId("u0".into()),
        }]
    );
    let t = h.m.task(&f, &TaskId("t1".into())).unwrap();
    assert_eq!(t.status.state, TaskState::Failed);
    assert_eq!(h.m.agent(&a).unwrap().used, Resources::ZERO);
    // Acknowledging the terminal update moves the task out of the live table.
    h.ack(10, &a, "t1", "u2");
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

/// An agent sends a task's updates without waiting for acknowledgements and resends all the
/// unacknowledged ones on a retry: the framework hears each state once, in order, and a resent
/// older one is acknowledged by the master instead of being forwarded.
#[test]
fn pipelined_updates_are_forwarded_in_order_and_stale_resends_are_not() {
    let (mut h, a, f, o, m) = one_agent_one_offer();
    h.accept(10, &[&o], vec![task("t1", &a, res(1.0, GIB), m)]);
    h.take();
    h.status(1, update(&f, "t1", &a, TaskState::Starting, "u1"));
    h.status(1, update(&f, "t1", &a, TaskState::Running, "u2"));
    let states = |ups: Vec<TaskStatus>| ups.iter().map(|u| u.state).collect::<Vec<_>>();
    assert_eq!(
        states(h.updates(10)),
        [TaskState::Starting, TaskState::Running]
    );
    assert!(h.sent(1).is_empty(), "only the framework acknowledges");
    // A retry before the framework acknowledged: STARTING is older than the RUNNING held.
    h.status(1, update(&f, "t1", &a, TaskState::Starting, "u1"));
    assert!(h.updates(10).is_empty());
    assert!(matches!(&h.sent(1)[..], [Message::StatusUpdateAck { uuid, .. }] if uuid.0 == "u1"));
    // RUNNING again is not older: forwarded (the SDK drops the repeated uuid).
    h.status(1, update(&f, "t1", &a, TaskState::Running, "u2"));
    assert_eq!(states(h.updates(10)), [TaskState::Running]);
    h.status(1, update(&f, "t1", &a, TaskState::Finished, "u3"));
    assert_eq!(states(h.updates(10)), [TaskState::Finished]);
    // The next retry resends all three: only the end is news to nobody, and is forwarded again.
    for (state, uuid) in [
        (TaskState::Starting, "u1"),
        (TaskState::Running, "u2"),
        (TaskState::Finished, "u3"),
    ] {
        h.status(1, update(&f, "t1", &a, state, uuid));
    }
    assert_eq!(states(h.updates(10)), [TaskState::Finished]);
    let acked: Vec<String> = h
        .sent(1)
        .into_iter()
        .filter_map(|m| match m {
            Message::StatusUpdateAck { uuid, .. } => Some(uuid.0),
            _ => None,
        })
        .collect();
    assert_eq!(acked, ["u1", "u2"]);
    assert_eq!(
        h.m.task(&f, &TaskId("t1".into())).unwrap().status.state,
        TaskState::Finished
    );
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
