//! Master restart: a core recovered from the registry its `Persist` actions were written to.
//! Agents and frameworks come back under their ids, tasks are TASK_UNREACHABLE (never LOST)
//! until their agent re-registers, timeouts count from the restart, and every registry change
//! precedes the sends that depend on it. Also the master side of an agent's drain.

use super::*;
use crate::registry::RegistryOp;
use std::collections::BTreeSet;

/// One agent (conn 1) running `t1` (RUNNING acknowledged) and `t2` (still STAGING), for
/// framework `f1` (conn 10).
fn two_tasks() -> (H, AgentId, FrameworkId, Vec<TaskInfo>, Digest) {
    let (mut h, a, f, o, m) = one_agent_one_offer();
    h.accept(
        10,
        &[&o],
        vec![
            task("t1", &a, res(1.0, GIB), m),
            task("t2", &a, res(1.0, GIB), m),
        ],
    );
    h.status(1, update(&f, "t1", &a, TaskState::Running, "u1"));
    h.ack(10, &a, "t1", "u1");
    h.take();
    let infos = ["t1", "t2"]
        .iter()
        .map(|t| h.m.task(&f, &TaskId((*t).into())).unwrap().info.clone())
        .collect();
    (h, a, f, infos, m)
}

fn resubscribe(h: &mut H, conn: ConnId, f: &FrameworkId) -> Vec<Message> {
    h.connect(conn, SCHED);
    h.msg(conn, subscribe_msg("f1", Some(f.clone())));
    h.sent(conn)
}

fn reregister(h: &mut H, conn: ConnId, a: &AgentId, running: Vec<RunningTask>) -> Vec<Message> {
    h.connect(conn, AGENT);
    h.msg(
        conn,
        register_msg(Some(a.clone()), res(4.0, 4 * GIB), running),
    );
    h.sent(conn)
}

fn reported(f: &FrameworkId, info: &TaskInfo, state: TaskState) -> RunningTask {
    RunningTask {
        framework_id: f.clone(),
        task: info.clone(),
        state,
    }
}

fn reconcile_states(h: &mut H, conn: ConnId) -> Vec<(String, TaskState)> {
    h.take();
    h.msg(conn, Message::Reconcile { task_ids: vec![] });
    h.updates(conn)
        .into_iter()
        .map(|s| (s.task_id.0, s.state))
        .collect()
}

#[test]
fn restart_recovers_agents_frameworks_and_tasks_as_unreachable() {
    let (mut h, a, f, _, _) = two_tasks();
    let used = h.m.agent(&a).unwrap().used;
    h.restart();
    let agent = h.m.agent(&a).expect("agent recovered");
    assert!(!agent.is_connected());
    assert_eq!(agent.used, used, "its tasks are still charged");
    assert_eq!(
        agent.remove_at,
        Some(h.now + h.cfg.agent_reregister_timeout)
    );
    let fw = h.m.framework(&f).expect("framework recovered");
    assert!(!fw.is_connected());
    assert_eq!(fw.failover_at, Some(h.now + Duration::from_secs(60)));
    for t in h.m.tasks() {
        assert_eq!(t.status.state, TaskState::Unreachable);
        assert_eq!(t.status.reason, Some(Reason::AgentUnreachable));
    }
    assert_eq!(h.m.tasks().count(), 2);
    assert_eq!(
        h.m.offers().count(),
        0,
        "nothing to offer: the agent is away"
    );
}

#[test]
fn reconcile_before_the_agent_is_back_says_unreachable_then_tasks_return_and_finish() {
    let (mut h, a, f, infos, _) = two_tasks();
    h.restart();
    let sent = resubscribe(&mut h, 11, &f);
    assert!(
        matches!(&sent[0], Message::Subscribed { framework_id, .. } if *framework_id == f),
        "{sent:?}"
    );
    assert_eq!(
        reconcile_states(&mut h, 11),
        vec![
            ("t1".into(), TaskState::Unreachable),
            ("t2".into(), TaskState::Unreachable)
        ],
        "never LOST while the agent may come back"
    );
    // Explicit reconcile too.
    h.reconcile(11, &["t1"]);
    assert_eq!(h.updates(11)[0].state, TaskState::Unreachable);
    // The agent comes back with both tasks running.
    let to_agent = reregister(
        &mut h,
        2,
        &a,
        vec![
            reported(&f, &infos[0], TaskState::Running),
            reported(&f, &infos[1], TaskState::Running),
        ],
    );
    assert!(matches!(&to_agent[0], Message::Registered { agent_id } if *agent_id == a));
    assert!(run_tasks(&to_agent).is_empty(), "nothing is launched twice");
    assert!(kill_tasks(&to_agent).is_empty());
    let ups = h.updates(11);
    assert_eq!(
        ups.iter()
            .map(|s| (s.task_id.0.as_str(), s.state))
            .collect::<Vec<_>>(),
        vec![("t1", TaskState::Running), ("t2", TaskState::Running)]
    );
    // Offers flow again: the agent's free part goes to the re-subscribed framework.
    assert_eq!(h.offers(11).len(), 1);
    // t1 finishes; the update is relayed, the ack goes to the agent, the registry forgets it.
    h.status(2, update(&f, "t1", &a, TaskState::Finished, "u2"));
    let ups = h.updates(11);
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].state, TaskState::Finished);
    h.ack(11, &a, "t1", "u2");
    assert!(h
        .sent(2)
        .iter()
        .any(|m| matches!(m, Message::StatusUpdateAck { .. })));
    let snap = h.reg.snapshot();
    assert_eq!(snap.tasks.len(), 1);
    assert_eq!(snap.tasks[0].info.task_id.0, "t2");
}

