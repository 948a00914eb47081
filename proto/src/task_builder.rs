//! [`TaskBuilder`]: a [`TaskInfo`] with sensible defaults, placed on an offer's agent.
//!
//! It lives next to [`TaskInfo`] rather than in the SDK because it is pure data shaping: the
//! SDK re-exports it for schedulers, and the simulated schedulers of the virtual-time cluster
//! can use it without any I/O crate.

use crate::ids::{AgentId, Digest, TaskId};
use crate::messages::{ExecutorInfo, Offer, TaskFile, TaskInfo};
use crate::resources::Resources;
use std::time::Duration;

/// Disk a task built without one is charged, when its offer has that much disk: its sandbox
/// and output may hold this many bytes (the agent enforces it).
pub const DEFAULT_TASK_DISK: u64 = 64 << 20;

/// Builds a [`TaskInfo`] with sensible defaults (`argv[0]` = the task id, no env, no files).
#[derive(Clone, Debug)]
pub struct TaskBuilder {
    info: TaskInfo,
}

impl TaskBuilder {
    /// A task running `module`.
    pub fn new(task_id: &str, module: Digest) -> Self {
        Self {
            info: TaskInfo {
                max_cpu_ms: None,
                task_id: TaskId::from(task_id),
                name: task_id.to_owned(),
                agent_id: AgentId::from(""),
                resources: Resources::new(100, 32 << 20, 0),
                module,
                args: Vec::new(),
                env: Vec::new(),
                files: Vec::new(),
                timeout_ms: None,
                datasets: Vec::new(),
                executor: None,
                data: Vec::new(),
            },
        }
    }

    /// The share it runs in (default <0.1 cpus, 32 MiB>, and [`DEFAULT_TASK_DISK`] of disk if
    /// the offer has it; see [`TaskBuilder::build`]).
    pub fn resources(mut self, r: Resources) -> Self {
        self.info.resources = r;
        self
    }

    /// Arguments after `argv[0]`.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.info.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// One environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.info.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// A file placed at `path` in the sandbox.
    pub fn file(mut self, path: &str, digest: Digest) -> Self {
        self.info.files.push(TaskFile {
            path: path.to_owned(),
            digest,
        });
        self
    }

    /// A wall-clock limit.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.info.timeout_ms = Some(t.as_millis() as u64);
        self
    }

    /// Reads data set `name` of the agent, read-only at `/data/NAME`.
    pub fn dataset(mut self, name: &str) -> Self {
        self.info.datasets.push(name.to_owned());
        self
    }

    /// Runs inside `executor` (its module becomes the task's module).
    pub fn executor(mut self, executor: ExecutorInfo) -> Self {
        self.info.module = executor.module;
        self.info.executor = Some(executor);
        self
    }

    /// Opaque bytes for the executor ([`TaskInfo::data`]).
    pub fn data(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.info.data = data.into();
        self
    }

    /// The task, placed on the offer's agent. A task still asking for no disk gets
    /// [`DEFAULT_TASK_DISK`] when the offer has that much, so that disk is charged like cpus and
    /// memory; on an agent offering no disk it keeps 0, which the agent caps at its own default
    /// without charging it.
    pub fn build(mut self, offer: &Offer) -> TaskInfo {
        self.info.agent_id = offer.agent_id.clone();
        if self.info.resources.disk == 0 && offer.resources.disk >= DEFAULT_TASK_DISK {
            self.info.resources.disk = DEFAULT_TASK_DISK;
        }
        self.info
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{FrameworkId, OfferId};

    fn offer(agent: &str) -> Offer {
        Offer {
            id: OfferId::from("O1"),
            framework_id: FrameworkId::from("F1"),
            agent_id: AgentId::from(agent),
            hostname: "h1".into(),
            resources: Resources::new(1000, 1 << 30, 0),
            reserved_for: None,
            attributes: vec![],
            datasets: vec![],
        }
    }

    #[test]
    fn built_task_runs_on_the_offers_agent_with_what_was_set() {
        let module = Digest::of(b"module");
        let file = Digest::of(b"file");
        let task = TaskBuilder::new("t1", module)
            .resources(Resources::new(500, 64 << 20, 0))
            .args(["a", "b"])
            .env("K", "V")
            .file("in.txt", file)
            .timeout(Duration::from_secs(3))
            .build(&offer("A7"));
        assert_eq!(task.agent_id, AgentId::from("A7"));
        assert_eq!(task.task_id, TaskId::from("t1"));
        assert_eq!(task.name, "t1");
        assert_eq!(task.module, module);
        assert_eq!(task.resources, Resources::new(500, 64 << 20, 0));
        assert_eq!(task.args, vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(task.env, vec![("K".to_owned(), "V".to_owned())]);
        assert_eq!(
            task.files,
            vec![TaskFile {
                path: "in.txt".into(),
                digest: file
            }]
        );
        assert_eq!(task.timeout_ms, Some(3000));
        assert_eq!(task.max_cpu_ms, None);
    }

    #[test]
    fn defaults_are_a_tenth_of_a_cpu_and_32_mib_with_no_limits() {
        let task = TaskBuilder::new("t1", Digest::of(b"m")).build(&offer("A1"));
        assert_eq!(task.resources, Resources::new(100, 32 << 20, 0));
        assert!(task.args.is_empty() && task.env.is_empty() && task.files.is_empty());
        assert_eq!(task.timeout_ms, None);
    }

    #[test]
    fn no_disk_means_the_default_share_when_the_offer_has_disk() {
        let mut o = offer("A1");
        o.resources.disk = 1 << 30;
        let task = TaskBuilder::new("t1", Digest::of(b"m")).build(&o);
        assert_eq!(task.resources.disk, DEFAULT_TASK_DISK);
        let asked = TaskBuilder::new("t1", Digest::of(b"m"))
            .resources(Resources::new(100, 32 << 20, 5 << 20))
            .build(&o);
        assert_eq!(asked.resources.disk, 5 << 20);
        o.resources.disk = DEFAULT_TASK_DISK - 1;
        let task = TaskBuilder::new("t1", Digest::of(b"m")).build(&o);
        assert_eq!(task.resources.disk, 0);
    }
}
