//! Version vectors and dots: the causality vocabulary of [`crate::object`].
//!
//! A [`Dot`] names one write: the actor that stamped it and that actor's counter for the key.
//! A [`VersionVector`] summarises a set of writes: for each actor, every counter up to the
//! listed one. Because an object is always shipped whole between replicas (state-based sync),
//! a plain vector is exact here: a replica that knows `(a, 5)` for a key has also seen, or seen
//! the supersession of, `(a, 1..5)`.
//!
//! Vectors are not truncated. Dynamo cut its vector clocks at 10 entries and accepted the rare
//! lost causality; here actors are storage incarnations of the coordinating nodes, so a key's
//! vector holds one entry per node that ever coordinated a write for it (N, a few more after
//! failures), and dropping entries would turn ordered writes into false siblings or, worse,
//! silently discard concurrent ones.

use crate::ids::ActorId;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// One write's identity: the stamping actor and its per-key counter (starting at 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// Who stamped the write.
    pub actor: ActorId,
    /// The actor's counter for this key at that write.
    pub counter: u64,
}

/// A version vector: per actor, the highest counter seen. Kept sorted by actor, no zeros.
///
/// Decoding checks that shape ([`VersionVector::is_canonical`]) and [`MAX_ENTRIES`]: a vector
/// from the network or the disk that breaks it is refused, never used (unsorted entries would
/// make [`VersionVector::covers`] answer wrongly).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<(ActorId, u64)>")]
pub struct VersionVector(Vec<(ActorId, u64)>);

/// The most entries a decoded version vector may hold. A key's vector holds one entry per
/// storage incarnation that ever coordinated a write for it (N and a few more after failures).
pub const MAX_ENTRIES: usize = 1024;

/// The highest counter a client's context may name. A context is the client's to forge, and
/// a coordinator joins it into the key's clock; stopping here leaves every actor 2^32 more
/// writes to the key however high a hostile context pushed its counter, instead of wrapping.
pub const MAX_CONTEXT_COUNTER: u64 = u64::MAX - (1 << 32);

/// Why a decoded version vector or object was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VersionError {
    /// More entries than [`MAX_ENTRIES`].
    #[error("a version vector of {entries} entries; at most {MAX_ENTRIES} are accepted")]
    TooManyEntries {
        /// Entries found.
        entries: usize,
    },
    /// Entries out of order, an actor twice, or a zero counter.
    #[error("a version vector must list each actor once, in order, with non-zero counters")]
    NotCanonical,
    /// An actor's counter cannot grow any further.
    #[error("actor {actor} has issued its last counter for this key")]
    CounterExhausted {
        /// The actor.
        actor: ActorId,
    },
}

impl TryFrom<Vec<(ActorId, u64)>> for VersionVector {
    type Error = VersionError;

    fn try_from(entries: Vec<(ActorId, u64)>) -> Result<Self, VersionError> {
        if entries.len() > MAX_ENTRIES {
            return Err(VersionError::TooManyEntries {
                entries: entries.len(),
            });
        }
        let vv = VersionVector(entries);
        if !vv.is_canonical() {
            return Err(VersionError::NotCanonical);
        }
        Ok(vv)
    }
}

impl VersionVector {
    /// The empty vector: has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a vector from entries in any order; zero counters are dropped, and repeated
    /// actors keep their highest counter.
    pub fn from_entries(entries: impl IntoIterator<Item = (ActorId, u64)>) -> Self {
        let mut vv = Self::new();
        for (actor, counter) in entries {
            vv.observe(Dot { actor, counter });
        }
        vv
    }

    /// The highest counter seen for `actor` (0 if none).
    pub fn get(&self, actor: ActorId) -> u64 {
        match self.0.binary_search_by_key(&actor, |e| e.0) {
            Ok(i) => self.0[i].1,
            Err(_) => 0,
        }
    }

    /// Whether the write `dot` is in this vector's causal past.
    #[inline]
    pub fn covers(&self, dot: Dot) -> bool {
        self.get(dot.actor) >= dot.counter
    }

    /// Records that `dot` (and so every earlier counter of its actor) has been seen.
    pub fn observe(&mut self, dot: Dot) {
        if dot.counter == 0 {
            return;
        }
        match self.0.binary_search_by_key(&dot.actor, |e| e.0) {
            Ok(i) => self.0[i].1 = self.0[i].1.max(dot.counter),
            Err(i) => self.0.insert(i, (dot.actor, dot.counter)),
        }
    }

