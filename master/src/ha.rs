//! What a master needs from a coordination service to run as one of several (one leader, the
//! rest standbys), kept as traits so the master never links the service's client: the
//! `tessera-etcd` crate implements them on etcd, [`memory`] in memory for tests.
//!
//! A master campaigns ([`Coordinator::campaign`]); while it waits it is a standby: it learns
//! who leads (to redirect peers there) and mirrors the leader's blobs (listed by
//! [`Coordinator::blobs`]). Once elected it holds a [`Term`]: a registry whose every write is
//! fenced to the term (a write after the term ended fails with [`RegistryError::Fenced`] and
//! changes nothing), and the instant until which it may still act as leader. The driver acts
//! only before that instant and steps down (drops the term, closes its connections, campaigns
//! again) when it passes, when the term is lost, or when a write is fenced.

pub mod memory;

use crate::registry::{BlobRecord, Registry, RegistryError, RegistryOp, Snapshot};
use std::future::Future;
use std::pin::Pin;
use std::time::Instant;
use tokio::sync::watch;

/// A boxed, sendable future: what the traits' async methods return, so they stay object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A registry reached asynchronously (over the network). Every [`Registry`] is one, its calls
/// completing at once.
pub trait AsyncRegistry: Send {
    /// Everything stored, read at one instant (an empty snapshot for a fresh store).
    fn load(&mut self) -> BoxFuture<'_, Result<Snapshot, RegistryError>>;
    /// Applies `batch`, in order, as one atomic write that is durable when this returns.
    fn apply<'a>(&'a mut self, batch: &'a [RegistryOp])
        -> BoxFuture<'a, Result<(), RegistryError>>;
}

impl<R: Registry> AsyncRegistry for R {
    fn load(&mut self) -> BoxFuture<'_, Result<Snapshot, RegistryError>> {
        let r = Registry::load(self);
        Box::pin(async move { r })
    }

    fn apply<'a>(
        &'a mut self,
        batch: &'a [RegistryOp],
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        let r = Registry::apply(self, batch);
        Box::pin(async move { r })
    }
}

/// Why the coordination service could not be used.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    /// The service could not be reached or refused a call (retried by the caller).
    #[error("coordination service: {0}")]
    Unavailable(String),
    /// The configuration cannot work (bad endpoints, TLS files, a prefix of another cluster):
    /// the master stops.
    #[error("coordination service configuration: {0}")]
    Config(String),
    /// The registry under the prefix cannot be used.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// One term of leadership, from election until it is lost or dropped (dropping it resigns:
/// the successor need not wait for the lease to expire).
pub struct Term {
    /// Identifies the term; a later term has a larger one (etcd: the leader key's create
    /// revision). Logged, and written beside every registry write.
    pub fence: u64,
    /// Until when this master may act as leader: the expiry of its lease as last proven, less
    /// a safety margin, on this process's monotonic clock. Moves forward with each renewal;
    /// `None` once the term is known lost. A leader sends nothing once it has passed.
    pub valid_until: watch::Receiver<Option<Instant>>,
    /// The registry, every write fenced to this term.
    pub registry: Box<dyn AsyncRegistry>,
    /// Resigns when dropped (the implementation's guard: lease keeper, revocation).
    pub guard: Box<dyn Send + Sync>,
}

impl Term {
    /// True while this master may act as leader at `now`.
    pub fn valid_at(&self, now: Instant) -> bool {
        matches!(*self.valid_until.borrow(), Some(until) if now < until)
    }
}

impl std::fmt::Debug for Term {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Term")
            .field("fence", &self.fence)
            .field("valid_until", &*self.valid_until.borrow())
            .finish_non_exhaustive()
    }
}

/// A coordination service several masters share: elects one leader at a time and keeps the
/// registry they take over from each other.
pub trait Coordinator: Send + Sync + 'static {
    /// Campaigns until this master leads, as `advertise` (the `host:port` peers are redirected
    /// to). While it waits, `leader` is kept up to date with the address the current leader
    /// advertises (`None` while nobody leads). Transient failures of the service are retried
    /// inside; an error is one the master cannot get past.
    fn campaign<'a>(
        &'a self,
        advertise: &'a str,
        leader: &'a watch::Sender<Option<String>>,
    ) -> BoxFuture<'a, Result<Term, HaError>>;

    /// The blobs the registry lists (read without leadership), so a standby can mirror them
    /// from the leader before it may have to take over.
    fn blobs(&self) -> BoxFuture<'_, Result<Vec<BlobRecord>, HaError>>;
}
