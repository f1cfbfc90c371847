//! Ring changes under the worst the model allows: partitions that move away and come back
//! (A→B→A) with deletes reaped in between, a joiner cut off while writes must reach it, and
//! hints held for a node that leaves.
//!
//! Each test drives the workers that matter by hand (reaps, hint rounds), so that what it checks
//! happens in the order that used to break, not whenever a timer fires.

mod support;

use anyhow::{Result, ensure};
use ringkv::{CallOptions, Context, Mode};
use ringkv_node::config::BackgroundConfig;
use ringkv_node::testing::LocalCluster;
use ringkv_shared::proto::AdminRequest;
use ringkv_shared::{NodeId, Ring};
use std::time::Duration;
use support::{admin, client, eventually, settled, stage_join};

async fn join(cluster: &mut LocalCluster) -> Result<usize> {
    let index = cluster.add_node().await?;
    stage_join(cluster, index).await?;
    Ok(index)
}

/// Replicas of `key` in `ring` (N=3).
fn owners(ring: &Ring, key: &str) -> Vec<NodeId> {
    ring.replicas(ring.partition_of(key.as_bytes()), 3).to_vec()
}

/// Which nodes hold a live (not deleted) value of `key` in their own storage.
fn live_holders(cluster: &LocalCluster, nodes: &[usize], key: &str) -> Vec<NodeId> {
    nodes
        .iter()
        .filter_map(|&i| cluster.node(i))
        .filter(|n| {
            let p = n.ring().partition_of(key.as_bytes());
            n.store()
                .get(p, key.as_bytes())
                .ok()
                .flatten()
                .is_some_and(|o| !o.is_deleted())
        })
        .map(|n| n.id())
        .collect()
}

fn background() -> BackgroundConfig {
    BackgroundConfig {
        gossip_interval_ms: 100,
        handoff_batch_keys: 32,
        tombstone_grace_ms: 0,
        allow_short_tombstone_grace: true,
        // Reaps and hint rounds run when the test says so.
        reap_interval_ms: 3_600_000,
        hint_interval_ms: 3_600_000,
        ..Default::default()
    }
}

/// Owners [1,2,3] → [1,2,4] → [1,2,3]: node 3 hands a partition to the joiner, the keys are
/// deleted and the tombstones reaped while node 3 does not own them, and then the partition
/// comes back to node 3. Its copy from before must not bring the keys back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_that_moves_away_and_back_does_not_bring_its_deletes_back() -> Result<()> {
    let mut cluster = LocalCluster::builder(3)
        .partitions(16)
        .background(background())
        .start()
        .await?;
    let c = client(&cluster, Mode::Direct).await?;
    let keys: Vec<String> = (0..120).map(|i| format!("k-{i}")).collect();
    for k in &keys {
        c.put(k.clone(), "old", &Context::empty()).await?;
    }
    let first = cluster.node(0).expect("runs").ring();

    let joiner = join(&mut cluster).await?;
    admin(&cluster, 0, AdminRequest::Commit).await?;
    let all = [0, 1, 2, joiner];
    settled(&cluster, &all, 2).await?;
    let second = cluster.node(0).expect("runs").ring();

    // Every node keeps nothing of the partitions the new ring does not give it.
    eventually(
        Duration::from_secs(10),
        "former owners dropped their copies",
        || async {
            all.iter().filter_map(|&i| cluster.node(i)).all(|n| {
                (0..16).all(|p| {
                    second.replicas(p, 3).contains(&n.id())
                        || n.store()
                            .scan_partition(p, None, 1, usize::MAX)
                            .is_ok_and(|v| v.is_empty())
                })
            })
        },
    )
    .await?;

    for k in &keys {
        let v = c.get(k.clone()).await?;
        c.delete_with(k.clone(), &v.context, CallOptions::default().quorum(3))
            .await?;
    }
    // Reap every tombstone (each key's first owner starts its reap once every node reported
    // its sweep).
    eventually(
        Duration::from_secs(30),
        "every tombstone reaped",
        || async {
            let mut left = 0;
            for &i in &all {
                let n = cluster.node(i).expect("runs");
                n.reap_now().await;
                left += n.store().tombstone_count().unwrap_or(1);
            }
            left == 0
        },
    )
    .await?;

    // The joiner leaves: its partitions go back to the nodes that had them.
    admin(
        &cluster,
        0,
        AdminRequest::Leave {
            node: cluster.node_id(joiner),
        },
    )
    .await?;
    admin(&cluster, 0, AdminRequest::Commit).await?;
    settled(&cluster, &[0, 1, 2], 3).await?;
    let third = cluster.node(0).expect("runs").ring();
    let came_back = keys
        .iter()
        .filter(|k| {
            owners(&first, k)
                .iter()
                .any(|id| !owners(&second, k).contains(id) && owners(&third, k).contains(id))
        })
        .count();
    ensure!(
        came_back > 0,
        "no key went away from an owner and back (the test proves nothing)"
    );
    // Anti-entropy between the owners, twice, in case a stale copy spreads.
    for _ in 0..2 {
        for i in 0..3 {
            cluster.node(i).expect("runs").anti_entropy_now().await;
        }
    }
    for k in &keys {
        let back = live_holders(&cluster, &[0, 1, 2, joiner], k);
        ensure!(
            back.is_empty(),
            "deleted key {k} is live again on {back:?} (owners {:?} → {:?} → {:?}; {came_back} keys moved away and back)",
            owners(&first, k),
            owners(&second, k),
            owners(&third, k)
        );
        let v = c
            .get_with(k.clone(), CallOptions::default().quorum(3))
            .await?;
        ensure!(v.values.is_empty(), "{k} reads {:?}", v.values);
    }
    cluster.shutdown().await;
    Ok(())
}

