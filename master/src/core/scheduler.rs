//! Handlers for the calls a framework's scheduler makes, and the framework life cycle:
//! disconnection, and teardown (asked for, or when the failover timeout passes).

use super::timer::Timer;
use super::{Binding, ConnId, FrameworkEntry, Master, TaskEntry, TaskTimes};
use crate::registry::{FrameworkRecord, RegistryOp, TaskRecord};
use proto::identity::PeerKind;
use proto::{
    AgentId, FrameworkId, FrameworkInfo, Message, OfferId, Reason, Resources, TaskId, TaskInfo,
    TaskState, UpdateId,
};
use std::collections::BTreeSet;
use std::time::Duration;

/// Mesos's default refuse time, used when a filter's `refuse_seconds` is NaN or negative.
const DEFAULT_REFUSE_SECS: f64 = 5.0;

/// Most tasks one accept may launch; a larger call is refused whole.
pub const MAX_TASKS_PER_ACCEPT: usize = 1_000;

/// Most task ids one reconcile may name (an empty list asks for all of the framework's tasks).
pub const MAX_RECONCILE_IDS: usize = 10_000;

/// Most reconciliations of unknown tasks held while agents known at recovery have not
/// re-registered (`Master::unheard`); past it, a reconcile gets an error to retry.
const MAX_DEFERRED_RECONCILES: usize = 100_000;

/// Most of those one framework may have held: one full reconcile's worth, so that a tenant
/// asking about many unknown tasks cannot use up the others' room.
pub(crate) const MAX_DEFERRED_RECONCILES_PER_FRAMEWORK: usize = MAX_RECONCILE_IDS;

impl Master {
    pub(super) fn on_subscribe(&mut self, conn: ConnId, info: FrameworkInfo) {
        if info.name.trim().is_empty() {
            return self.error(conn, "subscribe refused: framework name must not be empty");
        }
        if info.role.trim().is_empty() {
            return self.error(conn, "subscribe refused: framework role must not be empty");
        }
        if let Some(p) = self.principal(conn).cloned() {
            if !self.cfg.acls.may_register(&p.name, &info.role) {
                tracing::warn!(principal = %p, role = %info.role, "subscribe refused by the ACLs");
                return self.close(
                    conn,
                    format!(
                        "subscribe refused: principal {} may not register frameworks in role {:?} \
                         (acls.register_frameworks)",
                        p.name, info.role
                    ),
                );
            }
        }
        let bound = match self.binding(conn) {
            Some(Binding::Framework(f)) => Some(f),
            _ => None,
        };
        let fid = match info.id.clone() {
            None => {
                if let Some(f) = bound {
                    return self.error(
                        conn,
                        format!(
                            "subscribe refused: this connection is already subscribed as {f}; \
                             set framework.id to re-subscribe"
                        ),
                    );
                }
                if !self.room_for_framework(conn) {
                    return;
                }
                let fid = self.mint_framework_id();
                self.add_framework(conn, fid.clone(), info);
                fid
            }
            Some(fid) => {
                if fid.0.is_empty() {
                    return self.error(conn, "subscribe refused: framework id must not be empty");
                }
                if !proto::ids::is_safe_id(fid.as_str()) {
                    // Agents name directories after it: they would refuse every task.
                    return self.error(
                        conn,
                        format!(
                            "subscribe refused: framework id {:?} must be 1 to 128 characters \
                             of [A-Za-z0-9._-], not . or ..",
                            fid.as_str()
                        ),
                    );
                }
                if let Some(f) = bound.filter(|f| *f != fid) {
                    return self.error(
                        conn,
                        format!(
                            "subscribe refused: this connection is already subscribed as {f}, \
                             not {fid}"
                        ),
                    );
                }
                if self.removed_frameworks.contains(&fid) {
                    return self.error(
                        conn,
                        format!(
                            "subscribe refused: framework {fid} was torn down; subscribe without \
                             an id to start afresh"
                        ),
                    );
                }
                let principal = self.principal(conn).cloned();
                if let Some(owner) = self
                    .frameworks
                    .get(&fid)
                    .map(|f| &f.principal)
                    .filter(|owner| Some(*owner) != principal.as_ref())
                {
                    let who = principal.map(|p| p.to_string()).unwrap_or_default();
                    tracing::warn!(framework = %fid, %owner, principal = %who, "subscribe refused: framework owned by another principal");
                    return self.close(
                        conn,
                        format!(
                            "subscribe refused: framework {fid} belongs to another principal \
                             ({who} may not take it over)"
                        ),
                    );
                }
                if self.frameworks.contains_key(&fid) {
                    self.reattach_framework(conn, &fid, info);
                } else {
                    // Unknown id: a framework of a previous master run comes back. It counts
                    // against its principal's frameworks like a new one.
                    if !self.room_for_framework(conn) {
                        return;
                    }
                    tracing::info!(framework = %fid, "re-admitting a framework unknown to this run");
                    self.add_framework(conn, fid.clone(), info);
                }
                fid
            }
        };
        // Durable before the scheduler learns its id (persist, then send).
        if let Some(f) = self.frameworks.get(&fid) {
            let record = FrameworkRecord {
                id: fid.clone(),
                info: f.info.clone(),
                principal: f.principal.clone(),
            };
            self.persist(RegistryOp::PutFramework(record));
        }
        let heartbeat_interval_ms =
            u64::try_from(self.cfg.heartbeat_interval.as_millis()).unwrap_or(u64::MAX);
        self.send(
            conn,
            Message::Subscribed {
                framework_id: fid,
                heartbeat_interval_ms,
            },
        );
        self.schedule_allocation();
    }

