//! `tessera run`: one task, like `mesos-execute`. Uploads the module (a WASI preview 1 command
//! module or a WASI 0.2 command component) and a local directory's files for the sandbox, waits
//! for an offer that fits, launches, waits for the end, and maps the outcome onto an exit code.

use crate::tls::TlsArgs;
use anyhow::Context;
use clap::Args;
use cluster::{LocalCluster, LocalClusterConfig};
use proto::resources::{parse_cpus, parse_size};
use proto::{Filters, Reason, Resources, TaskState, TaskStatus};
use sdk::{Event, Scheduler, SchedulerOptions, TaskBuilder};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Arguments of `tessera run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The task to run: a WASI preview 1 command module or a WASI 0.2 command component.
    module: PathBuf,
    /// CPU share.
    #[arg(long, default_value = "0.5", value_parser = parse_cpus)]
    cpus: u64,
    /// Memory share.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    mem: u64,
    /// Wall-clock limit.
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long = "env", value_parser = super::parse_kv)]
    env: Vec<(String, String)>,
    /// Copy this local directory's contents into the task's sandbox (its `/`).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Submit to this cluster instead of an embedded one.
    #[arg(long)]
    master: Option<SocketAddr>,
    #[command(flatten)]
    tls: TlsArgs,
    /// Arguments passed to the task.
    #[arg(last = true)]
    args: Vec<String>,
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
    /// Anything else (lost, killed, invalid module...).
    pub const OTHER: i32 = 1;
}

/// The exit code for a terminal status, and a one-line reason when it is not the guest's own.
/// Only terminal states come here: TASK_UNREACHABLE is not one (the task may still end well, so
/// `run` keeps waiting), TASK_GONE is (its agent was removed: [`exit_code::OTHER`]).
pub fn exit_status(status: &TaskStatus) -> (i32, Option<String>) {
    match (&status.state, &status.reason) {
        (TaskState::Finished, _) => (0, None),
        (_, Some(Reason::ExitCode(code))) => (*code, None),
        (_, Some(Reason::Trap(msg))) => (exit_code::TRAP, Some(format!("trap: {msg}"))),
        (_, Some(Reason::MemoryLimit)) => (
            exit_code::MEMORY,
            Some(format!("memory limit: {}", status.message)),
        ),
        (_, Some(Reason::Timeout)) => (exit_code::TIMEOUT, Some(status.message.clone())),
        (state, reason) => (
            exit_code::OTHER,
            Some(format!(
                "{}: {:?}: {}",
                state.name(),
                reason,
                status.message
            )),
        ),
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
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// Submits the task through a scheduler and returns its terminal status.
pub async fn run_task(opts: SchedulerOptions, spec: &RunSpec) -> anyhow::Result<TaskStatus> {
    let mut sched = Scheduler::connect(opts).await?;
    let module = sched.upload_module(&spec.wasm).await?;
    let mut builder = TaskBuilder::new(&spec.name, module)
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
            let digest = sched.upload_file(&bytes).await?;
            builder = builder.file(&path, digest);
        }
    }
    let mut launched = false;
    loop {
        let event = tokio::time::timeout(Duration::from_secs(60), sched.next_event())
            .await
            .map_err(|_| anyhow::anyhow!("no offer or update from the master in 60 s"))?
            .ok_or_else(|| anyhow::anyhow!("the scheduler closed"))?;
        match event {
            Event::Offers(offers) => {
                let mut unused = Vec::new();
                for offer in offers {
                    if !launched && offer.resources.contains(&spec.resources) {
                        let task = builder.clone().build(&offer);
                        sched.accept(vec![offer.id.clone()], vec![task], Filters::default())?;
                        launched = true;
                    } else {
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
            Event::Update(status) if status.task_id.as_str() == spec.name => {
                tracing::debug!(state = status.state.name(), "task update");
                if status.state.is_terminal() {
                    let _ = sched.teardown().await;
                    return Ok(status);
                }
            }
            Event::Error(message) => anyhow::bail!("master: {message}"),
            _ => {}
        }
    }
}

/// Runs the task (on `--master`, or on an embedded one-agent cluster), prints its output and
/// returns the exit code to leave with.
pub async fn execute(a: RunArgs) -> anyhow::Result<i32> {
    let wasm =
        std::fs::read(&a.module).with_context(|| format!("reading {}", a.module.display()))?;
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
    let (status, outputs) = match a.master {
        Some(master) => {
            let tls = a.tls.load("tessera-run")?;
            let opts = SchedulerOptions::new(master, tls, "tessera-run", "*");
            (run_task(opts, &spec).await?, None)
        }
        None => {
            let dir = tempfile::tempdir()?;
            let mut cfg = LocalClusterConfig::default();
            cfg.master.allocation_interval = Duration::from_millis(100);
            let mut cluster = LocalCluster::start(cfg, dir.path()).await?;
            let cpus = spec.resources.cpus_milli.max(1000);
            let mem = spec.resources.mem.max(1 << 30);
            cluster.add_agent("local", Resources::new(cpus, mem, 0))?;
            let opts = cluster.scheduler_options("tessera-run", "*")?;
            let status = run_task(opts, &spec).await?;
            // The embedded agent's files hold the whole (capped) output, not just the tail.
            let task_dir = cluster.agents[0]
                .work_dir
                .join("frameworks")
                .join(status.framework_id.as_str())
                .join("tasks")
                .join(status.task_id.as_str());
            let out = std::fs::read(task_dir.join("stdout")).ok();
            let err = std::fs::read(task_dir.join("stderr")).ok();
            cluster.shutdown().await;
            (status, out.zip(err))
        }
    };
    use std::io::Write;
    match outputs {
        Some((out, err)) => {
            std::io::stdout().write_all(&out)?;
            std::io::stderr().write_all(&err)?;
        }
        None => {
            print!("{}", status.stdout_tail);
            eprint!("{}", status.stderr_tail);
        }
    }
    std::io::stdout().flush()?;
    let (code, reason) = exit_status(&status);
    if let Some(reason) = reason {
        eprintln!("tessera: task {}: {reason}", status.state.name());
    }
    Ok(code)
}
