//! Day-2 membership with real processes and the real CLI: a dead node replaced by force
//! (`ringkv replace`), that node coming back with its old data (it drops it and stops, and
//! its stale copies spread nowhere), a node whose leave completed stopping itself, and a
//! change toward a node that died aborted (`ringkv abort`) and made again.

mod support;

use anyhow::{Context as _, Result, ensure};
use ringkv::{CallOptions, Client, Context};
use std::time::Duration;
use support::eventually;
use support::real::RealCluster;

const TABLES: &str =
    "[background]\ngossip_interval_ms = 250\nae_interval_ms = 500\nhint_interval_ms = 250\n";

/// Every node in `nodes` has ring epoch `epoch` in force and no change running.
async fn ring_is(cluster: &RealCluster, nodes: &[usize], epoch: u64) -> bool {
    for &i in nodes {
        match cluster.status(i).await {
            Ok(s) if s.view.ring.epoch() == epoch && s.view.transition.is_none() => {}
            _ => return false,
        }
    }
    true
}

/// Writes `k-i` = `v1-i` for every `i` in `keys`, each retried (a first request to a node
/// that just died times out with its outcome unknown; writing the same value again is safe).
async fn put_all(c: &Client, keys: std::ops::Range<usize>) -> Result<()> {
    for i in keys {
        retry(|| async {
            c.put(format!("k-{i}"), format!("v1-{i}"), &Context::empty())
                .await?;
            Ok(())
        })
        .await?;
    }
    Ok(())
}

/// Runs `op` until it succeeds, at most 5 times.
async fn retry<F, Fut>(mut op: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut tries = 0;
    loop {
        match op().await {
            Ok(()) => return Ok(()),
            Err(e) if tries >= 4 => return Err(e),
            Err(_) => tries += 1,
        }
    }
}

