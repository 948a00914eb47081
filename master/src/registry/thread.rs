//! [`RegistryThread`]: a blocking [`Registry`] on a thread of its own, behind
//! [`AsyncRegistry`].
//!
//! The embedded registry's commit ends in an `fdatasync` (0.15–0.2 ms on a virtio disk). Called
//! from the master's loop it held that loop's tokio worker thread for as long, and the tasks
//! queued on that worker waited for the disk too: the connection writer of a launch sent ahead
//! of the commit, the reader of an agent's status update (measured: an agent's update took
//! 0.2 ms to be read by the master while a commit ran), and the loop could read no input
//! during the commit. On its own thread, the commit is a future the loop polls beside its
//! inputs (see the driver's `pipeline`), and the worker runs those tasks meanwhile.
//!
//! The thread runs at a lower priority ([`REGISTRY_NICE`]): its commits are off the critical
//! path of what the pipeline sends ahead (a launch, an agent's update), yet they start right
//! when that path runs (an accept, a task's end), and on a small machine their CPU time (redb's
//! copy-on-write pages, the syscalls) took a core the path's next hop was woken onto. Lowered,
//! the kernel runs the woken tokio worker first; the commit runs in the gaps, and keeps its
//! share when the workers are busy (nice 10 weighs about a tenth of a worker).

use std::sync::mpsc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::{Registry, RegistryError, RegistryOp, Snapshot};
use crate::ha::{AsyncRegistry, BoxFuture};

/// One call for the registry thread, with where its result goes.
enum Job {
    Load(oneshot::Sender<Result<Snapshot, RegistryError>>),
    Apply(Vec<RegistryOp>, oneshot::Sender<Result<(), RegistryError>>),
    /// The thread's nice value, as the kernel reports it (tests).
    #[cfg(all(test, target_os = "linux"))]
    Nice(oneshot::Sender<i32>),
}

/// A [`Registry`] owned by a dedicated thread (`tessera-registry`); calls are queued to it in
/// order and answered through a oneshot. Dropping this waits for the thread to finish its call
/// and close the store, so a master started next on the same directory can open it.
pub struct RegistryThread {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl RegistryThread {
    /// Moves `registry` to a new thread.
    pub fn spawn<R: Registry + 'static>(mut registry: R) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("tessera-registry".into())
            .spawn(move || {
                lower_priority();
                for job in queue {
                    match job {
                        Job::Load(reply) => {
                            let _ = reply.send(registry.load());
                        }
                        Job::Apply(ops, reply) => {
                            let _ = reply.send(registry.apply(&ops));
                        }
                        #[cfg(all(test, target_os = "linux"))]
                        Job::Nice(reply) => {
                            // SAFETY: plain syscalls on the calling thread, no pointers.
                            let nice = unsafe {
                                libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t)
                            };
                            let _ = reply.send(nice);
                        }
                    }
                }
            })?;
        Ok(Self {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    fn call<T: Send + 'static>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, RegistryError>>) -> Job,
    ) -> BoxFuture<'static, Result<T, RegistryError>> {
        let (reply, answer) = oneshot::channel();
        let queued = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job(reply)).is_ok());
        Box::pin(async move {
            if !queued {
                return Err(gone());
            }
            answer.await.unwrap_or_else(|_| Err(gone()))
        })
    }
}

/// The registry thread's nice value (see the module's doc).
pub const REGISTRY_NICE: i32 = 10;

/// Lowers the calling thread's priority to [`REGISTRY_NICE`] (Linux: `setpriority` takes a
/// thread id); a failure is logged and changes nothing else.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain syscalls on the calling thread, no pointers.
        let tid = unsafe { libc::gettid() };
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, REGISTRY_NICE) } != 0 {
            let e = std::io::Error::last_os_error();
            tracing::warn!(error = %e, "cannot lower the registry thread's priority");
        }
    }
}

/// The thread ended (a panic in the store): no call can be answered.
fn gone() -> RegistryError {
    RegistryError::Store {
        what: "thread",
        source: "the registry thread ended".into(),
    }
}

impl AsyncRegistry for RegistryThread {
    fn load(&mut self) -> BoxFuture<'_, Result<Snapshot, RegistryError>> {
        self.call(Job::Load)
    }

    fn apply<'a>(
        &'a mut self,
        batch: &'a [RegistryOp],
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        let ops = batch.to_vec();
        self.call(move |reply| Job::Apply(ops, reply))
    }
}

impl Drop for RegistryThread {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::MemRegistry;
    use proto::Digest;

    #[tokio::test]
    async fn calls_are_answered_in_order_and_drop_closes_the_store() {
        let mem = MemRegistry::default();
        let mut r = RegistryThread::spawn(mem.clone()).unwrap();
        let blob = Digest::of(b"x");
        r.apply(&[RegistryOp::RemoveBlob(blob)]).await.unwrap();
        let snapshot = r.load().await.unwrap();
        assert!(snapshot.tasks.is_empty());
        drop(r);
        assert_eq!(mem.batches(), 1);
    }

    /// The thread runs at nice [`REGISTRY_NICE`], as the kernel reports it to the thread.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_registry_thread_runs_at_a_lower_priority() {
        let r = RegistryThread::spawn(MemRegistry::default()).unwrap();
        let (reply, nice) = oneshot::channel();
        r.jobs.as_ref().unwrap().send(Job::Nice(reply)).unwrap();
        assert_eq!(nice.await.unwrap(), REGISTRY_NICE);
    }
}
