//! Kills through the operator surface (`Master::operator_kill`): who may, which task an id
//! names, and the task times the report gives.

use super::*;
use crate::acl::Caller;
use crate::core::OperatorError;
use proto::identity::PeerKind;

fn caller(kind: PeerKind, name: &str) -> Caller {
    Caller::Peer(PeerId::new(kind, name).unwrap())
}

#[test]
fn owners_and_operators_kill_other_tenants_are_refused() {
    let (mut h, a, f, o, m) = one_agent_one_offer();
    h.accept(10, &[&o], vec![task("t1", &a, res(1.0, GIB), m)]);
    h.take();
    h.status(1, update(&f, "t1", &a, TaskState::Running, "u1"));
    h.take();
    let t1 = TaskId("t1".into());

    let other = caller(PeerKind::Framework, "other");
    match h.m.operator_kill(&other, None, &t1) {
        Err(OperatorError::NotAllowed { principal, .. }) => assert_eq!(principal, "default"),
        r => panic!("expected NotAllowed, got {r:?}"),
    }
    h.drain();
    assert!(
        kill_tasks(&h.sent(1)).is_empty(),
        "nothing sent for a refused kill"
    );
    let agent = caller(PeerKind::Agent, "default");
    assert!(h.m.operator_kill(&agent, Some(&f), &t1).is_err());
    assert_eq!(
        h.m.operator_kill(
            &caller(PeerKind::Framework, "default"),
            None,
            &TaskId("nope".into())
        ),
        Err(OperatorError::UnknownTask(TaskId("nope".into())))
    );

    let owner = caller(PeerKind::Framework, "default");
    assert_eq!(h.m.operator_kill(&owner, None, &t1), Ok(f.clone()));
    h.drain();
    assert_eq!(kill_tasks(&h.sent(1)), vec![t1.clone()]);
    // Asked again while under way: fine, nothing more sent.
    assert_eq!(h.m.operator_kill(&owner, Some(&f), &t1), Ok(f.clone()));
    h.drain();
    assert!(kill_tasks(&h.sent(1)).is_empty());

    h.status(1, update(&f, "t1", &a, TaskState::Killed, "u2"));
    h.take();
    match h
        .m
        .operator_kill(&caller(PeerKind::Operator, "ops"), None, &t1)
    {
        Err(OperatorError::Ended { state, .. }) => assert_eq!(state, "TASK_KILLED"),
        r => panic!("expected Ended, got {r:?}"),
    }
}

#[test]
fn an_id_in_several_frameworks_must_be_named_unless_only_one_is_the_callers() {
    let mut h = H::new();
    let a = h.register(1, res(4.0, 4 * GIB));
    let module = h.upload_module(b"\0asm module");
    let f1 = h.subscribe(10, "f1");
    let o1 = h.offers(10).remove(0);
    h.accept(10, &[&o1], vec![task("t", &a, res(1.0, GIB), module)]);
    h.take();
    h.connect_as(
        11,
        SCHED,
        PeerId::new(PeerKind::Framework, "team-b").unwrap(),
    );
    h.msg(11, subscribe_msg("f2", None));
    h.ev(Event::BlobStored {
        digest: module,
        kind: BlobKind::Module,
        owner: Some("team-b".into()),
    });
    h.advance(Duration::from_secs(2));
    // What f1 did not take of the agent goes to f2, which holds nothing.
    let o2 = h.offers(11).remove(0);
    h.accept(11, &[&o2], vec![task("t", &a, res(1.0, GIB), module)]);
    h.take();
    let t = TaskId("t".into());
    let ops = caller(PeerKind::Operator, "ops");
    assert!(matches!(
        h.m.operator_kill(&ops, None, &t),
        Err(OperatorError::Ambiguous { ref frameworks, .. }) if frameworks.len() == 2
    ));
    assert!(kill_tasks(&h.sent(1)).is_empty());
    // team-b sees one task `t`, its own: that is the one it names.
    let tenant_b = caller(PeerKind::Framework, "team-b");
    let fb = h.m.operator_kill(&tenant_b, None, &t).unwrap();
    h.drain();
    assert_ne!(fb, f1);
    assert_eq!(kill_tasks(&h.sent(1)), vec![t.clone()]);
    assert_eq!(h.m.operator_kill(&ops, Some(&f1), &t), Ok(f1));
    h.drain();
    assert_eq!(kill_tasks(&h.sent(1)), vec![t.clone()]);
}

#[test]
fn the_report_gives_launch_start_and_end_times() {
    let (mut h, a, f, o, m) = one_agent_one_offer();
    let wall = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000);
    h.accept(10, &[&o], vec![task("t1", &a, res(1.0, GIB), m)]);
    h.take();
    h.advance(Duration::from_millis(500));
    h.status(1, update(&f, "t1", &a, TaskState::Running, "u1"));
    h.take();
    h.advance(Duration::from_millis(1500));
    h.status(1, update(&f, "t1", &a, TaskState::Finished, "u2"));
    h.take();
    h.advance(Duration::from_millis(1000));
    let r = h.m.report(wall);
    let t = r.tasks.iter().find(|t| t.id == "t1").unwrap();
    let now = 1_000_000_000;
    assert_eq!(t.ended_at_ms, Some(now - 1000));
    assert_eq!(t.started_at_ms, Some(now - 2500));
    assert_eq!(t.launched_at_ms, Some(now - 3000));
    assert!(r.agents[0].last_seen_ms.is_some_and(|s| s <= now - 1000));
    assert_eq!(
        r.roles.iter().find(|x| x.name == "*").unwrap().fair_share,
        1.0
    );
    assert_eq!(r.frameworks[0].fair_share, 1.0);
}
