//! Deterministic tests of framework executors in the agent core: virtual time, a scripted
//! instance (the test plays the runtime), no wasmtime.

use super::tests::{ack, cfg, drain, fid, registered, task};
use super::*;
use proto::resources::MIB;
use proto::{Digest, ExecutorId, ExecutorInfo};

const IDLE: Duration = Duration::from_secs(10);
const GRACE: Duration = Duration::from_secs(3);

pub(super) fn exec_info() -> ExecutorInfo {
    ExecutorInfo {
        executor_id: ExecutorId::from("E1"),
        name: "kv".into(),
        module: Digest::of(b"component"),
        resources: Resources::new(500, 64 * MIB, 0),
        args: vec![],
        env: vec![],
        idle_timeout_ms: Some(IDLE.as_millis() as u64),
        kill_grace_ms: Some(GRACE.as_millis() as u64),
    }
}

/// A task of executor `exec_info()`.
pub(super) fn etask(id: &str, cpus: u64, mem: u64) -> TaskInfo {
    let mut t = task(id, cpus, mem);
    t.module = exec_info().module;
    t.executor = Some(exec_info());
    t
}

pub(super) fn run_task(a: &mut Agent, now: Instant, t: TaskInfo) -> Vec<Action> {
    a.handle(
        now,
        Event::Message(Message::RunTask {
            framework_id: fid(),
            task: t,
        }),
    );
    drain(a)
}

pub(super) fn ekey() -> ExecutorKey {
    (fid(), ExecutorId::from("E1"))
}

pub(super) fn tkey(t: &str) -> TaskKey {
    (fid(), TaskId::from(t))
}

pub(super) fn statuses(actions: &[Action]) -> Vec<TaskStatus> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(Message::StatusUpdate { status }) => Some(status.clone()),
            _ => None,
        })
        .collect()
}

pub(super) fn exec_actions(actions: &[Action]) -> Vec<ExecutorAction> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Executor(x) => Some(x.clone()),
            _ => None,
        })
        .collect()
}

fn exited(actions: &[Action]) -> Option<(bool, String)> {
    actions.iter().find_map(|a| match a {
        Action::Send(Message::ExecutorExited {
            failed, message, ..
        }) => Some((*failed, message.clone())),
        _ => None,
    })
}

fn outcome(state: TaskState, reason: Reason, message: &str) -> Outcome {
    Outcome {
        state,
        reason,
        message: message.into(),
        stdout_tail: String::new(),
        stderr_tail: String::new(),
    }
}

/// The agent acknowledges every update at once (as a prompt scheduler would), so each new
/// update goes out as soon as it is made and `statuses` sees it.
pub(super) fn ack_all(a: &mut Agent, now: Instant, actions: &[Action]) -> Vec<Action> {
    let mut out = Vec::new();
    for s in statuses(actions) {
        ack(a, now, s.task_id.as_str(), s.uuid.clone().unwrap());
        out.extend(drain(a));
    }
    out
}

/// An agent whose executor E1 runs task `t1` (launched; every update acknowledged): returns
/// the agent and the instance's run.
pub(super) fn running_one(now: Instant) -> (Agent, ExecutorRun) {
    let mut a = registered(now);
    let acts = run_task(&mut a, now, etask("t1", 1000, 256 * MIB));
    ack_all(&mut a, now, &acts);
    let id = match exec_actions(&acts).as_slice() {
        [ExecutorAction::Start { id, info, .. }] => {
            assert_eq!(info, &exec_info());
            id.clone()
        }
        other => panic!("{other:?}"),
    };
    assert!(
        !acts.iter().any(|x| matches!(x, Action::Prepare { .. })),
        "tasks wait for their executor to start"
    );
    a.handle(
        now,
        Event::Executor(ExecutorEvent::Started { id: id.clone() }),
    );
    let acts = drain(&mut a);
    assert!(matches!(&acts[..], [Action::Prepare { task, .. }] if task.task_id.as_str() == "t1"));
    a.handle(
        now,
        Event::Prepared {
            key: tkey("t1"),
            result: Ok(()),
        },
    );
    assert_eq!(
        exec_actions(&drain(&mut a)),
        vec![
            ExecutorAction::SetEnvelope {
                id: id.clone(),
                resources: Resources::new(1500, 320 * MIB, 0)
            },
            ExecutorAction::Launch {
                id: id.clone(),
                task: etask("t1", 1000, 256 * MIB)
            },
        ]
    );
    (a, id)
}

