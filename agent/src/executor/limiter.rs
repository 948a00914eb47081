//! Per-task memory accounting for linear memories and tables.

/// Caps the total bytes of all linear memories and tables of one store.
/// A denied growth is recorded so that a subsequent trap (or failed
/// instantiation) can be reported as a memory-limit violation.
pub(crate) struct MemLimiter {
    limit: u64,
    total: u64,
    /// Bytes granted by the last successful `*_growing` call, undone if the
    /// growth then fails.
    pending: u64,
    denied: Option<String>,
}

/// Bytes a table element takes in wasmtime (one pointer).
const TABLE_ELEM_BYTES: u64 = std::mem::size_of::<usize>() as u64;

impl MemLimiter {
    pub(crate) fn new(limit: u64) -> Self {
        MemLimiter {
            limit,
            total: 0,
            pending: 0,
            denied: None,
        }
    }

    /// Message describing the first denied growth, if any.
    pub(crate) fn denied(&self) -> Option<&str> {
        self.denied.as_deref()
    }

    fn grow(&mut self, what: &str, current: u64, desired: u64) -> bool {
        let delta = desired.saturating_sub(current);
        let new_total = self.total.saturating_add(delta);
        if new_total > self.limit {
            if self.denied.is_none() {
                self.denied = Some(format!(
                    "memory limit of {} bytes exceeded: growing a {what} from {current} to \
                     {desired} bytes would use {new_total} bytes",
                    self.limit
                ));
            }
            self.pending = 0;
            return false;
        }
        self.total = new_total;
        self.pending = delta;
        true
    }

    fn undo_pending(&mut self) {
        self.total = self.total.saturating_sub(self.pending);
        self.pending = 0;
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

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.undo_pending();
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

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.undo_pending();
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
    }
}
