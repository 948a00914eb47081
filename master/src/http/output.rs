//! Reads of agents through the master: a task's output (as Mesos's `/files/read`) and an
//! agent's metrics. The core checks who may read, asks the agent over its control connection
//! and answers when it does (`core::queries`); these handlers only translate HTTP.
//!
//! # `GET /tasks/{task_id}/output/{stream}?offset=N&length=M&framework=ID`
//! `stream` is `stdout` or `stderr`. `offset` (default 0) is a byte offset into the stream;
//! `length` (default and cap 512 KiB, [`proto::MAX_OUTPUT_READ`]) the most bytes returned.
//! `framework` names the task's framework, needed only when several frameworks the caller may
//! view have a task of that id (task ids are unique per framework). Works for running tasks and
//! for ended ones whose sandbox the agent still keeps (see the agent's GC delay).
//! - 200: the body is the raw bytes (`application/octet-stream`, possibly empty at the end of
//!   what is written so far), with headers `x-tessera-output-size: <bytes written so far>` and
//!   `x-tessera-task-ended: true|false` (`true`: the stream will not grow any more). To follow
//!   a task, poll with `offset` advanced by the bytes received until a response says the task
//!   ended and `offset` has reached `x-tessera-output-size`. For a task run inside an
//!   executor, the stream is the executor instance's (shared by its tasks).
//! - 400: a bad `stream`, `offset` or `length`.
//! - 403: the caller may not view the task's framework.
//! - 404: no such task (live or recently completed), or its sandbox is gone.
//! - 409: several frameworks have a task of that id: add `framework=ID`.
//! - 502: the task's agent is not connected, or failed to read the file.
//! - 503: a standby master (JSON `{"status": "standby", "leader": ..}`, as `/state`), or too
//!   many reads are waiting for agents.
//! - 504: the agent did not answer in time.
//!
//! Errors have a `text/plain` body of one line saying why.
//!
//! # `GET /agents/{agent_id}/metrics`
//! The agent's Prometheus text exposition (its `tessera_agent_*` metrics), for callers who see
//! everything (operators, the local caller): 403 for others, 404 for an unknown agent, 502,
//! 503, 504 as above.

use super::{error_response, AppState, Ask, Leadership, ReportError};
use crate::acl::Caller;
use crate::core::{QueryError, QueryResult};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use proto::{AgentAnswer, AgentId, FrameworkId, OutputStream, TaskId};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Header with the bytes the stream holds so far.
pub const SIZE_HEADER: &str = "x-tessera-output-size";

/// Header saying whether the task has ended (`true`/`false`).
pub const ENDED_HEADER: &str = "x-tessera-task-ended";

/// How long a handler waits for the core's answer: past the core's own query timeout, so
/// normally the core answers first (504 either way).
const WAIT: Duration = Duration::from_secs(15);

/// What an HTTP read asks the core (see [`Ask::Query`]).
#[derive(Debug)]
pub enum QueryAsk {
    /// A range of a task's output.
    Output {
        /// Who asks.
        caller: Caller,
        /// The task's framework, when named.
        framework: Option<FrameworkId>,
        /// The task.
        task_id: TaskId,
        /// Which stream.
        stream: OutputStream,
        /// From where.
        offset: u64,
        /// How much at most.
        length: u32,
    },
    /// An agent's metrics.
    AgentMetrics {
        /// Who asks.
        caller: Caller,
        /// The agent.
        agent_id: AgentId,
    },
}

/// The parameters of an output read, parsed from the query string.
#[derive(Debug, PartialEq)]
struct Params {
    offset: u64,
    length: u32,
    framework: Option<FrameworkId>,
}

/// Parses `offset`, `length` and `framework` (other keys are ignored).
fn params(raw: Option<&str>) -> Result<Params, String> {
    let mut p = Params {
        offset: 0,
        length: proto::MAX_OUTPUT_READ,
        framework: None,
    };
    for pair in raw.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "offset" => {
                p.offset = v
                    .parse()
                    .map_err(|_| format!("offset must be a byte count, not {v:?}"))?
            }
            "length" => {
                let n: u64 = v
                    .parse()
                    .map_err(|_| format!("length must be a byte count, not {v:?}"))?;
                p.length = n.min(u64::from(proto::MAX_OUTPUT_READ)) as u32;
            }
            "framework" if !v.is_empty() => p.framework = Some(FrameworkId::from(v)),
            _ => {}
        }
    }
    Ok(p)
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut body = msg.into();
    body.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// Asks the core and waits for the agent's answer.
