//! What the core keeps across a restart of the agent process, and how it picks up again.
//!
//! The guests outlive the agent (they run in a runtime process), so an agent restart must not
//! lose a task: [`Agent::checkpoint`] captures everything recovery needs (the agent id, every
//! task not yet forgotten with its state, phase and its queue of unacknowledged status updates
//! with their uuids, in order; every executor instance with its run, info and envelope; the
//! directories waiting for collection), and [`Agent::recover`] rebuilds a core from it.
//!
//! The driver writes the checkpoint after handling a batch of inputs and before carrying out
//! that batch's actions (persist, then send), whenever [`Agent::generation`] moved, so nothing
//! the master or the runtime was told is missing from the last checkpoint.
//!
//! # Recovery protocol
//! 1. `Agent::recover(cfg, checkpoint, now)`: the tasks and instances as they were; not
//!    connected. Timers (status resends, kill graces, idle stops, forced stops) start afresh
//!    from `now`.
//! 2. The driver feeds the runtime's replayed events (those the checkpoint does not cover yet)
//!    as ordinary events: each is applied once, in order.
//! 3. The driver feeds [`Event::Recovered`](super::Event::Recovered) with the guests the
//!    runtime still runs. With the same runtime (replay applied), a launched one-shot task it
//!    neither runs nor reported ended never reached it, and is launched now; so is a task
//!    launched into a live instance that the runtime says the instance does not hold
//!    ([`LiveGuests::executor_tasks`]). Otherwise (the
//!    runtime died) a launched task or a started instance that is not among them and has
//!    not ended gets exactly one terminal update: TASK_FAILED with
//!    [`Reason::RuntimeLost`](proto::Reason::RuntimeLost) (for an instance, through the
//!    executor-failure path: each of its unfinished tasks fails with that reason and the master
//!    hears `ExecutorExited { failed: true }`). Work that never reached the runtime is redone:
//!    a task that was being prepared is prepared again; an instance whose start was under way
//!    is started again. Kills and stops under way are asked again.
//! 4. On connecting, the core registers under its old agent id with its tasks and executors
//!    and, once registered, resends every update queue, in order (the same uuids).

use super::executors::InstanceCheckpoint;
use super::gc::GcCheckpoint;
use super::{Agent, AgentConfig, Phase, Task, TaskKey};
use proto::{AgentId, FrameworkId, TaskInfo, TaskState, TaskStatus};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

/// Everything recovery needs of a core, serialisable (the driver picks the file format).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The id the master gave this agent, if it registered.
    pub agent_id: Option<AgentId>,
    /// The boot id of the run that took the checkpoint (its updates' uuids start with it; a
    /// recovered core numbers its new updates under its own, new boot id).
    pub boot_id: String,
    /// Every task the core still tracks: not ended, or ended with updates unacknowledged.
    pub tasks: Vec<TaskCheckpoint>,
    /// Executor instances not yet exited.
    pub executors: Vec<InstanceCheckpoint>,
    /// The number of the next executor run (runs stay unique across restarts).
    pub next_run: u64,
    /// Directories waiting for collection.
    pub gc: GcCheckpoint,
}

/// Where a task's guest was when the checkpoint was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskPhase {
    /// Waiting for its executor to start.
    Waiting,
    /// Being fetched and compiled (or its files placed in its executor's sandbox).
    Preparing,
    /// Handed to the runtime (alone, or into its executor).
    Launched,
    /// Ended; only its updates remain.
    Done,
}

/// One task in a [`Checkpoint`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskCheckpoint {
    /// Its framework.
    pub framework_id: FrameworkId,
    /// The task as launched (names its executor, if any).
    pub info: TaskInfo,
    /// The last state reported.
    pub state: TaskState,
    /// Where its guest was.
    pub phase: TaskPhase,
    /// A kill was asked and not yet carried out.
    pub kill_requested: bool,
    /// Unacknowledged updates, oldest first, with their uuids.
    pub updates: Vec<TaskStatus>,
}

