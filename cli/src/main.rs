//! `tessera`: run a master, an agent, a local development cluster, or one task; issue
//! certificates; simulate the allocator. This file parses the command line and dispatches to
//! the subcommands in `tessera_cli::cmd`.

use clap::{Parser, Subcommand};
use tessera_cli::cmd;

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "A cluster manager whose agents run tasks as sandboxed WebAssembly (WASI) modules"
)]
struct Cli {
    /// Log format on stderr: `text` (coloured only when stderr is a terminal) or `json` (one
    /// object per line, for log shippers). What is logged is set by `RUST_LOG` (e.g.
    /// `RUST_LOG=info,tessera_master=debug`) or `-v`.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// More logs: `-v` makes `tessera run` print its task's states as they happen (and the
    /// other commands log at info); `-vv` logs everything at debug. `RUST_LOG`, when set, wins.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the master.
    Master(cmd::master::MasterArgs),
    /// Run an agent on this machine.
    Agent(Box<cmd::agent::AgentArgs>),
    /// Create a cluster CA and issue certificates.
    #[command(subcommand)]
    Cert(cmd::cert::CertCommand),
    /// Run a master and three agents in this process, play the seed's worked example and a pi job.
    Dev,
    /// Run one task (like mesos-execute); without --master, on an embedded one-agent cluster.
    Run(cmd::run::RunArgs),
    /// Simulate the master and allocator under a synthetic workload (virtual time, seeded),
    /// against static partitioning.
    Sim(cmd::sim::SimArgs),
    /// List the example guests and write their `.wasm` files out.
    Examples(cmd::examples::ExamplesArgs),
    /// List the cluster's agents (resources used/total, tasks, last seen).
    Agents(cmd::inspect::ListArgs),
    /// List the frameworks (principal, role, dominant and fair share, tasks by state).
    Frameworks(cmd::inspect::ListArgs),
    /// List tasks (live and recently ended), optionally of one framework or state.
    Tasks(cmd::inspect::TasksArgs),
    /// Kill a task (its framework's principal or an operator may).
    Kill(cmd::kill::KillArgs),
    /// Print a task's output (stdout, or --stderr), read through the master; --follow it.
    Logs(cmd::logs::LogsArgs),
    /// A live view of agents and shares, redrawn every second.
    Top(cmd::top::TopArgs),
    /// Measure launches on this machine: a local cluster against fork/exec and wasmtime.
    Bench(cmd::bench::BenchArgs),
    /// The runtime process an agent starts so that its guests outlive it (started by agents).
    #[command(hide = true)]
    Runtime(cmd::runtime::RuntimeArgs),
    /// Compile one module for an agent's executor, under the limits the executor set
    /// (started by executors; the request comes on stdin).
    #[command(hide = true)]
    Compile,
}

/// Logging on stderr: `RUST_LOG` if set, else `default` raised by `-v`; colour only on a
/// terminal; JSON lines with `--log-format json`.
fn init_tracing(default: &str, verbose: u8, format: LogFormat) {
    use std::io::IsTerminal;
    let default = match (verbose, default) {
        (0, d) => d,
        // `tessera run -v`: its own progress (the task's states), not the embedded cluster's.
        (1, "tessera_cli=error") => "tessera_cli=info",
        (1, _) => "info",
        _ => "debug",
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // A daemon whose stderr was closed keeps running: tracing-subscriber's report of the
        // failed write goes to stderr too, through `eprintln!`, which panics.
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// mimalloc rather than glibc's malloc: the master's allocation rounds and the agent's
/// launches make and free many small objects, which glibc consolidates in bursts.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Agents started by this binary compile in its `compile` subcommand.
    tessera_cli::cmd::compile_in_this_binary();
    if let Command::Compile = cli.command {
        // No runtime: one blocking compile, in a process of its own.
        let code = agent::executor::serve_compile();
        return std::process::ExitCode::from(code.clamp(0, 255) as u8);
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tessera: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli.command, cli.verbose, cli.log_format)) {
        Ok(code) => std::process::ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("tessera: {}", cmd::one_line(&format!("{e:#}")));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command, verbose: u8, format: LogFormat) -> anyhow::Result<i32> {
    let init_tracing = |default: &str| init_tracing(default, verbose, format);
    match command {
        Command::Master(a) => {
            init_tracing("info");
            cmd::master::execute(a).await
        }
        Command::Agent(a) => {
            init_tracing("info");
            cmd::agent::execute(*a).await
        }
        Command::Cert(c) => cmd::cert::execute(c),
        Command::Dev => {
            init_tracing("warn");
            cmd::dev::execute().await?;
            Ok(0)
        }
        Command::Run(a) => {
            // The embedded master's and agent's warnings are theirs, not the user's: only the
            // command's own errors unless `-v` or `RUST_LOG` asks for more.
            init_tracing("tessera_cli=error");
            cmd::run::execute(a).await
        }
        Command::Sim(a) => cmd::sim::execute(a),
        Command::Examples(a) => cmd::examples::execute(a),
        Command::Agents(a) => {
            init_tracing("warn");
            cmd::inspect::agents(a).await
        }
        Command::Frameworks(a) => {
            init_tracing("warn");
            cmd::inspect::frameworks(a).await
        }
        Command::Tasks(a) => {
            init_tracing("warn");
            cmd::inspect::tasks(a).await
        }
        Command::Kill(a) => {
            init_tracing("warn");
            cmd::kill::execute(a).await
        }
        Command::Logs(a) => {
            init_tracing("warn");
            cmd::logs::execute(a).await
        }
        Command::Top(a) => {
            init_tracing("warn");
            cmd::top::execute(a).await
        }
        Command::Bench(a) => {
            init_tracing("warn");
            cmd::bench::execute(a).await
        }
        Command::Runtime(a) => cmd::runtime::execute(a).await,
        Command::Compile => unreachable!("served before the runtime starts"),
    }
}
