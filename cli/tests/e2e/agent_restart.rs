//! Agent restarts for real: a `tessera master` and a `tessera agent` (guests in its runtime
//! process), a scheduler in this test process, 100 tasks mixed short and long, and `kill -9`:
//! - of the agent only, while many run: restarted on the same work directory, it reattaches
//!   to its runtime, re-registers under its old id, and every task reaches exactly one
//!   terminal state reflecting what it did (the long ones finish with exit 0 after the
//!   restart), none runs twice, and every update is delivered and acknowledged (the agent's
//!   checkpoint ends with no task left);
//! - of the agent and its runtime: the tasks that ran are reported failed with
//!   `RuntimeLost`, once each;
//! - of the agent while a framework's executor (`kvexec`) has tasks waiting: the instance
//!   and its memory survive (a message after the restart releases the tasks it holds from
//!   before), a later task goes to it, and every update arrives once.
//!
//! And the agent flags `--cpu-quota-cgroup` (paced tasks in cgroups), `--compile-cpu-limit` and
//! `--compile-memory-limit` (a module whose compile would take hours, or more memory than the
//! limit, fails its task at the limit, and the agent goes on running others), through the same
//! harness.
//!
//! The time from starting the new agent process to its re-registration is printed (a
//! measurement, never asserted).

use agent::checkpoint::CheckpointFile;
use proto::resources::MIB;
use proto::{Digest, Filters, Reason, Resources, TaskState, TaskStatus};
use sdk::{Event, Scheduler, SchedulerOptions, TaskBuilder};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::{alive, stat_field, tessera, Reaper};

/// Hang guard for anything that must happen (never a speed assertion).
const SANITY: Duration = Duration::from_secs(180);

/// Rounds of the long tasks: several seconds at their CPU share, so they run across the
/// restart.
const LONG_ROUNDS: &str = "1500";

/// Kills the runtime process of a work directory when dropped (it outlives its agent on
/// purpose).
struct RuntimeReaper(PathBuf);

impl Drop for RuntimeReaper {
    fn drop(&mut self) {
        if let Some(pid) = runtime_pid(&self.0) {
            kill9(pid);
        }
    }
}

fn runtime_pid(work_dir: &Path) -> Option<i32> {
    std::fs::read_to_string(work_dir.join("runtime/lock"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn kill9(pid: i32) {
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
}

/// Fields drop in order: the runtime is killed while its lock file still names it, the
/// directory goes last.
struct Cluster {
    _runtime: RuntimeReaper,
    /// The agent's extra flags.
    extra: Vec<&'static str>,
    ca: PathBuf,
    addr: String,
    agent_dir: PathBuf,
    _master: Reaper,
    agent: Option<Reaper>,
    /// The agent's log lines that matter to the test.
    agent_log: mpsc::Receiver<(Instant, String)>,
    dir: tempfile::TempDir,
}

fn certs(dir: &Path) -> PathBuf {
    let certs = dir.join("certs");
    let c = certs.to_str().unwrap();
    for args in [
        vec!["cert", "ca", "--dir", c],
        vec!["cert", "issue", "master", "--dir", c],
        vec!["cert", "issue", "agent", "worker1", "--dir", c],
        vec!["cert", "issue", "framework", "restarts", "--dir", c],
    ] {
        assert!(tessera().args(&args).status().unwrap().success());
    }
    certs.join("ca.pem")
}

/// Removes ANSI colour sequences from a log line.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn start_agent(
    addr: &str,
    ca: &Path,
    agent_dir: &Path,
    extra: &[&str],
) -> (Reaper, mpsc::Receiver<(Instant, String)>) {
    let mut child = tessera()
        .args(["agent", "--master", addr, "--hostname", "worker1"])
        .args(extra)
        // The disk offered is set, not half the machine's free disk: 100 tasks take 64 MiB each.
        .args(["--cpus", "4", "--mem", "8GiB", "--disk", "8GiB"])
        .args(["--recovery-timeout", "60s"])
        .arg("--work-dir")
        .arg(agent_dir)
        .arg("--ca")
        .arg(ca)
        .env("RUST_LOG", "info,quinn=warn")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).split(b'\n') {
            let Ok(line) = line else { break };
            let line = plain(&String::from_utf8_lossy(&line));
            if line.contains("registered: from start")
                || line.contains("runtime attached")
                || line.contains("not attachable")
                || line.contains("recovering from the checkpoint")
                || line.contains("stopping")
                || line.contains("ERROR")
                // The reason an agent exits with (the binary's edge prints `tessera: <error>`).
                || line.starts_with("tessera:")
                || line.starts_with("Error")
                // A panic (its message and location) or an abort.
                || line.contains("panicked")
                || line.contains("overflowed")
                || line.contains("fatal")
            {
                eprintln!("agent: {line}");
                let _ = tx.send((Instant::now(), line));
            }
        }
    });
    (Reaper(child), rx)
}

