//! What ringkv clients and nodes both need: the ring, versions, the quorum engine and the wire
//! protocol, as plain data and functions without I/O.
//!
//! Nothing in the logic modules touches a socket, a file or a clock of its own: inputs in,
//! decisions out. The one exception is the `quic` module (feature `quic`), the thin network
//! edge that both the client and the node link, kept here so that the two sides cannot drift
//! apart on TLS or framing. [`fanout`] is generic over the [`transport::Transport`] trait, so
//! tests drive it with an in-memory transport.
//!
//! This crate does not store anything (see `ringkv-node`) and has no user-facing API (see
//! `ringkv-client`).
//!
//! # Layout
//!
//! - [`ids`] — node ids and version-vector actors.
//! - [`hash`] — the stable key hash that places keys on the ring, and checksums.
//! - [`ring`] — Q equal partitions, owners, preference lists, epochs.
//! - [`dvv`] — dots and version vectors.
//! - [`object`] — a key's sibling set under a dotted version vector: update, merge.
//! - [`encoding`] — versioned, checksummed encodings of stored objects and contexts.
//! - [`limits`] — key, value, object and frame size limits.
//! - [`membership`] — the gossiped cluster view: members, staged changes, transitions, merge.
//! - [`planner`] — the next ring after joins and leaves: balanced, minimal moves, distinct replicas.
//! - [`handoff`] — which node sends which partition where when the ring changes.
//! - [`merkle`] — anti-entropy hash trees: leaves, entry hashes, diffs.
//! - [`proto`] — request and reply messages.
//! - [`frame`] — length-prefixed, versioned frames.
//! - [`error`] — errors that cross the wire.
//! - [`quorum`] — the quorum engine, a state machine fed with replies.
//! - [`dual_write`] — the outcome of a write coordinated while a partition moves.
//! - [`sloppy`] — sloppy-quorum write placement: stand-ins and hints, a state machine.
//! - [`transport`] — the trait the network plugs into.
//! - [`fanout`] — quorum read and write drivers over a transport.
//! - [`hedge`] — when a hedged read asks another replica: fixed, or a percentile of recent reads.
//! - `quic` (feature `quic`) — mutual TLS, stream framing and the pooled QUIC transport.

pub mod dual_write;
pub mod dvv;
pub mod encoding;
pub mod error;
pub mod fanout;
pub mod frame;
#[doc(hidden)]
pub mod fuzz_checks;
pub mod handoff;
pub mod hash;
pub mod hedge;
pub mod ids;
pub mod limits;
pub mod membership;
pub mod merkle;
pub mod object;
pub mod planner;
pub mod proto;
pub mod quorum;
pub mod ring;
pub mod sloppy;
pub mod transport;

#[cfg(feature = "quic")]
pub mod quic;

pub use dvv::{Dot, VersionVector};
pub use error::{ReplicaError, ReplyError};
pub use ids::{ActorId, NodeId};
pub use limits::Limits;
pub use object::{Object, Sibling};
pub use ring::{Member, PartitionId, Ring};
