//! Framework executors in the core: the table of instances and their life cycle.
//!
//! An executor is a framework's long-lived guest on this agent, named by
//! ([`FrameworkId`], [`ExecutorId`]). The first task naming it starts an instance; later tasks of
//! the framework naming the same executor id go to the running instance. The rules:
//!
//! - **Start.** The first task is held (`Waiting`) while the driver fetches the component and
//!   starts the instance ([`ExecutorAction::Start`]); once it reports
//!   [`ExecutorEvent::Started`], every waiting task is prepared (its files placed in the
//!   instance's sandbox) and then launched into it. A task whose executor info differs from
//!   the running instance's in module or resources, or that asks for a data set the instance
//!   was not started with (preopens are fixed at instantiation), is refused as
//!   `TaskInvalid`.
//! - **Envelope.** The instance's envelope is its own resources plus those of its live
//!   (launched, not terminal) tasks: raised just before a task is launched
//!   ([`ExecutorAction::SetEnvelope`] then [`ExecutorAction::Launch`]), lowered when the task
//!   ends however it ends. The agent's books hold the executor's own share once, from its
//!   first task's arrival until the instance has exited.
//! - **Updates.** The executor's reports become the core's reliable status updates (same
//!   queue, uuids and resends as one-shot tasks). Reports for unknown tasks, tasks of another
//!   instance or tasks already terminal are ignored with a warning; a repeated RUNNING is
//!   dropped.
//! - **Kill.** A `KillTask` for a launched task delivers a kill event; if the executor has not
//!   reported the task terminal within the executor's kill grace, the core ends it itself
//!   (TASK_KILLED, saying so) and takes its share out of the envelope.
//! - **Stop.** `KillExecutor`, an idle timeout with no task at all, or the agent's own
//!   shutdown ask the instance to stop: a shutdown event, then a forced stop after the kill
//!   grace. `Shutdown` of the whole agent (the master forgot it) stops instances at once.
//! - **Exit.** When the instance ends, its tasks that have not ended do: TASK_KILLED if the
//!   stop was asked for, TASK_FAILED with [`Reason::ExecutorTerminated`] otherwise (or the
//!   start failure's own reason if it never started). The master learns once, through
//!   [`Message::ExecutorExited`] (`failed: false` only for an asked stop the executor obeyed
//!   by returning from its run loop); when the agent is not registered at that moment the
//!   message is dropped and the master reconciles from the next `Register::executors`, which
//!   lists every instance not yet exited.
//! - **Messages.** `ExecutorMessage` from the master goes to a started instance, or is
//!   dropped with a warning; the executor's messages go to the master while registered and
//!   are dropped otherwise. Both ways at most once, as in Mesos.
//!
//! Every action and event names one *run* of an instance ([`ExecutorRun`]): an instance
//! started again under the same ids is another run, so a late event of an old one is
//! recognised and ignored.

use super::{Action, Agent, Phase, TaskKey};
use proto::{
    ExecutorId, ExecutorInfo, FrameworkId, Message, Reason, Resources, RunningExecutor, TaskId,
    TaskInfo, TaskState,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// How long an executor with no task lives on when its info does not say.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a kill or a shutdown may go unanswered when the executor's info does not say.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);

/// Identifies an executor on this agent.
pub type ExecutorKey = (FrameworkId, ExecutorId);

/// One run of an executor instance: its ids and a number unique within this agent's run, so
/// that events of an instance that has ended are never mistaken for a later one's.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct ExecutorRun {
    /// The executor's framework.
    pub framework_id: FrameworkId,
    /// The executor.
    pub executor_id: ExecutorId,
    /// Which start of it.
    pub run: u64,
}

impl ExecutorRun {
    /// The executor's key, without the run.
    pub fn key(&self) -> ExecutorKey {
        (self.framework_id.clone(), self.executor_id.clone())
    }
}

