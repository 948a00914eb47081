//! The wasmtime executor: compiles, caches and runs tasks as WASI preview-1
//! command modules (`_start`) or WASI 0.2 command components (`wasi:cli/run`, told apart from
//! modules by their bytes), one [`Store`](wasmtime::Store) per task, with memory, output, time
//! and kill limits. Both kinds share one code path: the same store data, limits, pacing and
//! classification of the outcome; only linking and the entry point differ (`component.rs`).
//!
//! Isolation model:
//! - a task with a sandbox ([`TaskSpec::sandbox`], or data sets) has as preopens
//!   `<task_dir>/sandbox`, mounted read-write at `/`, and each data set of
//!   [`TaskSpec::datasets`], mounted read-only (directories and files) at `/data/<name>`;
//! - a task without one has no file system at all: no preopened directory, so every path it
//!   opens fails (as in an empty root it cannot write to), and nothing is created on disk for
//!   it; it still has its args, env, clocks, random and output;
//! - stdout/stderr go to `<task_dir>/stdout` and `<task_dir>/stderr`
//!   (outside the sandbox, see [`TaskDir`](crate::workdir::TaskDir)), each
//!   capped at [`ExecutorConfig::output_cap`]; a task without a sandbox keeps them in memory
//!   (`output.rs`: up to 16 KiB a stream, 64 MiB for all tasks) and spills them there beyond,
//!   readable after its end through [`Executor::read_output`] until
//!   [`Executor::forget_output`];
//! - no stdin, no network (no sockets, no name lookup), no inherited environment;
//! - linear memories and tables are capped at [`TaskSpec::mem_bytes`];
//! - instances, memories, tables and async stacks come from the pooling
//!   allocator's slots ([`ExecutorConfig::pooling`], sized from the agent's
//!   resources), memories reset copy-on-write from the module's image;
//! - the sandbox's disk use is checked against [`TaskSpec::disk_bytes`]
//!   every [`ExecutorConfig::disk_check_interval`] and when the task ends;
//! - CPU is metered by fuel alone (no epoch interruption): every guest yields
//!   to tokio after about 1 ms of one core's worth of fuel, which lets guests
//!   share the runtime's threads, holds each task to its offered CPU share
//!   ([`TaskSpec::cpus_milli`] of a core, measured on the thread's CPU
//!   clock, see `pacing.rs`), and lets kills and timeouts stop even `loop {}` within
//!   about a millisecond; an optional CPU-time budget
//!   ([`TaskSpec::max_cpu`]) is the store's fuel;
//! - or, with [`Metering::Rewrite`], a preview-1 module is rewritten before it is compiled
//!   (`meter.rs`) to check a budget of its own only on loop back edges (a counted loop's once
//!   per run of iterations) and at the entry of functions that could run unbounded, on an
//!   engine without fuel; its slow path, a host call
//!   (`tick.rs`), yields after each millisecond of CPU time and holds the CPU-time budget on the
//!   task's CPU clock;
//! - or, with [`ExecutorConfig::cpu_quota_cgroup`], a task offered less than one core moves,
//!   the first time it overdraws its share, to a thread of its own under a kernel CFS quota of
//!   its share (`quota.rs`).
//!
//! A task (preview-1 module or WASI 0.2 component) is single-threaded: a share above one cpu buys no
//! more than one core. Multi-threaded modules (WASI threads, `wasm32-wasip1-threads`) run on a
//! path of their own, `threads.rs`: a thread per guest thread, paced over their summed CPU clocks.
//!
//! The executor knows nothing of the protocol (it never imports `proto`): it
//! takes a [`TaskSpec`] of plain paths and numbers and reports a
//! [`TaskOutcome`]; `crate::launch` translates both ways.
//!
//! # Layout
//! - `mod.rs`: the [`Executor`] facade, its task spec, events, outcome and errors.
//! - `config.rs`: [`ExecutorConfig`], [`PoolingConfig`] and engine construction.
//! - `cache.rs`: the module cache (compile modules and components, link, on-disk `.cwasm`,
//!   counters).
//! - `compile_jobs.rs`: a compile shared by the tasks that wait for it, stopped when none does.
//! - `component.rs`: WASI 0.2 command components (detection, linker, `wasi:cli/run`).
//! - `run.rs`: one task's run (store setup with the sandbox and data sets, limits and pacing,
//!   output, kill, finish).
//! - `limiter.rs`: the memory and table limiter.
//! - `pacing.rs`: fuel calibration and CPU-share pacing on the thread's CPU clock.
//! - `meter.rs`: metering by rewriting a module (budget checks, live locals saved around
//!   their slow path); `tick.rs`: its host side.
//! - `compiler.rs`: compiling a module in a child process with a CPU-time and a memory limit.
//! - `quota.rs`: kernel CPU quotas for paced tasks (a cgroup per task).
//! - `output.rs`: capped stdout/stderr files and their tails.
//! - `disk.rs`: the sandbox's disk use.
//! - `threads.rs`: multi-threaded (WASI threads) tasks: their engine, `thread-spawn`, pacing.
//! - `instance/`: long-lived framework executors (WASI 0.2 components of the
//!   `tessera:executor` world, `wit/executor/world.wit`) and their envelopes.

