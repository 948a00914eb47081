//! The wasmtime executor: compiles, caches and runs tasks as WASI preview-1
//! modules, one [`Store`] per task, with memory, output, time and kill limits.
//!
//! Isolation model:
//! - the guest's only preopen is `<task_dir>/sandbox`, mounted at `/`;
//! - stdout/stderr go to `<task_dir>/stdout` and `<task_dir>/stderr`
//!   (outside the sandbox), each capped at [`ExecutorConfig::output_cap`];
//! - no stdin, no network, no inherited environment;
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
//!   ([`TaskSpec::max_cpu`]) is the store's fuel.
//!
//! A WASI preview-1 task is single-threaded: a share above one cpu buys no
//! more than one core.

mod disk;
mod limiter;
mod output;
mod pacing;
#[cfg(test)]
mod tests;

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module, OptLevel,
    PoolingAllocationConfig, Store, Strategy, Trap,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use self::limiter::MemLimiter;
use self::output::{read_tail, CappedOutput};
use self::pacing::Pacer;

pub use self::output::TRUNCATION_MARKER;

/// Fuel given to a store without a CPU-time budget: effectively unlimited;
/// such a task's fuel is used for pacing and accounting only.
const UNLIMITED_FUEL: u64 = u64::MAX / 2;

/// Executor-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorConfig {
    /// Maximum bytes of guest output kept per stdout/stderr file (default
    /// 1 MiB), so a chatty guest cannot fill the agent's disk. Further output
    /// is dropped and `"\n[tessera: output truncated]\n"` is appended once.
    pub output_cap: u64,
    /// How many trailing bytes of stdout/stderr to report in
    /// [`TaskOutcome`] (default 4096), small enough to ship in a status update.
    pub tail_bytes: usize,
    /// Where compiled modules are cached across agent restarts, as
    /// `<cache_dir>/<digest>.<engine-compat-hash>.cwasm`; `None` keeps the
    /// cache in memory only. The directory must be trusted (agent-owned):
    /// its files are loaded (mmapped) as native code, so they must only be
    /// replaced by rename, never modified in place.
    pub cache_dir: Option<PathBuf>,
    /// Fuel one core burns per second. `None` (the default) measures it when
    /// the executor starts (about 250 ms, once per process); set it to pin
    /// the CPU shares to a known rate.
    pub fuel_per_core_second: Option<u64>,
    /// Disk cap of a task whose [`TaskSpec::disk_bytes`] is 0 (default 1 GiB).
    pub default_disk_cap: u64,
    /// How often a running task's sandbox is measured (default 200 ms); it
    /// is measured once more when the task ends.
    pub disk_check_interval: Duration,
    /// The pooling instance allocator and its sizes, or `None` for
    /// wasmtime's on-demand allocator (one `mmap` per linear memory per
    /// task). Default: pooling sized by [`PoolingConfig::default`]; the
    /// agent's driver sizes it from the agent's resources
    /// ([`PoolingConfig::for_resources`]). If the pools cannot be reserved
    /// (address space), the executor falls back to on-demand allocation and
    /// says so in a warning and in [`ExecStats::pool_slots`].
    pub pooling: Option<PoolingConfig>,
}

/// Sizes of the pooling instance allocator ([`ExecutorConfig::pooling`]).
///
/// The pools are reserved when the executor starts: every task slot reserves
/// one linear memory's address space (4 GiB plus a 32 MiB guard, never
/// committed until used, so that bounds checks stay elided), a table of
/// [`PoolingConfig::table_elements`] pointers, an instance record and an
/// async stack. Slots are reused, with linear memories reset copy-on-write
/// from the module's memory image, so a launch costs no `mmap`/`munmap` of a
/// fresh reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolingConfig {
    /// Most tasks alive at once. A launch beyond it fails with
    /// [`Termination::StartFailed`] (its instantiation error names the
    /// limit). Clamped to 1..=[`PoolingConfig::MAX_TASKS`].
    pub max_tasks: u32,
    /// Largest linear memory any one task may have, in bytes (clamped to
    /// 64 KiB..=4 GiB, the per-slot reservation). Each task's own `mem` is
    /// still enforced below this by its resource limiter; a 64-bit memory
    /// cannot grow past this cap under pooling.
    pub max_task_mem: u64,
}

