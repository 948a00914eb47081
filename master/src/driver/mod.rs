//! The master's driver: a quinn endpoint around the sans-IO [`Master`] core.
//!
//! One task owns the core and its single timer; every connection gets a reader task (control
//! stream → events), a writer task (actions → control stream, through a bounded queue so a slow
//! peer is cut off rather than allowed to grow the master's memory), and a task accepting its
//! blob streams. A peer that sends a malformed or oversized frame, or the wrong protocol version,
//! loses its own connection and nothing else.
//!
//! The registry is loaded at the start of a term and the core recovered from it
//! ([`Master::recover`]; an empty registry is a fresh master). The loop handles every input
//! already queued (up to 256 more) before it drains the core's actions, writes all
//! their registry changes in one transaction, and only then executes the sends and closes: one
//! fsync (or one etcd transaction) is shared by everything that arrived together. The write
//! blocks the core's loop (the loop would have to wait for it anyway).
//!
//! Two ways to run:
//! - **Single master** ([`MasterServer::bind`]): the registry is `{work_dir}/registry.redb`, the
//!   one term lasts until shutdown, and a failed write stops the master.
//! - **One of several** ([`MasterServer::bind_shared`]): a [`Coordinator`] (etcd) elects the
//!   leader and keeps the registry. A standby answers every `Hello` with `NotLeader` (naming the
//!   leader) and mirrors the leader's blobs (`mirror.rs`). Once elected, it serves a term
//!   (`term.rs`): exactly a restart from the shared registry. It acts only while its term is
//!   provably valid (`Term::valid_until`): it writes nothing once that passes and sends nothing
//!   after a failed or late write; then it steps down (drops the core, closes its connections
//!   with [`close_code::NOT_LEADER`] so peers look for the new leader at once) and campaigns
//!   again. Every registry write is also fenced by the coordinator, so a deposed leader that
//!   slept through its term cannot write either.

mod blob_streams;
mod conn;
mod mirror;
mod pipeline;
mod term;

use crate::allocator::Allocator;
use crate::blobs::{BlobError, BlobStore};
use crate::core::{ConnId, Event, MasterConfig};
use crate::ha::{Coordinator, HaError};
use crate::http::metrics::Metrics;
use crate::http::{Leadership, ReportError};
use crate::registry::{RedbRegistry, RegistryError, RegistryThread};
use blob_streams::{Quota, CONCURRENT_UPLOADS};
use conn::{serve_connection, PrincipalSlots};
use net::tls::{self, Identity, TransportTuning};
use proto::frame;
use proto::identity::PeerKind;
use proto::Message;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use term::{lead, TermEnd};
use tokio::sync::{mpsc, oneshot, watch};

/// QUIC application error codes the master closes connections with.
pub mod close_code {
    /// Orderly close (shutdown, replaced by a newer connection).
    pub const NORMAL: u32 = 0;
    /// The peer broke the protocol: malformed or oversized frame, wrong role, no handshake.
    pub const PROTOCOL: u32 = 1;
    /// The peer speaks another protocol version.
    pub const VERSION: u32 = 2;
    /// The peer does not read its messages fast enough.
    pub const TOO_SLOW: u32 = 3;
    /// The peer's certificate does not allow what it asked (no identity, another cluster, or a
    /// kind that may not take the role it claimed).
    pub const FORBIDDEN: u32 = 4;
    /// This master does not lead (a standby, or a leader that stepped down): find the leader.
    pub const NOT_LEADER: u32 = net::link::NOT_LEADER_CLOSE_CODE;
}

/// Inputs (messages of all connections, blob events, fetch questions) queued for the core; when
/// full, connections' readers wait, and QUIC flow control pushes back on their peers.
const INPUT_QUEUE: usize = 16_384;

/// Messages of one connection waiting for the core at once: its share of [`INPUT_QUEUE`].
const PEER_INPUTS: usize = 1024;

/// Connections one principal may hold open at once (agents need one, schedulers a few).
const CONNECTIONS_PER_PRINCIPAL: usize = 64;

/// Control messages queued per connection before the peer is considered too slow.
const WRITE_QUEUE: usize = 65_536;

/// Most further inputs already queued that are handled before the core's actions are drained,
/// so that their registry changes are written in one transaction.
const GROUP_COMMIT: usize = 256;

/// How long a master that stepped down waits before it campaigns again.
const STEP_DOWN_PAUSE: Duration = Duration::from_secs(1);

