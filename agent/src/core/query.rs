//! Questions the master relays to this agent for operators and frameworks (task output reads,
//! metrics): the core decides what is read and what the answer says about the task; the driver
//! reads the files (or renders the metrics) and sends [`proto::Message::AgentAnswer`].
//!
//! A task's output is in its own directory (`frameworks/<fid>/tasks/<tid>/stdout|stderr`),
//! or, for a task run inside an executor, in the executor instance's (one stream shared by its
//! tasks). A task the core still tracks is read with `ended` = whether its guest stopped; one
//! it has forgotten (ended and acknowledged) is read from its task directory with
//! `ended = true`, which answers [`AgentAnswer::UnknownTask`] once that directory has been
//! collected (or never existed).

use super::{Action, Agent, GcTarget, Phase};
use proto::{AgentAnswer, AgentQuery, Message, OutputStream};

/// What the driver must do for one query (see [`Action::Query`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryWork {
    /// Read `length` bytes at `offset` of `stream` in `dir`'s output files and answer
    /// [`AgentAnswer::Output`] with `ended` (or [`AgentAnswer::UnknownTask`] when the file is
    /// not there).
    ReadOutput {
        /// Whose directory holds the files.
        dir: GcTarget,
        /// Which stream.
        stream: OutputStream,
        /// Where to start.
        offset: u64,
        /// How much at most (already capped to [`proto::MAX_OUTPUT_READ`]).
        length: u32,
        /// Whether the task has ended (no more output will come for it).
        ended: bool,
    },
    /// Render the agent's metrics and answer [`AgentAnswer::Metrics`].
    Metrics,
}

impl Agent {
    /// Decides how to answer a [`Message::AgentQuery`].
    pub(super) fn on_query(&mut self, request_id: u64, query: AgentQuery) {
        let work = match query {
            AgentQuery::Metrics => QueryWork::Metrics,
            AgentQuery::Output {
                framework_id,
                task_id,
                stream,
                offset,
                length,
            } => {
                if !proto::ids::is_safe_id(framework_id.as_str())
                    || !proto::ids::is_safe_id(task_id.as_str())
                {
                    self.actions.push_back(Action::Send(Message::AgentAnswer {
                        request_id,
                        answer: AgentAnswer::UnknownTask,
                    }));
                    return;
                }
                let length = length.min(proto::MAX_OUTPUT_READ);
                let key = (framework_id, task_id);
                let (dir, ended) = match self.tasks.get(&key) {
                    Some(t) => {
                        let dir = match &t.info.executor {
                            Some(e) => GcTarget::Executor {
                                framework_id: key.0.clone(),
                                executor_id: e.executor_id.clone(),
                            },
                            None => GcTarget::Task {
                                framework_id: key.0.clone(),
                                task_id: key.1.clone(),
                            },
                        };
                        (dir, t.phase == Phase::Done || t.state.is_terminal())
                    }
                    None => (
                        GcTarget::Task {
                            framework_id: key.0,
                            task_id: key.1,
                        },
                        true,
                    ),
                };
                QueryWork::ReadOutput {
                    dir,
                    stream,
                    offset,
                    length,
                    ended,
                }
            }
        };
        self.actions.push_back(Action::Query { request_id, work });
    }
}

impl Agent {
    /// How many tasks' guests run now (TASK_RUNNING), for the metrics.
    pub fn running_tasks(&self) -> usize {
        self.tasks
            .values()
            .filter(|t| t.state == proto::TaskState::Running)
            .count()
    }
}
