//! The host side of metering by rewriting ([`Metering::Rewrite`](super::Metering::Rewrite),
//! `meter.rs`): the `tick` import a rewritten module calls each time its budget of operators
//! runs out. It does what a fuel yield does on the fuel path: hands the guest its next budget
//! (about a millisecond of one core's work), yields to tokio so that the pacer accounts for the
//! CPU time and a kill or timeout can land, and stops a guest whose CPU-time budget
//! ([`TaskSpec::max_cpu`](super::TaskSpec::max_cpu)) is used up.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use wasmtime::{Caller, Linker};

use super::meter::{TICK_MODULE, TICK_NAME};
use super::pacing::TaskClock;

/// How long a rewritten guest runs between two yields, as fuel yields about every millisecond
/// of one core's work. Measured on a cheap wall clock from the later of the last yield and the
/// start of the current poll (time the task was not polled does not count).
pub(super) const YIELD_EVERY: Duration = Duration::from_millis(1);

/// A rewritten task's grants of operators, its yields and its CPU-time budget.
///
/// The pass charges each check an upper bound of the operators run since the last one (a
/// loop's whole body, both arms of its branches, the whole of the functions it calls without
/// checks), so operators are no measure of time: ticks come far more often than a grant's
/// worth of work (json: every ~20 µs), and decide on clocks instead. A tick reads a wall clock
/// (no system call) to decide whether to yield, and the task's CPU clock only if it has a
/// CPU-time budget, which is then exact to a grant's run.
#[derive(Debug)]
pub(super) struct Ticks {
    /// Operators per grant: the tick's frequency, not the budget.
    per_tick: u64,
    /// Operators granted so far.
    granted: u64,
    /// The task's CPU time, as its pacer counts it.
    clock: Arc<TaskClock>,
    /// When the task last yielded ([`TaskClock::wall`]'s units).
    last_yield: u64,
    /// The task's CPU-time budget, if any.
    budget: Option<Duration>,
}

impl Ticks {
    /// Grants of `per_tick` operators for a task whose pacer publishes to `clock`, stopped at
    /// `budget` of CPU time if given.
    pub(super) fn new(per_tick: u64, clock: Arc<TaskClock>, budget: Option<Duration>) -> Self {
        Ticks {
            per_tick: per_tick.clamp(1, i64::MAX as u64),
            granted: 0,
            clock,
            last_yield: 0,
            budget,
        }
    }

    /// The next grant and whether to yield first, or `BudgetUsedUp`, on the clocks as they
    /// read now (the task's CPU clock only if it has a budget).
    fn tick(&mut self) -> Result<(i64, bool), BudgetUsedUp> {
        let clock = self.clock.clone();
        self.step(TaskClock::wall(), clock.poll_began(), || clock.now())
    }

    /// [`Ticks::tick`] on given readings: the wall clock `now` and the poll's start (both in
    /// [`TaskClock::wall`]'s units), and the task's CPU time, read only if there is a budget.
    fn step(
        &mut self,
        now: u64,
        poll_began: u64,
        cpu: impl FnOnce() -> Duration,
    ) -> Result<(i64, bool), BudgetUsedUp> {
        if self.budget.is_some_and(|budget| cpu() >= budget) {
            return Err(BudgetUsedUp);
        }
        self.granted = self.granted.saturating_add(self.per_tick);
        let since = self.last_yield.max(poll_began);
        let yields = now.saturating_sub(since) >= YIELD_EVERY.as_nanos() as u64;
        if yields {
            self.last_yield = now;
        }
        Ok((self.per_tick as i64, yields))
    }

    /// Operators the guest was charged: what it was granted less what is `unspent` of the last
    /// grant (the module's budget global; negative once it has overdrawn, before its next
    /// tick). Reported as the task's fuel.
    pub(super) fn used(&self, unspent: i64) -> u64 {
        self.granted.saturating_sub(unspent.max(0) as u64)
    }
}

/// The trap of a rewritten guest whose CPU-time budget is used up: on this path, what
/// `Trap::OutOfFuel` is on the fuel path.
#[derive(Debug, thiserror::Error)]
#[error("CPU-time budget used up")]
pub(super) struct BudgetUsedUp;

/// Links the `tick` import: `get` finds the task's [`Ticks`] in its store's data.
pub(super) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut Ticks,
) -> wasmtime::Result<()> {
    linker.func_wrap_async(
        TICK_MODULE,
        TICK_NAME,
        move |mut caller: Caller<'_, T>, (): ()| {
            let tick = get(caller.data_mut()).tick();
            Box::new(async move {
                let (grant, yields) = tick?;
                if yields {
                    YieldOnce(false).await;
                }
                Ok(grant)
            })
        },
    )?;
    Ok(())
}

/// Pending once, having woken its task: what wasmtime's fuel yield does, so that the pacer
/// (`pacing.rs`) sees a yield.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On given readings (the wall clock in its nanoseconds, the task's CPU time), so that
    /// "within the same millisecond" does not depend on this thread being scheduled.
    #[test]
    fn a_tick_yields_after_a_millisecond_and_stops_at_the_budget() {
        const MS: u64 = 1_000_000;
        let clock = Arc::new(TaskClock::default());
        let mut t = Ticks::new(100, clock, Some(Duration::from_millis(30)));
        let cpu = |ms: u64| move || Duration::from_millis(ms);
        assert_eq!(t.step(2 * MS, 0, cpu(2)).unwrap(), (100, true));
        assert_eq!(
            t.step(2 * MS + MS / 2, 0, cpu(2)).unwrap(),
            (100, false),
            "no yield within the same millisecond"
        );
        assert!(t.step(3 * MS, 0, cpu(3)).unwrap().1);
        // A poll that began after the last yield counts from its start: time the task was
        // not polled does not count.
        assert!(!t.step(10 * MS, 9 * MS + MS / 2, cpu(4)).unwrap().1);
        assert!(t.step(11 * MS, 9 * MS + MS / 2, cpu(5)).unwrap().1);
        assert!(t.step(12 * MS, 0, cpu(30)).is_err(), "past the budget");
        assert_eq!(t.used(-3), 500);
        assert_eq!(t.used(20), 480);
    }

    /// The same on the real clocks, with only what a descheduled thread cannot break: time
    /// that passes makes a yield and uses the budget.
    #[test]
    fn on_the_real_clocks_a_tick_yields_and_stops_at_the_budget() {
        let clock = Arc::new(TaskClock::default());
        let _origin = TaskClock::wall(); // a poll would have set it (its start is 0 here)
        let mut t = Ticks::new(100, clock, Some(Duration::from_millis(30)));
        // The clock reads this thread's CPU time since the (unset) poll start: burn some.
        let spin = |d: Duration| {
            let t0 = crate::executor::pacing::thread_cpu_time();
            while crate::executor::pacing::thread_cpu_time() - t0 < d {}
        };
        spin(Duration::from_millis(2));
        assert_eq!(t.tick().unwrap(), (100, true));
        spin(Duration::from_millis(2));
        assert!(t.tick().unwrap().1);
        spin(Duration::from_millis(40));
        assert!(t.tick().is_err(), "past the budget");
    }
}
