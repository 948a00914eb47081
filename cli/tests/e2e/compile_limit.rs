//! Modules compiled in a child process under a CPU-time and a memory limit
//! (`ExecutorConfig::compiler`), through the real `tessera compile` subcommand and real
//! wasmtime: a module whose compile would take Cranelift hours (deeply nested loops) is stopped
//! by the kernel at its limit and refused with a reason that says so, and refused at once
//! after, on the ordinary path and on the threaded modules' (WASI threads) one; so is one whose
//! compile would need more memory than its limit; ordinary modules and components compile in
//! the child (nothing falls back to compiling in process), run, and load from the disk cache
//! in another executor; a malformed module's error comes back from the child.

use std::path::{Path, PathBuf};
use std::time::Duration;

use agent::executor::{
    CompilerCommand, ExecError, ExecEvent, Executor, ExecutorConfig, TaskSpec, Termination,
};

/// Hang guard only: the child's wall-time limit is a minute more than its CPU-time limit.
const SANITY: Duration = Duration::from_secs(300);

/// The memory limit of the tests that are not about it: the agent's default.
const MEMORY: u64 = 4 << 30;

fn executor(cache: &Path, cpu_limit: Duration, memory_limit: u64) -> Executor {
    Executor::new(ExecutorConfig {
        cache_dir: Some(cache.to_owned()),
        pooling: None,
        compiler: Some(CompilerCommand {
            program: PathBuf::from(env!("CARGO_BIN_EXE_tessera")),
            args: vec!["compile".to_owned()],
            cpu_limit,
            memory_limit,
        }),
        ..ExecutorConfig::default()
    })
    .unwrap()
}

async fn prepare(exec: &Executor, digest: &str, path: &Path) -> Result<(), ExecError> {
    tokio::time::timeout(SANITY, exec.prepare(digest, path))
        .await
        .expect("the compile was not stopped")
}

async fn run_to_end(exec: &Executor, spec: TaskSpec) -> agent::executor::TaskOutcome {
    let (_kill, mut events) = exec.launch_to_channel(spec);
    loop {
        let ev = tokio::time::timeout(SANITY, events.recv())
            .await
            .expect("task did not end in time")
            .expect("no Finished event");
        if let ExecEvent::Finished(o) = ev {
            return o;
        }
    }
}

/// Prepares `path` as `digest` on a fresh executor: its compile is refused with a reason
/// that contains `why`; prepared again, it is refused at once, without a second compile.
async fn refused_twice(exec: &Executor, digest: &str, path: &Path, why: &str) {
    let err = prepare(exec, digest, path).await.unwrap_err();
    match &err {
        ExecError::CompileRefused { digest: d, message } => {
            assert_eq!(d, digest);
            assert!(message.contains(why), "{message}");
        }
        e => panic!("expected a refused compile, got {e:?}"),
    }
    assert_eq!(exec.stats().compiles, 1);
    let again = prepare(exec, digest, path).await.unwrap_err();
    assert_eq!(again.to_string(), err.to_string());
    assert_eq!(
        exec.stats().compiles,
        1,
        "refused at once, not compiled again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiles_run_in_a_child_process_under_a_cpu_time_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let exec = executor(&cache, Duration::from_secs(1), MEMORY);

    // A compile of hours is stopped at its limit, and the module refused saying why.
    let deep = tmp.path().join("deep.wasm");
    std::fs::write(&deep, tessera_tests::nested_loops_module(1000, false)).unwrap();
    refused_twice(&exec, "deep", &deep, "CPU-time limit of 1 s").await;
    // Nothing of it is left in the cache but its directory's own files.
    let leftovers: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("deep"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A threaded module (WASI threads) compiles in the child too, on the threaded modules'
    // engine, under the same limit: the ordinary engine refuses its shared memory at once,
    // then the threaded path's compile is stopped.
    let threaded = tmp.path().join("deep-threaded.wasm");
    std::fs::write(&threaded, tessera_tests::nested_loops_module(1000, true)).unwrap();
    match prepare(&exec, "deep-threaded", &threaded)
        .await
        .unwrap_err()
    {
        ExecError::CompileRefused { message, .. } => {
            assert!(message.contains("CPU-time limit of 1 s"), "{message}")
        }
        e => panic!("expected a refused compile, got {e:?}"),
    }
    let compiles = exec.stats().compiles;
    assert!(
        prepare(&exec, "deep-threaded", &threaded).await.is_err(),
        "refused again"
    );
    assert_eq!(
        exec.stats().compiles,
        compiles,
        "no compile of the ordinary path either"
    );

    // A malformed module: the child's validation error comes back.
    let junk = tmp.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm\x01\0\0\0\x01\xff").unwrap();
    match prepare(&exec, "junk", &junk).await.unwrap_err() {
        ExecError::Compile { message, .. } => {
            assert!(message.contains("unexpected end-of-file"), "{message}")
        }
        e => panic!("expected a compile error, got {e:?}"),
    }

    // Ordinary modules and components compile in the child and run.
    let before = exec.stats().compiles;
    let hello_dir = tmp.path().join("hello");
    let out = run_to_end(
        &exec,
        TaskSpec::new(
            "hello",
            wasm_examples::HELLO_PATH,
            vec!["hello".into(), "from-the-child".into()],
            hello_dir,
        ),
    )
    .await;
    assert_eq!(out.termination, Termination::Exited(0), "{out:?}");
    assert!(out.stdout_tail.contains("from-the-child"), "{out:?}");
    let p2_dir = tmp.path().join("p2cmd");
    let out = run_to_end(
        &exec,
        TaskSpec::new(
            "p2cmd",
            wasm_examples::components::P2CMD_PATH,
            vec!["p2cmd".into(), "0".into()],
            p2_dir,
        ),
    )
    .await;
    assert_eq!(out.termination, Termination::Exited(0), "{out:?}");
    // No compile falls back to the executor's process: these compiled in the child.
    assert_eq!(exec.stats().compiles, before + 2);

    // The child's code is the executor's own: another executor loads it from the disk cache.
    let second = executor(&cache, Duration::from_secs(1), MEMORY);
    prepare(&second, "hello", Path::new(wasm_examples::HELLO_PATH))
        .await
        .unwrap();
    prepare(
        &second,
        "p2cmd",
        Path::new(wasm_examples::components::P2CMD_PATH),
    )
    .await
    .unwrap();
    let stats = second.stats();
    assert_eq!((stats.compiles, stats.disk_cache_hits), (0, 2), "{stats:?}");
}

/// Under a memory limit, a module that makes Cranelift allocate past it (one straight
/// function of 3.0 MB of wasm, which needs more than 384 MiB) is stopped and refused saying
/// so, and refused at once after; the agent's own examples compile under the same limit (they
/// need 96–160 MiB of it: BENCHMARKS.md, "Compile limit").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compile_past_its_memory_limit_is_stopped_and_its_module_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let exec = executor(
        &tmp.path().join("cache"),
        Duration::from_secs(60),
        256 << 20,
    );
    let long = tmp.path().join("long.wasm");
    std::fs::write(&long, tessera_tests::long_function_module(300_000)).unwrap();
    refused_twice(&exec, "long", &long, "memory limit of 256 MiB").await;

    // The largest example module compiles under the same limit, and runs.
    let out = run_to_end(
        &exec,
        TaskSpec::new(
            "json",
            wasm_examples::JSON_PATH,
            vec!["json".into(), "20".into(), "1".into()],
            tmp.path().join("json"),
        ),
    )
    .await;
    assert_eq!(out.termination, Termination::Exited(0), "{out:?}");
    assert_eq!(exec.stats().compiles, 2);
}
