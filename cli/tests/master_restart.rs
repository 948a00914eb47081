//! A master killed with SIGKILL in the middle of 1,000 short tasks and restarted on the same
//! port and work directory: real `tessera master` and `tessera agent` processes, and a
//! scheduler (the SDK) in this process.
//!
//! Every job (1,000 of them, the `hello` guest echoing its job name) must run exactly once and
//! end FINISHED with its own output; every update is seen once. A launch the new master never
//! heard of (an accept lost with the old master, or sent to the new one with the old one's
//! offers) is launched again under a new attempt id: the master persists a task before it sends
//! it to an agent, so a task it does not know after the restart never ran, and the test checks
//! that such an attempt indeed never produced an update from an agent.

use proto::resources::MIB;
use proto::{Filters, Reason, Resources, TaskId, TaskState, TaskStatus};
use sdk::{Event, Scheduler, SchedulerOptions, TaskBuilder};
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::time::{Duration, Instant};

mod common;

use common::{certs, free_port, start_agent, start_master, IDLE};

const JOBS: usize = 1_000;

/// Kill the master once this many jobs have finished.
const KILL_AFTER: usize = 300;

/// What the scheduler knows of one job.
#[derive(Default)]
struct Job {
    /// Attempt ids launched, oldest first.
    attempts: Vec<TaskId>,
    /// True while its latest attempt is launched and not known to have failed to launch.
    launched: bool,
    done: bool,
}

/// The job and attempt of a task id `job-J-aN`.
fn parse(id: &TaskId) -> (usize, usize) {
    let rest = id.0.strip_prefix("job-").unwrap();
    let (j, a) = rest.split_once("-a").unwrap();
    (j.parse().unwrap(), a.parse().unwrap())
}

