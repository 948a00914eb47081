//! The launch benchmark behind `tessera bench` (and `cargo bench -p tessera-tests --bench
//! launch`): how long a trivial WASI task takes through a real cluster, next to fork/exec of
//! `/bin/true` and to the guest run by wasmtime directly (the *floor*), all measured in the
//! same process and run, so that the ratios hold on whatever machine runs it.
//!
//! 1. **Cluster**: a [`LocalCluster`] in this process: a master and `agents` agents of
//!    <4 cpus, 4 GiB> on loopback QUIC with mutual TLS (the code paths of a deployment), one
//!    SDK scheduler, `hello` uploaded once; every task is `hello` in <0.1 cpus, 32 MiB>,
//!    accepted with `refuse_seconds: 0`. Warm-up first: the first run on each agent fetches
//!    the module, compiles and caches it (reported as `first_run`).
//! 2. **Baselines, just before the latency run**: `/bin/true` spawned and waited for, and the
//!    floor (see [`baseline::Floor`]), each `latency_tasks` times.
//! 3. **Latency**: `latency_tasks` sequential tasks, round robin over the agents, each timed
//!    from just before `accept` to `TASK_RUNNING` and to `TASK_FINISHED`.
//! 4. **Throughput**: `rounds` rounds of `throughput_tasks` tasks, as many per accept as the
//!    held offers fit (40 per agent), from the first accept to the last `TASK_FINISHED`; before
//!    each, as many fork/execs sequentially and on 2 threads, and floor runs on 2 threads.
//! 5. **CPU per task**: user + system time of the process and its waited-for children
//!    (`/proc/self/stat`, 10 ms ticks) ÷ tasks, which load disturbs less than wall time.
//!
//! Every `TASK_FINISHED` must carry the greeting; any other end aborts the run with an error.

mod baseline;
mod offers;
mod render;
mod runs;
mod stats;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proto::resources::{GIB, MIB};
use proto::Resources;
use serde::Serialize;

pub use baseline::Floor;
pub use stats::{Ratio, Stats};

use crate::{LocalCluster, LocalClusterConfig, LocalClusterError};
use baseline::{fork_exec, samples, spread, Cpu};
use offers::{Driver, Pool};

/// What every `hello` prints.
pub const GREETING: &str = "Hello from Tessera!";

/// The share each `hello` runs in: <0.1 cpus, 32 MiB>.
pub const HELLO_RESOURCES: Resources = Resources::new(100, 32 * MIB, 0);

/// Each agent's resources: <4 cpus, 4 GiB>.
pub const AGENT_RESOURCES: Resources = Resources::new(4000, 4 * GIB, 0);

/// Why a bench run stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The cluster could not start.
    #[error("starting the cluster: {0}")]
    Cluster(#[from] LocalClusterError),
    /// The work directory could not be made or removed.
    #[error("work directory: {0}")]
    Io(#[from] std::io::Error),
    /// The scheduler failed, closed, or waited a minute for an event.
    #[error("scheduler: {0}")]
    Scheduler(String),
    /// A task ended other than `TASK_FINISHED` with its greeting.
    #[error("{0}")]
    Task(String),
    /// A baseline (fork/exec, the wasmtime floor) failed.
    #[error("{0}")]
    Baseline(String),
}

/// The sizes of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LaunchPlan {
    /// Agents in the cluster.
    pub agents: usize,
    /// Warm-up tasks per agent (the first compiles the module).
    pub warmup_per_agent: usize,
    /// Sequential tasks timed for latency (and fork/execs and floor runs beside them).
    pub latency_tasks: usize,
    /// Tasks per throughput round.
    pub throughput_tasks: usize,
    /// Throughput rounds.
    pub rounds: usize,
    /// The master's periodic allocation (it also allocates after every accept and task end).
    #[serde(serialize_with = "as_ms")]
    pub alloc_interval: Duration,
    /// Where the cluster's work directories go (a fresh temporary directory inside it);
    /// `None`: the system's temporary directory.
    pub work_dir: Option<PathBuf>,
}

