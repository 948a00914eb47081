//! Tests of the runtime interface with real wasmtime running the real example guests and
//! executors (`tessera-wasm-examples`).

use std::path::Path;
use std::time::Duration;

use wasm_examples::executors::KVEXEC_EXECUTOR_PATH;

use super::*;
use crate::executor::{GuestTaskState, TaskOutcome, Termination};

const MIB: u64 = 1 << 20;
/// Hang guard: an event that should come must come within this (never a speed assertion).
const SANITY: Duration = Duration::from_secs(60);

fn config() -> ExecutorConfig {
    ExecutorConfig::default()
}

fn task_spec(dir: &Path, digest: &str, wasm: &str, args: &[&str]) -> TaskSpec {
    let mut argv = vec![digest.to_owned()];
    argv.extend(args.iter().map(|a| a.to_string()));
    TaskSpec {
        sandbox: true,
        digest: digest.to_owned(),
        wasm_path: wasm.into(),
        args: argv,
        env: Vec::new(),
        task_dir: dir.to_owned(),
        mem_bytes: 64 * MIB,
        cpus_milli: 1000,
        timeout: None,
        max_cpu: None,
        disk_bytes: 0,
        datasets: Vec::new(),
    }
}

fn instance_spec(dir: &Path) -> InstanceSpec {
    InstanceSpec {
        digest: "kvexec-digest".to_owned(),
        wasm_path: KVEXEC_EXECUTOR_PATH.into(),
        args: vec!["kvexec".to_owned()],
        env: Vec::new(),
        dir: dir.to_owned(),
        cpus_milli: 1000,
        mem_bytes: 256 * MIB,
        disk_bytes: 0,
        datasets: Vec::new(),
    }
}

fn instance_task(id: &str, data: &str) -> InstanceTask {
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

/// The next event, within the hang guard.
async fn next(events: &mut Events) -> RuntimeEvent {
    tokio::time::timeout(SANITY, events.recv())
        .await
        .expect("no runtime event in time")
        .expect("runtime event stream ended")
}

/// Reads events until `guest`'s `Finished`, checking every event is numbered one more than the
/// previous one (`last`), and returns the outcome.
async fn finished(events: &mut Events, guest: &str, last: &mut u64) -> TaskOutcome {
    loop {
        let ev = next(events).await;
        assert_eq!(ev.seq, *last + 1, "{ev:?}");
        *last = ev.seq;
        if ev.guest != guest {
            continue;
        }
        match ev.event {
            GuestEvent::Task(ExecEvent::Running) => {}
            GuestEvent::Task(ExecEvent::Finished(o)) => return o,
            other => panic!("unexpected event of {guest}: {other:?}"),
        }
    }
}

/// The next event, which must be of `guest`'s instance, numbered after `last`.
async fn instance_event(events: &mut Events, guest: &str, last: &mut u64) -> InstanceEvent {
    let ev = next(events).await;
    assert_eq!(ev.seq, *last + 1, "{ev:?}");
    *last = ev.seq;
    assert_eq!(ev.guest, guest);
    match ev.event {
        GuestEvent::Instance(i) => i,
        other => panic!("expected an instance event, got {other:?}"),
    }
}

fn update(ev: InstanceEvent, task_id: &str) -> (GuestTaskState, String) {
    match ev {
        InstanceEvent::TaskUpdate {
            task_id: t,
            state,
            message,
        } => {
            assert_eq!(t, task_id);
            (state, message)
        }
        other => panic!("expected an update of {task_id}, got {other:?}"),
    }
}

#[tokio::test]
async fn in_process_runs_a_task_to_finished_with_numbered_events() {
    let (rt, att, mut events) = Runtime::in_process(config()).unwrap();
    assert!(att.live.is_empty());
    assert!(att.fuel_per_core_second > 0);
    let dir = tempfile::tempdir().unwrap();
    rt.prepare("hello", wasm_examples::HELLO_PATH.as_ref())
        .await
        .unwrap();
    rt.launch(
        "t1".into(),
        task_spec(dir.path(), "hello", wasm_examples::HELLO_PATH, &["a"]),
    );
    let mut last = 0;
    let out = finished(&mut events, "t1", &mut last).await;
    assert_eq!(out.termination, Termination::Exited(0), "{out:?}");
    assert!(out.stdout_tail.contains("Hello from Tessera! a"), "{out:?}");
    assert_eq!(last, 2, "Running then Finished");
    rt.ack(last);
    rt.close(false).await;
}

#[tokio::test]
async fn in_process_runtimes_have_distinct_ids_within_one_process() {
    let (a, att_a, _ea) = Runtime::in_process(config()).unwrap();
    let (b, att_b, _eb) = Runtime::in_process(config()).unwrap();
    assert_ne!(att_a.runtime_id, att_b.runtime_id);
    a.close(true).await;
    let (_c, att_c, _ec) = Runtime::in_process(config()).unwrap();
    assert_ne!(att_c.runtime_id, att_a.runtime_id);
    assert_ne!(att_c.runtime_id, att_b.runtime_id);
    b.close(true).await;
}

#[tokio::test]
async fn in_process_prepare_reports_an_invalid_module() {
    let (rt, _att, _events) = Runtime::in_process(config()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.wasm");
    std::fs::write(&bad, b"not wasm").unwrap();
    let err = rt.prepare("bad", &bad).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Prepare(_)), "{err:?}");
    assert!(err.to_string().contains("bad"), "{err}");
}

