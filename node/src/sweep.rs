//! The sweeper: after each new ring (and at start), drop the copies of partitions this node no
//! longer replicates, and report it.
//!
//! **Why.** A node that handed a partition off and kept its copy holds a snapshot that goes
//! stale with the new owners' first delete. Were the partition ever to come back (A→B→A), the
//! handoff would merge the new owners' data into the snapshot, and keys that were deleted and
//! reaped meanwhile would come back. So a partition this node does not replicate in the ring
//! in force is dropped ([`crate::storage::Store::retire_partition`]); one it replicates again
//! is adopted. A retired partition keeps what arrives later (the handoff and writes of a ring
//! change that gives it back) — only what predates the retirement goes.
//!
//! **Order.** The sweep for ring `e` completes (durably) before this node
//! - acknowledges a transition (so no handoff to it starts while it may still drop the
//!   partition it receives: `gossip::gossip_round`), and
//! - reports the sweep in the view ([`ringkv_shared::membership::View::swept`]), which it does
//!   only once no write it began under an older ring is still replicating. Tombstones are
//!   reaped only when every node reported ([`ringkv_shared::membership::View::not_swept`]).

use crate::state::NodeState;
use ringkv_shared::membership::{SWEPT_FOR_GOOD, Status};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Sweeps at start, after every ring install, and every few seconds if a sweep failed.
pub(crate) async fn run(state: Arc<NodeState>, mut stop: watch::Receiver<bool>) {
    loop {
        sweep_if_needed(&state).await;
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            _ = state.sweep_wanted.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// Sweeps for the installed ring if this run has not yet. Returns whether the node has swept
/// for the ring in force.
pub(crate) async fn sweep_if_needed(state: &Arc<NodeState>) -> bool {
    let ring = state.ring.load_full();
    let epoch = ring.epoch();
    if has_swept(state, epoch) {
        return true;
    }
    let worker = state.clone();
    let work = move || {
        let n = usize::from(worker.replication);
        let mut dropped = 0u64;
        for p in 0..ring.partition_count() {
            if ring.replicas(p, n).contains(&worker.id) {
                worker.store.adopt_partition(p)?;
            } else {
                dropped += worker.store.retire_partition(p)?;
            }
        }
        worker.store.sync_retirements()?;
        Ok::<u64, crate::storage::StorageError>(dropped)
    };
    // The simulator runs everything on its one thread, in an order its seed decides.
    let sweep = if state.wire.is_simulated() {
        Ok(work())
    } else {
        tokio::task::spawn_blocking(work).await
    };
    match sweep {
        Ok(Ok(dropped)) => {
            if dropped > 0 {
                info!(node = %state.id, epoch, dropped, "dropped the copies of partitions this node no longer replicates");
            } else {
                debug!(node = %state.id, epoch, "swept: nothing to drop");
            }
            state.swept.fetch_max(epoch + 1, Ordering::AcqRel);
            true
        }
        Ok(Err(e)) => {
            warn!(error = %e, "cannot drop the partitions this node no longer replicates; retrying");
            false
        }
        Err(e) => {
            warn!(error = %e, "the sweep task failed; retrying");
            false
        }
    }
}

/// Whether this run has swept for ring `epoch` (or a later one).
pub(crate) fn has_swept(state: &NodeState, epoch: u64) -> bool {
    state.swept.load(Ordering::Acquire) > epoch
}

/// Reports a completed sweep in the view, once no write begun under an older ring is still
/// replicating. A removed node reports [`SWEPT_FOR_GOOD`] once it has also handed over its
/// hints: it holds nothing and never will.
pub(crate) fn report(state: &NodeState) {
    let epoch = state.ring.load().epoch();
    if !has_swept(state, epoch) || state.in_flight.any_before_ring(epoch) {
        return;
    }
    let me = state.id;
    // A hint a removed node still held could carry a value deleted since: it reports only
    // once its hints are handed over (the hints worker keeps delivering them).
    let hints_left = state.store.hints_pending().unwrap_or(1) > 0;
    state.update_view(|v| {
        let gone = v.status(me) == Some(Status::Removed) && v.ring.member(me).is_none();
        match (gone, hints_left) {
            (true, true) => false,
            (true, false) => v.mark_swept(me, SWEPT_FOR_GOOD),
            (false, _) => v.mark_swept(me, epoch),
        }
    });
}
