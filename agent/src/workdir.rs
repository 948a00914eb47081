//! The agent's on-disk layout, named in one place.
//!
//! ```text
//! <work_dir>/
//!   blobs/<sha256>                        modules and files fetched from the master
//!   cache/<sha256>.<engine-hash>.cwasm    compiled modules
//!   frameworks/<fid>/tasks/<tid>/         a one-shot task with a sandbox (files, data sets or
//!                                         a disk share: `launch::needs_sandbox`); a task with
//!                                         none has no directory unless its output spills
//!     sandbox/                            the guest's only preopened directory, seen as /
//!     stdout, stderr                      capped, outside the guest's reach (in the runtime's
//!                                         memory for a task without a sandbox, written here
//!                                         past 16 KiB a stream or under memory pressure)
//!   frameworks/<fid>/executors/<eid>/     an executor instance (laid out afresh at its start)
//!     sandbox/                            its `/`, kept across its tasks for the instance's life
//!       tasks/<tid>/                      each task's files, seen by the executor at /tasks/<tid>/
//!     stdout, stderr                      the instance's capped output, outside its reach
//!   trash/<n>/                            directories being removed (garbage collection)
//!   checkpoint                            what a restarted agent recovers (crate::checkpoint)
//!   runtime/                              the runtime process's socket, lock and log
//! ```
//!
//! An executor's sandbox outlives each of its tasks (state an executor keeps on disk between
//! tasks is the point of having one), but not the instance: the next start of the same
//! executor id begins with an empty sandbox. A task directory under `tasks/` is laid out afresh
//! when a task of that id is prepared.
//!
//! Every path the agent reads or writes is built by a method here, so the layout above is the
//! whole truth. Names are plain strings (hex digests, id strings), not protocol types, so that
//! the executor, which never sees the protocol, shares [`TaskDir`] and [`ModuleCacheDir`] with
//! the rest of the agent. Ids are trusted to be safe path components: the core refuses tasks
//! whose framework or task id is not (`proto::ids::is_safe_id`).

use std::path::{Path, PathBuf};

/// The root of one agent's files: fetched blobs, the compiled-module cache and task directories.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkDir {
    /// `<work_dir>`, as configured.
    root: PathBuf,
}

