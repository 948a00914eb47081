//! Resources in fixed point: cpus in milli-cpus, memory and disk in bytes.
//!
//! Floats never enter the books (Mesos keeps three decimal digits for the same reason): the
//! invariant every test leans on, allocated + offered ≤ total for each agent, must hold exactly.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::{Add, AddAssign, Sub, SubAssign};

/// One MiB in bytes.
pub const MIB: u64 = 1 << 20;
/// One GiB in bytes.
pub const GIB: u64 = 1 << 30;

/// A bundle of scalar resources an agent offers and a task consumes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct Resources {
    /// Thousandths of a CPU core.
    pub cpus_milli: u64,
    /// Memory in bytes.
    pub mem: u64,
    /// Disk in bytes.
    pub disk: u64,
}

impl Resources {
    /// Nothing at all.
    pub const ZERO: Resources = Resources {
        cpus_milli: 0,
        mem: 0,
        disk: 0,
    };

    /// Builds a bundle from milli-cpus and bytes.
    pub const fn new(cpus_milli: u64, mem: u64, disk: u64) -> Self {
        Self {
            cpus_milli,
            mem,
            disk,
        }
    }

    /// True when `other` fits inside `self` in every dimension.
    pub fn contains(&self, other: &Resources) -> bool {
        self.cpus_milli >= other.cpus_milli && self.mem >= other.mem && self.disk >= other.disk
    }

    /// True when every dimension is zero.
    pub fn is_empty(&self) -> bool {
        *self == Self::ZERO
    }

    /// `self - other`, or `None` when `other` does not fit.
    pub fn checked_sub(&self, other: &Resources) -> Option<Resources> {
        Some(Resources {
            cpus_milli: self.cpus_milli.checked_sub(other.cpus_milli)?,
            mem: self.mem.checked_sub(other.mem)?,
            disk: self.disk.checked_sub(other.disk)?,
        })
    }

    /// `self + other`, or `None` on overflow (hostile input can name absurd sizes).
    pub fn checked_add(&self, other: &Resources) -> Option<Resources> {
        Some(Resources {
            cpus_milli: self.cpus_milli.checked_add(other.cpus_milli)?,
            mem: self.mem.checked_add(other.mem)?,
            disk: self.disk.checked_add(other.disk)?,
        })
    }

    /// The per-dimension minimum of `self` and `other`: the largest bundle both contain (what
    /// a pool can give towards a need, what a limit leaves of a free pool).
    pub fn min_each(&self, other: &Resources) -> Resources {
        Resources {
            cpus_milli: self.cpus_milli.min(other.cpus_milli),
            mem: self.mem.min(other.mem),
            disk: self.disk.min(other.disk),
        }
    }

    /// The share of `total` this bundle takes in its largest dimension (DRF's dominant share).
    pub fn dominant_share(&self, total: &Resources) -> f64 {
        let share = |a: u64, t: u64| if t == 0 { 0.0 } else { a as f64 / t as f64 };
        share(self.cpus_milli, total.cpus_milli)
            .max(share(self.mem, total.mem))
            .max(share(self.disk, total.disk))
    }
}

impl Add for Resources {
    type Output = Resources;
    fn add(self, o: Resources) -> Resources {
        Resources {
            cpus_milli: self.cpus_milli.saturating_add(o.cpus_milli),
            mem: self.mem.saturating_add(o.mem),
            disk: self.disk.saturating_add(o.disk),
        }
    }
}

impl AddAssign for Resources {
    fn add_assign(&mut self, o: Resources) {
        *self = *self + o;
    }
}

/// Saturating subtraction: callers check `contains` first where it matters.
impl Sub for Resources {
    type Output = Resources;
    fn sub(self, o: Resources) -> Resources {
        Resources {
            cpus_milli: self.cpus_milli.saturating_sub(o.cpus_milli),
            mem: self.mem.saturating_sub(o.mem),
            disk: self.disk.saturating_sub(o.disk),
        }
    }
}

impl SubAssign for Resources {
    fn sub_assign(&mut self, o: Resources) {
        *self = *self - o;
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = if self.cpus_milli == 1000 {
            "cpu"
        } else {
            "cpus"
        };
        write!(
            f,
            "<{} {unit}, {}",
            format_cpus(self.cpus_milli),
            format_size(self.mem)
        )?;
        if self.disk > 0 {
            write!(f, ", disk {}", format_size(self.disk))?;
        }
        f.write_str(">")
    }
}

