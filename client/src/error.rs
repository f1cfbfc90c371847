//! What a client call can fail with.

use ringkv_shared::{NodeId, ReplicaError, ReplyError};
use std::net::SocketAddr;

/// Why a client call failed.
///
/// For writes, [`ClientError::may_have_been_applied`] tells "failed, not applied" apart from
/// "may be stored": as in Dynamo, a write is never rolled back, so a write that reached some
/// replicas but not W of them stays on those replicas and spreads from there.
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
    /// Fewer replicas than required succeeded. For a write with `succeeded > 0`, the write is
    /// stored on those replicas (it is not rolled back) and will reach the others through read
    /// repair and anti-entropy. Retrying with the same context stamps it again (two siblings
    /// of one value if both landed); read and write with the read's context instead.
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
    /// A stored value could not be decoded as the requested type (or encoded).
    #[error("value codec: {reason}")]
    Codec {
        /// What went wrong.
        reason: String,
    },
    /// The read step of a read-modify-write ([`crate::Client::modify`]) failed, so nothing
    /// was written.
    #[error("read before modify failed, nothing written: {error}")]
    ReadFailed {
        /// Why the read failed.
        error: Box<ClientError>,
    },
    /// A node answered with an error of its own (storage failure, shutting down, protocol
    /// mismatch).
    #[error("node error: {error}")]
    Node {
        /// The node's answer.
        error: ReplyError,
    },
}

impl ClientError {
    /// Whether a failed write may nevertheless be stored on some replica. `false` means it
    /// certainly was not: the input was refused, or no coordinator could be reached at all.
    pub fn may_have_been_applied(&self) -> bool {
        match self {
            ClientError::InvalidInput { .. }
            | ClientError::Unavailable { .. }
            | ClientError::Tls { .. }
            | ClientError::Codec { .. }
            | ClientError::ReadFailed { .. } => false,
            ClientError::QuorumFailed { succeeded, .. } => *succeeded > 0,
            ClientError::OutcomeUnknown { .. } | ClientError::Node { .. } => true,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applied_or_not() {
        let failed = |succeeded| ClientError::QuorumFailed {
            required: 3,
            succeeded,
            errors: vec![(NodeId(3), ReplicaError::TimedOut)],
        };
        assert!(!failed(0).may_have_been_applied());
        assert!(failed(2).may_have_been_applied());
        assert!(!ClientError::InvalidInput { reason: "x".into() }.may_have_been_applied());
        assert!(
            !ClientError::ReadFailed {
                error: Box::new(failed(2))
            }
            .may_have_been_applied(),
            "a failed read before a modify wrote nothing, whatever the read's replicas did"
        );
        assert!(
            ClientError::OutcomeUnknown {
                node: NodeId(1),
                reason: "x".into()
            }
            .may_have_been_applied()
        );
    }
}
