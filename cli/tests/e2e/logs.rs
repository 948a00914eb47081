//! `tessera logs` against real processes (a master, an agent, `tessera run` of a guest that
//! prints a line every 200 ms): `--follow` prints the first line while the task still runs,
//! then every line, and exits 0 once the task has ended; an unknown task is one clear line.

use crate::common::{certs, reserved_port, start_master, tessera, Reaper, IDLE, KEEP_ALIVE};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The state of task `id` as `tessera tasks --json` says (`None`: not listed yet).
fn task_state(master: &str, id: &str) -> Option<String> {
    let o = tessera()
        .args(["tasks", "--json", "--master", master])
        .output()
        .unwrap();
    if !o.status.success() {
        return None;
    }
    let tasks: Value = serde_json::from_slice(&o.stdout).ok()?;
    tasks
        .as_array()?
        .iter()
        .find(|t| t["id"] == id)
        .map(|t| t["state"].as_str().unwrap().to_owned())
}

/// Agent `name` with 2 cpus whose ended tasks' sandboxes are kept however full the disk is
/// (`--gc-disk-headroom 0`): a nearly full disk would otherwise collect a task's output the
/// moment its end is acknowledged, before a follower read the last of it.
fn start_agent(dir: &Path, certs: &Path, master: &str, name: &str) -> Reaper {
    Reaper(
        tessera()
            .args(["agent", "--master", master, "--hostname", name])
            .args(["--cpus", "2", "--mem", "512MiB", "--disk", "1GiB"])
            .args(["--gc-delay", "1h", "--gc-disk-headroom", "0"])
            .args(["--quic-idle-timeout", IDLE, "--quic-keep-alive", KEEP_ALIVE])
            .arg("--work-dir")
            .arg(dir.join(name))
            .arg("--ca")
            .arg(certs.join("ca.pem"))
            .arg("--cert")
            .arg(certs.join(format!("{name}.pem")))
            .arg("--key")
            .arg(certs.join(format!("{name}-key.pem")))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap())
            .spawn()
            .unwrap(),
    )
}

fn wait(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run_ticker(dir: &Path, certs: &Path, master: &str, args: &[&str]) -> Reaper {
    Reaper(
        tessera()
            .arg("run")
            .arg(dir.join("ex/ticker.wasm"))
            .args(["--master", master, "--cpus", "0.25", "--mem", "32MiB"])
            .arg("--ca")
            .arg(certs.join("ca.pem"))
            .arg("--cert")
            .arg(certs.join("fw.pem"))
            .arg("--key")
            .arg(certs.join("fw-key.pem"))
            .arg("--")
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("run.log")).unwrap())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn logs_follow_shows_output_as_it_is_written_and_ends_with_the_task() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let certs = certs(d, &["a1"], &["fw"]);
    assert!(tessera()
        .args(["examples", "--out"])
        .arg(d.join("ex"))
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success());
    let master = format!("127.0.0.1:{}", reserved_port());
    let _m = start_master(d, &certs, &master, &d.join("master.log"));
    let _a = start_agent(d, &certs, &master, "a1");
    const N: usize = 30;
    let _run = run_ticker(d, &certs, &master, &[&N.to_string(), "200"]);
    wait("the ticker running", || {
        task_state(&master, "ticker").as_deref() == Some("TASK_RUNNING")
    });

    let mut logs = Reaper(
        tessera()
            .args(["logs", "ticker", "--follow", "--master", &master])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(logs.0.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a first line").unwrap();
    assert_eq!(first, "tick 1");
    // The first line came while the task still runs: it is followed, not read at the end.
    assert_eq!(
        task_state(&master, "ticker").as_deref(),
        Some("TASK_RUNNING"),
        "the task ended before its first line was shown"
    );
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let want: Vec<String> = (2..=N).map(|i| format!("tick {i}")).collect();
    assert_eq!(rest, want);
    let status = logs.0.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut logs.0.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "exit {:?}: {err}", status.code());
    assert_eq!(
        task_state(&master, "ticker").as_deref(),
        Some("TASK_FINISHED")
    );

    // Once ended, without --follow: everything at once; --stderr the other stream.
    let o = tessera()
        .args(["logs", "ticker", "--stderr", "--master", &master])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        "tock 10\ntock 20\ntock 30\nticker: done\n"
    );

    // An unknown task: one clear line, exit 1.
    let o = tessera()
        .args(["logs", "nope", "--master", &master])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(o.stderr).unwrap(),
        "tessera: no task nope\n"
    );
}

#[test]
fn run_through_a_master_shows_the_output_as_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let certs = certs(d, &["a1"], &["fw"]);
    assert!(tessera()
        .args(["examples", "--out"])
        .arg(d.join("ex"))
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success());
    let master = format!("127.0.0.1:{}", reserved_port());
    let _m = start_master(d, &certs, &master, &d.join("master.log"));
    let _a = start_agent(d, &certs, &master, "a1");
    const N: usize = 20;
    let mut run = Reaper(
        tessera()
            .arg("run")
            .arg(d.join("ex/ticker.wasm"))
            .args(["--master", &master, "--cpus", "0.25", "--mem", "32MiB"])
            .arg("--ca")
            .arg(certs.join("ca.pem"))
            .arg("--cert")
            .arg(certs.join("fw.pem"))
            .arg("--key")
            .arg(certs.join("fw-key.pem"))
            .args(["--", &N.to_string(), "200"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(run.0.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a first line").unwrap();
    assert_eq!(first, "tick 1");
    assert_eq!(
        task_state(&master, "ticker").as_deref(),
        Some("TASK_RUNNING"),
        "the task ended before its first line was shown"
    );
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let want: Vec<String> = (2..=N).map(|i| format!("tick {i}")).collect();
    assert_eq!(
        rest, want,
        "every line once (not again from the final status's tail)"
    );
    let status = run.0.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut run.0.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "exit {:?}: {err}", status.code());
    assert_eq!(err, "tock 10\ntock 20\nticker: done\n");
}