mod cache;
mod compile_jobs;
mod compiler;
mod component;
mod config;
mod disk;
mod instance;
mod limiter;
pub mod meter;
mod output;
mod pacing;
mod quota;
mod run;
#[cfg(test)]
mod tests;
mod threads;
mod tick;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use tokio::sync::watch;
use wasmtime::Linker;

use self::cache::ModuleCache;
use self::pacing::Handoff;
use self::run::{FinishGuard, TaskState};

pub use self::compiler::{serve_compile, CompilerCommand};
pub use self::config::{engine_config, ExecutorConfig, Metering, PoolingConfig};
pub use self::instance::{
    GuestTaskState, InstanceEvent, InstanceHandle, InstanceSpec, InstanceTask, MAX_GUEST_MESSAGE,
};
pub use self::output::TRUNCATION_MARKER;
pub use self::threads::MAX_THREADS;

/// Executor counters, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecStats {
    /// Modules compiled from wasm (cache misses).
    pub compiles: u64,
    /// Modules loaded from the on-disk cache instead of compiled.
    pub disk_cache_hits: u64,
    /// Cache entries found unusable (corrupt, truncated) and rebuilt.
    pub cache_rebuilds: u64,
    /// Fuel one core burns per second (calibrated or configured).
    pub fuel_per_core_second: u64,
    /// Task slots of the pooling instance allocator; 0 when instances are
    /// allocated on demand (pooling off, or its pools could not be reserved).
    pub pool_slots: u32,
}

/// Errors from creating the executor or preparing a module.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The wasmtime engine (or its WASI linker) could not be set up.
    #[error("cannot create wasmtime engine: {0}")]
    Engine(String),
    /// The digest is not usable as a cache key / file name.
    #[error("invalid module digest {0:?}: expected 1-200 characters from [A-Za-z0-9._:-]")]
    InvalidDigest(String),
    /// Reading the module file (or creating the cache directory) failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The bytes are not a valid WebAssembly module or component (or failed to compile).
    #[error("module {digest} is not a valid WebAssembly module: {message}")]
    Compile {
        /// Digest of the module.
        digest: String,
        /// Compiler/validator message.
        message: String,
    },
    /// The module was not compiled: its compile used the agent's CPU-time or memory limit (and
    /// the module is refused at once after), or the compiling child process failed.
    #[error("module {digest} was not compiled: {message}")]
    CompileRefused {
        /// Digest of the module.
        digest: String,
        /// Why.
        message: String,
    },
    /// The module has no exported `_start` function of type `() -> ()`, or the component does
    /// not export `wasi:cli/run`, so it is not a WASI command.
    #[error("module {digest} is not a WASI command: {message}")]
    NotACommand {
        /// Digest of the module.
        digest: String,
        /// What is wrong with (or missing about) `_start` or `wasi:cli/run`.
        message: String,
    },
    /// The module imports something the executor does not provide (only
    /// `wasi_snapshot_preview1` is available to modules, and WASI 0.2 to components).
    #[error("module {digest} has unsatisfiable imports: {message}")]
    Link {
        /// Digest of the module.
        digest: String,
        /// Linker message.
        message: String,
    },
    /// The background compilation task panicked or was cancelled.
    #[error("compilation task failed: {0}")]
    Join(String),
}

