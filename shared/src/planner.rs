//! The ownership planner: the ring after staged joins and leaves.
//!
//! Given the current ring, the nodes that will be members afterwards and N, [`plan`] builds the
//! next owner table so that
//! - every member owns Q/S or Q/S+1 partitions (the extra partitions go to the members that
//!   already own the most, so fewer move),
//! - as few partitions as possible change owner: only the partitions of leaving nodes and each
//!   over-full node's excess move, spread evenly over its range,
//! - every N consecutive partitions have distinct owners where that can be arranged (it
//!   keeps preference lists short and load even), and the N replicas of every partition are
//!   always N distinct nodes (the preference walk skips repeated owners; see [`crate::ring`]).
//!
//! The plan is a pure function of its inputs, so every node that computes it gets the same
//! ring: no node has to be trusted to announce it.

use crate::ids::NodeId;
use crate::ring::{Member, Ring, RingError};
use std::collections::BTreeMap;

/// Why a ring change cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// After the change there would be fewer nodes than replicas per key.
    #[error(
        "the change leaves {nodes} node(s), fewer than N={n}: two replicas of a partition would share a node"
    )]
    TooFewNodes {
        /// Members after the change.
        nodes: usize,
        /// The replication factor.
        n: usize,
    },
    /// The owner table could not be turned into a ring.
    #[error(transparent)]
    Ring(#[from] RingError),
    /// The current ring's epoch is the last one (a forged view could claim it): no next ring.
    #[error("the ring is at the last epoch there is; no further change can be planned")]
    EpochExhausted,
}

/// The ring after the change: `members` (every node that will own partitions, joiners
/// included, leavers excluded) at epoch `current.epoch() + 1`.
pub fn plan(current: &Ring, members: &[Member], n: usize) -> Result<Ring, PlanError> {
    let distinct: std::collections::BTreeSet<NodeId> = members.iter().map(|m| m.id).collect();
    if distinct.len() < n.max(1) {
        return Err(PlanError::TooFewNodes {
            nodes: distinct.len(),
            n,
        });
    }
    let q = current.partition_count() as usize;
    let members: Vec<Member> = members
        .iter()
        .map(|m| (m.id, m.clone()))
        .collect::<BTreeMap<_, _>>()
        .into_values()
        .collect();
    let ids: Vec<NodeId> = members.iter().map(|m| m.id).collect();
    let counts = current.ownership_counts();
    // Quotas: Q/S each, one more for the `Q % S` members that own the most now.
    let mut by_holding = ids.clone();
    by_holding.sort_by_key(|id| (std::cmp::Reverse(counts.get(id).copied().unwrap_or(0)), *id));
    let base = q / ids.len();
    let extra = q % ids.len();
    let quota: BTreeMap<NodeId, usize> = by_holding
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, base + usize::from(i < extra)))
        .collect();

    // Keep what can stay: partitions of leaving nodes and each node's excess become free.
    let mut owners: Vec<Option<NodeId>> = (0..q as u32).map(|p| Some(current.owner(p))).collect();
    let mut held: BTreeMap<NodeId, Vec<usize>> = BTreeMap::new();
    for (p, o) in owners.iter_mut().enumerate() {
        let id = o.expect("every partition starts owned");
        if quota.contains_key(&id) {
            held.entry(id).or_default().push(p);
        } else {
            *o = None;
        }
    }
    // Release each over-full node's excess spread evenly over its range (a release falls due
    // every count/excess partitions), skipping a due release while a free partition is within
    // the window, so that free partitions do not bunch up where the new owners could not keep
    // N consecutive owners distinct. Whatever is still owed after one lap is released from the
    // end of the node's range.
    let window = n.saturating_sub(1);
    let mut owed: BTreeMap<NodeId, usize> = held
        .iter()
        .map(|(id, parts)| (*id, parts.len().saturating_sub(quota[id])))
        .collect();
    let mut debt: BTreeMap<NodeId, usize> = BTreeMap::new();
    // How many nodes will take partitions: a window may hold that many free ones.
    let takers = ids
        .iter()
        .filter(|id| held.get(id).map_or(0, Vec::len) < quota[*id])
        .count()
        .max(1);
    for p in 0..q {
        let Some(o) = owners[p] else { continue };
        let (count, excess) = (held[&o].len(), owed[&o]);
        if excess == 0 {
            continue;
        }
        let d = debt.entry(o).or_default();
        *d += held[&o].len().saturating_sub(quota[&o]);
        if *d < count {
            continue;
        }
        let crowded = (0..=window).any(|back| {
            let start = p + q - back;
            (0..=window)
                .filter(|k| (start + k) % q == p || owners[(start + k) % q].is_none())
                .count()
                > takers
        });
        if crowded {
            continue;
        }
        *d -= count;
        owners[p] = None;
        *owed.get_mut(&o).expect("over-full nodes are owed") -= 1;
    }
    for (id, parts) in &held {
        let mut left = owed[id];
        for &p in parts.iter().rev() {
            if left == 0 {
                break;
            }
            if owners[p] == Some(*id) {
                owners[p] = None;
                left -= 1;
            }
        }
    }
    let mut have: BTreeMap<NodeId, usize> = ids.iter().map(|id| (*id, 0)).collect();
    for o in owners.iter().flatten() {
        *have.entry(*o).or_default() += 1;
    }

    // Fill the free partitions in ring order with the neediest node that keeps the window of
    // N consecutive owners distinct; the neediest of all when none can.
    for p in 0..q {
        if owners[p].is_some() {
            continue;
        }
        let near = |id: NodeId| {
            (1..=window)
                .any(|d| owners[(p + d) % q] == Some(id) || owners[(p + q - d) % q] == Some(id))
        };
        let needy = |id: &&NodeId| have[*id] < quota[*id];
        let pick = ids
            .iter()
            .filter(needy)
            .filter(|id| !near(**id))
            .max_by_key(|id| (quota[*id] - have[*id], std::cmp::Reverse(**id)))
            .or_else(|| {
                ids.iter()
                    .filter(needy)
                    .max_by_key(|id| (quota[*id] - have[*id], std::cmp::Reverse(**id)))
            })
            .copied()
            .expect("free partitions never outnumber the nodes' free quota");
        owners[p] = Some(pick);
        *have.get_mut(&pick).expect("pick is a member") += 1;
    }
    let owners: Vec<NodeId> = owners.into_iter().map(|o| o.expect("filled")).collect();
    let epoch = current
        .epoch()
        .checked_add(1)
        .ok_or(PlanError::EpochExhausted)?;
    Ok(Ring::from_owners(epoch, members, owners)?)
}

