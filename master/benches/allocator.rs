//! One allocation round of the master core at agents ∈ {1k, 10k, 50k} × frameworks ∈ {10, 100,
//! 1000}, in Mesos's DeclineOffers shape (every framework declines every offer, with a long
//! refuse filter, so filters pile up round after round), for the hierarchical DRF policy and,
//! as the baseline measured in the same run, the original flat `SimpleDrf`.
//!
//! `cargo bench -p tessera-master --bench allocator` (add `-- quick` for the small sizes only,
//! `-- drf-only` to leave out the `SimpleDrf` baseline, e.g. to compare two commits quickly).
//! Each agent has <24 cpus, 4 GiB>; after the first round every offer is accepted with one task
//! of <16 cpus, 2014 MiB> (like Mesos's benchmark's used resources), then `ROUNDS` rounds follow
//! in which every offer is declined with a one-hour filter. The time is that of
//! `Master::handle_timeout` running the round: building the snapshot, the policy, re-validation
//! and minting offers. Where agents × frameworks ≤ 1,000,000, declining goes on until every
//! framework refuses every agent (the DeclineOffers end state) and one more round is timed.
//!
//! Times are the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`, so other processes on
//! a shared machine inflate them less than wall time), the best of `RUNS` runs.

/// The `tessera` binary's global allocator, so that the round is timed as the master runs it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use proto::identity::{PeerId, PeerKind};
use proto::resources::MIB;
use proto::{
    AgentInfo, BlobKind, Digest, Filters, FrameworkInfo, Message, Offer, Resources, Role, TaskId,
    TaskInfo,
};
use std::time::{Duration, Instant};
use tessera_master::allocator::{Allocator, Drf, SimpleDrf};
use tessera_master::core::{Action, Event, Master, MasterConfig};

const ROUNDS: usize = 3;
/// Runs per size in the table; the best is kept.
const RUNS: usize = 3;
/// The largest agents × frameworks for which the end state is reached and timed.
const END_STATE_MAX: usize = 1_000_000;

/// A stopwatch of this thread's CPU time (falls back to wall time if the clock fails).
struct Cpu(Option<u64>, Instant);

impl Cpu {
    fn now() -> Self {
        Cpu(thread_cpu_ns(), Instant::now())
    }

    fn elapsed(&self) -> Duration {
        match (self.0, thread_cpu_ns()) {
            (Some(a), Some(b)) => Duration::from_nanos(b.saturating_sub(a)),
            _ => self.1.elapsed(),
        }
    }
}

/// Nanoseconds this thread has run on a CPU (`CLOCK_THREAD_CPUTIME_ID`, exact to the call,
/// unlike `/proc/thread-self/schedstat`, which moves only at scheduler ticks).
fn thread_cpu_ns() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

struct Result {
    /// Registering every agent (the set-up before round 0).
    registration: Duration,
    first: Duration,
    steady: Duration,
    offers_first: usize,
    offers_steady: usize,
    /// A round once every framework refuses every agent (`None`: not reached at this size).
    end_state: Option<Duration>,
}

fn drain_offers(m: &mut Master) -> Vec<(u64, Offer)> {
    let mut out = Vec::new();
    while let Some(a) = m.poll_action() {
        if let Action::Send {
            conn,
            msg: Message::Offers { offers },
        } = a
        {
            out.extend(offers.into_iter().map(|o| (conn, o)));
        }
    }
    out
}

