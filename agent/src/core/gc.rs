//! When the directories of ended tasks and executors are removed: the garbage-collection
//! decisions, kept in the sans-IO core so that they run in virtual time.
//!
//! A one-shot task's directory (`frameworks/<fid>/tasks/<tid>/`: its sandbox and output)
//! becomes collectable once the task is terminal and its last status update is acknowledged
//! (the core forgets the task then); an executor's directory once the instance has exited. It
//! is removed [`GcPolicy::delay`] later, so its output stays readable for that long. Like
//! Mesos's `--gc_delay`, the delay shrinks as the work directory's file system fills: the
//! driver reports the used fraction ([`Agent::set_disk_usage`]) and the delay in force is
//! `delay * max(0, 1 - disk_headroom - usage)`; a full disk collects at once.
//!
//! The core only decides: [`Agent::poll_gc`] hands out [`GcTarget`]s whose time has come, and
//! the driver removes them off its loop. A task or executor of the same id that starts again
//! cancels a pending collection (its directory is laid out afresh and must not be removed under
//! it). Collection is off until [`Agent::with_gc`] turns it on (the virtual-time cluster has no
//! directories to collect). Nothing here is persisted: after a restart the driver clears all of
//! the previous run's directories, since no guest survives an agent restart.

use super::Agent;
use proto::{ExecutorId, FrameworkId, TaskId};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// How long ended tasks' and executors' directories are kept.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GcPolicy {
    /// How long a directory is kept after it became collectable, when the disk is empty
    /// (default 1 hour: Mesos's week, scaled to a cluster of short wasm tasks).
    pub delay: Duration,
    /// The fraction of the disk that should stay free (default 0.1): the delay reaches zero
    /// when usage reaches `1 - disk_headroom`.
    pub disk_headroom: f64,
}

impl Default for GcPolicy {
    fn default() -> Self {
        Self {
            delay: Duration::from_secs(3600),
            disk_headroom: 0.1,
        }
    }
}

impl GcPolicy {
    /// The delay in force when `usage` (0..=1) of the work directory's file system is used.
    pub fn scaled_delay(&self, usage: f64) -> Duration {
        let usage = if usage.is_finite() {
            usage.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let factor = (1.0 - self.disk_headroom - usage).clamp(0.0, 1.0);
        self.delay.mul_f64(factor)
    }
}

/// A directory the driver should remove (it maps it to a path with `WorkDir`).
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum GcTarget {
    /// `frameworks/<fid>/tasks/<tid>/`.
    Task {
        /// The task's framework.
        framework_id: FrameworkId,
        /// The task.
        task_id: TaskId,
    },
    /// `frameworks/<fid>/executors/<eid>/`.
    Executor {
        /// The executor's framework.
        framework_id: FrameworkId,
        /// The executor.
        executor_id: ExecutorId,
    },
}

/// The collector's books.
#[derive(Debug, Default)]
pub(super) struct Gc {
    policy: Option<GcPolicy>,
    /// The used fraction of the work directory's file system, as last reported.
    usage: f64,
    /// Collectable directories and since when.
    pending: BTreeMap<GcTarget, Instant>,
    /// Due, not yet handed to the driver.
    due: VecDeque<GcTarget>,
}

/// The collector's books in a checkpoint: what is pending, and for how long it has waited.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GcCheckpoint {
    /// Collectable directories, with the milliseconds they had waited at the checkpoint.
    pub pending: Vec<(GcTarget, u64)>,
    /// Due and not yet removed (removed right after recovery).
    pub due: Vec<GcTarget>,
}

impl Gc {
    pub(super) fn due_len(&self) -> usize {
        self.due.len()
    }

    pub(super) fn checkpoint(&self, now: Instant) -> GcCheckpoint {
        GcCheckpoint {
            pending: self
                .pending
                .iter()
                .map(|(t, since)| {
                    let waited = now.saturating_duration_since(*since);
                    (
                        t.clone(),
                        u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
                    )
                })
                .collect(),
            due: self.due.iter().cloned().collect(),
        }
    }

    pub(super) fn restore(&mut self, c: GcCheckpoint, now: Instant) {
        for (t, waited) in c.pending {
            let since = now
                .checked_sub(Duration::from_millis(waited))
                .unwrap_or(now);
            self.pending.insert(t, since);
        }
        self.due.extend(c.due);
    }

    /// Every directory the collector knows (pending or due): not a leftover at start.
    pub(super) fn targets(&self) -> impl Iterator<Item = &GcTarget> {
        self.pending.keys().chain(self.due.iter())
    }

    fn delay(&self) -> Option<Duration> {
        self.policy.map(|p| p.scaled_delay(self.usage))
    }
}

impl Agent {
    /// Turns on the collection of ended tasks' and executors' directories.
    pub fn with_gc(mut self, policy: GcPolicy) -> Self {
        self.gc.policy = Some(policy);
        self
    }

