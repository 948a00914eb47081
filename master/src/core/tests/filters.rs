//! Declines and their refuse filters (expiry, clamping), revive and suppress.

use super::*;

#[test]
fn decline_filters_until_expiry_and_revive_clears() {
    let mut h = H::new();
    let a = h.register(1, res(4.0, 4 * GIB));
    let f1 = h.subscribe(10, "f1");
    let o = h.offers(10).remove(0);
    h.msg(
        10,
        Message::Decline {
            offer_ids: vec![o.id.clone()],
            filters: Filters {
                refuse_seconds: 10.0,
            },
        },
    );
    assert!(errors(&h.sent(10)).is_empty());
    assert!(h.m.filters().contains_key(&(f1.clone(), a.clone())));
    // f1 gets nothing inside the window; f2 subscribing gets the agent.
    h.advance(Duration::from_secs(3));
    assert!(h.offers(10).is_empty());
    h.subscribe(20, "f2");
    let o2 = h.offers(20).remove(0);
    h.msg(
        20,
        Message::Decline {
            offer_ids: vec![o2.id.clone()],
            filters: Filters {
                refuse_seconds: 0.0,
            },
        },
    );
    // refuse 0: f2 is offered again right away; f1 still filtered.
    assert_eq!(h.offers(20).len(), 1);
    assert!(h.offers(10).is_empty());
    h.take();
    // f2 suppresses and declines; after expiry f1 is offered again.
    h.msg(20, Message::Suppress);
    let o3 = h.m.offers().next().unwrap().id.clone();
    h.msg(
        20,
        Message::Decline {
            offer_ids: vec![o3],
            filters: Filters {
                refuse_seconds: 0.0,
            },
        },
    );
    h.advance(Duration::from_secs(6));
    assert!(h.offers(10).is_empty(), "9 s: still filtered");
    h.advance(Duration::from_secs(1));
    let back = h.offers(10);
    assert_eq!(back.len(), 1, "filter expired at 10 s");
    assert!(h.offers(20).is_empty(), "suppressed");
    // Decline again, then Revive clears the filter at once.
    h.msg(
        10,
        Message::Decline {
            offer_ids: vec![back[0].id.clone()],
            filters: Filters {
                refuse_seconds: 100.0,
            },
        },
    );
    assert!(h.offers(10).is_empty());
    h.msg(10, Message::Revive);
    assert_eq!(h.offers(10).len(), 1);
    assert!(h.m.filters().is_empty());
}

#[test]
fn decline_unknown_offer_is_an_error_and_refuse_is_clamped() {
    let mut h = H::with(MasterConfig {
        run_id: "r".into(),
        max_refuse: Duration::from_secs(60),
        ..MasterConfig::default()
    });
    let a = h.register(1, res(4.0, 4 * GIB));
    let f = h.subscribe(10, "f1");
    let o = h.offers(10).remove(0);
    h.msg(
        10,
        Message::Decline {
            offer_ids: vec![o.id.clone(), OfferId("nope".into())],
            filters: Filters {
                refuse_seconds: f64::INFINITY,
            },
        },
    );
    assert_eq!(
        errors(&h.sent(10)),
        ["decline: offer nope is unknown or no longer valid"]
    );
    assert_eq!(
        h.m.filters().get(&(f.clone(), a.clone())),
        Some(&(h.now + Duration::from_secs(60)))
    );
    // NaN → the 5 s default.
    h.msg(10, Message::Revive);
    let o = h.offers(10).remove(0);
    h.msg(
        10,
        Message::Decline {
            offer_ids: vec![o.id],
            filters: Filters {
                refuse_seconds: f64::NAN,
            },
        },
    );
    assert_eq!(
        h.m.filters().get(&(f, a)),
        Some(&(h.now + Duration::from_secs(5)))
    );
}
