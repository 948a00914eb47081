//! The master's operator HTTP surface (axum): `/health`, `/state` and `/metrics`.
//!
//! - `/health`: 200 `{"status": "single" | "leader" | "standby", "leader": "host:port" | null}`.
//! - `/state`: the [`StateReport`] as JSON (field names documented in `core/report.rs`). The
//!   report is built inside the core's loop (asked for through its input queue with a oneshot
//!   reply) and cached for [`STATE_CACHE`] or ten times what getting it took, whichever is
//!   longer, so however often it is scraped and however big the books, the loop spends at most
//!   about a tenth of its time on reports. A standby answers 503 with `{"status": "standby", "leader": ..}`.
//! - `/`: the web UI ([`ui`]), a page reading `/state`.
//! - `/metrics`: Prometheus text exposition ([`metrics::Metrics`]); the book gauges come from
//!   the same cached report (a standby exports only what its driver recorded).
//! - `/tasks/{task_id}/output/{stream}` and `/agents/{agent_id}/metrics`: a task's output and
//!   an agent's metrics, read from the agent through the master ([`output`] has the contract).
//!
//! Served on loopback only for now (the driver refuses other addresses): there is no TLS or
//! access control yet, so anything that can connect may read the whole cluster's books.
//! Remote access with TLS and client certificates is a later step.

pub mod kill;
pub mod listener;
pub mod metrics;
pub mod output;
pub mod ui;

use crate::acl::Caller;
use crate::core::StateReport;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How long a built report is served again before the core is asked for a new one, at least.
pub const STATE_CACHE: Duration = Duration::from_millis(250);

/// A report is also served again for this many times what it took to get it, so that however
/// big the books, scrapers hold the core's loop at most about a tenth of the time.
const CACHE_PER_BUILD: u32 = 10;

/// Whether this master leads, as `/health` says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leadership {
    /// The only master (no coordinator).
    Single,
    /// The elected leader of several.
    Leader,
    /// A standby; the leader's address when known.
    Standby(Option<String>),
}

/// Why a report could not be had from the core.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// This master does not lead (the leader's address when known).
    #[error("this master is a standby")]
    Standby(Option<String>),
    /// The core's input queue is full or the term just ended.
    #[error("the master is busy")]
    Busy,
}

/// A question or request for the core's loop, answered on the oneshot it carries. The driver
/// queues it with the peers' messages, so the core answers from the same books it acts on.
#[derive(Debug)]
pub enum Ask {
    /// A picture of the books (`/state`, `/metrics`).
    Report(oneshot::Sender<StateReport>),
    /// A read of an agent (task output, agent metrics) for `/tasks/{id}/output/{stream}` and
    /// `/agents/{id}/metrics`: answered when the agent answers (see `core::queries`).
    Query(output::QueryAsk, oneshot::Sender<crate::core::QueryResult>),
    /// Kill a task on behalf of `caller` (see [`kill`]).
    Kill {
        /// Who asks.
        caller: Caller,
        /// The task's framework, when named.
        framework: Option<proto::FrameworkId>,
        /// The task.
        task: proto::TaskId,
        /// The framework killed in, or why not.
        reply: oneshot::Sender<Result<proto::FrameworkId, crate::core::OperatorError>>,
    },
}

/// What the HTTP handlers need from the driver.
pub trait Source: Send + Sync + 'static {
    /// Whether this master leads now.
    fn leadership(&self) -> Leadership;
    /// Queues `ask` for the core's loop (refused on a standby or when the queue is full).
    fn ask(&self, ask: Ask) -> Result<(), ReportError>;
}

struct Cached {
    at: Instant,
    /// How long it is served.
    ttl: Duration,
    report: Arc<StateReport>,
    json: Arc<String>,
}

pub(crate) struct AppState {
    pub(crate) source: Arc<dyn Source>,
    metrics: Arc<metrics::Metrics>,
    cache: tokio::sync::Mutex<Option<Cached>>,
}

