//! The node's cluster view: persisted in its storage, installed for the request path (ring,
//! transition), and the view a node starts with.
//!
//! The decisions are [`ringkv_shared::membership`]'s; this module stores their result.

use crate::state::NodeState;
use ringkv_shared::Member;
use ringkv_shared::encoding::{decode_view, encode_view};
use ringkv_shared::membership::View;
use std::sync::Arc;
use tracing::{info, warn};

pub(crate) const VIEW_RECORD: &str = "view";

impl NodeState {
    /// Applies `f` to the view. If the view changed, it is written to disk (synced) and its
    /// ring and transition are installed for the request path before this returns.
    pub(crate) fn update_view<R>(&self, f: impl FnOnce(&mut View) -> R) -> R {
        let mut view = self.view.lock().unwrap_or_else(|p| p.into_inner());
        let before = view.clone();
        let out = f(&mut view);
        if *view != before {
            if let Err(e) = self.store.meta_put(VIEW_RECORD, &encode_view(&view)) {
                warn!(error = %e, "cannot persist the cluster view; it will be gossiped again");
            }
            if view.ring != before.ring {
                info!(node = %self.id, epoch = view.ring.epoch(), "installing a new ring");
                self.ring.store(Arc::new(view.ring.clone()));
                self.sweep_wanted.notify_one();
            }
            if view.members.len() != before.members.len() {
                self.known_nodes
                    .store(Arc::new(view.members.keys().copied().collect()));
            }
            if view.transition != before.transition {
                self.transition.store(view.transition.clone().map(Arc::new));
            }
            if view.removed_by_force != before.removed_by_force {
                warn!(node = %self.id, removed = ?view.removed_by_force, "nodes removed by force: shut out of everything but gossip");
                self.shut_out
                    .store(Arc::new(view.removed_by_force.iter().copied().collect()));
            }
        }
        out
    }

    /// A copy of the current view.
    pub(crate) fn view(&self) -> View {
        self.view.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Why a node has no view to start with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// Its storage could not be read.
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    /// No ring can be built from the configured members.
    #[error(transparent)]
    Ring(#[from] ringkv_shared::ring::RingError),
}

/// The view a node starts with: the persisted one if there is one (a restarted node rejoins as
/// it was, without being joined again), else a new cluster's from `members` (the cluster
/// `name`), else a newcomer's.
///
/// The cluster id comes with the view: a data directory keeps the id of the cluster it was
/// written by, whatever the config says now, and gossip with another cluster is refused
/// naming both ids. A view persisted before cluster ids existed gets the one its founding
/// config gives (or learns it from its peers, if it has no founding members).
pub(crate) fn initial_view(
    store: &crate::storage::Store,
    me: Member,
    name: &str,
    partitions: u32,
    founders: Vec<Member>,
) -> Result<View, StartError> {
    let founding = |founders: Vec<Member>| -> Result<View, StartError> {
        Ok(View::found(
            name,
            ringkv_shared::Ring::balanced(partitions, founders)?,
        ))
    };
    if let Some(bytes) = store.meta_get(VIEW_RECORD)? {
        match decode_view(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|v| {
                v.validate(partitions)?;
                Ok(v)
            }) {
            Ok(mut view) => {
                if view.cluster.is_none() && !founders.is_empty() {
                    view.cluster = founding(founders)?.cluster;
                }
                if let Some(cluster) = view.cluster {
                    info!(%cluster, "this data directory belongs to cluster {cluster}");
                }
                let before = view.members.get(&me.id).cloned();
                if let Some(was) = before
                    && view.announce_member(&me)
                {
                    // Only this node says where it is; gossip carries the new record.
                    info!(
                        was = %was.addr,
                        now = %me.addr,
                        host = ?me.host,
                        "this node is reached at another address than before; telling the cluster"
                    );
                }
                return Ok(view);
            }
            Err(e) => {
                warn!(error = %e, "the persisted cluster view is unreadable; starting from the config and relearning it by gossip")
            }
        }
    }
    if founders.is_empty() {
        Ok(View::newcomer(me, partitions)?)
    } else {
        let view = founding(founders)?;
        if let Some(cluster) = view.cluster {
            info!(%cluster, "founding cluster {cluster}");
        }
        Ok(view)
    }
}
