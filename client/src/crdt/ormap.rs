//! [`ORMap`]: an observed-remove map of mergeable values.
//!
//! In memory a map is a vector of entries sorted by key, and each entry's dots a sorted vector:
//! a decode, a clone and a merge are then one pass over contiguous memory, where a `BTreeMap`
//! of `BTreeSet`s cost a tree node per key (a modify decodes and merges the whole value several
//! times). On the wire both encode as the map and sets they stand for, byte for byte as before
//! (a test holds the bytes of the earlier representation).

use super::{ActorId, Merge, Reset};
use ringkv_shared::{Dot, VersionVector};
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::marker::PhantomData;

/// The dots keeping one key alive: sorted, without repeats (a set of dots). Almost always one
/// dot (the last update), held without an allocation. Encoded as a sequence, as a set is; a
/// decoded sequence is sorted and its repeats dropped, as decoding it into a set would.
#[derive(Clone, Debug)]
enum Dots {
    One(Dot),
    Many(Vec<Dot>),
}

impl Default for Dots {
    fn default() -> Self {
        Dots::Many(Vec::new())
    }
}

impl PartialEq for Dots {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Dots {}

impl Dots {
    fn as_slice(&self) -> &[Dot] {
        match self {
            Dots::One(dot) => std::slice::from_ref(dot),
            Dots::Many(dots) => dots,
        }
    }

    fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    fn contains(&self, dot: &Dot) -> bool {
        self.as_slice().binary_search(dot).is_ok()
    }

    fn iter(&self) -> std::slice::Iter<'_, Dot> {
        self.as_slice().iter()
    }
}

/// Collects dots in any order, repeats dropped; one dot (the usual case) allocates nothing.
impl FromIterator<Dot> for Dots {
    fn from_iter<I: IntoIterator<Item = Dot>>(dots: I) -> Self {
        let mut dots = dots.into_iter();
        let Some(first) = dots.next() else {
            return Dots::default();
        };
        let Some(second) = dots.next() else {
            return Dots::One(first);
        };
        let mut dots: Vec<Dot> = [first, second].into_iter().chain(dots).collect();
        dots.sort_unstable();
        dots.dedup();
        match dots[..] {
            [one] => Dots::One(one),
            _ => Dots::Many(dots),
        }
    }
}

impl Serialize for Dots {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.as_slice())
    }
}

impl<'de> Deserialize<'de> for Dots {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DotsVisitor;

        impl<'de> Visitor<'de> for DotsVisitor {
            type Value = Dots;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sequence of dots")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Dots, A::Error> {
                let mut failed = None;
                let dots = std::iter::from_fn(|| {
                    seq.next_element().unwrap_or_else(|e| {
                        failed = Some(e);
                        None
                    })
                })
                .collect();
                failed.map_or(Ok(dots), Err)
            }
        }

        deserializer.deserialize_seq(DotsVisitor)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Entry<V> {
    /// The updates that keep this key present; empty once removed.
    dots: Dots,
    /// The value, kept after a remove (reset) so that a concurrent update merges onto it.
    value: V,
}

/// The entries of a map, sorted by key, each key once. Encoded as a map; a decoded map whose
/// keys are out of order is sorted, and of a repeated key the last entry is kept, as decoding
/// it into a `BTreeMap` would.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entries<K, V>(Vec<(K, Entry<V>)>);

impl<K, V> Default for Entries<K, V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<K: Ord, V> Entries<K, V> {
    fn find(&self, key: &K) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.cmp(key))
    }

    /// Sorts decoded entries by key; of a repeated key, the last one stays.
    fn from_decoded(mut entries: Vec<(K, Entry<V>)>) -> Self {
        if entries.windows(2).all(|w| w[0].0 < w[1].0) {
            return Self(entries);
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(K, Entry<V>)> = Vec::with_capacity(entries.len());
        for (k, e) in entries {
            match out.last_mut() {
                Some(last) if last.0 == k => last.1 = e,
                _ => out.push((k, e)),
            }
        }
        Self(out)
    }
}

impl<K: Serialize, V: Serialize> Serialize for Entries<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, e)| (k, e)))
    }
}

impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>> Deserialize<'de> for Entries<K, V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor<K, V>(PhantomData<(K, V)>);

        impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>> Visitor<'de> for EntriesVisitor<K, V> {
            type Value = Entries<K, V>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of entries")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                // The length comes from the input: trust it only so far.
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
                while let Some(pair) = map.next_entry()? {
                    entries.push(pair);
                }
                Ok(Entries::from_decoded(entries))
            }
        }

        deserializer.deserialize_map(EntriesVisitor(PhantomData))
    }
}