impl From<Phase> for TaskPhase {
    fn from(p: Phase) -> Self {
        match p {
            Phase::Waiting => TaskPhase::Waiting,
            Phase::Preparing => TaskPhase::Preparing,
            Phase::Launched => TaskPhase::Launched,
            Phase::Done => TaskPhase::Done,
        }
    }
}

impl From<TaskPhase> for Phase {
    fn from(p: TaskPhase) -> Self {
        match p {
            TaskPhase::Waiting => Phase::Waiting,
            TaskPhase::Preparing => Phase::Preparing,
            TaskPhase::Launched => Phase::Launched,
            TaskPhase::Done => Phase::Done,
        }
    }
}

/// The guests a runtime still runs after the agent reattached to it, in the core's terms.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LiveGuests {
    /// One-shot tasks whose guest runs.
    pub tasks: Vec<TaskKey>,
    /// Executor instances (with their run) that run.
    pub executors: Vec<super::ExecutorRun>,
    /// The runtime is the one the checkpoint was taken with, and its replay has been applied:
    /// a launched guest it neither runs nor reported ended never reached it (the agent died
    /// between recording the launch and sending it) and is launched now. Otherwise the runtime
    /// died, and such a guest with it.
    pub same_runtime: bool,
    /// With `same_runtime`, if known: for each executor instance in `executors`, the tasks
    /// launched into it that it has not reported ended (the runtime's account, consistent
    /// with the replay applied). A task the core launched into a live instance that is not
    /// listed never reached it (the agent died between recording the launch and sending it)
    /// and is launched again; an instance missing here is taken to hold none. `None` (unknown,
    /// e.g. the replay did not all arrive): nothing is launched again.
    pub executor_tasks: Option<BTreeMap<super::ExecutorRun, Vec<proto::TaskId>>>,
}

impl Agent {
    /// The guests this core believes run or may run: one-shot tasks handed to the runtime and
    /// not ended, and every executor instance (started or starting). The driver names them in
    /// the runtime, and after a restart tells the core which of them still run.
    pub fn guests(&self) -> LiveGuests {
        LiveGuests {
            tasks: self
                .tasks
                .iter()
                .filter(|(_, t)| t.info.executor.is_none() && t.phase == Phase::Launched)
                .map(|(k, _)| k.clone())
                .collect(),
            executors: self.instances.iter().map(|(k, i)| i.run_id(k)).collect(),
            same_runtime: false,
            executor_tasks: Default::default(),
        }
    }

    /// Counts the changes of the state a [`Checkpoint`] holds: the driver writes a new
    /// checkpoint only when it moved since the last one.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The state recovery needs, as of `now` (collection delays are kept relative to it).
    pub fn checkpoint(&self, now: Instant) -> Checkpoint {
        Checkpoint {
            agent_id: self.agent_id.clone(),
            boot_id: self.cfg.boot_id.clone(),
            tasks: self
                .tasks
                .iter()
                .map(|((fid, _), t)| TaskCheckpoint {
                    framework_id: fid.clone(),
                    info: t.info.clone(),
                    state: t.state,
                    phase: t.phase.into(),
                    kill_requested: t.kill_requested,
                    updates: t.updates.iter().cloned().collect(),
                })
                .collect(),
            executors: self
                .instances
                .iter()
                .map(|(key, i)| i.checkpoint(key))
                .collect(),
            next_run: self.next_run,
            gc: self.gc.checkpoint(now),
        }
    }

