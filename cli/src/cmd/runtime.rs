//! `tessera runtime` (hidden): the runtime process an agent starts so that its guests outlive
//! it. It runs the guests and serves the agent (and its successors) on a Unix socket; see
//! `agent::runtime`. Agents start it themselves; it is not meant to be run by hand.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

/// Arguments of `tessera runtime`.
#[derive(Args, Debug)]
pub struct RuntimeArgs {
    /// The Unix socket to serve.
    #[arg(long)]
    socket: PathBuf,
    /// The runtime's directory (lock, log, config), under the agent's work directory.
    #[arg(long)]
    work_dir: PathBuf,
    /// The executor config the agent wrote (default: the executor's defaults).
    #[arg(long)]
    config: Option<PathBuf>,
    /// With no agent attached this long, kill the guests and exit.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    recovery_timeout: Duration,
}

/// Serves until stopped by the agent or until the recovery timeout passes with no agent.
/// Logs go to `<work-dir>/runtime.log` (the agent's stderr may be gone).
pub async fn execute(a: RuntimeArgs) -> anyhow::Result<i32> {
    std::fs::create_dir_all(&a.work_dir)
        .with_context(|| format!("cannot create {}", a.work_dir.display()))?;
    let log_path = a.work_dir.join("runtime.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Arc::new(log))
        .init();
    let executor = match &a.config {
        Some(path) => agent::runtime::read_config(path)?,
        None => agent::executor::ExecutorConfig::default(),
    };
    let opts = agent::runtime::ServeOptions {
        dir: a.work_dir,
        socket: a.socket,
        executor,
        recovery_timeout: a.recovery_timeout,
    };
    if let Err(e) = agent::runtime::serve(opts).await {
        tracing::error!(error = %e, "runtime cannot serve");
        return Err(e.into());
    }
    Ok(0)
}
