//! A simulated agent: the real agent core, with simulated guests (a task runs for the number of
//! milliseconds in its first argument) and the state of its link to the master (connection,
//! redial, an unnoticed dead link).
//!
//! The guests stand for the runtime process, which outlives the agent process: the agent's
//! driver writes a [`Checkpoint`] whenever the core's generation moved, before carrying out
//! the actions that followed ([`SimAgent::checkpoint_then_poll`]). A crash
//! ([`SimAgent::crash`]) loses the core; while the agent is down, what the guests do (a guest
//! ending) is kept in the runtime's outbox; when it is back ([`SimAgent::come_back`]), the
//! core is rebuilt from the checkpoint, the outbox is replayed, and the core is told which
//! guests still run. Preparing a task (fetch, compile) is the agent's own work and dies with
//! it.

use agent::core::{Action, Agent, AgentConfig, Checkpoint, Event, LiveGuests, Outcome, TaskKey};
use master::core::ConnId;
use proto::{AgentInfo, Message, Reason, TaskState};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long a guest runs when its first argument is not a number of milliseconds.
const DEFAULT_RUN: Duration = Duration::from_millis(100);

/// One agent of the simulation.
pub(crate) struct SimAgent {
    /// The real core.
    pub core: Agent,
    /// Its connection to the master, while it believes it has one.
    pub conn: Option<ConnId>,
    /// When it dials the master next.
    pub reconnect_at: Option<Instant>,
    /// When it notices that its (isolated) link died: the idle timeout on its side.
    pub lost_at: Option<Instant>,
    /// How many connections to the master it has opened.
    pub connects: u64,
    /// Simulated guests: when each running one will exit.
    running: BTreeMap<TaskKey, Instant>,
    /// Guests being prepared: when preparation ends, and how long they will run.
    preparing: BTreeMap<TaskKey, (Instant, Duration)>,
    /// The earliest end of a preparation or a run (kept, as steps ask for it far more often
    /// than guests change).
    next_guest: Option<Instant>,
    restarts: u64,
    /// How many times each task's guest was started here, across restarts (the world's
    /// record, not the core's: a task started twice is a bug the core could not see).
    pub starts: BTreeMap<TaskKey, u32>,
    info: AgentInfo,
    status_retry: Duration,
    /// The last checkpoint the driver wrote (it survives crashes: it is on disk).
    checkpoint: Option<Checkpoint>,
    /// The generation of this run's core that the checkpoint covers (`None` until this run
    /// wrote one: generations count from zero again in every run).
    checkpointed: Option<u64>,
    /// While the agent process is down: when it is back.
    pub back_at: Option<Instant>,
    /// Whether the runtime survived the crash (its guests kept running).
    same_runtime: bool,
    /// Events the runtime produced while the agent was down, in order (its outbox).
    outbox: Vec<Event>,
}

impl SimAgent {
    /// An agent registering as `info`, dialling at `now`.
    pub fn new(info: AgentInfo, status_retry: Duration, now: Instant) -> Self {
        Self {
            core: Agent::new(config(&info, 0, status_retry)),
            conn: None,
            reconnect_at: Some(now),
            lost_at: None,
            connects: 0,
            running: BTreeMap::new(),
            preparing: BTreeMap::new(),
            next_guest: None,
            restarts: 0,
            starts: BTreeMap::new(),
            info,
            status_retry,
            checkpoint: None,
            checkpointed: None,
            back_at: None,
            same_runtime: true,
            outbox: Vec::new(),
        }
    }

    /// Whether the agent process is down (crashed, not yet back).
    pub fn is_down(&self) -> bool {
        self.back_at.is_some()
    }

    /// The driver's loop: writes a checkpoint if the core's state moved since the last one,
    /// then takes the next action to carry out (none while the process is down).
    pub fn checkpoint_then_poll(&mut self, now: Instant) -> Option<Action> {
        if self.is_down() {
            return None;
        }
        let generation = self.core.generation();
        if self.checkpointed != Some(generation) {
            self.checkpoint = Some(self.core.checkpoint(now));
            self.checkpointed = Some(generation);
        }
        self.core.poll_action()
    }

    /// The agent process dies (`kill -9`; the caller drops the link first) and is back at
    /// `back_at`. Its preparations die with it; its guests keep running if `keep_runtime`,
    /// else the runtime process dies too and they are gone.
    pub fn crash(&mut self, back_at: Instant, keep_runtime: bool) {
        self.back_at = Some(back_at);
        self.same_runtime = keep_runtime;
        self.reconnect_at = None;
        self.lost_at = None;
        self.conn = None;
        self.preparing.clear();
        if !keep_runtime {
            self.running.clear();
            self.outbox.clear();
        }
        self.guests_changed();
    }

    /// The agent process is back at `now`: the core is recovered from the last checkpoint (a
    /// fresh one if none was written), the runtime's outbox replayed, the live guests
    /// reported; then it dials the master.
    pub fn come_back(&mut self, now: Instant) {
        self.back_at = None;
        self.restarts += 1;
        let cfg = config(&self.info, self.restarts, self.status_retry);
        self.checkpointed = None;
        let Some(checkpoint) = self.checkpoint.clone() else {
            // Never moved: nothing to recover (no id, no tasks, no guests).
            self.core = Agent::new(cfg);
            self.outbox.clear();
            self.reconnect_at = Some(now);
            return;
        };
        self.core = Agent::recover(cfg, checkpoint, now);
        for event in std::mem::take(&mut self.outbox) {
            self.core.handle(now, event);
        }
        let live = LiveGuests {
            tasks: self.running.keys().cloned().collect(),
            executors: Vec::new(),
            same_runtime: self.same_runtime,
            // The simulation's schedulers launch no framework executors.
            executor_tasks: self.same_runtime.then(Default::default),
        };
        self.core.handle(now, Event::Recovered(live));
        self.same_runtime = true;
        self.reconnect_at = Some(now);
    }

