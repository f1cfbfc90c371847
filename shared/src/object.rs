//! A stored object: the sibling set of one key under a dotted version vector.
//!
//! An [`Object`] holds a causal context (`clock`, every write it has seen) and the siblings
//! that are still live: each one a value (or a tombstone) with the [`Dot`] of the write that
//! made it. This is the "DVV set" of Almeida et al., *Scalable and Accurate Causality Tracking
//! for Eventually Consistent Stores* (2014), in the shape Riak 2.0 stores:
//!
//! - [`Object::update`] is what a coordinating replica does with a client's write: drop every
//!   sibling the client's context covers, stamp the new value with the next dot of its own
//!   actor, and add the context to the clock. Writes whose contexts do not cover each other
//!   therefore stay side by side as siblings; nothing is decided by wall clock.
//! - [`Object::merge`] is replica synchronisation. It is commutative, associative and
//!   idempotent (the property tests below state each law), so replicas converge whatever order
//!   repairs, hints and anti-entropy deliver objects in.
//!
//! Deletes are writes of a tombstone sibling, so a delete is ordered against other writes by
//! the same rules and cannot be undone by a replica that missed it.

use crate::dvv::{Dot, VersionVector};
use crate::ids::ActorId;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One live version of a key: a value, or a tombstone when `value` is `None`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sibling {
    /// The write that created this version.
    pub dot: Dot,
    /// The value, or `None` for a delete.
    pub value: Option<Bytes>,
}

/// The sibling set of one key. Siblings are kept sorted by dot, so equal states compare equal.
///
/// Decoding checks the invariants every object built here keeps: a canonical clock, siblings
/// in strictly increasing dot order (each write once), no zero counter, every sibling's dot
/// covered by the clock, and at most [`MAX_DECODED_SIBLINGS`]. An object from the network or
/// the disk that breaks one is refused, never merged.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ObjectParts")]
pub struct Object {
    clock: VersionVector,
    siblings: Vec<Sibling>,
}

/// The most siblings a decoded object may hold (far above any a frame could carry with
/// values; a bound on what a hostile peer can make a node allocate and sort).
pub const MAX_DECODED_SIBLINGS: usize = 65_536;

/// An object as decoded, before its invariants are checked.
#[derive(Deserialize)]
struct ObjectParts {
    clock: VersionVector,
    siblings: Vec<Sibling>,
}

/// Why a decoded object was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectError {
    /// More siblings than [`MAX_DECODED_SIBLINGS`].
    #[error("an object of {siblings} siblings; at most {MAX_DECODED_SIBLINGS} are accepted")]
    TooManySiblings {
        /// Siblings found.
        siblings: usize,
    },
    /// Siblings out of order or a write twice.
    #[error("siblings must be in strictly increasing dot order")]
    Unordered,
    /// A sibling's dot has a zero counter or is not in the object's clock.
    #[error("sibling {dot:?} is not covered by the object's clock")]
    Uncovered {
        /// The sibling's dot.
        dot: Dot,
    },
}

impl TryFrom<ObjectParts> for Object {
    type Error = ObjectError;

    fn try_from(parts: ObjectParts) -> Result<Self, ObjectError> {
        let ObjectParts { clock, siblings } = parts;
        if siblings.len() > MAX_DECODED_SIBLINGS {
            return Err(ObjectError::TooManySiblings {
                siblings: siblings.len(),
            });
        }
        if !siblings.windows(2).all(|w| w[0].dot < w[1].dot) {
            return Err(ObjectError::Unordered);
        }
        if let Some(s) = siblings
            .iter()
            .find(|s| s.dot.counter == 0 || !clock.covers(s.dot))
        {
            return Err(ObjectError::Uncovered { dot: s.dot });
        }
        Ok(Object { clock, siblings })
    }
}

impl Object {
    /// The object of a key never written.
    pub fn new() -> Self {
        Self::default()
    }

    /// The causal context: every write this object has seen. A client writes back with it to
    /// supersede what it read.
    pub fn clock(&self) -> &VersionVector {
        &self.clock
    }

