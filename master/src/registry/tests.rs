//! Both stores against the same expectations; the redb one on real files (written, closed,
//! reopened).

use super::*;
use proto::identity::PeerKind;
use proto::{Digest, Resources};

fn framework(n: u32) -> FrameworkRecord {
    FrameworkRecord {
        id: FrameworkId(format!("m-F{n}-x")),
        info: FrameworkInfo {
            name: format!("fw{n}"),
            role: "*".into(),
            principal: "p".into(),
            id: Some(FrameworkId(format!("m-F{n}-x"))),
            failover_timeout_ms: 60_000,
            priority: 0,
        },
        principal: PeerId::new(PeerKind::Framework, "p").unwrap(),
    }
}

fn agent(n: u32) -> AgentRecord {
    AgentRecord {
        id: AgentId(format!("m-A{n}")),
        info: AgentInfo {
            hostname: format!("host{n}"),
            resources: Resources::new(4000, 4 << 30, 0),
            reservations: vec![("r".into(), Resources::new(1000, 1 << 30, 0))],
            attributes: vec![("rack".into(), "r1".into())],
            datasets: vec![],
        },
        owner: format!("agent{n}"),
    }
}

fn task(f: u32, t: &str, a: u32) -> TaskRecord {
    TaskRecord {
        framework_id: FrameworkId(format!("m-F{f}-x")),
        info: TaskInfo {
            task_id: TaskId(t.into()),
            name: t.into(),
            agent_id: AgentId(format!("m-A{a}")),
            resources: Resources::new(100, 1 << 20, 0),
            module: Digest::of(b"module"),
            args: vec!["a".into()],
            env: vec![],
            files: vec![],
            timeout_ms: Some(1000),
            max_cpu_ms: None,
            datasets: vec![],
            executor: None,
            data: vec![1, 2, 3],
        },
        kill_requested: false,
        ended: None,
    }
}

/// Writes a history of batches and returns what should be left.
fn write_history(reg: &mut dyn Registry) -> Snapshot {
    reg.apply(&[
        RegistryOp::PutFramework(framework(1)),
        RegistryOp::PutFramework(framework(2)),
        RegistryOp::PutAgent(agent(1)),
    ])
    .unwrap();
    reg.apply(&[
        RegistryOp::PutTask(task(1, "t1", 1)),
        RegistryOp::PutTask(task(1, "t2", 1)),
        RegistryOp::PutTask(task(2, "t1", 1)),
    ])
    .unwrap();
    reg.apply(&[
        RegistryOp::KillRequested {
            framework_id: FrameworkId("m-F1-x".into()),
            task_id: TaskId("t2".into()),
        },
        // A kill of a task not (or no longer) stored is nothing.
        RegistryOp::KillRequested {
            framework_id: FrameworkId("m-F1-x".into()),
            task_id: TaskId("nope".into()),
        },
        RegistryOp::RemoveTask {
            framework_id: FrameworkId("m-F2-x".into()),
            task_id: TaskId("t1".into()),
        },
        RegistryOp::RemoveFramework(FrameworkId("m-F2-x".into())),
        RegistryOp::PutAgent(agent(2)),
        RegistryOp::RemoveAgent(AgentId("m-A2".into())),
    ])
    .unwrap();
    reg.apply(&[]).unwrap();
    let mut killed = task(1, "t2", 1);
    killed.kill_requested = true;
    Snapshot {
        frameworks: vec![framework(1)],
        agents: vec![agent(1)],
        tasks: vec![task(1, "t1", 1), killed],
        removed_agents: vec![AgentId("m-A2".into())],
        removed_frameworks: vec![FrameworkId("m-F2-x".into())],
        blobs: Vec::new(),
    }
}

#[test]
fn memory_store_keeps_what_was_applied() {
    let mut reg = MemRegistry::new();
    assert!(reg.load().unwrap().is_empty());
    let want = write_history(&mut reg);
    assert_eq!(reg.load().unwrap(), want);
    // Clones share the store.
    let other = reg.clone();
    assert_eq!(other.load().unwrap(), want);
    assert_eq!(other.batches(), 4);
}