/// How long a blob nobody uses is kept (`MasterConfig::blob_gc_grace` of [`MasterOptions::new`]).
pub const DEFAULT_BLOB_GC_GRACE: Duration = Duration::from_secs(3600);

/// Everything the master process is configured with.
#[derive(Clone, Debug)]
pub struct MasterOptions {
    /// UDP address to listen on.
    pub listen: SocketAddr,
    /// The cluster CA (PEM): clients must present a certificate it signed.
    pub ca_pem: String,
    /// The master's own certificate and key.
    pub identity: Identity,
    /// QUIC keep-alive and idle timeout (a silent peer is dropped after the timeout).
    pub tuning: TransportTuning,
    /// Where blobs are stored.
    pub work_dir: PathBuf,
    /// The core's tunables.
    pub config: MasterConfig,
    /// Largest module or file accepted.
    pub max_blob_size: u64,
    /// Largest control frame accepted.
    pub max_frame: usize,
    /// How long a new connection may take to send its `Hello`.
    pub handshake_timeout: Duration,
    /// Most connections served at once (default 10,000); further ones are refused at the QUIC
    /// handshake, so a flood of peers cannot exhaust the master.
    pub max_connections: usize,
    /// Certificate revocation lists (PEM, signed by the CA): certificates they name are refused
    /// in the TLS handshake.
    pub crls: Vec<String>,
    /// Bytes of blobs each principal may store (default 4 GiB).
    pub blob_quota: u64,
    /// TCP address of the operator HTTP surface (`/health`, `/state`, `/metrics`, ...; see
    /// [`crate::http`]), `None` (the default here) for none. Plain HTTP on a loopback address
    /// unless [`Self::http_tls`]; HTTPS with client certificates on any other.
    pub http_listen: Option<SocketAddr>,
    /// Serve HTTPS with client certificates even on loopback, so that callers are told apart
    /// by their certificates (a shared machine; tests of who may see and kill what).
    pub http_tls: bool,
}

impl MasterOptions {
    /// Options with defaults for everything but the essentials.
    pub fn new(listen: SocketAddr, ca_pem: String, identity: Identity, work_dir: PathBuf) -> Self {
        Self {
            listen,
            ca_pem,
            identity,
            tuning: TransportTuning::default(),
            work_dir,
            config: MasterConfig {
                blob_gc_grace: Some(DEFAULT_BLOB_GC_GRACE),
                ..MasterConfig::default()
            },
            max_blob_size: 64 << 20,
            max_frame: frame::DEFAULT_MAX_FRAME,
            handshake_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            crls: Vec::new(),
            blob_quota: 4 << 30,
            http_listen: None,
            http_tls: false,
        }
    }
}

