//! The Tessera agent: runs tasks as WASI modules in wasmtime, each inside its offered share.
//!
//! ```text
//!  master ──QUIC──▶ driver ──Event──▶ core::Agent ──Action──▶ driver ──▶ executor (wasmtime)
//!                     ▲                                                    │
//!                     └──────────── Running / Finished ◀───────────────────┘
//! ```
//!
//! # Layout
//! - [`core`]: the sans-IO state machine (task life cycle, reliable status updates).
//! - [`executor`]: wasmtime engine, module cache, sandbox, limits.
//! - [`driver`]: the QUIC connection to the master, the blob fetcher, and the glue.

#![warn(missing_docs)]

pub mod core;
pub mod driver;
pub mod executor;
pub mod fetch;
pub mod launch;
pub mod workdir;
