//! Executors in the books (charged once per agent, freed when they end) and the relay of
//! framework messages, with its ownership checks; data sets checked at accept.

use super::*;
use proto::{ExecutorId, ExecutorInfo, RunningExecutor, MAX_FRAMEWORK_MESSAGE, MAX_TASK_DATA};

fn exec_info(id: &str, module: Digest, r: Resources) -> ExecutorInfo {
    ExecutorInfo {
        executor_id: ExecutorId(id.into()),
        name: id.into(),
        module,
        resources: r,
        args: vec![],
        env: vec![],
        idle_timeout_ms: None,
        kill_grace_ms: None,
    }
}

fn exec_task(id: &str, agent: &AgentId, r: Resources, e: &ExecutorInfo) -> TaskInfo {
    let mut t = task(id, agent, r, e.module);
    t.executor = Some(e.clone());
    t
}

fn used(h: &H, a: &AgentId) -> Resources {
    h.m.agent(a).unwrap().used
}

#[test]
fn an_executor_is_charged_once_per_agent_on_top_of_its_tasks() {
    let (mut h, a, f, o, m) = one_agent_one_offer();
    let e = exec_info("kv", m, res(0.5, 256 * MIB));
    h.accept(
        10,
        &[&o],
        vec![
            exec_task("t1", &a, res(1.0, GIB), &e),
            exec_task("t2", &a, res(1.0, GIB), &e),
        ],
    );
    let runs = run_tasks(&h.sent(1));
    assert_eq!(runs.len(), 2);
    assert_eq!(used(&h, &a), res(2.5, 2 * GIB + 256 * MIB));
    assert_eq!(h.m.executors().count(), 1);
    // The rest is offered again; a later task in the same executor is charged alone.
    h.advance(Duration::from_secs(6));
    let o2 = h.offers(10).pop().expect("the rest is offered");
    assert_eq!(o2.resources, res(1.5, GIB + 768 * MIB));
    h.accept(10, &[&o2], vec![exec_task("t3", &a, res(1.0, GIB), &e)]);
    assert_eq!(run_tasks(&h.sent(1)).len(), 1);
    assert_eq!(used(&h, &a), res(3.5, 3 * GIB + 256 * MIB));
    // Tasks ending leave the executor's own share charged until the executor exits.
    for (t, u) in [("t1", "u1"), ("t2", "u2"), ("t3", "u3")] {
        h.status(1, update(&f, t, &a, TaskState::Finished, u));
    }
    assert_eq!(used(&h, &a), res(0.5, 256 * MIB));
    h.take();
    h.msg(
        1,
        Message::ExecutorExited {
            framework_id: f.clone(),
            agent_id: AgentId("forged".into()),
            executor_id: e.executor_id.clone(),
            failed: false,
            message: "idle".into(),
        },
    );
    assert_eq!(used(&h, &a), Resources::ZERO);
    let told = h.sent(10);
    assert!(
        told.iter().any(|m| matches!(m,
            Message::ExecutorExited { agent_id, failed: false, .. } if *agent_id == a)),
        "{told:?}"
    );
}

#[test]
fn the_offers_must_hold_a_new_executor_as_well_as_its_task() {
    let (mut h, a, _f, o, m) = one_agent_one_offer();
    let e = exec_info("kv", m, res(1.0, GIB));
    h.accept(10, &[&o], vec![exec_task("t1", &a, res(3.5, GIB), &e)]);
    let ups = h.updates(10);
    assert_eq!(ups[0].state, TaskState::Error);
    assert!(
        ups[0].message.contains("new executor"),
        "{}",
        ups[0].message
    );
    assert_eq!(h.m.executors().count(), 0);
    assert_eq!(used(&h, &a), Resources::ZERO);
}

