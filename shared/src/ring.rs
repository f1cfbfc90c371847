//! The ring: Q fixed, equal partitions, their owners, and preference lists.
//!
//! A key's 64-bit hash is cut into Q equal ranges by its top `log2(Q)` bits, so partition `p`
//! holds the hashes `[p << (64 - log2 Q), (p + 1) << (64 - log2 Q))` and the partitions follow
//! each other clockwise. This is Dynamo's strategy 3 (Q/S tokens per node, equal-sized
//! partitions), the one that balanced load best in the paper. Partitions never split or merge;
//! only their owners change, and every change bumps the ring's [`Ring::epoch`].
//!
//! The **preference list** of a partition is the owners of that partition and the following
//! partitions clockwise, skipping nodes already listed. Its first N entries are the N distinct
//! physical replicas; the remaining entries are the stand-ins a sloppy quorum may use.
//!
//! Default Q is 1024: large enough that a cluster of up to ~100 nodes still gives each node 10
//! or more partitions (balance within one partition of the mean, i.e. Q/S or Q/S+1 each), small
//! enough that per-partition state (Merkle trees, handoff progress) stays cheap to hold for
//! every partition a node replicates.

use crate::hash::key_hash;
use crate::host_name::HostName;
use crate::ids::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// The default partition count Q (see the module docs for why).
pub const DEFAULT_PARTITIONS: u32 = 1024;

/// The largest partition count a ring accepts.
pub const MAX_PARTITIONS: u32 = 1 << 16;

/// The most members a ring may have (a received ring with more is refused before anything is
/// built from it).
pub const MAX_MEMBERS: usize = 1024;

/// The longest preference list kept per partition: the N replicas and enough stand-ins for any
/// sloppy quorum. It bounds a ring's memory at Q × 32 ids whatever the member count.
pub const MAX_PREFERENCE: usize = 32;

/// A partition index in `0..Q`.
pub type PartitionId = u32;

/// A cluster member: a node id and where it listens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node's id.
    pub id: NodeId,
    /// The QUIC address the node listens on (its name's address when the ring was made).
    pub addr: SocketAddr,
    /// The name the node was given, if it was given one: peers and clients resolve it again
    /// whenever they (re)connect, and use `addr` only when it does not resolve.
    #[serde(default, skip_serializing_if = "crate::host_name::omit")]
    pub host: Option<HostName>,
}

impl Member {
    /// A member named by its address alone.
    pub fn at(id: NodeId, addr: SocketAddr) -> Member {
        Member {
            id,
            addr,
            host: None,
        }
    }
}

/// Why a ring could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// Q must be a power of two between 1 and [`MAX_PARTITIONS`].
    #[error("partition count {partitions} is not a power of two in 1..={max}", max = MAX_PARTITIONS)]
    BadPartitionCount {
        /// The rejected partition count.
        partitions: u32,
    },
    /// A ring needs at least one member.
    #[error("a ring needs at least one member")]
    NoMembers,
    /// More members than [`MAX_MEMBERS`].
    #[error("{members} members is more than the {max} a ring may have", max = MAX_MEMBERS)]
    TooManyMembers {
        /// The member count.
        members: usize,
    },
    /// The same node id was listed twice.
    #[error("node id {id} is listed twice")]
    DuplicateNode {
        /// The repeated id.
        id: NodeId,
    },
    /// The owner table names a node that is not a member, or has the wrong length.
    #[error("owner table is inconsistent: {reason}")]
    BadOwners {
        /// What is wrong with it.
        reason: String,
    },
}

/// An immutable snapshot of partition ownership at one epoch.
///
/// Rings are cheap to share (`Arc<Ring>`) and are replaced whole when ownership changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RingRepr", into = "RingRepr")]
pub struct Ring {
    epoch: u64,
    members: BTreeMap<NodeId, Member>,
    owners: Vec<NodeId>,
    /// Preference list per partition (every member, in walk order), derived from `owners`.
    /// Shared: a ring is cloned with every view a node gossips, and copying Q lists each time
    /// was most of a gossip round's allocation.
    prefs: std::sync::Arc<[Box<[NodeId]>]>,
    shift: u32,
}

