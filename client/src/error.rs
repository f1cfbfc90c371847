//! What a client call can fail with.

use ringkv_shared::{NodeId, ReplicaError, ReplyError};
use std::net::SocketAddr;

/// Why a client call failed.
///
/// The variants separate "failed, not applied" ([`ClientError::InvalidInput`],
/// [`ClientError::QuorumFailed`] with no coordinator reached) from "unknown outcome"
/// ([`ClientError::OutcomeUnknown`]): after the latter a write may or may not be stored.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The call's arguments are unacceptable (empty or oversized key or value, bad context,
    /// R or W out of range). Nothing was sent or stored.
    #[error("invalid input: {reason}")]
    InvalidInput {
        /// What is wrong.
        reason: String,
    },
    /// Fewer replicas than required succeeded.
    #[error("{}", ReplyError::QuorumFailed { required: *required, succeeded: *succeeded, errors: errors.clone() })]
    QuorumFailed {
        /// Replicas that had to succeed (R or W).
        required: u8,
        /// Replicas that did.
        succeeded: u8,
        /// Every replica that did not, and why.
        errors: Vec<(NodeId, ReplicaError)>,
    },
    /// A coordinator took the write but its answer was lost or late: the write may or may
    /// not have been applied.
    #[error("outcome unknown: {node} did not answer ({reason})")]
    OutcomeUnknown {
        /// The coordinator.
        node: NodeId,
        /// What happened.
        reason: String,
    },
    /// No seed or node could be reached to learn the ring.
    #[error("cannot reach the cluster: {}", format_seed_errors(errors))]
    Unavailable {
        /// Each address tried and why it failed.
        errors: Vec<(SocketAddr, String)>,
    },
    /// The TLS material is unusable, or the cluster refused our certificate.
    #[error("TLS: {reason}")]
    Tls {
        /// What went wrong.
        reason: String,
    },
    /// A node answered with an error of its own (storage failure, shutting down, protocol
    /// mismatch).
    #[error("node error: {error}")]
    Node {
        /// The node's answer.
        error: ReplyError,
    },
}

fn format_seed_errors(errors: &[(SocketAddr, String)]) -> String {
    if errors.is_empty() {
        return "no seeds configured".into();
    }
    errors
        .iter()
        .map(|(a, e)| format!("{a}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<ReplyError> for ClientError {
    fn from(e: ReplyError) -> Self {
        match e {
            ReplyError::InvalidInput { reason } => ClientError::InvalidInput { reason },
            ReplyError::QuorumFailed {
                required,
                succeeded,
                errors,
            } => ClientError::QuorumFailed {
                required,
                succeeded,
                errors,
            },
            ReplyError::OutcomeUnknown { node, reason } => {
                ClientError::OutcomeUnknown { node, reason }
            }
            other => ClientError::Node { error: other },
        }
    }
}
