//! Partition-aware task states, end to end: while an agent's link is down its tasks are
//! TASK_UNREACHABLE (and keep running); when it comes back within the master's re-registration
//! timeout they return to their real states and what they did meanwhile is delivered, in order
//! and exactly once; past the timeout they are TASK_GONE and the returning agent kills them.
//!
//! Virtual time (the simulator, seeded, the master's invariants checked after every step) for
//! minutes-long partitions with the default 10-minute timeout; real time (a real cluster, the
//! UDP proxy cutting the agent's link) for a short one with short configured timeouts.

use master::allocator::drf::Drf;
use master::core::MasterConfig;
use proto::resources::GIB;
use proto::{AgentId, AgentInfo, Filters, Reason, Resources, TaskId, TaskState, TaskStatus};
use sdk::{Event, TaskBuilder};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tessera_tests::sim::{Sim, SimOptions};
use tessera_tests::*;

fn res_gib(cpus: u64, gib: u64) -> Resources {
    Resources::new(cpus * 1000, gib * GIB, 0)
}

/// A simulated cluster with the master's default re-registration timeout (10 minutes): two
/// agents of <4 cpus, 4 GiB> and one framework.
fn sim(seed: u64) -> Sim {
    let master = MasterConfig {
        run_id: "sim".into(),
        allocation_interval: Duration::from_millis(200),
        ..MasterConfig::default()
    };
    assert_eq!(master.agent_reregister_timeout, Duration::from_secs(600));
    let opts = SimOptions {
        seed,
        master,
        ..SimOptions::default()
    };
    let mut sim = Sim::with_options(opts, Box::new(Drf::new()));
    for i in 1..=2 {
        sim.add_agent(AgentInfo {
            datasets: Vec::new(),
            reservations: vec![],
            hostname: format!("agent{i}"),
            resources: res_gib(4, 4),
            attributes: vec![],
        });
    }
    sim.add_framework("fw", "*");
    sim
}

/// The master's id for the agent named `hostname`.
fn agent_id(sim: &Sim, hostname: &str) -> AgentId {
    sim.master
        .agents()
        .find(|a| a.hostname == hostname)
        .map(|a| a.id.clone())
        .expect("agent registered")
}

/// Framework 0's tasks placed on `agent`, per the master.
fn tasks_on(sim: &Sim, agent: &AgentId) -> BTreeSet<TaskId> {
    sim.master
        .tasks()
        .filter(|t| t.info.agent_id == *agent)
        .map(|t| t.info.task_id.clone())
        .collect()
}

/// Every update framework 0 was delivered for `task`, in order.
fn seen(sim: &Sim, task: &TaskId) -> Vec<TaskStatus> {
    sim.frameworks[0]
        .updates
        .iter()
        .filter(|s| s.task_id == *task)
        .cloned()
        .collect()
}

/// No update delivered twice (by uuid), no task ending twice or changing after its end.
fn check_exactly_once(sim: &Sim) {
    let f = &sim.frameworks[0];
    assert!(f.errors.is_empty(), "{:?}", f.errors);
    let mut uuids = BTreeSet::new();
    for s in &f.updates {
        if let Some(u) = &s.uuid {
            assert!(uuids.insert((s.task_id.clone(), u.clone())), "twice: {s:?}");
        }
    }
}

