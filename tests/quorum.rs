//! Quorum reads and writes on a real in-process cluster, in direct and router mode.

mod support;

use anyhow::Result;
use bytes::Bytes;
use ringkv::{CallOptions, Client, ClientError, Context, Mode};
use ringkv_node::testing::LocalCluster;
use ringkv_shared::NodeId;
use std::time::Duration;
use support::client;

fn values(v: &ringkv::Versions) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = v.values.iter().map(|b| b.as_ref()).collect();
    out.sort();
    out
}

async fn round_trip_and_overwrite(mode: Mode) -> Result<()> {
    let cluster = LocalCluster::start(3).await?;
    let c = client(&cluster, mode).await?;

    assert!(c.get("missing").await?.is_not_found());

    let ctx = c.put("k", "v1", &Context::empty()).await?;
    let read = c.get("k").await?;
    assert_eq!(values(&read), vec![b"v1".as_slice()]);

    // Overwrite with the context of the read: one value remains.
    c.put("k", "v2", &read.context).await?;
    assert_eq!(values(&c.get("k").await?), vec![b"v2".as_slice()]);

    // The context returned by a put also supersedes what it wrote.
    let ctx2 = c.put("k2", "a", &Context::empty()).await?;
    c.put("k2", "b", &ctx2).await?;
    assert_eq!(values(&c.get("k2").await?), vec![b"b".as_slice()]);
    drop(ctx);
    cluster.shutdown().await;
    Ok(())
}

async fn siblings_and_resolution(mode: Mode) -> Result<()> {
    let cluster = LocalCluster::start(3).await?;
    let c = client(&cluster, mode).await?;
    c.put("cart", "base", &Context::empty()).await?;
    let old = c.get("cart").await?.context;

    // Two writers with the same old context: both survive as siblings.
    c.put("cart", "x", &old).await?;
    c.put("cart", "y", &old).await?;
    let read = c.get_with("cart", CallOptions::default().quorum(3)).await?;
    assert_eq!(values(&read), vec![b"x".as_slice(), b"y".as_slice()]);
    assert!(read.has_siblings());

    // Writing back with the merged context resolves them.
    c.put("cart", "xy", &read.context).await?;
    let read = c.get("cart").await?;
    assert_eq!(read.single().map(Bytes::as_ref), Some(b"xy".as_slice()));
    cluster.shutdown().await;
    Ok(())
}

/// The context a put returns chains writes without reads, and never covers a value the
/// writer has not seen. Writer b's value is on every replica before writer a's chain starts
/// with a blind write; each of a's writes uses the previous one's context. The stored object's
/// own clock would cover b's value, and a's second write would have dropped it unseen (as it
/// did before protocol version 3).
/// `put_returning` then hands back every sibling with a context that resolves them.
async fn chained_puts_keep_a_concurrent_writers_value(mode: Mode) -> Result<()> {
    let cluster = LocalCluster::start(3).await?;
    let (a, b) = (client(&cluster, mode).await?, client(&cluster, mode).await?);
    let all = CallOptions::default().quorum(3);
    b.put_with("shared", "from-b", &Context::empty(), all)
        .await?;
    let mut ctx = Context::empty();
    for i in 1..=3 {
        ctx = a.put_with("shared", format!("a{i}"), &ctx, all).await?;
    }
    let read = a.get_with("shared", all).await?;
    let seen = values(&read);
    assert!(
        seen.contains(&b"from-b".as_slice()),
        "b's value lost: {seen:?}"
    );
    assert!(seen.contains(&b"a3".as_slice()), "{seen:?}");
    // a's earlier writes are replaced, except where a context could not name one without
    // covering b's value too (b's write and a's stamped by the same coordinator): then that
    // one stays as a sibling. Never is anything lost.
    let known: [&[u8]; 4] = [b"from-b", b"a1", b"a2", b"a3"];
    assert!(seen.iter().all(|v| known.contains(v)), "{seen:?}");

    let body = a.put_returning("shared", "merged", &ctx, all).await?;
    let returned = values(&body);
    assert!(returned.contains(&b"from-b".as_slice()), "{returned:?}");
    assert!(returned.contains(&b"merged".as_slice()), "{returned:?}");
    a.put_with("shared", "resolved", &body.context, all).await?;
    assert_eq!(
        values(&b.get_with("shared", all).await?),
        vec![b"resolved".as_slice()]
    );
    cluster.shutdown().await;
    Ok(())
}

