//! The guests' side of the runtime: one [`Executor`], the table of live guests by
//! [`GuestId`], the event sequence and its outbox, and the one subscriber (attached agent)
//! events go to. The in-process [`Runtime`](super::Runtime) calls it directly; the runtime
//! process (`server.rs`) calls it for the agent on the other end of its socket.
//!
//! One mutex guards the guest table, the sequence, the outbox and the subscriber, so that an
//! attachment sees a consistent cut: the live guests and the replayed outbox match, and no
//! event is numbered, kept or sent out of order.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::{mpsc, watch};

use super::{Attachment, GuestEvent, GuestId, RuntimeError, RuntimeEvent};
use crate::executor::{
    ExecEvent, Executor, ExecutorConfig, GuestTaskState, InstanceEvent, InstanceHandle,
    InstanceSpec, InstanceTask, KillHandle, TaskSpec,
};

/// Most bytes of guest-to-scheduler messages the outbox holds unacknowledged: beyond it,
/// further messages are dropped with a counted warning (a guest flooding while no agent takes
/// them must not grow the runtime without bound). Every other event is always kept.
pub const MAX_OUTBOX_MESSAGE_BYTES: u64 = 64 << 20;

/// Most bytes (estimated) of unacknowledged events of every kind the outbox holds before an
/// executor instance that adds more task updates is killed: updates are never dropped, so an
/// executor flooding them while no agent takes them is stopped instead of growing the
/// runtime without bound (its updates so far, and its end, are kept).
pub const MAX_OUTBOX_BYTES: u64 = 256 << 20;

/// The guests and their events. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Host {
    inner: Arc<Inner>,
}

/// What every clone of a [`Host`] shares (the guests' notify callbacks hold it weakly, so
/// dropping the last `Host` stops the guests).
struct Inner {
    /// Runs the guests.
    executor: Executor,
    /// This host's life, reported in every [`Attachment`].
    runtime_id: String,
    /// Whether events are kept until acknowledged (the runtime process) or only sent (in
    /// process: there is no later attachment to replay them to).
    keep_outbox: bool,
    /// Most bytes of unacknowledged messages kept ([`MAX_OUTBOX_MESSAGE_BYTES`] but in tests).
    message_cap: u64,
    /// Most bytes of unacknowledged events before a flooding instance is killed
    /// ([`MAX_OUTBOX_BYTES`] but in tests).
    outbox_cap: u64,
    /// Guests, sequence, outbox and subscriber, under one lock (see the module docs).
    state: Mutex<State>,
    /// How many guests are live, for [`Host::stop_all`] to wait on.
    live: watch::Sender<usize>,
    /// Whether the output held in memory is written out to the tasks' files when the guests
    /// stop with this host: always for the runtime process (an agent attaching later may read
    /// it); in process only for an agent that checkpoints (without a checkpoint a restarted
    /// agent clears every directory of the previous run, so writing would be wasted).
    write_out_at_end: std::sync::atomic::AtomicBool,
}

/// The mutable part of a [`Host`].
#[derive(Default)]
struct State {
    /// Live guests by id: their handles, for kills and instance calls.
    guests: HashMap<GuestId, Guest>,
    /// Generation of the next guest, so that a late end of a guest never removes a successor
    /// that reuses its id.
    next_gen: u64,
    /// Sequence number of the last event numbered (0: none yet).
    last_seq: u64,
    /// Events numbered and not acknowledged, in order (empty unless `keep_outbox`).
    outbox: VecDeque<RuntimeEvent>,
    /// Bytes of `Message` payloads in `outbox`.
    outbox_message_bytes: u64,
    /// Estimated bytes of every event in `outbox`.
    outbox_bytes: u64,
    /// Messages dropped because the outbox was full of them.
    dropped_messages: u64,
    /// Attachments so far (the last one's token).
    attachments: u64,
    /// The attached agent's event channel, with its attachment's token.
    subscriber: Option<(u64, mpsc::UnboundedSender<RuntimeEvent>)>,
}

/// A live guest's handle.
struct Guest {
    /// Tells this guest's end from that of an earlier guest of the same id.
    generation: u64,
    /// How to drive it.
    kind: GuestKind,
}

/// A one-shot task or an executor instance.
enum GuestKind {
    /// A task: it can only be killed.
    Task(KillHandle),
    /// An instance: killed, or driven through its handle; with the ids of the tasks launched
    /// into it that have not ended (no terminal update yet), so that a recovering agent learns
    /// which launches reached it and a repeated launch is not delivered twice.
    Instance(InstanceHandle, BTreeSet<String>),
}

