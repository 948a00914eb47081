//! Tenants' limits and tenants' blobs: calls too large are refused whole with one error, each
//! principal holds a bounded number of frameworks, and blobs belong to the principals that
//! uploaded them.

use super::*;
use crate::core::scheduler::{MAX_RECONCILE_IDS, MAX_TASKS_PER_ACCEPT};

#[test]
fn a_reconcile_naming_too_many_ids_is_refused_with_one_error() {
    let (mut h, _a, _f, _o, _m) = one_agent_one_offer();
    let ids = vec![TaskId("t".into()); MAX_RECONCILE_IDS + 1];
    h.msg(10, Message::Reconcile { task_ids: ids });
    let sent = h.sent(10);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(errors(&sent)[0].contains("at most 10000"), "{sent:?}");
}

#[test]
fn a_reconcile_answers_each_named_id_once() {
    let (mut h, _a, _f, _o, _m) = one_agent_one_offer();
    let mut ids = vec![TaskId("ghost".into()); 5_000];
    ids.push(TaskId("other".into()));
    h.msg(10, Message::Reconcile { task_ids: ids });
    let updates = h.updates(10);
    let named: Vec<&str> = updates.iter().map(|s| s.task_id.as_str()).collect();
    assert_eq!(named, ["ghost", "other"]);
}

#[test]
fn an_accept_of_too_many_tasks_is_refused_whole_and_returns_the_offer() {
    let (mut h, a, _f, o, m) = one_agent_one_offer();
    let tasks = (0..=MAX_TASKS_PER_ACCEPT)
        .map(|i| task(&format!("t{i}"), &a, res(0.001, MIB), m))
        .collect();
    h.accept(10, &[&o], tasks);
    let sent = h.sent(10);
    let errs = errors(&sent);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("at most 1000"), "{}", errs[0]);
    assert!(
        !sent.iter().any(|m| matches!(m, Message::Update { .. })),
        "no update per task"
    );
    assert!(h.m.offer(&o.id).is_none());
    assert_eq!(h.m.agent(&a).unwrap().used, Resources::ZERO);
}

#[test]
fn a_principal_holds_a_bounded_number_of_frameworks() {
    let mut h = H::with(MasterConfig {
        run_id: "r".into(),
        max_frameworks_per_principal: 2,
        ..MasterConfig::default()
    });
    h.subscribe(10, "f1");
    h.subscribe(11, "f2");
    h.connect(12, SCHED);
    h.msg(12, subscribe_msg("f3", None));
    let closes = h.closes();
    assert_eq!(closes.len(), 1);
    assert!(
        closes[0].1.contains("already has 2 frameworks"),
        "{}",
        closes[0].1
    );
    // Another principal is not affected.
    h.connect_as(13, SCHED, principal_for(SCHED, "other"));
    h.msg(13, subscribe_msg("g1", None));
    assert!(matches!(h.take_first(13), Some(Message::Subscribed { .. })));
}

#[test]
fn a_task_may_name_only_blobs_its_principal_uploaded() {
    let (mut h, a, _f, o, alices_module) = one_agent_one_offer();
    // Mallory's framework tries to run the module and a file that "default" uploaded.
    h.connect_as(20, SCHED, principal_for(SCHED, "mallory"));
    h.msg(20, subscribe_msg("m", None));
    h.take();
    h.msg(
        10,
        Message::Decline {
            offer_ids: vec![o.id.clone()],
            filters: Filters {
                refuse_seconds: 3600.0,
            },
        },
    );
    h.settle();
    let offers = h.offers(20);
    assert_eq!(offers.len(), 1);
    let t = task("stolen", &a, res(1.0, MIB), alices_module);
    h.accept(20, &[&offers[0]], vec![t]);
    let updates = h.updates(20);
    assert_eq!(updates.len(), 1, "{updates:?}");
    assert_eq!(updates[0].state, TaskState::Error);
    assert_eq!(updates[0].reason, Some(Reason::ModuleInvalid));
    assert!(
        updates[0]
            .message
            .contains("not been uploaded by principal mallory"),
        "{}",
        updates[0].message
    );
    // Once mallory uploads the same bytes herself, her task may name them.
    h.ev(Event::BlobStored {
        digest: alices_module,
        kind: BlobKind::Module,
        owner: Some("mallory".into()),
    });
    h.advance(Duration::from_secs(6)); // past the refuse filter of the failed accept
    let offers = h.offers(20);
    let t = task("own", &a, res(1.0, MIB), alices_module);
    h.accept(20, &[&offers[0]], vec![t]);
    assert!(h.updates(20).iter().all(|s| s.state != TaskState::Error));
}

