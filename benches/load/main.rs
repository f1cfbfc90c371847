//! The load harness: client-driven (direct) vs router mode on real node processes, measured
//! the way Dynamo's Table 2 was.
//!
//! ```text
//! cargo bench --bench load                                   # 3 nodes, workload A, defaults below
//! cargo bench --bench load -- --nodes 5 --workload c --keys 20000 --duration 10
//! cargo bench --bench load -- --seed-node 127.0.0.1:7001 --certs examples/cluster/certs --cert-name app
//! ```
//!
//! An update reads the key and writes with that read's context, as applications do; its
//! latency is the write's. Blind writes would each be kept as a sibling.
//!
//! Defaults: 100,000 keys of 1 KiB, zipfian (theta 0.99), 32 operations in flight, N=3 R=2 W=2,
//! `sync` durability, 3 pairs of 10 s phases (direct, router, direct, router, ...) after 2 s of
//! warm-up each. Prints the table, writes `results.json` and `latency.svg` under `--out`.
#![allow(missing_docs)]

mod cluster;
mod cpu;
mod report;
mod workload;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use report::{Latencies, ModeFigures};
use ringkv::{CallOptions, Client, Context, Mode, TlsIdentity};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use workload::{KeyDist, Keys, Workload, key};

/// The allocator a service linking the client would likely use; as the node's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug, serde::Serialize)]
#[command(about = "ringkv load harness: client-driven vs router mode")]
struct Args {
    /// Hedged reads in both modes: ask R replicas, one more after this many milliseconds
    /// without a quorum (default: ask all N). Direct mode: the client's `hedge_reads`; router
    /// mode: the started nodes' `router.read_hedge_us`.
    #[arg(long, conflicts_with = "hedge_pct")]
    hedge_ms: Option<f64>,
    /// Hedged reads in both modes with a delay that follows the load: this percentile (1 to
    /// 99) of recent read latencies (the client's `hedge_reads_percentile`, the nodes'
    /// `router.read_hedge_percentile`).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=99))]
    hedge_pct: Option<u8>,
    /// Node processes to start (ignored with --seed-node).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Use an existing cluster instead of starting one.
    #[arg(long = "seed-node")]
    seed_nodes: Vec<SocketAddr>,
    /// With --seed-node: directory holding ca.pem and the client certificate.
    #[arg(long)]
    certs: Option<PathBuf>,
    /// With --seed-node: client certificate name.
    #[arg(long, default_value = "app")]
    cert_name: String,
    #[arg(long, value_enum, default_value = "a")]
    workload: Workload,
    #[arg(long, value_enum, default_value = "zipfian")]
    distribution: KeyDist,
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    #[arg(long, default_value_t = 32)]
    in_flight: usize,
    /// Seconds per measured phase.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of unrecorded warm-up before each phase.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Direct/router pairs of phases.
    #[arg(long, default_value_t = 3)]
    pairs: u64,
    #[arg(long, default_value_t = 3)]
    n: u8,
    #[arg(long, default_value_t = 2)]
    r: u8,
    #[arg(long, default_value_t = 2)]
    w: u8,
    /// Request-serving threads per started node (default: this host's cores divided among
    /// the nodes, at least one; co-located nodes each running a thread per core mostly add
    /// context switches).
    #[arg(long)]
    node_threads: Option<usize>,
    /// Group-commit gathering of started nodes under sync durability, in microseconds
    /// (`storage.group_commit_gather_us`).
    #[arg(long, default_value_t = 500)]
    gather_us: u64,
    /// Node durability when starting nodes: sync, buffered or none.
    #[arg(long, default_value = "sync")]
    durability: String,
    /// Skip loading the key space (it is already there).
    #[arg(long)]
    skip_load: bool,
    #[arg(long, default_value = "target/ringkv-load")]
    out: PathBuf,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    #[serde(skip)]
    bench: bool,
}