impl PoolingConfig {
    /// Upper bound of [`PoolingConfig::max_tasks`]: 10 000 slots reserve
    /// about 40 TiB of the 128 TiB user address space of x86-64 Linux.
    pub const MAX_TASKS: u32 = 10_000;

    /// Sized from an agent's resources: every task asks for at least one
    /// thousandth of a cpu (the master refuses `cpus = 0`), so the agent can
    /// hold at most `cpus_milli` tasks at once (capped at
    /// [`PoolingConfig::MAX_TASKS`]); a task may ask for all of the agent's
    /// memory.
    pub fn for_resources(cpus_milli: u64, mem: u64) -> Self {
        PoolingConfig {
            max_tasks: cpus_milli.clamp(1, u64::from(Self::MAX_TASKS)) as u32,
            max_task_mem: mem,
        }
    }

    fn tasks(&self) -> u32 {
        self.max_tasks.clamp(1, Self::MAX_TASKS)
    }

    fn memory_bytes(&self) -> u64 {
        self.max_task_mem.clamp(64 << 10, 4 << 30)
    }

    /// Elements of the largest table (8 bytes each): enough for the task
    /// memory cap, between 20 000 (wasmtime's default) and 2^20 (8 MiB of
    /// address space per slot). A table grown past it fails like one denied
    /// by the memory limit.
    pub fn table_elements(&self) -> usize {
        (self.memory_bytes() / 8).clamp(20_000, 1 << 20) as usize
    }

    fn allocation_config(&self) -> PoolingAllocationConfig {
        let n = self.tasks();
        let mut p = PoolingAllocationConfig::new();
        p.total_core_instances(n)
            .total_memories(n)
            .total_tables(n)
            .total_stacks(n)
            .total_gc_heaps(n)
            .max_memory_size(self.memory_bytes() as usize)
            .table_elements(self.table_elements())
            // A WASI command has one memory and one table; allow a few more
            // (each takes a slot of its pool).
            .max_memories_per_module(4)
            .max_tables_per_module(4);
        p
    }
}

impl Default for PoolingConfig {
    /// 1000 tasks of up to 4 GiB each (about 4 TiB of address space).
    fn default() -> Self {
        PoolingConfig {
            max_tasks: 1000,
            max_task_mem: 4 << 30,
        }
    }
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            output_cap: 1 << 20,
            tail_bytes: 4096,
            cache_dir: None,
            fuel_per_core_second: None,
            default_disk_cap: 1 << 30,
            disk_check_interval: Duration::from_millis(200),
            pooling: Some(PoolingConfig::default()),
        }
    }
}

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
    /// The bytes are not a valid WebAssembly module (or failed to compile).
    #[error("module {digest} is not a valid WebAssembly module: {message}")]
    Compile {
        /// Digest of the module.
        digest: String,
        /// Compiler/validator message.
        message: String,
    },
    /// The module has no exported `_start` function of type `() -> ()`, so it
    /// is not a WASI command.
    #[error("module {digest} is not a WASI command: {message}")]
    NotACommand {
        /// Digest of the module.
        digest: String,
        /// What is wrong with (or missing about) `_start`.
        message: String,
    },
    /// The module imports something the executor does not provide (only
    /// `wasi_snapshot_preview1` is available).
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

/// Everything needed to run one task.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// guest's `/`; `stdout` and `stderr` files are written next to it.
    pub task_dir: PathBuf,
    /// Cap on the total size of the guest's linear memories and tables.
    pub mem_bytes: u64,
    /// CPU share granted by the scheduler (1000 = one core): the task uses
    /// at most `cpus_milli / 1000` seconds of CPU time per second of wall
    /// time. Shares of 1000 and more are not paced (one thread cannot
    /// use more than one core); 0 counts as 1.
    pub cpus_milli: u64,
    /// Wall-clock limit for `_start`, if any.
    pub timeout: Option<Duration>,
    /// CPU-time budget, in time of one core, counted in fuel; over it the
    /// task ends with [`Termination::CpuLimit`].
    pub max_cpu: Option<Duration>,
    /// Cap on the sandbox's disk use; 0 means
    /// [`ExecutorConfig::default_disk_cap`].
    pub disk_bytes: u64,
}

