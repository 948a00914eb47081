//! `tessera agents`, `tessera frameworks`, `tessera tasks`: the master's `/state` as aligned
//! tables, or (`--json`) as the JSON of `/state`'s lists, field names as documented there.
//! A framework principal's certificate sees only its own frameworks and tasks.

use crate::api::{Api, ApiArgs};
use crate::table::Table;
use clap::Args;
use master::core::{AgentReport, FrameworkReport, ResourcesReport, StateReport, TaskReport};
use std::time::{SystemTime, UNIX_EPOCH};

/// `tessera agents` / `tessera frameworks`.
#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Print JSON (the list as `/state` has it) instead of a table.
    #[arg(long)]
    json: bool,
}

/// `tessera tasks`.
#[derive(Args, Debug)]
pub struct TasksArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Print JSON (the list as `/state` has it) instead of a table.
    #[arg(long)]
    json: bool,
    /// Only tasks of this framework (its id or its name).
    #[arg(long)]
    framework: Option<String>,
    /// Only tasks in this state (`running`, `TASK_RUNNING`, `finished`, ...).
    #[arg(long)]
    state: Option<String>,
}

/// Fetches `/state`.
pub async fn state(api: &Api) -> anyhow::Result<StateReport> {
    api.get("/state").await?.json()
}

/// `tessera agents`.
pub async fn agents(a: ListArgs) -> anyhow::Result<i32> {
    let report = state(&Api::new(&a.api)?).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report.agents)?);
        return Ok(0);
    }
    print!("{}", agents_table(&report.agents, now_ms()).render());
    Ok(0)
}

/// `tessera frameworks`.
pub async fn frameworks(a: ListArgs) -> anyhow::Result<i32> {
    let report = state(&Api::new(&a.api)?).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report.frameworks)?);
        return Ok(0);
    }
    print!("{}", frameworks_table(&report.frameworks).render());
    Ok(0)
}

/// `tessera tasks`.
pub async fn tasks(a: TasksArgs) -> anyhow::Result<i32> {
    let report = state(&Api::new(&a.api)?).await?;
    let framework_ids: Option<Vec<&str>> = a.framework.as_deref().map(|want| {
        report
            .frameworks
            .iter()
            .filter(|f| f.id == want || f.name == want)
            .map(|f| f.id.as_str())
            .chain(std::iter::once(want))
            .collect()
    });
    let state = a.state.as_deref().map(state_name);
    let tasks: Vec<&TaskReport> = report
        .tasks
        .iter()
        .filter(|t| {
            framework_ids
                .as_ref()
                .is_none_or(|ids| ids.contains(&t.framework_id.as_str()))
        })
        .filter(|t| state.as_ref().is_none_or(|s| t.state == *s))
        .collect();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&tasks)?);
        return Ok(0);
    }
    print!(
        "{}",
        tasks_table(&tasks, &report.frameworks, now_ms()).render()
    );
    Ok(0)
}

/// `running` → `TASK_RUNNING`; a name already spelt so is kept.
fn state_name(s: &str) -> String {
    let upper = s.to_ascii_uppercase();
    if upper.starts_with("TASK_") {
        upper
    } else {
        format!("TASK_{upper}")
    }
}

/// Now, in unix milliseconds (the times `/state` gives are such).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The agents' table.
pub fn agents_table(agents: &[AgentReport], now_ms: u64) -> Table {
    let mut t = Table::new(&[
        "ID",
        "HOSTNAME",
        "STATE",
        ">CPUS",
        ">MEM",
        ">RESERVED",
        ">TASKS",
        "LAST SEEN",
    ]);
    for a in agents {
        let state = match (a.connected, a.leaving) {
            (_, true) => "leaving",
            (true, false) => "connected",
            (false, false) => "disconnected",
        };
        t.row(vec![
            a.id.clone(),
            a.hostname.clone(),
            state.into(),
            format!("{}/{}", cpus(a.used.cpus), cpus(a.total.cpus)),
            format!("{}/{}", mem(a.used.mem_bytes), mem(a.total.mem_bytes)),
            resources(&a.reserved),
            a.tasks.to_string(),
            a.last_seen_ms.map_or("-".into(), |at| ago(now_ms, at)),
        ]);
    }
    t
}