    /// Every live sibling, tombstones included, sorted by dot.
    pub fn siblings(&self) -> &[Sibling] {
        &self.siblings
    }

    /// The live values (tombstones left out), in dot order.
    pub fn values(&self) -> impl Iterator<Item = &Bytes> {
        self.siblings.iter().filter_map(|s| s.value.as_ref())
    }

    /// Whether no live value remains: never written, or every sibling is a tombstone.
    pub fn is_deleted(&self) -> bool {
        self.siblings.iter().all(|s| s.value.is_none())
    }

    /// Whether this object has never seen a write at all.
    pub fn is_empty(&self) -> bool {
        self.clock.is_empty() && self.siblings.is_empty()
    }

    /// Applies a client write at the replica whose storage incarnation is `actor`.
    ///
    /// Siblings covered by `context` are replaced; the others remain as concurrent siblings.
    /// `value: None` writes a tombstone. Returns the new write's dot, or refuses (changing
    /// nothing) when `actor`'s counter for the key cannot grow any further.
    pub fn update(
        &mut self,
        context: &VersionVector,
        value: Option<Bytes>,
        actor: ActorId,
    ) -> Result<Dot, crate::dvv::VersionError> {
        let counter = self
            .clock
            .get(actor)
            .max(context.get(actor))
            .checked_add(1)
            .ok_or(crate::dvv::VersionError::CounterExhausted { actor })?;
        self.siblings.retain(|s| !context.covers(s.dot));
        self.clock.join(context);
        let dot = Dot { actor, counter };
        self.clock.observe(dot);
        // The new dot is the actor's highest, so it sorts after every sibling of that actor;
        // insert it in place to keep the canonical order.
        let at = self.siblings.partition_point(|s| s.dot < dot);
        self.siblings.insert(at, Sibling { dot, value });
        Ok(dot)
    }

    /// The context to hand back to the client whose write made this object: the write was
    /// stamped by `actor` (so its dot is `actor`'s highest) with the client's `context`.
    ///
    /// It is `context` plus the write's own dot, so a follow-up write with it replaces that
    /// write and everything the client had read, **and no sibling the client has not seen**.
    /// This object's own clock would not do: it also covers the siblings written concurrently
    /// that this replica holds, and a follow-up write with it would silently drop them.
    ///
    /// A version vector cannot leave a gap, so when a concurrent sibling has an earlier dot of
    /// the same `actor` (two clients writing through one coordinator), adding the write's dot
    /// would cover it too. Then this returns `context` alone: the follow-up write keeps the
    /// first write as a sibling of itself (visible on the next read) rather than lose the
    /// other client's value.
    pub fn context_after_write(&self, context: &VersionVector, actor: ActorId) -> VersionVector {
        let dot = Dot {
            actor,
            counter: self.clock.get(actor),
        };
        let mut next = context.clone();
        next.observe(dot);
        let covers_unseen = self
            .siblings
            .iter()
            .any(|s| s.dot != dot && !context.covers(s.dot) && next.covers(s.dot));
        if covers_unseen { context.clone() } else { next }
    }

    /// Merges `other` into `self`: the state a replica holds after seeing both.
    ///
    /// A sibling survives if the other side still has it, or has not seen its write.
    pub fn merge(&mut self, other: &Object) {
        if other.is_empty() {
            return;
        }
        let mut out = Vec::with_capacity(self.siblings.len() + other.siblings.len());
        let (a, b) = (&self.siblings, &other.siblings);
        let (mut i, mut j) = (0, 0);
        // Both lists are sorted by dot: walk them together like a merge sort.
        loop {
            let take_a = match (a.get(i), b.get(j)) {
                (None, None) => break,
                (Some(x), Some(y)) if x.dot == y.dot => {
                    out.push(x.clone());
                    i += 1;
                    j += 1;
                    continue;
                }
                (Some(x), Some(y)) => x.dot < y.dot,
                (Some(_), None) => true,
                (None, Some(_)) => false,
            };
            if take_a {
                if !other.clock.covers(a[i].dot) {
                    out.push(a[i].clone());
                }
                i += 1;
            } else {
                if !self.clock.covers(b[j].dot) {
                    out.push(b[j].clone());
                }
                j += 1;
            }
        }
        self.siblings = out;
        self.clock.join(&other.clock);
    }

