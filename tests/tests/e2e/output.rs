//! Task output and agent metrics read through the master, against a real local cluster (real
//! QUIC, real wasmtime running real guests, real files): a running task's stdout read at
//! offsets while it writes, then after it ends; stderr; length caps; unknown tasks; and the
//! agent's metrics (launches, a module-cache hit, a memory-limit hit) through
//! `/agents/{id}/metrics`, parsed by a Prometheus text parser.

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use proto::{Filters, TaskState};
use sdk::{Scheduler, TaskBuilder};
use std::net::SocketAddr;
use std::time::Duration;
use tessera_tests::*;

/// One HTTP answer: status, the two output headers (when present) and the body.
struct Got {
    status: u16,
    size: Option<u64>,
    ended: Option<bool>,
    body: Vec<u8>,
}

async fn get(addr: SocketAddr, path: &str) -> Got {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri = format!("http://{addr}{path}").parse().unwrap();
    let resp = client.get(uri).await.expect("HTTP request");
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let size = header("x-tessera-output-size").map(|v| v.parse().unwrap());
    let ended = header("x-tessera-task-ended").map(|v| v == "true");
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Got {
        status,
        size,
        ended,
        body,
    }
}

/// Reads `stream` of `task` (must answer 200).
async fn read(addr: SocketAddr, task: &str, stream: &str, query: &str) -> Got {
    let got = get(addr, &format!("/tasks/{task}/output/{stream}?{query}")).await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    got
}

fn ticks(n: u64) -> String {
    (1..=n).map(|i| format!("tick {i}\n")).collect()
}

/// The value of the sample `name` whose labels include `labels`.
fn sample(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
}

/// A local cluster with one agent `agent1` whose ended tasks' sandboxes are kept however full
/// the disk is (headroom 0): a nearly full disk would otherwise collect a task's output the
/// moment its end is acknowledged, before the test reads it.
async fn cluster(dir: &std::path::Path) -> LocalCluster {
    let mut cluster = LocalCluster::start(fast_config(), dir).await.unwrap();
    let mut opts = cluster
        .agent_options("agent1", res(1.0, 1.0), None)
        .unwrap();
    opts.gc = agent::core::GcPolicy {
        delay: Duration::from_secs(3600),
        disk_headroom: 0.0,
    };
    cluster.spawn_agent(opts);
    cluster
}

