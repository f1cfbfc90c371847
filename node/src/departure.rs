//! When a node that is no longer part of the cluster stops itself, and what it says.
//!
//! - A node **removed by force** (an operator declared it lost: `ringkv remove --force`,
//!   `ringkv replace`) learns it from the signed change in any peer's gossip, the only thing its
//!   peers still answer. It drops every copy and hint it holds at once (the cluster stopped
//!   counting them, and may reap tombstones they predate: kept, they could bring deleted keys
//!   back after a restart) and stops.
//! - A node that **left** (its leave completed: removed, out of the ring) stops only once it has
//!   nothing left to give and every other member knows it: it has handed over its hints and
//!   reported itself swept for good (`sweep::report`), and every member it gossips with, asked
//!   directly, holds that report. Peers take a node's own acknowledgements from no one else, so
//!   a node that stopped earlier would block tombstone reaping for good.
//!
//! Stopping means [`NodeState::depart`]: the node binary waits for it beside its signals,
//! prints the reason, shuts down cleanly and exits 0 (so a `Restart=on-failure` unit leaves it
//! down). In-process nodes (tests, the simulator) record the reason and keep running.

use crate::gossip::{Peer, exchange};
use crate::state::NodeState;
use ringkv_shared::membership::{SWEPT_FOR_GOOD, Status};
use std::sync::Arc;
use tracing::{error, info, warn};

/// Checks, once per gossip round, whether this node should stop, and stops it if so.
pub(crate) async fn check(state: &Arc<NodeState>) {
    if state.departure.borrow().is_some() {
        return;
    }
    let me = state.id;
    let view = state.view();
    if view.removed_by_force.contains(&me) {
        let worker = state.clone();
        let dropped = tokio::task::spawn_blocking(move || drop_everything(&worker)).await;
        match dropped {
            Ok(Ok((objects, hints))) => {
                error!(node = %me, objects, hints, "this node was removed from the cluster by force; its copies and hints are dropped");
                state.depart(format!(
                    "node {me} was removed from the cluster by force (an operator declared it lost), so it stops. It dropped the {objects} objects and {hints} hints it held: the cluster no longer counts them. To use this host again, wipe its data directory and join it under a new id"
                ));
            }
            Ok(Err(e)) => {
                warn!(error = %e, "removed by force, but cannot drop this node's data yet; retrying")
            }
            Err(e) => {
                warn!(error = %e, "removed by force, but the task dropping this node's data failed; retrying")
            }
        }
        return;
    }
    let left = view.status(me) == Some(Status::Removed)
        && view.ring.member(me).is_none()
        && view.swept.get(&me) == Some(&SWEPT_FOR_GOOD);
    if !left {
        return;
    }
    for peer in view.gossip_peers(me) {
        match exchange(state, Peer::Member(&peer)).await {
            Ok(theirs) if theirs.swept.get(&me) == Some(&SWEPT_FOR_GOOD) => {}
            _ => return,
        }
    }
    info!(node = %me, "this node has left the cluster and every member knows; stopping");
    state.depart(format!(
        "node {me} has left the cluster: it handed its data and hints over, and every member knows, so it stops. To use this host again, wipe its data directory and join it under a new id"
    ));
}

/// Drops every partition's copies (as a sweep does for a partition the node no longer
/// replicates) and every hint. Returns how many of each.
fn drop_everything(state: &NodeState) -> Result<(u64, u64), crate::storage::StorageError> {
    let mut objects = 0;
    for p in 0..state.ring.load().partition_count() {
        objects += state.store.retire_partition(p)?;
    }
    state.store.sync_retirements()?;
    let hints = state.store.drop_all_hints()?;
    Ok((objects, hints))
}
