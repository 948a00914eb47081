//! Capped stdout/stderr streams for WASI guests.
//!
//! A stream is either *on disk* from the start (a task with a sandbox, an executor instance:
//! the file beside the sandbox, created when the guest is set up, as the operator and tests
//! expect to find it) or *in memory* (a task without a sandbox: no directory is made for it
//! unless its output outgrows [`MEMORY_THRESHOLD`] or the memory budget, when the stream
//! spills to the same file and continues there). Either way the cap and the truncation marker
//! are the same: at most [`super::ExecutorConfig::output_cap`] bytes of guest output, then
//! [`TRUNCATION_MARKER`] once.
//!
//! In-memory streams live in the executor's [`OutputStore`], keyed by task directory, so that
//! their output stays readable after the task ends (the agent's output reads ask it first) until
//! the agent collects the task ([`OutputStore::forget`]). Everything it holds counts against one
//! budget ([`MEMORY_BUDGET`]): a running stream that would go over it spills to its file, and
//! when ended tasks' output fills more than three quarters of it, the oldest ended tasks' output
//! is written out to their files (off the launch path, on the blocking pool) until half is free.
//! [`OutputStore::write_out_all`] writes everything out when guests stop with their process.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Marker appended once to a stdout/stderr stream when the guest writes more
/// than [`super::ExecutorConfig::output_cap`] bytes to it, so readers know
/// output was dropped.
pub const TRUNCATION_MARKER: &[u8] = b"\n[tessera: output truncated]\n";

/// Largest write permit handed to the guest in one go.
const WRITE_PERMIT: usize = 64 * 1024;

/// Bytes of one in-memory stream kept in memory; a stream that grows past it spills to its
/// file (most tasks' output is far smaller, so they never touch the disk).
pub const MEMORY_THRESHOLD: usize = 16 * 1024;

/// Bytes of output (and bookkeeping) all in-memory streams of an executor hold together.
pub const MEMORY_BUDGET: u64 = 64 << 20;

/// Bookkeeping counted against the budget for each task in the store.
const ENTRY_OVERHEAD: u64 = 256;

/// A guest output stream, keeping at most `cap` bytes of guest output. Beyond that, output is
/// dropped (the guest still sees successful writes, so it is not disturbed) and
/// [`TRUNCATION_MARKER`] is appended once.
#[derive(Clone)]
pub(crate) struct CappedOutput {
    state: Arc<Mutex<CappedState>>,
}

/// Bytes the in-memory streams hold, against [`MEMORY_BUDGET`].
#[derive(Debug)]
struct Budget {
    used: AtomicU64,
    limit: u64,
}

impl Budget {
    /// Takes `n` bytes if they fit.
    fn try_take(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                (u.saturating_add(n) <= self.limit).then_some(u + n)
            })
            .is_ok()
    }

    fn take(&self, n: u64) {
        self.used.fetch_add(n, Ordering::Relaxed);
    }

    fn release(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(n))
            });
    }

    fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

/// Where a stream's bytes are.
enum Sink {
    /// In memory (counted in the budget), not on disk yet.
    Memory(Vec<u8>, Arc<Budget>),
    /// In its file, open for writing.
    File(File),
    /// In its file, closed (the guest ended).
    Closed,
}

struct CappedState {
    sink: Sink,
    /// The stream's file (where a memory stream spills).
    path: PathBuf,
    /// Guest bytes kept (at most `cap`).
    written: u64,
    cap: u64,
    /// Threshold of a memory stream.
    threshold: usize,
    truncated: bool,
    /// A host-side write failed (disk full...): the stream stopped taking bytes.
    failed: bool,
}

impl CappedOutput {
    /// Creates (truncating) `path` and returns a stream writing to it.
    pub(crate) fn create(path: &Path, cap: u64) -> std::io::Result<Self> {
        let file = File::create(path)?;
        Ok(Self::with_sink(Sink::File(file), path, cap, 0))
    }

