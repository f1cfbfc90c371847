//! The outcome of a write coordinated during a ring change, without I/O.
//!
//! While a partition moves, a coordinator writes to the current ring's replicas (the sloppy
//! quorum of `ringkv_net::fanout::replicate`) and also copies the write to the replicas the target
//! ring adds. The write counts only once W replicas of **each** ring hold it, so that reads by
//! either ring meet it. [`DualWrite`] tallies the second half and classifies the result:
//!
//! - met: W of the target ring's replicas hold the write (replicas both rings share count for
//!   both);
//! - not met: the write **is stored** (on the W current replicas that acknowledged, at least),
//!   so the error, [`ReplyError::RingChangeQuorumFailed`], counts every node that holds it.
//!   Reporting `succeeded: 0` here would tell a client "applied nowhere" about a stored write,
//!   and a client that retried on that would stamp the write a second time.

use crate::error::{ReplicaError, ReplyError};
use crate::ids::NodeId;
use std::collections::BTreeSet;

/// A tally of which target-ring replicas hold a write the current ring already acknowledged.
#[derive(Clone, Debug)]
pub struct DualWrite {
    required: usize,
    target_replicas: Vec<NodeId>,
    holders: BTreeSet<NodeId>,
    errors: Vec<(NodeId, ReplicaError)>,
}

impl DualWrite {
    /// A tally for a write that `acked` (the current ring's quorum, coordinator included)
    /// already holds, needing `required` of `target_replicas` (the target ring's first N
    /// owners of the key). `required` is capped at the number of target replicas.
    pub fn new(required: usize, target_replicas: Vec<NodeId>, acked: &[NodeId]) -> Self {
        Self {
            required: required.min(target_replicas.len()),
            target_replicas,
            holders: acked.iter().copied().collect(),
            errors: Vec::new(),
        }
    }

    /// Records the answer of a copy sent to an incoming replica.
    pub fn record(&mut self, node: NodeId, result: Result<(), ReplicaError>) {
        match result {
            Ok(()) => {
                self.holders.insert(node);
                self.errors.retain(|(n, _)| *n != node);
            }
            Err(e) if !self.holders.contains(&node) => self.errors.push((node, e)),
            Err(_) => {}
        }
    }

    /// Target-ring replicas that hold the write.
    pub fn held_by_target(&self) -> usize {
        self.target_replicas
            .iter()
            .filter(|n| self.holders.contains(n))
            .count()
    }

    /// Whether W of the target ring's replicas hold the write.
    pub fn met(&self) -> bool {
        self.held_by_target() >= self.required
    }

    /// `Ok` if met; else the error naming every node that holds the write and every incoming
    /// replica that failed.
    pub fn into_result(self) -> Result<(), ReplyError> {
        if self.met() {
            return Ok(());
        }
        let held_by_target = self.held_by_target();
        Err(ReplyError::RingChangeQuorumFailed {
            required: clamp(self.required),
            held: clamp(self.holders.len()),
            held_by_target: clamp(held_by_target),
            errors: self.errors,
        })
    }
}

fn clamp(n: usize) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u32]) -> Vec<NodeId> {
        v.iter().map(|&i| NodeId(i)).collect()
    }

    #[test]
    fn shared_replicas_count_for_both_rings() {
        // Owners [5,1,2] -> [5,6,2]: the current quorum {5,2} is W of the target ring too.
        let t = DualWrite::new(2, ids(&[5, 6, 2]), &ids(&[5, 2]));
        assert!(t.met());
        assert_eq!(t.into_result(), Ok(()));
    }

    #[test]
    fn an_incoming_ack_completes_the_target_quorum() {
        let mut t = DualWrite::new(2, ids(&[5, 6, 2]), &ids(&[5, 1]));
        assert!(!t.met());
        t.record(NodeId(6), Ok(()));
        assert!(t.met());
    }

    /// The bug this type exists for: W old replicas hold the write, the joiner is cut off.
    /// The answer must say the write is stored, not "0 succeeded".
    #[test]
    fn a_write_stored_on_the_current_ring_is_never_reported_as_applied_nowhere() {
        let mut t = DualWrite::new(2, ids(&[5, 6, 2]), &ids(&[5, 1]));
        t.record(
            NodeId(6),
            Err(ReplicaError::Unreachable {
                reason: "cut off".into(),
            }),
        );
        let err = t.into_result().unwrap_err();
        match &err {
            ReplyError::RingChangeQuorumFailed {
                required,
                held,
                held_by_target,
                errors,
            } => {
                assert_eq!((*required, *held, *held_by_target), (2, 2, 1));
                assert_eq!(errors.len(), 1);
                assert_eq!(errors[0].0, NodeId(6));
            }
            other => panic!("{other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains("stored on 2 nodes"), "{text}");
        assert!(text.contains("may have been applied"), "{text}");
    }

    #[test]
    fn a_late_success_clears_an_earlier_failure_and_duplicates_count_once() {
        let mut t = DualWrite::new(3, ids(&[5, 6, 7]), &ids(&[5]));
        t.record(NodeId(6), Err(ReplicaError::TimedOut));
        t.record(NodeId(6), Ok(()));
        t.record(NodeId(6), Ok(()));
        assert_eq!(t.held_by_target(), 2);
        assert!(!t.met());
        t.record(NodeId(7), Ok(()));
        assert!(t.met());
        // W larger than the target replica set is capped.
        assert!(DualWrite::new(5, ids(&[5, 6]), &ids(&[5, 6])).met());
    }
}
