//! The agent's driver: the loop around the sans-IO [`Agent`] core.
//!
//! One loop owns the core. It dials the master (redialling with jittered exponential backoff
//! whenever the link drops; the core then re-registers and resends unacknowledged status
//! updates), feeds the core, and carries out its actions by calling into the
//! [`Fetcher`], the [`launch`] translator and the
//! [`Executor`]. Everything that takes time (the control stream's reader, fetches and
//! compilation, running guests) runs in tasks of its own and reports back through one channel,
//! so the core sees a single ordered stream of events.
//!
//! Framework executors: [`ExecutorAction::Start`] fetches the component and lays out the
//! executor's directory in a task of its own, then (back in the loop) starts the instance;
//! the other executor actions are calls on its [`InstanceHandle`]. The handles live next to the
//! one-shot guests' kill handles in `Guests`, so however the loop ends, no guest of either
//! kind outlives it.
//!
//! Garbage collection: the core decides when an ended task's or executor's directory goes
//! ([`crate::core::gc`]); the loop renames each one the core hands out into `trash/` and
//! deletes it on the blocking pool, and reports the work directory's disk usage every
//! [`AgentOptions::disk_watch_interval`]. At start, everything under `frameworks/` is a
//! previous run's leftover (no guest survives an agent restart) and is cleared the same way.

use crate::core::{
    Action, Agent, AgentConfig, Event, ExecutorAction, ExecutorEvent, ExecutorKey, ExecutorRun,
    GcPolicy, GcTarget, TaskKey,
};
use crate::executor::{
    Executor, ExecutorConfig, InstanceHandle, InstanceSpec, KillHandle, PoolingConfig,
};
use crate::fetch::{Fetcher, PrepareError};
use crate::launch;
use crate::workdir::WorkDir;
use net::link::{self, Link, LinkError};
use net::tls::{PeerTls, TransportTuning};
use net::{MessageReader, MessageWriter};
use proto::{AgentInfo, FrameworkId, Message, Role, TaskInfo};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Kept here for callers of the driver's former home of the mapping; see [`launch::outcome_of`].
pub use crate::launch::outcome_of;

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
    /// How often the work directory's disk usage is measured (it scales the GC delay); zero:
    /// never, so the delay is never scaled.
    pub disk_watch_interval: Duration,
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
            datasets: Vec::new(),
            gc: GcPolicy::default(),
            disk_watch_interval: Duration::from_secs(60),
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
    LinkDown {
        generation: u64,
        why: String,
    },
    /// An executor's component and directory are ready (or could not be made ready).
    InstanceReady {
        id: ExecutorRun,
        result: Result<InstanceSpec, PrepareError>,
    },
    /// The used fraction of the work directory's file system, just measured.
    DiskUsage(f64),
}

