//! Every link lossy and long at once (issue 11): each agent and each scheduler reaches the master
//! through its own UDP impairment proxy dropping 10 % of the datagrams each way and adding
//! 100 ms each way (200 ms of round trip). The seed's worked example plays out, then 200 short
//! tasks run to completion, two agents running dozens at a time; every update reaches its
//! scheduler exactly once (counted after the SDK's dedup), and no task runs twice.
//!
//! Timing is not asserted (the end-to-end cost of such links is measured in
//! `cli/tests/e2e/cli.rs`, `measure_runs_over_a_slow_lossy_client_link`); only a hang guard bounds
//! the run.

use proto::{Filters, TaskState, TaskStatus};
use sdk::{Event, TaskBuilder};
use std::collections::BTreeMap;
use std::time::Duration;
use tessera_tests::*;

/// Short tasks in the batch.
const TASKS: usize = 200;

/// Far beyond what the run needs (tens of seconds): only a hang trips it.
const HANG_GUARD: Duration = Duration::from_secs(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_workload_and_200_tasks_over_lossy_long_links_everywhere() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let mut lc = LossyCluster::start(dir.path(), lossy_link(), 11_000).await;
    tokio::time::timeout(HANG_GUARD, async {
        seed_workload(&mut lc).await;
        batch(&mut lc).await;
    })
    .await
    .expect("the run hung");
    let (dropped, received) = lc.dropped();
    assert!(dropped > 0, "the links must have lost datagrams");
    eprintln!("proxies dropped {dropped} of {received} datagrams");
    lc.cluster.shutdown().await;
}

/// The guide's worked example: agent1 <4 cpus, 4 GB>; framework1 launches <2, 1 GB> and
/// <1, 2 GB>; framework2 is offered the rest, then what t1 frees.
async fn seed_workload(lc: &mut LossyCluster) {
    lc.add_agent("agent1", res(4.0, 4.0)).await;
    let mut fw1 = lc.scheduler("framework1").await;
    let spinner = fw1.upload_module(wasm_examples::SPINNER).await.unwrap();
    let offer = wait_for(&mut fw1, Duration::from_secs(60), |e| match e {
        Event::Offers(o) => o.iter().find(|o| o.hostname == "agent1").cloned(),
        _ => None,
    })
    .await;
    assert_eq!(offer.resources, res(4.0, 4.0));
    let mut fw2 = lc.scheduler("framework2").await;
    let t1 = TaskBuilder::new("t1", spinner)
        .args(["sleep"])
        .resources(res(2.0, 1.0))
        .build(&offer);
    let t2 = TaskBuilder::new("t2", spinner)
        .args(["sleep"])
        .resources(res(1.0, 2.0))
        .build(&offer);
    fw1.accept(vec![offer.id.clone()], vec![t1, t2], Filters::default())
        .unwrap();
    let rest = wait_for(&mut fw2, Duration::from_secs(60), |e| match e {
        Event::Offers(o) => o.first().cloned(),
        _ => None,
    })
    .await;
    assert_eq!(rest.agent_id, offer.agent_id);
    assert_eq!(rest.resources, res(1.0, 1.0));
    let mut seen = Updates::default();
    while !(seen.reached("t1", TaskState::Running) && seen.reached("t2", TaskState::Running)) {
        seen.record(&next_update(&mut fw1).await);
    }
    fw1.kill("t1".into()).unwrap();
    while !seen.reached("t1", TaskState::Killed) {
        seen.record(&next_update(&mut fw1).await);
    }
    let freed = wait_for(&mut fw2, Duration::from_secs(60), |e| match e {
        Event::Offers(o) => o.first().cloned(),
        _ => None,
    })
    .await;
    assert_eq!(freed.resources, res(2.0, 1.0));
    fw1.kill("t2".into()).unwrap();
    while !seen.reached("t2", TaskState::Killed) {
        seen.record(&next_update(&mut fw1).await);
    }
    seen.check_exactly_once(&["t1", "t2"], TaskState::Killed);
    fw1.teardown().await.unwrap();
    fw2.teardown().await.unwrap();
}

