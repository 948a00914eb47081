//! A simulated framework: the SDK's real sans-IO [`SchedulerCore`] for the protocol, and a
//! greedy workload policy on top of it.
//!
//! The core owns everything protocol: the `Subscribe` on every new connection (re-subscribing
//! under the framework id the master assigned), calls queued while the link is down and sent
//! once each after the next `Subscribed`, auto-acknowledgement, and dropping duplicate updates
//! by (task id, uuid). This type keeps only the policy (which queued tasks to launch on which
//! offer, what to refuse) and what the tests assert on (launches, updates, how each task ended,
//! errors). [`crate::sim::Sim`] feeds the core its inputs and drains its outputs as the core's
//! calling contract asks: after each input or call, every `poll_transmit` message goes on the
//! simulated wire, in order, then every `poll_event` goes to the policy (whose calls are drained
//! the same way).
//!
//! Because the dedup is the core's, the simulated-fault scenarios (every task ends exactly once
//! and no update is lost or duplicated across link cuts, restarts and clock jumps) test the
//! SDK's `SchedulerCore` as well as the master and agent cores.

use super::locality::{LocalityPolicy, LocalityTask, PlacedTask};
use master::core::ConnId;
use proto::{
    Digest, Filters, FrameworkId, FrameworkInfo, Message, Offer, Resources, TaskId, TaskInfo,
    TaskState, TaskStatus,
};
use sdk::delay::{Answer, Preference};
use sdk::{Event, SchedulerCore, TaskBuilder};
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
    /// When the framework learnt it ended.
    pub ended_at: Option<Instant>,
}

/// A simulated framework: a greedy scheduler with a queue of tasks to run, speaking the
/// protocol through the SDK's [`SchedulerCore`].
pub struct SimFramework {
    /// Its connection to the master, while it has one.
    pub(crate) conn: Option<ConnId>,
    /// When it dials the master again after losing its link.
    pub(crate) reconnect_at: Option<Instant>,
    /// When it notices that its connection died unannounced (its master was killed): its
    /// idle timeout.
    pub(crate) lost_at: Option<Instant>,
    /// The protocol: subscription, queued calls, acknowledgements, duplicate filtering.
    core: SchedulerCore,
    /// What it subscribes as (without an id; the core keeps the one the master assigns).
    pub info: FrameworkInfo,
    /// Tasks still to launch, in launch order.
    pub pending: VecDeque<QueuedTask>,
    /// Tasks launched, by id.
    pub launched: BTreeMap<TaskId, Launched>,
    /// Every update the core delivered (it has dropped duplicates by task id and uuid).
    pub updates: Vec<TaskStatus>,
    /// Terminal state of each task, as the framework learnt it.
    pub terminal: BTreeMap<TaskId, TaskState>,
    /// Errors the master sent, and protocol violations the framework saw (a task ending twice,
    /// or updating after its end).
    pub errors: Vec<String>,
    /// How many times it has (re-)subscribed.
    pub subscriptions: u64,
    /// Tasks it asked the master about after re-subscribing: their end may be told twice, by
    /// the reconciliation answer and by the update that was in flight.
    reconciling: BTreeSet<TaskId>,
    /// How long the master should hold back the rest of an offer it answers.
    pub refuse_seconds: f64,
    /// When set, the framework uses offers of these hosts only and refuses the others for an
    /// hour (static partitioning).
    pub only_hosts: Option<BTreeSet<String>>,
    /// When set, offers are answered by delay scheduling (the SDK's helper) over the tasks
    /// queued with [`SimFramework::submit_located`] instead of the greedy queue.
    pub locality: Option<LocalityPolicy>,
    module: Digest,
}

impl SimFramework {
    /// A framework named `name` in `role`, launching `module`, not yet connected.
    pub(crate) fn new(name: &str, role: &str, module: Digest) -> Self {
        let info = FrameworkInfo {
            priority: 0,
            name: name.to_owned(),
            role: role.to_owned(),
            principal: name.to_owned(),
            id: None,
            failover_timeout_ms: 600_000,
        };
        Self {
            conn: None,
            reconnect_at: None,
            lost_at: None,
            core: SchedulerCore::new(info.clone(), true),
            info,
            pending: VecDeque::new(),
            launched: BTreeMap::new(),
            updates: Vec::new(),
            terminal: BTreeMap::new(),
            errors: Vec::new(),
            subscriptions: 0,
            reconciling: BTreeSet::new(),
            refuse_seconds: 0.5,
            only_hosts: None,
            locality: None,
            module,
        }
    }

    /// Its framework id, once the master has assigned one.
    pub fn id(&self) -> Option<&FrameworkId> {
        self.core.framework_id()
    }

    // ---- the driver's side: inputs to the core, its outputs ----

    /// A new connection `conn` to the master is up: the core subscribes on it.
    pub(crate) fn connected(&mut self, conn: ConnId) {
        self.conn = Some(conn);
        self.reconnect_at = None;
        self.core.handle_connected();
    }

    /// A message from the master.
    pub(crate) fn receive(&mut self, msg: Message) {
        self.core.handle_message(msg);
    }

    /// The connection is gone (`why`); it dials again at `redial_at`.
    pub(crate) fn disconnected(&mut self, why: String, redial_at: Instant) {
        self.conn = None;
        self.lost_at = None;
        self.reconnect_at = Some(redial_at);
        self.core.handle_disconnected(why);
    }

    /// The next message to put on its connection.
    pub(crate) fn poll_transmit(&mut self) -> Option<Message> {
        self.core.poll_transmit()
    }

    /// Writing `msg`, just taken from [`SimFramework::poll_transmit`], failed: there is no
    /// connection. The core keeps it for the next subscription.
    pub(crate) fn write_failed(&mut self, msg: Message) {
        self.core
            .handle_write_failed(msg, "no connection to the master".into());
    }

