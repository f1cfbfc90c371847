use super::*;
use crate::authority::SimulatedOperator;
use proptest::prelude::*;
use rand::{Rng, SeedableRng, rngs::StdRng};

/// The operator who signs every change in these tests.
const OP: SimulatedOperator = SimulatedOperator::new(0x5EED);

fn member(i: u32) -> Member {
    Member::at(
        NodeId(i),
        SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)),
    )
}

fn cluster(n: u32) -> View {
    View::bootstrap(Ring::balanced(64, (1..=n).map(member).collect()).unwrap())
}

/// A view after a random sequence of the operations nodes and operators apply.
fn arb_view() -> impl Strategy<Value = View> {
    proptest::collection::vec((0u8..11, 1u32..7), 0..12).prop_map(|ops| {
        let mut v = cluster(3);
        for (op, i) in ops {
            let id = NodeId(i);
            match op {
                0 => v.announce(id, member(i).addr),
                1 => {
                    let _ = v.stage_join(id);
                }
                2 => {
                    let _ = v.stage_leave(id, 3);
                }
                3 => {
                    let _ = OP.commit(&mut v, 3);
                }
                4 => {
                    v.mark_seen(id);
                }
                5 => {
                    if let Some(t) = v
                        .transition
                        .as_ref()
                        .and_then(|t| t.remaining(&v.ring).first().copied())
                    {
                        v.mark_done(t);
                    }
                    v.mark_hints_handed_over(id);
                }
                6 => {
                    v.complete_if_done();
                }
                7 => {
                    let epoch = v.ring.epoch();
                    v.mark_swept(id, epoch);
                }
                8 => v.set_status(id, Status::Leaving),
                9 => {
                    let _ = v.stage_remove_forced(id, 3);
                }
                _ => {
                    if let Some(claimant) = v.claimant() {
                        let _ = OP.abort(&mut v, claimant, 3);
                    }
                }
            }
        }
        v
    })
}

fn merged(a: &View, b: &View) -> View {
    let mut m = a.clone();
    m.merge(b);
    m
}

proptest! {
    #[test]
    fn merge_is_commutative_associative_idempotent(a in arb_view(), b in arb_view(), c in arb_view()) {
        prop_assert_eq!(merged(&a, &b), merged(&b, &a));
        prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
        prop_assert_eq!(merged(&a, &a), a.clone());
        let ab = merged(&a, &b);
        prop_assert!(!merged(&ab, &a).merge(&b));
    }

    /// A node skips the merge of a peer's view equal to its own (`gossip::merge_from_peer`):
    /// the checked merge of an equal view must change nothing and refuse nothing, whoever
    /// this node and the sender are.
    #[test]
    fn the_checked_merge_of_an_equal_view_is_a_no_op(a in arb_view(), me in 1u32..7, sender in proptest::option::of(1u32..7)) {
        let mut mine = a.clone();
        let (changed, refused) = mine.merge_checked(&a, NodeId(me), sender.map(NodeId), 3, &OP);
        prop_assert!(!changed);
        prop_assert!(refused.is_empty(), "refused {:?}", refused);
        prop_assert_eq!(mine, a);
    }
}

#[test]
fn a_join_runs_from_staging_to_the_new_ring() {
    let mut v = cluster(3);
    v.announce(NodeId(4), member(4).addr);
    assert_eq!(v.status(NodeId(4)), Some(Status::Joining));
    assert_eq!(
        OP.commit(&mut v, 3).unwrap_err(),
        ChangeError::NothingStaged
    );
    v.stage_join(NodeId(4)).unwrap();
    let planned = v.planned_with(3).unwrap();
    assert_eq!(planned.epoch(), 2);
    let t = OP.commit(&mut v, 3).unwrap();
    assert!(v.staged.is_empty());
    assert!(matches!(
        v.stage_join(NodeId(5)),
        Err(ChangeError::UnknownNode { .. })
    ));
    v.announce(NodeId(5), member(5).addr);
    v.stage_join(NodeId(5)).unwrap();
    assert!(matches!(
        OP.commit(&mut v, 3),
        Err(ChangeError::Busy { epoch: 2 })
    ));
    assert!(!v.complete_if_done(), "transfers are outstanding");
    assert!(!v.all_seen());
    for i in 1..=4 {
        v.mark_seen(NodeId(i));
    }
    assert!(v.all_seen());
    for tr in t.transfers(&v.ring) {
        v.mark_done(tr);
    }
    assert!(v.complete_if_done());
    assert_eq!(v.ring.epoch(), 2);
    assert_eq!(v.status(NodeId(4)), Some(Status::Up));
    assert!(v.transition.is_none());
}

