//! A ringkv storage node: a thin replica on a commodity host.
//!
//! A node stores objects in fjall, serves replica reads and merge-writes over QUIC with mutual
//! TLS, coordinates client writes (stamping dots with its storage incarnation's actor id and
//! replicating to the other replicas until W hold the write), and in router mode coordinates
//! whole quorum operations for clients that do not track the ring. It does not decide
//! anything the shared logic already decides: quorums, merges and preference lists come from
//! `ringkv-shared`.
//!
//! Writes stay available while nodes are down: a write's copy for an owner that is down goes
//! to a stand-in further down the preference list, which keeps it as a hint and hands it over
//! when the owner is back (hinted handoff).
//!
//! Membership runs itself: each node persists its view of the cluster and gossips it; an
//! operator stages joins and leaves with the `ringkv` admin CLI, and committed changes move
//! data by partition handoff before the ring switches.
//!
//! # Layout
//!
//! The request path, top down (`docs/ARCHITECTURE.md` walks a get and a put through it):
//!
//! - `server` — the QUIC accept loop and per-stream framing.
//! - `connection_slots` — caps on open connections, per node and per IP address.
//! - `ring_vouches` — rings a node cannot verify alone, taken once two members sent them.
//! - `dispatch` — admission against the limits, then one request to its handler.
//! - `router` — router mode: a whole quorum read or write coordinated here for a client that
//!   does not track the ring.
//! - `coordinator` — a client write coordinated here: stamp, store, replicate with a sloppy
//!   quorum, and during a ring change copy to the incoming replicas (counted by `DualWrite`).
//! - `node_transport` — `NodeTransport`, the `Transport` the coordinator, the router and the
//!   workers use: other nodes over QUIC, this node's own copy in-process.
//! - `replica` — this node's own copy: read (with the hints it keeps) and merge-write (or
//!   keep as a hint).
//! - [`storage`] — fjall keyspaces, read-merge-write under striped locks, durability policies
//!   with group commit.
//!
//! Membership and ring changes:
//!
//! - `cluster_view` — the persisted cluster view, installed for the request path.
//! - `gossip` — gossip rounds, the answer to a peer's gossip, broadcasts.
//! - `admin` — operators' requests (`join`, `leave`, `plan`, `commit`, ...).
//! - [`operator`] — what an operator's tools do with its key: sign a ring change, commit it.
//! - `partition_handoff` — sending and receiving partition transfers during a ring change.
//! - `departure` — a node removed by force, or whose leave completed, stops itself.
//! - `sweep` — drops the copies of partitions a node no longer replicates, after each ring.
//! - `in_flight` — the writes a node coordinates, by the ring and transition they began under.
//!
//! Background repair, sharing `background` (periodic rounds, peer calls, [`WorkerError`]):
//!
//! - `hint_delivery` — hands hints over to the key's owners when they are back.
//! - [`anti_entropy`] — Merkle anti-entropy between co-replicas: serving and the worker.
//! - `reaper` — tombstone reaping, only when no replica or hint could bring the key back.
//!
//! Running a node:
//!
//! - [`node`] — [`Node::start`] and the [`NodeHandle`] it returns; `state` — its shared state.
//! - [`config`] — the TOML configuration and its validation, per section; [`host_addr`] —
//!   its addresses, IPs or host names.
//! - [`protocols`] — the frame protocol versions the node speaks (its own and the one
//!   before), and the test hook that makes it speak the next release's.
//! - [`certs`] — a development CA and node/client certificates (rcgen).
//! - [`admin_report`] — what the `ringkv` admin CLI prints, as plain functions, and
//!   [`admin_json`] the same with `--json`;
//!   [`error_line`] — how both binaries print a fatal error.
//! - `metrics`, `metrics_http`, `stats` — Prometheus metrics, their HTTP endpoint (with
//!   `/health` and `/ready`), and the `Stats` answer; `readiness` — what `/ready` answers.
//! - `fault_filter` (feature `testing`) — a fault filter real node processes follow in the
//!   fault suite (off unless an environment variable names its file).
//! - `testing` (feature `testing`) — `LocalCluster` (n nodes in-process on loopback),
//!   `ProcessCluster` (node processes), and the judges of the fault suite's histories.
//!
//! # Features
//!
//! - `testing` — the test support above, plus the `*_now` worker hooks and `block`/`heal` on
//!   [`NodeHandle`]. Dev-dependencies turn it on; the production binary is built without it
//!   and reads no test-only environment variable.

mod admin;
pub mod admin_json;
pub mod admin_report;
pub mod anti_entropy;
mod background;
pub use background::WorkerError;
pub mod certs;
mod cluster_view;
pub mod config;
mod connection_slots;
mod coordinator;
mod departure;
mod dispatch;
pub mod error_line;
#[cfg(feature = "testing")]
pub mod fault_filter;
mod gossip;
mod hint_delivery;
pub mod host_addr;
mod in_flight;
mod metrics;
mod metrics_http;
pub mod node;
mod node_transport;
pub mod operator;
mod partition_handoff;
pub mod protocols;
mod readiness;
mod reaper;
mod replica;
mod ring_vouches;
mod router;
mod server;
mod state;
mod stats;
pub mod storage;
mod sweep;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::NodeConfig;
#[cfg(feature = "sim")]
pub use node::SIMULATED_OPERATOR_KEY;
#[cfg(feature = "sim")]
pub use node::StoreProbe;
pub use node::{Node, NodeError, NodeHandle};
pub use router::MAX_REPAIRS_IN_FLIGHT;
pub use server::{REPLY_WRITE_TIMEOUT, REQUEST_READ_TIMEOUT};
