//! Framework executors end to end: the `kvexec` example executor (a WASI 0.2 component) run by
//! a real agent over QUIC, started by its framework's first task, reused by later ones, sent
//! messages both ways, its envelope growing and shrinking with its tasks, and every way it
//! stops (idle, asked, trap, its framework torn down) and a task inside it is killed.

use proto::resources::MIB;
use proto::{
    Digest, ExecutorId, ExecutorInfo, Filters, Offer, Reason, Resources, TaskState, TaskStatus,
};
use sdk::{Event, Scheduler, TaskBuilder};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tessera_tests::*;

/// The executor id every test uses.
const KV: &str = "kv";

/// How long any wait for one event may take.
const WAIT: Duration = Duration::from_secs(60);

/// The `kvexec` component.
fn kvexec() -> Vec<u8> {
    std::fs::read(wasm_examples::executors::KVEXEC_EXECUTOR_PATH).expect("kvexec built")
}

/// `kvexec` as executor [`KV`]: <0.1 cpus, 64 MiB> of its own (its generated table takes about
/// 30 MiB), the agent's default idle timeout and kill grace.
fn kv_info(module: Digest) -> ExecutorInfo {
    ExecutorInfo {
        executor_id: ExecutorId::from(KV),
        name: "kvexec".into(),
        module,
        resources: Resources::new(100, 64 * MIB, 0),
        args: vec![],
        env: vec![],
        idle_timeout_ms: None,
        kill_grace_ms: None,
    }
}

/// A scheduler that keeps what it was offered and a log of everything else it was told, so
/// that waiting for one thing never loses another.
struct Fw {
    sched: Scheduler,
    /// Offers received and not yet used or rescinded.
    offers: Vec<Offer>,
    /// Every other event, in order.
    log: Vec<Event>,
}

impl Fw {
    async fn connect(cluster: &LocalCluster, name: &str) -> Fw {
        let sched = Scheduler::connect(cluster.scheduler_options(name, "*").unwrap())
            .await
            .unwrap();
        Fw {
            sched,
            offers: Vec::new(),
            log: Vec::new(),
        }
    }

    /// Receives one event: offers are held, rescinds drop them, the rest is logged.
    async fn receive(&mut self) {
        let ev = tokio::time::timeout(WAIT, self.sched.next_event())
            .await
            .expect("timed out waiting for an event")
            .expect("scheduler closed");
        match ev {
            Event::Offers(o) => self.offers.extend(o),
            Event::Rescind(id) => self.offers.retain(|o| o.id != id),
            other => self.log.push(other),
        }
    }

    /// The first logged event (past or future) `pick` accepts.
    async fn until<T>(&mut self, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
        let mut seen = 0;
        loop {
            if let Some(t) = self.log[seen..].iter().find_map(&mut pick) {
                return t;
            }
            seen = self.log.len();
            self.receive().await;
        }
    }

    /// The update of `task` reaching `state`.
    async fn state(&mut self, task: &str, state: TaskState) -> TaskStatus {
        self.until(|e| match e {
            Event::Update(s) if s.task_id.as_str() == task && s.state == state => Some(s.clone()),
            _ => None,
        })
        .await
    }

    /// The terminal update of `task`.
    async fn terminal(&mut self, task: &str) -> TaskStatus {
        self.until(|e| match e {
            Event::Update(s) if s.task_id.as_str() == task && s.state.is_terminal() => {
                Some(s.clone())
            }
            _ => None,
        })
        .await
    }

    /// The `ExecutorExited` of executor `eid`: `(failed, message)`.
    async fn exited(&mut self, eid: &str) -> (bool, String) {
        self.until(|e| match e {
            Event::ExecutorExited {
                executor_id,
                failed,
                message,
                ..
            } if executor_id.as_str() == eid => Some((*failed, message.clone())),
            _ => None,
        })
        .await
    }

