//! The master's configuration file (`tessera master --config FILE`), in TOML. Every key is
//! optional; flags given on the command line win over the file. Untrusted text as far as the
//! parser is concerned: it is fuzzed, and every mistake is a [`ConfigError`] naming the key.
//!
//! ```toml
//! allocator = "drf"          # or "priority"; default "drf"
//! offer_timeout = "30s"      # default: none (offers are held until answered)
//! agent_reregister_timeout = "10min"  # default 10min: tasks UNREACHABLE meanwhile, then GONE
//! blob_gc_grace = "1h"       # default 1h; "0s" keeps every blob
//!
//! [roles.analytics]
//! weight = 2.0                                   # default 1.0
//! guarantee = { cpus = 4, mem = "8GiB" }         # default: none
//! limit = { cpus = 16, mem = "32GiB", disk = "100GiB" }  # default: none
//!
//! # Access control (see `acl`); a list that is absent allows everything.
//! [[acls.register_frameworks]]
//! principals = ["analytics-team"]
//! roles = ["analytics"]
//! [[acls.reserve_resources]]
//! agents = ["gpu-1", "gpu-2"]
//! roles = ["ml"]
//! ```

use crate::acl::{Acls, Rule};
use crate::allocator::{RoleSpec, Roles};
use proto::resources::{parse_cpus, parse_size};
use proto::Resources;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// The parsed file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MasterFileConfig {
    /// `allocator`, if given.
    pub allocator: Option<String>,
    /// `offer_timeout`, if given.
    pub offer_timeout: Option<Duration>,
    /// `agent_reregister_timeout`, if given.
    pub agent_reregister_timeout: Option<Duration>,
    /// `blob_gc_grace`, if given (zero: keep every blob).
    pub blob_gc_grace: Option<Duration>,
    /// `[roles.NAME]` tables.
    pub roles: Roles,
    /// `[acls]`.
    pub acls: Acls,
}

/// A mistake in the file, with the key it concerns.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct ConfigError(String);

fn bad<T>(message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(message.into()))
}

