//! The master's web UI in a real headless browser: a local cluster (real agents, real guests) with
//! a running task and finished ones, its page at `/` loaded by Debian's `chromium`, and what a
//! person would see checked in the DOM the page built (agent rows with their hostnames, the running
//! task as RUNNING, then KILLED once killed; a task's own page with its output read through the
//! master (as text: markup it prints stays text); the filters; a standby's page naming the leader).
//! Screenshots are saved under the target dir (`target/tmp/ui/`, paths printed).
//!
//! Chromium runs as `chromium --headless --dump-dom --virtual-time-budget=MS URL`: it loads the
//! page, lets its scripts (and their `/state` polls) run for that much virtual time, and prints
//! the DOM as it then is. Without chromium the test skips with a message, except under
//! `CI=true`, where `.ci/run` installs it and its absence fails the test.

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
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tessera_tests::*;

/// How much virtual time the page gets to load, poll `/state` and draw.
const BUDGET_MS: u32 = 3000;

/// The chromium binary, or `None` (with a message) when there is none; under `CI=true` a
/// missing chromium fails instead.
fn chromium() -> Option<PathBuf> {
    let names = ["chromium", "chromium-browser", "google-chrome"];
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "chromium is not installed (.ci/run installs Debian's chromium)"
        );
        eprintln!("skipping the browser test: no chromium on PATH (apt-get install chromium)");
    }
    found
}

