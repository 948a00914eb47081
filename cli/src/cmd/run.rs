//! `tessera run`: one task, like `mesos-execute`. Uploads the module (a WASI preview 1 command
//! module or a WASI 0.2 command component) and a local directory's files for the sandbox, waits
//! for an offer that fits, launches, waits for the end, and maps the outcome onto an exit code.
//!
//! Without `--master` the task's stdout and stderr files in the embedded agent's sandbox are
//! followed as they grow (`follow`), so the output shows live. Through a master the output is
//! followed live too, over the master's HTTP surface (`GET /tasks/{id}/output/{stream}`, as
//! `tessera logs --follow` does, see [`follow_remote`]), with the run's own certificate: a
//! framework principal may read its own tasks' output, and the HTTP surface takes the same
//! CA and client certificates as QUIC, so whatever can run the task can watch it. The run
//! waits (at most [`DRAIN_WAIT`]) for the follow to reach the end before it tears its framework
//! down; if the follow failed (no HTTP surface reachable at the masters' port + 1, say), the
//! final status's 4 KiB tails are printed instead. The embedded cluster's logs
//! stay quiet unless asked for (`main.rs` sets the filter), and errors are single lines.
//!
//! It follows its task for as long as the task lives: no idle limit (a quiet task is awaited
//! however long it takes, or up to `--timeout` plus [`WAIT_MARGIN`]), the first connection is
//! redialed until `--connect-timeout`, and Ctrl-C or SIGTERM kills the task before leaving.
//! Failures of the cluster rather than of the task have exit codes of their own
//! ([`exit_code`]), so a script can tell "retry later" from "the task failed".
//!
//! Round trips on the way (about four on a clean link): the QUIC handshake (one); the `Hello`,
//! the `Subscribe` and the module's and files' upload streams all in the next flight, sent as
//! soon as QUIC is up without waiting for the `HelloAck` (one, and a little more for the
//! bytes; the master's first offer follows the `Subscribed` at once); the accept and the
//! task's status updates (the agent sends each as it happens, without waiting for the previous
//! one's acknowledgement; `STARTING` only while the module is fetched and compiled), about one;
//! the teardown, confirmed by the master (one).

use crate::tls::{QuicArgs, TlsArgs};
use anyhow::Context;
use clap::Args;
use cluster::{LocalCluster, LocalClusterConfig};
use proto::resources::{parse_cpus, parse_size};
use proto::{BlobKind, Digest, Filters, Reason, Resources, TaskId, TaskState, TaskStatus};
use sdk::{Event, Scheduler, SchedulerOptions, SdkError, TaskBuilder, Uploader};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Arguments of `tessera run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The task to run: a WASI preview 1 command module or a WASI 0.2 command component.
    module: PathBuf,
    /// CPU share (more than 0), e.g. `0.5` or `2`.
    #[arg(long, default_value = "0.5", value_parser = nonzero_cpus)]
    cpus: u64,
    /// Memory share (more than 0), e.g. `64MiB`.
    #[arg(long, default_value = "64MiB", value_parser = nonzero_size)]
    mem: u64,
    /// Wall-clock limit.
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long = "env", value_parser = super::parse_kv)]
    env: Vec<(String, String)>,
    /// Give the task this local directory as its `/`. Its regular files (and subdirectories)
    /// are copied into the task's sandbox before it starts; without --master, what the guest
    /// left there (new, changed and deleted files) is written back when it ends, as `wasmtime
    /// run --dir` would show its writes. With --master the files are copied in and nothing
    /// comes back (the sandbox stays on the agent; `tessera logs` reads its output). Symlinks
    /// and special files are skipped with a warning both ways (the sandbox must not point
    /// outside it).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Submit to this cluster instead of an embedded one: its masters' addresses,
    /// `host:port[,host:port...]` (one leader, the rest standbys: the leader is found).
    #[arg(long)]
    master: Option<net::masters::MasterSet>,
    /// How long to keep redialing masters none of which can be reached (or leads) before giving
    /// up (exit 69); one deadline across all of them.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    quic: QuicArgs,
    /// Arguments passed to the task.
    #[arg(last = true)]
    args: Vec<String>,
}

/// `--cpus`: a CPU share, refused at parse time when zero (a usage error, exit 2).
fn nonzero_cpus(s: &str) -> Result<u64, String> {
    match parse_cpus(s).map_err(|e| e.to_string())? {
        0 => Err("must be more than 0".into()),
        v => Ok(v),
    }
}