/// The joiner is cut off from everyone after the commit: writes reach W replicas of the old ring
/// but not of the new one. Each such write is stored, so it must fail as "may have been
/// applied" and must not be repeated (a repeat stamps the value twice: two siblings).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_stored_by_the_old_ring_only_is_reported_maybe_applied_and_stamped_once()
-> Result<()> {
    let mut cluster = LocalCluster::builder(3)
        .partitions(16)
        .background(background())
        .start()
        .await?;
    let c = client(&cluster, Mode::Direct).await?;
    let joiner = join(&mut cluster).await?;
    let cut = cluster.addrs()[joiner];
    let others: Vec<_> = cluster.addrs()[..3].to_vec();
    for i in 0..3 {
        cluster.node(i).expect("runs").block([cut]);
    }
    cluster.node(joiner).expect("runs").block(others);
    admin(&cluster, 0, AdminRequest::Commit).await?;
    eventually(
        Duration::from_secs(10),
        "every old owner knows the transition",
        || async {
            (0..3).all(|i| {
                cluster
                    .node(i)
                    .is_some_and(|n| n.view().transition.is_some())
            })
        },
    )
    .await?;

    // W=1: the coordinator alone holds the write once it stamps it.
    let w1 = CallOptions::default()
        .quorum(1)
        .timeout(Duration::from_secs(2));
    let (mut failed, mut acked) = (Vec::new(), Vec::new());
    for i in 0..60 {
        let key = format!("cut-{i}");
        match c
            .put_with(key.clone(), format!("v{i}"), &Context::empty(), w1)
            .await
        {
            Ok(_) => acked.push(key),
            Err(e) => {
                ensure!(
                    e.may_have_been_applied(),
                    "{key}: a stored write reported as not applied: {e}"
                );
                ensure!(e.to_string().contains("ring change"), "{key}: {e}");
                failed.push(key);
            }
        }
    }
    let all3 = CallOptions::default().quorum(3);
    for key in failed.iter().chain(&acked) {
        let v = c.get_with(key.clone(), all3).await?;
        ensure!(
            v.values.len() == 1,
            "{key} is stored {} times: {:?} ({} failed, {} acknowledged)",
            v.values.len(),
            v.values,
            failed.len(),
            acked.len()
        );
    }
    ensure!(
        !failed.is_empty(),
        "no write missed the new ring's quorum (acked {})",
        acked.len()
    );

    // Healed, the transition completes and every write, failed or not, is there once.
    for i in 0..=joiner {
        cluster.node(i).expect("runs").heal();
    }
    settled(&cluster, &[0, 1, 2, joiner], 2).await?;
    for key in failed.iter().chain(&acked) {
        let v = c.get_with(key.clone(), all3).await?;
        ensure!(
            v.values.len() == 1,
            "{key} after the change: {:?}",
            v.values
        );
    }
    cluster.shutdown().await;
    Ok(())
}

/// Node 4 is down; writes for its keys leave hints for it on the others. It is then removed
/// while down (and comes back only to hand its partitions over). Its hints must reach the keys'
/// new owners, not wait forever for a node that is gone, and no hint may be left anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_for_a_node_that_leaves_go_to_the_keys_new_owners() -> Result<()> {
    let mut cluster = LocalCluster::builder(4)
        .partitions(16)
        .background(background())
        .start()
        .await?;
    let c = client(&cluster, Mode::Direct).await?;
    let leaver = 3;
    let gone = cluster.node_id(leaver);
    cluster.stop(leaver).await?;
    let first = cluster.node(0).expect("runs").ring();
    let keys: Vec<String> = (0..200)
        .map(|i| format!("h-{i}"))
        .filter(|k| owners(&first, k).contains(&gone))
        .take(40)
        .collect();
    for k in &keys {
        c.put(k.clone(), "while-cut", &Context::empty()).await?;
    }
    // The copies for the down owner settle after the writes return (stand-ins or the
    // coordinator keep them as hints).
    eventually(
        Duration::from_secs(10),
        "hints held for the down node",
        || async {
            let held: u64 = (0..3)
                .map(|i| cluster.node(i).expect("runs").stats().hints_pending)
                .sum();
            held >= keys.len() as u64
        },
    )
    .await?;

    admin(&cluster, 0, AdminRequest::Leave { node: gone }).await?;
    admin(&cluster, 0, AdminRequest::Commit).await?;
    // The leaver comes back only to hand its partitions over; the hints held for it stay
    // undelivered until the ring has switched (hint rounds run only when the test says so).
    cluster.restart(leaver).await?;
    settled(&cluster, &[0, 1, 2], 2).await?;
    let last = cluster.node(0).expect("runs").ring();
    ensure!(last.member(gone).is_none());
    eventually(Duration::from_secs(20), "no hint left anywhere", || async {
        let mut left = 0;
        for i in 0..=leaver {
            let n = cluster.node(i).expect("runs");
            n.deliver_hints_now().await;
            left += n.stats().hints_pending;
        }
        left == 0
    })
    .await?;
    for k in &keys {
        let holders = live_holders(&cluster, &[0, 1, 2], k);
        for owner in owners(&last, k) {
            ensure!(
                holders.contains(&owner),
                "{k}: owner {owner} of the new ring lacks it (held by {holders:?})"
            );
        }
    }
    cluster.shutdown().await;
    Ok(())
}