impl ExecError {
    /// A copy of an error shared by the callers of one compile, for one of them: the same
    /// variant and message (an I/O error keeps its kind and text; its source chain becomes
    /// that text).
    fn duplicate(&self) -> Self {
        match self {
            ExecError::Engine(m) => ExecError::Engine(m.clone()),
            ExecError::InvalidDigest(d) => ExecError::InvalidDigest(d.clone()),
            ExecError::Io { path, source } => ExecError::Io {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            ExecError::Compile { digest, message } => ExecError::Compile {
                digest: digest.clone(),
                message: message.clone(),
            },
            ExecError::CompileRefused { digest, message } => ExecError::CompileRefused {
                digest: digest.clone(),
                message: message.clone(),
            },
            ExecError::NotACommand { digest, message } => ExecError::NotACommand {
                digest: digest.clone(),
                message: message.clone(),
            },
            ExecError::Link { digest, message } => ExecError::Link {
                digest: digest.clone(),
                message: message.clone(),
            },
            ExecError::Join(m) => ExecError::Join(m.clone()),
        }
    }
}

/// Everything needed to run one task.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskSpec {
    /// Content digest of the module; the module cache key.
    pub digest: String,
    /// Where the module's bytes are (compiled on first use of `digest`).
    pub wasm_path: PathBuf,
    /// Full argv; `args[0]` is conventionally the task name.
    pub args: Vec<String>,
    /// The guest's entire environment (nothing is inherited from the agent).
    pub env: Vec<(String, String)>,
    /// Per-task directory: `sandbox/` (created if missing) becomes the
    /// guest's `/`; `stdout` and `stderr` files are written next to it. Without a sandbox,
    /// nothing is created here unless the output spills.
    pub task_dir: PathBuf,
    /// Whether the task gets a sandbox: `<task_dir>/sandbox` as its read-write `/`, and its
    /// output in files from the start. Without one (and without data sets, which need it) the
    /// guest has no file system and its output is kept in memory: a launch touches no disk.
    pub sandbox: bool,
    /// Cap on the total size of the guest's linear memories and tables.
    pub mem_bytes: u64,
    /// CPU share granted by the scheduler (1000 = one core): the task uses
    /// at most `cpus_milli / 1000` seconds of CPU time per second of wall
    /// time. Shares of 1000 and more are not paced (one thread cannot
    /// use more than one core); 0 counts as 1.
    pub cpus_milli: u64,
    /// Wall-clock limit for the entry point (`_start` or `wasi:cli/run`), if any.
    pub timeout: Option<Duration>,
    /// CPU-time budget, in time of one core, counted in fuel; over it the
    /// task ends with [`Termination::CpuLimit`].
    pub max_cpu: Option<Duration>,
    /// Cap on the sandbox's disk use; 0 means
    /// [`ExecutorConfig::default_disk_cap`].
    pub disk_bytes: u64,
    /// Data sets as `(name, host directory)`: each is preopened read-only at `/data/<name>`.
    /// A name must be 1-128 characters of `[A-Za-z0-9._-]`, not `.` or `..`, and unique, and
    /// the directory must exist; otherwise the task ends with [`Termination::StartFailed`].
    pub datasets: Vec<(String, PathBuf)>,
}

impl TaskSpec {
    /// A task of `digest` at `wasm_path` with argv `args`, in `task_dir`, and nothing else: no
    /// sandbox (so no file system), 64 MiB of memory, one core, no time or CPU limit. Tests,
    /// benches and embedders start from it and set what differs (`TaskSpec { cpus_milli: 250,
    /// ..TaskSpec::new(..) }`), so that a new field gets its default in one place; the agent's
    /// launch path sets every field itself.
    pub fn new(
        digest: impl Into<String>,
        wasm_path: impl Into<PathBuf>,
        args: Vec<String>,
        task_dir: impl Into<PathBuf>,
    ) -> Self {
        TaskSpec {
            digest: digest.into(),
            wasm_path: wasm_path.into(),
            args,
            env: Vec::new(),
            task_dir: task_dir.into(),
            sandbox: false,
            mem_bytes: 64 << 20,
            cpus_milli: 1000,
            timeout: None,
            max_cpu: None,
            disk_bytes: 0,
            datasets: Vec::new(),
        }
    }
}