/// Formats milli-cpus as a decimal ("0.5", "2").
pub fn format_cpus(milli: u64) -> String {
    if milli.is_multiple_of(1000) {
        format!("{}", milli / 1000)
    } else {
        let s = format!("{}.{:03}", milli / 1000, milli % 1000);
        s.trim_end_matches('0').to_owned()
    }
}

/// Formats bytes with a binary unit ("1 GB" style for whole GiB, else MiB/KiB/B).
pub fn format_size(bytes: u64) -> String {
    if bytes >= GIB && bytes.is_multiple_of(GIB) {
        format!("{} GB", bytes / GIB)
    } else if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MB", bytes / MIB)
    } else if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{} KB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

/// Why a resource quantity could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// Not a number, or a negative one.
    #[error("invalid quantity {0:?}")]
    Invalid(String),
    /// A unit we don't know.
    #[error("unknown unit in {0:?} (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)")]
    Unit(String),
    /// More precision than a milli-cpu, or a value too large.
    #[error("{0:?} is out of range")]
    Range(String),
    /// A malformed `--resources` item.
    #[error("invalid resource {0:?} (expected NAME:VALUE or NAME(ROLE):VALUE, NAME one of cpus, mem, disk)")]
    Spec(String),
}

/// An agent's resources as given by `--resources`: the total and its static reservations.
pub type ResourceSpec = (Resources, Vec<(String, Resources)>);

/// Parses a Mesos-style resource list, `;`-separated items `NAME:VALUE` (unreserved) or
/// `NAME(ROLE):VALUE` (reserved for ROLE), NAME one of `cpus`, `mem`, `disk`; values add up. For
/// example `"cpus(analytics):2;mem(analytics):2GiB;cpus:2;mem:4GiB"` is <4 cpus, 6 GiB> of which
/// <2 cpus, 2 GiB> is reserved for `analytics`. Returns the total (reserved included) and the
/// reservations by role, in order of first appearance. Role `*` means unreserved.
pub fn parse_resource_spec(s: &str) -> Result<ResourceSpec, ParseError> {
    let mut total = Resources::ZERO;
    let mut reserved: Vec<(String, Resources)> = Vec::new();
    for item in s.split(';').map(str::trim).filter(|i| !i.is_empty()) {
        let bad = || ParseError::Spec(item.to_owned());
        let (name, value) = item.split_once(':').ok_or_else(bad)?;
        let name = name.trim();
        let (kind, role) = match name.split_once('(') {
            None => (name, None),
            Some((k, rest)) => {
                let role = rest.strip_suffix(')').ok_or_else(bad)?.trim();
                if role.is_empty() || role.contains(['(', ')', ';', ':']) {
                    return Err(bad());
                }
                (k.trim(), (role != "*").then(|| role.to_owned()))
            }
        };
        let r = match kind {
            "cpus" => Resources::new(parse_cpus(value)?, 0, 0),
            "mem" => Resources::new(0, parse_size(value)?, 0),
            "disk" => Resources::new(0, 0, parse_size(value)?),
            _ => return Err(bad()),
        };
        total = total
            .checked_add(&r)
            .ok_or_else(|| ParseError::Range(s.to_owned()))?;
        if let Some(role) = role {
            match reserved.iter_mut().find(|(x, _)| *x == role) {
                Some((_, x)) => *x += r,
                None => reserved.push((role, r)),
            }
        }
    }
    Ok((total, reserved))
}

/// Parses a CPU count ("0.5", "2", "0.001") into milli-cpus.
pub fn parse_cpus(s: &str) -> Result<u64, ParseError> {
    let t = s.trim();
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if int.is_empty() && frac.is_empty()
        || !int.chars().all(|c| c.is_ascii_digit())
        || !frac.chars().all(|c| c.is_ascii_digit())
    {
        return Err(ParseError::Invalid(s.to_owned()));
    }
    if frac.len() > 3 {
        return Err(ParseError::Range(s.to_owned()));
    }
    let int: u64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| ParseError::Range(s.to_owned()))?
    };
    let frac_milli: u64 = format!("{frac:0<3}").parse().unwrap_or(0);
    int.checked_mul(1000)
        .and_then(|v| v.checked_add(frac_milli))
        .ok_or_else(|| ParseError::Range(s.to_owned()))
}

