//! The agent's end of the runtime socket: connect (starting the runtime process if none
//! serves the socket), say hello, then one task that writes the agent's requests and reads
//! the runtime's replies and events.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::server::create_private_dir;
use super::wire::{FrameError, Reader, Reply, Request, Writer, PROTOCOL_VERSION};
use super::{Attachment, Events, PrepareInfo, RuntimeError, RuntimeEvent, RuntimeOptions};

/// How long a started runtime process has to serve its socket (it calibrates its fuel rate
/// and reserves its pools first: well under a second normally).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the runtime has to answer a hello.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(30);
/// Size past which a starting runtime process's log is moved aside (to `runtime.log.1`).
const MAX_LOG_BYTES: u64 = 16 << 20;
/// How long attaching keeps trying while the runtime behind the socket is exiting (a killed
/// runtime's listener stays open, accepting and then resetting, until its last thread is
/// gone) or a fresh one lost its lock to another agent's.
const ATTACH_PATIENCE: Duration = Duration::from_secs(10);
/// Runtime processes started before giving up on attaching (each failed start is either a
/// lost race for the lock, or a runtime that cannot start, whose reason is in its log).
const START_ATTEMPTS: u32 = 3;
/// Longest Unix socket path (`sun_path` holds 108 bytes with the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

/// A call for the connection task.
enum Command {
    /// A request with no answer.
    Send(Request),
    /// A prepare, answered on `reply`.
    Prepare {
        id: u64,
        digest: String,
        wasm_path: std::path::PathBuf,
        reply: oneshot::Sender<Result<PrepareInfo, RuntimeError>>,
    },
    /// An output read, answered on `reply` (`None` when the connection is gone).
    ReadOutput {
        task_dir: std::path::PathBuf,
        stderr: bool,
        offset: u64,
        length: u64,
        reply: oneshot::Sender<Option<(Vec<u8>, u64)>>,
    },
    /// Prepare `id`'s caller is gone: the runtime may stop its compile.
    CancelPrepare { id: u64 },
    /// Detach (`stop` false) or stop the runtime; `done` fires when the connection is closed.
    Close {
        stop: bool,
        done: oneshot::Sender<()>,
    },
}

/// The agent's handle on a runtime connection. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Client {
    /// To the connection task, which owns the socket.
    commands: mpsc::UnboundedSender<Command>,
    /// The last prepare's id.
    prepares: Arc<AtomicU64>,
}

/// Tells the runtime that a prepare's caller is gone, if it goes before its answer.
struct CancelOnDrop<'a> {
    commands: &'a mpsc::UnboundedSender<Command>,
    id: Option<u64>,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            let _ = self.commands.send(Command::CancelPrepare { id });
        }
    }
}

impl Client {
    /// Sends a request with no answer (dropped if the connection is gone).
    pub(crate) fn send(&self, req: Request) {
        let _ = self.commands.send(Command::Send(req));
    }

    /// See [`Runtime::prepare`](super::Runtime::prepare).
    pub(crate) async fn prepare(
        &self,
        digest: &str,
        wasm_path: &Path,
    ) -> Result<PrepareInfo, RuntimeError> {
        let id = self.prepares.fetch_add(1, Ordering::Relaxed) + 1;
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Prepare {
                id,
                digest: digest.to_owned(),
                wasm_path: wasm_path.to_owned(),
                reply,
            })
            .map_err(|_| RuntimeError::Disconnected)?;
        // Dropped before the answer (its task was killed): the runtime is told, and stops a
        // compile that no other task waits for.
        let mut cancel = CancelOnDrop {
            commands: &self.commands,
            id: Some(id),
        };
        let answer = answer.await;
        cancel.id = None;
        answer.map_err(|_| RuntimeError::Disconnected)?
    }

    /// See [`Runtime::read_output`](super::Runtime::read_output).
    pub(crate) async fn read_output(
        &self,
        task_dir: &Path,
        stderr: bool,
        offset: u64,
        length: u64,
    ) -> Result<Option<(Vec<u8>, u64)>, RuntimeError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::ReadOutput {
                task_dir: task_dir.to_owned(),
                stderr,
                offset,
                length,
                reply,
            })
            .map_err(|_| RuntimeError::Disconnected)?;
        answer.await.map_err(|_| RuntimeError::Disconnected)
    }

    /// See [`Runtime::close`](super::Runtime::close).
    pub(crate) async fn close(&self, stop: bool) {
        let (done, closed) = oneshot::channel();
        if self.commands.send(Command::Close { stop, done }).is_ok() {
            let _ = closed.await;
        }
    }
}

