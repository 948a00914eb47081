//! End-to-end tests of the executor with real wasmtime and the guests from
//! `tessera-wasm-examples`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::*;

const MIB: u64 = 1 << 20;
/// Generous bound: a task that should stop "promptly" must end within this.
const SANITY: Duration = Duration::from_secs(10);

/// How these tests' executors meter preview-1 modules: by rewriting (the default), or by fuel
/// with `TESSERA_TEST_METERING=fuel` (`.ci/run` runs this module both ways).
fn metering() -> Metering {
    match std::env::var("TESSERA_TEST_METERING").as_deref() {
        Ok("fuel") => Metering::Fuel,
        _ => Metering::Rewrite,
    }
}

fn executor() -> Executor {
    Executor::new(ExecutorConfig {
        metering: metering(),
        ..ExecutorConfig::default()
    })
    .unwrap()
}

fn spec(dir: &Path, digest: &str, wasm: &str, args: &[&str]) -> TaskSpec {
    let mut argv = vec![digest.to_owned()];
    argv.extend(args.iter().map(|a| a.to_string()));
    TaskSpec {
        sandbox: true,
        ..TaskSpec::new(digest, wasm, argv, dir)
    }
}

/// A launched task and the stream of its events.
struct Running {
    kill: KillHandle,
    events: mpsc::UnboundedReceiver<ExecEvent>,
    saw_running: bool,
}

fn launch(exec: &Executor, spec: TaskSpec) -> Running {
    let (kill, events) = exec.launch_to_channel(spec);
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
    let lib = dir.path().join("lib.wasm");
    std::fs::write(
        &lib,
        wat::parse_str("(module (func (export \"f\")))").unwrap(),
    )
    .unwrap();
    let err = exec.prepare("lib", &lib).await.unwrap_err();
    assert!(matches!(err, ExecError::NotACommand { .. }), "{err}");
    let err = exec.prepare("../etc", &lib).await.unwrap_err();
    assert!(matches!(err, ExecError::InvalidDigest(_)), "{err}");
    let imports = dir.path().join("imports.wasm");
    std::fs::write(
        &imports,
        wat::parse_str("(module (import \"env\" \"evil\" (func)) (func (export \"_start\")))")
            .unwrap(),
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
        ..ExecutorConfig::default()
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

#[tokio::test]
async fn cpu_budget_stops_a_spinner() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(dir.path(), "spinner", wasm_examples::SPINNER_PATH, &[]);
    s.max_cpu = Some(Duration::from_millis(100));
    let out = run(&exec, s).await;
    match &out.termination {
        Termination::CpuLimit(msg) => assert!(msg.contains("100 ms"), "{msg}"),
        other => panic!("expected CpuLimit, got {other:?} / {out:?}"),
    }
    match metering() {
        // It burnt its whole budget, and not more.
        Metering::Fuel => {
            let budget = exec.fuel_per_core_second() / 10;
            assert_eq!(out.fuel_consumed, budget, "{out:?}");
        }
        // The budget is on the task's CPU clock: it ran at least that long.
        Metering::Rewrite => {
            assert!(out.cpu_time >= Duration::from_millis(100), "{out:?}");
            assert!(out.fuel_consumed > 0, "{out:?}");
        }
    }

    // A task within its budget is not affected.
    let mut s = spec(dir.path(), "pi", wasm_examples::PI_PATH, &["1", "1000"]);
    s.max_cpu = Some(Duration::from_secs(5));
    let out = run(&exec, s).await;
    assert_eq!(out.termination, Termination::Exited(0), "{out:?}");
}

/// A module that grows its table by 1024 entries at a time and traps when a
/// growth is refused, as a guest checking `table.grow`'s result would.
const TABLEHOG_WAT: &str = r#"
(module
  (memory 1)
  (table $t 0 funcref)
  (func (export "_start")
    (loop $grow
      (br_if $grow
        (i32.ne (table.grow $t (ref.null func) (i32.const 1024)) (i32.const -1))))
    unreachable))
"#;

/// Waits on its own shared memory with no timeout: in a task of one thread, nobody could ever
/// wake it, and wasmtime cannot interrupt a thread parked in `memory.atomic.wait`.
const WAIT_FOREVER_WAT: &str = r#"
(module
  (memory 1 1 shared)
  (func (export "_start")
    (drop (memory.atomic.wait32 (i32.const 0) (i32.const 0) (i64.const -1)))))
"#;

#[tokio::test]
async fn a_one_thread_task_cannot_park_its_thread_on_a_shared_memory() {
    // Only the threads path (its own engine, a sweep that notifies waiters after a kill) runs
    // shared memories; anywhere else the task must fail, never park an executor thread.
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("wait.wasm");
    std::fs::write(&wasm, wat::parse_str(WAIT_FOREVER_WAT).unwrap()).unwrap();
    // With the pool (which takes no shared memory) and without (an agent whose pools could
    // not be reserved).
    for pooling in [true, false] {
        let exec = Executor::new(ExecutorConfig {
            metering: metering(),
            pooling: pooling.then(|| ExecutorConfig::default().pooling).flatten(),
            ..ExecutorConfig::default()
        })
        .unwrap();
        let s = spec(
            &dir.path().join("wait"),
            "wait",
            wasm.to_str().unwrap(),
            &[],
        );
        let out = launch(&exec, s).finished().await;
        assert!(
            matches!(out.termination, Termination::StartFailed(_)),
            "pooling {pooling}: {out:?}"
        );
        eprintln!("wait, pooling {pooling}: {:?}", out.termination);
    }
}

/// Keeps 8 MiB GC arrays alive in a chain, without end.
const GCHOG_WAT: &str = r#"
(module
  (type $arr (array (mut i64)))
  (type $link (struct (field (ref null $link)) (field (ref $arr))))
  (global $kept (mut (ref null $link)) (ref.null $link))
  (func (export "_start")
    (loop $more
      (global.set $kept
        (struct.new $link (global.get $kept) (array.new_default $arr (i32.const 1048576))))
      (br $more))))
"#;

#[tokio::test]
async fn a_guest_filling_its_gc_heap_is_held_to_its_memory_share() {
    // The GC heap grows through the same limiter as linear memories: a guest keeping ever more
    // objects alive ends at its share, with the reason, and the agent's memory is safe.
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let gchog = dir.path().join("gchog.wasm");
    std::fs::write(&gchog, wat::parse_str(GCHOG_WAT).unwrap()).unwrap();
    let mut s = spec(
        &dir.path().join("gchog"),
        "gchog",
        gchog.to_str().unwrap(),
        &[],
    );
    s.mem_bytes = 64 * MIB;
    let out = launch(&exec, s).finished().await;
    match &out.termination {
        Termination::MemoryLimit(msg) => eprintln!("gchog: {msg}"),
        other => panic!("gchog: expected MemoryLimit, got {other:?} / {out:?}"),
    }
}

#[tokio::test]
async fn hogs_fail_with_the_right_reason_and_others_are_unaffected() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let tablehog = dir.path().join("tablehog.wasm");
    std::fs::write(&tablehog, wat::parse_str(TABLEHOG_WAT).unwrap()).unwrap();

    // A well-behaved task runs alongside the hogs.
    let mut bystander = launch(
        &exec,
        spec(
            &dir.path().join("bystander"),
            "pi",
            wasm_examples::PI_PATH,
            &["7", "2000000"],
        ),
    );
    bystander.wait_running().await;

    let mut s = spec(
        &dir.path().join("tablehog"),
        "tablehog",
        tablehog.to_str().unwrap(),
        &[],
    );
    s.mem_bytes = 4 * MIB;
    let table = launch(&exec, s);
    let mut s = spec(
        &dir.path().join("memhog"),
        "memhog",
        wasm_examples::MEMHOG_PATH,
        &[],
    );
    s.mem_bytes = 16 * MIB;
    let mem = launch(&exec, s);
    let stack = launch(
        &exec,
        spec(
            &dir.path().join("stack"),
            "stackoverflow",
            wasm_examples::STACKOVERFLOW_PATH,
            &[],
        ),
    );

    let out = table.finished().await;
    match &out.termination {
        // 64 KiB of memory + 8 bytes per table entry: denied near 4 MiB.
        Termination::MemoryLimit(msg) => assert!(msg.contains("growing a table"), "{msg}"),
        other => panic!("tablehog: expected MemoryLimit, got {other:?}"),
    }
    let out = mem.finished().await;
    assert!(
        matches!(out.termination, Termination::MemoryLimit(_)),
        "memhog: {out:?}"
    );
    let out = stack.finished().await;
    match &out.termination {
        Termination::Trapped(msg) => {
            eprintln!("stackoverflow: {msg}");
            assert!(
                msg.contains("call stack exhausted") || msg.contains("out of bounds"),
                "{msg}"
            )
        }
        other => panic!("stackoverflow: expected a trap, got {other:?}"),
    }
    assert!(out.stdout_tail.contains("recursing"), "{out:?}");

    let out = bystander.finished().await;
    assert_eq!(out.termination, Termination::Exited(0), "{out:?}");
    assert!(out.stdout_tail.contains("samples=2000000"), "{out:?}");
}

