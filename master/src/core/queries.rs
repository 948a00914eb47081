//! Reads an operator or a framework asks of an agent through the master: a task's output
//! (as Mesos's `/files/read`) and the agent's metrics.
//!
//! The core decides who may read what and which agent to ask, sends
//! [`Message::AgentQuery`] on that agent's connection, and keeps the query pending under its
//! id until the agent's [`Message::AgentAnswer`] comes back. Every pending query is answered
//! exactly once, through [`Master::poll_answer`]: with the agent's answer; with
//! [`QueryError::AgentGone`] when the connection it was sent on closes; or with
//! [`QueryError::TimedOut`] after [`QUERY_TIMEOUT`] (one entry of the core's timer table
//! each). At most [`MAX_PENDING_QUERIES`] are outstanding; beyond, new ones are refused with
//! [`QueryError::Busy`]. Nothing here is persisted: a restarted master has no queries, and the
//! driver's reply handles die with the term that held them.
//!
//! Who may read: a task's output to [`Caller::may_view`] of its framework's principal (a task
//! whose framework is gone only to callers who see everything); an agent's metrics to
//! [`Caller::sees_all`]. A task id is looked up among live and recently completed tasks; task
//! ids are unique per framework only, so when several frameworks the caller may view have one
//! of that id and no framework is named, the read is refused as [`QueryError::Ambiguous`].

use super::timer::Timer;
use super::{ConnId, Master};
use crate::acl::Caller;
use proto::{AgentAnswer, AgentId, AgentQuery, FrameworkId, Message, OutputStream, TaskId};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// How long an agent has to answer a query.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Most queries outstanding at once, over all agents.
pub const MAX_PENDING_QUERIES: usize = 256;

/// Names one query: chosen by the core, echoed by the agent, returned by
/// [`Master::poll_answer`].
pub type QueryId = u64;

/// Why a query got no answer from an agent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The caller may not read this.
    #[error("not allowed: {0}")]
    NotAllowed(String),
    /// No such task is known (live or recently completed), or its agent no longer has it.
    #[error("no task {0}")]
    UnknownTask(String),
    /// Tasks of that id belong to several frameworks the caller may view: name the framework.
    #[error("task id {0} is used by several frameworks; name one")]
    Ambiguous(String),
    /// No such agent is registered.
    #[error("no agent {0}")]
    UnknownAgent(String),
    /// The agent is not connected, or its connection closed before it answered.
    #[error("agent {0} is not connected")]
    AgentGone(String),
    /// The agent did not answer within [`QUERY_TIMEOUT`].
    #[error("agent {0} did not answer in time")]
    TimedOut(String),
    /// [`MAX_PENDING_QUERIES`] are outstanding.
    #[error("too many reads are waiting for agents; try again")]
    Busy,
    /// The agent could not read what was asked (it says why).
    #[error("agent error: {0}")]
    Agent(String),
}

/// What a query came to: the agent's answer (never [`AgentAnswer::UnknownTask`] or
/// [`AgentAnswer::Failed`], which become errors) or why there is none.
pub type QueryResult = Result<AgentAnswer, QueryError>;

/// One query sent and not yet answered.
#[derive(Clone, Debug)]
struct Pending {
    /// The agent asked.
    agent: AgentId,
    /// The connection it was asked on.
    conn: ConnId,
    /// What was asked about, for error messages (a task id, or the agent id).
    about: String,
    /// For an output read: the task was live (not terminal) when asked, so an agent that does
    /// not know it yet (its launch still on the way) means "nothing written yet".
    task_live: bool,
}

/// The core's books of queries.
#[derive(Debug, Default)]
pub(super) struct Queries {
    next_id: QueryId,
    pending: BTreeMap<QueryId, Pending>,
    answers: VecDeque<(QueryId, QueryResult)>,
}

impl Queries {
    /// Whether `id` is outstanding.
    pub(super) fn is_pending(&self, id: QueryId) -> bool {
        self.pending.contains_key(&id)
    }
}

