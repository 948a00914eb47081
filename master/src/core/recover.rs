//! Recovery: a master core rebuilt from its registry after a restart.
//!
//! What the registry holds comes back as it would be after every peer had disconnected at the
//! instant of the restart, with the timeouts counted from the restart:
//! - agents are known but disconnected: each has `agent_reregister_timeout` to re-register with
//!   its id (matched to the old id and certificate name; its report reconciled as after a
//!   partition), or its tasks end TASK_GONE;
//! - their tasks are TASK_UNREACHABLE (reconcile answers that, never TASK_LOST) and stay charged
//!   to their agents. The state a task returns to is what its agent reports; one the agent does
//!   not report counts as never started (TASK_STAGING before the restart), so its launch is sent
//!   again: a launch is persisted before it is sent, and a task leaves the registry before its
//!   agent may forget it (the ack that lets it forget follows the removal), so an unreported
//!   task never ran to an acknowledged end;
//! - a task whose agent reported its end before the restart, but whose framework had not
//!   acknowledged it, comes back ended with that status (the registry records the end before
//!   the freed resources can be offered again), charging nothing, until the acknowledgement;
//! - frameworks are known but disconnected: each may re-subscribe under its id (same principal)
//!   within its failover timeout, or it is torn down;
//! - blobs the recovered tasks name count as referenced (the blob GC keeps them), and the
//!   principals of the frameworks whose tasks name a blob found in the store are its owners
//!   again, as are the uploaders the blob store recorded beside it (the driver reports them
//!   with `BlobStored` at start);
//! - removed agent ids and torn-down framework ids (the registry's bounded tombstones) are
//!   remembered as removed again: such an agent is told to shut down, such a framework's
//!   re-subscription is refused, exactly as before the restart.
//!
//! Not kept: offers, refuse filters, executors (charged again when their agent re-registers
//! reporting them), completed tasks.

use super::timer::Timer;
use super::{AgentEntry, FrameworkEntry, Master, MasterConfig, TaskEntry};
use crate::allocator::Allocator;
use crate::core::agent::sanitize_reservations;
use crate::registry::Snapshot;
use proto::{Digest, Reason, Resources, TaskState};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

impl Master {
    /// A master rebuilt from a registry snapshot at `now` (an empty snapshot gives a fresh
    /// master, as [`Master::new`]). Pure: no I/O, so the simulator restarts cores with it too.
    pub fn recover(
        cfg: MasterConfig,
        allocator: Box<dyn Allocator>,
        snapshot: &Snapshot,
        now: Instant,
    ) -> Self {
        let mut m = Master::new(cfg, allocator, now);
        for id in &snapshot.removed_agents {
            m.removed_agents.insert(id.clone());
        }
        for id in &snapshot.removed_frameworks {
            m.removed_frameworks.insert(id.clone());
        }
        let reregister = m.cfg.agent_reregister_timeout;
        let secs = reregister.as_secs_f64();
        for a in &snapshot.agents {
            m.disconnected
                .entry(a.owner.clone())
                .or_default()
                .insert(a.id.clone());
            let seq = m.next_seq();
            let at = now.checked_add(reregister).unwrap_or(now);
            m.agents.insert(
                a.id.clone(),
                AgentEntry {
                    shared_id: std::sync::Arc::new(a.id.clone()),
                    id: a.id.clone(),
                    seq,
                    hostname: a.info.hostname.clone(),
                    owner: a.owner.clone(),
                    total: a.info.resources,
                    attributes: a.info.attributes.clone(),
                    datasets: a.info.datasets.clone(),
                    conn: None,
                    remove_at: Some(at),
                    used: Resources::ZERO,
                    offered: Resources::ZERO,
                    reservations: sanitize_reservations(&a.info.resources, &a.info.reservations),
                    reserved_used: Default::default(),
                    reserved_offered: Default::default(),
                    leaving: false,
                    last_seen: None,
                },
            );
            m.timers.set(Timer::AgentRemoval(a.id.clone()), at);
            m.unheard.insert(a.id.clone());
        }
        for f in &snapshot.frameworks {
            let seq = m.next_seq();
            let d = Duration::from_millis(f.info.failover_timeout_ms).min(m.cfg.max_failover);
            let at = if d.is_zero() {
                Some(now)
            } else {
                now.checked_add(d)
            };
            let mut info = f.info.clone();
            info.id = Some(f.id.clone());
            m.frameworks.insert(
                f.id.clone(),
                FrameworkEntry {
                    shared_id: std::sync::Arc::new(f.id.clone()),
                    id: f.id.clone(),
                    seq,
                    info,
                    principal: f.principal.clone(),
                    conn: None,
                    suppressed: false,
                    failover_at: at,
                },
            );
            m.timers
                .set_or_stop(Timer::FrameworkFailover(f.id.clone()), at);
        }
        for t in &snapshot.tasks {
            let aid = t.info.agent_id.clone();
            if !m.agents.contains_key(&aid) {
                // Never written so (an agent's removal removes its tasks in the same batch).
                tracing::warn!(framework = %t.framework_id, task = %t.info.task_id, agent = %aid, "recovered task on an unknown agent; dropped");
                continue;
            }
            if let Some(status) = &t.ended {
                // Ended, its end not yet acknowledged: kept for the acknowledgement and for
                // reconciliation, charging nothing.
                let entry = TaskEntry {
                    framework_id: t.framework_id.clone(),
                    info: t.info.clone(),
                    status: status.clone(),
                    reserved: Vec::new(),
                    kill_requested: t.kill_requested,
                    before_unreachable: None,
                    restore_notice: None,
                    recovered: true,
                    unreachable_told: false,
                    adopted_ended: false,
                    times: Default::default(),
                };
                m.tasks
                    .insert((t.framework_id.clone(), t.info.task_id.clone()), entry);
                continue;
            }
            let status = Self::master_status(
                &t.framework_id,
                &t.info.task_id,
                Some(aid.clone()),
                TaskState::Unreachable,
                Some(Reason::AgentUnreachable),
                format!(
                    "the master restarted and agent {aid} has not re-registered yet; the task may \
                     still run there, and is TASK_GONE if the agent does not re-register within \
                     {secs} s"
                ),
            );
            let entry = TaskEntry {
                framework_id: t.framework_id.clone(),
                info: t.info.clone(),
                status,
                reserved: Vec::new(),
                kill_requested: t.kill_requested,
                before_unreachable: Some(TaskState::Staging),
                restore_notice: None,
                recovered: true,
                unreachable_told: false,
                adopted_ended: false,
                times: Default::default(),
            };
            m.hold_task(&entry);
            m.tasks
                .insert((t.framework_id.clone(), t.info.task_id.clone()), entry);
        }
        let ids: Vec<_> = m.agents.keys().cloned().collect();
        for id in ids {
            m.rebuild_pools(&id);
        }
        if !snapshot.is_empty() {
            tracing::info!(
                agents = snapshot.agents.len(),
                frameworks = snapshot.frameworks.len(),
                tasks = m.tasks.len(),
                "master state recovered from the registry"
            );
        }
        m
    }

