//! One term of serving: load the registry, recover the core, run its loop (persist, then
//! send), and wind down. A single master's one term lasts until shutdown; one of several
//! masters serves a term per election and steps down when it can no longer prove it leads.

use super::pipeline::{Held, Pipeline};
use super::{
    close_code, ConnShared, Input, MasterError, MasterOptions, Mode, GROUP_COMMIT, INPUT_QUEUE,
};
use crate::allocator::Allocator;
use crate::core::{Action, ConnId, Event, Master};
use crate::ha::AsyncRegistry;
use crate::http::metrics::Metrics;
use crate::registry::{RegistryError, RegistryOp, Snapshot};
use proto::Message;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// What every term shares.
pub(super) struct Ctx<'a> {
    pub(super) opts: &'a MasterOptions,
    pub(super) shared: &'a Arc<ConnShared>,
    pub(super) mode: &'a watch::Sender<Mode>,
    /// What the driver records for `/metrics`.
    pub(super) metrics: &'a Arc<Metrics>,
}

/// How long a term may still act, for a master that is one of several.
pub(super) struct Validity {
    /// The term's fence (logged).
    pub(super) fence: u64,
    /// Until when it may act; `None` once lost (see `Term::valid_until`).
    pub(super) until: watch::Receiver<Option<std::time::Instant>>,
}

impl Validity {
    /// The instant the term ends, as now known (`None`: already lost).
    fn deadline(&self) -> Option<Instant> {
        (*self.until.borrow()).map(Instant::from_std)
    }

    /// Whether the term is still valid now.
    fn valid_now(&self) -> bool {
        self.deadline().is_some_and(|d| Instant::now() < d)
    }
}

/// How a term ended.
pub(super) enum TermEnd {
    /// The master was asked to stop.
    Shutdown,
    /// This master can no longer prove it leads (lease lost or late, write fenced or failed).
    SteppedDown(String),
}

/// Milliseconds since the Unix epoch, logged with HA events so that the logs of several
/// masters line up.
pub(super) fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// The term's open connections: the QUIC connection, its writer queue, its principal.
type Conns = HashMap<ConnId, (quinn::Connection, mpsc::Sender<Message>, String)>;