#[tokio::test]
async fn disk_filler_hits_the_disk_limit() {
    let cfg = ExecutorConfig {
        disk_check_interval: Duration::from_millis(20),
        ..ExecutorConfig::default()
    };
    let exec = Executor::new(cfg).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(dir.path(), "diskfill", wasm_examples::DISKFILL_PATH, &[]);
    s.disk_bytes = 8 * MIB;
    let out = run(&exec, s).await;
    match &out.termination {
        Termination::DiskLimit(msg) => assert!(msg.contains("8388608"), "{msg}"),
        other => panic!("expected DiskLimit, got {other:?} / {out:?}"),
    }

    // Caught at exit even between two checks.
    let cfg = ExecutorConfig {
        disk_check_interval: Duration::from_secs(3600),
        ..ExecutorConfig::default()
    };
    let exec = Executor::new(cfg).unwrap();
    let mut s = spec(dir.path(), "diskfill", wasm_examples::DISKFILL_PATH, &["3"]);
    s.disk_bytes = 2 * MIB;
    let out = run(&exec, s.clone()).await;
    assert!(
        matches!(out.termination, Termination::DiskLimit(_)),
        "{out:?}"
    );
    // Within the cap (and with the default cap for disk 0) it succeeds.
    s.disk_bytes = 8 * MIB;
    assert_eq!(
        run(&exec, s.clone()).await.termination,
        Termination::Exited(0)
    );
    s.disk_bytes = 0;
    assert_eq!(run(&exec, s).await.termination, Termination::Exited(0));
}

#[tokio::test]
async fn escape_attempts_all_fail() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret.txt"), "top secret").unwrap();
    let out = run(
        &exec,
        spec(dir.path(), "escape", wasm_examples::ESCAPE_PATH, &[]),
    )
    .await;
    assert_eq!(out.termination, Termination::Exited(0), "{out:?}");
    let stdout = std::fs::read_to_string(dir.path().join("stdout")).unwrap();
    eprintln!("{stdout}");
    assert!(stdout.contains("escape: done"), "{stdout}");
    let attempts: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("escape ") && l.contains(": "))
        .collect();
    assert_eq!(attempts.len(), 16, "{stdout}");
    for line in &attempts {
        assert!(line.ends_with(": denied"), "{line}\n{stdout}");
    }
    // Nothing changed outside the sandbox.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("secret.txt")).unwrap(),
        "top secret"
    );
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["sandbox", "secret.txt", "stderr", "stdout"]);
    assert!(!dir.path().join("sandbox/stolen.txt").exists());
}

/// A burst of tasks of a module the agent has not seen prepares it concurrently: one compile
/// serves them all (the ones that come after it find it cached). A module that fails to
/// compile fails every one of them with its error; how many compiles that takes depends on
/// how the burst overlaps (a failure is shared only by the callers that waited for it, and
/// the next tries again), so it is not counted here (`flight.rs` tests the sharing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_prepares_of_a_new_module_compiles_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Executor::new(ExecutorConfig {
        cache_dir: Some(dir.path().join("cache")),
        ..ExecutorConfig::default()
    })
    .unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm not really").unwrap();
    let burst = |digest: &'static str, path: PathBuf| {
        (0..16)
            .map(|_| {
                let (exec, path) = (exec.clone(), path.clone());
                tokio::spawn(async move { exec.prepare(digest, &path).await })
            })
            .collect::<Vec<_>>()
    };
    for handle in burst("burn", PathBuf::from(wasm_examples::BURN_PATH)) {
        handle.await.unwrap().unwrap();
    }
    assert_eq!(exec.stats().compiles, 1, "{:?}", exec.stats());
    for handle in burst("garbage", garbage) {
        let err = handle.await.unwrap().unwrap_err();
        assert!(matches!(err, ExecError::Compile { .. }), "{err}");
    }
    assert!(!exec.is_prepared("garbage"));
}

#[tokio::test]
async fn cached_module_survives_a_restart_without_recompiling() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ExecutorConfig {
        cache_dir: Some(dir.path().join("cache")),
        ..ExecutorConfig::default()
    };
    let hello = Path::new(wasm_examples::HELLO_PATH);
    let exec = Executor::new(cfg.clone()).unwrap();
    exec.prepare("h", hello).await.unwrap();
    exec.prepare("h", hello).await.unwrap(); // in memory: nothing new
    let s = exec.stats();
    assert_eq!((s.compiles, s.disk_cache_hits, s.cache_rebuilds), (1, 0, 0));
    assert!(s.fuel_per_core_second > 1_000_000, "{s:?}");
    drop(exec);

    // "Restart": a new executor on the same cache directory.
    let exec = Executor::new(cfg.clone()).unwrap();
    let out = run(
        &exec,
        spec(&dir.path().join("t"), "h", "/nonexistent.wasm", &[]),
    )
    .await;
    assert_eq!(out.termination, Termination::Exited(0), "{out:?}");
    let s = exec.stats();
    assert_eq!((s.compiles, s.disk_cache_hits, s.cache_rebuilds), (0, 1, 0));
    drop(exec);

    // A corrupted entry is detected, counted and rebuilt.
    let cwasm = std::fs::read_dir(dir.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .unwrap();
    let mut bytes = std::fs::read(&cwasm).unwrap();
    let mid = bytes.len() / 2;
    bytes.truncate(mid);
    let tmp = cwasm.with_extension("tmp");
    std::fs::write(&tmp, &bytes).unwrap();
    std::fs::rename(&tmp, &cwasm).unwrap();
    let exec = Executor::new(cfg.clone()).unwrap();
    exec.prepare("h", hello).await.unwrap();
    let s = exec.stats();
    assert_eq!((s.compiles, s.disk_cache_hits, s.cache_rebuilds), (1, 0, 1));
    drop(exec);
    let exec = Executor::new(cfg).unwrap();
    exec.prepare("h", hello).await.unwrap();
    assert_eq!(exec.stats().disk_cache_hits, 1);
}

