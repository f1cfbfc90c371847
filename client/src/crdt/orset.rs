//! [`ORSet`]: an add-wins observed-remove set.

use super::{ActorId, Merge, ORMap, Reset, Unit};
use serde::{Deserialize, Serialize};

/// An add-wins observed-remove set: an element is present while some add of it has not been
/// observed by a remove. An add concurrent with a remove of the same element survives; a
/// remove of an element it has seen stays removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(
    serialize = "T: Serialize + Ord",
    deserialize = "T: Deserialize<'de> + Ord"
))]
pub struct ORSet<T>(ORMap<T, Unit>);

impl<T: Ord> Default for ORSet<T> {
    fn default() -> Self {
        Self(ORMap::default())
    }
}

impl<T: Ord + Clone> ORSet<T> {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `item` as `actor`.
    pub fn add(&mut self, item: T, actor: ActorId) {
        self.0.update(item, actor, |_| {});
    }

    /// Removes `item` (what this replica has observed of it). Returns whether it was present.
    pub fn remove(&mut self, item: &T, actor: ActorId) -> bool {
        self.0.remove(item, actor)
    }

    /// Whether `item` is present.
    pub fn contains(&self, item: &T) -> bool {
        self.0.contains(item)
    }

    /// The present elements, in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|(k, _)| k)
    }

    /// How many elements are present.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T: Ord + Clone> Merge for ORSet<T> {
    fn merge(&mut self, other: &Self) {
        self.0.merge(&other.0);
    }

    fn validate(&self) -> Result<(), String> {
        self.0.validate()
    }
}

impl<T: Ord + Clone> Reset for ORSet<T> {
    fn reset(&mut self, actor: ActorId) {
        self.0.reset(actor);
    }
}