pub(super) fn update(
    a: &mut Agent,
    now: Instant,
    id: &ExecutorRun,
    t: &str,
    state: TaskState,
) -> Vec<Action> {
    a.handle(
        now,
        Event::Executor(ExecutorEvent::TaskUpdate {
            id: id.clone(),
            task_id: TaskId::from(t),
            state,
            message: format!("{t} is {}", state.name()),
        }),
    );
    let acts = drain(a);
    let mut all = acts.clone();
    all.extend(ack_all(a, now, &acts));
    all
}

#[test]
fn first_task_starts_the_executor_and_later_ones_reuse_it() {
    let t0 = Instant::now();
    let (mut a, id) = running_one(t0);
    let acts = run_task(&mut a, t0, etask("t2", 1000, 256 * MIB));
    assert!(exec_actions(&acts).is_empty(), "no second instance");
    assert!(acts.iter().any(|x| matches!(x, Action::Prepare { .. })));
    // The executor's own share is booked once, next to both tasks'.
    assert_eq!(a.used(), Resources::new(2500, 576 * MIB, 0));
    assert_eq!(a.executor_count(), 1);
    let acts = update(&mut a, t0, &id, "t1", TaskState::Running);
    let s = statuses(&acts);
    assert_eq!(s[0].state, TaskState::Running);
    assert_eq!(s[0].message, "t1 is TASK_RUNNING");
    // A repeated RUNNING is not a new update.
    assert!(statuses(&update(&mut a, t0, &id, "t1", TaskState::Running)).is_empty());
}

#[test]
fn the_envelope_follows_the_live_tasks() {
    let t0 = Instant::now();
    let (mut a, id) = running_one(t0);
    let acts = run_task(&mut a, t0, etask("t2", 500, 128 * MIB));
    ack_all(&mut a, t0, &acts);
    a.handle(
        t0,
        Event::Prepared {
            key: tkey("t2"),
            result: Ok(()),
        },
    );
    assert_eq!(
        exec_actions(&drain(&mut a))[0],
        ExecutorAction::SetEnvelope {
            id: id.clone(),
            resources: Resources::new(2000, 448 * MIB, 0)
        }
    );
    let acts = update(&mut a, t0, &id, "t1", TaskState::Finished);
    let s = statuses(&acts);
    assert_eq!(
        (s[0].state, s[0].reason.clone()),
        (TaskState::Finished, Some(Reason::ExecutorReported))
    );
    assert_eq!(
        exec_actions(&acts),
        vec![ExecutorAction::SetEnvelope {
            id: id.clone(),
            resources: Resources::new(1000, 192 * MIB, 0)
        }]
    );
    let acts = update(&mut a, t0, &id, "t2", TaskState::Failed);
    assert_eq!(statuses(&acts)[0].state, TaskState::Failed);
    assert_eq!(a.executor_envelope(&ekey()), Some(exec_info().resources));
    assert_eq!(a.used(), exec_info().resources);
}

