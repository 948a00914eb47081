//! The blob fetcher: brings a task's module and files from the master into the work directory.
//!
//! It is the one writer of `blobs/`: a blob is fetched once, on first use (once for a burst of
//! tasks that all need it, see `crate::flight`), over its own QUIC
//! stream of the current connection ([`net::link::fetch_blob`] writes it whole or not at all),
//! and kept for later tasks (each use marks it recently used, for the size-capped collection
//! of [`crate::blob_gc`]). It also lays out a task's directory afresh and copies the task's
//! files into its sandbox; for an executor, it lays out the executor's directory afresh when an
//! instance starts, and each of its tasks' file directories (`sandbox/tasks/<tid>/`).

use crate::flight::Flights;
use crate::workdir::WorkDir;
use proto::{Digest, ExecutorId, ExecutorInfo, FrameworkId, Reason, TaskFile, TaskInfo};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Why a task could not be prepared, in the core's terms (see `core::Event::Prepared`).
pub type PrepareError = (Reason, String);

/// How long a fetch waits for a link to the master (none yet, or the one it used dropped, as
/// when the master restarts) before the task fails with `FetchFailed`. A lost link costs the
/// task latency, not its life; the bound keeps a task whose master never comes back (and a
/// kill asked meanwhile) from waiting forever.
pub const RECONNECT_WAIT: Duration = Duration::from_secs(120);

/// Fetches modules and files from the master and lays out task directories.
#[derive(Debug)]
pub struct Fetcher {
    /// The connection to fetch over: set by the driver while the link is up; fetches waiting
    /// for a link watch it.
    conn: watch::Sender<Option<quinn::Connection>>,
    /// Where blobs and task directories go.
    work_dir: WorkDir,
    /// Largest blob accepted, so a master cannot fill the agent's disk with one answer.
    max_blob_size: u64,
    /// When each blob was last marked used.
    touched: Touched,
    /// Fetches in progress: a burst of tasks of one new blob fetches it once.
    fetches: Flights<Digest, Result<PathBuf, PrepareError>>,
}

/// When blobs were last marked used ([`crate::blob_gc::touch`]), so that a blob used by every
/// launch is marked once per [`TOUCH_EVERY`], not per launch.
#[derive(Debug, Default)]
struct Touched(std::sync::Mutex<std::collections::HashMap<Digest, std::time::Instant>>);

/// How often a blob in use is marked used again.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

impl Touched {
    /// Whether `digest` is due to be marked (and records that it is, now).
    fn due(&self, digest: Digest) -> bool {
        let now = std::time::Instant::now();
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() > 100_000 {
            m.retain(|_, t| now.duration_since(*t) < TOUCH_EVERY);
        }
        match m.get(&digest) {
            Some(t) if now.duration_since(*t) < TOUCH_EVERY => false,
            _ => {
                m.insert(digest, now);
                true
            }
        }
    }
}

impl Fetcher {
    /// A fetcher into `work_dir`, not yet connected.
    pub fn new(work_dir: WorkDir, max_blob_size: u64) -> Self {
        Fetcher {
            conn: watch::Sender::new(None),
            work_dir,
            max_blob_size,
            touched: Touched::default(),
            fetches: Flights::default(),
        }
    }

    /// The layout it writes into.
    pub fn work_dir(&self) -> &WorkDir {
        &self.work_dir
    }

    /// Fetches over `conn` from now on (fetches waiting for a link resume on it).
    pub fn connect(&self, conn: quinn::Connection) {
        self.conn.send_replace(Some(conn));
    }

    /// Stops fetching (fetches wait, up to [`RECONNECT_WAIT`], for the next
    /// [`Fetcher::connect`]) and hands back the connection, for the driver to close.
    pub fn disconnect(&self) -> Option<quinn::Connection> {
        self.conn.send_replace(None)
    }

    /// A live connection to the master, waiting for one until `deadline`.
    async fn live_conn(&self, deadline: Instant) -> Option<quinn::Connection> {
        let mut rx = self.conn.subscribe();
        let wait = rx.wait_for(|c| c.as_ref().is_some_and(|c| c.close_reason().is_none()));
        let conn = match tokio::time::timeout_at(deadline, wait).await {
            Ok(Ok(conn)) => conn.clone(),
            _ => None,
        };
        conn
    }

