//! What `tessera sim` reports: samples of utilization and fairness over time, their summary,
//! and the table that puts the two ways of sharing side by side.

use super::workload::{Sharing, SimConfig};
use serde::Serialize;

/// One sample of the cluster.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// Seconds since the start.
    pub t: f64,
    /// Fraction of all cpus used by running tasks.
    pub cpu_util: f64,
    /// Fraction of all memory used by running tasks.
    pub mem_util: f64,
    /// Each framework's dominant share (0 before it joins).
    pub shares: Vec<f64>,
    /// Jain's fairness index over the frameworks that want more, of share / fair share.
    pub jain: f64,
}

/// The outcome of one run.
#[derive(Clone, Debug, Serialize)]
pub struct SimReport {
    /// How the cluster was shared.
    pub sharing: Sharing,
    /// The samples.
    pub samples: Vec<Sample>,
    /// Mean cpu utilization over the samples.
    pub mean_cpu_util: f64,
    /// Mean memory utilization over the samples.
    pub mean_mem_util: f64,
    /// Mean Jain index over samples where at least two frameworks want more.
    pub mean_jain: f64,
    /// Seconds from the late framework's subscription until its dominant share first reached
    /// 90% of its fair share (None if it never did).
    pub late_time_to_fair_share: Option<f64>,
    /// Tasks finished per framework.
    pub finished: Vec<u64>,
    /// Mean time tasks waited between arrival and start, in seconds.
    pub mean_wait: f64,
}

/// Jain's fairness index of `xs`: 1 when all are equal, 1/n when one has everything.
pub fn jain(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return f64::NAN;
    }
    let sum: f64 = xs.iter().sum();
    let sq: f64 = xs.iter().map(|x| x * x).sum();
    if sq == 0.0 {
        return 1.0;
    }
    sum * sum / (xs.len() as f64 * sq)
}

/// Renders both runs as a human-readable table.
pub fn render(cfg: &SimConfig, shared: &SimReport, partitioned: &SimReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "tessera sim: seed {}, {} agents of {}, {} frameworks (role weights {:?}), {} s, load {:.2}",
        cfg.seed,
        cfg.agents,
        cfg.agent_resources,
        cfg.frameworks,
        cfg.role_weights,
        cfg.duration.as_secs(),
        cfg.load
    );
    let _ = writeln!(
        out,
        "\n   t(s) | offers: cpu   mem   jain | static: cpu   mem   jain | shares (offers)"
    );
    for (a, b) in shared.samples.iter().zip(&partitioned.samples) {
        let shares: Vec<String> = a.shares.iter().map(|s| format!("{s:.2}")).collect();
        let _ = writeln!(
            out,
            "{:>7.0} |   {:>5.1}% {:>5.1}% {:>5} |  {:>5.1}% {:>5.1}% {:>5} | {}",
            a.t,
            a.cpu_util * 100.0,
            a.mem_util * 100.0,
            fmt_jain(a.jain),
            b.cpu_util * 100.0,
            b.mem_util * 100.0,
            fmt_jain(b.jain),
            shares.join(" ")
        );
    }
    let _ = writeln!(out, "\nsummary               offers    static");
    let _ = writeln!(
        out,
        "mean cpu utilization  {:>5.1}%    {:>5.1}%",
        shared.mean_cpu_util * 100.0,
        partitioned.mean_cpu_util * 100.0
    );
    let _ = writeln!(
        out,
        "mean mem utilization  {:>5.1}%    {:>5.1}%",
        shared.mean_mem_util * 100.0,
        partitioned.mean_mem_util * 100.0
    );
    let _ = writeln!(
        out,
        "mean Jain index       {:>6.3}    {:>6.3}",
        shared.mean_jain, partitioned.mean_jain
    );
    let _ = writeln!(
        out,
        "mean task wait        {:>5.1}s    {:>5.1}s",
        shared.mean_wait, partitioned.mean_wait
    );
    let _ = writeln!(
        out,
        "late framework to 90% of fair share: {} (offers), {} (static)",
        fmt_secs(shared.late_time_to_fair_share),
        fmt_secs(partitioned.late_time_to_fair_share)
    );
    let _ = writeln!(
        out,
        "tasks finished        {:?}    {:?}",
        shared.finished, partitioned.finished
    );
    out
}

fn fmt_jain(j: f64) -> String {
    if j.is_finite() {
        format!("{j:.2}")
    } else {
        "-".into()
    }
}

fn fmt_secs(s: Option<f64>) -> String {
    s.map(|s| format!("{s:.0} s"))
        .unwrap_or_else(|| "never".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jain_index() {
        assert_eq!(jain(&[1.0, 1.0]), 1.0);
        assert!((jain(&[1.0, 0.0]) - 0.5).abs() < 1e-9);
        assert!(jain(&[1.0]).is_nan());
    }
}
