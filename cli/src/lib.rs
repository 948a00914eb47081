//! The library behind the `tessera` command: the in-process [`local::LocalCluster`] used by
//! `tessera dev`, `tessera run`, the end-to-end tests and the benchmarks, and the logic of the
//! `dev` and `run` subcommands.
//!
//! # Layout
//! - [`local`]: a master and agents on loopback QUIC in one process.
//! - [`dev`]: the seed's worked example and a pi job, as a trace.
//! - [`run`]: one task, like `mesos-execute`.
//! - [`sim`]: the master core and allocator under a synthetic workload in virtual time.
//! - [`master_config`]: the master's `--config` file (allocator, roles' weights and quotas).

#![warn(missing_docs)]

pub mod dev;
pub mod local;
pub mod master_config;
pub mod run;
pub mod sim;
