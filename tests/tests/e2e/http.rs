//! The master's operator HTTP surface against real clusters: a local cluster with a real agent
//! running real guests, read over real HTTP on loopback (`/health`, `/state` as JSON, `/metrics`
//! through a Prometheus text parser), and two masters on the in-memory coordinator, where the
//! standby says so and refuses `/state`.

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use master::allocator::drf::Drf;
use master::driver::{MasterOptions, MasterServer};
use master::ha::memory::MemCoordinator;
use net::tls::ClusterCa;
use proto::{Filters, TaskState};
use sdk::{Scheduler, TaskBuilder};
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tessera_tests::*;

/// GETs `path` from `addr`: the status code and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri = format!("http://{addr}{path}").parse().unwrap();
    let resp = client.get(uri).await.expect("HTTP request");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// `/state` as JSON (must answer 200).
async fn state(addr: SocketAddr) -> Value {
    let (code, body) = get(addr, "/state").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Polls `/state` (it is cached for a moment) until `ok` holds, and returns it.
async fn state_until(addr: SocketAddr, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        let s = state(addr).await;
        if ok(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("/state never showed {what}: {}", state(addr).await);
}

/// The task `id` in a `/state`.
fn task<'a>(s: &'a Value, id: &str) -> Option<&'a Value> {
    s["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
}

/// `/metrics` parsed by a Prometheus text parser.
async fn metrics(addr: SocketAddr) -> prometheus_parse::Scrape {
    let (code, body) = get(addr, "/metrics").await;
    assert_eq!(code, 200, "{body}");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_and_metrics_follow_real_tasks() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_with_agent(dir.path(), "agent1", res(1.0, 1.0)).await;
    let http = cluster.master_http;
    assert!(http.ip().is_loopback());

    // A single master answers "standby" until its first term has begun (its registry loaded),
    // then "single".
    health_until(http, "single").await;

    // The agent, with its resources.
    let s = state_until(http, "the agent", |s| {
        s["agents"].as_array().unwrap().len() == 1
    })
    .await;
    let agent = &s["agents"][0];
    assert_eq!(agent["hostname"], "agent1");
    assert_eq!(agent["connected"], true);
    assert_eq!(agent["total"]["cpus"], 1.0);
    assert_eq!(agent["total"]["mem_bytes"], 1u64 << 30);
    assert_eq!(s["total"]["cpus"], 1.0);

    // A spinner that keeps running and a hello that finishes.
    let mut sched = Scheduler::connect(cluster.scheduler_options("fw", "*").unwrap())
        .await
        .unwrap();
    let fid = sched.framework_id().to_string();
    let offer = offer_from(&mut sched, "agent1").await;
    let spinner = sched.upload_module(wasm_examples::SPINNER).await.unwrap();
    let hello = sched.upload_module(wasm_examples::HELLO).await.unwrap();
    let spin = TaskBuilder::new("spin", spinner)
        .resources(res_mib(0.5, 64))
        .build(&offer);
    let hi = TaskBuilder::new("hello", hello)
        .resources(res_mib(0.25, 32))
        .build(&offer);
    sched
        .accept(vec![offer.id.clone()], vec![spin, hi], Filters::default())
        .unwrap();
    wait_all(
        &mut sched,
        &[("spin", TaskState::Running), ("hello", TaskState::Finished)],
    )
    .await;

    let s = state_until(http, "spin running and hello finished", |s| {
        task(s, "spin").is_some_and(|t| t["state"] == "TASK_RUNNING")
            && task(s, "hello").is_some_and(|t| t["state"] == "TASK_FINISHED")
    })
    .await;
    let spin = task(&s, "spin").unwrap();
    assert_eq!(spin["agent_id"], offer.agent_id.to_string());
    assert_eq!(spin["framework_id"], fid);
    assert_eq!(spin["resources"]["cpus"], 0.5);
    assert_eq!(spin["resources"]["mem_bytes"], 64u64 << 20);
    assert_eq!(s["agents"][0]["used"]["cpus"], 0.5, "{s}");
    assert_eq!(s["agents"][0]["tasks"], 1);
    let fw = &s["frameworks"][0];
    assert_eq!(fw["id"], fid);
    assert_eq!(fw["name"], "fw");
    assert_eq!(fw["principal"], "fw");
    assert_eq!(fw["role"], "*");
    assert_eq!(fw["connected"], true);
    assert_eq!(fw["tasks_by_state"]["TASK_RUNNING"], 1);
    assert_eq!(fw["tasks_by_state"]["TASK_FINISHED"], 1);
    // Its running task alone is half the cluster's cpus (offers it holds count too).
    assert!(fw["dominant_share"].as_f64().unwrap() >= 0.5, "{fw}");
    let role = s["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "*")
        .expect("the framework's role is listed");
    assert_eq!(role["frameworks"], 1);
    assert_eq!(role["share"], fw["dominant_share"]);

    // The spinner killed: it ends, and the agent is free again.
    sched.kill("spin".into()).unwrap();
    wait_state(&mut sched, "spin", TaskState::Killed).await;
    let s = state_until(http, "spin killed", |s| {
        task(s, "spin").is_some_and(|t| t["state"] == "TASK_KILLED")
    })
    .await;
    assert_eq!(s["agents"][0]["tasks"], 0);
    assert_eq!(s["agents"][0]["used"]["cpus"], 0.0);

    let m = metrics(http).await;
    assert_eq!(
        sample(&m, "tessera_master_tasks", &[("state", "TASK_FINISHED")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "tessera_master_tasks", &[("state", "TASK_KILLED")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "tessera_master_agents_connected", &[]),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "tessera_master_frameworks_connected", &[]),
        Some(1.0)
    );
    assert_eq!(sample(&m, "tessera_master_launches_total", &[]), Some(2.0));
    assert!(sample(&m, "tessera_master_offers_sent_total", &[]).unwrap() >= 1.0);
    // Both tasks were heard running once: two launch latencies.
    assert_eq!(
        sample(&m, "tessera_master_launch_latency_seconds", &[]),
        Some(2.0)
    );
    assert!(sample(&m, "tessera_master_registry_write_seconds", &[]).unwrap() >= 1.0);
    assert!(sample(&m, "tessera_master_allocation_round_seconds", &[]).unwrap() >= 1.0);
    assert_eq!(
        sample(
            &m,
            "tessera_master_agent_cpus_used",
            &[("hostname", "agent1")]
        ),
        Some(0.0)
    );
    assert!(sample(&m, "tessera_master_role_share", &[("role", "*")]).is_some());
    // QUIC path figures per peer, labelled by principal: the agent's and the scheduler's.
    let peers = |name: &str| -> Vec<(String, f64)> {
        m.samples
            .iter()
            .filter(|x| x.metric == name)
            .map(|x| {
                let v = match x.value {
                    prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
                    _ => f64::NAN,
                };
                (x.labels.get("peer").unwrap_or_default().to_owned(), v)
            })
            .collect()
    };
    let rtts = peers("tessera_master_peer_rtt_seconds");
    assert!(
        rtts.iter()
            .any(|(p, v)| p.starts_with("agent/") && *v > 0.0),
        "{rtts:?}"
    );
    let sent = peers("tessera_master_peer_sent_packets");
    assert!(
        sent.iter()
            .any(|(p, v)| p.starts_with("framework/") && *v > 0.0),
        "{sent:?}"
    );
    assert!(!peers("tessera_master_peer_lost_packets").is_empty());
}

/// Starts one of several masters on `coordinator`, with HTTP on loopback: its QUIC and HTTP
/// addresses, and the sender stopping it.
fn start_shared(
    ca: &ClusterCa,
    coordinator: &MemCoordinator,
    dir: &std::path::Path,
    name: &str,
) -> (SocketAddr, SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let cfg = fast_config();
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let mut opts = MasterOptions::new(
        addr,
        ca.cert_pem.clone(),
        ca.issue_master().unwrap(),
        dir.join(name),
    );
    opts.config = cfg.master.clone();
    opts.config.run_id = name.to_owned();
    opts.tuning = cfg.tuning;
    opts.http_listen = Some((Ipv4Addr::LOCALHOST, 0).into());
    let server = MasterServer::bind_shared(
        opts,
        Box::new(Drf::new()),
        Arc::new(coordinator.clone()),
        addr.to_string(),
    )
    .unwrap();
    let http = server.http_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        server
            .run(async {
                let _ = stopped.await;
            })
            .await
            .expect("master failed");
    });
    (addr, http, stop)
}

/// `/health` until its status is `status` (within a minute).
async fn health_until(http: SocketAddr, status: &str) -> Value {
    for _ in 0..1200 {
        let (code, body) = get(http, "/health").await;
        assert_eq!(code, 200);
        let h: Value = serde_json::from_str(&body).unwrap();
        if h["status"] == status && (status != "standby" || !h["leader"].is_null()) {
            return h;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{http} never said {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_says_so_and_refuses_state() {
    trace();
    let dir = tempfile::tempdir().unwrap();
    let ca = ClusterCa::generate("tessera-http-test").unwrap();
    let coordinator = MemCoordinator::new();
    let (a, a_http, _stop_a) = start_shared(&ca, &coordinator, dir.path(), "ma");
    health_until(a_http, "leader").await;
    let (_b, b_http, _stop_b) = start_shared(&ca, &coordinator, dir.path(), "mb");

    let h = health_until(b_http, "standby").await;
    assert_eq!(h["leader"], a.to_string());
    let (code, body) = get(b_http, "/state").await;
    assert_eq!(code, 503, "{body}");
    let refused: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(refused["status"], "standby");
    assert_eq!(refused["leader"], a.to_string());
    // Its metrics still scrape (what its driver recorded).
    metrics(b_http).await;

    // The leader serves its books.
    let s = state(a_http).await;
    assert!(s["agents"].as_array().unwrap().is_empty());
}

/// Sends `method path` with extra headers: the status code and the body.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Empty::new()).unwrap())
        .await
        .expect("HTTP request");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// What a web page the operator happens to open could try against the loopback listener: a
/// cross-site POST (no custom header; or the browser saying it comes from another site) is
/// refused before it reaches the core, and a DNS-rebound name is not answered at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_of_other_sites_cannot_kill_or_read_through_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_with_agent(dir.path(), "agent1", res(1.0, 1.0)).await;
    let http = cluster.master_http;
    // Until its first term has begun, a single master refuses the core's requests (503).
    health_until(http, "single").await;
    let kill = "/tasks/nope/kill";
    let (code, body) = request(http, "POST", kill, &[]).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("x-tessera-request"), "{body}");
    let (code, body) = request(
        http,
        "POST",
        kill,
        &[("x-tessera-request", "1"), ("sec-fetch-site", "cross-site")],
    )
    .await;
    assert_eq!(code, 403, "{body}");
    // The CLI's way: through to the core, which knows no such task.
    let (code, body) = request(http, "POST", kill, &[("x-tessera-request", "1")]).await;
    assert_eq!(code, 404, "{body}");
    // DNS rebinding: a page's own name resolving to 127.0.0.1.
    let (code, body) = request(http, "GET", "/state", &[("host", "evil.example:80")]).await;
    assert_eq!(code, 403, "{body}");
    let (code, _) = request(http, "GET", "/state", &[("host", "localhost")]).await;
    assert_eq!(code, 200);
}
