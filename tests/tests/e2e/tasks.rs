//! Tasks end to end: real guests in wasmtime on an agent reached over QUIC, their output and
//! files on disk, and every way a task can end (exit codes, memory limit, timeout, kill, trap,
//! an invalid module).

use proto::{Digest, Filters, Offer, Reason, TaskState, TaskStatus};
use sdk::{Event, Scheduler, TaskBuilder};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tessera_tests::*;

/// A cluster with one agent `agent1` of `<1 cpu, 1 GiB>`, a subscribed framework and its first
/// offer.
async fn one_agent() -> (TempDir, LocalCluster, Scheduler, Offer) {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(fast_config(), dir.path())
        .await
        .unwrap();
    cluster.add_agent("agent1", res(1.0, 1.0)).unwrap();
    let mut sched = Scheduler::connect(cluster.scheduler_options("fw", "*").unwrap())
        .await
        .unwrap();
    let offer = offer_from(&mut sched, "agent1").await;
    (dir, cluster, sched, offer)
}

/// No refuse filter on the unused rest, so it is offered again at once.
fn no_filter() -> Filters {
    Filters {
        refuse_seconds: 0.0,
    }
}

/// Every update of each of `tasks` up to and including its terminal one, in order (updates of
/// other tasks are dropped).
async fn updates_until_terminal(
    sched: &mut Scheduler,
    tasks: &[&str],
) -> BTreeMap<String, Vec<TaskStatus>> {
    let mut seen: BTreeMap<String, Vec<TaskStatus>> = BTreeMap::new();
    let ended = |seen: &BTreeMap<String, Vec<TaskStatus>>, t: &str| {
        seen.get(t)
            .is_some_and(|v| v.iter().any(|s| s.state.is_terminal()))
    };
    while !tasks.iter().all(|t| ended(&seen, t)) {
        let s = wait_for(sched, Duration::from_secs(30), |e| match e {
            Event::Update(s) if tasks.contains(&s.task_id.as_str()) => Some(s.clone()),
            _ => None,
        })
        .await;
        seen.entry(s.task_id.0.clone()).or_default().push(s);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_finishes_and_exit_codes_pass_through() {
    let (_dir, cluster, mut sched, offer) = one_agent().await;
    let hello = sched.upload_module(wasm_examples::HELLO).await.unwrap();
    let ok = TaskBuilder::new("hello", hello).build(&offer);
    let three = TaskBuilder::new("exit3", hello)
        .env("EXIT_CODE", "3")
        .build(&offer);
    sched
        .accept(vec![offer.id.clone()], vec![ok, three], Filters::default())
        .unwrap();

    // Updates of one task arrive in order, each once.
    let updates = updates_until_terminal(&mut sched, &["hello", "exit3"]).await;
    for task in ["hello", "exit3"] {
        let states: Vec<TaskState> = updates[task].iter().map(|s| s.state).collect();
        let end = if task == "hello" {
            TaskState::Finished
        } else {
            TaskState::Failed
        };
        // TASK_STARTING while the module is fetched and compiled (these are the agent's
        // first tasks); a task whose module is already in place goes straight to RUNNING.
        let rest: Vec<TaskState> = states
            .iter()
            .copied()
            .skip_while(|s| *s == TaskState::Starting)
            .collect();
        assert!(states.len() - rest.len() <= 1, "{task}: {states:?}");
        assert_eq!(rest, [TaskState::Running, end], "{task}");
    }
    let done = updates["hello"].last().unwrap();
    assert_eq!(done.reason, Some(Reason::ExitCode(0)), "{done:?}");
    assert_eq!(done.agent_id.as_ref(), Some(&offer.agent_id));
    assert!(
        done.stdout_tail.contains("Hello from Tessera!"),
        "{:?}",
        done.stdout_tail
    );
    assert!(
        done.stderr_tail.contains("hello: this line goes to stderr"),
        "{:?}",
        done.stderr_tail
    );
    // No files, data sets or disk share: no sandbox, and the output stayed in the agent's
    // memory (read through the master's output endpoint in output.rs): nothing on disk.
    let dir = task_dir(&cluster, 0, sched.framework_id(), "hello");
    assert!(!dir.exists(), "{}", dir.display());

    let failed = updates["exit3"].last().unwrap();
    assert_eq!(failed.reason, Some(Reason::ExitCode(3)));
    assert!(failed.stdout_tail.contains("Hello from Tessera!"));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_files_are_placed_in_a_sandbox_it_cannot_escape() {
    let (_dir, cluster, mut sched, offer) = one_agent().await;
    let files = sched.upload_module(wasm_examples::FILES).await.unwrap();
    let input = sched.upload_file(b"hello sandbox").await.unwrap();
    let nested = sched.upload_file(b"nested input\n").await.unwrap();
    let task = TaskBuilder::new("files", files)
        .file("input.txt", input)
        .file("data/more.txt", nested)
        .build(&offer);
    sched
        .accept(vec![offer.id.clone()], vec![task], Filters::default())
        .unwrap();
    let done = wait_terminal(&mut sched, "files").await;
    assert_eq!(done.state, TaskState::Finished, "{done:?}");
    let out = &done.stdout_tail;
    for line in [
        "input: hello sandbox",
        "write /output.txt: ok",
        "mkdir /sub/dir: ok",
        "ls: data",
        "ls: input.txt",
        "ls: output.txt",
        "ls: sub",
        "escape /../etc/passwd: denied",
        "escape ../etc/passwd: denied",
        "escape /etc/passwd: denied",
    ] {
        assert!(out.contains(line), "missing {line:?} in {out:?}");
    }
    assert!(!out.contains("ALLOWED"), "{out}");

    // What the guest wrote is on the host, inside the task's sandbox directory.
    let sandbox = task_dir(&cluster, 0, sched.framework_id(), "files").join("sandbox");
    let read = |p: &str| std::fs::read_to_string(sandbox.join(p)).unwrap();
    assert_eq!(read("output.txt"), "written by the files guest\n");
    assert_eq!(read("sub/dir/file.txt"), "nested\n");
    assert_eq!(read("input.txt"), "hello sandbox");
    assert_eq!(read("data/more.txt"), "nested input\n");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_fails_the_task_and_the_agent_carries_on() {
    let (_dir, cluster, mut sched, offer) = one_agent().await;
    let memhog = sched.upload_module(wasm_examples::MEMHOG).await.unwrap();
    let task = TaskBuilder::new("memhog", memhog)
        .resources(res_mib(0.5, 32))
        .build(&offer);
    sched
        .accept(vec![offer.id.clone()], vec![task], no_filter())
        .unwrap();
    let failed = wait_terminal(&mut sched, "memhog").await;
    assert_eq!(failed.state, TaskState::Failed, "{failed:?}");
    assert_eq!(failed.reason, Some(Reason::MemoryLimit), "{failed:?}");
    assert!(failed.stdout_tail.contains("memhog: "), "{failed:?}");

    // The same agent runs the next task normally once its share is back.
    let hello = sched.upload_module(wasm_examples::HELLO).await.unwrap();
    // (Any offer of agent1 will do: the rest of the first offer, or memhog's freed share.)
    let offer = offer_from(&mut sched, "agent1").await;
    let task = TaskBuilder::new("after", hello).build(&offer);
    sched
        .accept(vec![offer.id.clone()], vec![task], Filters::default())
        .unwrap();
    let done = wait_terminal(&mut sched, "after").await;
    assert_eq!(done.state, TaskState::Finished, "{done:?}");
    assert!(done.stdout_tail.contains("Hello from Tessera!"));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_and_kill_stop_busy_guests() {
    let (_dir, cluster, mut sched, offer) = one_agent().await;
    let spinner = sched.upload_module(wasm_examples::SPINNER).await.unwrap();
    let deadline = Duration::from_millis(500);
    let timed = TaskBuilder::new("timed", spinner)
        .resources(res_mib(0.4, 64))
        .timeout(deadline)
        .build(&offer);
    let victim = TaskBuilder::new("victim", spinner)
        .resources(res_mib(0.4, 64))
        .build(&offer);
    sched
        .accept(vec![offer.id.clone()], vec![timed, victim], no_filter())
        .unwrap();

    let mut running_at = None;
    let mut timed_out = None;
    let mut killed = None;
    while timed_out.is_none() || killed.is_none() {
        let s = wait_for(&mut sched, Duration::from_secs(30), |e| match e {
            Event::Update(s) => Some(s.clone()),
            _ => None,
        })
        .await;
        match (s.task_id.as_str(), s.state) {
            ("timed", TaskState::Running) => running_at = Some(Instant::now()),
            ("timed", st) if st.is_terminal() => timed_out = Some((s, Instant::now())),
            ("victim", TaskState::Running) => sched.kill("victim".into()).unwrap(),
            ("victim", st) if st.is_terminal() => killed = Some(s),
            _ => {}
        }
    }

    let (timed_out, ended_at) = timed_out.unwrap();
    assert_eq!(timed_out.state, TaskState::Failed, "{timed_out:?}");
    assert_eq!(timed_out.reason, Some(Reason::Timeout), "{timed_out:?}");
    assert!(timed_out.message.contains("500 ms"), "{timed_out:?}");
    let running_at = running_at.expect("RUNNING comes before the terminal update");
    let elapsed = ended_at - running_at;
    tracing::info!(?elapsed, "RUNNING to TASK_FAILED(timeout)");
    // A hang guard, not a performance check: the guest must really be stopped.
    assert!(elapsed < deadline + Duration::from_secs(3), "{elapsed:?}");

    let killed = killed.unwrap();
    assert_eq!(killed.state, TaskState::Killed, "{killed:?}");
    assert_eq!(killed.reason, Some(Reason::Killed));
    assert!(
        killed.stdout_tail.contains("spinner: started"),
        "{killed:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_fails_the_task_with_the_trap_message() {
    let (_dir, cluster, mut sched, offer) = one_agent().await;
    let trap = sched.upload_module(wasm_examples::TRAP).await.unwrap();
    let task = TaskBuilder::new("trap", trap).build(&offer);
    sched
        .accept(vec![offer.id.clone()], vec![task], Filters::default())
        .unwrap();
    let failed = wait_terminal(&mut sched, "trap").await;
    assert_eq!(failed.state, TaskState::Failed, "{failed:?}");
    match &failed.reason {
        Some(Reason::Trap(msg)) => assert!(msg.contains("unreachable"), "{msg:?}"),
        other => panic!("expected a trap, got {other:?}"),
    }
    assert!(
        failed
            .stdout_tail
            .contains("trap: about to execute unreachable"),
        "{failed:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_module_is_refused_and_never_reaches_an_agent() {
    let (_dir, cluster, mut sched, offer) = one_agent().await;
    let garbage = b"this is certainly not a WebAssembly module".as_slice();
    let err = sched.upload_module(garbage).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("WebAssembly"), "{msg}");

    // The same bytes as a plain file are fine, but not as a task's module.
    let as_file = sched.upload_file(b"not wasm either").await.unwrap();
    let never = TaskBuilder::new("never", Digest::of(garbage)).build(&offer);
    let file = TaskBuilder::new("file-module", as_file).build(&offer);
    sched
        .accept(
            vec![offer.id.clone()],
            vec![never, file],
            Filters::default(),
        )
        .unwrap();
    let never = wait_terminal(&mut sched, "never").await;
    assert_eq!(never.state, TaskState::Error, "{never:?}");
    assert_eq!(never.reason, Some(Reason::ModuleInvalid));
    assert!(never.message.contains("not been uploaded"), "{never:?}");
    assert_eq!(never.agent_id, None);
    let file = wait_terminal(&mut sched, "file-module").await;
    assert_eq!(file.state, TaskState::Error, "{file:?}");
    assert_eq!(file.reason, Some(Reason::ModuleInvalid));
    assert!(file.message.contains("not a module"), "{file:?}");

    for t in ["never", "file-module"] {
        let dir = task_dir(&cluster, 0, sched.framework_id(), t);
        assert!(!dir.exists(), "{} exists", dir.display());
    }
    assert!(!cluster.agents[0]
        .work_dir
        .join("blobs")
        .join(Digest::of(garbage).to_hex())
        .exists());
    cluster.shutdown().await;
}
