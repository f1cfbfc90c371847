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
//! - [`config`] — the TOML configuration and its validation.
//! - [`storage`] — fjall keyspaces, read-merge-write under striped locks, durability policies
//!   with group commit.
//! - [`certs`] — a development CA and node/client certificates (rcgen).
//! - [`node`] — [`Node::start`] and the [`NodeHandle`] it returns.
//! - `server` — the QUIC accept loop and per-stream framing.
//! - `service` — request dispatch.
//! - `coordinator` — a client write coordinated here: stamp, store, replicate with a sloppy
//!   quorum (ring-change dual writes included), through `Peers`, which serves this node's own
//!   copy in-process.
//! - `replica` — this node's own copy: read (with the hints it keeps) and merge-write (or
//!   keep as a hint).
//! - [`anti_entropy`] — Merkle anti-entropy between co-replicas: serving and the worker.
//! - `background` — what the background workers share: periodic rounds, peer calls.
//! - `fault_filter` (feature `testing`) — a fault filter real node processes follow in the
//!   fault suite (off unless an environment variable names its file).
//! - `in_flight` — the writes a node coordinates, by the ring and transition they began under.
//! - `hints` — the worker that hands hints over to their owners when they are back.
//! - `membership` — the persisted, installed cluster view; gossip rounds; operators' requests.
//! - `handoff` — sending and receiving partition transfers during a ring change.
//! - [`admin_report`] — what the `ringkv` admin CLI prints, as plain functions.
//! - `reaper` — tombstone reaping, only when no replica or hint could bring the key back.
//! - `metrics`, `metrics_http`, `stats` — Prometheus metrics, their HTTP endpoint, and the
//!   `Stats` answer.
//! - `sweep` — drops the copies of partitions a node no longer replicates, after each ring.
//! - `router` — router-mode quorum coordination.
//! - `state` — the running node's state.
//! - `testing` (feature `testing`) — `LocalCluster` (n nodes in-process on loopback),
//!   `ProcessCluster` (node processes), and the judges of the fault suite's histories.
//!
//! # Features
//!
//! - `testing` — the test support above, plus the `*_now` worker hooks and `block`/`heal` on
//!   [`NodeHandle`]. Dev-dependencies turn it on; the production binary is built without it
//!   and reads no test-only environment variable.

pub mod admin_report;
pub mod anti_entropy;
mod background;
pub use background::WorkerError;
pub mod certs;
pub mod config;
mod coordinator;
#[cfg(feature = "testing")]
pub mod fault_filter;
mod handoff;
mod hints;
mod in_flight;
mod membership;
mod metrics;
mod metrics_http;
pub mod node;
mod reaper;
mod replica;
mod router;
mod server;
mod service;
mod state;
mod stats;
pub mod storage;
mod sweep;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::NodeConfig;
pub use node::{Node, NodeError, NodeHandle};