#[test]
fn updates_from_an_agent_back_before_its_framework_reach_it_once_it_resubscribes() {
    let (mut h, a, f, infos, _) = two_tasks();
    h.restart();
    reregister(
        &mut h,
        2,
        &a,
        vec![
            reported(&f, &infos[0], TaskState::Running),
            reported(&f, &infos[1], TaskState::Finished),
        ],
    );
    // The framework is away: the agent's update is not acknowledged by the master (the agent
    // keeps and resends it).
    h.status(2, update(&f, "t2", &a, TaskState::Finished, "u9"));
    assert!(!h
        .sent(2)
        .iter()
        .any(|m| matches!(m, Message::StatusUpdateAck { .. })));
    resubscribe(&mut h, 11, &f);
    // The agent resends; now it is relayed.
    h.status(2, update(&f, "t2", &a, TaskState::Finished, "u9"));
    let ups = h.updates(11);
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].state, TaskState::Finished);
    assert_eq!(ups[0].uuid, Some(UpdateId("u9".into())));
}

#[test]
fn an_unreported_staging_task_is_launched_again_and_an_unreported_running_one_is_lost() {
    let (mut h, a, f, infos, _) = two_tasks();
    h.restart();
    resubscribe(&mut h, 11, &f);
    // The agent reports t1 (running) but not t2, whose launch was persisted and maybe never
    // sent: it is sent again, not declared lost.
    let to_agent = reregister(
        &mut h,
        2,
        &a,
        vec![reported(&f, &infos[0], TaskState::Running)],
    );
    assert_eq!(run_tasks(&to_agent), vec![TaskId("t2".into())]);
    assert_eq!(
        h.m.task(&f, &TaskId("t2".into())).unwrap().status.state,
        TaskState::Staging
    );
    assert_eq!(
        h.m.task(&f, &TaskId("t1".into())).unwrap().status.state,
        TaskState::Running
    );
}

#[test]
fn a_kill_requested_before_the_restart_is_sent_again_when_the_agent_returns() {
    let (mut h, a, f, infos, _) = two_tasks();
    h.msg(
        10,
        Message::Kill {
            task_id: TaskId("t1".into()),
        },
    );
    assert_eq!(kill_tasks(&h.sent(1)), vec![TaskId("t1".into())]);
    h.restart();
    assert!(h.m.task(&f, &TaskId("t1".into())).unwrap().kill_requested);
    resubscribe(&mut h, 11, &f);
    let to_agent = reregister(
        &mut h,
        2,
        &a,
        vec![
            reported(&f, &infos[0], TaskState::Running),
            reported(&f, &infos[1], TaskState::Running),
        ],
    );
    assert_eq!(kill_tasks(&to_agent), vec![TaskId("t1".into())]);
}

#[test]
fn timeouts_count_from_the_restart() {
    let (mut h, a, f, _, _) = two_tasks();
    // Time passes before the crash; none of it counts afterwards.
    h.advance(Duration::from_secs(3600));
    h.take();
    h.restart();
    // The framework comes back at 59 s, within its 60 s failover timeout.
    h.advance(Duration::from_secs(59));
    resubscribe(&mut h, 11, &f);
    assert!(h.m.framework(&f).is_some());
    // The agent never does: its tasks stay UNREACHABLE until the re-registration timeout.
    let left = h.cfg.agent_reregister_timeout - Duration::from_secs(60);
    h.advance(left);
    assert!(h.m.agent(&a).is_some());
    assert!(h.updates(11).is_empty());
    h.advance(Duration::from_secs(2));
    assert!(h.m.agent(&a).is_none());
    let ups = h.updates(11);
    assert_eq!(ups.len(), 2);
    assert!(ups.iter().all(|s| s.state == TaskState::Gone));
    assert!(h.reg.snapshot().agents.is_empty());
    assert!(h.reg.snapshot().tasks.is_empty());
}

