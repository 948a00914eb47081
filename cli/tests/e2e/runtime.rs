//! The runtime process for real: `tessera runtime` started by `Runtime::attach` from this test
//! (the agent's side), detached in its own session, outliving its agent's connection, and
//! replaced afresh when it is killed with `-9`. The socket protocol itself is tested in
//! `agent/src/runtime/tests.rs`; the `#[ignore]`d measurement compares it with guests in
//! process, in the same run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agent::executor::{ExecEvent, ExecutorConfig, TaskSpec, Termination};
use agent::runtime::{Events, GuestEvent, Runtime, RuntimeEvent, RuntimeOptions};

use crate::common::{alive, stat_field};

/// Hang guard: an event that should come must come within this (never a speed assertion).
const SANITY: Duration = Duration::from_secs(60);

fn options(work_dir: &Path) -> RuntimeOptions {
    let mut opts = RuntimeOptions::new(work_dir, ExecutorConfig::default()).unwrap();
    opts.program = PathBuf::from(env!("CARGO_BIN_EXE_tessera"));
    // A runtime left behind by a failed test goes away soon.
    opts.recovery_timeout = Duration::from_secs(30);
    opts.boot_id = "cli-test".to_owned();
    opts
}

fn task_spec(dir: &Path, digest: &str, wasm: &str, args: &[&str]) -> TaskSpec {
    let mut argv = vec![digest.to_owned()];
    argv.extend(args.iter().map(|a| a.to_string()));
    TaskSpec {
        sandbox: true,
        ..TaskSpec::new(digest, wasm, argv, dir)
    }
}

async fn next(events: &mut Events) -> RuntimeEvent {
    tokio::time::timeout(SANITY, events.recv())
        .await
        .expect("no runtime event in time")
        .expect("runtime event stream ended")
}

async fn ends(events: &mut Events) {
    tokio::time::timeout(SANITY, async { while events.recv().await.is_some() {} })
        .await
        .expect("the event stream did not end");
}

