//! Whole clusters of the real master and agent cores in virtual time, with seeded faults: link
//! cuts (half-open connections on the master's side), agent restarts and clock jumps. Loss and
//! disconnection must cost latency, never correctness: every task ends exactly once as far as its
//! framework can tell, and the master's books balance at every step.

use proto::resources::GIB;
use proto::{Resources, TaskState};
use std::time::Duration;
use tessera_tests::sim::Sim;

fn res(cpus: u64, gib: u64) -> Resources {
    Resources::new(cpus * 1000, gib * GIB, 0)
}

fn check_exactly_once(sim: &Sim) {
    for f in &sim.frameworks {
        assert!(
            f.errors
                .iter()
                .all(|e| !e.contains("twice") && !e.contains("after ending")),
            "{:?}",
            f.errors
        );
    }
}

#[test]
fn no_faults_every_task_finishes_once() {
    let mut sim = Sim::new(1, 3, res(4, 4), 2);
    sim.submit(0, 40, (50, 400), res(1, 1));
    sim.submit(1, 40, (50, 400), res(1, 1));
    sim.drive_until_done(200_000);
    check_exactly_once(&sim);
    for f in &sim.frameworks {
        assert_eq!(f.terminal.len(), 40);
        assert!(f.terminal.values().all(|s| *s == TaskState::Finished));
    }
}

#[test]
fn link_cuts_cost_latency_not_correctness() {
    for seed in 0..20 {
        let mut sim = Sim::new(seed, 3, res(4, 4), 2);
        sim.submit(0, 30, (100, 800), res(1, 1));
        sim.submit(1, 30, (100, 800), res(1, 1));
        let start = sim.now;
        // Cut a random agent's link every ~700 ms for a while; each comes back within the
        // re-register timeout, so no task may be lost.
        for k in 1..15u64 {
            sim.run_until(start + Duration::from_millis(700 * k));
            let i = sim.rng.range(0, sim.agent_count() as u64) as usize;
            sim.cut(i);
        }
        sim.drive_until_done(500_000);
        check_exactly_once(&sim);
        for f in &sim.frameworks {
            assert_eq!(f.terminal.len(), 30, "seed {seed}");
            assert!(
                f.terminal.values().all(|s| *s == TaskState::Finished),
                "seed {seed}: {:?}",
                f.terminal
            );
        }
    }
}

#[test]
fn kills_get_through_link_cuts() {
    for seed in 0..10 {
        let mut sim = Sim::new(seed, 3, res(4, 4), 1);
        // Long tasks: they end only if killed (or after a minute).
        sim.submit(0, 12, (60_000, 60_001), res(1, 1));
        let start = sim.now;
        sim.run_until(start + Duration::from_millis(800));
        let live = sim.live_tasks(0);
        assert!(!live.is_empty(), "seed {seed}");
        // Cut every link, kill everything while the agents are away, let them come back.
        for i in 0..sim.agent_count() {
            sim.cut(i);
        }
        for t in &live {
            sim.kill(0, t);
        }
        sim.run_until(start + Duration::from_secs(10));
        check_exactly_once(&sim);
        let f = &sim.frameworks[0];
        for t in &live {
            let state = f.terminal.get(&proto::TaskId(t.clone()));
            assert_eq!(
                state,
                Some(&TaskState::Killed),
                "seed {seed} task {t}: {state:?}"
            );
        }
    }
}

#[test]
fn restarts_lose_tasks_explicitly_and_the_rest_finish() {
    for seed in 0..10 {
        let mut sim = Sim::new(seed, 3, res(4, 4), 1);
        sim.submit(0, 40, (200, 1500), res(1, 1));
        let start = sim.now;
        sim.run_until(start + Duration::from_millis(900));
        sim.restart_agent(0);
        sim.run_until(start + Duration::from_millis(2500));
        sim.restart_agent(2);
        sim.drive_until_done(500_000);
        check_exactly_once(&sim);
        let f = &sim.frameworks[0];
        assert_eq!(f.terminal.len(), 40, "seed {seed}");
        // A restarted agent registers as a new one: its old self's tasks are TASK_UNREACHABLE,
        // then TASK_GONE once the re-registration timeout passes (or TASK_LOST when one was
        // still being launched).
        assert!(f
            .terminal
            .values()
            .all(|s| matches!(s, TaskState::Finished | TaskState::Lost | TaskState::Gone)));
        assert!(
            f.terminal
                .values()
                .any(|s| matches!(s, TaskState::Lost | TaskState::Gone)),
            "seed {seed}: a restart mid-task loses it"
        );
    }
}

#[test]
fn a_clock_jump_expires_deadlines_and_the_cluster_recovers() {
    let mut sim = Sim::new(7, 2, res(4, 4), 1);
    sim.submit(0, 20, (200, 600), res(1, 1));
    let start = sim.now;
    sim.run_until(start + Duration::from_millis(500));
    sim.cut(0);
    sim.jump(Duration::from_secs(3600));
    sim.drive_until_done(500_000);
    check_exactly_once(&sim);
    assert_eq!(sim.frameworks[0].terminal.len(), 20);
}

#[test]
fn runs_are_deterministic() {
    let run = |seed| {
        let mut sim = Sim::new(seed, 3, res(4, 4), 2);
        sim.submit(0, 20, (50, 500), res(1, 1));
        sim.submit(1, 20, (50, 500), res(1, 1));
        let start = sim.now;
        sim.run_until(start + Duration::from_millis(600));
        sim.cut(1);
        sim.drive_until_done(200_000);
        sim.trace.clone()
    };
    assert_eq!(run(3), run(3));
    assert_ne!(run(3), run(4));
}