#[test]
fn a_framework_not_back_within_its_failover_timeout_is_torn_down_after_a_restart() {
    let (mut h, a, f, infos, _) = two_tasks();
    h.restart();
    h.advance(Duration::from_secs(61));
    assert!(h.m.framework(&f).is_none());
    assert!(h.reg.snapshot().frameworks.is_empty());
    // Its agent comes back: the torn-down framework's tasks are killed.
    let to_agent = reregister(
        &mut h,
        2,
        &a,
        vec![
            reported(&f, &infos[0], TaskState::Running),
            reported(&f, &infos[1], TaskState::Running),
        ],
    );
    assert_eq!(
        kill_tasks(&to_agent),
        vec![TaskId("t1".into()), TaskId("t2".into())]
    );
}

#[test]
fn a_second_restart_before_anyone_returns_keeps_everything() {
    let (mut h, a, f, _, _) = two_tasks();
    h.restart();
    h.advance(Duration::from_secs(10));
    h.restart();
    assert!(h.m.agent(&a).is_some());
    assert!(h.m.framework(&f).is_some());
    assert_eq!(h.m.tasks().count(), 2);
}

#[test]
fn blobs_named_by_recovered_tasks_keep_their_owners_and_are_not_collected() {
    let mut h = H::with(MasterConfig {
        run_id: "r".into(),
        blob_gc_grace: Some(Duration::from_secs(60)),
        ..MasterConfig::default()
    });
    let a = h.register(1, res(4.0, 4 * GIB));
    let f = h.subscribe(10, "f1");
    let o = h.offers(10).remove(0);
    let m = h.upload_module(b"\0asm module");
    let unused = Digest::of(b"\0asm other");
    h.ev(Event::BlobStored {
        digest: unused,
        kind: BlobKind::Module,
        owner: Some("default".into()),
    });
    h.accept(10, &[&o], vec![task("t1", &a, res(1.0, GIB), m)]);
    h.take();
    h.restart();
    // The driver reports the blobs it finds in its store, owned by nobody it knows of.
    for digest in [m, unused] {
        h.ev(Event::BlobStored {
            digest,
            kind: BlobKind::Module,
            owner: None,
        });
    }
    resubscribe(&mut h, 11, &f);
    assert!(
        h.m.may_fetch(11, &m),
        "the recovered task's principal owns it"
    );
    assert!(!h.m.may_fetch(11, &unused), "nobody's until uploaded again");
    // Within the agent's re-registration timeout, well past the grace.
    h.advance(Duration::from_secs(300));
    assert!(h.m.has_blob(&m).is_some(), "referenced by a recovered task");
    assert!(h.m.has_blob(&unused).is_none());
}

/// Every send that depends on a registry change comes after it in the action order. (A
/// `RunTask` does not: it goes ahead of its task's record, see the test below.)
fn assert_persisted_before_sent(log: &[Action]) {
    let mut frameworks = BTreeSet::new();
    let mut agents = BTreeSet::new();
    let mut kills = BTreeSet::new();
    let mut removed = BTreeSet::new();
    let mut terminal_uuids = BTreeSet::new();
    let mut checked = 0;
    for a in log {
        match a {
            Action::Persist(ops) => {
                for op in ops {
                    match op {
                        RegistryOp::PutFramework(f) => {
                            frameworks.insert(f.id.clone());
                        }
                        RegistryOp::PutAgent(a) => {
                            agents.insert(a.id.clone());
                        }
                        RegistryOp::KillRequested {
                            framework_id,
                            task_id,
                        } => {
                            kills.insert((framework_id.clone(), task_id.clone()));
                        }
                        RegistryOp::RemoveTask {
                            framework_id,
                            task_id,
                        } => {
                            removed.insert((framework_id.clone(), task_id.clone()));
                        }
                        _ => {}
                    }
                }
            }
            Action::Send { msg, .. } => {
                checked += 1;
                match msg {
                    Message::Subscribed { framework_id, .. } => {
                        assert!(
                            frameworks.contains(framework_id),
                            "Subscribed before persisted"
                        )
                    }
                    Message::Registered { agent_id } => {
                        assert!(agents.contains(agent_id), "Registered before persisted")
                    }
                    Message::KillTask {
                        framework_id,
                        task_id,
                    } => assert!(
                        kills.contains(&(framework_id.clone(), task_id.clone())),
                        "KillTask before the kill was persisted"
                    ),
                    Message::Update { status } if status.state == TaskState::Gone => assert!(
                        removed.contains(&(status.framework_id.clone(), status.task_id.clone())),
                        "GONE before the task left the registry"
                    ),
                    Message::Update { status } if status.state.is_terminal() => {
                        terminal_uuids.extend(status.uuid.clone());
                    }
                    Message::StatusUpdateAck {
                        framework_id,
                        task_id,
                        uuid,
                    } if terminal_uuids.contains(uuid) => assert!(
                        removed.contains(&(framework_id.clone(), task_id.clone())),
                        "terminal ack before the task left the registry"
                    ),
                    _ => checked -= 1,
                }
            }
            Action::Close { .. } => {}
        }
    }
    assert!(checked > 0, "nothing checked");
}

