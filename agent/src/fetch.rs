//! The blob fetcher: brings a task's module and files from the master into the work directory.
//!
//! It is the one writer of `blobs/`: a blob is fetched once, on first use, over its own QUIC
//! stream of the current connection ([`net::link::fetch_blob`] writes it whole or not at all),
//! and kept for later tasks (each use marks it recently used, for the size-capped collection
//! of [`crate::blob_gc`]). It also lays out a task's directory afresh and copies the task's
//! files into its sandbox; for an executor, it lays out the executor's directory afresh when an
//! instance starts, and each of its tasks' file directories (`sandbox/tasks/<tid>/`).

use crate::workdir::WorkDir;
use proto::{Digest, ExecutorId, ExecutorInfo, FrameworkId, Reason, TaskFile, TaskInfo};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// Why a task could not be prepared, in the core's terms (see `core::Event::Prepared`).
pub type PrepareError = (Reason, String);

/// Fetches modules and files from the master and lays out task directories.
#[derive(Debug)]
pub struct Fetcher {
    /// The connection to fetch over: set by the driver while the link is up.
    conn: Mutex<Option<quinn::Connection>>,
    /// Where blobs and task directories go.
    work_dir: WorkDir,
    /// Largest blob accepted, so a master cannot fill the agent's disk with one answer.
    max_blob_size: u64,
}

impl Fetcher {
    /// A fetcher into `work_dir`, not yet connected.
    pub fn new(work_dir: WorkDir, max_blob_size: u64) -> Self {
        Fetcher {
            conn: Mutex::new(None),
            work_dir,
            max_blob_size,
        }
    }

    /// The layout it writes into.
    pub fn work_dir(&self) -> &WorkDir {
        &self.work_dir
    }

    fn lock_conn(&self) -> MutexGuard<'_, Option<quinn::Connection>> {
        self.conn.lock().expect("poisoned")
    }

    /// Fetches over `conn` from now on.
    pub fn connect(&self, conn: quinn::Connection) {
        *self.lock_conn() = Some(conn);
    }

    /// Stops fetching (fetches fail until the next [`Fetcher::connect`]) and hands back the
    /// connection, for the driver to close.
    pub fn disconnect(&self) -> Option<quinn::Connection> {
        self.lock_conn().take()
    }

    /// Lays out the task's directory afresh (an old one of the same id is removed), fetches its
    /// module and files, and copies the files into its sandbox. Returns the module's path, to
    /// be compiled by the executor.
    pub async fn prepare(
        &self,
        fid: &FrameworkId,
        task: &TaskInfo,
    ) -> Result<PathBuf, PrepareError> {
        let task_dir = self.work_dir.task(fid.as_str(), task.task_id.as_str());
        let (dir, sandbox) = (task_dir.path(), task_dir.sandbox());
        let io = |e: std::io::Error| (Reason::AgentError, format!("task directory: {e}"));
        if tokio::fs::try_exists(dir).await.unwrap_or(false) {
            tokio::fs::remove_dir_all(dir).await.map_err(io)?;
        }
        tokio::fs::create_dir_all(&sandbox).await.map_err(io)?;
        let module = self.ensure_blob(task.module).await?;
        self.place_files(&task.files, &sandbox).await?;
        Ok(module)
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
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            // Used again: the cache collection keeps recently used blobs.
            crate::blob_gc::touch(&path);
            return Ok(path);
        }
        let conn = self.lock_conn().clone();
        let Some(conn) = conn else {
            return Err((Reason::FetchFailed, "not connected to the master".into()));
        };
        net::link::fetch_blob(&conn, digest, &path, self.max_blob_size)
            .await
            .map_err(|e| (Reason::FetchFailed, format!("fetching {digest:?}: {e}")))?;
        tracing::debug!(?digest, "fetched blob");
        Ok(path)
    }
}

/// Copies a blob to `dest`, creating the directories on the way.
async fn place_file(src: &Path, dest: &Path) -> std::io::Result<()> {
    if let Some(parent) = dest.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    tokio::fs::copy(src, dest).await.map(|_| ())
}