/// `--mem`: a size, refused at parse time when zero (a usage error, exit 2).
fn nonzero_size(s: &str) -> Result<u64, String> {
    match parse_size(s).map_err(|e| e.to_string())? {
        0 => Err("must be more than 0".into()),
        v => Ok(v),
    }
}

/// A reason in words, for the one line `tessera run` prints when the guest did not exit by
/// itself.
fn reason_words(reason: &Option<Reason>) -> String {
    let words = match reason {
        None => return String::new(),
        Some(Reason::ExitCode(c)) => return format!("exit code {c}"),
        Some(Reason::Trap(m)) => return format!("trap: {m}"),
        Some(Reason::ExecutorTerminated(m)) => return format!("executor terminated: {m}"),
        Some(Reason::MemoryLimit) => "memory limit",
        Some(Reason::CpuLimit) => "CPU budget used up",
        Some(Reason::DiskLimit) => "disk limit",
        Some(Reason::Timeout) => "timeout",
        Some(Reason::Killed) => "killed",
        Some(Reason::AgentLost) => "agent lost",
        Some(Reason::AgentRestarted) => "agent restarted",
        Some(Reason::FetchFailed) => "fetch failed",
        Some(Reason::ModuleInvalid) => "module invalid",
        Some(Reason::TaskInvalid) => "task invalid",
        Some(Reason::InvalidOffers) => "invalid offers",
        Some(Reason::FrameworkRemoved) => "framework removed",
        Some(Reason::AgentError) => "agent error",
        Some(Reason::ExecutorReported) => "reported by its executor",
        Some(Reason::AgentUnreachable) => "agent unreachable",
        Some(Reason::RuntimeLost) => "agent runtime lost",
    };
    words.into()
}

/// `STATE (reason): message`, on one line, each part once.
fn status_line(status: &TaskStatus) -> String {
    let mut line = status.state.name().to_string();
    let reason = reason_words(&status.reason);
    if !reason.is_empty() {
        line.push_str(&format!(" ({reason})"));
    }
    let message = super::one_line(&status.message);
    if !message.is_empty() && !reason.contains(&message) {
        line.push_str(": ");
        line.push_str(&message);
    }
    line
}

/// What to run.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// The bytes of the module or component.
    pub wasm: Vec<u8>,
    /// Task name (`argv[0]`).
    pub name: String,
    /// Arguments after `argv[0]`.
    pub args: Vec<String>,
    /// Environment.
    pub env: Vec<(String, String)>,
    /// The task's share.
    pub resources: Resources,
    /// Wall-clock limit.
    pub timeout: Option<Duration>,
    /// A local directory whose contents become the sandbox's `/`.
    pub dir: Option<PathBuf>,
}

/// Exit codes `tessera run` uses when the guest did not exit by itself.
pub mod exit_code {
    /// The guest trapped.
    pub const TRAP: i32 = 134;
    /// The guest ran out of its memory share.
    pub const MEMORY: i32 = 137;
    /// The wall-clock timeout passed (as `timeout(1)`).
    pub const TIMEOUT: i32 = 124;
    /// Anything else the task did (killed by someone else...).
    pub const OTHER: i32 = 1;
    /// The master could not be reached within `--connect-timeout` (`EX_UNAVAILABLE`).
    pub const UNREACHABLE: i32 = 69;
    /// The task was lost or dropped through no fault of its own, or the cluster stopped
    /// answering about it: trying again may succeed (`EX_TEMPFAIL`).
    pub const TEMPFAIL: i32 = 75;
    /// The master refused: TLS, identity or ACL, an invalid module or task (`EX_PROTOCOL`).
    pub const REFUSED: i32 = 76;
    /// Ctrl-C (SIGINT) arrived; the task was killed (128 + 2, as a shell reports it).
    pub const INTERRUPTED: i32 = 130;
    /// SIGTERM arrived; the task was killed (128 + 15).
    pub const TERMINATED: i32 = 143;
}

/// How long past its own `--timeout` a task is awaited (fetching, queueing for a slot and the
/// updates' way back take time the task's clock does not count).
pub const WAIT_MARGIN: Duration = Duration::from_secs(60);

/// How long an interrupted run waits for its task's `TASK_KILLED` before tearing down (the
/// teardown kills it too, so this only decides whether its output tails are shown).
const KILL_WAIT: Duration = Duration::from_secs(5);