#[test]
fn every_registry_change_precedes_the_sends_that_depend_on_it() {
    let (mut h, a, f, _, _) = two_tasks();
    h.msg(
        10,
        Message::Kill {
            task_id: TaskId("t2".into()),
        },
    );
    h.status(1, update(&f, "t2", &a, TaskState::Killed, "u3"));
    h.ack(10, &a, "t2", "u3");
    h.status(1, update(&f, "t1", &a, TaskState::Finished, "u4"));
    h.ack(10, &a, "t1", "u4");
    let log = h.log.clone();
    assert_persisted_before_sent(&log);
    // And across a restart with the agent timing out.
    let (mut h, _, f, _, _) = two_tasks();
    h.restart();
    resubscribe(&mut h, 11, &f);
    h.advance(h.cfg.agent_reregister_timeout + Duration::from_secs(1));
    let log = h.log.clone();
    assert_persisted_before_sent(&log);
}

#[test]
fn a_draining_agent_keeping_its_tasks_is_not_offered_and_its_tasks_keep_their_states() {
    let (mut h, a, f, infos, _) = two_tasks();
    // Its remaining resources are on offer to f1.
    h.msg(10, Message::Revive);
    let before = h.m.offers().count();
    assert!(before > 0);
    h.take();
    h.msg(1, Message::AgentLeaving { keep_tasks: true });
    let sent = h.sent(1);
    assert_eq!(sent, vec![Message::AgentLeft]);
    assert!(h
        .sent(10)
        .iter()
        .any(|m| matches!(m, Message::Rescind { .. })));
    assert_eq!(h.m.offers().count(), 0);
    h.advance(Duration::from_secs(5));
    assert_eq!(h.m.offers().count(), 0, "not offered again while leaving");
    h.disconnect(1);
    assert!(
        h.updates(10).is_empty(),
        "a planned restart is not a partition"
    );
    assert_eq!(
        reconcile_states(&mut h, 10),
        vec![
            ("t1".into(), TaskState::Running),
            ("t2".into(), TaskState::Staging)
        ]
    );
    // Its successor re-registers under the same id with the tasks: offered again.
    let to_agent = reregister(
        &mut h,
        2,
        &a,
        vec![
            reported(&f, &infos[0], TaskState::Running),
            reported(&f, &infos[1], TaskState::Running),
        ],
    );
    assert!(run_tasks(&to_agent).is_empty());
    assert!(!h.m.agent(&a).unwrap().leaving);
    assert_eq!(h.offers(10).len(), 1);
}

#[test]
fn a_leaving_agent_that_never_returns_has_its_tasks_gone_at_the_timeout() {
    let (mut h, a, _, _, _) = two_tasks();
    h.msg(1, Message::AgentLeaving { keep_tasks: true });
    h.disconnect(1);
    h.take();
    h.advance(h.cfg.agent_reregister_timeout + Duration::from_secs(1));
    assert!(h.m.agent(&a).is_none());
    let ups = h.updates(10);
    assert_eq!(ups.len(), 2);
    assert!(ups.iter().all(|s| s.state == TaskState::Gone));
}

#[test]
fn a_draining_agent_without_its_tasks_is_removed_and_told_after_the_write() {
    let (mut h, a, f, _, _) = two_tasks();
    h.status(1, update(&f, "t1", &a, TaskState::Killed, "u5"));
    h.take();
    h.log.clear();
    h.msg(1, Message::AgentLeaving { keep_tasks: false });
    assert!(h.m.agent(&a).is_none());
    assert!(h.reg.snapshot().agents.is_empty());
    // t1 ended already (its update delivered); t2 had not: it is GONE now.
    let ups = h.updates(10);
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].task_id.0, "t2");
    assert_eq!(ups[0].state, TaskState::Gone);
    assert_eq!(ups[0].reason, Some(Reason::AgentRestarted));
    let left = h
        .log
        .iter()
        .position(|a| {
            matches!(
                a,
                Action::Send {
                    msg: Message::AgentLeft,
                    ..
                }
            )
        })
        .expect("AgentLeft sent");
    let removed = h
        .log
        .iter()
        .position(|a| {
            matches!(a, Action::Persist(ops) if ops.iter().any(|o| matches!(o, RegistryOp::RemoveAgent(_))))
        })
        .expect("removal persisted");
    assert!(removed < left);
    // The agent's id is gone for good: coming back with it, it is told to shut down.
    let to_agent = reregister(&mut h, 2, &a, vec![]);
    assert!(matches!(to_agent[0], Message::Shutdown { .. }));
}

