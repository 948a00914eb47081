//! The agent's sans-IO core: tasks' life cycle, the reliable status-update queue, and resource
//! accounting.
//!
//! No sockets, no wasmtime, no clock: the driver feeds [`Event`]s with the time and drains
//! [`Action`]s, and asks [`Agent::poll_timeout`] when to call [`Agent::handle_timeout`].
//!
//! ```text
//!  master msgs ─┐                          ┌─▶ Send(msg)        ─▶ control stream
//!  executor  ───┼─▶ Agent::handle(now, ev) ─┼─▶ Prepare / Launch ─▶ fetcher, wasmtime
//!  timers    ───┘                          └─▶ Kill             ─▶ wasmtime
//! ```
//!
//! # Contract
//! - `now` never goes backwards; extra `handle_timeout` calls are harmless.
//! - After every `handle*` call, drain `poll_action` until it returns `None`.
//! - Status updates are delivered at least once: each carries a uuid and goes out as soon as
//!   it is made (the control stream keeps a task's updates in order), and a task's queue of
//!   unacknowledged updates is resent, in order, every `status_retry` and on re-registration
//!   until the master relays the scheduler's acknowledgements. An acknowledgement covers its
//!   update and the task's earlier ones (the scheduler has heard a later state). Updates are
//!   not held behind their predecessor's acknowledgement: a task that starts, runs and ends
//!   within a millisecond costs one trip to its scheduler, not three; the master ignores (and
//!   acknowledges) a resent update older than the state it holds, and the SDK drops repeated
//!   uuids, so a scheduler still sees a task's states in order.
//! - Tasks naming an executor run inside a framework's long-lived instance; its life cycle
//!   (start, reuse, envelope, kill grace, idle stop, failure) is in [`executors`], with its
//!   own [`ExecutorAction`]s and [`ExecutorEvent`]s wrapped in [`Action::Executor`] and
//!   [`Event::Executor`].
//! - With collection on ([`Agent::with_gc`]), also drain [`Agent::poll_gc`] after every call:
//!   the directories of ended tasks and executors whose delay has passed ([`gc`]).
//! - Guests outlive the agent: [`Agent::checkpoint`] is what a restart needs, and
//!   [`Agent::recover`] plus [`Event::Recovered`] pick up from it ([`checkpoint`]). The driver
//!   persists a checkpoint whenever [`Agent::generation`] moved, before carrying out the
//!   actions of the inputs that moved it.
//! - [`Agent::drain`] stops for good: every guest killed, new tasks refused, done when
//!   [`Agent::is_drained`].

pub mod checkpoint;
pub mod executors;
pub mod gc;
pub mod query;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_executors;
#[cfg(test)]
mod tests_gc;
#[cfg(test)]
mod tests_recovery;

pub use checkpoint::{Checkpoint, LiveGuests};
pub use executors::{ExecutorAction, ExecutorEvent, ExecutorKey, ExecutorRun};
pub use gc::{GcPolicy, GcTarget};
pub use query::QueryWork;

use proto::{
    AgentId, AgentInfo, FrameworkId, Message, Reason, Resources, RunningTask, TaskId, TaskInfo,
    TaskState, TaskStatus, UpdateId,
};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Static facts and knobs of an agent.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// What the agent registers as.
    pub info: AgentInfo,
    /// Distinguishes this run of the agent in update uuids (a restart must not reuse uuids).
    pub boot_id: String,
    /// How often an unacknowledged status update is resent.
    pub status_retry: Duration,
    /// Whether a task's preparation can be stopped at a kill: its compile runs in a child
    /// process that can be killed, or waits for a turn it can give up. Otherwise (compiles in
    /// process, which nothing can stop) a task killed while it is prepared ends when its
    /// preparation does, so that its share stays booked while its compile runs.
    pub stoppable_preparation: bool,
}

/// Identifies a task on this agent.
pub type TaskKey = (FrameworkId, TaskId);

/// The message of a task killed before its guest ran.
const KILLED_BEFORE_START: &str = "killed before it started";