#[test]
fn a_three_minute_partition_costs_nothing() {
    for seed in 0..6 {
        let mut sim = sim(seed);
        // Eight tasks fill both agents; those on agent1 run 30 s to 5 min, so some end during
        // the partition and some after it.
        sim.submit(0, 8, (30_000, 300_000), res_gib(1, 1));
        let start = sim.now;
        sim.run_until(start + Duration::from_secs(5));
        let a1 = agent_id(&sim, "agent1");
        let on_a1 = tasks_on(&sim, &a1);
        assert_eq!(on_a1.len(), 4, "seed {seed}");
        assert!(on_a1
            .iter()
            .all(|t| seen(&sim, t).last().map(|s| s.state) == Some(TaskState::Running)));

        sim.isolate(0);
        sim.run_until(start + Duration::from_secs(5 + 180));
        // Unreachable to the master and the framework, still charged, still on the agent.
        for t in &on_a1 {
            let st = &sim
                .master
                .task(sim.frameworks[0].id().unwrap(), t)
                .unwrap()
                .status;
            assert_eq!(st.state, TaskState::Unreachable, "seed {seed} {t}");
            assert_eq!(st.reason, Some(Reason::AgentUnreachable));
            assert_eq!(
                seen(&sim, t).last().map(|s| s.state),
                Some(TaskState::Unreachable)
            );
        }
        assert_eq!(
            sim.master.agent(&a1).unwrap().used,
            res_gib(4, 4),
            "seed {seed}: still charged"
        );
        assert_eq!(
            sim.agent_core(0).task_count(),
            4,
            "seed {seed}: still there"
        );
        let fid = sim.frameworks[0].id().unwrap().clone();
        let ended: Vec<&TaskId> = on_a1
            .iter()
            .filter(|t| {
                sim.agent_core(0)
                    .task_state(&(fid.clone(), (*t).clone()))
                    .is_some_and(|s| s.is_terminal())
            })
            .collect();
        let partition_ends = ended.len();

        sim.recover(0);
        sim.drive_until_done(500_000);
        check_exactly_once(&sim);
        assert_eq!(sim.frameworks[0].finished(), 8, "seed {seed}");
        assert_eq!(agent_id(&sim, "agent1"), a1, "seed {seed}: same agent");
        for t in &on_a1 {
            let states: Vec<TaskState> = seen(&sim, t).iter().map(|s| s.state).collect();
            // RUNNING, UNREACHABLE, RUNNING again (as reported, or as before for a task that
            // ended meanwhile), then the agent's own FINISHED: in order, once each.
            let u = states
                .iter()
                .position(|s| *s == TaskState::Unreachable)
                .unwrap_or_else(|| panic!("seed {seed} {t}: {states:?}"));
            assert_eq!(
                states[u..],
                [
                    TaskState::Unreachable,
                    TaskState::Running,
                    TaskState::Finished
                ],
                "seed {seed} {t}: {states:?}"
            );
            assert_eq!(states.iter().filter(|s| s.is_terminal()).count(), 1);
        }
        // The ends produced during the partition came through too (at least one per seed, as
        // the run times are drawn).
        assert!(partition_ends > 0, "seed {seed}: no task ended meanwhile");
    }
}

#[test]
fn a_partition_past_the_timeout_makes_tasks_gone_and_the_agent_kills_them() {
    for seed in 0..3 {
        let mut sim = sim(seed);
        // Long tasks: they outlive the partition unless killed.
        sim.submit(0, 8, (900_000, 960_000), res_gib(1, 1));
        let start = sim.now;
        sim.run_until(start + Duration::from_secs(5));
        let a1 = agent_id(&sim, "agent1");
        let on_a1 = tasks_on(&sim, &a1);
        assert_eq!(on_a1.len(), 4, "seed {seed}");

        sim.isolate(0);
        // Just before the timeout (noticed after the 2 s idle timeout): still unreachable.
        sim.run_until(start + Duration::from_secs(5 + 2 + 599));
        for t in &on_a1 {
            assert_eq!(
                seen(&sim, t).last().map(|s| s.state),
                Some(TaskState::Unreachable)
            );
        }
        sim.run_until(start + Duration::from_secs(5 + 2 + 601));
        assert!(sim.master.agent(&a1).is_none(), "seed {seed}: removed");
        for t in &on_a1 {
            let last = seen(&sim, t).last().cloned().unwrap();
            assert_eq!(last.state, TaskState::Gone, "seed {seed} {t}");
            assert_eq!(last.reason, Some(Reason::AgentLost));
        }
        assert_eq!(
            sim.agent_core(0).task_count(),
            4,
            "seed {seed}: still running"
        );

        // The agent comes back: told to shut down, it kills its tasks and registers afresh.
        let connects = sim.agent_connects(0);
        sim.recover(0);
        let back = sim.drive_until(100_000, |s| {
            s.agent_connects(0) >= connects + 2 && s.agent_core(0).is_registered()
        });
        assert!(
            back,
            "seed {seed}: {} connects, trace {:?}",
            sim.agent_connects(0) - connects,
            &sim.trace[sim.trace.len().saturating_sub(30)..]
        );
        assert_eq!(sim.agent_core(0).task_count(), 0, "seed {seed}: killed");
        assert_ne!(agent_id(&sim, "agent1"), a1, "seed {seed}: a new agent");
        sim.drive_until_done(500_000);
        check_exactly_once(&sim);
        let f = &sim.frameworks[0];
        assert_eq!(f.finished(), 4, "seed {seed}: agent2's tasks");
        for t in &on_a1 {
            assert_eq!(f.terminal[t], TaskState::Gone, "seed {seed} {t}");
            let states: Vec<TaskState> = seen(&sim, t)
                .iter()
                .map(|s| s.state)
                .filter(|s| *s != TaskState::Starting)
                .collect();
            assert_eq!(
                states,
                [TaskState::Running, TaskState::Unreachable, TaskState::Gone],
                "seed {seed} {t}"
            );
        }
    }
}