fn as_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

impl LaunchPlan {
    /// The default run: 1,000 sequential tasks, 5 rounds of 2,000 (about 20 s in a release build).
    pub fn full() -> LaunchPlan {
        LaunchPlan {
            agents: 3,
            warmup_per_agent: 5,
            latency_tasks: 1000,
            throughput_tasks: 2000,
            rounds: 5,
            alloc_interval: Duration::from_secs(1),
            work_dir: None,
        }
    }

    /// A smoke run of a second or two: 20 sequential tasks, 1 round of 200.
    pub fn quick() -> LaunchPlan {
        LaunchPlan {
            warmup_per_agent: 2,
            latency_tasks: 20,
            throughput_tasks: 200,
            rounds: 1,
            ..LaunchPlan::full()
        }
    }
}

/// Where and under what load the run happened.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Cores available to this process.
    pub cores: usize,
    /// `model name` of `/proc/cpuinfo`.
    pub cpu_model: String,
    /// 1/5/15-minute load averages when the run started.
    pub load_start: [f64; 3],
    /// The same when it ended.
    pub load_end: [f64; 3],
    /// The directory the work directories went under.
    pub work_dir: PathBuf,
    /// Its file system type (`ext4`, `tmpfs`, ...).
    pub fs_type: String,
    /// `release` or `debug`: a debug build's own code is unoptimised and slower.
    pub build: &'static str,
}

/// Latency samples, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// The first `hello` on each agent: fetch, compile, cache, run.
    pub first_run: Stats,
    /// Accept → `TASK_RUNNING`.
    pub accept_to_running: Stats,
    /// Accept → `TASK_FINISHED`: the launch latency.
    pub accept_to_finished: Stats,
    /// Waiting for held offers that fit, before each accept.
    pub offer_wait: Stats,
    /// Offer wait + accept → `TASK_FINISHED`.
    pub cycle: Stats,
    /// `/bin/true` spawned and waited for.
    pub fork_exec: Stats,
    /// The guest on wasmtime directly: store, instantiation, `_start`.
    pub floor: Stats,
    /// Accept → `TASK_FINISHED` in the throughput rounds, queueing included.
    pub queued: Stats,
}

/// The latency ratios.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyRatios {
    /// Tessera's accept → `TASK_FINISHED` ÷ fork/exec.
    pub tessera_vs_fork_exec: Ratio,
    /// Tessera ÷ the floor: what the cluster adds over the engine.
    pub tessera_vs_floor: Ratio,
    /// The floor ÷ fork/exec.
    pub floor_vs_fork_exec: Ratio,
}

/// CPU milliseconds per task in the sequential runs (the whole process, children included).
#[derive(Debug, Clone, Serialize)]
pub struct CpuPerTask {
    /// Tessera (scheduler, master and agents together).
    pub tessera: f64,
    /// `/bin/true`.
    pub fork_exec: f64,
    /// The floor.
    pub floor: f64,
}

/// One throughput round: tasks per second and CPU milliseconds per task of each contestant.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    /// Tessera's tasks per second.
    pub tessera_per_s: f64,
    /// `/bin/true`, one at a time.
    pub fork_exec_seq_per_s: f64,
    /// `/bin/true`, two threads.
    pub fork_exec_x2_per_s: f64,
    /// The floor, two threads.
    pub floor_x2_per_s: f64,
    /// Tessera's CPU ms per task.
    pub tessera_cpu_ms: f64,
    /// Sequential fork/exec's CPU ms per task.
    pub fork_exec_seq_cpu_ms: f64,
    /// Two-thread fork/exec's CPU ms per task.
    pub fork_exec_x2_cpu_ms: f64,
    /// Accepts the scheduler sent.
    pub accepts: usize,
    /// Most tasks launched and not yet finished.
    pub max_in_flight: usize,
}

