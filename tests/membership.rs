//! Growing and shrinking a live cluster: staged joins and leaves, partition handoff under a
//! continuous writer, clients that follow the ring, and the operator's mistakes refused.

mod support;

use anyhow::{Result, bail, ensure};
use ringkv::{CallOptions, Client, Context, Mode};
use ringkv_node::testing::LocalCluster;
use ringkv_shared::NodeId;
use ringkv_shared::proto::{AdminReply, AdminRequest, Response};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use support::{admin, client, eventually, settled, stage_join};

/// A cluster of `nodes` that gossips every 200 ms, so views settle within a test.
async fn gossiping_fast(nodes: usize) -> Result<LocalCluster> {
    let background = ringkv_node::config::BackgroundConfig {
        gossip_interval_ms: 200,
        ..Default::default()
    };
    Ok(LocalCluster::builder(nodes)
        .background(background)
        .start()
        .await?)
}

/// Writes `w-0`, `w-1`, ... with W=2 until `stop`, recording each acknowledged key; any error
/// is returned (the application must see none during a ring change).
async fn writer(c: Client, stop: Arc<AtomicBool>) -> Result<Vec<String>> {
    let mut acked = Vec::new();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("w-{i}");
        match c
            .put_with(
                key.clone(),
                format!("v{i}"),
                &Context::empty(),
                CallOptions::default().quorum(2),
            )
            .await
        {
            Ok(_) => acked.push(key),
            Err(e) => bail!("write {key} failed during the ring change: {e}"),
        }
        i += 1;
    }
    Ok(acked)
}

/// Reads every key with R = 2. On a miss, says which owners the client asked and which
/// running nodes (`nodes`) hold the key on disk or as a hint, to tell a key no replica has
/// from one the new owners do not have yet. (Seen once in CI, not reproduced since: the
/// report is what the next occurrence needs.)
async fn check_all_read(
    c: &Client,
    cluster: &LocalCluster,
    nodes: &[usize],
    keys: &[String],
) -> Result<()> {
    for key in keys {
        let v = c
            .get_with(key.clone(), CallOptions::default().quorum(2))
            .await?;
        if v.values.is_empty() {
            let ring = c.ring();
            let partition = ring.partition_of(key.as_bytes());
            let owners = ring.replicas(partition, 3).to_vec();
            // Each running node: does it hold the key on disk, or as a hint for any node (a
            // write acknowledged through stand-ins)?
            let all: Vec<NodeId> = (1..=5).map(NodeId).collect();
            let (mut holders, mut hinted) = (Vec::new(), Vec::new());
            for node in nodes.iter().filter_map(|&i| cluster.node(i)) {
                let store = node.store();
                let held = |o: Option<ringkv_shared::Object>| o.is_some_and(|o| !o.is_empty());
                if held(store.get(partition, key.as_bytes()).ok().flatten()) {
                    holders.push(node.id());
                }
                let hint = store.hints_for_key(partition, key.as_bytes(), all.iter().copied());
                if held(hint.ok().flatten()) {
                    hinted.push(node.id());
                }
            }
            bail!(
                "acknowledged key {key} is missing after the ring change: ring epoch {}, \
                 partition {partition:?}, owners {owners:?}, held on disk by {holders:?}, \
                 as a hint by {hinted:?}",
                ring.epoch()
            );
        }
    }
    Ok(())
}

