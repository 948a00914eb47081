//! The scheduler's sans-IO core: the subscription, calls queued while the link is down,
//! auto-acknowledgement and duplicate-update filtering, as one deterministic state machine.
//!
//! ```text
//! driver ─▶ handle_connected · handle_message · handle_disconnected · handle_write_failed ────┐
//! app ────▶ accept · decline · kill · acknowledge · reconcile · revive · suppress · teardown ─┤
//!                                                                               SchedulerCore ┤
//! driver ◀─ poll_transmit: the next Message to write on the control stream ───────────────────┤
//! app ◀──── poll_event: Subscribed · Offers · Rescind · Update · Error · Disconnected ────────┘
//! ```
//!
//! The core opens no sockets, reads no clock and spawns nothing; it depends on `proto` alone
//! (and `tracing` for a log line). The same inputs always yield the same outputs, so it can be
//! tested call by call, and the virtual-time cluster of `tests/` can run it as a scheduler.
//!
//! # Calling contract
//! Modelled on `quinn_proto::Connection`. The methods are of four kinds: getters
//! ([`SchedulerCore::framework_id`], ...), `handle_*` inputs from the driver, the application's
//! calls, and the `poll_*` outputs.
//! - After every input or call, drain [`SchedulerCore::poll_transmit`] until it returns `None`
//!   and write the messages, in that order, on the current control stream; then drain
//!   [`SchedulerCore::poll_event`] and hand the events to the application.
//! - Report every new control stream (handshake done) with
//!   [`SchedulerCore::handle_connected`]: the core answers with a `Subscribe` under the
//!   framework id it has (the one from the options, then the one the master assigned).
//! - Report every lost stream with [`SchedulerCore::handle_disconnected`], or with
//!   [`SchedulerCore::handle_write_failed`] when writing a message from `poll_transmit` failed.
//!   Messages not written are kept and sent after the next subscription; the extra report of a
//!   link already reported lost is ignored.
//! - Calls made before the master's `Subscribed` on the current stream (or while there is no
//!   stream) are queued and sent once each, in call order, right after it.
//! - Once [`SchedulerCore::poll_transmit`] has returned the `Teardown`,
//!   [`SchedulerCore::is_finished`] is true: the driver finishes the stream and stops. A finished
//!   core ignores every input and call.
//!
//! # Example: driving the core by hand
//! ```
//! use proto::{FrameworkInfo, Message};
//! use tessera_sdk::{Event, SchedulerCore};
//! # let framework = FrameworkInfo { priority: 0, name: "fw".into(), role: "*".into(),
//! #     principal: "fw".into(), id: None, failover_timeout_ms: 60_000 };
//! let mut core = SchedulerCore::new(framework, true);
//! core.revive(); // no link yet: queued
//! core.handle_connected();
//! assert!(matches!(core.poll_transmit(), Some(Message::Subscribe { .. })));
//! assert_eq!(core.poll_transmit(), None); // the revive waits for the subscription
//! let subscribed = Message::Subscribed { framework_id: "F1".into(), heartbeat_interval_ms: 5000 };
//! core.handle_message(subscribed);
//! assert_eq!(core.poll_transmit(), Some(Message::Revive));
//! assert_eq!(core.poll_event(), Some(Event::Subscribed { framework_id: "F1".into() }));
//! ```
//!
//! Nothing here depends on time, so no input takes a `now` and there is no `poll_timeout`: the
//! two waits a scheduler has (the redial backoff and the deadline of the first subscription)
//! are about the transport and stay in the driver.

#[cfg(test)]
mod tests;

use crate::dedup::SeenUpdates;
use proto::{
    AgentId, ExecutorId, Filters, FrameworkId, FrameworkInfo, Message, Offer, OfferId, TaskId,
    TaskInfo, TaskStatus,
};
use std::collections::VecDeque;

/// How many recent updates are remembered to drop duplicates.
pub const DEDUP_WINDOW: usize = 65_536;

/// What the master tells a scheduler.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Subscribed (again, after a reconnection) under this id.
    Subscribed {
        /// The framework's id.
        framework_id: FrameworkId,
    },
    /// New offers.
    Offers(Vec<Offer>),
    /// An offer is gone (its agent was lost, or it timed out).
    Rescind(OfferId),
    /// A task's status changed (duplicates already dropped).
    Update(TaskStatus),
    /// Bytes from one of the framework's executors (at most once, as in Mesos).
    Message {
        /// Where the executor runs.
        agent_id: AgentId,
        /// The executor.
        executor_id: ExecutorId,
        /// The payload.
        data: Vec<u8>,
    },
    /// One of the framework's executors ended; the updates of its tasks follow as usual.
    ExecutorExited {
        /// Where it ran.
        agent_id: AgentId,
        /// The executor.
        executor_id: ExecutorId,
        /// True when it failed (trap, unasked exit, outgrown envelope, forced kill).
        failed: bool,
        /// What happened.
        message: String,
    },
    /// A call failed.
    Error(String),
    /// The link to the master dropped; the SDK is reconnecting.
    Disconnected(String),
}

