//! Seeded virtual-time scenarios mixing every fault the simulation knows (issue 11): loss and
//! latency on agents' and frameworks' links, short partitions and a 3-minute one, link cuts,
//! agent restarts, master restarts from the durable registry, agent crashes that keep their
//! guests (recovery from the checkpoint, reattaching) and that lose them with the runtime,
//! framework link cuts and clock jumps, drawn from a seed by
//! [`Scenario::generate`](tessera_tests::sim::scenario::Scenario::generate) and played against
//! two frameworks' short and long tasks. The master's invariants, and that its registry holds
//! what the core would recover, are checked after every step; at the end:
//! - every submitted task reached exactly one terminal state at its framework;
//! - no agent update reached a framework twice (after the SDK core's dedup by uuid), none came
//!   after a task's end, and none is left unacknowledged on any agent;
//! - no task's guest ran twice;
//! - without agent restarts or runtime losses, every task that started finished (a partition
//!   of 3 minutes is well inside the 10-minute re-registration timeout, so it costs latency
//!   only; a master restart or an agent crash that keeps its guests loses nothing); a task
//!   that never started may end `TASK_LOST` (its accept lost with a cut framework link or a
//!   dead master) or `TASK_DROPPED` (its accept arrived after its offer was gone), as in Mesos;
//! - a task whose runtime died ends `TASK_FAILED` with reason `RuntimeLost`, once.
//!
//! Most seeds see at least one master restart and one agent crash that keeps its guests; each
//! test asserts that its seeds as a whole do (when it runs five or more).
//!
//! `SIM_SEEDS` (default 120 with restarts, 40 without) sets how many seeds run; `SIM_SEED`
//! runs one (to replay a failure, including a known-bad one). The seeds with restarts are
//! dealt to four tests (seed mod 4), which the harness runs beside other tests: one test of
//! 120 seeds took 156 s of a debug build on a slow 2-core machine, the longest of the
//! end-to-end binary by far, with the other core idle for most of it.

use proto::resources::GIB;
use proto::{Reason, Resources, TaskState};
use std::collections::BTreeMap;
use std::time::Duration;
use tessera_tests::sim::scenario::{Fault, Scenario, ScenarioShape};
use tessera_tests::sim::{Sim, SimOptions};

fn res(cpus: u64, gib: u64) -> Resources {
    Resources::new(cpus * 1000, gib * GIB, 0)
}

/// Which of a test's seeds one part of it runs: those equal to `part` mod `parts`.
#[derive(Clone, Copy)]
struct Part {
    part: u64,
    parts: u64,
}

/// All of the seeds, in one test.
const WHOLE: Part = Part { part: 0, parts: 1 };

/// Seeds to run: `SIM_SEED` alone, or `0..SIM_SEEDS` (default `default`); of either, those of
/// `part`.
fn seeds(default: u64, part: Part) -> Vec<u64> {
    let all = match std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(one) => one..one + 1,
        None => {
            let n = std::env::var("SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(default);
            0..n
        }
    };
    all.filter(|s| s % part.parts == part.part).collect()
}

/// A cluster of 3 agents <4 cpus, 4 GiB> and 2 frameworks, with Mesos's 10-minute agent
/// re-registration timeout; the trace is off (long runs), the invariants on.
fn cluster(seed: u64) -> Sim {
    let mut opts = SimOptions {
        seed,
        trace: false,
        check_invariants: true,
        ..SimOptions::default()
    };
    opts.master.agent_reregister_timeout = Duration::from_secs(600);
    let mut sim = Sim::with_options(opts, Box::new(master::allocator::drf::Drf::new()));
    for i in 1..=3 {
        sim.add_agent(proto::AgentInfo {
            datasets: Vec::new(),
            reservations: vec![],
            hostname: format!("agent{i}"),
            resources: res(4, 4),
            attributes: vec![],
        });
    }
    sim.add_framework("fw0", "*");
    sim.add_framework("fw1", "*");
    sim
}

