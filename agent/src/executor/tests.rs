//! End-to-end tests of the executor with real wasmtime and the guests from
//! `tessera-wasm-examples`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::*;

const MIB: u64 = 1 << 20;
/// Generous bound: a task that should stop "promptly" must end within this.
const SANITY: Duration = Duration::from_secs(10);

fn executor() -> Executor {
    Executor::new(ExecutorConfig::default()).unwrap()
}

fn spec(dir: &Path, digest: &str, wasm: &str, args: &[&str]) -> TaskSpec {
    let mut argv = vec![digest.to_owned()];
    argv.extend(args.iter().map(|a| a.to_string()));
    TaskSpec {
        digest: digest.to_owned(),
        wasm_path: PathBuf::from(wasm),
        args: argv,
        env: Vec::new(),
        task_dir: dir.to_owned(),
        mem_bytes: 64 * MIB,
        cpus_milli: 1000,
        timeout: None,
    }
}

/// A launched task and the stream of its events.
struct Running {
    kill: KillHandle,
    events: mpsc::UnboundedReceiver<ExecEvent>,
    saw_running: bool,
}

fn launch(exec: &Executor, spec: TaskSpec) -> Running {
    let (tx, events) = mpsc::unbounded_channel();
    let kill = exec.launch(
        spec,
        Box::new(move |ev| {
            let _ = tx.send(ev);
        }),
    );
    Running {
        kill,
        events,
        saw_running: false,
    }
}

impl Running {
    async fn wait_running(&mut self) {
        let ev = tokio::time::timeout(SANITY, self.events.recv())
            .await
            .expect("no Running event in time")
            .expect("channel closed");
        assert_eq!(ev, ExecEvent::Running);
        self.saw_running = true;
    }

    async fn finished(mut self) -> TaskOutcome {
        let outcome = loop {
            let ev = tokio::time::timeout(SANITY, self.events.recv())
                .await
                .expect("task did not finish in time")
                .expect("channel closed without Finished");
            match ev {
                ExecEvent::Running => {
                    assert!(!self.saw_running, "Running sent twice");
                    self.saw_running = true;
                }
                ExecEvent::Finished(o) => break o,
            }
        };
        // Exactly once: nothing follows Finished, and the sender is dropped.
        assert!(self.events.recv().await.is_none());
        outcome
    }
}

async fn run(exec: &Executor, spec: TaskSpec) -> TaskOutcome {
    launch(exec, spec).finished().await
}

#[tokio::test]
async fn hello_exits_zero_with_output() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &exec,
        spec(dir.path(), "hello", wasm_examples::HELLO_PATH, &["a", "b"]),
    )
    .await;
    assert_eq!(out.termination, Termination::Exited(0), "{out:?}");
    assert!(
        out.stdout_tail.contains("Hello from Tessera! a b"),
        "{out:?}"
    );
    assert!(out.stderr_tail.contains("stderr"), "{out:?}");
    assert!(out.fuel_consumed > 0);
    let stdout = std::fs::read_to_string(dir.path().join("stdout")).unwrap();
    assert!(stdout.contains("Hello from Tessera!"));
    assert!(dir.path().join("sandbox").is_dir());
}

#[tokio::test]
async fn exit_code_is_reported() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(dir.path(), "hello", wasm_examples::HELLO_PATH, &[]);
    s.env = vec![("EXIT_CODE".into(), "3".into())];
    let out = run(&exec, s).await;
    assert_eq!(out.termination, Termination::Exited(3), "{out:?}");
}

#[tokio::test]
async fn pi_prints_its_line() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &exec,
        spec(dir.path(), "pi", wasm_examples::PI_PATH, &["42", "100000"]),
    )
    .await;
    assert_eq!(out.termination, Termination::Exited(0), "{out:?}");
    let line = out.stdout_tail.trim();
    assert!(
        line.starts_with("inside=") && line.contains(" samples=100000 pi=3.1"),
        "{line}"
    );
    assert_eq!(out.stdout_tail.lines().count(), 1);

    let out = run(
        &exec,
        spec(dir.path(), "pi", wasm_examples::PI_PATH, &["x"]),
    )
    .await;
    assert_eq!(out.termination, Termination::Exited(2), "{out:?}");
    assert!(out.stderr_tail.contains("usage"));
}

#[tokio::test]
async fn memhog_hits_memory_limit() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(dir.path(), "memhog", wasm_examples::MEMHOG_PATH, &[]);
    s.mem_bytes = 32 * MIB;
    let out = run(&exec, s).await;
    match &out.termination {
        Termination::MemoryLimit(msg) => {
            eprintln!("memhog: {msg}");
            assert!(msg.contains("memory limit"), "{msg}")
        }
        other => panic!("expected MemoryLimit, got {other:?} / {out:?}"),
    }
    assert!(out.stdout_tail.contains("memhog: 2"), "{out:?}");

    // Below the limit it runs to completion.
    let mut s = spec(dir.path(), "memhog", wasm_examples::MEMHOG_PATH, &["8"]);
    s.mem_bytes = 32 * MIB;
    let out = run(&exec, s).await;
    assert_eq!(out.termination, Termination::Exited(0), "{out:?}");
}

