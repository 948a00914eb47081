//! [`Pipeline`]: which of the core's actions the master's loop may execute now and which wait
//! for a registry commit, when the loop goes on handling input while a commit is in flight.
//!
//! The rule is "persist, then send": an action the core queued after a registry change waits
//! until that change is durable, so a crash can never leave a peer knowing what the registry
//! lost. A commit takes 0.15–0.2 ms of `fdatasync` on a virtio disk (more for a shared
//! registry), and a loop that read nothing meanwhile made every input arriving during a
//! commit wait for it: a launch's `Accept` waited ~170 µs before its `RunTask` went out. So
//! the loop keeps reading while one commit is in flight; the changes of the inputs handled
//! meanwhile gather into the next commit (started as soon as the one in flight is durable),
//! and each action is held until every change queued before it is durable. Only a send the
//! core says depends on no change ([`Master::goes_ahead`]: a `RunTask`, an agent's update
//! forwarded to its framework, both resent or adopted if a restart loses the change) goes out
//! at once, and even it never overtakes on its connection a held message whose order against
//! it matters ([`fences`]: a handshake, a close, an executor's message or end, a kill) or a held
//! update of the same task.
//!
//! Pure bookkeeping, no I/O: the loop in `term.rs` drives it, the tests below check its order.

use crate::core::{Action, ConnId, Master};
use crate::registry::RegistryOp;
use proto::{FrameworkId, Message, TaskId};
use std::collections::{HashMap, VecDeque};

/// Actions held, or changes gathered for the next commit, past which the loop stops reading
/// input until a commit is durable.
pub(super) const MAX_WAITING: usize = 65_536;

/// Something that waits for a commit: an action of the core, or the driver's promise to an
/// upload that its blob record is durable.
// Unboxed like the core's own queue of actions: nearly everything held is an action.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(super) enum Held<A> {
    /// A `Send` or `Close` of the core.
    Action(Action),
    /// An acknowledgement the driver owes.
    Ack(A),
}

/// Commits in sequence and what waits for each; see the module's doc.
#[derive(Debug)]
pub(super) struct Pipeline<A> {
    /// Changes for the next commit, not started yet.
    next: Vec<RegistryOp>,
    /// Commits started so far (the last one may be in flight).
    started: u64,
    /// Commits durable so far.
    durable: u64,
    /// What waits, in order, each with the commit it waits for (never decreasing).
    held: VecDeque<(u64, Held<A>)>,
    /// Connections with a held message that fences them ([`fences`]), and how many.
    barred: HashMap<ConnId, usize>,
    /// Held updates by connection and task, and how many.
    held_updates: HashMap<(ConnId, FrameworkId, TaskId), usize>,
}

impl<A> Default for Pipeline<A> {
    fn default() -> Self {
        Self {
            next: Vec::new(),
            started: 0,
            durable: 0,
            held: VecDeque::new(),
            barred: HashMap::new(),
            held_updates: HashMap::new(),
        }
    }
}

impl<A> Pipeline<A> {
    /// Adds changes to the next commit.
    pub(super) fn persist(&mut self, ops: impl IntoIterator<Item = RegistryOp>) {
        self.next.extend(ops);
    }

    /// The commit something queued now must wait for: the next one if it has changes, else
    /// the last one started (already durable when nothing is in flight).
    fn needs(&self) -> u64 {
        if self.next.is_empty() {
            self.started
        } else {
            self.started + 1
        }
    }

    /// Takes one drained action of the core: returns it if it may be executed now, or keeps
    /// it (a `Persist` joins the next commit; a send or close waits for the changes before it).
    pub(super) fn route(&mut self, action: Action) -> Option<Action> {
        if let Action::Persist(ops) = action {
            self.persist(ops);
            return None;
        }
        let needs = self.needs();
        if needs <= self.durable {
            // Nothing is held (what is held waits for a later commit than this), so nothing
            // is overtaken.
            return Some(action);
        }
        if let Action::Send { conn, msg } = &action {
            if Master::goes_ahead(msg) && !self.would_overtake(*conn, msg) {
                return Some(action);
            }
        }
        self.hold(needs, Held::Action(action));
        None
    }

