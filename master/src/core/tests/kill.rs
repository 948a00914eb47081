//! Killing tasks and reconciling their states.

use super::*;

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
