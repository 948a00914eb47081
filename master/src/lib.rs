//! The Tessera master: admits agents and frameworks, keeps the cluster's books, and shares
//! resources through offers.
//!
//! ```text
//!  agents, schedulers ──QUIC──▶ driver ──Event──▶ core::Master ──Action──▶ driver ──QUIC──▶ peers
//!                                                     │
//!                                                     └── allocator::Allocator (pure: snapshot → offers)
//! ```
//!
//! # Layout
//! - [`core`]: the sans-IO state machine (registry, offers, task table, status relay), split by
//!   subject: the calling contract in `core/mod.rs`; agent and scheduler handlers with their
//!   peers' life cycles (`agent.rs`, `scheduler.rs`); the books and the refuse index
//!   (`ledger.rs`); the allocation round (`allocation.rs`); the one timer table (`timer.rs`); the
//!   invariants check (`audit.rs`); read-only views (`views.rs`, `state.rs`).
//! - [`allocator`]: the `Allocator` trait and its policies, with golden cases as data
//!   (`allocator/testdata/*.txt`).
//! - [`acl`]: access-control lists (who may register frameworks in which roles, which agents may
//!   reserve for which roles).
//! - [`config`]: the master's TOML configuration file (roles, allocator, ACLs).
//! - [`blobs`]: the content-addressed store of modules and task files.
//! - [`rate`]: the token bucket pacing each connection's control frames.
//! - [`registry`]: the durable registry (trait, records, the redb and in-memory stores) that a
//!   restarted master recovers from.
//! - [`ha`]: what several masters need from a coordination service (elections, a fenced
//!   registry), as traits; an in-memory implementation for tests.
//! - [`http`]: the operator HTTP surface (`/health`, `/state`, `/metrics`) and its metrics.
//! - [`driver`]: the quinn endpoint, one task per connection, the timer; identities read from
//!   certificates; the blob streams (uploads with quotas and stall limits, fetches the core allows)
//!   in `driver/blob_streams.rs`.

#![warn(missing_docs)]

pub mod acl;
pub mod allocator;
pub mod blobs;
pub mod config;
pub mod core;
pub mod driver;
pub mod ha;
pub mod http;
pub mod rate;
pub mod registry;
