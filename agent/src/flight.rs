//! [`Flights`]: one run of a piece of work per key at a time, its outcome shared with every
//! caller that asked for the same key meanwhile.
//!
//! A framework that launches a burst of tasks of a module the agent has not seen sends as many
//! launches at once, and each task's preparation needs the module's blob and its compiled code.
//! Without this, each preparation missed both caches and did the work itself: a burst of 100
//! tasks fetched the blob 100 times from the master (100 files written and synced) and compiled
//! it 100 times on the blocking pool, so the last task of the burst started after all of them.
//! Now the first caller works and the others wait for its outcome, success or failure alike.
//! A flight ends with its work: a later caller finds the result where the work left it (the
//! blob on disk, the module in the cache), or, after a failure, tries again (a master that
//! could not be reached may be reachable now).
//!
//! Blob fetches fly here. Compiles go through `executor::compile_jobs` instead, which runs
//! the work apart from its callers and stops a compile once no task waits for it.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::OnceCell;

/// Work in progress, by key, each run once for all its concurrent callers.
pub(crate) struct Flights<K, O> {
    in_progress: Mutex<HashMap<K, Arc<OnceCell<O>>>>,
}

impl<K, O> Default for Flights<K, O> {
    fn default() -> Self {
        Flights {
            in_progress: Mutex::new(HashMap::new()),
        }
    }
}

impl<K, O> std::fmt::Debug for Flights<K, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.in_progress.lock().map_or(0, |m| m.len());
        f.debug_struct("Flights").field("in_progress", &n).finish()
    }
}

/// A caller's hold on its flight: the last caller dropped before the flight's outcome takes
/// the flight out of progress, so that one nobody waits for is not kept (a fetch of a killed
/// task's blob, say).
struct Leave<'a, K: Hash + Eq, O> {
    flights: &'a Flights<K, O>,
    key: &'a K,
    flight: &'a Arc<OnceCell<O>>,
}

impl<K: Hash + Eq, O> Drop for Leave<'_, K, O> {
    fn drop(&mut self) {
        let mut in_progress = self.flights.lock();
        // Held by the map and this caller only: no one else waits for it.
        if in_progress
            .get(self.key)
            .is_some_and(|f| Arc::ptr_eq(f, self.flight) && Arc::strong_count(f) == 2)
        {
            in_progress.remove(self.key);
        }
    }
}

impl<K: Hash + Eq + Clone, O: Clone> Flights<K, O> {
    /// Runs `work` for `key` and returns its outcome, unless a flight for `key` is in
    /// progress: then waits for that one's outcome instead. A caller that is dropped while its
    /// work runs hands the flight to one of its waiters, which runs its own `work`. `work`
    /// should first look for a result a flight just ended with, since a caller that looked
    /// before that flight ended starts a new one.
    pub(crate) async fn run<F, Fut>(&self, key: &K, work: F) -> O
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = O>,
    {
        let flight = self.lock().entry(key.clone()).or_default().clone();
        let _leave = Leave {
            flights: self,
            key,
            flight: &flight,
        };
        let outcome = flight.get_or_init(work).await.clone();
        // Over: the next caller starts afresh (a waiter still holding this flight reads its
        // outcome).
        let mut in_progress = self.lock();
        if in_progress
            .get(key)
            .is_some_and(|f| Arc::ptr_eq(f, &flight))
        {
            in_progress.remove(key);
        }
        outcome
    }

    /// How many flights are in progress.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

impl<K, O> Flights<K, O> {
    fn lock(&self) -> MutexGuard<'_, HashMap<K, Arc<OnceCell<O>>>> {
        self.in_progress.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    type Outcome = Result<u32, String>;

    #[tokio::test]
    async fn concurrent_callers_share_one_run_and_its_failure() {
        let flights = Flights::<&str, Outcome>::default();
        let runs = AtomicUsize::new(0);
        let work = || async {
            runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(7)
        };
        let all = join_all((0..8).map(|_| Box::pin(flights.run(&"m", work))).collect()).await;
        assert!(all.iter().all(|r| *r == Ok(7)), "{all:?}");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(flights.len(), 0, "the flight ended with its run");

        let failing = || async {
            runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Err("bad magic".to_owned())
        };
        let all = join_all(
            (0..8)
                .map(|_| Box::pin(flights.run(&"m", failing)))
                .collect(),
        )
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 2, "one run for the 8 callers");
        assert!(all.iter().all(|r| *r == Err("bad magic".to_owned())));
        // After a failure, a later call tries again.
        assert_eq!(flights.run(&"m", || async { Ok(8) }).await, Ok(8));
    }

    #[tokio::test]
    async fn a_cancelled_caller_hands_the_run_to_a_waiter() {
        let flights = Flights::<&str, Outcome>::default();
        let mut first = Box::pin(flights.run(&"m", std::future::pending));
        let mut second = Box::pin(flights.run(&"m", || async { Ok(3) }));
        // The first owns the run, the second waits for it.
        assert!(poll_once(&mut first).await.is_none());
        assert!(poll_once(&mut second).await.is_none());
        drop(first);
        assert_eq!(flights.len(), 1, "kept for the waiter");
        assert_eq!(second.await, Ok(3));
    }

    #[tokio::test]
    async fn a_flight_whose_callers_are_all_dropped_is_forgotten() {
        let flights = Flights::<&str, Outcome>::default();
        let mut first = Box::pin(flights.run(&"m", std::future::pending));
        let mut second = Box::pin(flights.run(&"m", std::future::pending));
        assert!(poll_once(&mut first).await.is_none());
        assert!(poll_once(&mut second).await.is_none());
        drop(first);
        assert_eq!(flights.len(), 1);
        drop(second);
        assert_eq!(flights.len(), 0, "nobody waits for it");
        assert_eq!(flights.run(&"m", || async { Ok(4) }).await, Ok(4));
    }

    /// Polls `f` once.
    async fn poll_once<F: Future + Unpin>(f: &mut F) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut *f).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }

    /// Polls every future on this task until all are ready.
    async fn join_all<Fut: Future + Unpin>(mut futs: Vec<Fut>) -> Vec<Fut::Output> {
        let mut outs: Vec<Option<Fut::Output>> = futs.iter().map(|_| None).collect();
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for (f, o) in futs.iter_mut().zip(outs.iter_mut()) {
                if o.is_none() {
                    match std::pin::Pin::new(&mut *f).poll(cx) {
                        std::task::Poll::Ready(v) => *o = Some(v),
                        std::task::Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
        .await;
        outs.into_iter().map(|o| o.expect("ready")).collect()
    }
}
