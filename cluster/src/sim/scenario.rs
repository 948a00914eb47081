//! Seeded fault scenarios for [`Sim`]: a schedule of [`Fault`]s at virtual times, drawn from a
//! seed, mixing every fault kind the simulation knows (loss and delay on agents' and
//! frameworks' links, partitions short and long, cuts, agent restarts, agent crashes with and
//! without their guests' runtime, master restarts from the registry, framework link cuts,
//! clock jumps), and played against a running
//! workload. The master's invariants are checked after every step by the simulation itself;
//! [`Scenario::play`] only applies the faults at their times.
//!
//! [`Fault`] is the one list of fault kinds: a new verb of the simulation becomes a variant
//! here, an arm in [`Fault::apply`] and, if scenarios should draw it, a weight in
//! [`Scenario::generate`].

use super::Sim;
use std::time::{Duration, Instant};

/// One fault, applied at one moment.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Agent `agent`'s link loses a `rate` fraction of its datagrams ([`Sim::drop`]).
    Drop {
        /// Which agent.
        agent: usize,
        /// Loss rate, below 1.
        rate: f64,
    },
    /// Agent `agent`'s link gets `extra` one-way latency ([`Sim::delay`]).
    Delay {
        /// Which agent.
        agent: usize,
        /// Added latency.
        extra: Duration,
    },
    /// Agent `agent`'s link goes silent until a [`Fault::Recover`] ([`Sim::isolate`]).
    Isolate {
        /// Which agent.
        agent: usize,
    },
    /// Agent `agent`'s link drops ([`Sim::cut`]).
    Cut {
        /// Which agent.
        agent: usize,
    },
    /// Agent `agent`'s link is clean again ([`Sim::recover`]).
    Recover {
        /// Which agent.
        agent: usize,
    },
    /// Agent `agent` restarts, its memory and guests gone ([`Sim::restart_agent`]).
    RestartAgent {
        /// Which agent.
        agent: usize,
    },
    /// Framework `framework`'s link drops; it re-subscribes ([`Sim::cut_framework`]).
    CutFramework {
        /// Which framework.
        framework: usize,
    },
    /// The clock moves forward at once ([`Sim::jump`]).
    Jump(Duration),
    /// Framework `framework`'s link loses a `rate` fraction of its datagrams
    /// ([`Sim::drop_framework`]).
    DropFramework {
        /// Which framework.
        framework: usize,
        /// Loss rate, below 1.
        rate: f64,
    },
    /// Framework `framework`'s link gets `extra` one-way latency ([`Sim::delay_framework`]).
    DelayFramework {
        /// Which framework.
        framework: usize,
        /// Added latency.
        extra: Duration,
    },
    /// Framework `framework`'s link is clean again ([`Sim::recover_framework`]).
    RecoverFramework {
        /// Which framework.
        framework: usize,
    },
    /// The master process is killed and restarted from its registry ([`Sim::restart_master`]).
    RestartMaster,
    /// Agent `agent`'s process is killed; its guests keep running, and it recovers from its
    /// checkpoint and reattaches to them ([`Sim::crash_agent_keep_guests`]).
    CrashAgent {
        /// Which agent.
        agent: usize,
    },
    /// Agent `agent`'s process and its runtime are killed: it recovers from its checkpoint and
    /// its launched tasks fail with `RuntimeLost` ([`Sim::crash_agent_and_runtime`]).
    CrashAgentAndRuntime {
        /// Which agent.
        agent: usize,
    },
}

impl Fault {
    /// Applies the fault to `sim` now.
    pub fn apply(&self, sim: &mut Sim) {
        match *self {
            Fault::Drop { agent, rate } => sim.drop(agent, rate),
            Fault::Delay { agent, extra } => sim.delay(agent, extra),
            Fault::Isolate { agent } => sim.isolate(agent),
            Fault::Cut { agent } => sim.cut(agent),
            Fault::Recover { agent } => sim.recover(agent),
            Fault::RestartAgent { agent } => sim.restart_agent(agent),
            Fault::CutFramework { framework } => sim.cut_framework(framework),
            Fault::Jump(d) => sim.jump(d),
            Fault::DropFramework { framework, rate } => sim.drop_framework(framework, rate),
            Fault::DelayFramework { framework, extra } => sim.delay_framework(framework, extra),
            Fault::RecoverFramework { framework } => sim.recover_framework(framework),
            Fault::RestartMaster => sim.restart_master(),
            Fault::CrashAgent { agent } => sim.crash_agent_keep_guests(agent),
            Fault::CrashAgentAndRuntime { agent } => sim.crash_agent_and_runtime(agent),
        }
    }

