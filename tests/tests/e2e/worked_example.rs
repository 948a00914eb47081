//! The seed's worked example, event by event, over real QUIC with real wasm.

use proto::{Filters, TaskState};
use sdk::{Scheduler, TaskBuilder};
use tessera_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_worked_example() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(fast_config(), dir.path())
        .await
        .unwrap();
    cluster.add_agent("agent1", res(4.0, 4.0)).unwrap();

    let mut fw1 = Scheduler::connect(cluster.scheduler_options("framework1", "*").unwrap())
        .await
        .unwrap();
    let spinner = fw1.upload_module(wasm_examples::SPINNER).await.unwrap();

    // agent1 offers <4 cpus, 4 GB>; the allocator offers it to framework1.
    let offers = next_offers(&mut fw1).await;
    assert_eq!(offers.len(), 1);
    let offer = &offers[0];
    assert_eq!(offer.hostname, "agent1");
    assert_eq!(offer.resources, res(4.0, 4.0));

    let mut fw2 = Scheduler::connect(cluster.scheduler_options("framework2", "*").unwrap())
        .await
        .unwrap();

    // framework1 launches <2 cpus, 1 GB> and <1 cpu, 2 GB>.
    let t1 = TaskBuilder::new("t1", spinner)
        .args(["sleep"])
        .resources(res(2.0, 1.0))
        .build(offer);
    let t2 = TaskBuilder::new("t2", spinner)
        .args(["sleep"])
        .resources(res(1.0, 2.0))
        .build(offer);
    fw1.accept(vec![offer.id.clone()], vec![t1, t2], Filters::default())
        .unwrap();

    // The remaining <1 cpu, 1 GB> is offered to framework2.
    let offers2 = next_offers(&mut fw2).await;
    assert_eq!(offers2.len(), 1);
    assert_eq!(offers2[0].agent_id, offer.agent_id);
    assert_eq!(offers2[0].resources, res(1.0, 1.0));

    wait_all(
        &mut fw1,
        &[("t1", TaskState::Running), ("t2", TaskState::Running)],
    )
    .await;

    // Offers repeat as tasks finish: kill t1, its <2 cpus, 1 GB> comes back.
    fw1.kill("t1".into()).unwrap();
    let killed = wait_terminal(&mut fw1, "t1").await;
    assert_eq!(killed.state, TaskState::Killed);
    let again = next_offers(&mut fw2).await;
    assert_eq!(again[0].resources, res(2.0, 1.0));

    fw1.kill("t2".into()).unwrap();
    wait_terminal(&mut fw1, "t2").await;
    cluster.shutdown().await;
}
