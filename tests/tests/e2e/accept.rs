//! Accepting and declining offers: invalid accepts are answered explicitly (an `Error` event and
//! a terminal update per task, with its reason), and decline filters keep an agent away from one
//! framework for the time asked, and no longer.

use proto::{Filters, OfferId, Reason, TaskState};
use sdk::{Event, Scheduler, TaskBuilder};
use std::time::{Duration, Instant};
use tessera_tests::*;

fn refuse(secs: f64) -> Filters {
    Filters {
        refuse_seconds: secs,
    }
}

/// Waits for the next `Event::Error`.
async fn next_error(sched: &mut Scheduler) -> String {
    wait_for(sched, Duration::from_secs(10), |e| match e {
        Event::Error(m) => Some(m.clone()),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_accepts_are_answered_with_reasons() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(fast_config(), dir.path())
        .await
        .unwrap();
    cluster.add_agent("agent1", res(1.0, 1.0)).unwrap();
    let mut fw1 = Scheduler::connect(cluster.scheduler_options("fw1", "*").unwrap())
        .await
        .unwrap();
    let hello = fw1.upload_module(wasm_examples::HELLO).await.unwrap();
    let offer = offer_from(&mut fw1, "agent1").await;
    // fw2 subscribes while fw1 holds the whole agent: it gets no offer.
    let mut fw2 = Scheduler::connect(cluster.scheduler_options("fw2", "*").unwrap())
        .await
        .unwrap();

    // fw2 tries to use fw1's offer.
    let intruder = TaskBuilder::new("intruder", hello).build(&offer);
    fw2.accept(vec![offer.id.clone()], vec![intruder], Filters::default())
        .unwrap();
    let dropped = wait_terminal(&mut fw2, "intruder").await;
    assert_eq!(dropped.state, TaskState::Dropped, "{dropped:?}");
    assert_eq!(dropped.reason, Some(Reason::InvalidOffers));
    assert!(
        dropped.message.contains("not an offer to framework"),
        "{dropped:?}"
    );
    let err = next_error(&mut fw2).await;
    assert!(err.contains("accept failed"), "{err}");
    assert!(err.contains(offer.id.as_str()), "{err}");

    // The offer is still fw1's: it launches one task that fits, and two that do not fit in
    // what remains of the offer.
    let fits = TaskBuilder::new("fits", hello)
        .resources(res_mib(0.5, 32))
        .build(&offer);
    let too_big = TaskBuilder::new("too-big", hello)
        .resources(res_mib(0.6, 32))
        .build(&offer);
    let huge = TaskBuilder::new("huge", hello)
        .resources(res(8.0, 8.0))
        .build(&offer);
    fw1.accept(
        vec![offer.id.clone()],
        vec![fits, too_big, huge],
        refuse(0.0),
    )
    .unwrap();
    let statuses = wait_all(
        &mut fw1,
        &[
            ("fits", TaskState::Finished),
            ("too-big", TaskState::Error),
            ("huge", TaskState::Error),
        ],
    )
    .await;
    for s in statuses.iter().filter(|s| s.state == TaskState::Error) {
        assert_eq!(s.reason, Some(Reason::TaskInvalid), "{s:?}");
        assert!(s.message.contains("remain in the offers"), "{s:?}");
        assert_eq!(s.agent_id, None, "{s:?}");
    }

    // The offer is used up: accepting it again is refused, its tasks dropped.
    let late = TaskBuilder::new("late", hello).build(&offer);
    fw1.accept(vec![offer.id.clone()], vec![late], Filters::default())
        .unwrap();
    let dropped = wait_terminal(&mut fw1, "late").await;
    assert_eq!(dropped.state, TaskState::Dropped, "{dropped:?}");
    assert_eq!(dropped.reason, Some(Reason::InvalidOffers));
    assert!(
        dropped.message.contains("unknown or no longer valid"),
        "{dropped:?}"
    );
    let err = next_error(&mut fw1).await;
    assert!(err.contains("accept failed"), "{err}");

    // So is an offer that never existed, and a decline of it.
    fw1.decline(vec![OfferId::from("no-such-offer")], Filters::default())
        .unwrap();
    let err = next_error(&mut fw1).await;
    assert!(err.contains("no-such-offer"), "{err}");

    // None of this reached the agent.
    for t in ["intruder", "too-big", "huge", "late"] {
        for fid in [fw1.framework_id(), fw2.framework_id()] {
            assert!(!task_dir(&cluster, 0, fid, t).exists(), "{t}");
        }
    }
    // (`fits` ran without a sandbox: it leaves no directory; its Finished above says it ran.)
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declined_agents_are_refused_for_the_time_asked() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(fast_config(), dir.path())
        .await
        .unwrap();
    cluster.add_agent("agent1", res(1.0, 1.0)).unwrap();
    let mut fw1 = Scheduler::connect(cluster.scheduler_options("fw1", "*").unwrap())
        .await
        .unwrap();
    let first = offer_from(&mut fw1, "agent1").await;
    let mut fw2 = Scheduler::connect(cluster.scheduler_options("fw2", "*").unwrap())
        .await
        .unwrap();

    // fw1 declines for 2 s: the agent goes to fw2 at once.
    let window = Duration::from_secs(2);
    let declined_at = Instant::now();
    fw1.decline(vec![first.id.clone()], refuse(window.as_secs_f64()))
        .unwrap();
    let to_fw2 = offer_from(&mut fw2, "agent1").await;
    assert_eq!(to_fw2.resources, res(1.0, 1.0));
    // fw2 declines for a minute: nobody wants the agent until fw1's filter expires.
    fw2.decline(vec![to_fw2.id.clone()], refuse(60.0)).unwrap();
    let again = offer_from(&mut fw1, "agent1").await;
    let waited = declined_at.elapsed();
    tracing::info!(?waited, "fw1 offered again");
    assert!(
        waited >= window,
        "re-offered after {waited:?}, inside the window"
    );
    assert_eq!(again.agent_id, first.agent_id);

    // fw1 declines for a minute too; fw2's Revive clears its own filter: the agent comes back.
    fw1.decline(vec![again.id.clone()], refuse(60.0)).unwrap();
    fw2.revive().unwrap();
    let revived = offer_from(&mut fw2, "agent1").await;
    assert_eq!(revived.resources, res(1.0, 1.0));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_names_are_refused_at_accept_not_on_the_agent() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(fast_config(), dir.path())
        .await
        .unwrap();
    cluster.add_agent("agent1", res(1.0, 1.0)).unwrap();

    // A framework id that could not name a directory is refused at subscription.
    let mut opts = cluster.scheduler_options("evil", "*").unwrap();
    opts.framework.id = Some("../../evil".into());
    let err = Scheduler::connect(opts).await.err().expect("subscribed");
    assert!(err.to_string().contains("framework id"), "{err}");

    let mut fw = Scheduler::connect(cluster.scheduler_options("fw", "*").unwrap())
        .await
        .unwrap();
    let hello = fw.upload_module(wasm_examples::HELLO).await.unwrap();
    let file = fw.upload_file(b"data").await.unwrap();
    let offer = offer_from(&mut fw, "agent1").await;
    let tasks = vec![
        TaskBuilder::new("../escape", hello).build(&offer),
        TaskBuilder::new("a/b", hello).build(&offer),
        TaskBuilder::new("dot-path", hello)
            .file("./input.txt", file)
            .build(&offer),
        TaskBuilder::new("up-path", hello)
            .file("../input.txt", file)
            .build(&offer),
        TaskBuilder::new("abs-path", hello)
            .file("/input.txt", file)
            .build(&offer),
    ];
    fw.accept(vec![offer.id.clone()], tasks, Filters::default())
        .unwrap();
    let statuses = wait_all(
        &mut fw,
        &[
            ("../escape", TaskState::Error),
            ("a/b", TaskState::Error),
            ("dot-path", TaskState::Error),
            ("up-path", TaskState::Error),
            ("abs-path", TaskState::Error),
        ],
    )
    .await;
    for s in &statuses {
        assert_eq!(s.reason, Some(Reason::TaskInvalid), "{s:?}");
        assert_eq!(s.agent_id, None, "{s:?}");
    }
    // Nothing reached the agent.
    let tasks_dir = cluster.agents[0]
        .work_dir
        .join("frameworks")
        .join(fw.framework_id().as_str());
    assert!(!tasks_dir.exists(), "{}", tasks_dir.display());
    cluster.shutdown().await;
}
