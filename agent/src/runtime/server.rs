//! The runtime process's body ([`serve`], run by the hidden `tessera runtime` subcommand): it
//! owns the executor and the guests, and serves one agent at a time on a Unix socket.
//!
//! - One runtime per directory: it holds an exclusive `flock` on `<dir>/lock` for its whole
//!   life (through `std::fs::File::try_lock`, so no new dependency and no `unsafe`); the lock
//!   dies with the process, so a crashed runtime never blocks its successor, and the stale
//!   socket it left is replaced only by the lock's holder. A killed runtime lets go of it
//!   only when the last of its threads has torn down its memory, a moment after its process
//!   looks dead: a successor waits up to [`LOCK_PATIENCE`] for it (meanwhile an agent that
//!   finds another runtime serving connects to that one, and this one gives up).
//! - The socket is bound under a temporary name, made `0600` (the directory is `0700`) and
//!   renamed into place, so an agent never connects to a half-set-up socket.
//! - The newest agent wins: a connection whose hello is valid replaces the attached one (whose
//!   connection is closed). A connection that sends garbage, a frame over the cap or no hello
//!   in time is closed; the runtime and its guests carry on.
//! - With no agent attached for the recovery timeout (Mesos's `recovery_timeout`), the guests
//!   are killed and the process exits; so does [`Request::Stop`](super::wire::Request::Stop).
//! - With no agent attached, it checks every [`DIR_CHECK_INTERVAL`] that its lock file (the
//!   same file, not a successor's) and socket are still in place: when its directory was
//!   removed (a test's tempdir, a decommissioned agent), nobody can ever attach again, so it
//!   kills its guests and exits at once instead of waiting out the recovery timeout, without
//!   writing their output out (which would create their directories again).

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::host::Host;
use super::wire::{Reader, Reply, Request, Writer, PROTOCOL_VERSION};
use super::RuntimeError;
use crate::executor::ExecutorConfig;

/// How long a new connection has to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a runtime with no agent attached checks that its directory is still there (two
/// `stat`s: cheap).
const DIR_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long a starting runtime waits for the directory's lock held by another runtime (one
/// that is exiting lets go of it within this).
const LOCK_PATIENCE: Duration = Duration::from_secs(5);
/// How long the prepares of an agent whose connection ended are kept: long enough for a
/// restarted agent to prepare its tasks again and join their compiles.
const ORPHANED_PREPARES_KEPT: Duration = Duration::from_secs(15);

/// A connection's prepares under way, so that one can be cancelled: each one's abort handle
/// by id, forgotten when it ends (its end is read at the next start, so a burst of prepares
/// costs no scan of the others).
struct Prepares {
    under_way: HashMap<u64, AbortHandle>,
    ended_tx: mpsc::UnboundedSender<u64>,
    ended: mpsc::UnboundedReceiver<u64>,
}

impl Prepares {
    fn new() -> Self {
        let (ended_tx, ended) = mpsc::unbounded_channel();
        Prepares {
            under_way: HashMap::new(),
            ended_tx,
            ended,
        }
    }

    /// Forgets the prepares that have ended.
    fn forget_ended(&mut self) {
        while let Ok(id) = self.ended.try_recv() {
            self.under_way.remove(&id);
        }
    }

    /// Runs `work` as prepare `id`.
    fn start(&mut self, id: u64, work: impl Future<Output = ()> + Send + 'static) {
        self.forget_ended();
        let ended = self.ended_tx.clone();
        let prepare = tokio::spawn(async move {
            work.await;
            let _ = ended.send(id);
        });
        self.under_way.insert(id, prepare.abort_handle());
    }

    /// Drops prepare `id`, which stops its compile unless another prepare or launch waits for
    /// the same module (`executor::compile_jobs`).
    fn cancel(&mut self, id: u64) {
        if let Some(prepare) = self.under_way.remove(&id) {
            prepare.abort();
        }
    }

