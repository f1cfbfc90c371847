//! The QUIC edge shared by clients and nodes (feature `quic`): mutual-TLS configuration, frame
//! I/O on streams, [`QuicTransport`], the pooled [`crate::transport::Transport`], and
//! operators' signatures over ring changes ([`OperatorKey`], [`CaVerifier`]).
//!
//! One long-lived connection per peer; one bidirectional stream per request carrying one
//! request frame and one reply frame. A node's endpoint keys ([`endpoint_config`]) survive
//! its restarts, so peers' connections to a crashed process are reset by its successor.

mod authority;
mod peer;
mod pool;
mod stream;
mod tls;

pub use authority::{CaVerifier, OperatorKey, SigningError};
pub use peer::{certificate_expiry, peer_role, role_of_certificate};
pub use pool::{QuicTransport, TransportOptions};
pub use stream::{Held, MemoryBudget, StreamError, read_frame, read_frame_within, write_frame};
pub use tls::{
    IDLE_TIMEOUT, KEEP_ALIVE, TlsError, TlsIdentity, client_config, endpoint_config, server_config,
};

/// The TLS server name every node certificate carries and every caller verifies.
pub const SERVER_NAME: &str = "ringkv-node";

/// The ALPN protocol id; it changes with the frame protocol version.
pub const ALPN: &[u8] = b"ringkv/1";
