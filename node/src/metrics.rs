//! The node's counters. Plain atomics: cheap on the hot path, read by `Stats` requests.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters since the node started.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) hints_stored: AtomicU64,
    pub(crate) hints_delivered: AtomicU64,
    pub(crate) ae_rounds: AtomicU64,
    pub(crate) ae_keys_repaired: AtomicU64,
    pub(crate) ae_bytes_sent: AtomicU64,
    pub(crate) ae_bytes_received: AtomicU64,
    pub(crate) tombstones_reaped: AtomicU64,
    pub(crate) read_repairs: AtomicU64,
}

impl Metrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
