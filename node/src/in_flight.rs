//! Writes this node is coordinating, by the ring and transition they started under.
//!
//! A ring change relies on two facts about writes that began before a node learned of it:
//!
//! - the handoff scan must not start until every write that replicates only by the old ring
//!   has landed (else a late copy reaches only old replicas, behind the scan, and the new
//!   replicas never get it): a node acknowledges a transition only once no write it began
//!   without knowing that transition is still replicating ([`InFlight::any_before_transition`]);
//! - a stale copy of a partition must not be spread after the node dropped it: a node reports
//!   its sweep of ring `e` only once no write it began under an older ring is still replicating
//!   ([`InFlight::any_before_ring`]).
//!
//! "Still replicating" lasts until the write's last copy settled (its stragglers included), not
//! just until the client got its answer: [`Guard`] is dropped when the replication task ends.
//!
//! The registration reads the node's transition inside the tracker's lock, and the checks take
//! the same lock; so a write either registered before a check (and the check sees it) or
//! started after it, in which case it read the transition the check was made for.
//!
//! The counts live in a short list (one entry per ring and transition a live write started
//! under: one or two), which keeps its capacity, so a write neither allocates nor frees.

use std::sync::{Arc, Mutex};

/// What a coordinated write saw when it started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Started {
    ring: u64,
    transition: u64,
}

/// Counts of writes in flight per [`Started`].
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    counts: Mutex<Vec<(Started, usize)>>,
}

/// A write in flight; dropping it ends the write.
#[derive(Debug)]
pub(crate) struct Guard {
    owner: Arc<InFlight>,
    started: Started,
}

impl InFlight {
    /// Registers a write starting now. `epochs` is read under the tracker's lock and returns
    /// the ring epoch and the transition the write will act on (`0` for none), with whatever
    /// else the caller needs from the same instant.
    pub(crate) fn enter<T>(self: &Arc<Self>, epochs: impl FnOnce() -> (u64, u64, T)) -> (Guard, T) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let (ring, transition, out) = epochs();
        let started = Started { ring, transition };
        match counts.iter_mut().find(|(s, _)| *s == started) {
            Some((_, n)) => *n += 1,
            None => counts.push((started, 1)),
        }
        (
            Guard {
                owner: self.clone(),
                started,
            },
            out,
        )
    }

    /// Whether a write that began without knowing transition `epoch` is still in flight.
    pub(crate) fn any_before_transition(&self, epoch: u64) -> bool {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.iter().any(|(s, _)| s.transition < epoch)
    }

    /// Whether a write that began under a ring older than `epoch` is still in flight.
    pub(crate) fn any_before_ring(&self, epoch: u64) -> bool {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.iter().any(|(s, _)| s.ring < epoch)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = counts.iter().position(|(s, _)| *s == self.started) {
            counts[i].1 -= 1;
            if counts[i].1 == 0 {
                counts.swap_remove(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_blocks_acknowledgements_until_it_ends() {
        let t = Arc::new(InFlight::default());
        assert!(!t.any_before_transition(1));
        let (old, ()) = t.enter(|| (1, 0, ()));
        let (new, ()) = t.enter(|| (1, 2, ()));
        assert!(t.any_before_transition(2), "the write that did not know 2");
        assert!(!t.any_before_transition(0));
        assert!(t.any_before_ring(2));
        assert!(!t.any_before_ring(1));
        drop(old);
        assert!(
            !t.any_before_transition(2),
            "only writes that knew 2 remain"
        );
        assert!(t.any_before_ring(2));
        drop(new);
        assert!(!t.any_before_ring(2));
        assert!(t.counts.lock().unwrap().is_empty());
    }

    #[test]
    fn concurrent_writes_under_one_epoch_are_counted() {
        let t = Arc::new(InFlight::default());
        let guards: Vec<Guard> = (0..3).map(|_| t.enter(|| (4, 0, ())).0).collect();
        let mut guards = guards.into_iter();
        guards.next();
        assert!(t.any_before_transition(5));
        drop(guards);
        assert!(!t.any_before_transition(5));
    }
}