/// Life-cycle notifications sent by [`Executor::launch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    /// The instance is ready and `_start` is about to run (sent at most once).
    Running,
    /// The task is over (sent exactly once, always last).
    Finished(TaskOutcome),
}

/// The result of one task run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOutcome {
    /// How the task ended.
    pub termination: Termination,
    /// Last [`ExecutorConfig::tail_bytes`] of stdout (lossy UTF-8).
    pub stdout_tail: String,
    /// Last [`ExecutorConfig::tail_bytes`] of stderr (lossy UTF-8).
    pub stderr_tail: String,
    /// Fuel (roughly: wasm instructions) consumed by the guest.
    pub fuel_consumed: u64,
    /// Wall-clock time `_start` ran (zero if it never started).
    pub wall: Duration,
    /// Part of `wall` the task was paused for being ahead of its CPU share.
    pub cpu_paused: Duration,
    /// CPU time the guest used (its thread's CPU clock around every poll).
    pub cpu_time: Duration,
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Termination {
    /// The guest returned from `_start` (code 0) or called `proc_exit(code)`.
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
    /// The task never started: bad module, missing `_start`, I/O error on the
    /// task directory, ...
    StartFailed(String),
}

/// Stops a launched task. Cloneable; killing twice (or after the task
/// finished) is harmless.
#[derive(Debug, Clone)]
pub struct KillHandle {
    tx: Arc<watch::Sender<bool>>,
}

impl KillHandle {
    /// Requests the task to stop. The guest is stopped at its next fuel yield
    /// (about a millisecond of CPU), even in `loop {}`, or at once while
    /// blocked in a WASI call, and the task finishes with
    /// [`Termination::Killed`].
    pub fn kill(&self) {
        self.tx.send_replace(true);
    }
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
            .field("modules", &self.inner.lock_modules().len())
            .field("fuel_per_core_second", &self.inner.fuel_rate)
            .field("pool_slots", &self.inner.pool_slots)
            .finish_non_exhaustive()
    }
}

/// A compiled module ready to instantiate.
#[derive(Clone)]
struct Prepared {
    pre: InstancePre<TaskState>,
}

/// Per-store data.
struct TaskState {
    wasi: WasiP1Ctx,
    limiter: MemLimiter,
}

struct Inner {
    cfg: ExecutorConfig,
    engine: Engine,
    linker: Linker<TaskState>,
    modules: Mutex<HashMap<String, Prepared>>,
    compat_hash: String,
    fuel_rate: u64,
    pool_slots: u32,
    compiles: AtomicU64,
    disk_cache_hits: AtomicU64,
    cache_rebuilds: AtomicU64,
}