async fn delete_then_get(mode: Mode) -> Result<()> {
    let cluster = LocalCluster::start(3).await?;
    let c = client(&cluster, mode).await?;
    c.put("gone", "v", &Context::empty()).await?;
    let read = c.get("gone").await?;
    c.delete("gone", &read.context).await?;
    let after = c.get_with("gone", CallOptions::default().quorum(3)).await?;
    assert!(after.is_not_found(), "{after:?}");
    // A later write with the delete's context brings the key back with only the new value.
    c.put("gone", "again", &after.context).await?;
    assert_eq!(values(&c.get("gone").await?), vec![b"again".as_slice()]);
    cluster.shutdown().await;
    Ok(())
}

async fn one_node_down(mode: Mode) -> Result<()> {
    let mut cluster = LocalCluster::start(3).await?;
    let c = client(&cluster, mode).await?;
    c.put("before", "v", &Context::empty()).await?;
    cluster.stop(2).await?;
    let stopped = cluster.node_id(2);

    // W=2 and R=2 still succeed with two of three replicas.
    for i in 0..10 {
        c.put(format!("k{i}"), "v", &Context::empty()).await?;
        assert_eq!(
            values(&c.get(format!("k{i}")).await?),
            vec![b"v".as_slice()]
        );
    }
    assert_eq!(values(&c.get("before").await?), vec![b"v".as_slice()]);

    // W=3 cannot be met, and the error names the stopped node.
    let err = c
        .put_with(
            "k-w3",
            "v",
            &Context::empty(),
            CallOptions::default().quorum(3),
        )
        .await
        .expect_err("W=3 with a replica down must fail");
    match &err {
        ClientError::QuorumFailed {
            required,
            succeeded,
            errors,
        } => {
            assert_eq!(*required, 3);
            assert!(*succeeded < 3);
            let named: Vec<NodeId> = errors.iter().map(|(n, _)| *n).collect();
            assert!(
                named.contains(&stopped),
                "error should name {stopped}: {err}"
            );
        }
        other => panic!("expected QuorumFailed, got {other}"),
    }
    assert!(err.to_string().contains(&stopped.to_string()), "{err}");
    cluster.shutdown().await;
    Ok(())
}

async fn restarted_node_keeps_its_data(mode: Mode) -> Result<()> {
    let mut cluster = LocalCluster::start(3).await?;
    let c = client(&cluster, mode).await?;
    for i in 0..20 {
        c.put_with(
            format!("p{i}"),
            format!("v{i}"),
            &Context::empty(),
            CallOptions::default().quorum(3),
        )
        .await?;
    }
    cluster.restart(1).await?;
    let node = cluster.node(1).expect("restarted");
    let ring = node.ring();
    for i in 0..20 {
        let key = format!("p{i}");
        let obj = node
            .store()
            .get(ring.partition_of(key.as_bytes()), key.as_bytes())?;
        let obj = obj.unwrap_or_else(|| panic!("{key} missing after restart"));
        assert_eq!(
            obj.values().next().map(|b| b.as_ref()),
            Some(format!("v{i}").as_bytes())
        );
    }
    // And the cluster serves it with R=3 (all replicas, the restarted one included).
    assert_eq!(
        values(&c.get_with("p3", CallOptions::default().quorum(3)).await?),
        vec![b"v3".as_slice()]
    );
    cluster.shutdown().await;
    Ok(())
}

