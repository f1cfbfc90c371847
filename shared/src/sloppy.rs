//! Sloppy-quorum write placement: a state machine without I/O.
//!
//! A coordinated write must reach W distinct nodes. Its copies go to the key's N owners (the
//! head of the preference list). An owner that is suspected down, or fails while the write is
//! in flight, has its copy redirected to the next unused stand-in further down the list,
//! tagged with a hint naming the owner; the stand-in keeps it apart and hands it over when the
//! owner is back (hinted handoff). Stand-ins count toward W like owners do: this is what keeps
//! writes available while nodes are down.
//!
//! An owner whose copy found no home (no stand-in left, or silence until the deadline) is
//! reported by [`SloppyWrite::unplaced`]; the coordinator keeps a hint for it itself, which
//! does not count toward W (it is not another node) but guarantees the owner receives the
//! write when it returns.

use crate::error::{ReplicaError, ReplyError};
use crate::ids::NodeId;
use crate::quorum::Progress;
use std::collections::VecDeque;

/// Where to send one copy of the write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The node to send it to.
    pub to: NodeId,
    /// The owner this copy stands in for, if `to` is a stand-in.
    pub hint_for: Option<NodeId>,
}

#[derive(Clone, Debug)]
struct Slot {
    owner: NodeId,
    target: Option<NodeId>,
    done: bool,
}

/// The placement and quorum state of one sloppy write.
#[derive(Clone, Debug)]
pub struct SloppyWrite {
    required: usize,
    slots: Vec<Slot>,
    standins: VecDeque<NodeId>,
    acked: Vec<NodeId>,
    errors: Vec<(NodeId, ReplicaError)>,
}

impl SloppyWrite {
    /// Starts a write that `local` (one of `owners`) has already stored. `owners` are the first
    /// N of the preference list, `standins` the rest in order; `suspected` is the local failure
    /// detector. Returns the state and the copies to send now.
    pub fn new(
        required: usize,
        owners: &[NodeId],
        standins: &[NodeId],
        local: NodeId,
        suspected: impl Fn(NodeId) -> bool,
    ) -> (Self, Vec<Placement>) {
        let mut w = SloppyWrite {
            required,
            slots: Vec::with_capacity(owners.len()),
            standins: standins
                .iter()
                .copied()
                .filter(|s| !suspected(*s) && *s != local)
                .collect(),
            acked: Vec::new(),
            errors: Vec::new(),
        };
        let mut sends = Vec::new();
        for &owner in owners {
            if owner == local {
                w.slots.push(Slot {
                    owner,
                    target: Some(local),
                    done: true,
                });
                w.acked.push(local);
            } else if suspected(owner) {
                w.errors.push((owner, ReplicaError::MarkedDown));
                w.slots.push(Slot {
                    owner,
                    target: None,
                    done: false,
                });
                let i = w.slots.len() - 1;
                sends.extend(w.redirect(i));
            } else {
                w.slots.push(Slot {
                    owner,
                    target: Some(owner),
                    done: false,
                });
                sends.push(Placement {
                    to: owner,
                    hint_for: None,
                });
            }
        }
        (w, sends)
    }

    /// Moves slot `i` to the next stand-in, if any.
    fn redirect(&mut self, i: usize) -> Option<Placement> {
        let owner = self.slots[i].owner;
        let next = self.standins.pop_front();
        self.slots[i].target = next;
        next.map(|to| Placement {
            to,
            hint_for: Some(owner),
        })
    }

    /// Records the answer of `from` and returns where the quorum stands and any copies to
    /// send in place of a failed one. Answers from nodes that hold no pending copy are ignored.
    pub fn record(
        &mut self,
        from: NodeId,
        result: Result<(), ReplicaError>,
    ) -> (Progress, Vec<Placement>) {
        let Some(i) = self
            .slots
            .iter()
            .position(|s| s.target == Some(from) && !s.done)
        else {
            return (self.progress(), Vec::new());
        };
        let mut sends = Vec::new();
        match result {
            Ok(()) => {
                self.slots[i].done = true;
                self.acked.push(from);
            }
            Err(e) => {
                self.errors.push((from, e));
                sends.extend(self.redirect(i));
            }
        }
        (self.progress(), sends)
    }

