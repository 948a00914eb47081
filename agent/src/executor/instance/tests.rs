//! Tests of executor instances on real wasmtime with the real example executors
//! (`wasm-examples/executors`) and real files.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use wasm_examples::executors::{BADEXEC_EXECUTOR_PATH, KVEXEC_EXECUTOR_PATH};

use super::host::{OUTBOX_BURST, OUTBOX_RATE};
use super::*;
use crate::executor::{ExecEvent, ExecutorConfig, TaskSpec, Termination};

const MIB: u64 = 1 << 20;
/// Hang guard: an event that should come must come within this (never a speed assertion).
const SANITY: Duration = Duration::from_secs(60);

fn executor() -> Executor {
    Executor::new(ExecutorConfig::default()).unwrap()
}

fn spec(dir: &Path, name: &str, path: &str) -> InstanceSpec {
    InstanceSpec {
        digest: format!("{name}-digest"),
        wasm_path: path.into(),
        args: vec![name.to_owned()],
        env: Vec::new(),
        dir: dir.to_owned(),
        cpus_milli: 1000,
        mem_bytes: 256 * MIB,
        disk_bytes: 0,
        datasets: Vec::new(),
    }
}

fn task(id: &str, data: &str) -> InstanceTask {
    InstanceTask {
        task_id: id.to_owned(),
        name: id.to_owned(),
        args: Vec::new(),
        env: Vec::new(),
        data: data.as_bytes().to_vec(),
        cpus_milli: 100,
        mem_bytes: MIB,
    }
}

/// A started instance and the stream of its events.
struct Inst {
    handle: InstanceHandle,
    events: mpsc::UnboundedReceiver<InstanceEvent>,
}

fn start(exec: &Executor, spec: InstanceSpec) -> Inst {
    let (tx, events) = mpsc::unbounded_channel();
    let handle = exec.start_instance(
        spec,
        Box::new(move |ev| {
            let _ = tx.send(ev);
        }),
    );
    Inst { handle, events }
}

impl Inst {
    async fn next(&mut self) -> InstanceEvent {
        tokio::time::timeout(SANITY, self.events.recv())
            .await
            .expect("no instance event in time")
            .expect("event channel closed")
    }

    async fn started(&mut self) {
        assert_eq!(self.next().await, InstanceEvent::Started);
    }

    /// The next update, which must be of `task_id`.
    async fn update(&mut self, task_id: &str) -> (GuestTaskState, String) {
        match self.next().await {
            InstanceEvent::TaskUpdate {
                task_id: t,
                state,
                message,
            } => {
                assert_eq!(t, task_id, "update of another task ({state:?} {message})");
                (state, message)
            }
            other => panic!("expected an update of {task_id}, got {other:?}"),
        }
    }

    /// Launches a task and returns its terminal update, checking it was reported running.
    async fn run_task(&mut self, id: &str, data: &str) -> (GuestTaskState, String) {
        self.handle.launch(task(id, data));
        let (state, msg) = self.update(id).await;
        assert_eq!(state, GuestTaskState::Running, "{msg}");
        self.update(id).await
    }

    /// The `Exited` outcome, then checks nothing comes after it.
    async fn exited(mut self) -> TaskOutcome {
        let outcome = match self.next().await {
            InstanceEvent::Exited(o) => o,
            other => panic!("expected Exited, got {other:?}"),
        };
        // Calls after the end are ignored, and the notify callback is gone.
        self.handle.launch(task("late", "count"));
        self.handle.kill();
        assert!(
            tokio::time::timeout(SANITY, self.events.recv())
                .await
                .expect("the notify callback outlived the instance")
                .is_none(),
            "an event came after Exited"
        );
        outcome
    }
}

