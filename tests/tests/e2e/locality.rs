//! Data sets and delay scheduling on a real cluster (loopback QUIC, wasmtime, real files): three
//! agents hold different data sets; a job whose tasks read different blocks is placed by the
//! SDK's delay-scheduling helper (`cluster::datajob` over `sdk::delay`), and locality is
//! counted from the agents the tasks really ran on.

use cluster::datajob::{read_ok, run_data_job, BlockTask, DataJobReport};
use proto::{Filters, TaskState};
use sdk::delay::DelayConfig;
use sdk::{Scheduler, TaskBuilder};
use std::collections::BTreeMap;
use std::time::Duration;
use tessera_tests::{data_cluster, offer_from, res, res_mib, wait_agents, wait_terminal};

/// Runs a job of three tasks per data set on a fresh framework `name` with `wait`.
async fn job(
    cluster: &tessera_tests::LocalCluster,
    blocks: &BTreeMap<String, String>,
    name: &str,
    wait: Duration,
) -> DataJobReport {
    let mut sched = Scheduler::connect(cluster.scheduler_options(name, "*").unwrap())
        .await
        .unwrap();
    let module = sched.upload_module(wasm_examples::READBLOCK).await.unwrap();
    let mut tasks = Vec::new();
    for (set, contents) in blocks {
        let copy = sched.upload_file(contents.as_bytes()).await.unwrap();
        for k in 0..3 {
            tasks.push(BlockTask {
                id: format!("{name}-{set}-{k}"),
                dataset: set.clone(),
                file: "part-0".into(),
                remote_copy: copy,
            });
        }
    }
    wait_agents(&mut sched, 3).await;
    let cfg = DelayConfig {
        wait,
        refuse: Duration::from_secs(1),
        idle_refuse: Duration::from_secs(30),
    };
    let report = run_data_job(
        &mut sched,
        module,
        name,
        tasks,
        res_mib(0.1, 32),
        cfg,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    sched.teardown().await.unwrap();
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_scheduling_places_tasks_by_their_data() {
    tessera_tests::trace();
    let dir = tempfile::tempdir().unwrap();
    // Each agent could take the whole job: only the policy decides where tasks go.
    let (cluster, blocks) = data_cluster(dir.path(), res(1.0, 1.0)).await;
    // A wait of 3 s rather than 1 s: margin for a loaded machine, at no cost when the local
    // offers come (every agent is offered within one 200 ms allocation interval).
    let delayed = job(&cluster, &blocks, "delayed", Duration::from_secs(3)).await;
    let greedy = job(&cluster, &blocks, "greedy", Duration::ZERO).await;
    let show = |r: &DataJobReport| {
        r.runs
            .iter()
            .map(|t| format!("{}@{}{}", t.id, t.hostname, if t.local { "" } else { "*" }))
            .collect::<Vec<_>>()
    };
    eprintln!(
        "locality: wait 3 s {}/{} ({:?}), wait 0 {}/{} ({:?})",
        delayed.local(),
        delayed.runs.len(),
        delayed.elapsed,
        greedy.local(),
        greedy.runs.len(),
        greedy.elapsed
    );
    assert_eq!(delayed.runs.len(), 9);
    assert!(delayed.locality() >= 0.9, "{:?}", show(&delayed));
    // Without a wait the first offer takes what fits, local tasks first: one agent in three.
    assert!(greedy.locality() <= 0.5, "{:?}", show(&greedy));
    // Every task read its block: in place at /data/NAME when local, else the uploaded copy.
    for r in delayed.runs.iter().chain(&greedy.runs) {
        assert!(read_ok(r), "{}: {:?}", r.id, r.status);
        let set = &r.id.split('-').collect::<Vec<_>>()[1..3].join("-");
        let first = blocks[set].lines().next().unwrap();
        assert!(
            r.status.stdout_tail.contains(&format!("first: {first}")),
            "{}: {}",
            r.id,
            r.status.stdout_tail
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_reads_its_data_set_in_place() {
    tessera_tests::trace();
    let dir = tempfile::tempdir().unwrap();
    let (cluster, blocks) = data_cluster(dir.path(), res(1.0, 1.0)).await;
    let mut sched = Scheduler::connect(cluster.scheduler_options("reader", "*").unwrap())
        .await
        .unwrap();
    let module = sched.upload_module(wasm_examples::READBLOCK).await.unwrap();
    let offer = offer_from(&mut sched, "data2").await;
    assert_eq!(offer.datasets, vec!["blk-2".to_string()]);
    let task = TaskBuilder::new("read", module)
        .resources(res_mib(0.1, 32))
        .dataset("blk-2")
        .args(["/data/blk-2/part-0", "/data/blk-2"])
        .build(&offer);
    sched
        .accept(vec![offer.id.clone()], vec![task], Filters::default())
        .unwrap();
    let status = wait_terminal(&mut sched, "read").await;
    let contents = &blocks["blk-2"];
    let out = &status.stdout_tail;
    assert!(
        out.contains(&format!(
            "/data/blk-2/part-0: {} bytes, 2 lines",
            contents.len()
        )),
        "{status:?}"
    );
    assert!(out.contains("first: block 2 of the input"), "{out}");
    // A directory is not a block: the guest says so and exits 1.
    assert_eq!(status.state, TaskState::Failed, "{status:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_for_a_data_set_the_agent_lacks_is_a_task_error() {
    tessera_tests::trace();
    let dir = tempfile::tempdir().unwrap();
    let (cluster, _) = data_cluster(dir.path(), res(1.0, 1.0)).await;
    let mut sched = Scheduler::connect(cluster.scheduler_options("lost", "*").unwrap())
        .await
        .unwrap();
    let module = sched.upload_module(wasm_examples::READBLOCK).await.unwrap();
    let offer = offer_from(&mut sched, "data1").await;
    let task = TaskBuilder::new("wrong", module)
        .resources(res_mib(0.1, 32))
        .dataset("blk-3")
        .args(["/data/blk-3/part-0"])
        .build(&offer);
    sched
        .accept(vec![offer.id.clone()], vec![task], Filters::default())
        .unwrap();
    let status = wait_terminal(&mut sched, "wrong").await;
    assert_eq!(status.state, TaskState::Error, "{status:?}");
    assert!(
        status.message.contains("blk-3") && status.message.contains("does not hold"),
        "{}",
        status.message
    );
    // Nothing was lost: the offer's resources come back.
    let again = offer_from(&mut sched, "data1").await;
    assert_eq!(again.resources, res(1.0, 1.0));
    cluster.shutdown().await;
}
