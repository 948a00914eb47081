//! Long-lived executor instances: a framework's WASI 0.2 component of the `tessera:executor`
//! world, kept running on the agent across the tasks launched into it.
//!
//! Like the one-shot runs of [`Executor::launch`], an instance knows nothing of the protocol:
//! it takes an [`InstanceSpec`] of plain paths and numbers, is driven through an
//! [`InstanceHandle`] (launch, kill, message, shutdown, envelope changes, forced stop) and
//! reports [`InstanceEvent`]s; `crate::launch` and the agent core translate both ways.
//!
//! The envelope (CPU pacing rate and memory cap) starts at the executor's own share and is set
//! by the agent as tasks come and go ([`InstanceHandle::set_envelope`]): growth is checked
//! against the current envelope; memory a guest already holds is never taken back (wasm
//! memories cannot shrink), a smaller envelope only refuses later growth.

use std::path::PathBuf;

use super::{Executor, TaskOutcome};

/// Everything needed to start one executor instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSpec {
    /// Content digest of the component; the module cache key.
    pub digest: String,
    /// Where the component's bytes are.
    pub wasm_path: PathBuf,
    /// Full argv; `args[0]` is conventionally the executor's name.
    pub args: Vec<String>,
    /// The guest's entire environment.
    pub env: Vec<(String, String)>,
    /// The executor's directory: `sandbox/` (created if missing) becomes the guest's `/`;
    /// `stdout` and `stderr` are written next to it.
    pub dir: PathBuf,
    /// Initial CPU share (1000 = one core): the executor's own.
    pub cpus_milli: u64,
    /// Initial memory cap: the executor's own.
    pub mem_bytes: u64,
    /// Cap on the sandbox's disk use; 0 means the executor config's default.
    pub disk_bytes: u64,
    /// Data sets as `(name, host directory)`, each preopened read-only at `/data/<name>`.
    pub datasets: Vec<(String, PathBuf)>,
}

/// A task handed to a running instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceTask {
    /// The task's id (unique within the framework).
    pub task_id: String,
    /// Its name.
    pub name: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its environment variables.
    pub env: Vec<(String, String)>,
    /// Opaque bytes from the scheduler.
    pub data: Vec<u8>,
    /// Its CPU share (already added to the envelope by the caller).
    pub cpus_milli: u64,
    /// Its memory share (already added to the envelope by the caller).
    pub mem_bytes: u64,
}

/// The task states an executor may report for its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestTaskState {
    /// The task's work has started.
    Running,
    /// The task succeeded.
    Finished,
    /// The task failed.
    Failed,
    /// The task was killed (in answer to a kill).
    Killed,
}

/// What an instance reports, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceEvent {
    /// The instance is up and its run loop started (sent at most once, first).
    Started,
    /// The executor reported a task's state.
    TaskUpdate {
        /// The task.
        task_id: String,
        /// Its new state.
        state: GuestTaskState,
        /// The executor's explanation.
        message: String,
    },
    /// The executor sent bytes to its scheduler.
    Message(Vec<u8>),
    /// The instance is over (sent exactly once, always last): returned from its run loop
    /// (`Exited(0)`, or the error it returned as `Exited(1)` with the message in the tails),
    /// trapped, hit its envelope, was killed, or never started.
    Exited(TaskOutcome),
}

/// Drives a running instance. Cloneable; calls after the instance ended are ignored.
#[derive(Debug, Clone)]
pub struct InstanceHandle {
    _private: (),
}

impl InstanceHandle {
    /// Delivers a launch event for `task`.
    pub fn launch(&self, _task: InstanceTask) {
        unimplemented!("executor instances are being built")
    }

    /// Delivers a kill event for a task.
    pub fn kill_task(&self, _task_id: &str) {
        unimplemented!("executor instances are being built")
    }

    /// Delivers bytes from the scheduler.
    pub fn message(&self, _data: Vec<u8>) {
        unimplemented!("executor instances are being built")
    }

    /// Delivers the shutdown event: the guest should return from its run loop.
    pub fn shutdown(&self) {
        unimplemented!("executor instances are being built")
    }

    /// Sets the envelope: the CPU pacing rate and the cap on further memory growth.
    pub fn set_envelope(&self, _cpus_milli: u64, _mem_bytes: u64) {
        unimplemented!("executor instances are being built")
    }

    /// Stops the instance at once (its next fuel yield, or while it waits for an event): it
    /// ends with `Exited` of [`Termination::Killed`](super::Termination::Killed).
    pub fn kill(&self) {
        unimplemented!("executor instances are being built")
    }
}

impl Executor {
    /// Starts an executor instance on the current tokio runtime: `notify` gets
    /// [`InstanceEvent::Started`] once the component is instantiated and its run loop entered,
    /// the guest's events as they come, and [`InstanceEvent::Exited`] exactly once, last. Must
    /// not block.
    pub fn start_instance(
        &self,
        _spec: InstanceSpec,
        _notify: Box<dyn Fn(InstanceEvent) + Send + Sync>,
    ) -> InstanceHandle {
        unimplemented!("executor instances are being built")
    }
}
