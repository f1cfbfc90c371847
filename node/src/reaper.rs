//! Tombstone reaping: deletes stay deleted, and tombstones do not pile up forever.
//!
//! A tombstone is removed only when removing it cannot bring the key back:
//!
//! 1. it is older than `tombstone_grace_ms` on the node that starts the reap, which is the
//!    key's first owner (so one node, not N, does the checking);
//! 2. every one of the key's N owners answers with exactly the same tombstone — a replica
//!    that is down, or still holds the old value, blocks the reap;
//! 3. no member of the cluster holds a hint for the key — a hint carrying an old value that
//!    was delivered after the reap would resurrect it (any member unreachable blocks the reap);
//! 4. each owner then removes its copy only if it is still exactly that tombstone, so a write
//!    that raced in survives (and anti-entropy spreads it to the owners that did remove theirs).
//!
//! Ring changes add two conditions, checked once per round:
//!
//! 5. no transition is running (an incoming replica may hold a copy the owners' tombstone has
//!    not reached yet);
//! 6. every node that ever owned a partition has dropped its copies of the partitions the ring
//!    in force does not give it ([`ringkv_shared::membership::View::not_swept`] is empty): a
//!    former owner's old copy may hold the key from before the delete, and would bring it back
//!    if the partition returned to it. A node that is down blocks reaping until it is back.

use crate::background::WorkerError;
use crate::metrics::Metrics;
use crate::state::NodeState;
use bytes::Bytes;
use ringkv_shared::proto::{Request, Response};
use ringkv_shared::{Object, PartitionId, Ring, VersionVector};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{Instrument, debug, debug_span};

/// Tombstones considered per round.
const PER_ROUND: usize = 256;

// ---- serving ---------------------------------------------------------------------------

pub(crate) fn hints_for(state: &NodeState, key: Bytes) -> Response {
    let ring = state.ring.load();
    let known = state.known_nodes.load();
    let owners = known.iter().copied().filter(|id| *id != state.id);
    match state
        .store
        .hints_for_key(ring.partition_of(&key), &key, owners)
    {
        Ok(h) => Response::Object(h.unwrap_or_default()),
        Err(e) => Response::Error(state.storage_error(e)),
    }
}

pub(crate) async fn reap(state: &NodeState, key: Bytes, clock: VersionVector) -> Response {
    let p = state.ring.load().partition_of(&key);
    match state.store.reap_if_unchanged(p, &key, &clock).await {
        Ok(removed) => {
            if removed {
                Metrics::add(&state.metrics.tombstones_reaped, 1);
            }
            Response::Written
        }
        Err(e) => Response::Error(state.storage_error(e)),
    }
}

// ---- the worker ------------------------------------------------------------------------

/// Runs reap rounds until `stop` turns true.
pub(crate) async fn run(state: Arc<NodeState>, stop: watch::Receiver<bool>) {
    let interval = Duration::from_millis(state.background.reap_interval_ms);
    crate::background::every(interval, stop, || async {
        let span = debug_span!("reaper", node = %state.id);
        reap_round(&state).instrument(span).await;
    })
    .await;
}

/// One pass over the tombstones past their grace period. Returns tombstones reaped cluster-wide.
pub(crate) async fn reap_round(state: &Arc<NodeState>) -> usize {
    let due = match state
        .store
        .tombstones_older_than(state.background.tombstone_grace_ms, PER_ROUND)
    {
        Ok(d) => d,
        Err(e) => {
            debug!(error = %e, "cannot list tombstones");
            return 0;
        }
    };
    if due.is_empty() {
        return 0;
    }
    let view = state.view();
    if let Some(t) = &view.transition {
        debug!(
            epoch = t.target.epoch(),
            "no reaping while the ring changes"
        );
        return 0;
    }
    let waiting = view.not_swept();
    if !waiting.is_empty() {
        debug!(
            ?waiting,
            "no reaping until every former owner dropped its old copies"
        );
        return 0;
    }
    let ring = state.ring.load_full();
    let mut reaped = 0;
    for (p, key, _) in due {
        match try_reap(state, &ring, p, key.clone()).await {
            Ok(true) => reaped += 1,
            Ok(false) => {}
            Err(why) => {
                debug!(key = %String::from_utf8_lossy(&key), %why, "tombstone kept for now")
            }
        }
    }
    reaped
}

async fn try_reap(
    state: &Arc<NodeState>,
    ring: &Ring,
    p: PartitionId,
    key: Bytes,
) -> Result<bool, WorkerError> {
    let not_yet = |reason: String| WorkerError::NotYet { reason };
    let owners = ring.replicas(p, state.replication.into()).to_vec();
    if owners.first() != Some(&state.id) {
        return Ok(false); // the first owner starts reaps
    }
    let Some(local) = state.store.get(p, &key)? else {
        return Ok(false);
    };
    if local.siblings().is_empty() || !local.is_deleted() {
        return Ok(false);
    }
    // 2. every owner holds exactly this tombstone.
    for owner in owners.iter().filter(|o| **o != state.id) {
        let member = ring
            .member(*owner)
            .ok_or_else(|| not_yet(format!("{owner} is not in the ring")))?;
        match call(
            state,
            member,
            Request::ReadMany {
                keys: vec![key.clone()],
            },
        )
        .await?
        {
            Response::Objects(o) if o.len() == 1 && o[0].1 == local => {}
            _ => {
                return Err(not_yet(format!(
                    "{owner} does not hold the same tombstone yet"
                )));
            }
        }
    }
    // 3. nobody holds a hint for the key.
    let known = state.known_nodes.load();
    let others = known.iter().copied().filter(|id| *id != state.id);
    if state.store.hints_for_key(p, &key, others)?.is_some() {
        return Err(not_yet("this node holds a hint for the key".into()));
    }
    for member in ring.members().filter(|m| m.id != state.id) {
        match call(state, member, Request::HintsFor { key: key.clone() }).await? {
            Response::Object(o) if o == Object::new() => {}
            _ => return Err(not_yet(format!("{} holds a hint for the key", member.id))),
        }
    }
    // 4. each owner removes it if unchanged.
    let clock = local.clock().clone();
    for owner in owners.iter().filter(|o| **o != state.id) {
        let member = ring
            .member(*owner)
            .ok_or_else(|| not_yet(format!("{owner} is not in the ring")))?;
        call(
            state,
            member,
            Request::Reap {
                key: key.clone(),
                clock: clock.clone(),
            },
        )
        .await?;
    }
    let removed = state.store.reap_if_unchanged(p, &key, &clock).await?;
    if removed {
        Metrics::add(&state.metrics.tombstones_reaped, 1);
    }
    Ok(removed)
}

async fn call(
    state: &NodeState,
    member: &ringkv_shared::Member,
    request: Request,
) -> Result<Response, WorkerError> {
    crate::background::call_peer(state, member, request, Duration::from_secs(5)).await
}
