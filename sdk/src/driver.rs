//! The scheduler's driver: [`Scheduler`], the handle an application holds, and the background
//! task that owns the QUIC link and feeds the sans-IO [`SchedulerCore`].
//!
//! The task is one loop per control stream: it applies the application's calls to the core,
//! feeds it what the master sends, writes whatever the core wants sent and forwards the core's
//! events. When the link drops it redials with jittered backoff and reports the new stream to
//! the core, which re-subscribes. Blob uploads are plain I/O and run on the caller's task, on
//! the current connection.
//!
//! With several masters ([`SchedulerOptions::masters`]: one leader, standbys) every dial is a
//! pass of a [`MasterSet`]: the last leader first, a standby's `NotLeader { leader }` followed
//! at once, a short pause while no master leads, the exponential one only after a whole pass
//! failed. A leader that steps down (not-leader close, or `NotLeader` on the control stream)
//! is left at once for the leader; one lost without a word is dialled last next time. The new
//! leader sees a re-subscription under the framework's id, as after a master restart. The
//! first subscription's `Subscribe` and uploads travel in the first flight of each dial; an
//! upload that went to a standby waits for the leader's link ([`SdkError::NotConnected`]).

use crate::core::{Event, SchedulerCore};
use net::link::{self, Link, LinkError};
use net::masters::{self as master_set, MasterSet};
use net::tls::{PeerTls, TransportTuning};
use net::MessageWriter;
use proto::{
    AgentId, BlobKind, Digest, ExecutorId, Filters, FrameworkId, FrameworkInfo, OfferId, Role,
    TaskId, TaskInfo, TaskStatus,
};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Longest the background task waits for the master to acknowledge a `Teardown` (and the
/// rest of the control stream) before closing the connection anyway.
const TEARDOWN_DELIVERY: Duration = Duration::from_secs(10);

/// How long [`Scheduler::teardown`] waits for the background task to finish.
const TEARDOWN_WAIT: Duration = Duration::from_secs(12);

/// How to reach the master and what framework to subscribe.
#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// The masters' QUIC addresses (`host:port`; one leader, the rest standbys): the scheduler
    /// follows the leader among them. [`SchedulerOptions::new`] makes a set of one;
    /// [`SchedulerOptions::with_masters`] gives several.
    pub masters: MasterSet,
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
    /// How long one subscription attempt waits for the master's `Subscribed` once the link
    /// is up (default 10 s).
    pub subscribe_timeout: Duration,
    /// How long [`Scheduler::connect`] keeps redialing (with jittered backoff) masters that
    /// cannot be reached, or none of which leads, before it gives up with
    /// [`SdkError::Unreachable`] (default 60 s; one deadline across all the masters). A
    /// refusal (TLS, identity, subscription) ends it at once: redialing would not change it.
    pub connect_timeout: Duration,
}

impl SchedulerOptions {
    /// Options for a framework `name` in `role` on one master, with defaults for the rest
    /// (failover timeout 60 s).
    pub fn new(master: SocketAddr, tls: PeerTls, name: &str, role: &str) -> Self {
        Self::for_masters(MasterSet::single(master), tls, name, role)
    }

    /// [`SchedulerOptions::new`] for several masters (`--master a:5050,b:5050`).
    pub fn for_masters(masters: MasterSet, tls: PeerTls, name: &str, role: &str) -> Self {
        Self {
            masters,
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
            connect_timeout: Duration::from_secs(60),
        }
    }

    /// Dials these masters (one leader, standbys) instead of the one given to
    /// [`SchedulerOptions::new`].
    pub fn with_masters(mut self, masters: MasterSet) -> Self {
        self.masters = masters;
        self
    }
}