impl Executor {
    /// Creates the engine (Cranelift, fuel metering, pooling allocator unless
    /// [`ExecutorConfig::pooling`] is `None`) and the WASI linker, and
    /// calibrates the fuel rate unless [`ExecutorConfig::fuel_per_core_second`]
    /// is set.
    pub fn new(cfg: ExecutorConfig) -> Result<Self, ExecError> {
        let (engine, pool_slots) = new_engine(cfg.pooling.as_ref())?;
        let fuel_rate = match cfg.fuel_per_core_second {
            Some(r) => r.max(1000),
            None => pacing::calibrated_fuel_rate(&engine).map_err(ExecError::Engine)?,
        };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s: &mut TaskState| &mut s.wasi)
            .map_err(|e| ExecError::Engine(e.to_string()))?;
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let compat_hash = format!("{:016x}", h.finish());
        if let Some(dir) = &cfg.cache_dir {
            std::fs::create_dir_all(dir).map_err(|source| ExecError::Io {
                path: dir.clone(),
                source,
            })?;
        }
        Ok(Executor {
            inner: Arc::new(Inner {
                cfg,
                engine,
                linker,
                modules: Mutex::new(HashMap::new()),
                compat_hash,
                fuel_rate,
                pool_slots,
                compiles: AtomicU64::new(0),
                disk_cache_hits: AtomicU64::new(0),
                cache_rebuilds: AtomicU64::new(0),
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
        ExecStats {
            compiles: i.compiles.load(Ordering::Relaxed),
            disk_cache_hits: i.disk_cache_hits.load(Ordering::Relaxed),
            cache_rebuilds: i.cache_rebuilds.load(Ordering::Relaxed),
            fuel_per_core_second: i.fuel_rate,
            pool_slots: i.pool_slots,
        }
    }

    /// Validates and compiles the module at `wasm_path` (or fetches it from
    /// the memory/disk cache by `digest`), so that launch failures are caught
    /// early and launch itself is fast. Compilation runs on tokio's blocking
    /// pool. The file's content is trusted to match `digest`.
    pub async fn prepare(&self, digest: &str, wasm_path: &Path) -> Result<(), ExecError> {
        self.inner.prepared(digest, wasm_path).await.map(|_| ())
    }

    /// Whether a module with this digest is already compiled in memory.
    pub fn is_prepared(&self, digest: &str) -> bool {
        self.inner.lock_modules().contains_key(digest)
    }

    /// Starts a task on the current tokio runtime (panics outside one).
    ///
    /// Calls `notify(ExecEvent::Running)` once the instance is ready and
    /// `_start` is about to run, then `notify(ExecEvent::Finished(outcome))`
    /// exactly once (also when the task fails to start, in which case
    /// `Running` is not sent). If the module was not prepared, it is compiled
    /// first. `notify` is called from a tokio task and must not block.
    pub fn launch(
        &self,
        spec: TaskSpec,
        notify: Box<dyn Fn(ExecEvent) + Send + Sync>,
    ) -> KillHandle {
        let (tx, rx) = watch::channel(false);
        let handle = KillHandle { tx: Arc::new(tx) };
        let keep_sender = handle.clone();
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let _keep_sender = keep_sender;
            let mut guard = FinishGuard {
                notify: Some(notify),
                running: false,
            };
            let outcome = inner.run(spec, rx, &mut guard).await;
            guard.finish(outcome);
        });
        handle
    }
}

/// Guarantees `Finished` is sent exactly once, even if the task future is
/// dropped (runtime shutdown) or panics.
struct FinishGuard {
    notify: Option<Box<dyn Fn(ExecEvent) + Send + Sync>>,
    running: bool,
}

impl FinishGuard {
    fn running(&mut self) {
        if let Some(n) = &self.notify {
            self.running = true;
            n(ExecEvent::Running);
        }
    }

    fn finish(&mut self, outcome: TaskOutcome) {
        if let Some(n) = self.notify.take() {
            n(ExecEvent::Finished(outcome));
        }
    }
}

impl Drop for FinishGuard {
    fn drop(&mut self) {
        let termination = if self.running {
            Termination::Killed
        } else {
            Termination::StartFailed("executor task was dropped before the task started".into())
        };
        self.finish(TaskOutcome {
            termination,
            stdout_tail: String::new(),
            stderr_tail: String::new(),
            fuel_consumed: 0,
            wall: Duration::ZERO,
            cpu_paused: Duration::ZERO,
            cpu_time: Duration::ZERO,
        });
    }
}

/// The executor's engine configuration: Cranelift, fuel metering, no epoch
/// interruption (fuel yields do its job, see `pacing.rs`), copy-on-write
/// memory images; instances allocated on demand (the executor adds the
/// pooling allocator, see [`ExecutorConfig::pooling`]).
pub fn engine_config() -> Config {
    let mut config = Config::new();
    config
        .strategy(Strategy::Cranelift)
        .cranelift_opt_level(OptLevel::Speed)
        .consume_fuel(true)
        .memory_init_cow(true);
    config
}

/// The executor's engine: [`engine_config`] plus, if asked for, the pooling
/// allocator; falls back to on-demand allocation (with a warning) if the
/// pools cannot be reserved. Returns the engine and its pool's task slots.
fn new_engine(pooling: Option<&PoolingConfig>) -> Result<(Engine, u32), ExecError> {
    let mut config = engine_config();
    if let Some(p) = pooling {
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(p.allocation_config()));
        match Engine::new(&config) {
            Ok(engine) => return Ok((engine, p.tasks())),
            Err(e) => tracing::warn!(
                max_tasks = p.tasks(),
                "cannot reserve the pooling allocator's pools, allocating instances on \
                 demand instead: {e:#}"
            ),
        }
        config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
    }
    let engine = Engine::new(&config).map_err(|e| ExecError::Engine(format!("{e:#}")))?;
    Ok((engine, 0))
}

