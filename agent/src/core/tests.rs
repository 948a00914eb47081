//! Deterministic tests of the agent core: virtual time, no sockets, no wasmtime.

use super::tests_executors::{run_task, statuses};
use super::*;
use proto::resources::GIB;
use proto::Digest;

pub(super) fn cfg() -> AgentConfig {
    AgentConfig {
        info: AgentInfo {
            datasets: Vec::new(),
            reservations: vec![],
            hostname: "h1".into(),
            resources: Resources::new(4000, 4 * GIB, 0),
            attributes: vec![],
        },
        boot_id: "boot".into(),
        status_retry: Duration::from_secs(2),
        stoppable_preparation: true,
    }
}

pub(super) fn task(id: &str, cpus: u64, mem: u64) -> TaskInfo {
    TaskInfo {
        data: Vec::new(),
        datasets: Vec::new(),
        executor: None,
        max_cpu_ms: None,
        task_id: TaskId::from(id),
        name: id.into(),
        agent_id: AgentId::from("A1"),
        resources: Resources::new(cpus, mem, 0),
        module: Digest::of(b"m"),
        args: vec![],
        env: vec![],
        files: vec![],
        timeout_ms: None,
    }
}

pub(super) fn drain(a: &mut Agent) -> Vec<Action> {
    std::iter::from_fn(|| a.poll_action()).collect()
}

fn updates(actions: &[Action]) -> Vec<(TaskState, Option<UpdateId>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(Message::StatusUpdate { status }) => {
                Some((status.state, status.uuid.clone()))
            }
            _ => None,
        })
        .collect()
}

/// The master kills task `id` of [`fid`].
pub(super) fn kill(a: &mut Agent, now: Instant, id: &str) {
    a.handle(
        now,
        Event::Message(Message::KillTask {
            framework_id: fid(),
            task_id: TaskId::from(id),
        }),
    );
}

/// The driver says task `id` of [`fid`] is prepared.
fn prepared(a: &mut Agent, now: Instant, id: &str) {
    a.handle(
        now,
        Event::Prepared {
            key: (fid(), TaskId::from(id)),
            result: Ok(()),
        },
    );
}

pub(super) fn registered(now: Instant) -> Agent {
    registered_with(cfg(), now)
}

/// A registered agent whose preparations cannot be stopped (compiles in process).
pub(super) fn registered_unstoppable(now: Instant) -> Agent {
    registered_with(
        AgentConfig {
            stoppable_preparation: false,
            ..cfg()
        },
        now,
    )
}

fn registered_with(cfg: AgentConfig, now: Instant) -> Agent {
    let mut a = Agent::new(cfg);
    a.handle(now, Event::Connected);
    let acts = drain(&mut a);
    assert!(matches!(
        &acts[0],
        Action::Send(Message::Register { agent_id: None, .. })
    ));
    a.handle(
        now,
        Event::Message(Message::Registered {
            agent_id: AgentId::from("A1"),
        }),
    );
    drain(&mut a);
    a
}

pub(super) fn fid() -> FrameworkId {
    FrameworkId::from("F1")
}

pub(super) fn ack(a: &mut Agent, now: Instant, task: &str, uuid: UpdateId) {
    a.handle(
        now,
        Event::Message(Message::StatusUpdateAck {
            framework_id: fid(),
            task_id: TaskId::from(task),
            uuid,
        }),
    );
}