#[tokio::test]
async fn instantiation_beyond_limit_is_memory_limit() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(dir.path(), "hello", wasm_examples::HELLO_PATH, &[]);
    s.mem_bytes = 4096; // smaller than the module's initial memory
    let out = run(&exec, s).await;
    assert!(
        matches!(out.termination, Termination::MemoryLimit(_)),
        "{out:?}"
    );
}

#[tokio::test]
async fn spinner_times_out() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(dir.path(), "spinner", wasm_examples::SPINNER_PATH, &[]);
    s.timeout = Some(Duration::from_millis(300));
    let t0 = Instant::now();
    let out = run(&exec, s).await;
    assert_eq!(out.termination, Termination::Timeout, "{out:?}");
    assert!(t0.elapsed() < SANITY);
    assert!(out.wall >= Duration::from_millis(300));
    assert!(out.fuel_consumed > 1_000_000, "{out:?}");
}

#[tokio::test]
async fn spinner_is_killed() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let mut task = launch(
        &exec,
        spec(dir.path(), "spinner", wasm_examples::SPINNER_PATH, &[]),
    );
    task.wait_running().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    task.kill.kill();
    let out = task.finished().await;
    assert_eq!(out.termination, Termination::Killed, "{out:?}");
    assert!(out.stdout_tail.contains("spinner: started"), "{out:?}");
}

#[tokio::test]
async fn sleeping_spinner_is_killed() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let mut task = launch(
        &exec,
        spec(
            dir.path(),
            "spinner",
            wasm_examples::SPINNER_PATH,
            &["sleep"],
        ),
    );
    task.wait_running().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kill = task.kill.clone();
    kill.kill();
    kill.kill(); // idempotent
    let out = task.finished().await;
    assert_eq!(out.termination, Termination::Killed, "{out:?}");
    assert!(out.stdout_tail.contains("sleep=true"), "{out:?}");
}

#[tokio::test]
async fn kill_before_start() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let task = launch(
        &exec,
        spec(dir.path(), "spinner", wasm_examples::SPINNER_PATH, &[]),
    );
    task.kill.kill();
    let out = task.finished().await;
    assert_eq!(out.termination, Termination::Killed, "{out:?}");
}

#[tokio::test]
async fn trap_is_reported() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &exec,
        spec(dir.path(), "trap", wasm_examples::TRAP_PATH, &[]),
    )
    .await;
    match &out.termination {
        Termination::Trapped(msg) => {
            eprintln!("trap: {msg}");
            assert!(msg.contains("unreachable"), "{msg}")
        }
        other => panic!("expected Trapped, got {other:?}"),
    }
    assert!(out.stdout_tail.contains("about to execute unreachable"));
}

#[tokio::test]
async fn garbage_module_fails_to_start() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("garbage.wasm");
    std::fs::write(&wasm, b"this is not wasm at all").unwrap();
    let err = exec.prepare("garbage", &wasm).await.unwrap_err();
    assert!(matches!(err, ExecError::Compile { .. }), "{err}");
    assert!(!exec.is_prepared("garbage"));

    let task_dir = dir.path().join("task");
    let out = run(
        &exec,
        spec(&task_dir, "garbage", wasm.to_str().unwrap(), &[]),
    )
    .await;
    match &out.termination {
        Termination::StartFailed(msg) => assert!(msg.contains("not a valid WebAssembly"), "{msg}"),
        other => panic!("expected StartFailed, got {other:?}"),
    }

    // Missing file, missing `_start`, bad digest.
    let err = exec
        .prepare("missing", &dir.path().join("nope.wasm"))
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::Io { .. }), "{err}");
    let lib = dir.path().join("lib.wat");
    std::fs::write(&lib, "(module (func (export \"f\")))").unwrap();
    let err = exec.prepare("lib", &lib).await.unwrap_err();
    assert!(matches!(err, ExecError::NotACommand { .. }), "{err}");
    let err = exec.prepare("../etc", &lib).await.unwrap_err();
    assert!(matches!(err, ExecError::InvalidDigest(_)), "{err}");
    let imports = dir.path().join("imports.wat");
    std::fs::write(
        &imports,
        "(module (import \"env\" \"evil\" (func)) (func (export \"_start\")))",
    )
    .unwrap();
    let err = exec.prepare("imports", &imports).await.unwrap_err();
    assert!(matches!(err, ExecError::Link { .. }), "{err}");
}

