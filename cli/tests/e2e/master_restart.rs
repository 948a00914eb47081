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
use proto::Resources;
use sdk::{Scheduler, SchedulerOptions};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::jobs::JobRun;
use crate::common::{certs, reserved_port, start_agent, start_master, IDLE};

const JOBS: usize = 1_000;

/// Kill the master once this many jobs have finished.
const KILL_AFTER: usize = 300;

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
    let addr = format!("127.0.0.1:{}", reserved_port());
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
    let mut run = JobRun::new("", JOBS, module, per_task);
    let mut killed_at: Option<Instant> = None;
    let mut restarted_at: Option<Instant> = None;
    let started = Instant::now();
    // A hang guard only (the test measures nothing against it).
    let deadline = started + Duration::from_secs(900);

    while !run.done() {
        let event = tokio::time::timeout_at(deadline.into(), sched.next_event())
            .await
            .unwrap_or_else(|_| {
                for log in [&log1, &log2] {
                    let text = std::fs::read_to_string(log).unwrap_or_default();
                    let tail: Vec<_> = text.lines().rev().take(20).collect();
                    eprintln!("{}: ...\n{}", log.display(), tail.join("\n"));
                }
                panic!("hang: {}", run.stuck())
            })
            .expect("the scheduler stopped");
        run.handle(&sched, event);
        if run.finished >= KILL_AFTER && killed_at.is_none() {
            // SIGKILL: nothing is flushed, closed or written on the way out.
            master.0.kill().unwrap();
            master.0.wait().unwrap();
            killed_at = Some(Instant::now());
            tokio::time::sleep(Duration::from_millis(500)).await;
            master = start_master(dir.path(), &certs, &addr, &log2);
            restarted_at = Some(Instant::now());
        }
    }
    let wall = started.elapsed();
    let never_ran = run.verify();
    let first_offer_after_restart = run
        .offer_runs
        .get(1)
        .map(|(_, at)| at.duration_since(restarted_at.unwrap()));
    let relaunched = run.relaunched;

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
