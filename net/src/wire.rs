//! [`Wire`]: the transport a node or client actually holds — QUIC on real hosts, or (feature
//! `sim`) a link on the simulated network. An enum rather than a trait object, so that the
//! production path pays one match, not an allocation per call.

use crate::quic::QuicTransport;
use crate::transport::{Transport, TransportError};
use ringkv_shared::ids::NodeId;
use ringkv_shared::proto::{Request, Response};
use ringkv_shared::ring::Member;
use std::net::SocketAddr;

/// The transport of a node or client.
#[derive(Clone)]
#[non_exhaustive]
pub enum Wire {
    /// QUIC with mutual TLS.
    Quic(QuicTransport),
    /// The simulated network.
    #[cfg(feature = "sim")]
    Sim(crate::sim::SimLink),
}

impl Wire {
    /// Calls an address directly (for seeds, whose node ids are not known yet).
    pub async fn call_addr(
        &self,
        addr: SocketAddr,
        request: Request,
    ) -> Result<Response, TransportError> {
        match self {
            Wire::Quic(q) => q.call_addr(addr, request).await,
            #[cfg(feature = "sim")]
            Wire::Sim(s) => s.call_addr(addr, request).await,
        }
    }

    /// The highest ring epoch any reply carried.
    pub fn highest_epoch(&self) -> u64 {
        match self {
            Wire::Quic(q) => q.highest_epoch(),
            #[cfg(feature = "sim")]
            Wire::Sim(s) => s.highest_epoch(),
        }
    }

    /// Whether this is the simulated network (work that would go to another thread runs
    /// inline there, so that the seed alone decides the order of events).
    pub fn is_simulated(&self) -> bool {
        match self {
            Wire::Quic(_) => false,
            #[cfg(feature = "sim")]
            Wire::Sim(_) => true,
        }
    }

    /// The QUIC transport, if this is one.
    pub fn quic(&self) -> Option<&QuicTransport> {
        match self {
            Wire::Quic(q) => Some(q),
            #[cfg(feature = "sim")]
            Wire::Sim(_) => None,
        }
    }

    /// Fault injection (feature `testing`): calls to `addrs` fail as if the network were cut.
    /// On the simulated network, cut the [`crate::sim::SimNet`] instead; this does nothing.
    #[cfg(feature = "testing")]
    pub fn block(&self, addrs: impl IntoIterator<Item = SocketAddr>) {
        if let Some(q) = self.quic() {
            q.block(addrs);
        }
    }

    /// Ends every [`Wire::block`].
    #[cfg(feature = "testing")]
    pub fn heal(&self) {
        if let Some(q) = self.quic() {
            q.heal();
        }
    }
}

impl Transport for Wire {
    async fn call(&self, to: &Member, request: Request) -> Result<Response, TransportError> {
        match self {
            Wire::Quic(q) => q.call(to, request).await,
            #[cfg(feature = "sim")]
            Wire::Sim(s) => s.call(to, request).await,
        }
    }

    fn is_down(&self, node: NodeId) -> bool {
        match self {
            Wire::Quic(q) => q.is_down(node),
            #[cfg(feature = "sim")]
            Wire::Sim(s) => s.is_down(node),
        }
    }

    fn is_unreachable(&self, node: NodeId) -> bool {
        match self {
            Wire::Quic(q) => q.is_unreachable(node),
            #[cfg(feature = "sim")]
            Wire::Sim(s) => s.is_unreachable(node),
        }
    }
}