/// The serialized form of a ring: what is needed to rebuild it, nothing derived.
#[derive(Serialize, Deserialize)]
struct RingRepr {
    epoch: u64,
    members: Vec<Member>,
    owners: Vec<NodeId>,
}

impl TryFrom<RingRepr> for Ring {
    type Error = RingError;
    fn try_from(r: RingRepr) -> Result<Self, RingError> {
        Ring::from_owners(r.epoch, r.members, r.owners)
    }
}

impl From<Ring> for RingRepr {
    fn from(r: Ring) -> Self {
        RingRepr {
            epoch: r.epoch,
            members: r.members.into_values().collect(),
            owners: r.owners,
        }
    }
}

impl Ring {
    /// A ring at epoch 1 with `partitions` partitions dealt round-robin over `members` in id
    /// order, so every node owns Q/S or Q/S+1 partitions.
    pub fn balanced(partitions: u32, members: Vec<Member>) -> Result<Self, RingError> {
        check_partitions(partitions)?;
        let mut ids: Vec<NodeId> = members.iter().map(|m| m.id).collect();
        ids.sort();
        if ids.is_empty() {
            return Err(RingError::NoMembers);
        }
        let owners = (0..partitions as usize)
            .map(|p| ids[p % ids.len()])
            .collect();
        Self::from_owners(1, members, owners)
    }

    /// A ring from an explicit owner table (one owner per partition).
    pub fn from_owners(
        epoch: u64,
        members: Vec<Member>,
        owners: Vec<NodeId>,
    ) -> Result<Self, RingError> {
        let partitions = u32::try_from(owners.len()).map_err(|_| RingError::BadOwners {
            reason: format!("{} partitions is too many", owners.len()),
        })?;
        check_partitions(partitions)?;
        if members.is_empty() {
            return Err(RingError::NoMembers);
        }
        if members.len() > MAX_MEMBERS {
            return Err(RingError::TooManyMembers {
                members: members.len(),
            });
        }
        let mut by_id = BTreeMap::new();
        for m in members {
            let id = m.id;
            if by_id.insert(id, m).is_some() {
                return Err(RingError::DuplicateNode { id });
            }
        }
        if let Some(stranger) = owners.iter().find(|o| !by_id.contains_key(o)) {
            return Err(RingError::BadOwners {
                reason: format!("partition owner {stranger} is not a member"),
            });
        }
        let prefs = preference_lists(&owners, MAX_PREFERENCE).into();
        Ok(Ring {
            epoch,
            members: by_id,
            owners,
            prefs,
            shift: 64 - partitions.trailing_zeros(),
        })
    }

    /// The ring's epoch: it grows by one with every ownership change.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Q, the number of partitions.
    pub fn partition_count(&self) -> u32 {
        self.owners.len() as u32
    }

    /// The partition a key hashes to.
    #[inline]
    pub fn partition_of(&self, key: &[u8]) -> PartitionId {
        self.partition_of_hash(key_hash(key))
    }

    /// The partition a ring position falls in.
    #[inline]
    pub fn partition_of_hash(&self, hash: u64) -> PartitionId {
        // `shift` is 64 when Q = 1; `checked_shr` maps that to partition 0.
        hash.checked_shr(self.shift).unwrap_or(0) as PartitionId
    }

    /// The owner of a partition.
    pub fn owner(&self, partition: PartitionId) -> NodeId {
        self.owners[partition as usize]
    }

    /// Every member, in id order.
    pub fn members(&self) -> impl ExactSizeIterator<Item = &Member> {
        self.members.values()
    }

    /// One member by id.
    pub fn member(&self, id: NodeId) -> Option<&Member> {
        self.members.get(&id)
    }

    /// The members named by `ids`, in order; ids not in this ring are left out.
    pub fn members_of(&self, ids: &[NodeId]) -> Vec<Member> {
        ids.iter()
            .filter_map(|id| self.member(*id).cloned())
            .collect()
    }

    /// The preference list of `key`'s partition as members: where its replicas and stand-ins
    /// are reached.
    pub fn preference_members(&self, key: &[u8]) -> Vec<Member> {
        self.members_of(self.preference_list_for_key(key))
    }