    /// Whether the principal on `conn` may register one more framework; closes the connection
    /// with the reason when it may not.
    fn room_for_framework(&mut self, conn: ConnId) -> bool {
        let Some(p) = self.principal(conn).cloned() else {
            return true;
        };
        let held = self
            .frameworks
            .values()
            .filter(|f| f.principal == p)
            .count();
        if held < self.cfg.max_frameworks_per_principal {
            return true;
        }
        tracing::warn!(principal = %p, held, "subscribe refused: too many frameworks");
        self.close(
            conn,
            format!(
                "subscribe refused: principal {p} already has {held} frameworks (at most {}); \
                 tear one down or re-subscribe with its id",
                self.cfg.max_frameworks_per_principal
            ),
        );
        false
    }

    fn add_framework(&mut self, conn: ConnId, fid: FrameworkId, mut info: FrameworkInfo) {
        info.id = Some(fid.clone());
        let seq = self.next_seq();
        tracing::info!(framework = %fid, name = %info.name, "framework subscribed");
        let principal = self
            .principal(conn)
            .cloned()
            .expect("a subscribing connection is connected");
        // What the scheduler said is replaced by what its certificate says.
        info.principal = principal.name.clone();
        self.frameworks.insert(
            fid.clone(),
            FrameworkEntry {
                shared_id: std::sync::Arc::new(fid.clone()),
                id: fid.clone(),
                seq,
                principal,
                info,
                conn: Some(conn),
                suppressed: false,
                failover_at: None,
            },
        );
        self.bind(conn, Binding::Framework(fid));
    }

    fn reattach_framework(&mut self, conn: ConnId, fid: &FrameworkId, mut info: FrameworkInfo) {
        if let Some(p) = self.principal(conn) {
            // What the scheduler said is replaced by what its certificate says.
            info.principal = p.name.clone();
        }
        let old = self.frameworks.get(fid).and_then(|f| f.conn);
        let role_changed = self
            .frameworks
            .get(fid)
            .is_some_and(|f| f.info.role != info.role);
        if role_changed {
            // Its offers (reserved ones especially) were made for the old role.
            self.drop_framework_offers(fid);
        }
        if let Some(old) = old.filter(|old| *old != conn) {
            // Offers went to the old connection; the new one has never seen them.
            self.drop_framework_offers(fid);
            self.supersede(
                old,
                format!("framework {fid} re-subscribed on another connection"),
            );
        }
        info.id = Some(fid.clone());
        if let Some(f) = self.frameworks.get_mut(fid) {
            f.info = info;
            f.conn = Some(conn);
            f.failover_at = None;
            f.suppressed = false;
        }
        self.timers.stop(&Timer::FrameworkFailover(fid.clone()));
        self.bind(conn, Binding::Framework(fid.clone()));
        tracing::info!(framework = %fid, "framework re-subscribed");
    }

