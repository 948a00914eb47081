//! The master's books: outstanding offers, what each framework is charged for (live tasks plus
//! offers), the resources tasks hold on their agents, and refuse filters.
//!
//! Every change to these goes through the functions here, so the cached sums (an agent's
//! `used`/`offered` and their per-role parts, a framework's allocation) and the three views of
//! the refuse filters (by pair, by expiry, by agent, with the per-agent count of eligible
//! frameworks' filters) cannot drift apart. One exception: the allocation round books the
//! offers it makes itself ([`allocation`](super::allocation)), on entries it already holds, so
//! its hot path looks nothing up by name. The [audit](super::audit) recomputes them all from
//! scratch after every step in tests.

use super::timer::Timer;
use super::{FilterMap, Master, TaskEntry};
use proto::{AgentId, FrameworkId, Message, Offer, OfferId, Resources};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

/// Offers, charges and filters: the part of the master's state that says who may use what.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    /// Outstanding offers by counter (the `n` of the id `<run id>-O<n>`), in minting order.
    pub(super) offers: BTreeMap<u64, Booked>,
    /// Per framework (including torn-down ones whose tasks still run): live tasks plus
    /// outstanding offers. Entries are dropped once empty.
    pub(super) fw_alloc: BTreeMap<FrameworkId, Resources>,
    /// The refuse filters.
    pub(super) refuse: RefuseIndex,
}

/// An outstanding offer as the books need it: who holds what of which agent. The wire
/// [`Offer`] (hostname, attributes, data sets) goes out once in the `Offers` message and is
/// rebuilt from the agent's entry for views ([`Master::offer_view`]); an agent's description
/// only changes when it re-registers, which rescinds its offers first.
#[derive(Clone, Debug)]
pub(super) struct Booked {
    /// The framework it is for (shared with its entry: no copy per offer).
    pub(super) framework_id: Arc<FrameworkId>,
    /// The agent whose resources these are (shared with its entry).
    pub(super) agent_id: Arc<AgentId>,
    /// The offered resources.
    pub(super) resources: Resources,
    /// `Some(role)` when reserved for that role.
    pub(super) reserved_for: Option<String>,
}

/// An offer id: the run id, `-O` and the counter, written without the formatting machinery.
pub(super) fn offer_id(run_id: &str, n: u64) -> OfferId {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut s = String::with_capacity(run_id.len() + 2 + digits.len() - i);
    s.push_str(run_id);
    s.push_str("-O");
    // Only ASCII digits were written.
    s.extend(digits[i..].iter().map(|d| char::from(*d)));
    OfferId(s)
}

/// The counter of an offer id this run minted (exactly what [`offer_id`] writes), or `None`
/// for any other id (another run's, malformed, with leading zeros or a sign), which is then
/// simply unknown.
pub(super) fn offer_counter(run_id: &str, id: &OfferId) -> Option<u64> {
    let digits = id.0.strip_prefix(run_id)?.strip_prefix("-O")?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    canonical.then(|| digits.parse().ok()).flatten()
}

impl Ledger {
    /// A framework's allocation (zero when it has none).
    pub(super) fn allocated(&self, fid: &FrameworkId) -> Resources {
        self.fw_alloc.get(fid).copied().unwrap_or_default()
    }

    /// Counts `r` towards a framework's allocation.
    pub(super) fn charge(&mut self, fid: &FrameworkId, r: Resources) {
        *self.fw_alloc.entry(fid.clone()).or_default() += r;
    }

    /// Takes `r` off a framework's allocation.
    pub(super) fn discharge(&mut self, fid: &FrameworkId, r: Resources) {
        if let Some(a) = self.fw_alloc.get_mut(fid) {
            *a -= r;
            if a.is_empty() {
                self.fw_alloc.remove(fid);
            }
        }
    }
}

