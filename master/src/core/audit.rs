//! The audit: [`Master::check_invariants`] recomputes the books from the task table, the
//! offers and the connections, and compares them with what the core caches and indexes. Tests
//! and simulations run it after every step, so a bookkeeping slip shows up at the step that
//! made it rather than as a wrong offer much later.

use super::timer::Timer;
use super::{Binding, Master};
use proto::{AgentId, FrameworkId, Resources, TaskState};
use std::collections::{BTreeMap, BTreeSet};

/// Per agent and role: reserved resources used by tasks and offered, recomputed.
type Pools<'a> = BTreeMap<(&'a AgentId, &'a str), (Resources, Resources)>;

/// Per agent: resources used by tasks and offered, recomputed.
type Sums<'a> = BTreeMap<&'a AgentId, Resources>;

impl Master {
    /// Checks the books: per agent, the cached used/offered sums match the task table and the
    /// offers, and used + offered ≤ total (so no resource is in two offers or both used and
    /// offered); offers go only to connected frameworks on connected agents; the refuse index
    /// and the timer table agree with what they index; connections and the entries bound to
    /// them agree. Tests assert this after every step.
    pub fn check_invariants(&self) -> Result<(), String> {
        let (used, offered, pools) = self.check_books()?;
        self.check_agents(&used, &offered, &pools)?;
        self.check_filters()?;
        self.check_timers()?;
        self.check_connections()
    }

    /// Recomputes per-agent used and offered sums, reserved pools and framework allocations
    /// from the task table and the offers, checking each entry on the way and the cached
    /// framework allocations at the end.
    fn check_books(&self) -> Result<(Sums<'_>, Sums<'_>, Pools<'_>), String> {
        let mut used: Sums<'_> = BTreeMap::new();
        let mut pools: Pools<'_> = BTreeMap::new();
        let mut fw_alloc: BTreeMap<&FrameworkId, Resources> = BTreeMap::new();
        // The shared ids the offer books hold are the entries' ids.
        for (id, a) in &self.agents {
            if *id != a.id || *a.shared_id != a.id {
                return Err(format!("agent table key {id} mismatches its entry's ids"));
            }
        }
        for (id, f) in &self.frameworks {
            if *id != f.id || *f.shared_id != f.id {
                return Err(format!(
                    "framework table key {id} mismatches its entry's ids"
                ));
            }
        }
        for ((fid, tid), t) in &self.tasks {
            if *fid != t.framework_id || *tid != t.info.task_id {
                return Err(format!(
                    "task table key ({fid}, {tid}) mismatches its entry"
                ));
            }
            if !self.agents.contains_key(&t.info.agent_id) {
                return Err(format!(
                    "task {tid} of {fid} is on unknown agent {}",
                    t.info.agent_id
                ));
            }
            // TASK_UNREACHABLE exactly while its agent is disconnected, remembering the state
            // it returns to.
            let unreachable = t.status.state == TaskState::Unreachable;
            let agent_up = self
                .agents
                .get(&t.info.agent_id)
                .is_some_and(|a| a.is_connected());
            // A leaving agent's tasks keep their states while it is away (a planned restart).
            let leaving = self.agents.get(&t.info.agent_id).is_some_and(|a| a.leaving);
            if unreachable != t.before_unreachable.is_some()
                || t.before_unreachable
                    .is_some_and(|s| s.is_terminal() || s == TaskState::Unreachable)
                || (unreachable && agent_up)
                || (!t.is_terminal() && !unreachable && !agent_up && !leaving)
            {
                return Err(format!(
                    "task {tid} of {fid} is {} (before: {:?}) on an agent {}",
                    t.status.state.name(),
                    t.before_unreachable,
                    if agent_up {
                        "connected"
                    } else {
                        "disconnected"
                    }
                ));
            }
            if !t.is_terminal() {
                let u = used.entry(&t.info.agent_id).or_default();
                *u = u
                    .checked_add(&t.info.resources)
                    .ok_or_else(|| format!("used resources overflow on {}", t.info.agent_id))?;
                *fw_alloc.entry(fid).or_default() += t.info.resources;
                let mut parts = Resources::ZERO;
                for (role, r) in &t.reserved {
                    pools.entry((&t.info.agent_id, role)).or_default().0 += *r;
                    parts += *r;
                }
                if !t.info.resources.contains(&parts) {
                    return Err(format!("task {tid} of {fid}: reserved parts exceed it"));
                }
            }
        }
        for ((aid, fid, eid), e) in &self.executors {
            if *eid != e.info.executor_id {
                return Err(format!("executor table key {eid} mismatches its entry"));
            }
            if !self.agents.contains_key(aid) {
                return Err(format!("executor {eid} of {fid} is on unknown agent {aid}"));
            }
            let u = used.entry(aid).or_default();
            *u = u
                .checked_add(&e.info.resources)
                .ok_or_else(|| format!("used resources overflow on {aid}"))?;
            *fw_alloc.entry(fid).or_default() += e.info.resources;
            let mut parts = Resources::ZERO;
            for (role, r) in &e.reserved {
                pools.entry((aid, role)).or_default().0 += *r;
                parts += *r;
            }
            if !e.info.resources.contains(&parts) {
                return Err(format!("executor {eid} of {fid}: reserved parts exceed it"));
            }
        }
        let mut offered: Sums<'_> = BTreeMap::new();
        for (n, o) in &self.ledger.offers {
            let id = super::ledger::offer_id(&self.cfg.run_id, *n);
            if super::ledger::offer_counter(&self.cfg.run_id, &id) != Some(*n) {
                return Err(format!("offer {id} does not parse back to counter {n}"));
            }
            if *n > self.next_offer {
                return Err(format!("offer {id} is ahead of the offer counter"));
            }
            if o.resources.is_empty() {
                return Err(format!("offer {id} is empty"));
            }
            match self.agents.get(&*o.agent_id) {
                Some(a) if a.is_offerable() => {}
                _ => {
                    return Err(format!(
                        "offer {id} is on absent or leaving agent {}",
                        o.agent_id
                    ))
                }
            }
            match self.frameworks.get(&*o.framework_id) {
                Some(f) if f.is_connected() => {}
                _ => {
                    return Err(format!(
                        "offer {id} is held by inactive framework {}",
                        o.framework_id
                    ))
                }
            }
            let s = offered.entry(&*o.agent_id).or_default();
            *s = s
                .checked_add(&o.resources)
                .ok_or_else(|| format!("offered resources overflow on {}", o.agent_id))?;
            *fw_alloc.entry(&*o.framework_id).or_default() += o.resources;
            if let Some(role) = &o.reserved_for {
                pools.entry((&*o.agent_id, role)).or_default().1 += o.resources;
                if self.frameworks.get(&*o.framework_id).map(|f| &f.info.role) != Some(role) {
                    return Err(format!(
                        "offer {id} reserved for {role} is held by a framework of another role"
                    ));
                }
            }
            let deadline = self.timers.get(&Timer::OfferExpiry(*n));
            if self.cfg.offer_timeout.is_some() != deadline.is_some() {
                return Err(format!("offer {id} has a wrong deadline"));
            }
        }
        let fw_alloc: BTreeMap<&FrameworkId, Resources> = fw_alloc
            .into_iter()
            .filter(|(_, r)| !r.is_empty())
            .collect();
        let cached: BTreeMap<&FrameworkId, Resources> = self
            .ledger
            .fw_alloc
            .iter()
            .filter(|(_, r)| !r.is_empty())
            .map(|(f, r)| (f, *r))
            .collect();
        if fw_alloc != cached {
            return Err(format!(
                "cached framework allocations {cached:?} != tasks' and offers' {fw_alloc:?}"
            ));
        }
        Ok((used, offered, pools))
    }