#[test]
fn task_life_cycle_with_ordered_acknowledged_updates() {
    let t0 = Instant::now();
    let mut a = registered(t0);
    a.handle(
        t0,
        Event::Message(Message::RunTask {
            framework_id: fid(),
            task: task("t1", 1000, GIB),
        }),
    );
    let acts = drain(&mut a);
    assert!(
        updates(&acts).is_empty(),
        "no STARTING before the driver says"
    );
    assert!(acts.iter().any(|x| matches!(x, Action::Prepare { .. })));
    let key = (fid(), TaskId::from("t1"));
    // The preparation takes time (a fetch, a compile): TASK_STARTING.
    a.handle(t0, Event::Preparing { key: key.clone() });
    let ups = updates(&drain(&mut a));
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].0, TaskState::Starting);
    a.handle(
        t0,
        Event::Prepared {
            key: key.clone(),
            result: Ok(()),
        },
    );
    assert!(matches!(drain(&mut a)[0], Action::Launch { .. }));
    a.handle(t0, Event::Running { key: key.clone() });
    // RUNNING is not held behind the unacknowledged STARTING.
    let running = updates(&drain(&mut a));
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].0, TaskState::Running);
    a.handle(
        t0,
        Event::Finished {
            key: key.clone(),
            outcome: Outcome {
                state: TaskState::Finished,
                reason: Reason::ExitCode(0),
                message: "exited 0".into(),
                stdout_tail: "hi\n".into(),
                stderr_tail: String::new(),
            },
        },
    );
    assert_eq!(a.used(), Resources::ZERO);
    let fin = drain(&mut a);
    let sent: Vec<&TaskStatus> = fin
        .iter()
        .filter_map(|x| match x {
            Action::Send(Message::StatusUpdate { status }) => Some(status),
            _ => None,
        })
        .collect();
    let [status] = sent[..] else {
        panic!("{fin:?}")
    };
    assert_eq!(status.state, TaskState::Finished);
    assert_eq!(status.stdout_tail, "hi\n");
    let finished = status.uuid.clone().unwrap();
    // Acknowledging STARTING leaves the two later ones; a retry resends them, in order.
    ack(&mut a, t0, "t1", ups[0].1.clone().unwrap());
    assert!(drain(&mut a).is_empty());
    assert_eq!(a.task_count(), 1);
    let retry = a.poll_timeout().unwrap();
    a.handle_timeout(retry);
    assert_eq!(
        updates(&drain(&mut a)),
        vec![
            running[0].clone(),
            (TaskState::Finished, Some(finished.clone()))
        ]
    );
    // The end's acknowledgement covers RUNNING too: nothing is left to resend.
    ack(&mut a, t0, "t1", finished);
    assert!(drain(&mut a).is_empty());
    assert_eq!(a.task_count(), 0);
    assert_eq!(a.poll_timeout(), None);
}

#[test]
fn unacknowledged_update_is_resent_and_survives_reconnection() {
    let t0 = Instant::now();
    let mut a = registered(t0);
    a.handle(
        t0,
        Event::Message(Message::RunTask {
            framework_id: fid(),
            task: task("t1", 1000, GIB),
        }),
    );
    a.handle(
        t0,
        Event::Preparing {
            key: (fid(), TaskId::from("t1")),
        },
    );
    let first = updates(&drain(&mut a));
    assert_eq!(a.poll_timeout(), Some(t0 + Duration::from_secs(2)));
    a.handle_timeout(t0 + Duration::from_secs(1));
    assert!(drain(&mut a).is_empty());
    a.handle_timeout(t0 + Duration::from_secs(2));
    assert_eq!(updates(&drain(&mut a)), first);
    // Disconnect: nothing is sent, the task is reported on re-registration, the head resent.
    a.handle(t0, Event::Disconnected);
    a.handle_timeout(t0 + Duration::from_secs(10));
    assert!(drain(&mut a).is_empty());
    a.handle(t0, Event::Connected);
    match &drain(&mut a)[0] {
        Action::Send(Message::Register {
            agent_id, running, ..
        }) => {
            assert_eq!(agent_id.as_ref().unwrap().as_str(), "A1");
            assert_eq!(running.len(), 1);
        }
        other => panic!("{other:?}"),
    }
    a.handle(
        t0,
        Event::Message(Message::Registered {
            agent_id: AgentId::from("A1"),
        }),
    );
    assert_eq!(updates(&drain(&mut a)), first);
}

