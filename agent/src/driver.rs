//! The agent's driver: the QUIC link to the master, the blob fetcher, and the executor, around
//! the sans-IO [`Agent`] core.
//!
//! One loop owns the core. Everything else (the control stream's reader, module and file
//! fetches, running guests) runs in tasks of its own and reports back through one channel, so
//! the core sees a single ordered stream of events. The loop redials the master with
//! exponential backoff whenever the link drops; the core re-registers and resends unacknowledged
//! status updates.

use crate::core::{Action, Agent, AgentConfig, Event, Outcome, TaskKey};
use crate::executor::{
    ExecEvent, Executor, ExecutorConfig, KillHandle, PoolingConfig, TaskOutcome, TaskSpec,
    Termination,
};
use net::link::{self, Link, LinkError};
use net::tls::{PeerTls, TransportTuning};
use net::{MessageReader, MessageWriter};
use proto::{AgentInfo, Digest, FrameworkId, Message, Reason, Role, TaskInfo, TaskState};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The registered attribute carrying the executor's calibrated fuel rate
/// (fuel one core burns per second; see [`Executor::fuel_per_core_second`]).
pub const FUEL_RATE_ATTRIBUTE: &str = "tessera.fuel_per_core_second";

/// Everything an agent process is configured with.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// The master's QUIC address.
    pub master: SocketAddr,
    /// CA and this agent's certificate.
    pub tls: PeerTls,
    /// QUIC keep-alive and idle timeout.
    pub tuning: TransportTuning,
    /// Root of blobs, compiled-module cache and task directories.
    pub work_dir: PathBuf,
    /// Hostname, resources and attributes to register with.
    pub info: AgentInfo,
    /// Output caps and tails of the executor (its cache dir is set from `work_dir`).
    pub executor: ExecutorConfig,
    /// How often an unacknowledged status update is resent.
    pub status_retry: Duration,
    /// Largest module or file the agent will fetch.
    pub max_blob_size: u64,
    /// Longest pause between reconnection attempts.
    pub max_backoff: Duration,
}

