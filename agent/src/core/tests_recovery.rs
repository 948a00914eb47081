//! Deterministic tests of checkpoint and recovery in the agent core: a core is checkpointed,
//! serialised, rebuilt as a new run would rebuild it, and settled against what a scripted
//! runtime still runs.

use super::tests::{ack, cfg, drain, fid, kill, registered, registered_unstoppable, task};
use super::tests_executors::{
    ack_all, ekey, etask, exec_actions, running_one, statuses, tkey, update,
};
use super::*;
use proto::resources::{GIB, MIB};

/// The same agent's next run: a new boot id, the checkpoint through its serialised form.
fn restart(a: &Agent, now: Instant) -> Agent {
    let bytes = postcard::to_allocvec(&a.checkpoint(now)).unwrap();
    let cp: Checkpoint = postcard::from_bytes(&bytes).unwrap();
    let mut c = cfg();
    c.boot_id = "boot2".into();
    let r = Agent::recover(c, cp, now);
    assert!(r.is_recovering());
    r
}

/// Launches task `id` whose preparation takes time (the driver says `Preparing`): it is
/// `TASK_STARTING` until prepared.
fn run(a: &mut Agent, now: Instant, id: &str) -> Vec<Action> {
    a.handle(
        now,
        Event::Message(Message::RunTask {
            framework_id: fid(),
            task: task(id, 100, 64 * MIB),
        }),
    );
    a.handle(now, Event::Preparing { key: tkey(id) });
    drain(a)
}

/// Runs task `id` up to RUNNING with every update acknowledged.
fn running(a: &mut Agent, now: Instant, id: &str) {
    let acts = run(a, now, id);
    ack_all(a, now, &acts);
    let key = tkey(id);
    a.handle(
        now,
        Event::Prepared {
            key: key.clone(),
            result: Ok(()),
        },
    );
    assert!(matches!(drain(a)[0], Action::Launch { .. }));
    a.handle(now, Event::Running { key });
    let acts = drain(a);
    assert_eq!(statuses(&acts)[0].state, TaskState::Running);
    ack_all(a, now, &acts);
}

/// Connects and registers under the old id; returns what went out after `Registered`.
fn reconnect(a: &mut Agent, now: Instant) -> Vec<Action> {
    a.handle(now, Event::Connected);
    let acts = drain(a);
    match &acts[..] {
        [Action::Send(Message::Register { agent_id, .. })] => {
            assert_eq!(agent_id.as_ref().map(|i| i.as_str()), Some("A1"));
        }
        other => panic!("{other:?}"),
    }
    a.handle(
        now,
        Event::Message(Message::Registered {
            agent_id: AgentId::from("A1"),
        }),
    );
    drain(a)
}

fn finished(key: &TaskKey) -> Event {
    Event::Finished {
        key: key.clone(),
        outcome: Outcome {
            state: TaskState::Finished,
            reason: Reason::ExitCode(0),
            message: "exit 0".into(),
            stdout_tail: "out".into(),
            stderr_tail: String::new(),
        },
    }
}

#[test]
fn checkpoint_and_recover_round_trip() {
    let t0 = Instant::now();
    let mut a = registered(t0).with_gc(GcPolicy::default());
    running(&mut a, t0, "t1");
    run(&mut a, t0, "t2"); // STARTING unacknowledged, being prepared
    let (mut e, _) = running_one(t0);
    let cp = a.checkpoint(t0);
    assert_eq!(cp.tasks.len(), 2);
    assert_eq!(cp.tasks[1].updates.len(), 1);
    let r = restart(&a, t0);
    let mut cp2 = r.checkpoint(t0);
    assert_eq!(cp2.boot_id, "boot2");
    cp2.boot_id = cp.boot_id.clone();
    assert_eq!(cp2, cp);
    assert_eq!(r.agent_id().map(|i| i.as_str()), Some("A1"));
    assert_eq!(r.used(), a.used());

    // Executors too.
    let cp = e.checkpoint(t0);
    assert_eq!(cp.executors.len(), 1);
    let r = restart(&e, t0);
    assert_eq!(r.executor_envelope(&ekey()), e.executor_envelope(&ekey()));
    let mut cp2 = r.checkpoint(t0);
    cp2.boot_id = cp.boot_id.clone();
    assert_eq!(cp2, cp);
    // The generation moves with the state and not with a mere resend.
    let g = e.generation();
    e.handle_timeout(t0 + Duration::from_secs(1));
    assert_eq!(e.generation(), g);
}

