//! `tessera agent`: runs an agent on this machine, offering the resources it is given.

use crate::tls::{QuicArgs, TlsArgs};
use clap::Args;
use proto::resources::{parse_cpus, parse_resource_spec, parse_size};
use proto::{AgentInfo, Resources};
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `tessera agent`.
#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The masters' addresses, `host:port[,host:port...]` (one leader, the rest standbys: the
    /// agent follows the leader among them).
    #[arg(long)]
    master: net::masters::MasterSet,
    /// CPUs to offer (e.g. 2, 0.5); required unless --resources is given.
    #[arg(long, value_parser = parse_cpus, required_unless_present = "resources")]
    cpus: Option<u64>,
    /// Memory to offer (e.g. 4GiB); required unless --resources is given.
    #[arg(long, value_parser = parse_size, required_unless_present = "resources")]
    mem: Option<u64>,
    /// Disk to offer (tasks are charged their `disk` and capped at it). Default: half of the
    /// free space of the work directory's file system at start (`0`: offer none).
    #[arg(long, value_parser = parse_size)]
    disk: Option<u64>,
    /// How long an ended task's sandbox and output (and an exited executor's directory) are
    /// kept once its final status is acknowledged; shortened as the disk fills (see --gc-disk-headroom).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    gc_delay: Duration,
    /// Fraction of the work directory's disk to keep free: the GC delay in force is
    /// gc-delay x max(0, 1 - headroom - used fraction), as Mesos's --gc_disk_headroom.
    #[arg(long, default_value = "0.1", value_parser = parse_headroom)]
    gc_disk_headroom: f64,
    /// Most space kept for fetched modules and files and their compiled code (blobs/ and
    /// cache/ of the work directory): beyond it, checked every minute, the least recently used
    /// ones no task or executor uses are removed.
    #[arg(long, default_value = "2GiB", value_parser = parse_size)]
    cache_size: u64,
    /// Resources with static reservations, Mesos style, instead of --cpus/--mem/--disk:
    /// "cpus(analytics):2;mem(analytics):2GiB;cpus:2;mem:4GiB" offers <4 cpus, 6 GiB>, of which
    /// <2 cpus, 2 GiB> only to frameworks of role analytics.
    #[arg(long, value_parser = parse_resource_spec, conflicts_with_all = ["cpus", "mem"])]
    resources: Option<(Resources, Vec<(String, Resources)>)>,
    /// Root of blobs, module cache and task sandboxes.
    #[arg(long)]
    work_dir: PathBuf,
    /// Name to register as (default: the machine's hostname).
    #[arg(long)]
    hostname: Option<String>,
    /// Attributes passed to schedulers in offers, as KEY=VALUE (repeatable).
    #[arg(long = "attribute", value_parser = super::parse_kv)]
    attributes: Vec<(String, String)>,
    /// A data set this agent holds, as NAME=PATH (repeatable): PATH, an existing directory, is
    /// seen read-only at /data/NAME by tasks asking for NAME, and NAME is advertised in offers
    /// so that frameworks can prefer this agent (delay scheduling).
    #[arg(long = "dataset", value_parser = parse_dataset)]
    datasets: Vec<(String, PathBuf)>,
    /// Run guests inside the agent's process instead of a runtime process that outlives it:
    /// every task then dies with the agent (a restart reports them failed), and a stop kills
    /// them whatever --on-stop says.
    #[arg(long)]
    in_process_guests: bool,
    /// What stopping the agent (SIGTERM, SIGINT) does to its tasks: `keep-tasks` leaves them
    /// running in the runtime process for the next agent started on this work directory (an
    /// upgrade or a restart; the master is told and keeps them as they are), `kill-tasks`
    /// kills every task and executor, reports them to their frameworks, and leaves the
    /// cluster (decommissioning).
    #[arg(long, value_enum, default_value_t = StopMode::KeepTasks)]
    on_stop: StopMode,
    /// How long each step of a stop may wait (terminal updates acknowledged, the master's
    /// confirmation).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    stop_timeout: Duration,
    /// How long the runtime process keeps the guests running while no agent is attached
    /// before it kills them and exits (when it is started by this agent).
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    recovery_timeout: Duration,
    /// Serve the agent's Prometheus metrics (`GET /metrics`, `tessera_agent_*`) over plain
    /// HTTP on this loopback address (`127.0.0.1:5052`), or `none` (the default). Loopback
    /// only: remote readers get the same text through the master, at
    /// `/agents/{agent_id}/metrics`.
    #[arg(long, default_value = "none", value_parser = parse_metrics_listen)]
    http_listen: MetricsListen,
    /// Move each task offered less than one core, once it uses up its share (it is CPU-bound),
    /// to a thread of its own in a cgroup made under this directory of the cgroup v1 cpu
    /// controller (e.g. `/sys/fs/cgroup/cpu/tessera`; root only) with its share as the CFS
    /// quota: the kernel then throttles it instead of the in-process pacer (Mesos'
    /// `--cgroups_enable_cfs`). Costs a thread and a cgroup per CPU-bound paced task while it
    /// runs; tasks that sleep or wait cost nothing more. If the directory is not usable the
    /// agent warns and paces in process.
    #[arg(long)]
    cpu_quota_cgroup: Option<PathBuf>,
    /// CPU time compiling one module may take, over all its threads (whole seconds), or
    /// `none`. Modules compile in a child process (`tessera compile`) that the kernel stops at
    /// this limit, and the task fails saying so: Cranelift's compile time grows faster than
    /// linearly with some shapes of code, and a tenant chooses the code. With `none` they
    /// compile in the agent's runtime process, unbounded.
    #[arg(long, default_value = "5m", value_parser = super::parse_limit)]
    compile_cpu_limit: super::CompileLimit,
    /// Memory a module's compile may hold (its heap, thread stacks and other private writable
    /// mappings; 4 GiB by default, at least 256 MiB). A compile that needs more fails its task
    /// saying so, and the module is refused after, rather than the machine running out of
    /// memory for a tenant's module. At most two compiles run at once. It bounds the
    /// compiling child, so it cannot be given with `--compile-cpu-limit none`.
    #[arg(long, value_parser = parse_compile_memory)]
    compile_memory_limit: Option<u64>,
    /// How preview-1 modules are metered (what yields them to the pacer about every
    /// millisecond, stops them when killed, and holds their CPU-time budget): `rewrite` (the
    /// default), each module rewritten before it is compiled to check a budget only on loop
    /// back edges and at the entry of functions that could otherwise run unbounded, or `fuel`,
    /// wasmtime's check at every function entry and loop header (1.3× the CPU time on
    /// call-heavy guests). Components and executors are metered by fuel either way.
    #[arg(long, value_enum, default_value = "rewrite")]
    metering: MeteringArg,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    quic: QuicArgs,
}

