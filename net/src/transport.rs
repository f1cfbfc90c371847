//! The one trait where the network plugs in.
//!
//! Code that talks to replicas ([`crate::fanout`], the client, router mode in the node) is
//! generic over [`Transport`]. The QUIC transport implements it (feature `quic`), and so can an
//! in-memory transport in tests that drops, delays or cuts messages on a seeded schedule.

use ringkv_shared::proto::{Request, Response};
use ringkv_shared::ring::Member;
use std::future::Future;

/// Why a request got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// No connection could be established.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// Where we tried to connect.
        addr: std::net::SocketAddr,
        /// Why it failed.
        reason: String,
    },
    /// The peer refused the TLS handshake (our certificate is not signed by its CA), or we
    /// refused its certificate. Nothing was sent.
    #[error("TLS refused by or for {addr}: {reason}")]
    Refused {
        /// The peer.
        addr: std::net::SocketAddr,
        /// The handshake failure.
        reason: String,
    },
    /// The connection or stream failed while the request was in flight.
    #[error("connection to {addr} lost: {reason}")]
    Lost {
        /// The peer.
        addr: std::net::SocketAddr,
        /// Why.
        reason: String,
    },
    /// The peer's reply could not be decoded.
    #[error("bad reply from {addr}: {reason}")]
    BadReply {
        /// The peer.
        addr: std::net::SocketAddr,
        /// Why.
        reason: String,
    },
    /// The request could not be encoded within the frame limit.
    #[error("request too large: {reason}")]
    RequestTooLarge {
        /// Why.
        reason: String,
    },
}

/// Sends one request to one node and waits for its reply.
///
/// Implementations must be cancel-safe (a caller may drop the future at its deadline) and
/// cheap to clone (a clone shares connections).
pub trait Transport: Clone + Send + Sync + 'static {
    /// Sends `request` to `to` and returns its reply body. Errors from the remote node arrive
    /// as `Ok(Response::Error(..))`; `Err` means no reply was received.
    fn call(
        &self,
        to: &Member,
        request: Request,
    ) -> impl Future<Output = Result<Response, TransportError>> + Send;

    /// Whether `node` failed recently enough that requests should route around it. Failure
    /// detection is local to each transport and never changes ownership.
    fn is_down(&self, node: ringkv_shared::ids::NodeId) -> bool {
        let _ = node;
        false
    }

    /// Whether the last call to `node` failed and none has succeeded since: the liveness an
    /// operator sees (`ringkv_peers{state="down"}`). Unlike [`Transport::is_down`], it does
    /// not end with the back-off.
    fn is_unreachable(&self, node: ringkv_shared::ids::NodeId) -> bool {
        self.is_down(node)
    }
}