/// How long offers are watched, once the first that cannot fit the task came, before saying
/// that none could.
const FIT_WINDOW: Duration = Duration::from_secs(2);

/// Attempts at one upload that failed on a link (a refusal is not retried; waiting for the
/// scheduler to redial does not count).
const UPLOAD_ATTEMPTS: u32 = 5;

/// Most launches of one run: a launch that certainly never started its guest (see
/// [`never_started`]) is made again under a new task id, up to this many in all.
const LAUNCH_ATTEMPTS: u32 = 5;

/// True for a terminal status saying the task never started its guest, so launching it again
/// cannot run it twice: its accept reached a master that did not know its offers (a restarted
/// master, or offers rescinded meanwhile), its master never heard of it (an accept lost with a
/// master killed before launching it: a restarted master answers a reconcile of a task it does
/// not know with TASK_LOST naming no agent and no reason only once every agent it knew has
/// re-registered, with the tasks it runs, or been removed), or its agent could not fetch its
/// module (the link to the master dropped mid-fetch).
fn never_started(status: &TaskStatus) -> bool {
    match (&status.state, &status.reason) {
        (TaskState::Dropped, Some(Reason::InvalidOffers)) => true,
        (TaskState::Lost, None) => status.agent_id.is_none(),
        (TaskState::Failed, Some(Reason::FetchFailed)) => true,
        _ => false,
    }
}

/// A failure of the cluster rather than of the task, with the exit code that says which.
#[derive(Debug)]
pub struct Infrastructure {
    /// One of [`exit_code`]'s infrastructure codes.
    pub code: i32,
    /// What happened.
    pub message: String,
}

impl std::fmt::Display for Infrastructure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Infrastructure {}

impl Infrastructure {
    fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// Sorts an SDK error: unreachable, refused, or a link that failed for good.
    fn from_sdk(e: SdkError, what: &str) -> Self {
        let code = match &e {
            SdkError::Unreachable { .. } => exit_code::UNREACHABLE,
            e if e.is_refusal() => exit_code::REFUSED,
            _ => exit_code::TEMPFAIL,
        };
        Self::new(code, format!("{what}: {e}"))
    }
}

/// How a run ended.
#[derive(Debug)]
pub enum Outcome {
    /// The task reached this terminal state.
    Ended(TaskStatus),
    /// A signal stopped the run (exit code [`exit_code::INTERRUPTED`] or
    /// [`exit_code::TERMINATED`]); the task, if launched, was killed, with this last status
    /// when its end arrived in time.
    Interrupted {
        /// The exit code the signal calls for.
        code: i32,
        /// The killed task's terminal status, when it arrived within the kill wait.
        status: Option<TaskStatus>,
    },
}

/// The exit code for a terminal status, and a one-line `STATE (reason): message` when the
/// guest did not exit by itself.
/// Only terminal states come here: TASK_UNREACHABLE is not one (the task may still end well, so
/// `run` keeps waiting), TASK_GONE is (its agent was removed: [`exit_code::TEMPFAIL`]).
pub fn exit_status(status: &TaskStatus) -> (i32, Option<String>) {
    match (&status.state, &status.reason) {
        (TaskState::Finished, _) => (0, None),
        (_, Some(Reason::ExitCode(code))) => (*code, None),
        (_, Some(Reason::Trap(_))) => (exit_code::TRAP, Some(status_line(status))),
        (_, Some(Reason::MemoryLimit)) => (exit_code::MEMORY, Some(status_line(status))),
        (_, Some(Reason::Timeout)) => (exit_code::TIMEOUT, Some(status_line(status))),
        // Infrastructure, not the task: lost or gone with its agent, or never delivered
        // (retry); or refused as invalid at accept.
        (TaskState::Lost | TaskState::Gone | TaskState::Dropped, _) => {
            (exit_code::TEMPFAIL, Some(status_line(status)))
        }
        (TaskState::Error, _) => (exit_code::REFUSED, Some(status_line(status))),
        _ => (exit_code::OTHER, Some(status_line(status))),
    }
}

/// Lists the regular files under `dir`, as sandbox-relative paths with their contents.
pub fn collect_dir(dir: &Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let ty = entry.file_type()?;
            let path = entry.path();
            if ty.is_dir() {
                walk(root, &path, out)?;
            } else if ty.is_file() {
                let rel = path.strip_prefix(root)?.to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&path)?));
            }
            // Symlinks and special files are not copied: the sandbox must not point outside.
            else {
                eprintln!(
                    "tessera: --dir: skipping {} (a symlink or special file)",
                    path.display()
                );
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out).with_context(|| format!("--dir {}", dir.display()))?;
    out.sort();
    Ok(out)
}