/// Life-cycle notifications sent by [`Executor::launch`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExecEvent {
    /// The instance is ready and its entry point (`_start` or `wasi:cli/run`) is about to run
    /// (sent at most once).
    Running,
    /// The task is over (sent exactly once, always last).
    Finished(TaskOutcome),
}

/// The result of one task run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskOutcome {
    /// How the task ended.
    pub termination: Termination,
    /// Last [`ExecutorConfig::tail_bytes`] of stdout (lossy UTF-8).
    pub stdout_tail: String,
    /// Last [`ExecutorConfig::tail_bytes`] of stderr (lossy UTF-8).
    pub stderr_tail: String,
    /// Fuel (roughly: wasm instructions) consumed by the guest.
    pub fuel_consumed: u64,
    /// Wall-clock time the entry point ran (zero if it never started).
    pub wall: Duration,
    /// Part of `wall` the task was paused for being ahead of its CPU share (by the in-process
    /// pacer, or throttled by its kernel quota, see [`ExecutorConfig::cpu_quota_cgroup`]).
    pub cpu_paused: Duration,
    /// CPU time the guest used (its thread's CPU clock around every poll).
    pub cpu_time: Duration,
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Termination {
    /// The guest returned from `_start` (code 0) or called `proc_exit(code)`; a component
    /// returned from `wasi:cli/run` (`Ok`: 0, `Err`: 1) or called `wasi:cli/exit` (`exit`:
    /// 0 or 1, `exit-with-code`: its code).
    Exited(i32),
    /// The guest trapped; the message says why (e.g. "wasm trap: wasm
    /// `unreachable` instruction executed").
    Trapped(String),
    /// A memory or table growth was denied by the task's memory limit and the
    /// guest then trapped (or could not even be instantiated).
    MemoryLimit(String),
    /// [`TaskSpec::timeout`] elapsed.
    Timeout,
    /// The guest used up its CPU-time budget ([`TaskSpec::max_cpu`]).
    CpuLimit(String),
    /// The sandbox outgrew the task's disk cap.
    DiskLimit(String),
    /// [`KillHandle::kill`] was called.
    Killed,
    /// The task never started: bad module, missing `_start`, invalid data set, I/O error on
    /// the task directory, ...
    StartFailed(String),
}

/// Stops a launched task. Cloneable; killing twice (or after the task
/// finished) is harmless.
#[derive(Debug, Clone)]
pub struct KillHandle {
    tx: Arc<watch::Sender<bool>>,
    /// Lifts the task's kernel quota once it has one (see `quota.rs`), so that a throttled
    /// thread runs to its next fuel yield at once.
    quota: Arc<Mutex<QuotaKill>>,
}

/// A task's kernel quota as its kill sees it: the kill lifts the quota if the task has one,
/// and a task that gets one after the kill has it lifted at once. One lock for both, so
/// neither can miss the other.
#[derive(Debug, Default)]
struct QuotaKill {
    lifter: Option<quota::QuotaLifter>,
    killed: bool,
}

impl KillHandle {
    /// Requests the task to stop. The guest is stopped at its next fuel yield
    /// (about a millisecond of CPU), even in `loop {}`, or at once while
    /// blocked in a WASI call, and the task finishes with
    /// [`Termination::Killed`].
    pub fn kill(&self) {
        self.tx.send_replace(true);
        let mut q = lock(&self.quota);
        q.killed = true;
        if let Some(l) = &q.lifter {
            l.lift();
        }
    }

    /// The task runs under a quota that `lifter` lifts (lifted now if it was killed before).
    fn quota_set(&self, lifter: quota::QuotaLifter) {
        let mut q = lock(&self.quota);
        if q.killed {
            lifter.lift();
        }
        q.lifter = Some(lifter);
    }
}

/// Locks, even a mutex poisoned by a panic elsewhere (the data is two fields set in one go).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs WASI tasks. Cheap to clone (shared engine and module cache).
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("cfg", &self.inner.cfg)
            .field("modules", &self.inner.modules.len())
            .field("fuel_per_core_second", &self.inner.fuel_rate)
            .field("pool_slots", &self.inner.pool_slots)
            .finish_non_exhaustive()
    }
}

