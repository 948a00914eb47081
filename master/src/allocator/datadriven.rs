//! Golden allocation cases as data, in the style of raft-rs's datadriven tests: a pure harness
//! (snapshot in, proposed offers out) runs every case in `testdata/*.txt` and compares what the
//! policy proposes with the expected text. Adding a policy, or a behaviour of one, means adding
//! a file of cases.
//!
//! # Format
//! A file is a sequence of cases separated by blank lines; lines starting with `#` are comments.
//! A case is a command line, input lines, a `----` line, then the expected output:
//!
//! ```text
//! # The seed's worked example: one agent, two frameworks with nothing yet.
//! allocate policy=drf
//! agent a1 cpus:4;mem:4GB
//! framework f1
//! framework f2
//! ----
//! a1 -> f1 <4 cpus, 4 GB>
//! ```
//!
//! - `allocate [policy=drf|priority|simple-drf] [min=SPEC]`: one allocation round (default
//!   policy `drf`, default minimum that of `MasterConfig`).
//! - `agent ID SPEC [free=SPEC]`: an agent, in registration order. SPEC is an agent's
//!   `--resources` (`cpus:4;mem:4GB;cpus(web):1;mem(web):1GB`: the total, with reservations).
//!   `free=` is what is neither used nor offered, by pool in the same syntax (default: all).
//! - `framework ID [role=R] [priority=N] [allocated=SPEC] [refuses=A1,A2] [inactive]`: a
//!   framework, in subscription order (default role `*`); `refuses` sets refuse filters on
//!   those agents, `inactive` makes it ineligible (suppressed or disconnected).
//! - `role NAME [weight=W] [guarantee=SPEC] [limit=SPEC]`: a role's configuration.
//!
//! As in the master, the snapshot lists only agents with something allocatable (reserved pools
//! below the minimum are left out) and the cluster total is the sum of all agents' totals.
//! Each proposal prints as `AGENT -> FRAMEWORK RESOURCES`, with `(ROLE)` after the agent for a
//! reserved pool; a round with none prints `(no offers)`.
//!
//! Run with `REWRITE=1` to write the actual output into the files instead of comparing (then
//! review the diff).

use super::{
    by_name, is_allocatable, AgentView, Allocation, FrameworkView, RoleSpec, Roles, Snapshot,
};
use proto::resources::parse_resource_spec;
use proto::{AgentId, FrameworkId, Resources};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// An agent as a case describes it.
struct Agent {
    id: AgentId,
    total: Resources,
    free: Resources,
    reserved_free: Vec<(String, Resources)>,
    refused: Vec<(u64, Instant)>,
}

/// A framework as a case describes it.
struct Framework {
    id: FrameworkId,
    role: String,
    priority: i32,
    allocated: Resources,
    eligible: bool,
    refuses: Vec<String>,
}

/// One parsed case: the cluster and the round's parameters.
struct Case {
    policy: String,
    min: Resources,
    agents: Vec<Agent>,
    frameworks: Vec<Framework>,
    roles: Roles,
}

/// Parses a resource SPEC that must not name reservations.
fn plain(spec: &str) -> Result<Resources, String> {
    let (total, reserved) = parse_resource_spec(spec).map_err(|e| e.to_string())?;
    if !reserved.is_empty() {
        return Err(format!("{spec:?}: no reservations expected here"));
    }
    Ok(total)
}

/// Splits `key=value` arguments; bare words come back with an empty value.
fn args<'a>(words: impl Iterator<Item = &'a str>) -> Vec<(&'a str, &'a str)> {
    words
        .map(|w| w.split_once('=').unwrap_or((w, "")))
        .collect()
}

