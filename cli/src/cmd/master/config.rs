//! The master's `--config FILE`, in TOML. Every key is optional; flags given on the command
//! line win over the file.
//!
//! ```toml
//! allocator = "drf"          # or "priority"; default "drf"
//! offer_timeout = "30s"      # default: none (offers are held until answered)
//!
//! [roles.analytics]
//! weight = 2.0                                   # default 1.0
//! guarantee = { cpus = 4, mem = "8GiB" }         # default: none
//! limit = { cpus = 16, mem = "32GiB", disk = "100GiB" }  # default: none
//! ```

use anyhow::{bail, Context};
use master::allocator::{RoleSpec, Roles};
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
    /// `[roles.NAME]` tables.
    pub roles: Roles,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    allocator: Option<String>,
    offer_timeout: Option<String>,
    #[serde(default)]
    roles: BTreeMap<String, RawRole>,
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

fn text(v: &toml::Value) -> anyhow::Result<String> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        other => bail!("expected a number or a string, got {other}"),
    })
}

impl RawResources {
    fn parse(&self) -> anyhow::Result<Resources> {
        let cpus = match &self.cpus {
            Some(v) => parse_cpus(&text(v)?)?,
            None => 0,
        };
        let size = |v: &Option<toml::Value>| -> anyhow::Result<u64> {
            Ok(match v {
                Some(v) => parse_size(&text(v)?)?,
                None => 0,
            })
        };
        Ok(Resources::new(cpus, size(&self.mem)?, size(&self.disk)?))
    }
}

/// Parses the file's text.
pub fn parse(text: &str) -> anyhow::Result<MasterFileConfig> {
    let raw: Raw = toml::from_str(text).context("invalid master config")?;
    let mut roles = Roles::new();
    for (name, r) in raw.roles {
        let weight = r.weight.unwrap_or(1.0);
        if !(weight.is_finite() && weight > 0.0) {
            bail!("role {name}: weight must be a positive number, not {weight}");
        }
        let guarantee = match &r.guarantee {
            Some(g) => g
                .parse()
                .with_context(|| format!("role {name}: guarantee"))?,
            None => Resources::ZERO,
        };
        let limit = match &r.limit {
            Some(l) => Some(l.parse().with_context(|| format!("role {name}: limit"))?),
            None => None,
        };
        if let Some(l) = &limit {
            if !l.contains(&guarantee) {
                bail!("role {name}: guarantee {guarantee} exceeds limit {l}");
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
        Some(s) => Some(humantime::parse_duration(&s).context("offer_timeout")?),
        None => None,
    };
    if let Some(a) = &raw.allocator {
        if master::allocator::by_name(a).is_none() {
            bail!("unknown allocator {a:?} (drf or priority)");
        }
    }
    Ok(MasterFileConfig {
        allocator: raw.allocator,
        offer_timeout,
        roles,
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
        assert!(parse("[roles.a]\nguarantee = { cpus = 4 }\nlimit = { cpus = 2 }").is_err());
        assert!(parse("[roles.a]\nlimit = { mem = \"lots\" }").is_err());
    }
}
