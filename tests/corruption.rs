//! A flipped bit in a stored object: the checksum catches it, the node reports it and keeps
//! serving every other key, clients still read the key from the other replicas, and
//! anti-entropy repairs the object from a co-replica.

mod support;

use anyhow::{Result, bail, ensure};
use ringkv::{CallOptions, Context, Mode};
use ringkv_node::testing::LocalCluster;
use ringkv_shared::ReplyError;
use ringkv_shared::proto::{Request, Response};
use std::time::Duration;
use support::{RawConn, client, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_bit_is_detected_reported_and_repaired_from_a_co_replica() -> Result<()> {
    let background = ringkv_node::config::BackgroundConfig {
        ae_interval_ms: 200,
        ..Default::default()
    };
    let mut cluster = LocalCluster::builder(3)
        .background(background)
        .start()
        .await?;
    let c = client(&cluster, Mode::Direct).await?;
    let all = CallOptions::default().quorum(3);
    for i in 0..50 {
        c.put_with(
            format!("k{i}"),
            format!("value {i}"),
            &Context::empty(),
            all,
        )
        .await?;
    }
    let node = cluster.node(0).expect("runs");
    let ring = node.ring();
    let p = ring.partition_of(b"k7");
    ensure!(
        node.store().corrupt_for_testing(p, b"k7")?,
        "k7 is stored on node 1"
    );
    // Restart: the node's hash trees are rebuilt from what is on disk, bit flip included.
    cluster.restart(0).await?;

    let conn = RawConn::open(cluster.addrs()[0], &cluster.client_tls()).await?;
    let reply = conn.request(&Request::Read { key: "k7".into() }).await?;
    match reply.body {
        Response::Error(ReplyError::Storage { reason, .. }) => {
            ensure!(reason.contains("corrupt"), "{reason}");
        }
        // Anti-entropy may already have repaired it.
        Response::Object(o) if o.values().next().is_some_and(|v| v.as_ref() == b"value 7") => {}
        other => bail!("a corrupt object must be reported, not served: {other:?}"),
    }
    let reply = conn.request(&Request::Read { key: "k8".into() }).await?;
    ensure!(
        matches!(&reply.body, Response::Object(o) if o.values().next().is_some_and(|v| v.as_ref() == b"value 8")),
        "other keys are still served: {:?}",
        reply.body
    );
    let read = c.get("k7").await?;
    ensure!(
        read.values == vec![bytes::Bytes::from_static(b"value 7")],
        "{:?}",
        read.values
    );

    eventually(
        Duration::from_secs(30),
        "anti-entropy repairs k7 on node 1",
        || async {
            cluster
                .node(0)
                .and_then(|n| n.store().get(p, b"k7").ok().flatten())
                .is_some_and(|o| o.values().next().is_some_and(|v| v.as_ref() == b"value 7"))
        },
    )
    .await?;
    conn.endpoint.close(0u32.into(), b"done");
    cluster.shutdown().await;
    Ok(())
}
