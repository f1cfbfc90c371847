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

/// A cluster's identity, fixed when the cluster is founded and kept in every node's view (so
/// in every data directory). Two clusters that share a CA never merge: a view from another
/// cluster is refused with both ids named (see `membership::View::same_cluster`).
///
/// The founding nodes each build their first view on their own, so the id cannot be random:
/// it is derived from what founds the cluster, [`ClusterId::founded`]. A node that joins later
/// learns it from the first view it is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClusterId(pub u64);

impl ClusterId {
    /// The id of a cluster named `name` (the config's `cluster`, often empty) founded as
    /// `ring`: its partition count and founding members (ids and addresses). Clusters founded
    /// on different hosts, or with different names, get different ids.
    pub fn founded(name: &str, ring: &crate::Ring) -> ClusterId {
        let mut text = format!("ringkv cluster v1\n{name}\n{}\n", ring.partition_count());
        let mut members: Vec<_> = ring.members().map(|m| (m.id, m.addr)).collect();
        members.sort();
        for (id, addr) in members {
            text.push_str(&format!("{}@{addr}\n", id.0));
        }
        ClusterId(crate::hash::checksum(text.as_bytes()))
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
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
