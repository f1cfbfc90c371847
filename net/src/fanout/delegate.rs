//! Handing one request to the first node that can take it: direct-mode writes (an owner
//! coordinates) and router mode (any node coordinates).

use crate::transport::{Transport, TransportError};
use bytes::Bytes;
use ringkv_shared::dvv::VersionVector;
use ringkv_shared::error::{ReplicaError, ReplyError};
use ringkv_shared::ids::NodeId;
use ringkv_shared::proto::{PutReply, Quorum, Request, Response};
use ringkv_shared::ring::Member;
use std::time::Duration;
use tokio::time::Instant;
use tracing::debug;

/// Sends one request to the first of `candidates` that can be reached, and returns its answer.
///
/// This is the failover rule shared by direct-mode writes (try the key's replicas in order)
/// and router mode (try random nodes). A candidate that cannot be connected to has certainly
/// not acted on the request, so the next one is tried. Once a candidate has the request its
/// answer is final: a reply error is returned as it is, and silence or a broken connection is
/// [`ReplyError::OutcomeUnknown`] for a write (it may have been applied; no second candidate
/// is tried, which could apply it twice) or a `QuorumFailed` naming the candidate for a read.
/// `make` builds the request for a candidate given the time left before `deadline`.
pub async fn first_reachable<T: Transport>(
    transport: &T,
    candidates: &[&Member],
    required: u8,
    deadline: Instant,
    mut make: impl FnMut(&Member, Duration) -> Request,
) -> Result<Response, ReplyError> {
    let mut errors = Vec::new();
    for &candidate in candidates {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break;
        }
        let request = make(candidate, remaining);
        let is_write = request.is_write();
        let unknown = |error: ReplicaError, errors: Vec<(NodeId, ReplicaError)>| {
            if is_write {
                ReplyError::OutcomeUnknown {
                    node: candidate.id,
                    reason: error.to_string(),
                }
            } else {
                let mut errors = errors;
                errors.push((candidate.id, error));
                ReplyError::QuorumFailed {
                    required,
                    succeeded: 0,
                    errors,
                }
            }
        };
        match tokio::time::timeout_at(deadline, transport.call(candidate, request)).await {
            Ok(Ok(Response::Error(e))) => return Err(e),
            Ok(Ok(response)) => return Ok(response),
            Ok(Err(
                TransportError::Connect { reason, .. } | TransportError::Refused { reason, .. },
            )) => {
                debug!(node = %candidate.id, %reason, "unreachable, trying the next candidate");
                errors.push((candidate.id, ReplicaError::Unreachable { reason }));
            }
            Ok(Err(TransportError::RequestTooLarge { reason })) => {
                return Err(ReplyError::InvalidInput { reason });
            }
            Ok(Err(e)) => {
                return Err(unknown(
                    ReplicaError::Unreachable {
                        reason: e.to_string(),
                    },
                    errors,
                ));
            }
            Err(_) => return Err(unknown(ReplicaError::TimedOut, errors)),
        }
    }
    Err(ReplyError::QuorumFailed {
        required,
        succeeded: 0,
        errors,
    })
}

/// A client write for an owner to coordinate (see [`delegate_put`]).
#[derive(Clone, Debug)]
pub struct DelegatedPut {
    /// The user key.
    pub key: Bytes,
    /// The causal context the writer read.
    pub context: VersionVector,
    /// The new value, or `None` for a delete.
    pub value: Option<Bytes>,
    /// N, W and the deadline.
    pub quorum: Quorum,
    /// Whether the reply carries the stored object ([`PutReply::body`]).
    pub return_body: bool,
}

/// Has one of the key's owners (`replicas`, the first N of its preference list, in the order
/// to try them) coordinate a write: the first that is not known down stamps the dot, stores
/// and replicates until `quorum.required` nodes hold it (failover as in [`first_reachable`]).
/// Returns the coordinator's answer: the contexts after the write and, if asked, the object.
pub async fn delegate_put<T: Transport>(
    transport: &T,
    write: DelegatedPut,
    replicas: &[Member],
) -> Result<PutReply, ReplyError> {
    let DelegatedPut {
        key,
        context,
        value,
        quorum,
        return_body,
    } = write;
    let deadline = Instant::now() + quorum.timeout();
    // Healthy owners first, in the order given; known-down ones last, as a final resort.
    let mut order: Vec<&Member> = replicas
        .iter()
        .filter(|m| !transport.is_down(m.id))
        .collect();
    order.extend(replicas.iter().filter(|m| transport.is_down(m.id)));
    let response = first_reachable(
        transport,
        &order,
        quorum.required,
        deadline,
        |_, remaining| Request::Put {
            key: key.clone(),
            context: context.clone(),
            value: value.clone(),
            quorum: Quorum {
                timeout_ms: u32::try_from(remaining.as_millis()).unwrap_or(u32::MAX),
                ..quorum
            }
            .for_coordinator(),
            return_body,
        },
    )
    .await?;
    match response {
        Response::Put(reply) => Ok(reply),
        other => Err(ReplyError::OutcomeUnknown {
            node: replicas.first().map_or(NodeId(0), |m| m.id),
            reason: format!("unexpected reply {}", other.kind()),
        }),
    }
}