#[test]
fn kill_before_and_after_launch() {
    let t0 = Instant::now();
    let mut a = registered(t0);
    for id in ["t1", "t2"] {
        a.handle(
            t0,
            Event::Message(Message::RunTask {
                framework_id: fid(),
                task: task(id, 1000, GIB),
            }),
        );
    }
    drain(&mut a);
    let k1 = (fid(), TaskId::from("t1"));
    let k2 = (fid(), TaskId::from("t2"));
    // t1 killed while preparing: killed at once, its share free, its preparation stopped,
    // never launched.
    assert_eq!(a.used(), Resources::new(2000, 2 * GIB, 0));
    kill(&mut a, t0, "t1");
    let acts = drain(&mut a);
    assert_eq!(a.task_state(&k1), Some(TaskState::Killed));
    assert_eq!(a.used(), Resources::new(1000, GIB, 0));
    assert!(acts.contains(&Action::CancelPrepare { key: k1.clone() }));
    let killed = statuses(&acts);
    assert_eq!(killed.len(), 1, "{acts:?}");
    assert_eq!(killed[0].state, TaskState::Killed);
    assert_eq!(killed[0].reason, Some(Reason::Killed));
    // The preparation had ended before it was stopped: its outcome is ignored.
    a.handle(
        t0,
        Event::Prepared {
            key: k1.clone(),
            result: Ok(()),
        },
    );
    let acts = drain(&mut a);
    assert!(!acts.iter().any(|x| matches!(x, Action::Launch { .. })));
    assert_eq!(a.task_state(&k1), Some(TaskState::Killed));
    // t2 killed while running: the executor is told.
    a.handle(
        t0,
        Event::Prepared {
            key: k2.clone(),
            result: Ok(()),
        },
    );
    drain(&mut a);
    a.handle(
        t0,
        Event::Message(Message::KillTask {
            framework_id: fid(),
            task_id: k2.1.clone(),
        }),
    );
    assert_eq!(drain(&mut a), vec![Action::Kill { key: k2 }]);
}

/// Where a preparation cannot be stopped (compiles in process), a task killed while it is
/// prepared ends when its preparation does, its share booked until then.
#[test]
fn a_kill_waits_for_a_preparation_that_cannot_be_stopped() {
    let t0 = Instant::now();
    let mut a = registered_unstoppable(t0);
    run_task(&mut a, t0, task("t1", 1000, GIB));
    kill(&mut a, t0, "t1");
    let key = (fid(), TaskId::from("t1"));
    assert_eq!(drain(&mut a), vec![], "nothing until the preparation ends");
    assert_ne!(a.task_state(&key), Some(TaskState::Killed));
    assert_eq!(
        a.used(),
        Resources::new(1000, GIB, 0),
        "its share still booked"
    );
    prepared(&mut a, t0, "t1");
    let acts = drain(&mut a);
    assert!(!acts.iter().any(|x| matches!(x, Action::Launch { .. })));
    assert_eq!(updates(&acts).len(), 1, "{acts:?}");
    assert_eq!(a.task_state(&key), Some(TaskState::Killed));
    assert_eq!(a.used(), Resources::new(0, 0, 0));
}

#[test]
fn refuses_tasks_beyond_its_resources_and_unsafe_ids() {
    let t0 = Instant::now();
    let mut a = registered(t0);
    a.handle(
        t0,
        Event::Message(Message::RunTask {
            framework_id: fid(),
            task: task("big", 8000, GIB),
        }),
    );
    a.handle(
        t0,
        Event::Message(Message::RunTask {
            framework_id: fid(),
            task: task("../escape", 100, 1),
        }),
    );
    let acts = drain(&mut a);
    assert!(!acts.iter().any(|x| matches!(x, Action::Prepare { .. })));
    let ups = updates(&acts);
    assert_eq!(ups.len(), 2);
    assert!(ups.iter().all(|(s, _)| *s == TaskState::Failed));
}