#[tokio::test]
async fn files_guest_is_sandboxed() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("sandbox")).unwrap();
    std::fs::write(dir.path().join("sandbox/input.txt"), "some input").unwrap();
    let out = run(
        &exec,
        spec(dir.path(), "files", wasm_examples::FILES_PATH, &[]),
    )
    .await;
    assert_eq!(out.termination, Termination::Exited(0), "{out:?}");
    let stdout = &out.stdout_tail;
    assert!(stdout.contains("input: some input"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("sandbox/output.txt")).unwrap(),
        "written by the files guest\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("sandbox/sub/dir/file.txt")).unwrap(),
        "nested\n"
    );
    let ls: Vec<&str> = stdout.lines().filter(|l| l.starts_with("ls: ")).collect();
    assert_eq!(
        ls,
        ["ls: input.txt", "ls: output.txt", "ls: sub"],
        "{stdout}"
    );
    let escapes: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("escape "))
        .collect();
    assert_eq!(escapes.len(), 3, "{stdout}");
    for line in escapes {
        assert!(line.ends_with(": denied"), "{line}");
    }
    // The stdout/stderr files are outside the guest's reach.
    assert!(!stdout.contains("ls: stdout"));
}

#[tokio::test]
async fn output_is_capped() {
    let cfg = ExecutorConfig {
        output_cap: 10_000,
        tail_bytes: 100,
        cache_dir: None,
    };
    let exec = Executor::new(cfg).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &exec,
        spec(dir.path(), "flood", wasm_examples::FLOOD_PATH, &["10000"]),
    )
    .await;
    assert_eq!(out.termination, Termination::Exited(0), "{out:?}");
    let marker = std::str::from_utf8(TRUNCATION_MARKER).unwrap();
    for name in ["stdout", "stderr"] {
        let bytes = std::fs::read(dir.path().join(name)).unwrap();
        assert_eq!(bytes.len(), 10_000 + TRUNCATION_MARKER.len(), "{name}");
        assert!(bytes.ends_with(TRUNCATION_MARKER));
    }
    assert!(out.stdout_tail.ends_with(marker), "{out:?}");
    assert!(out.stdout_tail.len() <= 100);
    assert!(!out.stdout_tail.contains("flood: done"));
}

#[tokio::test]
async fn tasks_run_concurrently() {
    // Current-thread runtime: the spinner must yield for hello to progress.
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let spin_dir = dir.path().join("spin");
    let hello_dir = dir.path().join("hello");
    let mut spinner = launch(
        &exec,
        spec(&spin_dir, "spinner", wasm_examples::SPINNER_PATH, &[]),
    );
    spinner.wait_running().await;
    let out = run(
        &exec,
        spec(&hello_dir, "hello", wasm_examples::HELLO_PATH, &[]),
    )
    .await;
    assert_eq!(out.termination, Termination::Exited(0));
    // The spinner is still running.
    assert!(spinner.events.try_recv().is_err());
    spinner.kill.kill();
    assert_eq!(spinner.finished().await.termination, Termination::Killed);
}

#[tokio::test]
async fn disk_cache_is_used_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let cfg = ExecutorConfig {
        cache_dir: Some(cache.clone()),
        ..ExecutorConfig::default()
    };
    let exec = Executor::new(cfg.clone()).unwrap();
    exec.prepare("hello-digest", Path::new(wasm_examples::HELLO_PATH))
        .await
        .unwrap();
    assert!(exec.is_prepared("hello-digest"));
    let files: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let cwasm = &files[0];
    let name = cwasm.file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with("hello-digest.") && name.ends_with(".cwasm"),
        "{name}"
    );

    // A fresh executor loads it from disk even if the source is gone.
    let exec2 = Executor::new(cfg.clone()).unwrap();
    let task = dir.path().join("t1");
    let out = run(
        &exec2,
        spec(&task, "hello-digest", "/nonexistent.wasm", &[]),
    )
    .await;
    assert_eq!(out.termination, Termination::Exited(0), "{out:?}");

    // A corrupt artifact is recompiled and overwritten. (Replace it rather
    // than truncating it: `exec2` has the old file mmapped, and truncating a
    // mapped file would SIGBUS.)
    let tmp = cache.join("corrupt.tmp");
    std::fs::write(&tmp, b"corrupt").unwrap();
    std::fs::rename(&tmp, cwasm).unwrap();
    let exec3 = Executor::new(cfg).unwrap();
    exec3
        .prepare("hello-digest", Path::new(wasm_examples::HELLO_PATH))
        .await
        .unwrap();
    assert!(std::fs::metadata(cwasm).unwrap().len() > 1000);
}
