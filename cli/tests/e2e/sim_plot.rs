//! `tessera sim --plot FILE.svg` through the real binary: the file is well-formed SVG holding
//! one line per series (utilization both ways, each framework's share both ways) with one point
//! per sample, and their legend labels; no progress bar when stderr is not a terminal.

use std::process::Command;

#[test]
fn sim_plot_writes_an_svg_with_every_series() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("sim.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .env("RUST_LOG", "error")
        .args([
            "sim",
            "--agents",
            "6",
            "--frameworks",
            "3",
            "--weights",
            "1,2",
            "--duration",
            "120s",
            "--sample-every",
            "10s",
            "--late-join",
            "40s",
            "--plot",
        ])
        .arg(&svg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The table still prints; the bar stays off a pipe.
    assert!(String::from_utf8_lossy(&out.stdout).contains("summary"));
    assert!(!stderr.contains("simulated s"), "{stderr}");

    let text = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    let labels: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text().map(str::trim))
        .collect();
    let mut expected = vec![
        "utilization: offers vs static partitioning",
        "dominant share per framework: offers",
        "dominant share per framework: static partitioning",
        "offers: cpu",
        "offers: memory",
        "static: cpu",
        "static: memory",
    ];
    let fw = [
        "fw0 (role r0, weight 1)",
        "fw1 (role r1, weight 2)",
        "fw2 (role r0, weight 1)",
    ];
    expected.extend(fw);
    for e in &expected {
        assert!(labels.contains(e), "no label {e:?} in {labels:?}");
    }
    // Each framework is in the legend of both share panels.
    for f in fw {
        assert_eq!(labels.iter().filter(|l| **l == f).count(), 2, "{f}");
    }
    // 13 samples (0 s to 120 s every 10 s): one polyline of 13 points per series, 4 for
    // utilization and 3 frameworks in each share panel.
    let lines: Vec<usize> = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .filter_map(|n| n.attribute("points"))
        .map(|p| p.split_whitespace().count())
        .filter(|&n| n == 13)
        .collect();
    assert_eq!(lines.len(), 4 + 2 * 3, "series polylines: {lines:?}");
}

#[test]
fn sim_plot_into_a_missing_directory_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("no/such/dir/sim.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .env("RUST_LOG", "error")
        .args([
            "sim",
            "--agents",
            "2",
            "--frameworks",
            "2",
            "--duration",
            "20s",
        ])
        .args(["--sample-every", "10s", "--late-join", "10s", "--plot"])
        .arg(&svg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sim.svg"), "{stderr}");
}