    /// Lays out the task's directory afresh (an old one of the same id is removed), fetches its
    /// module and files, and copies the files into its sandbox. Returns the module's path, to
    /// be compiled by the executor. A task without a sandbox ([`crate::launch::needs_sandbox`])
    /// gets no directory: only an old one of the same id is removed.
    pub async fn prepare(
        &self,
        fid: &FrameworkId,
        task: &TaskInfo,
    ) -> Result<PathBuf, PrepareError> {
        let task_dir = self.work_dir.task(fid.as_str(), task.task_id.as_str());
        let (dir, sandbox) = (task_dir.path(), task_dir.sandbox());
        let io = |e: std::io::Error| (Reason::AgentError, format!("task directory: {e}"));
        // A lookup in the kernel's directory cache, done in place: a hop to the blocking pool
        // costs a launch more than the call.
        if std::fs::symlink_metadata(dir).is_ok() {
            tokio::fs::remove_dir_all(dir).await.map_err(io)?;
        }
        if crate::launch::needs_sandbox(task) {
            tokio::fs::create_dir_all(&sandbox).await.map_err(io)?;
        }
        let module = self.ensure_blob(task.module).await?;
        self.place_files(&task.files, &sandbox).await?;
        Ok(module)
    }

    /// Whether the blob is on disk (marking it used, at most once a minute): a task of it needs
    /// no fetch.
    pub fn blob_in_place(&self, digest: Digest) -> bool {
        let path = self.work_dir.blob(&digest.to_hex());
        let here = std::fs::symlink_metadata(&path).is_ok();
        if here && self.touched.due(digest) {
            crate::blob_gc::touch(&path);
        }
        here
    }

    /// Whether a directory of task `task`'s id is on disk (left by an earlier task of that id).
    pub fn task_dir_exists(&self, fid: &FrameworkId, task: &TaskInfo) -> bool {
        let dir = self.work_dir.task(fid.as_str(), task.task_id.as_str());
        std::fs::symlink_metadata(dir.path()).is_ok()
    }

    /// Lays out an executor's directory afresh (what an earlier instance of the same id left is
    /// removed) and fetches its component. Returns the component's path.
    pub async fn prepare_executor(
        &self,
        fid: &FrameworkId,
        info: &ExecutorInfo,
    ) -> Result<PathBuf, PrepareError> {
        let dir = self
            .work_dir
            .executor(fid.as_str(), info.executor_id.as_str());
        let io = |e: std::io::Error| (Reason::AgentError, format!("executor directory: {e}"));
        if tokio::fs::try_exists(dir.path()).await.unwrap_or(false) {
            tokio::fs::remove_dir_all(dir.path()).await.map_err(io)?;
        }
        tokio::fs::create_dir_all(dir.sandbox().join("tasks"))
            .await
            .map_err(io)?;
        self.ensure_blob(info.module).await
    }

    /// Lays out the files directory of a task of executor `eid` afresh in the executor's
    /// sandbox (`tasks/<tid>/`) and places the task's files there. The module is the
    /// executor's, fetched when it started.
    pub async fn prepare_executor_task(
        &self,
        fid: &FrameworkId,
        eid: &ExecutorId,
        task: &TaskInfo,
    ) -> Result<(), PrepareError> {
        let dest = self
            .work_dir
            .executor(fid.as_str(), eid.as_str())
            .task_files(task.task_id.as_str());
        let io = |e: std::io::Error| (Reason::AgentError, format!("task directory: {e}"));
        if tokio::fs::try_exists(&dest).await.unwrap_or(false) {
            tokio::fs::remove_dir_all(&dest).await.map_err(io)?;
        }
        tokio::fs::create_dir_all(&dest).await.map_err(io)?;
        self.place_files(&task.files, &dest).await
    }

    /// Fetches `files` and copies each to its relative path under `base`.
    async fn place_files(&self, files: &[TaskFile], base: &Path) -> Result<(), PrepareError> {
        for file in files {
            if !proto::ids::is_safe_relative_path(&file.path) {
                return Err((
                    Reason::TaskInvalid,
                    format!(
                        "file path {:?} is not a relative path inside the sandbox",
                        file.path
                    ),
                ));
            }
            let src = self.ensure_blob(file.digest).await?;
            place_file(&src, &base.join(&file.path))
                .await
                .map_err(|e| (Reason::AgentError, format!("task directory: {e}")))?;
        }
        Ok(())
    }

    /// The blob's path, fetched first if it is not on disk yet.
    async fn ensure_blob(&self, digest: Digest) -> Result<PathBuf, PrepareError> {
        let path = self.work_dir.blob(&digest.to_hex());
        // As above: a cached lookup, in place.
        if std::fs::symlink_metadata(&path).is_ok() {
            // Used again: the cache collection keeps recently used blobs. Marked at most once
            // a minute (a modification time written per launch is disk work on the launch
            // path; the collection's order needs no finer grain).
            if self.touched.due(digest) {
                crate::blob_gc::touch(&path);
            }
            return Ok(path);
        }
        self.fetches
            .run(&digest, || async {
                // A flight that ended since the lookup above left the blob here.
                if std::fs::symlink_metadata(&path).is_ok() {
                    return Ok(path.clone());
                }
                self.fetch_blob(digest, &path).await.map(|()| path.clone())
            })
            .await
    }

