//! Replica operations: read, write-with-merge (or keep as a hint), and coordinating a client
//! write with a sloppy quorum.

use crate::metrics::Metrics;
use crate::state::{NodeState, Peers};
use crate::storage::StorageError;
use bytes::Bytes;
use ringkv_shared::dual_write::DualWrite;
use ringkv_shared::proto::{Quorum, Response};
use ringkv_shared::{NodeId, Object, ReplyError, VersionVector, fanout};
use std::sync::Arc;
use tracing::{error, warn};

pub(crate) fn storage_error(state: &NodeState, e: StorageError) -> ReplyError {
    match e {
        StorageError::ObjectTooLarge { .. } => ReplyError::InvalidInput {
            reason: e.to_string(),
        },
        other => {
            warn!(error = %other, "storage error");
            ReplyError::Storage {
                node: state.id,
                reason: other.to_string(),
            }
        }
    }
}

fn check_key(state: &NodeState, key: &[u8], value: Option<&[u8]>) -> Result<(), ReplyError> {
    state
        .limits
        .check(key, value)
        .map_err(|reason| ReplyError::InvalidInput { reason })
}

/// This node's object for `key` (empty if none), merged with any hints it holds for the key:
/// a stand-in serves what it keeps for an owner that is down.
///
/// A node that is not one of the key's N replicas in its current ring (N as configured) serves
/// only hints: whatever it still stores of a partition it handed off is stale, and must not be
/// mistaken for an answer. The reply's epoch tells the caller its ring is out of date.
pub(crate) fn read(state: &NodeState, key: Bytes) -> Response {
    if let Err(e) = check_key(state, &key, None) {
        return Response::Error(e);
    }
    let ring = state.ring.load();
    let partition = ring.partition_of(&key);
    let replica = ring
        .replicas(partition, state.replication.into())
        .contains(&state.id);
    let own = if replica {
        match state.store.get(partition, &key) {
            Ok(o) => o.unwrap_or_default(),
            Err(e) => return Response::Error(storage_error(state, e)),
        }
    } else {
        Object::default()
    };
    let known = state.known_nodes.load();
    let others = known.iter().copied().filter(|id| *id != state.id);
    let object = match state.store.hints_for_key(partition, &key, others) {
        Ok(Some(hinted)) => Object::merged(&own, &hinted),
        Ok(None) => own,
        Err(e) => return Response::Error(storage_error(state, e)),
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
    if let Err(e) = check_key(state, &key, None) {
        return Response::Error(e);
    }
    let ring = state.ring.load();
    let partition = ring.partition_of(&key);
    let as_hint = hint_for.is_some_and(|owner| owner != state.id);
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
        Err(e) => Response::Error(storage_error(state, e)),
    }
}