#[test]
fn bad_changes_are_refused_and_change_nothing() {
    let mut v = cluster(3);
    let before = v.clone();
    assert!(matches!(
        v.stage_leave(NodeId(2), 3),
        Err(ChangeError::Plan(PlanError::TooFewNodes { nodes: 2, n: 3 }))
    ));
    assert_eq!(v.staged.joins, before.staged.joins);
    assert_eq!(v.staged.leaves, before.staged.leaves);
    assert!(matches!(
        v.stage_join(NodeId(1)),
        Err(ChangeError::BadStatus { .. })
    ));
    assert!(matches!(
        v.stage_leave(NodeId(9), 3),
        Err(ChangeError::UnknownNode { .. })
    ));
    assert_eq!(
        OP.commit(&mut v, 3).unwrap_err(),
        ChangeError::NothingStaged
    );
    assert_eq!(v.ring, before.ring);
}

#[test]
fn a_leave_removes_the_node_when_done() {
    let mut v = cluster(4);
    v.stage_leave(NodeId(4), 3).unwrap();
    let t = OP.commit(&mut v, 3).unwrap();
    assert_eq!(v.status(NodeId(4)), Some(Status::Leaving));
    for tr in t.transfers(&v.ring) {
        v.mark_done(tr);
    }
    assert!(
        !v.complete_if_done(),
        "the leaver has not handed over its hints"
    );
    assert!(v.mark_hints_handed_over(NodeId(4)));
    assert!(v.complete_if_done());
    assert_eq!(v.status(NodeId(4)), Some(Status::Removed));
    assert!(v.ring.member(NodeId(4)).is_none());
    assert!(!v.gossip_peers(NodeId(1)).iter().any(|m| m.id == NodeId(4)));
}

#[test]
fn reaping_waits_until_every_former_owner_swept() {
    let mut v = cluster(4);
    assert_eq!(v.not_swept().len(), 4, "nobody reported the first ring");
    for i in 1..=4 {
        v.mark_swept(NodeId(i), 1);
    }
    assert!(v.not_swept().is_empty());
    v.announce(NodeId(5), member(5).addr);
    assert!(
        v.not_swept().is_empty(),
        "a joining node never owned anything"
    );
    v.stage_leave(NodeId(4), 3).unwrap();
    let t = OP.commit(&mut v, 3).unwrap();
    for tr in t.transfers(&v.ring) {
        v.mark_done(tr);
    }
    v.mark_hints_handed_over(NodeId(4));
    assert!(v.complete_if_done());
    assert_eq!(v.status(NodeId(4)), Some(Status::Removed));
    let mut missing = v.not_swept();
    missing.sort();
    assert_eq!(missing, vec![NodeId(1), NodeId(2), NodeId(3), NodeId(4)]);
    for i in 1..=3 {
        v.mark_swept(NodeId(i), 2);
    }
    assert_eq!(
        v.not_swept(),
        vec![NodeId(4)],
        "the leaver has not dropped its copies"
    );
    v.mark_swept(NodeId(4), 2);
    assert_eq!(
        v.not_swept(),
        vec![NodeId(4)],
        "a removed node must report that it holds nothing"
    );
    v.mark_swept(NodeId(4), SWEPT_FOR_GOOD);
    assert!(v.not_swept().is_empty());
    // Sweeps only grow, and merge by the maximum.
    let mut other = v.clone();
    assert!(!other.mark_swept(NodeId(1), 1));
    other.mark_swept(NodeId(1), 7);
    v.merge(&other);
    assert_eq!(v.swept[&NodeId(1)], 7);
}

