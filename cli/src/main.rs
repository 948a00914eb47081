//! `tessera`: run a master, an agent, a local development cluster, or one task; issue
//! certificates.

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use master::driver::{MasterOptions, MasterServer};
use net::tls::{ClusterCa, PeerTls};
use proto::resources::{parse_cpus, parse_resource_spec, parse_size};
use proto::{AgentInfo, Resources};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tessera_cli::run::{exit_status, RunSpec};

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "A cluster manager whose agents run tasks as sandboxed WebAssembly (WASI) modules"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the master.
    Master(MasterArgs),
    /// Run an agent on this machine.
    Agent(AgentArgs),
    /// Create a cluster CA and issue certificates.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Run a master and three agents in this process, play the seed's worked example and a pi job.
    Dev,
    /// Run one task (like mesos-execute); without --master, on an embedded one-agent cluster.
    Run(RunArgs),
    /// Simulate the master and allocator under a synthetic workload (virtual time, seeded),
    /// against static partitioning.
    Sim(SimArgs),
}

#[derive(Args)]
struct SimArgs {
    /// Seed of every random draw (same seed, same output).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of agents.
    #[arg(long, default_value_t = 50)]
    agents: usize,
    /// CPUs of each agent.
    #[arg(long, default_value = "8", value_parser = parse_cpus)]
    agent_cpus: u64,
    /// Memory of each agent.
    #[arg(long, default_value = "16GiB", value_parser = parse_size)]
    agent_mem: u64,
    /// Number of frameworks (the last one subscribes late).
    #[arg(long, default_value_t = 4)]
    frameworks: usize,
    /// Role weights, cycled over the frameworks (framework i is in role r{i mod n}).
    #[arg(long, default_value = "1", value_delimiter = ',')]
    weights: Vec<f64>,
    /// Simulated time.
    #[arg(long, default_value = "600s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Sampling period.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    sample_every: Duration,
    /// When the last framework subscribes.
    #[arg(long, default_value = "200s", value_parser = humantime::parse_duration)]
    late_join: Duration,
    /// Mean offered load as a fraction of the cluster.
    #[arg(long, default_value_t = 1.2)]
    load: f64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Allocation policy: drf (hierarchical DRF), priority, or simple-drf.
    #[arg(long, default_value = "drf")]
    allocator: String,
}

/// The three PEM files a deployed peer is given.
#[derive(Args, Clone)]
struct TlsArgs {
    /// The cluster CA certificate.
    #[arg(long, default_value = "certs/ca.pem")]
    ca: PathBuf,
    /// This peer's certificate.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// This peer's private key.
    #[arg(long)]
    key: Option<PathBuf>,
}

impl TlsArgs {
    fn load(&self, default_name: &str) -> anyhow::Result<PeerTls> {
        let dir = self.ca.parent().unwrap_or(Path::new("."));
        let cert = self
            .cert
            .clone()
            .unwrap_or_else(|| dir.join(format!("{default_name}.pem")));
        let key = self
            .key
            .clone()
            .unwrap_or_else(|| dir.join(format!("{default_name}-key.pem")));
        PeerTls::from_files(&self.ca, &cert, &key).with_context(|| {
            format!(
                "loading TLS files (CA {}, cert {}, key {}); create them with `tessera cert`",
                self.ca.display(),
                cert.display(),
                key.display()
            )
        })
    }
}

#[derive(Args)]
struct MasterArgs {
    /// UDP address to listen on.
    #[arg(long, default_value = "0.0.0.0:5050")]
    listen: SocketAddr,
    /// Where uploaded modules and files are stored.
    #[arg(long, default_value = "/var/lib/tessera/master")]
    work_dir: PathBuf,
    /// Period of allocation rounds.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    allocation_interval: Duration,
    /// How long a disconnected agent may take to come back before its tasks are TASK_LOST.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    agent_reregister_timeout: Duration,
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
    /// Smallest offer, memory part.
    #[arg(long, default_value = "32MiB", value_parser = parse_size)]
    min_allocatable_mem: u64,
    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(Args)]
struct AgentArgs {
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
    #[arg(long = "attribute", value_parser = parse_kv)]
    attributes: Vec<(String, String)>,
    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(Subcommand)]
enum CertCommand {
    /// Create a new cluster CA (ca.pem, ca-key.pem) in DIR.
    Ca {
        /// Output directory.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
    },
    /// Issue a certificate (NAME.pem, NAME-key.pem) signed by the CA in DIR.
    Issue {
        /// Peer name: "master" for the master, any name for agents and frameworks.
        name: String,
        /// Directory holding the CA, where the certificate is written.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
    },
}