impl Case {
    /// Parses the command line and the input lines of a case.
    fn parse(command: &str, input: &[&str]) -> Result<Case, String> {
        let mut words = command.split_whitespace();
        if words.next() != Some("allocate") {
            return Err(format!("unknown command {command:?}"));
        }
        let mut case = Case {
            policy: "drf".to_owned(),
            min: crate::core::MasterConfig::default().min_allocatable,
            agents: Vec::new(),
            frameworks: Vec::new(),
            roles: Roles::new(),
        };
        for (k, v) in args(words) {
            match k {
                "policy" => case.policy = v.to_owned(),
                "min" => case.min = plain(v)?,
                _ => return Err(format!("unknown argument {k:?} of allocate")),
            }
        }
        for line in input {
            let mut words = line.split_whitespace();
            let (Some(kind), Some(name)) = (words.next(), words.next()) else {
                return Err(format!("{line:?}: expected KIND NAME ..."));
            };
            match kind {
                "agent" => {
                    let spec = words.next().ok_or(format!("{line:?}: no resources"))?;
                    let (total, reservations) =
                        parse_resource_spec(spec).map_err(|e| e.to_string())?;
                    let held = reservations.iter().fold(Resources::ZERO, |t, r| t + r.1);
                    let (mut free, mut reserved_free) = (total - held, reservations);
                    for (k, v) in args(words) {
                        match k {
                            "free" => {
                                let (all, reserved) =
                                    parse_resource_spec(v).map_err(|e| e.to_string())?;
                                let held = reserved.iter().fold(Resources::ZERO, |t, r| t + r.1);
                                (free, reserved_free) = (all - held, reserved);
                            }
                            _ => return Err(format!("{line:?}: unknown argument {k:?}")),
                        }
                    }
                    case.agents.push(Agent {
                        id: AgentId(name.to_owned()),
                        total,
                        free,
                        reserved_free,
                        refused: Vec::new(),
                    });
                }
                "framework" => {
                    let mut f = Framework {
                        id: FrameworkId(name.to_owned()),
                        role: "*".to_owned(),
                        priority: 0,
                        allocated: Resources::ZERO,
                        eligible: true,
                        refuses: Vec::new(),
                    };
                    for (k, v) in args(words) {
                        match k {
                            "role" => f.role = v.to_owned(),
                            "priority" => f.priority = v.parse().map_err(|e| format!("{e}"))?,
                            "allocated" => f.allocated = plain(v)?,
                            "refuses" => f.refuses = v.split(',').map(str::to_owned).collect(),
                            "inactive" => f.eligible = false,
                            _ => return Err(format!("{line:?}: unknown argument {k:?}")),
                        }
                    }
                    case.frameworks.push(f);
                }
                "role" => {
                    let mut spec = RoleSpec::default();
                    for (k, v) in args(words) {
                        match k {
                            "weight" => spec.weight = v.parse().map_err(|e| format!("{e}"))?,
                            "guarantee" => spec.guarantee = plain(v)?,
                            "limit" => spec.limit = Some(plain(v)?),
                            _ => return Err(format!("{line:?}: unknown argument {k:?}")),
                        }
                    }
                    case.roles.insert(name.to_owned(), spec);
                }
                _ => return Err(format!("{line:?}: expected agent, framework or role")),
            }
        }
        Ok(case)
    }

    /// Runs the round at `now` and prints the proposals.
    fn run(mut self, now: Instant) -> Result<String, String> {
        let far = now + Duration::from_secs(3600);
        for (seq, f) in (1u64..).zip(&self.frameworks) {
            for a in &f.refuses {
                let agent = self.agents.iter_mut().find(|x| x.id.0 == *a);
                let agent = agent.ok_or(format!("framework {} refuses unknown {a}", f.id))?;
                agent.refused.push((seq, far));
            }
        }
        let mut policy = by_name(&self.policy).ok_or(format!("no policy {:?}", self.policy))?;
        let min = self.min;
        let agents = (1u64..)
            .zip(&self.agents)
            .map(|(seq, a)| AgentView {
                id: &a.id,
                seq,
                hostname: "host",
                total: a.total,
                available: a.free,
                reserved: a
                    .reserved_free
                    .iter()
                    .map(|(r, x)| (r.as_str(), *x))
                    .filter(|(_, x)| is_allocatable(x, &min))
                    .collect(),
                refused: &a.refused,
                attributes: &[],
            })
            .filter(|a| !a.reserved.is_empty() || is_allocatable(&a.available, &min))
            .collect();
        let snapshot = Snapshot {
            total: self.agents.iter().fold(Resources::ZERO, |t, a| t + a.total),
            agents,
            frameworks: (1u64..)
                .zip(&self.frameworks)
                .map(|(seq, f)| FrameworkView {
                    id: &f.id,
                    seq,
                    role: &f.role,
                    priority: f.priority,
                    allocated: f.allocated,
                    eligible: f.eligible,
                })
                .collect(),
            roles: &self.roles,
            min_allocatable: min,
            refused_free: Resources::ZERO,
        };
        Ok(print(&snapshot, &policy.allocate(&snapshot, now)))
    }
}

