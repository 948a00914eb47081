//! `tessera master`: runs the master on a QUIC endpoint, with its tunables from flags and an
//! optional TOML file (`master::config`).

mod ha;

use crate::tls::{QuicArgs, TlsArgs};
use anyhow::{bail, Context};
use clap::Args;
use master::driver::{MasterOptions, MasterServer};
use proto::resources::{parse_cpus, parse_size};
use proto::Resources;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `tessera master`.
#[derive(Args, Debug)]
pub struct MasterArgs {
    /// UDP address to listen on.
    #[arg(long, default_value = "0.0.0.0:5050")]
    listen: SocketAddr,
    /// TCP address of the operator HTTP surface: the web UI at `/`, `/health`, `/state` (JSON
    /// of the books), `/metrics` (Prometheus), task output, kills. Plain HTTP on a loopback
    /// address (whoever reaches it is the machine's operator); HTTPS requiring a client
    /// certificate of the cluster CA on any other address (operators see everything, a
    /// framework principal only its own frameworks); `none` disables it. Default: 127.0.0.1 at
    /// `--listen`'s port + 1 (127.0.0.1:5051 for the default `--listen`; any free port when
    /// `--listen`'s is 0); if that default is taken the master runs without HTTP and says so,
    /// while an address given here must be free.
    #[arg(long, value_parser = parse_http_listen)]
    http_listen: Option<HttpListen>,
    /// Serve HTTPS with client certificates on a loopback `--http-listen` too (a machine shared
    /// by several tenants).
    #[arg(long)]
    http_tls: bool,
    /// Where uploaded modules and files (`blobs/`) and the registry (`registry.redb`: the
    /// frameworks, agents and tasks a restarted master recovers) are stored.
    #[arg(long, default_value = "/var/lib/tessera/master")]
    work_dir: PathBuf,
    /// Period of allocation rounds.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    allocation_interval: Duration,
    /// How long a disconnected agent may take to come back: meanwhile its tasks are
    /// TASK_UNREACHABLE, past it TASK_GONE (and the agent, if it returns, kills them).
    /// Default: the config file's `agent_reregister_timeout`, else 10min (as Mesos).
    #[arg(long, value_parser = humantime::parse_duration)]
    agent_reregister_timeout: Option<Duration>,
    /// Largest module or file accepted.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    max_blob_size: u64,
    /// Allocation policy: `drf` (hierarchical DRF with role weights, quotas and reservations)
    /// or `priority` (strict framework priority, DRF within a priority). Default: the config
    /// file's `allocator`, else drf.
    #[arg(long)]
    allocator: Option<String>,
    /// TOML file with `allocator`, `offer_timeout` and `[roles.NAME]` tables (`weight`, default
    /// 1.0; `guarantee` and `limit`, e.g. `{ cpus = 4, mem = "8GiB" }`, default none).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Rescind offers not answered within this time (default: the config file's, else never).
    #[arg(long, value_parser = humantime::parse_duration)]
    offer_timeout: Option<Duration>,
    /// Smallest offer, cpus part (offers need at least this many cpus and the memory below).
    #[arg(long, default_value = "0.01", value_parser = parse_cpus)]
    min_allocatable_cpus: u64,
    /// Delete an uploaded module or file that no live task names and nobody used for this long
    /// (`0s`: keep every blob forever). A task naming a deleted blob fails as "not uploaded";
    /// upload it again. Default: the config file's `blob_gc_grace`, else 1h.
    #[arg(long, value_parser = humantime::parse_duration)]
    blob_gc_grace: Option<Duration>,
    /// Smallest offer, memory part.
    #[arg(long, default_value = "32MiB", value_parser = parse_size)]
    min_allocatable_mem: u64,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    quic: QuicArgs,
    #[command(flatten)]
    ha: ha::HaArgs,
}

