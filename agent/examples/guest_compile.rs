//! How long the agent's engine takes to compile every example guest: the 20 modules, the 5
//! components and the 2 executors of `tessera-wasm-examples`, best of 3. This is the figure the
//! dev profile's per-crate optimisation is traded against (BENCHMARKS.md, "Time to first run"):
//! an unoptimised Cranelift, `wasmparser` or `wasmtime-environ` builds faster and compiles
//! guests slower.
//!
//! `cargo run -p tessera-agent --example guest_compile` (the dev profile is the one measured).

use std::time::{Duration, Instant};

use wasmtime::component::Component;
use wasmtime::{Engine, Module};

fn cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer for the call's duration.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn main() -> anyhow::Result<()> {
    let engine = Engine::new(&tessera_agent::executor::engine_config())?;
    let mut executors = Vec::new();
    for (name, path) in wasm_examples::executors::ALL_EXECUTOR_PATHS {
        executors.push((*name, std::fs::read(path)?));
    }
    let mut best: Option<(Duration, Duration)> = None;
    for round in 1..=3 {
        let (wall0, cpu0) = (Instant::now(), cpu_time());
        for (_, bytes) in wasm_examples::ALL {
            Module::new(&engine, bytes)?;
        }
        for (_, bytes) in wasm_examples::components::ALL {
            Component::new(&engine, bytes)?;
        }
        for (_, bytes) in &executors {
            Component::new(&engine, bytes)?;
        }
        let (wall, cpu) = (wall0.elapsed(), cpu_time() - cpu0);
        println!(
            "round {round}: {:.3} s wall, {:.3} s CPU",
            wall.as_secs_f64(),
            cpu.as_secs_f64()
        );
        if best.is_none_or(|(w, _)| wall < w) {
            best = Some((wall, cpu));
        }
    }
    let (wall, cpu) = best.expect("three rounds ran");
    println!(
        "best: {:.3} s wall, {:.3} s CPU",
        wall.as_secs_f64(),
        cpu.as_secs_f64()
    );
    Ok(())
}