/// The pid the runtime wrote into its lock file.
fn runtime_pid(work_dir: &Path) -> i32 {
    std::fs::read_to_string(work_dir.join("runtime/lock"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Field `n` (1-based, as in proc(5)) of `/proc/<pid>/stat`, or `None` if the process is gone.
/// Whether the process is gone (or a zombie waiting to be reaped).
fn gone(pid: i32) -> bool {
    !alive(pid)
}

async fn wait_gone(pid: i32) {
    tokio::time::timeout(SANITY, async {
        while !gone(pid) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the runtime process did not exit");
}

#[tokio::test]
async fn guests_outlive_the_agents_connection_and_a_killed_runtime_is_replaced() {
    let work = tempfile::tempdir().unwrap();
    let tasks = tempfile::tempdir().unwrap();
    let (rt, att1, mut events) = Runtime::attach(options(work.path())).await.unwrap();
    assert!(att1.live.is_empty());
    let pid = runtime_pid(work.path());
    assert_ne!(pid as u32, std::process::id());
    // Its own session: signals to the agent's process group or terminal do not reach it.
    assert_eq!(stat_field(pid, 6), Some(pid.to_string()), "session id");
    assert_ne!(
        stat_field(pid, 6),
        stat_field(std::process::id() as i32, 6),
        "a session of its own"
    );

    rt.launch(
        "hello".into(),
        task_spec(
            &tasks.path().join("h"),
            "hello",
            wasm_examples::HELLO_PATH,
            &["y"],
        ),
    );
    rt.launch(
        "spin".into(),
        task_spec(
            &tasks.path().join("s"),
            "spinner",
            wasm_examples::SPINNER_PATH,
            &["sleep"],
        ),
    );
    let mut hello_done = false;
    let mut spin_running = false;
    while !(hello_done && spin_running) {
        let ev = next(&mut events).await;
        match (ev.guest.as_str(), ev.event) {
            ("hello", GuestEvent::Task(ExecEvent::Finished(o))) => {
                assert_eq!(o.termination, Termination::Exited(0), "{o:?}");
                assert!(o.stdout_tail.contains("Hello from Tessera! y"), "{o:?}");
                hello_done = true;
            }
            ("spin", GuestEvent::Task(ExecEvent::Running)) => spin_running = true,
            _ => {}
        }
    }
    rt.ack(4);
    // The agent goes away (its connection closes); the runtime and the spinner stay.
    rt.close(false).await;
    ends(&mut events).await;
    assert!(!gone(pid));

    let (rt, att2, mut events) = Runtime::attach(options(work.path())).await.unwrap();
    assert_eq!(att2.runtime_id, att1.runtime_id);
    assert_eq!(att2.live, ["spin"]);
    assert_eq!(att2.fuel_per_core_second, att1.fuel_per_core_second);

    // The runtime dies with its guests: the attached agent's stream ends...
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    ends(&mut events).await;
    wait_gone(pid).await;
    assert!(matches!(
        rt.prepare("hello", wasm_examples::HELLO_PATH.as_ref())
            .await,
        Err(agent::runtime::RuntimeError::Disconnected)
    ));
    // ...and its next attachment starts a fresh runtime, with nothing live.
    let (rt, att3, mut events) = Runtime::attach(options(work.path())).await.unwrap();
    assert_ne!(att3.runtime_id, att1.runtime_id);
    assert!(att3.live.is_empty());
    let pid3 = runtime_pid(work.path());
    assert_ne!(pid3, pid);

    // Stopping it kills its guests, reports their ends and exits.
    rt.launch(
        "spin2".into(),
        task_spec(
            &tasks.path().join("s2"),
            "spinner",
            wasm_examples::SPINNER_PATH,
            &[],
        ),
    );
    let ev = next(&mut events).await;
    assert_eq!(
        (ev.seq, ev.event),
        (1, GuestEvent::Task(ExecEvent::Running))
    );
    rt.close(true).await;
    let ev = next(&mut events).await;
    match ev.event {
        GuestEvent::Task(ExecEvent::Finished(o)) => {
            assert_eq!(o.termination, Termination::Killed)
        }
        other => panic!("expected the end of spin2, got {other:?}"),
    }
    ends(&mut events).await;
    wait_gone(pid3).await;
    assert!(!work.path().join("runtime/sock").exists());
    let log = std::fs::read_to_string(work.path().join("runtime/runtime.log")).unwrap();
    assert!(log.contains("runtime serving"), "{log}");
}

/// Launch-to-finished of `n` `hello` tasks, one after the other, and the sorted latencies.
async fn hello_latencies(rt: &Runtime, events: &mut Events, dir: &Path, n: usize) -> Vec<Duration> {
    rt.prepare("hello", wasm_examples::HELLO_PATH.as_ref())
        .await
        .unwrap();
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let guest = format!("h{i}");
        let start = Instant::now();
        rt.launch(
            guest.clone(),
            task_spec(&dir.join(&guest), "hello", wasm_examples::HELLO_PATH, &[]),
        );
        loop {
            let ev = next(events).await;
            if ev.guest == guest && ev.event.is_end() {
                rt.ack(ev.seq);
                break;
            }
        }
        lat.push(start.elapsed());
    }
    lat.sort();
    lat
}

fn summary(lat: &[Duration]) -> (Duration, Duration) {
    let mean = lat.iter().sum::<Duration>() / lat.len() as u32;
    (lat[lat.len() / 2], mean)
}

/// Not a test: the runtime process's cost, measured against guests in process in the same run.
/// `cargo test -p tessera-cli --test e2e runtime:: -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn measure_runtime_process_overhead() {
    let n = 200;
    let work = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (local, _, mut local_events) = Runtime::in_process(ExecutorConfig::default()).unwrap();
    let (remote, _, mut remote_events) = Runtime::attach(options(work.path())).await.unwrap();
    // Warm both (compile, pools), then alternate rounds so that load from other work on the
    // machine falls on both alike.
    hello_latencies(&local, &mut local_events, &dir.path().join("wl"), 5).await;
    hello_latencies(&remote, &mut remote_events, &dir.path().join("wr"), 5).await;
    let (mut l, mut r) = (Vec::new(), Vec::new());
    for round in 0..4 {
        let d = dir.path().join(format!("r{round}"));
        l.extend(hello_latencies(&local, &mut local_events, &d.join("l"), n / 4).await);
        r.extend(hello_latencies(&remote, &mut remote_events, &d.join("r"), n / 4).await);
    }
    l.sort();
    r.sort();
    let (lm, la) = summary(&l);
    let (rm, ra) = summary(&r);
    println!(
        "launch-to-finished of {n} hello tasks: in process median {lm:?} mean {la:?}; runtime process median {rm:?} mean {ra:?}; ratio median {:.2} mean {:.2}",
        rm.as_secs_f64() / lm.as_secs_f64(),
        ra.as_secs_f64() / la.as_secs_f64()
    );

    // Attach with 0 and with 100 live guests (sleeping spinners).
    let attach_times = |label: &'static str| {
        let opts = options(work.path());
        async move {
            let mut times = Vec::new();
            for _ in 0..10 {
                let start = Instant::now();
                let (rt, att, _ev) = Runtime::attach(opts.clone()).await.unwrap();
                times.push(start.elapsed());
                std::hint::black_box(att);
                rt.close(false).await;
            }
            times.sort();
            println!("attach ({label}): median {:?}", times[times.len() / 2]);
            times[times.len() / 2]
        }
    };
    remote.close(false).await;
    let idle = attach_times("0 live guests").await;
    let (rt, _, mut events) = Runtime::attach(options(work.path())).await.unwrap();
    for i in 0..100 {
        rt.launch(
            format!("s{i}"),
            task_spec(
                &dir.path().join(format!("s{i}")),
                "spinner",
                wasm_examples::SPINNER_PATH,
                &["sleep"],
            ),
        );
    }
    let mut running = 0;
    let mut last = 0;
    while running < 100 {
        let ev = next(&mut events).await;
        last = ev.seq;
        if ev.event == GuestEvent::Task(ExecEvent::Running) {
            running += 1;
        }
    }
    rt.ack(last);
    rt.close(false).await;
    let busy = attach_times("100 live guests").await;
    println!(
        "attach ratio 100 live / 0 live: {:.2}",
        busy.as_secs_f64() / idle.as_secs_f64()
    );
    let (rt, att, _) = Runtime::attach(options(work.path())).await.unwrap();
    assert_eq!(att.live.len(), 100);
    rt.close(true).await;
    local.close(true).await;
}