/// Runs an agent until `shutdown` completes.
pub async fn run(opts: AgentOptions, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    let work_dir = WorkDir::new(&opts.work_dir);
    work_dir
        .create()
        .map_err(|(path, source)| AgentError::WorkDir { path, source })?;
    clear_leftovers(&work_dir).map_err(|(path, source)| AgentError::WorkDir { path, source })?;
    let mut exec_cfg = opts.executor.clone();
    exec_cfg.cache_dir = Some(work_dir.cache().into());
    let executor = Executor::new(exec_cfg)?;
    let fuel_rate = executor.fuel_per_core_second();
    tracing::info!(
        fuel_per_core_second = fuel_rate,
        pool_slots = executor.stats().pool_slots,
        "executor ready: a task offered c cpus may burn c x this much fuel per second"
    );
    let endpoint = link::client_endpoint(&opts.tls, opts.tuning)?;
    let mut core = Agent::new(core_config(&opts, fuel_rate)).with_gc(opts.gc);
    let mut disk_watch = (!opts.disk_watch_interval.is_zero()).then(|| {
        let mut i = tokio::time::interval(opts.disk_watch_interval);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let fetcher = Arc::new(Fetcher::new(work_dir, opts.max_blob_size));
    let (tx, mut rx) = mpsc::unbounded_channel::<Input>();
    let mut guests = Guests::default();
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
                    fetcher.connect(link.conn.clone());
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
                            drop_link(&mut control, &fetcher);
                            core.handle(Instant::now().into_std(), Event::Disconnected);
                            next_dial = Instant::now();
                        }
                    }
                }
                Action::Prepare { framework_id, task } => {
                    let fetcher = fetcher.clone();
                    let executor = executor.clone();
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let key = (framework_id.clone(), task.task_id.clone());
                        let result = prepare(&fetcher, &executor, &framework_id, &task).await;
                        if let Err((_, msg)) = &result {
                            tracing::warn!(task = %key.1, error = %msg, "task preparation failed");
                        }
                        let _ = tx.send(Input::Core(Event::Prepared { key, result }));
                    });
                }
                Action::Launch { framework_id, task } => {
                    let key = (framework_id.clone(), task.task_id.clone());
                    let spec =
                        launch::spec(fetcher.work_dir(), &opts.datasets, &framework_id, &task);
                    let tx = tx.clone();
                    let k = key.clone();
                    let timeout_ms = task.timeout_ms;
                    let handle = executor.launch(
                        spec,
                        Box::new(move |ev| {
                            let _ = tx.send(Input::Core(launch::event_of(&k, ev, timeout_ms)));
                        }),
                    );
                    guests.tasks.insert(key, handle);
                }
                Action::Kill { key } => {
                    if let Some(h) = guests.tasks.get(&key) {
                        h.kill();
                    }
                }
                Action::Executor(ExecutorAction::Start { id, info, datasets }) => {
                    guests
                        .instances
                        .insert(id.key(), Instance::Starting { run: id.run });
                    let fetcher = fetcher.clone();
                    let tx = tx.clone();
                    let sets = opts.datasets.clone();
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
                Action::Executor(other) => guests.instance_action(other),
            }
        }
        while let Some(target) = core.poll_gc() {
            collect(fetcher.work_dir(), &target);
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
                        guests.tasks.remove(key);
                    }
                    if let Event::Executor(ExecutorEvent::Exited { id, .. }) = &ev {
                        guests.instance_exited(id);
                    }
                    if let Event::Message(Message::Shutdown { .. }) = &ev {
                        // The master forgot us: start afresh on a new connection.
                        core.handle(Instant::now().into_std(), ev);
                        continue;
                    }
                    core.handle(Instant::now().into_std(), ev);
                }
                Some(Input::InstanceReady { id, result }) => {
                    let ev = guests.start_instance(&executor, &tx, id, result);
                    if let Some(ev) = ev {
                        core.handle(Instant::now().into_std(), ev);
                    }
                }
                Some(Input::DiskUsage(usage)) => {
                    core.set_disk_usage(usage);
                    core.handle_timeout(Instant::now().into_std());
                }
                Some(Input::LinkDown { generation: g, why }) => {
                    if g == generation && control.is_some() {
                        tracing::warn!(%why, "lost the master");
                        drop_link(&mut control, &fetcher);
                        core.handle(Instant::now().into_std(), Event::Disconnected);
                        next_dial = Instant::now() + backoff.next_delay();
                    }
                }
                None => break,
            },
            _ = sleep => core.handle_timeout(Instant::now().into_std()),
            _ = async {
                match disk_watch.as_mut() {
                    Some(i) => {
                        i.tick().await;
                    }
                    None => std::future::pending().await,
                }
            } => {
                // Measured off the loop (a slow file system must not stall it), reported back.
                let dir = fetcher.work_dir().clone();
                let tx = tx.clone();
                tokio::task::spawn_blocking(move || match dir.disk_space() {
                    Ok(space) => {
                        let _ = tx.send(Input::DiskUsage(space.usage));
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot measure the work directory's disk"),
                });
            }
        }
    }
    drop(guests);
    if let Some(conn) = fetcher.disconnect() {
        conn.close(0u32.into(), b"agent shutting down");
    }
    endpoint.wait_idle().await;
    Ok(())
}