#[test]
fn founding_nodes_agree_on_the_cluster_id_and_other_clusters_are_refused() {
    let ring = Ring::balanced(64, (1..=3).map(member).collect()).unwrap();
    let (a, b) = (
        View::found("prod", ring.clone()),
        View::found("prod", ring.clone()),
    );
    assert_eq!(a.cluster, b.cluster, "every founder derives the same id");
    assert!(a.cluster.is_some());
    // Same hosts, another name; same name, other hosts or another partition count.
    let staging = View::found("staging", ring.clone());
    let elsewhere = View::found(
        "prod",
        Ring::balanced(64, (2..=4).map(member).collect()).unwrap(),
    );
    let smaller = View::found(
        "prod",
        Ring::balanced(32, (1..=3).map(member).collect()).unwrap(),
    );
    for other in [&staging, &elsewhere, &smaller] {
        assert_ne!(other.cluster, a.cluster);
        let refused = a.same_cluster(other).unwrap_err();
        assert_eq!(
            (refused.ours, refused.theirs),
            (a.cluster.unwrap(), other.cluster.unwrap())
        );
        let message = refused.to_string();
        assert!(
            message.contains(&a.cluster.unwrap().to_string()),
            "{message}"
        );
        assert!(
            message.contains(&other.cluster.unwrap().to_string()),
            "{message}"
        );
    }
    // A newcomer belongs to any cluster until it merges one, then to that one only.
    let mut fresh = View::newcomer(member(9), 64).unwrap();
    assert_eq!(fresh.cluster, None);
    assert!(fresh.same_cluster(&a).is_ok() && a.same_cluster(&fresh).is_ok());
    fresh.merge(&a);
    assert_eq!(fresh.cluster, a.cluster);
    assert!(fresh.same_cluster(&staging).is_err());
    // The id survives the round trip through disk and wire.
    let decoded = crate::encoding::decode_view(&crate::encoding::encode_view(&fresh)).unwrap();
    assert_eq!(decoded.cluster, a.cluster);
}

