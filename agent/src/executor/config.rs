//! Executor-wide settings and the wasmtime engine they build: output caps, disk checks, the
//! fuel rate, the pooling allocator's sizes.

use std::path::PathBuf;
use std::time::Duration;

use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig,
    Strategy,
};

use super::ExecError;

/// Executor-wide settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExecutorConfig {
    /// Maximum bytes of guest output kept per stdout/stderr file (default
    /// 1 MiB), so a chatty guest cannot fill the agent's disk. Further output
    /// is dropped and `"\n[tessera: output truncated]\n"` is appended once.
    pub output_cap: u64,
    /// How many trailing bytes of stdout/stderr to report in
    /// [`TaskOutcome`](super::TaskOutcome) (default 4096), small enough to ship in a status update.
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
    /// Disk cap of a task whose [`TaskSpec::disk_bytes`](super::TaskSpec::disk_bytes) is 0 (default 1 GiB).
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
    /// says so in a warning and in [`ExecStats::pool_slots`](super::ExecStats::pool_slots).
    pub pooling: Option<PoolingConfig>,
    /// Kernel CPU quotas for paced tasks (Linux, cgroup v1 `cpu` controller, as root): where
    /// set, a task offered less than one core that overdraws its share (it is CPU-bound)
    /// moves to a thread of its own in a cgroup made under this directory (e.g.
    /// `/sys/fs/cgroup/cpu/tessera`), whose CFS quota is its share of each 100 ms, and the
    /// in-process pacer lets the kernel pace it; Mesos' `--cgroups_enable_cfs`. Costs a thread
    /// and a cgroup per CPU-bound paced task while it runs; a task that sleeps or waits stays
    /// where it is. Multi-threaded (WASI threads) modules stay paced in process. If the
    /// directory cannot be made or written, the executor says so in a warning and paces in
    /// process. `None` (the default): the in-process pacer.
    #[serde(default)]
    pub cpu_quota_cgroup: Option<PathBuf>,
    /// How preview-1 modules are metered (default: [`Metering::Rewrite`]).
    #[serde(default)]
    pub metering: Metering,
    /// Compile modules in a child process under a CPU-time and a memory limit (`compiler.rs`):
    /// Cranelift's compile time grows faster than linearly with some shapes of code (1,000
    /// nested loops, 19 KB of wasm, take it hours), its memory with a function's length, and a
    /// tenant chooses the code. `None` (the default):
    /// compile in this process, unbounded. Needs [`ExecutorConfig::cache_dir`] (the child
    /// writes its code there); without one, modules compile in process.
    #[serde(default)]
    pub compiler: Option<super::CompilerCommand>,
}

/// How the executor meters a preview-1 module's CPU: what yields it to the pacer about every
/// millisecond of one core's work, stops it when killed, and counts its CPU-time budget.
/// Components, executor instances and WASI-threads modules are metered as before whatever
/// this says (fuel; epochs for threads).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metering {
    /// Wasmtime's fuel: a check at every function entry and loop header; the CPU-time budget
    /// is fuel too.
    Fuel,
    /// The module is rewritten before it is compiled (`meter.rs`): budget checks only on loop
    /// back edges and at the entry of functions that could otherwise run unbounded, their slow
    /// path a host call (`tick.rs`) around which the live locals are saved. Cheaper than fuel
    /// on call-heavy guests (BENCHMARKS.md, "Saving the live locals around the slow path's
    /// call"). Modules compile on an engine of their own without fuel, which has the pool;
    /// components and executor instances on a fuel engine, allocated on demand (so they do not
    /// count against the pool's slots).
    #[default]
    Rewrite,
}

