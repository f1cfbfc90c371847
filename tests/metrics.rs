//! Nodes export Prometheus metrics, health and readiness over HTTP; a client reports every
//! operation to the application's observer.

mod support;

use anyhow::{Context as _, Result};
use ringkv::{CallOptions, Client, Context, Mode, OperationCounts, OperationKind};
use ringkv_node::testing::LocalCluster;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn scrape(addr: std::net::SocketAddr) -> Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

/// The sum over the cluster's first `nodes` nodes of the first sample starting with `prefix`.
async fn sum_over_nodes(cluster: &LocalCluster, nodes: usize, prefix: &str) -> Result<f64> {
    let mut sum = 0.0;
    for i in 0..nodes {
        let addr = cluster
            .node(i)
            .context("running")?
            .metrics_addr()
            .context("metrics on")?;
        sum += sample(&scrape(addr).await?, prefix).unwrap_or(0.0);
    }
    Ok(sum)
}

/// The value of the first sample line starting with `prefix`.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_export_request_counts_latencies_and_background_counters() -> Result<()> {
    let cluster = LocalCluster::builder(3).metrics(true).start().await?;
    let c = support::client(&cluster, Mode::Direct).await?;
    for i in 0..20 {
        c.put(format!("m{i}"), "v", &Context::empty()).await?;
        c.get(format!("m{i}")).await?;
    }
    let mut puts = 0.0;
    let mut reads = 0.0;
    for i in 0..3 {
        let addr = cluster
            .node(i)
            .context("running")?
            .metrics_addr()
            .context("metrics on")?;
        let text = scrape(addr).await?;
        assert!(
            text.starts_with("HTTP/1.1 200"),
            "{}",
            &text[..text.len().min(200)]
        );
        puts += sample(&text, "ringkv_requests_total{op=\"put\",outcome=\"ok\"}").unwrap_or(0.0);
        reads += sample(&text, "ringkv_requests_total{op=\"read\",outcome=\"ok\"}").unwrap_or(0.0);
        for name in [
            "ringkv_request_duration_seconds_bucket",
            "ringkv_replica_read_siblings_bucket",
            "ringkv_hints_pending",
            "ringkv_anti_entropy_rounds_total",
            "ringkv_anti_entropy_keys_repaired_total",
            "ringkv_anti_entropy_sent_bytes_total",
            "ringkv_objects",
            "ringkv_fsyncs_total",
            "ringkv_merges_refused_total",
            "ringkv_build_info{version=",
            "ringkv_disk_bytes",
            "ringkv_read_repairs_total",
        ] {
            assert!(
                text.contains(name),
                "{name} missing from node {i}'s metrics"
            );
        }
    }
    let text = scrape(
        cluster
            .node(0)
            .context("running")?
            .metrics_addr()
            .context("on")?,
    )
    .await?;
    assert_eq!(
        sample(&text, "ringkv_ring_epoch"),
        Some(1.0),
        "the founding ring"
    );
    assert_eq!(sample(&text, "ringkv_members{stage=\"up\"}"), Some(3.0));
    assert_eq!(
        sample(&text, "ringkv_members{stage=\"joining\"}"),
        Some(0.0)
    );
    assert_eq!(sample(&text, "ringkv_peers{state=\"up\"}"), Some(2.0));
    assert_eq!(sample(&text, "ringkv_peers{state=\"down\"}"), Some(0.0));
    assert_eq!(
        sample(&text, "ringkv_handoff_transfers_remaining"),
        Some(0.0)
    );
    assert!(
        text.contains("# TYPE ringkv_fsyncs counter"),
        "fsyncs is a counter"
    );
    assert_eq!(puts, 20.0, "each put was coordinated by exactly one node");
    assert!(
        reads >= 40.0,
        "each get reads at least R=2 replicas: {reads}"
    );
    cluster.shutdown().await;
    Ok(())
}