#[test]
fn tasks_live_in_the_runtime_keep_running_and_finish_once() {
    let t0 = Instant::now();
    let mut a = registered(t0);
    running(&mut a, t0, "t1");
    running(&mut a, t0, "t2");
    let mut r = restart(&a, t0);
    r.handle(
        t0,
        Event::Recovered(LiveGuests {
            tasks: vec![tkey("t1"), tkey("t2")],
            executors: vec![],
            same_runtime: true,
            executor_tasks: None,
        }),
    );
    assert!(drain(&mut r).is_empty(), "nothing to redo or report");
    assert_eq!(r.task_state(&tkey("t1")), Some(TaskState::Running));
    assert!(reconnect(&mut r, t0).is_empty(), "no update pending");
    r.handle(t0, finished(&tkey("t1")));
    let ups = statuses(&drain(&mut r));
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].state, TaskState::Finished);
    assert!(ups[0].uuid.as_ref().unwrap().0.starts_with("boot2-"));
    ack(&mut r, t0, "t1", ups[0].uuid.clone().unwrap());
    assert_eq!(r.task_count(), 1);
    // A duplicate report of the same end changes nothing.
    r.handle(t0, finished(&tkey("t1")));
    assert!(drain(&mut r).is_empty());
}

#[test]
fn a_dead_runtime_fails_each_task_once_with_runtime_lost() {
    let t0 = Instant::now();
    let mut a = registered(t0);
    running(&mut a, t0, "t1");
    running(&mut a, t0, "t2");
    let mut r = restart(&a, t0);
    // A terminal event the runtime replays (never acknowledged before the crash) counts.
    r.handle(t0, finished(&tkey("t2")));
    r.handle(t0, Event::Recovered(LiveGuests::default()));
    assert!(statuses(&drain(&mut r)).is_empty(), "not registered yet");
    let ups = statuses(&reconnect(&mut r, t0));
    assert_eq!(ups.len(), 2);
    let t1 = ups.iter().find(|s| s.task_id.as_str() == "t1").unwrap();
    assert_eq!(t1.state, TaskState::Failed);
    assert_eq!(t1.reason, Some(Reason::RuntimeLost));
    let t2 = ups.iter().find(|s| s.task_id.as_str() == "t2").unwrap();
    assert_eq!(t2.state, TaskState::Finished);
    for s in &ups {
        ack(&mut r, t0, s.task_id.as_str(), s.uuid.clone().unwrap());
    }
    assert!(drain(&mut r).is_empty());
    assert_eq!(r.task_count(), 0);
    // A late report of a lost guest is ignored: one terminal update each.
    r.handle(t0, finished(&tkey("t1")));
    assert!(drain(&mut r).is_empty());
    // A second recovery report is ignored.
    r.handle(t0, Event::Recovered(LiveGuests::default()));
    assert!(drain(&mut r).is_empty());
}

#[test]
fn unacknowledged_updates_are_resent_in_order_with_the_same_uuids() {
    let t0 = Instant::now();
    let mut a = registered(t0);
    let acts = run(&mut a, t0, "t1");
    let starting = statuses(&acts)[0].clone();
    a.handle(
        t0,
        Event::Prepared {
            key: tkey("t1"),
            result: Ok(()),
        },
    );
    a.handle(t0, Event::Running { key: tkey("t1") });
    a.handle(t0, finished(&tkey("t1")));
    drain(&mut a);
    // Three updates queued, none acknowledged; the guest is over.
    let mut r = restart(&a, t0);
    r.handle(t0, Event::Recovered(LiveGuests::default()));
    assert!(drain(&mut r).is_empty());
    // All three go out on re-registration, in order, under their old uuids.
    let first = statuses(&reconnect(&mut r, t0));
    let states: Vec<TaskState> = first.iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        [TaskState::Starting, TaskState::Running, TaskState::Finished]
    );
    assert_eq!(first[0], starting);
    assert!(first
        .iter()
        .all(|s| s.uuid.as_ref().unwrap().0.starts_with("boot-")));
    // The end's acknowledgement covers the three.
    ack(&mut r, t0, "t1", first[2].uuid.clone().unwrap());
    assert!(statuses(&drain(&mut r)).is_empty());
    assert_eq!(r.task_count(), 0);
    // Resent on the retry timer too, same uuids, in order.
    let mut a2 = restart(&a, t0);
    a2.handle(t0, Event::Recovered(LiveGuests::default()));
    reconnect(&mut a2, t0);
    a2.handle_timeout(t0 + Duration::from_secs(3));
    assert_eq!(statuses(&drain(&mut a2)), first);
}

