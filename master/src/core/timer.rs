//! The master's one timer table, after `quinn_proto::connection::timer::TimerTable`: every
//! timed mechanism is a [`Timer`] variant with at most one deadline, kept in an ordered set so
//! that [`Master::poll_timeout`](super::Master::poll_timeout) is the first entry, not a scan
//! over agents and frameworks.

use proto::{AgentId, FrameworkId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// Something the master does at an instant. The variant order is the order in which
/// [`Master::handle_timeout`](super::Master::handle_timeout) runs what is due at once: removals
/// and teardowns free resources and rescind offers before offers time out, heartbeats go out,
/// and the allocation round comes last so it sees all of that.
///
/// Refuse filters have no timer: the allocator compares a filter's end with `now` itself, and
/// expired filters are pruned at the next allocation round, so waking up for one would do
/// nothing.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    /// A disconnected agent that has not re-registered is removed; its tasks are TASK_GONE.
    AgentRemoval(AgentId),
    /// A disconnected framework that has not re-subscribed is torn down.
    FrameworkFailover(FrameworkId),
    /// An unanswered offer (by its counter) is rescinded (only with `offer_timeout`).
    OfferExpiry(u64),
    /// Heartbeats go to every connected framework.
    Heartbeat,
    /// The allocation round: periodic, and brought forward to "now" by anything that frees or
    /// adds resources.
    Allocation,
    /// The sweep of blobs unused for the grace period (only with `blob_gc_grace`).
    BlobGc,
    /// A query sent to an agent is answered with a timeout (see `queries`).
    Query(u64),
}

impl Timer {
    /// The phase of [`Master::handle_timeout`](super::Master::handle_timeout) it runs in.
    fn phase(&self) -> u8 {
        match self {
            Timer::AgentRemoval(_) => 0,
            Timer::FrameworkFailover(_) => 1,
            Timer::OfferExpiry(_) => 2,
            Timer::Heartbeat => 3,
            Timer::Allocation => 4,
            Timer::BlobGc => 5,
            Timer::Query(_) => 6,
        }
    }
}

/// Deadlines by timer and the same ordered by time.
#[derive(Clone, Debug, Default)]
pub(super) struct TimerTable {
    /// Each armed timer's deadline, to cancel or reschedule it.
    at: BTreeMap<Timer, Instant>,
    /// The same, earliest first: `poll_timeout` is its first entry.
    order: BTreeSet<(Instant, Timer)>,
}

impl TimerTable {
    /// Arms `timer` at `when`, replacing any earlier setting.
    pub(super) fn set(&mut self, timer: Timer, when: Instant) {
        if let Some(old) = self.at.insert(timer.clone(), when) {
            self.order.remove(&(old, timer.clone()));
        }
        self.order.insert((when, timer));
    }

    /// Arms `timer` at `when` unless it is already armed earlier.
    pub(super) fn set_earliest(&mut self, timer: Timer, when: Instant) {
        if self.get(&timer).is_none_or(|t| when < t) {
            self.set(timer, when);
        }
    }

    /// Arms `timer` at `when`, or disarms it for `None` ("never").
    pub(super) fn set_or_stop(&mut self, timer: Timer, when: Option<Instant>) {
        match when {
            Some(when) => self.set(timer, when),
            None => {
                self.stop(&timer);
            }
        }
    }

    /// Disarms `timer`; returns its deadline if it was armed.
    pub(super) fn stop(&mut self, timer: &Timer) -> Option<Instant> {
        let when = self.at.remove(timer)?;
        self.order.remove(&(when, timer.clone()));
        Some(when)
    }

    /// When `timer` is armed for, if it is.
    pub(super) fn get(&self, timer: &Timer) -> Option<Instant> {
        self.at.get(timer).copied()
    }

    /// The earliest deadline.
    pub(super) fn next(&self) -> Option<Instant> {
        self.order.first().map(|(t, _)| *t)
    }

    /// Disarms and returns every timer due at `now`, in the order they must run: by
    /// [`Timer`] phase, offers by deadline within theirs, agents and frameworks by id.
    pub(super) fn take_due(&mut self, now: Instant) -> Vec<(Instant, Timer)> {
        let mut due = Vec::new();
        while let Some((t, _)) = self.order.first() {
            if *t > now {
                break;
            }
            if let Some((t, timer)) = self.order.pop_first() {
                self.at.remove(&timer);
                due.push((t, timer));
            }
        }
        due.sort_by(|(ta, a), (tb, b)| {
            let when = |t: &Instant, x: &Timer| matches!(x, Timer::OfferExpiry(_)).then_some(*t);
            (a.phase(), when(ta, a), a).cmp(&(b.phase(), when(tb, b), b))
        });
        due
    }

    /// How many timers are armed (for the audit).
    pub(super) fn len(&self) -> usize {
        debug_assert_eq!(self.at.len(), self.order.len());
        self.order.len()
    }

    /// Armed timers, earliest first (for the audit).
    pub(super) fn iter(&self) -> impl Iterator<Item = &(Instant, Timer)> {
        self.order.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn first_entry_is_the_earliest_and_rescheduling_replaces() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut t = TimerTable::default();
        assert_eq!(t.next(), None);
        t.set(Timer::Heartbeat, t0 + s(5));
        t.set(Timer::Allocation, t0 + s(1));
        assert_eq!(t.next(), Some(t0 + s(1)));
        t.set(Timer::Allocation, t0 + s(9));
        assert_eq!(t.next(), Some(t0 + s(5)));
        t.set_earliest(Timer::Allocation, t0 + s(10));
        assert_eq!(t.get(&Timer::Allocation), Some(t0 + s(9)));
        t.set_earliest(Timer::Allocation, t0);
        assert_eq!(t.next(), Some(t0));
        assert_eq!(t.stop(&Timer::Allocation), Some(t0));
        assert_eq!(t.len(), 1);
        t.set_or_stop(Timer::Heartbeat, None);
        assert_eq!(t.next(), None);
    }

    #[test]
    fn due_timers_come_out_by_phase() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut t = TimerTable::default();
        t.set(Timer::Allocation, t0);
        t.set(Timer::OfferExpiry(2), t0 + s(1));
        t.set(Timer::OfferExpiry(1), t0 + s(2));
        t.set(Timer::AgentRemoval(AgentId("a".into())), t0 + s(3));
        t.set(Timer::Heartbeat, t0 + s(9));
        let due: Vec<Timer> = t.take_due(t0 + s(3)).into_iter().map(|x| x.1).collect();
        assert_eq!(
            due,
            vec![
                Timer::AgentRemoval(AgentId("a".into())),
                Timer::OfferExpiry(2),
                Timer::OfferExpiry(1),
                Timer::Allocation,
            ]
        );
        assert_eq!(t.next(), Some(t0 + s(9)));
    }
}
