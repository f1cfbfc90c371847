//! The laws, property-tested on random histories of three replicas.

use super::*;
use proptest::prelude::*;

const ACTORS: [ActorId; 3] = [ActorId(1), ActorId(2), ActorId(3)];

#[derive(Clone, Debug)]
enum Op {
    Add { at: usize, item: u8, qty: i8 },
    Remove { at: usize, item: u8 },
    Sync { from: usize, to: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..3, 0u8..6, -3i8..6).prop_map(|(at, item, qty)| Op::Add { at, item, qty }),
        1 => (0usize..3, 0u8..6).prop_map(|(at, item)| Op::Remove { at, item }),
        2 => (0usize..3, 0usize..3).prop_map(|(from, to)| Op::Sync { from, to }),
    ]
}

type Cart = ORMap<u8, PNCounter>;

/// Replays a history on three replicas of a cart, a set and a counter.
fn replay(ops: &[Op]) -> (Vec<Cart>, Vec<ORSet<u8>>, Vec<PNCounter>) {
    let mut carts = vec![Cart::new(); 3];
    let mut sets = vec![ORSet::new(); 3];
    let mut counters = vec![PNCounter::new(); 3];
    for op in ops {
        match *op {
            Op::Add { at, item, qty } => {
                carts[at].update(item, ACTORS[at], |c| c.add(ACTORS[at], qty.into()));
                sets[at].add(item, ACTORS[at]);
                counters[at].add(ACTORS[at], qty.into());
            }
            Op::Remove { at, item } => {
                carts[at].remove(&item, ACTORS[at]);
                sets[at].remove(&item, ACTORS[at]);
            }
            Op::Sync { from, to } => {
                let (c, s, n) = (
                    carts[from].clone(),
                    sets[from].clone(),
                    counters[from].clone(),
                );
                carts[to].merge(&c);
                sets[to].merge(&s);
                counters[to].merge(&n);
            }
        }
    }
    (carts, sets, counters)
}

fn merged<T: Merge + Clone>(a: &T, b: &T) -> T {
    let mut out = a.clone();
    out.merge(b);
    out
}

fn check_laws<T: Merge + Clone + PartialEq + std::fmt::Debug>(
    r: &[T],
) -> Result<(), TestCaseError> {
    for x in r {
        prop_assert_eq!(x.validate(), Ok(()), "every reachable state is valid");
    }
    prop_assert_eq!(merged(&r[0], &r[1]), merged(&r[1], &r[0]), "commutative");
    prop_assert_eq!(
        merged(&merged(&r[0], &r[1]), &r[2]),
        merged(&r[0], &merged(&r[1], &r[2])),
        "associative"
    );
    prop_assert_eq!(merged(&r[0], &r[0]), r[0].clone(), "idempotent");
    let m = merged(&r[0], &r[1]);
    prop_assert_eq!(merged(&m, &r[1]), m.clone(), "idempotent after merge");
    Ok(())
}

proptest! {
    #[test]
    fn cart_merge_laws(ops in prop::collection::vec(op(), 0..40)) {
        check_laws(&replay(&ops).0)?;
    }

    #[test]
    fn set_merge_laws(ops in prop::collection::vec(op(), 0..40)) {
        check_laws(&replay(&ops).1)?;
    }

    #[test]
    fn counter_merge_laws(ops in prop::collection::vec(op(), 0..40)) {
        check_laws(&replay(&ops).2)?;
    }

    /// An add concurrent with a remove of the same item survives the merge.
    #[test]
    fn a_concurrent_add_survives_a_remove(ops in prop::collection::vec(op(), 0..20), item in 0u8..6) {
        let (_, mut sets, _) = replay(&ops);
        // Replica 1 learns everything replica 0 has, then each side acts without the other.
        let s0 = sets[0].clone();
        sets[1].merge(&s0);
        sets[0].add(item, ACTORS[0]);
        sets[1].remove(&item, ACTORS[1]);
        let m = merged(&sets[0], &sets[1]);
        prop_assert!(m.contains(&item));
    }

    /// A remove of an item the remover has seen stays removed when merged with what it saw.
    #[test]
    fn a_remove_of_what_was_seen_stays_removed(ops in prop::collection::vec(op(), 0..20), item in 0u8..6) {
        let (mut carts, _, _) = replay(&ops);
        carts[0].update(item, ACTORS[0], |c| c.add(ACTORS[0], 2));
        let seen = carts[0].clone();
        carts[1].merge(&seen);
        carts[1].remove(&item, ACTORS[1]);
        let m = merged(&seen, &carts[1]);
        prop_assert!(!m.contains(&item));
        let m = merged(&carts[1], &seen);
        prop_assert!(!m.contains(&item));
    }
}

#[test]
fn removing_from_a_cart_while_someone_adds_keeps_only_the_new_quantity() {
    let (a, b) = (ACTORS[0], ACTORS[1]);
    let mut left = Cart::new();
    left.update(7, a, |c| c.add(a, 3)); // 3 books
    let mut right = left.clone();
    left.remove(&7, a); // one session removes the books it saw...
    right.update(7, b, |c| c.add(b, 1)); // ...while another adds one more
    let m = merged(&left, &right);
    assert_eq!(
        m.get(&7).map(PNCounter::value),
        Some(1),
        "the add survives, the removed 3 stay removed"
    );
    assert_eq!(merged(&right, &left), m);
}
