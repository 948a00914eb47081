//! The two ways the bench drives the cluster: one task at a time (latency) and as many as the
//! offers fit (throughput). Every `TASK_FINISHED` must carry the greeting in its stdout tail;
//! any other end aborts the run.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proto::{AgentId, Digest, Resources, TaskState, TaskStatus};
use sdk::TaskBuilder;

use super::offers::{Driver, Pool};
use super::{BenchError, GREETING};

/// Per-task timings of a sequential run.
pub(super) struct Sequential {
    pub(super) accept_to_running: Vec<Duration>,
    pub(super) accept_to_finished: Vec<Duration>,
    pub(super) offer_wait: Vec<Duration>,
    pub(super) cycle: Vec<Duration>,
}

/// Checks a terminal status: `Ok(true)` for a greeting `TASK_FINISHED`, an error for any other end.
fn check_end(s: &TaskStatus) -> Result<bool, BenchError> {
    if !s.state.is_terminal() {
        return Ok(false);
    }
    let id = s.task_id.as_str();
    if s.state != TaskState::Finished {
        return Err(BenchError::Task(format!(
            "task {id} ended {:?}: {} {}",
            s.state, s.message, s.stderr_tail
        )));
    }
    if !s.stdout_tail.contains(GREETING) {
        return Err(BenchError::Task(format!(
            "task {id} finished without its greeting: {:?}",
            s.stdout_tail
        )));
    }
    Ok(true)
}

/// Runs `count` tasks of `module` in `each` one at a time, round robin over `agents`, each
/// timed from just before its accept.
pub(super) async fn sequential(
    d: &mut Driver,
    module: Digest,
    each: Resources,
    agents: &[AgentId],
    prefix: &str,
    count: usize,
) -> Result<Sequential, BenchError> {
    let mut out = Sequential {
        accept_to_running: Vec::with_capacity(count),
        accept_to_finished: Vec::with_capacity(count),
        offer_wait: Vec::with_capacity(count),
        cycle: Vec::with_capacity(count),
    };
    for i in 0..count {
        let agent = &agents[i % agents.len()];
        let start = Instant::now();
        while !d.pool.available(agent).contains(&each) {
            d.next_update().await?;
        }
        let offer_wait = start.elapsed();
        let id = format!("{prefix}-{i}");
        let task = TaskBuilder::new(&id, module)
            .resources(each)
            .build(&d.pool.by_agent[agent][0]);
        let t0 = Instant::now();
        d.accept(agent, vec![task])?;
        let mut running = None;
        loop {
            let Some(s) = d.next_update().await? else {
                continue;
            };
            if s.task_id.as_str() != id {
                continue;
            }
            if s.state == TaskState::Running {
                running = Some(t0.elapsed());
            }
            if check_end(&s)? {
                break;
            }
        }
        let done = t0.elapsed();
        out.accept_to_finished.push(done);
        out.accept_to_running.push(running.unwrap_or(done));
        out.offer_wait.push(offer_wait);
        out.cycle.push(start.elapsed());
    }
    Ok(out)
}

/// Result of one throughput round.
pub(super) struct Throughput {
    pub(super) wall: Duration,
    pub(super) accepts: usize,
    pub(super) max_in_flight: usize,
    /// Accept → `TASK_FINISHED` of each task, queueing included.
    pub(super) per_task: Vec<Duration>,
}

/// Runs `total` tasks of `module` in `each`, as many at once as the offers fit.
pub(super) async fn throughput(
    d: &mut Driver,
    module: Digest,
    each: Resources,
    prefix: &str,
    total: usize,
) -> Result<Throughput, BenchError> {
    let mut launched_at: HashMap<String, Instant> = HashMap::with_capacity(total);
    let mut per_task = Vec::with_capacity(total);
    let (mut launched, mut finished, mut accepts, mut max_in_flight) = (0usize, 0usize, 0, 0);
    let start = Instant::now();
    while finished < total {
        // Launch whatever fits on every agent whose held offers fit at least one task.
        let agents: Vec<AgentId> = d.pool.by_agent.keys().cloned().collect();
        for agent in agents {
            let k = Pool::fit(d.pool.available(&agent), each).min(total - launched);
            if k == 0 {
                continue;
            }
            let offer = d.pool.by_agent[&agent][0].clone();
            let now = Instant::now();
            let tasks = (launched..launched + k)
                .map(|i| {
                    let id = format!("{prefix}-{i}");
                    launched_at.insert(id.clone(), now);
                    TaskBuilder::new(&id, module).resources(each).build(&offer)
                })
                .collect();
            d.accept(&agent, tasks)?;
            launched += k;
            accepts += 1;
        }
        max_in_flight = max_in_flight.max(launched - finished);
        // Handle one event, then everything already queued, before launching again.
        let mut updates = vec![d.next_update().await?];
        while let Some(u) = d.try_next().await? {
            updates.push(u);
        }
        for s in updates.into_iter().flatten() {
            if check_end(&s)? {
                if let Some(t) = launched_at.remove(s.task_id.as_str()) {
                    per_task.push(t.elapsed());
                    finished += 1;
                }
            }
        }
    }
    Ok(Throughput {
        wall: start.elapsed(),
        accepts,
        max_in_flight,
        per_task,
    })
}