#[tokio::test]
async fn in_process_close_kills_a_running_task_and_waits_for_its_end() {
    let (rt, _att, mut events) = Runtime::in_process(config()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    rt.launch(
        "spin".into(),
        task_spec(dir.path(), "spinner", wasm_examples::SPINNER_PATH, &[]),
    );
    let ev = next(&mut events).await;
    assert_eq!(ev.event, GuestEvent::Task(ExecEvent::Running));
    // A second launch under a live id is ignored.
    rt.launch(
        "spin".into(),
        task_spec(dir.path(), "hello", wasm_examples::HELLO_PATH, &[]),
    );
    rt.close(true).await;
    let ev = next(&mut events).await;
    match ev.event {
        GuestEvent::Task(ExecEvent::Finished(o)) => {
            assert_eq!(o.termination, Termination::Killed, "{o:?}")
        }
        other => panic!("expected Finished, got {other:?}"),
    }
    assert_eq!(ev.seq, 2);
    assert!(
        tokio::time::timeout(SANITY, events.recv())
            .await
            .unwrap()
            .is_none(),
        "the stream ends with the runtime"
    );
}

#[tokio::test]
async fn in_process_runs_an_executor_instance_through_launch_update_message_exit() {
    let (rt, _att, mut events) = Runtime::in_process(config()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let g = "exec-1";
    rt.start_instance(g.into(), instance_spec(dir.path()));
    let mut last = 0;
    assert_eq!(
        instance_event(&mut events, g, &mut last).await,
        InstanceEvent::Started
    );
    rt.set_envelope(g, 1100, 257 * MIB);
    rt.instance_launch(g, instance_task("q1", "count"));
    let (s, _) = update(instance_event(&mut events, g, &mut last).await, "q1");
    assert_eq!(s, GuestTaskState::Running);
    let (s, m) = update(instance_event(&mut events, g, &mut last).await, "q1");
    assert_eq!((s, m.as_str()), (GuestTaskState::Finished, "200000"));
    rt.instance_message(g, b"hi".to_vec());
    assert_eq!(
        instance_event(&mut events, g, &mut last).await,
        InstanceEvent::Message(b"echo:hi".to_vec())
    );
    rt.instance_launch(g, instance_task("w", "wait"));
    let (s, _) = update(instance_event(&mut events, g, &mut last).await, "w");
    assert_eq!(s, GuestTaskState::Running);
    rt.instance_kill_task(g, "w");
    let (s, _) = update(instance_event(&mut events, g, &mut last).await, "w");
    assert_eq!(s, GuestTaskState::Killed);
    rt.instance_shutdown(g);
    match instance_event(&mut events, g, &mut last).await {
        InstanceEvent::Exited(o) => assert_eq!(o.termination, Termination::Exited(0), "{o:?}"),
        other => panic!("expected Exited, got {other:?}"),
    }
    rt.close(true).await;
}

// ---- The runtime process's protocol, served on a task of this test process. ----

/// A runtime served by [`serve`] on a task of the test, and options to attach to it (whose
/// program does not exist: attaching never starts a process here).
struct Served {
    opts: RuntimeOptions,
    task: tokio::task::JoinHandle<Result<(), RuntimeError>>,
    _dir: tempfile::TempDir,
}

/// An agent's options for the runtime directory `<dir>/runtime`; it cannot start a runtime
/// itself (its program does not exist), so a test serves one.
fn options(dir: &Path) -> RuntimeOptions {
    let rdir = dir.join("runtime");
    RuntimeOptions {
        socket: rdir.join("sock"),
        dir: rdir,
        program: dir.join("no-such-program"),
        args: Vec::new(),
        executor: config(),
        recovery_timeout: FOREVER,
        boot_id: "test".to_owned(),
    }
}

async fn served(recovery_timeout: Duration) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let opts = RuntimeOptions {
        recovery_timeout,
        ..options(dir.path())
    };
    let task = tokio::spawn(serve(ServeOptions {
        dir: opts.dir.clone(),
        socket: opts.socket.clone(),
        executor: config(),
        recovery_timeout,
    }));
    let waited = tokio::time::timeout(SANITY, async {
        while tokio::net::UnixStream::connect(&opts.socket).await.is_err() {
            assert!(!task.is_finished(), "serve ended early");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    waited.expect("the runtime did not serve its socket in time");
    Served {
        opts,
        task,
        _dir: dir,
    }
}

impl Served {
    async fn attach(&self) -> (Runtime, Attachment, Events) {
        Runtime::attach(self.opts.clone()).await.unwrap()
    }

    /// Waits for `serve` to return.
    async fn ended(self) {
        tokio::time::timeout(SANITY, self.task)
            .await
            .expect("the runtime did not exit")
            .unwrap()
            .unwrap();
        assert!(!self.opts.socket.exists(), "the socket is removed at exit");
    }
}

/// The stream ends (within the hang guard), perhaps after events still in flight.
async fn ends(events: &mut Events) {
    tokio::time::timeout(SANITY, async { while events.recv().await.is_some() {} })
        .await
        .expect("the event stream did not end");
}

const FOREVER: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn runtime_process_protocol_runs_a_task_and_an_instance() {
    let s = served(FOREVER).await;
    let (rt, att, mut events) = s.attach().await;
    assert!(att.live.is_empty());
    assert!(att.fuel_per_core_second > 0);
    let dir = tempfile::tempdir().unwrap();
    rt.prepare("hello", wasm_examples::HELLO_PATH.as_ref())
        .await
        .unwrap();
    // The second prepare of the same module comes from the cache, and the answer says so.
    let again = rt
        .prepare("hello", wasm_examples::HELLO_PATH.as_ref())
        .await
        .unwrap();
    assert!(again.cached, "{again:?}");
    let bad = dir.path().join("bad.wasm");
    std::fs::write(&bad, b"junk").unwrap();
    assert!(matches!(
        rt.prepare("bad", &bad).await,
        Err(RuntimeError::Prepare(_))
    ));
    rt.launch(
        "t1".into(),
        task_spec(dir.path(), "hello", wasm_examples::HELLO_PATH, &["x"]),
    );
    let mut last = 0;
    let out = finished(&mut events, "t1", &mut last).await;
    assert_eq!(out.termination, Termination::Exited(0), "{out:?}");
    assert!(out.stdout_tail.contains("Hello from Tessera! x"), "{out:?}");

    let g = "exec-1";
    let idir = tempfile::tempdir().unwrap();
    rt.start_instance(g.into(), instance_spec(idir.path()));
    assert_eq!(
        instance_event(&mut events, g, &mut last).await,
        InstanceEvent::Started
    );
    rt.set_envelope(g, 1100, 257 * MIB);
    rt.instance_launch(g, instance_task("q1", "get:k5"));
    let (st, _) = update(instance_event(&mut events, g, &mut last).await, "q1");
    assert_eq!(st, GuestTaskState::Running);
    let (st, v) = update(instance_event(&mut events, g, &mut last).await, "q1");
    assert_eq!((st, v.len()), (GuestTaskState::Finished, 16), "{v}");
    rt.instance_message(g, b"ping".to_vec());
    assert_eq!(
        instance_event(&mut events, g, &mut last).await,
        InstanceEvent::Message(b"echo:ping".to_vec())
    );
    rt.instance_launch(g, instance_task("w", "wait"));
    update(instance_event(&mut events, g, &mut last).await, "w");
    rt.instance_kill_task(g, "w");
    let (st, _) = update(instance_event(&mut events, g, &mut last).await, "w");
    assert_eq!(st, GuestTaskState::Killed);
    rt.instance_shutdown(g);
    match instance_event(&mut events, g, &mut last).await {
        InstanceEvent::Exited(o) => assert_eq!(o.termination, Termination::Exited(0), "{o:?}"),
        other => panic!("expected Exited, got {other:?}"),
    }
    rt.close(true).await;
    ends(&mut events).await;
    s.ended().await;
}

#[tokio::test]
async fn reattach_finds_the_task_live_and_its_end_comes_once_after_ack_trims() {
    let s = served(FOREVER).await;
    let dir = tempfile::tempdir().unwrap();
    let (rt, att1, mut events) = s.attach().await;
    rt.launch(
        "spin".into(),
        task_spec(
            dir.path(),
            "spinner",
            wasm_examples::SPINNER_PATH,
            &["sleep"],
        ),
    );
    let ev = next(&mut events).await;
    assert_eq!(
        (ev.seq, ev.event),
        (1, GuestEvent::Task(ExecEvent::Running))
    );
    rt.ack(1);
    rt.close(false).await;
    ends(&mut events).await;

    // The successor: same runtime, the task still live, nothing replayed (acked).
    let (rt, att2, mut events) = s.attach().await;
    assert_eq!(att2.runtime_id, att1.runtime_id);
    assert_eq!(att2.live, ["spin"]);
    assert_eq!((att1.last_seq, att2.last_seq), (0, 1));
    rt.kill("spin");
    let ev = next(&mut events).await;
    assert_eq!((ev.seq, ev.guest.as_str()), (2, "spin"), "{ev:?}");
    match ev.event {
        GuestEvent::Task(ExecEvent::Finished(o)) => {
            assert_eq!(o.termination, Termination::Killed, "{o:?}")
        }
        other => panic!("expected Finished, got {other:?}"),
    }
    // Not acked: a successor gets the end again (its checkpoint decides by seq)...
    rt.close(false).await;
    let (rt, att3, mut events) = s.attach().await;
    assert!(att3.live.is_empty());
    assert_eq!(att3.last_seq, 2);
    let ev = next(&mut events).await;
    assert_eq!(ev.seq, 2);
    assert!(ev.event.is_end());
    // ...and once acked, never again.
    rt.ack(2);
    rt.close(false).await;
    let (rt, att4, mut events) = s.attach().await;
    assert!(att4.live.is_empty());
    rt.launch(
        "h".into(),
        task_spec(dir.path(), "hello", wasm_examples::HELLO_PATH, &[]),
    );
    let ev = next(&mut events).await;
    assert_eq!(
        (ev.seq, ev.guest.as_str()),
        (3, "h"),
        "nothing older is replayed"
    );
    rt.close(true).await;
    s.ended().await;
}

#[tokio::test]
async fn events_produced_while_detached_are_replayed_in_order_exactly_once() {
    let s = served(FOREVER).await;
    let dir = tempfile::tempdir().unwrap();
    let (rt, _att, events) = s.attach().await;
    let n = 12;
    for i in 0..n {
        let d = dir.path().join(format!("t{i}"));
        rt.launch(
            format!("t{i}"),
            task_spec(&d, "hello", wasm_examples::HELLO_PATH, &[]),
        );
    }
    // One that ends by its own timeout, surely while nobody is attached.
    let mut slow = task_spec(
        &dir.path().join("slow"),
        "spinner",
        wasm_examples::SPINNER_PATH,
        &["sleep"],
    );
    slow.timeout = Some(Duration::from_millis(300));
    rt.launch("slow".into(), slow);
    rt.close(false).await;
    drop(events);
    tokio::time::sleep(Duration::from_millis(600)).await;

    let (rt, _att, mut events) = s.attach().await;
    let mut last = 0;
    let mut ended = std::collections::BTreeMap::new();
    let mut running = std::collections::BTreeSet::new();
    while ended.len() < n + 1 {
        let ev = next(&mut events).await;
        assert_eq!(ev.seq, last + 1, "in order, none missing: {ev:?}");
        last = ev.seq;
        match ev.event {
            GuestEvent::Task(ExecEvent::Running) => {
                assert!(running.insert(ev.guest.clone()), "Running twice");
            }
            GuestEvent::Task(ExecEvent::Finished(o)) => {
                assert!(running.contains(&ev.guest), "Finished before Running");
                assert!(
                    ended.insert(ev.guest, o.termination).is_none(),
                    "Finished twice"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ended["slow"], Termination::Timeout);
    assert!(ended
        .iter()
        .filter(|(g, _)| *g != "slow")
        .all(|(_, t)| *t == Termination::Exited(0)));
    assert_eq!(last, 2 * (n as u64 + 1));
    assert!(events.try_recv().is_none(), "nothing more");
    rt.close(true).await;
    s.ended().await;
}

#[tokio::test]
async fn the_newest_agent_wins_and_garbage_connections_change_nothing() {
    use tokio::io::AsyncWriteExt;
    let s = served(FOREVER).await;
    let dir = tempfile::tempdir().unwrap();
    let (rt1, _a1, mut ev1) = s.attach().await;
    rt1.launch(
        "spin".into(),
        task_spec(
            dir.path(),
            "spinner",
            wasm_examples::SPINNER_PATH,
            &["sleep"],
        ),
    );
    assert_eq!(next(&mut ev1).await.seq, 1);

    // Garbage of every kind, on connections of their own.
    let garbage: [&[u8]; 4] = [
        b"\x00\x00\x00\x05hello",    // a frame that is not a message
        b"\xff\xff\xff\xffxxxx",     // a frame over the cap
        b"\x00\x00",                 // a truncated prefix, then EOF
        b"\x00\x00\x00\x02\x03\x00", // a valid kill (of guest "") before any hello
    ];
    for g in garbage {
        let mut c = tokio::net::UnixStream::connect(&s.opts.socket)
            .await
            .unwrap();
        c.write_all(g).await.unwrap();
        c.shutdown().await.unwrap();
        let mut buf = Vec::new();
        // The runtime closes the connection without answering.
        tokio::time::timeout(
            SANITY,
            tokio::io::AsyncReadExt::read_to_end(&mut c, &mut buf),
        )
        .await
        .expect("garbage connection not closed")
        .ok();
        assert!(buf.is_empty(), "no answer to garbage: {buf:?}");
    }
    // The attached agent is undisturbed.
    rt1.launch(
        "h1".into(),
        task_spec(
            &dir.path().join("h1"),
            "hello",
            wasm_examples::HELLO_PATH,
            &[],
        ),
    );
    let mut last = 1;
    finished(&mut ev1, "h1", &mut last).await;

    // A second agent replaces the first, whose stream ends.
    let (rt2, a2, mut ev2) = s.attach().await;
    assert_eq!(a2.live, ["spin"]);
    ends(&mut ev1).await;
    // Nothing was acked: the whole history is replayed to it.
    for seq in 1..=last {
        assert_eq!(next(&mut ev2).await.seq, seq);
    }
    rt1.kill("spin"); // from the replaced agent: goes nowhere
    rt2.kill("spin");
    let ev = next(&mut ev2).await;
    assert_eq!((ev.seq, ev.guest.as_str()), (last + 1, "spin"));
    assert!(ev.event.is_end());
    rt2.close(true).await;
    s.ended().await;
}

#[tokio::test]
async fn recovery_timeout_kills_orphaned_guests_and_exits() {
    let s = served(Duration::from_millis(300)).await;
    let dir = tempfile::tempdir().unwrap();
    let (rt, _att, mut events) = s.attach().await;
    rt.launch(
        "spin".into(),
        task_spec(dir.path(), "spinner", wasm_examples::SPINNER_PATH, &[]),
    );
    assert_eq!(
        next(&mut events).await.event,
        GuestEvent::Task(ExecEvent::Running)
    );
    rt.close(false).await;
    // With nobody attached, the runtime kills its guest (serve waits for its end) and exits.
    s.ended().await;
}

#[tokio::test]
async fn a_detached_runtime_whose_directory_is_removed_kills_its_guests_and_exits() {
    let s = served(FOREVER).await;
    let tasks = tempfile::tempdir().unwrap();
    let (rt, _att, mut events) = s.attach().await;
    // A task that has ended, its output still in the runtime's memory (no sandbox: nothing
    // of it is on disk).
    let hello_dir = tasks.path().join("hello");
    let hello = TaskSpec {
        sandbox: false,
        ..task_spec(&hello_dir, "hello", wasm_examples::HELLO_PATH, &[])
    };
    rt.launch("hello".into(), hello);
    let mut last = 0;
    let outcome = finished(&mut events, "hello", &mut last).await;
    assert_eq!(outcome.termination, Termination::Exited(0));
    rt.launch(
        "spin".into(),
        task_spec(tasks.path(), "spinner", wasm_examples::SPINNER_PATH, &[]),
    );
    assert_eq!(
        next(&mut events).await.event,
        GuestEvent::Task(ExecEvent::Running)
    );
    // While attached, the directory's state does not matter (the agent owns it).
    rt.close(false).await;
    ends(&mut events).await;
    // The agent's whole work directory goes: the runtime's and the tasks'.
    std::fs::remove_dir_all(&s.opts.dir).unwrap();
    assert!(!hello_dir.exists());
    // With a recovery timeout of an hour, only the missing directory makes it exit (the
    // hang guard of `ended` is a minute): it kills the spinner first (serve waits for it).
    s.ended().await;
    // Without writing the ended task's output out, which would create its directory again.
    assert!(
        !hello_dir.exists(),
        "the task's directory was created again"
    );
}

#[tokio::test]
async fn a_runtime_whose_directory_is_replaced_leaves_the_new_socket_alone() {
    let s = served(FOREVER).await;
    std::fs::remove_dir_all(&s.opts.dir).unwrap();
    std::fs::create_dir_all(&s.opts.dir).unwrap();
    std::fs::write(s.opts.dir.join("lock"), b"").unwrap();
    std::fs::write(&s.opts.socket, b"a successor's").unwrap();
    let socket = s.opts.socket.clone();
    tokio::time::timeout(SANITY, s.task)
        .await
        .expect("the runtime did not exit")
        .unwrap()
        .unwrap();
    assert!(socket.exists(), "the successor's socket is kept");
}

#[tokio::test]
async fn an_instance_reports_its_unended_tasks_and_runs_a_repeated_launch_once() {
    let s = served(FOREVER).await;
    let dir = tempfile::tempdir().unwrap();
    let (rt, att, mut events) = s.attach().await;
    assert!(att.instance_tasks.is_empty());
    let g = "exec-1";
    rt.start_instance(g.into(), instance_spec(dir.path()));
    let mut last = 0;
    assert_eq!(
        instance_event(&mut events, g, &mut last).await,
        InstanceEvent::Started
    );
    rt.instance_launch(g, instance_task("w", "wait"));
    let (st, _) = update(instance_event(&mut events, g, &mut last).await, "w");
    assert_eq!(st, GuestTaskState::Running);
    rt.instance_launch(g, instance_task("q", "count"));
    let (st, _) = update(instance_event(&mut events, g, &mut last).await, "q");
    assert_eq!(st, GuestTaskState::Running);
    let (st, _) = update(instance_event(&mut events, g, &mut last).await, "q");
    assert_eq!(st, GuestTaskState::Finished);
    rt.ack(last);
    rt.close(false).await;
    ends(&mut events).await;
    // A recovering agent learns that `w` reached the instance and has not ended; `q` ended.
    let (rt, att, mut events) = s.attach().await;
    assert_eq!(att.live, vec![g.to_owned()]);
    assert_eq!(
        att.instance_tasks,
        [(g.to_owned(), vec!["w".to_owned()])].into()
    );
    // A launch it sends again anyway is not delivered twice: the release finishes `w` once,
    // and the instance's next event is the echo of a later message.
    rt.instance_launch(g, instance_task("w", "wait"));
    rt.instance_message(g, b"release".to_vec());
    let (st, m) = update(instance_event(&mut events, g, &mut last).await, "w");
    assert_eq!((st, m.as_str()), (GuestTaskState::Finished, "released"));
    assert_eq!(
        instance_event(&mut events, g, &mut last).await,
        InstanceEvent::Message(b"echo:release".to_vec())
    );
    rt.instance_message(g, b"hi".to_vec());
    assert_eq!(
        instance_event(&mut events, g, &mut last).await,
        InstanceEvent::Message(b"echo:hi".to_vec())
    );
    rt.ack(last);
    rt.close(false).await;
    ends(&mut events).await;
    let (rt, att, _events) = s.attach().await;
    assert_eq!(att.instance_tasks, [(g.to_owned(), Vec::new())].into());
    rt.close(true).await;
    s.ended().await;
}

#[tokio::test]
async fn outbox_drops_messages_beyond_its_cap_but_never_other_events() {
    let host = host::Host::with_caps(config(), "t".into(), true, (10, u64::MAX)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    host.start_instance("e".into(), instance_spec(dir.path()));
    for m in ["a", "b", "c"] {
        host.with_instance("e", |i| i.message(m.as_bytes().to_vec()));
    }
    host.with_instance("e", |i| i.shutdown());
    tokio::time::timeout(SANITY, async {
        while host.live_count() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the instance did not exit");
    let (tx, rx) = mpsc::unbounded_channel();
    let (att, _) = host.attach(tx);
    assert!(att.live.is_empty());
    let mut events = Events { rx };
    let mut got = Vec::new();
    while let Some(ev) = events.try_recv() {
        got.push((ev.seq, ev.event));
    }
    let echo = |s: &str| GuestEvent::Instance(InstanceEvent::Message(s.as_bytes().to_vec()));
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0], (1, GuestEvent::Instance(InstanceEvent::Started)));
    assert_eq!(got[1], (2, echo("echo:a")));
    assert!(got[2].1.is_end());
    assert_eq!(host.dropped_messages(), 2);
    host.ack(3);
    assert_eq!(host.outbox_len(), 0);
}

#[tokio::test]
async fn an_executor_flooding_a_full_outbox_with_updates_is_killed_and_no_update_is_lost() {
    let host = host::Host::with_caps(config(), "t".into(), true, (u64::MAX, 64 << 10)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    host.start_instance("e".into(), instance_spec(dir.path()));
    host.with_instance("e", |i| i.launch(instance_task("f", "flood:1000000")));
    tokio::time::timeout(SANITY, async {
        while host.live_count() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the flooding instance was not stopped");
    let (tx, rx) = mpsc::unbounded_channel();
    host.attach(tx);
    let mut events = Events { rx };
    let mut last = 0;
    let mut updates = 0;
    let mut end = None;
    while let Some(ev) = events.try_recv() {
        assert_eq!(ev.seq, last + 1, "no event lost");
        last = ev.seq;
        match ev.event {
            GuestEvent::Instance(InstanceEvent::TaskUpdate { .. }) => updates += 1,
            GuestEvent::Instance(InstanceEvent::Exited(o)) => end = Some(o.termination),
            _ => {}
        }
    }
    assert_eq!(end, Some(Termination::Killed));
    assert!(updates > 100, "{updates} updates kept");
}

#[tokio::test]
async fn a_socket_path_too_long_for_unix_sockets_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = RuntimeOptions::new(dir.path(), config()).unwrap();
    opts.socket = dir.path().join("s".repeat(120));
    let err = Runtime::attach(opts).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Start(_)), "{err:?}");
    assert!(err.to_string().contains("bytes"), "{err}");
}

/// Postcard is not self-describing: a runtime and an agent of different builds understand
/// each other only if every type on the wire is unchanged. This pins the encoding of a sample
/// of every request and reply to [`wire::PROTOCOL_VERSION`]: when it fails, bump the version
/// (a runtime refuses agents of another version) and update the digest.
#[test]
fn the_wire_encoding_is_pinned_to_the_protocol_version() {
    use sha2::Digest;
    use wire::{Reply, Request};
    let dir = Path::new("/w");
    let outcome = TaskOutcome {
        termination: Termination::Trapped("t".into()),
        stdout_tail: "o".into(),
        stderr_tail: "e".into(),
        fuel_consumed: 7,
        wall: Duration::from_millis(3),
        cpu_paused: Duration::from_millis(1),
        cpu_time: Duration::from_millis(2),
    };
    let mut spec = task_spec(dir, "d", "/m.wasm", &["a"]);
    spec.timeout = Some(Duration::from_secs(1));
    spec.env = vec![("K".into(), "V".into())];
    spec.datasets = vec![("n".into(), "/data".into())];
    // Literal paths only: the example executors' paths depend on where the tree is built.
    let ispec = InstanceSpec {
        wasm_path: "/e.wasm".into(),
        ..instance_spec(dir)
    };
    let requests = vec![
        Request::Hello {
            version: wire::PROTOCOL_VERSION,
            boot_id: "b".into(),
        },
        Request::Prepare {
            id: 1,
            digest: "d".into(),
            wasm_path: "/m.wasm".into(),
        },
        Request::Launch {
            guest: "g".into(),
            spec,
        },
        Request::Kill { guest: "g".into() },
        Request::StartInstance {
            guest: "g".into(),
            spec: ispec,
        },
        Request::InstanceLaunch {
            guest: "g".into(),
            task: instance_task("t", "x"),
        },
        Request::InstanceKillTask {
            guest: "g".into(),
            task_id: "t".into(),
        },
        Request::InstanceMessage {
            guest: "g".into(),
            data: vec![1, 2],
        },
        Request::InstanceShutdown { guest: "g".into() },
        Request::SetEnvelope {
            guest: "g".into(),
            cpus_milli: 1,
            mem_bytes: 2,
        },
        Request::Ack { seq: 9 },
        Request::Stop,
        Request::ReadOutput {
            id: 3,
            task_dir: "/t".into(),
            stderr: true,
            offset: 4,
            length: 5,
        },
        Request::ForgetOutput {
            task_dir: "/t".into(),
        },
        Request::CancelPrepare { id: 6 },
    ];
    let event = |event| RuntimeEvent {
        seq: 1,
        guest: "g".into(),
        event,
    };
    let replies = vec![
        Reply::Welcome(Attachment {
            runtime_id: "r".into(),
            live: vec!["g".into()],
            fuel_per_core_second: 5,
            last_seq: 4,
            instance_tasks: [("g".to_owned(), vec!["t".to_owned()])].into(),
        }),
        Reply::Refused("no".into()),
        Reply::Prepared {
            id: 1,
            result: Err("bad".into()),
        },
        Reply::Prepared {
            id: 2,
            result: Ok(super::PrepareInfo {
                cached: true,
                secs: 0.5,
            }),
        },
        Reply::Event(event(GuestEvent::Task(ExecEvent::Running))),
        Reply::Event(event(GuestEvent::Task(ExecEvent::Finished(
            outcome.clone(),
        )))),
        Reply::Event(event(GuestEvent::Instance(InstanceEvent::Started))),
        Reply::Event(event(GuestEvent::Instance(InstanceEvent::TaskUpdate {
            task_id: "t".into(),
            state: GuestTaskState::Killed,
            message: "m".into(),
        }))),
        Reply::Event(event(GuestEvent::Instance(InstanceEvent::Message(vec![3])))),
        Reply::Event(event(GuestEvent::Instance(InstanceEvent::Exited(outcome)))),
        Reply::Stopped,
        Reply::Output {
            id: 3,
            data: Some((vec![6], 7)),
        },
        Reply::Output { id: 4, data: None },
    ];
    let mut h = sha2::Sha256::new();
    for r in &requests {
        h.update(postcard::to_stdvec(r).unwrap());
    }
    for r in &replies {
        h.update(postcard::to_stdvec(r).unwrap());
    }
    // The config file the agent writes for the runtime process (a literal: defaults may move).
    let cfg = ExecutorConfig {
        output_cap: 1,
        tail_bytes: 2,
        cache_dir: Some("/c".into()),
        fuel_per_core_second: Some(3),
        default_disk_cap: 4,
        disk_check_interval: Duration::from_millis(5),
        pooling: Some(crate::executor::PoolingConfig {
            max_tasks: 6,
            max_task_mem: 7,
        }),
        cpu_quota_cgroup: Some("/q".into()),
        metering: crate::executor::Metering::Rewrite,
        compiler: Some(crate::executor::CompilerCommand {
            program: "/t".into(),
            args: vec!["8".into()],
            cpu_limit: Duration::from_secs(9),
            memory_limit: 10,
        }),
    };
    h.update(postcard::to_stdvec(&cfg).unwrap());
    let digest = hex::encode(h.finalize());
    assert_eq!(
        (wire::PROTOCOL_VERSION, digest.as_str()),
        (
            9,
            "ec1f454c8587bb23d1a9f5e14d14d3b0cb3e0ac85995790df16e8e06182aa232"
        ),
        "the wire encoding changed: bump PROTOCOL_VERSION and update this digest"
    );
}

/// A killed runtime's listener outlives its process's death for a moment (until the last of
/// its threads has torn down its memory): it takes connections and then resets them. An agent
/// attaching in that moment goes on to the runtime that replaces it.
#[tokio::test]
async fn attaching_while_a_killed_runtime_closes_its_socket_reaches_its_successor() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path());
    let (rdir, socket) = (opts.dir.clone(), opts.socket.clone());
    std::fs::create_dir_all(&rdir).unwrap();
    // The dying runtime's listener: it never accepts.
    let dying = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    dying.set_nonblocking(true).unwrap();
    // SAFETY: the listener owns its descriptor, which nothing else closes or replaces.
    let dying = unsafe { tokio::io::unix::AsyncFd::register(dying) }.unwrap();
    let attach = tokio::spawn(Runtime::attach(opts.clone()));
    // The agent's connection waits in the dying listener's queue (it reads as ready).
    let _ = tokio::time::timeout(SANITY, dying.readable())
        .await
        .expect("the agent connects")
        .unwrap();
    // The successor takes the path...
    let dying_ino = std::fs::metadata(&socket).unwrap().ino();
    let task = tokio::spawn(serve(ServeOptions {
        dir: rdir,
        socket: socket.clone(),
        executor: config(),
        recovery_timeout: FOREVER,
    }));
    tokio::time::timeout(SANITY, async {
        while std::fs::metadata(&socket).is_ok_and(|m| m.ino() == dying_ino) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the successor serves");
    // ...and the dying one closes, resetting the connection it held.
    drop(dying);
    let (rt, att, _events) = tokio::time::timeout(SANITY, attach)
        .await
        .expect("the agent attaches")
        .unwrap()
        .unwrap();
    assert!(att.live.is_empty());
    rt.close(true).await;
    Served {
        opts,
        task,
        _dir: dir,
    }
    .ended()
    .await;
}

/// A killed runtime holds its lock until its last thread is gone: its successor waits for it
/// rather than failing.
#[tokio::test]
async fn a_runtime_waits_for_the_lock_of_one_still_exiting() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path());
    let (rdir, socket) = (opts.dir.clone(), opts.socket.clone());
    std::fs::create_dir_all(&rdir).unwrap();
    let held = std::fs::File::create(rdir.join("lock")).unwrap();
    held.try_lock().unwrap();
    let task = tokio::spawn(serve(ServeOptions {
        dir: rdir,
        socket: socket.clone(),
        executor: config(),
        recovery_timeout: FOREVER,
    }));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!task.is_finished(), "it waits for the lock");
    assert!(!socket.exists(), "nothing serves before the lock is had");
    drop(held);
    let (rt, _att, _events) = tokio::time::timeout(SANITY, async {
        loop {
            if let Ok(a) = Runtime::attach(opts.clone()).await {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the successor serves once the lock is let go");
    rt.close(true).await;
    Served {
        opts,
        task,
        _dir: dir,
    }
    .ended()
    .await;
}

#[tokio::test]
async fn a_second_runtime_for_the_same_directory_refuses_to_serve() {
    let s = served(FOREVER).await;
    let err = serve(ServeOptions {
        dir: s.opts.dir.clone(),
        socket: s.opts.socket.clone(),
        executor: config(),
        recovery_timeout: FOREVER,
    })
    .await
    .unwrap_err();
    assert!(matches!(err, RuntimeError::Start(_)), "{err:?}");
    assert!(err.to_string().contains("another runtime"), "{err}");
    // The first one still serves.
    let (rt, att, _events) = s.attach().await;
    assert!(att.live.is_empty());
    rt.close(true).await;
    s.ended().await;
}

#[tokio::test]
async fn a_request_over_the_frame_cap_is_dropped_and_the_connection_stays() {
    let s = served(FOREVER).await;
    let (rt, _att, mut events) = s.attach().await;
    let dir = tempfile::tempdir().unwrap();
    let g = "exec";
    rt.start_instance(g.into(), instance_spec(dir.path()));
    let mut last = 0;
    assert_eq!(
        instance_event(&mut events, g, &mut last).await,
        InstanceEvent::Started
    );
    rt.instance_message(g, vec![b'x'; wire::MAX_FRAME + 1]);
    rt.instance_message(g, b"after".to_vec());
    assert_eq!(
        instance_event(&mut events, g, &mut last).await,
        InstanceEvent::Message(b"echo:after".to_vec()),
        "the large message was dropped, the next one delivered"
    );
    rt.close(true).await;
    s.ended().await;
}

#[tokio::test]
async fn output_held_in_memory_is_read_through_the_runtime_process_and_written_out_at_its_stop() {
    let s = served(FOREVER).await;
    let (rt, _, mut events) = s.attach().await;
    let tasks = tempfile::tempdir().unwrap();
    let base = tasks.path().to_owned();
    let mut last = 0;
    for (guest, arg) in [("t1", "one"), ("t2", "two")] {
        let mut spec = task_spec(
            &base.join(guest),
            "hello",
            wasm_examples::HELLO_PATH,
            &[arg],
        );
        spec.sandbox = false;
        rt.launch(guest.into(), spec);
        let out = finished(&mut events, guest, &mut last).await;
        assert_eq!(out.termination, Termination::Exited(0), "{out:?}");
    }
    let (data, size) = rt
        .read_output(&base.join("t1"), false, 0, 1000)
        .await
        .unwrap()
        .expect("in the runtime's memory");
    assert_eq!(size, data.len() as u64);
    assert!(String::from_utf8_lossy(&data).contains("Hello from Tessera! one"));
    assert!(!base.join("t1").exists());
    rt.forget_output(&base.join("t1"));
    assert_eq!(
        rt.read_output(&base.join("t1"), false, 0, 1000)
            .await
            .unwrap(),
        None
    );
    // Stopping the runtime writes what it holds out to the tasks' files.
    rt.close(true).await;
    s.ended().await;
    let stdout = std::fs::read_to_string(base.join("t2").join("stdout")).unwrap();
    assert!(stdout.contains("Hello from Tessera! two"), "{stdout}");
    assert!(!base.join("t1").exists());
}
