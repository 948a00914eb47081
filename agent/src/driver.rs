//! The agent's driver: the loop around the sans-IO [`Agent`] core.
//!
//! One loop owns the core. It dials the master (redialling with jittered exponential backoff
//! whenever the link drops; the core then re-registers and resends unacknowledged status
//! updates), feeds the core, and carries out its actions by calling into the
//! [`Fetcher`], the [`launch`] translator and the [`Runtime`] where guests run. Everything that
//! takes time (the control stream's reader, fetches and compilation, the guests) runs in tasks
//! of its own and reports back through channels, so the core sees a single ordered stream of
//! events.
//!
//! # Several masters
//! [`AgentOptions::masters`] may name several masters (one leader, standbys). Each dial is a
//! pass of a [`MasterSet`]: the last leader first, a standby's `NotLeader { leader }` followed
//! at once, the exponential delay only after a whole pass failed (a short one while no master
//! leads). A leader that steps down closes with the not-leader code (or says `NotLeader` on the
//! control stream): the loop redials at once, without backoff. A leader lost without a word is
//! dialled last next time (it may be dead). Reaching a new leader is handled as a master
//! restart: the core re-registers under its id and resends unacknowledged updates.
//!
//! # Where guests run
//! [`AgentOptions::guests`]: in the agent's process ([`GuestHost::InProcess`], the default for
//! library users and test clusters: guests die with the agent), or in a runtime process that
//! outlives it ([`GuestHost::RuntimeProcess`], what `tessera agent` uses), reattached at the
//! next start. Guests are named in the runtime by a [`GuestId`] derived from the task key
//! (`task/<fid>/</tid>`) or the executor run (`exec/<fid>/<eid>/<run>`), so the names survive
//! restarts ([`task_guest`], [`executor_guest`]).
//!
//! # Persist, then act
//! With [`AgentOptions::checkpoint`] on, after handling a batch of inputs (everything ready,
//! drained at once so a burst costs one write) and before carrying out that batch's actions
//! (messages to the master, guests to launch or kill, acknowledgements to the runtime), the
//! loop writes the core's checkpoint ([`crate::checkpoint`]) if [`Agent::generation`] or the
//! last applied runtime event moved. Only then are the runtime's events up to it acknowledged
//! (the runtime forgets them). If the write fails, the actions wait (logged as an error) and the
//! write is retried every second or at the next input. At start: load the checkpoint, attach to the runtime, recover
//! the core, skip replayed events the checkpoint covers, tell the core which guests still run
//! ([`crate::core::checkpoint`]), kill guests nobody owns, re-register under the old id.
//!
//! # Stopping
//! When `shutdown` completes, [`AgentOptions::on_stop`] says what happens to the guests:
//! [`OnStop::KeepTasks`] tells the master (`AgentLeaving { keep_tasks: true }`), waits (at
//! most [`AgentOptions::stop_timeout`]) for `AgentLeft`, writes the checkpoint and detaches
//! from the runtime, leaving the guests running for the next agent; [`OnStop::KillTasks`]
//! kills every task and executor, waits (bounded) until their terminal updates are
//! acknowledged, tells the master (`AgentLeaving { keep_tasks: false }`), waits (bounded) for
//! `AgentLeft`, stops the runtime and removes the checkpoint; [`OnStop::Quit`] just stops
//! (in-process guests die with the loop; the master notices the agent is gone).
//!
//! Framework executors: [`ExecutorAction::Start`] fetches the component and lays out the
//! executor's directory in a task of its own, then (back in the loop) starts the instance in
//! the runtime; the other executor actions are runtime calls on its guest.
//!
//! Garbage collection: the core decides when an ended task's or executor's directory goes
//! ([`crate::core::gc`]); the loop renames each one the core hands out into `trash/` and
//! deletes it on the blocking pool, and reports the work directory's disk usage every
//! [`AgentOptions::disk_watch_interval`]. At start, the directories under `frameworks/` that
//! no recovered task or executor owns (and no pending collection names) are a previous run's
//! leftovers and are cleared the same way. On the same tick, `blobs/` and `cache/` are
//! scanned off the loop and, back on it, kept under [`AgentOptions::cache_size`] by
//! [`crate::blob_gc`] (least recently used first, never what the core's tasks and executors
//! use); temporary files there that a killed fetch or compile left are removed once an hour
//! old.

use crate::checkpoint::{AgentCheckpoint, CheckpointError, CheckpointFile};
use crate::core::{
    Action, Agent, AgentConfig, Event, ExecutorAction, ExecutorEvent, ExecutorKey, ExecutorRun,
    GcPolicy, GcTarget, LiveGuests, QueryWork, TaskKey,
};
use crate::executor::{ExecEvent, ExecutorConfig, InstanceSpec, PoolingConfig, TaskOutcome};
use crate::fetch::{Fetcher, PrepareError};
use crate::launch;
use crate::metrics::AgentMetrics;
use crate::runtime::{
    Attachment, Events, GuestEvent, GuestId, Runtime, RuntimeError, RuntimeEvent, RuntimeOptions,
};
use crate::workdir::WorkDir;
use net::link::{self, LinkError};
use net::masters::{self as master_set, MasterSet};
use net::tls::{PeerTls, TransportTuning};
use net::{MessageReader, MessageWriter};
use proto::{AgentAnswer, AgentInfo, FrameworkId, Message, Reason, Role, TaskInfo};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Kept here for callers of the driver's former home of the mapping; see [`launch::outcome_of`].
pub use crate::launch::outcome_of;

/// The registered attribute carrying the executor's calibrated fuel rate
/// (fuel one core burns per second; see [`crate::executor::Executor::fuel_per_core_second`]).
pub const FUEL_RATE_ATTRIBUTE: &str = "tessera.fuel_per_core_second";

/// Where the agent's guests run.
#[derive(Clone, Debug, PartialEq)]
pub enum GuestHost {
    /// In the agent's own process: they die with it (tests, the local cluster, library users).
    InProcess,
    /// In a runtime process that outlives the agent, started if none serves the work
    /// directory's socket, reattached at the next start.
    RuntimeProcess(RuntimeProcess),
}

/// How the runtime process is started (when none runs yet).
#[derive(Clone, Debug, PartialEq)]
pub struct RuntimeProcess {
    /// The program (default: this executable).
    pub program: Option<PathBuf>,
    /// Its arguments before the runtime's own flags (default: `["runtime"]`).
    pub args: Option<Vec<String>>,
    /// How long it keeps guests running with no agent attached (default: 15 minutes).
    pub recovery_timeout: Option<Duration>,
}

impl RuntimeProcess {
    /// This executable's `runtime` subcommand, with the runtime's defaults.
    pub fn this_executable() -> Self {
        RuntimeProcess {
            program: None,
            args: None,
            recovery_timeout: None,
        }
    }
}

/// What a stopping agent does with its guests (see the [module doc](self#stopping)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnStop {
    /// Leave them running in the runtime process for the next agent on this work directory
    /// (an upgrade or a restart); the master keeps them as they are meanwhile. With in-process
    /// guests, which cannot outlive the agent, this is [`OnStop::KillTasks`].
    KeepTasks,
    /// Kill every task and executor, report them, then leave the cluster.
    KillTasks,
    /// Stop at once without telling anyone (in-process guests die with the agent).
    Quit,
}