#[test]
fn agent_leaving_before_register_is_a_protocol_violation() {
    let mut h = H::new();
    h.connect(1, AGENT);
    h.msg(1, Message::AgentLeaving { keep_tasks: true });
    assert_eq!(h.closes().len(), 1);
}

#[test]
fn an_empty_registry_recovers_a_fresh_master() {
    let mut h = H::new();
    h.restart();
    assert_eq!(h.m.agents().count(), 0);
    let a = h.register(1, res(4.0, 4 * GIB));
    h.subscribe(10, "f1");
    assert_eq!(h.offers(10)[0].agent_id, a);
}

#[test]
fn an_agent_removed_before_a_restart_is_told_to_shut_down_after_it() {
    let (mut h, a, f, infos, _) = two_tasks();
    // The agent's link drops and it does not come back in time: removed, tasks GONE.
    h.disconnect(1);
    h.advance(h.cfg.agent_reregister_timeout + Duration::from_secs(1));
    assert!(h.m.agent(&a).is_none());
    assert_eq!(h.reg.snapshot().removed_agents, vec![a.clone()]);
    // A new master process, minting ids under a new run id: the old id is not "its own".
    h.cfg.run_id = "r2".into();
    h.restart();
    let to_agent = reregister(
        &mut h,
        2,
        &a,
        vec![reported(&f, &infos[0], TaskState::Running)],
    );
    assert!(
        matches!(to_agent.as_slice(), [Message::Shutdown { .. }]),
        "{to_agent:?}"
    );
    assert!(h.m.agent(&a).is_none(), "not re-admitted");
    assert!(h.m.task(&f, &TaskId("t1".into())).is_none());
}

#[test]
fn a_framework_torn_down_before_a_restart_cannot_resubscribe_after_it() {
    let (mut h, _, f, _, _) = two_tasks();
    h.msg(10, Message::Teardown);
    assert!(h.m.framework(&f).is_none());
    assert_eq!(h.reg.snapshot().removed_frameworks, vec![f.clone()]);
    h.cfg.run_id = "r2".into();
    h.restart();
    let answer = resubscribe(&mut h, 11, &f);
    assert!(
        matches!(answer.as_slice(), [Message::Error { message }] if message.contains("torn down")),
        "{answer:?}"
    );
    assert!(h.m.framework(&f).is_none());
}

#[test]
fn a_task_whose_accept_died_with_the_master_reconciles_lost_with_no_agent_and_no_reason() {
    let (mut h, a, f, _, _) = two_tasks();
    h.restart();
    resubscribe(&mut h, 11, &f);
    h.take();
    h.reconcile(11, &["t1", "never-accepted"]);
    let ups = h.updates(11);
    // Known: unreachable on its agent. Unknown: no answer while the agent is unheard (a launch
    // goes out ahead of its record, so the task could run there).
    assert_eq!(ups.len(), 1, "{ups:?}");
    assert_eq!(ups[0].state, TaskState::Unreachable);
    assert_eq!(ups[0].agent_id.as_ref(), Some(&a));
    let infos: Vec<TaskInfo> = ["t1", "t2"]
        .iter()
        .map(|t| h.m.task(&f, &TaskId((*t).into())).unwrap().info.clone())
        .collect();
    reregister(
        &mut h,
        2,
        &a,
        infos
            .iter()
            .map(|i| reported(&f, i, TaskState::Running))
            .collect(),
    );
    let ups: Vec<TaskStatus> = h
        .updates(11)
        .into_iter()
        .filter(|s| s.task_id.0 == "never-accepted")
        .collect();
    // The contract a client relaunches on: it never ran.
    assert_eq!(ups.len(), 1, "{ups:?}");
    assert_eq!(ups[0].state, TaskState::Lost);
    assert_eq!(ups[0].agent_id, None);
    assert_eq!(ups[0].reason, None);
}

/// The states the framework on `conn` was sent, per task, in order.
fn seen_by(h: &mut H, conn: ConnId) -> Vec<(String, TaskState)> {
    h.updates(conn)
        .into_iter()
        .map(|s| (s.task_id.0, s.state))
        .collect()
}

