//! Where the protocol meets the executor: a [`TaskInfo`] becomes an executor [`TaskSpec`], and
//! the executor's answers ([`ExecEvent`], [`TaskOutcome`], [`ExecError`]) become the core's
//! [`Event`]s, [`Outcome`]s and [`Reason`]s.
//!
//! The executor never imports `proto`, so that it can be run, tested and benchmarked on its
//! own; this module is the only place that knows both vocabularies.

use crate::core::{Event, Outcome, TaskKey};
use crate::executor::{ExecError, ExecEvent, TaskOutcome, TaskSpec, Termination};
use crate::workdir::WorkDir;
use proto::{FrameworkId, Reason, TaskInfo, TaskState};
use std::path::PathBuf;
use std::time::Duration;

/// The executor's module-cache key of a task's module: its digest in hex.
pub fn module_key(task: &TaskInfo) -> String {
    task.module.to_hex()
}

/// What the executor runs for `task` of framework `fid`: argv is the task's name then its
/// args; the module and task directory are where [`WorkDir`] puts them; the data sets it asks
/// for are looked up in the agent's `datasets` (the core has refused tasks naming others).
pub fn spec(
    work_dir: &WorkDir,
    datasets: &[(String, PathBuf)],
    fid: &FrameworkId,
    task: &TaskInfo,
) -> TaskSpec {
    let mut args = Vec::with_capacity(task.args.len() + 1);
    args.push(task.name.clone());
    args.extend(task.args.iter().cloned());
    TaskSpec {
        digest: module_key(task),
        wasm_path: work_dir.blob(&task.module.to_hex()),
        args,
        env: task.env.clone(),
        task_dir: work_dir
            .task(fid.as_str(), task.task_id.as_str())
            .path()
            .to_owned(),
        mem_bytes: task.resources.mem,
        cpus_milli: task.resources.cpus_milli,
        timeout: task.timeout_ms.map(Duration::from_millis),
        max_cpu: task.max_cpu_ms.map(Duration::from_millis),
        disk_bytes: task.resources.disk,
        datasets: task
            .datasets
            .iter()
            .filter_map(|name| datasets.iter().find(|(n, _)| n == name).cloned())
            .collect(),
    }
}

/// Why a module that was fetched could not be prepared: the executor refused it.
pub fn prepare_failed(e: ExecError) -> (Reason, String) {
    (Reason::ModuleInvalid, e.to_string())
}

/// The core's event for the executor's notification about task `key` (whose wall-clock
/// timeout, if any, was `timeout_ms`).
pub fn event_of(key: &TaskKey, ev: ExecEvent, timeout_ms: Option<u64>) -> Event {
    match ev {
        ExecEvent::Running => Event::Running { key: key.clone() },
        ExecEvent::Finished(outcome) => Event::Finished {
            key: key.clone(),
            outcome: outcome_of(outcome, timeout_ms),
        },
    }
}

