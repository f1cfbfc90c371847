//! Memory of a node holding 1 GiB of data: one real `ringkv-node` process (release build) is
//! loaded with `--gib` GiB of `--value-bytes` values, then read at random; its resident set is
//! sampled after each phase. The block cache is bounded by `storage.cache_mb` (`--cache-mb`).
//!
//! ```sh
//! cargo bench --bench memory -- --gib 1 --cache-mb 64
//! ```

#[path = "load/cluster.rs"]
#[allow(dead_code)]
mod cluster;

use anyhow::Result;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng, rngs::StdRng};
use ringkv::{CallOptions, Client, Context};
use ringkv_node::testing::{ProcessCluster, ProcessOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Data to load, in GiB.
    #[arg(long, default_value_t = 1.0)]
    gib: f64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 1024)]
    value_bytes: usize,
    /// The node's block cache, in MiB.
    #[arg(long, default_value_t = 64)]
    cache_mb: u64,
    /// Writes in flight while loading.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Random reads after loading.
    #[arg(long, default_value_t = 200_000)]
    reads: u64,
    /// Accepted for `cargo bench` compatibility.
    #[arg(long, hide = true)]
    bench: bool,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn dir_bytes(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let keys = ((args.gib * (1u64 << 30) as f64) / args.value_bytes as f64) as u64;
    let procs = ProcessCluster::start_with(
        &cluster::node_binary()?,
        ProcessOptions {
            nodes: 1,
            partitions: 1024,
            tables_toml: format!(
                "replication = 1\n[storage]\ndurability = \"buffered\"\ncache_mb = {}\n[background]\nanti_entropy = false\n",
                args.cache_mb
            ),
            ..ProcessOptions::default()
        },
    )?;
    let client = cluster::connect(|| {
        Client::builder()
            .seeds(procs.addrs().iter().copied())
            .tls(procs.client_tls())
            .n(1)
            .r(1)
            .w(1)
            .timeout(Duration::from_secs(10))
    })
    .await?;
    println!(
        "loading {keys} keys of {} B ({:.2} GiB) into one node, block cache {} MiB",
        args.value_bytes, args.gib, args.cache_mb
    );
    let bar = ProgressBar::new(keys);
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} keys {per_sec} eta {eta}",
    )?);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (client, next, bar) = (client.clone(), next.clone(), bar.clone());
        let value = vec![b'v'; args.value_bytes];
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= keys {
                    return anyhow::Ok(());
                }
                client
                    .put_with(
                        format!("key-{i:010}"),
                        value.clone(),
                        &Context::empty(),
                        CallOptions::default(),
                    )
                    .await?;
                bar.inc(1);
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    bar.finish();
    let load_secs = started.elapsed().as_secs_f64();
    // Let the memtable flush and compaction that follow a bulk load settle before sampling.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_load = procs.resident_bytes()[0];
    let mut rng = StdRng::seed_from_u64(1);
    let started = Instant::now();
    for _ in 0..args.reads {
        let i = rng.random_range(0..keys);
        client.get(format!("key-{i:010}")).await?;
    }
    let read_secs = started.elapsed().as_secs_f64();
    let after_reads = procs.resident_bytes()[0];
    let on_disk = dir_bytes(&procs.data_dir(0));
    println!("| phase | resident MiB |");
    println!("|---|---|");
    println!(
        "| after loading {keys} keys ({load_secs:.0} s) | {:.0} |",
        mib(after_load)
    );
    println!(
        "| after {} random reads ({read_secs:.0} s) | {:.0} |",
        args.reads,
        mib(after_reads)
    );
    println!("data directory: {:.0} MiB on disk", mib(on_disk));
    Ok(())
}