    /// A stream kept in memory (in `budget`) up to `threshold` bytes, spilled to `path`
    /// (created with its directory) beyond.
    fn in_memory(path: PathBuf, cap: u64, threshold: usize, budget: Arc<Budget>) -> Self {
        Self::with_sink(Sink::Memory(Vec::new(), budget), &path, cap, threshold)
    }

    fn with_sink(sink: Sink, path: &Path, cap: u64, threshold: usize) -> Self {
        CappedOutput {
            state: Arc::new(Mutex::new(CappedState {
                sink,
                path: path.to_owned(),
                written: 0,
                cap,
                threshold,
                truncated: false,
                failed: false,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, CappedState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write_bytes(&self, buf: &[u8]) {
        self.lock().write(buf);
    }

    /// The last `max` bytes as lossy UTF-8 (a UTF-8 sequence cut by the window start is
    /// skipped): from memory, or from the file (empty if it is missing).
    pub(crate) fn tail(&self, max: usize) -> String {
        let st = self.lock();
        match &st.sink {
            Sink::Memory(v, _) => tail_of(&v[v.len().saturating_sub(max)..], v.len() > max),
            Sink::File(_) | Sink::Closed => read_tail(&st.path, max),
        }
    }

    /// At most `length` bytes at `offset`, and the stream's size, if it is in memory.
    fn read(&self, offset: u64, length: u64) -> Option<(Vec<u8>, u64)> {
        let st = self.lock();
        match &st.sink {
            Sink::Memory(v, _) => {
                let size = v.len() as u64;
                let start = offset.min(size) as usize;
                let end = offset.saturating_add(length).min(size) as usize;
                Some((v[start..end].to_vec(), size))
            }
            _ => None,
        }
    }

    /// Bytes in the stream (memory or file).
    pub(crate) fn size(&self) -> u64 {
        let st = self.lock();
        match &st.sink {
            Sink::Memory(v, _) => v.len() as u64,
            _ => std::fs::metadata(&st.path).map_or(0, |m| m.len()),
        }
    }

    /// The guest is done writing: an open file is closed (a memory stream stays).
    fn close(&self) {
        let mut st = self.lock();
        if matches!(st.sink, Sink::File(_)) {
            st.sink = Sink::Closed;
        }
    }

    /// Writes a memory stream out to its file (even when empty, as a stream on disk from the
    /// start would be) and closes it.
    fn write_out(&self) {
        let mut st = self.lock();
        if matches!(st.sink, Sink::Memory(..)) {
            if let Err(e) = st.spill() {
                tracing::warn!(path = %st.path.display(), error = %e, "cannot write a task's output out: dropped");
                st.discard();
            }
        }
        st.sink = Sink::Closed;
    }

    /// Drops a memory stream's bytes (the task is collected).
    fn discard(&self) {
        self.lock().discard();
    }
}

impl CappedState {
    fn write(&mut self, buf: &[u8]) {
        if self.truncated || self.failed || buf.is_empty() {
            return;
        }
        let room = self.cap.saturating_sub(self.written);
        let n = usize::try_from(room).unwrap_or(usize::MAX).min(buf.len());
        if n > 0 {
            if let Err(e) = self.append(&buf[..n]) {
                // Host-side I/O failure (e.g. disk full): stop writing, but do
                // not fail the guest because of the host's problem.
                tracing::debug!(path = %self.path.display(), error = %e, "output stream failed");
                self.failed = true;
                return;
            }
            self.written += n as u64;
        }
        if n < buf.len() {
            self.truncated = true;
            if self.append(TRUNCATION_MARKER).is_err() {
                self.failed = true;
            }
        }
    }

    /// Appends to memory if it fits under the threshold and the budget, else to the file
    /// (spilling the memory first).
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if let Sink::Memory(v, budget) = &mut self.sink {
            if v.len() + bytes.len() <= self.threshold && budget.try_take(bytes.len() as u64) {
                v.extend_from_slice(bytes);
                return Ok(());
            }
            self.spill()?;
        }
        match &mut self.sink {
            Sink::File(f) => f.write_all(bytes),
            // The guest has ended: nothing writes any more.
            Sink::Closed | Sink::Memory(..) => Ok(()),
        }
    }

    /// Moves a memory stream to its file (created with its directory), left open.
    fn spill(&mut self) -> std::io::Result<()> {
        let Sink::Memory(v, budget) = &self.sink else {
            return Ok(());
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = File::create(&self.path)?;
        f.write_all(v)?;
        budget.release(v.len() as u64);
        self.sink = Sink::File(f);
        Ok(())
    }

    fn discard(&mut self) {
        if let Sink::Memory(v, budget) = &self.sink {
            budget.release(v.len() as u64);
            self.sink = Sink::Closed;
        }
    }
}

/// In-memory output of tasks without a sandbox, by task directory, readable until the task is
/// collected, under one memory budget (see the module docs).
pub(crate) struct OutputStore {
    budget: Arc<Budget>,
    threshold: usize,
    state: Mutex<StoreState>,
}

#[derive(Default)]
struct StoreState {
    /// Each task's streams, by task directory.
    entries: HashMap<PathBuf, StoreEntry>,
    /// Ended tasks, oldest first, with their entry's id (an entry replaced or forgotten since
    /// is skipped).
    ended: VecDeque<(PathBuf, u64)>,
    /// Id of the next entry.
    next: u64,
}

struct StoreEntry {
    id: u64,
    /// stdout, stderr.
    streams: [CappedOutput; 2],
}

impl StoreEntry {
    fn discard(&self) {
        for s in &self.streams {
            s.discard();
        }
    }
}

/// What [`OutputStore::trim`] found to write out, to run on the blocking pool.
pub(crate) struct WriteOut(Vec<(PathBuf, u64, StoreEntry)>, Arc<OutputStore>);

impl WriteOut {
    /// Writes each entry's streams to their files, then drops the entries from the store.
    pub(crate) fn run(self) {
        let WriteOut(victims, store) = self;
        for (_, _, entry) in &victims {
            for s in &entry.streams {
                s.write_out();
            }
        }
        let mut st = store.lock();
        for (dir, id, _) in victims {
            if st.entries.get(&dir).is_some_and(|e| e.id == id) {
                st.entries.remove(&dir);
                store.budget.release(ENTRY_OVERHEAD);
            }
        }
    }
}

impl OutputStore {
    /// A store keeping at most `budget` bytes in memory, `threshold` per stream.
    pub(crate) fn new(budget: u64, threshold: usize) -> Self {
        OutputStore {
            budget: Arc::new(Budget {
                used: AtomicU64::new(0),
                limit: budget,
            }),
            threshold,
            state: Mutex::new(StoreState::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, StoreState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The in-memory stdout and stderr of the task in `task_dir` (spilling to `stdout` and
    /// `stderr` there), capped at `cap` each, with the entry's id for [`OutputStore::ended`].
    /// A previous entry of the same directory (a task id launched again) is dropped.
    pub(crate) fn open(
        &self,
        task_dir: &Path,
        [stdout, stderr]: [PathBuf; 2],
        cap: u64,
    ) -> (u64, [CappedOutput; 2]) {
        let mk = |p| CappedOutput::in_memory(p, cap, self.threshold, self.budget.clone());
        let streams = [mk(stdout), mk(stderr)];
        let mut st = self.lock();
        st.next += 1;
        let id = st.next;
        self.budget.take(ENTRY_OVERHEAD);
        let entry = StoreEntry {
            id,
            streams: streams.clone(),
        };
        if let Some(old) = st.entries.insert(task_dir.to_owned(), entry) {
            old.discard();
            self.budget.release(ENTRY_OVERHEAD);
        }
        (id, streams)
    }

    /// The task of entry `id` in `task_dir` ended: its open files are closed, and it joins the
    /// ended tasks whose output may be written out. Returns the writing out due, if any (the
    /// caller runs it on the blocking pool).
    pub(crate) fn ended(self: &Arc<Self>, task_dir: &Path, id: u64) -> Option<WriteOut> {
        let mut st = self.lock();
        if let Some(e) = st.entries.get(task_dir).filter(|e| e.id == id) {
            for s in &e.streams {
                s.close();
            }
            st.ended.push_back((task_dir.to_owned(), id));
        }
        self.trim(&mut st)
    }

    /// When more than three quarters of the budget is used, takes the oldest ended entries
    /// until half of it would be free.
    fn trim(self: &Arc<Self>, st: &mut StoreState) -> Option<WriteOut> {
        let limit = self.budget.limit;
        let mut used = self.budget.used();
        if used <= limit / 4 * 3 {
            return None;
        }
        let mut victims = Vec::new();
        while used > limit / 2 {
            let Some((dir, id)) = st.ended.pop_front() else {
                break;
            };
            let Some(e) = st.entries.get(&dir).filter(|e| e.id == id) else {
                continue;
            };
            let bytes: u64 = e.streams.iter().map(|s| s.size()).sum();
            used = used.saturating_sub(bytes + ENTRY_OVERHEAD);
            let entry = StoreEntry {
                id,
                streams: e.streams.clone(),
            };
            victims.push((dir, id, entry));
        }
        (!victims.is_empty()).then(|| WriteOut(victims, self.clone()))
    }

    /// Drops the output of the task in `task_dir` (it is being collected).
    pub(crate) fn forget(&self, task_dir: &Path) {
        if let Some(e) = self.lock().entries.remove(task_dir) {
            e.discard();
            self.budget.release(ENTRY_OVERHEAD);
        }
    }

    /// At most `length` bytes at `offset` of the task's stdout (`stderr` false) or stderr, and
    /// the stream's size, if the store holds it in memory (else it is in its file, or there is
    /// none).
    pub(crate) fn read(
        &self,
        task_dir: &Path,
        stderr: bool,
        offset: u64,
        length: u64,
    ) -> Option<(Vec<u8>, u64)> {
        let stream = self.lock().entries.get(task_dir)?.streams[usize::from(stderr)].clone();
        stream.read(offset, length)
    }

    /// Writes every task's output out to its files (blocking): the guests are stopping with
    /// their process, and what is in memory would be lost.
    pub(crate) fn write_out_all(&self) {
        let entries: Vec<StoreEntry> = {
            let mut st = self.lock();
            st.ended.clear();
            st.entries.drain().map(|(_, e)| e).collect()
        };
        for e in &entries {
            for s in &e.streams {
                s.write_out();
            }
            self.budget.release(ENTRY_OVERHEAD);
        }
    }

    /// Bytes the store holds in memory (output and bookkeeping), and how many tasks.
    pub(crate) fn usage(&self) -> (u64, usize) {
        (self.budget.used(), self.lock().entries.len())
    }
}

impl IsTerminal for CappedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl OutputStream for CappedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        // Writes go straight to memory or the file; nothing is buffered here.
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for CappedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// `buf` as lossy UTF-8, skipping a UTF-8 sequence cut at its start when `cut`.
fn tail_of(buf: &[u8], cut: bool) -> String {
    let skip = if cut {
        buf.iter()
            .take(3)
            .take_while(|b| (**b & 0xC0) == 0x80)
            .count()
    } else {
        0
    };
    String::from_utf8_lossy(&buf[skip..]).into_owned()
}

/// The last `max` bytes of the file at `path` as lossy UTF-8 (empty if the
/// file is missing). A UTF-8 sequence cut by the window start is skipped.
pub(crate) fn read_tail(path: &Path, max: usize) -> String {
    fn inner(path: &Path, max: usize) -> std::io::Result<(Vec<u8>, bool)> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        let start = len.saturating_sub(max as u64);
        f.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::with_capacity(max.min(len as usize));
        f.take(max as u64).read_to_end(&mut buf)?;
        Ok((buf, start > 0))
    }
    match inner(path, max) {
        Ok((buf, cut)) => tail_of(&buf, cut),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_marks_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let out = CappedOutput::create(&path, 10).unwrap();
        out.write_bytes(b"0123456");
        out.write_bytes(b"789abc");
        out.write_bytes(b"more");
        let got = std::fs::read(&path).unwrap();
        let mut want = b"0123456789".to_vec();
        want.extend_from_slice(TRUNCATION_MARKER);
        assert_eq!(got, want);
    }

    #[test]
    fn tail_skips_partial_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        std::fs::write(&path, "aé€x").unwrap(); // a(1) é(2) €(3) x(1)
        assert_eq!(read_tail(&path, 3), "x"); // last 3 bytes: 2 bytes of € + x
        assert_eq!(read_tail(&path, 4), "€x");
        assert_eq!(read_tail(&path, 100), "aé€x");
        assert_eq!(read_tail(&dir.path().join("missing"), 10), "");
    }

    fn paths(dir: &Path) -> [PathBuf; 2] {
        [dir.join("stdout"), dir.join("stderr")]
    }

    #[test]
    fn memory_streams_cap_and_mark_like_files_and_spill_past_the_threshold() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Arc::new(OutputStore::new(1 << 20, 16));
        let t = tmp.path().join("t");
        let (_, [out, err]) = store.open(&t, paths(&t), 10);
        out.write_bytes(b"0123456");
        out.write_bytes(b"789abc");
        out.write_bytes(b"more");
        let mut want = b"0123456789".to_vec();
        want.extend_from_slice(TRUNCATION_MARKER);
        // Past the threshold of 16 bytes (10 + the marker): on disk, in its file, created
        // with the task's directory.
        assert_eq!(store.read(&t, false, 0, 100), None);
        assert_eq!(std::fs::read(t.join("stdout")).unwrap(), want);
        // Under it: in memory only, no file.
        err.write_bytes("aé€x".as_bytes());
        assert!(!t.join("stderr").exists());
        assert_eq!(store.read(&t, true, 1, 2), Some(("é".into(), 7)));
        assert_eq!(store.read(&t, true, 9, 2), Some((vec![], 7)));
        assert_eq!(err.tail(4), "€x");
        assert_eq!(err.tail(3), "x");
        assert_eq!(out.tail(100), String::from_utf8_lossy(&want));
    }

    #[test]
    fn the_budget_spills_running_streams_and_writes_out_the_oldest_ended_tasks() {
        let tmp = tempfile::tempdir().unwrap();
        let budget = 4 * ENTRY_OVERHEAD + 400;
        let store = Arc::new(OutputStore::new(budget, 1000));
        let dirs: Vec<PathBuf> = (0..4).map(|i| tmp.path().join(format!("t{i}"))).collect();
        let mut ids = Vec::new();
        for d in &dirs {
            let (id, [out, _]) = store.open(d, paths(d), 1 << 20);
            out.write_bytes(&[b'x'; 100]);
            ids.push(id);
        }
        // Four entries and 400 bytes: the budget is full; one more byte spills that stream.
        let (id4, [out4, _]) = store.open(
            &tmp.path().join("t4"),
            paths(&tmp.path().join("t4")),
            1 << 20,
        );
        out4.write_bytes(b"y");
        assert_eq!(std::fs::read(tmp.path().join("t4/stdout")).unwrap(), b"y");
        assert!(store.usage().0 <= budget + ENTRY_OVERHEAD);
        // Ending the first task goes over three quarters: the oldest ended output goes out.
        let w = store.ended(&dirs[0], ids[0]).expect("over three quarters");
        w.run();
        assert_eq!(std::fs::read(dirs[0].join("stdout")).unwrap(), [b'x'; 100]);
        assert_eq!(std::fs::read(dirs[0].join("stderr")).unwrap(), b"");
        assert_eq!(store.read(&dirs[0], false, 0, 10), None);
        assert_eq!(
            store.read(&dirs[1], false, 0, 1),
            Some((b"x".to_vec(), 100))
        );
        // Forgotten: memory released, nothing written.
        let before = store.usage();
        store.forget(&dirs[1]);
        assert_eq!(
            store.usage(),
            (before.0 - 100 - ENTRY_OVERHEAD, before.1 - 1)
        );
        assert!(!dirs[1].exists());
        let _ = id4;
        // Stopping writes the rest out.
        store.write_out_all();
        assert_eq!(store.usage(), (0, 0));
        assert_eq!(std::fs::read(dirs[2].join("stdout")).unwrap(), [b'x'; 100]);
        assert!(!dirs[1].exists());
    }
}