    /// An operator tears down any framework; anyone else is refused.
    pub(super) fn on_operator_teardown(&mut self, conn: ConnId, fid: FrameworkId) {
        let principal = self.principal(conn).cloned();
        let Some(p) = principal.filter(|p| p.kind == PeerKind::Operator) else {
            let who = self
                .principal(conn)
                .map(|p| p.to_string())
                .unwrap_or_default();
            tracing::warn!(principal = %who, framework = %fid, "teardown refused: not an operator");
            return self.error(
                conn,
                format!("teardown of {fid} refused: only an operator certificate may tear down another framework ({who} is not one)"),
            );
        };
        if !self.frameworks.contains_key(&fid) {
            return self.error(conn, format!("teardown refused: unknown framework {fid}"));
        }
        tracing::info!(operator = %p, framework = %fid, "operator tears down a framework");
        self.teardown(&fid);
        self.send(conn, Message::TornDown { framework_id: fid });
    }

    /// An operator that has subscribed no framework sees every framework's tasks: `Reconcile`
    /// with no ids answers the state of every live task (named ids are looked up in every
    /// framework; ids of no live task are answered with an error naming them).
    pub(super) fn on_operator_reconcile(&mut self, conn: ConnId, task_ids: Vec<TaskId>) {
        if task_ids.len() > MAX_RECONCILE_IDS {
            return self.error(
                conn,
                format!("reconcile refused: at most {MAX_RECONCILE_IDS} task ids"),
            );
        }
        let wanted: BTreeSet<TaskId> = task_ids.into_iter().collect();
        let statuses: Vec<_> = self
            .tasks
            .values()
            .filter(|t| wanted.is_empty() || wanted.contains(&t.info.task_id))
            .map(|t| t.status.clone())
            .collect();
        let found: BTreeSet<&TaskId> = statuses.iter().map(|s| &s.task_id).collect();
        let unknown: Vec<String> = wanted
            .iter()
            .filter(|t| !found.contains(t))
            .map(|t| t.to_string())
            .collect();
        if !unknown.is_empty() {
            self.error(
                conn,
                format!("reconcile: no live task {}", unknown.join(", ")),
            );
        }
        for mut status in statuses {
            status.uuid = None;
            self.send(conn, Message::Update { status });
        }
    }

    /// A call from a subscribed framework (anything but `Subscribe`).
    pub(super) fn on_call(&mut self, conn: ConnId, fid: FrameworkId, call: Message) {
        match call {
            Message::Accept {
                offer_ids,
                tasks,
                filters,
            } => self.on_accept(conn, &fid, offer_ids, tasks, filters.refuse_seconds),
            Message::Decline { offer_ids, filters } => {
                self.on_decline(conn, &fid, offer_ids, filters.refuse_seconds)
            }
            Message::Revive => {
                self.ledger.refuse.clear_framework(&fid);
                if let Some(f) = self.frameworks.get_mut(&fid) {
                    f.suppressed = false;
                }
                self.schedule_allocation();
            }
            Message::Suppress => {
                if let Some(f) = self.frameworks.get_mut(&fid) {
                    f.suppressed = true;
                }
            }
            Message::Kill { task_id } => self.on_kill(conn, &fid, task_id),
            Message::Acknowledge {
                agent_id,
                task_id,
                uuid,
            } => self.on_acknowledge(conn, &fid, agent_id, task_id, uuid),
            Message::Reconcile { task_ids } => self.on_reconcile(conn, &fid, task_ids),
            Message::Teardown => self.teardown(&fid),
            Message::FrameworkMessage {
                agent_id,
                executor_id,
                data,
            } => self.on_framework_message(conn, &fid, agent_id, executor_id, data),
            Message::ShutdownExecutor {
                agent_id,
                executor_id,
            } => self.on_shutdown_executor(conn, &fid, agent_id, executor_id),
            other => self.error(conn, format!("unexpected call {}", other.kind())),
        }
    }

    /// The refuse filter duration for `refuse_seconds`, `None` for no filter.
    pub(super) fn refuse_duration(&self, refuse_seconds: f64) -> Option<Duration> {
        let s = if refuse_seconds.is_nan() || refuse_seconds < 0.0 {
            DEFAULT_REFUSE_SECS
        } else {
            refuse_seconds
        };
        let s = s.min(self.cfg.max_refuse.as_secs_f64());
        if s <= 0.0 {
            return None;
        }
        Duration::try_from_secs_f64(s).ok()
    }