/// Everything an agent process is configured with.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// The masters' QUIC addresses (`host:port`; one leader, the rest standbys): the agent
    /// follows the leader among them (see the [module doc](self#several-masters)).
    pub masters: MasterSet,
    /// CA and this agent's certificate.
    pub tls: PeerTls,
    /// QUIC keep-alive and idle timeout.
    pub tuning: TransportTuning,
    /// Root of blobs, compiled-module cache and task directories (laid out by [`WorkDir`]).
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
    /// Data sets as `(name, host directory)`: their names are registered (replacing
    /// `info.datasets`) and tasks asking for one see it read-only at `/data/NAME`.
    pub datasets: Vec<(String, PathBuf)>,
    /// When ended tasks' and executors' directories are removed (see [`crate::core::gc`]).
    pub gc: GcPolicy,
    /// How often the work directory's disk usage is measured (it scales the GC delay) and
    /// the blobs and compiled modules are collected; zero: never.
    pub disk_watch_interval: Duration,
    /// Most bytes of fetched blobs and compiled modules kept (`blobs/` and `cache/`); beyond
    /// it the least recently used ones that no task or executor uses are removed (see
    /// [`crate::blob_gc`]). Default 2 GiB.
    pub cache_size: u64,
    /// Where guests run (default: in process).
    pub guests: GuestHost,
    /// Whether the agent persists a checkpoint before acting, and recovers from it at start
    /// (default: off; on whenever guests run in the runtime process).
    pub checkpoint: bool,
    /// What a stop does with the guests (default: [`OnStop::Quit`]).
    pub on_stop: OnStop,
    /// The bound of each wait of a stop (terminal updates acknowledged, `AgentLeft`).
    pub stop_timeout: Duration,
    /// Where to serve the agent's own `GET /metrics` over plain HTTP (loopback addresses only:
    /// there is no TLS on it; remote readers go through the master's
    /// `/agents/{id}/metrics`). Default: not served.
    pub http_listen: Option<SocketAddr>,
}

impl AgentOptions {
    /// Options with the defaults for everything but the essentials, for one master (see
    /// [`AgentOptions::with_masters`] for several); the executor's instance pool is sized from
    /// `info.resources`.
    pub fn new(master: SocketAddr, tls: PeerTls, work_dir: PathBuf, info: AgentInfo) -> Self {
        Self::for_masters(MasterSet::single(master), tls, work_dir, info)
    }

    /// [`AgentOptions::new`] for several masters (`--master a:5050,b:5050`).
    pub fn for_masters(
        masters: MasterSet,
        tls: PeerTls,
        work_dir: PathBuf,
        info: AgentInfo,
    ) -> Self {
        let pooling = PoolingConfig::for_resources(info.resources.cpus_milli, info.resources.mem);
        Self {
            masters,
            tls,
            tuning: TransportTuning::default(),
            work_dir,
            info,
            executor: ExecutorConfig {
                pooling: Some(pooling),
                ..ExecutorConfig::default()
            },
            status_retry: Duration::from_secs(2),
            max_backoff: Duration::from_secs(5),
            max_blob_size: 256 << 20,
            datasets: Vec::new(),
            gc: GcPolicy::default(),
            disk_watch_interval: Duration::from_secs(60),
            cache_size: 2 << 30,
            guests: GuestHost::InProcess,
            checkpoint: false,
            on_stop: OnStop::Quit,
            stop_timeout: Duration::from_secs(5),
            http_listen: None,
        }
    }

    /// Dials these masters (one leader, standbys) instead of the one given to
    /// [`AgentOptions::new`].
    pub fn with_masters(mut self, masters: MasterSet) -> Self {
        self.masters = masters;
        self
    }

    /// Guests in a runtime process that outlives the agent, checkpointing on, and tasks kept
    /// running over a stop: what `tessera agent` runs with by default.
    pub fn with_runtime_process(mut self, runtime: RuntimeProcess) -> Self {
        self.guests = GuestHost::RuntimeProcess(runtime);
        self.checkpoint = true;
        self.on_stop = OnStop::KeepTasks;
        self
    }
}

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Link set-up (TLS, socket) failed.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The runtime (or the in-process executor) could not start, or the runtime process went
    /// away: its guests are gone, and the next start of the agent reports them.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The metrics listener could not be bound, or was asked for off loopback.
    #[error("metrics listener {addr}: {message}")]
    Http {
        /// The address asked for.
        addr: SocketAddr,
        /// Why it cannot be served.
        message: String,
    },
    /// The checkpoint could not be read (the agent does not start over a checkpoint it cannot
    /// read: that would forget its tasks).
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The work directory could not be prepared.
    #[error("work directory {path}: {source}")]
    WorkDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The runtime's name of a one-shot task's guest.
pub fn task_guest(key: &TaskKey) -> GuestId {
    format!("task/{}/{}", key.0, key.1)
}

/// The runtime's name of an executor run's guest.
pub fn executor_guest(id: &ExecutorRun) -> GuestId {
    format!("exec/{}/{}/{}", id.framework_id, id.executor_id, id.run)
}

/// What a guest id names (ids are safe names, which never hold `/`).
#[derive(Debug, PartialEq)]
enum GuestName {
    Task(TaskKey),
    Executor(ExecutorRun),
}

fn parse_guest(g: &str) -> Option<GuestName> {
    let parts: Vec<&str> = g.split('/').collect();
    match parts.as_slice() {
        ["task", fid, tid] => Some(GuestName::Task(((*fid).into(), (*tid).into()))),
        ["exec", fid, eid, run] => Some(GuestName::Executor(ExecutorRun {
            framework_id: (*fid).into(),
            executor_id: (*eid).into(),
            run: run.parse().ok()?,
        })),
        _ => None,
    }
}

/// What the loop's channel carries (unboxed: nearly every input is a `Core` event).
#[allow(clippy::large_enum_variant)]
enum Input {
    Core(Event),
    LinkDown {
        generation: u64,
        why: String,
        /// The master closed with the not-leader code or said `NotLeader` (with the leader it
        /// named, if any): it stepped down, so look for the leader now.
        not_leader: Option<Option<String>>,
    },
    /// An executor's component and directory are ready (or could not be made ready).
    InstanceReady {
        id: ExecutorRun,
        result: Result<InstanceSpec, PrepareError>,
    },
    /// The used fraction of the work directory's file system, just measured.
    DiskUsage(f64),
    /// The files of `blobs/` and `cache/`, just scanned.
    Cached(Vec<crate::blob_gc::CachedFile>),
    /// An answer to a master's query, read off the loop, to send.
    Answer(Message),
}

/// Where a stop is.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Stop {
    /// Killing everything: waiting until every terminal update is acknowledged.
    Draining { until: Instant },
    /// `AgentLeaving` sent: waiting for `AgentLeft`.
    Leaving { until: Instant },
}

/// Counters of checkpoint writes, logged at the end and readable by benchmarks.
#[derive(Clone, Copy, Debug, Default)]
pub struct CheckpointStats {
    /// Checkpoints written.
    pub writes: u64,
    /// Bytes written, in all.
    pub bytes: u64,
    /// Size of the last one.
    pub last_bytes: u64,
    /// Time spent serialising and writing, in all.
    pub time: Duration,
}