async fn launch(sched: &mut Scheduler, task: proto::TaskInfo) {
    let offer = offer_from(sched, "agent1").await;
    let mut task = task;
    task.agent_id = offer.agent_id.clone();
    sched
        .accept(vec![offer.id.clone()], vec![task], Filters::default())
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_read_through_the_master_while_written_and_after_the_end() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(dir.path()).await;
    let http = cluster.master_http;
    let mut sched = Scheduler::connect(cluster.scheduler_options("fw", "*").unwrap())
        .await
        .unwrap();
    let fid = sched.framework_id().to_string();
    let ticker = sched.upload_module(wasm_examples::TICKER).await.unwrap();
    const N: u64 = 40;
    let offer = offer_from(&mut sched, "agent1").await;
    let tick = TaskBuilder::new("tick", ticker)
        .resources(res_mib(0.25, 32))
        .args([N.to_string(), "100".to_string()])
        .build(&offer);
    sched
        .accept(vec![offer.id.clone()], vec![tick], Filters::default())
        .unwrap();
    wait_state(&mut sched, "tick", TaskState::Running).await;

    // While it runs: the first lines are there, and the task has not ended.
    let mut first = None;
    for _ in 0..400 {
        let got = read(http, "tick", "stdout", "").await;
        if got.body.len() >= 14 {
            first = Some(got);
            break;
        }
        assert_eq!(got.ended, Some(false), "the ticker ended before it printed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = first.expect("the ticker printed its first lines");
    assert_eq!(first.ended, Some(false), "read while the task runs");
    assert!(first.body.starts_with(b"tick 1\ntick 2\n"));
    assert!(first.size.unwrap() >= first.body.len() as u64);
    // At an offset, with a length: the same bytes (what was written does not change).
    let part = read(http, "tick", "stdout", "offset=7&length=6").await;
    assert_eq!(part.body, b"tick 2");
    let framework_named = read(
        http,
        "tick",
        "stdout",
        &format!("offset=12&framework={fid}"),
    )
    .await;
    assert!(framework_named.body.starts_with(b"2\n"));

    // After the end: everything, and it says the task has ended.
    wait_state(&mut sched, "tick", TaskState::Finished).await;
    let all = read(http, "tick", "stdout", "").await;
    assert_eq!(String::from_utf8(all.body).unwrap(), ticks(N));
    assert_eq!(all.size, Some(ticks(N).len() as u64));
    assert_eq!(all.ended, Some(true));
    let err = read(http, "tick", "stderr", "").await;
    assert_eq!(
        String::from_utf8(err.body).unwrap(),
        "tock 10\ntock 20\ntock 30\ntock 40\nticker: done\n"
    );
    assert_eq!(err.ended, Some(true));
    // Past the end: nothing, with the size.
    let past = read(http, "tick", "stdout", "offset=100000&length=10").await;
    assert!(past.body.is_empty());
    assert_eq!(past.size, Some(ticks(N).len() as u64));
    // A length of zero reads nothing; a huge one is capped (and still returns everything).
    assert!(read(http, "tick", "stdout", "length=0")
        .await
        .body
        .is_empty());
    let capped = read(http, "tick", "stdout", "length=99999999999").await;
    assert_eq!(capped.body.len(), ticks(N).len());

    // What is not there.
    assert_eq!(get(http, "/tasks/nope/output/stdout").await.status, 404);
    assert_eq!(
        get(http, "/tasks/tick/output/stdout?framework=someone-else")
            .await
            .status,
        404
    );
    assert_eq!(get(http, "/tasks/tick/output/stdin").await.status, 400);
    assert_eq!(
        get(http, "/tasks/tick/output/stdout?offset=x").await.status,
        400
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_metrics_through_the_master_count_launches_cache_hits_and_limits() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(dir.path()).await;
    let http = cluster.master_http;
    let mut sched = Scheduler::connect(cluster.scheduler_options("fw", "*").unwrap())
        .await
        .unwrap();
    let ticker = sched.upload_module(wasm_examples::TICKER).await.unwrap();
    let memhog = sched.upload_module(wasm_examples::MEMHOG).await.unwrap();
    let offer = offer_from(&mut sched, "agent1").await;
    let agent_id = offer.agent_id.to_string();
    // One after the other, so each prepare's cache hit or miss is its own.
    let t1 = TaskBuilder::new("t1", ticker)
        .resources(res_mib(0.25, 32))
        .args(["3", "1"])
        .build(&offer);
    sched
        .accept(vec![offer.id.clone()], vec![t1], Filters::default())
        .unwrap();
    wait_state(&mut sched, "t1", TaskState::Finished).await;
    let t2 = TaskBuilder::new("t2", ticker)
        .resources(res_mib(0.25, 32))
        .args(["2", "1"]);
    launch(&mut sched, t2.build(&offer)).await;
    wait_state(&mut sched, "t2", TaskState::Finished).await;
    let hog = TaskBuilder::new("hog", memhog).resources(res_mib(0.25, 32));
    launch(&mut sched, hog.build(&offer)).await;
    let st = wait_terminal(&mut sched, "hog").await;
    assert_eq!(st.state, TaskState::Failed, "{st:?}");
    assert_eq!(st.reason, Some(proto::Reason::MemoryLimit), "{st:?}");

    let got = get(http, &format!("/agents/{agent_id}/metrics")).await;
    let text = String::from_utf8(got.body).unwrap();
    assert_eq!(got.status, 200, "{text}");
    let m = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    assert_eq!(
        sample(&m, "tessera_agent_launches_total", &[]),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(&m, "tessera_agent_module_cache_hits_total", &[]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&m, "tessera_agent_module_cache_misses_total", &[]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&m, "tessera_agent_module_compile_seconds", &[]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&m, "tessera_agent_limit_hits_total", &[("kind", "memory")]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&m, "tessera_agent_limit_hits_total", &[("kind", "timeout")]),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &m,
            "tessera_agent_tasks_ended_total",
            &[("state", "TASK_FINISHED")]
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &m,
            "tessera_agent_tasks_ended_total",
            &[("state", "TASK_FAILED")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&m, "tessera_agent_tasks_running", &[]), Some(0.0));
    // t1 and t2 printed "tick 1\ntick 2\ntick 3\n" and "tick 1\ntick 2\n"; memhog its MiBs.
    assert!(
        sample(
            &m,
            "tessera_agent_output_bytes_total",
            &[("stream", "stdout")]
        )
        .unwrap()
            >= (ticks(3).len() + ticks(2).len()) as f64,
        "{text}"
    );
    assert_eq!(get(http, "/agents/nope/metrics").await.status, 404);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_serves_the_same_metrics_on_its_own_loopback_listener() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(fast_config(), dir.path())
        .await
        .unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut opts = cluster
        .agent_options("agent1", res(1.0, 1.0), None)
        .unwrap();
    opts.http_listen = Some(addr);
    cluster.spawn_agent(opts);
    let mut sched = Scheduler::connect(cluster.scheduler_options("fw", "*").unwrap())
        .await
        .unwrap();
    let ticker = sched.upload_module(wasm_examples::TICKER).await.unwrap();
    let offer = offer_from(&mut sched, "agent1").await;
    let t = TaskBuilder::new("t", ticker)
        .resources(res_mib(0.25, 32))
        .args(["1", "1"])
        .build(&offer);
    sched
        .accept(vec![offer.id.clone()], vec![t], Filters::default())
        .unwrap();
    wait_state(&mut sched, "t", TaskState::Finished).await;
    let got = get(addr, "/metrics").await;
    let text = String::from_utf8(got.body).unwrap();
    assert_eq!(got.status, 200, "{text}");
    let m = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    assert_eq!(
        sample(&m, "tessera_agent_launches_total", &[]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &m,
            "tessera_agent_tasks_ended_total",
            &[("state", "TASK_FINISHED")]
        ),
        Some(1.0),
        "{text}"
    );
    // The same text as through the master.
    let through = get(
        cluster.master_http,
        &format!("/agents/{}/metrics", offer.agent_id),
    )
    .await;
    assert_eq!(String::from_utf8(through.body).unwrap(), text);
    // Off loopback the agent refuses to start its listener.
    let mut opts = cluster
        .agent_options("agent2", res(1.0, 1.0), None)
        .unwrap();
    opts.http_listen = Some("0.0.0.0:0".parse().unwrap());
    let err = agent::driver::run(opts, std::future::pending::<()>())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("loopback"), "{err}");
    cluster.shutdown().await;
}