    /// Whether the fault ends tasks through no fault of their own (a restarted agent's
    /// guests are gone): scenarios with one may see tasks lost or gone.
    pub fn loses_tasks(&self) -> bool {
        matches!(self, Fault::RestartAgent { .. })
    }

    /// Whether the fault kills guests with their runtime: their tasks end TASK_FAILED
    /// (`RuntimeLost`).
    pub fn loses_runtime(&self) -> bool {
        matches!(self, Fault::CrashAgentAndRuntime { .. })
    }
}

/// What a generated scenario may contain.
#[derive(Clone, Debug)]
pub struct ScenarioShape {
    /// Agents in the cluster the faults target.
    pub agents: usize,
    /// Frameworks in it.
    pub frameworks: usize,
    /// Faults are drawn at random times in `[0, span)` after the start.
    pub span: Duration,
    /// How many random faults.
    pub faults: usize,
    /// A partition of one agent this long (isolated, then recovered), at a random time in the
    /// span; `None` for none.
    pub long_partition: Option<Duration>,
    /// Whether faults that lose guests may be drawn: agent restarts (memory and guests gone)
    /// and agent crashes that take the runtime with them.
    pub restarts: bool,
    /// Whether master restarts and agent crashes that keep their guests may be drawn (nothing
    /// may be lost to them).
    pub recoveries: bool,
    /// Longest clock jump drawn.
    pub max_jump: Duration,
}

impl Default for ScenarioShape {
    /// Three agents, two frameworks, 16 faults in the first minute, one 3-minute partition,
    /// restarts and recoveries, jumps of up to 30 s.
    fn default() -> Self {
        Self {
            agents: 3,
            frameworks: 2,
            span: Duration::from_secs(60),
            faults: 16,
            long_partition: Some(Duration::from_secs(180)),
            restarts: true,
            recoveries: true,
            max_jump: Duration::from_secs(30),
        }
    }
}

/// Faults at virtual times after a scenario's start, in time order.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// `(offset from the start, fault)`, sorted by offset.
    pub steps: Vec<(Duration, Fault)>,
}

impl Scenario {
    /// Draws a scenario of `shape` from `seed`. Every isolation and every loss or delay is
    /// followed by a recovery of that agent's link within the span (a partition of the
    /// `long_partition` length lasts that long), so the cluster can always settle.
    pub fn generate(seed: u64, shape: &ScenarioShape) -> Self {
        let mut rng = crate::Rng::new(seed ^ 0x5eed_fa17);
        let span_ms = shape.span.as_millis().max(1) as u64;
        let mut steps = Vec::new();
        let agent = |rng: &mut crate::Rng| rng.range(0, shape.agents as u64) as usize;
        for _ in 0..shape.faults {
            let at = Duration::from_millis(rng.range(0, span_ms));
            // Heals within a few seconds to half a minute.
            let heal = at + Duration::from_millis(rng.range(500, 30_000));
            // Kinds 9 to 13 are the process faults: master restarts and agent crashes that
            // keep their guests weigh two each, so about nine seeds in ten see at least one
            // of either in 16 draws, and 169 of the first 200 both.
            let kind = rng.range(0, 14);
            match kind {
                0 => {
                    let a = agent(&mut rng);
                    let rate = rng.range(5, 40) as f64 / 100.0;
                    steps.push((at, Fault::Drop { agent: a, rate }));
                    steps.push((heal, Fault::Recover { agent: a }));
                }
                1 => {
                    let a = agent(&mut rng);
                    let extra = Duration::from_millis(rng.range(50, 800));
                    steps.push((at, Fault::Delay { agent: a, extra }));
                    steps.push((heal, Fault::Recover { agent: a }));
                }
                2 => {
                    let a = agent(&mut rng);
                    steps.push((at, Fault::Isolate { agent: a }));
                    steps.push((heal, Fault::Recover { agent: a }));
                }
                3 => steps.push((
                    at,
                    Fault::Cut {
                        agent: agent(&mut rng),
                    },
                )),
                4 if shape.restarts => steps.push((
                    at,
                    Fault::RestartAgent {
                        agent: agent(&mut rng),
                    },
                )),
                5 if shape.frameworks > 0 => {
                    let framework = rng.range(0, shape.frameworks as u64) as usize;
                    steps.push((at, Fault::CutFramework { framework }));
                }
                6 => {
                    let max = shape.max_jump.as_millis().max(2) as u64;
                    steps.push((at, Fault::Jump(Duration::from_millis(rng.range(1, max)))));
                }
                // A framework's link lossy and long.
                8 if shape.frameworks > 0 => {
                    let framework = rng.range(0, shape.frameworks as u64) as usize;
                    let rate = rng.range(5, 30) as f64 / 100.0;
                    let extra = Duration::from_millis(rng.range(50, 300));
                    steps.push((at, Fault::DropFramework { framework, rate }));
                    steps.push((at, Fault::DelayFramework { framework, extra }));
                    steps.push((heal, Fault::RecoverFramework { framework }));
                }
                9 | 10 if shape.recoveries => steps.push((at, Fault::RestartMaster)),
                11 | 12 if shape.recoveries => steps.push((
                    at,
                    Fault::CrashAgent {
                        agent: agent(&mut rng),
                    },
                )),
                13 if shape.restarts => steps.push((
                    at,
                    Fault::CrashAgentAndRuntime {
                        agent: agent(&mut rng),
                    },
                )),
                // Loss and latency together on an agent's link, as on a bad long link.
                _ => {
                    let a = agent(&mut rng);
                    let rate = rng.range(5, 20) as f64 / 100.0;
                    let extra = Duration::from_millis(rng.range(50, 300));
                    steps.push((at, Fault::Drop { agent: a, rate }));
                    steps.push((at, Fault::Delay { agent: a, extra }));
                    steps.push((heal, Fault::Recover { agent: a }));
                }
            }
        }
        if let Some(long) = shape.long_partition {
            let at = Duration::from_millis(rng.range(0, span_ms));
            let a = agent(&mut rng);
            steps.push((at, Fault::Isolate { agent: a }));
            steps.push((at + long, Fault::Recover { agent: a }));
        }
        // Stable: faults drawn for the same moment keep their drawing order.
        steps.sort_by_key(|(at, _)| *at);
        Self { steps }
    }

