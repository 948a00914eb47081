//! `tessera dev`: a master and three agents on loopback QUIC (ephemeral CA, temporary work
//! directories) running the seed's worked example as a readable trace, then a Monte Carlo pi
//! job spread across the agents, then a data-local job: three agents holding different data
//! sets, tasks placed by delay scheduling (the SDK's `sdk::delay` helper, through
//! `cluster::datajob`) against none, with the locality each achieved; then a framework executor
//! answering queries from the state it keeps, against the same queries as one-shot tasks
//! (`dev_executor`).

use anyhow::{bail, ensure, Context};
use cluster::{LocalCluster, LocalClusterConfig};
use proto::resources::GIB;
use proto::{Filters, Offer, Resources, TaskState, TaskStatus};
use sdk::{Event, Scheduler, TaskBuilder};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The demonstration's clock and printer.
pub(super) struct Trace {
    start: Instant,
}

impl Trace {
    /// Prints one line, stamped with the time since the start.
    pub(super) fn say(&self, who: &str, what: impl std::fmt::Display) {
        println!(
            "[{:>7.3}s] {who:<11} {what}",
            self.start.elapsed().as_secs_f64()
        );
    }
}

async fn next(sched: &mut Scheduler) -> anyhow::Result<Event> {
    tokio::time::timeout(Duration::from_secs(30), sched.next_event())
        .await
        .context("no event from the master within 30 s")?
        .context("scheduler closed")
}

async fn offers(sched: &mut Scheduler) -> anyhow::Result<Vec<Offer>> {
    loop {
        if let Event::Offers(o) = next(sched).await? {
            return Ok(o);
        }
    }
}

/// Runs the whole demonstration; `Ok` when everything went as the seed describes.
pub async fn execute() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let t = Trace {
        start: Instant::now(),
    };
    let mut cfg = LocalClusterConfig::default();
    cfg.master.allocation_interval = Duration::from_millis(250);
    cfg.compiler = super::compiler(
        Some(super::DEFAULT_COMPILE_CPU_LIMIT),
        super::DEFAULT_COMPILE_MEMORY_LIMIT,
    );
    let mut cluster = LocalCluster::start(cfg, dir.path()).await?;
    t.say(
        "master",
        format!(
            "listening on {} (QUIC, mutual TLS, ephemeral CA)",
            cluster.master_addr
        ),
    );
    let agent_res = Resources::new(4000, 4 * GIB, 0);
    cluster.add_agent("agent1", agent_res)?;
    t.say("agent1", format!("registers {agent_res}"));

    println!("\n== The seed's worked example ==");
    let mut fw1 = Scheduler::connect(cluster.scheduler_options("framework1", "*")?).await?;
    t.say(
        "framework1",
        format!("subscribed as {}", fw1.framework_id()),
    );
    let spinner = fw1.upload_module(wasm_examples::SPINNER).await?;
    t.say(
        "framework1",
        format!("uploaded module spinner ({spinner:?})"),
    );

    let o1 = offers(&mut fw1).await?;
    ensure!(o1.len() == 1, "expected one offer, got {}", o1.len());
    let offer = &o1[0];
    t.say(
        "framework1",
        format!(
            "<- offer {} from {}: {}",
            offer.id, offer.hostname, offer.resources
        ),
    );
    ensure!(
        offer.resources == agent_res,
        "agent1 should offer all of {agent_res}"
    );

    let mut fw2 = Scheduler::connect(cluster.scheduler_options("framework2", "*")?).await?;
    t.say(
        "framework2",
        format!("subscribed as {}", fw2.framework_id()),
    );

    let a = Resources::new(2000, GIB, 0);
    let b = Resources::new(1000, 2 * GIB, 0);
    let t1 = TaskBuilder::new("task1", spinner)
        .args(["sleep"])
        .resources(a)
        .build(offer);
    let t2 = TaskBuilder::new("task2", spinner)
        .args(["sleep"])
        .resources(b)
        .build(offer);
    fw1.accept(vec![offer.id.clone()], vec![t1, t2], Filters::default())?;
    t.say(
        "framework1",
        format!("-> accept {}: launch task1 {a} and task2 {b}", offer.id),
    );

    let o2 = offers(&mut fw2).await?;
    let rest = o2
        .iter()
        .find(|o| o.agent_id == offer.agent_id)
        .context("framework2 got no offer from agent1")?;
    t.say(
        "framework2",
        format!(
            "<- offer {} from {}: {}",
            rest.id, rest.hostname, rest.resources
        ),
    );
    ensure!(
        rest.resources == Resources::new(1000, GIB, 0),
        "the remainder should be <1 cpu, 1 GB>, got {}",
        rest.resources
    );
    fw2.decline(
        vec![rest.id.clone()],
        Filters {
            refuse_seconds: 1.0,
        },
    )?;
    t.say("framework2", format!("-> decline {} (refuse 1 s)", rest.id));

    let mut running = 0;
    while running < 2 {
        if let Event::Update(s) = next(&mut fw1).await? {
            t.say("framework1", format!("<- {} {}", s.task_id, s.state.name()));
            if s.state == TaskState::Running {
                running += 1;
            }
            ensure!(
                !s.state.is_terminal(),
                "{} ended early: {}",
                s.task_id,
                s.message
            );
        }
    }

    fw1.kill("task1".into())?;
    t.say("framework1", "-> kill task1");
    loop {
        if let Event::Update(s) = next(&mut fw1).await? {
            t.say(
                "framework1",
                format!("<- {} {} ({})", s.task_id, s.state.name(), s.message),
            );
            if s.task_id.as_str() == "task1" && s.state.is_terminal() {
                ensure!(s.state == TaskState::Killed, "task1 should be killed");
                break;
            }
        }
    }
    // Offers repeat as tasks finish: task1's <2 cpus, 1 GB> returns to the pool.
    let o3 = offers(&mut fw2).await?;
    for o in &o3 {
        t.say(
            "framework2",
            format!("<- offer {} from {}: {}", o.id, o.hostname, o.resources),
        );
    }
    ensure!(
        o3.iter()
            .any(|o| o.resources == Resources::new(3000, 2 * GIB, 0) || o.resources == a),
        "task1's resources should be offered again"
    );
    fw1.teardown().await?;
    t.say("framework1", "-> teardown (task2 is killed)");
    fw2.teardown().await?;
    t.say("framework2", "-> teardown");

    println!("\n== A pi job across three agents ==");
    cluster.add_agent("agent2", agent_res)?;
    t.say("agent2", format!("registers {agent_res}"));
    cluster.add_agent("agent3", agent_res)?;
    t.say("agent3", format!("registers {agent_res}"));
    let estimate = pi_job(&mut cluster, &t).await?;
    ensure!(
        (estimate - std::f64::consts::PI).abs() < 0.01,
        "pi estimate {estimate} is off"
    );
    cluster.shutdown().await;

    println!("\n== Data sets and delay scheduling ==");
    let (with_wait, without) = locality_demo(&t).await?;

    println!("\n== An executor keeping its state between tasks ==");
    let kv = super::dev_executor::executor_demo(&t).await?;
    ensure!(
        kv.warm < kv.oneshot,
        "a warm executor query ({:?}) should beat the same one-shot task ({:?})",
        kv.warm,
        kv.oneshot
    );
    println!(
        "\nOK: the worked example ran as described, pi ≈ {estimate:.5}, delay scheduling \
         ran {:.0}% of the data job's tasks next to their data ({:.0}% without), and the \
         executor answered a query in {:.1} ms once warm (first, with its start: {:.0} ms; as a \
         one-shot task: {:.0} ms)",
        with_wait * 100.0,
        without * 100.0,
        kv.warm.as_secs_f64() * 1000.0,
        kv.first.as_secs_f64() * 1000.0,
        kv.oneshot.as_secs_f64() * 1000.0
    );
    Ok(())
}