/// Runs the master until Ctrl-C or SIGTERM (connections closed cleanly), recovering what its
/// work directory's registry holds, or (with `--etcd`) as one of several masters sharing a
/// registry in etcd.
pub async fn execute(a: MasterArgs) -> anyhow::Result<i32> {
    let tls = a.tls.load("master")?;
    let mut opts = MasterOptions::new(a.listen, tls.ca_pem, tls.identity, a.work_dir);
    opts.crls = tls.crls;
    opts.http_listen = match a.http_listen {
        Some(HttpListen(addr)) => addr,
        None => default_http_listen(a.listen),
    };
    opts.http_tls = a.http_tls;
    opts.tuning = a.quic.tuning()?;
    opts.config.allocation_interval = a.allocation_interval;
    opts.config.run_id = run_id()?;
    opts.max_blob_size = a.max_blob_size;
    opts.config.min_allocatable = Resources::new(a.min_allocatable_cpus, a.min_allocatable_mem, 0);
    let file = match &a.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            master::config::parse(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => Default::default(),
    };
    opts.config.roles = file.roles;
    opts.config.acls = file.acls;
    opts.config.offer_timeout = a.offer_timeout.or(file.offer_timeout);
    let grace = a
        .blob_gc_grace
        .or(file.blob_gc_grace)
        .unwrap_or(master::driver::DEFAULT_BLOB_GC_GRACE);
    opts.config.blob_gc_grace = (!grace.is_zero()).then_some(grace);
    if let Some(t) = a.agent_reregister_timeout.or(file.agent_reregister_timeout) {
        opts.config.agent_reregister_timeout = t;
    }
    let name = a
        .allocator
        .or(file.allocator)
        .unwrap_or_else(|| "drf".into());
    let Some(allocator) = master::allocator::by_name(&name) else {
        bail!("unknown allocator {name:?} (drf or priority)");
    };
    let server = if a.ha.enabled() {
        let cluster = master::driver::cluster_of(&opts.identity)?;
        let (coordinator, advertise) =
            a.ha.coordinator(opts.listen, &cluster, opts.tuning.idle_timeout)
                .await?;
        println!("tessera master: one of several on etcd, advertised as {advertise}");
        MasterServer::bind_shared(opts, allocator, coordinator, advertise)?
    } else {
        MasterServer::bind(opts, allocator)?
    };
    println!("tessera master listening on {}", server.local_addr());
    // The HTTP address is logged ("HTTP listening"); stdout keeps its one line, which
    // supervisors and tests read before they may close the pipe.
    server.run(super::shutdown_signal()).await?;
    Ok(0)
}

/// Distinguishes this run of the master from every other run and every other master: 64
/// random bits in hex (ids minted by the master start with it).
fn run_id() -> anyhow::Result<String> {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| anyhow::anyhow!("drawing the master's run id: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `--http-listen`: an address, or none.
#[derive(Clone, Debug)]
struct HttpListen(Option<SocketAddr>);

/// Parses `--http-listen`: `none` or `host:port`.
fn parse_http_listen(s: &str) -> Result<HttpListen, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(HttpListen(None));
    }
    let addr: SocketAddr = s
        .parse()
        .map_err(|e| format!("{s}: not an address ({e}); give IP:PORT or none"))?;
    Ok(HttpListen(Some(addr)))
}

/// The default HTTP address for a master on `listen`: loopback at its port + 1 (any free port
/// for port 0), or none when that is taken.
fn default_http_listen(listen: SocketAddr) -> Option<SocketAddr> {
    let loopback = std::net::Ipv4Addr::LOCALHOST;
    if listen.port() == 0 {
        // The master binds a free port itself and prints it.
        return Some(SocketAddr::from((loopback, 0)));
    }
    let addr = SocketAddr::from((loopback, listen.port().checked_add(1)?));
    match std::net::TcpListener::bind(addr) {
        Ok(probe) => {
            drop(probe);
            Some(addr)
        }
        Err(e) => {
            tracing::warn!(%addr, error = %e, "the default HTTP address is taken; running without HTTP (give --http-listen)");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_listen_is_an_address_or_none() {
        assert_eq!(parse_http_listen("none").unwrap().0, None);
        assert_eq!(
            parse_http_listen("127.0.0.1:9000").unwrap().0,
            Some("127.0.0.1:9000".parse().unwrap())
        );
        assert!(parse_http_listen("[::1]:9000").unwrap().0.is_some());
        // Any address: off loopback the master serves HTTPS with client certificates.
        assert!(parse_http_listen("0.0.0.0:5051").unwrap().0.is_some());
        assert!(parse_http_listen("localhost").is_err());
        // Port 0 for QUIC: any free HTTP port.
        assert_eq!(
            default_http_listen("0.0.0.0:0".parse().unwrap()),
            Some("127.0.0.1:0".parse().unwrap())
        );
    }
}