    /// Where the quorum stands: `Failed` once the acks so far plus the copies still in
    /// flight cannot reach W.
    pub fn progress(&self) -> Progress {
        if self.acked.len() >= self.required {
            return Progress::Met;
        }
        let in_flight = self
            .slots
            .iter()
            .filter(|s| !s.done && s.target.is_some())
            .count();
        if self.acked.len() + in_flight < self.required {
            Progress::Failed
        } else {
            Progress::Pending
        }
    }

    /// Whether every copy is settled: stored, or out of places to go.
    pub fn settled(&self) -> bool {
        self.slots.iter().all(|s| s.done || s.target.is_none())
    }

    /// Nodes that stored the write (the coordinator included).
    pub fn acked(&self) -> &[NodeId] {
        &self.acked
    }

    /// Owners whose copy is not stored anywhere yet (no stand-in left, or still unanswered):
    /// the coordinator keeps hints for them.
    pub fn unplaced(&self) -> Vec<NodeId> {
        self.slots
            .iter()
            .filter(|s| !s.done)
            .map(|s| s.owner)
            .collect()
    }

    /// The nodes holding a copy that has not answered yet.
    pub fn in_flight(&self) -> Vec<NodeId> {
        self.slots
            .iter()
            .filter(|s| !s.done)
            .filter_map(|s| s.target)
            .collect()
    }