    /// Joins `other` into `self` (pointwise maximum).
    pub fn join(&mut self, other: &VersionVector) {
        if other.0.is_empty() {
            return;
        }
        if self.0.is_empty() {
            self.0.clone_from(&other.0);
            return;
        }
        let mut out = Vec::with_capacity(self.0.len().max(other.0.len()));
        let (mut i, mut j) = (0, 0);
        while i < self.0.len() && j < other.0.len() {
            let (a, b) = (self.0[i], other.0[j]);
            match a.0.cmp(&b.0) {
                Ordering::Less => {
                    out.push(a);
                    i += 1;
                }
                Ordering::Greater => {
                    out.push(b);
                    j += 1;
                }
                Ordering::Equal => {
                    out.push((a.0, a.1.max(b.1)));
                    i += 1;
                    j += 1;
                }
            }
        }
        out.extend_from_slice(&self.0[i..]);
        out.extend_from_slice(&other.0[j..]);
        self.0 = out;
    }

    /// Whether `self` has seen everything `other` has (`self >= other` pointwise).
    pub fn descends(&self, other: &VersionVector) -> bool {
        other.0.iter().all(|&(a, c)| self.get(a) >= c)
    }

    /// Whether the vector is in its one canonical form: sorted by actor, each actor once, no
    /// zero counters. Every vector built here is; one decoded from untrusted bytes may not be,
    /// and then [`VersionVector::covers`] would give wrong answers.
    pub fn is_canonical(&self) -> bool {
        self.0.iter().all(|(_, c)| *c > 0) && self.0.windows(2).all(|w| w[0].0 < w[1].0)
    }

    /// The entries, sorted by actor.
    pub fn entries(&self) -> &[(ActorId, u64)] {
        &self.0
    }

    /// Whether the vector is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vv(e: &[(u64, u64)]) -> VersionVector {
        VersionVector::from_entries(e.iter().map(|&(a, c)| (ActorId(a), c)))
    }

    #[test]
    fn join_is_pointwise_max_and_sorted() {
        let mut a = vv(&[(1, 3), (3, 1)]);
        a.join(&vv(&[(2, 2), (3, 4)]));
        assert_eq!(a, vv(&[(1, 3), (2, 2), (3, 4)]));
        assert!(a.entries().windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn covers_and_descends() {
        let a = vv(&[(1, 3)]);
        assert!(a.covers(Dot {
            actor: ActorId(1),
            counter: 3
        }));
        assert!(!a.covers(Dot {
            actor: ActorId(1),
            counter: 4
        }));
        assert!(!a.covers(Dot {
            actor: ActorId(2),
            counter: 1
        }));
        assert!(a.descends(&vv(&[(1, 2)])));
        assert!(!a.descends(&vv(&[(2, 1)])));
        assert!(a.descends(&VersionVector::new()));
    }

    #[test]
    fn decoding_refuses_what_is_not_canonical() {
        use crate::encoding::from_msgpack;
        let encode = |entries: &[(u64, u64)]| {
            let raw: Vec<(ActorId, u64)> = entries.iter().map(|&(a, c)| (ActorId(a), c)).collect();
            rmp_serde::to_vec(&raw).expect("encode")
        };
        let ok: VersionVector = from_msgpack(&encode(&[(1, 2), (5, 1)])).expect("canonical");
        assert_eq!(ok, vv(&[(1, 2), (5, 1)]));
        for bad in [&[(5, 1), (1, 2)][..], &[(1, 2), (1, 3)][..], &[(1, 0)][..]] {
            assert!(
                from_msgpack::<VersionVector>(&encode(bad)).is_err(),
                "{bad:?} must be refused"
            );
        }
        let many: Vec<(u64, u64)> = (1..=MAX_ENTRIES as u64 + 1).map(|a| (a, 1)).collect();
        assert!(from_msgpack::<VersionVector>(&encode(&many)).is_err());
        // The vector's own encoding is the plain list: it round-trips.
        let bytes = rmp_serde::to_vec(&ok).expect("encode");
        assert_eq!(from_msgpack::<VersionVector>(&bytes).expect("decode"), ok);
    }

    #[test]
    fn zero_counters_are_not_stored() {
        assert!(vv(&[(1, 0)]).is_empty());
    }
}