async fn ask(app: &AppState, q: QueryAsk) -> Result<QueryResult, Response> {
    if let Leadership::Standby(leader) = app.source.leadership() {
        return Err(error_response(ReportError::Standby(leader)));
    }
    let (tx, rx) = oneshot::channel();
    app.source.ask(Ask::Query(q, tx)).map_err(error_response)?;
    match tokio::time::timeout(WAIT, rx).await {
        Ok(Ok(result)) => Ok(result),
        // The term ended with the read outstanding.
        Ok(Err(_)) => Err(error_response(ReportError::Busy)),
        Err(_) => Err(text(
            StatusCode::GATEWAY_TIMEOUT,
            "the master did not answer in time",
        )),
    }
}

fn error_status(e: &QueryError) -> StatusCode {
    match e {
        QueryError::NotAllowed(_) => StatusCode::FORBIDDEN,
        QueryError::UnknownTask(_) | QueryError::UnknownAgent(_) => StatusCode::NOT_FOUND,
        QueryError::Ambiguous(_) => StatusCode::CONFLICT,
        QueryError::AgentGone(_) | QueryError::Agent(_) => StatusCode::BAD_GATEWAY,
        QueryError::TimedOut(_) => StatusCode::GATEWAY_TIMEOUT,
        QueryError::Busy => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn unexpected(answer: &AgentAnswer) -> Response {
    text(
        StatusCode::BAD_GATEWAY,
        format!("the agent answered something else ({answer:?})"),
    )
}

/// `GET /tasks/{task_id}/output/{stream}` (see the module doc).
pub(super) async fn task_output(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((task_id, stream)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    let stream = match stream.as_str() {
        "stdout" => OutputStream::Stdout,
        "stderr" => OutputStream::Stderr,
        other => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("stream must be stdout or stderr, not {other:?}"),
            )
        }
    };
    let p = match params(raw.as_deref()) {
        Ok(p) => p,
        Err(why) => return text(StatusCode::BAD_REQUEST, why),
    };
    let q = QueryAsk::Output {
        caller,
        framework: p.framework,
        task_id: TaskId::from(task_id.as_str()),
        stream,
        offset: p.offset,
        length: p.length,
    };
    match ask(&app, q).await {
        Err(resp) => resp,
        Ok(Err(e)) => text(error_status(&e), e.to_string()),
        Ok(Ok(AgentAnswer::Output { data, size, ended })) => {
            let mut resp =
                ([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response();
            let h = resp.headers_mut();
            h.insert(SIZE_HEADER, HeaderValue::from(size));
            h.insert(
                ENDED_HEADER,
                HeaderValue::from_static(if ended { "true" } else { "false" }),
            );
            resp
        }
        Ok(Ok(other)) => unexpected(&other),
    }
}

/// `GET /agents/{agent_id}/metrics` (see the module doc).
pub(super) async fn agent_metrics(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(agent_id): Path<String>,
) -> Response {
    let q = QueryAsk::AgentMetrics {
        caller,
        agent_id: AgentId::from(agent_id.as_str()),
    };
    match ask(&app, q).await {
        Err(resp) => resp,
        Ok(Err(e)) => text(error_status(&e), e.to_string()),
        Ok(Ok(AgentAnswer::Metrics { text: body })) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Ok(Ok(other)) => unexpected(&other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_default_cap_and_refuse_garbage() {
        assert_eq!(
            params(None).unwrap(),
            Params {
                offset: 0,
                length: proto::MAX_OUTPUT_READ,
                framework: None
            }
        );
        assert_eq!(
            params(Some("offset=10&length=99999999999&framework=F1&x=y")).unwrap(),
            Params {
                offset: 10,
                length: proto::MAX_OUTPUT_READ,
                framework: Some(FrameworkId::from("F1"))
            }
        );
        assert_eq!(params(Some("length=3")).unwrap().length, 3);
        assert!(params(Some("offset=-1")).is_err());
        assert!(params(Some("length=abc")).is_err());
    }
}
