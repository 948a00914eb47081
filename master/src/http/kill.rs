//! `POST /tasks/{task_id}/kill[?framework=ID]`: kills a task on behalf of its framework's
//! principal or an operator (`tessera kill`).
//!
//! Answers `200 {"framework_id", "task_id"}` once the kill is on its way to the agent (the task
//! ends with TASK_KILLED, which `/state` shows); `404` for no such task, `403` when the caller
//! may not act on that framework, `409` when the task already ended or the id is in several
//! frameworks (name one with `?framework=`), `503` on a standby. Errors are `{"error": "..."}`.

use super::{error_response, AppState, Ask};
use crate::acl::Caller;
use crate::core::OperatorError;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use proto::{FrameworkId, TaskId};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::oneshot;

/// The query of a kill.
#[derive(Debug, Deserialize)]
pub struct KillQuery {
    /// The task's framework, when the id alone is ambiguous.
    pub framework: Option<String>,
}

#[derive(Serialize)]
struct Killed {
    framework_id: String,
    task_id: String,
}

/// An error body: `{"error": "..."}`.
#[derive(Serialize)]
pub(super) struct ErrorBody {
    pub(super) error: String,
}

pub(super) fn error_body(status: StatusCode, error: String) -> Response {
    (status, Json(ErrorBody { error })).into_response()
}

pub(super) async fn kill(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(task_id): Path<String>,
    Query(q): Query<KillQuery>,
) -> Response {
    let task = TaskId::from(task_id);
    let framework = q.framework.map(FrameworkId::from);
    let (reply, rx) = oneshot::channel();
    if let Err(e) = app.source.ask(Ask::Kill {
        caller,
        framework,
        task: task.clone(),
        reply,
    }) {
        return error_response(e);
    }
    match rx.await {
        Ok(Ok(fid)) => Json(Killed {
            framework_id: fid.to_string(),
            task_id: task.to_string(),
        })
        .into_response(),
        Ok(Err(e)) => {
            let status = match e {
                OperatorError::UnknownTask(_) => StatusCode::NOT_FOUND,
                OperatorError::NotAllowed { .. } => StatusCode::FORBIDDEN,
                OperatorError::Ambiguous { .. } | OperatorError::Ended { .. } => {
                    StatusCode::CONFLICT
                }
            };
            error_body(status, e.to_string())
        }
        Err(_) => error_response(super::ReportError::Busy),
    }
}
