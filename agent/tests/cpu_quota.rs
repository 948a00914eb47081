//! Kernel CPU quotas for paced tasks (`ExecutorConfig::cpu_quota_cgroup`), with real wasmtime,
//! real guests and the real cgroup v1 cpu controller: a paced task that overdraws its share
//! moves to its own thread in a cgroup whose CFS quota is its share (one that sleeps stays
//! where it is, with no group), gets that share (2:1 shares give 2:1 progress, none
//! more than offered), is killed at once even while throttled (the time throttled reported as
//! its pause), and its cgroup is gone after it ends; groups left by a process that is gone are
//! removed when an executor starts; a guest that sleeps and one that works with files in its
//! sandbox run to their ends under quotas. A directory outside the cpu controller falls back to
//! the in-process pacer.
//!
//! Needs a writable cpu controller (root); without one it says so and checks the fallback
//! only. Timing-sensitive, so one test in its own binary; the checks are ratios, not durations.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tessera_agent::executor::{
    ExecEvent, Executor, ExecutorConfig, TaskOutcome, TaskSpec, Termination,
};

#[path = "support/burn.rs"]
mod burn;
use burn::{finished, launch, Task};

/// Hang guard only.
const SANITY: Duration = Duration::from_secs(30);
const WINDOW: Duration = Duration::from_millis(1500);

/// Runs tasks with these shares over the same window; returns each one's achieved share of a
/// core, and how many task groups there were while they ran.
async fn shares(exec: &Executor, parent: &Path, offered: &[u64]) -> (Vec<f64>, usize) {
    let (outcomes, groups) = outcomes(exec, parent, offered).await;
    let shares = outcomes
        .iter()
        .map(|o| o.cpu_time.as_secs_f64() / o.wall.as_secs_f64())
        .collect();
    (shares, groups)
}

/// [`shares`]' runs, their outcomes.
async fn outcomes(exec: &Executor, parent: &Path, offered: &[u64]) -> (Vec<TaskOutcome>, usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut tasks: Vec<Task> = offered
        .iter()
        .enumerate()
        .map(|(i, &c)| launch(exec, dir.path(), &format!("t{i}"), c, false))
        .collect();
    for t in &mut tasks {
        t.running(SANITY).await;
    }
    tokio::time::sleep(WINDOW).await;
    let groups = groups(parent);
    for g in &groups {
        let tasks = std::fs::read_to_string(g.join("tasks")).unwrap();
        assert!(tasks.lines().count() >= 1, "no thread in {}", g.display());
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.stop(SANITY).await);
    }
    (out, groups.len())
}

/// The task groups under `parent`.
fn groups(parent: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect()
}