#[tokio::test]
async fn kvexec_loads_once_and_answers_from_memory() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let mut inst = start(&exec, spec(dir.path(), "kvexec", KVEXEC_EXECUTOR_PATH));
    inst.started().await;
    let (state, msg) = inst.run_task("q1", "count").await;
    assert_eq!((state, msg.as_str()), (GuestTaskState::Finished, "200000"));
    let (state, v5) = inst.run_task("q2", "get:k5").await;
    assert_eq!(state, GuestTaskState::Finished);
    assert_eq!(v5.len(), 16, "{v5}");
    let (state, msg) = inst.run_task("q3", "get:nope").await;
    assert_eq!(state, GuestTaskState::Failed);
    assert!(msg.contains("no key"), "{msg}");
    inst.handle.shutdown();
    let out = inst.exited().await;
    assert_eq!(out.termination, Termination::Exited(0), "{out:?}");
    assert!(out.stderr_tail.contains("kvexec: shutting down"), "{out:?}");
    assert_eq!(exec.stats().compiles, 1);
}

#[tokio::test]
async fn kvexec_reads_its_data_set_read_only() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("kv.txt"), "alpha=1\nbeta=2\n").unwrap();
    let mut s = spec(dir.path(), "kvexec", KVEXEC_EXECUTOR_PATH);
    s.datasets = vec![("small".into(), data.path().to_owned())];
    let mut inst = start(&exec, s);
    inst.started().await;
    inst.handle.launch(task("q1", "get:beta"));
    let (state, msg) = inst.update("q1").await;
    assert_eq!(state, GuestTaskState::Running);
    assert!(msg.contains("data set /data/small"), "{msg}");
    assert_eq!(
        inst.update("q1").await,
        (GuestTaskState::Finished, "2".to_owned())
    );
    inst.handle.shutdown();
    assert_eq!(inst.exited().await.termination, Termination::Exited(0));

    // A data set that is not there fails the start, saying which.
    let mut s = spec(&dir.path().join("2"), "kvexec", KVEXEC_EXECUTOR_PATH);
    s.datasets = vec![("gone".into(), dir.path().join("nonexistent"))];
    match start(&exec, s).exited().await.termination {
        Termination::StartFailed(m) => assert!(m.contains("\"gone\""), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn several_tasks_live_at_once_and_messages_go_both_ways() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let mut inst = start(&exec, spec(dir.path(), "kvexec", KVEXEC_EXECUTOR_PATH));
    inst.started().await;
    inst.handle.launch(task("w1", "wait"));
    inst.handle.launch(task("w2", "wait"));
    assert_eq!(inst.update("w1").await.0, GuestTaskState::Running);
    assert_eq!(inst.update("w2").await.0, GuestTaskState::Running);
    // Both are live; another task comes and goes meanwhile.
    let (state, _) = inst.run_task("q", "get:k1").await;
    assert_eq!(state, GuestTaskState::Finished);
    inst.handle.message(b"hello".to_vec());
    assert_eq!(
        inst.next().await,
        InstanceEvent::Message(b"echo:hello".to_vec())
    );
    inst.handle.message(b"release".to_vec());
    assert_eq!(
        inst.update("w1").await,
        (GuestTaskState::Finished, "released".to_owned())
    );
    assert_eq!(inst.update("w2").await.0, GuestTaskState::Finished);
    assert_eq!(
        inst.next().await,
        InstanceEvent::Message(b"echo:release".to_vec())
    );
    // A task can be sliced over ticks while messages still get through.
    inst.handle.launch(task("s", "slices:50"));
    inst.handle.message(b"ping".to_vec());
    let mut got_echo = false;
    let mut done = false;
    while !(got_echo && done) {
        match inst.next().await {
            InstanceEvent::Message(m) => {
                assert_eq!(m, b"echo:ping");
                got_echo = true;
            }
            InstanceEvent::TaskUpdate { task_id, state, .. } => {
                assert_eq!(task_id, "s");
                done = state == GuestTaskState::Finished;
            }
            other => panic!("{other:?}"),
        }
    }
    inst.handle.shutdown();
    assert_eq!(inst.exited().await.termination, Termination::Exited(0));
}

#[tokio::test]
async fn envelope_growth_lets_a_bigger_task_succeed() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("kv.txt"), "a=1\n").unwrap();
    let mut s = spec(dir.path(), "kvexec", KVEXEC_EXECUTOR_PATH);
    s.datasets = vec![("tiny".into(), data.path().to_owned())];
    s.mem_bytes = 16 * MIB;
    s.cpus_milli = 100;
    let mut inst = start(&exec, s);
    inst.started().await;
    let (state, msg) = inst.run_task("big1", "alloc:24").await;
    assert_eq!(state, GuestTaskState::Failed, "{msg}");
    // The refused growth did not hurt the executor.
    assert_eq!(
        inst.run_task("q", "get:a").await.0,
        GuestTaskState::Finished
    );
    inst.handle.set_envelope(1100, 64 * MIB);
    let (state, msg) = inst.run_task("big2", "alloc:24").await;
    assert_eq!(
        (state, msg.as_str()),
        (GuestTaskState::Finished, "allocated 24 MiB")
    );
    // Beyond the grown envelope it fails again, still without killing the executor.
    let (state, msg) = inst.run_task("big3", "alloc:80").await;
    assert_eq!(state, GuestTaskState::Failed, "{msg}");
    assert_eq!(
        inst.run_task("q2", "get:a").await.0,
        GuestTaskState::Finished
    );
    inst.handle.shutdown();
    assert_eq!(inst.exited().await.termination, Termination::Exited(0));
}

