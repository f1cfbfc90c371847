//! [`PNCounter`]: increments and decrements per actor.

use super::{ActorId, Merge, Reset};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A counter that can go up and down: per actor, the total added and the total removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PNCounter {
    p: BTreeMap<ActorId, u64>,
    n: BTreeMap<ActorId, u64>,
}

impl PNCounter {
    /// A counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `by` (which may be negative) as `actor`.
    pub fn add(&mut self, actor: ActorId, by: i64) {
        let side = if by >= 0 { &mut self.p } else { &mut self.n };
        let slot = side.entry(actor).or_default();
        *slot = slot.saturating_add(by.unsigned_abs());
    }

    /// The current value.
    pub fn value(&self) -> i64 {
        let p: u128 = self.p.values().map(|v| u128::from(*v)).sum();
        let n: u128 = self.n.values().map(|v| u128::from(*v)).sum();
        let diff = p as i128 - n as i128;
        diff.clamp(i64::MIN.into(), i64::MAX.into()) as i64
    }
}

impl Merge for PNCounter {
    fn merge(&mut self, other: &Self) {
        for (side, theirs) in [(&mut self.p, &other.p), (&mut self.n, &other.n)] {
            for (a, v) in theirs {
                let slot = side.entry(*a).or_default();
                *slot = (*slot).max(*v);
            }
        }
    }
}

impl Reset for PNCounter {
    /// Brings the observed value to zero (by subtracting it as `actor`); increments made
    /// concurrently elsewhere are not observed and still count after a merge.
    fn reset(&mut self, actor: ActorId) {
        let v = self.value();
        if v != 0 {
            self.add(actor, -v);
        }
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
}