impl AgentOptions {
    /// Options with the defaults for everything but the essentials; the
    /// executor's instance pool is sized from `info.resources`.
    pub fn new(master: SocketAddr, tls: PeerTls, work_dir: PathBuf, info: AgentInfo) -> Self {
        let pooling = PoolingConfig::for_resources(info.resources.cpus_milli, info.resources.mem);
        Self {
            master,
            tls,
            tuning: TransportTuning::default(),
            work_dir,
            info,
            executor: ExecutorConfig {
                pooling: Some(pooling),
                ..ExecutorConfig::default()
            },
            status_retry: Duration::from_secs(2),
            max_blob_size: 256 << 20,
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Link set-up (TLS, socket) failed.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The executor could not start.
    #[error(transparent)]
    Executor(#[from] crate::executor::ExecError),
    /// The work directory could not be prepared.
    #[error("work directory {path}: {source}")]
    WorkDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What the loop's channel carries (unboxed: nearly every input is a `Core` event).
#[allow(clippy::large_enum_variant)]
enum Input {
    Core(Event),
    LinkDown { generation: u64, why: String },
}

/// Runs an agent until `shutdown` completes.
pub async fn run(opts: AgentOptions, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    let blobs = opts.work_dir.join("blobs");
    for dir in [&opts.work_dir, &blobs, &opts.work_dir.join("frameworks")] {
        std::fs::create_dir_all(dir).map_err(|source| AgentError::WorkDir {
            path: dir.clone(),
            source,
        })?;
    }
    let mut exec_cfg = opts.executor.clone();
    exec_cfg.cache_dir = Some(opts.work_dir.join("cache"));
    let executor = Executor::new(exec_cfg)?;
    let fuel_rate = executor.fuel_per_core_second();
    tracing::info!(
        fuel_per_core_second = fuel_rate,
        pool_slots = executor.stats().pool_slots,
        "executor ready: a task offered c cpus may burn c x this much fuel per second"
    );
    let mut info = opts.info.clone();
    info.attributes.retain(|(k, _)| k != FUEL_RATE_ATTRIBUTE);
    info.attributes
        .push((FUEL_RATE_ATTRIBUTE.to_owned(), fuel_rate.to_string()));
    let endpoint = link::client_endpoint(&opts.tls, opts.tuning)?;
    let boot_id = format!(
        "{}-{}",
        opts.info.hostname,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    let mut core = Agent::new(AgentConfig {
        info,
        boot_id,
        status_retry: opts.status_retry,
    });
    let ctx = Arc::new(Fetcher {
        conn: Mutex::new(None),
        blobs,
        work_dir: opts.work_dir.clone(),
        max_blob_size: opts.max_blob_size,
        executor: executor.clone(),
    });
    let (tx, mut rx) = mpsc::unbounded_channel::<Input>();
    let mut kills = Guests::default();
    let mut control: Option<MessageWriter<quinn::SendStream>> = None;
    let mut generation = 0u64;
    let mut backoff = net::backoff::Reconnect::new(opts.max_backoff);
    let mut next_dial = Instant::now();
    tokio::pin!(shutdown);

    loop {
        if control.is_none() && Instant::now() >= next_dial {
            let dial = Link::connect(&endpoint, opts.master, Role::Agent);
            let result = tokio::select! {
                _ = &mut shutdown => break,
                r = dial => r,
            };
            match result {
                Ok(link) => {
                    generation += 1;
                    backoff.reset();
                    tracing::info!(master = %opts.master, "connected to the master");
                    *ctx.conn.lock().expect("poisoned") = Some(link.conn.clone());
                    control = Some(link.send);
                    spawn_reader(link.recv, link.conn, generation, tx.clone());
                    core.handle(Instant::now().into_std(), Event::Connected);
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(master = %opts.master, error = %e, ?delay, "cannot reach the master");
                    next_dial = Instant::now() + delay;
                }
            }
        }

        while let Some(action) = core.poll_action() {
            match action {
                Action::Send(msg) => {
                    if let Some(send) = control.as_mut() {
                        if let Err(e) = send.send(&msg).await {
                            tracing::warn!(error = %e, "control stream write failed");
                            drop_link(&mut control, &ctx);
                            core.handle(Instant::now().into_std(), Event::Disconnected);
                            next_dial = Instant::now();
                        }
                    }
                }
                Action::Prepare { framework_id, task } => {
                    let ctx = ctx.clone();
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let key = (framework_id.clone(), task.task_id.clone());
                        let result = ctx.prepare(&framework_id, &task).await;
                        if let Err((_, msg)) = &result {
                            tracing::warn!(task = %key.1, error = %msg, "task preparation failed");
                        }
                        let _ = tx.send(Input::Core(Event::Prepared { key, result }));
                    });
                }
                Action::Launch { framework_id, task } => {
                    let key = (framework_id.clone(), task.task_id.clone());
                    let spec = ctx.spec(&framework_id, &task);
                    let tx = tx.clone();
                    let k = key.clone();
                    let timeout_ms = task.timeout_ms;
                    let handle = executor.launch(
                        spec,
                        Box::new(move |ev| {
                            let event = match ev {
                                ExecEvent::Running => Event::Running { key: k.clone() },
                                ExecEvent::Finished(outcome) => Event::Finished {
                                    key: k.clone(),
                                    outcome: outcome_of(outcome, timeout_ms),
                                },
                            };
                            let _ = tx.send(Input::Core(event));
                        }),
                    );
                    kills.insert(key, handle);
                }
                Action::Kill { key } => {
                    if let Some(h) = kills.get(&key) {
                        h.kill();
                    }
                }
            }
        }

        let wake = match (core.poll_timeout(), control.is_none()) {
            (Some(t), true) => Some(Instant::from_std(t).min(next_dial)),
            (Some(t), false) => Some(Instant::from_std(t)),
            (None, true) => Some(next_dial),
            (None, false) => None,
        };
        let sleep = net::timer::sleep_until(wake);
        tokio::select! {
            _ = &mut shutdown => break,
            input = rx.recv() => match input {
                Some(Input::Core(ev)) => {
                    tracing::debug!(event = ?ev, "agent event");
                    if let Event::Finished { key, .. } = &ev {
                        kills.remove(key);
                    }
                    if let Event::Message(Message::Shutdown { .. }) = &ev {
                        // The master forgot us: start afresh on a new connection.
                        core.handle(Instant::now().into_std(), ev);
                        continue;
                    }
                    core.handle(Instant::now().into_std(), ev);
                }
                Some(Input::LinkDown { generation: g, why }) => {
                    if g == generation && control.is_some() {
                        tracing::warn!(%why, "lost the master");
                        drop_link(&mut control, &ctx);
                        core.handle(Instant::now().into_std(), Event::Disconnected);
                        next_dial = Instant::now() + backoff.next_delay();
                    }
                }
                None => break,
            },
            _ = sleep => core.handle_timeout(Instant::now().into_std()),
        }
    }
    drop(kills);
    if let Some(conn) = ctx.conn.lock().expect("poisoned").take() {
        conn.close(0u32.into(), b"agent shutting down");
    }
    endpoint.wait_idle().await;
    Ok(())
}

/// The running guests' kill handles. Dropping it kills them all, so however the agent's loop
/// ends (shutdown, error, or its task aborted), no guest outlives it.
#[derive(Default)]
struct Guests(HashMap<TaskKey, KillHandle>);

impl std::ops::Deref for Guests {
    type Target = HashMap<TaskKey, KillHandle>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Guests {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Guests {
    fn drop(&mut self) {
        for h in self.0.values() {
            h.kill();
        }
    }
}

fn drop_link(control: &mut Option<MessageWriter<quinn::SendStream>>, ctx: &Fetcher) {
    *control = None;
    if let Some(conn) = ctx.conn.lock().expect("poisoned").take() {
        conn.close(0u32.into(), b"reconnecting");
    }
}

fn spawn_reader(
    mut recv: MessageReader<quinn::RecvStream>,
    conn: quinn::Connection,
    generation: u64,
    tx: mpsc::UnboundedSender<Input>,
) {
    tokio::spawn(async move {
        let why = loop {
            match recv.recv().await {
                Ok(Some(msg)) => {
                    if tx.send(Input::Core(Event::Message(msg))).is_err() {
                        return;
                    }
                }
                Ok(None) => break "the master closed the control stream".to_owned(),
                Err(e) => {
                    break match conn.close_reason() {
                        Some(reason) => reason.to_string(),
                        None => e.to_string(),
                    }
                }
            }
        };
        let _ = tx.send(Input::LinkDown { generation, why });
    });
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

/// Fetches modules and files from the master and lays out task directories.
struct Fetcher {
    conn: Mutex<Option<quinn::Connection>>,
    blobs: PathBuf,
    work_dir: PathBuf,
    max_blob_size: u64,
    executor: Executor,
}

impl Fetcher {
    fn task_dir(&self, fid: &FrameworkId, task: &TaskInfo) -> PathBuf {
        self.work_dir
            .join("frameworks")
            .join(fid.as_str())
            .join("tasks")
            .join(task.task_id.as_str())
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.to_hex())
    }

    fn spec(&self, fid: &FrameworkId, task: &TaskInfo) -> TaskSpec {
        let mut args = Vec::with_capacity(task.args.len() + 1);
        args.push(task.name.clone());
        args.extend(task.args.iter().cloned());
        TaskSpec {
            digest: task.module.to_hex(),
            wasm_path: self.blob_path(&task.module),
            args,
            env: task.env.clone(),
            task_dir: self.task_dir(fid, task),
            mem_bytes: task.resources.mem,
            cpus_milli: task.resources.cpus_milli,
            timeout: task.timeout_ms.map(Duration::from_millis),
            max_cpu: task.max_cpu_ms.map(Duration::from_millis),
            disk_bytes: task.resources.disk,
        }
    }

    async fn ensure_blob(&self, digest: Digest) -> Result<PathBuf, (Reason, String)> {
        let path = self.blob_path(&digest);
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(path);
        }
        let conn = self.conn.lock().expect("poisoned").clone();
        let Some(conn) = conn else {
            return Err((Reason::FetchFailed, "not connected to the master".into()));
        };
        link::fetch_blob(&conn, digest, &path, self.max_blob_size)
            .await
            .map_err(|e| (Reason::FetchFailed, format!("fetching {digest:?}: {e}")))?;
        tracing::debug!(?digest, "fetched blob");
        Ok(path)
    }

    async fn prepare(&self, fid: &FrameworkId, task: &TaskInfo) -> Result<(), (Reason, String)> {
        let dir = self.task_dir(fid, task);
        let sandbox = dir.join("sandbox");
        let io = |e: std::io::Error| (Reason::AgentError, format!("task directory: {e}"));
        if tokio::fs::try_exists(&dir).await.unwrap_or(false) {
            tokio::fs::remove_dir_all(&dir).await.map_err(io)?;
        }
        tokio::fs::create_dir_all(&sandbox).await.map_err(io)?;
        let module = self.ensure_blob(task.module).await?;
        for file in &task.files {
            if !proto::ids::is_safe_relative_path(&file.path) {
                return Err((
                    Reason::TaskInvalid,
                    format!(
                        "file path {:?} is not a relative path inside the sandbox",
                        file.path
                    ),
                ));
            }
            let src = self.ensure_blob(file.digest).await?;
            place_file(&src, &sandbox.join(&file.path))
                .await
                .map_err(io)?;
        }
        self.executor
            .prepare(&task.module.to_hex(), &module)
            .await
            .map_err(|e| (Reason::ModuleInvalid, e.to_string()))
    }
}

async fn place_file(src: &Path, dest: &Path) -> std::io::Result<()> {
    if let Some(parent) = dest.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    tokio::fs::copy(src, dest).await.map(|_| ())
}
