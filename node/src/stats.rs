//! The node's counters as a [`NodeStats`] answer.

use crate::metrics::{Liveness, Metrics, Stage};
use crate::state::NodeState;
use ringkv_net::transport::Transport;
use ringkv_shared::membership::Status;
use ringkv_shared::proto::NodeStats;

/// Samples the gauges (objects, hints and tombstones pending, ring epoch, members by stage)
/// and brings the store's counters (fsyncs, merges refused) up to date.
pub(crate) fn sample_gauges(state: &NodeState) {
    let m = &state.metrics;
    let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    m.objects.set(clamp(state.store.approximate_len() as u64));
    m.hints_pending
        .set(clamp(state.store.hints_pending().unwrap_or(0)));
    m.tombstones_pending
        .set(clamp(state.store.tombstone_count().unwrap_or(0)));
    let store = state.store.stats();
    Metrics::catch_up(&m.fsyncs, store.fsyncs);
    Metrics::catch_up(&m.merges_refused, store.merges_refused);
    let ring = state.ring.load();
    m.ring_epoch.set(clamp(ring.epoch()));
    m.disk_bytes
        .set(clamp(state.store.disk_bytes().unwrap_or(0)));
    let (mut up, mut down) = (0u64, 0u64);
    for peer in ring.members().filter(|p| p.id != state.id) {
        if state.wire.is_unreachable(peer.id) {
            down += 1;
        } else {
            up += 1;
        }
    }
    m.peers
        .get_or_create(&Liveness { state: "up" })
        .set(clamp(up));
    m.peers
        .get_or_create(&Liveness { state: "down" })
        .set(clamp(down));
    let view = state.view();
    let remaining = view
        .transition
        .as_ref()
        .map_or(0, |t| t.remaining(&view.ring).len());
    m.transfers_remaining.set(clamp(remaining as u64));
    for status in [
        Status::Joining,
        Status::Up,
        Status::Leaving,
        Status::Removed,
    ] {
        let n = view.members.values().filter(|r| r.status == status).count();
        m.members
            .get_or_create(&Stage {
                stage: status.as_str(),
            })
            .set(clamp(n as u64));
    }
}

/// Current counters of this node.
pub(crate) fn collect(state: &NodeState) -> NodeStats {
    let m = &state.metrics;
    let store = state.store.stats();
    NodeStats {
        node: state.id,
        objects: state.store.approximate_len() as u64,
        writes: store.writes,
        fsyncs: store.fsyncs,
        hints_pending: state.store.hints_pending().unwrap_or(u64::MAX),
        hints_stored: Metrics::get(&m.hints_stored),
        hints_delivered: Metrics::get(&m.hints_delivered),
        ae_rounds: Metrics::get(&m.ae_rounds),
        ae_keys_repaired: Metrics::get(&m.ae_keys_repaired),
        ae_bytes_sent: Metrics::get(&m.ae_bytes_sent),
        ae_bytes_received: Metrics::get(&m.ae_bytes_received),
        tombstones_reaped: Metrics::get(&m.tombstones_reaped),
        tombstones_pending: state.store.tombstone_count().unwrap_or(u64::MAX),
        requests: m.requests_total(),
        slow_readers_reset: Metrics::get(&m.slow_readers_reset),
        repairs_refused: Metrics::get(&m.repairs_refused),
    }
}