/// Whether a failed connection attempt may succeed if tried again: the master is down or
/// slow, the link lost the handshake. A refusal (TLS, identity, version, subscription) is
/// final, and so is a local set-up error.
fn is_transient(e: &SdkError) -> bool {
    match e {
        SdkError::Timeout(_) => true,
        // A standby, or no leader yet, or a name that does not resolve right now: another
        // master (or the same one later) may answer.
        SdkError::Link(LinkError::NotLeader { .. } | LinkError::Resolve { .. }) => true,
        SdkError::Link(LinkError::Connection(c)) => connection_transient(c),
        SdkError::Link(LinkError::Write(quinn::WriteError::ConnectionLost(c))) => {
            connection_transient(c)
        }
        SdkError::Link(LinkError::Write(_)) => true,
        SdkError::Link(LinkError::Frame(proto::frame::FrameError::Io(_)))
        | SdkError::Link(LinkError::Frame(proto::frame::FrameError::Truncated)) => true,
        _ => false,
    }
}

/// Whether a connection that ended this way may work if dialed again (see [`is_transient`]).
fn connection_transient(c: &quinn::ConnectionError) -> bool {
    use quinn::ConnectionError as C;
    match c {
        C::TimedOut | C::Reset | C::LocallyClosed | C::CidsExhausted => true,
        // A TLS alert: the master (or this side) refused the certificates; or the master
        // refused the connection outright (its connection limit): it said no, so say so.
        C::ConnectionClosed(close) => {
            let code = close.error_code;
            !is_tls_alert(code.into()) && code != quinn::TransportErrorCode::CONNECTION_REFUSED
        }
        C::TransportError(t) => !is_tls_alert(t.code.into()),
        // A standby, or a leader stepping down: the leader is elsewhere.
        C::ApplicationClosed(_) if link::is_not_leader_close(c) => true,
        // The master closed with a reason (identity, ACL) or speaks another QUIC version.
        C::ApplicationClosed(_) | C::VersionMismatch => false,
    }
}

impl SdkError {
    /// Whether the master (or the TLS handshake) said no: a certificate it does not accept, an
    /// identity or ACL it refuses, an invalid blob, a refused subscription. Trying again
    /// unchanged gives the same answer, unlike a link that failed or a master not up yet.
    pub fn is_refusal(&self) -> bool {
        match self {
            SdkError::Refused(_) => true,
            SdkError::Link(
                LinkError::Refused(_) | LinkError::HelloRefused(_) | LinkError::Tls(_),
            ) => true,
            SdkError::Link(LinkError::Connection(_) | LinkError::Write(_)) => !is_transient(self),
            _ => false,
        }
    }
}

/// QUIC carries TLS alerts as transport error codes 0x100 to 0x1ff (RFC 9001, section 4.8).
fn is_tls_alert(code: u64) -> bool {
    (0x100..0x200).contains(&code)
}

/// How long a refused subscription waits for the master's close reason.
const CLOSE_REASON_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Time an upload gets on top of its size at [`UPLOAD_MIN_RATE`].
const UPLOAD_GRACE: Duration = Duration::from_secs(20);

/// Slowest average upload rate waited for (bytes per second).
const UPLOAD_MIN_RATE: u64 = 64 * 1024;

/// What can go wrong in the SDK.
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    /// Connecting, TLS, or a blob transfer failed.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// An upload did not complete in time.
    #[error("upload did not complete within {0:?}")]
    UploadTimeout(Duration),
    /// The master refused the subscription.
    #[error("subscription refused: {0}")]
    Refused(String),
    /// No subscription in time.
    #[error("no answer from the master within {0:?}")]
    Timeout(Duration),
    /// The master could not be reached (or did not answer) within the connect deadline.
    #[error("cannot reach the master within {after:?}: {last}")]
    Unreachable {
        /// The connect deadline.
        after: Duration,
        /// Why the last attempt failed.
        last: String,
    },
    /// The scheduler's background task has stopped.
    #[error("the scheduler is closed")]
    Closed,
    /// Not connected right now (for blob uploads, which are not queued).
    #[error("not connected to the master")]
    NotConnected,
}

/// An application call, run on the core inside the background task, so that each
/// [`Scheduler`] method is the core method of the same name.
type Call = Box<dyn FnOnce(&mut SchedulerCore) + Send>;