/// Where the control stream stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinkState {
    /// No stream: calls wait in `pending`.
    Down,
    /// `Subscribe` sent on a new stream, `Subscribed` not yet back: calls still wait.
    Subscribing,
    /// Subscribed on the current stream: calls go straight out.
    Subscribed,
}

/// A framework scheduler's protocol state, without I/O. See the [module docs](self) for the
/// calling contract.
#[derive(Debug)]
pub struct SchedulerCore {
    /// What to subscribe as; its `id` is the framework id once known, so every re-subscription
    /// reuses it and the master keeps the framework's tasks.
    framework: FrameworkInfo,
    /// Acknowledge each update carrying an agent id and a uuid as it arrives.
    auto_acknowledge: bool,
    /// The control stream's state.
    link: LinkState,
    /// Application calls waiting for a subscription, oldest first.
    pending: VecDeque<Message>,
    /// Messages for the current stream, in order.
    transmit: VecDeque<Message>,
    /// Events for the application, in order.
    events: VecDeque<Event>,
    /// Recent updates delivered, to drop duplicates.
    seen: SeenUpdates,
    /// `teardown` was called: no further calls are taken.
    tearing_down: bool,
    /// The `Teardown` has been handed to the driver: the core is done.
    finished: bool,
}

impl SchedulerCore {
    /// A core for `framework` (with `id: Some(..)` to fail over an existing framework), not yet
    /// connected. With `auto_acknowledge` off the application acknowledges each update itself
    /// with [`SchedulerCore::acknowledge`].
    pub fn new(framework: FrameworkInfo, auto_acknowledge: bool) -> Self {
        Self {
            framework,
            auto_acknowledge,
            link: LinkState::Down,
            pending: VecDeque::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            seen: SeenUpdates::new(DEDUP_WINDOW),
            tearing_down: false,
            finished: false,
        }
    }

    /// The framework id: the one given at construction, then the one the master assigned.
    pub fn framework_id(&self) -> Option<&FrameworkId> {
        self.framework.id.as_ref()
    }

    /// True while subscribed on the current stream.
    pub fn is_subscribed(&self) -> bool {
        self.link == LinkState::Subscribed
    }

    /// True once the `Teardown` has been handed out by [`SchedulerCore::poll_transmit`]: the
    /// driver should finish the stream and stop.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// How many recent updates are remembered for dropping duplicates.
    #[cfg(test)]
    pub(crate) fn remembered_updates(&self) -> usize {
        self.seen.len()
    }

    // ---- inputs from the driver ----

    /// A new control stream to the master is up (past the handshake): subscribe on it.
    pub fn handle_connected(&mut self) {
        if self.finished {
            return;
        }
        // A stream the driver did not report lost is replaced: what it did not write is kept.
        self.requeue_unsent();
        self.link = LinkState::Subscribing;
        self.transmit.push_back(Message::Subscribe {
            framework: self.framework.clone(),
        });
    }

    /// A message from the master.
    pub fn handle_message(&mut self, msg: Message) {
        if self.finished {
            return;
        }
        let event = match msg {
            Message::Subscribed { framework_id, .. } => {
                self.framework.id = Some(framework_id.clone());
                if self.link != LinkState::Down {
                    self.link = LinkState::Subscribed;
                    self.transmit.extend(self.pending.drain(..));
                }
                Event::Subscribed { framework_id }
            }
            Message::Offers { offers } => Event::Offers(offers),
            Message::Rescind { offer_id } => Event::Rescind(offer_id),
            Message::Update { status } => {
                if let (Some(agent_id), Some(uuid)) = (&status.agent_id, &status.uuid) {
                    // Acknowledge repeats too: the repeat means the first ack was lost.
                    if self.auto_acknowledge {
                        self.transmit.push_back(Message::Acknowledge {
                            agent_id: agent_id.clone(),
                            task_id: status.task_id.clone(),
                            uuid: uuid.clone(),
                        });
                    }
                    if !self.seen.insert(&status.task_id, uuid) {
                        return; // a duplicate: already delivered
                    }
                }
                Event::Update(status)
            }
            Message::FrameworkMessage {
                agent_id,
                executor_id,
                data,
            } => Event::Message {
                agent_id,
                executor_id,
                data,
            },
            Message::ExecutorExited {
                agent_id,
                executor_id,
                failed,
                message,
                ..
            } => Event::ExecutorExited {
                agent_id,
                executor_id,
                failed,
                message,
            },
            Message::Error { message } => Event::Error(message),
            Message::Heartbeat => return,
            other => {
                tracing::warn!(kind = other.kind(), "unexpected message from the master");
                return;
            }
        };
        self.events.push_back(event);
    }