impl WorkDir {
    /// The layout under `root` (nothing is created until [`WorkDir::create`]).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        WorkDir { root: root.into() }
    }

    /// Creates the root, `blobs/` and `frameworks/` (the executor creates `cache/` itself).
    /// On error, says which directory could not be made.
    pub fn create(&self) -> Result<(), (PathBuf, std::io::Error)> {
        for dir in [self.root.clone(), self.blobs(), self.frameworks()] {
            std::fs::create_dir_all(&dir).map_err(|e| (dir, e))?;
        }
        Ok(())
    }

    /// `<work_dir>` itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `blobs/`: content-addressed modules and files, as fetched from the master.
    pub fn blobs(&self) -> PathBuf {
        self.root.join("blobs")
    }

    /// `blobs/<sha256>`: one fetched blob, named by its hex digest.
    pub fn blob(&self, sha256_hex: &str) -> PathBuf {
        self.blobs().join(sha256_hex)
    }

    /// `cache/`: compiled modules, kept across agent restarts (the executor's
    /// `ExecutorConfig::cache_dir`).
    pub fn cache(&self) -> ModuleCacheDir {
        ModuleCacheDir::new(self.root.join("cache"))
    }

    /// `checkpoint`: the agent's last checkpoint (see [`crate::checkpoint`]).
    pub fn checkpoint(&self) -> PathBuf {
        self.root.join("checkpoint")
    }

    /// `frameworks/`: the task directories, by framework.
    pub fn frameworks(&self) -> PathBuf {
        self.root.join("frameworks")
    }

    /// `trash/`: directories on their way out. A collected directory is first renamed here
    /// (one quick syscall, so a task or executor of the same id laid out right after never
    /// sees it half removed), then deleted in the background.
    pub fn trash(&self) -> PathBuf {
        self.root.join("trash")
    }

    /// Moves `dir` (inside this work directory) into [`WorkDir::trash`] under a fresh name and
    /// returns that name; `Ok(None)` when `dir` does not exist.
    pub fn move_to_trash(&self, dir: &Path) -> std::io::Result<Option<PathBuf>> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        if !dir.exists() {
            return Ok(None);
        }
        std::fs::create_dir_all(self.trash())?;
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let to = self.trash().join(format!("{stamp}-{n}"));
        std::fs::rename(dir, &to)?;
        Ok(Some(to))
    }

    /// The used fraction (0..=1) of the file system holding this work directory, and its free
    /// bytes (what an unprivileged process may still write).
    // statvfs's field types differ between platforms (u32 or u64): `u64::from` is only useless
    // on some of them.
    #[allow(clippy::useless_conversion)]
    pub fn disk_space(&self) -> std::io::Result<DiskSpace> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(self.root.as_os_str().as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        // SAFETY: `path` is a valid NUL-terminated string and `st` a writable statvfs that the
        // call fills in; nothing is retained after the call.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let frsize = u64::from(st.f_frsize);
        let total = u64::from(st.f_blocks) * frsize;
        let free = u64::from(st.f_bfree) * frsize;
        let available = u64::from(st.f_bavail) * frsize;
        // Blocks reserved for root count as used, as `df` does.
        let usable = total - (free - available.min(free));
        let usage = if usable == 0 {
            0.0
        } else {
            1.0 - available as f64 / usable as f64
        };
        Ok(DiskSpace { usage, available })
    }

    /// `frameworks/<fid>/executors/<eid>/`: one executor's directory.
    pub fn executor(&self, framework_id: &str, executor_id: &str) -> ExecutorDir {
        ExecutorDir {
            path: self
                .frameworks()
                .join(framework_id)
                .join("executors")
                .join(executor_id),
        }
    }

    /// `frameworks/<fid>/tasks/<tid>/`: one task's directory.
    pub fn task(&self, framework_id: &str, task_id: &str) -> TaskDir {
        TaskDir::new(
            self.frameworks()
                .join(framework_id)
                .join("tasks")
                .join(task_id),
        )
    }
}

/// How full the work directory's file system is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DiskSpace {
    /// Used fraction, 0..=1 (what the garbage collector's delay is scaled by).
    pub usage: f64,
    /// Bytes still writable by the agent.
    pub available: u64,
}

/// One task's directory: the sandbox the guest sees as `/`, and its output files beside it, out
/// of the guest's reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskDir {
    /// `frameworks/<fid>/tasks/<tid>/` (or any directory an executor user picks).
    path: PathBuf,
}

impl TaskDir {
    /// The layout under `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        TaskDir { path: path.into() }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `sandbox/`: the guest's only preopened directory, mounted at `/`; task files go here.
    pub fn sandbox(&self) -> PathBuf {
        self.path.join("sandbox")
    }

    /// `stdout`: the guest's capped standard output.
    pub fn stdout(&self) -> PathBuf {
        self.path.join("stdout")
    }

    /// `stderr`: the guest's capped standard error.
    pub fn stderr(&self) -> PathBuf {
        self.path.join("stderr")
    }
}

/// One executor's directory: its sandbox (the instance's `/`, holding each task's files under
/// `tasks/<tid>/`) and its output files beside it, out of the guest's reach. The same shape as a
/// [`TaskDir`], which is what the executor's runtime is given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutorDir {
    /// `frameworks/<fid>/executors/<eid>/`.
    path: PathBuf,
}

impl ExecutorDir {
    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `sandbox/`: the instance's only preopened directory, mounted at `/`.
    pub fn sandbox(&self) -> PathBuf {
        self.path.join("sandbox")
    }

    /// `sandbox/tasks/<tid>/`: a task's files, seen by the executor at `/tasks/<tid>/`.
    pub fn task_files(&self, task_id: &str) -> PathBuf {
        self.sandbox().join("tasks").join(task_id)
    }