/// The registry write in flight: it borrows the store and gives it back with the outcome and
/// how long it took.
type Writing<'a> = Pin<
    Box<dyn Future<Output = (&'a mut dyn AsyncRegistry, Result<(), Load>, Duration)> + Send + 'a>,
>;

/// Serves one term; `allocator` is taken for the core and given back when the term ends.
pub(super) async fn lead(
    ctx: &Ctx<'_>,
    registry: &mut dyn AsyncRegistry,
    validity: Option<Validity>,
    allocator: &mut Option<Box<dyn Allocator>>,
    shutdown: &mut Pin<&mut impl Future<Output = ()>>,
) -> Result<TermEnd, MasterError> {
    let started = Instant::now();
    let snapshot = match load(registry, validity.as_ref()).await {
        Ok(s) => s,
        Err(Load::Fatal(e)) => return Err(e.into()),
        Err(Load::StepDown(why)) => return Ok(TermEnd::SteppedDown(why)),
    };
    let (agents, frameworks, tasks) = (
        snapshot.agents.len(),
        snapshot.frameworks.len(),
        snapshot.tasks.len(),
    );
    let mut config = ctx.opts.config.clone();
    if let Some(v) = &validity {
        // Ids minted in this term (offers, agents, frameworks) must not repeat ids of this
        // master's earlier terms, which peers may still hold.
        config.run_id = format!("{}t{}", config.run_id, v.fence);
    }
    let mut core = Master::recover(
        config,
        allocator
            .take()
            .expect("the allocator is back between terms"),
        &snapshot,
        Instant::now().into_std(),
    );
    let mut pending_ops = Vec::new();
    restore_blobs(
        ctx,
        &mut core,
        &snapshot,
        validity.is_some(),
        &mut pending_ops,
    )?;
    drop(snapshot);
    tracing::info!(
        agents,
        frameworks,
        tasks,
        fence = validity.as_ref().map(|v| v.fence),
        elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
        unix_ms = unix_ms(),
        allocator = core.allocator_name(),
        "registry loaded; serving (agents re-register and frameworks re-subscribe)"
    );
    let (tx, mut rx) = mpsc::channel::<Input>(INPUT_QUEUE);
    ctx.mode.send_replace(Mode::Leading(tx));
    let mut conns: Conns = HashMap::new();
    let mut pending_acks: Vec<oneshot::Sender<()>> = Vec::new();
    // HTTP reads of agents waiting for their answers (see `core::queries`).
    let mut replies: Replies = HashMap::new();
    let mut first_offer = FirstOffer {
        pending: true,
        started,
        known_tasks: tasks,
    };
    let mut valid_changed = validity.as_ref().map(|v| v.until.clone());
    // Persist, then send, without stopping to read while a write is in flight: the core's
    // changes gather in the pipeline's next commit, one commit is written at a time, and each
    // action waits for the changes queued before it (see `pipeline`). An input handled while a
    // commit is in flight joins the next one, so a burst of inputs still shares one commit.
    let mut pipeline: Pipeline<oneshot::Sender<()>> = Pipeline::default();
    let mut store: Option<&mut dyn AsyncRegistry> = Some(&mut *registry);
    let mut writing: Option<Writing<'_>> = None;
    let end: Result<TermEnd, MasterError> = 'term: loop {
        loop {
            collect_blobs(ctx, &mut core, validity.is_some(), &mut pending_ops);
            // The driver's own changes hold back everything the core queued after them.
            pipeline.persist(std::mem::take(&mut pending_ops));
            let mut now = Vec::new();
            while let Some(action) = core.poll_action() {
                now.extend(pipeline.route(action));
            }
            for ack in std::mem::take(&mut pending_acks) {
                if let Some(ack) = pipeline.ack(ack) {
                    let _ = ack.send(());
                }
            }
            if !now.is_empty() && !validity.as_ref().is_none_or(Validity::valid_now) {
                break 'term Ok(TermEnd::SteppedDown(
                    "the term ended before its next send".into(),
                ));
            }
            for action in now {
                execute(ctx, &mut core, &mut conns, action, &mut first_offer);
            }
            if writing.is_none() {
                if let Some(ops) = pipeline.start() {
                    if !validity.as_ref().is_none_or(Validity::valid_now) {
                        break 'term Ok(TermEnd::SteppedDown(
                            "the term ended before its next write".into(),
                        ));
                    }
                    let registry = store.take().expect("no write in flight");
                    let validity = validity.as_ref();
                    writing = Some(Box::pin(async move {
                        let started = Instant::now();
                        let written = write(&mut *registry, &ops, validity).await;
                        (registry, written, started.elapsed())
                    }));
                }
            }
            // A send that failed may have made the core act (a peer cut off as too slow).
            if !core.has_actions() {
                break;
            }
        }
        while let Some((id, result)) = core.poll_answer() {
            if let Some(reply) = replies.remove(&id) {
                let _ = reply.send(result);
            }
        }
        let wake = core.poll_timeout().map(Instant::from_std);
        let sleep = net::timer::sleep_until(wake);
        let term_end = net::timer::sleep_until(validity.as_ref().and_then(Validity::deadline));
        tokio::select! {
            _ = shutdown.as_mut() => break 'term Ok(TermEnd::Shutdown),
            (registry, written, took) = async { writing.as_mut().expect("guarded").await }, if writing.is_some() => {
                writing = None;
                store = Some(registry);
                ctx.metrics.registry_write.observe(took.as_secs_f64());
                match written {
                    Ok(()) => {}
                    Err(Load::StepDown(why)) => break 'term Ok(TermEnd::SteppedDown(why)),
                    Err(Load::Fatal(e)) => {
                        tracing::error!(error = %e, "cannot write the registry; stopping");
                        break 'term Err(e.into());
                    }
                }
                // A write that took the rest of the term is not followed by its sends.
                if !validity.as_ref().is_none_or(Validity::valid_now) {
                    break 'term Ok(TermEnd::SteppedDown("the term ended during a write".into()));
                }
                for held in pipeline.committed() {
                    match held {
                        Held::Action(action) => execute(ctx, &mut core, &mut conns, action, &mut first_offer),
                        Held::Ack(ack) => {
                            let _ = ack.send(());
                        }
                    }
                }
            }
            input = rx.recv(), if pipeline.has_room() => match input {
                Some(input) => {
                    handle_input(ctx, &mut core, &mut conns, input, validity.is_some(), &mut pending_ops, &mut pending_acks, &mut replies);
                    // Inputs already waiting are handled before the actions are drained,
                    // so their registry changes share one commit.
                    for _ in 0..GROUP_COMMIT {
                        match rx.try_recv() {
                            Ok(input) => handle_input(ctx, &mut core, &mut conns, input, validity.is_some(), &mut pending_ops, &mut pending_acks, &mut replies),
                            Err(_) => break,
                        }
                    }
                }
                None => break 'term Ok(TermEnd::Shutdown),
            },
            _ = sleep => {
                let at = std::time::Instant::now();
                core.handle_timeout(at);
                ctx.metrics.allocation_round.observe(at.elapsed().as_secs_f64());
            }
            _ = term_end, if validity.is_some() => {
                if !validity.as_ref().is_some_and(Validity::valid_now) {
                    break 'term Ok(TermEnd::SteppedDown("the lease was not renewed in time".into()));
                }
            }
            changed = async { valid_changed.as_mut().expect("guarded").changed().await }, if valid_changed.is_some() => {
                if changed.is_err() || valid_changed.as_ref().is_some_and(|v| v.borrow().is_none()) {
                    break 'term Ok(TermEnd::SteppedDown("the term was lost".into()));
                }
            }
        }
    };
    // At shutdown the write in flight is finished and the changes gathered meanwhile are
    // written too (a launch or an update may have gone ahead of them), so a clean stop loses
    // nothing; what waited for them is not sent, as after a crash.
    if let Ok(TermEnd::Shutdown) = &end {
        let registry = match writing.take() {
            Some(w) => Some(w.await.0),
            None => store.take(),
        };
        if let Some(registry) = registry {
            pipeline.committed();
            while let Some(ops) = pipeline.start() {
                if let Err(why) = write(&mut *registry, &ops, validity.as_ref()).await {
                    let why = match why {
                        Load::Fatal(e) => e.to_string(),
                        Load::StepDown(why) => why,
                    };
                    tracing::warn!(error = %why, "cannot write the last changes at shutdown");
                    break;
                }
                pipeline.committed();
            }
        }
    }
    // New connections are told to look elsewhere, then this term's are closed: a peer must
    // not keep talking to a master that no longer leads.
    ctx.mode.send_replace(Mode::Standby(None));
    let code = if validity.is_some() {
        close_code::NOT_LEADER
    } else {
        close_code::NORMAL
    };
    for (_, (c, _, _)) in conns.drain() {
        c.close(code.into(), b"this master no longer leads");
    }
    drop(rx);
    *allocator = Some(core.into_allocator());
    end
}

