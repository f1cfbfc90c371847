//! Errors that cross the wire: what a node answers when it cannot do what was asked, and why a
//! single replica failed inside a quorum.

use crate::ids::NodeId;
use serde::{Deserialize, Serialize};

/// Why one replica did not contribute to a quorum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicaError {
    /// No connection could be made, or it broke mid-request.
    #[error("unreachable: {reason}")]
    Unreachable {
        /// The transport's description.
        reason: String,
    },
    /// The replica is believed down and was not asked (recent failures, backing off).
    #[error("marked down after recent failures; not contacted")]
    MarkedDown,
    /// The replica did not answer before the operation's deadline.
    #[error("no answer before the deadline")]
    TimedOut,
    /// The replica had not answered yet when the other failures made the quorum impossible;
    /// the call returned without waiting for it.
    #[error("not awaited: the quorum had already failed")]
    NotAwaited,
    /// A stand-in (not one of the key's first N owners) answered that it holds neither the
    /// key nor a hint for it. That says nothing about the key, so it does not count toward R.
    #[error("stand-in holds neither the key nor a hint for it (no evidence)")]
    HoldsNothing,
    /// The replica answered with an error.
    #[error("refused: {error}")]
    Refused {
        /// What it answered.
        error: Box<ReplyError>,
    },
    /// The replica answered with a message that does not fit the request.
    #[error("unexpected reply: {reply}")]
    UnexpectedReply {
        /// The reply's kind.
        reply: String,
    },
}

/// What a node answers instead of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// The request is well-formed but not acceptable (too large, empty key, bad context).
    #[error("invalid input: {reason}")]
    InvalidInput {
        /// What is wrong.
        reason: String,
    },
    /// The frame could not be decoded.
    #[error("malformed request: {reason}")]
    Malformed {
        /// The decoder's message.
        reason: String,
    },
    /// The frame's protocol version is not one this node speaks.
    #[error("protocol version {found} is not supported (this node speaks {supported})")]
    UnsupportedVersion {
        /// The version in the frame.
        found: u8,
        /// The version this node speaks.
        supported: u8,
    },
    /// Fewer replicas than required acknowledged before the deadline or all answered.
    #[error("{}", QuorumFailedDisplay { required: *required, succeeded: *succeeded, errors })]
    QuorumFailed {
        /// Replicas that had to succeed (R or W).
        required: u8,
        /// Replicas that did.
        succeeded: u8,
        /// Every replica that did not, and why.
        errors: Vec<(NodeId, ReplicaError)>,
    },
    /// A write coordinated during a ring change is stored on W replicas of the current ring
    /// (`held` nodes in all) but fewer than W replicas of the ring being moved to
    /// acknowledged it. It **may have been applied**: it is not rolled back, and the partition
    /// handoff carries it to the new replicas. Retrying stamps it a second time (a sibling of
    /// the same value); read and write back with the read's context instead.
    #[error("{}", RingChangeDisplay { required: *required, held: *held, held_by_target: *held_by_target, errors })]
    RingChangeQuorumFailed {
        /// W.
        required: u8,
        /// Nodes that hold the write (the coordinator and the current ring's replicas that
        /// acknowledged, plus incoming replicas that did).
        held: u8,
        /// Replicas of the target ring that hold it.
        held_by_target: u8,
        /// Every incoming replica that did not acknowledge, and why.
        errors: Vec<(NodeId, ReplicaError)>,
    },
    /// The node is not one of the key's N owners, so it cannot coordinate a write for it
    /// (only an owner knows every dot it issued for the key).
    #[error("{node} is not a replica of partition {partition}")]
    NotReplica {
        /// The node asked.
        node: NodeId,
        /// The key's partition.
        partition: u32,
    },
    /// The node's storage failed.
    #[error("storage error on {node}: {reason}")]
    Storage {
        /// The node whose storage failed.
        node: NodeId,
        /// The storage engine's message.
        reason: String,
    },
    /// The coordinator was reached but did not answer in time or the connection broke: the
    /// write may or may not have been applied. A retry stamps a new version: if the first
    /// attempt was applied, the value is then stored twice, as two siblings, until a write
    /// with a context covering both resolves them. Read, then write with the read's context,
    /// to retry without that.
    #[error("outcome unknown: {node} did not answer ({reason}); the write may have been applied")]
    OutcomeUnknown {
        /// The coordinator.
        node: NodeId,
        /// What happened.
        reason: String,
    },
    /// The request was made by another ring than the one this node has in force; nothing was
    /// done. The sender catches up (gossip) and tries again.
    #[error("ring epoch mismatch: the request is for epoch {theirs}, this node is at {mine}")]
    StaleRing {
        /// The epoch the request named.
        theirs: u64,
        /// This node's epoch.
        mine: u64,
    },
    /// The node is shutting down or otherwise cannot take requests now.
    #[error("unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
    /// The sender's certificate does not give it the right to make this request (see
    /// `ringkv_shared::roles`); nothing was done.
    #[error("forbidden: a {role} certificate may not send `{request}`")]
    Forbidden {
        /// The request's kind.
        request: String,
        /// The role the sender's certificate names.
        role: String,
    },
}

struct QuorumFailedDisplay<'a> {
    required: u8,
    succeeded: u8,
    errors: &'a [(NodeId, ReplicaError)],
}

impl std::fmt::Display for QuorumFailedDisplay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "quorum not met: {} of {} required replicas succeeded",
            self.succeeded, self.required
        )?;
        for (i, (node, err)) in self.errors.iter().enumerate() {
            let sep = if i == 0 { "; " } else { ", " };
            write!(f, "{sep}{node}: {err}")?;
        }
        Ok(())
    }
}

struct RingChangeDisplay<'a> {
    required: u8,
    held: u8,
    held_by_target: u8,
    errors: &'a [(NodeId, ReplicaError)],
}

impl std::fmt::Display for RingChangeDisplay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ring change under way: the write is stored on {} nodes, but only {} of the {} required replicas of the new ring hold it; it may have been applied",
            self.held, self.held_by_target, self.required
        )?;
        for (i, (node, err)) in self.errors.iter().enumerate() {
            let sep = if i == 0 { "; " } else { ", " };
            write!(f, "{sep}{node}: {err}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_failed_names_each_replica() {
        let e = ReplyError::QuorumFailed {
            required: 3,
            succeeded: 2,
            errors: vec![(NodeId(3), ReplicaError::TimedOut)],
        };
        let s = e.to_string();
        assert!(s.contains("2 of 3"), "{s}");
        assert!(s.contains("n3: no answer"), "{s}");
    }
}
