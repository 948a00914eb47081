//! The instance's store data and its implementation of the `tessera:executor/host` interface:
//! the event queue the guest waits on, the updates and messages it sends (size-capped, paced,
//! updates only for its live tasks), and WASI 0.2.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::tessera::executor::{host, types};
use super::{GuestTaskState, InstanceEvent, InstanceTask};
use crate::executor::limiter::MemLimiter;

/// Largest update message or framework message a guest may send (the protocol's cap on
/// framework messages, 64 KiB); bigger ones are refused with an error result.
pub const MAX_GUEST_MESSAGE: usize = 64 * 1024;

/// Most message bytes queued for a guest that does not take its events; beyond it, messages
/// from the scheduler are dropped (with a counted warning) rather than held.
pub(super) const MAX_QUEUED_MESSAGE_BYTES: u64 = 16 << 20;

/// Sustained rate of the guest's calls to the host, in cost units per second: each update or
/// message costs one unit plus one per KiB it carries. Over it, the guest waits in the call.
pub const OUTBOX_RATE: f64 = 5_000.0;

/// Cost units a guest may spend at once before it is paced.
pub const OUTBOX_BURST: f64 = 500.0;

/// What the agent delivers to an instance, queued until the guest asks for it.
#[derive(Debug)]
pub(super) enum Delivery {
    /// A task launched into the instance.
    Launch(InstanceTask),
    /// A kill request for a task.
    Kill(String),
    /// Bytes from the scheduler.
    Message(Vec<u8>),
    /// Finish and return from `run`.
    Shutdown,
}

/// Calls the notify callback of the instance; shared with the guard that sends `Exited`.
pub(super) type Notify = Arc<dyn Fn(InstanceEvent) + Send + Sync>;

/// Holds the guest's calls to the host to [`OUTBOX_RATE`]: a token bucket.
struct Outbox {
    tokens: f64,
    last: Instant,
    /// Calls that had to wait.
    throttled: u64,
}

impl Outbox {
    fn new() -> Self {
        Outbox {
            tokens: OUTBOX_BURST,
            last: Instant::now(),
            throttled: 0,
        }
    }

    /// Waits until the guest may spend `cost` units, and spends them.
    async fn pay(&mut self, cost: f64) {
        let now = Instant::now();
        self.tokens = (self.tokens + OUTBOX_RATE * now.duration_since(self.last).as_secs_f64())
            .min(OUTBOX_BURST);
        self.last = now;
        self.tokens -= cost;
        if self.tokens < 0.0 {
            self.throttled += 1;
            if self.throttled.is_power_of_two() {
                tracing::warn!(
                    throttled = self.throttled,
                    "executor floods the agent with updates or messages; slowing it down"
                );
            }
            tokio::time::sleep(Duration::from_secs_f64(-self.tokens / OUTBOX_RATE)).await;
        }
    }
}

/// What a call carrying `len` bytes costs in [`OUTBOX_RATE`] units (refused oversized ones
/// cost as much as the largest allowed).
fn cost(len: usize) -> f64 {
    1.0 + (len.min(MAX_GUEST_MESSAGE + 1) / 1024) as f64
}

/// One instance's store data.
pub(crate) struct InstanceState {
    /// WASI 0.2: args, env, sandbox and data set preopens, capped output files; no sockets.
    wasi: WasiCtx,
    /// The guest's WASI resources.
    table: ResourceTable,
    /// Caps memory growth at the envelope's current memory.
    pub(super) limiter: MemLimiter,
    /// Events from the agent, in order.
    events: mpsc::UnboundedReceiver<Delivery>,
    /// Message bytes queued in `events`, shared with the handle.
    queued_bytes: Arc<AtomicU64>,
    /// Where updates and messages go.
    notify: Notify,
    /// Tasks delivered to the guest and not yet terminal: the only ones it may update.
    live: HashSet<String>,
    /// `shutdown` was delivered (or the agent dropped every handle).
    shut_down: bool,
    /// Paces updates and messages.
    outbox: Outbox,
}