/// Maps the executor's terms onto the protocol's.
pub fn outcome_of(o: TaskOutcome, timeout_ms: Option<u64>) -> Outcome {
    let (state, reason, message) = match o.termination {
        Termination::Exited(0) => (
            TaskState::Finished,
            Reason::ExitCode(0),
            "exited with code 0".to_owned(),
        ),
        Termination::Exited(code) => (
            TaskState::Failed,
            Reason::ExitCode(code),
            format!("exited with code {code}"),
        ),
        Termination::Trapped(m) => (TaskState::Failed, Reason::Trap(m.clone()), m),
        Termination::MemoryLimit(m) => (
            TaskState::Failed,
            Reason::MemoryLimit,
            format!("memory limit reached: {m}"),
        ),
        Termination::Timeout => (
            TaskState::Failed,
            Reason::Timeout,
            format!(
                "wall-clock timeout of {} ms reached",
                timeout_ms.unwrap_or(0)
            ),
        ),
        Termination::CpuLimit(m) => (
            TaskState::Failed,
            Reason::CpuLimit,
            format!("CPU limit reached: {m}"),
        ),
        Termination::DiskLimit(m) => (
            TaskState::Failed,
            Reason::DiskLimit,
            format!("disk limit reached: {m}"),
        ),
        Termination::Killed => (TaskState::Killed, Reason::Killed, "killed".to_owned()),
        Termination::StartFailed(m) => (TaskState::Failed, Reason::ModuleInvalid, m),
    };
    Outcome {
        state,
        reason,
        message,
        stdout_tail: o.stdout_tail,
        stderr_tail: o.stderr_tail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{AgentId, Digest, Resources, TaskId};
    use std::path::Path;

    fn task() -> TaskInfo {
        TaskInfo {
            data: Vec::new(),
            datasets: Vec::new(),
            executor: None,
            task_id: TaskId::from("t1"),
            name: "hello".into(),
            agent_id: AgentId::from("A1"),
            resources: Resources::new(250, 64 << 20, 1 << 20),
            module: Digest::of(b"m"),
            args: vec!["a".into(), "b".into()],
            env: vec![("K".into(), "V".into())],
            files: vec![],
            timeout_ms: Some(1500),
            max_cpu_ms: Some(20),
        }
    }

    #[test]
    fn spec_names_the_work_dir_paths_and_carries_the_share() {
        let w = WorkDir::new("/w");
        let t = task();
        let mut t = t;
        t.datasets = vec!["logs".into()];
        let sets = [
            ("web".to_owned(), PathBuf::from("/srv/web")),
            ("logs".to_owned(), PathBuf::from("/srv/logs")),
        ];
        let s = spec(&w, &sets, &FrameworkId::from("f1"), &t);
        let hex = t.module.to_hex();
        assert_eq!(s.digest, hex);
        assert_eq!(s.wasm_path, Path::new("/w/blobs").join(&hex));
        assert_eq!(s.task_dir, Path::new("/w/frameworks/f1/tasks/t1"));
        assert_eq!(s.args, ["hello", "a", "b"]);
        assert_eq!(s.env, [("K".to_owned(), "V".to_owned())]);
        assert_eq!(
            (s.mem_bytes, s.cpus_milli, s.disk_bytes),
            (64 << 20, 250, 1 << 20)
        );
        assert_eq!(s.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(s.max_cpu, Some(Duration::from_millis(20)));
        assert_eq!(
            s.datasets,
            [("logs".to_owned(), PathBuf::from("/srv/logs"))]
        );
    }

    fn ended(termination: Termination) -> TaskOutcome {
        TaskOutcome {
            termination,
            stdout_tail: "out".into(),
            stderr_tail: "err".into(),
            fuel_consumed: 0,
            wall: Duration::ZERO,
            cpu_paused: Duration::ZERO,
            cpu_time: Duration::ZERO,
        }
    }

    #[test]
    fn outcomes_map_to_states_and_reasons() {
        let o = outcome_of(ended(Termination::Exited(0)), None);
        assert_eq!(
            (o.state, o.reason),
            (TaskState::Finished, Reason::ExitCode(0))
        );
        assert_eq!(
            (o.stdout_tail.as_str(), o.stderr_tail.as_str()),
            ("out", "err")
        );
        let o = outcome_of(ended(Termination::Exited(3)), None);
        assert_eq!(
            (o.state, o.reason),
            (TaskState::Failed, Reason::ExitCode(3))
        );
        let o = outcome_of(ended(Termination::Timeout), Some(1500));
        assert_eq!((o.state, o.reason), (TaskState::Failed, Reason::Timeout));
        assert_eq!(o.message, "wall-clock timeout of 1500 ms reached");
        let o = outcome_of(ended(Termination::Killed), None);
        assert_eq!((o.state, o.reason), (TaskState::Killed, Reason::Killed));
        let o = outcome_of(ended(Termination::StartFailed("bad".into())), None);
        assert_eq!(
            (o.state, o.reason),
            (TaskState::Failed, Reason::ModuleInvalid)
        );
        let key = (FrameworkId::from("f1"), proto::TaskId::from("t1"));
        assert!(matches!(
            event_of(&key, ExecEvent::Running, None),
            Event::Running { key: k } if k == key
        ));
    }
}
