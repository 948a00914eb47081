//! Wire types shared by Tessera's master, agents and schedulers.
//!
//! This crate holds what all three roles must agree on and nothing else: no sockets are opened
//! and no policy is decided here.
//!
//! ```text
//!  peer ──QUIC stream──▶ [len u32 BE][postcard Message] ──▶ frame::parse ──▶ Message ──▶ core
//! ```
//!
//! # Layout
//! - [`ids`]: agent, framework, offer, task and update ids; sha256 [`ids::Digest`]s.
//! - [`resources`]: fixed-point [`Resources`] arithmetic and parsing of `0.5` / `64MiB`.
//! - [`messages`]: the one versioned [`Message`] enum and the structs it carries.
//! - [`frame`]: length-prefixed framing with a maximum size, `check`/`parse` on byte slices and
//!   async read/write on streams.
//! - [`link`]: the client side of a connection (dial, handshake, blob streams).
//! - [`timer`]: the single optional-deadline sleep of a driver's loop.
//! - [`tls`]: the cluster CA (rcgen), certificate issue, mutual-TLS QUIC configurations.

#![warn(missing_docs)]

pub mod frame;
pub mod ids;
pub mod link;
pub mod messages;
pub mod resources;
pub mod timer;
pub mod tls;

pub use ids::{AgentId, Digest, FrameworkId, OfferId, TaskId, UpdateId};
pub use messages::*;
pub use resources::Resources;
