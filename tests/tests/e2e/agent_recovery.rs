//! Agent checkpoint and stop on a real cluster with in-process guests (which die with the
//! agent): a restarted agent recovers its checkpoint, re-registers under its old id and reports
//! the tasks that died with it exactly once (`RuntimeLost`); a stop that kills tasks reports
//! them, tells the master and removes its checkpoint, without hanging when the master does not
//! confirm; the agent's blobs and compiled modules are kept under its cache size (what a running
//! task uses excepted). The runtime process (guests that outlive the agent) is tested end to end in
//! cli/tests/e2e/agent_restart.rs.

use agent::driver::OnStop;
use proto::resources::MIB;
use proto::{Reason, Resources, TaskState};
use sdk::{Event, Scheduler};
use std::time::Duration;
use tessera_tests::*;

fn updates_of(events: &[Event], task: &str) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::Update(s) if s.task_id.as_str() == task))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_reports_the_tasks_that_died_with_it_once() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(fast_config(), dir.path())
        .await
        .unwrap();
    let mut opts = cluster
        .agent_options("a1", Resources::new(2000, 512 * MIB, 0), None)
        .unwrap();
    opts.checkpoint = true;
    cluster.spawn_agent(opts.clone());
    let mut sched = Scheduler::connect(cluster.scheduler_options("fw", "*").unwrap())
        .await
        .unwrap();
    let offer = offer_from(&mut sched, "a1").await;
    run_spinner(&mut sched, &offer, "spin", Resources::new(100, 32 * MIB, 0)).await;
    let checkpoint = cluster.agents[0].work_dir.join("checkpoint");
    assert!(checkpoint.exists(), "written before the task was reported");

    cluster.crash_agent(0);
    cluster.spawn_agent(opts);
    let lost = wait_terminal(&mut sched, "spin").await;
    assert_eq!(lost.state, TaskState::Failed, "{lost:?}");
    assert_eq!(lost.reason, Some(Reason::RuntimeLost), "{lost:?}");
    assert_eq!(
        lost.agent_id.as_ref(),
        Some(&offer.agent_id),
        "re-registered under its old id"
    );
    let later = events_for(&mut sched, Duration::from_secs(2)).await;
    assert_eq!(
        updates_of(&later, "spin"),
        0,
        "one terminal update: {later:?}"
    );
    // The task's directory is the recovered agent's (collected after the delay), not a
    // leftover removed at start.
    let tdir = task_dir(&cluster, 1, sched.framework_id(), "spin");
    assert!(tdir.exists());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_that_kills_tasks_reports_them_and_forgets_the_checkpoint() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(fast_config(), dir.path())
        .await
        .unwrap();
    let mut opts = cluster
        .agent_options("a1", Resources::new(2000, 512 * MIB, 0), None)
        .unwrap();
    opts.checkpoint = true;
    opts.on_stop = OnStop::KillTasks;
    opts.stop_timeout = Duration::from_secs(3);
    cluster.spawn_agent(opts);
    let mut sched = Scheduler::connect(cluster.scheduler_options("fw", "*").unwrap())
        .await
        .unwrap();
    let offer = offer_from(&mut sched, "a1").await;
    run_spinner(&mut sched, &offer, "spin", Resources::new(100, 32 * MIB, 0)).await;
    let checkpoint = cluster.agents[0].work_dir.join("checkpoint");
    assert!(checkpoint.exists());

    // Returns whether or not the master confirms the leaving (bounded waits).
    cluster.stop_agent(0).await;
    let killed = wait_terminal(&mut sched, "spin").await;
    assert_eq!(killed.state, TaskState::Killed, "{killed:?}");
    assert!(!checkpoint.exists(), "nothing left to recover");
    cluster.shutdown().await;
}

