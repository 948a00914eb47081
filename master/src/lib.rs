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
//! - [`blobs`]: the content-addressed store of modules and task files.
//! - [`driver`]: the quinn endpoint, one task per connection, the timer.

#![warn(missing_docs)]

pub mod allocator;
pub mod blobs;
pub mod core;
pub mod driver;
