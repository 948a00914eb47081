//! Wire types shared by Tessera's master, agents and schedulers.
//!
//! This crate holds what all three roles must agree on and nothing else: no sockets are opened
//! and no policy is decided here. It depends on serde-level crates only (no quinn, rustls or
//! tokio), so the sans-IO cores that depend on it alone cannot open a socket; QUIC, TLS and the
//! stream reader and writer live in `tessera-net`.
//!
//! ```text
//!  peer ──QUIC stream──▶ [len u32 BE][postcard Message] ──▶ frame::parse ──▶ Message ──▶ core
//! ```
//!
//! # Layout
//! - [`identity`]: a peer's kind and name ([`identity::PeerId`]) and its `spiffe://` URI form.
//! - [`ids`]: agent, framework, offer, task and update ids; sha256 [`ids::Digest`]s.
//! - [`resources`]: fixed-point [`Resources`] arithmetic and parsing of `0.5` / `64MiB`.
//! - [`messages`]: the one versioned [`Message`] enum and the structs it carries.
//! - [`frame`]: length-prefixed framing with a maximum size: `encode`, `check` and `parse` on
//!   byte slices.
//! - [`task_builder`]: [`task_builder::TaskBuilder`], a [`TaskInfo`] with defaults, placed on an
//!   offer's agent.

#![warn(missing_docs)]

pub mod frame;
pub mod identity;
pub mod ids;
pub mod messages;
pub mod resources;
pub mod task_builder;

pub use ids::{AgentId, Digest, ExecutorId, FrameworkId, OfferId, TaskId, UpdateId};
pub use messages::*;
pub use resources::Resources;