/// [`TASKS`] runs of the hello guest on two agents, as many at once as the offers hold.
async fn batch(lc: &mut LossyCluster) {
    lc.add_agent("agent2", res(4.0, 4.0)).await;
    let mut sched = lc.scheduler("batch").await;
    let hello = sched.upload_module(wasm_examples::HELLO).await.unwrap();
    let share = res_mib(0.1, 32);
    let mut pending: Vec<String> = (0..TASKS).rev().map(|i| format!("task-{i:03}")).collect();
    let mut seen = Updates::default();
    let mut ended = 0;
    while ended < TASKS {
        let event = tokio::time::timeout(Duration::from_secs(120), sched.next_event())
            .await
            .expect("no event in two minutes")
            .expect("scheduler closed");
        match event {
            Event::Offers(offers) => {
                for offer in offers {
                    let mut left = offer.resources;
                    let mut tasks = Vec::new();
                    while left.contains(&share) {
                        let Some(id) = pending.pop() else { break };
                        left -= share;
                        tasks.push(
                            TaskBuilder::new(&id, hello)
                                .args([id.clone()])
                                .resources(share)
                                .build(&offer),
                        );
                    }
                    let refuse = Filters {
                        refuse_seconds: 0.2,
                    };
                    if tasks.is_empty() {
                        sched.decline(vec![offer.id], refuse).unwrap();
                    } else {
                        sched.accept(vec![offer.id], tasks, refuse).unwrap();
                    }
                }
            }
            Event::Update(status) => {
                if status.state.is_terminal() && !seen.ended(status.task_id.as_str()) {
                    ended += 1;
                }
                seen.record(&status);
                if status.state.is_terminal() {
                    assert_eq!(status.state, TaskState::Finished, "{status:?}");
                    assert!(
                        status.stdout_tail.contains(status.task_id.as_str()),
                        "{status:?}"
                    );
                }
            }
            _ => {}
        }
    }
    let ids: Vec<String> = (0..TASKS).map(|i| format!("task-{i:03}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    seen.check_exactly_once(&ids, TaskState::Finished);
    sched.teardown().await.unwrap();
}

/// The next status update, skipping other events.
async fn next_update(sched: &mut sdk::Scheduler) -> TaskStatus {
    wait_for(sched, Duration::from_secs(60), |e| match e {
        Event::Update(s) => Some(s.clone()),
        _ => None,
    })
    .await
}

/// Every update a scheduler saw, per task, in arrival order.
#[derive(Default)]
struct Updates(BTreeMap<String, Vec<(TaskState, bool)>>);

impl Updates {
    fn record(&mut self, s: &TaskStatus) {
        self.0
            .entry(s.task_id.as_str().to_owned())
            .or_default()
            .push((s.state, s.uuid.is_some()));
    }

    fn reached(&self, task: &str, state: TaskState) -> bool {
        self.0
            .get(task)
            .is_some_and(|v| v.iter().any(|(s, _)| *s == state))
    }

    fn ended(&self, task: &str) -> bool {
        self.0
            .get(task)
            .is_some_and(|v| v.iter().any(|(s, _)| s.is_terminal()))
    }

    /// Each task got each of its agent's updates (those with a uuid) once, in life-cycle
    /// order, ending in `end`: no update lost or duplicated, no task started twice.
    fn check_exactly_once(&self, tasks: &[&str], end: TaskState) {
        for task in tasks {
            let states: Vec<TaskState> = self.0[*task]
                .iter()
                .filter(|(_, acked)| *acked)
                .map(|(s, _)| *s)
                .collect();
            let distinct: std::collections::HashSet<_> = states.iter().collect();
            assert_eq!(
                distinct.len(),
                states.len(),
                "{task}: an update came twice: {states:?}"
            );
            assert_eq!(states.last(), Some(&end), "{task}: {states:?}");
            let terminal = states.iter().filter(|s| s.is_terminal()).count();
            assert_eq!(terminal, 1, "{task}: {states:?}");
            let running = states.iter().filter(|s| **s == TaskState::Running).count();
            assert!(running <= 1, "{task} ran twice: {states:?}");
        }
    }
}