    /// `stdout`: the instance's capped standard output.
    pub fn stdout(&self) -> PathBuf {
        self.path.join("stdout")
    }

    /// `stderr`: the instance's capped standard error.
    pub fn stderr(&self) -> PathBuf {
        self.path.join("stderr")
    }
}

/// The compiled-module cache: `<digest>.<engine-hash>.cwasm` files, loaded (mmapped) as native
/// code, so only ever replaced by rename from a temporary sibling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleCacheDir {
    /// `cache/` (or any trusted directory an executor user picks).
    path: PathBuf,
}

impl ModuleCacheDir {
    /// The cache in `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ModuleCacheDir { path: path.into() }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `<digest>.<engine-hash>.cwasm`: a module compiled by an engine whose compatibility hash
    /// is `engine_hash`, so that another wasmtime build or configuration never loads it.
    pub fn entry(&self, digest: &str, engine_hash: &str) -> PathBuf {
        self.path.join(format!("{digest}.{engine_hash}.cwasm"))
    }

    /// `<digest>.<engine-hash>.cwasm.tmp<unique>`: where an entry is written before it is
    /// renamed into place; `unique` keeps concurrent writers apart.
    pub fn temp_entry(&self, digest: &str, engine_hash: &str, unique: &str) -> PathBuf {
        self.path
            .join(format!("{digest}.{engine_hash}.cwasm.tmp{unique}"))
    }
}

impl From<ModuleCacheDir> for PathBuf {
    fn from(dir: ModuleCacheDir) -> Self {
        dir.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_design() {
        let w = WorkDir::new("/w");
        assert_eq!(w.blob("ab12"), Path::new("/w/blobs/ab12"));
        assert_eq!(
            w.cache().entry("ab12", "e0"),
            Path::new("/w/cache/ab12.e0.cwasm")
        );
        let t = w.task("f1", "t1");
        assert_eq!(t.path(), Path::new("/w/frameworks/f1/tasks/t1"));
        assert_eq!(t.sandbox(), Path::new("/w/frameworks/f1/tasks/t1/sandbox"));
        assert_eq!(t.stdout(), Path::new("/w/frameworks/f1/tasks/t1/stdout"));
        assert_eq!(t.stderr(), Path::new("/w/frameworks/f1/tasks/t1/stderr"));
        let e = w.executor("f1", "e1");
        assert_eq!(e.path(), Path::new("/w/frameworks/f1/executors/e1"));
        assert_eq!(
            e.sandbox(),
            Path::new("/w/frameworks/f1/executors/e1/sandbox")
        );
        assert_eq!(
            e.task_files("t1"),
            Path::new("/w/frameworks/f1/executors/e1/sandbox/tasks/t1")
        );
        assert_eq!(
            e.stdout(),
            Path::new("/w/frameworks/f1/executors/e1/stdout")
        );
        assert_eq!(
            e.stderr(),
            Path::new("/w/frameworks/f1/executors/e1/stderr")
        );
        assert_eq!(w.trash(), Path::new("/w/trash"));
    }

    #[test]
    fn trash_takes_a_directory_out_of_the_layout_and_disk_space_is_sane() {
        let tmp = tempfile::tempdir().unwrap();
        let w = WorkDir::new(tmp.path());
        w.create().unwrap();
        let t = w.task("f1", "t1");
        std::fs::create_dir_all(t.sandbox()).unwrap();
        std::fs::write(t.stdout(), b"out").unwrap();
        let moved = w.move_to_trash(t.path()).unwrap().unwrap();
        assert!(!t.path().exists());
        assert!(moved.starts_with(w.trash()));
        assert_eq!(std::fs::read(moved.join("stdout")).unwrap(), b"out");
        assert_eq!(w.move_to_trash(t.path()).unwrap(), None);
        let space = w.disk_space().unwrap();
        assert!((0.0..=1.0).contains(&space.usage), "{space:?}");
    }
}
