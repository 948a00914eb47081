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