async fn oversized_input_is_refused(mode: Mode) -> Result<()> {
    let cluster = LocalCluster::start(3).await?;
    let c = client(&cluster, mode).await?;
    let big_key = vec![b'k'; 1025];
    let err = c
        .put(big_key.clone(), "v", &Context::empty())
        .await
        .expect_err("must be refused");
    assert!(matches!(err, ClientError::InvalidInput { .. }), "{err}");
    let err = c.get(big_key).await.expect_err("must be refused");
    assert!(matches!(err, ClientError::InvalidInput { .. }), "{err}");
    let big_value = vec![0u8; (1 << 20) + 1];
    let err = c
        .put("ok-key", big_value, &Context::empty())
        .await
        .expect_err("must be refused");
    assert!(matches!(err, ClientError::InvalidInput { .. }), "{err}");
    let err = c
        .put("", "v", &Context::empty())
        .await
        .expect_err("must be refused");
    assert!(matches!(err, ClientError::InvalidInput { .. }), "{err}");
    let err = c
        .put(
            "k",
            "v",
            &Context::from_bytes(Bytes::from_static(b"\x07garbage")),
        )
        .await
        .expect_err("must be refused");
    assert!(matches!(err, ClientError::InvalidInput { .. }), "{err}");
    for i in 0..3 {
        let node = cluster.node(i).expect("running");
        let p = node.ring().partition_of(b"ok-key");
        assert!(
            node.store().get(p, b"ok-key")?.is_none(),
            "nothing stored on node {i}"
        );
    }
    cluster.shutdown().await;
    Ok(())
}

