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

/// CPU time an agent's compile of one module may take by default (`tessera agent
/// --compile-cpu-limit`): large real modules (an interpreter of tens of megabytes) compile in
/// tens of seconds, a tenant's pathological one is stopped here.
pub const DEFAULT_COMPILE_CPU_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Memory (heap, thread stacks and other private writable mappings) an agent's compile of one module may hold by
/// default (`tessera agent --compile-memory-limit`): the example modules (56–100 KiB) compile
/// within 96–160 MiB of it, a single function of 1.0 MB of wasm within 160 MiB (BENCHMARKS.md,
/// "Compile limit"), so large real modules fit with room, and a tenant's module that makes
/// Cranelift allocate without bound is stopped before it crowds out the machine.
pub const DEFAULT_COMPILE_MEMORY_LIMIT: u64 = 4 << 30;

/// Set by the `tessera` binary's `main`: this process's executable serves `compile`. A test
/// binary calling the commands in process is not one (it would take `compile` for a filter
/// of its tests), so its agents compile in process.
static COMPILE_IN_THIS_BINARY: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Says this process is the `tessera` binary, whose `compile` subcommand serves agents'
/// compiles ([`compiler`]).
pub fn compile_in_this_binary() {
    COMPILE_IN_THIS_BINARY.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// This binary's `compile` subcommand under `limit` of CPU time and `memory` bytes, for an
/// agent's executor (`ExecutorConfig::compiler`); `None` (compile in process, unbounded) with
/// no CPU-time limit, in a process that is not the `tessera` binary, or if the executable's
/// path cannot be found (with a warning).
pub fn compiler(
    limit: Option<std::time::Duration>,
    memory: u64,
) -> Option<::agent::executor::CompilerCommand> {
    let limit = limit?;
    if !COMPILE_IN_THIS_BINARY.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    ::agent::executor::CompilerCommand::this_executable(limit, memory)
        .inspect_err(|e| {
            tracing::warn!("compiling modules in process, unbounded: no path to this program: {e}")
        })
        .ok()
}

/// `--compile-cpu-limit`: a duration, or `none` (compile in process, unbounded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompileLimit(pub Option<std::time::Duration>);

fn parse_limit(s: &str) -> Result<CompileLimit, String> {
    if s == "none" {
        return Ok(CompileLimit(None));
    }
    humantime::parse_duration(s)
        .map(|d| CompileLimit(Some(d)))
        .map_err(|e| e.to_string())
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
