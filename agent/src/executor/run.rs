//! One task's run, for preview-1 modules and WASI 0.2 command components alike: store setup
//! (WASI context with the sandbox and the read-only data sets, or no file system at all for a
//! task without a sandbox; output files or in-memory output; memory limiter, fuel), the entry
//! point (`_start` or `wasi:cli/run`) under pacing, raced against kill, timeout and the disk
//! cap, and its classification into a [`Termination`] with the output tails.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use wasmtime::{PoolConcurrencyLimitError, Store, Trap};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::Command;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder, WasiCtxView, WasiView};

use super::cache::Prepared;
use super::limiter::MemLimiter;
use super::meter::BUDGET_EXPORT;
use super::output::{read_tail, CappedOutput, WriteOut};
use super::pacing::{Handoff, Pacer, TaskClock, PERIOD};
use super::tick::{BudgetUsedUp, Ticks};
use super::{disk, ExecEvent, Inner, Metering, TaskOutcome, TaskSpec, Termination};
use crate::workdir::TaskDir;

/// Fuel given to a store without a CPU-time budget: effectively unlimited;
/// such a task's fuel is used for pacing and accounting only.
const UNLIMITED_FUEL: u64 = u64::MAX / 2;

/// Per-store data, for both ABIs.
pub(super) struct TaskState {
    /// The guest's WASI context (args, env, preopens, output files) with its resource table:
    /// preview 1 reaches it through the adapter it carries, WASI 0.2 through [`WasiView`].
    pub(super) wasi: WasiP1Ctx,
    /// Caps linear memories and tables at the task's `mem`.
    pub(super) limiter: MemLimiter,
    /// The budget grants of a module metered by rewriting (unused on the fuel path).
    pub(super) ticks: Ticks,
}

impl WasiView for TaskState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.wasi.ctx()
    }
}

/// A guest's WASI context before its directories: its args and env, its output streams, and no
/// network (sockets are denied by the default address check already; said outright). Every
/// run path (one-shot tasks, threaded tasks, executor instances) starts from it.
pub(super) fn task_wasi(
    args: &[String],
    env: &[(String, String)],
    stdout: CappedOutput,
    stderr: CappedOutput,
) -> WasiCtxBuilder {
    let mut builder = WasiCtxBuilder::new();
    builder
        .args(args)
        .envs(env)
        .stdout(stdout)
        .stderr(stderr)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    builder
}

/// Where a data set is mounted in the guest: `/data/<name>`.
pub(super) const DATASET_ROOT: &str = "/data";

/// Longest data-set name.
const MAX_DATASET_NAME: usize = 128;

/// Why a data-set name cannot be mounted at `/data/<name>`, if it cannot: it must be 1-128
/// characters of `[A-Za-z0-9._-]`, and neither `.` nor `..`.
pub(super) fn invalid_dataset_name(name: &str) -> Option<String> {
    let why = if name.is_empty() {
        "it is empty"
    } else if name.len() > MAX_DATASET_NAME {
        "it is longer than 128 characters"
    } else if name == "." || name == ".." {
        "it is `.` or `..`"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        "only [A-Za-z0-9._-] are allowed"
    } else {
        return None;
    };
    Some(format!("invalid data set name {name:?}: {why}"))
}

/// Preopens each data set's host directory read-only (directories and files) at
/// `/data/<name>`, with an empty mount point `data/<name>` in `sandbox` so that listing `/data`
/// shows the sets (paths below it resolve in the read-only preopen); refuses invalid names,
/// duplicates and missing directories.
pub(super) fn preopen_datasets(
    builder: &mut WasiCtxBuilder,
    sandbox: &Path,
    datasets: &[(String, PathBuf)],
) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for (name, host) in datasets {
        if let Some(why) = invalid_dataset_name(name) {
            return Err(why);
        }
        if !seen.insert(name.as_str()) {
            return Err(format!("data set {name:?} is given twice"));
        }
        if !host.is_dir() {
            return Err(format!(
                "data set {name:?}: {} is not an existing directory",
                host.display()
            ));
        }
        let mount = sandbox.join(&DATASET_ROOT[1..]).join(name);
        std::fs::create_dir_all(&mount)
            .map_err(|e| format!("cannot make the mount point {}: {e}", mount.display()))?;
        builder
            .preopened_dir(host, format!("{DATASET_ROOT}/{name}"), FsPerms::ReadOnly)
            .map_err(|e| format!("data set {name:?}: cannot open {}: {e:#}", host.display()))?;
    }
    Ok(())
}