    /// After the connection ended: the departed agent's next run prepares its tasks again,
    /// joining the same compiles, and a kill then reaches only its own prepares. These are
    /// kept for [`ORPHANED_PREPARES_KEPT`], so that a restart does not start a compile over,
    /// then dropped, which stops a compile no one else waits for.
    fn orphan(mut self) {
        self.forget_ended();
        if self.under_way.is_empty() {
            return;
        }
        tokio::spawn(async move {
            tokio::time::sleep(ORPHANED_PREPARES_KEPT).await;
            for prepare in self.under_way.into_values() {
                prepare.abort();
            }
        });
    }
}

/// Settings of the runtime process.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Its directory: lock, config and log files, and by default the socket.
    pub dir: PathBuf,
    /// The Unix socket it serves.
    pub socket: PathBuf,
    /// The executor's settings.
    pub executor: ExecutorConfig,
    /// With no agent attached this long, kill the guests and exit.
    pub recovery_timeout: Duration,
}

/// Runs the runtime process until it is told to stop or its recovery timeout passes with no
/// agent attached. Errors only before it serves: directory, lock (another runtime serves this
/// directory), executor, socket.
pub async fn serve(opts: ServeOptions) -> Result<(), RuntimeError> {
    create_private_dir(&opts.dir)?;
    let lock = lock_dir(&opts.dir).await?;
    let runtime_id = new_runtime_id();
    let cfg = opts.executor.clone();
    let id = runtime_id.clone();
    let host = tokio::task::spawn_blocking(move || Host::new(cfg, id, true))
        .await
        .map_err(|e| RuntimeError::Start(format!("executor set-up panicked: {e}")))??;
    let listener = bind(&opts.socket)?;
    tracing::info!(
        %runtime_id,
        socket = %opts.socket.display(),
        pid = std::process::id(),
        recovery_timeout = ?opts.recovery_timeout,
        "runtime serving"
    );
    let server = Server {
        host: host.clone(),
        active: Arc::new(watch::Sender::new(None)),
        stop: Arc::new(watch::Sender::new(false)),
    };
    let mut active = server.active.subscribe();
    let mut stop = server.stop.subscribe();
    let mut detached_since = Some(Instant::now());
    let mut next_conn = 0u64;
    let mut remove_socket = true;
    let mut dir_check = tokio::time::interval(DIR_CHECK_INTERVAL);
    dir_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let deadline = detached_since.map(|t| t + opts.recovery_timeout);
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    next_conn += 1;
                    tokio::spawn(server.clone().connection(stream, next_conn));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            changed = active.changed() => {
                if changed.is_err() {
                    break;
                }
                let attached = active.borrow_and_update().is_some();
                detached_since = match (attached, detached_since) {
                    (true, _) => None,
                    (false, Some(t)) => Some(t),
                    (false, None) => Some(Instant::now()),
                };
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                if server.active.borrow().is_some() {
                    // An agent attached just now (its change is next in line).
                    detached_since = None;
                    continue;
                }
                tracing::warn!(
                    live = host.live_count(),
                    "no agent attached for the recovery timeout: killing the guests and exiting"
                );
                host.stop_all().await;
                break;
            }
            _ = dir_check.tick(), if detached_since.is_some() => {
                if server.active.borrow().is_some() {
                    continue;
                }
                if let Some(why) = orphaned(&opts.dir, &opts.socket, &lock) {
                    tracing::warn!(
                        live = host.live_count(),
                        dir = %opts.dir.display(),
                        "{why}: no agent can attach any more; killing the guests and exiting"
                    );
                    // The tasks' directories went with it: writing their output out would
                    // create them again, for nobody to read.
                    host.discard_output_at_end();
                    host.stop_all().await;
                    // The socket path may be a successor's now: leave it alone.
                    remove_socket = false;
                    break;
                }
            }
            _ = async { stop.wait_for(|s| *s).await.is_ok() } => break,
        }
    }
    drop(lock);
    if remove_socket {
        let _ = std::fs::remove_file(&opts.socket);
    }
    tracing::info!(%runtime_id, dropped_messages = host.dropped_messages(), "runtime exiting");
    Ok(())
}

/// What every connection shares.
#[derive(Clone)]
struct Server {
    /// The guests and their events.
    host: Host,
    /// The attached connection, if any.
    active: Arc<watch::Sender<Option<u64>>>,
    /// Set once a stop request has been carried out.
    stop: Arc<watch::Sender<bool>>,
}