/// Removes a directory the core collects: renamed into `trash/` at once (so a task or executor
/// of the same id laid out next never meets it), deleted on the blocking pool.
fn collect(work_dir: &WorkDir, target: &GcTarget) {
    let dir = match target {
        GcTarget::Task {
            framework_id,
            task_id,
        } => work_dir
            .task(framework_id.as_str(), task_id.as_str())
            .path()
            .to_path_buf(),
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

/// Clears a previous run's directories: `frameworks/` (every task and executor directory, since
/// no guest survives a restart) and whatever `trash/` still holds go to the blocking pool, and an
/// empty `frameworks/` takes their place before anything is launched.
fn clear_leftovers(work_dir: &WorkDir) -> Result<(), (PathBuf, std::io::Error)> {
    let trash = work_dir.trash();
    let old_trash = match std::fs::read_dir(&trash) {
        Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => Vec::new(),
    };
    let frameworks = work_dir.frameworks();
    let has_leftovers = std::fs::read_dir(&frameworks)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    let moved = if has_leftovers {
        let moved = work_dir
            .move_to_trash(&frameworks)
            .map_err(|e| (frameworks.clone(), e))?;
        std::fs::create_dir_all(&frameworks).map_err(|e| (frameworks.clone(), e))?;
        tracing::info!("removing a previous run's task and executor directories");
        moved
    } else {
        None
    };
    for dir in old_trash.into_iter().chain(moved) {
        delete_in_background(dir);
    }
    Ok(())
}

/// The core's configuration: the options' agent info with the executor's fuel rate attached
/// (as [`FUEL_RATE_ATTRIBUTE`]), and a boot id unique to this run.
fn core_config(opts: &AgentOptions, fuel_rate: u64) -> AgentConfig {
    let mut info = opts.info.clone();
    info.attributes.retain(|(k, _)| k != FUEL_RATE_ATTRIBUTE);
    info.attributes
        .push((FUEL_RATE_ATTRIBUTE.to_owned(), fuel_rate.to_string()));
    info.datasets = opts.datasets.iter().map(|(n, _)| n.clone()).collect();
    let boot_id = format!(
        "{}-{}",
        opts.info.hostname,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    AgentConfig {
        info,
        boot_id,
        status_retry: opts.status_retry,
    }
}

/// The running guests: one-shot tasks' kill handles and executor instances' handles. Dropping
/// it kills them all, so however the agent's loop ends (shutdown, error, or its task aborted),
/// no guest outlives it.
#[derive(Default)]
struct Guests {
    tasks: HashMap<TaskKey, KillHandle>,
    instances: HashMap<ExecutorKey, Instance>,
}

/// An executor instance as the driver holds it.
enum Instance {
    /// Its component and directory are being prepared.
    Starting { run: u64 },
    /// Killed while being prepared: it will not be started.
    Cancelled { run: u64 },
    /// Started.
    Running { run: u64, handle: InstanceHandle },
}

impl Instance {
    fn run(&self) -> u64 {
        match self {
            Instance::Starting { run }
            | Instance::Cancelled { run }
            | Instance::Running { run, .. } => *run,
        }
    }
}

impl Guests {
    /// Starts a prepared instance unless it was cancelled meanwhile; returns the core's event
    /// when it does not start (preparation failed, or cancelled).
    fn start_instance(
        &mut self,
        executor: &Executor,
        tx: &mpsc::UnboundedSender<Input>,
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
                (
                    proto::Reason::Killed,
                    "stopped before it started".to_owned(),
                ),
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
        let tx = tx.clone();
        let run = id.run;
        let handle = executor.start_instance(
            spec,
            Box::new(move |ev| {
                let _ = tx.send(Input::Core(launch::executor_event(&id, ev)));
            }),
        );
        self.instances
            .insert(key, Instance::Running { run, handle });
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
        let handle = match inst {
            Instance::Running { handle, .. } => handle,
            Instance::Starting { run } => {
                if matches!(action, ExecutorAction::Kill { .. }) {
                    *inst = Instance::Cancelled { run: *run };
                }
                return;
            }
            Instance::Cancelled { .. } => return,
        };
        match action {
            ExecutorAction::Start { .. } => {}
            ExecutorAction::SetEnvelope { resources, .. } => {
                handle.set_envelope(resources.cpus_milli, resources.mem)
            }
            ExecutorAction::Launch { task, .. } => handle.launch(launch::instance_task(&task)),
            ExecutorAction::KillTask { task_id, .. } => handle.kill_task(task_id.as_str()),
            ExecutorAction::Message { data, .. } => handle.message(data),
            ExecutorAction::Shutdown { .. } => handle.shutdown(),
            ExecutorAction::Kill { .. } => handle.kill(),
        }
    }

    /// Forgets the handle of an instance that has ended.
    fn instance_exited(&mut self, id: &ExecutorRun) {
        let key = id.key();
        if self.instances.get(&key).is_some_and(|i| i.run() == id.run) {
            self.instances.remove(&key);
        }
    }
}

impl Drop for Guests {
    fn drop(&mut self) {
        for h in self.tasks.values() {
            h.kill();
        }
        for i in self.instances.values() {
            if let Instance::Running { handle, .. } = i {
                handle.kill();
            }
        }
    }
}

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

/// Carries out [`Action::Prepare`]: the fetcher lays out the task's directory and brings its
/// module and files, then the executor compiles the module. A task of an executor only has its
/// files placed in the executor's sandbox (the component was fetched when it started).
async fn prepare(
    fetcher: &Fetcher,
    executor: &Executor,
    fid: &FrameworkId,
    task: &TaskInfo,
) -> Result<(), PrepareError> {
    if let Some(exec) = &task.executor {
        return fetcher
            .prepare_executor_task(fid, &exec.executor_id, task)
            .await;
    }
    let module = fetcher.prepare(fid, task).await?;
    executor
        .prepare(&launch::module_key(task), &module)
        .await
        .map_err(launch::prepare_failed)
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

        clear_leftovers(&w).unwrap();
        assert!(w.frameworks().is_dir());
        assert_eq!(std::fs::read_dir(w.frameworks()).unwrap().count(), 0);
        until_empty(&w.trash()).await;
        assert_eq!(std::fs::read(w.blob("ab12")).unwrap(), b"blob");

        // A clean work directory has nothing to clear.
        clear_leftovers(&w).unwrap();
        assert_eq!(std::fs::read_dir(w.trash()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_collected_directory_leaves_at_once_and_its_id_can_start_again() {
        let tmp = tempfile::tempdir().unwrap();
        let w = WorkDir::new(tmp.path());
        w.create().unwrap();
        let t = w.task("f1", "t1");
        std::fs::create_dir_all(t.sandbox()).unwrap();
        collect(
            &w,
            &GcTarget::Task {
                framework_id: "f1".into(),
                task_id: "t1".into(),
            },
        );
        assert!(!t.path().exists());
        // Laid out afresh right away, the new directory is not touched by the deletion.
        std::fs::create_dir_all(t.sandbox()).unwrap();
        until_empty(&w.trash()).await;
        assert!(t.sandbox().is_dir());
        // A directory that is not there is nothing to collect.
        collect(
            &w,
            &GcTarget::Executor {
                framework_id: "f1".into(),
                executor_id: "e9".into(),
            },
        );
    }
}