/// A connected, subscribed framework scheduler.
pub struct Scheduler {
    /// Calls for the background task's core.
    calls: mpsc::UnboundedSender<Call>,
    /// Events the background task forwards from the core.
    events: mpsc::UnboundedReceiver<Event>,
    /// The current connection, for blob uploads (`None` while reconnecting).
    conn: Arc<Mutex<Option<quinn::Connection>>>,
    /// Learned at the first subscription.
    framework_id: FrameworkId,
    /// The background task, aborted on drop.
    task: tokio::task::JoinHandle<()>,
}

impl Scheduler {
    /// Connects, subscribes, and waits for the master's `Subscribed`. A master that cannot be
    /// reached (down, not up yet, a link losing the handshake) is redialed with jittered
    /// backoff until `opts.connect_timeout`; a refusal is returned at once.
    pub async fn connect(opts: SchedulerOptions) -> Result<Self, SdkError> {
        Self::connect_then(opts, |_| {}).await
    }

    /// [`Scheduler::connect`], calling `on_link` with an [`Uploader`] as soon as the first
    /// link is up, before the subscription is answered: uploads started there travel while
    /// the master subscribes the framework and makes its first offers, instead of after
    /// (`tessera run` sends its module this way). The uploader follows the scheduler's
    /// connection; an upload caught by a lost link fails and may be tried again.
    pub async fn connect_then(
        opts: SchedulerOptions,
        on_link: impl FnOnce(Uploader),
    ) -> Result<Self, SdkError> {
        let conn = Arc::new(Mutex::new(None));
        let mut on_link = Some(on_link);
        let endpoint = link::client_endpoint(&opts.tls, opts.tuning)?;
        let mut core = SchedulerCore::new(opts.framework.clone(), opts.auto_acknowledge);
        let deadline = tokio::time::Instant::now() + opts.connect_timeout;
        let mut masters = opts.masters.clone().with_max_backoff(opts.max_backoff);
        let on_link = Mutex::new(on_link.take());
        let (link, framework_id) = loop {
            let attempt = tokio::time::timeout_at(
                deadline,
                Self::subscribe_once(&endpoint, &opts, &mut masters, &mut core, &conn, &on_link),
            )
            .await;
            if !matches!(attempt, Ok(Ok(_))) {
                // Uploads wait for the next link rather than use a failed one.
                *conn.lock().expect("poisoned") = None;
            }
            let (last, delay) = match attempt {
                Ok(Ok(done)) => break done,
                Ok(Err(f)) if !is_transient(&f.error) => return Err(f.error),
                Ok(Err(f)) => {
                    let delay = match &f.error {
                        // Sent to a leader this pass did not reach: go there now.
                        SdkError::Link(LinkError::NotLeader {
                            leader: Some(leader),
                        }) => {
                            masters.set_hint(Some(leader.clone()));
                            Duration::ZERO
                        }
                        _ => masters.retry_pause(f.no_leader),
                    };
                    (f.error.to_string(), delay)
                }
                Err(_) => (
                    "no answer before the deadline".to_owned(),
                    masters.retry_pause(false),
                ),
            };
            if tokio::time::Instant::now() + delay >= deadline {
                return Err(SdkError::Unreachable {
                    after: opts.connect_timeout,
                    last,
                });
            }
            tracing::warn!(error = %last, ?delay, "cannot reach the master; retrying");
            // The core restarts from a clean subscription on the next link.
            core = SchedulerCore::new(opts.framework.clone(), opts.auto_acknowledge);
            tokio::time::sleep(delay).await;
        };
        tracing::info!(%framework_id, "subscribed");
        let (calls, calls_rx) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        *conn.lock().expect("poisoned") = Some(link.conn.clone());
        let _ = events_tx.send(Event::Subscribed {
            framework_id: framework_id.clone(),
        });
        masters.reset_backoff();
        let background = Background {
            core,
            endpoint,
            masters,
            calls: calls_rx,
            events: events_tx,
            conn: conn.clone(),
        };
        let task = tokio::spawn(background.run(link));
        Ok(Self {
            calls,
            events,
            conn,
            framework_id,
            task,
        })
    }

