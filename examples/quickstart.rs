//! A tour of ringkv on a local 3-node cluster running in this process.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```
//!
//! Starts three nodes on 127.0.0.1 (temporary storage, generated certificates), then writes,
//! reads, makes two concurrent writes become siblings, resolves them, deletes, keeps working
//! with a node down, and does the same through router mode.

use anyhow::Result;
use bytes::Bytes;
use ringkv::{CallOptions, Client, ClientError, Context, Mode, Versions};
use ringkv_node::testing::LocalCluster;
use std::time::Instant;

fn show(v: &Versions) -> String {
    if v.is_not_found() {
        return "not found".into();
    }
    let vals: Vec<String> = v
        .values
        .iter()
        .map(|b| format!("{:?}", String::from_utf8_lossy(b)))
        .collect();
    if vals.len() == 1 {
        vals[0].clone()
    } else {
        format!("{} siblings: [{}]", vals.len(), vals.join(", "))
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let started = Instant::now();
    let mut cluster = LocalCluster::start(3).await?;
    println!("started 3 nodes in {:?}:", started.elapsed());
    for i in 0..3 {
        println!("  {} at {}", cluster.node_id(i), cluster.addrs()[i]);
    }

    let client = Client::builder()
        .seeds(cluster.addrs())
        .tls(cluster.client_tls())
        .build()
        .await?;
    let ring = client.ring();
    println!(
        "\nclient cached the ring: epoch {}, {} partitions, N=3 R=2 W=2",
        ring.epoch(),
        ring.partition_count()
    );
    let key = "cart:alice";
    let replicas: Vec<String> = ring
        .replicas(ring.partition_of(key.as_bytes()), 3)
        .iter()
        .map(ToString::to_string)
        .collect();
    println!(
        "{key:?} lives in partition {} on {}",
        ring.partition_of(key.as_bytes()),
        replicas.join(", ")
    );

    println!("\n1. write and read");
    client.put(key, "book", &Context::empty()).await?;
    let read = client.get(key).await?;
    println!("   put \"book\" → get: {}", show(&read));

    println!("\n2. two writers update from the same read, concurrently");
    client.put(key, "book,pen", &read.context).await?;
    client.put(key, "book,lamp", &read.context).await?;
    let read = client.get(key).await?;
    println!("   neither overwrote the other → get: {}", show(&read));

    println!("\n3. the application merges the siblings and writes back with the read's context");
    let mut items: Vec<String> = read
        .values
        .iter()
        .flat_map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    items.sort();
    items.dedup();
    let merged = items.join(",");
    client.put(key, merged.clone(), &read.context).await?;
    let read = client.get(key).await?;
    println!("   put {merged:?} → get: {}", show(&read));

    println!("\n4. delete");
    client.put("cart:bob", "socks", &Context::empty()).await?;
    let bob = client.get("cart:bob").await?;
    client.delete("cart:bob", &bob.context).await?;
    println!(
        "   cart:bob after delete: {}",
        show(&client.get("cart:bob").await?)
    );

    println!("\n5. one node down: {} stops", cluster.node_id(2));
    cluster.stop(2).await?;
    let read = client.get(key).await?;
    let ctx = client
        .put(key, format!("{merged},mug"), &read.context)
        .await?;
    println!(
        "   W=2 put and R=2 get still succeed → {}",
        show(&client.get(key).await?)
    );
    match client
        .put_with(key, "x", &ctx, CallOptions::default().quorum(3))
        .await
    {
        Err(e @ ClientError::QuorumFailed { .. }) => {
            println!("   a W=3 put cannot be acknowledged: {e}");
            println!(
                "   (may have been applied: {}; Dynamo never rolls a write back, so \"x\" stays on the two live replicas)",
                e.may_have_been_applied()
            );
        }
        other => println!("   W=3 unexpectedly returned {other:?}"),
    }
    cluster.restart(2).await?;
    println!("   {} restarted with its data", cluster.node_id(2));

    println!("\n6. router mode: any node coordinates, as behind a load balancer");
    let router = Client::builder()
        .seeds(cluster.addrs())
        .tls(cluster.client_tls())
        .mode(Mode::Router)
        .build()
        .await?;
    let read = router.get(key).await?;
    println!(
        "   get via a random node: {} (the W=3 write from step 5 reached two replicas)",
        show(&read)
    );
    router.put(key, "all done", &read.context).await?;
    let last = client
        .get_with(key, CallOptions::default().quorum(3))
        .await?;
    println!(
        "   put via router, read back directly with R=3: {}",
        last.single()
            .map(|b: &Bytes| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_else(|| show(&last))
    );

    cluster.shutdown().await;
    println!(
        "\ndone in {:?}; the cluster's storage was temporary and is gone.",
        started.elapsed()
    );
    Ok(())
}
