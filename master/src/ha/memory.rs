//! An in-memory [`Coordinator`]: masters in one process share it (clones share one state), for
//! tests of the driver's standby and leader modes without a coordination service. A term lasts
//! until its guard drops or a test ends it with [`MemCoordinator::depose`]; the registry is a
//! [`MemRegistry`] whose writes are fenced to the current term, as etcd's are.

use super::{BoxFuture, Coordinator, HaError, Term};
use crate::registry::{BlobRecord, MemRegistry, Registry, RegistryError, RegistryOp, Snapshot};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

#[derive(Default)]
struct State {
    /// The current term's fence, its leader's address, and how to end it.
    leader: Option<(u64, String, watch::Sender<Option<Instant>>)>,
    next_fence: u64,
}

/// Elections and a fenced registry in memory; cheap to clone.
#[derive(Clone, Default)]
pub struct MemCoordinator {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    registry: MemRegistry,
}

impl MemCoordinator {
    /// Nobody leads, and the registry is empty.
    pub fn new() -> Self {
        Self::default()
    }

    /// The shared registry, unfenced (for tests to inspect).
    pub fn registry(&self) -> MemRegistry {
        self.registry.clone()
    }

    /// The current leader's fence and address.
    pub fn leader(&self) -> Option<(u64, String)> {
        let s = self.state.lock().expect("poisoned");
        s.leader.as_ref().map(|(f, a, _)| (*f, a.clone()))
    }

    /// Ends the current term as an expired lease would: its holder's `valid_until` becomes
    /// `None`, its writes are fenced, and another candidate may win.
    pub fn depose(&self) {
        let mut s = self.state.lock().expect("poisoned");
        if let Some((_, _, until)) = s.leader.take() {
            let _ = until.send(None);
        }
        drop(s);
        self.changed.notify_waiters();
    }

    fn resign(&self, fence: u64) {
        let mut s = self.state.lock().expect("poisoned");
        if matches!(&s.leader, Some((f, _, _)) if *f == fence) {
            let (_, _, until) = s.leader.take().expect("checked");
            let _ = until.send(None);
        }
        drop(s);
        self.changed.notify_waiters();
    }
}

/// Resigns its term when dropped.
struct Resign {
    coord: MemCoordinator,
    fence: u64,
}

impl Drop for Resign {
    fn drop(&mut self) {
        self.coord.resign(self.fence);
    }
}

/// The shared registry, each write checked against the term it was given for.
struct Fenced {
    coord: MemCoordinator,
    fence: u64,
}

impl Registry for Fenced {
    fn load(&self) -> Result<Snapshot, RegistryError> {
        self.coord.registry.load()
    }

    fn apply(&mut self, batch: &[RegistryOp]) -> Result<(), RegistryError> {
        let s = self.coord.state.lock().expect("poisoned");
        if !matches!(&s.leader, Some((f, _, _)) if *f == self.fence) {
            return Err(RegistryError::Fenced);
        }
        // Under the lock: a deposition cannot slip between the check and the write.
        self.coord.registry.clone().apply(batch)
    }
}

impl Coordinator for MemCoordinator {
    fn campaign<'a>(
        &'a self,
        advertise: &'a str,
        leader: &'a watch::Sender<Option<String>>,
    ) -> BoxFuture<'a, Result<Term, HaError>> {
        Box::pin(async move {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                {
                    let mut s = self.state.lock().expect("poisoned");
                    match &s.leader {
                        Some((_, addr, _)) => {
                            let addr = addr.clone();
                            leader.send_if_modified(|l| {
                                let new = Some(addr);
                                let changed = *l != new;
                                *l = new;
                                changed
                            });
                        }
                        None => {
                            s.next_fence += 1;
                            let fence = s.next_fence;
                            // A term in memory never expires by itself.
                            let until = Instant::now() + Duration::from_secs(100 * 365 * 86_400);
                            let (tx, rx) = watch::channel(Some(until));
                            s.leader = Some((fence, advertise.to_owned(), tx));
                            let _ = leader.send(Some(advertise.to_owned()));
                            return Ok(Term {
                                fence,
                                valid_until: rx,
                                registry: Box::new(Fenced {
                                    coord: self.clone(),
                                    fence,
                                }),
                                guard: Box::new(Resign {
                                    coord: self.clone(),
                                    fence,
                                }),
                            });
                        }
                    }
                }
                changed.await;
            }
        })
    }

    fn blobs(&self) -> BoxFuture<'_, Result<Vec<BlobRecord>, HaError>> {
        let blobs = self.registry.snapshot().blobs;
        Box::pin(async move { Ok(blobs) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_leader_at_a_time_and_a_deposed_term_is_fenced() {
        let coord = MemCoordinator::new();
        let (tx_a, _rx_a) = watch::channel(None);
        let (tx_b, mut rx_b) = watch::channel(None);
        let mut a = coord.campaign("a:1", &tx_a).await.expect("a leads");
        assert!(a.valid_at(Instant::now()));
        let b = {
            let coord = coord.clone();
            tokio::spawn(async move {
                let term = coord.campaign("b:1", &tx_b).await;
                (term, tx_b)
            })
        };
        rx_b.wait_for(|l| l.as_deref() == Some("a:1"))
            .await
            .expect("b learns who leads");
        a.registry.apply(&[]).await.expect("a may write");
        coord.depose();
        let (b, _tx) = b.await.expect("joins");
        let b = b.expect("b leads");
        assert!(b.fence > a.fence);
        assert!(!a.valid_at(Instant::now()));
        assert!(matches!(
            a.registry.apply(&[]).await,
            Err(RegistryError::Fenced)
        ));
        drop(a);
        assert_eq!(coord.leader().map(|(f, _)| f), Some(b.fence));
        drop(b);
        assert_eq!(coord.leader(), None);
    }
}
