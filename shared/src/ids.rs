//! Identifiers: physical nodes and version-vector actors.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A physical storage node, as named in the cluster's membership.
///
/// Ids are chosen by the operator (small integers in config files) and never reused for a
/// different host. They order the ring's initial assignment and every preference list.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct NodeId(pub u32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// The actor that stamps dots in version vectors.
///
/// An actor is one *incarnation* of a node's storage, not the node itself: a node whose data
/// directory is new (first start, or a disk that was lost) draws a fresh random actor id and
/// persists it. Its new writes can therefore never collide with dots it issued before the loss
/// (the failure behind Riak's KV679 data loss).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ActorId(pub u64);

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a{:016x}", self.0)
    }
}
