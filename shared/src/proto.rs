//! The request/response messages between clients and nodes, and between nodes.
//!
//! One bidirectional QUIC stream carries one [`Request`] frame and one [`Reply`] frame (see
//! [`crate::frame`]). Replica operations (`Read`, `Write`) touch one node's storage only;
//! `Put` asks a replica to coordinate a write (stamp the dot, store, replicate); the `Route*`
//! messages are router mode, where the receiving node coordinates the whole quorum itself.

use crate::dvv::VersionVector;
use crate::error::ReplyError;
use crate::handoff::{Progress, Transfer};
use crate::ids::NodeId;
use crate::limits::{Limits, MAX_KEYS_PER_BATCH};
use crate::membership::View;
use crate::object::Object;
use crate::ring::Ring;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Replication parameters of one operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quorum {
    /// Replicas per key.
    pub n: u8,
    /// Replies required (R for reads, W for writes).
    pub required: u8,
    /// Deadline for the whole operation, in milliseconds.
    pub timeout_ms: u32,
}

/// The longest deadline a node honours for one operation, in milliseconds; longer ones are cut
/// to it. It bounds how long a write's copies can stay in flight (see tombstone grace).
pub const MAX_TIMEOUT_MS: u32 = 60_000;

impl Quorum {
    /// Whether `required` replies (R or W) out of `n` replicas is a quorum that can be met:
    /// `1 <= required <= n`. The one rule clients and nodes both apply.
    pub fn check_counts(n: u8, required: u8) -> Result<(), String> {
        if n == 0 || required == 0 || required > n {
            return Err(format!("quorum {required} must be between 1 and N={n}"));
        }
        Ok(())
    }

    /// [`Quorum::check_counts`] of this quorum.
    pub fn validate(&self) -> Result<(), String> {
        Self::check_counts(self.n, self.required)
    }

    /// The same quorum with its deadline cut to [`MAX_TIMEOUT_MS`].
    pub fn capped(self) -> Quorum {
        Quorum {
            timeout_ms: self.timeout_ms.min(MAX_TIMEOUT_MS),
            ..self
        }
    }

    /// The budget a coordinator takes for itself out of this deadline: 90%, so that its
    /// answer (success or a named failure) reaches the caller before the caller gives up.
    pub fn for_coordinator(self) -> Quorum {
        Quorum {
            timeout_ms: (self.timeout_ms / 10 * 9).max(1),
            ..self
        }
    }

    /// The deadline as a duration.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.timeout_ms.into())
    }
}

