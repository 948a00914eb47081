//! [`CompileJobs`]: one compile (or load from the disk cache) per digest at a time, shared by
//! every caller that asks for the digest meanwhile, and stopped once none of them waits.
//!
//! Why: a task killed while its module compiles must not leave the compile running. A
//! compile may use minutes of CPU under its limit and holds one of the few turns of
//! [`compiler::MAX_CHILDREN`](super::compiler::MAX_CHILDREN), so a tenant that launches and
//! kills tasks of slow modules would keep the agent's compiles busy for nothing. Yet another
//! task waiting for the same module must not lose the compile either. [`Flights`] hands a
//! dropped caller's work to a waiter, which would start the compile over; here the work runs
//! on the blocking pool apart from its callers, each caller holds a share of it, and the last
//! share dropped raises the job's cancel flag, which the compile polls
//! ([`compiler::compile_in_child`](super::compiler::compile_in_child) stops waiting for a
//! turn, or kills its child).
//!
//! [`Flights`]: crate::flight::Flights

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use super::ExecError;

/// A job's outcome, once it has one.
type Outcome<T> = Option<Result<T, Arc<ExecError>>>;

/// Jobs under way, by digest.
pub(super) struct CompileJobs<T> {
    jobs: Mutex<HashMap<String, Job<T>>>,
}

/// One job: how many callers wait for it, its cancel flag, and its outcome to come.
struct Job<T> {
    callers: usize,
    cancel: Arc<AtomicBool>,
    done: watch::Receiver<Outcome<T>>,
}

/// A caller's share of the job of `digest`; the last one dropped ends the job.
struct Share<'a, T> {
    jobs: &'a CompileJobs<T>,
    digest: &'a str,
}

