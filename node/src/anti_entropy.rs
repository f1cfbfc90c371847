//! Merkle anti-entropy: replicas find and repair what quorums, hints and read repair missed,
//! without anyone reading the keys.
//!
//! Every `ae_interval_ms` the worker picks the next other member (round-robin) and compares the
//! trees of the partitions both replicate ([`ringkv_shared::merkle`]): roots first, then the
//! leaves of partitions whose roots differ, then the `(key, entry hash)` lists of leaves that
//! differ. Only keys whose entries differ are exchanged: pulled and merged here, then this
//! node's (merged) objects pushed and merged there, so one exchange repairs both sides. At most
//! `ae_max_keys_per_round` keys move per exchange, which bounds the background load on
//! foreground latency. Frame bytes in both directions are counted in the node's stats.

use crate::background::WorkerError;
use crate::metrics::Metrics;
use crate::state::NodeState;
use bytes::Bytes;
use ringkv_net::transport::Transport;
use ringkv_shared::frame;
use ringkv_shared::merkle::{diff_entries, diff_leaves};
use ringkv_shared::proto::{Request, Response};
use ringkv_shared::{Member, Object, Ring};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{Instrument, debug, debug_span};

/// Keys per `ReadMany` / `WriteMany` frame.
const BATCH: usize = 128;

// ---- serving ---------------------------------------------------------------------------

/// The refusal of a request made by another ring than this node's, if it was.
fn other_ring(state: &NodeState, theirs: u64) -> Option<Response> {
    let mine = state.ring.load().epoch();
    (theirs != mine).then_some(Response::Error(ringkv_shared::ReplyError::StaleRing {
        theirs,
        mine,
    }))
}

pub(crate) fn roots(state: &NodeState, epoch: u64, partitions: Vec<u32>) -> Response {
    if let Some(refused) = other_ring(state, epoch) {
        return refused;
    }
    let q = state.ring.load().partition_count();
    if partitions.len() > q as usize || partitions.iter().any(|p| *p >= q) {
        return invalid(format!("partitions must be fewer than {q} and below {q}"));
    }
    Response::Hashes(state.store.tree_roots(&partitions))
}

pub(crate) fn leaves(state: &NodeState, partition: u32) -> Response {
    Response::Hashes(state.store.tree_leaves(partition))
}

pub(crate) fn entries(state: &NodeState, partition: u32, leaves: Vec<u16>) -> Response {
    match state.store.leaf_entries(partition, &leaves) {
        Ok(e) => Response::Entries(e),
        Err(e) => Response::Error(state.storage_error(e)),
    }
}

/// This replica's own objects for `keys` (admitted by `dispatch`: at most
/// `MAX_KEYS_PER_BATCH` of them, each within the limits).
pub(crate) fn read_many(state: &NodeState, mut keys: Vec<Bytes>) -> Response {
    let ring = state.ring.load();
    let n = usize::from(state.replication);
    // Each key once, and the reply bounded by bytes as it is built: a request naming one large
    // key thousands of times cannot make the node build a reply it could never send.
    keys.sort_unstable();
    keys.dedup();
    let budget = state.limits.max_frame_bytes.saturating_sub(64 << 10);
    let mut size = 0usize;
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let p = ring.partition_of(&key);
        if !ring.replicas(p, n).contains(&state.id) {
            // Not a replica by the ring in force: whatever is stored is no answer.
            continue;
        }
        match state.store.get(p, &key) {
            Ok(Some(o)) => {
                let object_size = framed_size(&key, &o);
                if !out.is_empty() && size + object_size > budget {
                    // The rest would not fit one reply: the caller asks again next round.
                    break;
                }
                size += object_size;
                out.push((key, o))
            }
            Ok(None) => {}
            // A corrupt object is left out: the peer keeps its own copy and pushes it here.
            Err(e) => debug!(error = %e, "skipping an unreadable object"),
        }
    }
    Response::Objects(out)
}