/// The frameworks' table.
pub fn frameworks_table(frameworks: &[FrameworkReport]) -> Table {
    let mut t = Table::new(&[
        "ID",
        "NAME",
        "PRINCIPAL",
        "ROLE",
        "STATE",
        ">SHARE",
        ">FAIR",
        ">OFFERS",
        "TASKS",
    ]);
    for f in frameworks {
        let state = match (f.connected, f.suppressed) {
            (false, _) => "disconnected",
            (true, true) => "suppressed",
            (true, false) => "connected",
        };
        let tasks: Vec<String> = f
            .tasks_by_state
            .iter()
            .map(|(s, n)| format!("{n} {}", short_state(s)))
            .collect();
        t.row(vec![
            f.id.clone(),
            f.name.clone(),
            f.principal.clone(),
            f.role.clone(),
            state.into(),
            percent(f.dominant_share),
            percent(f.fair_share),
            f.offers_held.to_string(),
            tasks.join(", "),
        ]);
    }
    t
}

/// The tasks' table (framework shown by name when known).
pub fn tasks_table(tasks: &[&TaskReport], frameworks: &[FrameworkReport], now_ms: u64) -> Table {
    let mut t = Table::new(&[
        "ID",
        "FRAMEWORK",
        "STATE",
        "AGENT",
        ">CPUS",
        ">MEM",
        "STARTED",
        ">TIME",
        "REASON",
    ]);
    for task in tasks {
        let framework = frameworks
            .iter()
            .find(|f| f.id == task.framework_id)
            .map_or(task.framework_id.clone(), |f| f.name.clone());
        let from = task.started_at_ms.or(task.launched_at_ms);
        let took = match (from, task.ended_at_ms) {
            (Some(s), Some(e)) => secs(e.saturating_sub(s)),
            (Some(s), None) => secs(now_ms.saturating_sub(s)),
            _ => "-".into(),
        };
        t.row(vec![
            task.id.clone(),
            framework,
            short_state(&task.state).into(),
            task.agent_id.clone(),
            cpus(task.resources.cpus),
            mem(task.resources.mem_bytes),
            from.map_or("-".into(), |at| ago(now_ms, at)),
            took,
            task.reason.clone().unwrap_or_default(),
        ]);
    }
    t
}

/// `TASK_RUNNING` → `running`.
pub fn short_state(s: &str) -> &str {
    s.strip_prefix("TASK_").unwrap_or(s)
}

/// Cores, without needless decimals.
pub fn cpus(c: f64) -> String {
    let s = format!("{c:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Bytes in a binary unit with one decimal where it helps.
pub fn mem(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    let (v, unit) = if b >= KIB * KIB * KIB {
        (b / (KIB * KIB * KIB), "GiB")
    } else if b >= KIB * KIB {
        (b / (KIB * KIB), "MiB")
    } else if b >= KIB {
        (b / KIB, "KiB")
    } else {
        return format!("{bytes}B");
    };
    let s = format!("{v:.1}");
    format!("{}{unit}", s.trim_end_matches(".0"))
}

fn resources(r: &ResourcesReport) -> String {
    if r.cpus == 0.0 && r.mem_bytes == 0 {
        return "-".into();
    }
    format!("{} cpus, {}", cpus(r.cpus), mem(r.mem_bytes))
}

/// A share as a percentage.
pub fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

fn secs(ms: u64) -> String {
    if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

/// How long ago `at_ms` was, at `now_ms`.
pub fn ago(now_ms: u64, at_ms: u64) -> String {
    format!("{} ago", secs(now_ms.saturating_sub(at_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_read_well() {
        assert_eq!(cpus(4.0), "4");
        assert_eq!(cpus(0.25), "0.25");
        assert_eq!(cpus(1.5), "1.5");
        assert_eq!(mem(4 << 30), "4GiB");
        assert_eq!(mem(1536 << 20), "1.5GiB");
        assert_eq!(mem(64 << 20), "64MiB");
        assert_eq!(mem(512), "512B");
        assert_eq!(secs(1500), "1.5s");
        assert_eq!(secs(125_000), "2m05s");
        assert_eq!(state_name("running"), "TASK_RUNNING");
        assert_eq!(state_name("TASK_KILLED"), "TASK_KILLED");
        assert_eq!(percent(0.25), "25.0%");
    }
}
