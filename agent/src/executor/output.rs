//! A capped, file-backed stdout/stderr stream for WASI guests.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Marker appended once to a stdout/stderr file when the guest writes more
/// than [`super::ExecutorConfig::output_cap`] bytes to it, so readers know
/// output was dropped.
pub const TRUNCATION_MARKER: &[u8] = b"\n[tessera: output truncated]\n";

/// Largest write permit handed to the guest in one go.
const WRITE_PERMIT: usize = 64 * 1024;

/// A guest output stream writing to a host file, keeping at most `cap`
/// bytes of guest output. Beyond that, output is dropped (the guest still
/// sees successful writes, so it is not disturbed) and [`TRUNCATION_MARKER`]
/// is appended once.
#[derive(Clone)]
pub(crate) struct CappedOutput {
    state: Arc<Mutex<CappedState>>,
}

struct CappedState {
    file: File,
    written: u64,
    cap: u64,
    truncated: bool,
    failed: bool,
}

impl CappedOutput {
    /// Creates (truncating) `path` and returns a stream writing to it.
    pub(crate) fn create(path: &Path, cap: u64) -> std::io::Result<Self> {
        let file = File::create(path)?;
        Ok(CappedOutput {
            state: Arc::new(Mutex::new(CappedState {
                file,
                written: 0,
                cap,
                truncated: false,
                failed: false,
            })),
        })
    }

    fn write_bytes(&self, buf: &[u8]) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.write(buf);
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
            if self.file.write_all(&buf[..n]).is_err() {
                // Host-side I/O failure (e.g. disk full): stop writing, but do
                // not fail the guest because of the host's problem.
                self.failed = true;
                return;
            }
            self.written += n as u64;
        }
        if n < buf.len() {
            self.truncated = true;
            if self.file.write_all(TRUNCATION_MARKER).is_err() {
                self.failed = true;
            }
        }
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
        // Writes go straight to the file; nothing is buffered here.
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

/// The last `max` bytes of the file at `path` as lossy UTF-8 (empty if the
/// file is missing). A UTF-8 sequence cut by the window start is skipped.
pub(crate) fn read_tail(path: &Path, max: usize) -> String {
    fn inner(path: &Path, max: usize) -> std::io::Result<Vec<u8>> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        let start = len.saturating_sub(max as u64);
        f.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::with_capacity(max.min(len as usize));
        f.take(max as u64).read_to_end(&mut buf)?;
        if start > 0 {
            let skip = buf
                .iter()
                .take(3)
                .take_while(|b| (**b & 0xC0) == 0x80)
                .count();
            buf.drain(..skip);
        }
        Ok(buf)
    }
    match inner(path, max) {
        Ok(buf) => String::from_utf8_lossy(&buf).into_owned(),
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
}
