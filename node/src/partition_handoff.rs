//! Partition handoff on the node: sending this node's share of a committed transition's
//! transfers, and receiving batches.
//!
//! A sender starts only once every node of the old and new rings has acknowledged the
//! transition (so every coordinator already copies new writes to the new replicas; see
//! `coordinator::put`). It streams one partition at a time in batches of
//! `background.handoff_batch_keys` objects; the next batch goes only when the receiver has
//! made the last one durable (flow control). After each batch the position is persisted, so a
//! crash of either side resumes the transfer where it stopped instead of from zero; a finished
//! transfer is recorded in the gossiped view. The claimant switches the ring when all are done.

use crate::background::{WorkerError, call_peer, every};
use crate::state::NodeState;
use bytes::Bytes;
use ringkv_shared::handoff::Transfer;
use ringkv_shared::limits::MAX_KEYS_PER_BATCH;
use ringkv_shared::membership::Transition;
use ringkv_shared::proto::{Request, Response};
use ringkv_shared::{Member, Object, ReplyError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{debug, info, warn};

const CURSOR_PREFIX: &str = "handoff/";

/// Runs handoff rounds until `stop`.
pub(crate) async fn run(state: Arc<NodeState>, stop: watch::Receiver<bool>) {
    every(Duration::from_millis(200), stop, || {
        let state = state.clone();
        async move {
            handoff_round(&state).await;
        }
    })
    .await;
}

/// Sends every transfer this node owes for the running transition, one after another.
/// Returns how many finished in this round.
pub(crate) async fn handoff_round(state: &Arc<NodeState>) -> usize {
    if state.transition.load().is_none() {
        // No ring change: cursors left by the last one are no longer needed.
        if let Err(e) = state.store.meta_remove_prefix(CURSOR_PREFIX) {
            debug!(error = %e, "cannot remove old handoff cursors");
        }
        return 0;
    }
    let view = state.view();
    let Some(transition) = view.transition.clone() else {
        return 0;
    };
    if !view.all_seen() {
        return 0;
    }
    let mine: Vec<Transfer> = transition
        .remaining(&view.ring)
        .into_iter()
        .filter(|t| t.from == state.id)
        .collect();
    let mut finished = Vec::new();
    for transfer in mine {
        let Some(to) = transition.target.member(transfer.to).cloned() else {
            continue;
        };
        match send(state, &transition, transfer, &to).await {
            Ok(()) => {
                finished.push(transfer);
                state
                    .sending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&transfer);
                // Recorded in the view in groups: a crash before the record only repeats the
                // check of a finished cursor.
                if finished.len() >= 64 {
                    record_done(state, &mut finished);
                }
            }
            Err(reason) => {
                // The receiver is down or slow: try the rest now and this one next round.
                debug!(%transfer, %reason, "handoff transfer paused");
            }
        }
    }
    let count = finished.len();
    record_done(state, &mut finished);
    report_hints_handed_over(state);
    count
}

/// A leaver whose transfers are all done reports, once it holds no hint, that it has handed
/// its hints over (the ring switches only then; `hint_delivery` delivers them to the keys' owners).
fn report_hints_handed_over(state: &NodeState) {
    let view = state.view();
    let Some(t) = &view.transition else { return };
    if !t.hints_pending(&view.ring).contains(&state.id)
        || t.remaining(&view.ring).iter().any(|r| r.from == state.id)
    {
        return;
    }
    match state.store.hints_pending() {
        Ok(0) => {
            info!(node = %state.id, "leaving: every transfer sent and every hint handed over");
            state.update_view(|v| v.mark_hints_handed_over(state.id));
        }
        Ok(held) => debug!(held, "leaving: hints still to hand over"),
        Err(e) => warn!(error = %e, "cannot count hints"),
    }
}

fn record_done(state: &NodeState, finished: &mut Vec<Transfer>) {
    if finished.is_empty() {
        return;
    }
    state.update_view(|v| {
        for t in finished.drain(..) {
            v.mark_done(t);
        }
    });
}

fn cursor_name(transition: &Transition, t: &Transfer) -> String {
    format!(
        "{CURSOR_PREFIX}{}/{}/{}",
        transition.target.epoch(),
        t.partition,
        t.to
    )
}