/// Partitions whose next N owners (this one and the N-1 after it) repeat a node. The ring
/// still places N distinct replicas for them (the walk skips repeats) but those replicas
/// reach further round the ring than the others'.
pub fn window_repeats(ring: &Ring, n: usize) -> Vec<u32> {
    let q = ring.partition_count() as usize;
    let members = ring.members().len();
    let span = n.min(members).min(q);
    (0..q)
        .filter(|&p| {
            let mut seen: Vec<NodeId> = (0..span)
                .map(|d| ring.owner(((p + d) % q) as u32))
                .collect();
            seen.sort();
            seen.dedup();
            seen.len() < span
        })
        .map(|p| p as u32)
        .collect()
}

/// Partitions whose first N replicas are not N distinct nodes (must be none).
pub fn replica_conflicts(ring: &Ring, n: usize) -> Vec<u32> {
    let want = n.min(ring.members().len());
    (0..ring.partition_count())
        .filter(|&p| {
            let r = ring.replicas(p, n);
            let mut s = r.to_vec();
            s.sort();
            s.dedup();
            s.len() < want || r.len() < want
        })
        .collect()
}

/// How many partitions change owner between two rings with the same Q.
pub fn moved(a: &Ring, b: &Ring) -> usize {
    (0..a.partition_count().min(b.partition_count()))
        .filter(|&p| a.owner(p) != b.owner(p))
        .count()
}

