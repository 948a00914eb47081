//! Multi-threaded tasks: preview-1 modules built for `wasm32-wasip1-threads` (they import
//! `wasi::thread-spawn` and a shared memory), each guest thread on its own OS thread, paced
//! over the **sum** of the task's threads' CPU clocks so a task offered `c` cpus uses `c` cores
//! at most, whatever its thread count.
//!
//! Why a path of its own:
//! - wasmtime 48 no longer ships `wasmtime-wasi-threads` (removed upstream; the last release,
//!   46, also exits the whole process when a spawned thread traps) nor `wasi-common` (last
//!   release 46, for wasmtime 46), so `thread-spawn` is implemented here: instantiate the same
//!   module in a new [`Store`] on a new OS thread with the same [`SharedMemory`] imported and
//!   call `wasi_thread_start(tid, arg)`;
//! - shared memories need an engine with `shared_memory(true)` and never come from the
//!   pooling allocator, so threaded tasks get their own [`Engine`]: threads enabled, on-demand
//!   allocation, **epoch interruption instead of fuel** (one ticker thread advances the epoch
//!   every [`TICK`] while threaded tasks run); each thread's epoch callback adds the thread's CPU clock to the
//!   task's sum, sleeps the thread while the task is ahead of its share (a token bucket refilled
//!   at `cpus` cores), and traps the thread once the task has ended (kill, timeout, disk cap,
//!   CPU budget, another thread's trap or `proc_exit`, or `_start` returning);
//! - the WASI context must be one for all threads (one fd table), but wasmtime-wasi's
//!   [`WasiP1Ctx`] is neither `Clone` nor shareable, so it lives in the task and is *lent* to
//!   one thread per WASI call: the linker's accessor takes it (waiting while another thread
//!   holds it) and the store's call hook gives it back when the call returns. WASI calls of a
//!   task are therefore serialised (a thread sleeping in `poll_oneoff` delays the others' WASI
//!   calls, never their computation); the sandbox (when the task asks for one) and the
//!   read-only data sets are those of single-thread tasks (`run.rs`), and the output goes to
//!   capped files in the task directory (`output.rs`), never to the in-memory output store.
//!
//! Limits: the shared memory's maximum is clamped to the task's `mem` (a module whose minimum
//! is above it does not start); at most [`MAX_THREADS`] threads run at once (beyond it
//! `thread-spawn` fails and the guest's `pthread_create` returns `EAGAIN`). A trap or
//! `proc_exit` in any thread ends the whole task (never the agent). Threads blocked in
//! `memory.atomic.wait` (e.g. `join`) cannot be interrupted by wasmtime, so once the task has
//! ended a background sweep `atomic.notify`s every address of the memory until they are gone;
//! a thread in a WASI sleep leaves when its sleep returns. The outcome is reported after all
//! threads left or [`EXIT_GRACE`] (a few ticks), whichever is first.
//!
//! `TaskOutcome::cpu_time` is the sum of the threads' CPU clocks, `cpu_paused` the longest
//! time any one thread was paused by pacing, and `fuel_consumed` is 0 (no fuel on this engine).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use wasmtime::{
    CallHook, Caller, Engine, Extern, Linker, MemoryType, Module, SharedMemory, Store, Trap,
    UpdateDeadline,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, I32Exit};

use super::compile_jobs::CompileJobs;
use super::compiler::{self, compat_hash, ChildError, CompilerCommand, Refusals, Request};
use super::limiter::MemLimiter;
use super::output::{read_tail, CappedOutput};
use super::pacing::thread_cpu_time;
use super::run::{
    disk_limit, needs_sandbox, preopen_datasets, supervise, task_wasi, Ended, FinishGuard,
};
use super::{ExecError, ExecutorConfig, TaskOutcome, TaskSpec, Termination};
use crate::workdir::{ModuleCacheDir, TaskDir};

/// Most threads (the main one included) a task may run at once.
pub const MAX_THREADS: usize = 64;

/// Period of the epoch ticker: pacing, kills and timeouts act within about this.
const TICK: Duration = Duration::from_millis(1);