#[tokio::test]
async fn paced_spinner_still_times_out_and_is_killed() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(dir.path(), "spinner", wasm_examples::SPINNER_PATH, &[]);
    s.cpus_milli = 100;
    s.timeout = Some(Duration::from_millis(300));
    let out = run(&exec, s.clone()).await;
    assert_eq!(out.termination, Termination::Timeout, "{out:?}");
    // Paced: it used about a tenth of a core (never more than its share, whatever the load).
    assert!(out.cpu_time < out.wall / 4, "{out:?}");
    assert!(out.cpu_paused > Duration::ZERO, "{out:?}");

    s.timeout = None;
    let mut task = launch(&exec, s);
    task.wait_running().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    task.kill.kill();
    let out = task.finished().await;
    assert_eq!(out.termination, Termination::Killed, "{out:?}");
}

fn pooled_executor(max_tasks: u32, max_task_mem: u64) -> Executor {
    pooled_executor_metered(max_tasks, max_task_mem, metering())
}

fn pooled_executor_metered(max_tasks: u32, max_task_mem: u64, metering: Metering) -> Executor {
    let exec = Executor::new(ExecutorConfig {
        pooling: Some(PoolingConfig {
            max_tasks,
            max_task_mem,
        }),
        metering,
        ..ExecutorConfig::default()
    })
    .unwrap();
    assert_eq!(exec.stats().pool_slots, max_tasks);
    exec
}

#[tokio::test]
async fn a_full_pool_fails_the_launch_cleanly_and_frees_slots() {
    let exec = pooled_executor(2, 64 * MIB);
    let dir = tempfile::tempdir().unwrap();
    let sleeper = |i: usize| {
        spec(
            &dir.path().join(format!("sleeper-{i}")),
            "spinner",
            wasm_examples::SPINNER_PATH,
            &["sleep"],
        )
    };
    let mut a = launch(&exec, sleeper(0));
    a.wait_running().await;
    let mut b = launch(&exec, sleeper(1));
    b.wait_running().await;
    let out = run(&exec, sleeper(2)).await;
    match &out.termination {
        Termination::StartFailed(msg) => assert!(msg.contains("limit of 2"), "{msg}"),
        other => panic!("expected StartFailed on a full pool, got {other:?}"),
    }
    // `hello` compiled beforehand, so that its launch comes right at the kill's report, while
    // the killed task may still be dropping its store (a launch that finds the pool full then
    // waits for that slot).
    exec.prepare("hello", Path::new(wasm_examples::HELLO_PATH))
        .await
        .unwrap();
    a.kill.kill();
    // Right at its end's report (not when its task is over, as `finished` waits for).
    let ended = loop {
        match a.events.recv().await.expect("a Finished event") {
            ExecEvent::Finished(outcome) => break outcome,
            ExecEvent::Running => {}
        }
    };
    assert_eq!(ended.termination, Termination::Killed);
    // The slot is back. (No sandbox: its creation would give the drop time to finish first.)
    let hello = TaskSpec {
        sandbox: false,
        ..spec(
            &dir.path().join("hello"),
            "hello",
            wasm_examples::HELLO_PATH,
            &[],
        )
    };
    let out = run(&exec, hello).await;
    assert_eq!(out.termination, Termination::Exited(0), "{out:?}");
    b.kill.kill();
    assert_eq!(b.finished().await.termination, Termination::Killed);
}

#[tokio::test]
async fn a_full_pool_holds_as_many_components_as_tasks() {
    // With fuel metering, components and modules share the pool (metered by rewriting,
    // components are allocated on demand, outside it).
    let exec = pooled_executor_metered(2, 64 * MIB, Metering::Fuel);
    let dir = tempfile::tempdir().unwrap();
    let sleeper = |i: usize| p2spec(&dir.path().join(format!("c{i}")), "p2spin", &["sleep"]);
    let mut a = launch(&exec, sleeper(0));
    a.wait_running().await;
    let mut b = launch(&exec, sleeper(1));
    b.wait_running().await;
    match run(&exec, sleeper(2)).await.termination {
        Termination::StartFailed(msg) => assert!(msg.contains("limit of 2"), "{msg}"),
        other => panic!("expected StartFailed on a full pool, got {other:?}"),
    }
    a.kill.kill();
    assert_eq!(a.finished().await.termination, Termination::Killed);
    let out = run(&exec, p2spec(&dir.path().join("c3"), "p2cmd", &[])).await;
    assert_eq!(out.termination, Termination::Exited(0), "{out:?}");
    b.kill.kill();
    assert_eq!(b.finished().await.termination, Termination::Killed);
}

#[tokio::test]
async fn pooled_tasks_may_use_all_of_the_agents_memory_and_no_more() {
    // An agent with 96 MiB: a task with all of it may grow to nearly that.
    let exec = pooled_executor(4, 96 * MIB);
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(
        &dir.path().join("memhog"),
        "memhog",
        wasm_examples::MEMHOG_PATH,
        &[],
    );
    s.mem_bytes = 96 * MIB;
    let out = run(&exec, s.clone()).await;
    match &out.termination {
        // Denied by the task's limiter, not by the pool.
        Termination::MemoryLimit(msg) => {
            assert!(msg.contains("memory limit of 100663296 bytes"), "{msg}")
        }
        other => panic!("memhog: expected MemoryLimit, got {other:?}"),
    }
    // A task asking for more than the pool's slot still gets a memory-limit
    // failure, from the pool's per-slot maximum.
    s.mem_bytes = 1 << 30;
    s.task_dir = dir.path().join("memhog-big");
    let out = run(&exec, s).await;
    match &out.termination {
        Termination::MemoryLimit(msg) => assert!(msg.contains("failed under"), "{msg}"),
        other => panic!("memhog: expected MemoryLimit, got {other:?}"),
    }
}

#[tokio::test]
async fn a_table_past_the_pools_slot_is_a_memory_limit() {
    // 64 KiB per task: tables of at most 20 000 elements.
    let exec = pooled_executor(2, 64 << 10);
    let dir = tempfile::tempdir().unwrap();
    let tablehog = dir.path().join("tablehog.wasm");
    std::fs::write(&tablehog, wat::parse_str(TABLEHOG_WAT).unwrap()).unwrap();
    let mut s = spec(
        &dir.path().join("tablehog"),
        "tablehog",
        tablehog.to_str().unwrap(),
        &[],
    );
    s.mem_bytes = 1 << 30;
    let out = run(&exec, s).await;
    match &out.termination {
        Termination::MemoryLimit(msg) => {
            assert!(
                msg.contains("growing a table") && msg.contains("failed"),
                "{msg}"
            )
        }
        other => panic!("tablehog: expected MemoryLimit, got {other:?}"),
    }
}

/// A freed slot's memory is reset in place up to `keep_resident` bytes and handed back to the
/// kernel past that: either way the next task in the slot starts from its own module's image.
/// One slot, so every task takes the same one; `memhog` exits with 3 if a chunk it gets from
/// `memory.grow` is not zero.
#[tokio::test]
async fn a_reused_slot_holds_nothing_of_the_task_before() {
    let exec = pooled_executor(1, 64 * MIB);
    let keep = PoolingConfig {
        max_tasks: 1,
        max_task_mem: 64 * MIB,
    }
    .keep_resident();
    assert_eq!(keep, 1 << 20, "a sixteenth of 64 MiB, capped at 256 pages");
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3 {
        // 4 MiB written: the first MiB of it reset in place, the rest decommitted.
        let s = spec(
            &dir.path().join(format!("memhog-{round}")),
            "memhog",
            wasm_examples::MEMHOG_PATH,
            &["4"],
        );
        let out = run(&exec, s).await;
        assert_eq!(
            out.termination,
            Termination::Exited(0),
            "round {round}: {out:?}"
        );
        assert!(out.stdout_tail.contains("reached 4 MiB"), "{out:?}");
        // A small guest after it: its data segment back from the image, its output right.
        let hello = spec(
            &dir.path().join(format!("hello-{round}")),
            "hello",
            wasm_examples::HELLO_PATH,
            &[],
        );
        let out = run(&exec, hello).await;
        assert_eq!(out.termination, Termination::Exited(0), "{out:?}");
        assert!(out.stdout_tail.contains("Hello from Tessera!"), "{out:?}");
    }
}

