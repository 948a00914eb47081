//! Shared harness for the end-to-end tests: helpers to wait for scheduler events and to build
//! resources and configs, over the clusters of `tessera-cluster` (re-exported here): the real
//! in-process [`LocalCluster`] (master and agents on loopback QUIC with mutual TLS, wasmtime
//! running the example guests, task files in temporary directories), the lossy-link [`proxy`],
//! and the virtual-time [`sim`].
//!
//! # Layout
//! - this file: tracing for tests, resource shorthands, a fast-timeout cluster config, and
//!   waits on scheduler events (`wait_for`, `wait_state`, `wait_all`, ...).
//! - `tests/e2e/*.rs`: the scenarios, one test binary (real clusters; `simulated_faults.rs` and
//!   `sim_mixed.rs` on the virtual-time one); `tests/abuse.rs` alone, as it measures the process.
//! - `benches/launch.rs`: the launch benchmark.

use proto::resources::{GIB, MIB};
use proto::{Offer, Resources, TaskState, TaskStatus};
use sdk::{Event, Scheduler};
use std::time::Duration;

pub use cluster::{proxy, sim, LocalCluster, LocalClusterConfig};

/// Installs a tracing subscriber writing through the test harness (so output shows with a
/// failing test). Global rather than per-thread, because the cluster's tasks run on the
/// runtime's worker threads.
pub fn trace() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// `<cpus, GiB>` in the seed's notation.
pub fn res(cpus: f64, gib: f64) -> Resources {
    Resources::new((cpus * 1000.0) as u64, (gib * GIB as f64) as u64, 0)
}

/// `<cpus, MiB>`.
pub fn res_mib(cpus: f64, mib: u64) -> Resources {
    Resources::new((cpus * 1000.0) as u64, mib * MIB, 0)
}

/// A cluster config with short timeouts so fault tests run fast.
pub fn fast_config() -> LocalClusterConfig {
    let mut cfg = LocalClusterConfig::default();
    cfg.master.allocation_interval = Duration::from_millis(200);
    cfg.master.agent_reregister_timeout = Duration::from_secs(2);
    cfg.tuning.idle_timeout = Duration::from_secs(2);
    cfg.tuning.keep_alive = Duration::from_millis(300);
    cfg.status_retry = Duration::from_millis(500);
    cfg
}

/// A local cluster under `dir` with [`fast_config`] and one agent `name` offering `r`.
pub async fn cluster_with_agent(dir: &std::path::Path, name: &str, r: Resources) -> LocalCluster {
    let mut cluster = LocalCluster::start(fast_config(), dir).await.unwrap();
    cluster.add_agent(name, r).unwrap();
    cluster
}

/// Uploads the spinner guest and launches it as task `name` in `r` on `offer`; returns once the
/// task runs, with the spinner's digest.
pub async fn run_spinner(
    sched: &mut Scheduler,
    offer: &Offer,
    name: &str,
    r: Resources,
) -> proto::Digest {
    let spinner = sched.upload_module(wasm_examples::SPINNER).await.unwrap();
    let task = sdk::TaskBuilder::new(name, spinner)
        .resources(r)
        .build(offer);
    sched
        .accept(
            vec![offer.id.clone()],
            vec![task],
            proto::Filters::default(),
        )
        .unwrap();
    wait_state(sched, name, TaskState::Running).await;
    spinner
}

/// Waits (up to `within`) for an event `pick` returns `Some` for; other events are skipped.
pub async fn wait_for<T>(
    sched: &mut Scheduler,
    within: Duration,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let ev = tokio::time::timeout_at(deadline, sched.next_event())
            .await
            .expect("timed out waiting for an event")
            .expect("scheduler closed");
        if let Some(t) = pick(&ev) {
            return t;
        }
    }
}

/// Waits for the next batch of offers.
pub async fn next_offers(sched: &mut Scheduler) -> Vec<Offer> {
    wait_for(sched, Duration::from_secs(10), |e| match e {
        Event::Offers(o) => Some(o.clone()),
        _ => None,
    })
    .await
}

/// Waits for an update of `task` reaching `state`.
pub async fn wait_state(sched: &mut Scheduler, task: &str, state: TaskState) -> TaskStatus {
    wait_for(sched, Duration::from_secs(30), |e| match e {
        Event::Update(s) if s.task_id.as_str() == task && s.state == state => Some(s.clone()),
        _ => None,
    })
    .await
}

