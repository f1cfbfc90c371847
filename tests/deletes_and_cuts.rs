//! Deletes that stay deleted, dots that are never reused, and concurrent writes on both sides
//! of a network cut.

mod support;

use anyhow::Result;
use bytes::Bytes;
use ringkv::{CallOptions, Context, Mode};
use ringkv_node::config::BackgroundConfig;
use ringkv_node::testing::LocalCluster;
use ringkv_shared::VersionVector;
use ringkv_shared::proto::{Quorum, Request, Response};
use std::time::Duration;
use support::{RawConn, client, eventually};

fn sorted(v: &ringkv::Versions) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = v.values.iter().map(|b| b.to_vec()).collect();
    out.sort();
    out
}

fn holds(cluster: &LocalCluster, i: usize, key: &[u8]) -> bool {
    let node = cluster.node(i).expect("running");
    node.store()
        .get(node.ring().partition_of(key), key)
        .ok()
        .flatten()
        .is_some()
}

/// Runs every node's hinted handoff and anti-entropy once more, then checks that `key` is gone
/// everywhere and reads as not found with R=3.
async fn assert_stays_deleted(
    cluster: &LocalCluster,
    c: &ringkv::Client,
    key: &[u8],
) -> Result<()> {
    for i in 0..3 {
        let node = cluster.node(i).expect("running");
        node.deliver_hints_now().await;
        // Every exchange must actually run; a transient connection failure on a loaded machine
        // is retried, not counted as a pass.
        eventually(
            Duration::from_secs(20),
            "a full round of anti-entropy exchanges",
            || async { node.anti_entropy_now().await.iter().all(Result::is_ok) },
        )
        .await?;
    }
    let after = c
        .get_with(key.to_vec(), CallOptions::default().quorum(3))
        .await?;
    assert!(after.is_not_found(), "resurrected: {after:?}");
    assert!((0..3).all(|i| !holds(cluster, i, key)));
    Ok(())
}