/// How a task ended, as the driver reports it (already mapped from the executor's terms).
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Terminal state.
    pub state: TaskState,
    /// Why.
    pub reason: Reason,
    /// For humans.
    pub message: String,
    /// Last bytes of stdout.
    pub stdout_tail: String,
    /// Last bytes of stderr.
    pub stderr_tail: String,
}

/// Inputs of the core.
// Unboxed: events are handed over and consumed one at a time, and the largest variant (a
// master's message) is the most common one.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Event {
    /// The control stream to the master is up (handshake done).
    Connected,
    /// The connection to the master is gone.
    Disconnected,
    /// A message from the master.
    Message(Message),
    /// The driver started preparing a task off its loop (fetching the module or files,
    /// compiling): the task is `TASK_STARTING` until [`Event::Prepared`]. A task whose module
    /// is compiled and in place is prepared at once, with no `Preparing`, and goes from
    /// `TASK_STAGING` straight to `TASK_RUNNING`: its `TASK_STARTING` would say nothing (it
    /// lasted microseconds) and cost a message through master and scheduler, each way.
    Preparing {
        /// The task.
        key: TaskKey,
    },
    /// The module and files of a task are in place and compiled, or could not be.
    Prepared {
        /// The task.
        key: TaskKey,
        /// `Err((reason, message))` when preparation failed.
        result: Result<(), (Reason, String)>,
    },
    /// The guest's `_start` is running.
    Running {
        /// The task.
        key: TaskKey,
    },
    /// The guest stopped.
    Finished {
        /// The task.
        key: TaskKey,
        /// How.
        outcome: Outcome,
    },
    /// An executor instance reported something.
    Executor(ExecutorEvent),
    /// After [`Agent::recover`] and the runtime's replayed events: the guests the runtime
    /// still runs (see [`checkpoint`]).
    Recovered(LiveGuests),
}

/// Outputs of the core.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Send a message to the master.
    Send(Message),
    /// Fetch the task's module and files into its sandbox and compile it; answer with
    /// [`Event::Preparing`] if that is not done at once, then [`Event::Prepared`].
    Prepare {
        /// The task's framework.
        framework_id: FrameworkId,
        /// The task.
        task: TaskInfo,
    },
    /// Start the guest; answer with [`Event::Running`] and [`Event::Finished`].
    Launch {
        /// The task's framework.
        framework_id: FrameworkId,
        /// The task.
        task: TaskInfo,
    },
    /// Stop a running guest; it answers with [`Event::Finished`].
    Kill {
        /// The task.
        key: TaskKey,
    },
    /// Stop preparing a task that was killed meanwhile: its compile, unless another task waits
    /// for the same module (a fetch under way ends, for another task may wait for its blob).
    /// The task has ended, and no [`Event::Prepared`] is needed. A preparation that has
    /// already ended is left as it is.
    CancelPrepare {
        /// The task.
        key: TaskKey,
    },
    /// Drive an executor instance; it answers with [`Event::Executor`].
    Executor(ExecutorAction),
    /// Answer the master's [`Message::AgentQuery`] `request_id` by doing `work` ([`query`]).
    Query {
        /// Echoed in the [`Message::AgentAnswer`].
        request_id: u64,
        /// What to read or render.
        work: QueryWork,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// A task of an executor that is starting: prepared once it has.
    Waiting,
    Preparing,
    Launched,
    Done,
}

#[derive(Debug)]
struct Task {
    info: TaskInfo,
    state: TaskState,
    phase: Phase,
    kill_requested: bool,
    /// Unacknowledged updates, oldest first, all sent (when registered).
    updates: VecDeque<TaskStatus>,
    next_retry: Option<Instant>,
}

impl Task {
    /// Queues every unacknowledged update of the task again, oldest first.
    fn resend(&self, actions: &mut VecDeque<Action>) {
        actions.extend(self.updates.iter().map(|status| {
            Action::Send(Message::StatusUpdate {
                status: status.clone(),
            })
        }));
    }
}