#[test]
fn idle_slots_keep_a_sixteenth_of_the_memory_resident_at_most() {
    let keep = |max_tasks, max_task_mem| {
        PoolingConfig {
            max_tasks,
            max_task_mem,
        }
        .keep_resident()
    };
    // The default pool: 4 GiB / 16 over 1,000 slots = 268,435 bytes: 65 whole pages.
    assert_eq!(keep(1000, 4 << 30), 65 * 4096);
    // An agent of <4 cpus, 4 GiB>: 4,000 slots of 64 KiB.
    assert_eq!(keep(4000, 4 << 30), 16 * 4096);
    // At least a page, at most 1 MiB.
    assert_eq!(keep(10_000, 64 * MIB), 4096);
    assert_eq!(keep(1, 4 << 30), 1 << 20);
    for (n, mem) in [(1000, 4u64 << 30), (4000, 4 << 30), (77, 3 << 30)] {
        assert!((keep(n, mem) as u64) * u64::from(n) <= mem / 16);
    }
}

#[tokio::test]
async fn on_demand_allocation_still_works() {
    let exec = Executor::new(ExecutorConfig {
        pooling: None,
        ..ExecutorConfig::default()
    })
    .unwrap();
    assert_eq!(exec.stats().pool_slots, 0);
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &exec,
        spec(dir.path(), "hello", wasm_examples::HELLO_PATH, &[]),
    )
    .await;
    assert_eq!(out.termination, Termination::Exited(0), "{out:?}");
    let mut s = spec(
        &dir.path().join("memhog"),
        "memhog",
        wasm_examples::MEMHOG_PATH,
        &[],
    );
    s.mem_bytes = 16 * MIB;
    assert!(matches!(
        run(&exec, s).await.termination,
        Termination::MemoryLimit(_)
    ));
}

#[tokio::test]
async fn sha256_guest_matches_a_native_sha256() {
    use sha2::Digest as _;
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &exec,
        spec(
            dir.path(),
            "sha256",
            wasm_examples::SHA256_PATH,
            &["4", "2"],
        ),
    )
    .await;
    assert_eq!(out.termination, Termination::Exited(0), "{out:?}");
    // The guest's buffer: a linear congruential generator's high bytes.
    let mut buf = vec![0u8; 4 * 1024];
    let mut x: u32 = 1;
    for b in buf.iter_mut() {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        *b = (x >> 16) as u8;
    }
    let mut digest = [0u8; 32];
    for _ in 0..2 {
        let mut h = sha2::Sha256::new();
        h.update(digest);
        h.update(&buf);
        digest = h.finalize().into();
    }
    assert_eq!(
        out.stdout_tail.trim(),
        format!("sha256: kib=4 rounds=2 digest={}", hex::encode(digest))
    );
}

#[tokio::test]
async fn json_guest_parses_what_it_generates() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &exec,
        spec(dir.path(), "json", wasm_examples::JSON_PATH, &["10", "3"]),
    )
    .await;
    assert_eq!(out.termination, Termination::Exited(0), "{out:?}");
    let line = out.stdout_tail.trim();
    // Each of the three passes reads the same ten records, five of them with "ok": true.
    assert!(
        line.starts_with("json: records=10 rounds=3 ") && line.ends_with(" ok=15"),
        "{line}"
    );
}

#[tokio::test]
async fn burn_runs_its_rounds_and_prints_a_checksum() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &exec,
        spec(dir.path(), "burn", wasm_examples::BURN_PATH, &["3"]),
    )
    .await;
    assert_eq!(out.termination, Termination::Exited(0), "{out:?}");
    let line = out.stdout_tail.trim();
    assert!(line.starts_with("burn: rounds=3 checksum="), "{line}");
    assert_eq!(line.len(), "burn: rounds=3 checksum=".len() + 16, "{line}");
}

/// Every guest `wasm-examples` builds names the test here that runs it, so a new guest without
/// a test fails the build (wasmtime's test-programs trick, through `foreach_guest!`).
mod guest_tests {
    pub(super) use super::{
        arith_matches_a_native_run as arith, bulkmem_matches_a_native_run as bulkmem,
        burn_runs_its_rounds_and_prints_a_checksum as burn,
        data_sets_are_read_only_and_closed as datasets,
        denied_socket_calls_keep_wasi_errno_semantics as sockets,
        disk_filler_hits_the_disk_limit as diskfill, escape_attempts_all_fail as escape,
        files_guest_is_sandboxed as files, hello_exits_zero_with_output as hello,
        hogs_fail_with_the_right_reason_and_others_are_unaffected as stackoverflow,
        json_guest_parses_what_it_generates as json,
        kvquery_answers_from_a_table_it_builds as kvquery, memhog_hits_memory_limit as memhog,
        output_is_capped as flood, pi_prints_its_line as pi,
        readblock_reads_its_blocks as readblock, sha256_guest_matches_a_native_sha256 as sha256,
        spinner_times_out as spinner, ticker_prints_its_ticks_then_says_done as ticker,
        trap_is_reported as trap,
    };
}

#[tokio::test]
async fn ticker_prints_its_ticks_then_says_done() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &exec,
        spec(
            dir.path(),
            "ticker",
            wasm_examples::TICKER_PATH,
            &["12", "1"],
        ),
    )
    .await;
    assert_eq!(out.termination, Termination::Exited(0), "{out:?}");
    let ticks: Vec<String> = (1..=12).map(|i| format!("tick {i}")).collect();
    assert_eq!(
        out.stdout_tail.lines().collect::<Vec<_>>(),
        ticks,
        "{out:?}"
    );
    assert_eq!(out.stderr_tail, "tock 10\nticker: done\n", "{out:?}");
}

macro_rules! assert_guest_tested {
    ($name:ident) => {
        #[allow(unused_imports)]
        use guest_tests::$name as _;
    };
}
wasm_examples::foreach_guest!(assert_guest_tested);

#[tokio::test]
async fn arith_matches_a_native_run() {
    let (mut x, mut acc): (u64, u64) = (0x9E37_79B9_7F4A_7C15, 1);
    for _ in 0..2 {
        for _ in 0..(1u32 << 20) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            acc = acc.wrapping_mul(x | 1).rotate_left(7) ^ (x >> 3);
        }
    }
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &exec,
        spec(dir.path(), "arith", wasm_examples::ARITH_PATH, &["2"]),
    )
    .await;
    assert_eq!(out.termination, Termination::Exited(0), "{out:?}");
    assert_eq!(
        out.stdout_tail.trim(),
        format!("arith: units=2 checksum={acc:016x}")
    );
}

/// Whether `wasm` holds the two-byte opcode `0xFC op` followed by memory index 0 (twice for
/// `memory.copy`): a scan, good enough to see that the guest's copies are bulk-memory ones.
fn has_bulk_op(wasm: &[u8], op: u8, zeros: usize) -> bool {
    wasm.windows(2 + zeros)
        .any(|w| w[0] == 0xFC && w[1] == op && w[2..].iter().all(|&b| b == 0))
}

