//! Agents every eligible framework refuses are left out of the round's snapshot (the
//! DeclineOffers end state), and come back the moment that stops being true: a filter expires,
//! a framework arrives, revives, or stops being suppressed; agents and frameworks leave.

use super::*;
use crate::allocator::{Allocation, RoleSpec, Snapshot};
use std::sync::{Arc, Mutex};

/// DRF, recording the ids of the agents each round's snapshot lists.
struct Recording {
    rounds: Arc<Mutex<Vec<Vec<AgentId>>>>,
}

impl Allocator for Recording {
    fn name(&self) -> &'static str {
        "recording"
    }

    fn allocate(&mut self, snapshot: &Snapshot<'_>, now: Instant) -> Vec<Allocation> {
        let listed = snapshot.agents.iter().map(|a| a.id.clone()).collect();
        self.rounds.lock().unwrap().push(listed);
        crate::allocator::sorter::allocate(snapshot, now, false)
    }
}

/// A harness whose policy records what it is shown, and that record.
fn recording(cfg: MasterConfig) -> (H, Arc<Mutex<Vec<Vec<AgentId>>>>) {
    let rounds = Arc::new(Mutex::new(Vec::new()));
    let alloc = Recording {
        rounds: rounds.clone(),
    };
    (H::with_allocator(cfg, Box::new(alloc)), rounds)
}

fn cfg() -> MasterConfig {
    MasterConfig {
        run_id: "r".into(),
        heartbeat_interval: Duration::ZERO,
        ..MasterConfig::default()
    }
}

/// Declines every offer sent to `conn` for `secs`; returns the agents declined.
fn decline_all(h: &mut H, conn: ConnId, secs: f64) -> Vec<AgentId> {
    let offers = h.offers(conn);
    for o in &offers {
        h.decline(conn, o, secs);
    }
    offers.into_iter().map(|o| o.agent_id).collect()
}

/// The agents listed by the rounds since the last call (a round that lists nobody does not
/// reach the policy, so it records nothing).
fn listed(rounds: &Arc<Mutex<Vec<Vec<AgentId>>>>) -> Vec<AgentId> {
    std::mem::take(&mut *rounds.lock().unwrap())
        .into_iter()
        .flatten()
        .collect()
}

/// Two frameworks decline one agent for 10 s and 20 s: while both filters hold, the agent is
/// not even listed; when the first expires, that framework is offered it in that round.
#[test]
fn refused_by_all_is_skipped_until_a_filter_expires() {
    let (mut h, rounds) = recording(cfg());
    let a = h.register(1, res(4.0, 4 * GIB));
    h.subscribe(10, "f1");
    assert_eq!(decline_all(&mut h, 10, 10.0), vec![a.clone()]);
    h.subscribe(20, "f2");
    assert_eq!(decline_all(&mut h, 20, 20.0), vec![a.clone()]);
    listed(&rounds);
    h.advance(Duration::from_secs(1));
    assert!(listed(&rounds).is_empty(), "refused by both: skipped");
    assert!(h.offers(10).is_empty() && h.offers(20).is_empty());
    h.advance(Duration::from_secs(8));
    assert!(h.offers(10).is_empty() && h.offers(20).is_empty());
    // 10 s after f1's decline its filter lapses: f1 is offered the agent in that very round.
    h.advance(Duration::from_secs(1));
    assert_eq!(listed(&rounds), vec![a.clone()]);
    assert_eq!(decline_all(&mut h, 10, 100.0), vec![a.clone()]);
    assert!(h.offers(20).is_empty());
    // f2's filter lapses 20 s after its decline.
    h.advance(Duration::from_secs(9));
    assert!(h.offers(20).is_empty());
    h.advance(Duration::from_secs(1));
    assert_eq!(decline_all(&mut h, 20, 0.0), vec![a]);
}

/// A framework subscribing while every other refuses every agent is offered all of them at
/// once.
#[test]
fn a_new_framework_is_offered_the_skipped_agents_at_once() {
    let (mut h, rounds) = recording(cfg());
    let a1 = h.register(1, res(4.0, 4 * GIB));
    let a2 = h.register(2, res(4.0, 4 * GIB));
    h.subscribe(10, "f1");
    let mut declined = decline_all(&mut h, 10, 1000.0);
    declined.sort();
    assert_eq!(declined, vec![a1.clone(), a2.clone()]);
    listed(&rounds);
    h.advance(Duration::from_secs(5));
    assert!(listed(&rounds).is_empty());
    h.subscribe(20, "f2");
    let mut offered: Vec<AgentId> = h.offers(20).into_iter().map(|o| o.agent_id).collect();
    offered.sort();
    assert_eq!(offered, vec![a1, a2]);
    assert!(h.offers(10).is_empty());
}

