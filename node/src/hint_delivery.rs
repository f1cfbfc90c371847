//! Hinted handoff: hand the hints this node holds over to the owners of their keys.
//!
//! **A hint belongs to its key, not to the node it was first meant for.** A hint is written for
//! an owner that could not be reached; by the time it is delivered the key's partition may have
//! moved (a ring change), or that owner may have left. So every `hint_interval_ms` the worker
//! takes a batch of hints (all owners, resuming where the last round stopped) and, for each,
//! computes where it goes now ([`targets`]): the key's N replicas in the ring in force, plus,
//! during a ring change, the replicas the target ring adds — exactly where a write made now
//! would go. The copy is written to each of them that is not this node (a plain replica write,
//! which merges, so a duplicate delivery is harmless), and merged into this node's own copy if
//! it is one of them. The hint is removed only when every target acknowledged, and only if it
//! did not change meanwhile (a newer copy merged into it is delivered next round). A target the
//! failure detector suspects keeps the hint until it is back.
//!
//! Hints for a removed member are delivered the same way. A leaving node hands its hints over
//! before the ring switches (`partition_handoff` reports it), and a removed node keeps delivering what it
//! still holds; it reports itself gone only with none left (`sweep`). A hint survives
//! restarts: it lives in the `hints` keyspace under the node's durability policy.

use crate::metrics::Metrics;
use crate::state::NodeState;
use crate::storage::Hint;
use ringkv_net::transport::Transport;
use ringkv_shared::proto::{Request, Response};
use ringkv_shared::{NodeId, Ring};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, debug_span, warn};

/// Hints delivered at a time.
const IN_FLIGHT: usize = 32;

/// Runs until `stop` turns true.
pub(crate) async fn run(state: Arc<NodeState>, stop: watch::Receiver<bool>) {
    let interval = Duration::from_millis(state.background.hint_interval_ms);
    crate::background::every(interval, stop, || async {
        let span = debug_span!("hinted_handoff", node = %state.id);
        deliver_round(&state).instrument(span).await;
    })
    .await;
}

/// Where a hint for a key of `partition` goes now: the partition's first `n` replicas in
/// `ring`, and during a ring change the replicas `target` adds. Sorted, without duplicates.
pub(crate) fn targets(
    ring: &Ring,
    target: Option<&Ring>,
    partition: ringkv_shared::PartitionId,
    n: usize,
) -> Vec<NodeId> {
    let mut out = ring.replicas(partition, n).to_vec();
    if let Some(t) = target {
        out.extend(ringkv_shared::handoff::incoming(ring, t, partition, n));
    }
    out.sort();
    out.dedup();
    out
}

/// One pass over a batch of the hints this node holds. Returns hints delivered.
pub(crate) async fn deliver_round(state: &Arc<NodeState>) -> u64 {
    let after = state
        .hint_cursor
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let batch = match state.store.hints_after(
        after.as_ref().map(|(o, p, k)| (*o, *p, k.as_ref())),
        state.background.hint_batch,
    ) {
        Ok(b) => b,
        Err(e) => {
            warn!(error = %e, "cannot read hints");
            return 0;
        }
    };
    // The next round resumes after this batch, or from the start once the end is reached,
    // so hints a suspected target holds up never starve the others.
    *state.hint_cursor.lock().unwrap_or_else(|p| p.into_inner()) =
        if batch.len() < state.background.hint_batch {
            None
        } else {
            batch.last().map(|h| (h.owner, h.partition, h.key.clone()))
        };
    let mut delivered = 0;
    for chunk in batch.chunks(IN_FLIGHT) {
        let mut calls = JoinSet::new();
        for hint in chunk.iter().cloned() {
            let state = state.clone();
            calls.spawn(async move {
                let ok = deliver(&state, &hint).await;
                (hint, ok)
            });
        }
        while let Some(done) = calls.join_next().await {
            let Ok((hint, true)) = done else { continue };
            match state.store.remove_hint_if_unchanged(&hint) {
                Ok(true) => delivered += 1,
                Ok(false) => debug!("hint changed while in flight; delivering again next round"),
                Err(e) => warn!(error = %e, "cannot remove a delivered hint"),
            }
        }
    }
    if delivered > 0 {
        Metrics::add(&state.metrics.hints_delivered, delivered);
        debug!(delivered, "hints delivered");
    }
    delivered
}

/// Writes one hint to every current target. Returns whether all of them hold it now.
async fn deliver(state: &Arc<NodeState>, hint: &Hint) -> bool {
    let ring = state.ring.load_full();
    let transition = state.transition.load_full();
    let n = usize::from(state.replication);
    let to = targets(
        &ring,
        transition.as_ref().map(|t| &t.target),
        hint.partition,
        n,
    );
    let members: Vec<ringkv_shared::Member> = to
        .iter()
        .filter(|id| **id != state.id)
        .filter_map(|id| {
            ring.member(*id)
                .or_else(|| transition.as_ref().and_then(|t| t.target.member(*id)))
                .cloned()
        })
        .collect();
    if members.iter().any(|m| state.wire.is_down(m.id)) {
        return false;
    }
    if to.contains(&state.id)
        && let Err(e) = state
            .store
            .merge(hint.partition, &hint.key, &hint.object)
            .await
    {
        warn!(error = %e, "cannot merge a hint into this node's own copy");
        return false;
    }
    let mut calls = JoinSet::new();
    for m in members {
        let wire = state.wire.clone();
        let request = Request::Write {
            key: hint.key.clone(),
            object: hint.object.clone(),
            hint_for: None,
        };
        calls.spawn(async move {
            let reply = tokio::time::timeout(Duration::from_secs(5), wire.call(&m, request)).await;
            (m.id, reply)
        });
    }
    let mut all = true;
    while let Some(done) = calls.join_next().await {
        match done {
            Ok((_, Ok(Ok(Response::Written)))) => {}
            Ok((node, other)) => {
                debug!(%node, reply = ?other.map(|r| r.map(|r| r.kind())), "a target did not take a hint");
                all = false;
            }
            Err(_) => all = false,
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ids: std::ops::RangeInclusive<u32>) -> Vec<ringkv_shared::Member> {
        ids.map(|i| {
            ringkv_shared::Member::at(
                NodeId(i),
                std::net::SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)),
            )
        })
        .collect()
    }

    #[test]
    fn a_hint_goes_where_a_write_would_go_now() {
        let old = Ring::balanced(64, members(1..=4)).unwrap();
        let new = ringkv_shared::planner::plan(&old, &members(1..=5), 3).unwrap();
        for p in 0..64 {
            let now = targets(&old, None, p, 3);
            assert_eq!(now.len(), 3);
            assert!(old.replicas(p, 3).iter().all(|id| now.contains(id)));
            let moving = targets(&old, Some(&new), p, 3);
            for id in old.replicas(p, 3).iter().chain(new.replicas(p, 3)) {
                assert!(moving.contains(id), "partition {p}: {id} missing");
            }
            assert!(
                moving.windows(2).all(|w| w[0] < w[1]),
                "sorted, no duplicates"
            );
        }
        // After a leave, a hint written for the leaver goes to the partition's new owners.
        let shrunk = ringkv_shared::planner::plan(&old, &members(1..=3), 3).unwrap();
        for p in 0..64 {
            assert!(!targets(&shrunk, None, p, 3).contains(&NodeId(4)));
        }
    }
}
