//! The QUIC accept loop: connections, streams, frames.
//!
//! Each stream carries one request frame; the reply goes back on the same stream. A frame that
//! is too large, truncated, of another protocol version or not a valid message is answered with
//! an error reply (and the stream closed); the connection and the node carry on. A peer that
//! opens a stream and sends nothing is cut off after [`REQUEST_READ_TIMEOUT`].

use crate::connection_slots::ConnectionSlots;
use crate::dispatch;
use crate::state::NodeState;
use ringkv_net::quic::{MemoryBudget, StreamError, read_frame_within, write_frame};
use ringkv_shared::ReplyError;
use ringkv_shared::frame::FrameError;
use ringkv_shared::proto::{Reply, Request, Response};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, warn};

/// How long a peer may take to send a request frame once it opened a stream.
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a peer may take to take a reply off the stream; a reader slower than that is
/// reset, so that a reply nobody reads does not hold its memory.
pub const REPLY_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until `shutdown` turns true.
pub(crate) async fn accept_loop(
    state: Arc<NodeState>,
    endpoint: quinn::Endpoint,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    // What every connection's requests may hold together while read and served.
    let node_budget = MemoryBudget::new(state.limits.max_node_buffer_bytes);
    let slots = ConnectionSlots::new(
        state.limits.max_connections,
        state.limits.max_connections_per_ip,
    );
    loop {
        let stop = shutdown.clone();
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let from = incoming.remote_address();
                // Before the handshake: a refusal costs one packet.
                let slot = match slots.take(from.ip()) {
                    Ok(slot) => slot,
                    Err(refusal) => {
                        warn!(peer = %from, %refusal, "connection refused");
                        incoming.refuse();
                        continue;
                    }
                };
                let state = state.clone();
                let budget = node_budget.clone();
                conns.spawn(async move {
                    let _slot = slot;
                    match incoming.await {
                        Ok(conn) => serve_connection(state, conn, budget, stop).await,
                        // Includes TLS failures: a peer without a CA-signed certificate.
                        Err(e) => warn!(peer = %from, error = %e, "connection refused"),
                    }
                });
            }
            _ = shutdown.wait_for(|s| *s) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.shutdown().await;
}

async fn serve_connection(
    state: Arc<NodeState>,
    conn: quinn::Connection,
    node_budget: MemoryBudget,
    mut shutdown: watch::Receiver<bool>,
) {
    let budgets = Arc::new((
        MemoryBudget::new(state.limits.max_connection_buffer_bytes),
        node_budget,
    ));
    let peer = conn.remote_address();
    // What the peer's certificate lets it do, read once per connection.
    let role = Arc::new(ringkv_net::quic::peer_role(&conn));
    // The version the handshake settled on: what this node answers in when a frame cannot
    // be read (a readable request is answered in its own version).
    let version = ringkv_net::quic::negotiated_version(&conn);
    state.metrics.connection_accepted(version);
    debug!(%peer, role = %role.name(), version, "connection accepted");
    let mut streams = JoinSet::new();
    loop {
        tokio::select! {
            stream = conn.accept_bi() => match stream {
                Ok((send, recv)) => {
                    let state = state.clone();
                    streams.spawn(serve_stream(
                        state,
                        Peer { role: role.clone(), version },
                        budgets.clone(),
                        send,
                        recv,
                    ));
                }
                Err(e) => {
                    debug!(%peer, error = %e, "connection ended");
                    break;
                }
            },
            _ = shutdown.wait_for(|s| *s) => break,
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    }
    // Let requests in flight finish (their own deadlines bound them).
    while streams.join_next().await.is_some() {}
}

/// Who is on the other end of a connection: what its certificate lets it do, and the
/// protocol version its handshake settled on.
struct Peer {
    role: Arc<ringkv_shared::roles::Role>,
    version: u8,
}

async fn serve_stream(
    state: Arc<NodeState>,
    peer: Peer,
    budgets: Arc<(MemoryBudget, MemoryBudget)>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let max = state.limits.max_frame_bytes;
    let request = tokio::time::timeout(
        REQUEST_READ_TIMEOUT,
        read_frame_within::<Request>(&mut recv, max, state.protocols, &[&budgets.0, &budgets.1]),
    )
    .await;
    // The request's buffered bytes stay counted until its reply is written.
    let (reply, version, _held) = match request {
        Ok(Ok(frame)) => (
            dispatch::handle(&state, &peer.role, frame.msg).await,
            frame.version,
            Some(frame.held),
        ),
        Ok(Err(StreamError::Frame(e))) => {
            debug!(error = %e, "bad frame");
            let _ = recv.stop(0u32.into());
            (
                error_reply(&state, frame_error(&state, e)),
                peer.version,
                None,
            )
        }
        Ok(Err(StreamError::Io { reason })) => {
            debug!(%reason, "stream failed before a request arrived");
            return;
        }
        Err(_) => {
            debug!("no request within the read timeout");
            let _ = recv.stop(0u32.into());
            let _ = send.reset(0u32.into());
            return;
        }
    };
    let written = tokio::time::timeout(
        REPLY_WRITE_TIMEOUT,
        write_frame(&mut send, &reply, version, max),
    )
    .await;
    let Ok(written) = written else {
        debug!("the peer did not read its reply in time; resetting the stream");
        crate::metrics::Metrics::add(&state.metrics.slow_readers_reset, 1);
        let _ = send.reset(0u32.into());
        return;
    };
    if let Err(e) = written {
        match e {
            StreamError::Frame(f) => {
                warn!(error = %f, "reply does not fit in a frame");
                let fallback = error_reply(
                    &state,
                    ReplyError::Unavailable {
                        reason: format!("reply too large: {f}"),
                    },
                );
                let _ = tokio::time::timeout(
                    REPLY_WRITE_TIMEOUT,
                    write_frame(&mut send, &fallback, version, max),
                )
                .await;
            }
            StreamError::Io { reason } => debug!(%reason, "peer went away before the reply"),
        }
    }
}

fn frame_error(state: &NodeState, e: FrameError) -> ReplyError {
    match e {
        FrameError::UnsupportedVersion { found, .. } => ReplyError::UnsupportedVersion {
            found,
            supported: state.protocols.newest(),
        },
        other => ReplyError::Malformed {
            reason: other.to_string(),
        },
    }
}

fn error_reply(state: &NodeState, e: ReplyError) -> Reply {
    Reply {
        epoch: state.ring.load().epoch(),
        body: Response::Error(e),
    }
}
