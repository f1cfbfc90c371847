//! The QUIC edge shared by clients and nodes (feature `quic`): mutual-TLS configuration, frame
//! I/O on streams, [`QuicTransport`], the pooled [`crate::transport::Transport`], and
//! operators' signatures over ring changes ([`OperatorKey`], [`CaVerifier`]).
//!
//! One long-lived connection per peer; one bidirectional stream per request carrying one
//! request frame and one reply frame, or, on connections of protocol version 5 and later, per
//! batch of the requests that were ready to go to that peer at the same moment
//! ([`ringkv_shared::frame::BATCHES_SINCE`]). A node's endpoint keys ([`endpoint_config`]) survive
//! its restarts, so peers' connections to a crashed process are reset by its successor. A
//! member given by name is resolved again for every new connection to it.

mod authority;
mod batch;
mod peer;
mod pool;
mod resolve;
mod stream;
mod tls;

pub use authority::{CaVerifier, OperatorKey, SigningError};
pub use peer::{certificate_expiry, peer_role, role_of_certificate};
pub use pool::{QuicTransport, TransportOptions};
pub use resolve::resolve_host;
pub use stream::{
    Frame, Held, MemoryBudget, StreamError, read_frame, read_frame_within, write_frame,
};
pub use tls::{
    IDLE_TIMEOUT, KEEP_ALIVE, TlsError, TlsIdentity, client_config, client_config_speaking,
    endpoint_config, server_config, server_config_speaking,
};

/// The TLS server name every node certificate carries and every caller verifies.
pub const SERVER_NAME: &str = "ringkv-node";

/// The ALPN id that names frame protocol `version` in the TLS handshake, where two peers
/// settle on the newest version both speak. Version 3, the first whose builds negotiate,
/// keeps the id its builds used when there was nothing to choose (`ringkv/1`); later
/// versions are `ringkv/<version>`.
pub fn alpn_id(version: u8) -> Vec<u8> {
    if version <= LEGACY_ALPN_VERSION {
        LEGACY_ALPN.to_vec()
    } else {
        format!("ringkv/{version}").into_bytes()
    }
}

/// The frame protocol version an ALPN id names, if it is one of ours.
pub fn alpn_version(id: &[u8]) -> Option<u8> {
    if id == LEGACY_ALPN {
        return Some(LEGACY_ALPN_VERSION);
    }
    std::str::from_utf8(id)
        .ok()?
        .strip_prefix("ringkv/")?
        .parse::<u8>()
        .ok()
        .filter(|v| *v > LEGACY_ALPN_VERSION)
}

/// The ALPN ids of every version in `spoken`, newest (preferred) first.
pub fn alpn_ids(spoken: ringkv_shared::frame::Protocols) -> Vec<Vec<u8>> {
    spoken.newest_first().map(alpn_id).collect()
}

/// The protocol version a connection's handshake settled on. A peer that named none (no
/// build of ours does) is taken to speak the legacy version.
pub fn negotiated_version(conn: &quinn::Connection) -> u8 {
    conn.handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol)
        .and_then(|id| alpn_version(&id))
        .unwrap_or(LEGACY_ALPN_VERSION)
}

const LEGACY_ALPN: &[u8] = b"ringkv/1";
const LEGACY_ALPN_VERSION: u8 = 3;

#[cfg(test)]
mod alpn_tests {
    use super::*;

    #[test]
    fn alpn_ids_name_versions_both_ways() {
        assert_eq!(alpn_id(3), b"ringkv/1");
        assert_eq!(alpn_id(4), b"ringkv/4");
        for v in 3..=20 {
            assert_eq!(alpn_version(&alpn_id(v)), Some(v));
        }
        assert_eq!(alpn_version(b"ringkv/3"), None);
        assert_eq!(alpn_version(b"h3"), None);
        assert_eq!(alpn_version(b"ringkv/x"), None);
    }
}