#[tokio::test]
async fn growth_beyond_the_envelope_that_the_guest_cannot_handle_is_a_memory_limit() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("kv.txt"), "a=1\n").unwrap();
    let mut s = spec(dir.path(), "kvexec", KVEXEC_EXECUTOR_PATH);
    s.datasets = vec![("tiny".into(), data.path().to_owned())];
    s.mem_bytes = 16 * MIB;
    let mut inst = start(&exec, s);
    inst.started().await;
    inst.handle.launch(task("h", "hog:32"));
    assert_eq!(inst.update("h").await.0, GuestTaskState::Running);
    let out = inst.exited().await;
    match &out.termination {
        Termination::MemoryLimit(m) => assert!(m.contains("memory limit of 16777216"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn kill_task_is_answered_and_ignore_kill_is_not() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let mut inst = start(&exec, spec(dir.path(), "kvexec", KVEXEC_EXECUTOR_PATH));
    inst.started().await;
    inst.handle.launch(task("w", "wait"));
    assert_eq!(inst.update("w").await.0, GuestTaskState::Running);
    inst.handle.kill_task("w");
    assert_eq!(inst.update("w").await.0, GuestTaskState::Killed);
    inst.handle.launch(task("stubborn", "ignore-kill"));
    assert_eq!(inst.update("stubborn").await.0, GuestTaskState::Running);
    inst.handle.kill_task("stubborn");
    // Events are taken in order: once this task's updates are in, the kill was seen.
    let (state, _) = inst.run_task("after", "get:k2").await;
    assert_eq!(state, GuestTaskState::Finished);
    // An update for a task that is not live is refused to the guest, never forwarded.
    let (state, msg) = inst.run_task("stray", "stray").await;
    assert_eq!(state, GuestTaskState::Finished);
    assert!(msg.contains("not live"), "{msg}");
    inst.handle.kill();
    let out = inst.exited().await;
    assert_eq!(out.termination, Termination::Killed);
}

#[tokio::test]
async fn a_trap_ends_the_instance_and_nothing_follows() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let mut inst = start(&exec, spec(dir.path(), "kvexec", KVEXEC_EXECUTOR_PATH));
    inst.started().await;
    inst.handle.launch(task("t", "trap"));
    let out = inst.exited().await;
    match &out.termination {
        Termination::Trapped(m) => assert!(m.contains("unreachable"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn kill_stops_it_blocked_in_next_event_and_in_a_busy_loop() {
    let exec = executor();
    for data in [None, Some("loop")] {
        let dir = tempfile::tempdir().unwrap();
        let mut inst = start(&exec, spec(dir.path(), "kvexec", KVEXEC_EXECUTOR_PATH));
        inst.started().await;
        if let Some(data) = data {
            inst.handle.launch(task("l", data));
            assert_eq!(inst.update("l").await.0, GuestTaskState::Running);
        }
        let t0 = Instant::now();
        inst.handle.kill();
        let out = inst.exited().await;
        assert_eq!(out.termination, Termination::Killed);
        eprintln!(
            "kill while {:?}: ended in {:?}",
            data.unwrap_or("waiting"),
            t0.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cpu_share_follows_the_envelope() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let spin = |name: &str| {
        let mut s = spec(&dir.path().join(name), "kvexec", KVEXEC_EXECUTOR_PATH);
        s.cpus_milli = 100;
        s
    };
    let mut small = start(&exec, spin("small"));
    let mut grown = start(&exec, spin("grown"));
    for inst in [&mut small, &mut grown] {
        inst.started().await;
        inst.handle.launch(task("l", "loop"));
        assert_eq!(inst.update("l").await.0, GuestTaskState::Running);
    }
    // Same wall time for both; one gets a grown envelope while it spins.
    grown.handle.set_envelope(900, 256 * MIB);
    tokio::time::sleep(Duration::from_millis(600)).await;
    small.handle.kill();
    grown.handle.kill();
    let small = small.exited().await;
    let grown = grown.exited().await;
    let ratio = grown.cpu_time.as_secs_f64() / small.cpu_time.as_secs_f64().max(1e-6);
    eprintln!(
        "cpu time in the same wall time: 0.1 cpu {:?}, grown to 0.9 cpu {:?} (ratio {ratio:.1})",
        small.cpu_time, grown.cpu_time
    );
    // Nine times the share: well over twice the CPU when the machine has it to give. When
    // it does not (the other tests of this binary run alongside), the pacer's own record
    // still tells: the grown instance is hardly held back while the small one is, which a
    // share stuck at 0.1 would not show.
    let paused = |o: &TaskOutcome| o.cpu_paused.as_secs_f64();
    assert!(
        ratio > 2.5 || paused(&grown) < 0.25 * paused(&small),
        "ratio {ratio}: {small:?} {grown:?}"
    );
    assert!(small.cpu_paused > Duration::ZERO);
}

#[tokio::test]
async fn a_flood_of_updates_is_paced_and_bounded() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let mut inst = start(&exec, spec(dir.path(), "kvexec", KVEXEC_EXECUTOR_PATH));
    inst.started().await;
    assert_eq!(
        inst.run_task("warm", "get:k0").await.0,
        GuestTaskState::Finished
    );
    let n = 2 * OUTBOX_BURST as usize;
    let t0 = Instant::now();
    inst.handle.launch(task("f", &format!("flood:{n}")));
    let mut updates = 0usize;
    loop {
        let (state, _) = inst.update("f").await;
        updates += 1;
        // Whatever the machine's speed, the guest never gets ahead of the outbox's rate.
        let allowed = OUTBOX_BURST + OUTBOX_RATE * t0.elapsed().as_secs_f64() + 2.0;
        assert!(
            updates as f64 <= allowed,
            "{updates} updates, allowed {allowed}"
        );
        if state == GuestTaskState::Finished {
            break;
        }
    }
    // Every update arrived (paced, not dropped): the running one, n floods, the last.
    assert_eq!(updates, n + 2);
    // Oversized updates are refused to the guest.
    let (state, msg) = inst
        .run_task("b", &format!("big:{}", MAX_GUEST_MESSAGE + 1))
        .await;
    assert_eq!(state, GuestTaskState::Failed);
    assert!(msg.contains("refused"), "{msg}");
    let (state, msg) = inst
        .run_task("b2", &format!("big:{MAX_GUEST_MESSAGE}"))
        .await;
    assert_eq!(
        (state, msg.len()),
        (GuestTaskState::Running, MAX_GUEST_MESSAGE)
    );
    assert_eq!(inst.update("b2").await.0, GuestTaskState::Finished);
    inst.handle.kill();
    assert_eq!(inst.exited().await.termination, Termination::Killed);
}

#[tokio::test]
async fn messages_for_a_guest_that_does_not_listen_are_capped() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let mut inst = start(&exec, spec(dir.path(), "kvexec", KVEXEC_EXECUTOR_PATH));
    inst.started().await;
    inst.handle.launch(task("l", "loop"));
    assert_eq!(inst.update("l").await.0, GuestTaskState::Running);
    for _ in 0..300 {
        inst.handle.message(vec![0; 64 * 1024]);
    }
    // 16 MiB of 64 KiB messages are held, the rest dropped.
    assert_eq!(inst.handle.dropped_messages(), 300 - 256);
    inst.handle.kill();
    assert_eq!(inst.exited().await.termination, Termination::Killed);
}

#[tokio::test]
async fn an_error_from_run_is_exit_code_one_with_the_message() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let mut inst = start(&exec, spec(dir.path(), "badexec", BADEXEC_EXECUTOR_PATH));
    inst.started().await;
    let out = inst.exited().await;
    assert_eq!(out.termination, Termination::Exited(1));
    assert!(out.stderr_tail.contains("badexec: starting"), "{out:?}");
    assert!(
        out.stderr_tail
            .contains("executor run returned an error: badexec refuses to run"),
        "{out:?}"
    );
}

#[tokio::test]
async fn a_compiled_executor_survives_an_agent_restart_in_the_disk_cache() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = ExecutorConfig {
        cache_dir: Some(cache.path().to_owned()),
        ..ExecutorConfig::default()
    };
    for round in 0..2 {
        let exec = Executor::new(cfg.clone()).unwrap();
        let d = dir.path().join(format!("r{round}"));
        let mut inst = start(&exec, spec(&d, "kvexec", KVEXEC_EXECUTOR_PATH));
        inst.started().await;
        assert_eq!(
            inst.run_task("q", "get:k3").await.0,
            GuestTaskState::Finished
        );
        inst.handle.shutdown();
        assert_eq!(inst.exited().await.termination, Termination::Exited(0));
        let stats = exec.stats();
        assert_eq!(
            (stats.compiles, stats.disk_cache_hits),
            if round == 0 { (1, 0) } else { (0, 1) },
            "round {round}"
        );
    }
}

#[tokio::test]
async fn invalid_components_fail_to_start_with_a_clear_message() {
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"definitely not wasm").unwrap();
    let cases = [
        (
            "junk",
            junk.to_str().unwrap().to_owned(),
            "not a valid WebAssembly",
        ),
        // A core module (a WASI preview-1 command) is not a component.
        (
            "core",
            wasm_examples::HELLO_PATH.to_owned(),
            "not a component",
        ),
        // A WASI 0.2 command is a component, but not an executor.
        (
            "command",
            wasm_examples::components::P2CMD_PATH.to_owned(),
            "does not export",
        ),
        (
            "missing",
            "/nonexistent/x.wasm".to_owned(),
            "I/O error on /nonexistent/x.wasm",
        ),
    ];
    for (name, path, want) in cases {
        let d = dir.path().join(name);
        let inst = start(&exec, spec(&d, name, &path));
        inst.handle.launch(task("t", "count"));
        let out = inst.exited().await;
        match &out.termination {
            Termination::StartFailed(m) => assert!(m.contains(want), "{name}: {m}"),
            other => panic!("{name}: {other:?}"),
        }
    }
}

/// Every example executor has a test here: a new one without fails the build.
mod executor_tests {
    pub(super) use super::{
        an_error_from_run_is_exit_code_one_with_the_message as badexec,
        kvexec_loads_once_and_answers_from_memory as kvexec,
    };
}

macro_rules! assert_executor_tested {
    ($name:ident) => {
        #[allow(unused_imports)]
        use executor_tests::$name as _;
    };
}
wasm_examples::foreach_executor!(assert_executor_tested);

/// Prints the instance start and per-task latencies against one-shot tasks (run with
/// `cargo test -p tessera-agent --release executor::instance::tests::measure -- --ignored
/// --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_instance_latencies() {
    let cache = tempfile::tempdir().unwrap();
    let cfg = ExecutorConfig {
        cache_dir: Some(cache.path().to_owned()),
        ..ExecutorConfig::default()
    };
    let exec = Executor::new(cfg.clone()).unwrap();
    let restarted = Executor::new(cfg).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("kv.txt"), "a=1\n").unwrap();
    let with_data = |name: &str| {
        let mut s = spec(&dir.path().join(name), "kvexec", KVEXEC_EXECUTOR_PATH);
        s.datasets = vec![("tiny".into(), data.path().to_owned())];
        s
    };
    for (label, exec, name) in [
        ("cold (compile)", &exec, "cold"),
        ("warm (compiled in memory)", &exec, "warm"),
        ("after an agent restart (disk cache)", &restarted, "disk"),
    ] {
        let t0 = Instant::now();
        let mut inst = start(exec, with_data(name));
        inst.handle.launch(task("t", "get:a"));
        inst.started().await;
        let first = inst.update("t").await;
        let elapsed = t0.elapsed();
        assert_eq!(first.0, GuestTaskState::Running);
        eprintln!("instance start to first task update, {label}: {elapsed:?}");
        assert_eq!(inst.update("t").await.0, GuestTaskState::Finished);
        inst.handle.kill();
        inst.exited().await;
    }
    let mut inst = start(&exec, with_data("tasks"));
    inst.started().await;
    inst.run_task("w", "get:a").await;
    let n = 200;
    let t0 = Instant::now();
    for i in 0..n {
        let (state, _) = inst.run_task(&format!("q{i}"), "get:a").await;
        assert_eq!(state, GuestTaskState::Finished);
    }
    let per_exec_task = t0.elapsed() / n;
    inst.handle.kill();
    inst.exited().await;

    // Why state pays: the first task builds the generated table, later ones only query it.
    let mut inst = start(
        &exec,
        spec(&dir.path().join("gen"), "kvexec", KVEXEC_EXECUTOR_PATH),
    );
    inst.started().await;
    let t0 = Instant::now();
    inst.run_task("load", "count").await;
    let first = t0.elapsed();
    let t0 = Instant::now();
    for i in 0..n {
        inst.run_task(&format!("g{i}"), &format!("get:k{i}")).await;
    }
    let later = t0.elapsed() / n;
    eprintln!(
        "generated table: first task (loads) {first:?}, later tasks {later:?} (ratio {:.0}x)",
        first.as_secs_f64() / later.as_secs_f64()
    );
    inst.handle.kill();
    inst.exited().await;

    let hello = |i: u32| TaskSpec {
        sandbox: true,
        digest: "hello".into(),
        wasm_path: wasm_examples::HELLO_PATH.into(),
        args: vec!["hello".into()],
        env: Vec::new(),
        task_dir: dir.path().join(format!("hello{i}")),
        mem_bytes: 64 * MIB,
        cpus_milli: 1000,
        timeout: None,
        max_cpu: None,
        disk_bytes: 0,
        datasets: Vec::new(),
    };
    let run_hello = |i: u32| {
        let (tx, mut rx) = mpsc::unbounded_channel();
        exec.launch(
            hello(i),
            Box::new(move |e| {
                let _ = tx.send(e);
            }),
        );
        async move {
            loop {
                if let Some(ExecEvent::Finished(o)) = rx.recv().await {
                    assert_eq!(o.termination, Termination::Exited(0));
                    break;
                }
            }
        }
    };
    run_hello(0).await;
    let m = 50;
    let t0 = Instant::now();
    for i in 1..=m {
        run_hello(i).await;
    }
    let per_one_shot = t0.elapsed() / m;
    eprintln!(
        "per task, launch to finished: warm executor {per_exec_task:?}, one-shot p1 `hello` \
         {per_one_shot:?} (ratio {:.1}x)",
        per_one_shot.as_secs_f64() / per_exec_task.as_secs_f64()
    );
}
