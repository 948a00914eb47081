//! Master high availability on etcd: leader election on a lease, and the master's registry
//! kept in etcd with every write fenced to the term of the leader that makes it.
//!
//! [`EtcdCoordinator`] implements [`master::ha::Coordinator`]: several masters campaign, one
//! leads (its [`Term`](master::ha::Term) holds an [`EtcdRegistry`] and the instant until which
//! its lease is proven), the others learn its address to redirect peers there. The master
//! crate only knows the traits; the CLI wires this crate in (`tessera master --etcd ...`).
//!
//! Flags the CLI exposes (filling [`EtcdOptions`]): `--etcd URL[,..]`, `--etcd-prefix`
//! (default `/tessera/<cluster>`), `--lease-ttl` (default 3 s), `--etcd-ca`, `--etcd-cert`,
//! `--etcd-key` (PEM files: TLS to etcd, with a client certificate), `--etcd-user` (the
//! password from `$TESSERA_ETCD_PASSWORD`).
//!
//! Building needs `protoc` (the `etcd-client` crate compiles etcd's protos): Debian's
//! `protobuf-compiler`, or `$PROTOC` naming one.
//!
//! [`testing`] starts a private etcd for tests.

pub mod election;
pub mod keys;
pub mod lease;
pub mod options;
pub mod registry;
pub mod testing;

pub use election::EtcdCoordinator;
pub use options::{EtcdOptions, EtcdTls};
pub use registry::EtcdRegistry;

/// Milliseconds since the Unix epoch: logged with HA events so several masters' logs line up.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
