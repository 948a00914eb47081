//! One module per subcommand, each holding its clap arguments beside the logic that uses them;
//! `main.rs` parses and dispatches to their `execute`.

pub mod agent;
pub mod bench;
pub mod cert;
pub mod dev;
mod dev_executor;
pub mod examples;
pub mod inspect;
pub mod kill;
pub mod logs;
pub mod master;
pub mod run;
pub mod runtime;
pub mod sim;
pub mod top;
pub mod write_back;

/// An error message on one line: libraries' messages may carry multi-line detail (a Debug
/// dump of bytes), and a user reads one line per error.
pub fn one_line(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for word in message.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out.replace("[ ", "[")
        .replace(", ]", "]")
        .replace(" ]", "]")
}

/// Parses `KEY=VALUE` (environment variables, attributes).
fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

/// Resolves when the process is asked to stop, for the long-running master and agent: Ctrl-C
/// (SIGINT) or SIGTERM, which is what systemd, Kubernetes and `kill` send; either way the
/// daemon closes its QUIC connections properly so peers learn at once instead of at the idle
/// timeout.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; shutting down"),
                _ = term.recv() => tracing::info!("SIGTERM; shutting down"),
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
