//! `tessera run --master` across a `kill -9` of the master: real `tessera master`, `tessera
//! agent` and `tessera run` processes. The master is killed at a different moment of each run
//! (the moments split between two tests) and restarted 1 s later on the same port and work directory; every run must
//! still print its task's output and exit with its exit code (0).
//!
//! The task is the `burn` guest doing a fixed number of rounds (a few seconds of CPU), whose
//! output line holds a checksum the test computes itself. The moments come from `tessera run`'s
//! own debug log, so they are the run's real progress, not guesses on a clock:
//! 1. `subscribed`: the framework is subscribed, no offer accepted yet;
//! 2. `uploaded; launching`: the accept is being written (the old master may or may not have
//!    taken it in before dying);
//! 3. `TASK_RUNNING`: the task runs on the agent.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{certs, reserved_port, start_agent, start_master, tessera, Reaper};

/// Rounds of `burn`: a few seconds of one core in wasmtime.
const ROUNDS: u64 = 12_000;

/// What `burn ROUNDS` prints (the guest's loop, natively).
fn burn_line(rounds: u64) -> String {
    let mut table = [0u64; 256];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..rounds {
        for _ in 0..65536 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x & 0xff) as usize;
            table[i] = table[i].wrapping_add(x).rotate_left(5);
        }
    }
    let sum = table.iter().fold(0u64, |a, b| a ^ b);
    format!("burn: rounds={rounds} checksum={sum:016x}")
}

/// `text` without terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn tail(path: &Path, lines: usize) -> String {
    let text = read(path);
    let all: Vec<_> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// What `burn ROUNDS` prints, computed once for the three tests (seconds of a debug build).
fn want() -> &'static str {
    static WANT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    WANT.get_or_init(|| burn_line(ROUNDS))
}

#[test]
fn tessera_run_follows_its_task_across_a_kill_9_of_the_master_once_subscribed() {
    across_kills_at(&["subscribed"]);
}

/// Two runs on one cluster: the second meets a master already restarted from its registry.
#[test]
fn tessera_run_follows_its_task_across_kill_9s_of_the_master_while_launching_and_running() {
    across_kills_at(&["uploaded; launching", "TASK_RUNNING"]);
}

/// A cluster of its own and a run of `tessera run` per moment, one after the other, each with
/// its master killed when the run's log first says that moment (the moments split between
/// tests, so that the harness runs them beside others).
fn across_kills_at(moments: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path(), &["worker1"], &["runner"]);
    let addr = format!("127.0.0.1:{}", reserved_port());
    let mut logs = vec![dir.path().join("master-0.log")];
    let mut master = start_master(dir.path(), &certs, &addr, &logs[0]);
    let _agent = start_agent(dir.path(), &certs, &addr, "worker1", "2");
    for (i, moment) in moments.iter().enumerate() {
        master = across_a_kill_9_at(dir.path(), &certs, &addr, &mut logs, master, i, moment);
    }
}

/// Run `i` of `tessera run`, the master (returned restarted) killed at `moment`.
fn across_a_kill_9_at(
    dir: &Path,
    certs: &Path,
    addr: &str,
    logs: &mut Vec<std::path::PathBuf>,
    mut master: Reaper,
    i: usize,
    moment: &str,
) -> Reaper {
    let want = want();
    let out_path = dir.join(format!("run-{i}.out"));
    let err_path = dir.join(format!("run-{i}.err"));
    let mut run = Reaper(
        tessera()
            .args(["run", "--master", addr, "--cpus", "1", "--mem", "64MiB"])
            .arg("--ca")
            .arg(certs.join("ca.pem"))
            .arg("--cert")
            .arg(certs.join("runner.pem"))
            .arg("--key")
            .arg(certs.join("runner-key.pem"))
            .arg(wasm_examples::BURN_PATH)
            .arg("--")
            .arg(ROUNDS.to_string())
            .env(
                "RUST_LOG",
                "tessera=debug,tessera_cli=debug,tessera_sdk=debug",
            )
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    // A hang guard only.
    let guard = started + Duration::from_secs(300);
    while !read(&err_path).contains(moment) {
        if let Some(status) = run.0.try_wait().unwrap() {
            panic!(
                "run {i} ended ({status}) before {moment:?}:\n{}",
                read(&err_path)
            );
        }
        assert!(Instant::now() < guard, "run {i} never reached {moment:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SIGKILL: nothing flushed, nothing closed.
    master.0.kill().unwrap();
    master.0.wait().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    logs.push(dir.join(format!("master-{}.log", i + 1)));
    let master = start_master(dir, certs, addr, logs.last().unwrap());

    let status = loop {
        if let Some(status) = run.0.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > guard {
            for log in logs.iter() {
                eprintln!("{}:\n{}", log.display(), tail(log, 30));
            }
            panic!(
                "run {i} (killed at {moment:?}) hangs:\n{}",
                tail(&err_path, 40)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    std::fs::File::open(&out_path)
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(
        status.success() && out.trim_end() == want,
        "run {i} (master killed at {moment:?}) exited {status}, printed {out:?}, want \
         {want:?}; its log:\n{}\nmaster logs:\n{}",
        tail(&err_path, 40),
        logs.iter()
            .map(|l| tail(l, 20))
            .collect::<Vec<_>>()
            .join("\n---\n")
    );
    // What the run saw, for the record: the task's states in order.
    let states: Vec<String> = strip_ansi(&read(&err_path))
        .lines()
        .filter(|l| l.contains("task update"))
        .filter_map(|l| l.split_whitespace().find(|w| w.contains("TASK_")))
        .map(|w| w.trim_start_matches("state=").trim_matches('"').to_owned())
        .collect();
    eprintln!(
        "run {i}: master killed at {moment:?}: exit 0 after {:.1} s, states {states:?}",
        (Instant::now() - started).as_secs_f64()
    );
    master
}