impl AppState {
    /// The cached report, or a fresh one from the core (one request at a time).
    async fn report(&self) -> Result<(Arc<StateReport>, Arc<String>), ReportError> {
        let mut cache = self.cache.lock().await;
        if let Leadership::Standby(leader) = self.source.leadership() {
            *cache = None;
            return Err(ReportError::Standby(leader));
        }
        if let Some(c) = cache.as_ref() {
            if c.at.elapsed() < c.ttl {
                return Ok((c.report.clone(), c.json.clone()));
            }
        }
        let (tx, rx) = oneshot::channel();
        let asked = Instant::now();
        self.source.ask(Ask::Report(tx))?;
        let report = rx.await.map_err(|_| ReportError::Busy)?;
        let ttl = STATE_CACHE.max(asked.elapsed() * CACHE_PER_BUILD);
        let json = serde_json::to_string(&report).expect("a report always serializes");
        self.metrics.observe(&report);
        let c = Cached {
            at: Instant::now(),
            ttl,
            report: Arc::new(report),
            json: Arc::new(json),
        };
        let out = (c.report.clone(), c.json.clone());
        *cache = Some(c);
        Ok(out)
    }
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    leader: Option<String>,
}

fn health_of(l: Leadership) -> Health {
    match l {
        Leadership::Single => Health {
            status: "single",
            leader: None,
        },
        Leadership::Leader => Health {
            status: "leader",
            leader: None,
        },
        Leadership::Standby(leader) => Health {
            status: "standby",
            leader,
        },
    }
}

async fn health(State(app): State<Arc<AppState>>) -> Response {
    axum::Json(health_of(app.source.leadership())).into_response()
}

async fn state(State(app): State<Arc<AppState>>, Extension(caller): Extension<Caller>) -> Response {
    let json = match app.report().await {
        Ok((_, json)) if caller.sees_all() => json.as_str().to_owned(),
        Ok((report, _)) => serde_json::to_string(&visible_to(&report, &caller))
            .expect("a report always serializes"),
        Err(e) => return error_response(e),
    };
    ([(header::CONTENT_TYPE, "application/json")], json).into_response()
}

/// What of `report` a caller that does not see everything may see: every agent and role (the
/// cluster's shape and capacity), but only its own frameworks, their tasks and their offers.
fn visible_to(report: &StateReport, caller: &Caller) -> StateReport {
    let mut r = report.clone();
    r.frameworks.retain(|f| caller.may_view(&f.principal));
    let mine: std::collections::BTreeSet<&str> =
        r.frameworks.iter().map(|f| f.id.as_str()).collect();
    r.tasks.retain(|t| mine.contains(t.framework_id.as_str()));
    r.offers.retain(|o| mine.contains(o.framework_id.as_str()));
    r
}

async fn scrape(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Response {
    if !caller.sees_all() {
        return kill::error_body(
            StatusCode::FORBIDDEN,
            format!("{caller} may not read the cluster's metrics (an operator certificate may)"),
        );
    }
    // A standby or a busy loop still exports what the driver recorded.
    let _ = app.report().await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
    )
        .into_response()
}

pub(crate) fn error_response(e: ReportError) -> Response {
    let health = match e {
        ReportError::Standby(leader) => health_of(Leadership::Standby(leader)),
        ReportError::Busy => Health {
            status: "busy",
            leader: None,
        },
    };
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(health)).into_response()
}

/// The router serving the endpoints. Every handler may take an `Extension<Caller>`: who asks
/// ([`listener`] inserts it per connection: [`Caller::Local`] on the plain loopback listener,
/// the certificate's principal under TLS).
pub fn router(source: Arc<dyn Source>, metrics: Arc<metrics::Metrics>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/state", get(state))
        .route("/metrics", get(scrape))
        .route("/tasks/{task_id}/output/{stream}", get(output::task_output))
        .route("/agents/{agent_id}/metrics", get(output::agent_metrics))
        .route("/tasks/{task_id}/kill", axum::routing::post(kill::kill))
        // The web UI at `/` (ui.rs).
        .merge(ui::router())
        .with_state(Arc::new(AppState {
            source,
            metrics,
            cache: tokio::sync::Mutex::new(None),
        }))
}

pub use listener::{serve, serve_tls};