/// Longest a task's outcome waits for its threads to leave after it ended: a thread running
/// wasm leaves at its next tick, so after a few ticks only threads blocked in
/// `memory.atomic.wait` or a WASI sleep can remain; they use no CPU, can no longer reach WASI
/// (the call hook refuses), and leave in the background.
const EXIT_GRACE: Duration = Duration::from_millis(3);

/// CPU time a task may bank while idle, in milliseconds of its share. 20 ms rather than 5: with
/// 5, the tokens its threads could not use while they slept off a debt together were thrown
/// away, and a 4-thread guest got 0.89 of 1 cpu and 1.85 of 2 on an idle machine (20 ms: 1.01
/// and 1.95, the machine giving 1.96).
const BURST_MS: f64 = 20.0;

/// Size of a wasm page.
const PAGE: u64 = 65536;

/// Compiles a threaded module in a child process under `cmd`'s limit, through a temporary file
/// of the module cache `dir` (named as the cache's are, for its collection), and loads it
/// (threaded modules are kept in memory only).
fn compile_in_child(
    engine: &Engine,
    cmd: &CompilerCommand,
    dir: &Path,
    config: super::ExecutorConfig,
    digest: &str,
    wasm: &Path,
    cancel: &AtomicBool,
) -> Result<Module, ChildError> {
    let compat = compat_hash(&[engine], false);
    let request = Request {
        config,
        threads: true,
        compat,
        wasm: wasm.to_owned(),
        out: ModuleCacheDir::new(dir).temp_entry(
            digest,
            &format!("{compat:016x}"),
            &super::cache::unique_suffix(),
        ),
    };
    compiler::compile_in_child(cmd, &request, cancel, |out| {
        // SAFETY: the file was just written by `Engine::precompile_module` of an engine whose
        // compatibility hash the child checked against this one's, in the agent-owned cache
        // directory (see `ExecutorConfig::cache_dir`).
        unsafe { Module::deserialize_file(engine, out) }
            .map_err(|e| ChildError::Invalid(format!("{e:#}")))
    })
}

/// Reads and compiles the module at `wasm` (of `digest`) if it is a threaded one, in process
/// or in a child as `compiler` says (a child's compile gives up when `cancel` is raised);
/// `None` if it is not threaded. Blocking.
fn compile_threaded(
    engine: &Engine,
    compiler: Option<(CompilerCommand, PathBuf, super::ExecutorConfig)>,
    refused: &Refusals,
    digest: &str,
    wasm: &Path,
    cancel: &AtomicBool,
) -> Result<Option<Module>, ExecError> {
    let bytes = std::fs::read(wasm).map_err(|source| ExecError::Io {
        path: wasm.to_owned(),
        source,
    })?;
    if !mentions_thread_spawn(&bytes) || wasmparser::Parser::is_component(&bytes) {
        return Ok(None);
    }
    refused.check(digest)?;
    let module = match compiler {
        None => Module::new(engine, &bytes).map_err(|e| ChildError::Invalid(format!("{e:#}"))),
        Some((cmd, dir, config)) => {
            compile_in_child(engine, &cmd, &dir, config, digest, wasm, cancel)
        }
    }
    .map_err(|e| refused.error(digest, e))?;
    let threaded = module
        .imports()
        .any(|i| i.module() == "wasi" && i.name() == "thread-spawn");
    Ok(threaded.then_some(module))
}

/// The compiled threaded modules, locked.
fn lock_modules(
    modules: &Mutex<HashMap<String, Module>>,
) -> MutexGuard<'_, HashMap<String, Module>> {
    modules.lock().unwrap_or_else(|e| e.into_inner())
}

/// Checks what a threaded module must export and import.
fn check_threaded(digest: &str, module: &Module) -> Result<(), ExecError> {
    let not_command = |message: &str| ExecError::NotACommand {
        digest: digest.to_owned(),
        message: message.to_owned(),
    };
    let exports: Vec<String> = module.exports().map(|e| e.name().to_owned()).collect();
    if !exports.iter().any(|e| e == "_start") {
        return Err(not_command("no `_start` export"));
    }
    if !exports.iter().any(|e| e == "wasi_thread_start") {
        return Err(not_command(
            "imports `wasi::thread-spawn` but exports no `wasi_thread_start`",
        ));
    }
    if shared_memory_import(module).is_none() {
        return Err(not_command(
            "imports `wasi::thread-spawn` but no shared memory",
        ));
    }
    // Anything else must be WASI preview 1 (checked by name at instantiation).
    let unknown = module.imports().find(|i| {
        !matches!(i.ty(), wasmtime::ExternType::Memory(_))
            && i.module() != "wasi_snapshot_preview1"
            && !(i.module() == "wasi" && i.name() == "thread-spawn")
    });
    if let Some(import) = unknown {
        return Err(ExecError::Link {
            digest: digest.to_owned(),
            message: format!(
                "unknown import `{}::{}` (a threaded module may import WASI preview 1, \
                 `wasi::thread-spawn` and one shared memory)",
                import.module(),
                import.name()
            ),
        });
    }
    Ok(())
}

