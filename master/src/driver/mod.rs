//! The master's driver: a quinn endpoint around the sans-IO [`Master`] core.
//!
//! One task owns the core and its single timer; every connection gets a reader task (control
//! stream → events), a writer task (actions → control stream, through a bounded queue so a slow
//! peer is cut off rather than allowed to grow the master's memory), and a task accepting its
//! blob streams. A peer that sends a malformed or oversized frame, or the wrong protocol version,
//! loses its own connection and nothing else.
//!
//! The registry (`{work_dir}/registry.redb`) is loaded at start and the core recovered from it
//! ([`Master::recover`]; an empty registry is a fresh master). The loop handles every input
//! already queued (up to 256 more) before it drains the core's actions, writes all
//! their registry changes in one transaction, and only then executes the sends and closes: one
//! fsync is shared by everything that arrived together. The write blocks the core's loop (the
//! loop would have to wait for it anyway); a failed write stops the master.

mod blob_streams;

use crate::allocator::Allocator;
use crate::blobs::{BlobError, BlobStore};
use crate::core::{Action, ConnId, Event, Master, MasterConfig};
use crate::registry::{RedbRegistry, Registry, RegistryError};
use blob_streams::{serve_blob_stream, Peer, Quota, CONCURRENT_UPLOADS};
use net::tls::{self, Identity, TransportTuning};
use net::{MessageReader, MessageWriter};
use proto::frame::{self, FrameError};
use proto::identity::{PeerId, PeerKind};
use proto::{Message, Role, PROTOCOL_VERSION};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

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
}

/// A bound master, ready to run.
pub struct MasterServer {
    endpoint: quinn::Endpoint,
    opts: MasterOptions,
    allocator: Box<dyn Allocator>,
    store: Arc<BlobStore>,
    /// The durable registry, `{work_dir}/registry.redb`.
    registry: RedbRegistry,
    /// The trust domain of the master's certificate: peers must belong to the same.
    cluster: String,
}

/// The cluster named by the master's own certificate, which must state a master identity.
fn own_cluster(identity: &Identity) -> Result<String, MasterError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let der = CertificateDer::from_pem_slice(identity.cert_pem.as_bytes())
        .map_err(|e| MasterError::Identity(e.to_string()))?;
    match net::identity::of_certificate(&der) {
        Ok((cluster, id)) if id.kind == PeerKind::Master => Ok(cluster),
        Ok((_, id)) => Err(MasterError::Identity(format!("it states {id}"))),
        Err(e) => Err(MasterError::Identity(e.to_string())),
    }
}

/// What connection tasks tell the core's loop. `Core` carries a whole message, which is what
/// the channel is for; boxing it would cost an allocation per message for nothing.
#[allow(clippy::large_enum_variant)]
enum Input {
    Open {
        conn_id: ConnId,
        conn: quinn::Connection,
        writer: mpsc::Sender<Message>,
    },
    Core(Event),
    /// A message from a peer, holding one of its connection's input permits until the core has
    /// handled it: a connection can fill only its own share of the core's queue.
    FromPeer(Event, tokio::sync::OwnedSemaphorePermit),
    /// A blob stream asks whether its peer may fetch a digest (the core keeps who owns what).
    MayFetch {
        conn_id: ConnId,
        digest: proto::Digest,
        reply: tokio::sync::oneshot::Sender<bool>,
    },
}

