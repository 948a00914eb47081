//! `tessera sim --workload locality`: delay scheduling for data locality, after the Mesos
//! paper's Hadoop experiment (NSDI 2011, §6.3) and Zaharia et al. (EuroSys 2010).
//!
//! The real master core and allocator (DRF) in virtual time, with agents of a few task slots
//! each holding input blocks as data sets: every block lives on `replication` agents drawn at
//! random (like HDFS). Frameworks receive jobs over time (Poisson arrivals, mostly small jobs
//! with a tail of large ones, like the Facebook traces of the paper); each task reads one block
//! and prefers the agents holding it. A task on such an agent runs its base time; elsewhere it
//! reads its block over the network and runs [`LocalityConfig::slowdown`] times longer.
//!
//! The simulated schedulers answer offers with the SDK's own delay-scheduling helper
//! (`sdk::delay`, through `cluster::sim::locality`), once per wait, and once more under static
//! partitioning (each framework owns a fixed slice of the agents, wait 0) as the anchor.
//! Arrivals and block placement are drawn from the seed by a generator of their own, so every
//! run sees the same jobs and the same blocks.

use cluster::sim::locality::LocalityPolicy;
use cluster::sim::{Sim, SimOptions};
use cluster::Rng;
use master::allocator::drf::Drf;
use master::core::MasterConfig;
use proto::resources::GIB;
use proto::{AgentInfo, Resources};
use sdk::delay::DelayConfig;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// What to simulate.
#[derive(Clone, Debug)]
pub struct LocalityConfig {
    /// Seed of every random draw.
    pub seed: u64,
    /// Number of agents.
    pub agents: usize,
    /// Task slots per agent (each task takes one cpu).
    pub slots: u64,
    /// Number of frameworks.
    pub frameworks: usize,
    /// Blocks held per agent, on average, counting replicas.
    pub blocks_per_agent: usize,
    /// Replicas of each block.
    pub replication: usize,
    /// How long jobs keep arriving (the run then lasts until every job is done).
    pub duration: Duration,
    /// Mean offered load as a fraction of the slots (counting tasks at their local speed).
    pub load: f64,
    /// How many times longer a task runs away from its block.
    pub slowdown: f64,
    /// Mean base run time of a task, in seconds.
    pub mean_task_secs: f64,
    /// Check the master's invariants after every step (a test oracle; slow on large runs).
    pub check_invariants: bool,
}

impl Default for LocalityConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            agents: 100,
            slots: 4,
            frameworks: 10,
            blocks_per_agent: 30,
            replication: 3,
            duration: Duration::from_secs(600),
            load: 0.6,
            slowdown: 2.0,
            mean_task_secs: 20.0,
            check_invariants: false,
        }
    }
}

/// How the frameworks place their tasks in one run.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Placement {
    /// Sharing the cluster by offers, each framework delaying non-local tasks this long.
    Delay {
        /// The wait, in seconds.
        wait_secs: f64,
    },
    /// Each framework owns a fixed slice of the agents and takes any of its own offers.
    StaticPartition,
}

impl Placement {
    /// A label for tables.
    pub fn label(&self) -> String {
        match self {
            Placement::Delay { wait_secs } => format!("offers, wait {wait_secs} s"),
            Placement::StaticPartition => "static partitioning".into(),
        }
    }
}

/// The outcome of one run.
#[derive(Clone, Debug, Serialize)]
pub struct LocalityReport {
    /// How tasks were placed.
    pub placement: Placement,
    /// Tasks launched.
    pub tasks: u64,
    /// Fraction of them on an agent holding their block.
    pub node_local: f64,
    /// Jobs that completed.
    pub jobs: u64,
    /// Mean job response time (arrival to last task's end), seconds.
    pub mean_response: f64,
    /// 95th percentile of it, seconds.
    pub p95_response: f64,
    /// Fraction of the cluster's slots busy during the arrival period.
    pub utilization: f64,
    /// Offers declined whole (delay scheduling's cost in messages).
    pub declined_offers: u64,
}

/// A job of the workload.
struct Job {
    framework: usize,
    arrival: Duration,
    /// The block each task reads, and its base run time.
    tasks: Vec<(usize, Duration)>,
}

/// The workload drawn from the seed: which agents hold each block, and the jobs.
struct Workload {
    /// Hostnames holding each block.
    holders: Vec<BTreeSet<usize>>,
    jobs: Vec<Job>,
}

/// Name of block `b` as a data set.
fn block(b: usize) -> String {
    format!("blk{b:05}")
}

