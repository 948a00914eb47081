//! Whole Tessera clusters to test, measure and simulate against, in two tiers:
//!
//! - **virtual time** ([`sim`]): the real master core and allocator and real agent cores,
//!   with simulated frameworks, guests and network, driven step by step from a seed, with
//!   one-word fault verbs (`drop`, `delay`, `isolate`, `cut`, `recover`, `restart_agent`,
//!   `jump`). Deterministic, fast, no I/O. The fault tests and `tessera sim` run on it.
//! - **real** ([`local`]): a master and agents on loopback QUIC with an ephemeral CA and
//!   wasmtime running real guests, in this process; [`proxy`] puts a lossy UDP link between a
//!   peer and the master. `tessera dev`, `tessera run`, the end-to-end tests and the
//!   benchmarks stand on it.
//!
//! Every random choice, in either tier, comes from the seeded [`Rng`], so a run replays from its
//! seed.
//!
//! ```text
//!  frameworks ─┐                      ┌─ agent cores + simulated guests
//!              ├─ wire (latency, faults) ─ master core + allocator
//!  Sim::step ──┘   (virtual now)      └─ check_invariants after every step
//! ```
//!
//! # Layout
//! - [`sim`]: the virtual-time cluster and its fault verbs; [`sim::framework`] holds the
//!   simulated scheduler's protocol logic.
//! - [`local`]: the in-process real cluster.
//! - [`bench`]: the launch benchmark (`tessera bench`): latency and throughput of a trivial task
//!   through a real local cluster against fork/exec and wasmtime called directly.
//! - [`datajob`]: a data-local job on a real cluster, placed by delay scheduling.
//! - [`proxy`]: the lossy UDP proxy (drop, duplicate, delay, reorder, black-hole).
//! - [`rng`]: the seeded generator.

#![warn(missing_docs)]

pub mod bench;
pub mod datajob;
pub mod local;
pub mod proxy;
pub mod rng;
pub mod sim;

pub use local::{LocalAgent, LocalCluster, LocalClusterConfig, LocalClusterError};
pub use rng::Rng;
pub use sim::Sim;