    /// Keeps `agent` away from `fid` for `refuse_seconds` (the longer filter wins).
    fn add_filter(&mut self, fid: &FrameworkId, agent: &AgentId, refuse_seconds: f64) {
        let Some(d) = self.refuse_duration(refuse_seconds) else {
            return;
        };
        let Some(until) = self.now.checked_add(d) else {
            return;
        };
        self.set_filter(fid, agent, until);
    }

    fn task_update(
        &mut self,
        conn: ConnId,
        fid: &FrameworkId,
        task_id: &TaskId,
        state: TaskState,
        reason: Reason,
        message: String,
    ) {
        let status = Self::master_status(fid, task_id, None, state, Some(reason), message);
        self.send(conn, Message::Update { status });
    }

    fn on_accept(
        &mut self,
        conn: ConnId,
        fid: &FrameworkId,
        offer_ids: Vec<OfferId>,
        tasks: Vec<TaskInfo>,
        refuse_seconds: f64,
    ) {
        let mut errors = Vec::new();
        let mut valid = Vec::new();
        let mut agent: Option<AgentId> = None;
        let mut seen = BTreeSet::new();
        if tasks.len() > MAX_TASKS_PER_ACCEPT {
            // Refused whole, with one error rather than an update per task.
            self.error(
                conn,
                format!(
                    "accept refused: {} tasks in one accept; at most {MAX_TASKS_PER_ACCEPT}",
                    tasks.len()
                ),
            );
            for id in &offer_ids {
                if self.booked(id).is_some_and(|o| *o.framework_id == *fid) {
                    self.remove_offer(id);
                }
            }
            self.schedule_allocation();
            return;
        }
        if offer_ids.is_empty() {
            errors.push("accept names no offers".to_owned());
        }
        for id in &offer_ids {
            if !seen.insert(id) {
                errors.push(format!("offer {id} is named twice"));
                continue;
            }
            match self.booked(id) {
                None => errors.push(format!("offer {id} is unknown or no longer valid")),
                Some(o) if *o.framework_id != *fid => {
                    errors.push(format!("offer {id} is not an offer to framework {fid}"))
                }
                Some(o) => {
                    match &agent {
                        None => agent = Some((*o.agent_id).clone()),
                        Some(a) if *a != *o.agent_id => errors.push(format!(
                            "offer {id} is on agent {} but the other offers are on agent {a}; \
                             one accept uses offers of one agent",
                            o.agent_id
                        )),
                        Some(_) => {}
                    }
                    valid.push(id.clone());
                }
            }
        }
        let agent = match agent {
            Some(a) if errors.is_empty() => a,
            _ => {
                let message = format!("accept failed: {}", errors.join("; "));
                for t in &tasks {
                    self.task_update(
                        conn,
                        fid,
                        &t.task_id,
                        TaskState::Dropped,
                        Reason::InvalidOffers,
                        message.clone(),
                    );
                }
                self.error(conn, message);
                for id in &valid {
                    self.remove_offer(id);
                }
                self.schedule_allocation();
                return;
            }
        };
        // What the offers hold, by pool: reserved pools are drawn first, then unreserved.
        let mut remaining = Resources::ZERO;
        let mut reserved: Vec<(String, Resources)> = Vec::new();
        for id in &valid {
            if let Some(o) = self.remove_offer(id) {
                remaining += o.resources;
                if let Some(role) = o.reserved_for {
                    match reserved.iter_mut().find(|(r, _)| *r == role) {
                        Some((_, r)) => *r += o.resources,
                        None => reserved.push((role, o.resources)),
                    }
                }
            }
        }
        let mut ids_in_call = BTreeSet::new();
        for task in tasks {
            let verdict = self.validate_task(fid, &agent, &task, &remaining, &ids_in_call);
            ids_in_call.insert(task.task_id.clone());
            match verdict {
                Err((reason, message)) => {
                    self.task_update(conn, fid, &task.task_id, TaskState::Error, reason, message)
                }
                Ok(new_executor) => {
                    if let Some(e) = new_executor {
                        remaining -= e.resources;
                        let parts = draw_from_pools(&mut reserved, e.resources);
                        self.add_executor(&agent, fid, e, parts);
                    }
                    remaining -= task.resources;
                    let parts = draw_from_pools(&mut reserved, task.resources);
                    self.launch(fid, &agent, task, parts);
                }
            }
        }
        if !remaining.is_empty() {
            self.add_filter(fid, &agent, refuse_seconds);
        }
        self.schedule_allocation();
    }

