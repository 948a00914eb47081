//! The Tessera scheduler SDK: how a framework talks to the master.
//!
//! A [`Scheduler`] dials the master over QUIC with mutual TLS, subscribes its framework, and
//! then yields [`Event`]s (offers, rescinds, task status updates, errors) while its methods make
//! the calls of Mesos's v1 scheduler API (accept, decline, kill, acknowledge, revive, suppress,
//! reconcile, teardown) and upload modules and files.
//!
//! ```text
//!  your code ──calls──▶ Scheduler ──▶ background task ──QUIC──▶ master
//!  your code ◀─events── Scheduler ◀── background task ◀──QUIC── master
//! ```
//!
//! The background task owns the connection. If the link drops it redials with backoff and
//! re-subscribes under the same framework id (the master keeps the framework for its
//! `failover_timeout_ms`); calls made meanwhile are queued and sent after re-subscription.
//! Status updates are delivered at least once by the cluster: the SDK drops duplicates (by uuid)
//! and, unless [`SchedulerOptions::auto_acknowledge`] is off, acknowledges each update for you.
//!
//! # Example
//! ```no_run
//! # async fn example(opts: tessera_sdk::SchedulerOptions, wasm: Vec<u8>) -> Result<(), tessera_sdk::SdkError> {
//! use tessera_sdk::{Event, Scheduler, TaskBuilder};
//! use proto::{Filters, Resources};
//! let mut sched = Scheduler::connect(opts).await?;
//! let module = sched.upload_module(&wasm).await?;
//! while let Some(event) = sched.next_event().await {
//!     match event {
//!         Event::Offers(offers) => {
//!             for offer in offers {
//!                 let task = TaskBuilder::new("hello-1", module)
//!                     .resources(Resources::new(500, 64 << 20, 0))
//!                     .build(&offer);
//!                 sched.accept(vec![offer.id.clone()], vec![task], Filters::default())?;
//!             }
//!         }
//!         Event::Update(status) if status.state.is_terminal() => break,
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

use net::link::{self, Link, LinkError};
use net::tls::{PeerTls, TransportTuning};
use net::MessageWriter;
use proto::{
    AgentId, BlobKind, Digest, Filters, FrameworkId, FrameworkInfo, Message, Offer, OfferId,
    Resources, Role, TaskFile, TaskId, TaskInfo, TaskStatus,
};
use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// How many recent update uuids are remembered to drop duplicates.
const DEDUP_WINDOW: usize = 65_536;

/// How to reach the master and what framework to subscribe.
#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// The master's QUIC address.
    pub master: SocketAddr,
    /// CA and this framework's certificate.
    pub tls: PeerTls,
    /// QUIC keep-alive and idle timeout.
    pub tuning: TransportTuning,
    /// The framework to subscribe.
    pub framework: FrameworkInfo,
    /// Acknowledge status updates automatically (default true). Turn it off to acknowledge
    /// only once an update is durably handled, with [`Scheduler::acknowledge`].
    pub auto_acknowledge: bool,
    /// Longest pause between reconnection attempts (default 5 s).
    pub max_backoff: Duration,
    /// How long [`Scheduler::connect`] waits for the first subscription (default 10 s).
    pub subscribe_timeout: Duration,
}

impl SchedulerOptions {
    /// Options for a framework `name` in `role`, with defaults for the rest (failover timeout
    /// 60 s).
    pub fn new(master: SocketAddr, tls: PeerTls, name: &str, role: &str) -> Self {
        Self {
            master,
            tls,
            tuning: TransportTuning::default(),
            framework: FrameworkInfo {
                priority: 0,
                name: name.to_owned(),
                role: role.to_owned(),
                principal: name.to_owned(),
                id: None,
                failover_timeout_ms: 60_000,
            },
            auto_acknowledge: true,
            max_backoff: Duration::from_secs(5),
            subscribe_timeout: Duration::from_secs(10),
        }
    }
}

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
    /// A call failed.
    Error(String),
    /// The link to the master dropped; the SDK is reconnecting.
    Disconnected(String),
}

