//! The executor part of `tessera dev`: a key-value executor (`kvexec`, a WASI 0.2 component)
//! kept on one agent across query tasks, against the same queries run as one-shot tasks
//! (`kvquery`), then a message round trip and a shutdown on request.

use super::dev::Trace;
use anyhow::{bail, Context};
use cluster::{LocalCluster, LocalClusterConfig};
use proto::resources::{GIB, MIB};
use proto::{ExecutorId, ExecutorInfo, Filters, Offer, Resources, TaskState, TaskStatus};
use sdk::{Event, Scheduler, TaskBuilder};
use std::time::{Duration, Instant};

/// What the demonstration measured.
pub struct ExecutorFigures {
    /// Accept → end of the first query: executor start (compile, instantiate) and the table.
    pub first: Duration,
    /// Accept → end of a later query answered from the executor's memory (the fastest).
    pub warm: Duration,
    /// Accept → end of the same query as a one-shot task with its module compiled.
    pub oneshot: Duration,
}

/// A scheduler and the offers it holds.
struct Fw {
    sched: Scheduler,
    offers: Vec<Offer>,
}

impl Fw {
    async fn event(&mut self) -> anyhow::Result<Event> {
        let ev = tokio::time::timeout(Duration::from_secs(30), self.sched.next_event())
            .await
            .context("no event from the master within 30 s")?
            .context("scheduler closed")?;
        if let Event::Offers(o) = &ev {
            self.offers.extend(o.iter().cloned());
        }
        Ok(ev)
    }

    /// Launches one task on the next offer; returns when it ended, with the time it took from
    /// the accept.
    async fn run(&mut self, task: TaskBuilder) -> anyhow::Result<(TaskStatus, Duration)> {
        while self.offers.is_empty() {
            self.event().await?;
        }
        let offer = self.offers.remove(0);
        let task = task.build(&offer);
        let id = task.task_id.clone();
        let at = Instant::now();
        let none = Filters {
            refuse_seconds: 0.0,
        };
        self.sched.accept(vec![offer.id], vec![task], none)?;
        loop {
            match self.event().await? {
                Event::Update(s) if s.task_id == id && s.state.is_terminal() => {
                    return Ok((s, at.elapsed()))
                }
                Event::Rescind(o) => self.offers.retain(|x| x.id != o),
                _ => {}
            }
        }
    }
}

/// Runs the demonstration on a cluster of its own (one agent of <2 cpus, 1 GiB>).
pub async fn executor_demo(t: &Trace) -> anyhow::Result<ExecutorFigures> {
    let dir = tempfile::tempdir()?;
    let mut cfg = LocalClusterConfig::default();
    cfg.master.allocation_interval = Duration::from_millis(100);
    cfg.compiler = super::compiler(
        Some(super::DEFAULT_COMPILE_CPU_LIMIT),
        super::DEFAULT_COMPILE_MEMORY_LIMIT,
    );
    let mut cluster = LocalCluster::start(cfg, dir.path()).await?;
    cluster.add_agent("agent1", Resources::new(2000, GIB, 0))?;
    let sched = Scheduler::connect(cluster.scheduler_options("kv", "*")?).await?;
    let mut fw = Fw {
        sched,
        offers: Vec::new(),
    };
    let kvexec = std::fs::read(wasm_examples::executors::KVEXEC_EXECUTOR_PATH)
        .context("reading the kvexec component")?;
    let info = ExecutorInfo {
        executor_id: ExecutorId::from("kv"),
        name: "kvexec".into(),
        module: fw.sched.upload_module(&kvexec).await?,
        resources: Resources::new(100, 64 * MIB, 0),
        args: vec![],
        env: vec![],
        idle_timeout_ms: Some(30_000),
        kill_grace_ms: None,
    };
    let oneshot = fw.sched.upload_module(wasm_examples::KVQUERY).await?;
    let per_query = Resources::new(100, 16 * MIB, 0);
    t.say(
        "kv",
        format!(
            "executor kvexec {} of its own, queries {per_query} each; the one-shot kvquery \
             gets the executor's and a query's share together",
            info.resources
        ),
    );

    let mut executor_times = Vec::new();
    for (id, data) in [("q1", "count"), ("q2", "get:k7"), ("q3", "get:k123456")] {
        let task = TaskBuilder::new(id, info.module)
            .executor(info.clone())
            .data(data)
            .resources(per_query);
        let (s, took) = fw.run(task).await?;
        if s.state != TaskState::Finished {
            bail!("{id} ended {}: {}", s.state.name(), s.message);
        }
        t.say(
            "kv",
            format!(
                "<- {id} ({data}) in the executor: {} in {:.1} ms",
                s.message,
                ms(took)
            ),
        );
        executor_times.push(took);
    }
    let mut oneshot_times = Vec::new();
    for id in ["s1", "s2"] {
        let task = TaskBuilder::new(id, oneshot)
            .args(["get:k7"])
            .resources(per_query + Resources::new(100, 112 * MIB, 0));
        let (s, took) = fw.run(task).await?;
        if s.state != TaskState::Finished {
            bail!("{id} ended {}: {}", s.state.name(), s.message);
        }
        t.say(
            "kv",
            format!(
                "<- {id} (get:k7) as a one-shot task: {} in {:.1} ms",
                s.stdout_tail.trim(),
                ms(took)
            ),
        );
        oneshot_times.push(took);
    }

    let agent = fw
        .offers
        .first()
        .map(|o| o.agent_id.clone())
        .context("no offer held")?;
    fw.sched
        .send_message(agent.clone(), info.executor_id.clone(), b"hello".to_vec())?;
    t.say("kv", "-> message \"hello\" to the executor");
    loop {
        if let Event::Message { data, .. } = fw.event().await? {
            t.say(
                "kv",
                format!("<- message {:?}", String::from_utf8_lossy(&data)),
            );
            break;
        }
    }
    fw.sched
        .shutdown_executor(agent, info.executor_id.clone())?;
    loop {
        if let Event::ExecutorExited {
            failed, message, ..
        } = fw.event().await?
        {
            t.say(
                "kv",
                format!("<- executor exited (failed: {failed}): {message}"),
            );
            break;
        }
    }
    fw.sched.teardown().await?;
    cluster.shutdown().await;
    Ok(ExecutorFigures {
        first: executor_times[0],
        warm: executor_times[1..]
            .iter()
            .copied()
            .min()
            .unwrap_or_default(),
        oneshot: oneshot_times[1],
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
