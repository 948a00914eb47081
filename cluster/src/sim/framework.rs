//! A simulated framework: a greedy scheduler with a queue of tasks, and the scheduler side of the
//! protocol (subscribe, answer offers, acknowledge updates, drop duplicate deliveries).
//!
//! The protocol logic sits in this one type, fed messages and `now` and returning the messages
//! to send, so it can later give way to the SDK's sans-IO scheduler core without touching the
//! rest of the simulation.

use master::core::ConnId;
use proto::{
    Digest, Filters, FrameworkId, FrameworkInfo, Message, Resources, TaskId, TaskInfo, TaskState,
    TaskStatus,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// How long a framework that keeps only some hosts refuses offers from the others.
const REFUSE_FOREIGN_SECONDS: f64 = 3600.0;

/// A task waiting in a framework's queue.
#[derive(Clone, Debug)]
pub struct QueuedTask {
    /// Its id.
    pub id: TaskId,
    /// How long its simulated guest runs (passed as the guest's first argument, in ms).
    pub run: Duration,
    /// What it asks for.
    pub resources: Resources,
    /// When it was queued (for wait times).
    pub queued_at: Instant,
}

/// A task the framework has launched.
#[derive(Clone, Debug)]
pub struct Launched {
    /// What it was launched with.
    pub resources: Resources,
    /// When it was queued.
    pub queued_at: Instant,
    /// When the framework learnt it was running.
    pub started_at: Option<Instant>,
}

/// A simulated framework: a greedy scheduler with a queue of tasks to run.
pub struct SimFramework {
    /// Its connection to the master.
    pub(crate) conn: ConnId,
    /// What it subscribes as.
    pub info: FrameworkInfo,
    /// Its id once subscribed.
    pub id: Option<FrameworkId>,
    /// Tasks still to launch, in launch order.
    pub pending: VecDeque<QueuedTask>,
    /// Tasks launched, by id.
    pub launched: BTreeMap<TaskId, Launched>,
    /// Every update delivered (after dropping duplicates by uuid).
    pub updates: Vec<TaskStatus>,
    seen: BTreeSet<(TaskId, String)>,
    /// Terminal state of each task, as the framework learnt it.
    pub terminal: BTreeMap<TaskId, TaskState>,
    /// Errors the master sent, and protocol violations the framework saw (a task ending twice,
    /// or updating after its end).
    pub errors: Vec<String>,
    /// How long the master should hold back the rest of an offer it answers.
    pub refuse_seconds: f64,
    /// When set, the framework uses offers of these hosts only and refuses the others for an
    /// hour (static partitioning).
    pub only_hosts: Option<BTreeSet<String>>,
    module: Digest,
}

impl SimFramework {
    /// A framework named `name` in `role`, on connection `conn`, launching `module`.
    pub(crate) fn new(conn: ConnId, name: &str, role: &str, module: Digest) -> Self {
        Self {
            conn,
            info: FrameworkInfo {
                priority: 0,
                name: name.to_owned(),
                role: role.to_owned(),
                principal: name.to_owned(),
                id: None,
                failover_timeout_ms: 600_000,
            },
            id: None,
            pending: VecDeque::new(),
            launched: BTreeMap::new(),
            updates: Vec::new(),
            seen: BTreeSet::new(),
            terminal: BTreeMap::new(),
            errors: Vec::new(),
            refuse_seconds: 0.5,
            only_hosts: None,
            module,
        }
    }

    /// The first message it sends.
    pub(crate) fn subscribe(&self) -> Message {
        Message::Subscribe {
            framework: self.info.clone(),
        }
    }

    /// Handles a message from the master; returns the messages to send back.
    pub(crate) fn receive(&mut self, now: Instant, msg: Message) -> Vec<Message> {
        let mut out = Vec::new();
        match msg {
            Message::Subscribed { framework_id, .. } => self.id = Some(framework_id),
            Message::Offers { offers } => {
                for offer in offers {
                    let own = self
                        .only_hosts
                        .as_ref()
                        .is_none_or(|h| h.contains(&offer.hostname));
                    let mut left = offer.resources;
                    let mut tasks = Vec::new();
                    while let Some(next) = self.pending.front() {
                        if !own || !left.contains(&next.resources) {
                            break;
                        }
                        let t = self.pending.pop_front().expect("front exists");
                        left -= t.resources;
                        self.launched.insert(
                            t.id.clone(),
                            Launched {
                                resources: t.resources,
                                queued_at: t.queued_at,
                                started_at: None,
                            },
                        );
                        tasks.push(TaskInfo {
                            max_cpu_ms: None,
                            name: t.id.0.clone(),
                            task_id: t.id,
                            agent_id: offer.agent_id.clone(),
                            resources: t.resources,
                            module: self.module,
                            args: vec![t.run.as_millis().to_string()],
                            env: vec![],
                            files: vec![],
                            timeout_ms: None,
                        });
                    }
                    let refuse_seconds = if own {
                        self.refuse_seconds
                    } else {
                        REFUSE_FOREIGN_SECONDS
                    };
                    let filters = Filters { refuse_seconds };
                    out.push(Message::answer_offer(offer.id, tasks, filters));
                }
            }
            Message::Update { status } => {
                if let (Some(agent_id), Some(uuid)) = (&status.agent_id, &status.uuid) {
                    out.push(Message::Acknowledge {
                        agent_id: agent_id.clone(),
                        task_id: status.task_id.clone(),
                        uuid: uuid.clone(),
                    });
                    if !self.seen.insert((status.task_id.clone(), uuid.0.clone())) {
                        return out;
                    }
                }
                self.learn(now, status);
            }
            Message::Error { message } => self.errors.push(message),
            _ => {}
        }
        out
    }

    /// Takes in a (not duplicate) update.
    fn learn(&mut self, now: Instant, status: TaskStatus) {
        if status.state.is_terminal() {
            if let Some(prev) = self.terminal.insert(status.task_id.clone(), status.state) {
                self.errors.push(format!(
                    "{} terminal twice: {} then {}",
                    status.task_id,
                    prev.name(),
                    status.state.name()
                ));
            }
        } else if self.terminal.contains_key(&status.task_id) {
            self.errors.push(format!(
                "{} went {} after ending",
                status.task_id,
                status.state.name()
            ));
        } else if status.state == TaskState::Running {
            if let Some(l) = self.launched.get_mut(&status.task_id) {
                l.started_at.get_or_insert(now);
            }
        }
        self.updates.push(status);
    }

    /// Tasks launched and not yet seen end, in id order.
    pub fn live_tasks(&self) -> impl Iterator<Item = &TaskId> {
        self.launched
            .keys()
            .filter(|t| !self.terminal.contains_key(*t))
    }

    /// True when every task is launched and the framework has learnt how each ended.
    pub fn is_done(&self) -> bool {
        self.pending.is_empty() && self.live_tasks().next().is_none()
    }

    /// What its tasks known to be running hold.
    pub fn running(&self) -> Resources {
        self.launched
            .iter()
            .filter(|(id, l)| l.started_at.is_some() && !self.terminal.contains_key(*id))
            .fold(Resources::ZERO, |acc, (_, l)| acc + l.resources)
    }

    /// How many of its tasks finished (rather than failed, were killed or lost).
    pub fn finished(&self) -> u64 {
        self.terminal
            .values()
            .filter(|s| **s == TaskState::Finished)
            .count() as u64
    }

    /// How long each started task waited between being queued and running.
    pub fn waits(&self) -> impl Iterator<Item = Duration> + '_ {
        self.launched
            .values()
            .filter_map(|l| l.started_at.map(|s| s - l.queued_at))
    }
}