/// `--metering`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeteringArg {
    /// Wasmtime's fuel.
    Fuel,
    /// Budget checks written into the module (`executor/meter.rs`).
    Rewrite,
}

/// `--on-stop`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// Tasks keep running for the next agent on this work directory.
    KeepTasks,
    /// Tasks are killed and reported; the agent leaves the cluster.
    KillTasks,
}

/// Runs the agent until SIGTERM or SIGINT, then stops as `--on-stop` says.
pub async fn execute(a: AgentArgs) -> anyhow::Result<i32> {
    check_unique(&a.datasets)?;
    let (compile_cpu, compile_memory) =
        compile_limits(a.compile_cpu_limit, a.compile_memory_limit)?;
    let hostname = a.hostname.clone().unwrap_or_else(hostname);
    let tls = a.tls.load(&hostname)?;
    let disk = match a.disk {
        Some(d) => d,
        None => default_disk(&a.work_dir)?,
    };
    let (resources, reservations) = match a.resources {
        Some(spec) => spec,
        None => (
            Resources::new(a.cpus.unwrap_or(0), a.mem.unwrap_or(0), disk),
            vec![],
        ),
    };
    let info = AgentInfo {
        datasets: a.datasets.iter().map(|(n, _)| n.clone()).collect(),
        reservations,
        hostname,
        resources,
        attributes: a.attributes,
    };
    let mut opts = agent::driver::AgentOptions::for_masters(a.master, tls, a.work_dir, info);
    opts.datasets = a.datasets;
    opts.cache_size = a.cache_size;
    opts.executor.cpu_quota_cgroup = a.cpu_quota_cgroup;
    opts.executor.compiler = super::compiler(compile_cpu, compile_memory);
    opts.executor.metering = match a.metering {
        MeteringArg::Fuel => agent::executor::Metering::Fuel,
        MeteringArg::Rewrite => agent::executor::Metering::Rewrite,
    };
    opts.tuning = a.quic.tuning()?;
    opts.gc = agent::core::GcPolicy {
        delay: a.gc_delay,
        disk_headroom: a.gc_disk_headroom,
    };
    if !a.in_process_guests {
        let mut runtime = agent::driver::RuntimeProcess::this_executable();
        runtime.recovery_timeout = Some(a.recovery_timeout);
        opts = opts.with_runtime_process(runtime);
    }
    // A daemon checkpoints either way: unacknowledged updates survive a restart, and tasks
    // that died with in-process guests are reported once.
    opts.checkpoint = true;
    opts.on_stop = match a.on_stop {
        StopMode::KeepTasks if !a.in_process_guests => agent::driver::OnStop::KeepTasks,
        StopMode::KeepTasks => {
            tracing::info!(
                "--in-process-guests: tasks cannot outlive the agent; a stop kills them"
            );
            agent::driver::OnStop::KillTasks
        }
        StopMode::KillTasks => agent::driver::OnStop::KillTasks,
    };
    opts.stop_timeout = a.stop_timeout;
    opts.http_listen = a.http_listen.0;
    agent::driver::run(opts, super::shutdown_signal()).await?;
    Ok(0)
}