/// The parts of an instance's store data that exist before its WASI context.
pub(super) struct HostSide {
    /// Caps memory growth at the envelope's memory.
    pub(super) limiter: MemLimiter,
    /// Events from the agent.
    pub(super) events: mpsc::UnboundedReceiver<Delivery>,
    /// Message bytes queued in `events`.
    pub(super) queued_bytes: Arc<AtomicU64>,
    /// Where updates and messages go.
    pub(super) notify: Notify,
}

impl InstanceState {
    /// Store data for one instance.
    pub(super) fn new(wasi: WasiCtx, side: HostSide) -> Self {
        InstanceState {
            wasi,
            table: ResourceTable::new(),
            limiter: side.limiter,
            events: side.events,
            queued_bytes: side.queued_bytes,
            notify: side.notify,
            live: HashSet::new(),
            shut_down: false,
            outbox: Outbox::new(),
        }
    }

    /// Turns a delivery into the guest's event, keeping the books of live tasks.
    fn deliver(&mut self, d: Delivery) -> types::Event {
        match d {
            Delivery::Launch(t) => {
                self.live.insert(t.task_id.clone());
                types::Event::Launch(types::Task {
                    id: t.task_id,
                    name: t.name,
                    args: t.args,
                    env: t.env,
                    data: t.data,
                    cpus_milli: t.cpus_milli,
                    mem_bytes: t.mem_bytes,
                })
            }
            Delivery::Kill(id) => types::Event::Kill(id),
            Delivery::Message(m) => {
                self.queued_bytes
                    .fetch_sub(m.len() as u64, Ordering::Relaxed);
                types::Event::Message(m)
            }
            Delivery::Shutdown => {
                self.shut_down = true;
                types::Event::Shutdown
            }
        }
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for InstanceState {}

impl host::Host for InstanceState {
    async fn next_event(
        &mut self,
        timeout_ms: Option<u32>,
    ) -> wasmtime::Result<Option<types::Event>> {
        // The guest came back for an event, so it survived any refused memory growth so far:
        // a later trap is its own fault, not the envelope's.
        self.limiter.forgive();
        if self.shut_down {
            return Ok(None);
        }
        let got = match timeout_ms {
            Some(0) => match self.events.try_recv() {
                Ok(d) => Some(Some(d)),
                Err(mpsc::error::TryRecvError::Empty) => None,
                Err(mpsc::error::TryRecvError::Disconnected) => Some(None),
            },
            Some(ms) => {
                tokio::time::timeout(Duration::from_millis(u64::from(ms)), self.events.recv())
                    .await
                    .ok()
            }
            None => Some(self.events.recv().await),
        };
        Ok(match got {
            None => None,
            Some(Some(d)) => Some(self.deliver(d)),
            // Every handle is gone: nobody can drive the instance any more.
            Some(None) => Some(self.deliver(Delivery::Shutdown)),
        })
    }

    async fn update(
        &mut self,
        task_id: String,
        state: types::TaskState,
        message: String,
    ) -> wasmtime::Result<Result<(), String>> {
        self.outbox.pay(cost(message.len())).await;
        if message.len() > MAX_GUEST_MESSAGE {
            return Ok(Err(format!(
                "update message of {} bytes refused: the limit is {MAX_GUEST_MESSAGE} bytes",
                message.len()
            )));
        }
        if !self.live.contains(&task_id) {
            return Ok(Err(format!(
                "update refused: task {task_id:?} is not live in this executor (never launched \
                 here, or already terminal)"
            )));
        }
        let state = match state {
            types::TaskState::Running => GuestTaskState::Running,
            types::TaskState::Finished => GuestTaskState::Finished,
            types::TaskState::Failed => GuestTaskState::Failed,
            types::TaskState::Killed => GuestTaskState::Killed,
        };
        if state != GuestTaskState::Running {
            self.live.remove(&task_id);
        }
        (self.notify)(InstanceEvent::TaskUpdate {
            task_id,
            state,
            message,
        });
        Ok(Ok(()))
    }

    async fn send_message(&mut self, data: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        self.outbox.pay(cost(data.len())).await;
        if data.len() > MAX_GUEST_MESSAGE {
            return Ok(Err(format!(
                "message of {} bytes refused: the limit is {MAX_GUEST_MESSAGE} bytes",
                data.len()
            )));
        }
        (self.notify)(InstanceEvent::Message(data));
        Ok(Ok(()))
    }
}
