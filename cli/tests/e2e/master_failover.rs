//! Masters on etcd, as real processes: `tessera master --etcd` (three or two of them, one
//! private etcd), `tessera agent --master a,b,c`, and schedulers (the SDK, given every master)
//! in this process.
//!
//! - The leader killed with SIGKILL during 1,000 jobs of two frameworks on three agents: a
//!   standby takes over; every job runs exactly once and ends FINISHED with its own output;
//!   every update is seen once; both frameworks keep their ids.
//! - A paused leader (SIGSTOP past its lease, then SIGCONT) does not act as leader again: it
//!   logs that it stepped down, and no offer of its term reaches a framework after it resumes.
//! - etcd restarted under a running cluster: a short outage within the lease is ridden out (the
//!   leader keeps its term, or steps down if etcd took longer to come back than its lease);
//!   a long one makes the leader step down; either way a leader is elected once etcd is back
//!   and the run completes with nothing lost.
//!
//! `failover_10_runs` (ignored; run by hand for BENCHMARKS.md) measures the failover time: the
//! kill of the leader to the first offer of the new leader at a framework, ten times.

use proto::resources::MIB;
use proto::Resources;
use sdk::{Event, Scheduler, SchedulerOptions};
use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tessera_etcd::testing::EtcdServer;

use crate::common::jobs::JobRun;
use crate::common::{certs, reserved_port, start_agent_timed, tessera, Reaper};

/// The leader's lease (`$TESSERA_FAILOVER_LEASE` overrides it, e.g. to measure the default
/// 3 s).
const LEASE_TTL: &str = "2s";

/// [`LEASE_TTL`] unless overridden.
fn lease_ttl() -> String {
    std::env::var("TESSERA_FAILOVER_LEASE").unwrap_or_else(|_| LEASE_TTL.to_owned())
}
/// QUIC timers of every peer: a dead leader is noticed within the lease.
const IDLE: &str = "2s";
/// See [`IDLE`].
const KEEP_ALIVE: &str = "500ms";

/// Each job's share: at most 64 at once per agent (by memory).
fn per_task() -> Resources {
    Resources::new(10, 8 * MIB, 4 * MIB)
}

/// A master process of the group.
struct HaMaster {
    addr: String,
    log: PathBuf,
    proc: Option<Reaper>,
    restarts: usize,
}

/// Masters, agents and a private etcd in a temporary directory. Fields drop in order: the
/// processes first, the directory last. (The other way round, its removal failed under the
/// live processes and left the agents' runtime processes, which outlive a killed agent on
/// purpose, waiting out their 15-minute recovery timeout; with their directory gone they exit
/// within a second.)
struct Group {
    masters: Vec<HaMaster>,
    _agents: Vec<Reaper>,
    etcd: EtcdServer,
    certs: PathBuf,
    dir: tempfile::TempDir,
}

impl Group {
    /// `masters` masters and `agents` agents (`w1`..) of 4 cpus; frameworks `frameworks`
    /// (call after `require_etcd!()`).
    async fn start(masters: usize, agents: usize, frameworks: &[&str]) -> Self {
        let etcd = EtcdServer::start().await.expect("private etcd");
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (1..=agents).map(|i| format!("w{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let certs = certs(dir.path(), &refs, frameworks);
        let mut group = Self {
            masters: (0..masters)
                .map(|_| HaMaster {
                    addr: format!("127.0.0.1:{}", reserved_port()),
                    log: PathBuf::new(),
                    proc: None,
                    restarts: 0,
                })
                .collect(),
            _agents: Vec::new(),
            etcd,
            certs,
            dir,
        };
        for i in 0..masters {
            group.start_master(i);
        }
        group.leader(Duration::from_secs(30));
        let list = group.master_list();
        group._agents = names
            .iter()
            .map(|n| {
                start_agent_timed(
                    group.dir.path(),
                    &group.certs,
                    &list,
                    n,
                    "4",
                    IDLE,
                    KEEP_ALIVE,
                )
            })
            .collect();
        group
    }

    /// `a,b,c`: every master's address.
    fn master_list(&self) -> String {
        let addrs: Vec<&str> = self.masters.iter().map(|m| m.addr.as_str()).collect();
        addrs.join(",")
    }

    /// (Re)starts master `i` on its address and work directory, logging to a new file.
    fn start_master(&mut self, i: usize) {
        let dir = self.dir.path();
        let m = &mut self.masters[i];
        m.restarts += 1;
        m.log = dir.join(format!("master-{i}-{}.log", m.restarts));
        m.proc = Some(Reaper(
            tessera()
                .args(["master", "--listen", &m.addr, "--advertise", &m.addr])
                .args(["--etcd", &self.etcd.endpoints().join(",")])
                .args(["--lease-ttl", &lease_ttl()])
                .arg("--work-dir")
                .arg(dir.join(format!("master-{i}")))
                .args(["--allocation-interval", "100ms"])
                .args(["--quic-idle-timeout", IDLE, "--quic-keep-alive", KEEP_ALIVE])
                .arg("--ca")
                .arg(self.certs.join("ca.pem"))
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&m.log).unwrap())
                .spawn()
                .unwrap(),
        ));
    }