impl MasterServer {
    /// Binds the QUIC endpoint (must be called inside a tokio runtime).
    pub fn bind(
        mut opts: MasterOptions,
        allocator: Box<dyn Allocator>,
    ) -> Result<Self, MasterError> {
        let cluster = own_cluster(&opts.identity)?;
        if opts.config.id_key == [0; 32] {
            getrandom::getrandom(&mut opts.config.id_key)
                .map_err(|e| MasterError::Random(e.to_string()))?;
        }
        let server =
            tls::server_config_with_crls(&opts.ca_pem, &opts.identity, &opts.crls, opts.tuning)?;
        let endpoint =
            quinn::Endpoint::server(server, opts.listen).map_err(|source| MasterError::Bind {
                addr: opts.listen,
                source,
            })?;
        let store = Arc::new(BlobStore::open(&opts.work_dir.join("blobs"))?);
        std::fs::create_dir_all(&opts.work_dir).map_err(|source| MasterError::WorkDir {
            path: opts.work_dir.clone(),
            source,
        })?;
        let registry = RedbRegistry::open_in(&opts.work_dir)?;
        Ok(Self {
            endpoint,
            opts,
            allocator,
            store,
            registry,
            cluster,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint
            .local_addr()
            .expect("a bound endpoint has an address")
    }

    /// Serves until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), MasterError> {
        let MasterServer {
            endpoint,
            opts,
            allocator,
            store,
            mut registry,
            cluster,
        } = self;
        let started = Instant::now();
        let snapshot = registry.load()?;
        let (agents, frameworks, tasks) = (
            snapshot.agents.len(),
            snapshot.frameworks.len(),
            snapshot.tasks.len(),
        );
        let mut core = Master::recover(
            opts.config.clone(),
            allocator,
            &snapshot,
            Instant::now().into_std(),
        );
        drop(snapshot);
        if agents + frameworks + tasks > 0 {
            tracing::info!(
                agents,
                frameworks,
                tasks,
                elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                registry = %registry.path().display(),
                "registry loaded; waiting for agents to re-register and frameworks to re-subscribe"
            );
        }
        let mut first_offer = true;
        for (digest, kind) in store.scan()? {
            core.handle(
                Instant::now().into_std(),
                Event::BlobStored {
                    digest,
                    kind,
                    owner: None,
                },
            );
            // Its uploaders before the restart (recorded beside it) may use it again.
            for owner in store.owners(&digest)? {
                core.handle(
                    Instant::now().into_std(),
                    Event::BlobStored {
                        digest,
                        kind,
                        owner: Some(owner),
                    },
                );
            }
        }
        tracing::info!(addr = %endpoint.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            allocator = core.allocator_name(), "master listening");
        let (tx, mut rx) = mpsc::channel::<Input>(INPUT_QUEUE);
        let shared = Arc::new(ConnShared {
            tx: tx.clone(),
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
        drop(tx);

        let mut conns: HashMap<ConnId, (quinn::Connection, mpsc::Sender<Message>)> = HashMap::new();
        tokio::pin!(shutdown);
        loop {
            // Persist, then send: every registry change the drained actions carry is written in
            // one transaction before any of them is executed. Writing a change earlier than the
            // sends queued before it is safe (a crash may always fall between a write and the
            // sends after it), and groups every change of the handled inputs into one commit.
            loop {
                let mut ops = Vec::new();
                let mut actions = Vec::new();
                while let Some(action) = core.poll_action() {
                    match action {
                        Action::Persist(batch) => ops.extend(batch),
                        other => actions.push(other),
                    }
                }
                if ops.is_empty() && actions.is_empty() {
                    break;
                }
                if !ops.is_empty() {
                    if let Err(e) = registry.apply(&ops) {
                        tracing::error!(error = %e, "cannot write the registry; stopping");
                        acceptor.abort();
                        endpoint.close(
                            close_code::NORMAL.into(),
                            b"master stopping: registry write failed",
                        );
                        return Err(e.into());
                    }
                }
                for action in actions {
                    match action {
                        Action::Persist(_) => unreachable!("separated above"),
                        Action::Send { conn, msg } => {
                            if first_offer && matches!(msg, Message::Offers { .. }) {
                                first_offer = false;
                                tracing::info!(
                                    after_start_ms = started.elapsed().as_secs_f64() * 1e3,
                                    known_tasks = tasks,
                                    "first offers served"
                                );
                            }
                            if let Some((c, writer)) = conns.get(&conn) {
                                if writer.try_send(msg).is_err() {
                                    tracing::warn!(conn, "peer too slow or gone; closing");
                                    c.close(
                                        close_code::TOO_SLOW.into(),
                                        b"too slow reading messages",
                                    );
                                    // Forgotten at once: its queue and the core's books let go now.
                                    conns.remove(&conn);
                                    core.handle(
                                        Instant::now().into_std(),
                                        Event::Disconnected { conn },
                                    );
                                }
                            }
                        }
                        Action::Close { conn, reason } => {
                            if let Some((c, _)) = conns.remove(&conn) {
                                tracing::info!(conn, %reason, "closing connection");
                                close_after_flush(c, reason);
                            }
                        }
                    }
                }
            }
            while let Some(digest) = core.poll_blob_gc() {
                // One unlink, in the loop: a re-upload's `BlobStored` queued behind it then
                // finds the file gone (below) instead of the core trusting a deleted blob.
                shared.quota.forget(digest);
                if let Err(e) = shared.store.remove(&digest) {
                    tracing::warn!(digest = %digest.to_hex(), error = %e, "cannot delete a collected blob");
                }
            }
            let wake = core.poll_timeout().map(Instant::from_std);
            let sleep = net::timer::sleep_until(wake);
            tokio::select! {
                _ = &mut shutdown => break,
                input = rx.recv() => match input {
                    Some(input) => {
                        handle_input(&mut core, &mut conns, &shared, input);
                        // Inputs already waiting are handled before the actions are drained,
                        // so their registry changes share one commit.
                        for _ in 0..GROUP_COMMIT {
                            match rx.try_recv() {
                                Ok(input) => handle_input(&mut core, &mut conns, &shared, input),
                                Err(_) => break,
                            }
                        }
                    }
                    None => break,
                },
                _ = sleep => core.handle_timeout(Instant::now().into_std()),
            }
        }
        acceptor.abort();
        endpoint.close(close_code::NORMAL.into(), b"master shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        Ok(())
    }
}

/// Feeds one input from the connection tasks to the core (or the connection table).
fn handle_input(
    core: &mut Master,
    conns: &mut HashMap<ConnId, (quinn::Connection, mpsc::Sender<Message>)>,
    shared: &ConnShared,
    input: Input,
) {
    match input {
        Input::Open {
            conn_id,
            conn,
            writer,
        } => {
            conns.insert(conn_id, (conn, writer));
        }
        Input::Core(ev) => {
            if let Event::Disconnected { conn } = &ev {
                conns.remove(conn);
            }
            if let Event::BlobStored { digest, .. } = &ev {
                if !shared.store.path(digest).exists() {
                    // Stored, then collected before this event came through.
                    tracing::warn!(digest = %digest.to_hex(), "an upload raced the blob GC and was deleted; it must be uploaded again");
                    return;
                }
            }
            core.handle(Instant::now().into_std(), ev);
        }
        Input::FromPeer(ev, _permit) => core.handle(Instant::now().into_std(), ev),
        Input::MayFetch {
            conn_id,
            digest,
            reply,
        } => {
            let _ = reply.send(core.may_fetch(conn_id, &digest));
        }
    }
}

/// Closes a connection a moment later, so that messages queued just before (an `Error`, a
/// `Shutdown`) have a chance to reach the peer.
fn close_after_flush(conn: quinn::Connection, reason: String) {
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        conn.close(close_code::PROTOCOL.into(), reason.as_bytes());
    });
}

struct ConnShared {
    tx: mpsc::Sender<Input>,
    store: Arc<BlobStore>,
    uploads: tokio::sync::Semaphore,
    max_frame: usize,
    max_blob_size: u64,
    handshake_timeout: Duration,
    cluster: String,
    quota: Quota,
    principals: PrincipalSlots,
}

/// Open connections per principal, against [`CONNECTIONS_PER_PRINCIPAL`].
#[derive(Default)]
struct PrincipalSlots(std::sync::Mutex<HashMap<PeerId, usize>>);

impl PrincipalSlots {
    /// Takes a slot for `who`, given back when the returned guard drops; `None` when it holds
    /// all its slots.
    fn enter(&self, who: &PeerId) -> Option<PrincipalSlot<'_>> {
        let mut held = self.0.lock().expect("poisoned");
        let n = held.entry(who.clone()).or_default();
        if *n >= CONNECTIONS_PER_PRINCIPAL {
            return None;
        }
        *n += 1;
        Some(PrincipalSlot {
            slots: self,
            who: who.clone(),
        })
    }
}

/// One connection's slot; gives it back on drop.
struct PrincipalSlot<'a> {
    slots: &'a PrincipalSlots,
    who: PeerId,
}

