//! The network half of Tessera's wire: QUIC with mutual TLS, the framed reader and writer every
//! control stream runs on, the client link, reconnect backoff and the one timer of a driver's
//! loop.
//!
//! `proto` says *what* peers send (ids, resources, the `Message` enum, pure framing on byte
//! slices) and opens no sockets; that is enforced by Cargo, since it does not depend on this
//! crate, on quinn, rustls or tokio. This crate says *how* it travels. The sans-IO cores of the
//! master, the agent and the SDK depend only on `proto`; their drivers depend on this crate.
//!
//! ```text
//!  QUIC stream ──▶ MessageReader (buffered loop over proto::frame::check/parse) ──▶ Message
//!  Message ──▶ MessageWriter (proto::frame encoding) ──▶ QUIC stream
//! ```
//!
//! # Layout
//! - [`codec`]: [`codec::MessageCodec`] (a tokio-util codec over `proto::frame`), the
//!   [`MessageReader`] / [`MessageWriter`] pair, and [`codec::read_one`] for streams that carry
//!   one frame then raw bytes.
//! - [`identity`]: a peer's kind and name read from its verified certificate.
//! - [`tls`]: the cluster CA (rcgen), certificate issue, mutual-TLS QUIC configurations.
//! - [`link`]: the client side of a connection (dial, handshake, blob upload and fetch).
//! - [`masters`]: [`masters::MasterSet`], several master addresses and the order to dial them.
//! - [`backoff`]: jittered exponential reconnect delays shared by agents and schedulers.
//! - [`timer`]: the single optional-deadline sleep of a driver's loop.

#![warn(missing_docs)]

pub mod backoff;
pub mod codec;
pub mod identity;
pub mod link;
pub mod masters;
pub mod timer;
pub mod tls;

pub use codec::{MessageReader, MessageWriter};