/// What can go wrong in the SDK.
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    /// Connecting, TLS, or a blob transfer failed.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The master refused the subscription.
    #[error("subscription refused: {0}")]
    Refused(String),
    /// No subscription in time.
    #[error("no answer from the master within {0:?}")]
    Timeout(Duration),
    /// The scheduler's background task has stopped.
    #[error("the scheduler is closed")]
    Closed,
    /// Not connected right now (for blob uploads, which are not queued).
    #[error("not connected to the master")]
    NotConnected,
}

/// A connected, subscribed framework scheduler.
pub struct Scheduler {
    calls: mpsc::UnboundedSender<Message>,
    events: mpsc::UnboundedReceiver<Event>,
    conn: Arc<Mutex<Option<quinn::Connection>>>,
    framework_id: FrameworkId,
    task: tokio::task::JoinHandle<()>,
}

impl Scheduler {
    /// Connects, subscribes, and waits for the master's `Subscribed`.
    pub async fn connect(opts: SchedulerOptions) -> Result<Self, SdkError> {
        let endpoint = link::client_endpoint(&opts.tls, opts.tuning)?;
        let mut link = Link::connect(&endpoint, opts.master, Role::Scheduler).await?;
        link.send(&Message::Subscribe {
            framework: opts.framework.clone(),
        })
        .await?;
        let framework_id = tokio::time::timeout(opts.subscribe_timeout, async {
            loop {
                match link.recv().await? {
                    Some(Message::Subscribed { framework_id, .. }) => return Ok(framework_id),
                    Some(Message::Error { message }) => return Err(SdkError::Refused(message)),
                    Some(_) => continue,
                    None => return Err(SdkError::Refused("the master closed the stream".into())),
                }
            }
        })
        .await
        .map_err(|_| SdkError::Timeout(opts.subscribe_timeout))??;
        tracing::info!(%framework_id, "subscribed");
        let (calls, calls_rx) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let conn = Arc::new(Mutex::new(Some(link.conn.clone())));
        let _ = events_tx.send(Event::Subscribed {
            framework_id: framework_id.clone(),
        });
        let mut bg = Background {
            opts,
            endpoint,
            framework_id: framework_id.clone(),
            calls: calls_rx,
            events: events_tx,
            conn: conn.clone(),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            pending: Vec::new(),
        };
        let task = tokio::spawn(async move { bg.run(link).await });
        Ok(Self {
            calls,
            events,
            conn,
            framework_id,
            task,
        })
    }

    /// The framework's id.
    pub fn framework_id(&self) -> &FrameworkId {
        &self.framework_id
    }

