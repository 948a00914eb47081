//! Partition-aware task states: an agent's tasks are TASK_UNREACHABLE (still charged) while its
//! link is down, return to their real states when it re-registers in time, and are TASK_GONE
//! once the re-registration timeout has passed. Reconcile is checked at every point.

use super::*;

/// What an explicit reconcile of `tid` and an implicit one answer, as states.
fn reconcile(h: &mut H, tid: &str) -> (TaskState, Vec<(String, TaskState)>) {
    h.take();
    h.msg(
        10,
        Message::Reconcile {
            task_ids: vec![TaskId(tid.into())],
        },
    );
    let explicit = h.updates(10);
    assert_eq!(explicit.len(), 1);
    assert_eq!(explicit[0].uuid, None);
    h.msg(10, Message::Reconcile { task_ids: vec![] });
    let implicit = h
        .updates(10)
        .into_iter()
        .map(|s| {
            assert_eq!(s.uuid, None);
            (s.task_id.0, s.state)
        })
        .collect();
    (explicit[0].state, implicit)
}

/// One agent (conn 1) running task `t1` (<1 cpu, 1 GiB>), its RUNNING update acknowledged.
fn running_task() -> (H, AgentId, FrameworkId, TaskInfo) {
    let (mut h, a, f, o, m) = one_agent_one_offer();
    h.accept(10, &[&o], vec![task("t1", &a, res(1.0, GIB), m)]);
    h.status(1, update(&f, "t1", &a, TaskState::Running, "u1"));
    h.take();
    let info = h.m.task(&f, &TaskId("t1".into())).unwrap().info.clone();
    (h, a, f, info)
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

#[test]
fn disconnect_makes_tasks_unreachable_and_keeps_them_charged() {
    let (mut h, a, f, _) = running_task();
    assert_eq!(reconcile(&mut h, "t1").0, TaskState::Running);
    let used = h.m.agent(&a).unwrap().used;
    h.disconnect(1);
    let ups = h.updates(10);
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].state, TaskState::Unreachable);
    assert_eq!(ups[0].reason, Some(Reason::AgentUnreachable));
    assert_eq!(
        ups[0].uuid, None,
        "master-generated: nothing to acknowledge"
    );
    assert!(!ups[0].state.is_terminal());
    assert_eq!(h.m.agent(&a).unwrap().used, used, "still charged");
    assert_eq!(
        reconcile(&mut h, "t1"),
        (
            TaskState::Unreachable,
            vec![("t1".into(), TaskState::Unreachable)]
        )
    );
    // Minutes later: still unreachable, never offered, still charged.
    h.msg(10, Message::Revive);
    h.advance(Duration::from_secs(300));
    assert!(h.offers(10).is_empty());
    assert!(h.updates(10).is_empty());
    assert_eq!(h.m.agent(&a).unwrap().used, used);
    assert_eq!(reconcile(&mut h, "t1").0, TaskState::Unreachable);
    let _ = f;
}

#[test]
fn return_within_timeout_restores_the_reported_state_then_queued_updates_follow() {
    let (mut h, a, f, info) = running_task();
    h.disconnect(1);
    h.advance(Duration::from_secs(180));
    h.take();
    let sent = reregister(&mut h, 2, &a, vec![reported(&f, &info, TaskState::Running)]);
    assert_eq!(
        sent,
        [Message::Registered {
            agent_id: a.clone()
        }]
    );
    let ups = h.updates(10);
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].state, TaskState::Running);
    assert_eq!(ups[0].uuid, None);
    assert_eq!(
        reconcile(&mut h, "t1"),
        (TaskState::Running, vec![("t1".into(), TaskState::Running)])
    );
    // The agent's update queued during the partition follows and is relayed with its uuid.
    h.status(2, update(&f, "t1", &a, TaskState::Finished, "u2"));
    let ups = h.updates(10);
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].state, TaskState::Finished);
    assert!(ups[0].uuid.is_some());
    assert_eq!(reconcile(&mut h, "t1").0, TaskState::Finished);
    assert_eq!(h.m.agent(&a).unwrap().used, Resources::ZERO);
    // The removal clock was stopped: nothing happens at the old deadline.
    h.advance(Duration::from_secs(600));
    assert!(h.m.agent(&a).is_some());
    assert!(h.updates(10).is_empty());
}