    /// Fetches the blob to `path`, the same for every task that waits for it.
    async fn fetch_blob(&self, digest: Digest, path: &Path) -> Result<(), PrepareError> {
        // A link that drops mid-fetch (a master restart, a partition) is waited out: the
        // fetch starts again on the next connection. The master refusing the blob, or a broken
        // answer on a live link, fails the task at once.
        let deadline = Instant::now() + RECONNECT_WAIT;
        loop {
            let Some(conn) = self.live_conn(deadline).await else {
                return Err((
                    Reason::FetchFailed,
                    format!("fetching {digest:?}: no link to the master for {RECONNECT_WAIT:?}"),
                ));
            };
            match net::link::fetch_blob(&conn, digest, path, self.max_blob_size).await {
                Ok(_) => break,
                Err(e) if conn.close_reason().is_some() => {
                    tracing::info!(?digest, error = %e, "blob fetch cut by a lost link: resuming on the next one");
                }
                Err(e) => {
                    return Err((Reason::FetchFailed, format!("fetching {digest:?}: {e}")));
                }
            }
        }
        tracing::debug!(?digest, "fetched blob");
        Ok(())
    }
}

/// Copies a blob to `dest`, creating the directories on the way.
async fn place_file(src: &Path, dest: &Path) -> std::io::Result<()> {
    if let Some(parent) = dest.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    tokio::fs::copy(src, dest).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use net::codec::{MessageReader, MessageWriter};
    use net::tls::{server_config, ClusterCa, PeerTls, TransportTuning, DEFAULT_PEER_VALIDITY};
    use proto::frame::DEFAULT_MAX_FRAME;
    use proto::identity::{PeerId, PeerKind};
    use proto::Message;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Over real QUIC on loopback, against a stand-in master that answers each `FetchBlob`
    /// after 100 ms: a burst of 16 tasks that need one new blob fetches it once, and each
    /// finds it in place.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_tasks_of_a_new_blob_fetches_it_once() {
        let blob: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let digest = Digest::of(&blob);
        let ca = ClusterCa::generate("fetch").unwrap();
        let tuning = TransportTuning::default();
        let cfg = server_config(&ca.cert_pem, &ca.issue_master().unwrap(), tuning).unwrap();
        let server = quinn::Endpoint::server(cfg, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = server.local_addr().unwrap();
        let fetches = Arc::new(AtomicUsize::new(0));
        let served = {
            let (blob, fetches) = (blob.clone(), fetches.clone());
            tokio::spawn(async move {
                let conn = server.accept().await.unwrap().await.unwrap();
                while let Ok((send, recv)) = conn.accept_bi().await {
                    let (blob, fetches) = (blob.clone(), fetches.clone());
                    tokio::spawn(async move {
                        let mut recv = MessageReader::new(recv, DEFAULT_MAX_FRAME);
                        let Ok(Some(Message::FetchBlob { .. })) = recv.recv().await else {
                            return;
                        };
                        fetches.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        let mut send = MessageWriter::new(send);
                        let size = blob.len() as u64;
                        send.send(&Message::BlobOk { size }).await.unwrap();
                        send.get_mut().write_all(&blob).await.unwrap();
                        let _ = send.get_mut().finish();
                        let _ = send.get_mut().stopped().await;
                    });
                }
            })
        };
        let agent = ca
            .issue_peer(
                &PeerId::new(PeerKind::Agent, "a1").unwrap(),
                DEFAULT_PEER_VALIDITY,
            )
            .unwrap();
        let tls = PeerTls {
            ca_pem: ca.cert_pem.clone(),
            identity: agent,
            crls: Vec::new(),
        };
        let ep = net::link::client_endpoint(&tls, tuning).unwrap();
        let conn = ep
            .connect(addr, net::tls::MASTER_SERVER_NAME)
            .unwrap()
            .await
            .unwrap();

        let dir = tempfile::tempdir().unwrap();
        let work_dir = WorkDir::new(dir.path());
        work_dir.create().unwrap();
        let fetcher = Arc::new(Fetcher::new(work_dir, 1 << 30));
        fetcher.connect(conn.clone());
        let burst: Vec<_> = (0..16)
            .map(|_| {
                let fetcher = fetcher.clone();
                tokio::spawn(async move { fetcher.ensure_blob(digest).await })
            })
            .collect();
        for handle in burst {
            let path = handle.await.unwrap().unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), blob);
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1, "one fetch for the burst");
        // Later tasks find it on disk.
        fetcher.ensure_blob(digest).await.unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        conn.close(0u32.into(), b"done");
        served.await.unwrap();
    }
}
