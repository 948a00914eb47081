//! The `tessera` binary's tests, on real processes (masters, agents, runtimes, `tessera run`)
//! over real QUIC on loopback, one module per subject, in one test binary: one link instead of
//! one per file, and the test harness runs the modules' tests beside each other (a test waiting
//! on a process leaves its core to another's work).
//!
//! One module or one test: `cargo test -p tessera-cli --test e2e agent_restart::`.

mod common;

mod agent_restart;
mod bench;
mod cli;
mod compile_limit;
mod leader;
mod logs;
mod master_failover;
mod master_restart;
mod newcomer;
mod operator;
mod run_restart;
mod runtime;
mod sim_plot;
