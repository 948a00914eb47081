//! End-to-end tests of real clusters (real QUIC on loopback, real wasmtime, real files) and
//! of the simulated ones, one module per subject, in one test binary: one link instead of one
//! per file, and the test harness runs the modules' tests beside each other (a test waiting on
//! a timer leaves its core to another's work). `abuse.rs` stays a binary of its own: it
//! measures this process's memory, which a cluster of a test running beside would inflate.
//!
//! One module or one test: `cargo test -p tessera-tests --test e2e sim_mixed::`.

mod accept;
mod agent_recovery;
mod executors;
mod failover;
mod faults;
mod follow_leader;
mod gc;
mod http;
mod locality;
mod lossy;
mod output;
mod partition;
mod security;
mod sim_mixed;
mod simulated_faults;
mod tasks;
mod threads;
mod ui_browser;
mod worked_example;
