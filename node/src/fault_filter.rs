//! A test-only network fault filter for real node processes, for machines where the fault
//! suite cannot use a network namespace and nftables.
//!
//! When the environment variable [`FAULT_FILE_ENV`] names a file, the node reads it every
//! 100 ms: each line is an address this node must behave as cut off from (its own calls to it
//! fail at once, as with [`crate::NodeHandle::block`]). An empty or missing file heals. Without
//! the variable nothing runs; nothing on the network can turn it on.

use crate::state::NodeState;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// The environment variable naming the fault file.
pub const FAULT_FILE_ENV: &str = "RINGKV_TEST_FAULT_FILE";

/// Follows the fault file until `stop`, if the environment names one.
pub(crate) async fn run(state: Arc<NodeState>, stop: watch::Receiver<bool>) {
    let Some(path) = std::env::var_os(FAULT_FILE_ENV) else {
        return;
    };
    warn!(file = ?path, "test fault filter enabled");
    let mut current: BTreeSet<SocketAddr> = BTreeSet::new();
    crate::background::every(Duration::from_millis(100), stop, || {
        let wanted: BTreeSet<SocketAddr> = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        if wanted != current {
            info!(blocked = ?wanted, "fault filter changed");
            state.wire.heal();
            state.wire.block(wanted.iter().copied());
            current = wanted;
        }
        async {}
    })
    .await;
}