#[tokio::test]
async fn bulkmem_matches_a_native_run() {
    // The guest is what it says: its copies and fills are `memory.copy` and `memory.fill`.
    assert!(
        has_bulk_op(wasm_examples::BULKMEM, 0x0A, 2),
        "no memory.copy"
    );
    assert!(
        has_bulk_op(wasm_examples::BULKMEM, 0x0B, 1),
        "no memory.fill"
    );
    let (units, len) = (5u64, 2usize << 20);
    let mut buf = vec![0u8; len];
    let mut sum = 0u64;
    for u in 0..units {
        buf.copy_within(..len / 2, len / 2);
        buf[..len / 2].fill(u as u8);
        sum = sum.wrapping_add(u64::from(buf[(u as usize * 4099) % len]));
    }
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &exec,
        spec(
            dir.path(),
            "bulkmem",
            wasm_examples::BULKMEM_PATH,
            &["5", "2"],
        ),
    )
    .await;
    assert_eq!(out.termination, Termination::Exited(0), "{out:?}");
    assert_eq!(
        out.stdout_tail.trim(),
        format!("bulkmem: units=5 mib=2 checksum={sum}")
    );
}

#[tokio::test]
async fn denied_socket_calls_keep_wasi_errno_semantics() {
    const EBADF: u32 = 8;
    const ENOTSOCK: u32 = 57;
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &exec,
        spec(dir.path(), "sockets", wasm_examples::SOCKETS_PATH, &[]),
    )
    .await;
    assert_eq!(out.termination, Termination::Exited(0), "{out:?}");
    let got: Vec<(String, u32)> = out
        .stdout_tail
        .lines()
        .map(|l| {
            let (call, errno) = l.rsplit_once(' ').unwrap();
            (call.to_owned(), errno.parse().unwrap())
        })
        .collect();
    let want = [
        ("sock_shutdown not_open", EBADF),
        ("sock_shutdown stdout", ENOTSOCK),
        ("sock_accept not_open", EBADF),
        ("sock_recv not_open", EBADF),
        ("sock_send not_open", EBADF),
        ("sock_send stdout", ENOTSOCK),
    ];
    let want: Vec<(String, u32)> = want.iter().map(|(c, e)| (c.to_string(), *e)).collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn readblock_reads_its_blocks() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("sandbox")).unwrap();
    std::fs::write(dir.path().join("sandbox/block"), "row one\nrow two\n").unwrap();
    let args = ["/block", "/missing"];
    let out = run(
        &exec,
        spec(
            dir.path(),
            "readblock",
            wasm_examples::READBLOCK_PATH,
            &args,
        ),
    )
    .await;
    assert_eq!(out.termination, Termination::Exited(1), "{out:?}");
    let lines: Vec<&str> = out.stdout_tail.lines().collect();
    assert!(
        lines[0].starts_with("/block: 16 bytes, 2 lines, fnv1a "),
        "{lines:?}"
    );
    assert_eq!(lines[1], "first: row one");
    assert!(lines[2].starts_with("/missing: error"), "{lines:?}");
}

#[tokio::test]
async fn kvquery_answers_from_a_table_it_builds() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let found = run(
        &exec,
        spec(
            dir.path(),
            "kvquery",
            wasm_examples::KVQUERY_PATH,
            &["get:k42"],
        ),
    )
    .await;
    assert_eq!(found.termination, Termination::Exited(0), "{found:?}");
    // The same value `kvexec` answers for k42 (its table is built the same way).
    assert_eq!(found.stdout_tail.trim().len(), 16, "{found:?}");
    let missing = run(
        &exec,
        spec(
            dir.path(),
            "kvquery",
            wasm_examples::KVQUERY_PATH,
            &["get:nope"],
        ),
    )
    .await;
    assert_eq!(missing.termination, Termination::Exited(1), "{missing:?}");
}

/// Every WASI 0.2 component `wasm-examples` builds names its test here (`foreach_component!`).
mod component_tests {
    pub(super) use super::{
        p2_command_runs_with_args_env_files_and_exit_code as p2cmd,
        p2_failed_run_is_exit_code_one as p2fail, p2_guest_cannot_reach_the_network as p2net,
        p2_memhog_hits_the_memory_limit as p2memhog,
        p2_spinner_times_out_is_killed_paced_and_budgeted as p2spin,
    };
}

macro_rules! assert_component_tested {
    ($name:ident) => {
        #[allow(unused_imports)]
        use component_tests::$name as _;
    };
}
wasm_examples::foreach_component!(assert_component_tested);

fn p2spec(dir: &Path, name: &str, args: &[&str]) -> TaskSpec {
    let path = wasm_examples::components::ALL_PATHS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, p)| *p)
        .unwrap();
    spec(dir, name, path, args)
}

