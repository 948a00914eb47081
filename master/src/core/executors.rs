//! Framework executors in the master's books: which executor runs where for whom, what it is
//! charged, and the relay of what passes between a scheduler and its executors.
//!
//! An executor is charged its own resources once per (agent, framework, executor id), at the
//! accept of the first task that names it there, on top of its tasks' (which are charged as any
//! task's). The charge lasts until the agent reports the executor ended (`ExecutorExited`), the
//! agent re-registers without it, or the agent is removed; tearing the framework down asks the
//! agent to stop it and the charge goes with the agent's report.
//!
//! Ownership is the key: a scheduler can message or stop only an executor its framework has on
//! that agent, and an agent can speak only for the executors the master placed on it. Framework
//! messages are delivered at most once (as in Mesos): one that cannot be delivered is dropped,
//! and the scheduler is told with an error.

use super::state::ExecutorEntry;
use super::{Binding, ConnId, Master};
use proto::{AgentId, ExecutorId, ExecutorInfo, FrameworkId, Message, MAX_FRAMEWORK_MESSAGE};

/// Names one executor instance: where, whose, which.
pub type ExecutorKey = (AgentId, FrameworkId, ExecutorId);

impl Master {
    /// The executor instance `key`, if the master placed one there.
    pub(super) fn executor(&self, key: &ExecutorKey) -> Option<&ExecutorEntry> {
        self.executors.get(key)
    }

    /// Books a new executor on `agent` for `fid`, charging its resources (drawn from the
    /// reserved pools in `reserved` first).
    pub(super) fn add_executor(
        &mut self,
        agent: &AgentId,
        fid: &FrameworkId,
        info: ExecutorInfo,
        reserved: Vec<(String, proto::Resources)>,
    ) {
        let key = (agent.clone(), fid.clone(), info.executor_id.clone());
        tracing::debug!(framework = %fid, executor = %info.executor_id, agent = %agent, "executor charged");
        self.hold(agent, fid, info.resources, &reserved);
        self.executors.insert(key, ExecutorEntry { info, reserved });
    }

    /// Forgets an executor and frees its charge; true if there was one.
    pub(super) fn remove_executor(&mut self, key: &ExecutorKey) -> bool {
        let Some(e) = self.executors.remove(key) else {
            return false;
        };
        self.release(&key.0, &key.1, e.info.resources, &e.reserved);
        self.schedule_allocation();
        true
    }

