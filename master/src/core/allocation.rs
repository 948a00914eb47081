//! The allocation round: snapshot the books, ask the policy, re-validate each proposal against
//! the books as they are (Nomad's plan applier), and turn the valid ones into offers.
//!
//! The snapshot borrows the books (no ids, filters or tasks are copied) and lists only connected
//! agents with something allocatable, so a round costs O(agents + frameworks) to build plus what
//! the policy does; framework allocations and the per-agent refuse index are kept up to date as
//! events happen (in the [ledger](super::ledger)), not recomputed here.

use super::ledger::Ledger;
use super::{AgentEntry, FrameworkEntry, Master};
use crate::allocator::{is_allocatable, AgentView, Allocation, FrameworkView, Roles, Snapshot};
use proto::{AgentId, FrameworkId, Message, Offer, Resources};
use std::collections::BTreeMap;
use std::time::Instant;

/// Builds the allocator's view of the books; `None` when there is nothing to allocate (no agent
/// with anything allocatable, or no eligible framework).
fn snapshot<'a>(
    agents: &'a BTreeMap<AgentId, AgentEntry>,
    frameworks: &'a BTreeMap<FrameworkId, FrameworkEntry>,
    ledger: &'a Ledger,
    roles: &'a Roles,
    min: Resources,
) -> Option<Snapshot<'a>> {
    let mut total = Resources::ZERO;
    let mut views: Vec<AgentView<'a>> = Vec::new();
    for a in agents.values().filter(|a| a.is_offerable()) {
        total += a.total;
        let available = a.unreserved_free();
        let reserved: Vec<(&str, Resources)> = a
            .reservations
            .iter()
            .map(|(r, _)| (r.as_str(), a.reserved_free(r)))
            .filter(|(_, r)| is_allocatable(r, &min))
            .collect();
        if reserved.is_empty() && !is_allocatable(&available, &min) {
            continue;
        }
        views.push(AgentView {
            id: &a.id,
            seq: a.seq,
            hostname: &a.hostname,
            total: a.total,
            available,
            reserved,
            refused: ledger.refuse.on_agent(&a.id),
            attributes: &a.attributes,
        });
    }
    views.sort_by_key(|a| a.seq);
    let mut fws: Vec<FrameworkView<'a>> = frameworks
        .values()
        .map(|f| FrameworkView {
            id: &f.id,
            seq: f.seq,
            role: &f.info.role,
            priority: f.info.priority,
            allocated: ledger.allocated(&f.id),
            eligible: f.is_connected() && !f.suppressed,
        })
        .collect();
    fws.sort_by_key(|f| f.seq);
    if views.is_empty() || !fws.iter().any(|f| f.eligible) {
        return None;
    }
    Some(Snapshot {
        total,
        agents: views,
        frameworks: fws,
        roles,
        min_allocatable: min,
    })
}

impl Master {
    /// One allocation round: snapshot, ask the policy, re-validate, send offers (one `Offers`
    /// message per framework, in subscription order).
    pub(super) fn allocate(&mut self) {
        let now = self.now;
        self.ledger.refuse.prune(now);
        let proposals = {
            let min = self.cfg.min_allocatable;
            let roles = &self.cfg.roles;
            match snapshot(&self.agents, &self.frameworks, &self.ledger, roles, min) {
                Some(s) => self.allocator.allocate(&s, now),
                None => return,
            }
        };
        // Offers by framework seq, sent in subscription order.
        let mut batches: BTreeMap<u64, (FrameworkId, Vec<Offer>)> = BTreeMap::new();
        for p in proposals {
            let Some(seq) = self.revalidate(&p, now) else {
                tracing::warn!(
                    allocator = self.allocator.name(),
                    framework = %p.framework_id,
                    agent = %p.agent_id,
                    resources = %p.resources,
                    "allocator proposed an invalid offer; skipped"
                );
                continue;
            };
            let id = self.mint_offer_id();
            let Some(a) = self.agents.get(&p.agent_id) else {
                continue;
            };
            let offer = Offer {
                id,
                framework_id: p.framework_id.clone(),
                agent_id: a.id.clone(),
                hostname: a.hostname.clone(),
                resources: p.resources,
                reserved_for: p.reserved_for.clone(),
                attributes: a.attributes.clone(),
                datasets: a.datasets.clone(),
            };
            self.book_offer(offer.clone());
            batches
                .entry(seq)
                .or_insert_with(|| (p.framework_id, Vec::new()))
                .1
                .push(offer);
        }
        for (_, (fid, offers)) in batches {
            self.send_to_framework(&fid, Message::Offers { offers });
        }
    }

    /// Checks a proposal against the books as they are now (earlier proposals of the round
    /// included): the framework is connected and not suppressed, of the pool's role, and not
    /// filtered from the agent; the agent is connected and the pool still holds the resources,
    /// at least `min_allocatable`; the role's quota limit holds. Returns the framework's seq
    /// when the proposal may become an offer.
    fn revalidate(&self, p: &Allocation, now: Instant) -> Option<u64> {
        let f = self
            .frameworks
            .get(&p.framework_id)
            .filter(|f| f.is_connected() && !f.suppressed)?;
        let role_ok = p.reserved_for.as_ref().is_none_or(|r| f.info.role == *r);
        let filtered = self.ledger.refuse.refuses(&p.agent_id, f.seq, now);
        let fits = self.agents.get(&p.agent_id).is_some_and(|a| {
            let pool = match &p.reserved_for {
                None => a.unreserved_free(),
                Some(r) => a.reserved_free(r),
            };
            a.is_offerable()
                && pool.contains(&p.resources)
                && is_allocatable(&p.resources, &self.cfg.min_allocatable)
        });
        let within_limit = self
            .cfg
            .roles
            .get(&f.info.role)
            .and_then(|spec| spec.limit)
            .is_none_or(|limit| limit.contains(&(self.role_allocated(&f.info.role) + p.resources)));
        (role_ok && !filtered && fits && within_limit).then_some(f.seq)
    }
}