    /// One pass over the masters and a subscription with the one that accepts: the link and
    /// the framework id, or why not.
    async fn subscribe_once(
        endpoint: &quinn::Endpoint,
        opts: &SchedulerOptions,
        masters: &mut MasterSet,
        core: &mut SchedulerCore,
        conn: &Arc<Mutex<Option<quinn::Connection>>>,
        on_link: &Mutex<Option<impl FnOnce(Uploader)>>,
    ) -> Result<(Link, FrameworkId), Attempt> {
        // The Subscribe travels right behind the Hello: one round trip fewer than waiting for
        // the HelloAck first.
        core.handle_connected();
        let mut first = Vec::new();
        while let Some(msg) = core.poll_transmit() {
            first.push(msg);
        }
        // Uploads start as soon as QUIC is up, in the Hello's flight: the master holds their
        // streams until it has accepted the Hello. A standby drops them; they wait for the
        // leader's link then (see `Uploader::upload`).
        let first = &first;
        let pass = masters
            .dial_pass(|addr| async move {
                let sock = master_set::resolve(&addr).await?;
                let r = Link::connect_with_then(endpoint, sock, Role::Scheduler, first, |c| {
                    *conn.lock().expect("poisoned") = Some(c.clone());
                    if let Some(on_link) = on_link.lock().expect("poisoned").take() {
                        on_link(Uploader { conn: conn.clone() });
                    }
                })
                .await;
                if r.is_err() {
                    *conn.lock().expect("poisoned") = None;
                }
                r
            })
            .await;
        let mut link = match pass {
            Ok((addr, link)) => {
                tracing::debug!(master = %addr, "connected; subscribing");
                link
            }
            Err(failed) => {
                return Err(Attempt {
                    error: SdkError::Link(failed.fatal.unwrap_or(failed.last)),
                    no_leader: failed.no_leader,
                })
            }
        };
        *conn.lock().expect("poisoned") = Some(link.conn.clone());
        let framework_id = tokio::time::timeout(opts.subscribe_timeout, async {
            loop {
                while let Some(msg) = core.poll_transmit() {
                    link.send(&msg).await?;
                }
                while let Some(event) = core.poll_event() {
                    match event {
                        Event::Subscribed { framework_id } => return Ok(framework_id),
                        Event::Error(message) => return Err(SdkError::Refused(message)),
                        _ => continue, // nothing else comes before the subscription
                    }
                }
                let received = match link.recv().await {
                    Ok(r) => r,
                    Err(e) => return Err(not_leader_or(&link.conn, e.into())),
                };
                match received {
                    // The leader stepped down between its HelloAck and the subscription.
                    Some(proto::Message::NotLeader { leader }) => {
                        return Err(SdkError::Link(LinkError::NotLeader { leader }))
                    }
                    Some(msg) => core.handle_message(msg),
                    None => {
                        // The reason travels with the connection's close, just behind.
                        let closed = tokio::time::timeout(CLOSE_REASON_WAIT, link.conn.closed());
                        let why = match closed.await {
                            Ok(c) if link::is_not_leader_close(&c) => {
                                return Err(SdkError::Link(LinkError::NotLeader { leader: None }))
                            }
                            Ok(quinn::ConnectionError::ApplicationClosed(c)) => {
                                String::from_utf8_lossy(&c.reason).into_owned()
                            }
                            _ => "the master closed the stream".to_owned(),
                        };
                        return Err(SdkError::Refused(why));
                    }
                }
            }
        })
        .await
        .map_err(|_| SdkError::Timeout(opts.subscribe_timeout))
        .and_then(|r| r)
        .map_err(|error| Attempt {
            no_leader: matches!(error, SdkError::Link(LinkError::NotLeader { leader: None })),
            error,
        })?;
        Ok((link, framework_id))
    }