/// Runs an agent until `shutdown` completes (then stops as [`AgentOptions::on_stop`] says).
pub async fn run(opts: AgentOptions, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    let started = Instant::now();
    let work_dir = WorkDir::new(&opts.work_dir);
    work_dir
        .create()
        .map_err(|(path, source)| AgentError::WorkDir { path, source })?;
    match raise_nofile_limit() {
        Ok((soft, hard)) => {
            tracing::info!(soft, hard, "open-file limit raised to the hard limit")
        }
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let file = opts
        .checkpoint
        .then(|| CheckpointFile::new(work_dir.checkpoint()));
    let saved = match &file {
        Some(f) => f.load()?,
        None => None,
    };
    let boot_id = boot_id(&opts);
    let mut exec_cfg = opts.executor.clone();
    exec_cfg.cache_dir = Some(work_dir.cache().into());
    let (runtime, attachment, events) = match &opts.guests {
        GuestHost::InProcess => Runtime::in_process(exec_cfg)?,
        GuestHost::RuntimeProcess(p) => {
            let mut ro = RuntimeOptions::new(work_dir.root(), exec_cfg)?;
            if let Some(program) = &p.program {
                ro.program = program.clone();
            }
            if let Some(args) = &p.args {
                ro.args = args.clone();
            }
            if let Some(t) = p.recovery_timeout {
                ro.recovery_timeout = t;
            }
            ro.boot_id = boot_id.clone();
            Runtime::attach(ro).await?
        }
    };
    tracing::info!(
        fuel_per_core_second = attachment.fuel_per_core_second,
        runtime = %attachment.runtime_id,
        live_guests = attachment.live.len(),
        "runtime attached: a task offered c cpus may burn c x this much fuel per second"
    );
    if opts.checkpoint {
        // A restarted agent reads its recovered tasks' output from their files.
        runtime.write_output_out_at_end();
    }
    let cfg = core_config(&opts, attachment.fuel_per_core_second, boot_id);
    let fetcher = Arc::new(Fetcher::new(work_dir.clone(), opts.max_blob_size));
    let metrics = Arc::new(AgentMetrics::new());
    let _http = match opts.http_listen {
        Some(addr) => Some(serve_metrics(addr, metrics.clone()).await?),
        None => None,
    };
    let (tx, rx) = mpsc::unbounded_channel::<Input>();
    let mut d = Driver {
        core: Agent::new(cfg.clone()).with_gc(opts.gc),
        runtime,
        runtime_id: attachment.runtime_id.clone(),
        events,
        last_seq: 0,
        skip_through: 0,
        seen_seq: 0,
        written: None,
        acked: 0,
        file,
        stats: CheckpointStats::default(),
        fetcher,
        tx,
        rx,
        instances: HashMap::new(),
        preparing: HashMap::new(),
        prepared: HashSet::new(),
        control: None,
        generation: 0,
        next_dial: Instant::now(),
        masters: opts.masters.clone().with_max_backoff(opts.max_backoff),
        connected_to: None,
        stop: None,
        left: false,
        pending_sends: Vec::new(),
        registered_at: None,
        started,
        metrics,
        opts,
    };
    let owned = d.recover(cfg, saved, attachment).await;
    clear_leftovers(&work_dir, &owned)
        .map_err(|(path, source)| AgentError::WorkDir { path, source })?;
    let result = d.run(shutdown).await;
    d.finish(result.is_ok()).await;
    result
}

/// The loop's state.
struct Driver {
    opts: AgentOptions,
    core: Agent,
    runtime: Runtime,
    runtime_id: String,
    events: Events,
    /// The last runtime event applied to the core.
    last_seq: u64,
    /// Replayed events up to this one are already in the recovered core.
    skip_through: u64,
    /// The last runtime event received (applied or skipped).
    seen_seq: u64,
    /// The core generation and event written in the last checkpoint.
    written: Option<(u64, u64)>,
    /// The last event acknowledged to the runtime.
    acked: u64,
    file: Option<CheckpointFile>,
    stats: CheckpointStats,
    fetcher: Arc<Fetcher>,
    tx: mpsc::UnboundedSender<Input>,
    rx: mpsc::UnboundedReceiver<Input>,
    /// Executor instances being prepared or started, by key.
    instances: HashMap<ExecutorKey, Instance>,
    /// Tasks being prepared off the loop, each with the sender whose drop stops its
    /// preparation ([`Action::CancelPrepare`]).
    preparing: HashMap<TaskKey, oneshot::Sender<()>>,
    control: Option<MessageWriter<quinn::SendStream>>,
    generation: u64,
    next_dial: Instant,
    /// The masters, what is known of the leader, and the delays between passes.
    masters: MasterSet,
    /// The master of the current (or last) link.
    connected_to: Option<String>,
    stop: Option<Stop>,
    /// `AgentLeft` came.
    left: bool,
    /// The driver's own messages to the master (`AgentLeaving`), sent after the core's.
    pending_sends: Vec<Message>,
    /// When the agent first registered in this run (for the recovery time).
    registered_at: Option<Instant>,
    started: Instant,
    /// What the agent counts (see [`crate::metrics`]).
    metrics: Arc<AgentMetrics>,
    /// Modules the runtime has prepared in this attachment (by module key): a task of one of
    /// them with nothing to fetch or lay out is prepared on the loop, without a hop through
    /// a task of its own.
    prepared: HashSet<String>,
}

/// An executor instance as the driver holds it.
enum Instance {
    /// Its component and directory are being prepared.
    Starting { run: u64 },
    /// Killed while being prepared: it will not be started.
    Cancelled { run: u64 },
    /// Started in the runtime.
    Running { run: u64 },
}

impl Instance {
    fn run(&self) -> u64 {
        match self {
            Instance::Starting { run }
            | Instance::Cancelled { run }
            | Instance::Running { run } => *run,
        }
    }
}

impl Driver {
    fn now(&self) -> std::time::Instant {
        Instant::now().into_std()
    }

    /// Rebuilds the core from the checkpoint (if any) against what the runtime still runs:
    /// with the same runtime, reads its replay up to [`Attachment::last_seq`] first (skipping
    /// what the checkpoint covers), so every guest is then live, ended, or never launched.
    /// Kills guests nobody owns. Returns the directories the recovered core owns.
    async fn recover(
        &mut self,
        cfg: AgentConfig,
        saved: Option<AgentCheckpoint>,
        attachment: Attachment,
    ) -> BTreeSet<GcTarget> {
        let now = self.now();
        let live: HashSet<GuestId> = attachment.live.iter().cloned().collect();
        if let Some(cp) = saved {
            // An in-process runtime's id is unique to it: never the checkpoint's.
            let same = cp.runtime_id == attachment.runtime_id;
            self.core = Agent::recover(cfg, cp.core, now).with_gc(self.opts.gc);
            let mut replayed = false;
            if same {
                self.skip_through = cp.last_seq;
                self.last_seq = cp.last_seq;
                // Covered by the checkpoint: the runtime may forget them.
                self.runtime.ack(cp.last_seq);
                self.acked = cp.last_seq;
                replayed = self.read_replay(attachment.last_seq).await;
            } else {
                tracing::warn!(old = %cp.runtime_id, new = %attachment.runtime_id,
                    "the runtime process the guests ran in is gone: their tasks are lost");
            }
            let mine = self.core.guests();
            let mut report = LiveGuests {
                tasks: mine
                    .tasks
                    .into_iter()
                    .filter(|k| live.contains(&task_guest(k)))
                    .collect(),
                executors: mine
                    .executors
                    .into_iter()
                    .filter(|id| live.contains(&executor_guest(id)))
                    .collect(),
                same_runtime: same,
                executor_tasks: Default::default(),
            };
            if same && replayed {
                // Which launches reached each live instance (consistent with the replay read).
                let has = report
                    .executors
                    .iter()
                    .filter_map(|id| {
                        let tasks = attachment.instance_tasks.get(&executor_guest(id))?;
                        let tasks = tasks.iter().map(|t| proto::TaskId::from(t.as_str()));
                        Some((id.clone(), tasks.collect()))
                    })
                    .collect();
                report.executor_tasks = Some(has);
            }
            for id in &report.executors {
                self.instances
                    .insert(id.key(), Instance::Running { run: id.run });
            }
            tracing::info!(
                tasks = self.core.task_count(),
                executors = self.core.executor_count(),
                live_tasks = report.tasks.len(),
                live_executors = report.executors.len(),
                same_runtime = same,
                "recovering from the checkpoint"
            );
            let now = self.now();
            self.core.handle(now, Event::Recovered(report));
        }
        let mine = self.core.guests();
        let owned: HashSet<GuestId> = mine
            .tasks
            .iter()
            .map(task_guest)
            .chain(mine.executors.iter().map(executor_guest))
            .collect();
        for g in attachment.live.iter().filter(|g| !owned.contains(*g)) {
            tracing::warn!(guest = %g, "killing a guest no task of this agent owns");
            self.runtime.kill(g);
        }
        self.core.owned_directories()
    }

    /// Applies the runtime's replayed events up to `until` (bounded: a runtime that does not
    /// deliver them is given up on with a warning; later ones are applied as they come). Whether it read them all.
    async fn read_replay(&mut self, until: u64) -> bool {
        let deadline = Instant::now() + self.opts.stop_timeout.max(Duration::from_secs(10));
        while self.seen_seq.max(self.skip_through) < until {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(ev)) => self.runtime_event(ev),
                Ok(None) => {
                    tracing::error!("the runtime process went away during recovery");
                    return false;
                }
                Err(_) => {
                    tracing::warn!(
                        seen = self.seen_seq,
                        until,
                        "the runtime's replay did not arrive in time"
                    );
                    return false;
                }
            }
        }
        true
    }

    async fn run(&mut self, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
        let endpoint = link::client_endpoint(&self.opts.tls, self.opts.tuning)?;
        let stale_after = crate::blob_gc::stale_after(self.opts.executor.compiler.as_ref());
        let mut disk_watch = (!self.opts.disk_watch_interval.is_zero()).then(|| {
            let mut i = tokio::time::interval(self.opts.disk_watch_interval);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        tokio::pin!(shutdown);
        let mut shutdown_done = false;
        loop {
            if self.control.is_none()
                && Instant::now() >= self.next_dial
                && !matches!(self.stop, Some(Stop::Leaving { .. }))
            {
                let result = {
                    let ep = &endpoint;
                    let pass = self.masters.dial_pass(|addr| async move {
                        master_set::connect_to(ep, &addr, Role::Agent, &[]).await
                    });
                    tokio::select! {
                        _ = &mut shutdown, if !shutdown_done => None,
                        r = pass => Some(r),
                    }
                };
                let Some(result) = result else {
                    shutdown_done = true;
                    self.begin_stop();
                    continue;
                };
                match result {
                    Ok((addr, link)) => {
                        self.generation += 1;
                        self.masters.reset_backoff();
                        tracing::info!(master = %addr, "connected to the master");
                        self.connected_to = Some(addr);
                        self.fetcher.connect(link.conn.clone());
                        self.control = Some(link.send);
                        spawn_reader(link.recv, link.conn, self.generation, self.tx.clone());
                        let now = self.now();
                        self.core.handle(now, Event::Connected);
                    }
                    Err(failed) => {
                        let delay = self.masters.retry_pause(failed.no_leader);
                        match &failed.fatal {
                            Some(fatal) => {
                                tracing::error!(masters = %self.masters, error = %fatal, ?delay, "a master refused this agent; retrying")
                            }
                            None => {
                                tracing::warn!(masters = %self.masters, error = %failed.last, ?delay, "cannot reach the leading master")
                            }
                        }
                        self.next_dial = Instant::now() + delay;
                    }
                }
            }

            let persisted = self.persist().await;
            if persisted {
                self.act().await;
            }
            if self.stop_progress().await {
                break;
            }

            let wake = match (self.core.poll_timeout(), self.control.is_none()) {
                (Some(t), true) => Some(Instant::from_std(t).min(self.next_dial)),
                (Some(t), false) => Some(Instant::from_std(t)),
                (None, true) => Some(self.next_dial),
                (None, false) => None,
            };
            let wake = if persisted {
                wake
            } else {
                let retry = Instant::now() + Duration::from_secs(1);
                Some(wake.map_or(retry, |w| w.min(retry)))
            };
            let wake = match self.stop {
                Some(Stop::Draining { until } | Stop::Leaving { until }) => {
                    Some(wake.map_or(until, |w| w.min(until)))
                }
                None => wake,
            };
            let sleep = net::timer::sleep_until(wake);
            tokio::select! {
                _ = &mut shutdown, if !shutdown_done => {
                    shutdown_done = true;
                    self.begin_stop();
                }
                input = self.rx.recv() => match input {
                    Some(input) => self.input(input),
                    None => break,
                },
                ev = self.events.recv() => match ev {
                    Some(ev) => self.runtime_event(ev),
                    None => {
                        tracing::error!("the runtime process is gone, and the guests with it: stopping (the next start reports their tasks)");
                        return Err(AgentError::Runtime(RuntimeError::Disconnected));
                    }
                },
                _ = sleep => {
                    let now = self.now();
                    self.core.handle_timeout(now);
                }
                _ = async {
                    match disk_watch.as_mut() {
                        Some(i) => {
                            i.tick().await;
                        }
                        None => std::future::pending().await,
                    }
                } => {
                    // Measured off the loop (a slow file system must not stall it), reported back.
                    let dir = self.fetcher.work_dir().clone();
                    let tx = self.tx.clone();
                    tokio::task::spawn_blocking(move || {
                        match dir.disk_space() {
                            Ok(space) => {
                                let _ = tx.send(Input::DiskUsage(space.usage));
                            }
                            Err(e) => tracing::warn!(error = %e, "cannot measure the work directory's disk"),
                        }
                        let stale = crate::blob_gc::remove_stale_temporaries(
                            &dir,
                            std::time::SystemTime::now(),
                            stale_after,
                        );
                        if stale > 0 {
                            tracing::info!(removed = stale, "temporary files of a dead fetch or compile removed");
                        }
                        let _ = tx.send(Input::Cached(crate::blob_gc::scan(&dir)));
                    });
                }
            }
            // The rest of the batch: whatever is ready, so a burst costs one checkpoint.
            loop {
                if let Ok(input) = self.rx.try_recv() {
                    self.input(input);
                } else if let Some(ev) = self.events.try_recv() {
                    self.runtime_event(ev);
                } else {
                    break;
                }
            }
        }
        if let Some(conn) = self.fetcher.disconnect() {
            conn.close(0u32.into(), b"agent shutting down");
        }
        self.control = None;
        endpoint.wait_idle().await;
        Ok(())
    }

    /// One input from the loop's channel.
    fn input(&mut self, input: Input) {
        let now = self.now();
        match input {
            Input::Core(Event::Message(Message::AgentLeft)) => {
                tracing::info!("the master recorded this agent's leaving");
                self.left = true;
            }
            Input::Core(ev) => {
                tracing::debug!(event = ?ev, "agent event");
                if let Event::Prepared { key, .. } = &ev {
                    self.preparing.remove(key);
                }
                if let Event::Prepared {
                    key,
                    result: Ok(()),
                } = &ev
                {
                    if let Some(info) = self.core.task_info(key) {
                        if info.executor.is_none() {
                            self.prepared.insert(launch::module_key(info));
                        }
                    }
                }
                if let Event::Message(Message::Registered { .. }) = &ev {
                    if self.registered_at.is_none() {
                        self.registered_at = Some(Instant::now());
                        tracing::info!(
                            elapsed_ms = self.started.elapsed().as_millis() as u64,
                            tasks = self.core.task_count(),
                            "registered: from start (runtime attached, core recovered) to registration"
                        );
                    }
                }
                self.core.handle(now, ev);
            }
            Input::InstanceReady { id, result } => {
                if let Some(ev) = self.start_instance(id, result) {
                    self.core.handle(now, ev);
                }
            }
            Input::DiskUsage(usage) => {
                self.core.set_disk_usage(usage);
                self.core.handle_timeout(now);
            }
            Input::Answer(msg) => self.core_send(msg),
            Input::Cached(files) => {
                // Decided and removed on the loop, against what the core uses right now: no
                // task can start using an entry in between.
                let in_use = self.core.blobs_in_use();
                let planned = crate::blob_gc::plan(&files, &in_use, self.opts.cache_size);
                if !planned.is_empty() {
                    let c = crate::blob_gc::remove(&files, &planned);
                    tracing::info!(
                        total_bytes = c.total_bytes,
                        removed_bytes = c.removed_bytes,
                        removed = c.removed.len(),
                        cap = self.opts.cache_size,
                        "blobs and compiled modules over the cache size: least recently used removed"
                    );
                }
            }
            Input::LinkDown {
                generation: g,
                why,
                not_leader,
            } => {
                if g == self.generation && self.control.is_some() {
                    drop_link(&mut self.control, &self.fetcher);
                    self.core.handle(now, Event::Disconnected);
                    match not_leader {
                        Some(leader) => {
                            // Stepped down: it is alive and knows (or will know) the leader.
                            tracing::warn!(%why, ?leader, "the master stopped leading; looking for the leader");
                            if leader.is_some() {
                                self.masters.set_hint(leader);
                            }
                            self.next_dial = Instant::now();
                        }
                        None => {
                            tracing::warn!(%why, "lost the master");
                            if let Some(addr) = &self.connected_to {
                                self.masters.demote(addr);
                            }
                            self.next_dial = Instant::now() + self.masters.retry_pause(false);
                        }
                    }
                }
            }
        }
    }

    /// One event from the runtime: skipped if the checkpoint covers it, else applied.
    fn runtime_event(&mut self, ev: RuntimeEvent) {
        self.seen_seq = self.seen_seq.max(ev.seq);
        if ev.seq <= self.skip_through {
            return;
        }
        self.last_seq = self.last_seq.max(ev.seq);
        let now = self.now();
        let core_event = match (parse_guest(&ev.guest), ev.event) {
            (Some(GuestName::Task(key)), GuestEvent::Task(e)) => {
                let Some(info) = self.core.task_info(&key) else {
                    tracing::debug!(guest = %ev.guest, "event of a task this agent no longer tracks ignored");
                    return;
                };
                let ended = match &e {
                    ExecEvent::Finished(o) => Some(o.clone()),
                    ExecEvent::Running => None,
                };
                let core_event = launch::event_of(&key, e, info.timeout_ms);
                if let (Some(o), Event::Finished { outcome, .. }) = (&ended, &core_event) {
                    if self.core.task_state(&key).is_some_and(|s| !s.is_terminal()) {
                        self.count_end(&key, outcome.state, o);
                    }
                }
                core_event
            }
            (Some(GuestName::Executor(id)), GuestEvent::Instance(e)) => {
                let ev = launch::executor_event(&id, e);
                if let Event::Executor(ExecutorEvent::Exited { id, .. }) = &ev {
                    let key = id.key();
                    if self.instances.get(&key).is_some_and(|i| i.run() == id.run) {
                        self.instances.remove(&key);
                    }
                }
                ev
            }
            (_, e) => {
                tracing::warn!(guest = %ev.guest, event = ?e, "runtime event of an unknown guest ignored");
                return;
            }
        };
        tracing::debug!(seq = ev.seq, event = ?core_event, "runtime event");
        self.core.handle(now, core_event);
        self.metrics
            .tasks_running
            .set(self.core.running_tasks() as i64);
    }

    /// Counts a one-shot task's end in the metrics, with the bytes of its output files.
    fn count_end(&self, key: &TaskKey, state: proto::TaskState, outcome: &TaskOutcome) {
        self.metrics.task_ended(state, outcome);
        let dir = self.fetcher.work_dir().task(key.0.as_str(), key.1.as_str());
        let streams = [
            ("stdout", dir.stdout(), &outcome.stdout_tail),
            ("stderr", dir.stderr(), &outcome.stderr_tail),
        ];
        for (stream, path, tail) in streams {
            // Output kept in memory (a task without a sandbox) has no file: its tail is all
            // of it, unless it was longer than the tail (then it spilled to the file).
            let bytes = std::fs::metadata(path).map_or(tail.len() as u64, |m| m.len());
            self.metrics.output(stream, bytes);
        }
    }

    /// Writes the checkpoint if the core or the applied events moved since the last one, then
    /// acknowledges the events it covers to the runtime. False when it could not be written:
    /// the actions then wait (nothing is told what the checkpoint does not hold), and the write
    /// is tried again a second later or at the next input.
    async fn persist(&mut self) -> bool {
        let mark = (self.core.generation(), self.last_seq);
        if self.written == Some(mark) {
            return true;
        }
        if let Some(file) = &self.file {
            let t = std::time::Instant::now();
            let cp = AgentCheckpoint {
                core: self.core.checkpoint(self.now()),
                runtime_id: self.runtime_id.clone(),
                last_seq: self.last_seq,
            };
            let f = file.clone();
            let r = tokio::task::spawn_blocking(move || f.store(&cp)).await;
            match r {
                Ok(Ok(n)) => {
                    self.stats.writes += 1;
                    self.stats.bytes += n as u64;
                    self.stats.last_bytes = n as u64;
                    self.stats.time += t.elapsed();
                }
                Ok(Err(e)) => {
                    // Not acknowledged, so the runtime keeps the events; retried.
                    tracing::error!(error = %e, "cannot write the checkpoint; actions wait");
                    return false;
                }
                Err(e) => {
                    tracing::error!(error = %e, "checkpoint writer failed; actions wait");
                    return false;
                }
            }
        }
        self.written = Some(mark);
        if self.last_seq > self.acked {
            self.runtime.ack(self.last_seq);
            self.acked = self.last_seq;
        }
        true
    }

    /// Carries out the core's actions and hands out due collections.
    async fn act(&mut self) {
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::Send(msg) => self.send(&msg).await,
                Action::Prepare { framework_id, task }
                    if self.prepared_in_place(&framework_id, &task) =>
                {
                    let key = (framework_id, task.task_id.clone());
                    self.metrics.prepared(true, 0.0);
                    let now = self.now();
                    self.core.handle(
                        now,
                        Event::Prepared {
                            key,
                            result: Ok(()),
                        },
                    );
                }
                Action::Prepare { framework_id, task } => {
                    let tx = self.tx.clone();
                    // Through the loop's channel, ahead of `Prepared`: its `TASK_STARTING` goes
                    // out after a checkpoint holds it, like every update.
                    let _ = tx.send(Input::Core(Event::Preparing {
                        key: (framework_id.clone(), task.task_id.clone()),
                    }));
                    let fetcher = self.fetcher.clone();
                    let runtime = self.runtime.clone();
                    let metrics = self.metrics.clone();
                    let (stop_tx, stop) = oneshot::channel();
                    self.preparing
                        .insert((framework_id.clone(), task.task_id.clone()), stop_tx);
                    tokio::spawn(async move {
                        let key = (framework_id.clone(), task.task_id.clone());
                        let prepared =
                            prepare(&fetcher, &runtime, &metrics, &framework_id, &task, stop);
                        let Some(result) = prepared.await else {
                            tracing::debug!(task = %key.1, "preparation of a killed task stopped");
                            return;
                        };
                        if let Err((_, msg)) = &result {
                            tracing::warn!(task = %key.1, error = %msg, "task preparation failed");
                        }
                        let _ = tx.send(Input::Core(Event::Prepared { key, result }));
                    });
                }
                // Its stop sender dropped: the preparation stops at its compile.
                Action::CancelPrepare { key } => drop(self.preparing.remove(&key)),
                Action::Launch { framework_id, task } => {
                    let key = (framework_id.clone(), task.task_id.clone());
                    let spec = launch::spec(
                        self.fetcher.work_dir(),
                        &self.opts.datasets,
                        &framework_id,
                        &task,
                    );
                    self.runtime.launch(task_guest(&key), spec);
                    self.metrics.launches.inc();
                }
                Action::Kill { key } => self.runtime.kill(&task_guest(&key)),
                Action::Executor(ExecutorAction::Start { id, info, datasets }) => {
                    self.instances
                        .insert(id.key(), Instance::Starting { run: id.run });
                    let fetcher = self.fetcher.clone();
                    let tx = self.tx.clone();
                    let sets = self.opts.datasets.clone();
                    tokio::spawn(async move {
                        let result =
                            fetcher
                                .prepare_executor(&id.framework_id, &info)
                                .await
                                .map(|_| {
                                    launch::instance_spec(
                                        fetcher.work_dir(),
                                        &sets,
                                        &id.framework_id,
                                        &info,
                                        &datasets,
                                    )
                                });
                        let _ = tx.send(Input::InstanceReady { id, result });
                    });
                }
                Action::Executor(other) => self.instance_action(other),
                Action::Query { request_id, work } => self.answer_query(request_id, work),
            }
        }
        while let Some(target) = self.core.poll_gc() {
            let runtime = &self.runtime;
            collect(
                self.fetcher.work_dir(),
                &|d| runtime.forget_output(d),
                &target,
            );
        }
    }

    /// Whether `task` needs no preparation work: a one-shot task without a sandbox whose module
    /// the runtime has prepared and whose blob is here, and no directory of an earlier task
    /// of its id to remove (a couple of lookups in the kernel's directory cache). Such a task
    /// is prepared on the loop.
    fn prepared_in_place(&self, fid: &FrameworkId, task: &TaskInfo) -> bool {
        task.executor.is_none()
            && !launch::needs_sandbox(task)
            && self.prepared.contains(&launch::module_key(task))
            && self.fetcher.blob_in_place(task.module)
            && !self.fetcher.task_dir_exists(fid, task)
    }

    /// Answers a master's query: reads output off the loop (answered through the loop's
    /// channel), renders the metrics at once.
    fn answer_query(&mut self, request_id: u64, work: QueryWork) {
        match work {
            QueryWork::Metrics => {
                self.metrics
                    .tasks_running
                    .set(self.core.running_tasks() as i64);
                let text = self.metrics.encode();
                self.core_send(Message::AgentAnswer {
                    request_id,
                    answer: AgentAnswer::Metrics { text },
                });
            }
            QueryWork::ReadOutput {
                dir,
                stream,
                offset,
                length,
                ended,
            } => {
                let work_dir = self.fetcher.work_dir().clone();
                let tx = self.tx.clone();
                let runtime = self.runtime.clone();
                tokio::spawn(async move {
                    // Output held in memory where the guests run first, then the file.
                    let in_memory = match &dir {
                        GcTarget::Task {
                            framework_id,
                            task_id,
                        } => {
                            let t = work_dir.task(framework_id.as_str(), task_id.as_str());
                            let length = u64::from(length.min(proto::MAX_OUTPUT_READ));
                            let stderr = stream == proto::OutputStream::Stderr;
                            runtime
                                .read_output(t.path(), stderr, offset, length)
                                .await
                                .ok()
                                .flatten()
                        }
                        GcTarget::Executor { .. } => None,
                    };
                    let answer = match in_memory {
                        Some((data, size)) => AgentAnswer::Output { data, size, ended },
                        None => tokio::task::spawn_blocking(move || {
                            crate::output_read::read_output(
                                &work_dir, &dir, stream, offset, length, ended,
                            )
                        })
                        .await
                        .unwrap_or_else(|e| AgentAnswer::Failed {
                            message: format!("output read failed: {e}"),
                        }),
                    };
                    let _ = tx.send(Input::Answer(Message::AgentAnswer { request_id, answer }));
                });
            }
        }
    }

    async fn send(&mut self, msg: &Message) {
        if let Some(send) = self.control.as_mut() {
            if let Err(e) = send.send(msg).await {
                tracing::warn!(error = %e, "control stream write failed");
                drop_link(&mut self.control, &self.fetcher);
                let now = self.now();
                self.core.handle(now, Event::Disconnected);
                self.next_dial = Instant::now();
            }
        }
    }

    /// Starts a prepared instance unless it was cancelled meanwhile; returns the core's event
    /// when it does not start (preparation failed, or cancelled).
    fn start_instance(
        &mut self,
        id: ExecutorRun,
        result: Result<InstanceSpec, PrepareError>,
    ) -> Option<Event> {
        let key = id.key();
        let starting = matches!(
            self.instances.get(&key),
            Some(Instance::Starting { run }) if *run == id.run
        );
        if !starting {
            if self.instances.get(&key).is_some_and(|i| i.run() == id.run) {
                self.instances.remove(&key);
            }
            return Some(launch::executor_start_failed(
                &id,
                (Reason::Killed, "stopped before it started".to_owned()),
            ));
        }
        let spec = match result {
            Ok(spec) => spec,
            Err(why) => {
                tracing::warn!(executor = %id.executor_id, error = %why.1, "executor preparation failed");
                self.instances.remove(&key);
                return Some(launch::executor_start_failed(&id, why));
            }
        };
        self.runtime.start_instance(executor_guest(&id), spec);
        self.instances
            .insert(key, Instance::Running { run: id.run });
        None
    }

    /// Carries out an executor action other than `Start` on the instance it names (actions
    /// for a run that is gone are dropped).
    fn instance_action(&mut self, action: ExecutorAction) {
        let id = match &action {
            ExecutorAction::Start { id, .. }
            | ExecutorAction::SetEnvelope { id, .. }
            | ExecutorAction::Launch { id, .. }
            | ExecutorAction::KillTask { id, .. }
            | ExecutorAction::Message { id, .. }
            | ExecutorAction::Shutdown { id }
            | ExecutorAction::Kill { id } => id.clone(),
        };
        let Some(inst) = self.instances.get_mut(&id.key()) else {
            return;
        };
        if inst.run() != id.run {
            return;
        }
        match inst {
            Instance::Running { .. } => {}
            Instance::Starting { run } => {
                if matches!(action, ExecutorAction::Kill { .. }) {
                    *inst = Instance::Cancelled { run: *run };
                }
                return;
            }
            Instance::Cancelled { .. } => return,
        }
        let g = executor_guest(&id);
        let rt = &self.runtime;
        match action {
            ExecutorAction::Start { .. } => {}
            ExecutorAction::SetEnvelope { resources, .. } => {
                rt.set_envelope(&g, resources.cpus_milli, resources.mem)
            }
            ExecutorAction::Launch { task, .. } => {
                rt.instance_launch(&g, launch::instance_task(&task))
            }
            ExecutorAction::KillTask { task_id, .. } => rt.instance_kill_task(&g, task_id.as_str()),
            ExecutorAction::Message { data, .. } => rt.instance_message(&g, data),
            ExecutorAction::Shutdown { .. } => rt.instance_shutdown(&g),
            ExecutorAction::Kill { .. } => rt.kill(&g),
        }
    }

    /// `shutdown` completed: starts the stop [`AgentOptions::on_stop`] asks for.
    fn begin_stop(&mut self) {
        let until = Instant::now() + self.opts.stop_timeout;
        match self.effective_on_stop() {
            OnStop::Quit => {
                tracing::info!("stopping");
                self.stop = Some(Stop::Leaving {
                    until: Instant::now(),
                });
                self.left = true;
            }
            OnStop::KeepTasks => {
                tracing::info!(
                    tasks = self.core.task_count(),
                    "stopping; tasks keep running for the next agent on this work directory"
                );
                self.stop = Some(Stop::Leaving { until });
                self.leave(true);
            }
            OnStop::KillTasks => {
                tracing::info!(
                    tasks = self.core.task_count(),
                    "stopping; killing every task and executor and reporting them"
                );
                let now = self.now();
                self.core.drain(now);
                self.stop = Some(Stop::Draining { until });
            }
        }
    }

    fn effective_on_stop(&self) -> OnStop {
        match (self.opts.on_stop, &self.opts.guests) {
            (OnStop::KeepTasks, GuestHost::InProcess) => OnStop::KillTasks,
            (s, _) => s,
        }
    }

    /// Sends `AgentLeaving` if connected (else there is nobody to wait for).
    fn leave(&mut self, keep_tasks: bool) {
        if self.core.is_registered() {
            self.core_send(Message::AgentLeaving { keep_tasks });
        } else {
            self.left = true;
        }
    }

    /// Queues a message of the driver's own to the master (sent after the core's actions).
    fn core_send(&mut self, msg: Message) {
        self.pending_sends.push(msg);
    }

    /// Moves a stop along; true when the loop should end.
    async fn stop_progress(&mut self) -> bool {
        for msg in std::mem::take(&mut self.pending_sends) {
            self.send(&msg).await;
        }
        let now = Instant::now();
        match self.stop {
            None => false,
            Some(Stop::Draining { until }) => {
                if self.core.is_drained() || now >= until {
                    if !self.core.is_drained() {
                        tracing::warn!(
                            tasks = self.core.task_count(),
                            executors = self.core.executor_count(),
                            "stop: not every terminal update was acknowledged in time"
                        );
                    }
                    self.stop = Some(Stop::Leaving {
                        until: now + self.opts.stop_timeout,
                    });
                    self.leave(false);
                    for msg in std::mem::take(&mut self.pending_sends) {
                        self.send(&msg).await;
                    }
                }
                false
            }
            Some(Stop::Leaving { until }) => {
                if self.left || self.control.is_none() || now >= until {
                    if !self.left {
                        tracing::warn!("stop: the master did not confirm the leaving in time");
                    }
                    return true;
                }
                false
            }
        }
    }

    /// After the loop: detach leaving the guests running (their checkpoint written), or stop
    /// the runtime and remove the checkpoint.
    async fn finish(&mut self, clean: bool) {
        let kill = clean && self.effective_on_stop() == OnStop::KillTasks;
        if kill {
            self.runtime.clone().close(true).await;
            if let Some(f) = &self.file {
                if let Err(e) = f.remove() {
                    tracing::warn!(error = %e, "cannot remove the checkpoint");
                }
            }
        } else {
            self.persist().await;
            self.runtime.clone().close(false).await;
        }
        if self.stats.writes > 0 {
            tracing::info!(
                writes = self.stats.writes,
                bytes = self.stats.bytes,
                last_bytes = self.stats.last_bytes,
                mean_us = (self.stats.time.as_micros() as u64) / self.stats.writes,
                "checkpoint writes"
            );
        }
    }
}