/// Waits until the task groups under `parent` are gone (each task's thread removes its own
/// after reporting its end).
async fn groups_gone(parent: &Path) {
    let deadline = tokio::time::Instant::now() + SANITY;
    while !groups(parent).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "task groups left: {:?}",
            groups(parent)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The parent cgroup for this run, or `None` (said on stderr) where none can be made.
fn quota_parent() -> Option<PathBuf> {
    let dir = Path::new("/sys/fs/cgroup/cpu").join(format!("tessera-quota-{}", std::process::id()));
    match std::fs::create_dir(&dir) {
        Ok(()) => Some(dir),
        Err(e) => {
            eprintln!(
                "no cpu controller to test with ({}: {e}): the fallback only",
                dir.display()
            );
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_tasks_run_under_their_own_kernel_quota() {
    // A directory outside the cpu controller: the executor paces in process.
    let plain = tempfile::tempdir().unwrap();
    let exec = Executor::new(ExecutorConfig {
        cpu_quota_cgroup: Some(plain.path().join("tessera")),
        ..ExecutorConfig::default()
    })
    .unwrap();
    exec.prepare("burn", Path::new(wasm_examples::BURN_PATH))
        .await
        .unwrap();
    let (r, groups) = shares(&exec, &plain.path().join("tessera"), &[250]).await;
    eprintln!("fallback, 0.25 cpus: {:.3} cores", r[0]);
    assert_eq!(groups, 0);
    assert!(r[0] <= 0.275, "{r:?}");

    let Some(parent) = quota_parent() else {
        return;
    };
    // A group a process that is gone left behind (its runtime killed with its tasks) is
    // removed when an executor starts on the parent.
    let gone = std::process::Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    let mut gone = gone;
    gone.wait().unwrap();
    let orphan = parent.join(format!("{gone_pid}-7"));
    std::fs::create_dir(&orphan).unwrap();
    let exec = Executor::new(ExecutorConfig {
        cpu_quota_cgroup: Some(parent.clone()),
        ..ExecutorConfig::default()
    })
    .unwrap();
    exec.prepare("burn", Path::new(wasm_examples::BURN_PATH))
        .await
        .unwrap();

    assert!(!orphan.exists(), "the orphaned group is still there");

    // 2:1 shares give 2:1 progress within 10 %, none more than offered; one group each.
    let (r, groups) = shares(&exec, &parent, &[400, 200]).await;
    let ratio = r[0] / r[1];
    eprintln!(
        "under quotas, 0.4 vs 0.2 cpus: {:.3} and {:.3} cores, ratio {ratio:.3}",
        r[0], r[1]
    );
    assert_eq!(groups, 2);
    assert!((1.8..=2.2).contains(&ratio), "ratio {ratio} ({r:?})");
    assert!(r[0] <= 0.44 && r[1] <= 0.22, "{r:?}");
    groups_gone(&parent).await;

    // A task of 0.01 cpus (1 ms per 100 ms) spends nearly all its time throttled; a kill lifts
    // its quota and it ends Killed, its group gone.
    // Its outcome's pause is the kernel's throttling: most of its wall time.
    let (o, groups) = outcomes(&exec, &parent, &[10]).await;
    let share = o[0].cpu_time.as_secs_f64() / o[0].wall.as_secs_f64();
    let paused = o[0].cpu_paused.as_secs_f64() / o[0].wall.as_secs_f64();
    eprintln!("under quota, 0.01 cpus: {share:.4} cores, throttled {paused:.3} of the time");
    assert_eq!(groups, 1);
    assert!(share <= 0.011 + 0.005, "{share}");
    assert!(paused > 0.5, "{:?}", o[0]);
    groups_gone(&parent).await;

    // A paced task's own runtime has timers and the blocking pool, no I/O driver: a guest
    // that sleeps and one that works with files in its sandbox run to their ends (each may
    // move under a quota, if its start-up overdraws its share).
    let dir = tempfile::tempdir().unwrap();
    let sandbox = dir.path().join("files/sandbox");
    std::fs::create_dir_all(&sandbox).unwrap();
    std::fs::write(sandbox.join("input.txt"), "some input").unwrap();
    // At 0.2 cpus, in `dir/<name>`.
    let paced = |digest: &str, path: &str, args: &[&str], name: &str| TaskSpec {
        cpus_milli: 200,
        ..TaskSpec::new(
            digest,
            path,
            args.iter().map(|a| a.to_string()).collect(),
            dir.path().join(name),
        )
    };
    let files = TaskSpec {
        sandbox: true,
        ..paced("files", wasm_examples::FILES_PATH, &[], "files")
    };
    let ticker = paced("ticker", wasm_examples::TICKER_PATH, &["3", "20"], "ticker");
    // A paced task that sleeps never overdraws its share: it stays on the shared runtime, with
    // no thread or group of its own.
    let sleeper = paced(
        "ticker",
        wasm_examples::TICKER_PATH,
        &["8", "50"],
        "sleeper",
    );
    exec.prepare("ticker", Path::new(wasm_examples::TICKER_PATH))
        .await
        .unwrap();
    let (_kill, mut events) = exec.launch_to_channel(sleeper);
    let ev = tokio::time::timeout(SANITY, events.recv()).await.unwrap();
    assert_eq!(ev, Some(ExecEvent::Running));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        crate::groups(&parent).len(),
        0,
        "a sleeping task got a group"
    );
    let o = finished(&mut events, SANITY).await;
    assert_eq!(o.termination, Termination::Exited(0), "{o:?}");

    for (spec, expect) in [(files, "input: some input"), (ticker, "tick 3")] {
        exec.prepare(&spec.digest, &spec.wasm_path).await.unwrap();
        let (_kill, mut events) = exec.launch_to_channel(spec);
        let outcome = finished(&mut events, SANITY).await;
        assert_eq!(outcome.termination, Termination::Exited(0), "{outcome:?}");
        assert!(outcome.stdout_tail.contains(expect), "{outcome:?}");
    }
    assert_eq!(
        std::fs::read_to_string(sandbox.join("output.txt")).unwrap(),
        "written by the files guest\n"
    );
    groups_gone(&parent).await;

    // An unpaced task (a whole core) runs on the shared runtime, in no group.
    let (_, groups) = shares(&exec, &parent, &[1000]).await;
    assert_eq!(groups, 0);

    // The parent, once the tasks' threads that left for it have ended.
    drop(exec);
    let deadline = tokio::time::Instant::now() + SANITY;
    while let Err(e) = std::fs::remove_dir(&parent) {
        assert!(tokio::time::Instant::now() < deadline, "{e}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