#[derive(Args)]
struct RunArgs {
    /// The WASI (preview 1) command module to run.
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
    #[arg(long = "env", value_parser = parse_kv)]
    env: Vec<(String, String)>,
    /// Copy this local directory's contents into the task's sandbox (its `/`).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Submit to this cluster instead of an embedded one.
    #[arg(long)]
    master: Option<SocketAddr>,
    #[command(flatten)]
    tls: TlsArgs,
    /// Arguments passed to the module.
    #[arg(last = true)]
    args: Vec<String>,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

fn init_tracing(default: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn shutdown_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tessera: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli.command)) {
        Ok(code) => std::process::ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("tessera: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Master(a) => {
            init_tracing("info");
            let tls = a.tls.load("master")?;
            let mut opts = MasterOptions::new(a.listen, tls.ca_pem, tls.identity, a.work_dir);
            opts.config.allocation_interval = a.allocation_interval;
            opts.config.agent_reregister_timeout = a.agent_reregister_timeout;
            opts.config.run_id = run_id();
            opts.max_blob_size = a.max_blob_size;
            opts.config.min_allocatable =
                Resources::new(a.min_allocatable_cpus, a.min_allocatable_mem, 0);
            let file = match &a.config {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    tessera_cli::master_config::parse(&text)
                        .with_context(|| format!("in {}", path.display()))?
                }
                None => Default::default(),
            };
            opts.config.roles = file.roles;
            opts.config.offer_timeout = a.offer_timeout.or(file.offer_timeout);
            let name = a
                .allocator
                .or(file.allocator)
                .unwrap_or_else(|| "drf".into());
            let Some(allocator) = master::allocator::by_name(&name) else {
                bail!("unknown allocator {name:?} (drf or priority)");
            };
            let server = MasterServer::bind(opts, allocator)?;
            println!("tessera master listening on {}", server.local_addr());
            server.run(shutdown_signal()).await?;
            Ok(0)
        }
        Command::Agent(a) => {
            init_tracing("info");
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
                reservations,
                hostname,
                resources,
                attributes: a.attributes,
            };
            let opts = agent::driver::AgentOptions::new(a.master, tls, a.work_dir, info);
            agent::driver::run(opts, shutdown_signal()).await?;
            Ok(0)
        }
        Command::Cert(CertCommand::Ca { dir }) => {
            std::fs::create_dir_all(&dir)?;
            let ca = ClusterCa::generate("tessera-cluster-ca")?;
            write_private(&dir.join("ca.pem"), &ca.cert_pem, false)?;
            write_private(&dir.join("ca-key.pem"), &ca.key_pem, true)?;
            println!(
                "wrote {0}/ca.pem and {0}/ca-key.pem (keep the key off the cluster)",
                dir.display()
            );
            Ok(0)
        }
        Command::Cert(CertCommand::Issue { name, dir }) => {
            if !proto::ids::is_safe_id(&name) {
                bail!("{name:?} is not a valid peer name (letters, digits, . _ -)");
            }
            let ca = ClusterCa::from_files(&dir.join("ca.pem"), &dir.join("ca-key.pem"))?;
            let id = if name == "master" {
                ca.issue_master()?
            } else {
                ca.issue(&name, &[])?
            };
            write_private(&dir.join(format!("{name}.pem")), &id.cert_pem, false)?;
            write_private(&dir.join(format!("{name}-key.pem")), &id.key_pem, true)?;
            println!("wrote {0}/{name}.pem and {0}/{name}-key.pem", dir.display());
            Ok(0)
        }
        Command::Dev => {
            init_tracing("warn");
            tessera_cli::dev::run().await?;
            Ok(0)
        }
        Command::Run(a) => {
            init_tracing("warn");
            run(a).await
        }
        Command::Sim(a) => {
            use tessera_cli::sim::{self, Sharing, SimConfig};
            let cfg = SimConfig {
                seed: a.seed,
                agents: a.agents,
                agent_resources: Resources::new(a.agent_cpus, a.agent_mem, 0),
                frameworks: a.frameworks,
                role_weights: a.weights,
                duration: a.duration,
                sample_every: a.sample_every,
                late_join: a.late_join,
                load: a.load,
            };
            if cfg.agents == 0 || cfg.frameworks == 0 || cfg.role_weights.iter().any(|w| *w <= 0.0)
            {
                bail!("need at least one agent and one framework, and positive weights");
            }
            let policy = || {
                master::allocator::by_name(&a.allocator)
                    .with_context(|| format!("unknown allocator {:?}", a.allocator))
            };
            let shared = sim::run(&cfg, Sharing::Offers, policy()?);
            let partitioned = sim::run(&cfg, Sharing::StaticPartition, policy()?);
            if a.json {
                #[derive(serde::Serialize)]
                struct Out<'a> {
                    offers: &'a sim::SimReport,
                    static_partition: &'a sim::SimReport,
                }
                let out = Out {
                    offers: &shared,
                    static_partition: &partitioned,
                };
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                print!("{}", sim::render(&cfg, &shared, &partitioned));
            }
            Ok(0)
        }
    }
}

async fn run(a: RunArgs) -> anyhow::Result<i32> {
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
            let opts = sdk::SchedulerOptions::new(master, tls, "tessera-run", "*");
            (tessera_cli::run::run_task(opts, &spec).await?, None)
        }
        None => {
            let dir = tempfile::tempdir()?;
            let mut cfg = tessera_cli::local::LocalClusterConfig::default();
            cfg.master.allocation_interval = Duration::from_millis(100);
            let mut cluster = tessera_cli::local::LocalCluster::start(cfg, dir.path()).await?;
            let cpus = spec.resources.cpus_milli.max(1000);
            let mem = spec.resources.mem.max(1 << 30);
            cluster.add_agent("local", Resources::new(cpus, mem, 0))?;
            let opts = cluster.scheduler_options("tessera-run", "*")?;
            let status = tessera_cli::run::run_task(opts, &spec).await?;
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

fn run_id() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    format!("{secs:x}")
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "agent".into())
}

fn write_private(path: &Path, contents: &str, secret: bool) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    if secret {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}