/// The first line of `log` containing `needle`, if any.
fn log_line(log: &Path, needle: &str) -> Option<String> {
    std::fs::read_to_string(log)
        .ok()?
        .lines()
        .find(|l| l.contains(needle))
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_master_during_1000_tasks_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path(), &["worker1", "worker2"], &["restarter"]);
    let addr = format!("127.0.0.1:{}", free_port());
    let log1 = dir.path().join("master-1.log");
    let log2 = dir.path().join("master-2.log");
    let mut master = start_master(dir.path(), &certs, &addr, &log1);
    let _agents = [
        start_agent(dir.path(), &certs, &addr, "worker1", "4"),
        start_agent(dir.path(), &certs, &addr, "worker2", "4"),
    ];

    let tls = net::tls::PeerTls::from_files(
        &certs.join("ca.pem"),
        &certs.join("restarter.pem"),
        &certs.join("restarter-key.pem"),
    )
    .unwrap();
    let mut opts = SchedulerOptions::new(addr.parse().unwrap(), tls, "restarter", "*");
    opts.max_backoff = Duration::from_millis(500);
    opts.tuning.idle_timeout = Duration::from_secs(3);
    opts.tuning.keep_alive = Duration::from_secs(1);
    let mut sched = Scheduler::connect(opts).await.expect("subscribed");
    let module = sched
        .upload_module(wasm_examples::HELLO)
        .await
        .expect("uploaded");

    // At most 64 at once per agent (by memory); disk set, so the default share does not apply.
    let per_task = Resources::new(10, 8 * MIB, 4 * MIB);
    let mut jobs: Vec<Job> = (0..JOBS).map(|_| Job::default()).collect();
    let mut pending: VecDeque<usize> = (0..JOBS).collect();
    // Everything seen, per task id, in order.
    let mut seen: BTreeMap<TaskId, Vec<TaskStatus>> = BTreeMap::new();
    let mut uuids: BTreeMap<String, usize> = BTreeMap::new();
    let mut finished = 0;
    let mut subscriptions = 0;
    let mut relaunched = 0;
    let mut killed_at: Option<Instant> = None;
    let mut restarted_at: Option<Instant> = None;
    let mut first_offer_after_restart: Option<Duration> = None;
    // Offer ids start with the id of the master run that made them.
    let mut first_run: Option<String> = None;
    let started = Instant::now();
    // A hang guard only (the test measures nothing against it).
    let deadline = started + Duration::from_secs(900);

    while finished < JOBS {
        let event = tokio::time::timeout_at(deadline.into(), sched.next_event())
            .await
            .unwrap_or_else(|_| {
                let stuck: Vec<_> = jobs
                    .iter()
                    .filter(|j| !j.done)
                    .take(5)
                    .map(|j| {
                        let id = j.attempts.last();
                        (id.cloned(), id.and_then(|id| seen.get(id)).cloned())
                    })
                    .collect();
                for log in [&log1, &log2] {
                    let text = std::fs::read_to_string(log).unwrap_or_default();
                    let tail: Vec<_> = text.lines().rev().take(20).collect();
                    eprintln!("{}: ...\n{}", log.display(), tail.join("\n"));
                }
                panic!("hang: {finished}/{JOBS} jobs finished; some not done: {stuck:?}")
            })
            .expect("the scheduler stopped");
        match event {
            Event::Subscribed { .. } => {
                subscriptions += 1;
                if subscriptions > 1 {
                    // Re-subscribed to the restarted master: ask about every launch not known
                    // to have ended. One it does not know was never sent to an agent.
                    let ids: Vec<TaskId> = jobs
                        .iter()
                        .filter(|j| j.launched && !j.done)
                        .map(|j| j.attempts.last().unwrap().clone())
                        .collect();
                    sched.reconcile(ids).unwrap();
                }
            }
            Event::Offers(offers) => {
                let run =
                    |o: &proto::Offer| o.id.0.split('-').next().unwrap_or_default().to_owned();
                if let Some(o) = offers.first() {
                    let run = run(o);
                    let first = first_run.get_or_insert_with(|| run.clone());
                    if *first != run && first_offer_after_restart.is_none() {
                        first_offer_after_restart = restarted_at.map(|t| t.elapsed());
                    }
                }
                for offer in offers {
                    let mut left = offer.resources;
                    let mut tasks = Vec::new();
                    while left.contains(&per_task) {
                        let Some(j) = pending.pop_front() else { break };
                        let id = format!("job-{j}-a{}", jobs[j].attempts.len());
                        tasks.push(
                            TaskBuilder::new(&id, module)
                                .resources(per_task)
                                .args([format!("job-{j}")])
                                .build(&offer),
                        );
                        jobs[j].attempts.push(TaskId(id));
                        jobs[j].launched = true;
                        left -= per_task;
                    }
                    let filters = Filters {
                        refuse_seconds: if tasks.is_empty() { 1.0 } else { 0.0 },
                    };
                    if tasks.is_empty() {
                        sched.decline(vec![offer.id.clone()], filters).unwrap();
                    } else {
                        sched
                            .accept(vec![offer.id.clone()], tasks, filters)
                            .unwrap();
                    }
                }
            }
            Event::Update(status) => {
                if let Some(u) = &status.uuid {
                    *uuids.entry(u.0.clone()).or_default() += 1;
                }
                let (j, attempt) = parse(&status.task_id);
                seen.entry(status.task_id.clone())
                    .or_default()
                    .push(status.clone());
                let latest = attempt + 1 == jobs[j].attempts.len();
                let never_launched = status.uuid.is_none()
                    && ((status.state == TaskState::Dropped
                        && status.reason == Some(Reason::InvalidOffers))
                        || (status.state == TaskState::Lost && status.message == "unknown task"));
                assert!(
                    status.state != TaskState::Error,
                    "refused launch: {status:?}"
                );
                if never_launched {
                    if latest && jobs[j].launched && !jobs[j].done {
                        jobs[j].launched = false;
                        pending.push_back(j);
                        relaunched += 1;
                    }
                    continue;
                }
                if status.uuid.is_some() && status.state.is_terminal() && !jobs[j].done {
                    jobs[j].done = true;
                    finished += 1;
                    if finished % 100 == 0 {
                        println!(
                            "{finished} jobs finished at {:.1} s",
                            started.elapsed().as_secs_f64()
                        );
                    }
                }
                if finished >= KILL_AFTER && killed_at.is_none() {
                    // SIGKILL: nothing is flushed, closed or written on the way out.
                    master.0.kill().unwrap();
                    master.0.wait().unwrap();
                    killed_at = Some(Instant::now());
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    master = start_master(dir.path(), &certs, &addr, &log2);
                    restarted_at = Some(Instant::now());
                }
            }
            Event::Error(e) => println!("master error: {e}"),
            _ => {}
        }
    }
    let wall = started.elapsed();

    // Every job ran exactly once: exactly one attempt has updates from an agent, with exactly
    // one terminal update, FINISHED, carrying the job's own output. The other attempts never
    // reached an agent.
    let mut never_ran = 0;
    for (j, job) in jobs.iter().enumerate() {
        let mut ran = Vec::new();
        for id in &job.attempts {
            let updates = seen.get(id).map(Vec::as_slice).unwrap_or_default();
            let from_agent: Vec<_> = updates.iter().filter(|s| s.uuid.is_some()).collect();
            assert!(
                updates.iter().all(|s| !matches!(
                    s.state,
                    TaskState::Gone | TaskState::Failed | TaskState::Error
                )),
                "{id}: {updates:?}"
            );
            if from_agent.is_empty() {
                // Never reached an agent: the masters said so (dropped or unknown), nothing else.
                assert!(
                    !updates.is_empty()
                        && updates
                            .iter()
                            .all(|s| matches!(s.state, TaskState::Dropped | TaskState::Lost)),
                    "{id}: {updates:?}"
                );
                never_ran += 1;
                continue;
            }
            ran.push(id.clone());
            let terminal: Vec<_> = from_agent
                .iter()
                .filter(|s| s.state.is_terminal())
                .collect();
            assert_eq!(terminal.len(), 1, "{id}: {updates:?}");
            assert_eq!(terminal[0].state, TaskState::Finished, "{id}: {updates:?}");
            assert!(
                terminal[0]
                    .stdout_tail
                    .contains(&format!("Hello from Tessera! job-{j}")),
                "{id}: {:?}",
                terminal[0].stdout_tail
            );
            let running = from_agent
                .iter()
                .filter(|s| s.state == TaskState::Running)
                .count();
            assert!(running <= 1, "{id} ran {running} times: {updates:?}");
            // Nothing reported LOST for a task that really ran.
            assert!(
                updates.iter().all(|s| s.state != TaskState::Lost),
                "{id}: {updates:?}"
            );
        }
        assert_eq!(ran.len(), 1, "job {j} ran as {ran:?}");
    }
    // The SDK drops repeats by uuid: each update reached the scheduler's code once.
    assert!(uuids.values().all(|n| *n == 1));

    let recovered = log_line(&log2, "registry loaded");
    let first_offers = log_line(&log2, "first offers served");
    println!(
        "{JOBS} jobs in {:.1} s on 2 agents; master killed after {KILL_AFTER} had finished; \
         {relaunched} launches the new master never heard of were retried ({never_ran} attempts \
         never ran)",
        wall.as_secs_f64()
    );
    println!(
        "restart: killed -> new master spawned {:.2} s later; spawn -> first offer at the \
         scheduler {:.2} s (includes peers noticing the dead master: QUIC idle timeout {IDLE})",
        restarted_at
            .unwrap()
            .duration_since(killed_at.unwrap())
            .as_secs_f64(),
        first_offer_after_restart.unwrap_or_default().as_secs_f64()
    );
    println!("new master: {}", recovered.unwrap_or_default());
    println!("new master: {}", first_offers.unwrap_or_default());
    drop(sched);
}
