//! Coordinating a client write on this node: stamp it, store it, replicate it with a sloppy
//! quorum through [`NodeTransport`] (which serves this node's own copy in-process), and during a ring
//! change copy it to the new replicas as well, counted by [`DualWrite`].

use crate::gossip::Peer;
use crate::in_flight::Guard;
use crate::metrics::Metrics;
use crate::node_transport::NodeTransport;
use crate::replica::is_leaving;
use crate::state::NodeState;
use bytes::Bytes;
use ringkv_net::fanout;
use ringkv_net::transport::Transport;
use ringkv_shared::dual_write::DualWrite;
use ringkv_shared::proto::{PutReply, Quorum, Request, Response};
use ringkv_shared::{NodeId, Object, PartitionId, ReplyError, VersionVector};
use std::sync::Arc;
use tracing::{error, warn};

/// Coordinates a client write here: stamp, store, and replicate with a sloppy quorum until
/// `quorum.required` nodes (this one included) hold the new object. Copies that found no
/// other home are kept here as hints for their owners. The reply carries the context for the
/// writer's next write and, with `return_body`, the object stored here after the write.
pub(crate) async fn put(
    state: &Arc<NodeState>,
    key: Bytes,
    context: VersionVector,
    value: Option<Bytes>,
    quorum: Quorum,
    return_body: bool,
) -> Response {
    if let Err(reason) = quorum.validate() {
        return Response::Error(ReplyError::InvalidInput { reason });
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
    let preference = ring.preference_members(&key);
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
    let (object, ticket) = match state.store.update_staged(partition, &key, &context, value) {
        Ok(staged) => staged,
        Err(e) => return Response::Error(state.storage_error(e)),
    };
    let reply = PutReply {
        clock: object.clock().clone(),
        next: object.context_after_write(&context, state.store.actor()),
        body: return_body.then(|| object.clone()),
    };
    let (keeper, hint_key, hint_object) = (state.clone(), key.clone(), object.clone());
    let on_settled = move |unplaced: Vec<NodeId>| {
        keep_hints(
            keeper,
            in_flight,
            partition,
            hint_key,
            hint_object,
            unplaced,
        )
    };
    // During a ring change the partition's incoming replicas get a copy too, and the write
    // counts only once W replicas of the new ring hold it as well: whichever ring reads use,
    // they meet the write. (Outside a ring change this costs one atomic load.)
    let incoming = transition.and_then(|t| {
        let targets = ringkv_shared::handoff::incoming(&ring, &t.target, partition, n);
        let members = t.target.members_of(&targets);
        let new_replicas = t.target.replicas(partition, n).to_vec();
        (!members.is_empty()).then(|| {
            let copies = copy_to(state, &members, &key, &object, quorum.timeout());
            (copies, new_replicas)
        })
    });
    let peers = NodeTransport(state.clone());
    // Kept for `place_by_newer_ring`: once this node learns the newer ring, its sweep may
    // drop its own copy of the partition, so the object cannot be read back then.
    let (key_copy, object_copy) = (key.clone(), object.clone());
    let replication = fanout::Replication {
        key,
        object,
        local: state.id,
        preference,
        n,
        required: quorum.required.into(),
        timeout: quorum.timeout(),
    };
    let replicated = fanout::replicate(&peers, replication, on_settled);
    let (durable, replicated) = tokio::join!(state.store.durable(ticket), replicated);
    if let Err(e) = durable {
        return Response::Error(state.storage_error(e));
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
                Ok(()) => Response::Put(reply),
                Err(e) => Response::Error(e),
            };
        }
        Err(e) => return Response::Error(e),
    };
    if let Some((extra, new_replicas)) = incoming {
        // Every node that holds the write counts: the ones `replicate` placed it on and the
        // incoming replicas that acknowledged. Short of W in the new ring, the write is stored
        // all the same, and the answer says so (never "applied nowhere").
        let mut tally = DualWrite::new(quorum.required.into(), new_replicas, &acked);
        count_copies(&mut tally, extra).await;
        if let Err(e) = tally.into_result() {
            return Response::Error(e);
        }
    }
    Response::Put(reply)
}

/// What a write's replication does once every copy settled: keep a hint here for each owner
/// no copy reached (unless this node is leaving: it keeps none, and the write stays
/// acknowledged or not as the quorum decided), then release the write's in-flight guard.
async fn keep_hints(
    state: Arc<NodeState>,
    in_flight: Guard,
    partition: PartitionId,
    key: Bytes,
    object: Object,
    unplaced: Vec<NodeId>,
) {
    let _in_flight = in_flight;
    if !unplaced.is_empty() && is_leaving(&state) {
        warn!(
            ?unplaced,
            "leaving: keeping no hint for owners no copy reached"
        );
        return;
    }
    for owner in unplaced {
        match state.store.put_hint(owner, partition, &key, &object).await {
            Ok(()) => Metrics::add(&state.metrics.hints_stored, 1),
            Err(e) => error!(%owner, error = %e, "could not keep a hint for an unreachable owner"),
        }
    }
}

/// Records copies' outcomes in `tally` until it is met or every copy answered (each has its
/// own deadline, so every call ends, `TimedOut` at worst). Copies still in flight then finish
/// in the background: the more replicas hold the write, the better.
async fn count_copies(
    tally: &mut DualWrite,
    mut copies: tokio::task::JoinSet<(NodeId, Result<(), ringkv_shared::ReplicaError>)>,
) {
    while !tally.met() {
        match copies.join_next().await {
            Some(Ok((node, result))) => tally.record(node, result),
            Some(Err(_)) => {}
            None => break,
        }
    }
    tokio::spawn(async move { while copies.join_next().await.is_some() {} });
}

/// A coordinator that stamped a write by a ring the cluster has left behind: learns the newer
/// view from a replica that refused (`refusers`), then copies the write to the key's
/// replicas in the ring now in force until W hold it. Fails (as "may have been applied", the
/// write is stored here) if no newer ring can be had or W is not reached.
async fn place_by_newer_ring(
    state: &Arc<NodeState>,
    old: &ringkv_shared::Ring,
    refusers: &[NodeId],
    key: Bytes,
    object: Object,
    quorum: Quorum,
) -> Result<(), ReplyError> {
    for member in old.members_of(refusers) {
        let _ = crate::gossip::exchange(state, Peer::Member(&member)).await;
        if state.ring.load().epoch() > old.epoch() {
            break;
        }
    }
    let ring = state.ring.load_full();
    let n = usize::from(quorum.n);
    let owners = ring.replicas(ring.partition_of(&key), n).to_vec();
    let mut tally = DualWrite::new(quorum.required.into(), owners.clone(), &[]);
    if ring.epoch() > old.epoch() {
        let members = ring.members_of(&owners);
        count_copies(
            &mut tally,
            copy_to(state, &members, &key, &object, quorum.timeout()),
        )
        .await;
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
    key: &Bytes,
    object: &Object,
    timeout: std::time::Duration,
) -> tokio::task::JoinSet<(NodeId, Result<(), ringkv_shared::ReplicaError>)> {
    let mut calls = tokio::task::JoinSet::new();
    for m in members.iter().cloned() {
        let (peers, key, object) = (NodeTransport(state.clone()), key.clone(), object.clone());
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
                let _ = crate::gossip::exchange(&peers.0, Peer::Member(&m)).await;
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
    reply: Result<Response, ringkv_net::transport::TransportError>,
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