/// A task's entry point, in its instance.
enum Entry {
    /// A preview-1 module's `_start`.
    Core(wasmtime::TypedFunc<(), ()>),
    /// A WASI 0.2 command's `wasi:cli/run`.
    Command(Command),
}

impl Entry {
    /// Runs the guest to its end; exits (and a failed `wasi:cli/run`) are [`I32Exit`] errors.
    async fn call(&self, store: &mut Store<TaskState>) -> wasmtime::Result<()> {
        match self {
            Entry::Core(start) => start.call_async(store, ()).await,
            Entry::Command(command) => super::component::call_run(command, store).await,
        }
    }
}

/// Guarantees a run's last event (a task's `Finished`, an instance's `Exited`) is sent exactly
/// once, even if the run's future is dropped (runtime shutdown) or panics: dropped after its
/// start event, the run counts as killed; before, as never started.
pub(super) struct EndGuard<E> {
    /// Taken when the last event is sent, so it is sent once.
    notify: Option<Arc<dyn Fn(E) + Send + Sync>>,
    /// The start event was sent.
    started: bool,
    /// Makes the start event (`Running`, `Started`).
    start_event: fn() -> E,
    /// Makes the last event (`Finished`, `Exited`).
    end_event: fn(TaskOutcome) -> E,
    /// What was dropped, for the never-started outcome ("task", "instance").
    what: &'static str,
}

impl<E> EndGuard<E> {
    /// Guards the notifications of one run.
    pub(super) fn new(
        notify: Arc<dyn Fn(E) + Send + Sync>,
        start_event: fn() -> E,
        end_event: fn(TaskOutcome) -> E,
        what: &'static str,
    ) -> Self {
        EndGuard {
            notify: Some(notify),
            started: false,
            start_event,
            end_event,
            what,
        }
    }

    /// Sends the start event (before the last one only).
    pub(super) fn started(&mut self) {
        if let Some(n) = &self.notify {
            self.started = true;
            n((self.start_event)());
        }
    }

    /// Sends the last event (once).
    pub(super) fn end(&mut self, outcome: TaskOutcome) {
        if let Some(n) = self.notify.take() {
            n((self.end_event)(outcome));
        }
    }
}

