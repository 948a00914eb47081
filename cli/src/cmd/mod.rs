//! One module per subcommand, each holding its clap arguments beside the logic that uses them;
//! `main.rs` parses and dispatches to their `execute`.

pub mod agent;
pub mod cert;
pub mod dev;
pub mod master;
pub mod run;
pub mod sim;

/// Parses `KEY=VALUE` (environment variables, attributes).
fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

/// Resolves when the process is asked to stop (Ctrl-C), for the long-running master and agent.
async fn shutdown_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