/// After a restart: t1 RUNNING (acknowledged) ended while the master was down; t2 (STAGING in
/// the master's books) runs, its RUNNING not yet acknowledged. The framework re-subscribes,
/// reconciles during the window if `reconcile_first`, then the agent re-registers and resends
/// its unacknowledged updates, oldest first. Returns what the framework saw, and the acks the
/// master itself sent the agent.
fn restart_sequence(reconcile_first: bool) -> (Vec<(String, TaskState)>, Vec<String>, H) {
    let (mut h, a, f, infos, _) = two_tasks();
    h.restart();
    resubscribe(&mut h, 11, &f);
    let mut all = Vec::new();
    if reconcile_first {
        let states = reconcile_states(&mut h, 11);
        assert_eq!(
            states,
            [
                ("t1".to_owned(), TaskState::Unreachable),
                ("t2".to_owned(), TaskState::Unreachable)
            ]
        );
        all.extend(states);
    }
    reregister(
        &mut h,
        2,
        &a,
        vec![
            reported(&f, &infos[0], TaskState::Finished),
            reported(&f, &infos[1], TaskState::Running),
        ],
    );
    all.extend(seen_by(&mut h, 11));
    // Reconcile in the window before the agent's updates: t1 is STAGING (the master's guess,
    // "launched"; its end is on its way), t2 RUNNING.
    let states = reconcile_states(&mut h, 11);
    assert_eq!(
        states,
        [
            ("t1".to_owned(), TaskState::Staging),
            ("t2".to_owned(), TaskState::Running)
        ]
    );
    h.status(2, update(&f, "t2", &a, TaskState::Running, "u2"));
    h.status(2, update(&f, "t1", &a, TaskState::Finished, "u3"));
    all.extend(seen_by(&mut h, 11));
    let acks = h
        .sent(2)
        .into_iter()
        .filter_map(|m| match m {
            Message::StatusUpdateAck { uuid, .. } => Some(uuid.0),
            _ => None,
        })
        .collect();
    assert_eq!(
        reconcile_states(&mut h, 11),
        [
            ("t1".to_owned(), TaskState::Finished),
            ("t2".to_owned(), TaskState::Running)
        ]
    );
    (all, acks, h)
}

#[test]
fn after_a_restart_the_framework_sees_each_state_once_and_no_step_back() {
    // Not told anything since the restart: the agent's own updates continue its view.
    let (all, acks, _) = restart_sequence(false);
    assert_eq!(
        all,
        [
            ("t2".to_owned(), TaskState::Running),
            ("t1".to_owned(), TaskState::Finished),
        ],
        "no master-made TASK_STAGING for t1, one RUNNING for t2"
    );
    assert!(acks.is_empty(), "the framework acknowledges both: {acks:?}");
}

#[test]
fn after_a_restart_a_framework_told_unreachable_is_told_the_task_is_back_once() {
    // A reconcile told it UNREACHABLE: t2 gets the restore notice, and the agent's repeated
    // RUNNING is acknowledged by the master, not forwarded; t1 (ended) gets no STAGING.
    let (all, acks, _) = restart_sequence(true);
    assert_eq!(
        all,
        [
            ("t1".to_owned(), TaskState::Unreachable),
            ("t2".to_owned(), TaskState::Unreachable),
            ("t2".to_owned(), TaskState::Running),
            ("t1".to_owned(), TaskState::Finished),
        ]
    );
    assert_eq!(acks, ["u2"]);
}

/// An agent's terminal update goes to its framework ahead of the task's `EndTask`, so the
/// write overlaps the update's way to the framework; the freed resources are offered only
/// after it. A master that dies between the two (the update sent, the write lost) hears the
/// update again from the agent and forwards it again: the framework may hear an end twice,
/// never lose one, and the books stay exact.
#[test]
fn a_terminal_update_goes_ahead_of_its_end_and_is_heard_again_after_a_lost_write() {
    let (mut h, a, f, infos, _) = two_tasks();
    // Its accept's refuse filter would keep the freed resources from it.
    h.msg(10, Message::Revive);
    h.take();
    h.m.handle(
        h.now,
        Event::Message {
            conn: 1,
            msg: Message::StatusUpdate {
                status: update(&f, "t1", &a, TaskState::Finished, "u4"),
            },
        },
    );
    let mut actions = Vec::new();
    while let Some(action) = h.m.poll_action() {
        actions.push(action);
    }
    let first_persist = actions
        .iter()
        .position(|a| matches!(a, Action::Persist(_)))
        .expect("the end is persisted");
    assert!(
        actions[..first_persist].iter().any(|a| matches!(
            a,
            Action::Send { conn: 10, msg: Message::Update { status } }
                if status.task_id.0 == "t1" && status.state == TaskState::Finished
        )),
        "forwarded ahead of the write: {actions:?}"
    );
    assert!(
        matches!(&actions[first_persist], Action::Persist(ops) if ops.iter().any(|o| matches!(
            o, RegistryOp::EndTask { task_id, .. } if task_id.0 == "t1"))),
        "{actions:?}"
    );
    while h.m.poll_timeout().is_some_and(|t| t <= h.now) {
        h.m.handle_timeout(h.now);
        while let Some(action) = h.m.poll_action() {
            actions.push(action);
        }
    }
    let offers_at = actions
        .iter()
        .position(|a| {
            matches!(
                a,
                Action::Send {
                    msg: Message::Offers { .. },
                    ..
                }
            )
        })
        .expect("the freed resources are offered");
    assert!(
        offers_at > first_persist,
        "offered before the end was durable"
    );

    // The driver dies before the write: the registry never hears of the end.
    h.restart();
    resubscribe(&mut h, 11, &f);
    reregister(
        &mut h,
        2,
        &a,
        vec![
            reported(&f, &infos[0], TaskState::Finished),
            reported(&f, &infos[1], TaskState::Staging),
        ],
    );
    h.take();
    // The agent still holds the unacknowledged update, and resends it.
    h.status(2, update(&f, "t1", &a, TaskState::Finished, "u4"));
    let again = h.updates(11);
    assert!(
        again
            .iter()
            .any(|s| s.task_id.0 == "t1" && s.state == TaskState::Finished),
        "{again:?}"
    );
    h.ack(11, &a, "t1", "u4");
    let acked = h.sent(2);
    assert!(
        acked
            .iter()
            .any(|m| matches!(m, Message::StatusUpdateAck { task_id, .. } if task_id.0 == "t1")),
        "{acked:?}"
    );
    assert!(
        h.m.task(&f, &TaskId("t1".into())).is_none(),
        "off the books"
    );
}