    /// A held offer (waiting for one if none is held).
    async fn offer(&mut self) -> Offer {
        while self.offers.is_empty() {
            self.receive().await;
        }
        self.offers.remove(0)
    }

    /// Holds back the first offer of at least `r`, declining smaller ones (to be offered again
    /// at once, with more once something ends).
    async fn wait_for_offer_of(&mut self, r: Resources) {
        loop {
            let offer = self.offer().await;
            if offer.resources.contains(&r) {
                self.offers.insert(0, offer);
                return;
            }
            self.sched
                .decline(
                    vec![offer.id],
                    Filters {
                        refuse_seconds: 0.0,
                    },
                )
                .unwrap();
        }
    }

    /// Launches `tasks` on the next offer (the rest of it offered again at once); returns when
    /// the accept was sent.
    async fn launch(&mut self, tasks: Vec<TaskBuilder>) -> (Instant, Offer) {
        let offer = self.offer().await;
        let tasks = tasks.into_iter().map(|t| t.build(&offer)).collect();
        let at = Instant::now();
        self.sched
            .accept(
                vec![offer.id.clone()],
                tasks,
                Filters {
                    refuse_seconds: 0.0,
                },
            )
            .unwrap();
        (at, offer)
    }

    /// A task of `info` with `data`, in `r`.
    fn task(info: &ExecutorInfo, id: &str, data: &str, r: Resources) -> TaskBuilder {
        TaskBuilder::new(id, info.module)
            .executor(info.clone())
            .data(data.as_bytes().to_vec())
            .resources(r)
    }

    fn executor_exits(&self) -> usize {
        self.log
            .iter()
            .filter(|e| matches!(e, Event::ExecutorExited { .. }))
            .count()
    }
}

/// A task's small share.
fn small() -> Resources {
    Resources::new(100, 16 * MIB, 0)
}

/// A cluster with one agent `agent1` of `<2 cpus, 1 GiB>`, a framework, and `kvexec` uploaded.
async fn setup() -> (TempDir, LocalCluster, Fw, Digest) {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_with_agent(dir.path(), "agent1", res(2.0, 1.0)).await;
    let fw = Fw::connect(&cluster, "fw").await;
    let kv = fw.sched.upload_module(&kvexec()).await.unwrap();
    (dir, cluster, fw, kv)
}