/// What the core asks of the driver's executor instances.
// Unboxed: actions are drained and consumed at once, never stored in bulk.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum ExecutorAction {
    /// Lay out the executor's directory afresh, fetch its component and start it with
    /// `info.resources` as its envelope and `datasets` preopened; answer with
    /// [`ExecutorEvent::Started`] or [`ExecutorEvent::Exited`].
    Start {
        /// The run to start.
        id: ExecutorRun,
        /// The executor.
        info: ExecutorInfo,
        /// The data sets of its first task, fixed for the instance's life.
        datasets: Vec<String>,
    },
    /// Set the envelope (CPU pacing rate and memory cap) to `resources`.
    SetEnvelope {
        /// The instance.
        id: ExecutorRun,
        /// Its own share plus its live tasks'.
        resources: Resources,
    },
    /// Deliver a launch event for a task (its files are in place, its share is in the
    /// envelope).
    Launch {
        /// The instance.
        id: ExecutorRun,
        /// The task.
        task: TaskInfo,
    },
    /// Deliver a kill event for a task.
    KillTask {
        /// The instance.
        id: ExecutorRun,
        /// The task.
        task_id: TaskId,
    },
    /// Deliver bytes from the scheduler.
    Message {
        /// The instance.
        id: ExecutorRun,
        /// The payload.
        data: Vec<u8>,
    },
    /// Deliver the shutdown event (the executor should return from its run loop).
    Shutdown {
        /// The instance.
        id: ExecutorRun,
    },
    /// Stop the instance at once (also before it has started); it answers with
    /// [`ExecutorEvent::Exited`].
    Kill {
        /// The instance.
        id: ExecutorRun,
    },
}

/// What the driver reports of executor instances (already in protocol terms).
#[derive(Clone, Debug)]
pub enum ExecutorEvent {
    /// The instance is up and waits for events.
    Started {
        /// The instance.
        id: ExecutorRun,
    },
    /// The executor reported a task's state.
    TaskUpdate {
        /// The instance.
        id: ExecutorRun,
        /// The task.
        task_id: TaskId,
        /// RUNNING, FINISHED, FAILED or KILLED.
        state: TaskState,
        /// The executor's explanation.
        message: String,
    },
    /// The executor sent bytes to its scheduler.
    Message {
        /// The instance.
        id: ExecutorRun,
        /// The payload.
        data: Vec<u8>,
    },
    /// The instance is over (or could not start); always its last event.
    Exited {
        /// The instance.
        id: ExecutorRun,
        /// How it ended, mapped like a task's outcome (`Finished` for a normal return).
        outcome: super::Outcome,
    },
}

/// Why an instance is stopping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StopCause {
    /// The master (`KillExecutor`) asked.
    Asked,
    /// No task for the idle timeout.
    Idle,
}

/// One executor instance of this agent.
#[derive(Debug)]
pub(super) struct Instance {
    run: u64,
    info: ExecutorInfo,
    datasets: Vec<String>,
    started: bool,
    /// Tasks not yet terminal that were routed to it but not launched (waiting for the start,
    /// or being prepared).
    pending: BTreeSet<TaskId>,
    /// Launched tasks not yet terminal, with their shares: the envelope's variable part.
    live: BTreeMap<TaskId, Resources>,
    /// When it stops for lack of tasks.
    idle_at: Option<Instant>,
    /// Set once it is asked to stop.
    stopping: Option<StopCause>,
    /// When a stop that was asked for becomes a forced one.
    force_at: Option<Instant>,
    /// It did not obey a shutdown within the grace and was stopped forcibly.
    forced: bool,
    /// Launched tasks with a kill delivered: when the core ends them itself.
    kill_deadlines: BTreeMap<TaskId, Instant>,
}

impl Instance {
    fn id(&self, key: &ExecutorKey) -> ExecutorRun {
        ExecutorRun {
            framework_id: key.0.clone(),
            executor_id: key.1.clone(),
            run: self.run,
        }
    }

    fn idle_timeout(&self) -> Duration {
        self.info
            .idle_timeout_ms
            .map_or(DEFAULT_IDLE_TIMEOUT, Duration::from_millis)
    }

    fn kill_grace(&self) -> Duration {
        self.info
            .kill_grace_ms
            .map_or(DEFAULT_KILL_GRACE, Duration::from_millis)
    }

    /// The executor's component.
    pub(super) fn module(&self) -> proto::Digest {
        self.info.module
    }

    fn envelope(&self) -> Resources {
        self.live.values().fold(self.info.resources, |a, r| a + *r)
    }

    fn next_deadline(&self) -> Option<Instant> {
        [self.idle_at, self.force_at]
            .into_iter()
            .flatten()
            .chain(self.kill_deadlines.values().copied())
            .min()
    }

