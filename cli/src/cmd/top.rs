//! `tessera top`: a live terminal view of the cluster — totals, each agent's CPU and memory
//! bars, each framework's dominant share against its fair share — redrawn every `--interval`.
//! With `--json`, one `/state` summary per line instead (for scripts that watch).

use super::inspect::{self, cpus, mem, percent, short_state};
use crate::api::{Api, ApiArgs};
use crate::table::Table;
use clap::Args;
use master::core::StateReport;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// Width of the bars, in cells.
const BAR: usize = 20;

/// `tessera top`.
#[derive(Args, Debug)]
pub struct TopArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// How often to redraw.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Stop after this many views (default: until interrupted).
    #[arg(long, short = 'n')]
    iterations: Option<u64>,
    /// One JSON summary per line instead of the screen.
    #[arg(long)]
    json: bool,
}

/// What `--json` prints each time.
#[derive(Serialize)]
struct Summary<'a> {
    agents: usize,
    frameworks: usize,
    tasks_by_state: BTreeMap<&'a str, usize>,
    total: &'a master::core::ResourcesReport,
    used: master::core::ResourcesReport,
    shares: BTreeMap<&'a str, (f64, f64)>,
}

/// Runs `tessera top` until interrupted or `--iterations` views were shown.
pub async fn execute(a: TopArgs) -> anyhow::Result<i32> {
    let api = Api::new(&a.api)?;
    let terminal = std::io::stdout().is_terminal();
    let mut shown = 0u64;
    loop {
        let report = inspect::state(&api).await?;
        let mut out = std::io::stdout().lock();
        if a.json {
            writeln!(out, "{}", serde_json::to_string(&summary(&report))?)?;
        } else {
            if terminal {
                // Home and clear: redraw in place.
                write!(out, "\x1b[H\x1b[2J")?;
            }
            write!(out, "{}", screen(&report, inspect::now_ms()))?;
        }
        out.flush()?;
        drop(out);
        shown += 1;
        if a.iterations.is_some_and(|n| shown >= n) {
            return Ok(0);
        }
        tokio::select! {
            _ = tokio::time::sleep(a.interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(0),
        }
    }
}

fn summary(r: &StateReport) -> Summary<'_> {
    let mut used = master::core::ResourcesReport::default();
    for a in r.agents.iter().filter(|a| a.connected) {
        used.cpus += a.used.cpus;
        used.mem_bytes += a.used.mem_bytes;
        used.disk_bytes += a.used.disk_bytes;
    }
    Summary {
        agents: r.agents.len(),
        frameworks: r.frameworks.len(),
        tasks_by_state: r.tasks_by_state(),
        total: &r.total,
        used,
        shares: r
            .frameworks
            .iter()
            .map(|f| (f.id.as_str(), (f.dominant_share, f.fair_share)))
            .collect(),
    }
}

/// One view of the cluster, as text.
pub fn screen(r: &StateReport, now_ms: u64) -> String {
    let s = summary(r);
    let live = r.tasks.iter().filter(|t| !t.completed).count();
    let by_state: Vec<String> = s
        .tasks_by_state
        .iter()
        .map(|(st, n)| format!("{n} {}", short_state(st)))
        .collect();
    let mut out = format!(
        "tessera top: {} agents, {} frameworks, {live} live tasks ({}), allocator {}\n",
        s.agents,
        s.frameworks,
        if by_state.is_empty() {
            "none".to_owned()
        } else {
            by_state.join(", ")
        },
        r.allocator,
    );
    out.push_str(&format!(
        "cpus {} {}/{}   mem {} {}/{}\n\n",
        bar(s.used.cpus, r.total.cpus),
        cpus(s.used.cpus),
        cpus(r.total.cpus),
        bar(s.used.mem_bytes as f64, r.total.mem_bytes as f64),
        mem(s.used.mem_bytes),
        mem(r.total.mem_bytes),
    ));
    let mut agents = Table::new(&[
        "AGENT", "HOSTNAME", "CPUS", ">", "MEM", ">", ">TASKS", "SEEN",
    ]);
    for a in &r.agents {
        agents.row(vec![
            a.id.clone(),
            a.hostname.clone(),
            bar(a.used.cpus, a.total.cpus),
            format!("{}/{}", cpus(a.used.cpus), cpus(a.total.cpus)),
            bar(a.used.mem_bytes as f64, a.total.mem_bytes as f64),
            format!("{}/{}", mem(a.used.mem_bytes), mem(a.total.mem_bytes)),
            a.tasks.to_string(),
            match (a.connected, a.last_seen_ms) {
                (false, _) => "disconnected".into(),
                (true, Some(at)) => inspect::ago(now_ms, at),
                (true, None) => "-".into(),
            },
        ]);
    }
    out.push_str(&agents.render());
    out.push('\n');
    let mut fws = Table::new(&[
        "FRAMEWORK",
        "NAME",
        "PRINCIPAL",
        "ROLE",
        "SHARE (| = fair share)",
        ">SHARE",
        ">FAIR",
        ">OFFERS",
    ]);
    for f in &r.frameworks {
        fws.row(vec![
            f.id.clone(),
            f.name.clone(),
            f.principal.clone(),
            f.role.clone(),
            share_bar(f.dominant_share, f.fair_share),
            percent(f.dominant_share),
            percent(f.fair_share),
            f.offers_held.to_string(),
        ]);
    }
    if fws.is_empty() {
        out.push_str("no frameworks\n");
    } else {
        out.push_str(&fws.render());
    }
    out
}

/// `[#####.........]`: `used` of `total`.
fn bar(used: f64, total: f64) -> String {
    let filled = if total > 0.0 {
        ((used / total).clamp(0.0, 1.0) * BAR as f64).round() as usize
    } else {
        0
    };
    format!("[{}{}]", "#".repeat(filled), ".".repeat(BAR - filled))
}

/// A share bar with the fair share marked `|`.
fn share_bar(share: f64, fair: f64) -> String {
    let filled = (share.clamp(0.0, 1.0) * BAR as f64).round() as usize;
    let mark = (fair.clamp(0.0, 1.0) * BAR as f64).round() as usize;
    let cells: String = (0..BAR)
        .map(|i| match (i < filled, i + 1 == mark.max(1) && fair > 0.0) {
            (_, true) => '|',
            (true, false) => '#',
            (false, false) => '.',
        })
        .collect();
    format!("[{cells}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_fill_in_proportion() {
        assert_eq!(
            bar(2.0, 4.0),
            format!("[{}{}]", "#".repeat(10), ".".repeat(10))
        );
        assert_eq!(bar(0.0, 0.0), format!("[{}]", ".".repeat(20)));
        assert_eq!(bar(9.0, 4.0), format!("[{}]", "#".repeat(20)));
        let s = share_bar(0.25, 0.5);
        assert_eq!(s.matches('#').count(), 5);
        assert_eq!(s.find('|'), Some(10));
    }
}