/// Suppress takes a framework out of the count (the agents the others refuse are skipped),
/// Revive puts it back (and clears its own filters): offered at once.
#[test]
fn suppress_and_revive_move_the_skip() {
    let (mut h, rounds) = recording(cfg());
    let a = h.register(1, res(4.0, 4 * GIB));
    h.subscribe(10, "f1");
    h.subscribe(20, "f2");
    // f1 is offered the agent and declines for long; f2 is offered it next and does the same.
    let declined = decline_all(&mut h, 10, 1000.0).len() + decline_all(&mut h, 20, 1000.0).len();
    assert_eq!(declined, 2);
    listed(&rounds);
    h.advance(Duration::from_secs(1));
    assert!(listed(&rounds).is_empty(), "both refuse it");
    // f2 revives: its filter goes, it is offered the agent in the round Revive brings.
    h.msg(20, Message::Revive);
    let o = h.offers(20);
    assert_eq!(o.len(), 1);
    listed(&rounds);
    // f2 suppresses and hands the offer back: only f1 is eligible, and it refuses the agent.
    h.msg(20, Message::Suppress);
    h.decline(20, &o[0], 0.0);
    h.advance(Duration::from_secs(2));
    assert!(
        listed(&rounds).is_empty(),
        "the only eligible framework refuses it"
    );
    assert!(h.offers(10).is_empty() && h.offers(20).is_empty());
    h.msg(20, Message::Revive);
    assert_eq!(decline_all(&mut h, 20, 0.0), vec![a]);
}

/// A framework that disconnects leaves the count; when it fails over (resubscribes with its
/// id) it is offered the agents the others refuse. Tearing a framework down drops its filters,
/// and an agent that is removed and registers afresh is offered at once.
#[test]
fn disconnect_teardown_and_agent_removal_move_the_skip() {
    let (mut h, rounds) = recording(MasterConfig {
        agent_reregister_timeout: Duration::from_secs(30),
        ..cfg()
    });
    h.register(1, res(4.0, 4 * GIB));
    h.subscribe(10, "f1");
    decline_all(&mut h, 10, 1000.0);
    let f2 = h.subscribe(20, "f2");
    decline_all(&mut h, 20, 1000.0);
    listed(&rounds);
    h.advance(Duration::from_secs(1));
    assert!(listed(&rounds).is_empty());
    // f2 drops its connection: f1 alone is eligible and still refuses.
    h.disconnect(20);
    h.advance(Duration::from_secs(1));
    assert!(listed(&rounds).is_empty());
    // f2 fails over on a new connection: its filter is still in place.
    h.connect(21, SCHED);
    h.msg(21, subscribe_msg("f2", Some(f2.clone())));
    h.advance(Duration::from_secs(1));
    assert!(h.offers(21).is_empty());
    // f2 tears down: f1 still refuses; a third framework gets the agent.
    h.msg(21, Message::Teardown);
    listed(&rounds);
    h.advance(Duration::from_secs(1));
    assert!(listed(&rounds).is_empty());
    assert!(h.m.filters().keys().all(|(f, _)| *f != f2));
    h.subscribe(30, "f3");
    assert_eq!(h.offers(30).len(), 1);
    // The agent goes away for good; a fresh one is offered to everyone eligible at once.
    h.take();
    h.disconnect(1);
    h.advance(Duration::from_secs(31));
    assert!(
        h.m.filters().is_empty(),
        "the removed agent's filters are gone"
    );
    let fresh = h.register(2, res(4.0, 4 * GIB));
    let offered: Vec<AgentId> = h.offers(10).into_iter().map(|o| o.agent_id).collect();
    assert_eq!(
        offered,
        vec![fresh],
        "f1 has the lowest share and no filter on it"
    );
}

/// Left out of the listing, a refused agent's free resources still count in the headroom kept
/// for another role's unmet guarantee, exactly as when it was listed: declining one agent
/// leaves the other agent offerable.
#[test]
fn skipped_agents_still_count_in_guarantee_headroom() {
    let mut roles = crate::allocator::Roles::new();
    roles.insert(
        "q".to_owned(),
        RoleSpec {
            guarantee: res(4.0, 0),
            ..RoleSpec::default()
        },
    );
    let (mut h, rounds) = recording(MasterConfig { roles, ..cfg() });
    let a1 = h.register(1, res(4.0, 4 * GIB));
    let a2 = h.register(2, res(4.0, 4 * GIB));
    h.subscribe(10, "f1");
    // 8 cpus free, 4 set aside for q: f1 gets one agent.
    let first = decline_all(&mut h, 10, 1000.0);
    assert_eq!(first, vec![a1.clone()]);
    // a1 refused by the only framework: skipped, but its 4 cpus still cover q's guarantee, so
    // the round the decline brings offers f1 a2.
    assert_eq!(
        h.offers(10)
            .into_iter()
            .map(|o| o.agent_id)
            .collect::<Vec<_>>(),
        vec![a2.clone()]
    );
    let listings = rounds.lock().unwrap().clone();
    assert_eq!(listings.last(), Some(&vec![a2]));
    assert!(
        listings.iter().filter(|l| l.contains(&a1)).count() == 1,
        "a1 listed once"
    );
}