/// Removes a directory the core collects: renamed into `trash/` at once (so a task or executor
/// of the same id laid out next never meets it), deleted on the blocking pool; a task's output
/// held in memory by the runtime is dropped with it.
fn collect(work_dir: &WorkDir, forget_output: &dyn Fn(&std::path::Path), target: &GcTarget) {
    let dir = match target {
        GcTarget::Task {
            framework_id,
            task_id,
        } => {
            let dir = work_dir.task(framework_id.as_str(), task_id.as_str());
            forget_output(dir.path());
            dir.path().to_path_buf()
        }
        GcTarget::Executor {
            framework_id,
            executor_id,
        } => work_dir
            .executor(framework_id.as_str(), executor_id.as_str())
            .path()
            .to_path_buf(),
    };
    match work_dir.move_to_trash(&dir) {
        Ok(Some(trashed)) => {
            tracing::info!(dir = %dir.display(), "garbage-collecting a directory");
            delete_in_background(trashed);
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot collect a directory"),
    }
}

/// Raises this process's soft limit of open files to its hard limit and returns both: an agent
/// holding thousands of tasks (each with open files if it has a sandbox, and the module
/// cache's, the sockets...) should not fail on the distribution's default soft limit of 1024.
pub fn raise_nofile_limit() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit that the calls read or fill in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// Deletes `dir` on the blocking pool, logging (not failing) on error.
fn delete_in_background(dir: PathBuf) {
    tokio::task::spawn_blocking(move || {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot delete a collected directory");
            }
        }
    });
}