/// Waits until every `(task, state)` pair has been seen, in any order.
pub async fn wait_all(sched: &mut Scheduler, pairs: &[(&str, TaskState)]) -> Vec<TaskStatus> {
    let mut left: Vec<(String, TaskState)> =
        pairs.iter().map(|(t, s)| (t.to_string(), *s)).collect();
    let mut seen = Vec::new();
    while !left.is_empty() {
        let status = wait_for(sched, Duration::from_secs(30), |e| match e {
            Event::Update(s) => Some(s.clone()),
            _ => None,
        })
        .await;
        if let Some(i) = left
            .iter()
            .position(|(t, st)| status.task_id.as_str() == t && status.state == *st)
        {
            left.remove(i);
            seen.push(status);
        }
    }
    seen
}

/// Waits for the terminal update of `task`.
pub async fn wait_terminal(sched: &mut Scheduler, task: &str) -> TaskStatus {
    wait_for(sched, Duration::from_secs(30), |e| match e {
        Event::Update(s) if s.task_id.as_str() == task && s.state.is_terminal() => Some(s.clone()),
        _ => None,
    })
    .await
}

/// Collects every event for `period` (for asserting that something does *not* happen).
pub async fn events_for(sched: &mut Scheduler, period: Duration) -> Vec<Event> {
    let deadline = tokio::time::Instant::now() + period;
    let mut out = Vec::new();
    while let Ok(ev) = tokio::time::timeout_at(deadline, sched.next_event()).await {
        out.push(ev.expect("scheduler closed"));
    }
    out
}

/// Waits for an offer on the agent named `hostname` (other offers are kept by the framework).
pub async fn offer_from(sched: &mut Scheduler, hostname: &str) -> Offer {
    wait_for(sched, Duration::from_secs(10), |e| match e {
        Event::Offers(o) => o.iter().find(|o| o.hostname == hostname).cloned(),
        _ => None,
    })
    .await
}

/// The directory of a task on an agent: `<work_dir>/frameworks/<fid>/tasks/<tid>`.
pub fn task_dir(
    cluster: &LocalCluster,
    agent: usize,
    framework: &proto::FrameworkId,
    task: &str,
) -> std::path::PathBuf {
    cluster.agents[agent]
        .work_dir
        .join("frameworks")
        .join(framework.as_str())
        .join("tasks")
        .join(task)
}

/// A [`fast_config`] cluster of three agents `data1..3` offering `r` each, agent `i` holding
/// data set `blk-i`: a directory (under `dir`) with one file `part-0` whose contents are
/// returned, by data set name.
pub async fn data_cluster(
    dir: &std::path::Path,
    r: Resources,
) -> (LocalCluster, std::collections::BTreeMap<String, String>) {
    let mut cluster = LocalCluster::start(fast_config(), dir).await.unwrap();
    let mut blocks = std::collections::BTreeMap::new();
    for i in 1..=3 {
        let name = format!("blk-{i}");
        let path = dir.join("datasets").join(&name);
        std::fs::create_dir_all(&path).unwrap();
        let contents = format!("block {i} of the input\nrecord {}\n", i * 111);
        std::fs::write(path.join("part-0"), &contents).unwrap();
        cluster
            .add_agent_with_datasets(&format!("data{i}"), r, vec![(name.clone(), path)])
            .unwrap();
        blocks.insert(name, contents);
    }
    (cluster, blocks)
}

