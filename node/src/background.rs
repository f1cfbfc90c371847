//! What the background workers (hinted handoff, anti-entropy, tombstone reaping) share: a
//! round run every interval until the node stops, and calls to peers with a deadline.
//!
//! Each round is a complete, cancellation-safe unit: a worker stopped between rounds leaves
//! nothing half done, and a worker stopped inside one leaves only work that the next round
//! (after a restart) repeats harmlessly — every step merges or compares-and-removes.

use crate::state::NodeState;
use ringkv_shared::Member;
use ringkv_shared::proto::{Request, Response};
use ringkv_shared::transport::Transport;
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;

/// Runs `round` every `interval` until `stop` turns true.
pub(crate) async fn every<F, Fut>(interval: Duration, mut stop: watch::Receiver<bool>, mut round: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let interval = interval.max(Duration::from_millis(1));
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(interval) => {}
        }
        round().await;
    }
}

/// Calls `peer` with a deadline; a reply error, a transport error and silence all come back as
/// `Err` with a message naming the peer.
pub(crate) async fn call_peer(
    state: &NodeState,
    peer: &Member,
    request: Request,
    deadline: Duration,
) -> Result<Response, String> {
    match tokio::time::timeout(deadline, state.quic.call(peer, request)).await {
        Ok(Ok(Response::Error(e))) => Err(format!("{}: {e}", peer.id)),
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(format!("{}: {e}", peer.id)),
        Err(_) => Err(format!("{}: no answer within {deadline:?}", peer.id)),
    }
}