/// A request frame's body.
/// Not `#[non_exhaustive]`: the protocol version, not the type, governs evolution, and both
/// sides must handle every message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Liveness check; answered with [`Response::Pong`].
    Ping,
    /// The node's current ring; answered with [`Response::Ring`].
    GetRing,
    /// Read this replica's object for `key`; answered with [`Response::Object`].
    Read {
        /// The user key.
        key: Bytes,
    },
    /// Merge `object` into this node's copy of `key`; answered with [`Response::Written`].
    /// With `hint_for: Some(owner)` this node is a stand-in: it keeps the object as a hint
    /// for `owner` (apart from its own data) and hands it over when `owner` is back.
    Write {
        /// The user key.
        key: Bytes,
        /// The object to merge.
        object: Object,
        /// The owner this copy stands in for, if any.
        hint_for: Option<NodeId>,
    },
    /// Coordinate a client write at this replica: stamp a dot of this node's actor, store, and
    /// replicate to the key's other owners (or stand-ins for those that are down) until
    /// `quorum.required` nodes, this one included, hold it. `value: None` is a delete.
    /// Answered with [`Response::Put`], or `NotReplica` if this node is not one of the key's N
    /// owners.
    Put {
        /// The user key.
        key: Bytes,
        /// The causal context the client read (empty for a blind write).
        context: VersionVector,
        /// The new value, or `None` for a delete.
        value: Option<Bytes>,
        /// N, W and the deadline.
        quorum: Quorum,
        /// Whether the reply carries the stored object after the write
        /// ([`PutReply::body`], Riak's `return_body`).
        return_body: bool,
    },
    /// The node's counters; answered with [`Response::Stats`].
    Stats,
    /// Anti-entropy: the roots of these partitions' hash trees, in the same order; answered
    /// with [`Response::Hashes`].
    ///
    /// Refused with [`crate::ReplyError::StaleRing`] unless `epoch` is the receiver's ring
    /// epoch: two nodes compare (and repair) only what they both replicate by one ring.
    AeRoots {
        /// The sender's ring epoch.
        epoch: u64,
        /// The partitions to compare.
        partitions: Vec<u32>,
    },
    /// Anti-entropy: every leaf of one partition's tree; answered with [`Response::Hashes`].
    AeLeaves {
        /// The partition.
        partition: u32,
    },
    /// Anti-entropy: `(key, entry hash)` of every key in these leaves of a partition; answered
    /// with [`Response::Entries`].
    AeEntries {
        /// The partition.
        partition: u32,
        /// The leaves.
        leaves: Vec<u16>,
    },
    /// This replica's own objects for `keys` (hints excluded; absent keys left out); answered
    /// with [`Response::Objects`].
    ReadMany {
        /// The user keys.
        keys: Vec<Bytes>,
    },
    /// Merge each object into this replica; answered with [`Response::Written`]. Refused with
    /// [`crate::ReplyError::StaleRing`] unless `epoch` is the receiver's ring epoch, so that
    /// a node that has not learned of a ring change cannot spread a copy it no longer owns.
    WriteMany {
        /// The sender's ring epoch.
        epoch: u64,
        /// Keys and objects.
        items: Vec<(Bytes, Object)>,
    },
    /// Every hint this node holds for `key`, merged (empty if none); answered with
    /// [`Response::Object`]. Tombstone reaping asks every member before removing a tombstone.
    HintsFor {
        /// The user key.
        key: Bytes,
    },
    /// Remove `key`'s tombstone for good, if this replica's object is still exactly a
    /// tombstone with this clock; answered with [`Response::Written`].
    Reap {
        /// The user key.
        key: Bytes,
        /// The tombstone's causal context.
        clock: VersionVector,
    },
    /// Router mode: coordinate a quorum read of `key`; answered with [`Response::Read`].
    RouteGet {
        /// The user key.
        key: Bytes,
        /// N, R and the deadline.
        quorum: Quorum,
    },
    /// Router mode: coordinate a write of `key` (forwarded to a replica if this node is not
    /// one); answered with [`Response::Put`].
    RoutePut {
        /// The user key.
        key: Bytes,
        /// The causal context the client read.
        context: VersionVector,
        /// The new value, or `None` for a delete.
        value: Option<Bytes>,
        /// N, W and the deadline.
        quorum: Quorum,
        /// Whether the reply carries the stored object after the write
        /// ([`PutReply::body`], Riak's `return_body`).
        return_body: bool,
    },
    /// Gossip: the sender's view of the cluster; answered with [`Response::View`], the
    /// receiver's view after merging (push-pull).
    Gossip {
        /// The sender's view.
        view: Box<View>,
    },
    /// Partition handoff: objects of `transfer.partition` from an old replica to a new one,
    /// merged on arrival; answered with [`Response::Written`] once durable.
    ///
    /// Refused unless the receiver's running transition has target epoch `epoch` and needs
    /// this transfer.
    Handoff {
        /// The target ring epoch of the transition the transfer belongs to.
        epoch: u64,
        /// Which transfer the batch belongs to.
        transfer: Transfer,
        /// The objects.
        items: Vec<(Bytes, Object)>,
    },
    /// An operator's request (the `ringkv` CLI); answered with [`Response::Admin`].
    Admin(AdminRequest),
    /// Read repair, asked of one of the key's owners by a client whose read met stale copies:
    /// the owner reads the key from every replica itself and writes the merge to the stale
    /// ones, so that a client never writes replicas directly. Answered with
    /// [`Response::Written`] once the repair is under way.
    Repair {
        /// The user key.
        key: Bytes,
    },
    /// Protocol 5: the first frame of a stream that carries a batch, announcing how many
    /// request frames follow it (2 to [`crate::frame::MAX_REQUESTS_PER_STREAM`]). Each is
    /// answered by a frame of `(index, Reply)`, in the order the answers are ready. Not a
    /// request of its own: anywhere else it is answered `Malformed`.
    Batch {
        /// Request frames that follow.
        requests: u16,
    },
}

