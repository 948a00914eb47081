//! `tessera agent`: runs an agent on this machine, offering the resources it is given.

use crate::tls::TlsArgs;
use clap::Args;
use proto::resources::{parse_cpus, parse_resource_spec, parse_size};
use proto::{AgentInfo, Resources};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Arguments of `tessera agent`.
#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The master's address.
    #[arg(long)]
    master: SocketAddr,
    /// CPUs to offer (e.g. 2, 0.5); required unless --resources is given.
    #[arg(long, value_parser = parse_cpus, required_unless_present = "resources")]
    cpus: Option<u64>,
    /// Memory to offer (e.g. 4GiB); required unless --resources is given.
    #[arg(long, value_parser = parse_size, required_unless_present = "resources")]
    mem: Option<u64>,
    /// Disk to offer.
    #[arg(long, default_value = "0", value_parser = parse_size)]
    disk: u64,
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
    #[command(flatten)]
    tls: TlsArgs,
}

/// Runs the agent until Ctrl-C.
pub async fn execute(a: AgentArgs) -> anyhow::Result<i32> {
    let hostname = a.hostname.clone().unwrap_or_else(hostname);
    let tls = a.tls.load(&hostname)?;
    let (resources, reservations) = match a.resources {
        Some(spec) => spec,
        None => (
            Resources::new(a.cpus.unwrap_or(0), a.mem.unwrap_or(0), a.disk),
            vec![],
        ),
    };
    let info = AgentInfo {
        datasets: Vec::new(),
        reservations,
        hostname,
        resources,
        attributes: a.attributes,
    };
    let opts = agent::driver::AgentOptions::new(a.master, tls, a.work_dir, info);
    agent::driver::run(opts, super::shutdown_signal()).await?;
    Ok(0)
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