/// Whether the module bytes are a WASI-threads module (they import `wasi::thread-spawn`);
/// a byte search first, so that ordinary modules cost one scan.
fn mentions_thread_spawn(bytes: &[u8]) -> bool {
    bytes.windows(12).any(|w| w == b"thread-spawn")
}

/// The engine, linker and compiled modules of threaded tasks.
pub(super) struct Threads {
    /// Threads and shared memories on, epoch interruption, no fuel, no pooling.
    engine: Engine,
    /// WASI preview 1 (sync, through the lent context) and `wasi::thread-spawn`.
    linker: Linker<ThreadState>,
    /// Compiled threaded modules by digest (shared with the compile jobs, which keep what
    /// they compile).
    modules: Arc<Mutex<HashMap<String, Module>>>,
    /// Compiles in progress (whether each module turned out threaded), stopped when no task
    /// waits for them.
    jobs: CompileJobs<bool>,
    /// Advances the engine's epoch while threaded tasks run.
    ticker: Arc<Ticker>,
    /// Where threaded modules compile, if in a child process: its command, the directory its
    /// code is written to (the module cache's), the executor's settings.
    compiler: Option<(CompilerCommand, PathBuf, super::ExecutorConfig)>,
    /// Threaded modules whose compile used its CPU-time or memory limit.
    refused: Arc<Refusals>,
}

/// The engine of threaded modules: threads and shared memories on, epoch interruption, no
/// fuel, no pooling. Also made by a compiling child (`compiler.rs`).
pub(super) fn engine() -> Result<Engine, ExecError> {
    let mut config = wasmtime::Config::new();
    config
        .cranelift_opt_level(wasmtime::OptLevel::Speed)
        .wasm_threads(true)
        .shared_memory(true)
        .epoch_interruption(true)
        // Not from the environment (`WASMTIME_BACKTRACE_DETAILS`, which changes the code's
        // compatibility hash): a compiling child starts with an empty one.
        .wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Disable);
    Engine::new(&config).map_err(|e| ExecError::Engine(format!("{e:#}")))
}

