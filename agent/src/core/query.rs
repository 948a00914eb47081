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

#[cfg(test)]
mod tests {
    use super::super::tests::{drain, fid, registered, task};
    use super::*;
    use crate::core::{Event, Outcome};
    use proto::resources::GIB;
    use proto::{Reason, TaskId, TaskState};
    use std::time::Instant;

    fn ask(a: &mut Agent, now: Instant, request_id: u64, task_id: &str) -> Vec<Action> {
        a.handle(
            now,
            Event::Message(Message::AgentQuery {
                request_id,
                query: AgentQuery::Output {
                    framework_id: fid(),
                    task_id: TaskId::from(task_id),
                    stream: OutputStream::Stderr,
                    offset: 5,
                    length: u32::MAX,
                },
            }),
        );
        drain(a)
    }

    fn read_work(dir_task: &str, ended: bool) -> QueryWork {
        QueryWork::ReadOutput {
            dir: GcTarget::Task {
                framework_id: fid(),
                task_id: TaskId::from(dir_task),
            },
            stream: OutputStream::Stderr,
            offset: 5,
            length: proto::MAX_OUTPUT_READ,
            ended,
        }
    }

    #[test]
    fn reads_say_whether_the_task_ended_and_refuse_unsafe_ids() {
        let t0 = Instant::now();
        let mut a = registered(t0);
        a.handle(
            t0,
            Event::Message(Message::RunTask {
                framework_id: fid(),
                task: task("t1", 1000, GIB),
            }),
        );
        drain(&mut a);
        let generation = a.generation();
        assert_eq!(
            ask(&mut a, t0, 1, "t1"),
            vec![Action::Query {
                request_id: 1,
                work: read_work("t1", false)
            }]
        );
        assert_eq!(
            a.generation(),
            generation,
            "a read changes nothing to persist"
        );
        a.handle(
            t0,
            Event::Prepared {
                key: (fid(), "t1".into()),
                result: Ok(()),
            },
        );
        a.handle(
            t0,
            Event::Running {
                key: (fid(), "t1".into()),
            },
        );
        assert_eq!(a.running_tasks(), 1);
        a.handle(
            t0,
            Event::Finished {
                key: (fid(), "t1".into()),
                outcome: Outcome {
                    state: TaskState::Finished,
                    reason: Reason::ExitCode(0),
                    message: String::new(),
                    stdout_tail: String::new(),
                    stderr_tail: String::new(),
                },
            },
        );
        drain(&mut a);
        assert_eq!(a.running_tasks(), 0);
        assert_eq!(
            ask(&mut a, t0, 2, "t1"),
            vec![Action::Query {
                request_id: 2,
                work: read_work("t1", true)
            }]
        );
        // Never seen here: its directory is tried, as an ended task's.
        assert_eq!(
            ask(&mut a, t0, 3, "other"),
            vec![Action::Query {
                request_id: 3,
                work: read_work("other", true)
            }]
        );
        assert_eq!(
            ask(&mut a, t0, 4, "../escape"),
            vec![Action::Send(Message::AgentAnswer {
                request_id: 4,
                answer: AgentAnswer::UnknownTask
            })]
        );
    }
}
