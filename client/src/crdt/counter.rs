//! [`PNCounter`]: increments and decrements per actor, with observed resets.

use super::{ActorId, Merge, Reset};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A counter that can go up and down: per actor, the total added and the total removed, and
/// the part of each that a reset has observed.
///
/// Each actor's totals only grow and merge by maximum, so the counter is a CRDT as long as an
/// actor's totals are only ever changed from its own latest state — which [`crate::Client::modify`]
/// guarantees (see `crate::lanes`). A reset records, per actor, the totals it observed (merged by
/// maximum too); the value counts only what lies beyond them. Two concurrent resets of the same
/// value therefore reset it once, not twice, and an increment no reset has observed always
/// counts.
///
/// An actor's effective total is the larger of its recorded total and its floor, so a total at
/// or below its floor carries no information and a reset drops it: a counter that was reset and
/// not touched since keeps one number per actor (its floor), not three.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PNCounter {
    p: BTreeMap<ActorId, u64>,
    n: BTreeMap<ActorId, u64>,
    /// Per actor, the part of `p` a reset observed (absent in values written before resets
    /// were recorded this way; they decode with none).
    #[serde(default)]
    reset_p: BTreeMap<ActorId, u64>,
    /// Per actor, the part of `n` a reset observed.
    #[serde(default)]
    reset_n: BTreeMap<ActorId, u64>,
}

fn beyond(totals: &BTreeMap<ActorId, u64>, floors: &BTreeMap<ActorId, u64>) -> u128 {
    totals
        .iter()
        .map(|(a, v)| u128::from(v.saturating_sub(floors.get(a).copied().unwrap_or(0))))
        .sum()
}

/// Drops zero floors, and totals that do not exceed their floor (they read as the floor
/// anyway): one representation per state, whatever order updates and merges ran in.
fn normalize(totals: &mut BTreeMap<ActorId, u64>, floors: &mut BTreeMap<ActorId, u64>) {
    floors.retain(|_, f| *f > 0);
    totals.retain(|a, v| *v > floors.get(a).copied().unwrap_or(0));
}

fn join(into: &mut BTreeMap<ActorId, u64>, from: &BTreeMap<ActorId, u64>) {
    for (a, v) in from {
        let slot = into.entry(*a).or_default();
        *slot = (*slot).max(*v);
    }
}

impl PNCounter {
    /// A counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `by` (which may be negative) as `actor`.
    pub fn add(&mut self, actor: ActorId, by: i64) {
        let (side, floors) = if by >= 0 {
            (&mut self.p, &self.reset_p)
        } else {
            (&mut self.n, &self.reset_n)
        };
        let floor = floors.get(&actor).copied().unwrap_or(0);
        let slot = side.entry(actor).or_default();
        *slot = (*slot).max(floor).saturating_add(by.unsigned_abs());
        // Only this entry changed: it is canonical unless it added nothing beyond its floor.
        if *slot <= floor {
            side.remove(&actor);
        }
    }

    fn normalize(&mut self) {
        normalize(&mut self.p, &mut self.reset_p);
        normalize(&mut self.n, &mut self.reset_n);
    }

    /// The current value.
    pub fn value(&self) -> i64 {
        let p = beyond(&self.p, &self.reset_p);
        let n = beyond(&self.n, &self.reset_n);
        let diff = p as i128 - n as i128;
        diff.clamp(i64::MIN.into(), i64::MAX.into()) as i64
    }

    /// How many actors have an entry (the metadata the counter carries).
    pub fn actors(&self) -> usize {
        let mut all: Vec<&ActorId> = self
            .p
            .keys()
            .chain(self.n.keys())
            .chain(self.reset_p.keys())
            .chain(self.reset_n.keys())
            .collect();
        all.sort();
        all.dedup();
        all.len()
    }
}

impl Merge for PNCounter {
    fn merge(&mut self, other: &Self) {
        join(&mut self.p, &other.p);
        join(&mut self.n, &other.n);
        join(&mut self.reset_p, &other.reset_p);
        join(&mut self.reset_n, &other.reset_n);
        self.normalize();
    }
}

impl Reset for PNCounter {
    /// Brings the observed value to zero by recording every total observed as reset;
    /// increments made concurrently elsewhere are not observed and still count after a merge.
    fn reset(&mut self, _actor: ActorId) {
        join(&mut self.reset_p, &self.p);
        join(&mut self.reset_n, &self.n);
        self.normalize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_up_and_down_and_merges_by_actor() {
        let (a, b) = (ActorId(1), ActorId(2));
        let mut x = PNCounter::new();
        x.add(a, 5);
        x.add(a, -2);
        let mut y = x.clone();
        y.add(b, 10);
        x.add(a, 1);
        x.merge(&y);
        assert_eq!(x.value(), 14);
        x.reset(a);
        assert_eq!(x.value(), 0);
    }

    #[test]
    fn concurrent_resets_reset_once_and_a_later_add_counts() {
        let (a, b, c) = (ActorId(1), ActorId(2), ActorId(3));
        let mut seen = PNCounter::new();
        seen.add(a, 3);
        let (mut left, mut right) = (seen.clone(), seen.clone());
        left.reset(b);
        right.reset(c);
        left.merge(&right);
        assert_eq!(left.value(), 0);
        left.add(a, 1);
        assert_eq!(
            left.value(),
            1,
            "the add after both resets is not swallowed"
        );
    }

    #[test]
    fn a_reset_keeps_only_floors_and_later_adds_start_from_them() {
        let (a, b) = (ActorId(1), ActorId(2));
        let mut c = PNCounter::new();
        c.add(a, 5);
        c.add(b, -2);
        let before = c.clone();
        c.reset(a);
        assert!(
            c.p.is_empty() && c.n.is_empty(),
            "totals at their floors are dropped"
        );
        assert_eq!(c.value(), 0);
        c.add(a, 1);
        assert_eq!(c.value(), 1, "the add counts from the floor, not from zero");
        // Merging the state from before the reset changes nothing: it is below the floors.
        let mut merged = c.clone();
        merged.merge(&before);
        assert_eq!(merged.value(), 1);
        assert_eq!(merged, c);
    }

    #[test]
    fn values_written_before_reset_floors_still_decode() {
        // A format-1 counter as earlier versions wrote it: {p: {1: 5}, n: {1: 2}} as an array.
        let old = [0x92, 0x81, 0x01, 0x05, 0x81, 0x01, 0x02];
        let c: PNCounter = rmp_serde::from_slice(&old).expect("old layout decodes");
        assert_eq!(c.value(), 3);
    }
}