/// A data set on the host: `<root>/ds` holds `file.txt`, an empty `sub/` and two symlinks out
/// (`up -> ../secret.txt`, `abs -> <root>/secret.txt`); `<root>/secret.txt` is beside it.
fn dataset(root: &Path) -> PathBuf {
    let ds = root.join("ds");
    std::fs::create_dir_all(ds.join("sub")).unwrap();
    std::fs::write(ds.join("file.txt"), "data set content\n").unwrap();
    std::fs::write(root.join("secret.txt"), "top secret").unwrap();
    std::os::unix::fs::symlink("../secret.txt", ds.join("up")).unwrap();
    std::os::unix::fs::symlink(root.join("secret.txt"), ds.join("abs")).unwrap();
    ds
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn data_sets_are_read_only_and_closed() {
    let exec = executor();
    let root = tempfile::tempdir().unwrap();
    let ds = dataset(root.path());
    let mtime = std::fs::metadata(ds.join("file.txt"))
        .unwrap()
        .modified()
        .unwrap();
    let task = root.path().join("task");
    let mut s = spec(&task, "datasets", wasm_examples::DATASETS_PATH, &["ds"]);
    s.datasets = vec![("ds".into(), ds.clone())];
    let out = run(&exec, s).await;
    assert_eq!(out.termination, Termination::Exited(0), "{out:?}");
    let stdout = std::fs::read_to_string(task.join("stdout")).unwrap();
    eprintln!("{stdout}");
    assert!(stdout.contains("datasets: done"), "{stdout}");
    assert!(stdout.contains("read: ok data set content\n"), "{stdout}");
    assert!(
        stdout.contains("list: ok abs,file.txt,sub,up\n"),
        "{stdout}"
    );
    assert!(stdout.contains("mounts: ok ds\n"), "{stdout}");
    let attempts: Vec<&str> = stdout
        .lines()
        .filter(|l| {
            !["read: ", "list: ", "mounts: ", "datasets: "]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .collect();
    let want = [
        "create",
        "open for write",
        "open for append",
        "open for truncate",
        "rename inside",
        "rename out",
        "hardlink inside",
        "hardlink out",
        "unlink",
        "mkdir",
        "rmdir",
        "rename in from the sandbox",
        "set times",
        "symlink",
        "symlink out",
        "climb ..",
        "climb sub/../..",
        "climb via path",
        "list ..",
        "host symlink up",
        "host symlink abs",
    ];
    let got: Vec<&str> = attempts
        .iter()
        .map(|l| l.split_once(": ").unwrap().0)
        .collect();
    assert_eq!(got, want, "{stdout}");
    for line in &attempts {
        assert!(line.contains(": denied ("), "{line}\n{stdout}");
    }
    // The data set and its neighbours are untouched; nothing came into the sandbox from it.
    assert_eq!(names_in(&ds), ["abs", "file.txt", "sub", "up"]);
    assert!(names_in(&ds.join("sub")).is_empty());
    assert_eq!(
        std::fs::read_to_string(ds.join("file.txt")).unwrap(),
        "data set content\n"
    );
    let meta = std::fs::metadata(ds.join("file.txt")).unwrap();
    assert_eq!(meta.modified().unwrap(), mtime);
    assert_eq!(
        std::fs::read_to_string(root.path().join("secret.txt")).unwrap(),
        "top secret"
    );
    assert_eq!(names_in(root.path()), ["ds", "secret.txt", "task"]);
    // The sandbox holds the guest's own file and the empty mount point.
    assert_eq!(names_in(&task.join("sandbox")), ["data", "mine"]);
    assert_eq!(names_in(&task.join("sandbox/data")), ["ds"]);
    assert!(names_in(&task.join("sandbox/data/ds")).is_empty());
    assert_eq!(names_in(&task.join("sandbox/mine")), ["own.txt"]);
}

#[tokio::test]
async fn bad_data_sets_fail_the_start_with_a_reason() {
    let exec = executor();
    let root = tempfile::tempdir().unwrap();
    let ds = dataset(root.path());
    let long = "x".repeat(129);
    let cases: Vec<(String, PathBuf, &str)> = vec![
        (String::new(), ds.clone(), "empty"),
        (".".into(), ds.clone(), "`.` or `..`"),
        ("..".into(), ds.clone(), "`.` or `..`"),
        ("a/b".into(), ds.clone(), "[A-Za-z0-9._-]"),
        ("a\\b".into(), ds.clone(), "[A-Za-z0-9._-]"),
        ("caf\u{e9}".into(), ds.clone(), "[A-Za-z0-9._-]"),
        (long, ds.clone(), "longer than 128"),
        (
            "gone".into(),
            root.path().join("missing"),
            "not an existing directory",
        ),
        (
            "file".into(),
            ds.join("file.txt"),
            "not an existing directory",
        ),
    ];
    for (i, (name, dir, why)) in cases.into_iter().enumerate() {
        let mut s = spec(
            &root.path().join(format!("t{i}")),
            "hello",
            wasm_examples::HELLO_PATH,
            &[],
        );
        s.datasets = vec![(name.clone(), dir)];
        let out = run(&exec, s).await;
        match &out.termination {
            Termination::StartFailed(msg) => assert!(msg.contains(why), "{name:?}: {msg}"),
            other => panic!("{name:?}: expected StartFailed, got {other:?}"),
        }
    }
    // Twice the same name is refused; a valid 128-character name and a component work.
    let mut s = spec(
        &root.path().join("dup"),
        "hello",
        wasm_examples::HELLO_PATH,
        &[],
    );
    s.datasets = vec![("ds".into(), ds.clone()), ("ds".into(), ds.clone())];
    assert!(matches!(
        run(&exec, s).await.termination,
        Termination::StartFailed(m) if m.contains("twice")
    ));
    let name = format!("A-z_0.9{}", "x".repeat(121));
    let mut s = spec(
        &root.path().join("ok"),
        "hello",
        wasm_examples::HELLO_PATH,
        &[],
    );
    s.datasets = vec![(name, ds.clone()), ("other".into(), ds)];
    assert_eq!(run(&exec, s).await.termination, Termination::Exited(0));
}

#[tokio::test]
async fn p2_command_runs_with_args_env_files_and_exit_code() {
    let exec = executor();
    let root = tempfile::tempdir().unwrap();
    let ds = dataset(root.path());
    let task = root.path().join("task");
    std::fs::create_dir_all(task.join("sandbox")).unwrap();
    std::fs::write(task.join("sandbox/input.txt"), "sandbox input\n").unwrap();
    let mut s = p2spec(
        &task,
        "p2cmd",
        &["7", "/input.txt", "/data/ds/file.txt", "/data/ds/up"],
    );
    s.env = vec![
        ("GREETING".into(), "hi there".into()),
        ("P2CMD_WRITE".into(), "/data/ds/file.txt".into()),
    ];
    s.datasets = vec![("ds".into(), ds.clone())];
    let out = run(&exec, s.clone()).await;
    assert_eq!(out.termination, Termination::Exited(7), "{out:?}");
    let stdout = &out.stdout_tail;
    assert!(
        stdout.contains("p2cmd: argv=p2cmd 7 /input.txt /data/ds/file.txt /data/ds/up\n"),
        "{stdout}"
    );
    assert!(stdout.contains("p2cmd: GREETING=hi there\n"), "{stdout}");
    assert!(
        stdout.contains("p2cmd: read back \"written by p2cmd\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("cat /input.txt: sandbox input\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("cat /data/ds/file.txt: data set content\n"),
        "{stdout}"
    );
    // The data set is read-only, and a symlink out of it is not followed.
    assert!(
        stdout.contains("write /data/ds/file.txt: denied ("),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read_to_string(ds.join("file.txt")).unwrap(),
        "data set content\n"
    );
    assert!(stdout.contains("cat /data/ds/up: error"), "{stdout}");
    assert!(out.stderr_tail.contains("p2cmd: done"), "{out:?}");
    assert!(out.fuel_consumed > 0, "{out:?}");
    assert_eq!(
        std::fs::read_to_string(task.join("sandbox/p2cmd-out.txt")).unwrap(),
        "written by p2cmd\n"
    );

    // Exit code 0, and the output cap and the disk cap hold for components too.
    s.args = vec!["p2cmd".into(), "0".into()];
    assert_eq!(
        run(&exec, s.clone()).await.termination,
        Termination::Exited(0)
    );
    s.disk_bytes = 10;
    assert!(matches!(
        run(&exec, s.clone()).await.termination,
        Termination::DiskLimit(_)
    ));
    s.disk_bytes = 0;
    let capped = Executor::new(ExecutorConfig {
        output_cap: 10,
        ..ExecutorConfig::default()
    })
    .unwrap();
    let out = run(&capped, s).await;
    assert_eq!(out.termination, Termination::Exited(0), "{out:?}");
    let mut want = b"p2cmd: arg".to_vec();
    want.extend_from_slice(TRUNCATION_MARKER);
    assert_eq!(std::fs::read(task.join("stdout")).unwrap(), want);
}

#[tokio::test]
async fn p2_failed_run_is_exit_code_one() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let out = run(&exec, p2spec(dir.path(), "p2fail", &[])).await;
    assert_eq!(out.termination, Termination::Exited(1), "{out:?}");
    assert!(out.stdout_tail.contains("p2fail: about to fail"), "{out:?}");
    assert!(out.stderr_tail.contains("failing on purpose"), "{out:?}");
}

#[tokio::test]
async fn p2_memhog_hits_the_memory_limit() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let mut s = p2spec(dir.path(), "p2memhog", &[]);
    s.mem_bytes = 32 * MIB;
    let out = run(&exec, s.clone()).await;
    match &out.termination {
        Termination::MemoryLimit(msg) => assert!(msg.contains("memory limit"), "{msg}"),
        other => panic!("expected MemoryLimit, got {other:?} / {out:?}"),
    }
    assert!(out.stdout_tail.contains("p2memhog: 2 MiB"), "{out:?}");
    // Below the limit it runs to completion; below its initial memory it cannot start.
    s.args.push("8".into());
    assert_eq!(
        run(&exec, s.clone()).await.termination,
        Termination::Exited(0)
    );
    s.mem_bytes = 4096;
    assert!(matches!(
        run(&exec, s).await.termination,
        Termination::MemoryLimit(_)
    ));
}

#[tokio::test]
async fn p2_spinner_times_out_is_killed_paced_and_budgeted() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let mut s = p2spec(dir.path(), "p2spin", &[]);
    s.timeout = Some(Duration::from_millis(300));
    let out = run(&exec, s.clone()).await;
    assert_eq!(out.termination, Termination::Timeout, "{out:?}");
    assert!(out.wall >= Duration::from_millis(300));
    assert!(out.fuel_consumed > 1_000_000, "{out:?}");
    assert!(out.stdout_tail.contains("p2spin: started"), "{out:?}");

    // Killed in `loop {}` and while sleeping.
    for args in [vec!["p2spin"], vec!["p2spin", "sleep"]] {
        let mut k = s.clone();
        k.timeout = None;
        k.args = args.iter().map(|a| a.to_string()).collect();
        let mut task = launch(&exec, k);
        task.wait_running().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        task.kill.kill();
        let out = task.finished().await;
        assert_eq!(out.termination, Termination::Killed, "{args:?}: {out:?}");
    }

    // Paced to a tenth of a core.
    let mut p = s.clone();
    p.cpus_milli = 100;
    let out = run(&exec, p).await;
    assert_eq!(out.termination, Termination::Timeout, "{out:?}");
    assert!(out.cpu_time < out.wall / 4, "{out:?}");
    assert!(out.cpu_paused > Duration::ZERO, "{out:?}");

    // A CPU-time budget.
    let mut b = s;
    b.timeout = None;
    b.max_cpu = Some(Duration::from_millis(100));
    let out = run(&exec, b).await;
    match &out.termination {
        Termination::CpuLimit(msg) => assert!(msg.contains("100 ms"), "{msg}"),
        other => panic!("expected CpuLimit, got {other:?}"),
    }
}

#[tokio::test]
async fn p2_guest_cannot_reach_the_network() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let out = run(&exec, p2spec(dir.path(), "p2net", &[&addr])).await;
    assert_eq!(out.termination, Termination::Exited(0), "{out:?}");
    eprintln!("{}", out.stdout_tail);
    let lines: Vec<&str> = out.stdout_tail.lines().collect();
    assert_eq!(lines.len(), 4, "{}", out.stdout_tail);
    for (line, what) in lines.iter().zip(["connect", "lookup", "udp bind"]) {
        assert!(
            line.starts_with(&format!("{what}: denied (")),
            "{}",
            out.stdout_tail
        );
    }
    // Nothing reached the listener.
    assert_eq!(
        listener.accept().unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
}

#[tokio::test]
async fn components_that_are_not_commands_are_refused() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    // The smallest component: a preamble (layer 1), exporting nothing.
    let empty = dir.path().join("empty.wasm");
    std::fs::write(&empty, b"\0asm\x0d\0\x01\0").unwrap();
    let err = exec.prepare("empty", &empty).await.unwrap_err();
    match &err {
        ExecError::NotACommand { message, .. } => {
            assert!(message.contains("wasi:cli/run"), "{message}")
        }
        other => panic!("expected NotACommand, got {other}"),
    }
    assert!(!exec.is_prepared("empty"));
    let out = run(
        &exec,
        spec(&dir.path().join("t"), "empty", empty.to_str().unwrap(), &[]),
    )
    .await;
    match &out.termination {
        Termination::StartFailed(msg) => assert!(msg.contains("not a WASI command"), "{msg}"),
        other => panic!("expected StartFailed, got {other:?}"),
    }
    // Hand-made components: `run` of the wrong type; an import nobody provides; and a minimal
    // command returning `Ok` and `Err`.
    let component = |name: &str, run_ty: &str, body: &str, import: &str| {
        let wat = format!(
            r#"(component
                 {import}
                 (core module $m (func (export "run") (result i32) {body}))
                 (core instance $i (instantiate $m))
                 (func $run (result {run_ty}) (canon lift (core func $i "run")))
                 (instance $r (export "run" (func $run)))
                 (export "wasi:cli/run@0.2.0" (instance $r)))"#
        );
        let path = dir.path().join(format!("{name}.wasm"));
        std::fs::write(&path, wat::parse_str(&wat).unwrap()).unwrap();
        path
    };
    let bad_type = component("bad-type", "u32", "i32.const 0", "");
    let err = exec.prepare("bad-type", &bad_type).await.unwrap_err();
    assert!(matches!(err, ExecError::NotACommand { .. }), "{err}");
    let evil = r#"(import "evil:thing/x" (instance (export "f" (func))))"#;
    let imports = component("imports", "(result)", "i32.const 0", evil);
    let err = exec.prepare("imports", &imports).await.unwrap_err();
    match &err {
        ExecError::Link { message, .. } => assert!(message.contains("evil:thing/x"), "{message}"),
        other => panic!("expected Link, got {other}"),
    }
    for (name, body, code) in [("ok", "i32.const 0", 0), ("err", "i32.const 1", 1)] {
        let path = component(name, "(result)", body, "");
        let s = spec(
            &dir.path().join(format!("t-{name}")),
            name,
            path.to_str().unwrap(),
            &[],
        );
        assert_eq!(run(&exec, s).await.termination, Termination::Exited(code));
    }

    // A broken component is a compile error.
    let broken = dir.path().join("broken.wasm");
    std::fs::write(&broken, b"\0asm\x0d\0\x01\0\x07\xff").unwrap();
    let err = exec.prepare("broken", &broken).await.unwrap_err();
    assert!(matches!(err, ExecError::Compile { .. }), "{err}");
}

