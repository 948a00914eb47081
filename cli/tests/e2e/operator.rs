//! The operator commands against real processes: a master serving HTTPS with client
//! certificates (`--http-tls`), three agents, two frameworks of two tenants (`tessera run` with
//! each tenant's certificate). `tessera agents|frameworks|tasks|top` as tables and JSON, what a
//! tenant sees, and `tessera kill` refused to the other tenant, ambiguous for the operator
//! without `--framework`, done by the owner.

use crate::common::{certs, reserved_port, start_agent, start_master_with, tessera, Reaper};
use serde_json::Value;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

/// Runs an operator command as `who` (a certificate name beside the CA).
fn op(certs: &Path, master: &str, who: &str, args: &[&str]) -> Output {
    tessera()
        .args(args)
        .args(["--master", master])
        .arg("--ca")
        .arg(certs.join("ca.pem"))
        .arg("--cert")
        .arg(certs.join(format!("{who}.pem")))
        .arg("--key")
        .arg(certs.join(format!("{who}-key.pem")))
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn json(o: &Output) -> Value {
    serde_json::from_str(&stdout(o)).unwrap()
}

/// Waits until `f` holds, failing with `what` after a minute.
fn wait(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `tessera run` of the spinner (sleeping) as framework principal `who`.
fn run_spinner(dir: &Path, certs: &Path, master: &str, who: &str) -> Reaper {
    Reaper(
        tessera()
            .arg("run")
            .arg(dir.join("ex/spinner.wasm"))
            .args(["--master", master, "--cpus", "0.5", "--mem", "32MiB"])
            .arg("--ca")
            .arg(certs.join("ca.pem"))
            .arg("--cert")
            .arg(certs.join(format!("{who}.pem")))
            .arg("--key")
            .arg(certs.join(format!("{who}-key.pem")))
            .args(["--", "sleep"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("run-{who}.log"))).unwrap())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn tables_json_tenants_and_kill_on_three_agents_and_two_frameworks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let certs = certs(d, &["a1", "a2", "a3"], &["team-a", "team-b"]);
    let c = certs.to_str().unwrap();
    assert!(tessera()
        .args(["cert", "issue", "operator", "ops", "--dir", c])
        .status()
        .unwrap()
        .success());
    assert!(tessera()
        .args(["examples", "--out"])
        .arg(d.join("ex"))
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success());
    let master = format!("127.0.0.1:{}", reserved_port());
    let _m = start_master_with(d, &certs, &master, &d.join("master.log"), &["--http-tls"]);
    let _agents: Vec<Reaper> = ["a1", "a2", "a3"]
        .iter()
        .map(|a| start_agent(d, &certs, &master, a, "2"))
        .collect();
    wait("three agents", || {
        let o = op(&certs, &master, "ops", &["agents", "--json"]);
        o.status.success() && json(&o).as_array().unwrap().len() == 3
    });
    let _ra = run_spinner(d, &certs, &master, "team-a");
    let _rb = run_spinner(d, &certs, &master, "team-b");
    wait("both spinners running", || {
        let tasks = json(&op(
            &certs,
            &master,
            "ops",
            &["tasks", "--json", "--state", "running"],
        ));
        tasks.as_array().unwrap().len() == 2
    });

    // Agents: three rows, aligned, values from the books.
    let agents = json(&op(&certs, &master, "ops", &["agents", "--json"]));
    let agents = agents.as_array().unwrap();
    let mut hosts: Vec<&str> = agents
        .iter()
        .map(|a| a["hostname"].as_str().unwrap())
        .collect();
    hosts.sort();
    assert_eq!(hosts, ["a1", "a2", "a3"]);
    assert!(agents
        .iter()
        .all(|a| a["total"]["cpus"] == 2.0 && a["connected"] == true));
    let used: f64 = agents
        .iter()
        .map(|a| a["used"]["cpus"].as_f64().unwrap())
        .sum();
    assert_eq!(used, 1.0, "two tasks of 0.5 cpus");
    assert!(agents.iter().all(|a| a["last_seen_ms"].as_u64().is_some()));
    let table = stdout(&op(&certs, &master, "ops", &["agents"]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(
        lines[0].starts_with("ID")
            && lines[0].contains("HOSTNAME")
            && lines[0].contains("LAST SEEN")
    );
    let col = lines[0].find("HOSTNAME").unwrap();
    for l in &lines[1..] {
        assert!(
            ["a1", "a2", "a3"].iter().any(|h| l[col..].starts_with(h)),
            "misaligned: {table}"
        );
        assert!(l.contains("/2"), "cpus used/total: {l}");
    }

    // Frameworks: both, with principals, shares and tasks.
    let fws = json(&op(&certs, &master, "ops", &["frameworks", "--json"]));
    let fws = fws.as_array().unwrap();
    let mut principals: Vec<&str> = fws
        .iter()
        .map(|f| f["principal"].as_str().unwrap())
        .collect();
    principals.sort();
    assert_eq!(principals, ["team-a", "team-b"]);
    for f in fws {
        assert_eq!(f["tasks_by_state"]["TASK_RUNNING"], 1);
        let share = f["dominant_share"].as_f64().unwrap();
        assert!(share > 0.0 && share <= 1.0, "{f}");
        assert!(f["fair_share"].as_f64().unwrap() > 0.0, "{f}");
    }
    let id_of = |p: &str| {
        fws.iter().find(|f| f["principal"] == p).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (fa, fb) = (id_of("team-a"), id_of("team-b"));
    let table = stdout(&op(&certs, &master, "ops", &["frameworks"]));
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(table.contains("team-a") && table.contains("team-b") && table.contains("1 RUNNING"));

    // Tasks: the table, a filter, times.
    let table = stdout(&op(&certs, &master, "ops", &["tasks"]));
    assert!(table.lines().next().unwrap().contains("STATE"));
    assert_eq!(table.matches("RUNNING").count(), 2, "{table}");
    let only_a = json(&op(
        &certs,
        &master,
        "ops",
        &["tasks", "--json", "--framework", &fa],
    ));
    let only_a = only_a.as_array().unwrap();
    assert_eq!(only_a.len(), 1);
    assert!(only_a[0]["started_at_ms"].as_u64().is_some());
    assert!(only_a[0]["ended_at_ms"].is_null());

    // A tenant sees its own frameworks and tasks only, and every agent.
    let seen_by_b = json(&op(&certs, &master, "team-b", &["tasks", "--json"]));
    let seen_by_b = seen_by_b.as_array().unwrap();
    assert_eq!(seen_by_b.len(), 1);
    assert_eq!(seen_by_b[0]["framework_id"], fb.as_str());
    let fws_b = json(&op(&certs, &master, "team-b", &["frameworks", "--json"]));
    assert_eq!(fws_b.as_array().unwrap().len(), 1);
    assert_eq!(
        json(&op(&certs, &master, "team-b", &["agents", "--json"]))
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // top: one view, three agents with bars, both frameworks.
    let screen = stdout(&op(&certs, &master, "ops", &["top", "-n", "1"]));
    assert!(screen.contains("3 agents, 2 frameworks"), "{screen}");
    for h in ["a1", "a2", "a3", "team-"] {
        assert!(screen.contains(h), "{h} missing: {screen}");
    }
    assert!(screen.contains("[#") || screen.contains("[."), "{screen}");

    // Kill: the other tenant is refused, the operator must name the framework (both
    // frameworks have a task `spinner`), the owner kills its own.
    let refused = op(
        &certs,
        &master,
        "team-b",
        &["kill", "spinner", "--framework", &fa],
    );
    assert_eq!(refused.status.code(), Some(77), "{refused:?}");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("not allowed") && err.contains("team-a"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let ambiguous = op(&certs, &master, "ops", &["kill", "spinner"]);
    assert_eq!(ambiguous.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&ambiguous.stderr).contains("several frameworks"));
    let killed = stdout(&op(&certs, &master, "team-a", &["kill", "spinner"]));
    assert!(killed.contains(&fa), "{killed}");
    wait("team-a's task killed", || {
        let t = json(&op(
            &certs,
            &master,
            "ops",
            &["tasks", "--json", "--framework", &fa],
        ));
        t.as_array()
            .unwrap()
            .iter()
            .any(|t| t["state"] == "TASK_KILLED" && t["ended_at_ms"].as_u64().is_some())
    });
    let still = json(&op(
        &certs,
        &master,
        "ops",
        &["tasks", "--json", "--framework", &fb],
    ));
    assert_eq!(
        still[0]["state"], "TASK_RUNNING",
        "the other tenant's task runs on"
    );

    // Without a certificate the HTTPS listener cannot be used; a plain client says so.
    let plain = tessera()
        .args(["agents", "--master", &master])
        .output()
        .unwrap();
    assert!(!plain.status.success());
}
