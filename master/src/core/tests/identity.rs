//! Identities come from certificates: frameworks belong to the principal that subscribed them,
//! agent ids to the agent name that registered them, and agents may report only the tasks the
//! master placed on them. Each refusal leaves the rightful owner untouched.

use super::*;

fn framework(name: &str) -> PeerId {
    principal_for(SCHED, name)
}

fn agent(name: &str) -> PeerId {
    principal_for(AGENT, name)
}

#[test]
fn framework_ids_are_unguessable_from_one_another() {
    let mut h = H::new();
    let f1 = h.subscribe(10, "f1");
    let f2 = h.subscribe(11, "f2");
    assert!(f1.as_str().starts_with("r-F1-") && f2.as_str().starts_with("r-F2-"));
    let secret = |f: &FrameworkId| f.as_str().rsplit('-').next().unwrap().to_owned();
    assert_eq!(secret(&f1).len(), 32);
    assert_ne!(secret(&f1), secret(&f2));
    // Another key mints other ids for the same sequence.
    let mut other = H::with(MasterConfig {
        run_id: "r".into(),
        id_key: [7; 32],
        ..MasterConfig::default()
    });
    assert_ne!(other.subscribe(10, "f1"), f1);
}

#[test]
fn another_principal_cannot_subscribe_with_a_frameworks_id() {
    let (mut h, _a, f, offer, _module) = one_agent_one_offer();
    h.connect_as(20, SCHED, framework("mallory"));
    h.msg(20, subscribe_msg("evil", Some(f.clone())));
    let closes = h.closes();
    assert_eq!(closes.len(), 1, "{closes:?}");
    assert_eq!(closes[0].0, 20);
    assert!(
        closes[0].1.contains("belongs to another principal"),
        "{}",
        closes[0].1
    );
    assert!(h
        .sent(20)
        .iter()
        .all(|m| !matches!(m, Message::Subscribed { .. })));
    // The owner keeps its connection, its subscription and its offer.
    let entry = h.m.framework(&f).unwrap();
    assert_eq!(entry.conn, Some(10));
    assert_eq!(entry.principal, framework("default"));
    assert!(h.m.offer(&offer.id).is_some());
}

#[test]
fn the_owning_principal_may_fail_over_to_a_new_connection() {
    let (mut h, _a, f, _offer, _module) = one_agent_one_offer();
    h.connect_as(20, SCHED, framework("default"));
    h.msg(20, subscribe_msg("f1", Some(f.clone())));
    assert!(h
        .sent(20)
        .iter()
        .any(|m| matches!(m, Message::Subscribed { framework_id, .. } if *framework_id == f)));
    assert_eq!(h.m.framework(&f).unwrap().conn, Some(20));
}

#[test]
fn the_certificate_not_the_message_names_a_frameworks_principal() {
    let mut h = H::new();
    h.connect_as(10, SCHED, framework("alice"));
    h.msg(10, subscribe_msg("f1", None)); // says principal "test"
    let f = match h.take_first(10) {
        Some(Message::Subscribed { framework_id, .. }) => framework_id,
        other => panic!("{other:?}"),
    };
    let entry = h.m.framework(&f).unwrap();
    assert_eq!(entry.principal, framework("alice"));
    assert_eq!(entry.info.principal, "alice");
}

#[test]
fn another_agent_cannot_register_with_an_existing_agent_id() {
    let mut h = H::new();
    h.connect_as(1, AGENT, agent("node1"));
    h.msg(1, register_msg(None, res(4.0, 4 * GIB), vec![]));
    let a = match h.take_first(1) {
        Some(Message::Registered { agent_id }) => agent_id,
        other => panic!("{other:?}"),
    };
    h.connect_as(2, AGENT, agent("impostor"));
    h.msg(
        2,
        register_msg(Some(a.clone()), res(64.0, 64 * GIB), vec![]),
    );
    let closes = h.closes();
    assert_eq!(closes.len(), 1, "{closes:?}");
    assert_eq!(closes[0].0, 2);
    assert!(
        closes[0].1.contains("belongs to agent \"node1\""),
        "{}",
        closes[0].1
    );
    // The real agent is still registered on its connection with its own resources.
    let entry = h.m.agent(&a).unwrap();
    assert_eq!(entry.conn, Some(1));
    assert_eq!(entry.total, res(4.0, 4 * GIB));
    // The same name may come back on a new connection (a restart keeping its id).
    h.connect_as(3, AGENT, agent("node1"));
    h.msg(3, register_msg(Some(a.clone()), res(4.0, 4 * GIB), vec![]));
    assert!(h.closes().iter().all(|(c, _)| *c != 3));
    assert_eq!(h.m.agent(&a).unwrap().conn, Some(3));
}