    /// The full preference list of a partition: every member once, replicas first.
    ///
    /// The first `n` entries are the partition's N replicas (fewer if the cluster has fewer
    /// than `n` nodes); the rest are sloppy-quorum stand-ins in the order they should be tried.
    pub fn preference_list(&self, partition: PartitionId) -> &[NodeId] {
        &self.prefs[partition as usize]
    }

    /// The preference list of the partition `key` falls in.
    pub fn preference_list_for_key(&self, key: &[u8]) -> &[NodeId] {
        self.preference_list(self.partition_of(key))
    }

    /// The N replicas of a partition (the head of its preference list).
    pub fn replicas(&self, partition: PartitionId, n: usize) -> &[NodeId] {
        let list = self.preference_list(partition);
        &list[..n.min(list.len())]
    }

    /// How many partitions each member owns (members owning none are listed with 0).
    pub fn ownership_counts(&self) -> BTreeMap<NodeId, usize> {
        let mut counts: BTreeMap<NodeId, usize> = self.members.keys().map(|&id| (id, 0)).collect();
        for o in &self.owners {
            *counts.entry(*o).or_default() += 1;
        }
        counts
    }
}

fn check_partitions(partitions: u32) -> Result<(), RingError> {
    if partitions == 0 || !partitions.is_power_of_two() || partitions > MAX_PARTITIONS {
        return Err(RingError::BadPartitionCount { partitions });
    }
    Ok(())
}

/// Every partition's preference list: walking clockwise from the partition, each distinct
/// owner once, at most `cap` of them.
///
/// Built backwards in O(Q × cap) rather than by walking from every partition (O(Q²) when
/// owners bunch up): the list from `p` is `owner(p)` followed by the list from `p + 1` without
/// `owner(p)`. The list from partition 0 is walked directly, which closes the circle.
fn preference_lists(owners: &[NodeId], cap: usize) -> Vec<Box<[NodeId]>> {
    let q = owners.len();
    let mut prefs: Vec<Box<[NodeId]>> = vec![Box::default(); q];
    let mut first: Vec<NodeId> = Vec::with_capacity(cap);
    for &o in owners {
        if first.len() == cap {
            break;
        }
        if !first.contains(&o) {
            first.push(o);
        }
    }
    let mut next = first.clone();
    for p in (1..q).rev() {
        let o = owners[p];
        let mut list = Vec::with_capacity(cap);
        list.push(o);
        list.extend(next.iter().copied().filter(|n| *n != o).take(cap - 1));
        prefs[p] = list.clone().into_boxed_slice();
        next = list;
    }
    if q > 0 {
        prefs[0] = first.into_boxed_slice();
    }
    prefs
}