/// Why a registry call did not succeed.
enum Load {
    /// The master cannot go on at all (the embedded store failed; a registry it cannot read).
    Fatal(RegistryError),
    /// This term cannot go on (fenced, late, the service unreachable): step down and campaign.
    StepDown(String),
}

/// Loads the registry at the start of a term.
async fn load(
    registry: &mut dyn AsyncRegistry,
    validity: Option<&Validity>,
) -> Result<Snapshot, Load> {
    let Some(v) = validity else {
        return registry.load().await.map_err(Load::Fatal);
    };
    let Some(deadline) = v.deadline() else {
        return Err(Load::StepDown(
            "the term was lost before the registry was read".into(),
        ));
    };
    match tokio::time::timeout_at(deadline, registry.load()).await {
        Ok(Ok(snapshot)) => Ok(snapshot),
        Ok(Err(e @ (RegistryError::NewerSchema { .. } | RegistryError::Corrupt { .. }))) => {
            Err(Load::Fatal(e))
        }
        Ok(Err(e)) => Err(Load::StepDown(format!("reading the registry: {e}"))),
        Err(_) => Err(Load::StepDown(
            "the registry was not read within the term".into(),
        )),
    }
}

/// Writes one batch: durable, or fenced/late (step down), or failed.
async fn write(
    registry: &mut dyn AsyncRegistry,
    ops: &[RegistryOp],
    validity: Option<&Validity>,
) -> Result<(), Load> {
    let Some(v) = validity else {
        return registry.apply(ops).await.map_err(Load::Fatal);
    };
    let Some(deadline) = v.deadline() else {
        return Err(Load::StepDown("the term was lost before a write".into()));
    };
    match tokio::time::timeout_at(deadline, registry.apply(ops)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(RegistryError::Fenced)) => Err(Load::StepDown(
            "a registry write was fenced: another master leads".into(),
        )),
        Ok(Err(e)) => Err(Load::StepDown(format!("a registry write failed: {e}"))),
        // Its outcome is unknown: only a successor's load will tell.
        Err(_) => Err(Load::StepDown(
            "a registry write was not confirmed within the term".into(),
        )),
    }
}

