//! [`StateReport`]: a pure, serializable picture of the core's books, which the driver serves as
//! the master's `/state` (JSON) and reads its `/metrics` gauges from.
//!
//! The field names are an API (scripts and the web UI read them): snake_case, only ever added
//! to, never renamed. Resources are `{"cpus": f64, "mem_bytes": u64, "disk_bytes": u64}`.
//!
//! ```text
//! StateReport
//!   allocator: string                 the allocation policy
//!   total: resources                  sum of connected agents' totals
//!   agents: [ { id, hostname, connected: bool, leaving: bool,
//!               total, used, offered, reserved (sum of reservations),
//!               reservations: {role: resources}, attributes: {name: value},
//!               datasets: [string], tasks: count of live tasks on it,
//!               last_seen_ms: unix ms or null } ]
//!   frameworks: [ { id, name, principal, role, connected: bool, suppressed: bool,
//!                   allocated, dominant_share: f64 (of `total`), offers_held: count,
//!                   tasks_by_state: {"TASK_RUNNING": n, ...}, fair_share: f64 } ]
//!   roles: [ { name, weight, guarantee, limit (null: none), allocated, share: f64,
//!              frameworks: count, fair_share: f64 } ]
//!   tasks: [ { framework_id, id, name, state ("TASK_RUNNING"...), agent_id, resources,
//!              reason (null or a string), message, completed: bool,
//!              launched_at_ms, started_at_ms, ended_at_ms: unix ms or null } ]
//!   offers: [ { id, framework_id, agent_id, hostname, resources, reserved_for } ]
//! ```
//!
//! `tasks` holds the live tasks, then the recently completed ones (`completed: true`, oldest
//! first; the core keeps `completed_tasks_limit` of them). `offers` are the outstanding ones.
//! Shares are dominant shares against `total`. Times are unix milliseconds, from the wall clock
//! the caller passes (the core itself only keeps monotonic instants); `null` where this master
//! did not see the moment (tasks adopted or recovered after a restart).

use super::{AgentEntry, Master, TaskEntry};
use proto::Resources;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Resources as the report spells them: cpus as a number of cores, bytes as bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourcesReport {
    /// CPU cores (thousandths are kept as a fraction).
    pub cpus: f64,
    /// Memory in bytes.
    pub mem_bytes: u64,
    /// Disk in bytes.
    pub disk_bytes: u64,
}

impl From<Resources> for ResourcesReport {
    fn from(r: Resources) -> Self {
        ResourcesReport {
            cpus: r.cpus_milli as f64 / 1000.0,
            mem_bytes: r.mem,
            disk_bytes: r.disk,
        }
    }
}

/// One agent as `/state` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentReport {
    /// Its id.
    pub id: String,
    /// Its hostname.
    pub hostname: String,
    /// True while its control connection is up.
    pub connected: bool,
    /// True once it said it is leaving (not offered any more).
    pub leaving: bool,
    /// Everything it has.
    pub total: ResourcesReport,
    /// Held by its live tasks.
    pub used: ResourcesReport,
    /// In outstanding offers.
    pub offered: ResourcesReport,
    /// The sum of its static reservations.
    pub reserved: ResourcesReport,
    /// Its reservations by role.
    pub reservations: BTreeMap<String, ResourcesReport>,
    /// Its attributes.
    pub attributes: BTreeMap<String, String>,
    /// Its data sets.
    pub datasets: Vec<String>,
    /// How many live tasks run on it.
    pub tasks: usize,
    /// When the master last heard from it, unix milliseconds (`null`: not since a restart).
    pub last_seen_ms: Option<u64>,
}

/// One framework as `/state` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameworkReport {
    /// Its id.
    pub id: String,
    /// The name it gave.
    pub name: String,
    /// The principal whose certificate subscribed it.
    pub principal: String,
    /// Its role.
    pub role: String,
    /// True while its scheduler is connected.
    pub connected: bool,
    /// True while it asked for no offers.
    pub suppressed: bool,
    /// Its live tasks plus its outstanding offers.
    pub allocated: ResourcesReport,
    /// `allocated`'s dominant share of the cluster total.
    pub dominant_share: f64,
    /// Outstanding offers it holds.
    pub offers_held: usize,
    /// Its tasks (live and recently completed) by state name.
    pub tasks_by_state: BTreeMap<String, usize>,
    /// Its role's `fair_share` divided evenly among the role's frameworks.
    pub fair_share: f64,
}