    /// Checks each agent's cached sums and pools against the recomputed ones, and that nothing
    /// is over-committed.
    fn check_agents(
        &self,
        used: &Sums<'_>,
        offered: &Sums<'_>,
        pools: &Pools<'_>,
    ) -> Result<(), String> {
        for (id, a) in &self.agents {
            let u = used.get(id).copied().unwrap_or_default();
            let o = offered.get(id).copied().unwrap_or_default();
            if u != a.used {
                return Err(format!("agent {id}: cached used {} != tasks' {u}", a.used));
            }
            if o != a.offered {
                return Err(format!(
                    "agent {id}: cached offered {} != offers' {o}",
                    a.offered
                ));
            }
            let sum = u
                .checked_add(&o)
                .ok_or_else(|| format!("agent {id}: used + offered overflows"))?;
            if !a.total.contains(&sum) {
                return Err(format!(
                    "agent {id}: used {u} + offered {o} exceeds total {}",
                    a.total
                ));
            }
            if !a.total.contains(&a.reserved_total()) {
                return Err(format!("agent {id}: reservations exceed its total"));
            }
            let mut res_used = Resources::ZERO;
            let mut res_offered = Resources::ZERO;
            for (role, reservation) in &a.reservations {
                let (pu, po) = pools.get(&(id, role.as_str())).copied().unwrap_or_default();
                let cu = a.reserved_used.get(role).copied().unwrap_or_default();
                let co = a.reserved_offered.get(role).copied().unwrap_or_default();
                if (pu, po) != (cu, co) {
                    return Err(format!(
                        "agent {id}, role {role}: cached reserved used/offered {cu}/{co} != {pu}/{po}"
                    ));
                }
                if !reservation.contains(&(pu + po)) {
                    return Err(format!(
                        "agent {id}: reserved pool of {role} over-committed: used {pu} + offered \
                         {po} > {reservation}"
                    ));
                }
                res_used += pu;
                res_offered += po;
            }
            let in_pools: Resources = pools
                .iter()
                .filter(|((a, _), _)| *a == id)
                .fold(Resources::ZERO, |t, (_, (u, o))| t + *u + *o);
            if in_pools != res_used + res_offered {
                return Err(format!(
                    "agent {id}: tasks or offers in a pool it does not have"
                ));
            }
            let unreserved = a.total - a.reserved_total();
            let (uu, uo) = (u - res_used, o - res_offered);
            if !uo.is_empty() && !unreserved.contains(&(uu + uo)) {
                return Err(format!(
                    "agent {id}: unreserved pool over-committed: used {uu} + offered {uo} > \
                     {unreserved}"
                ));
            }
        }
        Ok(())
    }