/// Uploads one blob, again when the link drops under it (the scheduler redials meanwhile).
async fn upload(up: Uploader, kind: BlobKind, bytes: Vec<u8>) -> Result<Digest, SdkError> {
    let mut attempt = 1;
    loop {
        match up.upload(kind, &bytes).await {
            Ok(d) => return Ok(d),
            Err(e @ (SdkError::Link(net::link::LinkError::Refused(_)) | SdkError::Closed)) => {
                return Err(e)
            }
            // Between links (the scheduler redials): wait for the next one, without counting.
            Err(SdkError::NotConnected) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) if attempt >= UPLOAD_ATTEMPTS => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, attempt, "upload failed; retrying");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// How long a run that ended waits for its output follower to print the rest before tearing
/// its framework down (after the teardown its principal may no longer read the task).
pub const DRAIN_WAIT: Duration = Duration::from_secs(10);

/// What [`run_task_watched`] tells an output follower.
#[derive(Debug)]
pub struct OutputWatch {
    /// Set to `(framework id, task id)` once the task is launched (the first launch only).
    pub launched: tokio::sync::watch::Sender<Option<(String, String)>>,
    /// Fired (or dropped) by the follower once it has printed everything; awaited, at most
    /// [`DRAIN_WAIT`], before the teardown, if the follower said it is `following`.
    pub drained: tokio::sync::oneshot::Receiver<()>,
    /// Set by the follower once the master's HTTP surface answered it (a run whose follower
    /// never got through does not wait for it).
    pub following: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Submits the task through a scheduler and follows it to its terminal state, or until `stop`
/// resolves (to the exit code of the signal that arrived), then kills it. Failures of the
/// cluster come back as [`Infrastructure`] errors.
pub async fn run_task(
    opts: SchedulerOptions,
    spec: &RunSpec,
    stop: impl Future<Output = i32>,
) -> anyhow::Result<Outcome> {
    run_task_watched(opts, spec, stop, None).await
}

/// [`run_task`], telling `watch` when the task is launched and waiting for it to drain the
/// output before the teardown.
pub async fn run_task_watched(
    opts: SchedulerOptions,
    spec: &RunSpec,
    stop: impl Future<Output = i32>,
    mut watch: Option<OutputWatch>,
) -> anyhow::Result<Outcome> {
    let mut stop = std::pin::pin!(stop);
    // Digests are known locally, so the task is described at once; the bytes travel as soon
    // as the link is up, while the master subscribes the framework and makes its offers.
    let mut blobs = vec![(BlobKind::Module, spec.wasm.clone())];
    let mut builder = TaskBuilder::new(&spec.name, Digest::of(&spec.wasm))
        .resources(spec.resources)
        .args(spec.args.clone());
    for (k, v) in &spec.env {
        builder = builder.env(k, v);
    }
    if let Some(t) = spec.timeout {
        builder = builder.timeout(t);
    }
    if let Some(dir) = &spec.dir {
        for (path, bytes) in collect_dir(dir)? {
            builder = builder.file(&path, Digest::of(&bytes));
            blobs.push((BlobKind::File, bytes));
        }
    }
    // Uploaded again before a relaunch: a restarted master may have lost who uploaded them.
    let reupload = blobs.clone();
    // Aborted when the run ends, however it ends.
    let mut uploads = tokio::task::JoinSet::new();
    let start_uploads = |up: Uploader| {
        for (kind, bytes) in blobs {
            uploads.spawn(upload(up.clone(), kind, bytes));
        }
    };
    let started = tokio::time::Instant::now();
    let mut sched = tokio::select! {
        s = Scheduler::connect_then(opts, start_uploads) => {
            s.map_err(|e| Infrastructure::from_sdk(e, "subscribing"))?
        }
        code = &mut stop => return Ok(Outcome::Interrupted { code, status: None }),
    };
    tracing::debug!(elapsed = ?started.elapsed(), "subscribed");
    let mut task_id = TaskId::from(spec.name.as_str());
    let mut launched = false;
    let mut attempt = 1;
    // A launch was dropped for its offers: the master's `Error` saying so is expected.
    let mut dropped_for_offers = false;
    // No idle limit: a live task is awaited however quiet it is; only a task with a timeout
    // of its own has a bound, and the cluster gets a margin on top of it.
    let mut give_up: Option<tokio::time::Instant> = None;
    // The largest offer seen while nothing fitted, and when to say so (once).
    let mut largest: Option<Resources> = None;
    let mut fit_warning: Option<tokio::time::Instant> = None;
    let mut warned_fit = false;
    loop {
        let until = give_up;
        let warn_at = fit_warning;
        let event = tokio::select! {
            e = sched.next_event() => e,
            _ = async move {
                match warn_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => {
                fit_warning = None;
                if !launched {
                    if let Some(l) = largest {
                        eprintln!(
                            "tessera: warning: no offer can fit the task ({}); the largest seen is {}; still waiting",
                            spec.resources, l
                        );
                    }
                }
                continue;
            }
            code = &mut stop => {
                // Killing waits for the task's end (up to KILL_WAIT) and the teardown for the
                // master: a second signal stops waiting, for when neither can be reached.
                let again = next_signal();
                let stopping = async move {
                    let status = if launched { kill(&mut sched, &task_id).await } else { None };
                    let _ = sched.teardown().await;
                    status
                };
                let status = tokio::select! {
                    status = stopping => status,
                    () = again => {
                        eprintln!("tessera: second signal: not waiting for the kill; the task may still run");
                        None
                    }
                };
                return Ok(Outcome::Interrupted { code, status });
            }
            _ = async move {
                match until {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => {
                let _ = kill(&mut sched, &task_id).await;
                let _ = sched.teardown().await;
                return Err(Infrastructure::new(
                    exit_code::TEMPFAIL,
                    format!("no end of the task within its timeout and {WAIT_MARGIN:?}"),
                )
                .into());
            }
        };
        let Some(event) = event else {
            return Err(Infrastructure::new(exit_code::TEMPFAIL, "the scheduler closed").into());
        };
        match event {
            Event::Offers(offers) => {
                let mut unused = Vec::new();
                for offer in offers {
                    if !launched && offer.resources.contains(&spec.resources) {
                        // The master needs the bytes before it accepts a task naming them.
                        while let Some(done) = uploads.join_next().await {
                            done?.map_err(|e| Infrastructure::from_sdk(e, "uploading"))?;
                        }
                        tracing::debug!(elapsed = ?started.elapsed(), "uploaded; launching");
                        let mut task = builder.clone().build(&offer);
                        task.task_id = task_id.clone();
                        sched.accept(vec![offer.id.clone()], vec![task], Filters::default())?;
                        launched = true;
                        if let Some(w) = &watch {
                            if w.launched.borrow().is_none() {
                                let _ = w.launched.send(Some((
                                    sched.framework_id().to_string(),
                                    task_id.to_string(),
                                )));
                            }
                        }
                        give_up = spec
                            .timeout
                            .map(|t| tokio::time::Instant::now() + t + WAIT_MARGIN);
                    } else {
                        if !launched {
                            let r = offer.resources;
                            largest = Some(match largest {
                                Some(l) if (l.cpus_milli, l.mem) >= (r.cpus_milli, r.mem) => l,
                                _ => r,
                            });
                            if fit_warning.is_none() && !warned_fit {
                                warned_fit = true;
                                fit_warning = Some(tokio::time::Instant::now() + FIT_WINDOW);
                            }
                        }
                        unused.push(offer.id);
                    }
                }
                if !unused.is_empty() {
                    sched.decline(
                        unused,
                        Filters {
                            refuse_seconds: 60.0,
                        },
                    )?;
                }
            }
            // After a re-subscription (a master restarted, a link redialed) the master may
            // never have received the accept: ask it what it knows of the task.
            Event::Subscribed { .. } if launched => sched.reconcile(vec![task_id.clone()])?,
            Event::Update(status) if status.task_id == task_id => {
                // `-v` shows these as they happen.
                tracing::info!(elapsed = ?started.elapsed(), "task update: {}", status_line(&status));
                if launched && never_started(&status) && attempt < LAUNCH_ATTEMPTS {
                    attempt += 1;
                    tracing::info!(state = status.state.name(), reason = ?status.reason, message = %status.message, attempt, "the task never started; launching it again");
                    dropped_for_offers |= status.reason == Some(Reason::InvalidOffers);
                    task_id = TaskId::from(format!("{}-{attempt}", spec.name).as_str());
                    launched = false;
                    give_up = None;
                    // Offers declined meanwhile come back.
                    sched.revive()?;
                    for (kind, bytes) in reupload.clone() {
                        uploads.spawn(upload(sched.uploader(), kind, bytes));
                    }
                    continue;
                }
                if status.state.is_terminal() {
                    if let Some(w) = watch.take() {
                        if w.following.load(std::sync::atomic::Ordering::Acquire) {
                            let _ = tokio::time::timeout(DRAIN_WAIT, w.drained).await;
                        }
                    }
                    tracing::debug!(elapsed = ?started.elapsed(), "ended; tearing down");
                    let _ = sched.teardown().await;
                    tracing::debug!(elapsed = ?started.elapsed(), "torn down");
                    return Ok(Outcome::Ended(status));
                }
            }
            Event::Error(message) if dropped_for_offers && message.starts_with("accept failed") => {
                tracing::debug!(%message, "the dropped launch's error; launched again");
            }
            Event::Error(message) => {
                return Err(
                    Infrastructure::new(exit_code::REFUSED, format!("master: {message}")).into(),
                )
            }
            _ => {}
        }
    }
}

/// Kills the task and waits up to [`KILL_WAIT`] for its terminal status.
async fn kill(sched: &mut Scheduler, task_id: &TaskId) -> Option<TaskStatus> {
    sched.kill(task_id.clone()).ok()?;
    tokio::time::timeout(KILL_WAIT, async {
        while let Some(event) = sched.next_event().await {
            if let Event::Update(status) = event {
                if &status.task_id == task_id && status.state.is_terminal() {
                    return Some(status);
                }
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

/// Where the local agent keeps a task's `stdout` and `stderr` files.
fn task_dir(work_dir: &Path, status: &TaskStatus) -> PathBuf {
    work_dir
        .join("frameworks")
        .join(status.framework_id.as_str())
        .join("tasks")
        .join(status.task_id.as_str())
}

/// How often a local task's output files are looked at while they grow.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(50);

/// Copies what the local agent's task `name` writes to its `stdout` and `stderr` files onto
/// this process's, as it is written, until `stop` fires (then once more, to the end); returns
/// the task directory it followed, if one appeared. The embedded cluster has one framework, so
/// the task is found under any of `frameworks/*/tasks/NAME`.
async fn follow(
    work_dir: PathBuf,
    name: String,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Option<PathBuf> {
    let mut dir: Option<PathBuf> = None;
    let mut offsets = [0u64, 0];
    loop {
        let stopping = tokio::select! {
            _ = &mut stop => true,
            _ = tokio::time::sleep(FOLLOW_INTERVAL) => false,
        };
        if dir.is_none() {
            dir = std::fs::read_dir(work_dir.join("frameworks"))
                .ok()
                .into_iter()
                .flatten()
                .flatten()
                .map(|fw| fw.path().join("tasks").join(&name))
                .find(|d| d.is_dir());
        }
        if let Some(d) = &dir {
            copy_new(d, &mut offsets);
        }
        if stopping {
            return dir;
        }
    }
}

/// Writes what `dir/stdout` and `dir/stderr` hold past `offsets` to this process's stdout and
/// stderr, and moves the offsets on. Best effort: a file not there yet is tried next time.
fn copy_new(dir: &Path, offsets: &mut [u64; 2]) {
    use std::io::{Read, Seek, SeekFrom, Write};
    for (i, file) in ["stdout", "stderr"].into_iter().enumerate() {
        let Ok(mut f) = std::fs::File::open(dir.join(file)) else {
            continue;
        };
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(offsets[i])).is_err() || f.read_to_end(&mut buf).is_err() {
            continue;
        }
        offsets[i] += buf.len() as u64;
        let _ = if i == 0 {
            let mut out = std::io::stdout().lock();
            out.write_all(&buf).and_then(|_| out.flush())
        } else {
            std::io::stderr().lock().write_all(&buf)
        };
    }
}

/// How many rounds of `/health` probes a remote follow makes before giving up.
const FOLLOW_PROBES: u32 = 10;

/// Follows the launched task's stdout and stderr through the master's HTTP surface onto this
/// process's, until the task has ended and everything is printed (then fires `drained`).
/// Returns the task id it followed to the end, or `None` if the follow failed.
async fn follow_remote(
    apis: Vec<crate::api::Api>,
    mut on_launch: tokio::sync::watch::Receiver<Option<(String, String)>>,
    drained: tokio::sync::oneshot::Sender<()>,
    following: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Option<String> {
    use super::logs::{copy_output, OutputSource, POLL};
    let (framework, task) = on_launch
        .wait_for(|l| l.is_some())
        .await
        .ok()?
        .clone()
        .expect("waited for");
    // The first client the master's HTTP surface answers (`/health` answers anyone); the
    // master is up (it took the launch), but its listener may have just started.
    let mut api = None;
    'probe: for _ in 0..FOLLOW_PROBES {
        for candidate in &apis {
            if candidate
                .get("/health")
                .await
                .is_ok_and(|a| a.status.is_success())
            {
                api = Some(candidate);
                break 'probe;
            }
        }
        tokio::time::sleep(POLL).await;
    }
    let Some(api) = api else {
        tracing::warn!(
            "the masters' HTTP surface does not answer; the final status's tails will be shown"
        );
        return None;
    };
    following.store(true, std::sync::atomic::Ordering::Release);
    let source = |stream| OutputSource {
        task: task.clone(),
        framework: Some(framework.clone()),
        stream,
    };
    let (stdout_src, stderr_src) = (source("stdout"), source("stderr"));
    super::logs::wait_known(api, &stdout_src).await;
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    let (out, err) = tokio::join!(
        copy_output(api, &stdout_src, true, &mut stdout, 0),
        copy_output(api, &stderr_src, true, &mut stderr, 0),
    );
    if let Err(e) = out.as_ref().and(err.as_ref()) {
        tracing::warn!(error = %e, "following the task's output through the master failed");
        return None;
    }
    let _ = drained.send(());
    Some(task)
}

/// The next SIGINT or SIGTERM from now on (never, if none can be listened for).
fn next_signal() -> impl Future<Output = ()> {
    let signals = stop_signal();
    async move {
        match signals {
            Ok(signal) => {
                signal.await;
            }
            Err(_) => std::future::pending().await,
        }
    }
}

/// Resolves to the exit code of the first SIGINT ([`exit_code::INTERRUPTED`]) or SIGTERM
/// ([`exit_code::TERMINATED`]). The handlers are installed when this is called, not when it
/// is first polled, so a signal during start-up is not lost.
pub fn stop_signal() -> anyhow::Result<impl Future<Output = i32>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => exit_code::INTERRUPTED,
            _ = term.recv() => exit_code::TERMINATED,
        }
    })
}

/// Runs the task (on `--master`, or on an embedded one-agent cluster), prints its output and
/// returns the exit code to leave with.
pub async fn execute(a: RunArgs) -> anyhow::Result<i32> {
    let wasm =
        std::fs::read(&a.module).with_context(|| format!("reading {}", a.module.display()))?;
    if let Some(dir) = &a.dir {
        if !dir.is_dir() {
            anyhow::bail!("--dir {}: not a directory", dir.display());
        }
    }
    let stem = a
        .module
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "task".into());
    let name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let spec = RunSpec {
        wasm,
        name,
        args: a.args,
        env: a.env,
        resources: Resources::new(a.cpus, a.mem, 0),
        timeout: a.timeout,
        dir: a.dir,
    };
    let tuning = a.quic.tuning()?;
    // Installed before anything else, so a Ctrl-C while connecting is handled too.
    let stop = stop_signal()?;
    let result = match a.master {
        Some(master) => {
            let tls = a.tls.load("tessera-run")?;
            let addrs = master.addrs().to_vec();
            let mut opts = SchedulerOptions::for_masters(master, tls, "tessera-run", "*");
            opts.tuning = tuning;
            opts.connect_timeout = a.connect_timeout;
            // Plain HTTP first for a loopback master (its default listener), else (or if that
            // does not answer) HTTPS with the run's certificate.
            let apis: Vec<crate::api::Api> = [false, true]
                .into_iter()
                .filter_map(|tls| {
                    crate::api::Api::for_run(&addrs, &a.tls, "tessera-run", tls)
                        .map_err(|e| tracing::debug!(error = %e, tls, "no HTTP client"))
                        .ok()
                })
                .collect();
            match (!apis.is_empty()).then_some(apis) {
                Some(api) => {
                    let (launched, on_launch) = tokio::sync::watch::channel(None);
                    let (drained_tx, drained) = tokio::sync::oneshot::channel();
                    let following = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let follower =
                        tokio::spawn(follow_remote(api, on_launch, drained_tx, following.clone()));
                    let watch = OutputWatch {
                        launched,
                        drained,
                        following,
                    };
                    let result = run_task_watched(opts, &spec, stop, Some(watch)).await;
                    follower.abort();
                    let followed = follower.await.ok().flatten();
                    // Shown live only if the follow reached the end of the task that ended.
                    let shown = match (&result, &followed) {
                        (Ok(Outcome::Ended(s)), Some(t)) => (s.task_id.as_str() == t).then_some(()),
                        _ => None,
                    };
                    result.map(|o| (o, shown))
                }
                None => {
                    tracing::warn!("cannot follow the output through the master's HTTP surface; the final status's tails will be shown");
                    run_task(opts, &spec, stop).await.map(|o| (o, None))
                }
            }
        }
        None => {
            let dir = tempfile::tempdir()?;
            let mut cfg = LocalClusterConfig::default();
            cfg.master.allocation_interval = Duration::from_millis(100);
            cfg.compiler = super::compiler(
                Some(super::DEFAULT_COMPILE_CPU_LIMIT),
                super::DEFAULT_COMPILE_MEMORY_LIMIT,
            );
            cfg.tuning = tuning;
            let mut cluster = LocalCluster::start(cfg, dir.path()).await?;
            let cpus = spec.resources.cpus_milli.max(1000);
            let mem = spec.resources.mem.max(1 << 30);
            // A disk share, so the task gets a sandbox and its output files, followed below
            // (a task with no disk share keeps its output in the agent's memory).
            let disk = spec.resources.disk.max(1 << 30);
            cluster.add_agent("local", Resources::new(cpus, mem, disk))?;
            let opts = cluster.scheduler_options("tessera-run", "*")?;
            // The embedded agent's files hold the whole (capped) output, not just the tail:
            // followed as they grow, so the output shows live.
            let (stop_follow, stopped) = tokio::sync::oneshot::channel();
            let follower = tokio::spawn(follow(
                cluster.agents[0].work_dir.clone(),
                spec.name.clone(),
                stopped,
            ));
            let copied_in = match &spec.dir {
                Some(d) => collect_dir(d)?.into_iter().map(|(p, _)| p).collect(),
                None => Vec::new(),
            };
            let result = run_task(opts, &spec, stop).await;
            let _ = stop_follow.send(());
            let followed = follower.await.ok().flatten();
            // A relaunch (under another task id) ran elsewhere than what was followed.
            if let Ok(Outcome::Ended(status)) = &result {
                let task_dir = task_dir(&cluster.agents[0].work_dir, status);
                if followed.as_ref() != Some(&task_dir) {
                    let mut offsets = [0, 0];
                    copy_new(&task_dir, &mut offsets);
                }
            }
            if let (Some(host), Ok(Outcome::Ended(status))) = (&spec.dir, &result) {
                let sandbox = task_dir(&cluster.agents[0].work_dir, status).join("sandbox");
                super::write_back::write_back(&sandbox, host, &copied_in)?;
            }
            let outputs = Some(());
            cluster.shutdown().await;
            result.map(|o| (o, outputs))
        }
    };
    let (outcome, outputs) = match result {
        Ok(r) => r,
        Err(e) => match e.downcast::<Infrastructure>() {
            Ok(infra) => {
                eprintln!("tessera: {}", super::one_line(&infra.to_string()));
                return Ok(infra.code);
            }
            Err(e) => return Err(e),
        },
    };
    let (status, code) = match outcome {
        Outcome::Ended(status) => (status, None),
        Outcome::Interrupted { code, status } => {
            let what = if code == exit_code::TERMINATED {
                "terminated"
            } else {
                "interrupted"
            };
            match status {
                Some(status) => {
                    eprintln!("tessera: {what}; task {}", status.state.name());
                    (status, Some(code))
                }
                None => {
                    eprintln!("tessera: {what}; the task was torn down with its framework");
                    return Ok(code);
                }
            }
        }
    };
    use std::io::Write;
    // The output was shown as it came (locally, or followed through the master); otherwise
    // the status's tails.
    if outputs.is_none() {
        print!("{}", status.stdout_tail);
        eprint!("{}", status.stderr_tail);
    }
    std::io::stdout().flush()?;
    if let Some(code) = code {
        return Ok(code);
    }
    let (code, reason) = exit_status(&status);
    if let Some(reason) = reason {
        eprintln!("tessera: task {reason}");
    }
    Ok(code)
}