/// Streams one partition to its new replica, from the persisted cursor on.
async fn send(
    state: &Arc<NodeState>,
    transition: &Transition,
    transfer: Transfer,
    to: &Member,
) -> Result<(), WorkerError> {
    let name = cursor_name(transition, &transfer);
    let mut cursor: Option<Vec<u8>> = state.store.meta_get(&name)?;
    match &cursor {
        // An empty cursor marks a finished transfer (keys are never empty).
        Some(c) if c.is_empty() => return Ok(()),
        Some(_) => info!(%transfer, "resuming an interrupted handoff transfer from its cursor"),
        None => {}
    }
    let batch_keys = state
        .background
        .handoff_batch_keys
        .clamp(1, MAX_KEYS_PER_BATCH);
    let started = Instant::now();
    loop {
        // Stop if the transition was replaced or finished meanwhile.
        if state
            .transition
            .load()
            .as_ref()
            .is_none_or(|t| t.target.epoch() != transition.target.epoch())
        {
            return Err(WorkerError::NotYet {
                reason: "the transition changed".into(),
            });
        }
        let items = state.store.scan_partition(
            transfer.partition,
            cursor.as_deref(),
            batch_keys,
            state.limits.batch_bytes(),
        )?;
        let Some(last) = items.last().map(|(k, _)| k.clone()) else {
            state.store.meta_put(&name, &[])?;
            return Ok(());
        };
        let bytes: u64 = items
            .iter()
            .map(|(k, o)| (k.len() + o.value_bytes()) as u64)
            .sum();
        let keys = items.len() as u64;
        let request = Request::Handoff {
            epoch: transition.target.epoch(),
            transfer,
            items,
        };
        match call_peer(state, to, request, Duration::from_secs(10)).await? {
            Response::Written => {}
            other => return Err(WorkerError::unexpected(to.id, &other)),
        }
        state.store.meta_put(&name, &last)?;
        cursor = Some(last.to_vec());
        let mut sending = state.sending.lock().unwrap_or_else(|p| p.into_inner());
        let p = sending.entry(transfer).or_default();
        p.keys += keys;
        p.bytes += bytes;
        p.elapsed_ms = started.elapsed().as_millis() as u64;
    }
}

/// Receives one batch: every key must fall in the transfer's partition; the objects are merged
/// and made durable before the answer.
pub(crate) async fn receive(
    state: &NodeState,
    epoch: u64,
    transfer: Transfer,
    items: Vec<(Bytes, Object)>,
) -> Response {
    let invalid = |reason: String| Response::Error(ReplyError::InvalidInput { reason });
    if transfer.to != state.id {
        return invalid(format!(
            "transfer is for node {}, not {}",
            transfer.to, state.id
        ));
    }
    // Only the running transition's own transfers: a batch of an older or unknown one would
    // merge a copy this node cannot vouch for into a partition it may not even receive.
    let ring = state.ring.load();
    let expected = state.transition.load_full().filter(|t| {
        t.target.epoch() == epoch && {
            let n = usize::from(t.n);
            ring.replicas(transfer.partition, n)
                .contains(&transfer.from)
                && ringkv_shared::handoff::incoming(&ring, &t.target, transfer.partition, n)
                    .contains(&transfer.to)
        }
    });
    if expected.is_none() {
        return Response::Error(ReplyError::StaleRing {
            theirs: epoch,
            mine: state
                .transition
                .load()
                .as_ref()
                .map_or(ring.epoch(), |t| t.target.epoch()),
        });
    }
    let mut batch = Vec::with_capacity(items.len());
    for (key, object) in items {
        if ring.partition_of(&key) != transfer.partition {
            return invalid(format!(
                "a key of partition {} in a transfer of partition {}",
                ring.partition_of(&key),
                transfer.partition
            ));
        }
        batch.push((transfer.partition, key, object));
    }
    match state.store.merge_many(&batch).await {
        Ok(_) => Response::Written,
        Err(e) => {
            warn!(error = %e, "cannot store a handoff batch");
            Response::Error(state.storage_error(e))
        }
    }
}
