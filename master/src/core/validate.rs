//! Validation of the tasks in an accept: everything a task must be before the master charges
//! its resources and sends it to an agent (ids, paths, resources, and blobs of its own principal).

use super::{Master, TaskRejection};
use proto::{
    AgentId, BlobKind, Digest, ExecutorInfo, FrameworkId, Reason, Resources, TaskId, TaskInfo,
    MAX_TASK_DATA,
};
use std::collections::BTreeSet;

/// True for a sandbox path that is relative, non-empty and never climbs out (`..`).
fn valid_sandbox_path(path: &str) -> bool {
    if path.is_empty() || path.starts_with('/') || path.starts_with('\\') || path.contains('\0') {
        return false;
    }
    let mut normal = 0;
    for comp in path.split(['/', '\\']) {
        match comp {
            ".." => return false,
            "" | "." => {}
            c if c.contains(':') && normal == 0 => return false, // `C:` and friends
            _ => normal += 1,
        }
    }
    normal > 0
}

impl Master {
    /// Checks a task of an accept; `Ok(Some(executor))` when it starts a new executor on the
    /// agent, whose resources are then charged too (the offers must hold both).
    pub(super) fn validate_task(
        &self,
        fid: &FrameworkId,
        agent: &AgentId,
        task: &TaskInfo,
        remaining: &Resources,
        ids_in_call: &BTreeSet<TaskId>,
    ) -> Result<Option<ExecutorInfo>, TaskRejection> {
        let invalid = |m: String| Err((Reason::TaskInvalid, m));
        let tid = &task.task_id;
        if tid.0.is_empty() {
            return invalid("task id must not be empty".into());
        }
        if !proto::ids::is_safe_id(tid.as_str()) {
            // Agents name the task's directory after it, and refuse unsafe names.
            return invalid(format!(
                "task id {:?} must be 1 to 128 characters of [A-Za-z0-9._-], not . or ..",
                tid.as_str()
            ));
        }
        if ids_in_call.contains(tid) {
            return invalid(format!("task id {tid} is used twice in this accept"));
        }
        if self.tasks.contains_key(&(fid.clone(), tid.clone())) {
            return invalid(format!("task id {tid} is already in use by a live task"));
        }
        if task.agent_id != *agent {
            return invalid(format!(
                "task {tid} names agent {} but the offers are on agent {agent}",
                task.agent_id
            ));
        }
        if task.resources.cpus_milli == 0 || task.resources.mem == 0 {
            return invalid(format!(
                "task {tid} must ask for cpus > 0 and mem > 0, not {}",
                task.resources
            ));
        }
        let principal = self
            .frameworks
            .get(fid)
            .map(|f| f.principal.name.clone())
            .unwrap_or_default();
        let owned = |digest: &Digest| {
            self.blobs
                .get(digest)
                .filter(|b| b.owners.contains(&principal))
                .map(|b| b.kind)
        };
        match owned(&task.module) {
            Some(BlobKind::Module) => {}
            Some(BlobKind::File) => {
                return Err((
                    Reason::ModuleInvalid,
                    format!(
                        "module sha256:{} was uploaded as a file, not a module",
                        task.module.to_hex()
                    ),
                ))
            }
            None => {
                return Err((
                    Reason::ModuleInvalid,
                    format!(
                        "module sha256:{} has not been uploaded by principal {principal}",
                        task.module.to_hex()
                    ),
                ))
            }
        }
        let mut paths = BTreeSet::new();
        for f in &task.files {
            // The agent is stricter still (no leading `./`): refuse here what it would refuse.
            if !valid_sandbox_path(&f.path) || !proto::ids::is_safe_relative_path(&f.path) {
                return invalid(format!(
                    "file path {:?} must be non-empty, relative, without `..` and not start with `./`",
                    f.path
                ));
            }
            if !paths.insert(f.path.as_str()) {
                return invalid(format!("file path {:?} is given twice", f.path));
            }
            if owned(&f.digest).is_none() {
                return invalid(format!(
                    "file {:?} (sha256:{}) has not been uploaded by principal {principal}",
                    f.path,
                    f.digest.to_hex()
                ));
            }
        }
        if task.data.len() > MAX_TASK_DATA {
            return invalid(format!(
                "task {tid} carries {} bytes of data, at most {MAX_TASK_DATA}",
                task.data.len()
            ));
        }
        let holds = self.agents.get(agent).map(|a| &a.datasets);
        let mut sets = BTreeSet::new();
        for name in &task.datasets {
            if !sets.insert(name) {
                return invalid(format!("data set {name:?} is named twice"));
            }
            if !holds.is_some_and(|h| h.contains(name)) {
                return invalid(format!(
                    "task {tid} reads data set {name:?}, which agent {agent} does not hold"
                ));
            }
        }
        let new_executor = match &task.executor {
            None => None,
            Some(e) => self.validate_executor(fid, agent, task, e)?,
        };
        let need = task.resources
            + new_executor
                .as_ref()
                .map(|e| e.resources)
                .unwrap_or_default();
        if !remaining.contains(&need) {
            let what = match &new_executor {
                Some(e) => format!(
                    "{need} (its own {} and its new executor's {})",
                    task.resources, e.resources
                ),
                None => need.to_string(),
            };
            return invalid(format!(
                "task {tid} needs {what} but only {remaining} remain in the offers"
            ));
        }
        Ok(new_executor)
    }

    /// Checks the executor a task names; `Some` when it is new on the agent.
    fn validate_executor(
        &self,
        fid: &FrameworkId,
        agent: &AgentId,
        task: &TaskInfo,
        e: &ExecutorInfo,
    ) -> Result<Option<ExecutorInfo>, TaskRejection> {
        let invalid = |m: String| Err((Reason::TaskInvalid, m));
        let eid = &e.executor_id;
        if !proto::ids::is_safe_id(eid.as_str()) {
            return invalid(format!(
                "executor id {:?} must be 1 to 128 characters of [A-Za-z0-9._-], not . or ..",
                eid.as_str()
            ));
        }
        if e.module != task.module {
            return invalid(format!(
                "task {} names module sha256:{} but its executor {eid} runs sha256:{}",
                task.task_id,
                task.module.to_hex(),
                e.module.to_hex()
            ));
        }
        if e.resources.cpus_milli == 0 || e.resources.mem == 0 {
            return invalid(format!(
                "executor {eid} must ask for cpus > 0 and mem > 0, not {}",
                e.resources
            ));
        }
        let key = (agent.clone(), fid.clone(), eid.clone());
        match self.executor(&key) {
            None => Ok(Some(e.clone())),
            Some(running)
                if running.info.module == e.module && running.info.resources == e.resources =>
            {
                Ok(None)
            }
            Some(running) => invalid(format!(
                "executor {eid} already runs on agent {agent} as sha256:{} with {}; this task \
                 names sha256:{} with {}",
                running.info.module.to_hex(),
                running.info.resources,
                e.module.to_hex(),
                e.resources
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::valid_sandbox_path;

    #[test]
    fn sandbox_paths() {
        for ok in ["a", "a/b.txt", "./a", "dir/./x", "a..b"] {
            assert!(valid_sandbox_path(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/..",
            ".",
            "\\x",
            "C:x",
            "a\0b",
        ] {
            assert!(!valid_sandbox_path(bad), "{bad:?}");
        }
    }
}