/// The agent's state machine.
pub struct Agent {
    cfg: AgentConfig,
    agent_id: Option<AgentId>,
    connected: bool,
    registered: bool,
    tasks: BTreeMap<TaskKey, Task>,
    next_update: u64,
    actions: VecDeque<Action>,
    /// Executor instances not yet exited.
    instances: BTreeMap<ExecutorKey, executors::Instance>,
    /// Numbers the starts of executor instances.
    next_run: u64,
    /// Directories of ended tasks and executors, and when they go.
    gc: gc::Gc,
    /// Moves whenever the checkpointed state may have changed.
    generation: u64,
    /// Between [`Agent::recover`] and [`Event::Recovered`].
    recovering: bool,
    /// Stopping for good: new tasks are refused.
    draining: bool,
}

impl Agent {
    /// A fresh agent that has never registered.
    pub fn new(cfg: AgentConfig) -> Self {
        Self {
            cfg,
            agent_id: None,
            connected: false,
            registered: false,
            tasks: BTreeMap::new(),
            next_update: 0,
            actions: VecDeque::new(),
            instances: BTreeMap::new(),
            next_run: 0,
            gc: gc::Gc::default(),
            generation: 0,
            recovering: false,
            draining: false,
        }
    }

    /// The id the master gave this agent, once registered.
    pub fn agent_id(&self) -> Option<&AgentId> {
        self.agent_id.as_ref()
    }

    /// True between `Registered` and the next disconnection.
    pub fn is_registered(&self) -> bool {
        self.registered
    }

    /// Resources of tasks that have not ended, plus executors' own shares until they exit.
    pub fn used(&self) -> Resources {
        self.tasks
            .values()
            .filter(|t| !t.state.is_terminal())
            .fold(self.executors_own_share(), |acc, t| acc + t.info.resources)
    }

    /// The state of a task this agent still tracks.
    pub fn task_state(&self, key: &TaskKey) -> Option<TaskState> {
        self.tasks.get(key).map(|t| t.state)
    }

    /// The info of a task this agent still tracks.
    pub fn task_info(&self, key: &TaskKey) -> Option<&TaskInfo> {
        self.tasks.get(key).map(|t| &t.info)
    }