    /// `a` merged with `b`, leaving both untouched.
    pub fn merged(a: &Object, b: &Object) -> Object {
        let mut out = a.clone();
        out.merge(b);
        out
    }

    /// Whether `self` already contains everything `other` has, i.e. merging `other` into it
    /// would change nothing. A replica whose object is not dominated by the merged read
    /// result is stale.
    pub fn dominates(&self, other: &Object) -> bool {
        self.clock.descends(&other.clock) && Object::merged(self, other) == *self
    }

    /// The total size of the live values and tombstones, in bytes (for limits and metrics).
    pub fn value_bytes(&self) -> usize {
        self.siblings
            .iter()
            .map(|s| s.value.as_ref().map_or(0, Bytes::len))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: ActorId = ActorId(1);
    const B: ActorId = ActorId(2);
    const C: ActorId = ActorId(3);

    /// An object's encoding with whatever clock and siblings, checked or not.
    fn forged(clock: &[(u64, u64)], dots: &[(u64, u64)]) -> Vec<u8> {
        #[derive(Serialize)]
        struct Forged {
            clock: Vec<(ActorId, u64)>,
            siblings: Vec<Sibling>,
        }
        let forged = Forged {
            clock: clock.iter().map(|&(a, c)| (ActorId(a), c)).collect(),
            siblings: dots
                .iter()
                .map(|&(a, c)| Sibling {
                    dot: Dot {
                        actor: ActorId(a),
                        counter: c,
                    },
                    value: Some(Bytes::from_static(b"v")),
                })
                .collect(),
        };
        rmp_serde::to_vec(&forged).expect("encode")
    }

    #[test]
    fn decoding_refuses_objects_that_break_the_invariants() {
        use crate::encoding::from_msgpack;
        let good: Object = from_msgpack(&forged(&[(1, 2), (2, 1)], &[(1, 2), (2, 1)])).unwrap();
        assert_eq!(good.siblings().len(), 2);
        for (clock, dots, what) in [
            (
                &[(1, 2), (2, 1)][..],
                &[(2, 1), (1, 2)][..],
                "siblings out of order",
            ),
            (&[(1, 2)][..], &[(1, 2), (1, 2)][..], "one write twice"),
            (
                &[(1, 1)][..],
                &[(1, 2)][..],
                "a sibling the clock has not seen",
            ),
            (&[(1, 1)][..], &[(1, 0)][..], "a zero counter"),
            (&[(2, 1), (1, 1)][..], &[][..], "an unsorted clock"),
        ] {
            assert!(
                from_msgpack::<Object>(&forged(clock, dots)).is_err(),
                "{what} must be refused"
            );
        }
    }

    #[test]
    fn an_exhausted_counter_refuses_the_write_instead_of_wrapping() {
        let mut o = Object::new();
        let ctx = VersionVector::from_entries([(A, u64::MAX)]);
        let before = o.clone();
        assert_eq!(
            o.update(&ctx, val("v"), A),
            Err(crate::dvv::VersionError::CounterExhausted { actor: A })
        );
        assert_eq!(o, before, "nothing changed");
    }

    fn val(s: &str) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn values(o: &Object) -> Vec<&[u8]> {
        o.values().map(|b| b.as_ref()).collect()
    }

    #[test]
    fn write_with_context_replaces_what_it_read() {
        let mut o = Object::new();
        o.update(&VersionVector::new(), val("v1"), A).unwrap();
        let ctx = o.clock().clone();
        o.update(&ctx, val("v2"), A).unwrap();
        assert_eq!(values(&o), vec![b"v2".as_slice()]);
    }

    #[test]
    fn two_writes_from_the_same_old_context_become_siblings() {
        let mut o = Object::new();
        o.update(&VersionVector::new(), val("v1"), A).unwrap();
        let ctx = o.clock().clone();
        o.update(&ctx, val("x"), A).unwrap();
        o.update(&ctx, val("y"), A).unwrap();
        assert_eq!(values(&o), vec![b"x".as_slice(), b"y".as_slice()]);
        let merged_ctx = o.clock().clone();
        o.update(&merged_ctx, val("xy"), B).unwrap();
        assert_eq!(values(&o), vec![b"xy".as_slice()]);
    }

    #[test]
    fn concurrent_writes_at_two_replicas_merge_to_siblings() {
        let mut base = Object::new();
        base.update(&VersionVector::new(), val("v1"), A).unwrap();
        let ctx = base.clock().clone();
        let (mut at_a, mut at_b) = (base.clone(), base.clone());
        at_a.update(&ctx, val("from-a"), A).unwrap();
        at_b.update(&ctx, val("from-b"), B).unwrap();
        let m = Object::merged(&at_a, &at_b);
        assert_eq!(values(&m), vec![b"from-a".as_slice(), b"from-b".as_slice()]);
        assert!(m.dominates(&at_a) && m.dominates(&at_b));
        assert!(!at_a.dominates(&m));
    }

    #[test]
    fn delete_is_a_tombstone_that_wins_over_what_it_saw() {
        let mut o = Object::new();
        o.update(&VersionVector::new(), val("v1"), A).unwrap();
        let stale = o.clone();
        let ctx = o.clock().clone();
        o.update(&ctx, None, B).unwrap();
        assert!(o.is_deleted());
        assert!(!o.is_empty());
        // A replica that missed the delete comes back with the old value: it stays deleted.
        o.merge(&stale);
        assert!(o.is_deleted());
        let mut back = stale.clone();
        back.merge(&o);
        assert!(back.is_deleted());
    }

    #[test]
    fn counter_never_reuses_a_dot_seen_in_the_context() {
        // The context may know a later dot of this actor than the local object (a replica
        // that missed writes): the new dot must be above both.
        let mut o = Object::new();
        let ctx = VersionVector::from_entries([(A, 7)]);
        let dot = o.update(&ctx, val("v"), A).unwrap();
        assert_eq!(dot.counter, 8);
    }

    // ---- laws, property-tested -------------------------------------------------------

    /// A random history: a few replicas apply client writes (with contexts read from some
    /// replica) and occasionally sync. Returns the replicas' objects.
    fn arb_replicas() -> impl Strategy<Value = Vec<Object>> {
        let op = (0usize..3, 0usize..3, 0u8..4, any::<bool>());
        prop::collection::vec(op, 0..24).prop_map(|ops| {
            let actors = [A, B, C];
            let mut reps = vec![Object::new(), Object::new(), Object::new()];
            for (n, (at, ctx_from, kind, tomb)) in ops.into_iter().enumerate() {
                match kind {
                    0 => {
                        let other = reps[ctx_from].clone();
                        reps[at].merge(&other);
                    }
                    _ => {
                        let ctx = reps[ctx_from].clock().clone();
                        let v = if tomb {
                            None
                        } else {
                            Some(Bytes::from(n.to_string()))
                        };
                        reps[at].update(&ctx, v, actors[at]).unwrap();
                    }
                }
            }
            reps
        })
    }

    proptest! {
        #[test]
        fn merge_is_commutative(r in arb_replicas()) {
            prop_assert_eq!(Object::merged(&r[0], &r[1]), Object::merged(&r[1], &r[0]));
        }

        #[test]
        fn merge_is_associative(r in arb_replicas()) {
            let left = Object::merged(&Object::merged(&r[0], &r[1]), &r[2]);
            let right = Object::merged(&r[0], &Object::merged(&r[1], &r[2]));
            prop_assert_eq!(left, right);
        }

        #[test]
        fn merge_is_idempotent(r in arb_replicas()) {
            prop_assert_eq!(Object::merged(&r[0], &r[0]), r[0].clone());
            let m = Object::merged(&r[0], &r[1]);
            prop_assert_eq!(Object::merged(&m, &r[1]), m.clone());
        }

        #[test]
        fn merge_result_dominates_inputs(r in arb_replicas()) {
            let m = Object::merged(&r[0], &r[1]);
            prop_assert!(m.dominates(&r[0]));
            prop_assert!(m.dominates(&r[1]));
        }

        #[test]
        fn get_context_put_keeps_concurrent_and_drops_covered(r in arb_replicas(), at in 0usize..3) {
            // A client reads replica `at`, then writes with that context somewhere that also
            // holds writes the client never saw.
            let read = r[at].clone();
            let mut target = Object::merged(&r[0], &Object::merged(&r[1], &r[2]));
            let unseen: Vec<Dot> = target.siblings().iter().map(|s| s.dot)
                .filter(|d| !read.clock().covers(*d)).collect();
            let new = target.update(read.clock(), Some(Bytes::from_static(b"new")), ActorId(9)).unwrap();
            let dots: Vec<Dot> = target.siblings().iter().map(|s| s.dot).collect();
            // Every sibling the client saw is gone, every one it did not see is kept.
            for s in read.siblings() {
                prop_assert!(!dots.contains(&s.dot));
            }
            for d in unseen {
                prop_assert!(dots.contains(&d));
            }
            prop_assert!(dots.contains(&new));
        }

        #[test]
        fn a_follow_up_write_with_the_returned_context_loses_nothing_unseen(
            r in arb_replicas(),
            at in 0usize..3,
            by in 0usize..3,
        ) {
            // A client reads replica `at` and writes through coordinator `by`, which may hold
            // siblings the client never saw (some stamped by `by`'s own actor). It then writes
            // again, through any replica, with the context the first write returned.
            let actors = [A, B, C];
            let read = r[at].clone();
            let mut coordinator = r[by].clone();
            let first = coordinator
                .update(read.clock(), Some(Bytes::from_static(b"first")), actors[by])
                .unwrap();
            let next = coordinator.context_after_write(read.clock(), actors[by]);
            prop_assert!(next.descends(read.clock()));
            let mut anywhere = Object::merged(&coordinator, &Object::merged(&r[0], &r[1]));
            anywhere.merge(&r[2]);
            let unseen: Vec<Dot> = anywhere
                .siblings()
                .iter()
                .map(|s| s.dot)
                .filter(|d| *d != first && !read.clock().covers(*d))
                .collect();
            let second = anywhere
                .update(&next, Some(Bytes::from_static(b"second")), actors[at])
                .unwrap();
            let dots: Vec<Dot> = anywhere.siblings().iter().map(|s| s.dot).collect();
            // Every value the client never saw survives its follow-up write.
            for d in unseen {
                prop_assert!(dots.contains(&d), "lost {d:?} the client never saw");
            }
            prop_assert!(dots.contains(&second));
            // The follow-up replaces the first write unless the vector could not name it
            // without covering an unseen sibling of the same actor.
            if next.covers(first) {
                prop_assert!(!dots.contains(&first));
            } else {
                prop_assert_eq!(&next, read.clock());
            }
        }

        #[test]
        fn two_writers_doing_read_modify_write_keep_at_most_two_siblings(
            schedule in prop::collection::vec(any::<bool>(), 1..64),
        ) {
            // 100 read-modify-write cycles each: a writer reads (takes the context), the other
            // may run meanwhile, then it writes back with that context. Which writer moves at
            // each step follows the (cycled) random schedule.
            let mut store = Object::new();
            let mut pending: [Option<VersionVector>; 2] = [None, None];
            let mut done = [0u32; 2];
            let mut step = 0usize;
            while done != [100, 100] {
                let mut w = usize::from(schedule[step % schedule.len()]);
                if done[w] == 100 {
                    w = 1 - w;
                }
                match pending[w].take() {
                    None => pending[w] = Some(store.clock().clone()),
                    Some(ctx) => {
                        store.update(&ctx, Some(Bytes::from(format!("w{w}-{step}"))), ActorId(1)).unwrap();
                        done[w] += 1;
                    }
                }
                prop_assert!(store.siblings().len() <= 2, "{} siblings at step {step}", store.siblings().len());
                step += 1;
            }
        }
    }
}
