//! Loopback ports for test servers that must get the same port back after a restart.
//!
//! A port found by binding port 0 and closing the socket is an ephemeral port: while its
//! server is down (a restart test) the kernel may give it to any socket bound to port 0,
//! such as a client's outgoing connection or another test's probe, and the server cannot
//! come back. Ports below the ephemeral range are never handed out that way.

use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};

/// The lowest port handed out: above the well-known and most registered services.
const LOWEST: u32 = 10_000;

/// Where the kernel's ephemeral range starts, when the system says.
fn ephemeral_start() -> Option<u32> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

/// Whether `port` is free on loopback for both TCP and UDP (a master listens on UDP, etcd
/// on TCP).
fn free_on_loopback(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok() && UdpSocket::bind(("127.0.0.1", port)).is_ok()
}

/// A loopback port, free for TCP and UDP when returned, that no socket bound to port 0 can
/// be given while its server restarts.
///
/// Ports come from below the kernel's ephemeral range, each once per process, starting from
/// a place derived from the process id so that two test processes at once start apart.
/// Falls back to an ephemeral port where that range is too low to leave room.
pub fn reserved_port() -> std::io::Result<u16> {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let top = ephemeral_start().unwrap_or(32_768).min(u32::from(u16::MAX));
    if top <= LOWEST + 1_000 {
        return Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port());
    }
    let span = top - LOWEST;
    let start = std::process::id().wrapping_mul(7_919) % span;
    // The first caller sets where this process starts.
    let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::Relaxed, Ordering::Relaxed);
    let candidates = (0..span).map(|_| {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        u16::try_from(LOWEST + offset).expect("below the ephemeral range")
    });
    first_free(candidates).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "no free port below the ephemeral range",
        )
    })
}

/// The first of `candidates` free on loopback.
fn first_free(mut candidates: impl Iterator<Item = u16>) -> Option<u16> {
    candidates.find(|&port| free_on_loopback(port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_free_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| reserved_port().unwrap()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
        if let Some(top) = ephemeral_start() {
            assert!(ports.iter().all(|&p| u32::from(p) < top), "{ports:?}");
        }
        assert!(ports.iter().all(|&p| free_on_loopback(p)));
    }

    #[test]
    fn a_port_in_use_is_skipped() {
        let held = reserved_port().unwrap();
        let _socket = UdpSocket::bind(("127.0.0.1", held)).unwrap();
        let next = reserved_port().unwrap();
        assert_eq!(first_free([held, next].into_iter()), Some(next));
    }
}