/// What the `ringkv` admin CLI asks a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    /// The node's view of the cluster and its outgoing handoffs.
    Status,
    /// Stage a node to join: by id if the cluster knows it (it started with this cluster's
    /// seeds), or by address (the answering node contacts it; its certificate must be the
    /// cluster's).
    Join {
        /// The node's id, if known.
        node: Option<NodeId>,
        /// The node's address.
        addr: Option<SocketAddr>,
    },
    /// Stage a node to leave.
    Leave {
        /// The node.
        node: NodeId,
    },
    /// The ring the staged changes lead to, and the transfers it needs.
    Plan,
    /// Commit the staged changes without an operator's signature: always refused (kept so
    /// that an older `ringkv` gets a message saying what to do).
    Commit,
    /// Forget the staged changes.
    Clear,
    /// Commit the staged changes, as planned and signed by an operator: data starts moving.
    /// Refused if the signature does not verify, or the staged changes no longer lead to
    /// `target`.
    CommitSigned {
        /// The ring the operator saw in `ringkv plan` and signed.
        target: Box<crate::ring::Ring>,
        /// The operator's signature ([`crate::authority::change_message`] of the node's
        /// cluster, `target` and the cluster's replication factor).
        authority: crate::authority::Authority,
    },
    /// Copy the node's storage, as it is at one instant, into `dir` on the node's host (a new
    /// or empty directory) while it keeps serving; answered when the copy is complete.
    Backup {
        /// The directory, as the node's host names it.
        dir: String,
    },
    /// Stage a member that is dead for good (host or disk lost) to be removed by force:
    /// its partitions are copied to their new replicas from the other old replicas, and the
    /// change waits for nothing from it (protocol version 4).
    RemoveForced {
        /// The dead node.
        node: NodeId,
    },
    /// Abort the running ring change, as signed by an operator (protocol version 4): the
    /// ring becomes `target`, the current owners one epoch on
    /// ([`crate::membership::View::abort_target`]). Only the claimant takes it.
    AbortSigned {
        /// The ring the abort leads to.
        target: Box<crate::ring::Ring>,
        /// The operator's signature over `target`.
        authority: crate::authority::Authority,
    },
    /// Stage `dead` to be removed by force and a new node to join in the same change
    /// (protocol version 4): the plan gives the new node the dead one's place.
    Replace {
        /// The dead node.
        dead: NodeId,
        /// The new node's id, if the cluster knows it.
        node: Option<NodeId>,
        /// The new node's address.
        addr: Option<SocketAddr>,
    },
}

/// A node's answer to an [`AdminRequest`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AdminReply {
    /// Answer to [`AdminRequest::Status`].
    Status(Box<NodeStatus>),
    /// Answer to [`AdminRequest::Plan`].
    Plan {
        /// The current ring.
        current: Box<Ring>,
        /// The ring after the staged changes.
        target: Box<Ring>,
        /// Partition transfers the change needs.
        transfers: Vec<Transfer>,
    },
    /// The change was applied; what it did.
    Done {
        /// A sentence for the operator.
        message: String,
    },
}

/// One node's view and handoff progress, for `ringkv members`, `ring` and `handoffs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The answering node.
    pub node: NodeId,
    /// Its replication factor N.
    pub n: u8,
    /// Its view.
    pub view: View,
    /// Its outgoing transfers under way, with progress.
    pub sending: Vec<(Transfer, Progress)>,
}

impl Request {
    /// Checks what the request carries against `limits`: every key, a client's value, and the
    /// keys per batch ([`MAX_KEYS_PER_BATCH`]). The one admission check a node applies to
    /// every request it is sent, before any handler runs.
    pub fn check_limits(&self, limits: &Limits) -> Result<(), String> {
        let batch = |n: usize, what: &str| {
            if n > MAX_KEYS_PER_BATCH {
                Err(format!("at most {MAX_KEYS_PER_BATCH} {what}"))
            } else {
                Ok(())
            }
        };
        match self {
            Request::Read { key }
            | Request::Write { key, .. }
            | Request::HintsFor { key }
            | Request::Reap { key, .. }
            | Request::Repair { key }
            | Request::RouteGet { key, .. } => limits.check(key, None),
            Request::Put {
                key,
                value,
                context,
                ..
            }
            | Request::RoutePut {
                key,
                value,
                context,
                ..
            } => {
                limits.check(key, value.as_deref())?;
                match context
                    .entries()
                    .iter()
                    .find(|(_, c)| *c > crate::dvv::MAX_CONTEXT_COUNTER)
                {
                    Some((actor, c)) => Err(format!(
                        "the context names counter {c} for actor {actor}, above the most a \
                         write can have ({})",
                        crate::dvv::MAX_CONTEXT_COUNTER
                    )),
                    None => Ok(()),
                }
            }
            Request::ReadMany { keys } => {
                batch(keys.len(), "keys per request")?;
                keys.iter().try_for_each(|k| limits.check(k, None))
            }
            Request::WriteMany { items, .. } => {
                batch(items.len(), "keys per request")?;
                items.iter().try_for_each(|(k, _)| limits.check(k, None))
            }
            Request::Handoff { items, .. } => {
                batch(items.len(), "objects per handoff batch")?;
                items.iter().try_for_each(|(k, _)| limits.check(k, None))
            }
            Request::Ping
            | Request::GetRing
            | Request::Stats
            | Request::AeRoots { .. }
            | Request::AeLeaves { .. }
            | Request::AeEntries { .. }
            | Request::Gossip { .. }
            | Request::Batch { .. }
            | Request::Admin(_) => Ok(()),
        }
    }

