//! Rings a node cannot verify on its own, and the members that vouched for them.
//!
//! A node more than one ring change behind (its disk replaced, say) cannot check the
//! cluster's ring against its own (`View::merge_checked` refuses it). It takes such a ring
//! once two of that ring's members other than itself sent it (all of them, if there are
//! fewer): one node holding a forged view cannot move it to a ring of its own making. Only the
//! highest such ring is tracked. No I/O: the gossip layer feeds it and installs the result.

use ringkv_shared::{NodeId, Ring};
use std::collections::BTreeSet;

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
    },
}

/// The ring being counted, if any.
#[derive(Default)]
pub(crate) struct RingVouches {
    pending: Option<(Ring, BTreeSet<NodeId>)>,
}

impl RingVouches {
    /// Counts `sender` for `ring` on node `me`.
    pub(crate) fn vouch(&mut self, me: NodeId, ring: Ring, sender: Option<NodeId>) -> Vouch {
        let Some(sender) = sender.filter(|s| *s != me && ring.member(*s).is_some()) else {
            return Vouch::NotCounted;
        };
        match &self.pending {
            Some((pending, _)) if *pending == ring => {}
            Some((pending, _)) if pending.epoch() >= ring.epoch() => return Vouch::Superseded,
            _ => self.pending = Some((ring.clone(), BTreeSet::new())),
        }
        let Some((_, by)) = self.pending.as_mut() else {
            return Vouch::NotCounted;
        };
        by.insert(sender);
        let needed = ring.members().filter(|m| m.id != me).count().min(2);
        if by.len() < needed {
            return Vouch::Waiting { by: by.clone() };
        }
        let by = std::mem::take(by);
        self.pending = None;
        Vouch::Take { ring, by }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_shared::Member;

    fn ring(epoch: u64, ids: &[u32]) -> Ring {
        let members: Vec<Member> = ids
            .iter()
            .map(|i| Member {
                id: NodeId(*i),
                addr: std::net::SocketAddr::from(([127, 0, 0, 1], 7000 + *i as u16)),
            })
            .collect();
        let owners = (0..64).map(|p| NodeId(ids[p % ids.len()])).collect();
        Ring::from_owners(epoch, members, owners).unwrap()
    }

    #[test]
    fn two_members_must_send_the_same_ring() {
        let me = NodeId(1);
        let mut v = RingVouches::default();
        let r = ring(5, &[1, 2, 3, 4]);
        assert_eq!(v.vouch(me, r.clone(), None), Vouch::NotCounted);
        assert_eq!(v.vouch(me, r.clone(), Some(me)), Vouch::NotCounted);
        assert_eq!(
            v.vouch(me, r.clone(), Some(NodeId(9))),
            Vouch::NotCounted,
            "not a member"
        );
        assert!(matches!(
            v.vouch(me, r.clone(), Some(NodeId(2))),
            Vouch::Waiting { .. }
        ));
        // The same sender again does not count twice.
        assert!(matches!(
            v.vouch(me, r.clone(), Some(NodeId(2))),
            Vouch::Waiting { .. }
        ));
        // A different ring at the same epoch does not displace it; a lower one neither.
        assert_eq!(
            v.vouch(me, ring(5, &[1, 2, 3]), Some(NodeId(3))),
            Vouch::Superseded
        );
        assert_eq!(
            v.vouch(me, ring(4, &[1, 2, 3]), Some(NodeId(3))),
            Vouch::Superseded
        );
        match v.vouch(me, r.clone(), Some(NodeId(3))) {
            Vouch::Take { ring, by } => {
                assert_eq!(ring, r);
                assert_eq!(by, [NodeId(2), NodeId(3)].into());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_higher_ring_restarts_the_count_and_a_two_node_ring_needs_its_one_peer() {
        let me = NodeId(1);
        let mut v = RingVouches::default();
        assert!(matches!(
            v.vouch(me, ring(5, &[1, 2, 3]), Some(NodeId(2))),
            Vouch::Waiting { .. }
        ));
        assert!(matches!(
            v.vouch(me, ring(6, &[1, 2, 3]), Some(NodeId(3))),
            Vouch::Waiting { .. }
        ));
        assert!(matches!(
            v.vouch(me, ring(6, &[1, 2, 3]), Some(NodeId(2))),
            Vouch::Take { .. }
        ));
        assert!(matches!(
            v.vouch(me, ring(7, &[1, 2]), Some(NodeId(2))),
            Vouch::Take { .. }
        ));
    }
}
