//! What a launch is compared with, measured in the same process and run: fork/exec of
//! `/bin/true`, and the *floor*: the same guest run by wasmtime called directly (module
//! compiled and pre-instantiated once; each run a fresh store, instantiation and `_start`, its
//! output kept in memory), no cluster, no files. The cluster's cost is what it adds to the floor.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wasmtime::{Engine, InstancePre, Linker, Module, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

use super::BenchError;

/// Spawns `/bin/true` with its stdio on `/dev/null` and waits for it.
pub fn fork_exec() -> Result<Duration, BenchError> {
    let t0 = Instant::now();
    let status = Command::new("/bin/true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| BenchError::Baseline(format!("spawning /bin/true: {e}")))?;
    if !status.success() {
        return Err(BenchError::Baseline(format!("/bin/true failed: {status}")));
    }
    Ok(t0.elapsed())
}

/// `total` runs of `one` spread over `threads` threads; the wall time they took.
pub fn spread<F>(total: usize, threads: usize, one: F) -> Result<Duration, BenchError>
where
    F: Fn() -> Result<Duration, BenchError> + Sync,
{
    let start = Instant::now();
    let one = &one;
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let n = total / threads + usize::from(t < total % threads);
                s.spawn(move || (0..n).try_for_each(|_| one().map(drop)))
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .unwrap_or_else(|_| Err(BenchError::Baseline("a baseline thread panicked".into())))
        })
    })?;
    Ok(start.elapsed())
}

/// `warm` unmeasured runs of `one`, then `n` measured ones, on a thread of their own (wasmtime's
/// synchronous WASI must not block a tokio worker, and nothing else should run meanwhile): the
/// samples and the CPU milliseconds the measured runs took.
pub fn samples<F>(warm: usize, n: usize, one: F) -> Result<(Vec<Duration>, f64), BenchError>
where
    F: Fn() -> Result<Duration, BenchError> + Sync,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..warm {
                one()?;
            }
            let cpu = Cpu::now();
            let runs = (0..n).map(|_| one()).collect::<Result<Vec<_>, _>>()?;
            Ok((runs, cpu.ms_since()))
        })
        .join()
        .unwrap_or_else(|_| Err(BenchError::Baseline("a baseline thread panicked".into())))
    })
}

/// A guest ready to run again and again straight on wasmtime: the floor of a launch.
pub struct Floor {
    engine: Engine,
    pre: InstancePre<WasiP1Ctx>,
    greeting: String,
}

impl Floor {
    /// Compiles `wasm` (a WASI preview-1 command) with wasmtime's default configuration and
    /// links it against WASI; each [`Floor::run`] must print `greeting`.
    pub fn new(wasm: &[u8], greeting: &str) -> Result<Floor, BenchError> {
        let floor_err = |e: wasmtime::Error| BenchError::Baseline(format!("wasmtime floor: {e:#}"));
        let engine = Engine::default();
        let module = Module::new(&engine, wasm).map_err(floor_err)?;
        let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s| s).map_err(floor_err)?;
        let pre = linker.instantiate_pre(&module).map_err(floor_err)?;
        Ok(Floor {
            engine,
            pre,
            greeting: greeting.to_owned(),
        })
    }

    /// One run: a store with a fresh WASI context (args, stdout in memory), instantiation
    /// and `_start`; checks the greeting; the time it all took.
    pub fn run(&self) -> Result<Duration, BenchError> {
        let floor_err = |e: wasmtime::Error| BenchError::Baseline(format!("wasmtime floor: {e:#}"));
        let t0 = Instant::now();
        let stdout = MemoryOutputPipe::new(64 * 1024);
        let wasi = WasiCtxBuilder::new()
            .args(&["hello"])
            .stdout(stdout.clone())
            .build_p1();
        let mut store = Store::new(&self.engine, wasi);
        let instance = self.pre.instantiate(&mut store).map_err(floor_err)?;
        let start = instance
            .get_typed_func::<(), ()>(&mut store, "_start")
            .map_err(floor_err)?;
        match start.call(&mut store, ()) {
            Ok(()) => {}
            Err(e) if e.downcast_ref::<I32Exit>().is_some_and(|x| x.0 == 0) => {}
            Err(e) => return Err(floor_err(e)),
        }
        drop(store);
        let elapsed = t0.elapsed();
        let out = stdout.contents();
        if !String::from_utf8_lossy(&out).contains(&self.greeting) {
            return Err(BenchError::Baseline(format!(
                "wasmtime floor: the guest did not greet: {:?}",
                String::from_utf8_lossy(&out)
            )));
        }
        Ok(elapsed)
    }
}

/// CPU time (user + system) of this process and of its waited-for children, in clock ticks of
/// `/proc/self/stat` (100 Hz on Linux).
#[derive(Clone, Copy, Debug)]
pub struct Cpu {
    own: u64,
    children: u64,
}

/// Clock ticks per second of `/proc/self/stat` (`getconf CLK_TCK`: 100 on every mainstream
/// Linux).
const CLK_TCK: f64 = 100.0;

impl Cpu {
    /// The process's CPU time so far.
    pub fn now() -> Cpu {
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
    pub fn ms_since(self) -> f64 {
        let now = Cpu::now();
        ((now.own - self.own) + (now.children - self.children)) as f64 * 1e3 / CLK_TCK
    }
}
