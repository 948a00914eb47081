//! Handlers for what agents send: registration (with task reconciliation) and status updates;
//! and the agent life cycle: disconnection (its tasks TASK_UNREACHABLE), return (back to their
//! real states), and removal when it does not come back in time (TASK_GONE).

use super::timer::Timer;
use super::{AgentEntry, Binding, ConnId, ExecutorKey, Master, TaskEntry, TaskTimes};
use crate::registry::{AgentRecord, RegistryOp, TaskRecord};
use proto::{
    AgentId, AgentInfo, ExecutorId, FrameworkId, Message, Reason, Resources, RunningExecutor,
    RunningTask, TaskId, TaskState, TaskStatus,
};
use std::collections::{BTreeMap, BTreeSet};

/// Cleans an agent's static reservations: drops the unreserved role `*` and empty ones, merges
/// entries of one role, and trims them (in the order given) so that together they fit `total`.
pub fn sanitize_reservations(
    total: &Resources,
    list: &[(String, Resources)],
) -> Vec<(String, Resources)> {
    let mut out: Vec<(String, Resources)> = Vec::new();
    let mut left = *total;
    for (role, r) in list {
        if role.trim().is_empty() || role == "*" {
            continue;
        }
        let r = r.min_each(&left);
        if r.is_empty() {
            continue;
        }
        left -= r;
        match out.iter_mut().find(|(x, _)| x == role) {
            Some((_, x)) => *x += r,
            None => out.push((role.clone(), r)),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// What a (re-)registration will change, worked out before anything is changed so that an
/// invalid registration leaves no trace.
#[derive(Default)]
struct RegisterPlan {
    /// Known non-terminal tasks the agent no longer reports: TASK_LOST (AgentRestarted).
    lost: Vec<(FrameworkId, TaskId)>,
    /// Tasks still TASK_STAGING that the agent (same id, so same memory) does not report: the
    /// `RunTask` was lost with the old connection, so it is sent again. A dropped link must
    /// cost latency, not tasks.
    resend: Vec<(FrameworkId, TaskId)>,
    /// Reported tasks unknown to the master: adopted (one that ended, of a framework the
    /// master knows, uncharged and ended, so that its framework hears of its end: it may have
    /// been launched just before the master restarted, without a record).
    adopt: Vec<RunningTask>,
    /// Reported tasks the agent should not be running (stale, elsewhere, or of a removed
    /// framework): killed.
    kill: Vec<(FrameworkId, TaskId)>,
    /// Known executors the agent no longer reports: their charge is freed, their frameworks
    /// told.
    executors_lost: Vec<ExecutorKey>,
    /// Reported executors unknown to the master, of live frameworks: charged.
    executors_adopt: Vec<RunningExecutor>,
    /// Reported executors of frameworks that are gone: stopped.
    executors_kill: Vec<(FrameworkId, ExecutorId)>,
    /// The non-terminal state the agent reports for each known task it still runs: a task
    /// TASK_UNREACHABLE returns to it.
    reported: BTreeMap<(FrameworkId, TaskId), TaskState>,
    /// Known live tasks the agent reports as ended: their terminal updates follow (the agent
    /// resends unacknowledged ones), so the framework gets no restore notice for them.
    reported_ended: BTreeSet<(FrameworkId, TaskId)>,
    /// Resources the agent's non-terminal tasks and executors will use afterwards.
    used: Resources,
}

impl Master {
    pub(super) fn on_register(
        &mut self,
        conn: ConnId,
        agent_id: Option<AgentId>,
        info: AgentInfo,
        running: Vec<RunningTask>,
        executors: Vec<RunningExecutor>,
    ) {
        if let Some(Binding::Agent(bound)) = self.binding(conn) {
            if agent_id.as_ref() != Some(&bound) {
                return self.close(
                    conn,
                    format!("register refused: this connection is already agent {bound}"),
                );
            }
        }
        if let Some(id) = &agent_id {
            let own = id.0.starts_with(&format!("{}-A", self.cfg.run_id));
            if id.0.is_empty()
                || (!self.agents.contains_key(id) && (own || self.removed_agents.contains(id)))
            {
                let message = format!(
                    "agent id {id:?} is unknown to this master (removed after it failed to \
                     re-register in time); restart without an id"
                );
                self.send(
                    conn,
                    Message::Shutdown {
                        message: message.clone(),
                    },
                );
                return self.close(conn, message);
            }
        }
        let name = self
            .principal(conn)
            .map(|p| p.name.clone())
            .unwrap_or_default();
        if let Some(owner) = agent_id
            .as_ref()
            .and_then(|id| self.agents.get(id))
            .map(|a| a.owner.clone())
            .filter(|owner| *owner != name)
        {
            let id = agent_id.as_ref().expect("checked above");
            tracing::warn!(agent = %id, %owner, certificate = %name, "register refused: agent id held by another certificate");
            return self.close(
                conn,
                format!(
                    "register refused: agent id {id} belongs to agent {owner:?}, and this \
                     certificate is agent {name:?}"
                ),
            );
        }
        if let Some((role, _)) = info
            .reservations
            .iter()
            .find(|(role, _)| !self.cfg.acls.may_reserve(&name, role))
        {
            tracing::warn!(agent = %name, %role, "register refused by the ACLs");
            return self.close(
                conn,
                format!(
                    "register refused: agent {name:?} may not reserve resources for role \
                     {role:?} (acls.reserve_resources)"
                ),
            );
        }
        let plan_id = agent_id.clone().unwrap_or_else(|| AgentId(String::new()));
        let plan = match self.plan_register(&plan_id, &info, &running, &executors) {
            Ok(p) => p,
            Err(reason) => return self.close(conn, format!("register refused: {reason}")),
        };
        let id = match agent_id {
            Some(id) if self.agents.contains_key(&id) => {
                let old = self.agents.get(&id).and_then(|a| a.conn);
                if let Some(old) = old.filter(|old| *old != conn) {
                    self.supersede(
                        old,
                        format!("agent {id} re-registered on another connection"),
                    );
                }
                // Its offers were made against the old view of its tasks.
                self.rescind_agent_offers(&id);
                let reservations = sanitize_reservations(&info.resources, &info.reservations);
                if let Some(a) = self.agents.get_mut(&id) {
                    a.hostname = info.hostname;
                    a.reservations = reservations;
                    a.total = info.resources;
                    a.attributes = info.attributes;
                    a.datasets = info.datasets;
                    a.conn = Some(conn);
                    a.remove_at = None;
                    a.leaving = false;
                    let owner = a.owner.clone();
                    self.mark_connected(&owner, &id);
                }
                self.timers.stop(&Timer::AgentRemoval(id.clone()));
                tracing::info!(agent = %id, "agent re-registered");
                id
            }
            other => {
                if other.is_none() {
                    self.forget_restarted_agents(&name);
                }
                // New, or (with a foreign id) an agent of a previous master run coming back.
                let id = match other {
                    Some(id) => id,
                    None => self.mint_agent_id(),
                };
                let seq = self.next_seq();
                let reservations = sanitize_reservations(&info.resources, &info.reservations);
                self.agents.insert(
                    id.clone(),
                    AgentEntry {
                        shared_id: std::sync::Arc::new(id.clone()),
                        id: id.clone(),
                        seq,
                        hostname: info.hostname,
                        owner: name,
                        total: info.resources,
                        attributes: info.attributes,
                        datasets: info.datasets,
                        conn: Some(conn),
                        remove_at: None,
                        used: Resources::ZERO,
                        offered: Resources::ZERO,
                        reservations,
                        reserved_used: Default::default(),
                        reserved_offered: Default::default(),
                        leaving: false,
                        last_seen: Some(self.now),
                    },
                );
                tracing::info!(agent = %id, "agent registered");
                id
            }
        };
        self.bind(conn, Binding::Agent(id.clone()));
        // Durable before the agent learns its id: the agent, and the tasks it reported that the
        // master adopts.
        if let Some(record) = self.agent_record(&id) {
            self.persist(RegistryOp::PutAgent(record));
        }
        for rt in &plan.adopt {
            let mut info = rt.task.clone();
            info.agent_id = id.clone();
            self.persist(RegistryOp::PutTask(TaskRecord {
                framework_id: rt.framework_id.clone(),
                info,
                kill_requested: false,
                ended: None,
            }));
            if rt.state.is_terminal() {
                self.persist(RegistryOp::EndTask {
                    framework_id: rt.framework_id.clone(),
                    task_id: rt.task.task_id.clone(),
                    status: Self::adopted_status(&id, rt),
                });
            }
        }
        self.send(
            conn,
            Message::Registered {
                agent_id: id.clone(),
            },
        );
        self.apply_register_plan(&id, plan);
        self.rebuild_pools(&id);
        self.heard_from(&id);
        self.schedule_allocation();
    }

    /// Works out how the agent's report reconciles with the task table, and checks it fits.
    fn plan_register(
        &self,
        id: &AgentId,
        info: &AgentInfo,
        running: &[RunningTask],
        executors: &[RunningExecutor],
    ) -> Result<RegisterPlan, String> {
        let mut plan = RegisterPlan::default();
        let mut reported = BTreeSet::new();
        for rt in running {
            let key = (rt.framework_id.clone(), rt.task.task_id.clone());
            if key.0 .0.is_empty() || key.1 .0.is_empty() {
                return Err("a running task has an empty framework or task id".into());
            }
            if !reported.insert(key.clone()) {
                return Err(format!("task {} of {} is reported twice", key.1, key.0));
            }
            match self.tasks.get(&key) {
                Some(t) if t.info.agent_id == *id => {
                    if !t.is_terminal() {
                        if !rt.state.is_terminal() {
                            plan.reported.insert(key.clone(), rt.state);
                        } else {
                            plan.reported_ended.insert(key.clone());
                        }
                        plan.used = plan
                            .used
                            .checked_add(&t.info.resources)
                            .ok_or("running tasks' resources overflow")?;
                        if !self.frameworks.contains_key(&key.0) || t.kill_requested {
                            plan.kill.push(key);
                        }
                    }
                }
                Some(_) => plan.kill.push(key),
                None if self.completed_task(&key.0, &key.1).is_some() => {
                    if !rt.state.is_terminal() {
                        plan.kill.push(key);
                    }
                }
                None => {
                    if rt.state.is_terminal() {
                        if self.frameworks.contains_key(&key.0) {
                            // Its terminal update is on its way: adopted ended, it reaches
                            // the framework.
                            plan.adopt.push(rt.clone());
                        }
                        // Otherwise the master acks the update as unknown.
                        continue;
                    }
                    plan.used = plan
                        .used
                        .checked_add(&rt.task.resources)
                        .ok_or("running tasks' resources overflow")?;
                    if self.removed_frameworks.contains(&key.0) {
                        plan.kill.push(key);
                    }
                    plan.adopt.push(rt.clone());
                }
            }
        }
        for (k, t) in &self.tasks {
            if t.info.agent_id != *id || t.is_terminal() || reported.contains(k) {
                continue;
            }
            if t.reachable_state() == TaskState::Staging
                && self.frameworks.contains_key(&k.0)
                && !t.kill_requested
            {
                plan.used = plan
                    .used
                    .checked_add(&t.info.resources)
                    .ok_or("running tasks' resources overflow")?;
                plan.resend.push(k.clone());
            } else {
                plan.lost.push(k.clone());
            }
        }
        let mut reported = BTreeSet::new();
        for re in executors {
            let key = (
                id.clone(),
                re.framework_id.clone(),
                re.info.executor_id.clone(),
            );
            if !reported.insert(key.clone()) {
                return Err(format!("executor {} of {} is reported twice", key.2, key.1));
            }
            let charged = match self.executor(&key) {
                Some(e) => Some(e.info.resources),
                None if self.frameworks.contains_key(&key.1) => {
                    plan.executors_adopt.push(re.clone());
                    Some(re.info.resources)
                }
                None => {
                    plan.executors_kill.push((key.1.clone(), key.2.clone()));
                    None
                }
            };
            if let Some(r) = charged {
                plan.used = plan
                    .used
                    .checked_add(&r)
                    .ok_or("running executors' resources overflow")?;
            }
        }
        for key in self.executors_on(id) {
            if !reported.contains(&key) {
                plan.executors_lost.push(key);
            }
        }
        if !info.resources.contains(&plan.used) {
            return Err(format!(
                "running tasks and executors use {} but the agent has only {}",
                plan.used, info.resources
            ));
        }
        Ok(plan)
    }

    /// The status a task reported by a registering agent, unknown to the master, is adopted
    /// with.
    fn adopted_status(id: &AgentId, rt: &RunningTask) -> TaskStatus {
        Self::master_status(
            &rt.framework_id,
            &rt.task.task_id,
            Some(id.clone()),
            rt.state,
            None,
            "adopted when the agent registered".to_owned(),
        )
    }

    fn apply_register_plan(&mut self, id: &AgentId, plan: RegisterPlan) {
        self.make_reachable(id, &plan.reported, &plan.reported_ended, &plan.lost);
        for key in plan.lost {
            let killed = self
                .tasks
                .get(&key)
                .is_some_and(|t| t.kill_requested && t.reachable_state() == TaskState::Staging);
            if killed {
                // The launch and the kill were both lost in transit: the task never ran.
                let message = "killed before it reached the agent".to_owned();
                self.end_task(&key, id, TaskState::Killed, Reason::Killed, message);
            } else {
                let message = format!("agent {id} re-registered without the task");
                self.end_task(&key, id, TaskState::Lost, Reason::AgentRestarted, message);
            }
        }
        for key in plan.resend {
            if let Some(t) = self.tasks.get(&key) {
                tracing::info!(agent = %id, framework = %key.0, task = %key.1, "resending a launch lost in transit");
                let msg = Message::RunTask {
                    framework_id: key.0.clone(),
                    task: t.info.clone(),
                };
                self.send_to_agent(id, msg);
            }
        }
        for rt in plan.adopt {
            let status = Self::adopted_status(id, &rt);
            let mut task = rt.task;
            task.agent_id = id.clone();
            let key = (rt.framework_id.clone(), task.task_id.clone());
            let ended = rt.state.is_terminal();
            tracing::info!(agent = %id, framework = %key.0, task = %key.1, ended, "adopted task");
            let entry = TaskEntry {
                kill_requested: false,
                framework_id: rt.framework_id,
                info: task,
                status,
                reserved: Vec::new(),
                before_unreachable: None,
                restore_notice: None,
                recovered: false,
                unreachable_told: false,
                adopted_ended: ended,
                times: TaskTimes {
                    ended: ended.then_some(self.now),
                    ..Default::default()
                },
            };
            if !ended {
                self.hold_task(&entry);
            }
            self.tasks.insert(key, entry);
        }
        for (framework_id, task_id) in plan.kill {
            self.send_to_agent(
                id,
                Message::KillTask {
                    framework_id,
                    task_id,
                },
            );
        }
        for key in plan.executors_lost {
            self.remove_executor(&key);
            self.executor_gone(&key, true, format!("agent {id} re-registered without it"));
        }
        for re in plan.executors_adopt {
            tracing::info!(agent = %id, framework = %re.framework_id, executor = %re.info.executor_id, "adopted executor");
            self.add_executor(id, &re.framework_id, re.info, Vec::new());
        }
        for (framework_id, executor_id) in plan.executors_kill {
            self.send_to_agent(
                id,
                Message::KillExecutor {
                    framework_id,
                    executor_id,
                },
            );
        }
        debug_assert!(self.agents.get(id).is_none_or(|a| a.used == plan.used));
    }

    /// The agent is back: each of its TASK_UNREACHABLE tasks returns to the state the agent
    /// reports for it (`reported`), or else to the state it had before, and its framework is
    /// told (the restore notice), before the agent's own queued updates (which it resends once
    /// registered) follow. Two rules keep the framework's sequence free of repeats and
    /// regressions:
    /// - an agent update in the state the notice announced is not forwarded (the master
    ///   acknowledges it; see [`TaskEntry::restore_notice`]): UNREACHABLE → RUNNING, then the
    ///   agent's resent RUNNING, is seen as one RUNNING;
    /// - a task recovered after a master restart gets a notice only if a reconcile told its
    ///   framework TASK_UNREACHABLE meanwhile: otherwise the framework's view is the one from
    ///   before the restart, which the agent's updates (resent if unacknowledged) continue,
    ///   and a notice could only repeat a state it saw then;
    /// - such a task that the agent reports as ended (`ended`) gets no notice either: the
    ///   state to restore is only the master's guess (TASK_STAGING, "launched"), a step back,
    ///   and the task's terminal update is on its way. Meanwhile the master's books (and
    ///   reconcile) say TASK_STAGING, the agent being connected again. After a partition, the
    ///   state before it is real (the framework was told it), and an ended task returns to it
    ///   before its end follows.
    ///
    /// Tasks it does not report (`lost`) are left to the rest of the plan, which ends them.
    fn make_reachable(
        &mut self,
        id: &AgentId,
        reported: &BTreeMap<(FrameworkId, TaskId), TaskState>,
        ended: &BTreeSet<(FrameworkId, TaskId)>,
        lost: &[(FrameworkId, TaskId)],
    ) {
        let lost: BTreeSet<&(FrameworkId, TaskId)> = lost.iter().collect();
        let keys: Vec<((FrameworkId, TaskId), TaskState)> = self
            .tasks
            .iter()
            .filter(|(k, t)| t.info.agent_id == *id && !t.is_terminal() && !lost.contains(k))
            .filter_map(|(k, t)| t.before_unreachable.map(|before| (k.clone(), before)))
            .collect();
        for (key, before) in keys {
            let state = reported.get(&key).copied().unwrap_or(before);
            let (guessed, told) = self
                .tasks
                .get(&key)
                .map_or((false, false), |t| (t.recovered, t.unreachable_told));
            let status = Self::master_status(
                &key.0,
                &key.1,
                Some(id.clone()),
                state,
                None,
                format!("agent {id} re-registered: the task is reachable again"),
            );
            tracing::info!(agent = %id, framework = %key.0, task = %key.1, state = state.name(), "task reachable again");
            let notice = !guessed || (told && !ended.contains(&key));
            if self.set_status(&key, status.clone()) && notice {
                let connected = self
                    .frameworks
                    .get(&key.0)
                    .is_some_and(|f| f.conn.is_some());
                if connected {
                    if let Some(t) = self.tasks.get_mut(&key) {
                        t.restore_notice = Some(state);
                    }
                }
                self.send_to_framework(&key.0, Message::Update { status });
            }
        }
    }

    /// What the registry keeps of an agent.
    pub(super) fn agent_record(&self, id: &AgentId) -> Option<AgentRecord> {
        self.agents.get(id).map(|a| AgentRecord {
            id: id.clone(),
            info: AgentInfo {
                hostname: a.hostname.clone(),
                resources: a.total,
                reservations: a.reservations.clone(),
                attributes: a.attributes.clone(),
                datasets: a.datasets.clone(),
            },
            owner: a.owner.clone(),
        })
    }

    /// Recomputes which part of each of the agent's live tasks comes from a reservation, after
    /// a (re-)registration that may have changed its reservations: each task draws on its
    /// framework's role's reservation first (in task order), the rest is unreserved. The agent
    /// has no outstanding offers at this point.
    pub(super) fn rebuild_pools(&mut self, id: &AgentId) {
        let Some(a) = self.agents.get(id) else {
            return;
        };
        if a.reservations.is_empty() && a.reserved_used.is_empty() {
            return;
        }
        let reservations = a.reservations.clone();
        let mut used: std::collections::BTreeMap<String, Resources> = Default::default();
        let keys: Vec<(FrameworkId, TaskId)> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.info.agent_id == *id && !t.is_terminal())
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            let role = self.frameworks.get(&key.0).map(|f| f.info.role.clone());
            if let Some(t) = self.tasks.get_mut(&key) {
                t.reserved = draw_reservation(&reservations, &mut used, role, t.info.resources);
            }
        }
        for key in self.executors_on(id) {
            let role = self.frameworks.get(&key.1).map(|f| f.info.role.clone());
            if let Some(e) = self.executors.get_mut(&key) {
                e.reserved = draw_reservation(&reservations, &mut used, role, e.info.resources);
            }
        }
        used.retain(|_, r| !r.is_empty());
        if let Some(a) = self.agents.get_mut(id) {
            a.reserved_used = used;
        }
    }

    pub(super) fn on_status_update(&mut self, conn: ConnId, status: TaskStatus) {
        let Some(Binding::Agent(aid)) = self.binding(conn) else {
            return self.close(conn, "protocol violation: StatusUpdate before Register");
        };
        let key = (status.framework_id.clone(), status.task_id.clone());
        let on_this_agent = self.tasks.get(&key).is_some_and(|t| t.info.agent_id == aid);
        if let Some(elsewhere) = self
            .tasks
            .get(&key)
            .filter(|t| t.info.agent_id != aid)
            .map(|t| t.info.agent_id.clone())
        {
            // A forged report: the master placed this task on another agent.
            let principal = self
                .principal(conn)
                .map(|p| p.to_string())
                .unwrap_or_default();
            tracing::warn!(agent = %aid, %principal, framework = %key.0, task = %key.1, %elsewhere, "status update refused: task not placed on this agent");
            return self.error(
                conn,
                format!(
                    "status update refused: task {} of framework {} was not placed on agent \
                     {aid}",
                    key.1, key.0
                ),
            );
        }
        let framework_known = self.frameworks.contains_key(&key.0);
        let stale = on_this_agent
            && self
                .tasks
                .get(&key)
                .is_some_and(|t| t.is_stale(status.state));
        if stale {
            // A resent update older than what the framework was told (`TaskEntry::is_stale`):
            // not forwarded, and acknowledged here, since no framework will.
            tracing::debug!(agent = %aid, framework = %key.0, task = %key.1, state = status.state.name(), "stale update; acknowledged by the master");
        } else if on_this_agent {
            let mut st = status.clone();
            st.agent_id = Some(aid.clone());
            let notice = self
                .tasks
                .get_mut(&key)
                .and_then(|t| t.restore_notice.take());
            if framework_known && notice != Some(st.state) {
                // Connected: forwarded ahead of the registry change the update makes (a
                // terminal one's `EndTask`), so its write overlaps the update's way to the
                // framework. A restart that loses the change hears the update again: the agent
                // resends it until the framework acknowledges it. Disconnected: the agent
                // resends after it re-subscribes.
                self.send_to_framework(&key.0, Message::Update { status: st.clone() });
                self.set_status(&key, st);
                return;
            }
            self.set_status(&key, st.clone());
            if framework_known {
                // The framework was told this state already (the restore notice): no news.
                tracing::debug!(agent = %aid, framework = %key.0, task = %key.1, state = st.state.name(), "update repeats the restore notice; acknowledged by the master");
                if let Some(uuid) = status.uuid {
                    self.send(
                        conn,
                        Message::StatusUpdateAck {
                            framework_id: key.0,
                            task_id: key.1,
                            uuid,
                        },
                    );
                }
                return;
            }
            if self.tasks.get(&key).is_some_and(|t| t.is_terminal()) {
                self.complete_task(&key);
            }
        }
        // Stale, or an unknown task or framework: nobody will acknowledge, so the master does.
        if !stale {
            tracing::debug!(agent = %aid, framework = %key.0, task = %key.1, "acking orphan update");
        }
        if let Some(uuid) = status.uuid {
            self.send(
                conn,
                Message::StatusUpdateAck {
                    framework_id: key.0,
                    task_id: key.1,
                    uuid,
                },
            );
        }
    }

    // ----- life cycle -----

    /// Its connection went: rescinds its offers, makes its live tasks TASK_UNREACHABLE (they
    /// stay charged: they most likely still run) and starts the re-registration clock.
    pub(super) fn agent_disconnected(&mut self, aid: &AgentId) {
        self.rescind_agent_offers(aid);
        let now = self.now;
        let timeout = self.cfg.agent_reregister_timeout;
        // An agent that said it is leaving (a planned restart) is not partitioned: its tasks
        // keep their states until it re-registers or its re-registration timeout passes.
        let leaving = self.agents.get(aid).is_some_and(|a| a.leaving);
        let keys: Vec<(FrameworkId, TaskId)> = self
            .tasks
            .iter()
            .filter(|(_, t)| {
                !leaving
                    && t.info.agent_id == *aid
                    && !t.is_terminal()
                    && t.status.state != TaskState::Unreachable
            })
            .map(|(k, _)| k.clone())
            .collect();
        let secs = timeout.as_secs_f64();
        for key in keys {
            let Some(before) = self.tasks.get(&key).map(|t| t.status.state) else {
                continue;
            };
            let status = Self::master_status(
                &key.0,
                &key.1,
                Some(aid.clone()),
                TaskState::Unreachable,
                Some(Reason::AgentUnreachable),
                format!(
                    "agent {aid} disconnected; the task may still run there, and is TASK_GONE \
                     if the agent does not re-register within {secs} s"
                ),
            );
            if self.set_status(&key, status.clone()) {
                if let Some(t) = self.tasks.get_mut(&key) {
                    t.before_unreachable = Some(before);
                }
                self.send_to_framework(&key.0, Message::Update { status });
            }
        }
        if let Some(a) = self.agents.get_mut(aid) {
            a.conn = None;
            self.disconnected
                .entry(a.owner.clone())
                .or_default()
                .insert(aid.clone());
            // A zero timeout removes the agent at the next handle_timeout.
            let at = now.checked_add(timeout).unwrap_or(now);
            a.remove_at = Some(at);
            self.timers.set(Timer::AgentRemoval(aid.clone()), at);
            tracing::info!(agent = %aid, "agent disconnected");
        }
    }

    /// Removes an agent that did not re-register in time: its tasks are TASK_GONE (their
    /// resources freed); were it to come back, it would be told to shut down.
    pub(super) fn remove_agent(&mut self, aid: &AgentId) {
        let secs = self.cfg.agent_reregister_timeout.as_secs_f64();
        self.remove_agent_because(
            aid,
            Reason::AgentLost,
            format!(
                "agent {aid} did not re-register within {secs} s; it kills the task if it comes \
                 back"
            ),
        );
    }

    /// An agent registering afresh (no id) under the certificate name of agents that are
    /// disconnected has restarted without its state: their tasks cannot come back, so they end
    /// TASK_GONE now (reason `AgentRestarted`) instead of staying unreachable until the
    /// re-registration timeout.
    fn forget_restarted_agents(&mut self, name: &str) {
        let stale: Vec<AgentId> = self
            .disconnected
            .get(name)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default();
        for aid in stale {
            tracing::info!(agent = %aid, certificate = %name, "agent restarted afresh; its tasks are gone");
            self.remove_agent_because(
                &aid,
                Reason::AgentRestarted,
                format!("agent {aid} restarted without its tasks (registered afresh as {name:?})"),
            );
        }
    }

    /// Takes `aid` out of the disconnected index (connected again, or removed).
    fn mark_connected(&mut self, owner: &str, aid: &AgentId) {
        if let Some(ids) = self.disconnected.get_mut(owner) {
            ids.remove(aid);
            if ids.is_empty() {
                self.disconnected.remove(owner);
            }
        }
    }

    /// Removes an agent whose tasks are known to be gone (timeout, or the agent restarted
    /// afresh): its tasks end TASK_GONE with `reason`, its executors are dropped.
    pub(super) fn remove_agent_because(&mut self, aid: &AgentId, reason: Reason, message: String) {
        if self.agents.contains_key(aid) {
            self.persist(RegistryOp::RemoveAgent(aid.clone()));
        }
        self.rescind_agent_offers(aid);
        let keys: Vec<(FrameworkId, TaskId)> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.info.agent_id == *aid)
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.end_task(&key, aid, TaskState::Gone, reason.clone(), message.clone());
        }
        self.drop_agent_executors(aid, &message);
        self.ledger.refuse.clear_agent(aid);
        self.timers.stop(&Timer::AgentRemoval(aid.clone()));
        if let Some(a) = self.agents.remove(aid) {
            self.mark_connected(&a.owner, aid);
        }
        self.removed_agents.insert(aid.clone());
        self.heard_from(aid);
        tracing::info!(agent = %aid, "agent removed");
    }
}

/// The part of a charge of `r` by a framework of `role` (`None`: a framework that is gone)
/// drawn from that role's reservation, given what `used` says is already drawn from each
/// reservation (updated): as much as is left, the rest being unreserved.
fn draw_reservation(
    reservations: &[(String, Resources)],
    used: &mut std::collections::BTreeMap<String, Resources>,
    role: Option<String>,
    r: Resources,
) -> Vec<(String, Resources)> {
    let Some(role) = role else {
        return Vec::new();
    };
    let Some((_, reservation)) = reservations.iter().find(|(name, _)| *name == role) else {
        return Vec::new();
    };
    let u = used.entry(role.clone()).or_default();
    let take = r.min_each(&(*reservation - *u));
    if take.is_empty() {
        return Vec::new();
    }
    *u += take;
    vec![(role, take)]
}
