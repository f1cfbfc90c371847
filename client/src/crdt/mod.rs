//! Mergeable values: data types whose concurrent versions (siblings) merge without losing an
//! update, for the read-merge-write helpers on [`crate::Client`].
//!
//! Every type here is a state-based CRDT: [`Merge::merge`] is commutative, associative and
//! idempotent (property-tested), so siblings can be merged in any order, any number of times.
//! Updates take the [`ActorId`] of the writer; give each application instance its own (see
//! [`crate::ClientBuilder::actor`]) so that concurrent updates never share a dot.
//!
//! - [`PNCounter`]: a counter that goes up and down.
//! - [`ORSet`]: an add-wins observed-remove set.
//! - [`ORMap`]: an observed-remove map of mergeable values; a shopping cart is
//!   `ORMap<String, PNCounter>`.

mod counter;
mod ormap;
mod orset;

pub use counter::PNCounter;
pub use ormap::ORMap;
pub use orset::ORSet;
pub use ringkv_shared::ActorId;

/// A value whose concurrent versions can be merged.
pub trait Merge {
    /// Folds `other` into `self`. Must be commutative, associative and idempotent.
    fn merge(&mut self, other: &Self);
}

/// A value that can be reset by an actor, as removing it from an [`ORMap`] does: afterwards it
/// reads as empty, yet a concurrent update by another actor still shows through.
pub trait Reset {
    /// Resets everything this actor has observed.
    fn reset(&mut self, actor: ActorId);
}

/// A unit value, for maps used as sets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Unit;

impl Merge for Unit {
    fn merge(&mut self, _: &Self) {}
}

impl Reset for Unit {
    fn reset(&mut self, _: ActorId) {}
}

#[cfg(test)]
mod laws;
