//! The allocation round: snapshot the books, ask the policy, re-validate each proposal against
//! the books as they are (Nomad's plan applier), and turn the valid ones into offers.
//!
//! The snapshot borrows the books (no ids, filters or tasks are copied) and lists only connected
//! agents with something allocatable that some eligible framework does not refuse, so a round
//! costs O(agents + frameworks) to build plus what the policy does; framework allocations and
//! the per-agent refuse index (with its count of eligible frameworks refusing each agent) are
//! kept up to date as events happen (in the [ledger](super::ledger)), not recomputed here.
//!
//! The hot path works on positions, not names: the snapshot is built by one merge of the agent
//! table with the refuse index (both ordered by agent id), each listed agent remembers its
//! position in the agent table and its filters, and a proposal names its agent and framework by
//! their index in the snapshot, so re-validating and booking it looks nothing up by name.

use super::ledger::{offer_id, Booked, Ledger, Refusals};
use super::timer::Timer;
use super::{Action, AgentEntry, FrameworkEntry, Master};
use crate::allocator::{is_allocatable, AgentView, FrameworkView, Snapshot};
use proto::{AgentId, FrameworkId, Message, Offer, Resources};
use std::collections::BTreeMap;
use std::time::Instant;

/// The frameworks as the allocator sees them, in subscription order, and beside them their
/// entries (a proposal names its framework by index in that order).
fn framework_views<'a>(
    frameworks: &'a BTreeMap<FrameworkId, FrameworkEntry>,
    ledger: &Ledger,
) -> (Vec<FrameworkView<'a>>, Vec<&'a FrameworkEntry>) {
    let mut fws: Vec<&'a FrameworkEntry> = frameworks.values().collect();
    fws.sort_by_key(|f| f.seq);
    let views = fws
        .iter()
        .map(|f| FrameworkView {
            id: &f.id,
            seq: f.seq,
            role: &f.info.role,
            priority: f.info.priority,
            allocated: ledger.allocated(&f.id),
            eligible: f.is_connected() && !f.suppressed,
        })
        .collect();
    (views, fws)
}

/// One listed agent: its position in the agent table and its filters.
struct Listed<'a> {
    /// Index in the agent table's (id) order.
    pos: usize,
    /// Its refuse filters (framework seq, until), sorted by seq.
    refused: &'a [(u64, Instant)],
}

/// Builds the allocator's view of the agents, in registration order, and beside it each listed
/// agent's position and filters. Agents every eligible framework refuses (`eligible` of them)
/// are left out; their free unreserved resources are returned apart, as they still count in
/// the guarantees' headroom. Returns (views, listed, total, refused free).
#[allow(clippy::type_complexity)]
fn agent_views<'a, 'r>(
    agents: &'a BTreeMap<AgentId, AgentEntry>,
    by_agent: &'r BTreeMap<AgentId, Refusals>,
    eligible: usize,
    min: Resources,
) -> (Vec<AgentView<'a>>, Vec<Listed<'r>>, Resources, Resources)
where
    'r: 'a,
{
    let mut total = Resources::ZERO;
    let mut refused_free = Resources::ZERO;
    let mut listed: Vec<(u64, &'a AgentEntry, Resources, Listed<'r>)> =
        Vec::with_capacity(agents.len());
    let mut filters = by_agent.iter().peekable();
    for (pos, a) in agents.values().enumerate() {
        // Both maps are ordered by agent id: advance the filters to this agent.
        while filters.next_if(|(id, _)| **id < a.id).is_some() {}
        let refusals = filters.next_if(|(id, _)| **id == a.id).map(|(_, r)| r);
        if !a.is_offerable() {
            continue;
        }
        total += a.total;
        let available = a.unreserved_free();
        let has_reserved = a
            .reservations
            .iter()
            .any(|(r, _)| is_allocatable(&a.reserved_free(r), &min));
        if !has_reserved && !is_allocatable(&available, &min) {
            continue;
        }
        if refusals.is_some_and(|r| eligible > 0 && r.eligible == eligible) {
            // Every eligible framework refuses it: nothing of it can be offered this round.
            refused_free += available;
            continue;
        }
        let refused = refusals.map(|r| r.on.as_slice()).unwrap_or(&[]);
        listed.push((a.seq, a, available, Listed { pos, refused }));
    }
    listed.sort_unstable_by_key(|(seq, _, _, _)| *seq);
    let mut views = Vec::with_capacity(listed.len());
    let mut out = Vec::with_capacity(listed.len());
    for (_, a, available, l) in listed {
        let reserved: Vec<(&str, Resources)> = a
            .reservations
            .iter()
            .map(|(r, _)| (r.as_str(), a.reserved_free(r)))
            .filter(|(_, r)| is_allocatable(r, &min))
            .collect();
        views.push(AgentView {
            id: &a.id,
            seq: a.seq,
            hostname: &a.hostname,
            total: a.total,
            available,
            reserved,
            refused: l.refused,
            attributes: &a.attributes,
        });
        out.push(l);
    }
    (views, out, total, refused_free)
}