/// An observed-remove map: a key is present while some update of it has not been observed by a
/// remove; its value merges like `V` does.
///
/// Add-wins: an update concurrent with a remove of the same key keeps the key. Removing resets
/// the value ([`Reset`]), so what the remover saw is gone even when a concurrent update keeps
/// the key alive: in a cart, removing "3 books" while another session adds "1 book" leaves one
/// book, not four. Removed keys keep their (reset) value in the state, as the price of that
/// guarantee.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(
    serialize = "K: Serialize + Ord, V: Serialize",
    deserialize = "K: Deserialize<'de> + Ord, V: Deserialize<'de>"
))]
pub struct ORMap<K, V> {
    clock: VersionVector,
    entries: Entries<K, V>,
}

impl<K: Ord, V> Default for ORMap<K, V> {
    fn default() -> Self {
        Self {
            clock: VersionVector::new(),
            entries: Entries::default(),
        }
    }
}

impl<K: Ord + Clone, V: Merge + Reset + Default> ORMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    fn next_dot(&mut self, actor: ActorId) -> Dot {
        let dot = Dot {
            actor,
            counter: self.clock.get(actor) + 1,
        };
        self.clock.observe(dot);
        dot
    }

    /// Updates the value of `key` as `actor` (inserting it if absent) with `f`.
    pub fn update(&mut self, key: K, actor: ActorId, f: impl FnOnce(&mut V)) {
        let dot = self.next_dot(actor);
        let at = match self.entries.find(&key) {
            Ok(at) => at,
            Err(at) => {
                let fresh = Entry {
                    dots: Dots::default(),
                    value: V::default(),
                };
                self.entries.0.insert(at, (key, fresh));
                at
            }
        };
        let entry = &mut self.entries.0[at].1;
        // The new dot supersedes every dot of this key we have observed.
        entry.dots = Dots::One(dot);
        f(&mut entry.value);
    }

    /// Removes `key` as `actor`: what this replica has observed of it is removed and its value
    /// reset. Returns whether the key was present.
    pub fn remove(&mut self, key: &K, actor: ActorId) -> bool {
        match self.entries.find(key) {
            Ok(at) => remove_entry(&mut self.entries.0[at].1, actor),
            Err(_) => false,
        }
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &K) -> Option<&V> {
        let at = self.entries.find(key).ok()?;
        let entry = &self.entries.0[at].1;
        (!entry.dots.is_empty()).then_some(&entry.value)
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    /// The present keys and values, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries
            .0
            .iter()
            .filter(|(_, e)| !e.dots.is_empty())
            .map(|(k, e)| (k, &e.value))
    }

    /// How many keys are present.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// How many actors the map's causal context holds an entry for (its metadata).
    pub fn actors(&self) -> usize {
        self.clock.entries().len()
    }

    /// Whether no key is present.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Removes one entry as `actor` (its dots cleared, its value reset); whether it was present.
fn remove_entry<V: Reset>(entry: &mut Entry<V>, actor: ActorId) -> bool {
    if entry.dots.is_empty() {
        return false;
    }
    entry.dots = Dots::default();
    entry.value.reset(actor);
    true
}

/// One key's entry after a merge: `mine` (this side's, under `my_clock`) with `theirs` (under
/// `their_clock`). A dot survives if both sides have it, or the other side never saw it; the
/// values merge.
fn merge_entry<V: Merge + Default>(
    mine: Option<Entry<V>>,
    theirs: Option<&Entry<V>>,
    my_clock: &VersionVector,
    their_clock: &VersionVector,
) -> Entry<V> {
    let empty = Dots::default();
    let (md, td) = (
        mine.as_ref().map_or(&empty, |e| &e.dots),
        theirs.map_or(&empty, |e| &e.dots),
    );
    let dots: Dots = md
        .iter()
        .filter(|d| td.contains(d) || !their_clock.covers(**d))
        .chain(td.iter().filter(|d| !my_clock.covers(**d)))
        .copied()
        .collect();
    let mut value = mine.map(|e| e.value).unwrap_or_default();
    if let Some(t) = theirs {
        value.merge(&t.value);
    }
    Entry { dots, value }
}

