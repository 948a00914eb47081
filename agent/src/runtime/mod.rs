//! Where guests run: the agent's handle on its guests, either in the agent's own process or in
//! a separate *runtime process* that outlives the agent, so that an agent restart (clean or
//! `kill -9`) does not kill its tasks and executors (as Mesos agents reconnect to their
//! executors and Nomad clients reattach to their task drivers).
//!
//! The agent names each guest with a [`GuestId`] of its choosing, stable across its restarts
//! (derived from the task key or the executor run). Every event a guest reports is numbered
//! ([`RuntimeEvent::seq`], one sequence per runtime process, across agent attachments) and
//! kept in the runtime's outbox until the agent acknowledges it ([`Runtime::ack`]) after
//! recording its effects durably. On each attachment the runtime replays the unacknowledged
//! tail, in order, then sends live events: nothing a guest reports is lost between it and a
//! (re)attached agent, and the agent skips what its checkpoint already covers by `seq`. The
//! outbox never drops terminal events (`Finished`, `Exited`) nor task updates; only
//! guest-to-scheduler messages beyond [`MAX_OUTBOX_MESSAGE_BYTES`] unacknowledged are dropped,
//! with a counted warning, and an executor instance that keeps adding updates to an outbox
//! past [`MAX_OUTBOX_BYTES`] is killed (so the runtime's memory stays bounded). The agent
//! should therefore ack as soon as it has recorded events.
//!
//! [`Attachment::runtime_id`] names the runtime process's life: a different id than the one
//! the agent checkpointed means the old runtime died, and its guests with it.
//!
//! # Recovering with it
//! An agent checkpoints, with its own state, the `runtime_id` it ran on and the `seq` of the
//! last event whose effects the checkpoint holds; it acks that `seq` once the checkpoint is on
//! disk. At start it attaches and compares runtime ids:
//! - the same: its guests kept running; it skips the replayed events up to its checkpoint's
//!   `seq` and applies the rest; every guest it knows is either in [`Attachment::live`] or
//!   ended (its end in the checkpoint or in the replay up to [`Attachment::last_seq`]); one
//!   that is neither never reached the runtime; likewise, a task launched into a live
//!   instance that [`Attachment::instance_tasks`] does not list (and that has not ended)
//!   never reached it, and is launched again;
//! - another: the old runtime died with every guest; their tasks are reported failed, once.
//!
//! [`Events`] ending while attached means the runtime process died, with its guests (or a
//! newer agent attached in this one's place).
//!
//! The runtime process must outlive the agent in the service manager too: under systemd,
//! `KillMode=process` for the agent's unit (as for Mesos agents), or the runtime, in the same
//! cgroup, is stopped with it. It keeps the executor config it started with until it exits.
//!
//! # Modes
//! ```text
//!  agent ── Runtime ──(in process)─────────────────────────── Host ── Executor ── guests
//!              └──(Unix socket, wire.rs)── runtime process: serve ── Host ── Executor ── guests
//!                   requests ▶   ◀ Welcome(Attachment), replayed + live Events, Prepared
//! ```
//! - [`Runtime::in_process`]: guests in the agent's process (tests, `tessera dev`, the local
//!   cluster): same calls, same numbered events, nothing survives the agent.
//! - [`Runtime::attach`]: guests in the runtime process serving a Unix socket under the
//!   agent's work directory, started (detached) if none serves it.
//!
//! # Layout
//! - `mod.rs`: the interface ([`Runtime`], [`Events`], [`RuntimeEvent`], [`Attachment`],
//!   [`RuntimeOptions`], [`RuntimeError`]).
//! - `host.rs`: the guests' side: executor, guest table, sequence, outbox, subscriber.
//! - `wire.rs`: the socket's protocol (length-delimited postcard frames).
//! - `server.rs`: the runtime process's body ([`serve`]): lock, socket, connections,
//!   recovery timeout.
//! - `client.rs`: the agent's end: connect or start the runtime process, hello, the
//!   connection task.