    /// Keeps `ack` until every change queued so far is durable, or returns it if they are.
    pub(super) fn ack(&mut self, ack: A) -> Option<A> {
        let needs = self.needs();
        if needs <= self.durable {
            return Some(ack);
        }
        self.hold(needs, Held::Ack(ack));
        None
    }

    /// Whether `msg` going to `conn` now would pass something held that it must not pass.
    fn would_overtake(&self, conn: ConnId, msg: &Message) -> bool {
        if self.barred.contains_key(&conn) {
            return true;
        }
        match msg {
            Message::Update { status } => self.held_updates.contains_key(&(
                conn,
                status.framework_id.clone(),
                status.task_id.clone(),
            )),
            _ => false,
        }
    }

    fn hold(&mut self, needs: u64, held: Held<A>) {
        match bar(&held) {
            Some(Bar::Conn(conn)) => *self.barred.entry(conn).or_default() += 1,
            Some(Bar::Update(key)) => *self.held_updates.entry(key).or_default() += 1,
            None => {}
        }
        self.held.push_back((needs, held));
    }

    /// The next commit to write, if none is in flight and changes wait for one; it is in
    /// flight until [`Pipeline::committed`].
    pub(super) fn start(&mut self) -> Option<Vec<RegistryOp>> {
        if self.in_flight() || self.next.is_empty() {
            return None;
        }
        self.started += 1;
        Some(std::mem::take(&mut self.next))
    }

    /// Whether a commit is in flight.
    pub(super) fn in_flight(&self) -> bool {
        self.started > self.durable
    }

    /// The commit in flight is durable: returns, in order, what waited for it.
    pub(super) fn committed(&mut self) -> Vec<Held<A>> {
        self.durable = self.started;
        let mut out = Vec::new();
        while self.held.front().is_some_and(|(n, _)| *n <= self.durable) {
            let (_, held) = self.held.pop_front().expect("checked");
            match bar(&held) {
                Some(Bar::Conn(conn)) => release(&mut self.barred, conn),
                Some(Bar::Update(key)) => release(&mut self.held_updates, key),
                None => {}
            }
            out.push(held);
        }
        out
    }

    /// How many actions and acknowledgements wait.
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.held.len()
    }

    /// Whether the loop may read more input: not while [`MAX_WAITING`] actions or changes
    /// wait for a slow write (the input queue, then the peers' streams, push back as they did
    /// when the loop read nothing during a write).
    pub(super) fn has_room(&self) -> bool {
        self.held.len() < MAX_WAITING && self.next.len() < MAX_WAITING
    }
}

/// What a held item keeps later sends from passing while it waits.
enum Bar {
    /// Every send on the connection ([`fences`], or a `Close`).
    Conn(ConnId),
    /// Updates of this task on this connection.
    Update((ConnId, FrameworkId, TaskId)),
}

/// The bar `held` raises, if any (counted while it is held, released when it goes).
fn bar<A>(held: &Held<A>) -> Option<Bar> {
    match held {
        Held::Action(Action::Close { conn, .. }) => Some(Bar::Conn(*conn)),
        Held::Action(Action::Send { conn, msg }) if fences(msg) => Some(Bar::Conn(*conn)),
        Held::Action(Action::Send {
            conn,
            msg: Message::Update { status },
        }) => Some(Bar::Update((
            *conn,
            status.framework_id.clone(),
            status.task_id.clone(),
        ))),
        _ => None,
    }
}

/// Whether a held `msg` keeps a send that goes ahead from passing it on its connection: the
/// handshakes (nothing may precede them), and the messages a framework or agent relates to the
/// updates and launches around them: an executor's message (sent before its task's update by
/// the agent) or end, a message to an executor or its kill (a launch into that executor must
/// follow it), a task's kill.
fn fences(msg: &Message) -> bool {
    matches!(
        msg,
        Message::Registered { .. }
            | Message::Subscribed { .. }
            | Message::FrameworkMessage { .. }
            | Message::ExecutorExited { .. }
            | Message::ExecutorMessage { .. }
            | Message::KillExecutor { .. }
            | Message::KillTask { .. }
    )
}

/// Counts one held item of `key` as gone.
fn release<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: K) {
    if let Some(n) = counts.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests;