    /// Whether the request changes data (its outcome matters when no answer comes back).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Request::Write { .. }
                | Request::WriteMany { .. }
                | Request::Reap { .. }
                | Request::Put { .. }
                | Request::RoutePut { .. }
                | Request::Handoff { .. }
                | Request::Admin(_)
        )
    }

    /// The operation's name, for spans and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Stats => "stats",
            Request::AeRoots { .. } => "ae_roots",
            Request::AeLeaves { .. } => "ae_leaves",
            Request::AeEntries { .. } => "ae_entries",
            Request::ReadMany { .. } => "read_many",
            Request::WriteMany { .. } => "write_many",
            Request::HintsFor { .. } => "hints_for",
            Request::Reap { .. } => "reap",
            Request::GetRing => "get_ring",
            Request::Read { .. } => "read",
            Request::Write { .. } => "write",
            Request::Put { .. } => "put",
            Request::RouteGet { .. } => "route_get",
            Request::RoutePut { .. } => "route_put",
            Request::Gossip { .. } => "gossip",
            Request::Handoff { .. } => "handoff",
            Request::Admin(_) => "admin",
            Request::Batch { .. } => "batch",
            Request::Repair { .. } => "repair",
        }
    }
}

/// A reply frame's body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::Ping`].
    Pong {
        /// The answering node.
        node: NodeId,
    },
    /// Answer to [`Request::GetRing`].
    Ring(Ring),
    /// A replica's object (empty if the key was never written).
    Object(Object),
    /// A router read's merged result and the answers it was built from.
    Read {
        /// Every answer merged.
        object: Object,
        /// Who answered, owner or stand-in.
        answers: Vec<crate::quorum::Answer>,
    },
    /// A replica write was applied (and is durable per the node's durability policy).
    Written,
    /// Answer to [`Request::Stats`].
    Stats(NodeStats),
    /// Tree roots or leaves.
    Hashes(Vec<u64>),
    /// `(key, entry hash)` pairs.
    Entries(Vec<(Bytes, u64)>),
    /// Keys and their objects.
    Objects(Vec<(Bytes, Object)>),
    /// A coordinated write met its quorum.
    Put(PutReply),
    /// Answer to [`Request::Gossip`]: the receiver's view after the merge.
    View(Box<View>),
    /// Answer to [`Request::Admin`].
    Admin(AdminReply),
    /// The request failed.
    Error(ReplyError),
}

/// What a coordinated write answers once it met its quorum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutReply {
    /// The coordinator's object clock after the write: it covers the write, what its context
    /// covered, and every sibling the coordinator holds, seen by the writer or not. Only safe to
    /// write back with together with [`PutReply::body`].
    pub clock: VersionVector,
    /// The context for the writer's next write of the key without reading it again: the
    /// write's context plus the write itself, covering no sibling the writer has not seen
    /// ([`Object::context_after_write`]).
    pub next: VersionVector,
    /// The stored object after the write, when the request asked for it.
    pub body: Option<Object>,
}

impl Response {
    /// The reply's name, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Response::Pong { .. } => "pong",
            Response::Ring(_) => "ring",
            Response::Stats(_) => "stats",
            Response::Hashes(_) => "hashes",
            Response::Entries(_) => "entries",
            Response::Objects(_) => "objects",
            Response::Object(_) => "object",
            Response::Read { .. } => "read",
            Response::Written => "written",
            Response::Put { .. } => "put",
            Response::View(_) => "view",
            Response::Admin(_) => "admin",
            Response::Error(_) => "error",
        }
    }
}