/// Connects to the runtime serving `opts.socket`, starting one if none does.
pub(crate) async fn attach(
    opts: &RuntimeOptions,
) -> Result<(Client, Attachment, Events), RuntimeError> {
    let path_len = opts.socket.as_os_str().len();
    if path_len > MAX_SOCKET_PATH {
        return Err(RuntimeError::Start(format!(
            "socket path {} is {path_len} bytes, more than a Unix socket allows ({MAX_SOCKET_PATH})",
            opts.socket.display()
        )));
    }
    // A runtime that is exiting (its recovery timeout passed, it was stopped or killed) may
    // accept and then close or reset, or still hold its lock when a fresh one starts: try
    // again until it is gone.
    let deadline = Instant::now() + ATTACH_PATIENCE;
    let mut pause = Duration::from_millis(20);
    let mut first = true;
    let mut failed_starts = 0;
    loop {
        if !first {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
        first = false;
        let last_err = match connect(opts).await? {
            Connected(stream) => match handshake(stream, &opts.boot_id).await {
                Ok((reader, writer, attachment)) => {
                    let (commands, rx) = mpsc::unbounded_channel();
                    let (events_tx, events_rx) = mpsc::unbounded_channel();
                    tokio::spawn(run(reader, writer, rx, events_tx));
                    let client = Client {
                        commands,
                        prepares: Arc::default(),
                    };
                    return Ok((client, attachment, Events { rx: events_rx }));
                }
                Err(RuntimeError::Disconnected) => RuntimeError::Disconnected,
                Err(e) => return Err(e),
            },
            Again(e) => {
                failed_starts += u32::from(matches!(e, RuntimeError::Start(_)));
                e
            }
        };
        if failed_starts >= START_ATTEMPTS || Instant::now() + pause >= deadline {
            return Err(last_err);
        }
        tracing::info!(error = %last_err, "runtime not attachable yet; trying again");
    }
}

/// One try at a connection to the runtime, before the hello.
enum Connect {
    /// To the runtime serving the socket, perhaps one just started.
    Connected(UnixStream),
    /// Not now, for this reason: a runtime is exiting, or a fresh one lost its lock.
    Again(RuntimeError),
}
use Connect::{Again, Connected};

/// Connects to the runtime serving the socket, starting one if none does.
async fn connect(opts: &RuntimeOptions) -> Result<Connect, RuntimeError> {
    let e = match UnixStream::connect(&opts.socket).await {
        Ok(stream) => return Ok(Connected(stream)),
        Err(e) => e,
    };
    match Peer::of(&e) {
        Peer::Absent => match start(opts).await {
            Ok(stream) => Ok(Connected(stream)),
            Err(e @ RuntimeError::Start(_)) => Ok(Again(e)),
            Err(e) => Err(e),
        },
        Peer::Exiting => Ok(Again(RuntimeError::Io {
            path: opts.socket.clone(),
            source: e,
        })),
        Peer::Broken => Err(RuntimeError::Io {
            path: opts.socket.clone(),
            source: e,
        }),
    }
}

/// What a failed connect to the runtime socket says of the runtime behind it.
#[derive(Debug, PartialEq)]
enum Peer {
    /// Nobody serves the socket: start a runtime.
    Absent,
    /// A runtime is exiting (its listener took the connection and closed): try again soon.
    Exiting,
    /// The socket cannot be used (permissions, a path that is not a socket...).
    Broken,
}

impl Peer {
    fn of(e: &std::io::Error) -> Peer {
        use std::io::ErrorKind::*;
        match e.kind() {
            NotFound | ConnectionRefused => Peer::Absent,
            ConnectionReset | ConnectionAborted | BrokenPipe => Peer::Exiting,
            _ => Peer::Broken,
        }
    }
}

/// Says hello and reads the attachment.
async fn handshake(
    stream: UnixStream,
    boot_id: &str,
) -> Result<(Reader<Reply>, Writer<Request>, Attachment), RuntimeError> {
    let (r, w) = stream.into_split();
    let mut reader = Reader::<Reply>::new(r);
    let mut writer = Writer::<Request>::new(w);
    let hello = Request::Hello {
        version: PROTOCOL_VERSION,
        boot_id: boot_id.to_owned(),
    };
    if writer.send(&hello).await.is_err() {
        return Err(RuntimeError::Disconnected);
    }
    match tokio::time::timeout(WELCOME_TIMEOUT, reader.recv()).await {
        Ok(Ok(Some(Reply::Welcome(a)))) => Ok((reader, writer, a)),
        Ok(Ok(Some(Reply::Refused(why)))) => Err(RuntimeError::Protocol(why)),
        Ok(Ok(Some(other))) => Err(RuntimeError::Protocol(format!(
            "expected a welcome, got {other:?}"
        ))),
        Ok(Ok(None)) | Ok(Err(FrameError::Io(_))) => Err(RuntimeError::Disconnected),
        Ok(Err(e)) => Err(RuntimeError::Protocol(e.to_string())),
        Err(_) => Err(RuntimeError::Protocol(format!(
            "no answer to hello in {WELCOME_TIMEOUT:?}"
        ))),
    }
}

/// Starts the runtime process, detached, and connects to it once it serves its socket.
async fn start(opts: &RuntimeOptions) -> Result<UnixStream, RuntimeError> {
    create_private_dir(&opts.dir)?;
    let config = opts.dir.join("executor.cfg");
    write_config(&config, &opts.executor)?;
    let log_path = opts.dir.join("runtime.log");
    // One previous log is kept: each runtime process appends to a fresh one past the cap.
    if std::fs::metadata(&log_path).is_ok_and(|m| m.len() > MAX_LOG_BYTES) {
        let _ = std::fs::rename(&log_path, opts.dir.join("runtime.log.1"));
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|source| RuntimeError::Io {
            path: log_path.clone(),
            source,
        })?;
    let mut cmd = tokio::process::Command::new(&opts.program);
    cmd.args(&opts.args)
        .arg("--work-dir")
        .arg(&opts.dir)
        .arg("--socket")
        .arg(&opts.socket)
        .arg("--config")
        .arg(&config)
        .arg("--recovery-timeout")
        .arg(format!("{}ms", opts.recovery_timeout.as_millis()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(false);
    // Its own session (and so its own process group): a signal to the agent's process group,
    // or the agent's terminal going away, does not reach it.
    // SAFETY: `setsid` is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| RuntimeError::Start(format!("cannot run {}: {e}", opts.program.display())))?;
    tracing::info!(pid = ?child.id(), socket = %opts.socket.display(), "runtime process started");
    let deadline = Instant::now() + START_TIMEOUT;
    let mut pause = Duration::from_millis(5);
    loop {
        match UnixStream::connect(&opts.socket).await {
            Ok(s) => return Ok(s),
            // Not serving yet (or the dead runtime's listener is still closing).
            Err(e) if Peer::of(&e) != Peer::Broken => {}
            Err(source) => {
                return Err(RuntimeError::Io {
                    path: opts.socket.clone(),
                    source,
                })
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            // It may have lost the lock to a runtime another agent started just now.
            if let Ok(s) = UnixStream::connect(&opts.socket).await {
                return Ok(s);
            }
            return Err(RuntimeError::Start(format!(
                "the runtime process exited ({status}) before serving {}; see {}",
                opts.socket.display(),
                log_path.display()
            )));
        }
        if Instant::now() >= deadline {
            return Err(RuntimeError::Start(format!(
                "the runtime process did not serve {} within {START_TIMEOUT:?}; see {}",
                opts.socket.display(),
                log_path.display()
            )));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
    // The child is dropped without being waited for: tokio reaps it in the background if it
    // exits while this process lives.
}

/// Writes the executor config for the runtime process (atomically: a fresh file renamed).
fn write_config(path: &Path, cfg: &crate::executor::ExecutorConfig) -> Result<(), RuntimeError> {
    let bytes = postcard::to_stdvec(cfg)
        .map_err(|e| RuntimeError::Protocol(format!("cannot encode the executor config: {e}")))?;
    let tmp = path.with_extension("tmp");
    let io = |source| RuntimeError::Io {
        path: path.to_owned(),
        source,
    };
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Reads the executor config an agent wrote for its runtime process.
pub fn read_config(path: &Path) -> Result<crate::executor::ExecutorConfig, RuntimeError> {
    let bytes = std::fs::read(path).map_err(|source| RuntimeError::Io {
        path: path.to_owned(),
        source,
    })?;
    postcard::from_bytes(&bytes)
        .map_err(|e| RuntimeError::Protocol(format!("bad executor config {}: {e}", path.display())))
}

/// Where the answer to an output read goes: the bytes and the stream's size so far, or `None`.
type OutputReply = oneshot::Sender<Option<(Vec<u8>, u64)>>;

/// The connection task: writes commands, reads replies and events, until the connection ends
/// or the agent closes it. When it returns, the events stream ends and pending prepares fail
/// with [`RuntimeError::Disconnected`].
async fn run(
    mut reader: Reader<Reply>,
    mut writer: Writer<Request>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<RuntimeEvent>,
) {
    let mut pending: HashMap<u64, oneshot::Sender<Result<PrepareInfo, RuntimeError>>> =
        HashMap::new();
    let mut reads: HashMap<u64, OutputReply> = HashMap::new();
    let mut next_id = 0u64;
    let mut closed: Option<oneshot::Sender<()>> = None;
    let mut stopping = false;
    loop {
        tokio::select! {
            cmd = commands.recv(), if !stopping => {
                let req = match cmd {
                    // Every handle is gone: detach.
                    None => break,
                    Some(Command::Send(req)) => req,
                    Some(Command::Prepare { id, digest, wasm_path, reply }) => {
                        pending.insert(id, reply);
                        Request::Prepare { id, digest, wasm_path }
                    }
                    Some(Command::CancelPrepare { id }) => {
                        if pending.remove(&id).is_none() {
                            // Answered meanwhile.
                            continue;
                        }
                        Request::CancelPrepare { id }
                    }
                    Some(Command::ReadOutput { task_dir, stderr, offset, length, reply }) => {
                        next_id += 1;
                        reads.insert(next_id, reply);
                        Request::ReadOutput { id: next_id, task_dir, stderr, offset, length }
                    }
                    Some(Command::Close { stop: false, done }) => {
                        closed = Some(done);
                        break;
                    }
                    Some(Command::Close { stop: true, done }) => {
                        closed = Some(done);
                        stopping = true;
                        Request::Stop
                    }
                };
                match writer.send(&req).await {
                    Ok(()) => {}
                    Err(e @ (FrameError::Decode(_) | FrameError::TooLarge(_))) => {
                        // Not sent, the connection is fine: a prepare gets the error.
                        tracing::warn!(error = %e, "request to the runtime not sent");
                        if let Request::Prepare { id, .. } = req {
                            if let Some(reply) = pending.remove(&id) {
                                let _ = reply.send(Err(RuntimeError::Protocol(e.to_string())));
                            }
                        }
                        if let Request::ReadOutput { id, .. } = req {
                            reads.remove(&id);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "runtime connection lost");
                        break;
                    }
                }
            }
            reply = reader.recv() => match reply {
                Ok(Some(Reply::Event(ev))) => {
                    let _ = events.send(ev);
                }
                Ok(Some(Reply::Prepared { id, result })) => {
                    if let Some(reply) = pending.remove(&id) {
                        let _ = reply.send(result.map_err(RuntimeError::Prepare));
                    }
                }
                Ok(Some(Reply::Output { id, data })) => {
                    if let Some(reply) = reads.remove(&id) {
                        let _ = reply.send(data);
                    }
                }
                Ok(Some(Reply::Stopped)) => {
                    // The runtime exits next: wait for it to close the connection.
                    stopping = true;
                }
                Ok(Some(other)) => {
                    tracing::warn!(reply = ?other, "unexpected reply from the runtime: connection closed");
                    break;
                }
                Ok(None) => {
                    if !stopping {
                        tracing::warn!("the runtime closed the connection");
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "runtime connection lost");
                    break;
                }
            },
        }
    }
    drop(pending);
    drop(reads);
    drop(events);
    drop(reader);
    drop(writer);
    if let Some(done) = closed {
        let _ = done.send(());
    }
}

#[cfg(test)]
mod tests {
    use super::Peer;
    use std::io::{Error, ErrorKind};

    #[test]
    fn a_reset_at_connect_is_a_runtime_exiting_not_a_broken_socket() {
        let of = |kind| Peer::of(&Error::from(kind));
        assert_eq!(of(ErrorKind::NotFound), Peer::Absent);
        assert_eq!(of(ErrorKind::ConnectionRefused), Peer::Absent);
        assert_eq!(of(ErrorKind::ConnectionReset), Peer::Exiting);
        assert_eq!(of(ErrorKind::ConnectionAborted), Peer::Exiting);
        assert_eq!(of(ErrorKind::PermissionDenied), Peer::Broken);
    }
}