/// Members `127.0.0.1:7000 + id` with the given ids, for tests.
#[cfg(test)]
pub(crate) fn test_members(ids: impl IntoIterator<Item = u32>) -> Vec<Member> {
    ids.into_iter()
        .map(|i| {
            Member::at(
                NodeId(i),
                SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn members(n: u32) -> Vec<Member> {
        (1..=n)
            .map(|i| {
                Member::at(
                    NodeId(i),
                    SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)),
                )
            })
            .collect()
    }

    #[test]
    fn preference_members_follow_the_preference_list_and_skip_strangers() {
        let ring = Ring::balanced(8, members(4)).expect("valid");
        let key = b"some key";
        let ids: Vec<NodeId> = ring.preference_members(key).iter().map(|m| m.id).collect();
        assert_eq!(ids, ring.preference_list_for_key(key));
        let named = ring.members_of(&[NodeId(3), NodeId(9), NodeId(1)]);
        assert_eq!(
            named.iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![NodeId(3), NodeId(1)]
        );
    }

    #[test]
    fn rejects_bad_partition_counts() {
        for q in [0, 3, 1000, MAX_PARTITIONS * 2] {
            assert_eq!(
                Ring::balanced(q, members(3)),
                Err(RingError::BadPartitionCount { partitions: q })
            );
        }
        assert_eq!(Ring::balanced(8, vec![]), Err(RingError::NoMembers));
    }

    #[test]
    fn rejects_duplicate_and_unknown_owners() {
        let mut m = members(2);
        m.push(m[0].clone());
        assert_eq!(
            Ring::balanced(8, m),
            Err(RingError::DuplicateNode { id: NodeId(1) })
        );
        let err = Ring::from_owners(1, members(2), vec![NodeId(9); 4]).unwrap_err();
        assert!(matches!(err, RingError::BadOwners { .. }), "{err:?}");
    }

    #[test]
    fn partitions_cover_the_hash_space_in_order() {
        let ring = Ring::balanced(1024, members(3)).unwrap();
        assert_eq!(ring.partition_of_hash(0), 0);
        assert_eq!(ring.partition_of_hash(u64::MAX), 1023);
        assert_eq!(ring.partition_of_hash(1 << 54), 1);
        let one = Ring::balanced(1, members(3)).unwrap();
        assert_eq!(one.partition_of_hash(u64::MAX), 0);
    }

    #[test]
    fn serde_round_trip_rebuilds_derived_state() {
        let ring = Ring::balanced(64, members(5)).unwrap();
        let bytes = rmp_serde::to_vec(&ring).unwrap();
        let back: Ring = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(ring, back);
        assert_eq!(back.preference_list(7), ring.preference_list(7));
    }

    /// The obvious definition the fast construction must match.
    fn walk(owners: &[NodeId], start: usize, cap: usize) -> Vec<NodeId> {
        let mut list = Vec::new();
        for step in 0..owners.len() {
            let o = owners[(start + step) % owners.len()];
            if !list.contains(&o) && list.len() < cap {
                list.push(o);
            }
        }
        list
    }

    #[test]
    fn hostile_rings_are_refused_or_bounded() {
        let many: Vec<Member> = (0..(MAX_MEMBERS as u32 + 1))
            .map(|i| Member::at(NodeId(i), SocketAddr::from(([127, 0, 0, 1], 1))))
            .collect();
        assert!(matches!(
            Ring::from_owners(1, many, vec![NodeId(0); 8]),
            Err(RingError::TooManyMembers { .. })
        ));
        // Q = 65536 owned by 1000 distinct nodes: lists stop at MAX_PREFERENCE.
        let owners: Vec<NodeId> = (0..MAX_PARTITIONS).map(|p| NodeId(p % 1000)).collect();
        let ring = Ring::from_owners(1, members_with_ids(0..1000), owners).unwrap();
        assert_eq!(ring.preference_list(5).len(), MAX_PREFERENCE);
    }

    fn members_with_ids(ids: std::ops::Range<u32>) -> Vec<Member> {
        ids.map(|i| Member::at(NodeId(i), SocketAddr::from(([127, 0, 0, 1], 1))))
            .collect()
    }

    proptest! {
        #[test]
        fn fast_preference_lists_match_the_walk(owners in proptest::collection::vec(0u32..6, 1..64), cap in 1usize..8) {
            let owners: Vec<NodeId> = owners.into_iter().map(NodeId).collect();
            let fast = preference_lists(&owners, cap);
            for (p, list) in fast.iter().enumerate() {
                prop_assert_eq!(list.to_vec(), walk(&owners, p, cap), "partition {}", p);
            }
        }

        #[test]
        fn balanced_rings_are_balanced(q_log in 0u32..12, s in 1u32..40) {
            let q = 1u32 << q_log;
            let ring = Ring::balanced(q, members(s)).unwrap();
            let counts = ring.ownership_counts();
            let lo = (q / s) as usize;
            for (_, c) in counts {
                prop_assert!(c == lo || c == lo + 1, "count {c}, q {q}, s {s}");
            }
        }

        #[test]
        fn preference_lists_are_distinct_and_complete(q_log in 0u32..10, s in 1u32..12, key in any::<Vec<u8>>()) {
            let ring = Ring::balanced(1 << q_log, members(s)).unwrap();
            let p = ring.partition_of(&key);
            let list = ring.preference_list(p);
            let mut sorted = list.to_vec();
            sorted.sort();
            sorted.dedup();
            prop_assert_eq!(sorted.len(), list.len());
            // Every node that owns any partition appears (all of them, for a balanced ring
            // with Q >= S; fewer nodes than members only when Q < S).
            prop_assert_eq!(list.len(), (s as usize).min(1 << q_log));
            prop_assert_eq!(list[0], ring.owner(p));
            let n3 = ring.replicas(p, 3);
            prop_assert_eq!(n3.len(), 3.min(list.len()));
        }
    }
}
