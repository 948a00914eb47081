//! Launch benchmark: how long a trivial WASI task takes through a real Tessera cluster, next
//! to fork/exec of a trivial native binary measured in the same run.
//!
//! Run with `cargo bench -p tessera-tests --bench launch` (release profile). Environment:
//! - `TESSERA_BENCH_QUICK=1`: a small smoke run (a second or two);
//! - `TESSERA_BENCH_ROUNDS`: throughput rounds (default 5, quick 1);
//! - `TESSERA_BENCH_ALLOC_MS`: the master's periodic allocation interval (default 1000 ms, the
//!   `MasterConfig` default; allocation also runs right after every accept and task end);
//! - `TESSERA_BENCH_DIR`: where the cluster's work directories go (default: the system temp
//!   dir). Each task creates a task directory, a sandbox and two output files; on ext4 that
//!   inode allocation slows down sharply for a few minutes after many files were deleted
//!   (ext4 skips recently deleted inodes), e.g. right after a previous run cleaned up. A tmpfs
//!   (`/dev/shm`) takes the file system out of the picture.
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
    rounds: usize,
    alloc_interval: Duration,
    dir: Option<std::path::PathBuf>,
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
            latency_tasks: if quick { 20 } else { 1000 },
            throughput_tasks: if quick { 200 } else { 2000 },
            rounds: std::env::var("TESSERA_BENCH_ROUNDS")
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|&r| r > 0)
                .unwrap_or(if quick { 1 } else { 5 }),
            alloc_interval: Duration::from_millis(alloc_ms),
            dir: std::env::var_os("TESSERA_BENCH_DIR").map(Into::into),
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
        self.on_event(ev)
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
            Event::Subscribed { .. } | Event::Message { .. } | Event::ExecutorExited { .. } => {}
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
                TaskState::Finished => {
                    anyhow::ensure!(
                        s.stdout_tail.contains("Hello from Tessera!"),
                        "task {id} finished without its greeting: {:?}",
                        s.stdout_tail
                    );
                    break;
                }
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
    prefix: &str,
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
                    let id = format!("{prefix}-{i}");
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
            anyhow::ensure!(
                s.stdout_tail.contains("Hello from Tessera!"),
                "task {} finished without its greeting: {:?}",
                s.task_id.as_str(),
                s.stdout_tail
            );
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

/// CPU time (user + system) used so far by this process and by its waited-for children, in
/// clock ticks of `/proc/self/stat` (100 Hz on Linux).
#[derive(Clone, Copy)]
struct Cpu {
    own: u64,
    children: u64,
}

/// Clock ticks per second of `/proc/self/stat` (`getconf CLK_TCK`; 100 on every mainstream
/// Linux).
const CLK_TCK: f64 = 100.0;

impl Cpu {
    fn now() -> Cpu {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // Fields after the parenthesised command name start at field 3 (state).
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        let field = |n: usize| f.get(n - 3).copied().unwrap_or(0);
        Cpu {
            own: field(14) + field(15),
            children: field(16) + field(17),
        }
    }

    /// Milliseconds of CPU (this process plus children) since `self`.
    fn ms_since(self) -> f64 {
        let now = Cpu::now();
        ((now.own - self.own) + (now.children - self.children)) as f64 * 1e3 / CLK_TCK
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".into())
}

/// The file system type `path` is on (longest mount point prefix in `/proc/mounts`).
fn fs_type(path: &std::path::Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, mount, fstype) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(mount)
                .then(|| (mount.len(), fstype.to_owned()))
        })
        .max()
        .map_or_else(|| "unknown".into(), |(_, t)| t)
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

/// Everything one run measured.
struct Results {
    warmup: Sequential,
    seq: Sequential,
    base_lat: Vec<Duration>,
    /// CPU milliseconds of the sequential Tessera run and of the baseline latency run.
    seq_cpu: f64,
    base_lat_cpu: f64,
    rounds: Vec<Round>,
    /// Cluster shutdown and removal of the work directories.
    cleanup: Duration,
}

/// One throughput round: wall time and CPU milliseconds of each contestant.
struct Round {
    tp: Throughput,
    tp_cpu: f64,
    base_seq: Duration,
    base_seq_cpu: f64,
    base_par: Duration,
    base_par_cpu: f64,
}