/// Clears a previous run's directories: those under `frameworks/` that `owned` (the recovered
/// core's tasks, executors and pending collections) does not name, and whatever `trash/` still
/// holds, go to the blocking pool before anything is launched. With nothing owned, all of
/// `frameworks/` goes at once (one rename).
fn clear_leftovers(
    work_dir: &WorkDir,
    owned: &BTreeSet<GcTarget>,
) -> Result<(), (PathBuf, std::io::Error)> {
    let trash = work_dir.trash();
    let old_trash = match std::fs::read_dir(&trash) {
        Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => Vec::new(),
    };
    let frameworks = work_dir.frameworks();
    let has_leftovers = std::fs::read_dir(&frameworks)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    let mut moved = Vec::new();
    if has_leftovers && owned.is_empty() {
        if let Some(m) = work_dir
            .move_to_trash(&frameworks)
            .map_err(|e| (frameworks.clone(), e))?
        {
            moved.push(m);
        }
        std::fs::create_dir_all(&frameworks).map_err(|e| (frameworks.clone(), e))?;
        tracing::info!("removing a previous run's task and executor directories");
    } else if has_leftovers {
        for (fid, kind, id, path) in framework_dirs(work_dir) {
            let target = match kind {
                DirKind::Task => GcTarget::Task {
                    framework_id: fid.as_str().into(),
                    task_id: id.as_str().into(),
                },
                DirKind::Executor => GcTarget::Executor {
                    framework_id: fid.as_str().into(),
                    executor_id: id.as_str().into(),
                },
            };
            if owned.contains(&target) {
                continue;
            }
            tracing::info!(dir = %path.display(), "removing a previous run's leftover directory");
            if let Some(m) = work_dir
                .move_to_trash(&path)
                .map_err(|e| (path.clone(), e))?
            {
                moved.push(m);
            }
        }
    }
    for dir in old_trash.into_iter().chain(moved) {
        delete_in_background(dir);
    }
    Ok(())
}