impl Master {
    /// Asks the agent running (or that ran) task `task_id` for a range of its output. Task
    /// ids are per framework: `framework` picks one when several frameworks have the id.
    /// `Ok(id)`: the answer comes later from [`Master::poll_answer`]; `Err`: refused now.
    pub fn query_output(
        &mut self,
        caller: &Caller,
        framework: Option<&FrameworkId>,
        task_id: &TaskId,
        stream: OutputStream,
        offset: u64,
        length: u32,
    ) -> Result<QueryId, QueryError> {
        // Every framework with a task of this id, and where it runs (live tasks first).
        let mut found: BTreeMap<FrameworkId, AgentId> = BTreeMap::new();
        match framework {
            Some(fid) => {
                let key = (fid.clone(), task_id.clone());
                if let Some(t) = self.tasks.get(&key) {
                    found.insert(fid.clone(), t.info.agent_id.clone());
                } else if let Some(t) = self.completed_task(fid, task_id) {
                    found.insert(fid.clone(), t.info.agent_id.clone());
                }
            }
            None => {
                for ((fid, tid), t) in &self.tasks {
                    if tid == task_id {
                        found.insert(fid.clone(), t.info.agent_id.clone());
                    }
                }
                for t in self.completed.iter().rev() {
                    if t.info.task_id == *task_id {
                        found
                            .entry(t.framework_id.clone())
                            .or_insert_with(|| t.info.agent_id.clone());
                    }
                }
            }
        }
        if found.is_empty() {
            return Err(QueryError::UnknownTask(task_id.to_string()));
        }
        let visible: Vec<(FrameworkId, AgentId)> = found
            .into_iter()
            .filter(|(fid, _)| match self.frameworks.get(fid) {
                Some(f) => caller.may_view(&f.principal.name),
                None => caller.sees_all(),
            })
            .collect();
        let (fid, agent) = match visible.as_slice() {
            [] => {
                return Err(QueryError::NotAllowed(format!(
                    "{caller} may not read the output of task {task_id}"
                )))
            }
            [one] => one.clone(),
            _ => return Err(QueryError::Ambiguous(task_id.to_string())),
        };
        let task_live = self
            .tasks
            .get(&(fid.clone(), task_id.clone()))
            .is_some_and(|t| !t.is_terminal());
        self.dispatch(
            agent,
            AgentQuery::Output {
                framework_id: fid,
                task_id: task_id.clone(),
                stream,
                offset,
                length: length.min(proto::MAX_OUTPUT_READ),
            },
            task_id.to_string(),
            task_live,
        )
    }

    /// Asks agent `agent_id` for its metrics (operators only). See [`Master::query_output`].
    pub fn query_agent_metrics(
        &mut self,
        caller: &Caller,
        agent_id: &AgentId,
    ) -> Result<QueryId, QueryError> {
        if !caller.sees_all() {
            return Err(QueryError::NotAllowed(format!(
                "{caller} may not read agents' metrics"
            )));
        }
        self.dispatch(
            agent_id.clone(),
            AgentQuery::Metrics,
            agent_id.to_string(),
            false,
        )
    }

    /// How many queries wait for their agents' answers.
    pub fn pending_queries(&self) -> usize {
        self.queries.pending.len()
    }

    /// The next answered query, in the order they were answered; `None` once drained. Drain
    /// it after every input, as [`Master::poll_action`].
    pub fn poll_answer(&mut self) -> Option<(QueryId, QueryResult)> {
        self.queries.answers.pop_front()
    }

    fn dispatch(
        &mut self,
        agent: AgentId,
        query: AgentQuery,
        about: String,
        task_live: bool,
    ) -> Result<QueryId, QueryError> {
        if self.queries.pending.len() >= MAX_PENDING_QUERIES {
            return Err(QueryError::Busy);
        }
        let Some(entry) = self.agents.get(&agent) else {
            return Err(QueryError::UnknownAgent(agent.to_string()));
        };
        let Some(conn) = entry.conn else {
            return Err(QueryError::AgentGone(agent.to_string()));
        };
        self.queries.next_id += 1;
        let id = self.queries.next_id;
        self.queries.pending.insert(
            id,
            Pending {
                agent,
                conn,
                about,
                task_live,
            },
        );
        self.timers.set(Timer::Query(id), self.now + QUERY_TIMEOUT);
        self.send(
            conn,
            Message::AgentQuery {
                request_id: id,
                query,
            },
        );
        Ok(id)
    }

    /// An agent answered query `request_id` on `conn` (ignored unless it was asked there).
    pub(super) fn on_agent_answer(
        &mut self,
        conn: ConnId,
        request_id: QueryId,
        answer: AgentAnswer,
    ) {
        if self
            .queries
            .pending
            .get(&request_id)
            .is_none_or(|p| p.conn != conn)
        {
            tracing::debug!(conn, request_id, "answer to no pending query ignored");
            return;
        }
        let p = self
            .queries
            .pending
            .remove(&request_id)
            .expect("checked above");
        self.timers.stop(&Timer::Query(request_id));
        let result = match answer {
            AgentAnswer::UnknownTask if p.task_live => Ok(AgentAnswer::Output {
                data: Vec::new(),
                size: 0,
                ended: false,
            }),
            AgentAnswer::UnknownTask => Err(QueryError::UnknownTask(format!(
                "{} on agent {} (its sandbox is gone)",
                p.about, p.agent
            ))),
            AgentAnswer::Failed { message } => Err(QueryError::Agent(message)),
            ok => Ok(ok),
        };
        self.queries.answers.push_back((request_id, result));
    }

    /// Query `id` timed out.
    pub(super) fn query_timed_out(&mut self, id: QueryId) {
        if let Some(p) = self.queries.pending.remove(&id) {
            self.queries
                .answers
                .push_back((id, Err(QueryError::TimedOut(p.agent.to_string()))));
        }
    }

    /// Connection `conn` is gone: the queries sent on it will not be answered.
    pub(super) fn fail_queries_on(&mut self, conn: ConnId) {
        let gone: Vec<QueryId> = self
            .queries
            .pending
            .iter()
            .filter(|(_, p)| p.conn == conn)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(p) = self.queries.pending.remove(&id) {
                self.timers.stop(&Timer::Query(id));
                self.queries
                    .answers
                    .push_back((id, Err(QueryError::AgentGone(p.agent.to_string()))));
            }
        }
    }
}