async fn run(plan: &Plan) -> anyhow::Result<Results> {
    let dir = match &plan.dir {
        Some(root) => tempfile::tempdir_in(root)?,
        None => tempfile::tempdir()?,
    };
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
    // Baselines run on this (the main) thread while the idle cluster waits on the runtime's
    // workers, right before the Tessera runs they are compared with.
    for _ in 0..20 {
        fork_exec();
    }
    let cpu = Cpu::now();
    let base_lat: Vec<Duration> = (0..plan.latency_tasks).map(|_| fork_exec()).collect();
    let base_lat_cpu = cpu.ms_since();
    let cpu = Cpu::now();
    let seq = sequential(&mut d, module, &agents, "lat", plan.latency_tasks).await?;
    let seq_cpu = cpu.ms_since();
    let mut rounds = Vec::with_capacity(plan.rounds);
    for r in 0..plan.rounds {
        let cpu = Cpu::now();
        let base_seq = fork_exec_parallel(plan.throughput_tasks, 1);
        let base_seq_cpu = cpu.ms_since();
        let cpu = Cpu::now();
        let base_par = fork_exec_parallel(plan.throughput_tasks, 2);
        let base_par_cpu = cpu.ms_since();
        let cpu = Cpu::now();
        let tp = throughput(&mut d, module, &format!("tp{r}"), plan.throughput_tasks).await?;
        let tp_cpu = cpu.ms_since();
        rounds.push(Round {
            tp,
            tp_cpu,
            base_seq,
            base_seq_cpu,
            base_par,
            base_par_cpu,
        });
    }
    let cleanup_start = Instant::now();
    drop(d);
    cluster.shutdown().await;
    // Removing every task's directory (about 4 inodes per task) can take a while on a busy
    // disk; done here so it is timed.
    dir.close()?;
    Ok(Results {
        warmup,
        seq,
        base_lat,
        seq_cpu,
        base_lat_cpu,
        rounds,
        cleanup: cleanup_start.elapsed(),
    })
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()?;
    let res = rt.block_on(run(&plan))?;
    drop(rt);
    let load_end = loadavg();

    let lat = Stats::of(&res.seq.accept_to_finished);
    let base = Stats::of(&res.base_lat);
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
    let root = plan.dir.clone().unwrap_or_else(std::env::temp_dir);
    println!("  work dirs under: {} ({})", root.display(), fs_type(&root));
    println!(
        "  tokio worker threads: {cores}; total bench time {:.1} s, of which shutdown and \
         work dir removal {:.1} s",
        bench_start.elapsed().as_secs_f64(),
        res.cleanup.as_secs_f64()
    );
    println!();
    header();
    row(
        "tessera warm-up: first hello on each agent",
        &Stats::of(&res.warmup.accept_to_finished[..3]),
    );
    row(
        "tessera hello: accept -> TASK_RUNNING",
        &Stats::of(&res.seq.accept_to_running),
    );
    row("tessera hello: accept -> TASK_FINISHED", &lat);
    row(
        "tessera hello: waiting for a usable offer",
        &Stats::of(&res.seq.offer_wait),
    );
    row(
        "tessera hello: full cycle (offer wait + run)",
        &Stats::of(&res.seq.cycle),
    );
    row("baseline: spawn+wait /bin/true", &base);
    let under_load: Vec<Duration> = res
        .rounds
        .iter()
        .flat_map(|r| r.tp.per_task.iter().copied())
        .collect();
    row(
        "tessera hello in throughput runs (queued)",
        &Stats::of(&under_load),
    );
    println!();
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "  ratio tessera (accept -> FINISHED) / baseline: p50 {:.2}x, p99 {:.2}x, mean {:.2}x",
        ratio(lat.p50, base.p50),
        ratio(lat.p99, base.p99),
        ratio(lat.mean, base.mean)
    );
    let n_lat = plan.latency_tasks as f64;
    println!(
        "  CPU time per task, sequential runs (whole process, ms): tessera {:.3}, \
         /bin/true {:.3}",
        res.seq_cpu / n_lat,
        res.base_lat_cpu / n_lat
    );
    println!();
    let n = plan.throughput_tasks;
    let per_s = |d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "  {:<24} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>9}",
        format!("throughput x{n} tasks"),
        "tessera/s",
        "true seq/s",
        "true x2/s",
        "cpu ms/t",
        "seq ms/t",
        "x2 ms/t",
        "accepts",
        "in flight"
    );
    let per_task = |cpu: f64| cpu / n as f64;
    for (i, r) in res.rounds.iter().enumerate() {
        println!(
            "  {:<24} {:>10.1} {:>10.1} {:>10.1} {:>8.3} {:>8.3} {:>8.3} {:>8} {:>9}",
            format!("round {}", i + 1),
            per_s(r.tp.wall),
            per_s(r.base_seq),
            per_s(r.base_par),
            per_task(r.tp_cpu),
            per_task(r.base_seq_cpu),
            per_task(r.base_par_cpu),
            r.tp.accepts,
            r.tp.max_in_flight
        );
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let med = |f: &dyn Fn(&Round) -> f64| median(res.rounds.iter().map(f).collect());
    let tp_med = med(&|r| per_s(r.tp.wall));
    let seq_med = med(&|r| per_s(r.base_seq));
    let par_med = med(&|r| per_s(r.base_par));
    println!(
        "  {:<24} {tp_med:>10.1} {seq_med:>10.1} {par_med:>10.1} {:>8.3} {:>8.3} {:>8.3}",
        "median",
        med(&|r| per_task(r.tp_cpu)),
        med(&|r| per_task(r.base_seq_cpu)),
        med(&|r| per_task(r.base_par_cpu)),
    );
    println!(
        "  {:<24} {:>10.3} {:>10.3} {:>10.3}",
        "median wall s per round",
        n as f64 / tp_med,
        n as f64 / seq_med,
        n as f64 / par_med
    );
    println!(
        "  ratio tessera/baseline tasks/s (medians): vs sequential {:.2}x, vs 2 in flight {:.2}x",
        tp_med / seq_med,
        tp_med / par_med
    );
    Ok(())
}