/// Whether the running ring change removes this node. A leaver takes no new hints, so that
/// once it has handed over those it held (the ring switches only then) it holds none and can
/// be stopped.
fn is_leaving(state: &NodeState) -> bool {
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

/// Coordinates a client write here: stamp, store, and replicate with a sloppy quorum until
/// `quorum.required` nodes (this one included) hold the new object. Copies that found no
/// other home are kept here as hints for their owners.
pub(crate) async fn put(
    state: &Arc<NodeState>,
    key: Bytes,
    context: VersionVector,
    value: Option<Bytes>,
    quorum: Quorum,
) -> Response {
    if let Err(e) = check_key(state, &key, value.as_deref()) {
        return Response::Error(e);
    }
    if quorum.required == 0 || quorum.n == 0 || quorum.required > quorum.n {
        return Response::Error(ReplyError::InvalidInput {
            reason: format!("need 1 <= W <= N, got N={} W={}", quorum.n, quorum.required),
        });
    }
    // The ring and transition this write acts on, read as it registers as in flight: until it
    // settles, this node neither acknowledges a newer transition nor reports a sweep of a newer
    // ring (see `in_flight`).
    let (in_flight, (ring, transition)) = state.in_flight.enter(|| {
        let ring = state.ring.load_full();
        let transition = state.transition.load_full();
        let epochs = (
            ring.epoch(),
            transition.as_ref().map_or(0, |t| t.target.epoch()),
        );
        (epochs.0, epochs.1, (ring, transition))
    });
    let partition = ring.partition_of(&key);
    let preference = NodeState::preference(&ring, &key);
    let n = usize::from(quorum.n).min(preference.len());
    if !preference[..n].iter().any(|m| m.id == state.id) {
        return Response::Error(ReplyError::NotReplica {
            node: state.id,
            partition,
        });
    }
    // Committed to the journal, not yet fsynced: replication starts now and overlaps this
    // node's fsync; the write is acknowledged only when both this node's fsync and W-1 other
    // copies are done (a crash before the fsync acknowledged nothing, and the next incarnation
    // gets a new actor, so the dot cannot be reused).
    let (object, ticket) = match state.store.update_staged(
        partition,
        &key,
        &context,
        value,
        state.limits.max_object_bytes,
    ) {
        Ok(staged) => staged,
        Err(e) => return Response::Error(storage_error(state, e)),
    };
    let clock = object.clock().clone();
    let keeper = state.clone();
    let (hint_key, hint_object) = (key.clone(), object.clone());
    let on_settled = move |unplaced: Vec<NodeId>| async move {
        let _in_flight = in_flight;
        if !unplaced.is_empty() && is_leaving(&keeper) {
            warn!(
                ?unplaced,
                "leaving: keeping no hint for owners no copy reached"
            );
            return;
        }
        for owner in unplaced {
            match keeper
                .store
                .put_hint(owner, partition, &hint_key, &hint_object)
                .await
            {
                Ok(()) => Metrics::add(&keeper.metrics.hints_stored, 1),
                Err(e) => {
                    error!(%owner, error = %e, "could not keep a hint for an unreachable owner")
                }
            }
        }
    };
    // During a ring change the partition's incoming replicas get a copy too, and the write
    // counts only once W replicas of the new ring hold it as well: whichever ring reads use,
    // they meet the write. (Outside a ring change this costs one atomic load.)
    let incoming = transition.and_then(|t| {
        let targets = ringkv_shared::handoff::incoming(&ring, &t.target, partition, n);
        let members = NodeState::members(&t.target, &targets);
        let new_replicas = t.target.replicas(partition, n).to_vec();
        (!members.is_empty()).then(|| {
            let copies = copy_to(
                state,
                &members,
                key.clone(),
                object.clone(),
                quorum.timeout(),
            );
            (copies, new_replicas)
        })
    });
    let peers = Peers(state.clone());
    let (key_copy, object_copy) = (key.clone(), object.clone());
    let replicated = fanout::replicate(
        &peers,
        key,
        object,
        state.id,
        preference,
        n,
        quorum.required.into(),
        quorum.timeout(),
        on_settled,
    );
    let (durable, replicated) = tokio::join!(state.store.durable(ticket), replicated);
    if let Err(e) = durable {
        return Response::Error(storage_error(state, e));
    }
    let acked = match replicated {
        Ok(acked) => acked,
        // Replicas refused as "not a replica": the ring switched and this node has not heard
        // yet. Catch up from one of them and place the write by the ring in force.
        Err(ReplyError::QuorumFailed { errors, .. })
            if errors.iter().any(|(_, e)| refused_as_not_replica(e)) =>
        {
            let refusers: Vec<NodeId> = errors
                .iter()
                .filter(|(_, e)| refused_as_not_replica(e))
                .map(|(id, _)| *id)
                .collect();
            return match place_by_newer_ring(state, &ring, &refusers, key_copy, object_copy, quorum)
                .await
            {
                Ok(()) => Response::Put { clock },
                Err(e) => Response::Error(e),
            };
        }
        Err(e) => return Response::Error(e),
    };
    if let Some((mut extra, new_replicas)) = incoming {
        // Every node that holds the write counts: the ones `replicate` placed it on and the
        // incoming replicas that acknowledged. Short of W in the new ring, the write is stored
        // all the same, and the answer says so (never "applied nowhere").
        let mut tally = DualWrite::new(quorum.required.into(), new_replicas, &acked);
        // Each copy has its own deadline, so every call ends (`TimedOut` at worst).
        while !tally.met() {
            match extra.join_next().await {
                Some(Ok((node, result))) => tally.record(node, result),
                Some(Err(_)) => {}
                None => break,
            }
        }
        // Copies still in flight finish in the background (each has its deadline): the more
        // incoming replicas hold the write before the handoff reaches it, the better.
        tokio::spawn(async move { while extra.join_next().await.is_some() {} });
        if let Err(e) = tally.into_result() {
            return Response::Error(e);
        }
    }
    Response::Put { clock }
}

/// A coordinator that stamped a write by a ring the cluster has left behind: learns the newer
/// view from a replica that refused (`refusers`), then copies the write to the key's replicas
/// in the ring now in force until W hold it. Fails (as "may have been applied", the write is
/// stored here) if no newer ring can be had or W is not reached.
async fn place_by_newer_ring(
    state: &Arc<NodeState>,
    old: &ringkv_shared::Ring,
    refusers: &[NodeId],
    key: Bytes,
    object: Object,
    quorum: Quorum,
) -> Result<(), ReplyError> {
    use ringkv_shared::proto::Request;
    use ringkv_shared::transport::Transport;
    let peers = Peers(state.clone());
    let partitions = old.partition_count();
    for member in NodeState::members(old, refusers) {
        let view = Box::new(state.view());
        if let Ok(Response::View(theirs)) = peers.call(&member, Request::Gossip { view }).await
            && theirs.validate(partitions).is_ok()
        {
            state.update_view(|v| v.merge(&theirs));
        }
        if state.ring.load().epoch() > old.epoch() {
            break;
        }
    }
    let ring = state.ring.load_full();
    let n = usize::from(quorum.n);
    let owners = ring.replicas(ring.partition_of(&key), n).to_vec();
    let mut tally = DualWrite::new(quorum.required.into(), owners.clone(), &[]);
    if ring.epoch() > old.epoch() {
        let members = NodeState::members(&ring, &owners);
        let mut copies = copy_to(state, &members, key, object, quorum.timeout());
        while !tally.met() {
            match copies.join_next().await {
                Some(Ok((node, result))) => tally.record(node, result),
                Some(Err(_)) => {}
                None => break,
            }
        }
        tokio::spawn(async move { while copies.join_next().await.is_some() {} });
    }
    tally.into_result()
}

fn refused_as_not_replica(e: &ringkv_shared::ReplicaError) -> bool {
    matches!(
        e,
        ringkv_shared::ReplicaError::Refused { error } if matches!(**error, ReplyError::NotReplica { .. })
    )
}

/// Sends copies of a write to the new replicas of a partition being handed off; each call
/// reports its node and outcome.
///
/// A replica that refuses as "not a replica" has not heard of the ring change yet (the commit
/// reaches nodes by gossip): it is sent this node's view, which carries the transition, and
/// asked once more before the deadline.
fn copy_to(
    state: &Arc<NodeState>,
    members: &[ringkv_shared::Member],
    key: Bytes,
    object: Object,
    timeout: std::time::Duration,
) -> tokio::task::JoinSet<(NodeId, Result<(), ringkv_shared::ReplicaError>)> {
    use ringkv_shared::proto::Request;
    use ringkv_shared::transport::Transport;
    let mut calls = tokio::task::JoinSet::new();
    for m in members.iter().cloned() {
        let (peers, key, object) = (Peers(state.clone()), key.clone(), object.clone());
        calls.spawn(async move {
            let write = || Request::Write {
                key: key.clone(),
                object: object.clone(),
                hint_for: None,
            };
            let copy = async {
                let first = copied(peers.call(&m, write()).await);
                if !is_not_replica(&first) {
                    return first;
                }
                let view = Box::new(peers.0.view());
                let _ = peers.call(&m, Request::Gossip { view }).await;
                copied(peers.call(&m, write()).await)
            };
            let result = tokio::time::timeout(timeout, copy)
                .await
                .unwrap_or(Err(ringkv_shared::ReplicaError::TimedOut));
            (m.id, result)
        });
    }
    calls
}

/// A replica's answer to a copy, as a quorum counts it.
fn copied(
    reply: Result<Response, ringkv_shared::transport::TransportError>,
) -> Result<(), ringkv_shared::ReplicaError> {
    fanout::classify(reply).and_then(|resp| match resp {
        Response::Written => Ok(()),
        other => Err(ringkv_shared::ReplicaError::UnexpectedReply {
            reply: other.kind().into(),
        }),
    })
}

fn is_not_replica(result: &Result<(), ringkv_shared::ReplicaError>) -> bool {
    result.as_ref().err().is_some_and(refused_as_not_replica)
}