#[test]
fn a_forging_peer_cannot_move_the_ring_or_speak_for_this_node() {
    let me = NodeId(1);
    let mine = cluster(3);
    let owners = |r: &Ring| {
        (0..r.partition_count())
            .map(|p| r.owner(p))
            .collect::<Vec<_>>()
    };
    let list = |r: &Ring| r.members().cloned().collect::<Vec<_>>();
    let forged_ring = |epoch: u64, list: Vec<Member>| {
        let mut v = mine.clone();
        v.ring = Ring::from_owners(epoch, list, owners(&mine.ring)).unwrap();
        v
    };
    // The overflow attack, and n3 moved to an address of the sender's choosing.
    let mut moved = list(&mine.ring);
    moved[2].addr = SocketAddr::from(([10, 6, 6, 6], 7003));
    for theirs in [
        forged_ring(u64::MAX, list(&mine.ring)),
        forged_ring(2, moved),
    ] {
        let mut v = mine.clone();
        let (changed, refused) = v.merge_checked(&theirs, me, Some(NodeId(2)), 3, &OP);
        assert!(!changed, "{:?}", v.ring);
        assert!(matches!(refused[..], [Unverified::Ring(..)]), "{refused:?}");
        assert_eq!(v.ring, mine.ring);
        // Members vouching is the gossip layer's call; taking it is explicit.
        assert!(v.clone().adopt_ring(&theirs.ring, None));
    }
    // A transition whose target the planner would not make is refused; a real one is taken.
    let mut joined = mine.clone();
    joined.announce(NodeId(4), member(4).addr);
    let mut real = joined.clone();
    real.stage_join(NodeId(4)).unwrap();
    OP.commit(&mut real, 3).unwrap();
    let mut fake = real.clone();
    let t = fake.transition.as_mut().unwrap();
    t.target = Ring::from_owners(2, list(&t.target), vec![NodeId(4); 64]).unwrap();
    let mut v = joined.clone();
    let (_, refused) = v.merge_checked(&fake, me, Some(NodeId(2)), 3, &OP);
    assert!(
        matches!(&refused[..], [Unverified::Transition { epoch: 2, reason }] if reason.contains("planned step")),
        "{refused:?}"
    );
    assert_eq!(v.transition, None);
    // The planner's own step, but not signed by the operator: unsigned, signed with another
    // key, signed for another n, or a signature lifted from another change.
    let other_key = SimulatedOperator::new(1);
    let step = real.transition.clone().unwrap();
    let mut forgeries = Vec::new();
    for authority in [
        None,
        Some(other_key.sign(real.cluster, &step.target, 3)),
        Some(OP.sign(real.cluster, &step.target, 2)),
        Some(OP.sign(real.cluster, &mine.ring, 3)),
    ] {
        let mut forged = real.clone();
        forged.transition.as_mut().unwrap().authority = authority;
        forgeries.push(forged);
    }
    for forged in &forgeries {
        let mut v = joined.clone();
        let (changed, refused) = v.merge_checked(forged, me, Some(NodeId(2)), 3, &OP);
        assert!(
            matches!(&refused[..], [Unverified::Transition { epoch: 2, .. }]),
            "{refused:?}"
        );
        assert_eq!(
            (v.transition.clone(), v.ring.clone()),
            (None, joined.ring.clone())
        );
        let _ = changed;
    }
    let (_, refused) = v.merge_checked(&real, me, Some(NodeId(2)), 3, &OP);
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(v.transition, real.transition);
    // The ring that transition leads to is taken, as is a planned step from one's own ring
    // (a node that missed the transition but not the ring before it).
    let mut done = real.clone();
    done.ring = step.target.clone();
    done.ring_authority = step.authority.clone();
    done.transition = None;
    for mut v in [v.clone(), joined.clone()] {
        let (_, refused) = v.merge_checked(&done, me, Some(NodeId(2)), 3, &OP);
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(v.ring, done.ring);
        assert_eq!(
            v.ring_authority, step.authority,
            "the signature comes with it"
        );
    }
    // The same ring without the operator's signature, or with a forged one, is not taken
    // by a node that missed the transition (members vouching for it is the gossip layer's).
    for authority in forgeries
        .iter()
        .map(|f| f.transition.clone().unwrap().authority)
    {
        let mut unsigned = done.clone();
        unsigned.ring_authority = authority;
        let mut v = joined.clone();
        let (_, refused) = v.merge_checked(&unsigned, me, Some(NodeId(2)), 3, &OP);
        assert!(matches!(refused[..], [Unverified::Ring(..)]), "{refused:?}");
        assert_eq!(v.ring, joined.ring);
    }
    // A node that holds the transition takes its target, signed or not: it verified the
    // signature when it took the transition, and keeps that one.
    let mut holder = v.clone();
    let mut unsigned = done.clone();
    unsigned.ring_authority = None;
    let (_, refused) = holder.merge_checked(&unsigned, me, Some(NodeId(2)), 3, &OP);
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(
        (holder.ring.clone(), holder.ring_authority.clone()),
        (done.ring.clone(), step.authority.clone())
    );
    // Acknowledgements only this node makes, and this node's address.
    let mut lies = real.clone();
    lies.seen.insert(me, 2);
    lies.swept.insert(me, 9);
    lies.transition
        .as_mut()
        .unwrap()
        .hints_handed_over
        .insert(me);
    let record = lies.members.get_mut(&me).unwrap();
    record.addr = SocketAddr::from(([10, 6, 6, 6], 7001));
    record.version = 40;
    let mut v = real.clone();
    let (_, refused) = v.merge_checked(&lies, me, Some(NodeId(2)), 3, &OP);
    assert_eq!(refused, vec![Unverified::AboutMe], "the address");
    assert_eq!((v.seen.get(&me), v.swept.get(&me)), (None, None));
    assert!(
        !v.transition
            .as_ref()
            .unwrap()
            .hints_handed_over
            .contains(&me)
    );
    let record = &v.members[&me];
    assert_eq!(record.addr, member(1).addr);
    assert!(
        record.version > 40,
        "this node's own record wins back everywhere"
    );
    // What a peer acknowledges for itself is merged; what it says another node
    // acknowledged is not (that node tells this one itself).
    let mut other = real.clone();
    other.mark_seen(NodeId(2));
    let mut v = real.clone();
    assert!(v.merge_checked(&other, me, Some(NodeId(2)), 3, &OP).0);
    assert_eq!(v.seen.get(&NodeId(2)), Some(&2));
    let mut v = real.clone();
    let (changed, _) = v.merge_checked(&other, me, Some(NodeId(3)), 3, &OP);
    assert!(!changed, "n3 cannot say that n2 saw the transition");
    assert_eq!(v.seen.get(&NodeId(2)), None);
    let (changed, _) = v.merge_checked(&other, me, None, 3, &OP);
    assert!(!changed, "nor can an operator or a peer not known yet");
    // A newcomer takes the cluster's ring from a seed (a peer not known yet): it has
    // nothing to check it against.
    let mut fresh = View::newcomer(member(9), 64).unwrap();
    let (_, refused) = fresh.merge_checked(&mine, NodeId(9), None, 3, &OP);
    assert!(refused.is_empty());
    assert_eq!(fresh.ring, mine.ring);
    // Past the founding ring, it needs the operator's signature too.
    for (authority, taken) in [
        (None, false),
        (forgeries[1].transition.clone().unwrap().authority, false),
        (step.authority.clone(), true),
    ] {
        let mut later = done.clone();
        later.ring_authority = authority;
        let mut fresh = View::newcomer(member(9), 64).unwrap();
        let (_, refused) = fresh.merge_checked(&later, NodeId(9), None, 3, &OP);
        assert_eq!(fresh.ring == done.ring, taken, "{refused:?}");
        assert_eq!(refused.is_empty(), taken, "{refused:?}");
    }
}