    /// The control stream is gone (`why` is for the application). Unsent calls are kept for
    /// the next subscription; reported as [`Event::Disconnected`] once per stream.
    pub fn handle_disconnected(&mut self, why: String) {
        if self.finished || self.link == LinkState::Down {
            return;
        }
        self.requeue_unsent();
        self.link = LinkState::Down;
        self.events.push_back(Event::Disconnected(why));
    }

    /// Writing `msg`, just returned by [`SchedulerCore::poll_transmit`], failed because the
    /// stream is gone: as [`SchedulerCore::handle_disconnected`], and `msg` is sent again first
    /// after the next subscription (unless it was the `Subscribe`, which every stream gets
    /// anew).
    pub fn handle_write_failed(&mut self, msg: Message, why: String) {
        if matches!(msg, Message::Teardown) {
            self.finished = false; // it was not written after all: hand it out again
        }
        if self.finished {
            return;
        }
        self.transmit.push_front(msg);
        if self.link == LinkState::Down {
            self.requeue_unsent();
        } else {
            self.handle_disconnected(why);
        }
    }

    // ---- calls from the application ----

    /// Launches `tasks` on the resources of `offer_ids` (all of one agent); the unused rest is
    /// declined with `filters`.
    pub fn accept(&mut self, offer_ids: Vec<OfferId>, tasks: Vec<TaskInfo>, filters: Filters) {
        self.call(Message::Accept {
            offer_ids,
            tasks,
            filters,
        });
    }

    /// Declines offers; their agents are not offered to this framework again for
    /// `filters.refuse_seconds` (default 5 s).
    pub fn decline(&mut self, offer_ids: Vec<OfferId>, filters: Filters) {
        self.call(Message::Decline { offer_ids, filters });
    }

    /// Kills a task; its end arrives as a `TASK_KILLED` update.
    pub fn kill(&mut self, task_id: TaskId) {
        self.call(Message::Kill { task_id });
    }

    /// Sends bytes to the framework's executor on an agent (at most once; at most
    /// [`proto::MAX_FRAMEWORK_MESSAGE`] bytes, the master refuses more with an error).
    pub fn send_message(&mut self, agent_id: AgentId, executor_id: ExecutorId, data: Vec<u8>) {
        self.call(Message::FrameworkMessage {
            agent_id,
            executor_id,
            data,
        });
    }

    /// Stops the framework's executor on an agent; its live tasks are killed.
    pub fn shutdown_executor(&mut self, agent_id: AgentId, executor_id: ExecutorId) {
        self.call(Message::ShutdownExecutor {
            agent_id,
            executor_id,
        });
    }

    /// Acknowledges an update (only needed with `auto_acknowledge` off); updates without an
    /// agent id or a uuid need none, and nothing is sent for them.
    pub fn acknowledge(&mut self, status: &TaskStatus) {
        if let (Some(agent_id), Some(uuid)) = (&status.agent_id, &status.uuid) {
            self.call(Message::Acknowledge {
                agent_id: agent_id.clone(),
                task_id: status.task_id.clone(),
                uuid: uuid.clone(),
            });
        }
    }

    /// Clears this framework's decline filters and resumes offers.
    pub fn revive(&mut self) {
        self.call(Message::Revive);
    }

    /// Stops offers until [`SchedulerCore::revive`].
    pub fn suppress(&mut self) {
        self.call(Message::Suppress);
    }

    /// Asks for the latest state of tasks (all of the framework's when empty).
    pub fn reconcile(&mut self, task_ids: Vec<TaskId>) {
        self.call(Message::Reconcile { task_ids });
    }

    /// Ends the framework: the master kills its tasks and forgets it. Calls after this one are
    /// ignored; once the `Teardown` is handed out the core is finished.
    pub fn teardown(&mut self) {
        self.call(Message::Teardown);
        self.tearing_down = true;
    }

    /// Sends an application call now if subscribed, or queues it for the next subscription.
    fn call(&mut self, msg: Message) {
        if self.tearing_down || self.finished {
            tracing::debug!(kind = msg.kind(), "call after teardown ignored");
            return;
        }
        match self.link {
            LinkState::Subscribed => self.transmit.push_back(msg),
            LinkState::Down | LinkState::Subscribing => self.pending.push_back(msg),
        }
    }

    /// Moves what the current stream did not write back in front of the queued calls, except
    /// the `Subscribe`, which belongs to that stream.
    fn requeue_unsent(&mut self) {
        let unsent = std::mem::take(&mut self.transmit)
            .into_iter()
            .filter(|m| !matches!(m, Message::Subscribe { .. }));
        let mut pending: VecDeque<Message> = unsent.collect();
        pending.append(&mut self.pending);
        self.pending = pending;
    }

    // ---- outputs ----

    /// The next message to write on the control stream, in order.
    pub fn poll_transmit(&mut self) -> Option<Message> {
        if self.finished {
            return None;
        }
        let msg = self.transmit.pop_front()?;
        self.finished = matches!(msg, Message::Teardown);
        Some(msg)
    }

    /// The next event for the application, in order.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}