#[test]
fn a_task_being_prepared_is_prepared_again() {
    let t0 = Instant::now();
    let mut a = registered(t0);
    let acts = run(&mut a, t0, "t1");
    ack_all(&mut a, t0, &acts);
    let mut r = restart(&a, t0);
    r.handle(t0, Event::Recovered(LiveGuests::default()));
    let acts = drain(&mut r);
    assert!(matches!(&acts[..], [Action::Prepare { task, .. }] if task.task_id.as_str() == "t1"));
    r.handle(
        t0,
        Event::Prepared {
            key: tkey("t1"),
            result: Ok(()),
        },
    );
    assert!(matches!(drain(&mut r)[..], [Action::Launch { .. }]));
}

/// A task killed while prepared by an agent whose preparations could not be stopped (its
/// checkpoint says: preparing, kill asked) is not prepared again: it ends killed.
#[test]
fn a_task_killed_while_prepared_ends_killed_and_is_not_prepared_again() {
    let t0 = Instant::now();
    let mut a = registered_unstoppable(t0);
    let acts = run(&mut a, t0, "t1");
    ack_all(&mut a, t0, &acts);
    kill(&mut a, t0, "t1");
    assert!(drain(&mut a).is_empty());
    let mut r = restart(&a, t0);
    r.handle(t0, Event::Recovered(LiveGuests::default()));
    let acts = drain(&mut r);
    assert!(
        !acts.iter().any(|x| matches!(x, Action::Prepare { .. })),
        "{acts:?}"
    );
    assert_eq!(r.task_state(&tkey("t1")), Some(TaskState::Killed));
}

#[test]
fn a_recovered_executor_gets_its_tasks_updates() {
    let t0 = Instant::now();
    let (a, id) = running_one(t0);
    let mut r = restart(&a, t0);
    r.handle(
        t0,
        Event::Recovered(LiveGuests {
            tasks: vec![],
            executors: vec![id.clone()],
            same_runtime: true,
            executor_tasks: None,
        }),
    );
    // Only the envelope is set again (idempotent).
    assert_eq!(
        exec_actions(&drain(&mut r)),
        vec![ExecutorAction::SetEnvelope {
            id: id.clone(),
            resources: Resources::new(1500, 320 * MIB, 0)
        }]
    );
    reconnect(&mut r, t0);
    let acts = update(&mut r, t0, &id, "t1", TaskState::Running);
    assert_eq!(statuses(&acts)[0].state, TaskState::Running);
    let acts = update(&mut r, t0, &id, "t1", TaskState::Finished);
    let ups = statuses(&acts);
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].state, TaskState::Finished);
    // A later task goes to the same run.
    let acts = super::tests_executors::run_task(&mut r, t0, etask("t2", 100, MIB));
    ack_all(&mut r, t0, &acts);
    assert!(
        matches!(&acts[..], [.., Action::Prepare { task, .. }] if task.task_id.as_str() == "t2")
    );
}

