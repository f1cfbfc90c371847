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

impl<K: Ord + Clone, V: Merge + Clone + Default> Merge for ORMap<K, V> {
    fn merge(&mut self, other: &Self) {
        let keys: BTreeSet<K> = self
            .entries
            .keys()
            .chain(other.entries.keys())
            .cloned()
            .collect();
        for k in keys {
            let mine = self.entries.get(&k);
            let theirs = other.entries.get(&k);
            let empty = BTreeSet::new();
            let (md, td) = (
                mine.map_or(&empty, |e| &e.dots),
                theirs.map_or(&empty, |e| &e.dots),
            );
            // A dot survives if both sides have it, or the other side never saw it.
            let dots: BTreeSet<Dot> = md
                .iter()
                .filter(|d| td.contains(d) || !other.clock.covers(**d))
                .chain(td.iter().filter(|d| !self.clock.covers(**d)))
                .copied()
                .collect();
            let mut value = mine.map(|e| e.value.clone()).unwrap_or_default();
            if let Some(t) = theirs {
                value.merge(&t.value);
            }
            self.entries.insert(k, Entry { dots, value });
        }
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
