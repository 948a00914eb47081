//! Kernel CPU quotas for paced tasks ([`ExecutorConfig::cpu_quota_cgroup`]): a task offered
//! less than one core that overdraws its share (its pacer says so through its `Handoff`, see
//! `pacing.rs`) moves to a thread of its own, in a cgroup (v1 `cpu` controller) whose CFS quota
//! is its share, and the kernel paces it from then on. This is what Mesos' agent does with
//! `--cgroups_enable_cfs`.
//!
//! Why: a guest paced by sleeping between bursts is preempted 2–4× as often while it runs as
//! one the kernel throttles, and on a loaded machine a memory-bound guest paid 1.1–1.45× the
//! CPU time for the same work at 0.1 cpus (BENCHMARKS.md, "Share efficiency"). The kernel's
//! throttling does not. The price is a thread and a cgroup per CPU-bound paced task while it
//! runs (about 196 KiB and 1 ms to start); a task that sleeps or waits on I/O never overdraws
//! and stays on the shared runtime at no cost.
//!
//! Accounting stays the thread's CPU clock, exact. Kills stay prompt: a kill lifts the quota
//! first, so a throttled thread runs at once to its next fuel yield and stops there.
//!
//! [`ExecutorConfig::cpu_quota_cgroup`]: super::ExecutorConfig::cpu_quota_cgroup

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// CFS period of a task group: 100 ms, as the kernel's default and the pacer's.
const PERIOD_US: u64 = 100_000;
/// The kernel's least quota (1 ms); a share below 0.01 cpus gets a longer period instead.
const MIN_QUOTA_US: u64 = 1_000;
/// The kernel's longest period (1 s).
const MAX_PERIOD_US: u64 = 1_000_000;

/// The period and quota, in microseconds, that give `cpus_milli` thousandths of a core.
pub(crate) fn period_and_quota(cpus_milli: u64) -> (u64, u64) {
    let milli = cpus_milli.clamp(1, 999);
    let period = PERIOD_US
        .max((MIN_QUOTA_US * 1000).div_ceil(milli))
        .min(MAX_PERIOD_US);
    (period, (period * milli / 1000).max(MIN_QUOTA_US))
}

/// The parent cgroup paced tasks' groups are made in, checked writable when the executor
/// starts.
#[derive(Debug)]
pub(crate) struct QuotaParent {
    dir: PathBuf,
    next: AtomicU64,
}

impl QuotaParent {
    /// Makes `dir` (and its parents) and checks that a task group can be made and removed in
    /// it.
    pub(crate) fn new(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        // A directory of the cpu controller has its control files; any other directory would
        // take the writes below as plain files and throttle nothing.
        if !dir.join("cpu.cfs_quota_us").exists() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a directory of the cgroup v1 cpu controller (no cpu.cfs_quota_us)",
            ));
        }
        let parent = QuotaParent {
            dir: dir.to_owned(),
            next: AtomicU64::new(0),
        };
        parent.remove_orphans();
        parent.group(500)?.remove()?;
        Ok(parent)
    }

    /// Removes the groups of processes that are gone (a runtime process killed with its
    /// tasks leaves theirs behind, empty). A group with a thread still in it cannot be removed
    /// and stays.
    fn remove_orphans(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.split_once('-'))
                .and_then(|(pid, _)| pid.parse::<libc::pid_t>().ok())
            else {
                continue;
            };
            if pid != std::process::id() as libc::pid_t && !alive(pid) {
                match std::fs::remove_dir(entry.path()) {
                    Ok(()) => {
                        tracing::info!(group = %entry.path().display(), "removed the cgroup of a task of a process gone")
                    }
                    Err(e) => {
                        tracing::warn!(group = %entry.path().display(), error = %e, "could not remove an orphaned task cgroup")
                    }
                }
            }
        }
    }

    /// A new group with the quota of `cpus_milli`, named by this process and a counter (a
    /// runtime process and its successor may share the parent).
    pub(crate) fn group(&self, cpus_milli: u64) -> io::Result<TaskGroup> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = self.dir.join(format!("{}-{n}", std::process::id()));
        std::fs::create_dir(&dir)?;
        let (period, quota) = period_and_quota(cpus_milli);
        let group = TaskGroup {
            dir,
            parent: self.dir.clone(),
            quota,
        };
        std::fs::write(group.dir.join("cpu.cfs_period_us"), period.to_string())?;
        Ok(group)
    }
}

/// One paced task's cgroup. Removed by [`TaskGroup::remove`] (or on drop) once its thread has
/// left it.
#[derive(Debug)]
pub(crate) struct TaskGroup {
    dir: PathBuf,
    parent: PathBuf,
    /// The quota, set by [`TaskGroup::join`].
    quota: u64,
}

