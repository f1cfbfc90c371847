//! ringkv's network layer: how requests reach replicas and how their replies come back.
//!
//! The decisions of a quorum operation are made by the I/O-free state machines of
//! `ringkv-shared` ([`ringkv_shared::quorum`], [`ringkv_shared::sloppy`]). This crate sends the
//! requests those machines ask for, feeds the replies back, and keeps the clock: it is the
//! only ringkv crate besides the node's storage that touches the outside world.
//!
//! Everything above the wire is generic over [`transport::Transport`], one call to one node.
//! [`quic::QuicTransport`] implements it for real hosts; tests (and a simulated cluster) plug
//! in their own implementations, so the same drivers run against a seeded, in-memory network.
//!
//! # Layout
//!
//! - [`transport`] — the `Transport` trait and `TransportError`: the seam between the logic
//!   and the network.
//! - [`fanout`] — the async quorum drivers over a `Transport`: quorum reads (stand-ins,
//!   hedging, read repair), a coordinator's replication (sloppy placement), and delegating a
//!   request to the first reachable node.
//! - [`wire`] — `Wire`, the transport a node or client holds: QUIC, or the simulated network.
//! - [`sim`] (feature `sim`) — the seeded simulated network and its event log.
//! - [`ambient`] — randomness and the wall clock, which the simulator seeds and drives.
//! - [`quic`] — mutual TLS configuration, frame I/O on QUIC streams, and the pooled
//!   `QuicTransport` client and node both use.

pub mod ambient;
pub mod fanout;
pub mod quic;
#[cfg(feature = "sim")]
pub mod sim;
pub mod transport;
pub mod wire;

pub use transport::{Transport, TransportError};
pub use wire::Wire;
