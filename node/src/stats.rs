//! The node's counters as a [`NodeStats`] answer.

use crate::metrics::Metrics;
use crate::state::NodeState;
use ringkv_shared::proto::NodeStats;

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
        read_repairs: Metrics::get(&m.read_repairs),
    }
}