/// The term's first offers, logged once (how long a restarted master took to serve).
struct FirstOffer {
    /// None sent yet.
    pending: bool,
    /// When the term started.
    started: Instant,
    /// Tasks the registry held at the start.
    known_tasks: usize,
}

/// Executes a drained `Send` or `Close` (the loop writes the `Persist`s).
fn execute(
    ctx: &Ctx<'_>,
    core: &mut Master,
    conns: &mut Conns,
    action: Action,
    first_offer: &mut FirstOffer,
) {
    match action {
        Action::Persist(_) => unreachable!("separated by the loop"),
        Action::Send { conn, msg } => {
            if first_offer.pending && matches!(msg, Message::Offers { .. }) {
                first_offer.pending = false;
                tracing::info!(
                    after_start_ms = first_offer.started.elapsed().as_secs_f64() * 1e3,
                    known_tasks = first_offer.known_tasks,
                    unix_ms = unix_ms(),
                    "first offers served"
                );
            }
            ctx.metrics.sent(&msg, std::time::Instant::now());
            send(core, conns, conn, msg);
        }
        Action::Close { conn, reason } => {
            if let Some((c, _, _)) = conns.remove(&conn) {
                tracing::info!(conn, %reason, "closing connection");
                close_after_flush(c, reason);
            }
        }
    }
}

/// Queues `msg` for its connection; a peer whose queue is full is cut off.
fn send(core: &mut Master, conns: &mut Conns, conn: ConnId, msg: Message) {
    if let Some((c, writer, _)) = conns.get(&conn) {
        if writer.try_send(msg).is_err() {
            tracing::warn!(conn, "peer too slow or gone; closing");
            c.close(close_code::TOO_SLOW.into(), b"too slow reading messages");
            // Forgotten at once: its queue and the core's books let go now.
            conns.remove(&conn);
            core.handle(Instant::now().into_std(), Event::Disconnected { conn });
        }
    }
}

/// Tells a new core which blobs it holds and whose they are. A single master scans its store
/// (owners recorded beside each blob); one of several trusts the shared registry for the list
/// and owners, drops entries whose blob it lacks (mirroring lagged), and records blobs only it
/// has (they may be collected later like any other).
fn restore_blobs(
    ctx: &Ctx<'_>,
    core: &mut Master,
    snapshot: &Snapshot,
    shared_registry: bool,
    pending_ops: &mut Vec<RegistryOp>,
) -> Result<(), MasterError> {
    let store = &ctx.shared.store;
    let now = || Instant::now().into_std();
    let local = store.scan()?;
    if !shared_registry {
        for (digest, kind) in local {
            core.handle(
                now(),
                Event::BlobStored {
                    digest,
                    kind,
                    owner: None,
                },
            );
            // Its uploaders before the restart (recorded beside it) may use it again.
            for owner in store.owners(&digest)? {
                core.handle(
                    now(),
                    Event::BlobStored {
                        digest,
                        kind,
                        owner: Some(owner),
                    },
                );
            }
        }
        return Ok(());
    }
    let here: HashMap<_, _> = local.into_iter().collect();
    for blob in &snapshot.blobs {
        if !here.contains_key(&blob.digest) {
            tracing::warn!(digest = %blob.digest.to_hex(), "a blob the registry lists is not here (not mirrored in time); dropped: it must be uploaded again");
            pending_ops.push(RegistryOp::RemoveBlob(blob.digest));
            continue;
        }
        for owner in std::iter::once(None).chain(blob.owners.iter().cloned().map(Some)) {
            core.handle(
                now(),
                Event::BlobStored {
                    digest: blob.digest,
                    kind: blob.kind,
                    owner,
                },
            );
        }
    }
    for (digest, kind) in here {
        if snapshot.blobs.iter().any(|b| b.digest == digest) {
            continue;
        }
        core.handle(
            now(),
            Event::BlobStored {
                digest,
                kind,
                owner: None,
            },
        );
        let size = std::fs::metadata(store.path(&digest))
            .map(|m| m.len())
            .unwrap_or(0);
        pending_ops.push(RegistryOp::PutBlob {
            digest,
            kind,
            size,
            owner: None,
        });
    }
    Ok(())
}