    /// Whether any step may end tasks through no fault of their own.
    pub fn loses_tasks(&self) -> bool {
        self.steps.iter().any(|(_, f)| f.loses_tasks())
    }

    /// Whether any step kills a runtime with its guests.
    pub fn loses_runtime(&self) -> bool {
        self.steps.iter().any(|(_, f)| f.loses_runtime())
    }

    /// When the last fault happens, after the start.
    pub fn end(&self) -> Duration {
        self.steps.last().map_or(Duration::ZERO, |(at, _)| *at)
    }

    /// Plays the scenario on `sim` from `start`: runs the simulation to each step's time (every
    /// step of the simulation checks the master's invariants), applies its fault, and returns
    /// after the last one; then every agent's link is recovered, so the cluster can settle.
    pub fn play(&self, sim: &mut Sim, start: Instant) {
        for (at, fault) in &self.steps {
            let t = start + *at;
            // A clock jump may have carried the simulation past this step's time already.
            if t > sim.now {
                sim.run_until(t);
            }
            fault.apply(sim);
        }
        for i in 0..sim.agent_count() {
            sim.recover(i);
        }
        for f in 0..sim.frameworks.len() {
            sim.recover_framework(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_are_seeded_sorted_and_healed() {
        let shape = ScenarioShape::default();
        let a = Scenario::generate(1, &shape);
        assert_eq!(a, Scenario::generate(1, &shape));
        assert_ne!(a, Scenario::generate(2, &shape));
        assert!(a.steps.windows(2).all(|w| w[0].0 <= w[1].0));
        // The long partition is there, healed 3 minutes later.
        let long = a.steps.iter().find_map(|(at, f)| match f {
            Fault::Isolate { agent } => a.steps.iter().find(|(t, g)| {
                *t == *at + Duration::from_secs(180) && *g == Fault::Recover { agent: *agent }
            }),
            _ => None,
        });
        assert!(long.is_some(), "{a:?}");
    }

    #[test]
    fn most_scenarios_restart_the_master_and_recover_an_agent() {
        let shape = ScenarioShape::default();
        let both = (0..200)
            .filter(|&seed| {
                let s = Scenario::generate(seed, &shape);
                let has = |f: fn(&Fault) -> bool| s.steps.iter().any(|(_, g)| f(g));
                has(|f| *f == Fault::RestartMaster)
                    && has(|f| matches!(f, Fault::CrashAgent { .. }))
            })
            .count();
        println!("{both} of 200 seeds restart the master and recover an agent");
        assert!(both > 150, "{both} of 200");
    }
}