/// The refuse filters, indexed three ways, owned in one place: by (framework, agent) for the
/// API and for lengthening, by expiry for pruning without a scan, and per agent by framework
/// `seq` for the allocator, which asks "does this agent refuse that framework?" per agent.
///
/// Per agent it also counts the filters of *eligible* frameworks (connected, not suppressed, as
/// of the last [`RefuseIndex::sync_eligible`], which the round calls first): an agent whose
/// count equals the number of eligible frameworks is refused by all of them (once expired
/// filters are pruned, every filter left is active), so the round skips it without looking at
/// its filters, the DeclineOffers end state. The count moves with every filter set or cleared,
/// and `sync_eligible` moves it for the frameworks whose eligibility changed since the last
/// round, so it is exact under expiry, arrival, removal, suppress and revive.
#[derive(Clone, Debug, Default)]
pub(super) struct RefuseIndex {
    /// Until when each framework refuses each agent.
    filters: FilterMap,
    /// The same, by expiry.
    expiry: BTreeSet<(Instant, FrameworkId, AgentId)>,
    /// Per agent: its filters by framework seq, and how many are of eligible frameworks; only
    /// agents with filters.
    by_agent: BTreeMap<AgentId, Refusals>,
    /// The seq of each framework that has filters, to find its entries in `by_agent`.
    seqs: BTreeMap<FrameworkId, u64>,
    /// The eligible frameworks as of the last `sync_eligible`, by seq.
    eligible: BTreeMap<u64, FrameworkId>,
}

/// The refuse filters on one agent.
#[derive(Clone, Debug, Default)]
pub(super) struct Refusals {
    /// (framework seq, until), sorted by seq.
    pub(super) on: Vec<(u64, Instant)>,
    /// How many of `on` are of frameworks in [`RefuseIndex`]'s synced eligible set.
    pub(super) eligible: usize,
}

impl RefuseIndex {
    /// Every active filter (expired ones stay until [`RefuseIndex::prune`]).
    pub(super) fn filters(&self) -> &FilterMap {
        &self.filters
    }

    /// The filters on one agent as (framework seq, until), sorted by seq.
    pub(super) fn on_agent(&self, aid: &AgentId) -> &[(u64, Instant)] {
        self.by_agent
            .get(aid)
            .map(|r| r.on.as_slice())
            .unwrap_or(&[])
    }

    /// The agents with filters, in id order (for a merge with the agent table).
    pub(super) fn by_agent(&self) -> &BTreeMap<AgentId, Refusals> {
        &self.by_agent
    }

    /// How many frameworks were eligible at the last [`RefuseIndex::sync_eligible`].
    pub(super) fn eligible_count(&self) -> usize {
        self.eligible.len()
    }

    /// Brings the eligible set to `now_eligible` (every eligible framework as (seq, id), sorted
    /// by seq), moving the per-agent counts of the frameworks that joined or left it: O(F) plus
    /// the filters of those frameworks.
    pub(super) fn sync_eligible<'a>(
        &mut self,
        now_eligible: impl Iterator<Item = (u64, &'a FrameworkId)>,
    ) {
        let mut joined: Vec<(u64, FrameworkId)> = Vec::new();
        let mut left: Vec<u64> = Vec::new();
        let mut old = self.eligible.iter().peekable();
        for (seq, fid) in now_eligible {
            while let Some((&s, _)) = old.next_if(|(s, _)| **s < seq) {
                left.push(s);
            }
            match old.next_if(|(s, _)| **s == seq) {
                Some((_, f)) if f == fid => {}
                Some((&s, _)) => {
                    // The same seq under another id (never happens: seqs are not reused).
                    left.push(s);
                    joined.push((seq, fid.clone()));
                }
                None => joined.push((seq, fid.clone())),
            }
        }
        left.extend(old.map(|(s, _)| *s));
        for seq in left {
            if let Some(fid) = self.eligible.remove(&seq) {
                self.count_framework(&fid, seq, false);
            }
        }
        for (seq, fid) in joined {
            self.count_framework(&fid, seq, true);
            self.eligible.insert(seq, fid);
        }
    }

    /// Moves the counts of the agents `fid` (subscription `seq`) filters, by one up or down.
    fn count_framework(&mut self, fid: &FrameworkId, seq: u64, up: bool) {
        if self.seqs.get(fid) != Some(&seq) {
            return;
        }
        let agents: Vec<AgentId> = self.agents_of(fid).cloned().collect();
        for a in agents {
            if let Some(r) = self.by_agent.get_mut(&a) {
                if up {
                    r.eligible += 1;
                } else {
                    r.eligible -= 1;
                }
            }
        }
    }

    /// True when the framework with `seq` refuses `aid` at `now` (the round reads the agent's
    /// filters from its snapshot instead).
    #[cfg(test)]
    pub(super) fn refuses(&self, aid: &AgentId, seq: u64, now: Instant) -> bool {
        let on = self.on_agent(aid);
        on.binary_search_by_key(&seq, |(s, _)| *s)
            .is_ok_and(|i| on[i].1 > now)
    }

