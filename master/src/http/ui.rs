//! The master's web UI: one page at `/` (with `/ui/app.js` and `/ui/style.css`) that polls
//! `/state` every second and follows a task's output through `/tasks/{id}/output/{stream}`.
//!
//! Plain HTML, JavaScript and CSS kept next to this file and compiled in with `include_str!`:
//! no build step, no external resources (it works on a cluster without internet access). The
//! page builds its DOM with `textContent` only, since names, messages and output come from
//! peers; a Content-Security-Policy allowing only this origin's scripts and styles backs that.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const STYLE_CSS: &str = include_str!("ui/style.css");

/// Only this origin's scripts, styles and fetches; no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// One of the UI's files with its content type (re-read on every load: the master may be
/// upgraded under a page left open).
fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, CSP),
        ],
        body,
    )
}

/// The UI's routes, to merge into the operator router (they need no state).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_never_writes_html() {
        // Peer-supplied names reach the page: the DOM is built with textContent only.
        for bad in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!APP_JS.contains(bad), "app.js uses {bad}");
        }
        // Everything is served by the master itself.
        for page in [INDEX_HTML, APP_JS, STYLE_CSS] {
            assert!(!page.contains("http://") && !page.contains("https://"));
        }
    }
}
