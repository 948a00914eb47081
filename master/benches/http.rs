//! The cost of the operator HTTP surface on big books: building the `/state` report inside the
//! core ([`Master::report`]), serializing it to JSON, and one `/metrics` scrape (setting the
//! gauges from a report, then encoding the text exposition).
//!
//! `cargo bench -p tessera-master --bench http` (add `-- quick` for 1,000 agents and 10,000
//! tasks). The books are simulated: a core driven directly with agent registrations, one
//! framework, and accepts of 10 tasks on each agent's offer (10,000 agents, 100,000 tasks).
//! Prints the median and the worst of a few runs of each step, and the JSON's size.

use proto::identity::{PeerId, PeerKind};
use proto::task_builder::TaskBuilder;
use proto::{AgentInfo, BlobKind, Digest, Filters, FrameworkInfo, Message, Resources, Role};
use std::time::{Duration, Instant};
use tessera_master::allocator::Drf;
use tessera_master::core::{Action, Event, Master, MasterConfig};
use tessera_master::http::metrics::Metrics;

/// Tasks launched on each agent.
const PER_AGENT: usize = 10;

/// Runs of each measured step.
const RUNS: usize = 7;

/// Drains the core's actions; returns the offers sent.
fn offers(m: &mut Master) -> Vec<proto::Offer> {
    let mut out = Vec::new();
    while let Some(a) = m.poll_action() {
        if let Action::Send {
            msg: Message::Offers { offers },
            ..
        } = a
        {
            out.extend(offers);
        }
    }
    out
}

/// A core with `agents` agents and `PER_AGENT` tasks on each.
fn books(agents: usize) -> Master {
    let mut now = Instant::now();
    let cfg = MasterConfig {
        run_id: "b".into(),
        allocation_interval: Duration::ZERO,
        heartbeat_interval: Duration::ZERO,
        completed_tasks_limit: 0,
        ..MasterConfig::default()
    };
    let mut m = Master::new(cfg, Box::new(Drf::new()), now);
    let module = Digest::of(b"bench");
    m.handle(
        now,
        Event::BlobStored {
            digest: module,
            kind: BlobKind::Module,
            owner: Some("bench".into()),
        },
    );
    for i in 0..agents {
        let conn = 10 + i as u64;
        let name = format!("agent{i}");
        m.handle(
            now,
            Event::Connected {
                conn,
                role: Role::Agent,
                peer: name.clone(),
                principal: PeerId::new(PeerKind::Agent, &name).unwrap(),
            },
        );
        m.handle(
            now,
            Event::Message {
                conn,
                msg: Message::Register {
                    executors: Vec::new(),
                    agent_id: None,
                    info: AgentInfo {
                        datasets: Vec::new(),
                        hostname: name,
                        resources: Resources::new(16_000, 64 << 30, 0),
                        reservations: vec![],
                        attributes: vec![("zone".into(), format!("z{}", i % 4))],
                    },
                    running: vec![],
                },
            },
        );
    }
    let fconn = 1;
    m.handle(
        now,
        Event::Connected {
            conn: fconn,
            role: Role::Scheduler,
            peer: "f".into(),
            principal: PeerId::new(PeerKind::Framework, "bench").unwrap(),
        },
    );
    m.handle(
        now,
        Event::Message {
            conn: fconn,
            msg: Message::Subscribe {
                framework: FrameworkInfo {
                    name: "f".into(),
                    role: "*".into(),
                    principal: "bench".into(),
                    id: None,
                    failover_timeout_ms: 3_600_000,
                    priority: 0,
                },
            },
        },
    );
    offers(&mut m);
    let mut placed = 0;
    while placed < agents * PER_AGENT {
        now += Duration::from_millis(1);
        m.handle_timeout(now);
        let round = offers(&mut m);
        assert!(!round.is_empty(), "offers for the rest");
        for offer in round {
            let tasks: Vec<_> = (0..PER_AGENT)
                .map(|k| {
                    TaskBuilder::new(&format!("t{}-{k}", offer.agent_id), module)
                        .resources(Resources::new(1000, 1 << 30, 0))
                        .build(&offer)
                })
                .collect();
            placed += tasks.len();
            m.handle(
                now,
                Event::Message {
                    conn: fconn,
                    msg: Message::Accept {
                        offer_ids: vec![offer.id.clone()],
                        tasks,
                        filters: Filters {
                            refuse_seconds: 0.0,
                        },
                    },
                },
            );
            offers(&mut m);
        }
    }
    m
}

/// Times `f` over [`RUNS`] runs: (median, worst) in milliseconds.
fn time(mut f: impl FnMut()) -> (f64, f64) {
    let mut ms: Vec<f64> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    (ms[RUNS / 2], ms[RUNS - 1])
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let agents = if quick { 1_000 } else { 10_000 };
    let t = Instant::now();
    let m = books(agents);
    let report = m.report(std::time::SystemTime::now());
    assert_eq!(report.agents.len(), agents);
    assert_eq!(report.tasks.len(), agents * PER_AGENT);
    println!(
        "books: {agents} agents, {} tasks, {} offers (built in {:.1} s)",
        report.tasks.len(),
        report.offers.len(),
        t.elapsed().as_secs_f64()
    );
    let json = serde_json::to_string(&report).unwrap();
    println!(
        "/state JSON: {:.1} MiB",
        json.len() as f64 / (1 << 20) as f64
    );

    let (build, build_max) = time(|| {
        std::hint::black_box(m.report(std::time::SystemTime::now()));
    });
    let (ser, ser_max) = time(|| {
        std::hint::black_box(serde_json::to_string(&report).unwrap());
    });
    let metrics = Metrics::new();
    let (observe, observe_max) = time(|| metrics.observe(&report));
    let (encode, encode_max) = time(|| {
        std::hint::black_box(metrics.encode());
    });
    let text = metrics.encode();
    println!(
        "/metrics text: {:.1} MiB, {} lines",
        text.len() as f64 / (1 << 20) as f64,
        text.lines().count()
    );
    println!("step                          median ms   worst ms   (of {RUNS})");
    let row = |name: &str, (a, b): (f64, f64)| println!("{name:<30}{a:>9.1}{b:>11.1}");
    row("report built in the core loop", (build, build_max));
    row("report to JSON", (ser, ser_max));
    row("/state total", (build + ser, build_max + ser_max));
    row("metrics set from the report", (observe, observe_max));
    row("metrics encoded", (encode, encode_max));
    row(
        "/metrics total (with report)",
        (
            build + observe + encode,
            build_max + observe_max + encode_max,
        ),
    );
    println!(
        "the core's loop is held only while the report is built ({:.1} ms here); a report is served \
         again for max({} ms, 10 x that)",
        build,
        tessera_master::http::STATE_CACHE.as_millis()
    );
}