    /// Sets the filter of framework `fid` (subscription `seq`) on `aid` to `until`, unless a
    /// longer one is already in place.
    pub(super) fn set(&mut self, fid: &FrameworkId, seq: u64, aid: &AgentId, until: Instant) {
        let key = (fid.clone(), aid.clone());
        if let Some(old) = self.filters.get(&key).copied() {
            if old >= until {
                return;
            }
            self.expiry.remove(&(old, fid.clone(), aid.clone()));
        }
        self.filters.insert(key, until);
        self.expiry.insert((until, fid.clone(), aid.clone()));
        self.seqs.insert(fid.clone(), seq);
        let counted = self.eligible.contains_key(&seq);
        let r = self.by_agent.entry(aid.clone()).or_default();
        match r.on.binary_search_by_key(&seq, |(s, _)| *s) {
            Ok(i) => r.on[i].1 = until,
            Err(i) => {
                r.on.insert(i, (seq, until));
                r.eligible += usize::from(counted);
            }
        }
    }

    /// Removes the filter of `fid` on `aid`, if any.
    pub(super) fn clear(&mut self, fid: &FrameworkId, aid: &AgentId) {
        let Some(until) = self.filters.remove(&(fid.clone(), aid.clone())) else {
            return;
        };
        self.expiry.remove(&(until, fid.clone(), aid.clone()));
        if let Some(seq) = self.seqs.get(fid).copied() {
            let counted = self.eligible.contains_key(&seq);
            if let Some(r) = self.by_agent.get_mut(aid) {
                if let Ok(i) = r.on.binary_search_by_key(&seq, |(s, _)| *s) {
                    r.on.remove(i);
                    r.eligible -= usize::from(counted);
                }
                if r.on.is_empty() {
                    self.by_agent.remove(aid);
                }
            }
            if self.agents_of(fid).next().is_none() {
                self.seqs.remove(fid);
            }
        }
    }

    /// Removes every filter of a framework (revive, teardown).
    pub(super) fn clear_framework(&mut self, fid: &FrameworkId) {
        let agents: Vec<AgentId> = self.agents_of(fid).cloned().collect();
        for a in agents {
            self.clear(fid, &a);
        }
    }

    /// Removes every filter on an agent (it was removed).
    pub(super) fn clear_agent(&mut self, aid: &AgentId) {
        let frameworks: Vec<FrameworkId> = self
            .filters
            .keys()
            .filter(|(_, a)| a == aid)
            .map(|(f, _)| f.clone())
            .collect();
        for f in frameworks {
            self.clear(&f, aid);
        }
    }

    /// Drops the filters that have expired by `now`.
    pub(super) fn prune(&mut self, now: Instant) {
        while let Some((until, f, a)) = self.expiry.first().cloned() {
            if until > now {
                break;
            }
            self.clear(&f, &a);
        }
    }

    /// The agents a framework has filters on.
    fn agents_of<'a>(&'a self, fid: &'a FrameworkId) -> impl Iterator<Item = &'a AgentId> + 'a {
        self.filters
            .range((fid.clone(), AgentId(String::new()))..)
            .take_while(move |((f, _), _)| f == fid)
            .map(|((_, a), _)| a)
    }

    /// Checks that the three views agree; `seq_of` gives a framework's current seq.
    pub(super) fn check(&self, seq_of: impl Fn(&FrameworkId) -> Option<u64>) -> Result<(), String> {
        if self.expiry.len() != self.filters.len() {
            return Err("filter expiry index out of step with filters".into());
        }
        let mut per_agent: BTreeMap<&AgentId, usize> = BTreeMap::new();
        for ((f, a), until) in &self.filters {
            *per_agent.entry(a).or_default() += 1;
            if !self.expiry.contains(&(*until, f.clone(), a.clone())) {
                return Err(format!("filter ({f}, {a}) missing from the expiry index"));
            }
            let seq = seq_of(f);
            if seq.is_none() || self.seqs.get(f).copied() != seq {
                return Err(format!(
                    "filter ({f}, {a}) of an unknown or renumbered framework"
                ));
            }
            let indexed = seq.is_some_and(|s| self.on_agent(a).binary_search(&(s, *until)).is_ok());
            if !indexed {
                return Err(format!("filter ({f}, {a}) missing from the agent's index"));
            }
        }
        for (a, r) in &self.by_agent {
            if r.on.windows(2).any(|w| w[0].0 >= w[1].0) {
                return Err(format!("agent {a}: refuse index not sorted"));
            }
            if r.on.len() != per_agent.get(a).copied().unwrap_or(0) {
                return Err(format!("agent {a}: refuse index has stale entries"));
            }
            let eligible =
                r.on.iter()
                    .filter(|(s, _)| self.eligible.contains_key(s))
                    .count();
            if eligible != r.eligible {
                return Err(format!(
                    "agent {a}: {} filters of eligible frameworks counted, {eligible} recomputed",
                    r.eligible
                ));
            }
        }
        if self.seqs.len()
            != self
                .filters
                .keys()
                .map(|(f, _)| f)
                .collect::<BTreeSet<_>>()
                .len()
        {
            return Err("refuse index remembers frameworks without filters".into());
        }
        Ok(())
    }
}