/// One HTTP GET on the metrics listener: the status code and the body.
async fn get(addr: std::net::SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    let code = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status line")?;
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    Ok((code, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_while_running_and_ready_only_once_the_node_is_in_the_ring() -> Result<()> {
    let mut cluster = LocalCluster::builder(3).metrics(true).start().await?;
    let addr = |cluster: &LocalCluster, i: usize| -> Result<std::net::SocketAddr> {
        cluster
            .node(i)
            .context("running")?
            .metrics_addr()
            .context("metrics on")
    };
    for i in 0..3 {
        let (code, body) = get(addr(&cluster, i)?, "/health").await?;
        assert_eq!((code, body.as_str()), (200, "ok\n"), "node {i}");
        let (code, body) = get(addr(&cluster, i)?, "/ready").await?;
        assert_eq!(code, 200, "node {i}: {body}");
        assert!(body.contains(r#""ready":true"#), "node {i}: {body}");
    }

    // A newcomer runs (healthy) but owns nothing until an operator's join is committed.
    let new = cluster.add_node().await?;
    let (code, _) = get(addr(&cluster, new)?, "/health").await?;
    assert_eq!(code, 200);
    // Not ready before it hears from the cluster, nor after: it is not in the ring.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (code, body) = get(addr(&cluster, new)?, "/ready").await?;
        assert_eq!(code, 503, "{body}");
        assert!(body.contains(r#""ready":false"#), "{body}");
        if body.contains("not in the ring") {
            break;
        }
        assert!(body.contains("no ring known"), "{body}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the newcomer never learnt the cluster's ring: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Joined and committed: ready once the ring that includes it is in force.
    let id = cluster.node_id(new);
    support::admin(
        &cluster,
        0,
        ringkv_shared::proto::AdminRequest::Join {
            node: Some(id),
            addr: None,
        },
    )
    .await?;
    support::admin(&cluster, 0, ringkv_shared::proto::AdminRequest::Commit).await?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (code, body) = get(addr(&cluster, new)?, "/ready").await?;
        if code == 200 {
            assert!(body.contains(r#""ready":true"#), "{body}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the joined node never became ready: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (code, _) = get(addr(&cluster, 0)?, "/nothing-here").await?;
    assert_eq!(code, 404);
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reports_every_operation_to_its_observer() -> Result<()> {
    let cluster = LocalCluster::builder(3).start().await?;
    let counts = Arc::new(OperationCounts::default());
    let slow = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = slow.clone();
    let c = Client::builder()
        .seeds(cluster.addrs())
        .tls(cluster.client_tls())
        .timeout(Duration::from_secs(2))
        .observer(counts.clone())
        .build()
        .await?;
    // A closure works too: here, the longest operation seen.
    let timed = Client::builder()
        .seeds(cluster.addrs())
        .tls(cluster.client_tls())
        .observer(move |op: &ringkv::Operation<'_>| {
            let us = u64::try_from(op.duration.as_micros()).unwrap_or(u64::MAX);
            seen.fetch_max(us, std::sync::atomic::Ordering::Relaxed);
        })
        .build()
        .await?;
    for i in 0..5 {
        c.put(format!("o{i}"), "v", &Context::empty()).await?;
        c.get(format!("o{i}")).await?;
    }
    c.delete("o0", &c.get("o0").await?.context).await?;
    timed.get("o1").await?;
    assert_eq!(counts.succeeded(OperationKind::Put), 5);
    assert_eq!(counts.succeeded(OperationKind::Get), 6);
    assert_eq!(counts.succeeded(OperationKind::Delete), 1);
    assert!(slow.load(std::sync::atomic::Ordering::Relaxed) > 0);

    // R = 3 with one node unreachable: a quorum failure, counted as one.
    c.block_for_testing([cluster.addrs()[2]]);
    let failed = c.get_with("o1", CallOptions::default().quorum(3)).await;
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(counts.failed(OperationKind::Get), 1);
    assert_eq!(counts.quorum_failures(), 1);
    // Refused input is an operation that failed, too (nothing sent).
    assert!(c.put("", "v", &Context::empty()).await.is_err());
    assert_eq!(counts.failed(OperationKind::Put), 1);
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_peer_is_counted_down_until_it_answers_again() -> Result<()> {
    let mut cluster = LocalCluster::builder(3).metrics(true).start().await?;
    let metrics = cluster
        .node(0)
        .context("running")?
        .metrics_addr()
        .context("metrics on")?;
    let peers = |state: &'static str| async move {
        let text = scrape(metrics).await.unwrap_or_default();
        sample(&text, &format!("ringkv_peers{{state=\"{state}\"}}"))
    };
    assert_eq!(peers("down").await, Some(0.0));
    cluster.stop(2).await?;
    // Gossip and anti-entropy call it within a few rounds; it stays down past the back-off.
    support::eventually(Duration::from_secs(20), "node 3 counted down", || async {
        peers("down").await == Some(1.0)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        peers("down").await,
        Some(1.0),
        "still down after the back-off"
    );
    cluster.restart(2).await?;
    support::eventually(
        Duration::from_secs(30),
        "node 3 counted up again",
        || async { peers("down").await == Some(0.0) && peers("up").await == Some(2.0) },
    )
    .await?;
    cluster.shutdown().await;
    Ok(())
}

/// Router mode: the node coordinating a read repairs the owners that answered with less and
/// counts them, as a node asked by a client to repair does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_read_that_repairs_stale_owners_counts_them() -> Result<()> {
    let background = ringkv_node::config::BackgroundConfig {
        anti_entropy: false,
        ..Default::default()
    };
    let cluster = LocalCluster::builder(3)
        .metrics(true)
        .background(background)
        .start()
        .await?;
    let c = support::client(&cluster, Mode::Router).await?;
    let all = CallOptions::default().quorum(3);
    c.put_with("stale", "v1", &Context::empty(), all).await?;
    // Node 1 alone takes a write the others never see: they are stale against it.
    let node = cluster.node(0).context("running")?;
    let ring = c.ring();
    let written = node
        .store()
        .update(
            ring.partition_of(b"stale"),
            b"stale",
            &ringkv_shared::VersionVector::new(),
            Some("v2".into()),
        )
        .await?;
    assert_eq!(written.values().count(), 2, "a sibling beside v1");
    let read = c.get_with("stale", all).await?;
    assert_eq!(read.values.len(), 2);
    let repaired = sum_over_nodes(&cluster, 3, "ringkv_read_repairs_total").await?;
    assert_eq!(repaired, 2.0, "the two stale owners");
    Ok(())
}

/// Many tasks sharing one client (protocol 5): the requests ready for one node at the same
/// moment travel as a batch on one stream, and every task still gets its own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_sharing_a_client_have_their_requests_batched_and_each_gets_its_answer() -> Result<()>
{
    let cluster = LocalCluster::builder(3).metrics(true).start().await?;
    let c = support::client(&cluster, Mode::Direct).await?;
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let c = c.clone();
            tokio::spawn(async move {
                for i in 0..10 {
                    let key = format!("b{t}-{i}");
                    let value = format!("v{t}-{i}");
                    c.put(key.clone(), value.clone(), &Context::empty()).await?;
                    let read = c.get(key.clone()).await?;
                    let got: Vec<&[u8]> = read.values.iter().map(|v| v.as_ref()).collect();
                    anyhow::ensure!(got == [value.as_bytes()], "{key}: read {got:?}");
                }
                Ok::<_, anyhow::Error>(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let batches = sum_over_nodes(&cluster, 3, "ringkv_request_batches_total").await?;
    let batched = sum_over_nodes(&cluster, 3, "ringkv_batched_requests_total").await?;
    assert!(
        batches > 0.0 && batched >= 2.0 * batches,
        "{batches} batches carrying {batched} requests"
    );
    Ok(())
}

/// Callers that give up mid-request (their futures dropped at any point: while gathering a
/// batch, while leading one, while waiting in one) take no other caller's request down with
/// them: every patient caller on the same client gets its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_give_up_do_not_fail_the_batches_they_shared() -> Result<()> {
    let cluster = LocalCluster::builder(3).start().await?;
    let c = support::client(&cluster, Mode::Direct).await?;
    for i in 0..20 {
        c.put(format!("g{i}"), format!("v{i}"), &Context::empty())
            .await?;
    }
    let patient: Vec<_> = (0..24)
        .map(|t| {
            let c = c.clone();
            tokio::spawn(async move {
                // R = N: a reply lost with a caller that gave up fails the read.
                let all = CallOptions::default().quorum(3);
                for i in 0..40 {
                    let key = format!("g{}", (t + i) % 20);
                    let read = c.get_with(key.clone(), all).await?;
                    let want = format!("v{}", (t + i) % 20);
                    let got: Vec<&[u8]> = read.values.iter().map(|v| v.as_ref()).collect();
                    anyhow::ensure!(got == [want.as_bytes()], "{key}: read {got:?}");
                }
                Ok::<_, anyhow::Error>(())
            })
        })
        .collect();
    let impatient: Vec<_> = (0..24u64)
        .map(|t| {
            let c = c.clone();
            tokio::spawn(async move {
                for i in 0..40u64 {
                    // Give up after 0 to 300 µs: before, while and after the request is sent.
                    let patience = Duration::from_micros((t * 37 + i * 101) % 300);
                    let _ = tokio::time::timeout(patience, c.get(format!("g{}", i % 20))).await;
                }
            })
        })
        .collect();
    for t in impatient {
        t.await?;
    }
    for t in patient {
        t.await??;
    }
    Ok(())
}

/// A batch whose leader's caller gives up while it gathers (its future dropped at the yield)
/// is still sent for the followers that joined it: a follower gets its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_leader_gives_up_is_still_sent_for_its_followers() -> Result<()> {
    use ringkv_net::transport::Transport;
    use ringkv_shared::proto::{Request, Response};
    use std::future::Future;
    use std::task::Poll;
    let cluster = LocalCluster::builder(1).start().await?;
    let tls = cluster.client_tls();
    let limits = ringkv_shared::limits::Limits::default();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    let wire = ringkv_net::quic::QuicTransport::new(
        endpoint,
        ringkv_net::quic::client_config(&tls, &limits)?,
        ringkv_net::quic::TransportOptions::default(),
    );
    let node = ringkv_shared::Member::at(cluster.node_id(0), cluster.addrs()[0]);
    let pong = Response::Pong {
        node: cluster.node_id(0),
    };
    // The connection is made and settled on protocol 5.
    assert_eq!(wire.call(&node, Request::Ping).await?, pong);
    // Polls a call once and says whether it is still under way.
    async fn pending<F: Future>(f: &mut std::pin::Pin<Box<F>>) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(f.as_mut().poll(cx).is_pending())).await
    }
    // One request in flight, so that the next one leads a batch instead of going alone.
    let mut busy = Box::pin(wire.call(&node, Request::GetRing));
    assert!(
        pending(&mut busy).await,
        "the first request is still in flight"
    );
    let mut leader = Box::pin(wire.call(&node, Request::Ping));
    assert!(pending(&mut leader).await, "the leader gathers");
    let mut follower = Box::pin(wire.call(&node, Request::Ping));
    assert!(pending(&mut follower).await, "the follower joins");
    drop(leader);
    let answer = tokio::time::timeout(Duration::from_secs(10), follower).await?;
    assert_eq!(answer?, pong);
    assert!(matches!(busy.await?, Response::Ring(_)));
    Ok(())
}