#[test]
fn an_idle_executor_is_shut_down_and_reports_an_unfailed_exit() {
    let t0 = Instant::now();
    let (mut a, id) = running_one(t0);
    let t1 = t0 + Duration::from_secs(1);
    update(&mut a, t1, &id, "t1", TaskState::Finished);
    assert_eq!(a.poll_timeout(), Some(t1 + IDLE));
    a.handle_timeout(t1 + IDLE - Duration::from_millis(1));
    assert!(exec_actions(&drain(&mut a)).is_empty());
    // A task arriving stops the idle clock; its end starts it again.
    let t2 = t1 + Duration::from_secs(5);
    let acts = run_task(&mut a, t2, etask("t2", 100, MIB));
    ack_all(&mut a, t2, &acts);
    a.handle(
        t2,
        Event::Prepared {
            key: tkey("t2"),
            result: Ok(()),
        },
    );
    drain(&mut a);
    a.handle_timeout(t1 + IDLE);
    assert!(exec_actions(&drain(&mut a)).is_empty());
    update(&mut a, t2, &id, "t2", TaskState::Finished);
    a.handle_timeout(t2 + IDLE);
    assert_eq!(
        exec_actions(&drain(&mut a)),
        vec![ExecutorAction::Shutdown { id: id.clone() }]
    );
    a.handle(
        t2 + IDLE,
        Event::Executor(ExecutorEvent::Exited {
            id,
            outcome: outcome(
                TaskState::Finished,
                Reason::ExitCode(0),
                "exited with code 0",
            ),
        }),
    );
    let acts = drain(&mut a);
    assert_eq!(exited(&acts).map(|e| e.0), Some(false));
    assert_eq!(a.executor_count(), 0);
    assert_eq!(a.used(), Resources::ZERO);
    assert_eq!(a.poll_timeout(), None);
}

#[test]
fn an_unanswered_kill_ends_the_task_after_the_grace() {
    let t0 = Instant::now();
    let (mut a, id) = running_one(t0);
    update(&mut a, t0, &id, "t1", TaskState::Running);
    a.handle(
        t0,
        Event::Message(Message::KillTask {
            framework_id: fid(),
            task_id: TaskId::from("t1"),
        }),
    );
    assert_eq!(
        exec_actions(&drain(&mut a)),
        vec![ExecutorAction::KillTask {
            id: id.clone(),
            task_id: TaskId::from("t1")
        }]
    );
    // A second kill does not restart the grace.
    let t1 = t0 + Duration::from_secs(1);
    a.handle(
        t1,
        Event::Message(Message::KillTask {
            framework_id: fid(),
            task_id: TaskId::from("t1"),
        }),
    );
    assert!(drain(&mut a).is_empty());
    assert_eq!(a.poll_timeout(), Some(t0 + GRACE));
    a.handle_timeout(t0 + GRACE);
    let acts = drain(&mut a);
    let s = statuses(&acts);
    assert_eq!(s[0].state, TaskState::Killed);
    assert!(
        s[0].message
            .contains("did not answer the kill within the 3000 ms grace")
            && s[0].message.contains("stopped forcibly"),
        "{}",
        s[0].message
    );
    assert!(exec_actions(&acts).contains(&ExecutorAction::SetEnvelope {
        id: id.clone(),
        resources: exec_info().resources
    }));
    ack_all(&mut a, t0, &acts);
    // The executor's late answer is ignored.
    assert!(update(&mut a, t0 + GRACE, &id, "t1", TaskState::Killed).is_empty());
    // The executor lives on (idle now).
    assert_eq!(a.executor_count(), 1);
}

#[test]
fn an_answered_kill_is_the_executors_update() {
    let t0 = Instant::now();
    let (mut a, id) = running_one(t0);
    a.handle(
        t0,
        Event::Message(Message::KillTask {
            framework_id: fid(),
            task_id: TaskId::from("t1"),
        }),
    );
    drain(&mut a);
    let s = statuses(&update(&mut a, t0, &id, "t1", TaskState::Killed));
    assert_eq!(
        (s[0].state, s[0].reason.clone()),
        (TaskState::Killed, Some(Reason::Killed))
    );
    a.handle_timeout(t0 + GRACE);
    assert!(statuses(&drain(&mut a)).is_empty());
}