    /// Checks that every refuse filter names a known framework and agent, and that the index's
    /// views agree.
    fn check_filters(&self) -> Result<(), String> {
        for (f, a) in self.ledger.refuse.filters().keys() {
            if !self.agents.contains_key(a) {
                return Err(format!("filter ({f}, {a}) is on an unknown agent"));
            }
        }
        self.ledger
            .refuse
            .check(|f| self.frameworks.get(f).map(|f| f.seq))
    }

    /// Checks that the timer table holds exactly the deadlines the entries say: one removal per
    /// disconnected agent, one failover per disconnected framework that has one, one expiry
    /// per offer (with `offer_timeout`), and nothing for what is gone.
    fn check_timers(&self) -> Result<(), String> {
        let mut expected = 0;
        for (id, a) in &self.agents {
            let t = self.timers.get(&Timer::AgentRemoval(id.clone()));
            if a.is_connected() && t.is_some() || !a.is_connected() && t != a.remove_at {
                return Err(format!(
                    "agent {id}: removal timer {t:?} != {:?}",
                    a.remove_at
                ));
            }
            expected += usize::from(t.is_some());
        }
        for (id, f) in &self.frameworks {
            let t = self.timers.get(&Timer::FrameworkFailover(id.clone()));
            if f.is_connected() && t.is_some() || !f.is_connected() && t != f.failover_at {
                return Err(format!(
                    "framework {id}: failover timer {t:?} != {:?}",
                    f.failover_at
                ));
            }
            expected += usize::from(t.is_some());
        }
        for (t, timer) in self.timers.iter() {
            match timer {
                Timer::OfferExpiry(n) if self.ledger.offers.contains_key(n) => expected += 1,
                Timer::OfferExpiry(n) => {
                    return Err(format!(
                        "offer number {n} is gone but its expiry is armed at {t:?}"
                    ))
                }
                Timer::Heartbeat | Timer::Allocation | Timer::BlobGc => expected += 1,
                Timer::Query(id) if self.queries.is_pending(*id) => expected += 1,
                Timer::Query(id) => {
                    return Err(format!("query {id} is answered but its timeout is armed"))
                }
                Timer::AgentRemoval(_) | Timer::FrameworkFailover(_) => {}
            }
        }
        if expected != self.timers.len() {
            return Err("the timer table has timers for unknown agents or frameworks".into());
        }
        Ok(())
    }

    /// Checks that connections and the entries bound to them agree, both ways.
    fn check_connections(&self) -> Result<(), String> {
        let mut disconnected: BTreeMap<String, BTreeSet<AgentId>> = BTreeMap::new();
        for a in self.agents.values().filter(|a| !a.is_connected()) {
            disconnected
                .entry(a.owner.clone())
                .or_default()
                .insert(a.id.clone());
        }
        if disconnected != self.disconnected {
            return Err(format!(
                "disconnected-agent index {:?} differs from the agents' {disconnected:?}",
                self.disconnected
            ));
        }
        for (id, a) in &self.agents {
            if let Some(c) = a.conn {
                if self.conns.get(&c).and_then(|c| c.bound.clone())
                    != Some(Binding::Agent(id.clone()))
                {
                    return Err(format!("agent {id} claims connection {c} not bound to it"));
                }
            }
        }
        for (id, f) in &self.frameworks {
            if let Some(c) = f.conn {
                if self.conns.get(&c).and_then(|c| c.bound.clone())
                    != Some(Binding::Framework(id.clone()))
                {
                    return Err(format!(
                        "framework {id} claims connection {c} not bound to it"
                    ));
                }
            }
        }
        for (c, conn) in &self.conns {
            let ok = match &conn.bound {
                None => true,
                Some(Binding::Agent(a)) => self.agents.get(a).is_some_and(|a| a.conn == Some(*c)),
                Some(Binding::Framework(f)) => {
                    self.frameworks.get(f).is_some_and(|f| f.conn == Some(*c))
                }
            };
            if !ok {
                return Err(format!(
                    "connection {c} is bound to {:?} which disowns it",
                    conn.bound
                ));
            }
        }
        Ok(())
    }
}