#[test]
fn an_executor_task_whose_launch_never_reached_the_live_instance_is_launched_again_once() {
    let t0 = Instant::now();
    let (mut a, id) = running_one(t0);
    let acts = super::tests_executors::run_task(&mut a, t0, etask("t2", 100, MIB));
    ack_all(&mut a, t0, &acts);
    a.handle(
        t0,
        Event::Prepared {
            key: tkey("t2"),
            result: Ok(()),
        },
    );
    // The checkpoint holds t2 launched; the agent dies before the launch is sent.
    let acts = drain(&mut a);
    assert!(exec_actions(&acts).iter().any(
        |x| matches!(x, ExecutorAction::Launch { task, .. } if task.task_id.as_str() == "t2")
    ));
    let envelope = ExecutorAction::SetEnvelope {
        id: id.clone(),
        resources: Resources::new(1600, 321 * MIB, 0),
    };
    let recovered = |a: &Agent, has: Option<Vec<&str>>| {
        let mut r = restart(a, t0);
        r.handle(
            t0,
            Event::Recovered(LiveGuests {
                executors: vec![id.clone()],
                same_runtime: true,
                executor_tasks: has
                    .map(|h| [(id.clone(), h.into_iter().map(TaskId::from).collect())].into()),
                ..LiveGuests::default()
            }),
        );
        let acts = exec_actions(&drain(&mut r));
        (r, acts)
    };
    // The runtime's instance has t1 only: t2 is launched again, after the envelope.
    let (mut r, acts) = recovered(&a, Some(vec!["t1"]));
    assert_eq!(
        acts,
        vec![
            envelope.clone(),
            ExecutorAction::Launch {
                id: id.clone(),
                task: etask("t2", 100, MIB)
            }
        ]
    );
    reconnect(&mut r, t0);
    let acts = update(&mut r, t0, &id, "t2", TaskState::Running);
    assert_eq!(statuses(&acts)[0].state, TaskState::Running);
    // It has both: nothing is launched again; unknown (replay incomplete): neither.
    assert_eq!(
        recovered(&a, Some(vec!["t1", "t2"])).1,
        vec![envelope.clone()]
    );
    assert_eq!(recovered(&a, None).1, vec![envelope]);
    // A task with a kill pending is not launched again (the kill grace ends it).
    a.handle(
        t0,
        Event::Message(Message::KillTask {
            framework_id: fid(),
            task_id: TaskId::from("t2"),
        }),
    );
    drain(&mut a);
    let acts = recovered(&a, Some(vec!["t1"])).1;
    assert!(
        !acts
            .iter()
            .any(|x| matches!(x, ExecutorAction::Launch { .. })),
        "{acts:?}"
    );
}