/// The throughput rounds, their medians and ratios.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputReport {
    /// Every round.
    pub rounds: Vec<Round>,
    /// The median of each field over the rounds.
    pub median: Round,
    /// Tessera ÷ sequential fork/exec, tasks per second (medians).
    pub vs_fork_exec_seq: f64,
    /// Tessera ÷ two-thread fork/exec.
    pub vs_fork_exec_x2: f64,
    /// Tessera ÷ the floor on two threads.
    pub vs_floor_x2: f64,
}

/// Everything one run measured: what `tessera bench --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct LaunchReport {
    /// Format of this report; bumped when a field changes meaning.
    pub version: u32,
    /// The sizes it ran with.
    pub plan: LaunchPlan,
    /// The machine and its load.
    pub machine: Machine,
    /// Latency samples.
    pub latency: Latency,
    /// Latency ratios.
    pub ratios: LatencyRatios,
    /// CPU per task, sequential runs.
    pub cpu_ms_per_task: CpuPerTask,
    /// Throughput.
    pub throughput: ThroughputReport,
    /// Whole run, seconds.
    pub total_s: f64,
    /// Cluster shutdown and removal of the work directories, seconds.
    pub cleanup_s: f64,
}

impl LaunchReport {
    /// The report as aligned text tables.
    pub fn to_text(&self) -> String {
        render::text(self)
    }
}

