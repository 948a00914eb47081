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
}
