//! Replica operations: read, write-with-merge, and coordinating a client write.

use crate::state::{NodeState, Peers};
use crate::storage::StorageError;
use bytes::Bytes;
use ringkv_shared::proto::{Quorum, Response};
use ringkv_shared::{NodeId, Object, ReplyError, VersionVector, fanout};
use std::sync::Arc;
use tracing::warn;

pub(crate) fn storage_error(state: &NodeState, e: StorageError) -> ReplyError {
    match e {
        StorageError::ObjectTooLarge { .. } => ReplyError::InvalidInput {
            reason: e.to_string(),
        },
        other => {
            warn!(error = %other, "storage error");
            ReplyError::Storage {
                node: state.id,
                reason: other.to_string(),
            }
        }
    }
}

fn check_key(state: &NodeState, key: &[u8], value: Option<&[u8]>) -> Result<(), ReplyError> {
    state
        .limits
        .check(key, value)
        .map_err(|reason| ReplyError::InvalidInput { reason })
}

/// This replica's object for `key` (empty if none).
pub(crate) fn read(state: &NodeState, key: Bytes) -> Response {
    if let Err(e) = check_key(state, &key, None) {
        return Response::Error(e);
    }
    let partition = state.ring.load().partition_of(&key);
    match state.store.get(partition, &key) {
        Ok(o) => Response::Object(o.unwrap_or_default()),
        Err(e) => Response::Error(storage_error(state, e)),
    }
}

/// Merges `object` into this replica's copy of `key`.
pub(crate) async fn write(state: &NodeState, key: Bytes, object: Object) -> Response {
    if let Err(e) = check_key(state, &key, None) {
        return Response::Error(e);
    }
    let partition = state.ring.load().partition_of(&key);
    match state.store.merge(partition, &key, &object).await {
        Ok(_) => Response::Written,
        Err(e) => Response::Error(storage_error(state, e)),
    }
}

/// Coordinates a client write here: stamp, store, replicate to `replicas` until
/// `quorum.required` replicas (this one included) hold the new object.
pub(crate) async fn put(
    state: &Arc<NodeState>,
    key: Bytes,
    context: VersionVector,
    value: Option<Bytes>,
    replicas: Vec<NodeId>,
    quorum: Quorum,
) -> Response {
    if let Err(e) = check_key(state, &key, value.as_deref()) {
        return Response::Error(e);
    }
    if quorum.required == 0 {
        return Response::Error(ReplyError::InvalidInput {
            reason: "W must be at least 1".into(),
        });
    }
    let ring = state.ring.load_full();
    let partition = ring.partition_of(&key);
    let object = match state
        .store
        .update(
            partition,
            &key,
            &context,
            value,
            state.limits.max_object_bytes,
        )
        .await
    {
        Ok(o) => o,
        Err(e) => return Response::Error(storage_error(state, e)),
    };
    let clock = object.clock().clone();
    let others: Vec<NodeId> = replicas.into_iter().filter(|id| *id != state.id).collect();
    let targets = NodeState::members(&ring, &others);
    let result = fanout::replicate(
        &Peers(state.clone()),
        key,
        object,
        vec![state.id],
        targets,
        quorum.required.into(),
        quorum.timeout(),
    )
    .await;
    match result {
        Ok(_) => Response::Put { clock },
        Err(e) => Response::Error(e),
    }
}