    /// Hands the core's next event to the policy; false when there was none.
    pub(crate) fn handle_next_event(&mut self, now: Instant) -> bool {
        let Some(event) = self.core.poll_event() else {
            return false;
        };
        match event {
            Event::Subscribed { .. } => {
                self.subscriptions += 1;
                if self.subscriptions > 1 {
                    self.reconcile();
                }
            }
            Event::Offers(offers) => {
                for offer in offers {
                    if self.locality.is_some() {
                        self.answer_delay(offer, now);
                    } else {
                        self.answer(offer);
                    }
                }
            }
            Event::Update(status) => self.learn(now, status),
            Event::Error(message) => self.errors.push(message),
            // Offers simply go unanswered; the link's loss is the driver's business; simulated
            // frameworks run no executors.
            Event::Rescind(_)
            | Event::Disconnected(_)
            | Event::Message { .. }
            | Event::ExecutorExited { .. } => {}
        }
        true
    }

    /// Asks the master to kill `task` (sent now, or queued until the next subscription).
    pub(crate) fn kill(&mut self, task: TaskId) {
        self.core.kill(task);
    }

    // ---- the policy ----

    /// Packs queued tasks, in order, into `offer` and accepts it, or declines it.
    fn answer(&mut self, offer: Offer) {
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
                    ended_at: None,
                },
            );
            tasks.push(TaskInfo {
                data: Vec::new(),
                datasets: Vec::new(),
                executor: None,
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
        if tasks.is_empty() {
            self.core.decline(vec![offer.id], filters);
        } else {
            self.core.accept(vec![offer.id], tasks, filters);
        }
    }

    /// Queues `task` (id `id`, of `job`, in `res`) for delay scheduling: it runs its time when
    /// placed on an agent holding all of its data sets, longer elsewhere. Revives offers when the helper
    /// asks. Needs [`SimFramework::locality`].
    pub(crate) fn submit_located(
        &mut self,
        job: &str,
        id: &str,
        task: LocalityTask,
        res: Resources,
    ) {
        let policy = self
            .locality
            .as_mut()
            .expect("submit_located needs a locality policy");
        let pref = Preference::datasets(task.datasets.iter().cloned());
        policy.helper.submit(job, id, res, pref, task);
        if policy.helper.take_revive() {
            self.core.revive();
        }
    }

    /// Answers `offer` with the delay scheduler: its tasks, or a decline (every offer of a
    /// host outside [`SimFramework::only_hosts`] is refused for an hour).
    fn answer_delay(&mut self, offer: Offer, now: Instant) {
        let own = self
            .only_hosts
            .as_ref()
            .is_none_or(|h| h.contains(&offer.hostname));
        if !own {
            let filters = Filters {
                refuse_seconds: REFUSE_FOREIGN_SECONDS,
            };
            self.core.decline(vec![offer.id], filters);
            return;
        }
        let policy = self.locality.as_mut().expect("delay policy set");
        match policy.helper.answer(&offer, now) {
            Answer::Decline { offer_id, filters } => self.core.decline(vec![offer_id], filters),
            Answer::Accept {
                offer_id,
                tasks,
                filters,
            } => {
                let mut infos = Vec::with_capacity(tasks.len());
                for t in tasks {
                    let run = policy.run_time(t.payload.run, t.local);
                    let id = TaskId(t.id.clone());
                    policy.placed.insert(
                        id.clone(),
                        PlacedTask {
                            job: t.job.clone(),
                            local: t.local,
                            hostname: offer.hostname.clone(),
                        },
                    );
                    self.launched.insert(
                        id.clone(),
                        Launched {
                            resources: t.resources,
                            queued_at: t.payload.queued_at,
                            started_at: None,
                            ended_at: None,
                        },
                    );
                    let mut b = TaskBuilder::new(&t.id, self.module)
                        .resources(t.resources)
                        .args([run.as_millis().to_string()]);
                    if t.local {
                        for d in &t.payload.datasets {
                            b = b.dataset(d);
                        }
                    }
                    infos.push(b.build(&offer));
                }
                self.core.accept(vec![offer_id], infos, filters);
            }
        }
    }

    /// After a re-subscription, asks the master how its live tasks stand: an accept in flight
    /// when the link dropped was lost with it, and only the master can say so (it answers
    /// `TASK_LOST` for a task it does not know).
    fn reconcile(&mut self) {
        let live: Vec<TaskId> = self.live_tasks().cloned().collect();
        if !live.is_empty() {
            self.reconciling.extend(live.iter().cloned());
            self.core.reconcile(live);
        }
    }

    /// Takes in an update (the core has dropped duplicates).
    fn learn(&mut self, now: Instant, status: TaskStatus) {
        if status.state.is_terminal() {
            if let Some(l) = self.launched.get_mut(&status.task_id) {
                l.ended_at.get_or_insert(now);
            }
            let prev = self.terminal.insert(status.task_id.clone(), status.state);
            // The same end told by a reconciliation answer and by the update itself.
            let retold = prev == Some(status.state) && self.reconciling.contains(&status.task_id);
            if let Some(prev) = prev.filter(|_| !retold) {
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

    // ---- what the tests and reports read ----

    /// Tasks launched and not yet seen end, in id order.
    pub fn live_tasks(&self) -> impl Iterator<Item = &TaskId> {
        self.launched
            .keys()
            .filter(|t| !self.terminal.contains_key(*t))
    }

    /// True when every task is launched and the framework has learnt how each ended.
    pub fn is_done(&self) -> bool {
        self.pending.is_empty()
            && self.locality.as_ref().is_none_or(|l| l.helper.is_idle())
            && self.live_tasks().next().is_none()
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