/// One role as `/state` shows it (configured roles and roles of subscribed frameworks).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoleReport {
    /// Its name.
    pub name: String,
    /// Its weight (1.0 when not configured).
    pub weight: f64,
    /// Its quota guarantee.
    pub guarantee: ResourcesReport,
    /// Its quota limit (`null`: none).
    pub limit: Option<ResourcesReport>,
    /// The sum of its frameworks' allocations.
    pub allocated: ResourcesReport,
    /// `allocated`'s dominant share of the cluster total.
    pub share: f64,
    /// How many subscribed frameworks it has.
    pub frameworks: usize,
    /// The dominant share weighted fair sharing gives it while every role with frameworks
    /// wants more: its weight over the sum of those roles' weights (0 without frameworks;
    /// quotas and limits not applied).
    pub fair_share: f64,
}

/// One task as `/state` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskReport {
    /// Its framework.
    pub framework_id: String,
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its latest state, Mesos spelling (`TASK_RUNNING`).
    pub state: String,
    /// Where it runs (or ran).
    pub agent_id: String,
    /// What it holds (held while not terminal).
    pub resources: ResourcesReport,
    /// Why it is in that state (`null`: no reason given).
    pub reason: Option<String>,
    /// The message of its latest status.
    pub message: String,
    /// True for a terminal task that already left the live table.
    pub completed: bool,
    /// When it was launched, unix milliseconds (`null`: not seen by this master).
    pub launched_at_ms: Option<u64>,
    /// When it first reported TASK_RUNNING, unix milliseconds.
    pub started_at_ms: Option<u64>,
    /// When it reached a terminal state, unix milliseconds.
    pub ended_at_ms: Option<u64>,
}

/// One outstanding offer as `/state` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OfferReport {
    /// Its id.
    pub id: String,
    /// The framework it was made to.
    pub framework_id: String,
    /// The agent whose resources it offers.
    pub agent_id: String,
    /// That agent's hostname.
    pub hostname: String,
    /// What it offers.
    pub resources: ResourcesReport,
    /// The role whose reservation it draws from (`null`: unreserved).
    pub reserved_for: Option<String>,
}

/// The master's books at one instant: what `/state` serves. Built by [`Master::report`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateReport {
    /// The allocation policy's name.
    pub allocator: String,
    /// The sum of connected agents' totals (what shares are measured against).
    pub total: ResourcesReport,
    /// Registered agents, in id order.
    pub agents: Vec<AgentReport>,
    /// Subscribed frameworks, in id order.
    pub frameworks: Vec<FrameworkReport>,
    /// Roles, by name.
    pub roles: Vec<RoleReport>,
    /// Live tasks, then recently completed ones.
    pub tasks: Vec<TaskReport>,
    /// Outstanding offers, in id order.
    pub offers: Vec<OfferReport>,
}

impl StateReport {
    /// How many tasks (live and recently completed) are in each state.
    pub fn tasks_by_state(&self) -> BTreeMap<&str, usize> {
        let mut by = BTreeMap::new();
        for t in &self.tasks {
            *by.entry(t.state.as_str()).or_insert(0) += 1;
        }
        by
    }
}

/// Maps the core's instants to unix milliseconds, given what the wall clock read at `now`.
struct Clock {
    now: Instant,
    wall_ms: u64,
}

impl Clock {
    fn ms(&self, at: Option<Instant>) -> Option<u64> {
        let at = at?;
        Some(match self.now.checked_duration_since(at) {
            Some(ago) => self.wall_ms.saturating_sub(ago.as_millis() as u64),
            None => self.wall_ms + at.duration_since(self.now).as_millis() as u64,
        })
    }
}

fn agent_report(a: &AgentEntry, tasks: usize, clock: &Clock) -> AgentReport {
    AgentReport {
        id: a.id.to_string(),
        hostname: a.hostname.clone(),
        connected: a.is_connected(),
        leaving: a.leaving,
        total: a.total.into(),
        used: a.used.into(),
        offered: a.offered.into(),
        reserved: a.reserved_total().into(),
        reservations: a
            .reservations
            .iter()
            .map(|(r, res)| (r.clone(), (*res).into()))
            .collect(),
        attributes: a.attributes.iter().cloned().collect(),
        datasets: a.datasets.clone(),
        tasks,
        last_seen_ms: clock.ms(a.last_seen),
    }
}

fn task_report(t: &TaskEntry, completed: bool, clock: &Clock) -> TaskReport {
    TaskReport {
        framework_id: t.framework_id.to_string(),
        id: t.info.task_id.to_string(),
        name: t.info.name.clone(),
        state: t.status.state.name().to_owned(),
        agent_id: t.info.agent_id.to_string(),
        resources: t.info.resources.into(),
        reason: t.status.reason.as_ref().map(|r| format!("{r:?}")),
        message: t.status.message.clone(),
        completed,
        launched_at_ms: clock.ms(t.times.launched),
        started_at_ms: clock.ms(t.times.started),
        ended_at_ms: clock.ms(t.times.ended),
    }
}

