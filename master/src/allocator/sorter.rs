//! The allocation engine shared by [`Drf`](super::Drf) and [`Priority`](super::Priority):
//! hierarchical dominant resource fairness with role weights, quota guarantees and limits,
//! static reservations and (optionally) strict priority tiers.
//!
//! Frameworks are grouped by (priority, role); for DRF every priority counts as 0, so a group
//! is a role. Groups are kept in an ordered set keyed by
//! `(priority descending, guarantee met, weighted dominant share of the role, role, group)` and
//! each group keeps its eligible frameworks in an ordered set keyed by
//! `(dominant share, subscription order)`. One round walks the agents in registration order:
//!
//! 1. each non-empty **reserved pool** (role R) goes, whole, to the first framework of R (by
//!    priority, then share) that does not refuse the agent, capped by R's quota limit;
//! 2. the **unreserved pool** goes, whole, to the first framework in group order that does not
//!    refuse the agent, capped by its role's limit; a role whose guarantee is already met may
//!    only take it if the unreserved resources left in this round still cover every other role's
//!    unmet guarantee (the *headroom*): guarantees are set aside until used.
//!
//! After each offer only the keys of that framework and of its role's groups change
//! (O(log F) each), so a round costs O(A · (g + r) + F log F) where g is the number of groups
//! scanned and r the refuse filters skipped per agent; agents with nothing free, and agents every
//! eligible framework refuses, are not even in the snapshot.

use super::{is_allocatable, Allocation, Snapshot};
use proto::Resources;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// Per-dimension minimum; kept as a forwarder to [`Resources::min_each`] so existing callers
/// outside this crate keep compiling.
pub fn min_each(a: &Resources, b: &Resources) -> Resources {
    a.min_each(b)
}

/// An order-preserving integer key for a non-negative share.
fn share_key(s: f64) -> u64 {
    if s.is_nan() || s <= 0.0 {
        0
    } else {
        s.to_bits()
    }
}

struct RoleState {
    weight: f64,
    guarantee: Resources,
    limit: Option<Resources>,
    alloc: Resources,
    groups: Vec<usize>,
}

impl RoleState {
    fn met(&self) -> bool {
        self.alloc.contains(&self.guarantee)
    }

    fn deficit(&self) -> Resources {
        self.guarantee - self.alloc
    }

    /// What the role may still take under its limit.
    fn cap(&self, free: &Resources) -> Resources {
        match &self.limit {
            None => *free,
            Some(l) => free.min_each(&(*l - self.alloc)),
        }
    }
}

/// (priority descending, guarantee met, weighted share, role index, group index).
type GroupKey = (std::cmp::Reverse<i32>, bool, u64, usize, usize);
/// (dominant share, seq, framework index).
type FwKey = (u64, u64, usize);

struct Group {
    prio: i32,
    role: usize,
    key: GroupKey,
    members: BTreeSet<FwKey>,
}

