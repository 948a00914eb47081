//! Garbage collection on a real cluster: ended tasks' sandboxes go after the agent's GC delay
//! (their output readable until then), a restarted agent clears its previous run's
//! directories, disk is offered and charged like cpus and memory, and the master deletes blobs
//! nobody used for its grace period.

use agent::core::GcPolicy;
use proto::resources::MIB;
use proto::{Filters, Resources, TaskState};
use sdk::{Scheduler, TaskBuilder};
use std::path::Path;
use std::time::Duration;
use tessera_tests::*;

/// How long ended tasks' directories are kept in these tests: long enough to read them after
/// the final update, short enough to wait for.
const GC_DELAY: Duration = Duration::from_secs(4);

/// Polls `cond` until it holds, failing after a generous `within` (a liveness bound, not a
/// timing claim).
async fn eventually(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts agent `name` offering `r`, collecting after [`GC_DELAY`] whatever the disk holds.
fn add_gc_agent(cluster: &mut LocalCluster, name: &str, r: Resources) -> usize {
    let mut opts = cluster.agent_options(name, r, None).unwrap();
    opts.gc = GcPolicy {
        delay: GC_DELAY,
        disk_headroom: 0.0,
    };
    // The delay is not scaled by this machine's disk usage: the test means the delay set.
    opts.disk_watch_interval = Duration::ZERO;
    cluster.spawn_agent(opts)
}

fn agent_res(disk_mib: u64) -> Resources {
    Resources::new(2000, 512 * MIB, disk_mib * MIB)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_tasks_sandbox_is_readable_then_collected_after_the_delay() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(fast_config(), dir.path())
        .await
        .unwrap();
    add_gc_agent(&mut cluster, "a1", agent_res(1024));
    let mut sched = Scheduler::connect(cluster.scheduler_options("fw", "*").unwrap())
        .await
        .unwrap();
    let diskfill = sched.upload_module(wasm_examples::DISKFILL).await.unwrap();
    let offer = offer_from(&mut sched, "a1").await;
    // Disk is offered, and a task asking none is charged the default share.
    assert_eq!(offer.resources.disk, 1024 * MIB);
    let task = TaskBuilder::new("filler", diskfill)
        .args(["8"])
        .build(&offer);
    assert_eq!(task.resources.disk, proto::task_builder::DEFAULT_TASK_DISK);
    sched
        .accept(vec![offer.id.clone()], vec![task], Filters::default())
        .unwrap();
    let done = wait_terminal(&mut sched, "filler").await;
    assert_eq!(done.state, TaskState::Finished, "{done:?}");

    // Right after its final update, the sandbox and output are still there.
    let tdir = task_dir(&cluster, 0, sched.framework_id(), "filler");
    let big = tdir.join("sandbox").join("fill.bin");
    assert_eq!(std::fs::metadata(&big).unwrap().len(), 8 * MIB);
    let stdout = std::fs::read_to_string(tdir.join("stdout")).unwrap();
    assert!(stdout.contains("wrote 8 MiB, done"), "{stdout}");

    // Once the delay has passed, the whole task directory is gone.
    eventually("the task directory is collected", GC_DELAY * 10, || {
        !tdir.exists()
    })
    .await;
    let trash = cluster.agents[0].work_dir.join("trash");
    eventually("the trash is emptied", Duration::from_secs(30), || {
        std::fs::read_dir(&trash).map_or(true, |mut d| d.next().is_none())
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_beyond_the_agents_disk_is_refused() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(fast_config(), dir.path())
        .await
        .unwrap();
    add_gc_agent(&mut cluster, "a1", agent_res(100));
    let mut sched = Scheduler::connect(cluster.scheduler_options("fw", "*").unwrap())
        .await
        .unwrap();
    let hello = sched.upload_module(wasm_examples::HELLO).await.unwrap();
    let offer = offer_from(&mut sched, "a1").await;
    assert_eq!(offer.resources.disk, 100 * MIB);
    let greedy = TaskBuilder::new("greedy", hello)
        .resources(Resources::new(100, 32 * MIB, 200 * MIB))
        .build(&offer);
    sched
        .accept(vec![offer.id.clone()], vec![greedy], Filters::default())
        .unwrap();
    let refused = wait_terminal(&mut sched, "greedy").await;
    assert!(
        matches!(refused.state, TaskState::Error | TaskState::Dropped),
        "{refused:?}"
    );
    assert!(refused.message.contains("disk"), "{refused:?}");
    assert!(!task_dir(&cluster, 0, sched.framework_id(), "greedy").exists());
    // Within the agent's disk, the same task runs.
    let offer = offer_from(&mut sched, "a1").await;
    let modest = TaskBuilder::new("modest", hello)
        .resources(Resources::new(100, 32 * MIB, 50 * MIB))
        .build(&offer);
    sched
        .accept(vec![offer.id.clone()], vec![modest], Filters::default())
        .unwrap();
    let done = wait_terminal(&mut sched, "modest").await;
    assert_eq!(done.state, TaskState::Finished, "{done:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_clears_its_previous_runs_directories() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(fast_config(), dir.path())
        .await
        .unwrap();
    let mut opts = cluster.agent_options("a1", agent_res(1024), None).unwrap();
    // Kept for an hour: only the restart may remove it.
    opts.gc = GcPolicy::default();
    cluster.spawn_agent(opts.clone());
    let mut sched = Scheduler::connect(cluster.scheduler_options("fw", "*").unwrap())
        .await
        .unwrap();
    let offer = offer_from(&mut sched, "a1").await;
    run_spinner(&mut sched, &offer, "spin", Resources::new(100, 32 * MIB, 0)).await;
    let tdir = task_dir(&cluster, 0, sched.framework_id(), "spin");
    assert!(tdir.join("sandbox").exists());
    let work_dir = cluster.agents[0].work_dir.clone();
    let blobs_before = count(&work_dir.join("blobs"));

    cluster.crash_agent(0);
    cluster.spawn_agent(opts);
    eventually(
        "the previous run's task directory is removed",
        Duration::from_secs(30),
        || !tdir.exists(),
    )
    .await;
    // Fetched blobs and compiled modules are not leftovers: they are kept.
    assert!(work_dir.join("frameworks").is_dir());
    assert_eq!(count(&work_dir.join("blobs")), blobs_before);
    cluster.shutdown().await;
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_deletes_blobs_nobody_used_for_the_grace() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = fast_config();
    cfg.master.blob_gc_grace = Some(Duration::from_secs(2));
    let mut cluster = LocalCluster::start(cfg, dir.path()).await.unwrap();
    cluster.add_agent("a1", agent_res(1024)).unwrap();
    let mut sched = Scheduler::connect(cluster.scheduler_options("fw", "*").unwrap())
        .await
        .unwrap();
    let unused = sched.upload_file(b"nobody reads this").await.unwrap();
    let blobs = cluster.dir.join("master").join("blobs");
    let unused_path = blobs.join(unused.to_hex());
    assert!(unused_path.exists());
    let offer = offer_from(&mut sched, "a1").await;
    // A running task keeps its module however long it runs.
    let spinner = run_spinner(&mut sched, &offer, "spin", Resources::new(100, 32 * MIB, 0)).await;
    let spinner_path = blobs.join(spinner.to_hex());
    eventually(
        "the unused blob is deleted",
        Duration::from_secs(30),
        || !unused_path.exists(),
    )
    .await;
    assert!(spinner_path.exists());

    // A task naming the deleted blob is refused as not uploaded, until it is uploaded again.
    let hello = sched.upload_module(wasm_examples::HELLO).await.unwrap();
    let offer = offer_from(&mut sched, "a1").await;
    let reader = TaskBuilder::new("reader", hello)
        .file("in.txt", unused)
        .resources(Resources::new(100, 32 * MIB, 0))
        .build(&offer);
    sched
        .accept(vec![offer.id.clone()], vec![reader], Filters::default())
        .unwrap();
    let refused = wait_terminal(&mut sched, "reader").await;
    assert!(
        refused.message.contains("has not been uploaded"),
        "{refused:?}"
    );
    assert_eq!(
        sched.upload_file(b"nobody reads this").await.unwrap(),
        unused
    );
    assert!(unused_path.exists());
    assert!(spinner_path.exists());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_executors_directory_is_collected_after_it_exits() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(fast_config(), dir.path())
        .await
        .unwrap();
    add_gc_agent(&mut cluster, "a1", agent_res(1024));
    let mut sched = Scheduler::connect(cluster.scheduler_options("fw", "*").unwrap())
        .await
        .unwrap();
    let kvexec = std::fs::read(wasm_examples::executors::KVEXEC_EXECUTOR_PATH).unwrap();
    let kv = sched.upload_module(&kvexec).await.unwrap();
    let info = proto::ExecutorInfo {
        executor_id: proto::ExecutorId::from("kv"),
        name: "kvexec".into(),
        module: kv,
        resources: Resources::new(100, 64 * MIB, 0),
        args: vec![],
        env: vec![],
        // Stops soon after its only task: its exit starts the GC delay.
        idle_timeout_ms: Some(200),
        kill_grace_ms: None,
    };
    let offer = offer_from(&mut sched, "a1").await;
    let task = TaskBuilder::new("q1", kv)
        .executor(info)
        .data(b"get:k1".to_vec())
        .resources(Resources::new(100, 16 * MIB, 0))
        .build(&offer);
    sched
        .accept(vec![offer.id.clone()], vec![task], Filters::default())
        .unwrap();
    let done = wait_terminal(&mut sched, "q1").await;
    assert_eq!(done.state, TaskState::Finished, "{done:?}");
    let edir = cluster.agents[0]
        .work_dir
        .join("frameworks")
        .join(sched.framework_id().as_str())
        .join("executors")
        .join("kv");
    wait_for(&mut sched, Duration::from_secs(30), |e| {
        matches!(e, sdk::Event::ExecutorExited { .. }).then_some(())
    })
    .await;
    eventually(
        "the executor's directory is collected",
        GC_DELAY * 10,
        || !edir.exists(),
    )
    .await;
    cluster.shutdown().await;
}
