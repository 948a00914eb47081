//! CPU shares of multi-threaded tasks, with real wasmtime and the real `mtspin` guest: a
//! 4-thread task's achieved share (the sum of its threads' CPU clocks over its wall time) at
//! 0.5, 1.0 and 2.0 cpus, against an unpaced run of the same guest in the same test run (what
//! the machine allows now). Timing-sensitive, so it is its own test binary with one test; the
//! checks are ratios, not durations.

use std::path::Path;
use std::time::Duration;

use tessera_agent::executor::{
    ExecEvent, Executor, ExecutorConfig, TaskOutcome, TaskSpec, Termination,
};

/// Hang guard only.
const SANITY: Duration = Duration::from_secs(60);
/// How long each run spins before it is killed.
const WINDOW: Duration = Duration::from_millis(2000);
/// Tolerance on a paced share.
const TOLERANCE: f64 = 0.05;

async fn share(exec: &Executor, dir: &Path, name: &str, cpus_milli: u64) -> f64 {
    let argv = ["mtspin", "4", "100000000000"].map(String::from).to_vec();
    let spec = TaskSpec {
        mem_bytes: 256 << 20,
        cpus_milli,
        ..TaskSpec::new(
            "mtspin",
            wasm_examples::threads::MTSPIN_PATH,
            argv,
            dir.join(name),
        )
    };
    let (kill, mut rx) = exec.launch_to_channel(spec);
    let ev = tokio::time::timeout(SANITY, rx.recv()).await.unwrap();
    assert_eq!(ev, Some(ExecEvent::Running));
    tokio::time::sleep(WINDOW).await;
    kill.kill();
    let o: TaskOutcome = loop {
        match tokio::time::timeout(SANITY, rx.recv()).await.unwrap() {
            Some(ExecEvent::Finished(o)) => break o,
            Some(_) => {}
            None => panic!("no Finished event"),
        }
    };
    assert_eq!(o.termination, Termination::Killed, "{o:?}");
    let s = o.cpu_time.as_secs_f64() / o.wall.as_secs_f64();
    println!(
        "{name}: offered {:.1} cpus, used {s:.3} cores (cpu {:?}, wall {:?}, paused {:?})",
        cpus_milli as f64 / 1000.0,
        o.cpu_time,
        o.wall,
        o.cpu_paused
    );
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threaded_task_is_paced_over_the_sum_of_its_threads() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Executor::new(ExecutorConfig::default()).unwrap();
    let d = dir.path();
    let unpaced = share(&exec, d, "unpaced", 64_000).await;
    let half = share(&exec, d, "half", 500).await;
    let one = share(&exec, d, "one", 1000).await;
    let two = share(&exec, d, "two", 2000).await;
    let unpaced_after = share(&exec, d, "unpaced-after", 64_000).await;
    let machine = unpaced.min(unpaced_after);
    println!(
        "4 threads: unpaced {unpaced:.3}/{unpaced_after:.3}, 0.5 -> {half:.3}, 1.0 -> {one:.3}, \
         2.0 -> {two:.3} cores"
    );
    // Caps hold whatever the thread count.
    assert!(half <= 0.5 * (1.0 + TOLERANCE), "0.5 cpus used {half:.3}");
    assert!(one <= 1.0 * (1.0 + TOLERANCE), "1.0 cpus used {one:.3}");
    assert!(two <= 2.0 * (1.0 + TOLERANCE), "2.0 cpus used {two:.3}");
    // More than one core's worth, when the machine gives the unpaced run more than that.
    if machine > 1.2 {
        assert!(
            two >= 0.9 * machine.min(2.0),
            "2.0 cpus used {two:.3}, the unpaced run {machine:.3}"
        );
        assert!(two > 1.05, "2.0 cpus used {two:.3}");
    } else {
        println!("the machine gave the unpaced run {machine:.3} cores: 2.0 not checked above 1");
    }
    // And a paced share gets what it is offered when the machine has it.
    let floor = 0.6 * machine.min(0.5);
    assert!(
        half >= floor,
        "0.5 cpus used {half:.3}, the unpaced run {machine:.3}"
    );
}
