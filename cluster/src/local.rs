//! A whole cluster inside one process: a master and agents on loopback QUIC with an ephemeral
//! CA, the same code paths as a real deployment: the real tier, beside the virtual-time
//! [`crate::sim`]. `tessera dev`, `tessera run` without `--master`, the end-to-end tests and the
//! benchmarks all stand on it.

use agent::driver::AgentOptions;
use master::allocator::drf::Drf;
use master::core::MasterConfig;
use master::driver::{MasterError, MasterOptions, MasterServer};
use net::tls::{ClusterCa, PeerTls, TlsError, TransportTuning, DEFAULT_PEER_VALIDITY};
use proto::identity::{PeerId, PeerKind};
use proto::{AgentInfo, Resources};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Why a local cluster could not start one of its parts.
#[derive(Debug, thiserror::Error)]
pub enum LocalClusterError {
    /// The ephemeral CA or a peer's certificate could not be made.
    #[error("certificates: {0}")]
    Tls(#[from] TlsError),
    /// The master could not start (e.g. bind its endpoint).
    #[error("master: {0}")]
    Master(#[from] MasterError),
    /// A peer name a certificate cannot carry.
    #[error("peer name: {0}")]
    Name(String),
}

/// Knobs of a local cluster.
#[derive(Clone, Debug)]
pub struct LocalClusterConfig {
    /// The master core's tunables.
    pub master: MasterConfig,
    /// QUIC keep-alive and idle timeout for every peer.
    pub tuning: TransportTuning,
    /// Agents' status update retry interval.
    pub status_retry: Duration,
    /// Most connections the master serves at once.
    pub max_connections: usize,
    /// Where agents compile modules (`ExecutorConfig::compiler`): `None` (the default), in
    /// process; the `tessera` binary gives its own `compile` subcommand.
    pub compiler: Option<agent::executor::CompilerCommand>,
}

impl Default for LocalClusterConfig {
    fn default() -> Self {
        Self {
            master: MasterConfig::default(),
            tuning: TransportTuning::default(),
            status_retry: Duration::from_secs(2),
            max_connections: 10_000,
            compiler: None,
        }
    }
}

/// One agent of a local cluster.
pub struct LocalAgent {
    /// Its hostname.
    pub name: String,
    /// Its work directory.
    pub work_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    join: Option<JoinHandle<()>>,
}

/// A master and agents running as tasks of this process.
pub struct LocalCluster {
    /// The ephemeral cluster CA.
    pub ca: ClusterCa,
    /// The master's QUIC address.
    pub master_addr: SocketAddr,
    /// The master's operator HTTP address (`/health`, `/state`, `/metrics`), on loopback.
    pub master_http: SocketAddr,
    /// Root of the master's and agents' work directories.
    pub dir: PathBuf,
    /// Settings the cluster was started with.
    pub config: LocalClusterConfig,
    /// The agents, in the order added.
    pub agents: Vec<LocalAgent>,
    master_stop: Option<oneshot::Sender<()>>,
    master_join: Option<JoinHandle<()>>,
}

impl LocalCluster {
    /// Starts a master on `127.0.0.1:0` with work directories under `dir`.
    pub async fn start(config: LocalClusterConfig, dir: &Path) -> Result<Self, LocalClusterError> {
        let ca = ClusterCa::generate("tessera-local-ca")?;
        let identity = ca.issue_master()?;
        let mut opts = MasterOptions::new(
            (Ipv4Addr::LOCALHOST, 0).into(),
            ca.cert_pem.clone(),
            identity,
            dir.join("master"),
        );
        opts.config = config.master.clone();
        opts.tuning = config.tuning;
        opts.max_connections = config.max_connections;
        opts.http_listen = Some((Ipv4Addr::LOCALHOST, 0).into());
        let server = MasterServer::bind(opts, Box::new(Drf::new()))?;
        let master_addr = server.local_addr();
        let master_http = server.http_addr().expect("HTTP was asked for");
        let (stop, stopped) = oneshot::channel::<()>();
        let join = tokio::spawn(async move {
            if let Err(e) = server
                .run(async {
                    let _ = stopped.await;
                })
                .await
            {
                tracing::error!(error = %e, "master failed");
            }
        });
        Ok(Self {
            ca,
            master_addr,
            master_http,
            dir: dir.to_owned(),
            config,
            agents: Vec::new(),
            master_stop: Some(stop),
            master_join: Some(join),
        })
    }

    /// A certificate stating `kind`/`name`, signed by the cluster CA.
    pub fn peer_tls(&self, kind: PeerKind, name: &str) -> Result<PeerTls, LocalClusterError> {
        let id = PeerId::new(kind, name).map_err(|e| LocalClusterError::Name(e.to_string()))?;
        Ok(PeerTls {
            ca_pem: self.ca.cert_pem.clone(),
            identity: self.ca.issue_peer(&id, DEFAULT_PEER_VALIDITY)?,
            crls: Vec::new(),
        })
    }

    /// Options for an agent named `name` (dialling `via` instead of the master when given,
    /// e.g. a lossy-link proxy).
    pub fn agent_options(
        &self,
        name: &str,
        resources: Resources,
        via: Option<SocketAddr>,
    ) -> Result<AgentOptions, LocalClusterError> {
        let mut opts = AgentOptions::new(
            via.unwrap_or(self.master_addr),
            self.peer_tls(PeerKind::Agent, name)?,
            self.dir.join(name),
            AgentInfo {
                datasets: Vec::new(),
                reservations: vec![],
                hostname: name.to_owned(),
                resources,
                attributes: vec![],
            },
        );
        opts.tuning = self.config.tuning;
        opts.status_retry = self.config.status_retry;
        opts.executor.compiler = self.config.compiler.clone();
        opts.max_backoff = Duration::from_millis(500);
        Ok(opts)
    }

    /// Starts an agent with these options; returns its index.
    pub fn spawn_agent(&mut self, opts: AgentOptions) -> usize {
        let name = opts.info.hostname.clone();
        let work_dir = opts.work_dir.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let join = tokio::spawn(async move {
            if let Err(e) = agent::driver::run(opts, async {
                let _ = stopped.await;
            })
            .await
            {
                tracing::error!(error = %e, "agent failed");
            }
        });
        self.agents.push(LocalAgent {
            name,
            work_dir,
            stop: Some(stop),
            join: Some(join),
        });
        self.agents.len() - 1
    }

    /// Starts an agent named `name` offering `resources`; returns its index.
    pub fn add_agent(
        &mut self,
        name: &str,
        resources: Resources,
    ) -> Result<usize, LocalClusterError> {
        let opts = self.agent_options(name, resources, None)?;
        Ok(self.spawn_agent(opts))
    }

    /// Starts an agent named `name` offering `resources` and holding `datasets` as
    /// `(name, host directory)` (each seen read-only at `/data/NAME` by tasks asking for it,
    /// and advertised in the agent's offers); returns its index.
    pub fn add_agent_with_datasets(
        &mut self,
        name: &str,
        resources: Resources,
        datasets: Vec<(String, PathBuf)>,
    ) -> Result<usize, LocalClusterError> {
        let mut opts = self.agent_options(name, resources, None)?;
        opts.info.datasets = datasets.iter().map(|(n, _)| n.clone()).collect();
        opts.datasets = datasets;
        Ok(self.spawn_agent(opts))
    }

    /// Options for a scheduler of framework `name` in `role`.
    pub fn scheduler_options(
        &self,
        name: &str,
        role: &str,
    ) -> Result<sdk::SchedulerOptions, LocalClusterError> {
        let mut opts = sdk::SchedulerOptions::new(
            self.master_addr,
            self.peer_tls(PeerKind::Framework, name)?,
            name,
            role,
        );
        opts.tuning = self.config.tuning;
        Ok(opts)
    }

    /// Crashes agent `i`: its task is aborted on the spot (no orderly goodbye from the agent's
    /// code; its running guests stop with it).
    pub fn crash_agent(&mut self, i: usize) {
        if let Some(join) = self.agents[i].join.take() {
            join.abort();
        }
        self.agents[i].stop = None;
    }

    /// Stops agent `i` in an orderly way.
    pub async fn stop_agent(&mut self, i: usize) {
        if let Some(stop) = self.agents[i].stop.take() {
            let _ = stop.send(());
        }
        if let Some(join) = self.agents[i].join.take() {
            let _ = join.await;
        }
    }

    /// Stops everything.
    pub async fn shutdown(mut self) {
        for i in 0..self.agents.len() {
            self.stop_agent(i).await;
        }
        if let Some(stop) = self.master_stop.take() {
            let _ = stop.send(());
        }
        if let Some(join) = self.master_join.take() {
            let _ = join.await;
        }
    }
}