mod client;
mod host;
mod server;
#[cfg(test)]
mod tests;
mod wire;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::executor::{
    ExecError, ExecEvent, ExecutorConfig, InstanceEvent, InstanceSpec, InstanceTask, TaskSpec,
};

use self::client::Client;
use self::host::Host;
use self::wire::Request;

pub use self::client::read_config;
pub use self::host::{MAX_OUTBOX_BYTES, MAX_OUTBOX_MESSAGE_BYTES};
pub use self::server::{serve, ServeOptions};

/// A guest's name in the runtime, chosen by the agent and stable across agent restarts (the
/// agent derives it from the task key or the executor run). Unique among live guests: a
/// launch under the id of a live guest is ignored.
pub type GuestId = String;

/// What a guest reports: a one-shot task's events or an executor instance's.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum GuestEvent {
    /// From a task started by [`Runtime::launch`].
    Task(ExecEvent),
    /// From an instance started by [`Runtime::start_instance`].
    Instance(InstanceEvent),
}

impl GuestEvent {
    /// Whether this is the guest's last event (`Finished` or `Exited`).
    pub fn is_end(&self) -> bool {
        matches!(
            self,
            GuestEvent::Task(ExecEvent::Finished(_))
                | GuestEvent::Instance(InstanceEvent::Exited(_))
        )
    }
}

/// One report, numbered, so that an agent can acknowledge what it recorded and skip, on
/// replay, what its checkpoint already covers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RuntimeEvent {
    /// Grows by one per event of this runtime process (from 1), across agent attachments. A
    /// new runtime process (another [`Attachment::runtime_id`]) starts again from 1: compare
    /// runtime ids before skipping events by `seq`.
    pub seq: u64,
    /// The guest that reported it.
    pub guest: GuestId,
    /// What it reported.
    pub event: GuestEvent,
}

/// What the agent learns when it attaches.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attachment {
    /// Identifies this runtime process's life; a different id than the one the agent
    /// checkpointed means the old runtime died, with its guests.
    pub runtime_id: String,
    /// Guests still running (tasks and instances), sorted, so the agent can tell which of its
    /// checkpointed guests are gone. A guest whose end is in the replayed events is not
    /// listed.
    pub live: Vec<GuestId>,
    /// Fuel one core burns per second (calibrated once per runtime process, so pacing stays
    /// the same across agent restarts).
    pub fuel_per_core_second: u64,
    /// Sequence number of the last event numbered before this attachment (0: none): the
    /// replayed events are the unacknowledged ones up to it, later ones are live. Once the
    /// agent has read up to it, a guest of its checkpoint that is neither live nor ended
    /// (in the checkpoint or the replay) never reached the runtime (e.g. the agent died
    /// between recording a launch and sending it).
    pub last_seq: u64,
    /// For each live executor instance, the ids of the tasks launched into it that have not
    /// ended (no terminal update numbered up to [`Attachment::last_seq`]), sorted: a task the
    /// agent launched into a live instance that is neither here nor ended never reached it,
    /// and is launched again ([`Runtime::instance_launch`] of a task the instance runs is
    /// ignored, so sending it twice is harmless).
    pub instance_tasks: std::collections::BTreeMap<GuestId, Vec<String>>,
}

/// What a successful [`Runtime::prepare`] tells, for the agent's module-cache metrics.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PrepareInfo {
    /// The compiled-module cache (memory or disk) had it: nothing was compiled.
    pub cached: bool,
    /// How long the prepare took (the compile time when not `cached`).
    pub secs: f64,
}