impl Master {
    /// A picture of the books for operators (`/state`, `/metrics`), with times stated against
    /// `wall`, what the wall clock reads now. Costs one pass over agents, frameworks, tasks and
    /// offers; changes nothing.
    pub fn report(&self, wall: SystemTime) -> StateReport {
        let clock = Clock {
            now: self.now,
            wall_ms: wall
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        let total = self.cluster_total();
        let mut per_agent: BTreeMap<&proto::AgentId, usize> = BTreeMap::new();
        let mut per_fw: BTreeMap<&proto::FrameworkId, BTreeMap<&'static str, usize>> =
            BTreeMap::new();
        for t in self.tasks() {
            if !t.is_terminal() {
                *per_agent.entry(&t.info.agent_id).or_insert(0) += 1;
            }
        }
        for t in self.tasks().chain(self.completed_tasks()) {
            *per_fw
                .entry(&t.framework_id)
                .or_default()
                .entry(t.status.state.name())
                .or_insert(0) += 1;
        }
        let mut offers_held: BTreeMap<&proto::FrameworkId, usize> = BTreeMap::new();
        for o in self.ledger.offers.values() {
            *offers_held.entry(&*o.framework_id).or_insert(0) += 1;
        }
        let agents = self
            .agents()
            .map(|a| agent_report(a, per_agent.get(&a.id).copied().unwrap_or(0), &clock))
            .collect();
        let mut role_alloc: BTreeMap<String, (Resources, usize)> = self
            .config()
            .roles
            .keys()
            .map(|r| (r.clone(), (Resources::ZERO, 0)))
            .collect();
        let mut frameworks: Vec<FrameworkReport> = self
            .frameworks()
            .map(|f| {
                let allocated = self.framework_allocated(&f.id);
                let e = role_alloc
                    .entry(f.info.role.clone())
                    .or_insert((Resources::ZERO, 0));
                e.0 += allocated;
                e.1 += 1;
                FrameworkReport {
                    id: f.id.to_string(),
                    name: f.info.name.clone(),
                    principal: f.principal.name.clone(),
                    role: f.info.role.clone(),
                    connected: f.is_connected(),
                    suppressed: f.suppressed,
                    allocated: allocated.into(),
                    dominant_share: allocated.dominant_share(&total),
                    offers_held: offers_held.get(&f.id).copied().unwrap_or(0),
                    tasks_by_state: per_fw
                        .remove(&f.id)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(s, n)| (s.to_owned(), n))
                        .collect(),
                    fair_share: 0.0,
                }
            })
            .collect();
        let weight_of = |name: &str| {
            self.config()
                .roles
                .get(name)
                .map_or(1.0, |spec| spec.weight)
        };
        let active_weight: f64 = role_alloc
            .iter()
            .filter(|(_, (_, n))| *n > 0)
            .map(|(name, _)| weight_of(name))
            .sum();
        let roles: Vec<RoleReport> = role_alloc
            .into_iter()
            .map(|(name, (allocated, frameworks))| {
                let spec = self.config().roles.get(&name).cloned().unwrap_or_default();
                let fair_share = if frameworks > 0 && active_weight > 0.0 {
                    weight_of(&name) / active_weight
                } else {
                    0.0
                };
                RoleReport {
                    fair_share,
                    weight: spec.weight,
                    guarantee: spec.guarantee.into(),
                    limit: spec.limit.map(Into::into),
                    allocated: allocated.into(),
                    share: allocated.dominant_share(&total),
                    frameworks,
                    name,
                }
            })
            .collect();
        let tasks = self
            .tasks()
            .map(|t| task_report(t, false, &clock))
            .chain(self.completed_tasks().map(|t| task_report(t, true, &clock)))
            .collect();
        let offers = self
            .offers()
            .map(|o| OfferReport {
                id: o.id.to_string(),
                framework_id: o.framework_id.to_string(),
                agent_id: o.agent_id.to_string(),
                hostname: o.hostname.clone(),
                resources: o.resources.into(),
                reserved_for: o.reserved_for.clone(),
            })
            .collect();
        for f in &mut frameworks {
            if let Some(r) = roles.iter().find(|r| r.name == f.role) {
                f.fair_share = r.fair_share / r.frameworks.max(1) as f64;
            }
        }
        StateReport {
            allocator: self.allocator_name().to_owned(),
            total: total.into(),
            agents,
            frameworks,
            roles,
            tasks,
            offers,
        }
    }
}