pub(crate) async fn write_many(
    state: &NodeState,
    epoch: u64,
    items: Vec<(Bytes, Object)>,
) -> Response {
    if let Some(refused) = other_ring(state, epoch) {
        return refused;
    }
    let ring = state.ring.load_full();
    let mut repaired = 0;
    for (key, object) in items {
        match state
            .store
            .merge_reporting(ring.partition_of(&key), &key, &object)
            .await
        {
            Ok((_, changed)) => repaired += u64::from(changed),
            // A key whose merge would exceed the merge cap keeps this replica's copy (counted
            // and logged by the store); the rest of the batch still merges.
            Err(
                crate::storage::StorageError::ObjectTooLarge { .. }
                | crate::storage::StorageError::TooManySiblings { .. },
            ) => {}
            Err(e) => return Response::Error(state.storage_error(e)),
        }
    }
    Metrics::add(&state.metrics.ae_keys_repaired, repaired);
    Response::Written
}

/// About what `key` and `object` take in a frame: the bytes, and a few dozen per sibling for
/// its dot and clock entry. Batches and replies are cut by it.
fn framed_size(key: &[u8], object: &Object) -> usize {
    key.len() + object.value_bytes() + 32 * (1 + object.siblings().len())
}

fn invalid(reason: String) -> Response {
    Response::Error(ringkv_shared::ReplyError::InvalidInput { reason })
}

// ---- the worker ------------------------------------------------------------------------

/// Runs exchanges until `stop` turns true, with the next other member each time.
pub(crate) async fn run(state: Arc<NodeState>, stop: watch::Receiver<bool>) {
    let interval = Duration::from_millis(state.background.ae_interval_ms);
    let mut turn = 0usize;
    crate::background::every(interval, stop, || {
        turn = turn.wrapping_add(1);
        exchange_with_next(state.clone(), turn)
    })
    .await;
}

async fn exchange_with_next(state: Arc<NodeState>, turn: usize) {
    if !state
        .anti_entropy
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        return;
    }
    let ring = state.ring.load_full();
    let peers: Vec<Member> = ring
        .members()
        .filter(|m| m.id != state.id)
        .cloned()
        .collect();
    let Some(peer) = peers.get(turn % peers.len().max(1)) else {
        return;
    };
    if state.wire.is_down(peer.id) {
        return;
    }
    let span = debug_span!("anti_entropy", node = %state.id, peer = %peer.id);
    if let Err(e) = exchange(&state, &ring, peer).instrument(span).await {
        debug!(peer = %peer.id, error = %e, "anti-entropy exchange failed");
    }
}

/// What one exchange did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exchange {
    /// Partitions whose roots differed.
    pub partitions_differing: usize,
    /// Keys pulled from the peer.
    pub pulled: usize,
    /// Keys pushed to the peer.
    pub pushed: usize,
}