#[test]
fn redb_store_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut reg = RedbRegistry::open_in(dir.path()).unwrap();
        assert!(reg.load().unwrap().is_empty());
        let want = write_history(&mut reg);
        assert_eq!(reg.load().unwrap(), want);
    }
    assert!(dir.path().join(super::redb::FILE_NAME).is_file());
    let reg = RedbRegistry::open_in(dir.path()).unwrap();
    let mut mem = MemRegistry::new();
    assert_eq!(reg.load().unwrap(), write_history(&mut mem));
}

#[test]
fn a_put_task_does_not_clear_a_requested_kill_in_the_store_but_a_removal_does() {
    let dir = tempfile::tempdir().unwrap();
    let mut reg = RedbRegistry::open_in(dir.path()).unwrap();
    let key = RegistryOp::KillRequested {
        framework_id: FrameworkId("m-F1-x".into()),
        task_id: TaskId("t1".into()),
    };
    reg.apply(&[RegistryOp::PutTask(task(1, "t1", 1)), key.clone()])
        .unwrap();
    assert!(reg.load().unwrap().tasks[0].kill_requested);
    reg.apply(&[RegistryOp::RemoveTask {
        framework_id: FrameworkId("m-F1-x".into()),
        task_id: TaskId("t1".into()),
    }])
    .unwrap();
    // Same task id launched again later: no stale kill.
    reg.apply(&[RegistryOp::PutTask(task(1, "t1", 1))]).unwrap();
    assert!(!reg.load().unwrap().tasks[0].kill_requested);
}

#[test]
fn a_newer_schema_version_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let reg = RedbRegistry::open_in(dir.path()).unwrap();
        reg.set_schema_version_for_tests(SCHEMA_VERSION + 1)
            .unwrap();
    }
    let err = RedbRegistry::open_in(dir.path())
        .err()
        .expect("a newer schema is refused");
    assert!(matches!(
        err,
        RegistryError::NewerSchema { found, supported } if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION
    ));
    assert!(
        err.to_string().contains("newer than this master's"),
        "{err}"
    );
}

#[test]
fn a_file_that_is_not_a_registry_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(super::redb::FILE_NAME),
        b"not a database at all",
    )
    .unwrap();
    let err = RedbRegistry::open_in(dir.path())
        .err()
        .expect("garbage is refused");
    assert!(matches!(err, RegistryError::Store { .. }), "{err}");
}

#[test]
fn a_corrupt_record_is_reported_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(super::redb::FILE_NAME);
    {
        let reg = RedbRegistry::open(&path).unwrap();
        reg.write_raw_for_tests("agents", b"m-A1", b"\xff\xff\xff")
            .unwrap();
    }
    let reg = RedbRegistry::open(&path).unwrap();
    let err = reg.load().unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::Corrupt {
                table: "agents",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn tombstones_are_bounded_oldest_first_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let n = REMOVED_IDS_KEPT + 3;
    let ops: Vec<RegistryOp> = (0..n)
        .flat_map(|i| {
            [
                RegistryOp::RemoveAgent(AgentId(format!("m-A{i}"))),
                RegistryOp::RemoveFramework(FrameworkId(format!("m-F{i}-x"))),
            ]
        })
        .collect();
    let mut mem = MemRegistry::new();
    {
        let mut reg = RedbRegistry::open_in(dir.path()).unwrap();
        // Two batches, so eviction also works across transactions.
        let (first, second) = ops.split_at(ops.len() / 2);
        reg.apply(first).unwrap();
        reg.apply(second).unwrap();
        mem.apply(&ops).unwrap();
    }
    let reg = RedbRegistry::open_in(dir.path()).unwrap();
    let got = reg.load().unwrap();
    assert_eq!(got.removed_agents.len(), REMOVED_IDS_KEPT);
    assert_eq!(got.removed_frameworks.len(), REMOVED_IDS_KEPT);
    // The three oldest were evicted; order is oldest first.
    assert_eq!(got.removed_agents[0], AgentId("m-A3".into()));
    assert_eq!(
        got.removed_agents.last(),
        Some(&AgentId(format!("m-A{}", n - 1)))
    );
    assert_eq!(got.removed_frameworks[0], FrameworkId("m-F3-x".into()));
    assert_eq!(got, mem.load().unwrap(), "both stores agree");
}