/// Subtracts `r` from `role`'s entry of a pool map, dropping the entry once empty.
fn sub_pool(pools: &mut BTreeMap<String, Resources>, role: &str, r: Resources) {
    if let Some(p) = pools.get_mut(role) {
        *p -= r;
        if p.is_empty() {
            pools.remove(role);
        }
    }
}

impl Master {
    /// The outstanding offer with this id, if this run minted it and it is still there.
    pub(super) fn booked(&self, id: &OfferId) -> Option<&Booked> {
        let n = offer_counter(&self.cfg.run_id, id)?;
        self.ledger.offers.get(&n)
    }

    /// The wire offer for an outstanding one (counter `n`), rebuilt from the books and the
    /// agent's entry: what was sent in the `Offers` message.
    pub(super) fn offer_view(&self, n: u64, o: &Booked) -> Offer {
        let a = self.agents.get(&*o.agent_id);
        Offer {
            id: offer_id(&self.cfg.run_id, n),
            framework_id: (*o.framework_id).clone(),
            agent_id: (*o.agent_id).clone(),
            hostname: a.map(|a| a.hostname.clone()).unwrap_or_default(),
            resources: o.resources,
            reserved_for: o.reserved_for.clone(),
            attributes: a.map(|a| a.attributes.clone()).unwrap_or_default(),
            datasets: a.map(|a| a.datasets.clone()).unwrap_or_default(),
        }
    }

    /// Removes an offer, returning its resources to the agent's pool; `None` when `id` names
    /// no outstanding offer.
    pub(super) fn remove_offer(&mut self, id: &OfferId) -> Option<Booked> {
        let n = offer_counter(&self.cfg.run_id, id)?;
        self.remove_offer_n(n)
    }

    /// [`Master::remove_offer`] by counter.
    fn remove_offer_n(&mut self, n: u64) -> Option<Booked> {
        let o = self.ledger.offers.remove(&n)?;
        if let Some(a) = self.agents.get_mut(&*o.agent_id) {
            a.offered -= o.resources;
            if let Some(role) = &o.reserved_for {
                sub_pool(&mut a.reserved_offered, role, o.resources);
            }
        }
        self.timers.stop(&Timer::OfferExpiry(n));
        self.ledger.discharge(&o.framework_id, o.resources);
        Some(o)
    }

    /// Rescinds every offer of an agent, telling each holder.
    pub(super) fn rescind_agent_offers(&mut self, aid: &AgentId) {
        let ns: Vec<u64> = self
            .ledger
            .offers
            .iter()
            .filter(|(_, o)| *o.agent_id == *aid)
            .map(|(n, _)| *n)
            .collect();
        for n in ns {
            if let Some(o) = self.remove_offer_n(n) {
                let offer_id = offer_id(&self.cfg.run_id, n);
                self.send_to_framework(&o.framework_id, Message::Rescind { offer_id });
            }
        }
    }

    /// Returns every offer of a framework to the pool, silently.
    pub(super) fn drop_framework_offers(&mut self, fid: &FrameworkId) {
        let ns: Vec<u64> = self
            .ledger
            .offers
            .iter()
            .filter(|(_, o)| *o.framework_id == *fid)
            .map(|(n, _)| *n)
            .collect();
        for n in ns {
            self.remove_offer_n(n);
        }
    }

    /// Rescinds an offer nobody answered in time (counter `n`), and keeps its resources away
    /// from that framework for the default refuse time so that they go to someone else first.
    pub(super) fn expire_offer(&mut self, n: u64) {
        let Some(o) = self.remove_offer_n(n) else {
            return;
        };
        let offer_id = offer_id(&self.cfg.run_id, n);
        tracing::info!(offer = %offer_id, framework = %o.framework_id, "offer timed out; rescinded");
        let refuse = self.refuse_duration(f64::NAN);
        if let Some(until) = refuse.and_then(|d| self.now.checked_add(d)) {
            self.set_filter(&o.framework_id, &o.agent_id, until);
        }
        self.send_to_framework(&o.framework_id, Message::Rescind { offer_id });
        self.schedule_allocation();
    }