async fn read_repairs_a_stale_replica(mode: Mode) -> Result<()> {
    let mut cluster = LocalCluster::start(3).await?;
    let c = client(&cluster, mode).await?;
    cluster.stop(2).await?;
    c.put("rr", "fresh", &Context::empty()).await?;
    cluster.restart(2).await?;
    let node = cluster.node(2).expect("restarted");
    let p = node.ring().partition_of(b"rr");
    assert!(
        node.store().get(p, b"rr")?.is_none(),
        "the restarted replica missed the write"
    );

    // A read that reaches the stale replica repairs it in the background. The first request
    // after the restart may still find the old connection attempt failing (the client learns
    // that the node is back by trying), so the read is retried as an application would.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let read = loop {
        match c.get_with("rr", CallOptions::default().quorum(3)).await {
            Ok(r) => break r,
            Err(e) if std::time::Instant::now() < deadline => {
                println!("read right after the restart failed, retrying: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    assert_eq!(values(&read), vec![b"fresh".as_slice()]);
    support::eventually(
        std::time::Duration::from_secs(10),
        "read repair reaches the stale replica",
        || async {
            node.store()
                .get(p, b"rr")
                .ok()
                .flatten()
                .is_some_and(|o| o.values().count() == 1)
        },
    )
    .await?;
    cluster.shutdown().await;
    Ok(())
}

macro_rules! both_modes {
    ($($name:ident),* $(,)?) => {
        mod direct {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() -> anyhow::Result<()> { super::$name(ringkv::Mode::Direct).await })*
        }
        mod router {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() -> anyhow::Result<()> { super::$name(ringkv::Mode::Router).await })*
        }
    };
}

both_modes!(
    round_trip_and_overwrite,
    chained_puts_keep_a_concurrent_writers_value,
    siblings_and_resolution,
    delete_then_get,
    one_node_down,
    restarted_node_keeps_its_data,
    oversized_input_is_refused,
    read_repairs_a_stale_replica,
);

/// Absence is evidence only from an owner (G8). Two owners of a key are stopped before it is
/// ever written, so the stand-ins that fill in for them hold nothing: a read at R=2 gets one
/// owner's answer and must fail, naming the stand-ins' empty answers, instead of saying "not
/// found" (direct and router mode alike). `modify` stays available: it continues from the one
/// owner's answer. With every owner down nobody who would know answers, and `modify` reports a
/// failed read that wrote nothing. Once writes have left hints on the stand-ins, their answers
/// count, marked as stand-ins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stand_ins_that_hold_nothing_do_not_make_a_read_say_not_found() -> Result<()> {
    use ringkv::crdt::ORSet;
    use ringkv::shared::quorum::Role;
    use ringkv_shared::ReplicaError;
    let mut cluster = LocalCluster::start(5).await?;
    let probe = client(&cluster, Mode::Direct).await?;
    let key = "never-written";
    let prefs = probe
        .ring()
        .preference_list_for_key(key.as_bytes())
        .to_vec();
    let ids: Vec<ringkv_shared::NodeId> = (0..5).map(|i| cluster.node_id(i)).collect();
    let index = |id: ringkv_shared::NodeId| ids.iter().position(|n| *n == id);
    let (Some(a), Some(b), Some(c)) = (index(prefs[0]), index(prefs[1]), index(prefs[2])) else {
        anyhow::bail!("owners {prefs:?} not in the cluster");
    };
    cluster.stop(b).await?;
    cluster.stop(c).await?;
    let tls = cluster.client_tls();
    let build = |seeds: Vec<std::net::SocketAddr>, mode| {
        Client::builder()
            .seeds(seeds)
            .tls(tls.clone())
            .mode(mode)
            .timeout(Duration::from_secs(3))
            .build()
    };
    // The router is the one live owner, so that the read it coordinates meets stand-ins.
    let router = build(vec![cluster.addrs()[a]], Mode::Router).await?;
    let direct = build(cluster.addrs(), Mode::Direct).await?;
    for (mode, c) in [("direct", &direct), ("router", &router)] {
        let err = c
            .get(key)
            .await
            .expect_err("two empty stand-ins are no quorum");
        let ringkv::ClientError::QuorumFailed { errors, .. } = &err else {
            anyhow::bail!("{mode}: expected QuorumFailed, got {err}");
        };
        let empty: Vec<_> = errors
            .iter()
            .filter(|(_, e)| matches!(e, ReplicaError::HoldsNothing))
            .map(|(n, _)| *n)
            .collect();
        assert!(
            empty.contains(&prefs[3]) && empty.contains(&prefs[4]),
            "{mode}: the stand-ins' empty answers are named: {err}"
        );
    }
    // All three owners down: no node that would know the key answers.
    cluster.stop(a).await?;
    let err = direct
        .modify(key, |s: &mut ORSet<String>, me| s.add("x".into(), me))
        .await
        .expect_err("the read step fails");
    assert!(
        matches!(err, ringkv::ClientError::ReadFailed { .. }) && !err.may_have_been_applied(),
        "{err}"
    );
    cluster.restart(a).await?;
    // One owner up: modify continues from its answer, in both modes.
    let router = build(vec![cluster.addrs()[a]], Mode::Router).await?;
    for (mode, c) in [("direct", &direct), ("router", &router)] {
        let written =
            eventually(|| c.modify(key, |s: &mut ORSet<String>, me| s.add(mode.into(), me)))
                .await?;
        assert!(written.value.contains(&mode.to_string()), "{mode}");
    }
    // The writes left hints on the stand-ins; now they hold something for the key and count.
    for (mode, c) in [("direct", &direct), ("router", &router)] {
        let read = eventually(|| c.get_merged::<ORSet<String>>(key)).await?;
        let items: Vec<&String> = read.value.iter().collect();
        assert_eq!(items, vec!["direct", "router"], "{mode}");
        assert!(
            read.answers.iter().any(|x| x.role == Role::StandIn),
            "{mode}: a stand-in holding a hint answered: {:?}",
            read.answers
        );
    }
    cluster.shutdown().await;
    Ok(())
}

/// Repeats `call` until it succeeds (a restarted node, hints stored as writes settle).
async fn eventually<T, F, Fut>(call: F) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        match call().await {
            Ok(r) => return Ok(r),
            Err(e) if std::time::Instant::now() > deadline => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
