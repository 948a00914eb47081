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
//! - [`core`]: the sans-IO state machine (registry, offers, task table, status relay).
//! - [`allocator`]: the `Allocator` trait and its policies.
//! - [`blobs`]: the content-addressed store of modules and task files.
//! - [`driver`]: the quinn endpoint, one task per connection, the timer.

#![warn(missing_docs)]

pub mod allocator;
pub mod blobs;
pub mod core;
pub mod driver;