impl<K: Ord + Clone, V: Merge + Clone + Default> Merge for ORMap<K, V> {
    /// One pass over both maps in key order (they are sorted): this side's keys and values
    /// are moved, not cloned, into a new sorted vector. A modify merges every sibling and the
    /// client's lane into the read value, so this runs several times per update of a
    /// mergeable value, over all of its keys.
    fn merge(&mut self, other: &Self) {
        use std::cmp::Ordering;
        let mine = std::mem::take(&mut self.entries.0);
        let mut merged: Vec<(K, Entry<V>)> =
            Vec::with_capacity(mine.len().max(other.entries.0.len()));
        let mut a = mine.into_iter().peekable();
        let mut b = other.entries.0.iter().peekable();
        loop {
            let order = match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((ka, _)), Some((kb, _))) => ka.cmp(kb),
            };
            let (key, mine, theirs) = match order {
                Ordering::Less => match a.next() {
                    Some((k, e)) => (k, Some(e), None),
                    None => break,
                },
                Ordering::Greater => match b.next() {
                    Some((k, e)) => (k.clone(), None, Some(e)),
                    None => break,
                },
                Ordering::Equal => match (a.next(), b.next()) {
                    (Some((k, e)), Some((_, t))) => (k, Some(e), Some(t)),
                    _ => break,
                },
            };
            merged.push((key, merge_entry(mine, theirs, &self.clock, &other.clock)));
        }
        self.entries = Entries(merged);
        self.clock.join(&other.clock);
    }

    /// The clock is canonical, every live dot is in it, and every value is valid.
    fn validate(&self) -> Result<(), String> {
        if !self.clock.is_canonical() {
            return Err("map clock is not sorted, repeats an actor or holds a zero".into());
        }
        for (_, e) in &self.entries.0 {
            if let Some(d) = e.dots.iter().find(|d| !self.clock.covers(**d)) {
                return Err(format!(
                    "map entry kept alive by ({}, {}), which its clock has not seen",
                    d.actor, d.counter
                ));
            }
            e.value.validate()?;
        }
        Ok(())
    }
}