/// Runs one round. With `by_priority`, frameworks' priorities form strict tiers; without, every
/// framework is in tier 0 (pure hierarchical DRF).
pub fn allocate(snapshot: &Snapshot<'_>, now: Instant, by_priority: bool) -> Vec<Allocation> {
    let total = &snapshot.total;
    let min = &snapshot.min_allocatable;
    let mut out = Vec::new();
    if snapshot.agents.is_empty() || !snapshot.frameworks.iter().any(|f| f.eligible) {
        return out;
    }

    // Roles: every configured role (its guarantee counts even with no framework) and every
    // framework's role.
    let mut role_ix: BTreeMap<&str, usize> = BTreeMap::new();
    let mut roles: Vec<RoleState> = Vec::new();
    let names = snapshot
        .roles
        .keys()
        .map(String::as_str)
        .chain(snapshot.frameworks.iter().map(|f| f.role));
    for name in names {
        role_ix.entry(name).or_insert_with(|| {
            let spec = snapshot.role(name);
            roles.push(RoleState {
                weight: spec.effective_weight(),
                guarantee: spec.guarantee,
                limit: spec.limit,
                alloc: Resources::ZERO,
                groups: Vec::new(),
            });
            roles.len() - 1
        });
    }
    // Allocations and groups.
    let mut fw_alloc: Vec<Resources> = Vec::with_capacity(snapshot.frameworks.len());
    let mut fw_group: Vec<usize> = Vec::with_capacity(snapshot.frameworks.len());
    let mut group_ix: BTreeMap<(i32, usize), usize> = BTreeMap::new();
    let mut groups: Vec<Group> = Vec::new();
    for (i, f) in snapshot.frameworks.iter().enumerate() {
        let r = role_ix[f.role];
        roles[r].alloc += f.allocated;
        fw_alloc.push(f.allocated);
        let prio = if by_priority { f.priority } else { 0 };
        let g = *group_ix.entry((prio, r)).or_insert_with(|| {
            groups.push(Group {
                prio,
                role: r,
                key: (std::cmp::Reverse(prio), false, 0, r, 0),
                members: BTreeSet::new(),
            });
            roles[r].groups.push(groups.len() - 1);
            groups.len() - 1
        });
        fw_group.push(g);
        if f.eligible {
            groups[g]
                .members
                .insert((share_key(f.allocated.dominant_share(total)), f.seq, i));
        }
    }
    for r in &mut roles {
        // Higher priority first when a reserved pool looks for a taker within the role.
        let gs = &groups;
        r.groups.sort_by_key(|g| std::cmp::Reverse(gs[*g].prio));
    }
    let group_key = |roles: &[RoleState], g: &Group, gi: usize| -> GroupKey {
        let r = &roles[g.role];
        let share = r.alloc.dominant_share(total) / r.weight;
        (
            std::cmp::Reverse(g.prio),
            r.met(),
            share_key(share),
            g.role,
            gi,
        )
    };
    let mut order: BTreeSet<GroupKey> = BTreeSet::new();
    for (gi, g) in groups.iter_mut().enumerate() {
        let k = group_key(&roles, g, gi);
        g.key = k;
        if !g.members.is_empty() {
            order.insert(k);
        }
    }
    // Headroom for guarantees, over the unreserved pools in this snapshot.
    // (Agents every eligible framework refuses are not listed, but their free resources count.)
    let mut free_unreserved = snapshot
        .agents
        .iter()
        .fold(snapshot.refused_free, |t, a| t + a.available);
    let mut required = roles.iter().fold(Resources::ZERO, |t, r| t + r.deficit());

    // Gives `res` from pool `reserved_for` of `agent` to framework `fi`, updating every key.
    let mut give = |fi: usize,
                    res: Resources,
                    agent: usize,
                    reserved_for: Option<&str>,
                    roles: &mut Vec<RoleState>,
                    groups: &mut Vec<Group>,
                    order: &mut BTreeSet<GroupKey>,
                    required: &mut Resources| {
        let f = &snapshot.frameworks[fi];
        let g = fw_group[fi];
        let old = (share_key(fw_alloc[fi].dominant_share(total)), f.seq, fi);
        fw_alloc[fi] += res;
        groups[g].members.remove(&old);
        groups[g]
            .members
            .insert((share_key(fw_alloc[fi].dominant_share(total)), f.seq, fi));
        let r = groups[g].role;
        let before = roles[r].deficit();
        roles[r].alloc += res;
        *required = *required - before + roles[r].deficit();
        for j in 0..roles[r].groups.len() {
            let gi = roles[r].groups[j];
            let had = order.remove(&groups[gi].key);
            let k = group_key(roles, &groups[gi], gi);
            groups[gi].key = k;
            if had {
                order.insert(k);
            }
        }
        out.push(Allocation {
            framework: fi,
            agent,
            resources: res,
            reserved_for: reserved_for.map(str::to_owned),
        });
    };

    for (ai, agent) in snapshot.agents.iter().enumerate() {
        // 1. Reserved pools, each to its own role only.
        for (role, free) in &agent.reserved {
            let Some(&r) = role_ix.get(role) else {
                continue;
            };
            let offer = roles[r].cap(free);
            if !is_allocatable(&offer, min) {
                continue;
            }
            let pick = roles[r].groups.iter().find_map(|gi| {
                groups[*gi]
                    .members
                    .iter()
                    .find(|(_, seq, _)| !agent.refuses(*seq, now))
                    .map(|(_, _, fi)| *fi)
            });
            if let Some(fi) = pick {
                give(
                    fi,
                    offer,
                    ai,
                    Some(role),
                    &mut roles,
                    &mut groups,
                    &mut order,
                    &mut required,
                );
            }
        }
        // 2. The unreserved pool, in group order.
        let free = agent.available;
        if !is_allocatable(&free, min) {
            continue;
        }
        let mut pick = None;
        for key in &order {
            let g = &groups[key.4];
            let role = &roles[g.role];
            let offer = role.cap(&free);
            if !is_allocatable(&offer, min) {
                continue;
            }
            if role.met() {
                // Leave enough for the other roles' unmet guarantees.
                let left = free_unreserved.checked_sub(&offer).unwrap_or_default();
                if !left.contains(&required) {
                    continue;
                }
            }
            let fw = g
                .members
                .iter()
                .find(|(_, seq, _)| !agent.refuses(*seq, now));
            if let Some((_, _, fi)) = fw {
                pick = Some((*fi, offer));
                break;
            }
        }
        if let Some((fi, offer)) = pick {
            free_unreserved -= offer;
            give(
                fi,
                offer,
                ai,
                None,
                &mut roles,
                &mut groups,
                &mut order,
                &mut required,
            );
        }
    }
    out
}
