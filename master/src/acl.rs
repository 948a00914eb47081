//! Authorization: which principals may do what, beyond what identity binding already ensures.
//!
//! Modelled on Mesos's ACLs. Identity binding and ownership always hold (a framework belongs to
//! the principal that subscribed it, an agent id to its agent name, blobs to their uploaders);
//! the rules here decide who may *start* things:
//! - `register_frameworks`: which framework principals may subscribe frameworks in which roles;
//! - `reserve_resources`: which agents (by certificate name) may offer reservations for which
//!   roles.
//!
//! A list that is absent allows everything (the documented default: roles are open to all). A
//! list that is present allows only what one of its rules names; `"*"` matches any name.

use proto::identity::{PeerId, PeerKind};

/// One rule: these names may act for these roles.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// Principals (or agent names) the rule covers; `"*"` for any.
    pub names: Vec<String>,
    /// Roles they may use; `"*"` for any.
    pub roles: Vec<String>,
}

impl Rule {
    fn allows(&self, name: &str, role: &str) -> bool {
        let has = |list: &[String], x: &str| list.iter().any(|n| n == "*" || n == x);
        has(&self.names, name) && has(&self.roles, role)
    }
}

/// The master's access-control lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acls {
    /// Who may subscribe frameworks in which roles (`None`: anyone, any role).
    pub register_frameworks: Option<Vec<Rule>>,
    /// Which agents may offer reservations for which roles (`None`: any agent, any role).
    pub reserve_resources: Option<Vec<Rule>>,
}

impl Acls {
    /// May framework principal `principal` subscribe a framework in `role`?
    pub fn may_register(&self, principal: &str, role: &str) -> bool {
        allowed(&self.register_frameworks, principal, role)
    }

    /// May the agent named `agent` offer resources reserved for `role`?
    pub fn may_reserve(&self, agent: &str, role: &str) -> bool {
        allowed(&self.reserve_resources, agent, role)
    }
}

fn allowed(rules: &Option<Vec<Rule>>, name: &str, role: &str) -> bool {
    match rules {
        None => true,
        Some(rules) => rules.iter().any(|r| r.allows(name, role)),
    }
}

/// Who asks through the operator surface (HTTP, and the CLI commands built on it), and what
/// that lets them see and do. Identity comes only from a verified client certificate; a caller
/// on a plain loopback listener is the machine's own operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A client of the plain loopback listener: whoever can reach it already runs on the
    /// master's machine (the documented default, as with Mesos and Nomad without ACLs).
    Local,
    /// A client that presented a certificate of the cluster CA.
    Peer(PeerId),
}

impl Caller {
    /// May this caller see everything: every framework, task and agent, and the metrics?
    /// Operators and the local caller may; framework principals see only their own.
    pub fn sees_all(&self) -> bool {
        match self {
            Caller::Local => true,
            Caller::Peer(p) => matches!(p.kind, PeerKind::Operator | PeerKind::Master),
        }
    }

    /// May this caller read (`/state` entries, task output) of a framework subscribed by
    /// `framework_principal`?
    pub fn may_view(&self, framework_principal: &str) -> bool {
        self.sees_all() || self.owns(framework_principal)
    }

    /// May this caller kill a task of a framework subscribed by `framework_principal`? Its
    /// owner and operators may (a master certificate may not: masters never kill by request).
    pub fn may_kill(&self, framework_principal: &str) -> bool {
        match self {
            Caller::Local => true,
            Caller::Peer(p) => p.kind == PeerKind::Operator || self.owns(framework_principal),
        }
    }

    /// Is this caller the framework principal `framework_principal`?
    fn owns(&self, framework_principal: &str) -> bool {
        matches!(self, Caller::Peer(p) if p.kind == PeerKind::Framework && p.name == framework_principal)
    }
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Local => f.write_str("local operator"),
            Caller::Peer(p) => write!(f, "{p}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(names: &[&str], roles: &[&str]) -> Rule {
        Rule {
            names: names.iter().map(|s| s.to_string()).collect(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn absent_lists_allow_everything_present_ones_only_what_they_name() {
        let open = Acls::default();
        assert!(open.may_register("anyone", "anything"));
        assert!(open.may_reserve("any-agent", "gpu"));
        let acls = Acls {
            register_frameworks: Some(vec![
                rule(&["analytics-team"], &["analytics"]),
                rule(&["*"], &["*default"]),
            ]),
            reserve_resources: Some(vec![rule(&["gpu-1", "gpu-2"], &["ml"])]),
        };
        assert!(acls.may_register("analytics-team", "analytics"));
        assert!(!acls.may_register("web-team", "analytics"));
        assert!(acls.may_register("web-team", "*default"));
        assert!(acls.may_reserve("gpu-2", "ml"));
        assert!(!acls.may_reserve("cpu-1", "ml"));
        assert!(!acls.may_reserve("gpu-1", "analytics"));
        let closed = Acls {
            register_frameworks: Some(vec![]),
            reserve_resources: None,
        };
        assert!(!closed.may_register("anyone", "*"));
    }

    #[test]
    fn callers_see_and_kill_their_own_operators_everything() {
        let peer = |k, n| Caller::Peer(PeerId::new(k, n).unwrap());
        let a = peer(PeerKind::Framework, "team-a");
        assert!(a.may_view("team-a") && a.may_kill("team-a"));
        assert!(!a.may_view("team-b") && !a.may_kill("team-b") && !a.sees_all());
        let ops = peer(PeerKind::Operator, "ops");
        assert!(ops.sees_all() && ops.may_kill("team-b"));
        assert!(Caller::Local.sees_all() && Caller::Local.may_kill("x"));
        let agent = peer(PeerKind::Agent, "team-a");
        assert!(!agent.may_view("team-a") && !agent.may_kill("team-a"));
        let master = peer(PeerKind::Master, "m1");
        assert!(master.sees_all() && !master.may_kill("team-a"));
    }
}
