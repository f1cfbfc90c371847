//! [`ORMap`]: an observed-remove map of mergeable values.

use super::{ActorId, Merge, Reset};
use ringkv_shared::{Dot, VersionVector};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Entry<V> {
    /// The updates that keep this key present; empty once removed.
    dots: BTreeSet<Dot>,
    /// The value, kept after a remove (reset) so that a concurrent update merges onto it.
    value: V,
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
    entries: BTreeMap<K, Entry<V>>,
}

impl<K: Ord, V> Default for ORMap<K, V> {
    fn default() -> Self {
        Self {
            clock: VersionVector::new(),
            entries: BTreeMap::new(),
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
        let entry = self.entries.entry(key).or_insert_with(|| Entry {
            dots: BTreeSet::new(),
            value: V::default(),
        });
        // The new dot supersedes every dot of this key we have observed.
        entry.dots = BTreeSet::from([dot]);
        f(&mut entry.value);
    }

    /// Removes `key` as `actor`: what this replica has observed of it is removed and its value
    /// reset. Returns whether the key was present.
    pub fn remove(&mut self, key: &K, actor: ActorId) -> bool {
        match self.entries.get_mut(key) {
            Some(e) if !e.dots.is_empty() => {
                e.dots.clear();
                e.value.reset(actor);
                true
            }
            _ => false,
        }
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.entries
            .get(key)
            .filter(|e| !e.dots.is_empty())
            .map(|e| &e.value)
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    /// The present keys and values, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries
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

/// One key's entry after a merge: `mine` (this side's, under `my_clock`) with `theirs` (under
/// `their_clock`). A dot survives if both sides have it, or the other side never saw it; the
/// values merge.
fn merge_entry<V: Merge + Default>(
    mine: Option<Entry<V>>,
    theirs: Option<&Entry<V>>,
    my_clock: &VersionVector,
    their_clock: &VersionVector,
) -> Entry<V> {
    let empty = BTreeSet::new();
    let (md, td) = (
        mine.as_ref().map_or(&empty, |e| &e.dots),
        theirs.map_or(&empty, |e| &e.dots),
    );
    let dots: BTreeSet<Dot> = md
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
    /// are moved, not cloned, and the result is built from sorted entries. A modify merges
    /// every sibling and the client's lane into the read value, so this runs several times
    /// per update of a mergeable value, over all of its keys.
    fn merge(&mut self, other: &Self) {
        use std::cmp::Ordering;
        let mine = std::mem::take(&mut self.entries);
        let mut merged: Vec<(K, Entry<V>)> =
            Vec::with_capacity(mine.len().max(other.entries.len()));
        let mut a = mine.into_iter().peekable();
        let mut b = other.entries.iter().peekable();
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
        self.entries = merged.into_iter().collect();
        self.clock.join(&other.clock);
    }

    /// The clock is canonical, every live dot is in it, and every value is valid.
    fn validate(&self) -> Result<(), String> {
        if !self.clock.is_canonical() {
            return Err("map clock is not sorted, repeats an actor or holds a zero".into());
        }
        for e in self.entries.values() {
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
        let keys: Vec<K> = self.entries.keys().cloned().collect();
        for k in keys {
            self.remove(&k, actor);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::PNCounter;
    use proptest::prelude::*;

    /// The merge as first written (every key collected, looked up, cloned and inserted):
    /// the one-pass merge must give exactly what it gave.
    fn reference_merge<K: Ord + Clone, V: Merge + Clone + Default>(
        me: &mut ORMap<K, V>,
        other: &ORMap<K, V>,
    ) {
        let keys: BTreeSet<K> = me
            .entries
            .keys()
            .chain(other.entries.keys())
            .cloned()
            .collect();
        for k in keys {
            let mine = me.entries.get(&k);
            let theirs = other.entries.get(&k);
            let empty = BTreeSet::new();
            let (md, td) = (
                mine.map_or(&empty, |e| &e.dots),
                theirs.map_or(&empty, |e| &e.dots),
            );
            let dots: BTreeSet<Dot> = md
                .iter()
                .filter(|d| td.contains(d) || !other.clock.covers(**d))
                .chain(td.iter().filter(|d| !me.clock.covers(**d)))
                .copied()
                .collect();
            let mut value = mine.map(|e| e.value.clone()).unwrap_or_default();
            if let Some(t) = theirs {
                value.merge(&t.value);
            }
            me.entries.insert(k, Entry { dots, value });
        }
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
}
