//! CPU shares enforced by fuel rate, with real wasmtime and real guests.
//!
//! Timing-sensitive, so it lives in its own test binary with a single test
//! (nothing else of this crate runs concurrently with it). To stay robust on
//! a loaded 2-core CI machine, the executor is told that a core burns a
//! quarter of the calibrated fuel rate: "1 cpu" is then a quarter of a real
//! core, and all the tasks below together need under 40% of one real core.
//! Progress is each task's fuel over its own wall time (the windows are the
//! same up to launch jitter); the checks are ratios.

use std::path::Path;
use std::time::Duration;

use tessera_agent::executor::{
    ExecEvent, Executor, ExecutorConfig, KillHandle, TaskOutcome, TaskSpec, Termination,
};
use tokio::sync::mpsc;

/// Hang guard only.
const SANITY: Duration = Duration::from_secs(20);
const WINDOW: Duration = Duration::from_millis(1500);

struct Task {
    kill: KillHandle,
    events: mpsc::UnboundedReceiver<ExecEvent>,
}

fn launch(exec: &Executor, dir: &Path, name: &str, cpus_milli: u64) -> Task {
    let spec = TaskSpec {
        digest: "burn".into(),
        wasm_path: wasm_examples::BURN_PATH.into(),
        args: vec![name.into()],
        env: vec![],
        task_dir: dir.join(name),
        mem_bytes: 64 << 20,
        cpus_milli,
        timeout: None,
        max_cpu: None,
        disk_bytes: 0,
    };
    let (tx, events) = mpsc::unbounded_channel();
    let kill = exec.launch(
        spec,
        Box::new(move |ev| {
            let _ = tx.send(ev);
        }),
    );
    Task { kill, events }
}

impl Task {
    async fn running(&mut self) {
        let ev = tokio::time::timeout(SANITY, self.events.recv()).await;
        assert_eq!(ev.unwrap(), Some(ExecEvent::Running));
    }

    async fn stop(mut self) -> TaskOutcome {
        self.kill.kill();
        loop {
            let ev = tokio::time::timeout(SANITY, self.events.recv())
                .await
                .expect("task did not stop in time")
                .expect("no Finished event");
            if let ExecEvent::Finished(o) = ev {
                assert_eq!(o.termination, Termination::Killed, "{o:?}");
                return o;
            }
        }
    }
}

/// Runs tasks with these shares over the same window; returns each one's
/// fuel per second of its wall time.
async fn fuel_rates(exec: &Executor, shares: &[u64]) -> Vec<f64> {
    let dir = tempfile::tempdir().unwrap();
    let mut tasks: Vec<Task> = shares
        .iter()
        .enumerate()
        .map(|(i, &c)| launch(exec, dir.path(), &format!("t{i}"), c))
        .collect();
    for t in &mut tasks {
        t.running().await;
    }
    tokio::time::sleep(WINDOW).await;
    let mut rates = Vec::new();
    for t in tasks {
        let o = t.stop().await;
        assert!(o.wall > Duration::ZERO);
        rates.push(o.fuel_consumed as f64 / o.wall.as_secs_f64());
    }
    rates
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_shares_follow_the_fuel_rate() {
    let calibrated = Executor::new(ExecutorConfig::default())
        .unwrap()
        .fuel_per_core_second();
    assert!(calibrated > 10_000_000, "{calibrated}");
    let core = calibrated / 4;
    let exec = Executor::new(ExecutorConfig {
        fuel_per_core_second: Some(core),
        ..ExecutorConfig::default()
    })
    .unwrap();
    exec.prepare("burn", Path::new(wasm_examples::BURN_PATH))
        .await
        .unwrap();

    // 0.99 rather than 1.0: shares of a whole core or more are not paced,
    // and this test's "core" is a quarter of a real one.
    let r = fuel_rates(&exec, &[990, 500]).await;
    let ratio = r[0] / r[1];
    eprintln!(
        "1.0 vs 0.5 cpus: {:.3} and {:.3} cores, ratio {ratio:.3}",
        r[0] / core as f64,
        r[1] / core as f64
    );
    assert!(
        (1.8..=2.2).contains(&(ratio * 1000.0 / 990.0)),
        "ratio {ratio}"
    );

    // Four quarter-cpu tasks on a one-cpu agent use one core between them.
    let r = fuel_rates(&exec, &[250, 250, 250, 250]).await;
    let cores: Vec<f64> = r.iter().map(|x| x / core as f64).collect();
    let total: f64 = cores.iter().sum();
    eprintln!("4 x 0.25 cpus: {cores:.3?}, total {total:.3} cores");
    assert!((0.85..=1.05).contains(&total), "total {total}");
    for c in cores {
        assert!((0.2..=0.275).contains(&c), "{c}");
    }
}