#[test]
fn a_task_must_agree_with_its_running_executor() {
    let (mut h, a, _f, o, m) = one_agent_one_offer();
    let other = h.upload_module(b"\0asm other");
    let e = exec_info("kv", m, res(0.5, 256 * MIB));
    let mut bigger = e.clone();
    bigger.resources = res(1.0, 256 * MIB);
    let mut elsewhere = exec_task("t3", &a, res(0.5, MIB), &e);
    elsewhere.module = other;
    h.accept(
        10,
        &[&o],
        vec![
            exec_task("t1", &a, res(0.5, MIB), &e),
            exec_task("t2", &a, res(0.5, MIB), &bigger),
            elsewhere,
        ],
    );
    let ups = h.updates(10);
    assert_eq!(ups.len(), 2, "{ups:?}");
    assert!(
        ups[0].message.contains("already runs"),
        "{}",
        ups[0].message
    );
    assert!(
        ups[1].message.contains("its executor kv runs"),
        "{}",
        ups[1].message
    );
    assert!(ups.iter().all(|u| u.reason == Some(Reason::TaskInvalid)));
}

#[test]
fn messages_go_only_between_a_framework_and_its_own_executors() {
    let (mut h, a, f, o, m) = one_agent_one_offer();
    let e = exec_info("kv", m, res(0.5, 256 * MIB));
    h.accept(10, &[&o], vec![exec_task("t1", &a, res(1.0, GIB), &e)]);
    h.take();
    let to = |eid: &str, data: Vec<u8>| Message::FrameworkMessage {
        agent_id: a.clone(),
        executor_id: ExecutorId(eid.into()),
        data,
    };
    h.msg(10, to("kv", b"hi".to_vec()));
    let at_agent = h.sent(1);
    assert_eq!(
        at_agent,
        [Message::ExecutorMessage {
            framework_id: f.clone(),
            executor_id: e.executor_id.clone(),
            data: b"hi".to_vec()
        }]
    );
    h.msg(10, to("nope", b"hi".to_vec()));
    h.msg(10, to("kv", vec![0; MAX_FRAMEWORK_MESSAGE + 1]));
    let errs = errors(&h.sent(10));
    assert!(errs[0].contains("no executor nope"), "{errs:?}");
    assert!(errs[1].contains("at most"), "{errs:?}");
    assert!(h.sent(1).is_empty());

    // Another framework cannot reach it, nor stop it.
    h.connect_as(20, SCHED, principal_for(SCHED, "other"));
    h.msg(20, subscribe_msg("f2", None));
    h.take();
    h.msg(20, to("kv", b"x".to_vec()));
    h.msg(
        20,
        Message::ShutdownExecutor {
            agent_id: a.clone(),
            executor_id: e.executor_id.clone(),
        },
    );
    assert_eq!(errors(&h.sent(20)).len(), 2);
    assert!(h.sent(1).is_empty());

    // The executor's answer reaches its scheduler with the agent's real id.
    h.msg(
        1,
        Message::ExecutorMessage {
            framework_id: f.clone(),
            executor_id: e.executor_id.clone(),
            data: b"echo".to_vec(),
        },
    );
    assert_eq!(
        h.sent(10),
        [Message::FrameworkMessage {
            agent_id: a.clone(),
            executor_id: e.executor_id.clone(),
            data: b"echo".to_vec()
        }]
    );
    // An agent cannot speak for an executor the master did not place there.
    h.msg(
        1,
        Message::ExecutorMessage {
            framework_id: f.clone(),
            executor_id: ExecutorId("ghost".into()),
            data: b"spoof".to_vec(),
        },
    );
    assert!(h.sent(10).is_empty());

    // Shutdown goes to the agent as a kill of the executor.
    h.msg(
        10,
        Message::ShutdownExecutor {
            agent_id: a.clone(),
            executor_id: e.executor_id.clone(),
        },
    );
    assert_eq!(
        h.sent(1),
        [Message::KillExecutor {
            framework_id: f,
            executor_id: e.executor_id
        }]
    );
}

#[test]
fn teardown_stops_the_frameworks_executors_and_frees_them_when_they_end() {
    let (mut h, a, f, o, m) = one_agent_one_offer();
    let e = exec_info("kv", m, res(0.5, 256 * MIB));
    h.accept(10, &[&o], vec![exec_task("t1", &a, res(1.0, GIB), &e)]);
    h.take();
    h.msg(10, Message::Teardown);
    let at_agent = h.sent(1);
    assert_eq!(kill_tasks(&at_agent).len(), 1);
    assert!(at_agent
        .iter()
        .any(|m| matches!(m, Message::KillExecutor { .. })));
    // Held until the agent reports the executor (and the task) ended.
    assert_eq!(used(&h, &a), res(1.5, GIB + 256 * MIB));
    h.status(1, update(&f, "t1", &a, TaskState::Killed, "u1"));
    h.msg(
        1,
        Message::ExecutorExited {
            framework_id: f,
            agent_id: a.clone(),
            executor_id: e.executor_id,
            failed: false,
            message: "shut down".into(),
        },
    );
    assert_eq!(h.m.executors().count(), 0);
    assert_eq!(used(&h, &a), Resources::ZERO);
}

