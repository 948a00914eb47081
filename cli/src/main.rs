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
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the master.
    Master(cmd::master::MasterArgs),
    /// Run an agent on this machine.
    Agent(cmd::agent::AgentArgs),
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
    /// The runtime process an agent starts so that its guests outlive it (started by agents).
    #[command(hide = true)]
    Runtime(cmd::runtime::RuntimeArgs),
}

fn init_tracing(default: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tessera: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli.command)) {
        Ok(code) => std::process::ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("tessera: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Master(a) => {
            init_tracing("info");
            cmd::master::execute(a).await
        }
        Command::Agent(a) => {
            init_tracing("info");
            cmd::agent::execute(a).await
        }
        Command::Cert(c) => cmd::cert::execute(c),
        Command::Dev => {
            init_tracing("warn");
            cmd::dev::execute().await?;
            Ok(0)
        }
        Command::Run(a) => {
            init_tracing("warn");
            cmd::run::execute(a).await
        }
        Command::Sim(a) => cmd::sim::execute(a),
        Command::Runtime(a) => cmd::runtime::execute(a).await,
    }
}
