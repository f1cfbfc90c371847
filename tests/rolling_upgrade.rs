//! A rolling upgrade with real processes: nodes are stopped and started one at a time as the
//! next release (the test hook `RINGKV_TEST_PROTOCOL=next`: it speaks the next protocol
//! version and this one), and a newcomer of the next release joins in the middle. Through the
//! mixed cluster, clients of this release write and read, gossip spreads the ring change, and
//! handoff moves partitions between nodes of both releases. Every pair of peers settles on
//! the newest version both speak; a peer with no version in common is refused with a message
//! that says so.

mod support;

use anyhow::{Context as _, Result, ensure};
use ringkv::{CallOptions, Client, Context};
use ringkv_net::quic::{QuicTransport, TransportOptions, client_config_speaking};
use ringkv_net::transport::TransportError;
use ringkv_node::protocols::PROTOCOL_ENV;
use ringkv_shared::frame::{PROTOCOL_VERSION, Protocols};
use ringkv_shared::proto::Request;
use std::net::SocketAddr;
use std::time::Duration;
use support::eventually;
use support::real::RealCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TABLES: &str = "[background]\ngossip_interval_ms = 250\nae_interval_ms = 500\n";

/// A free loopback TCP port's address (bound and released).
fn free_tcp() -> Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Prepends a top-level `metrics_listen` to node `i`'s config (read at its next start).
fn give_metrics(cluster: &RealCluster, i: usize) -> Result<SocketAddr> {
    let at = free_tcp()?;
    let path = cluster.dir().join(format!("n{}.toml", i + 1));
    let config = std::fs::read_to_string(&path)?;
    std::fs::write(&path, format!("metrics_listen = \"{at}\"\n{config}"))?;
    Ok(at)
}