    /// Starts the idle clock if it has nothing left to do.
    fn maybe_idle(&mut self, now: Instant) {
        if self.started
            && self.stopping.is_none()
            && self.pending.is_empty()
            && self.live.is_empty()
            && self.idle_at.is_none()
        {
            self.idle_at = Some(now + self.idle_timeout());
        }
    }
}

/// How a task naming an executor is routed.
pub(super) enum Route {
    /// Hold it until the new instance has started.
    Wait,
    /// Prepare it now: the instance runs.
    Prepare,
}

impl Agent {
    /// The resources of executors themselves (not their tasks) until they have exited.
    pub(super) fn executors_own_share(&self) -> Resources {
        self.instances
            .values()
            .fold(Resources::ZERO, |a, i| a + i.info.resources)
    }

    /// Number of executor instances not yet exited.
    pub fn executor_count(&self) -> usize {
        self.instances.len()
    }

    /// The envelope of an executor instance, while it exists.
    pub fn executor_envelope(&self, key: &ExecutorKey) -> Option<Resources> {
        self.instances.get(key).map(Instance::envelope)
    }

    /// The executors to list in `Register::executors`.
    pub(super) fn running_executors(&self) -> Vec<RunningExecutor> {
        self.instances
            .iter()
            .map(|((fid, _), i)| RunningExecutor {
                framework_id: fid.clone(),
                info: i.info.clone(),
            })
            .collect()
    }

    /// The earliest executor deadline (idle stop, forced stop, kill grace).
    pub(super) fn executors_deadline(&self) -> Option<Instant> {
        self.instances
            .values()
            .filter_map(Instance::next_deadline)
            .min()
    }