#[tokio::test]
async fn components_are_cached_on_disk_like_modules() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ExecutorConfig {
        cache_dir: Some(dir.path().join("cache")),
        ..ExecutorConfig::default()
    };
    let p2cmd = Path::new(wasm_examples::components::P2CMD_PATH);
    let exec = Executor::new(cfg.clone()).unwrap();
    exec.prepare("c", p2cmd).await.unwrap();
    exec.prepare("c", p2cmd).await.unwrap();
    let s = exec.stats();
    assert_eq!((s.compiles, s.disk_cache_hits, s.cache_rebuilds), (1, 0, 0));
    drop(exec);

    // A new executor runs it from the disk cache, without the source.
    let exec = Executor::new(cfg.clone()).unwrap();
    let out = run(
        &exec,
        spec(&dir.path().join("t"), "c", "/nonexistent.wasm", &["3"]),
    )
    .await;
    assert_eq!(out.termination, Termination::Exited(3), "{out:?}");
    let s = exec.stats();
    assert_eq!((s.compiles, s.disk_cache_hits, s.cache_rebuilds), (0, 1, 0));
    drop(exec);

    // A corrupt entry is rebuilt.
    let cwasm = std::fs::read_dir(dir.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .unwrap();
    let tmp = cwasm.with_extension("tmp");
    std::fs::write(&tmp, b"corrupt").unwrap();
    std::fs::rename(&tmp, &cwasm).unwrap();
    let exec = Executor::new(cfg).unwrap();
    exec.prepare("c", p2cmd).await.unwrap();
    let s = exec.stats();
    assert_eq!((s.compiles, s.disk_cache_hits, s.cache_rebuilds), (1, 0, 1));
}