/// The proposals as text, one a line.
fn print(snapshot: &Snapshot<'_>, proposals: &[Allocation]) -> String {
    if proposals.is_empty() {
        return "(no offers)\n".to_owned();
    }
    let mut out = String::new();
    for p in proposals {
        let pool = p
            .reserved_for
            .as_ref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        let agent = snapshot.agents.get(p.agent).map(|a| a.id.0.as_str());
        let framework = snapshot
            .frameworks
            .get(p.framework)
            .map(|f| f.id.0.as_str());
        let _ = writeln!(
            out,
            "{}{pool} -> {} {}",
            agent.unwrap_or("(no such agent)"),
            framework.unwrap_or("(no such framework)"),
            p.resources
        );
    }
    out
}

/// Runs every case of a file. Returns the file as it should be (expected outputs replaced by
/// actual ones) and the cases whose output differs.
fn run_file(text: &str, now: Instant) -> (String, Vec<String>) {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    let mut failures = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.trim().is_empty() || line.starts_with('#') {
            out.push_str(line);
            out.push('\n');
            i += 1;
            continue;
        }
        let start = i + 1;
        let command = line;
        let mut input = Vec::new();
        out.push_str(command);
        out.push('\n');
        i += 1;
        while i < lines.len() && lines[i] != "----" {
            out.push_str(lines[i]);
            out.push('\n');
            if !lines[i].starts_with('#') && !lines[i].trim().is_empty() {
                input.push(lines[i]);
            }
            i += 1;
        }
        if i == lines.len() {
            failures.push(format!("line {start}: case without a ---- line"));
            break;
        }
        out.push_str("----\n");
        i += 1;
        let mut expected = String::new();
        while i < lines.len() && !lines[i].trim().is_empty() {
            expected.push_str(lines[i]);
            expected.push('\n');
            i += 1;
        }
        let actual = Case::parse(command, &input)
            .and_then(|c| c.run(now))
            .unwrap_or_else(|e| format!("error: {e}\n"));
        if actual != expected {
            failures.push(format!(
                "line {start}: {command}\n--- expected\n{expected}--- actual\n{actual}"
            ));
        }
        out.push_str(&actual);
    }
    (out, failures)
}

#[test]
fn golden_cases() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/allocator/testdata");
    let rewrite = std::env::var_os("REWRITE").is_some();
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("allocator testdata directory")
        .map(|e| e.expect("testdata entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no cases in {}", dir.display());
    let now = Instant::now();
    let mut failures = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).expect("readable case file");
        let (rewritten, failed) = run_file(&text, now);
        if rewrite {
            if rewritten != text {
                std::fs::write(&path, rewritten).expect("writable case file");
            }
        } else {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            failures.extend(failed.into_iter().map(|f| format!("{name}:{f}")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) differ (REWRITE=1 to accept the actual output):\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn format_errors_are_reported_in_the_output() {
    let now = Instant::now();
    let (out, failed) = run_file("allocate\nagent a1 gpus:1\n----\n", now);
    assert_eq!(failed.len(), 1);
    assert!(out.contains("error: invalid resource"), "{out}");
    let (_, failed) = run_file("allocate\nframework f1\n", now);
    assert_eq!(failed, ["line 1: case without a ---- line"]);
}
