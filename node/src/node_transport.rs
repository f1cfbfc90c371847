//! The transport a node coordinates with (its writes, router mode, hint delivery): calls to
//! other nodes go over QUIC; replica reads and writes addressed to this node are served
//! in-process, without a network round trip and without being refused by this node's own
//! failure detector.

use crate::replica;
use crate::state::NodeState;
use ringkv_net::transport::{Transport, TransportError};
use ringkv_shared::proto::{Request, Response};
use ringkv_shared::{Member, NodeId};
use std::sync::Arc;

/// The transport a node coordinates with: replica operations addressed to itself are served
/// in-process; everything else goes over QUIC.
#[derive(Clone)]
pub(crate) struct NodeTransport(pub(crate) Arc<NodeState>);

impl Transport for NodeTransport {
    async fn call(&self, to: &Member, request: Request) -> Result<Response, TransportError> {
        let state = &self.0;
        if to.id == state.id {
            match request {
                Request::Read { key } => return Ok(replica::read(state, key)),
                Request::Write {
                    key,
                    object,
                    hint_for,
                } => {
                    return Ok(replica::write(state, key, object, hint_for).await);
                }
                other => return state.wire.call(to, other).await,
            }
        }
        state.wire.call(to, request).await
    }

    fn is_down(&self, node: NodeId) -> bool {
        node != self.0.id && self.0.wire.is_down(node)
    }

    fn is_unreachable(&self, node: NodeId) -> bool {
        node != self.0.id && self.0.wire.is_unreachable(node)
    }
}
