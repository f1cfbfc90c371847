//! Nodes export Prometheus metrics over HTTP.

mod support;

use anyhow::{Context as _, Result};
use ringkv::{Context, Mode};
use ringkv_node::testing::LocalCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn scrape(addr: std::net::SocketAddr) -> Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
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
        puts += sample(&text, "ringkv_requests_total{op=\"put\"}").unwrap_or(0.0);
        reads += sample(&text, "ringkv_requests_total{op=\"read\"}").unwrap_or(0.0);
        for name in [
            "ringkv_request_duration_seconds_bucket",
            "ringkv_replica_read_siblings_bucket",
            "ringkv_hints_pending",
            "ringkv_anti_entropy_rounds_total",
            "ringkv_anti_entropy_keys_repaired_total",
            "ringkv_anti_entropy_sent_bytes_total",
            "ringkv_objects",
        ] {
            assert!(
                text.contains(name),
                "{name} missing from node {i}'s metrics"
            );
        }
    }
    assert_eq!(puts, 20.0, "each put was coordinated by exactly one node");
    assert!(
        reads >= 40.0,
        "each get reads at least R=2 replicas: {reads}"
    );
    cluster.shutdown().await;
    Ok(())
}
