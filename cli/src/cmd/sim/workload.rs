//! `tessera sim`'s workload: the real master core and allocator, on the virtual-time cluster of
//! `tessera-cluster` (real agent cores, simulated guests, no network delay), fed a synthetic,
//! seeded workload; run once sharing the cluster by offers and once under static partitioning.
//!
//! Frameworks receive jobs (bursts of tasks of one shape) at random times and pack their queues
//! into the offers they get, declining what they cannot use. Under static partitioning every
//! framework owns a fixed slice of the agents (in proportion to its fair share) and declines all
//! others for good: the classic alternative to sharing by offers.
//!
//! Everything is drawn from the seed and every map is ordered, so the same arguments print the
//! same report.

use super::report::{jain, Sample, SimReport};
use cluster::sim::{Sim, SimOptions};
use master::allocator::Allocator;
use master::core::MasterConfig;
use proto::resources::GIB;
use proto::{AgentInfo, Resources};
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::time::Duration;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seed of every random draw.
    pub seed: u64,
    /// Number of agents.
    pub agents: usize,
    /// Resources of each agent.
    pub agent_resources: Resources,
    /// Number of frameworks.
    pub frameworks: usize,
    /// Role weights, cycled over the frameworks (framework i is in role `r{i % len}`).
    pub role_weights: Vec<f64>,
    /// Simulated duration.
    pub duration: Duration,
    /// Sampling period of the report.
    pub sample_every: Duration,
    /// When the last framework subscribes (to measure how fast a newcomer gets its share).
    pub late_join: Duration,
    /// Mean offered load as a fraction of the cluster (above 1 keeps everyone wanting more).
    pub load: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            agents: 50,
            agent_resources: Resources::new(8000, 16 * GIB, 0),
            frameworks: 4,
            role_weights: vec![1.0],
            duration: Duration::from_secs(600),
            sample_every: Duration::from_secs(30),
            late_join: Duration::from_secs(200),
            load: 1.2,
        }
    }
}

/// How the cluster is shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Sharing {
    /// Resource offers chosen by the allocator.
    Offers,
    /// Each framework owns a fixed slice of the agents.
    StaticPartition,
}

/// Something the workload does at a moment of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// Framework `i` subscribes.
    Join(usize),
    /// A job of framework `i` arrives.
    Job(usize),
    /// The report samples the cluster.
    Sample,
}

/// A framework of the workload, and where it is in the simulation once it joined.
struct Tenant {
    role: String,
    weight: f64,
    shape: Resources,
    job_rate: f64,
    /// Its index among the simulation's frameworks, once it subscribed.
    sim: Option<usize>,
    /// Under static partitioning, the hostnames it owns.
    partition: BTreeSet<String>,
}

/// Mean number of tasks in a job.
const MEAN_TASKS_PER_JOB: f64 = 20.0;
/// Mean task duration, in seconds.
const MEAN_DURATION: f64 = 30.0;

/// Runs the workload once under `sharing`, with `allocator` in the master.
pub fn run(cfg: &SimConfig, sharing: Sharing, allocator: Box<dyn Allocator>) -> SimReport {
    run_with_progress(cfg, sharing, allocator, &mut |_| {})
}

/// [`run`], telling `progress` how far the simulated clock got (for a progress bar).
pub fn run_with_progress(
    cfg: &SimConfig,
    sharing: Sharing,
    allocator: Box<dyn Allocator>,
    progress: &mut dyn FnMut(Duration),
) -> SimReport {
    let mut sim = cluster(cfg, allocator);
    let total = Resources::new(
        cfg.agent_resources.cpus_milli * cfg.agents as u64,
        cfg.agent_resources.mem * cfg.agents as u64,
        0,
    );
    let mut tenants = tenants(cfg, total, &sim);
    let mut events: BinaryHeap<Reverse<(Duration, u64, Kind)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push =
        |events: &mut BinaryHeap<Reverse<(Duration, u64, Kind)>>, t: Duration, k: Kind| {
            seq += 1;
            events.push(Reverse((t, seq, k)));
        };
    let late = cfg.frameworks - 1;
    for f in 0..cfg.frameworks {
        let join = if f == late && cfg.frameworks > 1 {
            cfg.late_join
        } else {
            Duration::ZERO
        };
        push(&mut events, join, Kind::Join(f));
    }
    push(&mut events, Duration::ZERO, Kind::Sample);

    let mut samples = Vec::new();
    let mut late_fair: Option<f64> = None;
    while let Some(Reverse((now, _, kind))) = events.pop() {
        if now > cfg.duration {
            break;
        }
        sim.run_until(sim.start + now);
        progress(now);
        match kind {
            Kind::Join(f) => {
                let t = &mut tenants[f];
                let i = sim.add_framework(&format!("fw{f}"), &t.role);
                let fw = &mut sim.frameworks[i];
                fw.refuse_seconds = 1.0;
                if sharing == Sharing::StaticPartition {
                    fw.only_hosts = Some(t.partition.clone());
                }
                t.sim = Some(i);
                push(&mut events, now, Kind::Job(f));
            }
            Kind::Job(f) => {
                let (i, shape) = (tenants[f].sim.expect("joined"), tenants[f].shape);
                let n = sim.rng.range(5, 2 * MEAN_TASKS_PER_JOB as u64 - 5);
                for _ in 0..n {
                    let secs = sim.rng.exp(MEAN_DURATION).clamp(1.0, 600.0);
                    sim.submit_task(i, Duration::from_secs_f64(secs), shape);
                }
                // A late joiner starts with a big backlog so its ramp-up is visible.
                if f == late && now == cfg.late_join && cfg.frameworks > 1 {
                    for _ in 0..(5 * MEAN_TASKS_PER_JOB as u64) {
                        sim.submit_task(i, Duration::from_secs_f64(MEAN_DURATION), shape);
                    }
                }
                let gap = Duration::from_secs_f64(sim.rng.exp(1.0 / tenants[f].job_rate));
                push(&mut events, now + gap, Kind::Job(f));
            }
            Kind::Sample => {
                let s = sample(&sim, &tenants, total, now);
                if cfg.frameworks > 1 && late_fair.is_none() && tenants[late].sim.is_some() {
                    let active_weight = active_weight(&tenants);
                    let fair = tenants[late].weight / active_weight;
                    if s.shares[late] >= 0.9 * fair {
                        late_fair = Some((now - cfg.late_join).as_secs_f64());
                    }
                }
                samples.push(s);
                push(&mut events, now + cfg.sample_every, Kind::Sample);
            }
        }
    }
    summarize(&sim, &tenants, sharing, samples, late_fair)
}