#[test]
fn a_trapping_executor_fails_its_tasks_and_reports_a_failed_exit() {
    let t0 = Instant::now();
    let (mut a, id) = running_one(t0);
    // t2 is being prepared, t1 runs: both fail.
    let acts = run_task(&mut a, t0, etask("t2", 100, MIB));
    ack_all(&mut a, t0, &acts);
    update(&mut a, t0, &id, "t1", TaskState::Running);
    a.handle(
        t0,
        Event::Executor(ExecutorEvent::Exited {
            id: id.clone(),
            outcome: outcome(
                TaskState::Failed,
                Reason::Trap("unreachable".into()),
                "wasm trap: unreachable",
            ),
        }),
    );
    let acts = drain(&mut a);
    let mut s = statuses(&acts);
    s.sort_by(|x, y| x.task_id.cmp(&y.task_id));
    assert_eq!(s.len(), 2);
    for st in &s {
        assert_eq!(st.state, TaskState::Failed);
        assert_eq!(
            st.reason,
            Some(Reason::ExecutorTerminated("wasm trap: unreachable".into()))
        );
    }
    assert_eq!(
        exited(&acts),
        Some((true, "wasm trap: unreachable".to_owned()))
    );
    assert_eq!(a.used(), Resources::ZERO);
    // t2's preparation ending late launches nothing; the run's later events are ignored.
    a.handle(
        t0,
        Event::Prepared {
            key: tkey("t2"),
            result: Ok(()),
        },
    );
    a.handle(
        t0,
        Event::Executor(ExecutorEvent::Exited {
            id,
            outcome: outcome(TaskState::Failed, Reason::ExitCode(1), "again"),
        }),
    );
    let acts = drain(&mut a);
    assert!(exec_actions(&acts).is_empty() && exited(&acts).is_none());
}

#[test]
fn an_executor_returning_unasked_has_failed() {
    let t0 = Instant::now();
    let (mut a, id) = running_one(t0);
    a.handle(
        t0,
        Event::Executor(ExecutorEvent::Exited {
            id,
            outcome: outcome(
                TaskState::Finished,
                Reason::ExitCode(0),
                "exited with code 0",
            ),
        }),
    );
    let acts = drain(&mut a);
    let (failed, msg) = exited(&acts).unwrap();
    assert!(failed && msg.contains("without being asked"), "{msg}");
    assert_eq!(statuses(&acts)[0].state, TaskState::Failed);
}

#[test]
fn kill_executor_shuts_down_then_forces_after_the_grace() {
    let t0 = Instant::now();
    let (mut a, id) = running_one(t0);
    a.handle(
        t0,
        Event::Message(Message::KillExecutor {
            framework_id: fid(),
            executor_id: ExecutorId::from("E1"),
        }),
    );
    assert_eq!(
        exec_actions(&drain(&mut a)),
        vec![ExecutorAction::Shutdown { id: id.clone() }]
    );
    // A task for a stopping executor is refused.
    let s = statuses(&run_task(&mut a, t0, etask("t9", 100, MIB)));
    assert_eq!(s[0].state, TaskState::Failed);
    a.handle_timeout(t0 + GRACE);
    assert_eq!(
        exec_actions(&drain(&mut a)),
        vec![ExecutorAction::Kill { id: id.clone() }]
    );
    a.handle(
        t0 + GRACE,
        Event::Executor(ExecutorEvent::Exited {
            id,
            outcome: outcome(TaskState::Killed, Reason::Killed, "killed"),
        }),
    );
    let acts = drain(&mut a);
    let (failed, msg) = exited(&acts).unwrap();
    assert!(failed && msg.contains("stopped forcibly"), "{msg}");
    let s = statuses(&acts);
    assert_eq!(s[0].state, TaskState::Killed);
    assert!(matches!(s[0].reason, Some(Reason::ExecutorTerminated(_))));
}