enum DirKind {
    Task,
    Executor,
}

/// Every `frameworks/<fid>/{tasks,executors}/<id>` directory.
fn framework_dirs(work_dir: &WorkDir) -> Vec<(String, DirKind, String, PathBuf)> {
    let names = |dir: &std::path::Path| -> Vec<(String, PathBuf)> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for (fid, fdir) in names(&work_dir.frameworks()) {
        for (tid, path) in names(&fdir.join("tasks")) {
            out.push((fid.clone(), DirKind::Task, tid, path));
        }
        for (eid, path) in names(&fdir.join("executors")) {
            out.push((fid.clone(), DirKind::Executor, eid, path));
        }
    }
    out
}

/// A boot id unique to this run of the agent (its updates' uuids start with it).
fn boot_id(opts: &AgentOptions) -> String {
    format!(
        "{}-{}",
        opts.info.hostname,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    )
}

/// The core's configuration: the options' agent info with the runtime's fuel rate attached
/// (as [`FUEL_RATE_ATTRIBUTE`]), and this run's boot id.
fn core_config(opts: &AgentOptions, fuel_rate: u64, boot_id: String) -> AgentConfig {
    let mut info = opts.info.clone();
    info.attributes.retain(|(k, _)| k != FUEL_RATE_ATTRIBUTE);
    info.attributes
        .push((FUEL_RATE_ATTRIBUTE.to_owned(), fuel_rate.to_string()));
    info.datasets = opts.datasets.iter().map(|(n, _)| n.clone()).collect();
    AgentConfig {
        info,
        boot_id,
        status_retry: opts.status_retry,
        stoppable_preparation: opts.executor.compiler.is_some(),
    }
}