    /// The framework's id.
    pub fn framework_id(&self) -> &FrameworkId {
        &self.framework_id
    }

    /// The next event; `None` once the scheduler is closed.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    fn call(&self, call: impl FnOnce(&mut SchedulerCore) + Send + 'static) -> Result<(), SdkError> {
        self.calls
            .send(Box::new(call))
            .map_err(|_| SdkError::Closed)
    }

    /// Launches `tasks` on the resources of `offer_ids` (all of one agent); the unused rest is
    /// declined with `filters`.
    pub fn accept(
        &self,
        offer_ids: Vec<OfferId>,
        tasks: Vec<TaskInfo>,
        filters: Filters,
    ) -> Result<(), SdkError> {
        self.call(move |core| core.accept(offer_ids, tasks, filters))
    }

    /// Declines offers; their agents are not offered to this framework again for
    /// `filters.refuse_seconds` (default 5 s).
    pub fn decline(&self, offer_ids: Vec<OfferId>, filters: Filters) -> Result<(), SdkError> {
        self.call(move |core| core.decline(offer_ids, filters))
    }

    /// Kills a task; its end arrives as a `TASK_KILLED` update.
    pub fn kill(&self, task_id: TaskId) -> Result<(), SdkError> {
        self.call(move |core| core.kill(task_id))
    }

    /// Sends bytes to the framework's executor on an agent: delivered at most once (as in
    /// Mesos), at most [`proto::MAX_FRAMEWORK_MESSAGE`] bytes.
    pub fn send_message(
        &self,
        agent_id: AgentId,
        executor_id: ExecutorId,
        data: Vec<u8>,
    ) -> Result<(), SdkError> {
        self.call(move |core| core.send_message(agent_id, executor_id, data))
    }

    /// Stops the framework's executor on an agent (its live tasks are killed); its end
    /// arrives as [`Event::ExecutorExited`](crate::Event::ExecutorExited).
    pub fn shutdown_executor(
        &self,
        agent_id: AgentId,
        executor_id: ExecutorId,
    ) -> Result<(), SdkError> {
        self.call(move |core| core.shutdown_executor(agent_id, executor_id))
    }

    /// Acknowledges an update (only needed with `auto_acknowledge` off); updates without a
    /// uuid need none.
    pub fn acknowledge(&self, status: &TaskStatus) -> Result<(), SdkError> {
        if status.agent_id.is_none() || status.uuid.is_none() {
            return Ok(());
        }
        let status = status.clone();
        self.call(move |core| core.acknowledge(&status))
    }

    /// Clears this framework's decline filters and resumes offers.
    pub fn revive(&self) -> Result<(), SdkError> {
        self.call(SchedulerCore::revive)
    }

    /// Stops offers until [`Scheduler::revive`].
    pub fn suppress(&self) -> Result<(), SdkError> {
        self.call(SchedulerCore::suppress)
    }

    /// Asks for the latest state of tasks (all of the framework's when empty).
    pub fn reconcile(&self, task_ids: Vec<TaskId>) -> Result<(), SdkError> {
        self.call(move |core| core.reconcile(task_ids))
    }

    /// Ends the framework: the master kills its tasks and forgets it.
    pub async fn teardown(mut self) -> Result<(), SdkError> {
        self.call(SchedulerCore::teardown)?;
        let _ = tokio::time::timeout(TEARDOWN_WAIT, &mut self.task).await;
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
        self.uploader().upload(kind, bytes).await
    }

    /// A handle that uploads blobs on the scheduler's current connection without borrowing
    /// the scheduler, so uploads can run on tasks of their own while the caller keeps reading
    /// events (`tessera run` uploads while it waits for an offer).
    pub fn uploader(&self) -> Uploader {
        Uploader {
            conn: self.conn.clone(),
        }
    }
}