/// Sizes of the pooling instance allocator ([`ExecutorConfig::pooling`]).
///
/// The pools are reserved when the executor starts: every task slot reserves
/// one linear memory's address space (4 GiB plus a 32 MiB guard, never
/// committed until used, so that bounds checks stay elided), a table of
/// [`PoolingConfig::table_elements`] pointers, an instance record and an
/// async stack. Slots are reused, with linear memories reset from the
/// module's copy-on-write memory image, so a launch costs no `mmap`/`munmap`
/// of a fresh reservation; the pages a task wrote are reset in place up to
/// [`PoolingConfig::keep_resident`] bytes, so a small task's end costs no
/// `madvise` either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PoolingConfig {
    /// Most tasks alive at once. A launch beyond it fails with
    /// [`Termination::StartFailed`](super::Termination::StartFailed) (its instantiation error names the
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

    /// Bytes of a freed slot's linear memory (and as many of its table) reset in place instead
    /// of handed back to the kernel: a sixteenth of [`PoolingConfig::max_task_mem`] (the
    /// agent's memory, for an agent's pool) shared over the slots, between one and 256 pages.
    /// It bounds what idle slots keep resident beyond the tasks' shares.
    pub fn keep_resident(&self) -> usize {
        const PAGE: u64 = 4096;
        let each = self.memory_bytes() / 16 / u64::from(self.tasks());
        ((each / PAGE).clamp(1, 256) * PAGE) as usize
    }

    fn allocation_config(&self) -> PoolingAllocationConfig {
        let n = self.tasks();
        let mut p = PoolingAllocationConfig::new();
        // A freed slot's pages are reset where they are: with `PAGEMAP_SCAN` (Linux 6.7+) only
        // the pages the guest wrote, copied back from the module's image or zeroed, up to
        // `keep_resident` bytes; the rest, if any, is `madvise`d away as before. No `madvise`
        // for a small guest means no TLB shootdown across the process's threads when a task
        // ends, and no page faults when the next one starts in the slot. Without the ioctl the
        // first `keep_resident` bytes are reset by `memset`.
        let keep = self.keep_resident();
        p.linear_memory_keep_resident(keep)
            .table_keep_resident(keep)
            .pagemap_scan(Enabled::Auto);
        p.total_core_instances(n.saturating_mul(CORE_INSTANCES_PER_TASK))
            .total_component_instances(n)
            .total_memories(n)
            .total_tables(n.saturating_mul(TABLES_PER_TASK))
            .total_stacks(n)
            .total_gc_heaps(n)
            .max_memory_size(self.memory_bytes() as usize)
            .table_elements(self.table_elements())
            // A WASI command has one memory and one table; allow a few more
            // (each takes a slot of its pool).
            .max_memories_per_module(4)
            .max_tables_per_module(4)
            // A component's core instances, memories and tables come from the same pools: cap
            // what one may hold, so that `max_tasks` of them always fit.
            .max_core_instances_per_component(CORE_INSTANCES_PER_TASK)
            .max_memories_per_component(1)
            .max_tables_per_component(TABLES_PER_TASK);
        p
    }
}

/// Core instances one task may hold: a preview-1 module is one; a WASI 0.2 command component
/// holds a few (its module, the preview-1 adapter, shims), with room for other toolchains. Each
/// slot reserves address space for one instance record, committed only when used.
const CORE_INSTANCES_PER_TASK: u32 = 8;

/// Tables one task may hold (a component's shims have tables of their own).
const TABLES_PER_TASK: u32 = 4;

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
            cpu_quota_cgroup: None,
            metering: Metering::Rewrite,
            compiler: None,
        }
    }
}

/// The executor's engine configuration: Cranelift, fuel metering, no epoch
/// interruption (fuel yields do its job, see `pacing.rs`), copy-on-write
/// memory images; instances allocated on demand (the executor adds the
/// pooling allocator, see [`ExecutorConfig::pooling`]).
///
/// Fuel was kept after measuring the alternatives wasmtime 48 offers (epochs with a ticker
/// thread, both, longer yield intervals, Cranelift settings, inlining): on call-heavy guests
/// every option checks at each function entry and none was clearly cheaper on all three
/// benchmark guests; the figures, rejected options included, are in BENCHMARKS.md,
/// "Metering overhead".
pub fn engine_config() -> Config {
    let mut config = Config::new();
    config
        .strategy(Strategy::Cranelift)
        .cranelift_opt_level(OptLevel::Speed)
        .consume_fuel(true)
        .memory_init_cow(true)
        // Not from the environment (`WASMTIME_BACKTRACE_DETAILS`, which changes the code's
        // compatibility hash): a compiling child starts with an empty one.
        .wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Disable);
    config
}

/// The executor's engines for `cfg`: components' (fuel, allocated on demand), modules' and the
/// pool's task slots. A compiling child process (`compiler.rs`) makes the same, so that the code
/// it writes loads in the executor.
pub(super) fn engines(cfg: &ExecutorConfig) -> Result<(Engine, Engine, u32), ExecError> {
    let pooling = cfg.pooling.as_ref();
    Ok(match cfg.metering {
        Metering::Fuel => {
            let (engine, slots) = new_engine(pooling, true)?;
            (engine.clone(), engine, slots)
        }
        // The pool goes to modules. Components are allocated on demand: a second pool of
        // the same slots doubles the kernel's mappings (a guard page per async stack), and
        // at 10,000 slots the two ran out of `vm.max_map_count` (65,530) at 10,000 tasks.
        Metering::Rewrite => {
            let (modules, slots) = new_engine(pooling, false)?;
            let (engine, _) = new_engine(None, true)?;
            (engine, modules, slots)
        }
    })
}

/// The executor's engine: [`engine_config`] plus, if asked for, the pooling
/// allocator; falls back to on-demand allocation (with a warning) if the
/// pools cannot be reserved. Returns the engine and its pool's task slots.
pub(super) fn new_engine(
    pooling: Option<&PoolingConfig>,
    fuel: bool,
) -> Result<(Engine, u32), ExecError> {
    let mut config = engine_config();
    config.consume_fuel(fuel);
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