/// The disk offered without `--disk`: half of what the work directory's file system has free
/// now (the rest stays for blobs, the module cache and other users of the disk), in whole MiB.
fn default_disk(work_dir: &std::path::Path) -> anyhow::Result<u64> {
    use anyhow::Context;
    std::fs::create_dir_all(work_dir)
        .with_context(|| format!("creating the work directory {}", work_dir.display()))?;
    let space = agent::workdir::WorkDir::new(work_dir)
        .disk_space()
        .with_context(|| format!("measuring the free space of {}", work_dir.display()))?;
    let disk = space.available / 2 / (1 << 20) * (1 << 20);
    tracing::info!(
        disk_mib = disk >> 20,
        "offering half of the work directory's free disk (set --disk to choose)"
    );
    Ok(disk)
}

/// Parses `--gc-disk-headroom`: a fraction in 0..=1.
fn parse_headroom(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|e| format!("{s:?} is not a number: {e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not a fraction between 0 and 1"))
    }
}

/// The machine's hostname (as the OS reports it, not a file that may be absent), or `agent`.
fn hostname() -> String {
    gethostname::gethostname()
        .into_string()
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "agent".into())
}

/// Longest data set name.
const MAX_DATASET_NAME: usize = 128;

/// Parses `--dataset NAME=PATH`: NAME of 1-128 characters from `[A-Za-z0-9._-]`, not `.` or
/// `..` (it becomes the directory `/data/NAME` in the guest); PATH an existing directory,
/// returned canonical so that the agent preopens what was meant even if a symlink moves.
pub fn parse_dataset(s: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=PATH, got {s:?}"))?;
    if name.is_empty() || name.len() > MAX_DATASET_NAME {
        return Err(format!(
            "data set name {name:?} must have 1 to {MAX_DATASET_NAME} characters"
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("data set name {name:?} is not allowed"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "data set name {name:?} has {c:?}; use letters, digits, '.', '_' and '-'"
        ));
    }
    if path.is_empty() {
        return Err(format!("data set {name:?} has an empty path"));
    }
    let canonical = std::fs::canonicalize(path)
        .map_err(|e| format!("data set {name:?}: cannot resolve {path:?}: {e}"))?;
    if !canonical.is_dir() {
        return Err(format!(
            "data set {name:?}: {} is not a directory",
            canonical.display()
        ));
    }
    Ok((name.to_owned(), canonical))
}

/// Refuses a data set name given twice.
fn check_unique(datasets: &[(String, PathBuf)]) -> anyhow::Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for (name, _) in datasets {
        if !seen.insert(name) {
            anyhow::bail!("data set {name:?} is given twice");
        }
    }
    Ok(())
}

/// The compile limits of `--compile-cpu-limit` and `--compile-memory-limit`: a memory limit
/// given with no CPU-time limit is an error, not silently dropped, since without one modules
/// compile in the process that runs the guests, which it cannot bound.
fn compile_limits(
    cpu: super::CompileLimit,
    memory: Option<u64>,
) -> anyhow::Result<(Option<std::time::Duration>, u64)> {
    match (cpu.0, memory) {
        (None, Some(_)) => anyhow::bail!(
            "--compile-memory-limit bounds the child process modules compile in, and with \
             --compile-cpu-limit none they compile in the process that runs the guests: give \
             a CPU-time limit or drop the memory limit"
        ),
        (cpu, memory) => Ok((cpu, memory.unwrap_or(super::DEFAULT_COMPILE_MEMORY_LIMIT))),
    }
}

