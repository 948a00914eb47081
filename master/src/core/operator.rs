//! Requests of the operator surface that act on the books: an operator's or a task owner's kill
//! through HTTP (`tessera kill`). Who may do what is [`Caller`]'s to say; this finds the task
//! and acts as a framework's own `Kill` would.

use super::Master;
use crate::acl::Caller;
use proto::{FrameworkId, TaskId};

/// Why an operator request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OperatorError {
    /// No live or recently ended task has that id (in that framework, when one was named).
    #[error("no task {0}")]
    UnknownTask(TaskId),
    /// Several frameworks the caller can see have a live task of that id: it must name one.
    #[error("task {task} exists in several frameworks ({}); name one", frameworks.join(", "))]
    Ambiguous {
        /// The task id asked for.
        task: TaskId,
        /// The frameworks having it.
        frameworks: Vec<String>,
    },
    /// The caller may not act on that framework's tasks.
    #[error("{caller} may not kill task {task}: it belongs to framework {framework} of principal {principal}")]
    NotAllowed {
        /// Who asked.
        caller: String,
        /// The task.
        task: TaskId,
        /// Its framework.
        framework: FrameworkId,
        /// The framework's principal.
        principal: String,
    },
    /// The task already ended.
    #[error("task {task} already ended ({state})")]
    Ended {
        /// The task.
        task: TaskId,
        /// Its terminal state.
        state: &'static str,
    },
}

impl Master {
    /// Kills task `task` (of `framework`, or of the only framework having a live task of that
    /// id) on behalf of `caller`: its framework's principal or an operator. Returns the task's
    /// framework; the kill goes out with the next actions. Asking again while the kill is under
    /// way is not an error.
    pub fn operator_kill(
        &mut self,
        caller: &Caller,
        framework: Option<&FrameworkId>,
        task: &TaskId,
    ) -> Result<FrameworkId, OperatorError> {
        let live: Vec<FrameworkId> = self
            .tasks
            .keys()
            .filter(|(f, t)| t == task && framework.is_none_or(|want| want == f))
            .map(|(f, _)| f.clone())
            .collect();
        // A tenant names its own task by id alone even where other tenants' tasks share it.
        let visible: Vec<FrameworkId> = live
            .iter()
            .filter(|f| self.may_view(caller, f))
            .cloned()
            .collect();
        let fid = match (visible.as_slice(), live.first()) {
            ([one], _) => one.clone(),
            ([], Some(hidden)) => return Err(self.not_allowed(caller, task, hidden)),
            ([], None) => {
                let ended = self.completed.iter().rev().find(|t| {
                    t.info.task_id == *task && framework.is_none_or(|want| *want == t.framework_id)
                });
                return Err(match ended {
                    Some(t) if self.may_kill(caller, &t.framework_id) => OperatorError::Ended {
                        task: task.clone(),
                        state: t.status.state.name(),
                    },
                    Some(t) => self.not_allowed(caller, task, &t.framework_id),
                    None => OperatorError::UnknownTask(task.clone()),
                });
            }
            _ => {
                return Err(OperatorError::Ambiguous {
                    task: task.clone(),
                    frameworks: visible.iter().map(|f| f.to_string()).collect(),
                })
            }
        };
        if !self.may_kill(caller, &fid) {
            return Err(self.not_allowed(caller, task, &fid));
        }
        let key = (fid.clone(), task.clone());
        let entry = &self.tasks[&key];
        if entry.is_terminal() {
            return Err(OperatorError::Ended {
                task: task.clone(),
                state: entry.status.state.name(),
            });
        }
        if !entry.kill_requested {
            tracing::info!(%caller, framework = %fid, task = %task, "kill requested through the operator surface");
            self.request_kill(key);
        }
        Ok(fid)
    }

    /// The principal that subscribed framework `fid` (`None` once the framework is gone).
    pub fn framework_principal(&self, fid: &FrameworkId) -> Option<&str> {
        self.frameworks.get(fid).map(|f| f.principal.name.as_str())
    }

    fn may_kill(&self, caller: &Caller, fid: &FrameworkId) -> bool {
        match self.framework_principal(fid) {
            Some(p) => caller.may_kill(p),
            // A framework already removed: only those who see everything.
            None => caller.sees_all() && caller.may_kill(""),
        }
    }

    fn may_view(&self, caller: &Caller, fid: &FrameworkId) -> bool {
        match self.framework_principal(fid) {
            Some(p) => caller.may_view(p),
            None => caller.sees_all(),
        }
    }

    fn not_allowed(&self, caller: &Caller, task: &TaskId, fid: &FrameworkId) -> OperatorError {
        OperatorError::NotAllowed {
            caller: caller.to_string(),
            task: task.clone(),
            framework: fid.clone(),
            principal: self.framework_principal(fid).unwrap_or("?").to_owned(),
        }
    }
}
