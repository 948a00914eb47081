//! The library behind the `tessera` command: the in-process [`local::LocalCluster`] used by
//! `tessera dev`, `tessera run`, the end-to-end tests and the benchmarks.
//!
//! # Layout
//! - [`local`]: a master and agents on loopback QUIC in one process.

pub mod local;