    /// Launches a validated task: charges it and sends it to its agent.
    fn launch(
        &mut self,
        fid: &FrameworkId,
        agent: &AgentId,
        task: TaskInfo,
        reserved: Vec<(String, Resources)>,
    ) {
        let status = Self::master_status(
            fid,
            &task.task_id,
            Some(agent.clone()),
            TaskState::Staging,
            None,
            String::new(),
        );
        tracing::debug!(framework = %fid, task = %task.task_id, agent = %agent, "launching");
        let entry = TaskEntry {
            kill_requested: false,
            framework_id: fid.clone(),
            info: task.clone(),
            status,
            reserved,
            before_unreachable: None,
            restore_notice: None,
            recovered: false,
            unreachable_told: false,
            adopted_ended: false,
            times: TaskTimes {
                launched: Some(self.now),
                ..Default::default()
            },
        };
        self.hold_task(&entry);
        self.blobs_used_by(&task);
        self.tasks
            .insert((fid.clone(), task.task_id.clone()), entry);
        // Sent ahead of its record, so the commit overlaps the launch's way to the agent. A
        // master that dies between the two comes back without the task: its agent reports it
        // when it re-registers and the master adopts it (ended or not), and until every agent
        // known at recovery has re-registered or been removed, reconciliation does not call a
        // task it does not know lost (`unheard`). Offers of what the task freed, or of what
        // is left, come after the record (queued behind it).
        self.send_to_agent(
            agent,
            Message::RunTask {
                framework_id: fid.clone(),
                task: task.clone(),
            },
        );
        self.persist(RegistryOp::PutTask(TaskRecord {
            framework_id: fid.clone(),
            info: task,
            kill_requested: false,
            ended: None,
        }));
    }

    fn on_decline(
        &mut self,
        conn: ConnId,
        fid: &FrameworkId,
        offer_ids: Vec<OfferId>,
        refuse_seconds: f64,
    ) {
        if offer_ids.is_empty() {
            return self.error(conn, "decline names no offers");
        }
        let mut bad = Vec::new();
        for id in offer_ids {
            if self.booked(&id).is_some_and(|o| *o.framework_id == *fid) {
                if let Some(o) = self.remove_offer(&id) {
                    self.add_filter(fid, &o.agent_id, refuse_seconds);
                }
            } else {
                bad.push(format!("offer {id} is unknown or no longer valid"));
            }
        }
        if !bad.is_empty() {
            self.error(conn, format!("decline: {}", bad.join("; ")));
        }
        self.schedule_allocation();
    }

    fn on_kill(&mut self, conn: ConnId, fid: &FrameworkId, task_id: TaskId) {
        let key = (fid.clone(), task_id);
        let task = self
            .tasks
            .get(&key)
            .or_else(|| self.completed_task(fid, &key.1));
        match task {
            Some(t) if !t.is_terminal() && t.kill_requested => {
                // Asked already: the master resends kills itself when the agent comes back, so
                // a repeated Kill sends the agent nothing more.
                tracing::debug!(task = %key.1, "kill already requested");
            }
            Some(t) if !t.is_terminal() => self.request_kill(key),
            Some(t) => {
                let state = t.status.state.name();
                self.error(
                    conn,
                    format!("task {} is already terminal ({state})", key.1),
                );
            }
            None => self.error(conn, format!("unknown task {}", key.1)),
        }
    }

    /// Asks the agent of live task `key` to kill it, durably (the kill is sent again when the
    /// agent re-registers still running it).
    pub(super) fn request_kill(&mut self, key: (FrameworkId, TaskId)) {
        let Some(t) = self.tasks.get_mut(&key) else {
            return;
        };
        t.kill_requested = true;
        let aid = t.info.agent_id.clone();
        self.persist(RegistryOp::KillRequested {
            framework_id: key.0.clone(),
            task_id: key.1.clone(),
        });
        self.send_to_agent(
            &aid,
            Message::KillTask {
                framework_id: key.0,
                task_id: key.1,
            },
        );
    }