/// Parses a size ("64MiB", "4GB", "512", "1.5GiB") into bytes. KB/MB/GB are read as binary
/// units, as Mesos and most operators mean them. The parsing itself is the `parse-size` crate's.
pub fn parse_size(s: &str) -> Result<u64, ParseError> {
    use parse_size::Error;
    // parse-size 1.1 overflows (a panic in debug builds, a wrapped 0 in release) rounding a
    // mantissa of u64::MAX, reachable with 21 or more digits; no valid size has that many.
    if s.bytes().filter(u8::is_ascii_digit).count() > 19 {
        return Err(ParseError::Range(s.to_owned()));
    }
    let bytes = parse_size::Config::new()
        .with_binary()
        .parse_size(s.trim())
        .map_err(|e| match e {
            Error::PosOverflow => ParseError::Range(s.to_owned()),
            // A number followed by letters: the unit is what's wrong.
            Error::InvalidDigit if s.trim().starts_with(|c: char| c.is_ascii_digit()) => {
                ParseError::Unit(s.to_owned())
            }
            _ => ParseError::Invalid(s.to_owned()),
        })?;
    if bytes > u64::MAX / 2 {
        return Err(ParseError::Range(s.to_owned()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_and_contains() {
        let total = Resources::new(4000, 4 * GIB, 0);
        let a = Resources::new(2000, GIB, 0);
        let b = Resources::new(1000, 2 * GIB, 0);
        let rest = total - a - b;
        assert_eq!(rest, Resources::new(1000, GIB, 0));
        assert!(total.contains(&(a + b)));
        assert!(!rest.contains(&a));
        assert_eq!(rest.checked_sub(&a), None);
        assert_eq!(format!("{rest}"), "<1 cpu, 1 GB>");
    }

    #[test]
    fn parsing() {
        assert_eq!(parse_cpus("0.5"), Ok(500));
        assert_eq!(parse_cpus("2"), Ok(2000));
        assert_eq!(parse_cpus(".25"), Ok(250));
        assert!(parse_cpus("0.0001").is_err());
        assert!(parse_cpus("-1").is_err());
        assert!(parse_cpus("abc").is_err());
        assert_eq!(parse_size("64MiB"), Ok(64 * MIB));
        assert_eq!(parse_size("4GB"), Ok(4 * GIB));
        assert_eq!(parse_size("1.5GiB"), Ok(3 * GIB / 2));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("5 parsecs").is_err());
        // Found by the `resources` fuzz target: long digit strings must be refused, not wrapped.
        let long = format!("00{}5{}", u64::MAX / 10, "6".repeat(80));
        assert_eq!(parse_size(&long), Err(ParseError::Range(long.clone())));
        assert_eq!(format_cpus(1500), "1.5");
        assert_eq!(format_cpus(250), "0.25");
    }

    #[test]
    fn resource_specs() {
        let (total, res) =
            parse_resource_spec("cpus(analytics):2;mem(analytics):2GiB;cpus:2;mem:4GiB").unwrap();
        assert_eq!(total, Resources::new(4000, 6 * GIB, 0));
        assert_eq!(
            res,
            vec![("analytics".to_owned(), Resources::new(2000, 2 * GIB, 0))]
        );
        let (total, res) = parse_resource_spec(" cpus:1.5 ; disk:10GiB; mem(*):1GiB;").unwrap();
        assert_eq!(total, Resources::new(1500, GIB, 10 * GIB));
        assert!(res.is_empty());
        let (_, res) = parse_resource_spec("cpus(a):1;cpus(b):1;mem(a):1GiB").unwrap();
        assert_eq!(
            res,
            vec![
                ("a".to_owned(), Resources::new(1000, GIB, 0)),
                ("b".to_owned(), Resources::new(1000, 0, 0))
            ]
        );
        for bad in [
            "cpus",
            "gpus:1",
            "cpus(a:1",
            "cpus():1",
            "cpus:x",
            "mem:5 parsecs",
        ] {
            assert!(parse_resource_spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn min_each_takes_the_smaller_of_each_dimension() {
        let a = Resources::new(1000, 4 * GIB, 7);
        let b = Resources::new(2000, GIB, 0);
        assert_eq!(a.min_each(&b), Resources::new(1000, GIB, 0));
        assert_eq!(a.min_each(&b), b.min_each(&a));
        assert_eq!(a.min_each(&Resources::ZERO), Resources::ZERO);
    }
}