#[test]
fn a_task_that_ended_during_the_partition_returns_to_its_old_state_first() {
    // The agent reports FINISHED (its queued terminal update not yet acknowledged): the
    // framework sees RUNNING again, then the FINISHED update itself, in order.
    let (mut h, a, f, info) = running_task();
    h.disconnect(1);
    h.take();
    reregister(
        &mut h,
        2,
        &a,
        vec![reported(&f, &info, TaskState::Finished)],
    );
    let ups = h.updates(10);
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].state, TaskState::Running);
    assert_eq!(reconcile(&mut h, "t1").0, TaskState::Running);
    assert_eq!(
        h.m.agent(&a).unwrap().used,
        res(1.0, GIB),
        "charged until it ends"
    );
    h.status(2, update(&f, "t1", &a, TaskState::Finished, "u2"));
    assert_eq!(h.updates(10)[0].state, TaskState::Finished);
    assert_eq!(h.m.agent(&a).unwrap().used, Resources::ZERO);
    // Acknowledged: the ack reaches the agent and the task leaves the live table.
    h.ack(10, &a, "t1", "u2");
    assert!(matches!(h.sent(2)[..], [Message::StatusUpdateAck { .. }]));
    assert!(h.m.task(&f, &TaskId("t1".into())).is_none());
    assert_eq!(reconcile(&mut h, "t1").0, TaskState::Finished);
}

#[test]
fn past_the_timeout_tasks_are_gone_freed_and_the_agent_is_shut_down_on_return() {
    let (mut h, a, f, info) = running_task();
    h.disconnect(1);
    h.take();
    h.advance(Duration::from_secs(599));
    assert_eq!(reconcile(&mut h, "t1").0, TaskState::Unreachable);
    h.advance(Duration::from_secs(1));
    let ups = h.updates(10);
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].state, TaskState::Gone);
    assert!(ups[0].state.is_terminal());
    assert_eq!(ups[0].reason, Some(Reason::AgentLost));
    assert_eq!(ups[0].uuid, None);
    assert!(h.m.agent(&a).is_none(), "removed: its resources are freed");
    assert_eq!(
        reconcile(&mut h, "t1"),
        (TaskState::Gone, vec![]),
        "explicit from the completed list; implicit lists live tasks only"
    );
    let sent = reregister(&mut h, 2, &a, vec![reported(&f, &info, TaskState::Running)]);
    assert!(matches!(sent[..], [Message::Shutdown { .. }]));
    assert_eq!(h.closes().len(), 1);
    assert!(h.updates(10).is_empty(), "GONE stays GONE");
}

#[test]
fn a_configured_timeout_is_honoured() {
    let mut h = H::with(MasterConfig {
        run_id: "r".into(),
        agent_reregister_timeout: Duration::from_secs(30),
        ..MasterConfig::default()
    });
    let a = h.register(1, res(4.0, 4 * GIB));
    let f = h.subscribe(10, "f1");
    let o = h.offers(10).remove(0);
    let m = h.upload_module(b"\0asm module");
    h.accept(10, &[&o], vec![task("t1", &a, res(1.0, GIB), m)]);
    h.take();
    h.disconnect(1);
    assert_eq!(h.updates(10)[0].state, TaskState::Unreachable);
    h.advance(Duration::from_secs(30));
    assert_eq!(h.updates(10)[0].state, TaskState::Gone);
    assert!(h.m.task(&f, &TaskId("t1".into())).is_none());
}

#[test]
fn unreported_tasks_follow_the_old_rules_staging_resent_running_lost() {
    let (mut h, a, f, o, m) = one_agent_one_offer();
    h.accept(
        10,
        &[&o],
        vec![
            task("run", &a, res(1.0, GIB), m),
            task("stage", &a, res(1.0, GIB), m),
        ],
    );
    h.status(1, update(&f, "run", &a, TaskState::Running, "u1"));
    h.disconnect(1);
    h.take();
    let sent = reregister(&mut h, 2, &a, vec![]);
    assert_eq!(run_tasks(&sent), [TaskId("stage".into())]);
    let ups: Vec<(String, TaskState)> = h
        .updates(10)
        .into_iter()
        .map(|s| (s.task_id.0, s.state))
        .collect();
    assert_eq!(
        ups,
        [
            ("stage".into(), TaskState::Staging),
            ("run".into(), TaskState::Lost)
        ]
    );
    assert_eq!(reconcile(&mut h, "stage").0, TaskState::Staging);
    assert_eq!(reconcile(&mut h, "run").0, TaskState::Lost);
}

#[test]
fn a_kill_during_the_partition_is_sent_when_the_agent_returns() {
    let (mut h, a, f, info) = running_task();
    h.disconnect(1);
    h.msg(
        10,
        Message::Kill {
            task_id: TaskId("t1".into()),
        },
    );
    h.take();
    let sent = reregister(&mut h, 2, &a, vec![reported(&f, &info, TaskState::Running)]);
    assert_eq!(kill_tasks(&sent), [TaskId("t1".into())]);
    assert_eq!(h.updates(10)[0].state, TaskState::Running);
    h.status(2, update(&f, "t1", &a, TaskState::Killed, "u2"));
    assert_eq!(reconcile(&mut h, "t1").0, TaskState::Killed);
}