    /// A core rebuilt from `checkpoint` (taken by an earlier run of this agent), not connected.
    /// Feed it the runtime's replayed events, then [`Event::Recovered`](super::Event::Recovered)
    /// (see the [module doc](self)). `cfg` is this run's (a new boot id).
    pub fn recover(cfg: AgentConfig, checkpoint: Checkpoint, now: Instant) -> Self {
        let mut a = Agent::new(cfg);
        a.agent_id = checkpoint.agent_id;
        a.next_run = checkpoint.next_run;
        a.recovering = true;
        for t in checkpoint.tasks {
            let key = (t.framework_id, t.info.task_id.clone());
            a.tasks.insert(
                key,
                Task {
                    info: t.info,
                    state: t.state,
                    phase: t.phase.into(),
                    kill_requested: t.kill_requested,
                    updates: VecDeque::from(t.updates),
                    next_retry: None,
                },
            );
        }
        a.instances = checkpoint
            .executors
            .into_iter()
            .map(|c| c.restore(now))
            .collect::<BTreeMap<_, _>>();
        a.gc.restore(checkpoint.gc, now);
        a
    }

    /// True from [`Agent::recover`] until [`Event::Recovered`](super::Event::Recovered).
    pub fn is_recovering(&self) -> bool {
        self.recovering
    }

    /// [`Event::Recovered`](super::Event::Recovered): settles every task and instance against
    /// what the runtime still runs.
    pub(super) fn on_recovered(&mut self, now: Instant, live: LiveGuests) {
        if !self.recovering {
            tracing::warn!("recovery report outside recovery ignored");
            return;
        }
        self.recovering = false;
        let live_tasks: std::collections::BTreeSet<TaskKey> = live.tasks.into_iter().collect();
        // Executors first: their tasks end through the executor-failure path.
        let keys: Vec<_> = self.instances.keys().cloned().collect();
        for key in keys {
            let i = &self.instances[&key];
            let id = i.run_id(&key);
            let is_live = live.executors.contains(&id);
            let has = live
                .executor_tasks
                .as_ref()
                .map(|m| m.get(&id).map(Vec::as_slice).unwrap_or_default());
            self.recover_instance(now, &key, is_live, has);
        }
        let keys: Vec<TaskKey> = self.tasks.keys().cloned().collect();
        for key in keys {
            let t = &self.tasks[&key];
            if t.info.executor.is_some() {
                self.recover_executor_task(now, &key);
                continue;
            }
            match t.phase {
                Phase::Done | Phase::Waiting => {}
                Phase::Preparing if t.kill_requested => {
                    // Killed while prepared (a checkpoint of an agent whose compiles could not
                    // be stopped): nothing ran, and nothing needs preparing now.
                    self.killed_before_start(now, &key, super::KILLED_BEFORE_START);
                }
                Phase::Preparing => {
                    // The fetch died with the old agent: nothing ran yet, do it again.
                    self.actions.push_back(super::Action::Prepare {
                        framework_id: key.0.clone(),
                        task: t.info.clone(),
                    });
                }
                Phase::Launched if live_tasks.contains(&key) => {
                    if t.kill_requested {
                        self.actions
                            .push_back(super::Action::Kill { key: key.clone() });
                    }
                }
                Phase::Launched if live.same_runtime && t.kill_requested => {
                    self.killed_before_start(now, &key, super::KILLED_BEFORE_START);
                }
                Phase::Launched if live.same_runtime => {
                    tracing::info!(task = %key.1, "task's launch never reached the runtime; launching it");
                    self.actions.push_back(super::Action::Launch {
                        framework_id: key.0.clone(),
                        task: t.info.clone(),
                    });
                }
                Phase::Launched => {
                    tracing::warn!(task = %key.1, "task's guest is gone from the runtime");
                    self.tasks.get_mut(&key).expect("listed").phase = Phase::Done;
                    self.push_update(
                        now,
                        &key,
                        TaskState::Failed,
                        Some(proto::Reason::RuntimeLost),
                        "the runtime process running this task's guest died while the agent \
                         was away; what the task did after that is unknown",
                        None,
                    );
                }
            }
        }
        for key in self.tasks.keys().cloned().collect::<Vec<_>>() {
            if self.tasks[&key].phase == Phase::Done && self.tasks[&key].updates.is_empty() {
                self.gc_task_forgotten(now, &key);
                self.tasks.remove(&key);
            }
        }
        self.generation += 1;
    }
}
