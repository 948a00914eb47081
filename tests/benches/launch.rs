//! Launch benchmark: how long a trivial WASI task takes through a real Tessera cluster, next
//! to fork/exec of a trivial native binary measured in the same run.
//!
//! Run with `cargo bench -p tessera-tests --bench launch` (release profile). Set
//! `TESSERA_BENCH_QUICK=1` for a small smoke run, and `TESSERA_BENCH_ALLOC_MS` to change the
//! master's periodic allocation interval (default 1000 ms, the `MasterConfig` default).
//!
//! 1. Latency: a warm three-agent `LocalCluster` (agents <4 cpus, 4 GiB>, loopback QUIC with
//!    mutual TLS), one scheduler, `hello` uploaded once. After a warm-up that runs `hello` on
//!    every agent (the first run compiles the module and caches it), N sequential tasks:
//!    each accepts one `hello` <0.1 cpus, 32 MiB> on the held offers of one agent (round
//!    robin) with `refuse_seconds: 0`, and is timed from just before `accept` to its
//!    `TASK_FINISHED` update. The full cycle (waiting for a usable offer + accept → finished)
//!    is timed separately.
//! 2. Baseline latency: `/bin/true` spawned and waited for, N times, sequentially.
//! 3. Throughput: M `hello` tasks, as many per accept as the offers fit, across the three
//!    agents, until M have finished; next to M fork/execs of `/bin/true`, sequential and with
//!    two in flight.

use proto::resources::MIB;
use proto::{AgentId, Filters, Offer, OfferId, Resources, TaskState};
use sdk::{Event, Scheduler, TaskBuilder};
use std::collections::{BTreeMap, HashMap};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tessera_tests::{res, LocalCluster, LocalClusterConfig};

/// How long any single wait for a scheduler event may take before the run is abandoned.
const EVENT_TIMEOUT: Duration = Duration::from_secs(60);

/// The share each `hello` runs in: <0.1 cpus, 32 MiB>.
const HELLO_RES: Resources = Resources::new(100, 32 * MIB, 0);

/// Sizes of one run.
struct Plan {
    quick: bool,
    warmup_per_agent: usize,
    latency_tasks: usize,
    throughput_tasks: usize,
    alloc_interval: Duration,
}

