//! Who a peer is: its kind and name, as its certificate states them.
//!
//! The cluster CA writes every peer's identity into its certificate as a URI subject alternative
//! name in the SPIFFE style, `spiffe://<cluster>/<kind>/<name>`. The master derives each
//! connection's [`PeerId`] from the verified certificate (in `tessera-net`) and never from a
//! message, so the cores can bind frameworks to principals and agent ids to agent names.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The scheme of identity URIs.
pub const SCHEME: &str = "spiffe://";

/// Longest name a certificate may carry.
pub const MAX_NAME: usize = 128;

/// What a certificate allows its holder to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PeerKind {
    /// The master (the only kind clients accept as a server).
    Master,
    /// An agent: registers and runs tasks.
    Agent,
    /// A framework principal: subscribes schedulers and uploads blobs.
    Framework,
    /// An operator: may view everything and tear down any framework.
    Operator,
}

impl PeerKind {
    /// Every kind, in the order of the enum.
    pub const ALL: [PeerKind; 4] = [
        PeerKind::Master,
        PeerKind::Agent,
        PeerKind::Framework,
        PeerKind::Operator,
    ];

    /// The path segment naming the kind in an identity URI.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerKind::Master => "master",
            PeerKind::Agent => "agent",
            PeerKind::Framework => "framework",
            PeerKind::Operator => "operator",
        }
    }

    /// The kind named by a path segment.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for PeerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an identity could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Not `spiffe://<cluster>/<kind>/<name>`.
    #[error("{0:?} is not an identity URI (spiffe://<cluster>/<kind>/<name>)")]
    Malformed(String),
    /// A kind other than master, agent, framework, operator.
    #[error("unknown peer kind {0:?} (master, agent, framework or operator)")]
    Kind(String),
    /// A name that is empty, too long, or holds characters outside `[A-Za-z0-9._-]`.
    #[error("invalid name {0:?}: 1 to 128 of A-Z a-z 0-9 . _ -")]
    Name(String),
}

/// A peer's kind and name: the principal every authorization decision is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PeerId {
    /// What it may be.
    pub kind: PeerKind,
    /// Its name within the kind (an agent's name, a framework principal, an operator).
    pub name: String,
}

impl PeerId {
    /// A checked identity.
    pub fn new(kind: PeerKind, name: &str) -> Result<Self, IdentityError> {
        let valid = !name.is_empty()
            && name.len() <= MAX_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            && name != "."
            && name != "..";
        if !valid {
            return Err(IdentityError::Name(name.to_owned()));
        }
        Ok(Self {
            kind,
            name: name.to_owned(),
        })
    }

    /// The URI a certificate carries for this identity in `cluster`.
    pub fn uri(&self, cluster: &str) -> String {
        format!("{SCHEME}{cluster}/{}/{}", self.kind, self.name)
    }

    /// Reads `spiffe://<cluster>/<kind>/<name>`, returning the cluster and the identity.
    pub fn from_uri(uri: &str) -> Result<(String, Self), IdentityError> {
        let bad = || IdentityError::Malformed(uri.to_owned());
        let rest = uri.strip_prefix(SCHEME).ok_or_else(bad)?;
        let mut parts = rest.split('/');
        let (Some(cluster), Some(kind), Some(name), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        if cluster.is_empty() {
            return Err(bad());
        }
        let kind = PeerKind::parse(kind).ok_or_else(|| IdentityError::Kind(kind.to_owned()))?;
        Ok((cluster.to_owned(), Self::new(kind, name)?))
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip() {
        for kind in PeerKind::ALL {
            let id = PeerId::new(kind, "node-1.a_b").unwrap();
            let (cluster, back) = PeerId::from_uri(&id.uri("prod")).unwrap();
            assert_eq!((cluster.as_str(), back), ("prod", id));
        }
    }

    #[test]
    fn malformed_uris_kinds_and_names_are_refused() {
        for uri in [
            "https://prod/agent/a",
            "spiffe:///agent/a",
            "spiffe://prod/agent",
            "spiffe://prod/agent/a/b",
            "spiffe://prod/agent/",
        ] {
            assert!(PeerId::from_uri(uri).is_err(), "{uri}");
        }
        assert_eq!(
            PeerId::from_uri("spiffe://prod/admin/a"),
            Err(IdentityError::Kind("admin".into()))
        );
        for name in ["", "..", "a b", "a/b", "é", &"x".repeat(129)] {
            assert!(PeerId::new(PeerKind::Agent, name).is_err(), "{name:?}");
        }
    }
}