/// How long a reader whose control stream ended waits for the connection's close reason.
const CLOSE_REASON_WAIT: Duration = Duration::from_secs(1);

/// Forgets the control stream and closes the connection (fetches in flight fail).
fn drop_link(control: &mut Option<MessageWriter<quinn::SendStream>>, fetcher: &Fetcher) {
    *control = None;
    if let Some(conn) = fetcher.disconnect() {
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
        let (why, mut not_leader) = loop {
            match recv.recv().await {
                // A leader stepping down may say so before it closes: the core never sees it.
                Ok(Some(Message::NotLeader { leader })) => {
                    break (
                        "the master is no longer the leader".to_owned(),
                        Some(leader),
                    )
                }
                Ok(Some(msg)) => {
                    if tx.send(Input::Core(Event::Message(msg))).is_err() {
                        return;
                    }
                }
                Ok(None) => {
                    // A master stepping down may end the stream before its not-leader close,
                    // which follows just behind.
                    let _ = tokio::time::timeout(CLOSE_REASON_WAIT, conn.closed()).await;
                    break ("the master closed the control stream".to_owned(), None);
                }
                Err(e) => {
                    break match conn.close_reason() {
                        Some(reason) => (reason.to_string(), None),
                        None => (e.to_string(), None),
                    }
                }
            }
        };
        if not_leader.is_none()
            && conn
                .close_reason()
                .is_some_and(|r| link::is_not_leader_close(&r))
        {
            not_leader = Some(None);
        }
        let _ = tx.send(Input::LinkDown {
            generation,
            why,
            not_leader,
        });
    });
}

