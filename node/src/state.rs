//! What a running node holds.

use arc_swap::ArcSwap;
use ringkv_net::Wire;
use ringkv_shared::{Limits, NodeId, ReplyError, Ring};
use std::sync::Arc;

use crate::storage::Store;

/// A running node's shared state.
pub(crate) struct NodeState {
    pub(crate) id: NodeId,
    pub(crate) metrics: crate::metrics::Metrics,
    pub(crate) background: crate::config::BackgroundConfig,
    pub(crate) replication: u8,
    /// Router-mode reads: hedge (ask R, then one more per delay) instead of asking all N.
    pub(crate) read_hedge: Option<ringkv_shared::hedge::Hedger>,
    /// Whether the anti-entropy worker runs exchanges (starts as configured; tools and
    /// benchmarks switch it at run time).
    pub(crate) anti_entropy: std::sync::atomic::AtomicBool,
    pub(crate) ring: ArcSwap<Ring>,
    /// The committed ring change under way, if any (a copy of the view's, for the write path).
    pub(crate) transition: arc_swap::ArcSwapOption<ringkv_shared::membership::Transition>,
    /// The cluster view; [`NodeState::update_view`] persists and installs changes.
    pub(crate) view: std::sync::Mutex<ringkv_shared::membership::View>,
    /// Checks operators' signatures over ring changes, from admin requests and gossip
    /// (the cluster CA; swapped when certificates reload).
    pub(crate) ring_changes: ArcSwap<Box<dyn ringkv_shared::authority::ChangeVerifier>>,
    /// Addresses to gossip with while no other live member is known.
    pub(crate) seeds: Vec<crate::host_addr::HostAddr>,
    /// Gossip rounds run (every tenth also talks to a seed).
    pub(crate) gossip_rounds: std::sync::atomic::AtomicU64,
    /// The transition target epoch noticed at the last gossip round (0 if none).
    pub(crate) noticed_transition: std::sync::atomic::AtomicU64,
    /// This node's own acknowledgements as last told to every peer (`None` before the
    /// first round): peers take them from no one else (see `gossip::tell_own_changes`).
    pub(crate) told_peers: std::sync::Mutex<Option<ringkv_shared::membership::OwnAcknowledgements>>,
    /// A ring gossip brought that this node could not verify, and the members that sent it
    /// (see `gossip::vouch`).
    pub(crate) ring_vouches: std::sync::Mutex<crate::ring_vouches::RingVouches>,
    /// Read repairs clients may have running here at once (see `router::repair`).
    pub(crate) repairs: Arc<tokio::sync::Semaphore>,
    /// This node's outgoing handoff transfers under way.
    pub(crate) sending: std::sync::Mutex<
        std::collections::BTreeMap<
            ringkv_shared::handoff::Transfer,
            ringkv_shared::handoff::Progress,
        >,
    >,
    /// Where the hints worker resumes: the last hint of its previous batch.
    pub(crate) hint_cursor:
        std::sync::Mutex<Option<(NodeId, ringkv_shared::PartitionId, bytes::Bytes)>>,
    /// Every node id the view knows (removed ones included): whom a hint may be held for.
    pub(crate) known_nodes: ArcSwap<Vec<NodeId>>,
    /// Writes this node is coordinating, by the ring and transition they started under.
    pub(crate) in_flight: Arc<crate::in_flight::InFlight>,
    /// One more than the highest ring epoch whose partitions this node does not replicate
    /// have been dropped from its storage in this run (0 until the first sweep; see `sweep`).
    pub(crate) swept: std::sync::atomic::AtomicU64,
    /// Wakes the sweeper when a new ring is installed.
    pub(crate) sweep_wanted: tokio::sync::Notify,
    pub(crate) store: Store,
    /// How this node reaches its peers (QUIC, or the simulated network).
    pub(crate) wire: Wire,
    pub(crate) limits: Limits,
    /// The frame protocol versions this node reads; it answers in its request's version.
    pub(crate) protocols: ringkv_shared::frame::Protocols,
    /// Nodes removed from the cluster by force: peers answer them nothing but gossip (a copy
    /// of the view's `removed_by_force`, for the request path).
    pub(crate) shut_out: ArcSwap<Vec<NodeId>>,
    /// Why this node stopped itself, once it has (see `departure`).
    pub(crate) departure: tokio::sync::watch::Sender<Option<String>>,
}

impl NodeState {
    /// Stops this node for `reason` (see `departure`): the node binary exits with it.
    pub(crate) fn depart(&self, reason: String) {
        self.departure.send_if_modified(|r| {
            let first = r.is_none();
            if first {
                *r = Some(reason);
            }
            first
        });
    }

    /// What a client or peer is told about a storage failure here: an object too large is
    /// its input's fault; anything else is this node's, logged and reported with its id.
    pub(crate) fn storage_error(&self, e: crate::storage::StorageError) -> ReplyError {
        match e {
            crate::storage::StorageError::ObjectTooLarge { .. }
            | crate::storage::StorageError::TooManySiblings { .. }
            | crate::storage::StorageError::Version { .. } => ReplyError::InvalidInput {
                reason: e.to_string(),
            },
            other => {
                tracing::warn!(error = %other, "storage error");
                ReplyError::Storage {
                    node: self.id,
                    reason: other.to_string(),
                }
            }
        }
    }
}