/// What every clone of an [`Executor`] shares.
struct Inner {
    /// Caps, tails, disk checks; read by every task run.
    cfg: ExecutorConfig,
    /// The engine of components and executor instances, with fuel; with
    /// [`Metering::Fuel`], preview-1 modules' too.
    engine: wasmtime::Engine,
    /// Compiled and linked modules by digest.
    modules: Arc<ModuleCache>,
    /// Fuel one core burns per second: pacing and CPU budgets are in its units.
    fuel_rate: u64,
    /// Task slots of the pooling allocator (0: on demand), for [`ExecStats`].
    pool_slots: u32,
    /// Executor instances' components, compiled and linked (see `instance/`).
    components: Arc<instance::Components>,
    /// Multi-threaded (WASI threads) modules: their engine, linker and cache (`threads.rs`).
    threads: threads::Threads,
    /// In-memory output of tasks without a sandbox.
    outputs: Arc<output::OutputStore>,
    /// Stores of tasks that have reported their end and are being dropped: their pool slots
    /// come back in a moment, so a launch that finds the pool full waits for them.
    freeing: std::sync::atomic::AtomicUsize,
    /// Where paced tasks' cgroups are made, if [`ExecutorConfig::cpu_quota_cgroup`] is set and
    /// usable.
    quota: Option<quota::QuotaParent>,
}

impl Executor {
    /// Creates the engines (Cranelift, fuel metering or not as [`ExecutorConfig::metering`]
    /// says, pooling allocator unless [`ExecutorConfig::pooling`] is `None`) and the WASI
    /// linker, and calibrates the fuel rate unless [`ExecutorConfig::fuel_per_core_second`]
    /// is set.
    pub fn new(cfg: ExecutorConfig) -> Result<Self, ExecError> {
        let (engine, module_engine, pool_slots) = config::engines(&cfg)?;
        let fuel_rate = match cfg.fuel_per_core_second {
            Some(r) => r.max(1000),
            None => pacing::calibrated_fuel_rate(&engine).map_err(ExecError::Engine)?,
        };
        let engine_err = |e: wasmtime::Error| ExecError::Engine(e.to_string());
        let mut linker = Linker::new(&module_engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s: &mut TaskState| &mut s.wasi)
            .map_err(engine_err)?;
        if cfg.metering == Metering::Rewrite {
            tick::add_to_linker(&mut linker, |s: &mut TaskState| &mut s.ticks)
                .map_err(engine_err)?;
        }
        let modules = ModuleCache::new(engine.clone(), module_engine, linker, &cfg)?;
        let components = Arc::new(instance::Components::new(&engine)?);
        let threads = threads::Threads::new(&cfg)?;
        let quota = cfg.cpu_quota_cgroup.as_deref().and_then(|dir| {
            quota::QuotaParent::new(dir)
                .inspect_err(|e| {
                    tracing::warn!(
                        dir = %dir.display(),
                        error = %e,
                        "no kernel CPU quotas for paced tasks: pacing them in process"
                    );
                })
                .ok()
        });
        Ok(Executor {
            inner: Arc::new(Inner {
                cfg,
                engine,
                modules: Arc::new(modules),
                fuel_rate,
                pool_slots,
                components,
                threads,
                outputs: Arc::new(output::OutputStore::new(
                    output::MEMORY_BUDGET,
                    output::MEMORY_THRESHOLD,
                )),
                freeing: std::sync::atomic::AtomicUsize::new(0),
                quota,
            }),
        })
    }

    /// Fuel one core burns per second (calibrated at start or configured):
    /// a task offered `c` cpus may burn `c ×` this per second.
    pub fn fuel_per_core_second(&self) -> u64 {
        self.inner.fuel_rate
    }

    /// Counters: compilations, disk cache hits and rebuilds, fuel rate.
    pub fn stats(&self) -> ExecStats {
        let i = &self.inner;
        let m = &i.modules;
        ExecStats {
            compiles: m.compiles.load(Ordering::Relaxed),
            disk_cache_hits: m.disk_cache_hits.load(Ordering::Relaxed),
            cache_rebuilds: m.cache_rebuilds.load(Ordering::Relaxed),
            fuel_per_core_second: i.fuel_rate,
            pool_slots: i.pool_slots,
        }
    }