/// How `_start` ended, before classification.
enum Ended {
    Returned(wasmtime::Result<()>),
    Killed,
    Timeout,
    Disk(u64),
}

/// Resolves when the sandbox at `sandbox` holds more than `cap` bytes,
/// with the bytes used; checks every `every`.
async fn disk_over(sandbox: PathBuf, cap: u64, every: Duration) -> u64 {
    loop {
        tokio::time::sleep(every).await;
        let s = sandbox.clone();
        if let Ok(used) = tokio::task::spawn_blocking(move || disk::usage(&s)).await {
            if used > cap {
                return used;
            }
        }
    }
}

fn valid_digest(digest: &str) -> bool {
    !digest.is_empty()
        && digest.len() <= 200
        && !digest.starts_with('.')
        && digest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Resolves once `kill` is set (never if the sender is gone, which cannot
/// happen while the task keeps its own handle).
async fn killed(kill: &mut watch::Receiver<bool>) {
    if kill.wait_for(|k| *k).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A trap's message: the trap code if there is one, else the error chain.
fn error_message(e: &wasmtime::Error) -> String {
    if let Some(trap) = e.downcast_ref::<Trap>() {
        return trap.to_string();
    }
    format!("{e:#}")
}

impl Inner {
    fn lock_modules(&self) -> std::sync::MutexGuard<'_, HashMap<String, Prepared>> {
        self.modules.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn prepared(
        self: &Arc<Self>,
        digest: &str,
        wasm_path: &Path,
    ) -> Result<Prepared, ExecError> {
        if !valid_digest(digest) {
            return Err(ExecError::InvalidDigest(digest.to_owned()));
        }
        if let Some(p) = self.lock_modules().get(digest) {
            return Ok(p.clone());
        }
        let this = self.clone();
        let d = digest.to_owned();
        let path = wasm_path.to_owned();
        let prepared = tokio::task::spawn_blocking(move || this.load_blocking(&d, &path))
            .await
            .map_err(|e| ExecError::Join(e.to_string()))??;
        self.lock_modules()
            .entry(digest.to_owned())
            .or_insert(prepared.clone());
        Ok(prepared)
    }

    /// Compiles (or loads from the disk cache) and links a module. Blocking.
    fn load_blocking(&self, digest: &str, wasm_path: &Path) -> Result<Prepared, ExecError> {
        let Some(dir) = &self.cfg.cache_dir else {
            let module = self.compile(digest, wasm_path)?;
            return self.link(digest, &module);
        };
        let cached = dir.join(format!("{digest}.{}.cwasm", self.compat_hash));
        if cached.is_file() {
            // SAFETY: the cache directory is agent-owned and trusted (see
            // `ExecutorConfig::cache_dir`), and files in it are only ever
            // written by `Module::serialize` of an engine with the same
            // compatibility hash (it is part of the file name).
            match unsafe { Module::deserialize_file(&self.engine, &cached) } {
                Ok(module) => {
                    self.disk_cache_hits.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(digest, "loaded compiled module from the disk cache");
                    return self.link(digest, &module);
                }
                Err(e) => {
                    self.cache_rebuilds.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        path = %cached.display(),
                        "discarding unusable cached module: {e:#}"
                    )
                }
            }
        }
        let module = self.compile(digest, wasm_path)?;
        let prepared = self.link(digest, &module)?;
        match module.serialize() {
            Ok(bytes) => {
                // Write a unique temporary file and rename it into place:
                // never modify a `.cwasm` in place, other executors may have
                // it mmapped (truncating a mapped file is a SIGBUS).
                static TMP_SEQ: AtomicU64 = AtomicU64::new(0);
                let tmp = dir.join(format!(
                    "{digest}.{}.cwasm.tmp{}-{}",
                    self.compat_hash,
                    std::process::id(),
                    TMP_SEQ.fetch_add(1, Ordering::Relaxed)
                ));
                let res =
                    std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, &cached));
                if let Err(e) = res {
                    let _ = std::fs::remove_file(&tmp);
                    tracing::warn!(path = %cached.display(), "cannot write module cache: {e}");
                }
            }
            Err(e) => tracing::warn!("cannot serialize module {digest}: {e:#}"),
        }
        Ok(prepared)
    }

    fn compile(&self, digest: &str, wasm_path: &Path) -> Result<Module, ExecError> {
        let bytes = std::fs::read(wasm_path).map_err(|source| ExecError::Io {
            path: wasm_path.to_owned(),
            source,
        })?;
        self.compiles.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(digest, "compiling module");
        Module::new(&self.engine, &bytes).map_err(|e| ExecError::Compile {
            digest: digest.to_owned(),
            message: format!("{e:#}"),
        })
    }

    fn link(&self, digest: &str, module: &Module) -> Result<Prepared, ExecError> {
        let not_command = |message: String| ExecError::NotACommand {
            digest: digest.to_owned(),
            message,
        };
        match module.get_export("_start") {
            None => return Err(not_command("no exported `_start` function".into())),
            Some(wasmtime::ExternType::Func(f)) => {
                if f.params().len() != 0 || f.results().len() != 0 {
                    return Err(not_command("`_start` must have type `() -> ()`".into()));
                }
            }
            Some(_) => return Err(not_command("export `_start` is not a function".into())),
        }
        let pre = self
            .linker
            .instantiate_pre(module)
            .map_err(|e| ExecError::Link {
                digest: digest.to_owned(),
                message: format!("{e:#}"),
            })?;
        Ok(Prepared { pre })
    }

    async fn run(
        self: &Arc<Self>,
        spec: TaskSpec,
        mut kill: watch::Receiver<bool>,
        guard: &mut FinishGuard,
    ) -> TaskOutcome {
        let stdout_path = spec.task_dir.join("stdout");
        let stderr_path = spec.task_dir.join("stderr");
        let tail_bytes = self.cfg.tail_bytes;
        let finish = |termination: Termination,
                      fuel_consumed: u64,
                      wall: Duration,
                      cpu_paused: Duration,
                      cpu_time: Duration| TaskOutcome {
            termination,
            stdout_tail: read_tail(&stdout_path, tail_bytes),
            stderr_tail: read_tail(&stderr_path, tail_bytes),
            fuel_consumed,
            wall,
            cpu_paused,
            cpu_time,
        };
        let mut pacer = Pacer::new(spec.cpus_milli, self.fuel_rate);
        let initial_fuel = match spec.max_cpu {
            Some(d) => {
                let fuel = (d.as_secs_f64() * self.fuel_rate as f64).min(UNLIMITED_FUEL as f64);
                (fuel as u64).max(1)
            }
            None => UNLIMITED_FUEL,
        };

        let setup = tokio::select! {
            biased;
            () = killed(&mut kill) => Err(Termination::Killed),
            r = self.setup(&spec, initial_fuel, pacer.interval()) => r,
        };
        let (mut store, start) = match setup {
            Ok(s) => s,
            Err(t) => return finish(t, 0, Duration::ZERO, Duration::ZERO, Duration::ZERO),
        };

        let sandbox = spec.task_dir.join("sandbox");
        let disk_cap = match spec.disk_bytes {
            0 => self.cfg.default_disk_cap,
            n => n,
        };
        guard.running();
        let started = Instant::now();
        pacer.start();
        let timeout = async {
            match spec.timeout {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        let ended = tokio::select! {
            biased;
            () = killed(&mut kill) => Ended::Killed,
            () = timeout => Ended::Timeout,
            used = disk_over(sandbox.clone(), disk_cap, self.cfg.disk_check_interval) => {
                Ended::Disk(used)
            }
            r = pacer.run(start.call_async(&mut store, ())) => Ended::Returned(r),
        };
        let wall = started.elapsed();
        let fuel_consumed = store
            .get_fuel()
            .map(|left| initial_fuel.saturating_sub(left))
            .unwrap_or(0);
        // A last look at the sandbox, unless the task was stopped from outside.
        let ended = match ended {
            Ended::Returned(r) => {
                let s = sandbox.clone();
                match tokio::task::spawn_blocking(move || disk::usage(&s)).await {
                    Ok(used) if used > disk_cap => Ended::Disk(used),
                    _ => Ended::Returned(r),
                }
            }
            other => other,
        };
        let termination = match ended {
            Ended::Killed => Termination::Killed,
            Ended::Timeout => Termination::Timeout,
            Ended::Disk(used) => Termination::DiskLimit(format!(
                "sandbox uses {used} bytes, over its disk cap of {disk_cap} bytes"
            )),
            Ended::Returned(Ok(())) => Termination::Exited(0),
            Ended::Returned(Err(e)) => {
                if let Some(exit) = e.downcast_ref::<I32Exit>() {
                    Termination::Exited(exit.0)
                } else if e.downcast_ref::<Trap>() == Some(&Trap::OutOfFuel)
                    && spec.max_cpu.is_some()
                {
                    let budget = spec.max_cpu.unwrap_or_default();
                    Termination::CpuLimit(format!(
                        "CPU-time budget of {} ms used up ({initial_fuel} fuel at {} fuel per \
                         core-second)",
                        budget.as_millis(),
                        self.fuel_rate
                    ))
                } else if let Some(denied) = store.data().limiter.denied() {
                    Termination::MemoryLimit(format!("{denied} ({})", error_message(&e)))
                } else {
                    Termination::Trapped(error_message(&e))
                }
            }
        };
        // Close the output files before reading the tails.
        drop(store);
        finish(
            termination,
            fuel_consumed,
            wall,
            pacer.paused(),
            pacer.cpu_time(),
        )
    }

    /// Builds the store and instance; errors are the task's termination.
    async fn setup(
        self: &Arc<Self>,
        spec: &TaskSpec,
        initial_fuel: u64,
        yield_interval: u64,
    ) -> Result<(Store<TaskState>, wasmtime::TypedFunc<(), ()>), Termination> {
        let prepared = self
            .prepared(&spec.digest, &spec.wasm_path)
            .await
            .map_err(|e| Termination::StartFailed(e.to_string()))?;
        let io_err = |what: &Path, e: std::io::Error| {
            Termination::StartFailed(format!("cannot set up {}: {e}", what.display()))
        };
        let sandbox = spec.task_dir.join("sandbox");
        tokio::fs::create_dir_all(&sandbox)
            .await
            .map_err(|e| io_err(&sandbox, e))?;
        let cap = self.cfg.output_cap;
        let stdout_path = spec.task_dir.join("stdout");
        let stderr_path = spec.task_dir.join("stderr");
        let stdout =
            CappedOutput::create(&stdout_path, cap).map_err(|e| io_err(&stdout_path, e))?;
        let stderr =
            CappedOutput::create(&stderr_path, cap).map_err(|e| io_err(&stderr_path, e))?;

        let mut builder = WasiCtxBuilder::new();
        builder
            .args(&spec.args)
            .envs(&spec.env)
            .stdout(stdout)
            .stderr(stderr);
        builder
            .preopened_dir(&sandbox, "/", FsPerms::ReadWrite)
            .map_err(|e| {
                Termination::StartFailed(format!("cannot preopen {}: {e:#}", sandbox.display()))
            })?;
        let wasi = builder.build_p1();

        let mut store = Store::new(
            &self.engine,
            TaskState {
                wasi,
                limiter: MemLimiter::new(spec.mem_bytes),
            },
        );
        store.limiter(|s| &mut s.limiter);
        let store_err =
            |e: wasmtime::Error| Termination::StartFailed(format!("store setup: {e:#}"));
        store.set_fuel(initial_fuel).map_err(store_err)?;
        store
            .fuel_async_yield_interval(Some(yield_interval))
            .map_err(store_err)?;

        let instance = match prepared.pre.instantiate_async(&mut store).await {
            Ok(i) => i,
            Err(e) => {
                return Err(match store.data().limiter.denied() {
                    Some(denied) => {
                        Termination::MemoryLimit(format!("{denied} (instantiation failed: {e:#})"))
                    }
                    None => Termination::StartFailed(format!("instantiation failed: {e:#}")),
                })
            }
        };
        let start = instance
            .get_typed_func::<(), ()>(&mut store, "_start")
            .map_err(|e| Termination::StartFailed(format!("cannot get `_start`: {e:#}")))?;
        Ok((store, start))
    }
}