/// Adds context to an error, as `anyhow`'s `with_context` would.
fn within<T, E: std::fmt::Display>(
    r: Result<T, E>,
    what: impl Fn() -> String,
) -> Result<T, ConfigError> {
    r.map_err(|e| ConfigError(format!("{}: {e}", what())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    allocator: Option<String>,
    offer_timeout: Option<String>,
    agent_reregister_timeout: Option<String>,
    blob_gc_grace: Option<String>,
    #[serde(default)]
    roles: BTreeMap<String, RawRole>,
    acls: Option<RawAcls>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAcls {
    register_frameworks: Option<Vec<RawFrameworkRule>>,
    reserve_resources: Option<Vec<RawAgentRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFrameworkRule {
    principals: Vec<String>,
    roles: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgentRule {
    agents: Vec<String>,
    roles: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    weight: Option<f64>,
    guarantee: Option<RawResources>,
    limit: Option<RawResources>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    cpus: Option<toml::Value>,
    mem: Option<toml::Value>,
    disk: Option<toml::Value>,
}

fn text(v: &toml::Value) -> Result<String, ConfigError> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        other => return bad(format!("expected a number or a string, got {other}")),
    })
}

impl RawResources {
    fn parse(&self) -> Result<Resources, ConfigError> {
        let cpus = match &self.cpus {
            Some(v) => within(parse_cpus(&text(v)?), || "cpus".into())?,
            None => 0,
        };
        let size = |v: &Option<toml::Value>, what: &str| -> Result<u64, ConfigError> {
            Ok(match v {
                Some(v) => within(parse_size(&text(v)?), || what.to_owned())?,
                None => 0,
            })
        };
        Ok(Resources::new(
            cpus,
            size(&self.mem, "mem")?,
            size(&self.disk, "disk")?,
        ))
    }
}

/// Parses the file's text.
pub fn parse(text: &str) -> Result<MasterFileConfig, ConfigError> {
    let raw: Raw = within(toml::from_str(text), || "invalid master config".into())?;
    let mut roles = Roles::new();
    for (name, r) in raw.roles {
        let weight = r.weight.unwrap_or(1.0);
        if !(weight.is_finite() && weight > 0.0) {
            return bad(format!(
                "role {name}: weight must be a positive number, not {weight}"
            ));
        }
        let guarantee = match &r.guarantee {
            Some(g) => within(g.parse(), || format!("role {name}: guarantee"))?,
            None => Resources::ZERO,
        };
        let limit = match &r.limit {
            Some(l) => Some(within(l.parse(), || format!("role {name}: limit"))?),
            None => None,
        };
        if let Some(l) = &limit {
            if !l.contains(&guarantee) {
                return bad(format!(
                    "role {name}: guarantee {guarantee} exceeds limit {l}"
                ));
            }
        }
        roles.insert(
            name,
            RoleSpec {
                weight,
                guarantee,
                limit,
            },
        );
    }
    let offer_timeout = match raw.offer_timeout {
        Some(s) => Some(within(humantime::parse_duration(&s), || {
            "offer_timeout".into()
        })?),
        None => None,
    };
    let agent_reregister_timeout = match raw.agent_reregister_timeout {
        Some(s) => Some(within(humantime::parse_duration(&s), || {
            "agent_reregister_timeout".into()
        })?),
        None => None,
    };
    let blob_gc_grace = match raw.blob_gc_grace {
        Some(s) => Some(within(humantime::parse_duration(&s), || {
            "blob_gc_grace".into()
        })?),
        None => None,
    };
    if let Some(a) = &raw.allocator {
        if crate::allocator::by_name(a).is_none() {
            return bad(format!("unknown allocator {a:?} (drf or priority)"));
        }
    }
    let acls = match raw.acls {
        None => Acls::default(),
        Some(a) => Acls {
            register_frameworks: a.register_frameworks.map(|rules| {
                rules
                    .into_iter()
                    .map(|r| Rule {
                        names: r.principals,
                        roles: r.roles,
                    })
                    .collect()
            }),
            reserve_resources: a.reserve_resources.map(|rules| {
                rules
                    .into_iter()
                    .map(|r| Rule {
                        names: r.agents,
                        roles: r.roles,
                    })
                    .collect()
            }),
        },
    };
    Ok(MasterFileConfig {
        allocator: raw.allocator,
        offer_timeout,
        agent_reregister_timeout,
        blob_gc_grace,
        roles,
        acls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::resources::GIB;

    #[test]
    fn parses_roles_and_defaults() {
        let c = parse(
            r#"
            allocator = "priority"
            offer_timeout = "30s"
            agent_reregister_timeout = "30min"
            [roles.analytics]
            weight = 2.0
            guarantee = { cpus = 4, mem = "8GiB" }
            limit = { cpus = "16", mem = "32GiB" }
            [roles.web]
            "#,
        )
        .unwrap();
        assert_eq!(c.allocator.as_deref(), Some("priority"));
        assert_eq!(c.offer_timeout, Some(Duration::from_secs(30)));
        assert_eq!(c.agent_reregister_timeout, Some(Duration::from_secs(1800)));
        assert_eq!(
            parse("blob_gc_grace = \"2h\"").unwrap().blob_gc_grace,
            Some(Duration::from_secs(7200))
        );
        assert!(parse("blob_gc_grace = \"later\"").is_err());
        let a = &c.roles["analytics"];
        assert_eq!(a.weight, 2.0);
        assert_eq!(a.guarantee, Resources::new(4000, 8 * GIB, 0));
        assert_eq!(a.limit, Some(Resources::new(16000, 32 * GIB, 0)));
        assert_eq!(c.roles["web"], RoleSpec::default());
        assert_eq!(parse("").unwrap(), MasterFileConfig::default());
    }

    #[test]
    fn refuses_nonsense() {
        assert!(parse("[roles.a]\nweight = 0").is_err());
        assert!(parse("[roles.a]\nwight = 1").is_err());
        assert!(parse("allocator = \"lottery\"").is_err());
        assert!(parse("agent_reregister_timeout = \"soon\"").is_err());
        assert!(parse("[roles.a]\nguarantee = { cpus = 4 }\nlimit = { cpus = 2 }").is_err());
        assert!(parse("[roles.a]\nlimit = { mem = \"lots\" }").is_err());
        assert!(parse("[[acls.register_frameworks]]\nprincipal = [\"a\"]\nroles = []").is_err());
    }

    #[test]
    fn parses_acls() {
        let c = parse(
            r#"
            [[acls.register_frameworks]]
            principals = ["analytics-team"]
            roles = ["analytics"]
            [[acls.reserve_resources]]
            agents = ["gpu-1"]
            roles = ["ml"]
            "#,
        )
        .unwrap();
        assert!(c.acls.may_register("analytics-team", "analytics"));
        assert!(!c.acls.may_register("web", "analytics"));
        assert!(c.acls.may_reserve("gpu-1", "ml"));
        assert!(!c.acls.may_reserve("gpu-2", "ml"));
        assert_eq!(parse("").unwrap().acls, Acls::default());
    }
}
