//! The QUIC accept loop: connections, streams, frames.
//!
//! Each stream carries one request frame, and the reply goes back on the same stream; from
//! protocol version 5 ([`BATCHES_SINCE`]) a stream may instead carry a batch: a
//! `Request::Batch` header and the 2 to [`MAX_REQUESTS_PER_STREAM`] request frames it
//! announces, handled concurrently and answered by one `(index, reply)` frame each as soon as
//! each is ready. A single frame that is too large,
//! truncated, of another protocol version or not a valid message is answered with an error
//! reply (and the stream closed); a batch with such a frame, or with too many frames, is reset
//! unanswered (only a peer that does not follow the protocol sends one). The connection and the
//! node carry on. A peer that opens a stream and sends nothing is cut off after
//! [`REQUEST_READ_TIMEOUT`].

use crate::connection_slots::ConnectionSlots;
use crate::dispatch;
use crate::state::NodeState;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use ringkv_net::quic::{Frame, MemoryBudget, StreamError, read_frame_within, write_frame};
use ringkv_shared::ReplyError;
use ringkv_shared::frame::{BATCHES_SINCE, FrameError, MAX_REQUESTS_PER_STREAM};
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
        Ok(Ok(Frame {
            msg: Request::Batch { requests },
            version,
            ..
        })) if version >= BATCHES_SINCE => {
            let batch = tokio::time::timeout(
                REQUEST_READ_TIMEOUT,
                read_batch(&state, &budgets, &mut recv, requests),
            )
            .await;
            match batch {
                Ok(Ok(batch)) => return answer_batch(&state, &peer, version, batch, send).await,
                Ok(Err(why)) => debug!(%why, "batch refused"),
                Err(_) => debug!("the batch did not arrive within the read timeout"),
            }
            let _ = recv.stop(0u32.into());
            let _ = send.reset(0u32.into());
            return;
        }
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
    if write_answer(&state, &mut send, None, &reply, version).await {
        let _ = send.finish();
    }
}

/// Writes one answer frame, leaving the stream open: `reply` itself, or `(index, reply)` for a
/// request of a batch. A reply too large for a frame is replaced by an `Unavailable` error; a
/// peer that does not take it within [`REPLY_WRITE_TIMEOUT`] has the stream reset. Returns
/// whether the stream can still be written (false once it was reset or the peer went away).
async fn write_answer(
    state: &NodeState,
    send: &mut quinn::SendStream,
    index: Option<u32>,
    reply: &Reply,
    version: u8,
) -> bool {
    let max = state.limits.max_frame_bytes;
    async fn write(
        send: &mut quinn::SendStream,
        index: Option<u32>,
        reply: &Reply,
        version: u8,
        max: usize,
    ) -> Result<(), StreamError> {
        match index {
            Some(index) => write_frame(send, &(index, reply), version, max).await,
            None => write_frame(send, reply, version, max).await,
        }
    }
    let written =
        tokio::time::timeout(REPLY_WRITE_TIMEOUT, write(send, index, reply, version, max)).await;
    match written {
        Err(_) => {
            debug!("the peer did not read its reply in time; resetting the stream");
            crate::metrics::Metrics::add(&state.metrics.slow_readers_reset, 1);
            let _ = send.reset(0u32.into());
            false
        }
        Ok(Ok(())) => true,
        Ok(Err(StreamError::Frame(f))) => {
            warn!(error = %f, "reply does not fit in a frame");
            let fallback = error_reply(
                state,
                ReplyError::Unavailable {
                    reason: format!("reply too large: {f}"),
                },
            );
            let _ = tokio::time::timeout(
                REPLY_WRITE_TIMEOUT,
                write(send, index, &fallback, version, max),
            )
            .await;
            true
        }
        Ok(Err(StreamError::Io { reason })) => {
            debug!(%reason, "peer went away before the reply");
            false
        }
    }
}

/// The `requests` request frames a batch header announced. A count outside 2 to
/// [`MAX_REQUESTS_PER_STREAM`], a frame that cannot be read, or a stream that ends early
/// refuses the batch.
async fn read_batch(
    state: &NodeState,
    budgets: &(MemoryBudget, MemoryBudget),
    recv: &mut quinn::RecvStream,
    requests: u16,
) -> Result<Vec<Frame<Request>>, String> {
    let requests = usize::from(requests);
    if !(2..=MAX_REQUESTS_PER_STREAM).contains(&requests) {
        return Err(format!(
            "a batch of {requests} requests (2 to {MAX_REQUESTS_PER_STREAM} allowed)"
        ));
    }
    let mut batch = Vec::with_capacity(requests);
    for _ in 0..requests {
        let frame = read_frame_within::<Request>(
            recv,
            state.limits.max_frame_bytes,
            state.protocols,
            &[&budgets.0, &budgets.1],
        )
        .await
        .map_err(|e| e.to_string())?;
        batch.push(frame);
    }
    Ok(batch)
}

/// Handles a batch's requests concurrently and writes each one's `(index, reply)` as soon as
/// it is ready, in the version of the batch's header; each request's buffered bytes stay
/// counted until its reply is written.
async fn answer_batch(
    state: &Arc<NodeState>,
    peer: &Peer,
    version: u8,
    batch: Vec<Frame<Request>>,
    mut send: quinn::SendStream,
) {
    use crate::metrics::Metrics;
    Metrics::add(&state.metrics.request_batches, 1);
    Metrics::add(&state.metrics.batched_requests, batch.len() as u64);
    let mut pending: FuturesUnordered<_> = batch
        .into_iter()
        .enumerate()
        .map(|(index, frame)| async move {
            let reply = dispatch::handle(state, &peer.role, frame.msg).await;
            (index as u32, reply, frame.held)
        })
        .collect();
    while let Some((index, reply, held)) = pending.next().await {
        if !write_answer(state, &mut send, Some(index), &reply, version).await {
            return;
        }
        drop(held);
    }
    let _ = send.finish();
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