    /// Validates and compiles the module or component at `wasm_path` (or fetches it from
    /// the memory/disk cache by `digest`), so that launch failures are caught
    /// early and launch itself is fast. Compilation runs on tokio's blocking
    /// pool. The file's content is trusted to match `digest`.
    pub async fn prepare(&self, digest: &str, wasm_path: &Path) -> Result<(), ExecError> {
        if self.inner.threads.contains(digest) {
            return Ok(());
        }
        match self.inner.modules.prepared(digest, wasm_path).await {
            Ok(_) => Ok(()),
            // A WASI-threads module does not link on the ordinary path (`threads.rs`).
            Err(e @ (ExecError::Link { .. } | ExecError::Compile { .. })) => {
                match self.inner.threads.prepare(digest, wasm_path).await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(e),
                    Err(threaded) => Err(threaded),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// At most `length` bytes at `offset` of the stdout (`stderr` false) or stderr of the task
    /// whose directory is `task_dir`, and the stream's size, if its output is held in memory
    /// (a task without a sandbox, running or ended and not forgotten, whose stream has not
    /// spilled); `None` means: read its file.
    pub fn read_output(
        &self,
        task_dir: &Path,
        stderr: bool,
        offset: u64,
        length: u64,
    ) -> Option<(Vec<u8>, u64)> {
        self.inner.outputs.read(task_dir, stderr, offset, length)
    }

    /// Drops the in-memory output of the task whose directory is `task_dir` (its directory is
    /// being collected).
    pub fn forget_output(&self, task_dir: &Path) {
        self.inner.outputs.forget(task_dir);
    }

    /// Writes every in-memory output out to its files (blocking: file I/O). For a process
    /// whose guests stop with it, so that ended tasks' output stays readable from disk.
    pub fn write_out_outputs(&self) {
        self.inner.outputs.write_out_all();
    }

    /// Bytes of output (and bookkeeping) held in memory, and for how many tasks.
    pub fn output_memory(&self) -> (u64, usize) {
        self.inner.outputs.usage()
    }

    /// Whether a module with this digest is already compiled in memory.
    pub fn is_prepared(&self, digest: &str) -> bool {
        self.inner.modules.contains(digest) || self.inner.threads.contains(digest)
    }

    /// Starts a task on the current tokio runtime (panics outside one). If it is paced and the
    /// executor has kernel quotas ([`ExecutorConfig::cpu_quota_cgroup`]), the first time it
    /// overdraws its share (it is CPU-bound) it moves to a thread of its own under its quota;
    /// a task that sleeps or waits costs no thread.
    ///
    /// Calls `notify(ExecEvent::Running)` once the instance is ready and
    /// its entry point is about to run, then `notify(ExecEvent::Finished(outcome))`
    /// exactly once (also when the task fails to start, in which case
    /// `Running` is not sent). If the module was not prepared, it is compiled
    /// first. `notify` is called from a tokio task and must not block.
    pub fn launch(
        &self,
        spec: TaskSpec,
        notify: Box<dyn Fn(ExecEvent) + Send + Sync>,
    ) -> KillHandle {
        let (tx, rx) = watch::channel(false);
        let handle = KillHandle {
            tx: Arc::new(tx),
            quota: Arc::default(),
        };
        let inner = self.inner.clone();
        let guard = FinishGuard::for_task(notify);
        // Threaded modules are paced over their threads' summed clocks in process.
        let handoff = (self.inner.quota.is_some()
            && spec.cpus_milli < 1000
            && !self.inner.threads.contains(&spec.digest))
        .then(|| Arc::new(Handoff::default()));
        let cpus_milli = spec.cpus_milli;
        let task_dir = spec.task_dir.clone();
        let task = {
            let handoff = handoff.clone();
            // Holds a sender, so that the kill channel lives as long as the task.
            let keep_sender = handle.clone();
            async move {
                let _keep_sender = keep_sender;
                let mut guard = guard;
                if let Some(outcome) = inner.run(spec, rx, &mut guard, handoff).await {
                    guard.end(outcome);
                }
            }
        };
        match handoff {
            None => {
                tokio::spawn(task);
            }
            Some(handoff) => {
                let inner = self.inner.clone();
                let handle = handle.clone();
                tokio::spawn(async move {
                    let task: TaskFuture = Box::pin(task);
                    let Some(task) = until_overdrawn(task, &handoff).await else {
                        return;
                    };
                    let Some(parent) = inner.quota.as_ref() else {
                        return task.await;
                    };
                    let moved = move_under_quota(
                        parent,
                        cpus_milli,
                        task,
                        handoff.clone(),
                        handle,
                        task_dir.clone(),
                    );
                    if let Err((error, task)) = moved {
                        tracing::warn!(task_dir = %task_dir.display(), %error, "a paced task could not move under its quota: pacing it in process");
                        handoff.refused();
                        task.await;
                    }
                });
            }
        }
        handle
    }

    /// [`Executor::launch`] with the events sent to a channel, for callers that await them
    /// (tests, benches, embedders) rather than handle them in a callback.
    pub fn launch_to_channel(
        &self,
        spec: TaskSpec,
    ) -> (KillHandle, tokio::sync::mpsc::UnboundedReceiver<ExecEvent>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let kill = self.launch(
            spec,
            Box::new(move |ev| {
                let _ = tx.send(ev);
            }),
        );
        (kill, rx)
    }
}

/// A one-shot task's whole run, boxed so that it can move to another thread between polls.
type TaskFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs `task` until it ends (`None`) or its pacer reports its first overdraft (the task, to
/// move; its pacer's sleep is registered, and the task is woken wherever it is polled next).
async fn until_overdrawn(mut task: TaskFuture, handoff: &Handoff) -> Option<TaskFuture> {
    let ended = std::future::poll_fn(|cx| match task.as_mut().poll(cx) {
        Poll::Ready(()) => Poll::Ready(true),
        Poll::Pending if handoff.wanted() => Poll::Ready(false),
        Poll::Pending => Poll::Pending,
    })
    .await;
    (!ended).then_some(task)
}

/// Moves a paced task that overdrew its share to a thread of its own in a new group under
/// `parent`, with the group's kernel quota, and runs it there to its end; then the thread
/// leaves and removes the group. If the group or the thread cannot be made, the task is handed
/// back (with why) to go on paced in process where it was; if the thread cannot join the
/// group, it is paced in process on that thread.
fn move_under_quota(
    parent: &quota::QuotaParent,
    cpus_milli: u64,
    task: TaskFuture,
    handoff: Arc<Handoff>,
    kill: KillHandle,
    task_dir: PathBuf,
) -> Result<(), (String, TaskFuture)> {
    let group = match parent.group(cpus_milli) {
        Ok(group) => group,
        Err(e) => return Err((format!("no cgroup: {e}"), task)),
    };
    let (give, take) = std::sync::mpsc::sync_channel::<TaskFuture>(1);
    let thread = {
        let handoff = handoff.clone();
        std::thread::Builder::new()
            .name("tessera-quota".into())
            .spawn(move || {
                let Ok(task) = take.recv() else { return };
                let joined = match group.join() {
                    Ok(()) => {
                        kill.quota_set(group.lifter());
                        handoff.moved();
                        true
                    }
                    Err(e) => {
                        tracing::warn!(task_dir = %task_dir.display(), error = %e, "could not join a paced task's cgroup: pacing it in process");
                        handoff.refused();
                        false
                    }
                };
                // Timers only: a guest has no sockets and its files go through the blocking
                // pool, so the runtime needs no I/O driver (an epoll and an eventfd descriptor
                // per task). Timers made before the move stay with the runtime that made them.
                match tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                {
                    // Output spilled to files after the end (blocking pool) is written before
                    // the runtime goes.
                    Ok(rt) => rt.block_on(task),
                    // Dropped, the task reports itself killed (its guard).
                    Err(e) => tracing::warn!(error = %e, "could not start a paced task's runtime"),
                }
                let left = if joined { group.leave() } else { Ok(()) };
                if let Err(e) = left.and_then(|()| group.remove()) {
                    tracing::warn!(error = %e, "could not remove a paced task's cgroup");
                }
            })
    };
    match thread {
        Ok(_) => give.send(task).map_err(|std::sync::mpsc::SendError(task)| {
            ("its thread ended before it got the task".to_owned(), task)
        }),
        Err(e) => Err((format!("no thread: {e}"), task)),
    }
}