/// A node's counters since it started (gauges are current values).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeStats {
    /// The answering node.
    pub node: NodeId,
    /// Objects stored (approximate).
    pub objects: u64,
    /// Writes that changed an object.
    pub writes: u64,
    /// fsyncs run.
    pub fsyncs: u64,
    /// Hints held for other nodes (gauge).
    pub hints_pending: u64,
    /// Hints stored for other nodes.
    pub hints_stored: u64,
    /// Hints handed over to their owners.
    pub hints_delivered: u64,
    /// Anti-entropy exchanges completed with a co-replica.
    pub ae_rounds: u64,
    /// Keys whose versions anti-entropy merged in either direction.
    pub ae_keys_repaired: u64,
    /// Bytes of anti-entropy frames sent.
    pub ae_bytes_sent: u64,
    /// Bytes of anti-entropy frames received.
    pub ae_bytes_received: u64,
    /// Tombstones removed for good.
    pub tombstones_reaped: u64,
    /// Tombstones held, not yet reaped (gauge).
    pub tombstones_pending: u64,
    /// Requests served, all operations together (load balance across nodes).
    pub requests: u64,
    /// Streams reset because the peer did not take its reply within the write deadline (a
    /// slow or hostile reader; the reply's memory is freed).
    #[serde(default)]
    pub slow_readers_reset: u64,
    /// Read repairs clients asked for that were refused because
    /// `router::MAX_REPAIRS_IN_FLIGHT` were already running here (anti-entropy repairs those
    /// keys instead).
    #[serde(default)]
    pub repairs_refused: u64,
}

/// The envelope of every reply: the answering node's ring epoch and the body. A client that
/// sees an epoch newer than its cached ring refreshes the ring.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The ring epoch at the answering node.
    pub epoch: u64,
    /// The answer.
    pub body: Response,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_checks_every_key_a_value_and_the_batch_size() {
        let limits = Limits {
            max_key_bytes: 4,
            max_value_bytes: 8,
            ..Limits::default()
        };
        let key = |n: usize| Bytes::from(vec![b'k'; n]);
        let quorum = Quorum {
            n: 3,
            required: 2,
            timeout_ms: 1,
        };
        let put = |k: usize, v: usize| Request::Put {
            key: key(k),
            context: VersionVector::new(),
            value: Some(Bytes::from(vec![b'v'; v])),
            quorum,
            return_body: false,
        };
        assert!(put(4, 8).check_limits(&limits).is_ok());
        assert!(put(5, 8).check_limits(&limits).is_err(), "long key");
        assert!(put(4, 9).check_limits(&limits).is_err(), "long value");
        assert!(put(0, 1).check_limits(&limits).is_err(), "empty key");
        let many = |keys: Vec<Bytes>| Request::ReadMany { keys };
        assert!(many(vec![key(1), key(4)]).check_limits(&limits).is_ok());
        let e = many(vec![key(1), key(5)])
            .check_limits(&limits)
            .expect_err("one long key in a batch");
        assert!(e.contains("key is 5 bytes"), "{e}");
        let e = many(vec![key(1); MAX_KEYS_PER_BATCH + 1])
            .check_limits(&limits)
            .expect_err("too many keys");
        assert!(e.contains("keys per request"), "{e}");
        let reap = Request::Reap {
            key: key(9),
            clock: VersionVector::new(),
        };
        assert!(reap.check_limits(&limits).is_err());
        assert!(Request::Ping.check_limits(&limits).is_ok());
    }

    #[test]
    fn a_quorum_needs_between_one_and_n_replies() {
        assert!(Quorum::check_counts(3, 1).is_ok());
        assert!(Quorum::check_counts(3, 3).is_ok());
        for (n, required) in [(3, 0), (3, 4), (0, 0), (0, 1)] {
            let e = Quorum::check_counts(n, required).expect_err("not a quorum");
            assert!(e.contains(&format!("N={n}")), "{e}");
        }
        let q = Quorum {
            n: 2,
            required: 3,
            timeout_ms: 1,
        };
        assert!(q.validate().is_err());
    }

    #[test]
    fn deadlines_are_capped_and_coordinators_keep_a_margin() {
        let q = Quorum {
            n: 3,
            required: 2,
            timeout_ms: u32::MAX,
        };
        assert_eq!(q.capped().timeout_ms, MAX_TIMEOUT_MS);
        let q = Quorum {
            n: 3,
            required: 2,
            timeout_ms: 2000,
        };
        assert_eq!(q.capped(), q);
        assert_eq!(q.for_coordinator().timeout_ms, 1800);
        assert_eq!(
            Quorum { timeout_ms: 1, ..q }.for_coordinator().timeout_ms,
            1
        );
    }
}