/// Errors of the runtime interface.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The executor could not be created (in this process, or reported by the runtime
    /// process when it started).
    #[error(transparent)]
    Executor(#[from] ExecError),
    /// The executor refused a module in [`Runtime::prepare`] (the message is the executor's
    /// error: invalid module, not a command, unreadable file...).
    #[error("{0}")]
    Prepare(String),
    /// A file or socket of the runtime could not be used.
    #[error("runtime I/O error on {path}: {source}")]
    Io {
        /// The file, directory or socket involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The runtime process could not be started, or did not come up.
    #[error("cannot start the runtime process: {0}")]
    Start(String),
    /// The other end broke the protocol (bad frame, wrong version, unexpected reply).
    #[error("runtime protocol error: {0}")]
    Protocol(String),
    /// The connection to the runtime process is gone (it died, or a newer agent attached).
    #[error("the runtime process is not reachable any more")]
    Disconnected,
}

/// How to reach (or start) the runtime process of an agent.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// The runtime's directory: its lock, log and config files, and by default its socket.
    pub dir: PathBuf,
    /// The Unix socket it serves (default `<dir>/sock`).
    pub socket: PathBuf,
    /// The program that runs the runtime process (default: this executable).
    pub program: PathBuf,
    /// Arguments before the runtime's own flags (default `["runtime"]`, the hidden
    /// subcommand of the `tessera` binary).
    pub args: Vec<String>,
    /// The executor's settings, used when the runtime process is started (a runtime already
    /// running keeps its own).
    pub executor: ExecutorConfig,
    /// How long the runtime process keeps its guests running with no agent attached before it
    /// kills them and exits (Mesos's `recovery_timeout`; default 15 minutes).
    pub recovery_timeout: Duration,
    /// The attaching agent's boot id, logged by the runtime.
    pub boot_id: String,
}

impl RuntimeOptions {
    /// Options for the runtime of the agent whose work directory is `work_dir`: directory
    /// `<work_dir>/runtime`, socket `<work_dir>/runtime/sock`, program this executable with
    /// `runtime`.
    pub fn new(work_dir: &Path, executor: ExecutorConfig) -> Result<Self, RuntimeError> {
        let program = std::env::current_exe().map_err(|source| RuntimeError::Io {
            path: PathBuf::from("/proc/self/exe"),
            source,
        })?;
        // Absolute, so that the runtime process's paths do not depend on its working directory.
        let work_dir = std::path::absolute(work_dir).map_err(|source| RuntimeError::Io {
            path: work_dir.to_owned(),
            source,
        })?;
        let dir = work_dir.join("runtime");
        Ok(RuntimeOptions {
            socket: dir.join("sock"),
            dir,
            program,
            args: vec!["runtime".to_owned()],
            executor,
            recovery_timeout: Duration::from_secs(15 * 60),
            boot_id: String::new(),
        })
    }
}

/// The agent's handle on where its guests run. Cheap to clone; calls after the runtime is
/// gone are dropped (the [`Events`] stream has ended, which tells the agent).
#[derive(Clone)]
pub struct Runtime {
    /// Where the guests are.
    backend: Backend,
}

/// The two modes behind one interface.
#[derive(Clone)]
enum Backend {
    /// Guests in this process.
    Local(Host),
    /// Guests in the runtime process at the other end of a socket.
    Remote(Client),
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backend {
            Backend::Local(_) => f.write_str("Runtime(in process)"),
            Backend::Remote(_) => f.write_str("Runtime(runtime process)"),
        }
    }
}

impl Runtime {
    /// Guests in this process (tests, the local cluster, `tessera dev`): nothing survives the
    /// agent. Creates the executor (calibrating its fuel rate unless configured, about
    /// 250 ms). Events are numbered as in the runtime process; nothing is kept for a later
    /// attachment (there is none), so [`Runtime::ack`] is a no-op. When every clone is
    /// dropped, the guests are killed.
    pub fn in_process(cfg: ExecutorConfig) -> Result<(Runtime, Attachment, Events), RuntimeError> {
        let id = in_process_id();
        let host = Host::new(cfg, id, false)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (attachment, _) = host.attach(tx);
        Ok((
            Runtime {
                backend: Backend::Local(host),
            },
            attachment,
            Events { rx },
        ))
    }