#[test]
fn a_node_acknowledges_only_its_own_transfers_and_hints() {
    let me = NodeId(1);
    let mut v = cluster(3);
    v.announce(NodeId(4), member(4).addr);
    v.stage_join(NodeId(4)).unwrap();
    OP.commit(&mut v, 3).unwrap();
    let t = v.transition.clone().unwrap();
    let remaining = t.remaining(&v.ring);
    let by = |id: u32| {
        remaining
            .iter()
            .copied()
            .filter(move |tr| tr.from == NodeId(id))
    };
    assert!(
        by(2).next().is_some() && by(3).next().is_some(),
        "{remaining:?}"
    );
    // n2 says every transfer is done and every node handed its hints over.
    let mut claims = v.clone();
    for tr in &remaining {
        claims.mark_done(*tr);
    }
    for id in 1..=4 {
        claims.mark_hints_handed_over(NodeId(id));
    }
    let mut mine = v.clone();
    mine.merge_checked(&claims, me, Some(NodeId(2)), 3, &OP);
    let got = mine.transition.as_ref().unwrap();
    assert_eq!(
        got.done,
        by(2).collect::<BTreeSet<_>>(),
        "only n2's own transfers"
    );
    assert_eq!(
        got.hints_handed_over,
        BTreeSet::from([NodeId(2)]),
        "only n2's own hints"
    );
    // What this node already holds of n3's stays when n2 leaves it out.
    let mut from_n3 = v.clone();
    for tr in by(3) {
        from_n3.mark_done(tr);
    }
    mine.merge_checked(&from_n3, me, Some(NodeId(3)), 3, &OP);
    mine.merge_checked(&v, me, Some(NodeId(2)), 3, &OP);
    assert_eq!(
        mine.transition.as_ref().unwrap().done,
        by(2).chain(by(3)).collect::<BTreeSet<_>>()
    );
    assert!(
        mine.own_acknowledgements(NodeId(3)) != v.own_acknowledgements(NodeId(3)),
        "a node's own acknowledgements tell when it changed them"
    );
}

#[test]
fn newcomers_adopt_the_clusters_ring() {
    let mut fresh = View::newcomer(member(9), 64).unwrap();
    let c = cluster(3);
    assert!(fresh.merge(&c));
    assert_eq!(fresh.ring, c.ring);
    assert_eq!(fresh.status(NodeId(9)), Some(Status::Joining));
    let mut back = c.clone();
    back.merge(&fresh);
    assert_eq!(
        back.ring, c.ring,
        "an epoch-0 ring never replaces the cluster's"
    );
    assert_eq!(back.status(NodeId(9)), Some(Status::Joining));
}