#[test]
fn an_agent_cannot_report_a_task_placed_on_another_agent() {
    let (mut h, a, f, offer, module) = one_agent_one_offer();
    h.accept(10, &[&offer], vec![task("t1", &a, res(1.0, GIB), module)]);
    h.take();
    h.connect_as(2, AGENT, agent("rogue"));
    h.msg(2, register_msg(None, res(1.0, GIB), vec![]));
    h.take();
    h.msg(
        2,
        Message::StatusUpdate {
            status: TaskStatus {
                task_id: TaskId("t1".into()),
                framework_id: f.clone(),
                agent_id: None,
                state: TaskState::Finished,
                reason: None,
                message: "forged".into(),
                stdout_tail: "all good".into(),
                stderr_tail: String::new(),
                uuid: Some(UpdateId("forged".into())),
            },
        },
    );
    let errs = errors(&h.sent(2));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("was not placed on agent"), "{}", errs[0]);
    // Nothing reached the framework and the task is still staging on its real agent.
    assert!(h.sent(10).is_empty());
    let t = h.m.task(&f, &TaskId("t1".into())).unwrap();
    assert_eq!(t.status.state, TaskState::Staging);
}

fn acls() -> crate::acl::Acls {
    use crate::acl::{Acls, Rule};
    Acls {
        register_frameworks: Some(vec![Rule {
            names: vec!["analytics-team".into()],
            roles: vec!["analytics".into()],
        }]),
        reserve_resources: Some(vec![Rule {
            names: vec!["gpu-1".into()],
            roles: vec!["ml".into()],
        }]),
    }
}

#[test]
fn a_role_the_acls_forbid_is_refused_at_subscribe() {
    let mut h = H::with(MasterConfig {
        run_id: "r".into(),
        acls: acls(),
        ..MasterConfig::default()
    });
    let mut msg = subscribe_msg("f", None);
    if let Message::Subscribe { framework } = &mut msg {
        framework.role = "analytics".into();
    }
    h.connect_as(10, SCHED, framework("web-team"));
    h.msg(10, msg.clone());
    let closes = h.closes();
    assert_eq!(closes.len(), 1, "{closes:?}");
    assert!(
        closes[0]
            .1
            .contains("may not register frameworks in role \"analytics\""),
        "{}",
        closes[0].1
    );
    assert_eq!(h.m.frameworks().count(), 0);
    h.connect_as(11, SCHED, framework("analytics-team"));
    h.msg(11, msg);
    assert!(matches!(h.take_first(11), Some(Message::Subscribed { .. })));
}

#[test]
fn a_reservation_the_acls_forbid_is_refused_at_register() {
    let mut h = H::with(MasterConfig {
        run_id: "r".into(),
        acls: acls(),
        ..MasterConfig::default()
    });
    let reserving = |r: Resources| Message::Register {
        executors: Vec::new(),
        agent_id: None,
        info: AgentInfo {
            datasets: Vec::new(),
            reservations: vec![("ml".into(), r)],
            hostname: "host".into(),
            resources: r,
            attributes: vec![],
        },
        running: vec![],
    };
    h.connect_as(1, AGENT, agent("cpu-1"));
    h.msg(1, reserving(res(4.0, 4 * GIB)));
    let closes = h.closes();
    assert_eq!(closes.len(), 1, "{closes:?}");
    assert!(closes[0]
        .1
        .contains("may not reserve resources for role \"ml\""));
    assert_eq!(h.m.agents().count(), 0);
    h.connect_as(2, AGENT, agent("gpu-1"));
    h.msg(2, reserving(res(4.0, 4 * GIB)));
    assert!(matches!(h.take_first(2), Some(Message::Registered { .. })));
}

#[test]
fn only_an_operator_may_tear_down_another_principals_framework() {
    let (mut h, _a, f, _o, _m) = one_agent_one_offer();
    // Another framework principal is refused, whatever it names.
    h.connect_as(20, SCHED, framework("mallory"));
    h.msg(
        20,
        Message::TeardownFramework {
            framework_id: f.clone(),
        },
    );
    let errs = errors(&h.sent(20));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("only an operator certificate"),
        "{}",
        errs[0]
    );
    assert!(h.m.framework(&f).is_some());
    // An operator may.
    h.connect_as(
        30,
        SCHED,
        PeerId::new(proto::identity::PeerKind::Operator, "ops").unwrap(),
    );
    h.msg(
        30,
        Message::TeardownFramework {
            framework_id: f.clone(),
        },
    );
    assert!(h
        .sent(30)
        .iter()
        .any(|m| matches!(m, Message::TornDown { framework_id } if *framework_id == f)));
    assert!(h.m.framework(&f).is_none());
}

#[test]
fn an_operator_sees_every_frameworks_tasks_and_a_framework_only_its_own() {
    let (mut h, a, f, o, m) = one_agent_one_offer();
    h.accept(10, &[&o], vec![task("mine", &a, res(1.0, MIB), m)]);
    h.take();
    // Another principal's framework sees nothing of it.
    h.connect_as(20, SCHED, framework("mallory"));
    h.msg(20, subscribe_msg("m", None));
    h.take();
    h.msg(20, Message::Reconcile { task_ids: vec![] });
    assert!(h.updates(20).is_empty());
    // An operator sees it, with its framework.
    h.connect_as(
        30,
        SCHED,
        PeerId::new(proto::identity::PeerKind::Operator, "ops").unwrap(),
    );
    h.msg(30, Message::Reconcile { task_ids: vec![] });
    let seen = h.updates(30);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        (seen[0].framework_id.clone(), seen[0].task_id.as_str()),
        (f, "mine")
    );
}
