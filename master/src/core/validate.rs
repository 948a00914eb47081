//! Validation of the tasks in an accept: everything a task must be before the master charges
//! its resources and sends it to an agent (ids, paths, resources, and blobs of its own principal).

use super::{Master, TaskRejection};
use proto::{AgentId, BlobKind, Digest, FrameworkId, Reason, Resources, TaskId, TaskInfo};
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
    pub(super) fn validate_task(
        &self,
        fid: &FrameworkId,
        agent: &AgentId,
        task: &TaskInfo,
        remaining: &Resources,
        ids_in_call: &BTreeSet<TaskId>,
    ) -> Result<(), TaskRejection> {
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
        if !remaining.contains(&task.resources) {
            return invalid(format!(
                "task {tid} needs {} but only {remaining} remain in the offers",
                task.resources
            ));
        }
        Ok(())
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
