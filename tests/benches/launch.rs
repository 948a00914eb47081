//! Launch benchmark: how long a trivial WASI task takes through a real Tessera cluster, next
//! to fork/exec of `/bin/true` and wasmtime called directly, in the same run. The bench itself
//! is `cluster::bench` (also `tessera bench`); this binary runs it from `cargo bench`.
//!
//! It runs on mimalloc, as the `tessera` binary does. Run with
//! `cargo bench -p tessera-tests --bench launch` (release profile). Environment:
//! - `TESSERA_BENCH_QUICK=1`: a small smoke run (a second or two);
//! - `TESSERA_BENCH_ROUNDS`: throughput rounds (default 5, quick 1);
//! - `TESSERA_BENCH_ALLOC_MS`: the master's periodic allocation interval (default 1000 ms);
//! - `TESSERA_BENCH_DIR`: where the cluster's work directories go (default: the system temp
//!   dir; `/dev/shm` takes the disk out of the picture);
//! - `TESSERA_BENCH_JSON=1`: the report as JSON (the fields of `tessera bench --json`).

use cluster::bench::{run_launch, LaunchPlan};
use std::time::Duration;

/// The `tessera` binary's global allocator, so the figures are the binary's (`tessera bench`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty() && v != "0")
}

fn main() -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let mut plan = if env("TESSERA_BENCH_QUICK").is_some() {
        LaunchPlan::quick()
    } else {
        LaunchPlan::full()
    };
    if let Some(r) = env("TESSERA_BENCH_ROUNDS").and_then(|v| v.parse().ok()) {
        plan.rounds = r;
    }
    if let Some(ms) = env("TESSERA_BENCH_ALLOC_MS").and_then(|v| v.parse().ok()) {
        plan.alloc_interval = Duration::from_millis(ms);
    }
    plan.work_dir = std::env::var_os("TESSERA_BENCH_DIR").map(Into::into);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()?;
    let report = rt.block_on(run_launch(&plan))?;
    if env("TESSERA_BENCH_JSON").is_some() {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}
