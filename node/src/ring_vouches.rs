//! Rings a node cannot verify on its own, and the members that vouched for them.
//!
//! A node more than one ring change behind (its disk replaced, say) cannot check the
//! cluster's ring against its own (`View::merge_checked` refuses it). It takes such a ring
//! once two of that ring's members other than itself sent it (all of them, if there are
//! fewer): one node holding a forged view cannot move it to a ring of its own making. Only the
//! highest such ring is tracked. No I/O: the gossip layer feeds it and installs the result.
//!
//! With the ring it takes the nodes every voucher says were removed by force: a node that fell
//! behind across a removal by force and the change after it cannot verify the removal's
//! signature either, and a node removed by force that comes back learns it this way.

use ringkv_shared::{NodeId, Ring};
use std::collections::{BTreeMap, BTreeSet};

/// What counting one sender for a ring decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Vouch {
    /// The sender is unknown or not a member of the ring (or is this node): not counted.
    NotCounted,
    /// A higher ring is already being counted: this one is dropped.
    Superseded,
    /// Counted; more members must send it.
    Waiting {
        /// Who sent it so far.
        by: BTreeSet<NodeId>,
    },
    /// Enough members sent it: take it.
    Take {
        /// The ring.
        ring: Ring,
        /// Who vouched.
        by: BTreeSet<NodeId>,
        /// The nodes every voucher says were removed by force.
        removed_by_force: BTreeSet<NodeId>,
    },
}

/// The ring being counted, if any, and what each voucher said was removed by force.
#[derive(Default)]
pub(crate) struct RingVouches {
    pending: Option<(Ring, BTreeMap<NodeId, BTreeSet<NodeId>>)>,
}

impl RingVouches {
    /// Counts `sender` for `ring` on node `me`; `removed` is what the sender's view says was
    /// removed by force.
    pub(crate) fn vouch(
        &mut self,
        me: NodeId,
        ring: Ring,
        sender: Option<NodeId>,
        removed: &BTreeSet<NodeId>,
    ) -> Vouch {
        let Some(sender) = sender.filter(|s| *s != me && ring.member(*s).is_some()) else {
            return Vouch::NotCounted;
        };
        match &self.pending {
            Some((pending, _)) if *pending == ring => {}
            Some((pending, _)) if pending.epoch() >= ring.epoch() => return Vouch::Superseded,
            _ => self.pending = Some((ring.clone(), BTreeMap::new())),
        }
        let Some((_, by)) = self.pending.as_mut() else {
            return Vouch::NotCounted;
        };
        by.insert(sender, removed.clone());
        let needed = ring.members().filter(|m| m.id != me).count().min(2);
        if by.len() < needed {
            return Vouch::Waiting {
                by: by.keys().copied().collect(),
            };
        }
        let said = std::mem::take(by);
        self.pending = None;
        let mut sets = said.values();
        let first = sets.next().cloned().unwrap_or_default();
        let removed_by_force =
            sets.fold(first, |all, set| all.intersection(set).copied().collect());
        Vouch::Take {
            ring,
            by: said.into_keys().collect(),
            removed_by_force,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_shared::Member;

    fn none_removed() -> BTreeSet<NodeId> {
        BTreeSet::new()
    }

    fn ring(epoch: u64, ids: &[u32]) -> Ring {
        let members: Vec<Member> = ids
            .iter()
            .map(|i| {
                Member::at(
                    NodeId(*i),
                    std::net::SocketAddr::from(([127, 0, 0, 1], 7000 + *i as u16)),
                )
            })
            .collect();
        let owners = (0..64).map(|p| NodeId(ids[p % ids.len()])).collect();
        Ring::from_owners(epoch, members, owners).unwrap()
    }

    #[test]
    fn two_members_must_send_the_same_ring() {
        let none = none_removed();
        let me = NodeId(1);
        let mut v = RingVouches::default();
        let r = ring(5, &[1, 2, 3, 4]);
        assert_eq!(v.vouch(me, r.clone(), None, &none), Vouch::NotCounted);
        assert_eq!(v.vouch(me, r.clone(), Some(me), &none), Vouch::NotCounted);
        assert_eq!(
            v.vouch(me, r.clone(), Some(NodeId(9)), &none),
            Vouch::NotCounted,
            "not a member"
        );
        assert!(matches!(
            v.vouch(me, r.clone(), Some(NodeId(2)), &none),
            Vouch::Waiting { .. }
        ));
        // The same sender again does not count twice.
        assert!(matches!(
            v.vouch(me, r.clone(), Some(NodeId(2)), &none),
            Vouch::Waiting { .. }
        ));
        // A different ring at the same epoch does not displace it; a lower one neither.
        assert_eq!(
            v.vouch(me, ring(5, &[1, 2, 3]), Some(NodeId(3)), &none),
            Vouch::Superseded
        );
        assert_eq!(
            v.vouch(me, ring(4, &[1, 2, 3]), Some(NodeId(3)), &none),
            Vouch::Superseded
        );
        match v.vouch(me, r.clone(), Some(NodeId(3)), &none) {
            Vouch::Take { ring, by, .. } => {
                assert_eq!(ring, r);
                assert_eq!(by, [NodeId(2), NodeId(3)].into());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_higher_ring_restarts_the_count_and_a_two_node_ring_needs_its_one_peer() {
        let none = none_removed();
        let me = NodeId(1);
        let mut v = RingVouches::default();
        assert!(matches!(
            v.vouch(me, ring(5, &[1, 2, 3]), Some(NodeId(2)), &none),
            Vouch::Waiting { .. }
        ));
        assert!(matches!(
            v.vouch(me, ring(6, &[1, 2, 3]), Some(NodeId(3)), &none),
            Vouch::Waiting { .. }
        ));
        assert!(matches!(
            v.vouch(me, ring(6, &[1, 2, 3]), Some(NodeId(2)), &none),
            Vouch::Take { .. }
        ));
        assert!(matches!(
            v.vouch(me, ring(7, &[1, 2]), Some(NodeId(2)), &none),
            Vouch::Take { .. }
        ));
    }

    #[test]
    fn only_what_every_voucher_says_was_removed_by_force_is_taken() {
        let me = NodeId(1);
        let mut v = RingVouches::default();
        let r = ring(5, &[2, 3, 4]);
        let said_by_2: BTreeSet<NodeId> = [NodeId(1), NodeId(7)].into();
        let said_by_3: BTreeSet<NodeId> = [NodeId(1), NodeId(4)].into();
        assert!(matches!(
            v.vouch(me, r.clone(), Some(NodeId(2)), &said_by_2),
            Vouch::Waiting { .. }
        ));
        match v.vouch(me, r, Some(NodeId(3)), &said_by_3) {
            Vouch::Take {
                removed_by_force, ..
            } => assert_eq!(removed_by_force, [NodeId(1)].into()),
            other => panic!("{other:?}"),
        }
    }
}