    /// Checks that a registry snapshot holds exactly what the core would need to recover:
    /// its frameworks, its agents and its live tasks (with their kill requests). Tests and the
    /// simulator run it after every step against the registry the `Persist` actions were
    /// applied to.
    pub fn check_registry(&self, snapshot: &Snapshot) -> Result<(), String> {
        let fw: Vec<_> = snapshot.frameworks.iter().map(|f| &f.id).collect();
        let core_fw: Vec<_> = self.frameworks.keys().collect();
        if fw != core_fw {
            return Err(format!(
                "registry frameworks {fw:?} differ from the core's {core_fw:?}"
            ));
        }
        for f in &snapshot.frameworks {
            let e = &self.frameworks[&f.id];
            if e.principal != f.principal
                || e.info.failover_timeout_ms != f.info.failover_timeout_ms
            {
                return Err(format!("registry record of framework {} is stale", f.id));
            }
        }
        let ag: Vec<_> = snapshot.agents.iter().map(|a| &a.id).collect();
        let core_ag: Vec<_> = self.agents.keys().collect();
        if ag != core_ag {
            return Err(format!(
                "registry agents {ag:?} differ from the core's {core_ag:?}"
            ));
        }
        let ts: Vec<_> = snapshot
            .tasks
            .iter()
            .map(|t| {
                (
                    &t.framework_id,
                    &t.info.task_id,
                    &t.info.agent_id,
                    t.kill_requested,
                )
            })
            .collect();
        let core_ts: Vec<_> = self
            .tasks
            .values()
            .map(|t| {
                (
                    &t.framework_id,
                    &t.info.task_id,
                    &t.info.agent_id,
                    t.kill_requested,
                )
            })
            .collect();
        if ts != core_ts {
            return Err(format!(
                "registry tasks {ts:?} differ from the core's {core_ts:?}"
            ));
        }
        let gone: BTreeSet<_> = snapshot.removed_agents.iter().collect();
        if gone != self.removed_agents.set.iter().collect() {
            return Err("registry's removed agent ids differ from the core's".into());
        }
        let gone: BTreeSet<_> = snapshot.removed_frameworks.iter().collect();
        if gone != self.removed_frameworks.set.iter().collect() {
            return Err("registry's removed framework ids differ from the core's".into());
        }
        Ok(())
    }

    /// The principals whose live tasks name `digest` (as module, file or executor module): the
    /// owners of a blob found in the store at start, after a restart.
    pub(super) fn recovered_blob_owners(&self, digest: &Digest) -> BTreeSet<String> {
        self.tasks
            .values()
            .filter(|t| {
                t.info.module == *digest
                    || t.info.files.iter().any(|f| f.digest == *digest)
                    || t.info
                        .executor
                        .as_ref()
                        .is_some_and(|e| e.module == *digest)
            })
            .filter_map(|t| self.frameworks.get(&t.framework_id))
            .map(|f| f.principal.name.clone())
            .collect()
    }
}