#[test]
fn repeated_partitions_each_go_unreachable_and_back() {
    let (mut h, a, f, info) = running_task();
    for conn in 2..5 {
        h.disconnect(conn - 1);
        assert_eq!(h.updates(10)[0].state, TaskState::Unreachable);
        // A second disconnect event for the same link changes nothing.
        h.disconnect(conn - 1);
        assert!(h.updates(10).is_empty());
        h.advance(Duration::from_secs(500));
        reregister(
            &mut h,
            conn,
            &a,
            vec![reported(&f, &info, TaskState::Running)],
        );
        assert_eq!(h.updates(10)[0].state, TaskState::Running);
        assert_eq!(reconcile(&mut h, "t1").0, TaskState::Running);
    }
    // 1500 s of partitions in all, none longer than the timeout: the task survived.
    assert!(h.m.agent(&a).is_some());
}

#[test]
fn an_agent_registering_afresh_under_the_same_name_ends_its_old_tasks_at_once() {
    let (mut h, a, _f, _) = running_task();
    h.disconnect(1);
    h.take();
    // The same agent certificate registers without an id: it restarted and lost its tasks.
    h.connect(2, AGENT);
    h.msg(2, register_msg(None, res(4.0, 4 * GIB), vec![]));
    let ups = h.updates(10);
    assert_eq!(ups.len(), 1, "{ups:?}");
    assert_eq!(ups[0].state, TaskState::Gone);
    assert_eq!(ups[0].reason, Some(Reason::AgentRestarted));
    assert!(h.m.agent(&a).is_none());
    assert_eq!(reconcile(&mut h, "t1").0, TaskState::Gone);
    // Another agent's certificate does not end them.
    let (mut h, a, _f, _) = running_task();
    h.disconnect(1);
    h.take();
    h.connect_as(2, AGENT, principal_for(AGENT, "other-agent"));
    h.msg(2, register_msg(None, res(4.0, 4 * GIB), vec![]));
    assert!(h.updates(10).is_empty());
    assert!(h.m.agent(&a).is_some());
}

/// The states the framework on `conn` was sent for `tid`, with whether each carries a uuid.
fn seen(h: &mut H, conn: ConnId, tid: &str) -> Vec<(TaskState, bool)> {
    h.updates(conn)
        .into_iter()
        .filter(|s| s.task_id.0 == tid)
        .map(|s| (s.state, s.uuid.is_some()))
        .collect()
}

#[test]
fn after_a_partition_the_agents_resent_running_is_not_a_second_running() {
    // RUNNING "u1" was never acknowledged before the link dropped: the agent resends it.
    let (mut h, a, f, info) = running_task();
    let mut all = Vec::new();
    h.disconnect(1);
    all.extend(seen(&mut h, 10, "t1"));
    reregister(&mut h, 2, &a, vec![reported(&f, &info, TaskState::Running)]);
    all.extend(seen(&mut h, 10, "t1"));
    assert_eq!(reconcile(&mut h, "t1").0, TaskState::Running);
    h.status(2, update(&f, "t1", &a, TaskState::Running, "u1"));
    all.extend(seen(&mut h, 10, "t1"));
    // The master acknowledged the repeat itself.
    assert!(
        matches!(&h.sent(2)[..], [Message::StatusUpdateAck { uuid, .. }] if uuid.0 == "u1"),
        "the agent's repeat is acknowledged by the master"
    );
    assert_eq!(reconcile(&mut h, "t1").0, TaskState::Running);
    h.status(2, update(&f, "t1", &a, TaskState::Finished, "u2"));
    all.extend(seen(&mut h, 10, "t1"));
    assert_eq!(reconcile(&mut h, "t1").0, TaskState::Finished);
    assert_eq!(
        all,
        [
            (TaskState::Unreachable, false),
            (TaskState::Running, false),
            (TaskState::Finished, true),
        ],
        "exactly what the framework sees"
    );
}

#[test]
fn a_restore_notice_the_framework_missed_does_not_swallow_the_agents_update() {
    // The framework is away when the agent returns: no notice reaches it, so the agent's
    // resent RUNNING is forwarded when it comes.
    let (mut h, a, f, info) = running_task();
    h.disconnect(1);
    h.disconnect(10);
    reregister(&mut h, 2, &a, vec![reported(&f, &info, TaskState::Running)]);
    h.connect(11, SCHED);
    h.msg(11, subscribe_msg("f1", Some(f.clone())));
    h.take();
    h.status(2, update(&f, "t1", &a, TaskState::Running, "u1"));
    assert_eq!(seen(&mut h, 11, "t1"), [(TaskState::Running, true)]);
}