/// Runs headless chromium on `url` with `extra` arguments; returns its stdout.
async fn run_chromium(bin: &Path, url: &str, extra: &[String]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(format!("--virtual-time-budget={BUDGET_MS}"))
    .args(extra)
    .arg(url)
    .stdin(std::process::Stdio::null())
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("chromium did not finish within 120 s")
        .expect("chromium starts");
    assert!(
        out.status.success(),
        "chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The DOM of `url` after the page ran for [`BUDGET_MS`] of virtual time.
async fn dom(bin: &Path, url: &str) -> String {
    run_chromium(bin, url, &["--dump-dom".to_owned()]).await
}

/// Saves a 1280×900 screenshot of `url` as `target/tmp/ui/<name>.png`; returns its path.
async fn screenshot(bin: &Path, url: &str, name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.png"));
    let _ = std::fs::remove_file(&path);
    run_chromium(
        bin,
        url,
        &[
            format!("--screenshot={}", path.display()),
            "--window-size=1280,900".to_owned(),
        ],
    )
    .await;
    let png = std::fs::read(&path).expect("chromium wrote the screenshot");
    assert!(
        png.starts_with(b"\x89PNG"),
        "{} is not a PNG",
        path.display()
    );
    println!("screenshot: {}", path.display());
    path
}

/// The text a person reads in the first element opened by a tag containing `marker` (e.g.
/// `data-task="spin"`): its tags stripped, entities of `<`, `>`, `&` and quotes decoded.
fn text_of(dom: &str, marker: &str) -> Option<String> {
    let at = dom.find(marker)?;
    let open = dom[..at].rfind('<')?;
    let tag: String = dom[open + 1..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    // Its end: the closing tag at the same depth.
    let (opening, close) = (format!("<{tag}"), format!("</{tag}>"));
    let mut depth = 0usize;
    let mut i = open;
    let end = loop {
        let next_open = dom[i + 1..].find(&opening).map(|j| i + 1 + j);
        let next_close = i + 1 + dom[i + 1..].find(&close)?;
        match next_open {
            Some(o) if o < next_close => {
                let after = dom[o + opening.len()..].chars().next();
                if after.is_some_and(|c| !c.is_ascii_alphanumeric()) {
                    depth += 1;
                }
                i = o;
            }
            _ if depth == 0 => break next_close,
            _ => {
                depth -= 1;
                i = next_close;
            }
        }
    };
    let mut text = String::new();
    let mut in_tag = false;
    for c in dom[open..end].chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    let text = text
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    Some(text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// GETs `path` from `addr`: the status code and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, _, body) = get_typed(addr, path).await;
    (status, body)
}

/// GETs `path` from `addr`: the status code, the content type and the body.
async fn get_typed(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri = format!("http://{addr}{path}").parse().unwrap();
    let resp = client.get(uri).await.expect("HTTP request");
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

/// Polls `/state` until `ok` holds (the page reads the same, so it can show it).
async fn state_until(addr: SocketAddr, what: &str, ok: impl Fn(&Value) -> bool) {
    for _ in 0..400 {
        let (code, body) = get(addr, "/state").await;
        if code == 200 && ok(&serde_json::from_str(&body).unwrap()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("/state never showed {what}");
}

/// Waits until offers of both `keep` and `other` came; declines `other`'s for an hour (left for
/// another framework) and returns `keep`'s.
async fn offer_keeping_one(sched: &mut Scheduler, keep: &str, other: &str) -> proto::Offer {
    let mut kept = None;
    let mut declined = false;
    while kept.is_none() || !declined {
        for o in next_offers(sched).await {
            if o.hostname == keep && kept.is_none() {
                kept = Some(o);
            } else if o.hostname == other {
                let refuse = Filters {
                    refuse_seconds: 3600.0,
                };
                sched.decline(vec![o.id.clone()], refuse).unwrap();
                declined = true;
            }
        }
    }
    kept.unwrap()
}

fn task_in(s: &Value, id: &str, state: &str) -> bool {
    s["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["id"] == id && t["state"] == state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_agents_and_tasks_as_they_change() {
    trace();
    let Some(bin) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    // Two roles: `*` (weight 1) and `batch` (weight 2).
    let mut cfg = fast_config();
    cfg.master.roles.insert(
        "batch".into(),
        master::allocator::RoleSpec {
            weight: 2.0,
            ..Default::default()
        },
    );
    let mut cluster = LocalCluster::start(cfg, dir.path()).await.unwrap();
    cluster.add_agent("agent-a.example", res(2.0, 2.0)).unwrap();
    cluster.add_agent("agent-b.example", res(2.0, 2.0)).unwrap();
    let http = cluster.master_http;
    let page = format!("http://{http}/");

    // The page and its assets, with their content types.
    for (path, ty, has) in [
        ("/", "text/html; charset=utf-8", "/ui/app.js"),
        ("/ui/app.js", "text/javascript; charset=utf-8", "/state"),
        ("/ui/style.css", "text/css; charset=utf-8", ".bar"),
    ] {
        let (code, content_type, body) = get_typed(http, path).await;
        assert_eq!((code, content_type.as_str()), (200, ty), "{path}");
        assert!(body.contains(has), "{path}");
    }

    // A sleeping spinner that keeps running, a hello that finishes, one that fails.
    let mut sched = Scheduler::connect(cluster.scheduler_options("analytics", "*").unwrap())
        .await
        .unwrap();
    let offer = offer_keeping_one(&mut sched, "agent-a.example", "agent-b.example").await;
    let spinner = sched.upload_module(wasm_examples::SPINNER).await.unwrap();
    let hello = sched.upload_module(wasm_examples::HELLO).await.unwrap();
    let tasks = vec![
        TaskBuilder::new("spin", spinner)
            .args(["sleep"])
            .resources(res_mib(0.5, 64))
            .build(&offer),
        TaskBuilder::new("hello", hello)
            .args(["from", "the", "<b>browser</b>", "test"])
            .resources(res_mib(0.25, 32))
            .build(&offer),
        TaskBuilder::new("hello-fails", hello)
            .env("EXIT_CODE", "3")
            .resources(res_mib(0.25, 32))
            .build(&offer),
    ];
    sched
        .accept(vec![offer.id.clone()], tasks, Filters::default())
        .unwrap();
    wait_all(
        &mut sched,
        &[
            ("spin", TaskState::Running),
            ("hello", TaskState::Finished),
            ("hello-fails", TaskState::Failed),
        ],
    )
    .await;
    // A second framework, in role batch, with a task on the other agent.
    let mut etl = Scheduler::connect(cluster.scheduler_options("etl", "batch").unwrap())
        .await
        .unwrap();
    let offer = offer_from(&mut etl, "agent-b.example").await;
    run_spinner(&mut etl, &offer, "etl-1", res_mib(1.0, 256)).await;
    state_until(http, "spin running, the hellos ended", |s| {
        task_in(s, "spin", "TASK_RUNNING")
            && task_in(s, "etl-1", "TASK_RUNNING")
            && task_in(s, "hello", "TASK_FINISHED")
            && task_in(s, "hello-fails", "TASK_FAILED")
            && s["agents"].as_array().unwrap().len() == 2
    })
    .await;

    let d = dom(&bin, &page).await;
    for host in ["agent-a.example", "agent-b.example"] {
        let row = text_of(&d, &format!("data-agent=\"{host}\""))
            .unwrap_or_else(|| panic!("no row for agent {host} in:\n{d}"));
        assert!(row.contains(host) && row.contains("connected"), "{row}");
    }
    let a = text_of(&d, "data-agent=\"agent-a.example\"").unwrap();
    assert!(a.contains("0.5 / 2"), "agent-a's cpus used of total: {a}");
    let spin = text_of(&d, "data-task=\"spin\"").expect("a row for spin");
    assert!(spin.starts_with("RUNNING spin"), "{spin}");
    assert!(spin.contains("analytics") && spin.contains("agent-a.example"));
    let hello_row = text_of(&d, "data-task=\"hello\"").expect("a row for hello");
    assert!(hello_row.starts_with("FINISHED hello"), "{hello_row}");
    // Its start and end times are shown (a missing one shows as a dash).
    assert!(!hello_row.contains('—'), "{hello_row}");
    let failed = text_of(&d, "data-task=\"hello-fails\"").expect("a row for hello-fails");
    assert!(failed.starts_with("FAILED hello-fails"), "{failed}");
    let etl_row = text_of(&d, "data-task=\"etl-1\"").expect("a row for etl-1");
    assert!(
        etl_row.starts_with("RUNNING etl-1 etl-1 etl agent-b.example"),
        "{etl_row}"
    );
    // Fair shares, by weight over the roles with frameworks: 1/3 and 2/3.
    let fw = text_of(&d, "data-framework=\"analytics\"").expect("a row for analytics");
    assert!(fw.contains("/ 0.33"), "{fw}");
    let fw = text_of(&d, "data-framework=\"etl\"").expect("a row for etl");
    assert!(fw.contains("batch") && fw.contains("/ 0.67"), "{fw}");
    let role = text_of(&d, "data-role=\"batch\"").expect("a row for role batch");
    assert!(role.starts_with("batch 2 1"), "{role}");
    let totals = text_of(&d, "id=\"totals\"").unwrap();
    assert!(totals.contains("agents 2"), "{totals}");
    assert!(totals.contains("frameworks 2"), "{totals}");
    assert!(totals.contains("tasks live 2"), "{totals}");
    screenshot(&bin, &page, "overview").await;

    // The finished task's own page.
    let d = dom(&bin, &format!("{page}#/tasks/hello")).await;
    let details = text_of(&d, "id=\"task-details\"").expect("task details");
    assert!(details.contains("FINISHED"), "{details}");
    assert!(details.contains("agent-a.example"), "{details}");
    assert!(details.contains("analytics"), "{details}");
    assert!(details.contains("ran for"), "{details}");
    // Its output, read through the master, as text (the `<b>` it printed is not markup).
    let out = text_of(&d, "id=\"stdout\"").expect("stdout");
    assert!(
        out.contains("Hello from Tessera! from the <b>browser</b> test"),
        "{out}"
    );
    assert!(!d.contains("<b>browser</b>"), "output is shown as text");
    let err = text_of(&d, "id=\"stderr\"").expect("stderr");
    assert!(err.contains("hello: this line goes to stderr"), "{err}");
    assert!(
        d.contains("<section id=\"overview\" hidden"),
        "the overview is hidden on a task's page"
    );
    screenshot(&bin, &format!("{page}#/tasks/hello"), "task").await;

    // A running task's page: what it wrote so far.
    let d = dom(&bin, &format!("{page}#/tasks/spin")).await;
    let out = text_of(&d, "id=\"stdout\"").expect("stdout");
    assert!(out.contains("spinner: started (sleep=true)"), "{out}");

    // Killed: the page shows it ended.
    sched.kill("spin".into()).unwrap();
    wait_state(&mut sched, "spin", TaskState::Killed).await;
    state_until(http, "spin killed", |s| task_in(s, "spin", "TASK_KILLED")).await;
    let d = dom(&bin, &page).await;
    let spin = text_of(&d, "data-task=\"spin\"").expect("a row for spin");
    assert!(spin.starts_with("KILLED spin"), "{spin}");
    let totals = text_of(&d, "id=\"totals\"").unwrap();
    assert!(totals.contains("tasks live 1"), "{totals}");

    // The filters, from the page's address: only the failed task.
    let d = dom(&bin, &format!("{page}#/?state=TASK_FAILED")).await;
    assert!(
        d.contains("data-task=\"hello-fails\""),
        "the failed task is listed"
    );
    assert!(
        !d.contains("data-task=\"spin\""),
        "the killed task is filtered out"
    );
    assert!(
        !d.contains("data-task=\"etl-1\""),
        "the running task is filtered out"
    );
    let d = dom(&bin, &format!("{page}#/?state=live")).await;
    assert!(d.contains("data-task=\"etl-1\"") && !d.contains("data-task=\"hello\""));
    let d = dom(&bin, &format!("{page}#/?q=hello")).await;
    assert!(d.contains("data-task=\"hello\"") && d.contains("data-task=\"hello-fails\""));
    assert!(!d.contains("data-task=\"spin\""));
}

/// Starts one of several masters on `coordinator`, with HTTP on loopback: its QUIC and HTTP
/// addresses, and the sender stopping it.
fn start_shared(
    ca: &ClusterCa,
    coordinator: &MemCoordinator,
    dir: &Path,
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

/// Polls `/health` until it says `status` (a standby: with the leader's address).
async fn health_until(http: SocketAddr, status: &str) {
    for _ in 0..200 {
        let (_, body) = get(http, "/health").await;
        let h: Value = serde_json::from_str(&body).unwrap();
        if h["status"] == status && (status != "standby" || !h["leader"].is_null()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{http} never said {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_page_names_the_leader() {
    trace();
    let Some(bin) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ca = ClusterCa::generate("tessera-ui-test").unwrap();
    let coordinator = MemCoordinator::new();
    let (leader, leader_http, _stop_a) = start_shared(&ca, &coordinator, dir.path(), "ma");
    health_until(leader_http, "leader").await;
    let (_b, standby_http, _stop_b) = start_shared(&ca, &coordinator, dir.path(), "mb");
    health_until(standby_http, "standby").await;

    let d = dom(&bin, &format!("http://{standby_http}/")).await;
    let banner = text_of(&d, "id=\"banner\"").expect("a banner");
    assert_eq!(banner, format!("standby, leader is {leader}"));
    assert!(!d.contains("id=\"banner\" class=\"banner\" hidden"), "{d}");
    // The leader's page has no banner and an empty cluster.
    let d = dom(&bin, &format!("http://{leader_http}/")).await;
    assert!(d.contains("hidden") && text_of(&d, "id=\"banner\"").unwrap().is_empty());
    assert!(text_of(&d, "id=\"totals\"").unwrap().contains("agents 0"));
}