/// Tasks per second through one agent with and without its checkpoint, in the same run
/// (run with `--ignored --nocapture`; a measurement, never asserted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_task_throughput_with_and_without_the_checkpoint() {
    let n = 300;
    let mut rates = Vec::new();
    for (round, checkpoint) in [true, false, true, false].into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = LocalCluster::start(fast_config(), dir.path())
            .await
            .unwrap();
        let mut opts = cluster
            .agent_options("a1", Resources::new(32_000, 8 * 1024 * MIB, 0), None)
            .unwrap();
        opts.checkpoint = checkpoint;
        cluster.spawn_agent(opts);
        let mut sched = Scheduler::connect(cluster.scheduler_options("fw", "*").unwrap())
            .await
            .unwrap();
        let hello = sched.upload_module(wasm_examples::HELLO).await.unwrap();
        let offer = offer_from(&mut sched, "a1").await;
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                sdk::TaskBuilder::new(&format!("t{i}"), hello)
                    .resources(Resources::new(100, 16 * MIB, 0))
                    .build(&offer)
            })
            .collect();
        let t = std::time::Instant::now();
        sched
            .accept(vec![offer.id.clone()], tasks, proto::Filters::default())
            .unwrap();
        let mut done = 0;
        while done < n {
            let s = wait_for(&mut sched, Duration::from_secs(120), |e| match e {
                Event::Update(s) if s.state.is_terminal() => Some(s.clone()),
                _ => None,
            })
            .await;
            assert_eq!(s.state, TaskState::Finished, "{s:?}");
            done += 1;
        }
        let rate = n as f64 / t.elapsed().as_secs_f64();
        println!("round {round}: checkpoint {checkpoint}: {rate:.0} tasks/s");
        rates.push((checkpoint, rate));
        cluster.shutdown().await;
    }
    let mean = |c: bool| {
        let v: Vec<f64> = rates.iter().filter(|r| r.0 == c).map(|r| r.1).collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    println!(
        "{n} hello tasks: {:.0} tasks/s with the checkpoint, {:.0} without: ratio {:.2}",
        mean(true),
        mean(false),
        mean(true) / mean(false)
    );
}

/// Fetched blobs and compiled modules are kept under the agent's cache size: once a task has
/// ended, its module (blob and compiled code) is collected, while the module of a running task
/// stays even though it alone is over the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_and_compiled_modules_over_the_cache_size_are_collected_but_not_those_in_use() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(fast_config(), dir.path())
        .await
        .unwrap();
    let mut opts = cluster
        .agent_options("a1", Resources::new(2000, 512 * MIB, 0), None)
        .unwrap();
    opts.cache_size = 1;
    opts.disk_watch_interval = Duration::from_millis(100);
    cluster.spawn_agent(opts);
    let work = cluster.agents[0].work_dir.clone();
    let mut sched = Scheduler::connect(cluster.scheduler_options("fw", "*").unwrap())
        .await
        .unwrap();
    let hello = sched.upload_module(wasm_examples::HELLO).await.unwrap();
    let offer = offer_from(&mut sched, "a1").await;
    let task = sdk::TaskBuilder::new("hello", hello)
        .resources(Resources::new(100, 32 * MIB, 0))
        .build(&offer);
    sched
        .accept(
            vec![offer.id.clone()],
            vec![task],
            proto::Filters {
                refuse_seconds: 0.0,
            },
        )
        .unwrap();
    assert_eq!(
        wait_terminal(&mut sched, "hello").await.state,
        TaskState::Finished
    );
    let offer = offer_from(&mut sched, "a1").await;
    let spinner = run_spinner(&mut sched, &offer, "spin", Resources::new(100, 32 * MIB, 0)).await;
    // Files of a digest in blobs/ or cache/.
    let files_of = |d: proto::Digest| -> Vec<std::path::PathBuf> {
        let hex = d.to_hex();
        ["blobs", "cache"]
            .iter()
            .filter_map(|sub| std::fs::read_dir(work.join(sub)).ok())
            .flat_map(|rd| rd.flatten().map(|e| e.path()))
            .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(&hex))
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !files_of(hello).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "hello's module was never collected: {:?}",
            files_of(hello)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kept = files_of(spinner);
    assert!(
        kept.iter().any(|p| p.starts_with(work.join("blobs"))),
        "the running task's module is kept: {kept:?}"
    );
    cluster.shutdown().await;
}
