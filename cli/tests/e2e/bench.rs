//! `tessera bench --json` from the real binary: a small run on a real local cluster, every
//! documented field present and consistent with the plan and with itself (no timing
//! thresholds: only counts, orderings and the ratios' arithmetic).

use serde_json::Value;

fn f(v: &Value, path: &str) -> f64 {
    let mut cur = v;
    for key in path.split('.') {
        cur = &cur[key];
    }
    cur.as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number: {cur}"))
}

#[test]
fn bench_json_reports_latency_throughput_and_ratios() {
    let dir = tempfile::tempdir().unwrap();
    let out = crate::common::tessera()
        .args(["bench", "--quick", "--json", "--latency-tasks", "12"])
        .args(["--throughput-tasks", "90", "--rounds", "2", "--work-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tessera bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");
    assert_eq!(r["version"], 1);
    assert_eq!(f(&r, "plan.latency_tasks"), 12.0);
    assert_eq!(f(&r, "plan.throughput_tasks"), 90.0);
    assert_eq!(f(&r, "plan.agents"), 3.0);
    assert_eq!(
        r["machine"]["work_dir"].as_str(),
        dir.path().to_str(),
        "the work dir asked for"
    );
    assert!(r["machine"]["fs_type"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    assert_eq!(r["machine"]["build"], "debug");
    for name in [
        "accept_to_running",
        "accept_to_finished",
        "offer_wait",
        "cycle",
        "fork_exec",
        "floor",
    ] {
        let s = &r["latency"][name];
        assert_eq!(s["n"], 12, "{name}: one sample per sequential task");
        let (min, p50, p99, max) = (
            f(s, "min_ms"),
            f(s, "p50_ms"),
            f(s, "p99_ms"),
            f(s, "max_ms"),
        );
        assert!(min > 0.0 || name == "offer_wait", "{name}: {s}");
        assert!(min <= p50 && p50 <= p99 && p99 <= max, "{name}: {s}");
    }
    assert_eq!(r["latency"]["first_run"]["n"], 3, "one cold run per agent");
    assert_eq!(r["latency"]["queued"]["n"], 180, "every throughput task");
    assert!(
        f(&r, "latency.accept_to_running.p50_ms") <= f(&r, "latency.accept_to_finished.p50_ms")
    );
    let ratio = f(&r, "ratios.tessera_vs_fork_exec.p50");
    let expect = f(&r, "latency.accept_to_finished.p50_ms") / f(&r, "latency.fork_exec.p50_ms");
    assert!((ratio - expect).abs() < 1e-9, "{ratio} vs {expect}");
    let ratio = f(&r, "ratios.tessera_vs_floor.p99");
    let expect = f(&r, "latency.accept_to_finished.p99_ms") / f(&r, "latency.floor.p99_ms");
    assert!((ratio - expect).abs() < 1e-9, "{ratio} vs {expect}");
    let t = &r["throughput"];
    assert_eq!(t["rounds"].as_array().map(Vec::len), Some(2));
    for round in t["rounds"].as_array().unwrap() {
        for field in [
            "tessera_per_s",
            "fork_exec_seq_per_s",
            "fork_exec_x2_per_s",
            "floor_x2_per_s",
        ] {
            assert!(f(round, field) > 0.0, "{field}: {round}");
        }
        assert!(f(round, "max_in_flight") <= 90.0 && f(round, "accepts") >= 1.0);
    }
    let vs = f(t, "vs_fork_exec_seq");
    let expect = f(t, "median.tessera_per_s") / f(t, "median.fork_exec_seq_per_s");
    assert!((vs - expect).abs() < 1e-9, "{vs} vs {expect}");
    assert!(f(&r, "total_s") >= f(&r, "cleanup_s"));
    // The work directory is removed at the end.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn bench_text_report_names_its_rows() {
    let out = crate::common::tessera()
        .args([
            "bench",
            "--quick",
            "--latency-tasks",
            "3",
            "--throughput-tasks",
            "30",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for row in [
        "accept -> TASK_FINISHED",
        "floor: wasmtime direct",
        "fork/exec: spawn + wait /bin/true",
        "ratio tessera / fork-exec",
        "ratio tessera / floor",
        "median",
        "debug build",
    ] {
        assert!(text.contains(row), "no {row:?} in:\n{text}");
    }
}