/// Waits until offers from `n` distinct agents have been seen, declining each with a zero
/// refuse filter so that it comes straight back.
pub async fn wait_agents(sched: &mut Scheduler, n: usize) {
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < n {
        for o in next_offers(sched).await {
            seen.insert(o.hostname.clone());
            sched
                .decline(
                    vec![o.id],
                    proto::Filters {
                        refuse_seconds: 0.0,
                    },
                )
                .unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Lossy links everywhere (tests/tests/e2e/lossy.rs): a local cluster whose every peer, agents and
// schedulers alike, dials the master through its own UDP impairment proxy.
// ---------------------------------------------------------------------------------------------

/// 10 % of the datagrams lost in each direction and 100 ms each way (200 ms of round trip):
/// the link of issue 11's all-links test.
pub fn lossy_link() -> proxy::Faults {
    proxy::Faults {
        drop: 0.1,
        delay: Duration::from_millis(100),
        ..proxy::Faults::default()
    }
}

/// A cluster config for links like [`lossy_link`]: the default QUIC timers (which hold at 10 %
/// loss and 300 ms RTT), fast allocation rounds, and status updates resent every second (a few
/// round trips, so a lost one is not waited for long, without flooding the link).
pub fn lossy_config() -> LocalClusterConfig {
    let mut cfg = LocalClusterConfig::default();
    cfg.master.allocation_interval = Duration::from_millis(200);
    cfg.status_retry = Duration::from_secs(1);
    cfg
}

/// A local cluster whose agents and schedulers each reach the master through a proxy of their
/// own, all with the same faults (each proxy seeded differently, so their losses differ).
pub struct LossyCluster {
    /// The cluster.
    pub cluster: LocalCluster,
    /// What every link does to datagrams.
    pub faults: proxy::Faults,
    /// The proxies, kept alive with the cluster (one per agent or scheduler).
    pub proxies: Vec<proxy::UdpProxy>,
    seed: u64,
}

impl LossyCluster {
    /// Starts the master (on loopback, unimpaired: only the links to it are).
    pub async fn start(dir: &std::path::Path, faults: proxy::Faults, seed: u64) -> Self {
        let cluster = LocalCluster::start(lossy_config(), dir).await.unwrap();
        Self {
            cluster,
            faults,
            proxies: Vec::new(),
            seed,
        }
    }

    async fn proxy(&mut self) -> std::net::SocketAddr {
        self.seed += 1;
        let p = proxy::UdpProxy::start(self.cluster.master_addr, self.faults, self.seed)
            .await
            .unwrap();
        let addr = p.addr();
        self.proxies.push(p);
        addr
    }

    /// Adds an agent behind a proxy of its own; returns its index.
    pub async fn add_agent(&mut self, name: &str, r: Resources) -> usize {
        let via = self.proxy().await;
        let opts = self.cluster.agent_options(name, r, Some(via)).unwrap();
        self.cluster.spawn_agent(opts)
    }

    /// Options for a scheduler of framework `name` behind a proxy of its own.
    pub async fn scheduler_options(&mut self, name: &str) -> sdk::SchedulerOptions {
        let via = self.proxy().await;
        let mut opts = self.cluster.scheduler_options(name, "*").unwrap();
        opts.masters = via.into();
        opts
    }

    /// A scheduler of framework `name`, connected and subscribed behind a proxy of its own.
    pub async fn scheduler(&mut self, name: &str) -> Scheduler {
        let opts = self.scheduler_options(name).await;
        Scheduler::connect(opts).await.unwrap()
    }

    /// Datagrams the proxies dropped, of those they received (both directions, all links).
    pub fn dropped(&self) -> (u64, u64) {
        self.proxies.iter().fold((0, 0), |(d, r), p| {
            let s = p.stats();
            (d + s.dropped, r + s.received)
        })
    }
}

/// Adds agent `name` whose link to the master goes through a fault proxy (no faults yet;
/// `seed` drives its randomness), for tests that cut or impair one agent's link. Returns the
/// proxy and the agent's index in the cluster.
pub async fn agent_behind_proxy(
    cluster: &mut LocalCluster,
    name: &str,
    resources: Resources,
    seed: u64,
) -> (proxy::UdpProxy, usize) {
    let proxy = proxy::UdpProxy::start(cluster.master_addr, proxy::Faults::default(), seed)
        .await
        .unwrap();
    let opts = cluster
        .agent_options(name, resources, Some(proxy.addr()))
        .unwrap();
    let i = cluster.spawn_agent(opts);
    (proxy, i)
}

// ---------------------------------------------------------------------------------------------
// Several masters (tests/tests/e2e/follow_leader.rs, cli/tests/e2e/leader.rs): a stand-in for a master
// that does not lead, over real QUIC with the cluster's certificates.
// ---------------------------------------------------------------------------------------------

/// What a [`StandIn`] does with the next `Hello`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StandInMode {
    /// A standby: answer `NotLeader { leader }` (`None`: nobody leads yet) and close with the
    /// not-leader code.
    Standby(Option<String>),
    /// A leader about to step down: answer `HelloAck`, read the peer's first message (an
    /// agent's `Register`, a scheduler's `Subscribe`), answer a `Subscribe` with `Subscribed`
    /// (keeping its framework id, or `stepped-down-fw`) when `answer` is set, then close with
    /// the not-leader code and from then on act as `Standby(Some(leader))`.
    StepDown {
        /// The leader to name afterwards.
        leader: String,
        /// Whether a `Subscribe` is answered before the close.
        answer: bool,
    },
}

/// A stand-in master that does not lead (see [`StandInMode`]): a real QUIC server with the
/// cluster's master certificate, so peers dial it exactly as they dial a real standby. Stops
/// when dropped.
pub struct StandIn {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    mode: std::sync::Arc<std::sync::Mutex<StandInMode>>,
    hellos: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    endpoint: quinn::Endpoint,
    task: tokio::task::JoinHandle<()>,
}

impl StandIn {
    /// Listens on a free loopback port as a master certified by `ca_pem` with `master`.
    pub fn start(ca_pem: &str, master: &net::tls::Identity, mode: StandInMode) -> Self {
        let cfg =
            net::tls::server_config(ca_pem, master, net::tls::TransportTuning::default()).unwrap();
        let endpoint = quinn::Endpoint::server(cfg, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let mode = std::sync::Arc::new(std::sync::Mutex::new(mode));
        let hellos = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (ep, m, h) = (endpoint.clone(), mode.clone(), hellos.clone());
        let task = tokio::spawn(async move {
            while let Some(incoming) = ep.accept().await {
                let (m, h) = (m.clone(), h.clone());
                // One task per connection: an agent and a scheduler may dial at once.
                tokio::spawn(async move {
                    if let Ok(conn) = incoming.await {
                        stand_in_serve(conn, &m, &h).await;
                    }
                });
            }
        });
        Self {
            addr,
            mode,
            hellos,
            endpoint,
            task,
        }
    }

    /// A stand-in for `cluster`'s masters (its CA, a master certificate of its own).
    pub fn for_cluster(cluster: &LocalCluster, mode: StandInMode) -> Self {
        Self::start(
            &cluster.ca.cert_pem,
            &cluster.ca.issue_master().unwrap(),
            mode,
        )
    }

    /// Changes what the next `Hello` gets.
    pub fn set_mode(&self, mode: StandInMode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// `Hello`s received so far.
    pub fn hellos(&self) -> usize {
        self.hellos.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits (a liveness bound, not a timing claim) until `n` `Hello`s have come.
    pub async fn wait_hellos(&self, n: usize) {
        for _ in 0..1200 {
            if self.hellos() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the stand-in saw {} Hellos, not {n}", self.hellos());
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
        self.endpoint.close(0u32.into(), b"stand-in stopped");
    }
}

/// One connection to a [`StandIn`].
async fn stand_in_serve(
    conn: quinn::Connection,
    mode: &std::sync::Mutex<StandInMode>,
    hellos: &std::sync::atomic::AtomicUsize,
) {
    use net::link::NOT_LEADER_CLOSE_CODE;
    use proto::Message;
    let Ok((send, recv)) = conn.accept_bi().await else {
        return;
    };
    let mut send = net::MessageWriter::new(send);
    let mut recv = net::MessageReader::new(recv, proto::frame::DEFAULT_MAX_FRAME);
    let Ok(Some(Message::Hello { .. })) = recv.recv().await else {
        return;
    };
    hellos.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let current = mode.lock().unwrap().clone();
    // Lets what was sent leave before the close, as a real master does.
    async fn deliver_then_close(
        send: &mut net::MessageWriter<quinn::SendStream>,
        conn: &quinn::Connection,
    ) {
        let _ = send.get_mut().finish();
        let _ = tokio::time::timeout(Duration::from_secs(5), send.get_mut().stopped()).await;
        conn.close(NOT_LEADER_CLOSE_CODE.into(), b"not the leader");
    }
    match current {
        StandInMode::Standby(leader) => {
            let _ = send.send(&Message::NotLeader { leader }).await;
            deliver_then_close(&mut send, &conn).await;
        }
        StandInMode::StepDown { leader, answer } => {
            *mode.lock().unwrap() = StandInMode::Standby(Some(leader));
            let _ = send
                .send(&Message::HelloAck {
                    version: proto::messages::PROTOCOL_VERSION,
                })
                .await;
            let first = recv.recv().await;
            match first {
                Ok(Some(Message::Subscribe { framework })) if answer => {
                    let framework_id = framework
                        .id
                        .unwrap_or_else(|| proto::FrameworkId::from("stepped-down-fw"));
                    let _ = send
                        .send(&Message::Subscribed {
                            framework_id,
                            heartbeat_interval_ms: 60_000,
                        })
                        .await;
                    deliver_then_close(&mut send, &conn).await;
                }
                _ => conn.close(NOT_LEADER_CLOSE_CODE.into(), b"stepped down"),
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
}

/// `v` as unsigned LEB128.
fn leb(mut v: u32, out: &mut Vec<u8>) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The sections of a module whose one function, of type `() -> ()`, is exported as `_start`
/// (its code section follows: [`code_section`]).
fn start_only(out: &mut Vec<u8>) {
    section(1, &[1, 0x60, 0, 0], out); // type 0: () -> ()
    section(3, &[1, 0], out); // function 0: type 0
    section(7, &[1, 6, b'_', b's', b't', b'a', b'r', b't', 0, 0], out); // export _start
}

/// The code section of a module's one function: `code` is its body (locals, then operators).
fn code_section(code: &[u8], out: &mut Vec<u8>) {
    let mut body = vec![1];
    leb(code.len() as u32, &mut body);
    body.extend_from_slice(code);
    section(10, &body, out);
}

/// A module section: its id, its size, its body.
fn section(id: u8, body: &[u8], out: &mut Vec<u8>) {
    out.push(id);
    leb(body.len() as u32, out);
    out.extend_from_slice(body);
}

/// A WASI command whose `_start` holds `depth` counted loops, each inside the last, each with
/// a counter of its own: 19 KB of wasm at a depth of a thousand, which Cranelift would take
/// hours to compile (1.2 s at 200, 2.7 s at 250 on the 2-core machine of
/// BENCHMARKS.md), for the tests of the agent's compile limit. `threaded`: the module also
/// imports `wasi::thread-spawn` and has a shared memory, so that the agent's ordinary engine
/// refuses it at once and its threaded modules' engine is the one that compiles it.
pub fn nested_loops_module(depth: u32, threaded: bool) -> Vec<u8> {
    let mut code = Vec::new();
    // Locals: `depth` i32 counters.
    code.push(1);
    leb(depth, &mut code);
    code.push(0x7f);
    for level in 0..depth {
        code.extend_from_slice(&[0x41, 0x01, 0x21]); // i32.const 1; local.set
        leb(level, &mut code);
        code.extend_from_slice(&[0x03, 0x40]); // loop
    }
    for level in (0..depth).rev() {
        code.push(0x20); // local.get
        leb(level, &mut code);
        code.extend_from_slice(&[0x41, 0x7f, 0x6a, 0x22]); // i32.const -1; i32.add; local.tee
        leb(level, &mut code);
        code.extend_from_slice(&[0x0d, 0x00, 0x0b]); // br_if 0; end
    }
    code.push(0x0b);
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    if threaded {
        // Types: () -> (), (i32) -> i32; import wasi::thread-spawn; function 1 of type 0; a
        // shared memory of one page; export `_start` (function 1).
        section(1, &[2, 0x60, 0, 0, 0x60, 1, 0x7f, 1, 0x7f], &mut m);
        let mut import = vec![1, 4];
        import.extend_from_slice(b"wasi");
        import.push(12);
        import.extend_from_slice(b"thread-spawn");
        import.extend_from_slice(&[0, 1]);
        section(2, &import, &mut m);
        section(3, &[1, 0], &mut m);
        section(5, &[1, 0x03, 1, 1], &mut m);
        section(7, &[1, 6, b'_', b's', b't', b'a', b'r', b't', 0, 1], &mut m);
    } else {
        start_only(&mut m);
    }
    code_section(&code, &mut m);
    m
}

/// A WASI command whose `_start` is one straight function of `steps` multiply-adds on an
/// `i64` local (10 bytes of wasm each), for the tests of the agent's compile memory limit:
/// Cranelift's memory grows with a function's length, so a few megabytes of it need hundreds
/// of megabytes to compile, while the module itself is valid and small enough to send.
pub fn long_function_module(steps: u32) -> Vec<u8> {
    let mut code = vec![1, 1, 0x7e]; // one i64 local
    for i in 0..steps {
        code.extend_from_slice(&[0x20, 0, 0x42]); // local.get 0; i64.const
        leb((i % 60) + 3, &mut code);
        // i64.mul; i64.const 7; i64.add; local.set 0
        code.extend_from_slice(&[0x7e, 0x42, 0x07, 0x7c, 0x21, 0]);
    }
    code.push(0x0b);
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    start_only(&mut m);
    code_section(&code, &mut m);
    m
}