/// The simulated cluster: the master with the roles' weights and `allocator`, and the agents.
fn cluster(cfg: &SimConfig, allocator: Box<dyn Allocator>) -> Sim {
    let mut master = MasterConfig {
        run_id: "sim".into(),
        ..MasterConfig::default()
    };
    for (i, w) in cfg.role_weights.iter().enumerate() {
        master.roles.insert(
            format!("r{i}"),
            master::allocator::RoleSpec {
                weight: *w,
                ..Default::default()
            },
        );
    }
    // Messages arrive at once and tasks start at once: the report is about allocation.
    let opts = SimOptions {
        seed: cfg.seed,
        master,
        latency_ms: (0, 0),
        prepare: Duration::ZERO,
        trace: false,
        check_invariants: false,
        ..SimOptions::default()
    };
    let mut sim = Sim::with_options(opts, allocator);
    for i in 0..cfg.agents {
        sim.add_agent(AgentInfo {
            datasets: Vec::new(),
            hostname: format!("agent{i}"),
            resources: cfg.agent_resources,
            reservations: vec![],
            attributes: vec![],
        });
    }
    sim
}

/// The workload's frameworks: alternating shapes (cpu-heavy, memory-heavy, balanced), demand
/// scaled to the load, and each one's slice of the agents for static partitioning.
fn tenants(cfg: &SimConfig, total: Resources, sim: &Sim) -> Vec<Tenant> {
    let shapes = [
        Resources::new(1000, GIB, 0),
        Resources::new(250, 4 * GIB, 0),
        Resources::new(500, 2 * GIB, 0),
    ];
    let mut tenants: Vec<Tenant> = (0..cfg.frameworks)
        .map(|f| {
            let shape = shapes[f % shapes.len()];
            let role_idx = f % cfg.role_weights.len().max(1);
            // Each framework alone would offer load/frameworks of the cluster's dominant resource.
            let per_task_share = shape.dominant_share(&total);
            let target = cfg.load / cfg.frameworks as f64;
            Tenant {
                role: format!("r{role_idx}"),
                weight: cfg.role_weights.get(role_idx).copied().unwrap_or(1.0),
                shape,
                job_rate: target / (per_task_share * MEAN_TASKS_PER_JOB * MEAN_DURATION),
                sim: None,
                partition: BTreeSet::new(),
            }
        })
        .collect();
    // Static partitioning: agents dealt to frameworks in proportion to their weights.
    let total_weight: f64 = tenants.iter().map(|t| t.weight).sum();
    let mut dealt = 0usize;
    let count = tenants.len();
    for (f, t) in tenants.iter_mut().enumerate() {
        let n = if f + 1 == count {
            cfg.agents - dealt
        } else {
            ((t.weight / total_weight) * cfg.agents as f64).round() as usize
        };
        t.partition = (dealt..(dealt + n).min(cfg.agents))
            .map(|i| sim.agent_hostname(i).to_owned())
            .collect();
        dealt = (dealt + n).min(cfg.agents);
    }
    tenants
}

/// Each framework's fair share at `t` seconds: its weight over the weights of the frameworks
/// that joined by then (0 before it joins), as the report's fairness measures use.
pub fn fair_shares(cfg: &SimConfig, t: f64) -> Vec<f64> {
    let weight = |f: usize| {
        let r = f % cfg.role_weights.len().max(1);
        cfg.role_weights.get(r).copied().unwrap_or(1.0)
    };
    let late = cfg.frameworks - 1;
    let joined = |f: usize| f != late || cfg.frameworks == 1 || t >= cfg.late_join.as_secs_f64();
    let active: f64 = (0..cfg.frameworks).filter(|f| joined(*f)).map(weight).sum();
    (0..cfg.frameworks)
        .map(|f| {
            if joined(f) && active > 0.0 {
                weight(f) / active
            } else {
                0.0
            }
        })
        .collect()
}

