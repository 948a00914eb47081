//! The virtual-time cluster's link fault verbs, each in a scenario: what the fault must cost
//! (latency, a reconnection, lost tasks) and what it must never cost (a task ending twice, or
//! never, as its framework sees it).

use proto::resources::GIB;
use proto::{Resources, TaskState};
use std::time::Duration;
use tessera_cluster::sim::LinkFaults;
use tessera_cluster::Sim;

fn res(cpus: u64, gib: u64) -> Resources {
    Resources::new(cpus * 1000, gib * GIB, 0)
}

fn assert_exactly_once(sim: &Sim) {
    for f in &sim.frameworks {
        assert!(f.errors.is_empty(), "{:?}", f.errors);
    }
}

fn all_finished(sim: &Sim, n: usize) {
    for f in &sim.frameworks {
        assert_eq!(f.terminal.len(), n);
        assert!(
            f.terminal.values().all(|s| *s == TaskState::Finished),
            "{:?}",
            f.terminal
        );
    }
}

#[test]
fn loss_and_delay_cost_latency_not_messages() {
    for seed in 0..5 {
        let mut sim = Sim::new(seed, 2, res(4, 4), 1);
        sim.submit(0, 20, (50, 300), res(1, 1));
        sim.drop(0, 0.3);
        sim.delay(1, Duration::from_millis(150));
        sim.drive_until_done(200_000);
        assert_exactly_once(&sim);
        all_finished(&sim, 20);
        // Neither link was ever given up on.
        assert_eq!((sim.agent_connects(0), sim.agent_connects(1)), (1, 1));
    }
}

#[test]
fn a_short_isolation_is_ridden_out_by_the_connection() {
    for seed in 0..10 {
        let mut sim = Sim::new(seed, 2, res(4, 4), 1);
        sim.submit(0, 20, (100, 400), res(1, 1));
        let start = sim.now;
        sim.run_until(start + Duration::from_millis(300));
        sim.isolate(0);
        // Shorter than the idle timeout: both ends keep the connection, what it held arrives.
        sim.run_until(sim.now + sim.idle_timeout / 2);
        sim.recover(0);
        assert_eq!(sim.link_faults(0), LinkFaults::default());
        sim.drive_until_done(200_000);
        assert_exactly_once(&sim);
        all_finished(&sim, 20);
        assert_eq!(sim.agent_connects(0), 1, "seed {seed}");
    }
}

#[test]
fn a_long_isolation_drops_the_connection_and_redials_fail_until_recovery() {
    for seed in 0..10 {
        let mut sim = Sim::new(seed, 2, res(4, 4), 1);
        sim.submit(0, 20, (100, 400), res(1, 1));
        let start = sim.now;
        sim.run_until(start + Duration::from_millis(300));
        sim.isolate(0);
        sim.run_until(sim.now + sim.idle_timeout * 2);
        // Both ends gave up; redials fail while the link stays isolated.
        assert_eq!(sim.agent_connects(0), 1, "seed {seed}");
        sim.recover(0);
        sim.drive_until_done(200_000);
        assert_exactly_once(&sim);
        assert_eq!(sim.agent_connects(0), 2, "seed {seed}");
        // Back within the re-register timeout: nothing was lost.
        all_finished(&sim, 20);
    }
}

#[test]
fn runs_with_every_link_fault_replay_from_the_seed() {
    let run = |seed| {
        let mut sim = Sim::new(seed, 3, res(4, 4), 2);
        sim.submit(0, 15, (50, 500), res(1, 1));
        sim.submit(1, 15, (50, 500), res(1, 1));
        sim.drop(0, 0.2);
        sim.delay(1, Duration::from_millis(40));
        let start = sim.now;
        sim.run_until(start + Duration::from_millis(400));
        sim.isolate(2);
        sim.run_until(start + Duration::from_secs(4));
        sim.recover(2);
        sim.drive_until_done(200_000);
        assert_exactly_once(&sim);
        sim.trace.clone()
    };
    assert_eq!(run(11), run(11));
    assert_ne!(run(11), run(12));
}

#[test]
fn a_cut_framework_link_resubscribes_under_the_same_id_and_sends_queued_kills() {
    for seed in 0..10 {
        let mut sim = Sim::new(seed, 3, res(4, 4), 1);
        // Long tasks: they end only if killed (or after a minute); short ones finish.
        let long: Vec<_> = (0..4)
            .map(|_| sim.submit_task(0, Duration::from_secs(60), res(1, 1)))
            .collect();
        sim.submit(0, 16, (100, 600), res(1, 1));
        let start = sim.now;
        sim.run_until(start + Duration::from_millis(500));
        let id = sim.frameworks[0].id().cloned();
        assert!(id.is_some(), "seed {seed}");
        let live = sim.live_tasks(0);
        sim.cut_framework(0);
        // Killed while the framework has no link: the SDK core queues the kills and sends them
        // once re-subscribed.
        for t in long.iter().filter(|t| live.contains(&t.0)) {
            sim.kill(0, &t.0);
        }
        sim.drive_until(500_000, |s| {
            s.all_done() || s.frameworks[0].live_tasks().all(|t| long.contains(t))
        });
        for t in long.iter().filter(|t| !live.contains(&t.0)) {
            sim.kill(0, &t.0); // launched after the cut: killed now
        }
        sim.drive_until_done(500_000);
        assert_exactly_once(&sim);
        let f = &sim.frameworks[0];
        assert_eq!(f.id().cloned(), id, "seed {seed}: a new framework id");
        assert_eq!(f.subscriptions, 2, "seed {seed}");
        assert_eq!(f.terminal.len(), 20, "seed {seed}");
        for (t, state) in &f.terminal {
            if long.contains(t) {
                assert_eq!(*state, TaskState::Killed, "seed {seed} task {t}");
            } else {
                // Lost: its accept was in flight when the link dropped, and the reconciliation
                // after the re-subscription learnt so from the master.
                assert!(
                    matches!(state, TaskState::Finished | TaskState::Lost),
                    "seed {seed} task {t}: {state:?}"
                );
            }
        }
    }
}
