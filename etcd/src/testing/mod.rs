//! Test support (not for production use): a private etcd server per test
//! ([`EtcdServer`]) and a TCP forwarder that can cut the cable between a master and etcd
//! ([`TcpProxy`]), and ports that survive a server's restart ([`reserved_port`]).
//!
//! The etcd binary is `$TESSERA_ETCD`, else `etcd` on `PATH` (Debian's `etcd-server`). A test
//! that needs it starts with [`require_etcd!`](crate::require_etcd): without etcd it prints a
//! skip message and returns, but under `CI=true` it fails.

mod ports;
mod proxy;
mod server;

pub use ports::reserved_port;
pub use proxy::TcpProxy;
pub use server::{EtcdServer, HarnessError, ServerTls};

/// Returns from the calling test (with a message) when no etcd binary is found, or panics
/// when `CI=true`: CI must run every etcd test.
#[macro_export]
macro_rules! require_etcd {
    () => {
        if !$crate::testing::EtcdServer::available() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("etcd is required under CI=true: install etcd-server or set $TESSERA_ETCD");
            }
            eprintln!("skipped: no etcd binary (install etcd-server or set $TESSERA_ETCD)");
            return;
        }
    };
}
