//! Density (issue 14): how many concurrent sleeping tasks one executor holds, how fast they
//! start, and what each costs in resident memory and file descriptors.
//!
//! Every task is the `ticker` guest printing one line and then sleeping 10 minutes (one
//! wake-up per task in the whole run), with <1 milli-cpu, 16 MiB> and no sandbox (no disk
//! share, no files: what a task that only computes gets), so its output stays in memory.
//! The executor's pool is sized by `PoolingConfig::for_resources` for an agent of
//! `DENSITY_TASKS` milli-cpus, as an agent sizes it (capped at 10,000 slots).
//!
//! Printed: time from the first launch to the last `Running`, resident memory before and after
//! (`VmRSS`, after a settling pause, so that memories touched at start count), per task, open
//! descriptors before and after, and the output store's memory.
//!
//! With `DENSITY_CPU_QUOTA_CGROUP=<dir of the cgroup v1 cpu controller>`, the executor runs
//! each task under a kernel quota (`ExecutorConfig::cpu_quota_cgroup`): what that mode costs
//! per task (a thread, its runtime's descriptors, a cgroup).
//!
//! `cargo bench -p tessera-agent --bench density` (`DENSITY_TASKS`, default 10,000). The
//! process raises its own open-file soft limit to the hard limit first, as the agent does,
//! and prints both; the tasks themselves need no descriptor each.

/// The `tessera` binary's global allocator, so that resident memory is what an agent holds.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::Path;
use std::time::{Duration, Instant};

use tessera_agent::executor::{
    ExecEvent, Executor, ExecutorConfig, PoolingConfig, TaskSpec, Termination,
};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn spec(dir: &Path) -> TaskSpec {
    let argv = ["ticker", "1000000", "600000"].map(String::from).to_vec();
    TaskSpec {
        mem_bytes: 16 << 20,
        cpus_milli: 1,
        ..TaskSpec::new("ticker", wasm_examples::TICKER_PATH, argv, dir)
    }
}

fn main() {
    let n = env_usize("DENSITY_TASKS", 10_000);
    let (soft, hard) = tessera_agent::driver::raise_nofile_limit().unwrap_or((0, 0));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let pooling = PoolingConfig::for_resources(n as u64, 4 << 30);
        let exec = Executor::new(ExecutorConfig {
            cache_dir: Some(tmp.path().join("cache")),
            pooling: Some(pooling),
            cpu_quota_cgroup: std::env::var_os("DENSITY_CPU_QUOTA_CGROUP").map(Into::into),
            ..ExecutorConfig::default()
        })
        .unwrap();
        let slots = exec.stats().pool_slots;
        println!(
            "open-file limit raised to {soft} (hard {hard}); pool of {slots} task slots \
             (for_resources({n} milli-cpus, 4 GiB))"
        );
        assert!(slots as usize >= n.min(PoolingConfig::MAX_TASKS as usize), "pool not reserved");
        exec.prepare("ticker", Path::new(wasm_examples::TICKER_PATH))
            .await
            .unwrap();
        // One task first, so the module's image and the runtime are warm.
        let (k, mut rx) = exec.launch_to_channel(spec(&tmp.path().join("warm")));
        assert_eq!(rx.recv().await, Some(ExecEvent::Running));
        k.kill();
        while rx.recv().await.is_some() {}
        tokio::time::sleep(Duration::from_millis(200)).await;

        let (rss0, fds0) = (status_kib("VmRSS:"), open_fds());
        let t0 = Instant::now();
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
            tasks.push(exec.launch_to_channel(spec(&tmp.path().join(format!("t{i}")))));
        }
        for (_, rx) in &mut tasks {
            assert_eq!(rx.recv().await, Some(ExecEvent::Running));
        }
        let started = t0.elapsed();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (rss1, fds1) = (status_kib("VmRSS:"), open_fds());
        let (out_bytes, out_tasks) = exec.output_memory();
        let dirs = std::fs::read_dir(tmp.path()).map_or(0, |d| d.count());
        for (k, _) in &tasks {
            k.kill();
        }
        for (_, rx) in &mut tasks {
            loop {
                match rx.recv().await {
                    Some(ExecEvent::Finished(o)) => {
                        assert_eq!(o.termination, Termination::Killed);
                        assert!(o.stdout_tail.contains("tick 1"), "{o:?}");
                        break;
                    }
                    Some(_) => {}
                    None => panic!("no end"),
                }
            }
        }
        println!("## Density: {n} sleeping tasks on one executor (ticker, no sandbox)");
        println!("| tasks | started in | resident before → after | per task | descriptors before → after | output in memory | entries in the work dir |");
        println!("|---:|---:|---:|---:|---:|---:|---:|");
        println!(
            "| {n} | {:.0} ms | {} → {} MiB | {:.1} KiB | {fds0} → {fds1} | {} KiB for {out_tasks} tasks | {} |",
            started.as_secs_f64() * 1e3,
            rss0 / 1024,
            rss1 / 1024,
            rss1.saturating_sub(rss0) as f64 / n as f64,
            out_bytes / 1024,
            dirs.saturating_sub(1),
        );
    });
}
