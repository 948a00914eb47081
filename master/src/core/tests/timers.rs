//! The timer table seen from outside: what `poll_timeout` returns, and the heartbeats.

use super::*;

#[test]
fn heartbeats_to_connected_frameworks() {
    let mut h = H::new();
    h.subscribe(10, "f1");
    h.subscribe(20, "f2");
    h.disconnect(20);
    h.take();
    h.advance(Duration::from_secs(5));
    assert_eq!(h.sent(10), [Message::Heartbeat]);
    assert!(h.take().is_empty());
    h.advance(Duration::from_secs(10));
    assert_eq!(h.sent(10), [Message::Heartbeat, Message::Heartbeat]);
}

#[test]
fn poll_timeout_is_sane() {
    let mut h = H::new();
    let t0 = h.now;
    assert_eq!(h.m.poll_timeout(), Some(t0 + Duration::from_secs(1)));
    // Extra handle_timeout calls are harmless.
    h.m.handle_timeout(t0);
    h.m.handle_timeout(t0);
    assert!(h.m.poll_action().is_none());
    h.register(1, res(1.0, GIB));
    h.disconnect(1);
    assert_eq!(h.m.poll_timeout(), Some(t0 + Duration::from_secs(1)));
    h.advance(Duration::from_secs(3));
    // Next: the periodic round at t0+4, heartbeat at t0+5, removal at t0+10.
    assert_eq!(h.m.poll_timeout(), Some(t0 + Duration::from_secs(4)));
}