impl<E> Drop for EndGuard<E> {
    fn drop(&mut self) {
        let termination = if self.started {
            Termination::Killed
        } else {
            Termination::StartFailed(format!("the {} was dropped before it started", self.what))
        };
        self.end(TaskOutcome {
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

/// The guard of a one-shot task's `Running` and `Finished`.
pub(super) type FinishGuard = EndGuard<ExecEvent>;

impl FinishGuard {
    /// Guards the notifications of one launch.
    pub(super) fn for_task(notify: Box<dyn Fn(ExecEvent) + Send + Sync>) -> Self {
        EndGuard::new(
            Arc::from(notify),
            || ExecEvent::Running,
            ExecEvent::Finished,
            "task",
        )
    }
}

/// How the entry point ended, before classification.
pub(super) enum Ended<T> {
    Returned(T),
    Killed,
    Timeout,
    Disk(u64),
}

/// Runs a guest's entry point under kill, an optional wall-clock timeout and the sandbox's disk
/// cap (checked every `every` while it runs, and once more after it returned; not at all for a
/// task without a sandbox): one-shot tasks and executor instances are supervised alike.
pub(super) async fn supervise<T>(
    entry: impl std::future::Future<Output = T>,
    kill: &mut watch::Receiver<bool>,
    timeout: Option<Duration>,
    sandbox: Option<&Path>,
    disk_cap: u64,
    every: Duration,
) -> Ended<T> {
    let timeout = async {
        match timeout {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let disk = async {
        match sandbox {
            Some(s) => disk_over(s.to_owned(), disk_cap, every).await,
            None => std::future::pending().await,
        }
    };
    let ended = tokio::select! {
        biased;
        () = killed(kill) => Ended::Killed,
        () = timeout => Ended::Timeout,
        used = disk => Ended::Disk(used),
        r = entry => Ended::Returned(r),
    };
    let Some(sandbox) = sandbox else {
        return ended;
    };
    // A last look at the sandbox, unless the guest was stopped from outside.
    match ended {
        Ended::Returned(r) => {
            let s = sandbox.to_owned();
            match tokio::task::spawn_blocking(move || disk::usage(&s)).await {
                Ok(used) if used > disk_cap => Ended::Disk(used),
                _ => Ended::Returned(r),
            }
        }
        other => other,
    }
}

/// The termination of a guest whose sandbox outgrew its cap.
pub(super) fn disk_limit(used: u64, cap: u64) -> Termination {
    Termination::DiskLimit(format!(
        "sandbox uses {used} bytes, over its disk cap of {cap} bytes"
    ))
}

/// Resolves when the sandbox at `sandbox` holds more than `cap` bytes,
/// with the bytes used; checks every `every`.
pub(super) async fn disk_over(sandbox: PathBuf, cap: u64, every: Duration) -> u64 {
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

/// Resolves once `kill` is set (never if the sender is gone, which cannot
/// happen while the task keeps its own handle).
pub(super) async fn killed(kill: &mut watch::Receiver<bool>) {
    if kill.wait_for(|k| *k).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// How a guest's call that returned an error ended (shared with executor instances): an exit
/// of WASI `proc_exit`/`exit`, a trap after a refused memory growth, or another trap.
pub(super) fn guest_error(e: &wasmtime::Error, limiter: &MemLimiter) -> Termination {
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        Termination::Exited(exit.0)
    } else if let Some(denied) = limiter.denied() {
        Termination::MemoryLimit(format!("{denied} ({})", error_message(e)))
    } else {
        Termination::Trapped(error_message(e))
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
    /// Runs one task to its end: `Running` goes out through `guard` once the entry point is
    /// about to run, and `Finished` too once it ran (the store is freed after); an outcome
    /// returned instead (a start that failed, a threaded module) is for the caller to send.
    /// With `handoff`, the task's pacer reports its first overdraft there (see `pacing.rs`).
    pub(super) async fn run(
        &self,
        spec: TaskSpec,
        mut kill: watch::Receiver<bool>,
        guard: &mut FinishGuard,
        handoff: Option<Arc<Handoff>>,
    ) -> Option<TaskOutcome> {
        // Multi-threaded (WASI threads) modules run on their own path (`threads.rs`).
        if self.threads.contains(&spec.digest)
            || (!self.modules.contains(&spec.digest)
                && matches!(
                    self.threads.prepare(&spec.digest, &spec.wasm_path).await,
                    Ok(true)
                ))
        {
            return Some(self.threads.run(&self.cfg, spec, kill, guard).await);
        }
        let dir = TaskDir::new(&spec.task_dir);
        let stdout_path = dir.stdout();
        let stderr_path = dir.stderr();
        let tail_bytes = self.cfg.tail_bytes;
        let tails = |outputs: Option<&Outputs>| match outputs {
            Some(o) => (o.streams[0].tail(tail_bytes), o.streams[1].tail(tail_bytes)),
            None => (
                read_tail(&stdout_path, tail_bytes),
                read_tail(&stderr_path, tail_bytes),
            ),
        };
        let finish = |(stdout_tail, stderr_tail): (String, String),
                      termination: Termination,
                      fuel_consumed: u64,
                      wall: Duration,
                      cpu_paused: Duration,
                      cpu_time: Duration| TaskOutcome {
            termination,
            stdout_tail,
            stderr_tail,
            fuel_consumed,
            wall,
            cpu_paused,
            cpu_time,
        };
        let mut pacer = Pacer::new(spec.cpus_milli, self.fuel_rate, PERIOD).with_handoff(handoff);
        // A module metered by rewriting reads its CPU time from its pacer (`tick.rs`).
        let clock = Arc::new(TaskClock::default());
        if self.cfg.metering == Metering::Rewrite {
            pacer = pacer.with_clock(clock.clone());
        }
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
            r = self.setup(&spec, initial_fuel, pacer.interval(), clock) => r,
        };
        let (mut store, start, outputs, budget_global) = match setup {
            Ok(s) => s,
            Err(t) => {
                if !needs_sandbox(&spec) {
                    // Nothing ran: no output to keep.
                    self.outputs.forget(&spec.task_dir);
                }
                let z = Duration::ZERO;
                return Some(finish(tails(None), t, 0, z, z, z));
            }
        };

        let sandbox = needs_sandbox(&spec).then(|| dir.sandbox());
        let disk_cap = match spec.disk_bytes {
            0 => self.cfg.default_disk_cap,
            n => n,
        };
        guard.started();
        let started = Instant::now();
        pacer.start();
        let ended = supervise(
            pacer.run(start.call(&mut store)),
            &mut kill,
            spec.timeout,
            sandbox.as_deref(),
            disk_cap,
            self.cfg.disk_check_interval,
        )
        .await;
        let wall = started.elapsed();
        let fuel_consumed = match &budget_global {
            // Metered by rewriting: operators granted less what is left of the last grant.
            Some(g) => {
                let unspent = g.get(&mut store).i64().unwrap_or(0);
                store.data().ticks.used(unspent)
            }
            None => store
                .get_fuel()
                .map(|left| initial_fuel.saturating_sub(left))
                .unwrap_or(0),
        };
        let termination = match ended {
            Ended::Killed => Termination::Killed,
            Ended::Timeout => Termination::Timeout,
            Ended::Disk(used) => disk_limit(used, disk_cap),
            Ended::Returned(Ok(())) => Termination::Exited(0),
            Ended::Returned(Err(e)) => {
                let by_clock = e.downcast_ref::<BudgetUsedUp>().is_some();
                let out_of_budget = by_clock || e.downcast_ref::<Trap>() == Some(&Trap::OutOfFuel);
                if out_of_budget && spec.max_cpu.is_some() {
                    let budget = spec.max_cpu.unwrap_or_default();
                    Termination::CpuLimit(if by_clock {
                        format!(
                            "CPU-time budget of {} ms used up (by the task's CPU clock)",
                            budget.as_millis()
                        )
                    } else {
                        format!(
                            "CPU-time budget of {} ms used up ({initial_fuel} fuel at {} fuel \
                             per core-second)",
                            budget.as_millis(),
                            self.fuel_rate
                        )
                    })
                } else {
                    guest_error(&e, &store.data().limiter)
                }
            }
        };
        // The tails are read with the store still alive: the guest has returned, and its
        // writes went straight to memory or to the files (unbuffered).
        let outcome = finish(
            tails(Some(&outputs)),
            termination,
            fuel_consumed,
            wall,
            // Moved under a kernel quota, the kernel's throttling is the pause from then on.
            pacer.paused() + super::quota::throttled_time(),
            pacer.cpu_time(),
        );
        let write_out = outputs
            .in_memory
            .and_then(|id| self.outputs.ended(&spec.task_dir, id));
        // Off the task's path, once its end is reported: freeing the instance and its memory
        // (a pooled slot's reset: a `PAGEMAP_SCAN` ioctl and a copy of the written pages, ~7 us
        // measured, or an `madvise` of ~20 us past `keep_resident`), and writing out older
        // output when the in-memory store is over its budget (on the blocking pool). The yield first lets the
        // task the report woke (the agent's loop, queued on this worker where no other worker
        // takes it) send the update before that. A launch that finds the pool full meanwhile
        // waits for the slot (`freeing`).
        self.freeing.fetch_add(1, Ordering::SeqCst);
        guard.end(outcome);
        tokio::task::yield_now().await;
        drop(store);
        self.freeing.fetch_sub(1, Ordering::SeqCst);
        if let Some(w) = write_out {
            tokio::task::spawn_blocking(move || WriteOut::run(w));
        }
        None
    }

    /// Builds the store and instance; errors are the task's termination.
    async fn setup(
        &self,
        spec: &TaskSpec,
        initial_fuel: u64,
        yield_interval: u64,
        clock: Arc<TaskClock>,
    ) -> Result<(Store<TaskState>, Entry, Outputs, Option<wasmtime::Global>), Termination> {
        let prepared = self
            .modules
            .prepared(&spec.digest, &spec.wasm_path)
            .await
            .map_err(|e| Termination::StartFailed(e.to_string()))?;
        let io_err = |what: &Path, e: std::io::Error| {
            Termination::StartFailed(format!("cannot set up {}: {e}", what.display()))
        };
        let dir = TaskDir::new(&spec.task_dir);
        let sandbox = dir.sandbox();
        let cap = self.cfg.output_cap;
        let stdout_path = dir.stdout();
        let stderr_path = dir.stderr();
        let with_sandbox = needs_sandbox(spec);
        let outputs = if with_sandbox {
            tokio::fs::create_dir_all(&sandbox)
                .await
                .map_err(|e| io_err(&sandbox, e))?;
            let stdout =
                CappedOutput::create(&stdout_path, cap).map_err(|e| io_err(&stdout_path, e))?;
            let stderr =
                CappedOutput::create(&stderr_path, cap).map_err(|e| io_err(&stderr_path, e))?;
            Outputs {
                streams: [stdout, stderr],
                in_memory: None,
            }
        } else {
            let (id, streams) = self.outputs.open(
                &spec.task_dir,
                [stdout_path.clone(), stderr_path.clone()],
                cap,
            );
            Outputs {
                streams,
                in_memory: Some(id),
            }
        };

        let mut builder = task_wasi(
            &spec.args,
            &spec.env,
            outputs.streams[0].clone(),
            outputs.streams[1].clone(),
        );
        if with_sandbox {
            builder
                .preopened_dir(&sandbox, "/", FsPerms::ReadWrite)
                .map_err(|e| {
                    Termination::StartFailed(format!("cannot preopen {}: {e:#}", sandbox.display()))
                })?;
            preopen_datasets(&mut builder, &sandbox, &spec.datasets)
                .map_err(Termination::StartFailed)?;
        }
        let wasi = builder.build_p1();

        // A module metered by rewriting runs on an engine without fuel: its `tick` import
        // grants its budget and yields (`tick.rs`).
        let (engine, rewritten) = match &prepared {
            Prepared::Core(pre) => (
                pre.module().engine(),
                self.cfg.metering == Metering::Rewrite,
            ),
            Prepared::Command(_) => (&self.engine, false),
        };
        let mut store = Store::new(
            engine,
            TaskState {
                wasi,
                limiter: MemLimiter::new(spec.mem_bytes),
                ticks: Ticks::new(yield_interval, clock, spec.max_cpu),
            },
        );
        store.limiter(|s| &mut s.limiter);
        let store_err =
            |e: wasmtime::Error| Termination::StartFailed(format!("store setup: {e:#}"));
        if !rewritten {
            store.set_fuel(initial_fuel).map_err(store_err)?;
            store
                .fuel_async_yield_interval(Some(yield_interval))
                .map_err(store_err)?;
        }
        let mut budget = None;

        let instantiated = loop {
            let instantiated = match &prepared {
                Prepared::Core(pre) => pre.instantiate_async(&mut store).await.and_then(|i| {
                    if rewritten {
                        budget = i.get_global(&mut store, BUDGET_EXPORT);
                    }
                    i.get_typed_func::<(), ()>(&mut store, "_start")
                        .map(Entry::Core)
                }),
                Prepared::Command(pre) => {
                    pre.instantiate_async(&mut store).await.map(Entry::Command)
                }
            };
            match instantiated {
                // A full pool with a slot on its way back (a task that has just reported its
                // end drops its store right after): wait for it rather than fail the launch.
                Err(e)
                    if e.downcast_ref::<PoolConcurrencyLimitError>().is_some()
                        && self.freeing.load(Ordering::SeqCst) > 0 =>
                {
                    tokio::task::yield_now().await
                }
                other => break other,
            }
        };
        match instantiated {
            Ok(entry) => Ok((store, entry, outputs, budget)),
            Err(e) => Err(match store.data().limiter.denied() {
                Some(denied) => {
                    Termination::MemoryLimit(format!("{denied} (instantiation failed: {e:#})"))
                }
                None => Termination::StartFailed(format!("instantiation failed: {e:#}")),
            }),
        }
    }
}

/// Whether a task gets a sandbox directory: it asked for one ([`TaskSpec::sandbox`]) or mounts
/// data sets (whose mount points live in it).
pub(super) fn needs_sandbox(spec: &TaskSpec) -> bool {
    spec.sandbox || !spec.datasets.is_empty()
}

/// A task's stdout and stderr, and the id of their entry in the executor's output store when
/// they are kept in memory (a task without a sandbox).
pub(super) struct Outputs {
    streams: [CappedOutput; 2],
    in_memory: Option<u64>,
}