/// Draws the block placement and the jobs.
fn draw(cfg: &LocalityConfig) -> Workload {
    let mut rng = Rng::new(cfg.seed ^ 0x10ca_1175);
    let replication = cfg.replication.clamp(1, cfg.agents);
    let nblocks = (cfg.agents * cfg.blocks_per_agent / replication).max(1);
    let holders = (0..nblocks)
        .map(|_| {
            let mut h = BTreeSet::new();
            while h.len() < replication {
                h.insert(rng.range(0, cfg.agents as u64) as usize);
            }
            h
        })
        .collect::<Vec<_>>();
    // Job sizes: half small (1-10 tasks), 40% medium (10-50), 10% large (50-200).
    let size = |rng: &mut Rng| -> usize {
        let u = rng.unit();
        if u < 0.5 {
            rng.range(1, 11) as usize
        } else if u < 0.9 {
            rng.range(10, 51) as usize
        } else {
            rng.range(50, 201) as usize
        }
    };
    let mean_tasks = 0.5 * 5.5 + 0.4 * 30.0 + 0.1 * 125.0;
    let slots = (cfg.agents as u64 * cfg.slots) as f64;
    // Jobs per second per framework so that the work offered is `load` of the slots.
    let rate = cfg.load * slots / (cfg.frameworks as f64 * mean_tasks * cfg.mean_task_secs);
    let mut jobs = Vec::new();
    for f in 0..cfg.frameworks {
        let mut t = rng.exp(1.0 / rate);
        while t < cfg.duration.as_secs_f64() {
            let n = size(&mut rng);
            // A job reads a file: consecutive blocks from a random start.
            let start = rng.range(0, nblocks as u64) as usize;
            let tasks = (0..n)
                .map(|k| {
                    let secs = rng
                        .exp(cfg.mean_task_secs)
                        .clamp(1.0, 10.0 * cfg.mean_task_secs);
                    ((start + k) % nblocks, Duration::from_secs_f64(secs))
                })
                .collect();
            jobs.push(Job {
                framework: f,
                arrival: Duration::from_secs_f64(t),
                tasks,
            });
            t += rng.exp(1.0 / rate);
        }
    }
    jobs.sort_by_key(|j| (j.arrival, j.framework));
    Workload { holders, jobs }
}

/// Runs the workload once with `placement`.
pub fn run(cfg: &LocalityConfig, placement: Placement) -> LocalityReport {
    let w = draw(cfg);
    let mut sim = cluster(cfg, &w);
    let wait = match placement {
        Placement::Delay { wait_secs } => Duration::from_secs_f64(wait_secs),
        Placement::StaticPartition => Duration::ZERO,
    };
    let delay = DelayConfig {
        wait,
        refuse: Duration::from_secs(1),
        idle_refuse: Duration::from_secs(30),
    };
    let per = cfg.agents / cfg.frameworks.max(1);
    for f in 0..cfg.frameworks {
        let i = sim.add_framework(&format!("fw{f}"), "*");
        let fw = &mut sim.frameworks[i];
        fw.locality = Some(LocalityPolicy::new(delay, cfg.slowdown));
        if placement == Placement::StaticPartition {
            let hi = if f + 1 == cfg.frameworks {
                cfg.agents
            } else {
                (f + 1) * per
            };
            fw.only_hosts = Some((f * per..hi).map(hostname).collect());
        }
    }
    let task_res = Resources::new(1000, GIB, 0);
    let mut arrivals: BTreeMap<String, Duration> = BTreeMap::new();
    for (j, job) in w.jobs.iter().enumerate() {
        sim.run_until(sim.start + job.arrival);
        let name = format!("j{j}");
        arrivals.insert(name.clone(), job.arrival);
        for (k, (b, run)) in job.tasks.iter().enumerate() {
            let id = format!("{name}-t{k}");
            sim.submit_located(job.framework, &name, &id, *run, vec![block(*b)], task_res);
        }
    }
    sim.drive_until(50_000_000, Sim::all_done);
    summarize(cfg, &sim, placement, &arrivals)
}

fn hostname(i: usize) -> String {
    format!("agent{i:03}")
}

/// The master (DRF, no latency, tasks start at once) and the agents with their blocks.
fn cluster(cfg: &LocalityConfig, w: &Workload) -> Sim {
    let opts = SimOptions {
        seed: cfg.seed,
        master: MasterConfig {
            run_id: "sim".into(),
            ..MasterConfig::default()
        },
        latency_ms: (0, 0),
        prepare: Duration::ZERO,
        trace: false,
        check_invariants: cfg.check_invariants,
        ..SimOptions::default()
    };
    let mut sim = Sim::with_options(opts, Box::new(Drf::new()));
    let mut held: Vec<Vec<String>> = vec![Vec::new(); cfg.agents];
    for (b, h) in w.holders.iter().enumerate() {
        for a in h {
            held[*a].push(block(b));
        }
    }
    for (i, datasets) in held.into_iter().enumerate() {
        sim.add_agent(AgentInfo {
            hostname: hostname(i),
            resources: Resources::new(cfg.slots * 1000, cfg.slots * 2 * GIB, 0),
            reservations: vec![],
            attributes: vec![],
            datasets,
        });
    }
    sim
}