#[test]
fn refuses_a_task_asking_for_a_data_set_it_does_not_hold() {
    let t0 = Instant::now();
    let mut a = registered(t0);
    let mut t = task("reader", 100, GIB);
    t.datasets = vec!["genome".into()];
    a.handle(
        t0,
        Event::Message(Message::RunTask {
            framework_id: fid(),
            task: t,
        }),
    );
    let acts = drain(&mut a);
    assert!(!acts.iter().any(|x| matches!(x, Action::Prepare { .. })));
    let status = acts
        .iter()
        .find_map(|x| match x {
            Action::Send(Message::StatusUpdate { status }) => Some(status.clone()),
            _ => None,
        })
        .expect("an update");
    assert_eq!(status.state, TaskState::Failed);
    assert_eq!(status.reason, Some(Reason::TaskInvalid));
    assert!(status.message.contains("genome"), "{}", status.message);
}

#[test]
fn shutdown_kills_and_forgets() {
    let t0 = Instant::now();
    let mut a = registered(t0);
    a.handle(
        t0,
        Event::Message(Message::RunTask {
            framework_id: fid(),
            task: task("t1", 1000, GIB),
        }),
    );
    let key = (fid(), TaskId::from("t1"));
    a.handle(
        t0,
        Event::Prepared {
            key: key.clone(),
            result: Ok(()),
        },
    );
    drain(&mut a);
    a.handle(
        t0,
        Event::Message(Message::Shutdown {
            message: "removed".into(),
        }),
    );
    assert_eq!(drain(&mut a), vec![Action::Kill { key }]);
    assert_eq!(a.task_count(), 0);
    assert!(a.agent_id().is_none());
}

/// A task forgotten while it is prepared (the master shut the agent down) has its
/// preparation stopped.
#[test]
fn shutdown_stops_preparations() {
    let t0 = Instant::now();
    let mut a = registered(t0);
    run_task(&mut a, t0, task("t1", 1000, GIB));
    a.handle(
        t0,
        Event::Message(Message::Shutdown {
            message: "removed".into(),
        }),
    );
    let key = (fid(), TaskId::from("t1"));
    assert_eq!(drain(&mut a), vec![Action::CancelPrepare { key }]);
    assert_eq!(a.task_count(), 0);
}

/// A task whose module is compiled and in place is prepared at once (no `Preparing`): it
/// goes from STAGING to RUNNING with no TASK_STARTING; a late `Preparing` (after `Prepared`,
/// or after a kill) changes nothing.
#[test]
fn a_task_prepared_at_once_has_no_starting_update() {
    let t0 = Instant::now();
    let mut a = registered(t0);
    a.handle(
        t0,
        Event::Message(Message::RunTask {
            framework_id: fid(),
            task: task("t1", 1000, GIB),
        }),
    );
    let key = (fid(), TaskId::from("t1"));
    assert!(updates(&drain(&mut a)).is_empty());
    a.handle(
        t0,
        Event::Prepared {
            key: key.clone(),
            result: Ok(()),
        },
    );
    a.handle(t0, Event::Preparing { key: key.clone() });
    assert!(matches!(drain(&mut a)[..], [Action::Launch { .. }]));
    a.handle(t0, Event::Running { key: key.clone() });
    let ups = updates(&drain(&mut a));
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].0, TaskState::Running);
    // Killed while its preparation is being started: no STARTING after the kill.
    a.handle(
        t0,
        Event::Message(Message::RunTask {
            framework_id: fid(),
            task: task("t2", 1000, GIB),
        }),
    );
    a.handle(
        t0,
        Event::Message(Message::KillTask {
            framework_id: fid(),
            task_id: TaskId::from("t2"),
        }),
    );
    a.handle(
        t0,
        Event::Preparing {
            key: (fid(), TaskId::from("t2")),
        },
    );
    let states: Vec<TaskState> = updates(&drain(&mut a)).iter().map(|u| u.0).collect();
    assert!(!states.contains(&TaskState::Starting), "{states:?}");
}