    /// Connects to the runtime process serving `opts.socket`, or starts one (detached: its
    /// own session, so a `kill -9` of the agent or of its process group does not take it
    /// along) and connects. The events stream first replays every event the runtime sent
    /// that was never acknowledged, in order, then live events.
    pub async fn attach(
        opts: RuntimeOptions,
    ) -> Result<(Runtime, Attachment, Events), RuntimeError> {
        let (client, attachment, events) = client::attach(&opts).await?;
        Ok((
            Runtime {
                backend: Backend::Remote(client),
            },
            attachment,
            events,
        ))
    }

    /// Validates and compiles a module or component (or finds it in the cache), so launch
    /// failures are caught early and launch itself is fast.
    pub async fn prepare(
        &self,
        digest: &str,
        wasm_path: &Path,
    ) -> Result<PrepareInfo, RuntimeError> {
        match &self.backend {
            Backend::Local(h) => h
                .prepare(digest, wasm_path)
                .await
                .map_err(RuntimeError::Prepare),
            Backend::Remote(c) => c.prepare(digest, wasm_path).await,
        }
    }

    /// Starts a one-shot task as `guest`: its events are [`GuestEvent::Task`], `Running` then
    /// `Finished` exactly once (or `Finished` alone if it fails to start). Ignored (with a
    /// warning) if `guest` is live.
    pub fn launch(&self, guest: GuestId, spec: TaskSpec) {
        match &self.backend {
            Backend::Local(h) => h.launch(guest, spec),
            Backend::Remote(c) => c.send(Request::Launch { guest, spec }),
        }
    }

    /// Stops a task or an instance (it ends with `Killed`); unknown or ended guests are
    /// ignored.
    pub fn kill(&self, guest: &str) {
        match &self.backend {
            Backend::Local(h) => h.kill(guest),
            Backend::Remote(c) => c.send(Request::Kill {
                guest: guest.to_owned(),
            }),
        }
    }

    /// Starts an executor instance as `guest`: its events are [`GuestEvent::Instance`],
    /// `Started`, then the guest's updates and messages, `Exited` exactly once, last.
    /// Ignored (with a warning) if `guest` is live.
    pub fn start_instance(&self, guest: GuestId, spec: InstanceSpec) {
        match &self.backend {
            Backend::Local(h) => h.start_instance(guest, spec),
            Backend::Remote(c) => c.send(Request::StartInstance { guest, spec }),
        }
    }

    /// Hands a task to the instance `guest`; ignored if a task of that id was launched into it
    /// and has not ended.
    pub fn instance_launch(&self, guest: &str, task: InstanceTask) {
        match &self.backend {
            Backend::Local(h) => h.instance_launch(guest, task),
            Backend::Remote(c) => c.send(Request::InstanceLaunch {
                guest: guest.to_owned(),
                task,
            }),
        }
    }

    /// Asks the instance `guest` to kill one of its tasks.
    pub fn instance_kill_task(&self, guest: &str, task_id: &str) {
        match &self.backend {
            Backend::Local(h) => h.with_instance(guest, |i| i.kill_task(task_id)),
            Backend::Remote(c) => c.send(Request::InstanceKillTask {
                guest: guest.to_owned(),
                task_id: task_id.to_owned(),
            }),
        }
    }

    /// Delivers bytes from the scheduler to the instance `guest`.
    pub fn instance_message(&self, guest: &str, data: Vec<u8>) {
        match &self.backend {
            Backend::Local(h) => h.with_instance(guest, |i| i.message(data)),
            Backend::Remote(c) => c.send(Request::InstanceMessage {
                guest: guest.to_owned(),
                data,
            }),
        }
    }

    /// Asks the instance `guest` to return from its run loop.
    pub fn instance_shutdown(&self, guest: &str) {
        match &self.backend {
            Backend::Local(h) => h.with_instance(guest, |i| i.shutdown()),
            Backend::Remote(c) => c.send(Request::InstanceShutdown {
                guest: guest.to_owned(),
            }),
        }
    }