    /// Number of tasks tracked (running, or ended with updates not yet acknowledged).
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    /// Stops for good (the agent leaves without keeping its guests): every task is killed and
    /// every executor asked to stop, and new tasks are refused. Their terminal updates go out
    /// as usual; [`Agent::is_drained`] tells when all are acknowledged.
    pub fn drain(&mut self, now: Instant) {
        self.draining = true;
        self.generation += 1;
        let keys: Vec<TaskKey> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.phase != Phase::Done)
            .map(|(k, _)| k.clone())
            .collect();
        for (framework_id, task_id) in keys {
            self.on_message(
                now,
                Message::KillTask {
                    framework_id,
                    task_id,
                },
            );
        }
        let execs: Vec<ExecutorKey> = self.instances.keys().cloned().collect();
        for key in execs {
            self.ask_stop(now, &key, executors::StopCause::Asked);
        }
    }

    /// True once no task is tracked (all ended and acknowledged) and no executor is left.
    pub fn is_drained(&self) -> bool {
        self.tasks.is_empty() && self.instances.is_empty()
    }

    /// Next output for the driver.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retries = if self.registered {
            self.tasks.values().filter_map(|t| t.next_retry).min()
        } else {
            None
        };
        retries
            .into_iter()
            .chain(self.executors_deadline())
            .chain(self.gc_deadline())
            .min()
    }

    /// Fires the executors' timers (idle stop, kill grace, forced stop), hands out the
    /// directories due for collection ([`Agent::poll_gc`]) and resends the status updates whose
    /// retry time has come.
    pub fn handle_timeout(&mut self, now: Instant) {
        let before = (self.actions.len(), self.gc.due_len());
        self.executors_timeout(now);
        self.gc_timeout(now);
        if (self.actions.len(), self.gc.due_len()) != before {
            self.generation += 1;
        }
        if !self.registered {
            return;
        }
        let retry = self.cfg.status_retry;
        for task in self.tasks.values_mut() {
            if task.next_retry.is_some_and(|at| at <= now) && !task.updates.is_empty() {
                task.resend(&mut self.actions);
                task.next_retry = Some(now + retry);
            }
        }
    }

    /// Feeds one input.
    pub fn handle(&mut self, now: Instant, event: Event) {
        if !matches!(
            event,
            Event::Connected | Event::Disconnected | Event::Message(Message::AgentQuery { .. })
        ) {
            self.generation += 1;
        }
        match event {
            Event::Recovered(live) => self.on_recovered(now, live),
            Event::Connected => {
                self.connected = true;
                self.registered = false;
                let running = self
                    .tasks
                    .iter()
                    .map(|((fid, _), t)| RunningTask {
                        framework_id: fid.clone(),
                        task: t.info.clone(),
                        state: t.state,
                    })
                    .collect();
                self.actions.push_back(Action::Send(Message::Register {
                    agent_id: self.agent_id.clone(),
                    info: self.cfg.info.clone(),
                    running,
                    executors: self.running_executors(),
                }));
            }
            Event::Disconnected => {
                self.connected = false;
                self.registered = false;
            }
            Event::Message(msg) => self.on_message(now, msg),
            Event::Executor(ev) => self.on_executor_event(now, ev),
            Event::Preparing { key } => {
                let preparing = self.tasks.get(&key).is_some_and(|t| {
                    t.phase == Phase::Preparing
                        && t.state == TaskState::Staging
                        && !t.kill_requested
                });
                if preparing {
                    self.push_update(
                        now,
                        &key,
                        TaskState::Starting,
                        None,
                        "fetching and compiling",
                        None,
                    );
                }
            }
            Event::Prepared { key, result } => self.on_prepared(now, key, result),
            Event::Running { key } => {
                if let Some(t) = self.tasks.get(&key) {
                    if t.phase == Phase::Launched && !t.state.is_terminal() {
                        self.push_update(
                            now,
                            &key,
                            TaskState::Running,
                            None,
                            "guest started",
                            None,
                        );
                    }
                }
            }
            Event::Finished { key, outcome } => {
                let Some(t) = self.tasks.get_mut(&key) else {
                    return;
                };
                if t.phase == Phase::Done {
                    return;
                }
                t.phase = Phase::Done;
                let Outcome {
                    state,
                    reason,
                    message,
                    stdout_tail,
                    stderr_tail,
                } = outcome;
                self.push_update(
                    now,
                    &key,
                    state,
                    Some(reason),
                    &message,
                    Some((stdout_tail, stderr_tail)),
                );
            }
        }
    }

    fn on_message(&mut self, now: Instant, msg: Message) {
        match msg {
            Message::Registered { agent_id } => {
                tracing::info!(%agent_id, "registered with the master");
                if let Some(old) = &self.agent_id {
                    if *old != agent_id {
                        // A new identity: nothing of the old one is valid any more.
                        self.forget_all(now);
                    }
                }
                self.agent_id = Some(agent_id.clone());
                self.registered = true;
                for t in self.tasks.values_mut() {
                    for u in t.updates.iter_mut() {
                        u.agent_id = Some(agent_id.clone());
                    }
                    t.resend(&mut self.actions);
                    if !t.updates.is_empty() {
                        t.next_retry = Some(now + self.cfg.status_retry);
                    }
                }
            }
            Message::Shutdown { message } => {
                tracing::warn!(%message, "master asked this agent to shut down its tasks");
                self.forget_all(now);
                self.agent_id = None;
                self.registered = false;
            }
            Message::RunTask { framework_id, task } => self.on_run_task(now, framework_id, task),
            Message::KillTask {
                framework_id,
                task_id,
            } => {
                let key = (framework_id, task_id);
                match self.tasks.get_mut(&key) {
                    Some(t) if t.info.executor.is_some() => self.kill_executor_task(now, &key),
                    Some(t) if t.phase == Phase::Preparing => {
                        if self.cfg.stoppable_preparation {
                            self.kill_preparing(now, &key);
                        } else {
                            t.kill_requested = true;
                        }
                    }
                    Some(t) if t.phase == Phase::Launched => {
                        t.kill_requested = true;
                        self.actions.push_back(Action::Kill { key });
                    }
                    Some(_) => {}
                    None => {
                        let status = TaskStatus {
                            task_id: key.1.clone(),
                            framework_id: key.0.clone(),
                            agent_id: self.agent_id.clone(),
                            state: TaskState::Lost,
                            reason: Some(Reason::AgentRestarted),
                            message: "kill of a task this agent does not know".into(),
                            stdout_tail: String::new(),
                            stderr_tail: String::new(),
                            uuid: None,
                        };
                        self.actions
                            .push_back(Action::Send(Message::StatusUpdate { status }));
                    }
                }
            }
            Message::StatusUpdateAck {
                framework_id,
                task_id,
                uuid,
            } => {
                let key = (framework_id, task_id);
                let Some(t) = self.tasks.get_mut(&key) else {
                    return;
                };
                let Some(at) = t
                    .updates
                    .iter()
                    .position(|u| u.uuid.as_ref() == Some(&uuid))
                else {
                    return; // a duplicate or stale acknowledgement
                };
                // It covers the earlier updates too: the scheduler heard a later state.
                t.updates.drain(..=at);
                if !t.updates.is_empty() {
                    // Sent already; resent if still unacknowledged a retry period from now.
                    t.next_retry = Some(now + self.cfg.status_retry);
                } else {
                    t.next_retry = None;
                    if t.phase == Phase::Done {
                        self.gc_task_forgotten(now, &key);
                        self.tasks.remove(&key);
                    }
                }
            }
            Message::KillExecutor {
                framework_id,
                executor_id,
            } => self.on_kill_executor(now, (framework_id, executor_id)),
            Message::ExecutorMessage {
                framework_id,
                executor_id,
                data,
            } => self.on_executor_message((framework_id, executor_id), data),
            Message::AgentQuery { request_id, query } => self.on_query(request_id, query),
            other => {
                tracing::warn!(kind = other.kind(), "unexpected message from the master");
            }
        }
    }

    fn on_run_task(&mut self, now: Instant, framework_id: FrameworkId, task: TaskInfo) {
        let key = (framework_id.clone(), task.task_id.clone());
        if self.tasks.contains_key(&key) {
            tracing::warn!(task = %key.1, "duplicate RunTask ignored");
            return;
        }
        let stopping = self.draining.then(|| {
            (
                Reason::AgentError,
                "the agent is stopping; launch the task elsewhere".to_owned(),
            )
        });
        self.gc_cancel(&GcTarget::Task {
            framework_id: key.0.clone(),
            task_id: key.1.clone(),
        });
        let free = self.cfg.info.resources - self.used();
        let invalid = if stopping.is_some() {
            stopping
        } else if !proto::ids::is_safe_id(framework_id.as_str())
            || !proto::ids::is_safe_id(task.task_id.as_str())
        {
            Some((
                Reason::TaskInvalid,
                "framework or task id is not a safe name".to_owned(),
            ))
        } else if let Some(missing) = task
            .datasets
            .iter()
            .find(|d| !self.cfg.info.datasets.contains(d))
        {
            Some((
                Reason::TaskInvalid,
                format!("this agent holds no data set {missing:?}"),
            ))
        } else if let Some(exec) = &task.executor {
            self.check_executor_task(&framework_id, &task, exec, &free)
                .err()
        } else if !free.contains(&task.resources) {
            Some((
                Reason::AgentError,
                format!(
                    "task needs {} but the agent has only {free} free",
                    task.resources
                ),
            ))
        } else {
            None
        };
        self.tasks.insert(
            key.clone(),
            Task {
                info: task.clone(),
                state: TaskState::Staging,
                phase: Phase::Preparing,
                kill_requested: false,
                updates: VecDeque::new(),
                next_retry: None,
            },
        );
        if let Some((reason, message)) = invalid {
            self.tasks.get_mut(&key).expect("just inserted").phase = Phase::Done;
            self.push_update(now, &key, TaskState::Failed, Some(reason), &message, None);
            return;
        }
        if let Some(exec) = &task.executor {
            self.push_update(
                now,
                &key,
                TaskState::Starting,
                None,
                &format!("starting in executor {}", exec.executor_id),
                None,
            );
            match self.route_executor_task(&framework_id, &task, exec) {
                executors::Route::Wait => {
                    self.tasks.get_mut(&key).expect("just inserted").phase = Phase::Waiting;
                }
                executors::Route::Prepare => {
                    self.actions
                        .push_back(Action::Prepare { framework_id, task });
                }
            }
            return;
        }
        // `TASK_STARTING` only if the driver says the preparation takes time
        // (`Event::Preparing`).
        self.actions
            .push_back(Action::Prepare { framework_id, task });
    }

    /// Kills a task whose preparation is under way: it ends now, `TASK_KILLED`, rather than
    /// when its fetch or compile ends (a compile may run for minutes under its limit), and
    /// the driver stops the preparation, which nothing will use.
    fn kill_preparing(&mut self, now: Instant, key: &TaskKey) {
        self.killed_before_start(now, key, KILLED_BEFORE_START);
        self.actions
            .push_back(Action::CancelPrepare { key: key.clone() });
    }

    /// Ends a task killed before its guest ran, saying `message`.
    fn killed_before_start(&mut self, now: Instant, key: &TaskKey, message: &str) {
        if let Some(t) = self.tasks.get_mut(key) {
            t.phase = Phase::Done;
        }
        self.push_update(
            now,
            key,
            TaskState::Killed,
            Some(Reason::Killed),
            message,
            None,
        );
    }

    fn on_prepared(&mut self, now: Instant, key: TaskKey, result: Result<(), (Reason, String)>) {
        let Some(t) = self.tasks.get_mut(&key) else {
            return;
        };
        if t.phase != Phase::Preparing {
            return;
        }
        if t.kill_requested {
            self.killed_before_start(now, &key, KILLED_BEFORE_START);
            return;
        }
        match result {
            Ok(()) if t.info.executor.is_some() => {
                t.phase = Phase::Launched;
                self.launch_into_executor(&key);
            }
            Ok(()) => {
                t.phase = Phase::Launched;
                self.actions.push_back(Action::Launch {
                    framework_id: key.0.clone(),
                    task: t.info.clone(),
                });
            }
            Err((reason, message)) => {
                t.phase = Phase::Done;
                self.push_update(now, &key, TaskState::Failed, Some(reason), &message, None);
            }
        }
    }

    /// Kills everything and forgets every task (the master no longer knows this agent); their
    /// directories are collected after the delay.
    fn forget_all(&mut self, now: Instant) {
        self.forget_executors(now);
        for (key, t) in &self.tasks {
            if t.info.executor.is_some() {
                continue;
            }
            match t.phase {
                Phase::Launched => self.actions.push_back(Action::Kill { key: key.clone() }),
                Phase::Preparing => self
                    .actions
                    .push_back(Action::CancelPrepare { key: key.clone() }),
                Phase::Waiting | Phase::Done => {}
            }
        }
        let keys: Vec<TaskKey> = self.tasks.keys().cloned().collect();
        for key in keys {
            self.gc_task_forgotten(now, &key);
        }
        self.tasks.clear();
    }

    fn push_update(
        &mut self,
        now: Instant,
        key: &TaskKey,
        state: TaskState,
        reason: Option<Reason>,
        message: &str,
        tails: Option<(String, String)>,
    ) {
        let uuid = UpdateId(format!("{}-{}", self.cfg.boot_id, self.next_update));
        self.next_update += 1;
        let Some(t) = self.tasks.get_mut(key) else {
            return;
        };
        t.state = state;
        let (stdout_tail, stderr_tail) = tails.unwrap_or_default();
        let status = TaskStatus {
            task_id: key.1.clone(),
            framework_id: key.0.clone(),
            agent_id: self.agent_id.clone(),
            state,
            reason,
            message: message.to_owned(),
            stdout_tail,
            stderr_tail,
            uuid: Some(uuid),
        };
        t.updates.push_back(status.clone());
        let exec = t.info.executor.as_ref().map(|e| e.executor_id.clone());
        if self.registered {
            // Not held behind an unacknowledged predecessor (see the contract above).
            self.actions
                .push_back(Action::Send(Message::StatusUpdate { status }));
            if t.updates.len() == 1 {
                t.next_retry = Some(now + self.cfg.status_retry);
            }
        }
        if let (true, Some(eid)) = (state.is_terminal(), exec) {
            self.executor_task_ended(now, key, &eid);
        }
    }
}
