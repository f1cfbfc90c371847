//! Does anti-entropy hurt foreground latency? A closed-loop 50% read / 50% write load on a
//! 3-node in-process cluster, with phases alternating anti-entropy ON and OFF (ON OFF ON OFF
//! ON OFF) so that drift in the machine's speed affects both alike. Each ON phase starts by
//! planting divergence (1% of the keys rewritten on one replica only), so anti-entropy has
//! real repair work on top of its periodic comparisons.
//!
//! ```text
//! cargo bench --bench anti_entropy                  # 3 pairs of 5 s phases
//! RINGKV_BENCH_PHASE_SECS=10 cargo bench --bench anti_entropy
//! RINGKV_BENCH_DURABILITY=buffered cargo bench --bench anti_entropy   # sync (default) | buffered | none
//! ```
#![allow(missing_docs)]

use anyhow::Result;
use bytes::Bytes;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng, rngs::StdRng};
use ringkv::{CallOptions, Client, Context};
use ringkv_node::config::BackgroundConfig;
use ringkv_node::testing::LocalCluster;
use std::time::{Duration, Instant};

const KEYS: usize = 20_000;
const IN_FLIGHT: usize = 32;
const VALUE: usize = 1024;

fn key(i: usize) -> String {
    format!("user:{i:08}")
}

async fn load(client: &Client, secs: u64, seed: u64) -> Result<(Histogram<u64>, u64)> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let value = Bytes::from(vec![3u8; VALUE]);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..IN_FLIGHT as u64 {
        let (client, value) = (client.clone(), value.clone());
        tasks.spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed ^ w);
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let k = key(rng.random_range(0..KEYS));
                let t = Instant::now();
                let ok = if rng.random_bool(0.5) {
                    client.get(k).await.is_ok()
                } else {
                    client
                        .put(k, value.clone(), &Context::empty())
                        .await
                        .is_ok()
                };
                h.record(t.elapsed().as_micros().max(1) as u64)?;
                errors += u64::from(!ok);
            }
            anyhow::Ok((h, errors))
        });
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    while let Some(r) = tasks.join_next().await {
        let (h, e) = r??;
        all.add(h)?;
        errors += e;
    }
    Ok((all, errors))
}

#[tokio::main]
async fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let secs: u64 = std::env::var("RINGKV_BENCH_PHASE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let background = BackgroundConfig {
        ae_interval_ms: 100,
        ..BackgroundConfig::default()
    };
    let durability = match std::env::var("RINGKV_BENCH_DURABILITY").as_deref() {
        Ok("none") => ringkv_node::storage::Durability::None,
        Ok("buffered") => ringkv_node::storage::Durability::Buffered,
        _ => ringkv_node::storage::Durability::Sync,
    };
    println!("durability {durability:?}");
    let cluster = LocalCluster::builder(3)
        .partitions(256)
        .durability(durability)
        .background(background)
        .start()
        .await?;
    let client = Client::builder()
        .seeds(cluster.addrs())
        .tls(cluster.client_tls())
        .build()
        .await?;
    println!("loading {KEYS} keys of {VALUE} bytes (W=3)...");
    let value = Bytes::from(vec![1u8; VALUE]);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..IN_FLIGHT {
        let (client, value) = (client.clone(), value.clone());
        tasks.spawn(async move {
            for i in (w..KEYS).step_by(IN_FLIGHT) {
                client
                    .put_with(
                        key(i),
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
    let set_ae = |on: bool| {
        (0..3)
            .filter_map(|i| cluster.node(i))
            .for_each(|n| n.set_anti_entropy(on))
    };

    let mut on = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut off = on.clone();
    let (mut ops_on, mut ops_off, mut errs) = (0u64, 0u64, 0u64);
    let mut rng = StdRng::seed_from_u64(7);
    let n1 = cluster.node(0).expect("running");
    let repaired_before: u64 = (0..3)
        .filter_map(|i| cluster.node(i))
        .map(|n| n.stats().ae_keys_repaired)
        .sum();
    for pair in 0..3 {
        // ON: plant 1% divergence on n1, then let anti-entropy find and repair it under load.
        for _ in 0..KEYS / 100 {
            let k = key(rng.random_range(0..KEYS));
            let p = n1.ring().partition_of(k.as_bytes());
            if let Some(o) = n1.store().get(p, k.as_bytes())? {
                n1.store()
                    .update(
                        p,
                        k.as_bytes(),
                        o.clock(),
                        Some(Bytes::from(vec![9u8; VALUE])),
                    )
                    .await?;
            }
        }
        set_ae(true);
        let (h, e) = load(&client, secs, 100 + pair).await?;
        ops_on += h.len();
        errs += e;
        on.add(h)?;
        set_ae(false);
        let (h, e) = load(&client, secs, 200 + pair).await?;
        ops_off += h.len();
        errs += e;
        off.add(h)?;
        println!("pair {} done", pair + 1);
    }
    let repaired: u64 = (0..3)
        .filter_map(|i| cluster.node(i))
        .map(|n| n.stats().ae_keys_repaired)
        .sum::<u64>()
        - repaired_before;
    let ae_bytes: u64 = (0..3)
        .filter_map(|i| cluster.node(i))
        .map(|n| n.stats().ae_bytes_sent)
        .sum();
    let row = |name: &str, h: &Histogram<u64>, ops: u64| {
        println!(
            "{name:<16} {:>9.0} {:>9} {:>9} {:>9} {:>9}",
            ops as f64 / (3 * secs) as f64,
            h.mean() as u64,
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999)
        )
    };
    println!(
        "\n50% get / 50% put, {IN_FLIGHT} in flight, N=3 R=2 W=2, {VALUE}-byte values, 3 x {secs} s per mode"
    );
    println!(
        "{:<16} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "mode", "ops/s", "mean µs", "p50 µs", "p99 µs", "p99.9 µs"
    );
    row("anti-entropy on", &on, ops_on);
    row("anti-entropy off", &off, ops_off);
    let ratio = on.value_at_quantile(0.99) as f64 / off.value_at_quantile(0.99) as f64;
    println!(
        "p99 on / off = {ratio:.3} (target <= 1.25); keys repaired by anti-entropy: {repaired}; anti-entropy bytes sent: {ae_bytes}; failed ops: {errs}"
    );
    cluster.shutdown().await;
    Ok(())
}
