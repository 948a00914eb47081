//! Identifiers of the things Tessera names on the wire.
//!
//! Ids are plain strings so that logs and traces read well and a future HTTP front end can pass
//! them through unchanged; the master mints agent, framework and offer ids, schedulers choose task
//! ids (unique within their framework, as in Mesos).

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[cfg_attr(test, derive(proptest_derive::Arbitrary))]
        pub struct $name(pub String);

        impl $name {
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }
    };
}

string_id!(
    /// An agent, as registered with the master (`<master-run>-A<n>`).
    AgentId
);
string_id!(
    /// A framework, as subscribed with the master (`<master-run>-F<n>`).
    FrameworkId
);
string_id!(
    /// One resource offer (`<master-run>-O<n>`); an offer is valid until accepted, declined or
    /// rescinded.
    OfferId
);
string_id!(
    /// A task, chosen by its scheduler, unique within its framework.
    TaskId
);
string_id!(
    /// A framework's executor, chosen by its scheduler, unique within the framework: tasks
    /// naming the same executor id on one agent run inside the same executor instance.
    ExecutorId
);
string_id!(
    /// One status update, stamped by the agent that produced it; acknowledgements name it.
    UpdateId
);

/// True when `id` is safe to use as a single path component and in logs: 1 to 128 characters
/// of `[A-Za-z0-9._-]`, not `.` or `..`. Agents name task directories after framework and task
/// ids, so anything else is refused at accept.
pub fn is_safe_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// True when `path` is a relative path of normal components only (no `..`, no root, no `.`
/// tricks), suitable for placing a file inside a sandbox.
pub fn is_safe_relative_path(path: &str) -> bool {
    use std::path::{Component, Path};
    !path.is_empty()
        && !path.contains('\0')
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// The sha256 of a blob (module or task file), the key by which everything refers to it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        Self(sha2::Sha256::digest(bytes).into())
    }

    /// Lowercase hex, as used in file names and logs.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", &self.to_hex()[..12])
    }
}

/// Incremental sha256, for blobs that arrive in pieces from a stream.
#[derive(Default)]
pub struct Hasher(sha2::Sha256);

impl Hasher {
    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        use sha2::Digest as _;
        self.0.update(bytes);
    }

    /// The digest of everything added.
    pub fn finish(self) -> Digest {
        use sha2::Digest as _;
        Digest(self.0.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_ids_and_paths() {
        assert!(is_safe_id("task-1.a_b"));
        for bad in ["", ".", "..", "a/b", "a b", "x\\y"] {
            assert!(!is_safe_id(bad), "{bad:?}");
        }
        assert!(is_safe_relative_path("data/input.txt"));
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "./a"] {
            assert!(!is_safe_relative_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn digest_hex_round_trip() {
        let d = Digest::of(b"hello");
        assert_eq!(
            d.to_hex(),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(Digest::from_hex(&d.to_hex()), Some(d));
        assert_eq!(Digest::from_hex("zz"), None);
        let mut h = Hasher::default();
        h.update(b"hel");
        h.update(b"lo");
        assert_eq!(h.finish(), d);
    }
}