/// Reads `key` with R = 2 and checks it holds `want` (`None`: deleted).
async fn check(c: &Client, key: &str, want: Option<&str>) -> Result<()> {
    let got = c
        .get_with(key.to_owned(), CallOptions::default().quorum(2))
        .await
        .with_context(|| format!("reading {key}"))?;
    // A retried put may leave the same value twice, as siblings.
    let mut values = got.values.clone();
    values.dedup();
    match want {
        Some(v) => ensure!(
            values.len() == 1 && values[0] == v.as_bytes(),
            "{key}: {:?}",
            got.values
        ),
        None => ensure!(values.is_empty(), "{key} came back: {:?}", got.values),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_is_replaced_by_force_and_cannot_come_back_with_its_data() -> Result<()> {
    let mut cluster = RealCluster::start(4, TABLES)?;
    let c = cluster.client().await?;
    for i in 0..300 {
        c.put(format!("k-{i}"), format!("v1-{i}"), &Context::empty())
            .await?;
    }
    // Node 1 (the lowest id, which completes ring changes) dies with its disk in place.
    cluster.kill(0)?;
    // Writes go on without it (stand-ins hold hints), deletes too. The first requests it
    // coordinated time out with their outcome unknown; they are retried (a delete reads
    // again, a put writes the same value again).
    for i in 0..100 {
        let key = format!("k-{i}");
        retry(|| async {
            let read = c.get(key.clone()).await?;
            c.delete(key.clone(), &read.context).await?;
            Ok(())
        })
        .await?;
    }
    put_all(&c, 300..400).await?;

    // Without --force, `remove` says what to do instead; with a live node's leave, the
    // change would wait for node 1 forever.
    let refused = cluster.admin(1, &["remove", "1"]).unwrap_err().to_string();
    ensure!(
        refused.contains("--force") && refused.contains("leave"),
        "{refused}"
    );

    // A new host takes node 1's place. Its only seed is node 1, which is dead: the operator
    // names it by address and the node asked brings it in.
    let new = cluster.add_node(TABLES)?;
    let new_addr = cluster.addrs[new].to_string();
    eventually(Duration::from_secs(20), "the new node is up", || async {
        cluster.status(new).await.is_ok()
    })
    .await?;
    let staged = cluster.admin(1, &["replace", "1", &new_addr])?;
    ensure!(staged.contains("removed by force"), "{staged}");
    let plan = cluster.admin(1, &["plan"])?;
    ensure!(plan.contains("ring epoch 1 -> 2"), "{plan}");
    ensure!(plan.contains("removed by force: [1]"), "{plan}");
    // A removal by force is signed only when the operator names it at the commit.
    let unconfirmed = cluster.admin(1, &["commit"]).unwrap_err().to_string();
    ensure!(unconfirmed.contains("--forced 1"), "{unconfirmed}");
    cluster.admin(1, &["commit", "--forced", "1"])?;
    let survivors = [1, 2, 3, new];
    eventually(
        Duration::from_secs(120),
        "ring epoch 2 in force on nodes 2 to 5",
        || ring_is(&cluster, &survivors, 2),
    )
    .await?;
    let view = cluster.status(1).await?.view;
    ensure!(view.ring.member(ringkv_shared::NodeId(1)).is_none());
    ensure!(view.removed_by_force.contains(&ringkv_shared::NodeId(1)));

    // Every acknowledged write and delete reads back on the new ring.
    for i in 0..400 {
        let want = (i >= 100).then(|| format!("v1-{i}"));
        check(&c, &format!("k-{i}"), want.as_deref()).await?;
    }

    // Node 1 was not dead after all: it starts with its old data. Its peers answer it only
    // with gossip, which tells it; it drops what it holds and stops, saying why.
    cluster.start_node(0)?;
    let exited = cluster.wait_exit(0, Duration::from_secs(60))?;
    let log = cluster.log(0);
    ensure!(
        exited.is_some_and(|s| s.success()),
        "node 1 did not stop by itself: {exited:?}\n{log}"
    );
    ensure!(log.contains("removed from the cluster by force"), "{log}");
    ensure!(log.contains("dropped"), "{log}");
    // Its stale copies (values from before the deletes) spread nowhere.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 0..400 {
        let want = (i >= 100).then(|| format!("v1-{i}"));
        check(&c, &format!("k-{i}"), want.as_deref()).await?;
    }

    // A node whose leave completes stops itself once every member knows it left.
    cluster.admin(1, &["leave", &(new + 1).to_string()])?;
    cluster.admin(1, &["commit"])?;
    eventually(
        Duration::from_secs(120),
        "ring epoch 3 in force on nodes 2 to 4",
        || ring_is(&cluster, &[1, 2, 3], 3),
    )
    .await?;
    let exited = cluster.wait_exit(new, Duration::from_secs(60))?;
    let log = cluster.log(new);
    ensure!(
        exited.is_some_and(|s| s.success()),
        "the node that left did not stop by itself: {exited:?}\n{log}"
    );
    ensure!(log.contains("has left the cluster"), "{log}");
    for i in 0..400 {
        let want = (i >= 100).then(|| format!("v1-{i}"));
        check(&c, &format!("k-{i}"), want.as_deref()).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_stuck_on_a_dead_joiner_is_aborted_and_made_again() -> Result<()> {
    let mut cluster = RealCluster::start(3, TABLES)?;
    let c = cluster.client().await?;
    for i in 0..300 {
        c.put(format!("k-{i}"), format!("v1-{i}"), &Context::empty())
            .await?;
    }
    let nothing = cluster.admin(1, &["abort"]).unwrap_err().to_string();
    ensure!(nothing.contains("nothing to abort"), "{nothing}");
    let first = cluster.status(0).await?.view.ring;

    // Node 4 joins, and dies right after the commit: the change cannot finish without it.
    let joiner = cluster.add_node(TABLES)?;
    eventually(Duration::from_secs(30), "node 1 knows node 4", || async {
        cluster
            .status(0)
            .await
            .is_ok_and(|s| s.view.members.len() == 4)
    })
    .await?;
    cluster.admin(0, &["join", "4"])?;
    cluster.admin(0, &["commit"])?;
    cluster.kill(joiner)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(cluster.status(0).await?.view.transition.is_some());

    // Aborted through node 2; the CLI takes it to node 1, which completes changes.
    let said = cluster.admin(1, &["abort"])?;
    ensure!(said.contains("aborted"), "{said}");
    let founders = [0, 1, 2];
    eventually(
        Duration::from_secs(30),
        "the abort in force on nodes 1 to 3",
        || ring_is(&cluster, &founders, 2),
    )
    .await?;
    let aborted = cluster.status(2).await?.view.ring;
    for p in 0..aborted.partition_count() {
        ensure!(aborted.owner(p) == first.owner(p), "partition {p} moved");
    }
    for i in 0..300 {
        check(&c, &format!("k-{i}"), Some(&format!("v1-{i}"))).await?;
    }
    put_all(&c, 300..400).await?;

    // Node 4 comes back (still joining, owning nothing), and the change is made again.
    cluster.start_node(joiner)?;
    eventually(
        Duration::from_secs(30),
        "node 4 has the aborted ring",
        || async {
            cluster
                .status(joiner)
                .await
                .is_ok_and(|s| s.view.ring.epoch() == 2)
        },
    )
    .await?;
    cluster.admin(0, &["join", "4"])?;
    cluster.admin(0, &["commit"])?;
    let everyone = [0, 1, 2, joiner];
    eventually(
        Duration::from_secs(120),
        "ring epoch 3, with node 4, on all four",
        || ring_is(&cluster, &everyone, 3),
    )
    .await?;
    ensure!(
        cluster
            .status(0)
            .await?
            .view
            .ring
            .member(ringkv_shared::NodeId(4))
            .is_some()
    );
    for i in 0..400 {
        check(&c, &format!("k-{i}"), Some(&format!("v1-{i}"))).await?;
    }
    Ok(())
}