impl Drop for PrincipalSlot<'_> {
    fn drop(&mut self) {
        let mut held = self.slots.0.lock().expect("poisoned");
        if let Some(n) = held.get_mut(&self.who) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.who);
            }
        }
    }
}

async fn serve_connection(incoming: quinn::Incoming, conn_id: ConnId, shared: Arc<ConnShared>) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            // Includes clients without a certificate from the cluster CA.
            tracing::warn!(%remote, error = %e, "connection refused during the handshake");
            return;
        }
    };
    let principal = match net::identity::of_connection(&conn) {
        Ok((cluster, id)) if cluster == shared.cluster => id,
        Ok((cluster, id)) => {
            let why = format!(
                "certificate of {id} is for cluster {cluster:?}, this is cluster {:?}",
                shared.cluster
            );
            tracing::warn!(%remote, principal = %id, %why, "connection refused");
            conn.close(close_code::FORBIDDEN.into(), why.as_bytes());
            return;
        }
        Err(e) => {
            let why = format!("certificate refused: {e}");
            tracing::warn!(%remote, %why, "connection refused");
            conn.close(close_code::FORBIDDEN.into(), why.as_bytes());
            return;
        }
    };
    let Some(_slot) = shared.principals.enter(&principal) else {
        let why = format!(
            "{principal} already holds {CONNECTIONS_PER_PRINCIPAL} connections to the master"
        );
        tracing::warn!(%remote, %principal, "connection refused: too many connections");
        conn.close(close_code::FORBIDDEN.into(), why.as_bytes());
        return;
    };
    let handshake = async {
        let (send, recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
        let mut send = MessageWriter::new(send);
        let mut recv = MessageReader::new(recv, shared.max_frame);
        match recv.recv().await {
            Ok(Some(Message::Hello { version, role })) if version == PROTOCOL_VERSION => {
                if let Some(why) = role_refusal(role, &principal) {
                    tracing::warn!(%remote, %principal, ?role, %why, "connection refused");
                    let _ = send
                        .send(&Message::Error {
                            message: why.clone(),
                        })
                        .await;
                    let _ = send.get_mut().finish();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    conn.close(close_code::FORBIDDEN.into(), why.as_bytes());
                    return Err(why);
                }
                send.send(&Message::HelloAck {
                    version: PROTOCOL_VERSION,
                })
                .await
                .map_err(|e| e.to_string())?;
                Ok((send, recv, role))
            }
            Ok(Some(Message::Hello { version, .. })) => {
                let message = format!(
                    "protocol version {version} is not supported; this master speaks {PROTOCOL_VERSION}"
                );
                let _ = send
                    .send(&Message::Error {
                        message: message.clone(),
                    })
                    .await;
                let _ = send.get_mut().finish();
                tokio::time::sleep(Duration::from_millis(50)).await;
                conn.close(close_code::VERSION.into(), message.as_bytes());
                Err(message)
            }
            Ok(Some(other)) => Err(format!("expected Hello, got {}", other.kind())),
            Ok(None) => Err("stream closed before Hello".to_owned()),
            Err(e) => Err(e.to_string()),
        }
    };
    let (mut send, mut recv, role) =
        match tokio::time::timeout(shared.handshake_timeout, handshake).await {
            Ok(Ok(x)) => x,
            Ok(Err(why)) => {
                tracing::warn!(%remote, %why, "handshake failed");
                conn.close(close_code::PROTOCOL.into(), why.as_bytes());
                return;
            }
            Err(_) => {
                tracing::warn!(%remote, "no Hello in time");
                conn.close(close_code::PROTOCOL.into(), b"no Hello in time");
                return;
            }
        };
    tracing::debug!(%remote, conn_id, ?role, "peer connected");

    let (writer, mut outbox) = mpsc::channel::<Message>(WRITE_QUEUE);
    let _ = shared
        .tx
        .send(Input::Open {
            conn_id,
            conn: conn.clone(),
            writer,
        })
        .await;
    let _ = shared
        .tx
        .send(Input::Core(Event::Connected {
            conn: conn_id,
            role,
            peer: remote.to_string(),
            principal: principal.clone(),
        }))
        .await;
    tokio::spawn(async move {
        while let Some(msg) = outbox.recv().await {
            if let Err(e) = send.send(&msg).await {
                tracing::debug!(conn_id, error = %e, "control write failed");
                break;
            }
        }
    });
    let blobs = {
        let conn = conn.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(serve_blob_stream(
                    send,
                    recv,
                    Peer {
                        conn_id,
                        role,
                        principal: principal.clone(),
                    },
                    shared.clone(),
                ));
            }
        })
    };

    let inputs = Arc::new(tokio::sync::Semaphore::new(PEER_INPUTS));
    let mut budget = crate::rate::FrameBudget::new(
        crate::rate::FRAMES_PER_SECOND,
        crate::rate::FRAME_BURST,
        std::time::Instant::now(),
    );
    loop {
        match recv.recv().await {
            Ok(Some(msg)) => {
                if let Some(wait) = budget.take(std::time::Instant::now()) {
                    // Over its rate: this peer waits, and QUIC flow control holds it back.
                    tokio::time::sleep(wait).await;
                }
                let Ok(permit) = inputs.clone().acquire_owned().await else {
                    break;
                };
                if shared
                    .tx
                    .send(Input::FromPeer(
                        Event::Message { conn: conn_id, msg },
                        permit,
                    ))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Ok(None) => break,
            Err(
                e
                @ (FrameError::TooLarge { .. } | FrameError::Malformed(_) | FrameError::Truncated),
            ) => {
                tracing::warn!(%remote, conn_id, error = %e, "closing connection: bad frame");
                conn.close(close_code::PROTOCOL.into(), e.to_string().as_bytes());
                break;
            }
            Err(FrameError::Io(e)) => {
                tracing::debug!(%remote, conn_id, error = %e, "control stream ended");
                break;
            }
        }
    }
    blobs.abort();
    let _ = shared
        .tx
        .send(Input::Core(Event::Disconnected { conn: conn_id }))
        .await;
}

/// Why a certificate of `principal`'s kind may not take `role`, if it may not: agents register
/// only with agent certificates, schedulers subscribe only with framework or operator ones.
fn role_refusal(role: Role, principal: &PeerId) -> Option<String> {
    let allowed = match role {
        Role::Agent => principal.kind == PeerKind::Agent,
        Role::Scheduler => matches!(principal.kind, PeerKind::Framework | PeerKind::Operator),
        Role::Standby => principal.kind == PeerKind::Master,
    };
    (!allowed).then(|| {
        let what = match role {
            Role::Agent => "register as an agent",
            Role::Scheduler => "subscribe a framework",
            Role::Standby => "mirror blobs as a standby master",
        };
        format!(
            "a {} certificate ({principal}) may not {what}",
            principal.kind
        )
    })
}