    /// The master that leads now: the live one whose latest HA line says it was elected.
    fn current_leader(&self) -> Option<usize> {
        self.masters.iter().position(|m| {
            m.proc.is_some()
                && std::fs::read_to_string(&m.log)
                    .unwrap_or_default()
                    .lines()
                    .rev()
                    .find(|l| l.contains("elected leader") || l.contains("stepped down"))
                    .is_some_and(|l| l.contains("elected leader"))
        })
    }

    /// Waits for a leader.
    fn leader(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            if let Some(i) = self.current_leader() {
                return i;
            }
            assert!(
                Instant::now() < deadline,
                "no master was elected: {}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL of master `i`.
    fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.masters[i].proc.take() {
            p.0.kill().unwrap();
            p.0.wait().unwrap();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`) to master `i`.
    fn signal(&self, i: usize, signal: &str) {
        let pid = self.masters[i].proc.as_ref().unwrap().0.id();
        let ok = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} {pid}");
    }

    /// A scheduler for framework `name` given every master.
    async fn scheduler(&self, name: &str) -> Scheduler {
        let tls = net::tls::PeerTls::from_files(
            &self.certs.join("ca.pem"),
            &self.certs.join(format!("{name}.pem")),
            &self.certs.join(format!("{name}-key.pem")),
        )
        .unwrap();
        let masters = net::masters::MasterSet::parse(&self.master_list()).unwrap();
        let mut opts = SchedulerOptions::for_masters(masters, tls, name, "*");
        opts.max_backoff = Duration::from_millis(500);
        opts.tuning.idle_timeout = humantime::parse_duration(IDLE).unwrap();
        opts.tuning.keep_alive = humantime::parse_duration(KEEP_ALIVE).unwrap();
        Scheduler::connect(opts).await.expect("subscribed")
    }

    /// The tail of every master's log (for a failure report).
    fn logs(&self) -> String {
        let mut out = String::new();
        for m in &self.masters {
            let text = std::fs::read_to_string(&m.log).unwrap_or_default();
            let tail: Vec<_> = text.lines().rev().take(15).collect();
            out += &format!(
                "\n{}: ...\n{}",
                m.log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        out
    }

    /// Lines of master `i`'s current log containing `needle`.
    fn log_lines(&self, i: usize, needle: &str) -> Vec<String> {
        std::fs::read_to_string(&self.masters[i].log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

/// The next event of whichever scheduler has one first, with its index (`None` past
/// `deadline`).
async fn next_of(scheds: &mut [Scheduler], deadline: Instant) -> Option<(usize, Event)> {
    let mut futs: Vec<_> = scheds
        .iter_mut()
        .map(|s| Box::pin(s.next_event()))
        .collect();
    let first = std::future::poll_fn(move |cx| {
        for (i, f) in futs.iter_mut().enumerate() {
            if let std::task::Poll::Ready(ev) = f.as_mut().poll(cx) {
                return std::task::Poll::Ready((i, ev));
            }
        }
        std::task::Poll::Pending
    });
    let (i, ev) = tokio::time::timeout_at(deadline.into(), first).await.ok()?;
    Some((i, ev.expect("a scheduler stopped")))
}

/// Uploads the `hello` guest for a run of `n` jobs named with `prefix`.
async fn job_run(sched: &Scheduler, prefix: &str, n: usize) -> JobRun {
    let module = sched
        .upload_module(wasm_examples::HELLO)
        .await
        .expect("uploaded");
    JobRun::new(prefix, n, module, per_task())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_leader_during_1000_tasks_of_two_frameworks() {
    const JOBS: usize = 500; // per framework
    const KILL_AFTER: usize = 300; // jobs finished, both frameworks together
    tessera_etcd::require_etcd!();
    let mut group = Group::start(3, 3, &["alpha", "beta"]).await;
    let mut scheds = vec![
        group.scheduler("alpha").await,
        group.scheduler("beta").await,
    ];
    let mut runs = vec![
        job_run(&scheds[0], "a", JOBS).await,
        job_run(&scheds[1], "b", JOBS).await,
    ];
    // Let the standbys mirror the module before the leader dies (a mirror lags up to 0.5 s).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    let mut killed: Option<(usize, Instant)> = None;
    while !runs.iter().all(JobRun::done) {
        let Some((i, event)) = next_of(&mut scheds, deadline).await else {
            panic!(
                "hang: {} / {}{}",
                runs[0].stuck(),
                runs[1].stuck(),
                group.logs()
            );
        };
        runs[i].handle(&scheds[i], event);
        let finished: usize = runs.iter().map(|r| r.finished).sum();
        if finished >= KILL_AFTER && killed.is_none() {
            let leader = group.leader(Duration::from_secs(10));
            group.kill(leader);
            killed = Some((leader, Instant::now()));
            println!("killed the leader, master {leader}, after {finished} jobs");
        }
    }
    let wall = started.elapsed();
    let (dead, killed_at) = killed.unwrap();
    let mut never_ran = 0;
    for run in &runs {
        never_ran += run.verify();
        assert!(
            run.subscriptions.len() >= 2,
            "re-subscribed to the new leader"
        );
    }
    let new_leader = group.leader(Duration::from_secs(1));
    assert_ne!(new_leader, dead);
    let failover = runs
        .iter()
        .filter_map(|r| r.offer_runs.iter().find(|(_, at)| *at > killed_at))
        .map(|(_, at)| at.duration_since(killed_at))
        .min()
        .expect("offers from the new leader");
    println!(
        "{} jobs of 2 frameworks in {:.1} s on 3 agents; leader killed after {KILL_AFTER}; \
         {} launches the old leader never recorded were retried ({never_ran} attempts never \
         ran); kill -> first offer of the new leader {:.2} s (lease {LEASE_TTL}, QUIC idle \
         {IDLE})",
        2 * JOBS,
        wall.as_secs_f64(),
        runs.iter().map(|r| r.relaunched).sum::<usize>(),
        failover.as_secs_f64()
    );
    for l in group.log_lines(new_leader, "elected leader") {
        println!("new leader: {l}");
    }
    for l in group.log_lines(new_leader, "first offers served") {
        println!("new leader: {l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_does_not_lead_again_when_it_resumes() {
    const JOBS: usize = 200;
    tessera_etcd::require_etcd!();
    let group = Group::start(2, 1, &["alpha"]).await;
    let mut scheds = vec![group.scheduler("alpha").await];
    let mut run = job_run(&scheds[0], "a", JOBS).await;
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut paused: Option<(usize, Instant)> = None;
    let mut resumed: Option<Instant> = None;
    let mut old_run: Option<String> = None;
    let mut late_offers = Vec::new();
    while !run.done() || resumed.is_none_or(|t| t.elapsed() < Duration::from_secs(3)) {
        let Some((_, event)) = next_of(&mut scheds, deadline).await else {
            panic!("hang: {}{}", run.stuck(), group.logs());
        };
        if let (Some(at), Some(old), Event::Offers(offers)) = (resumed, &old_run, &event) {
            for o in offers {
                if o.id.0.starts_with(&format!("{old}-")) {
                    late_offers.push((o.id.clone(), at.elapsed()));
                }
            }
        }
        run.handle(&scheds[0], event);
        if run.finished >= 50 && paused.is_none() {
            let leader = group.leader(Duration::from_secs(10));
            old_run = run.offer_runs.last().map(|(r, _)| r.clone());
            group.signal(leader, "STOP");
            paused = Some((leader, Instant::now()));
            println!("paused the leader, master {leader}");
        }
        if let Some((leader, at)) = paused {
            // Resumed once a new leader's offers came, and at least two leases later (the
            // jobs may all be done by then: the framework keeps declining offers meanwhile).
            let new_offers = run.offer_runs.iter().any(|(_, t)| *t > at);
            if resumed.is_none() && new_offers && at.elapsed() > Duration::from_secs(4) {
                group.signal(leader, "CONT");
                resumed = Some(Instant::now());
                println!(
                    "resumed master {leader} after {:.1} s",
                    at.elapsed().as_secs_f64()
                );
            }
        }
    }
    run.verify();
    let (old, _) = paused.unwrap();
    assert!(
        late_offers.is_empty(),
        "offers of the paused leader's term after it resumed: {late_offers:?}"
    );
    let stepped = group.log_lines(old, "stepped down");
    assert!(
        !stepped.is_empty(),
        "the paused leader did not step down:{}",
        group.logs()
    );
    println!("paused leader: {}", stepped[0]);
    let now_leads = group.leader(Duration::from_secs(5));
    assert_ne!(now_leads, old, "the paused leader leads again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restarted_under_a_running_cluster() {
    const JOBS: usize = 300;
    tessera_etcd::require_etcd!();
    let mut group = Group::start(2, 1, &["alpha"]).await;
    let mut scheds = vec![group.scheduler("alpha").await];
    let mut run = job_run(&scheds[0], "a", JOBS).await;
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut short_done = false;
    let mut long_done = false;
    while !run.done() {
        let Some((_, event)) = next_of(&mut scheds, deadline).await else {
            panic!("hang: {}{}", run.stuck(), group.logs());
        };
        run.handle(&scheds[0], event);
        if run.finished >= 50 && !short_done {
            short_done = true;
            let leader = group.leader(Duration::from_secs(10));
            let before = group.log_lines(leader, "stepped down").len();
            let t = Instant::now();
            group.etcd.kill();
            tokio::time::sleep(Duration::from_millis(500)).await;
            group.etcd.restart().await.expect("etcd back");
            let stepped = group.log_lines(leader, "stepped down").len() > before;
            println!(
                "etcd down and back in {:.2} s: the leader {}",
                t.elapsed().as_secs_f64(),
                if stepped {
                    "stepped down"
                } else {
                    "kept its term"
                }
            );
        }
        if run.finished >= 150 && !long_done {
            long_done = true;
            let leader = group.leader(Duration::from_secs(30));
            group.etcd.kill();
            tokio::time::sleep(Duration::from_secs(5)).await;
            let stepped = group.log_lines(leader, "stepped down");
            assert!(
                !stepped.is_empty(),
                "the leader kept leading without etcd for 5 s (lease {LEASE_TTL}):{}",
                group.logs()
            );
            group.etcd.restart().await.expect("etcd back");
            let again = group.leader(Duration::from_secs(30));
            println!("etcd down 5 s: master {leader} stepped down; master {again} elected after etcd came back");
        }
    }
    run.verify();
}

/// Kill of the leader to the first offer of its successor, ten times; the killed master is
/// restarted as a standby each time. The framework runs 100 short jobs first, then declines
/// what it is offered: on a full agent the first offer would wait for a task to end, which
/// measures the workload rather than the failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by hand for BENCHMARKS.md"]
async fn failover_10_runs() {
    tessera_etcd::require_etcd!();
    let mut group = Group::start(3, 1, &["alpha"]).await;
    let mut scheds = vec![group.scheduler("alpha").await];
    let mut run = job_run(&scheds[0], "a", 100).await;
    let mut times = Vec::new();
    for round in 0..10 {
        // Handle events for a while first: every run whose offers came before the kill is then
        // known, and the first offer of a run not known yet is the successor's.
        let until = Instant::now() + Duration::from_secs(3);
        while let Some((_, event)) = next_of(&mut scheds, until).await {
            run.handle(&scheds[0], event);
        }
        let leader = group.leader(Duration::from_secs(30));
        let runs_before = run.offer_runs.len();
        group.kill(leader);
        let killed_at = Instant::now();
        let deadline = killed_at + Duration::from_secs(60);
        while run.offer_runs.len() == runs_before {
            let (_, event) = next_of(&mut scheds, deadline).await.expect("no new leader");
            run.handle(&scheds[0], event);
        }
        let t = run.offer_runs.last().unwrap().1.duration_since(killed_at);
        println!(
            "round {round}: killed master {leader}; first offer of the new leader after {:.2} s",
            t.as_secs_f64()
        );
        times.push(t);
        group.start_master(leader);
    }
    times.sort();
    println!(
        "failover over {} runs (lease {}, QUIC idle {IDLE}): p50 {:.2} s, max {:.2} s",
        times.len(),
        lease_ttl(),
        times[times.len() / 2].as_secs_f64(),
        times.last().unwrap().as_secs_f64()
    );
}