/// The weight of the frameworks that have joined.
fn active_weight(tenants: &[Tenant]) -> f64 {
    tenants
        .iter()
        .filter(|t| t.sim.is_some())
        .map(|t| t.weight)
        .sum()
}

/// Utilization and shares at `now`, as the frameworks know their running tasks.
fn sample(sim: &Sim, tenants: &[Tenant], total: Resources, now: Duration) -> Sample {
    let running: Vec<Resources> = tenants
        .iter()
        .map(|t| {
            t.sim
                .map_or(Resources::ZERO, |i| sim.frameworks[i].running())
        })
        .collect();
    let used = running.iter().fold(Resources::ZERO, |acc, r| acc + *r);
    let shares: Vec<f64> = running.iter().map(|r| r.dominant_share(&total)).collect();
    let active_weight = active_weight(tenants);
    let wanting: Vec<f64> = tenants
        .iter()
        .zip(&shares)
        .filter(|(t, _)| t.sim.is_some_and(|i| !sim.frameworks[i].pending.is_empty()))
        .map(|(t, s)| s / (t.weight / active_weight))
        .collect();
    Sample {
        t: now.as_secs_f64(),
        cpu_util: used.cpus_milli as f64 / total.cpus_milli as f64,
        mem_util: used.mem as f64 / total.mem as f64,
        shares,
        jain: jain(&wanting),
    }
}

/// The report of a finished run.
fn summarize(
    sim: &Sim,
    tenants: &[Tenant],
    sharing: Sharing,
    samples: Vec<Sample>,
    late_fair: Option<f64>,
) -> SimReport {
    let waits: Vec<Duration> = tenants
        .iter()
        .filter_map(|t| t.sim)
        .flat_map(|i| sim.frameworks[i].waits())
        .collect();
    let n = samples.len().max(1) as f64;
    let contested: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.jain.is_finite() && s.jain > 0.0)
        .collect();
    SimReport {
        sharing,
        mean_cpu_util: samples.iter().map(|s| s.cpu_util).sum::<f64>() / n,
        mean_mem_util: samples.iter().map(|s| s.mem_util).sum::<f64>() / n,
        mean_jain: if contested.is_empty() {
            1.0
        } else {
            contested.iter().map(|s| s.jain).sum::<f64>() / contested.len() as f64
        },
        late_time_to_fair_share: late_fair,
        finished: tenants
            .iter()
            .map(|t| t.sim.map_or(0, |i| sim.frameworks[i].finished()))
            .collect(),
        mean_wait: if waits.is_empty() {
            0.0
        } else {
            waits.iter().map(Duration::as_secs_f64).sum::<f64>() / waits.len() as f64
        },
        samples,
    }
}

#[cfg(test)]
mod tests {
    use super::super::report::render;
    use super::*;
    use master::allocator::drf::Drf;

    fn small() -> SimConfig {
        SimConfig {
            agents: 10,
            frameworks: 3,
            duration: Duration::from_secs(300),
            late_join: Duration::from_secs(100),
            ..SimConfig::default()
        }
    }

    #[test]
    fn fair_shares_follow_weights_and_the_late_join() {
        let cfg = SimConfig {
            role_weights: vec![1.0, 2.0],
            ..small()
        };
        assert_eq!(fair_shares(&cfg, 0.0), vec![1.0 / 3.0, 2.0 / 3.0, 0.0]);
        assert_eq!(fair_shares(&cfg, 100.0), vec![0.25, 0.5, 0.25]);
    }

    #[test]
    fn same_seed_same_report() {
        let a = render(
            &small(),
            &run(&small(), Sharing::Offers, Box::new(Drf::new())),
            &run(&small(), Sharing::StaticPartition, Box::new(Drf::new())),
        );
        let b = render(
            &small(),
            &run(&small(), Sharing::Offers, Box::new(Drf::new())),
            &run(&small(), Sharing::StaticPartition, Box::new(Drf::new())),
        );
        assert_eq!(a, b);
        let mut other = small();
        other.seed = 2;
        let c = render(
            &other,
            &run(&other, Sharing::Offers, Box::new(Drf::new())),
            &run(&other, Sharing::StaticPartition, Box::new(Drf::new())),
        );
        assert_ne!(a, c);
    }

    #[test]
    fn sharing_by_offers_beats_static_partitioning() {
        let cfg = small();
        let shared = run(&cfg, Sharing::Offers, Box::new(Drf::new()));
        let part = run(&cfg, Sharing::StaticPartition, Box::new(Drf::new()));
        assert!(shared.finished.iter().sum::<u64>() > 0);
        assert!(
            shared.mean_cpu_util.max(shared.mean_mem_util)
                >= part.mean_cpu_util.max(part.mean_mem_util)
        );
        assert!(shared.late_time_to_fair_share.is_some());
    }
}