/// Deletes the blobs the core collected (recording that in a shared registry).
fn collect_blobs(
    ctx: &Ctx<'_>,
    core: &mut Master,
    shared_registry: bool,
    pending_ops: &mut Vec<RegistryOp>,
) {
    while let Some(digest) = core.poll_blob_gc() {
        // One unlink, in the loop: a re-upload's `BlobStored` queued behind it then finds the
        // file gone (in `handle_input`) instead of the core trusting a deleted blob.
        ctx.shared.quota.forget(digest);
        if let Err(e) = ctx.shared.store.remove(&digest) {
            tracing::warn!(digest = %digest.to_hex(), error = %e, "cannot delete a collected blob");
        }
        if shared_registry {
            pending_ops.push(RegistryOp::RemoveBlob(digest));
        }
    }
}

/// Feeds one input from the connection tasks to the core (or the connection table).
#[allow(clippy::too_many_arguments)]
fn handle_input(
    ctx: &Ctx<'_>,
    core: &mut Master,
    conns: &mut Conns,
    input: Input,
    shared_registry: bool,
    pending_ops: &mut Vec<RegistryOp>,
    pending_acks: &mut Vec<oneshot::Sender<()>>,
    replies: &mut Replies,
) {
    match input {
        Input::Open {
            conn_id,
            conn,
            writer,
            peer,
        } => {
            conns.insert(conn_id, (conn, writer, peer));
        }
        Input::Core(ev) => {
            if let Event::Disconnected { conn } = &ev {
                conns.remove(conn);
            }
            core.handle(Instant::now().into_std(), ev);
        }
        Input::FromPeer(ev, _permit) => {
            let now = Instant::now().into_std();
            if let Event::Message { msg, .. } = &ev {
                ctx.metrics.received(msg, now);
            }
            core.handle(now, ev)
        }
        Input::Ask(ask) => {
            if matches!(ask, crate::http::Ask::Report(_)) {
                // A scrape: the QUIC paths' figures go with the books'.
                ctx.metrics.observe_paths(
                    conns
                        .values()
                        .map(|(c, _, peer)| (peer.as_str(), c.stats().path)),
                );
            }
            answer(core, ask, replies)
        }
        Input::MayFetch {
            conn_id,
            digest,
            reply,
        } => {
            let _ = reply.send(core.may_fetch(conn_id, &digest));
        }
        Input::Stored { event, size, done } => {
            if let Event::BlobStored {
                digest,
                kind,
                owner,
            } = &event
            {
                if !ctx.shared.store.path(digest).exists() {
                    // Stored, then collected before this event came through.
                    tracing::warn!(digest = %digest.to_hex(), "an upload raced the blob GC and was deleted; it must be uploaded again");
                    return;
                }
                if shared_registry {
                    pending_ops.push(RegistryOp::PutBlob {
                        digest: *digest,
                        kind: *kind,
                        size,
                        owner: owner.clone(),
                    });
                }
            }
            core.handle(Instant::now().into_std(), event);
            pending_acks.push(done);
        }
    }
}

/// Answers a question of the HTTP surface from the core's books (acting on them for requests
/// such as a kill: the actions go out with the loop's next flush).
fn answer(core: &mut Master, ask: crate::http::Ask, replies: &mut Replies) {
    match ask {
        crate::http::Ask::Report(reply) => {
            let _ = reply.send(core.report(std::time::SystemTime::now()));
        }
        crate::http::Ask::Kill {
            caller,
            framework,
            task,
            reply,
        } => {
            let _ = reply.send(core.operator_kill(&caller, framework.as_ref(), &task));
        }
        crate::http::Ask::Query(q, reply) => match ask_agent(core, q) {
            Ok(id) => {
                replies.insert(id, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        },
    }
}

/// HTTP reads of agents waiting for their answers, by query id.
type Replies = HashMap<crate::core::QueryId, oneshot::Sender<crate::core::QueryResult>>;

/// Hands an HTTP read of an agent to the core (the answer comes from `poll_answer`).
fn ask_agent(
    core: &mut Master,
    q: crate::http::output::QueryAsk,
) -> Result<crate::core::QueryId, crate::core::QueryError> {
    use crate::http::output::QueryAsk;
    match q {
        QueryAsk::Output {
            caller,
            framework,
            task_id,
            stream,
            offset,
            length,
        } => core.query_output(
            &caller,
            framework.as_ref(),
            &task_id,
            stream,
            offset,
            length,
        ),
        QueryAsk::AgentMetrics { caller, agent_id } => core.query_agent_metrics(&caller, &agent_id),
    }
}

/// Closes a connection a moment later, so that messages queued just before (an `Error`, a
/// `Shutdown`) have a chance to reach the peer.
fn close_after_flush(conn: quinn::Connection, reason: String) {
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        conn.close(close_code::PROTOCOL.into(), reason.as_bytes());
    });
}
