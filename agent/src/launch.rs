//! Where the protocol meets the executor: a [`TaskInfo`] becomes an executor [`TaskSpec`], and
//! the executor's answers ([`ExecEvent`], [`TaskOutcome`], [`ExecError`]) become the core's
//! [`Event`]s, [`Outcome`]s and [`Reason`]s. Likewise for framework executors: an
//! [`ExecutorInfo`] becomes an [`InstanceSpec`], a task launched into it an [`InstanceTask`],
//! and the instance's [`InstanceEvent`]s the core's [`ExecutorEvent`]s.
//!
//! The executor never imports `proto`, so that it can be run, tested and benchmarked on its
//! own; this module is the only place that knows both vocabularies.

use crate::core::{Event, ExecutorEvent, ExecutorRun, Outcome, TaskKey};
use crate::executor::{
    ExecError, ExecEvent, GuestTaskState, InstanceEvent, InstanceSpec, InstanceTask, TaskOutcome,
    TaskSpec, Termination,
};
use crate::workdir::WorkDir;
use proto::{ExecutorInfo, FrameworkId, Reason, TaskId, TaskInfo, TaskState};
use std::path::PathBuf;
use std::time::Duration;

/// The executor's module-cache key of a task's module: its digest in hex.
pub fn module_key(task: &TaskInfo) -> String {
    task.module.to_hex()
}

/// Whether a one-shot task gets a sandbox directory (its read-write `/`, with output files
/// beside it): when it has files to place, data sets to mount, or a disk share to write into.
/// A task with none of these (`resources.disk` of 0, no files, no data sets) has no file
/// system: nothing is created on disk for its launch and its output is kept in memory (see
/// `executor/output.rs`), which spares the agent's file system (four inodes a task on ext4)
/// on the launch path. Tasks built with `proto::task_builder` get a disk share by default.
pub fn needs_sandbox(task: &TaskInfo) -> bool {
    task.resources.disk > 0 || !task.files.is_empty() || !task.datasets.is_empty()
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
        sandbox: needs_sandbox(task),
        datasets: task
            .datasets
            .iter()
            .filter_map(|name| datasets.iter().find(|(n, _)| n == name).cloned())
            .collect(),
    }
}

/// What the runtime starts for executor `info` of framework `fid`: argv is the executor's name
/// then its args; the component and the executor's directory are where [`WorkDir`] puts them;
/// the envelope starts at the executor's own share; `task_datasets` (its first task's) are
/// looked up in the agent's `datasets`.
pub fn instance_spec(
    work_dir: &WorkDir,
    datasets: &[(String, PathBuf)],
    fid: &FrameworkId,
    info: &ExecutorInfo,
    task_datasets: &[String],
) -> InstanceSpec {
    let mut args = Vec::with_capacity(info.args.len() + 1);
    args.push(info.name.clone());
    args.extend(info.args.iter().cloned());
    InstanceSpec {
        digest: info.module.to_hex(),
        wasm_path: work_dir.blob(&info.module.to_hex()),
        args,
        env: info.env.clone(),
        dir: work_dir
            .executor(fid.as_str(), info.executor_id.as_str())
            .path()
            .to_owned(),
        cpus_milli: info.resources.cpus_milli,
        mem_bytes: info.resources.mem,
        disk_bytes: info.resources.disk,
        datasets: task_datasets
            .iter()
            .filter_map(|name| datasets.iter().find(|(n, _)| n == name).cloned())
            .collect(),
    }
}

/// A task as its executor receives it.
pub fn instance_task(task: &TaskInfo) -> InstanceTask {
    InstanceTask {
        task_id: task.task_id.0.clone(),
        name: task.name.clone(),
        args: task.args.clone(),
        env: task.env.clone(),
        data: task.data.clone(),
        cpus_milli: task.resources.cpus_milli,
        mem_bytes: task.resources.mem,
    }
}

/// The core's event for an instance's notification.
pub fn executor_event(id: &ExecutorRun, ev: InstanceEvent) -> Event {
    let id = id.clone();
    Event::Executor(match ev {
        InstanceEvent::Started => ExecutorEvent::Started { id },
        InstanceEvent::TaskUpdate {
            task_id,
            state,
            message,
        } => ExecutorEvent::TaskUpdate {
            id,
            task_id: TaskId::from(task_id.as_str()),
            state: match state {
                GuestTaskState::Running => TaskState::Running,
                GuestTaskState::Finished => TaskState::Finished,
                GuestTaskState::Failed => TaskState::Failed,
                GuestTaskState::Killed => TaskState::Killed,
            },
            message,
        },
        InstanceEvent::Message(data) => ExecutorEvent::Message { id, data },
        InstanceEvent::Exited(o) => ExecutorEvent::Exited {
            id,
            outcome: executor_outcome(o),
        },
    })
}