async fn connect(
    seeds: &[SocketAddr],
    tls: &TlsIdentity,
    args: &Args,
    mode: Mode,
) -> Result<Client> {
    cluster::connect(|| {
        let builder = Client::builder()
            .seeds(seeds.iter().copied())
            .tls(tls.clone())
            .n(args.n)
            .r(args.r)
            .w(args.w)
            .mode(mode)
            .timeout(Duration::from_secs(5));
        match (args.hedge_ms, args.hedge_pct) {
            (Some(ms), _) => builder.hedge_reads(Duration::from_micros((ms * 1000.0) as u64)),
            (None, Some(p)) => builder.hedge_reads_percentile(p),
            (None, None) => builder,
        }
    })
    .await
}

fn bar(len: u64, msg: &str) -> ProgressBar {
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template("{msg:>18} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b.set_message(msg.to_string());
    b
}

/// Node counters read before and after a phase.
struct Counters {
    /// Requests served, per node.
    requests: Vec<u64>,
    /// Writes that changed an object, all nodes.
    writes: u64,
    /// fsyncs run, all nodes.
    fsyncs: u64,
}

async fn counters(client: &Client) -> Counters {
    let stats: Vec<_> = client
        .stats()
        .await
        .into_iter()
        .map(|(_, s)| s.ok())
        .collect();
    Counters {
        requests: stats
            .iter()
            .map(|s| s.as_ref().map_or(0, |s| s.requests))
            .collect(),
        writes: stats.iter().flatten().map(|s| s.writes).sum(),
        fsyncs: stats.iter().flatten().map(|s| s.fsyncs).sum(),
    }
}

/// Each node's requests served between two counter readings, per operation of the phase.
fn per_node_per_op(before: &[u64], after: &[u64], ops: u64) -> Vec<f64> {
    after
        .iter()
        .zip(before)
        .map(|(a, b)| a.saturating_sub(*b) as f64 / ops.max(1) as f64)
        .collect()
}

fn us_per(spent: Duration, count: u64) -> f64 {
    spent.as_secs_f64() * 1e6 / count.max(1) as f64
}

/// CPU time and work summed over the phases of one mode.
#[derive(Default)]
struct Tally {
    nodes: Option<Duration>,
    harness: Option<Duration>,
    ops: u64,
    requests: u64,
    /// Requests served per node, summed over phases.
    per_node: Vec<u64>,
}

/// [`Tally`] per mode: what the run prints as CPU per operation and per node request.
#[derive(Default)]
struct Spent {
    direct: Tally,
    router: Tally,
}

impl Spent {
    fn tally(&mut self, mode: Mode) -> &mut Tally {
        match mode {
            Mode::Direct => &mut self.direct,
            Mode::Router => &mut self.router,
        }
    }

    fn add(
        &mut self,
        mode: Mode,
        (nodes, harness): (Option<Duration>, Option<Duration>),
        ops: u64,
        requests: u64,
        before: &[u64],
        after: &[u64],
    ) {
        let t = self.tally(mode);
        let sum = |acc: Option<Duration>, d: Option<Duration>| Some(acc.unwrap_or_default() + d?);
        t.nodes = sum(t.nodes, nodes);
        t.harness = sum(t.harness, harness);
        t.ops += ops;
        t.requests += requests;
        t.per_node.resize(after.len().max(t.per_node.len()), 0);
        for (i, (a, b)) in after.iter().zip(before).enumerate() {
            t.per_node[i] += a.saturating_sub(*b);
        }
    }

    /// "direct: CPU per operation 421 µs (nodes 300, harness 121); node CPU per request 61 µs;
    /// node requests per operation per node: mean 1.63, max 1.64, min 1.62"
    fn line(&mut self, mode: Mode) -> String {
        let t = self.tally(mode);
        let fmt =
            |d: Option<Duration>, n: u64| d.map_or("-".into(), |d| format!("{:.0}", us_per(d, n)));
        let total = t.nodes.zip(t.harness).map(|(a, b)| a + b);
        let shares = per_node_per_op(&vec![0; t.per_node.len()], &t.per_node, t.ops);
        let (mean, max, min) = (
            shares.iter().sum::<f64>() / shares.len().max(1) as f64,
            shares.iter().copied().fold(0.0, f64::max),
            shares.iter().copied().fold(f64::INFINITY, f64::min),
        );
        format!(
            "{}: CPU per operation {} µs (nodes {}, harness {}); node CPU per node request {} µs; node requests per operation per node: mean {mean:.2}, max {max:.2}, min {:.2}",
            format!("{mode:?}").to_lowercase(),
            fmt(total, t.ops),
            fmt(t.nodes, t.ops),
            fmt(t.harness, t.ops),
            fmt(t.nodes, t.requests),
            if min.is_finite() { min } else { 0.0 },
        )
    }

    fn json(&mut self, mode: Mode) -> serde_json::Value {
        let t = self.tally(mode);
        serde_json::json!({
            "nodes_us_per_op": t.nodes.map(|d| us_per(d, t.ops)),
            "harness_us_per_op": t.harness.map(|d| us_per(d, t.ops)),
            "node_us_per_request": t.nodes.map(|d| us_per(d, t.requests)),
            "node_requests_per_op_by_node": per_node_per_op(&vec![0; t.per_node.len()], &t.per_node, t.ops),
        })
    }
}

/// Share of nodes whose request count is more than 15% from the mean (Dynamo's imbalance).
fn imbalance(before: &[u64], after: &[u64]) -> f64 {
    let d: Vec<f64> = after
        .iter()
        .zip(before)
        .map(|(a, b)| a.saturating_sub(*b) as f64)
        .collect();
    let mean = d.iter().sum::<f64>() / d.len().max(1) as f64;
    if mean == 0.0 {
        return 0.0;
    }
    d.iter()
        .filter(|x| ((**x - mean) / mean).abs() > 0.15)
        .count() as f64
        / d.len() as f64
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let (_cluster, seeds, tls) = if args.seed_nodes.is_empty() {
        let threads = args
            .node_threads
            .unwrap_or_else(|| cluster::threads_per_node(args.nodes));
        println!(
            "starting {} ringkv-node processes ({} durability, gathering {} µs, {threads} worker thread(s) each)...",
            args.nodes, args.durability, args.gather_us
        );
        let mut config = format!(
            "worker_threads = {threads}\n[storage]\ndurability = \"{}\"\ngroup_commit_gather_us = {}\n",
            args.durability, args.gather_us
        );
        if let Some(ms) = args.hedge_ms {
            config += &format!("[router]\nread_hedge_us = {}\n", (ms * 1000.0) as u64);
        } else if let Some(p) = args.hedge_pct {
            config += &format!("[router]\nread_hedge_percentile = {p}\n");
        }
        let c = cluster::start(args.nodes, &config)?;
        let (seeds, tls) = (c.addrs().to_vec(), c.client_tls());
        (Some(c), seeds, tls)
    } else {
        let dir = args
            .certs
            .clone()
            .context("--certs is required with --seed-node")?;
        let tls = TlsIdentity::load(
            &dir.join("ca.pem"),
            &dir.join(format!("{}.pem", args.cert_name)),
            &dir.join(format!("{}-key.pem", args.cert_name)),
        )?;
        (None, args.seed_nodes.clone(), tls)
    };
    let direct = connect(&seeds, &tls, &args, Mode::Direct).await?;
    let router = connect(&seeds, &tls, &args, Mode::Router).await?;
    let value = Bytes::from(vec![0x5a; args.value_size]);

    if !args.skip_load {
        let b = bar(args.keys, "loading keys");
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..args.in_flight as u64 {
            let (c, v, b, keys, step) = (
                direct.clone(),
                value.clone(),
                b.clone(),
                args.keys,
                args.in_flight as u64,
            );
            tasks.spawn(async move {
                let mut i = w;
                while i < keys {
                    c.put_with(key(i), v.clone(), &Context::empty(), CallOptions::default())
                        .await?;
                    b.inc(1);
                    i += step;
                }
                anyhow::Ok(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        b.finish();
    }

    let keys = Arc::new(Keys::new(args.keys, args.distribution)?);
    let hist = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3);
    let (mut d_reads, mut d_updates, mut r_reads, mut r_updates) =
        (hist()?, hist()?, hist()?, hist()?);
    let (mut d_ops, mut r_ops, mut d_err, mut r_err) = (0u64, 0u64, 0u64, 0u64);
    let mut versions = [0u64; 5];
    let mut phases = Vec::new();
    let mut imbalances = Vec::new();
    // Node requests per operation (direct, router) and writes per fsync, summed over phases.
    let (mut d_requests, mut r_requests, mut d_all_ops, mut r_all_ops) = (0u64, 0u64, 0u64, 0u64);
    let (mut writes, mut fsyncs) = (0u64, 0u64);
    // CPU time per mode: started nodes together, and this harness (the client library).
    let pids: Vec<u32> = _cluster.as_ref().map_or_else(Vec::new, |c| {
        (0..args.nodes).filter_map(|i| c.pid(i)).collect()
    });
    let mut cpu = Spent::default();
    let expected = args.pairs * 2 * args.duration * 3000;
    let b = bar(expected, "measuring");
    for pair in 0..args.pairs {
        for mode in [Mode::Direct, Mode::Router] {
            let client = if mode == Mode::Direct {
                &direct
            } else {
                &router
            };
            let before = counters(client).await;
            let cpu_before = cpu::CpuSample::now(&pids);
            b.set_message(format!("{mode:?} {}/{}", pair + 1, args.pairs).to_lowercase());
            let run = workload::run(
                client,
                args.workload,
                &keys,
                &value,
                args.in_flight,
                Duration::from_secs(args.warmup),
                Duration::from_secs(args.duration),
                pair * 2 + u64::from(mode == Mode::Router),
                &b,
            )
            .await?;
            let cpu_spent = cpu::CpuSample::now(&pids).since(&cpu_before);
            let after = counters(client).await;
            let imb = imbalance(&before.requests, &after.requests);
            let served: u64 =
                after.requests.iter().sum::<u64>() - before.requests.iter().sum::<u64>();
            writes += after.writes.saturating_sub(before.writes);
            fsyncs += after.fsyncs.saturating_sub(before.fsyncs);
            imbalances.push(imb);
            let ops = run.reads.len() + run.updates.len();
            phases.push(serde_json::json!({
                "pair": pair + 1, "mode": format!("{mode:?}").to_lowercase(),
                "ops_per_sec": ops as f64 / run.elapsed.as_secs_f64(),
                "read": Latencies::of(&run.reads), "update": Latencies::of(&run.updates),
                "errors": run.errors, "imbalance": imb, "requests_per_node_before": before.requests, "requests_per_node_after": after.requests,
                "node_requests_per_op": served as f64 / run.all_ops.max(1) as f64,
                "node_requests_per_op_by_node": per_node_per_op(&before.requests, &after.requests, run.all_ops),
                "cpu_us_per_op": {
                    "nodes": cpu_spent.0.map(|d| us_per(d, run.all_ops)),
                    "harness": cpu_spent.1.map(|d| us_per(d, run.all_ops)),
                },
                "node_cpu_us_per_request": cpu_spent.0.map(|d| us_per(d, served)),
            }));
            cpu.add(
                mode,
                cpu_spent,
                run.all_ops,
                served,
                &before.requests,
                &after.requests,
            );
            for (a, v) in versions.iter_mut().zip(run.versions) {
                *a += v;
            }
            if mode == Mode::Direct {
                d_reads.add(&run.reads)?;
                d_updates.add(&run.updates)?;
                d_ops += ops;
                d_err += run.errors;
                d_requests += served;
                d_all_ops += run.all_ops;
            } else {
                r_reads.add(&run.reads)?;
                r_updates.add(&run.updates)?;
                r_ops += ops;
                r_err += run.errors;
                r_requests += served;
                r_all_ops += run.all_ops;
            }
        }
    }
    b.finish();
    let secs = (args.pairs * args.duration) as f64;
    let figures =
        |mode: &str, reads: &Histogram<u64>, updates: &Histogram<u64>, ops: u64, errors: u64| {
            ModeFigures {
                mode: mode.into(),
                ops_per_sec: ops as f64 / secs,
                read: Latencies::of(reads),
                update: Latencies::of(updates),
                errors,
            }
        };
    let direct_fig = figures("direct", &d_reads, &d_updates, d_ops, d_err);
    let router_fig = figures("router", &r_reads, &r_updates, r_ops, r_err);
    println!(
        "\nworkload {:?}, {:?} keys ({}), {} B values, {} in flight, N={} R={} W={}, {} x {} s per mode",
        args.workload,
        args.distribution,
        args.keys,
        args.value_size,
        args.in_flight,
        args.n,
        args.r,
        args.w,
        args.pairs,
        args.duration
    );
    report::print_table(&direct_fig, &router_fig);
    let reads_total: u64 = versions.iter().sum();
    let share = |i: usize| 100.0 * versions[i] as f64 / reads_total.max(1) as f64;
    println!(
        "\nreads by versions returned: 1: {:.3}%  2: {:.3}%  3: {:.3}%  4+: {:.3}%  (not found: {:.3}%)",
        share(1),
        share(2),
        share(3),
        share(4),
        share(0)
    );
    let mean_imbalance = imbalances.iter().sum::<f64>() / imbalances.len().max(1) as f64;
    println!(
        "load imbalance (share of nodes >15% from the mean request count): {:.1}% on average over phases",
        100.0 * mean_imbalance
    );
    let per_op = |requests: u64, ops: u64| requests as f64 / ops.max(1) as f64;
    let writes_per_fsync = (fsyncs > 0).then(|| writes as f64 / fsyncs as f64);
    println!(
        "node requests per operation (an update's read included): direct {:.2}, router {:.2}; writes per fsync: {}",
        per_op(d_requests, d_all_ops),
        per_op(r_requests, r_all_ops),
        writes_per_fsync.map_or("no fsyncs".into(), |w| format!("{w:.2}"))
    );
    for mode in [Mode::Direct, Mode::Router] {
        println!("{}", cpu.line(mode));
    }
    println!("failed operations: direct {d_err}, router {r_err}");
    if let Some(c) = &_cluster {
        let rss: Vec<String> = c
            .resident_bytes()
            .iter()
            .map(|b| format!("{} MiB", b >> 20))
            .collect();
        println!("node resident memory: {}", rss.join(", "));
    }

    let dir = args.out.join(format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
    ));
    std::fs::create_dir_all(&dir)?;
    let json = serde_json::json!({
        "args": &args, "direct": direct_fig, "router": router_fig, "phases": phases,
        "versions": {"not_found": versions[0], "one": versions[1], "two": versions[2], "three": versions[3], "four_or_more": versions[4]},
        "mean_imbalance": mean_imbalance,
        "node_requests_per_op": {"direct": per_op(d_requests, d_all_ops), "router": per_op(r_requests, r_all_ops)},
        "writes_per_fsync": writes_per_fsync,
        "cpu": {"direct": cpu.json(Mode::Direct), "router": cpu.json(Mode::Router)},
    });
    std::fs::write(dir.join("results.json"), serde_json::to_vec_pretty(&json)?)?;
    report::plot(
        &dir.join("latency.svg"),
        &[
            ("direct read", &d_reads),
            ("router read", &r_reads),
            ("direct write", &d_updates),
            ("router write", &r_updates),
        ],
    )?;
    println!(
        "\nwrote {} and {}",
        dir.join("results.json").display(),
        dir.join("latency.svg").display()
    );
    Ok(())
}
