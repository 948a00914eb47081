//! Multi-threaded tasks (WASI threads), with real wasmtime and the real `mtspin` guest built for
//! `wasm32-wasip1-threads`: output, a trap or `proc_exit` in a spawned thread ending the whole
//! task (and not this process), the thread cap, kill and timeout. Pacing is measured in
//! `threads_share.rs` (its own binary, so nothing runs alongside it).

use std::path::Path;
use std::time::{Duration, Instant};

use tessera_agent::executor::{
    ExecEvent, Executor, ExecutorConfig, TaskOutcome, TaskSpec, Termination, MAX_THREADS,
};
use tokio::sync::mpsc;

/// Hang guard only.
const SANITY: Duration = Duration::from_secs(60);

/// Every multi-threaded guest must have a test module of its name here.
macro_rules! assert_thread_guest_tested {
    ($name:ident) => {
        #[allow(unused_imports)]
        use self::$name as _;
    };
}
wasm_examples::foreach_thread_guest!(assert_thread_guest_tested);

fn executor(dir: &Path) -> Executor {
    Executor::new(ExecutorConfig {
        cache_dir: Some(dir.join("cache")),
        ..ExecutorConfig::default()
    })
    .unwrap()
}

fn spec(dir: &Path, name: &str, args: &[&str], cpus_milli: u64) -> TaskSpec {
    let argv = std::iter::once("mtspin")
        .chain(args.iter().copied())
        .map(String::from)
        .collect();
    TaskSpec {
        mem_bytes: 256 << 20,
        cpus_milli,
        ..TaskSpec::new(
            "mtspin",
            wasm_examples::threads::MTSPIN_PATH,
            argv,
            dir.join(name),
        )
    }
}

async fn finished(rx: &mut mpsc::UnboundedReceiver<ExecEvent>) -> TaskOutcome {
    loop {
        let ev = tokio::time::timeout(SANITY, rx.recv())
            .await
            .expect("the task did not finish in time")
            .expect("no Finished event");
        if let ExecEvent::Finished(o) = ev {
            return o;
        }
    }
}

async fn run(exec: &Executor, spec: TaskSpec) -> TaskOutcome {
    let (_kill, mut rx) = exec.launch_to_channel(spec);
    finished(&mut rx).await
}

/// The guest's per-thread work, for checking its output.
fn work(seed: u64, rounds: u64) -> u64 {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in 0..rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = x.wrapping_add(i);
    }
    x
}

mod mtspin {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn four_threads_run_to_completion_with_the_right_output() {
        let dir = tempfile::tempdir().unwrap();
        let exec = executor(dir.path());
        exec.prepare("mtspin", Path::new(wasm_examples::threads::MTSPIN_PATH))
            .await
            .expect("a threaded module is accepted");
        assert!(exec.is_prepared("mtspin"));
        let o = run(&exec, spec(dir.path(), "t", &["4", "300000"], 4000)).await;
        assert_eq!(o.termination, Termination::Exited(0), "{o:?}");
        let mut want = String::new();
        for i in 0..4 {
            want.push_str(&format!("thread {i}: {}\n", work(i, 300_000)));
        }
        want.push_str("done 4\n");
        assert_eq!(o.stdout_tail, want);
        assert!(o.cpu_time > Duration::ZERO, "{o:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_trap_in_a_spawned_thread_fails_the_whole_task() {
        let dir = tempfile::tempdir().unwrap();
        let exec = executor(dir.path());
        let o = run(&exec, spec(dir.path(), "t", &["trap"], 1000)).await;
        match &o.termination {
            Termination::Trapped(why) => {
                assert!(why.contains("thread 1"), "{why}");
                assert!(why.contains("unreachable"), "{why}");
            }
            other => panic!("expected a trap, got {other:?} ({o:?})"),
        }
        assert!(o.stdout_tail.contains("main: spawning"), "{o:?}");
        assert!(!o.stdout_tail.contains("join returned"), "{o:?}");
        // The process (and the executor) survive: run another task.
        let o = run(&exec, spec(dir.path(), "u", &["2", "1000"], 1000)).await;
        assert_eq!(o.termination, Termination::Exited(0), "{o:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn proc_exit_in_a_spawned_thread_ends_the_task_with_its_code() {
        let dir = tempfile::tempdir().unwrap();
        let exec = executor(dir.path());
        let o = run(&exec, spec(dir.path(), "t", &["exit"], 1000)).await;
        assert_eq!(o.termination, Termination::Exited(7), "{o:?}");
        assert!(!o.stdout_tail.contains("join returned"), "{o:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_thread_bomb_is_capped() {
        let dir = tempfile::tempdir().unwrap();
        let exec = executor(dir.path());
        let o = run(&exec, spec(dir.path(), "t", &["bomb"], 1000)).await;
        assert_eq!(o.termination, Termination::Exited(0), "{o:?}");
        // The main thread counts against the cap.
        let want = format!("spawn failed after {} threads", MAX_THREADS - 1);
        assert!(o.stdout_tail.contains(&want), "{o:?}");
        assert!(
            o.stdout_tail
                .contains(&format!("bomb done {}", MAX_THREADS - 1)),
            "{o:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kill_ends_spinning_and_sleeping_threads() {
        let dir = tempfile::tempdir().unwrap();
        let exec = executor(dir.path());
        for (name, args) in [("spin", &["4", "100000000000"][..]), ("sleep", &["sleep"])] {
            let (kill, mut rx) = exec.launch_to_channel(spec(dir.path(), name, args, 2000));
            let ev = tokio::time::timeout(SANITY, rx.recv()).await.unwrap();
            assert_eq!(ev, Some(ExecEvent::Running));
            tokio::time::sleep(Duration::from_millis(100)).await;
            let asked = Instant::now();
            kill.kill();
            let o = finished(&mut rx).await;
            assert_eq!(o.termination, Termination::Killed, "{name}: {o:?}");
            println!("{name}: killed in {:?}", asked.elapsed());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_timeout_ends_every_thread() {
        let dir = tempfile::tempdir().unwrap();
        let exec = executor(dir.path());
        let mut s = spec(dir.path(), "t", &["4", "100000000000"], 1000);
        s.timeout = Some(Duration::from_millis(200));
        let o = run(&exec, s).await;
        assert_eq!(o.termination, Termination::Timeout, "{o:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_cpu_budget_counts_every_thread() {
        let dir = tempfile::tempdir().unwrap();
        let exec = executor(dir.path());
        let mut s = spec(dir.path(), "t", &["4", "100000000000"], 4000);
        s.max_cpu = Some(Duration::from_millis(100));
        let o = run(&exec, s).await;
        assert!(matches!(o.termination, Termination::CpuLimit(_)), "{o:?}");
        assert!(o.cpu_time >= Duration::from_millis(100), "{o:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_is_capped_at_the_tasks_mem() {
        let dir = tempfile::tempdir().unwrap();
        let exec = executor(dir.path());
        let mut s = spec(dir.path(), "t", &["2", "1000"], 1000);
        s.mem_bytes = 64 << 10;
        let o = run(&exec, s).await;
        assert!(
            matches!(o.termination, Termination::MemoryLimit(_)),
            "{o:?}"
        );
    }
}
