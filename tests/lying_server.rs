//! A server that holds a valid node certificate and lies in its answers to a batch (protocol
//! 5): it answers one request twice, or a request that was never sent. The caller must not
//! hand one caller's reply to another, must not hang, and must keep the connection usable for
//! the requests the lie did not touch.
//!
//! Batches form deterministically here: one request is held unanswered by the server (so a
//! request is in flight on the connection), and the next eight are polled together by one
//! `tokio::join!`, so the first leads a batch and the other seven join it before it is sent.

use anyhow::{Context as _, Result, bail};
use ringkv_net::quic::{
    QuicTransport, TransportOptions, client_config, endpoint_config, read_frame, server_config,
};
use ringkv_net::{Transport, TransportError};
use ringkv_node::certs::{DevCa, Role};
use ringkv_shared::frame::{self, Protocols};
use ringkv_shared::limits::Limits;
use ringkv_shared::proto::{Reply, Request, Response};
use ringkv_shared::{Member, NodeId};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// How the server answers a batch.
#[derive(Clone, Copy, Debug)]
enum Lie {
    /// The first request's reply, twice.
    RepeatedIndex,
    /// A reply to a request index the batch never had.
    UnknownIndex,
}

fn pong() -> Reply {
    Reply {
        epoch: 0,
        body: Response::Pong { node: NodeId(1) },
    }
}

/// What the lying server saw.
#[derive(Default)]
struct Seen {
    /// Streams carrying one plain request.
    plain: AtomicUsize,
    batches: AtomicUsize,
    batched_requests: AtomicUsize,
}

/// Serves one stream: the first plain request is held until `release`; later plain requests
/// are answered at once and truthfully; a batch is answered with `lie`.
async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    lie: Lie,
    release: Arc<Notify>,
    seen: Arc<Seen>,
) -> Result<()> {
    let max = Limits::default().max_frame_bytes;
    let first: Request = read_frame(&mut recv, max, Protocols::THIS_BUILD)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let version = frame::PROTOCOL_VERSION;
    let Request::Batch { requests } = first else {
        if seen.plain.fetch_add(1, Ordering::SeqCst) == 0 {
            release.notified().await;
        }
        send.write_all(&frame::encode_as(&pong(), version, max)?)
            .await?;
        send.finish()?;
        return Ok(());
    };
    for _ in 0..requests {
        let _: Request = read_frame(&mut recv, max, Protocols::THIS_BUILD)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    seen.batches.fetch_add(1, Ordering::SeqCst);
    seen.batched_requests
        .fetch_add(usize::from(requests), Ordering::SeqCst);
    let answers: Vec<u32> = match lie {
        Lie::RepeatedIndex => vec![0, 0],
        Lie::UnknownIndex => vec![u32::from(requests) + 7, 0],
    };
    for index in answers {
        send.write_all(&frame::encode_as(&(index, pong()), version, max)?)
            .await?;
    }
    send.finish()?;
    Ok(())
}

async fn serve(endpoint: quinn::Endpoint, lie: Lie, release: Arc<Notify>, seen: Arc<Seen>) {
    while let Some(incoming) = endpoint.accept().await {
        let Ok(conn) = incoming.await else { continue };
        while let Ok((send, recv)) = conn.accept_bi().await {
            tokio::spawn(serve_stream(send, recv, lie, release.clone(), seen.clone()));
        }
    }
}

async fn lied_to(lie: Lie) -> Result<()> {
    let ca = DevCa::generate()?;
    let limits = Limits::default();
    let server_id = ca.identity(&Role::Node(NodeId(1)), "n1")?;
    let client_id = ca.identity(&Role::Client, "app")?;
    let server = quinn::Endpoint::new(
        endpoint_config(&server_id),
        Some(server_config(&server_id, &limits)?),
        std::net::UdpSocket::bind("127.0.0.1:0")?,
        Arc::new(quinn::TokioRuntime),
    )?;
    let addr: SocketAddr = server.local_addr()?;
    let release = Arc::new(Notify::new());
    let seen = Arc::new(Seen::default());
    let serving = tokio::spawn(serve(server, lie, release.clone(), seen.clone()));

    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    let transport = QuicTransport::new(
        endpoint,
        client_config(&client_id, &limits)?,
        TransportOptions::default(),
    );
    let member = Member::at(NodeId(1), addr);
    let call = || transport.call(&member, Request::Ping);

    // The held request: in flight until released, so the next requests find one in flight.
    let held = tokio::spawn({
        let transport = transport.clone();
        let member = member.clone();
        async move { transport.call(&member, Request::Ping).await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.plain.load(Ordering::SeqCst) == 0 {
        if held.is_finished() || tokio::time::Instant::now() > deadline {
            bail!("the server never got the request it holds");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let batched = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(
            call(),
            call(),
            call(),
            call(),
            call(),
            call(),
            call(),
            call()
        )
    })
    .await
    .context(
        "callers of a lying batch hung: a reply they were owed never came and nothing failed them",
    )?;
    let results = [
        batched.0, batched.1, batched.2, batched.3, batched.4, batched.5, batched.6, batched.7,
    ];
    if seen.batches.load(Ordering::SeqCst) == 0 {
        bail!("no batch formed: the test did not exercise the batch path ({results:?})");
    }
    let mut oks = 0;
    let mut bad = 0;
    for r in &results {
        match r {
            Ok(Response::Pong { node }) if *node == NodeId(1) => oks += 1,
            Err(TransportError::BadReply { .. }) => bad += 1,
            other => bail!("{lie:?}: an unexpected outcome {other:?}"),
        }
    }
    let expect_ok = match lie {
        // The first reply is true and goes to the request it names; the repeat fails the rest.
        Lie::RepeatedIndex => 1,
        // The lie comes first: every caller of the batch is failed.
        Lie::UnknownIndex => 0,
    };
    // Requests that went out alone (not batched) were answered truthfully.
    let alone = results.len() - seen.batched_requests.load(Ordering::SeqCst);
    if oks != expect_ok + alone || bad != results.len() - oks {
        bail!(
            "{lie:?}: {oks} answered and {bad} failed as a bad reply, of {} batched and {alone} alone",
            results.len() - alone
        );
    }
    // The lie failed only its own batch: the held request and a new one are answered.
    release.notify_one();
    let held = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .context("the held request was not answered after its release")??;
    if !matches!(held, Ok(Response::Pong { .. })) {
        bail!("{lie:?}: the held request got {held:?}");
    }
    let after = tokio::time::timeout(Duration::from_secs(10), call())
        .await
        .context("a request after the lie hung")?;
    if !matches!(after, Ok(Response::Pong { .. })) {
        bail!("{lie:?}: a request after the lie got {after:?}");
    }
    serving.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answered_twice_for_one_request_fails_the_rest_and_no_caller_hangs() -> Result<()> {
    lied_to(Lie::RepeatedIndex).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answered_for_a_request_never_sent_fails_every_caller() -> Result<()> {
    lied_to(Lie::UnknownIndex).await
}
