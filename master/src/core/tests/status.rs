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
    // A late non-terminal update does not resurrect the task, but is still forwarded.
    h.status(1, update(&f, "t1", &a, TaskState::Running, "u0"));
    let ups = h.updates(10);
    assert_eq!(ups.len(), 2);
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