/// Rounds of push-pull gossip (each node exchanges with one random peer per round) until
/// every node holds the view one node changed.
fn rounds_to_converge(nodes: u32, seed: u64) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let base = cluster(nodes);
    let mut views = vec![base.clone(); nodes as usize];
    let mut changed = base;
    changed.announce(NodeId(nodes + 1), member(nodes + 1).addr);
    changed.stage_join(NodeId(nodes + 1)).unwrap();
    OP.commit(&mut changed, 3).unwrap();
    views[0] = changed.clone();
    for round in 1..=100 {
        for i in 0..views.len() {
            let mut j = rng.random_range(0..views.len() - 1);
            if j >= i {
                j += 1;
            }
            let (a, b) = (views[i].clone(), views[j].clone());
            views[i].merge(&b);
            views[j].merge(&a);
        }
        if views.iter().all(|v| v == &changed) {
            return round;
        }
    }
    panic!("no convergence in 100 rounds (seed {seed})");
}

#[test]
fn gossip_converges_in_logarithmic_rounds() {
    let seed: u64 = std::env::var("RINGKV_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let rounds: Vec<usize> = (seed..seed + 20)
        .map(|s| rounds_to_converge(100, s))
        .collect();
    let worst = rounds.iter().copied().max().unwrap_or(0);
    let mean = rounds.iter().sum::<usize>() as f64 / rounds.len() as f64;
    println!("100 nodes: mean {mean:.1}, worst {worst} rounds over 20 seeds from {seed}");
    // Push-pull epidemics with every node starting an exchange each round reach n nodes
    // in O(log n) rounds: about log3(100) + ln ln(100), 5 to 6 for 100 nodes.
    assert!(
        worst <= 10,
        "took {worst} rounds (seeds {seed}..{})",
        seed + 20
    );
    assert!(rounds_to_converge(5, seed) <= 6);
}

#[test]
fn a_node_removed_by_force_is_waited_for_by_nothing_and_copied_from_by_no_one() {
    // Node 1, the lowest id (the claimant until it is removed), is dead for good.
    let mut v = cluster(4);
    let dead = NodeId(1);
    v.stage_remove_forced(dead, 3).unwrap();
    assert!(v.staged.leaves.contains(&dead) && v.staged.forced.contains(&dead));
    let t = OP.commit(&mut v, 3).unwrap();
    assert_eq!(t.forced(), &BTreeSet::from([dead]));
    assert!(v.removed_by_force.contains(&dead));
    assert_ne!(
        v.claimant(),
        Some(dead),
        "a dead claimant would complete nothing"
    );

    let all = crate::handoff::transfers(&v.ring, &t.target, 3);
    let needed = t.transfers(&v.ring);
    assert!(all.iter().any(|tr| tr.from == dead));
    assert!(
        needed.iter().all(|tr| tr.from != dead),
        "nothing is copied from it"
    );
    // Every partition it replicated still reaches its new replicas from the others.
    for tr in all.iter().filter(|tr| tr.from == dead) {
        assert!(
            needed
                .iter()
                .any(|o| o.partition == tr.partition && o.to == tr.to),
            "{tr}: no other sender"
        );
    }
    // Everyone but the dead node acknowledges; nothing waits for it.
    for id in 2..=4 {
        v.mark_seen(NodeId(id));
    }
    assert!(v.all_seen());
    for tr in needed {
        v.mark_done(tr);
    }
    assert!(
        v.transition
            .as_ref()
            .unwrap()
            .hints_pending(&v.ring)
            .is_empty()
    );
    assert!(v.complete_if_done());
    assert!(v.ring.member(dead).is_none());
    assert_eq!(v.status(dead), Some(Status::Removed));
    // Its copies no longer count: reaping waits only for the others' sweeps.
    for id in 2..=4 {
        v.mark_swept(NodeId(id), v.ring.epoch());
    }
    assert_eq!(v.not_swept(), Vec::<NodeId>::new());
}

#[test]
fn a_removal_by_force_that_would_orphan_a_partition_is_refused_and_changes_nothing() {
    let mut v = cluster(6);
    let replicas: Vec<NodeId> = v.ring.replicas(5, 3).to_vec();
    for id in &replicas[..2] {
        v.stage_remove_forced(*id, 3).unwrap();
    }
    let before = v.clone();
    let refused = v.stage_remove_forced(replicas[2], 3).unwrap_err();
    match &refused {
        ChangeError::NoSurvivingReplica { partitions, .. } => assert!(partitions.contains(&5)),
        other => panic!("{other}"),
    }
    assert!(refused.to_string().contains("would be lost"), "{refused}");
    assert_eq!(v, before);
    // A node that owns nothing cannot be removed by force; a normal leave undoes the force.
    assert!(v.stage_remove_forced(NodeId(9), 3).is_err());
    v.stage_leave(replicas[0], 3).unwrap();
    assert!(!v.staged.forced.contains(&replicas[0]));
    assert!(v.staged.leaves.contains(&replicas[0]));
}

#[test]
fn removals_by_force_count_only_as_the_operator_signed_them() {
    let mut v = cluster(4);
    v.stage_remove_forced(NodeId(4), 3).unwrap();
    let target = v.planned_with(3).unwrap();
    // Signed without the removal by force: the staged change is not what was signed.
    let plain = OP.sign(v.cluster, &target, 3);
    assert_eq!(
        v.clone().commit(3, &target, plain).unwrap_err(),
        ChangeError::PlanChanged
    );

    // A peer that gossips a healthy node as removed by force, or a transition whose signed
    // set it altered, changes nothing here.
    let mine = cluster(4);
    let mut forged = mine.clone();
    forged.removed_by_force.insert(NodeId(2));
    let mut taken = mine.clone();
    taken.merge_checked(&forged, NodeId(3), Some(NodeId(1)), 3, &OP);
    assert!(taken.removed_by_force.is_empty());

    let mut committed = mine.clone();
    committed.stage_remove_forced(NodeId(4), 3).unwrap();
    OP.commit(&mut committed, 3).unwrap();
    let mut altered = committed.clone();
    let a = altered
        .transition
        .as_mut()
        .unwrap()
        .authority
        .as_mut()
        .unwrap();
    a.forced = BTreeSet::from([NodeId(2)]);
    let mut here = mine.clone();
    let (_, refused) = here.merge_checked(&altered, NodeId(3), Some(NodeId(1)), 3, &OP);
    assert!(here.transition.is_none(), "{refused:?}");
    assert!(here.removed_by_force.is_empty());
    // The genuine one is taken, with who it removes.
    let mut here = mine.clone();
    here.merge_checked(&committed, NodeId(3), Some(NodeId(1)), 3, &OP);
    assert!(here.transition.is_some());
    assert_eq!(here.removed_by_force, BTreeSet::from([NodeId(4)]));
}

#[test]
fn an_aborted_join_restores_the_owners_one_epoch_on_and_a_new_change_starts_afresh() {
    let mut v = cluster(3);
    let before = v.ring.clone();
    v.announce(NodeId(4), member(4).addr);
    v.stage_join(NodeId(4)).unwrap();
    OP.commit(&mut v, 3).unwrap();
    for id in 1..=4 {
        v.mark_seen(NodeId(id));
    }
    let some = v.transition.as_ref().unwrap().remaining(&v.ring)[0];
    v.mark_done(some);

    // Only the claimant aborts; the others are told whom to ask.
    assert_eq!(v.claimant(), Some(NodeId(1)));
    let target = v.abort_target(3).unwrap();
    let signed = OP.sign(v.cluster, &target, 3);
    assert_eq!(
        v.clone().abort(NodeId(2), 3, &target, signed.clone()),
        Err(ChangeError::NotClaimant {
            claimant: NodeId(1)
        })
    );
    // Signed for another ring, or not the one this view leads to: refused.
    let wrong = OP.sign(v.cluster, &before, 3);
    assert_eq!(
        v.clone().abort(NodeId(1), 3, &before, wrong),
        Err(ChangeError::PlanChanged)
    );
    let peer = v.clone();
    v.abort(NodeId(1), 3, &target, signed).unwrap();
    assert!(v.transition.is_none());
    assert_eq!(v.ring.epoch(), 2);
    for p in 0..64 {
        assert_eq!(v.ring.owner(p), before.owner(p), "partition {p} moved");
    }
    assert_eq!(v.status(NodeId(4)), Some(Status::Joining));
    assert_eq!(v.abort_target(3), Err(ChangeError::NothingToAbort));

    // A peer still holding the transition takes the aborted ring (a signed planned step) and
    // drops the transition; a forged abort is not taken.
    let mut other = peer.clone();
    let (_, refused) = other.merge_checked(&v, NodeId(2), Some(NodeId(1)), 3, &OP);
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(other.ring, v.ring);
    assert!(other.transition.is_none());
    let mut forged = v.clone();
    forged.ring_authority = Some(SimulatedOperator::new(1).sign(v.cluster, &v.ring, 3));
    let mut fooled = peer.clone();
    fooled.merge_checked(&forged, NodeId(2), Some(NodeId(1)), 3, &OP);
    assert_eq!(fooled.ring.epoch(), 1);
    assert!(fooled.transition.is_some());

    // The join again: a new transition to epoch 3 that waits for fresh acknowledgements.
    v.stage_join(NodeId(4)).unwrap();
    let t = OP.commit(&mut v, 3).unwrap();
    assert_eq!(t.target.epoch(), 3);
    assert!(
        !v.all_seen(),
        "acknowledgements of the aborted change do not count"
    );
}

#[test]
fn an_aborted_leave_brings_the_leaver_back_and_a_forced_removal_cannot_be_aborted() {
    let mut v = cluster(4);
    v.stage_leave(NodeId(4), 3).unwrap();
    OP.commit(&mut v, 3).unwrap();
    assert_eq!(v.status(NodeId(4)), Some(Status::Leaving));
    OP.abort(&mut v, NodeId(1), 3).unwrap();
    assert_eq!(v.status(NodeId(4)), Some(Status::Up));
    assert!(v.ring.member(NodeId(4)).is_some());

    v.stage_remove_forced(NodeId(4), 3).unwrap();
    OP.commit(&mut v, 3).unwrap();
    assert!(matches!(
        v.abort_target(3),
        Err(ChangeError::AbortForced { .. })
    ));
    assert_eq!(cluster(3).abort_target(3), Err(ChangeError::NothingToAbort));
}

#[test]
fn a_node_that_starts_again_elsewhere_under_its_name_tells_the_cluster_and_only_it_can() {
    let name = |n: &str| Some(crate::HostName::parse(n).unwrap());
    let ring = Ring::balanced(
        16,
        (1..=3)
            .map(|i| Member {
                host: name(&format!("n{i}.test:7001")),
                ..member(i)
            })
            .collect(),
    )
    .unwrap();
    let cluster = View::bootstrap(ring);
    let three = NodeId(3);
    // Node 3 starts at another address, under the same name.
    let mut moved = cluster.clone();
    let now = Member {
        id: three,
        addr: SocketAddr::from(([10, 0, 0, 3], 7001)),
        host: name("n3.test:7001"),
    };
    assert!(moved.announce_member(&now));
    assert!(
        !moved.announce_member(&now),
        "announcing it again changes nothing"
    );
    let mut peer = cluster.clone();
    let (_, refused) = peer.merge_checked(&moved, NodeId(1), Some(three), 3, &OP);
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(peer.members[&three].member(three), now);
    // The ring keeps what the operator signed; peers dial the name.
    assert_eq!(peer.ring.member(three), cluster.ring.member(three));
    // A peer cannot give node 3 another name: node 3 puts its own back, one version higher.
    let mut lies = peer.clone();
    let record = lies.members.get_mut(&three).unwrap();
    record.host = name("evil.test:7001");
    record.version += 5;
    let (_, refused) = moved.merge_checked(&lies, three, Some(NodeId(2)), 3, &OP);
    assert_eq!(refused, vec![Unverified::AboutMe]);
    assert_eq!(moved.members[&three].host, now.host);
}
