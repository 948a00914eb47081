//! Per-task memory accounting for linear memories and tables.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Caps the total bytes of all linear memories and tables of one store.
/// A denied growth is recorded so that a subsequent trap (or failed
/// instantiation) can be reported as a memory-limit violation; so is a
/// growth this limiter granted but wasmtime then failed (beyond the pooling
/// allocator's per-slot maximum, or the host out of memory).
///
/// The cap is shared ([`MemLimiter::shared`]) so that an executor's envelope can move while it
/// runs: every growth is checked against the cap of that moment (growth is rare, so the atomic
/// load costs a one-shot task nothing measurable). Memory already granted is never taken back.
pub(crate) struct MemLimiter {
    limit: Arc<AtomicU64>,
    total: u64,
    /// Bytes granted by the last successful `*_growing` call, undone if the
    /// growth then fails.
    pending: u64,
    /// What the last `*_growing` call asked for: (what, current, desired).
    last: Option<(&'static str, u64, u64)>,
    denied: Option<String>,
    failed: Option<String>,
}

/// Bytes a table element takes in wasmtime (one pointer).
const TABLE_ELEM_BYTES: u64 = std::mem::size_of::<usize>() as u64;

impl MemLimiter {
    /// A limiter with a fixed cap of `limit` bytes (a one-shot task's `mem`).
    pub(crate) fn new(limit: u64) -> Self {
        Self::shared(Arc::new(AtomicU64::new(limit)))
    }

    /// A limiter whose cap is whatever `limit` holds when the guest grows (an executor's
    /// envelope, set by the agent as tasks come and go).
    pub(crate) fn shared(limit: Arc<AtomicU64>) -> Self {
        MemLimiter {
            limit,
            total: 0,
            pending: 0,
            last: None,
            denied: None,
            failed: None,
        }
    }

    /// Message describing the first denied (or, failing that, failed)
    /// growth, if any.
    pub(crate) fn denied(&self) -> Option<&str> {
        self.denied.as_deref().or(self.failed.as_deref())
    }

    /// Forgets earlier denied or failed growths: a long-lived guest that handled them (it came
    /// back to the host afterwards) should not have a later, unrelated trap blamed on them.
    pub(crate) fn forgive(&mut self) {
        self.denied = None;
        self.failed = None;
    }

    fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    fn grow(&mut self, what: &'static str, current: u64, desired: u64) -> bool {
        self.last = Some((what, current, desired));
        let delta = desired.saturating_sub(current);
        let new_total = self.total.saturating_add(delta);
        let limit = self.limit();
        if new_total > limit {
            if self.denied.is_none() {
                self.denied = Some(format!(
                    "memory limit of {limit} bytes exceeded: growing a {what} from {current} to \
                     {desired} bytes would use {new_total} bytes"
                ));
            }
            self.pending = 0;
            return false;
        }
        self.total = new_total;
        self.pending = delta;
        true
    }

    /// A growth failed after (or, for the two errors below, before) its
    /// `*_growing` call: gives back the bytes it was granted and records why.
    fn grow_failed(&mut self, what: &str, error: &wasmtime::Error) {
        let msg = error.to_string();
        // wasmtime fails these before asking the limiter (the size is not
        // representable), so no bytes were granted for them.
        let asked = !matches!(
            msg.as_str(),
            "memory growth exceeds memory type's limits" | "overflow calculating new table size"
        );
        let last = self.last.take();
        if asked {
            self.total = self.total.saturating_sub(self.pending);
        }
        self.pending = 0;
        if self.failed.is_none() {
            self.failed = Some(match last {
                Some((what, current, desired)) if asked => format!(
                    "growing a {what} from {current} to {desired} bytes failed under the \
                     task's memory limit of {} bytes: {msg}",
                    self.limit()
                ),
                _ => format!("growing a {what} failed: {msg}"),
            });
        }
    }
}

impl wasmtime::ResourceLimiter for MemLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow("linear memory", current as u64, desired as u64))
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.grow_failed("linear memory", &error);
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(
            "table",
            (current as u64).saturating_mul(TABLE_ELEM_BYTES),
            (desired as u64).saturating_mul(TABLE_ELEM_BYTES),
        ))
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.grow_failed("table", &error);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn counts_memories_and_tables_together() {
        let mut l = MemLimiter::new(100);
        assert!(l.memory_growing(0, 60, None).unwrap());
        assert!(l.table_growing(0, 4, None).unwrap()); // 32 bytes on 64-bit
        assert!(l.denied().is_none());
        assert!(!l.memory_growing(60, 90, None).unwrap());
        assert!(l.denied().unwrap().contains("memory limit of 100 bytes"));
        // A failed grow gives its bytes back.
        assert!(l.memory_growing(60, 65, None).unwrap());
        l.memory_grow_failed(wasmtime::format_err!("os said no"))
            .unwrap();
        assert_eq!(l.total, 60 + 4 * TABLE_ELEM_BYTES);
        // ... and the failure is reported.
        assert!(l.failed.as_deref().unwrap().contains("os said no"));
    }

    #[test]
    fn a_shared_cap_moves_and_denials_can_be_forgiven() {
        let cap = Arc::new(AtomicU64::new(100));
        let mut l = MemLimiter::shared(cap.clone());
        assert!(l.memory_growing(0, 80, None).unwrap());
        assert!(!l.memory_growing(80, 150, None).unwrap());
        assert!(l.denied().unwrap().contains("memory limit of 100 bytes"));
        l.forgive();
        assert!(l.denied().is_none());
        cap.store(200, Ordering::Relaxed);
        assert!(l.memory_growing(80, 150, None).unwrap());
        // A smaller cap refuses later growth but takes nothing back.
        cap.store(50, Ordering::Relaxed);
        assert!(!l.memory_growing(150, 151, None).unwrap());
        assert_eq!(l.total, 150);
        assert!(l.denied().unwrap().contains("memory limit of 50 bytes"));
    }

    #[test]
    fn a_failed_growth_is_reported_when_none_was_denied() {
        let mut l = MemLimiter::new(1 << 30);
        assert!(l.table_growing(0, 1 << 20, Some(1 << 20)).unwrap());
        assert!(l.table_growing(1 << 20, 2 << 20, Some(1 << 20)).unwrap());
        l.table_grow_failed(wasmtime::format_err!("Table maximum size exceeded"))
            .unwrap();
        assert_eq!(l.total, (1 << 20) * TABLE_ELEM_BYTES);
        let msg = l.denied().unwrap();
        assert!(
            msg.contains("growing a table from") && msg.contains("maximum size exceeded"),
            "{msg}"
        );
        // A failure wasmtime reports before asking gives back nothing.
        l.memory_grow_failed(wasmtime::format_err!(
            "memory growth exceeds memory type's limits"
        ))
        .unwrap();
        assert_eq!(l.total, (1 << 20) * TABLE_ELEM_BYTES);
    }
}
