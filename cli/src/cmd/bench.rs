//! `tessera bench`: the launch benchmark on this machine: a local cluster in this process,
//! launch latency (p50/p99) and throughput of a trivial task against fork/exec of `/bin/true`
//! and against wasmtime called directly, all in the same run (see `cluster::bench`).

use std::path::PathBuf;
use std::time::Duration;

use cluster::bench::{run_launch, LaunchPlan};

/// `tessera bench` arguments.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// A smoke run of a second or two (20 sequential tasks, one round of 200) instead of the
    /// default (1,000 sequential tasks, 5 rounds of 2,000: about 20 s in a release build).
    #[arg(long)]
    quick: bool,
    /// Print the report as one JSON object (fields in README.md, "tessera bench").
    #[arg(long)]
    json: bool,
    /// Put the cluster's work directories under DIR (default: the system's temporary
    /// directory), to measure a given disk.
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Sequential tasks timed for latency.
    #[arg(long, value_name = "N")]
    latency_tasks: Option<usize>,
    /// Tasks per throughput round.
    #[arg(long, value_name = "N")]
    throughput_tasks: Option<usize>,
    /// Throughput rounds.
    #[arg(long, value_name = "N")]
    rounds: Option<usize>,
    /// The master's periodic allocation interval in milliseconds (it also allocates after
    /// every accept and task end).
    #[arg(long, value_name = "MS")]
    alloc_ms: Option<u64>,
}

impl BenchArgs {
    /// The plan these arguments ask for.
    pub fn plan(&self) -> LaunchPlan {
        let mut plan = if self.quick {
            LaunchPlan::quick()
        } else {
            LaunchPlan::full()
        };
        plan.work_dir.clone_from(&self.work_dir);
        if let Some(n) = self.latency_tasks {
            plan.latency_tasks = n.max(1);
        }
        if let Some(n) = self.throughput_tasks {
            plan.throughput_tasks = n.max(1);
        }
        if let Some(n) = self.rounds {
            plan.rounds = n.max(1);
        }
        if let Some(ms) = self.alloc_ms {
            plan.alloc_interval = Duration::from_millis(ms.max(1));
        }
        plan
    }
}

/// Runs the bench and prints its report on stdout.
pub async fn execute(args: BenchArgs) -> anyhow::Result<i32> {
    // On the runtime's workers, as a scheduler spawned in a tokio runtime runs: on the main
    // thread (`block_on`) every event it awaits costs a thread wake-up (~35 us measured here).
    let plan = args.plan();
    let report = tokio::spawn(async move { run_launch(&plan).await }).await??;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(0)
}