/// Locality, job response times and utilization of a finished run.
fn summarize(
    cfg: &LocalityConfig,
    sim: &Sim,
    placement: Placement,
    arrivals: &BTreeMap<String, Duration>,
) -> LocalityReport {
    let start: Instant = sim.start;
    let horizon = cfg.duration.as_secs_f64();
    let mut tasks = 0u64;
    let mut local = 0u64;
    let mut declined = 0u64;
    let mut job_end: BTreeMap<&str, f64> = BTreeMap::new();
    let mut unfinished: BTreeSet<&str> = BTreeSet::new();
    let mut busy = 0.0;
    for fw in &sim.frameworks {
        let Some(policy) = &fw.locality else { continue };
        declined += policy.helper.stats().declined;
        for (id, p) in &policy.placed {
            tasks += 1;
            local += u64::from(p.local);
            let l = &fw.launched[id];
            match l.ended_at {
                Some(e) => {
                    let e = (e - start).as_secs_f64();
                    let end = job_end.entry(p.job.as_str()).or_insert(0.0);
                    *end = end.max(e);
                }
                None => {
                    unfinished.insert(p.job.as_str());
                }
            }
            if let Some(s) = l.started_at {
                let s = (s - start).as_secs_f64();
                let e = l.ended_at.map_or(horizon, |e| (e - start).as_secs_f64());
                busy += (e.min(horizon) - s.min(horizon)).max(0.0);
            }
        }
    }
    let mut responses: Vec<f64> = job_end
        .iter()
        .filter(|(j, _)| !unfinished.contains(*j))
        .map(|(j, end)| end - arrivals[*j].as_secs_f64())
        .collect();
    responses.sort_by(f64::total_cmp);
    let n = responses.len();
    let slots = (cfg.agents as u64 * cfg.slots) as f64;
    LocalityReport {
        placement,
        tasks,
        node_local: if tasks == 0 {
            0.0
        } else {
            local as f64 / tasks as f64
        },
        jobs: n as u64,
        mean_response: if n == 0 {
            0.0
        } else {
            responses.iter().sum::<f64>() / n as f64
        },
        p95_response: if n == 0 {
            0.0
        } else {
            responses[((0.95 * n as f64).ceil() as usize).clamp(1, n) - 1]
        },
        utilization: busy / (slots * horizon),
        declined_offers: declined,
    }
}

/// Renders the runs as a table (the first row is the anchor the speed-ups are relative to).
pub fn render(cfg: &LocalityConfig, runs: &[LocalityReport]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "tessera sim --workload locality: seed {}, {} agents x {} slots, {} frameworks, blocks \
         x{} replicas ({} per agent), jobs arriving for {} s at load {:.2}, non-local tasks {}x \
         slower",
        cfg.seed,
        cfg.agents,
        cfg.slots,
        cfg.frameworks,
        cfg.replication,
        cfg.blocks_per_agent,
        cfg.duration.as_secs(),
        cfg.load,
        cfg.slowdown
    );
    let _ = writeln!(
        out,
        "\n{:<22} | {:>6} | {:>10} | {:>5} | {:>11} | {:>10} | {:>8} | {:>11} | {:>8}",
        "placement",
        "tasks",
        "node-local",
        "jobs",
        "mean resp.",
        "p95 resp.",
        "speed-up",
        "utilization",
        "declines"
    );
    let anchor = runs.first().map_or(0.0, |r| r.mean_response);
    for r in runs {
        let _ = writeln!(
            out,
            "{:<22} | {:>6} | {:>9.1}% | {:>5} | {:>10.1}s | {:>9.1}s | {:>7.2}x | {:>10.1}% | {:>8}",
            r.placement.label(),
            r.tasks,
            r.node_local * 100.0,
            r.jobs,
            r.mean_response,
            r.p95_response,
            if r.mean_response > 0.0 { anchor / r.mean_response } else { 0.0 },
            r.utilization * 100.0,
            r.declined_offers
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> LocalityConfig {
        LocalityConfig {
            agents: 20,
            frameworks: 4,
            duration: Duration::from_secs(300),
            ..LocalityConfig::default()
        }
    }

    #[test]
    fn a_one_second_wait_gives_far_more_locality_than_none() {
        // The master's books are checked after every step while the frameworks decline.
        let cfg = LocalityConfig {
            check_invariants: true,
            ..small()
        };
        let none = run(&cfg, Placement::Delay { wait_secs: 0.0 });
        let one = run(&cfg, Placement::Delay { wait_secs: 1.0 });
        assert!(
            none.tasks > 100 && one.tasks == none.tasks,
            "{none:?} {one:?}"
        );
        assert!(one.node_local >= 0.9, "{one:?}");
        assert!(
            one.node_local > none.node_local + 0.25,
            "{none:?} vs {one:?}"
        );
        assert_eq!(one.jobs, none.jobs);
    }

    #[test]
    fn same_seed_same_report() {
        let mut cfg = small();
        cfg.duration = Duration::from_secs(60);
        let a = render(&cfg, &[run(&cfg, Placement::Delay { wait_secs: 1.0 })]);
        let b = render(&cfg, &[run(&cfg, Placement::Delay { wait_secs: 1.0 })]);
        assert_eq!(a, b);
    }
}