/// Runs an accept up to the driver's commit and "dies" there: the actions queued ahead of the
/// first `Persist` are returned (sent), the rest are lost with the registry changes.
fn accept_then_die_before_the_commit(
    h: &mut H,
    conn: ConnId,
    offer: &Offer,
    tasks: Vec<TaskInfo>,
) -> Vec<Action> {
    h.m.handle(
        h.now,
        Event::Message {
            conn,
            msg: Message::Accept {
                offer_ids: vec![offer.id.clone()],
                tasks,
                filters: Filters::default(),
            },
        },
    );
    let mut sent = Vec::new();
    let mut committed = false;
    while let Some(action) = h.m.poll_action() {
        committed |= matches!(action, Action::Persist(_));
        if !committed {
            sent.push(action);
        }
    }
    assert!(committed, "the launch is persisted");
    h.restart();
    sent
}

/// A launch goes to its agent ahead of the task's record, so the commit overlaps its way
/// there. A master that dies between the two comes back without the task: a framework that
/// asks about it gets no answer until the agent re-registers, and then the task's real state
/// (adopted), never TASK_LOST for a task that runs; a task it really does not know is
/// TASK_LOST then.
#[test]
fn a_launch_lost_with_its_record_is_adopted_and_reconciliation_waits_for_its_agent() {
    let (mut h, a, f, o, m) = one_agent_one_offer();
    let t1 = task("t1", &a, res(1.0, GIB), m);
    let sent = accept_then_die_before_the_commit(&mut h, 10, &o, vec![t1.clone()]);
    assert!(
        sent.iter().any(|x| matches!(
            x,
            Action::Send { conn: 1, msg: Message::RunTask { task, .. } } if task.task_id.0 == "t1"
        )),
        "the launch went out ahead of the commit: {sent:?}"
    );
    assert!(
        h.m.task(&f, &TaskId("t1".into())).is_none(),
        "lost with the record"
    );

    resubscribe(&mut h, 11, &f);
    h.take();
    h.reconcile(11, &["t1", "never"]);
    assert!(
        h.updates(11).is_empty(),
        "no answer while the agent is unheard"
    );

    reregister(&mut h, 2, &a, vec![reported(&f, &t1, TaskState::Running)]);
    let answers: Vec<(String, TaskState)> = h
        .updates(11)
        .into_iter()
        .map(|s| (s.task_id.0, s.state))
        .collect();
    assert_eq!(
        answers,
        vec![
            ("t1".to_owned(), TaskState::Running),
            ("never".to_owned(), TaskState::Lost)
        ]
    );
    let agent = h.m.agent(&a).unwrap();
    assert_eq!(agent.used, res(1.0, GIB), "the adopted task is charged");
    // Once every agent is heard from, an unknown task is answered at once.
    h.reconcile(11, &["other"]);
    assert_eq!(h.updates(11)[0].state, TaskState::Lost);
}