impl TaskGroup {
    /// Moves the calling thread into the group (its later threads are born in it), then sets
    /// the quota. The kernel starts the group's first period when the quota is set, so setting
    /// it here rather than when the group is made keeps the time before the task starts out of
    /// that period: a task that started late in it would get the rest of its quota and a whole
    /// new one soon after.
    pub(crate) fn join(&self) -> io::Result<()> {
        std::fs::write(self.dir.join("tasks"), this_thread().to_string())?;
        std::fs::write(self.dir.join("cpu.cfs_quota_us"), self.quota.to_string())?;
        CURRENT.set(Some(self.dir.clone()));
        Ok(())
    }

    /// Moves the calling thread back to the parent group (unthrottled).
    pub(crate) fn leave(&self) -> io::Result<()> {
        CURRENT.set(None);
        std::fs::write(self.parent.join("tasks"), this_thread().to_string())
    }

    /// What lifts the quota, for a kill to run the thread at once.
    pub(crate) fn lifter(&self) -> QuotaLifter {
        QuotaLifter(self.dir.join("cpu.cfs_quota_us"))
    }

    /// Removes the group (empty once its threads have left or ended; the kernel may take a
    /// moment to see an ended thread gone, hence the retries).
    pub(crate) fn remove(mut self) -> io::Result<()> {
        let r = self.try_remove();
        // Done: nothing left for the drop to remove.
        self.dir = PathBuf::new();
        r
    }

    fn try_remove(&self) -> io::Result<()> {
        let mut last = Ok(());
        for _ in 0..50 {
            match std::fs::remove_dir(&self.dir) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    last = Err(e);
                    std::thread::sleep(Duration::from_millis(2));
                }
                r => return r,
            }
        }
        last
    }
}

impl Drop for TaskGroup {
    fn drop(&mut self) {
        if self.dir.as_os_str().is_empty() {
            return;
        }
        if let Err(e) = self.try_remove() {
            tracing::warn!(group = %self.dir.display(), error = %e, "could not remove a task's cgroup");
        }
    }
}

/// Lifts a task group's quota (see [`TaskGroup::lifter`]).
#[derive(Debug, Clone)]
pub(crate) struct QuotaLifter(PathBuf);

impl QuotaLifter {
    /// A lifter of the quota file at `path` (tests of the kill's side).
    #[cfg(test)]
    pub(crate) fn at(path: PathBuf) -> Self {
        QuotaLifter(path)
    }

    /// Lifts the quota; a group already gone needs nothing.
    pub(crate) fn lift(&self) {
        let _ = std::fs::write(&self.0, "-1");
    }
}

thread_local! {
    /// The group the calling thread's task runs in, for [`throttled_time`].
    static CURRENT: std::cell::RefCell<Option<PathBuf>> = const { std::cell::RefCell::new(None) };
}

/// Time the kernel has throttled the calling thread's task group (`cpu.stat`'s
/// `throttled_time`), or zero outside one: the kernel's part of a task's `cpu_paused`.
pub(crate) fn throttled_time() -> Duration {
    CURRENT.with_borrow(|dir| {
        dir.as_ref()
            .and_then(|d| std::fs::read_to_string(d.join("cpu.stat")).ok())
            .and_then(|stat| parse_throttled_time(&stat))
            .unwrap_or_default()
    })
}

/// `throttled_time <ns>` of a `cpu.stat`.
fn parse_throttled_time(stat: &str) -> Option<Duration> {
    stat.lines()
        .find_map(|l| l.strip_prefix("throttled_time "))
        .and_then(|v| v.trim().parse().ok())
        .map(Duration::from_nanos)
}

/// Whether a process with this id exists.
fn alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

fn this_thread() -> libc::pid_t {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttled_time_is_read_from_cpu_stat() {
        let stat = "nr_periods 42\nnr_throttled 40\nthrottled_time 3960123456\n";
        assert_eq!(
            parse_throttled_time(stat),
            Some(Duration::from_nanos(3_960_123_456))
        );
        assert_eq!(parse_throttled_time("nr_periods 1\n"), None);
        // Outside a task group: nothing.
        assert_eq!(throttled_time(), Duration::ZERO);
    }

    #[test]
    fn a_share_is_its_quota_of_a_100_ms_period_and_tiny_shares_get_longer_periods() {
        assert_eq!(period_and_quota(500), (100_000, 50_000));
        assert_eq!(period_and_quota(100), (100_000, 10_000));
        assert_eq!(period_and_quota(10), (100_000, 1_000));
        // 0.005 cpus: 1 ms of quota needs a 200 ms period.
        assert_eq!(period_and_quota(5), (200_000, 1_000));
        // 0.001 cpus: the longest period, 1 s, with the least quota.
        assert_eq!(period_and_quota(1), (1_000_000, 1_000));
        assert_eq!(period_and_quota(0), (1_000_000, 1_000));
    }
}