#[test]
fn an_obeyed_kill_executor_kills_its_tasks_without_failure() {
    let t0 = Instant::now();
    let (mut a, id) = running_one(t0);
    a.handle(
        t0,
        Event::Message(Message::KillExecutor {
            framework_id: fid(),
            executor_id: ExecutorId::from("E1"),
        }),
    );
    drain(&mut a);
    a.handle(
        t0,
        Event::Executor(ExecutorEvent::Exited {
            id,
            outcome: outcome(
                TaskState::Finished,
                Reason::ExitCode(0),
                "exited with code 0",
            ),
        }),
    );
    let acts = drain(&mut a);
    assert_eq!(exited(&acts).map(|e| e.0), Some(false));
    assert_eq!(statuses(&acts)[0].state, TaskState::Killed);
    // Nothing is left to fire.
    ack_all(&mut a, t0, &acts);
    assert_eq!(a.poll_timeout(), None);
}

#[test]
fn resource_checks_count_a_new_executors_own_share() {
    let t0 = Instant::now();
    let mut a = registered(t0);
    // 3600 + 500 > 4000 cpus: refused for the executor's share.
    let s = statuses(&run_task(&mut a, t0, etask("big", 3600, MIB)));
    assert_eq!(
        (s[0].state, s[0].reason.clone()),
        (TaskState::Failed, Some(Reason::AgentError))
    );
    assert!(s[0].message.contains("new executor"), "{}", s[0].message);
    assert_eq!(a.executor_count(), 0);
    let acts = run_task(&mut a, t0, etask("fits", 3500, MIB));
    assert!(matches!(
        exec_actions(&acts)[..],
        [ExecutorAction::Start { .. }]
    ));
    assert_eq!(a.used(), Resources::new(4000, 65 * MIB, 0));
}

#[test]
fn a_task_naming_different_executor_info_is_refused() {
    let t0 = Instant::now();
    let (mut a, _id) = running_one(t0);
    let mut t = etask("t2", 100, MIB);
    t.executor.as_mut().unwrap().resources = Resources::new(100, MIB, 0);
    let s = statuses(&run_task(&mut a, t0, t));
    assert_eq!(
        (s[0].state, s[0].reason.clone()),
        (TaskState::Failed, Some(Reason::TaskInvalid))
    );
    assert!(
        s[0].message.contains("executor E1 runs module"),
        "{}",
        s[0].message
    );
    // The task's module must be its executor's.
    let mut t = etask("t3", 100, MIB);
    t.module = Digest::of(b"other");
    let s = statuses(&run_task(&mut a, t0, t));
    assert_eq!(s[0].reason, Some(Reason::TaskInvalid));
}

#[test]
fn a_later_task_may_only_see_the_data_sets_the_executor_started_with() {
    let t0 = Instant::now();
    let mut c = cfg();
    c.info.datasets = vec!["genome".into(), "maps".into()];
    let mut a = Agent::new(c);
    a.handle(t0, Event::Connected);
    a.handle(
        t0,
        Event::Message(Message::Registered {
            agent_id: AgentId::from("A1"),
        }),
    );
    drain(&mut a);
    let mut t = etask("t1", 100, MIB);
    t.datasets = vec!["genome".into()];
    let acts = run_task(&mut a, t0, t);
    let id = match &exec_actions(&acts)[..] {
        [ExecutorAction::Start { id, datasets, .. }] => {
            assert_eq!(datasets, &["genome".to_owned()]);
            id.clone()
        }
        other => panic!("{other:?}"),
    };
    ack_all(&mut a, t0, &acts);
    a.handle(t0, Event::Executor(ExecutorEvent::Started { id }));
    drain(&mut a);
    let mut t = etask("t2", 100, MIB);
    t.datasets = vec!["maps".into()];
    let s = statuses(&run_task(&mut a, t0, t));
    assert_eq!(s[0].reason, Some(Reason::TaskInvalid));
    assert!(s[0].message.contains("\"maps\""), "{}", s[0].message);
    let mut t = etask("t3", 100, MIB);
    t.datasets = vec!["genome".into()];
    let acts = run_task(&mut a, t0, t);
    assert!(acts.iter().any(|x| matches!(x, Action::Prepare { .. })));
}