impl Threads {
    /// Creates the engine and linker of threaded tasks, which compile as `cfg` says
    /// ([`ExecutorConfig::compiler`](super::ExecutorConfig::compiler)).
    pub(super) fn new(cfg: &super::ExecutorConfig) -> Result<Self, ExecError> {
        let engine = engine()?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut ThreadState| s.wasi())
            .map_err(|e| ExecError::Engine(format!("{e:#}")))?;
        linker
            .func_wrap(
                "wasi",
                "thread-spawn",
                |caller: Caller<'_, ThreadState>, arg: i32| -> i32 {
                    TaskShared::spawn(&caller.data().task, arg)
                },
            )
            .map_err(|e| ExecError::Engine(format!("{e:#}")))?;
        Ok(Threads {
            ticker: Arc::new(Ticker {
                engine: engine.clone(),
                state: Mutex::new((0, false)),
            }),
            engine,
            linker,
            modules: Arc::default(),
            jobs: CompileJobs::default(),
            compiler: cfg
                .compiler
                .clone()
                .zip(cfg.cache_dir.clone())
                .map(|(cmd, dir)| (cmd, dir, cfg.clone())),
            refused: Arc::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Module>> {
        lock_modules(&self.modules)
    }

    /// Whether `digest` is a prepared threaded module.
    pub(super) fn contains(&self, digest: &str) -> bool {
        self.lock().contains_key(digest)
    }

    /// Compiles the module at `path` for this engine if it is a threaded one; `Ok(false)` if it
    /// is not (then the ordinary path handles it).
    /// Once for every concurrent caller, stopped if they are all dropped before it ends.
    pub(super) async fn prepare(&self, digest: &str, path: &Path) -> Result<bool, ExecError> {
        if self.contains(digest) {
            return Ok(true);
        }
        // It names the compile's temporary file.
        if !super::cache::valid_digest(digest) {
            return Err(ExecError::InvalidDigest(digest.to_owned()));
        }
        let engine = self.engine.clone();
        let compiler = self.compiler.clone();
        let refused = self.refused.clone();
        let modules = self.modules.clone();
        let (d, wasm) = (digest.to_owned(), path.to_owned());
        self.jobs
            .run(digest, move |cancel| {
                // A job that ended since the lookup above kept its module.
                if lock_modules(&modules).contains_key(&d) {
                    return Ok(true);
                }
                let Some(module) =
                    compile_threaded(&engine, compiler, &refused, &d, &wasm, cancel)?
                else {
                    return Ok(false);
                };
                check_threaded(&d, &module)?;
                lock_modules(&modules).insert(d, module);
                Ok(true)
            })
            .await
    }

    /// Runs one threaded task to its end (`Running` through `guard` once `_start` is about to
    /// run); the outcome is for the caller to send.
    pub(super) async fn run(
        &self,
        cfg: &ExecutorConfig,
        spec: TaskSpec,
        mut kill: watch::Receiver<bool>,
        guard: &mut FinishGuard,
    ) -> TaskOutcome {
        let dir = TaskDir::new(&spec.task_dir);
        let stdout_path = dir.stdout();
        let stderr_path = dir.stderr();
        let tail = cfg.tail_bytes;
        let finish = |termination, wall, paused, cpu| TaskOutcome {
            termination,
            stdout_tail: read_tail(&stdout_path, tail),
            stderr_tail: read_tail(&stderr_path, tail),
            fuel_consumed: 0,
            wall,
            cpu_paused: paused,
            cpu_time: cpu,
        };
        let task = match self.setup(cfg, &spec).await {
            Ok(t) => t,
            Err(t) => return finish(t, Duration::ZERO, Duration::ZERO, Duration::ZERO),
        };
        let disk_cap = match spec.disk_bytes {
            0 => cfg.default_disk_cap,
            n => n,
        };
        guard.started();
        let started = Instant::now();
        task.bucket().last = started;
        self.ticker.enter();
        task.live.fetch_add(1, Ordering::SeqCst);
        let main = task.clone();
        if let Err(e) = std::thread::Builder::new()
            .name("tessera-wasm-main".into())
            .spawn(move || main.run_thread(None))
        {
            task.thread_left();
            task.end(Termination::StartFailed(format!(
                "cannot start the main thread: {e}"
            )));
        }
        let mut end_rx = task.ended.subscribe();
        let ended = supervise(
            async move {
                let _ = end_rx.wait_for(Option::is_some).await;
            },
            &mut kill,
            spec.timeout,
            needs_sandbox(&spec).then(|| dir.sandbox()).as_deref(),
            disk_cap,
            cfg.disk_check_interval,
        )
        .await;
        match ended {
            Ended::Killed => task.end(Termination::Killed),
            Ended::Timeout => task.end(Termination::Timeout),
            Ended::Disk(used) => task.end(disk_limit(used, disk_cap)),
            Ended::Returned(()) => {}
        }
        let wall = started.elapsed();
        // Let the threads leave (those in `atomic.wait` need a nudge), for a bounded time.
        let nudged = task.clone();
        std::thread::spawn(move || nudged.nudge_until_gone());
        let mut gone = task.gone.subscribe();
        let _ = tokio::time::timeout(EXIT_GRACE, gone.wait_for(|g| *g)).await;
        let termination = task.ended.borrow().clone().unwrap_or(Termination::Killed);
        finish(
            termination,
            wall,
            Duration::from_nanos(task.paused_ns.load(Ordering::Relaxed)),
            Duration::from_nanos(task.cpu_ns.load(Ordering::Relaxed)),
        )
    }

    /// The task's shared state: its WASI context (sandbox, data sets, output), memory, share.
    async fn setup(
        &self,
        cfg: &ExecutorConfig,
        spec: &TaskSpec,
    ) -> Result<Arc<TaskShared>, Termination> {
        let start_failed = Termination::StartFailed;
        let cached = self.lock().get(&spec.digest).cloned();
        let module = match cached {
            Some(m) => m,
            None => {
                drop(self.prepare(&spec.digest, &spec.wasm_path).await);
                self.lock().get(&spec.digest).cloned().ok_or_else(|| {
                    start_failed(format!("module {} is not a threaded module", spec.digest))
                })?
            }
        };
        let io_err = |what: &Path, e: std::io::Error| {
            Termination::StartFailed(format!("cannot set up {}: {e}", what.display()))
        };
        let dir = TaskDir::new(&spec.task_dir);
        let sandbox = dir.sandbox();
        // A sandbox only when the task asks for one (or has data sets); the output always goes
        // to files in the task directory (not the executor's in-memory store).
        let with_sandbox = needs_sandbox(spec);
        let made = if with_sandbox {
            &sandbox
        } else {
            &spec.task_dir
        };
        tokio::fs::create_dir_all(made)
            .await
            .map_err(|e| io_err(made, e))?;
        let (so, se) = (dir.stdout(), dir.stderr());
        let stdout = CappedOutput::create(&so, cfg.output_cap).map_err(|e| io_err(&so, e))?;
        let stderr = CappedOutput::create(&se, cfg.output_cap).map_err(|e| io_err(&se, e))?;
        let mut builder = task_wasi(&spec.args, &spec.env, stdout, stderr);
        if with_sandbox {
            builder
                .preopened_dir(&sandbox, "/", FsPerms::ReadWrite)
                .map_err(|e| {
                    start_failed(format!("cannot preopen {}: {e:#}", sandbox.display()))
                })?;
            preopen_datasets(&mut builder, &sandbox, &spec.datasets).map_err(start_failed)?;
        }
        let wasi = builder.build_p1();

        // The shared memory, its maximum clamped to the task's `mem`.
        let (import_module, import_name, ty) = shared_memory_import(&module)
            .ok_or_else(|| start_failed("the module imports no shared memory".into()))?;
        let cap_pages = spec.mem_bytes / PAGE;
        let declared_max = ty.maximum().unwrap_or(u64::from(u32::MAX / PAGE as u32));
        let max = declared_max.min(cap_pages);
        if ty.minimum() > max {
            return Err(Termination::MemoryLimit(format!(
                "the shared memory needs {} bytes at least, over the task's memory cap of {} \
                 bytes",
                ty.minimum() * PAGE,
                spec.mem_bytes
            )));
        }
        let as_u32 = |p: u64| u32::try_from(p).unwrap_or(u32::MAX);
        let memory = SharedMemory::new(
            &self.engine,
            MemoryType::shared(as_u32(ty.minimum()), as_u32(max)),
        )
        .map_err(|e| start_failed(format!("cannot create the shared memory: {e:#}")))?;
        let rate = spec.cpus_milli.max(1) as f64 / 1000.0;
        let (ended, _) = watch::channel(None);
        let (gone, _) = watch::channel(false);
        Ok(Arc::new(TaskShared {
            engine: self.engine.clone(),
            ticker: self.ticker.clone(),
            module,
            linker: self.linker.clone(),
            memory_import: (import_module, import_name),
            memory,
            mem_bytes: spec.mem_bytes,
            max_bytes: max * PAGE,
            wasi: Mutex::new(Some(wasi)),
            wasi_back: Condvar::new(),
            rate,
            bucket: Mutex::new(Bucket {
                tokens: rate * BURST_MS * 1e6,
                last: Instant::now(),
            }),
            wake: Condvar::new(),
            cpu_ns: AtomicU64::new(0),
            paused_ns: AtomicU64::new(0),
            budget_ns: spec
                .max_cpu
                .map(|d| d.as_nanos().min(u64::MAX as u128) as u64),
            next_tid: AtomicI32::new(1),
            live: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
            ended,
            gone,
        }))
    }
}

/// The module's shared memory import: `(module, name, type)`.
fn shared_memory_import(module: &Module) -> Option<(String, String, MemoryType)> {
    module.imports().find_map(|i| match i.ty() {
        wasmtime::ExternType::Memory(m) if m.is_shared() => {
            Some((i.module().to_owned(), i.name().to_owned(), m))
        }
        _ => None,
    })
}

/// The engine's one epoch ticker: a thread advancing the epoch every [`TICK`] while any
/// threaded task has threads (one for all tasks, so that each thread's callback runs once a
/// tick however many tasks there are).
struct Ticker {
    engine: Engine,
    /// Tasks with threads, and whether the ticker thread runs.
    state: Mutex<(usize, bool)>,
}

impl Ticker {
    fn lock(&self) -> MutexGuard<'_, (usize, bool)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A task starts: make sure the ticker runs.
    fn enter(self: &Arc<Self>) {
        let mut st = self.lock();
        st.0 += 1;
        if !st.1 {
            let me = self.clone();
            let spawned = std::thread::Builder::new()
                .name("tessera-wasm-ticker".into())
                .spawn(move || loop {
                    std::thread::sleep(TICK);
                    me.engine.increment_epoch();
                    let mut st = me.lock();
                    if st.0 == 0 {
                        st.1 = false;
                        return;
                    }
                });
            match spawned {
                Ok(_) => st.1 = true,
                Err(e) => tracing::warn!("cannot start the threaded tasks' epoch ticker: {e}"),
            }
        }
    }

    /// A task's threads have all left.
    fn leave(&self) {
        let mut st = self.lock();
        st.0 = st.0.saturating_sub(1);
    }
}

/// The CPU share's token bucket, in nanoseconds of CPU time.
struct Bucket {
    /// CPU time the task may still use now (negative: a debt to sleep off).
    tokens: f64,
    /// When `tokens` was last refilled.
    last: Instant,
}

/// What the threads of one task share.
struct TaskShared {
    engine: Engine,
    /// Told when the task's threads have all left.
    ticker: Arc<Ticker>,
    module: Module,
    /// The threads' linker (the shared memory is defined in each thread's copy).
    linker: Linker<ThreadState>,
    /// Where the module imports its shared memory from: `(module, name)`.
    memory_import: (String, String),
    memory: SharedMemory,
    /// The task's memory cap, for messages.
    mem_bytes: u64,
    /// The shared memory's maximum, in bytes.
    max_bytes: u64,
    /// The WASI context, when no thread has it lent.
    wasi: Mutex<Option<WasiP1Ctx>>,
    /// Signalled when the context is given back.
    wasi_back: Condvar,
    /// Cores the task may use.
    rate: f64,
    bucket: Mutex<Bucket>,
    /// Signalled when the task ends, to wake threads paused by pacing.
    wake: Condvar,
    /// Sum of the threads' CPU clocks.
    cpu_ns: AtomicU64,
    /// Longest total pause of any one thread.
    paused_ns: AtomicU64,
    /// The CPU-time budget, if any.
    budget_ns: Option<u64>,
    next_tid: AtomicI32,
    /// Threads running (or about to).
    live: AtomicUsize,
    /// The task has ended: threads must leave.
    stopped: AtomicBool,
    /// How the task ended (first wins).
    ended: watch::Sender<Option<Termination>>,
    /// Every thread has left.
    gone: watch::Sender<bool>,
}

/// Per-thread store data.
struct ThreadState {
    task: Arc<TaskShared>,
    /// The task's WASI context while this thread is in a WASI call.
    wasi: Option<WasiP1Ctx>,
    /// Caps this thread's own tables (and any non-shared memory) at the task's `mem`.
    limiter: MemLimiter,
    /// This thread's CPU clock when last added to the task's sum.
    cpu_mark: Duration,
    /// Time this thread spent paused by pacing.
    paused: Duration,
}

impl ThreadState {
    /// Borrows the task's WASI context for the current call (given back by the call hook).
    fn wasi(&mut self) -> &mut WasiP1Ctx {
        let task = &self.task;
        self.wasi.get_or_insert_with(|| task.take_wasi())
    }

    /// Gives the WASI context back, if this thread holds it.
    fn give_back(&mut self) {
        if let Some(w) = self.wasi.take() {
            self.task.put_wasi(w);
        }
    }

    /// Adds this thread's CPU time since the last call to the task's sum; returns it.
    fn account(&mut self) -> u64 {
        let now = thread_cpu_time();
        let delta = now.saturating_sub(self.cpu_mark);
        self.cpu_mark = now;
        let ns = delta.as_nanos().min(u64::MAX as u128) as u64;
        self.task.cpu_ns.fetch_add(ns, Ordering::Relaxed);
        ns
    }

    /// The epoch callback: account, stop if the task ended or its budget is used up, pace.
    fn tick(&mut self) -> wasmtime::Result<UpdateDeadline> {
        let used = self.account();
        let task = self.task.clone();
        if let Some(budget) = task.budget_ns {
            if task.cpu_ns.load(Ordering::Relaxed) > budget {
                task.end(Termination::CpuLimit(format!(
                    "CPU-time budget of {} ms used up (summed over the task's threads)",
                    budget / 1_000_000
                )));
            }
        }
        task.check_stop()?;
        let paused = task.pace(used)?;
        if !paused.is_zero() {
            self.paused += paused;
            let ns = self.paused.as_nanos().min(u64::MAX as u128) as u64;
            task.paused_ns.fetch_max(ns, Ordering::Relaxed);
            // The pause is not this thread's CPU time.
            self.cpu_mark = thread_cpu_time();
        }
        Ok(UpdateDeadline::Continue(1))
    }
}

impl Drop for ThreadState {
    fn drop(&mut self) {
        self.give_back();
    }
}

/// The trap that makes a thread leave a task that has ended.
#[derive(Debug)]
struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the task has ended")
    }
}