/// Runs the launch benchmark on the current tokio runtime (the fork/execs and floor runs block
/// its thread, as a baseline should: nothing else runs then).
pub async fn run_launch(plan: &LaunchPlan) -> Result<LaunchReport, BenchError> {
    let started = Instant::now();
    let load_start = loadavg();
    let root = plan.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&root)?;
    let dir = tempfile::Builder::new()
        .prefix("tessera-bench-")
        .tempdir_in(&root)?;
    let floor = Floor::new(wasm_examples::HELLO, GREETING)?;
    let mut cfg = LocalClusterConfig::default();
    cfg.master.allocation_interval = plan.alloc_interval;
    let mut cluster = LocalCluster::start(cfg, dir.path()).await?;
    for i in 1..=plan.agents {
        cluster.add_agent(&format!("agent{i}"), AGENT_RESOURCES)?;
    }
    let sched_err = |e: sdk::SdkError| BenchError::Scheduler(e.to_string());
    let sched = sdk::Scheduler::connect(cluster.scheduler_options("bench", "*")?)
        .await
        .map_err(sched_err)?;
    let module = sched
        .upload_module(wasm_examples::HELLO)
        .await
        .map_err(sched_err)?;
    let mut d = Driver {
        sched,
        pool: Pool::default(),
    };
    let agents = d.wait_agents(plan.agents).await?;
    let each = HELLO_RESOURCES;
    let warmup = runs::sequential(
        &mut d,
        module,
        each,
        &agents,
        "warm",
        plan.warmup_per_agent.max(1) * agents.len(),
    )
    .await?;

    // Baselines on this thread while the idle cluster waits, right before the runs they are
    // compared with; a few unmeasured runs of each first.
    let n = plan.latency_tasks.max(1);
    let fork_lat = samples(20, n, fork_exec)?;
    let floor_lat = samples(20, n, || floor.run())?;
    let cpu = Cpu::now();
    let seq = runs::sequential(&mut d, module, each, &agents, "lat", n).await?;
    let seq_cpu = cpu.ms_since();

    let m = plan.throughput_tasks.max(1);
    let per_s = |wall: Duration| m as f64 / wall.as_secs_f64();
    let mut rounds = Vec::with_capacity(plan.rounds);
    let mut queued = Vec::new();
    for r in 0..plan.rounds.max(1) {
        let cpu = Cpu::now();
        let seq_wall = spread(m, 1, fork_exec)?;
        let seq_cpu = cpu.ms_since();
        let cpu = Cpu::now();
        let x2_wall = spread(m, 2, fork_exec)?;
        let x2_cpu = cpu.ms_since();
        let floor_wall = spread(m, 2, || floor.run())?;
        let cpu = Cpu::now();
        let tp = runs::throughput(&mut d, module, each, &format!("tp{r}"), m).await?;
        let tp_cpu = cpu.ms_since();
        queued.extend_from_slice(&tp.per_task);
        rounds.push(Round {
            tessera_per_s: per_s(tp.wall),
            fork_exec_seq_per_s: per_s(seq_wall),
            fork_exec_x2_per_s: per_s(x2_wall),
            floor_x2_per_s: per_s(floor_wall),
            tessera_cpu_ms: tp_cpu / m as f64,
            fork_exec_seq_cpu_ms: seq_cpu / m as f64,
            fork_exec_x2_cpu_ms: x2_cpu / m as f64,
            accepts: tp.accepts,
            max_in_flight: tp.max_in_flight,
        });
    }

    let cleanup_start = Instant::now();
    drop(d);
    cluster.shutdown().await;
    // Removing every task's directory can take a while on a busy disk: timed.
    dir.close()?;
    let cleanup_s = cleanup_start.elapsed().as_secs_f64();

    let stats = |s: &[Duration]| Stats::of(s).expect("every sample has at least one run");
    let latency = Latency {
        first_run: stats(&warmup.accept_to_finished[..agents.len()]),
        accept_to_running: stats(&seq.accept_to_running),
        accept_to_finished: stats(&seq.accept_to_finished),
        offer_wait: stats(&seq.offer_wait),
        cycle: stats(&seq.cycle),
        fork_exec: stats(&fork_lat.0),
        floor: stats(&floor_lat.0),
        queued: stats(&queued),
    };
    let ratios = LatencyRatios {
        tessera_vs_fork_exec: Ratio::of(&latency.accept_to_finished, &latency.fork_exec),
        tessera_vs_floor: Ratio::of(&latency.accept_to_finished, &latency.floor),
        floor_vs_fork_exec: Ratio::of(&latency.floor, &latency.fork_exec),
    };
    let med = |f: fn(&Round) -> f64| stats::median(rounds.iter().map(f));
    let median = Round {
        tessera_per_s: med(|r| r.tessera_per_s),
        fork_exec_seq_per_s: med(|r| r.fork_exec_seq_per_s),
        fork_exec_x2_per_s: med(|r| r.fork_exec_x2_per_s),
        floor_x2_per_s: med(|r| r.floor_x2_per_s),
        tessera_cpu_ms: med(|r| r.tessera_cpu_ms),
        fork_exec_seq_cpu_ms: med(|r| r.fork_exec_seq_cpu_ms),
        fork_exec_x2_cpu_ms: med(|r| r.fork_exec_x2_cpu_ms),
        accepts: med(|r| r.accepts as f64) as usize,
        max_in_flight: med(|r| r.max_in_flight as f64) as usize,
    };
    let throughput = ThroughputReport {
        vs_fork_exec_seq: median.tessera_per_s / median.fork_exec_seq_per_s,
        vs_fork_exec_x2: median.tessera_per_s / median.fork_exec_x2_per_s,
        vs_floor_x2: median.tessera_per_s / median.floor_x2_per_s,
        rounds,
        median,
    };
    Ok(LaunchReport {
        version: 1,
        plan: plan.clone(),
        machine: Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: cpu_model(),
            load_start,
            load_end: loadavg(),
            fs_type: fs_type(&root),
            work_dir: root,
            build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
        },
        latency,
        ratios,
        cpu_ms_per_task: CpuPerTask {
            tessera: seq_cpu / n as f64,
            fork_exec: fork_lat.1 / n as f64,
            floor: floor_lat.1 / n as f64,
        },
        throughput,
        total_s: started.elapsed().as_secs_f64(),
        cleanup_s,
    })
}

fn loadavg() -> [f64; 3] {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut f = s.split_whitespace().map(|x| x.parse().unwrap_or(f64::NAN));
    [
        f.next().unwrap_or(f64::NAN),
        f.next().unwrap_or(f64::NAN),
        f.next().unwrap_or(f64::NAN),
    ]
}

/// The file system type `path` is on (longest mount point prefix in `/proc/mounts`).
fn fs_type(path: &Path) -> String {
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