    /// Its hostname.
    pub fn hostname(&self) -> &str {
        &self.info.hostname
    }

    /// A new run of the agent: memory and guests gone (the caller drops the link first).
    pub fn restart(&mut self) {
        self.restarts += 1;
        self.core = Agent::new(config(&self.info, self.restarts, self.status_retry));
        self.running.clear();
        self.preparing.clear();
        self.next_guest = None;
        self.checkpoint = None;
        self.checkpointed = None;
        self.back_at = None;
        self.outbox.clear();
    }

    /// Recomputes [`SimAgent::next_guest`] after guests changed.
    fn guests_changed(&mut self) {
        let run = self.running.values().copied().min();
        let prep = self.preparing.values().map(|(t, _)| *t).min();
        self.next_guest = run.into_iter().chain(prep).min();
    }

    /// The link is gone: tell the core, and dial again after `redial`.
    pub fn disconnected(&mut self, now: Instant, redial: Duration) {
        self.conn = None;
        self.lost_at = None;
        self.core.handle(now, Event::Disconnected);
        self.reconnect_at = Some(now + redial);
    }

    /// The earliest moment something happens on this agent.
    pub fn next_event_at(&self) -> Option<Instant> {
        if self.is_down() {
            return self.back_at.into_iter().chain(self.next_guest).min();
        }
        [
            self.core.poll_timeout(),
            self.reconnect_at,
            self.lost_at,
            self.next_guest,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Guests whose preparation or run ends by `now` tell the core.
    pub fn guests(&mut self, now: Instant) {
        if self.next_guest.is_none_or(|t| t > now) {
            return;
        }
        let ready: Vec<(TaskKey, Duration)> = self
            .preparing
            .iter()
            .filter(|(_, (t, _))| *t <= now)
            .map(|(k, (_, run))| (k.clone(), *run))
            .collect();
        for (key, run) in ready {
            self.preparing.remove(&key);
            self.core.handle(
                now,
                Event::Prepared {
                    key: key.clone(),
                    result: Ok(()),
                },
            );
            self.running.insert(key, now + run);
        }
        let done: Vec<TaskKey> = self
            .running
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in done {
            self.running.remove(&key);
            let event = Event::Finished {
                key,
                outcome: outcome(TaskState::Finished, Reason::ExitCode(0)),
            };
            if self.is_down() {
                self.outbox.push(event);
            } else {
                self.core.handle(now, event);
            }
        }
        self.guests_changed();
    }

    /// Carries out one action of the core; returns the message to send, if it is one.
    /// Preparation takes `prepare`.
    pub fn execute(&mut self, now: Instant, action: Action, prepare: Duration) -> Option<Message> {
        match action {
            Action::Send(msg) => return Some(msg),
            Action::Prepare { framework_id, task } => {
                let run = task
                    .args
                    .first()
                    .and_then(|a| a.parse().ok())
                    .map(Duration::from_millis)
                    .unwrap_or(DEFAULT_RUN);
                let key = (framework_id, task.task_id);
                // A preparation that takes time makes the task TASK_STARTING, as the agent's
                // driver says when it fetches or compiles.
                if !prepare.is_zero() {
                    self.core.handle(now, Event::Preparing { key: key.clone() });
                }
                self.preparing.insert(key, (now + prepare, run));
                self.guests_changed();
            }
            Action::Launch { framework_id, task } => {
                let key = (framework_id, task.task_id);
                *self.starts.entry(key.clone()).or_default() += 1;
                self.core.handle(now, Event::Running { key });
            }
            Action::Kill { key } => {
                if self.running.remove(&key).is_some() {
                    self.guests_changed();
                    self.core.handle(
                        now,
                        Event::Finished {
                            key,
                            outcome: outcome(TaskState::Killed, Reason::Killed),
                        },
                    );
                }
            }
            // The task is over (killed): its preparation never ends.
            Action::CancelPrepare { key } => {
                if self.preparing.remove(&key).is_some() {
                    self.guests_changed();
                }
            }
            // The simulation's schedulers launch no framework executors.
            Action::Executor(_) => {}
            // Simulated guests write no files and the agent exports no metrics here.
            Action::Query { request_id, .. } => {
                return Some(Message::AgentAnswer {
                    request_id,
                    answer: proto::AgentAnswer::Failed {
                        message: "a simulated agent has no output files or metrics".into(),
                    },
                })
            }
        }
        None
    }
}

fn config(info: &AgentInfo, restarts: u64, status_retry: Duration) -> AgentConfig {
    AgentConfig {
        info: info.clone(),
        boot_id: format!("{}-boot{restarts}", info.hostname),
        status_retry,
        stoppable_preparation: true,
    }
}

fn outcome(state: TaskState, reason: Reason) -> Outcome {
    Outcome {
        state,
        reason,
        message: String::new(),
        stdout_tail: String::new(),
        stderr_tail: String::new(),
    }
}