/// `<work_dir>/frameworks/<fid>/executors/<eid>` on agent 0.
fn executor_dir(cluster: &LocalCluster, fw: &Fw, eid: &str) -> std::path::PathBuf {
    cluster.agents[0]
        .work_dir
        .join("frameworks")
        .join(fw.sched.framework_id().as_str())
        .join("executors")
        .join(eid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_task_starts_the_executor_and_the_next_reuses_its_state() {
    let (_dir, cluster, mut fw, kv) = setup().await;
    let info = kv_info(kv);
    let files = fw.sched.upload_file(b"query input").await.unwrap();

    // The first query builds the table (costly on purpose).
    let (t0, _) = fw
        .launch(vec![
            Fw::task(&info, "q1", "count", small()).file("in.txt", files)
        ])
        .await;
    let first = fw.terminal("q1").await;
    let first_took = t0.elapsed();
    assert_eq!(first.state, TaskState::Finished, "{first:?}");
    assert_eq!(first.message, "200000");
    // Its files are in the executor's sandbox, under tasks/<tid>/.
    let sandbox = executor_dir(&cluster, &fw, KV).join("sandbox");
    assert_eq!(
        std::fs::read(sandbox.join("tasks/q1/in.txt")).unwrap(),
        b"query input"
    );

    // The second is answered from the table the instance kept.
    let (t1, _) = fw
        .launch(vec![Fw::task(&info, "q2", "get:k7", small())])
        .await;
    let second = fw.terminal("q2").await;
    let second_took = t1.elapsed();
    assert_eq!(second.state, TaskState::Finished, "{second:?}");
    assert_eq!(second.message.len(), 16, "{second:?}");
    let states: Vec<TaskState> = fw
        .log
        .iter()
        .filter_map(|e| match e {
            Event::Update(s) if s.task_id.as_str() == "q2" => Some(s.state),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        [TaskState::Starting, TaskState::Running, TaskState::Finished]
    );
    assert_eq!(fw.executor_exits(), 0, "one instance served both");
    assert!(
        second_took < first_took,
        "a warm query ({second_took:?}) beats the one that started the executor ({first_took:?})"
    );

    // The same query as one-shot tasks (`kvquery` builds the same table per task), in the
    // share the executor had for it (its own and the task's): once to compile the module, then
    // warm. Even warm, each one-shot task pays for the table the executor built once.
    let oneshot = fw
        .sched
        .upload_module(wasm_examples::KVQUERY)
        .await
        .unwrap();
    let share = small() + Resources::new(100, 112 * MIB, 0);
    let mut oneshot_took = Vec::new();
    for id in ["s1", "s2"] {
        let query = TaskBuilder::new(id, oneshot)
            .args(["get:k7"])
            .resources(share);
        let (t, _) = fw.launch(vec![query]).await;
        let done = fw.terminal(id).await;
        oneshot_took.push(t.elapsed());
        assert_eq!(done.state, TaskState::Finished, "{done:?}");
        assert_eq!(
            done.stdout_tail.trim(),
            second.message,
            "same table, same answer"
        );
    }
    assert!(
        second_took < oneshot_took[1],
        "a warm query ({second_took:?}) beats the same work as a warm one-shot task ({:?})",
        oneshot_took[1]
    );
    eprintln!(
        "first query (start + table) {first_took:?}, second (warm) {second_took:?}, one-shot \
         cold {:?}, warm {:?}",
        oneshot_took[0], oneshot_took[1]
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_executor_stops_and_says_so() {
    let (_dir, cluster, mut fw, kv) = setup().await;
    let mut info = kv_info(kv);
    info.idle_timeout_ms = Some(300);
    fw.launch(vec![Fw::task(&info, "q1", "count", small())])
        .await;
    assert_eq!(fw.terminal("q1").await.state, TaskState::Finished);
    let (failed, message) = fw.exited(KV).await;
    assert!(!failed, "{message}");
    // Its charge is free again: a task needing the whole agent fits.
    let hello = fw.sched.upload_module(wasm_examples::HELLO).await.unwrap();
    fw.wait_for_offer_of(res(2.0, 1.0)).await;
    fw.launch(vec![TaskBuilder::new("all", hello).resources(res(2.0, 1.0))])
        .await;
    assert_eq!(fw.terminal("all").await.state, TaskState::Finished);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_tasks_live_at_once_and_messages_go_both_ways() {
    let (_dir, cluster, mut fw, kv) = setup().await;
    let info = kv_info(kv);
    let (_, offer) = fw
        .launch(vec![
            Fw::task(&info, "w1", "wait", small()),
            Fw::task(&info, "w2", "wait", small()),
            Fw::task(&info, "w3", "wait", small()),
        ])
        .await;
    for t in ["w1", "w2", "w3"] {
        fw.state(t, TaskState::Running).await;
    }
    let agent = offer.agent_id.clone();
    fw.sched
        .send_message(agent.clone(), ExecutorId::from(KV), b"hello".to_vec())
        .unwrap();
    let echo = fw
        .until(|e| match e {
            Event::Message {
                agent_id,
                executor_id,
                data,
            } if executor_id.as_str() == KV => Some((agent_id.clone(), data.clone())),
            _ => None,
        })
        .await;
    assert_eq!(echo, (agent.clone(), b"echo:hello".to_vec()));
    // All three are still running: none ended before the release.
    assert!(!fw
        .log
        .iter()
        .any(|e| matches!(e, Event::Update(s) if s.state.is_terminal())));
    fw.sched
        .send_message(agent, ExecutorId::from(KV), b"release".to_vec())
        .unwrap();
    for t in ["w1", "w2", "w3"] {
        let s = fw.terminal(t).await;
        assert_eq!(
            (s.state, s.message.as_str()),
            (TaskState::Finished, "released")
        );
    }
    assert_eq!(fw.executor_exits(), 0);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_envelope_grows_with_a_task_and_bounds_it() {
    let (_dir, cluster, mut fw, kv) = setup().await;
    let info = kv_info(kv);
    // The table first, so that the allocations below are all that grows.
    fw.launch(vec![Fw::task(&info, "load", "count", small())])
        .await;
    assert_eq!(fw.terminal("load").await.state, TaskState::Finished);
    // 100 MiB does not fit the executor's own 64 MiB but fits 64 + 160.
    let share = Resources::new(100, 160 * MIB, 0);
    fw.launch(vec![Fw::task(&info, "a100", "alloc:100", share)])
        .await;
    let s = fw.terminal("a100").await;
    assert_eq!(s.state, TaskState::Finished, "{s:?}");
    // 400 MiB is beyond 64 + 160: refused to the guest, which lives on.
    fw.launch(vec![Fw::task(&info, "a400", "alloc:400", share)])
        .await;
    let s = fw.terminal("a400").await;
    assert_eq!(s.state, TaskState::Failed, "{s:?}");
    assert!(s.message.contains("cannot allocate 400 MiB"), "{s:?}");
    fw.launch(vec![Fw::task(&info, "after", "count", small())])
        .await;
    assert_eq!(fw.terminal("after").await.state, TaskState::Finished);
    assert_eq!(fw.executor_exits(), 0, "the executor lives on");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_executor_fails_its_tasks() {
    let (_dir, cluster, mut fw, kv) = setup().await;
    let info = kv_info(kv);
    fw.launch(vec![Fw::task(&info, "w1", "wait", small())])
        .await;
    fw.state("w1", TaskState::Running).await;
    fw.launch(vec![Fw::task(&info, "boom", "trap", small())])
        .await;
    for t in ["w1", "boom"] {
        let s = fw.terminal(t).await;
        assert_eq!(s.state, TaskState::Failed, "{s:?}");
        assert!(
            matches!(&s.reason, Some(Reason::ExecutorTerminated(d)) if d.contains("unreachable")),
            "{s:?}"
        );
    }
    let (failed, message) = fw.exited(KV).await;
    assert!(failed && message.contains("unreachable"), "{message}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_the_executor_ignores_ends_the_task_after_the_grace() {
    let (_dir, cluster, mut fw, kv) = setup().await;
    let mut info = kv_info(kv);
    info.kill_grace_ms = Some(500);
    fw.launch(vec![
        Fw::task(&info, "polite", "wait", small()),
        Fw::task(&info, "stubborn", "ignore-kill", small()),
    ])
    .await;
    fw.state("polite", TaskState::Running).await;
    fw.state("stubborn", TaskState::Running).await;
    fw.sched.kill("polite".into()).unwrap();
    fw.sched.kill("stubborn".into()).unwrap();
    let polite = fw.terminal("polite").await;
    assert_eq!(
        (polite.state, polite.message.as_str()),
        (TaskState::Killed, "killed on request")
    );
    let stubborn = fw.terminal("stubborn").await;
    assert_eq!(stubborn.state, TaskState::Killed, "{stubborn:?}");
    assert!(
        stubborn
            .message
            .contains("did not answer the kill within the 500 ms grace")
            && stubborn.message.contains("stopped forcibly"),
        "{stubborn:?}"
    );
    // The executor lives on and takes more work.
    fw.launch(vec![Fw::task(&info, "after", "count", small())])
        .await;
    assert_eq!(fw.terminal("after").await.state, TaskState::Finished);
    assert_eq!(fw.executor_exits(), 0);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_shut_down_on_request_kills_its_tasks_without_failing() {
    let (_dir, cluster, mut fw, kv) = setup().await;
    let info = kv_info(kv);
    let (_, offer) = fw
        .launch(vec![Fw::task(&info, "w1", "wait", small())])
        .await;
    fw.state("w1", TaskState::Running).await;
    fw.sched
        .shutdown_executor(offer.agent_id.clone(), ExecutorId::from(KV))
        .unwrap();
    let (failed, message) = fw.exited(KV).await;
    assert!(!failed, "{message}");
    let s = fw.terminal("w1").await;
    assert_eq!(s.state, TaskState::Killed, "{s:?}");
    assert!(
        matches!(s.reason, Some(Reason::ExecutorTerminated(_))),
        "{s:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tearing_down_the_framework_stops_its_executor() {
    let (_dir, cluster, mut fw, kv) = setup().await;
    let info = kv_info(kv);
    fw.launch(vec![Fw::task(&info, "w1", "wait", small())])
        .await;
    fw.state("w1", TaskState::Running).await;
    let stderr = executor_dir(&cluster, &fw, KV).join("stderr");
    fw.sched.teardown().await.unwrap();
    // The shutdown event reached it (kvexec says so on stderr, then returns from its loop).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(&stderr).unwrap_or_default();
        if text.contains("kvexec: shutting down") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "executor never told to shut down: {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Everything is free again on the agent: another framework's task needing all of it runs.
    // (The master frees the executor's charge at the teardown; the agent when the executor has
    // returned from its loop, a little later: a task offered in between is refused.)
    let mut other = Fw::connect(&cluster, "other").await;
    let hello = other
        .sched
        .upload_module(wasm_examples::HELLO)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let id = format!("all{attempt}");
        other.wait_for_offer_of(res(2.0, 1.0)).await;
        other
            .launch(vec![TaskBuilder::new(&id, hello).resources(res(2.0, 1.0))])
            .await;
        let s = other.terminal(&id).await;
        if s.state == TaskState::Finished {
            break;
        }
        // The agent may not have seen the executor exit yet when the offer was made.
        assert_eq!(s.reason, Some(Reason::AgentError), "{s:?}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the executor's share never came back: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_outlives_a_dropped_link_and_is_charged_again() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = fast_config();
    cfg.master.agent_reregister_timeout = Duration::from_secs(30);
    let mut cluster = LocalCluster::start(cfg, dir.path()).await.unwrap();
    let proxy = proxy::UdpProxy::start(cluster.master_addr, proxy::Faults::default(), 5)
        .await
        .unwrap();
    let total = res(2.0, 1.0);
    let opts = cluster
        .agent_options("agent1", total, Some(proxy.addr()))
        .unwrap();
    cluster.spawn_agent(opts);
    let mut fw = Fw::connect(&cluster, "fw").await;
    let info = kv_info(fw.sched.upload_module(&kvexec()).await.unwrap());
    let (_, offer) = fw
        .launch(vec![Fw::task(&info, "w1", "wait", small())])
        .await;
    fw.state("w1", TaskState::Running).await;

    // Cut the link until the master has noticed (it rescinds the agent's offers).
    while fw.offers.is_empty() {
        fw.receive().await;
    }
    proxy.blackhole(true);
    while !fw.offers.is_empty() {
        fw.receive().await;
    }
    proxy.blackhole(false);

    // The agent re-registers with its executor: it still runs the task and answers messages.
    let agent = offer.agent_id.clone();
    loop {
        fw.sched
            .send_message(agent.clone(), ExecutorId::from(KV), b"release".to_vec())
            .unwrap();
        let answered = tokio::time::timeout(Duration::from_millis(500), async {
            fw.until(|e| match e {
                Event::Message { data, .. } if data == b"echo:release" => Some(()),
                _ => None,
            })
            .await
        })
        .await;
        if answered.is_ok() {
            break;
        }
        // Sent before the agent was back (messages are at most once): try again.
    }
    let s = fw.terminal("w1").await;
    assert_eq!(
        (s.state, s.message.as_str()),
        (TaskState::Finished, "released")
    );
    assert_eq!(fw.executor_exits(), 0);
    // The master charges the executor again from the agent's registration: all that is offered
    // is what the executor's own share leaves.
    let left = total - info.resources;
    loop {
        let o = fw.offer().await;
        assert!(
            left.contains(&o.resources),
            "offered {} of {left}",
            o.resources
        );
        if o.resources == left {
            break;
        }
        fw.sched
            .decline(
                vec![o.id],
                Filters {
                    refuse_seconds: 0.0,
                },
            )
            .unwrap();
    }
    cluster.shutdown().await;
}

/// Prints launch latencies side by side: accept → first update of an executor's first task
/// (cold: component compiled; and warm: compiled, new instance), accept → TASK_FINISHED of
/// queries in a warm executor, and of one-shot `hello` tasks. Run with
/// `cargo test -p tessera-tests --release --test e2e executors:: -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn measure_executor_launch_latency() {
    const N: usize = 30;
    let (_dir, cluster, mut fw, kv) = setup().await;
    let hello = fw.sched.upload_module(wasm_examples::HELLO).await.unwrap();

    let first_update = |fw: &Fw, task: &str| {
        fw.log.iter().any(|e| {
            matches!(e, Event::Update(s) if s.task_id.as_str() == task && s.state != TaskState::Starting)
        })
    };
    // Cold: nothing compiled. `exit` does not build the table, so this is start to first update.
    let mut info = kv_info(kv);
    info.executor_id = ExecutorId::from("cold");
    let (t, _) = fw
        .launch(vec![Fw::task(&info, "c1", "exit", small())])
        .await;
    fw.terminal("c1").await;
    let cold = t.elapsed();
    assert!(first_update(&fw, "c1"));
    fw.exited("cold").await;

    // Warm compile, new instance.
    info.executor_id = ExecutorId::from("fresh");
    let (t, _) = fw
        .launch(vec![Fw::task(&info, "f1", "exit", small())])
        .await;
    fw.terminal("f1").await;
    let fresh = t.elapsed();
    fw.exited("fresh").await;

    // Queries in a warm executor (table built by the first).
    info.executor_id = ExecutorId::from(KV);
    fw.launch(vec![Fw::task(&info, "load", "count", small())])
        .await;
    fw.terminal("load").await;
    let mut warm = Vec::new();
    for i in 0..N {
        let id = format!("q{i}");
        let (t, _) = fw
            .launch(vec![Fw::task(&info, &id, &format!("get:k{i}"), small())])
            .await;
        fw.terminal(&id).await;
        warm.push(t.elapsed());
    }

    // One-shot hello (compiled by the first).
    fw.launch(vec![TaskBuilder::new("h", hello)]).await;
    fw.terminal("h").await;
    let mut oneshot = Vec::new();
    for i in 0..N {
        let id = format!("h{i}");
        let (t, _) = fw.launch(vec![TaskBuilder::new(&id, hello)]).await;
        fw.terminal(&id).await;
        oneshot.push(t.elapsed());
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (w, o) = (median(&mut warm), median(&mut oneshot));
    println!("executor start, component not compiled: accept -> first task ended {cold:?}");
    println!("executor start, component compiled:     accept -> first task ended {fresh:?}");
    println!("task in a warm executor (median of {N}): accept -> TASK_FINISHED {w:?}");
    println!("one-shot hello (median of {N}):          accept -> TASK_FINISHED {o:?}");
    println!(
        "warm executor task / one-shot task: {:.2}",
        w.as_secs_f64() / o.as_secs_f64()
    );
    cluster.shutdown().await;
}
