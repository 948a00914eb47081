//! CPU shares, with real wasmtime and real guests: each task's achieved share is the CPU time
//! its guest used over its wall time.
//!
//! Timing-sensitive, so it lives in its own test binary with a single test (nothing else of
//! this crate runs concurrently with it); the checks are ratios with the tolerance the issue
//! asks for, not durations.

use std::path::Path;
use std::time::Duration;

use tessera_agent::executor::{Executor, ExecutorConfig};

#[path = "support/burn.rs"]
mod burn;
use burn::{launch, Task};

/// Hang guard only.
const SANITY: Duration = Duration::from_secs(20);
const WINDOW: Duration = Duration::from_millis(1500);

/// Runs tasks with these shares over the same window; returns each one's achieved share of a
/// core (CPU time over wall time).
async fn shares(exec: &Executor, offered: &[u64]) -> Vec<f64> {
    let dir = tempfile::tempdir().unwrap();
    let mut tasks: Vec<Task> = offered
        .iter()
        .enumerate()
        .map(|(i, &c)| launch(exec, dir.path(), &format!("t{i}"), c, true))
        .collect();
    for t in &mut tasks {
        t.running(SANITY).await;
    }
    tokio::time::sleep(WINDOW).await;
    let mut out = Vec::new();
    for t in tasks {
        let o = t.stop(SANITY).await;
        assert!(o.wall > Duration::ZERO);
        out.push(o.cpu_time.as_secs_f64() / o.wall.as_secs_f64());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_shares_hold_on_the_cpu_clock() {
    let exec = Executor::new(ExecutorConfig::default()).unwrap();
    exec.prepare("burn", Path::new(wasm_examples::BURN_PATH))
        .await
        .unwrap();

    // Shares 2:1 give progress 2:1 within 10%. The pair is 1.0 and 0.5 cpus; a
    // 1.0-cpu task is not paced at all (one thread can't use more than a core), so what it gets
    // is whatever the machine has free. 0.4 and 0.2 keep the same ratio while leaving room on a
    // loaded 2-core CI machine; the benchmark reports the 1.0 case.
    let r = shares(&exec, &[400, 200]).await;
    let ratio = r[0] / r[1];
    eprintln!(
        "0.4 vs 0.2 cpus: {:.3} and {:.3} cores, ratio {ratio:.3}",
        r[0], r[1]
    );
    assert!((1.8..=2.2).contains(&ratio), "ratio {ratio} ({r:?})");

    // Four quarter-cpu tasks on a one-cpu agent use one core between them.
    let r = shares(&exec, &[250, 250, 250, 250]).await;
    let total: f64 = r.iter().sum();
    eprintln!("4 x 0.25 cpus: {r:.3?}, total {total:.3} cores");
    assert!((0.85..=1.05).contains(&total), "total {total}");
    for c in r {
        assert!((0.2..=0.275).contains(&c), "{c}");
    }
}
