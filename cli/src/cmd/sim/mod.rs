//! `tessera sim`: the master core and allocator under a synthetic, seeded workload in virtual
//! time, shared by offers and statically partitioned, side by side.
//!
//! With `--workload locality` it runs instead the data-locality workload of [`locality`]: delay
//! scheduling (the SDK's helper) at several waits against static partitioning.
//!
//! - [`workload`]: the workload and one run of it on the virtual-time cluster.
//! - [`report`]: samples, summary and the table.
//! - [`locality`]: the data-locality workload, its runs and its table.
//! - [`plot`]: `--plot FILE.svg`, the samples drawn over time.
//!
//! A progress bar of the simulated time shows on stderr while it runs, when stderr is a
//! terminal (never in a pipe or a file).

pub mod locality;
pub mod plot;
pub mod report;
pub mod workload;

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use proto::resources::{parse_cpus, parse_size};
use proto::Resources;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;
use workload::{Sharing, SimConfig};

/// Arguments of `tessera sim`.
#[derive(Args, Debug)]
pub struct SimArgs {
    /// Seed of every random draw (same seed, same output).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Which workload: `sharing` (offers against static partitioning) or `locality` (delay
    /// scheduling for data locality).
    #[arg(long, default_value = "sharing")]
    workload: String,
    /// Number of agents (default 50; 100 for `locality`).
    #[arg(long)]
    agents: Option<usize>,
    /// CPUs of each agent.
    #[arg(long, default_value = "8", value_parser = parse_cpus)]
    agent_cpus: u64,
    /// Memory of each agent.
    #[arg(long, default_value = "16GiB", value_parser = parse_size)]
    agent_mem: u64,
    /// Number of frameworks (the last one subscribes late; default 4, 10 for `locality`).
    #[arg(long)]
    frameworks: Option<usize>,
    /// Role weights, cycled over the frameworks (framework i is in role r{i mod n}).
    #[arg(long, default_value = "1", value_delimiter = ',')]
    weights: Vec<f64>,
    /// Simulated time (for `locality`: how long jobs arrive).
    #[arg(long, default_value = "600s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// `locality`: the delay-scheduling waits to compare.
    #[arg(long, default_value = "0s,1s,5s", value_delimiter = ',', value_parser = humantime::parse_duration)]
    waits: Vec<Duration>,
    /// `locality`: how many times longer a task runs away from its block.
    #[arg(long, default_value_t = 2.0)]
    slowdown: f64,
    /// `locality`: task slots per agent.
    #[arg(long, default_value_t = 4)]
    slots: u64,
    /// Sampling period.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    sample_every: Duration,
    /// When the last framework subscribes.
    #[arg(long, default_value = "200s", value_parser = humantime::parse_duration)]
    late_join: Duration,
    /// Mean offered load as a fraction of the cluster.
    #[arg(long, default_value_t = 1.2)]
    load: f64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Allocation policy: drf (hierarchical DRF), priority, or simple-drf.
    #[arg(long, default_value = "drf")]
    allocator: String,
    /// `sharing`: also draw utilization and each framework's dominant share over time, offers
    /// against static partitioning, as an SVG picture in this file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
}

/// A bar of `len` `unit`s on stderr when it is a terminal; hidden otherwise (a pipe, a file).
fn progress_bar(len: u64, unit: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let template = format!("{{msg:>8}} [{{bar:40}}] {{pos}}/{{len}} {unit}, {{elapsed}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    // Redrawn while a long step runs, so the elapsed time shows it is alive.
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

/// Runs the workload both ways and prints the report.
pub fn execute(a: SimArgs) -> anyhow::Result<i32> {
    match a.workload.as_str() {
        "sharing" => {}
        "locality" => return execute_locality(a),
        other => bail!("unknown workload {other:?} (sharing or locality)"),
    }
    let cfg = SimConfig {
        seed: a.seed,
        agents: a.agents.unwrap_or(50),
        agent_resources: Resources::new(a.agent_cpus, a.agent_mem, 0),
        frameworks: a.frameworks.unwrap_or(4),
        role_weights: a.weights,
        duration: a.duration,
        sample_every: a.sample_every,
        late_join: a.late_join,
        load: a.load,
    };
    if cfg.agents == 0 || cfg.frameworks == 0 || cfg.role_weights.iter().any(|w| *w <= 0.0) {
        bail!("need at least one agent and one framework, and positive weights");
    }
    let policy = || {
        master::allocator::by_name(&a.allocator)
            .with_context(|| format!("unknown allocator {:?}", a.allocator))
    };
    // Both runs on one bar: offers first, then static partitioning.
    let secs = cfg.duration.as_secs();
    let bar = progress_bar(2 * secs, "simulated s");
    bar.set_message("offers");
    let shared = workload::run_with_progress(&cfg, Sharing::Offers, policy()?, &mut |t| {
        bar.set_position(t.as_secs().min(secs))
    });
    bar.set_message("static");
    let partitioned =
        workload::run_with_progress(&cfg, Sharing::StaticPartition, policy()?, &mut |t| {
            bar.set_position(secs + t.as_secs().min(secs))
        });
    bar.finish_and_clear();
    if let Some(path) = &a.plot {
        plot::write_svg(path, &cfg, &shared, &partitioned)
            .with_context(|| format!("cannot draw the plot into {}", path.display()))?;
    }
    if a.json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            offers: &'a report::SimReport,
            static_partition: &'a report::SimReport,
        }
        let out = Out {
            offers: &shared,
            static_partition: &partitioned,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", report::render(&cfg, &shared, &partitioned));
    }
    Ok(0)
}

/// Runs the locality workload under static partitioning and at each wait, and prints the
/// table (or JSON).
fn execute_locality(a: SimArgs) -> anyhow::Result<i32> {
    if a.plot.is_some() {
        bail!("--plot draws the sharing workload only");
    }
    let cfg = locality::LocalityConfig {
        seed: a.seed,
        agents: a.agents.unwrap_or(100),
        slots: a.slots,
        frameworks: a.frameworks.unwrap_or(10),
        duration: a.duration,
        slowdown: a.slowdown,
        ..locality::LocalityConfig::default()
    };
    if cfg.agents == 0 || cfg.frameworks == 0 || cfg.slots == 0 || cfg.frameworks > cfg.agents {
        bail!("need at least one agent with a slot, and no more frameworks than agents");
    }
    if cfg.slowdown < 1.0 || !cfg.slowdown.is_finite() {
        bail!("--slowdown must be at least 1");
    }
    let bar = progress_bar(1 + a.waits.len() as u64, "runs");
    bar.set_message("static");
    let mut runs = vec![locality::run(&cfg, locality::Placement::StaticPartition)];
    for w in &a.waits {
        bar.inc(1);
        bar.set_message(format!("wait {}", humantime::format_duration(*w)));
        let p = locality::Placement::Delay {
            wait_secs: w.as_secs_f64(),
        };
        runs.push(locality::run(&cfg, p));
    }
    bar.finish_and_clear();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
    } else {
        print!("{}", locality::render(&cfg, &runs));
    }
    Ok(0)
}