    /// The executors on `agent`, in key order.
    pub(super) fn executors_on(&self, agent: &AgentId) -> Vec<ExecutorKey> {
        self.executors
            .range(
                (
                    agent.clone(),
                    FrameworkId(String::new()),
                    ExecutorId(String::new()),
                )..,
            )
            .take_while(|(k, _)| k.0 == *agent)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The executors of framework `fid`, on any agent.
    pub(super) fn executors_of(&self, fid: &FrameworkId) -> Vec<ExecutorKey> {
        self.executors
            .keys()
            .filter(|k| k.1 == *fid)
            .cloned()
            .collect()
    }

    /// Tells a framework one of its executors is gone (at most once, unacknowledged).
    pub(super) fn executor_gone(&mut self, key: &ExecutorKey, failed: bool, message: String) {
        let (agent_id, framework_id, executor_id) = key.clone();
        self.send_to_framework(
            &key.1,
            Message::ExecutorExited {
                framework_id,
                agent_id,
                executor_id,
                failed,
                message,
            },
        );
    }

    /// Scheduler → executor bytes.
    pub(super) fn on_framework_message(
        &mut self,
        conn: ConnId,
        fid: &FrameworkId,
        agent_id: AgentId,
        executor_id: ExecutorId,
        data: Vec<u8>,
    ) {
        if data.len() > MAX_FRAMEWORK_MESSAGE {
            return self.error(
                conn,
                format!(
                    "message to executor {executor_id} refused: {} bytes, at most \
                     {MAX_FRAMEWORK_MESSAGE}; put bulk data in a blob",
                    data.len()
                ),
            );
        }
        let key = (agent_id, fid.clone(), executor_id);
        if self.executor(&key).is_none() {
            return self.error(
                conn,
                format!(
                    "message dropped: framework {fid} has no executor {} on agent {}",
                    key.2, key.0
                ),
            );
        }
        if !self.agents.get(&key.0).is_some_and(|a| a.is_connected()) {
            return self.error(
                conn,
                format!(
                    "message to executor {} dropped: agent {} is disconnected (framework \
                     messages are delivered at most once)",
                    key.2, key.0
                ),
            );
        }
        self.send_to_agent(
            &key.0,
            Message::ExecutorMessage {
                framework_id: key.1,
                executor_id: key.2,
                data,
            },
        );
    }

    /// Scheduler: stop one of its executors.
    pub(super) fn on_shutdown_executor(
        &mut self,
        conn: ConnId,
        fid: &FrameworkId,
        agent_id: AgentId,
        executor_id: ExecutorId,
    ) {
        let key = (agent_id, fid.clone(), executor_id);
        if self.executor(&key).is_none() {
            return self.error(
                conn,
                format!(
                    "shutdown refused: framework {fid} has no executor {} on agent {}",
                    key.2, key.0
                ),
            );
        }
        self.send_to_agent(
            &key.0,
            Message::KillExecutor {
                framework_id: key.1,
                executor_id: key.2,
            },
        );
    }

    /// Agent → scheduler bytes from an executor the master placed on that agent.
    pub(super) fn on_executor_message(
        &mut self,
        conn: ConnId,
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        data: Vec<u8>,
    ) {
        let Some(Binding::Agent(aid)) = self.binding(conn) else {
            return self.close(conn, "protocol violation: ExecutorMessage before Register");
        };
        let key = (aid, framework_id, executor_id);
        if data.len() > MAX_FRAMEWORK_MESSAGE {
            tracing::warn!(agent = %key.0, framework = %key.1, executor = %key.2, bytes = data.len(), "oversized executor message dropped");
            return self.error(
                conn,
                format!(
                    "executor message dropped: {} bytes, at most {MAX_FRAMEWORK_MESSAGE}",
                    data.len()
                ),
            );
        }
        if self.executor(&key).is_none() {
            tracing::warn!(agent = %key.0, framework = %key.1, executor = %key.2, "message from an executor not placed on this agent dropped");
            return;
        }
        self.send_to_framework(
            &key.1,
            Message::FrameworkMessage {
                agent_id: key.0,
                executor_id: key.2,
                data,
            },
        );
    }

    /// Agent: an executor ended. Frees its charge and tells its framework.
    pub(super) fn on_executor_exited(
        &mut self,
        conn: ConnId,
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        failed: bool,
        message: String,
    ) {
        let Some(Binding::Agent(aid)) = self.binding(conn) else {
            return self.close(conn, "protocol violation: ExecutorExited before Register");
        };
        let key = (aid, framework_id, executor_id);
        if !self.remove_executor(&key) {
            tracing::debug!(agent = %key.0, framework = %key.1, executor = %key.2, "exit of an unknown executor ignored");
            return;
        }
        tracing::info!(agent = %key.0, framework = %key.1, executor = %key.2, failed, %message, "executor exited");
        let message: String = message.chars().take(4096).collect();
        self.executor_gone(&key, failed, message);
    }

    /// A framework is torn down: its executors are told to stop. Like its tasks' shares, their
    /// charges stay until the agent reports them ended (or is removed, or re-registers without
    /// them), so their resources are not offered while the executors still hold them.
    pub(super) fn stop_framework_executors(&mut self, fid: &FrameworkId) {
        for key in self.executors_of(fid) {
            self.send_to_agent(
                &key.0,
                Message::KillExecutor {
                    framework_id: key.1.clone(),
                    executor_id: key.2.clone(),
                },
            );
        }
    }

    /// An agent is removed: its executors are gone; their frameworks are told.
    pub(super) fn drop_agent_executors(&mut self, aid: &AgentId, why: &str) {
        for key in self.executors_on(aid) {
            self.remove_executor(&key);
            self.executor_gone(&key, true, why.to_owned());
        }
    }
}
