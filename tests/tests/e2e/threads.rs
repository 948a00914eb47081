//! A multi-threaded task through a real cluster (real QUIC, real wasmtime, real files): a task of
//! 2 cpus running the 4-thread `mtspin` guest (WASI threads) finishes with every thread's
//! result, and a threaded task whose spawned thread traps fails with the reason while the agent
//! carries on.

use proto::{Filters, TaskState};
use sdk::{Scheduler, TaskBuilder};
use tessera_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_cpu_task_runs_a_four_thread_guest() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_with_agent(dir.path(), "agent1", res(2.0, 1.0)).await;
    let mut sched = Scheduler::connect(cluster.scheduler_options("fw", "*").unwrap())
        .await
        .unwrap();
    let mtspin = sched
        .upload_module(wasm_examples::threads::MTSPIN)
        .await
        .unwrap();
    let offer = offer_from(&mut sched, "agent1").await;
    let spin = TaskBuilder::new("spin", mtspin)
        .resources(res_mib(2.0, 256))
        .args(["4".to_string(), "200000".to_string()])
        .build(&offer);
    sched
        .accept(vec![offer.id.clone()], vec![spin], Filters::default())
        .unwrap();
    let st = wait_terminal(&mut sched, "spin").await;
    assert_eq!(st.state, TaskState::Finished, "{st:?}");
    for i in 0..4 {
        assert!(st.stdout_tail.contains(&format!("thread {i}: ")), "{st:?}");
    }
    assert!(st.stdout_tail.ends_with("done 4\n"), "{st:?}");

    // A trap in a spawned thread fails the task, not the agent: the next task still runs.
    let offer = offer_from(&mut sched, "agent1").await;
    let trap = TaskBuilder::new("trap", mtspin)
        .resources(res_mib(1.0, 256))
        .args(["trap".to_string()])
        .build(&offer);
    sched
        .accept(vec![offer.id.clone()], vec![trap], Filters::default())
        .unwrap();
    let st = wait_terminal(&mut sched, "trap").await;
    assert_eq!(st.state, TaskState::Failed, "{st:?}");
    assert!(st.message.contains("thread 1"), "{st:?}");
    let offer = offer_from(&mut sched, "agent1").await;
    let again = TaskBuilder::new("again", mtspin)
        .resources(res_mib(2.0, 256))
        .args(["2".to_string(), "1000".to_string()])
        .build(&offer);
    sched
        .accept(vec![offer.id.clone()], vec![again], Filters::default())
        .unwrap();
    let st = wait_terminal(&mut sched, "again").await;
    assert_eq!(st.state, TaskState::Finished, "{st:?}");
}