fn run(agents: usize, frameworks: usize, allocator: Box<dyn Allocator>, end: bool) -> Result {
    let t0 = Instant::now();
    let mut now = t0;
    let cfg = MasterConfig {
        run_id: "b".into(),
        allocation_interval: Duration::ZERO,
        heartbeat_interval: Duration::ZERO,
        ..MasterConfig::default()
    };
    let mut m = Master::new(cfg, allocator, now);
    let module = Digest::of(b"bench");
    m.handle(
        now,
        Event::BlobStored {
            digest: module,
            kind: BlobKind::Module,
            owner: Some("bench".into()),
        },
    );
    let fconn = |i: usize| 1_000_000 + i as u64;
    for i in 0..frameworks {
        m.handle(
            now,
            Event::Connected {
                conn: fconn(i),
                role: Role::Scheduler,
                peer: format!("f{i}"),
                principal: PeerId::new(PeerKind::Framework, "bench").unwrap(),
            },
        );
        m.handle(
            now,
            Event::Message {
                conn: fconn(i),
                msg: Message::Subscribe {
                    framework: FrameworkInfo {
                        name: format!("f{i}"),
                        role: "*".into(),
                        principal: "bench".into(),
                        id: None,
                        failover_timeout_ms: 3_600_000,
                        priority: 0,
                    },
                },
            },
        );
    }
    let registering = Cpu::now();
    for i in 0..agents {
        let conn = i as u64 + 1;
        m.handle(
            now,
            Event::Connected {
                conn,
                role: Role::Agent,
                peer: format!("a{i}"),
                principal: PeerId::new(PeerKind::Agent, &format!("a{i}")).unwrap(),
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
                        hostname: format!("a{i}"),
                        resources: Resources::new(24_000, 4096 * MIB, 0),
                        reservations: vec![],
                        attributes: vec![],
                    },
                    running: vec![],
                },
            },
        );
    }
    while m.poll_action().is_some() {}
    let registration = registering.elapsed();

    // Round 0: everything is free.
    now += Duration::from_millis(1);
    let t = Cpu::now();
    m.handle_timeout(now);
    let first = t.elapsed();
    let offers = drain_offers(&mut m);
    let offers_first = offers.len();
    // Each offer is used by one task of <16 cpus, 2014 MiB>; the rest is returned unfiltered.
    for (n, (conn, o)) in offers.into_iter().enumerate() {
        let task = TaskInfo {
            data: Vec::new(),
            datasets: Vec::new(),
            executor: None,
            task_id: TaskId(format!("t{n}")),
            name: "t".into(),
            agent_id: o.agent_id.clone(),
            resources: Resources::new(16_000, 2014 * MIB, 0),
            module,
            args: vec![],
            env: vec![],
            files: vec![],
            timeout_ms: None,
            max_cpu_ms: None,
        };
        m.handle(
            now,
            Event::Message {
                conn,
                msg: Message::Accept {
                    offer_ids: vec![o.id],
                    tasks: vec![task],
                    filters: Filters {
                        refuse_seconds: 0.0,
                    },
                },
            },
        );
    }
    while m.poll_action().is_some() {}

    let mut steady = Duration::ZERO;
    let mut offers_steady = 0;
    // DeclineOffers: every offer is declined for good (an hour, the maximum).
    let decline_all = |m: &mut Master, now: Instant, offers: Vec<(u64, Offer)>| {
        for (conn, o) in offers {
            m.handle(
                now,
                Event::Message {
                    conn,
                    msg: Message::Decline {
                        offer_ids: vec![o.id],
                        filters: Filters {
                            refuse_seconds: 1e9,
                        },
                    },
                },
            );
        }
        while m.poll_action().is_some() {}
    };
    for _ in 0..ROUNDS {
        now += Duration::from_millis(1);
        let t = Cpu::now();
        m.handle_timeout(now);
        steady += t.elapsed();
        let offers = drain_offers(&mut m);
        offers_steady += offers.len();
        decline_all(&mut m, now, offers);
    }
    let mut end_state = None;
    if end && agents * frameworks <= END_STATE_MAX {
        loop {
            now += Duration::from_millis(1);
            let t = Cpu::now();
            m.handle_timeout(now);
            let d = t.elapsed();
            let offers = drain_offers(&mut m);
            if offers.is_empty() {
                end_state = Some(d);
                break;
            }
            decline_all(&mut m, now, offers);
        }
    }
    Result {
        registration,
        first,
        steady: steady / ROUNDS as u32,
        offers_first,
        offers_steady: offers_steady / ROUNDS,
        end_state,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let drf_only = std::env::args().any(|a| a == "drf-only");
    // `profile=AGENTSxFRAMEWORKS`: only that size, DRF only, rounds repeated (for perf).
    if let Some(size) = std::env::args().find_map(|a| a.strip_prefix("profile=").map(String::from))
    {
        let (a, f) = size.split_once('x').expect("profile=AGENTSxFRAMEWORKS");
        let (a, f): (usize, usize) = (a.parse().unwrap(), f.parse().unwrap());
        for _ in 0..5 {
            let d = run(a, f, Box::new(Drf::new()), false);
            println!(
                "drf {a}x{f}: registering the agents {} ms ({:.2} µs each), round 0 {} ms, decline round {} ms (CPU time)",
                ms(d.registration),
                d.registration.as_secs_f64() * 1e6 / a as f64,
                ms(d.first),
                ms(d.steady)
            );
        }
        return;
    }
    let agent_sizes: &[usize] = if quick {
        &[1_000]
    } else {
        &[1_000, 10_000, 50_000]
    };
    println!(
        "| agents | frameworks | drf round 0 (ms) | drf decline round (ms) | offers/round | \
         drf refused-by-all round (ms) | simple-drf round 0 (ms) | simple-drf decline round (ms) | \
         speed-up (decline round) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &a in agent_sizes {
        for &f in &[10usize, 100, 1_000] {
            let best = |policy: &dyn Fn() -> Box<dyn Allocator>, end: bool| {
                let runs: Vec<Result> = (0..RUNS).map(|_| run(a, f, policy(), end)).collect();
                let min = |g: &dyn Fn(&Result) -> Duration| runs.iter().map(g).min().unwrap();
                let end_state = runs.iter().filter_map(|r| r.end_state).min();
                (
                    min(&|r| r.first),
                    min(&|r| r.steady),
                    end_state,
                    runs[0].offers_first,
                    runs[0].offers_steady,
                )
            };
            let d = best(&|| Box::new(Drf::new()), true);
            let refused = d.2.map(ms).unwrap_or_else(|| "–".into());
            if drf_only {
                println!(
                    "| {a} | {f} | {} | {} | {} | {refused} | – | – | – |",
                    ms(d.0),
                    ms(d.1),
                    d.4
                );
            } else {
                let s = best(&|| Box::new(SimpleDrf::new()), false);
                println!(
                    "| {a} | {f} | {} | {} | {} | {refused} | {} | {} | {:.1}× |",
                    ms(d.0),
                    ms(d.1),
                    d.4,
                    ms(s.0),
                    ms(s.1),
                    s.1.as_secs_f64() / d.1.as_secs_f64().max(1e-9),
                );
            }
            assert_eq!(d.3, a, "every agent is offered in round 0");
        }
    }
}