/// Why the master could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// TLS set-up failed.
    #[error(transparent)]
    Tls(#[from] net::tls::TlsError),
    /// The UDP socket could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The blob store could not be opened.
    #[error(transparent)]
    Blobs(#[from] BlobError),
    /// The master's own certificate states no master identity.
    #[error("the master's certificate is not a master's ({0}); issue one with `tessera cert issue master`")]
    Identity(String),
    /// The registry could not be opened, read or written. A master that cannot persist stops
    /// rather than send what depends on a write that did not happen.
    #[error("registry: {0}")]
    Registry(#[from] RegistryError),
    /// The work directory could not be created.
    #[error("creating the work directory {path}: {source}")]
    WorkDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The operating system gave no randomness for the id key.
    #[error("no randomness for the id key: {0}")]
    Random(String),
    /// The coordination service cannot be used (configuration, another cluster's registry).
    #[error(transparent)]
    Ha(#[from] HaError),
    /// The HTTP listener could not be bound.
    #[error("binding the HTTP listener {addr}: {source}")]
    HttpBind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Where the registry lives and who decides that this master leads.
enum Store {
    /// A single master: the embedded registry, `{work_dir}/registry.redb`.
    Local(RedbRegistry),
    /// One of several masters sharing a coordination service.
    Shared {
        coordinator: Arc<dyn Coordinator>,
        /// The `host:port` peers are sent to while this master leads.
        advertise: String,
    },
}

/// A bound master, ready to run.
pub struct MasterServer {
    endpoint: quinn::Endpoint,
    opts: MasterOptions,
    allocator: Box<dyn Allocator>,
    store: Arc<BlobStore>,
    registry: Store,
    /// The trust domain of the master's certificate: peers must belong to the same.
    cluster: String,
    /// The operator HTTP listener, when enabled.
    http: Option<std::net::TcpListener>,
}

/// The cluster named by the master's own certificate, which must state a master identity (the
/// default etcd prefix of a highly available master names it).
pub fn cluster_of(identity: &Identity) -> Result<String, MasterError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let der = CertificateDer::from_pem_slice(identity.cert_pem.as_bytes())
        .map_err(|e| MasterError::Identity(e.to_string()))?;
    match net::identity::of_certificate(&der) {
        Ok((cluster, id)) if id.kind == PeerKind::Master => Ok(cluster),
        Ok((_, id)) => Err(MasterError::Identity(format!("it states {id}"))),
        Err(e) => Err(MasterError::Identity(e.to_string())),
    }
}

/// Whether connections are served, read by each new connection once its `Hello` is in.
#[derive(Clone)]
enum Mode {
    /// Not serving: peers are told who leads (`None`: nobody yet, or unknown).
    Standby(Option<String>),
    /// Leading (the single master always does): connections feed this term's core.
    Leading(mpsc::Sender<Input>),
}

/// What connection tasks tell the core's loop. `Core` carries a whole message, which is what
/// the channel is for; boxing it would cost an allocation per message for nothing.
#[allow(clippy::large_enum_variant)]
enum Input {
    Open {
        conn_id: ConnId,
        conn: quinn::Connection,
        writer: mpsc::Sender<Message>,
        /// Its certificate's principal (`agent/a1`), the label of its path metrics.
        peer: String,
    },
    Core(Event),
    /// A message from a peer, holding one of its connection's input permits until the core has
    /// handled it: a connection can fill only its own share of the core's queue.
    FromPeer(Event, tokio::sync::OwnedSemaphorePermit),
    /// A blob stream asks whether its peer may fetch a digest (the core keeps who owns what).
    MayFetch {
        conn_id: ConnId,
        digest: proto::Digest,
        reply: oneshot::Sender<bool>,
    },
    /// The HTTP surface asks the core something (see [`crate::http::Ask`]).
    Ask(crate::http::Ask),
    /// An upload was stored (`event` is its `BlobStored`); `done` fires once that is recorded
    /// (in the shared registry, when there is one), and only then is the upload answered.
    Stored {
        event: Event,
        size: u64,
        done: oneshot::Sender<()>,
    },
}

impl MasterServer {
    /// Binds the QUIC endpoint of a single master, whose registry is
    /// `{work_dir}/registry.redb` (must be called inside a tokio runtime).
    pub fn bind(opts: MasterOptions, allocator: Box<dyn Allocator>) -> Result<Self, MasterError> {
        std::fs::create_dir_all(&opts.work_dir).map_err(|source| MasterError::WorkDir {
            path: opts.work_dir.clone(),
            source,
        })?;
        let registry = Store::Local(RedbRegistry::open_in(&opts.work_dir)?);
        Self::bind_with(opts, allocator, registry)
    }

    /// Binds the QUIC endpoint of one of several masters: `coordinator` elects the leader and
    /// keeps the registry; peers reaching this master while another leads are sent to
    /// `advertise` of the leader. Its blobs stay in `{work_dir}/blobs` (mirrored from the
    /// leader while it is a standby).
    pub fn bind_shared(
        opts: MasterOptions,
        allocator: Box<dyn Allocator>,
        coordinator: Arc<dyn Coordinator>,
        advertise: String,
    ) -> Result<Self, MasterError> {
        Self::bind_with(
            opts,
            allocator,
            Store::Shared {
                coordinator,
                advertise,
            },
        )
    }

    fn bind_with(
        mut opts: MasterOptions,
        allocator: Box<dyn Allocator>,
        registry: Store,
    ) -> Result<Self, MasterError> {
        let cluster = cluster_of(&opts.identity)?;
        if opts.config.id_key == [0; 32] {
            getrandom::getrandom(&mut opts.config.id_key)
                .map_err(|e| MasterError::Random(e.to_string()))?;
        }
        let server =
            tls::server_config_with_crls(&opts.ca_pem, &opts.identity, &opts.crls, opts.tuning)?;
        let mut endpoint =
            quinn::Endpoint::server(server, opts.listen).map_err(|source| MasterError::Bind {
                addr: opts.listen,
                source,
            })?;
        // A standby dials the leader from the same socket to mirror its blobs.
        endpoint.set_default_client_config(tls::client_config_with_crls(
            &opts.ca_pem,
            &opts.identity,
            &opts.crls,
            opts.tuning,
        )?);
        std::fs::create_dir_all(&opts.work_dir).map_err(|source| MasterError::WorkDir {
            path: opts.work_dir.clone(),
            source,
        })?;
        let store = Arc::new(BlobStore::open(&opts.work_dir.join("blobs"))?);
        let http = match opts.http_listen {
            None => None,
            Some(addr) => {
                let l = std::net::TcpListener::bind(addr)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .map_err(|source| MasterError::HttpBind { addr, source })?;
                Some(l)
            }
        };
        Ok(Self {
            endpoint,
            opts,
            allocator,
            store,
            registry,
            cluster,
            http,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint
            .local_addr()
            .expect("a bound endpoint has an address")
    }

    /// The address the operator HTTP surface actually listens on (`None`: disabled).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), MasterError> {
        let MasterServer {
            endpoint,
            opts,
            allocator,
            store,
            registry,
            cluster,
            http,
        } = self;
        let (mode_tx, mode) = watch::channel(Mode::Standby(None));
        let shared = Arc::new(ConnShared {
            mode,
            store,
            uploads: tokio::sync::Semaphore::new(CONCURRENT_UPLOADS),
            max_frame: opts.max_frame,
            max_blob_size: opts.max_blob_size,
            handshake_timeout: opts.handshake_timeout,
            cluster,
            quota: Quota::new(opts.blob_quota),
            principals: PrincipalSlots::default(),
        });
        let acceptor = {
            let endpoint = endpoint.clone();
            let shared = shared.clone();
            let slots = Arc::new(tokio::sync::Semaphore::new(opts.max_connections));
            tokio::spawn(async move {
                let mut next_id: ConnId = 1;
                while let Some(incoming) = endpoint.accept().await {
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        tracing::warn!(remote = %incoming.remote_address(), "connection limit reached; refused");
                        incoming.refuse();
                        continue;
                    };
                    let conn_id = next_id;
                    next_id += 1;
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        serve_connection(incoming, conn_id, shared).await;
                        drop(permit);
                    });
                }
            })
        };
        tracing::info!(addr = %endpoint.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            "master listening");
        let metrics = Arc::new(Metrics::new());
        let http = match http {
            Some(listener) => {
                let listener = tokio::net::TcpListener::from_std(listener).map_err(|source| {
                    MasterError::HttpBind {
                        addr: opts.http_listen.expect("bound from it"),
                        source,
                    }
                })?;
                let source = Arc::new(HttpSource {
                    mode: shared.mode.clone(),
                    single: matches!(registry, Store::Local(_)),
                });
                let router = crate::http::router(source, metrics.clone());
                let addr = listener
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                if opts.http_tls || !listener.local_addr().is_ok_and(|a| a.ip().is_loopback()) {
                    let tls =
                        net::tls::rustls_server_config(&opts.ca_pem, &opts.identity, &opts.crls)?;
                    tracing::info!(%addr, "HTTPS listening (client certificates of the cluster CA)");
                    Some(tokio::spawn(crate::http::serve_tls(
                        listener,
                        router,
                        tls,
                        shared.cluster.clone(),
                    )))
                } else {
                    tracing::info!(%addr, "HTTP listening (loopback, no TLS)");
                    Some(tokio::spawn(crate::http::serve(listener, router)))
                }
            }
            None => None,
        };
        let ctx = term::Ctx {
            opts: &opts,
            shared: &shared,
            mode: &mode_tx,
            metrics: &metrics,
        };
        tokio::pin!(shutdown);
        let mut allocator = Some(allocator);
        let result = match registry {
            Store::Local(registry) => {
                tracing::info!(registry = %registry.path().display(), "single master");
                // Its commits on a thread of their own: see `RegistryThread`.
                let mut registry = RegistryThread::spawn(registry).map_err(|e| {
                    MasterError::Registry(RegistryError::Store {
                        what: "thread",
                        source: Box::new(e),
                    })
                })?;
                lead(&ctx, &mut registry, None, &mut allocator, &mut shutdown)
                    .await
                    .map(|_| ())
            }
            Store::Shared {
                coordinator,
                advertise,
            } => {
                run_shared(
                    &ctx,
                    &endpoint,
                    coordinator,
                    &advertise,
                    &mut allocator,
                    &mut shutdown,
                )
                .await
            }
        };
        acceptor.abort();
        if let Some(http) = http {
            http.abort();
        }
        endpoint.close(close_code::NORMAL.into(), b"master shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        result
    }
}

/// One of several masters: standby until elected, leader for a term, standby again after it.
async fn run_shared(
    ctx: &term::Ctx<'_>,
    endpoint: &quinn::Endpoint,
    coordinator: Arc<dyn Coordinator>,
    advertise: &str,
    allocator: &mut Option<Box<dyn Allocator>>,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<(), MasterError> {
    let mut stepped_down = false;
    loop {
        ctx.mode.send_replace(Mode::Standby(None));
        let (leader_tx, mut leader) = watch::channel(None::<String>);
        let mirror = tokio::spawn(mirror::mirror_blobs(
            coordinator.clone(),
            ctx.shared.store.clone(),
            endpoint.clone(),
            leader.clone(),
            ctx.opts.max_blob_size,
        ));
        let waiting = std::time::Instant::now();
        tracing::info!(advertise, "standby: campaigning for leadership");
        let pause = stepped_down;
        let (coordinator, leader_tx) = (&coordinator, &leader_tx);
        let campaign = async move {
            if pause {
                // A master that just lost its term (paused, cut off) lets the others try
                // first, rather than flap back.
                tokio::time::sleep(STEP_DOWN_PAUSE).await;
            }
            coordinator.campaign(advertise, leader_tx).await
        };
        tokio::pin!(campaign);
        let elected = loop {
            tokio::select! {
                _ = shutdown.as_mut() => {
                    mirror.abort();
                    return Ok(());
                }
                term = &mut campaign => break term,
                Ok(()) = leader.changed() => {
                    let now = leader.borrow_and_update().clone();
                    tracing::info!(leader = ?now, "standby: the leader is");
                    // Peers reaching this standby are sent there.
                    ctx.mode.send_replace(Mode::Standby(now.filter(|l| l != advertise)));
                }
            }
        };
        mirror.abort();
        let mut term = match elected {
            Ok(term) => term,
            Err(HaError::Unavailable(e)) => {
                tracing::warn!(error = %e, "campaign failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(
            fence = term.fence,
            unix_ms = term::unix_ms(),
            waited_ms = waiting.elapsed().as_secs_f64() * 1e3,
            "elected leader"
        );
        let validity = term::Validity {
            fence: term.fence,
            until: term.valid_until.clone(),
        };
        let end = lead(
            ctx,
            &mut *term.registry,
            Some(validity),
            allocator,
            shutdown,
        )
        .await;
        drop(term);
        match end {
            Ok(TermEnd::Shutdown) => return Ok(()),
            Ok(TermEnd::SteppedDown(why)) => {
                stepped_down = true;
                tracing::warn!(reason = %why, unix_ms = term::unix_ms(), "stepped down");
            }
            Err(e) => return Err(e),
        }
    }
}

/// What the HTTP surface reads from the driver: the mode, and the current term's input queue.
struct HttpSource {
    mode: watch::Receiver<Mode>,
    /// A single master (no coordinator): leading means `single`.
    single: bool,
}

impl crate::http::Source for HttpSource {
    fn leadership(&self) -> Leadership {
        match &*self.mode.borrow() {
            Mode::Leading(_) if self.single => Leadership::Single,
            Mode::Leading(_) => Leadership::Leader,
            Mode::Standby(leader) => Leadership::Standby(leader.clone()),
        }
    }

    fn ask(&self, ask: crate::http::Ask) -> Result<(), ReportError> {
        let tx = match &*self.mode.borrow() {
            Mode::Leading(tx) => tx.clone(),
            Mode::Standby(leader) => return Err(ReportError::Standby(leader.clone())),
        };
        tx.try_send(Input::Ask(ask)).map_err(|_| ReportError::Busy)
    }
}

struct ConnShared {
    /// Standby or leading (with the current term's input queue).
    mode: watch::Receiver<Mode>,
    store: Arc<BlobStore>,
    uploads: tokio::sync::Semaphore,
    max_frame: usize,
    max_blob_size: u64,
    handshake_timeout: Duration,
    cluster: String,
    quota: Quota,
    principals: PrincipalSlots,
}