fn deploy() -> Cluster {
    deploy_with(&[])
}

fn deploy_with(extra: &[&'static str]) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let ca = certs(dir.path());
    let mut master = Reaper(
        tessera()
            .args(["master", "--listen", "127.0.0.1:0", "--work-dir"])
            .arg(dir.path().join("master"))
            .args(["--allocation-interval", "200ms", "--ca"])
            .arg(&ca)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufReader::new(master.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().rsplit(' ').next().unwrap().to_owned();
    let agent_dir = dir.path().join("worker1");
    let (agent, agent_log) = start_agent(&addr, &ca, &agent_dir, extra);
    Cluster {
        extra: extra.to_vec(),
        _runtime: RuntimeReaper(agent_dir.clone()),
        dir,
        ca,
        addr,
        agent_dir,
        _master: master,
        agent: Some(agent),
        agent_log,
    }
}

impl Cluster {
    async fn scheduler(&self) -> Scheduler {
        let certs = self.dir.path().join("certs");
        let tls = net::tls::PeerTls::from_files(
            &self.ca,
            &certs.join("restarts.pem"),
            &certs.join("restarts-key.pem"),
        )
        .unwrap();
        let opts = SchedulerOptions::new(self.addr.parse().unwrap(), tls, "restarts", "*");
        Scheduler::connect(opts).await.unwrap()
    }

    /// `kill -9` of the agent process.
    fn kill_agent(&mut self) {
        let mut agent = self.agent.take().unwrap();
        agent.0.kill().unwrap();
        agent.0.wait().unwrap();
    }

    /// SIGTERM to the agent; returns its exit status.
    fn stop_agent(&mut self) -> std::process::ExitStatus {
        let mut agent = self.agent.take().unwrap();
        assert!(Command::new("kill")
            .args(["-TERM", &agent.0.id().to_string()])
            .status()
            .unwrap()
            .success());
        let deadline = Instant::now() + SANITY;
        loop {
            if let Some(status) = agent.0.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the agent ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the agent again on the same work directory; returns when it started.
    fn restart_agent(&mut self) -> Instant {
        while self.agent_log.try_recv().is_ok() {}
        let at = Instant::now();
        let (agent, log) = start_agent(&self.addr, &self.ca, &self.agent_dir, &self.extra);
        self.agent = Some(agent);
        self.agent_log = log;
        at
    }

    /// Waits for the agent's log line containing `what`; returns when it was read and the line.
    fn wait_log(&mut self, what: &str) -> (Instant, String) {
        let deadline = Instant::now() + SANITY;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.agent_log.recv_timeout(left) {
                Ok((at, line)) if line.contains(what) => return (at, line),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("no agent log line with {what:?}"),
                // Its stderr closed: the agent exited (its reason, if any, is printed above).
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Its stderr closed; it exits, if it has not yet (a moment to be sure).
                    let agent = self.agent.as_mut().map(|a| &mut a.0);
                    let status = agent.map(|a| {
                        let deadline = Instant::now() + Duration::from_secs(5);
                        loop {
                            match a.try_wait() {
                                Ok(None) if Instant::now() < deadline => {
                                    std::thread::sleep(Duration::from_millis(20))
                                }
                                other => break other,
                            }
                        }
                    });
                    panic!("the agent's stderr closed before it logged {what:?}; exit status: {status:?}")
                }
            }
        }
    }

    /// Waits until the agent's checkpoint holds no task: every update acknowledged.
    async fn wait_all_acknowledged(&self) {
        self.wait_all_acknowledged_but(0).await
    }

    /// Waits until the agent's checkpoint holds at most `live` tasks (live tasks stay in it)
    /// and none of them has an unacknowledged update.
    async fn wait_all_acknowledged_but(&self, live: usize) {
        let file = CheckpointFile::new(self.agent_dir.join("checkpoint"));
        let deadline = Instant::now() + SANITY;
        loop {
            let cp = file.load().unwrap();
            let tasks = cp.as_ref().map_or(0, |cp| cp.core.tasks.len());
            let unacked = cp.as_ref().map_or(0, |cp| {
                cp.core
                    .tasks
                    .iter()
                    .filter(|t| !t.updates.is_empty())
                    .count()
            });
            let left = tasks.saturating_sub(live).max(unacked);
            if left == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{left} tasks still have unacknowledged updates"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Every update of every task, in the order received (the SDK already dropped duplicates).
#[derive(Default)]
struct Seen {
    updates: BTreeMap<String, Vec<TaskStatus>>,
}

impl Seen {
    fn add(&mut self, s: TaskStatus) {
        self.updates
            .entry(s.task_id.as_str().to_owned())
            .or_default()
            .push(s);
    }

    fn count(&self, state: TaskState) -> usize {
        self.updates
            .values()
            .filter(|v| v.iter().any(|s| s.state == state))
            .count()
    }

    fn terminal(&self) -> usize {
        self.updates
            .values()
            .filter(|v| v.iter().any(|s| s.state.is_terminal()))
            .count()
    }
}

/// Feeds updates into `seen` until `done` holds.
async fn until(sched: &mut Scheduler, seen: &mut Seen, what: &str, done: impl Fn(&Seen) -> bool) {
    let deadline = tokio::time::Instant::now() + SANITY;
    while !done(seen) {
        let ev = tokio::time::timeout_at(deadline, sched.next_event())
            .await
            .unwrap_or_else(|_| {
                // How far the tasks got, and the states of a few that got least far.
                let mut states: BTreeMap<String, usize> = BTreeMap::new();
                for v in seen.updates.values() {
                    let names: Vec<&str> = v.iter().map(|s| s.state.name()).collect();
                    *states.entry(names.join(">")).or_default() += 1;
                }
                let behind: Vec<String> = seen
                    .updates
                    .iter()
                    .filter(|(_, v)| !v.iter().any(|s| s.state.is_terminal()))
                    .take(5)
                    .map(|(t, v)| format!("{t}: {:?}", v.last()))
                    .collect();
                panic!(
                    "timed out waiting until {what}: {} tasks seen, by their updates \
                     {states:#?}; not ended, e.g. {behind:#?}",
                    seen.updates.len()
                )
            })
            .expect("scheduler closed");
        if let Event::Update(s) = ev {
            seen.add(s);
        }
    }
}

/// Takes the agent's offer and launches `short` hello tasks and `long` burn tasks on it.
async fn launch(
    sched: &mut Scheduler,
    hello: Digest,
    burn: Digest,
    short: usize,
    long: usize,
    prefix: &str,
) {
    let offer = loop {
        let ev = tokio::time::timeout(SANITY, sched.next_event())
            .await
            .expect("no offer")
            .expect("scheduler closed");
        if let Event::Offers(o) = ev {
            if let Some(o) = o.into_iter().next() {
                break o;
            }
        }
    };
    let share = Resources::new(10, 32 * MIB, 0);
    let mut tasks = Vec::new();
    for i in 0..short {
        tasks.push(
            TaskBuilder::new(&format!("{prefix}short-{i}"), hello)
                .resources(share)
                .build(&offer),
        );
    }
    for i in 0..long {
        tasks.push(
            TaskBuilder::new(&format!("{prefix}long-{i}"), burn)
                .resources(share)
                .args([LONG_ROUNDS])
                .build(&offer),
        );
    }
    sched
        .accept(vec![offer.id.clone()], tasks, Filters::default())
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_agent_keeps_its_tasks_running_and_reports_each_once() {
    let mut c = deploy();
    let mut sched = c.scheduler().await;
    let hello = sched.upload_module(wasm_examples::HELLO).await.unwrap();
    let burn = sched.upload_module(wasm_examples::BURN).await.unwrap();
    let (short, long) = (30, 70);
    launch(&mut sched, hello, burn, short, long, "").await;
    let mut seen = Seen::default();
    until(&mut sched, &mut seen, "every long task runs", |s| {
        s.updates
            .iter()
            .filter(|(t, v)| t.contains("long") && v.iter().any(|u| u.state == TaskState::Running))
            .count()
            == long
    })
    .await;
    let running_at_kill = seen
        .updates
        .values()
        .filter(|v| {
            v.iter().any(|u| u.state == TaskState::Running)
                && !v.iter().any(|u| u.state.is_terminal())
        })
        .count();
    let runtime = runtime_pid(&c.agent_dir).expect("the runtime process runs");
    c.kill_agent();
    assert!(alive(runtime), "the runtime outlives its agent");

    let started = c.restart_agent();
    let (attached, _) = c.wait_log("runtime attached");
    let (registered, line) = c.wait_log("registered: from start");
    assert_eq!(runtime_pid(&c.agent_dir), Some(runtime), "the same runtime");
    println!(
        "agent restart with {} tasks ({} running at the kill): runtime reattached {} ms and \
         re-registered {} ms after the new process started (agent's own count: {})",
        short + long,
        running_at_kill,
        attached.duration_since(started).as_millis(),
        registered.duration_since(started).as_millis(),
        line.split("elapsed_ms=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or("?")
    );

    until(&mut sched, &mut seen, "every task ended", |s| {
        s.terminal() == short + long
    })
    .await;
    // Nothing more comes for any of them.
    let quiet = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Some(ev)) = tokio::time::timeout_at(quiet, sched.next_event()).await {
        if let Event::Update(s) = ev {
            seen.add(s);
        }
    }
    for (task, updates) in &seen.updates {
        let terminal: Vec<&TaskStatus> = updates.iter().filter(|s| s.state.is_terminal()).collect();
        assert_eq!(terminal.len(), 1, "{task}: {updates:?}");
        assert_eq!(
            terminal[0].state,
            TaskState::Finished,
            "{task}: {updates:?}"
        );
        assert_eq!(terminal[0].reason, Some(Reason::ExitCode(0)), "{task}");
        let runs = updates
            .iter()
            .filter(|s| s.state == TaskState::Running)
            .count();
        assert!(runs <= 1, "{task} ran twice: {updates:?}");
        if task.contains("long") {
            assert!(
                terminal[0]
                    .stdout_tail
                    .contains(&format!("rounds={LONG_ROUNDS}")),
                "{task} did all its work: {:?}",
                terminal[0].stdout_tail
            );
        }
    }
    assert_eq!(seen.updates.len(), short + long);
    c.wait_all_acknowledged().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_agent_and_its_runtime_reports_each_task_lost_once() {
    let mut c = deploy();
    let mut sched = c.scheduler().await;
    let hello = sched.upload_module(wasm_examples::HELLO).await.unwrap();
    let burn = sched.upload_module(wasm_examples::BURN).await.unwrap();
    let long = 20;
    launch(&mut sched, hello, burn, 0, long, "doomed-").await;
    let mut seen = Seen::default();
    until(&mut sched, &mut seen, "every task runs", |s| {
        s.count(TaskState::Running) == long
    })
    .await;
    let runtime = runtime_pid(&c.agent_dir).expect("the runtime process runs");
    c.kill_agent();
    kill9(runtime);
    let deadline = Instant::now() + SANITY;
    while alive(runtime) {
        assert!(Instant::now() < deadline, "the runtime survived kill -9");
        std::thread::sleep(Duration::from_millis(20));
    }

    c.restart_agent();
    c.wait_log("registered: from start");
    until(&mut sched, &mut seen, "every task ended", |s| {
        s.terminal() == long
    })
    .await;
    let quiet = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Some(ev)) = tokio::time::timeout_at(quiet, sched.next_event()).await {
        if let Event::Update(s) = ev {
            seen.add(s);
        }
    }
    for (task, updates) in &seen.updates {
        let terminal: Vec<&TaskStatus> = updates.iter().filter(|s| s.state.is_terminal()).collect();
        assert_eq!(terminal.len(), 1, "{task}: {updates:?}");
        assert_eq!(terminal[0].state, TaskState::Failed, "{task}: {updates:?}");
        assert_eq!(terminal[0].reason, Some(Reason::RuntimeLost), "{task}");
    }
    c.wait_all_acknowledged().await;
}

/// Drains the events already coming for a moment, into `seen`.
async fn settle(sched: &mut Scheduler, seen: &mut Seen) {
    let quiet = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Some(ev)) = tokio::time::timeout_at(quiet, sched.next_event()).await {
        if let Event::Update(s) = ev {
            seen.add(s);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_keeps_the_tasks_running_for_the_next_agent_by_default() {
    let mut c = deploy();
    let mut sched = c.scheduler().await;
    let hello = sched.upload_module(wasm_examples::HELLO).await.unwrap();
    let burn = sched.upload_module(wasm_examples::BURN).await.unwrap();
    let long = 5;
    launch(&mut sched, hello, burn, 0, long, "kept-").await;
    let mut seen = Seen::default();
    until(&mut sched, &mut seen, "every task runs", |s| {
        s.count(TaskState::Running) == long
    })
    .await;
    let runtime = runtime_pid(&c.agent_dir).expect("the runtime process runs");
    let status = c.stop_agent();
    assert!(status.success(), "{status:?}");
    assert!(
        alive(runtime),
        "the guests' runtime stays for the next agent"
    );
    assert!(c.agent_dir.join("checkpoint").exists());
    assert_eq!(seen.terminal(), 0, "nothing was killed");

    c.restart_agent();
    c.wait_log("registered: from start");
    until(&mut sched, &mut seen, "every task ended", |s| {
        s.terminal() == long
    })
    .await;
    settle(&mut sched, &mut seen).await;
    for (task, updates) in &seen.updates {
        let terminal: Vec<&TaskStatus> = updates.iter().filter(|s| s.state.is_terminal()).collect();
        assert_eq!(terminal.len(), 1, "{task}: {updates:?}");
        assert_eq!(
            terminal[0].state,
            TaskState::Finished,
            "{task}: {updates:?}"
        );
    }
    c.wait_all_acknowledged().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_kill_tasks_kills_and_reports_them_and_stops_the_runtime() {
    let mut c = deploy_with(&["--on-stop", "kill-tasks"]);
    let mut sched = c.scheduler().await;
    let hello = sched.upload_module(wasm_examples::HELLO).await.unwrap();
    let burn = sched.upload_module(wasm_examples::BURN).await.unwrap();
    let long = 5;
    launch(&mut sched, hello, burn, 0, long, "drained-").await;
    let mut seen = Seen::default();
    until(&mut sched, &mut seen, "every task runs", |s| {
        s.count(TaskState::Running) == long
    })
    .await;
    let runtime = runtime_pid(&c.agent_dir).expect("the runtime process runs");
    let status = c.stop_agent();
    assert!(status.success(), "{status:?}");
    // Reported before the agent exited (it waits for the acknowledgements).
    until(&mut sched, &mut seen, "every task ended", |s| {
        s.terminal() == long
    })
    .await;
    settle(&mut sched, &mut seen).await;
    for (task, updates) in &seen.updates {
        let terminal: Vec<&TaskStatus> = updates.iter().filter(|s| s.state.is_terminal()).collect();
        assert_eq!(terminal.len(), 1, "{task}: {updates:?}");
        assert_eq!(terminal[0].state, TaskState::Killed, "{task}: {updates:?}");
    }
    assert!(
        !c.agent_dir.join("checkpoint").exists(),
        "nothing to recover"
    );
    let deadline = Instant::now() + SANITY;
    while alive(runtime) {
        assert!(
            Instant::now() < deadline,
            "the runtime outlived a kill-tasks stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `kvexec` as an executor of <0.1 cpus, 64 MiB> (its generated table takes about 30 MiB).
fn kv_info(module: Digest) -> proto::ExecutorInfo {
    proto::ExecutorInfo {
        executor_id: proto::ExecutorId::from("kv"),
        name: "kvexec".into(),
        module,
        resources: Resources::new(100, 64 * MIB, 0),
        args: vec![],
        env: vec![],
        idle_timeout_ms: None,
        kill_grace_ms: None,
    }
}

/// What an executor's framework hears, apart from offers.
#[derive(Default)]
struct ExecSeen {
    seen: Seen,
    /// The executor's messages, in order.
    messages: Vec<Vec<u8>>,
    /// `ExecutorExited` events.
    exits: usize,
}

/// Feeds events into `seen` until `done` holds; returns the first offer that came meanwhile
/// if `want_offer` (and waits for one).
async fn exec_until(
    sched: &mut Scheduler,
    seen: &mut ExecSeen,
    what: &str,
    want_offer: bool,
    done: impl Fn(&ExecSeen) -> bool,
) -> Option<proto::Offer> {
    let deadline = tokio::time::Instant::now() + SANITY;
    let mut offer = None;
    while !done(seen) || (want_offer && offer.is_none()) {
        let ev = tokio::time::timeout_at(deadline, sched.next_event())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting until {what}"))
            .expect("scheduler closed");
        match ev {
            Event::Update(s) => seen.seen.add(s),
            Event::Message { data, .. } => seen.messages.push(data),
            Event::ExecutorExited { .. } => seen.exits += 1,
            Event::Offers(o) if want_offer && offer.is_none() => offer = o.into_iter().next(),
            _ => {}
        }
    }
    offer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_agent_keeps_its_executor_and_its_state() {
    let mut c = deploy();
    let mut sched = c.scheduler().await;
    let kv = sched
        .upload_module(&std::fs::read(wasm_examples::executors::KVEXEC_EXECUTOR_PATH).unwrap())
        .await
        .unwrap();
    let info = kv_info(kv);
    let task = |id: &str, offer: &proto::Offer| {
        TaskBuilder::new(id, info.module)
            .executor(info.clone())
            .data(b"wait".to_vec())
            .resources(Resources::new(100, 16 * MIB, 0))
            .build(offer)
    };
    let mut seen = ExecSeen::default();
    let offer = exec_until(&mut sched, &mut seen, "an offer", true, |_| true)
        .await
        .unwrap();
    let agent_id = offer.agent_id.clone();
    let filters = Filters {
        refuse_seconds: 0.0,
    };
    sched
        .accept(
            vec![offer.id.clone()],
            vec![task("w1", &offer), task("w2", &offer)],
            filters,
        )
        .unwrap();
    let running = |s: &ExecSeen, ids: &[&str]| {
        ids.iter().all(|t| {
            s.seen
                .updates
                .get(*t)
                .is_some_and(|v| v.iter().any(|u| u.state == TaskState::Running))
        })
    };
    exec_until(&mut sched, &mut seen, "w1 and w2 run", false, |s| {
        running(s, &["w1", "w2"])
    })
    .await;
    c.wait_all_acknowledged_but(2).await;

    let runtime = runtime_pid(&c.agent_dir).expect("the runtime process runs");
    c.kill_agent();
    assert!(alive(runtime), "the runtime outlives its agent");
    c.restart_agent();
    c.wait_log("registered: from start");
    assert_eq!(runtime_pid(&c.agent_dir), Some(runtime), "the same runtime");

    // A task launched after the restart goes to the same instance.
    let offer = exec_until(
        &mut sched,
        &mut seen,
        "an offer after the restart",
        true,
        |_| true,
    )
    .await
    .unwrap();
    sched
        .accept(vec![offer.id.clone()], vec![task("w3", &offer)], filters)
        .unwrap();
    exec_until(&mut sched, &mut seen, "w3 runs", false, |s| {
        running(s, &["w3"])
    })
    .await;
    // One release finishes the two tasks waiting since before the kill (the instance's memory
    // kept them) and the new one.
    sched
        .send_message(agent_id, proto::ExecutorId::from("kv"), b"release".to_vec())
        .unwrap();
    exec_until(&mut sched, &mut seen, "every task ended", false, |s| {
        s.seen.terminal() == 3 && !s.messages.is_empty()
    })
    .await;
    // Nothing more comes.
    let quiet = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Some(ev)) = tokio::time::timeout_at(quiet, sched.next_event()).await {
        match ev {
            Event::Update(s) => seen.seen.add(s),
            Event::Message { data, .. } => seen.messages.push(data),
            Event::ExecutorExited { .. } => seen.exits += 1,
            _ => {}
        }
    }
    for t in ["w1", "w2", "w3"] {
        let updates = &seen.seen.updates[t];
        let states: Vec<TaskState> = updates.iter().map(|u| u.state).collect();
        assert_eq!(
            states,
            vec![TaskState::Starting, TaskState::Running, TaskState::Finished],
            "{t}: {updates:?}"
        );
        assert_eq!(updates[2].message, "released", "{t}");
    }
    assert_eq!(seen.messages, vec![b"echo:release".to_vec()]);
    assert_eq!(seen.exits, 0, "the executor never exited");
    c.wait_all_acknowledged().await;
}

/// `tessera agent --cpu-quota-cgroup DIR` (the harness here starts real agents with extra
/// flags): the flag reaches the runtime process's executor, each paced task (CPU-bound, so it
/// overdraws its share and moves) runs in a cgroup of its own under `DIR` with its share as the
/// CFS quota (0.01 cpus: 1 ms per 100 ms) and a thread in it, and the groups are gone once the
/// tasks are killed. Needs the cgroup v1 cpu
/// controller (root); without it the test says so and passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_cpu_quota_cgroup_paced_tasks_run_under_kernel_quotas() {
    let parent = PathBuf::from(format!(
        "/sys/fs/cgroup/cpu/tessera-agent-quota-{}",
        std::process::id()
    ));
    if let Err(e) = std::fs::create_dir(&parent) {
        eprintln!("no cpu controller to test with ({}: {e})", parent.display());
        return;
    }
    let flag: &'static str = Box::leak(parent.display().to_string().into_boxed_str());
    let c = deploy_with(&["--cpu-quota-cgroup", flag]);
    let mut sched = c.scheduler().await;
    let hello = sched.upload_module(wasm_examples::HELLO).await.unwrap();
    let burn = sched.upload_module(wasm_examples::BURN).await.unwrap();
    let paced = 3;
    launch(&mut sched, hello, burn, 0, paced, "paced-").await;
    let mut seen = Seen::default();
    until(&mut sched, &mut seen, "every task runs", |s| {
        s.count(TaskState::Running) == paced
    })
    .await;
    let groups = |parent: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(parent)
            .map(|d| {
                d.map(|e| e.unwrap().path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default()
    };
    // The tasks are CPU-bound: each moves under its quota at its first overdraft, within a
    // period or so of its start (the group is made, then the thread joins and sets the quota).
    let settled = |g: &PathBuf| {
        let quota = std::fs::read_to_string(g.join("cpu.cfs_quota_us")).unwrap_or_default();
        let threads = std::fs::read_to_string(g.join("tasks")).unwrap_or_default();
        quota.trim() == "1000" && !threads.trim().is_empty()
    };
    let deadline = Instant::now() + SANITY;
    loop {
        let running = groups(&parent);
        if running.len() == paced && running.iter().all(settled) {
            break;
        }
        let states: Vec<(PathBuf, String)> = running
            .iter()
            .map(|g| {
                let q = std::fs::read_to_string(g.join("cpu.cfs_quota_us")).unwrap_or_default();
                (g.clone(), q.trim().to_owned())
            })
            .collect();
        assert!(
            Instant::now() < deadline,
            "not {paced} groups each with a thread and a 1,000 us quota: {states:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let ids: Vec<String> = seen.updates.keys().cloned().collect();
    for id in ids {
        sched.kill(proto::TaskId::from(id.as_str())).unwrap();
    }
    until(&mut sched, &mut seen, "every task ended", |s| {
        s.terminal() == paced
    })
    .await;
    let deadline = Instant::now() + SANITY;
    while !groups(&parent).is_empty() {
        assert!(
            Instant::now() < deadline,
            "groups left: {:?}",
            groups(&parent)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The agent and its runtime go with the cluster; then the parent, once the threads that
    // left their groups for it have ended.
    drop(sched);
    drop(c);
    let deadline = Instant::now() + SANITY;
    while let Err(e) = std::fs::remove_dir(&parent) {
        assert!(Instant::now() < deadline, "{}: {e}", parent.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `modules` one task after another on the cluster's agent, each on an offer as it comes;
/// returns every task's updates (tasks `task-0`, `task-1`, ... in order).
async fn run_one_by_one(sched: &mut Scheduler, modules: &[Digest]) -> Seen {
    let mut seen = Seen::default();
    for (i, module) in modules.iter().enumerate() {
        launch_on_next_offer(sched, &mut seen, &format!("task-{i}"), *module).await;
        until(sched, &mut seen, "the task ends", |s| s.terminal() == i + 1).await;
    }
    seen
}

/// Launches task `name` of `module` (0.1 cpus, 64 MiB) on the next offer, feeding the updates
/// seen meanwhile into `seen`.
async fn launch_on_next_offer(sched: &mut Scheduler, seen: &mut Seen, name: &str, module: Digest) {
    let offer = loop {
        let ev = tokio::time::timeout(SANITY, sched.next_event())
            .await
            .expect("no offer")
            .expect("scheduler closed");
        match ev {
            Event::Offers(o) if !o.is_empty() => break o.into_iter().next().unwrap(),
            Event::Update(s) => seen.add(s),
            _ => {}
        }
    };
    let task = TaskBuilder::new(name, module)
        .resources(Resources::new(100, 64 * MIB, 0))
        .build(&offer);
    sched
        .accept(vec![offer.id.clone()], vec![task], Filters::default())
        .unwrap();
}

/// The live `compile` children of process `parent`, by pid.
fn compile_children(parent: i32) -> Vec<i32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|p| p.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            stat_field(pid, 4) == Some(parent.to_string())
                && alive(pid)
                && cmdline.split(|&b| b == 0).any(|a| a == b"compile")
        })
        .collect()
}

/// Whether the runtime's log says a compile was stopped because no task waited for it (a
/// compile that ends otherwise, at its memory limit say, logs another reason).
fn runtime_stopped_a_compile(agent_dir: &Path) -> bool {
    std::fs::read_to_string(agent_dir.join("runtime/runtime.log"))
        .unwrap_or_default()
        .contains("compile stopped: no task waits for it any more")
}

/// Polls `cond` every 20 ms until it holds, for at most [`SANITY`].
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + SANITY;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks that task `finished` finished and every other task of `seen` failed with a reason
/// that contains `why`.
fn failed_saying(seen: &Seen, finished: &str, why: &str) {
    for (task, updates) in &seen.updates {
        let end = updates.iter().find(|u| u.state.is_terminal()).unwrap();
        if task == finished {
            assert_eq!(end.state, TaskState::Finished, "{updates:?}");
            continue;
        }
        assert_eq!(end.state, TaskState::Failed, "{task}: {updates:?}");
        let said = format!("{:?} {:?}", end.reason, end.message);
        assert!(said.contains(why), "{task}: {said}");
    }
}

/// A cluster whose agent takes `extra`, a scheduler, and the uploaded digests of a module
/// Cranelift would compile for hours (1,000 nested loops) and of `hello`.
async fn deploy_deep_and_hello(extra: &[&'static str]) -> (Cluster, Scheduler, Digest, Digest) {
    let c = deploy_with(extra);
    let sched = c.scheduler().await;
    let deep = sched
        .upload_module(&tessera_tests::nested_loops_module(1000, false))
        .await
        .unwrap();
    let hello = sched.upload_module(wasm_examples::HELLO).await.unwrap();
    (c, sched, deep, hello)
}

/// `tessera agent --compile-cpu-limit 1s`: a module that Cranelift would compile for hours
/// (1,000 nested loops) is compiled in a `tessera compile` child the kernel stops at one
/// second of CPU, and its task fails with a reason that says so; a second task of the same
/// module fails at once (the module is remembered as refused), and `hello` runs after both on
/// the same agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_compile_cpu_limit_a_module_that_compiles_for_hours_fails_its_task_saying_so() {
    let (_c, mut sched, deep, hello) = deploy_deep_and_hello(&["--compile-cpu-limit", "1s"]).await;
    let seen = run_one_by_one(&mut sched, &[deep, deep, hello]).await;
    failed_saying(&seen, "task-2", "CPU-time limit of 1 s");
}

/// Deploys with a compile limit of ten minutes of CPU, launches task `deep` of a module
/// Cranelift would compile for hours, and waits until the runtime's `tessera compile` child
/// compiles it: the cluster, the scheduler, what it has seen, `hello`'s digest, the runtime's
/// pid and the child's.
async fn compiling_deep() -> (Cluster, Scheduler, Seen, Digest, i32, Vec<i32>) {
    let (c, mut sched, deep, hello) = deploy_deep_and_hello(&["--compile-cpu-limit", "600s"]).await;
    let mut seen = Seen::default();
    launch_on_next_offer(&mut sched, &mut seen, "deep", deep).await;
    let runtime = runtime_pid(&c.agent_dir).expect("the runtime process runs");
    eventually("the module compiles", || {
        compile_children(runtime).len() == 1
    })
    .await;
    let compile = compile_children(runtime);
    (c, sched, seen, hello, runtime, compile)
}

/// Kills task `deep`, checks that it ends killed, and waits until its compile is stopped for
/// want of a task (the child gone, and the runtime's log saying why).
async fn kill_deep_and_see_its_compile_stop(
    c: &Cluster,
    sched: &mut Scheduler,
    seen: &mut Seen,
    runtime: i32,
) {
    sched.kill("deep".into()).unwrap();
    until(sched, seen, "the task ends", |s| s.terminal() == 1).await;
    let end = seen.updates["deep"].last().unwrap();
    assert_eq!(
        (end.state, end.reason.clone()),
        (TaskState::Killed, Some(Reason::Killed)),
        "{end:?}"
    );
    eventually("the compile is stopped", || {
        compile_children(runtime).is_empty() && runtime_stopped_a_compile(&c.agent_dir)
    })
    .await;
}

/// A task killed while its module compiles ends `TASK_KILLED` at once, not when its compile
/// would, and the compile is stopped: the runtime's `tessera compile` child goes away. `hello`
/// runs after it on the same agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_killed_while_its_module_compiles_ends_at_once_and_its_compile_stops() {
    let (c, mut sched, mut seen, hello, runtime, _) = compiling_deep().await;
    kill_deep_and_see_its_compile_stop(&c, &mut sched, &mut seen, runtime).await;
    launch_on_next_offer(&mut sched, &mut seen, "hello", hello).await;
    until(&mut sched, &mut seen, "hello ends", |s| s.terminal() == 2).await;
    let end = seen.updates["hello"].last().unwrap();
    assert_eq!(end.state, TaskState::Finished, "{end:?}");
}

/// A task whose module compiles when the agent is killed (`kill -9`) and started again: the
/// new agent prepares it again, joining the compile the first one started (the same child
/// runs past the time the runtime keeps the first agent's prepare), and a kill of the task
/// then stops that compile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_after_an_agent_restart_stops_the_compile_the_first_agent_started() {
    let (mut c, mut sched, mut seen, _, runtime, compile) = compiling_deep().await;
    c.kill_agent();
    c.restart_agent();
    c.wait_log("registered: from start");
    assert_eq!(runtime_pid(&c.agent_dir), Some(runtime), "the same runtime");
    // Past the 15 s the runtime keeps the first agent's prepares: the compile goes on for the
    // new agent's.
    tokio::time::sleep(Duration::from_secs(17)).await;
    assert_eq!(
        compile_children(runtime),
        compile,
        "the same compile goes on"
    );
    kill_deep_and_see_its_compile_stop(&c, &mut sched, &mut seen, runtime).await;
}

/// `tessera agent --compile-memory-limit 256MiB`: a module whose compile needs more than 384 MiB
/// (one straight function of 3.0 MB of wasm) fails its task saying it needed more than the
/// limit, a second task of it fails at once, and `hello` runs after both on the same agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_compile_memory_limit_a_module_that_needs_more_fails_its_task_saying_so() {
    let c = deploy_with(&["--compile-memory-limit", "256MiB"]);
    let mut sched = c.scheduler().await;
    let long = sched
        .upload_module(&tessera_tests::long_function_module(300_000))
        .await
        .unwrap();
    let hello = sched.upload_module(wasm_examples::HELLO).await.unwrap();
    let seen = run_one_by_one(&mut sched, &[long, long, hello]).await;
    failed_saying(&seen, "task-2", "memory limit of 256 MiB");
}