impl<K: Ord + Clone, V: Merge + Reset + Clone + Default> Reset for ORMap<K, V> {
    fn reset(&mut self, actor: ActorId) {
        for (_, entry) in &mut self.entries.0 {
            remove_entry(entry, actor);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::{ORSet, PNCounter};
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// The merge as first written (every key collected, looked up, cloned and inserted, in a
    /// `BTreeMap` of `BTreeSet`s): the one-pass merge must give exactly what it gave.
    fn reference_merge<K: Ord + Clone, V: Merge + Clone + Default>(
        me: &mut ORMap<K, V>,
        other: &ORMap<K, V>,
    ) {
        let view = |m: &ORMap<K, V>| -> BTreeMap<K, (BTreeSet<Dot>, V)> {
            m.entries
                .0
                .iter()
                .map(|(k, e)| {
                    (
                        k.clone(),
                        (e.dots.iter().copied().collect(), e.value.clone()),
                    )
                })
                .collect()
        };
        let (mut mine_all, theirs_all) = (view(me), view(other));
        let keys: BTreeSet<K> = mine_all.keys().chain(theirs_all.keys()).cloned().collect();
        for k in keys {
            let mine = mine_all.get(&k);
            let theirs = theirs_all.get(&k);
            let empty = BTreeSet::new();
            let (md, td) = (
                mine.map_or(&empty, |e| &e.0),
                theirs.map_or(&empty, |e| &e.0),
            );
            let dots: BTreeSet<Dot> = md
                .iter()
                .filter(|d| td.contains(d) || !other.clock.covers(**d))
                .chain(td.iter().filter(|d| !me.clock.covers(**d)))
                .copied()
                .collect();
            let mut value = mine.map(|e| e.1.clone()).unwrap_or_default();
            if let Some(t) = theirs {
                value.merge(&t.1);
            }
            mine_all.insert(k, (dots, value));
        }
        me.entries = Entries(
            mine_all
                .into_iter()
                .map(|(k, (dots, value))| {
                    let dots = dots.into_iter().collect();
                    (k, Entry { dots, value })
                })
                .collect(),
        );
        me.clock.join(&other.clock);
    }

    /// A map built by `ops` as one of three actors: `(actor, key, amount)`, a negative amount
    /// removing the key, then merged with what the other replicas built.
    fn build(ops: &[(u8, u8, i8)], replicas: usize) -> Vec<ORMap<u8, PNCounter>> {
        let mut maps = vec![ORMap::<u8, PNCounter>::new(); replicas];
        for (i, &(actor, key, amount)) in ops.iter().enumerate() {
            let at = usize::from(actor) % replicas;
            let id = ActorId(u64::from(actor % 3) + 1);
            if amount < 0 {
                maps[at].remove(&key, id);
            } else {
                maps[at].update(key, id, |c| c.add(id, i64::from(amount)));
            }
            if i % 5 == 4 {
                let from = maps[(at + 1) % replicas].clone();
                reference_merge(&mut maps[at], &from);
            }
        }
        maps
    }

    proptest! {
        #[test]
        fn the_one_pass_merge_equals_the_reference(
            ops in prop::collection::vec((0u8..6, 0u8..12, -2i8..5), 0..60),
        ) {
            let maps = build(&ops, 3);
            for a in &maps {
                for b in &maps {
                    let mut fast = a.clone();
                    fast.merge(b);
                    let mut slow = a.clone();
                    reference_merge(&mut slow, b);
                    prop_assert_eq!(fast, slow);
                }
            }
        }
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Bytes written by the representation before this one (a `BTreeMap` of entries whose
    /// dots were a `BTreeSet`): a cart with a key two actors updated concurrently (two dots),
    /// a removed key, and a set with a removed element. They must decode to the same state and
    /// encode back to the same bytes.
    #[test]
    fn values_encode_exactly_as_the_tree_representation_did() {
        let mut a = ORMap::<String, PNCounter>::new();
        let mut b = ORMap::<String, PNCounter>::new();
        a.update("book".into(), ActorId(7), |c| c.add(ActorId(7), 3));
        b.update("book".into(), ActorId(9), |c| c.add(ActorId(9), 1));
        b.update("apple".into(), ActorId(9), |c| c.add(ActorId(9), 2));
        a.update("pen".into(), ActorId(7), |c| c.add(ActorId(7), 1));
        a.remove(&"pen".to_string(), ActorId(7));
        a.merge(&b);
        let cart = hex(
            "01929292070292090283a56170706c65929192090294810902808080a4626f6f6b9292920701920901948207030901808080a370656e929094808081070180",
        );
        assert_eq!(crate::codec::encode_value(&a).unwrap().as_ref(), &cart[..]);
        assert_eq!(
            crate::codec::decode_value::<ORMap<String, PNCounter>>(&cart).unwrap(),
            a
        );

        let mut s = ORSet::<String>::new();
        let mut t = ORSet::<String>::new();
        s.add("x".into(), ActorId(1));
        t.add("x".into(), ActorId(2));
        s.add("y".into(), ActorId(1));
        s.remove(&"y".to_string(), ActorId(1));
        s.merge(&t);
        let set = hex("01929292010292020182a178929292010192020190a179929090");
        assert_eq!(crate::codec::encode_value(&s).unwrap().as_ref(), &set[..]);
        assert_eq!(
            crate::codec::decode_value::<ORSet<String>>(&set).unwrap(),
            s
        );
    }

    /// A map as any peer may encode it: keys in any order and repeated, dots in any order and
    /// repeated.
    struct AnyOrder(Vec<(u8, (Vec<Dot>, crate::crdt::Unit))>);

    impl Serialize for AnyOrder {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
        }
    }

    #[derive(Serialize)]
    struct AnyMap {
        clock: VersionVector,
        entries: AnyOrder,
    }

    /// How the tree representation decoded the same bytes.
    #[derive(Deserialize)]
    struct TreeEntry {
        dots: BTreeSet<Dot>,
        #[allow(dead_code)]
        value: crate::crdt::Unit,
    }

    #[derive(Deserialize)]
    struct TreeMap {
        #[allow(dead_code)]
        clock: VersionVector,
        entries: BTreeMap<u8, TreeEntry>,
    }

    proptest! {
        /// Decoding sorts keys and dots and keeps the last of a repeated key, as decoding into
        /// a `BTreeMap` of `BTreeSet`s did, so a hostile or old encoder gets the same state.
        #[test]
        fn out_of_order_and_repeated_keys_and_dots_decode_as_the_trees_did(
            pairs in prop::collection::vec(
                (0u8..8, prop::collection::vec((1u64..4, 1u64..4), 0..4)),
                0..12,
            ),
        ) {
            let pairs: Vec<(u8, (Vec<Dot>, crate::crdt::Unit))> = pairs
                .into_iter()
                .map(|(k, dots)| {
                    let dots = dots
                        .into_iter()
                        .map(|(a, c)| Dot { actor: ActorId(a), counter: c })
                        .collect();
                    (k, (dots, crate::crdt::Unit))
                })
                .collect();
            let bytes = rmp_serde::to_vec(&AnyMap {
                clock: VersionVector::new(),
                entries: AnyOrder(pairs),
            })
            .unwrap();
            let ours: ORMap<u8, crate::crdt::Unit> = rmp_serde::from_slice(&bytes).unwrap();
            let tree: TreeMap = rmp_serde::from_slice(&bytes).unwrap();
            let ours: Vec<(u8, Vec<Dot>)> =
                ours.entries.0.iter().map(|(k, e)| (*k, e.dots.as_slice().to_vec())).collect();
            let tree: Vec<(u8, Vec<Dot>)> = tree
                .entries
                .into_iter()
                .map(|(k, e)| (k, e.dots.into_iter().collect()))
                .collect();
            prop_assert_eq!(ours, tree);
        }
    }
}