#[test]
fn fetches_are_allowed_to_uploaders_and_to_agents_running_a_task_that_names_the_blob() {
    let (mut h, a, _f, o, m) = one_agent_one_offer();
    let file = Digest::of(b"input");
    h.ev(Event::BlobStored {
        digest: file,
        kind: BlobKind::File,
        owner: Some("default".into()),
    });
    h.connect_as(20, SCHED, principal_for(SCHED, "mallory"));
    assert!(h.m.may_fetch(10, &m), "the uploader's framework");
    assert!(!h.m.may_fetch(20, &m), "another principal");
    assert!(!h.m.may_fetch(1, &m), "an agent with no task naming it");
    let mut t = task("t1", &a, res(1.0, MIB), m);
    t.files = vec![TaskFile {
        path: "in.txt".into(),
        digest: file,
    }];
    h.accept(10, &[&o], vec![t]);
    assert!(h.m.may_fetch(1, &m) && h.m.may_fetch(1, &file));
    // A second agent, not running it, may not.
    h.register(2, res(1.0, GIB));
    assert!(!h.m.may_fetch(2, &m));
}

#[test]
fn re_admitted_framework_ids_count_against_the_principal_and_failover_is_capped() {
    let mut h = H::with(MasterConfig {
        run_id: "r".into(),
        max_frameworks_per_principal: 1,
        max_failover: Duration::from_secs(60),
        ..MasterConfig::default()
    });
    let f = h.subscribe(10, "f1");
    // An id unknown to this run (a previous run's, or made up) is a framework like any other.
    h.connect(11, SCHED);
    h.msg(
        11,
        subscribe_msg("f2", Some(FrameworkId("old-run-F9-x".into()))),
    );
    let closes = h.closes();
    assert_eq!(closes.len(), 1, "{closes:?}");
    assert!(
        closes[0].1.contains("already has 1 frameworks"),
        "{}",
        closes[0].1
    );
    // A framework asking to be kept for ever after a disconnect is kept for the cap.
    let mut forever = subscribe_msg("f1", Some(f.clone()));
    if let Message::Subscribe { framework } = &mut forever {
        framework.failover_timeout_ms = u64::MAX;
    }
    h.msg(10, forever);
    h.disconnect(10);
    assert!(h.m.framework(&f).is_some());
    h.advance(Duration::from_secs(61));
    assert!(h.m.framework(&f).is_none(), "torn down at the cap");
}

#[test]
fn acknowledgements_and_kills_reach_agents_only_for_the_frameworks_own_tasks_once() {
    let (mut h, a, _f, o, m) = one_agent_one_offer();
    h.accept(10, &[&o], vec![task("t1", &a, res(1.0, MIB), m)]);
    h.take();
    // Another framework acknowledging an update of t1 is refused; the agent hears nothing.
    h.connect_as(20, SCHED, principal_for(SCHED, "mallory"));
    h.msg(20, subscribe_msg("m", None));
    h.take();
    h.ack(20, &a, "t1", "u");
    assert_eq!(errors(&h.sent(20)).len(), 1);
    assert!(h.sent(1).is_empty(), "nothing for the agent");
    // Killing twice sends one KillTask.
    h.msg(
        10,
        Message::Kill {
            task_id: TaskId("t1".into()),
        },
    );
    h.msg(
        10,
        Message::Kill {
            task_id: TaskId("t1".into()),
        },
    );
    let kills = h
        .sent(1)
        .into_iter()
        .filter(|m| matches!(m, Message::KillTask { .. }))
        .count();
    assert_eq!(kills, 1);
}