impl<T> Default for CompileJobs<T> {
    fn default() -> Self {
        CompileJobs {
            jobs: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> CompileJobs<T> {
    /// The outcome of the job of `digest`: the one under way, else a new one running `work` on
    /// tokio's blocking pool. `work` is given the job's cancel flag, raised when every caller
    /// has been dropped before the outcome (it should then give up as soon as it can; its
    /// outcome is not used). A job ends with its last caller: a later call starts afresh (so
    /// `work` should first look for a result a job just left).
    pub(super) async fn run<W>(&self, digest: &str, work: W) -> Result<T, ExecError>
    where
        W: FnOnce(&AtomicBool) -> Result<T, ExecError> + Send + 'static,
    {
        let (mut done, _share) = self.join(digest, work);
        let outcome = done.wait_for(Option::is_some).await.map(|o| o.clone());
        match outcome {
            Ok(Some(result)) => result.map_err(|e| e.duplicate()),
            _ => Err(ExecError::Join(format!(
                "the compile of {digest} ended without an outcome"
            ))),
        }
    }

    /// Joins the job of `digest`, starting it with `work` if there is none.
    fn join<'a, W>(
        &'a self,
        digest: &'a str,
        work: W,
    ) -> (watch::Receiver<Outcome<T>>, Share<'a, T>)
    where
        W: FnOnce(&AtomicBool) -> Result<T, ExecError> + Send + 'static,
    {
        let mut jobs = self.lock();
        let job = jobs.entry(digest.to_owned()).or_insert_with(|| {
            let cancel = Arc::new(AtomicBool::new(false));
            let (outcome, done) = watch::channel(None);
            let flag = cancel.clone();
            tokio::task::spawn_blocking(move || {
                let result = work(&flag).map_err(Arc::new);
                outcome.send_replace(Some(result));
            });
            Job {
                callers: 0,
                cancel,
                done,
            }
        });
        job.callers += 1;
        let done = job.done.clone();
        drop(jobs);
        (done, Share { jobs: self, digest })
    }

    /// How many jobs are under way.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }
}

impl<T> CompileJobs<T> {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Job<T>>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T> Drop for Share<'_, T> {
    fn drop(&mut self) {
        let mut jobs = self.jobs.lock();
        let Some(job) = jobs.get_mut(self.digest) else {
            return;
        };
        job.callers -= 1;
        if job.callers == 0 {
            if job.done.borrow().is_none() {
                tracing::debug!(
                    digest = self.digest,
                    "no task waits for this compile: stopping it"
                );
                job.cancel.store(true, Ordering::Relaxed);
            }
            jobs.remove(self.digest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// Work that counts its runs and waits until `release` is raised or it is cancelled:
    /// `Ok(7)`, or the `Join` error of a cancelled run; a cancelled run raises `cancelled`.
    fn work(
        runs: &Arc<AtomicUsize>,
        release: &Arc<AtomicBool>,
        cancelled: &Arc<AtomicBool>,
    ) -> impl FnOnce(&AtomicBool) -> Result<u32, ExecError> + Send + 'static {
        let (runs, release, cancelled) = (runs.clone(), release.clone(), cancelled.clone());
        move |cancel| {
            runs.fetch_add(1, Ordering::SeqCst);
            loop {
                if cancel.load(Ordering::Relaxed) {
                    cancelled.store(true, Ordering::SeqCst);
                    return Err(ExecError::Join("cancelled".into()));
                }
                if release.load(Ordering::SeqCst) {
                    return Ok(7);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    async fn until(what: &str, cond: impl Fn() -> bool) {
        for _ in 0..10_000 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("{what}: not within 10 s");
    }

    fn flags() -> (Arc<AtomicUsize>, Arc<AtomicBool>, Arc<AtomicBool>) {
        Default::default()
    }

    #[tokio::test]
    async fn callers_share_one_job_and_the_job_ends_with_them() {
        let jobs = Arc::new(CompileJobs::<u32>::default());
        let (runs, release, cancelled) = flags();
        let spawn = || {
            let (jobs, w) = (jobs.clone(), work(&runs, &release, &cancelled));
            tokio::spawn(async move { jobs.run("m", w).await })
        };
        let (a, b) = (spawn(), spawn());
        until("both callers joined", || {
            jobs.lock().get("m").is_some_and(|j| j.callers == 2)
        })
        .await;
        release.store(true, Ordering::SeqCst);
        assert_eq!(
            (a.await.unwrap().unwrap(), b.await.unwrap().unwrap()),
            (7, 7)
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1, "one run for both callers");
        assert_eq!(jobs.len(), 0, "the job ended with its callers");
        assert!(!cancelled.load(Ordering::SeqCst));
        // A later call runs again.
        assert_eq!(spawn().await.unwrap().unwrap(), 7);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_job_whose_callers_are_all_dropped_is_cancelled() {
        let jobs = Arc::new(CompileJobs::<u32>::default());
        let (runs, release, cancelled) = flags();
        let callers: Vec<_> = (0..3)
            .map(|_| {
                let (jobs, w) = (jobs.clone(), work(&runs, &release, &cancelled));
                tokio::spawn(async move { jobs.run("m", w).await })
            })
            .collect();
        until("the job runs", || runs.load(Ordering::SeqCst) == 1).await;
        until("every caller joined", || {
            jobs.lock().get("m").is_some_and(|j| j.callers == 3)
        })
        .await;
        for c in &callers {
            c.abort();
        }
        until("the job is cancelled", || cancelled.load(Ordering::SeqCst)).await;
        assert_eq!(jobs.len(), 0);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_job_goes_on_while_one_caller_still_waits() {
        let jobs = Arc::new(CompileJobs::<u32>::default());
        let (runs, release, cancelled) = flags();
        let spawn = || {
            let (jobs, w) = (jobs.clone(), work(&runs, &release, &cancelled));
            tokio::spawn(async move { jobs.run("m", w).await })
        };
        let (first, second) = (spawn(), spawn());
        until("both callers joined", || {
            jobs.lock().get("m").is_some_and(|j| j.callers == 2)
        })
        .await;
        first.abort();
        until("the first caller left", || {
            jobs.lock().get("m").is_some_and(|j| j.callers == 1)
        })
        .await;
        release.store(true, Ordering::SeqCst);
        assert_eq!(second.await.unwrap().unwrap(), 7);
        assert!(!cancelled.load(Ordering::SeqCst));
        assert_eq!(runs.load(Ordering::SeqCst), 1, "not started over");
    }
}