/// `--compile-memory-limit`: a size of at least [`MIN_COMPILE_MEMORY`].
fn parse_compile_memory(s: &str) -> Result<u64, String> {
    let bytes = parse_size(s).map_err(|e| e.to_string())?;
    if bytes < MIN_COMPILE_MEMORY {
        return Err(format!(
            "at least {} MiB: the example modules need 96 to 160 MiB to compile",
            MIN_COMPILE_MEMORY >> 20
        ));
    }
    Ok(bytes)
}

/// Least `--compile-memory-limit`: below it even small modules would fail to compile, and be
/// refused as the module's fault.
const MIN_COMPILE_MEMORY: u64 = 256 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compile_memory_limit_is_a_size_of_256_mib_at_least() {
        assert_eq!(parse_compile_memory("4GiB"), Ok(4 << 30));
        assert_eq!(parse_compile_memory("256MiB"), Ok(256 << 20));
        assert!(parse_compile_memory("255MiB")
            .unwrap_err()
            .contains("at least 256 MiB"));
        assert!(parse_compile_memory("lots").is_err());
    }

    #[test]
    fn a_compile_memory_limit_needs_a_compiling_child() {
        let minutes = super::super::CompileLimit(Some(std::time::Duration::from_secs(300)));
        let none = super::super::CompileLimit(None);
        let default = super::super::DEFAULT_COMPILE_MEMORY_LIMIT;
        assert_eq!(compile_limits(minutes, None).unwrap(), (minutes.0, default));
        assert_eq!(
            compile_limits(minutes, Some(1 << 30)).unwrap(),
            (minutes.0, 1 << 30)
        );
        assert_eq!(compile_limits(none, None).unwrap(), (None, default));
        let refused = compile_limits(none, Some(1 << 30)).unwrap_err().to_string();
        assert!(refused.contains("--compile-cpu-limit none"), "{refused}");
    }

    #[test]
    fn dataset_flags_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let (name, path) = parse_dataset(&format!("blk-1.v2_a={d}")).unwrap();
        assert_eq!(name, "blk-1.v2_a");
        assert_eq!(path, std::fs::canonicalize(dir.path()).unwrap());
        // Canonical: a path through `..` comes back resolved.
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let (_, p) = parse_dataset(&format!("x={}/sub/..", d)).unwrap();
        assert_eq!(p, path);
        for (arg, why) in [
            ("nopath".to_string(), "NAME=PATH"),
            (format!("={d}"), "1 to 128"),
            (format!("{}={d}", "a".repeat(129)), "1 to 128"),
            (format!("..={d}"), "not allowed"),
            (format!(".={d}"), "not allowed"),
            (format!("a/b={d}"), "'/'"),
            (format!("a b={d}"), "' '"),
            ("x=".to_string(), "empty path"),
            (format!("x={d}/missing"), "cannot resolve"),
        ] {
            let err = parse_dataset(&arg).unwrap_err();
            assert!(err.contains(why), "{arg}: {err}");
        }
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let err = parse_dataset(&format!("x={}", file.display())).unwrap_err();
        assert!(err.contains("not a directory"), "{err}");
        assert!(parse_dataset(&format!("{}={d}", "a".repeat(128))).is_ok());
        let twice = vec![("a".to_string(), path.clone()), ("a".to_string(), path)];
        assert!(check_unique(&twice)
            .unwrap_err()
            .to_string()
            .contains("twice"));
    }
}

/// `--http-listen`: a loopback address, or none.
#[derive(Clone, Debug)]
struct MetricsListen(Option<std::net::SocketAddr>);

/// Parses `--http-listen`: `none` or a loopback `IP:PORT`.
fn parse_metrics_listen(s: &str) -> Result<MetricsListen, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(MetricsListen(None));
    }
    let addr: std::net::SocketAddr = s
        .parse()
        .map_err(|e| format!("{s}: not an address ({e}); give IP:PORT or none"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{s}: only loopback addresses (no TLS here); read remote agents' metrics through the master"
        ));
    }
    Ok(MetricsListen(Some(addr)))
}