impl std::error::Error for Stopped {}

impl TaskShared {
    fn take_wasi(&self) -> WasiP1Ctx {
        let mut slot = self.wasi.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(w) = slot.take() {
                return w;
            }
            slot = self.wasi_back.wait(slot).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn put_wasi(&self, wasi: WasiP1Ctx) {
        *self.wasi.lock().unwrap_or_else(|e| e.into_inner()) = Some(wasi);
        self.wasi_back.notify_one();
    }

    fn bucket(&self) -> MutexGuard<'_, Bucket> {
        self.bucket.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the task (the first termination wins) and makes every thread leave.
    fn end(&self, termination: Termination) {
        self.ended.send_if_modified(|e| {
            if e.is_none() {
                *e = Some(termination);
                true
            } else {
                false
            }
        });
        self.stopped.store(true, Ordering::SeqCst);
        let _guard = self.bucket();
        self.wake.notify_all();
    }

    fn check_stop(&self) -> wasmtime::Result<()> {
        if self.stopped.load(Ordering::SeqCst) {
            Err(wasmtime::Error::new(Stopped))
        } else {
            Ok(())
        }
    }

    /// Charges `used` ns of CPU to the bucket and, while the task is ahead of its share,
    /// pauses the calling thread; returns how long it paused.
    fn pace(&self, used: u64) -> wasmtime::Result<Duration> {
        let per_ns = self.rate; // CPU ns the task earns per wall ns
        let cap = per_ns * BURST_MS * 1e6;
        let mut b = self.bucket();
        let refill = |b: &mut Bucket| {
            let now = Instant::now();
            b.tokens = (b.tokens + per_ns * now.duration_since(b.last).as_nanos() as f64).min(cap);
            b.last = now;
        };
        refill(&mut b);
        b.tokens -= used as f64;
        let began = Instant::now();
        while b.tokens < 0.0 {
            let wait = Duration::from_nanos((-b.tokens / per_ns) as u64 + 1);
            b = self
                .wake
                .wait_timeout(b, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            if self.stopped.load(Ordering::SeqCst) {
                return Err(wasmtime::Error::new(Stopped));
            }
            refill(&mut b);
        }
        Ok(began.elapsed())
    }

    /// `wasi::thread-spawn`: a new thread running `wasi_thread_start(tid, arg)`; its id, or
    /// -1 when the task has ended, has [`MAX_THREADS`] threads, or no OS thread can be made.
    fn spawn(task: &Arc<TaskShared>, arg: i32) -> i32 {
        if task.stopped.load(Ordering::SeqCst) {
            return -1;
        }
        let reserved = task
            .live
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_THREADS).then_some(n + 1)
            });
        if reserved.is_err() {
            return -1;
        }
        let tid = task.next_tid.fetch_add(1, Ordering::SeqCst) & 0x1FFF_FFFF;
        let t = task.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("tessera-wasm-{tid}"))
            .spawn(move || t.run_thread(Some((tid, arg))));
        match spawned {
            Ok(_) => tid,
            Err(e) => {
                tracing::warn!("thread-spawn: cannot start an OS thread: {e}");
                task.thread_left();
                -1
            }
        }
    }

    /// One guest thread, from instantiation to its end: `_start` for the main thread (`None`),
    /// `wasi_thread_start(tid, arg)` for the others.
    fn run_thread(self: Arc<Self>, spawned: Option<(i32, i32)>) {
        let mut store = Store::new(
            &self.engine,
            ThreadState {
                task: self.clone(),
                wasi: None,
                limiter: MemLimiter::new(self.mem_bytes),
                cpu_mark: thread_cpu_time(),
                paused: Duration::ZERO,
            },
        );
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_callback(|mut ctx| ctx.data_mut().tick());
        store.set_epoch_deadline(1);
        store.call_hook(|mut ctx, hook| match hook {
            CallHook::ReturningFromHost => {
                ctx.data_mut().give_back();
                ctx.data().task.check_stop()
            }
            CallHook::CallingHost => ctx.data().task.check_stop(),
            _ => Ok(()),
        });
        let mut linker = self.linker.clone();
        let (module, name) = &self.memory_import;
        let result = linker
            .define(
                &store,
                module,
                name,
                Extern::SharedMemory(self.memory.clone()),
            )
            .and_then(|linker| linker.instantiate(&mut store, &self.module))
            .and_then(|instance| match spawned {
                None => instance
                    .get_typed_func::<(), ()>(&mut store, "_start")?
                    .call(&mut store, ()),
                Some((tid, arg)) => instance
                    .get_typed_func::<(i32, i32), ()>(&mut store, "wasi_thread_start")?
                    .call(&mut store, (tid, arg)),
            });
        store.data_mut().account();
        match result {
            Ok(()) if spawned.is_none() => self.end(Termination::Exited(0)),
            Ok(()) => {}
            Err(e) => {
                if let Some(exit) = e.downcast_ref::<I32Exit>() {
                    self.end(Termination::Exited(exit.0));
                } else if e.downcast_ref::<Stopped>().is_none() {
                    let which = match spawned {
                        None => "the main thread".to_owned(),
                        Some((tid, _)) => format!("thread {tid}"),
                    };
                    let message = match e.downcast_ref::<Trap>() {
                        Some(trap) => trap.to_string(),
                        None => format!("{e:#}"),
                    };
                    let size = self.memory.data_size() as u64;
                    self.end(if size + PAGE > self.max_bytes {
                        Termination::MemoryLimit(format!(
                            "{which}: {message} (the shared memory is at its cap of {} bytes, \
                             the task's memory cap is {} bytes)",
                            self.max_bytes, self.mem_bytes
                        ))
                    } else if let Some(denied) = store.data().limiter.denied() {
                        Termination::MemoryLimit(format!("{which}: {denied} ({message})"))
                    } else {
                        Termination::Trapped(format!("{which}: {message}"))
                    });
                }
            }
        }
        drop(store);
        self.thread_left();
    }

    fn thread_left(&self) {
        if self.live.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.gone.send_replace(true);
            self.ticker.leave();
        }
    }

    /// Once the task has ended: wakes threads blocked in `memory.atomic.wait` (wasmtime cannot
    /// interrupt them) by notifying every aligned address, until every thread has left.
    fn nudge_until_gone(&self) {
        const CHUNK: u64 = 64 * 1024;
        while !*self.gone.borrow() {
            // From the top down: the structures threads wait on (a joined thread's, a lock's)
            // are mostly in the heap, above the data and the main stack.
            let mut top = self.memory.data_size() as u64;
            while top > 0 && !*self.gone.borrow() {
                let bottom = top.saturating_sub(CHUNK);
                for a in (bottom..top).step_by(4) {
                    let _ = self.memory.atomic_notify(a, u32::MAX);
                }
                top = bottom;
            }
            std::thread::sleep(TICK);
        }
    }
}