    fn on_acknowledge(
        &mut self,
        conn: ConnId,
        fid: &FrameworkId,
        agent_id: AgentId,
        task_id: TaskId,
        uuid: UpdateId,
    ) {
        let key = (fid.clone(), task_id);
        let done = self.tasks.get(&key).is_some_and(|t| {
            t.is_terminal() && t.info.agent_id == agent_id && t.status.uuid.as_ref() == Some(&uuid)
        });
        if done {
            self.complete_task(&key);
        }
        if !self.agents.contains_key(&agent_id) {
            return self.error(conn, format!("acknowledge: unknown agent {agent_id}"));
        }
        let ours = self
            .tasks
            .get(&key)
            .or_else(|| self.completed_task(fid, &key.1))
            .is_some_and(|t| t.info.agent_id == agent_id);
        if !ours && !done {
            // Only a framework's own tasks' updates are acknowledged on its behalf: an agent is
            // never sent acks a framework has no business sending.
            return self.error(
                conn,
                format!(
                    "acknowledge: task {} is not a task of this framework on agent {agent_id}",
                    key.1
                ),
            );
        }
        self.send_to_agent(
            &agent_id,
            Message::StatusUpdateAck {
                framework_id: key.0,
                task_id: key.1,
                uuid,
            },
        );
    }

    /// A framework's reconcile: the status of each named task (of all its live tasks, when it
    /// names none). A named task the master does not know is answered TASK_LOST naming no
    /// agent and no reason, once every agent known at recovery has re-registered or been
    /// removed (until then the answer waits: the task may have been launched just before a
    /// restart and run on one of them, see `launch`). Such a task never ran, and a client may
    /// launch it again (`tessera run` does, after a re-subscription).
    fn on_reconcile(&mut self, conn: ConnId, fid: &FrameworkId, task_ids: Vec<TaskId>) {
        if task_ids.len() > MAX_RECONCILE_IDS {
            return self.error(
                conn,
                format!(
                    "reconcile refused: {} task ids in one call; at most {MAX_RECONCILE_IDS} \
                     (or none, for all of the framework's tasks)",
                    task_ids.len()
                ),
            );
        }
        // Each id is answered once however often it is named.
        let task_ids: Vec<TaskId> = {
            let mut seen = BTreeSet::new();
            task_ids
                .into_iter()
                .filter(|t| seen.insert(t.clone()))
                .collect()
        };
        let mut statuses = Vec::new();
        // Unknown tasks not held (the room for held questions is full): how many, and the
        // first with whose room was full.
        let mut refused = 0usize;
        let mut first_refused: Option<(TaskId, &str)> = None;
        if task_ids.is_empty() {
            statuses.extend(
                self.tasks
                    .values()
                    .filter(|t| t.framework_id == *fid && !t.adopted_ended)
                    .map(|t| t.status.clone()),
            );
        } else {
            for tid in task_ids {
                let known = self
                    .tasks
                    .get(&(fid.clone(), tid.clone()))
                    .or_else(|| self.completed_task(fid, &tid));
                if known.is_some_and(|t| t.adopted_ended) {
                    // Its agent's own end update follows (see `TaskEntry::adopted_ended`).
                    continue;
                }
                if known.is_none() && !self.unheard.is_empty() {
                    let mine = self.deferred_per_framework.get(fid).copied().unwrap_or(0);
                    let full = if mine >= MAX_DEFERRED_RECONCILES_PER_FRAMEWORK {
                        Some("this framework's")
                    } else if self.deferred_reconciles.len() >= MAX_DEFERRED_RECONCILES {
                        Some("all frameworks'")
                    } else {
                        None
                    };
                    match full {
                        Some(whose) => {
                            refused += 1;
                            first_refused.get_or_insert((tid, whose));
                        }
                        None => {
                            *self.deferred_per_framework.entry(fid.clone()).or_default() += 1;
                            self.deferred_reconciles.push((conn, fid.clone(), tid));
                        }
                    }
                    continue;
                }
                statuses.push(match known {
                    Some(t) => t.status.clone(),
                    None => Self::master_status(
                        fid,
                        &tid,
                        None,
                        TaskState::Lost,
                        None,
                        "unknown task".to_owned(),
                    ),
                });
            }
        }
        if let Some((first, whose)) = first_refused {
            // One error for the call, however many of its ids it covers.
            self.error(
                conn,
                format!(
                    "reconcile of {} unknown task(s) ({first} first) not answered: the master is \
                     still waiting for {} agents to re-register, and holds too many of {whose} \
                     questions about unknown tasks meanwhile; ask again later",
                    refused,
                    self.unheard.len()
                ),
            );
        }
        for mut status in statuses {
            status.uuid = None;
            if status.state == TaskState::Unreachable {
                if let Some(t) = self.tasks.get_mut(&(fid.clone(), status.task_id.clone())) {
                    t.unreachable_told = true;
                }
            }
            self.send(conn, Message::Update { status });
        }
    }

