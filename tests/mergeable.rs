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

/// What the client said about each update: acknowledged, failed (not applied), or unknown.
#[derive(Default)]
struct Outcomes {
    acked: Vec<String>,
    unknown: Vec<String>,
    failed: usize,
}

impl Outcomes {
    fn record(&mut self, item: String, result: Result<(), ringkv::ClientError>) {
        match result {
            Ok(()) => self.acked.push(item),
            Err(e) if e.may_have_been_applied() => self.unknown.push(item),
            Err(_) => self.failed += 1,
        }
    }
}

/// The case that lost 703 of 2,818 adds with no fault at all: many tasks doing `modify` on the
/// same keys through one `Client` and its clones (as one service instance does under load).
/// Every acknowledged add is present and the counter is at least the acknowledged increments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_sharing_one_client_lose_no_add_and_no_increment() -> Result<()> {
    const TASKS: usize = 16;
    const CYCLES: usize = 25;
    let cluster = LocalCluster::start(3).await?;
    for mode in [Mode::Direct, Mode::Router] {
        let shared = client(&cluster, mode).await?;
        let (set_key, counter_key) = (format!("set:{mode:?}"), format!("count:{mode:?}"));
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..TASKS {
            let c = shared.clone();
            let (set_key, counter_key) = (set_key.clone(), counter_key.clone());
            tasks.spawn(async move {
                let (mut adds, mut incs) = (Outcomes::default(), Outcomes::default());
                for i in 0..CYCLES {
                    let item = format!("t{t}-{i}");
                    let r = c
                        .modify(set_key.clone(), |s: &mut ORSet<String>, actor| {
                            s.add(item.clone(), actor)
                        })
                        .await
                        .map(|_| ());
                    adds.record(item.clone(), r);
                    let r = c
                        .modify(counter_key.clone(), |n: &mut PNCounter, actor| {
                            n.add(actor, 1)
                        })
                        .await
                        .map(|_| ());
                    incs.record(item, r);
                }
                (adds, incs)
            });
        }
        let (mut adds, mut incs) = (Outcomes::default(), Outcomes::default());
        while let Some(r) = tasks.join_next().await {
            let (a, i) = r?;
            adds.acked.extend(a.acked);
            adds.unknown.extend(a.unknown);
            adds.failed += a.failed;
            incs.acked.extend(i.acked);
            incs.unknown.extend(i.unknown);
        }
        let reader = client(&cluster, Mode::Direct).await?;
        let set = reader
            .get_merged_with::<ORSet<String>>(
                set_key.clone(),
                ringkv::CallOptions::default().quorum(3),
            )
            .await?;
        let missing: Vec<&String> = adds
            .acked
            .iter()
            .filter(|i| !set.value.contains(i))
            .collect();
        assert!(
            missing.is_empty(),
            "{mode:?}: {} of {} acknowledged adds lost, e.g. {:?}",
            missing.len(),
            adds.acked.len(),
            &missing[..missing.len().min(5)]
        );
        let counter = reader
            .get_merged_with::<PNCounter>(counter_key, ringkv::CallOptions::default().quorum(3))
            .await?;
        let acked = incs.acked.len() as i64;
        assert!(
            counter.value.value() >= acked,
            "{mode:?}: counter {} < {acked} acknowledged increments",
            counter.value.value()
        );
        let most = acked + incs.unknown.len() as i64;
        assert!(
            counter.value.value() <= most,
            "{mode:?}: counter {} > {most} acknowledged or unknown increments",
            counter.value.value()
        );
        println!(
            "{mode:?}: {} adds acknowledged, {} unknown, {} failed; counter {} (acknowledged {acked}); \
             {} actors in the counter",
            adds.acked.len(),
            adds.unknown.len(),
            adds.failed,
            counter.value.value(),
            counter.value.actors()
        );
    }
    cluster.shutdown().await;
    Ok(())
}

/// A sibling whose map entry is kept alive by a dot its own clock has not seen (something no
/// client writes, but anyone with a certificate can): `get_merged` and `modify` refuse it with
/// an error naming the key, write nothing, and do not panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invariant_violating_sibling_is_an_error_naming_the_key() -> Result<()> {
    use serde::Serialize;
    use std::collections::BTreeMap;
    // The encoding of an `ORSet<String>` (clock, then entries of (dots, unit)), with an empty
    // clock and one element alive by the unseen dot (actor 9, counter 1).
    #[derive(Serialize)]
    struct Forged {
        clock: Vec<(u64, u64)>,
        entries: BTreeMap<String, (Vec<(u64, u64)>, ())>,
    }
    let forged = Forged {
        clock: vec![],
        entries: BTreeMap::from([("x".to_string(), (vec![(9, 1)], ()))]),
    };
    let bytes = ringkv::typed::encode_value(&forged)?;
    let decoded: ORSet<String> = ringkv::typed::decode_value(&bytes)?;
    assert!(
        ringkv::crdt::Merge::validate(&decoded).is_err(),
        "decodes as a set, but breaks its invariant"
    );
    let cluster = LocalCluster::start(3).await?;
    let c = client(&cluster, Mode::Direct).await?;
    c.put("set:forged", bytes, &ringkv::Context::empty())
        .await?;
    let err = c
        .get_merged::<ORSet<String>>("set:forged")
        .await
        .expect_err("a forged sibling is refused");
    assert!(
        err.to_string().contains("set:forged") && err.to_string().contains("has not seen"),
        "{err}"
    );
    let err = c
        .modify("set:forged", |s: &mut ORSet<String>, me| {
            s.add("y".into(), me)
        })
        .await
        .expect_err("modify refuses it too");
    assert!(!err.may_have_been_applied(), "{err}");
    let raw = c.get("set:forged").await?;
    assert_eq!(raw.values.len(), 1, "nothing was written over it");
    cluster.shutdown().await;
    Ok(())
}

/// `modify` returns the key as its write left it, siblings written meanwhile included: here
/// another instance adds "y" between this modify's read and its write (R=W=3, so the
/// coordinator holds it). Writing the returned value back with the returned context loses
/// nothing and leaves one version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modify_returns_what_was_written_beside_it() -> Result<()> {
    use ringkv::CallOptions;
    let cluster = LocalCluster::start(3).await?;
    let (a, b) = (
        client(&cluster, Mode::Direct).await?,
        client(&cluster, Mode::Direct).await?,
    );
    let all = CallOptions::default().quorum(3);
    let add = |item: &'static str| {
        move |s: &mut ORSet<String>, me: ringkv::crdt::ActorId| s.add(item.into(), me)
    };
    a.modify_with("cart:race", all, add("x")).await?;
    let runtime = tokio::runtime::Handle::current();
    let written = a
        .modify_with("cart:race", all, |s: &mut ORSet<String>, me| {
            let meanwhile = tokio::task::block_in_place(|| {
                runtime.block_on(b.modify_with("cart:race", all, add("y")))
            });
            assert!(meanwhile.is_ok(), "b's add: {meanwhile:?}");
            s.add("z".into(), me);
        })
        .await?;
    let items: Vec<&String> = written.value.iter().collect();
    assert_eq!(items, ["x", "y", "z"], "the value after the write");
    a.put_with(
        "cart:race",
        ringkv::typed::encode_value(&written.value)?,
        &written.context,
        all,
    )
    .await?;
    let read = b.get_merged_with::<ORSet<String>>("cart:race", all).await?;
    let items: Vec<&String> = read.value.iter().collect();
    assert_eq!(items, ["x", "y", "z"]);
    assert_eq!(
        read.siblings, 1,
        "the returned context covers every sibling"
    );
    cluster.shutdown().await;
    Ok(())
}