impl GuestKind {
    fn kill(&self) {
        match self {
            GuestKind::Task(k) => k.kill(),
            GuestKind::Instance(h, _) => h.kill(),
        }
    }
}

impl Drop for Inner {
    /// Nobody can drive or hear the guests any more: stop them, and write the output held in
    /// memory out to the tasks' files if a later agent may read it there.
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        for g in state.guests.values() {
            g.kind.kill();
        }
        if self
            .write_out_at_end
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            self.executor.write_out_outputs();
        }
    }
}

impl Host {
    /// Creates the executor (calibrating its fuel rate unless configured).
    pub(crate) fn new(
        cfg: ExecutorConfig,
        runtime_id: String,
        keep_outbox: bool,
    ) -> Result<Host, RuntimeError> {
        let caps = (MAX_OUTBOX_MESSAGE_BYTES, MAX_OUTBOX_BYTES);
        Host::with_caps(cfg, runtime_id, keep_outbox, caps)
    }

    /// [`Host::new`] with other outbox caps: (messages' bytes, every event's bytes).
    pub(crate) fn with_caps(
        cfg: ExecutorConfig,
        runtime_id: String,
        keep_outbox: bool,
        (message_cap, outbox_cap): (u64, u64),
    ) -> Result<Host, RuntimeError> {
        let executor = Executor::new(cfg)?;
        Ok(Host {
            inner: Arc::new(Inner {
                executor,
                runtime_id,
                keep_outbox,
                message_cap,
                outbox_cap,
                state: Mutex::new(State {
                    next_gen: 1,
                    ..State::default()
                }),
                live: watch::Sender::new(0),
                write_out_at_end: keep_outbox.into(),
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    /// Makes `tx` the one subscriber (a previous one is dropped, which ends its stream) and
    /// returns what it attached to, with a token for [`Host::detach`]; the outbox is sent to
    /// it first, in order.
    pub(crate) fn attach(&self, tx: mpsc::UnboundedSender<RuntimeEvent>) -> (Attachment, u64) {
        let mut st = self.state();
        let mut live: Vec<GuestId> = st.guests.keys().cloned().collect();
        live.sort();
        let instance_tasks: BTreeMap<GuestId, Vec<String>> = st
            .guests
            .iter()
            .filter_map(|(id, g)| match &g.kind {
                GuestKind::Instance(_, tasks) => {
                    Some((id.clone(), tasks.iter().cloned().collect()))
                }
                GuestKind::Task(_) => None,
            })
            .collect();
        for ev in &st.outbox {
            let _ = tx.send(ev.clone());
        }
        st.attachments += 1;
        let token = st.attachments;
        st.subscriber = Some((token, tx));
        let attachment = Attachment {
            runtime_id: self.inner.runtime_id.clone(),
            live,
            fuel_per_core_second: self.inner.executor.fuel_per_core_second(),
            last_seq: st.last_seq,
            instance_tasks,
        };
        (attachment, token)
    }

    /// Drops the subscriber if it is still the one `token` attached (a newer one may have
    /// replaced it).
    pub(crate) fn detach(&self, token: u64) {
        let mut st = self.state();
        if st.subscriber.as_ref().is_some_and(|(t, _)| *t == token) {
            st.subscriber = None;
        }
    }

    /// Whether an agent is attached.
    pub(crate) fn live_count(&self) -> usize {
        *self.inner.live.borrow()
    }

    /// Events numbered and not yet acknowledged.
    #[cfg(test)]
    pub(crate) fn outbox_len(&self) -> usize {
        self.state().outbox.len()
    }

    /// Messages dropped because the outbox was full.
    pub(crate) fn dropped_messages(&self) -> u64 {
        self.state().dropped_messages
    }

    /// See [`Runtime::prepare`](super::Runtime::prepare).
    /// Whether it compiled is read from the executor's compile counter around the call (a
    /// prepare that waited for a concurrent compile of the same module counts as compiling, and
    /// one of another module may be counted as this one's compile: the metrics this feeds are
    /// statistics, not books).
    pub(crate) async fn prepare(
        &self,
        digest: &str,
        wasm_path: &Path,
    ) -> Result<super::PrepareInfo, String> {
        let exec = &self.inner.executor;
        let before = exec.stats().compiles;
        let started = std::time::Instant::now();
        exec.prepare(digest, wasm_path)
            .await
            .map_err(|e| e.to_string())?;
        let secs = started.elapsed().as_secs_f64();
        Ok(super::PrepareInfo {
            cached: exec.stats().compiles == before,
            secs,
        })
    }

    /// See [`Runtime::launch`](super::Runtime::launch).
    pub(crate) fn launch(&self, guest: GuestId, spec: TaskSpec) {
        let mut st = self.state();
        if st.guests.contains_key(&guest) {
            tracing::warn!(%guest, "launch of a guest that is already live ignored");
            return;
        }
        let generation = st.next_gen;
        st.next_gen += 1;
        let weak = Arc::downgrade(&self.inner);
        let id = guest.clone();
        let handle = self.inner.executor.launch(
            spec,
            Box::new(move |ev| {
                let end = matches!(ev, ExecEvent::Finished(_));
                emit(&weak, &id, generation, GuestEvent::Task(ev), end);
            }),
        );
        st.guests.insert(
            guest,
            Guest {
                generation,
                kind: GuestKind::Task(handle),
            },
        );
        self.inner.live.send_replace(st.guests.len());
    }

    /// See [`Runtime::start_instance`](super::Runtime::start_instance).
    pub(crate) fn start_instance(&self, guest: GuestId, spec: InstanceSpec) {
        let mut st = self.state();
        if st.guests.contains_key(&guest) {
            tracing::warn!(%guest, "start of an instance that is already live ignored");
            return;
        }
        let generation = st.next_gen;
        st.next_gen += 1;
        let weak = Arc::downgrade(&self.inner);
        let id = guest.clone();
        let handle = self.inner.executor.start_instance(
            spec,
            Box::new(move |ev| {
                let end = matches!(ev, InstanceEvent::Exited(_));
                emit(&weak, &id, generation, GuestEvent::Instance(ev), end);
            }),
        );
        st.guests.insert(
            guest,
            Guest {
                generation,
                kind: GuestKind::Instance(handle, BTreeSet::new()),
            },
        );
        self.inner.live.send_replace(st.guests.len());
    }

    /// See [`Runtime::kill`](super::Runtime::kill).
    pub(crate) fn kill(&self, guest: &str) {
        if let Some(g) = self.state().guests.get(guest) {
            g.kind.kill();
        }
    }

    /// Hands a task to the instance `guest`, unless a task of that id was launched into it and
    /// has not ended (a recovering agent may send a launch again: it is delivered once).
    pub(crate) fn instance_launch(&self, guest: &str, task: InstanceTask) {
        let mut st = self.state();
        match st.guests.get_mut(guest).map(|g| &mut g.kind) {
            Some(GuestKind::Instance(h, tasks)) => {
                if tasks.insert(task.task_id.clone()) {
                    h.launch(task);
                } else {
                    tracing::info!(%guest, task = %task.task_id,
                        "launch of a task the instance already runs ignored");
                }
            }
            Some(GuestKind::Task(_)) => {
                tracing::warn!(%guest, "instance launch on a one-shot task ignored")
            }
            None => {}
        }
    }

    /// Runs `f` on the instance `guest`, if it is a live instance.
    pub(crate) fn with_instance(&self, guest: &str, f: impl FnOnce(&InstanceHandle)) {
        match self.state().guests.get(guest).map(|g| &g.kind) {
            Some(GuestKind::Instance(h, _)) => f(h),
            Some(GuestKind::Task(_)) => {
                tracing::warn!(%guest, "instance call on a one-shot task ignored")
            }
            None => {}
        }
    }

    /// Forgets every event up to `seq`.
    pub(crate) fn ack(&self, seq: u64) {
        let mut st = self.state();
        while st.outbox.front().is_some_and(|e| e.seq <= seq) {
            if let Some(ev) = st.outbox.pop_front() {
                if let GuestEvent::Instance(InstanceEvent::Message(m)) = &ev.event {
                    st.outbox_message_bytes -= m.len() as u64;
                }
                st.outbox_bytes -= size_of_event(&ev);
            }
        }
    }

    /// See [`Runtime::read_output`](super::Runtime::read_output).
    pub(crate) fn read_output(
        &self,
        task_dir: &Path,
        stderr: bool,
        offset: u64,
        length: u64,
    ) -> Option<(Vec<u8>, u64)> {
        self.inner
            .executor
            .read_output(task_dir, stderr, offset, length)
    }

    /// See [`Runtime::write_output_out_at_end`](super::Runtime::write_output_out_at_end).
    pub(crate) fn write_out_at_end(&self) {
        self.inner
            .write_out_at_end
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Drops the output held in memory when the guests stop, instead of writing it out: the
    /// tasks' directories are gone (or another runtime's now), and writing would only create
    /// them again.
    pub(crate) fn discard_output_at_end(&self) {
        self.inner
            .write_out_at_end
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// See [`Runtime::forget_output`](super::Runtime::forget_output).
    pub(crate) fn forget_output(&self, task_dir: &Path) {
        self.inner.executor.forget_output(task_dir);
    }

    /// Kills every guest and waits until each has reported its end; then writes the output
    /// held in memory out to the tasks' files if a later agent may read it there.
    pub(crate) async fn stop_all(&self) {
        for g in self.state().guests.values() {
            g.kind.kill();
        }
        let mut live = self.inner.live.subscribe();
        let _ = live.wait_for(|n| *n == 0).await;
        // The last end is counted inside its event's critical section: once this lock is
        // taken, every end event has been numbered and sent.
        drop(self.state());
        if self
            .inner
            .write_out_at_end
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            let exec = self.inner.executor.clone();
            let _ = tokio::task::spawn_blocking(move || exec.write_out_outputs()).await;
        }
    }
}

/// Numbers a guest's event, keeps it in the outbox, sends it to the subscriber; on the
/// guest's end, removes it from the table (in the same critical section, so an attachment
/// never lists a guest whose end it also replays).
fn emit(weak: &Weak<Inner>, guest: &str, generation: u64, event: GuestEvent, end: bool) {
    let Some(inner) = weak.upgrade() else {
        return;
    };
    let mut st = lock(&inner.state);
    if let GuestEvent::Instance(InstanceEvent::TaskUpdate { task_id, state, .. }) = &event {
        if *state != GuestTaskState::Running {
            if let Some(Guest {
                generation: g,
                kind: GuestKind::Instance(_, tasks),
            }) = st.guests.get_mut(guest)
            {
                if *g == generation {
                    tasks.remove(task_id);
                }
            }
        }
    }
    if end
        && st
            .guests
            .get(guest)
            .is_some_and(|g| g.generation == generation)
    {
        st.guests.remove(guest);
        inner.live.send_replace(st.guests.len());
    }
    let message_len = match &event {
        GuestEvent::Instance(InstanceEvent::Message(m)) => Some(m.len() as u64),
        _ => None,
    };
    if let (Some(len), true) = (message_len, inner.keep_outbox) {
        if st.outbox_message_bytes.saturating_add(len) > inner.message_cap {
            st.dropped_messages += 1;
            tracing::warn!(
                %guest,
                dropped = st.dropped_messages,
                queued_bytes = st.outbox_message_bytes,
                "runtime outbox full of unacknowledged messages: guest message dropped"
            );
            return;
        }
        st.outbox_message_bytes += len;
    }
    st.last_seq += 1;
    let ev = RuntimeEvent {
        seq: st.last_seq,
        guest: guest.to_owned(),
        event,
    };
    let kept = inner.keep_outbox.then(|| ev.clone());
    if let Some((_, tx)) = &st.subscriber {
        if tx.send(ev).is_err() {
            st.subscriber = None;
        }
    }
    if let Some(ev) = kept {
        st.outbox_bytes += size_of_event(&ev);
        if st.outbox_bytes > inner.outbox_cap && !end {
            if let Some(Guest {
                kind: GuestKind::Instance(h, _),
                ..
            }) = st.guests.get(guest)
            {
                tracing::error!(
                    %guest,
                    outbox_bytes = st.outbox_bytes,
                    "runtime outbox full of unacknowledged events: executor flooding it killed"
                );
                h.kill();
            }
        }
        st.outbox.push_back(ev);
    }
}

/// An event's size in the outbox, roughly: its variable parts plus a fixed overhead.
fn size_of_event(ev: &RuntimeEvent) -> u64 {
    let body = match &ev.event {
        GuestEvent::Task(ExecEvent::Running) | GuestEvent::Instance(InstanceEvent::Started) => 0,
        GuestEvent::Task(ExecEvent::Finished(o))
        | GuestEvent::Instance(InstanceEvent::Exited(o)) => {
            o.stdout_tail.len() + o.stderr_tail.len() + termination_len(&o.termination)
        }
        GuestEvent::Instance(InstanceEvent::TaskUpdate {
            task_id, message, ..
        }) => task_id.len() + message.len(),
        GuestEvent::Instance(InstanceEvent::Message(m)) => m.len(),
    };
    (128 + ev.guest.len() + body) as u64
}

fn termination_len(t: &crate::executor::Termination) -> usize {
    use crate::executor::Termination as T;
    match t {
        T::Trapped(m)
        | T::MemoryLimit(m)
        | T::CpuLimit(m)
        | T::DiskLimit(m)
        | T::StartFailed(m) => m.len(),
        T::Exited(_) | T::Timeout | T::Killed => 0,
    }
}

/// Locks, even a mutex poisoned by a panic elsewhere (its state stays consistent: every
/// critical section is panic-free bookkeeping).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