impl Server {
    /// Serves one connection until it ends, breaks the protocol or is replaced.
    async fn connection(self, stream: UnixStream, conn: u64) {
        let (r, w) = stream.into_split();
        let mut reader = Reader::<Request>::new(r);
        let mut writer = Writer::<Reply>::new(w);
        let boot_id = match tokio::time::timeout(HELLO_TIMEOUT, reader.recv()).await {
            Ok(Ok(Some(Request::Hello { version, boot_id }))) if version == PROTOCOL_VERSION => {
                boot_id
            }
            Ok(Ok(Some(Request::Hello { version, .. }))) => {
                tracing::warn!(conn, version, "agent of another protocol version refused");
                let why =
                    format!("runtime speaks protocol version {PROTOCOL_VERSION}, agent {version}");
                let _ = writer.send(&Reply::Refused(why)).await;
                return;
            }
            Ok(Ok(Some(_))) => {
                tracing::warn!(conn, "connection did not start with a hello: closed");
                return;
            }
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                tracing::warn!(conn, error = %e, "bad hello: connection closed");
                return;
            }
            Err(_) => {
                tracing::warn!(conn, "no hello in time: connection closed");
                return;
            }
        };
        // The newest agent wins: the attached connection (if any) sees this and closes.
        self.active.send_replace(Some(conn));
        let mut superseded = self.active.subscribe();
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let (replies_tx, mut replies) = mpsc::unbounded_channel::<Reply>();
        let (attachment, token) = self.host.attach(events_tx);
        tracing::info!(
            conn,
            %boot_id,
            live = attachment.live.len(),
            "agent attached"
        );
        let mut write_task = tokio::spawn(async move {
            writer.send(&Reply::Welcome(attachment)).await?;
            loop {
                // Events first: the end events of a stop precede its `Stopped`.
                let reply = tokio::select! {
                    biased;
                    ev = events.recv() => match ev {
                        Some(ev) => Reply::Event(ev),
                        None => break,
                    },
                    r = replies.recv() => match r {
                        Some(r) => r,
                        None => break,
                    },
                };
                match writer.send(&reply).await {
                    Ok(()) => {}
                    // Cannot happen with the executor's caps (tails, updates and messages are
                    // far smaller); never let one event wedge every later attachment.
                    Err(e @ super::wire::FrameError::TooLarge(_)) => {
                        tracing::error!(error = %e, "event too large for the socket: not sent");
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok::<(), super::wire::FrameError>(())
        });
        let mut stopping = false;
        let mut prepares = Prepares::new();
        loop {
            tokio::select! {
                req = reader.recv() => match req {
                    Ok(Some(Request::Stop)) => {
                        tracing::info!(conn, live = self.host.live_count(), "stop requested: killing every guest");
                        self.host.stop_all().await;
                        let _ = replies_tx.send(Reply::Stopped);
                        stopping = true;
                        break;
                    }
                    Ok(Some(req)) => self.request(req, &replies_tx, &mut prepares),
                    Ok(None) => {
                        tracing::info!(conn, "agent detached");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(conn, error = %e, "connection closed");
                        break;
                    }
                },
                _ = async { superseded.wait_for(|a| *a != Some(conn)).await.is_ok() } => {
                    tracing::info!(conn, "replaced by a newer agent connection");
                    break;
                }
                res = &mut write_task => {
                    if let Ok(Err(e)) = res {
                        tracing::warn!(conn, error = %e, "cannot write to the agent: connection closed");
                    }
                    break;
                }
            }
        }
        self.host.detach(token);
        drop(replies_tx);
        prepares.orphan();
        self.active.send_if_modified(|a| {
            let mine = *a == Some(conn);
            if mine {
                *a = None;
            }
            mine
        });
        if stopping {
            // Let the writer flush the end events and `Stopped`, then exit.
            let _ = tokio::time::timeout(Duration::from_secs(10), &mut write_task).await;
            self.stop.send_replace(true);
        }
        write_task.abort();
    }

    /// Carries out one request other than hello and stop; `prepares` are the connection's
    /// prepares under way.
    fn request(
        &self,
        req: Request,
        replies: &mpsc::UnboundedSender<Reply>,
        prepares: &mut Prepares,
    ) {
        let h = &self.host;
        match req {
            Request::Hello { .. } => tracing::warn!("second hello ignored"),
            Request::Stop => {}
            Request::Prepare {
                id,
                digest,
                wasm_path,
            } => {
                let h = h.clone();
                let replies = replies.clone();
                prepares.start(id, async move {
                    let result = h.prepare(&digest, &wasm_path).await;
                    let _ = replies.send(Reply::Prepared { id, result });
                });
            }
            Request::CancelPrepare { id } => prepares.cancel(id),
            Request::ReadOutput {
                id,
                task_dir,
                stderr,
                offset,
                length,
            } => {
                let data = h.read_output(&task_dir, stderr, offset, length);
                let _ = replies.send(Reply::Output { id, data });
            }
            Request::ForgetOutput { task_dir } => h.forget_output(&task_dir),
            Request::Launch { guest, spec } => h.launch(guest, spec),
            Request::Kill { guest } => h.kill(&guest),
            Request::StartInstance { guest, spec } => h.start_instance(guest, spec),
            Request::InstanceLaunch { guest, task } => h.instance_launch(&guest, task),
            Request::InstanceKillTask { guest, task_id } => {
                h.with_instance(&guest, |i| i.kill_task(&task_id))
            }
            Request::InstanceMessage { guest, data } => {
                h.with_instance(&guest, |i| i.message(data))
            }
            Request::InstanceShutdown { guest } => h.with_instance(&guest, |i| i.shutdown()),
            Request::SetEnvelope {
                guest,
                cpus_milli,
                mem_bytes,
            } => h.with_instance(&guest, |i| i.set_envelope(cpus_milli, mem_bytes)),
            Request::Ack { seq } => h.ack(seq),
        }
    }
}

/// Creates `dir` (and its parents) and makes it private to the agent's user.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), RuntimeError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| RuntimeError::Io {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)
}

/// Takes the directory's lock, held as long as the returned file is open, and writes this
/// process's pid into it. Waits up to [`LOCK_PATIENCE`] for a holder to let go.
async fn lock_dir(dir: &Path) -> Result<std::fs::File, RuntimeError> {
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| RuntimeError::Io {
            path: path.clone(),
            source,
        })?;
    let deadline = Instant::now() + LOCK_PATIENCE;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(RuntimeError::Start(format!(
                    "another runtime process serves {} (it holds {})",
                    dir.display(),
                    path.display()
                )))
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(RuntimeError::Io { path, source })
            }
        }
    }
    // Who holds it, for operators (and tests) looking for the runtime process.
    let mut f = &file;
    let _ = f.set_len(0);
    let _ = writeln!(f, "{}", std::process::id());
    Ok(file)
}

