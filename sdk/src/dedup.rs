//! [`SeenUpdates`]: the bounded memory of recently delivered status updates.
//!
//! The cluster delivers status updates at least once (an agent resends an update until its
//! acknowledgement comes back through the master), so a scheduler may receive the same update
//! several times. The core remembers the last `capacity` `(task id, uuid)` pairs it delivered and
//! drops repeats; the oldest pair is forgotten first, so memory stays bounded however long the
//! framework runs. A repeat of something forgotten is delivered again, which at-least-once
//! delivery allows.

use proto::{TaskId, UpdateId};
use std::collections::{HashSet, VecDeque};

/// The last `capacity` distinct updates seen, by task and uuid, oldest first.
#[derive(Debug)]
pub(crate) struct SeenUpdates {
    capacity: usize,
    /// For the membership test.
    set: HashSet<(TaskId, UpdateId)>,
    /// The same pairs in arrival order, to forget the oldest.
    order: VecDeque<(TaskId, UpdateId)>,
}

impl SeenUpdates {
    /// Remembers at most `capacity` updates (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            set: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Records the update; `false` when it is a repeat of one still remembered.
    pub(crate) fn insert(&mut self, task_id: &TaskId, uuid: &UpdateId) -> bool {
        let key = (task_id.clone(), uuid.clone());
        if !self.set.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.set.remove(&oldest);
            }
        }
        true
    }

    /// How many updates are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> (TaskId, UpdateId) {
        (TaskId::from(s), UpdateId::from(s))
    }

    #[test]
    fn a_repeat_is_refused_and_a_new_update_accepted() {
        let mut seen = SeenUpdates::new(4);
        let (t, u) = id("a");
        assert!(seen.insert(&t, &u));
        assert!(!seen.insert(&t, &u));
        assert!(seen.insert(&t, &UpdateId::from("b")), "same task, new uuid");
        assert!(
            seen.insert(&TaskId::from("other"), &u),
            "same uuid, other task"
        );
    }

    #[test]
    fn memory_never_exceeds_capacity_and_the_oldest_is_forgotten_first() {
        let mut seen = SeenUpdates::new(3);
        for s in ["a", "b", "c", "d", "e"] {
            let (t, u) = id(s);
            assert!(seen.insert(&t, &u));
            assert!(seen.len() <= 3);
        }
        assert_eq!(seen.len(), 3);
        let (t, u) = id("e");
        assert!(!seen.insert(&t, &u), "recent ones are still remembered");
        let (t, u) = id("a");
        assert!(seen.insert(&t, &u), "the oldest was forgotten");
    }
}