/// The next event, with a generous hang guard.
async fn next(sched: &mut sdk::Scheduler) -> Event {
    wait_for(sched, Duration::from_secs(30), |e| Some(e.clone())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_partition_shows_unreachable_then_the_real_end_exactly_once() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    // A long partition made short: the idle timeout notices it within a second, and the
    // re-registration timeout is far longer than the partition.
    let mut cfg = fast_config();
    cfg.tuning.idle_timeout = Duration::from_secs(1);
    cfg.master.agent_reregister_timeout = Duration::from_secs(60);
    let mut cluster = LocalCluster::start(cfg, dir.path()).await.unwrap();
    let (proxy, _) = agent_behind_proxy(&mut cluster, "edge", res(1.0, 1.0), 11).await;
    let mut sched = sdk::Scheduler::connect(cluster.scheduler_options("fw", "*").unwrap())
        .await
        .unwrap();
    let spinner = sched.upload_module(wasm_examples::SPINNER).await.unwrap();
    let offer = offer_from(&mut sched, "edge").await;
    let sleeper = TaskBuilder::new("sleeper", spinner)
        .args(["sleep"])
        .resources(res_mib(0.25, 64))
        .build(&offer);
    // Times out while the link is down: its end is produced during the partition.
    let timed = TaskBuilder::new("timed", spinner)
        .args(["sleep"])
        .resources(res_mib(0.25, 64))
        .timeout(Duration::from_secs(3))
        .build(&offer);
    sched
        .accept(
            vec![offer.id.clone()],
            vec![sleeper, timed],
            Filters {
                refuse_seconds: 0.0,
            },
        )
        .unwrap();

    let mut updates: BTreeMap<String, Vec<TaskStatus>> = BTreeMap::new();
    let has = |u: &BTreeMap<String, Vec<TaskStatus>>, t: &str, st: TaskState| {
        u.get(t).is_some_and(|v| v.iter().any(|s| s.state == st))
    };
    while !has(&updates, "sleeper", TaskState::Running)
        || !has(&updates, "timed", TaskState::Running)
    {
        if let Event::Update(s) = next(&mut sched).await {
            updates.entry(s.task_id.0.clone()).or_default().push(s);
        }
    }
    assert!(
        !has(&updates, "timed", TaskState::Failed),
        "the timeout passed before the partition began: {updates:?}"
    );

    // The link goes dead: the master notices and reports both tasks unreachable.
    proxy.blackhole(true);
    while !has(&updates, "sleeper", TaskState::Unreachable)
        || !has(&updates, "timed", TaskState::Unreachable)
    {
        if let Event::Update(s) = next(&mut sched).await {
            updates.entry(s.task_id.0.clone()).or_default().push(s);
        }
    }
    // Long enough for "timed" to time out on the agent meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.blackhole(false);

    // Back: both reachable again, and the end produced meanwhile comes through.
    while !has(&updates, "timed", TaskState::Failed)
        || updates["sleeper"].last().map(|s| s.state) != Some(TaskState::Running)
    {
        if let Event::Update(s) = next(&mut sched).await {
            updates.entry(s.task_id.0.clone()).or_default().push(s);
        }
    }
    sched.kill("sleeper".into()).unwrap();
    while !has(&updates, "sleeper", TaskState::Killed) {
        if let Event::Update(s) = next(&mut sched).await {
            updates.entry(s.task_id.0.clone()).or_default().push(s);
        }
    }

    // From RUNNING on (STAGING and STARTING come first when their updates do).
    let states = |t: &str| -> Vec<TaskState> {
        updates[t]
            .iter()
            .map(|s| s.state)
            .skip_while(|s| matches!(s, TaskState::Staging | TaskState::Starting))
            .collect()
    };
    assert_eq!(
        states("timed"),
        [
            TaskState::Running,
            TaskState::Unreachable,
            TaskState::Running,
            TaskState::Failed
        ]
    );
    assert_eq!(
        updates["timed"].last().unwrap().reason,
        Some(Reason::Timeout)
    );
    assert_eq!(
        states("sleeper"),
        [
            TaskState::Running,
            TaskState::Unreachable,
            TaskState::Running,
            TaskState::Killed
        ]
    );
    // Nothing more: no duplicate end, no loss.
    let rest = events_for(&mut sched, Duration::from_millis(500)).await;
    assert!(
        rest.iter().all(|e| !matches!(e, Event::Update(_))),
        "{rest:?}"
    );
    cluster.shutdown().await;
}