/// Three agents holding one data set each (`blk-1..3`, a block file apiece); a job of nine
/// `readblock` tasks, three per block, placed by delay scheduling with a 1 s wait and then with
/// none. Returns the two localities.
async fn locality_demo(t: &Trace) -> anyhow::Result<(f64, f64)> {
    use cluster::datajob::{run_data_job, BlockTask};
    use sdk::delay::DelayConfig;
    let dir = tempfile::tempdir()?;
    let mut cfg = LocalClusterConfig::default();
    cfg.master.allocation_interval = Duration::from_millis(250);
    cfg.compiler = super::compiler(
        Some(super::DEFAULT_COMPILE_CPU_LIMIT),
        super::DEFAULT_COMPILE_MEMORY_LIMIT,
    );
    let mut cluster = LocalCluster::start(cfg, dir.path()).await?;
    let mut blocks = BTreeMap::new();
    for i in 1..=3 {
        let set = format!("blk-{i}");
        let path = dir.path().join("datasets").join(&set);
        std::fs::create_dir_all(&path)?;
        let contents = format!("block {i}\n").repeat(1000);
        std::fs::write(path.join("part-0"), &contents)?;
        let host = format!("data{i}");
        cluster.add_agent_with_datasets(
            &host,
            Resources::new(2000, 2 * GIB, 0),
            vec![(set.clone(), path.clone())],
        )?;
        t.say(
            &host,
            format!("registers with data set {set} = {}", path.display()),
        );
        blocks.insert(set, contents);
    }
    let mut results = Vec::new();
    for (name, wait) in [
        ("delayed", Duration::from_secs(1)),
        ("greedy", Duration::ZERO),
    ] {
        let mut sched = Scheduler::connect(cluster.scheduler_options(name, "*")?).await?;
        let module = sched.upload_module(wasm_examples::READBLOCK).await?;
        let mut tasks = Vec::new();
        for (set, contents) in &blocks {
            let remote_copy = sched.upload_file(contents.as_bytes()).await?;
            for k in 0..3 {
                tasks.push(BlockTask {
                    id: format!("{set}-{k}"),
                    dataset: set.clone(),
                    file: "part-0".into(),
                    remote_copy,
                });
            }
        }
        // Every agent must have registered, or locality would measure registration order.
        let mut seen = std::collections::BTreeSet::new();
        while seen.len() < 3 {
            for o in offers(&mut sched).await? {
                seen.insert(o.hostname.clone());
                sched.decline(
                    vec![o.id],
                    Filters {
                        refuse_seconds: 0.0,
                    },
                )?;
            }
        }
        t.say(
            name,
            format!("9 tasks, 3 per block; delay scheduling wait {:?}", wait),
        );
        let cfg = DelayConfig {
            wait,
            ..DelayConfig::default()
        };
        let per_task = Resources::new(100, 32 << 20, 0);
        let report = run_data_job(
            &mut sched,
            module,
            name,
            tasks,
            per_task,
            cfg,
            Duration::from_secs(60),
        )
        .await?;
        for r in &report.runs {
            let line = r.status.stdout_tail.lines().next().unwrap_or("").to_owned();
            t.say(
                name,
                format!(
                    "<- {} {} on {} ({}): {line}",
                    r.id,
                    r.status.state.name(),
                    r.hostname,
                    if r.local { "node-local" } else { "remote read" },
                ),
            );
        }
        t.say(
            name,
            format!(
                "locality {}/{} = {:.0}% in {:.2} s",
                report.local(),
                report.runs.len(),
                report.locality() * 100.0,
                report.elapsed.as_secs_f64()
            ),
        );
        results.push(report.locality());
        sched.teardown().await?;
    }
    cluster.shutdown().await;
    ensure!(
        results[0] >= 0.9,
        "delay scheduling should place nearly every task by its data, got {:.0}%",
        results[0] * 100.0
    );
    Ok((results[0], results[1]))
}