    /// Reports the used fraction (0..=1) of the work directory's file system, which shortens
    /// the delay of every pending collection (already due ones are handed out at the next
    /// [`Agent::handle_timeout`]).
    pub fn set_disk_usage(&mut self, usage: f64) {
        self.gc.usage = usage;
    }

    /// The delay in force now (`None` when collection is off).
    pub fn gc_delay(&self) -> Option<Duration> {
        self.gc.delay()
    }

    /// Directories waiting for their delay to pass.
    pub fn gc_pending(&self) -> usize {
        self.gc.pending.len()
    }

    /// Next directory to remove.
    pub fn poll_gc(&mut self) -> Option<GcTarget> {
        let t = self.gc.due.pop_front();
        if t.is_some() {
            self.generation += 1;
        }
        t
    }

    /// The blobs (modules and files, as hex digests) that a task not yet ended or an executor
    /// instance not yet exited may still read: the driver's collection of `blobs/` and
    /// `cache/` ([`crate::blob_gc`]) never removes them.
    pub fn blobs_in_use(&self) -> std::collections::BTreeSet<String> {
        let tasks = self
            .tasks
            .values()
            .filter(|t| t.phase != super::Phase::Done)
            .flat_map(|t| {
                let files = t.info.files.iter().map(|f| f.digest);
                let exec = t.info.executor.as_ref().map(|e| e.module);
                files.chain(exec).chain([t.info.module])
            });
        let executors = self.instances.values().map(|i| i.module());
        tasks.chain(executors).map(|d| d.to_hex()).collect()
    }

    /// The directories this agent still owns: those of its tasks and executors, and those
    /// waiting for collection. At start, anything else under `frameworks/` is a leftover.
    pub fn owned_directories(&self) -> std::collections::BTreeSet<GcTarget> {
        let tasks = self
            .tasks
            .iter()
            .filter(|(_, t)| t.info.executor.is_none())
            .map(|((fid, tid), _)| GcTarget::Task {
                framework_id: fid.clone(),
                task_id: tid.clone(),
            });
        let execs = self
            .tasks
            .iter()
            .filter_map(|((fid, _), t)| {
                t.info.executor.as_ref().map(|e| GcTarget::Executor {
                    framework_id: fid.clone(),
                    executor_id: e.executor_id.clone(),
                })
            })
            .chain(self.instances.keys().map(|(fid, eid)| GcTarget::Executor {
                framework_id: fid.clone(),
                executor_id: eid.clone(),
            }));
        tasks
            .chain(execs)
            .chain(self.gc.targets().cloned())
            .collect()
    }

    pub(super) fn gc_deadline(&self) -> Option<Instant> {
        let delay = self.gc.delay()?;
        self.gc.pending.values().min().map(|since| *since + delay)
    }

    pub(super) fn gc_timeout(&mut self, now: Instant) {
        let Some(delay) = self.gc.delay() else {
            return;
        };
        let due: Vec<GcTarget> = self
            .gc
            .pending
            .iter()
            .filter(|(_, since)| **since + delay <= now)
            .map(|(t, _)| t.clone())
            .collect();
        for t in due {
            self.gc.pending.remove(&t);
            tracing::debug!(target = ?t, "directory due for collection");
            self.gc.due.push_back(t);
        }
    }

    /// `target` became collectable at `now` (ids that are not safe path components never had
    /// a directory and are ignored).
    pub(super) fn gc_schedule(&mut self, now: Instant, target: GcTarget) {
        if self.gc.policy.is_none() {
            return;
        }
        let safe = match &target {
            GcTarget::Task {
                framework_id,
                task_id,
            } => {
                proto::ids::is_safe_id(framework_id.as_str())
                    && proto::ids::is_safe_id(task_id.as_str())
            }
            GcTarget::Executor {
                framework_id,
                executor_id,
            } => {
                proto::ids::is_safe_id(framework_id.as_str())
                    && proto::ids::is_safe_id(executor_id.as_str())
            }
        };
        if safe {
            self.gc.pending.insert(target, now);
        }
    }

    /// A task or executor of `target`'s id starts again: its directory is no longer garbage.
    pub(super) fn gc_cancel(&mut self, target: &GcTarget) {
        self.gc.pending.remove(target);
        self.gc.due.retain(|t| t != target);
    }

    /// Schedules the directory of a one-shot task the core forgets (executors' tasks live in
    /// their executor's directory).
    pub(super) fn gc_task_forgotten(&mut self, now: Instant, key: &super::TaskKey) {
        let Some(t) = self.tasks.get(key) else {
            return;
        };
        if t.info.executor.is_some() {
            return;
        }
        self.gc_schedule(
            now,
            GcTarget::Task {
                framework_id: key.0.clone(),
                task_id: key.1.clone(),
            },
        );
    }
}