    /// Sets the envelope (CPU share, memory cap) of the instance `guest`.
    pub fn set_envelope(&self, guest: &str, cpus_milli: u64, mem_bytes: u64) {
        match &self.backend {
            Backend::Local(h) => h.with_instance(guest, |i| i.set_envelope(cpus_milli, mem_bytes)),
            Backend::Remote(c) => c.send(Request::SetEnvelope {
                guest: guest.to_owned(),
                cpus_milli,
                mem_bytes,
            }),
        }
    }

    /// At most `length` bytes at `offset` of the stdout (`stderr` false) or stderr of the task
    /// whose directory is `task_dir`, and the stream's size, if the runtime holds it in memory
    /// (a task without a sandbox: see `executor/output.rs`); `Ok(None)`: it is in its file,
    /// or there is none. Output lives where the guests run, so this asks the runtime process
    /// when there is one.
    pub async fn read_output(
        &self,
        task_dir: &Path,
        stderr: bool,
        offset: u64,
        length: u64,
    ) -> Result<Option<(Vec<u8>, u64)>, RuntimeError> {
        match &self.backend {
            Backend::Local(h) => Ok(h.read_output(task_dir, stderr, offset, length)),
            Backend::Remote(c) => c.read_output(task_dir, stderr, offset, length).await,
        }
    }

    /// In process: write the output held in memory out to the tasks' files when the guests
    /// stop with the agent (a crash or a stop), for an agent that checkpoints and will read it
    /// there after its restart. The runtime process always does (its guests' output outlives
    /// the agent in its memory, and is written out when it exits).
    pub fn write_output_out_at_end(&self) {
        if let Backend::Local(h) = &self.backend {
            h.write_out_at_end();
        }
    }

    /// Drops the output the runtime holds in memory for the task whose directory is
    /// `task_dir` (the agent is collecting the task).
    pub fn forget_output(&self, task_dir: &Path) {
        match &self.backend {
            Backend::Local(h) => h.forget_output(task_dir),
            Backend::Remote(c) => c.send(Request::ForgetOutput {
                task_dir: task_dir.to_owned(),
            }),
        }
    }

    /// The agent has durably recorded the effects of every event up to `seq`: the runtime may
    /// forget them (a later attachment does not replay them).
    pub fn ack(&self, seq: u64) {
        match &self.backend {
            Backend::Local(h) => h.ack(seq),
            Backend::Remote(c) => c.send(Request::Ack { seq }),
        }
    }

    /// Detaches (`stop_guests` false: the agent stops, the guests keep running for a
    /// successor) or stops everything (kills every guest, waits for their ends, and the
    /// runtime process exits). In process, both kill every guest and wait: nothing survives
    /// the agent there.
    pub async fn close(self, stop_guests: bool) {
        match self.backend {
            Backend::Local(h) => h.stop_all().await,
            Backend::Remote(c) => c.close(stop_guests).await,
        }
    }
}

/// A fresh id for an in-process runtime: unique among the instances of this process (a
/// process-wide counter; a library user may run several agents in one process, one after
/// another or at once) and across processes (the pid and the time, against pid reuse), so an
/// agent never takes another's checkpointed guests for its own.
fn in_process_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("in-process-{:x}-{:x}-{n}", std::process::id(), nanos)
}

/// The ordered event stream of one attachment: first every event the runtime sent that was
/// never acknowledged (in order), then live events. Ends when the runtime is gone (its
/// process died, or a newer agent attached) or closed.
#[derive(Debug)]
pub struct Events {
    /// Filled by the host (in process) or the connection task (runtime process).
    rx: mpsc::UnboundedReceiver<RuntimeEvent>,
}

impl Events {
    /// The next event, or `None` once the stream has ended. Cancel-safe (for `select!`).
    pub async fn recv(&mut self) -> Option<RuntimeEvent> {
        self.rx.recv().await
    }

    /// The next event if one is already here.
    pub fn try_recv(&mut self) -> Option<RuntimeEvent> {
        self.rx.try_recv().ok()
    }
}