#[test]
fn a_lost_executor_fails_its_tasks_once_and_its_next_start_is_a_new_run() {
    let t0 = Instant::now();
    let (a, id) = running_one(t0);
    let mut r = restart(&a, t0);
    r.handle(t0, Event::Recovered(LiveGuests::default()));
    assert_eq!(r.executor_count(), 0);
    let ups = statuses(&reconnect(&mut r, t0));
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].state, TaskState::Failed);
    assert_eq!(ups[0].reason, Some(Reason::RuntimeLost));
    let acts = drain(&mut r);
    ack_all(&mut r, t0, &acts);
    ack(&mut r, t0, "t1", ups[0].uuid.clone().unwrap());
    let acts = super::tests_executors::run_task(&mut r, t0, etask("t2", 100, MIB));
    match exec_actions(&acts).as_slice() {
        [ExecutorAction::Start { id: new, .. }] => assert!(new.run > id.run),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_executor_whose_start_was_under_way_is_started_again() {
    let t0 = Instant::now();
    let mut a = registered(t0);
    let acts = super::tests_executors::run_task(&mut a, t0, etask("t1", 100, MIB));
    let id = match exec_actions(&acts).as_slice() {
        [ExecutorAction::Start { id, .. }] => id.clone(),
        other => panic!("{other:?}"),
    };
    let mut r = restart(&a, t0);
    r.handle(t0, Event::Recovered(LiveGuests::default()));
    let again = match exec_actions(&drain(&mut r)).as_slice() {
        [ExecutorAction::Start { id: again, .. }] => again.clone(),
        other => panic!("{other:?}"),
    };
    assert!(again.run > id.run, "a new run");
    // A late start of the old run is not this one.
    r.handle(t0, Event::Executor(ExecutorEvent::Started { id }));
    assert!(drain(&mut r).is_empty());
    r.handle(t0, Event::Executor(ExecutorEvent::Started { id: again }));
    assert!(matches!(&drain(&mut r)[..], [Action::Prepare { .. }]));
}

#[test]
fn owned_directories_cover_tasks_executors_and_pending_collections() {
    let t0 = Instant::now();
    let (mut a, _) = running_one(t0);
    let mut a2 = registered(t0).with_gc(GcPolicy::default());
    running(&mut a2, t0, "t9");
    a2.handle(t0, finished(&tkey("t9")));
    let acts = drain(&mut a2);
    ack_all(&mut a2, t0, &acts);
    assert_eq!(a2.task_count(), 0);
    let r = restart(&a2, t0);
    assert!(r.owned_directories().contains(&GcTarget::Task {
        framework_id: fid(),
        task_id: TaskId::from("t9"),
    }));
    assert_eq!(r.gc_pending(), 1);
    running(&mut a, t0, "t3");
    let owned = a.owned_directories();
    assert!(owned.contains(&GcTarget::Executor {
        framework_id: ekey().0,
        executor_id: ekey().1,
    }));
    assert!(owned.contains(&GcTarget::Task {
        framework_id: fid(),
        task_id: TaskId::from("t3"),
    }));
}

#[test]
fn drain_kills_everything_and_refuses_new_tasks() {
    let t0 = Instant::now();
    let (mut a, id) = running_one(t0);
    running(&mut a, t0, "t2");
    a.drain(t0);
    let acts = drain(&mut a);
    assert!(acts
        .iter()
        .any(|x| matches!(x, Action::Kill { key } if *key == tkey("t2"))));
    assert!(exec_actions(&acts).contains(&ExecutorAction::Shutdown { id: id.clone() }));
    assert!(!a.is_drained());
    a.handle(
        t0,
        Event::Message(Message::RunTask {
            framework_id: fid(),
            task: task("t3", 1, GIB),
        }),
    );
    let refused = statuses(&drain(&mut a));
    assert_eq!(refused[0].state, TaskState::Failed);
    ack(&mut a, t0, "t3", refused[0].uuid.clone().unwrap());
    a.handle(
        t0,
        Event::Finished {
            key: tkey("t2"),
            outcome: Outcome {
                state: TaskState::Killed,
                reason: Reason::Killed,
                message: "killed".into(),
                stdout_tail: String::new(),
                stderr_tail: String::new(),
            },
        },
    );
    let acts = drain(&mut a);
    ack_all(&mut a, t0, &acts);
    a.handle(
        t0,
        Event::Executor(ExecutorEvent::Exited {
            id,
            outcome: Outcome {
                state: TaskState::Finished,
                reason: Reason::ExitCode(0),
                message: "returned".into(),
                stdout_tail: String::new(),
                stderr_tail: String::new(),
            },
        }),
    );
    let acts = drain(&mut a);
    ack_all(&mut a, t0, &acts);
    assert!(a.is_drained(), "{} tasks left", a.task_count());
}

#[test]
fn a_launch_that_never_reached_a_surviving_runtime_is_sent_again() {
    let t0 = Instant::now();
    let mut a = registered(t0);
    running(&mut a, t0, "t1");
    let mut r = restart(&a, t0);
    r.handle(
        t0,
        Event::Recovered(LiveGuests {
            same_runtime: true,
            ..LiveGuests::default()
        }),
    );
    assert!(
        matches!(&drain(&mut r)[..], [Action::Launch { task, .. }] if task.task_id.as_str() == "t1")
    );
    assert_eq!(r.task_state(&tkey("t1")), Some(TaskState::Running));
    r.handle(t0, finished(&tkey("t1")));
    reconnect(&mut r, t0);
    assert_eq!(r.task_state(&tkey("t1")), Some(TaskState::Finished));
}

#[test]
fn a_kill_asked_before_the_launch_reached_the_runtime_ends_the_task_killed() {
    let t0 = Instant::now();
    let mut a = registered(t0);
    running(&mut a, t0, "t1");
    a.handle(
        t0,
        Event::Message(Message::KillTask {
            framework_id: fid(),
            task_id: TaskId::from("t1"),
        }),
    );
    drain(&mut a);
    let mut r = restart(&a, t0);
    r.handle(
        t0,
        Event::Recovered(LiveGuests {
            same_runtime: true,
            ..LiveGuests::default()
        }),
    );
    assert!(drain(&mut r).is_empty(), "no launch");
    let ups = statuses(&reconnect(&mut r, t0));
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].state, TaskState::Killed);
}