/// Carries out [`Action::Prepare`]: the fetcher lays out the task's directory and brings its
/// module and files, then the runtime compiles the module, unless `stop` fires first (its
/// sender dropped: the task was killed): `None` then. The fetch is not stopped: a blob is
/// fetched once for every task that needs it, and another may wait for this one's. A task of
/// an executor only has its files placed in the executor's sandbox (the component was fetched
/// when it started).
async fn prepare(
    fetcher: &Fetcher,
    runtime: &Runtime,
    metrics: &AgentMetrics,
    fid: &FrameworkId,
    task: &TaskInfo,
    stop: oneshot::Receiver<()>,
) -> Option<Result<(), PrepareError>> {
    if let Some(exec) = &task.executor {
        return Some(
            fetcher
                .prepare_executor_task(fid, &exec.executor_id, task)
                .await,
        );
    }
    let module = match fetcher.prepare(fid, task).await {
        Ok(module) => module,
        Err(e) => return Some(Err(e)),
    };
    let key = launch::module_key(task);
    let info = tokio::select! {
        // Dropped there, the runtime's prepare is cancelled, which stops a compile no other
        // task waits for.
        _ = stop => return None,
        info = runtime.prepare(&key, &module) => info,
    };
    let info = match info {
        Ok(info) => info,
        Err(e) => return Some(Err(launch::runtime_prepare_failed(e))),
    };
    metrics.prepared(info.cached, info.secs);
    Some(Ok(()))
}

/// Serves `GET /metrics` on `addr` (loopback only) until the returned guard is dropped.
async fn serve_metrics(
    addr: SocketAddr,
    metrics: Arc<AgentMetrics>,
) -> Result<AbortOnDrop, AgentError> {
    let refuse = |message: String| AgentError::Http { addr, message };
    if !addr.ip().is_loopback() {
        return Err(refuse(
            "only loopback addresses are served (no TLS here); read remote agents' metrics through the master".into(),
        ));
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| refuse(e.to_string()))?;
    let bound = listener.local_addr().map_err(|e| refuse(e.to_string()))?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.encode(),
                )
            }
        }),
    );
    tracing::info!(addr = %bound, "serving the agent's /metrics");
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the agent's metrics listener stopped");
        }
    });
    Ok(AbortOnDrop(task))
}

/// Aborts a spawned task when dropped (the metrics listener ends with the agent's run).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits (a liveness bound, not a timing claim) until `dir` has no entries.
    async fn until_empty(dir: &std::path::Path) {
        for _ in 0..600 {
            if std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{} never emptied", dir.display());
    }

    #[tokio::test]
    async fn a_previous_runs_directories_are_cleared_and_blobs_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let w = WorkDir::new(tmp.path());
        w.create().unwrap();
        let t = w.task("f1", "t1");
        std::fs::create_dir_all(t.sandbox()).unwrap();
        std::fs::write(t.sandbox().join("big"), vec![0u8; 1 << 20]).unwrap();
        std::fs::create_dir_all(w.executor("f1", "e1").sandbox()).unwrap();
        std::fs::create_dir_all(w.trash().join("half-deleted")).unwrap();
        std::fs::write(w.blob("ab12"), b"blob").unwrap();

        clear_leftovers(&w, &BTreeSet::new()).unwrap();
        assert!(w.frameworks().is_dir());
        assert_eq!(std::fs::read_dir(w.frameworks()).unwrap().count(), 0);
        until_empty(&w.trash()).await;
        assert_eq!(std::fs::read(w.blob("ab12")).unwrap(), b"blob");

        // A clean work directory has nothing to clear.
        clear_leftovers(&w, &BTreeSet::new()).unwrap();
        assert_eq!(std::fs::read_dir(w.trash()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn only_directories_no_recovered_task_or_executor_owns_are_leftovers() {
        let tmp = tempfile::tempdir().unwrap();
        let w = WorkDir::new(tmp.path());
        w.create().unwrap();
        for (f, t) in [("f1", "kept"), ("f1", "gone"), ("f2", "gone")] {
            std::fs::create_dir_all(w.task(f, t).sandbox()).unwrap();
        }
        std::fs::create_dir_all(w.executor("f1", "e1").sandbox()).unwrap();
        std::fs::create_dir_all(w.executor("f1", "e2").sandbox()).unwrap();
        let owned = BTreeSet::from([
            GcTarget::Task {
                framework_id: "f1".into(),
                task_id: "kept".into(),
            },
            GcTarget::Executor {
                framework_id: "f1".into(),
                executor_id: "e1".into(),
            },
        ]);
        clear_leftovers(&w, &owned).unwrap();
        assert!(w.task("f1", "kept").sandbox().is_dir());
        assert!(w.executor("f1", "e1").sandbox().is_dir());
        assert!(!w.task("f1", "gone").path().exists());
        assert!(!w.task("f2", "gone").path().exists());
        assert!(!w.executor("f1", "e2").path().exists());
        until_empty(&w.trash()).await;
    }

    #[test]
    fn guest_ids_name_tasks_and_executor_runs_both_ways() {
        let key: TaskKey = ("f.1".into(), "t-1".into());
        assert_eq!(task_guest(&key), "task/f.1/t-1");
        assert_eq!(parse_guest(&task_guest(&key)), Some(GuestName::Task(key)));
        let run = ExecutorRun {
            framework_id: "f".into(),
            executor_id: "e_1".into(),
            run: 7,
        };
        assert_eq!(
            parse_guest(&executor_guest(&run)),
            Some(GuestName::Executor(run))
        );
        assert_eq!(parse_guest("exec/f/e/x"), None);
        assert_eq!(parse_guest("other"), None);
    }

    #[tokio::test]
    async fn a_collected_directory_leaves_at_once_and_its_id_can_start_again() {
        let tmp = tempfile::tempdir().unwrap();
        let w = WorkDir::new(tmp.path());
        w.create().unwrap();
        let t = w.task("f1", "t1");
        std::fs::create_dir_all(t.sandbox()).unwrap();
        let forgotten = std::sync::Mutex::new(Vec::new());
        let forget = |d: &std::path::Path| forgotten.lock().unwrap().push(d.to_owned());
        collect(
            &w,
            &forget,
            &GcTarget::Task {
                framework_id: "f1".into(),
                task_id: "t1".into(),
            },
        );
        assert!(!t.path().exists());
        assert_eq!(*forgotten.lock().unwrap(), [t.path().to_owned()]);
        // Laid out afresh right away, the new directory is not touched by the deletion.
        std::fs::create_dir_all(t.sandbox()).unwrap();
        until_empty(&w.trash()).await;
        assert!(t.sandbox().is_dir());
        // A directory that is not there is nothing to collect.
        collect(
            &w,
            &forget,
            &GcTarget::Executor {
                framework_id: "f1".into(),
                executor_id: "e9".into(),
            },
        );
    }
}
