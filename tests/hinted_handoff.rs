//! Sloppy quorum and hinted handoff on in-process clusters.

mod support;

use anyhow::Result;
use ringkv::{CallOptions, Context, Mode};
use ringkv_node::testing::LocalCluster;
use std::time::Duration;
use support::{client, eventually};

/// Keys `0..count` whose value is `v{i}`.
async fn write_keys(c: &ringkv::Client, count: usize, opts: CallOptions) -> Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in (0..count).collect::<Vec<_>>().chunks(count.div_ceil(16)) {
        let (c, chunk) = (c.clone(), chunk.to_vec());
        tasks.spawn(async move {
            for i in chunk {
                c.put_with(format!("key-{i}"), format!("v{i}"), &Context::empty(), opts)
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

fn holds_all(cluster: &LocalCluster, index: usize, count: usize) -> usize {
    let Some(node) = cluster.node(index) else {
        return 0;
    };
    let ring = node.ring();
    (0..count)
        .filter(|i| {
            let key = format!("key-{i}");
            let p = ring.partition_of(key.as_bytes());
            node.store()
                .get(p, key.as_bytes())
                .ok()
                .flatten()
                .is_some_and(|o| {
                    o.values().next().map(|v| v.as_ref()) == Some(format!("v{i}").as_bytes())
                })
        })
        .count()
}

fn hints_pending(cluster: &LocalCluster, nodes: usize) -> u64 {
    (0..nodes)
        .filter_map(|i| cluster.node(i))
        .map(|n| n.stats().hints_pending)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_was_down_receives_every_write_from_hints() -> Result<()> {
    const KEYS: usize = 1000;
    let mut cluster = LocalCluster::start(3).await?;
    let c = client(&cluster, Mode::Direct).await?;
    cluster.stop(2).await?;
    write_keys(&c, KEYS, CallOptions::default()).await?;
    assert_eq!(holds_all(&cluster, 2, KEYS), 0);
    // With N=3 on 3 nodes there is no stand-in: the coordinators keep the hints themselves.
    eventually(Duration::from_secs(10), "hints for every key", || async {
        hints_pending(&cluster, 3) >= KEYS as u64
    })
    .await?;

    cluster.restart(2).await?;
    let started = std::time::Instant::now();
    eventually(
        Duration::from_secs(30),
        "the returning replica holds all 1000 keys",
        || async { holds_all(&cluster, 2, KEYS) == KEYS },
    )
    .await?;
    eventually(
        Duration::from_secs(10),
        "every hint keyspace is empty",
        || async { hints_pending(&cluster, 3) == 0 },
    )
    .await?;
    let delivered: u64 = (0..3)
        .filter_map(|i| cluster.node(i))
        .map(|n| n.stats().hints_delivered)
        .sum();
    println!(
        "{KEYS} keys handed over in {:?}; {delivered} hints delivered",
        started.elapsed()
    );
    assert!(delivered >= KEYS as u64);
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stand_ins_count_toward_w_and_hand_over() -> Result<()> {
    let mut cluster = LocalCluster::start(5).await?;
    let c = client(&cluster, Mode::Direct).await?;
    cluster.stop(4).await?;
    let down = cluster.node_id(4);
    // Keys that n5 owns: with it down, W=3 (all N owners) is still met through stand-ins.
    let ring = c.ring();
    let owned: Vec<String> = (0..400)
        .map(|i| format!("key-{i}"))
        .filter(|k| {
            ring.replicas(ring.partition_of(k.as_bytes()), 3)
                .contains(&down)
        })
        .take(50)
        .collect();
    assert!(!owned.is_empty());
    for k in &owned {
        c.put_with(
            k.clone(),
            "v",
            &Context::empty(),
            CallOptions::default().quorum(3),
        )
        .await?;
    }
    // The copies for n5 sit on nodes that are not owners of those keys, as hints.
    let held_by_standins: u64 = (0..4)
        .filter_map(|i| cluster.node(i))
        .map(|n| n.stats().hints_stored)
        .sum();
    assert!(
        held_by_standins >= owned.len() as u64,
        "{held_by_standins} hints stored"
    );
    // A read with R=3 succeeds too: the stand-in answers with its hint.
    for k in owned.iter().take(5) {
        let read = c
            .get_with(k.clone(), CallOptions::default().quorum(3))
            .await?;
        assert_eq!(read.values.len(), 1, "{k}");
    }
    cluster.restart(4).await?;
    eventually(
        Duration::from_secs(30),
        "n5 receives every key it owns",
        || async {
            let node = cluster.node(4).expect("restarted");
            let ring = node.ring();
            owned.iter().all(|k| {
                let p = ring.partition_of(k.as_bytes());
                node.store().get(p, k.as_bytes()).ok().flatten().is_some()
            })
        },
    )
    .await?;
    eventually(Duration::from_secs(10), "no hints left", || async {
        hints_pending(&cluster, 5) == 0
    })
    .await?;
    cluster.shutdown().await;
    Ok(())
}
