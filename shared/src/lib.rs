//! What ringkv clients and nodes both need: the ring, versions, the quorum engine and the wire
//! protocol, as plain data and functions without I/O.
//!
//! Nothing here touches a socket, a file, a task or a clock: inputs in, decisions out. The
//! quorum engine and sloppy placement are state machines fed with replies; the async drivers
//! that feed them over the network, the `Transport` trait and the QUIC transport live in
//! `ringkv-net`, which the client and the node share so that the two sides cannot drift apart
//! on TLS or framing. `cargo tree -p ringkv-shared` lists neither tokio nor quinn.
//!
//! This crate does not store anything (see `ringkv-node`) and has no user-facing API (see
//! `ringkv-client`).
//!
//! # Layout
//!
//! - [`ids`] — node ids and version-vector actors.
//! - [`hash`] — the stable key hash that places keys on the ring, and checksums.
//! - [`ring`] — Q equal partitions, owners, preference lists, epochs.
//! - [`host_name`] — a member's `host:port` name, dialled at its current address.
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
//! - [`hedge`] — when a hedged read asks another replica: fixed, or a percentile of recent reads.
//! - [`roles`] — the role a certificate names and the requests each role may send.
//! - [`authority`] — ring changes signed by an operator, and the check nodes make.

pub mod authority;
pub mod dual_write;
pub mod dvv;
pub mod encoding;
pub mod error;
pub mod frame;
#[doc(hidden)]
pub mod fuzz_checks;
pub mod handoff;
pub mod hash;
pub mod hedge;
pub mod host_name;
pub mod ids;
pub mod limits;
pub mod membership;
pub mod merkle;
pub mod object;
pub mod planner;
pub mod proto;
pub mod quorum;
pub mod ring;
pub mod roles;
pub mod sloppy;

pub use dvv::{Dot, VersionVector};
pub use error::{ReplicaError, ReplyError};
pub use host_name::HostName;
pub use ids::{ActorId, ClusterId, NodeId};
pub use limits::Limits;
pub use object::{Object, Sibling};
pub use ring::{Member, PartitionId, Ring};