async fn pi_job(cluster: &mut LocalCluster, t: &Trace) -> anyhow::Result<f64> {
    const TASKS: usize = 6;
    const SAMPLES: u64 = 2_000_000;
    let mut sched = Scheduler::connect(cluster.scheduler_options("pi", "*")?).await?;
    t.say("pi", format!("subscribed as {}", sched.framework_id()));
    let module = sched.upload_module(wasm_examples::PI).await?;
    let per_task = Resources::new(500, 64 << 20, 0);
    let mut launched = 0usize;
    let mut hosts: BTreeMap<String, usize> = BTreeMap::new();
    let mut done: Vec<TaskStatus> = Vec::new();
    while done.len() < TASKS {
        match next(&mut sched).await? {
            Event::Offers(offers) => {
                for offer in offers {
                    // Spread: at most two tasks per agent.
                    let mut tasks = Vec::new();
                    let mut left = offer.resources;
                    while launched < TASKS
                        && left.contains(&per_task)
                        && hosts.get(&offer.hostname).copied().unwrap_or(0) < TASKS / 3
                    {
                        let id = format!("pi-{launched}");
                        tasks.push(
                            TaskBuilder::new(&id, module)
                                .args([launched.to_string(), SAMPLES.to_string()])
                                .resources(per_task)
                                .build(&offer),
                        );
                        *hosts.entry(offer.hostname.clone()).or_default() += 1;
                        left -= per_task;
                        launched += 1;
                    }
                    if tasks.is_empty() {
                        sched.decline(vec![offer.id], Filters::default())?;
                    } else {
                        t.say(
                            "pi",
                            format!(
                                "-> accept {} on {}: {} tasks",
                                offer.id,
                                offer.hostname,
                                tasks.len()
                            ),
                        );
                        sched.accept(vec![offer.id], tasks, Filters::default())?;
                    }
                }
            }
            Event::Update(s) if s.state.is_terminal() => {
                if s.state != TaskState::Finished {
                    bail!("{} ended {}: {}", s.task_id, s.state.name(), s.message);
                }
                t.say(
                    "pi",
                    format!("<- {} TASK_FINISHED: {}", s.task_id, s.stdout_tail.trim()),
                );
                done.push(s);
            }
            _ => {}
        }
    }
    let (mut inside, mut total) = (0u64, 0u64);
    for s in &done {
        let field = |k: &str| -> anyhow::Result<u64> {
            s.stdout_tail
                .split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .context("malformed pi output")?
                .parse()
                .context("malformed pi output")
        };
        inside += field("inside=")?;
        total += field("samples=")?;
    }
    ensure!(
        hosts.len() == 3,
        "the pi job should spread over three agents, used {hosts:?}"
    );
    let estimate = 4.0 * inside as f64 / total as f64;
    t.say(
        "pi",
        format!("{inside} of {total} samples inside the circle: pi ≈ {estimate:.5}"),
    );
    sched.teardown().await?;
    Ok(estimate)
}