/// Plays `scenario` against 25 short and 5 long tasks per framework; checks what the module
/// doc says, and returns how many tasks were seen unreachable (the long partition's mark).
/// `Err` carries what went wrong, with the seed.
fn play(seed: u64, scenario: &Scenario) -> Result<usize, String> {
    let mut sim = cluster(seed);
    let mut submitted = 0;
    for f in 0..2 {
        sim.submit(f, 25, (100, 3_000), res(1, 1));
        // Long enough to run across the long partition.
        sim.submit(f, 5, (60_000, 240_000), res(1, 1));
        submitted = 30;
    }
    let start = sim.now;
    scenario.play(&mut sim, start);
    if !sim.drive_until(5_000_000, Sim::all_done) {
        return Err(format!(
            "seed {seed}: not done; live {:?} {:?}; {scenario:?}",
            sim.live_tasks(0),
            sim.live_tasks(1)
        ));
    }
    // Time for the last acknowledgements to reach the agents.
    let settle = sim.now + Duration::from_secs(30);
    sim.run_until(settle);
    for (f, fw) in sim.frameworks.iter().enumerate() {
        if let Some(e) = fw
            .errors
            .iter()
            .find(|e| e.contains("twice") || e.contains("after ending"))
        {
            let task = e.split(' ').next().unwrap_or_default();
            let told: Vec<String> = fw
                .updates
                .iter()
                .filter(|u| u.task_id.as_str() == task)
                .map(|u| {
                    format!(
                        "{} {:?} {:?} {}",
                        u.state.name(),
                        u.reason,
                        u.uuid,
                        u.message
                    )
                })
                .collect();
            return Err(format!("seed {seed} fw{f}: {e}; updates told: {told:#?}"));
        }
        if fw.terminal.len() != submitted {
            return Err(format!(
                "seed {seed} fw{f}: {} of {submitted} tasks ended",
                fw.terminal.len()
            ));
        }
        // Each agent update (it has a uuid) at most once per task and state.
        let mut seen: BTreeMap<(&str, &str), u32> = BTreeMap::new();
        for u in fw.updates.iter().filter(|u| u.uuid.is_some()) {
            let n = seen
                .entry((u.task_id.as_str(), u.state.name()))
                .or_default();
            *n += 1;
            if *n > 1 {
                return Err(format!(
                    "seed {seed} fw{f}: {} {} delivered twice",
                    u.task_id,
                    u.state.name()
                ));
            }
        }
        for (task, state) in &fw.terminal {
            let starts = sim.guest_starts(task);
            if starts > 1 {
                return Err(format!("seed {seed}: {task} ran {starts} times"));
            }
            let fine = match state {
                TaskState::Finished => true,
                // Never launched: its accept was lost with a cut framework link (the master,
                // asked after the re-subscription, knows no such task), or came after its
                // offer was gone. The framework is told; nothing ran.
                TaskState::Lost | TaskState::Dropped if starts == 0 => true,
                // A restarted agent's guests are gone: lost, or gone after the timeout.
                TaskState::Lost | TaskState::Gone => scenario.loses_tasks(),
                // Its runtime died with its guest: the recovered agent says so, once.
                TaskState::Failed => {
                    scenario.loses_runtime()
                        && fw
                            .updates
                            .iter()
                            .rev()
                            .find(|u| &u.task_id == task && u.state == TaskState::Failed)
                            .is_some_and(|u| u.reason == Some(Reason::RuntimeLost))
                }
                _ => false,
            };
            if !fine {
                return Err(format!(
                    "seed {seed}: {task} ended {} (restarts: {}, runtime losses: {})",
                    state.name(),
                    scenario.loses_tasks(),
                    scenario.loses_runtime()
                ));
            }
        }
    }
    let unreachable = sim
        .frameworks
        .iter()
        .flat_map(|f| &f.updates)
        .filter(|u| u.state == TaskState::Unreachable)
        .count();
    for i in 0..sim.agent_count() {
        let left = sim.agent_core(i).task_count();
        if left != 0 {
            return Err(format!(
                "seed {seed}: agent{} still tracks {left} tasks (unacknowledged updates)",
                i + 1
            ));
        }
    }
    Ok(unreachable)
}

/// Seeds whose scenario finds a known bug in a core, skipped (in both shapes) so CI stays
/// green until it is fixed; each names the bug. `SIM_SEED=<seed>` replays one anyway. Found
/// with `SIM_SEEDS=500`; only those below the default seed counts matter to CI. Empty: the
/// last ones (192, 215, 308, 350, 368, 381, 397, 491: a recovered master charging ended,
/// unacknowledged tasks) pass since the registry records ends.
const KNOWN_BAD: &[(u64, &str)] = &[];

fn run_seeds(default: u64, part: Part, shape: &ScenarioShape) {
    let mut failures = Vec::new();
    let mut unreachable = 0;
    let (mut master_restarts, mut recoveries) = (0, 0);
    let seeds = seeds(default, part);
    let replaying = std::env::var_os("SIM_SEED").is_some();
    for &seed in &seeds {
        if !replaying && KNOWN_BAD.iter().any(|(s, _)| *s == seed) {
            continue;
        }
        let scenario = Scenario::generate(seed, shape);
        for (_, f) in &scenario.steps {
            match f {
                Fault::RestartMaster => master_restarts += 1,
                Fault::CrashAgent { .. } => recoveries += 1,
                _ => {}
            }
        }
        // A broken invariant panics inside the simulation: name the seed and go on.
        let played =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| play(seed, &scenario)));
        match played {
            Ok(Ok(n)) => unreachable += n,
            Ok(Err(e)) => failures.push(e),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("seed {seed}: panicked: {what}"));
            }
        }
    }
    // The partitions do bite: tasks were seen unreachable, and came back or ended.
    assert!(
        seeds.len() < 5 || unreachable > 0,
        "no task was ever unreachable: the scenarios test nothing"
    );
    assert!(
        seeds.len() < 5 || !shape.recoveries || (master_restarts > 0 && recoveries > 0),
        "no master restart or agent recovery was drawn"
    );
    assert!(
        failures.is_empty(),
        "{} seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Mixed faults with restarts over 120 seeds, in four parts.
fn with_restarts(part: u64) {
    run_seeds(120, Part { part, parts: 4 }, &ScenarioShape::default());
}

#[test]
fn mixed_faults_with_restarts_over_many_seeds_part_0() {
    with_restarts(0);
}

#[test]
fn mixed_faults_with_restarts_over_many_seeds_part_1() {
    with_restarts(1);
}

#[test]
fn mixed_faults_with_restarts_over_many_seeds_part_2() {
    with_restarts(2);
}

#[test]
fn mixed_faults_with_restarts_over_many_seeds_part_3() {
    with_restarts(3);
}

#[test]
fn mixed_faults_without_restarts_lose_nothing() {
    let shape = ScenarioShape {
        restarts: false,
        ..ScenarioShape::default()
    };
    run_seeds(40, WHOLE, &shape);
}

#[test]
fn scenarios_replay_identically() {
    let shape = ScenarioShape::default();
    let run = |seed| {
        let mut sim = cluster(seed);
        sim.submit(0, 10, (100, 3_000), res(1, 1));
        let start = sim.now;
        Scenario::generate(seed, &shape).play(&mut sim, start);
        sim.drive_until(1_000_000, Sim::all_done);
        (sim.now - sim.start, sim.frameworks[0].updates.len())
    };
    assert_eq!(run(5), run(5));
}
