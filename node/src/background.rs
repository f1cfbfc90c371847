//! What the background workers (hinted handoff, anti-entropy, tombstone reaping) share: a
//! round run every interval until the node stops, and calls to peers with a deadline.
//!
//! Each round is a complete, cancellation-safe unit: a worker stopped between rounds leaves
//! nothing half done, and a worker stopped inside one leaves only work that the next round
//! (after a restart) repeats harmlessly — every step merges or compares-and-removes.

use crate::state::NodeState;
use crate::storage::StorageError;
use ringkv_net::transport::{Transport, TransportError};
use ringkv_shared::proto::{Request, Response};
use ringkv_shared::{Member, NodeId, ReplyError};
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
        // Biased: a stop wins over a timer that fired in the same poll, always (and the
        // simulator needs no random branch order).
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(interval) => {}
        }
        round().await;
    }
}

/// Why a step of a background worker (anti-entropy, partition handoff, tombstone reaping) did
/// not complete. The worker logs it and tries again next round.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The peer answered with an error.
    #[error("{peer}: {error}")]
    Refused {
        /// The peer.
        peer: NodeId,
        /// Its answer.
        error: ReplyError,
    },
    /// The peer could not be reached.
    #[error("{peer}: {error}")]
    Unreachable {
        /// The peer.
        peer: NodeId,
        /// What the transport said.
        error: TransportError,
    },
    /// The peer did not answer in time.
    #[error("{peer}: no answer within {deadline:?}")]
    Silent {
        /// The peer.
        peer: NodeId,
        /// How long it was given.
        deadline: Duration,
    },
    /// The peer answered with a reply of another kind than the request calls for.
    #[error("{peer}: unexpected reply {reply}")]
    UnexpectedReply {
        /// The peer.
        peer: NodeId,
        /// The reply's kind.
        reply: &'static str,
    },
    /// This node's storage failed.
    #[error("storage: {source}")]
    Storage {
        /// The storage error.
        #[from]
        source: StorageError,
    },
    /// Not possible yet: the next round may find it so (a replica that does not hold the
    /// tombstone yet, a ring change that replaced the one a transfer was for).
    #[error("{reason}")]
    NotYet {
        /// What is missing.
        reason: String,
    },
}

impl WorkerError {
    /// `reply` from `peer` where another kind was expected.
    pub(crate) fn unexpected(peer: NodeId, reply: &Response) -> Self {
        WorkerError::UnexpectedReply {
            peer,
            reply: reply.kind(),
        }
    }
}

/// Calls `peer` with a deadline; a reply error, a transport error and silence all come back as
/// [`WorkerError`]s naming the peer.
pub(crate) async fn call_peer(
    state: &NodeState,
    peer: &Member,
    request: Request,
    deadline: Duration,
) -> Result<Response, WorkerError> {
    let id = peer.id;
    match tokio::time::timeout(deadline, state.wire.call(peer, request)).await {
        Ok(Ok(Response::Error(error))) => Err(WorkerError::Refused { peer: id, error }),
        Ok(Ok(r)) => Ok(r),
        Ok(Err(error)) => Err(WorkerError::Unreachable { peer: id, error }),
        Err(_) => Err(WorkerError::Silent { peer: id, deadline }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_errors_name_the_peer_and_what_went_wrong() {
        let silent = WorkerError::Silent {
            peer: NodeId(3),
            deadline: Duration::from_secs(5),
        };
        assert_eq!(silent.to_string(), "n3: no answer within 5s");
        let unexpected = WorkerError::unexpected(NodeId(2), &Response::Written);
        assert!(
            unexpected.to_string().starts_with("n2: unexpected reply"),
            "{unexpected}"
        );
        let refused = WorkerError::Refused {
            peer: NodeId(4),
            error: ReplyError::StaleRing { theirs: 1, mine: 2 },
        };
        assert!(refused.to_string().contains("epoch 1"), "{refused}");
    }
}