    /// Checks a task naming `exec` against the instance it would join (or start): `Err` with
    /// why it is refused, else how to route it. `free` is what the agent has left.
    pub(super) fn check_executor_task(
        &self,
        framework_id: &FrameworkId,
        task: &TaskInfo,
        exec: &ExecutorInfo,
        free: &Resources,
    ) -> Result<(), (Reason, String)> {
        let eid = &exec.executor_id;
        if !proto::ids::is_safe_id(eid.as_str()) {
            return Err((
                Reason::TaskInvalid,
                "executor id is not a safe name".to_owned(),
            ));
        }
        if task.module != exec.module {
            return Err((
                Reason::TaskInvalid,
                format!("the task's module is not its executor {eid}'s module"),
            ));
        }
        match self.instances.get(&(framework_id.clone(), eid.clone())) {
            None => {
                let need = task.resources + exec.resources;
                if !free.contains(&need) {
                    return Err((
                        Reason::AgentError,
                        format!(
                            "task needs {} and its new executor {eid} {} but the agent has only \
                             {free} free",
                            task.resources, exec.resources
                        ),
                    ));
                }
            }
            Some(i) => {
                if i.stopping.is_some() {
                    return Err((
                        Reason::ExecutorTerminated(format!("executor {eid} is shutting down")),
                        format!("executor {eid} is shutting down; launch the task again later"),
                    ));
                }
                if i.info.module != exec.module || i.info.resources != exec.resources {
                    return Err((
                        Reason::TaskInvalid,
                        format!(
                            "executor {eid} runs module {} with resources {}; this task names \
                             module {} with resources {}",
                            i.info.module.to_hex(),
                            i.info.resources,
                            exec.module.to_hex(),
                            exec.resources
                        ),
                    ));
                }
                if let Some(d) = task.datasets.iter().find(|d| !i.datasets.contains(d)) {
                    return Err((
                        Reason::TaskInvalid,
                        format!(
                            "executor {eid} was started with data sets {:?} and cannot see {d:?} \
                             (an executor's data sets are those of its first task)",
                            i.datasets
                        ),
                    ));
                }
                if !free.contains(&task.resources) {
                    return Err((
                        Reason::AgentError,
                        format!(
                            "task needs {} but the agent has only {free} free",
                            task.resources
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Routes a checked task to its executor, starting an instance if there is none.
    pub(super) fn route_executor_task(
        &mut self,
        framework_id: &FrameworkId,
        task: &TaskInfo,
        exec: &ExecutorInfo,
    ) -> Route {
        let key = (framework_id.clone(), exec.executor_id.clone());
        if let Some(i) = self.instances.get_mut(&key) {
            i.pending.insert(task.task_id.clone());
            i.idle_at = None;
            return if i.started {
                Route::Prepare
            } else {
                Route::Wait
            };
        }
        let run = self.next_run;
        self.next_run += 1;
        let inst = Instance {
            run,
            info: exec.clone(),
            datasets: task.datasets.clone(),
            started: false,
            pending: BTreeSet::from([task.task_id.clone()]),
            live: BTreeMap::new(),
            idle_at: None,
            stopping: None,
            force_at: None,
            forced: false,
            kill_deadlines: BTreeMap::new(),
        };
        tracing::info!(framework = %key.0, executor = %key.1, run, "starting executor");
        let id = inst.id(&key);
        self.gc_cancel(&super::GcTarget::Executor {
            framework_id: key.0.clone(),
            executor_id: key.1.clone(),
        });
        self.instances.insert(key, inst);
        self.exec_action(ExecutorAction::Start {
            id,
            info: exec.clone(),
            datasets: task.datasets.clone(),
        });
        Route::Wait
    }

    /// A prepared task of an executor: into the envelope, then launched.
    pub(super) fn launch_into_executor(&mut self, key: &TaskKey) {
        let Some(t) = self.tasks.get(key) else { return };
        let Some(exec) = &t.info.executor else { return };
        let ekey = (key.0.clone(), exec.executor_id.clone());
        let info = t.info.clone();
        let Some(i) = self.instances.get_mut(&ekey) else {
            return;
        };
        i.pending.remove(&key.1);
        i.live.insert(key.1.clone(), info.resources);
        let id = i.id(&ekey);
        let resources = i.envelope();
        self.exec_action(ExecutorAction::SetEnvelope {
            id: id.clone(),
            resources,
        });
        self.exec_action(ExecutorAction::Launch { id, task: info });
    }

    /// A `KillTask` for a task of an executor: kill event and grace once launched; at once if
    /// it still waits for its executor; after preparation otherwise.
    pub(super) fn kill_executor_task(&mut self, now: Instant, key: &TaskKey) {
        let Some(t) = self.tasks.get_mut(key) else {
            return;
        };
        let Some(exec) = t.info.executor.clone() else {
            return;
        };
        match t.phase {
            Phase::Waiting => {
                self.killed_before_start(now, key, "killed before its executor started");
            }
            Phase::Preparing => t.kill_requested = true,
            Phase::Launched => {
                t.kill_requested = true;
                let ekey = (key.0.clone(), exec.executor_id.clone());
                let Some(i) = self.instances.get_mut(&ekey) else {
                    return;
                };
                if i.kill_deadlines.contains_key(&key.1) {
                    return; // a kill is already under way
                }
                i.kill_deadlines.insert(key.1.clone(), now + i.kill_grace());
                let id = i.id(&ekey);
                self.exec_action(ExecutorAction::KillTask {
                    id,
                    task_id: key.1.clone(),
                });
            }
            Phase::Done => {}
        }
    }

    /// Bookkeeping once a task of an executor has ended, however it ended: out of the
    /// envelope, and the idle clock started if it was the last.
    pub(super) fn executor_task_ended(&mut self, now: Instant, key: &TaskKey, eid: &ExecutorId) {
        let ekey = (key.0.clone(), eid.clone());
        let Some(i) = self.instances.get_mut(&ekey) else {
            return;
        };
        i.pending.remove(&key.1);
        i.kill_deadlines.remove(&key.1);
        let was_live = i.live.remove(&key.1).is_some();
        i.maybe_idle(now);
        if was_live {
            let id = i.id(&ekey);
            let resources = i.envelope();
            self.exec_action(ExecutorAction::SetEnvelope { id, resources });
        }
    }

    /// `KillExecutor` from the master.
    pub(super) fn on_kill_executor(&mut self, now: Instant, key: ExecutorKey) {
        if !self.instances.contains_key(&key) {
            tracing::warn!(framework = %key.0, executor = %key.1, "kill of an executor this agent does not run");
            return;
        }
        self.ask_stop(now, &key, StopCause::Asked);
    }

    /// Asks an instance to stop: the shutdown event now if it has started (else when it
    /// does), a forced stop after the grace.
    pub(super) fn ask_stop(&mut self, now: Instant, key: &ExecutorKey, cause: StopCause) {
        let Some(i) = self.instances.get_mut(key) else {
            return;
        };
        if i.stopping.is_some() {
            return;
        }
        tracing::info!(framework = %key.0, executor = %key.1, ?cause, "stopping executor");
        i.stopping = Some(cause);
        i.idle_at = None;
        if i.started {
            i.force_at = Some(now + i.kill_grace());
            let id = i.id(key);
            self.exec_action(ExecutorAction::Shutdown { id });
        }
    }

    /// `ExecutorMessage` from the master: to a started instance, else dropped.
    pub(super) fn on_executor_message(&mut self, key: ExecutorKey, data: Vec<u8>) {
        match self.instances.get(&key) {
            Some(i) if i.started => {
                let id = i.id(&key);
                self.exec_action(ExecutorAction::Message { id, data });
            }
            _ => {
                tracing::warn!(framework = %key.0, executor = %key.1,
                    "message for an executor that is not running here dropped (at most once)");
            }
        }
    }

    /// Fires the executor timers due by `now`.
    pub(super) fn executors_timeout(&mut self, now: Instant) {
        let keys: Vec<ExecutorKey> = self
            .instances
            .iter()
            .filter(|(_, i)| i.next_deadline().is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            // Kill graces: the core ends the task itself.
            let expired: Vec<TaskId> = self.instances[&key]
                .kill_deadlines
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(t, _)| t.clone())
                .collect();
            let grace = self.instances[&key].kill_grace();
            for tid in expired {
                let tkey = (key.0.clone(), tid);
                if let Some(i) = self.instances.get_mut(&key) {
                    i.kill_deadlines.remove(&tkey.1);
                }
                let live = self
                    .tasks
                    .get(&tkey)
                    .is_some_and(|t| t.phase == Phase::Launched && !t.state.is_terminal());
                if live {
                    tracing::warn!(task = %tkey.1, executor = %key.1, "kill unanswered within the grace; task ended by the agent");
                    self.tasks.get_mut(&tkey).expect("checked").phase = Phase::Done;
                    self.push_update(
                        now,
                        &tkey,
                        TaskState::Killed,
                        Some(Reason::Killed),
                        &format!(
                            "executor {} did not answer the kill within the {} ms grace; the \
                             task was stopped forcibly",
                            key.1,
                            grace.as_millis()
                        ),
                        None,
                    );
                }
            }
            let Some(i) = self.instances.get_mut(&key) else {
                continue;
            };
            if i.idle_at.is_some_and(|t| t <= now) {
                i.idle_at = None;
                self.ask_stop(now, &key, StopCause::Idle);
            }
            let Some(i) = self.instances.get_mut(&key) else {
                continue;
            };
            if i.force_at.is_some_and(|t| t <= now) {
                i.force_at = None;
                i.forced = true;
                tracing::warn!(framework = %key.0, executor = %key.1, "executor did not stop within its grace; stopping it forcibly");
                let id = i.id(&key);
                self.exec_action(ExecutorAction::Kill { id });
            }
        }
    }

    /// An event from an instance.
    pub(super) fn on_executor_event(&mut self, now: Instant, ev: ExecutorEvent) {
        match ev {
            ExecutorEvent::Started { id } => {
                let key = id.key();
                let Some(i) = self.current(&id) else { return };
                if i.started {
                    return;
                }
                i.started = true;
                tracing::info!(framework = %key.0, executor = %key.1, "executor started");
                if i.stopping.is_some() {
                    i.force_at = Some(now + i.kill_grace());
                    self.exec_action(ExecutorAction::Shutdown { id });
                    return;
                }
                i.maybe_idle(now);
                let waiting: Vec<TaskId> = i.pending.iter().cloned().collect();
                for tid in waiting {
                    let tkey = (key.0.clone(), tid);
                    if let Some(t) = self.tasks.get_mut(&tkey) {
                        if t.phase == Phase::Waiting {
                            t.phase = Phase::Preparing;
                            self.actions.push_back(Action::Prepare {
                                framework_id: key.0.clone(),
                                task: t.info.clone(),
                            });
                        }
                    }
                }
            }
            ExecutorEvent::TaskUpdate {
                id,
                task_id,
                state,
                message,
            } => self.on_executor_update(now, id, task_id, state, message),
            ExecutorEvent::Message { id, data } => {
                if self.current(&id).is_none() {
                    return;
                }
                if data.len() > proto::MAX_FRAMEWORK_MESSAGE {
                    tracing::warn!(executor = %id.executor_id, len = data.len(), "oversized executor message dropped");
                    return;
                }
                if !self.registered {
                    tracing::warn!(executor = %id.executor_id, "executor message dropped: not connected to the master (at most once)");
                    return;
                }
                self.actions
                    .push_back(Action::Send(Message::ExecutorMessage {
                        framework_id: id.framework_id,
                        executor_id: id.executor_id,
                        data,
                    }));
            }
            ExecutorEvent::Exited { id, outcome } => self.on_executor_exited(now, id, outcome),
        }
    }

    /// The instance `id` names, if it is the current run.
    fn current(&mut self, id: &ExecutorRun) -> Option<&mut Instance> {
        match self.instances.get_mut(&id.key()) {
            Some(i) if i.run == id.run => Some(i),
            _ => {
                tracing::debug!(executor = %id.executor_id, run = id.run, "event of an executor run that is gone ignored");
                None
            }
        }
    }

    fn on_executor_update(
        &mut self,
        now: Instant,
        id: ExecutorRun,
        task_id: TaskId,
        state: TaskState,
        message: String,
    ) {
        if self.current(&id).is_none() {
            return;
        }
        let tkey = (id.framework_id.clone(), task_id);
        let ok = self.tasks.get(&tkey).is_some_and(|t| {
            t.phase == Phase::Launched
                && !t.state.is_terminal()
                && t.info
                    .executor
                    .as_ref()
                    .is_some_and(|e| e.executor_id == id.executor_id)
        });
        if !ok {
            tracing::warn!(task = %tkey.1, executor = %id.executor_id, state = state.name(),
                "executor update for a task it does not run (unknown or already ended) ignored");
            return;
        }
        match state {
            TaskState::Running => {
                if self.tasks[&tkey].state != TaskState::Running {
                    self.push_update(now, &tkey, state, None, &message, None);
                }
            }
            TaskState::Finished | TaskState::Failed | TaskState::Killed => {
                self.tasks.get_mut(&tkey).expect("checked").phase = Phase::Done;
                let reason = match state {
                    TaskState::Killed => Some(Reason::Killed),
                    s if s.is_terminal() => Some(Reason::ExecutorReported),
                    _ => None,
                };
                self.push_update(now, &tkey, state, reason, &message, None);
            }
            other => {
                tracing::warn!(task = %tkey.1, state = other.name(), "executor reported a state it may not set; ignored");
            }
        }
    }

    fn on_executor_exited(&mut self, now: Instant, id: ExecutorRun, outcome: super::Outcome) {
        let key = id.key();
        if self.current(&id).is_none() {
            return;
        }
        let i = self.instances.remove(&key).expect("current");
        self.gc_schedule(
            now,
            super::GcTarget::Executor {
                framework_id: key.0.clone(),
                executor_id: key.1.clone(),
            },
        );
        let asked = i.stopping.is_some();
        let failed =
            !asked || i.forced || !matches!(outcome.state, TaskState::Finished | TaskState::Killed);
        let detail = if i.forced {
            format!(
                "did not stop within the {} ms grace after shutdown; stopped forcibly",
                i.kill_grace().as_millis()
            )
        } else if !i.started {
            format!("could not start: {}", outcome.message)
        } else if !asked && outcome.state == TaskState::Finished {
            "returned from its run loop without being asked to stop".to_owned()
        } else {
            outcome.message.clone()
        };
        tracing::info!(framework = %key.0, executor = %key.1, failed, %detail, "executor exited");
        let tasks: Vec<TaskId> = i.pending.iter().chain(i.live.keys()).cloned().collect();
        for tid in tasks {
            let tkey = (key.0.clone(), tid);
            let Some(t) = self.tasks.get_mut(&tkey) else {
                continue;
            };
            if t.phase == Phase::Done || t.state.is_terminal() {
                continue;
            }
            t.phase = Phase::Done;
            let tails = Some((outcome.stdout_tail.clone(), outcome.stderr_tail.clone()));
            if asked {
                self.push_update(
                    now,
                    &tkey,
                    TaskState::Killed,
                    Some(Reason::ExecutorTerminated(detail.clone())),
                    &format!("executor {} stopped: {detail}", key.1),
                    tails,
                );
            } else {
                let reason = if i.started {
                    Reason::ExecutorTerminated(detail.clone())
                } else {
                    outcome.reason.clone()
                };
                self.push_update(
                    now,
                    &tkey,
                    TaskState::Failed,
                    Some(reason),
                    &format!("executor {} terminated: {detail}", key.1),
                    tails,
                );
            }
        }
        if self.registered {
            self.actions
                .push_back(Action::Send(Message::ExecutorExited {
                    framework_id: key.0.clone(),
                    agent_id: self.agent_id.clone().unwrap_or_else(|| "".into()),
                    executor_id: key.1.clone(),
                    failed,
                    message: detail,
                }));
        } else {
            tracing::warn!(executor = %key.1, "executor exit not reported: not registered (the master reconciles from the next registration)");
        }
    }

    /// Stops every instance at once and forgets them (the master no longer knows this agent).
    pub(super) fn forget_executors(&mut self, now: Instant) {
        for (key, i) in std::mem::take(&mut self.instances) {
            let id = i.id(&key);
            self.exec_action(ExecutorAction::Kill { id });
            self.gc_schedule(
                now,
                super::GcTarget::Executor {
                    framework_id: key.0,
                    executor_id: key.1,
                },
            );
        }
    }

    fn exec_action(&mut self, a: ExecutorAction) {
        self.actions.push_back(Action::Executor(a));
    }
}

/// One executor instance in a checkpoint: its run, info, data sets and tasks (timers are not
/// kept: they start afresh at recovery).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InstanceCheckpoint {
    /// The run.
    pub id: ExecutorRun,
    /// The executor.
    pub info: ExecutorInfo,
    /// The data sets it was started with.
    pub datasets: Vec<String>,
    /// It reported `Started`.
    pub started: bool,
    /// Tasks routed to it and not launched.
    pub pending: Vec<TaskId>,
    /// Launched tasks not ended, with their shares (its envelope is its own share plus these).
    pub live: Vec<(TaskId, Resources)>,
    /// A stop was asked: by the master (`true`) or for idleness (`false`).
    pub stopping: Option<bool>,
    /// It was stopped forcibly.
    pub forced: bool,
    /// Tasks with a kill delivered and not answered.
    pub killing: Vec<TaskId>,
}

impl Instance {
    /// The run this instance is.
    pub(super) fn run_id(&self, key: &ExecutorKey) -> ExecutorRun {
        self.id(key)
    }

    pub(super) fn checkpoint(&self, key: &ExecutorKey) -> InstanceCheckpoint {
        InstanceCheckpoint {
            id: self.id(key),
            info: self.info.clone(),
            datasets: self.datasets.clone(),
            started: self.started,
            pending: self.pending.iter().cloned().collect(),
            live: self.live.iter().map(|(t, r)| (t.clone(), *r)).collect(),
            stopping: self.stopping.map(|c| c == StopCause::Asked),
            forced: self.forced,
            killing: self.kill_deadlines.keys().cloned().collect(),
        }
    }
}

impl InstanceCheckpoint {
    /// The instance it describes, timers unset; the kills under way are kept with a deadline
    /// set at recovery.
    pub(super) fn restore(self, now: Instant) -> (ExecutorKey, Instance) {
        let key = self.id.key();
        let far = now;
        let inst = Instance {
            run: self.id.run,
            info: self.info,
            datasets: self.datasets,
            started: self.started,
            pending: self.pending.into_iter().collect(),
            live: self.live.into_iter().collect(),
            idle_at: None,
            stopping: self.stopping.map(|asked| {
                if asked {
                    StopCause::Asked
                } else {
                    StopCause::Idle
                }
            }),
            force_at: None,
            forced: self.forced,
            // Placeholder deadlines, replaced in `recover_instance`.
            kill_deadlines: self.killing.into_iter().map(|t| (t, far)).collect(),
        };
        (key, inst)
    }
}

impl Agent {
    /// Recovery of one instance (see [`super::checkpoint`]): a live one has its timers and
    /// pending asks restarted; a dead one that had started fails like an executor that
    /// terminated, with [`Reason::RuntimeLost`]; one whose start was under way is started again.
    pub(super) fn recover_instance(
        &mut self,
        now: Instant,
        key: &ExecutorKey,
        is_live: bool,
        runtime_tasks: Option<&[TaskId]>,
    ) {
        let Some(i) = self.instances.get_mut(key) else {
            return;
        };
        let id = i.id(key);
        if is_live {
            // Launched here, not ended, not in the instance, no kill pending: the launch never
            // reached the runtime (sent after the envelope below, as on a first launch).
            let relaunch: Vec<TaskInfo> = i
                .live
                .keys()
                .filter(|t| runtime_tasks.is_some_and(|has| !has.contains(t)))
                .filter(|t| !i.kill_deadlines.contains_key(*t))
                .filter_map(|t| self.tasks.get(&(key.0.clone(), t.clone())))
                .filter(|t| t.phase != Phase::Done && !t.state.is_terminal())
                .map(|t| t.info.clone())
                .collect();
            let grace = i.kill_grace();
            let killing: Vec<TaskId> = i.kill_deadlines.keys().cloned().collect();
            for t in &killing {
                i.kill_deadlines.insert(t.clone(), now + grace);
            }
            let stop = i.stopping.is_some() && i.started;
            if stop {
                i.force_at = Some(now + grace);
            }
            i.maybe_idle(now);
            // The envelope again (idempotent), in case the last change never reached it.
            let resources = i.envelope();
            self.exec_action(ExecutorAction::SetEnvelope {
                id: id.clone(),
                resources,
            });
            for task in relaunch {
                tracing::info!(framework = %key.0, task = %task.task_id,
                    "task's launch never reached its executor; launching it");
                self.exec_action(ExecutorAction::Launch {
                    id: id.clone(),
                    task,
                });
            }
            for task_id in killing {
                self.exec_action(ExecutorAction::KillTask {
                    id: id.clone(),
                    task_id,
                });
            }
            if stop {
                self.exec_action(ExecutorAction::Shutdown { id });
            }
            return;
        }
        if !i.started {
            // Its start never reached the runtime (it was being fetched), or died with it
            // before any task ran in it: start it again, as a new run, so that a late event of
            // the old one is recognised and ignored.
            i.run = self.next_run;
            self.next_run += 1;
            let id = i.id(key);
            tracing::info!(framework = %key.0, executor = %key.1, run = id.run, "starting executor again after recovery");
            let info = i.info.clone();
            let datasets = i.datasets.clone();
            self.exec_action(ExecutorAction::Start { id, info, datasets });
            return;
        }
        tracing::warn!(framework = %key.0, executor = %key.1, "executor's instance is gone from the runtime");
        let i = self.instances.remove(key).expect("checked");
        self.gc_schedule(
            now,
            super::GcTarget::Executor {
                framework_id: key.0.clone(),
                executor_id: key.1.clone(),
            },
        );
        let detail = "the runtime process running it died while the agent was away".to_owned();
        let tasks: Vec<TaskId> = i.pending.iter().chain(i.live.keys()).cloned().collect();
        for tid in tasks {
            let tkey = (key.0.clone(), tid);
            let Some(t) = self.tasks.get_mut(&tkey) else {
                continue;
            };
            if t.phase == Phase::Done || t.state.is_terminal() {
                continue;
            }
            t.phase = Phase::Done;
            self.push_update(
                now,
                &tkey,
                TaskState::Failed,
                Some(Reason::RuntimeLost),
                &format!("executor {} terminated: {detail}", key.1),
                None,
            );
        }
        if self.registered {
            self.actions
                .push_back(Action::Send(Message::ExecutorExited {
                    framework_id: key.0.clone(),
                    agent_id: self.agent_id.clone().unwrap_or_else(|| "".into()),
                    executor_id: key.1.clone(),
                    failed: true,
                    message: detail,
                }));
        }
    }

    /// Recovery of a task of an executor, after its instance's: one being prepared is
    /// prepared again if its instance runs; one whose instance is gone has ended (already
    /// reported by [`Agent::recover_instance`], or reported here).
    pub(super) fn recover_executor_task(&mut self, now: Instant, key: &TaskKey) {
        let Some(t) = self.tasks.get(key) else { return };
        if t.phase == Phase::Done || t.state.is_terminal() {
            return;
        }
        let Some(exec) = &t.info.executor else { return };
        let ekey = (key.0.clone(), exec.executor_id.clone());
        match self.instances.get(&ekey) {
            Some(i) if t.phase == Phase::Preparing && i.started => {
                self.actions.push_back(Action::Prepare {
                    framework_id: key.0.clone(),
                    task: t.info.clone(),
                });
            }
            Some(_) => {}
            None => {
                self.tasks.get_mut(key).expect("checked").phase = Phase::Done;
                self.push_update(
                    now,
                    key,
                    TaskState::Failed,
                    Some(Reason::RuntimeLost),
                    &format!(
                        "executor {} is gone: the runtime process running it died while the \
                         agent was away",
                        ekey.1
                    ),
                    None,
                );
            }
        }
    }
}