fn reaped_everywhere(cluster: &LocalCluster, key: &[u8]) -> bool {
    let reaped: u64 = (0..3)
        .filter_map(|i| cluster.node(i))
        .map(|n| n.stats().tombstones_reaped)
        .sum();
    let hints: u64 = (0..3)
        .filter_map(|i| cluster.node(i))
        .map(|n| n.stats().hints_pending)
        .sum();
    reaped >= 3 && hints == 0 && (0..3).all(|i| !holds(cluster, i, key))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_stays_deleted_when_a_replica_returns_with_the_old_value() -> Result<()> {
    let background = BackgroundConfig {
        ae_interval_ms: 50,
        hint_interval_ms: 100,
        // Longer than the tests' 3 s request deadline: no copy of a write can still be in
        // flight when the tombstone is reaped.
        tombstone_grace_ms: 3500,
        allow_short_tombstone_grace: true,
        reap_interval_ms: 100,
        ..BackgroundConfig::default()
    };
    let mut cluster = LocalCluster::builder(3)
        .background(background)
        .start()
        .await?;
    let c = client(&cluster, Mode::Direct).await?;
    let key = b"doomed";
    c.put_with(
        &key[..],
        "old value",
        &Context::empty(),
        CallOptions::default().quorum(3),
    )
    .await?;
    // n3 is down while the key is deleted; it comes back holding the old value.
    cluster.stop(2).await?;
    let read = c.get(&key[..]).await?;
    c.delete(&key[..], &read.context).await?;
    cluster.restart(2).await?;
    eventually(
        Duration::from_secs(30),
        "the tombstone is reaped on every replica",
        || async { reaped_everywhere(&cluster, key) },
    )
    .await?;
    assert_stays_deleted(&cluster, &c, key).await?;
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_hint_with_the_old_value_does_not_bring_a_deleted_key_back() -> Result<()> {
    let background = BackgroundConfig {
        ae_interval_ms: 50,
        hint_interval_ms: 8000, // the hint arrives long after a reap could have happened
        // Longer than the tests' 3 s request deadline: no copy of a write can still be in
        // flight when the tombstone is reaped.
        tombstone_grace_ms: 3500,
        allow_short_tombstone_grace: true,
        reap_interval_ms: 100,
        ..BackgroundConfig::default()
    };
    let cluster = LocalCluster::builder(3)
        .background(background)
        .start()
        .await?;
    let c = client(&cluster, Mode::Direct).await?;
    let key = b"doomed";
    c.put_with(
        &key[..],
        "old value",
        &Context::empty(),
        CallOptions::default().quorum(3),
    )
    .await?;
    let n1 = cluster.node(0).expect("running");
    let p = n1.ring().partition_of(key);
    let old_object = n1.store().get(p, key)?.expect("written with W=3");
    let read = c.get(&key[..]).await?;
    c.delete_with(&key[..], &read.context, CallOptions::default().quorum(3))
        .await?;
    // n2 still holds a copy of the old value for n1, from a time it stood in for it. Reaping
    // before it is delivered would let it recreate the key on n1.
    cluster
        .node(1)
        .expect("running")
        .store()
        .put_hint(cluster.node_id(0), p, key, &old_object)
        .await?;
    eventually(
        Duration::from_secs(30),
        "the hint is delivered and the tombstone reaped",
        || async { reaped_everywhere(&cluster, key) },
    )
    .await?;
    assert_stays_deleted(&cluster, &c, key).await?;
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_is_not_reaped_while_a_replica_is_down() -> Result<()> {
    let background = BackgroundConfig {
        tombstone_grace_ms: 0,
        allow_short_tombstone_grace: true,
        reap_interval_ms: 50,
        ..BackgroundConfig::default()
    };
    let mut cluster = LocalCluster::builder(3)
        .background(background)
        .start()
        .await?;
    let c = client(&cluster, Mode::Direct).await?;
    c.put_with(
        "k",
        "v",
        &Context::empty(),
        CallOptions::default().quorum(3),
    )
    .await?;
    let read = c.get("k").await?;
    cluster.stop(2).await?;
    c.delete("k", &read.context).await?;
    for i in 0..2 {
        assert_eq!(
            cluster.node(i).expect("running").reap_now().await,
            0,
            "n3 is down: no reap"
        );
    }
    assert!(
        holds(&cluster, 0, b"k") || holds(&cluster, 1, b"k"),
        "the tombstone is kept"
    );
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_never_reuses_a_dot() -> Result<()> {
    let mut cluster = LocalCluster::start(3).await?;
    let addr = cluster.addrs()[0];
    let q = Quorum {
        n: 3,
        required: 3,
        timeout_ms: 3000,
    };
    let put = |value: &'static str, context: VersionVector| Request::Put {
        key: Bytes::from_static(b"k"),
        context,
        value: Some(Bytes::from_static(value.as_bytes())),
        quorum: q,
        return_body: false,
    };
    // Every write is coordinated by n1, whatever the key's preference list.
    let raw = RawConn::open(addr, &cluster.client_tls()).await?;
    let reply = raw.request(&put("v1", VersionVector::new())).await?;
    assert!(
        matches!(reply.body, Response::Put { .. }),
        "{:?}",
        reply.body
    );
    let actor_before = cluster.node(0).expect("running").store().actor();
    drop(raw);

    cluster.stop(0).await?;
    std::fs::remove_dir_all(cluster.data_dir(0))?;
    cluster.restart(0).await?;
    assert_ne!(
        cluster.node(0).expect("running").store().actor(),
        actor_before,
        "a new incarnation"
    );

    // A blind write through the amnesiac node: with a reused dot it would be confused with v1
    // and one of them lost; with a new incarnation both survive as siblings.
    let raw = RawConn::open(addr, &cluster.client_tls()).await?;
    let reply = raw.request(&put("v2", VersionVector::new())).await?;
    assert!(
        matches!(reply.body, Response::Put { .. }),
        "{:?}",
        reply.body
    );
    let c = client(&cluster, Mode::Direct).await?;
    let read = c.get_with("k", CallOptions::default().quorum(3)).await?;
    assert_eq!(sorted(&read), vec![b"v1".to_vec(), b"v2".to_vec()]);

    // A write with the read's context through the same node orders after both.
    let ctx = ringkv_shared::encoding::decode_context(read.context.as_bytes())?;
    let reply = raw.request(&put("v3", ctx)).await?;
    assert!(
        matches!(reply.body, Response::Put { .. }),
        "{:?}",
        reply.body
    );
    assert_eq!(
        sorted(&c.get_with("k", CallOptions::default().quorum(3)).await?),
        vec![b"v3".to_vec()]
    );
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_both_sides_of_a_cut_become_siblings_after_it_heals() -> Result<()> {
    let cluster = LocalCluster::start(3).await?;
    let addrs = cluster.addrs();
    let left = client(&cluster, Mode::Direct).await?;
    let right = client(&cluster, Mode::Direct).await?;
    left.put_with(
        "cart",
        "base",
        &Context::empty(),
        CallOptions::default().quorum(3),
    )
    .await?;
    let ctx = left.get("cart").await?.context;

    // The cut: {left client, n1} | {right client, n2, n3}.
    cluster
        .node(0)
        .expect("running")
        .block(addrs[1..].iter().copied());
    for i in 1..3 {
        cluster.node(i).expect("running").block([addrs[0]]);
    }
    left.block_for_testing(addrs[1..].iter().copied());
    right.block_for_testing([addrs[0]]);

    // Both sides keep accepting writes: W=1 on the small side, W=2 on the large one.
    left.put_with("cart", "from-left", &ctx, CallOptions::default().quorum(1))
        .await?;
    right
        .put_with("cart", "from-right", &ctx, CallOptions::default().quorum(2))
        .await?;

    for i in 0..3 {
        cluster.node(i).expect("running").heal();
    }
    left.heal_for_testing();
    right.heal_for_testing();

    let read = left
        .get_with("cart", CallOptions::default().quorum(3))
        .await?;
    assert_eq!(
        sorted(&read),
        vec![b"from-left".to_vec(), b"from-right".to_vec()]
    );
    // And the replicas converge to the same siblings without further reads.
    eventually(
        Duration::from_secs(20),
        "all replicas hold both siblings",
        || async {
            (0..3).all(|i| {
                let node = cluster.node(i).expect("running");
                let p = node.ring().partition_of(b"cart");
                node.store()
                    .get(p, b"cart")
                    .ok()
                    .flatten()
                    .is_some_and(|o| o.values().count() == 2)
            })
        },
    )
    .await?;
    cluster.shutdown().await;
    Ok(())
}
