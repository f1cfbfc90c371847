//! Read-merge-write of mergeable values on a real cluster.

mod support;

use anyhow::Result;
use ringkv::Mode;
use ringkv::crdt::{ORMap, ORSet, PNCounter};
use ringkv_node::testing::LocalCluster;
use support::client;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_writers_doing_200_read_merge_writes_each_lose_nothing() -> Result<()> {
    const WRITERS: usize = 4;
    const CYCLES: usize = 200;
    let cluster = LocalCluster::start(3).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        // One client per writer: separate actors, as separate service instances would have.
        let c = client(&cluster, Mode::Direct).await?;
        tasks.spawn(async move {
            let mut most_siblings = 0;
            for i in 0..CYCLES {
                let written = c
                    .modify("cart:shared", |cart: &mut ORSet<String>, actor| {
                        cart.add(format!("w{w}-item{i}"), actor);
                    })
                    .await?;
                most_siblings = most_siblings.max(written.siblings);
            }
            anyhow::Ok(most_siblings)
        });
    }
    let mut most_siblings = 0;
    while let Some(r) = tasks.join_next().await {
        most_siblings = most_siblings.max(r??);
    }
    let reader = client(&cluster, Mode::Direct).await?;
    let cart = reader.get_merged::<ORSet<String>>("cart:shared").await?;
    let missing: Vec<String> = (0..WRITERS)
        .flat_map(|w| (0..CYCLES).map(move |i| format!("w{w}-item{i}")))
        .filter(|item| !cart.value.contains(item))
        .collect();
    println!(
        "{} items present, {} missing; at most {most_siblings} siblings seen by a read",
        cart.value.len(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "lost adds: {:?}",
        &missing[..missing.len().min(10)]
    );
    assert_eq!(cart.value.len(), WRITERS * CYCLES);
    assert!(
        most_siblings <= WRITERS,
        "{most_siblings} siblings with {WRITERS} writers"
    );
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cart_of_counters_merges_concurrent_updates_through_the_store() -> Result<()> {
    let cluster = LocalCluster::start(3).await?;
    let (a, b) = (
        client(&cluster, Mode::Direct).await?,
        client(&cluster, Mode::Router).await?,
    );
    type Cart = ORMap<String, PNCounter>;
    a.modify("cart:1", |c: &mut Cart, me| {
        c.update("book".into(), me, |q| q.add(me, 3))
    })
    .await?;
    // Two sessions read the same version, then act without seeing each other.
    let seen_a = a.get_merged::<Cart>("cart:1").await?;
    let seen_b = b.get_merged::<Cart>("cart:1").await?;
    // Values built by hand, outside `modify`: each session is an actor of its own that
    // starts from the state it read (fixed ids, distinct from the lane actors `modify` draws).
    let (actor_a, actor_b) = (ringkv::crdt::ActorId(1), ringkv::crdt::ActorId(2));
    let mut left = seen_a.value.clone();
    left.remove(&"book".to_string(), actor_a);
    a.put(
        "cart:1",
        ringkv::typed::encode_value(&left)?,
        &seen_a.context,
    )
    .await?;
    let mut right = seen_b.value.clone();
    right.update("book".into(), actor_b, |q| q.add(actor_b, 1));
    right.update("pen".into(), actor_b, |q| q.add(actor_b, 2));
    b.put(
        "cart:1",
        ringkv::typed::encode_value(&right)?,
        &seen_b.context,
    )
    .await?;

    let merged = a.get_merged::<Cart>("cart:1").await?;
    assert_eq!(merged.siblings, 2, "two concurrent versions");
    let items: Vec<(String, i64)> = merged
        .value
        .iter()
        .map(|(k, v)| (k.clone(), v.value()))
        .collect();
    assert_eq!(items, vec![("book".to_string(), 1), ("pen".to_string(), 2)]);
    cluster.shutdown().await;
    Ok(())
}
