//! Merkle anti-entropy on in-process clusters: replicas converge without any reads.

mod support;

use anyhow::Result;
use bytes::Bytes;
use ringkv::{CallOptions, Context, Mode};
use ringkv_node::config::BackgroundConfig;
use ringkv_node::testing::LocalCluster;
use ringkv_shared::encoding::encode_object;
use std::time::Duration;
use support::{client, eventually};

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("key-{i:06}")).collect()
}

async fn write_all(c: &ringkv::Client, keys: &[String], value: &[u8]) -> Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in keys.chunks(keys.len().div_ceil(16).max(1)) {
        let (c, chunk, value) = (c.clone(), chunk.to_vec(), Bytes::copy_from_slice(value));
        tasks.spawn(async move {
            for k in chunk {
                c.put_with(
                    k,
                    value.clone(),
                    &Context::empty(),
                    CallOptions::default().quorum(3),
                )
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

fn count_held(cluster: &LocalCluster, index: usize, keys: &[String]) -> usize {
    let Some(node) = cluster.node(index) else {
        return 0;
    };
    let ring = node.ring();
    keys.iter()
        .filter(|k| {
            node.store()
                .get(ring.partition_of(k.as_bytes()), k.as_bytes())
                .ok()
                .flatten()
                .is_some()
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_replica_is_restored_by_anti_entropy_alone() -> Result<()> {
    let background = BackgroundConfig {
        ae_interval_ms: 50,
        ..BackgroundConfig::default()
    };
    let mut cluster = LocalCluster::builder(3)
        .background(background)
        .start()
        .await?;
    let c = client(&cluster, Mode::Direct).await?;
    let keys = keys(2000);
    write_all(&c, &keys, b"some value").await?;
    c.close();

    cluster.stop(2).await?;
    std::fs::remove_dir_all(cluster.data_dir(2))?;
    cluster.restart(2).await?;
    assert_eq!(count_held(&cluster, 2, &keys), 0, "the disk was wiped");
    let started = std::time::Instant::now();
    eventually(
        Duration::from_secs(60),
        "anti-entropy restores every key",
        || async { count_held(&cluster, 2, &keys) == keys.len() },
    )
    .await?;
    let stats = cluster.node(2).expect("running").stats();
    println!(
        "{} keys restored in {:?} with no reads ({} keys repaired on n3)",
        keys.len(),
        started.elapsed(),
        stats.ae_keys_repaired
    );
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_percent_divergence_costs_a_small_multiple_of_one_percent_of_the_data() -> Result<()> {
    // Exchanges are run explicitly, so no timer traffic is counted.
    let background = BackgroundConfig {
        anti_entropy: false,
        ..BackgroundConfig::default()
    };
    let cluster = LocalCluster::builder(3)
        .partitions(64)
        .background(background)
        .start()
        .await?;
    let c = client(&cluster, Mode::Direct).await?;
    let keys = keys(5000);
    write_all(&c, &keys, &[7u8; 1024]).await?;
    c.close();

    // The data a replica holds, in stored bytes.
    let n1 = cluster.node(0).expect("running");
    let ring = n1.ring();
    let mut data_bytes = 0usize;
    for k in &keys {
        let o = n1
            .store()
            .get(ring.partition_of(k.as_bytes()), k.as_bytes())?
            .expect("written with W=3");
        data_bytes += k.len() + encode_object(&o).len();
    }

    // 1% of the keys get a new version on n1 only (as if its replication had been lost).
    let diverged: Vec<&String> = keys.iter().step_by(100).collect();
    for k in &diverged {
        let p = ring.partition_of(k.as_bytes());
        let current = n1.store().get(p, k.as_bytes())?.expect("present");
        n1.store()
            .update(
                p,
                k.as_bytes(),
                current.clock(),
                Some(Bytes::from(vec![9u8; 1024])),
            )
            .await?;
    }

    let bytes = |c: &LocalCluster| -> u64 {
        (0..3)
            .filter_map(|i| c.node(i))
            .map(|n| n.stats().ae_bytes_sent + n.stats().ae_bytes_received)
            .sum::<u64>()
            / 2
    };
    let before = bytes(&cluster);
    let mut exchanges = 0;
    // Until a full pass of exchanges runs and moves nothing (a transient connection failure
    // on a loaded machine just means another pass).
    loop {
        let (mut moved, mut all_ran) = (0, true);
        for i in 0..3 {
            for r in cluster.node(i).expect("running").anti_entropy_now().await {
                match r {
                    Ok(r) => moved += r.pulled + r.pushed,
                    Err(e) => {
                        println!("an exchange failed, retrying: {e}");
                        all_ran = false;
                    }
                }
            }
        }
        exchanges += 1;
        if (moved == 0 && all_ran) || exchanges > 10 {
            break;
        }
    }
    let exchanged = bytes(&cluster) - before;
    for i in 1..3 {
        let node = cluster.node(i).expect("running");
        for k in &diverged {
            let o = node
                .store()
                .get(ring.partition_of(k.as_bytes()), k.as_bytes())?
                .expect("present");
            assert_eq!(
                o.values().next().map(|v| v[0]),
                Some(9),
                "{k} on n{}",
                i + 1
            );
        }
    }
    let one_percent = data_bytes as f64 / 100.0;
    let ratio = exchanged as f64 / one_percent;
    println!(
        "1% divergence ({} of {} keys, {data_bytes} bytes of data): {exchanged} bytes exchanged = {ratio:.2} x 1% of the data, in {exchanges} passes",
        diverged.len(),
        keys.len()
    );
    assert!(
        ratio < 8.0,
        "anti-entropy moved {ratio:.1} x the divergent data"
    );
    cluster.shutdown().await;
    Ok(())
}
