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
//!
//! The guest side of the contract is the WIT package `wit/executor/world.wit`
//! (`tessera:executor@0.1.0`); guests are built with `wasm-examples/executor-sdk`.
//!
//! # Layout
//! - `mod.rs`: the interface (spec, task, events, handle) and [`Executor::start_instance`].
//! - `bindings.rs`: the host bindings `bindgen!` generates from the WIT world.
//! - `host.rs`: the store data and the host interface (event queue, paced and capped updates
//!   and messages, live-task books).
//! - `compile.rs`: executor components linked once per digest (compiled by the module cache).
//! - `run.rs`: one instance's run (store setup, envelope limits, kill, classification).
//! - `tests.rs`: the runtime's tests on real example executors.

mod bindings;
mod compile;
mod host;
mod run;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use self::host::{Delivery, MAX_QUEUED_MESSAGE_BYTES};
use self::run::{ExitGuard, Parts};
use super::{Executor, TaskOutcome};

pub(crate) use self::compile::Components;
pub use self::host::MAX_GUEST_MESSAGE;

/// Everything needed to start one executor instance.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// Drives a running instance. Cloneable; calls after the instance ended are ignored. When
/// every clone is dropped, the guest gets a shutdown event (nobody could drive it any more).
#[derive(Debug, Clone)]
pub struct InstanceHandle {
    inner: Arc<HandleInner>,
}

/// What the clones of a handle share with the running instance.
#[derive(Debug)]
struct HandleInner {
    /// Events for the guest, in order.
    events: mpsc::UnboundedSender<Delivery>,
    /// Message bytes queued and not yet taken by the guest.
    queued_bytes: Arc<AtomicU64>,
    /// Messages dropped because the guest did not take its events.
    dropped_messages: AtomicU64,
    /// The envelope's CPU share.
    cpus_milli: Arc<AtomicU64>,
    /// The envelope's memory cap.
    mem_bytes: Arc<AtomicU64>,
    /// Stops the instance.
    kill: watch::Sender<bool>,
}

impl InstanceHandle {
    /// Delivers a launch event for `task`.
    pub fn launch(&self, task: InstanceTask) {
        let _ = self.inner.events.send(Delivery::Launch(task));
    }

    /// Delivers a kill event for a task.
    pub fn kill_task(&self, task_id: &str) {
        let _ = self.inner.events.send(Delivery::Kill(task_id.to_owned()));
    }

    /// Delivers bytes from the scheduler. A guest that does not take its events cannot make
    /// the agent hold more than 16 MiB of its messages: beyond that they are dropped, with a
    /// counted warning.
    pub fn message(&self, data: Vec<u8>) {
        let len = data.len() as u64;
        let queued = self.inner.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if queued.saturating_add(len) > MAX_QUEUED_MESSAGE_BYTES {
            self.inner.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            let dropped = self.inner.dropped_messages.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                dropped,
                queued,
                "executor does not take its events: message from its scheduler dropped"
            );
            return;
        }
        if self.inner.events.send(Delivery::Message(data)).is_err() {
            self.inner.queued_bytes.fetch_sub(len, Ordering::Relaxed);
        }
    }

    /// Delivers the shutdown event: the guest should return from its run loop.
    pub fn shutdown(&self) {
        let _ = self.inner.events.send(Delivery::Shutdown);
    }

    /// Sets the envelope: the CPU pacing rate (from the guest's next fuel yield, about a
    /// millisecond) and the cap on further memory growth (from its next growth).
    pub fn set_envelope(&self, cpus_milli: u64, mem_bytes: u64) {
        self.inner.cpus_milli.store(cpus_milli, Ordering::Relaxed);
        self.inner.mem_bytes.store(mem_bytes, Ordering::Relaxed);
    }

    /// Stops the instance at once (its next fuel yield, or while it waits for an event): it
    /// ends with `Exited` of [`Termination::Killed`](super::Termination::Killed).
    pub fn kill(&self) {
        self.inner.kill.send_replace(true);
    }

    /// Messages from the scheduler dropped because the guest did not take its events.
    pub fn dropped_messages(&self) -> u64 {
        self.inner.dropped_messages.load(Ordering::Relaxed)
    }
}

impl Executor {
    /// Starts an executor instance on the current tokio runtime: `notify` gets
    /// [`InstanceEvent::Started`] once the component is instantiated and its run loop entered,
    /// the guest's events as they come, and [`InstanceEvent::Exited`] exactly once, last. Must
    /// not block. The component is compiled on first use of its digest, on tokio's blocking
    /// pool; events delivered before the instance is up wait in its queue.
    pub fn start_instance(
        &self,
        spec: InstanceSpec,
        notify: Box<dyn Fn(InstanceEvent) + Send + Sync>,
    ) -> InstanceHandle {
        let (events_tx, events) = mpsc::unbounded_channel();
        let (kill_tx, kill) = watch::channel(false);
        let queued_bytes = Arc::new(AtomicU64::new(0));
        let cpus_milli = Arc::new(AtomicU64::new(spec.cpus_milli));
        let mem_bytes = Arc::new(AtomicU64::new(spec.mem_bytes));
        let handle = InstanceHandle {
            inner: Arc::new(HandleInner {
                events: events_tx,
                queued_bytes: queued_bytes.clone(),
                dropped_messages: AtomicU64::new(0),
                cpus_milli: cpus_milli.clone(),
                mem_bytes: mem_bytes.clone(),
                kill: kill_tx,
            }),
        };
        let parts = Parts {
            events,
            queued_bytes,
            cpus_milli,
            mem_bytes,
            kill,
        };
        let notify: host::Notify = Arc::from(notify);
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let mut guard = ExitGuard::for_instance(notify.clone());
            let outcome = inner.run_instance(spec, parts, notify, &mut guard).await;
            guard.end(outcome);
        });
        handle
    }
}