/// How an instance ended, in task terms; a non-zero exit carries the last line the executor
/// wrote to stderr (where the runtime records the error its run loop returned).
pub fn executor_outcome(o: TaskOutcome) -> Outcome {
    let mut out = outcome_of(o, None);
    if matches!(out.reason, Reason::ExitCode(c) if c != 0) {
        if let Some(line) = out.stderr_tail.lines().rev().find(|l| !l.trim().is_empty()) {
            out.message = format!("{}: {}", out.message, line.trim());
        }
    }
    out
}

/// The executor event for an instance that could not be started (`why` from preparation).
pub fn executor_start_failed(id: &ExecutorRun, (reason, message): (Reason, String)) -> Event {
    Event::Executor(ExecutorEvent::Exited {
        id: id.clone(),
        outcome: Outcome {
            state: TaskState::Failed,
            reason,
            message,
            stdout_tail: String::new(),
            stderr_tail: String::new(),
        },
    })
}

/// Why a module that was fetched could not be prepared: the executor refused it.
pub fn prepare_failed(e: ExecError) -> (Reason, String) {
    (Reason::ModuleInvalid, e.to_string())
}

/// Why a module that was fetched could not be prepared, as the runtime says: the executor
/// refused it (an invalid module), or the runtime could not be asked.
pub fn runtime_prepare_failed(e: crate::runtime::RuntimeError) -> (Reason, String) {
    match e {
        crate::runtime::RuntimeError::Prepare(m) => (Reason::ModuleInvalid, m),
        other => (Reason::AgentError, other.to_string()),
    }
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
        assert!(s.sandbox);
    }

    #[test]
    fn a_task_without_files_data_sets_or_disk_gets_no_sandbox() {
        let mut t = task();
        assert!(needs_sandbox(&t), "a disk share");
        t.resources.disk = 0;
        assert!(!needs_sandbox(&t));
        let s = spec(&WorkDir::new("/w"), &[], &FrameworkId::from("f1"), &t);
        assert!(!s.sandbox);
        t.datasets = vec!["logs".into()];
        assert!(needs_sandbox(&t));
        t.datasets.clear();
        t.files = vec![proto::TaskFile {
            path: "in.txt".into(),
            digest: Digest::of(b"f"),
        }];
        assert!(needs_sandbox(&t));
    }

    #[test]
    fn executor_specs_tasks_and_events_translate() {
        let w = WorkDir::new("/w");
        let info = ExecutorInfo {
            executor_id: proto::ExecutorId::from("e1"),
            name: "kv".into(),
            module: Digest::of(b"c"),
            resources: Resources::new(100, 16 << 20, 1 << 20),
            args: vec!["x".into()],
            env: vec![("K".into(), "V".into())],
            idle_timeout_ms: None,
            kill_grace_ms: None,
        };
        let sets = [("web".to_owned(), PathBuf::from("/srv/web"))];
        let s = instance_spec(
            &w,
            &sets,
            &FrameworkId::from("f1"),
            &info,
            &["web".to_owned()],
        );
        assert_eq!(
            s.wasm_path,
            Path::new("/w/blobs").join(info.module.to_hex())
        );
        assert_eq!(s.dir, Path::new("/w/frameworks/f1/executors/e1"));
        assert_eq!(s.args, ["kv", "x"]);
        assert_eq!(
            (s.cpus_milli, s.mem_bytes, s.disk_bytes),
            (100, 16 << 20, 1 << 20)
        );
        assert_eq!(s.datasets, [("web".to_owned(), PathBuf::from("/srv/web"))]);
        let mut t = task();
        t.data = b"q".to_vec();
        let it = instance_task(&t);
        assert_eq!(
            (it.task_id.as_str(), it.data.as_slice(), it.mem_bytes),
            ("t1", &b"q"[..], 64 << 20)
        );
        let id = ExecutorRun {
            framework_id: FrameworkId::from("f1"),
            executor_id: proto::ExecutorId::from("e1"),
            run: 3,
        };
        let ev = executor_event(
            &id,
            InstanceEvent::TaskUpdate {
                task_id: "t1".into(),
                state: GuestTaskState::Killed,
                message: "bye".into(),
            },
        );
        assert!(matches!(
            ev,
            Event::Executor(ExecutorEvent::TaskUpdate {
                state: TaskState::Killed,
                ..
            })
        ));
        let mut o = ended(Termination::Exited(1));
        o.stderr_tail = "log\nrun failed: no table\n".into();
        let out = executor_outcome(o);
        assert_eq!(out.message, "exited with code 1: run failed: no table");
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