    /// An agent known at recovery has re-registered or been removed: once none is left, the
    /// reconciliations held for unknown tasks are answered (a task adopted meanwhile with its
    /// state, the others TASK_LOST).
    pub(super) fn heard_from(&mut self, aid: &AgentId) {
        if !self.unheard.remove(aid) || !self.unheard.is_empty() {
            return;
        }
        self.deferred_per_framework.clear();
        for (conn, fid, tid) in std::mem::take(&mut self.deferred_reconciles) {
            if self.binding(conn) == Some(Binding::Framework(fid.clone())) {
                self.on_reconcile(conn, &fid, vec![tid]);
            }
        }
    }

    // ----- life cycle -----

    /// Its scheduler's connection went: drops its offers and starts the failover clock.
    pub(super) fn framework_disconnected(&mut self, fid: &FrameworkId) {
        self.drop_framework_offers(fid);
        let now = self.now;
        if let Some(f) = self.frameworks.get_mut(fid) {
            f.conn = None;
            // Capped, so a framework cannot make itself immortal once disconnected.
            let d = Duration::from_millis(f.info.failover_timeout_ms).min(self.cfg.max_failover);
            // A zero timeout tears down at the next handle_timeout; an absurd one never does.
            f.failover_at = if d.is_zero() {
                Some(now)
            } else {
                now.checked_add(d)
            };
            let at = f.failover_at;
            self.timers
                .set_or_stop(Timer::FrameworkFailover(fid.clone()), at);
            tracing::info!(framework = %fid, "framework disconnected");
        }
        self.schedule_allocation();
    }

    /// Ends a framework: kills its tasks, drops its offers and filters, forgets it.
    pub(super) fn teardown(&mut self, fid: &FrameworkId) {
        if self.frameworks.contains_key(fid) {
            self.persist(RegistryOp::RemoveFramework(fid.clone()));
        }
        self.drop_framework_offers(fid);
        let keys: Vec<(FrameworkId, TaskId)> = self
            .tasks
            .range((fid.clone(), TaskId(String::new()))..)
            .take_while(|((f, _), _)| f == fid)
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            let Some(t) = self.tasks.get(&key) else {
                continue;
            };
            if t.is_terminal() {
                self.complete_task(&key);
            } else {
                let aid = t.info.agent_id.clone();
                self.send_to_agent(
                    &aid,
                    Message::KillTask {
                        framework_id: key.0.clone(),
                        task_id: key.1.clone(),
                    },
                );
            }
        }
        self.stop_framework_executors(fid);
        self.ledger.refuse.clear_framework(fid);
        self.timers.stop(&Timer::FrameworkFailover(fid.clone()));
        if let Some(f) = self.frameworks.remove(fid) {
            if let Some(c) = f.conn.and_then(|c| self.conns.get_mut(&c)) {
                c.bound = None;
            }
        }
        self.removed_frameworks.insert(fid.clone());
        self.schedule_allocation();
        tracing::info!(framework = %fid, "framework torn down");
    }
}

/// Draws `r` from the reserved pools of an accept's offers, in order, as far as they go: the
/// reserved parts of a charge (the rest is unreserved).
fn draw_from_pools(pools: &mut [(String, Resources)], r: Resources) -> Vec<(String, Resources)> {
    let mut need = r;
    let mut parts = Vec::new();
    for (role, pool) in pools {
        let take = need.min_each(pool);
        if !take.is_empty() {
            *pool -= take;
            need -= take;
            parts.push((role.clone(), take));
        }
    }
    parts
}
