//! Mergeable values: data types whose concurrent versions (siblings) merge without losing an
//! update, for the read-merge-write helpers on [`crate::Client`].
//!
//! Every type here is a state-based CRDT: [`Merge::merge`] is commutative, associative and
//! idempotent (property-tested), so siblings can be merged in any order, any number of times.
//! Updates take the [`ActorId`] of the writer and assume the state they change holds every
//! earlier update of that actor: [`crate::Client::modify`] guarantees both, whatever a read
//! returned ([`crate::lanes`]; the argument, and what a type of your own must do, is in
//! `docs/MERGEABLE.md`). Outside `modify`, use an actor only with a state that holds all of its
//! own updates, and never one actor for two updates at once.
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

    /// Checks the invariants a decoded value must hold before it is merged (a sibling comes
    /// from the network and may have been written by anyone holding a certificate). The default
    /// accepts everything; the built-in types check their clocks and counters.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
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