impl Plan {
    fn from_env() -> Self {
        let quick = std::env::var("TESSERA_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let alloc_ms = std::env::var("TESSERA_BENCH_ALLOC_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(1000);
        Plan {
            quick,
            warmup_per_agent: if quick { 2 } else { 5 },
            latency_tasks: if quick { 20 } else { 200 },
            throughput_tasks: if quick { 200 } else { 2000 },
            alloc_interval: Duration::from_millis(alloc_ms),
        }
    }
}

/// Summary of a sample of durations.
struct Stats {
    n: usize,
    p50: Duration,
    p99: Duration,
    mean: Duration,
    min: Duration,
    max: Duration,
}

impl Stats {
    fn of(samples: &[Duration]) -> Stats {
        assert!(!samples.is_empty(), "no samples");
        let mut s = samples.to_vec();
        s.sort();
        // Nearest-rank percentile.
        let pct = |p: f64| s[((p / 100.0 * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
        Stats {
            n: s.len(),
            p50: pct(50.0),
            p99: pct(99.0),
            mean: s.iter().sum::<Duration>() / s.len() as u32,
            min: s[0],
            max: s[s.len() - 1],
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

/// Offers the scheduler holds, by agent. An agent's offers are always accepted together, so
/// its fragments (leftover of an accept, resources of finished tasks) merge again.
#[derive(Default)]
struct Pool {
    by_agent: BTreeMap<AgentId, Vec<Offer>>,
    hostnames: BTreeMap<AgentId, String>,
}

impl Pool {
    fn add(&mut self, offers: Vec<Offer>) {
        for o in offers {
            self.hostnames
                .entry(o.agent_id.clone())
                .or_insert_with(|| o.hostname.clone());
            self.by_agent.entry(o.agent_id.clone()).or_default().push(o);
        }
    }

    fn rescind(&mut self, id: &OfferId) {
        for offers in self.by_agent.values_mut() {
            offers.retain(|o| o.id != *id);
        }
    }

    fn available(&self, agent: &AgentId) -> Resources {
        self.by_agent
            .get(agent)
            .map(|v| v.iter().fold(Resources::ZERO, |t, o| t + o.resources))
            .unwrap_or_default()
    }

    fn take(&mut self, agent: &AgentId) -> Vec<Offer> {
        self.by_agent.remove(agent).unwrap_or_default()
    }

    /// How many tasks of `each` fit in `r`.
    fn fit(r: Resources, each: Resources) -> usize {
        let by_cpu = r
            .cpus_milli
            .checked_div(each.cpus_milli)
            .unwrap_or(u64::MAX);
        let by_mem = r.mem.checked_div(each.mem).unwrap_or(u64::MAX);
        by_cpu.min(by_mem) as usize
    }
}

/// The scheduler plus the offers it holds.
struct Driver {
    sched: Scheduler,
    pool: Pool,
}

impl Driver {
    /// Waits for the next event; offers and rescinds go to the pool, errors abort the run,
    /// task updates are returned.
    async fn next_update(&mut self) -> anyhow::Result<Option<proto::TaskStatus>> {
        let ev = tokio::time::timeout(EVENT_TIMEOUT, self.sched.next_event())
            .await
            .map_err(|_| anyhow::anyhow!("no scheduler event within {EVENT_TIMEOUT:?}"))?
            .ok_or_else(|| anyhow::anyhow!("the scheduler closed"))?;
        Ok(self.on_event(ev)?)
    }

    /// An event that is already queued, if any.
    async fn try_next(&mut self) -> anyhow::Result<Option<Option<proto::TaskStatus>>> {
        // `timeout` polls the inner future before looking at the (already past) deadline.
        match tokio::time::timeout(Duration::ZERO, self.sched.next_event()).await {
            Ok(Some(ev)) => Ok(Some(self.on_event(ev)?)),
            Ok(None) => anyhow::bail!("the scheduler closed"),
            Err(_) => Ok(None),
        }
    }

    fn on_event(&mut self, ev: Event) -> anyhow::Result<Option<proto::TaskStatus>> {
        match ev {
            Event::Offers(offers) => self.pool.add(offers),
            Event::Rescind(id) => self.pool.rescind(&id),
            Event::Update(status) => return Ok(Some(status)),
            Event::Error(e) => anyhow::bail!("master reported an error: {e}"),
            Event::Disconnected(why) => anyhow::bail!("scheduler disconnected: {why}"),
            Event::Subscribed { .. } => {}
        }
        Ok(None)
    }

    /// Accepts all held offers of `agent` with `tasks`, leftover not filtered.
    fn accept(&mut self, agent: &AgentId, tasks: Vec<proto::TaskInfo>) -> anyhow::Result<()> {
        let ids = self.pool.take(agent).into_iter().map(|o| o.id).collect();
        self.sched.accept(
            ids,
            tasks,
            Filters {
                refuse_seconds: 0.0,
            },
        )?;
        Ok(())
    }

    /// Waits until offers from `n` agents are held; returns their ids sorted by hostname.
    async fn wait_agents(&mut self, n: usize) -> anyhow::Result<Vec<AgentId>> {
        while self.pool.by_agent.len() < n {
            self.next_update().await?;
        }
        let mut ids: Vec<AgentId> = self.pool.by_agent.keys().cloned().collect();
        ids.sort_by_key(|a| self.pool.hostnames[a].clone());
        Ok(ids)
    }
}

/// Per-task timings of the sequential latency run.
struct Sequential {
    accept_to_running: Vec<Duration>,
    accept_to_finished: Vec<Duration>,
    offer_wait: Vec<Duration>,
    cycle: Vec<Duration>,
}

/// Runs `count` `hello` tasks one at a time, round robin over `agents`.
async fn sequential(
    d: &mut Driver,
    module: proto::Digest,
    agents: &[AgentId],
    prefix: &str,
    count: usize,
) -> anyhow::Result<Sequential> {
    let mut out = Sequential {
        accept_to_running: Vec::with_capacity(count),
        accept_to_finished: Vec::with_capacity(count),
        offer_wait: Vec::with_capacity(count),
        cycle: Vec::with_capacity(count),
    };
    for i in 0..count {
        let agent = &agents[i % agents.len()];
        let start = Instant::now();
        while !d.pool.available(agent).contains(&HELLO_RES) {
            d.next_update().await?;
        }
        let offer_wait = start.elapsed();
        let id = format!("{prefix}-{i}");
        let task = TaskBuilder::new(&id, module)
            .resources(HELLO_RES)
            .build(&d.pool.by_agent[agent][0]);
        let t0 = Instant::now();
        d.accept(agent, vec![task])?;
        let mut running = None;
        loop {
            let Some(s) = d.next_update().await? else {
                continue;
            };
            if s.task_id.as_str() != id {
                continue;
            }
            match s.state {
                TaskState::Running => running = Some(t0.elapsed()),
                TaskState::Finished => break,
                st if st.is_terminal() => {
                    anyhow::bail!("task {id} ended {st:?}: {} {}", s.message, s.stderr_tail)
                }
                _ => {}
            }
        }
        let done = t0.elapsed();
        out.accept_to_finished.push(done);
        out.accept_to_running.push(running.unwrap_or(done));
        out.offer_wait.push(offer_wait);
        out.cycle.push(start.elapsed());
    }
    Ok(out)
}

/// Result of the throughput run.
struct Throughput {
    wall: Duration,
    accepts: usize,
    max_in_flight: usize,
    per_task: Vec<Duration>,
}

/// Runs `total` `hello` tasks, as many at once as the offers fit.
async fn throughput(
    d: &mut Driver,
    module: proto::Digest,
    total: usize,
) -> anyhow::Result<Throughput> {
    let mut launched_at: HashMap<String, Instant> = HashMap::with_capacity(total);
    let mut per_task = Vec::with_capacity(total);
    let (mut launched, mut finished, mut accepts, mut max_in_flight) = (0usize, 0usize, 0, 0);
    let start = Instant::now();
    while finished < total {
        // Launch whatever fits on every agent whose held offers fit at least one task.
        let agents: Vec<AgentId> = d.pool.by_agent.keys().cloned().collect();
        for agent in agents {
            let k = Pool::fit(d.pool.available(&agent), HELLO_RES).min(total - launched);
            if k == 0 {
                continue;
            }
            let offer = d.pool.by_agent[&agent][0].clone();
            let now = Instant::now();
            let tasks = (launched..launched + k)
                .map(|i| {
                    let id = format!("tp-{i}");
                    launched_at.insert(id.clone(), now);
                    TaskBuilder::new(&id, module)
                        .resources(HELLO_RES)
                        .build(&offer)
                })
                .collect();
            d.accept(&agent, tasks)?;
            launched += k;
            accepts += 1;
        }
        max_in_flight = max_in_flight.max(launched - finished);
        // Handle one event, then everything already queued, before launching again.
        let mut updates = vec![d.next_update().await?];
        while let Some(u) = d.try_next().await? {
            updates.push(u);
        }
        for s in updates.into_iter().flatten() {
            if !s.state.is_terminal() {
                continue;
            }
            if s.state != TaskState::Finished {
                anyhow::bail!(
                    "task {} ended {:?}: {} {}",
                    s.task_id.as_str(),
                    s.state,
                    s.message,
                    s.stderr_tail
                );
            }
            if let Some(t) = launched_at.remove(s.task_id.as_str()) {
                per_task.push(t.elapsed());
                finished += 1;
            }
        }
    }
    Ok(Throughput {
        wall: start.elapsed(),
        accepts,
        max_in_flight,
        per_task,
    })
}

/// Spawns `/bin/true` and waits for it.
fn fork_exec() -> Duration {
    let t0 = Instant::now();
    let status = Command::new("/bin/true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("spawn /bin/true");
    assert!(status.success(), "/bin/true failed: {status}");
    t0.elapsed()
}

/// `total` fork/execs of `/bin/true` spread over `threads` threads; returns the wall time.
fn fork_exec_parallel(total: usize, threads: usize) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let n = total / threads + usize::from(t < total % threads);
            s.spawn(move || {
                for _ in 0..n {
                    fork_exec();
                }
            });
        }
    });
    start.elapsed()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn row(name: &str, s: &Stats) {
    println!(
        "  {name:<44} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}",
        s.n,
        ms(s.p50),
        ms(s.p99),
        ms(s.mean),
        ms(s.min),
        ms(s.max)
    );
}

fn header() {
    println!(
        "  {:<44} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "latency (ms)", "n", "p50", "p99", "mean", "min", "max"
    );
}

fn main() -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let plan = Plan::from_env();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load_start = loadavg();
    let bench_start = Instant::now();

    // Baselines first, with no cluster running in this process.
    for _ in 0..20 {
        fork_exec();
    }
    let base_lat: Vec<Duration> = (0..plan.latency_tasks).map(|_| fork_exec()).collect();
    let base_seq = fork_exec_parallel(plan.throughput_tasks, 1);
    let base_par = fork_exec_parallel(plan.throughput_tasks, 2);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()?;
    let (seq, tp, warmup) = rt.block_on(async {
        let dir = tempfile::tempdir()?;
        let mut cfg = LocalClusterConfig::default();
        cfg.master.allocation_interval = plan.alloc_interval;
        let mut cluster = LocalCluster::start(cfg, dir.path()).await?;
        for i in 1..=3 {
            cluster.add_agent(&format!("agent{i}"), res(4.0, 4.0))?;
        }
        let sched = Scheduler::connect(cluster.scheduler_options("bench", "*")?).await?;
        let module = sched.upload_module(wasm_examples::HELLO).await?;
        let mut d = Driver {
            sched,
            pool: Pool::default(),
        };
        let agents = d.wait_agents(3).await?;
        // Warm-up: the first run on each agent fetches and compiles the module.
        let warmup = sequential(
            &mut d,
            module,
            &agents,
            "warm",
            plan.warmup_per_agent * agents.len(),
        )
        .await?;
        let seq = sequential(&mut d, module, &agents, "lat", plan.latency_tasks).await?;
        let tp = throughput(&mut d, module, plan.throughput_tasks).await?;
        drop(d);
        cluster.shutdown().await;
        anyhow::Ok((seq, tp, warmup))
    })?;
    drop(rt);
    let load_end = loadavg();

    let lat = Stats::of(&seq.accept_to_finished);
    let base = Stats::of(&base_lat);
    println!();
    println!(
        "Tessera launch benchmark{}",
        if plan.quick { " (QUICK smoke run)" } else { "" }
    );
    println!(
        "  machine: {cores} cores, {}; load average (1/5/15 min) {load_start} at start, \
         {load_end} at end",
        cpu_model()
    );
    println!(
        "  cluster: master + 3 agents <4 cpus, 4 GiB> in-process, loopback QUIC + mTLS; \
         hello <0.1 cpus, 32 MiB>; allocation_interval {} ms; refuse_seconds 0",
        plan.alloc_interval.as_millis()
    );
    println!(
        "  tokio worker threads: {cores}; total bench time {:.1} s",
        bench_start.elapsed().as_secs_f64()
    );
    println!();
    header();
    row(
        "tessera warm-up: first hello on each agent",
        &Stats::of(&warmup.accept_to_finished[..3]),
    );
    row(
        "tessera hello: accept -> TASK_RUNNING",
        &Stats::of(&seq.accept_to_running),
    );
    row("tessera hello: accept -> TASK_FINISHED", &lat);
    row(
        "tessera hello: waiting for a usable offer",
        &Stats::of(&seq.offer_wait),
    );
    row(
        "tessera hello: full cycle (offer wait + above)",
        &Stats::of(&seq.cycle),
    );
    row("baseline: spawn+wait /bin/true", &base);
    row(
        "tessera hello under load (throughput run)",
        &Stats::of(&tp.per_task),
    );
    println!();
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "  ratio tessera (accept -> FINISHED) / baseline: p50 {:.1}x, p99 {:.1}x, mean {:.1}x",
        ratio(lat.p50, base.p50),
        ratio(lat.p99, base.p99),
        ratio(lat.mean, base.mean)
    );
    println!();
    let per_s = |n: usize, d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "  {:<44} {:>6} {:>9} {:>9}",
        "throughput", "tasks", "wall s", "tasks/s"
    );
    let tp_rate = per_s(plan.throughput_tasks, tp.wall);
    for (name, wall) in [
        ("tessera hello, 3 agents, offers packed", tp.wall),
        ("baseline /bin/true, sequential", base_seq),
        ("baseline /bin/true, 2 in flight", base_par),
    ] {
        println!(
            "  {name:<44} {:>6} {:>9.2} {:>9.1}",
            plan.throughput_tasks,
            wall.as_secs_f64(),
            per_s(plan.throughput_tasks, wall)
        );
    }
    println!(
        "  tessera throughput: {} accepts, up to {} tasks in flight; \
         tessera/baseline(2 in flight) = {:.3}x, tessera/baseline(sequential) = {:.3}x",
        tp.accepts,
        tp.max_in_flight,
        tp_rate / per_s(plan.throughput_tasks, base_par),
        tp_rate / per_s(plan.throughput_tasks, base_seq)
    );
    Ok(())
}