fn check_balance(ring: &ringkv_shared::Ring, nodes: usize) -> Result<()> {
    let q = ring.partition_count() as usize;
    for (id, count) in ring.ownership_counts() {
        ensure!(
            count == q / nodes || count == q / nodes + 1,
            "node {id} owns {count} of {q} partitions over {nodes} nodes"
        );
    }
    ensure!(ringkv_shared::planner::replica_conflicts(ring, 3).is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_two_then_leave_one_under_a_continuous_writer() -> Result<()> {
    grow_and_shrink(Mode::Direct).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_two_then_leave_one_under_a_continuous_writer_in_router_mode() -> Result<()> {
    grow_and_shrink(Mode::Router).await
}

async fn grow_and_shrink(mode: Mode) -> Result<()> {
    let background = ringkv_node::config::BackgroundConfig {
        gossip_interval_ms: 200,
        handoff_batch_keys: 64,
        ..Default::default()
    };
    let mut cluster = LocalCluster::builder(3)
        .background(background)
        .start()
        .await?;
    // Built before any change and never rebuilt.
    let c = client(&cluster, mode).await?;
    for i in 0..300 {
        c.put(format!("pre-{i}"), format!("p{i}"), &Context::empty())
            .await?;
    }
    let a = cluster.add_node().await?;
    let b = cluster.add_node().await?;
    let (id_a, id_b) = (cluster.node_id(a), cluster.node_id(b));
    // Newcomers announce themselves to the seed by gossip.
    eventually(
        Duration::from_secs(10),
        "newcomers known to node 1",
        || async {
            let v = cluster.node(0).expect("runs").view();
            v.members.contains_key(&id_a) && v.members.contains_key(&id_b)
        },
    )
    .await?;

    let stop = Arc::new(AtomicBool::new(false));
    let writing = tokio::spawn(writer(c.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;

    admin(
        &cluster,
        0,
        AdminRequest::Join {
            node: Some(id_a),
            addr: None,
        },
    )
    .await?;
    // By address, through another node.
    admin(
        &cluster,
        1,
        AdminRequest::Join {
            node: None,
            addr: Some(cluster.addrs()[b]),
        },
    )
    .await?;
    let plan = cluster
        .node(2)
        .expect("runs")
        .admin(AdminRequest::Plan)
        .await;
    let Response::Admin(AdminReply::Plan {
        target, transfers, ..
    }) = plan
    else {
        bail!("no plan: {plan:?}");
    };
    ensure!(target.epoch() == 2 && !transfers.is_empty());
    admin(&cluster, 2, AdminRequest::Commit).await?;
    settled(&cluster, &[0, 1, 2, a, b], 2).await?;
    stop.store(true, Ordering::Relaxed);
    let mut acked = writing.await??;
    ensure!(
        acked.len() > 10,
        "the writer made progress ({} writes)",
        acked.len()
    );
    acked.extend((0..300).map(|i| format!("pre-{i}")));
    let ring = cluster.node(0).expect("runs").ring();
    check_balance(&ring, 5)?;
    ensure!(*c.ring() == *ring || c.ring().epoch() <= 2);
    check_all_read(&c, &cluster, &[0, 1, 2, a, b], &acked).await?;
    ensure!(c.ring().epoch() == 2, "the old client follows the ring");

    // Shrink: node 2 leaves while the writer runs again.
    let stop = Arc::new(AtomicBool::new(false));
    let writing = tokio::spawn(writer(c.clone(), stop.clone()));
    admin(&cluster, 0, AdminRequest::Leave { node: NodeId(2) }).await?;
    admin(&cluster, 0, AdminRequest::Commit).await?;
    settled(&cluster, &[0, 2, a, b], 3).await?;
    stop.store(true, Ordering::Relaxed);
    let mut more = writing.await??;
    more.extend(acked);
    let ring = cluster.node(0).expect("runs").ring();
    ensure!(ring.member(NodeId(2)).is_none());
    check_balance(&ring, 4)?;
    eventually(Duration::from_secs(10), "node 2 marked removed", || async {
        cluster.node(1).is_some_and(|n| {
            n.view().status(NodeId(2)) == Some(ringkv_shared::membership::Status::Removed)
        })
    })
    .await?;
    check_all_read(&c, &cluster, &[0, 1, 2, a, b], &more).await?;
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_mistakes_are_refused_and_change_nothing() -> Result<()> {
    let cluster = LocalCluster::start(3).await?;
    let before = cluster.node(0).expect("runs").view();
    let err = admin(&cluster, 0, AdminRequest::Commit).await.unwrap_err();
    ensure!(err.to_string().contains("nothing is staged"), "{err}");
    let err = admin(&cluster, 0, AdminRequest::Leave { node: NodeId(3) })
        .await
        .unwrap_err();
    ensure!(err.to_string().contains("fewer than N=3"), "{err}");
    let err = admin(
        &cluster,
        0,
        AdminRequest::Join {
            node: Some(NodeId(42)),
            addr: None,
        },
    )
    .await
    .unwrap_err();
    ensure!(err.to_string().contains("not known"), "{err}");
    let err = admin(
        &cluster,
        0,
        AdminRequest::Join {
            node: Some(NodeId(2)),
            addr: None,
        },
    )
    .await
    .unwrap_err();
    ensure!(err.to_string().contains("already owns"), "{err}");
    ensure!(
        cluster.node(0).expect("runs").view() == before,
        "a refused change left a trace"
    );

    // A node whose certificate another CA signed cannot be joined.
    let foreign = LocalCluster::start(1).await?;
    let err = admin(
        &cluster,
        0,
        AdminRequest::Join {
            node: None,
            addr: Some(foreign.addrs()[0]),
        },
    )
    .await
    .unwrap_err();
    ensure!(err.to_string().contains("refused"), "{err}");
    ensure!(cluster.node(0).expect("runs").view().members.len() == 3);
    foreign.shutdown().await;
    cluster.shutdown().await;
    Ok(())
}

/// A client whose every cached node is gone (the whole cluster was replaced while it was idle)
/// finds the cluster again through its seeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_cached_nodes_are_all_gone_goes_back_to_its_seeds() -> Result<()> {
    let mut cluster = gossiping_fast(3).await?;
    let writer = client(&cluster, Mode::Direct).await?;
    for i in 0..100 {
        writer
            .put(format!("old-{i}"), format!("v{i}"), &Context::empty())
            .await?;
    }
    let new: Vec<usize> = vec![
        cluster.add_node().await?,
        cluster.add_node().await?,
        cluster.add_node().await?,
    ];
    // Seeds: a node that will leave, and one that will stay. Its cached ring: nodes 1-3.
    let idle = Client::builder()
        .seeds([cluster.addrs()[0], cluster.addrs()[new[0]]])
        .tls(cluster.client_tls())
        .timeout(Duration::from_secs(3))
        .build()
        .await?;
    ensure!(idle.ring().epoch() == 1);
    for &i in &new {
        stage_join(&cluster, i).await?;
    }
    for id in 1..=3 {
        admin(&cluster, 0, AdminRequest::Leave { node: NodeId(id) }).await?;
    }
    admin(&cluster, 0, AdminRequest::Commit).await?;
    settled(&cluster, &new, 2).await?;
    for i in 0..3 {
        cluster.stop(i).await?;
    }
    for i in 0..100 {
        let v = idle.get(format!("old-{i}")).await?;
        ensure!(
            v.values == vec![bytes::Bytes::from(format!("v{i}"))],
            "old-{i}: {:?}",
            v.values
        );
    }
    ensure!(idle.ring().epoch() == 2);
    idle.put("after", "moved", &Context::empty()).await?;
    cluster.shutdown().await;
    Ok(())
}

/// Two clusters under one CA never merge: an operator's `join <addr>` naming the other
/// cluster's node is refused with both cluster ids, and neither cluster's view learns a node,
/// a ring or a staged change of the other. A restarted node keeps its cluster id (it lives in
/// the data directory's view).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_sharing_a_ca_never_merge() -> Result<()> {
    let mut a = LocalCluster::start(3).await?;
    let b = LocalCluster::builder(3).ca(a.ca()).start().await?;
    let view = |c: &LocalCluster, i: usize| c.node(i).expect("node runs").view();
    let (ida, idb) = (view(&a, 0).cluster, view(&b, 0).cluster);
    ensure!(
        ida.is_some() && idb.is_some() && ida != idb,
        "{ida:?} {idb:?}"
    );
    for i in 0..3 {
        ensure!(view(&a, i).cluster == ida && view(&b, i).cluster == idb);
    }
    let before: Vec<_> = (0..3).map(|i| (view(&a, i), view(&b, i))).collect();

    let join = AdminRequest::Join {
        node: None,
        addr: Some(b.addrs()[0]),
    };
    let refused = match admin(&a, 0, join).await {
        Ok(message) => bail!("joining another cluster's node was accepted: {message}"),
        Err(e) => e.to_string(),
    };
    for id in [ida, idb].into_iter().flatten() {
        ensure!(
            refused.contains(&id.to_string()),
            "names both clusters: {refused}"
        );
    }
    // Gossip keeps running; give it a few rounds to leak anything it would.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (i, (va, vb)) in before.iter().enumerate() {
        let (na, nb) = (view(&a, i), view(&b, i));
        ensure!(
            na.members == va.members && na.ring == va.ring && na.staged == va.staged,
            "cluster A's node {i} view changed: {na:?}"
        );
        ensure!(
            nb.members == vb.members && nb.ring == vb.ring && nb.staged == vb.staged,
            "cluster B's node {i} view changed: {nb:?}"
        );
    }
    a.restart(1).await?;
    ensure!(view(&a, 1).cluster == ida, "the id survives a restart");
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}

/// A founder whose disk was replaced after two ring changes restarts from its config's
/// founding ring (epoch 1) and cannot verify the cluster's ring (epoch 3, two planned steps
/// away) on its own; it takes it once two of that ring's members sent it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_founder_takes_the_ring_its_peers_vouch_for() -> Result<()> {
    let mut cluster = gossiping_fast(3).await?;
    for epoch in [2, 3] {
        let joiner = cluster.add_node().await?;
        stage_join(&cluster, joiner).await?;
        admin(&cluster, 0, AdminRequest::Commit).await?;
        let running: Vec<usize> = (0..=joiner).collect();
        settled(&cluster, &running, epoch).await?;
    }
    cluster.stop(2).await?;
    std::fs::remove_dir_all(cluster.data_dir(2))?;
    cluster.restart(2).await?;
    let ring = cluster.node(0).expect("runs").ring();
    eventually(
        Duration::from_secs(20),
        "the wiped founder on the cluster's ring",
        || async { cluster.node(2).is_some_and(|n| *n.ring() == *ring) },
    )
    .await?;
    cluster.shutdown().await;
    Ok(())
}
