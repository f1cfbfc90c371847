//! Replica operations on this node's own storage: read (with the hints it keeps), and
//! write-with-merge (or keep as a hint). Coordinating a client write is `coordinator`'s.

use crate::metrics::Metrics;
use crate::state::NodeState;
use bytes::Bytes;
use ringkv_shared::proto::Response;
use ringkv_shared::{NodeId, Object, ReplyError};

/// This node's object for `key` (empty if none), merged with any hints it holds for the key:
/// a stand-in serves what it keeps for an owner that is down.
///
/// A node that is not one of the key's N replicas in its current ring (N as configured) serves
/// only hints: whatever it still stores of a partition it handed off is stale, and must not be
/// mistaken for an answer. The reply's epoch tells the caller its ring is out of date.
pub(crate) fn read(state: &NodeState, key: Bytes) -> Response {
    let ring = state.ring.load();
    let partition = ring.partition_of(&key);
    let replica = ring
        .replicas(partition, state.replication.into())
        .contains(&state.id);
    let own = if replica {
        match state.store.get(partition, &key) {
            Ok(o) => o.unwrap_or_default(),
            Err(e) => return Response::Error(state.storage_error(e)),
        }
    } else {
        Object::default()
    };
    let known = state.known_nodes.load();
    let others = known.iter().copied().filter(|id| *id != state.id);
    let object = match state.store.hints_for_key(partition, &key, others) {
        Ok(Some(hinted)) => Object::merged(&own, &hinted),
        Ok(None) => own,
        Err(e) => return Response::Error(state.storage_error(e)),
    };
    state
        .metrics
        .read_siblings
        .observe(object.siblings().len() as f64);
    Response::Object(object)
}

/// Merges `object` into this node's copy of `key`, or keeps it as a hint for `hint_for`.
///
/// A copy (not a hint) is taken only for a partition this node replicates in its ring, or
/// receives in the running ring change; anything else is refused as
/// [`ReplyError::NotReplica`]. A node keeps nothing of a partition it does not own, so that
/// nothing stale is there if the partition ever comes back to it (see `sweep`).
pub(crate) async fn write(
    state: &NodeState,
    key: Bytes,
    object: Object,
    hint_for: Option<NodeId>,
) -> Response {
    let ring = state.ring.load();
    let partition = ring.partition_of(&key);
    let as_hint = hint_for.is_some_and(|owner| owner != state.id);
    // Hints only for members: one held for a node that does not exist would never be
    // delivered and would fill the disk.
    if let Some(owner) = hint_for.filter(|_| as_hint)
        && !state.known_nodes.load().contains(&owner)
    {
        return Response::Error(ReplyError::InvalidInput {
            reason: format!("{owner} is not a member of the cluster; no hint is kept for it"),
        });
    }
    if as_hint && is_leaving(state) {
        // It would take the hint away with it: the sender tries its next stand-in.
        return Response::Error(ReplyError::Unavailable {
            reason: format!("{} is leaving the cluster and keeps no hints", state.id),
        });
    }
    if !as_hint && !takes_copies_of(state, &ring, partition) {
        return Response::Error(ReplyError::NotReplica {
            node: state.id,
            partition,
        });
    }
    drop(ring);
    let stored = match hint_for {
        Some(owner) if owner != state.id => {
            let r = state.store.put_hint(owner, partition, &key, &object).await;
            if r.is_ok() {
                Metrics::add(&state.metrics.hints_stored, 1);
            }
            r
        }
        _ => state
            .store
            .merge(partition, &key, &object)
            .await
            .map(|_| ()),
    };
    match stored {
        Ok(()) => Response::Written,
        Err(e) => Response::Error(state.storage_error(e)),
    }
}

/// Whether the running ring change removes this node. A leaver takes no new hints, so that
/// once it has handed over those it held (the ring switches only then) it holds none and can
/// be stopped.
pub(crate) fn is_leaving(state: &NodeState) -> bool {
    state
        .transition
        .load()
        .as_ref()
        .is_some_and(|t| t.target.member(state.id).is_none())
}

/// Whether this node stores copies of `partition`: it replicates it in `ring`, or the running
/// transition gives it to this node.
fn takes_copies_of(state: &NodeState, ring: &ringkv_shared::Ring, partition: u32) -> bool {
    let n = usize::from(state.replication);
    ring.replicas(partition, n).contains(&state.id)
        || state.transition.load().as_ref().is_some_and(|t| {
            ringkv_shared::handoff::incoming(ring, &t.target, partition, n).contains(&state.id)
        })
}