    /// The error to report when W was not met: every node that failed, and every copy still
    /// unanswered (as `TimedOut` at the deadline, `NotAwaited` if the quorum had failed).
    pub fn into_error(self) -> ReplyError {
        let straggler = if self.progress() == Progress::Failed {
            ReplicaError::NotAwaited
        } else {
            ReplicaError::TimedOut
        };
        let mut errors = self.errors.clone();
        for t in self.in_flight() {
            errors.push((t, straggler.clone()));
        }
        ReplyError::QuorumFailed {
            required: u8::try_from(self.required).unwrap_or(u8::MAX),
            succeeded: u8::try_from(self.acked.len()).unwrap_or(u8::MAX),
            errors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(v: &[u32]) -> Vec<NodeId> {
        v.iter().map(|&i| NodeId(i)).collect()
    }

    fn to(n: u32) -> Placement {
        Placement {
            to: NodeId(n),
            hint_for: None,
        }
    }

    fn hint(n: u32, owner: u32) -> Placement {
        Placement {
            to: NodeId(n),
            hint_for: Some(NodeId(owner)),
        }
    }

    #[test]
    fn healthy_owners_get_plain_copies() {
        let (mut w, sends) =
            SloppyWrite::new(2, &ids(&[1, 2, 3]), &ids(&[4, 5]), NodeId(1), |_| false);
        assert_eq!(sends, vec![to(2), to(3)]);
        assert_eq!(w.record(NodeId(3), Ok(())).0, Progress::Met);
        assert_eq!(w.unplaced(), ids(&[2]));
    }

    #[test]
    fn suspected_owner_is_replaced_by_the_first_standin_and_w_counts_it() {
        let (mut w, sends) = SloppyWrite::new(3, &ids(&[1, 2, 3]), &ids(&[4, 5]), NodeId(1), |n| {
            n == NodeId(3)
        });
        assert_eq!(sends, vec![to(2), hint(4, 3)]);
        assert_eq!(w.record(NodeId(2), Ok(())).0, Progress::Pending);
        assert_eq!(
            w.record(NodeId(4), Ok(())).0,
            Progress::Met,
            "W=3 met with a stand-in"
        );
        assert!(w.settled());
        assert!(w.unplaced().is_empty());
    }

    #[test]
    fn a_failure_in_flight_moves_the_copy_down_the_list() {
        let (mut w, _) = SloppyWrite::new(2, &ids(&[1, 2, 3]), &ids(&[4, 5]), NodeId(1), |_| false);
        let (p, sends) = w.record(NodeId(2), Err(ReplicaError::TimedOut));
        assert_eq!((p, sends), (Progress::Pending, vec![hint(4, 2)]));
        let (p, sends) = w.record(NodeId(4), Err(ReplicaError::TimedOut));
        assert_eq!((p, sends), (Progress::Pending, vec![hint(5, 2)]));
        let (p, sends) = w.record(NodeId(5), Err(ReplicaError::TimedOut));
        assert_eq!(sends, vec![], "no stand-in left");
        assert_eq!(p, Progress::Pending, "node 3 may still answer");
        assert_eq!(w.record(NodeId(3), Ok(())).0, Progress::Met);
        assert_eq!(
            w.unplaced(),
            ids(&[2]),
            "the coordinator keeps a hint for n2"
        );
    }

    #[test]
    fn without_standins_the_quorum_fails_and_owners_stay_unplaced() {
        let (mut w, sends) =
            SloppyWrite::new(3, &ids(&[1, 2, 3]), &[], NodeId(1), |n| n == NodeId(3));
        assert_eq!(sends, vec![to(2)]);
        assert_eq!(w.progress(), Progress::Failed);
        assert_eq!(w.record(NodeId(2), Ok(())).0, Progress::Failed);
        assert_eq!(w.unplaced(), ids(&[3]));
        match w.into_error() {
            ReplyError::QuorumFailed {
                required: 3,
                succeeded: 2,
                errors,
            } => {
                assert_eq!(errors, vec![(NodeId(3), ReplicaError::MarkedDown)]);
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn suspected_standins_are_skipped_and_strangers_ignored() {
        let (mut w, sends) = SloppyWrite::new(2, &ids(&[1, 2, 3]), &ids(&[4, 5]), NodeId(1), |n| {
            n == NodeId(2) || n == NodeId(4)
        });
        assert_eq!(sends, vec![hint(5, 2), to(3)]);
        assert_eq!(w.record(NodeId(9), Ok(())).0, Progress::Pending);
        assert_eq!(w.record(NodeId(5), Ok(())).0, Progress::Met);
    }

    proptest! {
        /// Whatever fails in whatever order: no node gets two copies, a stand-in is never an
        /// owner, every copy to a stand-in names a distinct owner, and `Met` means W distinct
        /// nodes acknowledged.
        #[test]
        fn placements_are_distinct_and_met_means_w_distinct_acks(
            n in 1usize..5, extra in 0usize..4, w_raw in 1usize..5,
            suspected in prop::collection::vec(any::<bool>(), 9),
            outcomes in prop::collection::vec(any::<bool>(), 0..20),
        ) {
            let all: Vec<NodeId> = (1..=(n + extra) as u32).map(NodeId).collect();
            let (owners, standins) = all.split_at(n);
            let w_req = w_raw.min(n);
            let local = owners[0];
            let (mut w, mut queue) = SloppyWrite::new(w_req, owners, standins, local, |id| id != local && suspected[id.0 as usize]);
            let mut sent: Vec<Placement> = queue.clone();
            let mut outcomes = outcomes.into_iter();
            while let Some(p) = queue.pop() {
                let ok = outcomes.next().unwrap_or(true);
                let (_, more) = w.record(p.to, if ok { Ok(()) } else { Err(ReplicaError::TimedOut) });
                sent.extend(more.iter().copied());
                queue.extend(more);
            }
            let mut targets: Vec<NodeId> = sent.iter().map(|p| p.to).collect();
            targets.sort();
            targets.dedup();
            prop_assert_eq!(targets.len(), sent.len(), "a node got two copies: {:?}", sent);
            for p in &sent {
                match p.hint_for {
                    Some(owner) => {
                        prop_assert!(standins.contains(&p.to));
                        prop_assert!(owners.contains(&owner));
                    }
                    None => prop_assert!(owners.contains(&p.to)),
                }
            }
            let mut acked = w.acked().to_vec();
            acked.sort();
            acked.dedup();
            prop_assert_eq!(acked.len(), w.acked().len());
            prop_assert_eq!(w.progress() == Progress::Met, acked.len() >= w_req);
            prop_assert!(w.settled());
        }
    }
}