    /// The next event; `None` once the scheduler is closed.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    fn call(&self, msg: Message) -> Result<(), SdkError> {
        self.calls.send(msg).map_err(|_| SdkError::Closed)
    }

    /// Launches `tasks` on the resources of `offer_ids` (all of one agent); the unused rest is
    /// declined with `filters`.
    pub fn accept(
        &self,
        offer_ids: Vec<OfferId>,
        tasks: Vec<TaskInfo>,
        filters: Filters,
    ) -> Result<(), SdkError> {
        self.call(Message::Accept {
            offer_ids,
            tasks,
            filters,
        })
    }

    /// Declines offers; their agents are not offered to this framework again for
    /// `filters.refuse_seconds` (default 5 s).
    pub fn decline(&self, offer_ids: Vec<OfferId>, filters: Filters) -> Result<(), SdkError> {
        self.call(Message::Decline { offer_ids, filters })
    }

    /// Kills a task; its end arrives as a `TASK_KILLED` update.
    pub fn kill(&self, task_id: TaskId) -> Result<(), SdkError> {
        self.call(Message::Kill { task_id })
    }

    /// Acknowledges an update (only needed with `auto_acknowledge` off); updates without a
    /// uuid need none.
    pub fn acknowledge(&self, status: &TaskStatus) -> Result<(), SdkError> {
        match (&status.agent_id, &status.uuid) {
            (Some(agent_id), Some(uuid)) => self.call(Message::Acknowledge {
                agent_id: agent_id.clone(),
                task_id: status.task_id.clone(),
                uuid: uuid.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Clears this framework's decline filters and resumes offers.
    pub fn revive(&self) -> Result<(), SdkError> {
        self.call(Message::Revive)
    }

    /// Stops offers until [`Scheduler::revive`].
    pub fn suppress(&self) -> Result<(), SdkError> {
        self.call(Message::Suppress)
    }

    /// Asks for the latest state of tasks (all of the framework's when empty).
    pub fn reconcile(&self, task_ids: Vec<TaskId>) -> Result<(), SdkError> {
        self.call(Message::Reconcile { task_ids })
    }

    /// Ends the framework: the master kills its tasks and forgets it.
    pub async fn teardown(mut self) -> Result<(), SdkError> {
        self.call(Message::Teardown)?;
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
        Ok(())
    }

    /// Uploads a WebAssembly module (validated by the master) and returns its digest.
    pub async fn upload_module(&self, wasm: &[u8]) -> Result<Digest, SdkError> {
        self.upload(BlobKind::Module, wasm).await
    }

    /// Uploads a file for tasks' sandboxes and returns its digest.
    pub async fn upload_file(&self, bytes: &[u8]) -> Result<Digest, SdkError> {
        self.upload(BlobKind::File, bytes).await
    }

    async fn upload(&self, kind: BlobKind, bytes: &[u8]) -> Result<Digest, SdkError> {
        let conn = self.conn.lock().expect("poisoned").clone();
        let conn = conn.ok_or(SdkError::NotConnected)?;
        Ok(link::upload_blob(&conn, kind, bytes).await?)
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(conn) = self.conn.lock().expect("poisoned").take() {
            conn.close(0u32.into(), b"scheduler closed");
        }
    }
}

/// Builds a [`TaskInfo`] with sensible defaults (argv[0] = the task id, no env, no files).
#[derive(Clone, Debug)]
pub struct TaskBuilder {
    info: TaskInfo,
}

impl TaskBuilder {
    /// A task running `module`.
    pub fn new(task_id: &str, module: Digest) -> Self {
        Self {
            info: TaskInfo {
                max_cpu_ms: None,
                task_id: TaskId::from(task_id),
                name: task_id.to_owned(),
                agent_id: AgentId::from(""),
                resources: Resources::new(100, 32 << 20, 0),
                module,
                args: Vec::new(),
                env: Vec::new(),
                files: Vec::new(),
                timeout_ms: None,
            },
        }
    }

    /// The share it runs in (default <0.1 cpus, 32 MiB>).
    pub fn resources(mut self, r: Resources) -> Self {
        self.info.resources = r;
        self
    }

    /// Arguments after argv[0].
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.info.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// One environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.info.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// A file placed at `path` in the sandbox.
    pub fn file(mut self, path: &str, digest: Digest) -> Self {
        self.info.files.push(TaskFile {
            path: path.to_owned(),
            digest,
        });
        self
    }

    /// A wall-clock limit.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.info.timeout_ms = Some(t.as_millis() as u64);
        self
    }

    /// The task, placed on the offer's agent.
    pub fn build(mut self, offer: &Offer) -> TaskInfo {
        self.info.agent_id = offer.agent_id.clone();
        self.info
    }
}

struct Background {
    opts: SchedulerOptions,
    endpoint: quinn::Endpoint,
    framework_id: FrameworkId,
    calls: mpsc::UnboundedReceiver<Message>,
    events: mpsc::UnboundedSender<Event>,
    conn: Arc<Mutex<Option<quinn::Connection>>>,
    seen: HashSet<(TaskId, String)>,
    seen_order: VecDeque<(TaskId, String)>,
    /// Calls made while disconnected, sent after re-subscription.
    pending: Vec<Message>,
}

enum LinkEnd {
    Closed,
    Lost(String),
}

impl Background {
    async fn run(&mut self, link: Link) {
        let mut link = Some(link);
        let mut backoff = net::backoff::Reconnect::new(self.opts.max_backoff);
        loop {
            let current = match link.take() {
                Some(l) => l,
                None => match self.redial().await {
                    Ok(l) => {
                        backoff.reset();
                        l
                    }
                    Err(e) => {
                        let delay = backoff.next_delay();
                        tracing::warn!(error = %e, ?delay, "cannot reach the master");
                        if self.calls.is_closed() {
                            return;
                        }
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                },
            };
            *self.conn.lock().expect("poisoned") = Some(current.conn.clone());
            match self.serve(current).await {
                LinkEnd::Closed => return,
                LinkEnd::Lost(why) => {
                    *self.conn.lock().expect("poisoned") = None;
                    let _ = self.events.send(Event::Disconnected(why));
                }
            }
        }
    }

    async fn redial(&mut self) -> Result<Link, SdkError> {
        let mut link = Link::connect(&self.endpoint, self.opts.master, Role::Scheduler).await?;
        let mut framework = self.opts.framework.clone();
        framework.id = Some(self.framework_id.clone());
        link.send(&Message::Subscribe { framework }).await?;
        Ok(link)
    }

    async fn serve(&mut self, link: Link) -> LinkEnd {
        let Link {
            conn,
            mut send,
            mut recv,
        } = link;
        let (in_tx, mut in_rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            loop {
                let r = recv.recv().await;
                let end = !matches!(r, Ok(Some(_)));
                if in_tx.send(r).is_err() || end {
                    return;
                }
            }
        });
        let end = loop {
            tokio::select! {
                call = self.calls.recv() => match call {
                    Some(msg) => {
                        let teardown = matches!(msg, Message::Teardown);
                        if let Err(e) = send.send(&msg).await {
                            self.pending.push(msg);
                            break LinkEnd::Lost(e.to_string());
                        }
                        if teardown {
                            let _ = send.get_mut().finish();
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            break LinkEnd::Closed;
                        }
                    }
                    None => break LinkEnd::Closed,
                },
                input = in_rx.recv() => match input {
                    Some(Ok(Some(msg))) => {
                        if let Err(e) = self.on_message(msg, &mut send).await {
                            break LinkEnd::Lost(e);
                        }
                    }
                    Some(Ok(None)) | None => break LinkEnd::Lost("the master closed the stream".into()),
                    Some(Err(e)) => break LinkEnd::Lost(match conn.close_reason() {
                        Some(r) => r.to_string(),
                        None => e.to_string(),
                    }),
                },
            }
        };
        reader.abort();
        if matches!(end, LinkEnd::Closed) {
            conn.close(0u32.into(), b"scheduler closed");
        }
        end
    }

    async fn on_message(
        &mut self,
        msg: Message,
        send: &mut MessageWriter<quinn::SendStream>,
    ) -> Result<(), String> {
        let event = match msg {
            Message::Subscribed { framework_id, .. } => {
                self.framework_id = framework_id.clone();
                for call in std::mem::take(&mut self.pending) {
                    send.send(&call).await.map_err(|e| e.to_string())?;
                }
                Event::Subscribed { framework_id }
            }
            Message::Offers { offers } => Event::Offers(offers),
            Message::Rescind { offer_id } => Event::Rescind(offer_id),
            Message::Update { status } => {
                if let (Some(agent_id), Some(uuid)) = (&status.agent_id, &status.uuid) {
                    if self.opts.auto_acknowledge {
                        let ack = Message::Acknowledge {
                            agent_id: agent_id.clone(),
                            task_id: status.task_id.clone(),
                            uuid: uuid.clone(),
                        };
                        send.send(&ack).await.map_err(|e| e.to_string())?;
                    }
                    let key = (status.task_id.clone(), uuid.0.clone());
                    if !self.seen.insert(key.clone()) {
                        return Ok(()); // a duplicate: already delivered
                    }
                    self.seen_order.push_back(key);
                    if self.seen_order.len() > DEDUP_WINDOW {
                        if let Some(old) = self.seen_order.pop_front() {
                            self.seen.remove(&old);
                        }
                    }
                }
                Event::Update(status)
            }
            Message::Error { message } => Event::Error(message),
            Message::Heartbeat => return Ok(()),
            other => {
                tracing::warn!(kind = other.kind(), "unexpected message from the master");
                return Ok(());
            }
        };
        let _ = self.events.send(event);
        Ok(())
    }
}
