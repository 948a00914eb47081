//! `tessera run`: one task, like `mesos-execute`. Uploads the module (and a local directory's
//! files for the sandbox), waits for an offer that fits, launches, waits for the end, and maps
//! the outcome onto an exit code.

use proto::{Filters, Reason, Resources, TaskState, TaskStatus};
use sdk::{Event, Scheduler, SchedulerOptions, TaskBuilder};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What to run.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// The module's bytes.
    pub wasm: Vec<u8>,
    /// Task name (argv[0]).
    pub name: String,
    /// Arguments after argv[0].
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