/// How one connection attempt of [`Scheduler::connect`] failed.
struct Attempt {
    /// Why.
    error: SdkError,
    /// Some master said that nobody leads yet: retry after the short pause.
    no_leader: bool,
}

/// `e`, or [`LinkError::NotLeader`] when the connection ended with the not-leader close (the
/// master stepped down or is a standby): the leader is elsewhere, not the link broken.
fn not_leader_or(conn: &quinn::Connection, e: SdkError) -> SdkError {
    match conn.close_reason() {
        Some(r) if link::is_not_leader_close(&r) => {
            SdkError::Link(LinkError::NotLeader { leader: None })
        }
        _ => e,
    }
}

/// Uploads blobs on a [`Scheduler`]'s current connection; see [`Scheduler::uploader`].
#[derive(Clone)]
pub struct Uploader {
    /// The scheduler's current connection (`None` while reconnecting).
    conn: Arc<Mutex<Option<quinn::Connection>>>,
}

impl Uploader {
    /// Uploads `bytes` as a blob of `kind` (a module is validated by the master) and returns
    /// its digest once the master has stored it.
    pub async fn upload(&self, kind: BlobKind, bytes: &[u8]) -> Result<Digest, SdkError> {
        let conn = self.conn.lock().expect("poisoned").clone();
        let conn = conn.ok_or(SdkError::NotConnected)?;
        // As long as the master would wait for the bytes, and then some: a link that stalls
        // fails the upload instead of hanging the caller.
        let limit = UPLOAD_GRACE + Duration::from_secs(bytes.len() as u64 / UPLOAD_MIN_RATE);
        tokio::time::timeout(limit, link::upload_blob(&conn, kind, bytes))
            .await
            .map_err(|_| SdkError::UploadTimeout(limit))?
            .map_err(|e| match conn.close_reason() {
                // That connection was a standby's (or its master stepped down): no upload was
                // refused, the scheduler is on its way to the leader.
                Some(r) if link::is_not_leader_close(&r) => SdkError::NotConnected,
                _ => SdkError::from(e),
            })
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

/// The background task's state: the core and what it needs to redial.
struct Background {
    /// The protocol state.
    core: SchedulerCore,
    /// The client endpoint every dial goes through.
    endpoint: quinn::Endpoint,
    /// Where to redial, the leader first, and the pauses between passes.
    masters: MasterSet,
    /// Calls from the [`Scheduler`].
    calls: mpsc::UnboundedReceiver<Call>,
    /// Events to the [`Scheduler`].
    events: mpsc::UnboundedSender<Event>,
    /// Shared with the [`Scheduler`] for uploads.
    conn: Arc<Mutex<Option<quinn::Connection>>>,
}

/// How one control stream ended.
enum LinkEnd {
    /// Torn down, or the [`Scheduler`] is gone: stop.
    Closed,
    /// Lost (the core has been told): redial.
    Lost,
    /// The master stopped leading (not-leader close, or `NotLeader` naming the leader if it
    /// knows one; the core has been told): redial at once, the leader first.
    NotLeader(Option<String>),
}

impl Background {
    /// Serves `link`, then redials and serves again whenever it is lost, until closed.
    async fn run(mut self, link: Link) {
        let mut link = Some(link);
        let mut current_addr = self.masters.hint().map(str::to_owned);
        loop {
            let current = match link.take() {
                Some(l) => l,
                None => {
                    let ep = &self.endpoint;
                    let pass = self
                        .masters
                        .dial_pass(|addr| async move {
                            master_set::connect_to(ep, &addr, Role::Scheduler, &[]).await
                        })
                        .await;
                    match pass {
                        Ok((addr, l)) => {
                            tracing::info!(master = %addr, "reconnected; re-subscribing");
                            self.masters.reset_backoff();
                            self.core.handle_connected();
                            current_addr = Some(addr);
                            l
                        }
                        Err(failed) => {
                            let delay = self.masters.retry_pause(failed.no_leader);
                            tracing::warn!(masters = %self.masters, error = %failed.last, ?delay, "cannot reach the leading master");
                            if self.calls.is_closed() {
                                return;
                            }
                            tokio::time::sleep(delay).await;
                            continue;
                        }
                    }
                }
            };
            *self.conn.lock().expect("poisoned") = Some(current.conn.clone());
            let end = self.serve(current).await;
            self.forward_events();
            if !matches!(end, LinkEnd::Closed) {
                *self.conn.lock().expect("poisoned") = None;
            }
            match end {
                LinkEnd::Closed => return,
                LinkEnd::Lost => {
                    // Lost without a word: that master may be dead, so it is dialled last.
                    if let Some(addr) = &current_addr {
                        self.masters.demote(addr);
                    }
                }
                LinkEnd::NotLeader(leader) => {
                    if leader.is_some() {
                        self.masters.set_hint(leader);
                    }
                }
            }
        }
    }

    /// Runs the core on one control stream until it is lost or closed.
    async fn serve(&mut self, link: Link) -> LinkEnd {
        let Link {
            conn,
            mut send,
            mut recv,
        } = link;
        // A reader task of its own, so incoming messages keep flowing while a write waits.
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
            // Events first: the application's task wakes while the acknowledgements are
            // written.
            self.forward_events();
            if !self.transmit(&mut send).await {
                break LinkEnd::Lost;
            }
            if self.core.is_finished() {
                // Closing the connection drops whatever is still unacknowledged, so on a lossy
                // link a timer is no guarantee: wait until the master has acknowledged every
                // byte of the control stream, the Teardown included.
                let _ = send.get_mut().finish();
                let delivered =
                    tokio::time::timeout(TEARDOWN_DELIVERY, send.get_mut().stopped()).await;
                if delivered.is_err() {
                    tracing::warn!("the master did not acknowledge the teardown in time");
                }
                break LinkEnd::Closed;
            }
            tokio::select! {
                call = self.calls.recv() => match call {
                    Some(call) => call(&mut self.core),
                    None => break LinkEnd::Closed,
                },
                input = in_rx.recv() => match input {
                    Some(Ok(Some(proto::Message::NotLeader { leader }))) => {
                        self.core.handle_disconnected("the master is no longer the leader".into());
                        break LinkEnd::NotLeader(leader);
                    }
                    Some(Ok(Some(msg))) => self.core.handle_message(msg),
                    Some(Ok(None)) | None => {
                        self.core.handle_disconnected("the master closed the stream".into());
                        // A master stepping down may end the stream before its not-leader
                        // close, which follows just behind.
                        let closed = tokio::time::timeout(CLOSE_REASON_WAIT, conn.closed()).await;
                        if closed.is_ok_and(|r| link::is_not_leader_close(&r)) {
                            break LinkEnd::NotLeader(None);
                        }
                        break LinkEnd::Lost;
                    }
                    Some(Err(e)) => {
                        let reason = conn.close_reason();
                        let why = match &reason {
                            Some(r) => r.to_string(),
                            None => e.to_string(),
                        };
                        self.core.handle_disconnected(why);
                        if reason.is_some_and(|r| link::is_not_leader_close(&r)) {
                            break LinkEnd::NotLeader(None);
                        }
                        break LinkEnd::Lost;
                    }
                },
            }
        };
        reader.abort();
        if matches!(end, LinkEnd::Closed) {
            conn.close(0u32.into(), b"scheduler closed");
        }
        end
    }

    /// Writes what the core has to send; `false` (the core told) when a write failed.
    async fn transmit(&mut self, send: &mut MessageWriter<quinn::SendStream>) -> bool {
        while let Some(msg) = self.core.poll_transmit() {
            if let Err(e) = send.send(&msg).await {
                self.core.handle_write_failed(msg, e.to_string());
                return false;
            }
        }
        true
    }

    /// Hands the core's events to the application (gone already: nothing to do).
    fn forward_events(&mut self) {
        while let Some(event) = self.core.poll_event() {
            let _ = self.events.send(event);
        }
    }
}