/// Why the runtime can never be attached again, if so: its lock file is gone or replaced (the
/// directory was removed, perhaps recreated for another runtime), or its socket is gone.
fn orphaned(dir: &Path, socket: &Path, lock: &std::fs::File) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let path = dir.join("lock");
    let held = match lock.metadata() {
        Ok(m) => m,
        // Cannot tell: keep serving (the recovery timeout still applies).
        Err(_) => return None,
    };
    match std::fs::metadata(&path) {
        Ok(m) if m.dev() == held.dev() && m.ino() == held.ino() => {}
        Ok(_) => return Some(format!("{} is another file now", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Some(format!("{} is gone", path.display()))
        }
        Err(_) => return None,
    }
    match std::fs::symlink_metadata(socket) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Some(format!("{} is gone", socket.display()))
        }
        _ => None,
    }
}

/// Binds the socket under a temporary name, restricts it to the owner, and renames it into
/// place (replacing a dead runtime's socket: only the lock's holder gets here).
fn bind(socket: &Path) -> Result<UnixListener, RuntimeError> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = socket.with_extension("binding");
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| RuntimeError::Io { path, source }
    };
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(io(&tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io(&tmp))?;
    std::fs::rename(&tmp, socket).map_err(io(socket))?;
    Ok(listener)
}

/// This process's life: its pid and start time in nanoseconds, in hex.
fn new_runtime_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}-{:x}", std::process::id(), nanos)
}