    /// Books a new non-terminal task's resources on its agent (pools included) and framework.
    pub(super) fn hold_task(&mut self, t: &TaskEntry) {
        self.hold(
            &t.info.agent_id,
            &t.framework_id,
            t.info.resources,
            &t.reserved,
        );
    }

    /// Undoes [`Master::hold_task`] for a task that became terminal or left the table.
    pub(super) fn release_task(&mut self, t: &TaskEntry) {
        self.release(
            &t.info.agent_id,
            &t.framework_id,
            t.info.resources,
            &t.reserved,
        );
    }

    /// Books `r` (of which `reserved` comes from those roles' reservations) used on `agent`
    /// and charged to `fid`: a task's or an executor's share.
    pub(super) fn hold(
        &mut self,
        agent: &AgentId,
        fid: &FrameworkId,
        r: Resources,
        reserved: &[(String, Resources)],
    ) {
        if let Some(a) = self.agents.get_mut(agent) {
            a.used += r;
            for (role, part) in reserved {
                *a.reserved_used.entry(role.clone()).or_default() += *part;
            }
        }
        self.ledger.charge(fid, r);
    }

    /// Undoes [`Master::hold`].
    pub(super) fn release(
        &mut self,
        agent: &AgentId,
        fid: &FrameworkId,
        r: Resources,
        reserved: &[(String, Resources)],
    ) {
        if let Some(a) = self.agents.get_mut(agent) {
            a.used -= r;
            for (role, part) in reserved {
                sub_pool(&mut a.reserved_used, role, *part);
            }
        }
        self.ledger.discharge(fid, r);
    }

    /// Sets (or lengthens) the refuse filter of `fid` on `aid` to `until`; nothing when either
    /// is unknown.
    pub(super) fn set_filter(&mut self, fid: &FrameworkId, aid: &AgentId, until: Instant) {
        let Some(seq) = self.frameworks.get(fid).map(|f| f.seq) else {
            return;
        };
        if !self.agents.contains_key(aid) {
            return;
        }
        self.ledger.refuse.set(fid, seq, aid, until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn offer_ids_parse_back_to_their_counter_and_nothing_else_does() {
        for n in [0, 1, 9, 10, 12345, u64::MAX] {
            assert_eq!(offer_counter("run", &offer_id("run", n)), Some(n));
        }
        assert_eq!(offer_id("run", 42).0, "run-O42");
        for foreign in [
            "other-O1",
            "run-O",
            "run-O01",
            "run-O+1",
            "run-O1x",
            "run-A1",
            "run-O-1",
            "runO1",
            "run-O18446744073709551616",
            "",
        ] {
            assert_eq!(
                offer_counter("run", &OfferId(foreign.into())),
                None,
                "{foreign}"
            );
        }
    }

    #[test]
    fn refuse_index_keeps_its_views_in_step() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let (f1, f2) = (FrameworkId("f1".into()), FrameworkId("f2".into()));
        let (a1, a2) = (AgentId("a1".into()), AgentId("a2".into()));
        let seq = |f: &FrameworkId| Some(if *f == FrameworkId("f1".into()) { 1 } else { 2 });
        let mut r = RefuseIndex::default();
        r.set(&f2, 2, &a1, t0 + s(5));
        r.set(&f1, 1, &a1, t0 + s(3));
        r.set(&f1, 1, &a2, t0 + s(9));
        // A shorter filter does not shorten a longer one.
        r.set(&f1, 1, &a2, t0 + s(1));
        r.check(seq).unwrap();
        assert_eq!(r.on_agent(&a1), &[(1, t0 + s(3)), (2, t0 + s(5))]);
        assert!(r.refuses(&a2, 1, t0 + s(8)));
        assert!(!r.refuses(&a2, 1, t0 + s(9)));
        r.prune(t0 + s(4));
        r.check(seq).unwrap();
        assert_eq!(r.on_agent(&a1), &[(2, t0 + s(5))]);
        r.clear_agent(&a1);
        r.check(seq).unwrap();
        assert_eq!(r.filters().len(), 1);
        r.clear_framework(&f1);
        r.check(seq).unwrap();
        assert!(r.filters().is_empty() && r.on_agent(&a2).is_empty());
    }
}