/// Whether `target` is a ring an operator's change to `from` makes: epoch one more, every
/// member that stays at the address and name `from` gives it, and owners exactly as [`plan`] assigns
/// them for `target`'s members at replication factor `n`. Since the plan is a pure function,
/// any node can check a ring (or a committed transition) it is handed instead of trusting the
/// node that sent it: a forged epoch, owner table or address fails here.
pub fn is_planned_step(from: &Ring, target: &Ring, n: usize) -> bool {
    if from.epoch().checked_add(1) != Some(target.epoch()) {
        return false;
    }
    let moved = target.members().any(|m| {
        from.member(m.id)
            .is_some_and(|old| old.addr != m.addr || old.host != m.host)
    });
    if moved {
        return false;
    }
    let members: Vec<Member> = target.members().cloned().collect();
    plan(from, &members, n).is_ok_and(|planned| planned == *target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::ring::test_members as members;

    fn check_balanced(ring: &Ring) {
        let q = ring.partition_count() as usize;
        let s = ring.members().len();
        for (id, c) in ring.ownership_counts() {
            assert!(
                c == q / s || c == q / s + 1,
                "{id} owns {c} of {q} over {s}"
            );
        }
    }

    #[test]
    fn growing_three_to_five_moves_only_what_the_new_nodes_take() {
        let old = Ring::balanced(1024, members(1..=3)).unwrap();
        let new = plan(&old, &members(1..=5), 3).unwrap();
        check_balanced(&new);
        assert_eq!(new.epoch(), 2);
        // Nodes 4 and 5 get 204 or 205 each; exactly those move.
        let taken: usize = [4, 5]
            .iter()
            .map(|i| new.ownership_counts()[&NodeId(*i)])
            .sum();
        assert_eq!(moved(&old, &new), taken);
        assert!(replica_conflicts(&new, 3).is_empty());
        assert!(
            window_repeats(&new, 3).len() <= 2,
            "{:?}",
            window_repeats(&new, 3)
        );
    }

    #[test]
    fn shrinking_moves_only_the_leavers_partitions() {
        let old = Ring::balanced(1024, members(1..=5)).unwrap();
        let new = plan(&old, &members([1, 2, 3, 5]), 3).unwrap();
        check_balanced(&new);
        assert_eq!(moved(&old, &new), old.ownership_counts()[&NodeId(4)]);
        assert!(replica_conflicts(&new, 3).is_empty());
    }

    #[test]
    fn fewer_nodes_than_n_is_refused() {
        let old = Ring::balanced(64, members(1..=3)).unwrap();
        assert_eq!(
            plan(&old, &members([1, 2]), 3),
            Err(PlanError::TooFewNodes { nodes: 2, n: 3 })
        );
    }

    #[test]
    fn only_a_planned_ring_passes_as_a_step() {
        let old = Ring::balanced(64, members(1..=3)).unwrap();
        let new = plan(&old, &members(1..=4), 3).unwrap();
        assert!(is_planned_step(&old, &new, 3));
        assert!(!is_planned_step(&new, &old, 3), "backwards");
        assert!(!is_planned_step(&old, &old, 3), "same epoch");
        let owners = |r: &Ring| {
            (0..r.partition_count())
                .map(|p| r.owner(p))
                .collect::<Vec<_>>()
        };
        let list = |r: &Ring| r.members().cloned().collect::<Vec<_>>();
        // An epoch jump (the overflow attack), an owner table of the sender's choosing, a
        // member moved to an address of the sender's choosing.
        let jump = Ring::from_owners(u64::MAX, list(&new), owners(&new)).unwrap();
        assert!(!is_planned_step(&old, &jump, 3));
        let mut grabbed = owners(&new);
        grabbed.iter_mut().take(20).for_each(|o| *o = NodeId(4));
        let grab = Ring::from_owners(2, list(&new), grabbed).unwrap();
        assert!(!is_planned_step(&old, &grab, 3));
        let mut moved_list = list(&new);
        moved_list[0].addr = std::net::SocketAddr::from(([10, 9, 9, 9], 1));
        let moved = Ring::from_owners(2, moved_list, owners(&new)).unwrap();
        assert!(!is_planned_step(&old, &moved, 3));
    }

    #[test]
    fn the_plan_is_deterministic() {
        let old = Ring::balanced(256, members(1..=4)).unwrap();
        let a = plan(&old, &members([1, 2, 3, 4, 9, 7]), 3).unwrap();
        let b = plan(&old, &members([9, 7, 4, 3, 2, 1]), 3).unwrap();
        assert_eq!(a, b);
    }

    proptest! {
        #[test]
        fn plans_are_balanced_minimal_and_distinct(
            q_log in 4u32..11,
            start in 3u32..9,
            leave in proptest::collection::btree_set(1u32..9, 0..3),
            join in 0u32..4,
        ) {
            let q = 1u32 << q_log;
            let old = Ring::balanced(q, members(1..=start)).unwrap();
            let after: Vec<u32> = (1..=start).filter(|i| !leave.contains(i)).chain(100..100 + join).collect();
            match plan(&old, &members(after.clone()), 3) {
                Err(PlanError::TooFewNodes { nodes, .. }) => prop_assert!(nodes < 3),
                Err(e) => prop_assert!(false, "{e}"),
                Ok(new) => {
                    let s = after.len();
                    for (_, c) in new.ownership_counts() {
                        prop_assert!(c == q as usize / s || c == q as usize / s + 1);
                    }
                    prop_assert!(replica_conflicts(&new, 3).is_empty());
                    // Minimal: a partition moves only if its owner leaves or is over quota.
                    let old_counts = old.ownership_counts();
                    let lower_bound: usize = old_counts
                        .iter()
                        .map(|(id, c)| if after.contains(&id.0) { c.saturating_sub(q as usize / s + 1) } else { *c })
                        .sum();
                    let upper_bound: usize = old_counts
                        .iter()
                        .map(|(id, c)| if after.contains(&id.0) { c.saturating_sub(q as usize / s) } else { *c })
                        .sum();
                    let m = moved(&old, &new);
                    prop_assert!(m >= lower_bound && m <= upper_bound, "moved {m}, bounds {lower_bound}..={upper_bound}");
                }
            }
        }
    }
}