#[test]
fn updates_for_unknown_or_ended_tasks_and_old_runs_are_ignored() {
    let t0 = Instant::now();
    let (mut a, id) = running_one(t0);
    assert!(update(&mut a, t0, &id, "nope", TaskState::Finished).is_empty());
    update(&mut a, t0, &id, "t1", TaskState::Finished);
    assert!(update(&mut a, t0, &id, "t1", TaskState::Failed).is_empty());
    let old = ExecutorRun {
        run: id.run + 7,
        ..id.clone()
    };
    let acts = run_task(&mut a, t0, etask("t2", 100, MIB));
    ack_all(&mut a, t0, &acts);
    a.handle(
        t0,
        Event::Prepared {
            key: tkey("t2"),
            result: Ok(()),
        },
    );
    drain(&mut a);
    assert!(update(&mut a, t0, &old, "t2", TaskState::Finished).is_empty());
    a.handle(
        t0,
        Event::Executor(ExecutorEvent::Exited {
            id: old,
            outcome: outcome(TaskState::Failed, Reason::ExitCode(1), "x"),
        }),
    );
    assert!(drain(&mut a).is_empty());
    assert_eq!(a.task_state(&tkey("t2")), Some(TaskState::Starting));
}

#[test]
fn re_registration_lists_the_live_executors() {
    let t0 = Instant::now();
    let (mut a, _id) = running_one(t0);
    a.handle(t0, Event::Disconnected);
    a.handle(t0, Event::Connected);
    match &drain(&mut a)[0] {
        Action::Send(Message::Register {
            executors, running, ..
        }) => {
            assert_eq!(executors.len(), 1);
            assert_eq!(executors[0].framework_id, fid());
            assert_eq!(executors[0].info, exec_info());
            assert_eq!(running.len(), 1);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn messages_go_both_ways_at_most_once() {
    let t0 = Instant::now();
    let (mut a, id) = running_one(t0);
    a.handle(
        t0,
        Event::Message(Message::ExecutorMessage {
            framework_id: fid(),
            executor_id: ExecutorId::from("E1"),
            data: b"hi".to_vec(),
        }),
    );
    assert_eq!(
        exec_actions(&drain(&mut a)),
        vec![ExecutorAction::Message {
            id: id.clone(),
            data: b"hi".to_vec()
        }]
    );
    // No such executor: dropped.
    a.handle(
        t0,
        Event::Message(Message::ExecutorMessage {
            framework_id: fid(),
            executor_id: ExecutorId::from("E2"),
            data: b"hi".to_vec(),
        }),
    );
    assert!(drain(&mut a).is_empty());
    let from_exec = |a: &mut Agent| {
        a.handle(
            t0,
            Event::Executor(ExecutorEvent::Message {
                id: id.clone(),
                data: b"echo:hi".to_vec(),
            }),
        );
        drain(a)
    };
    assert_eq!(
        from_exec(&mut a),
        vec![Action::Send(Message::ExecutorMessage {
            framework_id: fid(),
            executor_id: ExecutorId::from("E1"),
            data: b"echo:hi".to_vec()
        })]
    );
    a.handle(t0, Event::Disconnected);
    assert!(from_exec(&mut a).is_empty(), "dropped while disconnected");
}

#[test]
fn agent_shutdown_stops_executors_at_once() {
    let t0 = Instant::now();
    let (mut a, id) = running_one(t0);
    a.handle(
        t0,
        Event::Message(Message::Shutdown {
            message: "removed".into(),
        }),
    );
    assert_eq!(
        exec_actions(&drain(&mut a)),
        vec![ExecutorAction::Kill { id: id.clone() }]
    );
    assert_eq!((a.executor_count(), a.task_count()), (0, 0));
    a.handle(
        t0,
        Event::Executor(ExecutorEvent::Exited {
            id,
            outcome: outcome(TaskState::Killed, Reason::Killed, "killed"),
        }),
    );
    assert!(drain(&mut a).is_empty());
}

#[test]
fn an_executor_that_cannot_start_fails_its_waiting_tasks_with_the_cause() {
    let t0 = Instant::now();
    let mut a = registered(t0);
    let acts = run_task(&mut a, t0, etask("t1", 100, MIB));
    ack_all(&mut a, t0, &acts);
    let id = match &exec_actions(&acts)[..] {
        [ExecutorAction::Start { id, .. }] => id.clone(),
        other => panic!("{other:?}"),
    };
    // A second task joins while it starts, a third is killed while waiting.
    let acts = run_task(&mut a, t0, etask("t2", 100, MIB));
    assert!(exec_actions(&acts).is_empty());
    ack_all(&mut a, t0, &acts);
    let acts = run_task(&mut a, t0, etask("t3", 100, MIB));
    ack_all(&mut a, t0, &acts);
    a.handle(
        t0,
        Event::Message(Message::KillTask {
            framework_id: fid(),
            task_id: TaskId::from("t3"),
        }),
    );
    let acts = drain(&mut a);
    assert_eq!(statuses(&acts)[0].state, TaskState::Killed);
    ack_all(&mut a, t0, &acts);
    a.handle(
        t0,
        Event::Executor(ExecutorEvent::Exited {
            id,
            outcome: outcome(TaskState::Failed, Reason::FetchFailed, "no such blob"),
        }),
    );
    let acts = drain(&mut a);
    let s = statuses(&acts);
    assert_eq!(s.len(), 2);
    assert!(s
        .iter()
        .all(|x| x.state == TaskState::Failed && x.reason == Some(Reason::FetchFailed)));
    assert!(exited(&acts).unwrap().0);
    assert_eq!(a.used(), Resources::ZERO);
}

#[test]
fn an_exited_executors_directory_is_collected_unless_it_starts_again() {
    let t0 = Instant::now();
    let (a, id) = running_one(t0);
    let mut a = a.with_gc(gc::GcPolicy {
        delay: IDLE,
        disk_headroom: 0.0,
    });
    let target = GcTarget::Executor {
        framework_id: fid(),
        executor_id: ExecutorId::from("E1"),
    };
    a.handle(
        t0,
        Event::Executor(ExecutorEvent::Exited {
            id,
            outcome: outcome(TaskState::Failed, Reason::ExitCode(1), "exited 1"),
        }),
    );
    let acts = drain(&mut a);
    ack_all(&mut a, t0, &acts);
    // The executor's task lives in the executor's directory: only that one is collected.
    assert_eq!(a.gc_pending(), 1);
    assert_eq!(a.poll_timeout(), Some(t0 + IDLE));
    a.handle_timeout(t0 + IDLE);
    assert_eq!(a.poll_gc(), Some(target.clone()));
    assert_eq!(a.poll_gc(), None);

    // Exited again, then restarted before the delay: the fresh directory stays.
    let t1 = t0 + IDLE * 2;
    let acts = run_task(&mut a, t1, etask("t2", 1000, 256 * MIB));
    let id = match exec_actions(&acts).as_slice() {
        [ExecutorAction::Start { id, .. }] => id.clone(),
        other => panic!("{other:?}"),
    };
    a.handle(
        t1,
        Event::Executor(ExecutorEvent::Exited {
            id,
            outcome: outcome(TaskState::Failed, Reason::ExitCode(1), "could not start"),
        }),
    );
    drain(&mut a);
    assert_eq!(a.gc_pending(), 1);
    run_task(&mut a, t1, etask("t3", 1000, 256 * MIB));
    assert_eq!(a.gc_pending(), 0);
    a.handle_timeout(t1 + IDLE * 10);
    assert_eq!(a.poll_gc(), None);
}