/// The same, with the task ended on the agent before it re-registers: it is adopted ended (not
/// charged), and the held reconciliation is answered by the end the agent resends (with its
/// output's tail, which `tessera run` prints), not by a status of the master's; acknowledging
/// it lets the agent forget it.
#[test]
fn a_launch_lost_with_its_record_that_ended_reaches_its_framework() {
    let (mut h, a, f, o, m) = one_agent_one_offer();
    let t1 = task("t1", &a, res(1.0, GIB), m);
    accept_then_die_before_the_commit(&mut h, 10, &o, vec![t1.clone()]);
    resubscribe(&mut h, 11, &f);
    h.take();
    h.reconcile(11, &["t1"]);
    assert!(h.updates(11).is_empty());
    reregister(&mut h, 2, &a, vec![reported(&f, &t1, TaskState::Finished)]);
    assert!(
        h.updates(11).is_empty(),
        "the agent's own end update is the answer, not the master's"
    );
    assert_eq!(h.m.agent(&a).unwrap().used, Resources::ZERO);

    let mut end = update(&f, "t1", &a, TaskState::Finished, "u1");
    end.stdout_tail = "pi is 3.14159\n".into();
    h.status(2, end);
    let forwarded = h.updates(11);
    assert!(
        forwarded.iter().any(|s| s.task_id.0 == "t1"
            && s.state == TaskState::Finished
            && s.stdout_tail == "pi is 3.14159\n"),
        "{forwarded:?}"
    );
    h.ack(11, &a, "t1", "u1");
    assert!(h
        .sent(2)
        .iter()
        .any(|m| matches!(m, Message::StatusUpdateAck { task_id, .. } if task_id.0 == "t1")));
    assert!(
        h.m.task(&f, &TaskId("t1".into())).is_none(),
        "off the books"
    );
}

/// The agent's end of a task adopted ended replaces the master's own status in the registry
/// too: a second restart before the framework acknowledges it answers a reconciliation with
/// the agent's end and its output's tail.
#[test]
fn the_agents_end_of_an_adopted_task_survives_another_restart() {
    let (mut h, a, f, o, m) = one_agent_one_offer();
    let t1 = task("t1", &a, res(1.0, GIB), m);
    accept_then_die_before_the_commit(&mut h, 10, &o, vec![t1.clone()]);
    resubscribe(&mut h, 11, &f);
    reregister(&mut h, 2, &a, vec![reported(&f, &t1, TaskState::Finished)]);
    let mut end = update(&f, "t1", &a, TaskState::Finished, "u1");
    end.stdout_tail = "pi is 3.14159\n".into();
    h.status(2, end);
    assert!(h.updates(11).iter().any(|s| s.task_id.0 == "t1"));

    h.restart();
    resubscribe(&mut h, 11, &f);
    h.take();
    h.reconcile(11, &["t1"]);
    let answers = h.updates(11);
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0].state, TaskState::Finished);
    assert_eq!(answers[0].stdout_tail, "pi is 3.14159\n", "{answers:?}");
}

/// A reconciliation held for an agent that never comes back is answered when the agent is
/// removed at its re-registration timeout.
#[test]
fn a_held_reconciliation_is_answered_when_the_unheard_agent_is_removed() {
    let (mut h, a, f, o, m) = one_agent_one_offer();
    accept_then_die_before_the_commit(&mut h, 10, &o, vec![task("t1", &a, res(1.0, GIB), m)]);
    resubscribe(&mut h, 11, &f);
    h.take();
    h.reconcile(11, &["t1"]);
    assert!(h.updates(11).is_empty());
    h.advance(h.cfg.agent_reregister_timeout + Duration::from_secs(1));
    let answers = h.updates(11);
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0].state, TaskState::Lost);
}

/// Held reconciliations have a room per framework: a framework asking about more unknown tasks
/// than one full reconcile while agents are unheard gets one error for its call, and another
/// framework's questions are still held and answered.
#[test]
fn one_framework_cannot_fill_the_room_for_held_reconciliations() {
    use crate::core::scheduler::MAX_DEFERRED_RECONCILES_PER_FRAMEWORK as ROOM;
    let (mut h, a, f, o, m) = one_agent_one_offer();
    accept_then_die_before_the_commit(&mut h, 10, &o, vec![task("t1", &a, res(1.0, GIB), m)]);
    resubscribe(&mut h, 11, &f);
    let g = h.subscribe(12, "f2");
    h.take();
    let ids: Vec<String> = (0..ROOM).map(|i| format!("u{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    h.reconcile(11, &refs);
    assert!(h.sent(11).is_empty(), "held, not refused");
    h.reconcile(11, &["one-more", "and-another"]);
    let refused = errors(&h.sent(11));
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].contains("2 unknown task(s)") && refused[0].contains("this framework's"),
        "{}",
        refused[0]
    );
    h.reconcile(12, &["x"]);
    assert!(
        h.sent(12).is_empty(),
        "the other framework's question is held"
    );
    h.advance(h.cfg.agent_reregister_timeout + Duration::from_secs(1));
    let answers = h.updates(12);
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(
        (answers[0].task_id.0.as_str(), answers[0].state),
        ("x", TaskState::Lost)
    );
    let lost = h
        .updates(11)
        .iter()
        .filter(|s| s.task_id.0.starts_with('u') && s.state == TaskState::Lost)
        .count();
    assert_eq!(lost, ROOM);
    assert!(h.m.framework(&g).is_some());
}
