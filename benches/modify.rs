//! `Client::modify` against the read-merge-write it replaced, in one run, alternating: the
//! old one is `get_merged` + change with one fixed actor + `put` with the read's context (what
//! `modify` did before lanes); the new one is `modify`. Three in-process nodes on loopback,
//! N=3 R=2 W=2, carts (`ORMap<String, PNCounter>`) on `--keys` keys chosen at random.
//!
//! ```sh
//! cargo bench --bench modify -- --duration 4 --pairs 3
//! ```

use anyhow::Result;
use clap::Parser;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng, rngs::StdRng};
use ringkv::crdt::{ActorId, ORMap, PNCounter};
use ringkv::{Client, Mode};
use ringkv_node::testing::LocalCluster;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Cart = ORMap<String, PNCounter>;

#[derive(Parser)]
struct Args {
    /// Keys (carts).
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// Seconds per phase.
    #[arg(long, default_value_t = 4)]
    duration: u64,
    /// Old/new pairs per concurrency.
    #[arg(long, default_value_t = 3)]
    pairs: usize,
    /// Concurrencies to measure.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 32])]
    in_flight: Vec<usize>,
    /// Accepted for `cargo bench` compatibility.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Old,
    New,
}

async fn once(client: &Client, variant: Variant, key: String, item: String) -> Result<()> {
    match variant {
        Variant::New => {
            client
                .modify(key, |c: &mut Cart, me| c.update(item, me, |q| q.add(me, 1)))
                .await?;
        }
        Variant::Old => {
            let me = ActorId(42);
            let read = client.get_merged::<Cart>(key.clone()).await?;
            let mut cart = read.value;
            cart.update(item, me, |q| q.add(me, 1));
            client
                .put(key, ringkv::typed::encode_value(&cart)?, &read.context)
                .await?;
        }
    }
    Ok(())
}

async fn phase(
    client: &Client,
    variant: Variant,
    in_flight: usize,
    keys: usize,
    duration: Duration,
) -> Result<(f64, Histogram<u64>)> {
    let until = Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..in_flight {
        let client = client.clone();
        tasks.spawn(async move {
            let mut rng = StdRng::seed_from_u64(t as u64);
            let mut h = Histogram::<u64>::new(3)?;
            let mut ops = 0u64;
            while Instant::now() < until {
                let key = format!("{variant:?}:{}", rng.random_range(0..keys));
                let item = format!("p{}", rng.random_range(0..5));
                let start = Instant::now();
                once(&client, variant, key, item).await?;
                h.record(start.elapsed().as_micros() as u64)?;
                ops += 1;
            }
            anyhow::Ok((ops, h))
        });
    }
    let mut total = 0;
    let mut all = Histogram::<u64>::new(3)?;
    while let Some(r) = tasks.join_next().await {
        let (ops, h) = r??;
        total += ops;
        all.add(h)?;
    }
    Ok((total as f64 / duration.as_secs_f64(), all))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let cluster = LocalCluster::start(3).await?;
    let client = Arc::new(
        Client::builder()
            .seeds(cluster.addrs())
            .tls(cluster.client_tls())
            .mode(Mode::Direct)
            .build()
            .await?,
    );
    let duration = Duration::from_secs(args.duration);
    println!(
        "| in flight | variant | ops/s (median of {}) | p50 µs | p99 µs |",
        args.pairs
    );
    println!("| --- | --- | --- | --- | --- |");
    for &in_flight in &args.in_flight {
        // Warm-up: every key written once by both.
        phase(
            &client,
            Variant::Old,
            in_flight,
            args.keys,
            Duration::from_secs(1),
        )
        .await?;
        phase(
            &client,
            Variant::New,
            in_flight,
            args.keys,
            Duration::from_secs(1),
        )
        .await?;
        let (mut rates, mut p50s, mut p99s) =
            ([vec![], vec![]], [vec![], vec![]], [vec![], vec![]]);
        for pair in 0..args.pairs {
            let order = if pair % 2 == 0 {
                [Variant::Old, Variant::New]
            } else {
                [Variant::New, Variant::Old]
            };
            for v in order {
                let (rate, h) = phase(&client, v, in_flight, args.keys, duration).await?;
                let i = (v == Variant::New) as usize;
                rates[i].push(rate);
                p50s[i].push(h.value_at_quantile(0.5) as f64);
                p99s[i].push(h.value_at_quantile(0.99) as f64);
            }
        }
        let mut medians = [0.0; 2];
        for (i, name) in ["old (read + put, one actor)", "modify (lanes)"]
            .iter()
            .enumerate()
        {
            medians[i] = median(rates[i].clone());
            println!(
                "| {in_flight} | {name} | {:.0} | {:.0} | {:.0} |",
                medians[i],
                median(p50s[i].clone()),
                median(p99s[i].clone())
            );
        }
        println!(
            "| {in_flight} | new / old | {:.3} | | |",
            medians[1] / medians[0]
        );
    }
    cluster.shutdown().await;
    Ok(())
}