/// One-off measurement, not a check: time to prepare (compile) and to launch a warm task, for
/// the same program (`memhog 0` / `p2memhog 0`: start, print a line, exit) as a preview-1
/// module and as a WASI 0.2 component, interleaved in one run.
/// `cargo test -p tessera-agent --lib measure_p2 -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_p2_against_p1_prepare_and_launch() {
    let n_compiles = 8;
    let n_launches = 200;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let exec = Executor::new(ExecutorConfig {
        cache_dir: Some(cache.clone()),
        ..ExecutorConfig::default()
    })
    .unwrap();
    let kinds = [
        ("p1", wasm_examples::MEMHOG_PATH),
        ("p2", wasm_examples::components::P2MEMHOG_PATH),
    ];
    let median = |mut v: Vec<Duration>| {
        v.sort();
        (v[v.len() / 2], v[v.len() * 9 / 10])
    };
    let mut compile = [Vec::new(), Vec::new()];
    for i in 0..n_compiles {
        for (k, (kind, path)) in kinds.iter().enumerate() {
            let t0 = Instant::now();
            exec.prepare(&format!("{kind}-{i}"), Path::new(path))
                .await
                .unwrap();
            compile[k].push(t0.elapsed());
        }
    }
    // From the disk cache, in a fresh executor.
    let exec2 = Executor::new(ExecutorConfig {
        cache_dir: Some(cache),
        ..ExecutorConfig::default()
    })
    .unwrap();
    let mut load = [Vec::new(), Vec::new()];
    for i in 0..n_compiles {
        for (k, (kind, path)) in kinds.iter().enumerate() {
            let t0 = Instant::now();
            exec2
                .prepare(&format!("{kind}-{i}"), Path::new(path))
                .await
                .unwrap();
            load[k].push(t0.elapsed());
        }
    }
    let mut launches = [Vec::new(), Vec::new()];
    for i in 0..n_launches {
        for (k, (kind, path)) in kinds.iter().enumerate() {
            let s = spec(
                &dir.path().join(format!("t-{kind}-{i}")),
                &format!("{kind}-0"),
                path,
                &["0"],
            );
            let t0 = Instant::now();
            let out = run(&exec, s).await;
            launches[k].push(t0.elapsed());
            assert_eq!(out.termination, Termination::Exited(0), "{out:?}");
        }
    }
    for (k, (kind, path)) in kinds.iter().enumerate() {
        let size = std::fs::metadata(path).unwrap().len();
        let (c, c90) = median(compile[k].clone());
        let (l, l90) = median(load[k].clone());
        let (r, r90) = median(launches[k].clone());
        eprintln!(
            "{kind} ({size} bytes): compile median {c:?} p90 {c90:?}; disk-cache load median \
             {l:?} p90 {l90:?}; warm launch-to-exit median {r:?} p90 {r90:?}"
        );
    }
    let ratio = |v: &[Vec<Duration>; 2]| {
        median(v[1].clone()).0.as_secs_f64() / median(v[0].clone()).0.as_secs_f64()
    };
    eprintln!(
        "p2/p1 ratios of medians: compile {:.2}, disk-cache load {:.2}, warm launch {:.2}",
        ratio(&compile),
        ratio(&load),
        ratio(&launches)
    );
}

/// A task without a sandbox: nothing on disk for it, its output in memory and readable after
/// its end until forgotten, and no file system for the guest.
#[tokio::test]
async fn a_task_without_a_sandbox_touches_no_disk_and_keeps_its_output_in_memory() {
    let exec = executor();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    let mut s = spec(&dir, "hello", wasm_examples::HELLO_PATH, &["a"]);
    s.sandbox = false;
    let out = run(&exec, s).await;
    assert_eq!(out.termination, Termination::Exited(0), "{out:?}");
    assert!(out.stdout_tail.contains("Hello from Tessera! a"), "{out:?}");
    assert!(out.stderr_tail.contains("stderr"), "{out:?}");
    assert!(!dir.exists(), "nothing is created for it");
    let (all, size) = exec.read_output(&dir, false, 0, 1 << 20).unwrap();
    assert_eq!(size, all.len() as u64);
    assert!(String::from_utf8_lossy(&all).contains("Hello from Tessera! a"));
    let (part, _) = exec.read_output(&dir, false, 6, 4).unwrap();
    assert_eq!(part, &all[6..10]);
    assert!(exec.read_output(&dir, true, 0, 100).is_some());
    assert_eq!(exec.output_memory().1, 1);
    exec.forget_output(&dir);
    assert_eq!(exec.read_output(&dir, false, 0, 10), None);
    assert_eq!(exec.output_memory(), (0, 0));
    assert!(!dir.exists());

    // Its output is written out when the guests' process stops.
    let mut s = spec(&dir, "hello", wasm_examples::HELLO_PATH, &["b"]);
    s.sandbox = false;
    run(&exec, s).await;
    exec.write_out_outputs();
    let stdout = std::fs::read_to_string(dir.join("stdout")).unwrap();
    assert!(stdout.contains("Hello from Tessera! b"), "{stdout}");
    assert!(!dir.join("sandbox").exists());

    // The guest has no file system: every path fails, nothing lands on the host.
    let dir = tmp.path().join("f");
    let mut s = spec(&dir, "files", wasm_examples::FILES_PATH, &[]);
    s.sandbox = false;
    let out = run(&exec, s).await;
    assert_eq!(out.termination, Termination::Exited(0), "{out:?}");
    for line in ["input: error", "write /output.txt: error", "ls: error"] {
        assert!(out.stdout_tail.contains(line), "{line}: {out:?}");
    }
    assert!(!out.stdout_tail.contains("ALLOWED"), "{out:?}");
    assert!(!dir.exists());
}

/// Output past the in-memory threshold spills to the task's file, created with its directory
/// then, with the cap and marker as for a file from the start.
#[tokio::test]
async fn in_memory_output_spills_to_its_file_past_the_threshold() {
    let exec = Executor::new(ExecutorConfig {
        output_cap: 100 * 1024,
        ..ExecutorConfig::default()
    })
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    let mut s = spec(&dir, "flood", wasm_examples::FLOOD_PATH, &[]);
    s.sandbox = false;
    let out = run(&exec, s).await;
    assert_eq!(
        exec.read_output(&dir, false, 0, 10),
        None,
        "spilled: read the file"
    );
    let stdout = std::fs::read(dir.join("stdout")).unwrap();
    assert!(stdout.ends_with(TRUNCATION_MARKER), "{out:?}");
    assert_eq!(stdout.len(), 100 * 1024 + TRUNCATION_MARKER.len());
    assert!(!dir.join("sandbox").exists());
}

/// Many concurrent tasks without a sandbox hold no descriptor each (no output files, no
/// preopened directory): an agent's open-file limit is not what caps its tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_tasks_without_a_sandbox_need_fewer_descriptors_than_tasks() {
    const N: usize = 2000;
    let exec = Executor::new(ExecutorConfig {
        pooling: None,
        ..ExecutorConfig::default()
    })
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let fds = || std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    exec.prepare("ticker", Path::new(wasm_examples::TICKER_PATH))
        .await
        .unwrap();
    let before = fds();
    let mut tasks = Vec::with_capacity(N);
    for i in 0..N {
        let mut s = spec(
            &tmp.path().join(format!("t{i}")),
            "ticker",
            wasm_examples::TICKER_PATH,
            &["1000000", "600000"],
        );
        s.sandbox = false;
        s.cpus_milli = 1;
        s.mem_bytes = 16 * MIB;
        tasks.push(launch(&exec, s));
    }
    for t in &mut tasks {
        t.wait_running().await;
    }
    let during = fds();
    assert!(
        during < before + N / 2,
        "{N} tasks hold {} descriptors",
        during.saturating_sub(before)
    );
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    for t in &tasks {
        t.kill.kill();
    }
    for t in tasks {
        assert_eq!(t.finished().await.termination, Termination::Killed);
    }
}

/// A task's kill and its move under a quota can come in either order: a kill after the move
/// lifts the quota, and a move after the kill lifts it as it is set.
#[test]
fn a_kill_lifts_the_quota_whether_it_comes_before_or_after_it_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let quota_file = |name: &str| {
        let f = dir.path().join(name);
        std::fs::write(&f, "10000").unwrap();
        f
    };
    let handle = || KillHandle {
        tx: Arc::new(watch::channel(false).0),
        quota: Arc::default(),
    };

    let (after, early) = (handle(), quota_file("after"));
    after.quota_set(quota::QuotaLifter::at(early.clone()));
    assert_eq!(std::fs::read_to_string(&early).unwrap(), "10000");
    after.kill();
    assert_eq!(std::fs::read_to_string(&early).unwrap(), "-1");

    let (before, late) = (handle(), quota_file("before"));
    before.kill();
    before.quota_set(quota::QuotaLifter::at(late.clone()));
    assert_eq!(std::fs::read_to_string(&late).unwrap(), "-1");
}