/// One exchange with `peer` over the partitions both replicate.
pub(crate) async fn exchange(
    state: &Arc<NodeState>,
    ring: &Ring,
    peer: &Member,
) -> Result<Exchange, WorkerError> {
    let n = usize::from(state.replication);
    let shared: Vec<u32> = (0..ring.partition_count())
        .filter(|p| {
            let r = ring.replicas(*p, n);
            r.contains(&state.id) && r.contains(&peer.id)
        })
        .collect();
    let mut report = Exchange::default();
    if shared.is_empty() {
        return Ok(report);
    }
    let mine = state.store.tree_roots(&shared);
    let theirs = hashes(
        peer,
        call(
            state,
            peer,
            Request::AeRoots {
                epoch: ring.epoch(),
                partitions: shared.clone(),
            },
        )
        .await?,
    )?;
    let differing: Vec<u32> = shared
        .iter()
        .zip(mine.iter().zip(theirs.iter().chain(std::iter::repeat(&0))))
        .filter(|(_, (a, b))| a != b)
        .map(|(p, _)| *p)
        .collect();
    report.partitions_differing = differing.len();
    let mut budget = state.background.ae_max_keys_per_round;
    for p in differing {
        if budget == 0 {
            break;
        }
        let their_leaves = hashes(
            peer,
            call(state, peer, Request::AeLeaves { partition: p }).await?,
        )?;
        let leaves = diff_leaves(&state.store.tree_leaves(p), &their_leaves);
        if leaves.is_empty() {
            continue;
        }
        let theirs = match call(
            state,
            peer,
            Request::AeEntries {
                partition: p,
                leaves: leaves.clone(),
            },
        )
        .await?
        {
            Response::Entries(e) => e,
            other => return Err(WorkerError::unexpected(peer.id, &other)),
        };
        let mine = state.store.leaf_entries(p, &leaves)?;
        let diff = diff_entries(&mine, &theirs);
        let pull: Vec<Bytes> = diff.to_pull().take(budget).cloned().collect();
        budget -= pull.len();
        for chunk in pull.chunks(BATCH) {
            let objects = match call(
                state,
                peer,
                Request::ReadMany {
                    keys: chunk.to_vec(),
                },
            )
            .await?
            {
                Response::Objects(o) => o,
                other => return Err(WorkerError::unexpected(peer.id, &other)),
            };
            for (key, object) in objects {
                let changed = match state.store.merge_reporting(p, &key, &object).await {
                    Ok((_, changed)) => changed,
                    // Past the merge cap: this copy stays (counted and logged by the store).
                    Err(
                        crate::storage::StorageError::ObjectTooLarge { .. }
                        | crate::storage::StorageError::TooManySiblings { .. },
                    ) => false,
                    Err(e) => return Err(e.into()),
                };
                if changed {
                    Metrics::add(&state.metrics.ae_keys_repaired, 1);
                }
                report.pulled += 1;
            }
        }
        // Keys merged here go back so the peer has the merge too; keys only this side holds
        // take what is left of the budget.
        let pulled: std::collections::HashSet<&Bytes> = pull.iter().collect();
        let only_mine: Vec<Bytes> = diff.only_mine.iter().take(budget).cloned().collect();
        budget -= only_mine.len();
        let push: Vec<Bytes> = diff
            .differ
            .iter()
            .filter(|k| pulled.contains(k))
            .cloned()
            .chain(only_mine)
            .collect();
        // Batches of at most BATCH keys and `Limits::batch_bytes` of objects (at least one
        // object each; every stored object fits a frame).
        let max_bytes = state.limits.batch_bytes();
        let mut keys = push.iter().peekable();
        while keys.peek().is_some() {
            let (mut items, mut bytes) = (Vec::new(), 0usize);
            while let Some(key) = keys.peek() {
                let Ok(Some(o)) = state.store.get(p, key) else {
                    keys.next();
                    continue;
                };
                let size = framed_size(key, &o);
                if !items.is_empty() && (items.len() >= BATCH || bytes + size > max_bytes) {
                    break;
                }
                bytes += size;
                items.push(((*key).clone(), o));
                keys.next();
            }
            if items.is_empty() {
                break;
            }
            report.pushed += items.len();
            let request = Request::WriteMany {
                epoch: ring.epoch(),
                items,
            };
            match call(state, peer, request).await? {
                Response::Written => {}
                other => return Err(WorkerError::unexpected(peer.id, &other)),
            }
        }
    }
    Metrics::add(&state.metrics.ae_rounds, 1);
    if report.pulled + report.pushed > 0 {
        debug!(?report, "anti-entropy repaired keys");
    }
    Ok(report)
}

fn frame_len<T: Serialize>(msg: &T) -> u64 {
    frame::encode(msg, usize::MAX).map_or(0, |f| f.len() as u64)
}

async fn call(state: &NodeState, peer: &Member, request: Request) -> Result<Response, WorkerError> {
    Metrics::add(&state.metrics.ae_bytes_sent, frame_len(&request));
    let reply = crate::background::call_peer(state, peer, request, Duration::from_secs(10)).await?;
    Metrics::add(&state.metrics.ae_bytes_received, frame_len(&reply));
    Ok(reply)
}

fn hashes(peer: &Member, r: Response) -> Result<Vec<u64>, WorkerError> {
    match r {
        Response::Hashes(h) => Ok(h),
        other => Err(WorkerError::unexpected(peer.id, &other)),
    }
}
