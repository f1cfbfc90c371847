//! Partition handoff planning: which node sends which partition to which, when the ring
//! changes.
//!
//! When partition `p`'s replica set changes from `old` to `new`, every node in `new` but not
//! in `old` must receive `p`'s objects before it serves them. A write acknowledged by W of the
//! old replicas may be missing from the others, so **every** old replica sends its copy of the
//! partition to every new one ([`transfers`]): the receiver merges them, so it holds every
//! version any old replica held. Transfers are idempotent (objects merge), so one interrupted by
//! a crash resumes from its persisted cursor, and repeating a batch is harmless.

use crate::ids::NodeId;
use crate::ring::{PartitionId, Ring};
use serde::{Deserialize, Serialize};

/// One partition's data moving from one node to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Transfer {
    /// The partition.
    pub partition: PartitionId,
    /// The sending node (an old replica).
    pub from: NodeId,
    /// The receiving node (a new replica).
    pub to: NodeId,
}

impl std::fmt::Display for Transfer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "partition {} {} -> {}",
            self.partition, self.from, self.to
        )
    }
}

/// Every transfer that moving from ring `old` to ring `new` needs with `n` replicas per key,
/// sorted.
pub fn transfers(old: &Ring, new: &Ring, n: usize) -> Vec<Transfer> {
    let mut out = Vec::new();
    for p in 0..old.partition_count().min(new.partition_count()) {
        let before = old.replicas(p, n);
        for &to in new.replicas(p, n) {
            if before.contains(&to) {
                continue;
            }
            for &from in before {
                out.push(Transfer {
                    partition: p,
                    from,
                    to,
                });
            }
        }
    }
    out.sort();
    out
}

/// The new replicas of a partition that the old ones do not include: where a write
/// coordinated during a transition must also go.
pub fn incoming(old: &Ring, new: &Ring, partition: PartitionId, n: usize) -> Vec<NodeId> {
    let before = old.replicas(partition, n);
    new.replicas(partition, n)
        .iter()
        .copied()
        .filter(|id| !before.contains(id))
        .collect()
}

/// A sender's progress on one transfer, as `ringkv handoffs` shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Keys sent so far.
    pub keys: u64,
    /// Bytes of objects sent so far.
    pub bytes: u64,
    /// Milliseconds spent sending so far.
    pub elapsed_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::ring::test_members as members;

    #[test]
    fn every_old_replica_sends_to_every_new_one() {
        let old = Ring::balanced(64, members(1..=3)).unwrap();
        let new = crate::planner::plan(&old, &members(1..=4), 3).unwrap();
        let ts = transfers(&old, &new, 3);
        assert!(!ts.is_empty());
        for p in 0..64 {
            let inc = incoming(&old, &new, p, 3);
            let here: Vec<&Transfer> = ts.iter().filter(|t| t.partition == p).collect();
            assert_eq!(here.len(), inc.len() * 3, "partition {p}");
            for t in here {
                assert!(inc.contains(&t.to));
                assert!(old.replicas(p, 3).contains(&t.from));
                assert!(!old.replicas(p, 3).contains(&t.to));
            }
        }
        // The new node receives every partition it replicates, from each of 3 old replicas;
        // with 4 nodes and N=3 that is about 3/4 of the partitions.
        let receives: std::collections::BTreeSet<u32> = ts
            .iter()
            .filter(|t| t.to == NodeId(4))
            .map(|t| t.partition)
            .collect();
        let replicates: std::collections::BTreeSet<u32> = (0..64)
            .filter(|p| new.replicas(*p, 3).contains(&NodeId(4)))
            .collect();
        assert_eq!(receives, replicates);
        assert!((44..=52).contains(&receives.len()), "{}", receives.len());
        assert_eq!(
            ts.iter().filter(|t| t.to == NodeId(4)).count(),
            receives.len() * 3
        );
    }

    #[test]
    fn an_unchanged_ring_needs_no_transfers() {
        let ring = Ring::balanced(64, members(1..=5)).unwrap();
        assert!(transfers(&ring, &ring, 3).is_empty());
    }
}
