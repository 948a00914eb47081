//! `--master a,b` with real `tessera master`, `tessera agent` and `tessera run` processes and a
//! stand-in standby ([`tessera_tests::StandIn`], in this test's process, with the cluster's
//! master certificate): the agent and the run list the standby first and end on the leader;
//! with no leader anywhere, `tessera run` gives up with 69 only after `--connect-timeout`.

use std::path::Path;
use tessera_tests::{StandIn, StandInMode};

use crate::common::{certs, reserved_port, start_agent, start_master, tessera};

/// A stand-in for a master of the cluster whose certificates are in `certs`, on a runtime of
/// its own (the test's processes are driven from the main thread).
fn stand_in(certs: &Path, mode: StandInMode) -> (tokio::runtime::Runtime, StandIn) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ca = std::fs::read_to_string(certs.join("ca.pem")).unwrap();
    let master =
        net::tls::Identity::from_files(&certs.join("master.pem"), &certs.join("master-key.pem"))
            .unwrap();
    let standby = {
        let _in_rt = rt.enter();
        StandIn::start(&ca, &master, mode)
    };
    (rt, standby)
}

/// `tessera run` of the hello guest on `masters`, as framework `runner`.
fn run_hello(certs: &Path, masters: &str, extra: &[&str]) -> std::process::Output {
    tessera()
        .args(["run", wasm_examples::HELLO_PATH, "--master", masters])
        .arg("--ca")
        .arg(certs.join("ca.pem"))
        .arg("--cert")
        .arg(certs.join("runner.pem"))
        .arg("--key")
        .arg(certs.join("runner-key.pem"))
        .args(extra)
        .args(["--", "past", "a", "standby"])
        .output()
        .unwrap()
}

#[test]
fn agent_and_run_listing_a_standby_first_end_on_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path(), &["worker1"], &["runner"]);
    let addr = format!("127.0.0.1:{}", reserved_port());
    let _master = start_master(dir.path(), &certs, &addr, &dir.path().join("master.log"));
    let (_rt, standby) = stand_in(&certs, StandInMode::Standby(Some(addr.clone())));
    let list = format!("{},{addr}", standby.addr);
    let _agent = start_agent(dir.path(), &certs, &list, "worker1", "1");

    let out = run_hello(&certs, &list, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("Hello from Tessera!"), "{stdout}");
    assert!(stdout.contains("past a standby"), "{stdout}");
    // Both the agent and the run were sent on by the standby.
    assert!(standby.hellos() >= 2, "{} Hellos", standby.hellos());
}

#[test]
fn with_no_leader_anywhere_run_exits_69_after_the_connect_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path(), &[], &["runner"]);
    // One master saying nobody leads, one address where nothing listens.
    let (_rt, standby) = stand_in(&certs, StandInMode::Standby(None));
    let nobody = format!("127.0.0.1:{}", reserved_port());
    let list = format!("{},{nobody}", standby.addr);
    let out = run_hello(
        &certs,
        &list,
        &[
            "--connect-timeout",
            "2s",
            "--quic-idle-timeout",
            "1s",
            "--quic-keep-alive",
            "200ms",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(stderr.contains("cannot reach the master"), "{stderr}");
    // It asked the standby (and dialled the dead address) before giving up.
    assert!(standby.hellos() >= 1, "{} Hellos", standby.hellos());
}

#[test]
fn a_bad_master_list_is_refused_with_a_clear_error() {
    let out = tessera()
        .args(["run", wasm_examples::HELLO_PATH, "--master", "a:5050,b"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("\"b\" is not host:port"), "{stderr}");
}