impl Master {
    /// One allocation round: snapshot, ask the policy, re-validate, send offers (one `Offers`
    /// message per framework, in subscription order).
    pub(super) fn allocate(&mut self) {
        let now = self.now;
        self.ledger.refuse.prune(now);
        let min = self.cfg.min_allocatable;
        let (fws, fw_entries) = framework_views(&self.frameworks, &self.ledger);
        self.ledger
            .refuse
            .sync_eligible(fws.iter().filter(|f| f.eligible).map(|f| (f.seq, f.id)));
        let eligible = self.ledger.refuse.eligible_count();
        if eligible == 0 {
            return;
        }
        let (views, listed, total, refused_free) =
            agent_views(&self.agents, self.ledger.refuse.by_agent(), eligible, min);
        if views.is_empty() {
            return;
        }
        let proposals = self.allocator.allocate(
            &Snapshot {
                total,
                agents: views,
                frameworks: fws,
                roles: &self.cfg.roles,
                min_allocatable: min,
                refused_free,
            },
            now,
        );
        if proposals.is_empty() {
            return;
        }
        // Disjoint borrows of the books: `listed` still borrows the refuse index and
        // `fw_entries` the framework table.
        let (cfg, allocator) = (&self.cfg, &self.allocator);
        let (offers, fw_alloc) = (&mut self.ledger.offers, &mut self.ledger.fw_alloc);
        let (timers, actions, next_offer) =
            (&mut self.timers, &mut self.actions, &mut self.next_offer);
        let mut entries: Vec<&mut AgentEntry> = self.agents.values_mut().collect();
        let deadline = cfg.offer_timeout.and_then(|d| now.checked_add(d));
        // Per framework, by index in subscription order: the offers to send (in that order)
        // and what they charge it, added to its allocation once at the end of the round.
        let mut batches: Vec<Option<(u64, Vec<Offer>)>> = vec![None; fw_entries.len()];
        let mut charged: Vec<Resources> = vec![Resources::ZERO; fw_entries.len()];
        for p in proposals {
            let f = fw_entries
                .get(p.framework)
                .copied()
                .filter(|f| f.is_connected() && !f.suppressed);
            let l = listed.get(p.agent);
            let valid = match (f, l) {
                (Some(f), Some(l)) => {
                    let filtered = l
                        .refused
                        .binary_search_by_key(&f.seq, |(s, _)| *s)
                        .is_ok_and(|i| l.refused[i].1 > now);
                    let role_limit = cfg.roles.get(&f.info.role).and_then(|spec| spec.limit);
                    let within_limit = role_limit.is_none_or(|limit| {
                        let role_allocated = fw_entries
                            .iter()
                            .zip(&charged)
                            .filter(|(g, _)| g.info.role == f.info.role)
                            .fold(Resources::ZERO, |t, (g, c)| {
                                t + fw_alloc.get(&g.id).copied().unwrap_or_default() + *c
                            });
                        limit.contains(&(role_allocated + p.resources))
                    });
                    let a = &entries[l.pos];
                    let pool = match &p.reserved_for {
                        None => a.unreserved_free(),
                        Some(r) => a.reserved_free(r),
                    };
                    let role_ok = p.reserved_for.as_ref().is_none_or(|r| f.info.role == *r);
                    let fits = a.is_offerable()
                        && pool.contains(&p.resources)
                        && is_allocatable(&p.resources, &min);
                    (role_ok && !filtered && fits && within_limit).then_some((f, l.pos))
                }
                _ => None,
            };
            let Some((f, pos, conn)) = valid.and_then(|(f, pos)| Some((f, pos, f.conn?))) else {
                tracing::warn!(
                    allocator = allocator.name(),
                    framework = ?f.map(|f| &f.id),
                    agent = ?l.map(|l| &entries[l.pos].id),
                    resources = %p.resources,
                    "allocator proposed an invalid offer; skipped"
                );
                continue;
            };
            // The counter only grows, so the new key is past every outstanding one.
            *next_offer += 1;
            let n = *next_offer;
            let a = &mut entries[pos];
            a.offered += p.resources;
            if let Some(r) = &p.reserved_for {
                *a.reserved_offered.entry(r.clone()).or_default() += p.resources;
            }
            charged[p.framework] += p.resources;
            if let Some(deadline) = deadline {
                timers.set(Timer::OfferExpiry(n), deadline);
            }
            let offer = Offer {
                id: offer_id(&cfg.run_id, n),
                framework_id: f.id.clone(),
                agent_id: a.id.clone(),
                hostname: a.hostname.clone(),
                resources: p.resources,
                reserved_for: p.reserved_for,
                attributes: a.attributes.clone(),
                datasets: a.datasets.clone(),
            };
            offers.insert(
                n,
                Booked {
                    framework_id: f.shared_id.clone(),
                    agent_id: a.shared_id.clone(),
                    resources: offer.resources,
                    reserved_for: offer.reserved_for.clone(),
                },
            );
            batches[p.framework]
                .get_or_insert_with(|| (conn, Vec::new()))
                .1
                .push(offer);
        }
        for (f, c) in fw_entries.iter().zip(charged) {
            if c.is_empty() {
                continue;
            }
            match fw_alloc.get_mut(&f.id) {
                Some(r) => *r += c,
                None => {
                    fw_alloc.insert(f.id.clone(), c);
                }
            }
        }
        for (conn, offers) in batches.into_iter().flatten() {
            actions.push_back(Action::Send {
                conn,
                msg: Message::Offers { offers },
            });
        }
    }
}