#[test]
fn re_registration_reconciles_executors() {
    let (mut h, a, f, o, m) = one_agent_one_offer();
    let e = exec_info("kv", m, res(0.5, 256 * MIB));
    h.accept(10, &[&o], vec![exec_task("t1", &a, res(1.0, GIB), &e)]);
    h.status(1, update(&f, "t1", &a, TaskState::Finished, "u1"));
    h.take();
    // The agent comes back without the executor (it ended while the link was down): freed,
    // and the framework told; with an executor the master does not know, of a live
    // framework: adopted and charged.
    h.disconnect(1);
    h.connect(2, AGENT);
    let adopted = exec_info("cache", m, res(0.25, 128 * MIB));
    let Message::Register { agent_id, info, .. } =
        register_msg(Some(a.clone()), res(4.0, 4 * GIB), vec![])
    else {
        unreachable!()
    };
    h.msg(
        2,
        Message::Register {
            agent_id,
            info,
            running: vec![],
            executors: vec![RunningExecutor {
                framework_id: f.clone(),
                info: adopted.clone(),
            }],
        },
    );
    let told = h.sent(10);
    assert!(
        told.iter().any(|m| matches!(m,
            Message::ExecutorExited { executor_id, failed: true, .. } if *executor_id == e.executor_id)),
        "{told:?}"
    );
    let keys: Vec<ExecutorId> = h.m.executors().map(|(k, _)| k.2.clone()).collect();
    assert_eq!(keys, [adopted.executor_id]);
    assert_eq!(used(&h, &a), res(0.25, 128 * MIB));
}

#[test]
fn a_removed_agents_executors_are_freed_and_reported() {
    let (mut h, a, _f, o, m) = one_agent_one_offer();
    let e = exec_info("kv", m, res(0.5, 256 * MIB));
    h.accept(10, &[&o], vec![exec_task("t1", &a, res(1.0, GIB), &e)]);
    h.take();
    h.disconnect(1);
    h.advance(Duration::from_secs(3600));
    let told = h.sent(10);
    assert!(told
        .iter()
        .any(|m| matches!(m, Message::ExecutorExited { failed: true, .. })));
    assert_eq!(h.m.executors().count(), 0);
}

#[test]
fn data_sets_and_task_data_are_checked_at_accept() {
    let mut h = H::new();
    h.connect(1, AGENT);
    let Message::Register {
        mut info, running, ..
    } = register_msg(None, res(4.0, 4 * GIB), vec![])
    else {
        unreachable!()
    };
    info.datasets = vec!["genome".into()];
    h.msg(
        1,
        Message::Register {
            agent_id: None,
            info,
            running,
            executors: vec![],
        },
    );
    let Some(Message::Registered { agent_id: a }) = h.take_first(1) else {
        panic!("not registered")
    };
    h.subscribe(10, "f1");
    let o = h.offers(10).pop().unwrap();
    assert_eq!(o.datasets, ["genome"]);
    let m = h.upload_module(b"\0asm module");
    let mut reads = task("reads", &a, res(1.0, GIB), m);
    reads.datasets = vec!["genome".into()];
    let mut lacks = task("lacks", &a, res(1.0, GIB), m);
    lacks.datasets = vec!["census".into()];
    let mut heavy = task("heavy", &a, res(1.0, GIB), m);
    heavy.data = vec![0; MAX_TASK_DATA + 1];
    h.accept(10, &[&o], vec![reads, lacks, heavy]);
    assert_eq!(run_tasks(&h.sent(1)), [TaskId("reads".into())]);
    let ups = h.updates(10);
    assert_eq!(ups.len(), 2);
    assert!(
        ups[0].message.contains("does not hold"),
        "{}",
        ups[0].message
    );
    assert!(
        ups[1].message.contains("bytes of data"),
        "{}",
        ups[1].message
    );
}
