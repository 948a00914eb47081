//! When stored blobs are forgotten and deleted: the master's blob garbage collection, decided
//! here in virtual time, carried out by the driver.
//!
//! A blob is *used* when it is uploaded (again) and when a task naming it (as its module, a
//! file, or its executor's module) is launched; at each sweep a blob still named by a live
//! task or a placed executor counts as used then. One that has not been used for
//! [`MasterConfig::blob_gc_grace`](super::MasterConfig::blob_gc_grace) is forgotten (with its
//! owners: a task naming it gets the usual "not uploaded" error until someone uploads it
//! again) and handed to the driver through [`Master::poll_blob_gc`] to delete from the store.
//!
//! One timer ([`Timer::BlobGc`]) wakes the sweep at the earliest instant a blob may expire; a
//! referenced blob is looked at again a quarter of the grace later, so a blob goes between one
//! and one and a quarter graces after its last use. Off (`None`) by default in the core, so
//! the virtual-time cluster, whose schedulers do not re-upload, keeps every blob; the master's
//! driver options turn it on.

use super::timer::Timer;
use super::Master;
use proto::{Digest, TaskInfo};
use std::collections::BTreeSet;
use std::time::Instant;

impl Master {
    /// Next blob the driver should delete from the store (the core has forgotten it).
    pub fn poll_blob_gc(&mut self) -> Option<Digest> {
        self.blob_gc_due.pop_front()
    }

    /// When the blob was last used, if it is stored.
    pub fn blob_last_used(&self, digest: &Digest) -> Option<Instant> {
        self.blobs.get(digest).map(|b| b.last_used)
    }

    /// Marks the blobs a task names as used now.
    pub(super) fn blobs_used_by(&mut self, task: &TaskInfo) {
        let now = self.now;
        let digests = std::iter::once(task.module)
            .chain(task.files.iter().map(|f| f.digest))
            .chain(task.executor.as_ref().map(|e| e.module));
        for d in digests {
            if let Some(b) = self.blobs.get_mut(&d) {
                b.last_used = now;
            }
        }
    }

    /// Arms the sweep for the earliest instant a blob may expire.
    pub(super) fn arm_blob_gc(&mut self) {
        let Some(grace) = self.cfg.blob_gc_grace else {
            return;
        };
        let next = self
            .blobs
            .values()
            .map(|b| b.last_used)
            .min()
            .and_then(|t| t.checked_add(grace));
        self.timers.set_or_stop(Timer::BlobGc, next);
    }

    /// The sweep: refreshes referenced blobs and forgets the ones unused for the grace.
    pub(super) fn collect_blobs(&mut self) {
        let Some(grace) = self.cfg.blob_gc_grace else {
            return;
        };
        let now = self.now;
        let referenced: BTreeSet<Digest> = self
            .tasks
            .values()
            .flat_map(|t| {
                std::iter::once(t.info.module)
                    .chain(t.info.files.iter().map(|f| f.digest))
                    .chain(t.info.executor.as_ref().map(|e| e.module))
            })
            .chain(self.executors.values().map(|e| e.info.module))
            .collect();
        // Referenced blobs are looked at again a quarter grace from now.
        let recheck = now.checked_sub(grace - grace / 4).unwrap_or(now);
        let mut gone = Vec::new();
        for (digest, b) in self.blobs.iter_mut() {
            if referenced.contains(digest) {
                b.last_used = b.last_used.max(recheck);
            } else if b.last_used.checked_add(grace).is_some_and(|t| t <= now) {
                gone.push(*digest);
            }
        }
        for digest in gone {
            tracing::info!(digest = %digest.to_hex(), "blob unused for the grace period; deleting");
            self.blobs.remove(&digest);
            self.blob_gc_due.push_back(digest);
        }
        self.arm_blob_gc();
    }
}