/// Connections node's metrics at `at` counts as accepted with protocol `version`.
async fn accepted(at: SocketAddr, version: u8) -> u64 {
    let Ok(mut s) = tokio::net::TcpStream::connect(at).await else {
        return 0;
    };
    let asked = s
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await;
    let mut text = String::new();
    if asked.is_err() || s.read_to_string(&mut text).await.is_err() {
        return 0;
    }
    let prefix = format!("ringkv_connections_accepted_total{{protocol=\"{version}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Stops node `i` with SIGTERM and starts it again as the next release.
async fn upgrade(cluster: &mut RealCluster, i: usize) -> Result<()> {
    ensure!(
        cluster.stop(i, Duration::from_secs(20))?,
        "node {} did not stop on SIGTERM",
        i + 1
    );
    cluster.set_env(i, PROTOCOL_ENV, "next");
    cluster.start_node(i)?;
    eventually(
        Duration::from_secs(30),
        "the upgraded node answers",
        || async { cluster.status(i).await.is_ok() },
    )
    .await
}

/// Writes `n` keys `prefix-i` with W = 3 (every replica, so every connection is used). A
/// write is tried up to three times: the first request on a connection to a process that was
/// just restarted fails (its successor resets the connection) and the client reconnects.
async fn write(c: &Client, prefix: &str, n: usize) -> Result<()> {
    for i in 0..n {
        let mut tries = 0;
        loop {
            let put = c
                .put_with(
                    format!("{prefix}-{i}"),
                    format!("{prefix}-value-{i}"),
                    &Context::empty(),
                    CallOptions::default().quorum(3),
                )
                .await;
            match put {
                Ok(_) => break,
                Err(e) if tries == 2 => {
                    return Err(e).with_context(|| format!("writing {prefix}-{i}"));
                }
                Err(_) => tries += 1,
            }
        }
    }
    Ok(())
}

/// Reads back every key `write` wrote, with R = 2.
async fn read_back(c: &Client, prefix: &str, n: usize) -> Result<()> {
    for i in 0..n {
        let key = format!("{prefix}-{i}");
        let got = c
            .get_with(key.clone(), CallOptions::default().quorum(2))
            .await
            .with_context(|| format!("reading {key}"))?;
        let want = format!("{prefix}-value-{i}");
        // A retried write may leave its value twice, as siblings.
        let mut values = got.values.clone();
        values.dedup();
        ensure!(
            values.len() == 1 && values[0] == want.as_bytes(),
            "{key}: {:?}",
            got.values
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_upgraded_one_node_at_a_time_keeps_serving_and_moves_data() -> Result<()> {
    let mut cluster = RealCluster::start(3, TABLES)?;
    let c = cluster.client().await?;
    write(&c, "before", 100).await?;
    // A caller of the release before (it speaks only the oldest version this build speaks)
    // is served by this release's nodes.
    let old = Protocols::only(ringkv_shared::frame::OLDEST_PROTOCOL_VERSION);
    let old_endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    let old_caller = QuicTransport::new(
        old_endpoint,
        client_config_speaking(&cluster.tls, &Default::default(), old)?,
        TransportOptions::default(),
    );
    let read = old_caller
        .call_addr(
            cluster.addrs[0],
            Request::Read {
                key: "before-0".into(),
            },
        )
        .await?;
    ensure!(
        matches!(read, ringkv_shared::proto::Response::Object(_)),
        "an old caller's read: {read:?}"
    );

    // Node 3 goes first. The client and nodes 1 and 2 speak only this release's version.
    let n3_metrics = give_metrics(&cluster, 2)?;
    upgrade(&mut cluster, 2).await?;
    write(&c, "mixed", 100).await?;
    read_back(&c, "before", 100).await?;

    // A newcomer of the next release joins through node 1; handoff moves partitions to it
    // from nodes of both releases.
    let n4_metrics = free_tcp()?;
    cluster.set_env(3, PROTOCOL_ENV, "next");
    let n4 = cluster.add_node(&format!("metrics_listen = \"{n4_metrics}\"\n{TABLES}"))?;
    eventually(Duration::from_secs(30), "node 1 knows node 4", || async {
        cluster
            .status(0)
            .await
            .is_ok_and(|s| s.view.members.len() == 4)
    })
    .await?;
    cluster.admin(0, &["join", "4"])?;
    cluster.admin(0, &["commit"])?;
    eventually(
        Duration::from_secs(120),
        "ring epoch 2 in force on all 4 nodes",
        || async {
            for i in 0..4 {
                match cluster.status(i).await {
                    Ok(s) if s.view.ring.epoch() == 2 && s.view.transition.is_none() => {}
                    _ => return false,
                }
            }
            true
        },
    )
    .await?;
    let ring = cluster.status(0).await?.view.ring;
    ensure!(
        ring.members().any(|m| m.id.0 == n4 as u32 + 1),
        "node 4 in the ring"
    );
    read_back(&c, "before", 100).await?;
    read_back(&c, "mixed", 100).await?;

    // Peers settled per pair: nodes 3 and 4 on the next version with each other, on this
    // one with nodes 1 and 2 and with the client.
    let next = PROTOCOL_VERSION + 1;
    eventually(
        Duration::from_secs(30),
        "nodes 3 and 4 accepted connections of both versions",
        || async {
            accepted(n3_metrics, next).await > 0
                && accepted(n3_metrics, PROTOCOL_VERSION).await > 0
                && accepted(n4_metrics, next).await > 0
                && accepted(n4_metrics, PROTOCOL_VERSION).await > 0
        },
    )
    .await?;

    // The rest of the cluster follows; the old client still works throughout.
    upgrade(&mut cluster, 0).await?;
    upgrade(&mut cluster, 1).await?;
    write(&c, "after", 50).await?;
    for prefix in ["before", "mixed"] {
        read_back(&c, prefix, 100).await?;
    }
    read_back(&c, "after", 50).await?;

    // A caller that speaks no version the nodes speak is refused, and told why.
    let far = Protocols::only(PROTOCOL_VERSION + 2);
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    let quic = QuicTransport::new(
        endpoint,
        client_config_speaking(&cluster.tls, &Default::default(), far)?,
        TransportOptions::default(),
    );
    match quic.call_addr(cluster.addrs[0], Request::Ping).await {
        Err(TransportError::Refused { reason, .. }) => {
            ensure!(reason.contains("no protocol version in common"), "{reason}")
        }
        other => anyhow::bail!("a caller of protocol {far} was not refused: {other:?}"),
    }
    Ok(())
}