#[test]
fn a_version_1_store_is_read_with_no_tombstones_and_stamped_current() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut reg = RedbRegistry::open_in(dir.path()).unwrap();
        reg.apply(&[RegistryOp::PutAgent(agent(1))]).unwrap();
        reg.set_schema_version_for_tests(1).unwrap();
    }
    let mut reg = RedbRegistry::open_in(dir.path()).unwrap();
    let got = reg.load().unwrap();
    assert_eq!(got.agents, vec![agent(1)]);
    assert!(got.removed_agents.is_empty());
    reg.apply(&[RegistryOp::RemoveAgent(AgentId("m-A1".into()))])
        .unwrap();
    drop(reg);
    // Stamped current: reopening is no migration, and the tombstone is there.
    let reg = RedbRegistry::open_in(dir.path()).unwrap();
    assert_eq!(
        reg.load().unwrap().removed_agents,
        vec![AgentId("m-A1".into())]
    );
}

/// A task's end is kept beside it until the task is removed, in both stores and across a
/// reopen; an end for a task the store does not hold is ignored.
#[test]
fn an_ended_task_keeps_its_status_until_removed_in_both_stores() {
    let fid = FrameworkId("m-F1-x".into());
    let status = proto::TaskStatus {
        task_id: TaskId("t1".into()),
        framework_id: fid.clone(),
        agent_id: Some(AgentId("m-A1".into())),
        state: proto::TaskState::Finished,
        reason: Some(proto::Reason::ExitCode(0)),
        message: "done".into(),
        stdout_tail: "out".into(),
        stderr_tail: String::new(),
        uuid: Some(proto::UpdateId("b-1".into())),
    };
    let end = |task: &str| RegistryOp::EndTask {
        framework_id: fid.clone(),
        task_id: TaskId(task.into()),
        status: status.clone(),
    };
    let dir = tempfile::tempdir().unwrap();
    let mut redb = RedbRegistry::open_in(dir.path()).unwrap();
    let mut mem = MemRegistry::new();
    for reg in [&mut redb as &mut dyn Registry, &mut mem] {
        reg.apply(&[
            RegistryOp::PutTask(task(1, "t1", 1)),
            RegistryOp::PutTask(task(1, "t2", 1)),
            end("t1"),
            end("t9"),
        ])
        .unwrap();
        let got = reg.load().unwrap();
        assert_eq!(got.tasks.len(), 2);
        assert_eq!(got.tasks[0].ended.as_ref(), Some(&status));
        assert_eq!(got.tasks[1].ended, None);
    }
    drop(redb);
    let mut redb = RedbRegistry::open_in(dir.path()).unwrap();
    assert_eq!(redb.load().unwrap(), mem.load().unwrap());
    for reg in [&mut redb as &mut dyn Registry, &mut mem] {
        reg.apply(&[RegistryOp::RemoveTask {
            framework_id: fid.clone(),
            task_id: TaskId("t1".into()),
        }])
        .unwrap();
        // Same id launched again later: not ended.
        reg.apply(&[RegistryOp::PutTask(task(1, "t1", 1))]).unwrap();
        assert!(reg.load().unwrap().tasks.iter().all(|t| t.ended.is_none()));
    }
}

/// A version-2 store (no ended statuses) opens as the current version with none.
#[test]
fn a_version_2_store_is_read_with_no_ended_tasks_and_stamped_current() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut reg = RedbRegistry::open_in(dir.path()).unwrap();
        reg.apply(&[RegistryOp::PutTask(task(1, "t1", 1))]).unwrap();
        reg.set_schema_version_for_tests(2).unwrap();
    }
    let reg = RedbRegistry::open_in(dir.path()).unwrap();
    let got = reg.load().unwrap();
    assert_eq!(got.tasks.len(), 1);
    assert_eq!(got.tasks[0].ended, None);
}
