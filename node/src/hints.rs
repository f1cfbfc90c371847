//! Hinted handoff: hand the hints this node holds over to their owners once they answer.
//!
//! Every `hint_interval_ms` the worker walks the owners it holds hints for. An owner the local
//! failure detector still suspects is skipped until its back-off expires; otherwise a batch of
//! its hints is written to it (a plain replica write, which merges, so delivering the same
//! hint twice is harmless). A hint is removed only after the owner acknowledged it, and only if
//! it did not change meanwhile (a newer copy merged into it is delivered next round). A hint
//! survives restarts: it lives in the `hints` keyspace under the node's durability policy.

use crate::metrics::Metrics;
use crate::state::NodeState;
use ringkv_shared::proto::{Request, Response};
use ringkv_shared::transport::Transport;
use ringkv_shared::{Member, NodeId};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, debug_span, warn};

/// Hints written to one owner at a time.
const IN_FLIGHT: usize = 32;

/// Runs until `stop` turns true.
pub(crate) async fn run(state: Arc<NodeState>, stop: watch::Receiver<bool>) {
    let interval = Duration::from_millis(state.background.hint_interval_ms);
    crate::background::every(interval, stop, || async {
        deliver_round(&state).await;
    })
    .await;
}

/// One pass over every owner this node holds hints for. Returns hints delivered.
pub(crate) async fn deliver_round(state: &Arc<NodeState>) -> u64 {
    let ring = state.ring.load_full();
    let mut delivered = 0;
    for owner in ring.members().filter(|m| m.id != state.id) {
        if state.quic.is_down(owner.id) {
            continue;
        }
        let span = debug_span!("hinted_handoff", node = %state.id, owner = %owner.id);
        delivered += deliver_to(state, owner).instrument(span).await;
    }
    delivered
}

async fn deliver_to(state: &Arc<NodeState>, owner: &Member) -> u64 {
    let batch = match state
        .store
        .hint_batch(owner.id, state.background.hint_batch)
    {
        Ok(b) => b,
        Err(e) => {
            warn!(error = %e, "cannot read hints");
            return 0;
        }
    };
    if batch.is_empty() {
        return 0;
    }
    let mut delivered = 0;
    for chunk in batch.chunks(IN_FLIGHT) {
        let mut calls = JoinSet::new();
        for hint in chunk.iter().cloned() {
            let (quic, to) = (state.quic.clone(), owner.clone());
            calls.spawn(async move {
                let request = Request::Write {
                    key: hint.key.clone(),
                    object: hint.object.clone(),
                    hint_for: None,
                };
                let reply =
                    tokio::time::timeout(Duration::from_secs(5), quic.call(&to, request)).await;
                (hint, reply)
            });
        }
        let mut failed = false;
        while let Some(done) = calls.join_next().await {
            let Ok((hint, reply)) = done else { continue };
            match reply {
                Ok(Ok(Response::Written)) => {
                    match state.store.remove_hint_if_unchanged(owner.id, &hint) {
                        Ok(true) => delivered += 1,
                        Ok(false) => {
                            debug!("hint changed while in flight; delivering again next round")
                        }
                        Err(e) => warn!(error = %e, "cannot remove a delivered hint"),
                    }
                }
                other => {
                    debug!(reply = ?other.map(|r| r.map(|r| r.kind())), "owner did not take a hint");
                    failed = true;
                }
            }
        }
        if failed {
            break;
        }
    }
    if delivered > 0 {
        Metrics::add(&state.metrics.hints_delivered, delivered);
        debug!(owner = %owner.id, delivered, "hints delivered");
    }
    delivered
}

/// Owners this node holds hints for (for tests and tools).
#[allow(dead_code)]
pub(crate) fn owners_with_hints(state: &NodeState) -> Vec<NodeId> {
    let ring = state.ring.load();
    ring.members()
        .map(|m| m.id)
        .filter(|id| state.store.hint_batch(*id, 1).is_ok_and(|b| !b.is_empty()))
        .collect()
}
